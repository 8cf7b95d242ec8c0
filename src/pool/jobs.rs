//! What a job is to the scheduler: a source of task frames and a sink for
//! their outputs. The scheduler is not generic; these traits carry the
//! item and result types. Also how the scheduler hashes job ids.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::wakers::Wakers;
use super::wire::TaskHeader;
use crate::error::{Error, ErrorKind, Result};
use crate::segment::Segment;
use crate::task::TaskRef;

/// A zero-copy chunk to send: the scheduler attaches the segments to the
/// chosen worker and writes the descriptor.
pub(crate) struct ZcTask {
    /// The chunk's first element in the map (what a failure names).
    pub(crate) first: u64,
    pub(crate) count: u64,
    /// Where that element lies in the segments: `first`, unless the map
    /// runs through a window of an arena that its elements take turns in
    /// (`zero_copy::raw_map`).
    pub(crate) at: u64,
    pub(crate) task: TaskRef,
    pub(crate) input: Arc<Segment>,
    /// `None`: in place, on `input`.
    pub(crate) output: Option<Arc<Segment>>,
    /// `Some`: the whole map (`first` 0, `count` its length), its chunks
    /// claimed by the workers from a shared counter (`K_ZC_CLAIM`).
    pub(crate) claim: Option<ClaimTask>,
}

/// The claim part of a self-scheduled zero-copy map's descriptor.
pub(crate) struct ClaimTask {
    pub(crate) slot: Arc<super::zero_copy::ClaimSlot>,
    /// Workers the map is sent to.
    pub(crate) workers: u32,
    /// The user's `chunksize`, or 0 for guided chunks.
    pub(crate) fixed: u64,
}

/// The next unit of work of a job.
pub(crate) enum Next {
    /// A [`K_TASK`](super::wire::K_TASK) frame is in the buffer.
    Task {
        first: u64,
        count: u64,
    },
    Zc(ZcTask),
    Done,
    Failed(Error),
}

/// Produces a job's tasks, lazily (so an endless iterator works).
pub(crate) trait Source: Send {
    /// Writes the next task frame into `frame` (cleared first), packing
    /// items until it holds about `soft` bytes, never more than `hard`
    /// unless one item alone is larger: then that item is the frame's only
    /// one, and the frame is streamed.
    fn next(&mut self, frame: &mut Vec<u8>, job: u64, soft: usize, hard: usize) -> Next;

    /// Zero-copy chunks: their frames name segments attached to one
    /// worker, so they are never queued behind a task that may be
    /// cancelled (they could not be sent again elsewhere).
    fn bulk(&self) -> bool {
        false
    }

    /// Its tasks go only to idle workers (a self-scheduled map's
    /// descriptor: queued behind a long task it would hold the map's end
    /// back, doing nothing).
    fn idle_only(&self) -> bool {
        false
    }

    /// Known to have nothing more to send (a hint asked after each task;
    /// `false` when unknown, and then [`Next::Done`] says it). A job whose
    /// source says so leaves the dispatch order at once, instead of after
    /// its last task is back.
    fn is_done(&self) -> bool {
        false
    }

    /// One of its tasks, items `[first, first + items)`, came back after
    /// `busy_ns` of the worker's time (0 when not measured).
    fn task_done(&mut self, _first: u64, _items: u64, _busy_ns: u64) {}

    /// Tasks of this source a worker may hold at once (running and
    /// queued behind it in its ring).
    fn depth(&self) -> usize {
        super::handle::DEPTH
    }

    /// The grouped `submit` job's source ([`Group`](super::group::Group)),
    /// which the scheduler asks about single tasks of it.
    fn grouped(&mut self) -> Option<&mut super::group::Group> {
        None
    }

    /// A grouped job has a full group to send (see `Core::step_as`).
    fn full(&self) -> bool {
        true
    }

    /// Has a task to send now. `false` only while the items of the next
    /// one are still being written (a `map` of numbers whose input is
    /// written into its arena while the first chunks run).
    fn ready(&self) -> bool {
        true
    }
}

/// Receives a job's outputs. Called by whichever thread drives the pool,
/// under the pool's lock.
pub(crate) trait Sink: Send + Sync {
    /// Outputs of items `[first, first + count)`, encoded back to back.
    fn deliver(&self, first: u64, count: u32, bytes: &[u8]) -> Result<()>;
    /// A task of `items` items completed.
    fn task_done(&self, _items: u64) {}
    /// Its task went to a worker (a grouped `submit`: `Task::running`).
    fn mark_sent(&self) {}
    /// The one output of a task of one item: delivered and done (a
    /// grouped `submit`).
    fn complete(&self, bytes: &[u8]) -> Result<()> {
        self.deliver(0, 1, bytes)?;
        self.task_done(1);
        Ok(())
    }
    /// The job failed; the first error is kept.
    fn fail(&self, error: Error);
    /// Every task is back (or lost with its worker): nothing will write
    /// the job's memory any more.
    fn settle(&self);
    /// Outputs buffered and not yet taken by the consumer.
    fn backlog(&self) -> usize {
        0
    }
    /// The consumer went away: stop producing.
    fn abandoned(&self) -> bool {
        false
    }
}

/// Items of an iterator, encoded with postcard, `chunksize` at most per
/// task.
pub(crate) struct IterSource<I: Iterator> {
    items: I,
    peeked: Option<I::Item>,
    /// Items of a chunk that crosses raw (see `raw.rs`), reused.
    raw_buf: Vec<I::Item>,
    next_index: u64,
    chunksize: usize,
    task: TaskRef,
    /// The input iterator panicked at this item: the items before it go
    /// out first, then the next call reports it, so an ordered `imap`
    /// yields every good result before the error (as CPython does).
    failure: Option<Error>,
}

impl<I: Iterator> IterSource<I> {
    pub(crate) fn new(items: I, chunksize: usize, task: TaskRef) -> Self {
        IterSource {
            items,
            peeked: None,
            raw_buf: Vec::new(),
            next_index: 0,
            chunksize: chunksize.max(1),
            task,
            failure: None,
        }
    }

    /// Records that the input iterator panicked when asked for item `at`.
    fn input_panicked(&mut self, info: crate::error::PanicInfo, at: u64) {
        self.failure = Some(
            Error::panicked(info)
                .with_context("the input iterator panicked in the parent")
                .with_index(at),
        );
    }
}

impl<I> Source for IterSource<I>
where
    I: Iterator + Send,
    I::Item: Serialize + Send + 'static,
{
    fn next(&mut self, frame: &mut Vec<u8>, job: u64, soft: usize, hard: usize) -> Next {
        if let Some(e) = self.failure.take() {
            return Next::Failed(e);
        }
        frame.clear();
        TaskHeader {
            job,
            first: self.next_index,
            count: 0,
            flags: 0,
            task: self.task,
        }
        .write(frame);
        if let Some(size) = super::raw::raw_size::<I::Item>() {
            return self.next_raw(frame, size, soft, hard);
        }
        let mut count: u32 = 0;
        while (count as usize) < self.chunksize && frame.len() < soft {
            let pulled = match self.peeked.take() {
                Some(item) => Some(item),
                None => match crate::panic::catch_panic(|| self.items.next()) {
                    Ok(item) => item,
                    Err(info) => {
                        self.input_panicked(info, self.next_index + u64::from(count));
                        break;
                    }
                },
            };
            let Some(item) = pulled else {
                break;
            };
            let at = frame.len();
            if let Err(e) = super::bulk::encode(&item, frame) {
                return Next::Failed(Error::codec(
                    format!("serialising item {}", self.next_index + u64::from(count)),
                    e,
                ));
            }
            if frame.len() > hard {
                if count == 0 {
                    // Over a frame alone: it goes alone, streamed
                    // (`Worker::send_long`).
                    count = 1;
                    break;
                }
                frame.truncate(at);
                self.peeked = Some(item);
                break;
            }
            count += 1;
        }
        if count == 0 {
            return match self.failure.take() {
                Some(e) => Next::Failed(e),
                None => Next::Done,
            };
        }
        frame[16..20].copy_from_slice(&count.to_le_bytes());
        let first = self.next_index;
        self.next_index += u64::from(count);
        Next::Task {
            first,
            count: u64::from(count),
        }
    }
}

impl<I> IterSource<I>
where
    I: Iterator,
    I::Item: 'static,
{
    /// A chunk of primitive numbers as one raw array.
    fn next_raw(&mut self, frame: &mut Vec<u8>, size: usize, soft: usize, hard: usize) -> Next {
        let room = |limit: usize| limit.saturating_sub(TaskHeader::LEN) / size;
        let n = self
            .chunksize
            .min(room(soft).max(1))
            .min(room(hard))
            .min(u32::MAX as usize);
        self.raw_buf.clear();
        self.raw_buf.extend(self.peeked.take());
        // One `extend`, not a `push` per item: over a `Vec`'s iterator
        // (what `map` hands us) it is a plain copy.
        let more = n.saturating_sub(self.raw_buf.len());
        let (items, buf) = (&mut self.items, &mut self.raw_buf);
        // Items taken before a panic stay in `raw_buf` (`extend` pushes
        // as it goes) and go out first.
        if let Err(info) = crate::panic::catch_panic(|| buf.extend(items.by_ref().take(more))) {
            let at = self.next_index + self.raw_buf.len() as u64;
            self.input_panicked(info, at);
        }
        if self.raw_buf.is_empty() {
            return match self.failure.take() {
                Some(e) => Next::Failed(e),
                None => Next::Done,
            };
        }
        let count = self.raw_buf.len() as u32;
        let encoded = super::raw::extend_raw(&self.raw_buf, frame);
        debug_assert!(encoded, "raw_size and extend_raw agree on the types");
        frame[16..20].copy_from_slice(&count.to_le_bytes());
        let first = self.next_index;
        self.next_index += u64::from(count);
        Next::Task {
            first,
            count: u64::from(count),
        }
    }
}

/// The one item of an `apply` or `submit`: encoded straight into the
/// frame when it is sent (no vector, no iterator, nothing to give back).
pub(crate) struct OneItem<A> {
    item: Option<A>,
    task: TaskRef,
}

impl<A> OneItem<A> {
    pub(crate) fn new(item: A, task: TaskRef) -> Self {
        OneItem {
            item: Some(item),
            task,
        }
    }
}

impl<A: Serialize + Send + 'static> Source for OneItem<A> {
    fn next(&mut self, frame: &mut Vec<u8>, job: u64, _soft: usize, _hard: usize) -> Next {
        let Some(item) = self.item.take() else {
            return Next::Done;
        };
        frame.clear();
        TaskHeader {
            job,
            first: 0,
            count: 1,
            flags: 0,
            task: self.task,
        }
        .write(frame);
        // As `IterSource`: primitive numbers cross raw, the rest as
        // postcard. One over a frame goes alone, streamed (`send_one`).
        if super::raw::raw_size::<A>().is_some() {
            let encoded = super::raw::extend_one(&item, frame);
            debug_assert!(encoded, "raw_size and extend_one agree");
        } else if let Err(e) = super::bulk::encode(&item, frame) {
            return Next::Failed(Error::codec("serialising item 0", e));
        }
        Next::Task { first: 0, count: 1 }
    }

    fn is_done(&self) -> bool {
        self.item.is_none()
    }
}

/// The items of a `map` whose type crosses raw (see `raw.rs`), already
/// collected: each chunk is one copy of a slice of them into the frame (no
/// iterator, no staging buffer). Dropped with its job, it leaves its
/// buffer to the pool's [`Spare`](super::raw::Spare) for the next call.
pub(crate) struct RawVecSource<T: Send + 'static> {
    items: Vec<T>,
    next: usize,
    chunksize: usize,
    task: TaskRef,
    spare: super::raw::Spare,
}

impl<T: Send + 'static> RawVecSource<T> {
    /// `Err(items)` if `T` does not cross raw.
    pub(crate) fn new(
        items: Vec<T>,
        chunksize: usize,
        task: TaskRef,
        spare: super::raw::Spare,
    ) -> std::result::Result<Self, Vec<T>> {
        if super::raw::raw_size::<T>().is_none() {
            return Err(items);
        }
        Ok(RawVecSource {
            items,
            next: 0,
            chunksize: chunksize.max(1),
            task,
            spare,
        })
    }
}

impl<T: Send + 'static> Source for RawVecSource<T> {
    fn next(&mut self, frame: &mut Vec<u8>, job: u64, soft: usize, hard: usize) -> Next {
        let left = self.items.len() - self.next;
        if left == 0 {
            return Next::Done;
        }
        let size = std::mem::size_of::<T>().max(1);
        let room = |limit: usize| limit.saturating_sub(TaskHeader::LEN) / size;
        let n = self
            .chunksize
            .min(room(soft).max(1))
            .min(room(hard))
            .min(u32::MAX as usize)
            .min(left)
            .max(1);
        let first = self.next as u64;
        frame.clear();
        TaskHeader {
            job,
            first,
            count: n as u32,
            flags: 0,
            task: self.task,
        }
        .write(frame);
        let encoded = super::raw::extend_raw_range(&self.items, self.next..self.next + n, frame);
        debug_assert!(encoded, "raw_size and extend_raw_range agree on the types");
        self.next += n;
        Next::Task {
            first,
            count: n as u64,
        }
    }
}

impl<T: Send + 'static> Drop for RawVecSource<T> {
    fn drop(&mut self) {
        super::raw::give_back(std::mem::take(&mut self.items), &self.spare);
    }
}

/// The items of a `map` over borrowed input (`pool.map(f, &items)`),
/// encoded by the caller in batches while the first chunks already run: a
/// job may hold nothing it borrows, and the caller frees nothing (the
/// owned path drops each item once encoded, which for small heap-backed
/// items costs the parent more than the encoding). Each chunk is one copy
/// of its items' bytes into the frame; a chunk never spans two batches.
pub(crate) struct EncodedSource {
    feed: Arc<Mutex<Feed>>,
    /// The batch chunks are taken from, and its next item.
    batch: Batch,
    at: usize,
    chunksize: usize,
    task: TaskRef,
}

/// What the caller has encoded and the source has not taken yet.
#[derive(Default)]
pub(crate) struct Feed {
    batches: VecDeque<Batch>,
    /// Batches sent, emptied, for the caller to fill again (no fresh
    /// pages to fault in for each).
    spare: Vec<Batch>,
    /// No batch will follow the ones queued.
    over: bool,
    /// The source is gone (its job ended: failed, or the pool went):
    /// nothing will take another batch.
    gone: bool,
    /// Sent once the batches queued before it are: the item that could
    /// not be encoded, or the caller unwinding.
    failure: Option<Error>,
}

/// Items `[first, first + ends.len())`, encoded back to back.
#[derive(Default)]
pub(crate) struct Batch {
    first: u64,
    bytes: Vec<u8>,
    /// Where each item's encoding ends in `bytes`.
    ends: Vec<usize>,
}

impl Batch {
    /// An empty batch starting at item `first`, room for `items` items
    /// of about `item_bytes` each.
    fn new(first: u64, items: usize, item_bytes: usize) -> Self {
        Batch {
            first,
            bytes: Vec::with_capacity(items.saturating_mul(item_bytes)),
            ends: Vec::with_capacity(items),
        }
    }

    /// Appends `item`'s encoding.
    pub(crate) fn push<T: Serialize + 'static>(&mut self, item: &T) -> Result<()> {
        let at = self.first + self.ends.len() as u64;
        let start = self.bytes.len();
        if let Err(e) = super::bulk::encode(item, &mut self.bytes) {
            // What the failed item wrote is not left after the others.
            self.bytes.truncate(start);
            return Err(Error::codec(format!("serialising item {at}"), e));
        }
        self.ends.push(self.bytes.len());
        Ok(())
    }

    /// Its encoded bytes.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.len()
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Where item `i`'s encoding starts.
    fn start_of(&self, i: usize) -> usize {
        match i.checked_sub(1) {
            Some(prev) => self.ends[prev],
            None => 0,
        }
    }
}

impl Feed {
    /// An empty batch starting at item `first`: a spare one if there is
    /// one, else a new one with room for `items` items of about
    /// `item_bytes` each.
    pub(crate) fn batch(feed: &Mutex<Feed>, first: u64, items: usize, item_bytes: usize) -> Batch {
        match lock(feed).spare.pop() {
            Some(mut b) => {
                b.first = first;
                b
            }
            None => Batch::new(first, items, item_bytes),
        }
    }

    /// Batches queued and not taken yet.
    pub(crate) fn queued(feed: &Mutex<Feed>) -> usize {
        lock(feed).batches.len()
    }

    /// Queues a batch (an empty one is dropped). `false` once the job
    /// has ended (nothing will send it; the caller may stop encoding).
    pub(crate) fn push(feed: &Mutex<Feed>, batch: Batch) -> bool {
        let mut f = lock(feed);
        if f.gone {
            return false;
        }
        if !batch.ends.is_empty() {
            f.batches.push_back(batch);
        }
        true
    }

    /// No more batches; `failure`, if any, is the job's error once the
    /// queued batches are sent.
    pub(crate) fn close(feed: &Mutex<Feed>, failure: Option<Error>) {
        let mut f = lock(feed);
        f.over = true;
        if f.failure.is_none() {
            f.failure = failure;
        }
    }
}

impl EncodedSource {
    /// A source fed through the returned handle, at most `chunksize`
    /// items a task.
    pub(crate) fn new(chunksize: usize, task: TaskRef) -> (Self, Arc<Mutex<Feed>>) {
        let feed = Arc::new(Mutex::new(Feed::default()));
        let source = EncodedSource {
            feed: Arc::clone(&feed),
            batch: Batch::default(),
            at: 0,
            chunksize: chunksize.clamp(1, u32::MAX as usize),
            task,
        };
        (source, feed)
    }
}

impl Drop for EncodedSource {
    fn drop(&mut self) {
        let mut feed = lock(&self.feed);
        feed.gone = true;
        // What is queued will never be sent: free it now, not when the
        // caller stops encoding.
        feed.batches.clear();
        feed.spare.clear();
    }
}

impl Source for EncodedSource {
    /// Deeper than other jobs': the caller that encodes the batches sleeps
    /// while it is ahead of the workers, and each worker has chunks to run
    /// until it wakes (see `map_item::run_encoded`).
    fn depth(&self) -> usize {
        super::handle::ENCODED_DEPTH
    }

    fn next(&mut self, frame: &mut Vec<u8>, job: u64, soft: usize, hard: usize) -> Next {
        if self.at >= self.batch.len() {
            let mut feed = lock(&self.feed);
            match feed.batches.pop_front() {
                Some(b) => {
                    drop(feed);
                    self.batch = b;
                    self.at = 0;
                }
                None => {
                    return match feed.failure.take() {
                        Some(e) => Next::Failed(e),
                        None if feed.over => Next::Done,
                        // `ready` said there was one: only this source
                        // takes batches, so this cannot happen; loudly if
                        // it did, not by ending the map short.
                        None => Next::Failed(Error::new(
                            ErrorKind::Protocol,
                            "a map's encoded input was asked for before it was ready",
                        )),
                    };
                }
            }
        }
        let b = &self.batch;
        let first = self.at;
        let start = b.start_of(first);
        let last = b.len().min(first.saturating_add(self.chunksize));
        // The same packing as `IterSource`: items while the frame is under
        // `soft`; an item that would take it over `hard` waits for the
        // next frame, unless it is the first (then it goes alone, streamed).
        let mut end = first;
        while end < last && TaskHeader::LEN + (b.start_of(end) - start) < soft {
            if TaskHeader::LEN + (b.ends[end] - start) > hard && end > first {
                break;
            }
            end += 1;
        }
        // A `soft` under the header's own size still sends one item.
        let end = end.max(first + 1);
        let count = (end - first) as u32;
        let at = b.first + first as u64;
        frame.clear();
        TaskHeader {
            job,
            first: at,
            count,
            flags: 0,
            task: self.task,
        }
        .write(frame);
        frame.extend_from_slice(&b.bytes[start..b.ends[end - 1]]);
        self.at = end;
        if self.at >= self.batch.len() {
            // Sent: its buffers go back to the caller for a later batch.
            let mut done = std::mem::take(&mut self.batch);
            done.bytes.clear();
            done.ends.clear();
            let mut feed = lock(&self.feed);
            if !feed.over {
                feed.spare.push(done);
            }
        }
        Next::Task {
            first: at,
            count: u64::from(count),
        }
    }

    fn ready(&self) -> bool {
        self.at < self.batch.len() || {
            let feed = lock(&self.feed);
            !feed.batches.is_empty() || feed.over
        }
    }

    fn is_done(&self) -> bool {
        self.at >= self.batch.len() && {
            let feed = lock(&self.feed);
            feed.batches.is_empty() && feed.over && feed.failure.is_none()
        }
    }
}

/// The one result in `bytes` (a frame of `count` results): as
/// [`decode_all`], without a buffer for one value.
pub(crate) fn decode_one<U: DeserializeOwned + 'static>(bytes: &[u8], count: u32) -> Result<U> {
    if count != 1 {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!("{count} results for a task of one item"),
        ));
    }
    if super::raw::raw_size::<U>().is_some() {
        return super::raw::one_from_raw::<U>(bytes)
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "raw results of the wrong length"));
    }
    if let Some(decoded) = super::bulk::decode_front::<U>(bytes) {
        let (v, used) = decoded.map_err(|e| Error::codec("decoding a result", e))?;
        return all_read(bytes.len() - used).map(|()| v);
    }
    let mut de = postcard::Deserializer::from_bytes(bytes);
    crate::error::clear_custom_reason();
    let v = U::deserialize(&mut de).map_err(|e| Error::codec("decoding a result", e))?;
    end_of_results(de)?;
    Ok(v)
}

/// Decodes exactly `count` values from `bytes`: raw for primitive numbers
/// (see `raw.rs`), postcard otherwise.
pub(crate) fn decode_all<U: DeserializeOwned + 'static>(
    bytes: &[u8],
    count: u32,
    out: &mut impl Extend<U>,
) -> Result<()> {
    if super::raw::raw_size::<U>().is_some() {
        let v = super::raw::from_raw::<U>(bytes, count as usize)
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "raw results of the wrong length"))?;
        out.extend(v);
        return Ok(());
    }
    let mut items = Vec::with_capacity((count as usize).min(bytes.len()));
    if let Some(bulk) = super::bulk::decoder::<U>() {
        let mut at = 0;
        for _ in 0..count {
            let (v, used) = bulk
                .front(&bytes[at..])
                .map_err(|e| Error::codec("decoding a result", e))?;
            items.push(v);
            at += used;
        }
        all_read(bytes.len() - at)?;
        out.extend(items);
        return Ok(());
    }
    // One deserializer over the frame (see `wire::run_chunk`: no tuple
    // in a `Result` to copy out of for each value).
    let mut de = postcard::Deserializer::from_bytes(bytes);
    crate::error::clear_custom_reason();
    for _ in 0..count {
        let v = U::deserialize(&mut de).map_err(|e| Error::codec("decoding a result", e))?;
        items.push(v);
    }
    end_of_results(de)?;
    out.extend(items);
    Ok(())
}

/// A result frame ends with its last value: `rest` bytes after it are
/// an error.
fn all_read(rest: usize) -> Result<()> {
    if rest == 0 {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Protocol,
            "trailing bytes after the results",
        ))
    }
}

/// [`all_read`] after postcard's last value.
fn end_of_results<'a>(
    de: postcard::Deserializer<'a, postcard::de_flavors::Slice<'a>>,
) -> Result<()> {
    let rest = de
        .finalize()
        .map_err(|e| Error::codec("ending the results", e))?;
    all_read(rest.len())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keeps the result of a one-item task in `slot`, unless the job already
/// `failed` (its error wins): a second result, or one for an item other
/// than the first, is a protocol error.
fn keep_one<U>(slot: &mut Option<U>, failed: bool, first: u64, value: U) -> Result<()> {
    if first != 0 || slot.is_some() {
        return Err(Error::new(
            ErrorKind::Protocol,
            "a second result for a task of one item",
        ));
    }
    if !failed {
        *slot = Some(value);
    }
    Ok(())
}

/// The sink of a blocking `apply`: its one value or the job's first
/// error, and the flag the waiting caller polls. No future, stream or
/// callback can hold it, so it has none of [`Collect`]'s wakers, parts or
/// progress count: one lock to deliver, none to settle, one to take (the
/// `Collect` of one item took five, and its state cost ~20 ns to make
/// and drop per call).
pub(crate) struct OneCall<U> {
    st: Mutex<OneCallState<U>>,
    /// `take` will not block: settled, or failed.
    ready: AtomicBool,
}

struct OneCallState<U> {
    value: Option<U>,
    error: Option<Error>,
}

impl<U> OneCall<U> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(OneCall {
            st: Mutex::new(OneCallState {
                value: None,
                error: None,
            }),
            ready: AtomicBool::new(false),
        })
    }

    /// `true` once [`take`](OneCall::take) has its outcome.
    pub(crate) fn ready(&self) -> bool {
        // SYNC: Acquire pairs with the Release stores in `fail` and
        // `settle`, made after the value or error went into `st`.
        self.ready.load(Ordering::Acquire)
    }

    /// The value, or the job's error. Once only.
    pub(crate) fn take(&self) -> Result<U> {
        let mut st = lock(&self.st);
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        st.value.take().ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "no result came back for a task of one item",
            )
        })
    }
}

impl<U: DeserializeOwned + Send + 'static> Sink for OneCall<U> {
    fn deliver(&self, first: u64, count: u32, bytes: &[u8]) -> Result<()> {
        let value = decode_one::<U>(bytes, count)?;
        let mut st = lock(&self.st);
        let failed = st.error.is_some();
        keep_one(&mut st.value, failed, first, value)
    }

    fn fail(&self, error: Error) {
        let mut st = lock(&self.st);
        if st.error.is_none() {
            st.error = Some(error);
            st.value = None;
        }
        drop(st);
        // SYNC: Release; partner: the Acquire load in `ready`.
        self.ready.store(true, Ordering::Release);
    }

    fn settle(&self) {
        // SYNC: Release; partner: the Acquire load in `ready`. The value
        // was stored under `st` before (the same driver, earlier).
        self.ready.store(true, Ordering::Release);
    }
}

/// All outputs of a job, in order: `map`, `starmap`, `apply_async`, and
/// the zero-copy maps (which have no outputs).
pub(crate) struct Collect<U> {
    st: Mutex<CollectState<U>>,
    /// `ready()` without the lock: waiting drivers ask on every spin.
    ready: AtomicBool,
    /// Ready only once settled (zero-copy: the memory is ours again).
    wait_settle: bool,
    /// The job has one item (`apply_async`): its result is kept as a value in
    /// `one`, with no vector or map around it.
    single: bool,
    /// Futures waiting for it to become ready (`AsyncResult`).
    pub(crate) wakers: Wakers,
    /// Items of the tasks done (`task_done`), outside the state lock:
    /// counted on every task, read only for progress.
    done_items: AtomicU64,
}

struct CollectState<U> {
    parts: BTreeMap<u64, Vec<U>>,
    /// The result of a one-item job (`Collect::for_items(1)`).
    one: Option<U>,
    /// Primitive results of a call of known length land in place here
    /// (no per-chunk vectors, no final concatenation).
    dense: Option<Vec<U>>,
    dense_filled: u64,
    error: Option<Error>,
    /// The job failed (`error` may have been taken since).
    failed: bool,
    settled: bool,
    taken: bool,
    /// Called once when the job becomes ready (`*_async_with`: queues the
    /// callbacks). Under the pool's lock: it must only queue.
    on_ready: Option<OnReady>,
}

/// What [`Collect::on_ready`] registers.
pub(crate) type OnReady = Box<dyn FnOnce() + Send>;

impl<U: 'static> Collect<U> {
    /// A sink for `len` results (if known).
    pub(crate) fn with_len(wait_settle: bool, len: Option<usize>) -> Arc<Self> {
        let c = Self::new(wait_settle);
        if let Some(n) = len {
            lock(&c.st).dense = super::raw::zeroed_vec::<U>(n);
        }
        c
    }

    /// The sink of a `map` or `apply_async` of `n` items (a blocking
    /// `apply` has its own, [`OneCall`]): one item's result is
    /// kept as a value (a batch of `apply_async` calls made a map node, a
    /// vector and a second vector at `take` per call, and the memory of
    /// all of them was fresh pages: 2–3× the time of `submit`), more land
    /// in place when they are primitive numbers.
    pub(crate) fn for_items(n: usize) -> Arc<Self> {
        if n == 1 {
            Arc::new(Self::build(false, true))
        } else {
            Self::with_len(false, (n > 1).then_some(n))
        }
    }
}

impl<U> Collect<U> {
    pub(crate) fn new(wait_settle: bool) -> Arc<Self> {
        Arc::new(Self::build(wait_settle, false))
    }

    fn build(wait_settle: bool, single: bool) -> Self {
        Collect {
            st: Mutex::new(CollectState {
                parts: BTreeMap::new(),
                one: None,
                dense: None,
                dense_filled: 0,
                error: None,
                failed: false,
                settled: false,
                taken: false,
                on_ready: None,
            }),
            ready: AtomicBool::new(false),
            wait_settle,
            single,
            wakers: Wakers::default(),
            done_items: AtomicU64::new(0),
        }
    }

    /// `true` once `take` will not block: settled, or (serde jobs) failed.
    pub(crate) fn ready(&self) -> bool {
        // SYNC: Acquire pairs with the Release store in `became_ready`,
        // made under the state lock after the state changed.
        self.ready.load(Ordering::Acquire)
    }

    /// Calls `f` once, when the job becomes ready (at once if it already
    /// is). It runs on whichever thread makes the job ready, which may
    /// hold the pool's lock, so it must only hand work on.
    pub(crate) fn on_ready(&self, f: OnReady) {
        let mut st = lock(&self.st);
        if self.ready() {
            drop(st);
            f();
        } else {
            st.on_ready = Some(f);
        }
    }

    /// Drops what [`on_ready`](Collect::on_ready) registered (a job that
    /// was never submitted: the closure may hold this sink).
    pub(crate) fn clear_on_ready(&self) {
        let f = lock(&self.st).on_ready.take();
        drop(f);
    }

    /// Marks the job ready and calls what waits for that.
    fn became_ready(&self, mut st: MutexGuard<'_, CollectState<U>>) {
        // SYNC: Release; partner: the Acquire load in `ready`.
        self.ready.store(true, Ordering::Release);
        let f = st.on_ready.take();
        drop(st);
        if let Some(f) = f {
            f();
        }
        self.wakers.wake_all();
    }

    /// `Some(true)` if it succeeded, `Some(false)` if it failed, `None`
    /// while running.
    pub(crate) fn successful(&self) -> Option<bool> {
        let st = lock(&self.st);
        if st.failed && (st.settled || !self.wait_settle) {
            Some(false)
        } else if st.settled {
            Some(true)
        } else {
            None
        }
    }

    pub(crate) fn done_items(&self) -> u64 {
        // SYNC: Relaxed: a progress count. Every `task_done` of a job comes
        // before its `became_ready` (the same driver, under the pool's
        // lock), so a reader that saw `ready()` reads the final count.
        self.done_items.load(Ordering::Relaxed)
    }

    /// The outputs in order, or the job's error. Once only.
    pub(crate) fn take(&self, expect: Option<u64>) -> Result<Vec<U>> {
        let mut st = lock(&self.st);
        if st.taken {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "the result was already taken",
            ));
        }
        st.taken = true;
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        if let Some(v) = st.one.take() {
            if expect.is_some_and(|e| e != 1) {
                return Err(Error::new(ErrorKind::Protocol, "1 result for more items"));
            }
            return Ok(vec![v]);
        }
        if let Some(dense) = st.dense.take() {
            let n = dense.len() as u64;
            if st.dense_filled != n || expect.is_some_and(|e| e != n) {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{} results for {n} items", st.dense_filled),
                ));
            }
            return Ok(dense);
        }
        let parts = std::mem::take(&mut st.parts);
        let total: usize = parts.values().map(Vec::len).sum();
        let mut out = Vec::with_capacity(total);
        let mut next = 0u64;
        for (first, part) in parts {
            if first != next {
                return Err(Error::new(ErrorKind::Protocol, "a result chunk is missing"));
            }
            next += part.len() as u64;
            out.extend(part);
        }
        if let Some(n) = expect {
            if next != n {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{next} results for {n} items"),
                ));
            }
        }
        Ok(out)
    }

    /// The one output of a one-item job (`apply`), or its error. Once only.
    pub(crate) fn take_one(&self) -> Result<U> {
        {
            let mut st = lock(&self.st);
            if !st.taken && st.error.is_none() {
                if let Some(v) = st.one.take() {
                    st.taken = true;
                    return Ok(v);
                }
            }
        }
        super::results::one(self.take(Some(1))?)
    }
}

impl<U: DeserializeOwned + Send + 'static> Sink for Collect<U> {
    fn deliver(&self, first: u64, count: u32, bytes: &[u8]) -> Result<()> {
        if self.single {
            let value = decode_one::<U>(bytes, count)?;
            let mut st = lock(&self.st);
            let failed = st.error.is_some();
            return keep_one(&mut st.one, failed, first, value);
        }
        {
            let mut st = lock(&self.st);
            let st = &mut *st;
            if let Some(dense) = st.dense.as_mut() {
                let size = super::raw::raw_size::<U>().unwrap_or(usize::MAX);
                let fits = (count as usize).checked_mul(size) == Some(bytes.len())
                    && usize::try_from(first).is_ok_and(|f| super::raw::copy_into(dense, f, bytes));
                if !fits {
                    return Err(Error::new(ErrorKind::Protocol, "raw results out of range"));
                }
                st.dense_filled += u64::from(count);
                return Ok(());
            }
        }
        let mut part = Vec::new();
        decode_all(bytes, count, &mut part)?;
        let mut st = lock(&self.st);
        if st.error.is_none() && !part.is_empty() && st.parts.insert(first, part).is_some() {
            return Err(Error::new(
                ErrorKind::Protocol,
                "a result chunk arrived twice",
            ));
        }
        Ok(())
    }

    fn task_done(&self, items: u64) {
        // SYNC: Relaxed: see `done_items`.
        self.done_items.fetch_add(items, Ordering::Relaxed);
    }

    fn fail(&self, error: Error) {
        let mut st = lock(&self.st);
        if !st.failed {
            st.failed = true;
            st.error = Some(error);
            st.parts.clear();
            st.one = None;
        }
        if !self.wait_settle {
            self.became_ready(st);
        }
    }

    fn settle(&self) {
        let mut st = lock(&self.st);
        st.settled = true;
        self.became_ready(st);
    }
}

/// Outputs handed out one by one: `imap` (in order) and `imap_unordered`.
pub(crate) struct Stream<U> {
    st: Mutex<StreamState<U>>,
    ordered: bool,
    /// Outputs buffered and not yet handed out. Changed under `st`, read
    /// without it by the dispatcher on every step (a bound, not a sync
    /// point: Relaxed).
    buffered: AtomicUsize,
    /// The consumer went away (Relaxed, as `buffered`).
    dropped: AtomicBool,
    /// A stream waiting for the next output (`IMapStream`).
    pub(crate) wakers: Wakers,
}

struct StreamState<U> {
    /// Ordered: parts by first index. Unordered: everything under key 0.
    parts: BTreeMap<u64, VecDeque<U>>,
    unordered: VecDeque<U>,
    /// Ordered: index of the next item to hand out.
    next: u64,
    /// The first error and the index it belongs to.
    error: Option<(u64, Error)>,
    settled: bool,
    closed: bool,
    done_items: u64,
}

impl<U> Stream<U> {
    pub(crate) fn new(ordered: bool) -> Arc<Self> {
        Arc::new(Stream {
            st: Mutex::new(StreamState {
                parts: BTreeMap::new(),
                unordered: VecDeque::new(),
                next: 0,
                error: None,
                settled: false,
                closed: false,
                done_items: 0,
            }),
            ordered,
            buffered: AtomicUsize::new(0),
            dropped: AtomicBool::new(false),
            wakers: Wakers::default(),
        })
    }

    /// The next output if one can be handed out now: `Some(None)` at the
    /// end, `None` if the caller must wait.
    pub(crate) fn try_next(&self) -> Option<Option<Result<U>>> {
        let mut st = lock(&self.st);
        if st.closed {
            return Some(None);
        }
        if self.ordered {
            let next = st.next;
            if let Some((idx, _)) = &st.error {
                if *idx <= next {
                    let (_, e) = st.error.take().expect("checked");
                    st.closed = true;
                    return Some(Some(Err(e)));
                }
            }
            if let Some(mut entry) = st.parts.first_entry() {
                if *entry.key() == next {
                    let part = entry.get_mut();
                    let v = part.pop_front().expect("parts are never empty");
                    if part.is_empty() {
                        entry.remove();
                    } else {
                        let rest = entry.remove();
                        st.parts.insert(next + 1, rest);
                    }
                    st.next += 1;
                    self.buffered.fetch_sub(1, Ordering::Relaxed);
                    return Some(Some(Ok(v)));
                }
            }
        } else {
            if let Some(v) = st.unordered.pop_front() {
                self.buffered.fetch_sub(1, Ordering::Relaxed);
                return Some(Some(Ok(v)));
            }
            if let Some((_, e)) = st.error.take() {
                st.closed = true;
                return Some(Some(Err(e)));
            }
        }
        if st.settled {
            st.closed = true;
            if let Some((_, e)) = st.error.take() {
                return Some(Some(Err(e)));
            }
            return Some(None);
        }
        None
    }

    /// The consumer went away.
    pub(crate) fn drop_consumer(&self) {
        let mut st = lock(&self.st);
        self.dropped.store(true, Ordering::Relaxed);
        st.parts.clear();
        st.unordered.clear();
    }

    pub(crate) fn done_items(&self) -> u64 {
        lock(&self.st).done_items
    }
}

impl<U: DeserializeOwned + Send + 'static> Sink for Stream<U> {
    fn deliver(&self, first: u64, count: u32, bytes: &[u8]) -> Result<()> {
        let mut part = VecDeque::new();
        decode_all(bytes, count, &mut part)?;
        let mut st = lock(&self.st);
        if self.dropped.load(Ordering::Relaxed) || part.is_empty() {
            return Ok(());
        }
        self.buffered.fetch_add(part.len(), Ordering::Relaxed);
        if self.ordered {
            if first < st.next || st.parts.insert(first, part).is_some() {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    "a result chunk arrived twice",
                ));
            }
        } else {
            st.unordered.extend(part);
        }
        drop(st);
        self.wakers.wake_all();
        Ok(())
    }

    fn task_done(&self, items: u64) {
        lock(&self.st).done_items += items;
    }

    fn fail(&self, error: Error) {
        let mut st = lock(&self.st);
        if st.error.is_none() {
            let index = error_index(&error).unwrap_or(0);
            st.error = Some((index, error));
        }
        drop(st);
        self.wakers.wake_all();
    }

    fn settle(&self) {
        lock(&self.st).settled = true;
        self.wakers.wake_all();
    }

    fn backlog(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    fn abandoned(&self) -> bool {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The item index an error names (set by the scheduler), for ordered
/// streams: items before it are still handed out.
fn error_index(e: &Error) -> Option<u64> {
    e.item_index()
}

/// Job ids are small sequential numbers this process hands out (a peer's
/// id only ever finds a job or nothing): hash them as themselves.
#[derive(Default, Clone, Copy)]
pub(crate) struct JobIds;

#[derive(Default)]
pub(crate) struct JobIdHasher(u64);

impl std::hash::Hasher for JobIdHasher {
    fn finish(&self) -> u64 {
        // The id itself in the low bits, which pick the bucket: jobs
        // submitted one after another sit side by side in the table, so a
        // pool with 100 000 tasks submitted walks it in cache order instead
        // of missing on every lookup (measured: a multiplicative spread
        // cost ~0.3 µs a task). Its low 7 bits again in the top 7, which
        // hashbrown keeps as tags: neighbours' tags differ.
        self.0 ^ (self.0 << 57)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(source: &mut dyn Source, hard: usize) -> Vec<(u64, u64, usize)> {
        let mut frame = Vec::new();
        let mut out = Vec::new();
        loop {
            match source.next(&mut frame, 1, hard, hard) {
                Next::Task { first, count } => out.push((first, count, frame.len())),
                Next::Done => return out,
                _ => panic!("unexpected"),
            }
        }
    }

    #[test]
    fn an_item_over_the_frame_limit_goes_alone_and_splits_its_chunk() {
        let hard = 1000;
        let items = vec![vec![1u8; 10], vec![2; 5000], vec![3; 10], vec![4; 10]];
        let mut source = IterSource::new(items.into_iter(), 4, TaskRef::from_words([0; 3]));
        let got = counts(&mut source, hard);
        // Items 0, then 1 alone (over the limit: streamed), then 2 and 3.
        assert_eq!(
            got.iter().map(|&(f, c, _)| (f, c)).collect::<Vec<_>>(),
            [(0, 1), (1, 1), (2, 2)]
        );
        assert!(got[0].2 <= hard && got[2].2 <= hard);
        assert!(got[1].2 > hard);
    }

    /// Two batches of `Vec<u8>` items: `[10, 5000, 10, 10]` and `[7, 7]`.
    fn encoded(chunksize: usize) -> (EncodedSource, Arc<Mutex<Feed>>) {
        let (source, feed) = EncodedSource::new(chunksize, TaskRef::from_words([0; 3]));
        let mut a = Feed::batch(&feed, 0, 4, 16);
        for len in [10, 5000, 10, 10] {
            a.push(&vec![len as u8; len]).unwrap();
        }
        let mut b = Feed::batch(&feed, 4, 2, 16);
        for _ in 0..2 {
            b.push(&vec![7u8; 7]).unwrap();
        }
        assert!(Feed::push(&feed, a) && Feed::push(&feed, b));
        (source, feed)
    }

    #[test]
    fn encoded_batches_pack_as_the_iterator_source_and_never_span_two_batches() {
        let hard = 1000;
        let (mut source, feed) = encoded(4);
        assert!(source.ready() && !source.is_done());
        let mut frame = Vec::new();
        let mut got = Vec::new();
        while got.len() < 4 {
            match source.next(&mut frame, 9, hard, hard) {
                Next::Task { first, count } => {
                    let (h, body) = TaskHeader::read(&frame).unwrap();
                    assert_eq!((h.job, h.first, u64::from(h.count)), (9, first, count));
                    // The items, decoded back, are the ones pushed.
                    let mut de = postcard::Deserializer::from_bytes(body);
                    for _ in 0..count {
                        let v = <Vec<u8> as serde::Deserialize>::deserialize(&mut de).unwrap();
                        // Each item is its own length (as a `u8`), repeated.
                        assert!(v.iter().all(|&b| b == v.len() as u8), "{} bytes", v.len());
                    }
                    assert!(de.finalize().unwrap().is_empty());
                    got.push((first, count, frame.len()));
                }
                _ => panic!("a task was due"),
            }
        }
        // 0; 1 alone (over `hard`, streamed); 2 and 3 (the first batch's
        // end); 4 and 5 (the second batch).
        assert_eq!(
            got.iter().map(|&(f, c, _)| (f, c)).collect::<Vec<_>>(),
            [(0, 1), (1, 1), (2, 2), (4, 2)]
        );
        assert!(got[1].2 > hard && got[0].2 <= hard && got[2].2 <= hard);
        // Nothing more queued, the feed still open: not ready, not done.
        assert!(!source.ready() && !source.is_done());
        Feed::close(&feed, None);
        assert!(source.ready() && source.is_done());
        assert!(matches!(source.next(&mut frame, 9, hard, hard), Next::Done));
    }

    #[test]
    fn an_encoded_source_keeps_its_chunk_size_and_sends_a_failure_after_the_items_before_it() {
        let (mut source, feed) = encoded(1);
        Feed::close(&feed, Some(Error::new(ErrorKind::Codec, "item 6")));
        let mut frame = Vec::new();
        let mut counts = Vec::new();
        loop {
            match source.next(&mut frame, 1, usize::MAX, usize::MAX) {
                Next::Task { count, .. } => counts.push(count),
                Next::Failed(e) => {
                    assert_eq!(e.kind(), ErrorKind::Codec);
                    break;
                }
                _ => panic!("the failure was due"),
            }
        }
        assert_eq!(counts, [1; 6]);
        // Gone with its job: the caller learns it at its next batch.
        drop(source);
        assert!(!Feed::push(&feed, Batch::default()));
    }

    #[test]
    fn a_one_item_sink_keeps_one_value_and_refuses_a_second() {
        let raw = 7u64.to_ne_bytes();
        // Delivered, made final, taken once.
        let c = Collect::<u64>::for_items(1);
        c.deliver(0, 1, &raw).unwrap();
        c.task_done(1);
        c.settle();
        assert!(c.ready());
        assert_eq!(c.take_one().unwrap(), 7);
        assert_eq!(c.take_one().unwrap_err().kind(), ErrorKind::InvalidState);
        // A second result, or one for another item, is a protocol error.
        let c = Collect::<u64>::for_items(1);
        c.deliver(0, 1, &raw).unwrap();
        assert_eq!(
            c.deliver(0, 1, &raw).unwrap_err().kind(),
            ErrorKind::Protocol
        );
        let c = Collect::<u64>::for_items(1);
        assert_eq!(
            c.deliver(1, 1, &raw).unwrap_err().kind(),
            ErrorKind::Protocol
        );
        assert_eq!(
            c.deliver(0, 2, &raw).unwrap_err().kind(),
            ErrorKind::Protocol
        );
        // A failure wins over a value; no value at all is an error too.
        let c = Collect::<String>::for_items(1);
        c.deliver(0, 1, &postcard::to_allocvec("x").unwrap())
            .unwrap();
        c.fail(Error::new(ErrorKind::Panicked, "boom"));
        assert_eq!(c.take_one().unwrap_err().kind(), ErrorKind::Panicked);
        let c = Collect::<String>::for_items(1);
        c.settle();
        assert_eq!(c.take_one().unwrap_err().kind(), ErrorKind::Protocol);
        // A map's `take` of it: the one value in a vector.
        let c = Collect::<String>::for_items(1);
        c.deliver(0, 1, &postcard::to_allocvec("y").unwrap())
            .unwrap();
        c.settle();
        assert_eq!(c.take(Some(1)).unwrap(), ["y"]);
    }

    #[test]
    fn a_blocking_calls_sink_is_ready_once_settled_or_failed_and_keeps_the_first_error() {
        let raw = 7u64.to_ne_bytes();
        // Delivered: ready only once settled; taken once.
        let c = OneCall::<u64>::new();
        c.deliver(0, 1, &raw).unwrap();
        assert!(!c.ready());
        c.settle();
        assert!(c.ready());
        assert_eq!(c.take().unwrap(), 7);
        assert_eq!(c.take().unwrap_err().kind(), ErrorKind::Protocol);
        // A second result, or one for another item or of two, is refused.
        let c = OneCall::<u64>::new();
        c.deliver(0, 1, &raw).unwrap();
        assert_eq!(
            c.deliver(0, 1, &raw).unwrap_err().kind(),
            ErrorKind::Protocol
        );
        let c = OneCall::<u64>::new();
        assert_eq!(
            c.deliver(1, 1, &raw).unwrap_err().kind(),
            ErrorKind::Protocol
        );
        assert_eq!(
            c.deliver(0, 2, &raw).unwrap_err().kind(),
            ErrorKind::Protocol
        );
        // A failure makes it ready at once, wins over a value delivered
        // before or after, and the first failure is the one kept.
        let c = OneCall::<String>::new();
        c.deliver(0, 1, &postcard::to_allocvec("x").unwrap())
            .unwrap();
        c.fail(Error::new(ErrorKind::Panicked, "boom"));
        assert!(c.ready());
        c.fail(Error::new(ErrorKind::ProcessDied, "later"));
        c.deliver(0, 1, &postcard::to_allocvec("y").unwrap())
            .unwrap();
        assert_eq!(c.take().unwrap_err().kind(), ErrorKind::Panicked);
        // Settled with nothing delivered: an error, not a hang or a panic.
        let c = OneCall::<String>::new();
        c.settle();
        assert_eq!(c.take().unwrap_err().kind(), ErrorKind::Protocol);
        // Bytes that are not a value of the type: a codec error.
        let c = OneCall::<String>::new();
        assert_eq!(
            c.deliver(0, 1, &[0xFF, 0xFF, 0xFF]).unwrap_err().kind(),
            ErrorKind::Codec
        );
    }
}
