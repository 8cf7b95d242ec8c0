//! The pool's doorbell: one futex word that every worker rings after it
//! publishes a result, so the parent can sleep on one word while it waits
//! for any of N result rings. The manager's server sleeps on one the same
//! way, rung by its clients after each request (`src/manager/`).
//!
//! Dekker-style, like the ring's own parking: the parent announces itself
//! (`sleeping += 1`, the heavy fence of `sys::fences`), re-checks its
//! rings, then sleeps on `seq`; a worker publishes (Release, in the ring),
//! issues the light fence, and only if someone sleeps bumps `seq` and
//! wakes. Either the parent's re-check sees the result or the worker sees
//! the sleeper.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::segment::{in_place, Segment, SegmentHandle, Typed};
use crate::sys;

in_place! {
    struct Words {
        seq: AtomicU32,
        sleeping: AtomicU32,
    }
}

/// A doorbell in its own small segment, shared by a pool and its workers.
pub(crate) struct Doorbell {
    words: Typed<Words>,
}

impl Doorbell {
    pub(crate) fn create() -> Result<Doorbell> {
        Ok(Doorbell {
            words: Typed::new(Arc::new(Segment::create(64)?))?,
        })
    }

    /// A peer's handle can name any segment: `Typed` checks its size.
    pub(crate) fn open(handle: &SegmentHandle) -> Result<Doorbell> {
        Ok(Doorbell {
            words: Typed::new(Arc::new(Segment::open(handle)?))?,
        })
    }

    /// A worker shrank the doorbell's segment under us (see `sys::sigbus`):
    /// nobody can ring it any more.
    pub(crate) fn lost(&self) -> bool {
        self.words.segment().lost()
    }

    pub(crate) fn handle(&self) -> SegmentHandle {
        self.words.segment().handle()
    }

    /// Its segment, for [`shrunk`] (the scheduler holds one).
    pub(crate) fn segment(&self) -> Arc<Segment> {
        Arc::clone(self.words.segment())
    }

    fn words(&self) -> &Words {
        self.words.get()
    }

    /// Worker side, after publishing a result: wake the parent if it sleeps.
    pub(crate) fn ring(&self) {
        let w = self.words();
        // SYNC: the light fence pairs with the heavy one in `prepare`
        // (asymmetric Dekker, `sys::fences`): either the parent's re-check
        // sees our published frame or we see its sleeper.
        sys::fences::light();
        // SYNC: Relaxed: the fence above orders it after our publish and
        // against the parent's `sleeping += 1` and fence in `prepare`.
        if w.sleeping.load(Ordering::Relaxed) != 0 {
            // SYNC: Release pairs with the Acquire load of `seq` in
            // `prepare`; the futex compares the value itself, so a bump
            // after the parent read `seq` makes its sleep return at once.
            w.seq.fetch_add(1, Ordering::Release);
            sys::futex_wake_all(&w.seq);
        }
    }

    /// Wakes a sleeping parent thread unconditionally (another thread of
    /// the parent wants it to look at its state).
    pub(crate) fn ring_always(&self) {
        let w = self.words();
        // SYNC: Release pairs with the Acquire load in `prepare`, as in
        // `ring`. What the other thread should look at is behind the
        // pool's lock, which orders it; the bump only ends a sleep.
        w.seq.fetch_add(1, Ordering::Release);
        sys::futex_wake_all(&w.seq);
    }

    /// Parent side: announce a sleep; returns what to sleep on. The
    /// caller must re-check its rings, then call [`sleep`](Doorbell::sleep)
    /// or [`cancel`](Doorbell::cancel).
    pub(crate) fn prepare(&self) -> Announced {
        let w = self.words();
        // SYNC: Acquire pairs with the Release bump in `ring`.
        let seq = w.seq.load(Ordering::Acquire);
        // SYNC: SeqCst, and the fence below, pair with the fence in `ring`
        // before its Relaxed load of `sleeping`: a worker that publishes
        // after this point sees the sleeper.
        w.sleeping.fetch_add(1, Ordering::SeqCst);
        // SYNC: the heavy fence pairs with the light one in `ring`.
        let covered = sys::fences::heavy();
        Announced { seq, covered }
    }

    /// Sleeps until `seq` moves or `timeout` passes; ends the announcement.
    /// Where the heavy fence could not cover the workers' light ones, a
    /// ring may be missed: the sleep is then a short slice
    /// (`sys::fences::park_timeout`).
    pub(crate) fn sleep(&self, announced: Announced, timeout: Duration) {
        let w = self.words();
        let timeout = sys::fences::park_timeout(announced.covered, timeout);
        sys::futex_wait(&w.seq, announced.seq, timeout);
        self.cancel();
    }

    /// Ends an announcement without sleeping.
    pub(crate) fn cancel(&self) {
        // Another process can write this word; never underflow into a
        // permanent "someone sleeps" (it would only cost wake-ups anyway).
        let w = self.words();
        // SYNC: SeqCst success, like the add in `prepare` it undoes; a
        // worker that still sees the old count only wakes us needlessly.
        // Relaxed failure: nothing is written, nothing to order.
        let _ = w
            .sleeping
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// A sleep announced by [`Doorbell::prepare`].
#[derive(Clone, Copy)]
pub(crate) struct Announced {
    /// The value of `seq` to sleep on.
    seq: u32,
    /// Whether the heavy fence covered the workers' light ones.
    covered: bool,
}

/// Whether a worker shrank the doorbell segment `seg`: looks at its memory
/// first, so that a shrink nobody touched since is noticed now (the
/// SIGBUS guard then reports it lost, see `sys::sigbus`).
pub(crate) fn shrunk(seg: &Segment) -> bool {
    let mut probe = [0u8; 4];
    seg.load(0, &mut probe);
    seg.lost()
}
