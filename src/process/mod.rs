//! `Process`: one function run in a child process, with a typed result.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{self, Launch, Outcome};
use crate::error::{Error, ErrorKind, Result};
use crate::exit_status::ExitStatus;
use crate::sys;
use crate::task::TaskRef;

mod child;
mod start_method;
use child::{ChildCell, State, Waiter};
pub use start_method::{all_start_methods, get_start_method, set_start_method, StartMethod};

/// Name and pid of a process: what [`current_process`] and
/// [`active_children`] return.
///
/// Python counterpart: the `name` and `pid` attributes of
/// `multiprocessing.current_process()` / of each `active_children()` entry.
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid(), std::process::id());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    name: String,
    pid: u32,
}

impl ProcessInfo {
    /// The process's name (`"MainProcess"` for the program itself,
    /// `"Process-N"` or the builder's name for a child).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating-system process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// The calling process: `"MainProcess"`, or a worker's name inside a worker.
///
/// Python counterpart: `multiprocessing.current_process()`.
///
/// ```
/// fn whoami(_: ()) -> String { multiproc::current_process().name().to_string() }
///
/// fn main() {
///     multiproc::init();
///     assert_eq!(multiproc::current_process().name(), "MainProcess");
///     let p = multiproc::Process::builder().name("worker-7").spawn(whoami, ()).unwrap();
///     assert_eq!(p.join().unwrap(), "worker-7");
/// }
/// ```
pub fn current_process() -> ProcessInfo {
    ProcessInfo {
        name: bootstrap::worker_name()
            .unwrap_or(bootstrap::MAIN_PROCESS)
            .to_string(),
        pid: std::process::id(),
    }
}

/// The process that started this one, if this is a worker; `None` in the
/// program itself.
///
/// Python counterpart: `multiprocessing.parent_process()`.
///
/// ```
/// fn parent_of_child(_: ()) -> Option<(String, u32)> {
///     multiproc::parent_process().map(|p| (p.name().to_string(), p.pid()))
/// }
///
/// fn main() {
///     multiproc::init();
///     assert!(multiproc::parent_process().is_none());
///     let p = multiproc::Process::spawn(parent_of_child, ()).unwrap();
///     assert_eq!(p.join().unwrap(), Some(("MainProcess".to_string(), std::process::id())));
/// }
/// ```
pub fn parent_process() -> Option<ProcessInfo> {
    bootstrap::parent().map(|(name, pid)| ProcessInfo {
        name: name.to_string(),
        pid,
    })
}

/// The children of this process that are still running.
///
/// Like Python's `multiprocessing.active_children()`, asking also reaps
/// children that have ended, so none lingers as a zombie.
///
/// ```
/// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
///
/// fn main() {
///     multiproc::init();
///     let p = multiproc::Process::spawn(nap, 300).unwrap();
///     let pid = p.pid();
///     assert!(multiproc::active_children().iter().any(|c| c.pid() == pid));
///     p.join().unwrap();
///     assert!(multiproc::active_children().iter().all(|c| c.pid() != pid));
/// }
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    let mut registry = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    let mut alive = Vec::new();
    registry.retain(|weak| match weak.upgrade() {
        Some(cell) if cell.poll_exit().is_none() => {
            alive.push(ProcessInfo {
                name: cell.name.clone(),
                pid: cell.pid,
            });
            true
        }
        _ => false,
    });
    alive
}

static CHILDREN: Mutex<Vec<Weak<ChildCell>>> = Mutex::new(Vec::new());

/// Adds a child to the registry, first dropping the entries of children
/// whose `Process` is gone once they make up half of it, so a program that
/// spawns and joins forever keeps a registry the size of what is alive.
fn register(cell: &Arc<ChildCell>) {
    push_pruned(
        &mut CHILDREN.lock().unwrap_or_else(|p| p.into_inner()),
        cell,
    );
}

fn push_pruned<T>(registry: &mut Vec<Weak<T>>, cell: &Arc<T>) {
    if registry.len() == registry.capacity() {
        registry.retain(|weak| weak.strong_count() > 0);
        // Room for as many again: pruning stays amortised O(1) a spawn.
        let live = registry.len();
        registry.reserve(live.max(4));
    }
    registry.push(Arc::downgrade(cell));
}
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A function running in a child process, and its typed result.
///
/// The child is this same program, re-executed: [`init`](crate::init) at the
/// top of `main` turns it into a worker that runs `f(args)` and sends the
/// return value back. `f` must be a `fn` item or a closure that captures
/// nothing (data goes in `args`); arguments and results travel with serde.
///
/// Python counterpart: `multiprocessing.Process(target=f, args=(…,))`,
/// `start()` (here [`spawn`](Process::spawn)), `join()`, `is_alive()`,
/// `terminate()`, `kill()`, `exitcode`, `pid`, `name`. Unlike Python,
/// [`join`](Process::join) returns `f`'s value, or the child's panic as an
/// error.
///
/// Dropping a `Process` that has not been joined detaches it: it keeps
/// running and is reaped in the background. Every child is killed when its
/// parent exits (even by `kill -9`), so none is ever orphaned.
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let p = multiproc::Process::spawn(square, 7)?;
///     assert_eq!(p.join()?, 49);
///     Ok(())
/// }
/// ```
pub struct Process<R = ()> {
    waiter: Waiter,
    _result: PhantomData<fn() -> R>,
}

/// Options for starting a [`Process`]: Python's keyword arguments.
///
/// ```
/// fn hello(who: String) -> String { format!("hello {who}") }
///
/// fn main() {
///     multiproc::init();
///     let p = multiproc::Process::builder()
///         .name("greeter")
///         .spawn(hello, "world".to_string())
///         .unwrap();
///     assert_eq!(p.name(), "greeter");
///     assert_eq!(p.join().unwrap(), "hello world");
/// }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .spawn() is called"]
pub struct ProcessBuilder {
    name: Option<String>,
    start_timeout: Duration,
    env: Vec<(OsString, Option<OsString>)>,
    start_method: Option<StartMethod>,
}

impl Default for ProcessBuilder {
    fn default() -> Self {
        ProcessBuilder {
            name: None,
            start_timeout: Duration::from_secs(10),
            env: Vec::new(),
            start_method: None,
        }
    }
}

impl ProcessBuilder {
    /// The child's name (Python's `name=`); default `"Process-N"`.
    ///
    /// ```
    /// let b = multiproc::Process::builder().name("loader");
    /// # let _ = b;
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long the child may take, counted from the spawn, to start and
    /// complete its handshake before [`join`](Process::join) reports
    /// [`ErrorKind::Handshake`] and the child is killed. Default 10 s.
    ///
    /// ```
    /// let b = multiproc::Process::builder().start_timeout(std::time::Duration::from_secs(30));
    /// # let _ = b;
    /// ```
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How this child starts (Python's `multiprocessing.get_context(method)
    /// .Process`); default the process-wide [`get_start_method`]. A
    /// method not available here makes [`spawn`](Self::spawn) fail with
    /// [`ErrorKind::InvalidState`].
    ///
    /// ```
    /// use multiproc::StartMethod;
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let method = if StartMethod::ForkServer.is_available() {
    ///         StartMethod::ForkServer
    ///     } else {
    ///         StartMethod::Spawn
    ///     };
    ///     let p = multiproc::Process::builder().start_method(method).spawn(square, 5).unwrap();
    ///     assert_eq!(p.join().unwrap(), 25);
    /// }
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = Some(method);
        self
    }

    /// Sets an environment variable for the child only (it inherits the
    /// parent's environment otherwise).
    ///
    /// ```
    /// fn get(key: String) -> Option<String> { std::env::var(key).ok() }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let p = multiproc::Process::builder().env("GREETING", "hi").spawn(get, "GREETING".into()).unwrap();
    ///     assert_eq!(p.join().unwrap().as_deref(), Some("hi"));
    /// }
    /// ```
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an inherited environment variable from the child's
    /// environment.
    ///
    /// ```
    /// let b = multiproc::Process::builder().env_remove("OMPI_COMM_WORLD_RANK");
    /// # let _ = b;
    /// ```
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Removes every inherited environment variable whose name starts with
    /// one of `prefixes` (as read now) from the child's environment.
    pub(crate) fn env_remove_prefixes(mut self, prefixes: &[&str]) -> Self {
        if prefixes.is_empty() {
            return self;
        }
        for (key, _) in std::env::vars_os() {
            let strip = key
                .to_str()
                .is_some_and(|k| prefixes.iter().any(|p| k.starts_with(p)));
            if strip {
                self.env.push((key, None));
            }
        }
        self
    }

    /// Starts `f(args)` in a new child process and returns at once.
    ///
    /// The child starts in about a millisecond; its handshake completes in
    /// the background, and a child that fails to start is reported by
    /// [`join`](Process::join).
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] if `args` cannot be serialised,
    /// [`ErrorKind::Spawn`] / [`ErrorKind::Io`] if the OS refuses to start
    /// the child, [`ErrorKind::NoSpace`] if shared memory is exhausted (each
    /// start uses one 4 KiB segment for its handshake),
    /// [`ErrorKind::InvalidState`] if this process has not run
    /// [`init`](crate::init) (the message says what to add).
    ///
    /// ```
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let p = multiproc::Process::builder().spawn(add, (2, 3)).unwrap();
    ///     assert_eq!(p.join().unwrap(), 5);
    /// }
    /// ```
    pub fn spawn<F, A, R>(self, f: F, args: A) -> Result<Process<R>>
    where
        F: Fn(A) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        let method = match self.start_method {
            Some(m) => m.check_available()?,
            None => get_start_method(),
        };
        let token = bootstrap::random_token()?;
        let task = TaskRef::of(&f, bootstrap::task_key(&token));
        let args_value = args;
        // Pipe ends in the arguments are the child's from here on (counted
        // as in flight until it opens them; see `pipe/holders.rs`).
        let (args, handover) = crate::pipe::handing_over(|| postcard::to_stdvec(&args_value));
        let args = args.map_err(|e| Error::codec("serialising args", e))?;
        let name = self
            .name
            .unwrap_or_else(|| format!("Process-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)));
        let Launch {
            child,
            handshake,
            log,
        } = bootstrap::launch(token, name.clone(), task, args, &self.env, method)?;
        handover.assign(child.id());
        lifecycle!(debug, pid = child.id(), name = %name, "process started");
        let cell = Arc::new(ChildCell {
            pid: child.id(),
            name,
            child: Mutex::new(child),
            signalled: AtomicBool::new(false),
            exit_seen: AtomicBool::new(false),
            log,
        });
        register(&cell);
        Ok(Process {
            waiter: Waiter {
                cell,
                state: State::Handshaking(handshake),
                start_timeout: self.start_timeout,
                _args: Box::new(args_value),
            },
            _result: PhantomData,
        })
    }
}

impl Process {
    /// Options for the next process: name, start timeout.
    ///
    /// ```
    /// let builder = multiproc::Process::builder().name("worker");
    /// # let _ = builder;
    /// ```
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder::default()
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// Starts `f(args)` in a new child process (Python's
    /// `Process(target=f, args=args).start()`).
    ///
    /// `f` is a `fn` item or a non-capturing closure; a closure that
    /// captures is a compile-time error. Several arguments go as a tuple.
    ///
    /// # Errors
    /// As [`ProcessBuilder::spawn`].
    ///
    /// ```
    /// fn print_number(n: u32) { println!("Process {n} prints {n}"); }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let procs = (0..4)
    ///         .map(|i| multiproc::Process::spawn(print_number, i))
    ///         .collect::<Result<Vec<_>, _>>()?;
    ///     for p in procs { p.join()?; }
    ///     Ok(())
    /// }
    /// ```
    pub fn spawn<F, A>(f: F, args: A) -> Result<Process<R>>
    where
        F: Fn(A) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize,
    {
        ProcessBuilder::default().spawn(f, args)
    }

    /// Waits for the child to finish and returns `f`'s value (Python's
    /// `join()`, which returns nothing; here the result comes back too).
    ///
    /// # Errors
    /// * [`ErrorKind::Panicked`]: `f` panicked; see [`Error::panic_info`].
    /// * [`ErrorKind::ProcessDied`]: the child ended without a result
    ///   (killed, `exit()`, crash); see [`Error::exit_status`].
    /// * [`ErrorKind::Handshake`]: the child never started properly.
    /// * [`ErrorKind::InvalidState`]: the result was already taken by
    ///   [`join_timeout`](Process::join_timeout), or the child reached a
    ///   start before its [`init`](crate::init) (exit code 123).
    ///
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    /// struct Stats { n: usize, mean: f64 }
    ///
    /// fn stats(v: Vec<f64>) -> Stats { Stats { n: v.len(), mean: v.iter().sum::<f64>() / v.len() as f64 } }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let p = multiproc::Process::spawn(stats, vec![1.0, 2.0, 3.0]).unwrap();
    ///     assert_eq!(p.join().unwrap(), Stats { n: 3, mean: 2.0 });
    /// }
    /// ```
    pub fn join(mut self) -> Result<R> {
        // Without a deadline `wait` only returns once the child has ended.
        let result = self.wait(None);
        self.flush_log();
        result?.ok_or_else(|| Error::new(ErrorKind::InvalidState, "join ended without a result"))
    }

    /// Waits at most `timeout` (Python's `join(timeout)`) for the child's
    /// value. If it is still running then, the error
    /// [`is_timeout`](Error::is_timeout) and nothing changed: join again
    /// later, or `terminate` it.
    ///
    /// Once it has returned a value or another error, the result is
    /// consumed: later calls return [`ErrorKind::InvalidState`].
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`join`](Process::join).
    ///
    /// ```
    /// use std::time::Duration;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let mut p = multiproc::Process::spawn(nap, 500).unwrap();
    ///     assert!(p.join_timeout(Duration::from_millis(1)).unwrap_err().is_timeout());
    ///     assert_eq!(p.join_timeout(Duration::from_secs(30)).unwrap(), 500);
    /// }
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        let result = self.wait(crate::wait::deadline_after(timeout));
        if !matches!(result, Ok(None)) {
            self.flush_log();
        }
        result?.ok_or_else(|| {
            Error::timeout(&format!(
                "Process::join_timeout: {} (pid {}) was still running at the deadline",
                self.waiter.cell.name, self.waiter.cell.pid
            ))
        })
    }

    /// [`join`](Process::join) as a `Future`, for async code (tokio, smol,
    /// any executor): it resolves to `f`'s value once the child ended.
    ///
    /// Python has no async `multiprocessing`; there one writes
    /// `await loop.run_in_executor(None, p.join)`. Here a crate thread
    /// waits for the child's exit (on Linux, on its pidfd: the OS's own
    /// readiness source for an exit) and wakes the future, which then
    /// collects the result as `join` does. The thread also wakes it once
    /// every 50 ms, so a start that never completes fails as in `join`.
    ///
    /// Cancellation: dropping the future drops the `Process`, which
    /// detaches it as any dropped `Process` is (it runs on and is reaped in
    /// the background). The child is reaped exactly once, whoever looks
    /// first: the status is kept with the child.
    ///
    /// # Errors
    /// As [`join`](Process::join).
    ///
    /// ```
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let p = multiproc::Process::spawn(square, 9).unwrap();
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     assert_eq!(rt.block_on(p.join_async()).unwrap(), 81);
    /// }
    /// ```
    pub fn join_async(self) -> impl std::future::Future<Output = Result<R>> {
        let mut this = self;
        let cell = Arc::clone(&this.waiter.cell);
        let key = (Arc::as_ptr(&cell) as usize, 0);
        async move {
            let source =
                move || -> Arc<dyn crate::async_wait::Source> { Arc::new(ExitSource { cell }) };
            let result =
                crate::async_wait::wait_for(key, source, |_| this.wait(Some(Instant::now()))).await;
            this.flush_log();
            result
        }
    }

    /// Feature `tracing`: once the child has ended, waits (bounded) until
    /// its last log records have been delivered, so that `join` returns
    /// after them.
    fn flush_log(&self) {
        if self.waiter.cell.poll_exit().is_some() {
            self.waiter.cell.log.flush();
        }
    }

    /// A check that answers `true` while the child has not ended, from
    /// any thread, for as long as it is kept (the crate's rings ask it
    /// while they wait for this child). It asks the OS about this very
    /// child (and reaps it once it ended, as [`exit_code`](Process::exit_code)
    /// does), so a zombie counts as ended and a reused pid is never
    /// mistaken for it.
    pub(crate) fn alive_check(&self) -> Arc<dyn Fn() -> bool + Send + Sync> {
        let cell = Arc::clone(&self.waiter.cell);
        Arc::new(move || cell.poll_exit().is_none())
    }

    /// [`join_timeout`](Process::join_timeout) for the crate's own pollers:
    /// `Ok(None)` while the child runs.
    pub(crate) fn poll_join(&mut self, timeout: Duration) -> Result<Option<R>> {
        self.wait(crate::wait::deadline_after(timeout))
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Result<Option<R>> {
        let pid = self.waiter.cell.pid;
        let Some(outcome) = self.waiter.wait(deadline)? else {
            return Ok(None);
        };
        match outcome {
            Outcome::Returned(bytes) => {
                crate::error::clear_custom_reason();
                postcard::from_bytes(&bytes)
                    .map(Some)
                    .map_err(|e| Error::codec("decoding the result", e).with_pid(pid))
            }
            Outcome::Panicked(info) => Err(Error::panicked(info).with_pid(pid)),
            Outcome::Rejected(why) => Err(Error::new(ErrorKind::Protocol, why).with_pid(pid)),
        }
    }
}

impl<R> Process<R> {
    /// The child's operating-system process id.
    ///
    /// ```
    /// fn id(_: ()) -> u32 { std::process::id() }
    /// fn main() {
    ///     multiproc::init();
    ///     let p = multiproc::Process::spawn(id, ()).unwrap();
    ///     let pid = p.pid();
    ///     assert_eq!(p.join().unwrap(), pid);
    /// }
    /// ```
    pub fn pid(&self) -> u32 {
        self.waiter.cell.pid
    }

    /// The child's name (`"Process-N"` unless the builder set one).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let p = multiproc::Process::builder().name("io").spawn(|_: ()| (), ()).unwrap();
    ///     assert_eq!(p.name(), "io");
    ///     p.join().unwrap();
    /// }
    /// ```
    pub fn name(&self) -> &str {
        &self.waiter.cell.name
    }

    /// `true` while the child runs (Python's `is_alive()`).
    ///
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// fn main() {
    ///     multiproc::init();
    ///     let p = multiproc::Process::spawn(nap, 200).unwrap();
    ///     assert!(p.is_alive());
    ///     p.join().unwrap();
    /// }
    /// ```
    pub fn is_alive(&self) -> bool {
        self.waiter.cell.poll_exit().is_none()
    }

    /// How the child ended, or `None` while it runs (Python's `exitcode`).
    ///
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// fn main() {
    ///     multiproc::init();
    ///     let mut p = multiproc::Process::spawn(nap, 10_000).unwrap();
    ///     assert_eq!(p.exit_code(), None);
    ///     p.kill().unwrap();
    ///     assert!(p.join_timeout(std::time::Duration::from_secs(5)).is_err());
    ///     # #[cfg(unix)]
    ///     assert_eq!(p.exit_code(), Some(multiproc::ExitStatus::Signal(9)));
    /// }
    /// ```
    pub fn exit_code(&self) -> Option<ExitStatus> {
        self.waiter.cell.poll_exit()
    }

    /// Asks the child to stop: `SIGTERM` on Unix, `TerminateProcess` on
    /// Windows (Python's `terminate()`). A child that already ended is left
    /// alone. A later [`join`](Process::join) reports
    /// [`ErrorKind::ProcessDied`].
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the OS refuses the signal.
    ///
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// fn main() {
    ///     multiproc::init();
    ///     let p = multiproc::Process::spawn(nap, 10_000).unwrap();
    ///     p.terminate().unwrap();
    ///     assert!(p.join().unwrap_err().is_process_died());
    /// }
    /// ```
    pub fn terminate(&self) -> Result<()> {
        lifecycle!(debug, pid = self.pid(), name = %self.name(), "terminating process");
        self.waiter.cell.signal(sys::terminate, true)
    }

    /// Interrupts the child: `SIGINT` on Unix, as Ctrl-C would (Python
    /// 3.14's `interrupt()`). A Rust child without a handler for it ends
    /// with [`ExitStatus::Signal(2)`](ExitStatus::Signal); one that handles
    /// `SIGINT` decides for itself. On Windows, where Python leaves it
    /// undefined, it terminates the child and reports signal 2 too. A child
    /// that already ended is left alone.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the OS refuses the signal.
    ///
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// fn main() {
    ///     multiproc::init();
    ///     let mut p = multiproc::Process::spawn(nap, 10_000).unwrap();
    ///     p.interrupt().unwrap();
    ///     assert!(p.join_timeout(std::time::Duration::from_secs(30)).unwrap_err().is_process_died());
    ///     assert_eq!(p.exit_code(), Some(multiproc::ExitStatus::Signal(2)));
    /// }
    /// ```
    pub fn interrupt(&self) -> Result<()> {
        lifecycle!(debug, pid = self.pid(), name = %self.name(), "interrupting process");
        self.waiter.cell.signal(sys::interrupt, true)
    }

    /// Kills the child: `SIGKILL` on Unix, `TerminateProcess` on Windows
    /// (Python's `kill()`).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the OS refuses the signal.
    ///
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// fn main() {
    ///     multiproc::init();
    ///     let p = multiproc::Process::spawn(nap, 10_000).unwrap();
    ///     p.kill().unwrap();
    ///     let err = p.join().unwrap_err();
    ///     assert_eq!(err.pid().is_some(), true);
    /// }
    /// ```
    pub fn kill(&self) -> Result<()> {
        lifecycle!(debug, pid = self.pid(), name = %self.name(), "killing process");
        self.waiter.cell.signal(sys::kill, true)
    }
}

/// What an async waiter thread watches for a `join_async`: the child's
/// exit.
struct ExitSource {
    cell: Arc<ChildCell>,
}

impl crate::async_wait::Source for ExitSource {
    fn ready(&self) -> bool {
        self.cell.poll_exit().is_some()
    }

    fn park(&self, slice: Duration) {
        sys::wait_for_exit(self.cell.pid, slice);
    }

    fn healthy(&self) -> bool {
        true
    }

    fn periodic(&self) -> bool {
        true
    }
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.waiter.cell.name)
            .field("pid", &self.waiter.cell.pid)
            .finish_non_exhaustive()
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        if matches!(self.waiter.state, State::Finished) {
            return;
        }
        let mut state = std::mem::replace(&mut self.waiter.state, State::Finished);
        if let State::Handshaking(handshake) = &mut state {
            // A child that has exited never reads its handshake rendezvous
            // again: release it now rather than in the reaper, so nothing
            // of this start outlives the drop (a pool drops the workers it
            // has just killed and reaped, one of them maybe still starting).
            if self.waiter.cell.poll_exit().is_some() {
                handshake.close();
            }
        }
        // Detach: a reaper thread keeps the channels open (so the child is
        // not told its parent left) and reaps the child when it ends.
        let cell = Arc::clone(&self.waiter.cell);
        let mut waiter = Waiter {
            cell: Arc::clone(&cell),
            state,
            start_timeout: self.waiter.start_timeout,
            _args: std::mem::replace(&mut self.waiter._args, Box::new(())),
        };
        let reaper = std::thread::Builder::new()
            .name(format!("multiproc-reaper-{}", cell.pid))
            .spawn(move || {
                // Whatever the child returns, nobody is listening any more.
                if waiter.wait(None).is_err() {
                    waiter.cell.wait_exit(None);
                }
            });
        if reaper.is_err() {
            // No thread to wait with: a killed child beats an unreaped one.
            let _ = cell.signal(sys::kill, false);
            cell.wait_exit(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_stays_the_size_of_what_is_alive() {
        let mut registry = Vec::new();
        let alive: Vec<Arc<u32>> = (0..10).map(Arc::new).collect();
        for cell in &alive {
            push_pruned(&mut registry, cell);
        }
        // 20 000 children spawned and joined: each `Process` gone at once.
        for i in 0..20_000 {
            let cell = Arc::new(i);
            push_pruned(&mut registry, &cell);
        }
        assert!(
            registry.capacity() <= 64,
            "{} entries kept ({} capacity) for 10 live children",
            registry.len(),
            registry.capacity()
        );
        // Nothing alive was dropped.
        for cell in &alive {
            assert!(registry.iter().any(|w| w.as_ptr() == Arc::as_ptr(cell)));
        }
    }
}
