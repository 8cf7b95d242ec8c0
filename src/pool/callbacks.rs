//! Python's `callback=` and `error_callback=`: the `*_async_with` calls,
//! the [`Hook`] that holds one result's callbacks until it is ready, and
//! the pool's callback thread that runs them.
//!
//! A job becomes ready under the pool's lock (whoever drives makes it so),
//! and there it only *queues* its hook. The callback thread runs hooks with
//! no lock of the pool held, so a callback may call the pool: submit more
//! work, or wait for it. Each hook runs once (it is taken out of the
//! result's state), its value then waits in the hook for `get()`.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::jobs::{Collect, OnReady, Source};
use super::results::AnyCollect;
use super::wakers::Wakers;
use super::{AsyncResult, Pool};
use crate::error::{Error, Result};

/// How often a wait on the callback thread itself looks again (its own
/// hook is queued behind the callback that waits, see [`Hook::wait`]).
const LOOK_AGAIN: Duration = Duration::from_millis(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A result's callbacks, ready to run (type-erased for the queue).
pub(super) trait Fire: Send + Sync {
    /// Runs the callbacks unless they ran already.
    fn fire(&self);
}

/// The pool's callback thread (Python's result-handler thread, for
/// callbacks only: results are handled by whoever drives): a queue of
/// hooks, run one at a time in the order they became ready.
pub(super) struct Callbacks {
    tx: Sender<Arc<dyn Fire>>,
    pending: Arc<Pending>,
    thread: ThreadId,
}

/// Hooks queued or running, so that `join` and `terminate` can wait for
/// them.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    idle: Condvar,
}

impl Pending {
    fn done(&self) {
        let mut n = lock(&self.count);
        *n -= 1;
        if *n == 0 {
            self.idle.notify_all();
        }
    }
}

impl Callbacks {
    /// Starts the thread. It holds only the queue's receiving end and ends
    /// when every sender is gone (the pool and the hooks not yet ready).
    pub(super) fn start() -> Result<Callbacks> {
        let (tx, rx) = channel::<Arc<dyn Fire>>();
        let pending = Arc::new(Pending::default());
        let left = Arc::clone(&pending);
        let thread = std::thread::Builder::new()
            .name("multiproc-pool-callbacks".into())
            .spawn(move || {
                for hook in rx {
                    // A panicking callback is caught in `Hook::run`; this
                    // one guards the thread against anything else (a
                    // result's `Drop`, run here when nobody kept it).
                    let _ = crate::panic::catch_panic(move || hook.fire());
                    left.done();
                }
            })
            .map_err(|e| Error::io("starting the pool's callback thread", e))?;
        Ok(Callbacks {
            tx,
            pending,
            thread: thread.thread().id(),
        })
    }

    /// Queues `hook` for the callback thread; never runs it here (the
    /// caller may hold the pool's lock).
    pub(super) fn queue(&self, hook: Arc<dyn Fire>) {
        *lock(&self.pending.count) += 1;
        if let Err(back) = self.tx.send(hook) {
            // Not expected: the thread ends only once every sender is gone,
            // and it catches every panic. Should it be gone all the same,
            // fire on a thread of its own rather than never.
            let hook = back.0;
            let left = Arc::clone(&self.pending);
            let spawned = std::thread::Builder::new()
                .name("multiproc-pool-callbacks".into())
                .spawn(move || {
                    let _ = crate::panic::catch_panic(move || hook.fire());
                    left.done();
                });
            if spawned.is_err() {
                self.pending.done();
            }
        }
    }

    /// Waits until every queued hook has run (`join`, `terminate`, drop).
    /// Not on the callback thread itself: a callback that ends the pool
    /// would wait for itself.
    fn flush(&self) {
        if std::thread::current().id() == self.thread {
            return;
        }
        let mut n = lock(&self.pending.count);
        while *n > 0 {
            n = self.pending.idle.wait(n).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A callback for the value, or for the error.
type OnValue<T> = Box<dyn FnOnce(&T) + Send>;
type OnError = Box<dyn FnOnce(&Error) + Send>;

/// One result's callbacks and, once they ran, its value for `get()`.
pub(super) struct Hook<T> {
    st: Mutex<Stage<T>>,
    fired: Condvar,
    /// The callback thread: a wait there runs the hook itself.
    thread: ThreadId,
    /// Futures waiting for the callbacks to return (`AsyncResult`).
    pub(super) wakers: Wakers,
}

enum Stage<T> {
    Armed(Armed<T>),
    Running,
    /// The callbacks returned; `value` until `get()` takes it.
    Fired {
        value: Option<Result<T>>,
        ok: bool,
    },
}

struct Armed<T> {
    sink: Arc<dyn AnyCollect<T>>,
    expect: Option<u64>,
    callback: OnValue<T>,
    error_callback: OnError,
}

impl<T: Send + 'static> Fire for Hook<T> {
    fn fire(&self) {
        self.run();
    }
}

impl<T> Hook<T> {
    /// Takes the value out of the job's sink, calls the callback that
    /// fits, and keeps the value for `get()`. Once: a second call finds
    /// the hook running or fired.
    fn run(&self) {
        let armed = {
            let mut st = lock(&self.st);
            if !matches!(*st, Stage::Armed(_)) {
                return;
            }
            match std::mem::replace(&mut *st, Stage::Running) {
                Stage::Armed(a) => a,
                _ => unreachable!("checked above"),
            }
        };
        let Armed {
            sink,
            expect,
            callback,
            error_callback,
        } = armed;
        let value = sink.take_as(expect, false);
        drop(sink);
        let ok = value.is_ok();
        // A panic in the callback is printed on stderr by the panic hook
        // (`catch_panic`) and stops here: the value is kept all the same.
        let _ = crate::panic::catch_panic(|| match &value {
            Ok(v) => callback(v),
            Err(e) => error_callback(e),
        });
        *lock(&self.st) = Stage::Fired {
            value: Some(value),
            ok,
        };
        self.fired.notify_all();
        self.wakers.wake_all();
    }

    /// `true` once the callbacks returned.
    pub(super) fn fired(&self) -> bool {
        matches!(*lock(&self.st), Stage::Fired { .. })
    }

    /// As `AsyncResult::successful`: `None` until the callbacks returned.
    pub(super) fn successful(&self) -> Option<bool> {
        match *lock(&self.st) {
            Stage::Fired { ok, .. } => Some(ok),
            _ => None,
        }
    }

    /// The value, once: `None` if it is not there (not fired, or taken).
    pub(super) fn take(&self) -> Option<Result<T>> {
        match &mut *lock(&self.st) {
            Stage::Fired { value, .. } => value.take(),
            _ => None,
        }
    }

    /// Waits until the callbacks returned or `deadline` passed; `true` if
    /// they did. Called once the job is ready (or the pool terminated: it
    /// becomes ready once its workers are reaped).
    ///
    /// On the callback thread — a callback waiting for another result with
    /// callbacks — the hook is queued behind the callback that waits, so
    /// the wait runs it here as soon as its job is ready, instead of
    /// waiting for itself.
    pub(super) fn wait(&self, deadline: Option<Instant>) -> bool {
        let here = std::thread::current().id() == self.thread;
        let mut st = lock(&self.st);
        loop {
            match &*st {
                Stage::Fired { .. } => return true,
                Stage::Armed(a) if here && a.sink.ready() => {
                    drop(st);
                    self.run();
                    st = lock(&self.st);
                    continue;
                }
                _ => {}
            }
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return false,
                },
                None => None,
            };
            let nap = match (left, here) {
                (Some(left), true) => Some(left.min(LOOK_AGAIN)),
                (None, true) => Some(LOOK_AGAIN),
                (left, false) => left,
            };
            st = match nap {
                Some(nap) => {
                    self.fired
                        .wait_timeout(st, nap)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.fired.wait(st).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

impl<T: Send + 'static> AsyncResult<T> {
    /// Gives this result its callbacks; returns what its job's sink calls
    /// when it becomes ready (under the pool's lock: it only queues).
    fn arm(
        &mut self,
        queue: Arc<Callbacks>,
        callback: OnValue<T>,
        error_callback: OnError,
    ) -> OnReady {
        let hook = Arc::new(Hook {
            st: Mutex::new(Stage::Armed(Armed {
                sink: Arc::clone(&self.sink),
                expect: self.expect,
                callback,
                error_callback,
            })),
            fired: Condvar::new(),
            thread: queue.thread,
            wakers: Wakers::default(),
        });
        self.hook = Some(Arc::clone(&hook));
        Box::new(move || queue.queue(hook))
    }
}

impl Pool {
    /// The callback thread, started by the first call that needs it.
    pub(super) fn callback_thread(&self) -> Result<Arc<Callbacks>> {
        if let Some(c) = self.callbacks.get() {
            return Ok(Arc::clone(c));
        }
        let _starting = lock(&self.callbacks_start);
        if let Some(c) = self.callbacks.get() {
            return Ok(Arc::clone(c));
        }
        let c = Arc::new(Callbacks::start()?);
        let _ = self.callbacks.set(Arc::clone(&c));
        Ok(c)
    }

    /// Waits until every queued callback has returned (not when called
    /// from a callback).
    pub(super) fn flush_callbacks(&self) {
        if let Some(c) = self.callbacks.get() {
            c.flush();
        }
    }

    /// Submits a job whose result has callbacks: they are armed before the
    /// job can become ready.
    fn submit_armed<R: DeserializeOwned + Send + 'static>(
        &self,
        source: Box<dyn Source>,
        sink: &Arc<Collect<R>>,
        on_ready: OnReady,
    ) -> Result<()> {
        sink.on_ready(on_ready);
        let submitted = self.submit_job(source, sink.clone(), usize::MAX, usize::MAX);
        if submitted.is_err() {
            // Never to be ready: drop the hook, which holds the sink.
            sink.clear_on_ready();
        }
        submitted.map(drop)
    }

    /// [`map_async_with`](Pool::map_async_with) with the call's chunk size.
    pub(super) fn map_async_hooked<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: Option<usize>,
        callback: impl FnOnce(&[R]) + Send + 'static,
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let queue = self.callback_thread()?;
        let (source, sink, n) = self.map_job(f, self.collect_input(items), chunksize);
        let mut result = AsyncResult::of_map(Arc::clone(&self.shared), Arc::clone(&sink), n);
        let on_ready = result.arm(
            queue,
            Box::new(move |v: &Vec<R>| callback(v)),
            Box::new(error_callback),
        );
        self.submit_armed(source, &sink, on_ready)?;
        self.ensure_pump();
        Ok(result)
    }

    /// [`apply_async`](Pool::apply_async) with Python's `callback` and
    /// `error_callback`: once the result is ready, `callback(&value)` or
    /// `error_callback(&error)` runs, once, on the pool's callback thread.
    /// [`get`](AsyncResult::get) still returns the value (or the error).
    ///
    /// | Python | `multiproc` |
    /// |---|---|
    /// | `pool.apply_async(f, (x,), callback=cb, error_callback=ecb)` | `pool.apply_async_with(f, x, cb, ecb)` |
    /// | `callback=cb` only | `pool.apply_async_with(f, x, cb, \|_\| {})` |
    ///
    /// The callbacks are arguments of the call, as in Python, so they are
    /// in place before the work can finish: there is no "registered after
    /// it was ready" case, and the thread they run on never depends on
    /// timing. They borrow the value (`&R`), so `get()` needs no `Clone`.
    ///
    /// **Where they run.** On the pool's callback thread,
    /// `multiproc-pool-callbacks` (Python's result-handler thread), started
    /// by the first such call, one callback at a time in about the order
    /// the results become ready. Never on a thread that holds the pool's
    /// lock: a callback may call the pool — submit more work, even wait for
    /// it (also for another result with callbacks: that one then runs
    /// right there). A slow callback delays the callbacks after it, never
    /// the pool's work.
    ///
    /// **Exactly once.** The error callback gets every failure: a panic in
    /// `f`, a worker that died or was killed (`ProcessDied`), a task
    /// timeout, and [`terminate`](Pool::terminate) or dropping the pool
    /// (`InvalidState`). [`ready`](AsyncResult::ready) turns `true`, and
    /// `get()`/`wait()` return, only once the callback has returned (as in
    /// Python); [`join`](Pool::join), [`terminate`](Pool::terminate) and
    /// dropping the pool return only once every callback has (except when
    /// called from a callback, which would wait for itself).
    ///
    /// **A panicking callback** is caught on the callback thread: the panic
    /// hook prints it on stderr (`thread 'multiproc-pool-callbacks'
    /// panicked at …`) and it goes no further. The pool, its lock and the
    /// other callbacks are unaffected, and `get()` returns the value as if
    /// the callback had returned.
    ///
    /// # Errors
    /// As [`apply_async`](Pool::apply_async);
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the callback thread
    /// cannot be started.
    ///
    /// ```
    /// use std::sync::mpsc;
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let (tx, rx) = mpsc::channel();
    ///     // pool.apply_async(square, (7,), callback=print, error_callback=print)
    ///     let r = pool.apply_async_with(
    ///         square,
    ///         7,
    ///         move |v: &u64| tx.send(*v).unwrap(),
    ///         |e: &multiproc::Error| eprintln!("failed: {e}"),
    ///     )?;
    ///     assert_eq!(r.get()?, 49);              // after the callback returned
    ///     assert_eq!(rx.recv().unwrap(), 49);
    ///     Ok(())
    /// }
    /// ```
    pub fn apply_async_with<F, A, R>(
        &self,
        f: F,
        args: A,
        callback: impl FnOnce(&R) + Send + 'static,
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<R>>
    where
        F: Fn(A) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let queue = self.callback_thread()?;
        let (source, sink, _) = self.map_job(f, vec![args], None);
        let mut result = AsyncResult::of_apply(Arc::clone(&self.shared), Arc::clone(&sink));
        let on_ready = result.arm(queue, Box::new(callback), Box::new(error_callback));
        self.submit_armed(source, &sink, on_ready)?;
        self.ensure_pump();
        Ok(result)
    }

    /// [`map_async`](Pool::map_async) with Python's `callback` and
    /// `error_callback`: `callback(&results)` gets every result in order,
    /// or `error_callback(&error)` the map's first error. Where and when
    /// they run, and what a panic in one does: as
    /// [`apply_async_with`](Pool::apply_async_with).
    ///
    /// # Errors
    /// As [`apply_async_with`](Pool::apply_async_with).
    ///
    /// ```
    /// use std::sync::mpsc;
    ///
    /// fn fragile(x: u32) -> u32 { assert!(x != 3, "three"); x }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let (tx, rx) = mpsc::channel();
    ///     let (ok, failed) = (tx.clone(), tx);
    ///     // pool.map_async(fragile, range(5), callback=..., error_callback=...)
    ///     let r = pool.map_async_with(
    ///         fragile,
    ///         0..5,
    ///         move |v: &[u32]| ok.send(format!("{v:?}")).unwrap(),
    ///         move |e: &multiproc::Error| failed.send(format!("item {:?}", e.item_index())).unwrap(),
    ///     )?;
    ///     assert!(r.get().is_err());
    ///     assert_eq!(rx.recv().unwrap(), "item Some(3)");
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
        self.map_async_hooked(f, items, None, callback, error_callback)
    }

    /// Python's `starmap_async` with `callback` and `error_callback`:
    /// [`map_async_with`](Pool::map_async_with) over tuples, `f` taking the
    /// tuple.
    ///
    /// # Errors
    /// As [`apply_async_with`](Pool::apply_async_with).
    ///
    /// ```
    /// use std::sync::mpsc;
    ///
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let (tx, rx) = mpsc::channel();
    ///     let r = pool.starmap_async_with(
    ///         add,
    ///         [(1, 2), (3, 4)],
    ///         move |v: &[i32]| tx.send(v.to_vec()).unwrap(),
    ///         |_| {},
    ///     )?;
    ///     assert_eq!(r.get()?, [3, 7]);
    ///     assert_eq!(rx.recv().unwrap(), [3, 7]);
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
        self.map_async_hooked(f, items, None, callback, error_callback)
    }
}
