//! CPython's `_TestBarrier`.

use super::*;

/// Parties: CPython uses 5; 3 here (two child processes and this
/// one), to keep the number of processes down.
const N: u32 = 3;

/// CPython's `Bunch` + `run_threads`: runs `f(args)` in `N - 1` child
/// processes and here, and waits for the children.
fn run_parties<F, A>(f: F, args: A)
where
    F: Fn(A) + Copy + 'static,
    A: Clone + Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let procs: Vec<_> = (0..N - 1)
        .map(|_| Process::spawn(f, args.clone()).unwrap())
        .collect();
    f(args);
    for p in procs {
        p.join_timeout_or_panic();
    }
}

trait JoinOrPanic {
    fn join_timeout_or_panic(self);
}

impl JoinOrPanic for Process<()> {
    fn join_timeout_or_panic(mut self) {
        self.join_timeout(LONG).unwrap();
    }
}

/// A `_DummyList` is a shared counter: `append` adds one, `len` reads.
type Counter = SharedValue<u32>;

fn multipass((barrier, results0, results1, n): (Barrier, Counter, Counter, u32)) {
    let m = barrier.parties();
    assert_eq!(m, N);
    for i in 0..n {
        results0.fetch_add(1);
        assert_eq!(results1.get(), i * m);
        barrier.wait().unwrap();
        results1.fetch_add(1);
        assert_eq!(results0.get(), (i + 1) * m);
        barrier.wait().unwrap();
    }
    assert_eq!(barrier.n_waiting(), 0);
    assert!(!barrier.broken());
}

fn check_barrier(passes: u32) {
    let barrier = Barrier::new(N).unwrap();
    let results = (SharedValue::new(0).unwrap(), SharedValue::new(0).unwrap());
    run_parties(multipass, (barrier, results.0, results.1, passes));
}

#[test]
fn test_barrier() {
    check_barrier(1);
}

#[test]
fn test_barrier_10() {
    check_barrier(10);
}

fn wait_return((barrier, queue): (Barrier, Queue<u32>)) {
    queue.put(&barrier.wait().unwrap()).unwrap();
}

#[test]
fn test_wait_return() {
    let barrier = Barrier::new(N).unwrap();
    let queue = Queue::new().unwrap();
    run_parties(wait_return, (barrier, queue.clone()));
    let results: Vec<u32> = (0..N).map(|_| queue.get_timeout(LONG).unwrap()).collect();
    assert_eq!(results.iter().filter(|&&r| r == 0).count(), 1);
}

/// The party with index `N / 2` comes late to the second wait; the
/// others time out there, which breaks the barrier for everyone.
fn timeout_party((barrier, results): (Barrier, Counter)) {
    let i = barrier.wait().unwrap();
    if i == N / 2 {
        // One party is late! (CPython: 1 s late for a 0.5 s timeout.)
        sleep(Duration::from_millis(1500));
    }
    if barrier.wait_timeout(Duration::from_millis(500)).is_err() {
        results.fetch_add(1);
    }
}

#[test]
fn test_timeout() {
    let barrier = Barrier::new(N).unwrap();
    let results = SharedValue::new(0).unwrap();
    run_parties(timeout_party, (barrier.clone(), results.clone()));
    assert_eq!(results.get(), barrier.parties());
}

#[test]
fn test_single_thread() {
    let b = Barrier::new(1).unwrap();
    b.wait().unwrap();
    b.wait().unwrap();
}

/// As Python: every party sends through one pipe end they all share.
fn thousand((barrier, passes, conn, lock): (Barrier, u32, Connection, Lock)) {
    for i in 0..passes {
        barrier.wait().unwrap();
        let _g = lock.lock().unwrap();
        conn.send(&i).unwrap();
    }
}

#[test]
fn test_thousand() {
    let passes = 1000;
    let barrier = Barrier::new(N).unwrap();
    let lock = Lock::new().unwrap();
    let (r, w) = pipe(false).unwrap();
    let procs: Vec<_> = (0..N)
        .map(|_| {
            Process::spawn(thousand, (barrier.clone(), passes, w.clone(), lock.clone())).unwrap()
        })
        .collect();
    for i in 0..passes {
        for _ in 0..N {
            assert_eq!(r.recv_timeout::<u32>(LONG).unwrap(), i);
        }
    }
    for p in procs {
        p.join().unwrap();
    }
}

/// CPython's `defaultTimeout` of `setUp`'s barrier.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// CPython's `setUp`: `Barrier(N, timeout=defaultTimeout)`.
fn default_barrier() -> Barrier {
    Barrier::with_timeout(N, DEFAULT_TIMEOUT).unwrap()
}

/// `except threading.BrokenBarrierError:` (the wait that timed out
/// itself reports `Timeout`; Python raises `BrokenBarrierError` there too).
fn is_broken_barrier_error(e: &multiproc::Error) -> bool {
    matches!(e.kind(), ErrorKind::Broken | ErrorKind::Timeout)
}

/// The party with index `N / 2` raises `RuntimeError`, which aborts the
/// barrier; the others are told it is broken.
fn abort_f((barrier, results1, results2): (Barrier, Counter, Counter)) {
    let outcome = barrier.wait().and_then(|i| {
        if i == N / 2 {
            return Ok(false); // raise RuntimeError
        }
        barrier.wait()?;
        results1.fetch_add(1);
        Ok(true)
    });
    match outcome {
        Ok(true) => {}
        Ok(false) => barrier.abort(), // except RuntimeError
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Broken, "{e}");
            results2.fetch_add(1);
        }
    }
}

#[test]
fn test_abort() {
    let barrier = default_barrier();
    let results1 = SharedValue::new(0).unwrap();
    let results2 = SharedValue::new(0).unwrap();
    run_parties(
        abort_f,
        (barrier.clone(), results1.clone(), results2.clone()),
    );
    assert_eq!(results1.get(), 0);
    assert_eq!(results2.get(), N - 1);
    assert!(barrier.broken());
}

fn reset_f((barrier, results1, results2, results3): (Barrier, Counter, Counter, Counter)) {
    let i = barrier.wait().unwrap();
    if i == N / 2 {
        // Wait until the other parties are all in the barrier.
        while barrier.n_waiting() < N - 1 {
            sleep(Duration::from_millis(1));
        }
        barrier.reset();
    } else {
        match barrier.wait() {
            Ok(_) => results1.fetch_add(1),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Broken, "{e}");
                results2.fetch_add(1)
            }
        };
    }
    // Now, pass the barrier again.
    barrier.wait().unwrap();
    results3.fetch_add(1);
}

#[test]
fn test_reset() {
    let barrier = default_barrier();
    let results: [Counter; 3] = std::array::from_fn(|_| SharedValue::new(0).unwrap());
    run_parties(
        reset_f,
        (
            barrier,
            results[0].clone(),
            results[1].clone(),
            results[2].clone(),
        ),
    );
    assert_eq!(results[0].get(), 0);
    assert_eq!(results[1].get(), N - 1);
    assert_eq!(results[2].get(), N);
}

type AbortResetArgs = (Barrier, Barrier, Counter, Counter, Counter);

fn abort_and_reset_f((barrier, barrier2, results1, results2, results3): AbortResetArgs) {
    abort_f((barrier.clone(), results1, results2));
    // Synchronize and reset the barrier. Must synchronize first so that
    // everyone has left it when we reset, and after so that no one enters
    // it before the reset.
    if barrier2.wait().unwrap() == N / 2 {
        barrier.reset();
    }
    barrier2.wait().unwrap();
    barrier.wait().unwrap();
    results3.fetch_add(1);
}

#[test]
fn test_abort_and_reset() {
    let barrier = default_barrier();
    let barrier2 = Barrier::new(N).unwrap();
    let results: [Counter; 3] = std::array::from_fn(|_| SharedValue::new(0).unwrap());
    run_parties(
        abort_and_reset_f,
        (
            barrier,
            barrier2,
            results[0].clone(),
            results[1].clone(),
            results[2].clone(),
        ),
    );
    assert_eq!(results[0].get(), 0);
    assert_eq!(results[1].get(), N - 1);
    assert_eq!(results[2].get(), N);
}

fn default_timeout_f((barrier, results): (Barrier, Counter)) {
    let i = barrier.wait_timeout(DEFAULT_TIMEOUT).unwrap();
    if i == N / 2 {
        // One party is later than the default timeout (CPython: 1 s late
        // for 0.5 s; 1.5 s here, as in `test_timeout`).
        sleep(Duration::from_millis(1500));
    }
    match barrier.wait() {
        Ok(_) => {}
        Err(e) => {
            assert!(is_broken_barrier_error(&e), "{e}");
            results.fetch_add(1);
        }
    }
}

#[test]
fn test_default_timeout() {
    let barrier = Barrier::with_timeout(N, Duration::from_millis(500)).unwrap();
    let results = SharedValue::new(0).unwrap();
    run_parties(default_timeout_f, (barrier.clone(), results.clone()));
    assert_eq!(results.get(), barrier.parties());
}
