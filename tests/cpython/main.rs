//! CPython's `Lib/test/_test_multiprocessing.py`, ported: one module per
//! CPython test class, one test per CPython test case (same names), each
//! asserting the same observable behaviour through this crate's API. What
//! could not be ported, and why, is listed in `CPYTHON_PORT.md`.
//!
//! Shapes that differ from Python's, throughout:
//! - Python answers a timed-out wait with `False`/`None` or raises
//!   `Empty`/`Full`; here `x_timeout(d)` is `Err(e)` with `e.is_timeout()`
//!   and `try_x()` is `Ok(None)`/`Ok(false)` (docs/ARCHITECTURE.md).
//! - Python's `TIMEOUT1..3` (0.1 s) stay short, but elapsed times are only
//!   checked from below (and loosely): this must pass on a loaded machine.
//! - `with lock:` / `acquire()`…`release()` is a guard's lifetime; a
//!   release without an acquire cannot be written.
//! - A Python "exception in the child" is a panic, which comes back as an
//!   `Err` that `is_panic()`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use multiproc::{
    pipe, Barrier, BoundedSemaphore, Condition, Connection, ErrorKind, Event, ExitStatus,
    JoinableQueue, Lock, Pool, Process, Queue, RLock, Semaphore, SharedArray, SharedMemory,
    SharedValue,
};
use serde::{Deserialize, Serialize};

multiproc::test_support!();
#[path = "../common/mod.rs"]
mod common;

// ------------------------------------------------------------- helpers

/// A wait that should never run out (CPython's `support.LONG_TIMEOUT`).
const LONG: Duration = Duration::from_secs(60);
/// CPython's `TIMEOUT1`/`TIMEOUT2`/`TIMEOUT3` and `DELTA`.
const TIMEOUT1: Duration = Duration::from_millis(100);
/// A timeout long enough to check a lower bound on (CPython's
/// `test_timeout` uses 0.2 s and accepts 0.1 s: `CLOCK_RES`).
const TIMEOUT_200: Duration = Duration::from_millis(200);
const CLOCK_RES: Duration = Duration::from_millis(100);

fn sleep(d: Duration) {
    std::thread::sleep(d);
}

/// Runs `f` and says how long it took (CPython's `TimingWrapper`).
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Polls `probe` until it returns `want` (CPython's
/// `assertReachesEventually`), for at most [`LONG`].
fn reaches_eventually<T: PartialEq + std::fmt::Debug>(probe: impl FnMut() -> T, want: T) {
    let got = common::wait_for(LONG, probe, |v| *v == want);
    assert!(got.is_ok(), "wanted {want:?}, still {got:?} after {LONG:?}");
}

fn is_active(pid: u32) -> bool {
    multiproc::active_children().iter().any(|c| c.pid() == pid)
}

/// CPython's `sqr(x, wait=0.0)`.
fn sqr(x: i64) -> i64 {
    x * x
}

fn sqr_wait((x, ms): (i64, u64)) -> i64 {
    sleep(Duration::from_millis(ms));
    x * x
}

/// CPython's `mul(x, y)`; `starmap` passes the tuple.
fn mul((x, y): (i64, i64)) -> i64 {
    x * y
}

/// An item whose serialisation fails, like CPython's `NotSerializable`
/// (whose `__reduce__` raises).
#[derive(Debug, Clone, PartialEq, Deserialize)]
enum Item {
    Good(bool),
    NotSerializable,
}

impl Serialize for Item {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Item::Good(b) => s.serialize_newtype_variant("Item", 0, "Good", b),
            Item::NotSerializable => Err(serde::ser::Error::custom("cannot serialise this")),
        }
    }
}

/// The process-wide pool of `_TestPool` (`setUpClass`: `Pool(4)`).
fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool::new(4).unwrap())
}

// One module per CPython test class.
mod test_array; // _TestArray
mod test_barrier; // _TestBarrier
mod test_condition; // _TestCondition
mod test_connection; // _TestConnection
mod test_event; // _TestEvent
mod test_lock; // _TestLock
mod test_poll; // _TestPoll
mod test_pool; // _TestPool
mod test_pool_worker_errors; // _TestPoolWorkerErrors
mod test_pool_worker_lifetime; // _TestPoolWorkerLifetime
mod test_process; // _TestProcess
mod test_queue; // _TestQueue
mod test_semaphore; // _TestSemaphore
mod test_shared_memory; // _TestSharedMemory
mod test_value; // _TestValue
mod test_wait; // TestWait
