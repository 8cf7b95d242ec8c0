//! Waiting on a ring: the spin-then-park loop every blocking call shares
//! (its deadline and liveness bookkeeping is the crate's one [`Wait`]), the
//! one park/wake pair on a header word (a waiter announces itself in a
//! count, a waker checks the count: Dekker over SeqCst fences), and the
//! Mpmc side lock built on them.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::memory::{Atomic, Memory};
use super::{Mode, PeerCheck, Ring, Side, Waiters};
use crate::error::{Error, ErrorKind, Result};
pub(super) use crate::wait::Wait;

/// Default spin before parking: waking a parked peer costs ≈ 50 µs on the
/// target VM (docs/BENCHMARKS.md, "Measured before the code"), so spinning
/// shorter than that loses.
pub(crate) const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// Spins (with `spin_loop` hints) for up to `budget` until `ready()`.
/// Memory that may not spin (the loom model, where a spin would be an
/// unbounded loop of modelled loads) checks once and goes on to the park.
fn spin_until<M: Memory>(budget: Duration, mut ready: impl FnMut() -> bool) -> bool {
    if ready() {
        return true;
    }
    if budget.is_zero() || !M::SPINS {
        return false;
    }
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            std::hint::spin_loop();
            if ready() {
                return true;
            }
        }
        if start.elapsed() >= budget {
            return false;
        }
    }
}

/// One park on `word`, which held `expected`, by a waiter that announces
/// itself in `count` first: re-checks `ready` after announcing (so a wake
/// cannot be lost), then sleeps until woken or `timeout`.
fn park<M: Memory>(
    count: &M::U32,
    word: &M::U32,
    expected: u32,
    timeout: Duration,
    ready: impl Fn() -> bool,
) {
    // SYNC: SeqCst RMW + SeqCst fence, paired with the SeqCst fence in
    // `wake` after the other side's Release store of its progress (Dekker):
    // either our re-check below (or the futex's compare of `word`) sees that
    // progress, or the other side's load of `count` sees our increment and
    // wakes us.
    count.fetch_add(1, Ordering::SeqCst);
    M::fence(Ordering::SeqCst);
    if !ready() {
        M::park(word, expected, timeout);
    }
    // SYNC: Relaxed; only a count of sleepers, read as a hint by `wake`.
    count.fetch_sub(1, Ordering::Relaxed);
}

/// Wakes the waiters parked on `word`, if any announced themselves in
/// `count`; with `bump`, first changes `word` (a sequence word; a lock word
/// was already changed by the caller). Called after a Release store of
/// progress.
fn wake<M: Memory>(count: &M::U32, word: &M::U32, bump: bool) {
    // SYNC: SeqCst fence pairs with the SeqCst fence in `park` (Dekker on
    // progress vs. `count`).
    M::fence(Ordering::SeqCst);
    // SYNC: Relaxed, ordered by the fence above.
    if count.load(Ordering::Relaxed) != 0 {
        if bump {
            // SYNC: Release pairs with the Acquire load of seq in park_on.
            word.fetch_add(1, Ordering::Release);
        }
        M::wake(word);
    }
}

/// One park on a side's parking place `w`, until woken, `timeout` or
/// `ready`.
fn park_on<M: Memory>(w: &Waiters<M>, timeout: Duration, ready: impl Fn() -> bool) {
    // SYNC: Acquire pairs with the Release fetch_add of seq in notify/wake_all.
    let seq = w.seq.load(Ordering::Acquire);
    park::<M>(&w.sleepers, &w.seq, seq, timeout, ready);
}

/// Wakes the parked waiters of `w`, if any announced themselves. Called
/// after a Release store of progress (frame word or head).
pub(super) fn notify<M: Memory>(w: &Waiters<M>) {
    wake::<M>(&w.sleepers, &w.seq, true);
}

/// Wakes every waiter of both sides, announced or not (close, poison).
pub(super) fn wake_all<M: Memory>(ring: &Ring<M>) {
    let h = ring.header();
    for w in [&h.cons_wait.0, &h.prod_wait.0] {
        // SYNC: Release pairs with the Acquire load of seq in park_on.
        w.seq.fetch_add(1, Ordering::Release);
        M::wake(&w.seq);
    }
}

/// The blocking part of every ring wait: spin for `spin`, then park on
/// `waiters` in slices until `ready`, the deadline, or (checked every
/// liveness period) an error from `health`: the peer's death, or the
/// memory lost to a peer's shrink.
pub(super) fn block_until<M: Memory>(
    spin: Duration,
    waiters: &Waiters<M>,
    wait: &mut Wait,
    ready: impl Fn() -> bool,
    health: impl Fn() -> Result<()>,
    what: &str,
) -> Result<()> {
    // A caller that found nothing after its deadline (a `try_*` call, or a
    // retry after a wake-up that changed nothing) times out here, even if
    // `ready` keeps saying yes: a peer that scribbles on the ring cannot
    // turn a bounded wait into an endless one.
    if wait.slice().is_none() {
        return Err(timeout_error(what));
    }
    if spin_until::<M>(wait.spin_budget(spin), &ready) {
        return Ok(());
    }
    loop {
        let Some(t) = wait.slice() else {
            return Err(timeout_error(what));
        };
        park_on(waiters, t, &ready);
        if ready() {
            return Ok(());
        }
        if wait.liveness_due() {
            if let Err(e) = health() {
                // A peer that finished (committed, closed its side) and
                // exited between the look above and the health check is
                // not a death that lost anything: what it left is read.
                if ready() {
                    return Ok(());
                }
                return Err(e);
            }
        }
    }
}

/// What a blocked wait checks every liveness period: the memory is still
/// shared (`Protocol`, and the ring is poisoned, if a peer shrank it) and
/// the other side is alive (`PeerDied`).
pub(super) fn ring_health<M: Memory>(
    ring: &Ring<M>,
    peer_alive: impl FnOnce() -> bool,
    peer: &str,
) -> Result<()> {
    ring.check_intact()?;
    if !peer_alive() {
        return Err(Error::new(
            ErrorKind::PeerDied,
            format!("the {peer} process died"),
        ));
    }
    Ok(())
}

/// Whether the other side is alive: the caller's check if it set one, else
/// (Spsc) the pid that claimed `other`, else (Mpmc, no check) assumed.
pub(super) fn side_peer_alive<M: Memory>(
    check: &Option<PeerCheck>,
    mode: Mode,
    other: &Side<M>,
) -> bool {
    match check {
        Some(f) => f(),
        // SYNC: Acquire pairs with the Release store of pid in claim.
        None if mode == Mode::Spsc => M::pid_alive(other.pid.load(Ordering::Acquire)),
        None => true,
    }
}

fn timeout_error(what: &str) -> Error {
    Error::new(ErrorKind::Timeout, what.to_string())
}

/// Takes a side's Mpmc lock (lock word = holder pid), blocking with the
/// same deadline/liveness rules as the data waits. A holder that died turns
/// into `PeerDied` (and poisons the ring: what it held may be half-written).
pub(super) fn lock_side<M: Memory>(
    ring: &Ring<M>,
    side: &Side<M>,
    pid: u32,
    wait: &mut Wait,
    spin: Duration,
) -> Result<()> {
    let try_lock = || {
        // SYNC: Relaxed pre-check (test-and-test-and-set: spinners read the
        // line instead of bouncing it); the CAS carries the ordering.
        side.lock.load(Ordering::Relaxed) == 0
            // SYNC: Acquire pairs with the Release store of 0 in
            // unlock_side, so the previous holder's writes are visible.
            && side
                .lock
                .compare_exchange(0, pid, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    };
    if spin_until::<M>(wait.spin_budget(spin), try_lock) {
        return Ok(());
    }
    loop {
        ring.check_state_any()?;
        ring.check_intact()?;
        // SYNC: Relaxed: the value only picks the futex's expected word and
        // the pid to check; the CAS above carries the ordering.
        let holder = side.lock.load(Ordering::Relaxed);
        if holder == 0 {
            if try_lock() {
                return Ok(());
            }
            continue;
        }
        let Some(t) = wait.slice() else {
            return Err(timeout_error(
                "another process held the lock past the deadline",
            ));
        };
        // The futex's compare of the lock word with `holder` is the
        // re-check (Dekker with the fence in unlock_side's `wake`).
        park::<M>(&side.lock_waiters, &side.lock, holder, t, || false);
        if try_lock() {
            return Ok(());
        }
        // SYNC: Relaxed: pid of the holder, a hint for the check below.
        if wait.liveness_due()
            && side.lock.load(Ordering::Relaxed) == holder
            && !M::pid_alive(holder)
            // SYNC: Relaxed, as above. Still its holder now that it is
            // gone: it did not release the lock and exit normally in
            // between (which would be no death at all).
            && side.lock.load(Ordering::Relaxed) == holder
        {
            let why = format!(
                "process {holder} died in the middle of an operation, holding the lock; \
                 what it was writing may be half-done, so this can no longer be used"
            );
            ring.poison(why.clone());
            return Err(Error::new(ErrorKind::PeerDied, why).with_pid(holder));
        }
    }
}

/// Releases a side's Mpmc lock and wakes a waiter parked on it.
pub(super) fn unlock_side<M: Memory>(side: &Side<M>) {
    // SYNC: Release pairs with the Acquire CAS in lock_side.
    side.lock.store(0, Ordering::Release);
    wake::<M>(&side.lock_waiters, &side.lock, false);
}
