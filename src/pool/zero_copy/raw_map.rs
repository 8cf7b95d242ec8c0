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

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::shm_vec::{arena_bytes, copy_in_at};
use super::{ZcChunks, ZC_MIN_CHUNK};
use crate::error::Result;
use crate::pool::raw;
use crate::pool::wire::RawDesc;
use crate::pool::Pool;
use crate::segment::Segment;
use crate::task::TaskRef;

/// A `map` of at least this many numbers goes through arenas: below it
/// the rings' small chunks spread the items over the workers better than
/// the arena's guided chunks (4 Ki items at least) would.
const RAW_ARENA_MIN: usize = 8 * ZC_MIN_CHUNK as usize;

/// Items written to the arena a block at a time (a cache-resident buffer).
const BLOCK: usize = 4096;

impl Pool {
    /// `map` through arenas when its items and results are primitive
    /// numbers and there are enough of them: `Ok` with the map's outcome.
    /// `Err` with the items, collected, when this path does not apply or
    /// the arenas cannot be had (a small `/dev/shm`: the rings need no
    /// more shared memory than they have); the ring path takes them.
    pub(in crate::pool) fn map_raw<F, A, R, I>(
        &self,
        items: I,
        chunksize: Option<usize>,
    ) -> std::result::Result<Result<Vec<R>>, Vec<A>>
    where
        F: Fn(A) -> R + 'static,
        I: Iterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let (Some(sa), Some(sr)) = (raw::raw_size::<A>(), raw::raw_size::<R>()) else {
            return Err(self.collect_input(items));
        };
        let chunks = match chunksize.or(self.chunksize) {
            Some(c) => ZcChunks::Fixed(c.max(1) as u64),
            None => ZcChunks::Guided {
                workers: self.processes as u64,
            },
        };
        let mut items = items;
        // An iterator that knows its length is written straight into the
        // arena; any other is collected first, as the ring path would.
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
            return Err(give_up(collected, items));
        }
        let (Some(in_bytes), Some(out_bytes)) = (n.checked_mul(sa), n.checked_mul(sr)) else {
            return Err(give_up(collected, items));
        };
        let Ok(a) = self.arena(in_bytes) else {
            return Err(give_up(collected, items));
        };
        let b = if sa == sr {
            None
        } else {
            match self.arena(out_bytes) {
                Ok(b) => Some(b),
                Err(_) => {
                    self.give_arenas(a, None);
                    return Err(give_up(collected, items));
                }
            }
        };
        let written = match collected {
            Some(v) => {
                write_vec(&a, &v);
                raw::give_back(v, &self.spare);
                n
            }
            None => match write_iter(&a, &mut items, n) {
                Ok(m) => m,
                // The iterator gave more items than it said: the ring path
                // takes them all, those in the arena first.
                Err(extra) => {
                    let mut all = raw::big_from_raw::<A>(arena_bytes(&a, in_bytes), n)
                        .expect("A crosses raw");
                    all.extend(extra);
                    all.extend(items);
                    self.give_arenas(a, b);
                    return Err(all);
                }
            },
        };
        let task = TaskRef::of_entry(RawDesc::<F, A, R>::ELEMENTS, self.key);
        let out = self
            .run_zc_with(task, &a, b.as_ref(), written, chunks)
            .and_then(|()| {
                let from = b.as_ref().unwrap_or(&a);
                raw::big_from_raw::<R>(arena_bytes(from, written * sr), written).ok_or_else(|| {
                    crate::error::Error::new(crate::error::ErrorKind::Protocol, "results not raw")
                })
            });
        self.give_arenas(a, b);
        Ok(out)
    }
}

/// Copies `items` into the start of `arena`.
fn write_vec<A: 'static>(arena: &Segment, items: &Vec<A>) {
    let bytes = raw::raw_bytes(items).expect("A crosses raw");
    copy_in_at(arena, 0, bytes);
}

/// Writes up to `n` items of `items` into the start of `arena`, a block
/// at a time: `Ok` with how many there were, or `Err` with the items past
/// `n` when the iterator has more than it said.
fn write_iter<A: 'static, I: Iterator<Item = A>>(
    arena: &Segment,
    items: &mut I,
    n: usize,
) -> std::result::Result<usize, Vec<A>> {
    let size = std::mem::size_of::<A>();
    let mut block: Vec<A> = Vec::with_capacity(BLOCK);
    let mut at = 0;
    while at < n {
        block.clear();
        block.extend(items.by_ref().take(BLOCK.min(n - at)));
        if block.is_empty() {
            return Ok(at);
        }
        copy_in_at(
            arena,
            at * size,
            raw::raw_bytes(&block).expect("A crosses raw"),
        );
        at += block.len();
    }
    let extra: Vec<A> = items.by_ref().take(1).collect();
    if extra.is_empty() {
        Ok(at)
    } else {
        Err(extra)
    }
}
