//! `Queue`, `SimpleQueue`, `JoinableQueue` across processes, and against a
//! model.

use std::collections::VecDeque;
use std::time::Duration;

use multiproc::{ErrorKind, Event, JoinableQueue, Process, Queue};
use proptest::prelude::*;

multiproc::test_support!();
mod common;

fn produce((q, base, n): (Queue<u64>, u64, u64)) {
    for i in 0..n {
        q.put(&(base + i)).unwrap();
    }
}

#[test]
fn two_producer_processes_one_consumer() {
    let q = Queue::new().unwrap();
    let ps: Vec<_> = [0u64, 1_000_000]
        .into_iter()
        .map(|base| Process::spawn(produce, (q.clone(), base, 5_000)).unwrap())
        .collect();
    let mut got: Vec<u64> = (0..10_000)
        .map(|_| q.get_timeout(Duration::from_secs(30)).unwrap())
        .collect();
    for p in ps {
        p.join().unwrap();
    }
    // Each producer's items arrive in its own order.
    let a: Vec<u64> = got.iter().copied().filter(|&x| x < 1_000_000).collect();
    assert_eq!(a, (0..5_000).collect::<Vec<_>>());
    got.sort_unstable();
    let mut want: Vec<u64> = (0..5_000).chain(1_000_000..1_005_000).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
}

#[test]
fn two_consumer_processes_share_the_work() {
    fn consume(q: Queue<Option<u64>>) -> (u64, u64) {
        let (mut n, mut sum) = (0, 0);
        while let Some(x) = q.get_timeout(Duration::from_secs(30)).unwrap() {
            n += 1;
            sum += x;
        }
        (n, sum)
    }
    let q = Queue::new().unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| Process::spawn(consume, q.clone()).unwrap())
        .collect();
    for i in 1..=4_000u64 {
        q.put(&Some(i)).unwrap();
    }
    q.put(&None).unwrap();
    q.put(&None).unwrap();
    let (n, sum) = ps
        .into_iter()
        .map(|p| p.join().unwrap())
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    assert_eq!(n, 4_000);
    assert_eq!(sum, 4_000 * 4_001 / 2);
}

#[test]
fn try_put_says_full_and_put_timeout_times_out_without_putting() {
    let q = Queue::<Vec<u8>>::with_capacity(256).unwrap();
    // A second holder, so a blocked put has someone to wait for.
    let holder = Process::spawn(
        |q: Queue<Vec<u8>>| {
            std::thread::sleep(Duration::from_secs(600));
            drop(q);
        },
        q.clone(),
    )
    .unwrap();
    let mut put = 0;
    while q.try_put(&vec![7u8; 40]).unwrap() {
        put += 1;
    }
    assert!(put >= 2);
    let err = q
        .put_timeout(&vec![1u8; 40], Duration::from_millis(20))
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("Queue::put_timeout"), "{err}");
    // Bigger than the whole ring: it could only stream through while a
    // consumer reads, so without waiting it does not go in either.
    assert!(!q.try_put(&vec![0u8; 1000]).unwrap());
    // Nothing the failed calls tried went in.
    assert_eq!(q.len(), put);
    for _ in 0..put {
        assert_eq!(q.try_get().unwrap(), Some(vec![7u8; 40]));
    }
    assert_eq!(q.try_get().unwrap(), None);

    // Full of small items: `is_full` says so.
    let small = Queue::<u8>::with_capacity(64).unwrap();
    assert!(!small.is_full());
    while small.try_put(&1).unwrap() {}
    assert!(small.is_full());
    assert!(!small.is_empty());
    holder.kill().unwrap();
    let _ = holder.join();
}

#[test]
fn get_timeout_times_out_and_try_get_is_none() {
    let q = Queue::<u8>::new().unwrap();
    // Another process holds the queue, so an empty get is worth waiting for.
    let other = Process::spawn(
        |q: Queue<u8>| {
            std::thread::sleep(Duration::from_millis(500));
            drop(q);
        },
        q.clone(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let err = q.get_timeout(Duration::from_millis(20)).unwrap_err();
    assert!(err.is_timeout());
    // The message names the user's call, not the ring under it.
    assert_eq!(
        err.to_string(),
        "timed out (Queue::get_timeout: the queue stayed empty)"
    );
    assert_eq!(q.try_get().unwrap(), None);
    other.join().unwrap();
}

#[test]
fn get_fails_instead_of_hanging_when_a_holder_is_killed() {
    fn hold((q, holding): (Queue<u8>, Event)) {
        let _keep = q;
        holding.set();
        std::thread::sleep(Duration::from_secs(600));
    }
    let q = Queue::<u8>::new().unwrap();
    let holding = Event::new().unwrap();
    let p = Process::spawn(hold, (q.clone(), holding.clone())).unwrap();
    // Killed once it holds the queue (a child killed while it starts never
    // shared it: nobody would have died holding it).
    holding.wait_timeout(Duration::from_secs(30)).unwrap();
    p.kill().unwrap();
    let err = q.get_timeout(Duration::from_secs(20)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PeerDied, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("Queue::get_timeout: a process sharing the queue died"),
        "{text}"
    );
    assert!(!text.contains("producer"), "internal words: {text}");
    let _ = p.join();
}

#[test]
fn close_ends_puts_and_gets_through_this_processs_handles_at_once() {
    let q = Queue::<u8>::new().unwrap();
    let clone = q.clone();
    q.put(&1).unwrap();
    // What another process holds: the same queue, its own handle.
    let elsewhere: Queue<u8> = postcard::from_bytes(&postcard::to_stdvec(&q).unwrap()).unwrap();
    q.close();
    let err = q.put(&2).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState);
    assert!(
        err.to_string()
            .contains("Queue::put: this handle was closed"),
        "{err}"
    );
    // Python raises at once on a closed queue's get too; clones are this
    // process's one queue object. A blocking get must not wait.
    for e in [
        q.get().unwrap_err(),
        clone.get().unwrap_err(),
        clone.get_timeout(Duration::from_secs(3600)).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
        assert!(e.to_string().contains("this handle was closed"), "{e}");
    }
    // The items already put are still there for everyone else.
    assert_eq!(elsewhere.get().unwrap(), 1);
}

/// A `Queue` handle of a joinable queue counts its puts too: the count
/// lives in the queue, not in the handle's type.
#[test]
fn a_plain_handle_of_a_joinable_queue_counts_its_puts() {
    let jq = JoinableQueue::<u8>::new().unwrap();
    let plain: Queue<u8> = postcard::from_bytes(&postcard::to_stdvec(&jq).unwrap()).unwrap();
    plain.put(&1).unwrap();
    plain.put_many([2u8, 3]).unwrap();
    for _ in 0..3 {
        jq.get().unwrap();
    }
    for _ in 0..3 {
        jq.task_done().unwrap();
    }
    assert_eq!(jq.task_done().unwrap_err().kind(), ErrorKind::InvalidState);
    jq.join().unwrap();
    // And a plain queue's handle is not taken for a joinable one.
    let q = Queue::<u8>::new().unwrap();
    let bytes = postcard::to_stdvec(&q).unwrap();
    assert!(postcard::from_bytes::<JoinableQueue<u8>>(&bytes).is_err());
}

#[test]
fn joinable_queue_counts_every_kind_of_put() {
    let q = JoinableQueue::new().unwrap();
    q.put(&1u32).unwrap();
    assert!(q.try_put(&2).unwrap());
    q.put_timeout(&3, Duration::from_millis(10)).unwrap();
    // A put that does not go in counts nothing (4 MiB cannot go into a
    // 1 MiB ring without a consumer reading meanwhile).
    let small = JoinableQueue::<Vec<u8>>::new().unwrap();
    assert!(!small.try_put(&vec![0u8; 4 << 20]).unwrap());
    assert_eq!(
        small.task_done().unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    for want in 1..=3 {
        assert_eq!(q.get().unwrap(), want);
        q.task_done().unwrap();
    }
    // Three items, three tasks: one more task_done is one too many, and
    // join has nothing to wait for.
    assert_eq!(q.task_done().unwrap_err().kind(), ErrorKind::InvalidState);
    q.join().unwrap();
}

#[test]
fn joinable_queue_join_waits_for_every_task_done() {
    fn worker((q, done): (JoinableQueue<u32>, Queue<u32>)) {
        loop {
            let n = q.get().unwrap();
            if n == 0 {
                q.task_done().unwrap();
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
            done.put(&n).unwrap();
            q.task_done().unwrap();
        }
    }
    let q = JoinableQueue::new().unwrap();
    let done = Queue::new().unwrap();
    let ps: Vec<_> = (0..2)
        .map(|_| Process::spawn(worker, (q.clone(), done.clone())).unwrap())
        .collect();
    for n in 1..=50 {
        q.put(&n).unwrap();
    }
    q.put(&0).unwrap();
    q.put(&0).unwrap();
    q.join().unwrap();
    // join returned only after all 50 results were put.
    assert_eq!(done.len(), 50);
    for p in ps {
        p.join().unwrap();
    }
    assert_eq!(q.task_done().unwrap_err().kind(), ErrorKind::InvalidState);
}

#[test]
fn put_many_and_get_many_keep_order_and_mix_with_single_items() {
    let q = Queue::new().unwrap();
    q.put(&0u32).unwrap();
    // Borrowed items (`&u32`) and owned ones both go.
    let some = [1u32, 2, 3];
    q.put_many(some.iter()).unwrap();
    q.put_many(Vec::<u32>::new()).unwrap();
    q.put_many((4..8u32).collect::<Vec<_>>()).unwrap();
    assert_eq!(q.len(), 8);
    assert_eq!(q.get_many(0).unwrap(), Vec::<u32>::new());
    assert_eq!(q.get().unwrap(), 0);
    assert_eq!(q.get_many(2).unwrap(), [1, 2]);
    assert_eq!(q.get_many(100).unwrap(), [3, 4, 5, 6, 7]);
    assert!(q.is_empty());
    assert!(q.try_get_many(4).unwrap().is_empty());
    assert!(q
        .get_timeout(Duration::from_millis(5))
        .unwrap_err()
        .is_timeout());
    // The smallest ring: one number a frame, and for a `u128` no room for
    // a batch's cursor at all (it keeps a frame an item).
    let tiny = Queue::<u64>::with_capacity(64).unwrap();
    tiny.put_many([5u64, 6]).unwrap();
    assert_eq!(tiny.get_many(9).unwrap(), [5, 6]);
    let tiny = Queue::<u128>::with_capacity(64).unwrap();
    tiny.put_many([u128::MAX, 7]).unwrap();
    assert_eq!(tiny.get().unwrap(), u128::MAX);
    assert_eq!(tiny.get_many(9).unwrap(), [7]);
}

#[test]
fn put_many_beyond_the_capacity_waits_for_a_consumer_in_another_process() {
    fn drain((q, n): (Queue<u64>, u64)) -> Vec<u64> {
        let mut got = Vec::new();
        while (got.len() as u64) < n {
            got.extend(q.get_many(1000).unwrap());
        }
        got
    }
    // 4 KiB of ring, 20 000 items: put_many waits for room many times.
    let q = Queue::<u64>::with_capacity(4096).unwrap();
    let n = 20_000u64;
    let p = Process::spawn(drain, (q.clone(), n)).unwrap();
    q.put_many(0..n).unwrap();
    assert_eq!(p.join().unwrap(), (0..n).collect::<Vec<_>>());
    assert!(q.is_empty());
}

/// Takes items until `stop` is set and the queue stays empty for a
/// moment: one by one (`each`) or up to 7 at a time; returns them.
fn take_until_stopped((q, stop, each): (Queue<u64>, Event, bool)) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        let took = if each {
            q.get_timeout(Duration::from_millis(20)).map(|x| vec![x])
        } else {
            match q.try_get_many(7) {
                Ok(v) if v.is_empty() => {
                    std::thread::sleep(Duration::from_millis(1));
                    Err(multiproc::Error::timeout("empty"))
                }
                other => other,
            }
        };
        match took {
            Ok(v) => got.extend(v),
            Err(e) if e.is_timeout() => {
                if stop.is_set() && q.is_empty() {
                    return got;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn numbers_put_in_batches_reach_consumers_in_other_processes_once_each_in_order() {
    // `put_many` of numbers writes thousands to a frame; two consumers,
    // one taking single items, one taking 7 at a time, share the frames,
    // each taking up where the other left off.
    let q = Queue::<u64>::with_capacity(64 * 1024).unwrap();
    let stop = Event::new().unwrap();
    let ps: Vec<_> = [true, false]
        .into_iter()
        .map(|each| Process::spawn(take_until_stopped, (q.clone(), stop.clone(), each)).unwrap())
        .collect();
    let n = 200_000u64;
    for start in (0..n).step_by(50_000) {
        q.put_many(start..start + 50_000).unwrap();
    }
    common::wait_for(Duration::from_secs(60), || q.is_empty(), |&e| e).unwrap();
    stop.set();
    let got: Vec<Vec<u64>> = ps.into_iter().map(|p| p.join().unwrap()).collect();
    // (How the items split between the two is up to the scheduler; one
    // may even take them all on a busy machine.)
    for (who, items) in got.iter().enumerate() {
        assert!(
            items.windows(2).all(|w| w[0] < w[1]),
            "consumer {who} out of order"
        );
    }
    let mut all: Vec<u64> = got.concat();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>());
    assert_eq!(q.len(), 0);
}

#[test]
fn a_batch_taken_in_part_counts_its_other_items_when_dropped_by_a_shutdown() {
    let q = JoinableQueue::<u32>::new().unwrap();
    q.put_many(0..10u32).unwrap();
    assert_eq!(q.len(), 10);
    assert_eq!(q.get_many(3).unwrap(), [0, 1, 2]);
    assert_eq!(q.get().unwrap(), 3);
    assert_eq!(q.len(), 6);
    for _ in 0..4 {
        q.task_done().unwrap();
    }
    // The six left in the frame are dropped, and count as done.
    q.shutdown(true).unwrap();
    assert_eq!(q.len(), 0);
    assert!(q.is_empty());
    q.join_timeout(Duration::from_secs(30)).unwrap();
}

#[test]
fn get_many_leaves_an_undecodable_item_for_the_next_call() {
    let strings = Queue::<String>::new().unwrap();
    // The same queue, seen as holding `u32`s: 300 encodes as a length of
    // 300 bytes with none after it, which no `String` decodes from.
    let numbers: Queue<u32> =
        postcard::from_bytes(&postcard::to_allocvec(&strings).unwrap()).unwrap();
    strings.put_many(["a", "b"].map(String::from)).unwrap();
    numbers.put(&300).unwrap();
    strings.put(&"c".to_string()).unwrap();
    // The good items come first; the bad one stays in the queue ...
    assert_eq!(strings.get_many(10).unwrap(), ["a", "b"]);
    // ... fails the next call, which consumes it ...
    assert_eq!(strings.get_many(10).unwrap_err().kind(), ErrorKind::Codec);
    // ... and nothing else was lost.
    assert_eq!(strings.get_many(10).unwrap(), ["c"]);
}

#[test]
fn joinable_put_many_counts_each_item() {
    let q = JoinableQueue::new().unwrap();
    q.put_many([1u8, 2, 3]).unwrap();
    assert_eq!(q.get_many(3).unwrap(), [1, 2, 3]);
    for _ in 0..3 {
        q.task_done().unwrap();
    }
    assert_eq!(q.task_done().unwrap_err().kind(), ErrorKind::InvalidState);
    q.join().unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>),
    Get,
    GetMany(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Op::Put),
        Just(Op::Get),
        (0usize..6).prop_map(Op::GetMany),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A queue behaves like a bounded FIFO: every try_put either succeeds
    /// (and the item comes out later, in order) or says full and puts nothing;
    /// try_get_many(k) takes the first k (or all, if fewer).
    #[test]
    fn queue_matches_a_fifo_model(ops in prop::collection::vec(op(), 1..200)) {
        let q = Queue::<Vec<u8>>::with_capacity(2048).unwrap();
        let mut model = VecDeque::new();
        for op in ops {
            match op {
                Op::Put(item) => {
                    if q.try_put(&item).unwrap() {
                        model.push_back(item);
                    }
                }
                Op::Get => prop_assert_eq!(q.try_get().unwrap(), model.pop_front()),
                Op::GetMany(k) => {
                    let want: Vec<_> = (0..k).map_while(|_| model.pop_front()).collect();
                    prop_assert_eq!(q.try_get_many(k).unwrap(), want);
                }
            }
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.is_empty(), model.is_empty());
        }
    }
}

#[test]
fn maxsize_bounds_items_across_processes() {
    fn fill((q, n): (Queue<u32>, u32)) {
        for i in 0..n {
            q.put(&i).unwrap();
        }
    }
    let q = Queue::<u32>::with_maxsize(3).unwrap();
    let p = Process::spawn(fill, (q.clone(), 10)).unwrap();
    // The producer can get at most 3 items ahead of us, whatever their size.
    let full = common::wait_for(Duration::from_secs(30), || q.len(), |&n| n == 3);
    assert_eq!(full, Ok(3));
    assert!(!q.try_put(&99).unwrap(), "a fourth item went in");
    let mut got = Vec::new();
    while got.len() < 10 {
        got.push(q.get_timeout(Duration::from_secs(60)).unwrap());
        assert!(q.len() <= 3, "{} items in a maxsize-3 queue", q.len());
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    p.join().unwrap();
    // Timed puts on a full bounded queue time out, and put nothing.
    let q = Queue::<u8>::with_maxsize(1).unwrap();
    q.put(&1).unwrap();
    let e = q.put_timeout(&2, Duration::from_millis(20)).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(q.len(), 1);
    // put_many waits item by item under the bound.
    let q = Queue::<u8>::with_maxsize(2).unwrap();
    q.put_many([1u8, 2]).unwrap();
    assert!(!q.try_put(&3).unwrap());
    assert_eq!(q.get_many(5).unwrap(), [1, 2]);
    assert!(q.try_put(&3).unwrap());
}

#[test]
fn shutdown_wakes_a_getter_in_another_process_and_stops_puts() {
    fn get_one((q, ready): (Queue<u8>, Event)) -> Result<u8, ErrorKind> {
        ready.set();
        q.get_timeout(Duration::from_secs(60)).map_err(|e| e.kind())
    }
    let q = Queue::<u8>::new().unwrap();
    let ready = Event::new().unwrap();
    let p = Process::spawn(get_one, (q.clone(), ready.clone())).unwrap();
    // The child blocks on an empty queue (give it a moment to get there);
    // a graceful shutdown ends its get at once, not at its 60 s deadline.
    ready.wait_timeout(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    q.shutdown(false).unwrap();
    assert_eq!(p.join().unwrap(), Err(ErrorKind::ShutDown));
    assert!(q.is_shutdown());
    assert_eq!(q.put(&1).unwrap_err().kind(), ErrorKind::ShutDown);
    assert_eq!(q.try_put(&1).unwrap_err().kind(), ErrorKind::ShutDown);
    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::ShutDown);
}

#[test]
fn shutdown_graceful_keeps_items_for_gets_and_immediate_drops_them() {
    let q = Queue::<u8>::new().unwrap();
    q.put_many([1u8, 2, 3]).unwrap();
    q.shutdown(false).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get_many(5).unwrap(), [2, 3]);
    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::ShutDown);

    let q = Queue::<u8>::new().unwrap();
    q.put_many([1u8, 2, 3]).unwrap();
    q.shutdown(true).unwrap();
    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::ShutDown);
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
}

#[test]
fn shutdown_immediate_releases_a_joinable_queues_join_and_a_blocked_bounded_put() {
    fn put_two(q: JoinableQueue<u8>) -> Result<(), ErrorKind> {
        q.put(&1).map_err(|e| e.kind())?;
        // Blocks: maxsize 1 and nobody takes the first item.
        q.put(&2).map_err(|e| e.kind())
    }
    let q = JoinableQueue::<u8>::with_maxsize(1).unwrap();
    let p = Process::spawn(put_two, q.clone()).unwrap();
    common::wait_for(Duration::from_secs(30), || q.len(), |&n| n == 1).unwrap();
    q.shutdown(true).unwrap();
    assert_eq!(p.join().unwrap(), Err(ErrorKind::ShutDown));
    // The dropped item counts as done: join does not wait for it.
    q.join_timeout(Duration::from_secs(30)).unwrap();
}

#[test]
fn items_of_any_size_through_a_queue_from_two_producers_stay_whole() {
    fn send_big((q, tag): (Queue<Vec<u8>>, u8)) {
        for n in 0..3usize {
            q.put(&vec![tag; (2 << 20) + n]).unwrap();
            q.put(&vec![tag; 10]).unwrap();
        }
    }
    // 2 MiB items through a 1 MiB ring, two producers at once: the pieces
    // of one item never interleave with another's.
    let q = Queue::<Vec<u8>>::new().unwrap();
    let ps: Vec<_> = [1u8, 2]
        .into_iter()
        .map(|tag| Process::spawn(send_big, (q.clone(), tag)).unwrap())
        .collect();
    let mut big = 0;
    for _ in 0..12 {
        let item = q.get_timeout(Duration::from_secs(120)).unwrap();
        assert!(
            item.iter().all(|&b| b == item[0]),
            "an item mixes producers"
        );
        if item.len() > 10 {
            big += 1;
        }
    }
    assert_eq!(big, 6);
    for p in ps {
        p.join().unwrap();
    }
    // put_many/get_many with a long item among short ones.
    let q = Queue::<Vec<u8>>::new().unwrap();
    let items = vec![vec![1u8], vec![2u8; 3 << 20], vec![3u8]];
    let sent = items.clone();
    let p = Process::spawn(
        |(q, v): (Queue<Vec<u8>>, Vec<Vec<u8>>)| q.put_many(&v).unwrap(),
        (q.clone(), sent),
    )
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(q.get_many(8).unwrap());
    }
    assert!(got == items);
    p.join().unwrap();
}
