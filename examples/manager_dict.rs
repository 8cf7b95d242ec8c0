//! Four processes count words into one shared dict: `Manager().dict()`.
//!
//! Python:
//! ```python
//! def count(words, counts, lock):
//!     for w in words:
//!         with lock:
//!             counts[w] = counts.get(w, 0) + 1
//!
//! if __name__ == "__main__":
//!     with multiprocessing.Manager() as manager:
//!         counts, lock = manager.dict(), manager.Lock()
//!         procs = [multiprocessing.Process(target=count, args=(part, counts, lock))
//!                  for part in parts]
//!         for p in procs: p.start()
//!         for p in procs: p.join()
//! ```
//!
//! Here the read-modify-write needs no lock: `update_with` is atomic.

use std::collections::HashMap;

use multiproc::{Dict, Manager, Process};

const TEXT: &str = "the quick brown fox jumps over the lazy dog while the cat \
    sleeps on the warm mat and the dog dreams of the fox in the brown field";

/// The input: `TEXT` many times, with a counter word so that not every
/// word is equally common.
fn words() -> Vec<String> {
    (0..400)
        .flat_map(|i| {
            TEXT.split_whitespace()
                .map(str::to_string)
                .chain(std::iter::once(format!("line{}", i % 7)))
        })
        .collect()
}

fn count((words, counts): (Vec<String>, Dict<String, u64>)) {
    for w in &words {
        counts.update_with(w, |n| Some(n.unwrap_or(0) + 1)).unwrap();
    }
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let words = words();
    let manager = Manager::new()?;
    let counts = manager.dict::<String, u64>()?;

    let parts = words.chunks(words.len().div_ceil(4));
    let workers: Vec<_> = parts
        .map(|part| Process::spawn(count, (part.to_vec(), counts.clone())))
        .collect::<multiproc::Result<_>>()?;
    for w in workers {
        w.join()?;
    }

    let shared = counts.snapshot()?;
    let mut alone: HashMap<String, u64> = HashMap::new();
    for w in &words {
        *alone.entry(w.clone()).or_default() += 1;
    }
    assert_eq!(
        shared, alone,
        "the shared count differs from a single process's"
    );

    let mut top: Vec<_> = shared.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!(
        "{} words, {} distinct, counted by 4 processes into one Manager dict",
        words.len(),
        shared.len()
    );
    for (w, n) in top.iter().take(3) {
        println!("  {w:>6}: {n}");
    }
    println!("same as counted in one process: yes");
    Ok(())
}
