//! Group "futures": the pool from async code and as an executor
//! (docs/BENCHMARKS.md, "Futures"). An awaited `apply_async` under tokio
//! against the blocking `apply` and `spawn_blocking`; `cancel()` of a
//! running task to a replacement worker that answers; `submit` + `result`
//! of many tiny tasks, and of one at a time, against Python's
//! `ProcessPoolExecutor`; `apply_async` + `get` of many tiny tasks against
//! Python's `Pool.apply_async`.

use std::time::{Duration, Instant};

use super::{goal_line, ratio_goal, self_timed, Config, Contender, PythonPeer, Table};

const ASYNC_METRIC: &str = "Pool apply_async awaited under tokio (current-thread), 1 worker";
const BLOCKING: &str = "multiproc blocking apply";
const CANCEL_METRIC: &str = "cancel() a running task -> replacement worker answers, 1 worker";
const SUBMIT_METRIC: &str = "submit + result, tiny tasks, 2 workers";
const APPLY_ASYNC_METRIC: &str = "apply_async + get, tiny tasks, 2 workers";
const ROUND_TRIP_METRIC: &str = "submit(..).result() round trip, one at a time, 1 worker";

fn inc(x: u64) -> u64 {
    x + 1
}

/// Says it started (the event), then naps `ms`.
fn started_nap((started, ms): (multiproc::Event, u64)) -> u64 {
    started.set();
    nap(ms)
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// The rows of the group, and their goal lines.
pub(super) fn rows(table: &mut Table, cfg: &Config, quick: bool) {
    async_apply(table, cfg);
    cancel_running(table, cfg);
    submit_throughput(table, cfg, quick);
    submit_round_trip(table, cfg);
    apply_async_throughput(table, cfg, quick);
}

/// Prints the goal lines (after the table).
pub(super) fn goals(table: &Table) {
    ratio_goal(table, ASYNC_METRIC, BLOCKING, 0.5);
    goal_line(table, CANCEL_METRIC, 5e-3, "on 2 cores", |_| String::new());
    println!(
        "      Python's ProcessPoolExecutor cannot do this: Future.cancel() on a running \
         task returns False and the task runs to completion (only terminate_workers()/\
         kill_workers() stop it, and they end the whole executor)"
    );
    ratio_goal(
        table,
        SUBMIT_METRIC,
        "Python ProcessPoolExecutor(2).submit",
        200.0,
    );
    // A lone task's wait drives the pool at once, as `apply` does.
    ratio_goal(table, ROUND_TRIP_METRIC, BLOCKING, 0.8);
}

fn current_thread() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

fn async_apply(table: &mut Table, cfg: &Config) {
    let c = cfg.apply_calls;
    let ours = move || {
        let setup = || -> Result<_, String> {
            let pool = multiproc::Pool::new(1).map_err(|e| e.to_string())?;
            Ok((pool, current_thread()?))
        };
        match setup() {
            Ok((pool, rt)) => Contender::try_timed("multiproc awaited", move || {
                rt.block_on(async {
                    for i in 0..c {
                        let r = pool.apply_async(inc, i).map_err(|e| e.to_string())?;
                        let v = r.await.map_err(|e| e.to_string())?;
                        if v != i + 1 {
                            return Err(format!("apply_async({i}) gave {v}"));
                        }
                    }
                    Ok(())
                })
            }),
            Err(e) => Contender::unavailable("multiproc awaited", e),
        }
        .per_iteration(c)
    };
    let blocking = blocking_apply(c);
    let name = "tokio spawn_blocking (a thread, no process)";
    let spawn_blocking = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
    {
        Ok(rt) => Contender::try_timed(name, move || {
            rt.block_on(async {
                for i in 0..c {
                    let v = tokio::task::spawn_blocking(move || inc(i))
                        .await
                        .map_err(|e| e.to_string())?;
                    if v != i + 1 {
                        return Err(format!("spawn_blocking({i}) gave {v}"));
                    }
                }
                Ok(())
            })
        }),
        Err(e) => Contender::unavailable(name, e.to_string()),
    }
    .per_iteration(c);
    table.side_by_side(
        ASYNC_METRIC,
        "call",
        cfg,
        cfg.iters_apply,
        ours,
        vec![blocking, spawn_blocking],
    );
}

fn cancel_running(table: &mut Table, cfg: &Config) {
    let ours = || match multiproc::Pool::new(1) {
        Ok(pool) => self_timed(
            "multiproc",
            move || {
                // Running for sure: the task says so itself (`running()`
                // is true once it is sent, and one not started yet is
                // skipped by its worker, not killed).
                let started = multiproc::Event::new().map_err(|e| e.to_string())?;
                let t = pool
                    .submit(started_nap, (started.clone(), 600_000))
                    .map_err(|e| e.to_string())?;
                started
                    .wait_timeout(Duration::from_secs(30))
                    .map_err(|e| format!("the task never ran: {e}"))?;
                let t0 = Instant::now();
                if !t.cancel() {
                    return Err("cancel() returned false".into());
                }
                let v = pool.apply(inc, 1).map_err(|e| e.to_string())?;
                Ok((t0.elapsed(), (v, t.cancelled())))
            },
            |(v, cancelled)| {
                if v == 2 && cancelled {
                    Ok(())
                } else {
                    Err(format!(
                        "after cancel: apply gave {v}, cancelled {cancelled}"
                    ))
                }
            },
        ),
        Err(e) => Contender::unavailable("multiproc", e.to_string()),
    };
    // A second multiproc figure beside it, the plain blocking apply on a
    // warm worker: what the replacement adds on top of one round trip.
    let name = "one apply on a warm worker (floor)";
    let floor = match multiproc::Pool::new(1) {
        Ok(pool) => Contender::try_timed(name, move || {
            pool.apply(inc, 1).map(|_| ()).map_err(|e| e.to_string())
        }),
        Err(e) => Contender::unavailable(name, e.to_string()),
    };
    table.side_by_side(CANCEL_METRIC, "cancel", cfg, cfg.iters_1, ours, vec![floor]);
}

fn submit_throughput(table: &mut Table, cfg: &Config, quick: bool) {
    let python = ("Python ProcessPoolExecutor(2).submit", "executor_submit");
    batch_row(table, cfg, quick, SUBMIT_METRIC, python, |pool, i| {
        let t = pool.submit(inc, i)?;
        Ok(move || t.into_result())
    });
}

/// `n` tiny tasks started one after another on a `Pool(2)`, then each
/// result taken in turn (`start` starts one and returns how to take its
/// result), against the Python peer `(name, mode of benches/peers.py)`
/// doing the same.
fn batch_row<W>(
    table: &mut Table,
    cfg: &Config,
    quick: bool,
    metric: &str,
    (peer, mode): (&str, &str),
    start: fn(&multiproc::Pool, u64) -> multiproc::Result<W>,
) where
    W: FnOnce() -> multiproc::Result<u64> + 'static,
{
    let n: u64 = if quick { 10_000 } else { 100_000 };
    let np: u64 = if quick { 500 } else { 5_000 };
    let ours = move || {
        match multiproc::Pool::new(2) {
            Ok(pool) => Contender::try_timed("multiproc", move || {
                let pending = (0..n)
                    .map(|i| start(&pool, i))
                    .collect::<multiproc::Result<Vec<_>>>()
                    .map_err(|e| e.to_string())?;
                for (i, take) in pending.into_iter().enumerate() {
                    let v = take().map_err(|e| e.to_string())?;
                    if v != i as u64 + 1 {
                        return Err(format!("task {i} gave {v}"));
                    }
                }
                Ok(())
            }),
            Err(e) => Contender::unavailable("multiproc", e.to_string()),
        }
        .per_iteration(n)
    };
    let python = PythonPeer::contender(peer, &[mode, "--n", &np.to_string(), "--workers", "2"])
        .per_iteration(np);
    table.side_by_side(
        metric,
        "task",
        cfg,
        cfg.iters_map.min(10),
        ours,
        vec![python],
    );
}

/// One task at a time: `pool.submit(inc, i)?.into_result()`, against the
/// blocking `apply` of the same function (nothing but the handle differs)
/// and Python's `ex.submit(inc, i).result()`.
fn submit_round_trip(table: &mut Table, cfg: &Config) {
    let c = cfg.apply_calls;
    let ours = move || {
        match multiproc::Pool::new(1) {
            Ok(pool) => Contender::try_timed("multiproc", move || {
                for i in 0..c {
                    let t = pool.submit(inc, i).map_err(|e| e.to_string())?;
                    let v = t.into_result().map_err(|e| e.to_string())?;
                    if v != i + 1 {
                        return Err(format!("submit({i}) gave {v}"));
                    }
                }
                Ok(())
            }),
            Err(e) => Contender::unavailable("multiproc", e.to_string()),
        }
        .per_iteration(c)
    };
    let blocking = blocking_apply(c);
    let np = cfg.apply_calls_peer;
    let python = PythonPeer::contender(
        "Python ProcessPoolExecutor(1).submit().result()",
        &[
            "executor_round_trip",
            "--n",
            &np.to_string(),
            "--workers",
            "1",
        ],
    )
    .per_iteration(np);
    table.side_by_side(
        ROUND_TRIP_METRIC,
        "call",
        cfg,
        cfg.iters_apply,
        ours,
        vec![blocking, python],
    );
}

/// `n` calls of `pool.apply_async(inc, i)`, then each `get()`, against
/// Python's `Pool(2).apply_async` the same way.
fn apply_async_throughput(table: &mut Table, cfg: &Config, quick: bool) {
    let python = ("Python Pool(2).apply_async", "pool_apply_async");
    batch_row(table, cfg, quick, APPLY_ASYNC_METRIC, python, |pool, i| {
        let r = pool.apply_async(inc, i)?;
        Ok(move || r.get())
    });
}

/// The peer of the rows that compare with a blocking `apply`: `c` calls
/// of `pool.apply(inc, i)` on a `Pool(1)`.
fn blocking_apply(c: u64) -> Contender {
    match multiproc::Pool::new(1) {
        Ok(pool) => Contender::try_timed(BLOCKING, move || {
            for i in 0..c {
                let v = pool.apply(inc, i).map_err(|e| e.to_string())?;
                if v != i + 1 {
                    return Err(format!("apply({i}) gave {v}"));
                }
            }
            Ok(())
        }),
        Err(e) => Contender::unavailable(BLOCKING, e.to_string()),
    }
    .per_iteration(c)
}
