//! The zero-copy maps: `Pool::map_into`, `map_elements`, `map_in_place`,
//! their `SharedArray` forms, and `map_slice` with its reused arena; how
//! such a map cuts its elements into chunks; and [`ShmVec`], the buffer
//! they work on (`shm_vec.rs`). Only chunk descriptors cross the rings.

mod claim;
mod raw_map;
mod shm_vec;

use std::sync::Arc;

use bytemuck::Pod;

pub(crate) use self::claim::{run_claims, worker_cell, ClaimSlot, Claims};
use self::shm_vec::copy_in_at;
pub use self::shm_vec::ShmVec;
use super::core::Core;
use super::jobs::{ClaimTask, Collect, Next, Source, ZcTask};
use super::wire::ZcDesc;
use super::Pool;
use crate::error::{Error, ErrorKind, Result};
use crate::segment::Segment;
use crate::shared::SharedArray;
use crate::task::TaskRef;

impl Pool {
    /// How a zero-copy map cuts `0..n`: the user's fixed `chunksize`, or
    /// guided chunks (see [`ZcChunks`]).
    fn zc_chunks(&self) -> ZcChunks {
        match self.chunksize {
            Some(c) => ZcChunks::Fixed(c as u64),
            None => ZcChunks::Guided {
                workers: self.processes as u64,
            },
        }
    }

    fn run_zc(
        &self,
        task: TaskRef,
        input: &Arc<Segment>,
        output: Option<&Arc<Segment>>,
        n: usize,
    ) -> Result<()> {
        self.run_zc_with(task, input, output, n, self.zc_chunks())
    }

    /// [`run_zc`](Pool::run_zc) cut into `chunks`.
    fn run_zc_with(
        &self,
        task: TaskRef,
        input: &Arc<Segment>,
        output: Option<&Arc<Segment>>,
        n: usize,
        chunks: ZcChunks,
    ) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let claim = self.claim_mode(n, chunks);
        let slot = claim.as_ref().map(|c| Arc::clone(&c.slot));
        let sink = self.start_zc(task, input, output, n, chunks, None, claim, u64::MAX)?;
        self.finish_zc(&sink, input, output)?;
        slot.map_or(Ok(()), |s| s.check_done(n as u64))
    }

    /// A map of `n` elements is self-scheduled (its workers claim their
    /// chunks, `claim.rs`) when its length fits the progress word's item
    /// offset and a claim cell is free; else the parent hands out chunks.
    fn claim_mode(&self, n: usize, chunks: ZcChunks) -> Option<ClaimMode> {
        if n as u64 > u64::from(u32::MAX) {
            return None;
        }
        // Tiny maps wake fewer workers: each of them would find ≈ nothing
        // to claim.
        let workers = self.processes.min(n.div_ceil(64)).max(1) as u32;
        Some(ClaimMode {
            slot: self.claims.take()?,
            sent: 0,
            workers,
            fixed: match chunks {
                ZcChunks::Fixed(c) => c,
                ZcChunks::Guided { .. } => 0,
            },
        })
    }

    /// Submits a zero-copy map of `n` elements (at most `n`, and only
    /// those written so far, while `fill` says the input is being
    /// written); [`finish_zc`](Pool::finish_zc) waits for it. With
    /// `claim` (never with `fill`), the workers claim the chunks. Element
    /// `i` lies at `i % window` of the segments (`u64::MAX`: at `i`), and
    /// no chunk crosses a multiple of `window` (see `raw_map.rs`).
    #[allow(clippy::too_many_arguments)]
    fn start_zc(
        &self,
        task: TaskRef,
        input: &Arc<Segment>,
        output: Option<&Arc<Segment>>,
        n: usize,
        chunks: ZcChunks,
        fill: Option<Arc<Fill>>,
        claim: Option<ClaimMode>,
        window: u64,
    ) -> Result<Arc<Collect<()>>> {
        debug_assert!(claim.is_none() || fill.is_none());
        debug_assert!(window > 0 && (window == u64::MAX || fill.is_some()));
        let source = ZcSource {
            window,
            next: 0,
            n: n as u64,
            chunks,
            ns_per_item: None,
            fill,
            written_all: false,
            back: std::collections::BTreeMap::new(),
            done: 0,
            task,
            input: Arc::clone(input),
            output: output.cloned(),
            claim,
        };
        let sink = Collect::<()>::new(true);
        self.submit_job(Box::new(source), sink.clone(), usize::MAX, usize::MAX)?;
        Ok(sink)
    }

    /// Waits for the map [`start_zc`](Pool::start_zc) submitted, driving
    /// the pool meanwhile.
    fn finish_zc(
        &self,
        sink: &Arc<Collect<()>>,
        input: &Arc<Segment>,
        output: Option<&Arc<Segment>>,
    ) -> Result<()> {
        let s2 = Arc::clone(sink);
        let (core, _) = self.shared.wait_until(&move |_: &Core| s2.ready(), None);
        drop(core);
        sink.take(None)?;
        // A worker that shrank a segment under us: what we read back is
        // zeros, not results.
        input.check_intact()?;
        output.map_or(Ok(()), |o| o.check_intact())
    }

    /// Zero-copy parallel map: `kernel(input_chunk, output_chunk)` over
    /// whole chunks of two [`ShmVec`]s, in the workers. Only chunk
    /// descriptors cross the rings; the kernel sees slices, so the compiler
    /// vectorises it. Returns when every chunk is done (or lost with a dead
    /// worker, whose error is returned): until then nothing else touches
    /// `output`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if the lengths differ; otherwise as
    /// [`map`](Pool::map) (a panic names the first element of its chunk).
    ///
    /// ```
    /// fn affine(x: &[f64], y: &mut [f64]) {
    ///     for (y, x) in y.iter_mut().zip(x) { *y = 2.0 * x + 1.0; }
    /// }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let x = multiproc::ShmVec::from_slice(&[0.0, 1.0, 2.0])?;
    ///     let mut y = multiproc::ShmVec::zeroed(3)?;
    ///     pool.map_into(affine, &x, &mut y)?;
    ///     assert_eq!(&y[..], &[1.0, 3.0, 5.0]);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_into<F, T, U>(
        &self,
        kernel: F,
        input: &ShmVec<T>,
        output: &mut ShmVec<U>,
    ) -> Result<()>
    where
        F: Fn(&[T], &mut [U]) + 'static,
        T: Pod,
        U: Pod,
    {
        self.map_segment_into(
            &kernel,
            input.segment(),
            input.len(),
            output.segment(),
            output.len(),
        )
    }

    /// The one body of [`map_into`](Pool::map_into) and
    /// [`map_shared_into`](Pool::map_shared_into): `kernel` over `input`'s
    /// `n_in` elements into `output`'s `n_out`.
    fn map_segment_into<F, T, U>(
        &self,
        _kernel: &F,
        input: &Arc<Segment>,
        n_in: usize,
        output: &Arc<Segment>,
        n_out: usize,
    ) -> Result<()>
    where
        F: Fn(&[T], &mut [U]) + 'static,
        T: Pod,
        U: Pod,
    {
        same_len(n_in, n_out)?;
        let task = TaskRef::of_entry(ZcDesc::<F, T, U>::INTO, self.key);
        self.run_zc(task, input, Some(output), n_in)
    }

    /// Zero-copy element-wise map: `output[i] = f(input[i])`, in the
    /// workers, chunk by chunk (the loop is compiled with `f` inlined, so it
    /// vectorises).
    ///
    /// # Errors
    /// As [`map_into`](Pool::map_into).
    ///
    /// ```
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let x = multiproc::ShmVec::from_slice(&[1u32, 2, 3])?;
    ///     let mut y = multiproc::ShmVec::<u64>::zeroed(3)?;
    ///     pool.map_elements(|v: u32| u64::from(v) << 32, &x, &mut y)?;
    ///     assert_eq!(y[2], 3 << 32);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_elements<F, T, U>(
        &self,
        f: F,
        input: &ShmVec<T>,
        output: &mut ShmVec<U>,
    ) -> Result<()>
    where
        F: Fn(T) -> U + 'static,
        T: Pod,
        U: Pod,
    {
        let _ = &f;
        same_len(input.len(), output.len())?;
        let task = TaskRef::of_entry(ZcDesc::<F, T, U>::ELEMENTS, self.key);
        self.run_zc(task, input.segment(), Some(output.segment()), input.len())
    }

    /// Zero-copy in-place map: `kernel(chunk)` over whole chunks of `data`,
    /// in the workers.
    ///
    /// # Errors
    /// As [`map_into`](Pool::map_into).
    ///
    /// ```
    /// fn scale(xs: &mut [f32]) { for x in xs { *x *= 0.5; } }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let mut v = multiproc::ShmVec::from_slice(&[2.0f32, 4.0])?;
    ///     pool.map_in_place(scale, &mut v)?;
    ///     assert_eq!(&v[..], &[1.0, 2.0]);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_in_place<F, T>(&self, kernel: F, data: &mut ShmVec<T>) -> Result<()>
    where
        F: Fn(&mut [T]) + 'static,
        T: Pod,
    {
        self.map_segment_in_place(&kernel, data.segment(), data.len())
    }

    /// The one body of [`map_in_place`](Pool::map_in_place) and
    /// [`map_shared_in_place`](Pool::map_shared_in_place): `kernel` over
    /// the `n` elements of `data`.
    fn map_segment_in_place<F, T>(&self, _kernel: &F, data: &Arc<Segment>, n: usize) -> Result<()>
    where
        F: Fn(&mut [T]) + 'static,
        T: Pod,
    {
        let task = TaskRef::of_entry(ZcDesc::<F, T, T>::IN_PLACE, self.key);
        self.run_zc(task, data, None, n)
    }

    /// [`map_in_place`](Pool::map_in_place) over a [`SharedArray`], whose
    /// clones (here and in other processes) the pool cannot see: hence
    /// `unsafe`. Prefer a [`ShmVec`], which has no such clones.
    ///
    /// # Safety
    /// While the call runs, nothing else may read or write any element of
    /// `data`: no other handle in this process, no other process — the same
    /// contract as [`SharedArray::as_mut_slice`].
    ///
    /// # Errors
    /// As [`map_into`](Pool::map_into).
    ///
    /// ```
    /// fn bump(xs: &mut [u32]) { for x in xs { *x += 1; } }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let mut a = multiproc::SharedArray::from_slice(&[1u32, 2, 3])?;
    ///     // SAFETY: `a` has no other handle, so only the pool touches it.
    ///     unsafe { pool.map_shared_in_place(bump, &mut a)? };
    ///     assert_eq!(a.to_vec(), [2, 3, 4]);
    ///     Ok(())
    /// }
    /// ```
    #[allow(unsafe_code)]
    pub unsafe fn map_shared_in_place<F, T>(
        &self,
        kernel: F,
        data: &mut SharedArray<T>,
    ) -> Result<()>
    where
        F: Fn(&mut [T]) + 'static,
        T: Pod,
    {
        self.map_segment_in_place(&kernel, data.segment(), data.len())
    }

    /// [`map_into`](Pool::map_into) from one [`SharedArray`] into another.
    ///
    /// # Safety
    /// While the call runs, nothing else may write `input` or read or write
    /// `output` (no other handle here, no other process).
    ///
    /// # Errors
    /// As [`map_into`](Pool::map_into).
    ///
    /// ```
    /// fn double(x: &[f64], y: &mut [f64]) { for (y, x) in y.iter_mut().zip(x) { *y = 2.0 * x; } }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let x = multiproc::SharedArray::from_slice(&[1.0, 2.0])?;
    ///     let mut y = multiproc::SharedArray::<f64>::new(2)?;
    ///     // SAFETY: no other handles exist.
    ///     unsafe { pool.map_shared_into(double, &x, &mut y)? };
    ///     assert_eq!(y.to_vec(), [2.0, 4.0]);
    ///     Ok(())
    /// }
    /// ```
    #[allow(unsafe_code)]
    pub unsafe fn map_shared_into<F, T, U>(
        &self,
        kernel: F,
        input: &SharedArray<T>,
        output: &mut SharedArray<U>,
    ) -> Result<()>
    where
        F: Fn(&[T], &mut [U]) + 'static,
        T: Pod,
        U: Pod,
    {
        self.map_segment_into(
            &kernel,
            input.segment(),
            input.len(),
            output.segment(),
            output.len(),
        )
    }

    /// Element-wise map over a plain slice: the items are copied into a
    /// pool-owned, reused shared-memory arena, mapped there by the
    /// workers, and copied out, all three at once. The arena is a window
    /// of at most 8 MiB (of items, and of results when they are not as
    /// wide as the items) that a longer slice runs through, so a slice of
    /// any length needs no more shared memory than that. For data that
    /// lives in shared memory anyway, [`map_elements`](Pool::map_elements)
    /// skips both copies.
    ///
    /// Python counterpart: `pool.map(f, items)` over a list of numbers.
    ///
    /// # Errors
    /// As [`map_into`](Pool::map_into); [`ErrorKind::NoSpace`] if the
    /// arena cannot be made (a `/dev/shm` without 8 MiB free).
    ///
    /// ```
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2)?;
    ///     let out = pool.map_slice(|x: f64| x.sqrt(), &[4.0, 9.0, 16.0])?;
    ///     assert_eq!(out, [2.0, 3.0, 4.0]);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_slice<F, T, U>(&self, f: F, input: &[T]) -> Result<Vec<U>>
    where
        F: Fn(T) -> U + 'static,
        T: Pod,
        U: Pod,
    {
        let _ = &f;
        let n = input.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (sa, sr) = (std::mem::size_of::<T>(), std::mem::size_of::<U>());
        // A long slice runs through a window of the arenas: at most
        // `WINDOW_BYTES` of shared memory each, however long the slice.
        let w = raw_map::window_len(n, sa, sr);
        // Results as wide as the items overwrite them: one arena, half the
        // shared memory to create (the first call) and to attach.
        let in_place = sa == sr;
        let a = self.arena(w * sa)?;
        let b = if in_place {
            None
        } else {
            match self.arena(w * sr) {
                Ok(b) => Some(b),
                Err(e) => {
                    self.give_arenas(a, None);
                    return Err(e);
                }
            }
        };
        let entry = if in_place {
            ZcDesc::<F, T, U>::ELEMENTS_IN_PLACE
        } else {
            ZcDesc::<F, T, U>::ELEMENTS
        };
        let task = TaskRef::of_entry(entry, self.key);
        let items: &[u8] = bytemuck::cast_slice(input);
        let mut next = 0;
        let mut write = |arena: &Segment, at: usize, count: usize| {
            copy_in_at(arena, at, &items[next * sa..(next + count) * sa]);
            next += count;
            count
        };
        // One pass over the output: no zeroing first, huge pages for a
        // large one (fresh memory faults in 2 MiB at a time).
        let mut out = crate::pool::raw::big_vec::<U>(if sr == 0 { 0 } else { n });
        let mut read = |bytes: &[u8]| {
            if sr != 0 {
                out.extend_from_slice(bytemuck::cast_slice(bytes));
            }
            true
        };
        let mapped = self.map_windowed(
            task,
            (&a, b.as_ref()),
            n,
            (w, sa, sr),
            self.zc_chunks(),
            &mut write,
            &mut read,
        );
        self.give_arenas(a, b);
        mapped?;
        if sr == 0 {
            return Ok(vec![U::zeroed(); n]);
        }
        Ok(out)
    }

    /// Gives arenas back for the next call.
    fn give_arenas(&self, a: Arc<Segment>, b: Option<Arc<Segment>>) {
        let mut arenas = self.arenas.lock().unwrap_or_else(|p| p.into_inner());
        arenas.push(a);
        arenas.extend(b);
    }

    /// A free arena of at least `bytes`, reused when possible.
    fn arena(&self, bytes: usize) -> Result<Arc<Segment>> {
        let mut arenas = self.arenas.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = arenas.iter().position(|s| s.len() >= bytes) {
            return Ok(arenas.swap_remove(i));
        }
        // Grow: drop the smallest and make a bigger one, with 1/8 of
        // headroom (a call a little longer reuses it). Every byte of a
        // segment is allocated and zeroed when it is made (its space is
        // reserved), so headroom is paid on the first call: 1.5x made a
        // first `map_slice` of 1e7 `f64` create 240 MB of shared memory.
        if arenas.len() >= 2 {
            if let Some(i) = (0..arenas.len()).min_by_key(|&i| arenas[i].len()) {
                arenas.swap_remove(i);
            }
        }
        drop(arenas);
        Ok(Arc::new(Segment::create(
            bytes.saturating_add(bytes / 8).max(4096),
        )?))
    }
}

fn same_len(a: usize, b: usize) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidState,
            format!("input has {a} elements, output {b}"),
        ))
    }
}

/// Chunks of a zero-copy map.
struct ZcSource {
    /// Element `i` lies at `i % window` of the segments (`u64::MAX`: the
    /// map's elements are the segments' own).
    window: u64,
    next: u64,
    n: u64,
    chunks: ZcChunks,
    /// What an item cost in the chunk that came back last (the worker's
    /// own clock), once one has.
    ns_per_item: Option<f64>,
    /// How far the input is written, and the results done (a number
    /// `map`, `raw_map.rs`).
    fill: Option<Arc<Fill>>,
    /// `fill` said the writing is over (`n` is final).
    written_all: bool,
    /// Chunks back beyond `done` (first → end), to move `done` on.
    back: std::collections::BTreeMap<u64, u64>,
    /// Elements `[0, done)` are back.
    done: u64,
    task: TaskRef,
    input: Arc<Segment>,
    output: Option<Arc<Segment>>,
    /// `Some`: self-scheduled, one descriptor per worker.
    claim: Option<ClaimMode>,
}

/// A self-scheduled map's descriptors.
struct ClaimMode {
    slot: Arc<ClaimSlot>,
    /// Descriptors sent.
    sent: u32,
    /// Descriptors to send at most (one per worker).
    workers: u32,
    /// The user's `chunksize`, or 0 for guided chunks.
    fixed: u64,
}

impl ClaimMode {
    /// Nothing more to send: a descriptor per worker is out, or every
    /// element is claimed already.
    fn done(&self, n: u64) -> bool {
        self.sent >= self.workers || (self.sent > 0 && self.slot.exhausted(n))
    }
}

/// Chunk sizes of a zero-copy map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZcChunks {
    /// `chunksize` elements each (the user's choice).
    Fixed(u64),
    /// Guided self-scheduling: each chunk is the remaining elements over
    /// twice the workers, at least [`ZC_MIN_CHUNK`]. Early chunks are large
    /// (few descriptors for a big map); late ones small, so the workers
    /// finish together: a chunk queued behind a busy worker's running one
    /// (DEPTH) cannot move to an idle worker, and with guided chunks the
    /// last such chunk is a small one.
    Guided { workers: u64 },
}

/// Smallest guided chunk: 4 Ki elements (64 KiB of `f64` read and
/// written), several µs even of a memory-bound map, against ≈ 1 µs of cost
/// per chunk.
const ZC_MIN_CHUNK: u64 = 4 * 1024;

/// Smallest guided chunk in time, once the items' cost is known: elements
/// that cost more than this over [`ZC_MIN_CHUNK`] get smaller last chunks
/// (down to [`ZC_MIN_ITEMS`]), so that the workers still finish together
/// when the last items are the expensive ones. A chunk much shorter than
/// this would end before the parent, asleep on the doorbell, could queue
/// the next one (a wake costs tens of µs here).
const ZC_MIN_NS: f64 = 100_000.0;

/// Smallest guided chunk of expensive elements.
const ZC_MIN_ITEMS: u64 = 64;

impl ZcChunks {
    /// Elements of the next chunk when `left` (> 0) remain, items having
    /// cost `ns_per_item` each lately (if known).
    fn next(self, left: u64, ns_per_item: Option<f64>) -> u64 {
        let want = match self {
            ZcChunks::Fixed(c) => c,
            ZcChunks::Guided { workers } => {
                let floor = match ns_per_item {
                    Some(ns) if ns > 0.0 => {
                        ((ZC_MIN_NS / ns) as u64).clamp(ZC_MIN_ITEMS, ZC_MIN_CHUNK)
                    }
                    _ => ZC_MIN_CHUNK,
                };
                left.div_ceil(2 * workers.max(1)).max(floor)
            }
        };
        want.clamp(1, left)
    }
}

/// How far the parent has written a map's input into its arena while its
/// first chunks already run (`raw_map.rs`): chunks go out only over items
/// written.
#[derive(Default)]
pub(super) struct Fill {
    /// Items written.
    written: std::sync::atomic::AtomicU64,
    /// Writing is over: `written` is the map's final length.
    over: std::sync::atomic::AtomicBool,
    /// Items `[0, done)` are mapped: their chunks came back.
    done: std::sync::atomic::AtomicU64,
}

impl Fill {
    /// Items `[0, done)` are mapped, and no worker writes them any more
    /// (their chunks came back). Read under the pool's lock, or after it:
    /// the lock orders it after the result frames that moved it.
    pub(super) fn done(&self) -> u64 {
        // SYNC: Relaxed; partner: the Relaxed store in `ZcSource::task_done`,
        // made under the pool's lock. The reader takes that lock (it reads
        // this in a `wait_until` condition, or after one returned), so the
        // lock's release/acquire orders the workers' writes, which the
        // result frames published to the locker, before our reads.
        self.done.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Items `[0, written)` are in the arena.
    pub(super) fn publish(&self, written: u64) {
        // SYNC: Release; partner: the Acquire loads in `limit`. The items'
        // bytes are in the shared mapping before a chunk over them can be
        // sent (its frame goes through the ring, whose own release
        // publishes them to the worker).
        self.written
            .store(written, std::sync::atomic::Ordering::Release);
    }

    /// Writing is over, with `written` items in all.
    pub(super) fn finish(&self, written: u64) {
        self.publish(written);
        // SYNC: Release; partner: the Acquire load in `limit`, which then
        // reads the final `written` stored just before.
        self.over.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Items written so far, and whether that is all of them.
    fn limit(&self) -> (u64, bool) {
        // SYNC: Acquire; partners: the Release stores in `finish` and
        // `publish`. `over` first: once it reads true, `written` is final.
        let over = self.over.load(std::sync::atomic::Ordering::Acquire);
        (
            self.written.load(std::sync::atomic::Ordering::Acquire),
            over,
        )
    }
}

impl ZcSource {
    /// Elements that may be sent now: `n`, or while the input is still
    /// being written, what is written (and `n` shrinks to the final
    /// length once writing is over).
    fn limit(&mut self) -> u64 {
        if let Some(fill) = self.fill.as_ref().filter(|_| !self.written_all) {
            let (written, over) = fill.limit();
            if over {
                self.n = self.n.min(written);
                self.written_all = true;
            } else {
                return written.min(self.n);
            }
        }
        self.n
    }
}

impl Source for ZcSource {
    fn next(&mut self, _frame: &mut Vec<u8>, job: u64, _soft: usize, _hard: usize) -> Next {
        if let Some(c) = &mut self.claim {
            if c.done(self.n) {
                return Next::Done;
            }
            if c.sent == 0 {
                c.slot.arm(job);
            }
            c.sent += 1;
            return Next::Zc(ZcTask {
                first: 0,
                count: self.n,
                at: 0,
                task: self.task,
                input: Arc::clone(&self.input),
                output: self.output.clone(),
                claim: Some(ClaimTask {
                    slot: Arc::clone(&c.slot),
                    workers: c.workers,
                    fixed: c.fixed,
                }),
            });
        }
        let limit = self.limit();
        if self.next >= limit {
            if self.fill.is_none() || self.written_all {
                return Next::Done;
            }
            // `ready` said there was a chunk; written only grows.
            return Next::Failed(Error::new(
                ErrorKind::Protocol,
                "a chunk was asked for before its items were written",
            ));
        }
        let first = self.next;
        // A window's chunks are sized by what a window holds, and end
        // where it wraps.
        let at = first % self.window;
        let count = self
            .chunks
            .next((self.n - first).min(self.window), self.ns_per_item)
            .min(limit - first)
            .min(self.window - at);
        self.next += count;
        Next::Zc(ZcTask {
            first,
            count,
            at,
            task: self.task,
            input: Arc::clone(&self.input),
            output: self.output.clone(),
            claim: None,
        })
    }

    fn bulk(&self) -> bool {
        true
    }

    fn idle_only(&self) -> bool {
        self.claim.is_some()
    }

    fn is_done(&self) -> bool {
        self.claim.as_ref().is_some_and(|c| c.done(self.n))
    }

    fn task_done(&mut self, first: u64, items: u64, busy_ns: u64) {
        if items > 0 && busy_ns > 0 {
            self.ns_per_item = Some(busy_ns as f64 / items as f64);
        }
        let Some(fill) = &self.fill else {
            return;
        };
        self.back.insert(first, first.saturating_add(items));
        let before = self.done;
        while let Some(end) = self.back.remove(&self.done) {
            self.done = end;
        }
        if self.done != before {
            // SYNC: Relaxed, under the pool's lock; partner: the load in
            // `Fill::done` (see there).
            fill.done
                .store(self.done, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn ready(&self) -> bool {
        self.written_all
            || self.fill.as_ref().is_none_or(|fill| {
                let (written, over) = fill.limit();
                over || written > self.next
            })
    }
}

#[cfg(test)]
mod zc_chunk_tests {
    use super::{ZcChunks, ZC_MIN_CHUNK, ZC_MIN_ITEMS};

    /// The chunks `c` cuts `0..n` into, items of unknown cost.
    fn cut(c: ZcChunks, n: u64) -> Vec<u64> {
        cut_costing(c, n, None)
    }

    /// The chunks `c` cuts `0..n` into, items costing `ns` each.
    fn cut_costing(c: ZcChunks, n: u64, ns: Option<f64>) -> Vec<u64> {
        let (mut left, mut out) = (n, Vec::new());
        while left > 0 {
            let k = c.next(left, ns);
            assert!(k >= 1 && k <= left, "chunk {k} of {left} left");
            out.push(k);
            left -= k;
        }
        out
    }

    #[test]
    fn guided_chunks_cover_everything_shrink_and_respect_the_floor() {
        for workers in [1, 2, 3, 16, 64] {
            for n in [1, 7, 4096, 4097, 100_000, 1_000_000, 100_000_000] {
                let chunks = cut(ZcChunks::Guided { workers }, n);
                assert_eq!(chunks.iter().sum::<u64>(), n);
                assert!(chunks.windows(2).all(|w| w[0] >= w[1]), "{chunks:?}");
                // Only the last chunk may be under the floor.
                let body = &chunks[..chunks.len() - 1];
                assert!(body.iter().all(|&k| k >= ZC_MIN_CHUNK), "{chunks:?}");
                // The first chunk leaves work for every other worker.
                assert!(chunks[0] <= n.div_ceil(2 * workers).max(ZC_MIN_CHUNK));
            }
        }
        // 1e8 over 16 workers: a few hundred descriptors, not thousands.
        let chunks = cut(ZcChunks::Guided { workers: 16 }, 100_000_000);
        assert!(chunks.len() < 400, "{} chunks", chunks.len());
    }

    #[test]
    fn expensive_items_get_smaller_last_chunks_and_cheap_ones_do_not() {
        let g = ZcChunks::Guided { workers: 2 };
        let n = 200_000;
        // Cheap (1 ns) or of unknown cost: the floor is the usual one.
        assert_eq!(cut_costing(g, n, Some(1.0)), cut(g, n));
        assert_eq!(cut_costing(g, n, Some(0.0)), cut(g, n));
        // 1 µs an item: the last chunks are ~100 µs each, not 4 ms.
        let dear = cut_costing(g, n, Some(1_000.0));
        assert_eq!(dear.iter().sum::<u64>(), n);
        assert_eq!(dear[0], cut(g, n)[0], "the first chunks are as large");
        let last_full = dear[dear.len() - 2];
        assert!((ZC_MIN_ITEMS..=200).contains(&last_full), "{dear:?}");
        // Never under the item floor, however dear.
        let dearest = cut_costing(g, n, Some(1e9));
        assert!(dearest[..dearest.len() - 1]
            .iter()
            .all(|&k| k >= ZC_MIN_ITEMS));
        // A user's chunk size is kept whatever the cost.
        assert_eq!(cut_costing(ZcChunks::Fixed(3), 7, Some(1e6)), [3, 3, 1]);
    }

    #[test]
    fn fixed_chunks_are_the_users_size() {
        assert_eq!(cut(ZcChunks::Fixed(3), 10), [3, 3, 3, 1]);
        assert_eq!(cut(ZcChunks::Fixed(100), 10), [10]);
    }
}
