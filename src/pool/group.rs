//! Submitted tasks that travel in groups: one job per function holds every
//! [`Pool::submit`](super::Pool::submit)ted (or `apply_async`ed) task of
//! that function not answered yet, and sends them to the workers several
//! to a frame ([`T_EACH`]), each answered by a record of its own, with its
//! own error and its own cancellation (docs/ARCHITECTURE.md, Pool,
//! "Submitted tasks travel in groups").
//!
//! A group is as large as the function's measured time allows
//! ([`GROUP_NS`] of work at most), so a task never waits long behind its
//! group-mates, and a function not measured yet goes one task a frame.
//! Grouping pays where the parent is the bottleneck, a stream of tiny
//! tasks: a submission that leaves its task to gather skips the step of
//! the pool it would otherwise make (a look at every result ring and a
//! dispatch walk), and a group costs one frame each way.

use std::collections::VecDeque;
use std::sync::Arc;

use super::jobs::{Next, Sink, Source};
use super::wire::{
    TaskError, TaskHeader, MAX_EACH, REC_ERROR, REC_OK, REC_SKIPPED, TIME_EVERY, T_EACH, T_TIMED,
};
use crate::error::{Error, ErrorKind, Result};
use crate::task::TaskRef;

/// Most work in one group, by the function's measured time an item.
pub(crate) const GROUP_NS: u64 = 20_000;
/// Largest encoded item that travels in a group; a larger one goes as a
/// job of its own, as before groups. A group of several stays within one
/// ordinary frame (one that would not fit ends before that item); a group
/// of one over the smallest rings' frame streams as any long frame.
pub(crate) const MAX_GROUPED_ITEM: usize = 4096;

/// `args` encoded as a grouped task's item (as `OneItem` encodes it),
/// unless it does not encode or is too large to travel in a group.
pub(crate) fn encode_item<A: serde::Serialize + 'static>(args: &A) -> Option<Bytes> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|s| {
        // A `Serialize` that submits from inside finds the buffer taken:
        // it encodes into a fresh one.
        let mut fresh = Vec::new();
        let mut held = s.try_borrow_mut().ok();
        let bytes = held.as_deref_mut().unwrap_or(&mut fresh);
        bytes.clear();
        if super::raw::raw_size::<A>().is_some() {
            super::raw::extend_one(args, bytes).then_some(())?;
        } else {
            super::bulk::encode(args, bytes).ok()?;
        }
        (bytes.len() <= MAX_GROUPED_ITEM).then(|| Bytes::new(bytes))
    })
}

/// One submitted task: its encoded item and where its outcome goes.
pub(crate) struct Item {
    ticket: u64,
    bytes: Bytes,
    sink: Arc<dyn Sink>,
}

impl Item {
    /// The task's output: decoded into its handle, which is then settled.
    fn complete(self, bytes: &[u8], pid: u32) {
        // Decoding runs the result type's `Deserialize`: user code.
        let delivered =
            crate::panic::catch_panic(|| self.sink.complete(bytes)).unwrap_or_else(|info| {
                Err(Error::panicked(info).with_context("decoding a result panicked"))
            });
        match delivered {
            Ok(()) => self.sink.settle(),
            Err(e) => self.fail(e.with_pid(pid)),
        }
    }

    /// The task failed (or was cancelled): its handle gets `error` and is
    /// settled (as a job of its own would be: an `apply_async` result is
    /// ready only once settled).
    fn fail(self, error: Error) {
        self.sink.fail(error);
        self.sink.settle();
    }
}

/// An encoded item: in place when short (a number, a short string), so
/// that a task costs no allocation of its own for it.
pub(crate) enum Bytes {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Vec<u8>),
}

const INLINE: usize = 22;

impl Bytes {
    pub(crate) fn new(b: &[u8]) -> Bytes {
        if b.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..b.len()].copy_from_slice(b);
            Bytes::Inline {
                len: b.len() as u8,
                buf,
            }
        } else {
            Bytes::Heap(b.to_vec())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Inline { len, buf } => &buf[..usize::from(*len)],
            Bytes::Heap(v) => v,
        }
    }
}

/// A sent task, by its index in the job.
enum Slot {
    /// At a worker, not answered yet.
    Waiting(Item),
    /// Cancelled while at a worker: its answer is dropped.
    Cancelled,
    /// Answered, failed, or sent again under a new index.
    Done,
}

/// What [`Group::cancel`] found.
pub(crate) enum Cancel {
    /// Answered already (or unknown): nothing changed.
    Gone,
    /// Not sent yet: dropped, never to run.
    Unsent,
    /// At a worker, as item `index`: the caller stops it there.
    Sent(u64),
}

/// The source of a grouped job: tasks not sent yet, and the slots of
/// those sent (by index, from `base`).
pub(crate) struct Group {
    task: TaskRef,
    pending: VecDeque<Item>,
    window: VecDeque<Slot>,
    /// Index of `window[0]`.
    base: u64,
    next_ticket: u64,
    /// Measured worker time an item, ns (0: not measured yet).
    item_ns: u64,
    workers: usize,
    /// Frames sent (one in [`TIME_EVERY`] is timed).
    sent: u64,
}

impl Group {
    pub(crate) fn new(task: TaskRef, workers: usize) -> Group {
        Group {
            task,
            pending: VecDeque::new(),
            window: VecDeque::new(),
            base: 0,
            next_ticket: 0,
            item_ns: 0,
            workers: workers.max(1),
            sent: 0,
        }
    }

    /// Its function, as `Core::groups` keys it.
    pub(crate) fn key(&self) -> [u64; 3] {
        self.task.to_words()
    }

    /// Queues a task; returns its ticket (what cancels it).
    pub(crate) fn push(&mut self, bytes: Bytes, sink: Arc<dyn Sink>) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending.push_back(Item {
            ticket,
            bytes,
            sink,
        });
        ticket
    }

    /// Most tasks a frame, by the measured time an item.
    fn by_time(&self) -> usize {
        // Not measured yet (0): one a frame.
        GROUP_NS
            .checked_div(self.item_ns)
            .map_or(1, |n| n.clamp(1, u64::from(MAX_EACH)) as usize)
    }

    /// Tasks to send in the next frame: shared out over the workers when
    /// few are waiting.
    fn group_size(&self) -> usize {
        let by_time = self.by_time();
        if self.pending.len() >= by_time {
            return by_time;
        }
        by_time
            .min(self.pending.len().div_ceil(self.workers))
            .max(1)
    }

    fn slot(&mut self, index: u64) -> Option<&mut Slot> {
        let at = usize::try_from(index.checked_sub(self.base)?).ok()?;
        self.window.get_mut(at)
    }

    /// Drops answered slots from the window's front.
    fn trim(&mut self) {
        while matches!(self.window.front(), Some(Slot::Done)) {
            self.window.pop_front();
            self.base += 1;
        }
    }

    /// A result frame of item `first` alone: an output too large for a
    /// record (`count` 1, no error). Anything else is a worker's protocol
    /// error.
    pub(crate) fn take(
        &mut self,
        (_, pid): (usize, u32),
        first: u64,
        count: u32,
        outputs: &[u8],
        error: Option<TaskError>,
    ) -> Result<()> {
        let bad = |why: &str| Error::new(ErrorKind::Protocol, format!("grouped task: {why}"));
        if count != 1 || error.is_some() {
            return Err(bad("a result frame of the wrong shape"));
        }
        let slot = self
            .slot(first)
            .ok_or_else(|| bad("a result for no task in flight"))?;
        match std::mem::replace(slot, Slot::Done) {
            Slot::Waiting(item) => item.complete(outputs, pid),
            Slot::Cancelled => {}
            Slot::Done => return Err(bad("two results for one task")),
        }
        self.trim();
        Ok(())
    }

    /// An [`F_RECORDS`](super::wire::F_RECORDS) frame: `count` records of
    /// items `first` on. A frame with anything malformed in it (a record
    /// cut short, bytes left over, an unknown status, an error that does
    /// not decode, an answer for a task not waiting for one) is the
    /// worker's protocol error and changes nothing: it is checked whole
    /// before any task gets its answer.
    pub(crate) fn take_records(
        &mut self,
        (index, pid): (usize, u32),
        first: u64,
        count: u32,
        bytes: &[u8],
    ) -> Result<()> {
        self.check_records(first, count, bytes)?;
        let mut rest = bytes;
        for at in first..first + u64::from(count) {
            let (status, body, next) = split_record(rest).expect("checked");
            rest = next;
            let slot = self.slot(at).expect("checked");
            let Slot::Waiting(item) = std::mem::replace(slot, Slot::Done) else {
                // Cancelled: its handle is final already.
                continue;
            };
            match status {
                REC_OK => item.complete(body, pid),
                _ => {
                    let mut te: TaskError = postcard::from_bytes(body).expect("checked");
                    // The task is item 0 of its own, as for one sent alone.
                    te.index = 0;
                    item.fail(te.into_error(index, pid));
                }
            }
        }
        self.trim();
        Ok(())
    }

    /// The checks of [`take_records`](Self::take_records), changing nothing.
    fn check_records(&mut self, first: u64, count: u32, mut bytes: &[u8]) -> Result<()> {
        let bad = |why: &str| Error::new(ErrorKind::Protocol, format!("grouped task: {why}"));
        for i in 0..u64::from(count) {
            let (status, body, rest) =
                split_record(bytes).ok_or_else(|| bad("a record cut short"))?;
            bytes = rest;
            let at = first
                .checked_add(i)
                .ok_or_else(|| bad("an index out of range"))?;
            let slot = self
                .slot(at)
                .ok_or_else(|| bad("a result for no task in flight"))?;
            match (&*slot, status) {
                (Slot::Done, _) => return Err(bad("two results for one task")),
                (_, REC_OK) | (Slot::Cancelled, REC_SKIPPED) => {}
                (_, REC_ERROR) => {
                    postcard::from_bytes::<TaskError>(body)
                        .map_err(|_| bad("an error record that does not decode"))?;
                }
                (Slot::Waiting(_), REC_SKIPPED) => {
                    return Err(bad("a task skipped that was not cancelled"))
                }
                _ => return Err(bad("an unknown record status")),
            }
        }
        if !bytes.is_empty() {
            return Err(bad("trailing bytes after the records"));
        }
        Ok(())
    }

    /// The group of items `[first, first + count)` is over (its last
    /// frame came): a task it did not answer fails (a worker that skips
    /// one breaks the protocol, and its caller must not wait forever).
    /// `busy_ns`: the worker's time on it, which sizes the next groups.
    fn group_done(&mut self, first: u64, count: u64, busy_ns: u64) {
        for i in first..first.saturating_add(count) {
            if let Some(item) = self.slot(i).and_then(|s| take_waiting(s, Slot::Done)) {
                item.fail(Error::new(
                    ErrorKind::Protocol,
                    "the worker ended a group of tasks without answering this one",
                ));
            }
        }
        self.trim();
        if count > 0 && busy_ns > 0 {
            // A hint from the worker, clamped: it only sizes groups.
            let per = (busy_ns / count).clamp(1, 1 << 40);
            self.item_ns = if self.item_ns == 0 {
                per
            } else {
                (3 * self.item_ns + per) / 4
            };
        }
    }

    /// The worker holding items `[first, first + count)` is gone. Those
    /// it may have run fail with `error()`: up to the one it was running
    /// (`running`), or all of them in the group it had started (`front`)
    /// when it does not say which (their answers went with it); the ones
    /// it had not started are sent again (to another worker, under new
    /// indices). Returns whether any was.
    pub(crate) fn lost(
        &mut self,
        (first, count): (u64, u64),
        running: Option<u64>,
        front: bool,
        error: &dyn Fn() -> Error,
    ) -> bool {
        let mut again = Vec::new();
        for i in first..first.saturating_add(count) {
            let Some(slot) = self.slot(i) else { continue };
            // A cancelled one's answer will not come now: done too.
            if let Slot::Waiting(item) = std::mem::replace(slot, Slot::Done) {
                let started = match running {
                    Some(r) => i <= r,
                    None => front,
                };
                // A task that may have run fails: its answer went with the
                // worker, and running it again could repeat its effects.
                if started {
                    item.fail(error());
                } else {
                    again.push(item);
                }
            }
        }
        self.trim();
        let any = !again.is_empty();
        self.requeue(again);
        any
    }

    /// Puts tasks taken back from a worker in front of the unsent ones,
    /// oldest first.
    fn requeue(&mut self, items: Vec<Item>) {
        for item in items {
            let at = self.pending.partition_point(|p| p.ticket < item.ticket);
            self.pending.insert(at, item);
        }
    }

    /// Cancels task `ticket` with `error` (final for its handle at once).
    pub(crate) fn cancel(&mut self, ticket: u64, error: Error) -> Cancel {
        if let Ok(at) = self.pending.binary_search_by_key(&ticket, |p| p.ticket) {
            let item = self.pending.remove(at).expect("found");
            item.fail(error);
            return Cancel::Unsent;
        }
        let at = self
            .window
            .iter()
            .position(|s| matches!(s, Slot::Waiting(item) if item.ticket == ticket));
        match at.and_then(|at| Some((at, take_waiting(&mut self.window[at], Slot::Cancelled)?))) {
            Some((at, item)) => {
                item.fail(error);
                Cancel::Sent(self.base + at as u64)
            }
            None => Cancel::Gone,
        }
    }

    /// Cancels the tasks of items `[first, first + count)` still waiting
    /// for their answer (a group queued behind another at a worker, which
    /// the caller asks to skip it); returns how many.
    pub(crate) fn cancel_sent(&mut self, (first, count): (u64, u64), why: &str) -> usize {
        let mut n = 0;
        for i in first..first.saturating_add(count) {
            if let Some(item) = self.slot(i).and_then(|s| take_waiting(s, Slot::Cancelled)) {
                item.fail(Error::new(ErrorKind::Cancelled, why));
                n += 1;
            }
        }
        n
    }

    /// Cancels every task not sent yet (`shutdown(cancel_futures=True)`);
    /// returns how many.
    pub(crate) fn cancel_unsent(&mut self, why: &str) -> usize {
        let n = self.pending.len();
        for item in self.pending.drain(..) {
            item.fail(Error::new(ErrorKind::Cancelled, why));
        }
        n
    }

    /// The job failed as a whole (the pool broke or was terminated): every
    /// task not answered fails with `error`.
    pub(crate) fn fail_all(&mut self, error: &Error) {
        self.fail_unsent(error);
        for slot in &mut self.window {
            // Answers may still come: they are dropped.
            if let Some(item) = take_waiting(slot, Slot::Cancelled) {
                item.fail(error.duplicate());
            }
        }
    }

    /// Every task not sent yet fails with `error` (the pool stopped).
    pub(crate) fn fail_unsent(&mut self, error: &Error) {
        for item in self.pending.drain(..) {
            item.fail(error.duplicate());
        }
    }
}

/// The task waiting in `slot`, which becomes `after`; `None` (and the
/// slot unchanged) if none waits there.
fn take_waiting(slot: &mut Slot, after: Slot) -> Option<Item> {
    if !matches!(slot, Slot::Waiting(_)) {
        return None;
    }
    match std::mem::replace(slot, after) {
        Slot::Waiting(item) => Some(item),
        _ => None,
    }
}

/// The first record of `bytes`: its status, its body and what follows.
fn split_record(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let status = *bytes.get(4)?;
    let rest = &bytes[5..];
    (rest.len() >= len).then(|| (status, &rest[..len], &rest[len..]))
}

impl Source for Group {
    fn next(&mut self, frame: &mut Vec<u8>, job: u64, soft: usize, _hard: usize) -> Next {
        let n = self.group_size();
        frame.clear();
        let first = self.base + self.window.len() as u64;
        TaskHeader {
            job,
            first,
            count: 0,
            flags: if self.item_ns == 0 || self.sent.is_multiple_of(TIME_EVERY) {
                T_EACH | T_TIMED
            } else {
                T_EACH
            },
            task: self.task,
        }
        .write(frame);
        self.sent += 1;
        let mut count = 0u32;
        while (count as usize) < n {
            let Some(item) = self.pending.front() else {
                break;
            };
            // Items are at most `MAX_GROUPED_ITEM`: the first always fits.
            let bytes = item.bytes.as_slice();
            if count > 0 && frame.len() + 4 + bytes.len() > soft {
                break;
            }
            frame.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            frame.extend_from_slice(bytes);
            let item = self.pending.pop_front().expect("front");
            item.sink.mark_sent();
            self.window.push_back(Slot::Waiting(item));
            count += 1;
        }
        if count == 0 {
            return Next::Done;
        }
        if count == 1 {
            // A group of one carries its item bare (the frame's rest): 4
            // bytes less keep a number's frame in one cache line (8 + 48 +
            // 8), which a lone task's round trip pays for twice.
            frame.drain(TaskHeader::LEN..TaskHeader::LEN + 4);
        }
        frame[16..20].copy_from_slice(&count.to_le_bytes());
        Next::Task {
            first,
            count: u64::from(count),
        }
    }

    fn task_done(&mut self, first: u64, items: u64, busy_ns: u64) {
        self.group_done(first, items, busy_ns);
    }

    /// Two frames a worker while a full group is waiting (so a worker
    /// never waits for the parent between groups), one otherwise: tasks
    /// that arrive while a worker runs its group gather for the next one
    /// instead of going one a frame.
    fn depth(&self) -> usize {
        // Unmeasured, a group is one task: full as soon as one waits.
        if self.full() {
            super::handle::DEPTH
        } else {
            1
        }
    }

    fn ready(&self) -> bool {
        !self.pending.is_empty()
    }

    fn full(&self) -> bool {
        self.pending.len() >= self.by_time()
    }

    fn is_done(&self) -> bool {
        self.pending.is_empty()
    }

    fn grouped(&mut self) -> Option<&mut Group> {
        Some(self)
    }
}

/// The sink of a grouped job: every task has its own (its [`Item`]'s).
pub(crate) struct NoSink;

impl Sink for NoSink {
    fn deliver(&self, _first: u64, _count: u32, _bytes: &[u8]) -> Result<()> {
        Err(Error::new(
            ErrorKind::Protocol,
            "grouped tasks deliver to their own handles",
        ))
    }

    fn fail(&self, _error: Error) {}

    fn settle(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::wire::REC_OK;
    use std::sync::Mutex;

    /// A task's handle: what reached it.
    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl Seen {
        fn got(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    impl Sink for Seen {
        fn deliver(&self, _first: u64, _count: u32, bytes: &[u8]) -> Result<()> {
            self.0.lock().unwrap().push(format!("ok {bytes:?}"));
            Ok(())
        }
        fn fail(&self, error: Error) {
            self.0
                .lock()
                .unwrap()
                .push(format!("err {:?}", error.kind()));
        }
        fn settle(&self) {}
    }

    fn group_of(n: u8) -> (Group, Vec<Arc<Seen>>) {
        let mut g = Group::new(TaskRef::from_words([1, 2, 3]), 1);
        let seen: Vec<Arc<Seen>> = (0..n).map(|_| Arc::new(Seen::default())).collect();
        for (i, s) in seen.iter().enumerate() {
            g.push(Bytes::new(&[i as u8; 3]), s.clone());
        }
        (g, seen)
    }

    fn record(out: &mut Vec<u8>, status: u8, body: &[u8]) {
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.push(status);
        out.extend_from_slice(body);
    }

    const WHO: (usize, u32) = (0, 42);

    #[test]
    fn an_unmeasured_function_goes_one_task_a_frame_then_in_groups() {
        let (mut g, _seen) = group_of(10);
        let mut frame = Vec::new();
        assert!(matches!(
            g.next(&mut frame, 7, 1 << 16, 1 << 16),
            Next::Task { first: 0, count: 1 }
        ));
        // 2 µs of work for the one item: 10 fit in 20 µs.
        g.group_done(0, 1, 2_000);
        let Next::Task { first, count } = g.next(&mut frame, 7, 1 << 16, 1 << 16) else {
            panic!("a group");
        };
        assert_eq!((first, count), (1, 9));
        let (h, mut items) = TaskHeader::read(&frame).unwrap();
        assert_eq!((h.job, h.first, h.count, h.flags), (7, 1, 9, T_EACH));
        for i in 1..10u8 {
            assert_eq!(&items[..4], &3u32.to_le_bytes());
            assert_eq!(&items[4..7], &[i; 3]);
            items = &items[7..];
        }
        assert!(items.is_empty());
        assert!(g.is_done());
    }

    #[test]
    fn records_reach_their_own_tasks() {
        let (mut g, seen) = group_of(4);
        g.item_ns = 100;
        let mut frame = Vec::new();
        assert!(matches!(
            g.next(&mut frame, 1, 1 << 16, 1 << 16),
            Next::Task { first: 0, count: 4 }
        ));
        // Task 2 is cancelled at its worker: whatever comes for it is dropped.
        let Cancel::Sent(2) = g.cancel(2, Error::new(ErrorKind::Cancelled, "c")) else {
            panic!("sent");
        };
        let te = TaskError {
            index: 1,
            kind: ErrorKind::Panicked,
            message: "no".into(),
            panic: None,
        };
        let mut recs = Vec::new();
        record(&mut recs, REC_OK, &[9]);
        record(&mut recs, REC_ERROR, &postcard::to_stdvec(&te).unwrap());
        record(&mut recs, REC_SKIPPED, &[]);
        record(&mut recs, REC_OK, &[8, 8]);
        g.take_records(WHO, 0, 4, &recs).unwrap();
        assert_eq!(seen[0].got(), ["ok [9]"]);
        assert_eq!(seen[1].got(), ["err Panicked"]);
        assert_eq!(seen[2].got(), ["err Cancelled"]);
        assert_eq!(seen[3].got(), ["ok [8, 8]"]);
        // Answered twice: the worker's protocol error.
        assert!(g.take_records(WHO, 3, 1, &recs[recs.len() - 7..]).is_err());
        g.group_done(0, 4, 400);
        assert!(g.window.is_empty());
    }

    #[test]
    fn bad_records_are_refused() {
        let (mut g, seen) = group_of(2);
        g.item_ns = 100;
        let mut frame = Vec::new();
        g.next(&mut frame, 1, 1 << 16, 1 << 16);
        let mut recs = Vec::new();
        record(&mut recs, REC_OK, &[1]);
        for bad in [
            &recs[..3],                            // cut short
            &[recs.as_slice(), &[0]].concat()[..], // trailing bytes
        ] {
            assert!(g.take_records(WHO, 1, 1, bad).is_err());
        }
        // A skip of a task nobody cancelled, an unknown status, a task
        // out of range.
        let mut skip = Vec::new();
        record(&mut skip, REC_SKIPPED, &[]);
        assert!(g.take_records(WHO, 0, 1, &skip).is_err());
        let mut odd = Vec::new();
        record(&mut odd, 7, &[]);
        assert!(g.take_records(WHO, 0, 1, &odd).is_err());
        assert!(g.take_records(WHO, 5, 1, &recs).is_err());
        // Refused frames changed nothing: the tasks still wait; a worker
        // that then ends the group without answering fails them, never
        // leaves them waiting.
        assert!(seen[1].got().is_empty());
        g.group_done(0, 2, 0);
        assert_eq!(seen[0].got(), ["err Protocol"]);
        assert_eq!(seen[1].got(), ["err Protocol"]);
    }

    #[test]
    fn a_lost_worker_fails_what_it_may_have_run_and_sends_the_rest_again() {
        let (mut g, seen) = group_of(6);
        g.item_ns = 100;
        g.workers = 2;
        let mut frame = Vec::new();
        // Shared out over two workers: three, then two of the three left.
        assert!(matches!(
            g.next(&mut frame, 1, 1 << 16, 1 << 16),
            Next::Task { first: 0, count: 3 }
        ));
        assert!(matches!(
            g.next(&mut frame, 1, 1 << 16, 1 << 16),
            Next::Task { first: 3, count: 2 }
        ));
        let late = Arc::new(Seen::default());
        g.push(Bytes::new(&[99]), late.clone());
        let died = || Error::new(ErrorKind::ProcessDied, "died");
        // The front group's worker died running item 1: 0 and 1 fail,
        // 2 goes again; a group queued behind had not started: it goes
        // again whole.
        assert!(g.lost((0, 3), Some(1), true, &died));
        assert!(g.lost((3, 2), None, false, &died));
        assert_eq!(seen[0].got(), ["err ProcessDied"]);
        assert_eq!(seen[1].got(), ["err ProcessDied"]);
        assert!(seen[2].got().is_empty());
        // Sent again first, in submission order, under new indices.
        let Next::Task { first, count } = g.next(&mut frame, 1, 1 << 16, 1 << 16) else {
            panic!("again");
        };
        assert_eq!((first, count), (5, 3));
        let (_, items) = TaskHeader::read(&frame).unwrap();
        assert_eq!(&items[4..7], &[2; 3]);
        assert_eq!(&items[11..14], &[3; 3]);
        let mut recs = Vec::new();
        for v in 0..3 {
            record(&mut recs, REC_OK, &[v]);
        }
        g.take_records(WHO, 5, 3, &recs).unwrap();
        assert_eq!(seen[2].got(), ["ok [0]"]);
        assert_eq!(seen[4].got(), ["ok [2]"]);
        // A front group with no word of what ran: all of it may have.
        let Next::Task { first, count } = g.next(&mut frame, 1, 1 << 16, 1 << 16) else {
            panic!("the rest");
        };
        assert!(!g.lost((first, count), None, true, &died));
        assert_eq!(seen[5].got(), ["err ProcessDied"]);
        assert_eq!(g.cancel_unsent("shutdown"), 1);
        assert_eq!(late.got(), ["err Cancelled"]);
    }

    #[test]
    fn cancel_finds_a_task_wherever_it_is() {
        let (mut g, seen) = group_of(3);
        let mut frame = Vec::new();
        g.next(&mut frame, 1, 1 << 16, 1 << 16);
        assert!(matches!(
            g.cancel(2, Error::new(ErrorKind::Cancelled, "c")),
            Cancel::Unsent
        ));
        assert!(matches!(
            g.cancel(0, Error::new(ErrorKind::Cancelled, "c")),
            Cancel::Sent(0)
        ));
        assert!(matches!(
            g.cancel(0, Error::new(ErrorKind::Cancelled, "c")),
            Cancel::Gone
        ));
        assert_eq!(seen[0].got(), ["err Cancelled"]);
        assert_eq!(seen[2].got(), ["err Cancelled"]);
        assert_eq!(g.cancel_unsent("shutdown"), 1);
        assert_eq!(seen[1].got(), ["err Cancelled"]);
    }
}
