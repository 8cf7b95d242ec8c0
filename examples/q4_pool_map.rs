//! The course's question Q4: "What is a multiprocessing pool in python? Why
//! is it used?"
//!
//! A pool is a fixed set of worker processes that take tasks from a queue:
//! you pay for starting processes once, then hand them many items.
//!
//! Python:
//! ```python
//! def process_function(x):
//!     return x * x
//!
//! if __name__ == '__main__':
//!     pool = multiprocessing.Pool(processes=4)
//!     results = pool.map(process_function, range(10))
//!     pool.close()
//!     pool.join()
//!     print(results)
//! ```
//!
//! Run: `cargo run --example q4_pool_map`

/// Function to be executed by each process.
fn process_function(x: u64) -> u64 {
    x * x
}

fn main() -> multiproc::Result<()> {
    multiproc::init(); // `if __name__ == '__main__':`

    // Create a Pool object with 4 worker processes.
    let pool = multiproc::Pool::new(4)?;

    // Apply process_function to a range of values.
    let results = pool.map(process_function, 0..10)?;

    // Close the pool to prevent any more tasks, then wait for the workers.
    pool.close();
    pool.join()?;

    println!("{results:?}");
    Ok(())
}
