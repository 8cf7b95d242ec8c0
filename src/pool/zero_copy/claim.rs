//! Self-scheduled zero-copy maps: the workers claim their chunks from a
//! counter they share, so no chunk ever waits queued behind a busy worker
//! and the parent hands out one descriptor per worker instead of one per
//! chunk (docs/ARCHITECTURE.md, Pool, "Zero-copy maps").
//!
//! The counter lives in a small control segment the pool makes on its
//! first such map: [`CLAIM_CELLS`] cache lines, one per map running at the
//! same time. A [`ClaimSlot`] holds one for as long as its map's job
//! exists; the job is removed only once every descriptor is back or lost
//! with its dead worker, so no worker still claims from a cell that is
//! handed to the next map. Each cell also names its job, which a worker
//! checks before it claims anything.
//!
//! A worker claims `[c, c + k)` by moving the counter from `c` to `c + k`
//! with one compare-exchange, runs it, and claims again until the counter
//! reaches the map's length. The chunk size is guided (what is left over
//! twice the workers) and bounded in time by the worker's own clock:
//! never under [`LO_NS`] of work (a claim is one contended atomic, ≈ 0.1–1
//! µs), never over [`HI_NS`] (a chunk that starts just where the items
//! get expensive overshoots by at most that many times the jump in cost).
//! The counter is written by the workers, so the parent trusts nothing in
//! it: a worker only ever computes on ranges it bounds-checks against its
//! mapping, and the parent checks, once every descriptor is back, that the
//! counter says all was claimed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::pool::wire::ItemFailure;
use crate::segment::{in_place, Line, Segment, Typed};

in_place! {
    /// One map's claim counter.
    pub(crate) struct ClaimCell {
        /// Elements `[0, next)` are claimed.
        next: AtomicU64,
        /// The job the cell serves now, written by the parent before the
        /// map's descriptors go out.
        job: AtomicU64,
    }
}

/// Cells in the control segment: maps of one pool that can be
/// self-scheduled at the same time (more fall back to chunks the parent
/// hands out).
pub(crate) const CLAIM_CELLS: usize = 64;

type Cells = [Line<ClaimCell>; CLAIM_CELLS];

/// Least work in one claimed chunk, once the worker knows what an element
/// costs.
const LO_NS: f64 = 10_000.0;
/// Most work in one claimed chunk.
const HI_NS: f64 = 200_000.0;
/// Most elements in a worker's first chunk, before it knows their cost.
const FIRST_MAX: u64 = 1024;

/// The pool's side: the control segment (made on first use) and its free
/// cells.
#[derive(Default)]
pub(crate) struct Claims {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    cells: Option<Typed<Cells>>,
    free: Vec<u32>,
}

impl Claims {
    /// A free cell; `None` when all are taken or the segment cannot be
    /// made (the map then goes out in chunks the parent hands out).
    pub(crate) fn take(&self) -> Option<Arc<ClaimSlot>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.cells.is_none() {
            let segment = Segment::create(std::mem::size_of::<Cells>()).ok()?;
            inner.cells = Some(Typed::new(Arc::new(segment)).ok()?);
            inner.free = (0..CLAIM_CELLS as u32).rev().collect();
        }
        let cells = inner.cells.clone()?;
        let cell = inner.free.pop()?;
        drop(inner);
        Some(Arc::new(ClaimSlot {
            cells,
            cell,
            pool: Arc::clone(&self.inner),
        }))
    }
}

/// One map's cell, given back when the last holder (its job's source, its
/// caller) lets go.
pub(crate) struct ClaimSlot {
    cells: Typed<Cells>,
    cell: u32,
    pool: Arc<Mutex<Inner>>,
}

impl ClaimSlot {
    fn cell(&self) -> &ClaimCell {
        &self.cells.get()[self.cell as usize].0
    }

    /// Readies the cell for job `job`, its counter at 0: before the map's
    /// first descriptor is sent.
    pub(crate) fn arm(&self, job: u64) {
        let c = self.cell();
        // SYNC: Relaxed: the descriptors that name this cell go out
        // through the rings after these stores, and a ring's publish
        // (Release, the worker's Acquire) orders them before the worker's
        // first look at the cell.
        c.job.store(job, Ordering::Relaxed);
        c.next.store(0, Ordering::Relaxed);
    }

    /// The control segment (sent to each worker once).
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        self.cells.segment()
    }

    /// Index of the cell in the segment.
    pub(crate) fn index(&self) -> u32 {
        self.cell
    }

    /// Whether every element of a map of `n` is claimed (a hint: workers
    /// write the counter).
    pub(crate) fn exhausted(&self, n: u64) -> bool {
        // SYNC: Relaxed: a hint for sending no more descriptors; the
        // results themselves are published by the workers' result frames.
        self.cell().next.load(Ordering::Relaxed) >= n
    }

    /// Once every descriptor of the map is back: `Err` unless the counter
    /// says all `n` elements were claimed (a worker returns only when it
    /// sees none left, so anything else is a protocol error, or a segment
    /// shrunk under us).
    pub(crate) fn check_done(&self, n: u64) -> Result<()> {
        self.segment().check_intact()?;
        if self.exhausted(n) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Protocol,
                "a worker returned from a self-scheduled map before all of its elements were \
                 claimed",
            ))
        }
    }
}

impl Drop for ClaimSlot {
    fn drop(&mut self) {
        let mut inner = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        inner.free.push(self.cell);
    }
}

/// Worker side: the cell `index` of a control segment the parent sent, for
/// job `job`; a protocol failure if the segment is too small, the index
/// out of range or the cell serves another job.
pub(crate) fn worker_cell(
    segment: &Arc<Segment>,
    index: u32,
    job: u64,
) -> std::result::Result<(Typed<Cells>, usize), ItemFailure> {
    let cells = Typed::<Cells>::new(Arc::clone(segment))
        .map_err(|e| ItemFailure::protocol(0, e.to_string()))?;
    let i = index as usize;
    if i >= CLAIM_CELLS {
        return Err(ItemFailure::protocol(0, format!("no claim cell {index}")));
    }
    // SYNC: Relaxed: written before the descriptor was published (see
    // `Claims::take`).
    if cells.get()[i].0.job.load(Ordering::Relaxed) != job {
        return Err(ItemFailure::protocol(
            0,
            "the claim cell serves another map".to_string(),
        ));
    }
    Ok((cells, i))
}

/// Worker side: claims and runs chunks of `[0, n)` from `cells[i]` until
/// none is left, `run(first, count)` each. Returns the elements this worker
/// ran and, if a chunk failed, its failure (its offset made absolute);
/// a failure also moves the counter to `n`, so the other workers stop.
pub(crate) fn run_claims(
    cells: &Typed<Cells>,
    i: usize,
    n: u64,
    workers: u32,
    fixed: u64,
    mut run: impl FnMut(u64, u64) -> std::result::Result<(), ItemFailure>,
) -> (u64, std::result::Result<(), ItemFailure>) {
    let counter = &cells.get()[i].0.next;
    let mut sizer = Sizer {
        workers: u64::from(workers.max(1)),
        fixed,
        ns: None,
    };
    let mut ran = 0u64;
    // SYNC: Relaxed throughout: the counter only divides `[0, n)` among
    // the workers (every compare-exchange on it is in one total order, so
    // no two claims overlap); the elements themselves were published by
    // the descriptor's ring, and the results go back through the result
    // ring.
    let mut cur = counter.load(Ordering::Relaxed);
    loop {
        if cur >= n {
            return (ran, Ok(()));
        }
        let k = sizer.next(n - cur);
        match counter.compare_exchange_weak(cur, cur + k, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {}
            Err(now) => {
                cur = now;
                continue;
            }
        }
        let started = Instant::now();
        if let Err(mut fail) = run(cur, k) {
            counter.fetch_max(n, Ordering::Relaxed);
            fail.offset = fail.offset.saturating_add(cur);
            return (ran, Err(fail));
        }
        sizer.measured(k, started.elapsed().as_nanos() as f64);
        ran += k;
        cur = counter.load(Ordering::Relaxed);
    }
}

/// How big a worker's next claim is.
struct Sizer {
    workers: u64,
    /// The user's `chunksize`, or 0 for guided.
    fixed: u64,
    /// What an element cost in this worker's last chunk.
    ns: Option<f64>,
}

impl Sizer {
    fn next(&self, left: u64) -> u64 {
        if self.fixed > 0 {
            return self.fixed.min(left);
        }
        let guided = left.div_ceil(2 * self.workers);
        let (lo, hi) = match self.ns {
            Some(ns) if ns > 0.0 => {
                let lo = ((LO_NS / ns) as u64).max(1);
                (lo, ((HI_NS / ns) as u64).max(lo))
            }
            _ => (1, FIRST_MAX),
        };
        guided.clamp(lo, hi).clamp(1, left)
    }

    fn measured(&mut self, items: u64, ns: f64) {
        if items > 0 {
            self.ns = Some(ns / items as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizer_is_guided_within_its_time_bounds() {
        let mut s = Sizer {
            workers: 4,
            fixed: 0,
            ns: None,
        };
        // Unknown cost: guided, at most FIRST_MAX.
        assert_eq!(s.next(800), 100);
        assert_eq!(s.next(1_000_000), FIRST_MAX);
        assert_eq!(s.next(3), 1);
        // 10 ns an element: between 1 000 (10 µs) and 20 000 (200 µs).
        s.measured(100, 1000.0);
        assert_eq!(s.next(1_000_000), 20_000);
        assert_eq!(s.next(80_000), 10_000);
        assert_eq!(s.next(800), 800, "never more than is left");
        // 1 ms an element: one at a time.
        s.measured(1, 1e6);
        assert_eq!(s.next(1_000_000), 1);
        let fixed = Sizer {
            workers: 4,
            fixed: 7,
            ns: None,
        };
        assert_eq!(fixed.next(100), 7);
        assert_eq!(fixed.next(5), 5);
    }

    #[test]
    fn claims_cover_every_element_once_across_threads() {
        let claims = Claims::default();
        let slot = claims.take().unwrap();
        slot.arm(9);
        let (cells, i) = worker_cell(slot.segment(), slot.index(), 9).unwrap();
        let n = 1_000_003u64;
        let seen: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
        let total: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let (cells, seen) = (cells.clone(), &seen);
                    s.spawn(move || {
                        let (ran, r) = run_claims(&cells, i, n, 4, 0, |first, count| {
                            for j in first..first + count {
                                seen[j as usize].fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(())
                        });
                        r.unwrap();
                        ran
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(total, n);
        assert!(seen.iter().all(|c| c.load(Ordering::Relaxed) == 1));
        slot.check_done(n).unwrap();
    }

    #[test]
    fn a_failed_chunk_stops_the_others_and_names_its_element() {
        let claims = Claims::default();
        let slot = claims.take().unwrap();
        slot.arm(1);
        let (cells, i) = worker_cell(slot.segment(), slot.index(), 1).unwrap();
        let (ran, r) = run_claims(&cells, i, 10_000, 1, 100, |first, _| {
            if first == 500 {
                Err(ItemFailure::protocol(3, "boom".into()))
            } else {
                Ok(())
            }
        });
        assert_eq!(ran, 500);
        assert_eq!(r.unwrap_err().offset, 503);
        // Nothing is left to claim for anyone else.
        let (ran, r) = run_claims(&cells, i, 10_000, 1, 100, |_, _| panic!("claimed"));
        assert_eq!((ran, r.is_ok()), (0, true));
    }

    #[test]
    fn cells_are_checked_and_given_back() {
        let claims = Claims::default();
        let slot = claims.take().unwrap();
        slot.arm(5);
        assert!(
            worker_cell(slot.segment(), slot.index(), 6).is_err(),
            "another job's cell"
        );
        assert!(worker_cell(slot.segment(), CLAIM_CELLS as u32, 5).is_err());
        let small = Arc::new(Segment::create(64).unwrap());
        assert!(worker_cell(&small, 0, 5).is_err(), "too small a segment");
        let index = slot.index();
        assert!(slot.check_done(1).is_err(), "nothing claimed yet");
        drop(slot);
        let all: Vec<_> = (0..CLAIM_CELLS).map(|_| claims.take().unwrap()).collect();
        assert!(all.iter().any(|s| s.index() == index), "the cell came back");
        assert!(claims.take().is_none(), "all taken");
    }
}
