//! The pool from async code: `Task` and `AsyncResult` as futures,
//! `imap`/`imap_unordered`/`as_completed` as streams, under tokio (both
//! runtimes) and smol; many concurrent awaiters; futures dropped while
//! pending; a worker killed and the pool terminated while futures wait.
//! Every scenario runs under a watchdog: a waker nobody fires is a hang.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_util::StreamExt;
use multiproc::{as_completed, ErrorKind, Pool, Queue};

multiproc::test_support!();

mod common;
use common::{warm, watchdog};

const LIMIT: Duration = Duration::from_secs(90);

fn square(x: u64) -> u64 {
    x * x
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Says which worker runs it, then naps `ms`.
fn report_pid((pids, ms): (Queue<u32>, u64)) -> u64 {
    pids.put(&std::process::id()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn reported(pids: &Queue<u32>) -> u32 {
    pids.get_timeout(Duration::from_secs(60)).unwrap()
}

#[cfg(unix)]
fn kill(pid: u32) {
    // SAFETY: a plain syscall on a pid this test's pool owns.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL)
    };
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// The same scenario under tokio (multi-thread, current-thread) and smol.
fn on_every_runtime<F, Fut>(scenario: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    multi_thread().block_on(scenario());
    current_thread().block_on(scenario());
    smol::block_on(scenario());
}

/// A waker that counts its wakes; the `Arc`'s count says whether anyone
/// still holds it.
struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `f` once with a counting waker.
fn poll_once<F: Future + Unpin>(f: &mut F, w: &Arc<Counting>) -> Poll<F::Output> {
    let waker = Waker::from(Arc::clone(w));
    std::pin::Pin::new(f).poll(&mut Context::from_waker(&waker))
}

/// Polls until `cond` holds or a minute passes.
fn eventually(cond: impl Fn() -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

#[test]
fn a_task_is_a_future_on_every_runtime() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        on_every_runtime(|| async {
            assert_eq!(pool.submit(square, 9).unwrap().await.unwrap(), 81);
            // Awaited by `&mut`, the handle stays: its value was taken.
            let mut t = pool.submit(nap, 50).unwrap();
            assert_eq!((&mut t).await.unwrap(), 50);
            assert!(t.done());
            assert_eq!(t.result().unwrap_err().kind(), ErrorKind::InvalidState);
            // A failure is the error `result()` gives.
            let e = pool
                .submit(|x: u64| -> u64 { panic!("no {x}") }, 1)
                .unwrap()
                .await
                .unwrap_err();
            assert_eq!(e.panic_info().unwrap().message(), "no 1");
        });
    });
}

#[test]
fn an_async_result_is_a_future_on_every_runtime() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        on_every_runtime(|| async {
            assert_eq!(pool.apply_async(square, 7).unwrap().await.unwrap(), 49);
            assert_eq!(
                pool.map_async(square, 0..5).unwrap().await.unwrap(),
                [0, 1, 4, 9, 16]
            );
            // With callbacks: ready once the callback returned.
            let seen = Arc::new(AtomicUsize::new(0));
            let s = Arc::clone(&seen);
            let r = pool
                .apply_async_with(
                    nap,
                    30,
                    move |v| {
                        s.store(*v as usize, Ordering::SeqCst);
                    },
                    |_| {},
                )
                .unwrap();
            assert_eq!(r.await.unwrap(), 30);
            assert_eq!(seen.load(Ordering::SeqCst), 30);
        });
    });
}

#[test]
fn imap_streams_in_order_and_unordered_streams_everything() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        on_every_runtime(|| async {
            let s = pool.imap(square, 0..100u64).unwrap().into_stream();
            let got: Vec<u64> = s.map(|r| r.unwrap()).collect().await;
            assert_eq!(got, (0..100).map(|x| x * x).collect::<Vec<_>>());

            let s = pool
                .imap_unordered(square, 0..100u64)
                .unwrap()
                .into_stream();
            let mut got: Vec<u64> = s.map(|r| r.unwrap()).collect().await;
            got.sort_unstable();
            assert_eq!(got, (0..100).map(|x| x * x).collect::<Vec<_>>());

            // An endless input, consumed lazily.
            let s = pool.imap(square, 0u64..).unwrap().into_stream();
            let first: Vec<u64> = s.take(10).map(|r| r.unwrap()).collect().await;
            assert_eq!(first, (0..10).map(|x| x * x).collect::<Vec<_>>());

            // An error ends the stream after the items before it.
            let s = pool
                .imap(
                    |x: u64| -> u64 {
                        assert!(x != 3, "three");
                        x
                    },
                    0..10u64,
                )
                .unwrap()
                .into_stream();
            let items: Vec<_> = s.collect().await;
            assert_eq!(items.len(), 4);
            assert!(items[..3].iter().all(Result::is_ok));
            assert_eq!(items[3].as_ref().unwrap_err().kind(), ErrorKind::Panicked);
        });
    });
}

#[test]
fn as_completed_streams_in_completion_order() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        on_every_runtime(|| async {
            // Both workers up (the last round's cancel replaced one): the
            // order and the deadline below are about the tasks alone.
            warm(&pool);
            let tasks = vec![
                pool.submit(nap, 1_500).unwrap(),
                pool.submit(nap, 0).unwrap(),
            ];
            let order: Vec<u64> = as_completed(&tasks, None)
                .into_stream()
                .map(|t| t.unwrap().result().unwrap())
                .collect()
                .await;
            assert_eq!(order, [0, 1_500]);

            // A timeout ends it with a timeout error, woken without any
            // progress of the pool.
            let tasks = vec![
                pool.submit(nap, 0).unwrap(),
                pool.submit(nap, 60_000).unwrap(),
            ];
            let items: Vec<_> = as_completed(&tasks, Some(Duration::from_secs(2)))
                .into_stream()
                .collect()
                .await;
            assert_eq!(items.len(), 2);
            assert_eq!(items[0].as_ref().unwrap().result().unwrap(), 0);
            assert!(items[1].as_ref().unwrap_err().is_timeout());
            assert!(tasks[1].cancel());
        });
    });
}

#[test]
fn two_hundred_concurrent_awaiters_all_finish() {
    watchdog(LIMIT, || {
        let pool = Arc::new(Pool::new(2).unwrap());
        let rt = multi_thread();
        rt.block_on(async {
            let mut handles = Vec::new();
            for i in 0..200u64 {
                let pool = Arc::clone(&pool);
                handles.push(tokio::spawn(async move {
                    if i % 2 == 0 {
                        pool.submit(square, i).unwrap().await.unwrap()
                    } else {
                        pool.apply_async(square, i).unwrap().await.unwrap()
                    }
                }));
            }
            for (i, h) in handles.into_iter().enumerate() {
                assert_eq!(h.await.unwrap(), (i * i) as u64);
            }
        });
        // The same on one thread, with smol.
        let tasks: Vec<_> = (0..200u64)
            .map(|i| pool.submit(square, i).unwrap())
            .collect();
        let got = smol::block_on(futures_util::future::join_all(tasks));
        let got: Vec<u64> = got.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(got, (0..200u64).map(|i| i * i).collect::<Vec<_>>());
    });
}

#[test]
fn a_future_dropped_while_pending_loses_nothing() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let pids = Queue::<u32>::new().unwrap();
        let rt = current_thread();
        let mut t = pool.submit(report_pid, (pids.clone(), 400)).unwrap();
        // The await gives up (the future is dropped mid-wait) ...
        let gave_up =
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(20), &mut t).await });
        assert!(gave_up.is_err());
        // ... and the task runs on, uncancelled, and its result stays.
        reported(&pids);
        assert_eq!(t.result().unwrap(), 400);
        assert!(!t.cancelled());
        assert_eq!(pool.restarts(), 0);

        // The same for an `AsyncResult`: awaited again, the value is there.
        let mut r = pool.apply_async(nap, 300).unwrap();
        let gave_up =
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(20), &mut r).await });
        assert!(gave_up.is_err());
        assert_eq!(smol::block_on(&mut r).unwrap(), 300);

        // A stream's pending `next()` dropped: no item is lost.
        let mut s = pool.imap(nap, [200u64, 0, 0]).unwrap().into_stream();
        let gave_up =
            rt.block_on(async { tokio::time::timeout(Duration::from_millis(20), s.next()).await });
        assert!(gave_up.is_err());
        let rest: Vec<u64> = smol::block_on(s.map(|r| r.unwrap()).collect());
        assert_eq!(rest, [200, 0, 0]);
    });
}

#[test]
fn a_dropped_handle_releases_its_waker_and_a_done_task_wakes_it_once() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        // Dropped while registered: the pool keeps no copy of the waker.
        let w = Arc::new(Counting(AtomicUsize::new(0)));
        let mut t = pool.submit(nap, 60_000).unwrap();
        assert!(poll_once(&mut t, &w).is_pending());
        assert!(Arc::strong_count(&w) > 1);
        drop(t);
        assert_eq!(Arc::strong_count(&w), 1);

        let mut r = pool.apply_async(nap, 60_000).unwrap();
        assert!(poll_once(&mut r, &w).is_pending());
        assert!(Arc::strong_count(&w) > 1);
        drop(r);
        assert_eq!(Arc::strong_count(&w), 1);

        // Polled pending, then done by the pool's own progress: woken,
        // and the waker is released once it fired. (A fresh pool: the
        // dropped tasks above still occupy the first one.)
        let pool = Pool::new(1).unwrap();
        let w = Arc::new(Counting(AtomicUsize::new(0)));
        let mut t = pool.submit(square, 5).unwrap();
        if poll_once(&mut t, &w).is_pending() {
            assert!(eventually(|| w.0.load(Ordering::SeqCst) > 0));
            // The waker's last clone goes when `wake` returns.
            assert!(eventually(|| Arc::strong_count(&w) == 1));
            match poll_once(&mut t, &w) {
                Poll::Ready(v) => assert_eq!(v.unwrap(), 25),
                Poll::Pending => panic!("woken but not ready"),
            }
        }
        // The pool got no restart from any of this: nothing was cancelled.
        assert_eq!(pool.restarts(), 0);
    });
}

#[cfg(unix)]
#[test]
fn a_worker_killed_while_a_future_waits_fails_it_with_pid_and_signal() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let pids = Queue::<u32>::new().unwrap();
        let rt = multi_thread();
        let t = pool.submit(report_pid, (pids.clone(), 600_000)).unwrap();
        let bystander = pool.submit(nap, 200).unwrap();
        let waiting = rt.spawn(t);
        let victim = reported(&pids);
        kill(victim);
        let e = rt.block_on(waiting).unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ProcessDied, "{e}");
        assert_eq!(e.pid(), Some(victim));
        assert_eq!(
            e.exit_status().and_then(|s| s.signal()),
            Some(libc::SIGKILL)
        );
        assert_eq!(rt.block_on(bystander).unwrap(), 200);

        // A stream waiting for an item whose worker dies.
        let mut s = pool
            .imap(report_pid, [(pids.clone(), 600_000)])
            .unwrap()
            .into_stream();
        let waiting = rt.spawn(async move {
            let first = s.next().await;
            (first, s.next().await.is_none())
        });
        let victim = reported(&pids);
        kill(victim);
        let (first, ended) = rt.block_on(waiting).unwrap();
        let e = first.unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ProcessDied, "{e}");
        assert_eq!(e.pid(), Some(victim));
        assert!(ended);
        assert_eq!(rt.block_on(pool.submit(square, 3).unwrap()).unwrap(), 9);
    });
}

#[test]
fn terminate_fails_every_waiting_future_and_stream() {
    watchdog(LIMIT, || {
        let pool = Arc::new(Pool::new(2).unwrap());
        let rt = multi_thread();
        let task = rt.spawn(pool.submit(nap, 600_000).unwrap());
        let queued = rt.spawn(pool.submit(nap, 600_000).unwrap());
        let result = rt.spawn(pool.apply_async(nap, 600_000).unwrap());
        let mut s = pool.imap(nap, 600_000u64..).unwrap().into_stream();
        let stream = rt.spawn(async move { s.next().await });
        let p = Arc::clone(&pool);
        // Once the waits have begun (not observable: a short delay only
        // makes the scenario more likely to be the intended one).
        std::thread::sleep(Duration::from_millis(50));
        std::thread::spawn(move || p.terminate()).join().unwrap();
        for h in [task, queued, result] {
            let e = rt.block_on(h).unwrap().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
        }
        let e = rt.block_on(stream).unwrap().unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");

        // A pool dropped while a future waits: the same.
        let pool = Pool::new(1).unwrap();
        let t = rt.spawn(pool.submit(nap, 600_000).unwrap());
        std::thread::sleep(Duration::from_millis(20));
        drop(pool);
        let e = rt.block_on(t).unwrap().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
    });
}

#[test]
fn a_stream_with_a_timeout_is_woken_at_the_deadline() {
    watchdog(LIMIT, || {
        on_every_runtime(|| async {
            // A pool each: the long nap is left running. The deadline
            // counts from the call, so the worker is started first.
            let pool = Pool::new(1).unwrap();
            warm(&pool);
            let s = pool
                .with_timeout(Duration::from_secs(2))
                .imap(nap, [0, 600_000])
                .unwrap()
                .into_stream();
            let items: Vec<_> = s.collect().await;
            assert_eq!(items.len(), 2);
            assert_eq!(*items[0].as_ref().unwrap(), 0);
            assert!(items[1].as_ref().unwrap_err().is_timeout());
        });
    });
}
