//! `JoinableQueue`: a `Queue` that counts unfinished tasks in its shared header.

use std::borrow::Borrow;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::sys;
use crate::wait::{deadline_after, Wait};

use super::*;

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
            return Err(crate::error::de_custom(
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

impl<T: Serialize + DeserializeOwned + 'static> JoinableQueue<T> {
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
                inner: Arc::new(Inner::create(bytes, true, 0)?),
                _items: PhantomData,
            },
        })
    }

    /// A joinable queue of at most `maxsize` items, as
    /// [`Queue::with_maxsize`] (Python's `JoinableQueue(maxsize)`).
    ///
    /// # Errors
    /// As [`Queue::with_maxsize`].
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::with_maxsize(1).unwrap();
    /// assert!(q.try_put(&1u8).unwrap());
    /// assert!(!q.try_put(&2u8).unwrap());
    /// ```
    pub fn with_maxsize(maxsize: usize) -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue {
                inner: Arc::new(Inner::create(
                    DEFAULT_CAPACITY,
                    true,
                    maxsize_u32(maxsize)?,
                )?),
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
