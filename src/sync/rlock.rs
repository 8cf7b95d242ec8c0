//! `RLock`: a re-entrant cross-process lock, owned by one thread of one process.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

primitive! {
    /// A re-entrant lock: the thread holding it may take it again.
    ///
    /// Python counterpart: `multiprocessing.RLock()`. Robust like [`Lock`].
    ///
    /// ```
    /// let lock = multiproc::RLock::new().unwrap();
    /// let outer = lock.lock().unwrap();
    /// let inner = lock.lock().unwrap(); // same thread: fine
    /// drop(inner);
    /// drop(outer);
    /// ```
    pub struct RLock over RLockBlock as RLock {
        mutex: MutexWord,
        _pad: AtomicU32,
        /// `thread_token()` of the owning thread (meaningful with the pid in
        /// the lock word), 0 when free.
        owner_thread: AtomicU64,
        count: AtomicU32,
    }
    wake_all: |b| sys::futex_wake(&b.mutex.word, u32::MAX)
}

/// Holds an [`RLock`] once; the lock is released when the last guard of the
/// owning thread drops.
///
/// ```
/// let lock = multiproc::RLock::new().unwrap();
/// let _g = lock.lock().unwrap();
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    // Not Send: the release must happen on the owning thread.
    _not_send: PhantomData<*const ()>,
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let b = self.lock.shared.block();
        // SYNC: Relaxed: `count`/`owner_thread` are touched only by the owner
        // thread while it holds the mutex; `unlock`'s Release publishes.
        if b.count.fetch_sub(1, Ordering::Relaxed) == 1 {
            b.owner_thread.store(0, Ordering::Relaxed);
            b.mutex.unlock();
        }
    }
}

impl std::fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RLockGuard")
    }
}

impl RLock {
    /// A new, unlocked re-entrant lock.
    ///
    /// # Errors
    /// As [`Lock::new`].
    ///
    /// ```
    /// let lock = multiproc::RLock::new().unwrap();
    /// # drop(lock);
    /// ```
    pub fn new() -> Result<RLock> {
        Ok(RLock {
            shared: Shared::create(|_| {})?,
        })
    }

    /// Takes the lock, or takes it again if this thread holds it.
    ///
    /// # Errors
    /// As [`Lock::lock`].
    ///
    /// ```
    /// let lock = multiproc::RLock::new().unwrap();
    /// let _a = lock.lock().unwrap();
    /// let _b = lock.lock().unwrap();
    /// ```
    pub fn lock(&self) -> Result<RLockGuard<'_>> {
        self.lock_until(None)
    }

    /// As [`lock`](RLock::lock), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`Lock::lock`].
    ///
    /// ```
    /// let lock = multiproc::RLock::new().unwrap();
    /// let _g = lock.lock_timeout(std::time::Duration::from_secs(1)).unwrap();
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>> {
        self.lock_until(deadline_after(timeout))
    }

    /// Takes the lock if it is free or this thread already holds it
    /// (Python's `acquire(block=False)`); `Ok(None)` if another thread or
    /// process holds it.
    ///
    /// # Errors
    /// As [`Lock::try_lock`].
    ///
    /// ```
    /// let lock = multiproc::RLock::new().unwrap();
    /// let a = lock.try_lock().unwrap().expect("free");
    /// let b = lock.try_lock().unwrap().expect("re-entered");
    /// # drop((b, a));
    /// ```
    pub fn try_lock(&self) -> Result<Option<RLockGuard<'_>>> {
        let me = thread_token();
        if self.reenter(me) {
            return Ok(Some(self.guard()));
        }
        match self.shared.block().mutex.try_lock() {
            Some(how) => self.held(how, me).map(Some),
            None => Ok(None),
        }
    }

    fn guard(&self) -> RLockGuard<'_> {
        RLockGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    /// Counts one more hold if this thread (`me`) holds the lock already.
    fn reenter(&self, me: u64) -> bool {
        let b = self.shared.block();
        // Only the owning thread can have stored its own token with our pid
        // in the word, so this check cannot race with another owner.
        // SYNC: Relaxed: owner-thread-only fields (see `RLockGuard::drop`).
        if b.mutex.owner() == pid() && b.owner_thread.load(Ordering::Relaxed) == me {
            b.count.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Records this thread as the owner of the word it just took.
    fn took(&self, me: u64) {
        let b = self.shared.block();
        // SYNC: Relaxed: owner-thread-only fields (see `RLockGuard::drop`).
        b.owner_thread.store(me, Ordering::Relaxed);
        b.count.store(1, Ordering::Relaxed);
    }

    /// `true` while some thread of some process holds the lock (Python's
    /// `locked()`, 3.14).
    ///
    /// ```
    /// let lock = multiproc::RLock::new().unwrap();
    /// assert!(!lock.is_locked());
    /// let g = lock.lock().unwrap();
    /// assert!(lock.is_locked());
    /// # drop(g);
    /// ```
    pub fn is_locked(&self) -> bool {
        self.shared.block().mutex.owner() != 0
    }

    fn lock_until(&self, deadline: Option<Instant>) -> Result<RLockGuard<'_>> {
        let b = self.shared.block();
        let me = thread_token();
        if self.reenter(me) {
            return Ok(self.guard());
        }
        let timed_out = "RLock::lock_timeout: another process held the lock until the deadline";
        let how = b.mutex.lock(deadline, timed_out, &|| {
            self.shared.segment().check_intact()
        })?;
        self.held(how, me)
    }

    /// As `Lock::held`, recording thread `me` as the owner.
    fn held(&self, how: Acquired, me: u64) -> Result<RLockGuard<'_>> {
        let b = self.shared.block();
        match how {
            // As in `Lock::held`.
            Acquired::Clean if self.shared.segment().lost() => {
                b.mutex.unlock();
                Err(self.shared.segment().lost_error())
            }
            Acquired::Clean => {
                self.took(me);
                Ok(self.guard())
            }
            Acquired::OwnerDied(owner) => {
                // SYNC: Relaxed: owner-thread-only fields, published by the
                // Release in `unlock`.
                b.owner_thread.store(0, Ordering::Relaxed);
                b.count.store(0, Ordering::Relaxed);
                b.mutex.unlock();
                Err(owner_died("RLock", owner))
            }
        }
    }
}
