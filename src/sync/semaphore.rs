//! `Semaphore` and `BoundedSemaphore`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

primitive! {
    /// A counter of permits shared between processes.
    ///
    /// Python counterpart: `multiprocessing.Semaphore(n)`; for
    /// `BoundedSemaphore(n)` see [`BoundedSemaphore`].
    ///
    /// Robust: if a process sharing the semaphore dies abruptly (it may have
    /// held permits that are now lost), the semaphore is broken and every
    /// waiter gets [`ErrorKind::PeerDied`].
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(2).unwrap();
    /// sem.acquire().unwrap();
    /// sem.acquire().unwrap();
    /// assert!(!sem.try_acquire().unwrap());
    /// sem.release().unwrap();
    /// assert_eq!(sem.value(), 1);
    /// ```
    pub struct Semaphore over SemaphoreBlock as Semaphore {
        value: AtomicU32,
        /// The value `release` may not exceed, if `bounded` is non-zero.
        bound: AtomicU32,
        bounded: AtomicU32,
    }
    wake_all: |b| sys::futex_wake(&b.value, u32::MAX)
}

/// A semaphore whose `release` fails past its initial value: a release
/// without a matching acquire is caught as the bug it is.
///
/// Python counterpart: `multiprocessing.BoundedSemaphore(n)`. Its own type
/// (not a flavour of [`Semaphore`]), so that `BoundedSemaphore::new(n)`,
/// what a Python user writes, is bounded.
///
/// ```
/// let sem = multiproc::BoundedSemaphore::new(1).unwrap();
/// assert!(sem.release().is_err()); // would exceed 1
/// sem.acquire().unwrap();
/// sem.release().unwrap();
/// assert_eq!(sem.value(), 1);
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    inner: Semaphore,
}

impl BoundedSemaphore {
    /// A semaphore with `value` permits, which `release` may not exceed.
    ///
    /// # Errors
    /// As [`Lock::new`].
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(2).unwrap();
    /// assert_eq!(sem.value(), 2);
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            inner: Semaphore::with_bound(value, Some(value))?,
        })
    }

    /// Takes a permit, waiting for one if needed.
    ///
    /// # Errors
    /// As [`Semaphore::acquire`].
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(1).unwrap();
    /// sem.acquire().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.inner.acquire()
    }

    /// As [`acquire`](BoundedSemaphore::acquire), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Semaphore::acquire_timeout`].
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(0).unwrap();
    /// let e = sem.acquire_timeout(std::time::Duration::from_millis(10)).unwrap_err();
    /// assert!(e.is_timeout());
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        self.inner.acquire_timeout(timeout)
    }

    /// Takes a permit if one is free: `Ok(true)`; `Ok(false)` otherwise.
    ///
    /// # Errors
    /// As [`Semaphore::try_acquire`].
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(0).unwrap();
    /// assert!(!sem.try_acquire().unwrap());
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        self.inner.try_acquire()
    }

    /// [`acquire`](BoundedSemaphore::acquire) as a `Future`; as
    /// [`Semaphore::acquire_async`], cancellation safety included.
    ///
    /// # Errors
    /// As [`acquire`](BoundedSemaphore::acquire).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let sem = multiproc::BoundedSemaphore::new(1).unwrap();
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     rt.block_on(async { sem.acquire_async().await.unwrap() });
    ///     sem.release().unwrap();
    /// }
    /// ```
    pub fn acquire_async(&self) -> impl std::future::Future<Output = Result<()>> + '_ {
        self.inner.acquire_async()
    }

    /// Returns a permit.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if it would exceed the initial value
    /// (Python's `ValueError: Semaphore released too many times`).
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(1).unwrap();
    /// sem.acquire().unwrap();
    /// sem.release().unwrap();
    /// assert!(sem.release().is_err());
    /// ```
    pub fn release(&self) -> Result<()> {
        self.inner.release()
    }

    /// The number of free permits now (Python's `get_value()`).
    ///
    /// ```
    /// assert_eq!(multiproc::BoundedSemaphore::new(4).unwrap().value(), 4);
    /// ```
    pub fn value(&self) -> u32 {
        self.inner.value()
    }
}

impl Serialize for BoundedSemaphore {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de> Deserialize<'de> for BoundedSemaphore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let inner = Semaphore::deserialize(d)?;
        // SYNC: Relaxed: `bounded` never changes after `create` (published
        // by its Release store of `magic`, which `open` acquired).
        if inner.shared.block().bounded.load(Ordering::Relaxed) == 0 {
            return Err(crate::error::de_custom(
                "the handle names a Semaphore, not a BoundedSemaphore",
            ));
        }
        Ok(BoundedSemaphore { inner })
    }
}

impl std::fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedSemaphore").finish_non_exhaustive()
    }
}

impl Semaphore {
    /// A semaphore with `value` permits.
    ///
    /// # Errors
    /// As [`Lock::new`].
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(3).unwrap();
    /// assert_eq!(sem.value(), 3);
    /// ```
    pub fn new(value: u32) -> Result<Semaphore> {
        Self::with_bound(value, None)
    }

    fn with_bound(value: u32, bound: Option<u32>) -> Result<Semaphore> {
        Ok(Semaphore {
            shared: Shared::create(|b: &SemaphoreBlock| {
                // SYNC: Relaxed, published by the Release store of `magic` in
                // `Shared::create`.
                b.value.store(value, Ordering::Relaxed);
                b.bound.store(bound.unwrap_or(u32::MAX), Ordering::Relaxed);
                b.bounded
                    .store(u32::from(bound.is_some()), Ordering::Relaxed);
            })?,
        })
    }

    /// Takes a permit, waiting for one if needed.
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`] if a process sharing it died and no permit
    /// is free (a free permit is taken whoever died).
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(1).unwrap();
    /// sem.acquire().unwrap();
    /// ```
    pub fn acquire(&self) -> Result<()> {
        self.acquire_until(None)
    }

    /// As [`acquire`](Semaphore::acquire), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`acquire`](Semaphore::acquire).
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(0).unwrap();
    /// let e = sem.acquire_timeout(std::time::Duration::from_millis(10)).unwrap_err();
    /// assert!(e.is_timeout());
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        self.acquire_until(deadline_after(timeout))
    }

    /// Takes a permit if one is free: `Ok(true)`; `Ok(false)` otherwise.
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`] if the semaphore is broken.
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(0).unwrap();
    /// assert!(!sem.try_acquire().unwrap());
    /// ```
    pub fn try_acquire(&self) -> Result<bool> {
        let b = self.shared.block();
        // SYNC: Acquire pairs with the Release store of `broken` in
        // `check_peers`.
        if b.header.broken.load(Ordering::Acquire) != 0 {
            return self.shared.check_peers().map(|()| false);
        }
        Ok(Self::take(&b.value))
    }

    /// [`acquire`](Semaphore::acquire) as a `Future`, for async code: it
    /// resolves once this call took a permit.
    ///
    /// Python: `await loop.run_in_executor(None, sem.acquire)`. Here the
    /// futures waiting on one semaphore share one crate thread that parks
    /// on its futex word and wakes them when a permit comes free.
    ///
    /// Cancellation: a permit is taken only in the poll that returns
    /// `Ready(Ok(()))`; a future dropped before that took nothing and
    /// withdraws its waker. (One `release` wakes one sleeper; if the
    /// waiter thread was that sleeper and the future it woke is dropped, a
    /// blocking `acquire` elsewhere finds the permit at its next liveness
    /// slice, within 50 ms, rather than at once.)
    ///
    /// # Errors
    /// As [`acquire`](Semaphore::acquire).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let sem = multiproc::Semaphore::new(1).unwrap();
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     rt.block_on(async {
    ///         sem.acquire_async().await.unwrap();
    ///         assert_eq!(sem.value(), 0);
    ///         sem.release().unwrap();
    ///     });
    /// }
    /// ```
    pub fn acquire_async(&self) -> impl std::future::Future<Output = Result<()>> + '_ {
        let slice = crate::async_wait::CHECK_SLICE;
        self.shared.wait_async(
            |b| &b.value,
            0,
            move |checked| {
                if checked {
                    return crate::async_wait::not_now(self.acquire_timeout(slice));
                }
                Ok(self.try_acquire()?.then_some(()))
            },
        )
    }

    fn take(value: &AtomicU32) -> bool {
        // SYNC: Relaxed snapshot; the CAS below carries the Acquire.
        let mut v = value.load(Ordering::Relaxed);
        while v > 0 {
            // SYNC: Acquire pairs with the Release fetch_add in `release`.
            match value.compare_exchange_weak(v, v - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    fn acquire_until(&self, deadline: Option<Instant>) -> Result<()> {
        let b = self.shared.block();
        let mut spins = 0;
        let mut wait = Wait::new(deadline);
        // The liveness check (a `/proc` read for every participant) comes
        // only once a permit has not come in the spin: a free permit is
        // the answer whoever died.
        loop {
            if Self::take(&b.value) {
                return Ok(());
            }
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            wait.check(|| self.shared.check_peers())?;
            wait.sleep_on(
                &b.value,
                0,
                "Semaphore::acquire_timeout: no permit came free in time",
            )?;
        }
    }

    /// Returns a permit.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if a bounded semaphore would exceed its
    /// initial value (Python's `ValueError`).
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(0).unwrap();
    /// sem.release().unwrap();
    /// assert_eq!(sem.value(), 1);
    /// ```
    pub fn release(&self) -> Result<()> {
        let b = self.shared.block();
        // SYNC: Relaxed: `bound`/`bounded` never change after `create`
        // (published by its Release store of `magic`).
        let bound = if b.bounded.load(Ordering::Relaxed) != 0 {
            b.bound.load(Ordering::Relaxed)
        } else {
            u32::MAX
        };
        // SYNC: Relaxed snapshot; the CAS below carries the Release.
        let mut v = b.value.load(Ordering::Relaxed);
        loop {
            if v >= bound {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    "semaphore released too many times",
                ));
            }
            // SYNC: Release pairs with the Acquire CAS in `take`.
            match b
                .value
                .compare_exchange_weak(v, v + 1, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => v = now,
            }
        }
        sys::futex_wake(&b.value, 1);
        Ok(())
    }

    /// The number of free permits now (Python's `get_value()`).
    ///
    /// ```
    /// assert_eq!(multiproc::Semaphore::new(4).unwrap().value(), 4);
    /// ```
    pub fn value(&self) -> u32 {
        // SYNC: Relaxed: a momentary reading, like Python's get_value().
        self.shared.block().value.load(Ordering::Relaxed)
    }
}
