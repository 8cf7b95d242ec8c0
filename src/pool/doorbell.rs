//! The pool's doorbell: one futex word that every worker rings after it
//! publishes a result, so the parent can sleep on one word while it waits
//! for any of N result rings.
//!
//! Dekker-style, like the ring's own parking: the parent announces itself
//! (`sleeping += 1`, SeqCst fence), re-checks its rings, then sleeps on
//! `seq`; a worker publishes (Release, in the ring), issues a SeqCst fence,
//! and only if someone sleeps bumps `seq` and wakes. Either the parent's
//! re-check sees the result or the worker sees the sleeper.
#![allow(unsafe_code)]

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::segment::{Segment, SegmentHandle};
use crate::sys;

#[repr(C)]
struct Words {
    seq: AtomicU32,
    sleeping: AtomicU32,
}

/// A doorbell in its own small segment, shared by a pool and its workers.
pub(crate) struct Doorbell {
    segment: Arc<Segment>,
}

impl Doorbell {
    pub(crate) fn create() -> Result<Doorbell> {
        Ok(Doorbell {
            segment: Arc::new(Segment::create(64)?),
        })
    }

    pub(crate) fn open(handle: &SegmentHandle) -> Result<Doorbell> {
        let segment = Arc::new(Segment::open(handle)?);
        if segment.len() < std::mem::size_of::<Words>() {
            return Err(Error::new(
                ErrorKind::Protocol,
                "doorbell segment too small",
            ));
        }
        Ok(Doorbell { segment })
    }

    /// A worker shrank the doorbell's segment under us (see `sys::sigbus`):
    /// nobody can ring it any more.
    pub(crate) fn lost(&self) -> bool {
        self.segment.lost()
    }

    pub(crate) fn handle(&self) -> SegmentHandle {
        self.segment.handle()
    }

    fn words(&self) -> &Words {
        // SAFETY: the segment's data is 64-aligned, at least
        // `size_of::<Words>()` bytes (checked on open, 64 on create), mapped
        // for as long as `self` lives, and `Words` is atomics only, valid
        // for any bytes another process may write.
        unsafe { &*(self.segment.as_ptr() as *const Words) }
    }

    /// Worker side, after publishing a result: wake the parent if it sleeps.
    pub(crate) fn ring(&self) {
        let w = self.words();
        // SYNC: SeqCst fence pairs with the one in `prepare`: either the
        // parent's re-check sees our published frame or we see its sleeper.
        fence(Ordering::SeqCst);
        if w.sleeping.load(Ordering::Relaxed) != 0 {
            w.seq.fetch_add(1, Ordering::Release);
            sys::futex_wake_all(&w.seq);
        }
    }

    /// Wakes a sleeping parent thread unconditionally (another thread of
    /// the parent wants it to look at its state).
    pub(crate) fn ring_always(&self) {
        let w = self.words();
        w.seq.fetch_add(1, Ordering::Release);
        sys::futex_wake_all(&w.seq);
    }

    /// Parent side: announce a sleep; returns the value to sleep on. The
    /// caller must re-check its rings, then call [`sleep`](Doorbell::sleep)
    /// or [`cancel`](Doorbell::cancel).
    pub(crate) fn prepare(&self) -> u32 {
        let w = self.words();
        // SYNC: Acquire pairs with the Release bump in `ring`.
        let seq = w.seq.load(Ordering::Acquire);
        w.sleeping.fetch_add(1, Ordering::SeqCst);
        // SYNC: pairs with the fence in `ring` (see there).
        fence(Ordering::SeqCst);
        seq
    }

    /// Sleeps until `seq` moves or `timeout` passes; ends the announcement.
    pub(crate) fn sleep(&self, seq: u32, timeout: Duration) {
        let w = self.words();
        sys::futex_wait(&w.seq, seq, timeout);
        self.cancel();
    }

    /// Ends an announcement without sleeping.
    pub(crate) fn cancel(&self) {
        // Another process can write this word; never underflow into a
        // permanent "someone sleeps" (it would only cost wake-ups anyway).
        let w = self.words();
        let _ = w
            .sleeping
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}
