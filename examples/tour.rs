//! A tour of multiproc: what Python's `multiprocessing` users reach for, in Rust.
//!
//! Run it with `cargo run --example tour`.

use std::time::Duration;

use multiproc::{
    pipe, Connection, ErrorKind, Event, Lock, Pool, Process, Queue, SharedArray, SharedValue,
    ShmVec,
};
use serde::{Deserialize, Serialize};

fn square(x: u64) -> u64 {
    x * x
}

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    worker: String,
    pid: u32,
    words: usize,
}

fn count_words(text: String) -> Report {
    let me = multiproc::current_process();
    Report {
        worker: me.name().to_string(),
        pid: me.pid(),
        words: text.split_whitespace().count(),
    }
}

fn divide((a, b): (i64, i64)) -> i64 {
    if b == 0 {
        panic!("division by zero: {a} / {b}");
    }
    a / b
}

fn squares_into((q, from, to): (Queue<(u64, u64)>, u64, u64)) {
    for x in from..to {
        q.put(&(x, x * x)).unwrap();
    }
}

fn count_to((total, lock, n): (SharedValue<u64>, Lock, u32)) {
    for _ in 0..n {
        let _g = lock.lock().unwrap();
        total.set(total.get() + 1);
    }
}

fn doubler((conn, started): (Connection, Event)) {
    started.set();
    while let Ok(v) = conn.recv::<Vec<f64>>() {
        if v.is_empty() {
            break;
        }
        conn.send(&v.iter().map(|x| x * 2.0).collect::<Vec<_>>())
            .unwrap();
    }
}

fn fill_half((arr, half): (SharedArray<f64>, usize)) {
    let n = arr.len() / 2;
    let values: Vec<f64> = (half * n..(half + 1) * n).map(|i| i as f64).collect();
    arr.write_at(half * n, &values);
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn checked_sqrt(x: f64) -> f64 {
    assert!(x >= 0.0, "sqrt of a negative number: {x}");
    x.sqrt()
}

fn die_on(x: u64) -> u64 {
    if x == 3 {
        std::process::abort(); // a crashing worker, like a segfault or the OOM killer
    }
    x
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // first line, like Python's `if __name__ == "__main__":`

    println!("== cpu_count: {} usable CPUs", multiproc::cpu_count());

    // The headline: Pool(processes=4).map(square, range(10)), the course's
    // Q4 and Q5.
    let pool = Pool::new(4)?;
    println!("== Pool(4).map: {:?}", pool.map(square, 0..10)?);
    println!(
        "   starmap: {:?}; apply: {}; imap: {:?}",
        pool.starmap(|(a, b): (u64, u64)| a * b, [(2, 3), (4, 5)])?,
        pool.apply(square, 12)?,
        pool.imap(square, 0..)?
            .take(4)
            .collect::<multiproc::Result<Vec<_>>>()?
    );
    let later = pool.map_async(square, 0..1000)?; // runs in the background
    println!("   map_async: sum = {}", later.get()?.iter().sum::<u64>());

    // Zero-copy: a million f64 in shared memory, mapped chunk by chunk.
    let x = ShmVec::from_slice(&(0..1_000_000).map(f64::from).collect::<Vec<_>>())?;
    let mut y = ShmVec::<f64>::zeroed(x.len())?;
    pool.map_elements(|v: f64| v * v + 1.0, &x, &mut y)?;
    println!("== zero-copy map of 1e6 f64: y[999] = {}", y[999]);

    // Failures never hang: a panic names the item, a crashed worker is
    // reported (pid + signal) and replaced.
    let err = pool.map(checked_sqrt, [4.0, 9.0, -1.0]).unwrap_err();
    println!(
        "== a task panicked: item {:?}: {:?}",
        err.item_index(),
        err.panic_info().map(|i| i.message())
    );
    let err = pool.map(die_on, 0..8).unwrap_err();
    println!("   a worker crashed: {err}");
    println!(
        "   replaced ({} restart), still working: {:?}",
        pool.restarts(),
        pool.map(square, 0..3)?
    );
    pool.close();
    pool.join()?;

    // Process(target=square, args=(7,)).start(); .join() — with the result.
    let p = Process::spawn(square, 7)?;
    let pid = p.pid();
    println!(
        "== spawn/join: square(7) = {} (computed in pid {pid})",
        p.join()?
    );

    // Named processes, structured arguments and results (serde, no pickling).
    let p = Process::builder()
        .name("word-counter")
        .spawn(count_words, "the quick brown fox jumps".to_string())?;
    let report = p.join()?;
    println!(
        "== builder: {} counted {} words (pid {})",
        report.worker, report.words, report.pid
    );

    // Four processes at once (the course's Q6).
    let procs = (0..4u64)
        .map(|i| Process::spawn(square, i))
        .collect::<multiproc::Result<Vec<_>>>()?;
    let squares = procs
        .into_iter()
        .map(Process::join)
        .collect::<multiproc::Result<Vec<_>>>()?;
    println!("== four processes: {squares:?}");

    // A panic in the child comes back as an error, with message and place.
    let err = Process::spawn(divide, (1, 0))?.join().unwrap_err();
    let info = err.panic_info().expect("a panic");
    println!(
        "== panic in child: {:?} at {}",
        info.message(),
        info.location().unwrap_or("?")
    );

    // join(timeout), is_alive, terminate, exitcode.
    let mut p = Process::spawn(sleep_ms, 60_000)?;
    let waited = p.join_timeout(Duration::from_millis(50));
    println!(
        "== join_timeout(50 ms): timed out = {}, is_alive = {}",
        waited.is_err_and(|e| e.is_timeout()),
        p.is_alive()
    );
    println!(
        "   active_children: {:?}",
        multiproc::active_children()
            .iter()
            .map(|c| c.name().to_string())
            .collect::<Vec<_>>()
    );
    p.terminate()?;
    let err = p.join_timeout(Duration::from_secs(10)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProcessDied);
    println!(
        "   terminate(): {}; Python's exitcode = {}",
        err.exit_status().expect("status"),
        p.exit_code().expect("ended").to_python()
    );

    // Shared memory: a Queue two processes fill, a Lock-protected counter,
    // a Pipe conversation, an Event, an array written in place.
    let q = Queue::new()?;
    let producers = [(0, 5), (5, 10)]
        .into_iter()
        .map(|(a, b)| Process::spawn(squares_into, (q.clone(), a, b)))
        .collect::<multiproc::Result<Vec<_>>>()?;
    let mut got: Vec<(u64, u64)> = (0..10).map(|_| q.get()).collect::<multiproc::Result<_>>()?;
    got.sort();
    for p in producers {
        p.join()?;
    }
    println!(
        "== Queue from two processes: {:?}",
        got.iter().map(|&(_, y)| y).collect::<Vec<_>>()
    );

    let total = SharedValue::new(0u64)?;
    let lock = Lock::new()?;
    let counters = (0..4)
        .map(|_| Process::spawn(count_to, (total.clone(), lock.clone(), 2_500)))
        .collect::<multiproc::Result<Vec<_>>>()?;
    for p in counters {
        p.join()?;
    }
    println!(
        "== Value + Lock: 4 processes x 2500 increments = {}",
        total.get()
    );

    let (here, there) = pipe(true)?;
    let started = Event::new()?;
    let d = Process::spawn(doubler, (there, started.clone()))?;
    started.wait()?;
    here.send(&vec![1.5, 2.5])?;
    println!("== Pipe: doubled {:?}", here.recv::<Vec<f64>>()?);
    here.send(&Vec::<f64>::new())?;
    d.join()?;

    let arr = SharedArray::<f64>::new(8)?;
    let fillers = (0..2)
        .map(|half| Process::spawn(fill_half, (arr.clone(), half)))
        .collect::<multiproc::Result<Vec<_>>>()?;
    for p in fillers {
        p.join()?;
    }
    println!(
        "== SharedArray filled in halves by two processes: {:?}",
        arr.to_vec()
    );

    println!("Main process completed");
    Ok(())
}
