//! CPython's `_TestValue`.

use super::*;

/// CPython's `codes_values`: ('i', 4343, 24234), ('d', 3.625, -4.25),
/// ('h', -232, 234), ('q', 2**33, 2**34), ('c', b'x', b'y').
type Values = (
    SharedValue<i32>,
    SharedValue<f64>,
    SharedValue<i16>,
    SharedValue<i64>,
    SharedValue<u8>,
);

fn set_second(v: Values) {
    v.0.set(24234);
    v.1.set(-4.25);
    v.2.set(234);
    v.3.set(1 << 34);
    v.4.set(b'y');
}

fn check_value(values: Values) {
    assert_eq!(values.0.get(), 4343);
    assert_eq!(values.1.get(), 3.625);
    assert_eq!(values.2.get(), -232);
    assert_eq!(values.3.get(), 1 << 33);
    assert_eq!(values.4.get(), b'x');
    Process::spawn(set_second, values.clone())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(values.0.get(), 24234);
    assert_eq!(values.1.get(), -4.25);
    assert_eq!(values.2.get(), 234);
    assert_eq!(values.3.get(), 1 << 34);
    assert_eq!(values.4.get(), b'y');
}

#[test]
fn test_value() {
    // `Value` (with a lock).
    check_value((
        SharedValue::with_lock(4343).unwrap(),
        SharedValue::with_lock(3.625).unwrap(),
        SharedValue::with_lock(-232).unwrap(),
        SharedValue::with_lock(1 << 33).unwrap(),
        SharedValue::with_lock(b'x').unwrap(),
    ));
}

#[test]
fn test_rawvalue() {
    check_value((
        SharedValue::new(4343).unwrap(),
        SharedValue::new(3.625).unwrap(),
        SharedValue::new(-232).unwrap(),
        SharedValue::new(1 << 33).unwrap(),
        SharedValue::new(b'x').unwrap(),
    ));
}

/// `get_lock()` exists on a `Value` and not on a `RawValue`. (Passing
/// one's own lock, `lock=...`, has no counterpart.)
#[test]
fn test_getobj_getlock() {
    let val1 = SharedValue::with_lock(5i32).unwrap();
    let lock1 = val1.get_lock().unwrap();
    drop(lock1.lock().unwrap());
    assert_eq!(val1.get(), 5);
    let raw = SharedValue::new(5i32).unwrap();
    assert!(raw.get_lock().is_none());
}
