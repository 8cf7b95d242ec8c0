//! `Cluster::map_slice` over MPI ranks against the local pool and rayon,
//! in the same run (feature `mpi`; docs/BENCHMARKS.md, "Cluster").
//!
//! ```text
//! cargo bench --features mpi --bench cluster --no-run      # prints the binary's path
//! OMPI_MCA_btl=self,vader mpirun -n 2 --bind-to none <binary> --bench
//! ```
//!
//! Rows, 1e8 f64 `x*x+1` (`CLUSTER_BENCH_N` changes n; `PEERS_QUICK=1`
//! makes it 1e6 and 3 rounds):
//! * `Cluster::map_slice`, N ranks × 1 local worker: total, and rank 0's
//!   scatter / slowest compute / gather;
//! * `Pool::map_slice`, 2 workers, on rank 0 alone (same copies in and
//!   out as the cluster's own share);
//! * rayon `par_iter` into a `Vec`, 2 threads, on rank 0 alone;
//! * a sequential loop.
//!
//! While rank 0 runs the local rows, the other ranks wait in an
//! `MPI_Ibarrier` polled every millisecond (a blocking MPI wait would
//! spin on a core). Run with `--bind-to none`: Open MPI binds each rank
//! to one core by default when there are ≤ 2 ranks, and the local rows
//! would then share that core.

use std::time::{Duration, Instant};

use mpi::traits::CommunicatorCollectives;
use rayon::prelude::*;

fn kernel(x: f64) -> f64 {
    x * x + 1.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ns_per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e9 / n as f64
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let quick = std::env::var_os("PEERS_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
    let n: usize = std::env::var("CLUSTER_BENCH_N")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(if quick { 1_000_000 } else { 100_000_000 }, |v| v as usize);
    let rounds = if quick { 3 } else { 7 };

    let cluster = multiproc::Cluster::builder().workers(1).build()?;
    let root = cluster.is_root();
    let world = mpi::topology::SimpleCommunicator::world();
    let input: Vec<f64> = if root {
        (0..n).map(|i| i as f64 * 1e-3).collect()
    } else {
        Vec::new()
    };
    let want = |out: &[f64]| {
        out.len() == n
            && [0, n / 2, n - 1]
                .iter()
                .all(|&i| out[i] == kernel(input[i]))
    };

    // Cluster: warm-up, then timed rounds.
    let warm = cluster.map_slice(kernel, &input)?;
    assert!(!root || want(&warm), "cluster result");
    drop(warm);
    let (mut total, mut scatter, mut compute, mut gather) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        world.barrier();
        let t = Instant::now();
        let out = cluster.map_slice(kernel, &input)?;
        let el = t.elapsed();
        if root {
            let tm = cluster.last_timing().expect("timing");
            total.push(el);
            scatter.push(tm.scatter);
            compute.push(tm.compute);
            gather.push(tm.gather);
            assert!(want(&out));
        }
    }

    if root {
        // Local rows on rank 0 alone; the other ranks doze in a barrier.
        let pool = multiproc::Pool::new(2)?;
        let warm = pool.map_slice(kernel, &input)?;
        assert!(want(&warm));
        drop(warm);
        let mut local = vec![];
        for _ in 0..rounds {
            let t = Instant::now();
            let out = pool.map_slice(kernel, &input)?;
            local.push(t.elapsed());
            assert!(want(&out));
        }
        drop(pool);

        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("rayon pool");
        let mut ray = vec![];
        for i in 0..=rounds {
            let t = Instant::now();
            let out: Vec<f64> = threads.install(|| input.par_iter().map(|&x| kernel(x)).collect());
            if i > 0 {
                ray.push(t.elapsed());
            }
            assert!(want(&out));
        }

        let mut seq = vec![];
        for i in 0..=rounds.min(3) {
            let t = Instant::now();
            let out: Vec<f64> = input.iter().map(|&x| kernel(x)).collect();
            if i > 0 {
                seq.push(t.elapsed());
            }
            assert!(want(&out));
        }

        let size = cluster.size();
        println!(
            "cluster bench: n = {n} f64, x*x+1, {rounds} rounds (median); {size} rank(s) x {} local worker; cpu_count() on rank 0 = {}",
            cluster.workers(),
            multiproc::cpu_count()
        );
        println!("| row | ms / call | ns / element |");
        println!("|---|---|---|");
        let row = |name: &str, d: Duration| {
            println!(
                "| {name} | {:.1} | {:.2} |",
                d.as_secs_f64() * 1e3,
                ns_per(d, n)
            );
        };
        row(
            &format!("Cluster::map_slice, {size} ranks x 1 worker"),
            median(total),
        );
        row(
            "  of which scatter (rank 0 sends the shares)",
            median(scatter),
        );
        row(
            "  of which compute (slowest rank's local map)",
            median(compute),
        );
        row(
            "  of which gather (receiving results + outcome)",
            median(gather),
        );
        row("Pool::map_slice, 2 workers (rank 0 alone)", median(local));
        row("rayon par_iter().map().collect(), 2 threads", median(ray));
        row("sequential loop, 1 thread", median(seq));
        world.immediate_barrier().wait();
    } else {
        let mut req = world.immediate_barrier();
        loop {
            match req.test() {
                Ok(_) => break,
                Err(r) => req = r,
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}
