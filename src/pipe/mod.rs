//! `pipe()`: two connected endpoints over rings in one shared-memory
//! segment (one ring per direction).
//!
//! Segment layout: the holders of each end (`holders.rs`), then ring 0,
//! which carries end 0 → end 1, and ring 1, which carries end 1 → end 0
//! (absent for a one-way pipe, where end 0 only receives, like Python's
//! `Pipe(duplex=False)`). The rings take a lock per side (`Mode::Mpmc`),
//! so any process holding an end may use it, as with Python's file
//! descriptors; the holder tables say when an end is gone everywhere.

mod holders;

pub(crate) use holders::handing_over;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::error::{Call, Error, ErrorKind, Result};
use crate::ring::{self, Consumer, Mode, PeerCheck, Producer, Ring};
use crate::segment::{Segment, SegmentHandle, SegmentRegion, Typed};
use crate::wait::deadline_after;

use holders::{Shared, HEADER_BYTES, PENDING};

/// Ring bytes per direction: 256 KiB, which a core's L2 cache holds, so
/// that a long message streams through lines still cached on both sides
/// (a 64 MiB `send_bytes` took 31–32.5 ms against 34–36 ms with 1 MiB
/// rings, A/B on 2 cores; one-way latency unchanged), and a duplex pipe
/// takes 512 KiB of shared memory, not 2 MiB. Values up to half of it go
/// in one frame (and through `send_async`); larger ones stream.
const CAPACITY: usize = 1 << 18;
const KIND_VALUE: u8 = 1;
const KIND_BYTES: u8 = 2;

/// The pipe's rings after its header: ring 0, and ring 1 if the pipe is
/// duplex (made here) or the segment holds it (attached).
fn rings_in(segment: &Arc<Segment>, create: bool, duplex: bool) -> Result<[Option<Ring>; 2]> {
    let count = if duplex { 2 } else { 1 };
    let mut rings = rings_at(
        segment,
        HEADER_BYTES,
        CAPACITY,
        count,
        create,
        Mode::Mpmc,
        "pipe",
    )?
    .into_iter();
    Ok([rings.next(), rings.next()])
}

/// Up to `count` SPSC rings of `ring_bytes` each, back to back from the
/// start of `segment`: made there (`create`), or attached to (as many as
/// the segment holds, at most `count`; at least one). `what` names the
/// owner in errors. A pool worker's task and result rings.
pub(crate) fn spsc_rings_in(
    segment: &Arc<Segment>,
    ring_bytes: usize,
    count: usize,
    create: bool,
    what: &str,
) -> Result<Vec<Ring>> {
    rings_at(segment, 0, ring_bytes, count, create, Mode::Spsc, what)
}

/// As [`spsc_rings_in`], from `offset` on, in `mode`: the one place that
/// lays rings out in a segment.
fn rings_at(
    segment: &Arc<Segment>,
    offset: usize,
    ring_bytes: usize,
    count: usize,
    create: bool,
    mode: Mode,
    what: &str,
) -> Result<Vec<Ring>> {
    let size = ring::region_size(ring_bytes);
    let room = segment.len().saturating_sub(offset);
    let count = if create {
        count
    } else {
        (room / size).min(count)
    };
    let too_small = || Error::new(ErrorKind::Protocol, format!("{what} segment too small"));
    if count == 0 || room < count * size {
        return Err(too_small());
    }
    let mut rings = Vec::with_capacity(count);
    for i in 0..count {
        let region =
            Arc::new(SegmentRegion::new(segment, offset + i * size, size).ok_or_else(too_small)?);
        let ring = if create {
            Ring::create(region, ring_bytes, mode)?
        } else {
            Ring::attach(region)?
        };
        if ring.mode() != mode {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("segment does not hold {what} rings"),
            ));
        }
        rings.push(ring);
    }
    Ok(rings)
}

/// What the ring's errors mean for a call that sends.
fn sending(name: &str) -> Call<'_> {
    Call {
        name,
        timed_out: "the pipe stayed full",
        peer_died: "the process at the other end of the pipe died",
        disconnected: "the other end of the pipe was dropped: nothing would receive this",
    }
}

/// What the ring's errors mean for a call that receives.
fn receiving(name: &str) -> Call<'_> {
    Call {
        name,
        timed_out: "nothing arrived on the pipe",
        peer_died: "the process at the other end of the pipe died",
        disconnected: "the other end of the pipe was dropped and nothing is left to receive",
    }
}

/// One end of a [`pipe`].
///
/// Python counterpart: `multiprocessing.connection.Connection`: `send` /
/// `recv` (any serde type instead of a pickle), `send_bytes` /
/// `recv_bytes`, `poll(timeout)`, `close`. An end can be passed to a child
/// process as an argument.
///
/// A `recv` whose sender's process died, or a `send` blocked on a full pipe
/// whose receiver died, fails with [`ErrorKind::PeerDied`].
///
/// Several processes may hold and use one end, as with Python's file
/// descriptors (several children writing results into one end is a
/// common pattern): messages are whole (never interleaved), and the other
/// end sees EOF ([`ErrorKind::Disconnected`], Python's `EOFError`) once
/// every process has dropped or closed its handles of this end. An end
/// moved into [`Process::spawn`](crate::Process::spawn)'s arguments is the
/// child's from then on (the parent's copy kept for the start does not
/// count), so the parent need not close anything; a clone kept here does
/// count, as a copy of a descriptor does in Python. A handle sent any
/// other way (through a [`Queue`](crate::Queue), a pool task) counts from
/// when the receiver opens it: keep a copy until then.
///
/// `Clone`: the clones in one process are the same end (threads may share
/// it; [`close`](Connection::close) closes them all).
///
/// ```
/// use multiproc::{pipe, Connection, Process};
///
/// fn pong(conn: Connection) {
///     while let Ok(n) = conn.recv::<u32>() {
///         if n == 0 { break; }
///         conn.send(&(n * 2)).unwrap();
///     }
/// }
///
/// fn main() {
///     multiproc::init();
///     let (here, there) = pipe(true).unwrap();
///     let p = Process::spawn(pong, there).unwrap();
///     here.send(&21u32).unwrap();
///     assert_eq!(here.recv::<u32>().unwrap(), 42);
///     here.send(&0u32).unwrap();
///     p.join().unwrap();
/// }
/// ```
pub struct Connection {
    inner: Arc<End>,
    /// This handle counts as a holder in this process (`End::handles`):
    /// every handle but one moved into a child's arguments (see
    /// [`handing_over`]).
    counted: AtomicBool,
}

/// What every clone of one [`Connection`] in this process shares.
struct End {
    shared: Arc<Shared>,
    end: u8,
    tx: Mutex<Option<Producer>>,
    rx: Mutex<Option<Consumer>>,
    /// [`close`](Connection::close) was called.
    closed: AtomicBool,
    /// This process's slot in the end's holder table, while it holds it.
    slot: Mutex<Option<usize>>,
    /// Counted handles in this process; the last one going deregisters.
    handles: AtomicUsize,
}

impl End {
    /// A handle of `end` for this process, registered as a holder.
    fn open(shared: Arc<Shared>, end: u8) -> Result<Arc<End>> {
        let slot = shared.table(end).register().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidState,
                format!(
                    "a pipe end is held by at most {} processes at once",
                    crate::participants::SLOTS
                ),
            )
        })?;
        Ok(Arc::new(End {
            shared,
            end,
            tx: Mutex::new(None),
            rx: Mutex::new(None),
            closed: AtomicBool::new(false),
            slot: Mutex::new(Some(slot)),
            handles: AtomicUsize::new(1),
        }))
    }

    /// Stops holding the end in this process (once): the ring handles go,
    /// the slot is given back, and if that was the last holder anywhere
    /// the other end is told.
    fn leave(&self) {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(slot) = slot else {
            return;
        };
        // Dropped, not closed: in Mpmc a handle's close would close the
        // side for every process; the holder table decides that.
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        drop(self.rx.lock().unwrap_or_else(|p| p.into_inner()).take());
        self.shared.table(self.end).unregister(slot);
        self.shared.settle(self.end);
    }

    /// One counted handle fewer; the last one leaves.
    fn release(&self) {
        // SYNC: AcqRel: the last handle's leave orders after every other
        // handle's use in this process.
        if self.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.leave();
        }
    }

    /// Whether the other end still has a holder that may act (for the
    /// rings' periodic checks).
    fn peer_check(&self) -> PeerCheck {
        let shared = Arc::clone(&self.shared);
        let end = self.end;
        Arc::new(move || shared.peer_alive(end))
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.leave();
    }
}

impl Clone for Connection {
    fn clone(&self) -> Connection {
        // SYNC: Relaxed: a count of this process's handles; the last
        // release orders (see `End::release`).
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        Connection {
            inner: Arc::clone(&self.inner),
            counted: AtomicBool::new(true),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.counted.swap(false, Ordering::Relaxed) {
            self.inner.release();
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (out, inp) = self.inner.shared.rings_of(self.inner.end);
        f.debug_struct("Connection")
            .field("end", &self.inner.end)
            .field("readable", &inp.is_some())
            .field("writable", &out.is_some())
            .finish()
    }
}

/// Creates a connected pair of endpoints (Python's `Pipe(duplex)`).
///
/// With `duplex = true` both ends send and receive. With `false` the first
/// end only receives and the second only sends, as in Python.
///
/// # Errors
/// [`ErrorKind::NoSpace`] / [`ErrorKind::Io`] if the shared memory cannot
/// be created.
///
/// ```
/// let (rx, tx) = multiproc::pipe(false).unwrap();
/// tx.send_bytes(b"ping").unwrap();
/// assert_eq!(rx.recv_bytes().unwrap(), b"ping");
/// assert!(rx.send_bytes(b"no").is_err()); // the receiving end cannot send
/// ```
pub fn pipe(duplex: bool) -> Result<(Connection, Connection)> {
    let rings = if duplex { 2 } else { 1 };
    let segment = Arc::new(Segment::create(
        HEADER_BYTES + rings * ring::region_size(CAPACITY),
    )?);
    let rings = rings_in(&segment, true, duplex)?;
    let shared = Arc::new(Shared {
        header: Typed::new(segment)?,
        rings,
        duplex,
    });
    Ok((
        Connection::new(End::open(Arc::clone(&shared), 0)?),
        Connection::new(End::open(shared, 1)?),
    ))
}

impl Connection {
    fn new(inner: Arc<End>) -> Connection {
        Connection {
            inner,
            counted: AtomicBool::new(true),
        }
    }

    /// An error for `call` once this end was closed.
    fn check_open(&self, call: &Call<'_>) -> Result<()> {
        // SYNC: Relaxed: a flag of this process's handles; the handles it
        // guards are behind their own mutexes.
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "this end was closed (Connection::close)",
            )
            .in_call(call));
        }
        Ok(())
    }

    /// Closes this end in this process (Python's `close()`): later calls on
    /// it (and its clones here) fail with [`ErrorKind::InvalidState`], and
    /// once no other process holds the end either, the other end, having
    /// taken what was sent, gets [`ErrorKind::Disconnected`] (Python's
    /// `EOFError`) instead of waiting. Closing the parent's copy of an end
    /// passed to a child, as Python code does after `start()`, leaves the
    /// child's copy working. Closing twice is fine; dropping every handle
    /// closes it too.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true).unwrap();
    /// a.send(&1u8).unwrap();
    /// a.close();
    /// assert!(a.closed());
    /// assert!(a.send(&2u8).is_err());
    /// assert_eq!(b.recv::<u8>().unwrap(), 1);
    /// assert!(b.recv::<u8>().unwrap_err().is_disconnected());
    /// ```
    pub fn close(&self) {
        // SYNC: Relaxed: see `check_open`.
        self.inner.closed.store(true, Ordering::Relaxed);
        self.inner.leave();
    }

    /// `true` once [`close`](Connection::close) was called (Python's
    /// `closed`).
    ///
    /// ```
    /// let (a, _b) = multiproc::pipe(true).unwrap();
    /// assert!(!a.closed());
    /// ```
    pub fn closed(&self) -> bool {
        // SYNC: Relaxed: see `check_open`.
        self.inner.closed.load(Ordering::Relaxed)
    }

    /// Runs `f` on this end's producer; its errors are worded for `call`.
    fn with_tx<R>(&self, call: &str, f: impl FnOnce(&mut Producer) -> Result<R>) -> Result<R> {
        self.with_tx_as(call, false, f)
    }

    /// [`with_tx`](Self::with_tx); `now`: see [`ring::with_handle_as`].
    fn with_tx_as<R>(
        &self,
        call: &str,
        now: bool,
        f: impl FnOnce(&mut Producer) -> Result<R>,
    ) -> Result<R> {
        let call = sending(call);
        self.check_open(&call)?;
        let Some(out) = self.inner.shared.rings_of(self.inner.end).0 else {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "this end of a one-way pipe cannot send",
            )
            .in_call(&call));
        };
        let make = || {
            let mut p = out.producer()?;
            p.set_peer_check(self.inner.peer_check());
            Ok(p)
        };
        ring::with_handle_as(&self.inner.tx, now, make, f).map_err(|e| e.in_call(&call))
    }

    /// Runs `f` on this end's consumer; its errors are worded for `call`.
    fn with_rx<R>(&self, call: &str, f: impl FnOnce(&mut Consumer) -> Result<R>) -> Result<R> {
        self.with_rx_as(call, false, f)
    }

    /// [`with_rx`](Self::with_rx); `now`: see [`ring::with_handle_as`].
    fn with_rx_as<R>(
        &self,
        call: &str,
        now: bool,
        f: impl FnOnce(&mut Consumer) -> Result<R>,
    ) -> Result<R> {
        let call = receiving(call);
        self.check_open(&call)?;
        let Some(inp) = self.inner.shared.rings_of(self.inner.end).1 else {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "this end of a one-way pipe cannot receive",
            )
            .in_call(&call));
        };
        let make = || {
            let mut c = inp.consumer()?;
            c.set_peer_check(self.inner.peer_check());
            Ok(c)
        };
        ring::with_handle_as(&self.inner.rx, now, make, f).map_err(|e| e.in_call(&call))
    }

    /// Sends a value (Python's `send(obj)`), waiting for room.
    ///
    /// A message of any size is sent: one over the ring's largest frame
    /// (128 KiB) streams through it in pieces while the other end reads,
    /// as a large message through an OS pipe does (so `send` returns once
    /// all but the last ring-full is taken).
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] if it does not serialise;
    /// [`ErrorKind::PeerDied`] / [`ErrorKind::Disconnected`] if the other end
    /// is gone.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true).unwrap();
    /// a.send(&vec![1, 2, 3]).unwrap();
    /// assert_eq!(b.recv::<Vec<i32>>().unwrap(), vec![1, 2, 3]);
    /// ```
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.with_tx("Connection::send", |p| {
            codec::push_value(p, KIND_VALUE, value, None)
        })
    }

    /// Receives a value (Python's `recv()`), waiting for one.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] if the message is not a `T` (it is consumed);
    /// [`ErrorKind::PeerDied`] / [`ErrorKind::Disconnected`] if the sender is
    /// gone and nothing is left.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true).unwrap();
    /// b.send(&"hi").unwrap();
    /// assert_eq!(a.recv::<String>().unwrap(), "hi");
    /// ```
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_until(None, "Connection::recv")
    }

    /// As [`recv`](Connection::recv), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`], or as [`recv`](Connection::recv).
    ///
    /// ```
    /// let (a, _b) = multiproc::pipe(true).unwrap();
    /// assert!(a.recv_timeout::<u8>(std::time::Duration::from_millis(5)).unwrap_err().is_timeout());
    /// ```
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.recv_until(deadline_after(timeout), "Connection::recv_timeout")
    }

    /// [`recv`](Connection::recv) as a `Future`, for async code (tokio,
    /// smol, any executor): it resolves to the next value.
    ///
    /// Python has no async `multiprocessing`; there one writes
    /// `await loop.run_in_executor(None, conn.recv)`. Here the futures
    /// waiting on one pipe end share one crate thread, parked on the ring
    /// as a blocked `recv` is, that wakes them when a message arrives.
    ///
    /// Cancellation: a message is taken only inside the poll that returns
    /// it; a future dropped before then took nothing (the message stays
    /// for the next `recv`) and withdraws its waker. A message longer than
    /// half the ring, whose first piece has arrived, is received whole in
    /// the poll that finds it (its sender is streaming the rest).
    ///
    /// # Errors
    /// As [`recv`](Connection::recv): [`ErrorKind::PeerDied`] (within
    /// about 50 ms) or [`ErrorKind::Disconnected`] once the sender is gone
    /// and nothing is left.
    ///
    /// ```
    /// use multiproc::{pipe, Connection, Process};
    ///
    /// fn greet(c: Connection) { c.send("hello").unwrap(); }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let (here, there) = pipe(true).unwrap();
    ///     let p = Process::spawn(greet, there).unwrap();
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     assert_eq!(rt.block_on(here.recv_async::<String>()).unwrap(), "hello");
    ///     p.join().unwrap();
    /// }
    /// ```
    pub fn recv_async<T: DeserializeOwned>(
        &self,
    ) -> impl std::future::Future<Output = Result<T>> + '_ {
        let call = "Connection::recv_async";
        let ring = self.inner.shared.rings_of(self.inner.end).1.cloned();
        let slice = crate::async_wait::CHECK_SLICE;
        async move {
            let Some(ring) = ring else {
                // A one-way end that cannot receive: the call's own error.
                return self.recv_as(Some(Instant::now()), call, true);
            };
            let peer = self.inner.peer_check();
            let key = ring.async_key(None);
            let source = move || -> Arc<dyn crate::async_wait::Source> {
                Arc::new(ring.async_source(None, peer))
            };
            crate::async_wait::wait_for(key, source, |checked| {
                let deadline = if checked {
                    deadline_after(slice)
                } else {
                    Some(Instant::now())
                };
                crate::async_wait::not_now(self.recv_as(deadline, call, true))
            })
            .await
        }
    }

    /// [`send`](Connection::send) as a `Future`, for async code: it
    /// resolves once the value is in the pipe (waiting, as `send` does,
    /// for room).
    ///
    /// Python: `await loop.run_in_executor(None, conn.send, value)`.
    ///
    /// Cancellation: the value is written only inside the poll that
    /// returns `Ready(Ok(()))`; a future dropped before then wrote nothing.
    ///
    /// # Errors
    /// As [`send`](Connection::send), and [`ErrorKind::InvalidState`] for a
    /// value larger than half the pipe's ring (128 KiB): it
    /// streams in pieces while the other end reads, which no single poll
    /// can do; send it with `send` (in `spawn_blocking`).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let (a, b) = multiproc::pipe(true).unwrap();
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     rt.block_on(a.send_async(&[1u8, 2, 3])).unwrap();
    ///     assert_eq!(b.recv::<[u8; 3]>().unwrap(), [1, 2, 3]);
    /// }
    /// ```
    pub fn send_async<'a, T: Serialize + ?Sized>(
        &'a self,
        value: &'a T,
    ) -> impl std::future::Future<Output = Result<()>> + 'a {
        let call = "Connection::send_async";
        let ring = self.inner.shared.rings_of(self.inner.end).0.cloned();
        let slice = crate::async_wait::CHECK_SLICE;
        async move {
            let len = codec::serde_len(value).map_err(|e| e.in_call(&sending(call)))?;
            let Some(ring) = ring else {
                return self.with_tx_as(call, true, |_| Ok(()));
            };
            if len > ring.max_payload() {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    format!(
                        "Connection::send_async: a value of {len} bytes is over the largest \
                         that can be sent without blocking ({}); use send",
                        ring.max_payload()
                    ),
                ));
            }
            let peer = self.inner.peer_check();
            let key = ring.async_key(Some(len));
            let source = move || -> Arc<dyn crate::async_wait::Source> {
                Arc::new(ring.async_source(Some(len), peer))
            };
            crate::async_wait::wait_for(key, source, |checked| {
                let deadline = if checked {
                    deadline_after(slice)
                } else {
                    Some(Instant::now())
                };
                let sent = self.with_tx_as(call, true, |p| {
                    codec::push_value(p, KIND_VALUE, value, deadline)
                });
                crate::async_wait::not_now(sent)
            })
            .await
        }
    }

    fn recv_until<T: DeserializeOwned>(&self, deadline: Option<Instant>, call: &str) -> Result<T> {
        self.recv_as(deadline, call, false)
    }

    /// [`recv_until`](Self::recv_until); `now`: see
    /// [`ring::with_handle_as`].
    fn recv_as<T: DeserializeOwned>(
        &self,
        deadline: Option<Instant>,
        call: &str,
        now: bool,
    ) -> Result<T> {
        self.with_rx_as(call, now, |c| {
            let frame = c.peek(deadline)?;
            if frame.kind() != KIND_VALUE {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    "expected a value, got raw bytes (sent with send_bytes)",
                ));
            }
            codec::decode_serde(frame.bytes())
        })
    }

    /// Sends raw bytes (Python's `send_bytes`), copied once into the ring.
    ///
    /// # Errors
    /// As [`send`](Connection::send).
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true).unwrap();
    /// a.send_bytes(&[1, 2, 3]).unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), vec![1, 2, 3]);
    /// ```
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.with_tx("Connection::send_bytes", |p| {
            p.push_long(KIND_BYTES, bytes, None)
        })
    }

    /// Receives raw bytes (Python's `recv_bytes`).
    ///
    /// # Errors
    /// As [`recv`](Connection::recv).
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true).unwrap();
    /// b.send_bytes(b"xyz").unwrap();
    /// assert_eq!(a.recv_bytes().unwrap(), b"xyz");
    /// ```
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.recv_bytes_into(&mut buf)?;
        Ok(buf)
    }

    /// Receives raw bytes into `buf` (cleared first), reusing its
    /// allocation (Python's `recv_bytes_into`). Returns the length.
    ///
    /// # Errors
    /// As [`recv`](Connection::recv).
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true).unwrap();
    /// let mut buf = Vec::with_capacity(64);
    /// b.send_bytes(b"abc").unwrap();
    /// assert_eq!(a.recv_bytes_into(&mut buf).unwrap(), 3);
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.with_rx("Connection::recv_bytes", |c| {
            let frame = c.peek(None)?;
            if frame.kind() != KIND_BYTES {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    "expected bytes, got a value (sent with send)",
                ));
            }
            frame.take_into(buf);
            Ok(buf.len())
        })
    }

    /// Receives raw bytes into `buf` from `offset` on (Python's
    /// `recv_bytes_into(buffer, offset)`), for a buffer that cannot grow
    /// (a slice of a `SharedArray`'s copy, a stack array…). Returns the
    /// message's length.
    ///
    /// # Errors
    /// [`ErrorKind::BufferTooShort`] if the message does not fit in
    /// `buf[offset..]`: unlike Python, which hands the message back inside
    /// the exception, it stays in the pipe, unconsumed, for a
    /// [`recv_bytes`](Connection::recv_bytes) or a bigger buffer;
    /// [`ErrorKind::InvalidState`] if `offset` is past the end of `buf`;
    /// otherwise as [`recv`](Connection::recv).
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true).unwrap();
    /// b.send_bytes(b"abcdef").unwrap();
    /// let mut small = [0u8; 4];
    /// let e = a.recv_bytes_into_at(&mut small, 0).unwrap_err();
    /// assert_eq!(e.kind(), multiproc::ErrorKind::BufferTooShort);
    /// let mut buf = [0u8; 8];
    /// assert_eq!(a.recv_bytes_into_at(&mut buf, 2).unwrap(), 6);
    /// assert_eq!(&buf, b"\0\0abcdef");
    /// ```
    pub fn recv_bytes_into_at(&self, buf: &mut [u8], offset: usize) -> Result<usize> {
        let room = buf.len().checked_sub(offset).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidState,
                format!(
                    "Connection::recv_bytes_into_at: offset {offset} is past the end of \
                     the {}-byte buffer",
                    buf.len()
                ),
            )
        })?;
        self.with_rx("Connection::recv_bytes_into_at", |c| {
            let frame = c.peek(None)?;
            if frame.kind() != KIND_BYTES {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    "expected bytes, got a value (sent with send)",
                ));
            }
            let len = frame.bytes().len();
            if len > room {
                frame.keep();
                return Err(Error::new(
                    ErrorKind::BufferTooShort,
                    format!(
                        "a message of {len} bytes does not fit the {room} bytes from \
                         offset {offset}; it stays in the pipe (recv_bytes takes it)"
                    ),
                ));
            }
            buf[offset..offset + len].copy_from_slice(frame.bytes());
            Ok(len)
        })
    }

    /// `true` if a message is waiting, checking for at most `timeout`
    /// (Python's `poll(timeout)`; `Duration::ZERO` just looks).
    ///
    /// # Errors
    /// [`ErrorKind::PeerDied`] / [`ErrorKind::Disconnected`] if the sender is
    /// gone and nothing is left; [`ErrorKind::InvalidState`] for the sending
    /// end of a one-way pipe.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true).unwrap();
    /// assert!(!a.poll(std::time::Duration::ZERO).unwrap());
    /// b.send(&1u8).unwrap();
    /// assert!(a.poll(std::time::Duration::from_secs(1)).unwrap());
    /// ```
    pub fn poll(&self, timeout: Duration) -> Result<bool> {
        let deadline = deadline_after(timeout);
        self.with_rx("Connection::poll", |c| c.poll(deadline))
    }
}

/// The wire form of an end: its segment, which end, whether the pipe is
/// duplex, and, for a handle moved into a child's arguments, the entry
/// that counts it until the child opens it (see `holders.rs`).
type Wire = (SegmentHandle, u8, bool, Option<(u16, u32)>);

impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let inner = &self.inner;
        let pending = holders::reserve_if_handing_over(&inner.shared, inner.end);
        if pending.is_some() && self.counted.swap(false, Ordering::Relaxed) {
            // This handle is in a child's arguments now: the copy the
            // parent keeps for the start no longer holds the end here.
            inner.release();
        }
        let wire: Wire = (
            inner.shared.header.segment().handle(),
            inner.end,
            inner.shared.duplex,
            pending.and_then(|(i, token)| Some((u16::try_from(i).ok()?, token))),
        );
        wire.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (handle, end, duplex, pending) = Wire::deserialize(d)?;
        let open = || -> Result<Connection> {
            if end > 1 || pending.is_some_and(|(i, _)| usize::from(i) >= PENDING) {
                return Err(Error::new(ErrorKind::Protocol, "bad pipe end"));
            }
            let segment = Arc::new(Segment::open(&handle)?);
            let rings = rings_in(&segment, false, duplex)?;
            if duplex && rings[1].is_none() {
                return Err(Error::new(ErrorKind::Protocol, "duplex pipe with one ring"));
            }
            let shared = Arc::new(Shared {
                header: Typed::new(segment)?,
                rings,
                duplex,
            });
            // Registered first, then the in-flight entry cleared: the end
            // is never without a holder in between.
            let inner = End::open(shared, end)?;
            if let Some((i, token)) = pending {
                inner.shared.table(end).clear(usize::from(i), token);
            }
            Ok(Connection::new(inner))
        };
        open().map_err(crate::error::de_custom)
    }
}

/// Something [`wait`] can wait on: a [`Connection`] (ready when a message
/// is waiting or its sender is gone), a [`Queue`](crate::Queue) or
/// [`JoinableQueue`](crate::JoinableQueue) (ready when it holds an item
/// or was shut down;
/// Python's `wait` takes a queue's `_reader` for this), or a
/// [`Process`](crate::Process) (ready when it has ended).
pub trait Waitable {
    /// `true` if waiting on it would not block now.
    fn is_ready(&self) -> bool;
}

impl Waitable for Connection {
    fn is_ready(&self) -> bool {
        // An error (sender gone) is "ready": the next recv reports it.
        self.poll(Duration::ZERO).unwrap_or(true)
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Waitable for crate::Queue<T> {
    fn is_ready(&self) -> bool {
        // Shut down: the next get answers at once (an item or `ShutDown`).
        !self.is_empty() || self.is_shutdown()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Waitable for crate::JoinableQueue<T> {
    fn is_ready(&self) -> bool {
        !self.is_empty() || self.is_shutdown()
    }
}

impl<R> Waitable for crate::Process<R> {
    fn is_ready(&self) -> bool {
        !self.is_alive()
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes;
/// returns the indices of the ready ones (empty on timeout).
///
/// Python counterpart: `multiprocessing.connection.wait(object_list,
/// timeout)`.
///
/// ```
/// use std::time::Duration;
/// let (a, b) = multiproc::pipe(true).unwrap();
/// let (c, _d) = multiproc::pipe(true).unwrap();
/// b.send(&1u8).unwrap();
/// let ready = multiproc::wait(&[&a, &c], Some(Duration::from_secs(1)));
/// assert_eq!(ready, vec![0]);
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Vec<usize> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let mut pause = Duration::from_micros(10);
    loop {
        let ready: Vec<usize> = objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_ready())
            .map(|(i, _)| i)
            .collect();
        if !ready.is_empty() || deadline.is_some_and(|d| Instant::now() >= d) {
            return ready;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}
