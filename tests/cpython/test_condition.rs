//! CPython's `_TestCondition`.

use super::*;

/// CPython's `f(cond, sleeping, woken, timeout=None)`.
fn f((cond, sleeping, woken, timeout_ms): (Condition, Semaphore, Semaphore, Option<u64>)) {
    let mut g = cond.lock().unwrap();
    sleeping.release().unwrap();
    match timeout_ms {
        Some(ms) => {
            // A timeout is the expected outcome, not an error.
            let res = cond.wait_timeout(&mut g, Duration::from_millis(ms));
            assert!(res.is_ok() || res.unwrap_err().is_timeout());
        }
        None => cond.wait(&mut g).unwrap(),
    }
    woken.release().unwrap();
    drop(g);
}

/// Starts `n` processes and `n` threads running [`f`] (CPython's
/// workers: a process and a thread per round).
fn start_workers(
    n: usize,
    cond: &Condition,
    sleeping: &Semaphore,
    woken: &Semaphore,
    timeout_ms: Option<u64>,
) -> (Vec<Process<()>>, Vec<std::thread::JoinHandle<()>>) {
    let args = || (cond.clone(), sleeping.clone(), woken.clone(), timeout_ms);
    let procs = (0..n).map(|_| Process::spawn(f, args()).unwrap()).collect();
    let threads = (0..n)
        .map(|_| {
            let a = args();
            std::thread::spawn(move || f(a))
        })
        .collect();
    (procs, threads)
}

fn join_all(workers: (Vec<Process<()>>, Vec<std::thread::JoinHandle<()>>)) {
    for p in workers.0 {
        p.join().unwrap();
    }
    for t in workers.1 {
        t.join().unwrap();
    }
}

fn notify_under_lock(cond: &Condition, n: u32) {
    let _g = cond.lock().unwrap();
    cond.notify(n);
}

#[test]
fn test_notify() {
    let cond = Condition::new().unwrap();
    let sleeping = Semaphore::new(0).unwrap();
    let woken = Semaphore::new(0).unwrap();
    let workers = start_workers(1, &cond, &sleeping, &woken, None);

    // Wait for both to be sleeping.
    sleeping.acquire_timeout(LONG).unwrap();
    sleeping.acquire_timeout(LONG).unwrap();
    // No one has woken up.
    reaches_eventually(|| woken.value(), 0);

    notify_under_lock(&cond, 1);
    reaches_eventually(|| woken.value(), 1);

    notify_under_lock(&cond, 1);
    reaches_eventually(|| woken.value(), 2);

    join_all(workers);
}

#[test]
fn test_notify_all() {
    let cond = Condition::new().unwrap();
    let sleeping = Semaphore::new(0).unwrap();
    let woken = Semaphore::new(0).unwrap();

    // Workers that time out.
    let first = start_workers(3, &cond, &sleeping, &woken, Some(100));
    for _ in 0..6 {
        sleeping.acquire_timeout(LONG).unwrap();
    }
    for _ in 0..6 {
        woken.acquire_timeout(LONG).unwrap();
    }
    assert_eq!(woken.value(), 0);

    // Workers that wait until notified.
    let second = start_workers(3, &cond, &sleeping, &woken, None);
    for _ in 0..6 {
        sleeping.acquire_timeout(LONG).unwrap();
    }
    sleep(TIMEOUT1);
    assert_eq!(woken.value(), 0);

    {
        let _g = cond.lock().unwrap();
        cond.notify_all();
    }
    for _ in 0..6 {
        woken.acquire_timeout(LONG).unwrap();
    }
    assert_eq!(woken.value(), 0);
    join_all(first);
    join_all(second);
}

#[test]
fn test_notify_n() {
    let cond = Condition::new().unwrap();
    let sleeping = Semaphore::new(0).unwrap();
    let woken = Semaphore::new(0).unwrap();
    let workers = start_workers(3, &cond, &sleeping, &woken, None);
    for _ in 0..6 {
        sleeping.acquire_timeout(LONG).unwrap();
    }
    sleep(TIMEOUT1);
    assert_eq!(woken.value(), 0);

    notify_under_lock(&cond, 2);
    reaches_eventually(|| woken.value(), 2);

    notify_under_lock(&cond, 4);
    reaches_eventually(|| woken.value(), 6);

    // Doesn't do anything more.
    notify_under_lock(&cond, 3);
    sleep(TIMEOUT1);
    assert_eq!(woken.value(), 6);
    join_all(workers);
}

#[test]
fn test_timeout() {
    let cond = Condition::new().unwrap();
    let mut g = cond.lock().unwrap();
    let (res, elapsed) = timed(|| cond.wait_timeout(&mut g, TIMEOUT_200));
    assert!(res.unwrap_err().is_timeout());
    assert!(elapsed >= TIMEOUT_200 - CLOCK_RES, "{elapsed:?}");
    drop(g);
}

/// `cond.wait_for(pred)` is a loop around `wait` here.
fn waitfor_child((cond, state): (Condition, SharedValue<i32>)) {
    let mut g = cond.lock().unwrap();
    state.set(0);
    cond.notify(1);
    while state.get() != 4 {
        cond.wait(&mut g).unwrap();
    }
    drop(g);
}

#[test]
fn test_waitfor() {
    let cond = Condition::new().unwrap();
    let state = SharedValue::new(-1i32).unwrap();
    let p = Process::spawn(waitfor_child, (cond.clone(), state.clone())).unwrap();
    {
        let mut g = cond.lock().unwrap();
        while state.get() != 0 {
            cond.wait_timeout(&mut g, LONG).unwrap();
        }
        assert_eq!(state.get(), 0);
    }
    for _ in 0..4 {
        sleep(Duration::from_millis(10));
        let _g = cond.lock().unwrap();
        state.set(state.get() + 1);
        cond.notify(1);
    }
    p.join().unwrap();
}

/// `wait_for(pred, timeout=0.1)`: a loop around `wait_timeout` with
/// one deadline. Reports whether it timed out, not early.
fn waitfor_timeout_child(
    (cond, state, success, sem): (Condition, SharedValue<i32>, SharedValue<u8>, Semaphore),
) {
    sem.release().unwrap();
    let mut g = cond.lock().unwrap();
    let expected = Duration::from_millis(100);
    let start = Instant::now();
    let deadline = start + expected;
    let mut result = state.get() == 4;
    while !result {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match cond.wait_timeout(&mut g, left) {
            Ok(()) => result = state.get() == 4,
            Err(e) if e.is_timeout() => result = state.get() == 4,
            Err(e) => panic!("{e}"),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    let dt = start.elapsed();
    if !result && dt + CLOCK_RES >= expected {
        success.set(1);
    }
    drop(g);
}

#[test]
fn test_waitfor_timeout() {
    let cond = Condition::new().unwrap();
    let state = SharedValue::new(0i32).unwrap();
    let success = SharedValue::new(0u8).unwrap();
    let sem = Semaphore::new(0).unwrap();
    let p = Process::spawn(
        waitfor_timeout_child,
        (cond.clone(), state.clone(), success.clone(), sem.clone()),
    )
    .unwrap();
    sem.acquire_timeout(LONG).unwrap();
    // Only 3 increments: state == 4 is never reached.
    for _ in 0..3 {
        sleep(Duration::from_millis(10));
        let _g = cond.lock().unwrap();
        state.set(state.get() + 1);
        cond.notify(1);
    }
    p.join().unwrap();
    assert_eq!(success.get(), 1);
}

fn notify_once(c: Condition) {
    let _g = c.lock().unwrap();
    c.notify(1);
}

/// The `KeyboardInterrupt` half (SIGINT to the waiting parent) is not
/// ported.
#[test]
fn test_wait_result() {
    let c = Condition::new().unwrap();
    let mut g = c.lock().unwrap();
    assert!(c
        .wait_timeout(&mut g, Duration::ZERO)
        .unwrap_err()
        .is_timeout());
    assert!(c.wait_timeout(&mut g, TIMEOUT1).unwrap_err().is_timeout());
    let p = Process::spawn(notify_once, c.clone()).unwrap();
    c.wait_timeout(&mut g, LONG).unwrap();
    drop(g);
    p.join().unwrap();
}
