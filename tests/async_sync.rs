//! The `*_async` calls of the primitives, queues, pipes and processes,
//! awaited under tokio (multi-thread and current-thread) and smol, with
//! the other side in a child process: a plain wake-up, a future dropped
//! while it waits (nothing lost, nothing held), a peer killed while a
//! future waits (the blocking call's error, no hang), and many futures on
//! one object.

use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use multiproc::{
    pipe, Barrier, BoundedSemaphore, Connection, ErrorKind, Event, JoinableQueue, Lock, Process,
    Queue, Semaphore,
};

multiproc::test_support!();
mod common;

/// Generous: the tests must pass beside CPU hogs on two cores.
const PATIENCE: Duration = Duration::from_secs(60);

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Runs `f`, aborting the whole test binary (with `what` on stderr) if it
/// has not returned within `PATIENCE` times three: a hang fails loudly.
fn watchdog<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let (done, finished) = mpsc::channel::<()>();
    let what = what.to_string();
    let dog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(PATIENCE * 3) {
            // Straight to fd 2: `eprintln!` in a test's thread is captured
            // by the harness, and lost with the abort (CI saw only
            // SIGABRT).
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "async_sync: {what} hung");
            std::process::abort();
        }
    });
    let r = f();
    drop(done);
    dog.join().unwrap();
    r
}

/// Runs `body()` to completion on each runtime: tokio multi-thread (as a
/// spawned task, so it is polled and woken on worker threads), tokio
/// current-thread, and smol.
fn on_each_runtime<F, Fut>(name: &str, body: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    watchdog(&format!("{name} (tokio multi-thread)"), || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let task = rt.spawn(body());
        rt.block_on(task).unwrap();
    });
    watchdog(&format!("{name} (tokio current-thread)"), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(body());
    });
    watchdog(&format!("{name} (smol)"), || smol::block_on(body()));
}

/// Polls `fut` once (it must be pending: its other side is held back) and
/// drops it: a future cancelled mid-wait.
fn poll_once_then_drop<F: Future>(fut: F) {
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(
        fut.as_mut().poll(&mut cx).is_pending(),
        "the future completed although its other side was held back"
    );
}

/// Number of the crate's async waiter threads alive in this process
/// (Linux: their names in /proc), `None` elsewhere.
fn async_waiter_threads() -> Option<usize> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim() == "multiproc-async")
            .count(),
    )
}

// ---------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------

fn set_after((e, ms): (Event, u64)) {
    nap(ms);
    e.set();
}

fn release_after((s, ms, n): (Semaphore, u64, u32)) {
    nap(ms);
    for _ in 0..n {
        s.release().unwrap();
    }
}

fn hold_lock_then_unlock((lock, held, ms): (Lock, Event, u64)) {
    let g = lock.lock().unwrap();
    held.set();
    nap(ms);
    drop(g);
}

fn hold_lock_forever((lock, held): (Lock, Event)) {
    let _g = lock.lock().unwrap();
    held.set();
    nap(600_000);
}

fn put_after((q, ms, items): (Queue<u32>, u64, Vec<u32>)) {
    nap(ms);
    for i in items {
        q.put(&i).unwrap();
    }
}

fn get_n((q, n): (Queue<u32>, u32)) -> Vec<u32> {
    (0..n).map(|_| q.get().unwrap()).collect()
}

fn echo_doubled(c: Connection) {
    while let Ok(v) = c.recv::<u32>() {
        if v == 0 {
            return;
        }
        c.send(&(v * 2)).unwrap();
    }
}

fn wait_barrier(b: Barrier) -> u32 {
    b.wait().unwrap()
}

/// Holds `held` (any handle) registered, says so, and dies abruptly.
fn hold_then_abort<T>((held, holding): (T, Event)) {
    let _keep = held;
    holding.set();
    nap(100);
    std::process::abort();
}

fn event_holder_aborts(a: (Event, Event)) {
    hold_then_abort(a)
}

fn semaphore_holder_aborts(a: (Semaphore, Event)) {
    hold_then_abort(a)
}

fn queue_holder_aborts(a: (Queue<u32>, Event)) {
    hold_then_abort(a)
}

fn connection_holder_aborts(a: (Connection, Event)) {
    hold_then_abort(a)
}

fn barrier_party_aborts(a: (Barrier, Event)) {
    hold_then_abort(a)
}

fn abort_after(ms: u64) {
    nap(ms);
    std::process::abort();
}

/// Awaits `go` and `lock` (so a waiter thread watches each) and returns.
fn await_then_return((go, lock): (Event, Lock)) {
    smol::block_on(async {
        go.wait_async().await.unwrap();
        drop(lock.lock_async().await.unwrap());
    });
}

fn square(x: u64) -> u64 {
    x * x
}

// ---------------------------------------------------------------------------
// Each type awaited, the other side in a child
// ---------------------------------------------------------------------------

#[test]
fn event_wait_async_resolves_when_a_child_sets_it() {
    on_each_runtime("event", || async {
        let e = Event::new().unwrap();
        let p = Process::spawn(set_after, (e.clone(), 50)).unwrap();
        e.wait_async().await.unwrap();
        assert!(e.is_set());
        p.join_async().await.unwrap();
    });
}

#[test]
fn semaphore_acquire_async_takes_a_permit_a_child_released() {
    on_each_runtime("semaphore", || async {
        let s = Semaphore::new(0).unwrap();
        let p = Process::spawn(release_after, (s.clone(), 50, 1)).unwrap();
        s.acquire_async().await.unwrap();
        assert_eq!(s.value(), 0);
        p.join_async().await.unwrap();

        let b = BoundedSemaphore::new(1).unwrap();
        b.acquire_async().await.unwrap();
        assert!(!b.try_acquire().unwrap());
        b.release().unwrap();
    });
}

#[test]
fn lock_async_waits_for_a_child_to_unlock_and_returns_a_guard() {
    on_each_runtime("lock", || async {
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let p = Process::spawn(hold_lock_then_unlock, (lock.clone(), held.clone(), 100)).unwrap();
        held.wait_async().await.unwrap();
        let guard = lock.lock_async().await.unwrap();
        assert!(
            lock.try_lock().unwrap().is_none(),
            "the guard holds the lock"
        );
        drop(guard);
        assert!(!lock.is_locked());
        p.join_async().await.unwrap();
    });
}

#[test]
fn queue_get_async_and_put_async_move_items_to_and_from_a_child() {
    on_each_runtime("queue", || async {
        let q = Queue::<u32>::new().unwrap();
        let p = Process::spawn(put_after, (q.clone(), 50, vec![1, 2, 3])).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(q.get_async().await.unwrap());
        }
        assert_eq!(got, [1, 2, 3]);
        p.join_async().await.unwrap();

        // A bounded queue: the third put waits for the child's get.
        let q = Queue::<u32>::with_maxsize(2).unwrap();
        q.put_async(&10).await.unwrap();
        q.put_async(&11).await.unwrap();
        let p = Process::spawn(get_n, (q.clone(), 3)).unwrap();
        q.put_async(&12).await.unwrap();
        assert_eq!(p.join_async().await.unwrap(), [10, 11, 12]);
    });
}

#[test]
fn joinable_queue_items_put_async_count_as_tasks() {
    on_each_runtime("joinable queue", || async {
        let q = JoinableQueue::<u32>::new().unwrap();
        q.put_async(&5).await.unwrap();
        assert_eq!(q.get_async().await.unwrap(), 5);
        assert!(q
            .join_timeout(Duration::from_millis(10))
            .unwrap_err()
            .is_timeout());
        q.task_done().unwrap();
        q.join_timeout(PATIENCE).unwrap();
    });
}

#[test]
fn connection_send_async_and_recv_async_talk_to_a_child() {
    on_each_runtime("connection", || async {
        let (here, there) = pipe(true).unwrap();
        let p = Process::spawn(echo_doubled, there).unwrap();
        for v in 1..=5u32 {
            here.send_async(&v).await.unwrap();
            assert_eq!(here.recv_async::<u32>().await.unwrap(), v * 2);
        }
        here.send_async(&0u32).await.unwrap();
        p.join_async().await.unwrap();
    });
}

#[test]
fn connection_send_async_takes_values_up_to_half_the_ring_and_refuses_larger() {
    on_each_runtime("connection size", || async {
        let (here, there) = pipe(true).unwrap();
        // 100 KiB goes in one frame (the ring is 256 KiB a direction)…
        let fits = vec![7u8; 100 << 10];
        here.send_async(&fits).await.unwrap();
        assert!(there.recv::<Vec<u8>>().unwrap() == fits);
        // …200 KiB would have to stream, which no single poll can do: a
        // clear error that names the way that works, and nothing sent.
        let big = vec![8u8; 200 << 10];
        let e = here.send_async(&big).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
        assert!(e.to_string().contains("use send"), "{e}");
        assert!(!there.poll(Duration::ZERO).unwrap(), "nothing was sent");
        here.send(&big).unwrap();
        assert!(there.recv::<Vec<u8>>().unwrap() == big);
    });
}

#[test]
fn barrier_wait_async_completes_a_round_with_a_child() {
    on_each_runtime("barrier", || async {
        let b = Barrier::new(2).unwrap();
        let p = Process::spawn(wait_barrier, b.clone()).unwrap();
        let mine = b.wait_async().await.unwrap();
        let theirs = p.join_async().await.unwrap();
        let mut both = [mine, theirs];
        both.sort_unstable();
        assert_eq!(both, [0, 1]);
    });
}

#[test]
fn process_join_async_returns_the_value_and_a_killed_child_is_process_died() {
    on_each_runtime("process", || async {
        let p = Process::spawn(square, 12).unwrap();
        assert_eq!(p.join_async().await.unwrap(), 144);

        // A child that dies by a signal while the future waits.
        let p = Process::spawn(abort_after, 100).unwrap();
        let err = p.join_async().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
    });
}

// ---------------------------------------------------------------------------
// Dropped while pending: nothing lost, nothing held
// ---------------------------------------------------------------------------

#[test]
fn a_dropped_get_async_takes_nothing_and_the_item_is_still_there() {
    let q = Queue::<u32>::new().unwrap();
    poll_once_then_drop(q.get_async());
    q.put(&9).unwrap();
    // Several dropped futures, some after their wake-up came.
    for _ in 0..3 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let q2 = Queue::<u32>::new().unwrap();
        rt.block_on(async {
            let r = tokio::time::timeout(Duration::from_millis(20), q2.get_async()).await;
            assert!(r.is_err(), "nothing was put");
        });
    }
    assert_eq!(q.get_timeout(PATIENCE).unwrap(), 9);
    assert_eq!(q.try_get().unwrap(), None);
}

#[test]
fn a_dropped_put_async_writes_nothing_and_keeps_no_place() {
    let q = Queue::<u32>::with_maxsize(1).unwrap();
    q.put(&1).unwrap();
    poll_once_then_drop(q.put_async(&2));
    assert_eq!(q.get().unwrap(), 1);
    // The dropped put reserved no place: one put fits, then the queue is full.
    q.put_timeout(&3, PATIENCE).unwrap();
    assert!(q
        .put_timeout(&4, Duration::from_millis(10))
        .unwrap_err()
        .is_timeout());
    assert_eq!(q.get().unwrap(), 3);
    assert_eq!(q.try_get().unwrap(), None);
}

#[test]
fn a_dropped_lock_async_never_holds_the_lock() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let p = Process::spawn(hold_lock_then_unlock, (lock.clone(), held.clone(), 300)).unwrap();
    held.wait_timeout(PATIENCE).unwrap();
    poll_once_then_drop(lock.lock_async());
    p.join().unwrap();
    // The child unlocked; the dropped future took nothing.
    assert!(!lock.is_locked());
    drop(lock.lock_timeout(PATIENCE).unwrap());
}

#[test]
fn a_dropped_acquire_async_takes_no_permit() {
    let s = Semaphore::new(0).unwrap();
    poll_once_then_drop(s.acquire_async());
    s.release().unwrap();
    assert_eq!(s.value(), 1);
    s.acquire_timeout(PATIENCE).unwrap();
    assert_eq!(s.value(), 0);
}

#[test]
fn a_dropped_event_wait_async_changes_nothing() {
    let e = Event::new().unwrap();
    poll_once_then_drop(e.wait_async());
    assert!(!e.is_set());
    let p = Process::spawn(set_after, (e.clone(), 10)).unwrap();
    e.wait_timeout(PATIENCE).unwrap();
    p.join().unwrap();
}

#[test]
fn a_dropped_recv_async_takes_nothing_and_the_message_is_still_there() {
    let (a, b) = pipe(true).unwrap();
    poll_once_then_drop(a.recv_async::<String>());
    b.send("kept").unwrap();
    assert_eq!(a.recv_timeout::<String>(PATIENCE).unwrap(), "kept");
}

#[test]
fn a_dropped_barrier_wait_async_breaks_the_barrier_until_reset() {
    let b = Barrier::new(2).unwrap();
    poll_once_then_drop(b.wait_async());
    assert!(
        b.broken(),
        "an arrived party left: the others would wait forever"
    );
    let err = b.wait_timeout(PATIENCE).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Broken, "{err}");
    b.reset();
    let other = b.clone();
    let t = std::thread::spawn(move || other.wait_timeout(PATIENCE).unwrap());
    let mine = b.wait_timeout(PATIENCE).unwrap();
    assert_eq!(mine + t.join().unwrap(), 1);
}

#[test]
fn a_dropped_join_async_detaches_the_child_which_still_runs_and_ends() {
    let q = Queue::<u32>::new().unwrap();
    let p = Process::spawn(put_after, (q.clone(), 200, vec![7])).unwrap();
    poll_once_then_drop(p.join_async());
    // The child was not killed by the drop: its item arrives.
    assert_eq!(q.get_timeout(PATIENCE).unwrap(), 7);
}

#[test]
fn waiter_threads_end_once_their_futures_are_gone() {
    let Some(_) = async_waiter_threads() else {
        return;
    };
    let events: Vec<Event> = (0..8).map(|_| Event::new().unwrap()).collect();
    for e in &events {
        poll_once_then_drop(e.wait_async());
    }
    // Other tests of this binary may run waiter threads of their own
    // meanwhile: wait for the count to fall to what they could hold.
    let ok = common::wait_for(PATIENCE, || async_waiter_threads().unwrap_or(0), |&n| n < 8);
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn a_child_that_awaited_and_returned_is_no_dead_peer() {
    // A waiter thread lingers a little after its last future; it must not
    // keep the child registered as a participant, or the child's normal
    // exit would read as an abrupt death to everyone else.
    let go = Event::new().unwrap();
    let lock = Lock::new().unwrap();
    let held = lock.lock().unwrap();
    let p = Process::spawn(await_then_return, (go.clone(), lock.clone())).unwrap();
    nap(100);
    go.set();
    nap(100);
    drop(held);
    p.join().unwrap();
    go.clear();
    let err = go.wait_timeout(Duration::from_millis(300)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    drop(lock.lock_timeout(PATIENCE).unwrap());
}

// ---------------------------------------------------------------------------
// The other side killed while a future waits
// ---------------------------------------------------------------------------

#[test]
fn a_killed_peer_ends_event_and_semaphore_waits_with_peer_died() {
    on_each_runtime("event peer died", || async {
        let e = Event::new().unwrap();
        let holding = Event::new().unwrap();
        let p = Process::spawn(event_holder_aborts, (e.clone(), holding.clone())).unwrap();
        let err = e.wait_async().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PeerDied, "{err}");
        // The blocking call says the same.
        assert_eq!(e.wait().unwrap_err().kind(), ErrorKind::PeerDied);
        let _ = p.join_async().await;

        let s = Semaphore::new(0).unwrap();
        let holding = Event::new().unwrap();
        let p = Process::spawn(semaphore_holder_aborts, (s.clone(), holding.clone())).unwrap();
        let err = s.acquire_async().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PeerDied, "{err}");
        assert_eq!(s.acquire().unwrap_err().kind(), ErrorKind::PeerDied);
        let _ = p.join_async().await;
    });
}

#[test]
fn a_killed_holder_ends_lock_async_with_owner_died_then_the_lock_works() {
    on_each_runtime("lock owner died", || async {
        let lock = Lock::new().unwrap();
        let held = Event::new().unwrap();
        let p = Process::spawn(hold_lock_forever, (lock.clone(), held.clone())).unwrap();
        let pid = p.pid();
        held.wait_async().await.unwrap();
        let killer = std::thread::spawn(move || {
            nap(100);
            p.kill().unwrap();
            p
        });
        let err = lock.lock_async().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OwnerDied, "{err}");
        assert_eq!(err.pid(), Some(pid));
        drop(lock.lock_async().await.unwrap());
        let _ = killer.join().unwrap().join_async().await;
    });
}

#[test]
fn a_killed_peer_ends_get_async_and_recv_async_with_the_blocking_calls_error() {
    on_each_runtime("queue and pipe peer died", || async {
        let q = Queue::<u32>::new().unwrap();
        let holding = Event::new().unwrap();
        let p = Process::spawn(queue_holder_aborts, (q.clone(), holding.clone())).unwrap();
        holding.wait_async().await.unwrap();
        let err = q.get_async().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PeerDied, "{err}");
        assert!(err.to_string().contains("Queue::get_async"), "{err}");
        assert_eq!(q.get().unwrap_err().kind(), ErrorKind::PeerDied);
        let _ = p.join_async().await;

        let (here, there) = pipe(true).unwrap();
        let holding = Event::new().unwrap();
        let p = Process::spawn(connection_holder_aborts, (there, holding.clone())).unwrap();
        holding.wait_async().await.unwrap();
        let err = here.recv_async::<u32>().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PeerDied, "{err}");
        assert_eq!(here.recv::<u32>().unwrap_err().kind(), ErrorKind::PeerDied);
        let _ = p.join_async().await;
    });
}

#[test]
fn a_killed_party_ends_barrier_wait_async_with_peer_died() {
    on_each_runtime("barrier peer died", || async {
        let b = Barrier::new(3).unwrap();
        let holding = Event::new().unwrap();
        let p = Process::spawn(barrier_party_aborts, (b.clone(), holding.clone())).unwrap();
        holding.wait_async().await.unwrap();
        let err = b.wait_async().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PeerDied, "{err}");
        let _ = p.join_async().await;
    });
}

// ---------------------------------------------------------------------------
// Many futures on one object
// ---------------------------------------------------------------------------

#[test]
fn five_hundred_futures_on_one_event_and_one_semaphore_all_complete() {
    watchdog("500 waiters", || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let e = Event::new().unwrap();
            let s = Semaphore::new(0).unwrap();
            let mut tasks = Vec::new();
            for _ in 0..500 {
                let e = e.clone();
                tasks.push(tokio::spawn(async move { e.wait_async().await }));
                let s = s.clone();
                tasks.push(tokio::spawn(async move { s.acquire_async().await }));
            }
            // Let them all register before the other side acts.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(n) = async_waiter_threads() {
                // One per watched word (two here), plus what concurrent tests
                // of this binary hold: nowhere near one per future.
                assert!(n < 50, "{n} waiter threads for 1000 futures");
            }
            let pe = Process::spawn(set_after, (e.clone(), 10)).unwrap();
            let ps = Process::spawn(release_after, (s.clone(), 10, 500)).unwrap();
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            assert_eq!(s.value(), 0);
            pe.join_async().await.unwrap();
            ps.join_async().await.unwrap();
        });
    });
    // The same under smol, with the futures joined on one task.
    watchdog("500 waiters (smol)", || {
        smol::block_on(async {
            let e = Event::new().unwrap();
            let p = Process::spawn(set_after, (e.clone(), 50)).unwrap();
            let tasks: Vec<_> = (0..500)
                .map(|_| {
                    let e = e.clone();
                    smol::spawn(async move { e.wait_async().await })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            p.join_async().await.unwrap();
        });
    });
}
