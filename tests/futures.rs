//! `Pool::submit` and its `Task` (Python's `concurrent.futures`): results,
//! completion order, cancelling queued and *running* tasks, done
//! callbacks, `wait_tasks`, `shutdown`, and a worker killed under a task.
//! Every scenario that could hang runs under a watchdog; timings are
//! asserted only where the gap is seconds wide.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use multiproc::{as_completed, wait_tasks, ErrorKind, Event, Pool, Queue, ReturnWhen};

multiproc::test_support!();

mod common;
use common::{warm, watchdog, when_set};

/// Limit for the tests that could hang if a failure went unnoticed.
const LIMIT: Duration = Duration::from_secs(90);

fn square(x: u64) -> u64 {
    x * x
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn fragile(x: u64) -> u64 {
    assert!(x != 3, "three is not allowed");
    x
}

/// Says which worker runs it, then naps `ms`.
fn report_pid((pids, ms): (Queue<u32>, u64)) -> u64 {
    pids.put(&std::process::id()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// The pid a `report_pid` task sent.
fn reported(pids: &Queue<u32>) -> u32 {
    pids.get_timeout(Duration::from_secs(60)).unwrap()
}

#[test]
fn submit_returns_the_result() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let t = pool.submit(square, 12).unwrap();
        assert_eq!(t.result().unwrap(), 144);
        // Asked again: the same value (Python's `result()`).
        assert_eq!(t.result().unwrap(), 144);
        assert!(t.done() && !t.running() && !t.cancelled());
        let many: Vec<_> = (0..50).map(|i| pool.submit(square, i).unwrap()).collect();
        let got: Vec<u64> = many.into_iter().map(|t| t.into_result().unwrap()).collect();
        assert_eq!(got, (0..50).map(|i| i * i).collect::<Vec<_>>());
    });
}

fn describe((name, weight, blob): (String, f64, Vec<u8>)) -> String {
    let sum: u64 = blob.iter().map(|&b| u64::from(b)).sum();
    format!("{name}:{weight}:{}:{sum}", blob.len())
}

fn halve(x: f64) -> f64 {
    x / 2.0
}

fn shout(s: String) -> String {
    s.to_uppercase()
}

#[test]
fn submitted_arguments_of_every_kind_arrive_whole() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        // A primitive (crosses raw), a string (one copy), a tuple (serde)
        // and one bigger than a ring frame (streamed alone).
        assert_eq!(pool.submit(halve, 3.0).unwrap().result().unwrap(), 1.5);
        let s = pool.submit(shout, "quiet".to_string()).unwrap();
        assert_eq!(s.into_result().unwrap(), "QUIET");
        let small = ("small".to_string(), 0.5, vec![1u8, 2, 3]);
        let t = pool.submit(describe, small).unwrap();
        assert_eq!(t.into_result().unwrap(), "small:0.5:3:6");
        let blob: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let sum: u64 = blob.iter().map(|&b| u64::from(b)).sum();
        let t = pool
            .submit(describe, ("big".to_string(), 2.0, blob))
            .unwrap();
        assert_eq!(t.into_result().unwrap(), format!("big:2:{}:{sum}", 3 << 20));
    });
}

#[test]
fn a_lone_task_waited_for_at_once_is_done_with_nobody_else_driving() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        // Nothing else runs: the wait drives the pool itself (it looks
        // for the result without the lock only while another thread
        // drives). Many in a row, each answered.
        for i in 0..2000 {
            assert_eq!(pool.submit(square, i).unwrap().result().unwrap(), i * i);
            let r = pool.apply_async(square, i).unwrap();
            assert_eq!(r.get().unwrap(), i * i);
        }
    });
}

#[test]
fn a_failed_task_gives_the_error_apply_gives() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let t = pool.submit(fragile, 3).unwrap();
        let e = t.result().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Panicked);
        let info = e.panic_info().unwrap();
        assert_eq!(info.message(), "three is not allowed");
        assert!(info.location().unwrap().contains("futures.rs"));
        assert!(e.pid().is_some());
        let a = pool.apply(fragile, 3).unwrap_err();
        assert_eq!(a.kind(), e.kind());
        assert_eq!(a.panic_info().unwrap().message(), info.message());
        // The pool goes on.
        assert_eq!(pool.submit(fragile, 4).unwrap().result().unwrap(), 4);
    });
}

#[test]
fn result_timeout_times_out_then_the_value_comes() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let go = Event::new().unwrap();
        let t = pool.submit(when_set, (go.clone(), 7)).unwrap();
        let e = t.result_timeout(Duration::from_millis(20)).unwrap_err();
        assert!(e.is_timeout(), "{e}");
        assert!(!t.done());
        go.set();
        assert_eq!(t.result_timeout(Duration::from_secs(60)).unwrap(), 7);
    });
}

#[test]
fn as_completed_yields_in_completion_order() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let tasks = vec![
            pool.submit(nap, 2_000).unwrap(),
            pool.submit(nap, 0).unwrap(),
        ];
        let order: Vec<u64> = as_completed(&tasks, None)
            .map(|t| t.unwrap().result().unwrap())
            .collect();
        assert_eq!(order, [0, 2_000]);
        // Every task once, also those done already.
        let all: Vec<_> = (0..10).map(|i| pool.submit(square, i).unwrap()).collect();
        let mut got: Vec<u64> = as_completed(&all, None)
            .map(|t| t.unwrap().result().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..10).map(|i| i * i).collect::<Vec<_>>());
    });
}

#[test]
fn as_completed_ends_with_a_timeout_error() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        warm(&pool);
        let go = Event::new().unwrap();
        let tasks = vec![
            pool.submit(when_set, (go.clone(), 1)).unwrap(),
            pool.submit(nap, 0).unwrap(),
        ];
        let got: Vec<_> = as_completed(&tasks, Some(Duration::from_secs(2))).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap().result().unwrap(), 0);
        assert!(got[1].as_ref().unwrap_err().is_timeout());
        go.set();
        assert_eq!(tasks[0].result().unwrap(), 1);
    });
}

/// The heart of it: a running task is stopped by killing its worker; the
/// task queued behind it on that worker, the one on the other worker and
/// the one not sent yet all finish with their own results.
#[test]
fn cancel_stops_a_running_task_and_spares_the_others() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let pids = Queue::<u32>::new().unwrap();
        let go = Event::new().unwrap();
        let victim = pool.submit(report_pid, (pids.clone(), 600_000)).unwrap();
        let pid = reported(&pids);
        let other = pool.submit(when_set, (go.clone(), 11)).unwrap();
        // Queued behind the running tasks (two workers, two in flight each)
        // and beyond.
        let queued: Vec<_> = (0..6).map(|i| pool.submit(square, i).unwrap()).collect();
        assert!(victim.running());
        assert!(pool.pids().contains(&pid));

        assert!(victim.cancel());
        assert!(victim.cancelled() && victim.done() && !victim.running());
        let e = victim.result().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
        assert!(e.is_cancelled());
        // Cancelled twice: still `true`, nothing else happens.
        assert!(victim.cancel());

        go.set();
        assert_eq!(other.result().unwrap(), 11);
        for (i, t) in queued.iter().enumerate() {
            assert_eq!(t.result().unwrap(), (i * i) as u64);
        }
        // Its worker was replaced, the other one was not.
        let now = pool.pids();
        assert!(!now.contains(&pid), "{pid} still in {now:?}");
        assert_eq!(pool.restarts(), 1);
        assert_eq!(pool.submit(square, 9).unwrap().result().unwrap(), 81);
    });
}

/// One worker: the task queued behind the running one is in the killed
/// worker's ring, and is sent again to its replacement.
#[test]
fn cancel_resends_the_task_queued_on_the_killed_worker() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let pids = Queue::<u32>::new().unwrap();
        let victim = pool.submit(report_pid, (pids.clone(), 600_000)).unwrap();
        let pid = reported(&pids);
        let behind = pool.submit(report_pid, (pids.clone(), 0)).unwrap();
        let later = pool.submit(square, 5).unwrap();
        assert!(victim.cancel());
        assert_eq!(behind.result().unwrap(), 0);
        assert_eq!(later.result().unwrap(), 25);
        let second = reported(&pids);
        assert_ne!(second, pid, "the queued task ran on the cancelled worker");
        assert_eq!(pool.pids(), [second]);
    });
}

#[test]
fn cancel_drops_a_task_not_sent_yet() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let go = Event::new().unwrap();
        let running = pool.submit(when_set, (go.clone(), 1)).unwrap();
        let queued = pool.submit(when_set, (go.clone(), 2)).unwrap();
        // Two in flight on the worker; this one waits in the parent.
        let waiting = pool.submit(square, 3).unwrap();
        assert!(!waiting.running());
        assert!(waiting.cancel());
        assert!(waiting.cancelled());
        assert!(waiting.result().unwrap_err().is_cancelled());
        go.set();
        assert_eq!(running.result().unwrap(), 1);
        assert_eq!(queued.result().unwrap(), 2);
        assert_eq!(pool.restarts(), 0);
    });
}

#[test]
fn cancel_after_done_returns_false() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let t = pool.submit(square, 4).unwrap();
        assert_eq!(t.result().unwrap(), 16);
        assert!(!t.cancel());
        assert!(!t.cancelled());
        assert_eq!(t.result().unwrap(), 16);
        // A failed task is done too.
        let f = pool.submit(fragile, 3).unwrap();
        assert!(f.result().is_err());
        assert!(!f.cancel());
    });
}

#[test]
fn add_done_callback_runs_once_also_after_completion() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let go = Event::new().unwrap();
        let t = pool.submit(when_set, (go.clone(), 5)).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        t.add_done_callback(move |t| {
            let name = std::thread::current().name().map(str::to_owned);
            tx2.send((t.result().unwrap(), name)).unwrap();
        });
        assert!(rx.try_recv().is_err());
        go.set();
        let (v, thread) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(v, 5);
        assert_eq!(thread.as_deref(), Some("multiproc-pool-callbacks"));
        // Added after completion: runs at once, here.
        let here = std::thread::current().id();
        let (tx3, rx3) = mpsc::channel();
        t.add_done_callback(move |t| tx3.send((t.done(), std::thread::current().id())).unwrap());
        assert_eq!(rx3.try_recv().unwrap(), (true, here));
        drop(tx);
        pool.close();
        pool.join().unwrap();
        // Once each.
        assert!(rx.try_recv().is_err());
        // A cancelled task calls back too.
        let pool = Pool::new(1).unwrap();
        let t = pool.submit(nap, 600_000).unwrap();
        let (tx, rx) = mpsc::channel();
        t.add_done_callback(move |t| tx.send(t.cancelled()).unwrap());
        assert!(t.cancel());
        assert!(rx.recv_timeout(Duration::from_secs(60)).unwrap());
    });
}

#[test]
fn wait_tasks_returns_for_each_return_when() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let go = Event::new().unwrap();

        let tasks = vec![
            pool.submit(when_set, (go.clone(), 1)).unwrap(),
            pool.submit(nap, 0).unwrap(),
        ];
        let (done, not_done) = wait_tasks(&tasks, ReturnWhen::FirstCompleted, None);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].result().unwrap(), 0);
        assert_eq!(not_done.len(), 1);
        assert!(!not_done[0].done());

        // A timeout is not an error: what is left is in `not_done`.
        let (done, not_done) = wait_tasks(
            &tasks,
            ReturnWhen::AllCompleted,
            Some(Duration::from_millis(100)),
        );
        assert_eq!((done.len(), not_done.len()), (1, 1));
        go.set();
        let (done, not_done) = wait_tasks(&tasks, ReturnWhen::AllCompleted, None);
        assert_eq!((done.len(), not_done.len()), (2, 0));

        // FIRST_EXCEPTION: returns at the failure, not waiting for the rest.
        go.clear();
        let tasks = vec![
            pool.submit(when_set, (go.clone(), 1)).unwrap(),
            pool.submit(fragile, 3).unwrap(),
        ];
        let (done, not_done) = wait_tasks(&tasks, ReturnWhen::FirstException, None);
        assert_eq!(done.len(), 1);
        assert!(done[0].result().unwrap_err().is_panic());
        assert_eq!(not_done.len(), 1);
        go.set();
        // Without a failure it waits for all.
        let tasks: Vec<_> = (0..4).map(|i| pool.submit(square, i).unwrap()).collect();
        let (done, not_done) = wait_tasks(&tasks, ReturnWhen::FirstException, None);
        assert_eq!((done.len(), not_done.len()), (4, 0));
        let (done, not_done) = wait_tasks::<u64>(&[], ReturnWhen::FirstCompleted, None);
        assert!(done.is_empty() && not_done.is_empty());
    });
}

#[cfg(unix)]
#[test]
fn a_sigkilled_worker_fails_its_task_with_pid_and_signal() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let pids = Queue::<u32>::new().unwrap();
        let t = pool.submit(report_pid, (pids.clone(), 600_000)).unwrap();
        let bystander = pool.submit(nap, 300).unwrap();
        let victim = reported(&pids);
        // SAFETY: a plain syscall on a pid this test's pool owns.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(victim as i32, libc::SIGKILL)
        };
        let e = t.result().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ProcessDied, "{e}");
        assert_eq!(e.pid(), Some(victim));
        assert_eq!(
            e.exit_status().and_then(|s| s.signal()),
            Some(libc::SIGKILL)
        );
        assert!(!t.cancelled());
        assert_eq!(bystander.result().unwrap(), 300);
        assert_eq!(pool.submit(square, 3).unwrap().result().unwrap(), 9);
    });
}

#[test]
fn dropping_a_task_does_not_cancel_it() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let pids = Queue::<u32>::new().unwrap();
        drop(pool.submit(report_pid, (pids.clone(), 0)).unwrap());
        reported(&pids);
        assert_eq!(pool.restarts(), 0);
    });
}

#[test]
fn shutdown_cancels_what_is_not_running_and_waits() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let pids = Queue::<u32>::new().unwrap();
        let first = pool.submit(report_pid, (pids.clone(), 300)).unwrap();
        reported(&pids);
        let rest: Vec<_> = (0..3).map(|_| pool.submit(nap, 600_000).unwrap()).collect();
        pool.shutdown(true, true).unwrap();
        assert_eq!(first.result().unwrap(), 300);
        assert!(rest.iter().all(|t| t.cancelled()));
        let e = pool.submit(square, 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState);
        // A second shutdown does no harm.
        pool.shutdown(true, false).unwrap();
    });
}

#[test]
fn terminate_fails_submitted_tasks() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let a = pool.submit(nap, 600_000).unwrap();
        let b = pool.submit(nap, 600_000).unwrap();
        let c = pool.submit(nap, 600_000).unwrap();
        pool.terminate();
        for t in [&a, &b, &c] {
            assert_eq!(t.result().unwrap_err().kind(), ErrorKind::InvalidState);
        }
    });
}

/// Counts how far an endless input was pulled.
fn counted(
    pulled: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> impl Iterator<Item = u64> + Send + 'static {
    let pulled = std::sync::Arc::clone(pulled);
    (0u64..).inspect(move |&i| pulled.store(i + 1, std::sync::atomic::Ordering::SeqCst))
}

#[test]
fn map_with_buffersize_pulls_an_endless_input_lazily() {
    watchdog(LIMIT, || {
        use std::sync::atomic::{AtomicU64, Ordering};
        let pool = Pool::new(2).unwrap();
        let pulled = std::sync::Arc::new(AtomicU64::new(0));
        let mut it = pool
            .with_buffersize(3)
            .imap(square, counted(&pulled))
            .unwrap();
        let first: Vec<u64> = it.by_ref().take(20).map(Result::unwrap).collect();
        assert_eq!(first, (0..20u64).map(|x| x * x).collect::<Vec<_>>());
        // Give the pool time to run ahead, if it would.
        std::thread::sleep(Duration::from_millis(200));
        // 20 consumed; at most 3 tasks in flight plus 3 results waiting.
        let ahead = pulled.load(Ordering::SeqCst);
        assert!((20..=20 + 6 + 1).contains(&ahead), "pulled {ahead}");
        drop(it);
        // Chained with a chunk size: tasks of 4 items, 2 tasks ahead.
        let pulled = std::sync::Arc::new(AtomicU64::new(0));
        let it = pool
            .with_chunksize(4)
            .with_buffersize(2)
            .imap(square, counted(&pulled))
            .unwrap();
        assert_eq!(it.take(8).map(Result::unwrap).last(), Some(49));
        std::thread::sleep(Duration::from_millis(200));
        let ahead = pulled.load(Ordering::SeqCst);
        assert!(ahead <= 8 + 4 * 4 + 1, "pulled {ahead}");
        // map() with a buffersize: every result, in order.
        assert_eq!(
            pool.with_buffersize(2).map(square, 0..50).unwrap().len(),
            50
        );
        // 0 is refused, as Python's ValueError.
        let e = pool.with_buffersize(0).imap(square, 0..1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState);
    });
}

#[test]
fn map_with_timeout_times_out_from_the_call() {
    watchdog(LIMIT, || {
        // The deadline counts from the call, not per item: each item
        // alone (300 ms) fits in it, their sum on one worker does not.
        let pool = Pool::new(1).unwrap();
        let e = pool
            .with_timeout(Duration::from_millis(600))
            .map(nap, [300, 300, 300, 300])
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        // As an iterator: the results before the deadline, the error,
        // then the end; the rest is cancelled. (Fresh pools: the naps
        // above still run, as running tasks do after Python's timeout.)
        let pool = Pool::new(1).unwrap();
        warm(&pool);
        let mut it = pool
            .with_timeout(Duration::from_secs(2))
            .imap(nap, [0, 60_000, 0])
            .unwrap();
        assert_eq!(it.next().unwrap().unwrap(), 0);
        assert!(it.next().unwrap().unwrap_err().is_timeout());
        assert!(it.next().is_none());
        // Plenty of time: everything.
        let pool = Pool::new(2).unwrap();
        let v = pool
            .with_chunksize(2)
            .with_timeout(Duration::from_secs(60))
            .map(square, 0..10)
            .unwrap();
        assert_eq!(v[9], 81);
    });
}

#[test]
fn terminate_workers_cancels_the_queue_and_breaks_the_pool() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let pids = Queue::<u32>::new().unwrap();
        let running = pool.submit(report_pid, (pids.clone(), 600_000)).unwrap();
        let queued = pool.submit(nap, 600_000).unwrap();
        let map = pool.map_async(nap, [600_000]).unwrap();
        let pid = reported(&pids);
        pool.terminate_workers();
        assert!(queued.cancelled());
        let e = running.result().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
        assert!(e.to_string().contains("terminate_workers"), "{e}");
        assert!(!running.cancelled());
        assert!(map
            .get()
            .unwrap_err()
            .to_string()
            .contains("terminate_workers"));
        // Unusable, and says why.
        let e = pool.submit(square, 1).unwrap_err();
        assert!(e.to_string().contains("terminate_workers"), "{e}");
        assert!(pool.map(square, [1]).is_err());
        // The worker got SIGTERM and is gone; join returns.
        pool.join().unwrap();
        #[cfg(unix)]
        {
            // SAFETY: signal 0 only asks whether the pid exists.
            #[allow(unsafe_code)]
            let alive = unsafe { libc::kill(pid as i32, 0) } == 0;
            assert!(!alive);
        }
        let _ = pid;
    });
}

#[test]
fn kill_workers_fails_running_work_and_breaks_the_pool() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let tasks: Vec<_> = (0..4).map(|_| pool.submit(nap, 600_000).unwrap()).collect();
        let started = std::time::Instant::now();
        while !tasks[..2].iter().all(|t| t.running()) && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        pool.kill_workers();
        for t in &tasks {
            let e = t.result().unwrap_err();
            assert!(
                e.is_cancelled() || e.to_string().contains("kill_workers"),
                "{e}"
            );
        }
        let e = pool.apply(square, 2).unwrap_err();
        assert!(e.to_string().contains("kill_workers"), "{e}");
        assert_eq!(pool.restarts(), 0);
        drop(pool);
    });
}

fn set_it(ev: Event) {
    ev.set();
}

/// An async submission sends its task at once and wakes no pump: with
/// nobody waiting, the task still runs (its side effect shows), and a look
/// at `done()` alone sees it end (the look wakes the pump, which takes the
/// result from the ring).
#[test]
fn a_task_nobody_waits_for_runs_and_done_sees_it_end() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let ev = Event::new().unwrap();
        let side = pool.submit(set_it, ev.clone()).unwrap();
        ev.wait_timeout(Duration::from_secs(30))
            .expect("the task did not run while nobody waited for it");
        let t = pool.submit(square, 7).unwrap();
        let seen = common::wait_for(Duration::from_secs(30), || t.done(), |d| *d);
        assert!(seen.is_ok(), "done() never turned true with nobody waiting");
        assert!(side.done());
        assert_eq!(t.result().unwrap(), 49);
    });
}

/// The same for `apply_async` and a Python-style `while not r.ready()`
/// loop, and for a done-callback nobody waits for.
#[test]
fn ready_and_callbacks_come_with_nobody_waiting() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let r = pool.apply_async(square, 5).unwrap();
        let seen = common::wait_for(Duration::from_secs(30), || r.ready(), |d| *d);
        assert!(
            seen.is_ok(),
            "ready() never turned true with nobody waiting"
        );
        assert_eq!(r.successful(), Some(true));
        assert_eq!(r.get().unwrap(), 25);

        let (tx, rx) = mpsc::channel();
        let t = pool.submit(square, 6).unwrap();
        t.add_done_callback(move |t| tx.send(t.result().unwrap()).unwrap());
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), 36);
    });
}

/// A burst of submissions, each stepped by its caller, leaves most of its
/// tasks unsent (400 tasks of 1 ms each, submitted far faster than 2
/// workers run them); once the caller stops and waits on something else,
/// the pool's own threads must send and run the rest. The last task sets
/// an event: nothing but the pool can get it there.
#[test]
fn a_burst_of_submissions_left_alone_still_runs_to_the_end() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let ev = Event::new().unwrap();
        let tasks: Vec<_> = (0..400).map(|_| pool.submit(nap, 1).unwrap()).collect();
        let last = pool.submit(set_it, ev.clone()).unwrap();
        ev.wait_timeout(Duration::from_secs(60))
            .expect("the tasks left unsent after the burst never ran");
        for t in tasks {
            assert_eq!(t.into_result().unwrap(), 1);
        }
        last.result().unwrap();
    });
}

/// Health checks go on while a caller submits in a burst (each
/// submission steps the pool, and a step checks no health): a task past
/// the pool's task timeout is stopped, and fails, while the stream of
/// submissions goes on and nobody looks at a result. The stream stops
/// only once the stuck task's done-callback has run. (A pump that napped
/// through such bursts, tried on 2026-12-05, had to check health in its
/// naps for this to hold.)
#[test]
fn a_task_timeout_is_enforced_during_a_burst_of_submissions() {
    watchdog(LIMIT, || {
        let pool = Pool::builder()
            .processes(2)
            .task_timeout(Duration::from_millis(200))
            .build()
            .unwrap();
        let stuck = pool.submit(nap, 600_000).unwrap();
        let (tx, rx) = mpsc::channel();
        stuck.add_done_callback(move |_| {
            let _ = tx.send(());
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sent = 0u64;
        while rx.try_recv().is_err() {
            assert!(
                Instant::now() < deadline,
                "the task timeout went unenforced through {sent} submissions"
            );
            // Dropped at once: a dropped task still runs (not cancelled).
            drop(pool.submit(square, 3).unwrap());
            sent += 1;
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(5) {
                std::hint::spin_loop();
            }
        }
        let e = stuck.result().unwrap_err();
        assert!(e.is_timeout(), "{e}");
        assert_eq!(pool.submit(square, 4).unwrap().result().unwrap(), 16);
    });
}

/// Fails item 3 of every seven, crashes its worker on 777.
fn picky(x: u64) -> u64 {
    if x == 777 {
        std::process::exit(9);
    }
    assert!(x % 7 != 3, "{x} is not allowed");
    x * 2
}

/// Tiny tasks of one function go several to a frame once the function is
/// measured short (docs/ARCHITECTURE.md, "Submitted tasks travel in
/// groups"): each still has its own result and its own error. Whether a
/// given task was grouped depends on timing; the answers must not.
#[test]
fn tiny_tasks_each_keep_their_own_result_and_error() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        for round in 0..3 {
            let tasks: Vec<_> = (0..3_000u64)
                .filter(|&x| x != 777)
                .map(|x| (x, pool.submit(picky, x).unwrap()))
                .collect();
            for (x, t) in tasks {
                match t.into_result() {
                    Ok(v) => {
                        assert!(x % 7 != 3, "round {round}: {x} should have failed");
                        assert_eq!(v, 2 * x);
                    }
                    Err(e) => {
                        assert!(x % 7 == 3, "round {round}: {x} failed: {e}");
                        assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
                        assert!(e.to_string().contains("is not allowed"), "{e}");
                    }
                }
            }
        }
        assert_eq!(pool.restarts(), 0);
    });
}

/// A worker that dies under a tiny task fails that task with the death;
/// a task that may have run beside it in its group fails the same way,
/// never twice run; every other task gets its result, and the pool goes
/// on.
#[test]
fn a_worker_dying_under_a_tiny_task_fails_only_what_it_may_have_run() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let tasks: Vec<_> = (0..2_000u64)
            .filter(|x| x % 7 != 3)
            .map(|x| (x, pool.submit(picky, x).unwrap()))
            .collect();
        let mut died = 0;
        for (x, t) in tasks {
            match t.into_result() {
                Ok(v) => assert_eq!(v, 2 * x),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::ProcessDied, "{x}: {e}");
                    died += 1;
                }
            }
        }
        // 777 for sure; at most the tasks of its group, which it may
        // have answered before it died.
        assert!((1..=64).contains(&died), "{died} tasks lost");
        assert_eq!(pool.submit(square, 9).unwrap().result().unwrap(), 81);
    });
}

/// Cancelling tiny tasks while they stream: a cancelled one reports
/// cancelled (whether it was waiting, grouped at a worker or running),
/// every other one its result, and no worker is lost to it unless it ran
/// alone.
#[test]
fn cancelling_tiny_tasks_leaves_the_others_whole() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let tasks: Vec<_> = (0..4_000u64)
            .map(|x| pool.submit(square, x).unwrap())
            .collect();
        let mut cancelled = Vec::new();
        for (x, t) in tasks.iter().enumerate() {
            if x % 97 == 5 && t.cancel() {
                cancelled.push(x);
            }
        }
        for (x, t) in tasks.into_iter().enumerate() {
            if cancelled.contains(&x) {
                assert!(t.cancelled());
                assert_eq!(t.into_result().unwrap_err().kind(), ErrorKind::Cancelled);
            } else {
                assert_eq!(t.into_result().unwrap(), (x * x) as u64);
            }
        }
    });
}

/// Repeats its text; fails on an empty one.
fn echo_long(s: String) -> String {
    assert!(!s.is_empty(), "empty");
    s.repeat(3)
}

/// With the smallest rings, grouped tasks whose items and results are
/// larger than a record may be still get their own results (some in
/// records, some in frames of their own, a group of one streamed).
#[test]
fn grouped_tasks_with_large_items_on_small_rings() {
    watchdog(LIMIT, || {
        let pool = Pool::builder()
            .processes(2)
            .ring_bytes(4096)
            .build()
            .unwrap();
        for round in 0..3 {
            let tasks: Vec<_> = (0..400usize)
                .map(|i| {
                    let s = if i % 50 == 7 {
                        String::new()
                    } else {
                        "ab".repeat(i % 300)
                    };
                    (s.clone(), pool.submit(echo_long, s).unwrap())
                })
                .collect();
            for (s, t) in tasks {
                match t.into_result() {
                    Ok(v) => assert_eq!(v, s.repeat(3), "round {round}"),
                    Err(e) => {
                        assert!(s.is_empty(), "round {round}: {e}");
                        assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
                    }
                }
            }
        }
        assert_eq!(pool.restarts(), 0);
    });
}
