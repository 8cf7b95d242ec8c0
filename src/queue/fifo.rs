//! `Queue` and `SimpleQueue`: put, get, batches, close.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Call, Error, ErrorKind, Result};
use crate::pool::raw;
use crate::ring::{self};
use crate::segment::SegmentHandle;
use crate::wait::deadline_after;

use super::*;

/// A first-in first-out queue shared by any number of processes.
///
/// Python counterpart: `multiprocessing.Queue()`: `put`, `get`,
/// `put_nowait` ([`try_put`](Queue::try_put)), `get_nowait`
/// ([`try_get`](Queue::try_get)), `put(timeout=)`
/// ([`put_timeout`](Queue::put_timeout)), `get(timeout=)`
/// ([`get_timeout`](Queue::get_timeout)), `qsize` ([`len`](Queue::len)),
/// `empty`, `full`, `close`. Items are any `'static` serde type; nothing
/// is pickled. A primitive number (`u64`, `f64`, …) crosses as its raw
/// bytes, anything else in postcard.
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
    pub(super) inner: Arc<Inner>,
    pub(super) _items: PhantomData<fn(T) -> T>,
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
        let inner = Inner::open(&handle).map_err(crate::error::de_custom)?;
        Ok(Queue {
            inner: Arc::new(inner),
            _items: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Queue<T> {
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
    /// two, at least 64). An item over half of it streams through in pieces
    /// (see [`put`](Queue::put)).
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
            inner: Arc::new(Inner::create(bytes, false, 0)?),
            _items: PhantomData,
        })
    }

    /// A queue of at most `maxsize` items (Python's `Queue(maxsize)`):
    /// a put waits while it holds that many. 0 means no bound but the
    /// ring's bytes, as Python's `maxsize <= 0`. The ring is
    /// [`new`](Queue::new)'s 1 MiB; items must also fit in it.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] for a `maxsize` over `u32::MAX`;
    /// otherwise as [`new`](Queue::new).
    ///
    /// ```
    /// let q = multiproc::Queue::with_maxsize(2).unwrap();
    /// assert!(q.try_put(&1u8).unwrap());
    /// assert!(q.try_put(&2u8).unwrap());
    /// assert!(!q.try_put(&3u8).unwrap()); // full: 2 items
    /// assert_eq!(q.get().unwrap(), 1);
    /// assert!(q.try_put(&3u8).unwrap());
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Ok(Queue {
            inner: Arc::new(Inner::create(
                DEFAULT_CAPACITY,
                false,
                maxsize_u32(maxsize)?,
            )?),
            _items: PhantomData,
        })
    }

    /// Shuts the queue down for every process that shares it (Python
    /// 3.13's `shutdown(immediate)`): puts fail with
    /// [`ErrorKind::ShutDown`] from now on, and calls blocked in a put or
    /// a get, anywhere, return. With `immediate = false` gets still take
    /// the items in the queue, then fail with `ShutDown`; with `true` those
    /// items are dropped (a [`JoinableQueue`](crate::JoinableQueue) counts
    /// each as done, so its `join` returns) and gets fail at once.
    /// Shutting down twice is fine; `immediate` only ever strengthens it.
    ///
    /// # Errors
    /// As [`get`](Queue::get), for the items it drops.
    ///
    /// ```
    /// let q = multiproc::Queue::new().unwrap();
    /// q.put(&1u8).unwrap();
    /// q.shutdown(false).unwrap();
    /// assert_eq!(q.put(&2).unwrap_err().kind(), multiproc::ErrorKind::ShutDown);
    /// assert_eq!(q.get().unwrap(), 1);
    /// assert_eq!(q.get().unwrap_err().kind(), multiproc::ErrorKind::ShutDown);
    /// ```
    pub fn shutdown(&self, immediate: bool) -> Result<()> {
        let inner = &self.inner;
        let h = inner.header();
        let how = if immediate { SHUT_DOWN_NOW } else { SHUT_DOWN };
        // SYNC: Release pairs with the Acquire load in `shut_down`.
        h.shutdown.fetch_max(how, Ordering::Release);
        // Closing the ring's sending side (for every process: the ring's
        // state word) ends every blocked get once the ring is empty and
        // every blocked or later push, and wakes them all.
        inner.ring.producer()?.close();
        sys::futex_wake_all(&h.held);
        if immediate {
            let call = getting("Queue::shutdown");
            let mut dropped = 0u32;
            let drained = inner.with_consumer(&call, |c| loop {
                let left = |kind: u8, bytes: &[u8], _| {
                    Ok(ring::Took::All(super::item::left::<T>(kind, bytes)))
                };
                match c.take_items(usize::MAX, Some(Instant::now()), left) {
                    Ok(n) => dropped = dropped.saturating_add(u32::try_from(n).unwrap_or(u32::MAX)),
                    Err(e) if e.is_timeout() || e.is_disconnected() => return Ok(()),
                    Err(e) => return Err(e),
                }
            });
            inner.release_items(dropped);
            // SYNC: Relaxed, as in `get`.
            h.gets.0.fetch_add(u64::from(dropped), Ordering::Relaxed);
            for _ in 0..dropped {
                if inner.counts_tasks {
                    inner.uncount_task();
                }
            }
            drained?;
        }
        Ok(())
    }

    /// `true` once [`shutdown`](Queue::shutdown) was called on the queue, in
    /// any process (Python's `is_shutdown`).
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new().unwrap();
    /// assert!(!q.is_shutdown());
    /// q.shutdown(true).unwrap();
    /// assert!(q.is_shutdown());
    /// ```
    pub fn is_shutdown(&self) -> bool {
        self.inner.shut_down() != 0
    }

    /// Puts `item` at the back, waiting for room (and, with a
    /// [`maxsize`](Queue::with_maxsize), for fewer than `maxsize` items).
    /// An item of any size goes in: one over the ring's largest frame
    /// (half the ring) streams through it in pieces while a consumer
    /// reads, so such a put returns once all but the last ring-full was
    /// taken (Python's `put` hands a large item to a feeder thread
    /// instead). A [`put_timeout`](Queue::put_timeout) or
    /// [`try_put`](Queue::try_put) that runs out of time midway takes back
    /// what it streamed: consumers never see part of an item.
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] after [`shutdown`](Queue::shutdown);
    /// [`ErrorKind::Codec`] if the item does not serialise;
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

    pub(super) fn put_until(
        &self,
        item: &T,
        deadline: Option<Instant>,
        call: &Call<'_>,
    ) -> Result<()> {
        self.put_as(item, deadline, call, false)
    }

    /// [`put_until`](Self::put_until); `now`: see
    /// [`ring::with_handle_as`].
    fn put_as(
        &self,
        item: &T,
        deadline: Option<Instant>,
        call: &Call<'_>,
        now: bool,
    ) -> Result<()> {
        let inner = &self.inner;
        inner.check_not_shut_down(call)?;
        inner.reserve_item(deadline, call)?;
        inner.count_tasks(1);
        inner
            .with_producer_as(call, now, |p| {
                super::item::push(p, KIND_ITEM, item, deadline)
            })
            .map_err(|e| {
                if inner.counts_tasks {
                    inner.uncount_task();
                }
                inner.release_items(1);
                inner.after_shutdown(e, call)
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

    pub(super) fn try_put_as(&self, item: &T, call: &Call<'_>) -> Result<bool> {
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
        self.get_as(deadline, call, false)
    }

    /// [`get_until`](Self::get_until); `now`: see
    /// [`ring::with_handle_as`].
    fn get_as(&self, deadline: Option<Instant>, call: &Call<'_>, now: bool) -> Result<T> {
        let inner = &self.inner;
        if inner.shut_down() == SHUT_DOWN_NOW {
            return Err(shut_down_error(call));
        }
        let mut item = None;
        inner
            .with_consumer_as(call, now, |c| {
                c.take_items(1, deadline, |kind, bytes, _| {
                    super::item::take_one::<T>(kind, bytes, &mut item)
                })
            })
            .map_err(|e| inner.after_shutdown(e, call))?;
        let item =
            item.ok_or_else(|| Error::new(ErrorKind::Protocol, "a get took no item and no error"))?;
        inner.release_items(1);
        // SYNC: Relaxed, as for `puts`.
        inner.header().gets.0.fetch_add(1, Ordering::Relaxed);
        Ok(item)
    }

    /// [`get`](Queue::get) as a `Future`, for async code (tokio, smol, any
    /// executor): it resolves to the next item.
    ///
    /// Python has no async `multiprocessing`; there one writes
    /// `await loop.run_in_executor(None, q.get)`, a thread per waiting
    /// call. Here all the futures waiting on one queue in this process
    /// share one crate thread, parked on the queue's ring as a blocked
    /// `get` is, that wakes them when an item arrives.
    ///
    /// Cancellation: an item is taken from the queue only inside the poll
    /// that returns it. A future dropped before then took nothing (the
    /// item stays for the next `get`) and withdraws its waker.
    ///
    /// # Errors
    /// As [`get`](Queue::get): [`ErrorKind::PeerDied`](crate::ErrorKind::PeerDied)
    /// (within about 50 ms) if a process sharing the queue died abruptly,
    /// [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown) after
    /// [`shutdown`](Queue::shutdown).
    ///
    /// ```
    /// use multiproc::{Process, Queue};
    ///
    /// fn produce(q: Queue<u32>) { q.put(&7).unwrap(); }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let q = Queue::new().unwrap();
    ///     let p = Process::spawn(produce, q.clone()).unwrap();
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     assert_eq!(rt.block_on(q.get_async()).unwrap(), 7);
    ///     p.join().unwrap();
    /// }
    /// ```
    pub fn get_async(&self) -> impl std::future::Future<Output = Result<T>> + '_ {
        let call = getting("Queue::get_async");
        let inner = &self.inner;
        let slice = crate::async_wait::CHECK_SLICE;
        crate::async_wait::wait_for(
            inner.ring.async_key(None),
            || super::get_source(inner),
            move |checked| {
                let deadline = if checked {
                    deadline_after(slice)
                } else {
                    Some(Instant::now())
                };
                crate::async_wait::not_now(self.get_as(deadline, &call, true))
            },
        )
    }

    /// [`put`](Queue::put) as a `Future`, for async code: it resolves once
    /// the item is in the queue (waiting, as `put` does, for a place under
    /// [`with_maxsize`](Queue::with_maxsize) and for room in the ring).
    ///
    /// Python: `await loop.run_in_executor(None, q.put, item)`.
    ///
    /// Cancellation: the item is written only inside the poll that returns
    /// `Ready(Ok(()))`; a future dropped before then wrote nothing (no
    /// place stays reserved) and withdraws its waker.
    ///
    /// # Errors
    /// As [`put`](Queue::put), and
    /// [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState) for an
    /// item larger than half the queue's capacity: such an item streams
    /// through the ring in pieces while the consumer takes them, which no
    /// single poll can do; put it with `put` (in `spawn_blocking`).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let q = multiproc::Queue::new().unwrap();
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     rt.block_on(q.put_async(&"hello".to_string())).unwrap();
    ///     assert_eq!(q.get().unwrap(), "hello");
    /// }
    /// ```
    pub fn put_async<'a>(
        &'a self,
        item: &'a T,
    ) -> impl std::future::Future<Output = Result<()>> + 'a {
        let call = putting("Queue::put_async");
        let inner = &self.inner;
        let len = super::item::len(item);
        let slice = crate::async_wait::CHECK_SLICE;
        let key = inner.ring.async_key(Some(*len.as_ref().unwrap_or(&0)));
        let source = move || -> Arc<dyn crate::async_wait::Source> {
            let len = *len.as_ref().unwrap_or(&0);
            Arc::new(super::PutSource::new(inner, len))
        };
        crate::async_wait::wait_for(key, source, move |checked| {
            let len = super::item::len(item)?;
            if len > inner.ring.max_payload() {
                return Err(crate::Error::new(
                    crate::ErrorKind::InvalidState,
                    format!(
                        "Queue::put_async: an item of {len} bytes is over the largest \
                         that can be put without blocking ({}); use put",
                        inner.ring.max_payload()
                    ),
                ));
            }
            let deadline = if checked {
                deadline_after(slice)
            } else {
                Some(Instant::now())
            };
            crate::async_wait::not_now(self.put_as(item, deadline, &call, true))
        })
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
    /// item. Primitive numbers (`u64`, `f64`, …) go thousands to a ring
    /// frame, a copy of their bytes (≈ 1 ns an item between two
    /// processes). Waits for room like `put` when the queue is full. Each
    /// item is still its own entry: any consumer may `get` any of them.
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
    pub(super) fn put_many_as<I>(&self, items: I, call: &Call<'_>) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        let inner = &self.inner;
        inner.check_not_shut_down(call)?;
        if inner.maxsize != 0 {
            // Each item waits for its own place: one by one.
            for item in items {
                self.put_until(item.borrow(), None, call)?;
            }
            return Ok(());
        }
        if let Some(size) = raw::raw_size::<T>() {
            // (A ring too small for a cursor and one item keeps a frame
            // an item.)
            if BATCH_HEADER + size <= inner.ring.max_payload() {
                return self.put_many_batched(items.into_iter(), size, call);
            }
        }
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
                let len = super::item::len(item.borrow())?;
                Ok((item, len))
            };
            let mut next = match items.next() {
                Some(item) => sized(item)?,
                None => return Ok(()),
            };
            loop {
                // An item over one frame goes alone, in pieces.
                while next.1 > max {
                    count(true);
                    super::item::push(p, KIND_ITEM, next.0.borrow(), None)
                        .inspect_err(|_| count(false))?;
                    put += 1;
                    next = match items.next() {
                        Some(item) => sized(item)?,
                        None => return Ok(()),
                    };
                }
                // As many as fit, under one hold of the ring.
                let written = p.batch(None, |b| -> Result<Option<(I::Item, usize)>> {
                    let mut cur = next;
                    loop {
                        let (item, len) = cur;
                        if len > max {
                            return Ok(Some((item, len)));
                        }
                        count(true);
                        let wrote = b.try_write(KIND_ITEM, len, |buf| {
                            super::item::encode_into(item.borrow(), buf)
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
                        if len <= max {
                            p.wait_for_room(len, None)?;
                        }
                        next = (item, len);
                    }
                }
            }
        });
        // SYNC: Relaxed, as in `put`.
        inner.header().puts.0.fetch_add(put, Ordering::Relaxed);
        result.map_err(|e| inner.after_shutdown(e, call))
    }

    /// [`put_many_as`](Self::put_many_as) of primitive numbers, with no
    /// `maxsize`: up to [`BATCH_ITEMS`] items to a frame
    /// ([`KIND_BATCH`]), their bytes copied in whole, where a frame each
    /// moved 16 bytes an item (frame word and padding). The producer's
    /// speed is the cache lines it fills for the consumer: 1e5 `u64`s from
    /// a child took 7.4–22 ns an item as frames of one, that many bytes a
    /// line (docs/BENCHMARKS.md, "Numbers put in batches").
    fn put_many_batched<I>(&self, items: I, size: usize, call: &Call<'_>) -> Result<()>
    where
        I: Iterator,
        I::Item: Borrow<T>,
    {
        let inner = &self.inner;
        // Every number type is `Copy`; `copy_of` is how code generic over
        // `T` says so (`raw_size` said `T` is one).
        let mut items = items.map(|item| raw::copy_of(item.borrow()).expect("T crosses raw"));
        let mut block: Vec<T> = Vec::new();
        let mut put = 0u64;
        let uncount = |n: usize| {
            if inner.counts_tasks {
                for _ in 0..n {
                    inner.uncount_task();
                }
            }
        };
        let result = inner.with_producer(call, |p| {
            let per_frame =
                (p.max_payload().saturating_sub(BATCH_HEADER) / size).clamp(1, BATCH_ITEMS);
            loop {
                // As many frames as fit, under one hold of the ring.
                let done = p.batch(None, |b| -> Result<bool> {
                    loop {
                        if block.is_empty() {
                            block.extend(items.by_ref().take(per_frame));
                            if block.is_empty() {
                                return Ok(true);
                            }
                        }
                        let bytes = raw::raw_bytes(&block).expect("T crosses raw");
                        let len = BATCH_HEADER + bytes.len();
                        let n = block.len();
                        inner.count_tasks(u32::try_from(n).unwrap_or(u32::MAX));
                        let wrote = b.try_write(KIND_BATCH, len, |buf| {
                            buf[..BATCH_HEADER].fill(0);
                            buf[BATCH_HEADER..len].copy_from_slice(bytes);
                            Ok(len)
                        });
                        match wrote {
                            Ok(true) => {
                                put += n as u64;
                                block.clear();
                            }
                            Ok(false) => {
                                uncount(n);
                                return Ok(false);
                            }
                            Err(e) => {
                                uncount(n);
                                return Err(e);
                            }
                        }
                    }
                })??;
                if done {
                    return Ok(());
                }
                p.wait_for_room(BATCH_HEADER + block.len() * size, None)?;
            }
        });
        // SYNC: Relaxed, as in `put`.
        inner.header().puts.0.fetch_add(put, Ordering::Relaxed);
        result.map_err(|e| inner.after_shutdown(e, call))
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
        if inner.shut_down() == SHUT_DOWN_NOW {
            return Err(shut_down_error(call));
        }
        let mut out = Vec::new();
        let taken = inner
            .with_consumer(call, |c| {
                c.take_items(max, deadline, |kind, bytes, budget| {
                    super::item::take_many(kind, bytes, budget, &mut out)
                })
            })
            .map_err(|e| inner.after_shutdown(e, call))?;
        inner.release_items(u32::try_from(taken).unwrap_or(u32::MAX));
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

    /// `true` when a put would wait now (Python's `full()`): the queue
    /// holds its [`maxsize`](Queue::with_maxsize) items, or its ring has no
    /// room for even a small item.
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::with_maxsize(1).unwrap();
    /// assert!(!q.is_full());
    /// q.put(&1).unwrap();
    /// assert!(q.is_full());
    /// ```
    pub fn is_full(&self) -> bool {
        let inner = &self.inner;
        // SYNC: Relaxed: a hint, like Python's `full()`.
        if inner.maxsize != 0 && inner.header().held.load(Ordering::Relaxed) >= inner.maxsize {
            return true;
        }
        // The ring keeps one frame word free as a terminator; the smallest
        // item is a one-byte frame. (A hint, like Python's: the padding
        // frame at the wrap point can make a fitting item wait.)
        let needed = ring::frame_size(1) + ring::frame_size(0);
        inner.ring.used_bytes() + needed > inner.ring.capacity()
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
