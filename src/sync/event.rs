//! `Event`: a flag processes can wait for.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

primitive! {
    /// A flag that processes can wait for.
    ///
    /// Python counterpart: `multiprocessing.Event()`: `set`, `clear`,
    /// `is_set`, `wait`, `wait(timeout)` (here
    /// [`wait_timeout`](Event::wait_timeout)).
    ///
    /// Robust: if a process sharing the event dies abruptly, waiters get
    /// [`ErrorKind::PeerDied`] instead of waiting for a `set` that may never
    /// come.
    ///
    /// ```
    /// use multiproc::{Event, Process};
    ///
    /// fn starter(go: Event) { go.set(); }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let go = Event::new().unwrap();
    ///     let p = Process::spawn(starter, go.clone()).unwrap();
    ///     go.wait().unwrap();
    ///     assert!(go.is_set());
    ///     p.join().unwrap();
    /// }
    /// ```
    pub struct Event over EventBlock as Event {
        flag: AtomicU32,
    }
    wake_all: |b| sys::futex_wake(&b.flag, u32::MAX)
}

impl Event {
    /// A new, unset event.
    ///
    /// # Errors
    /// As [`Lock::new`].
    ///
    /// ```
    /// assert!(!multiproc::Event::new().unwrap().is_set());
    /// ```
    pub fn new() -> Result<Event> {
        Ok(Event {
            shared: Shared::create(|_| {})?,
        })
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// e.set();
    /// assert!(e.is_set());
    /// ```
    pub fn set(&self) {
        let b = self.shared.block();
        // SYNC: Release pairs with the Acquire load in `is_set`/`wait`.
        b.flag.store(1, Ordering::Release);
        sys::futex_wake(&b.flag, u32::MAX);
    }

    /// Clears the flag.
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// ```
    pub fn clear(&self) {
        // SYNC: Relaxed: clearing publishes nothing; waiters re-check.
        self.shared.block().flag.store(0, Ordering::Relaxed);
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// assert!(!multiproc::Event::new().unwrap().is_set());
    /// ```
    pub fn is_set(&self) -> bool {
        // SYNC: Acquire pairs with the Release store in `set`.
        self.shared.block().flag.load(Ordering::Acquire) != 0
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`] if a process sharing the event died while
    /// the flag is not set (a set flag is the answer whoever died, as in
    /// Python).
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// e.set();
    /// e.wait().unwrap();
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.wait_until(None)
    }

    /// Waits at most `timeout` for the flag.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`wait`](Event::wait).
    ///
    /// ```
    /// let e = multiproc::Event::new().unwrap();
    /// assert!(e.wait_timeout(std::time::Duration::from_millis(5)).unwrap_err().is_timeout());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_until(deadline_after(timeout))
    }

    /// [`wait`](Event::wait) as a `Future`, for async code (tokio, smol,
    /// any executor): it resolves once the flag is set.
    ///
    /// Python has no async `multiprocessing`; there one writes
    /// `await loop.run_in_executor(None, event.wait)`, which holds a
    /// thread per waiter. Here all the futures waiting on one event share
    /// one crate thread, which parks on the event's futex word and wakes
    /// them (see the crate's "Using it from async code").
    ///
    /// Cancellation: dropping the future at any point changes nothing (an
    /// event is not consumed by a wait); its waker is withdrawn.
    ///
    /// # Errors
    /// As [`wait`](Event::wait): [`ErrorKind::PeerDied`] if a process
    /// sharing the event died (found within about 50 ms, as there).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let e = multiproc::Event::new().unwrap();
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     rt.block_on(async {
    ///         let setter = e.clone();
    ///         let t = std::thread::spawn(move || setter.set());
    ///         e.wait_async().await.unwrap();
    ///         t.join().unwrap();
    ///     });
    /// }
    /// ```
    pub fn wait_async(&self) -> impl std::future::Future<Output = Result<()>> + '_ {
        let slice = crate::async_wait::CHECK_SLICE;
        self.shared.wait_async(
            |b| &b.flag,
            0,
            move |checked| {
                if checked {
                    return crate::async_wait::not_now(self.wait_timeout(slice));
                }
                Ok(self.is_set().then_some(()))
            },
        )
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<()> {
        let b = self.shared.block();
        let mut wait = Wait::new(deadline);
        if self.is_set() {
            return Ok(());
        }
        // A set already on its way (a peer that is running answers in
        // about a microsecond) is seen without a futex sleep and wake,
        // which cost 20-30 µs between two processes on a 2-core VM, and
        // without the liveness check, which reads `/proc` for every
        // participant (5-10 µs): a set flag is the answer whoever died.
        if spin_first(&wait, || self.is_set()) {
            return Ok(());
        }
        wait.check(|| self.shared.check_peers())?;
        loop {
            if self.is_set() {
                return Ok(());
            }
            wait.check(|| self.shared.check_peers())?;
            wait.sleep_on(
                &b.flag,
                0,
                "Event::wait_timeout: the event was not set in time",
            )?;
        }
    }
}
