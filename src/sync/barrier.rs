//! `Barrier`: parties wait until all of them arrive.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

primitive! {
    /// Makes `parties` processes (or threads) wait until all have arrived.
    ///
    /// Python counterpart: `multiprocessing.Barrier(parties)`. As in Python,
    /// `wait` returns each party a different index from 0 to `parties - 1`, so
    /// `if b.wait()? == 0 { … }` picks exactly one party to act after the
    /// barrier. The numbering is Python's too: the first party to arrive gets
    /// 0 and the last `parties - 1`.
    ///
    /// Robust: if a process sharing the barrier dies abruptly, or a waiter times
    /// out, the barrier is broken and every waiter gets an error
    /// ([`ErrorKind::PeerDied`] / [`ErrorKind::Timeout`]), like Python's
    /// `BrokenBarrierError`.
    ///
    /// ```
    /// use multiproc::{Barrier, Process};
    ///
    /// fn party(b: Barrier) -> u32 { b.wait().unwrap() }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let b = Barrier::new(3).unwrap();
    ///     let ps: Vec<_> = (0..2).map(|_| Process::spawn(party, b.clone()).unwrap()).collect();
    ///     let mine = b.wait().unwrap();
    ///     let mut all: Vec<u32> = ps.into_iter().map(|p| p.join().unwrap()).collect();
    ///     all.push(mine);
    ///     all.sort();
    ///     assert_eq!(all, vec![0, 1, 2]);
    /// }
    /// ```
    pub struct Barrier over BarrierBlock as Barrier {
        parties: AtomicU32,
        arrived: AtomicU32,
        generation: AtomicU32,
    }
    wake_all: |b| sys::futex_wake(&b.generation, u32::MAX)
}

impl Barrier {
    /// A barrier for `parties` participants (at least 1).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] for 0 parties; otherwise as
    /// [`Lock::new`].
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1).unwrap();
    /// assert_eq!(b.wait().unwrap(), 0);
    /// ```
    pub fn new(parties: u32) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "a barrier needs at least one party",
            ));
        }
        Ok(Barrier {
            shared: Shared::create(|b: &BarrierBlock| b.parties.store(parties, Ordering::Relaxed))?,
        })
    }

    /// The number of parties.
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(4).unwrap().parties(), 4);
    /// ```
    pub fn parties(&self) -> u32 {
        // SYNC: Relaxed: set once, before the Release store of `magic`.
        self.shared.block().parties.load(Ordering::Relaxed)
    }

    /// How many parties wait at the barrier now (Python's `n_waiting`).
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(3).unwrap().n_waiting(), 0);
    /// ```
    pub fn n_waiting(&self) -> u32 {
        // SYNC: Relaxed: a momentary reading, like Python's.
        self.shared.block().arrived.load(Ordering::Relaxed)
    }

    /// Whether the barrier is broken: a wait timed out or a process
    /// sharing it died (Python's `broken`). Every wait then fails.
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2).unwrap();
    /// assert!(!b.broken());
    /// let _ = b.wait_timeout(std::time::Duration::from_millis(1));
    /// assert!(b.broken());
    /// ```
    pub fn broken(&self) -> bool {
        // SYNC: Acquire pairs with the Release stores of `broken`.
        self.shared.block().header.broken.load(Ordering::Acquire) != 0
    }

    /// Waits for all parties; returns this party's index in the order of
    /// arrival (0 for the first, `parties - 1` for the last, as Python).
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`] if the barrier is broken.
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1).unwrap();
    /// b.wait().unwrap();
    /// ```
    pub fn wait(&self) -> Result<u32> {
        self.wait_until(None)
    }

    /// As [`wait`](Barrier::wait), at most `timeout`; a timeout breaks the
    /// barrier for everyone.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`wait`](Barrier::wait).
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2).unwrap();
    /// assert!(b.wait_timeout(std::time::Duration::from_millis(5)).unwrap_err().is_timeout());
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        self.wait_until(deadline_after(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<u32> {
        let b = self.shared.block();
        self.shared.check_peers()?;
        // SYNC: Relaxed: as in `parties()`.
        let parties = b.parties.load(Ordering::Relaxed).max(1);
        // SYNC: Acquire pairs with the Release fetch_add of `generation` by
        // the last arrival of the previous round.
        let generation = b.generation.load(Ordering::Acquire);
        // SYNC: AcqRel: each arrival sees the earlier arrivals' writes, and
        // the last one publishes all of them through `generation`.
        let arrived = b.arrived.fetch_add(1, Ordering::AcqRel) + 1;
        if arrived >= parties {
            // SYNC: Relaxed, published by the Release fetch_add of `generation`.
            b.arrived.store(0, Ordering::Relaxed);
            // SYNC: Release pairs with the Acquire loads of waiters below.
            b.generation.fetch_add(1, Ordering::Release);
            sys::futex_wake(&b.generation, u32::MAX);
            return Ok(parties - 1);
        }
        // Python's numbering: arrivals count up from 0.
        let index = arrived - 1;
        let mut wait = Wait::new(deadline);
        // The check on entry above was this wait's first.
        wait.liveness_due();
        let timed_out = "Barrier::wait_timeout: not every party arrived in time; \
                         the barrier is now broken for all of them";
        loop {
            // SYNC: Acquire pairs with the Release fetch_add above.
            if b.generation.load(Ordering::Acquire) != generation {
                return Ok(index);
            }
            wait.check(|| self.shared.check_peers())?;
            if let Err(e) = wait.sleep_on(&b.generation, generation, timed_out) {
                // Python: a timed-out wait breaks the barrier for all.
                b.header.broken.store(1, Ordering::Release);
                b.wake_all();
                return Err(e);
            }
            if b.header.broken.load(Ordering::Acquire) != 0 {
                return Err(Error::new(
                    ErrorKind::PeerDied,
                    "this Barrier is broken: another party's wait timed out, or a \
                     process sharing it died",
                ));
            }
        }
    }
}
