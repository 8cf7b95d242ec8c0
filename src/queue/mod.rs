//! `Queue`, `SimpleQueue`, `JoinableQueue`: many producers and consumers
//! across processes, over one multi-producer multi-consumer byte ring in a
//! shared-memory segment.
//!
//! Segment layout: a [`QueueHeader`] (put and get counters on separate
//! cache lines, unfinished tasks, the participants table), then the ring at
//! [`RING_OFFSET`]. Items are
//! serialised with postcard straight into the ring (no intermediate
//! buffer). The count is a hint for `len()`, like Python's `qsize()`.
//!
//! Files: this one holds the shared state every handle of one queue keeps
//! (`Inner`: the segment, the ring's two ends, close); `fifo.rs` the
//! `Queue`/`SimpleQueue` calls; `joinable.rs` `JoinableQueue`, whose task
//! count lives in the same header so no put can skip it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Call, Error, ErrorKind, Result};
use crate::participants::Participants;
use crate::ring::{self, Consumer, Mode, PeerCheck, Producer, Ring};
use crate::segment::{in_place, Line, Segment, SegmentHandle, SegmentRegion, Typed};
use crate::sys;

/// Ring bytes of [`Queue::new`].
const DEFAULT_CAPACITY: usize = 1 << 20;
const KIND_ITEM: u8 = 1;
/// Where the ring starts in the segment (after the header, 64-aligned).
const RING_OFFSET: usize = 1024;

in_place! {
    struct QueueHeader {
        /// Items ever put (written by producers only) …
        puts: Line<AtomicU64>,
        /// … and ever taken (consumers only): `len` is the difference.
        gets: Line<AtomicU64>,
        /// `JoinableQueue`: items put and not yet marked done; `join` sleeps
        /// on it as a futex word.
        unfinished: AtomicU32,
        /// Non-zero for a `JoinableQueue`'s segment: every put, through any
        /// handle of any type, counts an unfinished task. Written once before
        /// the handle exists.
        counts_tasks: AtomicU32,
        participants: Participants,
    }
}

const _: () = assert!(std::mem::size_of::<QueueHeader>() <= RING_OFFSET);

struct Inner {
    header: Typed<QueueHeader>,
    ring: Ring,
    producer: Mutex<Option<Producer>>,
    consumer: Mutex<Option<Consumer>>,
    slot: Option<usize>,
    /// `close()` was called on this process's handles.
    closed: AtomicBool,
    /// The segment's `counts_tasks`, read once (it never changes).
    counts_tasks: bool,
}

impl Inner {
    fn header(&self) -> &QueueHeader {
        self.header.get()
    }

    /// The ring's part of the segment: everything after `RING_OFFSET`.
    fn ring_region(segment: &Arc<Segment>) -> Result<Arc<SegmentRegion>> {
        segment
            .len()
            .checked_sub(RING_OFFSET)
            .filter(|&len| len > 0)
            .and_then(|len| SegmentRegion::new(segment, RING_OFFSET, len))
            .map(Arc::new)
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "queue segment too small"))
    }

    fn create(capacity: usize, counts_tasks: bool) -> Result<Inner> {
        let capacity = capacity
            .clamp(ring::MIN_CAPACITY, ring::MAX_CAPACITY)
            .next_power_of_two();
        let segment = Arc::new(Segment::create(RING_OFFSET + ring::region_size(capacity))?);
        let ring = Ring::create(Self::ring_region(&segment)?, capacity, Mode::Mpmc)?;
        let mut inner = Inner::with(Typed::new(segment)?, ring);
        // SYNC: Relaxed: no other process has this segment's handle yet;
        // whatever sends the handle (a spawn, a ring, a pipe) orders this
        // store before the other side's first look.
        inner
            .header()
            .counts_tasks
            .store(u32::from(counts_tasks), Ordering::Relaxed);
        inner.counts_tasks = counts_tasks;
        Ok(inner)
    }

    fn open(handle: &SegmentHandle) -> Result<Inner> {
        let segment = Arc::new(Segment::open(handle)?);
        let ring = Ring::attach(Self::ring_region(&segment)?)?;
        if ring.mode() != Mode::Mpmc {
            return Err(Error::new(
                ErrorKind::Protocol,
                "segment does not hold a queue",
            ));
        }
        Ok(Inner::with(Typed::new(segment)?, ring))
    }

    fn with(header: Typed<QueueHeader>, ring: Ring) -> Inner {
        let mut inner = Inner {
            header,
            ring,
            producer: Mutex::new(None),
            consumer: Mutex::new(None),
            slot: None,
            closed: AtomicBool::new(false),
            counts_tasks: false,
        };
        inner.slot = inner.header().participants.register();
        // SYNC: Relaxed: see `create`.
        inner.counts_tasks = inner.header().counts_tasks.load(Ordering::Relaxed) != 0;
        inner
    }

    /// Counts `n` more unfinished tasks if this is a joinable queue:
    /// before their items are visible, so `join` never sees an item done
    /// before it was counted. Every put path calls it, whatever the
    /// handle's type.
    fn count_tasks(&self, n: u32) {
        if self.counts_tasks {
            // SYNC: AcqRel pairs with the AcqRel decrement in `task_done`.
            self.header().unfinished.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Takes back one count of [`count_tasks`](Inner::count_tasks) (an
    /// item that did not go in), or marks one task done. Returns the
    /// count before.
    fn uncount_task(&self) -> u32 {
        let h = self.header();
        // SYNC: AcqRel: Release publishes the consumer's work to `join`'s
        // Acquire load; Acquire orders it after earlier task_done calls.
        let before = h.unfinished.fetch_sub(1, Ordering::AcqRel);
        if before == 1 {
            sys::futex_wake_all(&h.unfinished);
        }
        before
    }

    /// Blocked calls give up once a process sharing the queue has died
    /// abruptly (it is still registered: it never dropped its handle).
    fn peer_check(&self) -> PeerCheck {
        let header = self.header.clone();
        Arc::new(move || header.get().participants.dead().is_none())
    }

    /// An error for `call` once this process closed the queue.
    fn check_open(&self, call: &Call<'_>) -> Result<()> {
        // SYNC: Relaxed: a per-process flag; nothing is published with it.
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "this handle was closed (Queue::close)",
            )
            .in_call(call));
        }
        Ok(())
    }

    /// Runs `f` on this process's producer; its errors are worded for
    /// `call` (a `put` variant).
    fn with_producer<R>(
        &self,
        call: &Call<'_>,
        f: impl FnOnce(&mut Producer) -> Result<R>,
    ) -> Result<R> {
        self.check_open(call)?;
        let make = || {
            let mut p = self.ring.producer()?;
            p.set_peer_check(self.peer_check());
            Ok(p)
        };
        ring::with_handle(&self.producer, make, f).map_err(|e| e.in_call(call))
    }

    /// Runs `f` on this process's consumer; its errors are worded for
    /// `call` (a `get` variant).
    fn with_consumer<R>(
        &self,
        call: &Call<'_>,
        f: impl FnOnce(&mut Consumer) -> Result<R>,
    ) -> Result<R> {
        self.check_open(call)?;
        let make = || {
            let mut c = self.ring.consumer()?;
            c.set_peer_check(self.peer_check());
            Ok(c)
        };
        ring::with_handle(&self.consumer, make, f).map_err(|e| e.in_call(call))
    }
}

/// What the ring's errors mean for a call that puts.
const fn putting(name: &'static str) -> Call<'static> {
    Call {
        name,
        timed_out: "the queue stayed full",
        peer_died: PEER_DIED,
        disconnected: "the queue was closed",
    }
}

/// What the ring's errors mean for a call that gets.
const fn getting(name: &'static str) -> Call<'static> {
    Call {
        name,
        timed_out: "the queue stayed empty",
        peer_died: PEER_DIED,
        disconnected: "the queue was closed",
    }
}

const PEER_DIED: &str = "a process sharing the queue died abruptly (without dropping its \
                         handle), so this call could never complete";

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.header().participants.unregister(slot);
        }
    }
}
mod fifo;
mod joinable;

pub use fifo::{Queue, SimpleQueue};
pub use joinable::JoinableQueue;
