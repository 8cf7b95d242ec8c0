//! CPython's `_TestQueue`.

use super::*;

fn drain((q, n, child_can_start, parent_can_continue): (Queue<u8>, usize, Event, Event)) {
    child_can_start.wait_timeout(LONG).unwrap();
    for _ in 0..n {
        q.get_timeout(LONG).unwrap();
    }
    parent_can_continue.set();
}

/// Python's `Queue(maxsize=6)` counts items; a queue here is bounded
/// in bytes, so it is filled until full and the child drains what fit.
#[test]
fn test_put() {
    let q = Queue::<u8>::with_capacity(256).unwrap();
    assert!(q.is_empty());
    assert!(!q.is_full());
    let mut n = 0;
    while q.try_put(&(n as u8 % 100)).unwrap() {
        n += 1;
    }
    assert!(n >= 6, "only {n} one-byte items fit");
    let child_can_start = Event::new().unwrap();
    let parent_can_continue = Event::new().unwrap();
    let p = Process::spawn(
        drain,
        (
            q.clone(),
            n,
            child_can_start.clone(),
            parent_can_continue.clone(),
        ),
    )
    .unwrap();

    assert!(!q.is_empty());
    assert!(q.is_full());
    assert!(!q.try_put(&7).unwrap()); // put(7, False)
    assert!(!q.try_put(&7).unwrap()); // put_nowait(7)
    let (res, elapsed) = timed(|| q.put_timeout(&7, TIMEOUT_200));
    assert!(res.unwrap_err().is_timeout());
    assert!(elapsed >= TIMEOUT_200 - CLOCK_RES, "{elapsed:?}");
    assert_eq!(q.len(), n);

    child_can_start.set();
    parent_can_continue.wait_timeout(LONG).unwrap();
    assert!(q.is_empty());
    assert!(!q.is_full());
    p.join().unwrap();
}

fn put_four((q, child_can_start, parent_can_continue): (Queue<u32>, Event, Event)) {
    child_can_start.wait_timeout(LONG).unwrap();
    for i in 2..=5 {
        q.put(&i).unwrap();
    }
    parent_can_continue.set();
}

#[test]
fn test_get() {
    let q = Queue::<u32>::new().unwrap();
    let child_can_start = Event::new().unwrap();
    let parent_can_continue = Event::new().unwrap();
    let p = Process::spawn(
        put_four,
        (
            q.clone(),
            child_can_start.clone(),
            parent_can_continue.clone(),
        ),
    )
    .unwrap();
    assert!(q.is_empty());
    child_can_start.set();
    parent_can_continue.wait_timeout(LONG).unwrap();
    assert!(!q.is_empty());

    assert_eq!(q.get().unwrap(), 2);
    assert_eq!(q.get().unwrap(), 3);
    assert_eq!(q.get_timeout(Duration::from_secs(1)).unwrap(), 4);
    assert_eq!(q.try_get().unwrap(), Some(5));
    assert!(q.is_empty());

    assert_eq!(q.try_get().unwrap(), None); // get(False), get_nowait()
    let (res, elapsed) = timed(|| q.get_timeout(TIMEOUT_200));
    assert!(res.unwrap_err().is_timeout());
    assert!(elapsed >= TIMEOUT_200 - CLOCK_RES, "{elapsed:?}");
    p.join().unwrap();
}

fn put_ten_more(q: Queue<u32>) {
    for i in 10..20 {
        q.put(&i).unwrap();
    }
}

#[test]
fn test_fork() {
    let q = Queue::<u32>::new().unwrap();
    for i in 0..10 {
        q.put(&i).unwrap();
    }
    let p = Process::spawn(put_ten_more, q.clone()).unwrap();
    for i in 0..20 {
        assert_eq!(q.get_timeout(LONG).unwrap(), i);
    }
    assert_eq!(q.try_get().unwrap(), None);
    p.join().unwrap();
}

#[test]
fn test_qsize() {
    let q = Queue::<i32>::new().unwrap();
    assert_eq!(q.len(), 0);
    q.put(&1).unwrap();
    assert_eq!(q.len(), 1);
    q.put(&5).unwrap();
    assert_eq!(q.len(), 2);
    q.get().unwrap();
    assert_eq!(q.len(), 1);
    q.get().unwrap();
    assert_eq!(q.len(), 0);
}

fn task_done_worker(q: JoinableQueue<Option<u32>>) {
    while q.get_timeout(LONG).unwrap().is_some() {
        sleep(TIMEOUT1);
        q.task_done().unwrap();
    }
}

#[test]
fn test_task_done() {
    let q = JoinableQueue::<Option<u32>>::new().unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| Process::spawn(task_done_worker, q.clone()).unwrap())
        .collect();
    for i in 0..10 {
        q.put(&Some(i)).unwrap();
    }
    q.join_timeout(LONG).unwrap();
    for _ in &workers {
        q.put(&None).unwrap();
    }
    for p in workers {
        p.join().unwrap();
    }
}

#[test]
fn test_timeout() {
    let q = Queue::<u8>::new().unwrap();
    let (res, elapsed) = timed(|| q.get_timeout(TIMEOUT_200));
    assert!(res.unwrap_err().is_timeout());
    assert!(elapsed >= TIMEOUT_200 - CLOCK_RES, "{elapsed:?}");
}

/// An item that cannot be serialised fails its own `put` (Python
/// prints the feeder thread's error) and the queue goes on working.
#[test]
fn test_queue_feeder_donot_stop_onexc() {
    let q = Queue::<Item>::new().unwrap();
    let err = q.put(&Item::NotSerializable).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    q.put(&Item::Good(true)).unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), Item::Good(true));

    // bpo-33078: the size stays right after the error.
    let q = Queue::<Item>::with_capacity(64).unwrap();
    assert!(q.put(&Item::NotSerializable).is_err());
    q.put(&Item::Good(true)).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q.get_timeout(LONG).unwrap(), Item::Good(true));
    assert!(q.is_empty());
}

/// The first half only: `empty()` on a closed, unused queue is `true`.
/// (Python raises on `empty()` of a closed queue that was used;
/// `is_empty` here answers a `bool`.)
#[test]
fn test_closed_queue_empty_exceptions() {
    let q = Queue::<String>::new().unwrap();
    q.close();
    assert!(q.is_empty());
    let q = JoinableQueue::<String>::new().unwrap();
    q.close();
    assert!(q.is_empty());
}

#[test]
fn test_closed_queue_put_get_exceptions() {
    let q = Queue::<String>::new().unwrap();
    q.close();
    let err = q.put(&"foo".to_string()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    assert!(err.to_string().contains("closed"), "{err}");
    let err = q.get().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    assert!(err.to_string().contains("closed"), "{err}");

    let q = JoinableQueue::<String>::new().unwrap();
    q.close();
    let err = q.put(&"foo".to_string()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    assert!(err.to_string().contains("closed"), "{err}");
    let err = q.get().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    assert!(err.to_string().contains("closed"), "{err}");
}
