//! Group `forkserver`: start method `forkserver` against today's spawn,
//! procspawn and Python's `fork` and `forkserver` (docs/BENCHMARKS.md,
//! "Fork server").
//!
//! ```text
//! PEERS_ONLY=forkserver cargo bench --bench peers
//! ```

use multiproc::StartMethod;

use super::{goal_line, one, ratio_goal, Config, Contender, PythonPeer, Table};

/// Tasks per iteration of the churn row: multiproc with the fork server,
/// then the peers (a start each, so fewer).
const CHURN_TASKS: u64 = 1_000;
const CHURN_TASKS_PEER: u64 = 50;
const CHURN_WORKERS: usize = 2;
const CHURN_ITERS: usize = 10;

fn spawn_metric(n: usize) -> String {
    if n == 1 {
        "forkserver: spawn+join 1 process".to_string()
    } else {
        format!("forkserver: spawn+join {n} processes")
    }
}

const CHURN_METRIC: &str =
    "forkserver: Pool(2) max_tasks_per_child(1), tiny tasks (a new worker each)";

/// The rows of the group.
pub(super) fn rows(table: &mut Table, cfg: &Config) {
    spawn_join(table, cfg, 1, cfg.iters_1);
    spawn_join(table, cfg, 4, cfg.iters_4);
    pool_churn(table, cfg);
}

/// The goals of the issue, after the table.
pub(super) fn goals(table: &Table) {
    goal_line(table, &spawn_metric(4), 1.5e-3, "on 2 cores", |_| {
        String::new()
    });
    ratio_goal(table, &spawn_metric(4), "Python fork", 3.0);
    ratio_goal(table, CHURN_METRIC, "Python forkserver Pool", 5.0);
}

/// `n` processes that return 1, started and joined.
fn start_join(method: StartMethod, n: usize) {
    let procs: Vec<multiproc::Process<u64>> = (0..n)
        .map(|_| {
            multiproc::Process::builder()
                .start_method(method)
                .spawn(one, ())
                .expect("multiproc spawn")
        })
        .collect();
    for p in procs {
        assert_eq!(p.join().expect("multiproc join"), 1);
    }
}

fn spawn_join(table: &mut Table, cfg: &Config, n: usize, iters: usize) {
    let ours = move || {
        Contender::timed("multiproc forkserver", move || {
            start_join(StartMethod::ForkServer, n)
        })
    };
    let mut peers = vec![
        Contender::timed("multiproc spawn", move || start_join(StartMethod::Spawn, n)),
        Contender::timed("procspawn 1.0.2", move || {
            let handles: Vec<_> = (0..n).map(|_| procspawn::spawn((), |()| 1u64)).collect();
            for h in handles {
                assert_eq!(h.join().expect("procspawn join"), 1);
            }
        }),
    ];
    for method in ["fork", "forkserver"] {
        let args = ["spawn_join", "--n", &n.to_string(), "--method", method];
        peers.push(PythonPeer::contender(&format!("Python {method}"), &args));
    }
    table.side_by_side(&spawn_metric(n), "iteration", cfg, iters, ours, peers);
}

fn tiny(x: u64) -> u64 {
    x + 1
}

/// A pool of two that starts a new worker for every task: `map` of tiny
/// tasks, one per chunk.
fn churn_pool(method: StartMethod, name: &str, tasks: u64) -> Contender {
    let pool = multiproc::Pool::builder()
        .processes(CHURN_WORKERS)
        .max_tasks_per_child(1)
        .chunksize(1)
        .start_method(method)
        .build();
    match pool {
        Ok(pool) => Contender::try_timed(name, move || {
            let out = pool.map(tiny, 0..tasks).map_err(|e| e.to_string())?;
            if out.len() as u64 != tasks || out.last() != Some(&tasks) {
                return Err("map returned a wrong result".to_string());
            }
            Ok(())
        }),
        Err(e) => Contender::unavailable(name, format!("Pool: {e}")),
    }
    .per_iteration(tasks)
}

fn pool_churn(table: &mut Table, cfg: &Config) {
    let quick = cfg.iters_1 < 10;
    let (tasks, peer_tasks) = if quick {
        (CHURN_TASKS / 10, CHURN_TASKS_PEER / 10)
    } else {
        (CHURN_TASKS, CHURN_TASKS_PEER)
    };
    let ours = move || churn_pool(StartMethod::ForkServer, "multiproc forkserver", tasks);
    let mut peers = vec![churn_pool(
        StartMethod::Spawn,
        "multiproc spawn Pool",
        peer_tasks,
    )];
    // Python's `fork` Pool is left out: with `maxtasksperchild=1` it forks
    // its replacements from a parent running the pool's threads, and here
    // its new workers hung on a lock copied held (docs/BENCHMARKS.md).
    let args = [
        "pool_churn",
        "--n",
        &peer_tasks.to_string(),
        "--workers",
        &CHURN_WORKERS.to_string(),
        "--method",
        "forkserver",
    ];
    peers.push(PythonPeer::contender("Python forkserver Pool", &args).per_iteration(peer_tasks));
    let iters = if quick { cfg.iters_1 } else { CHURN_ITERS };
    table.side_by_side(CHURN_METRIC, "task", cfg, iters, ours, peers);
}
