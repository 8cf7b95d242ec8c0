//! [`ClusterBuilder`]: a rank's options, and the collective start that
//! initialises MPI and this rank's local pool.

use std::cell::{Cell, RefCell};

use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives};

use super::{Cluster, LAUNCHER_ENV_PREFIXES};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::PoolBuilder;

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

    /// The options of each rank's local [`Pool`](crate::Pool) (chunk size, task
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
    /// As [`PoolBuilder::build`]; [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState) for zero
    /// workers, or after MPI was finalised; [`ErrorKind::Spawn`](crate::ErrorKind::Spawn) on every
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
