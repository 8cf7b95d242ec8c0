//! `Worker`: the parent's handle on one worker process — its rings, the
//! tasks it has in flight, the frames that did not fit its task ring yet,
//! the segments it has attached, and its counters.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

use super::core::Config;
use super::health::Loss;
use super::wire::{
    running_item, running_word, Attach, Detach, K_ATTACH, K_DETACH, SKIPPED, WHOLE_GROUP,
};
use super::worker::{rings_in, rings_len, worker_main, ProgressLine, WorkerArgs, SKIPS};
use crate::error::{Call, Error, Result};
use crate::process::Process;
use crate::ring::{Consumer, Producer};
use crate::segment::Segment;

/// Tasks in flight per worker: one running, one queued behind it, so a
/// worker never waits for the parent between tasks.
pub(crate) const DEPTH: usize = 2;
/// Chunks of a borrowed `map`'s encoded batches a worker may hold: its
/// encoding caller sleeps while it is ahead, rather than spin on a core
/// the workers need, and is woken by a worker's result, with the others'
/// chunks still queued. 1e6 small structs on 2 cores, the bench's group:
/// 33–34 ns an item at 2 deep with the caller spinning, 27–28 at 8 deep
/// with it sleeping (BENCHMARKS.md, "The pump left alone while a map
/// encodes").
pub(crate) const ENCODED_DEPTH: usize = 8;
/// The deepest any source asks for ([`Source::depth`](super::jobs::Source::depth)).
pub(crate) const MAX_DEPTH: usize = ENCODED_DEPTH;
/// How long a cancel that finds the worker at the grouped task watches
/// for it to be skipped before it counts it running (a skip shows within
/// nanoseconds).
const SKIP_LOOK: Duration = Duration::from_micros(50);
/// Segments attached to one worker before the oldest is detached.
const MAX_ATTACHED: usize = 16;

/// Per-worker counters (mpire's "insights").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) tasks: u64,
    pub(crate) items: u64,
    pub(crate) busy: Duration,
    pub(crate) started: Instant,
}

pub(crate) struct Inflight {
    pub(crate) job: u64,
    /// The task's first item in its job.
    pub(crate) first: u64,
    /// Where its frame said it starts: `first`, unless a windowed map's
    /// chunk, whose frame names its place in the arena (`ZcTask::at`).
    pub(crate) at: u64,
    pub(crate) count: u64,
    /// Task frames sent to this worker before this one (wrapping): the
    /// number the worker's progress word names it by.
    pub(crate) seq: u32,
    pub(crate) sent: Instant,
    /// A zero-copy chunk: bulk work the parent only hands out.
    pub(crate) bulk: bool,
    /// A self-scheduled map's descriptor: its worker claims chunks until
    /// none is left, and says how many elements it ran when it is back.
    pub(crate) claim: bool,
    /// A copy of the task frame, kept only for a task queued behind one
    /// that can be cancelled (`Pool::submit`): if that one is cancelled
    /// while it runs, its worker is killed and this task is sent again to
    /// another (docs/ARCHITECTURE.md, Pool, "Cancelling a running task").
    pub(crate) resend: Option<Vec<u8>>,
}

pub(crate) struct Attached {
    pub(crate) slot: u32,
    pub(crate) segment: Weak<Segment>,
}

pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) process: Process<std::result::Result<(), String>>,
    pub(crate) pid: u32,
    /// Both rings; watched for a shrink by the worker (`check_health`).
    pub(crate) segment: Arc<Segment>,
    /// Where the worker says which item it runs.
    pub(crate) progress: ProgressLine,
    pub(crate) tasks: Producer,
    pub(crate) results: Consumer,
    pub(crate) inflight: VecDeque<Inflight>,
    /// Frames that did not fit into the task ring yet, in order.
    pub(crate) backlog: VecDeque<(u8, Vec<u8>)>,
    pub(crate) sent: u64,
    pub(crate) retiring: bool,
    /// The worker said it is up (after its initializer).
    pub(crate) ready: bool,
    pub(crate) attached: Vec<Attached>,
    pub(crate) next_slot: u32,
    /// When the task at the front of `inflight` started (about).
    pub(crate) front_since: Instant,
    pub(crate) stats: Stats,
    /// The skip words this parent wrote into the worker's progress line
    /// (`running_word + 1` of a cancelled grouped task; 0: free), cleared
    /// once that task's group is back (`clear_skips`).
    pub(crate) skips: [u64; SKIPS],
}

impl Worker {
    /// Starts worker `index`, its rings made in `spare` (the segment of a
    /// worker that exited and was reaped) or in a new segment.
    pub(crate) fn spawn(cfg: &Config, index: usize, spare: Option<Arc<Segment>>) -> Result<Worker> {
        let segment = match spare {
            Some(segment) if segment.len() == rings_len(cfg.ring_bytes) => segment,
            _ => Arc::new(Segment::create(rings_len(cfg.ring_bytes))?),
        };
        let (task_ring, result_ring) = rings_in(&segment, cfg.ring_bytes, true)?;
        let progress = ProgressLine::in_segment(&segment, cfg.ring_bytes)?;
        // A recycled segment holds its last worker's progress: reset it to
        // a new segment's zero before this worker can write it.
        // SYNC: Relaxed: the worker process does not exist yet; its start
        // (a system call) orders this store before anything it reads.
        progress.running().store(0, Ordering::Relaxed);
        for s in progress.skips() {
            // SYNC: as the store above.
            s.store(0, Ordering::Relaxed);
        }
        let mut tasks = task_ring.producer()?;
        let mut results = result_ring.consumer()?;
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
            .start_method(cfg.start_method)
            .spawn(worker_main, args)?;
        lifecycle!(debug, index, pid = process.pid(), "pool worker started");
        // A ring that waits for this worker (a long frame on its way in or
        // out) asks its `Process`, not the pid the worker wrote into the
        // ring's header: that is the worker's claim, and the zombie of a
        // killed worker still has that pid.
        let alive = process.alive_check();
        tasks.set_peer_check(alive.clone());
        results.set_peer_check(alive);
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
            skips: [0; SKIPS],
        })
    }

    /// Stops grouped task `word` (`running_word(seq, offset)` of a group
    /// this worker holds, whose slot the caller marked cancelled): asks the
    /// worker to skip it (a free skip word), then, if `kill` allows it,
    /// looks at what it runs. `true` if the worker runs it, or would with
    /// no skip word free: the caller kills the worker.
    pub(crate) fn stop_item(&mut self, word: u64, kill: bool) -> bool {
        let skipping = self.put_skip(word + 1);
        if !kill {
            return false;
        }
        let seq = word >> 32;
        let read = || self.progress.running().load(Ordering::Relaxed);
        let past = |p: u64| p >> 32 == seq && (p & !SKIPPED) > word;
        let p = read();
        if p != word {
            // Not there yet: it skips it, unless no word was free. Past
            // it: it ran (its result is dropped) or was skipped.
            return !skipping && !past(p) && p != word | SKIPPED;
        }
        if !skipping {
            return true;
        }
        // At it: skipping it (it marks the word at once), or running it.
        let until = Instant::now() + SKIP_LOOK;
        loop {
            let p = read();
            if p != word {
                return false;
            }
            if Instant::now() >= until {
                return true;
            }
            std::hint::spin_loop();
        }
    }

    /// Asks the worker to skip every item of the group sent as task
    /// `seq` (queued behind its front, its tasks cancelled); `false` if
    /// no skip word is free (they run, and their answers are dropped).
    pub(crate) fn skip_group(&mut self, seq: u32) -> bool {
        // A worker already at the group (it was not when this was
        // decided) runs it.
        self.put_skip(running_word(seq, WHOLE_GROUP) + 1)
    }

    /// Writes skip word `value` into a free slot of the progress line,
    /// then the heavy fence; `false` if none is free.
    fn put_skip(&mut self, value: u64) -> bool {
        let Some(k) = self.skips.iter().position(|&s| s == 0) else {
            return false;
        };
        self.skips[k] = value;
        // SYNC: Relaxed, then the heavy side of the asymmetric fence;
        // partner: the worker's store of its progress word, light fence,
        // then loads of the skip words (`run_group`): either it reads this
        // word before the item, or we read the item started. Without
        // `membarrier` its light fence may not be covered, and it may then
        // run a task it should have skipped: its answer is dropped (the
        // slot is cancelled), as for one it had started.
        self.progress.skips()[k].store(value, Ordering::Relaxed);
        let _ = crate::sys::fences::heavy();
        true
    }

    /// Frees the skip words of the group sent as task `seq` (its last
    /// frame is back: the worker reads them no more).
    pub(crate) fn clear_skips(&mut self, seq: u32) {
        for (k, s) in self.skips.iter_mut().enumerate() {
            if *s != 0 && (*s - 1) >> 32 == u64::from(seq) {
                *s = 0;
                // SYNC: Relaxed: the worker is past that group.
                self.progress.skips()[k].store(0, Ordering::Relaxed);
            }
        }
    }

    /// `e`, from this worker's rings or frames, worded for the user: the
    /// pool kills a worker it cannot talk to.
    pub(crate) fn killed_for(&self, e: Error) -> Error {
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
    pub(crate) fn running_item(&self) -> Option<(usize, u64)> {
        // SYNC: Relaxed: pairs with the worker's Relaxed store in
        // `Running::start`; the worker is dead, so it stores no more and
        // all it stored is visible.
        let word = self.progress.running().load(Ordering::Relaxed);
        self.inflight
            .iter()
            .enumerate()
            .find_map(|(i, t)| running_item(word, t.seq, t.first, t.count).map(|item| (i, item)))
    }

    /// Takes another task of a job that lets a worker hold `depth`.
    pub(crate) fn has_room(&self, depth: usize) -> bool {
        !self.retiring && self.inflight.len() < depth && self.backlog.is_empty()
    }

    /// Pushes a frame, or queues it behind the ones that did not fit.
    pub(crate) fn send(&mut self, kind: u8, frame: &[u8]) -> Result<()> {
        if self.backlog.is_empty() && self.tasks.try_push(kind, frame)? {
            return Ok(());
        }
        self.backlog.push_back((kind, frame.to_vec()));
        Ok(())
    }

    /// Queues a frame over the task ring's largest: it is streamed once
    /// the worker can take it ([`flush_backlog`](Self::flush_backlog)).
    #[cold]
    pub(crate) fn send_long(&mut self, kind: u8, frame: Vec<u8>) {
        self.backlog.push_back((kind, frame));
    }

    /// Pushes the frames that did not fit before, in order, as far as they
    /// fit now. `true` if any went out.
    pub(crate) fn flush_backlog(&mut self) -> Result<bool> {
        let mut any = false;
        while let Some((kind, frame)) = self.backlog.front() {
            if frame.len() > self.tasks.max_payload() {
                if !self.takes_long_frame() {
                    break;
                }
                self.stream_front()?;
            } else if !self.tasks.try_push(*kind, frame)? {
                break;
            }
            self.backlog.pop_front();
            any = true;
        }
        Ok(any)
    }

    /// Whether a long task frame at the front of the backlog can be
    /// streamed now: its task is the worker's only one in flight (so it
    /// has written every result of the tasks before, and until it has
    /// read this whole frame it only reads) and it said it is up. Then the
    /// blocking push waits only for a worker that reads. Into a busy
    /// worker it could wait for one that itself waits for us to drain its
    /// results, and the driver, one thread, would never get there
    /// (docs/ARCHITECTURE.md, Pool, "Frames").
    fn takes_long_frame(&self) -> bool {
        self.ready && self.inflight.len() <= 1
    }

    /// Streams the long frame at the front of the backlog, blocking until
    /// its last piece is in the ring (the worker reads meanwhile) or the
    /// worker is gone.
    #[cold]
    fn stream_front(&mut self) -> Result<()> {
        if let Some((kind, frame)) = self.backlog.front() {
            self.tasks.push_long(*kind, frame, None)?;
        }
        Ok(())
    }

    /// The slot `segment` is attached at in this worker, attaching it
    /// first if needed.
    pub(crate) fn slot_for(
        &mut self,
        segment: &Arc<Segment>,
        scratch: &mut Vec<u8>,
    ) -> Result<u32> {
        if let Some(a) = self.attached.iter().find(|a| {
            a.segment
                .upgrade()
                .is_some_and(|s| Arc::ptr_eq(&s, segment))
        }) {
            return Ok(a.slot);
        }
        if self.attached.len() >= MAX_ATTACHED {
            let old = self.attached.remove(0);
            self.send(K_DETACH, &Detach::bytes(old.slot))?;
        }
        let slot = self.next_slot;
        self.next_slot = self.next_slot.wrapping_add(1);
        Attach::write(slot, &segment.handle(), scratch)?;
        self.send(K_ATTACH, scratch)?;
        self.attached.push(Attached {
            slot,
            segment: Arc::downgrade(segment),
        });
        Ok(slot)
    }

    /// Detaches segments whose last handle in this process is gone.
    pub(crate) fn detach_dropped(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.attached.len() {
            if self.attached[i].segment.strong_count() == 0 {
                let a = self.attached.remove(i);
                self.send(K_DETACH, &Detach::bytes(a.slot))?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// Kills the worker (`SIGKILL`, `TerminateProcess`) without waiting
    /// for it to go: its work fails with `loss` once [`Dying::reaped`]
    /// says it is gone, since until then it can still write the memory
    /// it shares (docs/ARCHITECTURE.md, Pool, "Killed workers").
    /// `tell_status`: the jobs' errors say how it ended.
    pub(crate) fn kill(self, loss: Loss, tell_status: bool) -> Dying {
        let _ = self.process.kill();
        Dying {
            worker: self,
            loss,
            tell_status,
            since: Instant::now(),
        }
    }

    /// The worker said it is up: the task in front starts now, not when
    /// it was sent.
    pub(crate) fn started(&mut self) {
        self.ready = true;
        self.front_since = Instant::now();
    }

    /// The task in front is back (`busy_ns`: the worker's time on it):
    /// it leaves `inflight` and the counters take it in.
    /// `ran`: the elements a claim descriptor's worker ran (other tasks
    /// count their own).
    pub(crate) fn finish_front(&mut self, busy_ns: u64, ran: u64, timed: bool) -> Option<Inflight> {
        let mut done = self.inflight.pop_front()?;
        if done.claim {
            done.count = ran;
        }
        if timed {
            // Only task timeouts need it; a clock read is ~20 ns.
            self.front_since = Instant::now();
        }
        self.stats.tasks += 1;
        self.stats.items += done.count;
        self.stats.busy += Duration::from_nanos(busy_ns);
        Some(done)
    }
}

/// How long a killed worker may take to be reported gone before its work
/// is failed anyway (a process stuck in the kernel; its `Process` still
/// reaps it in the background once dropped).
pub(crate) const REAP_LIMIT: Duration = Duration::from_secs(5);

/// A worker that was killed and is not reaped yet, and what its jobs will
/// be told.
pub(crate) struct Dying {
    worker: Worker,
    loss: Loss,
    tell_status: bool,
    since: Instant,
}

impl Dying {
    /// Whether jobs wait for this worker's reap.
    pub(crate) fn holds_work(&self) -> bool {
        !self.worker.inflight.is_empty()
    }

    /// Whether the OS reports the worker gone, or [`REAP_LIMIT`] passed.
    /// Never blocks.
    pub(crate) fn over(&self) -> bool {
        self.worker.process.exit_code().is_some() || self.since.elapsed() >= REAP_LIMIT
    }

    /// The worker, and what its jobs are told: with its exit status, if
    /// asked and known.
    pub(crate) fn into_loss(self) -> (Worker, Loss) {
        let mut loss = self.loss;
        if self.tell_status && loss.status.is_none() {
            loss.status = self.worker.process.exit_code();
        }
        (self.worker, loss)
    }
}
