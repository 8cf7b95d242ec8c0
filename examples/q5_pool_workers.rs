//! The course's question Q5: "How can we create a pool of worker processes
//! in python using the multiprocessing module?"
//!
//! The same program as Q4, showing the worker processes themselves: their
//! pids, which worker ran which item, and what each did (mpire-style
//! insights). `Pool::builder()` takes Python's other keyword arguments
//! (`initializer`, `maxtasksperchild`) and a few of its own.
//!
//! Python:
//! ```python
//! pool = multiprocessing.Pool(processes=4)
//! results = pool.map(process_function, range(10))
//! pool.close(); pool.join()
//! print(results)
//! ```
//!
//! Run: `cargo run --example q5_pool_workers`

/// Function to be executed by each process: the square, and who computed it.
fn process_function(x: u64) -> (u64, u32) {
    (x * x, std::process::id())
}

/// Runs once in every worker before its first task (Python's `initializer`).
fn announce(prefix: String) {
    eprintln!("{prefix} {} ready", std::process::id());
}

fn main() -> multiproc::Result<()> {
    multiproc::init();

    let pool = multiproc::Pool::builder()
        .processes(4) // Pool(processes=4)
        .initializer(announce, "worker".to_string()) // initializer=announce, initargs=("worker",)
        .chunksize(1) // one item per task, so the items spread over the workers
        .insights(true) // time each task (mpire's enable_insights)
        .build()?;
    println!(
        "main process {} started workers {:?}",
        std::process::id(),
        pool.pids()
    );

    let pairs = pool.map(process_function, 0..10)?;
    let results: Vec<u64> = pairs.iter().map(|&(square, _)| square).collect();
    for (x, (square, pid)) in pairs.iter().enumerate() {
        println!("  {x}² = {square:<3} computed by worker {pid}");
    }

    for w in pool.insights() {
        println!(
            "  worker {} (pid {}): {} tasks, {} items, busy {:?}",
            w.index,
            w.pid,
            w.tasks,
            w.items,
            w.busy.unwrap_or_default()
        );
    }

    pool.close();
    pool.join()?;
    println!("{results:?}");
    Ok(())
}
