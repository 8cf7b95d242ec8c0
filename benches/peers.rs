//! `multiproc` side by side with its peers (docs/BENCHMARKS.md).
//!
//! ```text
//! cargo bench --bench peers                  # full run
//! PEERS_QUICK=1 cargo bench --bench peers    # smoke test: a few iterations
//! PEERS_PYTHON=/path/to/python3 cargo bench --bench peers
//! PEERS_ONLY=apply,zero-copy cargo bench --bench peers   # some groups only
//! PEERS_WORKERS=16 cargo bench --bench peers  # workers/threads of the map rows (default 2)
//! PEERS_SCALING=1,2,4,8,16 cargo bench --bench peers  # worker counts of the scaling rows (default 1,2,4)
//! PEERS_JSON=/tmp/run.json cargo bench --bench peers  # the table as JSON (default target/peers.json)
//! python3 benches/charts.py target/peers.json docs/charts/  # SVG charts from that JSON
//! ```
//!
//! Each row of the table compares multiproc with one peer, measured side by
//! side in the same process run: rounds alternate the two (A B, B A, A B,
//! ...), so slow drifts of the machine (other load, CPU clocks, page cache)
//! hit both alike. A few untimed rounds come first. Each figure is the
//! median of its samples, with the minimum beside it. multiproc is measured
//! afresh for every row, so its figure differs a little from row to row:
//! that spread is the noise of the run.
//!
//! Python peers run `benches/peers.py` in `--serve` mode: one long-lived
//! interpreter that runs one timed iteration per line it reads, so its
//! iterations interleave with ours too. Without `python3` on PATH (or
//! `PEERS_PYTHON`), their rows say `n/a`.
//!
//! Figures are per *operation*: a contender whose iteration does many
//! operations (round trips, items) says how many with
//! [`Contender::per_iteration`], so peers may run different counts per
//! iteration (a slow peer fewer) and the ratio still compares like with
//! like.
//!
//! To add a metric: write a function like [`spawn_join`] that builds a
//! multiproc [`Contender`] and one per peer, and hand them to
//! [`Table::side_by_side`] ([`measure`] does the timing).

use std::cell::RefCell;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipc_channel::ipc::{
    self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcReceiver, IpcSender,
};
use rayon::prelude::*;

#[path = "peers/async_sync_rows.rs"]
mod async_sync_rows;
#[path = "peers/bench_infra.rs"]
mod bench_infra;
#[path = "peers/forkserver_rows.rs"]
mod forkserver_rows;
#[path = "peers/iceoryx.rs"]
mod iceoryx;

fn main() {
    multiproc::init();
    procspawn::init();

    let quick = std::env::var_os("PEERS_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
    let cfg = if quick {
        Config {
            warmup: 1,
            iters_1: 5,
            iters_4: 5,
            iters_pipe: 5,
            iters_queue: 5,
            iters_zc: 5,
            zc_len: 1_000_000,
            compute_len: 200_000,
            iters_map: 5,
            map_items: 100_000,
            map_items_procspawn: 200,
            iters_apply: 5,
            apply_calls: 1_000,
            apply_calls_peer: 50,
        }
    } else {
        Config {
            warmup: 3,
            iters_1: 50,
            iters_4: 30,
            iters_pipe: 30,
            iters_queue: 30,
            iters_zc: 20,
            zc_len: 100_000_000,
            compute_len: 1_000_000,
            iters_map: 20,
            map_items: 1_000_000,
            map_items_procspawn: 2_000,
            iters_apply: 20,
            apply_calls: 10_000,
            apply_calls_peer: 500,
        }
    };

    println!(
        "multiproc peers benchmark{}",
        if quick { " (PEERS_QUICK)" } else { "" }
    );
    println!("{}", Machine::probe());
    println!(
        "method: each row times multiproc and one peer alternately (A B, B A, A B, ...), \
         after {} untimed warm-up round(s)",
        cfg.warmup
    );
    println!();

    // PEERS_ONLY=apply,map runs only the groups whose name contains one of
    // the comma-separated words (spawn, pipe, queue, zero-copy, compute, map,
    // apply, apply big, manager; issue 15's: struct map, uneven, first call,
    // scaling).
    let only = std::env::var("PEERS_ONLY").unwrap_or_default();
    let want = |group: &str| {
        only.is_empty()
            || only
                .split(',')
                .any(|w| !w.is_empty() && group.contains(w.trim()))
    };
    let mut table = Table::default();
    if want("spawn") {
        spawn_join(&mut table, &cfg, 1, cfg.iters_1);
        spawn_join(&mut table, &cfg, 4, cfg.iters_4);
    }
    if want("pipe") {
        pipe_pingpong(&mut table, &cfg);
        pipe_values(&mut table, &cfg);
        pipe_big(&mut table, &cfg);
    }
    if want("queue") {
        queue_throughput(&mut table, &cfg);
        queue_batched(&mut table, &cfg);
    }
    let zc = ZeroCopyData::new(if want("zero-copy") { cfg.zc_len } else { 0 });
    if want("zero-copy") {
        zero_copy_map(&mut table, &cfg, &zc);
        zero_copy_map_into(&mut table, &cfg, &zc);
    }
    drop(zc);
    if want("compute") {
        let zc = ZeroCopyData::new(cfg.compute_len);
        compute_map(&mut table, &cfg, &zc);
    }
    if want("serde map") {
        serde_map(&mut table, &cfg);
    }
    if want("apply") {
        apply_round_trip(&mut table, &cfg);
    }
    if want("apply big") {
        apply_big(&mut table, &cfg);
    }
    if want("manager") {
        manager_dict(&mut table, &cfg);
        manager_increments(&mut table, &cfg);
    }
    if want("forkserver") {
        forkserver_rows::rows(&mut table, &cfg);
    }
    if want("async sync") {
        async_sync_rows::async_sync(&mut table, &cfg);
    }
    if want("futures") {
        futures_rows::rows(&mut table, &cfg, quick);
    }
    bench_infra::rows(&mut table, &cfg, &want);
    table.print();
    table.write_json(quick);
    println!();
    let gbps = |s: f64| format!("{:.1}", ZC_BYTES_PER_ELEMENT / s / 1e9);
    rate_lines(&table, PIPE_BIG_METRIC, "GB/s", |s| {
        format!("{:.2}", PIPE_BIG_BYTES as f64 / s / 1e9)
    });
    rate_lines(&table, &zc_metric(cfg.zc_len), "GB/s", gbps);
    rate_lines(&table, &zc_into_metric(cfg.zc_len), "GB/s", gbps);
    rate_lines(&table, APPLY_BIG_METRIC, "GB/s each way", |s| {
        format!("{:.2}", APPLY_BIG_BYTES as f64 / s / 1e9)
    });
    rate_lines(&table, &map_metric(cfg.map_items), "M items/s", |s| {
        format!("{:.2}", 1e-6 / s)
    });

    println!();
    goal_line(&table, "spawn+join 4 processes", 5e-3, "on 2 cores", |_| {
        String::new()
    });
    goal_line(&table, PIPE_METRIC, 100e-9, "spinning", |_| String::new());
    floor_line(&table);
    goal_line(&table, QUEUE_METRIC, 10e-9, "(>= 100 M items/s)", |s| {
        format!(" = {:.2} M items/s", 1e-6 / s)
    });
    ratio_goal(&table, &zc_metric(cfg.zc_len), &rayon_name(), 0.90);
    ratio_goal(
        &table,
        &map_metric(cfg.map_items),
        &python_pool_name(),
        100.0,
    );
    goal_line(&table, APPLY_METRIC, 0.5e-6, "per call", |_| String::new());
    if want("forkserver") {
        forkserver_rows::goals(&table);
    }
    if want("futures") {
        futures_rows::goals(&table);
    }
    bench_infra::goal_lines(&table, &cfg);
}

#[path = "peers/futures_rows.rs"]
mod futures_rows;

struct Config {
    warmup: usize,
    /// Timed rounds for "spawn+join 1 process".
    iters_1: usize,
    /// Timed rounds for "spawn+join 4 processes".
    iters_4: usize,
    /// Timed rounds for the pipe ping-pong rows.
    iters_pipe: usize,
    /// Timed rounds for the queue throughput rows.
    iters_queue: usize,
    /// Timed rounds for the zero-copy map rows.
    iters_zc: usize,
    /// Elements of the zero-copy map rows (1e8 in the full run).
    zc_len: usize,
    /// Elements of the compute-bound zero-copy row (1e6 in the full run).
    compute_len: usize,
    /// Timed rounds for the serde `map` rows.
    iters_map: usize,
    /// Items of one serde `map` (multiproc, Python, procspawn in chunks).
    map_items: u64,
    /// Items (one task each) per iteration of procspawn's per-item row.
    map_items_procspawn: u64,
    /// Timed rounds for the `apply` rows.
    iters_apply: usize,
    /// `apply` calls per iteration: multiproc, then the peers.
    apply_calls: u64,
    apply_calls_peer: u64,
}

// ------------------------------------------------------------------ rows

/// The task every contender runs: returns at once.
const MANAGER_DICT_METRIC: &str = "Manager dict set/get round trip";
const MANAGER_INCR_METRIC: &str = "Manager dict, 4 processes incrementing one key (incl. spawns)";
/// Round trips per iteration of the dict row: multiproc, Python.
const MANAGER_OPS: u64 = 20_000;
const MANAGER_OPS_PEER: u64 = 500;
/// Increments per process per iteration of the increments row.
const MANAGER_INCRS: u64 = 10_000;
const MANAGER_INCRS_PEER: u64 = 250;

fn manager_dict(table: &mut Table, cfg: &Config) {
    let ours = || {
        let dict = multiproc::Manager::new().and_then(|m| Ok((m.dict::<String, u64>()?, m)));
        match dict {
            Ok((d, m)) => {
                let key = "k".to_string();
                Contender::try_timed("multiproc", move || {
                    let _keep = &m;
                    for i in 0..MANAGER_OPS / 2 {
                        d.insert(&key, &i).map_err(|e| e.to_string())?;
                        d.get(&key).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            }
            Err(e) => Contender::unavailable("multiproc", e.to_string()),
        }
        .per_iteration(MANAGER_OPS)
    };
    let python = PythonPeer::contender(
        "Python Manager().dict()",
        &["manager_dict", "--n", &(MANAGER_OPS_PEER / 2).to_string()],
    )
    .per_iteration(MANAGER_OPS_PEER);
    table.side_by_side(
        MANAGER_DICT_METRIC,
        "operation",
        cfg,
        cfg.iters_apply,
        ours,
        vec![python],
    );
}

fn manager_increment((d, n): (multiproc::Dict<String, u64>, u64)) {
    let key = "c".to_string();
    for _ in 0..n {
        d.update_with(&key, |c| Some(c.unwrap_or(0) + 1)).unwrap();
    }
}

fn manager_increments(table: &mut Table, cfg: &Config) {
    let ours = || {
        let dict = multiproc::Manager::new().and_then(|m| Ok((m.dict::<String, u64>()?, m)));
        match dict {
            Ok((d, m)) => Contender::try_timed("multiproc", move || {
                let _keep = &m;
                let key = "c".to_string();
                d.insert(&key, &0).map_err(|e| e.to_string())?;
                let workers = (0..4)
                    .map(|_| {
                        multiproc::Process::spawn(manager_increment, (d.clone(), MANAGER_INCRS))
                    })
                    .collect::<multiproc::Result<Vec<_>>>()
                    .map_err(|e| e.to_string())?;
                for w in workers {
                    w.join().map_err(|e| e.to_string())?;
                }
                match d.get(&key).map_err(|e| e.to_string())? {
                    Some(n) if n == 4 * MANAGER_INCRS => Ok(()),
                    n => Err(format!("lost increments: {n:?}")),
                }
            }),
            Err(e) => Contender::unavailable("multiproc", e.to_string()),
        }
        .per_iteration(4 * MANAGER_INCRS)
    };
    let python = PythonPeer::contender(
        "Python Manager dict + Lock",
        &["manager_incr", "--n", &MANAGER_INCRS_PEER.to_string()],
    )
    .per_iteration(4 * MANAGER_INCRS_PEER);
    table.side_by_side(
        MANAGER_INCR_METRIC,
        "increment",
        cfg,
        cfg.iters_apply,
        ours,
        vec![python],
    );
}

fn one(_: ()) -> u64 {
    1
}

/// Spawns `n` processes running a trivial task, then joins them all.
fn spawn_join(table: &mut Table, cfg: &Config, n: usize, iters: usize) {
    let metric = if n == 1 {
        "spawn+join 1 process".to_string()
    } else {
        format!("spawn+join {n} processes")
    };
    let ours = || {
        Contender::timed("multiproc", move || {
            let procs: Vec<multiproc::Process<u64>> = (0..n)
                .map(|_| multiproc::Process::spawn(one, ()).expect("multiproc spawn"))
                .collect();
            for p in procs {
                assert_eq!(p.join().expect("multiproc join"), 1);
            }
        })
    };
    let mut peers = vec![Contender::timed("procspawn 1.0.2", move || {
        let handles: Vec<_> = (0..n).map(|_| procspawn::spawn((), |()| 1u64)).collect();
        for h in handles {
            assert_eq!(h.join().expect("procspawn join"), 1);
        }
    })];
    for method in ["fork", "spawn"] {
        let args = ["spawn_join", "--n", &n.to_string(), "--method", method];
        peers.push(PythonPeer::contender(&format!("Python {method}"), &args));
    }
    table.side_by_side(&metric, "iteration", cfg, iters, ours, peers);
}

const PIPE_METRIC: &str = "Pipe ping-pong 8 B, one-way latency";
const PIPE_VALUES_METRIC: &str = "Pipe ping-pong, a u64 by send/recv (serde), one-way latency";
const QUEUE_METRIC: &str = "Queue throughput, small items child → parent";
const QUEUE_BATCH_METRIC: &str = "Queue put_many/get_many, small items child → parent";
const PIPE_BIG_METRIC: &str = "Pipe, one 64 MiB message one way";
/// The big-pipe row's message: 64 times the pipe's 1 MiB ring.
const PIPE_BIG_BYTES: usize = 64 << 20;
/// The pipe rows' calibration peer: a bare cache-line ping-pong.
const FLOOR: &str = "bare shm spin (floor)";

/// Round trips per iteration of the pipe rows: multiproc, then the peers
/// (tens of µs a round trip, so fewer).
const PIPE_ROUND_TRIPS: u64 = 50_000;
const PIPE_ROUND_TRIPS_PEER: u64 = 500;
/// Items per iteration of the queue rows: multiproc, then the peers.
const QUEUE_ITEMS: u64 = 100_000;
const QUEUE_ITEMS_PEER: u64 = 2_000;

/// Child of the multiproc pipe row: sends back every message until an
/// empty one (or until the pipe fails).
fn echo(conn: multiproc::Connection) -> Result<(), String> {
    let mut buf = Vec::with_capacity(64);
    loop {
        let n = conn
            .recv_bytes_into(&mut buf)
            .map_err(|e| format!("echo recv_bytes_into: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        conn.send_bytes(&buf)
            .map_err(|e| format!("echo send_bytes: {e}"))?;
    }
}

/// The parent's side of the multiproc pipe row: one end of a duplex pipe
/// and the echo child holding the other.
struct PipeEcho {
    conn: multiproc::Connection,
    child: Option<multiproc::Process<Result<(), String>>>,
    buf: Vec<u8>,
}

impl PipeEcho {
    fn start() -> multiproc::Result<PipeEcho> {
        let (here, there) = multiproc::pipe(true)?;
        let child = multiproc::Process::spawn(echo, there)?;
        Ok(PipeEcho {
            conn: here,
            child: Some(child),
            buf: Vec::with_capacity(64),
        })
    }

    /// `n` round trips of an 8-byte message (a counter, checked on return).
    fn round_trips(&mut self, n: u64) -> Result<(), String> {
        for i in 0..n {
            let msg = i.to_le_bytes();
            self.conn
                .send_bytes(&msg)
                .map_err(|e| format!("send_bytes: {e}"))?;
            self.conn
                .recv_bytes_into(&mut self.buf)
                .map_err(|e| format!("recv_bytes_into: {e}"))?;
            if self.buf != msg {
                return Err(format!(
                    "round trip {i}: sent {msg:?}, got back {:?}",
                    self.buf
                ));
            }
        }
        Ok(())
    }
}

impl Drop for PipeEcho {
    fn drop(&mut self) {
        let stopped = self.conn.send_bytes(&[]);
        if let Some(child) = self.child.take() {
            match (stopped, child.join()) {
                (Ok(()), Ok(Ok(()))) => {}
                (stopped, joined) => {
                    eprintln!("pipe echo child: stop {stopped:?}, join {joined:?}");
                }
            }
        }
    }
}

/// Child of the pipe row of values: sends back every `u64` until
/// `u64::MAX` (or until the pipe fails).
fn echo_values(conn: multiproc::Connection) -> Result<(), String> {
    loop {
        let v: u64 = conn.recv().map_err(|e| format!("echo recv: {e}"))?;
        if v == u64::MAX {
            return Ok(());
        }
        conn.send(&v).map_err(|e| format!("echo send: {e}"))?;
    }
}

/// The parent's side of the pipe row of values: `send(&u64)` and
/// `recv::<u64>()`, what Python's `conn.send(obj)` / `conn.recv()` are.
struct PipeValueEcho {
    conn: multiproc::Connection,
    child: Option<multiproc::Process<Result<(), String>>>,
}

impl PipeValueEcho {
    fn start() -> multiproc::Result<PipeValueEcho> {
        let (here, there) = multiproc::pipe(true)?;
        let child = multiproc::Process::spawn(echo_values, there)?;
        Ok(PipeValueEcho {
            conn: here,
            child: Some(child),
        })
    }

    /// `n` round trips of a counter, checked on return.
    fn round_trips(&mut self, n: u64) -> Result<(), String> {
        for i in 0..n {
            self.conn.send(&i).map_err(|e| format!("send: {e}"))?;
            let back: u64 = self.conn.recv().map_err(|e| format!("recv: {e}"))?;
            if back != i {
                return Err(format!("round trip {i}: got back {back}"));
            }
        }
        Ok(())
    }
}

impl Drop for PipeValueEcho {
    fn drop(&mut self) {
        let stopped = self.conn.send(&u64::MAX);
        if let Some(child) = self.child.take() {
            match (stopped, child.join()) {
                (Ok(()), Ok(Ok(()))) => {}
                (stopped, joined) => {
                    eprintln!("pipe value echo child: stop {stopped:?}, join {joined:?}");
                }
            }
        }
    }
}

/// Child of the ipc-channel pipe row: connects to the parent's one-shot
/// server, hands it a bytes channel pair, then echoes until an empty
/// message or a closed channel.
fn ipc_echo(server: String) -> Result<(), String> {
    let (to_child, from_parent) = ipc::bytes_channel().map_err(|e| e.to_string())?;
    let (to_parent, from_child) = ipc::bytes_channel().map_err(|e| e.to_string())?;
    let boot = IpcSender::<(IpcBytesSender, IpcBytesReceiver)>::connect(server)
        .map_err(|e| format!("connect: {e}"))?;
    boot.send((to_child, from_child))
        .map_err(|e| format!("send channels: {e:?}"))?;
    while let Ok(msg) = from_parent.recv() {
        if msg.is_empty() {
            break;
        }
        to_parent.send(&msg).map_err(|e| format!("send: {e}"))?;
    }
    Ok(())
}

/// The parent's side of the ipc-channel pipe row.
struct IpcEcho {
    tx: IpcBytesSender,
    rx: IpcBytesReceiver,
    child: Option<multiproc::Process<Result<(), String>>>,
}

impl IpcEcho {
    fn start() -> Result<IpcEcho, String> {
        let (server, name) = IpcOneShotServer::<(IpcBytesSender, IpcBytesReceiver)>::new()
            .map_err(|e| e.to_string())?;
        let child = multiproc::Process::spawn(ipc_echo, name).map_err(|e| e.to_string())?;
        let (_boot, (tx, rx)) = server.accept().map_err(|e| format!("accept: {e:?}"))?;
        Ok(IpcEcho {
            tx,
            rx,
            child: Some(child),
        })
    }

    fn round_trips(&mut self, n: u64) -> Result<(), String> {
        for i in 0..n {
            let msg = i.to_le_bytes();
            self.tx.send(&msg).map_err(|e| format!("send: {e}"))?;
            let back = self.rx.recv().map_err(|e| format!("recv: {e:?}"))?;
            if back != msg {
                return Err(format!("round trip {i}: sent {msg:?}, got back {back:?}"));
            }
        }
        Ok(())
    }
}

impl Drop for IpcEcho {
    fn drop(&mut self) {
        let _ = self.tx.send(&[]);
        if let Some(child) = self.child.take() {
            if let Ok(Err(e)) | Err(e) = child.join().map_err(|e| e.to_string()) {
                eprintln!("ipc-channel echo child: {e}");
            }
        }
    }
}

/// Child of the floor contender: two cache lines of a shared array, line 0
/// (elements 0, 1: sequence, payload) parent → child and line 1 (elements
/// 8, 9) child → parent. Echoes each new sequence number with its payload;
/// `u64::MAX` ends it. It spins about 50 µs after each message, then
/// sleeps 1 ms between checks, so it costs nothing while other rows run.
fn spin_echo(lines: multiproc::SharedArray<u64>) {
    let a = lines.as_atomic();
    let (in_seq, in_val, out_seq, out_val) = (&a[0], &a[1], &a[8], &a[9]);
    let mut last = in_seq.load(Ordering::Acquire);
    loop {
        let mut idle = Instant::now();
        let seq = loop {
            let s = in_seq.load(Ordering::Acquire);
            if s != last {
                break s;
            }
            std::hint::spin_loop();
            if idle.elapsed() > Duration::from_micros(50) {
                std::thread::sleep(Duration::from_millis(1));
                idle = Instant::now();
            }
        };
        if seq == u64::MAX {
            return;
        }
        out_val.store(in_val.load(Ordering::Relaxed), Ordering::Relaxed);
        out_seq.store(seq, Ordering::Release);
        last = seq;
    }
}

/// The parent's side of the floor contender: no library at all, one
/// cache line each way, so its figure is what the machine's core-to-core
/// hand-off costs at the time (on a VM that moves with where the host
/// runs the two vCPUs).
struct SpinEcho {
    lines: multiproc::SharedArray<u64>,
    seq: u64,
    child: Option<multiproc::Process<()>>,
}

impl SpinEcho {
    fn start() -> multiproc::Result<SpinEcho> {
        let lines = multiproc::SharedArray::<u64>::new(16)?;
        let child = multiproc::Process::spawn(spin_echo, lines.clone())?;
        Ok(SpinEcho {
            lines,
            seq: 0,
            child: Some(child),
        })
    }

    fn round_trip(&mut self) -> Result<(), String> {
        let a = self.lines.as_atomic();
        self.seq += 1;
        let seq = self.seq;
        a[1].store(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15), Ordering::Relaxed);
        a[0].store(seq, Ordering::Release);
        let t0 = Instant::now();
        let mut spins = 0u32;
        while a[8].load(Ordering::Acquire) != seq {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins == 0 && t0.elapsed() > Duration::from_secs(10) {
                return Err("no echo within 10 s".into());
            }
        }
        match a[9].load(Ordering::Relaxed) {
            v if v == seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) => Ok(()),
            v => Err(format!("round trip {seq}: got payload {v:#x}")),
        }
    }

    /// One untimed round trip (wakes the child), then `n` timed ones.
    fn sample(&mut self, n: u64) -> Result<Duration, String> {
        self.round_trip()?;
        let t0 = Instant::now();
        for _ in 0..n {
            self.round_trip()?;
        }
        Ok(t0.elapsed())
    }
}

impl Drop for SpinEcho {
    fn drop(&mut self) {
        self.lines.as_atomic()[0].store(u64::MAX, Ordering::Release);
        if let Some(child) = self.child.take() {
            if let Err(e) = child.join() {
                eprintln!("spin echo child: {e}");
            }
        }
    }
}

/// N round trips of 8 bytes to a child that echoes them; the figure is the
/// one-way latency, iteration / (2 N).
fn pipe_pingpong(table: &mut Table, cfg: &Config) {
    let n = PIPE_ROUND_TRIPS;
    let ours = move || {
        match PipeEcho::start() {
            Ok(mut echo) => Contender::try_timed("multiproc", move || echo.round_trips(n)),
            Err(e) => Contender::unavailable("multiproc", format!("starting the echo child: {e}")),
        }
        .per_iteration(2 * n)
    };
    let peer_n = PIPE_ROUND_TRIPS_PEER;
    let ipc = match IpcEcho::start() {
        Ok(mut echo) => Contender::try_timed("ipc-channel 0.23", move || echo.round_trips(peer_n)),
        Err(e) => Contender::unavailable("ipc-channel 0.23", e),
    }
    .per_iteration(2 * peer_n);
    let python = PythonPeer::contender(
        "Python Pipe()",
        &["pipe_pingpong", "--n", &peer_n.to_string()],
    )
    .per_iteration(2 * peer_n);
    let iox = iceoryx::pipe_peer(n);
    let floor = match SpinEcho::start() {
        Ok(mut echo) => Contender {
            name: FLOOR.to_string(),
            ops: 1,
            run: Box::new(move || echo.sample(n)),
        },
        Err(e) => Contender::unavailable(FLOOR, format!("starting the spin child: {e}")),
    }
    .per_iteration(2 * n);
    table.side_by_side(
        PIPE_METRIC,
        "one-way message",
        cfg,
        cfg.iters_pipe,
        ours,
        vec![ipc, iox, python, floor],
    );
}

/// N round trips of a `u64` by `send`/`recv` (serde), against Python's
/// `send(obj)`/`recv()` of an int (pickled) and this pipe's own
/// `send_bytes` of 8 bytes: what the value path adds to the bytes path.
fn pipe_values(table: &mut Table, cfg: &Config) {
    let n = PIPE_ROUND_TRIPS;
    let ours = move || {
        match PipeValueEcho::start() {
            Ok(mut echo) => Contender::try_timed("multiproc", move || echo.round_trips(n)),
            Err(e) => Contender::unavailable("multiproc", format!("starting the echo child: {e}")),
        }
        .per_iteration(2 * n)
    };
    let bytes = match PipeEcho::start() {
        Ok(mut echo) => {
            Contender::try_timed("multiproc send_bytes (8 B)", move || echo.round_trips(n))
        }
        Err(e) => Contender::unavailable(
            "multiproc send_bytes (8 B)",
            format!("starting the echo child: {e}"),
        ),
    }
    .per_iteration(2 * n);
    let peer_n = PIPE_ROUND_TRIPS_PEER;
    let python = PythonPeer::contender(
        "Python Pipe() send/recv of an int",
        &["pipe_values", "--n", &peer_n.to_string()],
    )
    .per_iteration(2 * peer_n);
    table.side_by_side(
        PIPE_VALUES_METRIC,
        "one-way message",
        cfg,
        cfg.iters_pipe,
        ours,
        vec![bytes, python],
    );
}

/// Child of the big-pipe row: takes each message whole and answers with
/// its length; an empty message ends it.
fn sink(conn: multiproc::Connection) -> Result<(), String> {
    let mut buf = Vec::new();
    loop {
        let n = conn
            .recv_bytes_into(&mut buf)
            .map_err(|e| format!("sink recv_bytes_into: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        conn.send_bytes(&(n as u64).to_le_bytes())
            .map_err(|e| format!("sink send_bytes: {e}"))?;
    }
}

/// The parent's side of the big-pipe row.
struct PipeSink {
    conn: multiproc::Connection,
    child: Option<multiproc::Process<Result<(), String>>>,
    message: Vec<u8>,
}

impl PipeSink {
    fn start() -> multiproc::Result<PipeSink> {
        let (here, there) = multiproc::pipe(true)?;
        let child = multiproc::Process::spawn(sink, there)?;
        Ok(PipeSink {
            conn: here,
            child: Some(child),
            message: (0..PIPE_BIG_BYTES).map(|i| (i / 4096) as u8).collect(),
        })
    }

    /// One message sent, its length acknowledged.
    fn once(&mut self) -> Result<(), String> {
        self.conn
            .send_bytes(&self.message)
            .map_err(|e| format!("send_bytes: {e}"))?;
        let ack = self
            .conn
            .recv_bytes()
            .map_err(|e| format!("recv_bytes: {e}"))?;
        if ack != (PIPE_BIG_BYTES as u64).to_le_bytes() {
            return Err(format!("the child acknowledged {ack:?}"));
        }
        Ok(())
    }
}

impl Drop for PipeSink {
    fn drop(&mut self) {
        let stopped = self.conn.send_bytes(&[]);
        if let Some(child) = self.child.take() {
            if let (stopped, Err(e) | Ok(Err(e))) =
                (stopped, child.join().map_err(|e| e.to_string()))
            {
                eprintln!("pipe sink child: stop {stopped:?}, {e}");
            }
        }
    }
}

/// 64 MiB through a pipe whose ring is 1 MiB: the message streams in
/// pieces while the child reads, against Python's `Pipe()` carrying the
/// same bytes object.
fn pipe_big(table: &mut Table, cfg: &Config) {
    let ours = || match PipeSink::start() {
        Ok(mut sink) => Contender::try_timed("multiproc", move || sink.once()),
        Err(e) => Contender::unavailable("multiproc", format!("starting the sink child: {e}")),
    };
    let python = PythonPeer::contender(
        "Python Pipe()",
        &["pipe_big", "--n", &PIPE_BIG_BYTES.to_string()],
    );
    table.side_by_side(
        PIPE_BIG_METRIC,
        "64 MiB message",
        cfg,
        cfg.iters_pipe.min(10),
        ours,
        vec![python],
    );
}

/// Child of the multiproc queue rows: for each count read from `cmd`, puts
/// that many `u64` (0, 1, ...) on `data`, one `put` each or (`batched`)
/// with one `put_many`; a count of 0 ends it.
fn produce(
    (data, cmd, batched): (multiproc::Queue<u64>, multiproc::Queue<u64>, bool),
) -> Result<(), String> {
    loop {
        let n = cmd.get().map_err(|e| format!("produce get: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        if batched {
            data.put_many(0..n)
                .map_err(|e| format!("produce put_many: {e}"))?;
            continue;
        }
        for i in 0..n {
            data.put(&i).map_err(|e| format!("produce put {i}: {e}"))?;
        }
    }
}

/// The parent's side of the multiproc queue rows.
struct QueueProducer {
    data: multiproc::Queue<u64>,
    cmd: multiproc::Queue<u64>,
    batched: bool,
    child: Option<multiproc::Process<Result<(), String>>>,
}

/// Most items one `get_many` of the batched row takes.
const QUEUE_BATCH: usize = 4096;

impl QueueProducer {
    fn start(batched: bool) -> multiproc::Result<QueueProducer> {
        let data = multiproc::Queue::new()?;
        let cmd = multiproc::Queue::new()?;
        let child = multiproc::Process::spawn(produce, (data.clone(), cmd.clone(), batched))?;
        Ok(QueueProducer {
            data,
            cmd,
            batched,
            child: Some(child),
        })
    }

    /// Asks for `m` items and gets them all (one `get` each, or in
    /// `get_many` batches), checking their order.
    fn items(&mut self, m: u64) -> Result<(), String> {
        self.cmd.put(&m).map_err(|e| format!("put count: {e}"))?;
        let mut i = 0;
        let mut batch = Vec::new();
        while i < m {
            if self.batched {
                batch = self
                    .data
                    .get_many(QUEUE_BATCH)
                    .map_err(|e| format!("get_many at item {i}: {e}"))?;
            } else {
                batch.clear();
                batch.push(self.data.get().map_err(|e| format!("get item {i}: {e}"))?);
            }
            for &v in &batch {
                if v != i {
                    return Err(format!("item {i}: got {v}"));
                }
                i += 1;
            }
        }
        Ok(())
    }
}

impl Drop for QueueProducer {
    fn drop(&mut self) {
        let stopped = self.cmd.put(&0);
        if let Some(child) = self.child.take() {
            match (stopped, child.join()) {
                (Ok(()), Ok(Ok(()))) => {}
                (stopped, joined) => {
                    eprintln!("queue producer child: stop {stopped:?}, join {joined:?}");
                }
            }
        }
    }
}

/// Child of the ipc-channel queue row: as [`produce`], over ipc-channel
/// channels handed to the parent through its one-shot server.
fn ipc_produce(server: String) -> Result<(), String> {
    let (cmd_tx, cmd_rx) = ipc::channel::<u64>().map_err(|e| e.to_string())?;
    let (data_tx, data_rx) = ipc::channel::<u64>().map_err(|e| e.to_string())?;
    let boot = IpcSender::<(IpcSender<u64>, IpcReceiver<u64>)>::connect(server)
        .map_err(|e| format!("connect: {e}"))?;
    boot.send((cmd_tx, data_rx))
        .map_err(|e| format!("send channels: {e:?}"))?;
    while let Ok(n) = cmd_rx.recv() {
        if n == 0 {
            break;
        }
        for i in 0..n {
            data_tx.send(i).map_err(|e| format!("send {i}: {e:?}"))?;
        }
    }
    Ok(())
}

/// The parent's side of the ipc-channel queue row.
struct IpcProducer {
    cmd: IpcSender<u64>,
    data: IpcReceiver<u64>,
    child: Option<multiproc::Process<Result<(), String>>>,
}

impl IpcProducer {
    fn start() -> Result<IpcProducer, String> {
        let (server, name) = IpcOneShotServer::<(IpcSender<u64>, IpcReceiver<u64>)>::new()
            .map_err(|e| e.to_string())?;
        let child = multiproc::Process::spawn(ipc_produce, name).map_err(|e| e.to_string())?;
        let (_boot, (cmd, data)) = server.accept().map_err(|e| format!("accept: {e:?}"))?;
        Ok(IpcProducer {
            cmd,
            data,
            child: Some(child),
        })
    }

    fn items(&mut self, m: u64) -> Result<(), String> {
        self.cmd.send(m).map_err(|e| format!("send count: {e:?}"))?;
        for i in 0..m {
            let v = self
                .data
                .recv()
                .map_err(|e| format!("recv item {i}: {e:?}"))?;
            if v != i {
                return Err(format!("item {i}: got {v}"));
            }
        }
        Ok(())
    }
}

impl Drop for IpcProducer {
    fn drop(&mut self) {
        let _ = self.cmd.send(0);
        if let Some(child) = self.child.take() {
            if let Ok(Err(e)) | Err(e) = child.join().map_err(|e| e.to_string()) {
                eprintln!("ipc-channel producer child: {e}");
            }
        }
    }
}

/// A multiproc queue contender: a producer child started once, `m` items
/// an iteration.
fn queue_contender(name: &str, batched: bool, m: u64) -> Contender {
    match QueueProducer::start(batched) {
        Ok(mut q) => Contender::try_timed(name, move || q.items(m)),
        Err(e) => Contender::unavailable(name, format!("starting the producer: {e}")),
    }
    .per_iteration(m)
}

/// Python's `Queue()` peer of both queue rows (`peers.py queue_throughput`).
fn python_queue() -> Contender {
    PythonPeer::contender(
        "Python Queue()",
        &["queue_throughput", "--n", &QUEUE_ITEMS_PEER.to_string()],
    )
    .per_iteration(QUEUE_ITEMS_PEER)
}

/// The batched queue row: `put_many` in the child, `get_many` in the
/// parent, against one `put`/`get` per item (the row above, as a peer
/// here) and Python's `Queue()`, which has no batch calls.
fn queue_batched(table: &mut Table, cfg: &Config) {
    let m = QUEUE_ITEMS;
    let per_item = queue_contender("multiproc put/get per item", false, m);
    let python = python_queue();
    table.side_by_side(
        QUEUE_BATCH_METRIC,
        "item",
        cfg,
        cfg.iters_queue,
        move || queue_contender("multiproc", true, m),
        vec![per_item, python],
    );
}

/// A child started once puts M `u64` on a queue, the parent gets them all;
/// the figure is the time per item.
fn queue_throughput(table: &mut Table, cfg: &Config) {
    let m = QUEUE_ITEMS;
    let ours = move || queue_contender("multiproc", false, m);
    let peer_m = QUEUE_ITEMS_PEER;
    let ipc = match IpcProducer::start() {
        Ok(mut q) => Contender::try_timed("ipc-channel 0.23", move || q.items(peer_m)),
        Err(e) => Contender::unavailable("ipc-channel 0.23", e),
    }
    .per_iteration(peer_m);
    let python = python_queue();
    let iox = iceoryx::queue_peer(m);
    table.side_by_side(
        QUEUE_METRIC,
        "item",
        cfg,
        cfg.iters_queue,
        ours,
        vec![ipc, iox, python],
    );
}

// ----------------------------------------------------- Pool (issue 4)

/// A contender whose iteration times itself and returns what it made;
/// `check` then looks at it (and drops it) outside the timed span, as
/// `peers.py` checks after its `perf_counter`.
fn self_timed<T: 'static>(
    name: &str,
    mut run: impl FnMut() -> Result<(Duration, T), String> + 'static,
    check: impl Fn(T) -> Result<(), String> + 'static,
) -> Contender {
    Contender {
        name: name.to_string(),
        ops: 1,
        run: Box::new(move || {
            let (took, out) = run()?;
            check(out)?;
            Ok(took)
        }),
    }
}

/// Bytes one element of a zero-copy map moves: 8 read, 8 written.
const ZC_BYTES_PER_ELEMENT: f64 = 16.0;
/// Workers (threads for rayon and memcpy) of the zero-copy and serde rows.
/// `PEERS_WORKERS` (default 2: the CI machine's cores).
fn pool_workers() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| match std::env::var("PEERS_WORKERS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("PEERS_WORKERS={v:?} is not a positive count; using 2");
                2
            }
        },
        Err(_) => 2,
    })
}
/// `Pool(pool_workers())`, for experiments: `PEERS_PIN=1` pins the
/// workers, `PEERS_ZC_CHUNK=n` sets the chunk of the zero-copy rows.
fn bench_pool(zero_copy: bool) -> multiproc::Result<multiproc::Pool> {
    let mut b = multiproc::Pool::builder().processes(pool_workers());
    if std::env::var("PEERS_PIN").is_ok_and(|v| v == "1") {
        b = b.pin_cores(true);
    }
    if let Some(c) = std::env::var("PEERS_ZC_CHUNK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|_| zero_copy)
    {
        b = b.chunksize(c);
    }
    b.build()
}

/// Workers of the `apply` rows: one worker, kept hot by the calls.
const APPLY_WORKERS: usize = 1;

fn rayon_name() -> String {
    format!("rayon 1.12 par_iter, {} threads", pool_workers())
}

fn python_pool_name() -> String {
    format!("Python Pool({}).map", pool_workers())
}
const APPLY_METRIC: &str = "Pool apply round trip, u64 arg/result, 1 worker";

/// `n` as `1e8` when it is a power of ten, else in full.
fn count(n: u64) -> String {
    let mut p = 0;
    let mut v = n;
    while v >= 10 && v.is_multiple_of(10) {
        v /= 10;
        p += 1;
    }
    if v == 1 && p >= 3 {
        format!("1e{p}")
    } else {
        n.to_string()
    }
}

fn zc_metric(n: usize) -> String {
    format!(
        "ShmVec map_elements {} f64 x*x+1, {} workers",
        count(n as u64),
        pool_workers()
    )
}

fn zc_into_metric(n: usize) -> String {
    format!(
        "ShmVec map_into {} f64 x*x+1 (chunk kernel)",
        count(n as u64)
    )
}

fn map_metric(n: u64) -> String {
    format!(
        "Pool.map {} u64 squares (serde), {} workers",
        count(n),
        pool_workers()
    )
}

/// The chunk kernel of the `map_into` rows (the same `x*x+1`).
fn square_plus_one(x: &[f64], y: &mut [f64]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * x + 1.0;
    }
}

/// Input and output of the zero-copy rows, made (and their pages touched)
/// once and reused by every iteration and every row: the `ShmVec` pair
/// for multiproc, a `Vec` pair for the in-process peers.
struct ZeroCopyData {
    n: usize,
    shm: Result<Rc<RefCell<ShmPair>>, String>,
    heap: Rc<RefCell<(Vec<f64>, Vec<f64>)>>,
}

/// Input and output of the multiproc zero-copy rows.
type ShmPair = (multiproc::ShmVec<f64>, multiproc::ShmVec<f64>);

impl ZeroCopyData {
    fn new(n: usize) -> ZeroCopyData {
        let input: Vec<f64> = (0..n).map(|i| (i % 4096) as f64 * 0.25).collect();
        let shm = multiproc::ShmVec::from_slice(&input)
            .and_then(|x| Ok((x, multiproc::ShmVec::<f64>::zeroed(n)?)))
            .map(|pair| Rc::new(RefCell::new(pair)))
            .map_err(|e| format!("ShmVec of {n} f64: {e}"));
        // Written once, so no timed iteration pays its page faults.
        let output = vec![1.0f64; n];
        ZeroCopyData {
            n,
            shm,
            heap: Rc::new(RefCell::new((input, output))),
        }
    }
}

/// Indices checked after each iteration (and spoiled before it, so a
/// stale output cannot pass).
fn probes(n: usize) -> [usize; 3] {
    [0, n / 2 + 1, n.saturating_sub(1)]
}

fn spoil(output: &mut [f64]) {
    for i in probes(output.len()) {
        output[i] = f64::NAN;
    }
}

fn check_map(input: &[f64], output: &[f64], f: impl Fn(f64) -> f64) -> Result<(), String> {
    for i in probes(input.len()) {
        let (want, got) = (f(input[i]), output[i]);
        if want != got {
            return Err(format!("element {i}: want {want}, got {got}"));
        }
    }
    Ok(())
}

fn square_plus_one_of(x: f64) -> f64 {
    x * x + 1.0
}

/// Multiply-adds per element of the compute-bound row.
const COMPUTE_STEPS: usize = 64;

/// The compute-bound row's element function: a chain of
/// [`COMPUTE_STEPS`] dependent multiply-adds (no fast-math, so the
/// compiler keeps every one), about 0.1–0.2 µs an element.
fn compute_of(x: f64) -> f64 {
    let mut y = x;
    for _ in 0..COMPUTE_STEPS {
        y = y * 0.999_999 + 1e-3;
    }
    y
}

fn compute_metric(n: usize) -> String {
    format!(
        "ShmVec map_elements {} f64, {COMPUTE_STEPS} mul-adds each, {} workers",
        count(n as u64),
        pool_workers()
    )
}

/// The compute-bound row: [`compute_of`] over `zc.n` elements, against
/// rayon with as many threads and one thread. Memory is not the limit
/// here, so this row shows how the workers scale with cores.
fn compute_map(table: &mut Table, cfg: &Config, zc: &ZeroCopyData) {
    // Chunks as multiproc's (8 per worker), each a plain loop the compiler
    // vectorises: per-element `par_iter` closures would not be, and would
    // make rayon look slower than it is.
    let chunk = zc.n.div_ceil(pool_workers() * 8).max(1);
    let name = &format!("rayon 1.12 par_chunks, {} threads", pool_workers());
    let rayon = match rayon_pool() {
        Ok(pool) => zc_heap(zc, name, compute_of, move |input, output| {
            pool.install(|| {
                output
                    .par_chunks_mut(chunk)
                    .zip(input.par_chunks(chunk))
                    .for_each(|(y, x)| {
                        for (y, &x) in y.iter_mut().zip(x) {
                            *y = compute_of(x);
                        }
                    });
            });
        }),
        Err(e) => Contender::unavailable(name, e),
    };
    let sequential = zc_heap(
        zc,
        "sequential loop, 1 thread",
        compute_of,
        |input, output| {
            for (y, &x) in output.iter_mut().zip(input) {
                *y = compute_of(x);
            }
        },
    );
    let ours = || zc_ours(zc, |p, x, y| p.map_elements(compute_of, x, y), compute_of);
    table.side_by_side(
        &compute_metric(zc.n),
        "element",
        cfg,
        cfg.iters_zc,
        ours,
        vec![rayon, sequential],
    );
}

/// How a multiproc zero-copy row maps the `ShmVec` pair.
type ZcRun = fn(
    &multiproc::Pool,
    &multiproc::ShmVec<f64>,
    &mut multiproc::ShmVec<f64>,
) -> multiproc::Result<()>;

/// A multiproc contender over the shared `ShmVec` pair: a fresh pool (its
/// workers map the pair in the warm-up rounds) running `run`, checked
/// against `f` afterwards.
fn zc_ours(zc: &ZeroCopyData, run: ZcRun, f: fn(f64) -> f64) -> Contender {
    let shm = match &zc.shm {
        Ok(shm) => Rc::clone(shm),
        Err(e) => return Contender::unavailable("multiproc", e.clone()),
    };
    match bench_pool(true) {
        Ok(pool) => Contender::try_timed("multiproc", move || {
            let mut pair = shm.borrow_mut();
            let (input, output) = &mut *pair;
            spoil(output);
            run(&pool, input, output).map_err(|e| e.to_string())?;
            check_map(input, output, f)
        }),
        Err(e) => Contender::unavailable("multiproc", format!("Pool::new: {e}")),
    }
    .per_iteration(zc.n as u64)
}

/// A contender over the shared `Vec` pair: `body(input, output)`, checked
/// against `f` afterwards.
fn zc_heap(
    zc: &ZeroCopyData,
    name: &str,
    f: fn(f64) -> f64,
    body: impl Fn(&[f64], &mut [f64]) + 'static,
) -> Contender {
    let heap = Rc::clone(&zc.heap);
    Contender::try_timed(name, move || {
        let mut pair = heap.borrow_mut();
        let (input, output) = &mut *pair;
        spoil(output);
        body(input, output);
        check_map(input, output, f)
    })
    .per_iteration(zc.n as u64)
}

fn rayon_pool() -> Result<Rc<rayon::ThreadPool>, String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(pool_workers())
        .build()
        .map(Rc::new)
        .map_err(|e| format!("rayon pool: {e}"))
}

/// Zero-copy element-wise map of `x*x+1` over `zc.n` f64 into a reused
/// output, against rayon with as many threads, one thread, and a
/// two-thread memcpy of the same bytes (the memory's bandwidth).
fn zero_copy_map(table: &mut Table, cfg: &Config, zc: &ZeroCopyData) {
    let rayon = match rayon_pool() {
        Ok(pool) => zc_heap(
            zc,
            &rayon_name(),
            square_plus_one_of,
            move |input, output| {
                pool.install(|| {
                    output
                        .par_iter_mut()
                        .zip(input.par_iter())
                        .for_each(|(y, &x)| *y = x * x + 1.0);
                });
            },
        ),
        Err(e) => Contender::unavailable(&rayon_name(), e),
    };
    let sequential = zc_heap(
        zc,
        "sequential loop, 1 thread",
        square_plus_one_of,
        |input, output| {
            for (y, &x) in output.iter_mut().zip(input) {
                *y = x * x + 1.0;
            }
        },
    );
    let threads = pool_workers();
    let memcpy = zc_heap(
        zc,
        &format!("memcpy, {threads} threads (bandwidth)"),
        |x| x,
        move |input, output| {
            let part = input.len().div_ceil(threads).max(1);
            std::thread::scope(|s| {
                for (out, inp) in output.chunks_mut(part).zip(input.chunks(part)) {
                    s.spawn(move || out.copy_from_slice(inp));
                }
            });
        },
    );
    table.side_by_side(
        &zc_metric(zc.n),
        "element",
        cfg,
        cfg.iters_zc,
        || {
            zc_ours(
                zc,
                |p, x, y| p.map_elements(square_plus_one_of, x, y),
                square_plus_one_of,
            )
        },
        vec![rayon, sequential, memcpy],
    );
}

/// As [`zero_copy_map`], with `map_into` and a chunk kernel, against rayon
/// running the same kernel over chunks (8 per thread; rayon steals, so
/// equal chunks balance).
fn zero_copy_map_into(table: &mut Table, cfg: &Config, zc: &ZeroCopyData) {
    let chunk = zc.n.div_ceil(pool_workers() * 8).max(16 * 1024);
    let name = &format!("rayon 1.12 par_chunks, {} threads", pool_workers());
    let rayon = match rayon_pool() {
        Ok(pool) => zc_heap(zc, name, square_plus_one_of, move |input, output| {
            pool.install(|| {
                output
                    .par_chunks_mut(chunk)
                    .zip(input.par_chunks(chunk))
                    .for_each(|(y, x)| square_plus_one(x, y));
            });
        }),
        Err(e) => Contender::unavailable(name, e),
    };
    table.side_by_side(
        &zc_into_metric(zc.n),
        "element",
        cfg,
        cfg.iters_zc,
        || {
            zc_ours(
                zc,
                |p, x, y| p.map_into(square_plus_one, x, y),
                square_plus_one_of,
            )
        },
        vec![rayon],
    );
}

/// The task of the serde `map` rows.
fn square(x: u64) -> u64 {
    x * x
}

/// procspawn's chunked `map` task: one chunk of items, squared.
fn squares(xs: Vec<u64>) -> Vec<u64> {
    xs.into_iter().map(square).collect()
}

/// `out` is the squares of `first..first + out.len()`.
fn check_squares(out: &[u64], first: u64, len: u64) -> Result<(), String> {
    if out.len() as u64 != len {
        return Err(format!("{} results for {len} items", out.len()));
    }
    match out.iter().zip(first..).find(|&(&v, i)| v != i * i) {
        Some((v, i)) => Err(format!("item {i}: got {v}")),
        None => Ok(()),
    }
}

/// `Pool(2).map(square, 0..m)` of `u64` (serde over the rings) against
/// Python's `Pool(2).map` and procspawn's pool of 2, one task per item
/// (on fewer items) and in 8 chunks as Python's `map` sends them.
fn serde_map(table: &mut Table, cfg: &Config) {
    let m = cfg.map_items;
    let ours = move || {
        match bench_pool(false) {
            Ok(pool) => self_timed(
                "multiproc",
                move || {
                    let (took, out) = bench_infra::with_parent_cpu(|| pool.map(square, 0..m));
                    Ok((took, out.map_err(|e| e.to_string())?))
                },
                move |out| check_squares(&out, 0, m),
            ),
            Err(e) => Contender::unavailable("multiproc", format!("Pool::new: {e}")),
        }
        .per_iteration(m)
    };
    let python = PythonPeer::contender(
        &python_pool_name(),
        &[
            "pool_map",
            "--n",
            &m.to_string(),
            "--workers",
            &pool_workers().to_string(),
        ],
    )
    .per_iteration(m);
    let k = cfg.map_items_procspawn;
    let name = &format!("procspawn 1.0.2 Pool({}), 1 task/item", pool_workers());
    let procspawn_items = match procspawn::Pool::new(pool_workers()) {
        Ok(pool) => self_timed(
            name,
            move || {
                let t0 = Instant::now();
                let handles: Vec<_> = (0..k).map(|i| pool.spawn(i, square)).collect();
                let out = handles
                    .into_iter()
                    .map(|h| h.join().map_err(|e| format!("procspawn join: {e}")))
                    .collect::<Result<Vec<u64>, String>>()?;
                Ok((t0.elapsed(), out))
            },
            move |out| check_squares(&out, 0, k),
        ),
        Err(e) => Contender::unavailable(name, format!("procspawn::Pool::new: {e}")),
    }
    .per_iteration(k);
    let name = &format!(
        "procspawn 1.0.2 Pool({}), {} chunks",
        pool_workers(),
        pool_workers() * 4
    );
    let procspawn_chunks = match procspawn::Pool::new(pool_workers()) {
        Ok(pool) => self_timed(
            name,
            move || {
                let t0 = Instant::now();
                let chunk = m.div_ceil(pool_workers() as u64 * 4).max(1);
                let handles: Vec<_> = (0..m)
                    .step_by(chunk as usize)
                    .map(|lo| pool.spawn((lo..(lo + chunk).min(m)).collect(), squares))
                    .collect();
                let mut out = Vec::with_capacity(m as usize);
                for h in handles {
                    out.extend(h.join().map_err(|e| format!("procspawn join: {e}"))?);
                }
                Ok((t0.elapsed(), out))
            },
            move |out| check_squares(&out, 0, m),
        ),
        Err(e) => Contender::unavailable(name, format!("procspawn::Pool::new: {e}")),
    }
    .per_iteration(m);
    table.side_by_side(
        &map_metric(m),
        "item",
        cfg,
        cfg.iters_map,
        ours,
        vec![procspawn_items, procspawn_chunks, python],
    );
}

/// `pool.apply(|x| x + 1, i)`, one call after the other on a pool of one
/// worker (so the worker is hot), against procspawn's pool (`spawn` +
/// `join`) and Python's `pool.apply`.
fn apply_round_trip(table: &mut Table, cfg: &Config) {
    let c = cfg.apply_calls;
    let ours = move || {
        match multiproc::Pool::new(APPLY_WORKERS) {
            Ok(pool) => Contender::try_timed("multiproc", move || {
                for i in 0..c {
                    let v = pool.apply(|x: u64| x + 1, i).map_err(|e| e.to_string())?;
                    if v != i + 1 {
                        return Err(format!("apply({i}) returned {v}"));
                    }
                }
                Ok(())
            }),
            Err(e) => Contender::unavailable("multiproc", format!("Pool::new: {e}")),
        }
        .per_iteration(c)
    };
    let pc = cfg.apply_calls_peer;
    let name = "procspawn 1.0.2 Pool(1) spawn+join";
    let procspawn = match procspawn::Pool::new(APPLY_WORKERS) {
        Ok(pool) => Contender::try_timed(name, move || {
            for i in 0..pc {
                let v = pool
                    .spawn(i, |x: u64| x + 1)
                    .join()
                    .map_err(|e| format!("procspawn join: {e}"))?;
                if v != i + 1 {
                    return Err(format!("task({i}) returned {v}"));
                }
            }
            Ok(())
        }),
        Err(e) => Contender::unavailable(name, format!("procspawn::Pool::new: {e}")),
    }
    .per_iteration(pc);
    let python = PythonPeer::contender(
        "Python Pool(1).apply",
        &[
            "pool_apply",
            "--n",
            &pc.to_string(),
            "--workers",
            &APPLY_WORKERS.to_string(),
        ],
    )
    .per_iteration(pc);
    table.side_by_side(
        APPLY_METRIC,
        "call",
        cfg,
        cfg.iters_apply,
        ours,
        vec![procspawn, python],
    );
}

/// Bytes of the argument, and of the result, of the long `apply` row.
const APPLY_BIG_BYTES: usize = 64 << 20;
const APPLY_BIG_METRIC: &str = "Pool apply, one 64 MiB Vec<u8> argument and result, 1 worker";

fn echo_bytes(v: Vec<u8>) -> Vec<u8> {
    v
}

/// `pool.apply(echo, v)` of a 64 MiB `Vec<u8>` (it streams through the
/// default 1 MiB rings both ways) against Python's `pool.apply` of a 64 MiB
/// `bytes`. Ours clones the argument before the clock starts (`apply`
/// takes it by value); Python pickles it inside the call.
fn apply_big(table: &mut Table, cfg: &Config) {
    let ours = || match multiproc::Pool::new(APPLY_WORKERS) {
        Ok(pool) => {
            let arg: Vec<u8> = (0..APPLY_BIG_BYTES).map(|i| (i >> 12) as u8).collect();
            Contender {
                name: "multiproc".to_string(),
                ops: 1,
                run: Box::new(move || {
                    let v = arg.clone();
                    let t0 = Instant::now();
                    let out = pool.apply(echo_bytes, v).map_err(|e| e.to_string())?;
                    let took = t0.elapsed();
                    if out != arg {
                        return Err("apply returned other bytes".to_string());
                    }
                    Ok(took)
                }),
            }
        }
        Err(e) => Contender::unavailable("multiproc", format!("Pool::new: {e}")),
    };
    let python = PythonPeer::contender(
        "Python Pool(1).apply",
        &[
            "pool_apply_big",
            "--n",
            &APPLY_BIG_BYTES.to_string(),
            "--workers",
            &APPLY_WORKERS.to_string(),
        ],
    );
    table.side_by_side(
        APPLY_BIG_METRIC,
        "call",
        cfg,
        cfg.iters_apply.min(10),
        ours,
        vec![python],
    );
}

/// Prints each row of `metric` as a rate (`rate` turns seconds per
/// operation into a figure in `unit`), multiproc beside its peer.
fn rate_lines(table: &Table, metric: &str, unit: &str, rate: impl Fn(f64) -> String) {
    let show = |fig: &Figure| match fig {
        Figure::Time(s) => format!("{} {unit} (best {})", rate(s.median), rate(s.min)),
        Figure::NotAvailable(_) => "n/a".to_string(),
    };
    for r in table.rows.iter().filter(|r| r.metric == metric) {
        println!(
            "{metric}: multiproc {} | {} {}",
            show(&r.ours),
            r.peer,
            show(&r.theirs)
        );
    }
}

/// Prints whether the ratio of `metric`'s row against `peer` (peer median /
/// multiproc median: how many times faster multiproc is) reaches `min`.
fn ratio_goal(table: &Table, metric: &str, peer: &str, min: f64) {
    let row = table
        .rows
        .iter()
        .find(|r| r.metric == metric && r.peer == peer);
    match row {
        Some(Row {
            ours: Figure::Time(a),
            theirs: Figure::Time(b),
            ..
        }) => {
            let ratio = b.median / a.median;
            println!(
                "goal: {metric}: multiproc >= {min:.2}x {peer}; here {ratio:.2}x \
                 (multiproc {} vs {} per operation): {}",
                Secs(a.median),
                Secs(b.median),
                if ratio >= min { "MET" } else { "NOT MET" }
            );
        }
        _ => println!("goal: {metric} vs {peer}: no figures"),
    }
}

/// Prints whether multiproc's median for `metric` meets `limit` (seconds
/// per operation), taking the figure from the metric's first row (the one
/// against a Rust peer, whose rounds are not mixed with heavy Python ones).
/// `extra` adds to the figure (e.g. a rate).
fn goal_line(table: &Table, metric: &str, limit: f64, terms: &str, extra: impl Fn(f64) -> String) {
    let ours = table
        .rows
        .iter()
        .find(|r| r.metric == metric)
        .map(|r| (&r.ours, r.peer.as_str()));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    match ours {
        Some((Figure::Time(s), peer)) => println!(
            "goal: {metric} <= {} {terms}; here ({cores} cores) multiproc median {}{} \
             (row vs {peer}): {}",
            Secs(limit),
            Secs(s.median),
            extra(s.median),
            if s.median <= limit { "MET" } else { "NOT MET" }
        ),
        _ => println!("goal: {metric}: no multiproc figure"),
    }
}

/// The pipe's figure next to the bare cache-line hand-off measured in the
/// same row: what the machine allows at the moment, and what the library
/// adds to it.
fn floor_line(table: &Table) {
    let row = table
        .rows
        .iter()
        .find(|r| r.metric == PIPE_METRIC && r.peer == FLOOR);
    if let Some(Row {
        ours: Figure::Time(ours),
        theirs: Figure::Time(floor),
        ..
    }) = row
    {
        println!(
            "      same row vs {FLOOR}: multiproc {}, floor {}, so multiproc adds {} \
             per one-way message",
            Secs(ours.median),
            Secs(floor.median),
            Secs(ours.median - floor.median)
        );
    }
}

// ------------------------------------------------------------ measuring

/// Median and minimum of one contender's samples, in seconds per operation.
#[derive(Debug, Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    samples: usize,
}

impl Stats {
    fn of(mut samples: Vec<f64>) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable_by(f64::total_cmp);
        let n = samples.len();
        let median = if n % 2 == 1 {
            samples[n / 2]
        } else {
            (samples[n / 2 - 1] + samples[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: samples[0],
            samples: n,
        })
    }
}

/// What one contender scored: a time per operation, or why there is none.
#[derive(Debug, Clone)]
enum Figure {
    Time(Stats),
    NotAvailable(String),
}

/// One side of a comparison: `run` performs one iteration and returns the
/// time it took (measured by the contender, so a Python peer can time
/// itself without the pipe round trip), or why it cannot. One iteration is
/// `ops` operations (1 unless [`per_iteration`](Contender::per_iteration)
/// says otherwise); figures are per operation.
struct Contender {
    name: String,
    ops: u64,
    run: Box<dyn FnMut() -> Result<Duration, String>>,
}

impl Contender {
    /// A contender timed here, around the whole closure.
    fn timed(name: &str, mut f: impl FnMut() + 'static) -> Contender {
        Contender::try_timed(name, move || {
            f();
            Ok(())
        })
    }

    /// As [`timed`](Contender::timed), for a closure that can fail: an
    /// error drops the contender from later rounds and its figure reads
    /// `n/a`, with the error in a note under the table.
    fn try_timed(name: &str, mut f: impl FnMut() -> Result<(), String> + 'static) -> Contender {
        Contender {
            name: name.to_string(),
            ops: 1,
            run: Box::new(move || {
                let t0 = Instant::now();
                f()?;
                Ok(t0.elapsed())
            }),
        }
    }

    /// A contender that could not start: every figure is `n/a (why)`.
    fn unavailable(name: &str, why: String) -> Contender {
        Contender {
            name: name.to_string(),
            ops: 1,
            run: Box::new(move || Err(why.clone())),
        }
    }

    /// One iteration performs `ops` operations (round trips × 2, items...).
    fn per_iteration(mut self, ops: u64) -> Contender {
        self.ops = ops.max(1);
        self
    }
}

/// Runs `warmup` untimed rounds, then `iters` timed rounds; each round runs
/// every contender once, starting one further along each time (A B C,
/// B C A, ...). A contender that fails is dropped from later rounds and
/// reported as not available. Samples are divided by the contender's
/// operations per iteration.
///
/// A contender that reports the parent's CPU time of its iteration
/// ([`bench_infra::report_parent_cpu`]) gets those samples too, per
/// operation, in the third field.
fn measure(
    warmup: usize,
    iters: usize,
    contenders: &mut [Contender],
) -> Vec<(String, Figure, Option<Stats>)> {
    let k = contenders.len();
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(iters); k];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut failed: Vec<Option<String>> = vec![None; k];
    for round in 0..warmup + iters {
        for offset in 0..k {
            let i = (round + offset) % k;
            if failed[i].is_some() {
                continue;
            }
            bench_infra::take_parent_cpu();
            match (contenders[i].run)() {
                Ok(d) if round >= warmup => {
                    let ops = contenders[i].ops as f64;
                    samples[i].push(d.as_secs_f64() / ops);
                    if let Some(c) = bench_infra::take_parent_cpu() {
                        cpu[i].push(c.as_secs_f64() / ops);
                    }
                }
                Ok(_) => {}
                Err(why) => failed[i] = Some(why),
            }
        }
    }
    contenders
        .iter()
        .zip(samples)
        .zip(cpu)
        .zip(failed)
        .map(|(((c, s), cpu), failed)| {
            let fig = match (failed, Stats::of(s)) {
                (Some(why), _) => Figure::NotAvailable(why),
                (None, Some(stats)) => Figure::Time(stats),
                (None, None) => Figure::NotAvailable("no samples".into()),
            };
            (c.name.clone(), fig, Stats::of(cpu))
        })
        .collect()
}

// ---------------------------------------------------------------- Python

/// `benches/peers.py … --serve`: one interpreter, one iteration per request.
struct PythonPeer {
    child: Child,
    /// `None` once closed: EOF ends `--serve`.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl PythonPeer {
    const SCRIPT: &'static str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers.py");

    /// [`Self::SCRIPT`], or `benches/peers.py` under the current directory
    /// when the binary runs away from the checkout it was built in.
    fn script() -> &'static str {
        if std::path::Path::new(Self::SCRIPT).exists() {
            Self::SCRIPT
        } else {
            "benches/peers.py"
        }
    }

    fn python() -> String {
        std::env::var("PEERS_PYTHON").unwrap_or_else(|_| "python3".to_string())
    }

    fn contender(name: &str, args: &[&str]) -> Contender {
        match PythonPeer::start(args) {
            Ok(mut peer) => Contender {
                name: name.to_string(),
                ops: 1,
                run: Box::new(move || peer.sample()),
            },
            Err(why) => Contender::unavailable(name, why),
        }
    }

    fn start(args: &[&str]) -> Result<PythonPeer, String> {
        let python = PythonPeer::python();
        let mut child = Command::new(&python)
            .arg(PythonPeer::script())
            .args(args)
            .args(["--warmup", "0", "--serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => format!("{python} not found (set PEERS_PYTHON)"),
                _ => format!("{python}: {e}"),
            })?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut peer = PythonPeer {
            child,
            stdin: Some(stdin),
            stdout,
        };
        let ready = peer.read_line()?;
        if !ready.contains("\"ready\": true") {
            return Err(format!("unexpected greeting {ready:?}"));
        }
        Ok(peer)
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("peers.py exited (see its stderr)".into()),
            Ok(_) => Ok(line),
            Err(e) => Err(format!("reading peers.py: {e}")),
        }
    }

    /// One iteration; the time is Python's own `perf_counter` figure.
    fn sample(&mut self) -> Result<Duration, String> {
        let stdin = self.stdin.as_mut().ok_or("peers.py stdin closed")?;
        stdin
            .write_all(b"\n")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to peers.py: {e}"))?;
        let line = self.read_line()?;
        // The reply is `{"s": <seconds>}`; no JSON crate needed for that.
        let secs: f64 = line
            .trim()
            .strip_prefix("{\"s\":")
            .and_then(|rest| rest.strip_suffix('}'))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("unexpected reply {line:?}"))?;
        Duration::try_from_secs_f64(secs).map_err(|e| format!("bad time {secs}: {e}"))
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        // EOF on stdin ends `--serve` cleanly (Python then stops its own
        // helpers, such as the spawn method's resource tracker).
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ table

/// One line of the table: multiproc against one peer on one metric.
struct Row {
    metric: String,
    ours: Figure,
    ours_ops: u64,
    peer: String,
    theirs: Figure,
    their_ops: u64,
    /// The parent's CPU time per operation, where the contender reports it.
    ours_cpu: Option<Stats>,
    their_cpu: Option<Stats>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
    /// Per metric: what one operation is ("iteration", "item", ...).
    units: Vec<(String, String)>,
}

impl Table {
    /// One row per peer: each peer is measured against a fresh multiproc
    /// contender from `ours`, the two alternating round by round, so every
    /// row is its own side-by-side comparison. `per` names one operation
    /// of the metric (the unit of its figures).
    fn side_by_side(
        &mut self,
        metric: &str,
        per: &str,
        cfg: &Config,
        iters: usize,
        ours: impl Fn() -> Contender,
        peers: Vec<Contender>,
    ) {
        self.units.push((metric.to_string(), per.to_string()));
        for peer in peers {
            let mut pair = [ours(), peer];
            let (ours_ops, their_ops) = (pair[0].ops, pair[1].ops);
            let mut figures = measure(cfg.warmup, iters, &mut pair).into_iter();
            let (Some((_, ours, ours_cpu)), Some((peer, theirs, their_cpu))) =
                (figures.next(), figures.next())
            else {
                unreachable!("measure returns one figure per contender");
            };
            self.rows.push(Row {
                metric: metric.to_string(),
                ours,
                ours_ops,
                peer,
                theirs,
                their_ops,
                ours_cpu,
                their_cpu,
            });
        }
    }

    fn print(&self) {
        println!("times: median (min) per operation (see below for what one operation is);");
        println!("ratio = peer median / multiproc median, so ratio > 1 means multiproc is");
        println!("faster, < 1 that the peer is.");
        let header = ["metric", "multiproc", "peer", "peer figure", "ratio"];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|r| {
                let ratio = match (&r.ours, &r.theirs) {
                    (Figure::Time(a), Figure::Time(b)) => format!("{:.2}x", b.median / a.median),
                    _ => "n/a".to_string(),
                };
                [
                    r.metric.clone(),
                    r.ours.to_string(),
                    r.peer.clone(),
                    r.theirs.to_string(),
                    ratio,
                ]
            })
            .collect();
        let mut width = header.map(str::len);
        for row in &cells {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |row: &[String]| {
            let padded: Vec<String> = row
                .iter()
                .zip(width)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(&header.map(String::from));
        let rule: Vec<String> = width.iter().map(|&w| "-".repeat(w)).collect();
        println!("|-{}-|", rule.join("-|-"));
        for row in &cells {
            line(row);
        }
        for (metric, per) in &self.units {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| &r.metric == metric).collect();
            let Some(rounds) = rows.iter().find_map(|r| match &r.ours {
                Figure::Time(s) => Some(s.samples),
                Figure::NotAvailable(_) => None,
            }) else {
                continue;
            };
            let mut counts = String::new();
            if rows.iter().any(|r| r.ours_ops > 1 || r.their_ops > 1) {
                let mut seen: Vec<(&str, u64)> = vec![("multiproc", rows[0].ours_ops)];
                for r in &rows {
                    seen.push((&r.peer, r.their_ops));
                }
                let list: Vec<String> = seen.iter().map(|(who, n)| format!("{who} {n}")).collect();
                counts = format!("; {per}s per iteration: {}", list.join(", "));
            }
            println!("{metric}: {rounds} timed rounds, figures per {per}{counts}");
        }
        for r in &self.rows {
            for (who, fig) in [("multiproc", &r.ours), (r.peer.as_str(), &r.theirs)] {
                if let Figure::NotAvailable(why) = fig {
                    println!("note: {} / {who}: n/a: {why}", r.metric);
                }
            }
        }
        bench_infra::print_parent_cpu(self);
    }
}

/// A time in seconds, shown in ns, µs, ms or s with about 3 significant
/// digits.
struct Secs(f64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let (v, unit) = if s >= 1.0 {
            (s, "s")
        } else if s >= 1e-3 {
            (s * 1e3, "ms")
        } else if s >= 1e-6 {
            (s * 1e6, "µs")
        } else {
            (s * 1e9, "ns")
        };
        if v >= 100.0 {
            write!(f, "{v:.0} {unit}")
        } else if v >= 10.0 {
            write!(f, "{v:.1} {unit}")
        } else {
            write!(f, "{v:.2} {unit}")
        }
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Figure::Time(s) => write!(f, "{} ({})", Secs(s.median), Secs(s.min)),
            Figure::NotAvailable(_) => write!(f, "n/a"),
        }
    }
}

// ---------------------------------------------------------------- machine

struct Machine {
    cpu: String,
    cores: String,
    os: String,
}

impl Machine {
    fn probe() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let cores = std::thread::available_parallelism()
            .map_or_else(|e| format!("unknown ({e})"), |n| n.get().to_string());
        let pretty = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_string())
            });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string());
        let mut os = format!("{} {}", std::env::consts::OS, std::env::consts::ARCH);
        if let Some(k) = kernel {
            os += &format!(", kernel {k}");
        }
        if let Some(p) = pretty {
            os += &format!(", {p}");
        }
        Machine { cpu, cores, os }
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "machine: CPU {}", self.cpu)?;
        writeln!(f, "         cores (available_parallelism) {}", self.cores)?;
        write!(f, "         OS {}", self.os)
    }
}
