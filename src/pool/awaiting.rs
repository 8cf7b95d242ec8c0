//! The pool from async code: [`Task`] and [`AsyncResult`] are
//! `std::future::Future`s; [`IMapStream`] (`imap`, `imap_unordered`) and
//! [`AsCompletedStream`] (`as_completed`) are `futures_core::Stream`s.
//!
//! No runtime is involved. A future that must wait registers its waker
//! with the result it waits for (`wakers::Wakers`) and makes sure the
//! pool's pump thread runs; whoever settles the result (the pump, a
//! blocked caller that drives, the callback thread, `terminate`) wakes
//! it. Dropping any of them mid-wait removes its waker and nothing else:
//! a task goes on, its result stays for its handle (docs/ARCHITECTURE.md,
//! Pool, "Async: futures and streams").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::Stream;

use super::driver::Shared;
use super::futures::{AsCompleted, Task};
use super::results::{AsyncResult, IMap};
use super::wakers::Alarm;
use crate::error::{Error, Result};

/// How long the first poll of a [`Task`] or [`AsyncResult`] drives the
/// pool itself, as a blocking call does, before it registers its waker
/// and returns `Pending`. A result that comes sooner (a short task on an
/// idle pool: ~1 µs) costs no wake-up of the executor's thread, which
/// costs more than the task; a longer task costs the executor's thread
/// this long, once. (Spinning for a result the pump drives instead
/// measured 3× slower on 2 cores: three busy threads on two cores.)
const FIRST_POLL_DRIVE: std::time::Duration = std::time::Duration::from_micros(20);

/// Awaiting a task gives its result, as [`Task::into_result`] does (the
/// value is taken: no `Clone` needed). Await `&mut task` to keep the
/// handle: a later [`Task::result`] then says the value was taken
/// ([`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState)).
///
/// **Cancellation safety:** dropping the future (a `select!` branch that
/// lost, a timeout) never cancels the task: it runs to completion and its
/// result stays for the handle ([`Task::result`], or awaiting it again).
/// To stop it, call [`Task::cancel`]. Python's `asyncio.wrap_future(fut)`
/// is the counterpart; there, cancelling the asyncio future cancels the
/// task, here it does not.
///
/// The waker is woken by the pool's own threads (its pump, started when
/// the future first waits), never by the runtime, so any executor works.
/// The first poll drives the pool for up to 20 µs before it returns
/// `Pending`, as the blocking call does: a result that comes that fast is
/// `Ready` at once, without a wake-up of the executor's thread (which
/// costs more than the task here). If the pump thread cannot be started
/// (a thread limit) when the future must wait, it is `Ready` with an
/// [`ErrorKind::Io`](crate::ErrorKind::Io) error instead of waiting for a
/// wake-up nobody would send; the task goes on, and awaiting `&mut task`
/// again retries.
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2)?;
///     let task = pool.submit(square, 12)?;      // loop.run_in_executor(ex, square, 12)
///     // Any executor: tokio, smol, or this minimal one.
///     let v = futures_executor_block_on(task)?;  // await
///     assert_eq!(v, 144);
///     Ok(())
/// }
/// # fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     struct Unpark(std::thread::Thread);
/// #     impl std::task::Wake for Unpark { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
/// #     let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop {
/// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
/// #         std::thread::park();
/// #     }
/// # }
/// ```
impl<R> Future for Task<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let this = self.get_mut();
        if !this.state.done() && !std::mem::replace(&mut this.drove, true) {
            this.wait_done(Some(Instant::now() + FIRST_POLL_DRIVE));
        }
        if !this.state.done() {
            this.state.wakers.register(&mut this.waker, cx.waker());
            if let Err(e) = this.shared.ensure_pump() {
                this.state.wakers.remove(&mut this.waker);
                return Poll::Ready(Err(e));
            }
            // A task done between the first look and the registration
            // woke nobody: look again.
            if !this.state.done() {
                return Poll::Pending;
            }
        }
        this.state.wakers.remove(&mut this.waker);
        Poll::Ready(this.take_result())
    }
}

/// Awaiting an `*_async` result gives its value, as
/// [`AsyncResult::get`] does (for an
/// [`apply_async_with`](crate::Pool::apply_async_with) result, once its
/// callback returned). Await `&mut r` to keep the handle; the value is
/// taken all the same.
///
/// **Cancellation safety:** dropping the future mid-wait changes nothing:
/// the work goes on and the value stays for a later await or
/// [`get`](AsyncResult::get). Python's counterpart is
/// `await loop.run_in_executor(None, r.get)`.
///
/// As for [`Task`], the first poll drives the pool for up to 20 µs
/// before it returns `Pending`.
///
/// ```
/// fn double(x: u32) -> u32 { x * 2 }
///
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(1)?;
///     let r = pool.apply_async(double, 21)?;
///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
///     assert_eq!(rt.block_on(r)?, 42);
///     Ok(())
/// }
/// ```
impl<T> Future for AsyncResult<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        if !this.is_ready() && !std::mem::replace(&mut this.drove, true) {
            this.wait_until(Some(Instant::now() + FIRST_POLL_DRIVE));
        }
        if !this.is_ready() {
            let wakers = match &this.hook {
                Some(h) => &h.wakers,
                None => this.sink.wakers(),
            };
            wakers.register(&mut this.waker, cx.waker());
            if let Err(e) = this.shared.ensure_pump() {
                this.forget_waker();
                return Poll::Ready(Err(e));
            }
            if !this.is_ready() {
                return Poll::Pending;
            }
        }
        this.forget_waker();
        Poll::Ready(this.take())
    }
}

impl<T> AsyncResult<T> {
    fn forget_waker(&mut self) {
        let wakers = match &self.hook {
            Some(h) => &h.wakers,
            None => self.sink.wakers(),
        };
        wakers.remove(&mut self.waker);
    }
}

impl<T> Drop for AsyncResult<T> {
    fn drop(&mut self) {
        self.forget_waker();
    }
}

impl<R> IMap<R> {
    /// This `imap`/`imap_unordered` as a [`futures_core::Stream`] of the
    /// same items (Python has no async `imap`; the counterpart is
    /// iterating it in `run_in_executor`). A separate type, so that
    /// `next()` is never ambiguous between `Iterator` and a `StreamExt`.
    ///
    /// ```
    /// use futures_util::StreamExt;
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     let squares: Vec<u64> = rt.block_on(async {
    ///         let mut s = pool.imap(|x: u64| x * x, 0..).unwrap().into_stream();
    ///         let mut out = Vec::new();
    ///         while let Some(v) = s.next().await {
    ///             out.push(v.unwrap());
    ///             if out.len() == 4 { break; }   // an endless input, taken lazily
    ///         }
    ///         out
    ///     });
    ///     assert_eq!(squares, [0, 1, 4, 9]);
    ///     Ok(())
    /// }
    /// ```
    pub fn into_stream(self) -> IMapStream<R> {
        IMapStream {
            inner: self,
            waker: None,
            alarm: None,
        }
    }
}

/// [`Pool::imap`](crate::Pool::imap) and
/// [`Pool::imap_unordered`](crate::Pool::imap_unordered) as a
/// [`futures_core::Stream`] ([`IMap::into_stream`]): the same items, each
/// a `Result`, ending after the first error.
///
/// **Cancellation safety:** dropping a pending `next()` loses nothing (an
/// item is taken out only when it is returned). Dropping the stream
/// cancels the rest of the map, as dropping the [`IMap`] does.
///
/// ```
/// use futures_util::StreamExt;
///
/// fn main() {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2).unwrap();
///     let s: multiproc::IMapStream<u32> = pool.imap_unordered(|x: u32| x + 1, [1, 2]).unwrap().into_stream();
///     let mut got: Vec<u32> = smol::block_on(s.map(|r| r.unwrap()).collect());
///     got.sort();
///     assert_eq!(got, [2, 3]);
/// }
/// ```
pub struct IMapStream<R> {
    inner: IMap<R>,
    waker: Option<u64>,
    /// Wakes it at the deadline of a call with a timeout.
    alarm: Option<Alarm>,
}

impl<R> IMapStream<R> {
    /// Items finished by the workers so far (handed out or not).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(1).unwrap();
    ///     let s = pool.imap(|x: u8| x, [1u8]).unwrap().into_stream();
    ///     assert!(s.finished() <= 1);
    /// }
    /// ```
    pub fn finished(&self) -> u64 {
        self.inner.finished()
    }

    fn take(&mut self) -> Option<Option<Result<R>>> {
        let v = self.inner.sink.try_next()?;
        self.inner.done = v.is_none();
        // A consumed item may let the pump dispatch more (the look-ahead
        // is bounded).
        self.inner.shared.notify();
        Some(v)
    }
}

impl<R> Stream for IMapStream<R> {
    type Item = Result<R>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<R>>> {
        let this = self.get_mut();
        if this.inner.done {
            return Poll::Ready(None);
        }
        if let Some(v) = this.take() {
            return Poll::Ready(v);
        }
        if let Some(d) = this.inner.deadline {
            if Instant::now() >= d {
                return Poll::Ready(Some(this.inner.time_out()));
            }
            match &this.alarm {
                Some(a) => a.set(cx.waker()),
                None => this.alarm = Alarm::start(d, cx.waker()),
            }
        }
        this.inner.sink.wakers.register(&mut this.waker, cx.waker());
        if let Err(e) = this.inner.shared.ensure_pump() {
            this.inner.sink.wakers.remove(&mut this.waker);
            return Poll::Ready(Some(Err(e)));
        }
        match this.take() {
            Some(v) => Poll::Ready(v),
            None => Poll::Pending,
        }
    }
}

impl<R> Drop for IMapStream<R> {
    fn drop(&mut self) {
        self.inner.sink.wakers.remove(&mut self.waker);
        self.alarm = None;
    }
}

impl<R> std::fmt::Debug for IMapStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMapStream")
            .field("done", &self.inner.done)
            .finish_non_exhaustive()
    }
}

impl<'a, R> AsCompleted<'a, R> {
    /// These tasks as a [`futures_core::Stream`] in the order they
    /// complete (Python's `asyncio.as_completed` over wrapped futures):
    /// each task once; with a timeout, an item that
    /// [`is_timeout`](Error::is_timeout) ends it once the deadline
    /// (counted from the `as_completed` call) passes.
    ///
    /// ```
    /// use futures_util::StreamExt;
    ///
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let tasks = vec![pool.submit(nap, 500)?, pool.submit(nap, 0)?];
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     let order: Vec<u64> = rt.block_on(async {
    ///         let s = multiproc::as_completed(&tasks, None).into_stream();
    ///         s.map(|t| t.unwrap().result().unwrap()).collect().await
    ///     });
    ///     assert_eq!(order, [0, 500]);
    ///     Ok(())
    /// }
    /// ```
    pub fn into_stream(self) -> AsCompletedStream<'a, R> {
        let keys = vec![None; self.tasks.len()];
        AsCompletedStream {
            inner: self,
            keys,
            alarm: None,
        }
    }
}

/// [`as_completed`](crate::as_completed) as a [`futures_core::Stream`]
/// ([`AsCompleted::into_stream`]).
///
/// **Cancellation safety:** dropping it, or a pending `next()`, only
/// removes its wakers; the tasks go on. With a timeout, a small thread
/// (`multiproc-alarm`) wakes it at the deadline, since no runtime timer is
/// assumed; it ends at the deadline or when the stream is dropped.
///
/// ```
/// fn main() {
///     multiproc::init();
///     let pool = multiproc::Pool::new(1).unwrap();
///     let tasks = [pool.submit(|x: u8| x, 1).unwrap()];
///     let s: multiproc::AsCompletedStream<'_, u8> = multiproc::as_completed(&tasks, None).into_stream();
///     assert_eq!(smol::block_on(futures_util::StreamExt::count(s)), 1);
/// }
/// ```
pub struct AsCompletedStream<'a, R> {
    inner: AsCompleted<'a, R>,
    /// Per task, the key of our waker in its list.
    keys: Vec<Option<u64>>,
    alarm: Option<Alarm>,
}

impl<R> AsCompletedStream<'_, R> {
    fn forget_all(&mut self) {
        for (t, k) in self.inner.tasks.iter().zip(&mut self.keys) {
            t.state.wakers.remove(k);
        }
        self.alarm = None;
    }

    /// The first task done, its waker removed.
    fn take_done(&mut self) -> Option<usize> {
        let t = self.inner.take_done()?;
        let i = self
            .inner
            .tasks
            .iter()
            .position(|u| std::ptr::eq(u, t))
            .expect("a task of this slice");
        self.inner.tasks[i].state.wakers.remove(&mut self.keys[i]);
        Some(i)
    }
}

impl<'a, R> Stream for AsCompletedStream<'a, R> {
    type Item = Result<&'a Task<R>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.inner.left == 0 || this.inner.timed_out {
            this.forget_all();
            return Poll::Ready(None);
        }
        let tasks = this.inner.tasks;
        if let Some(i) = this.take_done() {
            return Poll::Ready(Some(Ok(&tasks[i])));
        }
        if let Some(d) = this.inner.deadline {
            if Instant::now() >= d {
                this.inner.timed_out = true;
                this.forget_all();
                return Poll::Ready(Some(Err(Error::timeout(&format!(
                    "as_completed: {} of {} tasks were not done in time",
                    this.inner.left,
                    tasks.len()
                )))));
            }
            match &this.alarm {
                Some(a) => a.set(cx.waker()),
                None => this.alarm = Alarm::start(d, cx.waker()),
            }
        }
        let mut pools: Vec<&Arc<Shared>> = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            if this.inner.yielded[i] {
                continue;
            }
            t.state.wakers.register(&mut this.keys[i], cx.waker());
            if !pools.iter().any(|p| Arc::ptr_eq(p, &t.shared)) {
                pools.push(&t.shared);
            }
        }
        for p in pools {
            if let Err(e) = p.ensure_pump() {
                this.forget_all();
                return Poll::Ready(Some(Err(e)));
            }
        }
        match this.take_done() {
            Some(i) => Poll::Ready(Some(Ok(&tasks[i]))),
            None => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.inner.left + 1))
    }
}

impl<R> Drop for AsCompletedStream<'_, R> {
    fn drop(&mut self) {
        self.forget_all();
    }
}

impl<R> std::fmt::Debug for AsCompletedStream<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompletedStream")
            .field("left", &self.inner.left)
            .finish_non_exhaustive()
    }
}
