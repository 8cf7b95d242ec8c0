//! `Process`: lifecycle, typed results, panics, exit codes, start-up failures.

use std::time::{Duration, Instant};

use multiproc::{ErrorKind, Event, ExitStatus, Process, SharedValue};
use serde::{Deserialize, Serialize};

multiproc::test_support!();

mod common;
use common::{nap_counted, wait_running, watchdog, when_set};

fn square(x: u64) -> u64 {
    x * x
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u32,
    label: String,
    values: Vec<f64>,
    nested: Option<Box<Record>>,
}

fn enrich(mut r: Record) -> Record {
    r.label = format!(
        "{} (seen by {})",
        r.label,
        multiproc::current_process().name()
    );
    r.values.push(r.values.iter().sum());
    r
}

fn shout(s: String) -> String {
    s.to_uppercase()
}

fn panics(msg: String) -> u32 {
    panic!("{msg}")
}

#[test]
fn join_returns_the_typed_result() {
    let p = Process::spawn(square, 7).unwrap();
    assert_eq!(p.join().unwrap(), 49);
}

#[test]
fn structs_and_strings_round_trip() {
    let r = Record {
        id: 3,
        label: "rec".into(),
        values: vec![1.5, 2.5],
        nested: Some(Box::new(Record {
            id: 4,
            label: "inner".into(),
            values: vec![],
            nested: None,
        })),
    };
    let p = Process::builder()
        .name("enricher")
        .spawn(enrich, r.clone())
        .unwrap();
    let out = p.join().unwrap();
    assert_eq!(out.label, "rec (seen by enricher)");
    assert_eq!(out.values, vec![1.5, 2.5, 4.0]);
    assert_eq!(out.nested, r.nested);
    assert_eq!(
        Process::spawn(shout, "héllo wörld".to_string())
            .unwrap()
            .join()
            .unwrap(),
        "HÉLLO WÖRLD"
    );
}

#[test]
fn closures_that_capture_nothing_are_tasks() {
    let p = Process::spawn(|(a, b): (u32, u32)| a * 10 + b, (4, 2)).unwrap();
    assert_eq!(p.join().unwrap(), 42);
}

#[test]
fn large_arguments_and_results_cross() {
    let big: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let p = Process::spawn(
        |v: Vec<u8>| v.into_iter().rev().collect::<Vec<u8>>(),
        big.clone(),
    )
    .unwrap();
    let out = p.join().unwrap();
    assert_eq!(out.len(), big.len());
    assert!(out.iter().eq(big.iter().rev()));
}

/// 64 MiB each way (the handshake's ipc-channel carries the argument and
/// the result; it has no frame limit of its own). A `ByteBuf`:
/// unoptimised serde walks a `Vec<u8>` byte by byte.
#[test]
fn arguments_and_results_of_64_mib_cross() {
    let big = serde_bytes::ByteBuf::from(
        (0..64u32 << 20)
            .step_by(4096)
            .flat_map(|i| [(i >> 12) as u8; 4096])
            .collect::<Vec<u8>>(),
    );
    assert_eq!(big.len(), 64 << 20);
    let p = Process::spawn(
        |mut v: serde_bytes::ByteBuf| {
            v.reverse();
            v
        },
        big.clone(),
    )
    .unwrap();
    let out = p.join().unwrap();
    assert_eq!(out.len(), big.len());
    assert!(out.iter().eq(big.iter().rev()));
}

#[test]
fn pid_name_and_current_process() {
    let p = Process::spawn(
        |_: ()| (std::process::id(), multiproc::current_process()),
        (),
    )
    .unwrap();
    let pid = p.pid();
    let name = p.name().to_string();
    assert!(name.starts_with("Process-"), "{name}");
    let (child_pid, info) = p.join().unwrap();
    assert_eq!(child_pid, pid);
    assert_eq!(info.pid(), pid);
    assert_eq!(info.name(), name);
    assert_eq!(multiproc::current_process().name(), "MainProcess");
}

#[test]
fn is_alive_and_join_timeout() {
    let go = Event::new().unwrap();
    let mut p = Process::spawn(when_set, (go.clone(), 400)).unwrap();
    assert!(p.is_alive());
    assert_eq!(p.exit_code(), None);
    let err = p.join_timeout(Duration::from_millis(20)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("still running"), "{err}");
    assert!(p.is_alive());
    go.set();
    assert_eq!(p.join_timeout(Duration::from_secs(60)).unwrap(), 400);
    assert!(!p.is_alive());
    assert_eq!(p.exit_code(), Some(ExitStatus::Code(0)));
    let again = p.join_timeout(Duration::from_millis(1)).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::InvalidState);
}

/// Polling in short slices never loses a result: on Windows a timed
/// ipc-channel receive cancels its read at each timeout, and a message
/// arriving then could vanish (seen under Wine); `join_timeout` must not.
#[test]
fn join_timeout_in_short_slices_never_loses_a_result() {
    for i in 0..40u64 {
        let mut p = Process::spawn(square, i).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let got = loop {
            match p.join_timeout(Duration::from_millis(1)) {
                Ok(v) => break v,
                Err(e) => assert!(e.is_timeout(), "child {i}: {e}"),
            }
            assert!(Instant::now() < deadline, "child {i}: no result");
        };
        assert_eq!(got, i * i);
    }
}

#[test]
fn exit_code_of_a_child_that_exits() {
    let p = Process::spawn(exit_with, 3).unwrap();
    let pid = p.pid();
    let err = p.join().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProcessDied);
    assert_eq!(err.pid(), Some(pid));
    assert_eq!(err.exit_status(), Some(ExitStatus::Code(3)));
}

#[test]
fn terminate_stops_a_running_child() {
    let running = SharedValue::new(0u32).unwrap();
    let mut p = Process::spawn(nap_counted, (60_000, running.clone())).unwrap();
    // Past the handshake, so this tests a running task.
    wait_running(&running, 1);
    p.terminate().unwrap();
    let err = p.join_timeout(Duration::from_secs(30)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProcessDied);
    #[cfg(unix)]
    {
        assert_eq!(err.exit_status(), Some(ExitStatus::Signal(libc::SIGTERM)));
        assert_eq!(p.exit_code().unwrap().to_python(), -libc::SIGTERM);
    }
    #[cfg(windows)]
    {
        assert_eq!(err.exit_status(), Some(ExitStatus::Signal(15)));
        assert_eq!(p.exit_code().unwrap().to_python(), -15);
    }
    // Signalling an ended child is a no-op, not an error.
    p.terminate().unwrap();
    p.kill().unwrap();
}

#[test]
fn kill_is_distinguishable_from_an_exit_code() {
    let running = SharedValue::new(0u32).unwrap();
    let mut p = Process::spawn(nap_counted, (60_000, running.clone())).unwrap();
    wait_running(&running, 1);
    p.kill().unwrap();
    let err = p.join_timeout(Duration::from_secs(30)).unwrap_err();
    assert!(err.is_process_died());
    let status = err.exit_status().unwrap();
    #[cfg(unix)]
    {
        assert_eq!(status, ExitStatus::Signal(libc::SIGKILL));
        assert_eq!(status.code(), None);
    }
    #[cfg(windows)]
    {
        assert_eq!(status, ExitStatus::Signal(9));
        assert_eq!(status.code(), None);
    }
    assert!(!status.success());
}

#[test]
fn kill_right_after_spawn_is_reported_not_hung() {
    // The child is killed while it is most likely still starting: whichever
    // stage it reached, join reports the death, naming the child and signal.
    // Its task could never end by itself before the kill: a task as short as
    // `square` may run and deliver its value while a busy machine holds this
    // thread between `spawn` and `kill`, and a delivered value is the
    // child's result (the kill then only ends an exiting process).
    let p = Process::spawn(nap, 3_600_000).unwrap();
    let pid = p.pid();
    p.kill().unwrap();
    let err = p.join().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ProcessDied, "{err}");
    assert_eq!(err.pid(), Some(pid));
    #[cfg(unix)]
    assert_eq!(err.exit_status(), Some(ExitStatus::Signal(libc::SIGKILL)));
    #[cfg(windows)]
    assert_eq!(err.exit_status(), Some(ExitStatus::Signal(9)));
}

#[test]
fn a_panic_comes_back_with_message_and_location() {
    let p = Process::spawn(panics, "the sky fell".to_string()).unwrap();
    let pid = p.pid();
    let err = p.join().unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.pid(), Some(pid));
    let info = err.panic_info().unwrap();
    assert_eq!(info.message(), "the sky fell");
    let loc = info.location().unwrap();
    assert!(loc.starts_with("tests/process.rs:"), "{loc}");
    assert!(err.to_string().contains("the sky fell"));
}

/// The exit is noticed by itself, not at the start timeout: that is an
/// hour here, so waiting for it would hang until the watchdog.
#[test]
fn a_child_that_dies_before_the_handshake_is_an_error() {
    watchdog(Duration::from_secs(60), || {
        let p = Process::builder()
            .env("MULTIPROC_TEST_EXIT_AT_LOAD", "7")
            .start_timeout(Duration::from_secs(3600))
            .spawn(square, 2)
            .unwrap();
        let err = p.join().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
        assert_eq!(err.exit_status(), Some(ExitStatus::Code(7)));
    });
}

#[test]
fn a_child_that_never_handshakes_is_killed_at_the_start_timeout() {
    let p = Process::builder()
        .env("MULTIPROC_TEST_SLEEP_AT_LOAD", "60000")
        .start_timeout(Duration::from_millis(300))
        .spawn(square, 2)
        .unwrap();
    let pid = p.pid();
    let err = p.join().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handshake, "{err}");
    assert_eq!(err.pid(), Some(pid));
    // Killed at the timeout; on a loaded machine it may end (and be
    // reaped, by asking) a little after `join` gave up on it.
    let listed = || multiproc::active_children().iter().any(|c| c.pid() == pid);
    let gone = common::wait_for(Duration::from_secs(20), listed, |&listed| !listed);
    assert!(gone.is_ok(), "child {pid} still listed as active");
}

#[test]
fn the_bare_marker_runs_nothing_and_exits_nonzero() {
    let pid = std::process::id();
    for marker in [
        "1".to_string(),
        "v2:1:nothex:/nonexistent".to_string(),
        common::rendezvous::marker(pid, &[0xab; 32], "/nonexistent/socket"),
        // Well formed, but that rendezvous no longer exists.
        common::rendezvous::marker(pid, &[0xab; 32], &common::rendezvous::gone()),
    ] {
        let started = Instant::now();
        let mut child = common::start_worker_by_hand(&marker);
        // Watchdog: never let this test hang.
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > Duration::from_secs(20) {
                child.kill().unwrap();
                panic!("worker with marker {marker:?} did not exit");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(status.code(), Some(121), "marker {marker:?}: {stderr}");
        assert!(stderr.contains("not starting worker"), "{stderr}");
        // Refused at once: it never reached its wait for a task.
        assert!(
            !stderr.contains("no task from the parent"),
            "marker {marker:?} waited for a task: {stderr}"
        );
    }
}

#[test]
fn a_process_outlives_the_thread_that_spawned_it() {
    // Linux's parent-death signal fires when the *thread* that forked a
    // child exits; the child must not die with a short-lived thread.
    let p = std::thread::spawn(|| Process::spawn(nap, 300).unwrap())
        .join()
        .unwrap();
    assert_eq!(p.join().unwrap(), 300);
}

#[test]
fn a_child_can_start_its_own_children() {
    fn parent_of_two(x: u64) -> Vec<u64> {
        let a = Process::spawn(square, x).unwrap();
        let b = Process::spawn(square, x + 1).unwrap();
        vec![a.join().unwrap(), b.join().unwrap()]
    }
    assert_eq!(
        Process::spawn(parent_of_two, 3).unwrap().join().unwrap(),
        vec![9, 16]
    );
}

#[test]
fn active_children_lists_running_children_only() {
    let p = Process::builder()
        .name("lister")
        .spawn(nap, 60_000)
        .unwrap();
    let pid = p.pid();
    let listed = multiproc::active_children();
    assert!(listed
        .iter()
        .any(|c| c.pid() == pid && c.name() == "lister"));
    p.kill().unwrap();
    let _ = p.join();
    assert!(!multiproc::active_children().iter().any(|c| c.pid() == pid));
}

#[test]
fn a_dropped_process_keeps_running_detached() {
    let dir = std::env::temp_dir().join(format!("multiproc-detach-{}", std::process::id()));
    let path = dir.to_string_lossy().into_owned();
    let p = Process::spawn(
        |path: String| {
            std::thread::sleep(Duration::from_millis(100));
            // Written whole, then renamed: the file never exists half-written.
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, b"done").unwrap();
            std::fs::rename(tmp, path).unwrap();
        },
        path.clone(),
    )
    .unwrap();
    drop(p);
    let written = common::wait_for(Duration::from_secs(30), || dir.exists(), |&done| done);
    assert!(written.is_ok(), "the detached child never finished");
    assert_eq!(std::fs::read(&dir).unwrap(), b"done");
    std::fs::remove_file(&dir).unwrap();
}

#[test]
fn many_processes_at_once() {
    let procs: Vec<_> = (0..16u64)
        .map(|i| Process::spawn(square, i).unwrap())
        .collect();
    let out: Vec<u64> = procs.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(out, (0..16u64).map(|i| i * i).collect::<Vec<_>>());
}

#[test]
#[allow(unsafe_code)]
fn cpu_count_is_positive_and_bounded_by_the_affinity_mask() {
    let n = multiproc::cpu_count();
    assert!(n >= 1);
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
        // writes at most size_of::<cpu_set_t>() bytes into it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: see above; pid 0 is the calling thread.
        let rc =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        assert_eq!(rc, 0);
        // SAFETY: `set` was filled by the kernel.
        let allowed = unsafe { libc::CPU_COUNT(&set) } as usize;
        assert!(n <= allowed, "cpu_count {n} > affinity mask {allowed}");
    }
}

/// `true` once `pid` is no longer a live process (gone, or a zombie that
/// someone else has yet to reap).
#[cfg(target_os = "linux")]
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
    }
}

/// `true` once `pid` has exited (or never existed).
#[cfg(windows)]
#[allow(unsafe_code)]
fn is_dead(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, WAIT_TIMEOUT};
    use windows_sys::Win32::System::Threading::{
        OpenProcess, WaitForSingleObject, PROCESS_SYNCHRONIZE,
    };
    // SAFETY: no memory preconditions; null means no such process.
    let h = unsafe { OpenProcess(PROCESS_SYNCHRONIZE, 0, pid) };
    if h.is_null() {
        return true;
    }
    // SAFETY: `h` is the process handle opened above.
    let running = unsafe { WaitForSingleObject(h, 0) } == WAIT_TIMEOUT;
    // SAFETY: `h` is ours and closed once.
    unsafe { CloseHandle(h) };
    !running
}

// Windows: the middle process's kill-on-close job takes its children along.
#[cfg(any(target_os = "linux", windows))]
#[test]
fn children_die_with_their_sigkilled_parent() {
    fn middle(path: String) {
        let kids: Vec<_> = (0..2)
            .map(|_| Process::spawn(nap, 60_000).unwrap())
            .collect();
        let pids: Vec<String> = kids.iter().map(|k| k.pid().to_string()).collect();
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, pids.join(",")).unwrap();
        std::fs::rename(tmp, path).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }
    let path = std::env::temp_dir().join(format!("multiproc-orphans-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let p = Process::spawn(middle, path.to_string_lossy().into_owned()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pids: Vec<u32> = loop {
        if let Ok(s) = std::fs::read_to_string(&path) {
            break s.split(',').map(|p| p.parse().unwrap()).collect();
        }
        assert!(Instant::now() < deadline, "middle process never reported");
        std::thread::sleep(Duration::from_millis(5));
    };
    std::fs::remove_file(&path).unwrap();
    assert!(pids.iter().all(|&pid| !is_dead(pid)));

    p.kill().unwrap();
    let limit = Duration::from_secs(20);
    let alive = || pids.iter().copied().filter(|&pid| !is_dead(pid)).collect();
    let left: Result<Vec<u32>, _> = common::wait_for(limit, alive, Vec::is_empty);
    assert!(
        left.is_ok(),
        "grandchildren {left:?} outlived their SIGKILLed parent by {limit:?}"
    );
    assert!(p.join().unwrap_err().is_process_died());
}

#[cfg(unix)]
#[test]
#[allow(unsafe_code)]
fn no_zombie_is_left_after_join() {
    let reaped = |pid: u32| {
        let mut status = 0;
        // SAFETY: waitpid only writes the status integer we own.
        let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        // -1/ECHILD: not our un-reaped child any more.
        rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
    };
    let p = Process::spawn(square, 5).unwrap();
    let pid = p.pid();
    assert_eq!(p.join().unwrap(), 25);
    assert!(reaped(pid));

    let p = Process::spawn(nap, 60_000).unwrap();
    let pid = p.pid();
    p.kill().unwrap();
    assert!(p.join().is_err());
    assert!(reaped(pid));

    let p = Process::spawn(panics, "x".to_string()).unwrap();
    let pid = p.pid();
    assert!(p.join().is_err());
    assert!(reaped(pid));
}

/// A child that delivered its result exits with its own code (0), never
/// with 122 ("parent gone"): the parent lets go of the child's control
/// link once the result is in, and where no parent-death signal exists
/// (Windows, macOS) the child's parent watch used to see that first, now
/// and then (3 in 20 runs of 20 children under Wine).
#[test]
fn every_short_child_that_delivered_exits_zero() {
    common::watchdog(Duration::from_secs(300), || {
        for i in 0..40u64 {
            let mut p = Process::spawn(square, i).unwrap();
            assert_eq!(p.join_timeout(Duration::from_secs(60)).unwrap(), i * i);
            let deadline = Instant::now() + Duration::from_secs(30);
            let status = loop {
                if let Some(s) = p.exit_code() {
                    break s;
                }
                assert!(Instant::now() < deadline, "child {i} did not exit");
                std::thread::sleep(Duration::from_millis(1));
            };
            assert_eq!(status, ExitStatus::Code(0), "child {i} (pid {})", p.pid());
        }
    });
}

#[test]
fn interrupt_ends_a_child_with_sigint_as_python_3_14() {
    let mut p = Process::spawn(nap, 60_000).unwrap();
    p.interrupt().unwrap();
    let err = p.join_timeout(Duration::from_secs(60)).unwrap_err();
    assert!(err.is_process_died(), "{err}");
    assert_eq!(err.exit_status(), Some(ExitStatus::Signal(2)));
    assert_eq!(p.exit_code().map(|s| s.to_python()), Some(-2));
    // A child that already ended is left alone.
    p.interrupt().unwrap();
}
