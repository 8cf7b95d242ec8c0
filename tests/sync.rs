//! Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier —
//! across real processes, including processes that die at the worst time.

use std::time::{Duration, Instant};

use multiproc::{
    Barrier, BoundedSemaphore, Condition, ErrorKind, Event, Lock, Process, RLock, Semaphore,
    SharedValue,
};

multiproc::test_support!();
mod common;

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn increment((lock, total, times): (Lock, SharedValue<u64>, u32)) {
    for _ in 0..times {
        let _g = lock.lock().unwrap();
        // A deliberately non-atomic read-modify-write: only the lock makes
        // the final count exact.
        let v = total.get();
        std::hint::black_box(v);
        total.set(v + 1);
    }
}

#[test]
fn four_processes_increment_under_a_lock_exactly() {
    let lock = Lock::new().unwrap();
    let total = SharedValue::new(0u64).unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| Process::spawn(increment, (lock.clone(), total.clone(), 10_000)).unwrap())
        .collect();
    for p in ps {
        p.join().unwrap();
    }
    assert_eq!(total.get(), 40_000);
    assert!(!lock.is_locked());
}

fn hold_forever((lock, held): (Lock, Event)) {
    let _g = lock.lock().unwrap();
    held.set();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_sigkilled_lock_holder_gives_owner_died_then_the_lock_works() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let p = Process::spawn(hold_forever, (lock.clone(), held.clone())).unwrap();
    let pid = p.pid();
    held.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(lock.is_locked());
    p.kill().unwrap();
    assert!(p.join().unwrap_err().is_process_died());

    let err = lock.lock_timeout(Duration::from_secs(10)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OwnerDied, "{err}");
    assert_eq!(err.pid(), Some(pid));
    // The lock is usable again.
    let g = lock.lock_timeout(Duration::from_secs(10)).unwrap();
    drop(g);
}

#[test]
fn try_lock_refuses_a_live_holder_and_takes_over_from_a_dead_one() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let p = Process::spawn(hold_forever, (lock.clone(), held.clone())).unwrap();
    let pid = p.pid();
    held.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(lock.try_lock().unwrap().is_none(), "a live holder's lock");
    p.kill().unwrap();
    assert!(p.join().unwrap_err().is_process_died());
    // Without waiting: the dead holder is noticed on the spot, not after a
    // liveness period (a `try_lock` poll loop would otherwise spin forever).
    let err = lock.try_lock().map(|g| g.is_some()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OwnerDied, "{err}");
    assert_eq!(err.pid(), Some(pid));
    assert!(lock.try_lock().unwrap().is_some(), "free again");
}

#[test]
fn owner_death_is_seen_by_a_waiter_already_blocked() {
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let p = Process::spawn(hold_forever, (lock.clone(), held.clone())).unwrap();
    held.wait_timeout(Duration::from_secs(30)).unwrap();
    let waiter = {
        let lock = lock.clone();
        std::thread::spawn(move || lock.lock_timeout(Duration::from_secs(20)).map(|_| ()))
    };
    std::thread::sleep(Duration::from_millis(50));
    p.kill().unwrap();
    let err = waiter.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OwnerDied, "{err}");
    let _ = p.join();
}

#[test]
fn lock_timeout_really_times_out() {
    let lock = Lock::new().unwrap();
    let _g = lock.lock().unwrap();
    let start = Instant::now();
    let err = lock.lock_timeout(Duration::from_millis(100)).unwrap_err();
    assert!(err.is_timeout());
    assert!(err.to_string().contains("Lock::lock_timeout"), "{err}");
    assert!(start.elapsed() >= Duration::from_millis(100));
}

#[test]
fn rlock_is_reentrant_and_exclusive() {
    fn try_take(l: RLock) -> bool {
        l.lock_timeout(Duration::from_millis(50)).is_ok()
    }
    let l = RLock::new().unwrap();
    let a = l.lock().unwrap();
    let b = l.lock().unwrap();
    // Another process cannot take it while held (twice)…
    assert!(!Process::spawn(try_take, l.clone()).unwrap().join().unwrap());
    drop(b);
    assert!(!Process::spawn(try_take, l.clone()).unwrap().join().unwrap());
    drop(a);
    // …and can once fully released.
    assert!(Process::spawn(try_take, l.clone()).unwrap().join().unwrap());
}

#[test]
fn semaphore_limits_concurrency_across_processes() {
    fn worker((sem, inside, max_seen): (Semaphore, SharedValue<u32>, SharedValue<u32>)) {
        for _ in 0..20 {
            sem.acquire().unwrap();
            let now = inside.fetch_add(1) + 1;
            max_seen
                .as_atomic()
                .fetch_max(now, std::sync::atomic::Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(200));
            inside.fetch_sub(1);
            sem.release().unwrap();
        }
    }
    let sem = Semaphore::new(2).unwrap();
    let inside = SharedValue::new(0u32).unwrap();
    let max_seen = SharedValue::new(0u32).unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| Process::spawn(worker, (sem.clone(), inside.clone(), max_seen.clone())).unwrap())
        .collect();
    for p in ps {
        p.join().unwrap();
    }
    assert!(max_seen.get() <= 2, "max inside = {}", max_seen.get());
    assert!(max_seen.get() >= 1);
    assert_eq!(sem.value(), 2);
}

#[test]
fn bounded_semaphore_refuses_extra_release() {
    let sem = BoundedSemaphore::new(1).unwrap();
    assert_eq!(sem.release().unwrap_err().kind(), ErrorKind::InvalidState);
    sem.acquire().unwrap();
    sem.release().unwrap();
    assert!(sem.acquire_timeout(Duration::from_millis(10)).is_ok());
    let err = sem.acquire_timeout(Duration::from_millis(10)).unwrap_err();
    assert!(err.is_timeout());
    assert!(
        err.to_string().contains("Semaphore::acquire_timeout"),
        "{err}"
    );
    // Bounded at zero: no release is ever allowed. Unbounded: it is.
    let zero = BoundedSemaphore::new(0).unwrap();
    assert_eq!(zero.release().unwrap_err().kind(), ErrorKind::InvalidState);
    let free = Semaphore::new(0).unwrap();
    free.release().unwrap();
    assert_eq!(free.value(), 1);
}

/// What a Python user writes, `BoundedSemaphore(2)`, is bounded here too
/// (it was once an alias of `Semaphore`, whose `new` is not), in the
/// process that made it and in a child that received it.
#[test]
fn bounded_semaphore_new_is_bounded_in_every_process() {
    fn release_once(sem: BoundedSemaphore) -> bool {
        sem.release().is_ok()
    }
    let sem = BoundedSemaphore::new(2).unwrap();
    assert_eq!(sem.release().unwrap_err().kind(), ErrorKind::InvalidState);
    let p = multiproc::Process::spawn(release_once, sem.clone()).unwrap();
    assert!(!p.join().unwrap(), "the child released past the bound");
    sem.acquire().unwrap();
    let p = multiproc::Process::spawn(release_once, sem.clone()).unwrap();
    assert!(p.join().unwrap());
    assert_eq!(sem.value(), 2);
}

/// A handle is checked for what it names: a plain semaphore's handle does
/// not become a bounded one.
#[test]
fn a_semaphore_handle_does_not_decode_as_a_bounded_one() {
    let plain = Semaphore::new(1).unwrap();
    let bytes = postcard::to_stdvec(&plain).unwrap();
    // (postcard keeps only the kind of a custom error, not its text.)
    assert!(postcard::from_bytes::<BoundedSemaphore>(&bytes).is_err());
    let bounded = BoundedSemaphore::new(1).unwrap();
    let bytes = postcard::to_stdvec(&bounded).unwrap();
    let again = postcard::from_bytes::<BoundedSemaphore>(&bytes).unwrap();
    assert_eq!(again.release().unwrap_err().kind(), ErrorKind::InvalidState);
}

#[test]
fn barrier_of_four_processes() {
    fn party((b, arrived): (Barrier, SharedValue<u32>)) -> u32 {
        arrived.fetch_add(1);
        let idx = b.wait().unwrap();
        // Everyone has arrived once anyone passes.
        assert_eq!(arrived.get(), 4);
        idx
    }
    let b = Barrier::new(4).unwrap();
    let arrived = SharedValue::new(0u32).unwrap();
    let ps: Vec<_> = (0..4)
        .map(|_| Process::spawn(party, (b.clone(), arrived.clone())).unwrap())
        .collect();
    let mut idx: Vec<u32> = ps.into_iter().map(|p| p.join().unwrap()).collect();
    idx.sort();
    assert_eq!(idx, vec![0, 1, 2, 3]);
}

#[test]
fn a_dead_peer_breaks_a_barrier_for_every_waiter() {
    fn die_before_arriving(b: Barrier) {
        let _keep = b;
        std::process::abort();
    }
    fn wait_on((b, ready): (Barrier, Event)) -> ErrorKind {
        ready.set();
        b.wait_timeout(Duration::from_secs(20)).unwrap_err().kind()
    }
    let b = Barrier::new(3).unwrap();
    let ready = Event::new().unwrap();
    let waiter = Process::spawn(wait_on, (b.clone(), ready.clone())).unwrap();
    ready.wait_timeout(Duration::from_secs(30)).unwrap();
    let dying = Process::spawn(die_before_arriving, b.clone()).unwrap();
    let mine = b.wait_timeout(Duration::from_secs(20)).unwrap_err();
    assert_eq!(mine.kind(), ErrorKind::PeerDied, "{mine}");
    assert_eq!(waiter.join().unwrap(), ErrorKind::PeerDied);
    assert!(dying.join().is_err());
}

fn wait_on_barrier(b: Barrier) -> Result<u32, ErrorKind> {
    b.wait_timeout(Duration::from_secs(60))
        .map_err(|e| e.kind())
}

/// Waits until `n` parties wait at `b` (they are in another process).
fn until_waiting(b: &Barrier, n: u32) {
    common::wait_for(Duration::from_secs(30), || b.n_waiting(), |&w| w == n)
        .expect("the other party never arrived");
}

#[test]
fn barrier_abort_fails_a_waiting_process_and_every_later_wait_until_reset() {
    let b = Barrier::new(2).unwrap();
    let p = Process::spawn(wait_on_barrier, b.clone()).unwrap();
    until_waiting(&b, 1);
    b.abort();
    assert!(b.broken());
    assert_eq!(p.join().unwrap(), Err(ErrorKind::Broken));
    let later = b.wait_timeout(Duration::from_secs(5)).unwrap_err();
    assert_eq!(later.kind(), ErrorKind::Broken, "{later}");
    assert!(later.to_string().contains("aborted"), "{later}");
    // Mended: a whole round passes again.
    b.reset();
    assert!(!b.broken());
    let p = Process::spawn(wait_on_barrier, b.clone()).unwrap();
    let mine = b.wait_timeout(Duration::from_secs(60)).unwrap();
    let theirs = p.join().unwrap().unwrap();
    assert_eq!(mine + theirs, 1, "indices 0 and 1");
}

#[test]
fn barrier_reset_fails_the_waiting_party_and_starts_a_new_round() {
    let b = Barrier::new(2).unwrap();
    let p = Process::spawn(wait_on_barrier, b.clone()).unwrap();
    until_waiting(&b, 1);
    b.reset();
    // Python: the waiting party gets BrokenBarrierError; the barrier itself
    // is not broken.
    assert_eq!(p.join().unwrap(), Err(ErrorKind::Broken));
    assert!(!b.broken());
    assert_eq!(b.n_waiting(), 0);
    let p = Process::spawn(wait_on_barrier, b.clone()).unwrap();
    let mine = b.wait_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(mine + p.join().unwrap().unwrap(), 1);
}

#[test]
fn barrier_default_timeout_breaks_it_for_the_other_parties() {
    fn wait_default(b: Barrier) -> Result<u32, ErrorKind> {
        b.wait().map_err(|e| e.kind())
    }
    let b = Barrier::with_timeout(3, Duration::from_millis(300)).unwrap();
    let p = Process::spawn(wait_on_barrier, b.clone()).unwrap();
    until_waiting(&b, 1);
    // The parent's `wait` uses the default: it times out, and the child's
    // long wait fails at once, broken, instead of running to its 60 s.
    let mine = b.wait().unwrap_err();
    assert!(mine.is_timeout(), "{mine}");
    assert_eq!(p.join().unwrap(), Err(ErrorKind::Broken));
    // The default travels with the barrier into a child.
    b.reset();
    let p = Process::spawn(wait_default, b.clone()).unwrap();
    assert_eq!(p.join().unwrap(), Err(ErrorKind::Timeout));
}

#[test]
fn event_set_in_a_child_wakes_the_parent() {
    fn setter((e, ms): (Event, u64)) {
        nap(ms);
        e.set();
    }
    let e = Event::new().unwrap();
    let err = e.wait_timeout(Duration::from_millis(10)).unwrap_err();
    assert!(err.is_timeout());
    assert!(err.to_string().contains("Event::wait_timeout"), "{err}");
    let p = Process::spawn(setter, (e.clone(), 50)).unwrap();
    e.wait_timeout(Duration::from_secs(30)).unwrap();
    assert!(e.is_set());
    e.clear();
    assert!(!e.is_set());
    p.join().unwrap();
}

#[test]
fn a_dead_peer_wakes_event_waiters_with_peer_died() {
    fn die(e: Event) {
        let _keep = e;
        nap(100);
        std::process::abort();
    }
    let e = Event::new().unwrap();
    let p = Process::spawn(die, e.clone()).unwrap();
    let err = e.wait_timeout(Duration::from_secs(20)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PeerDied, "{err}");
    let _ = p.join();
}

#[test]
fn condition_notify_across_processes() {
    fn producer((c, slot): (Condition, SharedValue<u64>)) {
        for i in 1..=5u64 {
            let mut g = c.lock().unwrap();
            while slot.get() != 0 {
                c.wait(&mut g).unwrap();
            }
            slot.set(i);
            c.notify_all();
        }
    }
    let c = Condition::new().unwrap();
    let slot = SharedValue::new(0u64).unwrap();
    let p = Process::spawn(producer, (c.clone(), slot.clone())).unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let mut g = c.lock().unwrap();
        while slot.get() == 0 {
            c.wait_timeout(&mut g, Duration::from_secs(20)).unwrap();
        }
        got.push(slot.get());
        slot.set(0);
        c.notify_all();
    }
    assert_eq!(got, vec![1, 2, 3, 4, 5]);
    p.join().unwrap();
}

/// CPython's `test_notify_n`: of 6 waiters, `notify(2)` wakes exactly 2
/// (they once all returned at their next periodic wake-up), `notify(1)`
/// one more, `notify_all` the rest.
#[test]
fn condition_notify_n_wakes_exactly_n() {
    fn waiter((c, ready, woken): (Condition, SharedValue<u32>, SharedValue<u32>)) {
        let mut g = c.lock().unwrap();
        ready.fetch_add(1);
        c.wait(&mut g).unwrap();
        woken.fetch_add(1);
    }
    common::watchdog(Duration::from_secs(120), || {
        let c = Condition::new().unwrap();
        let ready = SharedValue::new(0u32).unwrap();
        let woken = SharedValue::new(0u32).unwrap();
        let ps: Vec<_> = (0..6)
            .map(|_| Process::spawn(waiter, (c.clone(), ready.clone(), woken.clone())).unwrap())
            .collect();
        let until = |what: &str, cond: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !cond() {
                assert!(Instant::now() < deadline, "{what}");
                std::thread::sleep(Duration::from_millis(2));
            }
        };
        // Every waiter counts itself under the lock and waits: once the
        // lock is free after the sixth, all six wait.
        until("six waiters", &|| ready.get() == 6);
        drop(c.lock().unwrap());
        let settled = |n: u32| {
            until("the notified waiters return", &|| woken.get() >= n);
            // Longer than many periodic wake-ups of the sleepers (25 ms):
            // a waiter that was not notified must still be waiting.
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(woken.get(), n, "notify woke more than it was asked to");
        };
        c.notify(2);
        settled(2);
        c.notify(1);
        settled(3);
        c.notify_all();
        until("all six", &|| woken.get() == 6);
        for p in ps {
            p.join().unwrap();
        }
        // Nobody waits: a notify now is not kept for a later waiter.
        c.notify(3);
        let mut g = c.lock().unwrap();
        assert!(c
            .wait_timeout(&mut g, Duration::from_millis(50))
            .unwrap_err()
            .is_timeout());
    });
}

/// Python's numbering: the first to arrive gets 0, the last `parties - 1`
/// (this crate once counted the other way round).
#[test]
fn barrier_indices_count_arrivals_from_zero() {
    common::watchdog(Duration::from_secs(60), || {
        let b = Barrier::new(2).unwrap();
        assert_eq!(b.n_waiting(), 0);
        let first = {
            let b = b.clone();
            std::thread::spawn(move || b.wait().unwrap())
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.n_waiting() < 1 {
            assert!(Instant::now() < deadline, "the first party never arrived");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(b.wait().unwrap(), 1, "the last to arrive gets parties - 1");
        assert_eq!(first.join().unwrap(), 0, "the first to arrive gets 0");
        assert_eq!(b.n_waiting(), 0);
        assert!(!b.broken());
    });
}

#[test]
fn rlock_try_lock_re_enters_and_refuses_other_processes() {
    fn try_take(l: RLock) -> bool {
        l.try_lock().unwrap().is_some()
    }
    let l = RLock::new().unwrap();
    assert!(!l.is_locked());
    let a = l.try_lock().unwrap().expect("free");
    let b = l.try_lock().unwrap().expect("re-entered by its owner");
    assert!(l.is_locked());
    let p = Process::spawn(try_take, l.clone()).unwrap();
    assert!(!p.join().unwrap(), "another process took a held RLock");
    drop(b);
    assert!(l.is_locked(), "still held once");
    drop(a);
    assert!(!l.is_locked());
    let p = Process::spawn(try_take, l.clone()).unwrap();
    assert!(p.join().unwrap());
}

#[test]
fn primitives_reject_a_handle_of_another_kind() {
    let e = Event::new().unwrap();
    // Serialise an Event, deserialise it as a Lock: refused, not misused.
    let bytes = postcard::to_stdvec(&e).unwrap();
    assert!(postcard::from_bytes::<Lock>(&bytes).is_err());
    // …and the Event itself still opens as an Event.
    let again: Event = postcard::from_bytes(&bytes).unwrap();
    e.set();
    assert!(again.is_set());
}
