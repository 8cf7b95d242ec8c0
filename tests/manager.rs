//! `Manager` and its proxies (`Dict`, `List`, `Namespace`) across
//! processes: every operation against a `HashMap`/`Vec` model, random
//! operation sequences from several processes, atomic increments, a dead
//! manager, clients killed midway, and use after shutdown.

use std::collections::HashMap;
use std::time::Duration;

use multiproc::{Dict, ErrorKind, List, Managed, Manager, Namespace, Process};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

mod common;

multiproc::test_support!();

/// Far above what any scenario needs: a hang, not slowness, trips it.
const WATCHDOG: Duration = Duration::from_secs(120);

#[test]
fn every_dict_operation_matches_a_hashmap() {
    let m = Manager::new().unwrap();
    let d = m.dict::<String, Vec<u32>>().unwrap();
    let mut model: HashMap<String, Vec<u32>> = HashMap::new();
    let k = |i: u32| format!("key{i}");

    for i in 0..20u32 {
        assert_eq!(
            d.insert(&k(i % 7), &vec![i]).unwrap(),
            model.insert(k(i % 7), vec![i])
        );
    }
    assert_eq!(d.len().unwrap(), model.len());
    assert!(!d.is_empty().unwrap());
    for i in 0..9 {
        assert_eq!(d.get(&k(i)).unwrap(), model.get(&k(i)).cloned());
        assert_eq!(d.contains_key(&k(i)).unwrap(), model.contains_key(&k(i)));
    }
    assert_eq!(d.remove(&k(1)).unwrap(), model.remove(&k(1)).is_some());
    assert_eq!(d.remove(&k(1)).unwrap(), model.remove(&k(1)).is_some());
    assert_eq!(d.pop(&k(2)).unwrap(), model.remove(&k(2)));
    assert_eq!(d.pop(&k(2)).unwrap(), model.remove(&k(2)));
    assert_eq!(
        d.setdefault(&k(3), &vec![99]).unwrap(),
        model.entry(k(3)).or_insert_with(|| vec![99]).clone()
    );
    assert_eq!(
        d.setdefault(&k(30), &vec![99]).unwrap(),
        model.entry(k(30)).or_insert_with(|| vec![99]).clone()
    );
    let pairs: Vec<(String, Vec<u32>)> = (40..45).map(|i| (k(i), vec![i, i])).collect();
    d.update(&pairs).unwrap();
    model.extend(pairs);
    assert_eq!(
        d.update_with(&k(40), |v| v.map(|mut v| {
            v.push(7);
            v
        }))
        .unwrap(),
        Some(vec![40, 40, 7])
    );
    model.get_mut(&k(40)).unwrap().push(7);
    assert_eq!(d.update_with(&k(41), |_| None).unwrap(), None);
    model.remove(&k(41));
    assert_eq!(
        d.update_with(&k(50), |v| v.or(Some(vec![5]))).unwrap(),
        Some(vec![5])
    );
    model.insert(k(50), vec![5]);

    assert_eq!(d.snapshot().unwrap(), model);
    let mut keys = d.keys().unwrap();
    keys.sort();
    let mut want: Vec<_> = model.keys().cloned().collect();
    want.sort();
    assert_eq!(keys, want);
    let mut values = d.values().unwrap();
    values.sort();
    let mut want: Vec<_> = model.values().cloned().collect();
    want.sort();
    assert_eq!(values, want);
    let mut items = d.items().unwrap();
    items.sort();
    let mut want: Vec<_> = model.clone().into_iter().collect();
    want.sort();
    assert_eq!(items, want);

    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
    assert_eq!(d.snapshot().unwrap(), HashMap::new());
}

#[test]
fn every_list_operation_matches_a_vec() {
    let m = Manager::new().unwrap();
    let l = m.list::<String>().unwrap();
    let mut model: Vec<String> = Vec::new();
    let s = |i: usize| format!("item{i}");

    for i in 0..5 {
        l.push(&s(i)).unwrap();
        model.push(s(i));
    }
    l.extend((5..8).map(s)).unwrap();
    model.extend((5..8).map(s));
    l.insert(0, &s(100)).unwrap();
    model.insert(0, s(100));
    l.insert(model.len(), &s(101)).unwrap();
    model.push(s(101));
    let e = l.insert(model.len() + 1, &s(102)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    assert!(e.to_string().contains("List::insert"), "{e}");
    l.set(3, &s(103)).unwrap();
    model[3] = s(103);
    assert_eq!(
        l.set(model.len(), &s(0)).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    for i in 0..model.len() + 2 {
        assert_eq!(l.get(i).unwrap(), model.get(i).cloned());
    }
    assert_eq!(l.pop().unwrap(), model.pop());
    assert!(l.remove(&s(4)).unwrap());
    model.retain(|x| *x != s(4));
    assert!(!l.remove(&s(4)).unwrap());
    assert_eq!(
        l.update_with(1, |x| x + "!").unwrap(),
        model[1].clone() + "!"
    );
    model[1].push('!');
    assert_eq!(
        l.update_with(model.len(), |x| x).unwrap_err().kind(),
        ErrorKind::InvalidState
    );
    assert_eq!(l.len().unwrap(), model.len());
    assert_eq!(l.snapshot().unwrap(), model);
    l.clear().unwrap();
    assert!(l.is_empty().unwrap());
    assert_eq!(l.pop().unwrap(), None);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f64,
}

#[test]
fn a_namespace_holds_fields_of_any_type() {
    let m = Manager::new().unwrap();
    let ns = m.namespace().unwrap();
    ns.set("n", &3u64).unwrap();
    ns.set("p", &Point { x: 1.0, y: 2.0 }).unwrap();
    ns.set("s", "text").unwrap();
    assert_eq!(ns.get::<u64>("n").unwrap(), Some(3));
    assert_eq!(
        ns.get::<Point>("p").unwrap(),
        Some(Point { x: 1.0, y: 2.0 })
    );
    assert_eq!(ns.get::<String>("s").unwrap().as_deref(), Some("text"));
    assert_eq!(ns.get::<u64>("none").unwrap(), None);
    let e = ns.get::<Point>("s").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Codec);
    assert!(e.to_string().contains("Namespace::get"), "{e}");
    assert_eq!(
        ns.update_with::<u64, _>("n", |n| n.map(|n| n * 2)).unwrap(),
        Some(6)
    );
    let mut names = ns.names().unwrap();
    names.sort();
    assert_eq!(names, ["n", "p", "s"]);
    assert!(ns.remove("p").unwrap());
    assert!(!ns.contains("p").unwrap());
}

fn namespace_child(ns: Namespace) {
    let n: u64 = ns.get("n").unwrap().unwrap();
    ns.set("reply", &(n + 1)).unwrap();
}

#[test]
fn proxies_pass_to_children_and_nest() {
    fn child((d, ns): (Dict<String, List<u32>>, Namespace)) {
        let l = d.get(&"inner".to_string()).unwrap().unwrap();
        l.extend([1, 2, 3]).unwrap();
        let fresh: List<u32> = d.get(&"fresh".to_string()).unwrap().unwrap();
        fresh.push(&9).unwrap();
        namespace_child(ns);
    }
    let m = Manager::new().unwrap();
    let d = m.dict::<String, List<u32>>().unwrap();
    let inner = m.list::<u32>().unwrap();
    d.insert(&"inner".into(), &inner).unwrap();
    d.insert(&"fresh".into(), &m.list().unwrap()).unwrap();
    let ns = m.namespace().unwrap();
    ns.set("n", &41u64).unwrap();
    Process::spawn(child, (d.clone(), ns.clone()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(inner.snapshot().unwrap(), [1, 2, 3]);
    let fresh = d.get(&"fresh".into()).unwrap().unwrap();
    assert_eq!(fresh.snapshot().unwrap(), [9]);
    assert_eq!(ns.get::<u64>("reply").unwrap(), Some(42));
}

fn increment(d: Dict<String, u64>) {
    let key = "count".to_string();
    for _ in 0..10_000 {
        d.update_with(&key, |n| Some(n.unwrap_or(0) + 1)).unwrap();
    }
}

#[test]
fn four_processes_incrementing_one_key_count_exactly() {
    common::watchdog(WATCHDOG, || {
        let m = Manager::new().unwrap();
        let d = m.dict::<String, u64>().unwrap();
        let workers: Vec<_> = (0..4)
            .map(|_| Process::spawn(increment, d.clone()).unwrap())
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(d.get(&"count".to_string()).unwrap(), Some(40_000));
    });
}

#[test]
fn threads_of_one_process_share_its_link() {
    let m = Manager::new().unwrap();
    let l = m.list::<u32>().unwrap();
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let l = l.clone();
            s.spawn(move || {
                for i in 0..200 {
                    l.push(&(t * 1000 + i)).unwrap();
                }
            });
        }
    });
    let mut all = l.snapshot().unwrap();
    all.sort();
    let mut want: Vec<u32> = (0..4)
        .flat_map(|t| (0..200).map(move |i| t * 1000 + i))
        .collect();
    want.sort();
    assert_eq!(all, want);
}

#[test]
fn proxies_used_after_shutdown_fail_with_shut_down_in_every_process() {
    fn child(d: Dict<u8, u8>) -> String {
        let e = d.get(&1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ShutDown);
        e.to_string()
    }
    common::watchdog(WATCHDOG, || {
        let m = Manager::new().unwrap();
        let d = m.dict::<u8, u8>().unwrap();
        d.insert(&1, &1).unwrap();
        m.shutdown().unwrap();
        m.shutdown().unwrap();
        let e = d.insert(&1, &2).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ShutDown);
        assert!(e.to_string().contains("Dict::insert"), "{e}");
        assert!(e.to_string().contains("shut down"), "{e}");
        let msg = Process::spawn(child, d.clone()).unwrap().join().unwrap();
        assert!(msg.contains("Dict::get"), "{msg}");
        // Dropping the manager after its shutdown changes nothing.
        drop(m);
        assert_eq!(d.len().unwrap_err().kind(), ErrorKind::ShutDown);
    });
}

#[test]
fn a_dropped_manager_ends_its_server() {
    common::watchdog(WATCHDOG, || {
        let m = Manager::new().unwrap();
        let l = m.list::<u8>().unwrap();
        l.push(&1).unwrap();
        drop(m);
        assert_eq!(l.push(&2).unwrap_err().kind(), ErrorKind::ShutDown);
    });
}

/// Kills `pid` with SIGKILL (the test has no `libc`; `kill` is POSIX).
#[cfg(unix)]
fn kill_9(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -9 {pid}");
}

#[cfg(unix)]
#[test]
fn a_killed_manager_makes_calls_fail_with_peer_died_in_parent_and_child() {
    fn child(d: Dict<u32, u32>) -> ErrorKind {
        let mut i = 0;
        loop {
            if let Err(e) = d.insert(&(i % 100), &i) {
                return e.kind();
            }
            i += 1;
        }
    }
    common::watchdog(WATCHDOG, || {
        let m = Manager::new().unwrap();
        let d = m.dict::<u32, u32>().unwrap();
        d.insert(&1, &1).unwrap();
        let p = Process::spawn(child, d.clone()).unwrap();
        // Let the child register and run.
        while d.get(&0).unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        kill_9(m.pid());
        let e = d.get(&1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PeerDied, "{e}");
        assert!(e.to_string().contains("manager"), "{e}");
        assert!(e.to_string().contains("Dict::get"), "{e}");
        // Later calls fail too, at once.
        assert_eq!(d.len().unwrap_err().kind(), ErrorKind::PeerDied);
        assert_eq!(p.join().unwrap(), ErrorKind::PeerDied);
        // A process that first uses the manager after its death.
        let late = Process::spawn(child, d.clone()).unwrap();
        assert_eq!(late.join().unwrap(), ErrorKind::PeerDied);
        assert!(m.shutdown().is_err(), "the server did not end as asked");
    });
}

/// Keeps `a == b` and the list made of equal pairs, with atomic
/// operations only, until it is killed.
fn victim((d, l): (Dict<String, u64>, List<u64>)) {
    for i in 0.. {
        d.update([("a".to_string(), i), ("b".to_string(), i)])
            .unwrap();
        l.extend([i, i]).unwrap();
        if l.len().unwrap() > 2_000 {
            l.clear().unwrap();
        }
        d.update_with(&"c".to_string(), |n| Some(n.unwrap_or(0) + 1))
            .unwrap();
    }
}

/// Counts its own key to `n` while others come and go.
fn steady((d, me, n): (Dict<String, u64>, u32, u64)) {
    for _ in 0..n {
        d.update_with(&format!("steady{me}"), |v| Some(v.unwrap_or(0) + 1))
            .unwrap();
        d.update_with(&"shared".to_string(), |v| Some(v.unwrap_or(0) + 1))
            .unwrap();
    }
}

#[test]
fn clients_killed_midway_leave_consistent_data_and_others_running() {
    common::watchdog(WATCHDOG, || {
        let m = Manager::new().unwrap();
        let d = m.dict::<String, u64>().unwrap();
        let l = m.list::<u64>().unwrap();
        const N: u64 = 1_500;
        let steady: Vec<_> = (0..2)
            .map(|me| Process::spawn(steady, (d.clone(), me, N)).unwrap())
            .collect();
        // Kill victims at varied points of their stream of operations.
        for round in 0..6u64 {
            let v = Process::spawn(victim, (d.clone(), l.clone())).unwrap();
            let seen = d.get(&"c".to_string()).unwrap().unwrap_or(0);
            while d.get(&"c".to_string()).unwrap().unwrap_or(0) == seen {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_micros(700 * round));
            v.kill().unwrap();
            let e = v.join().unwrap_err();
            assert!(e.is_process_died(), "{e}");
            // Consistent after each kill: both keys from one update, and
            // the list made of whole pairs.
            let snap = d.snapshot().unwrap();
            assert_eq!(snap.get("a"), snap.get("b"), "{snap:?}");
            let items = l.snapshot().unwrap();
            assert_eq!(items.len() % 2, 0, "{items:?}");
            assert!(items.chunks(2).all(|p| p[0] == p[1]), "{items:?}");
        }
        for s in steady {
            s.join().unwrap();
        }
        assert_eq!(d.get(&"steady0".into()).unwrap(), Some(N));
        assert_eq!(d.get(&"steady1".into()).unwrap(), Some(N));
        assert_eq!(d.get(&"shared".into()).unwrap(), Some(2 * N));
    });
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum DictOp {
    Insert(u8, u32),
    Get(u8),
    Remove(u8),
    Pop(u8),
    Contains(u8),
    SetDefault(u8, u32),
    Add(u8, u32),
    Update(Vec<(u8, u32)>),
}

fn dict_op() -> impl Strategy<Value = DictOp> {
    prop_oneof![
        (0..8u8, any::<u32>()).prop_map(|(k, v)| DictOp::Insert(k, v)),
        (0..8u8).prop_map(DictOp::Get),
        (0..8u8).prop_map(DictOp::Remove),
        (0..8u8).prop_map(DictOp::Pop),
        (0..8u8).prop_map(DictOp::Contains),
        (0..8u8, any::<u32>()).prop_map(|(k, v)| DictOp::SetDefault(k, v)),
        (0..8u8, 0..100u32).prop_map(|(k, v)| DictOp::Add(k, v)),
        proptest::collection::vec((0..8u8, any::<u32>()), 0..4).prop_map(DictOp::Update),
    ]
}

/// Applies `ops` to the dict on this process's own keys (`(me, k)`) and
/// to a model; every answer must match the model's. Returns the model.
fn run_ops((d, me, ops): (Dict<(u8, u8), u32>, u8, Vec<DictOp>)) -> Vec<((u8, u8), u32)> {
    let mut model: HashMap<(u8, u8), u32> = HashMap::new();
    for op in ops {
        match op {
            DictOp::Insert(k, v) => {
                assert_eq!(d.insert(&(me, k), &v).unwrap(), model.insert((me, k), v))
            }
            DictOp::Get(k) => assert_eq!(d.get(&(me, k)).unwrap(), model.get(&(me, k)).copied()),
            DictOp::Remove(k) => {
                assert_eq!(
                    d.remove(&(me, k)).unwrap(),
                    model.remove(&(me, k)).is_some()
                )
            }
            DictOp::Pop(k) => assert_eq!(d.pop(&(me, k)).unwrap(), model.remove(&(me, k))),
            DictOp::Contains(k) => {
                assert_eq!(
                    d.contains_key(&(me, k)).unwrap(),
                    model.contains_key(&(me, k))
                )
            }
            DictOp::SetDefault(k, v) => assert_eq!(
                d.setdefault(&(me, k), &v).unwrap(),
                *model.entry((me, k)).or_insert(v)
            ),
            DictOp::Add(k, v) => {
                let want = model.get(&(me, k)).copied().unwrap_or(0).wrapping_add(v);
                model.insert((me, k), want);
                let got = d
                    .update_with(&(me, k), |x| Some(x.unwrap_or(0).wrapping_add(v)))
                    .unwrap();
                assert_eq!(got, Some(want));
            }
            DictOp::Update(pairs) => {
                let pairs: Vec<_> = pairs.into_iter().map(|(k, v)| ((me, k), v)).collect();
                d.update(&pairs).unwrap();
                model.extend(pairs);
            }
        }
    }
    model.into_iter().collect()
}

#[derive(Debug, Clone)]
enum ListOp {
    Push(u16),
    Pop,
    Insert(usize, u16),
    Get(usize),
    Set(usize, u16),
    Extend(Vec<u16>),
    Remove(u16),
    Bump(usize),
    Len,
}

fn list_op() -> impl Strategy<Value = ListOp> {
    prop_oneof![
        any::<u16>().prop_map(|v| ListOp::Push(v % 16)),
        Just(ListOp::Pop),
        (0..12usize, any::<u16>()).prop_map(|(i, v)| ListOp::Insert(i, v % 16)),
        (0..12usize).prop_map(ListOp::Get),
        (0..12usize, any::<u16>()).prop_map(|(i, v)| ListOp::Set(i, v % 16)),
        proptest::collection::vec(0..16u16, 0..4).prop_map(ListOp::Extend),
        (0..16u16).prop_map(ListOp::Remove),
        (0..12usize).prop_map(ListOp::Bump),
        Just(ListOp::Len),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Two or three processes run random operations, each on its own
    /// keys: every answer matches its model, and the dict ends as the
    /// union of the models.
    #[test]
    fn random_dict_operations_from_several_processes_match_their_models(
        seqs in proptest::collection::vec(proptest::collection::vec(dict_op(), 0..40), 2..=3)
    ) {
        common::watchdog(WATCHDOG, move || {
            let m = Manager::new().unwrap();
            let d = m.dict::<(u8, u8), u32>().unwrap();
            let workers: Vec<_> = seqs
                .into_iter()
                .enumerate()
                .map(|(me, ops)| Process::spawn(run_ops, (d.clone(), me as u8, ops)).unwrap())
                .collect();
            let mut want = HashMap::new();
            for w in workers {
                want.extend(w.join().unwrap());
            }
            assert_eq!(d.snapshot().unwrap(), want);
        });
    }

    /// A list driven through the manager answers as a `Vec` does.
    #[test]
    fn random_list_operations_match_a_vec(ops in proptest::collection::vec(list_op(), 0..60)) {
        let m = Manager::new().unwrap();
        let l = m.list::<u16>().unwrap();
        let mut model: Vec<u16> = Vec::new();
        for op in ops {
            match op {
                ListOp::Push(v) => { l.push(&v).unwrap(); model.push(v); }
                ListOp::Pop => prop_assert_eq!(l.pop().unwrap(), model.pop()),
                ListOp::Insert(i, v) => {
                    let r = l.insert(i, &v);
                    if i <= model.len() { r.unwrap(); model.insert(i, v); } else {
                        prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidState);
                    }
                }
                ListOp::Get(i) => prop_assert_eq!(l.get(i).unwrap(), model.get(i).copied()),
                ListOp::Set(i, v) => {
                    let r = l.set(i, &v);
                    if i < model.len() { r.unwrap(); model[i] = v; } else {
                        prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidState);
                    }
                }
                ListOp::Extend(vs) => { l.extend(&vs).unwrap(); model.extend(vs); }
                ListOp::Remove(v) => {
                    let at = model.iter().position(|x| *x == v);
                    if let Some(at) = at { model.remove(at); }
                    prop_assert_eq!(l.remove(&v).unwrap(), at.is_some());
                }
                ListOp::Bump(i) => {
                    let r = l.update_with(i, |x| x.wrapping_add(1));
                    if i < model.len() {
                        model[i] = model[i].wrapping_add(1);
                        prop_assert_eq!(r.unwrap(), model[i]);
                    } else {
                        prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidState);
                    }
                }
                ListOp::Len => prop_assert_eq!(l.len().unwrap(), model.len()),
            }
        }
        prop_assert_eq!(l.snapshot().unwrap(), model);
    }
}

// ---- User objects (`Manager::object`, `Managed<T>`) ----

/// A user type: it lives in the server and is never serialised.
struct Counter {
    n: u64,
}

impl Counter {
    fn new(start: u64) -> Counter {
        Counter { n: start }
    }

    fn incr(&mut self) -> u64 {
        // Read, then write: only the server's one-request-at-a-time makes
        // this atomic across processes.
        let n = self.n;
        self.n = n + 1;
        self.n
    }

    fn add(&mut self, k: u64) {
        self.n += k;
    }

    fn value(&self) -> u64 {
        self.n
    }

    fn scaled(&self, (mul, offset): (u64, i64)) -> i64 {
        (self.n * mul) as i64 + offset
    }

    fn fail_after(&mut self, k: u64) -> u64 {
        self.n += k;
        panic!("counter gave up at {}", self.n);
    }
}

fn count_up((c, n): (Managed<Counter>, u64)) {
    for _ in 0..n {
        c.call(Counter::incr, ()).unwrap();
    }
}

#[test]
fn a_user_counter_incremented_from_four_processes_counts_exactly() {
    common::watchdog(WATCHDOG, || {
        let m = Manager::new().unwrap();
        let c = m.object(Counter::new, 5).unwrap();
        let workers: Vec<_> = (0..4)
            .map(|_| Process::spawn(count_up, (c.clone(), 2_500)).unwrap())
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(c.call(Counter::value, ()).unwrap(), 10_005);
    });
}

#[test]
fn a_method_takes_arguments_and_returns_a_result() {
    let m = Manager::new().unwrap();
    let c = m.object(Counter::new, 2).unwrap();
    c.call(Counter::add, 8).unwrap();
    assert_eq!(c.call(Counter::incr, ()).unwrap(), 11);
    assert_eq!(c.call(Counter::scaled, (3, -40)).unwrap(), -7);
    // A closure that captures nothing is a method too.
    let halved = c.call(|c: &mut Counter, (): ()| c.n / 2, ()).unwrap();
    assert_eq!(halved, 5);
    // A constructor closure, and a second object beside the first.
    let d = m
        .object(|(a, b): (u64, u64)| Counter::new(a * b), (6, 7))
        .unwrap();
    assert_eq!(d.call(Counter::value, ()).unwrap(), 42);
    assert_eq!(c.call(Counter::value, ()).unwrap(), 11);
    assert!(format!("{c:?}").contains("Counter"));
}

#[test]
fn a_panicking_method_is_an_error_in_the_caller_and_the_server_goes_on() {
    let m = Manager::new().unwrap();
    let c = m.object(Counter::new, 1).unwrap();
    let other = m.object(Counter::new, 100).unwrap();
    let d = m.dict::<String, u32>().unwrap();
    d.insert(&"k".into(), &7).unwrap();

    let e = c.call(Counter::fail_after, 4).unwrap_err();
    assert!(e.is_panic(), "{e}");
    let info = e.panic_info().unwrap();
    assert_eq!(info.message(), "counter gave up at 5");
    assert!(info.location().unwrap().contains("manager.rs"), "{info:?}");
    // Left as the method left it (as Python leaves it).
    assert_eq!(c.call(Counter::value, ()).unwrap(), 5);
    assert_eq!(c.call(Counter::incr, ()).unwrap(), 6);
    assert_eq!(other.call(Counter::value, ()).unwrap(), 100);
    assert_eq!(d.get(&"k".into()).unwrap(), Some(7));

    // A panicking constructor makes no object and costs nothing else.
    let e = m
        .object(|(): ()| -> Counter { panic!("no counter today") }, ())
        .unwrap_err();
    assert_eq!(e.panic_info().unwrap().message(), "no counter today");
    assert_eq!(other.call(Counter::incr, ()).unwrap(), 101);
}

/// Another user type, to read a `Counter`'s proxy as.
struct Tags(Vec<String>);

impl Tags {
    fn count(&self) -> usize {
        self.0.len()
    }
}

#[test]
fn a_proxy_read_as_the_wrong_type_is_an_error_not_a_crash() {
    let m = Manager::new().unwrap();
    let objects = m.dict::<String, Managed<Counter>>().unwrap();
    let c = m.object(Counter::new, 3).unwrap();
    objects.insert(&"c".into(), &c).unwrap();
    // The same dict read with another value type: its proxy now claims
    // the counter is a `Tags`.
    let mistyped: Dict<String, Managed<Tags>> =
        postcard::from_bytes(&postcard::to_stdvec(&objects).unwrap()).unwrap();
    let wrong = mistyped.get(&"c".into()).unwrap().unwrap();
    let e = wrong.call(Tags::count, ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
    assert!(e.to_string().contains("Counter"), "{e}");
    // A dict's id used as a user object's, and the other way round.
    let d_as_object: Managed<Counter> =
        postcard::from_bytes(&postcard::to_stdvec(&mistyped).unwrap()).unwrap();
    let e = d_as_object.call(Counter::value, ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
    let c_as_dict: Dict<String, u32> =
        postcard::from_bytes(&postcard::to_stdvec(&c).unwrap()).unwrap();
    assert_eq!(c_as_dict.len().unwrap_err().kind(), ErrorKind::InvalidState);
    // The server is fine, and so is the counter.
    assert_eq!(c.call(Counter::incr, ()).unwrap(), 4);
}

fn child_uses_counters((c, objects): (Managed<Counter>, Dict<String, Managed<Counter>>)) {
    c.call(Counter::add, 10).unwrap();
    let nested = objects.get(&"nested".into()).unwrap().unwrap();
    nested.call(Counter::incr, ()).unwrap();
}

#[test]
fn a_user_proxy_passes_to_a_child_and_nests_in_a_dict() {
    let m = Manager::new().unwrap();
    let c = m.object(Counter::new, 0).unwrap();
    let objects = m.dict::<String, Managed<Counter>>().unwrap();
    let nested = m.object(Counter::new, 41).unwrap();
    objects.insert(&"nested".into(), &nested).unwrap();
    Process::spawn(child_uses_counters, (c.clone(), objects.clone()))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(c.call(Counter::value, ()).unwrap(), 10);
    assert_eq!(nested.call(Counter::value, ()).unwrap(), 42);
}

/// A user type with collections inside; none of it is serde.
#[derive(Default)]
struct Inventory {
    stock: HashMap<String, u32>,
    log: Vec<(String, i64)>,
}

impl Inventory {
    fn restock(&mut self, (item, n): (String, u32)) {
        *self.stock.entry(item.clone()).or_default() += n;
        self.log.push((item, i64::from(n)));
    }

    fn take(&mut self, (item, n): (String, u32)) -> Result<u32, String> {
        let have = self.stock.get_mut(&item).ok_or("no such item")?;
        if *have < n {
            return Err(format!("only {have} left"));
        }
        *have -= n;
        self.log.push((item, -i64::from(n)));
        Ok(*have)
    }

    fn history(&self) -> Vec<(String, i64)> {
        self.log.clone()
    }
}

fn shopper(inv: Managed<Inventory>) {
    for _ in 0..50 {
        inv.call(Inventory::take, ("apple".to_string(), 1))
            .unwrap()
            .unwrap();
    }
}

#[test]
fn a_user_type_holding_a_hashmap_and_a_vec() {
    let m = Manager::new().unwrap();
    let inv = m.object(|(): ()| Inventory::default(), ()).unwrap();
    inv.call(Inventory::restock, ("apple".to_string(), 100))
        .unwrap();
    let shoppers: Vec<_> = (0..2)
        .map(|_| Process::spawn(shopper, inv.clone()).unwrap())
        .collect();
    for s in shoppers {
        s.join().unwrap();
    }
    let last = inv.call(Inventory::take, ("apple".to_string(), 1)).unwrap();
    assert_eq!(last, Err("only 0 left".to_string()));
    let pear = inv.call(Inventory::take, ("pear".to_string(), 1)).unwrap();
    assert_eq!(pear, Err("no such item".to_string()));
    let history = inv.call(Inventory::history, ()).unwrap();
    assert_eq!(history.len(), 101);
    assert_eq!(history.iter().map(|(_, n)| n).sum::<i64>(), 0);
}

impl Counter {
    /// Tries to use a proxy of the manager this method runs in.
    fn peek_at(&mut self, other: Managed<Counter>) -> Option<ErrorKind> {
        other.call(Counter::value, ()).err().map(|e| e.kind())
    }
}

#[test]
fn a_method_using_its_own_manager_is_refused_not_stalled() {
    common::watchdog(WATCHDOG, || {
        let m = Manager::new().unwrap();
        let c = m.object(Counter::new, 0).unwrap();
        let other = m.object(Counter::new, 1).unwrap();
        assert_eq!(
            c.call(Counter::peek_at, other.clone()).unwrap(),
            Some(ErrorKind::InvalidState)
        );
        assert_eq!(other.call(Counter::value, ()).unwrap(), 1);
    });
}

fn nest_from_child((lists, made): (Dict<String, List<u32>>, List<u32>)) {
    made.push(&7).unwrap();
    lists.insert(&"from child".to_string(), &made).unwrap();
}

#[test]
fn a_proxy_stored_by_a_child_that_has_exited_still_opens() {
    // A proxy's wire form names the manager's channels through the
    // process that created the manager, not through whichever process
    // serialised it last (here a child gone by the time it is read).
    let m = Manager::new().unwrap();
    let lists: Dict<String, List<u32>> = m.dict().unwrap();
    let made: List<u32> = m.list().unwrap();
    // The child receives `made`, uses it, and writes it back into `lists`.
    Process::spawn(nest_from_child, (lists.clone(), made))
        .unwrap()
        .join()
        .unwrap();
    let back = lists.get(&"from child".to_string()).unwrap().unwrap();
    assert_eq!(back.snapshot().unwrap(), vec![7]);
    back.push(&8).unwrap();
    assert_eq!(back.len().unwrap(), 2);
}
