//! A pool worker: the loop a re-executed child runs.
//!
//! It reads task frames from its task ring, runs them, and writes result
//! frames to its result ring, ringing the pool's doorbell after each. It
//! returns (and the process exits 0) when the parent closes the task ring.
//!
//! Its segment holds the task ring, the result ring and, last, a
//! [`Progress`] line: the item it is running, which the parent reads when
//! the worker died to say which item killed it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use super::doorbell::Doorbell;
use super::wire::{
    running_word, Attach, Attached, ChunkFn, ClaimHeader, Detach, ItemFailure, Out, ResultHeader,
    Running, Span, TaskError, TaskHeader, ZcFn, ZcHeader, F_ERROR, F_LAST, F_RECORDS, K_ATTACH,
    K_DETACH, K_TASK, K_ZC, K_ZC_CLAIM, RECORD_MAX, REC_ERROR, REC_OK, REC_SKIPPED, R_INIT_FAILED,
    R_READY, R_RESULT, SKIPPED, T_EACH, T_TIMED, WHOLE_GROUP,
};
use super::zero_copy::{run_claims, worker_cell};
use crate::error::{Error, ErrorKind, Result};
use crate::pipe::spsc_rings_in;
use crate::region::Region;
use crate::ring::{self, Producer, Ring};
use crate::segment::{Segment, SegmentHandle, SegmentRegion};
use crate::task::{Resolved, TaskKey, TaskRef};

/// Result bytes buffered before a partial frame is sent.
const FLUSH_AT: usize = 64 * 1024;

/// What a worker is started with (over the authenticated handshake).
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) rings: SegmentHandle,
    pub(crate) ring_bytes: usize,
    pub(crate) doorbell: SegmentHandle,
    pub(crate) key: TaskKey,
    pub(crate) index: u32,
    pub(crate) core: Option<usize>,
    pub(crate) init: Option<(TaskRef, ByteBuf)>,
    /// Measure each task's run time (insights); two clock reads a task.
    pub(crate) timing: bool,
}

/// The task ring and the result ring of one worker, at the start of its
/// segment.
pub(crate) fn rings_in(
    segment: &Arc<Segment>,
    ring_bytes: usize,
    create: bool,
) -> Result<(Ring, Ring)> {
    let mut rings = spsc_rings_in(segment, ring_bytes, 2, create, "pool")?;
    match (rings.pop(), rings.pop()) {
        (Some(results), Some(tasks)) => Ok((tasks, results)),
        _ => Err(Error::new(ErrorKind::Protocol, "pool segment too small")),
    }
}

/// Bytes of a worker's segment: two rings and the [`Progress`] line.
pub(crate) fn rings_len(ring_bytes: usize) -> usize {
    2 * ring::region_size(ring_bytes) + PROGRESS_LEN
}

/// The last line of a worker's segment: what the worker is doing, for the
/// parent to read once the worker died. Only the worker writes it, so to
/// the parent it is a claim to check, never a fact.
#[repr(C)]
struct Progress {
    /// [`wire::running_word`](super::wire::running_word)`(task, offset)`:
    /// the worker started item `offset` of the `task`-th task frame it
    /// received (counted from 0, wrapping).
    running: AtomicU64,
    /// Items of grouped tasks ([`T_EACH`](super::wire::T_EACH)) the parent
    /// cancelled before they ran: `running_word(task, offset) + 1`, 0 for
    /// none. Written by the parent, read by the worker before each such
    /// item (the one word the parent writes in this line).
    skips: [AtomicU64; SKIPS],
    _rest: [AtomicU64; 7 - SKIPS],
}

/// Skip words in a worker's progress line.
pub(crate) const SKIPS: usize = 4;

const PROGRESS_LEN: usize = 64;
const _: () = assert!(std::mem::size_of::<Progress>() == PROGRESS_LEN);

/// A worker's [`Progress`] line, in its segment (worker and parent side).
pub(crate) struct ProgressLine {
    region: SegmentRegion,
}

impl ProgressLine {
    /// The line after the two rings of `ring_bytes` each.
    pub(crate) fn in_segment(segment: &Arc<Segment>, ring_bytes: usize) -> Result<ProgressLine> {
        let region = SegmentRegion::new(segment, 2 * ring::region_size(ring_bytes), PROGRESS_LEN)
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "pool segment too small"))?;
        Ok(ProgressLine { region })
    }

    /// The word the worker stores the item it starts in.
    #[allow(unsafe_code)]
    pub(crate) fn running(&self) -> &AtomicU64 {
        let progress = self.region.base().cast::<Progress>();
        // SAFETY: the region is `PROGRESS_LEN` = `size_of::<Progress>()`
        // bytes of the segment's data, 64-aligned (both checked by
        // `SegmentRegion::new`) and kept mapped by the region's `Arc` for
        // as long as `self` lives; `Progress` is atomics only, valid for
        // any bytes the other process writes.
        unsafe { &(*progress).running }
    }

    /// The skip words ([`Progress::skips`]).
    #[allow(unsafe_code)]
    pub(crate) fn skips(&self) -> &[AtomicU64; SKIPS] {
        let progress = self.region.base().cast::<Progress>();
        // SAFETY: as in `running`.
        unsafe { &(*progress).skips }
    }
}

/// The function every pool worker process runs. `Err` is a message for
/// the parent's log: the parent closed nothing, the worker gave up.
pub(crate) fn worker_main(args: WorkerArgs) -> std::result::Result<(), String> {
    serve(args).map_err(|e| e.to_string())
}

fn serve(args: WorkerArgs) -> Result<()> {
    if let Some(core) = args.core {
        // Best effort: where the OS cannot pin, the pool reports it.
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
    let segment = Arc::new(Segment::open(&args.rings)?);
    let doorbell = Doorbell::open(&args.doorbell)?;
    let (task_ring, result_ring) = rings_in(&segment, args.ring_bytes, false)?;
    let progress = ProgressLine::in_segment(&segment, args.ring_bytes)?;
    let mut tasks = task_ring.consumer()?;
    let mut results = result_ring.producer()?;

    if let Some((task, init_args)) = args.init {
        let failure = match task.resolve(args.key) {
            Err(why) => Some(TaskError {
                index: 0,
                kind: ErrorKind::Protocol,
                message: format!("initializer refused: {why}"),
                panic: None,
            }),
            Ok(run) => match crate::panic::catch_panic(|| run(&init_args)) {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(TaskError {
                    index: 0,
                    kind: ErrorKind::Codec,
                    message: format!("initializer arguments: {e}"),
                    panic: None,
                }),
                Err(info) => Some(TaskError {
                    index: 0,
                    kind: ErrorKind::Panicked,
                    message: info.message().to_string(),
                    panic: Some(info),
                }),
            },
        };
        if let Some(failure) = failure {
            let bytes = postcard::to_stdvec(&failure).map_err(|e| Error::codec("init error", e))?;
            results.push(R_INIT_FAILED, &bytes, None)?;
            doorbell.ring();
            return Ok(());
        }
    }

    results.push(R_READY, &[], None)?;
    doorbell.ring();

    let mut chunk_fns = Resolved::<ChunkFn>::new(args.key);
    let mut zc_fns = Resolved::<ZcFn>::new(args.key);
    let mut slots: Slots = HashMap::new();
    let mut buf = Vec::with_capacity(FLUSH_AT + 4096);
    // A grouped task's output, before it becomes a record.
    let mut item_buf = Vec::new();
    // Partial frames stay well inside the ring's frame limit, leaving room
    // for a task error after them.
    let flush_at = FLUSH_AT.min(results.max_payload() / 2);
    // Task frames received: the parent numbers the tasks it sends the same
    // way, so a progress word names one task, not just an offset.
    let mut task_seq = 0u32;

    loop {
        let frame = match tasks.peek(None) {
            Ok(frame) => frame,
            Err(e) if e.is_disconnected() => return Ok(()),
            Err(e) => return Err(e),
        };
        let bytes = frame.bytes();
        match frame.kind() {
            K_TASK => {
                let (h, items) = TaskHeader::read(bytes)?;
                let seq = task_seq;
                task_seq = task_seq.wrapping_add(1);
                if h.flags & T_EACH != 0 {
                    let ctx = Group {
                        progress: &progress,
                        seq,
                        flush_at,
                        doorbell: &doorbell,
                    };
                    let bufs = (&mut buf, &mut item_buf);
                    run_group(&ctx, &h, items, &mut chunk_fns, &mut results, bufs)?;
                } else {
                    let started = args.timing.then(Instant::now);
                    let running = Running::new(progress.running(), seq);
                    let mut out = Out::new(
                        &mut results,
                        &mut buf,
                        h.job,
                        h.first,
                        flush_at,
                        running,
                        &doorbell,
                    );
                    let outcome = match chunk_fns.get(h.task) {
                        Ok(run) => run(items, h.count, &mut out),
                        Err(why) => Err(ItemFailure::protocol(
                            0,
                            format!("pool task refused: {why}"),
                        )),
                    };
                    finish(&mut out, h.first, outcome, started)?;
                }
            }
            K_ZC => {
                let h = ZcHeader::read(bytes)?;
                // Always timed (two clock reads against a chunk of at
                // least µs): the parent sizes the last chunks by it.
                let started = Some(Instant::now());
                // Kernels that call the user's function item by item say
                // which item they start (the serde `map` of numbers).
                let running = Running::new(progress.running(), task_seq);
                task_seq = task_seq.wrapping_add(1);
                let span = |slot: u32| span_of(&slots, slot);
                let outcome = zc_fns
                    .get(h.task)
                    .map_err(|why| ItemFailure::protocol(0, format!("pool task refused: {why}")))
                    .and_then(|run| {
                        run(span(h.input)?, span(h.output)?, h.first, h.count, &running)
                    });
                let mut out = Out::new(
                    &mut results,
                    &mut buf,
                    h.job,
                    h.first,
                    flush_at,
                    running,
                    &doorbell,
                );
                finish(&mut out, h.first, outcome, started)?;
            }
            K_ZC_CLAIM => {
                let h = ClaimHeader::read(bytes)?;
                let z = h.zc;
                let started = Some(Instant::now());
                let running = Running::new(progress.running(), task_seq);
                task_seq = task_seq.wrapping_add(1);
                let span = |slot: u32| span_of(&slots, slot);
                // Items are named by their offset in the progress word's
                // low half: the parent sends this kind only for maps
                // below 2^32 elements, and refuses anything else here.
                let (ran, outcome) = (|| {
                    if z.first != 0 || z.count > u64::from(u32::MAX) {
                        return (0, Err(ItemFailure::protocol(0, "claim range".into())));
                    }
                    let prepared = zc_fns
                        .get(z.task)
                        .map_err(|why| {
                            ItemFailure::protocol(0, format!("pool task refused: {why}"))
                        })
                        .and_then(|run| Ok((run, span(z.input)?, span(z.output)?)))
                        .and_then(|(run, i, o)| {
                            let control = &attached_in(&slots, h.control)?.seg;
                            let (cells, cell) = worker_cell(control, h.cell, z.job)?;
                            Ok((run, i, o, cells, cell))
                        });
                    let (run, i, o, cells, cell) = match prepared {
                        Ok(p) => p,
                        Err(e) => return (0, Err(e)),
                    };
                    run_claims(&cells, cell, z.count, h.workers, h.fixed, |first, count| {
                        // `first + count <= z.count < 2^32`.
                        let at = running.shifted(first as u32);
                        at.start(0);
                        run(i, o, first, count, &at)
                    })
                })();
                let mut out = Out::new(
                    &mut results,
                    &mut buf,
                    z.job,
                    // The last frame's `first` says how many elements this
                    // worker ran (it carries no outputs).
                    ran,
                    flush_at,
                    running,
                    &doorbell,
                );
                finish(&mut out, 0, outcome, started)?;
            }
            K_ATTACH => {
                let (slot, handle) = Attach::read(bytes)?;
                // Mapped in chunk by chunk, as the kernels use it.
                let opened = handle.and_then(|h| {
                    Segment::open_lazy(&h)
                        .map(|seg| Attached::new(Arc::new(seg)))
                        .map_err(|e| e.to_string())
                });
                if slots.len() >= 4096 && !slots.contains_key(&slot) {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        "too many attached segments",
                    ));
                }
                slots.insert(slot, opened);
            }
            K_DETACH => {
                slots.remove(&Detach::read(bytes)?);
            }
            other => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("unknown pool frame kind {other}"),
                ))
            }
        }
        drop(frame);
        doorbell.ring();
    }
}

/// Segments attached for zero-copy chunks, by slot (or why one could not
/// be attached).
type Slots = HashMap<u32, std::result::Result<Attached, String>>;

/// The segment attached in `slot`.
fn attached_in(slots: &Slots, slot: u32) -> std::result::Result<&Attached, ItemFailure> {
    match slots.get(&slot) {
        Some(Ok(seg)) => Ok(seg),
        Some(Err(why)) => Err(ItemFailure::protocol(0, why.clone())),
        None => Err(ItemFailure::protocol(
            0,
            format!("no segment in slot {slot}"),
        )),
    }
}

/// The segment attached in `slot`, as a span for a zero-copy kernel.
fn span_of(slots: &Slots, slot: u32) -> std::result::Result<Span<'_>, ItemFailure> {
    attached_in(slots, slot).map(|a| Span {
        ptr: a.seg.as_ptr(),
        len: a.seg.len(),
        attached: Some(a),
    })
}

/// Sends the task's last result frame (with its error, if it failed).
/// What a [`T_EACH`] group's item needs besides its frame.
struct Group<'a> {
    progress: &'a ProgressLine,
    /// The group's task number (as `Running::new` takes it).
    seq: u32,
    flush_at: usize,
    doorbell: &'a Doorbell,
}

/// Runs a [`T_EACH`] group: each item as a task of its own (a failure
/// stops only that item), answered by a record of an [`F_RECORDS`] frame,
/// or by a frame of its own when its output is over [`RECORD_MAX`]; the
/// group's last frame is flagged [`F_LAST`]. An item named in a skip word
/// is answered [`REC_SKIPPED`] without running. Timed only if the frame
/// asks ([`T_TIMED`]): two clock reads cost a lone task's round trip
/// ~100 ns here.
fn run_group(
    ctx: &Group<'_>,
    h: &TaskHeader,
    mut items: &[u8],
    chunk_fns: &mut Resolved<ChunkFn>,
    results: &mut Producer,
    (recs, item_buf): (&mut Vec<u8>, &mut Vec<u8>),
) -> Result<()> {
    let started = (h.flags & T_TIMED != 0).then(Instant::now);
    let run = chunk_fns.get(h.task);
    // A frame of records stays within `flush_at` (half the ring's largest
    // frame): no record over half of that.
    let rec_max = RECORD_MAX.min(ctx.flush_at / 2);
    let mut recs = Records::new(recs, h.job, h.first, ctx.flush_at);
    for i in 0..h.count {
        let item = if h.count == 1 {
            // A group of one: its item bare.
            std::mem::take(&mut items)
        } else {
            if items.len() < 4 {
                return Err(Error::new(ErrorKind::Protocol, "a task group cut short"));
            }
            let (len, rest) = items.split_at(4);
            let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
            if rest.len() < len {
                return Err(Error::new(ErrorKind::Protocol, "a task group cut short"));
            }
            let (item, rest) = rest.split_at(len);
            items = rest;
            item
        };
        let last = i + 1 == h.count;
        let word = running_word(ctx.seq, i);
        let running = Running::new(ctx.progress.running(), ctx.seq).shifted(i);
        running.start(0);
        // SYNC: a full fence between the store of the progress word above
        // and the loads of the skip words below, made asymmetric
        // (`sys::fences`: a compiler fence here, a `membarrier` on the
        // parent's rare side); partner: the parent's heavy fence between
        // its store of a skip word and its load of the progress word
        // (`Worker::stop_item`). One of the two sees the other: the parent
        // either finds this item started or has its skip word read here.
        crate::sys::fences::light();
        let whole = running_word(ctx.seq, WHOLE_GROUP) + 1;
        let skip = ctx.progress.skips().iter().any(|s| {
            // SYNC: Relaxed after the fence above.
            let s = s.load(Ordering::Relaxed);
            s == word + 1 || s == whole
        });
        let index = h.first.wrapping_add(u64::from(i));
        if skip {
            // SYNC: Relaxed: a hint for the parent, which waits for it
            // after its own fence (see above).
            ctx.progress
                .running()
                .store(word | SKIPPED, Ordering::Relaxed);
            recs.add(results, REC_SKIPPED, &[])?;
        } else {
            // The item's output, alone in `item_buf` after a header's room;
            // never flushed by the trampoline (no flush threshold).
            let mut out = Out::new(
                results,
                item_buf,
                h.job,
                index,
                usize::MAX / 2,
                running,
                ctx.doorbell,
            );
            let outcome = match &run {
                Ok(run) => run(item, 1, &mut out),
                Err(why) => Err(ItemFailure::protocol(
                    0,
                    format!("pool task refused: {why}"),
                )),
            };
            match outcome {
                Ok(()) if item_buf.len() - ResultHeader::LEN <= rec_max => {
                    recs.add(results, REC_OK, &item_buf[ResultHeader::LEN..])?;
                }
                Ok(()) => {
                    // A large output: in a frame of its own, after the
                    // records before it.
                    recs.send(results, 0, 0)?;
                    let busy = if last { elapsed_ns(started) } else { 0 };
                    let flags = if last { F_LAST } else { 0 };
                    send_one_output(results, item_buf, h.job, index, flags, busy, ctx.doorbell)?;
                    recs.restart(index + 1);
                    if last {
                        return trailing(items);
                    }
                }
                Err(fail) => {
                    let err = TaskError {
                        index,
                        kind: fail.kind,
                        message: fail.message,
                        panic: fail.panic,
                    };
                    let mut bytes =
                        postcard::to_stdvec(&err).map_err(|e| Error::codec("task error", e))?;
                    if bytes.len() > rec_max {
                        bytes = postcard::to_stdvec(&shrink(err, rec_max / 4))
                            .map_err(|e| Error::codec("task error", e))?;
                    }
                    recs.add(results, REC_ERROR, &bytes)?;
                }
            }
        }
        if last {
            recs.send(results, F_LAST, elapsed_ns(started))?;
        }
    }
    if h.count == 0 {
        // Nothing to run (a parent never sends that): the group still ends.
        recs.send(results, F_LAST, 0)?;
    }
    trailing(items)
}

fn trailing(items: &[u8]) -> Result<()> {
    if items.is_empty() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Protocol,
            "trailing bytes after a task group",
        ))
    }
}

fn elapsed_ns(t: Option<Instant>) -> u64 {
    t.map_or(0, |t| {
        t.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
    })
}

/// The records of a group's items on their way into an [`F_RECORDS`]
/// frame.
struct Records<'a> {
    buf: &'a mut Vec<u8>,
    job: u64,
    /// Index of the first item in `buf`.
    first: u64,
    count: u32,
    /// The records before one that would take the frame past this go
    /// first.
    flush_at: usize,
}

impl<'a> Records<'a> {
    fn new(buf: &'a mut Vec<u8>, job: u64, first: u64, flush_at: usize) -> Records<'a> {
        buf.clear();
        buf.resize(ResultHeader::LEN, 0);
        Records {
            buf,
            job,
            first,
            count: 0,
            flush_at,
        }
    }

    /// Adds a record (of at most half of `flush_at`), after sending the
    /// ones before it if it would not fit with them.
    fn add(&mut self, results: &mut Producer, status: u8, bytes: &[u8]) -> Result<()> {
        if self.buf.len() + 5 + bytes.len() > self.flush_at {
            self.send(results, 0, 0)?;
        }
        self.buf
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.buf.push(status);
        self.buf.extend_from_slice(bytes);
        self.count += 1;
        Ok(())
    }

    /// Sends the records (if any, or with `F_LAST` regardless) and
    /// starts the next frame.
    fn send(&mut self, results: &mut Producer, last: u32, busy_ns: u64) -> Result<()> {
        if self.count == 0 && last == 0 {
            return Ok(());
        }
        let h = ResultHeader {
            job: self.job,
            first: self.first,
            count: self.count,
            flags: F_RECORDS | last,
            busy_ns,
        };
        self.buf[..ResultHeader::LEN].copy_from_slice(&h.to_bytes());
        results.push(R_RESULT, self.buf, None)?;
        let next = self.first.wrapping_add(u64::from(self.count));
        self.restart(next);
        Ok(())
    }

    fn restart(&mut self, first: u64) {
        self.buf.truncate(ResultHeader::LEN);
        self.first = first;
        self.count = 0;
    }
}

/// Sends the one output in `buf` (after a header's room) as a result
/// frame of its own: item `index` of `job`.
fn send_one_output(
    results: &mut Producer,
    buf: &mut Vec<u8>,
    job: u64,
    index: u64,
    flags: u32,
    busy_ns: u64,
    bell: &Doorbell,
) -> Result<()> {
    let h = ResultHeader {
        job,
        first: index,
        count: 1,
        flags,
        busy_ns,
    };
    buf[..ResultHeader::LEN].copy_from_slice(&h.to_bytes());
    if buf.len() > results.max_payload() {
        // As `Out::send_long`: wake a parent asleep on the doorbell first.
        bell.ring();
        results.push_long(R_RESULT, buf, None)?;
        buf.clear();
        buf.shrink_to(2 * RECORD_MAX + 4096);
    } else {
        results.push(R_RESULT, buf, None)?;
    }
    Ok(())
}

/// Sends the task's last result frame (with its error, if it failed).
fn finish(
    out: &mut Out<'_>,
    first: u64,
    outcome: std::result::Result<(), ItemFailure>,
    started: Option<Instant>,
) -> Result<()> {
    let busy = elapsed_ns(started);
    match outcome {
        Ok(()) => out.flush(F_LAST, busy),
        Err(fail) => {
            let err = TaskError {
                index: first.saturating_add(fail.offset),
                kind: fail.kind,
                message: fail.message,
                panic: fail.panic,
            };
            // The outputs before the failure, the error, then the outputs'
            // length, so the parent can split them without decoding.
            let max = out.max_frame();
            let mut bytes = postcard::to_stdvec(&err).map_err(|e| Error::codec("task error", e))?;
            if ResultHeader::LEN + bytes.len() + 4 > max {
                // A huge message or backtrace: keep what fits.
                bytes = postcard::to_stdvec(&shrink(err, max / 4))
                    .map_err(|e| Error::codec("task error", e))?;
            }
            if out.buf.len() + bytes.len() + 4 > max {
                out.flush(0, 0)?;
            }
            let outputs = (out.buf.len() - ResultHeader::LEN) as u32;
            out.buf.extend_from_slice(&bytes);
            out.buf.extend_from_slice(&outputs.to_le_bytes());
            out.flush(F_LAST | F_ERROR, busy)
        }
    }
}

/// A task error cut down to about `budget` bytes of text.
fn shrink(mut err: TaskError, budget: usize) -> TaskError {
    fn cut(s: &str, n: usize) -> String {
        let mut end = n.min(s.len());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    }
    let third = budget / 3;
    err.message = cut(&err.message, third);
    if let Some(info) = err.panic.take() {
        err.panic = Some(crate::error::PanicInfo::new(
            cut(info.message(), third),
            info.location().map(|l| cut(l, 200)),
            None,
        ));
    }
    err
}
