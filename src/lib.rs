#![doc = include_str!("../README.md")]

// First: its `lifecycle!` macro is used by the modules below.
#[macro_use]
mod logging;

mod affinity;
mod async_wait;
mod bootstrap;
#[cfg(feature = "mpi")]
mod cluster;
mod codec;
mod error;
mod exit_status;
mod manager;
mod panic;
mod participants;
mod pipe;
mod pool;
mod process;
mod queue;
mod region;
mod ring;
mod segment;
mod shared;
mod sync;
mod sys;
mod task;
mod wait;

pub use affinity::cpu_count;
/// bytemuck's marker traits for plain-old-data types, which shared memory
/// holds as bytes: `ShmVec<T>`, `SharedArray<T>` and `SharedValue<T>` need
/// `T: Pod`. Derive them on a `#[repr(C)]` type with bytemuck's `derive`
/// feature (`#[derive(Clone, Copy, Pod, Zeroable)]`).
pub use bytemuck::{Pod, Zeroable};
#[cfg(feature = "mpi")]
pub use cluster::{Cluster, ClusterBuilder, ClusterTiming};
pub use error::{Error, ErrorKind, PanicInfo, Result};
pub use exit_status::ExitStatus;
#[cfg(feature = "tracing")]
pub use logging::{log_to_stderr, LOG_TARGET};
pub use manager::{Dict, List, Managed, Manager, Method, Namespace};
pub use pipe::{pipe, wait, Connection, Waitable};
pub use pool::{
    as_completed, pinning_supported, wait_tasks, AsCompleted, AsCompletedStream, AsyncResult, IMap,
    IMapStream, MapItem, MapOptions, Pool, PoolBuilder, Progress, ReturnWhen, ShmVec, Task,
    WithChunksize, WorkerInsights,
};
pub use process::{
    active_children, all_start_methods, current_process, get_start_method, parent_process,
    set_start_method, Process, ProcessBuilder, ProcessInfo, StartMethod,
};
pub use queue::{JoinableQueue, Queue, SimpleQueue};
pub use shared::{SharedArray, SharedAtomic, SharedMemory, SharedMemoryBuilder, SharedValue};
pub use sync::{
    Barrier, BoundedSemaphore, Condition, ConditionGuard, Event, Lock, LockGuard, RLock,
    RLockGuard, Semaphore,
};

/// Turns this process into a worker if it was started as one; otherwise
/// returns at once. Call it first thing in `main`.
///
/// Workers are this same program, re-executed. In a worker, `init` runs the
/// task the parent sent and exits; it never returns. So everything `main`
/// does before `init` also runs in every worker: keep `init` first.
///
/// A program started by hand with the worker marker in its environment, but
/// without a parent to complete the handshake, exits with a non-zero code
/// and runs no task code.
///
/// Forgetting it is an error, never a process storm: a process that has
/// not run `init()` cannot start workers (every start returns an error of
/// kind [`ErrorKind::InvalidState`] that names the fix), and a child that
/// reaches a start before its `init()` stops there with exit code 123 and
/// one line on stderr instead of starting children of its own. Test files
/// use [`test_support!`] instead; a library that does not own `main` can
/// enable the cargo feature `auto-init`, which calls `init()` from a
/// load-time constructor (see README, "Without `init()`").
///
/// Python counterpart: `if __name__ == "__main__":` (plus
/// `multiprocessing.freeze_support()`).
///
/// ```
/// fn main() {
///     multiproc::init();
///     // … the rest of the program, which may start processes …
/// }
/// ```
///
/// Without it, a start is refused before any child exists:
///
/// ```
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() {
///     // no multiproc::init() here
///     # #[cfg(not(feature = "auto-init"))] {
///     let err = multiproc::Process::spawn(square, 3).unwrap_err();
///     assert_eq!(err.kind(), multiproc::ErrorKind::InvalidState);
///     assert!(err.to_string().contains("call `multiproc::init()` first in `main`"));
///     # }
/// }
/// ```
pub fn init() {
    bootstrap::init();
}

/// Registers `$body` to run at load time, before `main`: a pointer in the
/// platform's table of constructors (`.init_array` on Linux and FreeBSD,
/// `__mod_init_func` on macOS, `.CRT$XCU` on Windows). `#[used]` keeps it
/// through the linker, also from an rlib. Not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __load_time_constructor {
    ($name:ident, $body:block) => {
        #[used]
        #[cfg_attr(
            any(target_os = "linux", target_os = "android", target_os = "freebsd"),
            unsafe(link_section = ".init_array")
        )]
        #[cfg_attr(
            target_vendor = "apple",
            unsafe(link_section = "__DATA,__mod_init_func")
        )]
        #[cfg_attr(windows, unsafe(link_section = ".CRT$XCU"))]
        static $name: extern "C" fn() = {
            // Panics cannot unwind out of an `extern "C"` function: they
            // abort instead.
            extern "C" fn constructor() $body
            constructor
        };
    };
}

// Feature `auto-init`: [`init`] from a load-time constructor, before
// `main`, so that a program whose `main` this crate's user does not own (a
// library embedding `multiproc`) needs no `init()` call. The trade-offs
// are in README ("Forgetting `init()`, and doing without it").
//
// SAFETY (link sections, in the macro): each names the platform's table
// of load-time constructors, which holds `extern "C" fn()` pointers; the
// static is exactly one such pointer, to a function that takes nothing.
#[cfg(feature = "auto-init")]
#[allow(unsafe_code)]
mod auto_init {
    crate::__load_time_constructor!(AUTO_INIT, {
        crate::bootstrap::init();
    });
}

/// Makes a test binary (`cargo test`, `tests/*.rs`) able to start worker
/// processes. Put it once at the top of each integration-test file that
/// uses `multiproc`.
///
/// A worker is the current binary re-executed; in a test binary that means
/// the test harness, which has no `main` of ours to call [`init`]. This
/// macro adds an ignored test, `multiproc_worker_entry`, that calls
/// [`init`], and a load-time constructor that tells `multiproc` to start
/// workers as `<test-binary> multiproc_worker_entry --exact
/// --include-ignored --nocapture --quiet`, so a worker runs only that entry.
/// Tests themselves need no `init()` call.
///
/// Python counterpart: none needed there (`pytest` imports the module, and
/// `fork` copies the test process).
///
/// ```ignore
/// // tests/my_test.rs
/// multiproc::test_support!();
///
/// fn square(x: u64) -> u64 { x * x }
///
/// #[test]
/// fn squares_in_a_child() {
///     let p = multiproc::Process::spawn(square, 9).unwrap();
///     assert_eq!(p.join().unwrap(), 81);
/// }
/// ```
#[macro_export]
macro_rules! test_support {
    () => {
        #[test]
        #[ignore = "entry point of multiproc worker processes, not a test"]
        fn multiproc_worker_entry() {
            $crate::init();
        }

        $crate::__load_time_constructor!(__MULTIPROC_TEST_SUPPORT, {
            $crate::__private::enable_test_mode(module_path!(), "multiproc_worker_entry");
        });
    };
}

#[doc(hidden)]
pub mod __private {
    /// Used by [`crate::test_support!`]: `module` is `module_path!()` where
    /// the macro was expanded, `entry` the entry test's function name.
    pub fn enable_test_mode(module: &str, entry: &str) {
        // libtest names a test by its path without the crate's own name.
        let path = match module.split_once("::") {
            Some((_crate, rest)) => format!("{rest}::{entry}"),
            None => entry.to_string(),
        };
        crate::bootstrap::enable_test_mode(path);
    }
}

/// Entry points for the `fuzz/` crate: every decoder a peer process can
/// reach. Not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz {
    /// Parses a worker marker (what a re-executed child reads from its
    /// environment). Must never panic.
    pub fn marker(s: &str) -> bool {
        crate::bootstrap::parse_marker(s).is_ok()
    }

    /// Decodes a task reference as a child receives it and validates it
    /// against this binary. Must never panic or touch unmapped memory.
    pub fn task_ref(bytes: &[u8]) -> bool {
        match postcard::from_bytes::<crate::task::TaskRef>(bytes) {
            // A fixed key: the fuzzer must get through the tag check first.
            Ok(t) => t.resolve([0x5eed, 0xf00d]).is_ok(),
            Err(_) => false,
        }
    }

    /// Reads the newest handshake generation from a rendezvous segment's
    /// bytes, as a child does (any process of the same user can write
    /// them). Must never panic.
    pub fn rendezvous(bytes: &[u8]) -> bool {
        crate::bootstrap::parse_generation_for_fuzzing(bytes)
    }

    /// Decodes a first handshake message (`Hello`) as the parent does with
    /// whatever connects to its handshake server first. Must never panic.
    pub fn hello(bytes: &[u8]) -> bool {
        crate::bootstrap::decode_hello_for_fuzzing(bytes)
    }

    /// Decodes a child's outcome frame and the typed result inside it, as
    /// the parent does. Must never panic.
    pub fn outcome(bytes: &[u8]) -> bool {
        crate::bootstrap::decode_outcome_for_fuzzing(bytes)
    }

    /// Runs ring operations against a model, with a peer corrupting frame
    /// words and header positions in between. Panics only on a real bug.
    pub fn ring_ops(bytes: &[u8]) {
        crate::ring::fuzzing::run(bytes);
    }

    /// Decodes arbitrary bytes as the codec would a frame's payload (serde
    /// and `Pod` paths). Must never panic.
    pub fn codec_decode(bytes: &[u8]) -> bool {
        crate::codec::fuzz_decode(bytes)
    }

    /// Decodes arbitrary bytes as the pool's frames: task and zero-copy
    /// headers as a worker reads them (with the chunk bounds check), result
    /// frames as the parent reads them (header, error tail, outputs).
    /// Must never panic.
    pub fn pool_frames(bytes: &[u8]) -> bool {
        crate::pool::fuzz_frames(bytes)
    }
}
