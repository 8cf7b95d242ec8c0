//! The processes that share a cross-process object.
//!
//! A table of pids in shared memory: every process holding a handle to the
//! object registers when it opens it and deregisters when its handle drops.
//! A pid that stays registered after its process died marks an abnormal
//! death (SIGKILL, abort, crash): the objects built on this table turn that
//! into `PeerDied` instead of waiting for the dead.
//!
//! Every value here may have been written by another process: pids are only
//! compared and passed to `sys::process_alive`, never used as indices.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys;

/// Slots per object. A process beyond this many is simply not watched.
pub(crate) const SLOTS: usize = 128;

crate::segment::in_place! {
    /// The shared table (`#[repr(C)]`, atomics only).
    pub(crate) struct Participants {
        slots: [AtomicU32; SLOTS],
    }
}

const _: () = assert!(std::mem::size_of::<Participants>() == 4 * SLOTS);

/// What [`Participants::census`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Census {
    /// Some registered process is alive.
    pub(crate) alive: bool,
    /// A registered process that died without deregistering.
    pub(crate) dead: Option<u32>,
}

impl Participants {
    /// Takes a slot for this process; `None` if the table is full.
    pub(crate) fn register(&self) -> Option<usize> {
        let me = std::process::id();
        self.slots.iter().position(|slot| {
            // SYNC: AcqRel pairs with the Release store in `unregister` of
            // the slot's previous holder.
            slot.compare_exchange(0, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Gives back a slot taken by [`register`](Participants::register).
    pub(crate) fn unregister(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            // SYNC: Release pairs with the AcqRel CAS in `register`.
            s.store(0, Ordering::Release);
        }
    }

    /// Whether any registered process is alive, and the first one that is
    /// dead (registered when it died), if any.
    pub(crate) fn census(&self) -> Census {
        let mut census = Census::default();
        for slot in &self.slots {
            // SYNC: Acquire pairs with the Release store in `unregister`.
            let pid = slot.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            if sys::process_alive(pid) {
                census.alive = true;
            // The second look: see `dead`.
            // SYNC: Acquire, as above.
            } else if census.dead.is_none() && slot.load(Ordering::Acquire) == pid {
                census.dead = Some(pid);
            }
        }
        census
    }

    /// The first registered process that is dead, if any.
    pub(crate) fn dead(&self) -> Option<u32> {
        self.slots.iter().find_map(|slot| {
            // SYNC: Acquire pairs with the Release store in `unregister`.
            let pid = slot.load(Ordering::Acquire);
            if pid == 0 || sys::process_alive(pid) {
                return None;
            }
            // Between the load and the look at the process, it may have
            // dropped its handle and exited normally: it deregisters
            // before it exits, so only a slot that still holds it now that
            // it is gone marks a death while registered. (Seen: a sibling
            // that had just returned reported as "died abruptly" to a
            // waiter arriving at that moment.)
            // SYNC: Acquire, as above.
            (slot.load(Ordering::Acquire) == pid).then_some(pid)
        })
    }
}
