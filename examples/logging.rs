//! "How do I see the log messages of my worker processes?" With the cargo
//! feature `tracing`, a worker's `tracing` events (and `log` records) are
//! delivered to the parent's subscriber, tagged with the worker's name and
//! pid; `multiproc::log_to_stderr` is the simplest such subscriber.
//!
//! Run: `cargo run --features tracing --example logging`
//!
//! stdout gets the results; stderr gets lines like
//! `[INFO/PoolWorker-1] logging: squared x=3 result=9 worker_pid=…` from
//! the workers and `[DEBUG/MainProcess] multiproc: pool worker started …`
//! from the crate itself.
//!
//! Python counterpart: `multiprocessing.log_to_stderr(logging.DEBUG)`,
//! whose handler, though, only sees the messages of the process it was
//! installed in.

fn square(x: u64) -> u64 {
    let result = x * x;
    tracing::info!(x, result, "squared");
    result
}

fn greet(name: String) -> String {
    tracing::warn!(%name, "about to greet");
    format!("hello, {name}")
}

fn main() {
    multiproc::init();
    // Before any worker starts: a worker forwards to the subscriber the
    // parent had when it started.
    assert!(multiproc::log_to_stderr(tracing::Level::DEBUG));

    let pool = multiproc::Pool::new(2).expect("a pool of 2 workers");
    let squares = pool.map(square, 1..=5).expect("the map");
    pool.close();
    pool.join().expect("the pool's workers end");
    println!("squares: {squares:?}");

    let p = multiproc::Process::builder()
        .name("greeter")
        .spawn(greet, "world".to_string())
        .expect("a process");
    // `join` returns once the child's last records were printed.
    println!("{}", p.join().expect("the greeting"));
}
