//! Issue 15's measurements: the parent's CPU time per item of the serde
//! maps, the struct-item serde row, the uneven-work rows, first-call
//! against warm rows of `map_slice`/`map_into`, worker-count scaling rows,
//! and the table as JSON for `benches/charts.py`.
//!
//! Groups (`PEERS_ONLY=...`): `struct map`, `uneven`, `first call`,
//! `scaling`. The iceoryx2 peers live in `iceoryx.rs`, inside the pipe and
//! queue rows.

use std::cell::Cell;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{
    check_map, count, python_pool_name, ratio_goal, spoil, square, square_plus_one,
    square_plus_one_of, Config, Contender, Figure, Machine, PythonPeer, Secs, Stats, Table,
    ZeroCopyData, APPLY_METRIC, COMPUTE_STEPS, FLOOR, PIPE_METRIC, QUEUE_BATCH_METRIC,
    QUEUE_METRIC,
};

// ------------------------------------------------------ parent CPU time

thread_local! {
    /// The parent's CPU time of the iteration that just ran, if its
    /// contender reported one ([`report_parent_cpu`]).
    static PARENT_CPU: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Records the parent's CPU time of the current iteration; [`super::measure`]
/// takes it after the iteration.
pub(crate) fn report_parent_cpu(d: Duration) {
    PARENT_CPU.with(|c| c.set(Some(d)));
}

/// The reported CPU time of the last iteration, cleared.
pub(crate) fn take_parent_cpu() -> Option<Duration> {
    PARENT_CPU.with(Cell::take)
}

/// This process's CPU time so far, user + system, all its threads and
/// none of its children (`getrusage(RUSAGE_SELF)`): the pool's workers
/// are other processes, so what this counts is the parent's own work.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn parent_cpu_now() -> Option<Duration> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable `rusage`; getrusage only writes it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: zeroed is a valid `rusage` (plain integers), and getrusage
    // succeeded.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Some(tv(ru.ru_utime) + tv(ru.ru_stime))
}

#[cfg(not(target_os = "linux"))]
fn parent_cpu_now() -> Option<Duration> {
    None
}

/// Runs `f`, returning its wall time and value, and reports the parent's
/// CPU time it took (Linux; elsewhere nothing is reported).
pub(crate) fn with_parent_cpu<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let c0 = parent_cpu_now();
    let t0 = Instant::now();
    let out = f();
    let took = t0.elapsed();
    if let (Some(c0), Some(c1)) = (c0, parent_cpu_now()) {
        report_parent_cpu(c1.saturating_sub(c0));
    }
    (took, out)
}

/// The bound on the parent's CPU time per item of a serde map of
/// number types.
const PARENT_CPU_GOAL: f64 = 1.5e-9;

/// Prints the parent's CPU time per operation of every row that has it.
pub(crate) fn print_parent_cpu(table: &Table) {
    let mut first = true;
    for r in &table.rows {
        for (who, cpu, fig) in [
            ("multiproc", &r.ours_cpu, &r.ours),
            (r.peer.as_str(), &r.their_cpu, &r.theirs),
        ] {
            let (Some(cpu), Figure::Time(wall)) = (cpu, fig) else {
                continue;
            };
            if first {
                println!("parent's CPU time per operation (getrusage RUSAGE_SELF, user+sys; workers excluded):");
                first = false;
            }
            println!(
                "  {} (row vs {}): {who} {} CPU (min {}) of {} wall = {:.0}% of one core",
                r.metric,
                r.peer,
                Secs(cpu.median),
                Secs(cpu.min),
                Secs(wall.median),
                100.0 * cpu.median / wall.median
            );
        }
    }
}

// --------------------------------------------------------------- rows

/// Issue 15's rows, each group where `want` says so.
pub(crate) fn rows(table: &mut Table, cfg: &Config, want: &dyn Fn(&str) -> bool) {
    if want("struct map") {
        struct_map(table, cfg);
    }
    if want("uneven") {
        uneven_zero_copy(table, cfg, "growing", uneven_growing);
        uneven_zero_copy(table, cfg, "skewed", uneven_skewed);
        uneven_serde(table, cfg);
    }
    if want("first call") {
        first_call(table, cfg);
    }
    if want("scaling") {
        for w in scaling_workers() {
            scaling_serde(table, cfg, w);
        }
        for w in scaling_workers() {
            scaling_zero_copy(table, cfg, w);
        }
    }
}

/// Worker counts of the scaling rows: `PEERS_SCALING=1,2,4,8,16` on a
/// bigger machine (default 1, 2 and 4).
fn scaling_workers() -> Vec<usize> {
    let parsed = std::env::var("PEERS_SCALING").ok().and_then(|v| {
        v.split(',')
            .map(|w| w.trim().parse::<usize>().ok().filter(|&w| w > 0))
            .collect::<Option<Vec<_>>>()
    });
    parsed.unwrap_or_else(|| vec![1, 2, 4])
}

/// Workers of the struct, uneven and first-call rows: `PEERS_WORKERS`
/// (default 2, the count and CI's cores).
fn workers() -> usize {
    super::pool_workers()
}

/// The item of the struct row.
#[derive(Clone, Serialize, Deserialize)]
struct Reading {
    name: String,
    value: f64,
}

/// The task of the struct row (Python: `weigh` in peers.py).
fn weigh(r: Reading) -> f64 {
    r.value * r.name.len() as f64
}

fn struct_metric(m: u64) -> String {
    format!(
        "Pool.map {} structs (String, f64) -> f64 (serde, &items), {WORKERS} workers",
        count(m),
        WORKERS = workers(),
    )
}

fn struct_owned_metric(m: u64) -> String {
    format!(
        "Pool.map {} structs (String, f64) -> f64 (serde, items moved in), {WORKERS} workers",
        count(m),
        WORKERS = workers(),
    )
}

/// `pool.map(weigh, &items)` of `m` small structs (the caller keeps them,
/// as Python's `pool.map` leaves its list), and `pool.map(weigh, items)`
/// of a clone made before the clock starts (the map drops each item once
/// encoded), each against Python's `Pool(2).map` of `(str, float)`
/// tuples built before its clock.
fn struct_map(table: &mut Table, cfg: &Config) {
    let m = cfg.map_items;
    let items: Rc<Vec<Reading>> = Rc::new(
        (0..m)
            .map(|i| Reading {
                name: format!("item-{i}"),
                value: i as f64 * 0.5,
            })
            .collect(),
    );
    for borrowed in [true, false] {
        let items = Rc::clone(&items);
        let ours = move || {
            let items = Rc::clone(&items);
            match multiproc::Pool::new(workers()) {
                Ok(pool) => Contender {
                    name: "multiproc".to_string(),
                    ops: 1,
                    run: Box::new(move || {
                        let (took, out) = if borrowed {
                            with_parent_cpu(|| pool.map(weigh, &*items))
                        } else {
                            let input = items.to_vec();
                            with_parent_cpu(|| pool.map(weigh, input))
                        };
                        let out = out.map_err(|e| e.to_string())?;
                        if out.len() != items.len() {
                            return Err(format!("{} results for {} items", out.len(), items.len()));
                        }
                        for i in [0, items.len() / 2, items.len() - 1] {
                            let want = weigh(items[i].clone());
                            if out[i] != want {
                                return Err(format!("item {i}: want {want}, got {}", out[i]));
                            }
                        }
                        Ok(took)
                    }),
                },
                Err(e) => Contender::unavailable("multiproc", format!("Pool::new: {e}")),
            }
            .per_iteration(m)
        };
        let python = PythonPeer::contender(
            &format!("Python Pool({}).map, (str, float) tuples", workers()),
            &[
                "pool_map_struct",
                "--n",
                &m.to_string(),
                "--workers",
                &workers().to_string(),
            ],
        )
        .per_iteration(m);
        let metric = if borrowed {
            struct_metric(m)
        } else {
            struct_owned_metric(m)
        };
        table.side_by_side(&metric, "item", cfg, cfg.iters_map, ours, vec![python]);
    }
}

/// Mul-adds of one element, the chain of [`super::compute_of`].
fn mul_adds(x: f64, steps: usize) -> f64 {
    let mut y = x;
    for _ in 0..steps {
        y = y * 0.999_999 + 1e-3;
    }
    y
}

/// Uneven work, growing with the index: the input is `i / n`, and element
/// `i` costs `2 * COMPUTE_STEPS * i / n` mul-adds (on average as many as
/// the compute row's, the last chunks twice as dear as the middle).
fn uneven_growing(x: f64) -> f64 {
    mul_adds(x, (x * (2 * COMPUTE_STEPS) as f64) as usize)
}

/// Skewed work: the last tenth of the elements costs ten times the
/// compute row's, the rest nothing (same mean).
fn uneven_skewed(x: f64) -> f64 {
    if x >= 0.9 {
        mul_adds(x, 10 * COMPUTE_STEPS)
    } else {
        x
    }
}

/// [`ZeroCopyData`] of `n` elements whose inputs are `i / n`.
fn index_data(n: usize) -> ZeroCopyData {
    let input: Vec<f64> = (0..n).map(|i| i as f64 / n as f64).collect();
    let shm = multiproc::ShmVec::from_slice(&input)
        .and_then(|x| Ok((x, multiproc::ShmVec::<f64>::zeroed(n)?)))
        .map(|pair| Rc::new(std::cell::RefCell::new(pair)))
        .map_err(|e| format!("ShmVec of {n} f64: {e}"));
    ZeroCopyData {
        n,
        shm,
        heap: Rc::new(std::cell::RefCell::new((input, vec![1.0f64; n]))),
    }
}

/// A multiproc contender over `zc` on a fresh `Pool(workers)`:
/// `map_elements(f)`, checked.
fn zc_pool<F>(zc: &ZeroCopyData, workers: usize, f: F) -> Contender
where
    F: Fn(f64) -> f64 + Copy + 'static,
{
    let shm = match &zc.shm {
        Ok(shm) => Rc::clone(shm),
        Err(e) => return Contender::unavailable("multiproc", e.clone()),
    };
    match multiproc::Pool::new(workers) {
        Ok(pool) => Contender::try_timed("multiproc", move || {
            let mut pair = shm.borrow_mut();
            let (input, output) = &mut *pair;
            spoil(output);
            pool.map_elements(f, input, output)
                .map_err(|e| e.to_string())?;
            check_map(input, output, f)
        }),
        Err(e) => Contender::unavailable("multiproc", format!("Pool::new: {e}")),
    }
    .per_iteration(zc.n as u64)
}

/// rayon's `par_iter` (adaptive splitting and stealing, what a rayon user
/// writes) over the heap pair with `threads` threads.
fn rayon_elements<F>(zc: &ZeroCopyData, threads: usize, f: F) -> Contender
where
    F: Fn(f64) -> f64 + Copy + Send + Sync + 'static,
{
    let name = format!("rayon 1.12 par_iter, {threads} threads");
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool,
        Err(e) => return Contender::unavailable(&name, format!("rayon pool: {e}")),
    };
    let heap = Rc::clone(&zc.heap);
    Contender::try_timed(&name, move || {
        let mut pair = heap.borrow_mut();
        let (input, output) = &mut *pair;
        spoil(output);
        pool.install(|| {
            output
                .par_iter_mut()
                .zip(input.par_iter())
                .for_each(|(y, &x)| *y = f(x));
        });
        check_map(input, output, f)
    })
    .per_iteration(zc.n as u64)
}

fn uneven_metric(kind: &str, n: usize) -> String {
    format!(
        "uneven work ({kind}): ShmVec map_elements {} f64, {WORKERS} workers",
        count(n as u64),
        WORKERS = workers(),
    )
}

/// Zero-copy `map_elements` of uneven work against rayon's `par_iter` at
/// the same thread count.
fn uneven_zero_copy<F>(table: &mut Table, cfg: &Config, kind: &str, f: F)
where
    F: Fn(f64) -> f64 + Copy + Send + Sync + 'static,
{
    let zc = index_data(cfg.compute_len);
    let rayon = rayon_elements(&zc, workers(), f);
    table.side_by_side(
        &uneven_metric(kind, zc.n),
        "element",
        cfg,
        cfg.iters_zc,
        || zc_pool(&zc, workers(), f),
        vec![rayon],
    );
}

fn uneven_serde_metric(n: usize) -> String {
    format!(
        "uneven work (growing): Pool.map {} f64 (serde), {WORKERS} workers",
        count(n as u64),
        WORKERS = workers(),
    )
}

/// The serde `map` of the growing uneven work, the items built before the
/// clock, against rayon's `par_iter().map().collect()`.
fn uneven_serde(table: &mut Table, cfg: &Config) {
    let n = cfg.compute_len;
    let xs: Rc<Vec<f64>> = Rc::new((0..n).map(|i| i as f64 / n as f64).collect());
    let check = |xs: &[f64], out: &[f64]| -> Result<(), String> {
        if out.len() != xs.len() {
            return Err(format!("{} results for {} items", out.len(), xs.len()));
        }
        for i in [0, xs.len() / 2, xs.len() - 1] {
            if out[i] != uneven_growing(xs[i]) {
                return Err(format!("item {i}: got {}", out[i]));
            }
        }
        Ok(())
    };
    let ours = || {
        let xs = Rc::clone(&xs);
        match multiproc::Pool::new(workers()) {
            Ok(pool) => Contender {
                name: "multiproc".to_string(),
                ops: 1,
                run: Box::new(move || {
                    let (took, out) =
                        with_parent_cpu(|| pool.map(uneven_growing, xs.iter().copied()));
                    check(&xs, &out.map_err(|e| e.to_string())?)?;
                    Ok(took)
                }),
            },
            Err(e) => Contender::unavailable("multiproc", format!("Pool::new: {e}")),
        }
        .per_iteration(n as u64)
    };
    let name = format!("rayon 1.12 par_iter map collect, {} threads", workers());
    let rayon = match rayon::ThreadPoolBuilder::new()
        .num_threads(workers())
        .build()
    {
        Ok(pool) => {
            let xs = Rc::clone(&xs);
            Contender {
                name: name.clone(),
                ops: 1,
                run: Box::new(move || {
                    let t0 = Instant::now();
                    let xs: &[f64] = &xs;
                    let out: Vec<f64> =
                        pool.install(|| xs.par_iter().map(|&x| uneven_growing(x)).collect());
                    let took = t0.elapsed();
                    check(xs, &out)?;
                    Ok(took)
                }),
            }
        }
        Err(e) => Contender::unavailable(&name, format!("rayon pool: {e}")),
    }
    .per_iteration(n as u64);
    table.side_by_side(
        &uneven_serde_metric(n),
        "item",
        cfg,
        cfg.iters_zc,
        ours,
        vec![rayon],
    );
}

// ------------------------------------------------------- first call

/// Elements of the first-call rows: 1e7 `f64` (80 MB each way) in the
/// full run, as the report.
fn first_len(cfg: &Config) -> usize {
    (cfg.zc_len / 10).max(100_000)
}

fn first_slice_metric(n: usize) -> String {
    format!(
        "map_slice {} f64 x*x+1, first call on a fresh Pool({WORKERS})",
        count(n as u64),
        WORKERS = workers(),
    )
}

fn first_into_metric(n: usize) -> String {
    format!(
        "map_into {} f64 x*x+1, first call on a fresh Pool({WORKERS}) and fresh ShmVecs",
        count(n as u64),
        WORKERS = workers(),
    )
}

fn warm_slice_metric(n: usize) -> String {
    format!(
        "map_slice {} f64 x*x+1, warm, {WORKERS} workers",
        count(n as u64),
        WORKERS = workers(),
    )
}

const WARM: &str = "the same call, warm (pool used before)";
const COPIES: &str = "map_elements + copy in + copy out (memcpy)";

/// A pool whose workers are up: one `apply` done, so a timed first call
/// pays only for what that call itself starts (the pool's arena, the
/// workers mapping the segments, their page faults), not for spawning.
fn ready_pool() -> Result<multiproc::Pool, String> {
    let pool = multiproc::Pool::new(workers()).map_err(|e| format!("Pool::new: {e}"))?;
    match pool.apply(|x: u64| x + 1, 1) {
        Ok(2) => Ok(pool),
        other => Err(format!("warm-up apply: {other:?}")),
    }
}

fn check_slice(input: &[f64], out: &[f64]) -> Result<(), String> {
    if out.len() != input.len() {
        return Err(format!("{} results for {} items", out.len(), input.len()));
    }
    check_map(input, out, square_plus_one_of)
}

/// First call against warm calls:
///
/// * "first" is the first `map_slice` (`map_into`) on a pool built for
///   that iteration, outside the clock, whose workers have already run
///   one `apply` (so spawning is not counted). A fresh pool has no arena
///   and its workers have mapped nothing, which is all a new program's
///   first call has to do besides; what the process itself keeps between
///   pools (the allocator's free memory) is the one thing a fresh process
///   would lack. `map_into` also gets a fresh `ShmVec` pair each
///   iteration (built outside the clock), as a new program would.
/// * "warm" is the same call on one pool kept for the whole row, after the
///   untimed warm-up rounds.
/// * The warm `map_slice` row compares it with what it does by hand:
///   copy the slice into a `ShmVec`, `map_elements`, copy the result out.
fn first_call(table: &mut Table, cfg: &Config) {
    let n = first_len(cfg);
    let iters = cfg.iters_zc.min(10);
    let input: Rc<Vec<f64>> = Rc::new((0..n).map(|i| (i % 4096) as f64 * 0.25).collect());

    // map_slice: first against warm.
    let warm_slice = |name: &str| {
        let input = Rc::clone(&input);
        match ready_pool() {
            Ok(pool) => Contender::try_timed(name, move || {
                let out = pool
                    .map_slice(square_plus_one_of, &input)
                    .map_err(|e| e.to_string())?;
                check_slice(&input, &out)
            }),
            Err(e) => Contender::unavailable(name, e),
        }
        .per_iteration(1)
    };
    let first_slice = || {
        let input = Rc::clone(&input);
        Contender {
            name: "multiproc".to_string(),
            ops: 1,
            run: Box::new(move || {
                let pool = ready_pool()?;
                let t0 = Instant::now();
                let out = pool
                    .map_slice(square_plus_one_of, &input)
                    .map_err(|e| e.to_string())?;
                let took = t0.elapsed();
                check_slice(&input, &out)?;
                Ok(took)
            }),
        }
    };
    table.side_by_side(
        &first_slice_metric(n),
        "call",
        cfg,
        iters,
        first_slice,
        vec![warm_slice(WARM)],
    );

    // map_into: first against warm.
    let fresh_pair = |input: &[f64]| -> Result<super::ShmPair, String> {
        let x = multiproc::ShmVec::from_slice(input).map_err(|e| e.to_string())?;
        let y = multiproc::ShmVec::<f64>::zeroed(input.len()).map_err(|e| e.to_string())?;
        Ok((x, y))
    };
    let first_into = || {
        let input = Rc::clone(&input);
        Contender {
            name: "multiproc".to_string(),
            ops: 1,
            run: Box::new(move || {
                let pool = ready_pool()?;
                let (x, mut y) = fresh_pair(&input)?;
                let t0 = Instant::now();
                pool.map_into(square_plus_one, &x, &mut y)
                    .map_err(|e| e.to_string())?;
                let took = t0.elapsed();
                check_map(&x, &y, square_plus_one_of)?;
                Ok(took)
            }),
        }
    };
    let warm_into = match (ready_pool(), fresh_pair(&input)) {
        (Ok(pool), Ok((x, mut y))) => Contender::try_timed(WARM, move || {
            spoil(&mut y);
            pool.map_into(square_plus_one, &x, &mut y)
                .map_err(|e| e.to_string())?;
            check_map(&x, &y, square_plus_one_of)
        }),
        (Err(e), _) | (_, Err(e)) => Contender::unavailable(WARM, e),
    };
    table.side_by_side(
        &first_into_metric(n),
        "call",
        cfg,
        iters,
        first_into,
        vec![warm_into],
    );

    // Warm map_slice against map_elements with the two copies by hand.
    let by_hand = {
        let input = Rc::clone(&input);
        match (ready_pool(), fresh_pair(&input)) {
            (Ok(pool), Ok((mut x, mut y))) => Contender::try_timed(COPIES, move || {
                x.copy_from_slice(&input);
                pool.map_elements(square_plus_one_of, &x, &mut y)
                    .map_err(|e| e.to_string())?;
                let out = y.to_vec();
                check_slice(&input, &out)
            }),
            (Err(e), _) | (_, Err(e)) => Contender::unavailable(COPIES, e),
        }
    };
    let bare = {
        let name = "map_elements alone (ShmVec in and out)";
        match (ready_pool(), fresh_pair(&input)) {
            (Ok(pool), Ok((x, mut y))) => Contender::try_timed(name, move || {
                spoil(&mut y);
                pool.map_elements(square_plus_one_of, &x, &mut y)
                    .map_err(|e| e.to_string())?;
                check_map(&x, &y, square_plus_one_of)
            }),
            (Err(e), _) | (_, Err(e)) => Contender::unavailable(name, e),
        }
    };
    table.side_by_side(
        &warm_slice_metric(n),
        "call",
        cfg,
        iters,
        || warm_slice("multiproc"),
        vec![by_hand, bare],
    );
}

// ---------------------------------------------------------- scaling

fn scaling_serde_metric(m: u64, w: usize) -> String {
    format!(
        "scaling: Pool.map {} u64 squares (serde), {w} workers",
        count(m)
    )
}

fn scaling_zc_metric(n: usize, w: usize) -> String {
    format!(
        "scaling: ShmVec map_elements {} f64, {COMPUTE_STEPS} mul-adds each, {w} workers",
        count(n as u64)
    )
}

/// The serde `map` of `m` squares on `Pool(w)` against rayon's
/// `into_par_iter().map().collect()` with `w` threads.
fn scaling_serde(table: &mut Table, cfg: &Config, w: usize) {
    let m = cfg.map_items;
    let check = move |out: &[u64]| super::check_squares(out, 0, m);
    let ours = || {
        match multiproc::Pool::new(w) {
            Ok(pool) => Contender {
                name: "multiproc".to_string(),
                ops: 1,
                run: Box::new(move || {
                    let (took, out) = with_parent_cpu(|| pool.map(square, 0..m));
                    check(&out.map_err(|e| e.to_string())?)?;
                    Ok(took)
                }),
            },
            Err(e) => Contender::unavailable("multiproc", format!("Pool::new: {e}")),
        }
        .per_iteration(m)
    };
    let name = format!("rayon 1.12 into_par_iter map collect, {w} threads");
    let rayon = match rayon::ThreadPoolBuilder::new().num_threads(w).build() {
        Ok(pool) => Contender {
            name: name.clone(),
            ops: 1,
            run: Box::new(move || {
                let t0 = Instant::now();
                let out: Vec<u64> = pool.install(|| (0..m).into_par_iter().map(square).collect());
                let took = t0.elapsed();
                check(&out)?;
                Ok(took)
            }),
        },
        Err(e) => Contender::unavailable(&name, format!("rayon pool: {e}")),
    }
    .per_iteration(m);
    table.side_by_side(
        &scaling_serde_metric(m, w),
        "item",
        cfg,
        cfg.iters_map.min(10),
        ours,
        vec![rayon],
    );
}

/// The compute-bound zero-copy map on `Pool(w)` against rayon with `w`
/// threads.
fn scaling_zero_copy(table: &mut Table, cfg: &Config, w: usize) {
    let zc = ZeroCopyData::new(cfg.compute_len);
    // As the compute row: chunks (8 per thread) that the compiler
    // vectorises, rayon's fastest form of this loop.
    let chunk = zc.n.div_ceil(w * 8).max(1);
    let name = format!("rayon 1.12 par_chunks, {w} threads");
    let rayon = match rayon::ThreadPoolBuilder::new().num_threads(w).build() {
        Ok(pool) => super::zc_heap(&zc, &name, super::compute_of, move |input, output| {
            pool.install(|| {
                output
                    .par_chunks_mut(chunk)
                    .zip(input.par_chunks(chunk))
                    .for_each(|(y, x)| {
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = super::compute_of(x);
                        }
                    });
            });
        }),
        Err(e) => Contender::unavailable(&name, format!("rayon pool: {e}")),
    };
    table.side_by_side(
        &scaling_zc_metric(zc.n, w),
        "element",
        cfg,
        cfg.iters_zc.min(10),
        || zc_pool(&zc, w, super::compute_of),
        vec![rayon],
    );
}

// ------------------------------------------------------------- goals

/// What the bare cache-line hand-off (the pipe row's floor peer) took one
/// way in this run, and multiproc's pipe figure in the same row.
fn pipe_floor(table: &Table) -> Option<(f64, f64)> {
    table
        .rows
        .iter()
        .find(|r| r.metric == PIPE_METRIC && r.peer == FLOOR)
        .and_then(|r| match (&r.ours, &r.theirs) {
            (Figure::Time(ours), Figure::Time(floor)) => Some((ours.median, floor.median)),
            _ => None,
        })
}

/// Issue 15's goal lines.
pub(crate) fn goal_lines(table: &Table, cfg: &Config) {
    ratio_goal(table, PIPE_METRIC, super::iceoryx::NAME, 1.0);
    ratio_goal(table, QUEUE_METRIC, super::iceoryx::NAME, 1.0);
    ratio_goal(table, QUEUE_METRIC, "Python Queue()", 40.0);
    ratio_goal(table, QUEUE_BATCH_METRIC, "Python Queue()", 500.0);
    // Against the floor measured in the same run: the pipe adds at most
    // 30 ns to a one-way hand-off, and an `apply` costs at most 2.5 of
    // the floor's round trips (two one-way hand-offs).
    match pipe_floor(table) {
        Some((ours, floor)) => {
            let added = ours - floor;
            println!(
                "goal: {PIPE_METRIC}: multiproc adds <= 30 ns to {FLOOR}; here {} \
                 (multiproc {} vs {}): {}",
                Secs(added),
                Secs(ours),
                Secs(floor),
                if added <= 30e-9 { "MET" } else { "NOT MET" }
            );
            let apply = table
                .rows
                .iter()
                .find(|r| r.metric == APPLY_METRIC)
                .and_then(|r| match &r.ours {
                    Figure::Time(s) => Some(s.median),
                    _ => None,
                });
            match apply {
                Some(apply) => {
                    let times = apply / (2.0 * floor);
                    println!(
                        "goal: {APPLY_METRIC}: multiproc <= 2.50x the round trip of {FLOOR} \
                         (twice its one-way figure in the pipe row); here {times:.2}x \
                         (multiproc {} vs {}): {}",
                        Secs(apply),
                        Secs(2.0 * floor),
                        if times <= 2.5 { "MET" } else { "NOT MET" }
                    );
                }
                None => println!("goal: {APPLY_METRIC} vs the floor's round trip: no figures"),
            }
        }
        None => println!("goal: {PIPE_METRIC} vs {FLOOR}: no figures"),
    }
    // The parent's CPU time per item of the serde maps of numbers.
    for r in table.rows.iter().filter(|r| {
        r.metric.contains("(serde)") && !r.metric.contains("struct") && r.ours_cpu.is_some()
    }) {
        if let Some(cpu) = r.ours_cpu {
            println!(
                "goal: {} (row vs {}): parent CPU <= {} per item; here {}: {}",
                r.metric,
                r.peer,
                Secs(PARENT_CPU_GOAL),
                Secs(cpu.median),
                if cpu.median <= PARENT_CPU_GOAL {
                    "MET"
                } else {
                    "NOT MET"
                }
            );
        }
    }
    let m = cfg.map_items;
    ratio_goal(table, &super::map_metric(m), &python_pool_name(), 60.0);
    ratio_goal(
        table,
        &struct_metric(m),
        &format!("Python Pool({}).map, (str, float) tuples", workers()),
        30.0,
    );
    let n = cfg.compute_len;
    let rayon = format!("rayon 1.12 par_iter, {} threads", workers());
    ratio_goal(table, &uneven_metric("growing", n), &rayon, 0.95);
    ratio_goal(table, &uneven_metric("skewed", n), &rayon, 0.95);
    // First within 2x warm: warm / first >= 0.5.
    let n = first_len(cfg);
    ratio_goal(table, &first_slice_metric(n), WARM, 0.5);
    ratio_goal(table, &first_into_metric(n), WARM, 0.5);
    ratio_goal(table, &warm_slice_metric(n), COPIES, 1.0 / 1.3);
}

// -------------------------------------------------------------- JSON

/// `s` as a JSON string.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:e}")
    } else {
        "null".to_string()
    }
}

fn json_stats(s: &Option<Stats>) -> String {
    match s {
        Some(s) => format!(
            "{{\"median_s\": {}, \"min_s\": {}, \"samples\": {}}}",
            json_num(s.median),
            json_num(s.min),
            s.samples
        ),
        None => "null".to_string(),
    }
}

fn json_figure(f: &Figure) -> String {
    match f {
        Figure::Time(s) => json_stats(&Some(*s)),
        Figure::NotAvailable(why) => format!("{{\"na\": {}}}", json_str(why)),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Where the JSON goes: `PEERS_JSON`, else `target/peers.json` of the
/// checkout the bench was built in (when that folder exists).
fn json_path() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("PEERS_JSON") {
        return (!p.is_empty()).then(|| p.into());
    }
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    target.is_dir().then(|| target.join("peers.json"))
}

impl Table {
    /// Writes the table as JSON (for `benches/charts.py`); says where.
    pub(crate) fn write_json(&self, quick: bool) {
        let Some(path) = json_path() else {
            return;
        };
        let machine = Machine::probe();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut s = String::new();
        let _ = writeln!(s, "{{");
        let _ = writeln!(s, "  \"version\": 1,");
        let _ = writeln!(s, "  \"quick\": {quick},");
        let _ = writeln!(s, "  \"unix_time\": {unix},");
        let _ = writeln!(s, "  \"loadavg_at_end\": {},", json_str(&loadavg()));
        let _ = writeln!(
            s,
            "  \"machine\": {{\"cpu\": {}, \"cores\": {}, \"os\": {}}},",
            json_str(&machine.cpu),
            json_str(&machine.cores),
            json_str(&machine.os)
        );
        let _ = writeln!(s, "  \"rows\": [");
        for (i, r) in self.rows.iter().enumerate() {
            let per = self
                .units
                .iter()
                .find(|(m, _)| m == &r.metric)
                .map_or("operation", |(_, p)| p.as_str());
            let ratio = match (&r.ours, &r.theirs) {
                (Figure::Time(a), Figure::Time(b)) => json_num(b.median / a.median),
                _ => "null".to_string(),
            };
            let _ = writeln!(
                s,
                "    {{\"metric\": {}, \"per\": {}, \"peer\": {}, \"ours\": {}, \"theirs\": {}, \
                 \"ours_ops\": {}, \"their_ops\": {}, \"ours_cpu\": {}, \"their_cpu\": {}, \
                 \"ratio\": {}}}{}",
                json_str(&r.metric),
                json_str(per),
                json_str(&r.peer),
                json_figure(&r.ours),
                json_figure(&r.theirs),
                r.ours_ops,
                r.their_ops,
                json_stats(&r.ours_cpu),
                json_stats(&r.their_cpu),
                ratio,
                if i + 1 < self.rows.len() { "," } else { "" }
            );
        }
        let _ = writeln!(s, "  ]");
        let _ = writeln!(s, "}}");
        match std::fs::write(&path, s) {
            Ok(()) => println!(
                "table as JSON: {} (charts: benches/charts.py)",
                path.display()
            ),
            Err(e) => eprintln!("writing {}: {e}", path.display()),
        }
    }
}
