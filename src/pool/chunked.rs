//! A call's own chunk size (Python's `chunksize=` argument):
//! [`Pool::with_chunksize`] and its view [`WithChunksize`], and the bodies
//! of `map` and `map_async` that take the size (`Pool::map` passes `None`:
//! the pool's size, or Python's rule).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::core::Core;
use super::{AsyncResult, IMap, MapItem, Pool};
use crate::error::{Error, ErrorKind, Result};

impl Pool {
    /// [`map`](Pool::map) with the call's chunk size.
    pub(super) fn map_chunked<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let (f, items) = match self.map_raw(f, items.into_iter(), chunksize) {
            Ok(done) => return done,
            Err(back) => back,
        };
        if super::raw::raw_size::<A>().is_none() {
            return self.map_encoded_owned(f, items, chunksize);
        }
        let (sink, n) = self.start_map(f, items, chunksize)?;
        let s2 = Arc::clone(&sink);
        let (core, _) = self.shared.wait_until(&move |_: &Core| s2.ready(), None);
        drop(core);
        sink.take(Some(n))
    }

    /// [`map_async`](Pool::map_async) with the call's chunk size.
    pub(super) fn map_async_chunked<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items = self.collect_input(items);
        let (source, sink, n) = self.map_job(f, items, chunksize);
        self.start_async(source, sink.clone())?;
        Ok(AsyncResult::of_map(Arc::clone(&self.shared), sink, n))
    }

    /// The same calls with their own chunk size (Python's `chunksize=`
    /// argument): `pool.with_chunksize(8).map(f, items)` is Python's
    /// `pool.map(f, items, chunksize=8)`. Also for `starmap`, `imap`,
    /// `imap_unordered`, `map_async`, `starmap_async` and their `_with`
    /// forms; see [`WithChunksize`] for why it is a view and not an
    /// argument. It overrides
    /// [`PoolBuilder::chunksize`](crate::PoolBuilder::chunksize) for those
    /// calls only. A chunk size of 0 fails each call with
    /// [`ErrorKind::InvalidState`], as Python's `ValueError` and the
    /// builder's.
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     // pool.map(square, range(100), chunksize=8)
    ///     let v = pool.with_chunksize(8).map(square, 0..100)?;
    ///     assert_eq!(v[99], 99 * 99);
    ///     assert!(pool.with_chunksize(0).map(square, 0..100).is_err());
    ///     Ok(())
    /// }
    /// ```
    pub fn with_chunksize(&self, chunksize: usize) -> WithChunksize<'_> {
        WithChunksize::new(self, chunksize)
    }
}

/// The pool's serde calls with their own chunk size — Python's
/// `chunksize=` argument — made by [`Pool::with_chunksize`].
///
/// | Python | `multiproc` |
/// |---|---|
/// | `pool.map(f, it, chunksize=8)` | `pool.with_chunksize(8).map(f, it)` |
/// | `pool.starmap(f, it, chunksize=8)` | `pool.with_chunksize(8).starmap(f, it)` |
/// | `pool.imap(f, it, chunksize=8)`, `imap_unordered` | `pool.with_chunksize(8).imap(f, it)`, `imap_unordered` |
/// | `pool.map_async(f, it, chunksize=8)`, `starmap_async` | `pool.with_chunksize(8).map_async(f, it)`, `starmap_async` |
/// | `pool.map_async(f, it, 8, callback=cb, error_callback=ecb)` | `pool.with_chunksize(8).map_async_with(f, it, cb, ecb)` |
///
/// **Why a view.** Rust has no keyword arguments. A `chunksize` argument
/// on every call would make the common call `pool.map(f, it)` longer; a
/// `_chunked` twin of each of the eight calls would double them, and not
/// combine with the `_with` (callback) forms. The view keeps the common
/// call as it is, reads like Python's keyword, and combines with
/// everything. It borrows the pool and is `Copy`: keep one to make several
/// calls. Items per task are at most the chunk size (a task is also cut at
/// about 64 KiB of encoded items); it overrides [`PoolBuilder::chunksize`]
/// for these calls only. The zero-copy maps keep the pool's chunking.
///
/// A chunk size of 0 fails each call with [`ErrorKind::InvalidState`]
/// (Python's `ValueError`, and what [`PoolBuilder::build`] says of a zero
/// [`PoolBuilder::chunksize`]).
///
/// [`PoolBuilder::chunksize`]: crate::PoolBuilder::chunksize
/// [`PoolBuilder::build`]: crate::PoolBuilder::build
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(1)?;
///     let by_ten = pool.with_chunksize(10);
///     assert_eq!(by_ten.map(square, 0..100)?.len(), 100);
///     let tasks: u64 = pool.insights().iter().map(|w| w.tasks).sum();
///     assert_eq!(tasks, 10);                 // 100 items, 10 a task
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct WithChunksize<'p> {
    pub(super) pool: &'p Pool,
    pub(super) chunksize: usize,
}

impl<'p> WithChunksize<'p> {
    pub(super) fn new(pool: &'p Pool, chunksize: usize) -> Self {
        WithChunksize { pool, chunksize }
    }

    /// The chunk size, if it is one.
    fn size(&self) -> Result<Option<usize>> {
        if self.chunksize == 0 {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "Pool::with_chunksize: chunksize must be at least 1",
            ));
        }
        Ok(Some(self.chunksize))
    }

    /// [`Pool::map`], this many items a task (Python's
    /// `pool.map(f, it, chunksize=n)`).
    ///
    /// # Errors
    /// As [`Pool::map`]; [`ErrorKind::InvalidState`] for a chunk size of 0.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     assert_eq!(pool.with_chunksize(2).map(|x: u8| x + 1, [1, 2, 3]).unwrap(), [2, 3, 4]);
    /// }
    /// ```
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator,
        I::Item: MapItem<A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let size = self.size()?;
        I::Item::map_items(
            self.pool,
            f,
            items.into_iter(),
            size,
            super::map_item::token(),
        )
    }

    /// [`Pool::starmap`], this many items a task (Python's
    /// `pool.starmap(f, it, chunksize=n)`).
    ///
    /// # Errors
    /// As [`map`](WithChunksize::map).
    ///
    /// ```
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     assert_eq!(pool.with_chunksize(1).starmap(add, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
    /// }
    /// ```
    pub fn starmap<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator,
        I::Item: MapItem<A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map(f, items)
    }

    /// [`Pool::imap`], this many items a task (Python's
    /// `pool.imap(f, it, chunksize=n)`; the default is 1, as in Python).
    ///
    /// # Errors
    /// As [`Pool::imap`]; [`ErrorKind::InvalidState`] for a chunk size of 0.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let first: Vec<u64> = pool
    ///         .with_chunksize(64)
    ///         .imap(|x: u64| x * 2, 0..)
    ///         .unwrap()
    ///         .take(3)
    ///         .collect::<Result<_, _>>()
    ///         .unwrap();
    ///     assert_eq!(first, [0, 2, 4]);
    /// }
    /// ```
    pub fn imap<F, A, R, I>(&self, f: F, items: I) -> Result<IMap<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.pool.start_stream(f, items, true, self.size()?)
    }

    /// [`Pool::imap_unordered`], this many items a task.
    ///
    /// # Errors
    /// As [`imap`](WithChunksize::imap).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let mut got: Vec<u32> = pool
    ///         .with_chunksize(2)
    ///         .imap_unordered(|x: u32| x + 1, vec![1, 2, 3])
    ///         .unwrap()
    ///         .collect::<Result<_, _>>()
    ///         .unwrap();
    ///     got.sort();
    ///     assert_eq!(got, [2, 3, 4]);
    /// }
    /// ```
    pub fn imap_unordered<F, A, R, I>(&self, f: F, items: I) -> Result<IMap<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.pool.start_stream(f, items, false, self.size()?)
    }

    /// [`Pool::map_async`], this many items a task.
    ///
    /// # Errors
    /// As [`Pool::map_async`]; [`ErrorKind::InvalidState`] for a chunk
    /// size of 0.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let r = pool.with_chunksize(5).map_async(|x: u32| x * 10, 0..20).unwrap();
    ///     assert_eq!(r.get().unwrap()[19], 190);
    /// }
    /// ```
    pub fn map_async<F, A, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.pool.map_async_chunked(f, items, self.size()?)
    }

    /// [`Pool::starmap_async`], this many items a task.
    ///
    /// # Errors
    /// As [`map_async`](WithChunksize::map_async).
    ///
    /// ```
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let r = pool.with_chunksize(1).starmap_async(add, [(1, 2), (3, 4)]).unwrap();
    ///     assert_eq!(r.get().unwrap(), [3, 7]);
    /// }
    /// ```
    pub fn starmap_async<F, A, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.pool.map_async_chunked(f, items, self.size()?)
    }

    /// [`Pool::map_async_with`] (Python's `callback`, `error_callback`),
    /// this many items a task.
    ///
    /// # Errors
    /// As [`Pool::map_async_with`]; [`ErrorKind::InvalidState`] for a
    /// chunk size of 0 (then no callback runs).
    ///
    /// ```
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let (tx, rx) = std::sync::mpsc::channel();
    ///     let r = pool.with_chunksize(4).map_async_with(
    ///         |x: u32| x + 1,
    ///         0..10,
    ///         move |v: &[u32]| tx.send(v.iter().sum::<u32>()).unwrap(),
    ///         |e: &multiproc::Error| eprintln!("{e}"),
    ///     )?;
    ///     assert_eq!(r.get()?.len(), 10);
    ///     assert_eq!(rx.recv().unwrap(), 55);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_async_with<F, A, R, I>(
        &self,
        f: F,
        items: I,
        callback: impl FnOnce(&[R]) + Send + 'static,
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let size = self.size()?;
        self.pool
            .map_async_hooked(f, items, size, callback, error_callback)
    }

    /// [`Pool::starmap_async_with`], this many items a task.
    ///
    /// # Errors
    /// As [`map_async_with`](WithChunksize::map_async_with).
    ///
    /// ```
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let r = pool.with_chunksize(1).starmap_async_with(add, [(1, 2)], |_| {}, |_| {})?;
    ///     assert_eq!(r.get()?, [3]);
    ///     Ok(())
    /// }
    /// ```
    pub fn starmap_async_with<F, A, R, I>(
        &self,
        f: F,
        items: I,
        callback: impl FnOnce(&[R]) + Send + 'static,
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let size = self.size()?;
        self.pool
            .map_async_hooked(f, items, size, callback, error_callback)
    }
}
