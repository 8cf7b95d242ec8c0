//! Who holds each end of a pipe, across processes.
//!
//! Python's pipe ends are file descriptors: any process that holds a copy
//! may use it, and the reader sees EOF once every copy of the writing end
//! is closed, in every process. Here an end's copies are counted in a
//! table in the pipe's segment, one per end:
//!
//! - `holders`: every process with a live handle of the end is registered
//!   (the pipe's creator, and each process that opened a handle it
//!   received). A process deregisters when its last handle of the end is
//!   dropped or closed.
//! - `pending`: a handle serialised for a child that is being started
//!   (`Process::spawn`'s arguments) is counted from the moment it is
//!   serialised until the child has opened it, so the parent may drop its
//!   copy at once (as Python code closes its copy after `start()`) without
//!   the reader seeing EOF before the child has even started. Each entry is
//!   `token << 32 | owner`: the token (unique per end) travels in the
//!   serialised handle, so the child clears exactly its own entry; the
//!   owner is the parent until the child's pid is known, then the child, so
//!   a child that dies before it opens its arguments counts as a holder
//!   that died.
//!
//! When an end has no holder left, its sending ring is closed for
//! producers and its receiving ring for consumers: the other end's reader
//! drains what was sent, then gets `Disconnected` (Python's `EOFError`),
//! and its sender gets `Disconnected` (Python's `BrokenPipeError`). If the
//! last holders include a process that died still holding it (SIGKILL, a
//! crash), the other side's waits fail with `PeerDied` instead: the dead
//! process may have meant to send more. A holder that dies while others
//! hold the end breaks nothing, as in Python (unless it died in the middle
//! of a message: the ring's own lock check poisons the ring then).
//!
//! Every value here may have been written by another process: pids are
//! only compared and passed to `sys::process_alive`, slot and entry indices
//! from a serialised handle are bounds-checked, tokens only compared.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::participants::Participants;
use crate::ring::Ring;
use crate::segment::{in_place, Typed};
use crate::sys;

/// Entries for handles in flight to children, per end. A spawn that finds
/// them all taken still works; only the window above is open for it.
pub(crate) const PENDING: usize = 64;

in_place! {
    /// One end's holders.
    pub(crate) struct EndTable {
        holders: Participants,
        /// `token << 32 | owner pid`, 0 = free.
        pending: [AtomicU64; PENDING],
        next_token: AtomicU32,
        _pad: [AtomicU32; 15],
    }
}

in_place! {
    /// The start of a pipe's segment; the rings follow at
    /// [`HEADER_BYTES`].
    pub(crate) struct PipeHeader {
        ends: [EndTable; 2],
    }
}

/// Where the first ring starts (64-aligned).
pub(crate) const HEADER_BYTES: usize = std::mem::size_of::<PipeHeader>().next_multiple_of(64);

// The layout is part of what `tests/faults.rs` forges as a peer.
const _: () = assert!(HEADER_BYTES == 2176);

/// Who holds an end, as the other side sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holders {
    /// Some live process holds it (or is being started with it).
    Some,
    /// Nobody alive holds it, and this process died holding it.
    Died(u32),
    /// Nobody holds it: every holder closed or dropped its handles.
    None,
}

impl EndTable {
    /// Registers this process as a holder; `None` if the table is full.
    pub(crate) fn register(&self) -> Option<usize> {
        self.holders.register()
    }

    /// Gives back a slot taken by [`register`](EndTable::register).
    pub(crate) fn unregister(&self, slot: usize) {
        self.holders.unregister(slot);
    }

    /// Counts a handle in flight to a child not started yet (owned by this
    /// process until [`hand_to`](EndTable::hand_to)): its entry index and
    /// token, or `None` if every entry is taken.
    fn reserve(&self) -> Option<(usize, u32)> {
        let token = loop {
            // SYNC: Relaxed: only uniqueness matters (an RMW is atomic in
            // any ordering); nothing is published with the token.
            let t = self.next_token.fetch_add(1, Ordering::Relaxed);
            if t != 0 {
                break t;
            }
        };
        let word = pack(token, std::process::id());
        let index = self.pending.iter().position(|e| {
            // SYNC: AcqRel pairs with the Release/AcqRel clears of the
            // entry's previous user.
            e.compare_exchange(0, word, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        Some((index, token))
    }

    /// Makes the child `pid` the owner of entry `index` if it still holds
    /// `token` (the child may have opened its handle, and cleared the
    /// entry, already).
    fn hand_to(&self, index: usize, token: u32, pid: u32) {
        if let Some(e) = self.pending.get(index) {
            // SYNC: AcqRel, as in `reserve`.
            let _ = e.compare_exchange(
                pack(token, std::process::id()),
                pack(token, pid),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// Clears entry `index` if it still holds `token`: the child opened
    /// its handle (and registered first), or the start failed.
    pub(crate) fn clear(&self, index: usize, token: u32) {
        let Some(e) = self.pending.get(index) else {
            return;
        };
        // SYNC: Acquire pairs with the AcqRel CAS that wrote the entry.
        let word = e.load(Ordering::Acquire);
        if word >> 32 == u64::from(token) {
            // SYNC: AcqRel: the clear publishes this process's
            // registration (made before) to whoever reuses the entry.
            let _ = e.compare_exchange(word, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Who holds the end now.
    ///
    /// The in-flight entries are read first, then the holders: a child
    /// registers before it clears its entry, so in this order a look that
    /// finds the entry cleared (an Acquire load of that clear) then finds
    /// the registration. The other order could see neither: the holders
    /// before the child registered, the entry after it cleared it.
    pub(crate) fn holders(&self) -> Holders {
        let mut pending_dead = None;
        for e in &self.pending {
            // SYNC: Acquire pairs with the AcqRel CAS that wrote the entry.
            let word = e.load(Ordering::Acquire);
            if word == 0 {
                continue;
            }
            let owner = word as u32;
            if sys::process_alive(owner) {
                return Holders::Some;
            }
            // Looked at again once the owner is seen dead: a child that
            // opened its handle and exited normally in between cleared the
            // entry first (as `Participants::dead` re-reads a slot).
            // SYNC: Acquire, as above.
            if pending_dead.is_none() && e.load(Ordering::Acquire) == word {
                pending_dead = Some(owner);
            }
        }
        let census = self.holders.census();
        if census.alive {
            return Holders::Some;
        }
        match census.dead.or(pending_dead) {
            Some(pid) => Holders::Died(pid),
            None => Holders::None,
        }
    }
}

fn pack(token: u32, pid: u32) -> u64 {
    (u64::from(token) << 32) | u64::from(pid)
}

/// The pipe's segment and rings, as every handle in this process sees
/// them.
pub(crate) struct Shared {
    pub(crate) header: Typed<PipeHeader>,
    /// Ring 0, and ring 1 if the pipe is duplex.
    pub(crate) rings: [Option<Ring>; 2],
    pub(crate) duplex: bool,
}

impl Shared {
    pub(crate) fn table(&self, end: u8) -> &EndTable {
        &self.header.get().ends[usize::from(end & 1)]
    }

    /// The ring `end` sends on and the one it receives from: in a duplex
    /// pipe ring 0 carries end 0 → end 1 and ring 1 the other way; in a
    /// one-way pipe ring 0 carries end 1 → end 0.
    pub(crate) fn rings_of(&self, end: u8) -> (Option<&Ring>, Option<&Ring>) {
        let [r0, r1] = &self.rings;
        match (self.duplex, end & 1) {
            (true, 0) => (r0.as_ref(), r1.as_ref()),
            (true, _) => (r1.as_ref(), r0.as_ref()),
            (false, 0) => (None, r0.as_ref()),
            (false, _) => (r0.as_ref(), None),
        }
    }

    /// Once nobody holds `end`, tells the other side: its receiving ring
    /// gets no more frames, its sending ring has no reader. Returns what
    /// it found.
    pub(crate) fn settle(&self, end: u8) -> Holders {
        let holders = self.table(end).holders();
        if holders == Holders::None {
            let (out, inp) = self.rings_of(end);
            if let Some(r) = out {
                r.close_side(true);
            }
            if let Some(r) = inp {
                r.close_side(false);
            }
        }
        holders
    }

    /// For the waits of `end`'s handles: whether the other end still has a
    /// holder that may act (`false`: it died holding the end; the ring
    /// reports `PeerDied`). Nobody holding it closes the rings (the wait
    /// then ends with `Disconnected`).
    pub(crate) fn peer_alive(&self, end: u8) -> bool {
        !matches!(self.settle(end ^ 1), Holders::Died(_))
    }
}

/// One handle counted as in flight: its end and `pending` entry.
struct InFlight {
    shared: Arc<Shared>,
    end: u8,
    index: usize,
    token: u32,
}

/// Handles of pipe ends serialised while [`handing_over`] runs: counted as
/// in flight to the child about to start.
pub(crate) struct Handover {
    pending: Vec<InFlight>,
    assigned: bool,
}

thread_local! {
    static HANDOVER: RefCell<Option<Vec<InFlight>>> = const { RefCell::new(None) };
}

/// Runs `f` (which serialises a child's arguments) so that every pipe end
/// it serialises is counted as in flight to that child; the returned
/// [`Handover`] names the child once it exists ([`Handover::assign`]), or
/// uncounts them if dropped first (the start failed).
pub(crate) fn handing_over<T>(f: impl FnOnce() -> T) -> (T, Handover) {
    let outer = HANDOVER.with(|h| h.borrow_mut().replace(Vec::new()));
    let out = f();
    let pending = HANDOVER.with(|h| std::mem::replace(&mut *h.borrow_mut(), outer));
    (
        out,
        Handover {
            pending: pending.unwrap_or_default(),
            assigned: false,
        },
    )
}

/// Called by an end's `serialize`: inside [`handing_over`], counts the
/// handle as in flight and returns its entry and token for the wire.
pub(crate) fn reserve_if_handing_over(shared: &Arc<Shared>, end: u8) -> Option<(usize, u32)> {
    HANDOVER.with(|h| {
        let mut h = h.borrow_mut();
        let list = h.as_mut()?;
        let (index, token) = shared.table(end).reserve()?;
        list.push(InFlight {
            shared: Arc::clone(shared),
            end,
            index,
            token,
        });
        Some((index, token))
    })
}

impl Handover {
    /// The child `pid` exists: its entries follow its life from now on.
    pub(crate) fn assign(mut self, pid: u32) {
        for f in &self.pending {
            f.shared.table(f.end).hand_to(f.index, f.token, pid);
        }
        self.assigned = true;
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        if self.assigned {
            return;
        }
        for f in &self.pending {
            f.shared.table(f.end).clear(f.index, f.token);
            f.shared.settle(f.end);
        }
    }
}
