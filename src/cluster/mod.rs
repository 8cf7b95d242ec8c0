//! `Cluster`: the pool's maps over MPI ranks (cargo feature `mpi`).
//!
//! Every call is collective: every rank makes the same calls in the same
//! order (mpi4py's rule for `comm.scatter` / `comm.gather`). One call is a
//! *frame* on a private duplicate of `MPI_COMM_WORLD`:
//!
//! ```text
//!  rank 0                                   rank r (r ≥ 1)
//!  Ibcast header [magic, op, seq, n, sizes, status] ─►  check: same op, seq, sizes?
//!  send part r: [len] + pieces ≤ 1 GiB  ─────────────►  receive (straight into shared memory)
//!  map own part with the local Pool                     map part with the local Pool
//!  receive [status, len, ns] ◄──────────────────────────  send result header
//!  receive payload (into place) or error ◄─────────────  payload or postcard RemoteError
//!  Ibcast outcome [status, len] (+ error) ────────────►  Ok or the same Err on every rank
//! ```
//!
//! A rank whose part fails (a kernel panics, a worker dies) sends its error
//! instead of its results, so no rank ever waits for data that will not
//! come; the outcome broadcast gives every rank the same result, so all
//! ranks stay in step (or all return the error and end). A rank whose
//! calls do not match rank 0's (another method, another type) still drains
//! its part and reports the mismatch. A rank that unwinds from a panic
//! while it holds the `Cluster` calls `MPI_Abort` (the others could be
//! waiting for it in a collective); a rank process that dies is detected
//! by the launcher, which ends the job.
//!
//! Waits that can last (for another rank's compute) poll their MPI request
//! and sleep between polls instead of spinning, so a waiting rank leaves
//! the CPU to the local workers; bulk payloads move with blocking calls
//! once both sides are known to be ready.
//!
//! Files: this one holds the public types and the three calls (their root
//! and non-root halves); `builder.rs` the options and the collective start;
//! `frame.rs` the header, the frame's steps and the blobs on the wire.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Pod;
use mpi::topology::SimpleCommunicator;
use mpi::traits::Communicator;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, RemoteError, Result};
use crate::pool::Pool;
use crate::segment::Segment;

mod builder;
mod frame;

pub use builder::ClusterBuilder;
use frame::{Header, Op, TAG_PART};

/// Prefixes of the environment variables MPI launchers (`mpirun`/`mpiexec`
/// of Open MPI, MPICH/Hydra and Intel MPI, Slurm's PMI/PMIx plug-ins) give
/// a rank. A rank's local workers start without them: a worker that saw
/// them would take itself for a rank.
pub(crate) const LAUNCHER_ENV_PREFIXES: &[&str] = &[
    "OMPI_", "OPAL_", "ORTE_", "PRTE_", "PMIX_", "PMI_", "HYDRA_", "HYDI_", "MPI_", "I_MPI_",
];

/// Where the time of the last [`Cluster`] call went, as rank 0 saw it.
///
/// `scatter` + `compute` + `gather` is about `total` when rank 0's own
/// share takes as long as the others'; waiting for a slower rank counts in
/// `total` only.
///
/// Python/MPI counterpart: timing `comm.scatter`, the local work and
/// `comm.gather` with `MPI.Wtime()` yourself.
///
/// ```
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let cluster = multiproc::Cluster::builder().workers(1).build()?;
///     cluster.map_slice(|x: f64| x + 1.0, &[1.0, 2.0])?;
///     let t = cluster.last_timing().unwrap();
///     assert!(t.total >= t.compute);
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterTiming {
    /// Sending every other rank its share (rank 0: the header broadcast
    /// and the sends; another rank: waiting for and receiving its share).
    pub scatter: Duration,
    /// The longest local map of any rank (each rank's local Pool call).
    pub compute: Duration,
    /// Receiving the results once each rank has announced them, plus the
    /// outcome broadcast (waiting for a rank to finish is not included).
    pub gather: Duration,
    /// The whole call.
    pub total: Duration,
}

/// The same maps as [`Pool`], over the ranks of an MPI job: rank 0
/// splits the input, every rank maps its share with its own local pool of
/// worker processes, rank 0 collects the results (the hybrid
/// MPI + shared-memory model). Started with `mpirun -n 4 ./program`, four
/// ranks each run a local pool; started alone, it is one rank.
///
/// Every call is collective: all ranks make the same calls in the same
/// order. The input is read on rank 0 only (other ranks pass anything,
/// usually an empty slice); the results come back on rank 0, and other
/// ranks get an empty `Vec`. A failure anywhere (a panic in a kernel, a
/// dead worker, on any rank) returns the same error on every rank, naming
/// the rank ([`Error::rank`]) and the item's global index; the cluster
/// stays usable. Nothing waits forever for a failed rank.
///
/// The local workers start without the launcher's environment variables
/// (`OMPI_*`, `PMIX_*`, `PMI_*`, `HYDRA_*`, `MPI_*`, …), so none of them
/// takes itself for a rank. Dropping the `Cluster` finalises MPI if it
/// initialised it (`MPI_Finalize`, collective too); dropping it while
/// unwinding from a panic calls `MPI_Abort` instead and ends the job.
///
/// | mpi4py + `multiprocessing` | `multiproc` |
/// |---|---|
/// | `comm = MPI.COMM_WORLD` | [`Cluster::from_mpi()`](Cluster::from_mpi) |
/// | `comm.Get_rank()`, `comm.Get_size()`, `rank == 0` | [`rank`](Cluster::rank), [`size`](Cluster::size), [`is_root`](Cluster::is_root) |
/// | `comm.Scatterv` → `pool.map` → `comm.Gatherv` (NumPy) | [`map_slice`](Cluster::map_slice) |
/// | `comm.scatter` → `pool.map` → `comm.gather` (objects) | [`map`](Cluster::map) |
/// | `comm.bcast(args)`; `f(rank, args)`; `comm.gather` | [`apply`](Cluster::apply) |
///
/// ```
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let cluster = multiproc::Cluster::from_mpi()?;
///     let input: Vec<f64> = if cluster.is_root() { (0..1000).map(f64::from).collect() } else { Vec::new() };
///     let out = cluster.map_slice(|x: f64| x * x, &input)?;
///     if cluster.is_root() {
///         assert_eq!(out[999], 998_001.0);
///     } else {
///         assert!(out.is_empty());
///     }
///     Ok(())
/// }
/// ```
pub struct Cluster {
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_ranks: usize,
    pool: Pool,
    seq: Cell<u64>,
    /// Transfer buffers in shared memory, reused across calls.
    arenas: RefCell<Vec<Arc<Segment>>>,
    last: Cell<Option<ClusterTiming>>,
    /// Last: MPI is finalised after the pool and the communicator are gone.
    _universe: Option<mpi::environment::Universe>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_ranks", &self.local_ranks)
            .field("workers", &self.pool.processes())
            .finish()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Unwinding with other ranks possibly inside a collective with us:
        // `MPI_Finalize` could wait for them forever. End the job.
        if std::thread::panicking() && self.size > 1 {
            eprintln!(
                "multiproc: rank {} is unwinding from a panic; calling MPI_Abort",
                self.rank
            );
            self.comm.abort(70);
        }
    }
}

/// What a rank ended a call with, before the outcome.
type Outcome = std::result::Result<(), Box<RemoteError>>;

impl Cluster {
    /// Initialises MPI and starts this rank's local pool with the default
    /// number of workers (see [`ClusterBuilder::workers`]). Without
    /// `mpirun`/`srun`, a cluster of one rank.
    ///
    /// Python/MPI counterpart: `from mpi4py import MPI` (which calls
    /// `MPI_Init_thread`) plus `multiprocessing.Pool()` on each rank.
    ///
    /// # Errors
    /// As [`ClusterBuilder::build`].
    ///
    /// ```
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let cluster = multiproc::Cluster::from_mpi()?;
    ///     println!("rank {} of {}", cluster.rank(), cluster.size());
    ///     Ok(())
    /// }
    /// ```
    pub fn from_mpi() -> Result<Cluster> {
        Cluster::builder().build()
    }

    /// Options: local workers per rank, the local pool's settings.
    ///
    /// ```
    /// let b = multiproc::Cluster::builder().workers(2);
    /// # let _ = b;
    /// ```
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// This process's rank in `MPI_COMM_WORLD` (mpi4py: `comm.Get_rank()`).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// # multiproc::init();
    /// let cluster = multiproc::Cluster::builder().workers(1).build()?;
    /// assert!(cluster.rank() < cluster.size());
    /// # Ok(()) }
    /// ```
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks (mpi4py: `comm.Get_size()`); 1 without a
    /// launcher.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// # multiproc::init();
    /// let cluster = multiproc::Cluster::builder().workers(1).build()?;
    /// assert!(cluster.size() >= 1);
    /// # Ok(()) }
    /// ```
    pub fn size(&self) -> usize {
        self.size
    }

    /// `true` on rank 0, which holds the input and receives the results
    /// (mpi4py: `comm.Get_rank() == 0`).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// # multiproc::init();
    /// let cluster = multiproc::Cluster::builder().workers(1).build()?;
    /// assert_eq!(cluster.is_root(), cluster.rank() == 0);
    /// # Ok(()) }
    /// ```
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// How many ranks run on this host, this one included (mpi4py:
    /// `comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()`).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// # multiproc::init();
    /// let cluster = multiproc::Cluster::builder().workers(1).build()?;
    /// assert!(cluster.local_ranks() >= 1);
    /// # Ok(()) }
    /// ```
    pub fn local_ranks(&self) -> usize {
        self.local_ranks
    }

    /// This rank's local worker processes (its pool's size).
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// # multiproc::init();
    /// let cluster = multiproc::Cluster::builder().workers(2).build()?;
    /// assert_eq!(cluster.workers(), 2);
    /// # Ok(()) }
    /// ```
    pub fn workers(&self) -> usize {
        self.pool.processes()
    }

    /// This rank's local [`Pool`], for work that stays on this host. Its
    /// workers also start without the launcher's environment.
    ///
    /// Python/MPI counterpart: the `multiprocessing.Pool` each rank made.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// # multiproc::init();
    /// let cluster = multiproc::Cluster::builder().workers(1).build()?;
    /// assert_eq!(cluster.pool().apply(|x: u32| x + 1, 1)?, 2);
    /// # Ok(()) }
    /// ```
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Where the time of this rank's last [`map_slice`](Cluster::map_slice),
    /// [`map`](Cluster::map) or [`apply`](Cluster::apply) went (`None`
    /// before the first). On rank 0 `compute` is the slowest rank's.
    ///
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// # multiproc::init();
    /// let cluster = multiproc::Cluster::builder().workers(1).build()?;
    /// assert!(cluster.last_timing().is_none());
    /// # Ok(()) }
    /// ```
    pub fn last_timing(&self) -> Option<ClusterTiming> {
        self.last.get()
    }

    /// Element-wise map over the ranks: rank 0's `input` is split into
    /// [`size()`](Cluster::size) contiguous shares, each rank computes
    /// `f` over its share with its local pool (zero-copy: a share is
    /// received straight into shared memory), and rank 0 gets
    /// `out[i] = f(input[i])` for the whole input. Other ranks' `input` is
    /// not read, and they get an empty `Vec`. Collective.
    ///
    /// Python/MPI counterpart: `comm.Scatterv` of a NumPy array, a
    /// `Pool.map` over the share, `comm.Gatherv` of the results.
    ///
    /// # Errors
    /// The same error on every rank, naming the rank ([`Error::rank`]):
    /// * [`ErrorKind::Panicked`](crate::ErrorKind::Panicked): `f` panicked; [`Error::item_index`] is
    ///   the first element (global index) of the failing chunk.
    /// * [`ErrorKind::ProcessDied`](crate::ErrorKind::ProcessDied): a local worker died on that rank.
    /// * [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState): the ranks' calls do not match (another
    ///   method, other element types, another call order).
    /// * Otherwise as [`Pool::map_elements`].
    ///
    /// ```
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let cluster = multiproc::Cluster::builder().workers(1).build()?;
    ///     let out = cluster.map_slice(|x: f64| x.sqrt(), &[4.0, 9.0, 16.0])?;
    ///     if cluster.is_root() {
    ///         assert_eq!(out, [2.0, 3.0, 4.0]);
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn map_slice<F, T, U>(&self, f: F, input: &[T]) -> Result<Vec<U>>
    where
        F: Fn(T) -> U + 'static,
        T: Pod,
        U: Pod,
    {
        let _ = &f;
        let started = Instant::now();
        let n = if self.is_root() { input.len() } else { 0 };
        let header = Header {
            op: Op::MapSlice as u64,
            seq: self.next_seq(),
            n: n as u64,
            in_size: std::mem::size_of::<T>() as u64,
            out_size: std::mem::size_of::<U>() as u64,
            root_failed: 0,
        };
        let mut timing = ClusterTiming::default();
        if self.is_root() {
            let got = self.broadcast_header(header);
            debug_assert_eq!(got, Some(header));
            for r in 1..self.size {
                let range = self.share(n, r);
                self.send_blob(r, TAG_PART, bytemuck::cast_slice(&input[range]));
            }
            timing.scatter = started.elapsed();
            let mut out = vec![U::zeroed(); n];
            let range0 = self.share(n, 0);
            let t = Instant::now();
            let mut outcome = self
                .map_local(f, &input[range0.clone()], &mut out[range0.clone()])
                .map_err(|e| e.to_remote(0, 0));
            timing.compute = t.elapsed();
            for r in 1..self.size {
                let range = self.share(n, r);
                let slot: &mut [u8] = bytemuck::cast_slice_mut(&mut out[range.clone()]);
                let got = self.gather_from(r, range.start as u64, Some(slot), &mut timing);
                if outcome.is_ok() {
                    outcome = got.map(drop);
                }
            }
            self.finish(outcome, started, timing)?;
            Ok(out)
        } else {
            self.follow(header, started, |h| {
                self.map_received(f, self.share(h.n as usize, self.rank).len())
            })
            .map(|()| Vec::new())
        }
    }

    /// [`Pool::map`] over the ranks: rank 0's items are split into
    /// contiguous shares and sent with serde (postcard), every rank maps
    /// its share with its local pool, rank 0 gets every result in order;
    /// other ranks' `items` are not read and they get an empty `Vec`.
    /// Collective.
    ///
    /// Python/MPI counterpart: `comm.scatter(chunks)`, `pool.map(f, chunk)`,
    /// `comm.gather(results)` (pickled objects).
    ///
    /// # Errors
    /// As [`map_slice`](Cluster::map_slice) ([`Error::item_index`] is the
    /// item's index in the whole input); [`ErrorKind::Codec`](crate::ErrorKind::Codec) if an item or
    /// result cannot be encoded.
    ///
    /// ```
    /// fn shout(s: String) -> String { s.to_uppercase() }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let cluster = multiproc::Cluster::builder().workers(1).build()?;
    ///     let words = vec!["a".to_string(), "b".to_string()];
    ///     let out = cluster.map(shout, words)?;
    ///     if cluster.is_root() {
    ///         assert_eq!(out, ["A", "B"]);
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn map<F, A, R, I>(&self, f: F, items: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + 'static,
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = &f;
        let started = Instant::now();
        let mut timing = ClusterTiming::default();
        let mut header = Header {
            op: Op::Map as u64,
            seq: self.next_seq(),
            n: 0,
            in_size: 0,
            out_size: 0,
            root_failed: 0,
        };
        if self.is_root() {
            let mut items: Vec<A> = items.into_iter().collect();
            let n = items.len();
            header.n = n as u64;
            // Encode the other ranks' shares first: a failure here is
            // announced in the header, before anything is sent.
            let mut encoded = Vec::with_capacity(self.size.saturating_sub(1));
            let mut failed = None;
            for r in (1..self.size).rev() {
                let share: Vec<A> = items.split_off(self.share(n, r).start);
                match postcard::to_stdvec(&share) {
                    Ok(b) => encoded.push(b),
                    Err(e) => {
                        failed = Some(Error::codec("encoding a rank's items", e));
                        break;
                    }
                }
            }
            encoded.reverse();
            if let Some(e) = failed {
                header.root_failed = 1;
                self.broadcast_header(header);
                return self
                    .finish(Err(e.to_remote(0, 0)), started, timing)
                    .map(|()| Vec::new());
            }
            self.broadcast_header(header);
            for (i, bytes) in encoded.iter().enumerate() {
                self.send_blob(i + 1, TAG_PART, bytes);
            }
            drop(encoded);
            timing.scatter = started.elapsed();
            let t = Instant::now();
            let own = self.pool.map(f, items);
            timing.compute = t.elapsed();
            let (mut out, mut outcome) = match own {
                Ok(v) => (v, Ok(())),
                Err(e) => (Vec::new(), Err(e.to_remote(0, 0))),
            };
            self.gather_serde(
                |r| self.share(n, r).start as u64,
                &mut outcome,
                &mut timing,
                |part: Vec<R>| out.extend(part),
            );
            self.finish(outcome, started, timing)?;
            Ok(out)
        } else {
            drop(items);
            self.follow(header, started, |_| {
                let bytes = self.recv_blob(TAG_PART);
                postcard::from_bytes::<Vec<A>>(&bytes)
                    .map_err(|e| Error::codec("decoding this rank's items", e))
                    .and_then(|items| self.pool.map(f, items))
                    .and_then(|out| {
                        postcard::to_stdvec(&out)
                            .map_err(|e| Error::codec("encoding this rank's results", e))
                    })
            })
            .map(|()| Vec::new())
        }
    }

    /// Runs `f((rank, args))` once on every rank, in one of its local
    /// workers, with rank 0's `args` (other ranks' `args` are not used);
    /// rank 0 gets the results in rank order, other ranks an empty `Vec`.
    /// Collective.
    ///
    /// Python/MPI counterpart: `args = comm.bcast(args)`,
    /// `r = pool.apply(f, (comm.Get_rank(), args))`, `comm.gather(r)`.
    ///
    /// # Errors
    /// As [`map`](Cluster::map).
    ///
    /// ```
    /// fn hello((rank, greeting): (usize, String)) -> String { format!("{greeting} from {rank}") }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let cluster = multiproc::Cluster::builder().workers(1).build()?;
    ///     let out = cluster.apply(hello, "hi".to_string())?;
    ///     if cluster.is_root() {
    ///         assert_eq!(out.len(), cluster.size());
    ///         assert_eq!(out[0], "hi from 0");
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn apply<F, A, R>(&self, f: F, args: A) -> Result<Vec<R>>
    where
        F: Fn((usize, A)) -> R + 'static,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let _ = &f;
        let started = Instant::now();
        let mut timing = ClusterTiming::default();
        let mut header = Header {
            op: Op::Apply as u64,
            seq: self.next_seq(),
            n: self.size as u64,
            in_size: 0,
            out_size: 0,
            root_failed: 0,
        };
        if self.is_root() {
            let bytes = match postcard::to_stdvec(&args) {
                Ok(b) => b,
                Err(e) => {
                    header.root_failed = 1;
                    self.broadcast_header(header);
                    let e = Error::codec("encoding the arguments", e).to_remote(0, 0);
                    return self.finish(Err(e), started, timing).map(|()| Vec::new());
                }
            };
            self.broadcast_header(header);
            for r in 1..self.size {
                self.send_blob(r, TAG_PART, &bytes);
            }
            timing.scatter = started.elapsed();
            let t = Instant::now();
            let own = self.pool.apply(f, (0, args));
            timing.compute = t.elapsed();
            let mut out = Vec::with_capacity(self.size);
            let mut outcome = match own {
                Ok(v) => {
                    out.push(v);
                    Ok(())
                }
                Err(e) => Err(e.to_remote(0, 0)),
            };
            self.gather_serde(|_| 0, &mut outcome, &mut timing, |v: R| out.push(v));
            self.finish(outcome, started, timing)?;
            Ok(out)
        } else {
            drop(args);
            self.follow(header, started, |_| {
                let bytes = self.recv_blob(TAG_PART);
                postcard::from_bytes::<A>(&bytes)
                    .map_err(|e| Error::codec("decoding the arguments", e))
                    .and_then(|args| self.pool.apply(f, (self.rank, args)))
                    .and_then(|out| {
                        postcard::to_stdvec(&out)
                            .map_err(|e| Error::codec("encoding this rank's result", e))
                    })
            })
            .map(|()| Vec::new())
        }
    }
}
