//! CPython's `_TestLock`.

use super::*;

#[test]
fn test_lock() {
    let lock = Lock::new().unwrap();
    let guard = lock.lock().unwrap();
    assert!(lock.is_locked());
    assert!(lock.try_lock().unwrap().is_none()); // acquire(False)
    drop(guard); // release()
    assert!(!lock.is_locked());
    // A second release cannot be written: the guard is gone.
}

/// Takes the lock and keeps it (Python's child never releases it),
/// records `locked()` and says so.
fn take_and_keep((lock, event, res): (Lock, Event, SharedValue<u8>)) {
    std::mem::forget(lock.lock().unwrap());
    res.set(u8::from(lock.is_locked()));
    event.set();
}

#[test]
fn test_lock_locked_2processes() {
    let lock = Lock::new().unwrap();
    let event = Event::new().unwrap();
    let res = SharedValue::new(0u8).unwrap();
    let p = Process::spawn(take_and_keep, (lock.clone(), event.clone(), res.clone())).unwrap();
    event.wait_timeout(LONG).unwrap();
    assert!(lock.is_locked());
    assert_eq!(res.get(), 1);
    p.join().unwrap();
}

#[test]
fn test_rlock() {
    let lock = RLock::new().unwrap();
    let a = lock.lock().unwrap();
    assert!(lock.is_locked());
    let b = lock.lock().unwrap();
    let c = lock.lock().unwrap();
    drop(c);
    assert!(lock.is_locked());
    drop(b);
    drop(a);
    assert!(!lock.is_locked());
}

fn take_and_keep_rlock((lock, event, res): (RLock, Event, SharedValue<u8>)) {
    std::mem::forget(lock.lock().unwrap());
    res.set(u8::from(lock.is_locked()));
    event.set();
}

#[test]
fn test_rlock_locked_2processes() {
    let rlock = RLock::new().unwrap();
    let event = Event::new().unwrap();
    let res = SharedValue::new(0u8).unwrap();
    let p = Process::spawn(
        take_and_keep_rlock,
        (rlock.clone(), event.clone(), res.clone()),
    )
    .unwrap();
    event.wait_timeout(LONG).unwrap();
    assert!(rlock.is_locked());
    assert_eq!(res.get(), 1);
    p.join().unwrap();
}

#[test]
fn test_lock_context() {
    let lock = Lock::new().unwrap();
    {
        let _locked = lock.lock().unwrap(); // `with Lock() as locked:`
        assert!(lock.is_locked());
    }
    assert!(!lock.is_locked());
}

#[test]
fn test_rlock_context() {
    let lock = RLock::new().unwrap();
    {
        let _locked = lock.lock().unwrap();
        assert!(lock.is_locked());
    }
    assert!(!lock.is_locked());
}
