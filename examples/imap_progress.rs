//! Streaming results and progress: `imap` yields results in order while
//! the rest is still being computed (bounded work in flight, so an endless
//! iterator is fine), and `map_with_progress` reports how far a long map
//! has come.
//!
//! Python:
//! ```python
//! with Pool(4) as pool:
//!     for r in pool.imap(slow_square, range(20)):
//!         print(r)
//!     # mpire: pool.map(f, items, progress_bar=True)
//! ```
//!
//! Run: `cargo run --example imap_progress`

use std::time::Duration;

fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(10));
    x * x
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let pool = multiproc::Pool::new(4)?;

    // Results arrive in order, as soon as each is ready.
    for (i, r) in pool.imap(slow_square, 0..8)?.enumerate() {
        println!("imap: item {i} -> {}", r?);
    }

    // An endless input: take what you need, the rest is never computed.
    let first_big = pool
        .imap(slow_square, 0..)?
        .map(|r| r.expect("no task fails here"))
        .find(|&sq| sq > 500)
        .expect("the squares grow without bound");
    println!("first square over 500: {first_big}");

    // A progress callback (at most every 50 ms, and at the end).
    let results = pool.map_with_progress(slow_square, 0..200, |p| {
        println!(
            "progress: {:>3}/{} ({:>3.0}%) after {:?}",
            p.done,
            p.total,
            p.fraction() * 100.0,
            p.elapsed
        );
    })?;
    println!("sum of squares below 200: {}", results.iter().sum::<u64>());
    Ok(())
}
