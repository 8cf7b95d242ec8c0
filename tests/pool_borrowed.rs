//! `pool.map(f, &items)`: a map over items the caller keeps. The same
//! results as the owned map, whatever the item type, iterator, chunk size
//! or frame size; its failures (an item that will not encode, a panicking
//! `Serialize`, an iterator that miscounts, a dying worker) are errors,
//! never a hang, and the pool serves the next map.

use std::time::Duration;

use multiproc::{ErrorKind, Pool};
use serde::{Deserialize, Serialize, Serializer};

multiproc::test_support!();

mod common;
use common::watchdog;

/// Limit for the tests that could hang if a failure went unnoticed.
const LIMIT: Duration = Duration::from_secs(60);

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Reading {
    name: String,
    value: f64,
}

fn weigh(r: Reading) -> f64 {
    r.value * r.name.len() as f64
}

fn readings(n: usize) -> Vec<Reading> {
    (0..n)
        .map(|i| Reading {
            name: "x".repeat(i % 17),
            value: i as f64 * 0.5,
        })
        .collect()
}

fn square(x: u64) -> u64 {
    x * x
}

#[test]
fn a_borrowed_map_gives_the_owned_maps_results_and_leaves_the_items() {
    let pool = Pool::new(2).unwrap();
    // Enough items for many batches and many chunks.
    let items = readings(300_000);
    let kept = items.clone();
    let borrowed = pool.map(weigh, &items).unwrap();
    assert_eq!(items, kept, "the items are the caller's, untouched");
    let owned = pool.map(weigh, items).unwrap();
    assert_eq!(borrowed, owned);
    assert_eq!(borrowed.len(), 300_000);
    for (i, r) in kept.iter().enumerate() {
        assert_eq!(borrowed[i], weigh(r.clone()), "item {i}");
    }
    // A slice and an empty input.
    assert_eq!(pool.map(weigh, &kept[10..13]).unwrap(), &borrowed[10..13]);
    assert!(pool.map(weigh, &kept[..0]).unwrap().is_empty());
    // starmap over borrowed tuples.
    let pairs: Vec<(u32, String)> = (0..1000).map(|i| (i, i.to_string())).collect();
    let lens = pool.starmap(|(a, s): (u32, String)| a as usize + s.len(), &pairs);
    let want: Vec<usize> = pairs.iter().map(|(a, s)| *a as usize + s.len()).collect();
    assert_eq!(lens.unwrap(), want);
}

#[test]
fn borrowed_numbers_give_the_owned_maps_results_over_and_under_the_arena_threshold() {
    let pool = Pool::new(2).unwrap();
    // Over the arena path's threshold (copied, then shared memory), and
    // under it (the ring).
    for n in [100_000u64, 1000] {
        let xs: Vec<u64> = (0..n).collect();
        let out = pool.map(square, &xs).unwrap();
        assert_eq!(out.len(), n as usize);
        assert!(out.iter().enumerate().all(|(i, &v)| v == (i * i) as u64));
    }
    let fs: Vec<f64> = (0..50_000).map(|i| i as f64).collect();
    let halves = pool.map(|x: f64| x / 2.0, &fs).unwrap();
    assert_eq!(halves[49_999], 49_999.0 / 2.0);
}

fn label(x: u64) -> String {
    format!("<{x}>")
}

#[test]
fn borrowed_numbers_mapped_to_strings_give_the_owned_maps_results() {
    // Number items, results that are not numbers: the items still cross
    // as numbers (the workers read them so), over the rings.
    let pool = Pool::new(2).unwrap();
    let xs: Vec<u64> = (0..5_000).collect();
    let want: Vec<String> = xs.iter().map(|&x| label(x)).collect();
    assert_eq!(pool.map(label, &xs).unwrap(), want);
    assert_eq!(pool.map(label, xs.clone()).unwrap(), want);
    assert_eq!(pool.with_chunksize(7).map(label, &xs).unwrap(), want);
    assert_eq!(xs.len(), 5_000);
}

#[test]
fn any_iterator_of_references_works_whatever_its_length_hint() {
    let pool = Pool::new(2).unwrap();
    let items = readings(20_000);
    // A filter does not know its length.
    let odd: Vec<f64> = pool
        .map(weigh, items.iter().filter(|r| r.name.len() % 2 == 1))
        .unwrap();
    let want: Vec<f64> = items
        .iter()
        .filter(|r| r.name.len() % 2 == 1)
        .map(|r| weigh(r.clone()))
        .collect();
    assert_eq!(odd, want);
    // A chain of two slices, a step_by.
    let chained = pool.map(weigh, items[..5].iter().chain(&items[100..105]));
    assert_eq!(chained.unwrap().len(), 10);
    let stepped = pool.map(weigh, items.iter().step_by(1000)).unwrap();
    assert_eq!(stepped.len(), 20);
    assert_eq!(stepped[3], weigh(items[3000].clone()));
}

/// Yields `yields` references but says it has `says`.
struct Liar<'a> {
    items: std::slice::Iter<'a, Reading>,
    says: usize,
}

impl<'a> Iterator for Liar<'a> {
    type Item = &'a Reading;
    fn next(&mut self) -> Option<&'a Reading> {
        self.items.next()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.says, Some(self.says))
    }
}

#[test]
fn an_iterator_whose_length_hint_lies_fails_the_map_and_nothing_hangs() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let items = readings(10_000);
        for (yields, says) in [(10_000, 12_000), (10_000, 9_000), (5, 6), (6, 5)] {
            let liar = Liar {
                items: items[..yields].iter(),
                says,
            };
            let err = pool.map(weigh, liar).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
            assert!(
                err.to_string()
                    .contains(&format!("said it had {says} items")),
                "{err}"
            );
        }
        assert_eq!(pool.map(weigh, &items[..3]).unwrap().len(), 3);
    });
}

/// Serialises as a `u64` unless it is `bad`: then serde refuses it.
#[derive(Deserialize, Clone, Debug)]
struct Picky {
    n: u64,
    bad: bool,
    boom: bool,
}

impl Serialize for Picky {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.boom {
            panic!("Serialize of item {} panicked", self.n);
        }
        if self.bad {
            return Err(serde::ser::Error::custom("this item will not encode"));
        }
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Picky", 3)?;
        st.serialize_field("n", &self.n)?;
        st.serialize_field("bad", &false)?;
        st.serialize_field("boom", &false)?;
        st.end()
    }
}

fn picky_n(p: Picky) -> u64 {
    p.n
}

fn pickies(n: u64, bad: Option<u64>, boom: Option<u64>) -> Vec<Picky> {
    (0..n)
        .map(|i| Picky {
            n: i,
            bad: Some(i) == bad,
            boom: Some(i) == boom,
        })
        .collect()
}

#[test]
fn an_item_that_will_not_encode_is_named_and_the_pool_goes_on() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        for at in [0, 7, 12_345] {
            let items = pickies(20_000, Some(at), None);
            let err = pool.map(picky_n, &items).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
            assert!(err.to_string().contains(&format!("item {at}")), "{err}");
            // The same items moved in: encoded the same way.
            let err = pool.map(picky_n, items).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
            assert!(err.to_string().contains(&format!("item {at}")), "{err}");
        }
        let fine = pickies(1000, None, None);
        assert_eq!(
            pool.map(picky_n, &fine).unwrap(),
            (0..1000).collect::<Vec<_>>()
        );
    });
}

/// The message of the panic `f` must end in (it goes on to the caller).
fn panic_of<T: std::fmt::Debug>(f: impl FnOnce() -> T) -> String {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err("the panic goes on to the caller");
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_panicking_serialize_reaches_the_caller_and_the_pool_goes_on() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let items = pickies(20_000, None, Some(9_000));
        let msg = panic_of(|| pool.map(picky_n, &items));
        assert!(msg.contains("item 9000"), "{msg}");
        // The abandoned map ended (its job closed at the panic): the pool is
        // free for the next.
        serves_the_next_map(&pool);
        // The same with the items moved in (the ones not encoded yet are
        // dropped as the panic unwinds).
        let msg = panic_of(|| pool.map(picky_n, items));
        assert!(msg.contains("item 9000"), "{msg}");
        serves_the_next_map(&pool);
    });
}

/// After an abandoned map: the next one runs whole, on the same workers.
fn serves_the_next_map(pool: &Pool) {
    let fine = pickies(1000, None, None);
    assert_eq!(pool.map(picky_n, &fine).unwrap().len(), 1000);
    assert_eq!(pool.restarts(), 0);
}

/// `picky_n`, slowly: a map of these lags far behind its encoding.
fn picky_slow(p: Picky) -> u64 {
    let until = std::time::Instant::now() + Duration::from_micros(5);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
    p.n
}

#[test]
fn an_encoding_far_ahead_of_the_workers_waits_for_them_and_still_ends_on_a_panic() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        // About 30 batches of items, 5 µs each on 2 workers: the encoding
        // reaches its bound of queued batches early and waits, again and
        // again, reusing the batches the workers are done with.
        let items = pickies(60_000, None, None);
        let out = pool.map(picky_slow, &items).unwrap();
        assert_eq!(out, (0..60_000).collect::<Vec<_>>());
        // A panic in an item encoded after such waits still reaches the
        // caller, and the pool serves the next map.
        let items = pickies(60_000, None, Some(50_000));
        let msg = panic_of(|| pool.map(picky_slow, &items));
        assert!(msg.contains("item 50000"), "{msg}");
        serves_the_next_map(&pool);
    });
}

#[test]
fn an_input_that_turns_slow_after_the_encoding_got_ahead_still_maps_every_item() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        // The first 40 000 items come at once (the encoding runs ahead of
        // the slow tasks and waits for them, driving the pool itself);
        // past them the input stalls now and then, in the middle of a
        // batch, while batches encoded earlier are still queued. Nothing
        // queued may be stranded behind the stalled input.
        let items = pickies(60_000, None, None);
        let input = items.iter().enumerate().map(|(i, p)| {
            if i > 40_000 && i % 2_500 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            p
        });
        let out = pool.map(picky_slow, input).unwrap();
        assert_eq!(out, (0..60_000).collect::<Vec<_>>());
        serves_the_next_map(&pool);
    });
}

fn weigh_where(r: Reading) -> (u32, f64) {
    (std::process::id(), weigh(r))
}

#[test]
fn workers_that_retire_after_three_chunks_run_no_more_of_a_borrowed_map() {
    // A borrowed map queues more chunks on a worker than other jobs do;
    // a worker told to retire after three still runs three at most.
    watchdog(LIMIT, || {
        let pool = Pool::builder()
            .processes(2)
            .max_tasks_per_child(3)
            .chunksize(50)
            .build()
            .unwrap();
        let items = readings(3_000);
        let out = pool.map(weigh_where, &items).unwrap();
        let want: Vec<f64> = items.iter().cloned().map(weigh).collect();
        assert_eq!(out.iter().map(|&(_, w)| w).collect::<Vec<_>>(), want);
        let mut chunks_of: std::collections::HashMap<u32, std::collections::HashSet<usize>> =
            Default::default();
        for (i, &(pid, _)) in out.iter().enumerate() {
            chunks_of.entry(pid).or_default().insert(i / 50);
        }
        assert!(
            chunks_of.len() >= 20,
            "{} workers for 60 chunks",
            chunks_of.len()
        );
        for (pid, chunks) in &chunks_of {
            assert!(
                chunks.len() <= 3,
                "worker {pid} ran {} chunks",
                chunks.len()
            );
        }
    });
}

#[test]
fn terminate_from_another_thread_ends_a_borrowed_map_whose_caller_waits_asleep() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        // 5 µs items: the encoding runs far ahead, and its caller waits
        // for the workers asleep on the doorbell, when the pool is
        // terminated from another thread. The map ends with an error.
        let items = pickies(400_000, None, None);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(100));
                pool.terminate();
            });
            let err = pool.map(picky_slow, &items).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
        });
        assert!(pool.map(picky_n, &items[..10]).is_err());
    });
}

fn abort_on_seven(r: Reading) -> f64 {
    if r.value == 3.5 {
        std::process::abort();
    }
    weigh(r)
}

#[test]
fn a_worker_dying_in_a_borrowed_map_is_reported_with_its_item() {
    watchdog(LIMIT, || {
        let pool = Pool::builder().processes(2).chunksize(4).build().unwrap();
        let items = readings(12);
        let err = pool.map(abort_on_seven, &items).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
        assert_eq!(err.item_index(), Some(7), "{err}");
        assert_eq!(pool.map(weigh, &items).unwrap().len(), 12);
    });
}

fn abort_on_long_name(r: Reading) -> f64 {
    if r.name.len() == 16 {
        std::process::abort();
    }
    weigh(r)
}

#[test]
fn a_worker_dying_early_in_a_long_borrowed_map_ends_it_and_the_pool_recovers() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        // Item 16 is the first with a 16-byte name; most of the 400 000
        // items are still to encode when it kills its worker (the health
        // check in `nudge` ends the encoding then, not after the last).
        let items = readings(400_000);
        let err = pool.map(abort_on_long_name, &items).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
        assert_eq!(pool.map(weigh, &items[..17]).unwrap().len(), 17);
    });
}

/// Value 0.0 aborts at once; other values under 4.0 abort after 300 ms.
fn abort_now_or_soon(r: Reading) -> f64 {
    if r.value == 0.0 {
        std::process::abort();
    }
    if r.value < 4.0 {
        std::thread::sleep(Duration::from_millis(300));
        std::process::abort();
    }
    weigh(r)
}

#[test]
fn the_map_after_a_failed_one_is_not_queued_behind_its_doomed_chunks() {
    // Chunks 0 and 2 go to one worker, 1 and 3 to the other. The first
    // worker dies at once, failing the map; the second is still in its
    // first chunk, which will kill it too, with another chunk of the
    // failed map queued behind. The next map must not be queued behind
    // those (it would die with that worker): it waits for a worker
    // that has nothing of a failed job in flight.
    watchdog(LIMIT, || {
        let pool = Pool::builder().processes(2).chunksize(4).build().unwrap();
        let items: Vec<Reading> = (0..16)
            .map(|i| Reading {
                name: "x".repeat(i),
                // Item 0 (chunk 0) kills its worker at once; item 4
                // (chunk 1) kills the other after 300 ms.
                value: match i {
                    0 => 0.0,
                    4 => 1.0,
                    _ => 10.0 + i as f64,
                },
            })
            .collect();
        let err = pool.map(abort_now_or_soon, &items).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
        let fine = readings(40);
        let want: Vec<f64> = fine.iter().cloned().map(weigh).collect();
        assert_eq!(pool.map(weigh, &fine).unwrap(), want);
        assert_eq!(pool.map(weigh, fine.clone()).unwrap(), want);
    });
}

#[test]
fn chunk_sizes_and_items_over_a_frame_keep_the_results_in_order() {
    let pool = Pool::builder()
        .processes(2)
        .ring_bytes(64 * 1024)
        .build()
        .unwrap();
    let items = readings(5000);
    let want: Vec<f64> = items.iter().map(|r| weigh(r.clone())).collect();
    for chunk in [1, 3, 1000] {
        assert_eq!(pool.with_chunksize(chunk).map(weigh, &items).unwrap(), want);
    }
    // Items of 100 KiB through a ring whose frames take 32 KiB: each
    // goes alone, streamed, between small ones.
    let mixed: Vec<Reading> = (0..40)
        .map(|i| Reading {
            name: if i % 3 == 0 {
                "y".repeat(100 * 1024 + i)
            } else {
                "z".repeat(i)
            },
            value: 1.0,
        })
        .collect();
    let lens = pool.map(weigh, &mixed).unwrap();
    let want: Vec<f64> = mixed.iter().map(|r| r.name.len() as f64).collect();
    assert_eq!(lens, want);
}
