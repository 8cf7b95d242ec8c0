//! A byte ring of variable-size frames in a caller-provided memory region.
//!
//! Layout of the region (all offsets from its start, which is 64-aligned):
//!
//! ```text
//! 0          Header (HEADER_SIZE = 384 bytes, six cache lines, repr(C))
//! 384        data: `capacity` bytes (a power of two), frames back to back
//! ```
//!
//! A frame is an 8-byte *frame word* followed by its payload, padded to a
//! multiple of 8. The frame word packs `len: u32 | kind: u8 | seal: u24`;
//! the seal is derived from the frame's position in the byte stream with the
//! top bit set, so a committed word is never 0 and a word left over from an
//! earlier lap never matches. Positions (`head`, `tail`) are monotonic u64
//! byte counts; the offset in the data area is `pos & (capacity - 1)`.
//!
//! Commit protocol (why each hop moves one cache line): the consumer polls
//! the frame word at `head`, not the producer's `tail` index, so a small
//! frame's word and payload arrive in one line. For that to be sound the
//! word at the producer's `tail` is always 0 (the *terminator*): before it
//! publishes a frame at `p` the producer zeroes the word at `p + size`. A
//! frame that would cross the end of the data area is preceded by a padding
//! frame (kind [`KIND_PAD`]) that fills the rest of the lap. The ring is
//! never filled beyond `capacity - 8`, so the terminator always has room,
//! and a frame is at most `capacity / 2 - 8` bytes, so a frame fits in an
//! empty ring wherever the positions stand (no hang on a big frame).
//!
//! Trust: every word a peer can write is read once with an atomic load and
//! validated against the capacity this process copied and checked at
//! attach; a bad value poisons the ring and becomes [`ErrorKind::Protocol`].
//! Payload bytes are copied with raw pointers; the only references into the
//! data area are the in-place reservation (bytes the producer owns) and the
//! in-place frame (bytes the consumer owns); see the SAFETY comments there.
//!
//! Modes: [`Mode::Spsc`] (one producer, one consumer, each claimed at
//! `producer()`/`consumer()`) and [`Mode::Mpmc`], where each side takes a
//! small lock word in the header for the length of one operation (see
//! docs/ARCHITECTURE.md, "Rings and codec", for why a lock and not a
//! lock-free MPMC ring).
//!
//! Files: this one holds the layout (header, frame words, constants) and
//! [`Ring`] itself (create, attach, claim, poison); `memory.rs` the memory
//! it runs over (the one seam for loom), `wait.rs` spinning, parking and
//! the Mpmc side lock, `producer.rs` and `consumer.rs` the two ends, each
//! with its in-place views.
#![allow(unsafe_code)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::region::{Region, REGION_ALIGN};
use crate::segment::in_place;

mod consumer;
mod memory;
mod producer;
mod wait;

pub(crate) use consumer::{Consumer, Took};
pub(crate) use memory::SharedMem;
use memory::{Atomic, Memory};
pub(crate) use producer::Producer;
use wait::{lock_side, side_peer_alive, unlock_side, wake_all, Wait};
pub(crate) use wait::{RingSource, DEFAULT_SPIN};

#[cfg(test)]
mod tests;

#[cfg(all(test, multiproc_loom))]
mod loom_tests;

#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;

/// Size of the header in front of the data area.
pub(crate) const HEADER_SIZE: usize = 384;
/// Smallest capacity accepted.
pub(crate) const MIN_CAPACITY: usize = 64;
/// Largest capacity accepted (frame lengths are u32).
pub(crate) const MAX_CAPACITY: usize = 1 << 31;
/// The largest frame kind a caller may use; [`KIND_DROP`], [`KIND_MORE`]
/// and [`KIND_PAD`] are the ring's own.
pub(crate) const MAX_KIND: u8 = 0xFC;
/// Ends a long message its producer gave up on (a deadline, a failure
/// midway): the consumer drops the pieces it took ([`Producer::push_long`]).
pub(crate) const KIND_DROP: u8 = 0xFD;
/// Kind of every piece of a long message but its last, which carries the
/// message's own kind ([`Producer::push_long`]).
pub(crate) const KIND_MORE: u8 = 0xFE;
/// Bytes at the start of a long message's first piece: its whole length
/// (u64, little-endian), so the consumer allocates once.
const LONG_HEADER: usize = 8;
/// Kind of a padding frame (skipped by the consumer).
pub(crate) const KIND_PAD: u8 = 0xFF;

const MAGIC: u64 = u64::from_le_bytes(*b"MPRING01");
const VERSION: u32 = 1;
const FRAME_WORD: usize = 8;

const PRODUCER_CLOSED: u32 = 1;
const CONSUMER_CLOSED: u32 = 2;
const POISONED: u32 = 4;

/// Who may use each side of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One producer handle and one consumer handle, each claimed once.
    Spsc = 1,
    /// Any number of producer and consumer handles; each side serialises its
    /// operations with a lock word in the header.
    Mpmc = 2,
}

/// Caller-supplied liveness check of the peers (for example "is any worker
/// of this queue still running"). `false` makes a blocked call fail with
/// [`ErrorKind::PeerDied`] once the ring holds nothing more for it.
pub(crate) type PeerCheck = Arc<dyn Fn() -> bool + Send + Sync>;

// ---------------------------------------------------------------------------
// Shared header
// ---------------------------------------------------------------------------

pub(crate) use crate::segment::Line;

// The header types are declared `in_place!`: for std's atomics (the
// shared memory) they are `InPlace`, so `SharedMem::header` views them
// through `segment::view` as every other shared type; loom's atomics are
// not, and the model keeps its header as a plain value (`ModelMem`).

in_place! {
    /// Written once by [`Ring::create`] before any peer attaches.
    pub(crate) struct Meta<M: Memory> {
        magic: M::U64,
        capacity: M::U64,
        version: M::U32,
        mode: M::U32,
    }
}

in_place! {
    /// One side's position and lock, written by that side only.
    pub(crate) struct Side<M: Memory> {
        /// Producer: `tail` (end of the last committed frame). Consumer: `head`
        /// (end of the last released frame).
        pos: M::U64,
        /// Mpmc: 0 when free, else the pid of the holder.
        lock: M::U32,
        /// Mpmc: number of handles parked on `lock`.
        lock_waiters: M::U32,
        /// Spsc: pid of the process that claimed this side (0: none yet).
        pid: M::U32,
        /// Spsc: 1 once a handle claimed this side.
        claimed: M::U32,
    }
}

in_place! {
    /// Parking place of one side: `seq` is the futex word the other side bumps
    /// to wake it; `sleepers` counts parked handles.
    pub(crate) struct Waiters<M: Memory> {
        seq: M::U32,
        sleepers: M::U32,
    }
}

in_place! {
    /// The ring's header: atomics only, no pointers (in shared memory,
    /// `M = SharedMem`: std's `AtomicU32`/`AtomicU64`).
    pub(crate) struct Header<M: Memory> {
        meta: Line<Meta<M>>,
        prod: Line<Side<M>>,
        cons: Line<Side<M>>,
        /// The consumer parks here (empty ring); producers wake it.
        cons_wait: Line<Waiters<M>>,
        /// Producers park here (full ring); the consumer wakes them.
        prod_wait: Line<Waiters<M>>,
        /// PRODUCER_CLOSED | CONSUMER_CLOSED | POISONED.
        state: Line<M::U32>,
    }
}

const _: () = assert!(std::mem::size_of::<Header<SharedMem>>() == HEADER_SIZE);
const _: () = assert!(std::mem::align_of::<Header<SharedMem>>() == REGION_ALIGN);

/// Bytes a region must have for a ring of `capacity` data bytes.
pub(crate) const fn region_size(capacity: usize) -> usize {
    HEADER_SIZE + capacity
}

// ---------------------------------------------------------------------------
// Frame words
// ---------------------------------------------------------------------------

#[inline]
fn seal(pos: u64) -> u64 {
    ((pos >> 3) & 0x7F_FFFF) | 0x80_0000
}

#[inline]
fn pack(len: usize, kind: u8, pos: u64) -> u64 {
    debug_assert!(len <= u32::MAX as usize);
    len as u64 | (kind as u64) << 32 | seal(pos) << 40
}

const fn round8(n: usize) -> usize {
    (n + 7) & !7
}

/// Total bytes a frame with `len` payload bytes takes in the ring.
pub(crate) const fn frame_size(len: usize) -> usize {
    FRAME_WORD + round8(len)
}

/// A validated frame at a consumer's head.
#[derive(Clone, Copy, Debug)]
struct RawFrame {
    pos: u64,
    off: usize,
    kind: u8,
    len: usize,
}

/// A validated reservation at a producer's tail.
#[derive(Clone, Copy, Debug)]
struct Slot {
    pos: u64,
    off: usize,
    len: usize,
}

// ---------------------------------------------------------------------------
// Ring
// ---------------------------------------------------------------------------

/// A view of one ring, shareable between the handles of this process.
/// `M` is the memory it runs over: a region ([`SharedMem`]) everywhere
/// but in the loom model.
pub(crate) struct Ring<M: Memory = SharedMem> {
    mem: Arc<M>,
    mode: Mode,
}

impl<M: Memory> Clone for Ring<M> {
    fn clone(&self) -> Self {
        Ring {
            mem: Arc::clone(&self.mem),
            mode: self.mode,
        }
    }
}

impl Ring {
    /// Lays out a new ring of `capacity` data bytes (a power of two between
    /// [`MIN_CAPACITY`] and [`MAX_CAPACITY`]) at the start of `region`,
    /// which nobody else uses yet. Zeroes the data area (which also
    /// pre-faults it).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidState`] for a bad capacity or a region that is
    /// too small or misaligned.
    pub(crate) fn create(region: Arc<dyn Region>, capacity: usize, mode: Mode) -> Result<Ring> {
        check_capacity(capacity, region.len(), region.base() as usize)
            .map_err(|m| Error::new(ErrorKind::InvalidState, m))?;
        let mem = SharedMem::new(region, capacity);
        // SAFETY: the data area [HEADER_SIZE, HEADER_SIZE + cap) is inside
        // the region (checked above) and nobody else uses the region yet
        // (the caller's promise for a new ring), so no one observes the
        // plain writes.
        unsafe { std::ptr::write_bytes(mem.data_at(0), 0, capacity) };
        Ok(Ring::init(mem, capacity, mode))
    }

    /// Opens a ring another party created in `region`. The capacity and
    /// mode are read once from the header and checked against this
    /// process's mapping; from then on only the local copies are used.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Protocol`] when the header is not a valid ring header
    /// for this region.
    pub(crate) fn attach(region: Arc<dyn Region>) -> Result<Ring> {
        let len = region.len();
        let base = region.base() as usize;
        if len < HEADER_SIZE || !base.is_multiple_of(REGION_ALIGN) {
            return Err(Error::new(ErrorKind::Protocol, "ring region too small"));
        }
        // Reading the header needs only HEADER_SIZE bytes (checked above).
        let probe = SharedMem::new(region, 0);
        let meta = &probe.header().meta.0;
        // SYNC: Acquire pairs with the Release store of magic in Ring::init.
        if meta.magic.load(Ordering::Acquire) != MAGIC {
            return Err(Error::new(ErrorKind::Protocol, "not a ring (bad magic)"));
        }
        // SYNC: Relaxed; ordered by the Acquire load of magic above.
        let version = meta.version.load(Ordering::Relaxed);
        let cap = meta.capacity.load(Ordering::Relaxed);
        let mode = meta.mode.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("ring version {version}, expected {VERSION}"),
            ));
        }
        let mode = match mode {
            1 => Mode::Spsc,
            2 => Mode::Mpmc,
            m => return Err(Error::new(ErrorKind::Protocol, format!("ring mode {m}"))),
        };
        let cap = usize::try_from(cap)
            .map_err(|_| Error::new(ErrorKind::Protocol, "ring capacity out of range"))?;
        check_capacity(cap, len, base).map_err(|m| Error::new(ErrorKind::Protocol, m))?;
        let mem = SharedMem::new(probe.into_region(), cap);
        Ok(Ring {
            mem: Arc::new(mem),
            mode,
        })
    }

    /// A new ring in a fresh heap region (tests, in-process use).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn with_heap(capacity: usize, mode: Mode) -> Result<Ring> {
        Ring::create(
            Arc::new(crate::region::HeapRegion::new(region_size(capacity))),
            capacity,
            mode,
        )
    }
}

impl<M: Memory> Ring<M> {
    fn init(mem: M, capacity: usize, mode: Mode) -> Ring<M> {
        let h = mem.header();
        for side in [&h.prod.0, &h.cons.0] {
            // SYNC: Relaxed stores, published by the Release store of magic.
            side.pos.store(0, Ordering::Relaxed);
            side.lock.store(0, Ordering::Relaxed);
            side.lock_waiters.store(0, Ordering::Relaxed);
            side.pid.store(0, Ordering::Relaxed);
            side.claimed.store(0, Ordering::Relaxed);
        }
        for w in [&h.cons_wait.0, &h.prod_wait.0] {
            // SYNC: Relaxed, published by the Release store of magic.
            w.seq.store(0, Ordering::Relaxed);
            w.sleepers.store(0, Ordering::Relaxed);
        }
        // SYNC: Relaxed, published by the Release store of magic.
        h.state.0.store(0, Ordering::Relaxed);
        h.meta.0.capacity.store(capacity as u64, Ordering::Relaxed);
        h.meta.0.version.store(VERSION, Ordering::Relaxed);
        h.meta.0.mode.store(mode as u32, Ordering::Relaxed);
        // SYNC: Release pairs with the Acquire load of magic in Ring::attach
        // (in another process the handshake also orders it).
        h.meta.0.magic.store(MAGIC, Ordering::Release);
        Ring {
            mem: Arc::new(mem),
            mode,
        }
    }

    /// Data capacity in bytes (the local, validated copy).
    pub(crate) fn capacity(&self) -> usize {
        self.mem.cap()
    }

    /// The mode the ring was created with.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Largest payload one frame can carry: `capacity / 2 - 16`.
    #[inline]
    pub(crate) fn max_payload(&self) -> usize {
        max_payload(self.mem.cap())
    }

    /// Bytes currently in the ring (frames, padding), as last published;
    /// a hint, exact only when both sides are idle.
    pub(crate) fn used_bytes(&self) -> usize {
        let h = self.mem.header();
        // SYNC: Acquire pairs with the Release stores of pos in commit and
        // release; only a hint, validated by clamping.
        let head = h.cons.0.pos.load(Ordering::Acquire);
        let tail = h.prod.0.pos.load(Ordering::Acquire);
        (tail.wrapping_sub(head) as usize).min(self.mem.cap())
    }

    /// A producer handle. In [`Mode::Spsc`] the first call claims the
    /// side (and records this process's pid); a second fails.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidState`] if the side is already claimed.
    pub(crate) fn producer(&self) -> Result<Producer<M>> {
        let pid = self.claim(true)?;
        Ok(Producer::new(self.clone(), pid))
    }

    /// A consumer handle; see [`Ring::producer`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidState`] if the side is already claimed.
    pub(crate) fn consumer(&self) -> Result<Consumer<M>> {
        let pid = self.claim(false)?;
        Ok(Consumer::new(self.clone(), pid))
    }

    fn claim(&self, producer: bool) -> Result<u32> {
        let pid = std::process::id().max(1);
        if self.mode == Mode::Mpmc {
            return Ok(pid);
        }
        let h = self.mem.header();
        let side = if producer { &h.prod.0 } else { &h.cons.0 };
        // SYNC: AcqRel RMW; the RMW alone decides the one winner, and it
        // publishes nothing (the pid store below has its own Release).
        if side
            .claimed
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            let which = if producer { "sends" } else { "receives" };
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!("another process already {which} on this end: only one process may"),
            ));
        }
        // SYNC: Release pairs with the Acquire load of the pid in the other
        // side's `peer_alive` (a hint for the liveness check).
        side.pid.store(pid, Ordering::Release);
        // The claimer's position is the side's published position: 0 for a
        // new ring.
        Ok(pid)
    }

    #[inline]
    fn header(&self) -> &Header<M> {
        self.mem.header()
    }

    /// `Protocol` (and the ring poisoned) once a peer shrank its memory.
    fn check_intact(&self) -> Result<()> {
        if self.mem.lost() {
            return Err(self.poison(crate::segment::lost_error("under a ring").to_string()));
        }
        Ok(())
    }

    /// Closes a whole side (`producers`: no more frames will come; else:
    /// nothing will read them) without a handle, and wakes everyone: for an
    /// owner that counts the processes on each side itself (a pipe end
    /// shared by several processes, `Mode::Mpmc`). Idempotent.
    pub(crate) fn close_side(&self, producers: bool) {
        let bit = if producers {
            PRODUCER_CLOSED
        } else {
            CONSUMER_CLOSED
        };
        // SYNC: Release pairs with the Acquire load of state in the other
        // side's `check_state`, as a handle's own close.
        self.header().state.0.fetch_or(bit, Ordering::Release);
        wake_all(self);
    }

    /// Marks the ring broken (a peer broke the protocol) and wakes everyone.
    fn poison(&self, what: impl Into<String>) -> Error {
        // SYNC: Release pairs with the Acquire loads of state in check_state.
        self.header().state.0.fetch_or(POISONED, Ordering::Release);
        wake_all(self);
        Error::new(ErrorKind::Protocol, what)
    }

    /// Errors for a poisoned ring, whichever side asks.
    fn check_state_any(&self) -> Result<()> {
        // SYNC: Acquire pairs with the Release fetch_or in poison/close.
        if self.header().state.0.load(Ordering::Acquire) & POISONED != 0 {
            return Err(Error::new(ErrorKind::Protocol, POISONED_MSG));
        }
        Ok(())
    }
}

/// The context of every error of a poisoned ring (what poisoned it was
/// reported once, to the call that found it).
const POISONED_MSG: &str = "no longer usable: a process died or wrote invalid data \
                            in the middle of an operation";

#[inline]
fn max_payload(cap: usize) -> usize {
    cap / 2 - 2 * FRAME_WORD
}

fn check_capacity(cap: usize, region_len: usize, base: usize) -> std::result::Result<(), String> {
    if !cap.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) {
        return Err(format!(
            "ring capacity {cap} is not a power of two in {MIN_CAPACITY}..={MAX_CAPACITY}"
        ));
    }
    if region_len < region_size(cap) {
        return Err(format!(
            "ring of capacity {cap} needs {} bytes, region has {region_len}",
            region_size(cap)
        ));
    }
    if !base.is_multiple_of(64) {
        return Err("ring region is not 64-byte aligned".into());
    }
    Ok(())
}

/// Runs `f` on the handle in `slot`, creating it with `make` on first use.
/// Queue and Pipe keep one lazily claimed handle per side and process.
///
/// After `f`, a ring whose memory a peer shrank (see `sys::sigbus`) is
/// `Protocol`, whatever `f` returned: what it saw or did was private
/// zeros, not the ring.
///
/// With `now`, a handle another thread of this process is using (a
/// blocking call waiting in it) is `Timeout` at once instead of a wait for
/// that thread: an async attempt must never block.
pub(crate) fn with_handle_as<H: Handle, R>(
    slot: &std::sync::Mutex<Option<H>>,
    now: bool,
    make: impl FnOnce() -> Result<H>,
    f: impl FnOnce(&mut H) -> Result<R>,
) -> Result<R> {
    let mut slot = if now {
        match slot.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "another thread of this process is using this end",
                ))
            }
        }
    } else {
        slot.lock().unwrap_or_else(|p| p.into_inner())
    };
    if slot.is_none() {
        *slot = Some(make()?);
    }
    match slot.as_mut() {
        Some(handle) => {
            let r = f(handle);
            handle.ring().check_intact()?;
            r
        }
        // Filled just above; kept as an error rather than a panic.
        None => Err(Error::new(ErrorKind::InvalidState, "no ring handle")),
    }
}

/// A producer or consumer: the ring it works on.
pub(crate) trait Handle {
    fn ring(&self) -> &Ring;
}

/// What both ends of a ring hold besides their position, and the checks
/// they share.
struct End<M: Memory> {
    ring: Ring<M>,
    pid: u32,
    poisoned: bool,
    closed: bool,
    peer_alive: Option<PeerCheck>,
    spin: Duration,
}

impl<M: Memory> End<M> {
    fn new(ring: Ring<M>, pid: u32) -> End<M> {
        End {
            ring,
            pid,
            poisoned: false,
            closed: false,
            peer_alive: None,
            spin: DEFAULT_SPIN,
        }
    }

    #[inline]
    fn header(&self) -> &Header<M> {
        self.ring.header()
    }

    /// Poisons the ring for everyone (a peer broke the protocol).
    fn protocol(&mut self, what: impl Into<String>) -> Error {
        self.poisoned = true;
        self.ring.poison(what)
    }

    /// `Protocol` for a poisoned ring, `InvalidState` once this end (the
    /// `which` end) was closed; else the state word.
    #[inline]
    fn check_state(&self, which: &str) -> Result<u32> {
        if self.poisoned {
            return Err(Error::new(ErrorKind::Protocol, POISONED_MSG));
        }
        if self.closed {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!("this {which} end was closed"),
            ));
        }
        // SYNC: Acquire pairs with the Release fetch_or in poison/close.
        let st = self.header().state.0.load(Ordering::Acquire);
        if st & POISONED != 0 {
            return Err(Error::new(ErrorKind::Protocol, POISONED_MSG));
        }
        Ok(st)
    }

    /// Sets `bit` (this side closed) once and wakes both sides.
    fn close(&mut self, bit: u32) {
        if self.closed {
            return;
        }
        self.closed = true;
        // SYNC: Release pairs with the Acquire load of state in the other
        // side's `check_state` (for the producer's bit: every frame it
        // committed before is visible to the consumer that sees the bit).
        self.header().state.0.fetch_or(bit, Ordering::Release);
        wake_all(&self.ring);
    }

    /// Whether the other side, whose header line is `other`, is alive.
    fn peer_alive(&self, other: &Side<M>) -> bool {
        side_peer_alive(&self.peer_alive, self.ring.mode, other)
    }

    /// Mpmc: takes the lock of `side` (this end's); Spsc: nothing.
    #[inline]
    fn lock(&self, side: &Side<M>, wait: &mut Wait) -> Result<()> {
        if self.ring.mode == Mode::Spsc {
            return Ok(());
        }
        lock_side(&self.ring, side, self.pid, wait, self.spin)
    }

    /// Mpmc: releases the lock of `side`; Spsc: nothing.
    #[inline]
    fn unlock(&self, side: &Side<M>) {
        if self.ring.mode == Mode::Mpmc {
            unlock_side(side);
        }
    }
}
