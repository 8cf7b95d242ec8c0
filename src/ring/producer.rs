//! The writing end of a ring: [`Producer`] (push, the consumer's head
//! checked before every reuse of its bytes, close) and the in-place writes
//! over shared memory, [`Reservation`] (reserve → write → commit) and
//! [`Batch`] (many frames under one hold of the side).
#![allow(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::memory::{Atomic, Memory, SharedMem};
use super::wait::{self, block_until, ring_health, Wait};
use super::Mode;
use super::{
    frame_size, pack, End, Handle, Header, PeerCheck, Ring, Slot, CONSUMER_CLOSED, FRAME_WORD,
    KIND_DROP, KIND_MORE, KIND_PAD, LONG_HEADER, MAX_KIND, PRODUCER_CLOSED,
};
use crate::error::{Error, ErrorKind, Result};

/// The writing end of a ring.
pub(crate) struct Producer<M: Memory = SharedMem> {
    end: End<M>,
    /// Spsc: the authoritative tail (the shared copy is never trusted).
    /// Mpmc: refreshed from the header under the lock.
    tail: u64,
    /// A lower bound of the consumer's head (heads only grow).
    cached_head: u64,
    /// The first frame of a group written by a [`Batch`] whose word is
    /// not stored yet (its offset, its word, its position): the consumer
    /// reads frames in order, so it sees none of the group's frames until
    /// this word is published, and then all of them at once
    /// ([`publish_held`](Self::publish_held)).
    held: Option<Held>,
}

/// A frame word kept back by [`Producer::commit_frame`].
#[derive(Clone, Copy)]
struct Held {
    off: usize,
    word: u64,
    pos: u64,
}

/// Bytes a [`Batch`] writes before it publishes them: the consumer then
/// reads lines the producer has left, one transfer each, instead of
/// racing it for the line it is writing (a small item's frame is 16
/// bytes, four to a cache line). Small enough that the consumer starts
/// while the batch goes on (docs/ARCHITECTURE.md, "Batches").
pub(crate) const GROUP_BYTES: u64 = 16384;

impl Handle for Producer {
    fn ring(&self) -> &Ring {
        &self.end.ring
    }
}

impl<M: Memory> Producer<M> {
    pub(super) fn new(ring: Ring<M>, pid: u32) -> Producer<M> {
        Producer {
            end: End::new(ring, pid),
            tail: 0,
            cached_head: 0,
            held: None,
        }
    }

    /// Sets how long blocking calls spin before they park.
    #[cfg(test)]
    pub(crate) fn set_spin(&mut self, spin: std::time::Duration) {
        self.end.spin = spin;
    }

    /// Sets a liveness check of the consumer(s), run every ≤ 100 ms while
    /// blocked. Without one, Spsc uses the consumer's recorded pid.
    pub(crate) fn set_peer_check(&mut self, check: PeerCheck) {
        self.end.peer_alive = Some(check);
    }

    /// Largest payload one frame can carry.
    #[inline]
    pub(crate) fn max_payload(&self) -> usize {
        self.end.ring.max_payload()
    }

    #[inline]
    fn header(&self) -> &Header<M> {
        self.end.header()
    }

    fn protocol(&mut self, what: impl Into<String>) -> Error {
        self.end.protocol(what)
    }

    #[inline]
    fn check_state(&self) -> Result<()> {
        let st = self.end.check_state("sending")?;
        if st & CONSUMER_CLOSED != 0 {
            return Err(Error::new(
                ErrorKind::Disconnected,
                "the receiving end was closed",
            ));
        }
        // Another handle closed the sending side for everyone (Mpmc: a
        // queue's shutdown; in Spsc only this handle closes it, and its own
        // `closed` flag answered above).
        if st & PRODUCER_CLOSED != 0 {
            return Err(Error::new(
                ErrorKind::Disconnected,
                "the sending side was closed",
            ));
        }
        Ok(())
    }

    #[inline]
    fn check_len(&self, len: usize) -> Result<()> {
        let max = self.max_payload();
        if len > max {
            return Err(Error::new(
                ErrorKind::Codec,
                format!("frame of {len} bytes exceeds the ring's maximum of {max}"),
            ));
        }
        Ok(())
    }

    /// Loads and validates the consumer's head: 8-aligned, not past our
    /// tail, not behind what we saw before, at most `cap` behind the tail.
    fn load_head(&mut self) -> Result<u64> {
        // SYNC: Acquire pairs with the Release store of head in
        // Consumer::release_raw: the consumer is done with those bytes.
        let head = self.header().cons.0.pos.load(Ordering::Acquire);
        let cap = self.end.ring.mem.cap() as u64;
        let behind = self.tail.wrapping_sub(head);
        if !head.is_multiple_of(8)
            || behind > cap
            || behind > self.tail.wrapping_sub(self.cached_head)
        {
            return Err(self.protocol(format!(
                "ring head {head} invalid for tail {} (capacity {cap})",
                self.tail
            )));
        }
        self.cached_head = head;
        Ok(head)
    }

    /// Mpmc: takes the producer lock and refreshes tail/head from the
    /// header (validated); Spsc: nothing.
    #[inline]
    fn enter(&mut self, wait: &mut Wait) -> Result<()> {
        if self.end.ring.mode == Mode::Spsc {
            return Ok(());
        }
        self.end.lock(&self.header().prod.0, wait)?;
        // SYNC: Relaxed: the lock's Acquire orders the previous holder's
        // Release store of tail before this load.
        let tail = self.header().prod.0.pos.load(Ordering::Relaxed);
        let cap = self.end.ring.mem.cap() as u64;
        // The head this handle saw last is a lower bound (heads only
        // grow): a tail within `cap` of it is within `cap` of the real
        // head too. Only a tail beyond it (other producers went far ahead,
        // or a bad value) needs the consumers' line, which a lone producer
        // then never reads per push.
        if !tail.is_multiple_of(8) || tail.wrapping_sub(self.cached_head) > cap {
            // SYNC: Acquire pairs with the Release store of head in
            // release_raw.
            let head = self.header().cons.0.pos.load(Ordering::Acquire);
            if !tail.is_multiple_of(8) || tail.wrapping_sub(head) > cap {
                self.leave();
                return Err(self.protocol(format!("ring tail {tail} invalid for head {head}")));
            }
            self.cached_head = head;
        }
        self.tail = tail;
        Ok(())
    }

    #[inline]
    fn leave(&mut self) {
        self.end.unlock(&self.header().prod.0);
    }

    /// Finds room for a frame of `len` payload bytes at the tail, writing a
    /// padding frame first if it would cross the end. `None`: not enough
    /// free space now.
    #[inline]
    fn try_reserve_raw(&mut self, len: usize) -> Result<Option<Slot>> {
        let cap = self.end.ring.mem.cap();
        let size = frame_size(len);
        let off = (self.tail as usize) & (cap - 1);
        let pad = if off + size > cap { cap - off } else { 0 };
        // + FRAME_WORD: room for the terminator after the frame.
        let need = (pad + size + FRAME_WORD) as u64;
        if self.tail.wrapping_sub(self.cached_head) + need > cap as u64 {
            let head = self.load_head()?;
            if self.tail.wrapping_sub(head) + need > cap as u64 {
                return Ok(None);
            }
        }
        if pad > 0 {
            let mem = &self.end.ring.mem;
            // Terminator at the start of the next lap (free space), then the
            // padding frame that leads to it.
            // SYNC: Relaxed; published by the Release store just below.
            mem.word(0).store(0, Ordering::Relaxed);
            // SYNC: Release pairs with the Acquire load of the frame word in
            // Consumer::try_peek_raw.
            mem.word(off).store(
                pack(pad - FRAME_WORD, KIND_PAD, self.tail),
                Ordering::Release,
            );
            self.tail = self.tail.wrapping_add(pad as u64);
            // SYNC: Release pairs with the Acquire loads of tail in
            // Producer::enter (Mpmc) and used_bytes.
            self.header().prod.0.pos.store(self.tail, Ordering::Release);
        }
        Ok(Some(Slot {
            pos: self.tail,
            off: (self.tail as usize) & (cap - 1),
            len,
        }))
    }

    /// Publishes the frame in `slot` with `len <= slot.len` payload bytes
    /// (already written).
    #[inline]
    fn commit_raw(&mut self, slot: Slot, kind: u8, len: usize) {
        self.commit_frame(slot, kind, len, false);
    }

    /// [`commit_raw`](Self::commit_raw); with `hold`, the word of a group's
    /// first frame is kept back (in `held`) instead of stored, so that the
    /// consumer sees this frame and every later one only when
    /// [`publish_held`](Self::publish_held) stores it. The frames after it
    /// store their words as usual: the consumer, which reads in order,
    /// stops at the held one's terminator before it reaches them.
    #[inline]
    fn commit_frame(&mut self, slot: Slot, kind: u8, len: usize, hold: bool) {
        debug_assert!(
            len <= slot.len && (kind <= MAX_KIND || kind == KIND_MORE || kind == KIND_DROP)
        );
        let mem = &self.end.ring.mem;
        let cap = mem.cap();
        let next = slot.pos.wrapping_add(frame_size(len) as u64);
        // SYNC: Relaxed; the terminator is published by the Release store of
        // this frame's word below (or of the held word before it).
        mem.word((next as usize) & (cap - 1))
            .store(0, Ordering::Relaxed);
        let word = pack(len, kind, slot.pos);
        if hold && self.held.is_none() {
            // Where the word goes still holds the terminator the frame
            // before wrote: the consumer stops there.
            self.held = Some(Held {
                off: slot.off,
                word,
                pos: slot.pos,
            });
        } else {
            // SYNC: Release pairs with the Acquire load of the frame word in
            // Consumer::try_peek_raw: payload and terminator are visible
            // first.
            mem.word(slot.off).store(word, Ordering::Release);
        }
        self.tail = next;
        // SYNC: Release pairs with the Acquire loads of tail in
        // Producer::enter (Mpmc) and used_bytes.
        self.header().prod.0.pos.store(next, Ordering::Release);
    }

    /// Stores the word [`commit_frame`](Self::commit_frame) held back, if
    /// any: the consumer may read the whole group now. Called before the
    /// side is left and before any wait for room (the consumer cannot free
    /// room it cannot see).
    #[inline]
    fn publish_held(&mut self) {
        if let Some(h) = self.held.take() {
            // SYNC: Release pairs with the Acquire load of the frame word in
            // Consumer::try_peek_raw: every frame of the group, their words
            // and the last terminator were written before this store.
            self.end
                .ring
                .mem
                .word(h.off)
                .store(h.word, Ordering::Release);
        }
    }

    /// Bytes written since the held word's frame began (0 without one).
    #[inline]
    fn held_bytes(&self) -> u64 {
        self.held.map_or(0, |h| self.tail.wrapping_sub(h.pos))
    }

    /// Wakes a consumer parked on an empty ring, if one is. Needed only
    /// after the `*_quiet` calls.
    pub(crate) fn notify(&self) {
        wait::notify(&self.header().cons_wait.0);
    }

    /// Appends one frame if there is room; `Ok(false)` if the ring is full.
    /// Does not wake a parked consumer (call [`notify`](Self::notify)
    /// after a batch).
    ///
    /// # Errors
    ///
    /// `Codec` for a payload over [`max_payload`](Self::max_payload),
    /// `Disconnected` if the consumer closed, `Protocol` if the ring is
    /// poisoned or the consumer's head is invalid, `InvalidState` for a
    /// reserved kind.
    pub(crate) fn try_push_quiet(&mut self, kind: u8, payload: &[u8]) -> Result<bool> {
        check_kind(kind)?;
        self.check_len(payload.len())?;
        self.check_state()?;
        self.push_now(kind, payload, false)
    }

    /// One frame of `kind` (unchecked) if it fits now, under one hold of
    /// the side; with `hold`, as a [`Batch`] writes it (the loom model's
    /// way to check held words: it has no in-place writes).
    fn push_now(&mut self, kind: u8, payload: &[u8], hold: bool) -> Result<bool> {
        self.enter(&mut Wait::new(None))?;
        let r = match self.try_reserve_raw(payload.len()) {
            Ok(Some(slot)) => {
                self.end.ring.mem.write(slot.off + FRAME_WORD, payload);
                self.commit_frame(slot, kind, payload.len(), hold);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        self.leave();
        r
    }

    /// One frame written as a [`Batch`] writes it: the first of a group
    /// keeps its word back until [`publish_held_for_model`](Self::publish_held_for_model).
    #[cfg(all(test, multiproc_loom))]
    pub(crate) fn try_push_held_for_model(&mut self, kind: u8, payload: &[u8]) -> Result<bool> {
        self.push_now(kind, payload, true)
    }

    /// Publishes the group [`try_push_held_for_model`](Self::try_push_held_for_model) began.
    #[cfg(all(test, multiproc_loom))]
    pub(crate) fn publish_held_for_model(&mut self) {
        self.publish_held();
    }

    /// [`try_push_quiet`](Self::try_push_quiet), then wakes the consumer if
    /// it is parked.
    ///
    /// # Errors
    ///
    /// As [`try_push_quiet`](Self::try_push_quiet).
    pub(crate) fn try_push(&mut self, kind: u8, payload: &[u8]) -> Result<bool> {
        let pushed = self.try_push_quiet(kind, payload)?;
        if pushed {
            self.notify();
        }
        Ok(pushed)
    }

    /// Appends one frame, waiting for room until `deadline` (`None`:
    /// forever).
    ///
    /// # Errors
    ///
    /// As [`try_push`](Self::try_push), plus `Timeout` and `PeerDied` (the
    /// consumer is gone while the ring is full).
    pub(crate) fn push(
        &mut self,
        kind: u8,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let mut wait = Wait::new(deadline);
        loop {
            if self.try_push(kind, payload)? {
                return Ok(());
            }
            self.wait_writable(payload.len(), &mut wait)?;
        }
    }

    /// Blocks until a frame of `len` bytes might fit (a hint: the caller
    /// retries), the deadline passes or the consumer is gone.
    fn wait_writable(&mut self, len: usize, wait: &mut Wait) -> Result<()> {
        let h = self.end.ring.header();
        let ring = &self.end.ring;
        let fits = || ring.writable(len);
        let health = || ring_health(&self.end.ring, || self.peer_alive(), "receiving");
        block_until(
            self.end.spin,
            &h.prod_wait.0,
            wait,
            fits,
            health,
            "no room came free in time",
        )
    }

    fn peer_alive(&self) -> bool {
        self.end.peer_alive(&self.header().cons.0)
    }

    /// Marks the producer side closed and wakes the consumer: once it has
    /// drained the ring it gets `Disconnected`. Spsc producers close on
    /// drop; in Mpmc the owner of the handles decides when the last
    /// producer is gone.
    pub(crate) fn close(&mut self) {
        self.end.close(PRODUCER_CLOSED);
    }
}

impl<M: Memory> Drop for Producer<M> {
    fn drop(&mut self) {
        if self.end.ring.mode == Mode::Spsc {
            self.close();
        }
    }
}

/// Room for one frame at the producer's tail, written in place. In Mpmc
/// the producer lock is held until it is committed or dropped; dropping
/// it without [`commit`](Self::commit) abandons the frame.
pub(crate) struct Reservation<'a> {
    producer: &'a mut Producer,
    slot: Slot,
    done: bool,
}

impl Reservation<'_> {
    /// The reserved payload bytes (contents unspecified: old frames).
    #[inline]
    pub(crate) fn buf(&mut self) -> &mut [u8] {
        self.producer.slot_buf(self.slot)
    }

    /// Publishes the first `len` bytes of [`buf`](Self::buf) as a frame of
    /// `kind`, and wakes a parked consumer.
    ///
    /// # Errors
    ///
    /// `InvalidState` if `len` is more than was reserved or `kind` is
    /// reserved; the reservation is then abandoned.
    #[inline]
    pub(crate) fn commit(mut self, kind: u8, len: usize) -> Result<()> {
        self.producer.commit_checked(self.slot, kind, len, false)?;
        self.done = true;
        self.producer.leave();
        self.producer.notify();
        Ok(())
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.producer.leave();
        }
    }
}

/// Frames written in place under one hold of the producer side
/// ([`Producer::batch`]).
pub(crate) struct Batch<'a> {
    producer: &'a mut Producer,
    wrote: bool,
}

impl Batch<'_> {
    /// Writes one frame of `kind` if `len` payload bytes fit now:
    /// `write` fills the reserved bytes and returns how many it used (at
    /// most `len`). `Ok(false)`: no room now (nothing was written).
    ///
    /// # Errors
    ///
    /// As [`Producer::try_push`]; `write`'s error (the frame is then
    /// abandoned); `InvalidState` if `write` claims more than `len` bytes.
    pub(crate) fn try_write(
        &mut self,
        kind: u8,
        len: usize,
        write: impl FnOnce(&mut [u8]) -> Result<usize>,
    ) -> Result<bool> {
        check_kind(kind)?;
        self.producer.check_len(len)?;
        let Some(slot) = self.producer.try_reserve_raw(len)? else {
            return Ok(false);
        };
        let used = write(self.producer.slot_buf(slot))?;
        self.producer.commit_checked(slot, kind, used, true)?;
        self.wrote = true;
        if self.producer.held_bytes() >= GROUP_BYTES {
            self.producer.publish_held();
        }
        Ok(true)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // Also on a panic in `fill`: what was committed is delivered.
        self.producer.publish_held();
        self.producer.leave();
        if self.wrote {
            self.producer.notify();
        }
    }
}

// In place: the caller writes into the ring's bytes, so only memory with
// addressable bytes (a region) offers it.
impl Producer {
    /// The payload bytes of `slot`, a reservation this producer made and
    /// has not committed, while it still holds the side (contents
    /// unspecified: old frames).
    fn slot_buf(&mut self, slot: Slot) -> &mut [u8] {
        let mem = &self.end.ring.mem;
        let start = slot.off + FRAME_WORD;
        assert!(start + slot.len <= mem.cap(), "ring: bad reservation");
        // SAFETY: in bounds (asserted); the bytes are initialised (the data
        // area is zeroed at creation and only ever holds bytes). They are
        // free space past our tail: by the ring protocol the consumer does
        // not read them until the commit's Release store, and no other
        // producer writes them (Spsc: one producer; Mpmc: the caller holds
        // the producer lock until commit/drop of its `Reservation` or
        // `Batch`). The `&mut self` borrow keeps the slice from outliving
        // that hold.
        unsafe { std::slice::from_raw_parts_mut(mem.data_at(start), slot.len) }
    }

    /// Publishes the first `len` bytes of `slot` as a frame of `kind`, after
    /// checking both (the frame is abandoned on an error).
    fn commit_checked(&mut self, slot: Slot, kind: u8, len: usize, hold: bool) -> Result<()> {
        check_kind(kind)?;
        if len > slot.len {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!("commit of {len} bytes into a reservation of {}", slot.len),
            ));
        }
        self.commit_frame(slot, kind, len, hold);
        Ok(())
    }

    /// Writes frames in place under one hold of the producer side (Mpmc:
    /// one lock for all of them), waiting for the lock until `deadline`:
    /// `fill` writes as many as there is room for with
    /// [`Batch::try_write`]. A parked consumer is woken once, when the
    /// batch ends (also if `fill` panics, which releases the side).
    ///
    /// # Errors
    ///
    /// As [`reserve`](Self::reserve), before `fill` runs.
    pub(crate) fn batch<R>(
        &mut self,
        deadline: Option<Instant>,
        fill: impl FnOnce(&mut Batch<'_>) -> R,
    ) -> Result<R> {
        self.check_state()?;
        self.enter(&mut Wait::new(deadline))?;
        let mut batch = Batch {
            producer: self,
            wrote: false,
        };
        Ok(fill(&mut batch))
    }

    /// Appends a message of any length: one frame if it fits in one,
    /// otherwise pieces of kind [`KIND_MORE`] and a last one of `kind`,
    /// all under one hold of the producer side (Mpmc: no other producer's
    /// frame comes between them), each as soon as there is room, so the
    /// message streams through a ring smaller than itself while the
    /// consumer reads.
    ///
    /// `deadline` holds for the whole message. Each piece is written only
    /// with room to spare for one empty frame after it, so a producer that
    /// gives up midway (the deadline, the consumer gone, a shutdown) can
    /// always end what it started with a [`KIND_DROP`] frame: the consumer
    /// drops the pieces and reads on, and nothing half-sent is delivered.
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push), except that a long payload is no `Codec`
    /// error.
    pub(crate) fn push_long(
        &mut self,
        kind: u8,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<()> {
        if payload.len() <= self.max_payload() {
            return self.push(kind, payload, deadline);
        }
        check_kind(kind)?;
        self.check_state()?;
        let mut wait = Wait::new(deadline);
        self.enter(&mut wait)?;
        let mut started = false;
        let outcome = self.push_pieces(kind, payload, &mut wait, &mut started);
        if outcome.is_err() && started {
            self.drop_started_message(payload.len());
        }
        self.leave();
        outcome
    }

    /// [`push_long`](Self::push_long)'s pieces, the side held; sets
    /// `started` once the first is in the ring.
    fn push_pieces(
        &mut self,
        kind: u8,
        payload: &[u8],
        wait: &mut Wait,
        started: &mut bool,
    ) -> Result<()> {
        // Room for an empty frame after every piece: see `push_long`.
        let spare = FRAME_WORD;
        // Pieces of an eighth of the ring (at most a frame): several are in
        // flight at once, so writing and reading overlap.
        let cap = self.end.ring.mem.cap();
        let piece_max = (self.max_payload() - spare)
            .min(cap / 8)
            .max(2 * LONG_HEADER);
        // The first piece opens with the message's length, so the consumer
        // allocates once.
        let total = (payload.len() as u64).to_le_bytes();
        let mut rest = payload;
        let mut first = true;
        while first || !rest.is_empty() {
            let header = if first { LONG_HEADER } else { 0 };
            let take = rest.len().min(piece_max - header);
            let (piece, after) = rest.split_at(take);
            let piece_kind = if after.is_empty() { kind } else { KIND_MORE };
            let len = header + piece.len();
            loop {
                self.check_state()?;
                if let Some(slot) = self.try_reserve_raw(len + spare)? {
                    let at = slot.off + FRAME_WORD;
                    if first {
                        self.end.ring.mem.write(at, &total);
                    }
                    self.end.ring.mem.write(at + header, piece);
                    self.commit_raw(slot, piece_kind, len);
                    *started = true;
                    self.notify();
                    break;
                }
                self.wait_writable(len + spare, wait)?;
            }
            rest = after;
            first = false;
        }
        Ok(())
    }

    /// Ends a long message cut short with a [`KIND_DROP`] frame, in the
    /// room every piece left for it. Without that room (a peer moved the
    /// positions) the ring is poisoned: the pieces could only be misread.
    fn drop_started_message(&mut self, len: usize) {
        match self.try_reserve_raw(0) {
            Ok(Some(slot)) => {
                self.commit_raw(slot, KIND_DROP, 0);
                self.notify();
            }
            _ => {
                let _ = self.end.ring.poison(format!(
                    "a message of {len} bytes was cut off and could not be marked dropped"
                ));
            }
        }
    }

    /// Waits until a frame of `len` payload bytes might fit (a hint: the
    /// caller retries), `deadline` passes or the consumer is gone.
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push).
    pub(crate) fn wait_for_room(&mut self, len: usize, deadline: Option<Instant>) -> Result<()> {
        self.wait_writable(len, &mut Wait::new(deadline))
    }

    /// A frame of any kind the ring allows on the wire, reserved ones
    /// included: what a broken or dying peer could leave behind.
    #[cfg(test)]
    pub(crate) fn try_push_raw_kind_for_test(&mut self, kind: u8, payload: &[u8]) -> Result<bool> {
        self.push_now(kind, payload, false)
    }

    /// Reserves room for a frame of `len` payload bytes, to be written in
    /// place; `Ok(None)` if the ring is full.
    ///
    /// # Errors
    ///
    /// As [`try_push`](Self::try_push).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn try_reserve(&mut self, len: usize) -> Result<Option<Reservation<'_>>> {
        self.check_len(len)?;
        self.check_state()?;
        self.enter(&mut Wait::new(None))?;
        match self.try_reserve_raw(len) {
            Ok(Some(slot)) => Ok(Some(Reservation {
                producer: self,
                slot,
                done: false,
            })),
            other => {
                self.leave();
                other.map(|_| None)
            }
        }
    }

    /// Reserves room for a frame of `len` payload bytes, waiting until
    /// `deadline`.
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push).
    #[inline]
    pub(crate) fn reserve(
        &mut self,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<Reservation<'_>> {
        self.check_len(len)?;
        let mut wait = Wait::new(deadline);
        let slot = loop {
            self.check_state()?;
            self.enter(&mut wait)?;
            match self.try_reserve_raw(len) {
                Ok(Some(slot)) => break slot,
                Ok(None) => self.leave(),
                Err(e) => {
                    self.leave();
                    return Err(e);
                }
            }
            self.wait_writable(len, &mut wait)?;
        };
        Ok(Reservation {
            producer: self,
            slot,
            done: false,
        })
    }
}

/// `InvalidState` for a kind the ring reserves for itself.
#[inline]
fn check_kind(kind: u8) -> Result<()> {
    if kind > MAX_KIND {
        return Err(Error::new(
            ErrorKind::InvalidState,
            format!("frame kind {kind:#x} is reserved"),
        ));
    }
    Ok(())
}
