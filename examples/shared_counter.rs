//! Four processes add to one shared counter under a lock: `Value` + `Lock`.
//!
//! Python:
//! ```python
//! def add(counter, lock):
//!     for _ in range(10_000):
//!         with lock:
//!             counter.value += 1
//!
//! if __name__ == "__main__":
//!     counter = multiprocessing.Value("q", 0, lock=False)
//!     lock = multiprocessing.Lock()
//!     procs = [multiprocessing.Process(target=add, args=(counter, lock)) for _ in range(4)]
//!     for p in procs: p.start()
//!     for p in procs: p.join()
//!     print(counter.value)  # 40000
//! ```

use multiproc::{Lock, Process, SharedValue};

fn add((counter, lock): (SharedValue<u64>, Lock)) {
    for _ in 0..10_000 {
        let _guard = lock.lock().unwrap(); // `with lock:`
        counter.set(counter.get() + 1);
    }
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let counter = SharedValue::new(0u64)?;
    let lock = Lock::new()?;
    let procs = (0..4)
        .map(|_| Process::spawn(add, (counter.clone(), lock.clone())))
        .collect::<multiproc::Result<Vec<_>>>()?;
    for p in procs {
        p.join()?;
    }
    println!("{}", counter.get());
    assert_eq!(counter.get(), 40_000);
    Ok(())
}
