//! The driver and the pump: who runs the pool's [`Core`] and when.
//!
//! There is no scheduler thread on the hot path. Whoever waits for a
//! result drives: it polls the workers' result rings, routes outputs to
//! their jobs, and refills the task rings, all under one mutex. A
//! background *pump* thread drives only while nobody else does (work
//! submitted with `*_async` or `imap` progresses while the caller does
//! something else), and steps aside as soon as a caller wants to drive.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::core::{Core, Job, State};
use super::doorbell::Doorbell;
use crate::error::{ErrorKind, Result};

/// Spin this long after the last progress before sleeping (the cost of
/// waking a parked vCPU here; docs/BENCHMARKS.md, "Measured before the code").
const SPIN: Duration = Duration::from_micros(50);
/// How long a pump woken for new work leaves it to a caller that may be
/// about to drive it (see `pump`).
const PUMP_GRACE: Duration = Duration::from_micros(5);
/// How long a waiter looks for its result while another thread drives,
/// before it takes the pool over or sleeps (`look_while_driven`).
const LOOK_FIRST: Duration = Duration::from_micros(20);
/// The pump's nap while grouped tasks are held back for their group
/// (`Shared::pump_soon`): what such a task may wait for a step when
/// nobody else steps the pool.
const LAZY: Duration = Duration::from_micros(100);
/// Health checks (dead workers, task timeouts) at least this often.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// The pool's shared state: the core behind its lock, the condition
/// variable waiters sleep on, the doorbell, and the driver hand-off.
pub(crate) struct Shared {
    core: Mutex<Core>,
    pub(crate) cv: Condvar,
    pub(crate) doorbell: Doorbell,
    /// Callers that want to drive (the pump steps aside for them). A hint:
    /// the lock guards the core; a late read costs at most one tick.
    want: AtomicUsize,
    /// Threads blocked on the lock (a spinning driver lets them in).
    contenders: AtomicUsize,
    /// Threads waiting on `cv` (notify only when there are some).
    sleepers: AtomicUsize,
    /// The idle pump sleeps parked (`park_timeout`), apart from callers
    /// waiting on `cv`: progress a caller makes for itself does not wake
    /// it (two futex wakes of the pump per blocking `apply` made it 10×
    /// slower once a pump existed). Woken (`unpark`, which is never lost:
    /// one made before the pump parks makes the park return at once) by
    /// [`notify`](Shared::notify), [`ensure_pump`](Shared::ensure_pump),
    /// and a caller that stops driving while work is left.
    pump_sleeping: AtomicBool,
    /// The machine's cores: a driver spins only while fewer workers than
    /// this run zero-copy chunks, so that its spinning never takes a core
    /// from one.
    cores: usize,
    pub(crate) pump: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The pump thread runs (`pump` holds it): `ensure_pump` needs only
    /// to wake it, without `pump`'s lock (once per async submission).
    pub(crate) pump_started: AtomicBool,
    /// `Core::driving`, readable without the lock: a waiter looks for its
    /// result without the lock only while somebody drives (see
    /// [`look_while_driven`](Shared::look_while_driven)).
    driven: AtomicBool,
    /// Somebody relies on the pump to read results: a future or stream
    /// that waits, a call with callbacks, an `imap`, a look at a status,
    /// a task timeout ([`ensure_pump`](Shared::ensure_pump)). Without it
    /// the pump only sends work a submission could not
    /// ([`pump_needed`](Shared::pump_needed)). Set without the lock (a
    /// waker may run under it); cleared by the pump, under the lock, once
    /// the pool has no job at all.
    demand: AtomicBool,
    /// The pump naps [`LAZY`] at a time for grouped tasks held back
    /// ([`pump_soon`](Shared::pump_soon)).
    pump_lazy: AtomicBool,
}

/// Who waits in [`Shared::wait_as`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Waiter {
    /// A caller waiting for its work: it spins while results are due, and
    /// when `done` holds the pump takes over the work left.
    Caller,
    /// A borrowed `map`'s caller, ahead of its workers with the batches it
    /// encoded: it steps the pool itself again right after (`nudge` after
    /// every batch), so the pump is not woken to take the work over, and
    /// it sleeps on the doorbell between steps instead of spinning on a
    /// core the workers need (each holds up to `ENCODED_DEPTH` chunks
    /// meanwhile). Waking the pump cost that `map` a futex wake, a pump
    /// spinning beside the workers and a hand-over back at its next wait.
    /// The bench's 1e6 small structs on 2 cores: 37 ns an item before, 33
    /// with no pump woken, 28–29 with the sleep and the deeper queues
    /// (BENCHMARKS.md, "The pump left alone while a map encodes").
    Encoder,
}

impl Shared {
    pub(crate) fn new(core: Core, doorbell: Doorbell) -> Shared {
        Shared {
            core: Mutex::new(core),
            cv: Condvar::new(),
            doorbell,
            want: AtomicUsize::new(0),
            contenders: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            pump_sleeping: AtomicBool::new(false),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pump: Mutex::new(None),
            pump_started: AtomicBool::new(false),
            driven: AtomicBool::new(false),
            demand: AtomicBool::new(false),
            pump_lazy: AtomicBool::new(false),
        }
    }

    /// Takes the pool lock, telling a spinning driver to let us in.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        if let Ok(g) = self.core.try_lock() {
            return g;
        }
        // SYNC: SeqCst add/sub; partner: the driver's Relaxed load in
        // `drive`, which only decides whether to yield the lock for a round:
        // a stale 0 costs one more spin (it reads again every iteration),
        // a stale 1 one needless yield. The mutex orders the core's data.
        self.contenders.fetch_add(1, Ordering::SeqCst);
        let g = self.core.lock().unwrap_or_else(|p| self.recover(p));
        // SYNC: SeqCst; same partner as the add above.
        self.contenders.fetch_sub(1, Ordering::SeqCst);
        g
    }

    pub(crate) fn relock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| self.recover(p))
    }

    /// A thread panicked holding the lock (user code in a serialiser, a
    /// `Deserialize` impl, an iterator): its state changes are complete
    /// per step, but if it was the driver, nobody drives now. Let the next
    /// waiter take over instead of waiting for it forever.
    pub(crate) fn recover<'a>(
        &'a self,
        poisoned: std::sync::PoisonError<MutexGuard<'a, Core>>,
    ) -> MutexGuard<'a, Core> {
        let mut g = poisoned.into_inner();
        self.set_driving(&mut g, false);
        self.core.clear_poison();
        g
    }

    /// Marks that a thread drives the core (or no longer does), under
    /// the lock, and says so to [`look_while_driven`](Self::look_while_driven).
    fn set_driving(&self, core: &mut Core, on: bool) {
        core.driving = on;
        // SYNC: Relaxed: a hint for waiters deciding whether to spin; the
        // lock orders the core itself. A stale `true` costs a waiter at
        // most its look's budget, a stale `false` one lock taken early.
        self.driven.store(on, Ordering::Relaxed);
    }

    /// Spins for at most [`LOOK_FIRST`] (and not past `deadline`) until
    /// `ready()`, while another thread drives the pool; `true` if
    /// `ready()` held. A caller taking the results of work it submitted
    /// in a batch mostly finds the next one due within microseconds: a
    /// look spares the driver handing the pool over and back per result.
    /// With nobody driving there is nothing to look for: the caller
    /// returns at once and drives itself (a lone `submit(..).result()`
    /// would otherwise wait the whole budget).
    pub(crate) fn look_while_driven(
        &self,
        deadline: Option<Instant>,
        ready: &dyn Fn() -> bool,
    ) -> bool {
        // SYNC: Relaxed, as in `set_driving`.
        let driven = || self.driven.load(Ordering::Relaxed);
        if !driven() {
            return ready();
        }
        let budget = deadline.map_or(LOOK_FIRST, |d| {
            d.saturating_duration_since(Instant::now()).min(LOOK_FIRST)
        });
        crate::wait::spin_for(budget, || ready() || !driven());
        ready()
    }

    /// Blocks until `done(core)` holds (driving the pool meanwhile if
    /// nobody else does) or `deadline` passes; returns the locked core and
    /// whether `done` holds.
    pub(crate) fn wait_until(
        &self,
        done: &dyn Fn(&Core) -> bool,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'_, Core>, bool) {
        self.wait_as(Waiter::Caller, done, deadline)
    }

    /// [`wait_until`](Self::wait_until) for a `waiter` of either kind.
    pub(crate) fn wait_as(
        &self,
        waiter: Waiter,
        done: &dyn Fn(&Core) -> bool,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'_, Core>, bool) {
        // SYNC: SeqCst; partner: the pump's SeqCst loads of `want` in
        // `drive` and `pump`. The add comes before our `ring_always` below,
        // whose own SeqCst fence and futex wake the pump, so a pump asleep
        // on the doorbell wakes to see it; one that misses it anyway steps
        // aside at its next look, and we wait at most `TICK` on `cv` meanwhile.
        self.want.fetch_add(1, Ordering::SeqCst);
        let core = self.lock();
        self.wait_locked(core, waiter, done, deadline)
    }

    /// Submits `job` and waits until `done` under the same hold of the
    /// lock that submitted it, driving meanwhile (a blocking `apply`: one
    /// lock taken per call, not one to submit and one to wait).
    pub(crate) fn submit_and_wait(
        &self,
        job: Job,
        done: &dyn Fn(&Core) -> bool,
    ) -> Result<MutexGuard<'_, Core>> {
        // SYNC: SeqCst; as in `wait_as`.
        self.want.fetch_add(1, Ordering::SeqCst);
        let mut core = self.lock();
        if let Err(e) = core.submit(job) {
            // SYNC: SeqCst; same partner as the add above.
            self.want.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
        Ok(self.wait_locked(core, Waiter::Caller, done, None).0)
    }

    /// The loop of [`wait_as`](Self::wait_as), from a held lock; the
    /// caller has added itself to `want`, which this takes back.
    fn wait_locked<'a>(
        &'a self,
        mut core: MutexGuard<'a, Core>,
        waiter: Waiter,
        done: &dyn Fn(&Core) -> bool,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, Core>, bool) {
        let ok = loop {
            if done(&core) {
                break true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break false;
            }
            if core.driving {
                // The pump may be asleep on the doorbell: wake it so it
                // sees us and steps aside.
                self.doorbell.ring_always();
                let wait = deadline
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(TICK)
                    .min(TICK);
                core = self.cv_wait(core, wait);
                continue;
            }
            self.set_driving(&mut core, true);
            core = self.drive(core, done, false, deadline, waiter == Waiter::Encoder);
            self.set_driving(&mut core, false);
            // The pump takes over what is left (not from an encoder, which
            // steps the pool itself); with nothing left, only the callers
            // waiting on `cv` need to look.
            if waiter == Waiter::Caller && self.pump_needed(&core) {
                self.notify();
            } else {
                self.notify_waiters();
                // Grouped tasks left held back go with the pump's next nap.
                // SYNC: Relaxed: a hint (see `pump_soon`).
                if core.unsent().1 && !self.pump_lazy.load(Ordering::Relaxed) {
                    self.wake_pump();
                }
            }
        };
        // SYNC: SeqCst; same partner as the add above.
        self.want.fetch_sub(1, Ordering::SeqCst);
        (core, ok)
    }

    /// The driving loop: step, spin, sleep on the doorbell, check health.
    /// The clock is read once per 64 spins (a read costs as much as a poll
    /// of every ring). A `patient` driver does not spin: after a step that
    /// moved nothing it sleeps on the doorbell at once.
    pub(crate) fn drive<'a>(
        &'a self,
        mut core: MutexGuard<'a, Core>,
        done: &dyn Fn(&Core) -> bool,
        pump: bool,
        deadline: Option<Instant>,
        patient: bool,
    ) -> MutexGuard<'a, Core> {
        let mut last_progress: Option<Instant> = None;
        let mut spins: u32 = 0;
        loop {
            // After `terminate` only killed workers are left to reap.
            if core.state == State::Terminated && !core.has_dying() {
                return core;
            }
            if core.step() {
                self.notify_waiters();
                last_progress = None;
                spins = 0;
            }
            // SYNC: SeqCst load; partner: the add in `wait_until`.
            if done(&core) || (pump && self.want.load(Ordering::SeqCst) > 0) {
                return core;
            }
            if pump && !self.pump_needed(&core) {
                return core;
            }
            // SYNC: Relaxed; partner: the SeqCst add in `lock` (a hint only,
            // see there).
            if self.contenders.load(Ordering::Relaxed) > 0 {
                drop(core);
                std::thread::yield_now();
                core = self.relock();
                continue;
            }
            spins = spins.wrapping_add(1);
            let inflight = core.has_inflight();
            if inflight && !patient && !spins.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            let since = *last_progress.get_or_insert(now);
            if now.duration_since(core.last_health) >= TICK || core.wants_replacement() {
                if self.doorbell.lost() {
                    core.set_broken(
                        ErrorKind::Protocol,
                        "a worker shrank the pool's doorbell segment".into(),
                    );
                }
                core.check_health();
                self.notify();
                if done(&core) {
                    return core;
                }
            }
            if deadline.is_some_and(|d| now >= d) {
                return core;
            }
            // Spinning buys latency with a core. When every core runs a
            // worker busy with a zero-copy chunk, that core is a worker's:
            // sleep on the doorbell instead, as rayon's caller does. Each
            // worker has its next chunk queued (DEPTH), so none waits for
            // us to wake. A self-scheduled map needs nothing from us until
            // its workers run out of chunks: sleep too. Serde tasks are
            // short and the parent is part of their pipeline (it encodes
            // and decodes every item): it keeps spinning for them.
            if inflight
                && !patient
                && now.duration_since(since) < SPIN
                && core.bulk_busy_workers() < self.cores
                && !core.claims_running()
            {
                continue;
            }
            // Sleep on the doorbell until a worker rings or a tick passes.
            let announced = self.doorbell.prepare();
            if core.poll_results() {
                self.doorbell.cancel();
                continue;
            }
            drop(core);
            let mut nap = TICK;
            if let Some(d) = deadline {
                nap = nap.min(d.saturating_duration_since(Instant::now()));
            }
            self.doorbell.sleep(announced, nap);
            core = self.relock();
            last_progress = None;
            spins = 0;
        }
    }

    /// Waits until every killed worker is reaped and its jobs failed
    /// (`terminate`, `join`; each is bounded by `handle::REAP_LIMIT`),
    /// taking the lock only to look, so that a caller blocked on one of
    /// those jobs can take it and return.
    pub(crate) fn reap_all(&self) {
        loop {
            let mut core = self.lock();
            let moved = core.reap_dying();
            let left = core.has_dying();
            drop(core);
            if moved {
                self.notify();
                // A driver asleep on the doorbell looks again.
                self.doorbell.ring_always();
            }
            if !left {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Wakes the threads waiting on the condition variable, if any (std's
    /// `notify_all` makes a system call even when nobody waits), and the
    /// pump if it sleeps.
    pub(crate) fn notify(&self) {
        self.notify_waiters();
        self.wake_pump();
    }

    /// Wakes the pump if it sleeps.
    fn wake_pump(&self) {
        // SYNC: SeqCst load; partner: the SeqCst store in `pump_wait`,
        // made under the lock after the pump looked at the core: a change
        // made under the lock before that store is seen by the pump; one
        // made after it is followed by this load, which sees `true`.
        if self.pump_sleeping.load(Ordering::SeqCst) {
            // `pump`'s own lock: a leaf, never held while the pool's is
            // taken, and held by nobody who waits for anything else.
            let pump = self.pump.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(h) = pump.as_ref() {
                h.thread().unpark();
            }
        }
    }

    /// Wakes the callers waiting on the condition variable, not the pump.
    pub(crate) fn notify_waiters(&self) {
        // SYNC: SeqCst load; partner: the SeqCst add in `cv_wait`, made
        // under the lock. A waiter that registered before we took the lock
        // to make progress is seen here; one that registers later takes
        // the lock after our progress and sees it in its `done` check
        // before it waits. A miss would cost one bounded wait, never a hang.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.cv.notify_all();
        }
    }

    /// Waits on the condition variable for at most `timeout`.
    pub(crate) fn cv_wait<'a>(
        &'a self,
        core: MutexGuard<'a, Core>,
        timeout: Duration,
    ) -> MutexGuard<'a, Core> {
        // SYNC: SeqCst; partner: the load in `notify`. A notifier that
        // made progress under the lock after we registered sees the count
        // (we register while holding the lock).
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let core = self.wait_on(core, timeout);
        // SYNC: SeqCst; same partner as the add above.
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        core
    }

    /// Waits on `cv` for at most `timeout`; a lock poisoned meanwhile is
    /// taken back as [`recover`](Self::recover) does.
    fn wait_on<'a>(
        &'a self,
        core: MutexGuard<'a, Core>,
        timeout: Duration,
    ) -> MutexGuard<'a, Core> {
        match self.cv.wait_timeout(core, timeout) {
            Ok((g, _)) => g,
            Err(p) => self.recover(std::sync::PoisonError::new(p.into_inner().0)),
        }
    }

    /// Starts the pump thread unless it runs already, and wakes it if it
    /// sleeps: an `imap`, a call with callbacks, an async submission that
    /// left work unsent ([`kick`](Self::kick)), a status look that is not
    /// final, and every future or stream of the pool that is polled and
    /// must wait (its waker is fired by whoever drives, so someone must).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the thread cannot be started (a thread limit);
    /// the next call tries again. A blocking call does not need the pump
    /// (it drives); a future that must wait does, and fails with this
    /// instead of waiting for a wake-up nobody would send.
    pub(crate) fn ensure_pump(self: &Arc<Self>) -> crate::error::Result<()> {
        // Without the pool's lock: this runs at every poll of a future
        // that must wait and at every look at a status that is not final,
        // where the lock would be taken from a driver for a flag.
        // SYNC: Relaxed load; the clear it may miss (`pump`, under the
        // lock) happens only with no job in the pool, so a caller whose
        // job is registered (under the lock, before this call) sees it, and
        // one whose job is gone needs no pump.
        if !self.demand.load(Ordering::Relaxed) {
            // SYNC: SeqCst; partner: the pump's SeqCst store of
            // `pump_sleeping` then load of `demand` in `pump_wait`, against
            // this store then the load of `pump_sleeping` in `wake_pump`:
            // either the pump sees the demand before it parks, or we see
            // it parking and unpark it.
            self.demand.store(true, Ordering::SeqCst);
        }
        self.start_pump()
    }

    /// Starts the pump thread unless it runs already, and wakes it if it
    /// sleeps, without asking it to read results: it sends the work left
    /// unsent ([`pump_needed`](Shared::pump_needed)).
    fn start_pump(self: &Arc<Self>) -> crate::error::Result<()> {
        // SYNC: Acquire; partner: the Release store below. A stale `false`
        // only takes the slow way; a stale `true` (the pump being stopped
        // by `join`/`terminate`) wakes a pump that is leaving anyway.
        if self.pump_started.load(Ordering::Acquire) {
            self.wake_pump();
            return Ok(());
        }
        let mut pump = self.pump.lock().unwrap_or_else(|p| p.into_inner());
        if pump.is_none() {
            let shared = Arc::clone(self);
            let started = std::thread::Builder::new()
                .name("multiproc-pool-pump".into())
                .spawn(move || shared.pump())
                .map_err(|e| crate::error::Error::io("starting the pool's pump thread", e))?;
            *pump = Some(started);
            // SYNC: Release; partner: the Acquire load above.
            self.pump_started.store(true, Ordering::Release);
        }
        drop(pump);
        self.wake_pump();
        Ok(())
    }

    /// Whether the pump has a reason to drive: work to do, and either
    /// somebody relying on it to read results (`demand`) or work a
    /// submission left unsent. Without this a pump woken once for unsent
    /// work drove on while anything was in flight, beside a caller that
    /// kept submitting: two parent threads, a lock handed back and forth
    /// at every submission, 600–990 ns a `submit` against 540 alone
    /// (BENCHMARKS.md, "The pump leaves a stream of submissions alone").
    pub(crate) fn pump_needed(&self, core: &Core) -> bool {
        // SYNC: Relaxed: a set made without the lock and missed here is
        // seen by `pump_wait` before the pump parks (see `ensure_pump`).
        needed(core, self.demand.load(Ordering::Relaxed))
    }

    /// After an async submission (`apply_async`, `map_async`, `submit`):
    /// sends the work now unless somebody drives (who then sends it), so
    /// that a worker starts at once, as Python's `apply_async` does; wakes
    /// the pump only for work that could not be sent, or for a pool with a
    /// task timeout to enforce.
    ///
    /// Results that come back wait in the rings for whoever looks: a
    /// blocking wait and a future's first poll drive, a future that must
    /// wait starts the pump, and a look at the status (`ready()`,
    /// `done()`, `running()`) or a done-callback wakes it. Waking the pump
    /// at every submission instead cost an awaited `apply_async` three
    /// times a blocking `apply` on 2 cores (a futex wake, and a third busy
    /// thread beside the caller and the worker; docs/BENCHMARKS.md).
    ///
    /// # Errors
    /// As [`ensure_pump`](Self::ensure_pump), when the pump is needed.
    pub(crate) fn kick(self: &Arc<Self>) -> crate::error::Result<()> {
        self.kick_locked(self.lock())
    }

    /// [`kick`](Self::kick) under the lock a caller took to submit: one
    /// lock a submission, not two (each a hand-over from a spinning pump,
    /// which yields its core to let the caller in).
    pub(crate) fn kick_locked(
        self: &Arc<Self>,
        mut core: MutexGuard<'_, Core>,
    ) -> crate::error::Result<()> {
        // Also while the pump drives: it would send the task at its next
        // step anyway, and a caller that left its tasks to the pump kept
        // it needed (`pump_needed`) for as long as it submitted.
        if (!core.driving || core.pump_drives) && core.step_as(true) {
            self.notify_waiters();
        }
        let timed = core.has_inflight() && core.cfg.task_timeout.is_some();
        let (unsent, held) = core.unsent();
        drop(core);
        if timed {
            self.ensure_pump()
        } else if unsent {
            self.start_pump()
        } else if held {
            self.pump_soon()
        } else {
            Ok(())
        }
    }

    /// Grouped tasks are held back (see `Core::unsent`): the pump sends
    /// them within [`LAZY`] unless somebody steps the pool first. Wakes
    /// it only if it is not on those short naps already: a stream of
    /// submissions wakes it once, not at every one.
    pub(crate) fn pump_soon(self: &Arc<Self>) -> crate::error::Result<()> {
        // SYNC: Relaxed: a hint; a stale `true` leaves the tasks to the
        // pump's nap already running (it looks again before it sleeps
        // long), a stale `false` wakes it once more.
        if self.pump_lazy.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.start_pump()
    }

    /// One step if the pool is free (nobody holds the lock or drives),
    /// else nothing: whoever holds it steps anyway. Wakes nobody but
    /// the callers waiting on `cv` (a caller that writes a map's input
    /// while its first chunks run sends them with this). A health check
    /// too when one is due: such a caller may be the pool's only driver
    /// for a while, and a worker that died under it would otherwise go
    /// unseen until it waits.
    pub(crate) fn nudge(&self) {
        if let Ok(mut core) = self.core.try_lock() {
            if core.driving {
                return;
            }
            let moved = core.step();
            if core.last_health.elapsed() >= TICK {
                core.check_health();
                drop(core);
                self.notify();
            } else if moved {
                drop(core);
                self.notify_waiters();
            }
        }
    }

    /// The idle pump's sleep: parked, at most `timeout`, without the
    /// lock. `demand_seen`: the `demand` the pump decided on; a demand
    /// set since (without the lock) cancels the sleep.
    fn pump_wait<'a>(
        &'a self,
        core: MutexGuard<'a, Core>,
        timeout: Duration,
        demand_seen: bool,
    ) -> MutexGuard<'a, Core> {
        // SYNC: SeqCst, under the lock; partner: the load in `wake_pump`.
        self.pump_sleeping.store(true, Ordering::SeqCst);
        // SYNC: SeqCst; partner: the store in `ensure_pump` (see there).
        if !demand_seen && self.demand.load(Ordering::SeqCst) {
            self.pump_sleeping.store(false, Ordering::SeqCst);
            return core;
        }
        drop(core);
        std::thread::park_timeout(timeout);
        // SYNC: SeqCst; same partner as the store above.
        self.pump_sleeping.store(false, Ordering::SeqCst);
        self.relock()
    }

    /// The pump's short nap while grouped tasks are held back: as
    /// [`pump_wait`](Self::pump_wait) for [`LAZY`], but it takes the lock
    /// back only if it is free (or somebody waits on the pump): a pump
    /// blocked on the lock of a caller that submits costs that caller a
    /// futex wake at its next unlock, every nap. Busy, it naps again.
    fn pump_nap<'a>(
        &'a self,
        core: MutexGuard<'a, Core>,
        demand_seen: bool,
    ) -> MutexGuard<'a, Core> {
        let mut held = Some(core);
        loop {
            // SYNC: SeqCst; as in `pump_wait` (after a busy look, without
            // the lock: a wake missed then costs at most one more nap).
            self.pump_sleeping.store(true, Ordering::SeqCst);
            // SYNC: SeqCst; as in `pump_wait`.
            if !demand_seen && self.demand.load(Ordering::SeqCst) {
                self.pump_sleeping.store(false, Ordering::SeqCst);
                return held.unwrap_or_else(|| self.relock());
            }
            drop(held.take());
            std::thread::park_timeout(LAZY);
            // SYNC: SeqCst; as in `pump_wait`.
            self.pump_sleeping.store(false, Ordering::SeqCst);
            match self.core.try_lock() {
                Ok(g) => return g,
                Err(std::sync::TryLockError::Poisoned(p)) => return self.recover(p),
                // SYNC: SeqCst; as in `pump_wait`.
                Err(std::sync::TryLockError::WouldBlock) if self.demand.load(Ordering::SeqCst) => {
                    return self.relock()
                }
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
    }

    /// The pump thread's loop: drive while there is work nobody drives.
    pub(crate) fn pump(self: Arc<Self>) {
        let mut core = self.lock();
        // Just woken from `pump_wait`, not back from driving.
        let mut woken = false;
        loop {
            if core.state == State::Terminated || (core.state == State::Closed && !core.has_jobs())
            {
                return;
            }
            if !core.has_jobs() {
                // SYNC: SeqCst, under the lock (see `demand`).
                self.demand.store(false, Ordering::SeqCst);
            }
            // SYNC: SeqCst; see `pump_wait`.
            let demand = self.demand.load(Ordering::SeqCst);
            // SYNC: SeqCst load; partner: the add in `wait_until`.
            if core.driving || self.want.load(Ordering::SeqCst) > 0 || !needed(&core, demand) {
                // Grouped tasks held back: short naps, each ending in one
                // step unless somebody drives, until none is left.
                let lazy = !core.driving && core.unsent().1;
                // SYNC: Relaxed: a hint for `pump_soon`.
                self.pump_lazy.store(lazy, Ordering::Relaxed);
                core = if lazy {
                    self.pump_nap(core, demand)
                } else {
                    self.pump_wait(core, Duration::from_millis(50), demand)
                };
                woken = true;
                // SYNC: SeqCst load; partner: the add in `wait_until`.
                if lazy && !core.driving && self.want.load(Ordering::SeqCst) == 0 && core.step() {
                    self.notify_waiters();
                }
                if !core.driving && core.has_jobs() && core.last_health.elapsed() >= TICK {
                    core.check_health();
                    self.notify();
                }
                continue;
            }
            if std::mem::take(&mut woken) {
                // Woken for new work: its caller may be about to drive it
                // (an awaited future's first poll does, right after the
                // submission woke us). Leave it the lock for a moment
                // rather than take the work and hand it back.
                drop(core);
                // SYNC: SeqCst loads; partner: the add in `wait_until`.
                let wanted =
                    crate::wait::spin_for(PUMP_GRACE, || self.want.load(Ordering::SeqCst) > 0);
                core = self.relock();
                if wanted {
                    continue;
                }
            }
            self.set_driving(&mut core, true);
            core.pump_drives = true;
            core = self.drive(core, &|c: &Core| !c.active(), true, None, false);
            core.pump_drives = false;
            self.set_driving(&mut core, false);
            self.notify();
        }
    }
}

/// [`Shared::pump_needed`] for a `demand` already read.
fn needed(core: &Core, demand: bool) -> bool {
    core.active() && (demand || core.has_unsent_work())
}
