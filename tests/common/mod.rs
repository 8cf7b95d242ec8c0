//! Shared by the integration tests that include it (`mod common;`).
#![allow(dead_code)]

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// Test hook, run when the binary loads: a child started with
/// `MULTIPROC_TEST_EXIT_AT_LOAD=n` exits with `n` before it can handshake;
/// with `MULTIPROC_TEST_SLEEP_AT_LOAD=ms` it stalls that long first.
#[used]
#[allow(unsafe_code)]
#[cfg_attr(target_os = "linux", unsafe(link_section = ".init_array"))]
#[cfg_attr(
    target_vendor = "apple",
    unsafe(link_section = "__DATA,__mod_init_func")
)]
#[cfg_attr(windows, unsafe(link_section = ".CRT$XCU"))]
pub(crate) static LOAD_HOOK: extern "C" fn() = {
    extern "C" fn hook() {
        if let Some(code) = std::env::var_os("MULTIPROC_TEST_EXIT_AT_LOAD") {
            std::process::exit(code.to_string_lossy().parse().unwrap_or(99));
        }
        if let Some(ms) = std::env::var_os("MULTIPROC_TEST_SLEEP_AT_LOAD") {
            let ms = ms.to_string_lossy().parse().unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
    hook
};

/// Runs `scenario` on its own thread; the test fails if it has not finished
/// within `limit` (a hang is a failure, never a stuck CI job). Not a speed
/// check: the limits are far above what the scenarios need.
pub(crate) fn watchdog<T: Send + 'static>(
    limit: Duration,
    scenario: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("fault-scenario".into())
        .spawn(move || {
            let out = scenario();
            let _ = tx.send(());
            out
        })
        .unwrap();
    match rx.recv_timeout(limit) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("watchdog: the scenario did not finish within {limit:?} (it hangs)")
        }
    }
}
