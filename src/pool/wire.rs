//! What crosses a pool's rings: fixed-layout frame headers, and the
//! descriptors (trampolines) a worker runs.
//!
//! Every header a worker or the parent reads was written by another
//! process: it is decoded from bytes with explicit bounds checks, and a bad
//! value becomes a `Protocol` error, never a panic or an index.

use std::sync::atomic::{AtomicU64, Ordering};

use bytemuck::Pod;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::doorbell::Doorbell;
use crate::error::{Error, ErrorKind, PanicInfo, Result};
use crate::ring::Producer;
use crate::segment::SegmentHandle;
use crate::task::{conjure, type_name_of, Entry, RunKind, TaskRef};

/// Parent → worker: a chunk of serde items for an element function.
pub(crate) const K_TASK: u8 = 1;
/// Parent → worker: a chunk of a zero-copy map (descriptors only).
pub(crate) const K_ZC: u8 = 2;
/// Parent → worker: map a segment into slot `n` of the worker's table.
pub(crate) const K_ATTACH: u8 = 3;
/// Parent → worker: forget slot `n`.
pub(crate) const K_DETACH: u8 = 4;
/// Parent → worker: run a zero-copy map's chunks, claimed one after another
/// from a counter the workers share ([`ClaimHeader`]), until none is left.
pub(crate) const K_ZC_CLAIM: u8 = 5;

/// Worker → parent: outputs of (part of) a task.
pub(crate) const R_RESULT: u8 = 1;
/// Worker → parent: the initializer failed; the payload is a [`TaskError`].
pub(crate) const R_INIT_FAILED: u8 = 2;
/// Worker → parent: started and initialised; tasks run from now on (task
/// timeouts count from here, not from a slow start or initializer).
pub(crate) const R_READY: u8 = 3;

/// Task flag: the frame is a group of independent tasks (`Pool::submit`s
/// of one function, docs/ARCHITECTURE.md, Pool, "Submitted tasks travel
/// in groups"). Its payload is, per item, a `u32` length then the item's
/// encoding (a group of one: the item alone, no length). Each item is
/// answered on its own, in order: by a record of
/// an [`F_RECORDS`] frame, or (an output over [`RECORD_MAX`]) by a frame
/// of its own (`first` its index, `count` 1); a failure does not stop the
/// ones after it, and only the group's last frame carries [`F_LAST`].
/// Before each item the worker looks at the skip words of its progress
/// line (`ProgressLine::skips`): an item named there is not run but
/// answered [`REC_SKIPPED`].
pub(crate) const T_EACH: u32 = 1;
/// Task flag, with [`T_EACH`]: time the group (two clock reads, a tenth
/// of a lone task's round trip here), its last frame's `busy_ns`. The
/// parent asks for it while it has no measure of the function, and for
/// one group in [`TIME_EVERY`] after.
pub(crate) const T_TIMED: u32 = 2;
/// See [`T_TIMED`].
pub(crate) const TIME_EVERY: u64 = 8;
/// Most items of a [`T_EACH`] frame (offsets stay below the progress
/// word's [`SKIPPED`] bit).
pub(crate) const MAX_EACH: u32 = 64;
/// The offset of a skip word that names a whole group (every item of the
/// task frame it names): `running_word(task, WHOLE_GROUP)`.
pub(crate) const WHOLE_GROUP: u32 = 0x7FFF_FFFF;
/// Set in the progress word's offset by a worker that skips the item
/// (cancelled), so the parent tells it from one that runs it.
pub(crate) const SKIPPED: u64 = 1 << 31;

/// Result flag: the payload is `count` records, one per item from
/// `first` on, of a [`T_EACH`] group: a `u32` length, a status
/// ([`REC_OK`], [`REC_ERROR`], [`REC_SKIPPED`]) and that many bytes (the
/// item's output, a postcard [`TaskError`], nothing).
pub(crate) const F_RECORDS: u32 = 4;
/// Record status: the item's output follows.
pub(crate) const REC_OK: u8 = 0;
/// Record status: the item failed; a postcard [`TaskError`] follows.
pub(crate) const REC_ERROR: u8 = 1;
/// Record status: the item was not run (its skip word named it).
pub(crate) const REC_SKIPPED: u8 = 2;
/// Largest output a record carries; a larger one goes in a frame of its
/// own.
pub(crate) const RECORD_MAX: usize = 16 * 1024;

/// Result flag: this frame completes its task.
pub(crate) const F_LAST: u32 = 1;
/// Result flag: after the outputs comes a postcard [`TaskError`].
pub(crate) const F_ERROR: u32 = 2;

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn short(what: &str) -> Error {
    Error::new(ErrorKind::Protocol, format!("pool frame too short: {what}"))
}

/// Header of a [`K_TASK`] frame; the encoded items follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskHeader {
    pub(crate) job: u64,
    pub(crate) first: u64,
    pub(crate) count: u32,
    /// [`T_EACH`] or 0.
    pub(crate) flags: u32,
    pub(crate) task: TaskRef,
}

impl TaskHeader {
    pub(crate) const LEN: usize = 48;

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.job.to_le_bytes());
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        for w in self.task.to_words() {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    pub(crate) fn read(b: &[u8]) -> Result<(TaskHeader, &[u8])> {
        if b.len() < Self::LEN {
            return Err(short("task header"));
        }
        let h = TaskHeader {
            job: read_u64(b, 0),
            first: read_u64(b, 8),
            count: read_u32(b, 16),
            flags: read_u32(b, 20),
            task: TaskRef::from_words([read_u64(b, 24), read_u64(b, 32), read_u64(b, 40)]),
        };
        if h.flags & !(T_EACH | T_TIMED) != 0 {
            return Err(Error::new(ErrorKind::Protocol, "unknown task frame flags"));
        }
        if h.flags & T_EACH != 0 && h.count > MAX_EACH {
            return Err(Error::new(
                ErrorKind::Protocol,
                "too many items in a task group",
            ));
        }
        Ok((h, &b[Self::LEN..]))
    }
}

/// A [`K_ZC`] frame: run a kernel over elements `[first, first + count)`
/// of the segments in slots `input` and `output` (equal for in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ZcHeader {
    pub(crate) job: u64,
    pub(crate) first: u64,
    pub(crate) count: u64,
    pub(crate) input: u32,
    pub(crate) output: u32,
    pub(crate) task: TaskRef,
}

impl ZcHeader {
    pub(crate) const LEN: usize = 56;

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.job.to_le_bytes());
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.input.to_le_bytes());
        out.extend_from_slice(&self.output.to_le_bytes());
        for w in self.task.to_words() {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }

    pub(crate) fn read(b: &[u8]) -> Result<ZcHeader> {
        if b.len() != Self::LEN {
            return Err(short("zero-copy header"));
        }
        Ok(ZcHeader {
            job: read_u64(b, 0),
            first: read_u64(b, 8),
            count: read_u64(b, 16),
            input: read_u32(b, 24),
            output: read_u32(b, 28),
            task: TaskRef::from_words([read_u64(b, 32), read_u64(b, 40), read_u64(b, 48)]),
        })
    }
}

/// A [`K_ZC_CLAIM`] frame: a [`ZcHeader`] over the whole map (`first` 0,
/// `count` its length), then where the shared claim counter is and how to
/// size each chunk. The worker claims `[c, c + k)` by moving the counter
/// from `c` to `c + k`, runs it, and claims again until the counter reaches
/// `count`; its last result frame carries, in `first`, how many elements it
/// ran (no outputs: the results are in the output segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimHeader {
    pub(crate) zc: ZcHeader,
    /// Slot of the segment that holds the counter.
    pub(crate) control: u32,
    /// Which [`ClaimCell`](super::zero_copy::ClaimCell) of that segment.
    pub(crate) cell: u32,
    /// Workers the map was sent to (guided chunks are what is left over
    /// twice that).
    pub(crate) workers: u32,
    /// 0: guided chunks sized by the worker's own clock; else the user's
    /// fixed `chunksize`.
    pub(crate) fixed: u64,
}

impl ClaimHeader {
    pub(crate) const LEN: usize = ZcHeader::LEN + 24;

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        self.zc.write(out);
        out.extend_from_slice(&self.control.to_le_bytes());
        out.extend_from_slice(&self.cell.to_le_bytes());
        out.extend_from_slice(&self.workers.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.fixed.to_le_bytes());
    }

    pub(crate) fn read(b: &[u8]) -> Result<ClaimHeader> {
        if b.len() != Self::LEN {
            return Err(short("claim header"));
        }
        let zc = ZcHeader::read(&b[..ZcHeader::LEN])?;
        let rest = &b[ZcHeader::LEN..];
        Ok(ClaimHeader {
            zc,
            control: read_u32(rest, 0),
            cell: read_u32(rest, 4),
            workers: read_u32(rest, 8),
            fixed: read_u64(rest, 16),
        })
    }
}

/// A [`K_ATTACH`] frame: map the segment `handle` names into slot `slot`.
/// Layout: the slot (u32), 4 bytes of zeros, the postcard `SegmentHandle`.
pub(crate) struct Attach;

impl Attach {
    pub(crate) fn write(slot: u32, handle: &SegmentHandle, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        out.extend_from_slice(&slot.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        postcard::to_io(handle, &mut *out).map_err(|e| Error::codec("segment handle", e))?;
        Ok(())
    }

    /// The slot, and the handle or why it cannot be decoded (a bad handle
    /// fails the tasks that use the slot; a short frame is a protocol
    /// error).
    pub(crate) fn read(b: &[u8]) -> Result<(u32, std::result::Result<SegmentHandle, String>)> {
        if b.len() < 8 {
            return Err(short("attach frame"));
        }
        let handle = postcard::from_bytes::<SegmentHandle>(&b[8..])
            .map_err(|e| format!("bad segment handle: {e}"));
        Ok((read_u32(b, 0), handle))
    }
}

/// A [`K_DETACH`] frame: forget slot `n`. Layout: the slot (u32).
pub(crate) struct Detach;

impl Detach {
    pub(crate) fn bytes(slot: u32) -> [u8; 4] {
        slot.to_le_bytes()
    }

    pub(crate) fn read(b: &[u8]) -> Result<u32> {
        if b.len() < 4 {
            return Err(short("detach frame"));
        }
        Ok(read_u32(b, 0))
    }
}

/// Header of an [`R_RESULT`] frame; `count` encoded outputs follow, then,
/// with [`F_ERROR`], a postcard [`TaskError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResultHeader {
    pub(crate) job: u64,
    /// Index (in the job) of the first output in this frame.
    pub(crate) first: u64,
    pub(crate) count: u32,
    pub(crate) flags: u32,
    /// With [`F_LAST`]: nanoseconds the worker spent on the whole task.
    pub(crate) busy_ns: u64,
}

impl ResultHeader {
    pub(crate) const LEN: usize = 32;

    pub(crate) fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..8].copy_from_slice(&self.job.to_le_bytes());
        b[8..16].copy_from_slice(&self.first.to_le_bytes());
        b[16..20].copy_from_slice(&self.count.to_le_bytes());
        b[20..24].copy_from_slice(&self.flags.to_le_bytes());
        b[24..32].copy_from_slice(&self.busy_ns.to_le_bytes());
        b
    }

    pub(crate) fn read(b: &[u8]) -> Result<(ResultHeader, &[u8])> {
        if b.len() < Self::LEN {
            return Err(short("result header"));
        }
        let h = ResultHeader {
            job: read_u64(b, 0),
            first: read_u64(b, 8),
            count: read_u32(b, 16),
            flags: read_u32(b, 20),
            busy_ns: read_u64(b, 24),
        };
        if h.flags & !(F_LAST | F_ERROR | F_RECORDS) != 0
            || h.flags & (F_ERROR | F_RECORDS) == F_ERROR | F_RECORDS
        {
            return Err(Error::new(ErrorKind::Protocol, "unknown result flags"));
        }
        Ok((h, &b[Self::LEN..]))
    }

    /// Whether this frame answers the task of items `[first, first +
    /// count)` of job `job` (the worker's task in flight at the front: a
    /// worker runs its tasks in order): its items must lie inside it.
    pub(crate) fn answers(&self, job: u64, first: u64, count: u64) -> Result<()> {
        let end = self.first.checked_add(u64::from(self.count));
        if self.job != job || self.first < first || end.is_none_or(|e| e > first + count) {
            return Err(Error::new(
                ErrorKind::Protocol,
                "a result that does not match the task in flight",
            ));
        }
        Ok(())
    }

    /// Splits the payload after the header into the encoded outputs and,
    /// with [`F_ERROR`], the [`TaskError`]: a failed task's worker appends
    /// it and then the outputs' byte length.
    pub(crate) fn payload<'a>(&self, rest: &'a [u8]) -> Result<(&'a [u8], Option<TaskError>)> {
        if self.flags & F_ERROR == 0 {
            return Ok((rest, None));
        }
        if rest.len() < 4 {
            return Err(Error::new(ErrorKind::Protocol, "short error frame"));
        }
        let (body, len) = rest.split_at(rest.len() - 4);
        let out_len = read_u32(len, 0) as usize;
        if out_len > body.len() {
            return Err(Error::new(
                ErrorKind::Protocol,
                "bad output length in error frame",
            ));
        }
        let (outputs, err) = body.split_at(out_len);
        let te: TaskError =
            postcard::from_bytes(err).map_err(|e| Error::codec("decoding a task error", e))?;
        Ok((outputs, Some(te)))
    }
}

/// Why an item failed in a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TaskError {
    /// Index in the job of the failing item (or the chunk's first).
    pub(crate) index: u64,
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    pub(crate) panic: Option<PanicInfo>,
}

impl TaskError {
    pub(crate) fn into_error(self, worker: usize, pid: u32) -> Error {
        let e = match self.panic {
            Some(info) => {
                let mut e = Error::panicked(info);
                e.set_context(format!("a task in pool worker {worker}"));
                e
            }
            None => Error::new(
                self.kind,
                format!("a task in pool worker {worker}: {}", self.message),
            ),
        };
        e.with_index(self.index).with_pid(pid)
    }
}

/// A failure inside a trampoline: which item (relative to the chunk), why.
#[derive(Debug)]
pub(crate) struct ItemFailure {
    pub(crate) offset: u64,
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    pub(crate) panic: Option<PanicInfo>,
}

impl ItemFailure {
    fn codec(offset: u64, what: &str, e: postcard::Error) -> ItemFailure {
        ItemFailure {
            offset,
            kind: ErrorKind::Codec,
            message: format!("{what}: {}", crate::error::describe_postcard(&e)),
            panic: None,
        }
    }

    /// Item `offset` panicked.
    pub(crate) fn panicked(offset: u64, info: PanicInfo) -> ItemFailure {
        ItemFailure {
            offset,
            kind: ErrorKind::Panicked,
            message: info.message().to_string(),
            panic: Some(info),
        }
    }

    pub(crate) fn protocol(offset: u64, message: String) -> ItemFailure {
        ItemFailure {
            offset,
            kind: ErrorKind::Protocol,
            message,
            panic: None,
        }
    }
}

/// The worker's progress word for item `offset` of its `task`-th task
/// frame (see `worker::Progress`).
pub(crate) fn running_word(task: u32, offset: u32) -> u64 {
    (u64::from(task) << 32) | u64::from(offset)
}

/// The item a dead worker was running, from the progress word it left:
/// `Some` only if the word names `task` (the task at the front of its
/// queue, items `[first, first + count)`) and an item inside it. The word
/// was written by the worker, so anything else is refused, and the caller
/// falls back to `first`.
pub(crate) fn running_item(word: u64, task: u32, first: u64, count: u64) -> Option<u64> {
    let offset = word & u64::from(u32::MAX);
    if (word >> 32) as u32 != task || offset >= count {
        return None;
    }
    first.checked_add(offset)
}

/// Where a worker says which item of a task it starts (one relaxed store
/// an item), so that the parent can name the item that killed it.
#[derive(Clone, Copy)]
pub(crate) struct Running<'a> {
    word: &'a AtomicU64,
    /// `running_word(task, shift)`.
    base: u64,
}

impl<'a> Running<'a> {
    pub(crate) fn new(word: &'a AtomicU64, task: u32) -> Running<'a> {
        Running {
            word,
            base: running_word(task, 0),
        }
    }

    /// The same word, for a chunk that starts `shift` items into the task
    /// (a claimed chunk of a [`K_ZC_CLAIM`] task, whose `count` is below
    /// 2^32, so item offsets stay in the word's low half).
    pub(crate) fn shifted(&self, shift: u32) -> Running<'a> {
        Running {
            word: self.word,
            base: self.base + u64::from(shift),
        }
    }

    /// Item `offset` of the chunk starts now.
    #[inline]
    pub(crate) fn start(&self, offset: u32) {
        // SYNC: Relaxed: the parent reads the word only after this process
        // died (its exit seen, or killed and reaped), when every store it
        // made is visible; nothing else is published with it, and the
        // parent checks the value (`running_item`).
        self.word
            .store(self.base.wrapping_add(u64::from(offset)), Ordering::Relaxed);
    }
}

/// Where a serde trampoline puts its outputs: a reused buffer that is
/// flushed to the result ring as a partial frame when it grows large.
pub(crate) struct Out<'a> {
    pub(crate) producer: &'a mut Producer,
    pub(crate) buf: &'a mut Vec<u8>,
    pub(crate) job: u64,
    /// Job index of the first output in `buf`.
    pub(crate) first: u64,
    /// Outputs in `buf`.
    pub(crate) count: u32,
    /// Flush once the buffer holds this many bytes.
    pub(crate) flush_at: usize,
    /// Where the trampoline says which item it starts.
    running: Running<'a>,
    /// The pool's doorbell, rung before a long frame (`send_long`).
    bell: &'a Doorbell,
}

impl<'a> Out<'a> {
    /// Outputs of the task `job` whose first item is `first`, a frame begun.
    pub(crate) fn new(
        producer: &'a mut Producer,
        buf: &'a mut Vec<u8>,
        job: u64,
        first: u64,
        flush_at: usize,
        running: Running<'a>,
        bell: &'a Doorbell,
    ) -> Out<'a> {
        let mut out = Out {
            producer,
            buf,
            job,
            first,
            count: 0,
            flush_at,
            running,
            bell,
        };
        out.begin();
        out
    }

    /// Starts a frame in `buf` (room for the header).
    pub(crate) fn begin(&mut self) {
        self.buf.clear();
        self.buf.resize(ResultHeader::LEN, 0);
        self.count = 0;
    }

    /// Largest frame payload this ring takes.
    pub(crate) fn max_frame(&self) -> usize {
        self.producer.max_payload()
    }

    fn push<R: Serialize + 'static>(&mut self, value: &R) -> std::result::Result<(), ItemFailure> {
        let at = self.buf.len();
        if let Err(e) = super::bulk::encode(value, self.buf) {
            self.buf.truncate(at);
            return Err(ItemFailure::codec(0, "encoding the result", e));
        }
        let max = self.max_frame();
        if self.buf.len() > max && ResultHeader::LEN + (self.buf.len() - at) <= max {
            // It fits alone, not after the ones before it: send those first.
            let bytes = self.buf.split_off(at);
            self.flush(0, 0)
                .map_err(|e| ItemFailure::protocol(0, e.to_string()))?;
            self.buf.extend_from_slice(&bytes);
        }
        // A result over a frame even alone goes out in the frame it ends,
        // streamed (`flush`): no copy to take it apart from the ones before.
        self.count += 1;
        if self.buf.len() >= self.flush_at {
            self.flush(0, 0)
                .map_err(|e| ItemFailure::protocol(0, e.to_string()))?;
        }
        Ok(())
    }

    /// Sends what `buf` holds with `flags`, then starts a new frame.
    pub(crate) fn flush(&mut self, flags: u32, busy_ns: u64) -> Result<()> {
        let h = ResultHeader {
            job: self.job,
            first: self.first,
            count: self.count,
            flags,
            busy_ns,
        };
        self.buf[..ResultHeader::LEN].copy_from_slice(&h.to_bytes());
        if self.buf.len() > self.producer.max_payload() {
            self.send_long()?;
        } else {
            self.producer.push(R_RESULT, self.buf, None)?;
        }
        self.first += u64::from(self.count);
        self.begin();
        Ok(())
    }

    /// Sends a frame over the ring's largest as a long message, in pieces
    /// while the parent reads (docs/ARCHITECTURE.md, Pool, "Frames").
    #[cold]
    fn send_long(&mut self) -> Result<()> {
        // The parent may be asleep on the doorbell, and the ring wakes only
        // a reader parked on the ring: ring it now, so that the parent
        // starts reading before the ring is full rather than at its next
        // tick.
        self.bell.ring();
        self.producer.push_long(R_RESULT, self.buf, None)?;
        // The buffer is reused for every later frame: give the long one's
        // memory back.
        self.buf.clear();
        self.buf.shrink_to(2 * self.flush_at + 4096);
        Ok(())
    }
}

/// Trampoline of an element function over a chunk of serde items.
pub(crate) type ChunkFn =
    fn(input: &[u8], count: u32, out: &mut Out<'_>) -> std::result::Result<(), ItemFailure>;

impl RunKind for ChunkFn {
    const KIND: u64 = 2;
}

/// A view of one mapped segment's data bytes in a worker.
#[derive(Clone, Copy)]
pub(crate) struct Span<'a> {
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
    /// The segment, when the worker maps its pages in as chunks use them
    /// (every attached one; `None` in tests and fuzzing).
    pub(crate) attached: Option<&'a Attached>,
}

/// Bytes of an attached segment mapped in at once ([`Attached::ready`]):
/// 64 pages, so a chunk maps in little beyond its own range.
const MAP_IN_BLOCK: usize = 256 * 1024;

/// A segment a worker attached for zero-copy chunks, and which of its
/// blocks it has mapped in so far.
///
/// A worker maps an attached segment without filling its page tables
/// (`Segment::open_lazy`) and fills them a block at a time, before a chunk
/// uses the block, once per block: with two workers each maps in about
/// half of a map's memory, not all of it (the first call of a map on fresh
/// memory pays for it; docs/ARCHITECTURE.md, "Zero-copy maps and
/// `ShmVec`").
pub(crate) struct Attached {
    pub(crate) seg: std::sync::Arc<crate::segment::Segment>,
    /// One bit per [`MAP_IN_BLOCK`] of the data: mapped in.
    mapped: Box<[std::cell::Cell<u64>]>,
}

impl Attached {
    pub(crate) fn new(seg: std::sync::Arc<crate::segment::Segment>) -> Attached {
        let blocks = seg.len().div_ceil(MAP_IN_BLOCK);
        Attached {
            mapped: (0..blocks.div_ceil(64))
                .map(|_| std::cell::Cell::new(0))
                .collect(),
            seg,
        }
    }

    /// Maps in the blocks of bytes `[at, at + len)` of the data (already
    /// bounds-checked) not mapped in yet, each run of them in one call.
    fn ready(&self, at: usize, len: usize) {
        if len == 0 {
            return;
        }
        let first = at / MAP_IN_BLOCK;
        let last = (at + len - 1) / MAP_IN_BLOCK;
        let mut run: Option<usize> = None;
        for b in first..=last + 1 {
            let todo = b <= last && {
                let word = &self.mapped[b / 64];
                let bit = 1u64 << (b % 64);
                let was = word.get();
                word.set(was | bit);
                was & bit == 0
            };
            match (todo, run) {
                (true, None) => run = Some(b),
                (false, Some(start)) => {
                    self.seg
                        .prefault(start * MAP_IN_BLOCK, (b - start) * MAP_IN_BLOCK);
                    run = None;
                }
                _ => {}
            }
        }
    }
}

/// Trampoline of a zero-copy kernel: elements `[first, first + count)` of
/// `input` into the same range of `output` (the same span for in place).
/// A kernel that calls the user's function item by item says which item
/// it starts in `running` (whole-slice kernels cannot).
pub(crate) type ZcFn = fn(
    input: Span<'_>,
    output: Span<'_>,
    first: u64,
    count: u64,
    running: &Running<'_>,
) -> std::result::Result<(), ItemFailure>;

impl RunKind for ZcFn {
    const KIND: u64 = 3;
}

fn run_chunk<F, A, R>(
    input: &[u8],
    count: u32,
    out: &mut Out<'_>,
) -> std::result::Result<(), ItemFailure>
where
    F: Fn(A) -> R + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    // The parent held a value of `F`: it made the descriptor from one.
    let f: F = conjure();
    let call = |i: u64, a: A| {
        crate::panic::catch_panic(|| f(a)).map_err(|info| ItemFailure::panicked(i, info))
    };
    // Raw results (primitive numbers) collect here and go out in blocks.
    let mut results = Results::<R> {
        raw: super::raw::raw_size::<R>(),
        pending: Vec::new(),
    };
    let outcome = (|| {
        if super::raw::raw_size::<A>().is_some() {
            if count == 1 {
                // One number (`apply`, `submit`): no vector for the item
                // or its result.
                let a = super::raw::one_from_raw::<A>(input).ok_or_else(|| {
                    ItemFailure::protocol(0, "raw items of the wrong length".into())
                })?;
                out.running.start(0);
                return results.emit_one(out, call(0, a)?);
            }
            let items = super::raw::from_raw::<A>(input, count as usize)
                .ok_or_else(|| ItemFailure::protocol(0, "raw items of the wrong length".into()))?;
            for (i, a) in items.into_iter().enumerate() {
                // `count` is a u32, so is every offset.
                out.running.start(i as u32);
                let i = i as u64;
                results.emit(out, i, call(i, a)?)?;
            }
            return Ok(());
        }
        if let Some(bulk) = super::bulk::decoder::<A>() {
            // Byte vectors and strings: each item by one copy (`bulk.rs`).
            let mut at = 0;
            for i in 0..count {
                out.running.start(i);
                let i = u64::from(i);
                let (a, used) = bulk
                    .front(&input[at..])
                    .map_err(|e| ItemFailure::codec(i, "decoding the item", e))?;
                at += used;
                results.emit(out, i, call(i, a)?)?;
            }
            if at != input.len() {
                return Err(ItemFailure::protocol(
                    u64::from(count),
                    "trailing bytes after the chunk's items".into(),
                ));
            }
            return Ok(());
        }
        // One deserializer over the chunk: each item decodes straight
        // into a local (`take_from_bytes` returns it in a tuple behind a
        // `Result`, whose misaligned copies stalled on store forwarding,
        // a measured third of a worker's time on small structs).
        let mut de = postcard::Deserializer::from_bytes(input);
        // The loop stops at the first failure: one clear serves it.
        crate::error::clear_custom_reason();
        for i in 0..count {
            out.running.start(i);
            let i = u64::from(i);
            let a = A::deserialize(&mut de)
                .map_err(|e| ItemFailure::codec(i, "decoding the item", e))?;
            results.emit(out, i, call(i, a)?)?;
        }
        let rest = de
            .finalize()
            .map_err(|e| ItemFailure::codec(u64::from(count), "ending the chunk", e))?;
        if !rest.is_empty() {
            return Err(ItemFailure::protocol(
                u64::from(count),
                "trailing bytes after the chunk's items".into(),
            ));
        }
        Ok(())
    })();
    // The outputs before a failure still go out, ahead of the error.
    results.drain(out)?;
    outcome
}

/// A trampoline's outputs on their way into [`Out`].
struct Results<R> {
    /// `Some(size)` if `R` crosses raw.
    raw: Option<usize>,
    pending: Vec<R>,
}

impl<R: Serialize + 'static> Results<R> {
    fn emit(&mut self, out: &mut Out<'_>, i: u64, r: R) -> std::result::Result<(), ItemFailure> {
        let Some(size) = self.raw else {
            return out.push(&r).map_err(|mut e| {
                e.offset = i;
                e
            });
        };
        self.pending.push(r);
        if out.buf.len() + (self.pending.len() + 1) * size > out.flush_at {
            self.drain(out)?;
        }
        Ok(())
    }

    /// A task's only result: a number goes straight into the frame.
    fn emit_one(&mut self, out: &mut Out<'_>, r: R) -> std::result::Result<(), ItemFailure> {
        let Some(size) = self.raw else {
            return self.emit(out, 0, r);
        };
        debug_assert!(self.pending.is_empty(), "a task's only result comes first");
        let encoded = super::raw::extend_one(&r, out.buf);
        debug_assert!(encoded, "raw_size and extend_one agree");
        out.count += 1;
        if out.buf.len() + size > out.flush_at {
            out.flush(0, 0)
                .map_err(|e| ItemFailure::protocol(0, e.to_string()))?;
        }
        Ok(())
    }

    fn drain(&mut self, out: &mut Out<'_>) -> std::result::Result<(), ItemFailure> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let encoded = super::raw::extend_raw(&self.pending, out.buf);
        debug_assert!(encoded, "raw_size and extend_raw agree on the types");
        out.count += self.pending.len() as u32;
        self.pending.clear();
        let size = self.raw.unwrap_or(1);
        if out.buf.len() + size > out.flush_at {
            out.flush(0, 0)
                .map_err(|e| ItemFailure::protocol(0, e.to_string()))?;
        }
        Ok(())
    }
}

type Marker<F, A, R> = std::marker::PhantomData<(F, fn(A) -> R)>;

pub(crate) struct ChunkDesc<F, A, R>(Marker<F, A, R>);

impl<F, A, R> ChunkDesc<F, A, R>
where
    F: Fn(A) -> R + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    pub(crate) const ENTRY: &'static Entry<ChunkFn> = &Entry::new(
        type_name_of::<(ChunkFn, F, A, R)>,
        run_chunk::<F, A, R> as ChunkFn,
    );
}

/// Elements `[first, first + count)` of a span as `T`s, bounds checked.
fn elements<T: Pod>(
    span: Span<'_>,
    first: u64,
    count: u64,
) -> std::result::Result<(usize, usize), ItemFailure> {
    elements_of(
        span,
        first,
        count,
        std::mem::size_of::<T>(),
        std::mem::align_of::<T>(),
    )
}

/// Elements `[first, first + count)` of a span, of `size` bytes aligned
/// to `align`, bounds checked: their first byte and their count.
fn elements_of(
    span: Span<'_>,
    first: u64,
    count: u64,
    size: usize,
    align: usize,
) -> std::result::Result<(usize, usize), ItemFailure> {
    let size = size as u64;
    let end = first
        .checked_add(count)
        .and_then(|e| e.checked_mul(size))
        .ok_or_else(|| ItemFailure::protocol(0, "chunk range overflows".into()))?;
    if end > span.len as u64 {
        return Err(ItemFailure::protocol(
            0,
            format!("chunk ends at byte {end}, the segment has {}", span.len),
        ));
    }
    if !(span.ptr as usize).is_multiple_of(align.max(1)) {
        return Err(ItemFailure::protocol(
            0,
            "segment misaligned for the element type".into(),
        ));
    }
    let at = (first * size) as usize;
    if let Some(attached) = span.attached {
        attached.ready(at, (count * size) as usize);
    }
    Ok((at, count as usize))
}

/// Runs a kernel on `count` elements, catching a panic.
fn guarded(f: impl FnOnce()) -> std::result::Result<(), ItemFailure> {
    crate::panic::catch_panic(f).map_err(|info| ItemFailure::panicked(0, info))
}

#[allow(unsafe_code)]
mod zc {
    use super::*;

    /// Bounds-checks elements `[first, first + count)` of both spans and
    /// runs `body` on them as `&[T]` / `&mut [U]`, catching a panic.
    pub(super) fn with_slices<T: Pod, U: Pod>(
        input: Span<'_>,
        output: Span<'_>,
        first: u64,
        count: u64,
        body: impl FnOnce(&[T], &mut [U]),
    ) -> std::result::Result<(), ItemFailure> {
        let (ib, n) = elements::<T>(input, first, count)?;
        let (ob, _) = elements::<U>(output, first, count)?;
        if input.ptr == output.ptr {
            return Err(ItemFailure::protocol(
                0,
                "input and output are the same segment".into(),
            ));
        }
        let ip = input.ptr.wrapping_add(ib).cast::<T>();
        let op = output.ptr.wrapping_add(ob).cast::<U>();
        // SAFETY: `elements` checked that both ranges lie inside their
        // mappings and are aligned for their types; `T` and `U` are `Pod`
        // (every bit pattern valid). The pool's protocol gives this worker
        // exclusive use of output elements [first, first+count) until it
        // reports the chunk done, and the parent holds `&input` and
        // `&mut output` for the whole call, so nobody writes the input and
        // nobody else touches this output range meanwhile; the spans are
        // different segments (checked above), so the slices do not overlap.
        let inp = unsafe { std::slice::from_raw_parts(ip, n) };
        // SAFETY: as for `inp` just above: in bounds, aligned, `Pod`, and
        // this range of the output is this worker's alone until it reports
        // the chunk done; it does not overlap `inp` (different segments).
        let out = unsafe { std::slice::from_raw_parts_mut(op, n) };
        guarded(|| body(inp, out))
    }

    /// Runs `body` on `len` bytes from byte `at` of `span`. The caller
    /// bounds-checked the range (`elements_of`); asserted again here.
    pub(super) fn with_bytes<T>(
        span: Span<'_>,
        at: usize,
        len: usize,
        body: impl FnOnce(&[u8]) -> T,
    ) -> T {
        assert!(at.checked_add(len).is_some_and(|end| end <= span.len));
        // SAFETY: the range lies inside the mapping (asserted). The pool's
        // protocol gives this worker exclusive use of its chunk's elements
        // until it reports the chunk done, and the parent does not touch
        // the arena during the call, so nobody writes these bytes while
        // `body` reads them; the slice does not outlive `body`, and the
        // kernel makes no `&mut` to them meanwhile.
        let bytes = unsafe { std::slice::from_raw_parts(span.ptr.wrapping_add(at), len) };
        body(bytes)
    }

    /// Runs `body` on `len` bytes from byte `at` of `span`, mutably. The
    /// caller bounds-checked the range (`elements_of`); asserted again.
    pub(super) fn with_bytes_mut<T>(
        span: Span<'_>,
        at: usize,
        len: usize,
        body: impl FnOnce(&mut [u8]) -> T,
    ) -> T {
        assert!(at.checked_add(len).is_some_and(|end| end <= span.len));
        // SAFETY: as in `with_bytes`: in bounds, and this worker's chunk
        // alone until it reports it done; no other slice of these bytes is
        // live while `body` runs (the kernel reads a block, then writes it).
        let bytes = unsafe { std::slice::from_raw_parts_mut(span.ptr.wrapping_add(at), len) };
        body(bytes)
    }

    /// As [`with_slices`] for one span, mutably (in place).
    pub(super) fn with_slice_mut<T: Pod>(
        data: Span<'_>,
        first: u64,
        count: u64,
        body: impl FnOnce(&mut [T]),
    ) -> std::result::Result<(), ItemFailure> {
        let (b, n) = elements::<T>(data, first, count)?;
        let p = data.ptr.wrapping_add(b).cast::<T>();
        // SAFETY: `elements` checked bounds and alignment; `T` is `Pod`. The
        // protocol gives this worker exclusive use of elements
        // [first, first+count) until it reports the chunk done, while the
        // parent holds `&mut data` for the whole call.
        let data = unsafe { std::slice::from_raw_parts_mut(p, n) };
        guarded(|| body(data))
    }
}

/// `fn(&[T], &mut [U])` over a chunk of two segments.
fn run_into<F, T, U>(
    i: Span<'_>,
    o: Span<'_>,
    first: u64,
    count: u64,
    _: &Running<'_>,
) -> std::result::Result<(), ItemFailure>
where
    F: Fn(&[T], &mut [U]) + 'static,
    T: Pod,
    U: Pod,
{
    let f: F = conjure();
    zc::with_slices(i, o, first, count, |inp, out| f(inp, out))
}

/// `fn(T) -> U` element by element (inlined, so the loop vectorises).
fn run_elements<F, T, U>(
    i: Span<'_>,
    o: Span<'_>,
    first: u64,
    count: u64,
    _: &Running<'_>,
) -> std::result::Result<(), ItemFailure>
where
    F: Fn(T) -> U + 'static,
    T: Pod,
    U: Pod,
{
    let f: F = conjure();
    zc::with_slices(i, o, first, count, |inp: &[T], out: &mut [U]| {
        for (o, &x) in out.iter_mut().zip(inp) {
            *o = f(x);
        }
    })
}

/// `fn(T) -> U` element by element over one segment, each result written
/// over its own item (`T` and `U` of one size: `map_slice`'s one arena).
fn run_elements_in_place<F, T, U>(
    d: Span<'_>,
    _: Span<'_>,
    first: u64,
    count: u64,
    _: &Running<'_>,
) -> std::result::Result<(), ItemFailure>
where
    F: Fn(T) -> U + 'static,
    T: Pod,
    U: Pod,
{
    if std::mem::size_of::<T>() != std::mem::size_of::<U>() {
        return Err(ItemFailure::protocol(
            0,
            "in place needs items and results of one size".into(),
        ));
    }
    let f: F = conjure();
    zc::with_slice_mut(d, first, count, |data: &mut [T]| {
        for x in data.iter_mut() {
            let y = f(*x);
            // One size (checked above): a plain move once monomorphised.
            bytemuck::bytes_of_mut(x).copy_from_slice(bytemuck::bytes_of(&y));
        }
    })
}

/// `fn(&mut [T])` over a chunk of one segment.
fn run_in_place<F, T>(
    d: Span<'_>,
    _: Span<'_>,
    first: u64,
    count: u64,
    _: &Running<'_>,
) -> std::result::Result<(), ItemFailure>
where
    F: Fn(&mut [T]) + 'static,
    T: Pod,
{
    let f: F = conjure();
    zc::with_slice_mut(d, first, count, |data| f(data))
}

/// Items converted and mapped per block by [`run_raw`]: 32 KiB of `u64`
/// each way, which stays in the worker's cache.
const RAW_BLOCK: usize = 4096;

/// `fn(A) -> R` over primitive numbers lying raw in shared memory: the
/// serde `map` of numbers, moved through the pool's arenas instead of its
/// rings (`Pool::map`). Element `k` of the chunk is read from `input` and
/// its result written to `output` at the same index (the same span when
/// `A` and `R` have one size). A block at a time is copied out, mapped
/// item by item (each item noted in `running`, as the ring path does,
/// so that a worker that dies names its item), and copied back.
fn run_raw<F, A, R>(
    i: Span<'_>,
    o: Span<'_>,
    first: u64,
    count: u64,
    running: &Running<'_>,
) -> std::result::Result<(), ItemFailure>
where
    F: Fn(A) -> R + 'static,
    A: 'static,
    R: 'static,
{
    use super::raw;
    let (Some(sa), Some(sr)) = (raw::raw_size::<A>(), raw::raw_size::<R>()) else {
        return Err(ItemFailure::protocol(0, "items or results not raw".into()));
    };
    if i.ptr == o.ptr && sa != sr {
        return Err(ItemFailure::protocol(
            0,
            "in place needs items and results of one size".into(),
        ));
    }
    // Alignment does not matter: values are copied as bytes.
    let (ib, n) = elements_of(i, first, count, sa, 1)?;
    let (ob, _) = elements_of(o, first, count, sr, 1)?;
    let f: F = conjure();
    let notes = u32::try_from(count).is_ok();
    let mut items: Vec<A> = Vec::with_capacity(RAW_BLOCK);
    let mut outs: Vec<R> = Vec::with_capacity(RAW_BLOCK);
    let mut start = 0;
    while start < n {
        let m = RAW_BLOCK.min(n - start);
        if !zc::with_bytes(i, ib + start * sa, m * sa, |b| {
            raw::fill_from_raw(&mut items, b)
        }) {
            return Err(ItemFailure::protocol(
                0,
                "raw items of the wrong length".into(),
            ));
        }
        outs.clear();
        // Locals, so that the loop keeps them in registers.
        let note = notes.then_some(*running);
        let mut next = start;
        let ran = crate::panic::catch_panic(|| {
            outs.extend(items.drain(..).map(|a| {
                if let Some(note) = note {
                    // In range: `count` fits a u32 (`notes`).
                    note.start(next as u32);
                }
                next += 1;
                f(a)
            }));
        });
        if let Err(info) = ran {
            // `next` counts the items started; the last one panicked.
            return Err(ItemFailure::panicked((next - 1) as u64, info));
        }
        if !zc::with_bytes_mut(o, ob + start * sr, m * sr, |b| raw::write_raw(&outs, b)) {
            return Err(ItemFailure::protocol(0, "results not raw".into()));
        }
        start += m;
    }
    Ok(())
}

/// Descriptors of the serde `map` of primitive numbers through arenas.
pub(crate) struct RawDesc<F, A, R>(Marker<F, A, R>);

impl<F, A, R> RawDesc<F, A, R>
where
    F: Fn(A) -> R + 'static,
    A: 'static,
    R: 'static,
{
    pub(crate) const ELEMENTS: &'static Entry<ZcFn> = &Entry::new(
        type_name_of::<(ZcFn, i8, F, A, R)>,
        run_raw::<F, A, R> as ZcFn,
    );
}

/// Descriptors of the zero-copy trampolines.
pub(crate) struct ZcDesc<F, T, U>(std::marker::PhantomData<(F, T, U)>);

impl<F, T: Pod, U: Pod> ZcDesc<F, T, U>
where
    F: Fn(&[T], &mut [U]) + 'static,
{
    pub(crate) const INTO: &'static Entry<ZcFn> = &Entry::new(
        type_name_of::<(ZcFn, u8, F, T, U)>,
        run_into::<F, T, U> as ZcFn,
    );
}

impl<F, T: Pod, U: Pod> ZcDesc<F, T, U>
where
    F: Fn(T) -> U + 'static,
{
    pub(crate) const ELEMENTS: &'static Entry<ZcFn> = &Entry::new(
        type_name_of::<(ZcFn, u16, F, T, U)>,
        run_elements::<F, T, U> as ZcFn,
    );
    pub(crate) const ELEMENTS_IN_PLACE: &'static Entry<ZcFn> = &Entry::new(
        type_name_of::<(ZcFn, u64, F, T, U)>,
        run_elements_in_place::<F, T, U> as ZcFn,
    );
}

impl<F, T: Pod> ZcDesc<F, T, T>
where
    F: Fn(&mut [T]) + 'static,
{
    pub(crate) const IN_PLACE: &'static Entry<ZcFn> = &Entry::new(
        type_name_of::<(ZcFn, u32, F, T)>,
        run_in_place::<F, T> as ZcFn,
    );
}

/// The chunk bounds check on arbitrary numbers (fuzzing).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_elements(first: u64, count: u64, len: usize) -> bool {
    let span = Span {
        ptr: std::ptr::NonNull::<u64>::dangling().as_ptr().cast(),
        len,
        attached: None,
    };
    match elements::<u64>(span, first, count) {
        Ok((byte, n)) => {
            assert!(
                byte as u128 + n as u128 * 8 <= len as u128,
                "bounds check let a chunk out"
            );
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_maps_in_each_block_it_touches_once() {
        let seg =
            std::sync::Arc::new(crate::segment::Segment::create(3 * MAP_IN_BLOCK + 8).unwrap());
        let a = Attached::new(seg);
        let mapped = |b: usize| a.mapped[b / 64].get() & (1 << (b % 64)) != 0;
        assert_eq!(a.mapped.len(), 1);
        let span = Span {
            ptr: a.seg.as_ptr(),
            len: a.seg.len(),
            attached: Some(&a),
        };
        // Elements 8 bytes wide: a chunk inside block 1 maps in block 1.
        let per_block = (MAP_IN_BLOCK / 8) as u64;
        assert!(elements::<u64>(span, per_block + 5, 10).is_ok());
        assert_eq!(
            (0..4).map(mapped).collect::<Vec<_>>(),
            [false, true, false, false]
        );
        // Blocks 0 to 3 (the last one partial), block 1 again.
        assert!(elements::<u64>(span, 0, 3 * per_block + 1).is_ok());
        assert!((0..4).all(mapped));
        // Refused chunks map in nothing.
        let b = Attached::new(std::sync::Arc::clone(&a.seg));
        let span = Span {
            attached: Some(&b),
            ..span
        };
        assert!(elements::<u64>(span, 0, 3 * per_block + 2).is_err());
        assert_eq!(b.mapped[0].get(), 0);
        assert!(elements::<u64>(span, 2, 0).is_ok());
        assert_eq!(b.mapped[0].get(), 0);
    }

    #[test]
    fn a_progress_word_counts_only_inside_its_own_task() {
        // Task 7 holds items 40..44.
        assert_eq!(running_item(running_word(7, 2), 7, 40, 4), Some(42));
        assert_eq!(running_item(running_word(7, 0), 7, 40, 4), Some(40));
        // Left over from the task before, or past the end: refused.
        assert_eq!(running_item(running_word(6, 2), 7, 40, 4), None);
        assert_eq!(running_item(running_word(7, 4), 7, 40, 4), None);
        assert_eq!(running_item(u64::MAX, 7, 40, 4), None);
        // A word a worker made up cannot overflow the index.
        assert_eq!(running_item(running_word(7, 3), 7, u64::MAX - 1, 4), None);
    }

    #[test]
    fn attach_and_detach_frames_round_trip_and_refuse_short_ones() {
        let seg = crate::segment::Segment::create(4096).unwrap();
        let mut frame = vec![9; 3]; // `write` starts the frame afresh
        Attach::write(7, &seg.handle(), &mut frame).unwrap();
        let (slot, handle) = Attach::read(&frame).unwrap();
        assert_eq!(slot, 7);
        assert_eq!(handle.unwrap(), seg.handle());
        // A bad handle is the slot's failure, a short frame the worker's.
        assert!(Attach::read(&frame[..9]).unwrap().1.is_err());
        assert_eq!(
            Attach::read(&frame[..7]).unwrap_err().kind(),
            ErrorKind::Protocol
        );
        assert_eq!(Detach::read(&Detach::bytes(5)).unwrap(), 5);
        assert!(Detach::read(&[1, 2, 3]).is_err());
    }

    fn result(job: u64, first: u64, count: u32, flags: u32) -> ResultHeader {
        ResultHeader {
            job,
            first,
            count,
            flags,
            busy_ns: 0,
        }
    }

    #[test]
    fn a_result_answers_only_items_of_its_own_task() {
        // The task in flight: items 40..44 of job 3.
        assert!(result(3, 40, 4, 0).answers(3, 40, 4).is_ok());
        assert!(result(3, 42, 2, F_LAST).answers(3, 40, 4).is_ok());
        assert!(result(3, 44, 0, F_LAST).answers(3, 40, 4).is_ok());
        for (job, first, count) in [(2, 40, 4), (3, 39, 1), (3, 42, 3), (3, u64::MAX, 1)] {
            let e = result(job, first, count, 0).answers(3, 40, 4).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol);
            assert!(e.to_string().contains("does not match the task in flight"));
        }
    }

    #[test]
    fn an_error_payload_splits_into_outputs_and_the_task_error() {
        let te = TaskError {
            index: 5,
            kind: ErrorKind::Codec,
            message: "bad".into(),
            panic: None,
        };
        let mut rest = vec![1, 2, 3];
        rest.extend(postcard::to_allocvec(&te).unwrap());
        rest.extend(3u32.to_le_bytes());
        let (outputs, got) = result(1, 0, 1, F_ERROR).payload(&rest).unwrap();
        assert_eq!(outputs, [1, 2, 3]);
        assert_eq!(got.unwrap().index, 5);
        // Without the flag it is all outputs.
        let (outputs, got) = result(1, 0, 1, 0).payload(&rest).unwrap();
        assert_eq!(outputs, &rest[..]);
        assert!(got.is_none());
        // A length past the body, or no length at all: the worker's fault.
        let mut bad = rest.clone();
        let n = bad.len();
        bad[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        for b in [&bad[..], &rest[..3]] {
            let e = result(1, 0, 1, F_ERROR).payload(b).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Protocol);
        }
    }
}
