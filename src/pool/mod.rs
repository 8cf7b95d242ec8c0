//! `Pool`: Python's `multiprocessing.Pool` over re-executed worker
//! processes and shared-memory rings.
//!
//! Files: `core.rs` (scheduler, failures, driving), `jobs.rs` (sources and
//! sinks of tasks), `wire.rs` (frames and trampolines), `worker.rs` (the
//! worker loop), `doorbell.rs` (one futex word for N result rings),
//! `zero_copy.rs` (`ShmVec`).

mod core;
mod doorbell;
mod jobs;
mod raw;
mod wire;
mod worker;
mod zero_copy;

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use serde::de::DeserializeOwned;
use serde::Serialize;

use self::core::{Config, Core, Job, Shared, State};
use self::doorbell::Doorbell;
use self::jobs::{Collect, IterSource, Next, Sink, Source, Stream, ZcTask};
use self::wire::{ChunkDesc, ZcDesc};
pub use self::zero_copy::ShmVec;
use crate::error::{Error, ErrorKind, Result};
use crate::segment::Segment;
use crate::shared::SharedArray;
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
/// | `pool.apply(f, args)` | [`pool.apply(f, args)`](Pool::apply) |
/// | `map_async`, `apply_async` → `AsyncResult` | [`map_async`](Pool::map_async), [`apply_async`](Pool::apply_async) → [`AsyncResult`] |
/// | `close()`, `join()`, `terminate()`, `with Pool() as p:` | [`close`](Pool::close), [`join`](Pool::join), [`terminate`](Pool::terminate), drop |
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
}

/// Options for a [`Pool`]: Python's `Pool(...)` keyword arguments, plus
/// core pinning, ring size and a per-task timeout.
///
/// ```
/// fn setup(level: u32) { std::env::set_var("LEVEL", level.to_string()); }
/// fn level(_: ()) -> String { std::env::var("LEVEL").unwrap() }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::builder()
///         .processes(2)
///         .initializer(setup, 3)
///         .max_tasks_per_child(100)
///         .build()?;
///     assert_eq!(pool.apply(level, ())?, "3");
///     Ok(())
/// }
/// ```
#[must_use = "a builder does nothing until .build() is called"]
pub struct PoolBuilder {
    processes: Option<usize>,
    init: Option<(TaskRefMaker, Vec<u8>)>,
    max_tasks_per_child: Option<u64>,
    pin_cores: bool,
    chunksize: Option<usize>,
    ring_bytes: usize,
    task_timeout: Option<Duration>,
    insights: bool,
    /// Inherited environment variables whose names start with one of
    /// these are removed from every worker's environment (a cluster rank's
    /// pool strips the MPI launcher's variables).
    strip_env: &'static [&'static str],
}

/// Tags the initializer's descriptor once the pool's key exists.
type TaskRefMaker = fn(TaskKey) -> TaskRef;

impl std::fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("initializer", &self.init.is_some())
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("pin_cores", &self.pin_cores)
            .field("chunksize", &self.chunksize)
            .field("ring_bytes", &self.ring_bytes)
            .field("task_timeout", &self.task_timeout)
            .field("insights", &self.insights)
            .field("strip_env", &self.strip_env)
            .finish()
    }
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            processes: None,
            init: None,
            max_tasks_per_child: None,
            pin_cores: false,
            chunksize: None,
            ring_bytes: DEFAULT_RING_BYTES,
            task_timeout: None,
            insights: false,
            strip_env: &[],
        }
    }
}

impl PoolBuilder {
    /// Number of worker processes (Python's `processes`; default
    /// [`cpu_count()`](crate::cpu_count)).
    ///
    /// ```
    /// let b = multiproc::Pool::builder().processes(3);
    /// # let _ = b;
    /// ```
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `f(args)` once in every worker before its first task, and in
    /// every replacement worker (Python's `initializer` / `initargs`). If
    /// it panics, the pool is broken: every call returns that panic as an
    /// error (Python would restart workers forever).
    ///
    /// ```
    /// fn hello(name: String) { eprintln!("worker {name} ready"); }
    /// let b = multiproc::Pool::builder().initializer(hello, "a".to_string());
    /// # let _ = b;
    /// ```
    pub fn initializer<F, A>(mut self, f: F, args: A) -> Self
    where
        F: Fn(A) + 'static,
        A: Serialize + DeserializeOwned,
    {
        fn make<F: Fn(A) + 'static, A: Serialize + DeserializeOwned>(key: TaskKey) -> TaskRef {
            TaskRef::of(&crate::task::conjure::<F>(), key)
        }
        let _ = &f;
        // Encoding can only fail for types serde cannot represent; then
        // `build` reports it.
        let bytes = postcard::to_stdvec(&args).unwrap_or_default();
        self.init = Some((make::<F, A>, bytes));
        self
    }

    /// A worker exits and is replaced after this many tasks (Python's
    /// `maxtasksperchild`). A task is one chunk of a map, or one `apply`.
    ///
    /// ```
    /// let b = multiproc::Pool::builder().max_tasks_per_child(1000);
    /// # let _ = b;
    /// ```
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n.max(1));
        self
    }

    /// Pins worker `i` to the `i`-th CPU this process may run on, in the
    /// order the OS lists them (`core_affinity::get_core_ids`), wrapping
    /// around. Where the OS cannot pin (macOS), workers run unpinned and
    /// [`Pool::pinned`] says so; building does not fail.
    ///
    /// ```
    /// let b = multiproc::Pool::builder().pin_cores(true);
    /// # let _ = b;
    /// ```
    pub fn pin_cores(mut self, pin: bool) -> Self {
        self.pin_cores = pin;
        self
    }

    /// Items per task for [`map`](Pool::map)-like calls and `imap` (Python's
    /// `chunksize`). Default: Python's rule for `map` (the items split into
    /// about four tasks per worker), 1 for `imap`; a task is also cut at
    /// about 64 KiB of encoded items. For the zero-copy maps it fixes the
    /// chunk size, whose default is guided: the elements left over twice
    /// the workers, at least 4 Ki, so the last chunks are small.
    ///
    /// ```
    /// let b = multiproc::Pool::builder().chunksize(64);
    /// # let _ = b;
    /// ```
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = Some(n.max(1));
        self
    }

    /// Bytes of each worker's task ring and result ring (default 1 MiB,
    /// rounded up to a power of two). One encoded item or result may be at
    /// most half of it.
    ///
    /// ```
    /// let b = multiproc::Pool::builder().ring_bytes(16 << 20);
    /// # let _ = b;
    /// ```
    pub fn ring_bytes(mut self, bytes: usize) -> Self {
        self.ring_bytes = bytes.clamp(4096, 1 << 30).next_power_of_two();
        self
    }

    /// A task running longer than this fails its call with
    /// [`ErrorKind::Timeout`]; its worker is killed and replaced (mpire's
    /// `task_timeout`).
    ///
    /// ```
    /// let b = multiproc::Pool::builder().task_timeout(std::time::Duration::from_secs(30));
    /// # let _ = b;
    /// ```
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// Workers time every task, so [`Pool::insights`] reports busy and idle
    /// time (mpire's `enable_insights`). Off by default: it costs two clock
    /// reads per task, a tenth of an `apply` round trip.
    ///
    /// ```
    /// let b = multiproc::Pool::builder().insights(true);
    /// # let _ = b;
    /// ```
    pub fn insights(mut self, on: bool) -> Self {
        self.insights = on;
        self
    }

    /// Workers start without the inherited environment variables whose
    /// names start with one of `prefixes` (crate-internal: a cluster rank
    /// keeps its MPI launcher's variables away from its workers).
    #[cfg(feature = "mpi")]
    pub(crate) fn strip_env_prefixes(mut self, prefixes: &'static [&'static str]) -> Self {
        self.strip_env = prefixes;
        self
    }

    /// The process count set by [`processes`](PoolBuilder::processes), if any.
    #[cfg(feature = "mpi")]
    pub(crate) fn processes_set(&self) -> Option<usize> {
        self.processes
    }

    /// Starts the workers. They start in parallel and the call returns
    /// once the OS has started them; tasks queue until each worker is up.
    ///
    /// # Errors
    /// [`ErrorKind::Spawn`] / [`ErrorKind::Io`] / [`ErrorKind::NoSpace`]
    /// when a worker or its shared memory cannot be created;
    /// [`ErrorKind::InvalidState`] for zero processes, or when this process
    /// has not run [`init`](crate::init).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::builder().processes(2).build().unwrap();
    ///     assert_eq!(pool.processes(), 2);
    /// }
    /// ```
    pub fn build(self) -> Result<Pool> {
        let processes = self.processes.unwrap_or_else(crate::cpu_count);
        if processes == 0 {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "a pool needs at least one process",
            ));
        }
        let key = random_key()?;
        let doorbell = Doorbell::create()?;
        let cores = if self.pin_cores && pinning_supported() {
            core_affinity::get_core_ids().map(|ids| {
                let mut ids: Vec<usize> = ids.into_iter().map(|c| c.id).collect();
                ids.sort_unstable();
                ids
            })
        } else {
            None
        };
        let pinned = cores.as_ref().is_some_and(|c| !c.is_empty());
        let cfg = Config {
            processes,
            init: self.init.map(|(make, bytes)| (make(key), bytes)),
            max_tasks_per_child: self.max_tasks_per_child,
            cores,
            ring_bytes: self.ring_bytes,
            task_timeout: self.task_timeout,
            timing: self.insights,
            key,
            doorbell: doorbell.handle(),
            strip_env: self.strip_env,
        };
        let core = Core::new(cfg)?;
        Ok(Pool {
            shared: Arc::new(Shared::new(core, doorbell)),
            timing: self.insights,
            processes,
            chunksize: self.chunksize,
            pinned,
            key,
            arenas: Mutex::new(Vec::new()),
        })
    }
}

fn random_key() -> Result<TaskKey> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| Error::new(ErrorKind::Io, "random pool key").with_source(e.to_string()))?;
    Ok([
        u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
        u64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
    ])
}

/// `true` where [`PoolBuilder::pin_cores`] can pin workers to CPUs
/// (Linux, Windows, FreeBSD, Android); `false` on macOS, whose scheduler
/// takes affinity only as a hint.
///
/// ```
/// if !multiproc::pinning_supported() {
///     println!("workers will run unpinned here");
/// }
/// ```
pub fn pinning_supported() -> bool {
    cfg!(any(
        target_os = "linux",
        target_os = "android",
        target_os = "windows",
        target_os = "freebsd"
    ))
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

    fn chunk_for(&self, n: usize) -> usize {
        self.chunksize.unwrap_or_else(|| {
            // Python: divmod(len, processes * 4), rounded up.
            let per = self.processes * 4;
            n.div_ceil(per).max(1)
        })
    }

    fn submit(
        &self,
        source: Box<dyn Source>,
        sink: Arc<dyn Sink>,
        bound: usize,
        backlog: usize,
    ) -> Result<u64> {
        let mut core = self.shared.lock();
        let id = core.submit(Job::new(source, sink, bound, backlog))?;
        drop(core);
        self.shared.notify();
        Ok(id)
    }

    fn ensure_pump(&self) {
        let mut pump = self.shared.pump.lock().unwrap_or_else(|p| p.into_inner());
        if pump.is_none() {
            let shared = Arc::clone(&self.shared);
            *pump = std::thread::Builder::new()
                .name("multiproc-pool-pump".into())
                .spawn(move || shared.pump())
                .ok();
        }
    }

    fn start_map<F, A, R>(&self, f: F, items: Vec<A>) -> Result<(Arc<Collect<R>>, u64)>
    where
        F: Fn(A) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = &f;
        let n = items.len();
        let task = TaskRef::of_entry(ChunkDesc::<F, A, R>::ENTRY, self.key);
        let source = IterSource::new(items.into_iter(), self.chunk_for(n), task);
        // A single result (apply) needs no dense buffer.
        let sink = Collect::<R>::with_len(false, (n > 1).then_some(n));
        self.submit(Box::new(source), sink.clone(), usize::MAX, usize::MAX)?;
        Ok((sink, n as u64))
    }

    /// Applies `f` to every item in worker processes and returns the
    /// results in order (Python's `pool.map(f, iterable)`). The items are
    /// collected first, as Python does, and sent in chunks
    /// ([`PoolBuilder::chunksize`]).
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
    ///   exceeds the frame limit ([`PoolBuilder::ring_bytes`]).
    /// * [`ErrorKind::InvalidState`]: the pool was closed or terminated.
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(4).unwrap();
    ///     assert_eq!(pool.map(square, 0..10).unwrap(), [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    /// }
    /// ```
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let (sink, n) = self.start_map(f, raw::collect_items(items.into_iter()))?;
        let s2 = Arc::clone(&sink);
        let (core, _) = self.shared.wait_until(&move |_: &Core| s2.ready(), None);
        drop(core);
        sink.take(Some(n))
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
        let (sink, n) = self.start_map(f, raw::collect_items(items.into_iter()))?;
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
        I: IntoIterator<Item = A>,
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
        let (sink, n) = self.start_map(f, raw::collect_items(items.into_iter()))?;
        self.ensure_pump();
        Ok(AsyncResult {
            shared: Arc::clone(&self.shared),
            sink,
            expect: Some(n),
            unwrap_one: false,
            taken: false,
            _t: PhantomData,
        })
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
        let (sink, _) = self.start_map(f, vec![args])?;
        let s2 = Arc::clone(&sink);
        let (core, _) = self.shared.wait_until(&move |_: &Core| s2.ready(), None);
        drop(core);
        one(sink.take(Some(1))?)
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
        let (sink, _) = self.start_map(f, vec![args])?;
        self.ensure_pump();
        Ok(AsyncResult {
            shared: Arc::clone(&self.shared),
            sink: Arc::new(One(sink)),
            expect: Some(1),
            unwrap_one: true,
            taken: false,
            _t: PhantomData,
        })
    }

    fn start_stream<F, A, R, I>(&self, f: F, items: I, ordered: bool) -> Result<IMap<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = &f;
        let task = TaskRef::of_entry(ChunkDesc::<F, A, R>::ENTRY, self.key);
        let chunk = self.chunksize.unwrap_or(1);
        let source = IterSource::new(items.into_iter(), chunk, task);
        let sink = Stream::<R>::new(ordered);
        let bound = stream_bound(self.processes);
        let backlog = bound.saturating_mul(chunk).saturating_mul(4);
        let id = self.submit(Box::new(source), sink.clone(), bound, backlog)?;
        self.ensure_pump();
        Ok(IMap {
            shared: Arc::clone(&self.shared),
            sink,
            id,
            done: false,
        })
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
        self.start_stream(f, items, true)
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
        self.start_stream(f, items, false)
    }

    /// How a zero-copy map cuts `0..n`: the user's fixed `chunksize`, or
    /// guided chunks (see [`ZcChunks`]).
    fn zc_chunks(&self) -> ZcChunks {
        match self.chunksize {
            Some(c) => ZcChunks::Fixed(c as u64),
            None => ZcChunks::Guided {
                workers: self.processes as u64,
            },
        }
    }

    fn run_zc(
        &self,
        task: TaskRef,
        input: &Arc<Segment>,
        output: Option<&Arc<Segment>>,
        n: usize,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let source = ZcSource {
            next: 0,
            n: n as u64,
            chunks: self.zc_chunks(),
            task,
            input: Arc::clone(input),
            output: output.cloned(),
        };
        let sink = Collect::<()>::new(true);
        self.submit(Box::new(source), sink.clone(), usize::MAX, usize::MAX)?;
        let s2 = Arc::clone(&sink);
        let (core, _) = self.shared.wait_until(&move |_: &Core| s2.ready(), None);
        drop(core);
        sink.take(None)?;
        // A worker that shrank a segment under us: what we read back is
        // zeros, not results.
        input.check_intact()?;
        output.map_or(Ok(()), |o| o.check_intact())
    }

    /// Zero-copy parallel map: `kernel(input_chunk, output_chunk)` over
    /// whole chunks of two [`ShmVec`]s, in the workers. Only chunk
    /// descriptors cross the rings; the kernel sees slices, so the compiler
    /// vectorises it. Returns when every chunk is done (or lost with a dead
    /// worker, whose error is returned): until then nothing else touches
    /// `output`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if the lengths differ; otherwise as
    /// [`map`](Pool::map) (a panic names the first element of its chunk).
    ///
    /// ```
    /// fn affine(x: &[f64], y: &mut [f64]) {
    ///     for (y, x) in y.iter_mut().zip(x) { *y = 2.0 * x + 1.0; }
    /// }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let x = multiproc::ShmVec::from_slice(&[0.0, 1.0, 2.0])?;
    ///     let mut y = multiproc::ShmVec::zeroed(3)?;
    ///     pool.map_into(affine, &x, &mut y)?;
    ///     assert_eq!(&y[..], &[1.0, 3.0, 5.0]);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_into<F, T, U>(
        &self,
        kernel: F,
        input: &ShmVec<T>,
        output: &mut ShmVec<U>,
    ) -> Result<()>
    where
        F: Fn(&[T], &mut [U]) + 'static,
        T: Pod,
        U: Pod,
    {
        let _ = &kernel;
        same_len(input.len(), output.len())?;
        let task = TaskRef::of_entry(ZcDesc::<F, T, U>::INTO, self.key);
        self.run_zc(task, input.segment(), Some(output.segment()), input.len())
    }

    /// Zero-copy element-wise map: `output[i] = f(input[i])`, in the
    /// workers, chunk by chunk (the loop is compiled with `f` inlined, so it
    /// vectorises).
    ///
    /// # Errors
    /// As [`map_into`](Pool::map_into).
    ///
    /// ```
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let x = multiproc::ShmVec::from_slice(&[1u32, 2, 3])?;
    ///     let mut y = multiproc::ShmVec::<u64>::zeroed(3)?;
    ///     pool.map_elements(|v: u32| u64::from(v) << 32, &x, &mut y)?;
    ///     assert_eq!(y[2], 3 << 32);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_elements<F, T, U>(
        &self,
        f: F,
        input: &ShmVec<T>,
        output: &mut ShmVec<U>,
    ) -> Result<()>
    where
        F: Fn(T) -> U + 'static,
        T: Pod,
        U: Pod,
    {
        let _ = &f;
        same_len(input.len(), output.len())?;
        let task = TaskRef::of_entry(ZcDesc::<F, T, U>::ELEMENTS, self.key);
        self.run_zc(task, input.segment(), Some(output.segment()), input.len())
    }

    /// Zero-copy in-place map: `kernel(chunk)` over whole chunks of `data`,
    /// in the workers.
    ///
    /// # Errors
    /// As [`map_into`](Pool::map_into).
    ///
    /// ```
    /// fn scale(xs: &mut [f32]) { for x in xs { *x *= 0.5; } }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let mut v = multiproc::ShmVec::from_slice(&[2.0f32, 4.0])?;
    ///     pool.map_in_place(scale, &mut v)?;
    ///     assert_eq!(&v[..], &[1.0, 2.0]);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_in_place<F, T>(&self, kernel: F, data: &mut ShmVec<T>) -> Result<()>
    where
        F: Fn(&mut [T]) + 'static,
        T: Pod,
    {
        let _ = &kernel;
        let task = TaskRef::of_entry(ZcDesc::<F, T, T>::IN_PLACE, self.key);
        self.run_zc(task, data.segment(), None, data.len())
    }

    /// [`map_in_place`](Pool::map_in_place) over a [`SharedArray`], whose
    /// clones (here and in other processes) the pool cannot see: hence
    /// `unsafe`. Prefer a [`ShmVec`], which has no such clones.
    ///
    /// # Safety
    /// While the call runs, nothing else may read or write any element of
    /// `data`: no other handle in this process, no other process — the same
    /// contract as [`SharedArray::as_mut_slice`].
    ///
    /// # Errors
    /// As [`map_into`](Pool::map_into).
    ///
    /// ```
    /// fn bump(xs: &mut [u32]) { for x in xs { *x += 1; } }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let mut a = multiproc::SharedArray::from_slice(&[1u32, 2, 3])?;
    ///     // SAFETY: `a` has no other handle, so only the pool touches it.
    ///     unsafe { pool.map_shared_in_place(bump, &mut a)? };
    ///     assert_eq!(a.to_vec(), [2, 3, 4]);
    ///     Ok(())
    /// }
    /// ```
    #[allow(unsafe_code)]
    pub unsafe fn map_shared_in_place<F, T>(
        &self,
        kernel: F,
        data: &mut SharedArray<T>,
    ) -> Result<()>
    where
        F: Fn(&mut [T]) + 'static,
        T: Pod,
    {
        let _ = &kernel;
        let task = TaskRef::of_entry(ZcDesc::<F, T, T>::IN_PLACE, self.key);
        self.run_zc(task, data.segment(), None, data.len())
    }

    /// [`map_into`](Pool::map_into) from one [`SharedArray`] into another.
    ///
    /// # Safety
    /// While the call runs, nothing else may write `input` or read or write
    /// `output` (no other handle here, no other process).
    ///
    /// # Errors
    /// As [`map_into`](Pool::map_into).
    ///
    /// ```
    /// fn double(x: &[f64], y: &mut [f64]) { for (y, x) in y.iter_mut().zip(x) { *y = 2.0 * x; } }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let x = multiproc::SharedArray::from_slice(&[1.0, 2.0])?;
    ///     let mut y = multiproc::SharedArray::<f64>::new(2)?;
    ///     // SAFETY: no other handles exist.
    ///     unsafe { pool.map_shared_into(double, &x, &mut y)? };
    ///     assert_eq!(y.to_vec(), [2.0, 4.0]);
    ///     Ok(())
    /// }
    /// ```
    #[allow(unsafe_code)]
    pub unsafe fn map_shared_into<F, T, U>(
        &self,
        kernel: F,
        input: &SharedArray<T>,
        output: &mut SharedArray<U>,
    ) -> Result<()>
    where
        F: Fn(&[T], &mut [U]) + 'static,
        T: Pod,
        U: Pod,
    {
        let _ = &kernel;
        same_len(input.len(), output.len())?;
        let task = TaskRef::of_entry(ZcDesc::<F, T, U>::INTO, self.key);
        self.run_zc(task, input.segment(), Some(output.segment()), input.len())
    }

    /// Element-wise map over a plain slice: the items are copied into a
    /// pool-owned, reused shared-memory arena, mapped there by the
    /// workers, and copied out. For data that lives in shared memory
    /// anyway, [`map_elements`](Pool::map_elements) skips both copies.
    ///
    /// # Errors
    /// As [`map_into`](Pool::map_into); [`ErrorKind::NoSpace`] if the arena
    /// cannot grow.
    ///
    /// ```
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let out = pool.map_slice(|x: f64| x.sqrt(), &[4.0, 9.0, 16.0])?;
    ///     assert_eq!(out, [2.0, 3.0, 4.0]);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_slice<F, T, U>(&self, f: F, input: &[T]) -> Result<Vec<U>>
    where
        F: Fn(T) -> U + 'static,
        T: Pod,
        U: Pod,
    {
        let _ = &f;
        if input.is_empty() {
            return Ok(Vec::new());
        }
        let in_bytes = std::mem::size_of_val(input);
        let out_bytes = input.len() * std::mem::size_of::<U>();
        let a = self.arena(in_bytes)?;
        let b = self.arena(out_bytes)?;
        let result = (|| {
            zero_copy::copy_in(&a, bytemuck::cast_slice(input));
            let task = TaskRef::of_entry(ZcDesc::<F, T, U>::ELEMENTS, self.key);
            self.run_zc(task, &a, Some(&b), input.len())?;
            let mut out = vec![U::zeroed(); input.len()];
            zero_copy::copy_out(&b, bytemuck::cast_slice_mut(&mut out));
            Ok(out)
        })();
        let mut arenas = self.arenas.lock().unwrap_or_else(|p| p.into_inner());
        arenas.push(a);
        arenas.push(b);
        result
    }

    /// A free arena of at least `bytes`, reused when possible.
    fn arena(&self, bytes: usize) -> Result<Arc<Segment>> {
        let mut arenas = self.arenas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = arenas.iter().position(|s| s.len() >= bytes) {
            return Ok(arenas.swap_remove(i));
        }
        // Grow: drop the smallest and make a bigger one (1.5x headroom).
        if arenas.len() >= 2 {
            if let Some(i) = (0..arenas.len()).min_by_key(|&i| arenas[i].len()) {
                arenas.swap_remove(i);
            }
        }
        drop(arenas);
        Ok(Arc::new(Segment::create(
            bytes.saturating_add(bytes / 2).max(4096),
        )?))
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

    /// Waits for the queued work to finish and the workers to exit
    /// (Python's `join()`, which also needs `close()` or `terminate()`
    /// first).
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
        self.stop_pump();
        core::join_workers(workers)
    }

    /// Kills the workers at once; running and queued work fails with
    /// [`ErrorKind::InvalidState`] (Python's `terminate()`, also what
    /// dropping the pool does, like leaving `with Pool() as p:`). A call
    /// blocked in another thread returns promptly.
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
        self.stop_pump();
    }

    fn stop_pump(&self) {
        let handle = self
            .shared
            .pump
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            self.shared.notify();
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

fn same_len(a: usize, b: usize) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidState,
            format!("input has {a} elements, output {b}"),
        ))
    }
}

fn one<R>(mut v: Vec<R>) -> Result<R> {
    match (v.pop(), v.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => Err(Error::new(
            ErrorKind::Protocol,
            "expected exactly one result",
        )),
    }
}

/// Chunks of a zero-copy map.
struct ZcSource {
    next: u64,
    n: u64,
    chunks: ZcChunks,
    task: TaskRef,
    input: Arc<Segment>,
    output: Option<Arc<Segment>>,
}

/// Chunk sizes of a zero-copy map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZcChunks {
    /// `chunksize` elements each (the user's choice).
    Fixed(u64),
    /// Guided self-scheduling: each chunk is the remaining elements over
    /// twice the workers, at least [`ZC_MIN_CHUNK`]. Early chunks are large
    /// (few descriptors for a big map); late ones small, so the workers
    /// finish together: a chunk queued behind a busy worker's running one
    /// (DEPTH) cannot move to an idle worker, and with guided chunks the
    /// last such chunk is a small one.
    Guided { workers: u64 },
}

/// Smallest guided chunk: 4 Ki elements (64 KiB of `f64` read and
/// written), several µs even of a memory-bound map, against ≈ 1 µs of cost
/// per chunk.
const ZC_MIN_CHUNK: u64 = 4 * 1024;

impl ZcChunks {
    /// Elements of the next chunk when `left` (> 0) remain.
    fn next(self, left: u64) -> u64 {
        let want = match self {
            ZcChunks::Fixed(c) => c,
            ZcChunks::Guided { workers } => left.div_ceil(2 * workers.max(1)).max(ZC_MIN_CHUNK),
        };
        want.clamp(1, left)
    }
}

impl Source for ZcSource {
    fn next(&mut self, _frame: &mut Vec<u8>, _job: u64, _soft: usize, _hard: usize) -> Next {
        if self.next >= self.n {
            return Next::Done;
        }
        let count = self.chunks.next(self.n - self.next);
        let first = self.next;
        self.next += count;
        Next::Zc(ZcTask {
            first,
            count,
            task: self.task,
            input: Arc::clone(&self.input),
            output: self.output.clone(),
        })
    }
}

/// The result of an `*_async` call (Python's `AsyncResult`).
///
/// ```
/// fn main() {
///     multiproc::init();
///     let pool = multiproc::Pool::new(1).unwrap();
///     let r = pool.apply_async(|x: u32| x + 1, 41).unwrap();
///     r.wait();
///     assert!(r.ready());
///     assert_eq!(r.successful(), Some(true));
///     assert_eq!(r.get().unwrap(), 42);
/// }
/// ```
pub struct AsyncResult<T> {
    shared: Arc<Shared>,
    sink: Arc<dyn AnyCollect<T>>,
    expect: Option<u64>,
    unwrap_one: bool,
    taken: bool,
    _t: PhantomData<fn() -> T>,
}

/// `Collect<R>` seen as producing a `T` (`Vec<R>`, or `R` for `apply`).
trait AnyCollect<T>: Send + Sync {
    fn ready(&self) -> bool;
    fn successful(&self) -> Option<bool>;
    fn take_as(&self, expect: Option<u64>, one: bool) -> Result<T>;
}

impl<R: Send> AnyCollect<Vec<R>> for Collect<R> {
    fn ready(&self) -> bool {
        Collect::ready(self)
    }
    fn successful(&self) -> Option<bool> {
        Collect::successful(self)
    }
    fn take_as(&self, expect: Option<u64>, _one: bool) -> Result<Vec<R>> {
        self.take(expect)
    }
}

/// `apply_async`'s view: one `R`.
struct One<R>(Arc<Collect<R>>);

impl<R: Send> AnyCollect<R> for One<R> {
    fn ready(&self) -> bool {
        self.0.ready()
    }
    fn successful(&self) -> Option<bool> {
        self.0.successful()
    }
    fn take_as(&self, expect: Option<u64>, _one: bool) -> Result<R> {
        one(self.0.take(expect)?)
    }
}

impl<T> AsyncResult<T> {
    /// `true` once the result (or error) is there (Python's `ready()`).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let r = pool.apply_async(|x: u8| x, 1).unwrap();
    ///     r.wait();
    ///     assert!(r.ready());
    /// }
    /// ```
    pub fn ready(&self) -> bool {
        self.sink.ready()
    }

    /// `Some(true)` if it finished without error, `Some(false)` if it
    /// failed, `None` while it runs (Python raises `ValueError` then).
    ///
    /// ```
    /// fn boom(_: ()) { panic!("no") }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let r = pool.apply_async(boom, ()).unwrap();
    ///     r.wait();
    ///     assert_eq!(r.successful(), Some(false));
    /// }
    /// ```
    pub fn successful(&self) -> Option<bool> {
        self.sink.successful()
    }

    /// Blocks until it is ready (Python's `wait()`).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let r = pool.map_async(|x: u8| x, [1, 2]).unwrap();
    ///     r.wait();
    ///     assert!(r.ready());
    /// }
    /// ```
    pub fn wait(&self) {
        let s = Arc::clone(&self.sink);
        let _ = self.shared.wait_until(
            &move |c: &Core| s.ready() || c.state == State::Terminated,
            None,
        );
    }

    /// Waits at most `timeout`; `true` if it is ready (Python's
    /// `wait(timeout)`).
    ///
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let r = pool.apply_async(nap, 300).unwrap();
    ///     assert!(!r.wait_timeout(std::time::Duration::from_millis(10)));
    /// }
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let s = Arc::clone(&self.sink);
        let deadline = Instant::now() + timeout;
        let (_core, ok) = self
            .shared
            .wait_until(&move |_: &Core| s.ready(), Some(deadline));
        ok
    }

    /// The value (Python's `get()`).
    ///
    /// # Errors
    /// As the call that made it ([`Pool::map`], [`Pool::apply`]).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     assert_eq!(pool.apply_async(|s: String| s.len(), "four".to_string()).unwrap().get().unwrap(), 4);
    /// }
    /// ```
    pub fn get(mut self) -> Result<T> {
        self.wait();
        self.take()
    }

    /// The value if it is ready within `timeout` (Python's
    /// `get(timeout)`); [`ErrorKind::Timeout`] otherwise, and the result
    /// stays available for a later call.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`]; [`ErrorKind::InvalidState`] if the value was
    /// already taken; otherwise as [`get`](AsyncResult::get).
    ///
    /// ```
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let mut r = pool.apply_async(nap, 200).unwrap();
    ///     assert!(r.get_timeout(std::time::Duration::from_millis(1)).unwrap_err().is_timeout());
    ///     assert_eq!(r.get_timeout(std::time::Duration::from_secs(30)).unwrap(), 200);
    /// }
    /// ```
    pub fn get_timeout(&mut self, timeout: Duration) -> Result<T> {
        if !self.wait_timeout(timeout) {
            return Err(Error::timeout(
                "AsyncResult::get_timeout: the result was not ready in time (it may still come)",
            ));
        }
        self.take()
    }

    fn take(&mut self) -> Result<T> {
        if self.taken {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "the result was already taken",
            ));
        }
        self.taken = true;
        self.sink.take_as(self.expect, self.unwrap_one)
    }
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`].
///
/// ```
/// fn main() {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2).unwrap();
///     for r in pool.imap(|x: u32| x * 2, 0..3).unwrap() {
///         println!("{}", r.unwrap());
///     }
/// }
/// ```
pub struct IMap<R> {
    shared: Arc<Shared>,
    sink: Arc<Stream<R>>,
    id: u64,
    done: bool,
}

impl<R> IMap<R> {
    /// Items finished by the workers so far (handed out or not).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let mut it = pool.imap(|x: u8| x, [1u8]).unwrap();
    ///     it.next();
    ///     assert_eq!(it.finished(), 1);
    /// }
    /// ```
    pub fn finished(&self) -> u64 {
        self.sink.done_items()
    }
}

impl<R> Iterator for IMap<R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        if self.done {
            return None;
        }
        if let Some(v) = self.sink.try_next() {
            self.done = v.is_none();
            return v;
        }
        let s = Arc::clone(&self.sink);
        let mut out = None;
        let cell = Mutex::new(&mut out);
        let _ = self.shared.wait_until(
            &|c: &Core| {
                // `done` may be asked again after it said yes: take one
                // item only.
                let mut slot = cell.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_some() {
                    return true;
                }
                if let Some(v) = s.try_next() {
                    **slot = Some(v);
                    return true;
                }
                c.state == State::Terminated
            },
            None,
        );
        // Wake the pump: a consumed item may let it dispatch more.
        self.shared.notify();
        match out {
            Some(v) => {
                self.done = v.is_none();
                v
            }
            None => {
                self.done = true;
                Some(Err(Error::new(
                    ErrorKind::InvalidState,
                    "the pool was terminated",
                )))
            }
        }
    }
}

impl<R> Drop for IMap<R> {
    fn drop(&mut self) {
        if !self.done {
            self.sink.drop_consumer();
            let mut core = self.shared.lock();
            core.cancel(self.id);
            drop(core);
            self.shared.notify();
        }
    }
}

impl<R> std::fmt::Debug for IMap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// See `__fuzz::pool_frames`.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_frames(bytes: &[u8]) -> bool {
    let Some((&kind, rest)) = bytes.split_first() else {
        return false;
    };
    match kind % 4 {
        0 => wire::TaskHeader::read(rest).is_ok(),
        1 => match wire::ZcHeader::read(rest.get(..wire::ZcHeader::LEN).unwrap_or(rest)) {
            Ok(h) => wire::fuzz_elements(h.first, h.count, rest.len()),
            Err(_) => false,
        },
        2 => core::fuzz_result(rest),
        _ => postcard::from_bytes::<crate::segment::SegmentHandle>(rest).is_ok(),
    }
}

#[cfg(test)]
mod zc_chunk_tests {
    use super::{ZcChunks, ZC_MIN_CHUNK};

    /// The chunks `c` cuts `0..n` into.
    fn cut(c: ZcChunks, n: u64) -> Vec<u64> {
        let (mut left, mut out) = (n, Vec::new());
        while left > 0 {
            let k = c.next(left);
            assert!(k >= 1 && k <= left, "chunk {k} of {left} left");
            out.push(k);
            left -= k;
        }
        out
    }

    #[test]
    fn guided_chunks_cover_everything_shrink_and_respect_the_floor() {
        for workers in [1, 2, 3, 16, 64] {
            for n in [1, 7, 4096, 4097, 100_000, 1_000_000, 100_000_000] {
                let chunks = cut(ZcChunks::Guided { workers }, n);
                assert_eq!(chunks.iter().sum::<u64>(), n);
                assert!(chunks.windows(2).all(|w| w[0] >= w[1]), "{chunks:?}");
                // Only the last chunk may be under the floor.
                let body = &chunks[..chunks.len() - 1];
                assert!(body.iter().all(|&k| k >= ZC_MIN_CHUNK), "{chunks:?}");
                // The first chunk leaves work for every other worker.
                assert!(chunks[0] <= n.div_ceil(2 * workers).max(ZC_MIN_CHUNK));
            }
        }
        // 1e8 over 16 workers: a few hundred descriptors, not thousands.
        let chunks = cut(ZcChunks::Guided { workers: 16 }, 100_000_000);
        assert!(chunks.len() < 400, "{} chunks", chunks.len());
    }

    #[test]
    fn fixed_chunks_are_the_users_size() {
        assert_eq!(cut(ZcChunks::Fixed(3), 10), [3, 3, 3, 1]);
        assert_eq!(cut(ZcChunks::Fixed(100), 10), [10]);
    }
}
