//! Python's `Executor.map(fn, *iterables, timeout=None, chunksize=1,
//! buffersize=None)` (3.14): [`Pool::with_timeout`],
//! [`Pool::with_buffersize`] and their view [`MapOptions`], the same
//! kind of per-call view as [`WithChunksize`].

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{IMap, Pool, WithChunksize};
use crate::error::{Error, ErrorKind, Result};

impl Pool {
    /// The map calls with a deadline, counted from the call (Python's
    /// `executor.map(f, it, timeout=d)`): see [`MapOptions`].
    ///
    /// ```
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let e = pool.with_timeout(std::time::Duration::from_millis(100)).map(nap, [0, 60_000]).unwrap_err();
    ///     assert!(e.is_timeout());
    /// }
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> MapOptions<'_> {
        MapOptions::new(self).with_timeout(timeout)
    }

    /// The map calls with a bounded look-ahead of `buffersize` tasks
    /// (Python 3.14's `executor.map(f, it, buffersize=n)`), so that an
    /// endless input works: see [`MapOptions`].
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let first: Vec<u64> = pool.with_buffersize(4).imap(|x: u64| x * 2, 0..).unwrap()
    ///         .take(3).collect::<Result<_, _>>().unwrap();
    ///     assert_eq!(first, [0, 2, 4]);
    /// }
    /// ```
    pub fn with_buffersize(&self, buffersize: usize) -> MapOptions<'_> {
        MapOptions::new(self).with_buffersize(buffersize)
    }
}

impl<'p> WithChunksize<'p> {
    /// These calls with a timeout too: see [`Pool::with_timeout`].
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let d = std::time::Duration::from_secs(60);
    ///     assert_eq!(pool.with_chunksize(2).with_timeout(d).map(|x: u8| x, [1, 2, 3]).unwrap(), [1, 2, 3]);
    /// }
    /// ```
    pub fn with_timeout(self, timeout: Duration) -> MapOptions<'p> {
        MapOptions::new(self.pool)
            .with_chunksize(self.chunksize)
            .with_timeout(timeout)
    }

    /// These calls with a bounded look-ahead too: see
    /// [`Pool::with_buffersize`].
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     assert_eq!(pool.with_chunksize(2).with_buffersize(1).map(|x: u8| x, [1, 2, 3]).unwrap(), [1, 2, 3]);
    /// }
    /// ```
    pub fn with_buffersize(self, buffersize: usize) -> MapOptions<'p> {
        MapOptions::new(self.pool)
            .with_chunksize(self.chunksize)
            .with_buffersize(buffersize)
    }
}

/// The map calls of Python's `Executor.map(fn, *iterables, timeout=None,
/// chunksize=1, buffersize=None)`, made by [`Pool::with_timeout`],
/// [`Pool::with_buffersize`] (or [`WithChunksize`]'s same-named calls);
/// options chain, and the view is `Copy`.
///
/// | Python | `multiproc` |
/// |---|---|
/// | `for r in ex.map(f, it, timeout=5)` | `for r in pool.with_timeout(5s).imap(f, it)?` |
/// | `list(ex.map(f, it, timeout=5))` | `pool.with_timeout(5s).map(f, it)?` |
/// | `ex.map(f, endless, buffersize=8)` | `pool.with_buffersize(8).imap(f, endless)?` |
/// | `ex.map(f, it, chunksize=4, buffersize=8, timeout=5)` | `pool.with_chunksize(4).with_buffersize(8).with_timeout(5s).imap(f, it)?` |
///
/// * **timeout**, as in Python: measured from the call, not per item. A
///   result not there at the deadline is an error that
///   [`is_timeout`](Error::is_timeout) ([`ErrorKind::Timeout`]; Python
///   raises `TimeoutError` from `__next__`), which ends the iteration and
///   cancels the tasks not yet sent (running ones finish, their results
///   dropped: Python's `cancel()` cannot stop them either). Results that
///   were ready before the deadline are still handed out after it.
/// * **buffersize**: at most this many tasks (of `chunksize` items) are
///   taken from the input and sent ahead of the consumer, and at most
///   this many tasks' results wait to be taken; the input is pulled
///   lazily as results are consumed, so an endless iterator works. Without
///   it, [`map`](MapOptions::map) collects the input first (as
///   [`Pool::map`] and Python do) and [`imap`](MapOptions::imap) keeps
///   [`Pool::imap`]'s own bound (a few tasks per worker). Python's `map`
///   without `buffersize` submits everything at once.
/// * **chunksize**: as [`Pool::with_chunksize`]; 1 by default for `imap`
///   (Python's `Executor.map` default), the pool's rule for `map`.
///
/// A buffersize or chunksize of 0 fails the call with
/// [`ErrorKind::InvalidState`] (Python's `ValueError`).
///
/// ```
/// use std::time::Duration;
///
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(1)?;
///     let mut it = pool.with_timeout(Duration::from_millis(500)).imap(nap, [0, 60_000, 0])?;
///     assert_eq!(it.next().unwrap()?, 0);
///     assert!(it.next().unwrap().unwrap_err().is_timeout());
///     assert!(it.next().is_none());
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MapOptions<'p> {
    pool: &'p Pool,
    chunksize: Option<usize>,
    timeout: Option<Duration>,
    buffersize: Option<usize>,
}

impl<'p> MapOptions<'p> {
    fn new(pool: &'p Pool) -> Self {
        MapOptions {
            pool,
            chunksize: None,
            timeout: None,
            buffersize: None,
        }
    }

    /// Sets the deadline, counted from the call that uses these options.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let o = pool.with_buffersize(2).with_timeout(std::time::Duration::from_secs(60));
    ///     assert_eq!(o.map(|x: u8| x, [1]).unwrap(), [1]);
    /// }
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the look-ahead, in tasks.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let o = pool.with_timeout(std::time::Duration::from_secs(60)).with_buffersize(1);
    ///     assert_eq!(o.map(|x: u8| x, [1, 2]).unwrap(), [1, 2]);
    /// }
    /// ```
    pub fn with_buffersize(mut self, buffersize: usize) -> Self {
        self.buffersize = Some(buffersize);
        self
    }

    /// Sets the items per task.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let o = pool.with_buffersize(2).with_chunksize(3);
    ///     assert_eq!(o.map(|x: u8| x, [1, 2, 3, 4]).unwrap(), [1, 2, 3, 4]);
    /// }
    /// ```
    pub fn with_chunksize(mut self, chunksize: usize) -> Self {
        self.chunksize = Some(chunksize);
        self
    }

    fn check(&self) -> Result<()> {
        if self.chunksize == Some(0) || self.buffersize == Some(0) {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "Pool::with_buffersize/with_chunksize: the size must be at least 1",
            ));
        }
        Ok(())
    }

    /// Python's `Executor.map`: the results in order, as an iterator
    /// ([`IMap`]; [`IMap::into_stream`] for async code), with these
    /// options.
    ///
    /// # Errors
    /// As [`Pool::imap`]; [`ErrorKind::InvalidState`] for a size of 0.
    /// The iterator yields an [`ErrorKind::Timeout`] error past the
    /// deadline, then ends.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let v: Vec<u32> = pool.with_buffersize(2).imap(|x: u32| x + 1, 0..5).unwrap()
    ///         .collect::<Result<_, _>>().unwrap();
    ///     assert_eq!(v, [1, 2, 3, 4, 5]);
    /// }
    /// ```
    pub fn imap<F, A, R, I>(self, f: F, items: I) -> Result<IMap<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.stream(f, items, true)
    }

    /// As [`imap`](MapOptions::imap), in completion order (Python has no
    /// unordered `Executor.map`; `as_completed` over submitted futures).
    ///
    /// # Errors
    /// As [`imap`](MapOptions::imap).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let mut v: Vec<u32> = pool.with_buffersize(2).imap_unordered(|x: u32| x, 0..5).unwrap()
    ///         .collect::<Result<_, _>>().unwrap();
    ///     v.sort();
    ///     assert_eq!(v, [0, 1, 2, 3, 4]);
    /// }
    /// ```
    pub fn imap_unordered<F, A, R, I>(self, f: F, items: I) -> Result<IMap<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.stream(f, items, false)
    }

    /// `list(executor.map(f, items, timeout=…, buffersize=…))`: every
    /// result in order, or the first error.
    ///
    /// # Errors
    /// As [`Pool::map`]; [`ErrorKind::Timeout`] if a result was not there
    /// at the deadline (the tasks not yet sent are cancelled);
    /// [`ErrorKind::InvalidState`] for a size of 0.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let d = std::time::Duration::from_secs(60);
    ///     assert_eq!(pool.with_timeout(d).map(|x: u32| x * x, 0..4).unwrap(), [0, 1, 4, 9]);
    /// }
    /// ```
    pub fn map<F, A, R, I>(self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.check()?;
        if self.buffersize.is_some() {
            // The input is collected first, as `Pool::map` does (its
            // iterator need not be `Send`); the look-ahead then bounds
            // the tasks in flight. An endless input needs `imap`.
            let items: Vec<A> = items.into_iter().collect();
            return self.stream(f, items, true)?.collect();
        }
        let deadline = self.timeout.and_then(crate::wait::deadline_after);
        let items: Vec<A> = items.into_iter().collect();
        let n = items.len();
        let chunk = self.chunksize.or(self.pool.chunksize).unwrap_or_else(|| {
            let per = self.pool.processes * 4;
            n.div_ceil(per).max(1)
        });
        // Everything sent at once (Python submits every item), the
        // results taken in order under the deadline.
        let limits = (usize::MAX, usize::MAX);
        let mut it = self
            .pool
            .start_stream_limited(f, items, true, chunk, limits)?;
        it.deadline = deadline;
        let mut out = Vec::with_capacity(n);
        for r in it {
            out.push(r?);
        }
        Ok(out)
    }

    fn stream<F, A, R, I>(self, f: F, items: I, ordered: bool) -> Result<IMap<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.check()?;
        let deadline: Option<Instant> = self.timeout.and_then(crate::wait::deadline_after);
        let chunk = self.chunksize.or(self.pool.chunksize).unwrap_or(1);
        let limits = match self.buffersize {
            Some(n) => (n, n.saturating_mul(chunk)),
            None => {
                let bound = super::stream_bound(self.pool.processes);
                (bound, bound.saturating_mul(chunk).saturating_mul(4))
            }
        };
        let mut it = self
            .pool
            .start_stream_limited(f, items, ordered, chunk, limits)?;
        it.deadline = deadline;
        Ok(it)
    }
}
