//! CPython's `_TestQueue`.

use super::*;

fn drain_six((q, child_can_start, parent_can_continue): (Queue<i32>, Event, Event)) {
    child_can_start.wait_timeout(LONG).unwrap();
    for _ in 0..6 {
        q.get_timeout(LONG).unwrap();
    }
    parent_can_continue.set();
}

/// CPython's `queue_full(q, maxsize)`: `q.full()`.
fn queue_full<T: Serialize + serde::de::DeserializeOwned + 'static>(q: &Queue<T>) -> bool {
    q.is_full()
}

#[test]
fn test_put() {
    const MAXSIZE: usize = 6;
    let q = Queue::<i32>::with_maxsize(MAXSIZE).unwrap();
    let child_can_start = Event::new().unwrap();
    let parent_can_continue = Event::new().unwrap();
    let p = Process::spawn(
        drain_six,
        (
            q.clone(),
            child_can_start.clone(),
            parent_can_continue.clone(),
        ),
    )
    .unwrap();

    assert!(q.is_empty());
    assert!(!queue_full(&q));

    q.put(&1).unwrap();
    q.put(&2).unwrap(); // put(2, True)
    q.put(&3).unwrap(); // put(3, True, None)
    assert!(q.try_put(&4).unwrap()); // put(4, False)
    assert!(q.try_put(&5).unwrap()); // put(5, False, None)
    assert!(q.try_put(&6).unwrap()); // put_nowait(6)

    assert!(!q.is_empty());
    assert_eq!(q.len(), MAXSIZE);
    // `queue_full(queue, MAXSIZE)` is True here: `test_put_full`.

    assert!(!q.try_put(&7).unwrap()); // put(7, False)
    assert!(!q.try_put(&7).unwrap()); // put(7, False, None)
    assert!(!q.try_put(&7).unwrap()); // put_nowait(7)
    assert!(q.put_timeout(&7, TIMEOUT1).unwrap_err().is_timeout()); // put(7, True, TIMEOUT1)
    assert!(!q.try_put(&7).unwrap()); // put(7, False, TIMEOUT2)
    let (res, elapsed) = timed(|| q.put_timeout(&7, TIMEOUT_200)); // put(7, True, timeout=TIMEOUT3)
    assert!(res.unwrap_err().is_timeout());
    assert!(elapsed >= TIMEOUT_200 - CLOCK_RES, "{elapsed:?}");
    assert_eq!(q.len(), MAXSIZE);

    child_can_start.set();
    parent_can_continue.wait_timeout(LONG).unwrap();

    assert!(q.is_empty());
    assert!(!queue_full(&q));
    p.join().unwrap();
}

/// The `queue_full(queue, MAXSIZE) == True` line of CPython's
/// `test_put`, on its own.
#[test]
fn test_put_full() {
    const MAXSIZE: usize = 6;
    let q = Queue::<i32>::with_maxsize(MAXSIZE).unwrap();
    for i in 1..=6 {
        q.put(&i).unwrap();
    }
    assert!(!q.try_put(&7).unwrap());
    assert!(queue_full(&q));
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

    // bpo-33078: the size stays right after the error (`Queue(maxsize=1)`:
    // the failed put must not keep the one place).
    let q = Queue::<Item>::with_maxsize(1).unwrap();
    assert!(q.put(&Item::NotSerializable).is_err());
    q.put_timeout(&Item::Good(true), LONG).unwrap();
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

// --------------------------------------------------- shutdown (3.13)

/// What the shutdown tests do with a `Queue` or a `JoinableQueue`
/// (CPython loops over both).
trait AnyQueue: Clone + Serialize + serde::de::DeserializeOwned + Send + 'static {
    fn queue(&self) -> &Queue<String>;
    fn joinable(&self) -> Option<&JoinableQueue<String>>;
    /// `put` (a `JoinableQueue` counts a task).
    fn put_item(&self, item: &str) -> multiproc::Result<()>;
    /// `put_nowait`.
    fn try_put_item(&self, item: &str) -> multiproc::Result<bool>;
}

impl AnyQueue for Queue<String> {
    fn queue(&self) -> &Queue<String> {
        self
    }
    fn joinable(&self) -> Option<&JoinableQueue<String>> {
        None
    }
    fn put_item(&self, item: &str) -> multiproc::Result<()> {
        self.put(&item.to_string())
    }
    fn try_put_item(&self, item: &str) -> multiproc::Result<bool> {
        self.try_put(&item.to_string())
    }
}

impl AnyQueue for JoinableQueue<String> {
    fn queue(&self) -> &Queue<String> {
        self
    }
    fn joinable(&self) -> Option<&JoinableQueue<String>> {
        Some(self)
    }
    fn put_item(&self, item: &str) -> multiproc::Result<()> {
        self.put(&item.to_string())
    }
    fn try_put_item(&self, item: &str) -> multiproc::Result<bool> {
        self.try_put(&item.to_string())
    }
}

/// CPython's `ProcessFuture.run(f, args)`: runs `f` in a child and hands
/// back its outcome (an error comes back as its kind, as Python's
/// `ProcessFuture` sends the exception back).
fn run_in_child<F, A, R>(f: F, args: A) -> R
where
    F: Fn(A) -> R + 'static,
    A: Serialize + serde::de::DeserializeOwned + Send + 'static,
    R: Serialize + serde::de::DeserializeOwned + 'static,
{
    Process::spawn(f, args).unwrap().join().unwrap()
}

fn put_data<Q: AnyQueue>(q: Q) -> Result<(), ErrorKind> {
    q.put_item("data").map_err(|e| e.kind())
}

/// `q.get` (bounded by `LONG` so a regression fails instead of hanging).
fn get_data<Q: AnyQueue>(q: Q) -> Result<String, ErrorKind> {
    q.queue().get_timeout(LONG).map_err(|e| e.kind())
}

/// CPython's `_join_worker`.
fn join_worker(q: JoinableQueue<String>) -> Result<(), ErrorKind> {
    q.join_timeout(LONG).map_err(|e| e.kind())
}

/// CPython's `_wait()`: a short pause for what the other processes do.
fn short_wait() {
    sleep(Duration::from_millis(10));
}

/// `ProcessFuture.start(_join_worker, (q,))` for a `JoinableQueue`.
fn start_join_worker<Q: AnyQueue>(q: &Q) -> Option<Process<Result<(), ErrorKind>>> {
    q.joinable()
        .map(|jq| Process::spawn(join_worker, jq.clone()).unwrap())
}

/// `self.assertFalse(join.process.is_alive()); join.result()`.
fn assert_join_ends(join: Process<Result<(), ErrorKind>>) {
    reaches_eventually(|| join.is_alive(), false);
    assert_eq!(join.join().unwrap(), Ok(()));
}

/// The four `assertRaisesShutdown` checks every shutdown test ends with:
/// `put` in a child, `put_nowait`, `get` in a child, `get_nowait`.
fn assert_raises_shutdown<Q: AnyQueue>(q: &Q) {
    assert_eq!(
        run_in_child(put_data::<Q>, q.clone()),
        Err(ErrorKind::ShutDown)
    );
    let err = q.try_put_item("data").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShutDown, "{err}");
    assert_eq!(
        run_in_child(get_data::<Q>, q.clone()),
        Err(ErrorKind::ShutDown)
    );
    let err = q.queue().try_get().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShutDown, "{err}");
}

fn check_shutdown_empty<Q: AnyQueue>(q: Q) {
    let join = start_join_worker(&q);
    q.queue().shutdown(false).unwrap(); // [joinable] unfinished tasks: 0 -> 0
    short_wait();
    assert!(q.queue().is_shutdown());
    assert_eq!(q.queue().len(), 0);
    if let Some(join) = join {
        assert_join_ends(join);
    }
    assert_raises_shutdown(&q);
}

#[test]
fn test_shutdown_empty() {
    check_shutdown_empty(Queue::<String>::new().unwrap());
    check_shutdown_empty(JoinableQueue::<String>::new().unwrap());
}

fn check_shutdown_nonempty<Q: AnyQueue>(q: Q) {
    q.put_item("data").unwrap();
    let join = start_join_worker(&q);
    q.queue().shutdown(false).unwrap(); // [joinable] unfinished tasks: 1 -> 1
    short_wait();
    assert_eq!(q.queue().len(), 1);
    assert_eq!(
        run_in_child(get_data::<Q>, q.clone()),
        Ok("data".to_string())
    );
    if let Some(join) = &join {
        assert!(join.is_alive());
    }
    assert_raises_shutdown(&q);
    if let Some(jq) = q.joinable() {
        jq.task_done().unwrap();
    }
    if let Some(join) = join {
        assert_join_ends(join);
    }
}

#[test]
fn test_shutdown_nonempty() {
    check_shutdown_nonempty(Queue::<String>::with_maxsize(1).unwrap());
    check_shutdown_nonempty(JoinableQueue::<String>::with_maxsize(1).unwrap());
}

fn check_shutdown_immediate<Q: AnyQueue>(q: Q) {
    q.put_item("data").unwrap();
    let join = start_join_worker(&q);
    q.queue().shutdown(true).unwrap();
    short_wait();
    assert_eq!(q.queue().len(), 0);
    if let Some(join) = join {
        assert_join_ends(join);
    }
    assert_raises_shutdown(&q);
    if let Some(jq) = q.joinable() {
        // ValueError: the dropped item was counted done.
        let err = jq.task_done().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    }
}

#[test]
fn test_shutdown_immediate() {
    check_shutdown_immediate(Queue::<String>::new().unwrap());
    check_shutdown_immediate(JoinableQueue::<String>::new().unwrap());
}

#[test]
fn test_shutdown_immediate_with_unfinished() {
    let q = JoinableQueue::<String>::new().unwrap();
    q.put(&"data".to_string()).unwrap();
    q.put(&"data".to_string()).unwrap();
    let join = Process::spawn(join_worker, q.clone()).unwrap();
    assert_eq!(
        run_in_child(get_data::<JoinableQueue<String>>, q.clone()),
        Ok("data".to_string())
    );
    q.shutdown(true).unwrap();
    short_wait();
    assert_eq!(q.len(), 0);
    // The task taken by the child is still unfinished.
    assert!(join.is_alive());
    assert_raises_shutdown(&q);
    q.task_done().unwrap();
    let err = q.task_done().unwrap_err(); // ValueError
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    assert_join_ends(join);
}
