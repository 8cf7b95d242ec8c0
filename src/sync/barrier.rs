//! `Barrier`: parties wait until all of them arrive.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
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
    /// Broken as in Python: [`abort`](Barrier::abort), a wait that times
    /// out, or [`reset`](Barrier::reset) while parties wait makes every
    /// waiter (then and later, until `reset`) fail with
    /// [`ErrorKind::Broken`] (Python's `BrokenBarrierError`; the wait that
    /// timed out itself gets [`ErrorKind::Timeout`]). Robust: a process
    /// sharing the barrier that dies abruptly breaks it too
    /// ([`ErrorKind::PeerDied`]), so no party waits forever for it.
    ///
    /// Python's `Barrier(parties, action=f)` has no counterpart: a function
    /// stored in shared memory could be named by any process that writes
    /// there. Run it in the party whose index is 0, between two waits:
    /// `if b.wait()? == 0 { f() }; b.wait()?;` releases nobody before `f`
    /// returned, as Python's action does.
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
        /// Bumped by `reset` before it releases the waiters, so they can
        /// tell a reset from a completed round.
        resets: AtomicU32,
        /// The default timeout of `wait`, in nanoseconds; 0 for none.
        timeout_ns: AtomicU64,
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
        Self::create(parties, None)
    }

    /// A barrier whose [`wait`](Barrier::wait) gives up after `timeout`
    /// (Python's `Barrier(parties, timeout=t)`); the timeout travels with
    /// the barrier to every process that shares it.
    ///
    /// # Errors
    /// As [`new`](Barrier::new).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = multiproc::Barrier::with_timeout(2, Duration::from_millis(5)).unwrap();
    /// assert!(b.wait().unwrap_err().is_timeout());
    /// assert!(b.broken());
    /// ```
    pub fn with_timeout(parties: u32, timeout: Duration) -> Result<Barrier> {
        Self::create(parties, Some(timeout))
    }

    fn create(parties: u32, timeout: Option<Duration>) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "a barrier needs at least one party",
            ));
        }
        // 0 means "none": a zero timeout is kept as 1 ns (it times out at
        // once, as asked); one past u64 nanoseconds (584 years) as none.
        let ns = timeout.map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(0).max(1));
        let init = |b: &BarrierBlock| {
            // SYNC: Relaxed, published by the Release store of `magic`.
            b.parties.store(parties, Ordering::Relaxed);
            b.timeout_ns.store(ns, Ordering::Relaxed);
        };
        Ok(Barrier {
            shared: Shared::create(init)?,
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

    /// Whether the barrier is broken: aborted, a wait timed out, or a
    /// process sharing it died (Python's `broken`). Every wait then fails
    /// until [`reset`](Barrier::reset).
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

    /// Breaks the barrier (Python's `abort()`): every party waiting now,
    /// and every later `wait` until [`reset`](Barrier::reset), fails with
    /// [`ErrorKind::Broken`]. Use it when a party cannot go on, so the
    /// others do not wait for it.
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2).unwrap();
    /// b.abort();
    /// assert_eq!(b.wait().unwrap_err().kind(), multiproc::ErrorKind::Broken);
    /// ```
    pub fn abort(&self) {
        self.break_for(BROKEN_ABORTED);
    }

    /// Marks the barrier broken for `why` (unless it already is: the first
    /// reason stays) and wakes every waiter.
    fn break_for(&self, why: u32) {
        let b = self.shared.block();
        // SYNC: Release pairs with the Acquire loads of `broken` in waiters.
        let _ = b
            .header
            .broken
            .compare_exchange(0, why, Ordering::Release, Ordering::Relaxed);
        b.wake_all();
    }

    /// Returns the barrier to its empty, unbroken state (Python's
    /// `reset()`): parties waiting now fail with [`ErrorKind::Broken`];
    /// later waits start a new round.
    ///
    /// As Python's documentation says of its own, call it when the state
    /// of the other parties is known (none of them is arriving at that
    /// moment): a party that arrives *while* the reset runs may be counted
    /// in the new round and also told of the reset. A barrier broken by a
    /// process that died stays broken: that process can never arrive.
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2).unwrap();
    /// b.abort();
    /// b.reset();
    /// assert!(!b.broken());
    /// ```
    pub fn reset(&self) {
        let b = self.shared.block();
        // SYNC: Release, before the Release bump of `generation` below: a
        // waiter that sees the new generation (Acquire) sees this too.
        b.resets.fetch_add(1, Ordering::Release);
        // SYNC: Relaxed, published by the Release bump of `generation`.
        b.arrived.store(0, Ordering::Relaxed);
        // SYNC: Release pairs with the Acquire loads of `broken`.
        b.header.broken.store(0, Ordering::Release);
        // SYNC: Release pairs with the waiters' Acquire loads of it.
        b.generation.fetch_add(1, Ordering::Release);
        sys::futex_wake(&b.generation, u32::MAX);
    }

    /// Waits for all parties; returns this party's index in the order of
    /// arrival (0 for the first, `parties - 1` for the last, as Python).
    /// Waits at most the barrier's default timeout, if it was made
    /// [`with_timeout`](Barrier::with_timeout).
    ///
    /// # Errors
    /// [`ErrorKind::Broken`] if the barrier is broken or is reset meanwhile;
    /// [`ErrorKind::PeerDied`] if a process sharing it died;
    /// [`ErrorKind::Timeout`] past the default timeout (the barrier is then
    /// broken for all).
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1).unwrap();
    /// b.wait().unwrap();
    /// ```
    pub fn wait(&self) -> Result<u32> {
        // SYNC: Relaxed: set once, before the Release store of `magic`.
        match self.shared.block().timeout_ns.load(Ordering::Relaxed) {
            0 => self.wait_until(None),
            ns => self.wait_until(deadline_after(Duration::from_nanos(ns))),
        }
    }

    /// As [`wait`](Barrier::wait), at most `timeout` (instead of the
    /// default); a timeout breaks the barrier for everyone.
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

    /// [`wait`](Barrier::wait) as a `Future`, for async code: this party
    /// arrives at the first poll, and the future resolves (with its
    /// arrival index, as `wait` returns) once every party has arrived.
    ///
    /// Python: `await loop.run_in_executor(None, barrier.wait)`. Here the
    /// futures waiting on one barrier share one crate thread that parks on
    /// its generation word and wakes them when the round completes.
    ///
    /// The barrier's default timeout ([`with_timeout`](Barrier::with_timeout))
    /// is not applied: bound the wait with the runtime's own timeout
    /// (`tokio::time::timeout`), which drops the future.
    ///
    /// Cancellation: a party that has arrived cannot leave without the
    /// others waiting for it forever, so dropping the future after its
    /// first poll and before the round completes breaks the barrier, as a
    /// timed-out `wait` does in Python: every waiter (blocking or async)
    /// gets [`ErrorKind::Broken`] until [`reset`](Barrier::reset). A future
    /// never polled has not arrived and changes nothing.
    ///
    /// # Errors
    /// As [`wait`](Barrier::wait).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let barrier = multiproc::Barrier::new(2).unwrap();
    ///     let other = barrier.clone();
    ///     let t = std::thread::spawn(move || other.wait().unwrap());
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     let mine = rt.block_on(barrier.wait_async()).unwrap();
    ///     let theirs = t.join().unwrap();
    ///     assert_eq!(mine + theirs, 1); // indices 0 and 1
    /// }
    /// ```
    pub async fn wait_async(&self) -> Result<u32> {
        let (generation, resets, index) = match self.arrive()? {
            Arrival::Last(index) => return Ok(index),
            Arrival::Waiting {
                generation,
                resets,
                index,
            } => (generation, resets, index),
        };
        let mut leaving = Leaving {
            barrier: self,
            generation,
            armed: true,
        };
        let b = self.shared.block();
        let result = self
            .shared
            .wait_async(
                |b| &b.generation,
                generation,
                |checked| {
                    // SYNC: Acquire, as the load in `wait_until`.
                    if b.generation.load(Ordering::Acquire) != generation {
                        return Self::round_over(b, resets, index).map(Some);
                    }
                    // SYNC: Acquire pairs with the Release stores of `broken`.
                    let why = b.header.broken.load(Ordering::Acquire);
                    if why != 0 {
                        return Err(broken_error(Kind::Barrier, why));
                    }
                    if checked {
                        self.shared.check_peers()?;
                    }
                    Ok(None)
                },
            )
            .await;
        leaving.armed = false;
        result
    }

    /// This party's arrival: the last one completes the round.
    fn arrive(&self) -> Result<Arrival> {
        let b = self.shared.block();
        // A broken barrier refuses at once; dead participants are looked
        // for only by a party that must wait (`wait_until`).
        self.shared.check_broken()?;
        // SYNC: Relaxed: as in `parties()`.
        let parties = b.parties.load(Ordering::Relaxed).max(1);
        // SYNC: Acquire pairs with the Release bump in `reset`.
        let resets = b.resets.load(Ordering::Acquire);
        // SYNC: Acquire pairs with the Release fetch_add of `generation` by
        // the last arrival of the previous round (or a reset).
        let generation = b.generation.load(Ordering::Acquire);
        // SYNC: AcqRel: each arrival sees the earlier arrivals' writes, and
        // the last one publishes all of them through `generation`.
        let arrived = b.arrived.fetch_add(1, Ordering::AcqRel) + 1;
        if arrived >= parties {
            // SYNC: Relaxed, published by the Release fetch_add of `generation`.
            b.arrived.store(0, Ordering::Relaxed);
            // SYNC: Release pairs with the Acquire loads of waiters.
            b.generation.fetch_add(1, Ordering::Release);
            sys::futex_wake(&b.generation, u32::MAX);
            return Ok(Arrival::Last(parties - 1));
        }
        // Python's numbering: arrivals count up from 0.
        Ok(Arrival::Waiting {
            generation,
            resets,
            index: arrived - 1,
        })
    }

    /// The answer of a party whose round ended (its generation moved on):
    /// its index, or `Broken` if the round ended by a reset.
    fn round_over(b: &BarrierBlock, resets: u32, index: u32) -> Result<u32> {
        // SYNC: Relaxed: ordered by the caller's Acquire load of
        // `generation` (a reset bumps `resets` before it).
        if b.resets.load(Ordering::Relaxed) != resets {
            return Err(Error::new(
                ErrorKind::Broken,
                "Barrier::wait: the barrier was reset while this party waited",
            ));
        }
        Ok(index)
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<u32> {
        let b = self.shared.block();
        let (generation, resets, index) = match self.arrive()? {
            Arrival::Last(index) => return Ok(index),
            Arrival::Waiting {
                generation,
                resets,
                index,
            } => (generation, resets, index),
        };
        let mut wait = Wait::new(deadline);
        // The parties that are running arrive within microseconds: their
        // round ends in the spin, with no liveness check (a `/proc` read
        // for every participant) and no futex sleep and wake.
        // SYNC: Acquire, as in the loop below.
        spin_first(&wait, || b.generation.load(Ordering::Acquire) != generation);
        let timed_out = "Barrier::wait: not every party arrived in time; \
                         the barrier is now broken for all of them";
        loop {
            // SYNC: Acquire pairs with the Release fetch_add of the last
            // arrival, or of `reset` (whose earlier bump of `resets` this
            // load therefore also sees).
            if b.generation.load(Ordering::Acquire) != generation {
                return Self::round_over(b, resets, index);
            }
            wait.check(|| self.shared.check_peers())?;
            if let Err(e) = wait.sleep_on(&b.generation, generation, timed_out) {
                // Python: a timed-out wait breaks the barrier for all.
                self.break_for(BROKEN_TIMED_OUT);
                return Err(e);
            }
            // SYNC: Acquire pairs with the Release stores of `broken`.
            let why = b.header.broken.load(Ordering::Acquire);
            if why != 0 {
                return Err(broken_error(Kind::Barrier, why));
            }
        }
    }
}

/// Where an arrival left its party.
enum Arrival {
    /// It was the last: the round is complete; its index.
    Last(u32),
    /// It waits for the round of `generation` to end.
    Waiting {
        generation: u32,
        resets: u32,
        index: u32,
    },
}

/// Breaks the barrier if an async wait is dropped before its round ended
/// (see [`Barrier::wait_async`]).
struct Leaving<'a> {
    barrier: &'a Barrier,
    generation: u32,
    armed: bool,
}

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        // SYNC: Acquire, as the waiters' loads of `generation`.
        let gen_now = self
            .barrier
            .shared
            .block()
            .generation
            .load(Ordering::Acquire);
        if self.armed && gen_now == self.generation {
            self.barrier.break_for(BROKEN_CANCELLED);
        }
    }
}
