//! Python's `concurrent.futures` over the pool: [`Pool::submit`] and its
//! [`Task`] handle (a `Future`), [`as_completed`], [`wait_tasks`] and
//! [`Pool::shutdown`].
//!
//! A task is an item of its function's grouped job (`group.rs`), its
//! outcome going to its [`Task`]'s state: tasks of a function measured
//! short travel several to a frame, each answered on its own
//! (docs/ARCHITECTURE.md, Pool, "Submitted tasks travel in groups"). A
//! pool with a task timeout or a task budget per worker, or an item too
//! large for a group, makes it a job of its own instead. Either way it
//! may be cancelled while it runs: its worker is killed and replaced
//! (`Core::cancel_task`, `Core::cancel_item`; docs/ARCHITECTURE.md, Pool,
//! "Futures").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::callbacks::{Callbacks, Fire};
use super::core::{Core, Job, State};
use super::driver::{Shared, TICK};
use super::jobs::{decode_one, Next, OneItem, Sink, Source};
use super::wakers::Wakers;
use super::wire::ChunkDesc;
use super::Pool;
use crate::error::{Error, ErrorKind, Result};
use crate::task::TaskRef;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A callback waiting for its task, ready to run.
type Pending = Box<dyn FnOnce() + Send>;

/// What a task's job delivers to, and its handles read.
pub(super) struct TaskState<R> {
    st: Mutex<Outcome<R>>,
    /// The outcome is final. Read without the lock by every query and by
    /// the waits' `done` checks.
    done: AtomicBool,
    /// Its task went to a worker.
    sent: AtomicBool,
    /// Final, and an error of kind `Cancelled`.
    cancelled: AtomicBool,
    /// Final, and an error of another kind.
    failed: AtomicBool,
    /// The pool's callback thread, for `add_done_callback`.
    queue: Arc<Callbacks>,
    /// Futures and streams waiting for it to be done (`Task` awaited,
    /// `AsCompletedStream`).
    pub(super) wakers: Wakers,
}

struct Outcome<R> {
    /// The value, delivered before its task is reported done.
    value: Option<R>,
    result: Option<Result<R>>,
    taken: bool,
    callbacks: Vec<Pending>,
}

impl<R> TaskState<R> {
    fn new(queue: Arc<Callbacks>) -> TaskState<R> {
        TaskState {
            st: Mutex::new(Outcome {
                value: None,
                result: None,
                taken: false,
                callbacks: Vec::new(),
            }),
            done: AtomicBool::new(false),
            sent: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            queue,
            wakers: Wakers::default(),
        }
    }

    /// Takes the result of a task that is done, once.
    fn take(&self) -> Result<R> {
        let mut st = lock(&self.st);
        if st.taken {
            return Err(taken());
        }
        st.taken = true;
        st.result
            .take()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::InvalidState, "no result")))
    }

    /// Makes `result` final (unless it is already) and queues the
    /// callbacks. Under the pool's lock: it only queues.
    fn finish(&self, result: Result<R>) {
        self.finish_locked(lock(&self.st), result);
    }

    /// [`finish`](Self::finish) under the state lock the caller holds.
    fn finish_locked(&self, mut st: MutexGuard<'_, Outcome<R>>, result: Result<R>) {
        // Final already: also once its value was taken (an awaited task
        // whose job settles after the awaiter took the value).
        if st.result.is_some() || st.taken {
            return;
        }
        match &result {
            // SYNC: Relaxed: published by the Release store of `done` below.
            Err(e) if e.is_cancelled() => self.cancelled.store(true, Ordering::Relaxed),
            Err(_) => self.failed.store(true, Ordering::Relaxed),
            Ok(_) => {}
        }
        st.result = Some(result);
        // SYNC: Release, under the state lock; partner: the Acquire load
        // in `done`.
        self.done.store(true, Ordering::Release);
        let callbacks = std::mem::take(&mut st.callbacks);
        drop(st);
        for f in callbacks {
            self.queue.queue(Arc::new(Once(Mutex::new(Some(f)))));
        }
        self.wakers.wake_all();
    }

    pub(super) fn done(&self) -> bool {
        // SYNC: Acquire; partner: the Release store in `finish`.
        self.done.load(Ordering::Acquire)
    }
}

/// One done-callback, run once on the callback thread.
struct Once(Mutex<Option<Pending>>);

impl Fire for Once {
    fn fire(&self) {
        let f = lock(&self.0).take();
        if let Some(f) = f {
            // A panic is printed by the panic hook and stops here.
            let _ = crate::panic::catch_panic(f);
        }
    }
}

impl<R: DeserializeOwned + Send + 'static> Sink for TaskState<R> {
    fn deliver(&self, _first: u64, count: u32, bytes: &[u8]) -> Result<()> {
        let value = decode_one(bytes, count)?;
        let mut st = lock(&self.st);
        if st.result.is_none() {
            st.value = Some(value);
        }
        Ok(())
    }

    fn complete(&self, bytes: &[u8]) -> Result<()> {
        let value = decode_one(bytes, 1)?;
        self.finish_locked(lock(&self.st), Ok(value));
        Ok(())
    }

    fn mark_sent(&self) {
        // SYNC: Relaxed: a status hint, read by `running` only.
        self.sent.store(true, Ordering::Relaxed);
    }

    fn task_done(&self, _items: u64) {
        // One hold of the lock: the value `deliver` left, made final.
        let mut st = lock(&self.st);
        let value = st.value.take();
        self.finish_locked(
            st,
            value.ok_or_else(|| Error::new(ErrorKind::Protocol, "a task without result")),
        );
    }

    fn fail(&self, error: Error) {
        self.finish(Err(error));
    }

    fn settle(&self) {
        // Usually done already (its result or error came first): no error
        // to build then.
        if !self.done() {
            self.finish(Err(Error::new(
                ErrorKind::Protocol,
                "the task ended without a result",
            )));
        }
    }
}

/// The one-item source of a task: notes when the item goes to a worker
/// (`Task::running`).
struct Submitted<A, R> {
    item: OneItem<A>,
    state: Arc<TaskState<R>>,
}

impl<A: Serialize + Send + 'static, R: Send + 'static> Source for Submitted<A, R> {
    fn next(&mut self, frame: &mut Vec<u8>, job: u64, soft: usize, hard: usize) -> Next {
        let next = self.item.next(frame, job, soft, hard);
        if matches!(next, Next::Task { .. }) {
            // SYNC: Relaxed: a status hint, read by `running` only.
            self.state.sent.store(true, Ordering::Relaxed);
        }
        next
    }

    fn is_done(&self) -> bool {
        self.item.is_done()
    }
}

/// A task started by [`Pool::submit`] (Python's `concurrent.futures.Future`
/// from `ProcessPoolExecutor.submit`).
///
/// | Python | `multiproc` |
/// |---|---|
/// | `fut = ex.submit(f, x)` | `let t = pool.submit(f, x)?` |
/// | `fut.result()`, `fut.result(timeout=d)` | [`t.result()`](Task::result), [`t.result_timeout(d)`](Task::result_timeout), [`t.into_result()`](Task::into_result) |
/// | `fut.done()`, `fut.running()`, `fut.cancelled()` | [`done`](Task::done), [`running`](Task::running), [`cancelled`](Task::cancelled) |
/// | `fut.cancel()` | [`cancel`](Task::cancel) — also stops a *running* task |
/// | `fut.add_done_callback(fn)` | [`add_done_callback`](Task::add_done_callback) |
/// | `fut.exception()` | `t.result().err()` |
///
/// **Dropping a `Task` never cancels it**: the task runs to completion and
/// its result is discarded (as dropping a Python future does).
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2)?;      // ProcessPoolExecutor(2)
///     let t = pool.submit(square, 7)?;          // ex.submit(square, 7)
///     assert_eq!(t.result()?, 49);              // fut.result()
///     assert!(t.done() && !t.cancelled());
///     Ok(())
/// }
/// ```
pub struct Task<R> {
    pub(super) shared: Arc<Shared>,
    pub(super) state: Arc<TaskState<R>>,
    id: u64,
    /// Its ticket in the grouped job `id` (`None`: a job of its own).
    ticket: Option<u64>,
    /// The key of this handle's waker while it is awaited (`Future`).
    pub(super) waker: Option<u64>,
    /// Awaited: its first poll drove the pool briefly already.
    pub(super) drove: bool,
}

impl<R> Task<R> {
    /// A second handle on the same task (for callbacks; never public:
    /// one owner decides about cancelling).
    fn view(&self) -> Task<R> {
        Task {
            shared: Arc::clone(&self.shared),
            state: Arc::clone(&self.state),
            id: self.id,
            ticket: self.ticket,
            waker: None,
            drove: false,
        }
    }

    /// `true` once the task finished, failed or was cancelled (Python's
    /// `done()`).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let t = pool.submit(|x: u8| x, 1).unwrap();
    ///     t.result().unwrap();
    ///     assert!(t.done());
    /// }
    /// ```
    pub fn done(&self) -> bool {
        self.is_done() || {
            self.nudge();
            false
        }
    }

    /// `done()` without the nudge: for the crate's own waits, which drive.
    fn is_done(&self) -> bool {
        self.state.done()
    }

    /// Nobody may be driving: a result waiting in a ring needs the pump to
    /// be seen (`Shared::kick`). Its own failure to start is left to a
    /// wait, which drives.
    fn nudge(&self) {
        let _ = self.shared.ensure_pump();
    }

    /// `true` while the task is on a worker: sent, and not done yet
    /// (Python's `running()`, which likewise counts a task handed to a
    /// worker's queue).
    ///
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let t = pool.submit(nap, 100).unwrap();
    ///     t.result().unwrap();
    ///     assert!(!t.running());
    /// }
    /// ```
    pub fn running(&self) -> bool {
        if self.is_done() {
            return false;
        }
        self.nudge();
        // SYNC: Relaxed: a status hint (see `Submitted::next`).
        self.state.sent.load(Ordering::Relaxed)
    }

    /// `true` if the task was cancelled ([`cancel`](Task::cancel), or
    /// [`Pool::shutdown`] with `cancel_futures`; Python's `cancelled()`).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let t = pool.submit(|x: u8| x, 1).unwrap();
    ///     t.result().unwrap();
    ///     assert!(!t.cancelled());
    /// }
    /// ```
    pub fn cancelled(&self) -> bool {
        // SYNC: Relaxed after the Acquire in `done`, which publishes it.
        self.is_done() && self.state.cancelled.load(Ordering::Relaxed)
    }

    /// `true` once the task failed with an error other than a
    /// cancellation (what `ReturnWhen::FirstException` waits for).
    fn failed(&self) -> bool {
        // SYNC: as in `cancelled`.
        self.is_done() && self.state.failed.load(Ordering::Relaxed)
    }

    /// Cancels the task (Python's `cancel()`), **also while it runs**:
    ///
    /// * not sent to a worker yet: it never will be;
    /// * at a worker, not started: the worker skips it;
    /// * running: its worker is killed and replaced (what a task timeout
    ///   does), and the tasks queued behind it on that worker are sent
    ///   again to others, so no other task is affected. The cost is one
    ///   worker restart (an exec, plus the pool's initializer). One
    ///   exception: a task that went to its worker in a group with
    ///   others (only tasks of a function measured under about 10 µs a
    ///   call do) is left to finish, and its result is dropped: killing
    ///   the worker would lose its group-mates' answers, which travel
    ///   together, for a few microseconds of work;
    /// * already finished or failed: nothing changes and it returns
    ///   `false`, as in Python. Already cancelled: `true`.
    ///
    /// Once it returns `true`, [`done`](Task::done) and
    /// [`cancelled`](Task::cancelled) are `true` and
    /// [`result`](Task::result) gives an error of kind
    /// [`ErrorKind::Cancelled`]. A task whose worker finished it in the
    /// instant before the kill still counts as cancelled (its result is
    /// dropped); a task queued behind it that the worker had just begun
    /// may then run twice.
    ///
    /// Python's `ProcessPoolExecutor` cannot cancel a running task (its
    /// `cancel()` returns `False`); pebble kills the worker, as here.
    ///
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let t = pool.submit(nap, 60_000).unwrap();
    ///     assert!(t.cancel());
    ///     assert!(t.cancelled());
    ///     assert!(t.result().unwrap_err().is_cancelled());
    /// }
    /// ```
    pub fn cancel(&self) -> bool {
        if self.is_done() {
            return self.cancelled();
        }
        let mut core = self.shared.lock();
        // A result that is in counts: the task is done, not cancelled.
        core.poll_results();
        let err = Error::new(ErrorKind::Cancelled, "Task::cancel was called");
        let ok = match self.ticket {
            Some(ticket) => core.cancel_item(self.id, ticket, err),
            None => core.cancel_task(self.id, err),
        };
        drop(core);
        self.shared.notify();
        self.shared.doorbell.ring_always();
        ok || self.cancelled()
    }

    /// Waits until the task is done or `deadline` passes; `true` if done.
    pub(super) fn wait_done(&self, deadline: Option<Instant>) -> bool {
        wait_for(std::slice::from_ref(self), &|| self.is_done(), deadline)
    }

    /// Calls `f(&task)` once the task is done (Python's
    /// `add_done_callback(fn)`): on the pool's callback thread
    /// (`multiproc-pool-callbacks`, as for
    /// [`Pool::apply_async_with`]), or at once on this thread if the
    /// task is done already. Each callback runs once; several run in the
    /// order they were added. A panic in `f` is printed on stderr and
    /// goes no further. [`Pool::join`] and [`Pool::terminate`] return
    /// only once the callbacks of finished tasks ran.
    ///
    /// ```
    /// use std::sync::mpsc;
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let t = pool.submit(|x: u32| x + 1, 1).unwrap();
    ///     let (tx, rx) = mpsc::channel();
    ///     t.add_done_callback(move |t| tx.send(t.result().unwrap()).unwrap());
    ///     assert_eq!(rx.recv().unwrap(), 2);
    /// }
    /// ```
    pub fn add_done_callback(&self, f: impl FnOnce(&Task<R>) + Send + 'static)
    where
        R: Send + 'static,
    {
        let view = self.view();
        let call: Pending = Box::new(move || f(&view));
        let mut st = lock(&self.state.st);
        if st.result.is_some() || st.taken {
            drop(st);
            call();
        } else {
            st.callbacks.push(call);
            drop(st);
            // Someone must drive for the callback to run unasked.
            self.nudge();
        }
    }

    /// Waits for the task and takes its value (no `Clone` needed); a
    /// later [`result`](Task::result) on a handle a callback got then
    /// says [`ErrorKind::InvalidState`].
    ///
    /// # Errors
    /// As [`result`](Task::result).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let t = pool.submit(|n: usize| vec![0u8; n], 3).unwrap();
    ///     assert_eq!(t.into_result().unwrap(), [0, 0, 0]);
    /// }
    /// ```
    pub fn into_result(self) -> Result<R> {
        self.wait_done(None);
        self.take_result()
    }

    /// Takes the result of a task that is done, once.
    pub(super) fn take_result(&self) -> Result<R> {
        self.state.take()
    }
}

impl<R> Drop for Task<R> {
    fn drop(&mut self) {
        // An awaited handle dropped mid-wait: its waker goes, the task
        // goes on (dropping never cancels).
        self.state.wakers.remove(&mut self.waker);
    }
}

fn taken() -> Error {
    Error::new(ErrorKind::InvalidState, "the result was already taken")
}

impl<R: Clone> Task<R> {
    /// Waits for the task and returns its value (Python's `result()`);
    /// may be asked again. See [`into_result`](Task::into_result) for a
    /// value that is not `Clone`.
    ///
    /// # Errors
    /// What [`Pool::apply`] gives for the same failure: the panic
    /// ([`ErrorKind::Panicked`], with message and location), a worker
    /// that died ([`ErrorKind::ProcessDied`], its pid and signal or exit
    /// code), [`ErrorKind::Timeout`] past
    /// [`PoolBuilder::task_timeout`](crate::PoolBuilder::task_timeout),
    /// [`ErrorKind::InvalidState`] if the pool was terminated; and
    /// [`ErrorKind::Cancelled`] for a cancelled task (Python's
    /// `CancelledError`).
    ///
    /// ```
    /// fn fragile(x: u32) -> u32 { assert!(x != 3, "three"); x }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let t = pool.submit(fragile, 3).unwrap();
    ///     let e = t.result().unwrap_err();
    ///     assert_eq!(e.panic_info().unwrap().message(), "three");
    /// }
    /// ```
    pub fn result(&self) -> Result<R> {
        self.wait_done(None);
        self.read()
    }

    /// As [`result`](Task::result), waiting at most `timeout` (Python's
    /// `result(timeout)`); nothing changes when it times out.
    ///
    /// # Errors
    /// An error that [`is_timeout`](Error::is_timeout) if the task is
    /// not done in time; otherwise as [`result`](Task::result).
    ///
    /// ```
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let t = pool.submit(nap, 300).unwrap();
    ///     assert!(t.result_timeout(std::time::Duration::from_millis(1)).unwrap_err().is_timeout());
    ///     assert_eq!(t.result_timeout(std::time::Duration::from_secs(60)).unwrap(), 300);
    /// }
    /// ```
    pub fn result_timeout(&self, timeout: Duration) -> Result<R> {
        if !self.wait_done(crate::wait::deadline_after(timeout)) {
            return Err(Error::timeout(
                "Task::result_timeout: the task was not done in time (it goes on)",
            ));
        }
        self.read()
    }

    fn read(&self) -> Result<R> {
        let st = lock(&self.state.st);
        match &st.result {
            Some(Ok(v)) => Ok(v.clone()),
            Some(Err(e)) => Err(e.duplicate()),
            None if st.taken => Err(taken()),
            None => Err(Error::new(ErrorKind::InvalidState, "the task is not done")),
        }
    }
}

impl<R> std::fmt::Debug for Task<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("done", &self.is_done())
            .field("running", &self.running())
            .field("cancelled", &self.cancelled())
            .finish_non_exhaustive()
    }
}

/// Waits until `until()` holds or `deadline` passes, driving the pool of
/// a task not done yet meanwhile (the pool's own wait: the doorbell, no
/// spinning once idle); `true` if `until()` holds. Tasks of several pools
/// are looked at every tick.
fn wait_for<R>(tasks: &[Task<R>], until: &dyn Fn() -> bool, deadline: Option<Instant>) -> bool {
    // Tasks submitted in a batch are driven by the pump: a caller taking
    // their results in turn mostly finds the next one due within
    // microseconds. Look for it briefly (while the pump drives) before
    // taking the driver's lock, which would make the pump hand the pool
    // over and back per task.
    if let Some(t) = tasks.iter().find(|t| !t.is_done()) {
        if t.shared.look_while_driven(deadline, until) {
            return true;
        }
    }
    loop {
        if until() {
            return true;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return false;
        }
        let Some(t) = tasks.iter().find(|t| !t.is_done()) else {
            return until();
        };
        let one_pool = tasks.iter().all(|u| Arc::ptr_eq(&u.shared, &t.shared));
        let slice = if one_pool {
            deadline
        } else {
            Some(deadline.map_or(now + TICK, |d| d.min(now + TICK)))
        };
        let (core, _) = t
            .shared
            .wait_until(&|c: &Core| until() || c.state == State::Terminated, slice);
        let terminated = core.state == State::Terminated;
        drop(core);
        if terminated && !until() {
            // Terminated: its tasks fail as their workers are reaped
            // (`Pool::terminate` waits for that); look again shortly.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The tasks in the order they complete (Python's
/// `concurrent.futures.as_completed(fs, timeout)`): each task once, those
/// done already first, then as they finish. With a `timeout`, an item
/// that [`is_timeout`](Error::is_timeout) ends the iteration once it
/// passes (Python raises `TimeoutError`); `None` waits as long as it
/// takes. The wait sleeps on the pool's doorbell, as
/// [`Task::result`] does.
///
/// ```
/// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2)?;
///     let tasks = vec![pool.submit(nap, 1_000)?, pool.submit(nap, 0)?];
///     // for fut in as_completed(fs): print(fut.result())
///     let order: Vec<u64> = multiproc::as_completed(&tasks, None)
///         .map(|t| t?.result())
///         .collect::<multiproc::Result<_>>()?;
///     assert_eq!(order, [0, 1_000]);
///     Ok(())
/// }
/// ```
pub fn as_completed<R>(tasks: &[Task<R>], timeout: Option<Duration>) -> AsCompleted<'_, R> {
    AsCompleted {
        tasks,
        yielded: vec![false; tasks.len()],
        left: tasks.len(),
        deadline: timeout.and_then(crate::wait::deadline_after),
        timed_out: false,
    }
}

/// The iterator of [`as_completed`].
///
/// ```
/// fn main() {
///     multiproc::init();
///     let pool = multiproc::Pool::new(1).unwrap();
///     let tasks = [pool.submit(|x: u8| x, 1).unwrap()];
///     let it: multiproc::AsCompleted<'_, u8> = multiproc::as_completed(&tasks, None);
///     assert_eq!(it.count(), 1);
/// }
/// ```
pub struct AsCompleted<'a, R> {
    pub(super) tasks: &'a [Task<R>],
    pub(super) yielded: Vec<bool>,
    pub(super) left: usize,
    pub(super) deadline: Option<Instant>,
    pub(super) timed_out: bool,
}

impl<'a, R> AsCompleted<'a, R> {
    pub(super) fn take_done(&mut self) -> Option<&'a Task<R>> {
        let i = (0..self.tasks.len()).find(|&i| !self.yielded[i] && self.tasks[i].is_done())?;
        self.yielded[i] = true;
        self.left -= 1;
        Some(&self.tasks[i])
    }
}

impl<'a, R> Iterator for AsCompleted<'a, R> {
    type Item = Result<&'a Task<R>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.timed_out {
            return None;
        }
        loop {
            if let Some(t) = self.take_done() {
                return Some(Ok(t));
            }
            let (tasks, yielded) = (self.tasks, &self.yielded);
            let any = || (0..tasks.len()).any(|i| !yielded[i] && tasks[i].is_done());
            if !wait_for(self.tasks, &any, self.deadline) {
                self.timed_out = true;
                return Some(Err(Error::timeout(&format!(
                    "as_completed: {} of {} tasks were not done in time",
                    self.left,
                    self.tasks.len()
                ))));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left + 1))
    }
}

impl<R> std::fmt::Debug for AsCompleted<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("left", &self.left)
            .finish_non_exhaustive()
    }
}

/// When [`wait_tasks`] returns (Python's `FIRST_COMPLETED`,
/// `FIRST_EXCEPTION`, `ALL_COMPLETED`).
///
/// ```
/// assert_ne!(multiproc::ReturnWhen::FirstCompleted, multiproc::ReturnWhen::AllCompleted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReturnWhen {
    /// As soon as any task is done (finished, failed or cancelled).
    FirstCompleted,
    /// As soon as any task fails (an error other than a cancellation, as
    /// in Python); if none does, once all are done.
    FirstException,
    /// Once every task is done.
    AllCompleted,
}

/// Waits for tasks (Python's `concurrent.futures.wait(fs, timeout,
/// return_when)`) and returns `(done, not_done)`, each in the order of
/// `tasks`. A `timeout` that passes is not an error: `not_done` then
/// holds what is left (as in Python); `None` waits as long as it takes.
///
/// Named `wait_tasks` because [`multiproc::wait`](crate::wait) is
/// `multiprocessing.connection.wait`, for connections.
///
/// ```
/// use multiproc::ReturnWhen;
///
/// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2)?;
///     let tasks = vec![pool.submit(nap, 0)?, pool.submit(nap, 60_000)?];
///     // done, not_done = wait(fs, return_when=FIRST_COMPLETED)
///     let (done, not_done) = multiproc::wait_tasks(&tasks, ReturnWhen::FirstCompleted, None);
///     assert_eq!((done.len(), not_done.len()), (1, 1));
///     assert_eq!(done[0].result()?, 0);
///     assert!(not_done[0].cancel());
///     Ok(())
/// }
/// ```
#[allow(clippy::type_complexity)]
pub fn wait_tasks<R>(
    tasks: &[Task<R>],
    return_when: ReturnWhen,
    timeout: Option<Duration>,
) -> (Vec<&Task<R>>, Vec<&Task<R>>) {
    let all = || tasks.iter().all(Task::done);
    let until = || match return_when {
        ReturnWhen::FirstCompleted => tasks.is_empty() || tasks.iter().any(Task::done),
        ReturnWhen::FirstException => tasks.iter().any(Task::failed) || all(),
        ReturnWhen::AllCompleted => all(),
    };
    wait_for(tasks, &until, timeout.and_then(crate::wait::deadline_after));
    tasks.iter().partition(|t| t.is_done())
}

impl Pool {
    /// Starts `f(args)` in a worker and returns its [`Task`] at once
    /// (Python's `ProcessPoolExecutor.submit(f, *args)`). Unlike
    /// [`apply_async`](Pool::apply_async), the task can be cancelled
    /// while it runs ([`Task::cancel`]) and waited for with others
    /// ([`as_completed`], [`wait_tasks`]).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if the pool is closed (Python's
    /// `RuntimeError` after `shutdown`) or terminated, or broken;
    /// [`ErrorKind::Io`] if the pool's callback thread cannot be started.
    /// The task's own errors come from [`Task::result`].
    ///
    /// ```
    /// fn add((a, b): (u32, u32)) -> u32 { a + b }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let t = pool.submit(add, (2, 3)).unwrap();   // ex.submit(add, 2, 3)
    ///     assert_eq!(t.result().unwrap(), 5);
    /// }
    /// ```
    pub fn submit<F, A, R>(&self, f: F, args: A) -> Result<Task<R>>
    where
        F: Fn(A) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = &f;
        let queue = self.callback_thread()?;
        let state = Arc::new(TaskState::new(queue));
        let task = TaskRef::of_entry(ChunkDesc::<F, A, R>::ENTRY, self.key);
        // Sent in a group with the function's other tasks, where the pool
        // allows (no per-task timeout or task budget, which count frames)
        // and the item is small; else as a job of its own, which fails
        // with the same error if the item does not encode.
        let mut core = match self.try_grouped(task, &args, state.clone())? {
            Ok((id, ticket)) => {
                return Ok(Task {
                    shared: Arc::clone(&self.shared),
                    state,
                    id,
                    ticket: Some(ticket),
                    waker: None,
                    drove: false,
                })
            }
            Err(core) => core,
        };
        let source = Submitted {
            item: OneItem::new(args, task),
            state: Arc::clone(&state),
        };
        let job = Job::new(Box::new(source), state.clone(), 1, usize::MAX).cancellable();
        let id = core.submit(job)?;
        // Sent now, under the same lock; the pump is woken only if it is
        // needed (`kick`). A pump that cannot start leaves the task to
        // whoever waits for it (as `Pool::kick`).
        let _ = self.shared.kick_locked(core);
        Ok(Task {
            shared: Arc::clone(&self.shared),
            state,
            id,
            ticket: None,
            waker: None,
            drove: false,
        })
    }

    /// Python's `Executor.shutdown(wait, cancel_futures)`, over
    /// [`close`](Pool::close) and [`join`](Pool::join): no new work is
    /// accepted; with `cancel_futures`, every [`submit`](Pool::submit)ted
    /// task not sent to a worker yet is cancelled (running ones finish);
    /// with `wait`, it returns once all other work is done and the
    /// workers have exited (`join`). Without `wait` it returns at once
    /// and the work goes on — but, unlike Python, dropping the pool still
    /// [`terminate`](Pool::terminate)s it, so keep it (or `join` it)
    /// until the work is done. A second call does no harm.
    ///
    /// Python 3.14's `terminate_workers()` and `kill_workers()` are
    /// [`terminate_workers`](Pool::terminate_workers) and
    /// [`kill_workers`](Pool::kill_workers).
    ///
    /// # Errors
    /// As [`join`](Pool::join), with `wait`.
    ///
    /// ```
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let first = pool.submit(nap, 300).unwrap();
    ///     let queued = pool.submit(nap, 60_000).unwrap();
    ///     while !first.running() { nap(1); }
    ///     pool.shutdown(true, true).unwrap();       // ex.shutdown(wait=True, cancel_futures=True)
    ///     assert_eq!(first.result().unwrap(), 300);
    ///     assert!(queued.cancelled());
    ///     assert!(pool.submit(nap, 1).is_err());
    /// }
    /// ```
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) -> Result<()> {
        self.close();
        if cancel_futures {
            let mut core = self.shared.lock();
            core.cancel_queued();
            drop(core);
            self.shared.notify();
        }
        if wait {
            self.join()
        } else {
            Ok(())
        }
    }

    /// Sends `SIGTERM` to every worker (Python 3.14's
    /// `ProcessPoolExecutor.terminate_workers()`; `TerminateProcess` on
    /// Windows). As in CPython, which calls `shutdown(wait=False,
    /// cancel_futures=True)` and then signals each live worker:
    ///
    /// * submitted tasks not yet running are cancelled
    ///   ([`ErrorKind::Cancelled`]);
    /// * every other call in progress — running tasks, maps, `apply`s —
    ///   fails at once with [`ErrorKind::InvalidState`], "the pool is
    ///   broken: terminate_workers() was called" (Python's
    ///   `BrokenProcessPool`); the workers are not replaced;
    /// * the pool is then unusable: every call fails with that error
    ///   (Python: `RuntimeError`, "cannot schedule new futures after
    ///   shutdown"). [`join`](Pool::join) waits for the workers to exit,
    ///   as dropping the pool does.
    ///
    /// It returns without waiting for the workers to exit. A worker that
    /// ignores `SIGTERM` (its task blocked the signal) is killed when the
    /// pool is dropped or [`terminate`](Pool::terminate)d; see
    /// [`kill_workers`](Pool::kill_workers).
    ///
    /// ```
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let running = pool.submit(nap, 60_000).unwrap();
    ///     let queued = pool.submit(nap, 60_000).unwrap();
    ///     while !running.running() { nap(1); }
    ///     pool.terminate_workers();                 // ex.terminate_workers()
    ///     assert!(queued.cancelled());
    ///     assert!(running.result().unwrap_err().to_string().contains("terminate_workers"));
    ///     assert!(pool.submit(nap, 0).is_err());
    ///     pool.join().unwrap();
    /// }
    /// ```
    pub fn terminate_workers(&self) {
        self.force_shutdown(false);
    }

    /// Sends `SIGKILL` to every worker (Python 3.14's
    /// `ProcessPoolExecutor.kill_workers()`; `TerminateProcess` on
    /// Windows); otherwise as [`terminate_workers`](Pool::terminate_workers).
    ///
    /// ```
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let t = pool.submit(nap, 60_000).unwrap();
    ///     pool.kill_workers();                      // ex.kill_workers()
    ///     assert!(t.result().is_err());
    ///     assert!(pool.map(nap, [0]).unwrap_err().to_string().contains("kill_workers"));
    /// }
    /// ```
    pub fn kill_workers(&self) {
        self.force_shutdown(true);
    }

    fn force_shutdown(&self, kill: bool) {
        let why = if kill {
            "kill_workers() was called: every worker was sent SIGKILL"
        } else {
            "terminate_workers() was called: every worker was sent SIGTERM"
        };
        let mut core = self.shared.lock();
        core.force_shutdown(why.into(), kill);
        drop(core);
        self.shared.notify();
        self.shared.doorbell.ring_always();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An awaited task takes its value as soon as the task is reported
    /// done; its job may settle after that (another thread drives the
    /// pool). The settle must not put an error where the value was.
    #[test]
    fn a_taken_value_stays_taken_when_the_job_settles_later() {
        let state = TaskState::<String>::new(Arc::new(Callbacks::start().unwrap()));
        let bytes = postcard::to_allocvec("seven").unwrap();
        state.deliver(0, 1, &bytes).unwrap();
        state.task_done(1);
        assert!(state.done());
        assert_eq!(state.take().unwrap(), "seven");
        state.settle();
        let e = state.take().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
        assert!(lock(&state.st).result.is_none());
    }
}
