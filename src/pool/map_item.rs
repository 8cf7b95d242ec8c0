//! What [`Pool::map`] and [`Pool::starmap`] take as items: the task's
//! argument itself, or a reference to one, so that
//! `pool.map(f, &items)` maps over a collection the caller keeps (as
//! Python's `pool.map(f, items)` leaves its list alone).

use std::borrow::Borrow;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::core::Core;
use super::driver::Waiter;
use super::jobs::{Collect, EncodedSource, Feed};
use super::wire::ChunkDesc;
use super::{raw, Pool};
use crate::error::{Error, ErrorKind, Result};
use crate::task::TaskRef;

/// An item [`Pool::map`] accepts for a task that takes an `A`: an `A`
/// (the input is consumed, each item dropped in the parent once it is
/// encoded) or an `&A` (the input is borrowed: encoded where it lies,
/// nothing cloned or dropped). Implemented for exactly those two; the
/// trait is sealed.
///
/// Borrowing is the faster way to map over items that own heap memory
/// (`String`s, `Vec`s): freeing a million small strings in the parent
/// costs more than encoding them. Items of primitive number types take
/// the shared-memory path either way.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Reading { name: String, value: f64 }
///
/// fn weigh(r: Reading) -> f64 { r.value * r.name.len() as f64 }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2)?;
///     let items = vec![Reading { name: "ab".into(), value: 1.5 }];
///     // Python: pool.map(weigh, items) — and `items` is still there.
///     assert_eq!(pool.map(weigh, &items)?, [3.0]);
///     assert_eq!(items.len(), 1);
///     // The items given away work too.
///     assert_eq!(pool.map(weigh, items)?, [3.0]);
///     Ok(())
/// }
/// ```
pub trait MapItem<A>: Sized {
    /// Runs the map of `items` (the body of [`Pool::map`]; not for
    /// callers: its last argument cannot be named outside the crate).
    #[doc(hidden)]
    fn map_items<F, R, I>(
        pool: &Pool,
        f: F,
        items: I,
        chunksize: Option<usize>,
        _sealed: sealed::Token,
    ) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: Iterator<Item = Self>,
        R: Serialize + DeserializeOwned + Send + 'static;
}

pub(crate) mod sealed {
    /// A value only this crate can make: [`super::MapItem`]'s method
    /// takes one, so no other crate can call or implement it.
    #[derive(Clone, Copy)]
    pub struct Token(pub(crate) ());
}

impl<A> MapItem<A> for A
where
    A: Serialize + DeserializeOwned + Send + 'static,
{
    fn map_items<F, R, I>(
        pool: &Pool,
        f: F,
        items: I,
        chunksize: Option<usize>,
        _sealed: sealed::Token,
    ) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: Iterator<Item = A>,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        pool.map_chunked(f, items, chunksize)
    }
}

impl<A> MapItem<A> for &A
where
    A: Serialize + DeserializeOwned + Send + 'static,
{
    fn map_items<F, R, I>(
        pool: &Pool,
        f: F,
        items: I,
        chunksize: Option<usize>,
        _sealed: sealed::Token,
    ) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: Iterator<Item = Self>,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        if raw::raw_size::<A>().is_some() {
            // Numbers: copied (a plain copy of each), they take the path
            // of an owned map (shared memory when the results are numbers
            // too). Never the encoded batches: a worker reads a chunk of
            // number items as raw bytes, not as postcard.
            return pool.map_chunked(f, Copies { items }, chunksize);
        }
        pool.map_encoded(f, items, chunksize)
    }
}

/// The values behind references to primitive numbers (`raw_size` said
/// `A` is one), keeping the inner iterator's length hint.
struct Copies<I> {
    items: I,
}

impl<'a, A: 'static, I: Iterator<Item = &'a A>> Iterator for Copies<I> {
    type Item = A;

    fn next(&mut self) -> Option<A> {
        self.items.next().and_then(raw::copy_of)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.items.size_hint()
    }
}

impl Pool {
    /// A `map` over borrowed items: encoded here in batches (see
    /// [`EncodedSource`]) that go out as they are ready.
    pub(super) fn map_encoded<'a, F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: Iterator<Item = &'a A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = &f;
        let task = TaskRef::of_entry(ChunkDesc::<F, A, R>::ENTRY, self.key);
        match items.size_hint() {
            (lo, Some(hi)) if lo == hi => self.run_encoded::<A, R, &A>(task, items, lo, chunksize),
            _ => {
                // The references first (a pointer each): the count is
                // known before anything is sent.
                let refs: Vec<&A> = items.collect();
                let n = refs.len();
                self.run_encoded::<A, R, &A>(task, refs.into_iter(), n, chunksize)
            }
        }
    }

    /// A `map` over items moved in (`items`, collected), of a type that
    /// does not cross raw: encoded as [`map_encoded`](Pool::map_encoded)
    /// encodes borrowed ones, each item dropped as soon as it is encoded.
    pub(super) fn map_encoded_owned<F, A, R>(
        &self,
        f: F,
        items: Vec<A>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = &f;
        debug_assert!(raw::raw_size::<A>().is_none(), "numbers are read raw");
        let task = TaskRef::of_entry(ChunkDesc::<F, A, R>::ENTRY, self.key);
        let n = items.len();
        self.run_encoded::<A, R, A>(task, items.into_iter(), n, chunksize)
    }

    /// Submits an encoded map of the `n` items of `items` and encodes
    /// them, in batches that go out as they are ready. An iterator that
    /// yields other than the `n` items it said fails the map (nothing
    /// is sent past the `n`-th).
    fn run_encoded<A, R, B>(
        &self,
        task: TaskRef,
        mut items: impl Iterator<Item = B>,
        n: usize,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        B: Borrow<A>,
    {
        let chunk = self.chunk_for(n, chunksize);
        let (source, feed) = EncodedSource::new(chunk, task);
        // A batch holds whole chunks where they are smaller than a batch,
        // so that the chunks sent are the ones asked for (a task each, as
        // `max_tasks_per_child` counts them), not cut at batch ends.
        let (per_batch, align) = if chunk < BATCH_ITEMS {
            (BATCH_ITEMS / chunk * chunk, chunk)
        } else {
            (BATCH_ITEMS, 1)
        };
        let sink = Collect::<R>::for_items(n);
        self.submit_job(Box::new(source), sink.clone(), usize::MAX, usize::MAX)?;
        let mut closer = Closer {
            feed: &feed,
            pool: self,
            failure: Some(Error::new(
                ErrorKind::Panicked,
                "encoding the map's input panicked in the parent",
            )),
        };
        // Small batches, each handed to the pool (`nudge`) as soon as it
        // is encoded: the workers run the first while the next is made.
        // (Measured on 2 cores, 1e6 small structs: batches of up to
        // 32 Ki items left the workers idle behind the encoding, 35 ns
        // an item; 2 Ki, 21–22 ns; 256, 23–24 ns.)
        let (mut at, mut item_bytes) = (0, 16);
        let mut failure = None;
        'batches: while at < n {
            if Feed::queued(&feed) >= BATCHES_AHEAD {
                // Far enough ahead: let the workers catch up, so that the
                // batches they are done with come back to be filled again.
                let ahead = |_: &Core| Feed::queued(&feed) < BATCHES_AHEAD || sink.ready();
                drop(self.shared.wait_as(Waiter::Encoder, &ahead, None));
            }
            let cap = n.min(at + per_batch);
            let mut batch = Feed::batch(&feed, at as u64, cap - at, item_bytes);
            let mut i = at;
            while i < cap && !full(batch.bytes(), i - at, align) {
                // An item moved in is dropped here, once encoded.
                let pushed = match items.next() {
                    Some(item) => batch.push(item.borrow()),
                    None => Err(miscounted(n, i)),
                };
                if let Err(e) = pushed {
                    Feed::push(&feed, batch);
                    failure = Some(e);
                    break 'batches;
                }
                i += 1;
            }
            item_bytes = batch.bytes().div_ceil(i - at).max(1);
            // The job ended early (a worker died, the pool was
            // terminated: its error is in the sink): stop encoding.
            if !Feed::push(&feed, batch) || sink.ready() {
                break;
            }
            self.shared.nudge();
            at = i;
        }
        if failure.is_none() && at == n && items.next().is_some() {
            failure = Some(miscounted(n, n + 1));
        }
        closer.failure = failure;
        drop(closer);
        let s2 = std::sync::Arc::clone(&sink);
        let (core, _) = self.shared.wait_until(&move |_: &Core| s2.ready(), None);
        drop(core);
        sink.take(Some(n as u64))
    }
}

/// Whether a batch of `bytes` and `items` items is full: at the end of a
/// chunk (of `align` items) once it holds [`BATCH_BYTES`], anywhere past
/// four times that (a chunk of large items is then cut, as a frame would
/// cut it anyway).
fn full(bytes: usize, items: usize, align: usize) -> bool {
    (bytes >= BATCH_BYTES && items.is_multiple_of(align)) || bytes >= 4 * BATCH_BYTES
}

/// The error of an input iterator whose length was not what its
/// `size_hint` said (`got` items at least).
fn miscounted(said: usize, got: usize) -> Error {
    Error::new(
        ErrorKind::InvalidState,
        format!(
            "the map's input iterator said it had {said} items and yielded {} {got}",
            if got > said { "at least" } else { "only" }
        ),
    )
}

/// An encoded map's batches end at this many items or bytes, whichever
/// comes first.
const BATCH_ITEMS: usize = 2048;
const BATCH_BYTES: usize = 64 * 1024;

/// Most batches an encoded map queues ahead of the chunks sent: past
/// this the encoder waits, driving the pool, and then refills the batches
/// the chunks were taken from instead of allocating new ones. (Unbounded,
/// 1e6 small structs queued about 19 MB of batches per call, fresh heap
/// pages faulted in by the parent each time.)
const BATCHES_AHEAD: usize = 8;

/// Closes a map's feed when encoding stops, however it stops: with
/// `failure` (what ended it early; set for an unwind until the encoding
/// finishes), and lets the pool send what is queued.
struct Closer<'a> {
    feed: &'a std::sync::Mutex<Feed>,
    pool: &'a Pool,
    failure: Option<crate::error::Error>,
}

impl Drop for Closer<'_> {
    fn drop(&mut self) {
        Feed::close(self.feed, self.failure.take());
        self.pool.kick();
    }
}

/// Makes the token [`MapItem::map_items`] needs.
pub(super) fn token() -> sealed::Token {
    sealed::Token(())
}
