//! Every child of this test binary reaches a start before `init()` made it
//! a worker (a load-time hook starts one, as a spawn placed above `init()`
//! in `main` would). Each must stop there, with exit code 123 and one line
//! on stderr, instead of starting children of its own; the parent's call
//! fails with an error that names the fix, and a pool breaks instead of
//! replacing such workers forever.

multiproc::test_support!();
mod common;

use std::time::Duration;

use multiproc::{ErrorKind, ExitStatus};

fn square(x: u64) -> u64 {
    x * x
}

// In a process that carries the worker marker (a child of this binary,
// before its `init()`), start a child: the guard must stop this process.
multiproc::__load_time_constructor!(SPAWN_BEFORE_INIT, {
    if std::env::var_os("MULTIPROC_WORKER").is_some() {
        let _ = multiproc::Process::spawn(square, 1);
        // Not reached: the guard exits. Make a miss loud.
        std::process::exit(77);
    }
});

#[test]
fn a_child_that_starts_before_init_stops_and_the_parent_names_the_fix() {
    common::watchdog(Duration::from_secs(60), || {
        let p = multiproc::Process::spawn(square, 3).unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
        assert_eq!(err.exit_status(), Some(ExitStatus::Code(123)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("call `multiproc::init()` first in `main`"),
            "{text}"
        );
    });
}

#[test]
fn a_pool_whose_workers_start_before_init_breaks_with_the_fix() {
    common::watchdog(Duration::from_secs(60), || {
        let pool = multiproc::Pool::new(2).unwrap();
        let err = pool.map(square, 0..8u64).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
        assert!(
            err.to_string()
                .contains("call `multiproc::init()` first in `main`"),
            "{err}"
        );
        // Broken for good: no replacement workers are started over and
        // over (each would stop the same way).
        let again = pool.map(square, 0..8u64).unwrap_err();
        assert_eq!(again.kind(), ErrorKind::InvalidState, "{again}");
        assert_eq!(
            pool.restarts(),
            0,
            "a broken pool must not replace workers that stop the same way"
        );
    });
}

#[test]
fn the_stopped_child_says_why_on_stderr() {
    common::watchdog(Duration::from_secs(60), || {
        // Started by hand with a marker (no parent will answer): the hook
        // reaches its spawn before the entry's `init()` and is stopped.
        let child = common::start_worker_by_hand("v2:1:00:zz");
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(123), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("multiproc")).collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
        assert!(
            lines[0].contains("reached a spawn before `multiproc::init()`"),
            "{stderr}"
        );
    });
}
