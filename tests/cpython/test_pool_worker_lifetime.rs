//! CPython's `_TestPoolWorkerLifetime`.

use super::*;

#[test]
fn test_pool_worker_lifetime() {
    let p = Pool::builder()
        .processes(3)
        .max_tasks_per_child(10)
        .build()
        .unwrap();
    let orig = p.pids();
    assert_eq!(orig.len(), 3);
    let results: Vec<_> = (0..100).map(|i| p.apply_async(sqr, i).unwrap()).collect();
    for (j, r) in results.into_iter().enumerate() {
        assert_eq!(r.get().unwrap(), sqr(j as i64));
    }
    // Every worker is there again, and they are not the first ones.
    let fin = common::wait_for(LONG, || p.pids(), |pids| pids.len() == 3);
    let mut fin = fin.unwrap();
    let mut orig = orig;
    orig.sort_unstable();
    fin.sort_unstable();
    assert_ne!(orig, fin);
    p.close();
    p.join().unwrap();
}

/// Issue #10332: closing a pool whose workers have limited lifetimes
/// before all the tasks completed must not make join() hang.
#[test]
fn test_pool_worker_lifetime_early_close() {
    common::watchdog(LONG, || {
        let p = Pool::builder()
            .processes(3)
            .max_tasks_per_child(1)
            .build()
            .unwrap();
        let results: Vec<_> = (0..6)
            .map(|i| p.apply_async(sqr_wait, (i, 300)).unwrap())
            .collect();
        p.close();
        p.join().unwrap();
        for (j, r) in results.into_iter().enumerate() {
            assert_eq!(r.get().unwrap(), sqr(j as i64));
        }
    });
}

#[test]
fn test_pool_maxtasksperchild_invalid() {
    // -1, 0.5 and "12" cannot be written; 0 is refused.
    let err = Pool::builder()
        .processes(3)
        .max_tasks_per_child(0)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
}
