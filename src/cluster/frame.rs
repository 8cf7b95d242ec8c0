//! The wire side of a [`Cluster`] call: the header rank 0 announces, the
//! frame's steps (follow, reply, gather, outcome), blobs cut into pieces
//! that fit MPI's C-int counts, and the polling wait that leaves the CPU to
//! the local workers.

use std::time::{Duration, Instant};

use bytemuck::Pod;
use mpi::request::{LocalScope, Request};
use mpi::traits::{Communicator, Destination, Root, Source};
use serde::de::DeserializeOwned;

use super::{Cluster, ClusterTiming, Outcome};
use crate::error::{Error, ErrorKind, RemoteError, Result};
use crate::pool::ShmVec;

const ROOT: i32 = 0;
pub(super) const TAG_PART: i32 = 7101;
const TAG_RESULT: i32 = 7102;
const TAG_PAYLOAD: i32 = 7103;
/// Largest piece one MPI call moves (counts are C ints).
const PIECE: usize = 1 << 30;
/// "mpcl" + protocol version 1.
const MAGIC: u64 = 0x6d70_636c_0000_0001;
/// Spin this long on a request before sleeping between polls.
const SPIN: Duration = Duration::from_micros(50);
/// Longest sleep between two polls of a request.
const MAX_NAP: Duration = Duration::from_micros(500);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Op {
    MapSlice = 1,
    Map = 2,
    Apply = 3,
}

impl Op {
    fn name(code: u64) -> &'static str {
        match code {
            1 => "map_slice",
            2 => "map",
            3 => "apply",
            _ => "an unknown call",
        }
    }
}

/// What rank 0 announces at the start of every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) op: u64,
    pub(super) seq: u64,
    pub(super) n: u64,
    pub(super) in_size: u64,
    pub(super) out_size: u64,
    /// Non-zero: rank 0 failed before sending anything; go to the outcome.
    pub(super) root_failed: u64,
}

impl Header {
    fn to_words(self) -> [u64; 7] {
        [
            MAGIC,
            self.op,
            self.seq,
            self.n,
            self.in_size,
            self.out_size,
            self.root_failed,
        ]
    }

    fn from_words(w: [u64; 7]) -> Option<Header> {
        (w[0] == MAGIC).then_some(Header {
            op: w[1],
            seq: w[2],
            n: w[3],
            in_size: w[4],
            out_size: w[5],
            root_failed: w[6],
        })
    }
}

impl Cluster {
    /// A non-root rank's side of a collective call: take the root's header,
    /// check it against this rank's own, run `work` on this rank's share
    /// (it returns the encoded result), send the result to the root, and
    /// learn the call's outcome.
    pub(super) fn follow(
        &self,
        header: Header,
        started: Instant,
        work: impl FnOnce(&Header) -> Result<Vec<u8>>,
    ) -> Result<()> {
        let mut timing = ClusterTiming::default();
        let Some(h) = self.broadcast_header(header) else {
            return self.finish(Err(self.protocol_error()), started, timing);
        };
        timing.scatter = started.elapsed();
        if h.root_failed != 0 {
            return self.finish(Ok(()), started, timing);
        }
        // Where this rank's items start in the whole input (`apply` has
        // one "item" per rank, reported as index 0).
        let offset = if header.op == Op::Apply as u64 {
            0
        } else {
            self.share(h.n as usize, self.rank).start as u64
        };
        let t = Instant::now();
        let result = match self.mismatch(&h, header) {
            Some(e) => {
                self.drain_part();
                Err(e)
            }
            None => work(&h),
        };
        timing.compute = t.elapsed();
        let outcome = self.reply(result, offset, timing.compute);
        self.finish(outcome, started, timing)
    }

    /// The root collects every other rank's postcard-encoded result in
    /// rank order, handing each to `take`; after the first failure it
    /// still drains the rest (every rank sends exactly once).
    pub(super) fn gather_serde<D: DeserializeOwned>(
        &self,
        offset: impl Fn(usize) -> u64,
        outcome: &mut Outcome,
        timing: &mut ClusterTiming,
        mut take: impl FnMut(D),
    ) {
        for r in 1..self.size {
            let got = self.gather_from(r, offset(r), None, timing);
            if outcome.is_err() {
                continue;
            }
            *outcome = got.and_then(|bytes| {
                take(postcard::from_bytes(&bytes).map_err(|e| {
                    Error::codec(format!("decoding rank {r}'s results"), e).to_remote(0, 0)
                })?);
                Ok(())
            });
        }
    }

    pub(super) fn next_seq(&self) -> u64 {
        let s = self.seq.get();
        self.seq.set(s + 1);
        s
    }

    /// Rank `r`'s contiguous share of `n` items.
    pub(super) fn share(&self, n: usize, r: usize) -> std::ops::Range<usize> {
        let base = n / self.size;
        let extra = n % self.size;
        let start = r * base + r.min(extra);
        start..start + base + usize::from(r < extra)
    }

    /// Rank 0's header, on every rank (`None`: not ours, a bug or another
    /// library's traffic on our communicator, which cannot happen on a
    /// private duplicate).
    pub(super) fn broadcast_header(&self, mine: Header) -> Option<Header> {
        let mut words = mine.to_words();
        mpi::request::scope(|scope| {
            let req = self
                .comm
                .process_at_rank(ROOT)
                .immediate_broadcast_into(scope, &mut words[..]);
            sleepy(req);
        });
        Header::from_words(words)
    }

    fn protocol_error(&self) -> Box<RemoteError> {
        Error::new(
            ErrorKind::Protocol,
            "rank 0 sent a call header this rank cannot read",
        )
        .to_remote(self.rank, 0)
    }

    /// Whether rank 0's call differs from this rank's.
    fn mismatch(&self, root: &Header, mine: Header) -> Option<Error> {
        let same = root.op == mine.op
            && root.seq == mine.seq
            && (mine.op != Op::MapSlice as u64
                || (root.in_size == mine.in_size && root.out_size == mine.out_size));
        (!same).then(|| {
            Error::new(
                ErrorKind::InvalidState,
                format!(
                    "rank {} made call #{} `{}` ({} → {} bytes per element) while rank 0 made call #{} `{}` ({} → {}); every rank must make the same Cluster calls in the same order",
                    self.rank,
                    mine.seq,
                    Op::name(mine.op),
                    mine.in_size,
                    mine.out_size,
                    root.seq,
                    Op::name(root.op),
                    root.in_size,
                    root.out_size,
                ),
            )
        })
    }

    /// Rank 0's own share through the local pool, via reused shared
    /// memory.
    pub(super) fn map_local<F, T, U>(&self, f: F, input: &[T], out: &mut [U]) -> Result<()>
    where
        F: Fn(T) -> U + 'static,
        T: Pod,
        U: Pod,
    {
        if input.is_empty() {
            return Ok(());
        }
        let mut a = self.shm::<T>(input.len())?;
        a.copy_from_slice(input);
        let mut b = self.shm::<U>(input.len())?;
        let r = self.pool.map_elements(f, &a, &mut b);
        if r.is_ok() {
            out.copy_from_slice(&b);
        }
        self.give_back(a);
        self.give_back(b);
        r
    }

    /// A non-root rank's share: received straight into shared memory,
    /// mapped there, its results' bytes returned.
    pub(super) fn map_received<F, T, U>(&self, f: F, count: usize) -> Result<Vec<u8>>
    where
        F: Fn(T) -> U + 'static,
        T: Pod,
        U: Pod,
    {
        let len = self.recv_len(TAG_PART);
        let want = count * std::mem::size_of::<T>();
        if len != want {
            self.recv_pieces(TAG_PART, &mut vec![0u8; len]);
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("rank 0 sent {len} bytes for a share of {want}"),
            ));
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut a = self.shm::<T>(count)?;
        self.recv_pieces(TAG_PART, bytemuck::cast_slice_mut(&mut a[..]));
        let mut b = self.shm::<U>(count)?;
        let r = self.pool.map_elements(f, &a, &mut b);
        // The result bytes must outlive the reply; one copy out of the
        // arena keeps the arena reusable by the next call.
        let out = r.map(|()| bytemuck::cast_slice::<U, u8>(&b).to_vec());
        self.give_back(a);
        self.give_back(b);
        out
    }

    /// A `ShmVec` of `len` over a reused arena.
    fn shm<T: Pod>(&self, len: usize) -> Result<ShmVec<T>> {
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        let mut arenas = self.arenas.borrow_mut();
        if let Some(i) = arenas.iter().position(|s| s.len() >= bytes) {
            let seg = arenas.swap_remove(i);
            if let Some(v) = ShmVec::over(seg, len) {
                return Ok(v);
            }
        }
        if arenas.len() >= 2 {
            if let Some(i) = (0..arenas.len()).min_by_key(|&i| arenas[i].len()) {
                arenas.swap_remove(i);
            }
        }
        drop(arenas);
        ShmVec::zeroed(len)
    }

    fn give_back<T: Pod>(&self, v: ShmVec<T>) {
        self.arenas.borrow_mut().push(v.into_segment());
    }

    /// A non-root rank whose call does not match rank 0's still takes
    /// its share off the wire, so rank 0's sends complete.
    fn drain_part(&self) {
        let len = self.recv_len(TAG_PART);
        self.recv_pieces(TAG_PART, &mut vec![0u8; len]);
    }

    /// Non-root: sends this rank's results (or error) to rank 0.
    fn reply(&self, result: Result<Vec<u8>>, offset: u64, compute: Duration) -> Outcome {
        let (status, payload, outcome) = match result {
            Ok(bytes) => (0u64, bytes, Ok(())),
            Err(e) => {
                let remote = e.to_remote(self.rank, offset);
                let bytes = postcard::to_stdvec(&remote).unwrap_or_default();
                (1, bytes, Err(remote))
            }
        };
        let head = [status, payload.len() as u64, nanos(compute)];
        mpi::request::scope(|scope| {
            let req = self.comm.process_at_rank(ROOT).immediate_send_with_tag(
                scope,
                &head[..],
                TAG_RESULT,
            );
            sleepy(req);
        });
        for piece in payload.chunks(PIECE) {
            self.comm
                .process_at_rank(ROOT)
                .send_with_tag(piece, TAG_PAYLOAD);
        }
        outcome
    }

    /// Root: rank `r`'s reply, its payload into `slot` (which must match
    /// its length) or returned.
    pub(super) fn gather_from(
        &self,
        r: usize,
        offset: u64,
        slot: Option<&mut [u8]>,
        timing: &mut ClusterTiming,
    ) -> std::result::Result<Vec<u8>, Box<RemoteError>> {
        let mut head = [0u64; 3];
        mpi::request::scope(|scope| {
            let req = self
                .comm
                .process_at_rank(r as i32)
                .immediate_receive_into_with_tag(scope, &mut head[..], TAG_RESULT);
            sleepy(req);
        });
        let t = Instant::now();
        let [status, len, ns] = head;
        timing.compute = timing.compute.max(Duration::from_nanos(ns));
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let from = self.comm.process_at_rank(r as i32);
        let result = match (status, slot) {
            (0, Some(slot)) if slot.len() == len => {
                for piece in slot.chunks_mut(PIECE) {
                    from.receive_into_with_tag(piece, TAG_PAYLOAD);
                }
                Ok(Vec::new())
            }
            (0, Some(slot)) => {
                let mut sink = vec![0u8; len];
                for piece in sink.chunks_mut(PIECE) {
                    from.receive_into_with_tag(piece, TAG_PAYLOAD);
                }
                Err(Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "rank {r} sent {len} result bytes for a share of {}",
                        slot.len()
                    ),
                )
                .to_remote(r, offset))
            }
            (status, _) => {
                let mut bytes = vec![0u8; len];
                for piece in bytes.chunks_mut(PIECE) {
                    from.receive_into_with_tag(piece, TAG_PAYLOAD);
                }
                if status == 0 {
                    Ok(bytes)
                } else {
                    Err(
                        postcard::from_bytes::<Box<RemoteError>>(&bytes).unwrap_or_else(|e| {
                            Error::codec(format!("decoding rank {r}'s error"), e)
                                .to_remote(r, offset)
                        }),
                    )
                }
            }
        };
        timing.gather += t.elapsed();
        result
    }

    /// Everyone: rank 0 broadcasts the call's outcome (its own or the
    /// first failing rank's error); every rank returns it.
    pub(super) fn finish(
        &self,
        mine: Outcome,
        started: Instant,
        mut timing: ClusterTiming,
    ) -> Result<()> {
        let t = Instant::now();
        let mut head = [0u64; 2];
        let mut bytes = Vec::new();
        if self.is_root() {
            if let Err(e) = &mine {
                bytes = postcard::to_stdvec(e).unwrap_or_default();
                head = [1, bytes.len() as u64];
            }
        }
        mpi::request::scope(|scope| {
            let req = self
                .comm
                .process_at_rank(ROOT)
                .immediate_broadcast_into(scope, &mut head[..]);
            sleepy(req);
        });
        let result = if head[0] == 0 {
            Ok(())
        } else {
            bytes.resize(usize::try_from(head[1]).unwrap_or(0), 0);
            for piece in bytes.chunks_mut(PIECE) {
                self.comm.process_at_rank(ROOT).broadcast_into(piece);
            }
            let remote = postcard::from_bytes::<Box<RemoteError>>(&bytes)
                .map_err(|e| Error::codec("decoding rank 0's outcome", e))?;
            Err(Error::from_remote(*remote))
        };
        timing.gather += t.elapsed();
        timing.total = started.elapsed();
        self.last.set(Some(timing));
        result
    }

    // ---- blobs: a length, then pieces ----------------------------------

    pub(super) fn send_blob(&self, dest: usize, tag: i32, bytes: &[u8]) {
        let to = self.comm.process_at_rank(dest as i32);
        to.send_with_tag(&(bytes.len() as u64), tag);
        for piece in bytes.chunks(PIECE) {
            to.send_with_tag(piece, tag);
        }
    }

    fn recv_len(&self, tag: i32) -> usize {
        let mut len = 0u64;
        mpi::request::scope(|scope| {
            let req = self
                .comm
                .process_at_rank(ROOT)
                .immediate_receive_into_with_tag(scope, &mut len, tag);
            sleepy(req);
        });
        usize::try_from(len).unwrap_or(usize::MAX)
    }

    fn recv_pieces(&self, tag: i32, buf: &mut [u8]) {
        let from = self.comm.process_at_rank(ROOT);
        for piece in buf.chunks_mut(PIECE) {
            from.receive_into_with_tag(piece, tag);
        }
    }

    pub(super) fn recv_blob(&self, tag: i32) -> Vec<u8> {
        let mut bytes = vec![0u8; self.recv_len(tag)];
        self.recv_pieces(tag, &mut bytes);
        bytes
    }
}

/// Completes `req`, spinning briefly and then sleeping between polls, so
/// that a rank waiting for another leaves its CPU to the local workers
/// (a blocking MPI call busy-polls).
fn sleepy<'a, D: ?Sized>(mut req: Request<'a, D, &LocalScope<'a>>) {
    let start = Instant::now();
    let mut nap = Duration::from_micros(10);
    loop {
        match req.test() {
            Ok(_) => return,
            Err(r) => req = r,
        }
        if start.elapsed() < SPIN {
            std::hint::spin_loop();
        } else {
            std::thread::sleep(nap);
            nap = (nap * 2).min(MAX_NAP);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
