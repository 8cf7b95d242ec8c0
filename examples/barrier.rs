//! Four processes meet at a `Barrier` before the next phase.
//!
//! Python:
//! ```python
//! def worker(i, barrier):
//!     print(f"worker {i} ready")
//!     barrier.wait()
//!     print(f"worker {i} past the barrier")
//!
//! if __name__ == "__main__":
//!     barrier = multiprocessing.Barrier(4)
//!     procs = [multiprocessing.Process(target=worker, args=(i, barrier)) for i in range(4)]
//!     for p in procs: p.start()
//!     for p in procs: p.join()
//! ```
//! Every "ready" line comes before every "past" line.

use multiproc::{Barrier, Process};

fn worker((i, barrier): (u32, Barrier)) {
    println!("worker {i} ready");
    barrier.wait().unwrap();
    println!("worker {i} past the barrier");
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let barrier = Barrier::new(4)?;
    let procs = (0..4)
        .map(|i| Process::spawn(worker, (i, barrier.clone())))
        .collect::<multiproc::Result<Vec<_>>>()?;
    for p in procs {
        p.join()?;
    }
    println!("all four passed");
    Ok(())
}
