//! CPython's `_TestPool`.

use super::*;

#[test]
fn test_apply() {
    assert_eq!(pool().apply(sqr, 5).unwrap(), sqr(5));
    assert_eq!(pool().apply(sqr, 3).unwrap(), sqr(3));
}

/// The `chunksize=20` half uses a pool built with that chunk size (no
/// per-call chunk size here).
#[test]
fn test_map() {
    let want: Vec<i64> = (0..10).map(sqr).collect();
    assert_eq!(pool().map(sqr, 0..10).unwrap(), want);
    let chunked = Pool::builder().processes(2).chunksize(20).build().unwrap();
    let want: Vec<i64> = (0..100).map(sqr).collect();
    assert_eq!(chunked.map(sqr, 0..100).unwrap(), want);
}

#[test]
fn test_starmap() {
    let tuples: Vec<(i64, i64)> = (0..10).zip((0..10).rev()).collect();
    let want: Vec<i64> = tuples.iter().map(|&t| mul(t)).collect();
    assert_eq!(pool().starmap(mul, tuples).unwrap(), want);
    let tuples: Vec<(i64, i64)> = (0..100).zip((0..100).rev()).collect();
    let want: Vec<i64> = tuples.iter().map(|&t| mul(t)).collect();
    assert_eq!(pool().starmap(mul, tuples).unwrap(), want);
}

#[test]
fn test_map_async() {
    let want: Vec<i64> = (0..10).map(sqr).collect();
    assert_eq!(pool().map_async(sqr, 0..10).unwrap().get().unwrap(), want);
}

fn identity_item(x: Item) -> Item {
    x
}

/// Issue #19425: an item that cannot be serialised fails the call, and
/// does not hang it.
#[test]
fn test_map_unplicklable() {
    let items = vec![Item::NotSerializable; 10];
    let err = common::watchdog(LONG, move || pool().map(identity_item, items).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
}

#[test]
fn test_map_chunksize() {
    let mut r = pool().map_async(sqr, Vec::<i64>::new()).unwrap();
    // CPython allows TIMEOUT1; generous here (the point: no stall).
    assert_eq!(r.get_timeout(Duration::from_secs(10)).unwrap(), []);
}

/// CPython's `exception_throwing_generator(total, when)`: the error is a
/// panic in the input iterator.
fn throwing(total: i64, when: i64) -> impl Iterator<Item = i64> + Send + 'static {
    (0..total.max(1)).inspect(move |&i| {
        if when == -1 || i == when {
            panic!("Somebody said when");
        }
    })
}

fn assert_said_when(err: &multiproc::Error) {
    assert!(err.is_panic(), "{err}");
    assert!(
        err.panic_info()
            .unwrap()
            .message()
            .contains("Somebody said when"),
        "{err}"
    );
}

/// `SpecialIterable`: fails at its first `next`, says its length is 1.
struct Special;
impl Iterator for Special {
    type Item = i64;
    fn next(&mut self) -> Option<i64> {
        panic!("Somebody said when")
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (1, Some(1))
    }
}

/// `map(f, items)` where pulling from `items` panics: the panic comes
/// out of `map` in the caller (as Python's `map` raises the iterable's
/// exception), or an `Err` that carries it; either way the pool works
/// on.
fn map_says_when<I>(items: I)
where
    I: IntoIterator<Item = i64>,
{
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool().map(sqr, items)));
    match out {
        Ok(res) => assert_said_when(&res.unwrap_err()),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            assert!(msg.contains("Somebody said when"), "{msg}");
        }
    }
}

#[test]
fn test_map_handle_iterable_exception() {
    map_says_when(throwing(1, -1));
    // Again: it is re-entrant.
    map_says_when(throwing(1, -1));
    map_says_when(throwing(10, 3));
    map_says_when(Special);
    map_says_when(Special);
    assert_eq!(pool().map(sqr, 0..3).unwrap(), [0, 1, 4]);
}

#[test]
fn test_async() {
    let r = pool().apply_async(sqr_wait, (7, 100)).unwrap();
    assert_eq!(r.get().unwrap(), 49);
}

fn sqr_event((x, event): (i64, Event)) -> i64 {
    event.wait_timeout(LONG).unwrap();
    x * x
}

#[test]
fn test_async_timeout() {
    // CPython's task sleeps past the timeout; here it waits for an
    // event, so the worker is free again at the end.
    let event = Event::new().unwrap();
    let mut r = pool().apply_async(sqr_event, (6, event.clone())).unwrap();
    let (res, elapsed) = timed(|| r.get_timeout(TIMEOUT_200));
    assert!(res.unwrap_err().is_timeout());
    assert!(elapsed >= TIMEOUT_200 - CLOCK_RES, "{elapsed:?}");
    event.set();
    assert_eq!(r.get_timeout(LONG).unwrap(), 36);
}

#[test]
fn test_imap() {
    let want: Vec<i64> = (0..10).map(sqr).collect();
    let got: multiproc::Result<Vec<i64>> = pool().imap(sqr, 0..10).unwrap().collect();
    assert_eq!(got.unwrap(), want);

    let mut it = pool().imap(sqr, 0..10).unwrap();
    for i in 0..10 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    assert!(it.next().is_none()); // StopIteration

    let chunked = Pool::builder().processes(2).chunksize(100).build().unwrap();
    let mut it = chunked.imap(sqr, 0..1000).unwrap();
    for i in 0..1000 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    assert!(it.next().is_none());
}

/// The chunksize-1 cases. (With chunks of 2 or 4, CPython fails the
/// whole chunk that holds the bad input, so fewer good results come
/// first; here every result before the bad input comes.)
#[test]
fn test_imap_handle_iterable_exception() {
    let p = pool();
    let mut it = p.imap(sqr, throwing(1, -1)).unwrap();
    assert_said_when(&it.next().unwrap().unwrap_err());
    let mut it = p.imap(sqr, throwing(1, -1)).unwrap();
    assert_said_when(&it.next().unwrap().unwrap_err());

    let mut it = p.imap(sqr, throwing(10, 3)).unwrap();
    for i in 0..3 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    assert_said_when(&it.next().unwrap().unwrap_err());
}

#[test]
fn test_imap_unordered() {
    let mut got: Vec<i64> = pool()
        .imap_unordered(sqr, 0..10)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..10).map(sqr).collect::<Vec<_>>());

    let chunked = Pool::builder().processes(2).chunksize(100).build().unwrap();
    let mut got: Vec<i64> = chunked
        .imap_unordered(sqr, 0..1000)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..1000).map(sqr).collect::<Vec<_>>());
}

/// Pulls from `it` until an error: every value before it is expected
/// (and taken off `expected`); the error is the iterator's.
fn until_said_when(it: multiproc::IMap<i64>, mut expected: Vec<i64>) {
    for r in it {
        match r {
            Ok(v) => {
                let at = expected.iter().position(|&e| e == v);
                expected.remove(at.unwrap_or_else(|| panic!("unexpected {v}")));
            }
            Err(e) => return assert_said_when(&e),
        }
    }
    panic!("no error came");
}

#[test]
fn test_imap_unordered_handle_iterable_exception() {
    let p = pool();
    let mut it = p.imap_unordered(sqr, throwing(1, -1)).unwrap();
    assert_said_when(&it.next().unwrap().unwrap_err());
    let mut it = p.imap_unordered(sqr, throwing(1, -1)).unwrap();
    assert_said_when(&it.next().unwrap().unwrap_err());

    let expected: Vec<i64> = (0..10).map(sqr).collect();
    until_said_when(p.imap_unordered(sqr, throwing(10, 3)).unwrap(), expected);
    let chunked = Pool::builder().processes(2).chunksize(2).build().unwrap();
    let expected: Vec<i64> = (0..20).map(sqr).collect();
    until_said_when(
        chunked.imap_unordered(sqr, throwing(20, 7)).unwrap(),
        expected,
    );
}

#[test]
fn test_make_pool() {
    // Pool(-1) cannot be written; Pool(0) is refused.
    let err = Pool::new(0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    let p = Pool::new(3).unwrap();
    assert_eq!(p.pids().len(), 3);
    p.close();
    p.join().unwrap();
}

#[test]
fn test_terminate() {
    common::watchdog(LONG, || {
        let p = Pool::builder().processes(3).chunksize(1).build().unwrap();
        let args = vec![(0i64, 60_000u64); 10_000];
        let _result = p.map_async(sqr_wait, args).unwrap();
        sleep(TIMEOUT_200); // give some tasks a chance to start
        p.terminate();
        p.join().unwrap();
    });
}

#[test]
fn test_empty_iterable() {
    let p = Pool::new(1).unwrap();
    assert_eq!(p.map(sqr, Vec::<i64>::new()).unwrap(), []);
    assert_eq!(p.imap(sqr, Vec::<i64>::new()).unwrap().count(), 0);
    assert_eq!(p.imap_unordered(sqr, Vec::<i64>::new()).unwrap().count(), 0);
    assert_eq!(
        p.map_async(sqr, Vec::<i64>::new()).unwrap().get().unwrap(),
        []
    );
    p.close();
    p.join().unwrap();
}

/// `with Pool(2) as p:` ends in `terminate()`; the pool refuses work
/// afterwards.
#[test]
fn test_context() {
    let expected: Vec<i64> = (0..10).map(sqr).collect();
    let p = Pool::new(2).unwrap();
    assert_eq!(p.map_async(sqr, 0..10).unwrap().get().unwrap(), expected);
    p.terminate();
    p.join().unwrap();
    let err = p.map_async(sqr, 0..10).map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
}

fn raise_123(_: ()) {
    panic!("RuntimeError(123)"); // some comment
}

/// The child's "traceback": the panic's message and its location in
/// this file.
#[test]
fn test_traceback() {
    let p = Pool::new(1).unwrap();
    let err = p.apply(raise_123, ()).unwrap_err();
    assert!(err.is_panic(), "{err}");
    let info = err.panic_info().unwrap();
    assert_eq!(info.message(), "RuntimeError(123)");
    let loc = info.location().unwrap();
    assert!(loc.starts_with("tests/cpython/test_pool.rs:"), "{loc}");
    assert!(err.to_string().contains("RuntimeError(123)"), "{err}");
}

fn raise_foo(_: ()) {
    panic!("foo");
}

#[test]
fn test_wrapped_exception() {
    let p = Pool::new(1).unwrap();
    let err = p.apply(raise_foo, ()).unwrap_err();
    assert!(err.is_panic(), "{err}");
    assert_eq!(err.panic_info().unwrap().message(), "foo");
}

fn raise_large_valueerror(ms: u64) {
    sleep(Duration::from_millis(ms));
    // A panic without the panic hook, so the 1 MiB message is not
    // printed on stderr.
    std::panic::resume_unwind(Box::new("x".repeat(1024 * 1024)));
}

/// Issue #23992: a failing map with a large error, then close and join,
/// must not deadlock.
#[test]
fn test_map_no_failfast() {
    common::watchdog(LONG, || {
        let p = Pool::new(2).unwrap();
        let err = p.map(raise_large_valueerror, [0, 1]).unwrap_err();
        assert!(err.is_panic(), "{err}");
        sleep(Duration::from_millis(500));
        p.close();
        p.join().unwrap();
    });
}
