//! `Pool`: Python's `multiprocessing.Pool` over re-executed worker
//! processes and shared-memory rings.
//!
//! This file owns `Pool` itself: its constructors, the serde calls
//! (`map`, `imap`, `apply`, their `_async` forms), `close`/`join`/
//! `terminate`, and the report types (`WorkerInsights`, `Progress`).
//!
//! Files: `builder.rs` (`PoolBuilder`), `results.rs` (`AsyncResult`,
//! `IMap`), `chunked.rs` (`WithChunksize`: a call's own chunk size),
//! `callbacks.rs` (the `*_async_with` calls and the callback thread),
//! `zero_copy/` (the zero-copy maps, their arena and chunking, and
//! `ShmVec`), `core.rs` (scheduler, failures), `jobs.rs` (sources and sinks
//! of tasks), `wire.rs` (frames and trampolines), `worker.rs` (the worker
//! loop), `doorbell.rs` (one futex word for N result rings), `raw.rs` (raw
//! arrays of numbers).

mod builder;
pub(crate) mod bulk;
mod callbacks;
mod chunked;
pub use self::chunked::WithChunksize;
mod core;
pub(crate) mod doorbell;
mod driver;
mod futures;
mod group;
pub use self::futures::{as_completed, wait_tasks, AsCompleted, ReturnWhen, Task};
mod awaiting;
pub use self::awaiting::{AsCompletedStream, IMapStream};
mod executor_map;
mod handle;
mod health;
mod jobs;
mod map_item;
pub use self::map_item::MapItem;
pub(crate) mod raw;
mod results;
mod wakers;
pub use self::executor_map::MapOptions;
mod wire;
mod worker;
mod zero_copy;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use self::builder::{pinning_supported, PoolBuilder};
use self::callbacks::Callbacks;
use self::core::{Core, Job, State};
use self::driver::Shared;
use self::jobs::{Collect, IterSource, OneCall, OneItem, RawVecSource, Sink, Source, Stream};
pub use self::results::{AsyncResult, IMap};
use self::wire::ChunkDesc;
pub use self::zero_copy::ShmVec;
use crate::error::{Error, ErrorKind, Result};
use crate::segment::Segment;
use crate::task::{TaskKey, TaskRef};

/// Default bytes per ring direction and worker (the largest item or
/// result is half of it).
const DEFAULT_RING_BYTES: usize = 1 << 20;

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Workers are this program re-executed (see [`init`](crate::init)); they
/// start once and run many tasks. A task is a `fn` item or a closure that
/// captures nothing, applied to items that travel with serde — or, for the
/// zero-copy maps, to whole chunks of a [`ShmVec`] in shared memory.
///
/// | Python | `multiproc` |
/// |---|---|
/// | `Pool(4)`, `Pool()` | [`Pool::new(4)`](Pool::new), [`Pool::with_cpus`] |
/// | `Pool(initializer=f, initargs=a, maxtasksperchild=n)` | [`Pool::builder()`](Pool::builder) |
/// | `pool.map(f, items)` | [`pool.map(f, items)`](Pool::map) → `Vec` in order |
/// | `pool.starmap(f, pairs)` | [`pool.starmap(f, pairs)`](Pool::starmap) (`f` takes the tuple) |
/// | `pool.imap(f, it)`, `imap_unordered` | [`imap`](Pool::imap), [`imap_unordered`](Pool::imap_unordered) (iterators) |
/// | `pool.map(f, it, chunksize=8)` (also `starmap`, `imap`, `*_async`) | [`pool.with_chunksize(8).map(f, it)`](Pool::with_chunksize) |
/// | `pool.apply(f, args)` | [`pool.apply(f, args)`](Pool::apply) |
/// | `map_async`, `starmap_async`, `apply_async` → `AsyncResult` | [`map_async`](Pool::map_async), [`starmap_async`](Pool::starmap_async), [`apply_async`](Pool::apply_async) → [`AsyncResult`] |
/// | `apply_async(f, args, callback=cb, error_callback=ecb)`, same for `map_async`, `starmap_async` | [`apply_async_with(f, args, cb, ecb)`](Pool::apply_async_with), [`map_async_with`](Pool::map_async_with), [`starmap_async_with`](Pool::starmap_async_with) |
/// | `close()`, `join()`, `terminate()`, `with Pool() as p:` | [`close`](Pool::close), [`join`](Pool::join), [`terminate`](Pool::terminate), drop |
/// | `ProcessPoolExecutor.submit(f, *args)` → `Future`, `shutdown(wait, cancel_futures)` | [`submit(f, args)`](Pool::submit) → [`Task`] (cancellable while it runs), [`shutdown`](Pool::shutdown) |
///
/// Failures never hang: a task that panics fails its call with the panic
/// message and the item's index ([`Error::item_index`]) and the pool stays
/// usable; a worker that dies (killed, `abort()`, out of memory) fails every
/// call that had work on it within about 10 ms, with its pid and signal or
/// exit code, and is replaced by a fresh worker.
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(4)?;                 // Pool(processes=4)
///     let squares: Vec<u64> = pool.map(square, 0..10)?;    // pool.map(square, range(10))
///     assert_eq!(squares, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
///     Ok(())
/// }
/// ```
///
/// # What a task can be
///
/// A task crosses to the worker by name, as Python pickles a function by
/// its qualified name; so it must be a `fn` item or a closure that
/// captures nothing. Data goes in as the argument (a tuple for several).
/// A closure that captures, or a `fn` pointer, is a compile-time error
/// (at `cargo build`; `cargo check` cannot see it) that says what to pass
/// instead:
///
/// ```compile_fail,E0080
/// fn main() {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2).unwrap();
///     let k = 3u64;
///     let _ = pool.map(move |x: u64| x * k, 0..10u64); // captures `k`
/// }
/// ```
///
/// ```compile_fail,E0080
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2).unwrap();
///     let f: fn(u64) -> u64 = square; // a pointer: an address, not a name
///     let _ = pool.map(f, 0..10u64);
/// }
/// ```
///
/// What to write instead:
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2).unwrap();
///     let k = 3u64;
///     let scaled = pool.map(|(x, k): (u64, u64)| x * k, (0..4u64).map(|x| (x, k))).unwrap();
///     assert_eq!(scaled, [0, 3, 6, 9]);
///     assert_eq!(pool.map(square, 0..4u64).unwrap(), [0, 1, 4, 9]);
/// }
/// ```
pub struct Pool {
    shared: Arc<Shared>,
    timing: bool,
    processes: usize,
    chunksize: Option<usize>,
    pinned: bool,
    key: TaskKey,
    arenas: Mutex<Vec<Arc<Segment>>>,
    /// Claim counters of self-scheduled zero-copy maps.
    claims: zero_copy::Claims,
    /// The input buffer of the last raw `map`, for the next one.
    spare: raw::Spare,
    /// The callback thread, once an `*_async_with` call started it.
    /// (Read without a lock by every `submit`; never stopped before the
    /// pool goes. `callbacks_start` makes one caller start it.)
    callbacks: std::sync::OnceLock<Arc<Callbacks>>,
    callbacks_start: Mutex<()>,
}

/// What one worker has done so far (mpire's "insights").
///
/// ```
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2)?;
///     pool.map(|x: u32| x + 1, 0..100)?;
///     let total: u64 = pool.insights().iter().map(|w| w.items).sum();
///     assert_eq!(total, 100);
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInsights {
    /// Position of the worker in the pool (a replacement keeps it).
    pub index: usize,
    /// OS process id of the current worker in that position.
    pub pid: u32,
    /// Tasks (chunks) it completed.
    pub tasks: u64,
    /// Items (or elements, for the zero-copy maps) it completed.
    pub items: u64,
    /// Time spent running tasks (`None` unless
    /// [`PoolBuilder::insights`] turned timing on).
    pub busy: Option<Duration>,
    /// Time alive and not running tasks (as `busy`).
    pub idle: Option<Duration>,
}

/// [`Pool::start_async`] under the lock `core` the caller holds.
fn core_submit_async(
    shared: &Arc<Shared>,
    mut core: std::sync::MutexGuard<'_, Core>,
    source: Box<dyn Source>,
    sink: Arc<dyn Sink>,
) -> Result<()> {
    core.submit(Job::new(source, sink, usize::MAX, usize::MAX))?;
    // A pump that cannot start leaves the work to whoever waits for it
    // next (as `kick`).
    let _ = shared.kick_locked(core);
    Ok(())
}

/// How far a long call has come, for [`Pool::map_with_progress`].
///
/// ```
/// let p = multiproc::Progress { done: 5, total: 10, elapsed: std::time::Duration::ZERO };
/// assert_eq!(p.fraction(), 0.5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Items finished.
    pub done: u64,
    /// Items in the call.
    pub total: u64,
    /// Time since the call started.
    pub elapsed: Duration,
}

impl Progress {
    /// `done / total` (1.0 for an empty call).
    ///
    /// ```
    /// let p = multiproc::Progress { done: 0, total: 0, elapsed: std::time::Duration::ZERO };
    /// assert_eq!(p.fraction(), 1.0);
    /// ```
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.done as f64 / self.total as f64
        }
    }
}

/// Tasks in flight per job for the streaming calls (bounded work).
fn stream_bound(processes: usize) -> usize {
    2 * processes + 2
}

impl Pool {
    /// A pool of `processes` workers (Python's `Pool(processes)`).
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     assert_eq!(pool.map(|x: i32| -x, vec![1, 2, 3]).unwrap(), [-1, -2, -3]);
    /// }
    /// ```
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// A pool with one worker per usable CPU (Python's `Pool()`).
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::with_cpus().unwrap();
    ///     assert_eq!(pool.processes(), multiproc::cpu_count());
    /// }
    /// ```
    pub fn with_cpus() -> Result<Pool> {
        Pool::builder().build()
    }

    /// Options: initializer, `max_tasks_per_child`, pinning, chunk size…
    ///
    /// ```
    /// let b = multiproc::Pool::builder().processes(2).chunksize(100);
    /// # let _ = b;
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Number of worker processes.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     assert_eq!(multiproc::Pool::new(3).unwrap().processes(), 3);
    /// }
    /// ```
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// `true` if the workers are pinned to CPUs ([`PoolBuilder::pin_cores`]
    /// was asked for and the OS supports it).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::builder().processes(1).pin_cores(true).build().unwrap();
    ///     assert_eq!(pool.pinned(), multiproc::pinning_supported());
    /// }
    /// ```
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// The pids of the current workers (replacements included).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     assert_eq!(pool.pids().len(), 2);
    /// }
    /// ```
    pub fn pids(&self) -> Vec<u32> {
        let core = self.shared.lock();
        core.workers.iter().flatten().map(|w| w.pid).collect()
    }

    /// Per-worker counters: tasks, items, busy and idle time.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     assert!(pool.insights().iter().all(|w| w.tasks == 0));
    /// }
    /// ```
    pub fn insights(&self) -> Vec<WorkerInsights> {
        let core = self.shared.lock();
        core.workers
            .iter()
            .flatten()
            .map(|w| {
                let alive = w.stats.started.elapsed();
                WorkerInsights {
                    index: w.index,
                    pid: w.pid,
                    tasks: w.stats.tasks,
                    items: w.stats.items,
                    busy: self.timing.then_some(w.stats.busy),
                    idle: self.timing.then(|| alive.saturating_sub(w.stats.busy)),
                }
            })
            .collect()
    }

    /// How many workers have been replaced so far (died, timed out, or
    /// reached `max_tasks_per_child`).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     assert_eq!(multiproc::Pool::new(1).unwrap().restarts(), 0);
    /// }
    /// ```
    pub fn restarts(&self) -> u64 {
        self.shared.lock().restarts
    }

    /// Items per task for a `map` of `n` items: the call's own chunk size
    /// ([`with_chunksize`](Pool::with_chunksize)), else the pool's, else
    /// Python's rule.
    fn chunk_for(&self, n: usize, call: Option<usize>) -> usize {
        call.or(self.chunksize).unwrap_or_else(|| {
            // Python: divmod(len, processes * 4), rounded up.
            let per = self.processes * 4;
            n.div_ceil(per).max(1)
        })
    }

    fn submit_job(
        &self,
        source: Box<dyn Source>,
        sink: Arc<dyn Sink>,
        bound: usize,
        backlog: usize,
    ) -> Result<u64> {
        let mut core = self.shared.lock();
        let id = core.submit(Job::new(source, sink, bound, backlog))?;
        drop(core);
        // A blocking call drives at once; an async one sends it itself and
        // wakes the pump only if that is needed (`kick`).
        self.shared.notify_waiters();
        Ok(id)
    }

    /// Starts (or wakes) the pump for async work. A pump that cannot
    /// start leaves the work to whoever waits for it next: `get()` and the
    /// other blocking waits drive; a future that must wait reports it.
    fn ensure_pump(&self) {
        let _ = self.shared.ensure_pump();
    }

    /// After an async submission: sends it now, and wakes the pump only
    /// if something is left for it (`Shared::kick`). A pump that cannot
    /// start leaves the work to whoever waits for it next, as above.
    fn kick(&self) {
        let _ = self.shared.kick();
    }

    /// The items of a `map`, collected (Python's `map` makes a list of
    /// them too); numbers go into the buffer the last such call left.
    fn collect_input<I, A>(&self, items: I) -> Vec<A>
    where
        I: IntoIterator<Item = A>,
        A: Send + 'static,
    {
        raw::collect_reusing(items.into_iter(), &self.spare)
    }

    /// The job of a `map` (or `apply`) of `items`, not submitted yet.
    fn map_job<F, A, R>(
        &self,
        f: F,
        items: Vec<A>,
        chunksize: Option<usize>,
    ) -> (Box<dyn Source>, Arc<Collect<R>>, u64)
    where
        F: Fn(A) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = &f;
        let n = items.len();
        let task = TaskRef::of_entry(ChunkDesc::<F, A, R>::ENTRY, self.key);
        let chunk = self.chunk_for(n, chunksize);
        let spare = Arc::clone(&self.spare);
        let source: Box<dyn Source> = match RawVecSource::new(items, chunk, task, spare) {
            Ok(raw) => Box::new(raw),
            Err(items) => Box::new(IterSource::new(items.into_iter(), chunk, task)),
        };
        // A single result (apply) is kept as a value (`for_items`).
        let sink = Collect::<R>::for_items(n);
        (source, sink, n as u64)
    }

    fn start_map<F, A, R>(
        &self,
        f: F,
        items: Vec<A>,
        chunksize: Option<usize>,
    ) -> Result<(Arc<Collect<R>>, u64)>
    where
        F: Fn(A) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let (source, sink, n) = self.map_job(f, items, chunksize);
        self.submit_job(source, sink.clone(), usize::MAX, usize::MAX)?;
        Ok((sink, n))
    }

    /// The job of an `apply` of `f(args)`, not submitted yet: one item,
    /// one value back (`OneItem`, `OneCall`).
    fn apply_job<F, A, R>(&self, f: F, args: A) -> (Box<dyn Source>, Arc<OneCall<R>>)
    where
        F: Fn(A) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = &f;
        let task = TaskRef::of_entry(ChunkDesc::<F, A, R>::ENTRY, self.key);
        (Box::new(OneItem::new(args, task)), OneCall::new())
    }

    /// Submits the job of an async call (`sink` gets its results) and sends
    /// it under one hold of the lock ([`Shared::kick_locked`]), not two
    /// (each a hand-over from a spinning pump, which yields its core to
    /// let the caller in: a batch of `apply_async` calls took twice as
    /// long with two).
    fn start_async(&self, source: Box<dyn Source>, sink: Arc<dyn Sink>) -> Result<()> {
        core_submit_async(&self.shared, self.shared.lock(), source, sink)
    }

    /// Applies `f` to every item in worker processes and returns the
    /// results in order (Python's `pool.map(f, iterable)`). The items may
    /// be `A`s, which the map consumes, or `&A`s (`pool.map(f, &items)`),
    /// which it only reads, as Python's `map` leaves its list: see
    /// [`MapItem`]. The items are collected first, as Python does, and
    /// sent in chunks
    /// ([`PoolBuilder::chunksize`]). When items and results are both
    /// primitive numbers (`u8`…`u128`, `i8`…`i128`, `usize`, `isize`,
    /// `f32`, `f64`) and there are at least 32 Ki items, they are written
    /// into shared memory that the workers map in place, and nothing but
    /// chunk descriptors crosses the rings: the same results and errors,
    /// at the cost of a copy in and a copy out. An input iterator that
    /// panics panics the caller, as Python's `map` raises from its
    /// `list(iterable)`, and so does an item's `Serialize` that panics;
    /// the first items may already have run by then (they are handed out
    /// while the rest are written).
    ///
    /// # Errors
    /// * [`ErrorKind::Panicked`]: `f` panicked on an item — the message is
    ///   in [`Error::panic_info`], the item in [`Error::item_index`]. The
    ///   pool stays usable.
    /// * [`ErrorKind::ProcessDied`]: a worker died while running part of
    ///   the map ([`Error::pid`], [`Error::exit_status`]); it is replaced.
    ///   [`Error::item_index`] is the item it was running (the worker
    ///   notes each item it starts in memory the pool reads after its
    ///   death; where the note is missing or not believable, the first
    ///   item of its chunk).
    /// * [`ErrorKind::Timeout`]: a task ran past
    ///   [`PoolBuilder::task_timeout`].
    /// * [`ErrorKind::Codec`]: an item or result could not be encoded or
    ///   decoded (there is no size limit: a large one streams).
    /// * [`ErrorKind::InvalidState`]: the pool was closed or terminated.
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(4).unwrap();
    ///     assert_eq!(pool.map(square, 0..10).unwrap(), [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    ///     // Borrowed: `xs` stays the caller's.
    ///     let xs = vec![3u64, 4];
    ///     assert_eq!(pool.map(square, &xs).unwrap(), [9, 16]);
    ///     assert_eq!(xs, [3, 4]);
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
        I::Item::map_items(self, f, items.into_iter(), None, map_item::token())
    }

    /// [`map`](Pool::map) that calls `progress` as items finish (at most
    /// every 50 ms, and once at the end), like a `tqdm` over mpire's map.
    ///
    /// # Errors
    /// As [`map`](Pool::map).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let mut last = None;
    ///     let out = pool.map_with_progress(|x: u32| x * 2, 0..1000, |p| last = Some(p)).unwrap();
    ///     assert_eq!(out.len(), 1000);
    ///     assert_eq!(last.unwrap().done, 1000);
    /// }
    /// ```
    pub fn map_with_progress<F, A, R, I>(
        &self,
        f: F,
        items: I,
        mut progress: impl FnMut(Progress),
    ) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let started = Instant::now();
        let (sink, n) = self.start_map(f, self.collect_input(items), None)?;
        let mut last_done = u64::MAX;
        loop {
            let s2 = Arc::clone(&sink);
            let deadline = Instant::now() + Duration::from_millis(50);
            let (core, ready) = self
                .shared
                .wait_until(&move |_: &Core| s2.ready(), Some(deadline));
            drop(core);
            let done = sink.done_items();
            if done != last_done || ready {
                last_done = done;
                progress(Progress {
                    done,
                    total: n,
                    elapsed: started.elapsed(),
                });
            }
            if ready {
                return sink.take(Some(n));
            }
        }
    }

    /// [`map`](Pool::map) with a terminal progress bar (indicatif), like
    /// mpire's `progress_bar=True` or `tqdm(pool.imap(...))`. Needs the
    /// cargo feature `progress-bar`.
    ///
    /// # Errors
    /// As [`map`](Pool::map).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let v = pool.map_with_bar(|x: u64| x + 1, 0..10_000).unwrap();
    ///     assert_eq!(v[9_999], 10_000);
    /// }
    /// ```
    #[cfg(feature = "progress-bar")]
    pub fn map_with_bar<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<A> = raw::collect_items(items.into_iter());
        let bar = indicatif::ProgressBar::new(items.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} items [{elapsed_precise} < {eta_precise}, {per_sec}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let out = self.map_with_progress(f, items, |p| bar.set_position(p.done));
        bar.finish();
        out
    }

    /// Python's `starmap`: `f` takes the tuple of arguments and
    /// destructures it (Rust has no `*args`), so this is [`map`](Pool::map)
    /// over tuples, named for Python users.
    ///
    /// # Errors
    /// As [`map`](Pool::map).
    ///
    /// ```
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     assert_eq!(pool.starmap(add, [(1, 2), (3, 4)]).unwrap(), [3, 7]);
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

    /// Starts a [`map`](Pool::map) and returns at once (Python's
    /// `map_async`); the work goes on in the background.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if the pool is closed or terminated;
    /// the map's own errors come from [`AsyncResult::get`].
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let r = pool.map_async(|x: u8| x as u32 * 10, vec![1, 2, 3]).unwrap();
    ///     assert_eq!(r.get().unwrap(), [10, 20, 30]);
    /// }
    /// ```
    pub fn map_async<F, A, R, I>(&self, f: F, items: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async_chunked(f, items, None)
    }

    /// Python's `starmap_async`: [`map_async`](Pool::map_async) over
    /// tuples, `f` taking the tuple.
    ///
    /// # Errors
    /// As [`map_async`](Pool::map_async).
    ///
    /// ```
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let r = pool.starmap_async(add, [(1, 2), (3, 4)]).unwrap();
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
        self.map_async_chunked(f, items, None)
    }

    /// Runs `f(args)` in a worker and returns its value (Python's
    /// `pool.apply(f, args)`).
    ///
    /// # Errors
    /// As [`map`](Pool::map), for the one item.
    ///
    /// ```
    /// fn add((a, b): (u32, u32)) -> u32 { a + b }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     assert_eq!(pool.apply(add, (2, 3)).unwrap(), 5);
    /// }
    /// ```
    pub fn apply<F, A, R>(&self, f: F, args: A) -> Result<R>
    where
        F: Fn(A) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let (source, sink) = self.apply_job(f, args);
        let job = Job::new(source, sink.clone(), usize::MAX, usize::MAX);
        let core = self.shared.submit_and_wait(job, &|_: &Core| sink.ready())?;
        drop(core);
        sink.take()
    }

    /// Starts `f(args)` in a worker and returns at once (Python's
    /// `apply_async`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if the pool is closed or terminated.
    ///
    /// ```
    /// fn slow_double(x: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(20)); 2 * x }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let a = pool.apply_async(slow_double, 1).unwrap();
    ///     let b = pool.apply_async(slow_double, 2).unwrap();
    ///     assert_eq!(a.get().unwrap() + b.get().unwrap(), 6);
    /// }
    /// ```
    pub fn apply_async<F, A, R>(&self, f: F, args: A) -> Result<AsyncResult<R>>
    where
        F: Fn(A) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = &f;
        let task = TaskRef::of_entry(ChunkDesc::<F, A, R>::ENTRY, self.key);
        let sink = Collect::for_items(1);
        // In its function's group, as a `submit` (docs/ARCHITECTURE.md,
        // "Submitted tasks travel in groups"), else a job of its own.
        if let Err(core) = self.try_grouped(task, &args, sink.clone())? {
            let source = Box::new(OneItem::new(args, task));
            core_submit_async(&self.shared, core, source, sink.clone())?;
        }
        Ok(AsyncResult::of_apply(Arc::clone(&self.shared), sink))
    }

    /// Puts a task of function `task` (its item `args`, its outcome to
    /// `sink`) in that function's grouped job, and sends it or leaves it
    /// to gather; returns its job and ticket. `Err(core)`, with the lock
    /// still held, where it goes as a job of its own: the pool rules
    /// groups out, it would start at once alone (`Core::lone_now`), or
    /// its item is large or does not encode (its own job then says why).
    pub(super) fn try_grouped<A: Serialize + 'static>(
        &self,
        task: TaskRef,
        args: &A,
        sink: Arc<dyn Sink>,
    ) -> Result<std::result::Result<(u64, u64), std::sync::MutexGuard<'_, Core>>> {
        let mut core = self.shared.lock();
        if !core.groups_allowed() || core.lone_now(task) {
            return Ok(Err(core));
        }
        // The item's `Serialize` is user code: a panic there leaves the
        // item to a job of its own, which reports it.
        let Ok(Some(bytes)) = crate::panic::catch_panic(|| group::encode_item(args)) else {
            return Ok(Err(core));
        };
        let (id, ticket, now) = core.submit_grouped(task, bytes, sink)?;
        if now {
            // A pump that cannot start leaves the work to whoever waits
            // for it next (as `kick`).
            let _ = self.shared.kick_locked(core);
        } else {
            drop(core);
            let _ = self.shared.pump_soon();
        }
        Ok(Ok((id, ticket)))
    }

    /// `imap` (`ordered`) or `imap_unordered`, with the call's chunk size.
    fn start_stream<F, A, R, I>(
        &self,
        f: F,
        items: I,
        ordered: bool,
        chunksize: Option<usize>,
    ) -> Result<IMap<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let chunk = chunksize.or(self.chunksize).unwrap_or(1);
        let bound = stream_bound(self.processes);
        let backlog = bound.saturating_mul(chunk).saturating_mul(4);
        self.start_stream_limited(f, items, ordered, chunk, (bound, backlog))
    }

    /// `imap`/`imap_unordered` of `chunk` items a task, with at most
    /// `bound` tasks in flight and `backlog` results waiting.
    fn start_stream_limited<F, A, R, I>(
        &self,
        f: F,
        items: I,
        ordered: bool,
        chunk: usize,
        (bound, backlog): (usize, usize),
    ) -> Result<IMap<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = &f;
        let task = TaskRef::of_entry(ChunkDesc::<F, A, R>::ENTRY, self.key);
        let source = IterSource::new(items.into_iter(), chunk, task);
        let sink = Stream::<R>::new(ordered);
        let id = self.submit_job(Box::new(source), sink.clone(), bound, backlog)?;
        self.ensure_pump();
        Ok(IMap::new(Arc::clone(&self.shared), sink, id))
    }

    /// Streams `f` over `items`, yielding results in order as they are
    /// ready (Python's `imap`). Items are pulled lazily with a bounded
    /// number in flight, so an endless iterator works; dropping the
    /// iterator cancels the rest.
    ///
    /// After an error the iterator yields it once and ends.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if the pool is closed or terminated;
    /// per-item errors are yielded by the iterator.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let firsts: Vec<u64> = pool
    ///         .imap(|x: u64| x * x, 0..)            // an endless iterator
    ///         .unwrap()
    ///         .take(5)
    ///         .collect::<Result<_, _>>()
    ///         .unwrap();
    ///     assert_eq!(firsts, [0, 1, 4, 9, 16]);
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
        self.start_stream(f, items, true, None)
    }

    /// As [`imap`](Pool::imap), yielding results as they finish, in any
    /// order (Python's `imap_unordered`).
    ///
    /// # Errors
    /// As [`imap`](Pool::imap).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let mut got: Vec<u32> = pool
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
        self.start_stream(f, items, false, None)
    }

    /// Stops accepting work; the workers exit once the queued work is done
    /// and [`join`](Pool::join) is called (Python's `close()`).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     pool.close();
    ///     assert!(pool.map(|x: u8| x, [1]).is_err());
    ///     pool.join().unwrap();
    /// }
    /// ```
    pub fn close(&self) {
        let mut core = self.shared.lock();
        if core.state == State::Running {
            core.state = State::Closed;
        }
        drop(core);
        self.shared.notify();
    }

    /// Waits for the queued work to finish, its callbacks
    /// ([`apply_async_with`](Pool::apply_async_with)) to return and the
    /// workers to exit (Python's `join()`, which also needs `close()` or
    /// `terminate()` first).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if the pool is still open; the first
    /// error of a worker that did not exit cleanly.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let r = pool.map_async(|x: u32| x * 3, 0..10).unwrap();
    ///     pool.close();
    ///     pool.join().unwrap();            // the map finished first
    ///     assert_eq!(r.get().unwrap()[9], 27);
    /// }
    /// ```
    pub fn join(&self) -> Result<()> {
        if self.shared.lock().state == State::Running {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "join() needs close() or terminate() first",
            ));
        }
        let (mut core, _) = self.shared.wait_until(&|c: &Core| !c.has_jobs(), None);
        let workers = core.shut_down();
        drop(core);
        self.shared.notify();
        self.shared.reap_all();
        self.stop_pump();
        // Every job is done, so every callback is queued (Python's `join`
        // also waits for its result handler).
        self.flush_callbacks();
        core::join_workers(workers)
    }

    /// Kills the workers at once; running and queued work fails with
    /// [`ErrorKind::InvalidState`] (Python's `terminate()`, also what
    /// dropping the pool does, like leaving `with Pool() as p:`). A call
    /// blocked in another thread returns promptly. Returns once every
    /// error callback ([`apply_async_with`](Pool::apply_async_with)) has
    /// run, unless called from a callback.
    ///
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)); }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let r = pool.apply_async(nap, 60_000).unwrap();
    ///     pool.terminate();
    ///     assert!(r.get().is_err());
    /// }
    /// ```
    pub fn terminate(&self) {
        let mut core = self.shared.lock();
        if core.state != State::Terminated {
            core.terminate();
        }
        drop(core);
        self.shared.notify();
        self.shared.doorbell.ring_always();
        self.shared.reap_all();
        self.stop_pump();
        // Every job has failed by now: their error callbacks are queued.
        self.flush_callbacks();
    }

    fn stop_pump(&self) {
        let handle = {
            let mut pump = self.shared.pump.lock().unwrap_or_else(|p| p.into_inner());
            // SYNC: Release, under `pump`'s lock; partner: the Acquire load
            // in `ensure_pump` (a late `true` there only wakes this pump).
            self.shared
                .pump_started
                .store(false, std::sync::atomic::Ordering::Release);
            pump.take()
        };
        if let Some(h) = handle {
            self.shared.notify();
            // Taken out above, so `notify` cannot reach it: unpark it here.
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes)
            .field("pinned", &self.pinned)
            .finish_non_exhaustive()
    }
}

/// See `__fuzz::pool_frames`.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_frames(bytes: &[u8]) -> bool {
    let Some((&kind, rest)) = bytes.split_first() else {
        return false;
    };
    match kind % 5 {
        0 => wire::TaskHeader::read(rest).is_ok(),
        1 => match wire::ZcHeader::read(rest.get(..wire::ZcHeader::LEN).unwrap_or(rest)) {
            Ok(h) => wire::fuzz_elements(h.first, h.count, rest.len()),
            Err(_) => false,
        },
        2 => core::fuzz_result(rest),
        3 => wire::Attach::read(rest).is_ok_and(|(_, h)| h.is_ok()),
        _ => match wire::ClaimHeader::read(rest.get(..wire::ClaimHeader::LEN).unwrap_or(rest)) {
            Ok(h) => wire::fuzz_elements(h.zc.first, h.zc.count, rest.len()),
            Err(_) => false,
        },
    }
}
