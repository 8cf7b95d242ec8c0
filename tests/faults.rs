//! The fault matrix (issue 6): one test per row, each run under a watchdog
//! so that no scenario can hang CI. No row asserts an elapsed time (a busy
//! machine stretches any): a failure noticed by itself shows in the error
//! it gives (not `Timeout`) or in not hanging. Resource counts are taken
//! once nothing is in flight and compared after waiting, under a deadline,
//! for what the crate releases in the background. Rows 10 and the mode checks live in
//! `tests/security.rs`. A row the crate does not meet is a documented
//! limitation whose test shows the limitation (named `limitation_…`).
//!
//! | row | test |
//! |---|---|
//! | 1 SIGKILL a worker during `map` | `row01_…` |
//! | 2 a task panics | `row02_…` |
//! | 3 a worker segfaults / aborts / exits | `row03_…` |
//! | 4 a `Lock` holder is SIGKILLed | `row04_…` |
//! | 5 a Barrier/Semaphore/Event/Condition peer dies | `row05_…` |
//! | 6 the parent is SIGKILLed | `row06_…` |
//! | 7 /dev/shm is full | `row07_…` |
//! | 8 a peer corrupts a ring | `row08_…` |
//! | 9 a peer shrinks a segment | `row09_…` |
//! | 10 impostor at the handshake | `tests/security.rs` |
//! | 11 the bare marker | `row11_…` |
//! | 12 malformed frames | `row12_…` |
//! | 13 the child dies before the handshake | `row13_…` |
//! | 14 nothing left at the end | `row14_…` (+ `.ci/run`'s end checks) |

// Several scenarios need Linux mechanisms (/proc, mount namespaces); their
// helpers are unused elsewhere.
#![cfg_attr(not(target_os = "linux"), allow(dead_code, unused_imports))]

use std::time::{Duration, Instant};

use multiproc::{ErrorKind, ExitStatus, Pool, Process, SharedValue};

multiproc::test_support!();

mod common;
#[allow(unused_imports)]
use common::watchdog;

// ------------------------------------------------------------- allocations

/// Counts the largest single allocation made on a thread while tracking is
/// on (rows 8 and 12: garbage must not request a huge buffer).
mod alloc_probe {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub(crate) struct Probe;

    thread_local! {
        static TRACK: Cell<bool> = const { Cell::new(false) };
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        let _ = TRACK.try_with(|t| {
            if t.get() {
                let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
            }
        });
    }

    // SAFETY: forwards every call to `System` unchanged; only records sizes.
    #[allow(unsafe_code)]
    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: the caller's contract is passed on as is.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from `System.alloc` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: as `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            // SAFETY: as `alloc`; `ptr` came from `System` with `layout`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Runs `f` and returns its value and the largest allocation it made
    /// on this thread.
    pub(crate) fn largest_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
        LARGEST.with(|l| l.set(0));
        TRACK.with(|t| t.set(true));
        let r = f();
        TRACK.with(|t| t.set(false));
        (r, LARGEST.with(Cell::get))
    }
}

#[global_allocator]
static ALLOC: alloc_probe::Probe = alloc_probe::Probe;

// ---------------------------------------------------------------- watchdog

const LIMIT: Duration = Duration::from_secs(60);

fn square(x: u64) -> u64 {
    x * x
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// `true` once `pid` is no longer a live process (gone, or a zombie).
#[cfg(target_os = "linux")]
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
    }
}

/// How long a release the crate finishes in the background (a reaper
/// thread, the kernel tearing down a killed child) may take on a loaded
/// machine before it counts as never; far inside [`LIMIT`].
const RELEASE: Duration = Duration::from_secs(20);

/// Entries in /dev/shm that the crate could have made (the fallback path
/// names them `mp…`; the normal path makes none).
#[cfg(target_os = "linux")]
fn named_shm_entries() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("mp"))
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------ row 1

#[cfg(unix)]
fn sleep_long(_: u64) -> u64 {
    std::thread::sleep(Duration::from_secs(120));
    0
}

/// What row 1's scenario saw, measured inside a child process so that no
/// other test's shared memory is counted.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Row1 {
    kind: ErrorKind,
    err_pid: Option<u32>,
    victim: u32,
    signal: Option<i32>,
    reaped: bool,
    shm_before: (usize, usize),
    /// Once back at `shm_before`, or the last look at the deadline.
    shm_after: (usize, usize),
}

/// Tasks that sleep until killed, each saying first that it runs.
#[cfg(target_os = "linux")]
fn sleep_long_flagged((x, running): (u64, SharedValue<u32>)) -> u64 {
    running.fetch_add(1);
    sleep_long(x)
}

#[cfg(target_os = "linux")]
fn row1_scenario(_: ()) -> Row1 {
    let shm_before = common::settled_held(RELEASE).shm();
    let pool = Pool::builder().processes(2).chunksize(1).build().unwrap();
    let victim = pool.pids()[0];
    let running = SharedValue::new(0u32).unwrap();
    let killer = {
        let running = running.clone();
        std::thread::spawn(move || {
            // Killed during the map: once both workers run a task.
            wait_for_flag(&running, 2);
            // SAFETY: plain syscall on our own worker's pid.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(victim as i32, libc::SIGKILL)
            };
        })
    };
    // No detection, no return: the tasks sleep for 120 s, past the watchdog.
    let items: Vec<_> = (0..4).map(|i| (i, running.clone())).collect();
    let err = pool.map(sleep_long_flagged, items).unwrap_err();
    killer.join().unwrap();
    let proc_entry = format!("/proc/{victim}");
    let gone = || !std::path::Path::new(&proc_entry).exists();
    let reaped = common::wait_for(RELEASE, gone, |&gone| gone).is_ok();
    drop((pool, running));
    let shm_after = common::wait_for(RELEASE, || common::held().shm(), |&shm| shm == shm_before)
        .unwrap_or_else(|last| last);
    Row1 {
        kind: err.kind(),
        err_pid: err.pid(),
        victim,
        signal: err.exit_status().and_then(|s| s.signal()),
        reaped,
        shm_before,
        shm_after,
    }
}

#[cfg(target_os = "linux")]
#[test]
fn row01_sigkill_of_a_worker_during_map() {
    let r = watchdog(LIMIT, || {
        Process::spawn(row1_scenario, ()).unwrap().join().unwrap()
    });
    assert_eq!(r.kind, ErrorKind::ProcessDied, "{r:?}");
    assert_eq!(r.err_pid, Some(r.victim), "{r:?}");
    assert_eq!(r.signal, Some(libc::SIGKILL), "{r:?}");
    assert!(r.reaped, "the killed worker was never reaped: {r:?}");
    assert_eq!(
        r.shm_after, r.shm_before,
        "shared memory still held {RELEASE:?} after the drop: {r:?}"
    );
    assert!(named_shm_entries().is_empty(), "{:?}", named_shm_entries());
}

/// A child killed while it starts, then dropped without a join (what a
/// pool does with a replacement worker when it is dropped): measured in a
/// clean child, as row 1. Returns the shared memory held before, and once
/// back there after the drop (or at the deadline).
#[cfg(target_os = "linux")]
fn killed_while_starting(_: ()) -> ((usize, usize), (usize, usize)) {
    let before = common::settled_held(RELEASE).shm();
    let p = Process::spawn(sleep_long, 0).unwrap();
    // At once: the child has not said hello yet (that takes a millisecond),
    // so its handshake rendezvous is still open.
    p.kill().unwrap();
    let exited = common::wait_for(RELEASE, || p.exit_code(), Option::is_some);
    assert!(exited.is_ok(), "the killed child did not exit");
    drop(p);
    // A start that a handshake thread had already claimed is released by
    // that thread as its send to the dead child fails (~1 ms after the
    // drop on a loaded machine): wait for it.
    let after = common::wait_for(RELEASE, || common::held().shm(), |&shm| shm == before)
        .unwrap_or_else(|last| last);
    (before, after)
}

#[cfg(target_os = "linux")]
#[test]
fn row01_a_child_killed_while_starting_holds_no_shared_memory_after_drop() {
    let (before, after) = watchdog(LIMIT, || {
        Process::spawn(killed_while_starting, ())
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(
        after, before,
        "shared memory (fds, mappings) still held {RELEASE:?} after the drop"
    );
}

// ------------------------------------------------------------------ row 2

fn fragile(x: u64) -> u64 {
    if x == 41 {
        panic!("item {x} is cursed");
    }
    x
}

#[test]
fn row02_a_task_panic_names_message_and_index_and_the_pool_lives() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let pids = pool.pids();
        let err = pool.map(fragile, 0..100).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Panicked, "{err}");
        assert_eq!(err.item_index(), Some(41));
        let info = err.panic_info().unwrap();
        assert!(info.message().contains("item 41 is cursed"), "{info:?}");
        assert_eq!(pool.map(square, 0..5).unwrap(), [0, 1, 4, 9, 16]);
        assert_eq!(pool.pids(), pids, "a panic must not cost a worker");
    });
}

// ------------------------------------------------------------------ row 3

/// Item 5 crashes the way `how` says.
#[cfg(unix)]
#[allow(unsafe_code)]
fn crash_on_five((x, how): (u64, i32)) -> u64 {
    if x == 5 {
        match how {
            // A real invalid access (std's handler lets a fault outside a
            // stack guard page take its default action).
            libc::SIGSEGV => {
                // SAFETY: maps one inaccessible page; no Rust object lives there.
                let page = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_NONE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                assert_ne!(page, libc::MAP_FAILED);
                // SAFETY: not safe on purpose: the write faults (SIGSEGV).
                unsafe { page.cast::<u8>().write_volatile(1) };
            }
            _ => std::process::abort(),
        }
    }
    x
}

/// The crash is noticed by itself (a map has no timeout: missed, it would
/// hang until the watchdog).
#[cfg(unix)]
#[test]
fn row03_a_segfault_or_abort_is_reported_with_its_signal() {
    for sig in [libc::SIGSEGV, libc::SIGABRT] {
        watchdog(LIMIT, move || {
            let pool = Pool::builder().processes(2).chunksize(1).build().unwrap();
            let items: Vec<_> = (0..10).map(|i| (i, sig)).collect();
            let err = pool.map(crash_on_five, items).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
            assert_eq!(err.exit_status().and_then(|s| s.signal()), Some(sig));
            assert_eq!(err.item_index(), Some(5));
            assert_eq!(pool.map(square, 0..3).unwrap(), [0, 1, 4]);
        });
    }
}

fn exit_on_five(x: u64) -> u64 {
    if x == 5 {
        std::process::exit(3);
    }
    x
}

#[test]
fn row03_a_worker_that_exits_is_reported_with_its_code() {
    watchdog(LIMIT, || {
        let pool = Pool::builder().processes(2).chunksize(1).build().unwrap();
        let err = pool.map(exit_on_five, 0..10).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
        assert_eq!(err.exit_status(), Some(ExitStatus::Code(3)));
        assert_eq!(err.item_index(), Some(5));
        assert_eq!(pool.map(square, 0..3).unwrap(), [0, 1, 4]);
    });
}

// ------------------------------------------------------------------ row 4

fn hold_lock((lock, held): (multiproc::Lock, SharedValue<u32>)) {
    let _g = lock.lock().unwrap();
    held.set(1);
    std::thread::sleep(Duration::from_secs(600));
}

fn wait_for_flag(flag: &SharedValue<u32>, value: u32) {
    let seen = common::wait_for(Duration::from_secs(30), || flag.get(), |&v| v == value);
    assert!(seen.is_ok(), "the peer never got ready (flag {seen:?})");
}

/// The death is noticed by itself: each wait's timeout is far longer than
/// any delay a loaded machine causes, so `OwnerDied` (not `Timeout`) is
/// the proof; no elapsed time is asserted (a busy machine stretches it).
#[test]
fn row04_a_killed_lock_holder_gives_owner_died() {
    watchdog(LIMIT, || {
        // The next `lock()` after the holder's death.
        let lock = multiproc::Lock::new().unwrap();
        let held = SharedValue::new(0u32).unwrap();
        let p = Process::spawn(hold_lock, (lock.clone(), held.clone())).unwrap();
        let pid = p.pid();
        wait_for_flag(&held, 1);
        p.kill().unwrap();
        assert!(p.join().unwrap_err().is_process_died());
        let err = lock.lock_timeout(Duration::from_secs(20)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OwnerDied, "{err}");
        assert_eq!(err.pid(), Some(pid));
        drop(lock.lock_timeout(Duration::from_secs(20)).unwrap());

        // A waiter already blocked when the holder dies.
        let lock = multiproc::Lock::new().unwrap();
        let held = SharedValue::new(0u32).unwrap();
        let p = Process::spawn(hold_lock, (lock.clone(), held.clone())).unwrap();
        wait_for_flag(&held, 1);
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || lock.lock_timeout(Duration::from_secs(30)).map(|_| ()))
        };
        // Let the waiter block (if it is late it sees the dead owner on
        // entry: the same error).
        std::thread::sleep(Duration::from_millis(100));
        p.kill().unwrap();
        let err = waiter.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OwnerDied, "{err}");
        let _ = p.join();
    });
}

// ------------------------------------------------------------------ row 5

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Prim {
    Barrier,
    Semaphore,
    Event,
    Condition,
}

/// One handle of each primitive (a child registers for all of them).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Prims {
    barrier: multiproc::Barrier,
    semaphore: multiproc::Semaphore,
    event: multiproc::Event,
    condition: multiproc::Condition,
}

fn new_prims() -> Prims {
    Prims {
        barrier: multiproc::Barrier::new(3).unwrap(),
        semaphore: multiproc::Semaphore::new(0).unwrap(),
        event: multiproc::Event::new().unwrap(),
        condition: multiproc::Condition::new().unwrap(),
    }
}

/// Blocks on `which` (for longer than any delay a loaded machine causes,
/// so a `Timeout` means the death went unnoticed); returns how it ended.
fn block_on(p: &Prims, which: Prim) -> Option<ErrorKind> {
    let t = Duration::from_secs(30);
    let r = match which {
        Prim::Barrier => p.barrier.wait_timeout(t).map(|_| ()),
        Prim::Semaphore => p.semaphore.acquire_timeout(t),
        Prim::Event => p.event.wait_timeout(t),
        Prim::Condition => match p.condition.lock() {
            Ok(mut g) => p.condition.wait_timeout(&mut g, t),
            Err(e) => Err(e),
        },
    };
    r.err().map(|e| e.kind())
}

fn child_waiter((p, which): (Prims, Prim)) -> Option<ErrorKind> {
    block_on(&p, which)
}

fn doomed_peer((p, ready): (Prims, SharedValue<u32>)) {
    let _keep = p;
    ready.set(1);
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn row05_a_dead_peer_wakes_every_waiter_with_peer_died() {
    for which in [Prim::Barrier, Prim::Semaphore, Prim::Event, Prim::Condition] {
        watchdog(LIMIT, move || {
            let prims = new_prims();
            let ready = SharedValue::new(0u32).unwrap();
            let doomed = Process::spawn(doomed_peer, (prims.clone(), ready.clone())).unwrap();
            wait_for_flag(&ready, 1);
            let other = Process::spawn(child_waiter, (prims.clone(), which)).unwrap();
            let here = {
                let prims = prims.clone();
                std::thread::spawn(move || block_on(&prims, which))
            };
            // Let both waiters block (if one is late it sees the broken
            // primitive on entry: the same error).
            std::thread::sleep(Duration::from_millis(300));
            doomed.kill().unwrap();
            for kind in [here.join().unwrap(), other.join().unwrap()] {
                assert_eq!(kind, Some(ErrorKind::PeerDied), "{which:?}");
            }
            assert!(doomed.join().unwrap_err().is_process_died());
        });
    }
}

/// A wait that need not wait succeeds even after a participant died: a set
/// event, a free permit (Python answers `True` there too). One that must
/// wait still finds the death.
#[test]
fn row05_a_dead_peer_does_not_fail_a_wait_already_answered() {
    watchdog(LIMIT, || {
        let prims = new_prims();
        let ready = SharedValue::new(0u32).unwrap();
        let doomed = Process::spawn(doomed_peer, (prims.clone(), ready.clone())).unwrap();
        wait_for_flag(&ready, 1);
        doomed.kill().unwrap();
        assert!(doomed.join().unwrap_err().is_process_died());
        prims.event.set();
        prims.event.wait().unwrap();
        prims.semaphore.release().unwrap();
        prims.semaphore.acquire().unwrap();
        prims.event.clear();
        for which in [Prim::Event, Prim::Semaphore] {
            assert_eq!(
                block_on(&prims, which),
                Some(ErrorKind::PeerDied),
                "{which:?}"
            );
        }
    });
}

// ------------------------------------------------------------------ row 6

/// Starts a pool and a child that shares an array with it, reports every
/// pid and the array's name, then waits to be killed.
#[cfg(target_os = "linux")]
fn doomed_parent(path: String) {
    let pool = Pool::new(2).unwrap();
    let shm = multiproc::SharedMemory::create(1 << 20).unwrap();
    let holder = Process::spawn(
        |m: multiproc::SharedMemory| {
            m.write_at(0, &[1]);
            std::thread::sleep(Duration::from_secs(600));
        },
        shm.clone(),
    )
    .unwrap();
    let mut first = [0u8];
    while {
        shm.read_at(0, &mut first);
        first[0] != 1
    } {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut pids = pool.pids();
    pids.push(holder.pid());
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let name = shm.name();
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, format!("{}\n{name}", pids.join(","))).unwrap();
    std::fs::rename(tmp, path).unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

/// `true` if any process holds an fd or a mapping of the tmpfs inode.
#[cfg(target_os = "linux")]
fn inode_held(ino: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    for proc_dir in std::fs::read_dir("/proc").unwrap().flatten() {
        let p = proc_dir.path();
        if let Ok(fds) = std::fs::read_dir(p.join("fd")) {
            for fd in fds.flatten() {
                let is_shm = std::fs::read_link(fd.path())
                    .map(|l| l.to_string_lossy().starts_with("/dev/shm/"))
                    .unwrap_or(false);
                if is_shm && std::fs::metadata(fd.path()).is_ok_and(|m| m.ino() == ino) {
                    return true;
                }
            }
        }
        if let Ok(maps) = std::fs::read_to_string(p.join("maps")) {
            let needle = format!(" {ino} ");
            if maps
                .lines()
                .any(|l| l.contains(" /dev/shm/") && l.contains(&needle))
            {
                return true;
            }
        }
    }
    false
}

#[cfg(target_os = "linux")]
#[test]
fn row06_a_sigkilled_parent_takes_its_workers_and_segments_along() {
    watchdog(LIMIT, || {
        let path = std::env::temp_dir().join(format!("multiproc-row6-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let p = Process::spawn(doomed_parent, path.to_string_lossy().into_owned()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let report = loop {
            if let Ok(s) = std::fs::read_to_string(&path) {
                break s;
            }
            assert!(Instant::now() < deadline, "the parent never reported");
            std::thread::sleep(Duration::from_millis(5));
        };
        std::fs::remove_file(&path).unwrap();
        let (pids, name) = report.split_once('\n').unwrap();
        let pids: Vec<u32> = pids.split(',').map(|p| p.parse().unwrap()).collect();
        // Locator `pid.fd.dev.ino`: the inode is the fourth field, in hex.
        let ino = u64::from_str_radix(
            name.split('_').next().unwrap().split('.').nth(3).unwrap(),
            16,
        )
        .unwrap();
        assert_eq!(pids.len(), 3);
        assert!(pids.iter().all(|&pid| !is_dead(pid)));
        assert!(inode_held(ino), "the probe must see the live segment");

        p.kill().unwrap();
        let alive = || pids.iter().copied().filter(|&pid| !is_dead(pid)).collect();
        let left: Result<Vec<u32>, _> = common::wait_for(RELEASE, alive, Vec::is_empty);
        assert!(
            left.is_ok(),
            "workers {left:?} outlived their SIGKILLed parent by {RELEASE:?}"
        );
        assert!(p.join().unwrap_err().is_process_died());
        // Zombies may still hold mappings until reaped by init.
        let held = common::wait_for(RELEASE, || inode_held(ino), |&held| !held);
        assert!(held.is_ok(), "the segment outlived everyone by {RELEASE:?}");
        assert!(named_shm_entries().is_empty(), "{:?}", named_shm_entries());
    });
}

// ------------------------------------------------------------------ row 7

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Row7 {
    /// The machine does not allow a private mount namespace (why).
    Skipped(String),
    Ran {
        too_big: Result<(), (ErrorKind, String)>,
        fits: Result<(), ErrorKind>,
        second: Result<(), ErrorKind>,
        queue: Result<(), ErrorKind>,
    },
}

/// In a child: a private mount namespace (this thread only) with a 1 MiB
/// tmpfs on /dev/shm, then segments that do not fit, and one that does
/// and is written to its last byte (a SIGBUS would kill this child).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn full_dev_shm(_: ()) -> Row7 {
    use std::ffi::CString;
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: unshare affects only this thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Row7::Skipped(os("unshare(CLONE_NEWNS)"));
    }
    let root = CString::new("/").unwrap();
    let none = CString::new("none").unwrap();
    // SAFETY: valid C strings; changes propagation in our namespace only.
    let rc = unsafe {
        libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Row7::Skipped(os("mount --make-rprivate /"));
    }
    let (tmpfs, target, opts) = (
        CString::new("tmpfs").unwrap(),
        CString::new("/dev/shm").unwrap(),
        CString::new("size=1m").unwrap(),
    );
    // SAFETY: valid C strings; the mount is private to this namespace.
    let rc = unsafe {
        libc::mount(
            tmpfs.as_ptr(),
            target.as_ptr(),
            tmpfs.as_ptr(),
            0,
            opts.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Row7::Skipped(os("mount -t tmpfs -o size=1m tmpfs /dev/shm"));
    }
    let too_big = multiproc::SharedMemory::create(4 << 20)
        .map(drop)
        .map_err(|e| (e.kind(), e.to_string()));
    let fits = multiproc::SharedMemory::create(600 << 10);
    let ok = fits.as_ref().map(|m| {
        m.write_at(0, &vec![0xa5; m.len()]);
        assert!(m.to_vec().iter().all(|&b| b == 0xa5));
    });
    let second = multiproc::SharedMemory::create(600 << 10).map(drop);
    let queue = multiproc::Queue::<u64>::new().map(drop);
    Row7::Ran {
        too_big,
        fits: ok.map_err(|e| e.kind()),
        second: second.map_err(|e| e.kind()),
        queue: queue.map_err(|e| e.kind()),
    }
}

#[cfg(target_os = "linux")]
#[test]
fn row07_a_full_dev_shm_is_no_space_at_creation_never_sigbus() {
    let r = watchdog(LIMIT, || {
        Process::spawn(full_dev_shm, ()).unwrap().join().unwrap()
    });
    match r {
        Row7::Skipped(why) => {
            eprintln!("SKIPPED row 7: this machine refuses a private tmpfs ({why})")
        }
        Row7::Ran {
            too_big,
            fits,
            second,
            queue,
        } => {
            let (kind, msg) = too_big.unwrap_err();
            assert_eq!(kind, ErrorKind::NoSpace, "{msg}");
            assert!(msg.contains("exhausted"), "unclear message: {msg}");
            fits.unwrap();
            assert_eq!(second, Err(ErrorKind::NoSpace));
            assert_eq!(queue, Err(ErrorKind::NoSpace));
        }
    }
}

// ------------------------------------------------------------------ row 9

/// Maps the segment, says so, waits for the go, then reads all of it:
/// (length, bytes that are not zero, whether the mapping was lost).
fn read_after_go((m, go): (multiproc::SharedMemory, SharedValue<u32>)) -> (usize, usize, bool) {
    go.set(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while go.get() != 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let bytes = m.to_vec();
    (
        bytes.len(),
        bytes.iter().filter(|&&b| b != 0).count(),
        m.is_lost(),
    )
}

/// The fd under which this process holds `m` (its name starts
/// `<pid>.<fd>.`).
#[cfg(target_os = "linux")]
fn fd_of(m: &multiproc::SharedMemory) -> String {
    let name = m.name();
    name.split('_')
        .next()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap()
        .to_string()
}

/// What any peer holding segments can do: shrink every shared-memory file
/// it holds to nothing (`ftruncate` through its own fd). Returns how many.
#[cfg(target_os = "linux")]
fn shrink_every_segment() -> usize {
    shrink_segments_larger_than(0)
}

/// As [`shrink_every_segment`], for the files over `min` bytes only.
#[cfg(target_os = "linux")]
fn shrink_segments_larger_than(min: u64) -> usize {
    let mut shrunk = 0;
    for (fd, _) in common::shm_fds() {
        let f = std::fs::OpenOptions::new().write(true).open(fd).unwrap();
        if f.metadata().unwrap().len() <= min {
            continue;
        }
        f.set_len(0).unwrap();
        shrunk += 1;
    }
    shrunk
}

/// Row 9: a peer `ftruncate`s a segment under a reader. The reader's next
/// access would be SIGBUS; it lives, reads zeros, and is told the memory
/// is lost. The process that shrank it survives its own mapping too.
#[cfg(target_os = "linux")]
#[test]
fn row09_a_peer_shrinking_a_segment_crashes_no_reader() {
    watchdog(LIMIT, || {
        let m = multiproc::SharedMemory::create(1 << 20).unwrap();
        m.write_at(0, &[0xab; 1 << 16]);
        let go = SharedValue::new(0u32).unwrap();
        let reader = Process::spawn(read_after_go, (m.clone(), go.clone())).unwrap();
        wait_for_flag(&go, 1);
        // The peer's move: open the segment as any holder can, shrink it.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd_of(&m)))
            .unwrap();
        f.set_len(0).unwrap();
        go.set(2);
        let (len, nonzero, lost) = reader.join().expect("the reader must survive");
        assert_eq!((len, nonzero, lost), (1 << 20, 0, true));
        // This process's own mapping is guarded the same way.
        assert!(!m.is_lost(), "not touched since the shrink yet");
        let bytes = m.to_vec();
        assert!(m.is_lost());
        assert!(bytes.iter().all(|&b| b == 0));
        // Writes are private now: another view of the same segment is
        // still lost, and a fresh open is refused (the size is wrong).
        m.write_at(0, &[1]);
        assert!(multiproc::SharedMemory::open(&m.name()).is_err());
    });
}

/// A hostile peer: shrinks every segment it was given, then exits cleanly.
#[cfg(target_os = "linux")]
fn shrink_everything(
    _: (
        multiproc::Queue<u64>,
        multiproc::Lock,
        multiproc::Connection,
        multiproc::Event,
        multiproc::Semaphore,
    ),
) -> usize {
    shrink_every_segment()
}

/// Row 9: every blocking object over a shrunk segment fails with a
/// `Protocol` error saying so, instead of crashing, hanging, or excluding
/// nobody (a lock word in private zeros).
#[cfg(target_os = "linux")]
#[test]
fn row09_objects_over_a_shrunk_segment_fail_with_protocol() {
    watchdog(LIMIT, || {
        let q = multiproc::Queue::<u64>::new().unwrap();
        let lock = multiproc::Lock::new().unwrap();
        let (here, there) = multiproc::pipe(true).unwrap();
        let event = multiproc::Event::new().unwrap();
        let sem = multiproc::Semaphore::new(0).unwrap();
        let objects = (q.clone(), lock.clone(), there, event.clone(), sem.clone());
        let shrunk = Process::spawn(shrink_everything, objects)
            .unwrap()
            .join()
            .unwrap();
        assert!(shrunk >= 5, "only {shrunk} segments shrunk");
        let protocol = |what: &str, r: multiproc::Result<()>| {
            let e = r.expect_err(what);
            assert_eq!(e.kind(), ErrorKind::Protocol, "{what}: {e}");
            assert!(e.to_string().contains("shrunk"), "{what}: {e}");
        };
        protocol("get", q.get().map(drop));
        protocol("put", q.put(&7));
        protocol("lock", lock.lock().map(drop));
        protocol("lock again", lock.lock().map(drop));
        protocol("recv", here.recv::<u64>().map(drop));
        protocol("send", here.send(&1u64));
        protocol("event wait", event.wait());
        protocol("acquire", sem.acquire());
    });
}

/// A task that shrinks every segment its worker holds: the pool's rings,
/// its doorbell, everything.
#[cfg(target_os = "linux")]
fn shrink_my_worker(x: u64) -> u64 {
    if x == 3 {
        shrink_every_segment();
    }
    x
}

/// Row 9, the pool: a task that shrinks its worker's segments fails the
/// call with an error naming that worker; the parent lives and nothing
/// hangs, including dropping the pool.
#[cfg(target_os = "linux")]
#[test]
fn row09_a_task_shrinking_the_pools_segments_fails_the_call() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let err = pool
            .map(shrink_my_worker, 0..64u64)
            .expect_err("the map cannot succeed");
        eprintln!("row 9 pool: {err}");
        assert!(
            matches!(err.kind(), ErrorKind::Protocol | ErrorKind::ProcessDied),
            "{err}"
        );
        assert!(err.to_string().contains("shr"), "says what happened: {err}");
        // The task also shrank the doorbell every worker shares, so the
        // pool breaks as soon as it notices; until then a call may still
        // finish on the intact workers. Either way: a right answer or a
        // clear error, never a hang.
        match pool.map(square, 0..4u64) {
            Ok(v) => assert_eq!(v, [0, 1, 4, 9]),
            Err(e) => assert!(e.to_string().contains("broken"), "{e}"),
        }
        drop(pool);
    });
}

/// Row 9, recycled segments: a pool reuses the segment of a worker that
/// exited for its replacement; a segment that worker shrank must not be
/// reused (the replacement could not open it, and the pool would break).
#[cfg(target_os = "linux")]
#[test]
fn row09_a_segment_a_worker_shrank_is_not_given_to_its_replacement() {
    watchdog(LIMIT, || {
        let pool = Pool::builder()
            .processes(1)
            .max_tasks_per_child(1)
            .chunksize(1)
            .build()
            .unwrap();
        // Workers that replace each other cleanly, so segments recycle;
        // now and then one shrinks its rings. Every call after that still
        // works, on replacements with whole rings.
        for _ in 0..8 {
            assert_eq!(pool.map(square, 0..4u64).unwrap(), [0, 1, 4, 9]);
            let err = pool
                .map(shrink_my_rings, [3u64])
                .expect_err("the shrinking task's result cannot arrive");
            assert!(
                matches!(err.kind(), ErrorKind::Protocol | ErrorKind::ProcessDied),
                "{err}"
            );
        }
        assert_eq!(pool.map(square, 0..4u64).unwrap(), [0, 1, 4, 9]);
    });
}

/// A `SIGBUS` that is not about the crate's memory, in a process where the
/// guard is installed (it holds a segment): a fault on a shrunk mapping of
/// its own file. It must still kill the process.
///
/// (A `raise(SIGBUS)` is passed on too, but to std's stack-overflow
/// handler, which swallows a signal it did not expect once — in any Rust
/// program, with or without this crate — so it makes no test.)
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn foreign_sigbus(_: ()) -> u32 {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let held = multiproc::SharedMemory::create(4096).unwrap();
    held.write_at(0, &[1]);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open("/dev/shm")
        .unwrap();
    f.set_len(8192).unwrap();
    // SAFETY: a fresh shared mapping of a file this process owns.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    f.set_len(0).unwrap();
    // SAFETY: inside the mapping; the page is gone, so this is SIGBUS — the
    // point of the test.
    let v = unsafe { p.cast::<u8>().read_volatile() };
    u32::from(v) + 2
}

/// Row 9's guard takes only faults in the crate's own mappings: a fault
/// anywhere else still kills the process with `SIGBUS`, as without it.
#[cfg(target_os = "linux")]
#[test]
fn row09_the_guard_passes_other_faults_on() {
    watchdog(LIMIT, || {
        let err = Process::spawn(foreign_sigbus, ())
            .unwrap()
            .join()
            .expect_err("a foreign SIGBUS must kill");
        assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
        assert_eq!(
            err.exit_status().and_then(|s| s.signal()),
            Some(libc::SIGBUS),
            "{err}"
        );
    });
}

/// A task that shrinks only its worker's rings (the one big segment a
/// worker of a plain `map` holds; the doorbell is 128 bytes).
#[cfg(target_os = "linux")]
fn shrink_my_rings(x: u64) -> u64 {
    if x == 3 {
        assert_eq!(shrink_segments_larger_than(4096), 1);
    }
    x
}

/// Row 9, the pool: a worker that shrinks its own rings is killed and
/// replaced; the call fails naming it, and the pool goes on.
#[cfg(target_os = "linux")]
#[test]
fn row09_a_worker_shrinking_its_rings_is_replaced_and_the_pool_goes_on() {
    watchdog(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let err = pool
            .map(shrink_my_rings, 0..64u64)
            .expect_err("the map cannot succeed");
        assert!(
            matches!(err.kind(), ErrorKind::Protocol | ErrorKind::ProcessDied),
            "{err}"
        );
        assert!(err.to_string().contains("shr"), "says what happened: {err}");
        assert_eq!(
            pool.map(square, 0..100u64).unwrap(),
            (0..100u64).map(|x| x * x).collect::<Vec<_>>()
        );
        assert!(pool.restarts() >= 1);
    });
}

// ------------------------------------------------------------- rows 8, 12

/// The text name of the segment under a pipe (what a peer that knows the
/// handle can open): `Connection`'s wire form is `(handle, end, duplex)`.
#[cfg(target_os = "linux")]
fn pipe_segment_name(c: &multiproc::Connection) -> String {
    type Wire = ((u32, i32, u64, u64), u64, [u64; 2], u8, bool);
    let bytes = postcard::to_allocvec(c).unwrap();
    let ((pid, fd, dev, ino), len, tag, _end, _duplex): Wire =
        postcard::from_bytes(&bytes).unwrap();
    format!(
        "{pid}.{fd}.{dev:x}.{ino:x}_{len:x}_{:016x}{:016x}",
        tag[0], tag[1]
    )
}

/// Pipe layout (src/pipe/): the holder tables of both ends (2176 bytes),
/// then the rings. Ring layout (src/ring/): a 384-byte header (consumer
/// head at 128), then the data; a pipe's second ring follows the first.
const PIPE_HEADER: usize = 2176;
const RING_HEADER: usize = 384;

/// Where a duplex pipe's second ring starts: after the holder tables and
/// the first ring, whose size follows from the segment's (two rings of
/// one size), so that the test does not hard-code the pipe's ring size.
#[cfg(target_os = "linux")]
fn second_ring_of(c: &multiproc::Connection) -> usize {
    let name = pipe_segment_name(c);
    let len = multiproc::SharedMemory::open(&name).unwrap().len();
    PIPE_HEADER + (len - PIPE_HEADER) / 2
}
const HEAD: usize = 128;

/// A peer process that writes `(offset, u64)` pairs into a segment.
fn scribble((name, writes): (String, Vec<(usize, u64)>)) {
    let m = multiproc::SharedMemory::open(&name).unwrap();
    for (off, v) in writes {
        m.write_at(off, &v.to_le_bytes());
    }
}

#[cfg(target_os = "linux")]
#[test]
fn row08_a_peer_writing_a_bad_frame_length_is_a_protocol_error() {
    watchdog(LIMIT, || {
        let (a, b) = multiproc::pipe(true).unwrap();
        // A frame word at position 0 with a valid seal, kind 2 (bytes) and
        // a length of ~4 GiB.
        let word = 0xFFFF_FFF0u64 | 2 << 32 | 0x80_0000 << 40;
        let name = pipe_segment_name(&a);
        Process::spawn(scribble, (name, vec![(PIPE_HEADER + RING_HEADER, word)]))
            .unwrap()
            .join()
            .unwrap();
        let (r, largest) = alloc_probe::largest_during(|| b.recv_bytes());
        let err = r.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        assert!(largest < 1 << 20, "allocated {largest} bytes for garbage");
        // Disconnected for good, both ways.
        assert_eq!(b.recv_bytes().unwrap_err().kind(), ErrorKind::Protocol);
        assert_eq!(a.send_bytes(b"x").unwrap_err().kind(), ErrorKind::Protocol);
    });
}

#[cfg(target_os = "linux")]
#[test]
fn row08_a_peer_writing_an_out_of_range_head_is_a_protocol_error() {
    watchdog(LIMIT, || {
        let (a, b) = multiproc::pipe(true).unwrap();
        let name = pipe_segment_name(&a);
        let ring1 = second_ring_of(&a);
        // Ring 1 carries b → a; its consumer's head, as `a` would publish
        // it, set past anything b ever wrote (and misaligned).
        Process::spawn(scribble, (name, vec![(ring1 + HEAD, 0x7fff_ffff_0003)]))
            .unwrap()
            .join()
            .unwrap();
        let big = vec![7u8; 100 << 10];
        // b refreshes the head when its cached room runs out, at the
        // latest on the third 100 KiB frame into a 256 KiB ring.
        let err = (0..4)
            .find_map(|_| b.send_bytes(&big).err())
            .expect("a corrupt head went unnoticed");
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        assert_eq!(b.send_bytes(b"x").unwrap_err().kind(), ErrorKind::Protocol);
        drop(a);
    });
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Rec {
    id: u64,
    name: String,
    values: Vec<u32>,
}

#[test]
fn row12_malformed_payloads_are_codec_errors_without_huge_allocations() {
    watchdog(LIMIT, || {
        /// Bytes that serialise as themselves (a tuple of `u8`s, no length),
        /// so that a value frame carries exactly them.
        struct Raw(Vec<u8>);
        impl serde::Serialize for Raw {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeTuple;
                let mut t = s.serialize_tuple(self.0.len())?;
                for b in &self.0 {
                    t.serialize_element(b)?;
                }
                t.end()
            }
        }
        fn sender((c, frames): (multiproc::Connection, Vec<Vec<u8>>)) {
            for f in frames {
                c.send(&Raw(f)).unwrap();
            }
        }
        let (rx, tx) = multiproc::pipe(false).unwrap();
        let good = postcard::to_allocvec(&Rec {
            id: 7,
            name: "seven".into(),
            values: vec![1, 2, 3],
        })
        .unwrap();
        // A byte string claiming u64::MAX bytes; a truncated record; a
        // record with trailing bytes; then a good one.
        let huge_len = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0,
        ];
        let frames = vec![
            huge_len.to_vec(),
            good[..good.len() - 2].to_vec(),
            [&good[..], &[0]].concat(),
            good.clone(),
        ];
        let p = Process::spawn(sender, (tx, frames)).unwrap();
        let (r, largest) = alloc_probe::largest_during(|| rx.recv::<Vec<u8>>());
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Codec);
        assert!(largest < 1 << 20, "allocated {largest} bytes for garbage");
        assert_eq!(rx.recv::<Rec>().unwrap_err().kind(), ErrorKind::Codec);
        assert_eq!(rx.recv::<Rec>().unwrap_err().kind(), ErrorKind::Codec);
        assert_eq!(rx.recv::<Rec>().unwrap().name, "seven");
        p.join().unwrap();
    });
}

// ------------------------------------------------------- a fake parent (12)

/// Mirrors of the handshake messages (src/bootstrap.rs): ipc-channel
/// encodes them with postcard, so the same field order decodes the same.
#[cfg(unix)]
mod wire {
    use ipc_channel::ipc::{IpcReceiver, IpcSender};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub(crate) enum Hello {
        Worker {
            token: [u8; 32],
            pid: u32,
            reply: IpcSender<Config>,
        },
        Abort,
    }

    #[derive(Serialize, Deserialize)]
    pub(crate) struct Config {
        pub(crate) name: String,
        pub(crate) parent_name: String,
        /// `TaskRef { offset, fingerprint, tag }`.
        pub(crate) task: (i64, u64, u64),
        pub(crate) args: serde_bytes::ByteBuf,
        pub(crate) results: IpcSender<Outcome>,
        pub(crate) control: IpcReceiver<()>,
        /// Feature `tracing`: where the child forwards its log records.
        #[cfg(feature = "tracing")]
        pub(crate) log: Option<()>,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub(crate) enum Outcome {
        Returned(serde_bytes::ByteBuf),
        Panicked(()),
        Rejected(String),
    }
}

#[cfg(unix)]
fn wait_child(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("the worker did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(unix)]
#[test]
fn row12_an_unknown_task_reference_is_refused_and_runs_nothing() {
    use common::rendezvous;
    use ipc_channel::ipc::{self, IpcOneShotServer};
    watchdog(LIMIT, || {
        let (server, server_name) = IpcOneShotServer::<wire::Hello>::new().unwrap();
        let token = [0x5au8; 32];
        // Play the parent: publish our server in a rendezvous of our own.
        let shm = multiproc::SharedMemory::create(rendezvous::LEN).unwrap();
        rendezvous::publish(&shm, 1, &server_name);
        let mut child = common::start_worker_by_hand(&rendezvous::marker(
            std::process::id(),
            &token,
            &shm.name(),
        ));
        let (_conn, hello) = server.accept().unwrap();
        let wire::Hello::Worker {
            token: presented,
            pid,
            reply,
        } = hello
        else {
            panic!("the child sent Abort");
        };
        assert_eq!(presented, token);
        assert_eq!(pid, child.id());
        let (results, outcome) = ipc::channel::<wire::Outcome>().unwrap();
        let (_control, control_rx) = ipc::channel::<()>().unwrap();
        reply
            .send(wire::Config {
                name: "forged".into(),
                parent_name: "MainProcess".into(),
                // An offset no descriptor has, with a tag nobody computed.
                task: (0x1234, 0xdead_beef, 0x0bad_cafe),
                args: serde_bytes::ByteBuf::from(vec![1, 2, 3]),
                results,
                control: control_rx,
                #[cfg(feature = "tracing")]
                log: None,
            })
            .unwrap();
        let got = outcome.try_recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(matches!(got, wire::Outcome::Rejected(_)), "{got:?}");
        let status = wait_child(&mut child, Duration::from_secs(20));
        assert_eq!(status.code(), Some(121));
    });
}

// ----------------------------------------------------------------- row 11

/// Refused before any wait: the child never reaches its 5 s wait for a
/// task (whose end says "no task from the parent"). That, not an elapsed
/// time, shows it gave up at once.
#[test]
fn row11_the_bare_marker_exits_nonzero_without_waiting_and_runs_nothing() {
    watchdog(LIMIT, || {
        use common::rendezvous;
        let token = [0xab; 32];
        let pid = std::process::id();
        // A rendezvous that opens but in which nothing is published.
        let empty = multiproc::SharedMemory::create(rendezvous::LEN).unwrap();
        for marker in [
            "1".to_string(),
            format!("v2:{pid}:{}", "ab".repeat(32)),
            // The previous version's marker (a socket path) is refused.
            format!("v1:{pid}:{}:/nonexistent/socket", "ab".repeat(32)),
            rendezvous::marker(pid, &token, "/nonexistent/socket"),
            rendezvous::marker(pid, &token, &rendezvous::gone()),
            rendezvous::marker(pid, &token, &empty.name()),
            // Not our parent: refused before opening anything.
            rendezvous::marker(1, &token, &empty.name()),
        ] {
            let child = common::start_worker_by_hand(&marker);
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(121), "{marker:?}: {stderr}");
            assert!(stderr.contains("not starting worker"), "{stderr}");
            // libtest ran nothing but the entry, which exited before
            // reporting any test result.
            assert!(!stdout.contains("test result"), "{stdout}");
            assert!(
                !stderr.contains("no task from the parent"),
                "{marker:?} waited for a task: {stderr}"
            );
        }
    });
}

/// Row 11, continued: a marker whose rendezvous opens and names a server
/// nobody listens on. The child keeps trying (a parent may publish a new
/// server at any time) until its 5 s deadline, then exits 121 having run
/// nothing.
#[test]
fn row11_a_rendezvous_naming_no_server_exits_121_at_the_child_deadline() {
    use common::rendezvous;
    watchdog(LIMIT, || {
        let shm = multiproc::SharedMemory::create(rendezvous::LEN).unwrap();
        // A name each platform's check accepts, where nobody listens.
        let nowhere = if cfg!(windows) {
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        } else {
            "/nonexistent/socket"
        };
        rendezvous::publish(&shm, 1, nowhere);
        let started = Instant::now();
        let marker = rendezvous::marker(std::process::id(), &[0xab; 32], &shm.name());
        let out = common::start_worker_by_hand(&marker)
            .wait_with_output()
            .unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(121), "{stderr}");
        assert!(stderr.contains("no task from the parent"), "{stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("test result"));
        assert!(took >= Duration::from_secs(4), "gave up after {took:?}");
        // The child noted that it tried generation 1 (the parent's hint).
        let mut tried = [0u8; 4];
        shm.read_at(4, &mut tried);
        assert_eq!(u32::from_le_bytes(tried), 1);
    });
}

// ----------------------------------------------------------------- row 13

/// The exit is noticed by itself: the start timeout is an hour, so a
/// start that waited for it would hang until the watchdog.
#[test]
fn row13_a_child_dying_before_the_handshake_is_an_error_before_the_start_timeout() {
    watchdog(LIMIT, || {
        let p = Process::builder()
            .env("MULTIPROC_TEST_EXIT_AT_LOAD", "7")
            .start_timeout(Duration::from_secs(3600))
            .spawn(square, 2)
            .unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
        assert_eq!(err.exit_status(), Some(ExitStatus::Code(7)));
        assert!(
            err.to_string().contains("exited before connecting"),
            "{err}"
        );
    });
}

// ----------------------------------------------------------------- row 14

#[cfg(target_os = "linux")]
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Row14 {
    before: common::Held,
    /// Once back at `before`, or the last look at the deadline.
    after: common::Held,
}

/// In a child (no other test shares its fds): a baseline after a warm-up
/// (the crate's one-time state: its handshake watch thread), taken once
/// nothing is in flight; then every kind of object and failure, then
/// everything dropped; waits (bounded) until fds, shared memory and
/// children are back to the baseline.
#[cfg(target_os = "linux")]
fn leak_check(_: ()) -> Row14 {
    Process::spawn(square, 1).unwrap().join().unwrap();
    // The warm-up's handshake thread may still be dropping its rendezvous.
    let before = common::settled_held(RELEASE);
    {
        let pool = Pool::new(2).unwrap();
        assert_eq!(pool.map(square, 0..50).unwrap().len(), 50);
        assert!(pool.map(fragile, 0..50).is_err());
        assert!(pool.map(exit_on_five, 0..10).is_err());
        let _ = pool.apply_async(square, 3).unwrap().get();
        let q = multiproc::Queue::<u64>::new().unwrap();
        let (a, b) = multiproc::pipe(true).unwrap();
        let lock = multiproc::Lock::new().unwrap();
        let arr = multiproc::SharedArray::<u64>::new(1000).unwrap();
        let p = Process::spawn(
            |(q, c, l, arr): (
                multiproc::Queue<u64>,
                multiproc::Connection,
                multiproc::Lock,
                multiproc::SharedArray<u64>,
            )| {
                let _g = l.lock().unwrap();
                q.put(&5).unwrap();
                c.send(&6u64).unwrap();
                arr.set(0, 7);
            },
            (q.clone(), b, lock.clone(), arr.clone()),
        )
        .unwrap();
        assert_eq!(q.get().unwrap(), 5);
        assert_eq!(a.recv::<u64>().unwrap(), 6);
        p.join().unwrap();
        assert_eq!(arr.get(0), Some(7));
        let doomed = Process::spawn(nap, 60_000).unwrap();
        doomed.kill().unwrap();
        let _ = doomed.join();
    }
    let after =
        common::wait_for(RELEASE, common::held, |now| *now == before).unwrap_or_else(|last| last);
    Row14 { before, after }
}

#[cfg(target_os = "linux")]
#[test]
fn row14_nothing_is_left_fds_shared_memory_children() {
    let r = watchdog(LIMIT, || {
        Process::spawn(leak_check, ()).unwrap().join().unwrap()
    });
    assert!(
        r.before.children.is_empty(),
        "children at the baseline: {r:?}"
    );
    assert_eq!(r.after.fds, r.before.fds, "fd leak: {r:?}");
    assert_eq!(r.after.shm(), r.before.shm(), "shared memory kept: {r:?}");
    assert!(r.after.children.is_empty(), "children left: {r:?}");
    assert!(named_shm_entries().is_empty(), "{:?}", named_shm_entries());
}
