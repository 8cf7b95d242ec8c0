//! Zero-copy parallel map: 10 million f64 in shared memory, mapped by the
//! pool's workers in place — only chunk descriptors cross the rings, and
//! each worker runs a tight loop over its chunk that the compiler
//! vectorises.
//!
//! Python (NumPy + shared_memory, the usual workaround for pickling cost):
//! ```python
//! shm = shared_memory.SharedMemory(create=True, size=n * 8)
//! x = np.ndarray((n,), dtype=np.float64, buffer=shm.buf)
//! with Pool(4) as pool:
//!     pool.starmap(kernel, [(shm.name, lo, hi) for lo, hi in chunks])
//! ```
//!
//! Run: `cargo run --release --example zero_copy_map`

use std::time::Instant;

use multiproc::{Pool, ShmVec};

/// `y = x² + 1`, a whole chunk at a time.
fn kernel(x: &[f64], y: &mut [f64]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = x * x + 1.0;
    }
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let n = 10_000_000;

    let pool = Pool::new(multiproc::cpu_count())?;
    let input = ShmVec::from_slice(&(0..n).map(|i| i as f64 * 1e-3).collect::<Vec<_>>())?;
    let mut output = ShmVec::<f64>::zeroed(n)?;

    for round in 1..=3 {
        let t = Instant::now();
        pool.map_into(kernel, &input, &mut output)?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {n} elements in {:.1} ms ({:.1} GB/s read + write)",
            secs * 1e3,
            (n * 16) as f64 / secs / 1e9
        );
    }

    // The element-wise form, into the same buffers.
    pool.map_elements(|x: f64| x * x + 1.0, &input, &mut output)?;

    let checksum: f64 = output.iter().sum();
    let expect: f64 = (0..n).map(|i| (i as f64 * 1e-3).powi(2) + 1.0).sum();
    assert!((checksum - expect).abs() <= expect * 1e-12);
    println!("checksum {checksum:.6e}");
    Ok(())
}
