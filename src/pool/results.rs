//! What a call that returns before its work is done hands back:
//! [`AsyncResult`] (`map_async`, `apply_async`) and [`IMap`] (`imap`,
//! `imap_unordered`), both of which drive the pool while they wait.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::callbacks::Hook;
use super::core::{Core, State};
use super::driver::Shared;
use super::jobs::{Collect, Stream};
use super::wakers::Wakers;
use crate::error::{Error, ErrorKind, Result};

/// The one result of an `apply`.
pub(super) fn one<R>(mut v: Vec<R>) -> Result<R> {
    match (v.pop(), v.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => Err(Error::new(
            ErrorKind::Protocol,
            "expected exactly one result",
        )),
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
    pub(super) shared: Arc<Shared>,
    pub(super) sink: Arc<dyn AnyCollect<T>>,
    pub(super) expect: Option<u64>,
    unwrap_one: bool,
    taken: bool,
    /// The key of its waker while it is awaited (`Future`).
    pub(super) waker: Option<u64>,
    /// Awaited: its first poll drove the pool briefly already.
    pub(super) drove: bool,
    /// The callbacks of an `*_async_with` call; the value waits there
    /// once they ran.
    pub(super) hook: Option<Arc<Hook<T>>>,
    _t: PhantomData<fn() -> T>,
}

/// `Collect<R>` seen as producing a `T` (`Vec<R>`, or `R` for `apply`).
pub(super) trait AnyCollect<T>: Send + Sync {
    fn ready(&self) -> bool;
    fn successful(&self) -> Option<bool>;
    fn take_as(&self, expect: Option<u64>, one: bool) -> Result<T>;
    /// The futures waiting for it to become ready.
    fn wakers(&self) -> &Wakers;
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
    fn wakers(&self) -> &Wakers {
        &self.wakers
    }
}

/// `apply_async`'s view: one `R` (the sink of a one-item job,
/// `Collect::for_items(1)`; no wrapper to allocate).
impl<R: Send> AnyCollect<R> for Collect<R> {
    fn ready(&self) -> bool {
        Collect::ready(self)
    }
    fn successful(&self) -> Option<bool> {
        Collect::successful(self)
    }
    fn take_as(&self, _expect: Option<u64>, _one: bool) -> Result<R> {
        self.take_one()
    }
    fn wakers(&self) -> &Wakers {
        &self.wakers
    }
}

impl<R: Send + 'static> AsyncResult<Vec<R>> {
    /// The result of a `map_async` of `n` items.
    pub(super) fn of_map(shared: Arc<Shared>, sink: Arc<Collect<R>>, n: u64) -> Self {
        AsyncResult {
            shared,
            sink,
            expect: Some(n),
            unwrap_one: false,
            taken: false,
            waker: None,
            drove: false,
            hook: None,
            _t: PhantomData,
        }
    }
}

impl<R: Send + 'static> AsyncResult<R> {
    /// The result of an `apply_async`.
    pub(super) fn of_apply(shared: Arc<Shared>, sink: Arc<Collect<R>>) -> Self {
        AsyncResult {
            shared,
            sink,
            expect: Some(1),
            unwrap_one: true,
            taken: false,
            waker: None,
            drove: false,
            hook: None,
            _t: PhantomData,
        }
    }
}

impl<T> AsyncResult<T> {
    /// `true` once the result (or error) is there (Python's `ready()`);
    /// with callbacks ([`Pool::apply_async_with`](crate::Pool::apply_async_with)),
    /// once the callback has returned, as in Python.
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
        self.is_ready() || {
            self.nudge();
            false
        }
    }

    /// `ready()` without the nudge: for the crate's own waits, which drive.
    pub(super) fn is_ready(&self) -> bool {
        match &self.hook {
            Some(h) => h.fired(),
            None => self.sink.ready(),
        }
    }

    /// Nobody may be driving: a result waiting in a ring needs the pump to
    /// be seen (`Shared::kick`). Its own failure to start is left to a
    /// wait, which drives.
    fn nudge(&self) {
        let _ = self.shared.ensure_pump();
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
        let done = match &self.hook {
            Some(h) => h.successful(),
            None => self.sink.successful(),
        };
        if done.is_none() {
            self.nudge();
        }
        done
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
        self.wait_until(None);
    }

    /// Waits for the job, driving the pool, then for its callbacks (with
    /// the pool's lock released: they may call the pool). `true` if ready.
    pub(super) fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let s = Arc::clone(&self.sink);
        // As `Task::result`: while the pump drives, the result of a batch
        // of `apply_async` calls is mostly microseconds away.
        if self.hook.is_none() && self.shared.look_while_driven(deadline, &|| s.ready()) {
            return true;
        }
        let (core, ready) = self.shared.wait_until(
            &move |c: &Core| s.ready() || c.state == State::Terminated,
            deadline,
        );
        drop(core);
        match &self.hook {
            // After `terminate` the job becomes ready once its workers are
            // reaped, and its callbacks run then.
            Some(h) => h.wait(deadline),
            None => ready,
        }
    }

    /// Waits at most `timeout` for it to be ready (Python's
    /// `wait(timeout)`); an error that [`is_timeout`](crate::Error::is_timeout)
    /// if it is not. A failed task is ready too: its error comes from
    /// [`get`](AsyncResult::get).
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) only.
    ///
    /// ```
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let r = pool.apply_async(nap, 300).unwrap();
    ///     assert!(r.wait_timeout(std::time::Duration::from_millis(10)).unwrap_err().is_timeout());
    ///     r.wait_timeout(std::time::Duration::from_secs(30)).unwrap();
    ///     assert!(r.ready());
    /// }
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        if self.wait_until(crate::wait::deadline_after(timeout)) {
            Ok(())
        } else {
            Err(Error::timeout(
                "AsyncResult::wait_timeout: the result was not ready at the deadline",
            ))
        }
    }

    /// The value (Python's `get()`).
    ///
    /// # Errors
    /// As the call that made it ([`Pool::map`](crate::Pool::map), [`Pool::apply`](crate::Pool::apply)).
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
        self.wait_timeout(timeout).map_err(|_| {
            Error::timeout(
                "AsyncResult::get_timeout: the result was not ready in time (it may still come)",
            )
        })?;
        self.take()
    }

    pub(super) fn take(&mut self) -> Result<T> {
        if self.taken {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "the result was already taken",
            ));
        }
        self.taken = true;
        match &self.hook {
            Some(h) => h.take().unwrap_or_else(|| {
                Err(Error::new(
                    ErrorKind::InvalidState,
                    "the result is not there: its callbacks have not run",
                ))
            }),
            None => self.sink.take_as(self.expect, self.unwrap_one),
        }
    }
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

/// The iterator of [`Pool::imap`](crate::Pool::imap) and [`Pool::imap_unordered`](crate::Pool::imap_unordered).
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
    pub(super) shared: Arc<Shared>,
    pub(super) sink: Arc<Stream<R>>,
    id: u64,
    pub(super) done: bool,
    /// `MapOptions::with_timeout`: no item after this is a timeout.
    pub(super) deadline: Option<Instant>,
}

impl<R> IMap<R> {
    /// The iterator over the results of job `id`.
    pub(super) fn new(shared: Arc<Shared>, sink: Arc<Stream<R>>, id: u64) -> Self {
        IMap {
            shared,
            sink,
            id,
            done: false,
            deadline: None,
        }
    }

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
            self.deadline,
        );
        // Wake the pump: a consumed item may let it dispatch more.
        self.shared.notify();
        match out {
            Some(v) => {
                self.done = v.is_none();
                v
            }
            None if self.deadline.is_some_and(|d| Instant::now() >= d) => Some(self.time_out()),
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

impl<R> IMap<R> {
    /// The deadline passed: the error, and the rest is cancelled (Python's
    /// `Executor.map` cancels the futures left when it raises).
    pub(super) fn time_out(&mut self) -> Result<R> {
        self.abandon();
        Err(Error::timeout(
            "Pool::with_timeout: the next result was not ready at the deadline (the rest is cancelled)",
        ))
    }

    /// Ends the iteration here and cancels what is left.
    fn abandon(&mut self) {
        if !self.done {
            self.done = true;
            self.sink.drop_consumer();
            let mut core = self.shared.lock();
            core.cancel(self.id);
            drop(core);
            self.shared.notify();
        }
    }
}

impl<R> Drop for IMap<R> {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl<R> std::fmt::Debug for IMap<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMap")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
