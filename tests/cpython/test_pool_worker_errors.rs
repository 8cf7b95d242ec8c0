//! CPython's `_TestPoolWorkerErrors`.

use super::*;

fn raising(_: ()) -> i64 {
    panic!("KeyError: 'key'");
}

/// The `get()` half: `error_callback=` has no counterpart.
#[test]
fn test_async_error_callback() {
    let p = Pool::new(2).unwrap();
    let res = p.apply_async(raising, ()).unwrap();
    let err = res.get().unwrap_err();
    assert!(err.is_panic(), "{err}");
    assert!(err.to_string().contains("KeyError"), "{err}");
    p.close();
    p.join().unwrap();
}

fn unpickleable_result(_: ()) -> Item {
    Item::NotSerializable
}

#[test]
fn test_unpickleable_result() {
    let p = Pool::new(2).unwrap();
    // No worker is lost to encoding errors.
    for _ in 0..20 {
        let res = p.apply_async(unpickleable_result, ()).unwrap();
        let err = res.get().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    }
    assert_eq!(p.pids().len(), 2);
    assert_eq!(p.restarts(), 0);
    assert_eq!(p.apply(sqr, 4).unwrap(), 16);
    p.close();
    p.join().unwrap();
}
