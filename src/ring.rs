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
#![allow(unsafe_code)]
// Not every entry point has a user in the library yet: some variants (`try_pop`, `with_heap`, …) serve tests, fuzzing and the Pool (issue 4).
#![cfg_attr(not(test), allow(dead_code))]
// Queue and Pipe (the rest of issue 3) are the users; until they land
// some of this is only reached from tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, ErrorKind, Result};
#[cfg(not(loom))]
use crate::region::{HeapRegion, Region, REGION_ALIGN};

#[cfg(test)]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(all(feature = "fuzzing", not(loom)))]
pub(crate) mod fuzzing;

/// Size of the header in front of the data area.
pub(crate) const HEADER_SIZE: usize = 384;
/// Smallest capacity accepted.
pub(crate) const MIN_CAPACITY: usize = 64;
/// Largest capacity accepted (frame lengths are u32).
pub(crate) const MAX_CAPACITY: usize = 1 << 31;
/// The largest frame kind a caller may use; [`KIND_PAD`] is the ring's own.
pub(crate) const MAX_KIND: u8 = 0xFE;
/// Kind of a padding frame (skipped by the consumer).
pub(crate) const KIND_PAD: u8 = 0xFF;

const MAGIC: u64 = u64::from_le_bytes(*b"MPRING01");
const VERSION: u32 = 1;
const FRAME_WORD: usize = 8;

const PRODUCER_CLOSED: u32 = 1;
const CONSUMER_CLOSED: u32 = 2;
const POISONED: u32 = 4;

/// How long a blocked waiter sleeps before it re-checks peer liveness.
const LIVENESS_PERIOD: Duration = Duration::from_millis(100);
/// Default spin before parking: waking a parked peer costs ≈ 50 µs on the
/// target VM (docs/BENCHMARKS.md, "Measured before the code"), so spinning
/// shorter than that loses.
pub(crate) const DEFAULT_SPIN: Duration = Duration::from_micros(50);

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

/// One cache line.
#[repr(C, align(64))]
struct Line<T>(T);

/// Written once by [`Ring::create`] before any peer attaches.
#[repr(C)]
struct Meta {
    magic: AtomicU64,
    capacity: AtomicU64,
    version: AtomicU32,
    mode: AtomicU32,
}

/// One side's position and lock, written by that side only.
#[repr(C)]
struct Side {
    /// Producer: `tail` (end of the last committed frame). Consumer: `head`
    /// (end of the last released frame).
    pos: AtomicU64,
    /// Mpmc: 0 when free, else the pid of the holder.
    lock: AtomicU32,
    /// Mpmc: number of handles parked on `lock`.
    lock_waiters: AtomicU32,
    /// Spsc: pid of the process that claimed this side (0: none yet).
    pid: AtomicU32,
    /// Spsc: 1 once a handle claimed this side.
    claimed: AtomicU32,
}

/// Parking place of one side: `seq` is the futex word the other side bumps
/// to wake it; `sleepers` counts parked handles.
#[repr(C)]
struct Waiters {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

/// The ring's header: atomics only, no pointers.
#[repr(C)]
struct Header {
    meta: Line<Meta>,
    prod: Line<Side>,
    cons: Line<Side>,
    /// The consumer parks here (empty ring); producers wake it.
    cons_wait: Line<Waiters>,
    /// Producers park here (full ring); the consumer wakes them.
    prod_wait: Line<Waiters>,
    /// PRODUCER_CLOSED | CONSUMER_CLOSED | POISONED.
    state: Line<AtomicU32>,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);
#[cfg(not(loom))]
const _: () = assert!(std::mem::align_of::<Header>() == REGION_ALIGN);

#[cfg(loom)]
impl Header {
    fn new() -> Header {
        let side = || Side {
            pos: AtomicU64::new(0),
            lock: AtomicU32::new(0),
            lock_waiters: AtomicU32::new(0),
            pid: AtomicU32::new(0),
            claimed: AtomicU32::new(0),
        };
        let waiters = || Waiters {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        };
        Header {
            meta: Line(Meta {
                magic: AtomicU64::new(0),
                capacity: AtomicU64::new(0),
                version: AtomicU32::new(0),
                mode: AtomicU32::new(0),
            }),
            prod: Line(side()),
            cons: Line(side()),
            cons_wait: Line(waiters()),
            prod_wait: Line(waiters()),
            state: Line(AtomicU32::new(0)),
        }
    }
}

/// Bytes a region must have for a ring of `capacity` data bytes.
pub(crate) const fn region_size(capacity: usize) -> usize {
    HEADER_SIZE + capacity
}

// ---------------------------------------------------------------------------
// Memory access (the only place that touches the region)
// ---------------------------------------------------------------------------

/// The header and data area, with the capacity this process validated.
#[cfg(not(loom))]
struct Mem {
    /// Keeps the memory alive.
    region: Arc<dyn Region>,
    /// `region.base()`, cached: a virtual call per access costs more than
    /// a small frame.
    base: *mut u8,
    /// Local copy, checked against the mapping size; never re-read.
    cap: usize,
}

// SAFETY: `base` points into `region`, which is Send + Sync and outlives
// the Mem; the memory behind it is only accessed through atomics and raw
// copies (see Region), so sharing the pointer between threads adds nothing
// a `&Region` would not allow.
#[cfg(not(loom))]
unsafe impl Send for Mem {}
// SAFETY: as for Send.
#[cfg(not(loom))]
unsafe impl Sync for Mem {}

#[cfg(loom)]
struct Mem {
    header: Header,
    words: Box<[AtomicU64]>,
    cap: usize,
}

#[cfg(not(loom))]
impl Mem {
    fn new(region: Arc<dyn Region>, cap: usize) -> Mem {
        let base = region.base();
        Mem { region, base, cap }
    }

    /// Another process shrank the memory under us (see `sys::sigbus`).
    fn lost(&self) -> bool {
        self.region.lost()
    }

    #[inline]
    fn header(&self) -> &Header {
        // SAFETY: the region is valid for at least HEADER_SIZE bytes
        // (checked before any Mem is built) and 64-aligned (Region's
        // contract), and Header holds only atomics (UnsafeCell inside), for
        // which any bit pattern is valid and concurrent writes by peers are
        // allowed, so a shared reference to it is sound.
        unsafe { &*(self.base as *const Header) }
    }

    /// Address of byte `off` of the data area. Callers keep `off <= cap`
    /// (checked before any access), so with `HEADER_SIZE + cap <=
    /// region.len()` (checked before the Mem was built) the address is
    /// inside the region; `wrapping_add` then equals `add`.
    #[inline]
    fn data_at(&self, off: usize) -> *mut u8 {
        self.base.wrapping_add(HEADER_SIZE + off)
    }

    /// The frame word at `off` (8-aligned, `off + 8 <= cap`).
    #[inline]
    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.cap,
            "ring: bad word offset"
        );
        // SAFETY: in bounds (asserted), 8-aligned (the data area starts at a
        // 64-aligned address + 384), and accessed by every party only as an
        // AtomicU64, so a shared reference to an atomic is sound.
        unsafe { &*(self.data_at(off) as *const AtomicU64) }
    }

    /// Copies `src` into the data area at `off`.
    #[inline]
    fn write(&self, off: usize, src: &[u8]) {
        assert!(
            off <= self.cap && src.len() <= self.cap - off,
            "ring: bad write"
        );
        // SAFETY: the destination is inside the data area (asserted) and
        // cannot overlap `src`, a Rust slice we hold. The bytes belong to
        // the producer (free space past `tail`) by the ring protocol; a raw
        // copy forms no reference to them.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.data_at(off), src.len()) };
    }

    /// Replaces the contents of `dst` with the `len` bytes at `off` (no
    /// zero-fill first: the copy initialises them).
    #[inline]
    fn read_into(&self, off: usize, len: usize, dst: &mut Vec<u8>) {
        assert!(off <= self.cap && len <= self.cap - off, "ring: bad read");
        dst.clear();
        dst.reserve(len);
        // SAFETY: the source is inside the data area (asserted); the
        // destination is `dst`'s spare capacity, at least `len` bytes after
        // `reserve`, and cannot overlap the region. The bytes are a
        // committed frame the consumer owns until it releases it; a raw
        // copy forms no reference to shared bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.data_at(off), dst.as_mut_ptr(), len) };
        // SAFETY: the first `len` bytes were initialised by the copy above,
        // and `len <= capacity` after `reserve`.
        unsafe { dst.set_len(len) };
    }
}

#[cfg(loom)]
impl Mem {
    #[inline]
    fn header(&self) -> &Header {
        &self.header
    }

    fn lost(&self) -> bool {
        false
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.cap,
            "ring: bad word offset"
        );
        &self.words[off / 8]
    }

    // Payload bytes live in atomic words stored Relaxed, so loom can tell
    // when a frame word's Release/Acquire fails to publish them.
    fn write(&self, off: usize, src: &[u8]) {
        assert!(
            off % 8 == 0 && src.len() <= self.cap - off,
            "ring: bad write"
        );
        for (i, chunk) in src.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            // SYNC: Relaxed; published by the Release store of the frame word.
            self.words[off / 8 + i].store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }

    fn read_into(&self, off: usize, len: usize, dst: &mut Vec<u8>) {
        assert!(
            off.is_multiple_of(8) && len <= self.cap - off,
            "ring: bad read"
        );
        dst.clear();
        dst.resize(len, 0);
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            // SYNC: Relaxed; ordered after the Acquire load of the frame word.
            let w = self.words[off / 8 + i]
                .load(Ordering::Relaxed)
                .to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
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
#[derive(Clone)]
pub(crate) struct Ring {
    mem: Arc<Mem>,
    mode: Mode,
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
    #[cfg(not(loom))]
    pub(crate) fn create(region: Arc<dyn Region>, capacity: usize, mode: Mode) -> Result<Ring> {
        check_capacity(capacity, region.len(), region.base() as usize)
            .map_err(|m| Error::new(ErrorKind::InvalidState, m))?;
        let mem = Mem::new(region, capacity);
        // SAFETY: the data area [HEADER_SIZE, HEADER_SIZE + cap) is inside
        // the region (checked above) and nobody else uses the region yet
        // (the caller's promise for a new ring), so no one observes the
        // plain writes.
        unsafe { std::ptr::write_bytes(mem.data_at(0), 0, capacity) };
        Ok(Ring::init(mem, capacity, mode))
    }

    /// A new ring in a fresh heap region (tests, in-process use).
    pub(crate) fn with_heap(capacity: usize, mode: Mode) -> Result<Ring> {
        #[cfg(not(loom))]
        {
            Ring::create(
                Arc::new(HeapRegion::new(region_size(capacity))),
                capacity,
                mode,
            )
        }
        #[cfg(loom)]
        {
            check_capacity(capacity, region_size(capacity), 0)
                .map_err(|m| Error::new(ErrorKind::InvalidState, m))?;
            let words = (0..capacity / 8).map(|_| AtomicU64::new(0)).collect();
            let mem = Mem {
                header: Header::new(),
                words,
                cap: capacity,
            };
            Ok(Ring::init(mem, capacity, mode))
        }
    }

    fn init(mem: Mem, capacity: usize, mode: Mode) -> Ring {
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

    /// Opens a ring another party created in `region`. The capacity and
    /// mode are read once from the header and checked against this
    /// process's mapping; from then on only the local copies are used.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Protocol`] when the header is not a valid ring header
    /// for this region.
    #[cfg(not(loom))]
    pub(crate) fn attach(region: Arc<dyn Region>) -> Result<Ring> {
        let len = region.len();
        let base = region.base() as usize;
        if len < HEADER_SIZE || !base.is_multiple_of(REGION_ALIGN) {
            return Err(Error::new(ErrorKind::Protocol, "ring region too small"));
        }
        // Reading the header needs only HEADER_SIZE bytes (checked above).
        let probe = Mem::new(region, 0);
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
        let mem = Mem::new(probe.region, cap);
        Ok(Ring {
            mem: Arc::new(mem),
            mode,
        })
    }

    /// Data capacity in bytes (the local, validated copy).
    pub(crate) fn capacity(&self) -> usize {
        self.mem.cap
    }

    /// The mode the ring was created with.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Largest payload one frame can carry: `capacity / 2 - 16`.
    #[inline]
    pub(crate) fn max_payload(&self) -> usize {
        max_payload(self.mem.cap)
    }

    /// Bytes currently in the ring (frames, padding), as last published;
    /// a hint, exact only when both sides are idle.
    pub(crate) fn used_bytes(&self) -> usize {
        let h = self.mem.header();
        // SYNC: Acquire pairs with the Release stores of pos in commit and
        // release; only a hint, validated by clamping.
        let head = h.cons.0.pos.load(Ordering::Acquire);
        let tail = h.prod.0.pos.load(Ordering::Acquire);
        (tail.wrapping_sub(head) as usize).min(self.mem.cap)
    }

    /// A producer handle. In [`Mode::Spsc`] the first call claims the
    /// side (and records this process's pid); a second fails.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidState`] if the side is already claimed.
    pub(crate) fn producer(&self) -> Result<Producer> {
        let pid = self.claim(true)?;
        Ok(Producer {
            ring: self.clone(),
            tail: 0,
            cached_head: 0,
            pid,
            poisoned: false,
            closed: false,
            peer_alive: None,
            spin: DEFAULT_SPIN,
        })
    }

    /// A consumer handle; see [`Ring::producer`].
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidState`] if the side is already claimed.
    pub(crate) fn consumer(&self) -> Result<Consumer> {
        let pid = self.claim(false)?;
        Ok(Consumer {
            ring: self.clone(),
            head: 0,
            pid,
            poisoned: false,
            closed: false,
            peer_alive: None,
            spin: DEFAULT_SPIN,
        })
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
    fn header(&self) -> &Header {
        self.mem.header()
    }

    /// `Protocol` (and the ring poisoned) once a peer shrank its memory.
    fn check_intact(&self) -> Result<()> {
        if self.mem.lost() {
            return Err(self.poison(crate::segment::lost_error("under a ring").to_string()));
        }
        Ok(())
    }

    /// Marks the ring broken (a peer broke the protocol) and wakes everyone.
    fn poison(&self, what: impl Into<String>) -> Error {
        // SYNC: Release pairs with the Acquire loads of state in check_state.
        self.header().state.0.fetch_or(POISONED, Ordering::Release);
        self.wake_all();
        Error::new(ErrorKind::Protocol, what)
    }

    fn wake_all(&self) {
        let h = self.header();
        for w in [&h.cons_wait.0, &h.prod_wait.0] {
            // SYNC: Release pairs with the Acquire load of seq in park_on.
            w.seq.fetch_add(1, Ordering::Release);
            wake(&w.seq);
        }
    }
}

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

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

#[cfg(not(loom))]
fn park(word: &AtomicU32, expected: u32, timeout: Duration) {
    crate::sys::futex_wait(word, expected, timeout);
}

#[cfg(not(loom))]
fn wake(word: &AtomicU32) {
    crate::sys::futex_wake_all(word);
}

#[cfg(loom)]
fn park(word: &AtomicU32, expected: u32, _timeout: Duration) {
    // SYNC: Relaxed, as the futex's own compare: the caller re-checks its
    // condition with Acquire loads after we return.
    if word.load(Ordering::Relaxed) == expected {
        loom::thread::yield_now();
    }
}

#[cfg(loom)]
fn wake(_word: &AtomicU32) {}

#[cfg(not(loom))]
fn pid_alive(pid: u32) -> bool {
    crate::sys::pid_alive(pid)
}

#[cfg(loom)]
fn pid_alive(_pid: u32) -> bool {
    true
}

/// Spins (with `spin_loop` hints) for up to `budget` until `ready()`.
/// Under loom a spin would be an unbounded loop of modelled loads: check
/// once and go on to the (yielding) park.
fn spin_until(budget: Duration, mut ready: impl FnMut() -> bool) -> bool {
    if ready() {
        return true;
    }
    if budget.is_zero() || cfg!(loom) {
        return false;
    }
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            std::hint::spin_loop();
            if ready() {
                return true;
            }
        }
        if start.elapsed() >= budget {
            return false;
        }
    }
}

/// Runs `f` on the handle in `slot`, creating it with `make` on first use.
/// Queue and Pipe keep one lazily claimed handle per side and process.
///
/// After `f`, a ring whose memory a peer shrank (see `sys::sigbus`) is
/// `Protocol`, whatever `f` returned: what it saw or did was private
/// zeros, not the ring.
#[cfg(not(loom))]
pub(crate) fn with_handle<H: Handle, R>(
    slot: &std::sync::Mutex<Option<H>>,
    make: impl FnOnce() -> Result<H>,
    f: impl FnOnce(&mut H) -> Result<R>,
) -> Result<R> {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
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

impl Handle for Producer {
    fn ring(&self) -> &Ring {
        &self.ring
    }
}

impl Handle for Consumer {
    fn ring(&self) -> &Ring {
        &self.ring
    }
}

/// The blocking part of every ring wait: spin for `spin`, then park on
/// `waiters` in slices until `ready`, the deadline, or (checked every
/// liveness period) an error from `health`: the peer's death, or the
/// memory lost to a peer's shrink.
fn block_until(
    spin: Duration,
    waiters: &Waiters,
    wait: &mut Wait,
    ready: impl Fn() -> bool,
    health: impl Fn() -> Result<()>,
    what: &str,
) -> Result<()> {
    // A caller that found nothing after its deadline (a `try_*` call, or a
    // retry after a wake-up that changed nothing) times out here, even if
    // `ready` keeps saying yes: a peer that scribbles on the ring cannot
    // turn a bounded wait into an endless one.
    if wait.slice().is_none() {
        return Err(timeout_error(what));
    }
    if spin_until(wait.spin_budget(spin), &ready) {
        return Ok(());
    }
    loop {
        let Some(t) = wait.slice() else {
            return Err(timeout_error(what));
        };
        park_on(waiters, t, &ready);
        if ready() {
            return Ok(());
        }
        if wait.liveness_due() {
            health()?;
        }
    }
}

/// What a blocked wait checks every liveness period: the memory is still
/// shared (`Protocol`, and the ring is poisoned, if a peer shrank it) and
/// the other side is alive (`PeerDied`).
fn ring_health(ring: &Ring, peer_alive: impl FnOnce() -> bool, peer: &str) -> Result<()> {
    ring.check_intact()?;
    if !peer_alive() {
        return Err(Error::new(
            ErrorKind::PeerDied,
            format!("the {peer} process died"),
        ));
    }
    Ok(())
}

/// Whether the other side is alive: the caller's check if it set one, else
/// (Spsc) the pid that claimed `other`, else (Mpmc, no check) assumed.
fn side_peer_alive(check: &Option<PeerCheck>, mode: Mode, other: &Side) -> bool {
    match check {
        Some(f) => f(),
        // SYNC: Acquire pairs with the Release store of pid in claim.
        None if mode == Mode::Spsc => pid_alive(other.pid.load(Ordering::Acquire)),
        None => true,
    }
}

/// One park of a waiter that announced itself in `w.sleepers`: re-checks
/// `ready` after announcing (so a wake cannot be lost), then sleeps on
/// `w.seq` until woken or `timeout`.
fn park_on(w: &Waiters, timeout: Duration, ready: impl Fn() -> bool) {
    // SYNC: Acquire pairs with the Release fetch_add of seq in notify/wake_all.
    let seq = w.seq.load(Ordering::Acquire);
    // SYNC: SeqCst RMW + SeqCst fence, paired with the SeqCst fence in
    // `notify` after the other side's Release store of its progress (Dekker):
    // either our re-check below sees that progress, or the other side's load
    // of `sleepers` sees our increment and bumps `seq` before waking us.
    w.sleepers.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    if !ready() {
        park(&w.seq, seq, timeout);
    }
    // SYNC: Relaxed; only a count of sleepers, read as a hint by notify.
    w.sleepers.fetch_sub(1, Ordering::Relaxed);
}

/// Wakes the parked waiters of `w`, if any announced themselves. Called
/// after a Release store of progress (frame word or head).
fn notify(w: &Waiters) {
    // SYNC: SeqCst fence pairs with the SeqCst fence in `park_on` (Dekker on
    // progress vs. `sleepers`).
    fence(Ordering::SeqCst);
    // SYNC: Relaxed, ordered by the fence above.
    if w.sleepers.load(Ordering::Relaxed) != 0 {
        // SYNC: Release pairs with the Acquire load of seq in park_on.
        w.seq.fetch_add(1, Ordering::Release);
        wake(&w.seq);
    }
}

/// Deadline and liveness bookkeeping of one blocking call.
struct Wait {
    deadline: Option<Instant>,
    /// Set on the first liveness query: building a Wait must not read the
    /// clock (every try_* call builds one; a clock read costs more than a
    /// frame here).
    last_check: Option<Instant>,
}

impl Wait {
    fn new(deadline: Option<Instant>) -> Wait {
        Wait {
            deadline,
            last_check: None,
        }
    }

    /// How long to spin before parking: `spin`, but never past the
    /// deadline (a `try_*` call, whose deadline is now, checks once and
    /// returns instead of spinning 50 µs).
    fn spin_budget(&self, spin: Duration) -> Duration {
        match self.deadline {
            None => spin,
            Some(d) => spin.min(d.saturating_duration_since(Instant::now())),
        }
    }

    /// How long the next park may last; `None` once the deadline passed.
    fn slice(&self) -> Option<Duration> {
        match self.deadline {
            None => Some(LIVENESS_PERIOD),
            Some(d) => {
                let left = d.checked_duration_since(Instant::now())?;
                (!left.is_zero()).then(|| left.min(LIVENESS_PERIOD))
            }
        }
    }

    /// Runs `alive` at most every LIVENESS_PERIOD.
    fn liveness_due(&mut self) -> bool {
        match self.last_check {
            Some(t) if t.elapsed() < LIVENESS_PERIOD => false,
            Some(_) => {
                self.last_check = Some(Instant::now());
                true
            }
            None => {
                // The first park already lasted up to LIVENESS_PERIOD.
                self.last_check = Some(Instant::now());
                true
            }
        }
    }
}

/// The context of every error of a poisoned ring (what poisoned it was
/// reported once, to the call that found it).
const POISONED_MSG: &str = "no longer usable: a process died or wrote invalid data \
                            in the middle of an operation";

fn timeout_error(what: &str) -> Error {
    Error::new(ErrorKind::Timeout, what.to_string())
}

/// Takes a side's Mpmc lock (lock word = holder pid), blocking with the
/// same deadline/liveness rules as the data waits. A holder that died turns
/// into `PeerDied` (and poisons the ring: what it held may be half-written).
fn lock_side(ring: &Ring, side: &Side, pid: u32, wait: &mut Wait, spin: Duration) -> Result<()> {
    let try_lock = || {
        // SYNC: Relaxed pre-check (test-and-test-and-set: spinners read the
        // line instead of bouncing it); the CAS carries the ordering.
        side.lock.load(Ordering::Relaxed) == 0
            // SYNC: Acquire pairs with the Release store of 0 in
            // unlock_side, so the previous holder's writes are visible.
            && side
                .lock
                .compare_exchange(0, pid, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    };
    if spin_until(wait.spin_budget(spin), try_lock) {
        return Ok(());
    }
    loop {
        check_state_any(ring)?;
        ring.check_intact()?;
        // SYNC: Relaxed: the value only picks the futex's expected word and
        // the pid to check; the CAS above carries the ordering.
        let holder = side.lock.load(Ordering::Relaxed);
        if holder == 0 {
            if try_lock() {
                return Ok(());
            }
            continue;
        }
        let Some(t) = wait.slice() else {
            return Err(timeout_error(
                "another process held the lock past the deadline",
            ));
        };
        // SYNC: SeqCst pairs with the SeqCst fence in unlock_side (Dekker:
        // either the unlocker sees us waiting or our futex sees the change).
        side.lock_waiters.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        park(&side.lock, holder, t);
        // SYNC: Relaxed; a count read as a hint.
        side.lock_waiters.fetch_sub(1, Ordering::Relaxed);
        if try_lock() {
            return Ok(());
        }
        // SYNC: Relaxed: pid of the holder, a hint for the check below.
        if wait.liveness_due() && side.lock.load(Ordering::Relaxed) == holder && !pid_alive(holder)
        {
            let why = format!(
                "process {holder} died in the middle of an operation, holding the lock; \
                 what it was writing may be half-done, so this can no longer be used"
            );
            ring.poison(why.clone());
            return Err(Error::new(ErrorKind::PeerDied, why).with_pid(holder));
        }
    }
}

fn unlock_side(side: &Side) {
    // SYNC: Release pairs with the Acquire CAS in lock_side.
    side.lock.store(0, Ordering::Release);
    // SYNC: SeqCst fence pairs with the SeqCst fence in lock_side.
    fence(Ordering::SeqCst);
    // SYNC: Relaxed, ordered by the fence.
    if side.lock_waiters.load(Ordering::Relaxed) != 0 {
        wake(&side.lock);
    }
}

/// Errors for a poisoned ring, whichever side asks.
fn check_state_any(ring: &Ring) -> Result<()> {
    // SYNC: Acquire pairs with the Release fetch_or in poison/close.
    if ring.header().state.0.load(Ordering::Acquire) & POISONED != 0 {
        return Err(Error::new(ErrorKind::Protocol, POISONED_MSG));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Producer
// ---------------------------------------------------------------------------

/// The writing end of a ring.
pub(crate) struct Producer {
    ring: Ring,
    /// Spsc: the authoritative tail (the shared copy is never trusted).
    /// Mpmc: refreshed from the header under the lock.
    tail: u64,
    /// A lower bound of the consumer's head (heads only grow).
    cached_head: u64,
    pid: u32,
    poisoned: bool,
    closed: bool,
    peer_alive: Option<PeerCheck>,
    spin: Duration,
}

impl Producer {
    /// Sets how long blocking calls spin before they park.
    pub(crate) fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Sets a liveness check of the consumer(s), run every ≤ 100 ms while
    /// blocked. Without one, Spsc uses the consumer's recorded pid.
    pub(crate) fn set_peer_check(&mut self, check: PeerCheck) {
        self.peer_alive = Some(check);
    }

    /// Largest payload one frame can carry.
    #[inline]
    pub(crate) fn max_payload(&self) -> usize {
        self.ring.max_payload()
    }

    #[inline]
    fn header(&self) -> &Header {
        self.ring.header()
    }

    fn protocol(&mut self, what: impl Into<String>) -> Error {
        self.poisoned = true;
        self.ring.poison(what)
    }

    #[inline]
    fn check_state(&self) -> Result<()> {
        if self.poisoned {
            return Err(Error::new(ErrorKind::Protocol, POISONED_MSG));
        }
        if self.closed {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "this sending end was closed",
            ));
        }
        // SYNC: Acquire pairs with the Release fetch_or in poison/close.
        let st = self.header().state.0.load(Ordering::Acquire);
        if st & POISONED != 0 {
            return Err(Error::new(ErrorKind::Protocol, POISONED_MSG));
        }
        if st & CONSUMER_CLOSED != 0 {
            return Err(Error::new(
                ErrorKind::Disconnected,
                "the receiving end was closed",
            ));
        }
        Ok(())
    }

    #[inline]
    fn check_len(&self, len: usize) -> Result<()> {
        let max = self.max_payload();
        if len > max {
            return Err(Error::new(
                ErrorKind::Codec,
                format!("frame of {len} bytes exceeds the ring's maximum of {max}"),
            ));
        }
        Ok(())
    }

    /// Loads and validates the consumer's head: 8-aligned, not past our
    /// tail, not behind what we saw before, at most `cap` behind the tail.
    fn load_head(&mut self) -> Result<u64> {
        // SYNC: Acquire pairs with the Release store of head in
        // Consumer::release_raw: the consumer is done with those bytes.
        let head = self.header().cons.0.pos.load(Ordering::Acquire);
        let cap = self.ring.mem.cap as u64;
        let behind = self.tail.wrapping_sub(head);
        if !head.is_multiple_of(8)
            || behind > cap
            || behind > self.tail.wrapping_sub(self.cached_head)
        {
            return Err(self.protocol(format!(
                "ring head {head} invalid for tail {} (capacity {cap})",
                self.tail
            )));
        }
        self.cached_head = head;
        Ok(head)
    }

    /// Mpmc: takes the producer lock and refreshes tail/head from the
    /// header (validated); Spsc: nothing.
    #[inline]
    fn enter(&mut self, wait: &mut Wait) -> Result<()> {
        if self.ring.mode == Mode::Spsc {
            return Ok(());
        }
        let ring = self.ring.clone();
        lock_side(&ring, &ring.header().prod.0, self.pid, wait, self.spin)?;
        // SYNC: Relaxed: the lock's Acquire orders the previous holder's
        // Release store of tail before this load.
        let tail = self.header().prod.0.pos.load(Ordering::Relaxed);
        // SYNC: Acquire pairs with the Release store of head in release_raw.
        let head = self.header().cons.0.pos.load(Ordering::Acquire);
        let cap = self.ring.mem.cap as u64;
        if !tail.is_multiple_of(8) || tail.wrapping_sub(head) > cap {
            self.leave();
            return Err(self.protocol(format!("ring tail {tail} invalid for head {head}")));
        }
        self.tail = tail;
        self.cached_head = head;
        Ok(())
    }

    #[inline]
    fn leave(&mut self) {
        if self.ring.mode == Mode::Mpmc {
            unlock_side(&self.ring.header().prod.0);
        }
    }

    /// Finds room for a frame of `len` payload bytes at the tail, writing a
    /// padding frame first if it would cross the end. `None`: not enough
    /// free space now.
    #[inline]
    fn try_reserve_raw(&mut self, len: usize) -> Result<Option<Slot>> {
        let cap = self.ring.mem.cap;
        let size = frame_size(len);
        let off = (self.tail as usize) & (cap - 1);
        let pad = if off + size > cap { cap - off } else { 0 };
        // + FRAME_WORD: room for the terminator after the frame.
        let need = (pad + size + FRAME_WORD) as u64;
        if self.tail.wrapping_sub(self.cached_head) + need > cap as u64 {
            let head = self.load_head()?;
            if self.tail.wrapping_sub(head) + need > cap as u64 {
                return Ok(None);
            }
        }
        if pad > 0 {
            let mem = &self.ring.mem;
            // Terminator at the start of the next lap (free space), then the
            // padding frame that leads to it.
            // SYNC: Relaxed; published by the Release store just below.
            mem.word(0).store(0, Ordering::Relaxed);
            // SYNC: Release pairs with the Acquire load of the frame word in
            // Consumer::try_peek_raw.
            mem.word(off).store(
                pack(pad - FRAME_WORD, KIND_PAD, self.tail),
                Ordering::Release,
            );
            self.tail = self.tail.wrapping_add(pad as u64);
            // SYNC: Release pairs with the Acquire loads of tail in
            // Producer::enter (Mpmc) and used_bytes.
            self.header().prod.0.pos.store(self.tail, Ordering::Release);
        }
        Ok(Some(Slot {
            pos: self.tail,
            off: (self.tail as usize) & (cap - 1),
            len,
        }))
    }

    /// Publishes the frame in `slot` with `len <= slot.len` payload bytes
    /// (already written).
    #[inline]
    fn commit_raw(&mut self, slot: Slot, kind: u8, len: usize) {
        debug_assert!(len <= slot.len && kind <= MAX_KIND);
        let mem = &self.ring.mem;
        let cap = mem.cap;
        let next = slot.pos.wrapping_add(frame_size(len) as u64);
        // SYNC: Relaxed; the terminator is published by the Release store of
        // this frame's word below.
        mem.word((next as usize) & (cap - 1))
            .store(0, Ordering::Relaxed);
        // SYNC: Release pairs with the Acquire load of the frame word in
        // Consumer::try_peek_raw: payload and terminator are visible first.
        mem.word(slot.off)
            .store(pack(len, kind, slot.pos), Ordering::Release);
        self.tail = next;
        // SYNC: Release pairs with the Acquire loads of tail in
        // Producer::enter (Mpmc) and used_bytes.
        self.header().prod.0.pos.store(next, Ordering::Release);
    }

    /// Wakes a consumer parked on an empty ring, if one is. Needed only
    /// after the `*_quiet` calls.
    pub(crate) fn notify(&self) {
        notify(&self.header().cons_wait.0);
    }

    #[inline]
    fn check_kind(kind: u8) -> Result<()> {
        if kind > MAX_KIND {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!("frame kind {kind:#x} is reserved"),
            ));
        }
        Ok(())
    }

    /// Appends one frame if there is room; `Ok(false)` if the ring is full.
    /// Does not wake a parked consumer (call [`notify`](Self::notify)
    /// after a batch).
    ///
    /// # Errors
    ///
    /// `Codec` for a payload over [`max_payload`](Self::max_payload),
    /// `Disconnected` if the consumer closed, `Protocol` if the ring is
    /// poisoned or the consumer's head is invalid, `InvalidState` for a
    /// reserved kind.
    pub(crate) fn try_push_quiet(&mut self, kind: u8, payload: &[u8]) -> Result<bool> {
        Self::check_kind(kind)?;
        self.check_len(payload.len())?;
        self.check_state()?;
        self.enter(&mut Wait::new(None))?;
        let r = self.try_reserve_raw(payload.len());
        let r = match r {
            Ok(Some(slot)) => {
                self.ring.mem.write(slot.off + FRAME_WORD, payload);
                self.commit_raw(slot, kind, payload.len());
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        self.leave();
        r
    }

    /// [`try_push_quiet`](Self::try_push_quiet), then wakes the consumer if
    /// it is parked.
    ///
    /// # Errors
    ///
    /// As [`try_push_quiet`](Self::try_push_quiet).
    pub(crate) fn try_push(&mut self, kind: u8, payload: &[u8]) -> Result<bool> {
        let pushed = self.try_push_quiet(kind, payload)?;
        if pushed {
            self.notify();
        }
        Ok(pushed)
    }

    /// Appends one frame, waiting for room until `deadline` (`None`:
    /// forever).
    ///
    /// # Errors
    ///
    /// As [`try_push`](Self::try_push), plus `Timeout` and `PeerDied` (the
    /// consumer is gone while the ring is full).
    pub(crate) fn push(
        &mut self,
        kind: u8,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let mut wait = Wait::new(deadline);
        loop {
            if self.try_push(kind, payload)? {
                return Ok(());
            }
            self.wait_writable(payload.len(), &mut wait)?;
        }
    }

    /// Blocks until a frame of `len` bytes might fit (a hint: the caller
    /// retries), the deadline passes or the consumer is gone.
    fn wait_writable(&mut self, len: usize, wait: &mut Wait) -> Result<()> {
        let cap = self.ring.mem.cap;
        let size = frame_size(len);
        let h = self.ring.header();
        let fits = || {
            // SYNC: Acquire pairs with the Release stores of head/tail; a
            // hint only (the caller re-validates under try_push).
            let head = h.cons.0.pos.load(Ordering::Acquire);
            let tail = h.prod.0.pos.load(Ordering::Acquire);
            // SYNC: Acquire pairs with the Release fetch_or in close/poison.
            // Only the bits that end a producer's wait count (other bits,
            // which no correct peer sets, must not make it spin).
            let st = h.state.0.load(Ordering::Acquire) & (CONSUMER_CLOSED | POISONED);
            // The same need as try_reserve_raw: padding, frame, terminator.
            let off = (tail as usize) & (cap - 1);
            let pad = if off + size > cap { cap - off } else { 0 };
            let need = (pad + size + FRAME_WORD) as u64;
            st != 0 || tail.wrapping_sub(head).saturating_add(need) <= cap as u64
        };
        let health = || ring_health(&self.ring, || self.peer_alive(), "receiving");
        block_until(
            self.spin,
            &h.prod_wait.0,
            wait,
            fits,
            health,
            "no room came free in time",
        )
    }

    fn peer_alive(&self) -> bool {
        side_peer_alive(&self.peer_alive, self.ring.mode, &self.header().cons.0)
    }

    /// Marks the producer side closed and wakes the consumer: once it has
    /// drained the ring it gets `Disconnected`. Spsc producers close on
    /// drop; in Mpmc the owner of the handles decides when the last
    /// producer is gone.
    pub(crate) fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        // SYNC: Release pairs with the Acquire load of state in
        // Consumer::try_peek_raw: every frame committed before is visible.
        self.header()
            .state
            .0
            .fetch_or(PRODUCER_CLOSED, Ordering::Release);
        self.ring.wake_all();
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        if self.ring.mode == Mode::Spsc {
            self.close();
        }
    }
}

// ---------------------------------------------------------------------------
// Consumer
// ---------------------------------------------------------------------------

/// The reading end of a ring.
pub(crate) struct Consumer {
    ring: Ring,
    /// Spsc: the authoritative head. Mpmc: refreshed under the lock.
    head: u64,
    pid: u32,
    poisoned: bool,
    closed: bool,
    peer_alive: Option<PeerCheck>,
    spin: Duration,
}

impl Consumer {
    /// Sets how long blocking calls spin before they park.
    pub(crate) fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Sets a liveness check of the producer(s), run every ≤ 100 ms while
    /// blocked on an empty ring. Without one, Spsc uses the producer's
    /// recorded pid.
    pub(crate) fn set_peer_check(&mut self, check: PeerCheck) {
        self.peer_alive = Some(check);
    }

    #[inline]
    fn header(&self) -> &Header {
        self.ring.header()
    }

    fn protocol(&mut self, what: impl Into<String>) -> Error {
        self.poisoned = true;
        self.ring.poison(what)
    }

    #[inline]
    fn check_state(&self) -> Result<u32> {
        if self.poisoned {
            return Err(Error::new(ErrorKind::Protocol, POISONED_MSG));
        }
        if self.closed {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "this receiving end was closed",
            ));
        }
        // SYNC: Acquire pairs with the Release fetch_or in poison/close.
        let st = self.header().state.0.load(Ordering::Acquire);
        if st & POISONED != 0 {
            return Err(Error::new(ErrorKind::Protocol, POISONED_MSG));
        }
        Ok(st)
    }

    #[inline]
    fn enter(&mut self, wait: &mut Wait) -> Result<()> {
        if self.ring.mode == Mode::Spsc {
            return Ok(());
        }
        let ring = self.ring.clone();
        lock_side(&ring, &ring.header().cons.0, self.pid, wait, self.spin)?;
        // SYNC: Relaxed: the lock's Acquire orders the previous holder's
        // Release store of head before this load.
        let head = self.header().cons.0.pos.load(Ordering::Relaxed);
        // SYNC: Acquire pairs with the Release stores of tail; only used
        // for the plausibility check (tail may lag committed frames).
        let tail = self.header().prod.0.pos.load(Ordering::Acquire);
        let cap = self.ring.mem.cap as u64;
        if !head.is_multiple_of(8) || tail.wrapping_add(cap).wrapping_sub(head) > 2 * cap {
            self.leave();
            return Err(self.protocol(format!("ring head {head} invalid for tail {tail}")));
        }
        self.head = head;
        Ok(())
    }

    #[inline]
    fn leave(&mut self) {
        if self.ring.mode == Mode::Mpmc {
            unlock_side(&self.ring.header().cons.0);
        }
    }

    /// Reads and validates the frame word at `head`, skipping padding.
    /// `None`: empty (and the producer is not closed).
    #[inline]
    fn try_peek_raw(&mut self) -> Result<Option<RawFrame>> {
        let cap = self.ring.mem.cap;
        loop {
            let off = (self.head as usize) & (cap - 1);
            // SYNC: Acquire pairs with the Release store of the frame word
            // in Producer::commit_raw / try_reserve_raw: the payload and the
            // next terminator are visible once we see the word.
            let mut w = self.ring.mem.word(off).load(Ordering::Acquire);
            if w == 0 {
                let st = self.check_state()?;
                if st & PRODUCER_CLOSED == 0 {
                    return Ok(None);
                }
                // Closed: frames committed before the close are visible now
                // (the close's Release pairs with check_state's Acquire).
                // SYNC: Acquire, as above.
                w = self.ring.mem.word(off).load(Ordering::Acquire);
                if w == 0 {
                    return Err(Error::new(
                        ErrorKind::Disconnected,
                        "the sending end was closed and nothing is left",
                    ));
                }
            }
            let len = (w & 0xFFFF_FFFF) as usize;
            let kind = (w >> 32) as u8;
            if w >> 40 != seal(self.head) {
                return Err(self.protocol(format!(
                    "ring frame word {w:#x} at position {} has a bad seal",
                    self.head
                )));
            }
            if kind == KIND_PAD {
                if off == 0 || len != cap - off - FRAME_WORD {
                    return Err(self.protocol(format!("ring padding of {len} at offset {off}")));
                }
                self.head = self.head.wrapping_add((cap - off) as u64);
                self.publish_head();
                continue;
            }
            if len > max_payload(cap) || off + frame_size(len) > cap {
                return Err(self.protocol(format!(
                    "ring frame of {len} bytes at offset {off} (capacity {cap})"
                )));
            }
            return Ok(Some(RawFrame {
                pos: self.head,
                off,
                kind,
                len,
            }));
        }
    }

    #[inline]
    fn publish_head(&self) {
        // SYNC: Release pairs with the Acquire load of head in
        // Producer::load_head: we are done reading these bytes.
        self.header().cons.0.pos.store(self.head, Ordering::Release);
    }

    #[inline]
    fn release_raw(&mut self, f: RawFrame) {
        self.head = f.pos.wrapping_add(frame_size(f.len) as u64);
        self.publish_head();
    }

    /// Wakes producers parked on a full ring, if any. Needed only after the
    /// `*_quiet` calls.
    pub(crate) fn notify(&self) {
        notify(&self.header().prod_wait.0);
    }

    /// Takes the next frame, copying its payload into `buf` (cleared
    /// first; grows at most to the ring's maximum frame). `Ok(None)`: the
    /// ring is empty. Does not wake a producer parked on a full ring.
    ///
    /// # Errors
    ///
    /// `Disconnected` when the ring is empty and the producer closed;
    /// `Protocol` when a frame or position is invalid or the ring poisoned.
    pub(crate) fn try_pop_into_quiet(&mut self, buf: &mut Vec<u8>) -> Result<Option<u8>> {
        self.enter(&mut Wait::new(None))?;
        let r = match self.try_peek_raw() {
            Ok(Some(f)) => {
                self.ring.mem.read_into(f.off + FRAME_WORD, f.len, buf);
                self.release_raw(f);
                Ok(Some(f.kind))
            }
            other => other.map(|_| None),
        };
        self.leave();
        r
    }

    /// [`try_pop_into_quiet`](Self::try_pop_into_quiet), then wakes a
    /// parked producer.
    ///
    /// # Errors
    ///
    /// As [`try_pop_into_quiet`](Self::try_pop_into_quiet).
    pub(crate) fn try_pop_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<u8>> {
        let r = self.try_pop_into_quiet(buf)?;
        if r.is_some() {
            self.notify();
        }
        Ok(r)
    }

    /// Takes the next frame as `(kind, payload)`; `Ok(None)` when empty.
    ///
    /// # Errors
    ///
    /// As [`try_pop_into`](Self::try_pop_into).
    pub(crate) fn try_pop(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let mut buf = Vec::new();
        Ok(self.try_pop_into(&mut buf)?.map(|k| (k, buf)))
    }

    /// Takes the next frame, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    ///
    /// As [`try_pop`](Self::try_pop), plus `Timeout`, and `PeerDied` when
    /// the ring is empty and the producer is gone.
    pub(crate) fn pop(&mut self, deadline: Option<Instant>) -> Result<(u8, Vec<u8>)> {
        let mut wait = Wait::new(deadline);
        let mut buf = Vec::new();
        loop {
            if let Some(k) = self.try_pop_into(&mut buf)? {
                return Ok((k, buf));
            }
            self.wait_readable(&mut wait)?;
        }
    }

    /// Blocks until the ring might hold a frame (a hint: the caller
    /// retries), the deadline passes or the producer is gone.
    fn wait_readable(&mut self, wait: &mut Wait) -> Result<()> {
        let h = self.ring.header();
        let mem = &self.ring.mem;
        let mask = mem.cap - 1;
        let spsc_head = (self.ring.mode == Mode::Spsc).then_some(self.head);
        let ready = || {
            let head = spsc_head.unwrap_or_else(|| {
                // SYNC: Relaxed: a hint (masked below); Mpmc re-reads head
                // under the lock before using it.
                h.cons.0.pos.load(Ordering::Relaxed)
            });
            let off = (head as usize & mask) & !7;
            // SYNC: Acquire pairs with the Release store of the frame word in
            // commit_raw (hint; re-read by try_peek_raw).
            let w = mem.word(off).load(Ordering::Acquire);
            // SYNC: Acquire pairs with the Release fetch_or in close/poison.
            // Only the bits that end a consumer's wait count, as above.
            w != 0 || h.state.0.load(Ordering::Acquire) & (PRODUCER_CLOSED | POISONED) != 0
        };
        let health = || ring_health(&self.ring, || self.peer_alive(), "sending");
        block_until(
            self.spin,
            &h.cons_wait.0,
            wait,
            ready,
            health,
            "nothing arrived in time",
        )
    }

    fn peer_alive(&self) -> bool {
        side_peer_alive(&self.peer_alive, self.ring.mode, &self.header().prod.0)
    }

    /// Marks the consumer side closed and wakes producers: their pushes
    /// then fail with `Disconnected`. Spsc consumers close on drop.
    pub(crate) fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        // SYNC: Release pairs with the Acquire load of state in
        // Producer::check_state.
        self.header()
            .state
            .0
            .fetch_or(CONSUMER_CLOSED, Ordering::Release);
        self.ring.wake_all();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.ring.mode == Mode::Spsc {
            self.close();
        }
    }
}

// ---------------------------------------------------------------------------
// In place: reserve → write → commit, peek → release
// ---------------------------------------------------------------------------

/// Room for one frame at the producer's tail, written in place. In Mpmc
/// the producer lock is held until it is committed or dropped; dropping
/// it without [`commit`](Self::commit) abandons the frame.
#[cfg(not(loom))]
pub(crate) struct Reservation<'a> {
    producer: &'a mut Producer,
    slot: Slot,
    done: bool,
}

#[cfg(not(loom))]
impl Reservation<'_> {
    /// The reserved payload bytes (contents unspecified: old frames).
    pub(crate) fn buf(&mut self) -> &mut [u8] {
        self.producer.slot_buf(self.slot)
    }

    /// Publishes the first `len` bytes of [`buf`](Self::buf) as a frame of
    /// `kind`, and wakes a parked consumer.
    ///
    /// # Errors
    ///
    /// `InvalidState` if `len` is more than was reserved or `kind` is
    /// reserved; the reservation is then abandoned.
    pub(crate) fn commit(mut self, kind: u8, len: usize) -> Result<()> {
        self.producer.commit_checked(self.slot, kind, len)?;
        self.done = true;
        self.producer.leave();
        self.producer.notify();
        Ok(())
    }
}

#[cfg(not(loom))]
impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.producer.leave();
        }
    }
}

/// Frames written in place under one hold of the producer side
/// ([`Producer::batch`]).
#[cfg(not(loom))]
pub(crate) struct Batch<'a> {
    producer: &'a mut Producer,
    wrote: bool,
}

#[cfg(not(loom))]
impl Batch<'_> {
    /// Writes one frame of `kind` if `len` payload bytes fit now:
    /// `write` fills the reserved bytes and returns how many it used (at
    /// most `len`). `Ok(false)`: no room now (nothing was written).
    ///
    /// # Errors
    ///
    /// As [`Producer::try_push`]; `write`'s error (the frame is then
    /// abandoned); `InvalidState` if `write` claims more than `len` bytes.
    pub(crate) fn try_write(
        &mut self,
        kind: u8,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<usize>,
    ) -> Result<bool> {
        Producer::check_kind(kind)?;
        self.producer.check_len(len)?;
        let Some(slot) = self.producer.try_reserve_raw(len)? else {
            return Ok(false);
        };
        let used = write(self.producer.slot_buf(slot))?;
        self.producer.commit_checked(slot, kind, used)?;
        self.wrote = true;
        Ok(true)
    }
}

#[cfg(not(loom))]
impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.producer.leave();
        if self.wrote {
            self.producer.notify();
        }
    }
}

#[cfg(not(loom))]
impl Producer {
    /// The payload bytes of `slot`, a reservation this producer made and
    /// has not committed, while it still holds the side (contents
    /// unspecified: old frames).
    fn slot_buf(&mut self, slot: Slot) -> &mut [u8] {
        let mem = &self.ring.mem;
        let start = slot.off + FRAME_WORD;
        assert!(start + slot.len <= mem.cap, "ring: bad reservation");
        // SAFETY: in bounds (asserted); the bytes are initialised (the data
        // area is zeroed at creation and only ever holds bytes). They are
        // free space past our tail: by the ring protocol the consumer does
        // not read them until the commit's Release store, and no other
        // producer writes them (Spsc: one producer; Mpmc: the caller holds
        // the producer lock until commit/drop of its `Reservation` or
        // `Batch`). The `&mut self` borrow keeps the slice from outliving
        // that hold.
        unsafe { std::slice::from_raw_parts_mut(mem.data_at(start), slot.len) }
    }

    /// Publishes the first `len` bytes of `slot` as a frame of `kind`, after
    /// checking both (the frame is abandoned on an error).
    fn commit_checked(&mut self, slot: Slot, kind: u8, len: usize) -> Result<()> {
        Self::check_kind(kind)?;
        if len > slot.len {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!("commit of {len} bytes into a reservation of {}", slot.len),
            ));
        }
        self.commit_raw(slot, kind, len);
        Ok(())
    }

    /// Writes frames in place under one hold of the producer side (Mpmc:
    /// one lock for all of them), waiting for the lock until `deadline`:
    /// `fill` writes as many as there is room for with
    /// [`Batch::try_write`]. A parked consumer is woken once, when the
    /// batch ends (also if `fill` panics, which releases the side).
    ///
    /// # Errors
    ///
    /// As [`reserve`](Self::reserve), before `fill` runs.
    pub(crate) fn batch<R>(
        &mut self,
        deadline: Option<Instant>,
        fill: impl FnOnce(&mut Batch<'_>) -> R,
    ) -> Result<R> {
        self.check_state()?;
        self.enter(&mut Wait::new(deadline))?;
        let mut batch = Batch {
            producer: self,
            wrote: false,
        };
        Ok(fill(&mut batch))
    }

    /// Waits until a frame of `len` payload bytes might fit (a hint: the
    /// caller retries), `deadline` passes or the consumer is gone.
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push).
    pub(crate) fn wait_for_room(&mut self, len: usize, deadline: Option<Instant>) -> Result<()> {
        self.wait_writable(len, &mut Wait::new(deadline))
    }

    /// Reserves room for a frame of `len` payload bytes, to be written in
    /// place; `Ok(None)` if the ring is full.
    ///
    /// # Errors
    ///
    /// As [`try_push`](Self::try_push).
    pub(crate) fn try_reserve(&mut self, len: usize) -> Result<Option<Reservation<'_>>> {
        self.check_len(len)?;
        self.check_state()?;
        self.enter(&mut Wait::new(None))?;
        match self.try_reserve_raw(len) {
            Ok(Some(slot)) => Ok(Some(Reservation {
                producer: self,
                slot,
                done: false,
            })),
            other => {
                self.leave();
                other.map(|_| None)
            }
        }
    }

    /// Reserves room for a frame of `len` payload bytes, waiting until
    /// `deadline`.
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push).
    pub(crate) fn reserve(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<Reservation<'_>> {
        self.check_len(len)?;
        let mut wait = Wait::new(deadline);
        let slot = loop {
            self.check_state()?;
            self.enter(&mut wait)?;
            match self.try_reserve_raw(len) {
                Ok(Some(slot)) => break slot,
                Ok(None) => self.leave(),
                Err(e) => {
                    self.leave();
                    return Err(e);
                }
            }
            self.wait_writable(len, &mut wait)?;
        };
        Ok(Reservation {
            producer: self,
            slot,
            done: false,
        })
    }
}

/// The frame at the consumer's head, read in place. Dropping it releases
/// the frame (its bytes go back to the producer); in Mpmc the consumer lock
/// is held until then.
#[cfg(not(loom))]
pub(crate) struct Frame<'a> {
    consumer: &'a mut Consumer,
    frame: RawFrame,
}

#[cfg(not(loom))]
impl Frame<'_> {
    /// The frame's kind (0..=MAX_KIND).
    pub(crate) fn kind(&self) -> u8 {
        self.frame.kind
    }

    /// The payload, in place in the ring.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.consumer.frame_bytes(self.frame)
    }
}

/// A hold of the consumer side for [`Consumer::take_each`]: released on
/// drop (a panicking `read` included), waking a parked producer if frames
/// were released.
#[cfg(not(loom))]
struct Hold<'a> {
    consumer: &'a mut Consumer,
    released: bool,
}

#[cfg(not(loom))]
impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.consumer.leave();
        if self.released {
            self.consumer.notify();
        }
    }
}

#[cfg(not(loom))]
impl Drop for Frame<'_> {
    fn drop(&mut self) {
        self.consumer.release_raw(self.frame);
        self.consumer.leave();
        self.consumer.notify();
    }
}

#[cfg(not(loom))]
impl Consumer {
    /// The payload of `frame`, one [`try_peek_raw`](Self::try_peek_raw)
    /// returned and this consumer has not released, while it still holds
    /// the side.
    fn frame_bytes(&self, frame: RawFrame) -> &[u8] {
        let mem = &self.ring.mem;
        let start = frame.off + FRAME_WORD;
        assert!(start + frame.len <= mem.cap, "ring: bad frame");
        // SAFETY: in bounds (asserted; the frame was validated against the
        // local capacity), initialised bytes. By the ring protocol they are
        // the consumer's until it publishes a head past them (after this
        // borrow of `self` ends: releasing needs `&mut self`): the producer
        // wrote them before its Release store of the frame word we
        // Acquire-loaded, and writes there again only after seeing our head
        // move. (A peer that breaks the protocol can change the bytes under
        // us; any bytes are valid `u8`s, and such a peer is outside this
        // process.)
        unsafe { std::slice::from_raw_parts(mem.data_at(start), frame.len) }
    }

    /// Takes up to `max` frames in order, under one hold of the consumer
    /// side (Mpmc: one lock for all of them): waits until `deadline` for
    /// the first, then takes only those already there, and wakes a parked
    /// producer once. `read(kind, payload)` gets each frame in place.
    /// Returns how many were taken (at least 1 unless `max` is 0).
    ///
    /// When `read` fails on the first frame, that frame is consumed and the
    /// error returned, as [`pop`](Self::pop) does; when it fails on a later
    /// one, that frame stays in the ring (the next call meets it first) and
    /// the count so far is returned, so nothing already read is lost. An
    /// error of the ring after the first frame is likewise left for the
    /// next call.
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop), and `read`'s error on the first frame.
    pub(crate) fn take_each(
        &mut self,
        max: usize,
        deadline: Option<Instant>,
        mut read: impl FnMut(u8, &[u8]) -> Result<()>,
    ) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let mut wait = Wait::new(deadline);
        loop {
            self.enter(&mut wait)?;
            let mut hold = Hold {
                consumer: self,
                released: false,
            };
            let mut taken = 0;
            while taken < max {
                let frame = match hold.consumer.try_peek_raw() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) if taken == 0 => return Err(e),
                    Err(_) => break,
                };
                let outcome = read(frame.kind, hold.consumer.frame_bytes(frame));
                match outcome {
                    Ok(()) => {}
                    Err(_) if taken > 0 => break,
                    Err(e) => {
                        hold.consumer.release_raw(frame);
                        hold.released = true;
                        return Err(e);
                    }
                }
                hold.consumer.release_raw(frame);
                hold.released = true;
                taken += 1;
            }
            if taken > 0 {
                return Ok(taken);
            }
            drop(hold);
            self.wait_readable(&mut wait)?;
        }
    }

    /// The next frame in place; `Ok(None)` when empty.
    ///
    /// # Errors
    ///
    /// As [`try_pop`](Self::try_pop).
    pub(crate) fn try_peek(&mut self) -> Result<Option<Frame<'_>>> {
        self.enter(&mut Wait::new(None))?;
        match self.try_peek_raw() {
            Ok(Some(frame)) => Ok(Some(Frame {
                consumer: self,
                frame,
            })),
            other => {
                self.leave();
                other.map(|_| None)
            }
        }
    }

    /// Waits until a frame is ready (`Ok(true)`) or `deadline` passes
    /// (`Ok(false)`), without taking it: Python's `Connection.poll`.
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop), except that a timeout is `Ok(false)`.
    pub(crate) fn poll(&mut self, deadline: Option<Instant>) -> Result<bool> {
        let mut wait = Wait::new(deadline);
        let outcome = loop {
            if let Err(e) = self.enter(&mut wait) {
                break Err(e);
            }
            let ready = self.try_peek_raw();
            self.leave();
            match ready {
                Ok(Some(_)) => break Ok(true),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if let Err(e) = self.wait_readable(&mut wait) {
                break Err(e);
            }
        };
        match outcome {
            Err(e) if e.is_timeout() => Ok(false),
            other => other,
        }
    }

    /// The next frame in place, waiting until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop).
    pub(crate) fn peek(&mut self, deadline: Option<Instant>) -> Result<Frame<'_>> {
        let mut wait = Wait::new(deadline);
        let frame = loop {
            self.enter(&mut wait)?;
            match self.try_peek_raw() {
                Ok(Some(f)) => break f,
                Ok(None) => self.leave(),
                Err(e) => {
                    self.leave();
                    return Err(e);
                }
            }
            self.wait_readable(&mut wait)?;
        };
        Ok(Frame {
            consumer: self,
            frame,
        })
    }
}
