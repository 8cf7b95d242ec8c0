//! The parent's scheduler: workers, jobs, dispatch, results, failures.
//!
//! There is no scheduler thread on the hot path. Whoever waits for a
//! result drives: it polls the workers' result rings, routes outputs to
//! their jobs, and refills the task rings, all under one mutex. A
//! background *pump* thread drives only while nobody else does (work
//! submitted with `*_async` or `imap` progresses while the caller does
//! something else), and steps aside as soon as a caller wants to drive.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

use super::doorbell::Doorbell;
use super::jobs::{Next, Sink, Source, ZcTask};
use super::wire::running_item;
use super::wire::{
    ResultHeader, TaskError, ZcHeader, F_ERROR, F_LAST, K_ATTACH, K_DETACH, K_TASK, K_ZC,
    R_INIT_FAILED, R_READY, R_RESULT,
};
use super::worker::{rings_in, rings_len, worker_main, ProgressLine, WorkerArgs};
use crate::error::{Call, Error, ErrorKind, Result};
use crate::exit_status::ExitStatus;
use crate::process::Process;
use crate::ring::{Consumer, Producer};
use crate::segment::Segment;
use crate::task::{TaskKey, TaskRef};

/// Tasks in flight per worker: one running, one queued behind it, so a
/// worker never waits for the parent between tasks.
const DEPTH: usize = 2;
/// A task frame is packed up to about this many bytes of items.
const SOFT_FRAME: usize = 64 * 1024;
/// Spin this long after the last progress before sleeping (the cost of
/// waking a parked vCPU here; docs/BENCHMARKS.md, "Measured before the code").
const SPIN: Duration = Duration::from_micros(50);
/// Health checks (dead workers, task timeouts) at least this often.
const TICK: Duration = Duration::from_millis(10);
/// With a task timeout, how long a worker may take to start on top of it.
const START_ALLOWANCE: Duration = Duration::from_secs(10);
/// Segments attached to one worker before the oldest is detached.
const MAX_ATTACHED: usize = 16;

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
    /// Prefixes of inherited environment variables workers must not see.
    pub(crate) strip_env: &'static [&'static str],
}

/// Per-worker counters (mpire's "insights").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) tasks: u64,
    pub(crate) items: u64,
    pub(crate) busy: Duration,
    pub(crate) started: Instant,
}

struct Inflight {
    job: u64,
    first: u64,
    count: u64,
    /// Task frames sent to this worker before this one (wrapping): the
    /// number the worker's progress word names it by.
    seq: u32,
    sent: Instant,
    /// A zero-copy chunk: bulk work the parent only hands out.
    bulk: bool,
}

struct Attached {
    slot: u32,
    segment: Weak<Segment>,
}

pub(crate) struct Worker {
    pub(crate) index: usize,
    process: Process<std::result::Result<(), String>>,
    pub(crate) pid: u32,
    /// Both rings; watched for a shrink by the worker (`check_health`).
    segment: Arc<Segment>,
    /// Where the worker says which item it runs.
    progress: ProgressLine,
    tasks: Producer,
    results: Consumer,
    inflight: VecDeque<Inflight>,
    /// Frames that did not fit into the task ring yet, in order.
    backlog: VecDeque<(u8, Vec<u8>)>,
    sent: u64,
    retiring: bool,
    /// The worker said it is up (after its initializer).
    ready: bool,
    attached: Vec<Attached>,
    next_slot: u32,
    /// When the task at the front of `inflight` started (about).
    front_since: Instant,
    pub(crate) stats: Stats,
}

impl Worker {
    fn spawn(cfg: &Config, index: usize) -> Result<Worker> {
        let segment = Arc::new(Segment::create(rings_len(cfg.ring_bytes))?);
        let (task_ring, result_ring) = rings_in(&segment, cfg.ring_bytes, true)?;
        let progress = ProgressLine::in_segment(&segment, cfg.ring_bytes)?;
        let tasks = task_ring.producer()?;
        let results = result_ring.consumer()?;
        let args = WorkerArgs {
            rings: segment.handle(),
            ring_bytes: cfg.ring_bytes,
            doorbell: cfg.doorbell.clone(),
            key: cfg.key,
            index: index as u32,
            core: cfg
                .cores
                .as_ref()
                .filter(|c| !c.is_empty())
                .map(|c| c[index % c.len()]),
            init: cfg
                .init
                .as_ref()
                .map(|(t, a)| (*t, ByteBuf::from(a.clone()))),
            timing: cfg.timing,
        };
        let process = Process::builder()
            .name(format!("PoolWorker-{}", index + 1))
            .env_remove_prefixes(cfg.strip_env)
            .spawn(worker_main, args)?;
        let now = Instant::now();
        Ok(Worker {
            index,
            pid: process.pid(),
            process,
            segment,
            progress,
            tasks,
            results,
            inflight: VecDeque::new(),
            backlog: VecDeque::new(),
            sent: 0,
            retiring: false,
            ready: false,
            attached: Vec::new(),
            next_slot: 0,
            front_since: now,
            stats: Stats {
                tasks: 0,
                items: 0,
                busy: Duration::ZERO,
                started: now,
            },
        })
    }

    /// `e`, from this worker's rings or frames, worded for the user: the
    /// pool kills a worker it cannot talk to.
    fn killed_for(&self, e: Error) -> Error {
        let name = format!("pool worker {} (pid {}) was killed", self.index, self.pid);
        e.in_call(&Call {
            name: &name,
            timed_out: "it did not answer in time",
            peer_died: "its process died",
            disconnected: "it stopped taking tasks",
        })
    }

    /// The item this worker was running when it died, and the position
    /// in `inflight` of its task: what its progress word names, if that is
    /// an item of a task in flight. Call only once it is dead (exited, or
    /// killed and reaped).
    fn running_item(&self) -> Option<(usize, u64)> {
        // SYNC: Relaxed: pairs with the worker's Relaxed store in
        // `Running::start`; the worker is dead, so it stores no more and
        // all it stored is visible.
        let word = self.progress.running().load(Ordering::Relaxed);
        self.inflight
            .iter()
            .enumerate()
            .find_map(|(i, t)| running_item(word, t.seq, t.first, t.count).map(|item| (i, item)))
    }

    fn has_room(&self) -> bool {
        !self.retiring && self.inflight.len() < DEPTH && self.backlog.is_empty()
    }

    /// Pushes a frame, or queues it behind the ones that did not fit.
    fn send(&mut self, kind: u8, frame: &[u8]) -> Result<()> {
        if self.backlog.is_empty() && self.tasks.try_push(kind, frame)? {
            return Ok(());
        }
        self.backlog.push_back((kind, frame.to_vec()));
        Ok(())
    }

    fn flush_backlog(&mut self) -> Result<bool> {
        let mut any = false;
        while let Some((kind, frame)) = self.backlog.front() {
            if !self.tasks.try_push(*kind, frame)? {
                break;
            }
            self.backlog.pop_front();
            any = true;
        }
        Ok(any)
    }

    /// The slot `segment` is attached at in this worker, attaching it
    /// first if needed.
    fn slot_for(&mut self, segment: &Arc<Segment>, scratch: &mut Vec<u8>) -> Result<u32> {
        if let Some(a) = self.attached.iter().find(|a| {
            a.segment
                .upgrade()
                .is_some_and(|s| Arc::ptr_eq(&s, segment))
        }) {
            return Ok(a.slot);
        }
        if self.attached.len() >= MAX_ATTACHED {
            let old = self.attached.remove(0);
            self.send(K_DETACH, &old.slot.to_le_bytes())?;
        }
        let slot = self.next_slot;
        self.next_slot = self.next_slot.wrapping_add(1);
        scratch.clear();
        scratch.extend_from_slice(&slot.to_le_bytes());
        scratch.extend_from_slice(&[0; 4]);
        postcard::to_io(&segment.handle(), &mut *scratch)
            .map_err(|e| Error::codec("segment handle", e))?;
        self.send(K_ATTACH, scratch)?;
        self.attached.push(Attached {
            slot,
            segment: Arc::downgrade(segment),
        });
        Ok(slot)
    }

    /// Detaches segments whose last handle in this process is gone.
    fn detach_dropped(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.attached.len() {
            if self.attached[i].segment.strong_count() == 0 {
                let a = self.attached.remove(i);
                self.send(K_DETACH, &a.slot.to_le_bytes())?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Kills the worker and waits (briefly) until the OS reports it gone,
    /// so it can no longer write any memory it shares.
    fn kill_and_reap(&self) -> Option<ExitStatus> {
        let _ = self.process.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(st) = self.process.exit_code() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
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
        }
    }

    fn fail(&mut self, e: Error) {
        if !self.failed {
            self.failed = true;
            self.sink.fail(e);
        }
    }

    fn wants_dispatch(&self) -> bool {
        !self.failed
            && !self.exhausted
            && self.outstanding < self.max_outstanding
            && self.sink.backlog() < self.max_backlog
            && !self.sink.abandoned()
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
    jobs: HashMap<u64, Job, JobIds>,
    order: VecDeque<u64>,
    next_job: u64,
    pub(crate) state: State,
    /// Set when the pool cannot work any more (initializer failed, a
    /// replacement worker could not be started); every call returns it.
    pub(crate) broken: Option<(ErrorKind, String)>,
    driving: bool,
    scratch: Vec<u8>,
    attach_scratch: Vec<u8>,
    last_health: Instant,
    pub(crate) restarts: u64,
}

impl Core {
    pub(crate) fn new(cfg: Config) -> Result<Core> {
        let mut workers = Vec::with_capacity(cfg.processes);
        for i in 0..cfg.processes {
            workers.push(Some(Worker::spawn(&cfg, i)?));
        }
        Ok(Core {
            cfg,
            workers,
            retired: Vec::new(),
            jobs: HashMap::default(),
            order: VecDeque::new(),
            next_job: 1,
            state: State::Running,
            broken: None,
            driving: false,
            scratch: Vec::with_capacity(SOFT_FRAME * 2),
            attach_scratch: Vec::new(),
            last_health: Instant::now(),
            restarts: 0,
        })
    }

    pub(crate) fn broken_error(&self) -> Option<Error> {
        self.broken
            .as_ref()
            .map(|(k, m)| Error::new(*k, format!("the pool is broken: {m}")))
    }

    /// Registers a job; it is dispatched by whoever drives next.
    pub(crate) fn submit(&mut self, job: Job) -> Result<u64> {
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
        if let Some(e) = self.broken_error() {
            return Err(e);
        }
        let id = self.next_job;
        self.next_job += 1;
        self.jobs.insert(id, job);
        self.order.push_back(id);
        Ok(id)
    }

    pub(crate) fn has_jobs(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Live and retiring workers.
    fn all_workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter().flatten().chain(&self.retired)
    }

    fn has_inflight(&self) -> bool {
        self.all_workers().any(|w| !w.inflight.is_empty())
    }

    /// Workers running a zero-copy chunk now (each one busy on a core).
    fn bulk_busy_workers(&self) -> usize {
        self.all_workers()
            .filter(|w| w.inflight.front().is_some_and(|t| t.bulk))
            .count()
    }

    /// Something a driver can do now: tasks in flight, or tasks to send.
    pub(crate) fn active(&self) -> bool {
        self.has_inflight() || self.jobs.values().any(Job::wants_dispatch)
    }

    /// Cancels a job whose consumer is gone (no more dispatch).
    pub(crate) fn cancel(&mut self, id: u64) {
        if let Some(job) = self.jobs.get_mut(&id) {
            job.exhausted = true;
        }
        self.settle_finished();
    }

    /// One round: results in, tasks out. `true` if anything moved.
    fn step(&mut self) -> bool {
        let got = self.poll_results();
        let sent = self.dispatch();
        if got || sent {
            self.settle_finished();
        }
        got || sent
    }

    fn poll_results(&mut self) -> bool {
        let mut any = false;
        for i in 0..self.workers.len() {
            if self.workers[i]
                .as_ref()
                .is_some_and(|w| !w.inflight.is_empty())
            {
                match self.drain_worker(Slot::Live(i)) {
                    Ok(moved) => any |= moved,
                    Err(e) => {
                        let e = match &self.workers[i] {
                            Some(w) => w.killed_for(e),
                            None => e,
                        };
                        self.lose_worker(i, e, true);
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
                    let w = self.retired.remove(r);
                    let e = w.killed_for(e);
                    w.kill_and_reap();
                    self.fail_inflight(w, &Loss::from_error(&e));
                    any = true;
                    continue;
                }
            }
            if self.retired[r].inflight.is_empty() {
                // Dropping it closes its task ring: the worker returns and
                // exits; `Process`'s drop reaps it in the background.
                self.retired.remove(r);
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
            ..
        } = self;
        let w = match slot {
            Slot::Live(i) => workers[i].as_mut().expect("live worker"),
            Slot::Retired(r) => &mut retired[r],
        };
        let mut any = false;
        loop {
            let Some(frame) = w.results.try_peek()? else {
                break;
            };
            any = true;
            match frame.kind() {
                R_RESULT => {}
                R_READY => {
                    w.ready = true;
                    // The task in front starts now, not when it was sent.
                    w.front_since = Instant::now();
                    drop(frame);
                    continue;
                }
                R_INIT_FAILED => {
                    let err: TaskError = postcard::from_bytes(frame.bytes())
                        .map_err(|e| Error::codec("initializer error", e))?;
                    let e = err.into_error(w.index, w.pid);
                    let what = format!("the initializer failed: {e}");
                    *broken = Some((e.kind(), what.clone()));
                    drop(frame);
                    return Err(Error::new(e.kind(), what));
                }
                other => {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!("unknown result frame kind {other}"),
                    ))
                }
            }
            let (h, rest) = ResultHeader::read(frame.bytes())?;
            let Some(front) = w.inflight.front() else {
                return Err(Error::new(ErrorKind::Protocol, "a result nobody asked for"));
            };
            let end = h.first.checked_add(u64::from(h.count));
            if h.job != front.job
                || h.first < front.first
                || end.is_none_or(|e| e > front.first + front.count)
            {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    "a result that does not match the task in flight",
                ));
            }
            let (outputs, error) = if h.flags & F_ERROR != 0 {
                split_error(rest)?
            } else {
                (rest, None)
            };
            if let Some(job) = jobs.get_mut(&h.job) {
                // Also after a failure: an ordered `imap` still hands out
                // the items before the failing one, which may arrive later.
                if h.count > 0 {
                    // Decoding runs the result type's `Deserialize`: user code.
                    let delivered =
                        crate::panic::catch_panic(|| job.sink.deliver(h.first, h.count, outputs))
                            .unwrap_or_else(|info| {
                                Err(Error::panicked(info)
                                    .with_context("decoding a result panicked"))
                            });
                    if let Err(e) = delivered {
                        job.fail(e.with_pid(w.pid));
                    }
                }
                if let Some(te) = error {
                    job.fail(te.into_error(w.index, w.pid));
                }
            }
            if h.flags & F_LAST != 0 {
                let done = w.inflight.pop_front().expect("checked above");
                if timed {
                    // Only task timeouts need it; a clock read is ~20 ns.
                    w.front_since = Instant::now();
                }
                w.stats.tasks += 1;
                w.stats.items += done.count;
                w.stats.busy += Duration::from_nanos(h.busy_ns);
                if let Some(job) = jobs.get_mut(&done.job) {
                    job.outstanding -= 1;
                    job.sink.task_done(done.count);
                }
            }
            drop(frame);
        }
        if any {
            // Wake the worker if it waits for room to write more results.
            w.results.notify();
        }
        Ok(any)
    }

    fn dispatch(&mut self) -> bool {
        let mut any = false;
        for w in self.workers.iter_mut().flatten() {
            if !w.backlog.is_empty() {
                match w.flush_backlog() {
                    Ok(moved) => any |= moved,
                    Err(_) => w.retiring = true,
                }
            }
        }
        if self.broken.is_some() {
            return any;
        }
        // Cheap checks first: this runs on every spin of a waiting driver.
        if !self.workers.iter().flatten().any(Worker::has_room)
            || !self.jobs.values().any(Job::wants_dispatch)
        {
            return any;
        }
        let ids: Vec<u64> = self.order.iter().copied().collect();
        for id in ids {
            while self.jobs.get(&id).is_some_and(Job::wants_dispatch) {
                // The least busy worker with room.
                let Some(wi) = self
                    .workers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| w.as_ref().filter(|w| w.has_room()).map(|w| (i, w)))
                    .min_by_key(|(_, w)| w.inflight.len())
                    .map(|(i, _)| i)
                else {
                    return any;
                };
                if let Err(e) = self.send_one(id, wi) {
                    let e = match &self.workers[wi] {
                        Some(w) => w.killed_for(e),
                        None => e,
                    };
                    self.lose_worker(wi, e, true);
                }
                any = true;
            }
        }
        any
    }

    /// Takes the next task of job `id` and sends it to worker `wi`.
    fn send_one(&mut self, id: u64, wi: usize) -> Result<()> {
        let Core {
            workers,
            jobs,
            scratch,
            attach_scratch,
            cfg,
            ..
        } = self;
        let job = jobs.get_mut(&id).expect("job exists");
        let w = workers[wi].as_mut().expect("live worker");
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
        let (first, count, bulk) = match next {
            Next::Done => {
                job.exhausted = true;
                return Ok(());
            }
            Next::Failed(e) => {
                job.exhausted = true;
                job.fail(e);
                return Ok(());
            }
            Next::Task { first, count } => {
                w.send(K_TASK, scratch)?;
                (first, count, false)
            }
            Next::Zc(ZcTask {
                first,
                count,
                task,
                input,
                output,
            }) => {
                let in_slot = w.slot_for(&input, attach_scratch)?;
                let out_slot = match &output {
                    Some(o) => w.slot_for(o, attach_scratch)?,
                    None => in_slot,
                };
                scratch.clear();
                ZcHeader {
                    job: id,
                    first,
                    count,
                    input: in_slot,
                    output: out_slot,
                    task,
                }
                .write(scratch);
                w.send(K_ZC, scratch)?;
                (first, count, true)
            }
        };
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
            job: id,
            first,
            count,
            seq: w.sent as u32,
            sent: now,
            bulk,
        });
        w.sent += 1;
        if cfg.max_tasks_per_child.is_some_and(|m| w.sent >= m) {
            w.retiring = true;
        }
        job.outstanding += 1;
        Ok(())
    }

    /// Removes jobs with nothing left in flight and nothing left to send.
    fn settle_finished(&mut self) {
        let jobs = &mut self.jobs;
        self.order.retain(|id| {
            let Some(job) = jobs.get(id) else {
                return false;
            };
            let over = job.failed || job.exhausted || job.sink.abandoned();
            if over && job.outstanding == 0 {
                let job = jobs.remove(id).expect("present");
                job.sink.settle();
                false
            } else {
                true
            }
        });
    }

    /// Fails every job with work on `w` (which is dead): at the item it
    /// was running for the task it was in, at their first item for the
    /// others.
    fn fail_inflight(&mut self, w: Worker, loss: &Loss) {
        let running = w.running_item();
        for (i, t) in w.inflight.iter().enumerate() {
            if let Some(job) = self.jobs.get_mut(&t.job) {
                job.outstanding -= 1;
                let item = match running {
                    Some((task, item)) if task == i => item,
                    _ => t.first,
                };
                job.fail(loss.error_for(item, w.pid));
            }
        }
    }

    /// Worker `i` is gone or unusable: kill it if needed, fail the work it
    /// held, and start a replacement.
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
        if kill {
            w.kill_and_reap();
        }
        if loss.status.is_none() {
            loss.status = w.process.exit_code();
        }
        self.fail_inflight(w, &loss);
        self.settle_finished();
        if self.state == State::Running && self.broken.is_none() {
            self.respawn(i);
        }
    }

    fn respawn(&mut self, i: usize) {
        match Worker::spawn(&self.cfg, i) {
            Ok(w) => {
                self.workers[i] = Some(w);
                self.restarts += 1;
            }
            Err(e) => {
                self.set_broken(
                    e.kind(),
                    format!("could not start a replacement worker: {e}"),
                );
            }
        }
    }

    /// Breaks the pool for good: every job fails with `why`, and so does
    /// every later call.
    pub(crate) fn set_broken(&mut self, kind: ErrorKind, why: String) {
        if self.broken.is_some() {
            return;
        }
        let message = format!("the pool is broken: {why}");
        self.broken = Some((kind, why));
        for job in self.jobs.values_mut() {
            job.fail(Error::new(kind, message.clone()));
            job.exhausted = true;
        }
    }

    /// Dead workers, task timeouts, retirements. Cheap enough to run every
    /// [`TICK`] while a driver waits.
    fn check_health(&mut self) {
        self.last_health = Instant::now();
        for i in 0..self.workers.len() {
            let Some(w) = &self.workers[i] else {
                if self.state == State::Running && self.broken.is_none() {
                    self.respawn(i);
                }
                continue;
            };
            if let Some(st) = w.process.exit_code() {
                let ready = w.ready;
                let pid = w.pid;
                // A worker that gave up by itself says why in its result
                // (it could not open its rings or the doorbell, …).
                let own = self.workers[i].as_mut().and_then(|w| {
                    match w.process.join_timeout(Duration::from_millis(20)) {
                        Ok(Some(Err(why))) => Some(why),
                        _ => None,
                    }
                });
                if st == ExitStatus::Code(crate::bootstrap::EXIT_NOT_INITIALISED) {
                    // It reached a start before `init()`: so will every
                    // replacement. (The worker printed the same advice.)
                    let why = crate::bootstrap::init_advice(&format!(
                        "pool worker {i} (pid {pid}) reached a spawn before multiproc::init() made it a worker"
                    ));
                    self.set_broken(ErrorKind::InvalidState, why);
                }
                if let (Some(why), false) = (&own, ready) {
                    // It never came up: a replacement would fail the same
                    // way, so the pool cannot go on.
                    let why = format!("pool worker {i} could not start: {why}");
                    self.set_broken(ErrorKind::Spawn, why);
                }
                let Some(w) = &self.workers[i] else { continue };
                // (`lose_worker_with` first drains what it committed.)
                let running = w
                    .running_item()
                    .and_then(|(i, item)| Some((w.inflight.get(i)?, item)));
                let what = match (w.inflight.front(), running) {
                    (_, Some((t, item))) => format!(
                        "pool worker {} (pid {}) died while running item {item} \
                         (of the task of items {}..{})",
                        w.index,
                        w.pid,
                        t.first,
                        t.first + t.count
                    ),
                    (Some(t), None) => format!(
                        "pool worker {} (pid {}) died while running items {}..{}",
                        w.index,
                        w.pid,
                        t.first,
                        t.first + t.count
                    ),
                    (None, None) => {
                        format!("pool worker {} (pid {}) died while idle", w.index, w.pid)
                    }
                };
                let what = match own {
                    Some(why) => format!("{what}: {why}"),
                    None => what,
                };
                let loss = Loss {
                    kind: ErrorKind::ProcessDied,
                    message: what,
                    status: Some(st),
                };
                self.lose_worker_with(i, loss, false);
                continue;
            }
            if let (Some(limit), false, false) =
                (self.cfg.task_timeout, w.ready, w.inflight.is_empty())
            {
                // Starting (exec, handshake, initializer) does not count
                // toward a task's time, but it cannot take forever either.
                let allowance = limit + START_ALLOWANCE;
                if w.stats.started.elapsed() > allowance {
                    let err = Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "pool worker {} (pid {}) did not start (or finish its initializer) within {:?}; it was killed",
                            w.index, w.pid, allowance
                        ),
                    );
                    self.lose_worker(i, err, true);
                    continue;
                }
            }
            if let (Some(limit), Some(front), true) =
                (self.cfg.task_timeout, w.inflight.front(), w.ready)
            {
                let since = w.front_since.max(front.sent);
                if since.elapsed() > limit {
                    let err = Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "a task of pool worker {} (pid {}) ran longer than {:?}; the worker was killed",
                            w.index, w.pid, limit
                        ),
                    );
                    self.lose_worker(i, err, true);
                    continue;
                }
            }
            if w.segment.lost() {
                let err = Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "pool worker {} (pid {}) shrank its ring segment; the worker was killed",
                        w.index, w.pid
                    ),
                );
                self.lose_worker(i, err, true);
                continue;
            }
            let w = self.workers[i].as_mut().expect("still there");
            if let Err(e) = w.detach_dropped() {
                self.lose_worker(i, e, true);
                continue;
            }
            if self.workers[i]
                .as_ref()
                .is_some_and(|w| w.retiring && self.state == State::Running)
            {
                let old = self.workers[i].take().expect("checked");
                self.retired.push(old);
                self.respawn(i);
            }
        }
        let mut r = 0;
        while r < self.retired.len() {
            if let Some(st) = self.retired[r].process.exit_code() {
                let _ = self.drain_worker(Slot::Retired(r));
                let w = self.retired.remove(r);
                if !w.inflight.is_empty() {
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

    /// Kills every worker and fails every job (`terminate`).
    pub(crate) fn terminate(&mut self) {
        self.state = State::Terminated;
        let mut all: Vec<Worker> = self.workers.iter_mut().filter_map(Option::take).collect();
        all.append(&mut self.retired);
        for w in &all {
            let _ = w.process.kill();
        }
        let loss = Loss {
            kind: ErrorKind::InvalidState,
            message: "the pool was terminated".into(),
            status: None,
        };
        for w in all {
            w.kill_and_reap();
            self.fail_inflight(w, &loss);
        }
        for job in self.jobs.values_mut() {
            job.fail(Error::new(
                ErrorKind::InvalidState,
                "the pool was terminated",
            ));
            job.exhausted = true;
        }
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

/// Job ids are small sequential numbers this process hands out (a peer's
/// id only ever finds a job or nothing): hash them as themselves.
#[derive(Default, Clone, Copy)]
struct JobIds;

#[derive(Default)]
struct JobIdHasher(u64);

impl std::hash::Hasher for JobIdHasher {
    fn finish(&self) -> u64 {
        // Spread the bits a little: hashbrown uses the top 7 for tags.
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl std::hash::BuildHasher for JobIds {
    type Hasher = JobIdHasher;
    fn build_hasher(&self) -> JobIdHasher {
        JobIdHasher::default()
    }
}

/// Why a worker's work was lost.
struct Loss {
    kind: ErrorKind,
    message: String,
    status: Option<ExitStatus>,
}

impl Loss {
    fn from_error(e: &Error) -> Loss {
        let message = match std::error::Error::source(e) {
            Some(src) => format!("{}: {src}", e.context()),
            None => e.context().to_string(),
        };
        Loss {
            kind: e.kind(),
            message,
            status: e.exit_status(),
        }
    }

    fn error_for(&self, first: u64, pid: u32) -> Error {
        let e = Error::new(self.kind, self.message.clone())
            .with_index(first)
            .with_pid(pid);
        match self.status {
            Some(st) => e.with_status(st),
            None => e,
        }
    }
}

/// Splits a failed task's result payload into the outputs before the
/// failure and the [`TaskError`]; the worker appends the outputs' length.
fn split_error(rest: &[u8]) -> Result<(&[u8], Option<TaskError>)> {
    if rest.len() < 4 {
        return Err(Error::new(ErrorKind::Protocol, "short error frame"));
    }
    let (body, len) = rest.split_at(rest.len() - 4);
    let out_len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if out_len > body.len() {
        return Err(Error::new(
            ErrorKind::Protocol,
            "bad output length in error frame",
        ));
    }
    let (outputs, err) = body.split_at(out_len);
    let te: TaskError =
        postcard::from_bytes(err).map_err(|e| Error::codec("decoding a task error", e))?;
    Ok((outputs, Some(te)))
}

/// The pool's shared state: the core behind its lock, the condition
/// variable waiters sleep on, the doorbell, and the driver hand-off.
pub(crate) struct Shared {
    core: Mutex<Core>,
    pub(crate) cv: Condvar,
    pub(crate) doorbell: Doorbell,
    /// Callers that want to drive (the pump steps aside for them).
    want: AtomicUsize,
    /// Threads blocked on the lock (a spinning driver lets them in).
    contenders: AtomicUsize,
    /// Threads waiting on `cv` (notify only when there are some).
    sleepers: AtomicUsize,
    /// The machine's cores: a driver spins only while fewer workers than
    /// this run zero-copy chunks, so that its spinning never takes a core
    /// from one.
    cores: usize,
    pub(crate) pump: Mutex<Option<std::thread::JoinHandle<()>>>,
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
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pump: Mutex::new(None),
        }
    }

    /// Takes the pool lock, telling a spinning driver to let us in.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        if let Ok(g) = self.core.try_lock() {
            return g;
        }
        self.contenders.fetch_add(1, Ordering::SeqCst);
        let g = self.core.lock().unwrap_or_else(|p| self.recover(p));
        self.contenders.fetch_sub(1, Ordering::SeqCst);
        g
    }

    fn relock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| self.recover(p))
    }

    /// A thread panicked holding the lock (user code in a serialiser, a
    /// `Deserialize` impl, an iterator): its state changes are complete
    /// per step, but if it was the driver, nobody drives now. Let the next
    /// waiter take over instead of waiting for it forever.
    fn recover<'a>(
        &'a self,
        poisoned: std::sync::PoisonError<MutexGuard<'a, Core>>,
    ) -> MutexGuard<'a, Core> {
        let mut g = poisoned.into_inner();
        g.driving = false;
        self.core.clear_poison();
        g
    }

    /// Blocks until `done(core)` holds (driving the pool meanwhile if
    /// nobody else does) or `deadline` passes; returns the locked core and
    /// whether `done` holds.
    pub(crate) fn wait_until(
        &self,
        done: &dyn Fn(&Core) -> bool,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'_, Core>, bool) {
        self.want.fetch_add(1, Ordering::SeqCst);
        let mut core = self.lock();
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
            core.driving = true;
            core = self.drive(core, done, false, deadline);
            core.driving = false;
            self.notify();
        };
        self.want.fetch_sub(1, Ordering::SeqCst);
        (core, ok)
    }

    /// The driving loop: step, spin, sleep on the doorbell, check health.
    /// The clock is read once per 64 spins (a read costs as much as a poll
    /// of every ring).
    fn drive<'a>(
        &'a self,
        mut core: MutexGuard<'a, Core>,
        done: &dyn Fn(&Core) -> bool,
        pump: bool,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, Core> {
        let mut last_progress: Option<Instant> = None;
        let mut spins: u32 = 0;
        loop {
            if core.state == State::Terminated {
                return core;
            }
            if core.step() {
                self.notify();
                last_progress = None;
                spins = 0;
            }
            if done(&core) || (pump && self.want.load(Ordering::SeqCst) > 0) {
                return core;
            }
            if pump && !core.active() {
                return core;
            }
            if self.contenders.load(Ordering::Relaxed) > 0 {
                drop(core);
                std::thread::yield_now();
                core = self.relock();
                continue;
            }
            spins = spins.wrapping_add(1);
            let inflight = core.has_inflight();
            if inflight && !spins.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let now = Instant::now();
            let since = *last_progress.get_or_insert(now);
            if now.duration_since(core.last_health) >= TICK {
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
            // us to wake. Serde tasks are short and the parent is part of
            // their pipeline (it encodes and decodes every item): it keeps
            // spinning for them.
            if inflight && now.duration_since(since) < SPIN && core.bulk_busy_workers() < self.cores
            {
                continue;
            }
            // Sleep on the doorbell until a worker rings or a tick passes.
            let seq = self.doorbell.prepare();
            if core.poll_results() {
                self.doorbell.cancel();
                continue;
            }
            drop(core);
            let mut nap = TICK;
            if let Some(d) = deadline {
                nap = nap.min(d.saturating_duration_since(Instant::now()));
            }
            self.doorbell.sleep(seq, nap);
            core = self.relock();
            last_progress = None;
            spins = 0;
        }
    }

    /// Wakes the threads waiting on the condition variable, if any (std's
    /// `notify_all` makes a system call even when nobody waits).
    pub(crate) fn notify(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.cv.notify_all();
        }
    }

    /// Waits on the condition variable for at most `timeout`.
    fn cv_wait<'a>(
        &'a self,
        core: MutexGuard<'a, Core>,
        timeout: Duration,
    ) -> MutexGuard<'a, Core> {
        // SeqCst: a notifier that made progress under the lock after we
        // registered sees the count (we register while holding the lock).
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let core = match self.cv.wait_timeout(core, timeout) {
            Ok((g, _)) => g,
            Err(p) => {
                let mut g = p.into_inner().0;
                g.driving = false;
                self.core.clear_poison();
                g
            }
        };
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        core
    }

    /// The pump thread's loop: drive while there is work nobody drives.
    pub(crate) fn pump(self: Arc<Self>) {
        let mut core = self.lock();
        loop {
            if core.state == State::Terminated || (core.state == State::Closed && !core.has_jobs())
            {
                return;
            }
            if core.driving || self.want.load(Ordering::SeqCst) > 0 || !core.active() {
                core = self.cv_wait(core, Duration::from_millis(50));
                if !core.driving && core.has_jobs() && core.last_health.elapsed() >= TICK {
                    core.check_health();
                    self.notify();
                }
                continue;
            }
            core.driving = true;
            core = self.drive(core, &|c: &Core| !c.active(), true, None);
            core.driving = false;
            self.notify();
        }
    }
}

/// The parent's handling of one result frame, against a task in flight of
/// items 0..16 of job 1, into a sink of `String`s (fuzzing).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_result(bytes: &[u8]) -> bool {
    let Ok((h, rest)) = ResultHeader::read(bytes) else {
        return false;
    };
    let end = h.first.checked_add(u64::from(h.count));
    if h.job != 1 || end.is_none_or(|e| e > 16) {
        return false;
    }
    let (outputs, error) = if h.flags & F_ERROR != 0 {
        match split_error(rest) {
            Ok(x) => x,
            Err(_) => return false,
        }
    } else {
        (rest, None)
    };
    let sink = super::jobs::Collect::<String>::new(false);
    let ok = sink.deliver(h.first, h.count, outputs).is_ok();
    if let Some(te) = error {
        let _ = te.into_error(0, 1).to_string();
    }
    ok
}
