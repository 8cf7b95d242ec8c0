//! Waiting on a ring: the spin-then-park loop every blocking call shares
//! (its deadline and liveness bookkeeping is the crate's one [`Wait`]), the
//! one park/wake pair on a header word (a waiter announces itself in a
//! count, a waker checks the count: Dekker over an asymmetric pair of
//! fences, `sys::fences`), and the
//! Mpmc side lock built on them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::memory::{Atomic, Memory};
use super::{
    frame_size, Mode, PeerCheck, Ring, Side, Waiters, CONSUMER_CLOSED, FRAME_WORD, POISONED,
    PRODUCER_CLOSED,
};
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
    crate::wait::spin_for(budget, ready)
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
    // SYNC: SeqCst RMW + the heavy fence, paired with the light fence in
    // `wake` after the other side's Release store of its progress (Dekker,
    // asymmetric: `sys::fences`): either our re-check below (or the
    // futex's compare of `word`) sees that progress, or the other side's
    // load of `count` sees our increment and wakes us.
    count.fetch_add(1, Ordering::SeqCst);
    let covered = M::heavy_fence();
    if !ready() {
        // Uncovered (no asymmetric barrier here, a waker that relies on
        // it): a wake may be missed, so the sleep is a short slice.
        M::park(
            word,
            expected,
            crate::sys::fences::park_timeout(covered, timeout),
        );
    }
    // SYNC: Relaxed; only a count of sleepers, read as a hint by `wake`.
    count.fetch_sub(1, Ordering::Relaxed);
}

/// Wakes the waiters parked on `word`, if any announced themselves in
/// `count`; with `bump`, first changes `word` (a sequence word; a lock word
/// was already changed by the caller). Called after a Release store of
/// progress.
fn wake<M: Memory>(count: &M::U32, word: &M::U32, bump: bool) {
    // SYNC: the light fence pairs with the heavy fence in `park` (Dekker
    // on progress vs. `count`; `sys::fences`).
    M::light_fence();
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
impl<M: Memory> Ring<M> {
    /// Whether a consumer at `head` (`None`: the published head, which is
    /// the consumer's own between its calls) may find a frame, or the
    /// producers closed or the ring is poisoned: a hint, the caller
    /// retries.
    pub(super) fn readable(&self, head: Option<u64>) -> bool {
        let h = self.header();
        let mask = self.mem.cap() - 1;
        let head = head.unwrap_or_else(|| {
            // SYNC: Relaxed: a hint (masked below); Mpmc re-reads head
            // under the lock before using it.
            h.cons.0.pos.load(Ordering::Relaxed)
        });
        let off = (head as usize & mask) & !7;
        // SYNC: Acquire pairs with the Release store of the frame word in
        // commit_raw (hint; re-read by try_peek_raw).
        let w = self.mem.word(off).load(Ordering::Acquire);
        // SYNC: Acquire pairs with the Release fetch_or in close/poison.
        // Only the bits that end a consumer's wait count (other bits, which
        // no correct peer sets, must not make a bounded wait spin).
        w != 0 || h.state.0.load(Ordering::Acquire) & (PRODUCER_CLOSED | POISONED) != 0
    }

    /// Whether a frame of `len` bytes may fit, or a side closed or the ring
    /// is poisoned: a hint, the caller retries under `try_push`.
    pub(super) fn writable(&self, len: usize) -> bool {
        let cap = self.mem.cap();
        let size = frame_size(len);
        let h = self.header();
        // SYNC: Acquire pairs with the Release stores of head/tail; a
        // hint only (the caller re-validates under try_push).
        let head = h.cons.0.pos.load(Ordering::Acquire);
        let tail = h.prod.0.pos.load(Ordering::Acquire);
        // SYNC: Acquire pairs with the Release fetch_or in close/poison.
        // Only the bits that end a producer's wait count.
        let st = h.state.0.load(Ordering::Acquire) & (CONSUMER_CLOSED | PRODUCER_CLOSED | POISONED);
        // The same need as try_reserve_raw: padding, frame, terminator.
        let off = (tail as usize) & (cap - 1);
        let pad = if off + size > cap { cap - off } else { 0 };
        let need = (pad + size + FRAME_WORD) as u64;
        st != 0 || tail.wrapping_sub(head).saturating_add(need) <= cap as u64
    }
}

/// What an async waiter thread (`crate::async_wait`) watches for a
/// receive or a send on a ring: the ring's data or room, parked on as a
/// blocked consumer or producer parks (counted among the sleepers, so the
/// other side's `notify` wakes it).
pub(crate) struct RingSource {
    ring: Ring,
    /// `None`: a receive; `Some(len)`: a send of a `len`-byte frame.
    send: Option<usize>,
    peer_alive: PeerCheck,
}

impl Ring {
    /// The source of an async receive (`send: None`) or send of a frame of
    /// `len` bytes (`Some(len)`) on this ring; `peer_alive` is the owner's
    /// liveness question, as given to `set_peer_check`.
    pub(crate) fn async_source(&self, send: Option<usize>, peer_alive: PeerCheck) -> RingSource {
        RingSource {
            ring: self.clone(),
            send,
            peer_alive,
        }
    }

    /// The key of an async wait on this ring (see `async_source`).
    pub(crate) fn async_key(&self, send: Option<usize>) -> crate::async_wait::Key {
        let h = self.header();
        match send {
            None => crate::async_wait::key_of(&h.cons_wait.0.seq, 0),
            Some(len) => crate::async_wait::key_of(&h.prod_wait.0.seq, len as u64),
        }
    }
}

impl crate::async_wait::Source for RingSource {
    fn ready(&self) -> bool {
        match self.send {
            None => self.ring.readable(None),
            Some(len) => self.ring.writable(len),
        }
    }

    fn park(&self, slice: Duration) {
        let h = self.ring.header();
        let w = match self.send {
            None => &h.cons_wait.0,
            Some(_) => &h.prod_wait.0,
        };
        park_on(w, slice, || self.ready());
    }

    fn healthy(&self) -> bool {
        ring_health(&self.ring, || (self.peer_alive)(), "other").is_ok()
    }
}

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
    // The liveness question, asked when due. A peer that finished
    // (committed, closed its side) and exited between the caller's look
    // and the question is not a death that lost anything: what it left is
    // read.
    let ask = |wait: &mut Wait| -> Result<()> {
        if wait.liveness_due() {
            if let Err(e) = health() {
                if ready() {
                    return Ok(());
                }
                return Err(e);
            }
        }
        Ok(())
    };
    loop {
        let Some(t) = wait.slice() else {
            // A deadline that passed before the first question (in the
            // spin, or while this thread was preempted on a loaded
            // machine) still gets it: a bounded wait on a dead peer says
            // so. Without this, an async wait's checked retry (a 1 ms
            // wait) met only timeouts on a busy host, forever.
            ask(wait)?;
            return Err(timeout_error(what));
        };
        park_on(waiters, t, &ready);
        if ready() {
            return Ok(());
        }
        ask(wait)?;
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
        // The holder's liveness, asked when due.
        let ask = |wait: &mut Wait| -> Result<()> {
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
            Ok(())
        };
        let Some(t) = wait.slice() else {
            // As in `block_until`: a deadline that passed before the first
            // question still gets it.
            ask(wait)?;
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
        ask(wait)?;
    }
}

/// Releases a side's Mpmc lock and wakes a waiter parked on it.
pub(super) fn unlock_side<M: Memory>(side: &Side<M>) {
    // SYNC: Release pairs with the Acquire CAS in lock_side.
    side.lock.store(0, Ordering::Release);
    wake::<M>(&side.lock_waiters, &side.lock, false);
}

#[cfg(all(test, not(multiproc_loom)))]
mod tests {
    use std::sync::atomic::{AtomicU32, AtomicU64};
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::ring::memory::SharedMem;

    /// The park/wake handshake with the fences the rings use (on Linux
    /// the asymmetric pair), in lockstep: each of 20 000 progress steps
    /// must wake the waiter, which parks with an hour's timeout and acks
    /// every step. A missed wake would leave the step unacked for the
    /// hour: the deadline turns it into a failure instead. (A liveness
    /// check of the real calls; the window a missing fence opens is tens
    /// of nanoseconds, which no test hits reliably. What proves the
    /// pairing is the loom model with full fences on both sides, and
    /// `membarrier`'s contract for the light one: `sys::fences`.)
    #[test]
    fn every_progress_step_wakes_a_parked_waiter() {
        const STEPS: u64 = 20_000;
        let progress = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let sleepers = Arc::new(AtomicU32::new(0));
        let seq = Arc::new(AtomicU32::new(0));
        let waiter = {
            let (progress, acked) = (progress.clone(), acked.clone());
            let (sleepers, seq) = (sleepers.clone(), seq.clone());
            std::thread::spawn(move || {
                let mut parks = 0u64;
                for step in 1..=STEPS {
                    // SYNC: Acquire pairs with the Release store of progress.
                    while progress.load(Ordering::Acquire) < step {
                        // SYNC: Acquire, as park_on's load of seq.
                        let s = seq.load(Ordering::Acquire);
                        park::<SharedMem>(&sleepers, &seq, s, Duration::from_secs(3600), || {
                            // SYNC: Acquire, as above.
                            progress.load(Ordering::Acquire) >= step
                        });
                        parks += 1;
                    }
                    // SYNC: Release pairs with the Acquire load of acked.
                    acked.store(step, Ordering::Release);
                }
                parks
            })
        };
        for step in 1..=STEPS {
            // A pause of 0–2 µs, and of 20 µs every 8th step: the waiter
            // is sometimes still on its way, sometimes announcing itself,
            // sometimes asleep in the kernel.
            let pause = if step % 8 == 0 {
                Duration::from_micros(20)
            } else {
                Duration::from_nanos((step * 37) % 2_000)
            };
            let t = Instant::now();
            while t.elapsed() < pause {
                std::hint::spin_loop();
            }
            // SYNC: Release: the progress the waiter's re-check reads.
            progress.store(step, Ordering::Release);
            wake::<SharedMem>(&sleepers, &seq, true);
            let deadline = Instant::now() + Duration::from_secs(60);
            // SYNC: Acquire pairs with the waiter's Release store.
            while acked.load(Ordering::Acquire) < step {
                assert!(
                    Instant::now() < deadline,
                    "the waiter missed the wake of step {step}"
                );
                std::thread::yield_now();
            }
        }
        let parks = waiter.join().unwrap();
        assert!(
            parks > 0,
            "the waiter never parked: the test tested nothing"
        );
    }
}
