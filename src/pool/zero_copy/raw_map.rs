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

/// Most bytes of a map's items (and of its results, when they are not
/// written over the items) in shared memory at once: a longer map runs
/// through arenas of this size as through a window (`map_windowed`).
pub(super) const WINDOW_BYTES: usize = 8 << 20;

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
        // A long map runs through a window of the arenas (`WINDOW_BYTES`).
        let w = window_len(n, sa, sr);
        let Ok(a) = self.arena(w * sa) else {
            return Err((f, give_up(collected, items)));
        };
        let b = if sa == sr {
            None
        } else {
            match self.arena(w * sr) {
                Ok(b) => Some(b),
                Err(_) => {
                    self.give_arenas(a, None);
                    return Err((f, give_up(collected, items)));
                }
            }
        };
        let task = TaskRef::of_entry(RawDesc::<F, A, R>::ELEMENTS, self.key);
        let mut out = raw::big_vec::<R>(n);
        let mut read = |bytes: &[u8]| raw::extend_from_raw(&mut out, bytes);
        let arenas = (&a, b.as_ref());
        let (mapped, extra) = match collected {
            Some(v) => {
                let bytes = raw::raw_bytes(&v).expect("A crosses raw");
                let mut next = 0;
                let mut write = |arena: &Segment, at: usize, count: usize| {
                    copy_in_at(arena, at, &bytes[next * sa..(next + count) * sa]);
                    next += count;
                    count
                };
                let mapped =
                    self.map_windowed(task, arenas, n, (w, sa, sr), chunks, &mut write, &mut read);
                raw::give_back(v, &self.spare);
                (mapped, None)
            }
            None => {
                let mut block: Vec<A> = Vec::with_capacity(BLOCK);
                let mut write = |arena: &Segment, at: usize, count: usize| {
                    let mut wrote = 0;
                    while wrote < count {
                        block.clear();
                        block.extend(items.by_ref().take(BLOCK.min(count - wrote)));
                        if block.is_empty() {
                            break;
                        }
                        let bytes = raw::raw_bytes(&block).expect("A crosses raw");
                        copy_in_at(arena, at + wrote * sa, bytes);
                        wrote += block.len();
                    }
                    wrote
                };
                let mapped =
                    self.map_windowed(task, arenas, n, (w, sa, sr), chunks, &mut write, &mut read);
                // An iterator that said `n` and has more: the rest go
                // through the rings, after these.
                let extra: Vec<A> = match mapped {
                    Ok(written) if written == n => items.by_ref().take(1).collect(),
                    _ => Vec::new(),
                };
                (mapped, (!extra.is_empty()).then_some(extra))
            }
        };
        self.give_arenas(a, b);
        let out = mapped.map(|_| out);
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

    /// Maps the `n` items that `write` gives, `sa` bytes each, through
    /// arena `a` (the results, `sr` bytes each, in `b`, or over the
    /// items), handing each result's bytes to
    /// `read` in order; returns how many items there were (fewer than `n`
    /// if the input ran dry).
    ///
    /// Item `i` lies at element `i % w` of the arenas: a map longer than
    /// the window `w` runs through it, its items taking turns. The parent
    /// writes items while there is room (`write(arena, byte, count)`, which
    /// returns how many it wrote), publishing them to the map (`Fill`)
    /// every `w / 16` (at least 16 Ki) and making a step of the pool, so
    /// that their chunks run while it writes the next; then it waits for
    /// the next `w / 8` results (at least 32 Ki) and copies them out, which
    /// frees their places for the items `w` further on. A chunk goes out
    /// only over items written, and never crosses the window's end.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn map_windowed(
        &self,
        task: TaskRef,
        (a, b): (&Arc<Segment>, Option<&Arc<Segment>>),
        n: usize,
        (w, sa, sr): (usize, usize, usize),
        chunks: ZcChunks,
        write: &mut dyn FnMut(&Segment, usize, usize) -> usize,
        read: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<usize> {
        let w = w.clamp(1, n.max(1));
        let fill = Arc::new(Fill::default());
        let sink = self.start_zc(
            task,
            a,
            b,
            n,
            chunks,
            Some(Arc::clone(&fill)),
            None,
            w as u64,
        )?;
        // Should `write` panic (the input iterator), the items written go
        // out and the job ends; the panic goes on to the caller, as from
        // the ring path's collect (but items sent before it may have run).
        let guard = FillGuard(&fill, self);
        let every = (w / 16).max(16 * 1024).min(w);
        let step = (w / 8).max(32 * 1024).min(w);
        let (mut written, mut published, mut copied) = (0usize, 0usize, 0usize);
        let mut over = false;
        let from = b.unwrap_or(a);
        // Results `[copied, to)` out, split where the window wraps.
        let copy_out = |copied: usize, to: usize, read: &mut dyn FnMut(&[u8]) -> bool| {
            let mut i = copied;
            while i < to {
                let at = i % w;
                let len = (to - i).min(w - at);
                if !read(arena_range(from, at * sr, len * sr)) {
                    return Err(Error::new(ErrorKind::Protocol, "results not raw"));
                }
                i += len;
            }
            Ok(())
        };
        loop {
            // Items into the places whose results are out.
            let room = n.min(copied + w);
            while !over && written < room {
                let at = written % w;
                let count = (room - written).min(w - at).min(every);
                let wrote = write(a, at * sa, count);
                written += wrote;
                over = wrote < count || written == n;
                if !over && written - published >= every {
                    fill.publish(written as u64);
                    published = written;
                    self.shared.nudge();
                }
            }
            if over {
                // (Again at each step after the first: it only says what
                // it said.) The wait below sends the last chunks.
                fill.finish(written as u64);
            } else if published < written {
                fill.publish(written as u64);
                published = written;
                self.shared.nudge();
            }
            // Then the next results: a step of them, or the end.
            let target = (copied + step).min(written);
            let target = if target > copied {
                target as u64
            } else {
                u64::MAX
            };
            let (s2, f2) = (Arc::clone(&sink), Arc::clone(&fill));
            let (core, _) = self
                .shared
                .wait_until(&move |_: &Core| s2.ready() || f2.done() >= target, None);
            // Read under the lock: it orders the workers' writes of these
            // results before our reads (`Fill::done`).
            let done = (fill.done() as usize).min(written);
            drop(core);
            if sink.ready() {
                break;
            }
            copy_out(copied, done, read)?;
            copied = done;
        }
        std::mem::forget(guard);
        sink.take(None)?;
        // A worker that shrank a segment under us: what we read is zeros,
        // not results.
        a.check_intact()?;
        if let Some(b) = b {
            b.check_intact()?;
        }
        copy_out(copied, written, read)?;
        Ok(written)
    }
}

/// Elements a map's window holds (all `n` when they fit in
/// [`WINDOW_BYTES`]) for items of `sa` bytes and results of `sr`.
pub(super) fn window_len(n: usize, sa: usize, sr: usize) -> usize {
    n.min(WINDOW_BYTES / sa.max(sr).max(1)).max(1)
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
