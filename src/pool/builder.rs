//! [`PoolBuilder`]: a pool's options (Python's `Pool(...)` keyword
//! arguments and more), and what `build` derives from them (the task key,
//! the doorbell, the cores to pin to).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::core::{Config, Core};
use super::doorbell::Doorbell;
use super::driver::Shared;
use super::{Pool, DEFAULT_RING_BYTES};
use crate::error::{Error, ErrorKind, Result};
use crate::task::{TaskKey, TaskRef};

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
    start_method: Option<crate::StartMethod>,
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
            .field("start_method", &self.start_method)
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
            start_method: None,
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

    /// How the workers start, replacements included (Python's
    /// `get_context(method).Pool`); default the process-wide
    /// [`get_start_method`](crate::get_start_method). With
    /// [`StartMethod::ForkServer`](crate::StartMethod::ForkServer) a pool
    /// that replaces workers often (`max_tasks_per_child`, `task_timeout`,
    /// cancelled tasks, crashes) pays a fork instead of an `exec` each
    /// time. A method not available here makes [`build`](Self::build) fail
    /// with [`ErrorKind::InvalidState`].
    ///
    /// ```
    /// use multiproc::StartMethod;
    /// fn double(x: u64) -> u64 { 2 * x }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let method = if StartMethod::ForkServer.is_available() {
    ///         StartMethod::ForkServer
    ///     } else {
    ///         StartMethod::Spawn
    ///     };
    ///     let pool = multiproc::Pool::builder()
    ///         .processes(2)
    ///         .start_method(method)
    ///         .max_tasks_per_child(1)
    ///         .build()?;
    ///     assert_eq!(pool.map(double, 0..4)?, [0, 2, 4, 6]);
    ///     Ok(())
    /// }
    /// ```
    pub fn start_method(mut self, method: crate::StartMethod) -> Self {
        self.start_method = Some(method);
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
        // 0 is refused by `build` (Python: "maxtasksperchild must be a
        // positive int or None").
        self.max_tasks_per_child = Some(n);
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
    /// the workers, each chunk 10–200 µs of work by the worker's own clock
    /// (the workers claim their chunks themselves), so the last ones are
    /// small.
    ///
    /// ```
    /// let b = multiproc::Pool::builder().chunksize(64);
    /// # let _ = b;
    /// ```
    pub fn chunksize(mut self, n: usize) -> Self {
        // 0 is refused by `build`.
        self.chunksize = Some(n);
        self
    }

    /// Bytes of each worker's task ring and result ring (default 1 MiB,
    /// rounded up to a power of two). Items and results of any size cross:
    /// one encoded larger than half the ring streams through it in pieces
    /// (a copy per piece each way), and an item that large goes alone and
    /// waits until its worker has nothing else in flight. Larger rings
    /// suit pools whose items are mostly that large.
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
    /// [`ErrorKind::InvalidState`] for zero processes, zero tasks per child
    /// or a zero chunk size (Python's `ValueError`), or when this process
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
        let invalid = |what: &str| Err(Error::new(ErrorKind::InvalidState, what.to_string()));
        if processes == 0 {
            return invalid("Pool: processes must be at least 1");
        }
        if self.max_tasks_per_child == Some(0) {
            return invalid("Pool: max_tasks_per_child must be at least 1 (or not set)");
        }
        if self.chunksize == Some(0) {
            return invalid("Pool: chunksize must be at least 1 (or not set)");
        }
        let start_method = match self.start_method {
            Some(m) => m.check_available()?,
            None => crate::get_start_method(),
        };
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
            doorbell_segment: doorbell.segment(),
            strip_env: self.strip_env,
            start_method,
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
            claims: Default::default(),
            spare: Default::default(),
            callbacks: std::sync::OnceLock::new(),
            callbacks_start: Mutex::new(()),
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
