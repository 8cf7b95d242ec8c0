//! Seed Q4: "Pool.map — how do I apply a function to many inputs in
//! parallel?"
//!
//! Python:
//! ```python
//! from multiprocessing import Pool
//!
//! def square(x):
//!     return x * x
//!
//! if __name__ == "__main__":
//!     with Pool(processes=4) as pool:
//!         print(pool.map(square, range(10)))
//! ```
//!
//! Run: `cargo run --example q4_pool_map`

fn square(x: u64) -> u64 {
    x * x
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // `if __name__ == "__main__":`

    let pool = multiproc::Pool::new(4)?; // Pool(processes=4)
    let squares: Vec<u64> = pool.map(square, 0..10)?; // pool.map(square, range(10))
    println!("{squares:?}");
    Ok(()) // dropping the pool ends its workers, like leaving `with Pool() as pool:`
}
