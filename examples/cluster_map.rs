//! The same map on one machine or many: every MPI rank maps its share of
//! the input with its own local pool of worker processes (feature `mpi`).
//!
//! ```text
//! cargo build --release --features mpi --example cluster_map
//! mpirun -n 4 target/release/examples/cluster_map        # 4 ranks
//! target/release/examples/cluster_map                    # 1 rank, no launcher
//! ```
//!
//! Python (mpi4py + multiprocessing):
//! ```python
//! from mpi4py import MPI
//! import numpy as np, multiprocessing as mp
//!
//! def kernel(x): return np.sqrt(x) * 2.0
//!
//! if __name__ == "__main__":
//!     comm = MPI.COMM_WORLD
//!     rank, size = comm.Get_rank(), comm.Get_size()
//!     data = np.arange(1_000_000, dtype="f8") if rank == 0 else None
//!     share = comm.scatter(np.array_split(data, size) if rank == 0 else None)
//!     with mp.Pool(max(1, mp.cpu_count() // ranks_here)) as pool:  # per-rank pool
//!         part = np.concatenate(pool.map(kernel, np.array_split(share, 8)))
//!     out = comm.gather(part)
//!     if rank == 0: print(np.concatenate(out)[-1])
//! ```

fn kernel(x: f64) -> f64 {
    x.sqrt() * 2.0
}

fn label((rank, host_hint): (usize, String)) -> String {
    format!(
        "rank {rank} worker pid {} ({host_hint})",
        std::process::id()
    )
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // first: workers are this program re-executed
    let cluster = multiproc::Cluster::from_mpi()?;
    if cluster.is_root() {
        println!(
            "{} rank(s), {} on this host, {} local worker(s) each",
            cluster.size(),
            cluster.local_ranks(),
            cluster.workers()
        );
    }

    // Only rank 0 holds the input; the others pass an empty slice.
    let n = 1_000_000;
    let input: Vec<f64> = if cluster.is_root() {
        (0..n).map(f64::from).collect()
    } else {
        Vec::new()
    };
    let out = cluster.map_slice(kernel, &input)?;

    // Every rank answers once, from one of its workers.
    let who = cluster.apply(label, "hello".to_string())?;

    if cluster.is_root() {
        assert_eq!(out.len(), n as usize);
        assert_eq!(out[400], 40.0);
        let t = cluster.last_timing();
        println!("out[{}] = {:.3}", n - 1, out[n as usize - 1]);
        for line in who {
            println!("{line}");
        }
        if let Some(t) = t {
            println!("last call: {t:?}");
        }
    }
    Ok(())
}
