//! A test file that forgot `multiproc::test_support!()`: nothing here ran
//! `multiproc::init()`, so every start must be refused at once, before any
//! child exists. Without the guard each child re-ran this harness, whose
//! tests started children of their own: a process storm.

mod common;

use std::time::Duration;

use multiproc::ErrorKind;

fn square(x: u64) -> u64 {
    x * x
}

fn assert_names_the_fix(err: &multiproc::Error) {
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("multiproc::test_support!()") && text.contains("multiproc::init()"),
        "the error must say what to do: {text}"
    );
}

#[test]
fn a_process_start_without_init_is_refused_and_starts_nothing() {
    common::watchdog(Duration::from_secs(60), || {
        let err = multiproc::Process::spawn(square, 3).unwrap_err();
        assert_names_the_fix(&err);
        assert_eq!(err.pid(), None, "no child may have been started");
        assert!(multiproc::active_children().is_empty());
    });
}

#[test]
fn a_pool_without_init_is_refused_and_starts_nothing() {
    common::watchdog(Duration::from_secs(60), || {
        let err = match multiproc::Pool::new(2) {
            Ok(_) => panic!("Pool::new must fail"),
            Err(e) => e,
        };
        assert_names_the_fix(&err);
        assert!(multiproc::active_children().is_empty());
    });
}
