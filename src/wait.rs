//! The one deadline-and-liveness waiter every blocking call uses.
//!
//! A blocked call here never sleeps unboundedly: it sleeps in slices of at
//! most [`LIVENESS_PERIOD`] (less if its deadline comes first) and, between
//! slices, asks the caller's own question "is whoever I depend on still
//! alive?" (a lock holder, a ring's peer, a queue's participants). A dead
//! peer thereby becomes an error within one period, and a deadline an
//! error the moment it passes. The rings, the queue's `join`, every
//! primitive in `sync` and the pool's doorbell all wait through [`Wait`],
//! so they share one period and one definition of "timed out".
//!
//! Why 50 ms: checking liveness costs a system call per peer (≈ 0.3 µs), so
//! the period is not about cost; it bounds how late a peer's death is
//! noticed (the README promises "within about 50 ms") and how often an idle
//! waiter wakes (20 times a second: invisible in `top`, even for sixteen
//! idle pool workers).

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Longest single sleep of a blocked waiter between liveness checks.
pub(crate) const LIVENESS_PERIOD: Duration = Duration::from_millis(50);

/// The deadline of a `_timeout` call; `None` (no deadline) when `timeout`
/// is too large to represent, which is what such a timeout means.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Deadline and liveness bookkeeping of one blocking call.
#[derive(Debug)]
pub(crate) struct Wait {
    deadline: Option<Instant>,
    /// Set by the first liveness query: building a `Wait` reads no clock
    /// (every `try_*` call builds one; a clock read costs more than a ring
    /// frame).
    last_check: Option<Instant>,
}

impl Wait {
    /// A wait that ends at `deadline` (`None`: never).
    pub(crate) fn new(deadline: Option<Instant>) -> Wait {
        Wait {
            deadline,
            last_check: None,
        }
    }

    /// How long to spin before sleeping: `spin`, but never past the
    /// deadline (a `try_*` call, whose deadline is now, checks once and
    /// returns instead of spinning).
    pub(crate) fn spin_budget(&self, spin: Duration) -> Duration {
        match self.deadline {
            None => spin,
            Some(d) => spin.min(d.saturating_duration_since(Instant::now())),
        }
    }

    /// How long the next sleep may last; `None` once the deadline passed.
    pub(crate) fn slice(&self) -> Option<Duration> {
        match self.deadline {
            None => Some(LIVENESS_PERIOD),
            Some(d) => {
                let left = d.checked_duration_since(Instant::now())?;
                (!left.is_zero()).then(|| left.min(LIVENESS_PERIOD))
            }
        }
    }

    /// `true` when the caller should check its peers now: at the first
    /// query (a waiter reaches it only after spinning or sleeping once, so
    /// a peer that died before the call is found at once) and then once
    /// per [`LIVENESS_PERIOD`].
    pub(crate) fn liveness_due(&mut self) -> bool {
        match self.last_check {
            Some(t) if t.elapsed() < LIVENESS_PERIOD => false,
            _ => {
                self.last_check = Some(Instant::now());
                true
            }
        }
    }

    /// Runs `health` (the caller's liveness check) if it is due; its
    /// error ends the wait.
    pub(crate) fn check(&mut self, health: impl FnOnce() -> Result<()>) -> Result<()> {
        if self.liveness_due() {
            health()?;
        }
        Ok(())
    }

    /// Sleeps on `word` while it holds `expected`, for one slice at most
    /// (woken early by a `futex_wake` on it, or spuriously: the caller
    /// re-checks its condition). `Err(Timeout)` with `timed_out` (the
    /// user's call and what did not happen in time) once the deadline has
    /// passed.
    pub(crate) fn sleep_on(&self, word: &AtomicU32, expected: u32, timed_out: &str) -> Result<()> {
        let Some(slice) = self.slice() else {
            return Err(Error::timeout(timed_out));
        };
        crate::sys::futex_wait(word, expected, slice);
        Ok(())
    }
}

/// Spins (with `spin_loop` hints) for up to `budget` until `ready()`;
/// `true` if it became ready. Past [`HOT_SPIN`] each look gives the core
/// away first (`sched_yield`): a spinner must not starve the very thread
/// it waits for when the machine has fewer cores than busy threads (two
/// pool workers spinning for their next task on 2 cores made a
/// submitting parent 10× slower).
pub(crate) fn spin_for(budget: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            std::hint::spin_loop();
            if ready() {
                return true;
            }
        }
        let spent = start.elapsed();
        if spent >= budget {
            return false;
        }
        if spent >= HOT_SPIN {
            std::thread::yield_now();
        }
    }
}

/// How long [`spin_for`] looks without yielding its core: answers that
/// come this fast (a peer already running) are not delayed by a
/// `sched_yield`.
const HOT_SPIN: Duration = Duration::from_micros(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spin_for_returns_when_ready_and_gives_up_after_its_budget() {
        let mut looks = 0;
        assert!(spin_for(Duration::from_secs(60), || {
            looks += 1;
            looks == 3
        }));
        let start = Instant::now();
        assert!(!spin_for(Duration::from_millis(2), || false));
        assert!(start.elapsed() >= Duration::from_millis(2));
    }

    #[test]
    fn a_passed_deadline_has_no_slice_and_sleeping_times_out() {
        let w = Wait::new(Some(Instant::now()));
        assert_eq!(w.slice(), None);
        assert_eq!(w.spin_budget(Duration::from_secs(1)), Duration::ZERO);
        let word = AtomicU32::new(0);
        let e = w.sleep_on(&word, 0, "Thing::wait_timeout").unwrap_err();
        assert!(e.is_timeout());
        assert!(e.to_string().contains("Thing::wait_timeout"), "{e}");
    }

    #[test]
    fn slices_never_exceed_the_period_or_the_deadline() {
        let w = Wait::new(None);
        assert_eq!(w.slice(), Some(LIVENESS_PERIOD));
        let w = Wait::new(deadline_after(Duration::from_millis(5)));
        assert!(w.slice().is_some_and(|s| s <= Duration::from_millis(5)));
        let w = Wait::new(deadline_after(Duration::from_secs(3600)));
        assert_eq!(w.slice(), Some(LIVENESS_PERIOD));
        // An unrepresentable timeout means no deadline.
        assert_eq!(deadline_after(Duration::MAX), None);
    }

    #[test]
    fn liveness_is_due_at_first_then_once_a_period() {
        // Due at the first query, then only once a whole period has passed
        // since the last check. A loaded machine may stall this thread
        // anywhere, so "not due" is asserted against a clock read taken
        // before the check that started the period.
        fn due_then_not_before_a_period(w: &mut Wait) {
            let before = Instant::now();
            assert!(w.liveness_due());
            let again = w.liveness_due();
            assert!(!again || before.elapsed() >= LIVENESS_PERIOD);
        }
        let mut w = Wait::new(None);
        due_then_not_before_a_period(&mut w);
        std::thread::sleep(LIVENESS_PERIOD + Duration::from_millis(5));
        due_then_not_before_a_period(&mut w);
    }
}
