//! CPython's `TestWait`.

use super::*;

fn child_test_wait((w, slow): (Connection, bool)) {
    // A cheap pseudo-random pause (CPython: random() * 0.1 s).
    let mut x = u64::from(std::process::id()) | 1;
    for i in 0..10u32 {
        if slow {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sleep(Duration::from_millis(x % 100));
        }
        w.send(&(i, std::process::id())).unwrap();
    }
}

fn check_wait(slow: bool) {
    let mut readers = Vec::new();
    let mut procs = Vec::new();
    for _ in 0..4 {
        let (r, w) = pipe(false).unwrap();
        procs.push(Process::spawn(child_test_wait, (w, slow)).unwrap());
        readers.push(r);
    }
    let mut messages = Vec::new();
    let deadline = Instant::now() + LONG;
    while !readers.is_empty() {
        assert!(Instant::now() < deadline, "readers left: {}", readers.len());
        let refs: Vec<&dyn multiproc::Waitable> = readers
            .iter()
            .map(|r| r as &dyn multiproc::Waitable)
            .collect();
        let mut ready = multiproc::wait(&refs, Some(LONG));
        ready.sort_unstable();
        for i in ready.into_iter().rev() {
            match readers[i].recv::<(u32, u32)>() {
                Ok(msg) => messages.push(msg),
                Err(e) => {
                    // EOFError: the writer is gone.
                    assert!(
                        matches!(e.kind(), ErrorKind::Disconnected | ErrorKind::PeerDied),
                        "{e}"
                    );
                    readers.remove(i);
                }
            }
        }
    }
    messages.sort_unstable();
    let mut expected: Vec<(u32, u32)> = procs
        .iter()
        .flat_map(|p| (0..10).map(move |i| (i, p.pid())))
        .collect();
    expected.sort_unstable();
    assert_eq!(messages, expected);
    for p in procs {
        p.join().unwrap();
    }
}

#[test]
fn test_wait() {
    check_wait(false);
}

#[test]
fn test_wait_slow() {
    check_wait(true);
}

/// CPython waits 5 s; 1 s here.
#[test]
fn test_wait_timeout() {
    let timeout = Duration::from_secs(1);
    let (a, b) = pipe(true).unwrap();
    let (res, delta) = timed(|| multiproc::wait(&[&a, &b], Some(timeout)));
    assert!(res.is_empty());
    assert!(delta + CLOCK_RES > timeout, "{delta:?}");
    b.send(&()).unwrap();
    assert_eq!(
        multiproc::wait(&[&a, &b], Some(Duration::from_secs(20))),
        [0]
    );
}

fn signal_and_sleep((sem, ms): (Semaphore, u64)) {
    sem.release().unwrap();
    sleep(Duration::from_millis(ms));
}

/// `p.sentinel` is the process itself. CPython's child sleeps 3 s; 1.5
/// s here, and the bounds are loose.
#[test]
fn test_wait_integer() {
    let expected = Duration::from_millis(1500);
    let sem = Semaphore::new(0).unwrap();
    let (a, b) = pipe(true).unwrap();
    let p = Process::spawn(signal_and_sleep, (sem.clone(), expected.as_millis() as u64)).unwrap();
    sem.acquire_timeout(Duration::from_secs(20)).unwrap();

    let (res, delta) =
        timed(|| multiproc::wait(&[&a, &p, &b], Some(expected + Duration::from_secs(20))));
    assert_eq!(res, [1]);
    assert!(delta + Duration::from_secs(1) > expected, "{delta:?}");
    assert!(delta < expected + Duration::from_secs(20), "{delta:?}");

    a.send(&()).unwrap();
    let res = multiproc::wait(&[&a, &p, &b], Some(Duration::from_secs(20)));
    assert_eq!(res, [1, 2]);

    b.send(&()).unwrap();
    let res = multiproc::wait(&[&a, &p, &b], Some(Duration::from_secs(20)));
    assert_eq!(res, [0, 1, 2]);

    p.terminate().unwrap();
    p.join().unwrap();
}

/// A negative timeout is zero here.
#[test]
fn test_neg_timeout() {
    let (a, _b) = pipe(true).unwrap();
    let (res, t) = timed(|| multiproc::wait(&[&a], Some(Duration::ZERO)));
    assert!(res.is_empty());
    assert!(t < Duration::from_secs(1), "{t:?}");
}
