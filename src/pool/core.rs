//! The parent's scheduler, `Core`: the workers and the jobs behind the
//! pool's lock; one step of results in and tasks out, the health check,
//! and what a lost worker costs its jobs. Who runs it, and when, is
//! `driver.rs`; the handle on one worker is `handle.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::group::{Cancel, Group, NoSink};
use super::handle::{Dying, Inflight, Worker, DEPTH, MAX_DEPTH};
use super::health::{death, fatal, verdict, Loss};
use super::jobs::{JobIds, Next, Sink, Source, ZcTask};
use super::wire::{
    running_word, ClaimHeader, ResultHeader, TaskError, ZcHeader, F_LAST, F_RECORDS, K_TASK, K_ZC,
    K_ZC_CLAIM,
};
use super::wire::{R_INIT_FAILED, R_READY, R_RESULT};
use crate::error::{Error, ErrorKind, Result};
use crate::exit_status::ExitStatus;
use crate::segment::Segment;
use crate::task::{TaskKey, TaskRef};

/// Most resend buffers kept for reuse (`Core::spare_frames`).
const SPARE_FRAMES: usize = 64;
/// A resend buffer larger than this is freed, not kept.
const SPARE_FRAME_BYTES: usize = 4096;

/// Settled grouped jobs' sources kept for reuse (one per function).
const IDLE_GROUPS: usize = 16;

/// A task frame is packed up to about this many bytes of items.
const SOFT_FRAME: usize = 64 * 1024;

/// The fixed settings of a pool.
pub(crate) struct Config {
    pub(crate) processes: usize,
    pub(crate) init: Option<(TaskRef, Vec<u8>)>,
    pub(crate) max_tasks_per_child: Option<u64>,
    pub(crate) cores: Option<Vec<usize>>,
    pub(crate) ring_bytes: usize,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) timing: bool,
    pub(crate) key: TaskKey,
    pub(crate) doorbell: crate::segment::SegmentHandle,
    /// The doorbell's segment itself, to tell a worker that shrank it
    /// (every replacement then fails to start) from other start failures.
    pub(crate) doorbell_segment: Arc<crate::segment::Segment>,
    /// Prefixes of inherited environment variables workers must not see.
    pub(crate) strip_env: &'static [&'static str],
    /// How workers (and their replacements) start.
    pub(crate) start_method: crate::StartMethod,
}

pub(crate) struct Job {
    source: Box<dyn Source>,
    pub(crate) sink: Arc<dyn Sink>,
    outstanding: usize,
    exhausted: bool,
    failed: bool,
    /// Most tasks in flight at once (bounded work for `imap`).
    max_outstanding: usize,
    /// Most outputs buffered for the consumer before dispatch pauses.
    max_backlog: usize,
    /// A `Pool::submit` task: it may be cancelled while it runs, so a task
    /// queued behind it keeps a copy of its frame.
    cancellable: bool,
    /// Cancelled: a worker found running it is killed.
    cancelled: bool,
    /// Tasks sent so far.
    tasks_sent: u64,
    /// The grouped `submit` job of one function (its source a
    /// [`Group`]).
    grouped: bool,
}

/// A task taken back from a worker killed to cancel the task in front of
/// it: sent again to another worker, before any new task.
struct Retry {
    job: u64,
    first: u64,
    count: u64,
    frame: Vec<u8>,
}

impl Job {
    pub(crate) fn new(
        source: Box<dyn Source>,
        sink: Arc<dyn Sink>,
        max_outstanding: usize,
        max_backlog: usize,
    ) -> Job {
        Job {
            source,
            sink,
            outstanding: 0,
            exhausted: false,
            failed: false,
            max_outstanding: max_outstanding.max(1),
            max_backlog,
            cancellable: false,
            cancelled: false,
            tasks_sent: 0,
            grouped: false,
        }
    }

    /// Marks a job that [`Core::cancel_task`] may cancel while it runs.
    pub(crate) fn cancellable(mut self) -> Job {
        self.cancellable = true;
        self
    }

    fn fail(&mut self, e: Error) {
        if !self.failed {
            self.failed = true;
            if let Some(g) = self.source.grouped() {
                g.fail_all(&e);
            }
            self.sink.fail(e);
        }
    }

    /// Outputs of items `[first, first + count)` and, for a failed task,
    /// its error, from the worker `index` (`pid`). Also after a failure:
    /// an ordered `imap` still hands out the items before the failing one,
    /// which may arrive later.
    fn take_outputs(
        &mut self,
        (index, pid): (usize, u32),
        first: u64,
        count: u32,
        outputs: &[u8],
        error: Option<TaskError>,
    ) {
        if count > 0 {
            // Decoding runs the result type's `Deserialize`: user code.
            let delivered = crate::panic::catch_panic(|| self.sink.deliver(first, count, outputs))
                .unwrap_or_else(|info| {
                    Err(Error::panicked(info).with_context("decoding a result panicked"))
                });
            if let Err(e) = delivered {
                self.fail(e.with_pid(pid));
            }
        }
        if let Some(te) = error {
            self.fail(te.into_error(index, pid));
        }
    }

    /// A task of `items` items is back, after `busy_ns` of the worker's
    /// time (0 when not measured).
    fn task_done(&mut self, first: u64, items: u64, busy_ns: u64) {
        self.outstanding -= 1;
        self.source.task_done(first, items, busy_ns);
        self.sink.task_done(items);
        // A self-scheduled map knows it is over once a descriptor is back
        // (its worker saw nothing left to claim): it settles now, not at
        // the next dispatch walk, which may find no idle worker for it.
        if self.source.is_done() {
            self.exhausted = true;
        }
    }

    fn wants_dispatch(&self) -> bool {
        !self.over()
            && self.source.ready()
            && self.outstanding < self.max_outstanding
            && self.sink.backlog() < self.max_backlog
    }

    /// A grouped job whose waiting tasks make no full group: they gather
    /// for the next ones (see [`Core::step_as`]).
    fn gathering(&self) -> bool {
        self.grouped && !self.source.full()
    }

    /// Nothing more will be sent: failed, out of items, or its consumer
    /// gone. (Dispatch drops such a job from `Core::order`.)
    fn over(&self) -> bool {
        self.failed || self.exhausted || self.sink.abandoned()
    }

    /// Over, and nothing in flight: its sink can be settled.
    fn finished(&self) -> bool {
        self.over() && self.outstanding == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    Closed,
    Terminated,
}

pub(crate) struct Core {
    pub(crate) cfg: Config,
    pub(crate) workers: Vec<Option<Worker>>,
    /// Workers told to finish (max tasks per child), still draining.
    retired: Vec<Worker>,
    /// Segments of workers that exited and were reaped, ready for the next
    /// replacements (at most two per worker): a fresh segment's pages cost
    /// more to clear than the whole rest of a fork-server start
    /// (`max_tasks_per_child(1)`).
    spare_segments: Vec<Arc<Segment>>,
    /// Retired workers with nothing left to do, their rings closed, until
    /// they exit: then their segments are recycled.
    leaving: Vec<Worker>,
    /// Workers killed and not reaped yet: their jobs wait for the reap
    /// (`reap_dying`), nobody waits for it under the lock.
    dying: Vec<Dying>,
    jobs: Jobs,
    /// Jobs that may still send tasks, first submitted first served. A
    /// job that is [`over`](Job::over) (or settled) is dropped from it
    /// when dispatch walks past it, so a step costs what it sends, not
    /// the number of jobs waiting for results.
    order: VecDeque<u64>,
    /// Jobs whose in-flight count fell or that became over since the last
    /// [`settle_finished`](Core::settle_finished): the only ones that can
    /// have finished. Every site that changes `outstanding`, `failed` or
    /// `exhausted` of one job records it here; a broken or terminated pool
    /// checks every job instead.
    to_settle: Vec<u64>,
    next_job: u64,
    pub(crate) state: State,
    /// Set when the pool cannot work any more (initializer failed, a
    /// replacement worker could not be started); every call returns it.
    pub(crate) broken: Option<(ErrorKind, String)>,
    pub(crate) driving: bool,
    /// The driver is the pump (a submission steps the pool even then).
    pub(crate) pump_drives: bool,
    scratch: Vec<u8>,
    attach_scratch: Vec<u8>,
    /// Buffers of resend copies whose tasks came back, for the next copies
    /// (a stream of `submit`s keeps one per task queued behind another).
    spare_frames: Vec<Vec<u8>>,
    pub(crate) last_health: Instant,
    pub(crate) restarts: u64,
    /// Tasks to send again (see [`Retry`]).
    retry: VecDeque<Retry>,
    /// A cancelled job still has a task in flight: a worker that reaches
    /// it is killed ([`kill_cancelled`](Core::kill_cancelled)).
    cancels_pending: bool,
    /// The grouped `submit` job of each function (by its `TaskRef`), while
    /// it has tasks ([`submit_grouped`](Core::submit_grouped)).
    groups: Vec<([u64; 3], u64)>,
    /// The sources of grouped jobs that settled, by function, for the
    /// next (`submit_grouped`): a stream of lone tasks does not make and
    /// drop a job, its queues and its measurement at every task.
    idle_groups: Vec<([u64; 3], Box<dyn Source>)>,
    /// The sink of every grouped job (each task has its own).
    no_sink: Arc<dyn Sink>,
}

impl Core {
    pub(crate) fn new(cfg: Config) -> Result<Core> {
        let mut workers = Vec::with_capacity(cfg.processes);
        for i in 0..cfg.processes {
            workers.push(Some(Worker::spawn(&cfg, i, None)?));
        }
        Ok(Core {
            cfg,
            workers,
            retired: Vec::new(),
            spare_segments: Vec::new(),
            leaving: Vec::new(),
            dying: Vec::new(),
            jobs: HashMap::default(),
            order: VecDeque::new(),
            to_settle: Vec::new(),
            next_job: 1,
            state: State::Running,
            broken: None,
            driving: false,
            pump_drives: false,
            scratch: Vec::with_capacity(SOFT_FRAME * 2),
            attach_scratch: Vec::new(),
            spare_frames: Vec::new(),
            last_health: Instant::now(),
            restarts: 0,
            retry: VecDeque::new(),
            cancels_pending: false,
            groups: Vec::new(),
            idle_groups: Vec::new(),
            no_sink: Arc::new(NoSink),
        })
    }

    pub(crate) fn broken_error(&self) -> Option<Error> {
        self.broken
            .as_ref()
            .map(|(k, m)| Error::new(*k, format!("the pool is broken: {m}")))
    }

    /// Registers a job; it is dispatched by whoever drives next.
    pub(crate) fn submit(&mut self, job: Job) -> Result<u64> {
        // A broken pool says why first (also once closed by
        // `kill_workers`).
        if let Some(e) = self.broken_error() {
            return Err(e);
        }
        match self.state {
            State::Running => {}
            State::Closed => return Err(Error::new(ErrorKind::InvalidState, "the pool is closed")),
            State::Terminated => {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    "the pool was terminated",
                ))
            }
        }
        let id = self.next_job;
        self.next_job += 1;
        self.jobs.insert(id, job);
        self.order.push_back(id);
        Ok(id)
    }

    /// Queues a `Pool::submit` task of function `task` (its item encoded
    /// as `bytes`, its outcome to `sink`) in that function's grouped job,
    /// made if there is none; returns the job and the task's ticket.
    pub(crate) fn submit_grouped(
        &mut self,
        task: TaskRef,
        bytes: super::group::Bytes,
        sink: Arc<dyn Sink>,
    ) -> Result<(u64, u64, bool)> {
        let key = task.to_words();
        let live = self
            .groups
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, id)| id)
            .filter(|id| {
                self.jobs
                    .get_mut(id)
                    .is_some_and(|j| !j.failed && j.source.grouped().is_some())
            });
        let id = match live {
            Some(id) => id,
            None => {
                // The function's last group, kept when its job settled: its
                // measured time, and buffers already grown.
                let group: Box<dyn Source> =
                    match self.idle_groups.iter().position(|(k, _)| *k == key) {
                        Some(at) => self.idle_groups.swap_remove(at).1,
                        None => Box::new(Group::new(task, self.cfg.processes)),
                    };
                let sink: Arc<dyn Sink> = Arc::clone(&self.no_sink);
                let mut job = Job::new(group, sink, usize::MAX, usize::MAX).cancellable();
                job.grouped = true;
                let id = self.submit(job)?;
                self.groups.retain(|(k, _)| *k != key);
                self.groups.push((key, id));
                id
            }
        };
        // A live job: the pool runs (`submit` checked it when it was made,
        // and a pool that stops fails every job).
        if let Some(e) = self.broken_error() {
            return Err(e);
        }
        if self.state != State::Running {
            return Err(Error::new(ErrorKind::InvalidState, "the pool is closed"));
        }
        let job = self.jobs.get_mut(&id).expect("live job");
        let ticket = job.source.grouped().expect("grouped").push(bytes, sink);
        // Sent now if a group is full, or a worker has nothing to do (a
        // lone task starts at once); else it gathers with the next ones.
        let now = job.source.full() || self.idle_worker().is_some();
        self.reopen(id);
        Ok((id, ticket, now))
    }

    /// Whether `submit`ted tasks may travel in groups: not with a task
    /// timeout or a task budget per worker, which count frames.
    pub(crate) fn groups_allowed(&self) -> bool {
        self.cfg.task_timeout.is_none() && self.cfg.max_tasks_per_child.is_none()
    }

    /// A `submit` of function `task` now would start at once, alone: a
    /// worker has nothing in flight and no task of that function waits.
    /// It then goes as a job of its own (the plain one-task frame: a lone
    /// task's round trip without the group's bookkeeping).
    pub(crate) fn lone_now(&mut self, task: TaskRef) -> bool {
        if self.idle_worker().is_none() {
            return false;
        }
        let key = task.to_words();
        let Some(&(_, id)) = self.groups.iter().find(|(k, _)| *k == key) else {
            return true;
        };
        self.jobs
            .get_mut(&id)
            .and_then(|j| j.source.grouped())
            .is_none_or(|g| g.is_done())
    }

    /// Job `id` has tasks to send again (a grouped job given tasks after
    /// it had sent all it had): back into the dispatch order.
    fn reopen(&mut self, id: u64) {
        // A job that is not over is in `order` already (it leaves it only
        // once over): only one that was looks for itself there.
        if let Some(j) = self.jobs.get_mut(&id).filter(|j| j.exhausted && !j.failed) {
            j.exhausted = false;
            if !self.order.contains(&id) {
                self.order.push_back(id);
            }
        }
    }

    pub(crate) fn has_jobs(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Live and retiring workers.
    fn all_workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter().flatten().chain(&self.retired)
    }

    /// Tasks not back yet, also those lost with a worker that is not
    /// reaped yet (their jobs settle at the reap).
    pub(crate) fn has_inflight(&self) -> bool {
        self.all_workers().any(|w| !w.inflight.is_empty())
            || self.dying.iter().any(Dying::holds_work)
            || !self.retry.is_empty()
    }

    /// Killed workers the OS has not reported gone yet.
    pub(crate) fn has_dying(&self) -> bool {
        !self.dying.is_empty()
    }

    /// Workers running a zero-copy chunk now (each one busy on a core).
    pub(crate) fn bulk_busy_workers(&self) -> usize {
        self.all_workers()
            .filter(|w| w.inflight.front().is_some_and(|t| t.bulk))
            .count()
    }

    /// A self-scheduled map's descriptor is running: its results come back
    /// only when its worker has nothing left to claim.
    pub(crate) fn claims_running(&self) -> bool {
        self.all_workers()
            .any(|w| w.inflight.front().is_some_and(|t| t.claim))
    }

    /// Something a driver can do now: tasks in flight, or tasks to send.
    pub(crate) fn active(&self) -> bool {
        self.has_inflight() || self.has_unsent()
    }

    /// Work that only a driver moves on: tasks not sent yet (also those
    /// taken back from a killed worker, and long frames still to stream)
    /// and killed workers to reap and replace.
    pub(crate) fn has_unsent_work(&self) -> bool {
        !self.retry.is_empty()
            || !self.dying.is_empty()
            || self.all_workers().any(|w| !w.backlog.is_empty())
            || self.unsent().0
    }

    /// Tasks a job could send and has not (no room in the rings, or not
    /// tried yet), also grouped ones held back.
    pub(crate) fn has_unsent(&self) -> bool {
        let (now, held) = self.unsent();
        now || held
    }

    /// Tasks not sent: `(now, held)`, `now` for tasks that go as soon as
    /// a worker has room, `held` for grouped tasks that gather while each
    /// worker runs a group ([`Group`]'s depth of 1): the next step of
    /// whoever drives sends them, or the pump a moment later
    /// ([`Shared::kick_locked`](super::driver::Shared::kick_locked)), not
    /// a pump woken at every submission.
    pub(crate) fn unsent(&self) -> (bool, bool) {
        let mut held = false;
        for id in &self.order {
            if let Some(j) = self.jobs.get(id).filter(|j| j.wants_dispatch()) {
                if j.gathering() {
                    held = true;
                } else {
                    return (true, held);
                }
            }
        }
        (false, held)
    }

    /// Cancels a job whose consumer is gone (no more dispatch).
    pub(crate) fn cancel(&mut self, id: u64) {
        if let Some(job) = self.jobs.get_mut(&id) {
            job.exhausted = true;
            self.to_settle.push(id);
        }
        self.settle_finished();
    }

    /// One round: results in, killed workers reaped, tasks out. `true` if
    /// anything moved.
    pub(crate) fn step(&mut self) -> bool {
        self.step_as(false)
    }

    /// [`step`](Core::step) of a submission (`holding`): grouped tasks
    /// that make no full group wait for the next ones unless a worker has
    /// nothing to do (docs/ARCHITECTURE.md, "Submitted tasks travel in
    /// groups").
    pub(crate) fn step_as(&mut self, holding: bool) -> bool {
        let mut got = self.poll_results();
        if self.cancels_pending {
            got |= self.kill_cancelled();
        }
        if !self.dying.is_empty() {
            got |= self.reap_dying();
        }
        let sent = self.dispatch(holding);
        // Also for jobs recorded by a drain made outside a step (the
        // driver's look at the rings before it sleeps): else they would
        // wait for the next health check to settle.
        if got || sent || !self.to_settle.is_empty() {
            self.settle_finished();
        }
        got || sent
    }

    pub(crate) fn poll_results(&mut self) -> bool {
        let mut any = false;
        for i in 0..self.workers.len() {
            if self.workers[i]
                .as_ref()
                .is_some_and(|w| !w.inflight.is_empty())
            {
                match self.drain_worker(Slot::Live(i)) {
                    Ok(moved) => any |= moved,
                    Err(e) => {
                        self.worker_failed(i, e);
                        any = true;
                    }
                }
            }
        }
        let mut r = 0;
        while r < self.retired.len() {
            match self.drain_worker(Slot::Retired(r)) {
                Ok(moved) => any |= moved,
                Err(e) => {
                    self.lose_retired(r, e);
                    any = true;
                    continue;
                }
            }
            if self.retired[r].inflight.is_empty() {
                // Closing its task ring makes the worker return and exit;
                // its segment is recycled once it has (`check_health`).
                let mut w = self.retired.remove(r);
                w.tasks.close();
                w.results.close();
                if self.leaving.len() >= 2 * self.workers.len() {
                    // Dropped: `Process`'s drop reaps it in the background.
                    self.leaving.remove(0);
                }
                self.leaving.push(w);
            } else {
                r += 1;
            }
        }
        any
    }

    /// Handles every result frame waiting in one worker's ring.
    fn drain_worker(&mut self, slot: Slot) -> Result<bool> {
        let timed = self.cfg.task_timeout.is_some();
        let Core {
            workers,
            retired,
            jobs,
            broken,
            to_settle,
            spare_frames,
            ..
        } = self;
        let w = match slot {
            Slot::Live(i) => workers[i].as_mut().expect("live worker"),
            Slot::Retired(r) => &mut retired[r],
        };
        let who = (w.index, w.pid);
        let mut any = false;
        loop {
            let Some(frame) = w.results.try_peek()? else {
                break;
            };
            any = true;
            // The frame borrows the result ring: what the worker's other
            // fields need is done once it is released.
            let then = match frame.kind() {
                R_RESULT => take_result(frame.bytes(), w.inflight.front(), jobs, who)?,
                R_READY => Then::Start,
                R_INIT_FAILED => return Err(init_failed(frame.bytes(), who, broken, jobs)),
                other => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("unknown result frame kind {other}"),
                    ))
                }
            };
            drop(frame);
            match then {
                Then::Nothing => {}
                // The task in front starts now, not when it was sent.
                Then::Start => w.started(),
                Then::Finish { busy_ns, ran } => {
                    if let Some(done) = w.finish_front(busy_ns, ran, timed) {
                        w.clear_skips(done.seq);
                        if let Some(job) = jobs.get_mut(&done.job) {
                            job.task_done(done.first, done.count, busy_ns);
                            to_settle.push(done.job);
                        }
                        if let Some(frame) = done.resend {
                            if spare_frames.len() < SPARE_FRAMES
                                && frame.capacity() <= SPARE_FRAME_BYTES
                            {
                                spare_frames.push(frame);
                            }
                        }
                    }
                }
            }
        }
        if any {
            // Wake the worker if it waits for room to write more results.
            w.results.notify();
        }
        Ok(any)
    }

    /// Live worker `i`'s rings failed with `e`. If the worker has exited
    /// (a ring that waited for it, for the rest of a long frame, asked its
    /// `Process` and gave up: the ring calls that `PeerDied`, or
    /// `Protocol` for a message cut off), it is buried as the health check
    /// would have: `ProcessDied` with its exit status and the item it was
    /// running. Else it is killed and its work fails once it is reaped.
    fn worker_failed(&mut self, i: usize, e: Error) {
        let Some(w) = &self.workers[i] else {
            return;
        };
        if let Some(status) = w.process.exit_code() {
            self.bury(i, status);
            return;
        }
        let e = w.killed_for(e);
        self.lose_worker(i, e, true);
    }

    /// Retired worker `r`'s rings failed: as [`worker_failed`](Self::worker_failed),
    /// without a replacement.
    fn lose_retired(&mut self, r: usize, e: Error) {
        let w = self.retired.remove(r);
        if let Some(status) = w.process.exit_code() {
            let loss = death(&w, status, None);
            self.fail_inflight(w, &loss);
            self.settle_finished();
            return;
        }
        let e = w.killed_for(e);
        self.dying.push(w.kill(Loss::from_error(&e), true));
    }

    /// Fails the work of killed workers that the OS reports gone (or that
    /// outlived `handle::REAP_LIMIT`), without waiting for any. `true` if
    /// any was reaped.
    pub(crate) fn reap_dying(&mut self) -> bool {
        let mut any = false;
        let mut d = 0;
        while d < self.dying.len() {
            if !self.dying[d].over() {
                d += 1;
                continue;
            }
            let (w, loss) = self.dying.remove(d).into_loss();
            self.fail_inflight(w, &loss);
            any = true;
        }
        if any {
            self.settle_finished();
        }
        any
    }

    /// Pushes the frames that did not fit a task ring before, for live and
    /// retired workers alike: a retiring worker's last task may be among
    /// them. A worker whose task ring fails is lost (its frames could never
    /// be sent).
    fn flush_backlogs(&mut self) -> bool {
        let mut any = false;
        for i in 0..self.workers.len() {
            let Some(w) = self.workers[i].as_mut().filter(|w| !w.backlog.is_empty()) else {
                continue;
            };
            match w.flush_backlog() {
                Ok(moved) => any |= moved,
                Err(e) => {
                    self.worker_failed(i, e);
                    any = true;
                }
            }
        }
        let mut r = 0;
        while r < self.retired.len() {
            if let Err(e) = self.retired[r].flush_backlog() {
                self.lose_retired(r, e);
                any = true;
                continue;
            }
            r += 1;
        }
        any
    }

    fn dispatch(&mut self, holding: bool) -> bool {
        let mut any = self.flush_backlogs();
        if self.broken.is_some() {
            self.drop_retries();
            return any;
        }
        any |= self.send_retries();
        // Cheap check first: this runs on every spin of a waiting driver.
        if !self.workers.iter().flatten().any(|w| w.has_room(MAX_DEPTH)) {
            return any;
        }
        // In submission order: each job gets what it wants while there is
        // room. Jobs that will send nothing more leave `order` here, so the
        // walk passes only jobs held back by their own bounds (a bounded
        // `imap` whose consumer lags) before it sends or runs out of room.
        let mut k = 0;
        while let Some(&id) = self.order.get(k) {
            let Some(job) = self.jobs.get(&id).filter(|j| !j.over()) else {
                self.order.remove(k);
                continue;
            };
            let held = holding && job.gathering() && self.idle_worker().is_none();
            if !job.wants_dispatch() || held {
                k += 1;
                continue;
            }
            // The least busy worker with room (for zero-copy chunks, not
            // behind a task that may be cancelled; for a self-scheduled
            // map's descriptor, an idle one, else the job waits for one).
            let bulk = job.source.bulk();
            let depth = job.source.depth();
            let wi = if job.source.idle_only() {
                match self.idle_worker() {
                    Some(wi) => wi,
                    None => {
                        k += 1;
                        continue;
                    }
                }
            } else {
                match self.least_busy(bulk, depth) {
                    Some(wi) => wi,
                    None => return any,
                }
            };
            if let Err(e) = self.send_one(id, wi) {
                self.worker_failed(wi, e);
            }
            any = true;
        }
        any
    }

    /// The live worker with room and the fewest tasks in flight; for
    /// `bulk` (zero-copy) work, not one whose front task may be cancelled;
    /// never one with a task of a failed job in flight. Such a job may
    /// have failed on its input (an item that kills its worker), and its
    /// tasks still queued can kill this one too: the next job's task
    /// queued behind them would die with it (a `map` after a failed one,
    /// its 8-deep chunks still queued, failed that way under Wine).
    fn least_busy(&self, bulk: bool, depth: usize) -> Option<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.as_ref().filter(|w| w.has_room(depth)).map(|w| (i, w)))
            .filter(|(_, w)| !bulk || !self.front_cancellable(w))
            .filter(|(_, w)| !holds_failed(&self.jobs, w))
            .min_by_key(|(_, w)| w.inflight.len())
            .map(|(i, _)| i)
    }

    /// A live worker with nothing in flight that may take a task.
    fn idle_worker(&self) -> Option<usize> {
        self.workers.iter().position(|w| {
            w.as_ref()
                .is_some_and(|w| w.has_room(DEPTH) && w.inflight.is_empty())
        })
    }

    /// Whether `w`'s front task belongs to a job that may be cancelled.
    fn front_cancellable(&self, w: &Worker) -> bool {
        front_cancellable(&self.jobs, w)
    }

    /// Sends the tasks taken back from killed workers, first come first.
    fn send_retries(&mut self) -> bool {
        let mut any = false;
        while !self.retry.is_empty() {
            let Some(wi) = self.least_busy(false, DEPTH) else {
                break;
            };
            let r = self.retry.pop_front().expect("not empty");
            any = true;
            let live = self.jobs.get(&r.job).is_some_and(|j| !j.failed);
            if !live {
                self.retry_dropped(r.job);
                continue;
            }
            let Core {
                workers, jobs, cfg, ..
            } = self;
            let w = workers[wi].as_mut().expect("live worker");
            let keep = front_cancellable(jobs, w);
            let sent = if r.frame.len() > w.tasks.max_payload() {
                w.send_long(K_TASK, r.frame.clone());
                Ok(())
            } else {
                w.send(K_TASK, &r.frame)
            };
            let resend = keep.then_some(r.frame);
            record(
                w,
                cfg,
                r.job,
                (r.first, r.first),
                r.count,
                Sent::Serde,
                resend,
            );
            if let Err(e) = sent {
                self.worker_failed(wi, e);
            }
        }
        any
    }

    /// A task waiting to be sent again will not be (its job failed, the
    /// pool broke or was terminated): it is no longer outstanding.
    fn retry_dropped(&mut self, job: u64) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.outstanding -= 1;
            self.to_settle.push(job);
        }
    }

    /// Drops every task waiting to be sent again (see
    /// [`retry_dropped`](Core::retry_dropped)); their jobs have failed or
    /// are failed by the caller.
    fn drop_retries(&mut self) {
        while let Some(r) = self.retry.pop_front() {
            if let Some(j) = self.jobs.get_mut(&r.job) {
                j.outstanding -= 1;
                j.fail(Error::new(
                    ErrorKind::InvalidState,
                    "the pool was terminated or broke",
                ));
                self.to_settle.push(r.job);
            }
        }
    }

    /// Cancels job `id` (a `Pool::submit`; Python's `Future.cancel()`),
    /// failing it with `err` (`Cancelled`). A task not sent yet is never
    /// sent; a worker running it is killed and replaced, and the tasks
    /// queued behind it are sent again to others. `false` if the job is
    /// done already (its result is in): nothing changes. Drain the result
    /// rings first (`poll_results`), so that a finished task counts.
    pub(crate) fn cancel_task(&mut self, id: u64, err: Error) -> bool {
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        if job.failed || (job.tasks_sent > 0 && job.outstanding == 0) {
            return false;
        }
        job.cancelled = true;
        job.exhausted = true;
        job.fail(err);
        self.to_settle.push(id);
        if job.outstanding > 0 {
            self.cancels_pending = true;
            self.kill_cancelled();
        }
        self.settle_finished();
        true
    }

    /// Cancels grouped task `ticket` of job `id` with `err`: one not sent
    /// is dropped; one at a worker is skipped there, or its worker killed
    /// if it runs it (its group-mates not done go again to others).
    /// `false` if the task is done already. Drain the result rings first
    /// (`poll_results`), so that a finished task counts.
    pub(crate) fn cancel_item(&mut self, id: u64, ticket: u64, err: Error) -> bool {
        let Some(job) = self.jobs.get_mut(&id) else {
            return false;
        };
        let Some(g) = job.source.grouped() else {
            return false;
        };
        match g.cancel(ticket, err) {
            Cancel::Gone => false,
            Cancel::Unsent => {
                if g.is_done() {
                    job.exhausted = true;
                    self.to_settle.push(id);
                    self.settle_finished();
                }
                true
            }
            Cancel::Sent(index) => {
                // The word of the task at its worker, and whether it is
                // alone in its group.
                let holds = |w: &Worker| {
                    w.inflight.iter().find_map(|t| {
                        (t.job == id && index >= t.first && index - t.first < t.count)
                            .then(|| (running_word(t.seq, (index - t.first) as u32), t.count == 1))
                    })
                };
                let live = (0..self.workers.len()).find_map(|i| {
                    let word = self.workers[i].as_ref().and_then(holds)?;
                    Some((Slot::Live(i), word))
                });
                let found = live.or_else(|| {
                    (0..self.retired.len())
                        .find_map(|r| holds(&self.retired[r]).map(|word| (Slot::Retired(r), word)))
                });
                if let Some((slot, (word, alone))) = found {
                    let w = match slot {
                        Slot::Live(i) => self.workers[i].as_mut().expect("live worker"),
                        Slot::Retired(r) => &mut self.retired[r],
                    };
                    // A task alone in its frame is stopped even while it
                    // runs (its worker killed). One among others is a
                    // function measured short: skipped if not started,
                    // else left to finish (a kill would lose the answers
                    // of its group-mates, which travel together).
                    if w.stop_item(word, alone) {
                        self.kill_for_item(slot);
                    }
                }
                true
            }
        }
    }

    /// Kills the worker in `slot` to stop a grouped task it runs (whose
    /// slot is cancelled already): the grouped tasks it holds not done go
    /// again to others at once, the other tasks queued behind it as
    /// [`kill_cancelled`](Core::kill_cancelled) sends them.
    fn kill_for_item(&mut self, slot: Slot) {
        let w = match slot {
            Slot::Live(i) => self.workers[i].as_mut().expect("live worker"),
            Slot::Retired(r) => &mut self.retired[r],
        };
        // Its front is the cancelled task's group of one: the groups
        // behind it had not started, and go again.
        let mut again = Vec::new();
        for t in w.inflight.iter().skip(1) {
            let Some(g) = self.jobs.get_mut(&t.job).and_then(|j| j.source.grouped()) else {
                continue;
            };
            let never = || Error::new(ErrorKind::Cancelled, "Task::cancel was called");
            if g.lost((t.first, t.count), None, false, &never) {
                again.push(t.job);
            }
        }
        take_queued(w, &mut self.retry);
        let (index, pid) = (w.index, w.pid);
        match slot {
            Slot::Live(i) => self.lose_worker_with(i, cancel_loss(index, pid), true),
            Slot::Retired(r) => {
                let w = self.retired.remove(r);
                self.dying.push(w.kill(cancel_loss(index, pid), true));
            }
        }
        for id in again {
            self.reopen(id);
        }
    }

    /// Cancels every `Pool::submit` job that is not running: not sent
    /// yet, or queued behind another task on a worker (Python's
    /// `shutdown(cancel_futures=True)`); returns how many.
    /// `terminate_workers`/`kill_workers`: closes the pool, cancels the
    /// submitted tasks not at a worker's front, breaks the pool with `why`
    /// (every other job fails, nothing is replaced) and signals every
    /// live or retiring worker (`kill`: `SIGKILL`, else `SIGTERM`); the
    /// health check buries them as they exit.
    pub(crate) fn force_shutdown(&mut self, why: String, kill: bool) {
        if self.state == State::Running {
            self.state = State::Closed;
        }
        self.cancel_queued();
        self.set_broken(ErrorKind::InvalidState, why);
        for w in self.all_workers() {
            // A worker that already exited has nothing to stop.
            let _ = if kill {
                w.process.kill()
            } else {
                w.process.terminate()
            };
        }
    }

    pub(crate) fn cancel_queued(&mut self) -> usize {
        let running: Vec<u64> = self
            .all_workers()
            .filter_map(|w| w.inflight.front().map(|t| t.job))
            .collect();
        let why = "the task was cancelled by Pool::shutdown before it started";
        // Grouped tasks not sent yet (those at a worker run, as the front
        // task of a worker does: Python's call queue holds them as
        // running).
        let mut n = 0;
        for (&id, j) in self.jobs.iter_mut().filter(|(_, j)| j.grouped) {
            if let Some(g) = j.source.grouped() {
                n += g.cancel_unsent(why);
                j.exhausted = true;
                self.to_settle.push(id);
            }
        }
        // Grouped tasks queued at a worker behind its front: cancelled,
        // and skipped there.
        let Core {
            workers,
            retired,
            jobs,
            ..
        } = self;
        for w in workers.iter_mut().flatten().chain(retired.iter_mut()) {
            let behind: Vec<(u64, u64, u64, u32)> = w
                .inflight
                .iter()
                .skip(1)
                .filter(|t| jobs.get(&t.job).is_some_and(|j| j.grouped))
                .map(|t| (t.job, t.first, t.count, t.seq))
                .collect();
            for (job, first, count, seq) in behind {
                if let Some(g) = jobs.get_mut(&job).and_then(|j| j.source.grouped()) {
                    n += g.cancel_sent((first, count), why);
                    w.skip_group(seq);
                }
            }
        }
        let ids: Vec<u64> = self
            .jobs
            .iter()
            .filter(|(id, j)| j.cancellable && !j.grouped && !running.contains(id))
            .map(|(id, _)| *id)
            .collect();
        n + ids
            .into_iter()
            .filter(|&id| self.cancel_task(id, Error::new(ErrorKind::Cancelled, why)))
            .count()
    }

    /// Kills every live or retiring worker whose front task belongs to a
    /// cancelled job; the tasks queued behind it go to [`Retry`]. Keeps
    /// `cancels_pending` while a cancelled job still has a task queued
    /// behind another one. `true` if a worker was killed.
    fn kill_cancelled(&mut self) -> bool {
        let mut any = false;
        for i in 0..self.workers.len() {
            if self.workers[i]
                .as_ref()
                .is_some_and(|w| self.front_cancelled(w))
            {
                // What it finished meanwhile counts as finished.
                if let Err(e) = self.drain_worker(Slot::Live(i)) {
                    self.worker_failed(i, e);
                    any = true;
                    continue;
                }
                let Some(w) = self.workers[i].as_mut() else {
                    continue;
                };
                if !front_cancelled(&self.jobs, w) {
                    continue;
                }
                let (index, pid) = (w.index, w.pid);
                take_queued(w, &mut self.retry);
                self.lose_worker_with(i, cancel_loss(index, pid), true);
                any = true;
            }
        }
        let mut r = 0;
        while r < self.retired.len() {
            if !self.front_cancelled(&self.retired[r]) {
                r += 1;
                continue;
            }
            let mut w = self.retired.remove(r);
            take_queued(&mut w, &mut self.retry);
            let loss = cancel_loss(w.index, w.pid);
            self.dying.push(w.kill(loss, true));
            any = true;
        }
        let pending = self.all_workers().any(|w| {
            w.inflight
                .iter()
                .any(|t| self.jobs.get(&t.job).is_some_and(|j| j.cancelled))
        });
        self.cancels_pending = pending;
        any
    }

    fn front_cancelled(&self, w: &Worker) -> bool {
        front_cancelled(&self.jobs, w)
    }

    /// Takes the next task of job `id` and sends it to worker `wi`.
    fn send_one(&mut self, id: u64, wi: usize) -> Result<()> {
        let Core {
            workers,
            jobs,
            scratch,
            attach_scratch,
            cfg,
            to_settle,
            spare_frames,
            ..
        } = self;
        let w = workers[wi].as_mut().expect("live worker");
        let keep = front_cancellable(jobs, w);
        let mut resend = None;
        let job = jobs.get_mut(&id).expect("job exists");
        // A grouped task taken back goes again from its group's own queue.
        let keep = keep && !job.grouped;
        let hard = w.tasks.max_payload();
        // The source runs user code (the input iterator, serialisation):
        // a panic there fails this job, not the thread that drives the pool.
        let next =
            crate::panic::catch_panic(|| job.source.next(scratch, id, SOFT_FRAME.min(hard), hard))
                .unwrap_or_else(|info| {
                    Next::Failed(
                        Error::panicked(info)
                            .with_context("the input iterator panicked in the parent"),
                    )
                });
        let (first, at, count, sent) = match next {
            Next::Done => {
                job.exhausted = true;
                to_settle.push(id);
                return Ok(());
            }
            Next::Failed(e) => {
                job.exhausted = true;
                job.fail(e);
                to_settle.push(id);
                return Ok(());
            }
            Next::Task { first, count } => {
                if keep {
                    let mut copy = spare_frames.pop().unwrap_or_default();
                    copy.clear();
                    copy.extend_from_slice(scratch);
                    resend = Some(copy);
                }
                if scratch.len() > hard {
                    // One item over a frame: streamed when the worker can
                    // take it. The buffer goes with it (no copy).
                    let frame = std::mem::replace(scratch, Vec::with_capacity(SOFT_FRAME * 2));
                    w.send_long(K_TASK, frame);
                } else {
                    w.send(K_TASK, scratch)?;
                }
                (first, first, count, Sent::Serde)
            }
            Next::Zc(ZcTask {
                first,
                count,
                at,
                task,
                input,
                output,
                claim,
            }) => {
                let in_slot = w.slot_for(&input, attach_scratch)?;
                let out_slot = match &output {
                    Some(o) => w.slot_for(o, attach_scratch)?,
                    None => in_slot,
                };
                let zc = ZcHeader {
                    job: id,
                    first: at,
                    count,
                    input: in_slot,
                    output: out_slot,
                    task,
                };
                scratch.clear();
                match &claim {
                    None => {
                        zc.write(scratch);
                        w.send(K_ZC, scratch)?;
                    }
                    Some(c) => {
                        let control = w.slot_for(c.slot.segment(), attach_scratch)?;
                        ClaimHeader {
                            zc,
                            control,
                            cell: c.slot.index(),
                            workers: c.workers,
                            fixed: c.fixed,
                        }
                        .write(scratch);
                        w.send(K_ZC_CLAIM, scratch)?;
                    }
                }
                let sent = if claim.is_some() {
                    Sent::Claim
                } else {
                    Sent::Chunk
                };
                (first, at, count, sent)
            }
        };
        record(w, cfg, id, (first, at), count, sent, resend);
        job.outstanding += 1;
        job.tasks_sent += 1;
        if job.source.is_done() {
            job.exhausted = true;
        }
        Ok(())
    }

    /// Removes jobs with nothing left in flight and nothing left to send,
    /// settling their sinks: those recorded in `to_settle`, in the order
    /// they were (so in completion order), or every job once the pool is
    /// broken or terminated (which fails them all at once).
    fn settle_finished(&mut self) {
        if self.broken.is_some() || self.state == State::Terminated {
            self.to_settle.clear();
            let mut finished: Vec<u64> = self
                .jobs
                .iter()
                .filter(|(_, job)| job.finished())
                .map(|(&id, _)| id)
                .collect();
            // Ids grow with submission: settled first submitted first.
            finished.sort_unstable();
            for id in finished {
                let job = self.jobs.remove(&id).expect("present");
                job.sink.settle();
            }
            return;
        }
        for k in 0..self.to_settle.len() {
            let id = self.to_settle[k];
            if self.jobs.get(&id).is_some_and(Job::finished) {
                let mut job = self.jobs.remove(&id).expect("present");
                if job.grouped {
                    self.groups.retain(|&(_, g)| g != id);
                    let key = job.source.grouped().map(|g| g.key());
                    if let Some(key) = key.filter(|_| !job.failed) {
                        if self.idle_groups.len() >= IDLE_GROUPS {
                            self.idle_groups.remove(0);
                        }
                        self.idle_groups.push((key, job.source));
                        continue;
                    }
                }
                job.sink.settle();
            }
        }
        self.to_settle.clear();
    }

    /// Breaks the pool for good (the one place that does): records why, and
    /// fails every job, also those with nothing in flight (a job whose items
    /// were never dispatched would otherwise wait forever: a broken pool
    /// dispatches nothing). A second break keeps the first reason.
    fn break_pool(
        broken: &mut Option<(ErrorKind, String)>,
        jobs: &mut Jobs,
        kind: ErrorKind,
        why: String,
    ) {
        if broken.is_some() {
            return;
        }
        lifecycle!(error, kind = ?kind, reason = %why, "pool broken");
        let message = format!("the pool is broken: {why}");
        *broken = Some((kind, why));
        for job in jobs.values_mut() {
            job.fail(Error::new(kind, message.clone()));
            job.exhausted = true;
        }
    }

    /// Fails every job with work on `w` (which is dead and reaped): at the
    /// item it was running for the task it was in, at their first item for
    /// the others.
    fn fail_inflight(&mut self, w: Worker, loss: &Loss) {
        let running = w.running_item();
        // Grouped tasks not started go again, while the pool works.
        let goes_on = self.broken.is_none() && self.state != State::Terminated;
        let mut again = Vec::new();
        for (i, t) in w.inflight.iter().enumerate() {
            if let Some(job) = self.jobs.get_mut(&t.job) {
                job.outstanding -= 1;
                self.to_settle.push(t.job);
                let item = match running {
                    Some((task, item)) if task == i => Some(item),
                    _ => None,
                };
                match job.source.grouped() {
                    // The tasks it may have run fail; the others go again.
                    Some(g) => {
                        let error = || loss.error_for(0, w.pid);
                        if g.lost((t.first, t.count), item, i == 0, &error) {
                            if goes_on {
                                again.push(t.job);
                            } else {
                                g.fail_unsent(&error());
                            }
                        }
                    }
                    None => job.fail(loss.error_for(item.unwrap_or(t.first), w.pid)),
                }
            }
        }
        for id in again {
            self.reopen(id);
        }
        self.recycle(w);
    }

    /// Keeps the segment of `w`, a worker whose process exited and was
    /// reaped, for the next replacement: nobody else holds it (the parent
    /// made it and only that worker, now gone, opened it), and a new
    /// worker's rings are made afresh in it (`Ring::create` clears them).
    fn recycle(&mut self, w: Worker) {
        if w.process.exit_code().is_none() || self.spare_segments.len() >= 2 * self.workers.len() {
            return;
        }
        let mut segment = Arc::clone(&w.segment);
        drop(w);
        // A worker may have shrunk it (a hostile task): then it goes.
        if Arc::get_mut(&mut segment).is_some() && segment.intact() {
            self.spare_segments.push(segment);
        }
    }

    /// Worker `i` is gone or unusable: kill it if needed, fail the work it
    /// held (once it is reaped, if killed), and start a replacement.
    fn lose_worker(&mut self, i: usize, err: Error, kill: bool) {
        self.lose_worker_with(i, Loss::from_error(&err), kill);
    }

    fn lose_worker_with(&mut self, i: usize, mut loss: Loss, kill: bool) {
        if self.workers[i].is_none() {
            return;
        }
        // What it wrote before it went is still good — and may say why it
        // went (an initializer that failed closes its rings on the way out).
        let was_broken = self.broken.is_some();
        if let Err(e) = self.drain_worker(Slot::Live(i)) {
            if !was_broken && self.broken.is_some() {
                loss = Loss::from_error(&e);
            }
        }
        let Some(w) = self.workers[i].take() else {
            return;
        };
        // Why a replacement is started, in the events of feature `tracing`.
        let why = match (kill, loss.kind) {
            (true, ErrorKind::Timeout) => "task timeout",
            (true, ErrorKind::Cancelled) => "cancel",
            (true, _) => "killed",
            (false, _) => "crash",
        };
        if kill {
            lifecycle!(
                warn,
                index = w.index,
                pid = w.pid,
                reason = why,
                error = %loss.message,
                "pool worker killed"
            );
            self.dying.push(w.kill(loss, true));
        } else {
            if loss.status.is_none() {
                loss.status = w.process.exit_code();
            }
            self.fail_inflight(w, &loss);
            self.settle_finished();
        }
        if self.replaces_workers() {
            self.respawn(i, why);
        }
    }

    /// Whether a lost or retired worker gets a replacement: while the pool
    /// runs, and after `close()` while queued work is left (Python's
    /// `close()`: submitted work still finishes; with
    /// `max_tasks_per_child` it needs new workers to do so).
    fn replaces_workers(&self) -> bool {
        self.broken.is_none()
            && match self.state {
                State::Running => true,
                State::Closed => self.has_jobs(),
                State::Terminated => false,
            }
    }

    /// A live worker has its last task (`max_tasks_per_child`) and would
    /// be replaced now: the driver runs [`check_health`](Self::check_health)
    /// at once instead of at its next tick, so the replacement starts
    /// while the old worker runs that task (a pool with
    /// `max_tasks_per_child(1)` otherwise waited up to a tick per task).
    pub(crate) fn wants_replacement(&self) -> bool {
        self.workers.iter().flatten().any(|w| w.retiring) && self.replaces_workers()
    }

    /// Starts worker `i` anew; `why` the old one went (for the events of
    /// feature `tracing`).
    fn respawn(&mut self, i: usize, why: &'static str) {
        let spare = self.spare_segments.pop();
        match Worker::spawn(&self.cfg, i, spare) {
            Ok(w) => {
                lifecycle!(
                    debug,
                    index = i,
                    pid = w.pid,
                    reason = why,
                    "pool worker replaced"
                );
                #[cfg(not(feature = "tracing"))]
                let _ = why;
                self.workers[i] = Some(w);
                self.restarts += 1;
            }
            Err(e) => {
                self.break_for_start(
                    e.kind(),
                    format!("could not start a replacement worker: {e}"),
                );
            }
        }
    }

    /// Breaks the pool because a worker could not start (`kind`, `why`),
    /// naming the cause when it is a worker that shrank the doorbell every
    /// worker opens: the start failure itself only says a segment did not
    /// match its handle.
    fn break_for_start(&mut self, kind: ErrorKind, why: String) {
        if super::doorbell::shrunk(&self.cfg.doorbell_segment) {
            self.set_broken(
                ErrorKind::Protocol,
                format!(
                    "a worker shrank the pool's doorbell segment, so no worker can start ({why})"
                ),
            );
        } else {
            self.set_broken(kind, why);
        }
    }

    /// Breaks the pool for good: every job fails with `why`, and so does
    /// every later call.
    pub(crate) fn set_broken(&mut self, kind: ErrorKind, why: String) {
        Self::break_pool(&mut self.broken, &mut self.jobs, kind, why);
    }

    /// Dead workers, task timeouts, retirements: a [`verdict`] per live
    /// worker, applied here. Cheap enough to run every tick while a driver
    /// waits.
    pub(crate) fn check_health(&mut self) {
        self.last_health = Instant::now();
        let now = self.last_health;
        self.reap_dying();
        let mut l = 0;
        while l < self.leaving.len() {
            if self.leaving[l].process.exit_code().is_some() {
                let w = self.leaving.swap_remove(l);
                self.recycle(w);
            } else {
                l += 1;
            }
        }
        for i in 0..self.workers.len() {
            let Some(w) = &self.workers[i] else {
                if self.replaces_workers() {
                    self.respawn(i, "no worker");
                }
                continue;
            };
            if let Some(status) = w.process.exit_code() {
                self.bury(i, status);
                continue;
            }
            if let Some(loss) = verdict(w, &self.cfg, now) {
                self.lose_worker_with(i, loss, true);
                continue;
            }
            let Some(w) = self.workers[i].as_mut() else {
                continue;
            };
            if let Err(e) = w.detach_dropped() {
                self.lose_worker(i, e, true);
                continue;
            }
            if w.retiring && self.replaces_workers() {
                // Its backlog, if any, is still flushed (`flush_backlogs`).
                if let Some(old) = self.workers[i].take() {
                    lifecycle!(
                        debug,
                        index = i,
                        pid = old.pid,
                        "pool worker retired (max_tasks_per_child)"
                    );
                    self.retired.push(old);
                    self.respawn(i, "max_tasks_per_child");
                }
            }
        }
        let mut r = 0;
        while r < self.retired.len() {
            if let Some(st) = self.retired[r].process.exit_code() {
                let _ = self.drain_worker(Slot::Retired(r));
                let w = self.retired.remove(r);
                if w.inflight.is_empty() {
                    self.recycle(w);
                } else {
                    let loss = Loss {
                        kind: ErrorKind::ProcessDied,
                        message: format!("pool worker {} (pid {}) died", w.index, w.pid),
                        status: Some(st),
                    };
                    self.fail_inflight(w, &loss);
                }
            } else {
                r += 1;
            }
        }
        self.settle_finished();
    }

    /// Live worker `i` exited with `status`: break the pool if every
    /// replacement would fail the same way, then fail its work and
    /// replace it.
    fn bury(&mut self, i: usize, status: ExitStatus) {
        // A worker that gave up by itself says why in its result (it could
        // not open its rings or the doorbell, …). It has exited, so the
        // wait is for a result already sent or never coming.
        let own = self.workers[i].as_mut().and_then(|w| {
            match w.process.poll_join(Duration::from_millis(20)) {
                Ok(Some(Err(why))) => Some(why),
                _ => None,
            }
        });
        let Some(w) = &self.workers[i] else {
            return;
        };
        let broken = fatal(w, status, own.as_deref());
        // Told before `lose_worker_with` drains what it committed.
        let loss = death(w, status, own.as_deref());
        lifecycle!(
            warn,
            index = w.index,
            pid = w.pid,
            %status,
            error = %loss.message,
            "pool worker died"
        );
        if let Some((kind, why)) = broken {
            self.break_for_start(kind, why);
        }
        self.lose_worker_with(i, loss, false);
    }

    /// Kills every worker and fails every job (`terminate`): a job with
    /// work on a worker fails at that item once the worker is reaped
    /// (`reap_dying`; `Pool::terminate` waits for it outside the lock),
    /// every other job at once.
    pub(crate) fn terminate(&mut self) {
        self.state = State::Terminated;
        let mut all: Vec<Worker> = self.workers.iter_mut().filter_map(Option::take).collect();
        all.append(&mut self.retired);
        if !all.is_empty() {
            lifecycle!(debug, workers = all.len(), "pool terminated");
        }
        self.drop_retries();
        for w in all {
            let loss = Loss::new(ErrorKind::InvalidState, "the pool was terminated".into());
            // The user ended it: no exit status in the jobs' errors.
            self.dying.push(w.kill(loss, false));
        }
        for job in self.jobs.values_mut() {
            if let Some(g) = job.source.grouped() {
                g.fail_unsent(&Error::new(
                    ErrorKind::InvalidState,
                    "the pool was terminated",
                ));
            }
            // Every task still out is on a dying worker: it fails there.
            if job.outstanding == 0 {
                job.fail(Error::new(
                    ErrorKind::InvalidState,
                    "the pool was terminated",
                ));
            }
            job.exhausted = true;
        }
        self.reap_dying();
        self.settle_finished();
    }

    /// Closes every task ring and waits for the workers to exit (`join`
    /// after `close`, with no jobs left).
    pub(crate) fn shut_down(&mut self) -> Vec<Worker> {
        let mut all: Vec<Worker> = self.workers.iter_mut().filter_map(Option::take).collect();
        all.append(&mut self.retired);
        all
    }
}

/// Joins workers whose task rings were closed (outside the pool lock).
pub(crate) fn join_workers(workers: Vec<Worker>) -> Result<()> {
    let mut first_err = None;
    for w in workers {
        let Worker { process, tasks, .. } = w;
        drop(tasks); // closes the ring: the worker's loop returns
        match process.join() {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => {
                first_err.get_or_insert(Error::new(ErrorKind::Protocol, msg));
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

enum Slot {
    Live(usize),
    Retired(usize),
}

/// What kind of task a worker was sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Serde items (`K_TASK`).
    Serde,
    /// A zero-copy chunk (`K_ZC`).
    Chunk,
    /// A self-scheduled map's descriptor (`K_ZC_CLAIM`).
    Claim,
}

/// Records a task just sent to `w` in its in-flight list: its first
/// item in the job, and where its frame said it starts (`at`: the same,
/// unless a windowed map's chunk, `ZcTask::at`).
fn record(
    w: &mut Worker,
    cfg: &Config,
    job: u64,
    (first, at): (u64, u64),
    count: u64,
    sent: Sent,
    resend: Option<Vec<u8>>,
) {
    // Only task timeouts read these times; skip the clock otherwise.
    let now = if cfg.task_timeout.is_some() {
        Instant::now()
    } else {
        w.front_since
    };
    if w.inflight.is_empty() {
        w.front_since = now;
    }
    w.inflight.push_back(Inflight {
        job,
        first,
        at,
        count,
        seq: w.sent as u32,
        sent: now,
        bulk: sent != Sent::Serde,
        claim: sent == Sent::Claim,
        resend,
    });
    w.sent += 1;
    if cfg.max_tasks_per_child.is_some_and(|m| w.sent >= m) {
        w.retiring = true;
    }
}

/// Whether `w`'s front task belongs to a job that may be cancelled: a
/// task queued behind it keeps a copy of its frame.
fn front_cancellable(jobs: &Jobs, w: &Worker) -> bool {
    w.inflight
        .front()
        .is_some_and(|t| jobs.get(&t.job).is_some_and(|j| j.cancellable && !j.failed))
}

/// Whether `w` has a task of a failed job in flight.
fn holds_failed(jobs: &Jobs, w: &Worker) -> bool {
    w.inflight
        .iter()
        .any(|t| jobs.get(&t.job).is_some_and(|j| j.failed))
}

/// Whether `w`'s front task belongs to a cancelled job.
fn front_cancelled(jobs: &Jobs, w: &Worker) -> bool {
    w.inflight
        .front()
        .is_some_and(|t| jobs.get(&t.job).is_some_and(|j| j.cancelled))
}

/// Moves the tasks queued behind `w`'s front task that kept a copy of
/// their frame to `retry` (`w` is about to be killed to cancel its front
/// task). One without a copy stays, and fails with the worker.
fn take_queued(w: &mut Worker, retry: &mut VecDeque<Retry>) {
    let mut kept = VecDeque::with_capacity(1);
    for (i, t) in std::mem::take(&mut w.inflight).into_iter().enumerate() {
        match t.resend {
            Some(frame) if i > 0 => retry.push_back(Retry {
                job: t.job,
                first: t.first,
                count: t.count,
                frame,
            }),
            _ => kept.push_back(Inflight { resend: None, ..t }),
        }
    }
    w.inflight = kept;
}

/// What the jobs left on a worker killed to cancel its running task are
/// told (only the cancelled task's own job, which has its error already).
fn cancel_loss(index: usize, pid: u32) -> Loss {
    Loss::new(
        ErrorKind::Cancelled,
        format!("pool worker {index} (pid {pid}) was killed to cancel its running task"),
    )
}

type Jobs = HashMap<u64, Job, JobIds>;

/// What a result frame leaves for its worker's bookkeeping, done once the
/// frame is released.
enum Then {
    Nothing,
    /// `R_READY`: the worker is up.
    Start,
    /// The frame completed the front task.
    Finish {
        busy_ns: u64,
        /// For a claim descriptor, the elements its worker ran (the
        /// frame's `first`).
        ran: u64,
    },
}

/// An `R_RESULT` frame from the worker `who` (index, pid): checked against
/// its task in flight at the front, its outputs and error handed to the
/// job.
fn take_result(
    bytes: &[u8],
    front: Option<&Inflight>,
    jobs: &mut Jobs,
    who: (usize, u32),
) -> Result<Then> {
    let (h, rest) = ResultHeader::read(bytes)?;
    let Some(front) = front else {
        return Err(Error::new(ErrorKind::Protocol, "a result nobody asked for"));
    };
    h.answers(front.job, front.at, front.count)?;
    // The worker names its outputs as its frame did (`at`); the job
    // counts from the task's first item.
    let first = front.first + (h.first - front.at);
    let (outputs, mut error) = h.payload(rest)?;
    if let Some(te) = &mut error {
        // Its item, too (a peer's number: no arithmetic that can panic).
        if let Some(index) = te
            .index
            .checked_sub(front.at)
            .and_then(|d| d.checked_add(front.first))
        {
            te.index = index;
        }
    }
    if let Some(job) = jobs.get_mut(&h.job) {
        match job.source.grouped() {
            Some(g) if h.flags & F_RECORDS != 0 => g.take_records(who, first, h.count, outputs)?,
            Some(g) => g.take(who, first, h.count, outputs, error)?,
            None => job.take_outputs(who, first, h.count, outputs, error),
        }
    }
    Ok(if h.flags & F_LAST != 0 {
        Then::Finish {
            busy_ns: h.busy_ns,
            ran: h.first,
        }
    } else {
        Then::Nothing
    })
}

/// An `R_INIT_FAILED` frame from the worker `who` (index, pid): the pool
/// breaks with the initializer's error, which is also returned (the
/// worker is lost).
fn init_failed(
    bytes: &[u8],
    (index, pid): (usize, u32),
    broken: &mut Option<(ErrorKind, String)>,
    jobs: &mut Jobs,
) -> Error {
    let err: TaskError = match postcard::from_bytes(bytes) {
        Ok(err) => err,
        Err(e) => return Error::codec("initializer error", e),
    };
    let e = err.into_error(index, pid);
    let what = format!("the initializer failed: {e}");
    Core::break_pool(broken, jobs, e.kind(), what.clone());
    Error::new(e.kind(), what)
}

/// The parent's handling of one result frame, against a task in flight of
/// items 0..16 of job 1, into a sink of `String`s (fuzzing).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_result(bytes: &[u8]) -> bool {
    let Ok((h, rest)) = ResultHeader::read(bytes) else {
        return false;
    };
    if h.answers(1, 0, 16).is_err() {
        return false;
    }
    let Ok((outputs, error)) = h.payload(rest) else {
        return false;
    };
    if h.flags & F_RECORDS != 0 {
        return fuzz_records(h.first, h.count, outputs);
    }
    let sink = super::jobs::Collect::<String>::new(false);
    let ok = sink.deliver(h.first, h.count, outputs).is_ok();
    if let Some(te) = error {
        let _ = te.into_error(0, 1).to_string();
    }
    ok
}

/// An `F_RECORDS` frame against a group of 16 `String` tasks in flight
/// (items 0..16, item 5 cancelled), each with its own sink (fuzzing).
#[cfg(feature = "fuzzing")]
fn fuzz_records(first: u64, count: u32, records: &[u8]) -> bool {
    let mut g = Group::new(TaskRef::from_words([0, 0, 0]), 1);
    let sinks: Vec<Arc<super::jobs::Collect<String>>> = (0..16)
        .map(|_| super::jobs::Collect::<String>::new(false))
        .collect();
    let mut tickets = Vec::new();
    for s in &sinks {
        tickets.push(g.push(super::group::Bytes::new(&[0]), s.clone()));
    }
    let mut frame = Vec::new();
    while !g.is_done() {
        let _ = g.next(&mut frame, 1, 1 << 16, 1 << 16);
    }
    let _ = g.cancel(tickets[5], Error::new(ErrorKind::Cancelled, "fuzz"));
    g.take_records((0, 1), first, count, records).is_ok()
}
