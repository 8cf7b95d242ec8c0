//! `Cluster` over MPI ranks (feature `mpi`). One program, not libtest:
//! MPI can be initialised once per process, and under `mpirun` every rank
//! runs this same `main`, so the checks run in order on every rank.
//!
//! * `cargo test --features mpi --test cluster`: one rank (no launcher).
//! * CI: `MULTIPROC_EXPECT_RANKS=N mpirun -n N <this binary>`. The size
//!   check makes a launcher that does not match the MPI library (which
//!   starts N singletons, each "passing") fail.
//! * `MULTIPROC_CLUSTER_FAULT=rank-exit` / `rank-panic`: the last rank
//!   dies (exit without `MPI_Finalize`) or panics while the others wait in
//!   a call; the job must end (non-zero), not hang. Run by CI under
//!   `timeout`.
#![cfg(feature = "mpi")]

use multiproc::{Cluster, ErrorKind};

/// Prefixes a launcher's variables start with; no worker may see one.
const LAUNCHER: &[&str] = &[
    "OMPI_", "OPAL_", "ORTE_", "PRTE_", "PMIX_", "PMI_", "HYDRA_", "HYDI_", "MPI_", "I_MPI_",
];

fn square(x: f64) -> f64 {
    x * x
}

fn checked(x: f64) -> f64 {
    assert!(x != 77_777.0, "no 77777 here");
    x + 1.0
}

fn die_at(x: u32) -> u32 {
    if x == 5_000 {
        std::process::abort();
    }
    x
}

fn describe(n: u64) -> String {
    format!("item {n}")
}

/// Runs in a local worker of each rank: what the worker sees.
fn probe((rank, tag): (usize, String)) -> (usize, String, u32, Vec<String>) {
    let keys = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect();
    (rank, tag, std::process::id(), keys)
}

fn check(ok: bool, what: &str, rank: usize) {
    if !ok {
        eprintln!("rank {rank}: FAILED: {what}");
        std::process::exit(1);
    }
}

fn main() {
    multiproc::init();
    // Before any thread exists: a variable every launcher-prefix filter
    // must catch, so the check below means something with one rank too.
    std::env::set_var("OMPI_MULTIPROC_TEST_PROBE", "1");
    let fault = std::env::var("MULTIPROC_CLUSTER_FAULT").ok();

    let cluster = Cluster::builder().workers(1).build().expect("cluster");
    let (rank, size) = (cluster.rank(), cluster.size());
    let root = cluster.is_root();
    let expect: usize = std::env::var("MULTIPROC_EXPECT_RANKS").ok().map_or(1, |v| {
        v.parse().expect("MULTIPROC_EXPECT_RANKS is a number")
    });
    check(
        size == expect,
        &format!("size() is {size}, the launcher was asked for {expect} (MULTIPROC_EXPECT_RANKS)"),
        rank,
    );
    check(cluster.workers() == 1, "one local worker", rank);
    if root {
        println!(
            "cluster: {size} rank(s), {} on this host",
            cluster.local_ranks()
        );
    }

    if let Some(fault) = fault {
        run_fault(&cluster, &fault);
        return;
    }

    // 1. map_slice: uneven shares, every element where it belongs.
    let n = 100_003;
    let input: Vec<f64> = if root {
        (0..n).map(f64::from).collect()
    } else {
        Vec::new()
    };
    let out = cluster.map_slice(square, &input).expect("map_slice");
    if root {
        check(out.len() == n as usize, "map_slice length", rank);
        check(
            out.iter()
                .enumerate()
                .all(|(i, &y)| y == (i as f64) * (i as f64)),
            "map_slice values",
            rank,
        );
        let t = cluster.last_timing().expect("timing");
        check(t.total >= t.compute, "timing adds up", rank);
    } else {
        check(out.is_empty(), "non-root gets an empty Vec", rank);
    }

    // 2. fewer items than ranks, and none at all.
    let few = cluster.map_slice(square, &[3.0f64][..]).expect("one item");
    check(!root || few == [9.0], "one item", rank);
    let none = cluster.map_slice(square, &[] as &[f64]).expect("no items");
    check(none.is_empty(), "no items", rank);

    // 3. serde map, items spread over the ranks, in order.
    let words = cluster.map(describe, 0..1001u64).expect("map");
    if root {
        check(words.len() == 1001, "map length", rank);
        check(
            words[1000] == "item 1000" && words[0] == "item 0",
            "map order",
            rank,
        );
    } else {
        check(words.is_empty(), "non-root map result", rank);
    }

    // 4. apply on every rank: rank-aware, and workers see no launcher env.
    let seen = cluster.apply(probe, "hello".to_string()).expect("apply");
    let own_env: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| LAUNCHER.iter().any(|p| k.starts_with(p)))
        .collect();
    check(
        own_env.iter().any(|k| k == "OMPI_MULTIPROC_TEST_PROBE"),
        "the rank itself keeps its environment",
        rank,
    );
    if size > 1 {
        // Under a launcher the rank has the launcher's variables, so the
        // worker-side check below is a real one.
        check(
            own_env.len() > 1,
            &format!("a rank under mpirun sees launcher variables (saw {own_env:?})"),
            rank,
        );
    }
    if root {
        check(seen.len() == size, "apply: one result per rank", rank);
        for (r, (got_rank, tag, pid, keys)) in seen.iter().enumerate() {
            check(
                *got_rank == r && tag == "hello",
                "apply: rank order and args",
                rank,
            );
            check(*pid != std::process::id(), "apply runs in a worker", rank);
            let leaked: Vec<&String> = keys
                .iter()
                .filter(|k| LAUNCHER.iter().any(|p| k.starts_with(p)))
                .collect();
            check(
                leaked.is_empty(),
                &format!("rank {r}'s worker inherited launcher variables: {leaked:?}"),
                rank,
            );
        }
        println!("workers of all {size} rank(s) start without launcher variables");
    }

    // 5. a kernel panics on the last rank's share: the same error on every
    //    rank, naming that rank and the global index of the chunk.
    let big: Vec<f64> = if root {
        (0..80_000).map(f64::from).collect()
    } else {
        Vec::new()
    };
    let err = cluster.map_slice(checked, &big).unwrap_err();
    let guilty = cluster_rank_of(77_777, 80_000, size);
    check(
        err.kind() == ErrorKind::Panicked,
        &format!("panic kind: {err}"),
        rank,
    );
    check(
        err.rank() == Some(guilty),
        &format!("panic names rank {guilty}: {err}"),
        rank,
    );
    check(
        err.panic_info()
            .is_some_and(|p| p.message().contains("77777")),
        &format!("panic message: {err}"),
        rank,
    );
    let idx = err.item_index().expect("index");
    check(
        idx <= 77_777 && idx as usize >= cluster_share_start(guilty, 80_000, size),
        &format!("global index {idx}"),
        rank,
    );
    if root {
        println!("a panic on rank {guilty} reached every rank: {err}");
    }

    // 6. a worker dies (abort) on the last rank: ProcessDied, naming it.
    let items: Vec<u32> = (0..6_000).collect();
    let err = cluster
        .map_slice(die_at, if root { &items[..] } else { &[] })
        .unwrap_err();
    let guilty = cluster_rank_of(5_000, 6_000, size);
    check(
        err.is_process_died(),
        &format!("worker death kind: {err}"),
        rank,
    );
    check(
        err.rank() == Some(guilty),
        &format!("death names rank {guilty}: {err}"),
        rank,
    );
    if root {
        println!("a dead worker on rank {guilty} reached every rank: {err}");
    }

    // 7. the cluster is still usable (the dead worker was replaced).
    let again = cluster
        .map_slice(square, &input)
        .expect("map_slice after failures");
    check(!root || again == out, "map_slice after failures", rank);

    // 8. calls that do not match: rank 0 maps f64, the others u32.
    if size > 1 {
        let err = if root {
            cluster
                .map_slice(square, &[1.0f64, 2.0, 3.0, 4.0][..])
                .unwrap_err()
        } else {
            cluster.map_slice(|x: u32| x, &[] as &[u32]).unwrap_err()
        };
        check(
            err.kind() == ErrorKind::InvalidState,
            &format!("mismatch kind: {err}"),
            rank,
        );
        check(
            err.rank() == Some(1),
            &format!("mismatch names rank 1: {err}"),
            rank,
        );
        if root {
            println!("mismatched calls are an error on every rank: {err}");
        }
        let ok = cluster
            .map(describe, 0..4u64)
            .expect("map after a mismatch");
        check(!root || ok.len() == 4, "usable after a mismatch", rank);
    }

    if root {
        println!("cluster test: all checks passed on {size} rank(s)");
    }
}

/// The rank whose share holds item `i` of `n` (the cluster's split).
fn cluster_rank_of(i: usize, n: usize, size: usize) -> usize {
    (0..size)
        .rev()
        .find(|&r| cluster_share_start(r, n, size) <= i)
        .unwrap_or(0)
}

fn cluster_share_start(r: usize, n: usize, size: usize) -> usize {
    r * (n / size) + r.min(n % size)
}

/// The last rank fails while the others wait for it in a call. With one
/// rank there is nobody to hang: the modes just check the code path.
fn run_fault(cluster: &Cluster, fault: &str) {
    let last = cluster.size() - 1;
    if cluster.rank() == last {
        match fault {
            "rank-exit" => {
                eprintln!("rank {last}: exiting without MPI_Finalize (fault test)");
                std::process::exit(3);
            }
            "rank-panic" => panic!("rank {last}: panicking while holding the Cluster (fault test)"),
            other => panic!("unknown MULTIPROC_CLUSTER_FAULT {other}"),
        }
    }
    // The others wait here forever unless the job is ended.
    let input = vec![1.0f64; 1000];
    let _ = cluster.map_slice(square, &input);
    eprintln!("rank {}: the call returned after the fault", cluster.rank());
    std::process::exit(4);
}
