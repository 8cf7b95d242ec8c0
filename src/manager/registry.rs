//! How a client process hands the server the pipe it made for itself:
//! a table of slots in shared memory, with no lock anyone could die
//! holding.
//!
//! A ring (the queue this replaced) takes a side lock per message; a
//! client killed while holding it poisons the ring, and no process could
//! register after that. Here each slot is one state word `pid << 32 |
//! phase`:
//!
//! - a client claims a free slot with one CAS (0 → `pid | WRITING`), so the
//!   claim names its owner atomically, writes the registration's bytes,
//!   and publishes them with one Release store (`pid | READY`);
//! - the server takes a `READY` slot (Acquire), copies the bytes and frees
//!   it; a `WRITING` slot whose owner is dead is freed by the server's
//!   periodic check. A client killed at any point therefore costs at most
//!   one slot for one liveness period, never the table.
//!
//! Everything here may have been written by any process holding the
//! manager's handles: lengths are checked against the slot, states are
//! compared, pids only passed to `sys::process_alive`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::segment::{in_place, Segment, SegmentHandle, Typed};
use crate::sys;

/// Slots: client processes registering at the same moment.
const SLOTS: usize = 64;
/// Payload words per slot: 256 bytes, several times a pipe end's wire
/// form.
const WORDS: usize = 32;
const MAX_BYTES: usize = WORDS * 8;

const FREE: u64 = 0;
const WRITING: u64 = 1;
const READY: u64 = 2;
const PHASE: u64 = 0b11;

in_place! {
    struct Slot {
        /// `pid << 32 | phase`.
        state: AtomicU64,
        len: AtomicU32,
        _pad: AtomicU32,
        data: [AtomicU64; WORDS],
    }
}

in_place! {
    struct Table {
        slots: [Slot; SLOTS],
    }
}

/// The registration table of one manager.
pub(crate) struct Registry {
    table: Typed<Table>,
}

impl Registry {
    pub(crate) fn create() -> Result<Registry> {
        Ok(Registry {
            table: Typed::new(Arc::new(Segment::create(std::mem::size_of::<Table>())?))?,
        })
    }

    /// A peer's handle can name any segment: `Typed` checks its size.
    pub(crate) fn open(handle: &SegmentHandle) -> Result<Registry> {
        Ok(Registry {
            table: Typed::new(Arc::new(Segment::open(handle)?))?,
        })
    }

    pub(crate) fn handle(&self) -> SegmentHandle {
        self.table.segment().handle()
    }

    fn slots(&self) -> &[Slot; SLOTS] {
        &self.table.get().slots
    }

    /// Client: publishes `bytes` in a free slot. `Ok(false)`: every slot
    /// is taken now (try again shortly).
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] if `bytes` is over a slot's 256 bytes.
    pub(crate) fn try_publish(&self, bytes: &[u8]) -> Result<bool> {
        if bytes.len() > MAX_BYTES {
            return Err(Error::new(
                ErrorKind::Codec,
                format!(
                    "a registration of {} bytes is over the slot's {MAX_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let me = u64::from(std::process::id()) << 32;
        for slot in self.slots() {
            // SYNC: AcqRel pairs with the server's Release store of FREE:
            // its reads of the previous registration are done.
            if slot
                .state
                .compare_exchange(FREE, me | WRITING, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            for (i, word) in slot.data.iter().enumerate() {
                let mut w = [0u8; 8];
                let part = bytes.get(i * 8..).unwrap_or(&[]);
                let n = part.len().min(8);
                w[..n].copy_from_slice(&part[..n]);
                // SYNC: Relaxed; published by the Release store of READY.
                word.store(u64::from_le_bytes(w), Ordering::Relaxed);
            }
            // SYNC: Relaxed; published by the Release store of READY.
            slot.len.store(bytes.len() as u32, Ordering::Relaxed);
            // SYNC: Release pairs with the Acquire load in `take_each`.
            slot.state.store(me | READY, Ordering::Release);
            return Ok(true);
        }
        Ok(false)
    }

    /// Server: `true` if some registration waits.
    pub(crate) fn any_ready(&self) -> bool {
        self.slots()
            .iter()
            // SYNC: Acquire, as in `take_each` (only a hint here).
            .any(|s| s.state.load(Ordering::Acquire) & PHASE == READY)
    }

    /// Server: hands the bytes of every published registration to `f` and
    /// frees its slot. A slot whose length is impossible is freed unread.
    pub(crate) fn take_each(&self, mut f: impl FnMut(Vec<u8>)) {
        for slot in self.slots() {
            // SYNC: Acquire pairs with the client's Release store of READY:
            // its length and bytes are visible.
            let state = slot.state.load(Ordering::Acquire);
            if state & PHASE != READY {
                continue;
            }
            // SYNC: Relaxed, ordered by the Acquire above.
            let len = slot.len.load(Ordering::Relaxed) as usize;
            let bytes = (len <= MAX_BYTES).then(|| {
                let mut bytes = Vec::with_capacity(MAX_BYTES);
                for word in &slot.data {
                    // SYNC: Relaxed, ordered by the Acquire above.
                    bytes.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
                }
                bytes.truncate(len);
                bytes
            });
            // SYNC: Release pairs with the AcqRel claim in `try_publish`:
            // this read is done before the slot is written again.
            let _ = slot
                .state
                .compare_exchange(state, FREE, Ordering::Release, Ordering::Relaxed);
            if let Some(bytes) = bytes {
                f(bytes);
            }
        }
    }

    /// Server, every liveness period: frees the slots whose writer died
    /// between its claim and its publication.
    pub(crate) fn reclaim_dead(&self) {
        for slot in self.slots() {
            // SYNC: Relaxed: the CAS below decides; nothing is read from
            // the slot.
            let state = slot.state.load(Ordering::Relaxed);
            let owner = (state >> 32) as u32;
            if state & PHASE == WRITING && !sys::process_alive(owner) {
                // SYNC: Relaxed: the slot's contents are abandoned.
                let _ =
                    slot.state
                        .compare_exchange(state, FREE, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_registration_arrives_once_and_frees_its_slot() {
        let r = Registry::create().unwrap();
        let client = Registry::open(&r.handle()).unwrap();
        assert!(!r.any_ready());
        assert!(client.try_publish(b"hello, server").unwrap());
        assert!(client.try_publish(&[7u8; MAX_BYTES]).unwrap());
        assert!(r.any_ready());
        let mut got = Vec::new();
        r.take_each(|b| got.push(b));
        assert_eq!(got, vec![b"hello, server".to_vec(), vec![7u8; MAX_BYTES]]);
        assert!(!r.any_ready());
        r.take_each(|_| panic!("taken twice"));
        assert_eq!(
            client
                .try_publish(&[0u8; MAX_BYTES + 1])
                .unwrap_err()
                .kind(),
            ErrorKind::Codec
        );
    }

    #[test]
    fn a_full_table_says_so_and_frees_up() {
        let r = Registry::create().unwrap();
        for _ in 0..SLOTS {
            assert!(r.try_publish(b"x").unwrap());
        }
        assert!(!r.try_publish(b"y").unwrap());
        let mut n = 0;
        r.take_each(|_| n += 1);
        assert_eq!(n, SLOTS);
        assert!(r.try_publish(b"y").unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn a_writer_that_died_midway_loses_only_its_slot_and_only_until_the_check() {
        let r = Registry::create().unwrap();
        // A pid that is certainly dead: a child that has been reaped.
        let dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().unwrap();
        let alive = u64::from(std::process::id()) << 32 | WRITING;
        for (i, s) in r.slots().iter().enumerate() {
            let owner = if i == 0 {
                u64::from(dead_pid) << 32
            } else {
                alive & !PHASE
            };
            s.state.store(owner | WRITING, Ordering::Relaxed);
        }
        assert!(!r.try_publish(b"z").unwrap());
        r.reclaim_dead();
        // The dead writer's slot is free again; the live writers' are not.
        assert!(r.try_publish(b"z").unwrap());
        assert!(!r.try_publish(b"w").unwrap());
        let mut got = Vec::new();
        r.take_each(|b| got.push(b));
        assert_eq!(got, vec![b"z".to_vec()]);
    }

    #[test]
    fn an_impossible_length_is_dropped_unread() {
        let r = Registry::create().unwrap();
        let s = &r.slots()[3];
        s.len.store(u32::MAX, Ordering::Relaxed);
        s.state.store(1 << 32 | READY, Ordering::Release);
        r.take_each(|_| panic!("a forged length was read"));
        assert!(!r.any_ready());
    }
}
