//! The reading end of a ring: [`Consumer`] (pop, every frame word
//! validated before its bytes are trusted, close) and the in-place reads
//! over shared memory, [`Frame`] (peek → release) and `take_each` (many
//! frames under one hold of the side).
#![allow(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::memory::{Atomic, Memory, SharedMem};
use super::wait::{self, block_until, ring_health, Wait};
use super::{
    frame_size, max_payload, seal, End, Handle, Header, Mode, PeerCheck, RawFrame, Ring,
    CONSUMER_CLOSED, FRAME_WORD, KIND_DROP, KIND_MORE, KIND_PAD, LONG_HEADER, MAX_KIND,
    PRODUCER_CLOSED,
};
use crate::error::{Error, ErrorKind, Result};

/// The reading end of a ring.
pub(crate) struct Consumer<M: Memory = SharedMem> {
    end: End<M>,
    /// Spsc: the authoritative head. Mpmc: refreshed under the lock.
    head: u64,
    /// A long message taken from the ring and handed back unread
    /// ([`Frame::keep`]): the next read gets it first.
    stash: Option<(u8, Vec<u8>)>,
}

impl Handle for Consumer {
    fn ring(&self) -> &Ring {
        &self.end.ring
    }
}

impl<M: Memory> Consumer<M> {
    pub(super) fn new(ring: Ring<M>, pid: u32) -> Consumer<M> {
        Consumer {
            end: End::new(ring, pid),
            head: 0,
            stash: None,
        }
    }

    /// Sets how long blocking calls spin before they park.
    #[cfg(test)]
    pub(crate) fn set_spin(&mut self, spin: std::time::Duration) {
        self.end.spin = spin;
    }

    /// Sets a liveness check of the producer(s), run every ≤ 100 ms while
    /// blocked on an empty ring. Without one, Spsc uses the producer's
    /// recorded pid.
    pub(crate) fn set_peer_check(&mut self, check: PeerCheck) {
        self.end.peer_alive = Some(check);
    }

    #[inline]
    fn header(&self) -> &Header<M> {
        self.end.header()
    }

    fn protocol(&mut self, what: impl Into<String>) -> Error {
        self.end.protocol(what)
    }

    #[inline]
    fn check_state(&self) -> Result<u32> {
        self.end.check_state("receiving")
    }

    #[inline]
    fn enter(&mut self, wait: &mut Wait) -> Result<()> {
        if self.end.ring.mode == Mode::Spsc {
            return Ok(());
        }
        self.end.lock(&self.header().cons.0, wait)?;
        // SYNC: Relaxed: the lock's Acquire orders the previous holder's
        // Release store of head before this load.
        let head = self.header().cons.0.pos.load(Ordering::Relaxed);
        if head == self.head {
            // Where this handle left it (a lone consumer, always): checked
            // then, and the producers' line is not read per take.
            return Ok(());
        }
        // SYNC: Acquire pairs with the Release stores of tail; only used
        // for the plausibility check (tail may lag committed frames).
        let tail = self.header().prod.0.pos.load(Ordering::Acquire);
        let cap = self.end.ring.mem.cap() as u64;
        if !head.is_multiple_of(8) || tail.wrapping_add(cap).wrapping_sub(head) > 2 * cap {
            self.leave();
            return Err(self.protocol(format!("ring head {head} invalid for tail {tail}")));
        }
        self.head = head;
        Ok(())
    }

    #[inline]
    fn leave(&mut self) {
        self.end.unlock(&self.header().cons.0);
    }

    /// Reads and validates the frame word at `head`, skipping padding.
    /// `None`: empty (and the producer is not closed).
    #[inline]
    fn try_peek_raw(&mut self) -> Result<Option<RawFrame>> {
        let cap = self.end.ring.mem.cap();
        loop {
            let off = (self.head as usize) & (cap - 1);
            // SYNC: Acquire pairs with the Release store of the frame word
            // in Producer::commit_raw / try_reserve_raw: the payload and the
            // next terminator are visible once we see the word.
            let mut w = self.end.ring.mem.word(off).load(Ordering::Acquire);
            if w == 0 {
                let st = self.check_state()?;
                if st & PRODUCER_CLOSED == 0 {
                    return Ok(None);
                }
                // Closed: frames committed before the close are visible now
                // (the close's Release pairs with check_state's Acquire).
                // SYNC: Acquire, as above.
                w = self.end.ring.mem.word(off).load(Ordering::Acquire);
                if w == 0 {
                    return Err(Error::new(
                        ErrorKind::Disconnected,
                        "the sending end was closed and nothing is left",
                    ));
                }
            }
            let len = (w & 0xFFFF_FFFF) as usize;
            let kind = (w >> 32) as u8;
            if w >> 40 != seal(self.head) {
                return Err(self.protocol(format!(
                    "ring frame word {w:#x} at position {} has a bad seal",
                    self.head
                )));
            }
            if kind == KIND_PAD {
                if off == 0 || len != cap - off - FRAME_WORD {
                    return Err(self.protocol(format!("ring padding of {len} at offset {off}")));
                }
                self.head = self.head.wrapping_add((cap - off) as u64);
                self.publish_head();
                continue;
            }
            if len > max_payload(cap) || off + frame_size(len) > cap {
                return Err(self.protocol(format!(
                    "ring frame of {len} bytes at offset {off} (capacity {cap})"
                )));
            }
            return Ok(Some(RawFrame {
                pos: self.head,
                off,
                kind,
                len,
            }));
        }
    }

    #[inline]
    fn publish_head(&self) {
        // SYNC: Release pairs with the Acquire load of head in
        // Producer::load_head: we are done reading these bytes.
        self.header().cons.0.pos.store(self.head, Ordering::Release);
    }

    #[inline]
    fn release_raw(&mut self, f: RawFrame) {
        self.head = f.pos.wrapping_add(frame_size(f.len) as u64);
        self.publish_head();
    }

    /// Wakes producers parked on a full ring, if any. Needed only after the
    /// `*_quiet` calls.
    pub(crate) fn notify(&self) {
        wait::notify(&self.header().prod_wait.0);
    }

    /// Takes the next frame, copying its payload into `buf` (cleared
    /// first; grows at most to the ring's maximum frame). `Ok(None)`: the
    /// ring is empty. Does not wake a producer parked on a full ring.
    ///
    /// # Errors
    ///
    /// `Disconnected` when the ring is empty and the producer closed;
    /// `Protocol` when a frame or position is invalid or the ring poisoned.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn try_pop_into_quiet(&mut self, buf: &mut Vec<u8>) -> Result<Option<u8>> {
        self.enter(&mut Wait::new(None))?;
        let r = match self.try_peek_raw() {
            Ok(Some(f)) => {
                self.end.ring.mem.read_into(f.off + FRAME_WORD, f.len, buf);
                self.release_raw(f);
                Ok(Some(f.kind))
            }
            other => other.map(|_| None),
        };
        self.leave();
        r
    }

    /// [`try_pop_into_quiet`](Self::try_pop_into_quiet), then wakes a
    /// parked producer.
    ///
    /// # Errors
    ///
    /// As [`try_pop_into_quiet`](Self::try_pop_into_quiet).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn try_pop_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<u8>> {
        let r = self.try_pop_into_quiet(buf)?;
        if r.is_some() {
            self.notify();
        }
        Ok(r)
    }

    /// Takes the next frame as `(kind, payload)`; `Ok(None)` when empty.
    ///
    /// # Errors
    ///
    /// As [`try_pop_into`](Self::try_pop_into).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn try_pop(&mut self) -> Result<Option<(u8, Vec<u8>)>> {
        let mut buf = Vec::new();
        Ok(self.try_pop_into(&mut buf)?.map(|k| (k, buf)))
    }

    /// Takes the next frame, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    ///
    /// As [`try_pop`](Self::try_pop), plus `Timeout`, and `PeerDied` when
    /// the ring is empty and the producer is gone.
    #[cfg(test)]
    pub(crate) fn pop(&mut self, deadline: Option<Instant>) -> Result<(u8, Vec<u8>)> {
        let mut wait = Wait::new(deadline);
        let mut buf = Vec::new();
        loop {
            if let Some(k) = self.try_pop_into(&mut buf)? {
                return Ok((k, buf));
            }
            self.wait_readable(&mut wait)?;
        }
    }

    /// Blocks until the ring might hold a frame (a hint: the caller
    /// retries), the deadline passes or the producer is gone.
    pub(super) fn wait_readable(&mut self, wait: &mut Wait) -> Result<()> {
        let h = self.end.ring.header();
        let spsc_head = (self.end.ring.mode == Mode::Spsc).then_some(self.head);
        let ring = &self.end.ring;
        let ready = || ring.readable(spsc_head);
        let health = || ring_health(&self.end.ring, || self.peer_alive(), "sending");
        block_until(
            self.end.spin,
            &h.cons_wait.0,
            wait,
            ready,
            health,
            "nothing arrived in time",
        )
    }

    fn peer_alive(&self) -> bool {
        self.end.peer_alive(&self.header().prod.0)
    }

    /// Marks the consumer side closed and wakes producers: their pushes
    /// then fail with `Disconnected`. Spsc consumers close on drop.
    pub(crate) fn close(&mut self) {
        self.end.close(CONSUMER_CLOSED);
    }
}

impl<M: Memory> Drop for Consumer<M> {
    fn drop(&mut self) {
        if self.end.ring.mode == Mode::Spsc {
            self.close();
        }
    }
}

/// The message at the consumer's head: one frame read in place, or a long
/// message assembled from its pieces. Dropping it releases the frame (its
/// bytes go back to the producer); in Mpmc the consumer lock is held until
/// then.
pub(crate) struct Frame<'a> {
    consumer: &'a mut Consumer,
    body: Body,
    /// The side is held (Mpmc: locked) and is left on drop.
    held: bool,
}

/// Where a [`Frame`]'s bytes are.
enum Body {
    /// In the ring, not yet released.
    InPlace(RawFrame),
    /// A long message's pieces, copied out (and released) in order.
    Whole(u8, Vec<u8>),
}

impl Frame<'_> {
    /// The message's kind (0..=MAX_KIND).
    pub(crate) fn kind(&self) -> u8 {
        match &self.body {
            Body::InPlace(f) => f.kind,
            Body::Whole(kind, _) => *kind,
        }
    }

    /// The payload: in place in the ring, or a long message's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::InPlace(f) => self.consumer.frame_bytes(*f),
            Body::Whole(_, bytes) => bytes,
        }
    }

    /// Puts the payload into `buf` (replacing what it held): a long
    /// message's buffer is handed over without a copy.
    pub(crate) fn take_into(mut self, buf: &mut Vec<u8>) {
        match &mut self.body {
            Body::Whole(_, bytes) => std::mem::swap(buf, bytes),
            Body::InPlace(f) => {
                buf.clear();
                buf.extend_from_slice(self.consumer.frame_bytes(*f));
            }
        }
    }

    /// Leaves the message unconsumed: the next read of this consumer meets
    /// it again (a message that did not fit the caller's buffer is not
    /// lost). A long message, whose pieces are already out of the ring,
    /// waits in this consumer.
    pub(crate) fn keep(self) {
        let mut this = std::mem::ManuallyDrop::new(self);
        if let Body::Whole(kind, bytes) =
            std::mem::replace(&mut this.body, Body::Whole(0, Vec::new()))
        {
            this.consumer.stash = Some((kind, bytes));
        }
        if this.held {
            this.consumer.leave();
        }
    }
}

/// A hold of the consumer side for [`Consumer::take_each`]: released on
/// drop (a panicking `read` included), waking a parked producer if frames
/// were released.
/// What [`Consumer::take_items`]'s reader took of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Took {
    /// Its last `n` items: the frame is released.
    All(usize),
    /// `n` items, not the last: the frame stays, its payload's first 8
    /// bytes set to `cursor` (native byte order).
    Part { n: usize, cursor: u64 },
}

struct Hold<'a> {
    consumer: &'a mut Consumer,
    released: bool,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.consumer.leave();
        if self.released {
            self.consumer.notify();
        }
    }
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        if let Body::InPlace(f) = self.body {
            self.consumer.release_raw(f);
            self.consumer.notify();
        }
        if self.held {
            self.consumer.leave();
        }
    }
}

// In place: the caller reads the ring's bytes, so only memory with
// addressable bytes (a region) offers it.
impl Consumer {
    /// The payload of `frame`, one [`try_peek_raw`](Self::try_peek_raw)
    /// returned and this consumer has not released, while it still holds
    /// the side.
    fn frame_bytes(&self, frame: RawFrame) -> &[u8] {
        let mem = &self.end.ring.mem;
        let start = frame.off + FRAME_WORD;
        assert!(start + frame.len <= mem.cap(), "ring: bad frame");
        // SAFETY: in bounds (asserted; the frame was validated against the
        // local capacity), initialised bytes. By the ring protocol they are
        // the consumer's until it publishes a head past them (after this
        // borrow of `self` ends: releasing needs `&mut self`): the producer
        // wrote them before its Release store of the frame word we
        // Acquire-loaded, and writes there again only after seeing our head
        // move. (A peer that breaks the protocol can change the bytes under
        // us; any bytes are valid `u8`s, and such a peer is outside this
        // process.)
        unsafe { std::slice::from_raw_parts(mem.data_at(start), frame.len) }
    }

    /// Leaves `frame` (which [`try_peek_raw`](Self::try_peek_raw)
    /// returned, side held) first in the ring, part of its items taken:
    /// its payload's first 8 bytes become `cursor`, which the next reader
    /// of the frame, in any process, reads after taking the side.
    fn keep_part(&mut self, frame: RawFrame, cursor: u64) -> Result<()> {
        if frame.len < 8 {
            return Err(self
                .end
                .ring
                .poison("a frame taken in parts has no room for its cursor"));
        }
        // The consumer side's bytes until released (see `frame_bytes`); a
        // raw copy, no reference to them. SYNC: no ordering of its own:
        // the next reader takes the side after we give it up (the side
        // lock's Release/Acquire orders this write before its read), or is
        // this consumer again (one thread: SPSC).
        self.end
            .ring
            .mem
            .write(frame.off + FRAME_WORD, &cursor.to_ne_bytes());
        Ok(())
    }

    /// The message that starts with `first` (held side): itself, or, for
    /// the first piece of a long message, the whole message. `None`: a
    /// long message its producer dropped midway, now released; read on.
    #[cold]
    fn message(&mut self, first: RawFrame) -> Result<Option<Body>> {
        match first.kind {
            KIND_MORE => Ok(self
                .assemble(first)?
                .map(|(kind, bytes)| Body::Whole(kind, bytes))),
            // Only ever after pieces, which `assemble` takes with it; a
            // stray one (a peer's scribble) is skipped the same way.
            KIND_DROP => {
                self.release_raw(first);
                self.notify();
                Ok(None)
            }
            _ => Ok(Some(Body::InPlace(first))),
        }
    }

    /// Takes every piece of the long message that starts with `first`,
    /// under the current hold of the side, releasing each as it is copied
    /// (so the producer streams the rest through the room it frees), and
    /// waiting for pieces still to come with no deadline: their producer
    /// holds its side until the last one (`Producer::push_long`), and a
    /// producer that dies or closes midway ends the wait. Returns the last
    /// piece's kind and the whole payload, or `None` when the producer
    /// gave the message up ([`KIND_DROP`]): its pieces are dropped.
    ///
    /// A message cut off otherwise (its producer gone, the memory for it
    /// refused) poisons the ring: its remaining pieces could only be
    /// misread.
    fn assemble(&mut self, first: RawFrame) -> Result<Option<(u8, Vec<u8>)>> {
        // The first piece opens with the message's length: a peer's word,
        // so it sizes the first allocation (capped) and is checked at the
        // end, nothing more.
        let mut head = [0u8; LONG_HEADER];
        if first.len < LONG_HEADER {
            let why = format!("a long message's first piece of {} bytes", first.len);
            return Err(self.end.ring.poison(why));
        }
        head.copy_from_slice(&self.frame_bytes(first)[..LONG_HEADER]);
        let total = u64::from_le_bytes(head);
        let mut bytes: Vec<u8> = Vec::new();
        let first_alloc = usize::try_from(total).unwrap_or(usize::MAX).min(1 << 30);
        if bytes.try_reserve_exact(first_alloc).is_err() {
            let why = format!("a message of {total} bytes does not fit in this process's memory");
            return Err(self.end.ring.poison(why));
        }
        let mut piece = first;
        let mut skip = LONG_HEADER;
        let mut wait = Wait::new(None);
        loop {
            let data = &self.frame_bytes(piece)[skip..];
            if bytes.try_reserve(data.len()).is_err() {
                let why = format!(
                    "a message of more than {} bytes does not fit in this process's memory",
                    bytes.len() + data.len()
                );
                return Err(self.end.ring.poison(why));
            }
            bytes.extend_from_slice(data);
            skip = 0;
            self.release_raw(piece);
            self.notify();
            match piece.kind {
                KIND_MORE => {}
                KIND_DROP => return Ok(None),
                _ if bytes.len() as u64 != total => {
                    let why = format!(
                        "a long message announced {total} bytes and brought {}",
                        bytes.len()
                    );
                    return Err(self.end.ring.poison(why));
                }
                kind => return Ok(Some((kind, bytes))),
            }
            piece = loop {
                let next = match self.try_peek_raw() {
                    Ok(Some(next)) => break next,
                    Ok(None) => self.wait_readable(&mut wait),
                    Err(e) => Err(e),
                };
                if let Err(e) = next {
                    let why = format!(
                        "a long message was cut off after {} bytes: {e}",
                        bytes.len()
                    );
                    return Err(self.end.ring.poison(why));
                }
            };
        }
    }

    /// Takes up to `max` frames in order, under one hold of the consumer
    /// side (Mpmc: one lock for all of them): waits until `deadline` for
    /// the first, then takes only those already there, and wakes a parked
    /// producer once. `read(kind, payload)` gets each frame in place.
    /// Returns how many were taken (at least 1 unless `max` is 0).
    ///
    /// When `read` fails on the first frame, that frame is consumed and the
    /// error returned, as [`pop`](Self::pop) does; when it fails on a later
    /// one, that frame stays in the ring (the next call meets it first) and
    /// the count so far is returned, so nothing already read is lost. An
    /// error of the ring after the first frame is likewise left for the
    /// next call. A long message (`Producer::push_long`) is taken whole
    /// and alone: it ends a call that has taken others, or is the one
    /// message of the next.
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop), and `read`'s error on the first frame.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn take_each(
        &mut self,
        max: usize,
        deadline: Option<Instant>,
        mut read: impl FnMut(u8, &[u8]) -> Result<()>,
    ) -> Result<usize> {
        self.take_items(max, deadline, |kind, bytes, _| {
            read(kind, bytes).map(|()| Took::All(1))
        })
    }

    /// [`take_each`](Self::take_each) counting items, where a frame may
    /// hold several: `read(kind, payload, budget)` takes at most `budget`
    /// (≥ 1) of a frame's items and says how many, and whether that was
    /// the rest of the frame ([`Took::All`]) or a part ([`Took::Part`]):
    /// then the frame stays first in the ring, its payload's first 8 bytes
    /// set to the `cursor` `read` gives (where the next reader, in any
    /// process, takes up), and the call ends. Up to `max` items in all.
    ///
    /// # Errors
    ///
    /// As [`take_each`](Self::take_each).
    pub(crate) fn take_items(
        &mut self,
        max: usize,
        deadline: Option<Instant>,
        mut read: impl FnMut(u8, &[u8], usize) -> Result<Took>,
    ) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        if let Some((kind, bytes)) = self.stash.take() {
            // Consumed either way, as a first frame is. (Only a long
            // message is stashed: it is one item.)
            read(kind, &bytes, 1)?;
            return Ok(1);
        }
        let mut wait = Wait::new(deadline);
        loop {
            self.enter(&mut wait)?;
            let mut hold = Hold {
                consumer: self,
                released: false,
            };
            let mut taken = 0;
            while taken < max {
                let frame = match hold.consumer.try_peek_raw() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) if taken == 0 => return Err(e),
                    Err(_) => break,
                };
                if frame.kind == KIND_MORE || frame.kind == KIND_DROP {
                    // A long message comes alone, as the first of a call.
                    if taken > 0 {
                        break;
                    }
                    hold.released = true;
                    match hold.consumer.message(frame)? {
                        Some(Body::Whole(kind, bytes)) => {
                            read(kind, &bytes, 1)?;
                            return Ok(1);
                        }
                        // Dropped by its producer: read on.
                        _ => continue,
                    }
                }
                let outcome = read(frame.kind, hold.consumer.frame_bytes(frame), max - taken);
                match outcome {
                    Ok(Took::All(n)) => {
                        hold.consumer.release_raw(frame);
                        hold.released = true;
                        taken += n;
                    }
                    Ok(Took::Part { n, cursor }) => {
                        hold.consumer.keep_part(frame, cursor)?;
                        taken += n;
                        break;
                    }
                    Err(_) if taken > 0 => break,
                    Err(e) => {
                        hold.consumer.release_raw(frame);
                        hold.released = true;
                        return Err(e);
                    }
                }
            }
            if taken > 0 {
                return Ok(taken);
            }
            drop(hold);
            self.wait_readable(&mut wait)?;
        }
    }

    /// The next frame in place; `Ok(None)` when empty.
    ///
    /// # Errors
    ///
    /// As [`try_pop`](Self::try_pop).
    pub(crate) fn try_peek(&mut self) -> Result<Option<Frame<'_>>> {
        if self.stash.is_some() {
            return Ok(self.stashed());
        }
        self.enter(&mut Wait::new(None))?;
        let body = loop {
            match self.try_peek_raw() {
                Ok(Some(first)) => match self.message(first) {
                    Ok(Some(body)) => break Ok(body),
                    Ok(None) => continue,
                    Err(e) => break Err(e),
                },
                Ok(None) => {
                    self.leave();
                    return Ok(None);
                }
                Err(e) => break Err(e),
            }
        };
        match body {
            Ok(body) => Ok(Some(Frame {
                consumer: self,
                body,
                held: true,
            })),
            Err(e) => {
                self.leave();
                Err(e)
            }
        }
    }

    /// The long message [`Frame::keep`] handed back, if any, as a frame.
    fn stashed(&mut self) -> Option<Frame<'_>> {
        let (kind, bytes) = self.stash.take()?;
        Some(Frame {
            consumer: self,
            body: Body::Whole(kind, bytes),
            held: false,
        })
    }

    /// Waits until a frame is ready (`Ok(true)`) or `deadline` passes
    /// (`Ok(false)`), without taking it: Python's `Connection.poll`.
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop), except that a timeout is `Ok(false)`.
    pub(crate) fn poll(&mut self, deadline: Option<Instant>) -> Result<bool> {
        if self.stash.is_some() {
            return Ok(true);
        }
        let mut wait = Wait::new(deadline);
        let outcome = loop {
            if let Err(e) = self.enter(&mut wait) {
                break Err(e);
            }
            let ready = self.try_peek_raw();
            self.leave();
            match ready {
                Ok(Some(_)) => break Ok(true),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if let Err(e) = self.wait_readable(&mut wait) {
                break Err(e);
            }
        };
        match outcome {
            Err(e) if e.is_timeout() => Ok(false),
            other => other,
        }
    }

    /// The next frame in place, waiting until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop).
    pub(crate) fn peek(&mut self, deadline: Option<Instant>) -> Result<Frame<'_>> {
        if self.stash.is_some() {
            return Ok(self.stashed().expect("checked"));
        }
        let mut wait = Wait::new(deadline);
        let body = loop {
            self.enter(&mut wait)?;
            let found = match self.try_peek_raw() {
                // The common case, kept apart from the long-message path.
                Ok(Some(first)) if first.kind <= MAX_KIND => break Body::InPlace(first),
                Ok(Some(first)) => self.message(first),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            match found {
                Ok(Some(body)) => break body,
                Ok(None) => self.leave(),
                Err(e) => {
                    self.leave();
                    return Err(e);
                }
            }
            self.wait_readable(&mut wait)?;
        };
        Ok(Frame {
            consumer: self,
            body,
            held: true,
        })
    }
}
