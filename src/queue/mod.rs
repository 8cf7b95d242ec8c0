//! `Queue`, `SimpleQueue`, `JoinableQueue`: many producers and consumers
//! across processes, over one multi-producer multi-consumer byte ring in a
//! shared-memory segment.
//!
//! Segment layout: a [`QueueHeader`] (put and get counters on separate
//! cache lines, unfinished tasks, the participants table), then the ring at
//! [`RING_OFFSET`]. Items are
//! serialised straight into the ring (no intermediate buffer): a primitive
//! number as its little-endian bytes, anything else with postcard
//! ([`item`]). The count is a hint for `len()`, like Python's `qsize()`.
//!
//! Files: this one holds the shared state every handle of one queue keeps
//! (`Inner`: the segment, the ring's two ends, close); `fifo.rs` the
//! `Queue`/`SimpleQueue` calls; `joinable.rs` `JoinableQueue`, whose task
//! count lives in the same header so no put can skip it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::{Call, Error, ErrorKind, Result};
use crate::participants::Participants;
use crate::ring::{self, Consumer, Mode, PeerCheck, Producer, Ring};
use crate::segment::{in_place, Line, Segment, SegmentHandle, SegmentRegion, Typed};
use crate::sys;
use crate::wait::Wait;

/// How a queue's items cross. Every handle of a `Queue<T>` has the same
/// `T`, so both ends pick the same form from the type alone: a primitive
/// number (`u64`, `f64`, ...) as its little-endian bytes, fixed width (one
/// store and one load, where postcard's varint was a measured third of a
/// `put_many`'s producer); anything else in postcard.
pub(crate) mod item {
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use crate::codec;
    use crate::error::{Error, ErrorKind, Result};
    use crate::pool::{bulk, raw};
    use crate::ring::{Producer, Took};

    /// Encoded length of `item`.
    pub(crate) fn len<T: Serialize + 'static>(item: &T) -> Result<usize> {
        match raw::raw_size::<T>() {
            Some(size) => Ok(size),
            None => bulk::encoded_len(item).map_or_else(|| codec::serde_len(item), Ok),
        }
    }

    /// Writes `item` into the front of `buf` (at least [`len`] bytes);
    /// returns the bytes written.
    pub(crate) fn encode_into<T: Serialize + 'static>(item: &T, buf: &mut [u8]) -> Result<usize> {
        if raw::raw_size::<T>().is_none() {
            return match bulk::encode_into(item, buf) {
                Some(written) => written.map_err(|e| Error::codec("encode value", e)),
                None => codec::encode_serde_into(item, buf),
            };
        }
        raw::write_one(item, buf)
            .ok_or_else(|| Error::new(ErrorKind::Codec, "encode value: no room for the number"))
    }

    /// The item in a whole payload.
    pub(crate) fn decode<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T> {
        match raw::read_one::<T>(bytes) {
            Some(Some(value)) => Ok(value),
            Some(None) => Err(Error::new(
                ErrorKind::Codec,
                format!(
                    "decode value: {} bytes where a {} of {} bytes was expected",
                    bytes.len(),
                    std::any::type_name::<T>(),
                    std::mem::size_of::<T>()
                ),
            )),
            None => match bulk::decode_front::<T>(bytes) {
                Some(Ok((value, used))) if used == bytes.len() => Ok(value),
                Some(Ok((_, used))) => Err(Error::new(
                    ErrorKind::Codec,
                    format!("{} trailing bytes after the value", bytes.len() - used),
                )),
                Some(Err(e)) => Err(Error::codec("decode value", e)),
                None => codec::decode_serde(bytes),
            },
        }
    }

    /// Pushes `item` as one frame of `kind` (a long one streamed, as
    /// [`codec::push_value`]), waiting for room until `deadline`.
    pub(crate) fn push<T: Serialize + 'static>(
        producer: &mut Producer,
        kind: u8,
        item: &T,
        deadline: Option<std::time::Instant>,
    ) -> Result<()> {
        let Some(size) = raw::raw_size::<T>() else {
            return codec::push_value(producer, kind, item, deadline);
        };
        let mut r = producer.reserve(size, deadline)?;
        let written = encode_into(item, r.buf())?;
        r.commit(kind, written)
    }

    /// Takes up to `budget` (≥ 1) items of a frame of `kind` into `out`:
    /// the frame's one item, or the next ones of a batch frame
    /// ([`super::KIND_BATCH`]), leaving the rest of it for the next
    /// reader ([`Took::Part`]).
    pub(crate) fn take_many<T: DeserializeOwned + 'static>(
        kind: u8,
        bytes: &[u8],
        budget: usize,
        out: &mut Vec<T>,
    ) -> Result<Took> {
        if kind != super::KIND_BATCH {
            out.push(decode(bytes)?);
            return Ok(Took::All(1));
        }
        let batch = Batch::of::<T>(bytes)?;
        let n = (batch.count - batch.taken).min(budget.max(1));
        let from = super::BATCH_HEADER + batch.taken * batch.size;
        if !raw::extend_from_raw(out, &bytes[from..from + n * batch.size]) {
            return Err(not_numbers::<T>());
        }
        Ok(batch.took(n))
    }

    /// [`take_many`] of one item, into `out`.
    pub(crate) fn take_one<T: DeserializeOwned + 'static>(
        kind: u8,
        bytes: &[u8],
        out: &mut Option<T>,
    ) -> Result<Took> {
        if kind != super::KIND_BATCH {
            *out = Some(decode(bytes)?);
            return Ok(Took::All(1));
        }
        let batch = Batch::of::<T>(bytes)?;
        let from = super::BATCH_HEADER + batch.taken * batch.size;
        *out = raw::read_native::<T>(&bytes[from..from + batch.size]).flatten();
        if out.is_none() {
            return Err(not_numbers::<T>());
        }
        Ok(batch.took(1))
    }

    /// Items left in a frame of `kind` (a shutdown's drain counts them).
    pub(crate) fn left<T: 'static>(kind: u8, bytes: &[u8]) -> usize {
        if kind != super::KIND_BATCH {
            return 1;
        }
        Batch::of::<T>(bytes).map_or(1, |b| b.count - b.taken)
    }

    /// A batch frame's items: `count`, `taken` by earlier readers, `size`
    /// bytes each.
    struct Batch {
        count: usize,
        taken: usize,
        size: usize,
    }

    impl Batch {
        /// Reads and checks a batch frame's payload as `T`s (a peer wrote
        /// it: a bad length or cursor is an error, never a panic).
        fn of<T: 'static>(bytes: &[u8]) -> Result<Batch> {
            let size = raw::raw_size::<T>().ok_or_else(not_numbers::<T>)?;
            let body = bytes.len().saturating_sub(super::BATCH_HEADER);
            if bytes.len() <= super::BATCH_HEADER || !body.is_multiple_of(size) {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "a batch frame of {} bytes is not a cursor and {size}-byte items",
                        bytes.len()
                    ),
                ));
            }
            let count = body / size;
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[..8]);
            let cursor = u64::from_ne_bytes(word);
            let taken = usize::try_from(cursor)
                .ok()
                .filter(|&t| t < count)
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Protocol,
                        format!("a batch frame's cursor {cursor} is not below its {count} items"),
                    )
                })?;
            Ok(Batch { count, taken, size })
        }

        /// What taking `n` more items of it is.
        fn took(&self, n: usize) -> Took {
            if self.taken + n == self.count {
                Took::All(n)
            } else {
                Took::Part {
                    n,
                    cursor: (self.taken + n) as u64,
                }
            }
        }
    }

    fn not_numbers<T>() -> Error {
        Error::new(
            ErrorKind::Codec,
            format!(
                "decode value: a batch of numbers where a {} was expected",
                std::any::type_name::<T>()
            ),
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// A batch frame's payload: `cursor`, then `items`.
        fn batch(cursor: u64, items: &[u64]) -> Vec<u8> {
            let mut b = cursor.to_ne_bytes().to_vec();
            for x in items {
                b.extend_from_slice(&x.to_ne_bytes());
            }
            b
        }

        #[test]
        fn a_batch_frame_gives_its_items_in_parts_and_refuses_bad_bytes() {
            let k = super::super::KIND_BATCH;
            let frame = batch(0, &[5, 6, 7]);
            let mut out = Vec::new();
            assert_eq!(
                take_many::<u64>(k, &frame, 2, &mut out).unwrap(),
                Took::Part { n: 2, cursor: 2 }
            );
            assert_eq!(out, [5, 6]);
            let frame = batch(2, &[5, 6, 7]);
            assert_eq!(left::<u64>(k, &frame), 1);
            assert_eq!(
                take_many::<u64>(k, &frame, 9, &mut out).unwrap(),
                Took::All(1)
            );
            assert_eq!(out, [5, 6, 7]);
            let mut one = None;
            assert_eq!(
                take_one::<u64>(k, &batch(1, &[5, 6, 7]), &mut one).unwrap(),
                Took::Part { n: 1, cursor: 2 }
            );
            assert_eq!(one, Some(6));
            // What a peer may have written instead: errors, never a panic.
            for (bytes, why) in [
                (batch(3, &[5, 6, 7]), "cursor 3 is not below its 3 items"),
                (batch(u64::MAX, &[5]), "is not below"),
                (batch(0, &[]), "is not a cursor"),
                (vec![0u8; 5], "is not a cursor"),
                (vec![0u8; 8 + 12], "is not a cursor and 8-byte items"),
            ] {
                let e = take_many::<u64>(k, &bytes, 1, &mut out).unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
                assert!(e.to_string().contains(why), "{e}");
                assert!(take_one::<u64>(k, &bytes, &mut one).is_err());
                assert_eq!(left::<u64>(k, &bytes), 1);
            }
            // Read as something that is not a number: a codec error.
            let e = take_many::<String>(k, &batch(0, &[5]), 1, &mut Vec::new()).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Codec, "{e}");
            // Other kinds are one item each, as before.
            let mut strings = Vec::new();
            let n = encode_into(&"hi".to_string(), &mut [0u8; 8]).unwrap();
            assert_eq!(n, 3);
            assert_eq!(
                take_many::<u64>(super::super::KIND_ITEM, &7u64.to_le_bytes(), 5, &mut out)
                    .unwrap(),
                Took::All(1)
            );
            assert_eq!(out.last(), Some(&7));
            assert!(take_many::<String>(
                super::super::KIND_ITEM,
                &[2, b'h', b'i'],
                5,
                &mut strings
            )
            .is_ok());
            assert_eq!(strings, ["hi"]);
        }

        #[test]
        fn numbers_cross_fixed_width_and_the_rest_as_postcard() {
            let mut buf = [0u8; 16];
            assert_eq!(len(&7u64).unwrap(), 8);
            assert_eq!(encode_into(&7u64, &mut buf).unwrap(), 8);
            assert_eq!(buf[..8], 7u64.to_le_bytes());
            assert_eq!(decode::<u64>(&buf[..8]).unwrap(), 7);
            assert_eq!(encode_into(&-1.5f32, &mut buf).unwrap(), 4);
            assert_eq!(decode::<f32>(&buf[..4]).unwrap(), -1.5);
            // Bytes of the wrong length are a codec error, not a panic.
            let e = decode::<u64>(&buf[..3]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Codec, "{e}");
            assert!(encode_into(&7u64, &mut buf[..4]).is_err());
            // Anything else is postcard, as before.
            let s = "hello".to_string();
            let n = encode_into(&s, &mut buf).unwrap();
            assert_eq!(n, len(&s).unwrap());
            assert_eq!(decode::<String>(&buf[..n]).unwrap(), "hello");
            assert_eq!(
                len(&(1u8, 2u8)).unwrap(),
                2,
                "a tuple of numbers is postcard"
            );
        }
    }
}

/// Ring bytes of [`Queue::new`].
const DEFAULT_CAPACITY: usize = 1 << 20;
const KIND_ITEM: u8 = 1;
/// Many number items in one frame (`put_many` of primitive numbers): an
/// 8-byte cursor (the items taken so far, 0 when put; a consumer that
/// takes only some of them leaves the frame and sets it), then the items'
/// bytes back to back, in this machine's byte order. Any consumer may
/// take any of them, as from frames of one item each.
pub(crate) const KIND_BATCH: u8 = 2;
/// The cursor before a batch frame's items.
const BATCH_HEADER: usize = 8;
/// Most items of one batch frame (32 KiB of `u64`).
const BATCH_ITEMS: usize = 4096;
/// Where the ring starts in the segment (after the header, 64-aligned).
const RING_OFFSET: usize = 1024;

in_place! {
    struct QueueHeader {
        /// Items ever put (written by producers only) …
        puts: Line<AtomicU64>,
        /// … and ever taken (consumers only): `len` is the difference.
        gets: Line<AtomicU64>,
        /// `JoinableQueue`: items put and not yet marked done; `join` sleeps
        /// on it as a futex word.
        unfinished: AtomicU32,
        /// Non-zero for a `JoinableQueue`'s segment: every put, through any
        /// handle of any type, counts an unfinished task. Written once before
        /// the handle exists.
        counts_tasks: AtomicU32,
        /// Python's `maxsize`: at most this many items in the queue; 0 for
        /// no bound but the ring's bytes. Written once before the handle
        /// exists.
        maxsize: AtomicU32,
        /// With a `maxsize`: items reserved by puts and not yet taken by
        /// gets. Producers waiting for it to fall sleep on it.
        held: AtomicU32,
        /// Producers asleep on `held` (Dekker with the getters' wake).
        held_sleepers: AtomicU32,
        /// 0, or [`SHUT_DOWN`] / [`SHUT_DOWN_NOW`] after `shutdown`.
        shutdown: AtomicU32,
        participants: Participants,
    }
}

/// `shutdown(false)`: puts fail; gets take what is left, then fail.
const SHUT_DOWN: u32 = 1;
/// `shutdown(true)`: the items were dropped; gets fail at once.
const SHUT_DOWN_NOW: u32 = 2;

const _: () = assert!(std::mem::size_of::<QueueHeader>() <= RING_OFFSET);

struct Inner {
    header: Typed<QueueHeader>,
    ring: Ring,
    producer: Mutex<Option<Producer>>,
    consumer: Mutex<Option<Consumer>>,
    slot: Option<usize>,
    /// `close()` was called on this process's handles.
    closed: AtomicBool,
    /// The segment's `counts_tasks`, read once (it never changes).
    counts_tasks: bool,
    /// The segment's `maxsize`, read once (it never changes).
    maxsize: u32,
}

impl Inner {
    fn header(&self) -> &QueueHeader {
        self.header.get()
    }

    /// The ring's part of the segment: everything after `RING_OFFSET`.
    fn ring_region(segment: &Arc<Segment>) -> Result<Arc<SegmentRegion>> {
        segment
            .len()
            .checked_sub(RING_OFFSET)
            .filter(|&len| len > 0)
            .and_then(|len| SegmentRegion::new(segment, RING_OFFSET, len))
            .map(Arc::new)
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "queue segment too small"))
    }

    fn create(capacity: usize, counts_tasks: bool, maxsize: u32) -> Result<Inner> {
        let capacity = capacity
            .clamp(ring::MIN_CAPACITY, ring::MAX_CAPACITY)
            .next_power_of_two();
        let segment = Arc::new(Segment::create(RING_OFFSET + ring::region_size(capacity))?);
        let ring = Ring::create(Self::ring_region(&segment)?, capacity, Mode::Mpmc)?;
        let mut inner = Inner::with(Typed::new(segment)?, ring);
        // SYNC: Relaxed: no other process has this segment's handle yet;
        // whatever sends the handle (a spawn, a ring, a pipe) orders this
        // store before the other side's first look.
        inner
            .header()
            .counts_tasks
            .store(u32::from(counts_tasks), Ordering::Relaxed);
        inner.counts_tasks = counts_tasks;
        // SYNC: Relaxed, as `counts_tasks` above.
        inner.header().maxsize.store(maxsize, Ordering::Relaxed);
        inner.maxsize = maxsize;
        Ok(inner)
    }

    fn open(handle: &SegmentHandle) -> Result<Inner> {
        let segment = Arc::new(Segment::open(handle)?);
        let ring = Ring::attach(Self::ring_region(&segment)?)?;
        if ring.mode() != Mode::Mpmc {
            return Err(Error::new(
                ErrorKind::Protocol,
                "segment does not hold a queue",
            ));
        }
        Ok(Inner::with(Typed::new(segment)?, ring))
    }

    fn with(header: Typed<QueueHeader>, ring: Ring) -> Inner {
        let mut inner = Inner {
            header,
            ring,
            producer: Mutex::new(None),
            consumer: Mutex::new(None),
            slot: None,
            closed: AtomicBool::new(false),
            counts_tasks: false,
            maxsize: 0,
        };
        inner.slot = inner.header().participants.register();
        // SYNC: Relaxed: see `create`.
        inner.counts_tasks = inner.header().counts_tasks.load(Ordering::Relaxed) != 0;
        // SYNC: Relaxed: see `create`.
        inner.maxsize = inner.header().maxsize.load(Ordering::Relaxed);
        inner
    }

    /// Counts `n` more unfinished tasks if this is a joinable queue:
    /// before their items are visible, so `join` never sees an item done
    /// before it was counted. Every put path calls it, whatever the
    /// handle's type.
    fn count_tasks(&self, n: u32) {
        if self.counts_tasks {
            // SYNC: AcqRel pairs with the AcqRel decrement in `task_done`.
            self.header().unfinished.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Takes back one count of [`count_tasks`](Inner::count_tasks) (an
    /// item that did not go in), or marks one task done. Returns the
    /// count before.
    fn uncount_task(&self) -> u32 {
        let h = self.header();
        // SYNC: AcqRel: Release publishes the consumer's work to `join`'s
        // Acquire load; Acquire orders it after earlier task_done calls.
        let before = h.unfinished.fetch_sub(1, Ordering::AcqRel);
        if before == 1 {
            sys::futex_wake_all(&h.unfinished);
        }
        before
    }

    /// With a `maxsize`, waits until the queue holds fewer than `maxsize`
    /// items and reserves a place for one more, which the put then fills
    /// (or gives back with [`release_items`](Inner::release_items) if it
    /// fails).
    fn reserve_item(&self, deadline: Option<Instant>, call: &Call<'_>) -> Result<()> {
        if self.maxsize == 0 {
            return Ok(());
        }
        let h = self.header();
        let mut wait = Wait::new(deadline);
        loop {
            self.check_not_shut_down(call)?;
            // SYNC: Relaxed: the CAS below carries the ordering.
            let held = h.held.load(Ordering::Relaxed);
            if held < self.maxsize {
                // SYNC: AcqRel: the reservation orders after the get that
                // made room (its Release decrement).
                if h.held
                    .compare_exchange(held, held + 1, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            wait.check(|| match h.participants.dead() {
                None => Ok(()),
                Some(pid) => Err(Error::new(ErrorKind::PeerDied, PEER_DIED)
                    .with_pid(pid)
                    .in_call(call)),
            })?;
            // SYNC: SeqCst RMW + fence, paired with the fence in
            // `release_items` (Dekker): either the re-check below sees the
            // getter's decrement, or the getter sees this sleeper and wakes
            // it.
            h.held_sleepers.fetch_add(1, Ordering::SeqCst);
            std::sync::atomic::fence(Ordering::SeqCst);
            // SYNC: Relaxed, ordered by the fence above.
            let slept = if h.held.load(Ordering::Relaxed) == held {
                wait.sleep_on(&h.held, held, "")
            } else {
                Ok(())
            };
            // SYNC: Relaxed: a count of sleepers, read as a hint.
            h.held_sleepers.fetch_sub(1, Ordering::Relaxed);
            slept.map_err(|e| e.in_call(call))?;
        }
    }

    /// Gives back `n` places of [`reserve_item`](Inner::reserve_item): `n`
    /// items were taken (or a put failed), and waiting producers may go on.
    fn release_items(&self, n: u32) {
        if self.maxsize == 0 || n == 0 {
            return;
        }
        let h = self.header();
        // SYNC: Release pairs with the AcqRel CAS in `reserve_item`.
        h.held.fetch_sub(n, Ordering::Release);
        // SYNC: pairs with the fence in `reserve_item` (see there).
        std::sync::atomic::fence(Ordering::SeqCst);
        // SYNC: Relaxed, ordered by the fence above.
        if h.held_sleepers.load(Ordering::Relaxed) != 0 {
            sys::futex_wake(&h.held, n);
        }
    }

    /// 0, [`SHUT_DOWN`] or [`SHUT_DOWN_NOW`].
    fn shut_down(&self) -> u32 {
        // SYNC: Acquire pairs with the Release store in `shutdown`.
        self.header().shutdown.load(Ordering::Acquire)
    }

    /// `ShutDown` for a put (or a get, with `now`) after `shutdown`.
    fn check_not_shut_down(&self, call: &Call<'_>) -> Result<()> {
        if self.shut_down() != 0 {
            return Err(shut_down_error(call));
        }
        Ok(())
    }

    /// Turns the ring's `Disconnected` (its sending side is closed) into
    /// `ShutDown` once the queue was shut down.
    fn after_shutdown(&self, e: Error, call: &Call<'_>) -> Error {
        if e.is_disconnected() && self.shut_down() != 0 {
            shut_down_error(call)
        } else {
            e
        }
    }

    /// Blocked calls give up once a process sharing the queue has died
    /// abruptly (it is still registered: it never dropped its handle).
    fn peer_check(&self) -> PeerCheck {
        let header = self.header.clone();
        Arc::new(move || header.get().participants.dead().is_none())
    }

    /// An error for `call` once this process closed the queue.
    fn check_open(&self, call: &Call<'_>) -> Result<()> {
        // SYNC: Relaxed: a per-process flag; nothing is published with it.
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "this handle was closed (Queue::close)",
            )
            .in_call(call));
        }
        Ok(())
    }

    /// Runs `f` on this process's producer; its errors are worded for
    /// `call` (a `put` variant).
    fn with_producer<R>(
        &self,
        call: &Call<'_>,
        f: impl FnOnce(&mut Producer) -> Result<R>,
    ) -> Result<R> {
        self.with_producer_as(call, false, f)
    }

    /// [`with_producer`](Self::with_producer); `now`: see
    /// [`ring::with_handle_as`].
    fn with_producer_as<R>(
        &self,
        call: &Call<'_>,
        now: bool,
        f: impl FnOnce(&mut Producer) -> Result<R>,
    ) -> Result<R> {
        self.check_open(call)?;
        let make = || {
            let mut p = self.ring.producer()?;
            p.set_peer_check(self.peer_check());
            Ok(p)
        };
        ring::with_handle_as(&self.producer, now, make, f).map_err(|e| e.in_call(call))
    }

    /// Runs `f` on this process's consumer; its errors are worded for
    /// `call` (a `get` variant).
    fn with_consumer<R>(
        &self,
        call: &Call<'_>,
        f: impl FnOnce(&mut Consumer) -> Result<R>,
    ) -> Result<R> {
        self.with_consumer_as(call, false, f)
    }

    /// [`with_consumer`](Self::with_consumer); `now`: see
    /// [`ring::with_handle_as`].
    fn with_consumer_as<R>(
        &self,
        call: &Call<'_>,
        now: bool,
        f: impl FnOnce(&mut Consumer) -> Result<R>,
    ) -> Result<R> {
        self.check_open(call)?;
        let make = || {
            let mut c = self.ring.consumer()?;
            c.set_peer_check(self.peer_check());
            Ok(c)
        };
        ring::with_handle_as(&self.consumer, now, make, f).map_err(|e| e.in_call(call))
    }
}

/// A `maxsize` as the header keeps it.
/// What an async waiter thread watches for a `put_async`: a free place
/// (`maxsize`), then room in the ring for the item's frame. It holds views
/// of the segment, not an `Inner`: an `Inner` keeps this process
/// registered as a participant, which must end with the user's handles.
struct PutSource {
    header: Typed<QueueHeader>,
    maxsize: u32,
    ring: ring::RingSource,
}

impl PutSource {
    fn new(inner: &Inner, len: usize) -> PutSource {
        PutSource {
            header: inner.header.clone(),
            maxsize: inner.maxsize,
            ring: inner.ring.async_source(Some(len), inner.peer_check()),
        }
    }

    fn shut_down(&self) -> bool {
        // SYNC: Acquire pairs with the Release store in `shutdown`.
        self.header.get().shutdown.load(Ordering::Acquire) != 0
    }

    /// Whether a put must wait for a `get` to free a place.
    fn places_full(&self) -> bool {
        // SYNC: Relaxed: a hint; `reserve_item` decides with its CAS.
        self.maxsize != 0 && self.header.get().held.load(Ordering::Relaxed) >= self.maxsize
    }

    /// Sleeps once on `held`, as a blocked `reserve_item` does (counted
    /// among its sleepers, so a get's `release_items` wakes it).
    fn park_held(&self, slice: std::time::Duration) {
        let h = self.header.get();
        // SYNC: as in `reserve_item`: Dekker with `release_items`.
        h.held_sleepers.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        // SYNC: Relaxed, ordered by the fence above.
        let held = h.held.load(Ordering::Relaxed);
        if held >= self.maxsize && !self.shut_down() {
            sys::futex_wait(&h.held, held, slice);
        }
        // SYNC: Relaxed: a count of sleepers, read as a hint.
        h.held_sleepers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl crate::async_wait::Source for PutSource {
    fn ready(&self) -> bool {
        self.shut_down() || (!self.places_full() && self.ring.ready())
    }

    fn park(&self, slice: std::time::Duration) {
        if self.places_full() {
            self.park_held(slice);
        } else {
            self.ring.park(slice);
        }
    }

    fn healthy(&self) -> bool {
        self.ring.healthy()
    }
}

/// The same, for a `get_async`: a frame in the ring.
fn get_source(inner: &Arc<Inner>) -> Arc<dyn crate::async_wait::Source> {
    Arc::new(inner.ring.async_source(None, inner.peer_check()))
}

fn maxsize_u32(maxsize: usize) -> Result<u32> {
    u32::try_from(maxsize).map_err(|_| {
        Error::new(
            ErrorKind::InvalidState,
            format!("a queue's maxsize is at most {} items", u32::MAX),
        )
    })
}

fn shut_down_error(call: &Call<'_>) -> Error {
    Error::new(
        ErrorKind::ShutDown,
        format!("{}: the queue was shut down (Queue::shutdown)", call.name),
    )
}

/// What the ring's errors mean for a call that puts.
const fn putting(name: &'static str) -> Call<'static> {
    Call {
        name,
        timed_out: "the queue stayed full",
        peer_died: PEER_DIED,
        disconnected: "the queue was closed",
    }
}

/// What the ring's errors mean for a call that gets.
const fn getting(name: &'static str) -> Call<'static> {
    Call {
        name,
        timed_out: "the queue stayed empty",
        peer_died: PEER_DIED,
        disconnected: "the queue was closed",
    }
}

const PEER_DIED: &str = "a process sharing the queue died abruptly (without dropping its \
                         handle), so this call could never complete";

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.header().participants.unregister(slot);
        }
    }
}
mod fifo;
mod joinable;

pub use fifo::{Queue, SimpleQueue};
pub use joinable::JoinableQueue;
