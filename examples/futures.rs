//! `concurrent.futures` over the pool: submit tasks, take their results
//! as they complete, and cancel a task that is already *running* — its
//! worker is killed and replaced, the other tasks finish untouched.
//!
//! Python (whose `ProcessPoolExecutor` cannot cancel a running task):
//! ```python
//! with ProcessPoolExecutor(2) as ex:
//!     fs = [ex.submit(nap, ms) for ms in (300, 0, 100)]
//!     for f in as_completed(fs):
//!         print(f.result())
//! ```
//!
//! Run: `cargo run --example futures`

use std::time::Duration;

use multiproc::{as_completed, Pool, Queue};

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Says which worker runs it, then runs (nearly) forever.
fn stuck(pids: Queue<u32>) -> u64 {
    pids.put(&std::process::id()).unwrap();
    std::thread::sleep(Duration::from_secs(3600));
    0
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let pool = Pool::new(2)?; // ProcessPoolExecutor(2)

    // Submit, then take the results in the order they complete.
    let tasks = vec![pool.submit(nap, 1_500)?, pool.submit(nap, 0)?];
    for t in as_completed(&tasks, None) {
        println!("completed: nap({})", t?.result()?);
    }

    // Cancel a running task: its worker is replaced.
    let pids = Queue::<u32>::new()?;
    let runaway = pool.submit(stuck, pids.clone())?;
    let before = pids.get_timeout(Duration::from_secs(60))?;
    let others: Vec<_> = (1..=4)
        .map(|x| pool.submit(nap, x * 10))
        .collect::<Result<_, _>>()?;
    println!(
        "running task on worker {before}: running() = {}",
        runaway.running()
    );
    println!("cancel() = {}", runaway.cancel());
    println!("cancelled() = {}", runaway.cancelled());
    println!("result(): {}", runaway.result().unwrap_err());
    let results: Vec<u64> = others
        .iter()
        .map(|t| t.result())
        .collect::<Result<_, _>>()?;
    println!("the other tasks: {results:?}");
    let after = pool.pids();
    println!(
        "worker {before} replaced: {} (workers now {after:?}, restarts {})",
        !after.contains(&before),
        pool.restarts()
    );

    pool.shutdown(true, false) // ex.shutdown(wait=True)
}
