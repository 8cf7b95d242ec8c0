//! The lock word every mutex-like primitive shares: owner pid plus a waiters bit, taken over from a dead owner.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use super::*;

in_place! {
    /// The lock word: 0 = free, else the owner's pid, plus `WAITERS` if someone
    /// may be sleeping on it.
    pub(super) struct MutexWord {
        pub(super) word: AtomicU32,
    }
}

pub(super) enum Acquired {
    Clean,
    /// Taken over from a dead owner.
    OwnerDied(u32),
}

impl MutexWord {
    /// One attempt, never waiting: `Some(Clean)` if the lock was free,
    /// `Some(OwnerDied)` if its holder had died (the lock is taken over, as
    /// in [`lock`](Self::lock)), `None` while a live process holds it.
    pub(super) fn try_lock(&self) -> Option<Acquired> {
        let me = pid();
        // SYNC: Relaxed: a snapshot to decide what to try; the CAS carries
        // the ordering.
        let cur = self.word.load(Ordering::Relaxed);
        let owner = cur & !WAITERS;
        let taken = |to| {
            // SYNC: Acquire pairs with the Release swap in `unlock` (or, for a
            // dead owner, makes its writes as visible as they will ever be).
            self.word
                .compare_exchange(
                    cur,
                    to | (cur & WAITERS),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
        };
        if owner == 0 {
            return taken(me).then_some(Acquired::Clean);
        }
        // A holder in this process is alive by definition: no system call.
        if owner != me && !sys::process_alive(owner) && taken(me) {
            return Some(Acquired::OwnerDied(owner));
        }
        None
    }

    /// Takes the lock, or fails at `deadline` with `timed_out` as the
    /// message.
    pub(super) fn lock(
        &self,
        deadline: Option<Instant>,
        timed_out: &str,
        check: &dyn Fn() -> Result<()>,
    ) -> Result<Acquired> {
        let me = pid();
        if me & WAITERS != 0 {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "pid too large for a lock word",
            ));
        }
        let mut spins = 0;
        let mut contended = 0;
        let mut wait = Wait::new(deadline);
        loop {
            // SYNC: Relaxed: a snapshot to decide what to try; every transition
            // is a CAS carrying its own ordering.
            let cur = self.word.load(Ordering::Relaxed);
            if cur & !WAITERS == 0 {
                // SYNC: Acquire pairs with the Release swap in `unlock`.
                if self
                    .word
                    .compare_exchange(
                        cur,
                        me | contended | (cur & WAITERS),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
                {
                    return Ok(Acquired::Clean);
                }
                continue;
            }
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let owner = cur & !WAITERS;
            if wait.liveness_due() {
                if !sys::process_alive(owner) {
                    // Whoever swaps the dead owner out first takes the lock.
                    // SYNC: Acquire as in the clean path (the dead owner's
                    // writes are as visible as they will ever be).
                    if self
                        .word
                        .compare_exchange(
                            cur,
                            me | (cur & WAITERS),
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        return Ok(Acquired::OwnerDied(owner));
                    }
                    continue;
                }
                check()?;
            }
            if cur & WAITERS == 0
                && self
                    .word
                    // SYNC: Relaxed: setting the waiters bit publishes nothing; the
                    // futex re-checks the word in the kernel.
                    .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            contended = WAITERS;
            wait.sleep_on(&self.word, cur | WAITERS, timed_out)?;
        }
    }

    /// One sleep of an async waiter thread while the word is held: it sets
    /// the waiters bit first, as a blocked `lock` does, so the holder's
    /// `unlock` wakes it. Returns early if the word changes.
    pub(super) fn park(&self, slice: std::time::Duration) {
        // SYNC: Relaxed: a snapshot; the futex compares the word itself.
        let cur = self.word.load(Ordering::Relaxed);
        if cur & !WAITERS == 0 {
            return;
        }
        if cur & WAITERS == 0
            && self
                .word
                // SYNC: Relaxed, as setting the bit in `lock`.
                .compare_exchange(cur, cur | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        sys::futex_wait(&self.word, cur | WAITERS, slice);
    }

    pub(super) fn unlock(&self) {
        // SYNC: Release pairs with the Acquire CAS in `lock`/`try_lock`.
        let prev = self.word.swap(0, Ordering::Release);
        if prev & WAITERS != 0 {
            sys::futex_wake(&self.word, 1);
        }
    }

    pub(super) fn owner(&self) -> u32 {
        // SYNC: Relaxed: an observation (`is_locked`, RLock's ownership
        // test, which only the owner thread itself can make true).
        self.word.load(Ordering::Relaxed) & !WAITERS
    }
}

pub(super) fn owner_died(what: &str, owner: u32) -> Error {
    Error::new(
        ErrorKind::OwnerDied,
        format!("{what}: holder {owner} died; the lock was released, the data it guarded may be inconsistent"),
    )
    .with_pid(owner)
}
