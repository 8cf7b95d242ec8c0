//! The serde `map` of primitive numbers, through the pool's arenas.
//!
//! `pool.map(square, 0..1_000_000u64)` has the same types as a zero-copy
//! map: its items and results are plain numbers (`raw.rs`). Through the
//! rings, the parent copied every item into a frame and into a ring, and
//! every result out of a ring, spinning meanwhile: 5–7 ns of its own CPU an
//! item, one core's worth, so that the workers waited on it. Through an
//! arena the parent writes each item once (straight from the iterator),
//! sleeps while the workers map chunks of it in shared memory, and copies
//! each result out once. Only chunk descriptors cross the rings; errors,
//! panics and dead workers are reported as for the ring path, down to the
//! item (the kernel notes each item it starts).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::shm_vec::{arena_range, copy_in_at};
use super::{Fill, ZcChunks};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::core::Core;
use crate::pool::jobs::Collect;
use crate::pool::raw;
use crate::pool::wire::RawDesc;
use crate::pool::Pool;
use crate::segment::Segment;
use crate::task::TaskRef;

/// A `map` of at least this many numbers goes through arenas: below it
/// the rings' small chunks spread the items over the workers better than
/// the arena's guided chunks (4 Ki items at least) would, and per call
/// the two paths cost about the same.
const RAW_ARENA_MIN: usize = 32 * 1024;

/// Items written to the arena a block at a time (a cache-resident buffer).
const BLOCK: usize = 4096;

impl Pool {
    /// `map` through arenas when its items and results are primitive
    /// numbers and there are enough of them: `Ok` with the map's outcome.
    /// `Err` with `f` and the items, collected, when this path does not
    /// apply or the arenas cannot be had (a small `/dev/shm`: the rings
    /// need no more shared memory than they have); the ring path takes
    /// them.
    pub(in crate::pool) fn map_raw<F, A, R, I>(
        &self,
        f: F,
        items: I,
        chunksize: Option<usize>,
    ) -> std::result::Result<Result<Vec<R>>, (F, Vec<A>)>
    where
        F: Fn(A) -> R + 'static,
        I: Iterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let (Some(sa), Some(sr)) = (raw::raw_size::<A>(), raw::raw_size::<R>()) else {
            return Err((f, self.collect_input(items)));
        };
        let chunks = match chunksize.or(self.chunksize) {
            Some(c) => ZcChunks::Fixed(c.max(1) as u64),
            None => ZcChunks::Guided {
                workers: self.processes as u64,
            },
        };
        let mut items = items;
        // An iterator that knows its length is written straight into the
        // arena while the first chunks run; any other is collected first,
        // as the ring path would.
        let (n, collected) = match items.size_hint() {
            (lo, Some(hi)) if lo == hi => (lo, None),
            _ => {
                let v = self.collect_input(&mut items);
                (v.len(), Some(v))
            }
        };
        let give_up = |collected: Option<Vec<A>>, items: I| match collected {
            Some(v) => v,
            None => self.collect_input(items),
        };
        if n < RAW_ARENA_MIN {
            return Err((f, give_up(collected, items)));
        }
        let (Some(in_bytes), Some(out_bytes)) = (n.checked_mul(sa), n.checked_mul(sr)) else {
            return Err((f, give_up(collected, items)));
        };
        let Ok(a) = self.arena(in_bytes) else {
            return Err((f, give_up(collected, items)));
        };
        let b = if sa == sr {
            None
        } else {
            match self.arena(out_bytes) {
                Ok(b) => Some(b),
                Err(_) => {
                    self.give_arenas(a, None);
                    return Err((f, give_up(collected, items)));
                }
            }
        };
        let task = TaskRef::of_entry(RawDesc::<F, A, R>::ELEMENTS, self.key);
        let input = match collected {
            Some(v) => {
                write_vec(&a, &v);
                raw::give_back(v, &self.spare);
                None
            }
            None => Some(&mut items),
        };
        let (out, extra) = self.map_in_arenas::<A, R, I>(task, &a, b.as_ref(), n, chunks, input);
        self.give_arenas(a, b);
        let Some(extra) = extra else {
            return Ok(out);
        };
        // The iterator gave more items than it said: the rest go through
        // the rings, after the ones in the arena.
        let mut out = match out {
            Ok(out) => out,
            Err(e) => return Ok(Err(e)),
        };
        let mut rest = extra;
        rest.extend(items);
        Ok(self.start_map(f, rest, chunksize).and_then(|(sink, m)| {
            let s2 = Arc::clone(&sink);
            let (core, _) = self.shared.wait_until(&move |_: &Core| s2.ready(), None);
            drop(core);
            out.extend(sink.take(Some(m))?);
            Ok(out)
        }))
    }

    /// Maps `n` items in arena `a` (results in `b`, or over the items),
    /// and copies the results out as chunks come back. With `input`, the
    /// items are written into `a` first, while the first chunks already
    /// run: chunks go out over the items written so far (`Fill`), sent by
    /// a step of the pool every `n / 16` items (at least 16 Ki), so the
    /// workers start after the first of those rather than after the last.
    /// Without, `a` holds them already. Returns the results, and the items
    /// past `n` if the iterator has more than it said.
    fn map_in_arenas<A: 'static, R: 'static, I: Iterator<Item = A>>(
        &self,
        task: TaskRef,
        a: &Arc<Segment>,
        b: Option<&Arc<Segment>>,
        n: usize,
        chunks: ZcChunks,
        input: Option<&mut I>,
    ) -> (Result<Vec<R>>, Option<Vec<A>>) {
        let fill = Arc::new(Fill::default());
        if input.is_none() {
            fill.finish(n as u64);
        }
        let sink = match self.start_zc(task, a, b, n, chunks, Some(Arc::clone(&fill)), None) {
            Ok(sink) => sink,
            Err(e) => return (Err(e), None),
        };
        let (written, extra) = match input {
            Some(items) => write_streamed(self, a, n, &fill, items),
            None => (n, None),
        };
        (self.copy_out(&sink, &fill, a, b, written), extra)
    }

    /// Waits for the map and copies its `n` results into a new `Vec`: the
    /// ones whose chunks are back while the rest run (in steps of an
    /// eighth, at least 32 Ki results), then the rest.
    fn copy_out<R: 'static>(
        &self,
        sink: &Arc<Collect<()>>,
        fill: &Arc<Fill>,
        a: &Arc<Segment>,
        b: Option<&Arc<Segment>>,
        n: usize,
    ) -> Result<Vec<R>> {
        let from = b.unwrap_or(a);
        let size = std::mem::size_of::<R>();
        let step = (n as u64 / 8).max(32 * 1024);
        let mut out = raw::big_vec::<R>(n);
        let mut copied = 0u64;
        let not_raw = || Error::new(ErrorKind::Protocol, "results not raw");
        loop {
            let (s2, f2) = (Arc::clone(sink), Arc::clone(fill));
            let (core, _) = self.shared.wait_until(
                &move |_: &Core| s2.ready() || f2.done() >= copied + step,
                None,
            );
            // Read under the lock: it orders the workers' writes of these
            // results before our reads (`Fill::done`).
            let done = fill.done().min(n as u64);
            drop(core);
            if sink.ready() {
                break;
            }
            let (at, len) = (copied as usize * size, (done - copied) as usize * size);
            if !raw::extend_from_raw(&mut out, arena_range(from, at, len)) {
                return Err(not_raw());
            }
            copied = done;
        }
        sink.take(None)?;
        // A worker that shrank a segment under us: what we read is zeros,
        // not results.
        a.check_intact()?;
        if let Some(b) = b {
            b.check_intact()?;
        }
        let (at, len) = (copied as usize * size, (n - copied as usize) * size);
        if !raw::extend_from_raw(&mut out, arena_range(from, at, len)) {
            return Err(not_raw());
        }
        Ok(out)
    }
}

/// Writes up to `n` items of `items` into arena `a`, publishing them to
/// the map (`fill`) every `n / 16` items: how many there were, and the
/// items past `n` if the iterator has more than it said.
fn write_streamed<A: 'static, I: Iterator<Item = A>>(
    pool: &Pool,
    a: &Segment,
    n: usize,
    fill: &Fill,
    items: &mut I,
) -> (usize, Option<Vec<A>>) {
    // Should the iterator panic, the chunks written go out and the job
    // ends; the panic goes on to the caller, as from the ring path's
    // collect (but items sent before it may have run).
    let guard = FillGuard(fill, pool);
    let every = (n / 16).max(16 * 1024);
    let size = std::mem::size_of::<A>();
    let mut block: Vec<A> = Vec::with_capacity(BLOCK);
    let mut at = 0;
    let mut published = 0;
    while at < n {
        block.clear();
        block.extend(items.by_ref().take(BLOCK.min(n - at)));
        if block.is_empty() {
            break;
        }
        copy_in_at(a, at * size, raw::raw_bytes(&block).expect("A crosses raw"));
        at += block.len();
        if at - published >= every && at < n {
            fill.publish(at as u64);
            published = at;
            pool.shared.nudge();
        }
    }
    std::mem::forget(guard);
    fill.finish(at as u64);
    let extra: Vec<A> = if at == n {
        items.by_ref().take(1).collect()
    } else {
        Vec::new()
    };
    (at, (!extra.is_empty()).then_some(extra))
}

/// Ends a map's input at what was written if the writer unwinds (the
/// input iterator panicked), so that its job completes.
struct FillGuard<'a>(&'a Fill, &'a Pool);

impl Drop for FillGuard<'_> {
    fn drop(&mut self) {
        let (written, _) = self.0.limit();
        self.0.finish(written);
        self.1.kick();
    }
}

/// Copies `items` into the start of `arena`.
fn write_vec<A: 'static>(arena: &Segment, items: &Vec<A>) {
    let bytes = raw::raw_bytes(items).expect("A crosses raw");
    copy_in_at(arena, 0, bytes);
}
