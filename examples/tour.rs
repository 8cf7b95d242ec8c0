//! A tour of multiproc: what Python's `multiprocessing` users reach for, in Rust.
//!
//! Run it with `cargo run --example tour`.

use std::time::Duration;

use multiproc::{ErrorKind, Process};
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

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // first line, like Python's `if __name__ == "__main__":`

    println!("== cpu_count: {} usable CPUs", multiproc::cpu_count());

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

    // Four processes at once (seed Q6).
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
    let finished = p.join_timeout(Duration::from_millis(50))?;
    println!(
        "== join_timeout(50 ms): finished = {}, is_alive = {}",
        finished.is_some(),
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

    println!("Main process completed");
    Ok(())
}
