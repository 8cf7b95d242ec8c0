//! `Process`: one function run in a child process, with a typed result.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{self, Closed, Handshake, Launch, Link, Outcome};
use crate::error::{Error, ErrorKind, Result};
use crate::exit_status::ExitStatus;
use crate::sys;
use crate::task::TaskRef;
use crate::wait::Wait;

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

/// How long a start that a handshake generation claimed (it sends the
/// child its task) may take to report its link once the child exited or
/// the start timed out. Sending a `Config` takes microseconds.
const CLAIMED_GRACE: Duration = Duration::from_secs(5);

/// The OS child, shared by its `Process` and the registry.
struct ChildCell {
    pid: u32,
    name: String,
    child: Mutex<std::process::Child>,
    /// Set once the user terminated or killed the child: its death is then
    /// `ProcessDied`, even if it happened before the handshake.
    signalled: AtomicBool,
}

impl ChildCell {
    /// Non-blocking: the exit status if the child has ended (and reaps it).
    fn poll_exit(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match child.try_wait() {
            Ok(Some(status)) => Some(sys::exit_status(status)),
            Ok(None) => None,
            // ECHILD and friends: nothing left to wait for.
            Err(_) => Some(ExitStatus::Code(-1)),
        }
    }

    /// Waits for the child to end, until `deadline`.
    fn wait_exit(&self, deadline: Option<Instant>) -> Option<ExitStatus> {
        let wait = Wait::new(deadline);
        loop {
            if let Some(status) = self.poll_exit() {
                return Some(status);
            }
            // Sleep until the child exits or a slice passes, without holding
            // the lock (is_alive, kill and active_children take it too).
            sys::wait_for_exit(self.pid, wait.slice()?);
        }
    }

    /// Sends `how` unless the child already ended. `by_user` marks a
    /// `terminate()`/`kill()` call (see `signalled`), as opposed to the
    /// crate's own clean-up of a child that failed to start.
    fn signal(
        &self,
        how: fn(&mut std::process::Child) -> std::io::Result<()>,
        by_user: bool,
    ) -> Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        // Never signal a reaped pid: it may already belong to someone else.
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        if by_user {
            self.signalled.store(true, Ordering::Relaxed);
        }
        how(&mut child).map_err(|e| Error::io("signalling the child", e).with_pid(self.pid))
    }
}

/// Where a child is in its life, from the parent's side.
enum State {
    /// Started; the handshake (its generations, see `bootstrap`) is in
    /// flight.
    Handshaking(Handshake),
    Running(Link),
    /// The outcome arrived; the child is exiting.
    Exiting(Outcome),
    Finished,
}

/// The parent's side of one child: its channels and the state machine that
/// turns them into an [`Outcome`] or an error. Not generic, so a dropped
/// `Process<R>` can hand it to a reaper thread.
struct Waiter {
    cell: Arc<ChildCell>,
    state: State,
    start_timeout: Duration,
    /// The task's arguments, kept until the child has ended: shared-memory
    /// handles in them (a `Queue`, a `SharedArray`…) are opened by the child
    /// through this process's descriptors, which must stay open meanwhile.
    _args: Box<dyn std::any::Any + Send>,
}

impl Waiter {
    /// Drives the state machine until the child has ended and its outcome
    /// is known (`Ok(Some)`), it failed (`Err`), or `deadline` passed.
    fn wait(&mut self, deadline: Option<Instant>) -> Result<Option<Outcome>> {
        loop {
            match std::mem::replace(&mut self.state, State::Finished) {
                State::Handshaking(mut handshake) => {
                    match self.wait_handshake(&mut handshake, deadline)? {
                        Some(link) => self.state = State::Running(link),
                        None => {
                            self.state = State::Handshaking(handshake);
                            return Ok(None);
                        }
                    }
                }
                State::Running(mut link) => {
                    let received = match deadline {
                        None => link.results.recv().map(Some),
                        Some(d) => link
                            .results
                            .recv_timeout(d.saturating_duration_since(Instant::now())),
                    };
                    match received {
                        Ok(Some(outcome)) => self.state = State::Exiting(outcome),
                        Ok(None) => {
                            self.state = State::Running(link);
                            return Ok(None);
                        }
                        // Disconnected, or the channel broke: the child is
                        // gone without a result. Say how it ended.
                        Err(_) => return Err(self.died()),
                    }
                }
                State::Exiting(outcome) => {
                    if self.cell.wait_exit(deadline).is_none() {
                        self.state = State::Exiting(outcome);
                        return Ok(None);
                    }
                    return Ok(Some(outcome));
                }
                State::Finished => {
                    return Err(Error::new(
                        ErrorKind::InvalidState,
                        "the process was already joined",
                    )
                    .with_pid(self.cell.pid))
                }
            }
        }
    }

    /// Waits for the start's result. The child's start is decided here
    /// when it exits or the start timeout passes: `close` then revokes the
    /// claim, so a start nobody claimed can never send a `Config` later and
    /// its error is final. A start a generation claimed (its `Config` went,
    /// or goes, to the child) waits for that generation's link, bounded.
    fn wait_handshake(
        &self,
        handshake: &mut Handshake,
        deadline: Option<Instant>,
    ) -> Result<Option<Link>> {
        let start_deadline = handshake.started() + self.start_timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            let mut slice = pause;
            if let Some(d) = deadline {
                slice = slice.min(d.saturating_duration_since(Instant::now()));
            }
            match handshake.recv_timeout(slice) {
                Ok(Ok(link)) => return Ok(Some(link)),
                Ok(Err(e)) => return Err(self.start_failed(e)),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(
                        Error::new(ErrorKind::Handshake, "handshake thread vanished")
                            .with_pid(self.cell.pid),
                    )
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            match handshake.closed_at() {
                None => {
                    let exited = self.cell.poll_exit().is_some();
                    if exited || now >= start_deadline {
                        let closed = handshake.close();
                        if closed.claimed.is_none() {
                            return Err(self.never_started(&closed, exited));
                        }
                        // Claimed: its link (or error) follows at once.
                    }
                }
                Some(at) if now >= at + CLAIMED_GRACE => {
                    let _ = self.cell.signal(sys::kill, false);
                    return Err(Error::new(
                        ErrorKind::Handshake,
                        "the handshake thread that sent the task did not report",
                    )
                    .with_pid(self.cell.pid));
                }
                Some(_) => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// The start failed on the parent's side (the generations ran out, or
    /// sending the task failed): the child gets no task; make sure it ends.
    fn start_failed(&self, e: Error) -> Error {
        // A send that failed because the child was dying: keep its status.
        let dying = self
            .cell
            .wait_exit(Some(Instant::now() + Duration::from_millis(100)));
        let status = match dying {
            Some(status) => Some(status),
            None => {
                let _ = self.cell.signal(sys::kill, false);
                self.cell
                    .wait_exit(Some(Instant::now() + Duration::from_secs(1)))
            }
        };
        match status {
            // Terminated or killed by the user while starting.
            Some(_) if self.cell.signalled.load(Ordering::Relaxed) => self.died(),
            Some(s) => e.with_status(s),
            None => e,
        }
    }

    /// The start was closed with no claim: the child exited before a
    /// generation took its hello, or the start timeout passed. No task code
    /// ran, and none will.
    fn never_started(&self, closed: &Closed, exited: bool) -> Error {
        if !exited {
            let _ = self.cell.signal(sys::kill, false);
        }
        let status = self
            .cell
            .wait_exit(Some(Instant::now() + Duration::from_secs(1)));
        if status.is_some() && self.cell.signalled.load(Ordering::Relaxed) {
            return self.died();
        }
        let mut what = if exited {
            match status {
                Some(ExitStatus::Code(bootstrap::EXIT_NOT_INITIALISED)) => {
                    let err = bootstrap::not_initialised(
                        "the child reached a spawn before multiproc::init() made it a worker",
                    );
                    return err
                        .with_pid(self.cell.pid)
                        .with_status(status.unwrap_or(ExitStatus::Code(-1)));
                }
                Some(ExitStatus::Code(code))
                    if code != bootstrap::EXIT_BOOTSTRAP_FAILED
                        && code != bootstrap::EXIT_PARENT_GONE =>
                {
                    // It ran to an end of its own: `main` never reached
                    // `init()` there.
                    "the child exited before connecting (did its `main` reach \
                     `multiproc::init()`? call it first in `main`)"
                        .to_string()
                }
                _ => "the child exited before connecting".to_string(),
            }
        } else {
            format!(
                "the child did not complete its handshake within {:?}",
                self.start_timeout
            )
        };
        if closed.refused > 0 {
            what.push_str(&format!(
                "; refused {} other connections (the last: {})",
                closed.refused,
                closed.last_refusal.as_deref().unwrap_or("?")
            ));
        }
        let err = Error::new(ErrorKind::Handshake, what).with_pid(self.cell.pid);
        match status {
            Some(s) => err.with_status(s),
            None => err,
        }
    }

    fn died(&self) -> Error {
        let mut err =
            Error::new(ErrorKind::ProcessDied, self.cell.name.clone()).with_pid(self.cell.pid);
        if let Some(status) = self
            .cell
            .wait_exit(Some(Instant::now() + Duration::from_secs(5)))
        {
            err = err.with_status(status);
        }
        err
    }
}

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
}

impl Default for ProcessBuilder {
    fn default() -> Self {
        ProcessBuilder {
            name: None,
            start_timeout: Duration::from_secs(10),
            env: Vec::new(),
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
        let token = bootstrap::random_token()?;
        let task = TaskRef::of(&f, bootstrap::task_key(&token));
        let args_value = args;
        let args =
            postcard::to_stdvec(&args_value).map_err(|e| Error::codec("serialising args", e))?;
        let name = self
            .name
            .unwrap_or_else(|| format!("Process-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed)));
        let Launch { child, handshake } =
            bootstrap::launch(token, name.clone(), task, args, &self.env)?;
        let cell = Arc::new(ChildCell {
            pid: child.id(),
            name,
            child: Mutex::new(child),
            signalled: AtomicBool::new(false),
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
        self.wait(None)?
            .ok_or_else(|| Error::new(ErrorKind::InvalidState, "join ended without a result"))
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
        self.wait(crate::wait::deadline_after(timeout))?
            .ok_or_else(|| {
                Error::timeout(&format!(
                    "Process::join_timeout: {} (pid {}) was still running at the deadline",
                    self.waiter.cell.name, self.waiter.cell.pid
                ))
            })
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
            Outcome::Returned(bytes) => postcard::from_bytes(&bytes)
                .map(Some)
                .map_err(|e| Error::codec("decoding the result", e).with_pid(pid)),
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
        self.waiter.cell.signal(sys::terminate, true)
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
        self.waiter.cell.signal(sys::kill, true)
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
