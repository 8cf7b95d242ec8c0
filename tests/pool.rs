//! Pool: every method, result order, streaming, initializer, worker
//! replacement, and the failure semantics (panics, killed and aborting
//! workers, timeouts, terminate, drop) — with real worker processes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use multiproc::{ErrorKind, Event, Pool, SharedValue, ShmVec};

multiproc::test_support!();

mod common;
use common::{nap_counted, wait_running, watchdog, when_set};

/// Limit for the tests that could hang if a failure went unnoticed.
const LIMIT: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

fn my_pid(_: u64) -> u32 {
    std::process::id()
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[test]
fn map_returns_results_in_order() {
    let pool = Pool::new(4).unwrap();
    assert_eq!(
        pool.map(square, 0..10).unwrap(),
        [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
    );
    let big: Vec<u64> = pool.map(square, 0..100_000).unwrap();
    assert!(big
        .iter()
        .enumerate()
        .all(|(i, &v)| v == (i as u64) * (i as u64)));
    assert!(pool.map(square, Vec::<u64>::new()).unwrap().is_empty());
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct Record {
    name: String,
    values: Vec<f64>,
}

fn summarise(r: Record) -> (String, f64) {
    (r.name.to_uppercase(), r.values.iter().sum())
}

#[test]
fn map_carries_structured_items() {
    let pool = Pool::new(2).unwrap();
    let items: Vec<Record> = (0..50)
        .map(|i| Record {
            name: format!("r{i}"),
            values: vec![i as f64; i],
        })
        .collect();
    let out = pool.map(summarise, items.clone()).unwrap();
    for (i, (name, sum)) in out.iter().enumerate() {
        assert_eq!(name, &format!("R{i}"));
        assert_eq!(*sum, (i * i) as f64);
    }
}

#[test]
fn chunksize_one_and_large_agree() {
    for chunk in [1, 3, 1000] {
        let pool = Pool::builder()
            .processes(3)
            .chunksize(chunk)
            .build()
            .unwrap();
        assert_eq!(
            pool.map(square, 0..500).unwrap(),
            (0..500u64).map(|x| x * x).collect::<Vec<_>>()
        );
    }
}

fn add((a, b): (i64, i64)) -> i64 {
    a + b
}

#[test]
fn starmap_and_apply() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(
        pool.starmap(add, [(1, 2), (3, 4), (-5, 5)]).unwrap(),
        [3, 7, 0]
    );
    assert_eq!(pool.apply(add, (40, 2)).unwrap(), 42);
    for i in 0..200 {
        assert_eq!(pool.apply(square, i).unwrap(), i * i);
    }
}

#[test]
fn async_results_get_wait_ready_successful() {
    let pool = Pool::new(2).unwrap();
    let a = pool.map_async(square, 0..1000).unwrap();
    let b = pool.apply_async(nap, 50).unwrap();
    b.wait();
    assert!(b.ready());
    assert_eq!(b.successful(), Some(true));
    assert_eq!(b.get().unwrap(), 50);
    assert_eq!(a.get().unwrap()[999], 999 * 999);

    let go = Event::new().unwrap();
    let mut slow = pool.apply_async(when_set, (go.clone(), 300)).unwrap();
    assert!(!slow.ready());
    assert_eq!(slow.successful(), None);
    assert!(slow
        .get_timeout(Duration::from_millis(1))
        .unwrap_err()
        .is_timeout());
    assert!(slow
        .wait_timeout(Duration::from_millis(1))
        .unwrap_err()
        .is_timeout());
    go.set();
    assert_eq!(slow.get_timeout(Duration::from_secs(30)).unwrap(), 300);
    let again = slow.get_timeout(Duration::from_secs(1)).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::InvalidState);
}

#[test]
fn async_work_progresses_without_a_waiter() {
    let pool = Pool::new(2).unwrap();
    let r = pool.map_async(nap, vec![5u64; 40]).unwrap();
    // 40 × 5 ms over 2 workers ≈ 100 ms of work; nobody calls get() yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !r.ready() {
        assert!(Instant::now() < deadline, "map_async made no progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(r.get().unwrap().len(), 40);
}

#[test]
fn imap_is_ordered_and_imap_unordered_is_complete() {
    let pool = Pool::new(3).unwrap();
    let ordered: Vec<u64> = pool
        .imap(square, 0..300)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ordered, (0..300u64).map(|x| x * x).collect::<Vec<_>>());

    // Items that finish out of order: long naps first.
    let naps: Vec<u64> = (0..12).map(|i| if i % 4 == 0 { 80 } else { 1 }).collect();
    let mut got: Vec<u64> = pool
        .imap_unordered(nap, naps.clone())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    got.sort_unstable();
    let mut want = naps;
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn imap_over_an_endless_iterator_is_bounded_and_cancellable() {
    let pool = Pool::new(2).unwrap();
    let first: Vec<u64> = pool
        .imap(square, 0..)
        .unwrap()
        .take(1000)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(first[999], 999 * 999);
    // The dropped iterator's job was cancelled: the pool is free again.
    assert_eq!(pool.map(square, 0..5).unwrap(), [0, 1, 4, 9, 16]);
    pool.close();
    pool.join().unwrap();
}

fn count_start(counter: SharedValue<u64>) {
    counter.fetch_add(1);
    STARTED.store(7, Ordering::SeqCst);
}

static STARTED: AtomicU64 = AtomicU64::new(0);

fn started_value(_: u32) -> u64 {
    STARTED.load(Ordering::SeqCst)
}

#[test]
fn initializer_runs_once_per_worker_before_tasks() {
    let counter = SharedValue::new(0u64).unwrap();
    let pool = Pool::builder()
        .processes(3)
        .initializer(count_start, counter.clone())
        .build()
        .unwrap();
    let seen = pool.map(started_value, 0..300).unwrap();
    assert!(
        seen.iter().all(|&v| v == 7),
        "a task ran before the initializer"
    );
    pool.close();
    pool.join().unwrap();
    assert_eq!(counter.get(), 3);
}

fn failing_init(_: ()) {
    panic!("cannot initialise");
}

#[test]
fn a_panicking_initializer_breaks_the_pool_with_its_message() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(failing_init, ())
        .build()
        .unwrap();
    let err = pool.map(square, 0..10).unwrap_err();
    assert!(err.to_string().contains("cannot initialise"), "{err}");
    let err = pool.apply(square, 1).unwrap_err();
    assert!(err.to_string().contains("initializer"), "{err}");
}

#[test]
fn max_tasks_per_child_replaces_workers() {
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(1)
        .chunksize(1)
        .build()
        .unwrap();
    let pids: HashSet<u32> = pool.map(my_pid, 0..8).unwrap().into_iter().collect();
    assert_eq!(pids.len(), 8, "every task ran in a fresh worker");
    assert!(pool.restarts() >= 6, "restarts: {}", pool.restarts());
    assert_eq!(pool.map(square, 0..4).unwrap(), [0, 1, 4, 9]);
}

fn pid_and_echo(v: Vec<u64>) -> (u32, Vec<u64>) {
    (std::process::id(), v)
}

#[test]
fn workers_that_replace_each_other_read_and_write_only_their_own_frames() {
    // One worker that retires after each task: a replacement's rings are
    // made in the segment of a worker that exited before (recycled), so
    // frames of other sizes and contents were there. Each result must be
    // its own task's, from its own process.
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_child(1)
        .chunksize(1)
        .build()
        .unwrap();
    let inputs: Vec<Vec<u64>> = (0..24u64)
        .map(|i| (0..(i * 37 % 500)).map(|j| i * 1000 + j).collect())
        .collect();
    let out = pool.map(pid_and_echo, inputs.clone()).unwrap();
    let pids: HashSet<u32> = out.iter().map(|(pid, _)| *pid).collect();
    assert_eq!(pids.len(), inputs.len(), "a fresh worker per task");
    let echoed: Vec<Vec<u64>> = out.into_iter().map(|(_, v)| v).collect();
    assert_eq!(echoed, inputs);
}

/// Sleeps on big items only, so the small task before a big one is done
/// while the big one still runs (and holds its frame in the task ring).
fn slow_if_big(v: Vec<u8>) -> usize {
    if v.len() > 1000 {
        std::thread::sleep(Duration::from_millis(300));
    }
    v.len()
}

#[test]
fn a_retiring_workers_last_frame_is_sent_even_if_its_ring_was_full() {
    // A 4 KiB task ring: item 0 (~0.4 KiB frame) and item 1 (~2 KiB) go
    // out together; item 0 finishes at once while item 1 runs for 300 ms,
    // so item 2's ~2 KiB frame fits neither after item 1 nor before it: it
    // waits in the parent. It is the worker's last task (max 3), so the
    // worker retires with that frame unsent; it must still be sent.
    let lens = [300usize, 1900, 1900, 10];
    let got = common::watchdog(Duration::from_secs(30), move || {
        let pool = Pool::builder()
            .processes(1)
            .ring_bytes(4096)
            .max_tasks_per_child(3)
            .chunksize(1)
            .build()
            .unwrap();
        let items: Vec<Vec<u8>> = lens.iter().map(|&n| vec![7u8; n]).collect();
        pool.map(slow_if_big, items)
    });
    assert_eq!(got.unwrap(), lens);
}

fn fragile(x: u64) -> u64 {
    if x == 37 {
        panic!("item {x} is cursed");
    }
    x
}

#[test]
fn a_panic_names_message_and_index_and_the_pool_stays_usable() {
    let pool = Pool::new(2).unwrap();
    let err = pool.map(fragile, 0..100).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    assert_eq!(err.item_index(), Some(37));
    assert!(err
        .panic_info()
        .unwrap()
        .message()
        .contains("item 37 is cursed"));
    assert!(err.pid().is_some());
    // Same workers, still fine.
    assert_eq!(pool.restarts(), 0);
    assert_eq!(
        pool.map(fragile, 0..10).unwrap(),
        (0..10).collect::<Vec<_>>()
    );

    // imap yields the items before the failure, then the error.
    let got: Vec<_> = pool.imap(fragile, 30..40).unwrap().collect();
    assert_eq!(got.len(), 8);
    assert!(got[..7].iter().all(|r| r.is_ok()));
    assert_eq!(got[7].as_ref().unwrap_err().item_index(), Some(7));
}

/// The death is noticed by itself: the tasks sleep for 120 s, so a map
/// that waited for them would hang until the watchdog.
#[cfg(unix)]
#[test]
fn a_sigkilled_worker_fails_the_map_then_the_pool_recovers() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let victim = pool.pids()[0];
        let running = SharedValue::new(0u32).unwrap();
        let killer = {
            let running = running.clone();
            std::thread::spawn(move || {
                wait_running(&running, 1);
                // SAFETY: plain syscall on a pid we own.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(victim as i32, libc::SIGKILL)
                };
            })
        };
        let items: Vec<_> = (0..4).map(|_| (120_000, running.clone())).collect();
        let err = pool.map(nap_counted, items).unwrap_err();
        killer.join().unwrap();
        assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
        assert_eq!(err.pid(), Some(victim));
        assert_eq!(
            err.exit_status().and_then(|s| s.signal()),
            Some(libc::SIGKILL)
        );
        // Replaced and usable.
        assert_eq!(pool.map(square, 0..5).unwrap(), [0, 1, 4, 9, 16]);
        assert_ne!(pool.pids()[0], victim);
        assert_eq!(pool.restarts(), 1);
        // The dead worker is reaped (in the background): no zombie stays.
        if cfg!(target_os = "linux") {
            let proc_entry = format!("/proc/{victim}");
            let gone = || !std::path::Path::new(&proc_entry).exists();
            let reaped = common::wait_for(Duration::from_secs(20), gone, |&gone| gone);
            assert!(reaped.is_ok(), "worker {victim} was never reaped");
        }
    });
}

#[cfg(unix)]
fn abort_on_five(x: u64) -> u64 {
    if x == 5 {
        std::process::abort();
    }
    x
}

#[cfg(unix)]
#[test]
fn an_aborting_worker_is_reported_with_its_signal() {
    let pool = Pool::builder().processes(2).chunksize(1).build().unwrap();
    let err = pool.map(abort_on_five, 0..10).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
    assert_eq!(
        err.exit_status().and_then(|s| s.signal()),
        Some(libc::SIGABRT)
    );
    assert_eq!(err.item_index(), Some(5));
    assert_eq!(pool.map(square, 0..3).unwrap(), [0, 1, 4]);
}

#[cfg(unix)]
#[test]
fn a_blocking_apply_whose_worker_dies_reports_it_and_the_pool_goes_on() {
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.apply(abort_on_five, 4).unwrap(), 4);
    let pid = pool.pids()[0];
    let err = pool.apply(abort_on_five, 5).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
    assert_eq!(err.pid(), Some(pid), "{err}");
    assert_eq!(
        err.exit_status().and_then(|s| s.signal()),
        Some(libc::SIGABRT)
    );
    assert_eq!(err.item_index(), Some(0));
    // Replaced: the next calls run on a new worker.
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    assert_ne!(pool.pids()[0], pid);
    assert_eq!(pool.restarts(), 1);
}

fn abort_on_six(x: u64) -> u64 {
    if x == 6 {
        std::process::abort();
    }
    x
}

fn abort_on_text_six(s: String) -> usize {
    if s == "6" {
        std::process::abort();
    }
    s.len()
}

#[test]
fn a_worker_that_dies_mid_chunk_reports_the_item_it_was_running() {
    // Chunks [0, 4), [4, 8), [8, 12): item 6 is in the middle of one.
    let pool = Pool::builder().processes(2).chunksize(4).build().unwrap();
    // Raw numbers …
    let err = pool.map(abort_on_six, 0..12).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
    assert_eq!(err.item_index(), Some(6), "{err}");
    assert!(err.to_string().contains("item 6"), "{err}");
    // … and serde items.
    let words: Vec<String> = (0..12).map(|i| i.to_string()).collect();
    let err = pool.map(abort_on_text_six, words).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
    assert_eq!(err.item_index(), Some(6), "{err}");
    // The next map, on the replacement worker, starts clean.
    assert_eq!(pool.map(square, 0..3).unwrap(), [0, 1, 4]);
}

#[test]
fn a_task_over_its_timeout_fails_and_its_worker_is_replaced() {
    // The timeout is long enough that the quick task after it never meets
    // it on a loaded machine.
    let pool = Pool::builder()
        .processes(1)
        .task_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let err = pool.apply(nap, 60_000).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(pool.apply(nap, 1).unwrap(), 1);
    assert_eq!(pool.restarts(), 1);
}

/// Sleeps holding 64 MiB of written memory: a process that takes a
/// while (milliseconds) to tear down once killed.
fn stall(_: &mut [u32]) {
    let held = vec![1u8; 64 << 20];
    std::thread::sleep(Duration::from_secs(120));
    std::hint::black_box(held);
}

/// A killed worker is reaped without the pool's lock held; its jobs must
/// still fail only once it is gone: a zero-copy call gives its `&mut`
/// borrow back only when no worker can write the memory any more. (The
/// kernel sleeps for 120 s: a call that waited for it would hang until
/// the watchdog.)
#[test]
fn a_zero_copy_map_cut_by_a_timeout_returns_once_its_worker_is_reaped() {
    watchdog(LIMIT, || {
        let pool = Pool::builder()
            .processes(1)
            .task_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let victim = pool.pids()[0];
        let mut v = ShmVec::<u32>::zeroed(1000).unwrap();
        let err = pool.map_in_place(stall, &mut v).unwrap_err();
        // Reaped before the call returned: its process entry is gone.
        #[cfg(target_os = "linux")]
        assert!(
            !std::path::Path::new(&format!("/proc/{victim}")).exists(),
            "worker {victim} was not reaped when its map returned"
        );
        assert!(err.is_timeout(), "{err}");
        assert_eq!(err.pid(), Some(victim), "{err}");
        assert_eq!(err.item_index(), Some(0), "{err}");
        #[cfg(unix)]
        assert_eq!(
            err.exit_status().and_then(|s| s.signal()),
            Some(libc::SIGKILL),
            "{err}"
        );
        // Replaced, and the memory is the caller's again.
        pool.map_in_place(|xs: &mut [u32]| xs.fill(7), &mut v)
            .unwrap();
        assert!(v.iter().all(|&x| x == 7));
        assert_eq!(pool.restarts(), 1);
    });
}

/// The blocked map returns without its tasks (they nap for 10 minutes:
/// waiting for them would hang until the watchdog).
#[test]
fn terminate_during_a_map_ends_it_and_refuses_more_work() {
    watchdog(LIMIT, || {
        let pool = std::sync::Arc::new(Pool::new(2).unwrap());
        let running = SharedValue::new(0u32).unwrap();
        let items: Vec<_> = (0..4).map(|_| (600_000, running.clone())).collect();
        let p2 = std::sync::Arc::clone(&pool);
        let t = std::thread::spawn(move || p2.map(nap_counted, items));
        wait_running(&running, 2);
        pool.terminate();
        let res = t.join().unwrap();
        assert!(res.is_err());
        assert!(
            pool.map(square, 0..2).is_err(),
            "a terminated pool refuses work"
        );
    });
}

#[cfg(unix)]
#[test]
fn dropping_a_pool_mid_map_leaves_no_worker_behind() {
    let pool = Pool::new(3).unwrap();
    let pids = pool.pids();
    let running = SharedValue::new(0u32).unwrap();
    let items: Vec<_> = (0..6).map(|_| (60_000, running.clone())).collect();
    let r = pool.map_async(nap_counted, items).unwrap();
    wait_running(&running, 3);
    drop(pool);
    assert!(r.get().is_err());
    for pid in pids {
        // SAFETY: signal 0 only checks existence.
        #[allow(unsafe_code)]
        let alive = unsafe { libc::kill(pid as i32, 0) } == 0;
        assert!(!alive, "worker {pid} outlived its pool");
    }
}

#[test]
fn close_then_join_finishes_queued_work_and_refuses_more() {
    let pool = Pool::new(2).unwrap();
    let r = pool.map_async(nap, vec![20u64; 6]).unwrap();
    assert_eq!(pool.join().unwrap_err().kind(), ErrorKind::InvalidState);
    pool.close();
    assert_eq!(
        pool.apply(square, 2).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    pool.join().unwrap();
    assert_eq!(r.get().unwrap(), vec![20u64; 6]);
}

#[test]
fn an_item_over_the_frame_limit_streams_through_a_small_ring() {
    // A 64 KiB ring takes frames of at most 32 KiB.
    let pool = Pool::builder()
        .processes(1)
        .ring_bytes(64 * 1024)
        .build()
        .unwrap();
    let big = patterned(100 * 1024, 3);
    assert_eq!(pool.apply(rotate, big.clone()).unwrap(), rotate(big));
    assert_eq!(
        pool.apply(|v: Vec<u8>| v.len(), vec![1u8; 1000]).unwrap(),
        1000
    );
    assert_eq!(pool.restarts(), 0);
}

#[test]
fn insights_count_tasks_and_items() {
    let pool = Pool::new(2).unwrap();
    pool.map(square, 0..1000).unwrap();
    let ins = pool.insights();
    assert_eq!(ins.len(), 2);
    assert_eq!(ins.iter().map(|w| w.items).sum::<u64>(), 1000);
    assert!(ins.iter().map(|w| w.tasks).sum::<u64>() >= 8);
    assert!(ins.iter().all(|w| w.busy.is_none()), "timing is opt-in");

    let timed = Pool::builder().processes(1).insights(true).build().unwrap();
    timed.map(nap, [30u64, 30]).unwrap();
    let w = &timed.insights()[0];
    assert_eq!(
        (w.tasks, w.items),
        (2, 2),
        "Python's chunk size: one item a task here"
    );
    assert!(w.busy.unwrap() >= Duration::from_millis(60), "{w:?}");
    assert!(w.idle.is_some());
}

#[test]
fn progress_reaches_the_total() {
    let pool = Pool::new(2).unwrap();
    let mut calls = Vec::new();
    let out = pool
        .map_with_progress(nap, vec![2u64; 100], |p| calls.push(p))
        .unwrap();
    assert_eq!(out.len(), 100);
    let last = calls.last().unwrap();
    assert_eq!((last.done, last.total), (100, 100));
    assert!(calls.windows(2).all(|w| w[0].done <= w[1].done));
}

#[test]
fn pinning_reports_what_the_os_allows() {
    let pool = Pool::builder()
        .processes(2)
        .pin_cores(true)
        .build()
        .unwrap();
    assert_eq!(pool.pinned(), multiproc::pinning_supported());
    assert_eq!(pool.map(square, 0..3).unwrap(), [0, 1, 4]);
}

fn affine(x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = x * x + 1.0;
    }
}

fn halve(xs: &mut [f32]) {
    for x in xs {
        *x /= 2.0;
    }
}

#[test]
fn zero_copy_maps_cover_every_element() {
    let pool = Pool::new(3).unwrap();
    let n = 1_000_003;
    let input = ShmVec::from_slice(&(0..n).map(|i| i as f64).collect::<Vec<_>>()).unwrap();
    let mut out = ShmVec::<f64>::zeroed(n).unwrap();
    for _ in 0..3 {
        pool.map_into(affine, &input, &mut out).unwrap();
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, &y)| y == (i as f64) * (i as f64) + 1.0));
        out.fill(0.0);
    }
    let mut bits = ShmVec::<u64>::zeroed(n).unwrap();
    pool.map_elements(|x: f64| x.to_bits(), &input, &mut bits)
        .unwrap();
    assert!(bits
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i as f64).to_bits()));

    let mut v = ShmVec::from_slice(&vec![8.0f32; n]).unwrap();
    pool.map_in_place(halve, &mut v).unwrap();
    assert!(v.iter().all(|&x| x == 4.0));

    let plain: Vec<u32> = (0..50_000).collect();
    let doubled = pool.map_slice(|x: u32| u64::from(x) * 2, &plain).unwrap();
    assert_eq!(
        doubled,
        plain.iter().map(|&x| u64::from(x) * 2).collect::<Vec<_>>()
    );
    // The arena is reused by the next call.
    let again = pool.map_slice(|x: u32| x + 1, &plain[..10]).unwrap();
    assert_eq!(again, (1..11).collect::<Vec<u32>>());
}

fn explode(_: &mut [u8]) {
    panic!("kernel failure");
}

#[test]
fn zero_copy_errors_are_reported() {
    let pool = Pool::new(2).unwrap();
    let a = ShmVec::<u8>::zeroed(10).unwrap();
    let mut b = ShmVec::<u8>::zeroed(11).unwrap();
    let err = pool.map_elements(|x: u8| x, &a, &mut b).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState);
    let mut c = ShmVec::<u8>::zeroed(100_000).unwrap();
    let err = pool.map_in_place(explode, &mut c).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    assert!(err
        .panic_info()
        .unwrap()
        .message()
        .contains("kernel failure"));
    pool.map_in_place(|x: &mut [u8]| x.fill(1), &mut c).unwrap();
    assert!(c.iter().all(|&x| x == 1));
}

#[test]
fn many_threads_share_one_pool() {
    let pool = std::sync::Arc::new(Pool::new(2).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let pool = std::sync::Arc::clone(&pool);
            std::thread::spawn(move || {
                for i in 0..50 {
                    assert_eq!(
                        pool.apply(square, t * 100 + i).unwrap(),
                        (t * 100 + i).pow(2)
                    );
                }
                let v = pool.map(square, 0..1000).unwrap();
                assert_eq!(v[999], 999 * 999);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn numbers_and_structured_values_mix_in_both_directions() {
    let pool = Pool::builder().processes(2).chunksize(7).build().unwrap();
    // Raw numbers in, serde out; serde in, raw numbers out; both raw.
    let words = pool.map(|x: u32| format!("#{x}"), 0..100).unwrap();
    assert_eq!(words[42], "#42");
    let lens = pool.map(|s: String| s.len() as f64, words).unwrap();
    assert_eq!(lens[5], 2.0);
    assert_eq!(lens[99], 3.0);
    let halves = pool
        .map(|x: i16| f32::from(x) / 2.0, [-3i16, 0, 7])
        .unwrap();
    assert_eq!(halves, [-1.5, 0.0, 3.5]);
    let wide = pool.map(|x: u8| u128::from(x) << 100, 0..=255u8).unwrap();
    assert_eq!(wide[255], 255u128 << 100);
}

fn blob(n: usize) -> Vec<u8> {
    vec![1u8; n]
}

#[test]
fn a_result_over_the_frame_limit_streams_through_a_small_ring() {
    let pool = Pool::builder()
        .processes(1)
        .ring_bytes(64 * 1024)
        .build()
        .unwrap();
    let blobs = pool.map(blob, [10, 100_000, 10]).unwrap();
    assert_eq!(
        blobs.iter().map(Vec::len).collect::<Vec<_>>(),
        [10, 100_000, 10]
    );
    assert!(blobs.iter().flatten().all(|&b| b == 1));
    assert_eq!(pool.restarts(), 0);
    // Many results that fill several frames each still arrive whole.
    let sizes = pool
        .map(|n: usize| blob(n).len(), vec![20_000usize; 10])
        .unwrap();
    assert_eq!(sizes, vec![20_000; 10]);
    let blobs = pool.map(blob, vec![20_000usize; 10]).unwrap();
    assert!(blobs.iter().all(|b| b.len() == 20_000));
}

#[test]
fn the_smallest_rings_still_carry_everything() {
    let pool = Pool::builder()
        .processes(2)
        .ring_bytes(4096)
        .build()
        .unwrap();
    let v = pool.map(square, 0..20_000).unwrap();
    assert_eq!(v[19_999], 19_999 * 19_999);
    let s = pool.map(|x: u32| x.to_string(), 0..5_000).unwrap();
    assert_eq!(s[4_321], "4321");
    let err = pool.apply(fragile, 37).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
}

fn shout(s: String) -> String {
    s + "!"
}

// Large maps of numbers go through the pool's arenas (shared memory the
// workers map in place) instead of the rings: the same answers, the same
// errors, down to the item.

/// Enough items for the arena path (it starts at 32 Ki items).
const ARENA_N: u64 = 100_000;

fn widen(x: u32) -> u64 {
    u64::from(x) * 3
}

fn halve_narrow(x: f64) -> f32 {
    (x / 2.0) as f32
}

fn to_wide(x: i8) -> i128 {
    i128::from(x) << 100
}

/// Says it has `said` items, has `has`.
struct Liar {
    next: u64,
    has: u64,
    said: usize,
}

impl Iterator for Liar {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        (self.next < self.has).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.said, Some(self.said))
    }
}

#[test]
fn large_maps_of_numbers_give_every_result_in_order() {
    let pool = Pool::new(2).unwrap();
    // One size in and out (one arena, in place) …
    let got = pool.map(square, 0..ARENA_N).unwrap();
    assert_eq!(got, (0..ARENA_N).map(|x| x * x).collect::<Vec<_>>());
    // … other sizes (two arenas), floats and 16-byte integers.
    let got = pool.map(widen, 0..ARENA_N as u32).unwrap();
    assert_eq!(got, (0..ARENA_N as u32).map(widen).collect::<Vec<_>>());
    let xs: Vec<f64> = (0..ARENA_N).map(|i| i as f64 * 0.25).collect();
    let got = pool.map(halve_narrow, xs.clone()).unwrap();
    assert_eq!(got, xs.iter().map(|&x| halve_narrow(x)).collect::<Vec<_>>());
    let small: Vec<i8> = (0..ARENA_N).map(|i| (i % 256) as u8 as i8).collect();
    let got = pool.map(to_wide, small.clone()).unwrap();
    assert_eq!(got, small.iter().map(|&x| to_wide(x)).collect::<Vec<_>>());
    // An iterator that does not know its length is collected first.
    let odd = (0..3 * ARENA_N).filter(|x| x % 3 == 1);
    assert_eq!(
        pool.map(square, odd.clone()).unwrap(),
        odd.map(square).collect::<Vec<_>>()
    );
    // The call's chunk size is kept (many small chunks, same answer).
    assert_eq!(
        pool.with_chunksize(1000).map(square, 0..ARENA_N).unwrap(),
        (0..ARENA_N).map(square).collect::<Vec<_>>()
    );
    // A size hint that is wrong either way loses nothing and adds nothing.
    for has in [ARENA_N - 7, ARENA_N + 9] {
        let liar = Liar {
            next: 0,
            has,
            said: ARENA_N as usize,
        };
        assert_eq!(
            pool.map(square, liar).unwrap(),
            (0..has).map(square).collect::<Vec<_>>(),
            "an iterator with {has} items that says {ARENA_N}"
        );
    }
    // An input iterator that panics while it is written into the arena
    // (its first chunks already running): the panic reaches the caller,
    // as from the rings' collect, and the pool goes on.
    let bad = (0..ARENA_N).inspect(|&i| {
        if i == ARENA_N / 2 {
            panic!("input {i} is bad");
        }
    });
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.map(square, bad)));
    let why = caught.unwrap_err();
    assert!(why
        .downcast_ref::<String>()
        .is_some_and(|m| m.contains("is bad")));
    // Calls one after the other reuse the arenas and stay right.
    for round in 0..3u64 {
        let got = pool.map(square, round..round + ARENA_N).unwrap();
        assert_eq!(got[0], round * round);
        assert_eq!(got[ARENA_N as usize - 1], (round + ARENA_N - 1).pow(2));
    }
}

fn cursed_far(x: u64) -> u64 {
    if x == 77_777 {
        panic!("item {x} is cursed");
    }
    x
}

fn abort_far(x: u64) -> u64 {
    if x == 66_666 {
        std::process::abort();
    }
    x
}

#[test]
fn a_large_map_of_numbers_names_the_item_that_panicked_or_killed_its_worker() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let err = pool.map(cursed_far, 0..ARENA_N).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
        assert_eq!(err.item_index(), Some(77_777), "{err}");
        assert!(err
            .panic_info()
            .unwrap()
            .message()
            .contains("item 77777 is cursed"));
        assert_eq!(pool.restarts(), 0);
        let err = pool.map(abort_far, 0..ARENA_N).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
        assert_eq!(err.item_index(), Some(66_666), "{err}");
        assert!(err.to_string().contains("item 66666"), "{err}");
        // The replacement worker and the arenas serve the next call.
        assert_eq!(
            pool.map(square, 0..ARENA_N).unwrap(),
            (0..ARENA_N).map(square).collect::<Vec<_>>()
        );
    });
}

/// Items of a map longer than the pool's arenas hold at once (8 MiB of
/// `u64`: 1 Mi items): 2.6 windows, a length no window or chunk divides.
const WINDOWS_N: u64 = 2_700_001;

fn cursed_late(x: u64) -> u64 {
    if x == 2_500_123 {
        panic!("item {x} is cursed");
    }
    x
}

fn abort_late(x: u64) -> u64 {
    if x == 2_300_001 {
        std::process::abort();
    }
    x
}

#[test]
fn maps_longer_than_the_arenas_window_keep_every_result_in_order() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let want: Vec<u64> = (0..WINDOWS_N).map(square).collect();
        // Numbers through `map`: in place, then into a second arena of
        // another width, then in the call's own chunks (which end where
        // the window wraps).
        assert_eq!(pool.map(square, 0..WINDOWS_N).unwrap(), want);
        let got = pool.map(widen, 0..WINDOWS_N as u32).unwrap();
        assert!(got.iter().enumerate().all(|(i, &y)| y == 3 * i as u64));
        assert_eq!(
            pool.with_chunksize(100_003)
                .map(square, 0..WINDOWS_N)
                .unwrap(),
            want
        );
        // A size hint that is wrong either way, through the window too.
        for has in [WINDOWS_N - 1_000_003, WINDOWS_N + 9] {
            let liar = Liar {
                next: 0,
                has,
                said: WINDOWS_N as usize,
            };
            assert_eq!(
                pool.map(square, liar).unwrap(),
                (0..has).map(square).collect::<Vec<_>>(),
                "an iterator with {has} items that says {WINDOWS_N}"
            );
        }
        // `map_slice`: in place, narrower and wider results.
        let xs: Vec<f64> = (0..WINDOWS_N).map(|i| i as f64).collect();
        let out = pool.map_slice(|x: f64| x * 2.0 + 1.0, &xs).unwrap();
        assert_eq!(out.len(), xs.len());
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, &y)| y == i as f64 * 2.0 + 1.0));
        let narrow = pool.map_slice(|x: f64| x as u32, &xs).unwrap();
        assert!(narrow.iter().enumerate().all(|(i, &y)| y as usize == i));
        // In the pool's own chunk size, which the window cuts where it wraps.
        let chunked = Pool::builder()
            .processes(2)
            .chunksize(77_777)
            .build()
            .unwrap();
        let wide = chunked
            .map_slice(|y: u32| [u64::from(y); 2], &narrow)
            .unwrap();
        assert!(wide.iter().enumerate().all(|(i, y)| *y == [i as u64; 2]));
    });
}

#[test]
fn a_map_longer_than_the_arenas_window_names_the_item_that_failed() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        // The item counted in the map, not by its place in the window.
        let err = pool.map(cursed_late, 0..WINDOWS_N).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
        assert_eq!(err.item_index(), Some(2_500_123), "{err}");
        let err = pool.map(abort_late, 0..WINDOWS_N).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
        assert_eq!(err.item_index(), Some(2_300_001), "{err}");
        // `map_slice` names the first item of the chunk that panicked.
        let xs: Vec<u64> = (0..WINDOWS_N).collect();
        let chunked = Pool::builder()
            .processes(2)
            .chunksize(1000)
            .build()
            .unwrap();
        let err = chunked.map_slice(cursed_late, &xs).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
        let at = err.item_index().expect("an item");
        assert!((2_499_124..=2_500_123).contains(&at), "{err}");
        // The replacement worker and the arenas serve the next calls.
        assert_eq!(
            pool.map_slice(square, &xs).unwrap()[2_600_000],
            2_600_000u64.pow(2)
        );
        assert_eq!(
            pool.map(square, 0..WINDOWS_N).unwrap()[2_699_999],
            2_699_999u64.pow(2)
        );
    });
}

#[test]
fn a_panicking_input_iterator_fails_its_call_not_the_pool() {
    let pool = Pool::new(2).unwrap();
    let items = (0u64..).inspect(|&i| {
        if i == 50 {
            panic!("input {i} is bad");
        }
    });
    let got: Vec<_> = pool.imap(square, items).unwrap().collect();
    let err = got.last().unwrap().as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    assert!(err
        .panic_info()
        .unwrap()
        .message()
        .contains("input 50 is bad"));
    assert_eq!(err.item_index(), Some(50), "{err}");
    // As CPython: every good result first, in order, then the error.
    let good: Vec<u64> = got[..got.len() - 1]
        .iter()
        .map(|r| *r.as_ref().unwrap())
        .collect();
    assert_eq!(good, (0..50u64).map(|x| x * x).collect::<Vec<_>>());
    // The same in chunks of 8 (the failure in the middle of one), with
    // numbers (raw chunks) and strings (serde chunks).
    let chunked = Pool::builder().processes(2).chunksize(8).build().unwrap();
    let items = (0u64..).inspect(|&i| assert!(i != 50, "input {i} is bad"));
    let got: Vec<_> = chunked.imap(square, items).unwrap().collect();
    assert_eq!(got.len(), 51);
    assert!(got[..50].iter().all(|r| r.is_ok()));
    assert_eq!(got[50].as_ref().unwrap_err().item_index(), Some(50));
    let words = (0u64..).map(|i| {
        assert!(i != 50, "input {i} is bad");
        i.to_string()
    });
    let got: Vec<_> = chunked.imap(shout, words).unwrap().collect();
    assert_eq!(got.len(), 51);
    assert_eq!(got[49].as_ref().unwrap(), "49!");
    assert_eq!(got[50].as_ref().unwrap_err().item_index(), Some(50));
    // Async work and later calls still run.
    assert_eq!(
        pool.map_async(square, 0..4).unwrap().get().unwrap(),
        [0, 1, 4, 9]
    );
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
}

fn slow_then_fail(x: u64) -> u64 {
    if x == 3 {
        panic!("three fails at once");
    }
    std::thread::sleep(Duration::from_millis(100 * 3u64.saturating_sub(x)));
    x
}

#[test]
fn ordered_imap_yields_earlier_items_that_finish_after_the_failure() {
    let pool = Pool::new(4).unwrap();
    let got: Vec<_> = pool.imap(slow_then_fail, 0..6).unwrap().collect();
    let values: Vec<u64> = got[..3].iter().map(|r| *r.as_ref().unwrap()).collect();
    assert_eq!(values, [0, 1, 2]);
    assert_eq!(got[3].as_ref().unwrap_err().item_index(), Some(3));
    assert_eq!(got.len(), 4);
}

fn slow_start(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn task_timeouts_count_from_the_start_of_the_task_not_of_the_worker() {
    // The initializer takes longer than the task timeout; the task does
    // not, by far more than a loaded machine can delay it.
    let pool = Pool::builder()
        .processes(1)
        .initializer(slow_start, 3_000)
        .task_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert_eq!(pool.apply(nap, 10).unwrap(), 10);
    assert_eq!(pool.restarts(), 0);
}

/// Python raises `ValueError` for these; they were once taken as 1.
#[test]
fn zero_processes_tasks_per_child_or_chunksize_are_errors() {
    for (what, builder) in [
        ("processes", Pool::builder().processes(0)),
        (
            "max_tasks_per_child",
            Pool::builder().processes(1).max_tasks_per_child(0),
        ),
        ("chunksize", Pool::builder().processes(1).chunksize(0)),
    ] {
        let err = match builder.build() {
            Ok(_) => panic!("{what}(0) was accepted"),
            Err(e) => e,
        };
        assert_eq!(err.kind(), ErrorKind::InvalidState, "{what}: {err}");
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
    assert_eq!(
        multiproc::Barrier::new(0).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
}

/// CPython's `test_maxtasksperchild_close_join` shape: after `close()`,
/// queued work still finishes, on replacement workers if it must (it once
/// hung: retired workers were replaced only while the pool ran).
#[test]
fn queued_work_finishes_after_close_with_max_tasks_per_child() {
    watchdog(LIMIT, || {
        let pool = Pool::builder()
            .processes(1)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        let results: Vec<_> = (0..6u64)
            .map(|i| pool.apply_async(square, i).unwrap())
            .collect();
        pool.close();
        pool.join().unwrap();
        let got: Vec<u64> = results.into_iter().map(|r| r.get().unwrap()).collect();
        assert_eq!(got, [0, 1, 4, 9, 16, 25]);
        assert!(pool.restarts() >= 5, "each task needs a fresh worker");
    });
}

/// Both workers die of their initializer before the pool dispatched any
/// work: the call must fail with the initializer's error, not wait for a
/// dispatch a broken pool never makes (it hung when the pool learnt of
/// the failure from a worker's last frame rather than from its exit).
#[cfg(target_os = "linux")]
#[test]
fn work_never_dispatched_fails_when_the_initializer_breaks_the_pool() {
    fn dead(pid: u32) -> bool {
        // Gone, or a zombie nobody reaped yet.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    }
    watchdog(LIMIT, || {
        for _ in 0..5 {
            let pool = Pool::builder()
                .processes(2)
                .initializer(failing_init, ())
                .build()
                .unwrap();
            let pids = pool.pids();
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !pids.iter().all(|&p| dead(p)) {
                assert!(std::time::Instant::now() < deadline, "workers still alive");
                std::thread::sleep(Duration::from_millis(1));
            }
            let err = pool.map(square, 0..10).unwrap_err();
            assert!(err.to_string().contains("cannot initialise"), "{err}");
        }
    });
}

// ---- Per-call chunk size: `pool.with_chunksize(n)` (Python's `chunksize=`).

/// Tasks completed so far over all workers.
fn tasks_done(pool: &Pool) -> u64 {
    pool.insights().iter().map(|w| w.tasks).sum()
}

#[test]
fn with_chunksize_gives_the_same_results_for_every_size() {
    let pool = Pool::new(3).unwrap();
    let want: Vec<u64> = (0..100u64).map(|x| x * x).collect();
    let pairs: Vec<(i64, i64)> = (0..100).map(|i| (i, -2 * i)).collect();
    let sums: Vec<i64> = (0..100).map(|i| -i).collect();
    let words: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    let loud: Vec<String> = (0..100).map(|i| format!("w{i}!")).collect();
    for chunk in [1, 2, 7, 100, 1000] {
        let c = pool.with_chunksize(chunk);
        assert_eq!(c.map(square, 0..100).unwrap(), want, "map, {chunk}");
        assert_eq!(
            c.map(shout, words.clone()).unwrap(),
            loud,
            "postcard map, {chunk}"
        );
        assert_eq!(
            c.starmap(add, pairs.clone()).unwrap(),
            sums,
            "starmap, {chunk}"
        );
        let ordered: Vec<u64> = c
            .imap(square, 0..100)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ordered, want, "imap, {chunk}");
        let mut any: Vec<u64> = c
            .imap_unordered(square, 0..100)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        any.sort_unstable();
        assert_eq!(any, want, "imap_unordered, {chunk}");
        assert_eq!(
            c.map_async(square, 0..100).unwrap().get().unwrap(),
            want,
            "map_async, {chunk}"
        );
        assert_eq!(
            c.starmap_async(add, pairs.clone()).unwrap().get().unwrap(),
            sums,
            "starmap_async, {chunk}"
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let tx2 = tx.clone();
        let r = c
            .map_async_with(
                square,
                0..100,
                move |v: &[u64]| tx.send(v.to_vec()).unwrap(),
                |e| panic!("{e}"),
            )
            .unwrap();
        assert_eq!(r.get().unwrap(), want, "map_async_with, {chunk}");
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), want);
        let (stx, srx) = std::sync::mpsc::channel();
        let r = c
            .starmap_async_with(
                add,
                pairs.clone(),
                move |v: &[i64]| stx.send(v.to_vec()).unwrap(),
                |e| panic!("{e}"),
            )
            .unwrap();
        assert_eq!(r.get().unwrap(), sums, "starmap_async_with, {chunk}");
        assert_eq!(srx.recv_timeout(LIMIT).unwrap(), sums);
        drop(tx2);
    }
}

/// Observed through the workers' task counts: `n` items in chunks of `c`
/// are `ceil(n / c)` tasks, whatever the pool's own chunk size (3 here),
/// which the plain calls keep.
#[test]
fn with_chunksize_sets_the_items_per_task_of_that_call_only() {
    let pool = Pool::builder().processes(1).chunksize(3).build().unwrap();
    let words: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    for (chunk, tasks) in [(1, 100), (8, 13), (100, 1), (1000, 1)] {
        let c = pool.with_chunksize(chunk);
        let check = |what: &str, run: &mut dyn FnMut()| {
            let before = tasks_done(&pool);
            run();
            assert_eq!(
                tasks_done(&pool) - before,
                tasks,
                "{what}: 100 items, chunksize {chunk}"
            );
        };
        check("map", &mut || {
            assert_eq!(c.map(square, 0..100).unwrap().len(), 100)
        });
        check("postcard map", &mut || {
            assert_eq!(c.map(shout, words.clone()).unwrap().len(), 100)
        });
        check("imap", &mut || {
            assert_eq!(c.imap(square, 0..100).unwrap().count(), 100)
        });
        check("imap_unordered", &mut || {
            assert_eq!(c.imap_unordered(square, 0..100).unwrap().count(), 100)
        });
        check("map_async", &mut || {
            assert_eq!(
                c.map_async(square, 0..100).unwrap().get().unwrap().len(),
                100
            )
        });
        check("map_async_with", &mut || {
            let r = c.map_async_with(square, 0..100, |_| {}, |e| panic!("{e}"));
            assert_eq!(r.unwrap().get().unwrap().len(), 100)
        });
    }
    let before = tasks_done(&pool);
    pool.map(square, 0..100).unwrap();
    assert_eq!(tasks_done(&pool) - before, 34, "the pool's own chunksize 3");
    let before = tasks_done(&pool);
    assert_eq!(pool.imap(square, 0..100).unwrap().count(), 100);
    assert_eq!(
        tasks_done(&pool) - before,
        34,
        "imap: the pool's own chunksize 3"
    );
}

/// Python raises `ValueError` for `chunksize=0`; so does every call here,
/// and no callback of a refused call runs.
#[test]
fn with_chunksize_zero_is_refused_by_every_call() {
    let pool = Pool::new(1).unwrap();
    let called = std::sync::Arc::new(AtomicU64::new(0));
    let zero = pool.with_chunksize(0);
    let c = |n: &std::sync::Arc<AtomicU64>| {
        let n = std::sync::Arc::clone(n);
        move || {
            n.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (a, b, d, e) = (c(&called), c(&called), c(&called), c(&called));
    let errors = [
        ("map", zero.map(square, 0..10).err()),
        ("starmap", zero.starmap(add, [(1, 2)]).err()),
        ("imap", zero.imap(square, 0..10).err()),
        ("imap_unordered", zero.imap_unordered(square, 0..10).err()),
        ("map_async", zero.map_async(square, 0..10).err()),
        ("starmap_async", zero.starmap_async(add, [(1, 2)]).err()),
        (
            "map_async_with",
            zero.map_async_with(square, 0..10, move |_| a(), move |_| b())
                .err(),
        ),
        (
            "starmap_async_with",
            zero.starmap_async_with(add, [(1, 2)], move |_| d(), move |_| e())
                .err(),
        ),
    ];
    for (what, err) in errors {
        let err = err.unwrap_or_else(|| panic!("{what} took chunksize 0"));
        assert_eq!(err.kind(), ErrorKind::InvalidState, "{what}: {err}");
        assert!(err.to_string().contains("chunksize"), "{what}: {err}");
    }
    assert_eq!(pool.map(square, 0..3).unwrap(), [0, 1, 4]);
    pool.close();
    pool.join().unwrap(); // would run any queued callback
    assert_eq!(called.load(Ordering::SeqCst), 0);
}

// ---- `callback` / `error_callback`: `apply_async_with`, `map_async_with`,
// `starmap_async_with`.

#[test]
fn callbacks_run_once_with_the_value_and_get_still_returns_it() {
    use std::sync::atomic::AtomicBool;
    use std::sync::{mpsc, Arc};
    let pool = Pool::new(2).unwrap();

    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let r = pool
        .apply_async_with(
            square,
            7,
            move |v: &u64| tx.send(Ok(*v)).unwrap(),
            move |e: &multiproc::Error| tx2.send(Err(e.kind())).unwrap(),
        )
        .unwrap();
    assert_eq!(r.get().unwrap(), 49);
    assert_eq!(rx.recv_timeout(LIMIT).unwrap(), Ok(49));

    // As in Python, the result is ready only once its callback returned,
    // and a bounded wait can run out while the callback still runs.
    let go = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let finished = Arc::new(AtomicBool::new(false));
    let (go2, finished2) = (Arc::clone(&go), Arc::clone(&finished));
    let mut r = pool
        .apply_async_with(
            square,
            3,
            move |_: &u64| {
                let (m, cv) = &*go2;
                let mut open = m.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
                finished2.store(true, Ordering::SeqCst);
            },
            |e| panic!("{e}"),
        )
        .unwrap();
    assert!(r
        .wait_timeout(Duration::from_millis(50))
        .unwrap_err()
        .is_timeout());
    assert!(!r.ready());
    assert_eq!(r.successful(), None);
    *go.0.lock().unwrap() = true;
    go.1.notify_all();
    r.wait();
    assert!(
        finished.load(Ordering::SeqCst),
        "ready before its callback returned"
    );
    assert!(r.ready());
    assert_eq!(r.successful(), Some(true));
    assert_eq!(r.get_timeout(LIMIT).unwrap(), 9);
    assert_eq!(
        r.get_timeout(LIMIT).unwrap_err().kind(),
        ErrorKind::InvalidState,
        "taken once"
    );

    // Python's pattern: fire and forget, then close and join; every
    // callback ran exactly once by then.
    let calls = Arc::new(AtomicU64::new(0));
    let sum = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    for i in 0..20u64 {
        let (calls, sum, errors) = (calls.clone(), sum.clone(), errors.clone());
        pool.apply_async_with(
            square,
            i,
            move |v: &u64| {
                calls.fetch_add(1, Ordering::SeqCst);
                sum.fetch_add(*v, Ordering::SeqCst);
            },
            move |_| {
                errors.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
    }
    pool.close();
    pool.join().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 20);
    assert_eq!(sum.load(Ordering::SeqCst), (0..20u64).map(|i| i * i).sum());
    assert_eq!(errors.load(Ordering::SeqCst), 0);
}

#[test]
fn map_callbacks_get_the_list_and_error_callbacks_the_first_error() {
    use std::sync::mpsc;
    let pool = Pool::new(2).unwrap();

    let (tx, rx) = mpsc::channel();
    let r = pool
        .map_async_with(
            square,
            0..50,
            move |v: &[u64]| tx.send(v.to_vec()).unwrap(),
            |e| panic!("{e}"),
        )
        .unwrap();
    let want: Vec<u64> = (0..50u64).map(|x| x * x).collect();
    assert_eq!(rx.recv_timeout(LIMIT).unwrap(), want);
    assert_eq!(r.get().unwrap(), want);

    let (tx, rx) = mpsc::channel();
    let r = pool
        .starmap_async_with(
            add,
            [(1, 2), (3, 4)],
            move |v: &[i64]| tx.send(v.to_vec()).unwrap(),
            |e| panic!("{e}"),
        )
        .unwrap();
    assert_eq!(rx.recv_timeout(LIMIT).unwrap(), [3, 7]);
    assert_eq!(r.get().unwrap(), [3, 7]);
    assert_eq!(
        pool.starmap_async(add, [(5, 6)]).unwrap().get().unwrap(),
        [11]
    );

    // A task that panics: the error callback gets the panic and its item.
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let r = pool
        .map_async_with(
            fragile,
            0..100,
            move |_: &[u64]| tx2.send(None).unwrap(),
            move |e: &multiproc::Error| tx.send(Some((e.kind(), e.item_index()))).unwrap(),
        )
        .unwrap();
    assert_eq!(
        rx.recv_timeout(LIMIT).unwrap(),
        Some((ErrorKind::Panicked, Some(37)))
    );
    r.wait();
    assert_eq!(r.successful(), Some(false));
    let err = r.get().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    assert_eq!(err.item_index(), Some(37));
    assert!(rx.try_recv().is_err(), "called once");

    // Without callbacks too, a failure taken by `get_timeout` stays a
    // failure for `successful`.
    let mut r = pool.apply_async(fragile, 37).unwrap();
    assert!(r.get_timeout(LIMIT).unwrap_err().is_panic());
    assert_eq!(r.successful(), Some(false));
}

/// Callbacks never run under the pool's lock: one that submits work, waits
/// for it (also for a result with callbacks of its own, whose callback runs
/// on the same thread) and calls the blocking `apply` finishes; under the
/// lock it would hang until the watchdog.
#[test]
fn a_callback_may_call_back_into_the_pool() {
    use std::sync::{mpsc, Arc};
    watchdog(LIMIT, || {
        let pool = Arc::new(Pool::new(2).unwrap());
        let (tx, rx) = mpsc::channel();
        let p2 = Arc::clone(&pool);
        let r = pool
            .apply_async_with(
                square,
                3,
                move |v: &u64| {
                    let more = p2.apply_async(square, *v).unwrap();
                    let blocking = p2.apply(square, 2).unwrap();
                    let tx3 = tx.clone();
                    let nested = p2
                        .apply_async_with(
                            square,
                            5,
                            move |w: &u64| tx3.send(("nested callback", *w)).unwrap(),
                            |e| panic!("{e}"),
                        )
                        .unwrap();
                    tx.send(("nested get", nested.get().unwrap())).unwrap();
                    tx.send(("more", more.get().unwrap())).unwrap();
                    tx.send(("blocking", blocking)).unwrap();
                    tx.send(("map", p2.map(square, 0..4).unwrap().iter().sum()))
                        .unwrap();
                },
                |e| panic!("{e}"),
            )
            .unwrap();
        assert_eq!(r.get().unwrap(), 9);
        let mut got: Vec<(&str, u64)> = (0..5).map(|_| rx.recv_timeout(LIMIT).unwrap()).collect();
        got.sort_unstable();
        assert_eq!(
            got,
            [
                ("blocking", 4),
                ("map", 14),
                ("more", 81),
                ("nested callback", 25),
                ("nested get", 25)
            ]
        );
    });
}

/// The callback holds the last handle on the pool: the pool is dropped
/// (terminated) on the callback thread, which must not wait for itself.
#[cfg(unix)]
#[test]
fn the_last_handle_on_a_pool_may_be_dropped_in_a_callback() {
    use std::sync::{mpsc, Arc};
    watchdog(LIMIT, || {
        let pool = Arc::new(Pool::new(1).unwrap());
        let pid = pool.pids()[0];
        let go = Event::new().unwrap();
        let (tx, rx) = mpsc::channel();
        let last = Arc::clone(&pool);
        let r = pool
            .apply_async_with(
                when_set,
                (go.clone(), 5),
                move |v: &u64| {
                    drop(last);
                    tx.send(*v).unwrap();
                },
                |e| panic!("{e}"),
            )
            .unwrap();
        drop(pool);
        go.set();
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 5);
        assert_eq!(r.get().unwrap(), 5);
        let gone = || {
            // SAFETY: signal 0 only checks existence.
            #[allow(unsafe_code)]
            let alive = unsafe { libc::kill(pid as i32, 0) } == 0;
            !alive
        };
        assert!(
            common::wait_for(LIMIT, gone, |&g| g).is_ok(),
            "worker {pid} outlived its pool"
        );
    });
}

/// Terminating or dropping the pool fails the work in flight and queued:
/// each error callback gets `InvalidState` once, before `terminate()` or
/// the drop returns.
#[test]
fn terminate_and_drop_send_the_error_to_each_error_callback_once() {
    use std::sync::{mpsc, Arc};
    watchdog(LIMIT, || {
        for how in ["terminate", "drop"] {
            let pool = Pool::new(1).unwrap();
            let running = SharedValue::new(0u32).unwrap();
            let values = Arc::new(AtomicU64::new(0));
            let (tx, rx) = mpsc::channel();
            let results: Vec<_> = (0..3)
                .map(|i| {
                    let (values, tx) = (Arc::clone(&values), tx.clone());
                    pool.apply_async_with(
                        nap_counted,
                        (600_000 + i, running.clone()),
                        move |_: &u64| {
                            values.fetch_add(1, Ordering::SeqCst);
                        },
                        move |e: &multiproc::Error| tx.send(e.kind()).unwrap(),
                    )
                    .unwrap()
                })
                .collect();
            wait_running(&running, 1);
            if how == "terminate" {
                pool.terminate();
            } else {
                drop(pool);
            }
            drop(tx);
            let kinds: Vec<ErrorKind> = rx.try_iter().collect();
            assert_eq!(kinds, [ErrorKind::InvalidState; 3], "{how}");
            assert_eq!(values.load(Ordering::SeqCst), 0, "{how}");
            for r in results {
                assert_eq!(r.get().unwrap_err().kind(), ErrorKind::InvalidState);
            }
        }
    });
}

#[cfg(unix)]
#[test]
fn a_killed_worker_sends_process_died_to_the_error_callback() {
    use std::sync::mpsc;
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let victim = pool.pids()[0];
        let running = SharedValue::new(0u32).unwrap();
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        let items: Vec<_> = (0..4).map(|_| (120_000, running.clone())).collect();
        let r = pool
            .map_async_with(
                nap_counted,
                items,
                move |_: &[u64]| tx2.send(None).unwrap(),
                move |e: &multiproc::Error| tx.send(Some((e.kind(), e.pid()))).unwrap(),
            )
            .unwrap();
        wait_running(&running, 1);
        // SAFETY: plain syscall on a pid we own.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(victim as i32, libc::SIGKILL)
        };
        assert_eq!(
            rx.recv_timeout(LIMIT).unwrap(),
            Some((ErrorKind::ProcessDied, Some(victim)))
        );
        assert_eq!(r.get().unwrap_err().kind(), ErrorKind::ProcessDied);
        // The replacement runs callbacks as before.
        let (tx, rx) = mpsc::channel();
        let r = pool
            .apply_async_with(
                square,
                4,
                move |v: &u64| tx.send(*v).unwrap(),
                |e| panic!("{e}"),
            )
            .unwrap();
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 16);
        assert_eq!(r.get().unwrap(), 16);
        assert!(rx.try_recv().is_err(), "called once");
    });
}

/// A panicking callback is caught on the callback thread (and printed):
/// the value is still there, later callbacks run, the pool works.
#[test]
fn a_panicking_callback_leaves_the_value_the_pool_and_later_callbacks_alone() {
    use std::sync::mpsc;
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let r = pool
            .apply_async_with(square, 6, |_| panic!("callback boom"), |_| {})
            .unwrap();
        assert_eq!(r.get().unwrap(), 36);
        let r = pool
            .apply_async_with(fragile, 37, |_| {}, |_| panic!("error callback boom"))
            .unwrap();
        assert_eq!(r.get().unwrap_err().kind(), ErrorKind::Panicked);
        let r = pool
            .map_async_with(square, 0..10, |_| panic!("map callback boom"), |_| {})
            .unwrap();
        assert_eq!(r.get().unwrap()[9], 81);

        let (tx, rx) = mpsc::channel();
        let r = pool
            .apply_async_with(
                square,
                5,
                move |v: &u64| tx.send(*v).unwrap(),
                |e| panic!("{e}"),
            )
            .unwrap();
        assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 25);
        assert_eq!(r.get().unwrap(), 25);
        assert_eq!(pool.map(square, 0..5).unwrap(), [0, 1, 4, 9, 16]);
        pool.close();
        pool.join().unwrap();
    });
}

// ---- Items and results over the frame limit (streamed as long messages) ----
//
// Bulk bytes travel as `ByteBuf` (serde's bytes: one copy) except in the
// test of a plain `Vec<u8>`: unoptimised serde takes ~0.15 µs a byte
// through a `Vec<u8>`'s elements, ~10 s per 64 MiB round trip.

use serde_bytes::ByteBuf;

const MIB: usize = 1 << 20;

/// `n` bytes that differ from position to position and from seed to seed.
fn patterned(n: usize, seed: u8) -> Vec<u8> {
    let mut v = vec![seed; n];
    for (i, b) in v.iter_mut().enumerate().step_by(4093) {
        *b = (i >> 12) as u8 ^ seed.wrapping_add(1);
    }
    v
}

/// The item rotated left by one: a result as long as the item, and not it.
fn rotate(mut v: Vec<u8>) -> Vec<u8> {
    if !v.is_empty() {
        v.rotate_left(1);
    }
    v
}

fn rotate_bytes(v: ByteBuf) -> ByteBuf {
    ByteBuf::from(rotate(v.into_vec()))
}

fn byte_blob(n: usize) -> ByteBuf {
    ByteBuf::from(patterned(n, 7))
}

fn is_rotation_of(out: &[u8], v: &[u8]) -> bool {
    out.len() == v.len()
        && (v.is_empty() || (out[..v.len() - 1] == v[1..] && out[v.len() - 1] == v[0]))
}

/// Halves of each float, as `f32`s.
fn halves(v: Vec<f64>) -> Vec<f32> {
    v.iter().map(|x| (*x / 2.0) as f32).collect()
}

/// Byte vectors, strings and float vectors cross by one copy (`bulk.rs`):
/// the results are serde's, for empty, small and frame-sized values, as
/// items of a map, a borrowed map and an `apply`.
#[test]
fn byte_string_and_float_vectors_cross_whole_at_any_size() {
    watchdog(LIMIT, || {
        let pool = Pool::builder().processes(2).chunksize(3).build().unwrap();
        let sizes = [0usize, 1, 7, 1000, 70_000, 300_000];
        let floats: Vec<Vec<f64>> = sizes
            .iter()
            .map(|&n| (0..n).map(|i| i as f64 * 0.25 - 3.0).collect())
            .collect();
        let want: Vec<Vec<f32>> = floats.iter().cloned().map(halves).collect();
        assert_eq!(pool.map(halves, &floats).unwrap(), want);
        assert_eq!(pool.map(halves, floats.clone()).unwrap(), want);
        let texts: Vec<String> = sizes.iter().map(|&n| "é".repeat(n / 2)).collect();
        let loud: Vec<String> = texts.iter().cloned().map(shout).collect();
        assert_eq!(pool.map(shout, &texts).unwrap(), loud);
        let bytes: Vec<Vec<u8>> = sizes.iter().map(|&n| patterned(n, 3)).collect();
        for (out, v) in pool.map(rotate, bytes.clone()).unwrap().iter().zip(&bytes) {
            assert!(is_rotation_of(out, v));
        }
        let big = patterned(3 * MIB, 9);
        assert!(is_rotation_of(
            &pool.apply(rotate, big.clone()).unwrap(),
            &big
        ));
    });
}

/// The brief's case, literally: a plain `Vec<u8>` of 64 MiB each way with
/// the default rings. (Slow unoptimised: see above; the watchdog only
/// catches a hang.)
#[test]
fn apply_carries_a_64_mib_vec_argument_and_result_with_the_default_rings() {
    watchdog(5 * LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let v = patterned(64 * MIB, 1);
        let out = pool.apply(rotate, v.clone()).unwrap();
        assert!(is_rotation_of(&out, &v));
        assert_eq!(pool.restarts(), 0);
    });
}

/// Python's form, the argument tuple, and a result many times the ring.
#[test]
fn apply_and_apply_async_carry_64_mib_both_ways() {
    watchdog(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let v = ByteBuf::from(patterned(64 * MIB, 2));
        let len = pool
            .apply(|(v,): (ByteBuf,)| v.len(), (v.clone(),))
            .unwrap();
        assert_eq!(len, 64 * MIB);
        let out = pool.apply_async(rotate_bytes, v.clone()).unwrap();
        assert!(is_rotation_of(&out.get().unwrap(), &v));
        assert_eq!(pool.restarts(), 0);
    });
}

/// Small items around long ones, 4 to a chunk: a chunk that would hold a
/// long item is split, the long item going alone; order and contents
/// survive every call.
#[test]
fn every_call_carries_items_and_results_over_the_frame_limit() {
    watchdog(LIMIT, || {
        let pool = Pool::builder().processes(2).chunksize(4).build().unwrap();
        let items: Vec<ByteBuf> = [10, 16 * MIB, 20, 30, MIB, 40, 16 * MIB + 5, 50]
            .iter()
            .enumerate()
            .map(|(i, &n)| ByteBuf::from(patterned(n, i as u8)))
            .collect();
        let check = |out: &[ByteBuf]| {
            assert_eq!(out.len(), items.len());
            for (o, v) in out.iter().zip(&items) {
                assert!(is_rotation_of(o, v), "an item of {} bytes", v.len());
            }
        };
        check(&pool.map(rotate_bytes, items.clone()).unwrap());
        check(
            &pool
                .map_async(rotate_bytes, items.clone())
                .unwrap()
                .get()
                .unwrap(),
        );
        let streamed: Vec<ByteBuf> = pool
            .imap(rotate_bytes, items.clone())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        check(&streamed);
        let mut lens: Vec<usize> = pool
            .imap_unordered(|v: ByteBuf| v.len(), items.clone())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        lens.sort_unstable();
        let mut want: Vec<usize> = items.iter().map(|v| v.len()).collect();
        want.sort_unstable();
        assert_eq!(lens, want);
        let pairs: Vec<(ByteBuf, u8)> = items.iter().map(|v| (v.clone(), 1)).collect();
        let tagged = pool
            .starmap(|(v, n): (ByteBuf, u8)| v.len() + n as usize, pairs)
            .unwrap();
        assert_eq!(
            tagged,
            items.iter().map(|v| v.len() + 1).collect::<Vec<_>>()
        );
        // Long results of small items.
        let blobs = pool.map(byte_blob, [16 * MIB, 3, 2 * MIB]).unwrap();
        assert_eq!(
            blobs.iter().map(|b| b.len()).collect::<Vec<_>>(),
            [16 * MIB, 3, 2 * MIB]
        );
        assert_eq!(pool.restarts(), 0);
    });
}

/// Two workers, long items in and long results out at the same time, and
/// rings of 64 KiB so that every message is many pieces: the one driver
/// must never wait on one worker while that worker waits on it.
#[test]
fn long_items_and_results_cross_both_ways_on_two_workers_at_once() {
    watchdog(LIMIT, || {
        for ring in [64 * 1024, 1 << 20] {
            let pool = Pool::builder()
                .processes(2)
                .chunksize(1)
                .ring_bytes(ring)
                .build()
                .unwrap();
            let items: Vec<ByteBuf> = (0..12)
                .map(|i| {
                    let n = if i % 3 == 2 { 100 } else { 8 * MIB + i };
                    ByteBuf::from(patterned(n, i as u8))
                })
                .collect();
            let out = pool.map(rotate_bytes, items.clone()).unwrap();
            for (o, v) in out.iter().zip(&items) {
                assert!(is_rotation_of(o, v), "an item of {} bytes", v.len());
            }
            // Both workers took part.
            assert!(pool.insights().iter().all(|w| w.items > 0));
            assert_eq!(pool.restarts(), 0);
        }
    });
}

/// A panic on a long item names the item; the pool goes on.
#[test]
fn a_panic_on_a_long_item_names_it() {
    let pool = Pool::new(1).unwrap();
    let items = [4, 2 * MIB, 4].map(|n| ByteBuf::from(vec![0u8; n]));
    let err = pool
        .map(
            |v: ByteBuf| {
                assert!(v.len() < MIB, "{} bytes is too many", v.len());
                v.len()
            },
            items,
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
    assert_eq!(err.item_index(), Some(1));
    assert_eq!(pool.apply(rotate, vec![1, 2]).unwrap(), [2, 1]);
    assert_eq!(pool.restarts(), 0);
}

/// 64 MiB, after saying which worker it runs in.
#[cfg(unix)]
fn long_result_after_flag(flag: SharedValue<u32>) -> ByteBuf {
    flag.set(std::process::id());
    ByteBuf::from(vec![9u8; 64 * MIB])
}

/// A worker SIGKILLed in the middle of a long result: its call fails
/// with `ProcessDied` naming it and the signal, nothing hangs, and the
/// pool goes on.
///
/// To cut the result midway, the parent must not drain it: the input
/// iterator of a second call runs in the parent under the pool's lock, so
/// while it waits nobody reads the first worker's result ring, which
/// fills and stops the worker after its first ring-full. The iterator
/// kills the worker then (or, on a slow machine, while it still encodes:
/// the result can never be complete by then either way).
#[cfg(unix)]
#[test]
fn a_worker_killed_in_the_middle_of_a_long_result_fails_its_call_only() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let flag = SharedValue::new(0u32).unwrap();
        let long = pool
            .apply_async(long_result_after_flag, flag.clone())
            .unwrap();
        let killer = flag.clone();
        // One item: it goes to the idle worker, not behind the long task.
        let items = (0..1u64).inspect(move |_| {
            let seen = common::wait_for(Duration::from_secs(30), || killer.get(), |&p| p != 0);
            let victim = seen.expect("the long task never started");
            // Let it encode and fill its ring (not a check: see above).
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: plain syscall on a pid of this pool.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(victim as i32, libc::SIGKILL)
            };
        });
        let squares = pool.imap(square, items).unwrap();
        let err = long.get().unwrap_err();
        let victim = flag.get();
        assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
        assert_eq!(err.pid(), Some(victim), "{err}");
        assert_eq!(
            err.exit_status().and_then(|s| s.signal()),
            Some(libc::SIGKILL),
            "{err}"
        );
        // The other call, on the other worker, did not suffer.
        let got: Vec<u64> = squares.collect::<Result<_, _>>().unwrap();
        assert_eq!(got, [0]);
        // Replaced, and long results work again.
        assert_eq!(pool.restarts(), 1);
        assert!(!pool.pids().contains(&victim));
        // (The caller keeps a handle: a worker opens a shared value's
        // memory only once it runs the task.)
        let flag = SharedValue::new(0u32).unwrap();
        let again = pool.apply(long_result_after_flag, flag.clone()).unwrap();
        assert_eq!(again.len(), 64 * MIB);
    });
}

#[cfg(target_os = "linux")]
fn read_value(v: SharedValue<u64>) -> u64 {
    v.get()
}

#[cfg(target_os = "linux")]
#[test]
fn a_handle_whose_memory_is_gone_fails_with_the_reason_not_a_bare_decode_error() {
    // The last handle moved into a pool call: the pool encodes it and drops
    // it, so its memory is gone before the worker opens it (Python refuses
    // to send a `Value` to a pool at all). The error must say so.
    let pool = Pool::new(1).unwrap();
    let v = SharedValue::new(7u64).unwrap();
    let err = pool.apply(read_value, v).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Codec, "{text}");
    assert!(
        text.contains("Serde Deserialization Error: "),
        "no reason given: {text}"
    );
    // A clone kept here is the fix.
    let v = SharedValue::new(7u64).unwrap();
    assert_eq!(pool.apply(read_value, v.clone()).unwrap(), 7);
}

/// Panics in the chunk that holds the element whose value is 654 321.
fn cursed_chunk(xs: &mut [u32]) {
    assert!(!xs.contains(&654_321), "a cursed chunk");
}

/// Kills its worker in the chunk that holds the element 654 321.
fn aborting_chunk(xs: &mut [u32]) {
    if xs.contains(&654_321) {
        std::process::abort();
    }
}

/// A zero-copy map's workers claim its chunks from a shared counter: a
/// chunk that panics, or kills its worker, is still named by its first
/// element (the fixed chunk size makes that element known here).
#[test]
fn a_self_scheduled_map_names_the_chunk_that_failed() {
    watchdog(LIMIT, || {
        let pool = Pool::builder()
            .processes(2)
            .chunksize(1000)
            .build()
            .unwrap();
        let mut v = ShmVec::from_slice(&(0..1_000_000u32).collect::<Vec<_>>()).unwrap();
        let err = pool.map_in_place(cursed_chunk, &mut v).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
        assert_eq!(err.item_index(), Some(654_000), "{err}");
        assert!(err
            .panic_info()
            .unwrap()
            .message()
            .contains("a cursed chunk"));
        assert_eq!(pool.restarts(), 0);
        let err = pool.map_in_place(aborting_chunk, &mut v).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
        assert_eq!(err.item_index(), Some(654_000), "{err}");
        // The replacement serves the next map, over every element.
        pool.map_in_place(|xs: &mut [u32]| xs.iter_mut().for_each(|x| *x += 1), &mut v)
            .unwrap();
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32 + 1));
        // Insights count the elements each worker ran.
        let fresh = Pool::new(2).unwrap();
        fresh
            .map_in_place(|xs: &mut [u32]| xs.iter_mut().for_each(|x| *x -= 1), &mut v)
            .unwrap();
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
        let ins = fresh.insights();
        assert_eq!(
            ins.iter().map(|w| w.items).sum::<u64>(),
            1_000_000,
            "{ins:?}"
        );
    });
}

/// A worker busy with a long task gets no share of a zero-copy map (its
/// share would wait behind the task): the idle worker runs all of it.
#[test]
fn a_zero_copy_map_does_not_wait_behind_a_long_task() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let running = SharedValue::new(0u32).unwrap();
        let _slow = pool
            .apply_async(nap_counted, (600_000, running.clone()))
            .unwrap();
        wait_running(&running, 1);
        let input = ShmVec::from_slice(&(0..200_000).map(f64::from).collect::<Vec<_>>()).unwrap();
        let mut out = ShmVec::<f64>::zeroed(input.len()).unwrap();
        for _ in 0..3 {
            out.fill(0.0);
            pool.map_into(affine, &input, &mut out).unwrap();
            assert!(out
                .iter()
                .zip(input.iter())
                .all(|(&y, &x)| y == x * x + 1.0));
        }
        pool.terminate();
    });
}

/// Maps from many threads at once, each with its own claim counter, and
/// counters reused call after call.
#[test]
fn concurrent_zero_copy_maps_stay_right() {
    watchdog(LIMIT, || {
        let pool = std::sync::Arc::new(Pool::new(2).unwrap());
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let pool = std::sync::Arc::clone(&pool);
                std::thread::spawn(move || {
                    for round in 0..20u32 {
                        let n = 10_000 + 7_919 * (t * 20 + round) as usize % 90_000;
                        let base = (t * 1000 + round) as f64;
                        let input = ShmVec::from_slice(
                            &(0..n).map(|i| base + i as f64).collect::<Vec<_>>(),
                        )
                        .unwrap();
                        let mut out = ShmVec::<f64>::zeroed(n).unwrap();
                        pool.map_into(affine, &input, &mut out).unwrap();
                        assert!(out
                            .iter()
                            .zip(input.iter())
                            .all(|(&y, &x)| y == x * x + 1.0));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
}
