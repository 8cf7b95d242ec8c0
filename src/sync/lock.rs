//! `Lock`: a robust cross-process mutex.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

primitive! {
    /// A lock shared between processes.
    ///
    /// Python counterpart: `multiprocessing.Lock()`; `with lock:` is
    /// `let _guard = lock.lock()?;`, `acquire(timeout=t)` is
    /// [`lock_timeout`](Lock::lock_timeout), `acquire(False)` is
    /// [`try_lock`](Lock::try_lock).
    ///
    /// Robust: if the process holding the lock dies, the next `lock()` in
    /// another process (within about 50 ms) returns [`ErrorKind::OwnerDied`] and
    /// the lock is free again; lock once more to continue, after repairing
    /// whatever the dead holder was changing.
    ///
    /// ```
    /// use multiproc::{Lock, Process, SharedValue};
    ///
    /// fn add(( lock, total): (Lock, SharedValue<u64>)) {
    ///     for _ in 0..1000 {
    ///         let _g = lock.lock().unwrap();
    ///         total.set(total.get() + 1);
    ///     }
    /// }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let lock = Lock::new().unwrap();
    ///     let total = SharedValue::new(0u64).unwrap();
    ///     let ps: Vec<_> = (0..2)
    ///         .map(|_| Process::spawn(add, (lock.clone(), total.clone())).unwrap())
    ///         .collect();
    ///     for p in ps { p.join().unwrap(); }
    ///     assert_eq!(total.get(), 2000);
    /// }
    /// ```
    pub struct Lock over LockBlock as Lock {
        mutex: MutexWord,
    }
    wake_all: |b| sys::futex_wake(&b.mutex.word, u32::MAX)
}

/// Holds a [`Lock`]; unlocks on drop.
///
/// ```
/// let lock = multiproc::Lock::new().unwrap();
/// let guard = lock.lock().unwrap();
/// assert!(lock.try_lock().unwrap().is_none());
/// drop(guard);
/// assert!(lock.try_lock().unwrap().is_some());
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.shared.block().mutex.unlock();
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

impl Lock {
    /// A new, unlocked lock.
    ///
    /// # Errors
    /// [`ErrorKind::NoSpace`] or [`ErrorKind::Io`] if the shared memory
    /// cannot be created.
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// # drop(lock);
    /// ```
    pub fn new() -> Result<Lock> {
        Ok(Lock {
            shared: Shared::create(|_| {})?,
        })
    }

    /// Waits for the lock (Python's `acquire()`).
    ///
    /// # Errors
    /// [`ErrorKind::OwnerDied`]: the holder died holding it (the lock is
    /// free again; call `lock` again).
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// let _guard = lock.lock().unwrap();
    /// ```
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.lock_until(None)
    }

    /// Waits at most `timeout` (Python's `acquire(timeout=t)`).
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`lock`](Lock::lock).
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = multiproc::Lock::new().unwrap();
    /// let _held = lock.lock().unwrap();
    /// assert!(lock.lock_timeout(Duration::from_millis(10)).unwrap_err().is_timeout());
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.lock_until(deadline_after(timeout))
    }

    /// Takes the lock only if it is free (Python's `acquire(block=False)`):
    /// `Ok(None)` while another thread or process holds it.
    ///
    /// # Errors
    /// As [`lock`](Lock::lock): a holder that died is noticed here too.
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// let held = lock.try_lock().unwrap().expect("the lock was free");
    /// assert!(lock.try_lock().unwrap().is_none());
    /// # drop(held);
    /// ```
    pub fn try_lock(&self) -> Result<Option<LockGuard<'_>>> {
        match self.shared.block().mutex.try_lock() {
            Some(how) => self.held(how).map(Some),
            None => Ok(None),
        }
    }

    /// [`lock`](Lock::lock) as a `Future`, for async code: it resolves to
    /// the guard once this call took the lock.
    ///
    /// Python: `await loop.run_in_executor(None, lock.acquire)`. Here the
    /// futures waiting on one lock share one crate thread that parks on
    /// the lock word (with its waiters bit set, so an `unlock` anywhere
    /// wakes it) and wakes them when the lock comes free.
    ///
    /// The guard may be held across `.await`s and moved between threads;
    /// it unlocks on drop, wherever that happens. Hold it briefly: other
    /// processes wait meanwhile.
    ///
    /// Cancellation: the lock is taken only in the poll that returns the
    /// guard; a future dropped before that never held it and withdraws its
    /// waker.
    ///
    /// # Errors
    /// As [`lock`](Lock::lock): [`ErrorKind::OwnerDied`] (within about
    /// 50 ms) if the holder died holding it; the lock is free again.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let lock = multiproc::Lock::new().unwrap();
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     rt.block_on(async {
    ///         let guard = lock.lock_async().await.unwrap();
    ///         assert!(lock.try_lock().unwrap().is_none());
    ///         drop(guard);
    ///     });
    /// }
    /// ```
    pub fn lock_async(&self) -> impl std::future::Future<Output = Result<LockGuard<'_>>> + '_ {
        // A view without this handle's participant slot (see
        // `check_peers`).
        let block = self.shared.block.clone();
        let key = crate::async_wait::key_of(&block.get().mutex.word, 0);
        let slice = crate::async_wait::CHECK_SLICE;
        crate::async_wait::wait_for(
            key,
            move || Arc::new(LockSource { block }),
            move |checked| {
                if checked {
                    return crate::async_wait::not_now(self.lock_timeout(slice));
                }
                self.try_lock()
            },
        )
    }

    fn lock_until(&self, deadline: Option<Instant>) -> Result<LockGuard<'_>> {
        let timed_out = "Lock::lock_timeout: another process held the lock until the deadline";
        let how = self.shared.block().mutex.lock(deadline, timed_out, &|| {
            self.shared.segment().check_intact()
        })?;
        self.held(how)
    }

    /// The guard for a lock word this process just took, or the error that
    /// taking it revealed (the word is released again then).
    fn held(&self, how: Acquired) -> Result<LockGuard<'_>> {
        let mutex = &self.shared.block().mutex;
        match how {
            // Taken in memory a peer shrank away (before or during `lock`;
            // the fault replaced it with zeros): a lock word nobody else
            // sees excludes nobody.
            Acquired::Clean if self.shared.segment().lost() => {
                mutex.unlock();
                Err(self.shared.segment().lost_error())
            }
            Acquired::Clean => Ok(LockGuard { lock: self }),
            Acquired::OwnerDied(owner) => {
                mutex.unlock();
                Err(owner_died("Lock", owner))
            }
        }
    }

    /// `true` while some thread of some process holds the lock.
    ///
    /// ```
    /// let lock = multiproc::Lock::new().unwrap();
    /// let g = lock.lock().unwrap();
    /// assert!(lock.is_locked());
    /// # drop(g);
    /// ```
    pub fn is_locked(&self) -> bool {
        self.shared.block().mutex.owner() != 0
    }
}

/// What an async waiter thread watches for a [`Lock`]: the lock word.
struct LockSource {
    block: Typed<LockBlock>,
}

impl crate::async_wait::Source for LockSource {
    fn ready(&self) -> bool {
        self.block.get().mutex.owner() == 0
    }

    fn park(&self, slice: Duration) {
        self.block.get().mutex.park(slice);
    }

    fn healthy(&self) -> bool {
        let owner = self.block.get().mutex.owner();
        self.block.segment().check_intact().is_ok() && (owner == 0 || sys::pid_alive(owner))
    }
}
