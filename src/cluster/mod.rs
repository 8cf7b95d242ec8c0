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

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Pod;
use mpi::request::{LocalScope, Request};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Destination, Root, Source};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, ErrorKind, RemoteError, Result};
use crate::pool::{Pool, PoolBuilder, ShmVec};
use crate::segment::Segment;

/// Prefixes of the environment variables MPI launchers (`mpirun`/`mpiexec`
/// of Open MPI, MPICH/Hydra and Intel MPI, Slurm's PMI/PMIx plug-ins) give
/// a rank. A rank's local workers start without them: a worker that saw
/// them would take itself for a rank.
pub(crate) const LAUNCHER_ENV_PREFIXES: &[&str] = &[
    "OMPI_", "OPAL_", "ORTE_", "PRTE_", "PMIX_", "PMI_", "HYDRA_", "HYDI_", "MPI_", "I_MPI_",
];

const ROOT: i32 = 0;
const TAG_PART: i32 = 7101;
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
enum Op {
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
struct Header {
    op: u64,
    seq: u64,
    n: u64,
    in_size: u64,
    out_size: u64,
    /// Non-zero: rank 0 failed before sending anything; go to the outcome.
    root_failed: u64,
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

/// Options for a [`Cluster`]: the local pool of each rank.
///
/// Python/MPI counterpart: choosing `processes=` for the
/// `multiprocessing.Pool` each mpi4py rank starts.
///
/// ```
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let cluster = multiproc::Cluster::builder()
///         .workers(2)
///         .pool(multiproc::Pool::builder().task_timeout(std::time::Duration::from_secs(600)))
///         .build()?;
///     assert_eq!(cluster.workers(), 2);
///     Ok(())
/// }
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until .build() is called"]
pub struct ClusterBuilder {
    workers: Option<usize>,
    pool: Option<PoolBuilder>,
}

impl ClusterBuilder {
    /// Local worker processes per rank. Default: [`cpu_count()`]
    /// (the CPUs this rank may run on) divided by the number of ranks on
    /// this host, at least 1.
    ///
    /// [`cpu_count()`]: crate::cpu_count
    ///
    /// ```
    /// let b = multiproc::Cluster::builder().workers(4);
    /// # let _ = b;
    /// ```
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The options of each rank's local [`Pool`] (chunk size, task
    /// timeout, initializer, pinning…). A process count set there is used
    /// unless [`workers`](ClusterBuilder::workers) is set too.
    ///
    /// ```
    /// let b = multiproc::Cluster::builder().pool(multiproc::Pool::builder().pin_cores(true));
    /// # let _ = b;
    /// ```
    pub fn pool(mut self, pool: PoolBuilder) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Initialises MPI (`MPI_Init_thread`, `MPI_THREAD_FUNNELED`) unless
    /// the program already did, and starts this rank's local pool. Run
    /// without a launcher, the program is a cluster of one rank.
    ///
    /// Every rank must call it (it is collective). Make one `Cluster` per
    /// program and keep it until the end: dropping the one that
    /// initialised MPI finalises MPI, after which no `Cluster` can start.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`]; [`ErrorKind::InvalidState`] for zero
    /// workers, or after MPI was finalised; [`ErrorKind::Spawn`] on every
    /// rank if any rank's local pool could not start.
    ///
    /// ```
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let cluster = multiproc::Cluster::builder().workers(1).build()?;
    ///     assert!(cluster.rank() < cluster.size());
    ///     Ok(())
    /// }
    /// ```
    pub fn build(self) -> Result<Cluster> {
        // MPI_Init before anything that starts a thread or a process.
        let universe = if mpi::environment::is_initialized() {
            None
        } else {
            mpi::initialize_with_threading(mpi::Threading::Funneled).map(|(u, _)| u)
        };
        if mpi::environment::is_finalized() {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "MPI was finalized (a Cluster was dropped); it cannot start again",
            ));
        }
        let world = SimpleCommunicator::world();
        let comm = world.duplicate();
        let rank = comm.rank() as usize;
        let size = comm.size() as usize;
        let local_ranks = (world.split_shared(world.rank()).size() as usize).max(1);
        let pool_builder = self.pool.unwrap_or_default();
        let workers = self
            .workers
            .or(pool_builder.processes_set())
            .unwrap_or_else(|| (crate::cpu_count() / local_ranks).max(1));
        let pool = pool_builder
            .processes(workers)
            .strip_env_prefixes(LAUNCHER_ENV_PREFIXES)
            .build();
        // Every rank must learn whether every rank has a pool, or a rank
        // without one would leave the others waiting in its first call.
        let ok = u8::from(pool.is_ok());
        let mut all_ok = 0u8;
        comm.all_reduce_into(&ok, &mut all_ok, mpi::collective::SystemOperation::min());
        let pool = match pool {
            Ok(p) if all_ok == 1 => p,
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::Spawn,
                    "another rank could not start its local pool",
                ))
            }
            Err(e) => return Err(e),
        };
        Ok(Cluster {
            comm,
            rank,
            size,
            local_ranks,
            pool,
            seq: Cell::new(0),
            arenas: RefCell::new(Vec::new()),
            last: Cell::new(None),
            _universe: universe,
        })
    }
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
    /// * [`ErrorKind::Panicked`]: `f` panicked; [`Error::item_index`] is
    ///   the first element (global index) of the failing chunk.
    /// * [`ErrorKind::ProcessDied`]: a local worker died on that rank.
    /// * [`ErrorKind::InvalidState`]: the ranks' calls do not match (another
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
    /// item's index in the whole input); [`ErrorKind::Codec`] if an item or
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

    // ---- the frame's steps -------------------------------------------

    /// A non-root rank's side of a collective call: take the root's header,
    /// check it against this rank's own, run `work` on this rank's share
    /// (it returns the encoded result), send the result to the root, and
    /// learn the call's outcome.
    fn follow(
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
    fn gather_serde<D: DeserializeOwned>(
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

    fn next_seq(&self) -> u64 {
        let s = self.seq.get();
        self.seq.set(s + 1);
        s
    }

    /// Rank `r`'s contiguous share of `n` items.
    fn share(&self, n: usize, r: usize) -> std::ops::Range<usize> {
        let base = n / self.size;
        let extra = n % self.size;
        let start = r * base + r.min(extra);
        start..start + base + usize::from(r < extra)
    }

    /// Rank 0's header, on every rank (`None`: not ours, a bug or another
    /// library's traffic on our communicator, which cannot happen on a
    /// private duplicate).
    fn broadcast_header(&self, mine: Header) -> Option<Header> {
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
    fn map_local<F, T, U>(&self, f: F, input: &[T], out: &mut [U]) -> Result<()>
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
    fn map_received<F, T, U>(&self, f: F, count: usize) -> Result<Vec<u8>>
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
    fn gather_from(
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
    fn finish(&self, mine: Outcome, started: Instant, mut timing: ClusterTiming) -> Result<()> {
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

    fn send_blob(&self, dest: usize, tag: i32, bytes: &[u8]) {
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

    fn recv_blob(&self, tag: i32) -> Vec<u8> {
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
