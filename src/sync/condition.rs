//! `Condition`: wait for a notification while holding a lock; waiters are woken exactly, oldest first.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// Waiters one `Condition` can hold at once.
const WAITER_SLOTS: usize = 256;
const SLOT_FREE: u32 = 0;
const SLOT_TAKEN: u32 = 1;
const SLOT_WAITING: u32 = 2;
const SLOT_NOTIFIED: u32 = 3;

in_place! {
    /// A waiter's place: its state (a futex word it sleeps on) and its
    /// arrival number.
    struct WaiterSlot {
        state: AtomicU32,
        arrival: AtomicU32,
    }
}

primitive! {
    /// A condition variable with its own lock, shared between processes.
    ///
    /// Python counterpart: `multiprocessing.Condition()`: `with cond:` is
    /// `let mut g = cond.lock()?;`, `cond.wait()` is `cond.wait(&mut g)?`,
    /// `notify(n)`, `notify_all()`.
    ///
    /// Robust: the lock is robust like [`Lock`]; a process sharing the
    /// condition that dies abruptly breaks it ([`ErrorKind::PeerDied`]).
    ///
    /// ```
    /// use multiproc::{Condition, Process, SharedValue};
    ///
    /// fn producer((cond, ready): (Condition, SharedValue<u32>)) {
    ///     let _g = cond.lock().unwrap();
    ///     ready.set(1);
    ///     cond.notify_all();
    /// }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let cond = Condition::new().unwrap();
    ///     let ready = SharedValue::new(0u32).unwrap();
    ///     let mut g = cond.lock().unwrap();
    ///     let p = Process::spawn(producer, (cond.clone(), ready.clone())).unwrap();
    ///     while ready.get() == 0 {
    ///         cond.wait(&mut g).unwrap();
    ///     }
    ///     drop(g);
    ///     p.join().unwrap();
    /// }
    /// ```
    pub struct Condition over ConditionBlock as Condition {
        mutex: MutexWord,
        /// Hands out arrival numbers: `notify` chooses the oldest waiters.
        arrivals: AtomicU32,
        _pad: AtomicU32,
        /// One slot per waiting process (thread), as Python keeps one lock
        /// per waiter: `notify(n)` marks exactly n slots.
        waiters: [WaiterSlot; WAITER_SLOTS],
    }
    wake_all: |b| {
        sys::futex_wake(&b.mutex.word, u32::MAX);
        // SYNC: Relaxed: a waiter that starts waiting after this look
        // checks `broken` itself within a liveness period.
        for slot in b
            .waiters
            .iter()
            .filter(|s| s.state.load(Ordering::Relaxed) == SLOT_WAITING)
        {
            sys::futex_wake(&slot.state, u32::MAX);
        }
    }
}

/// Holds a [`Condition`]'s lock.
///
/// ```
/// let c = multiproc::Condition::new().unwrap();
/// let _g: multiproc::ConditionGuard<'_> = c.lock().unwrap();
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
}

impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        self.cond.shared.block().mutex.unlock();
    }
}

impl std::fmt::Debug for ConditionGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConditionGuard")
    }
}

impl Condition {
    /// A new condition with its own (non-re-entrant) lock.
    ///
    /// # Errors
    /// As [`Lock::new`].
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// # drop(c);
    /// ```
    pub fn new() -> Result<Condition> {
        Ok(Condition {
            shared: Shared::create(|_| {})?,
        })
    }

    /// Takes the condition's lock.
    ///
    /// # Errors
    /// As [`Lock::lock`], plus [`ErrorKind::PeerDied`].
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// let _g = c.lock().unwrap();
    /// ```
    pub fn lock(&self) -> Result<ConditionGuard<'_>> {
        self.relock(None)
    }

    fn relock(&self, deadline: Option<Instant>) -> Result<ConditionGuard<'_>> {
        let b = self.shared.block();
        match b
            .mutex
            .lock(deadline, "Condition::lock", &|| self.shared.check_peers())?
        {
            Acquired::Clean => Ok(ConditionGuard { cond: self }),
            Acquired::OwnerDied(owner) => {
                b.mutex.unlock();
                Err(owner_died("Condition", owner))
            }
        }
    }

    /// Releases the lock, waits for a notification, retakes the lock.
    /// Like every condition variable it may wake spuriously: wait in a loop
    /// that re-checks your predicate.
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`], [`ErrorKind::OwnerDied`] (while retaking
    /// the lock; `guard` is then no longer holding it — drop it).
    ///
    /// ```no_run
    /// let c = multiproc::Condition::new().unwrap();
    /// let mut g = c.lock().unwrap();
    /// c.wait(&mut g).unwrap(); // until another process calls notify
    /// ```
    pub fn wait(&self, guard: &mut ConditionGuard<'_>) -> Result<()> {
        self.wait_until(guard, None)
    }

    /// As [`wait`](Condition::wait), at most `timeout`. The lock is held
    /// again when this returns, also on timeout.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`wait`](Condition::wait).
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// let mut g = c.lock().unwrap();
    /// let e = c.wait_timeout(&mut g, std::time::Duration::from_millis(5)).unwrap_err();
    /// assert!(e.is_timeout());
    /// ```
    pub fn wait_timeout(&self, guard: &mut ConditionGuard<'_>, timeout: Duration) -> Result<()> {
        self.wait_until(guard, deadline_after(timeout))
    }

    fn wait_until(&self, guard: &mut ConditionGuard<'_>, deadline: Option<Instant>) -> Result<()> {
        debug_assert!(std::ptr::eq(guard.cond, self), "guard of another Condition");
        let b = self.shared.block();
        // The slot is taken and marked waiting before the lock is let go,
        // so a notify that follows the caller's check of its predicate
        // sees this waiter.
        let slot = Self::arrive(b)?;
        b.mutex.unlock();
        let mut wait = Wait::new(deadline);
        let timed_out = "Condition::wait_timeout: no notify came in time";
        // A notify from a peer that is running comes within microseconds:
        // looked for before the liveness check (a `/proc` read for every
        // participant) and the futex sleep, as `Event::wait` does.
        // SYNC: Acquire, as in the loop below.
        spin_first(&wait, || {
            slot.state.load(Ordering::Acquire) == SLOT_NOTIFIED
        });
        let outcome = loop {
            // SYNC: Acquire pairs with the Release CAS in `notify`.
            if slot.state.load(Ordering::Acquire) == SLOT_NOTIFIED {
                break Ok(());
            }
            if let Err(e) = wait
                .check(|| self.shared.check_peers())
                .and_then(|()| wait.sleep_on(&slot.state, SLOT_WAITING, timed_out))
            {
                break Err(e);
            }
        };
        // Leaving un-notified: withdraw, unless a notify chose this slot
        // in the meantime (then this waiter was notified after all).
        // SYNC: AcqRel pairs with the CAS in `notify`.
        let withdrawn = slot
            .state
            .compare_exchange(
                SLOT_WAITING,
                SLOT_TAKEN,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        let outcome = if withdrawn { outcome } else { Ok(()) };
        // SYNC: Release pairs with the Acquire CAS in `arrive`.
        slot.state.store(SLOT_FREE, Ordering::Release);
        // Retake the lock whatever happened, so the guard stays truthful.
        match b.mutex.lock(None, "Condition::wait", &|| Ok(()))? {
            Acquired::Clean => outcome,
            Acquired::OwnerDied(owner) => Err(owner_died("Condition", owner)),
        }
    }

    /// Takes a free waiter slot and marks it waiting, with the next
    /// arrival number.
    fn arrive(b: &ConditionBlock) -> Result<&WaiterSlot> {
        let slot = b
            .waiters
            .iter()
            .find(|s| {
                // SYNC: Acquire pairs with the Release store that freed it.
                s.state
                    .compare_exchange(SLOT_FREE, SLOT_TAKEN, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidState,
                    format!(
                        "Condition::wait: {WAITER_SLOTS} waiters already wait on this condition"
                    ),
                )
            })?;
        // SYNC: Relaxed: only the order of arrivals matters; the Release
        // store of the state below publishes it to `notify`.
        let n = b.arrivals.fetch_add(1, Ordering::Relaxed);
        slot.arrival.store(n, Ordering::Relaxed);
        // SYNC: Release pairs with the Acquire loads in `notify`.
        slot.state.store(SLOT_WAITING, Ordering::Release);
        Ok(slot)
    }

    /// Wakes up to `n` of the processes waiting now, the longest-waiting
    /// first (Python's `notify(n)`): exactly `min(n, waiting)` of them
    /// return from [`wait`](Condition::wait).
    ///
    /// ```
    /// let c = multiproc::Condition::new().unwrap();
    /// c.notify(1);
    /// ```
    pub fn notify(&self, n: u32) {
        let b = self.shared.block();
        let mut left = n;
        while left > 0 {
            // SYNC: Relaxed: a reference point for arrival ages only.
            let now = b.arrivals.load(Ordering::Relaxed);
            // The oldest waiting slot (arrival numbers wrap: compare ages).
            let oldest = b
                .waiters
                .iter()
                // SYNC: Acquire pairs with the Release store in `arrive`.
                .filter(|s| s.state.load(Ordering::Acquire) == SLOT_WAITING)
                .max_by_key(|s| now.wrapping_sub(s.arrival.load(Ordering::Relaxed)));
            let Some(slot) = oldest else {
                return;
            };
            // SYNC: AcqRel pairs with the waiter's Acquire load and its
            // withdrawing CAS: exactly one of the two wins the slot.
            if slot
                .state
                .compare_exchange(
                    SLOT_WAITING,
                    SLOT_NOTIFIED,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                sys::futex_wake(&slot.state, 1);
                left -= 1;
            }
        }
    }

    /// Wakes one waiter.
    ///
    /// ```
    /// multiproc::Condition::new().unwrap().notify_one();
    /// ```
    pub fn notify_one(&self) {
        self.notify(1);
    }

    /// Wakes every waiter.
    ///
    /// ```
    /// multiproc::Condition::new().unwrap().notify_all();
    /// ```
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }
}
