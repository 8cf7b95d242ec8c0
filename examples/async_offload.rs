//! "How does an async server stay responsive when some requests are
//! CPU-heavy?" — a tokio server (simulated, in-process) where one request
//! in ten burns 30 ms of CPU. Run inline, those requests hold the
//! runtime's threads and every light request queued behind them waits;
//! offloaded to the pool (`pool.apply_async(..).await`), the runtime's
//! threads stay free. It prints the light requests' latencies both ways.
//!
//! Python: `await loop.run_in_executor(process_pool, heavy, n)`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use multiproc::Pool;

/// Requests served per run; every tenth is heavy.
const REQUESTS: usize = 150;
/// A new request every this often.
const ARRIVAL: Duration = Duration::from_millis(2);
/// CPU a heavy request burns.
const HEAVY_MS: u64 = 30;

/// The heavy work: burns `ms` of CPU (a stand-in for parsing, image
/// resizing, a model...) and returns how many rounds it did.
fn burn(ms: u64) -> u64 {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut rounds = 0u64;
    while Instant::now() < end {
        rounds = std::hint::black_box(rounds + 1);
    }
    rounds
}

/// A light request: a little I/O (simulated) and a little work.
async fn light(i: usize) -> usize {
    tokio::time::sleep(Duration::from_millis(1)).await;
    i * 2
}

/// Serves the requests; returns the light ones' latencies.
async fn serve(pool: Option<Arc<Pool>>) -> Vec<Duration> {
    let mut tick = tokio::time::interval(ARRIVAL);
    let mut handles = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        tick.tick().await;
        let pool = pool.clone();
        handles.push(tokio::spawn(async move {
            let t0 = Instant::now();
            if i % 10 == 0 {
                let rounds = match pool {
                    // Offloaded: the runtime thread awaits, free meanwhile.
                    Some(p) => p.apply_async(burn, HEAVY_MS).unwrap().await.unwrap(),
                    // Inline: the runtime thread burns the CPU itself.
                    None => burn(HEAVY_MS),
                };
                assert!(rounds > 0);
                None
            } else {
                assert_eq!(light(i).await, i * 2);
                Some(t0.elapsed())
            }
        }));
    }
    let mut latencies = Vec::new();
    for h in handles {
        if let Some(d) = h.await.unwrap() {
            latencies.push(d);
        }
    }
    latencies
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn report(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "  {what:<40} p50 {:>7.2} ms, p99 {:>7.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    multiproc::init();
    let pool = Arc::new(Pool::new(2).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    // Warm the pool up (its workers start in the background).
    rt.block_on(pool.apply_async(burn, 0).unwrap()).unwrap();

    let heavy = REQUESTS.div_ceil(10);
    println!(
        "{REQUESTS} requests, one every {} ms; {heavy} of them burn {HEAVY_MS} ms of CPU; \
         tokio with 2 worker threads",
        ARRIVAL.as_millis()
    );
    println!("latency of the {} light requests:", REQUESTS - heavy);
    let inline = rt.block_on(serve(None));
    report("heavy work inline on the runtime:", inline);
    let offloaded = rt.block_on(serve(Some(Arc::clone(&pool))));
    report("heavy work offloaded to the Pool:", offloaded);
}
