//! `Queue`, `SimpleQueue`, `JoinableQueue`: many producers and consumers
//! across processes, over one multi-producer multi-consumer byte ring in a
//! shared-memory segment.
//!
//! Segment layout: a [`QueueHeader`] (put and get counters on separate
//! cache lines, unfinished tasks, the participants table), then the ring at
//! [`RING_OFFSET`]. Items are
//! serialised with postcard straight into the ring (no intermediate
//! buffer). The count is a hint for `len()`, like Python's `qsize()`.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::error::{Call, Error, ErrorKind, Result};
use crate::participants::Participants;
use crate::ring::{self, Consumer, Mode, PeerCheck, Producer, Ring};
use crate::segment::{in_place, Line, Segment, SegmentHandle, SegmentRegion, Typed};
use crate::sys;
use crate::wait::{deadline_after, Wait};

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

/// A first-in first-out queue shared by any number of processes.
///
/// Python counterpart: `multiprocessing.Queue()`: `put`, `get`,
/// `put_nowait` ([`try_put`](Queue::try_put)), `get_nowait`
/// ([`try_get`](Queue::try_get)), `put(timeout=)`
/// ([`put_timeout`](Queue::put_timeout)), `get(timeout=)`
/// ([`get_timeout`](Queue::get_timeout)), `qsize` ([`len`](Queue::len)),
/// `empty`, `full`, `close`. Items are any serde type; nothing is pickled.
///
/// The bound is in bytes (the ring's capacity, 1 MiB by default): a `put`
/// blocks while the ring has no room. Pass the queue to child processes as
/// an argument; clones share it.
///
/// A blocked `get` or `put` fails with [`ErrorKind::PeerDied`] once a
/// process sharing the queue has died abruptly (killed, crashed) instead of
/// waiting forever. (Processes that exit normally drop their handles and
/// break nothing: a `get` then waits for the next producer, as in Python.)
///
/// ```
/// use multiproc::{Process, Queue};
///
/// fn producer(q: Queue<String>) {
///     for i in 0..3 { q.put(&format!("item {i}")).unwrap(); }
/// }
///
/// fn main() {
///     multiproc::init();
///     let q = Queue::new().unwrap();
///     let p = Process::spawn(producer, q.clone()).unwrap();
///     for i in 0..3 { assert_eq!(q.get().unwrap(), format!("item {i}")); }
///     p.join().unwrap();
/// }
/// ```
pub struct Queue<T> {
    inner: Arc<Inner>,
    _items: PhantomData<fn(T) -> T>,
}

/// Python's `multiprocessing.SimpleQueue`: the same queue (it already is
/// the simple, unbounded-in-items kind); `put`, `get`, `is_empty`, `close`.
///
/// ```
/// let q: multiproc::SimpleQueue<u8> = multiproc::SimpleQueue::new().unwrap();
/// q.put(&1).unwrap();
/// assert_eq!(q.get().unwrap(), 1);
/// ```
pub type SimpleQueue<T> = Queue<T>;

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            inner: Arc::clone(&self.inner),
            _items: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("puts", &self.inner.header().puts.0.load(Ordering::Relaxed))
            .field("gets", &self.inner.header().gets.0.load(Ordering::Relaxed))
            .field("capacity_bytes", &self.inner.ring.capacity())
            .finish()
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.header.segment().handle().serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let handle = SegmentHandle::deserialize(d)?;
        let inner = Inner::open(&handle).map_err(serde::de::Error::custom)?;
        Ok(Queue {
            inner: Arc::new(inner),
            _items: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue with a 1 MiB ring.
    ///
    /// # Errors
    /// [`ErrorKind::NoSpace`] / [`ErrorKind::Io`] if the shared memory
    /// cannot be created.
    ///
    /// ```
    /// let q = multiproc::Queue::<u32>::new().unwrap();
    /// assert!(q.is_empty());
    /// ```
    pub fn new() -> Result<Self> {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A queue whose ring holds `bytes` bytes (rounded up to a power of
    /// two, at least 64). One item may use at most half of it.
    ///
    /// # Errors
    /// As [`new`](Queue::new).
    ///
    /// ```
    /// let q = multiproc::Queue::<u64>::with_capacity(4096).unwrap();
    /// q.put(&1).unwrap();
    /// ```
    pub fn with_capacity(bytes: usize) -> Result<Self> {
        Ok(Queue {
            inner: Arc::new(Inner::create(bytes, false)?),
            _items: PhantomData,
        })
    }

    /// Puts `item` at the back, waiting for room.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] if the item is larger than half the ring;
    /// [`ErrorKind::PeerDied`] if the queue stays full and a process sharing
    /// it died abruptly; [`ErrorKind::InvalidState`] after [`close`](Queue::close).
    ///
    /// ```
    /// let q = multiproc::Queue::new().unwrap();
    /// q.put(&"hello".to_string()).unwrap();
    /// ```
    pub fn put(&self, item: &T) -> Result<()> {
        self.put_until(item, None, &putting("Queue::put"))
    }

    fn put_until(&self, item: &T, deadline: Option<Instant>, call: &Call<'_>) -> Result<()> {
        let inner = &self.inner;
        inner.count_tasks(1);
        inner
            .with_producer(call, |p| codec::push_value(p, KIND_ITEM, item, deadline))
            .inspect_err(|_| {
                if inner.counts_tasks {
                    inner.uncount_task();
                }
            })?;
        // SYNC: Relaxed: `len` is a hint, not a synchronisation point.
        inner.header().puts.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// As [`put`](Queue::put), waiting at most `timeout` for room (Python's
    /// `put(item, timeout=t)`).
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] if there was no room in time (nothing was
    /// put), or as [`put`](Queue::put).
    ///
    /// ```
    /// let q = multiproc::Queue::new().unwrap();
    /// q.put_timeout(&5u8, std::time::Duration::from_millis(10)).unwrap();
    /// ```
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<()> {
        self.put_until(
            item,
            deadline_after(timeout),
            &putting("Queue::put_timeout"),
        )
    }

    /// Puts `item` only if there is room now (Python's `put_nowait`):
    /// `Ok(false)` if the queue is full (nothing was put).
    ///
    /// # Errors
    /// As [`put`](Queue::put).
    ///
    /// ```
    /// let q = multiproc::Queue::with_capacity(64).unwrap();
    /// assert!(q.try_put(&1u8).unwrap());
    /// while q.try_put(&2u8).unwrap() {}
    /// assert!(q.is_full());
    /// ```
    pub fn try_put(&self, item: &T) -> Result<bool> {
        self.try_put_as(item, &putting("Queue::try_put"))
    }

    fn try_put_as(&self, item: &T, call: &Call<'_>) -> Result<bool> {
        match self.put_until(item, Some(Instant::now()), call) {
            Ok(()) => Ok(true),
            Err(e) if e.is_timeout() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes the item at the front, waiting for one.
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`] if the queue is empty and a process sharing it
    /// died abruptly; [`ErrorKind::Codec`] if the item does not decode as
    /// a `T` (it is consumed).
    ///
    /// ```
    /// let q = multiproc::Queue::new().unwrap();
    /// q.put(&3i32).unwrap();
    /// assert_eq!(q.get().unwrap(), 3);
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_until(None, &getting("Queue::get"))
    }

    fn get_until(&self, deadline: Option<Instant>, call: &Call<'_>) -> Result<T> {
        let inner = &self.inner;
        let (_, item) = inner.with_consumer(call, |c| codec::pop_value::<T>(c, deadline))?;
        // SYNC: Relaxed, as for `puts`.
        inner.header().gets.0.fetch_add(1, Ordering::Relaxed);
        Ok(item)
    }

    /// As [`get`](Queue::get), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`get`](Queue::get).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(q.get_timeout(std::time::Duration::from_millis(5)).unwrap_err().is_timeout());
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_until(deadline_after(timeout), &getting("Queue::get_timeout"))
    }

    /// Takes the front item if there is one now (Python's `get_nowait`).
    ///
    /// # Errors
    /// As [`get`](Queue::get).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert_eq!(q.try_get().unwrap(), None);
    /// ```
    pub fn try_get(&self) -> Result<Option<T>> {
        match self.get_until(Some(Instant::now()), &getting("Queue::try_get")) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_timeout() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Puts every item of `items`, in order, as [`put`](Queue::put) would
    /// one by one, but holding the queue for as many as fit at once: one
    /// lock and one wake-up of a waiting consumer per batch instead of per
    /// item. Waits for room like `put` when the queue is full. Each item
    /// is still its own entry: any consumer may `get` any of them.
    ///
    /// Python counterpart: a loop of `q.put(item)`.
    ///
    /// # Errors
    /// As [`put`](Queue::put). The items before the failing one are in
    /// the queue; the failing one and those after it are not.
    ///
    /// ```
    /// let q = multiproc::Queue::new().unwrap();
    /// q.put_many(&[1u32, 2, 3]).unwrap();
    /// q.put_many((4..=6u32).map(|x| x * 10)).unwrap();
    /// assert_eq!(q.get_many(10).unwrap(), [1, 2, 3, 40, 50, 60]);
    /// ```
    pub fn put_many<I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.put_many_as(items, &putting("Queue::put_many"))
    }

    /// [`put_many`](Queue::put_many), its errors worded for `call`.
    fn put_many_as<I>(&self, items: I, call: &Call<'_>) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        let inner = &self.inner;
        let count = |add: bool| {
            if add {
                inner.count_tasks(1);
            } else if inner.counts_tasks {
                inner.uncount_task();
            }
        };
        let mut items = items.into_iter();
        let mut put = 0u64;
        let result = inner.with_producer(call, |p| {
            let max = p.max_payload();
            let sized = |item: I::Item| -> Result<(I::Item, usize)> {
                let len = codec::serde_len(item.borrow())?;
                codec::check_max(len, max)?;
                Ok((item, len))
            };
            let mut next = match items.next() {
                Some(item) => sized(item)?,
                None => return Ok(()),
            };
            loop {
                // As many as fit, under one hold of the ring.
                let written = p.batch(None, |b| -> Result<Option<(I::Item, usize)>> {
                    let mut cur = next;
                    loop {
                        let (item, len) = cur;
                        count(true);
                        let wrote = b.try_write(KIND_ITEM, len, |buf| {
                            codec::encode_serde_into(item.borrow(), buf)
                        });
                        match wrote {
                            Ok(true) => put += 1,
                            Ok(false) => {
                                count(false);
                                return Ok(Some((item, len)));
                            }
                            Err(e) => {
                                count(false);
                                return Err(e);
                            }
                        }
                        cur = match items.next() {
                            Some(item) => sized(item)?,
                            None => return Ok(None),
                        };
                    }
                })??;
                match written {
                    None => return Ok(()),
                    Some((item, len)) => {
                        p.wait_for_room(len, None)?;
                        next = (item, len);
                    }
                }
            }
        });
        // SYNC: Relaxed, as in `put`.
        inner.header().puts.0.fetch_add(put, Ordering::Relaxed);
        result
    }

    /// Takes up to `max` items, in order: waits for the first like
    /// [`get`](Queue::get), then takes only those already in the queue,
    /// under one hold of the queue (one lock, one wake-up of a waiting
    /// producer). Returns at least one item, unless `max` is 0.
    ///
    /// Python counterpart: `get()` then `get_nowait()` until `Empty` or
    /// `max` items.
    ///
    /// # Errors
    /// As [`get`](Queue::get). An item that does not decode as a `T` fails
    /// the call (and is consumed) only when it comes first; after other
    /// items it is left in the queue for the next call, so no item already
    /// taken is lost.
    ///
    /// ```
    /// let q = multiproc::Queue::new().unwrap();
    /// q.put_many(0..5u8).unwrap();
    /// assert_eq!(q.get_many(3).unwrap(), [0, 1, 2]);
    /// assert_eq!(q.get_many(3).unwrap(), [3, 4]);
    /// ```
    pub fn get_many(&self, max: usize) -> Result<Vec<T>> {
        self.get_many_until(max, None, &getting("Queue::get_many"))
    }

    /// [`get_many`](Queue::get_many) without waiting: the items in the
    /// queue now, up to `max` (an empty `Vec` if there are none).
    ///
    /// Python counterpart: `get_nowait()` until `Empty` or `max` items.
    ///
    /// # Errors
    /// As [`get_many`](Queue::get_many), but never a timeout.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(q.try_get_many(8).unwrap().is_empty());
    /// q.put(&7).unwrap();
    /// assert_eq!(q.try_get_many(8).unwrap(), [7]);
    /// ```
    pub fn try_get_many(&self, max: usize) -> Result<Vec<T>> {
        let call = getting("Queue::try_get_many");
        match self.get_many_until(max, Some(Instant::now()), &call) {
            Err(e) if e.is_timeout() => Ok(Vec::new()),
            other => other,
        }
    }

    fn get_many_until(
        &self,
        max: usize,
        deadline: Option<Instant>,
        call: &Call<'_>,
    ) -> Result<Vec<T>> {
        let inner = &self.inner;
        let mut out = Vec::new();
        inner.with_consumer(call, |c| {
            c.take_each(max, deadline, |_, bytes| {
                out.push(codec::decode_serde(bytes)?);
                Ok(())
            })
        })?;
        // SYNC: Relaxed, as in `get`.
        inner
            .header()
            .gets
            .0
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// Items in the queue now (Python's `qsize()`): exact when nobody is
    /// putting or getting at that moment.
    ///
    /// ```
    /// let q = multiproc::Queue::new().unwrap();
    /// q.put(&1u8).unwrap();
    /// assert_eq!(q.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        let h = self.inner.header();
        // Gets first, so gets done after it cannot push the difference
        // below zero; a consumer may still count its get before the
        // producer counts the put of the same item, and the saturation
        // absorbs that moment.
        // SYNC: Relaxed: counters for a hint; no data is read through them.
        let gets = h.gets.0.load(Ordering::Relaxed);
        let puts = h.puts.0.load(Ordering::Relaxed);
        usize::try_from(puts.saturating_sub(gets)).unwrap_or(usize::MAX)
    }

    /// `true` when the queue holds no item (Python's `empty()`).
    ///
    /// ```
    /// assert!(multiproc::Queue::<u8>::new().unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.inner.ring.used_bytes() == 0
    }

    /// `true` when a small item would not fit now (Python's `full()`).
    ///
    /// ```
    /// assert!(!multiproc::Queue::<u8>::new().unwrap().is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        // The ring keeps one frame word free as a terminator; the smallest
        // item is a one-byte frame. (A hint, like Python's: the padding
        // frame at the wrap point can make a fitting item wait.)
        let needed = ring::frame_size(1) + ring::frame_size(0);
        self.inner.ring.used_bytes() + needed > self.inner.ring.capacity()
    }

    /// This process is done with the queue (Python's `close()`: "no more
    /// data will be put on this queue by the current process"): later
    /// `put`s and `get`s through this handle and its clones fail at once
    /// with [`ErrorKind::InvalidState`], as Python raises on a closed
    /// queue. Handles of other processes (and handles this process opened
    /// separately from the same queue) are unaffected, as are the items
    /// already in the queue.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// let clone = q.clone();
    /// q.close();
    /// assert!(q.put(&1).is_err());
    /// assert!(clone.get().is_err()); // at once, not after a wait
    /// ```
    pub fn close(&self) {
        let inner = &self.inner;
        *inner.producer.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *inner.consumer.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // SYNC: Relaxed: see `with_producer`.
        inner.closed.store(true, Ordering::Relaxed);
    }
}

/// A [`Queue`] that also counts unfinished tasks: every `put` adds one,
/// every [`task_done`](JoinableQueue::task_done) removes one, and
/// [`join`](JoinableQueue::join) waits until none is left.
///
/// Python counterpart: `multiprocessing.JoinableQueue()`.
///
/// ```
/// use multiproc::{JoinableQueue, Process};
///
/// fn worker(q: JoinableQueue<u64>) {
///     while let Ok(n) = q.get() {
///         if n == 0 { q.task_done().unwrap(); break; }
///         q.task_done().unwrap();
///     }
/// }
///
/// fn main() {
///     multiproc::init();
///     let q = JoinableQueue::new().unwrap();
///     let p = Process::spawn(worker, q.clone()).unwrap();
///     for n in [3, 2, 1, 0] { q.put(&n).unwrap(); }
///     q.join().unwrap(); // every item was processed
///     p.join().unwrap();
/// }
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("queue", &self.queue)
            .field(
                "unfinished",
                &self.queue.inner.header().unfinished.load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let queue = Queue::deserialize(d)?;
        if !queue.inner.counts_tasks {
            // Its puts would count nothing, and `join` would not wait.
            return Err(serde::de::Error::custom(
                "the handle names a Queue, not a JoinableQueue",
            ));
        }
        Ok(JoinableQueue { queue })
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A joinable queue with a 1 MiB ring.
    ///
    /// # Errors
    /// As [`Queue::new`].
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
    /// q.join().unwrap(); // nothing put: returns at once
    /// ```
    pub fn new() -> Result<Self> {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A joinable queue whose ring holds `bytes` bytes, as
    /// [`Queue::with_capacity`].
    ///
    /// # Errors
    /// As [`Queue::new`].
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u64>::with_capacity(4096).unwrap();
    /// q.put(&1).unwrap();
    /// ```
    pub fn with_capacity(bytes: usize) -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue {
                inner: Arc::new(Inner::create(bytes, true)?),
                _items: PhantomData,
            },
        })
    }

    /// Puts `item` and counts one more unfinished task.
    ///
    /// # Errors
    /// As [`Queue::put`].
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::new().unwrap();
    /// q.put(&1u8).unwrap();
    /// ```
    pub fn put(&self, item: &T) -> Result<()> {
        self.queue
            .put_until(item, None, &putting("JoinableQueue::put"))
    }

    /// As [`Queue::put_timeout`], counting one more unfinished task if the
    /// item goes in (Python's `put(item, timeout=…)`).
    ///
    /// # Errors
    /// As [`Queue::put_timeout`].
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::new().unwrap();
    /// q.put_timeout(&1u8, std::time::Duration::from_millis(10)).unwrap();
    /// ```
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<()> {
        self.queue.put_until(
            item,
            deadline_after(timeout),
            &putting("JoinableQueue::put_timeout"),
        )
    }

    /// As [`Queue::try_put`], counting one more unfinished task if the item
    /// goes in (Python's `put_nowait`).
    ///
    /// # Errors
    /// As [`Queue::try_put`].
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::new().unwrap();
    /// assert!(q.try_put(&1u8).unwrap());
    /// ```
    pub fn try_put(&self, item: &T) -> Result<bool> {
        self.queue
            .try_put_as(item, &putting("JoinableQueue::try_put"))
    }

    /// As [`Queue::put_many`], counting one more unfinished task per item
    /// that goes in.
    ///
    /// Python counterpart: a loop of `q.put(item)` on a `JoinableQueue`.
    ///
    /// # Errors
    /// As [`Queue::put_many`].
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
    /// q.put_many(&[1, 2]).unwrap();
    /// for _ in 0..2 { q.get().unwrap(); q.task_done().unwrap(); }
    /// q.join().unwrap();
    /// ```
    pub fn put_many<I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.queue
            .put_many_as(items, &putting("JoinableQueue::put_many"))
    }

    /// Marks one item taken with `get` as processed.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if called more times than items were put
    /// (Python's `ValueError`).
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::new().unwrap();
    /// q.put(&1u8).unwrap();
    /// q.get().unwrap();
    /// q.task_done().unwrap();
    /// assert!(q.task_done().is_err());
    /// ```
    pub fn task_done(&self) -> Result<()> {
        let h = self.queue.inner.header();
        // SYNC: Relaxed snapshot; the CAS below carries the AcqRel.
        let mut n = h.unfinished.load(Ordering::Relaxed);
        loop {
            if n == 0 {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    "task_done() called more times than there were items",
                ));
            }
            // SYNC: AcqRel as in `Inner::uncount_task`.
            match h
                .unfinished
                .compare_exchange_weak(n, n - 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        if n == 1 {
            sys::futex_wake_all(&h.unfinished);
        }
        Ok(())
    }

    /// Waits until every item put has been marked done.
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`] if tasks are unfinished and a process sharing
    /// the queue died abruptly (it may have taken a task with it).
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<u8>::new().unwrap();
    /// q.join().unwrap();
    /// ```
    pub fn join(&self) -> Result<()> {
        self.join_until(None)
    }

    /// As [`join`](JoinableQueue::join), waiting at most `timeout`.
    ///
    /// Python has no timeout on `JoinableQueue.join()`; this is the
    /// `_timeout` form every other wait here has.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] if tasks are still unfinished at the
    /// deadline, or as [`join`](JoinableQueue::join).
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::new().unwrap();
    /// q.put(&1u8).unwrap();
    /// let e = q.join_timeout(std::time::Duration::from_millis(5)).unwrap_err();
    /// assert!(e.is_timeout());
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_until(deadline_after(timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> Result<()> {
        let h = self.queue.inner.header();
        let mut wait = Wait::new(deadline);
        loop {
            // SYNC: Acquire pairs with the AcqRel decrements in task_done.
            let n = h.unfinished.load(Ordering::Acquire);
            if n == 0 {
                return Ok(());
            }
            wait.check(|| match h.participants.dead() {
                None => Ok(()),
                Some(pid) => Err(Error::new(
                    ErrorKind::PeerDied,
                    format!(
                        "JoinableQueue::join: {n} tasks are unfinished and process {pid} \
                         sharing the queue died abruptly (it may have taken one with it)"
                    ),
                )
                .with_pid(pid)),
            })?;
            let Some(slice) = wait.slice() else {
                return Err(Error::timeout(&format!(
                    "JoinableQueue::join_timeout: {n} tasks were still unfinished"
                )));
            };
            sys::futex_wait(&h.unfinished, n, slice);
        }
    }
}
