//! A library that uses multiproc inside, and a program that never calls
//! `multiproc::init()`: with the cargo feature `auto-init`, a load-time
//! constructor does it before `main`.
//!
//! Run: `cargo run --features auto-init --example auto_init`
//!
//! Python counterpart: a module that uses `multiprocessing.Pool` inside a
//! function, imported by a script that has no `if __name__ == "__main__":`
//! guard (which, with the `spawn` start method, Python refuses).

/// Stands for a library crate: its users call `sum_of_squares` and never
/// hear of worker processes, let alone `init()`.
mod stats {
    fn square(x: u64) -> u64 {
        x * x
    }

    /// Σ x² for x in 0..n, computed by a pool of 2 worker processes.
    pub(crate) fn sum_of_squares(n: u64) -> multiproc::Result<u64> {
        let pool = multiproc::Pool::new(2)?;
        let squares = pool.map(square, 0..n)?;
        Ok(squares.iter().sum())
    }
}

fn main() {
    // No multiproc::init() anywhere in this program.
    let n = 1000;
    let sum = stats::sum_of_squares(n).expect("the pool's map");
    assert_eq!(sum, (n - 1) * n * (2 * n - 1) / 6);
    println!("sum of squares below {n}: {sum}");
}
