//! What a real user's first day brings: a binary rebuilt while it runs, an
//! odd `TMPDIR`, a full descriptor table, a child's panic on stderr. Each
//! scenario runs in a fresh copy of this test binary (an ignored "inner"
//! test, started with its own environment), so that what it does to its
//! process (limits, a deleted executable) stays there.

multiproc::test_support!();
mod common;

use std::path::Path;
#[cfg(unix)]
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

fn square(x: u64) -> u64 {
    x * x
}

fn boom(_: ()) {
    panic!("boom in the child");
}

/// Set for the inner runs only: run directly (`--include-ignored`), an
/// inner test does nothing.
const INNER: &str = "MULTIPROC_FIRST_DAY_INNER";

fn inner() -> bool {
    std::env::var_os(INNER).is_some()
}

/// Runs inner test `name` of the binary `exe` with `env`, capturing its
/// output.
fn run_inner(exe: &Path, name: &str, env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args([
        name,
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(INNER, "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn assert_inner_passed(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: the inner run failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest says "1 passed" when the inner test ran (not filtered out).
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{what}: the inner test did not run: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[cfg(unix)]
/// A fresh directory of this test's own under the system's temp dir,
/// removed when dropped: also when an assertion fails first.
struct Scratch(PathBuf);

#[cfg(unix)]
impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

#[cfg(unix)]
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn scratch_dir(tag: &str) -> Scratch {
    let dir =
        std::env::temp_dir().join(format!("multiproc-first-day-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Starts a process and a pool and checks their results.
fn start_some_work() {
    let p = multiproc::Process::spawn(square, 7).unwrap();
    assert_eq!(p.join().unwrap(), 49);
    let pool = multiproc::Pool::new(2).unwrap();
    assert_eq!(pool.map(square, 0..5u64).unwrap(), [0, 1, 4, 9, 16]);
}

// ------------------------------------------------ a rebuilt executable

#[test]
#[ignore = "inner scenario of workers_start_after_the_executable_was_replaced"]
fn inner_replace_own_executable() {
    if !inner() {
        return;
    }
    start_some_work();
    // What `cargo build` does to a running binary: a new file renamed over
    // its path. Here the new file is not even a program.
    let exe = std::env::current_exe().unwrap();
    let fresh = exe.with_extension("new");
    std::fs::write(&fresh, b"not the program that is running").unwrap();
    std::fs::rename(&fresh, &exe).unwrap();
    start_some_work();
    // And deleted outright.
    std::fs::remove_file(&exe).unwrap();
    start_some_work();
}

#[cfg(target_os = "linux")]
#[test]
fn workers_start_after_the_executable_was_replaced() {
    common::watchdog(Duration::from_secs(120), || {
        let dir = scratch_dir("exe");
        let copy = dir.join("first_day_copy");
        std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
        let out = run_inner(&copy, "inner_replace_own_executable", &[]);
        assert_inner_passed(&out, "replaced executable");
    });
}

// ------------------------------------------------------- an odd TMPDIR

#[test]
#[ignore = "inner scenario of any_tmpdir_works_and_keeps_nothing"]
fn inner_start_work() {
    if !inner() {
        return;
    }
    for _ in 0..5 {
        start_some_work();
    }
}

#[cfg(unix)]
/// Entries a handshake could leave in `dir`: ipc-channel's `.tmpXXXXXX`
/// directories, or a socket bound at a cut path.
fn handshake_debris(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp") || n.starts_with(".multiproc"))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(unix)]
#[test]
fn any_tmpdir_works_and_keeps_nothing() {
    common::watchdog(Duration::from_secs(300), || {
        let base = scratch_dir("tmpdir");
        let missing = base.join("missing");
        let file = base.join("a-file");
        std::fs::write(&file, b"").unwrap();
        // A directory whose `<dir>/.tmpXXXXXX/socket` is over the 108-byte
        // socket address limit: ipc-channel would bind a cut path.
        let mut long = base.clone();
        while long.as_os_str().len() < 100 {
            long.push("long-directory-name");
        }
        std::fs::create_dir_all(&long).unwrap();
        let cases: [(&str, &Path); 4] = [
            ("missing", &missing),
            ("a regular file", &file),
            ("not writable", Path::new("/proc")),
            ("a long path", &long),
        ];
        for (what, tmpdir) in cases {
            let exe = std::env::current_exe().unwrap();
            let out = run_inner(&exe, "inner_start_work", &[("TMPDIR", tmpdir.as_os_str())]);
            assert_inner_passed(&out, &format!("TMPDIR {what}"));
        }
        let left = handshake_debris(&long);
        assert!(left.is_empty(), "left in the long TMPDIR: {left:?}");
    });
}

// ------------------------------------------------ a full descriptor table

#[cfg(unix)]
#[test]
#[ignore = "inner scenario of a_full_descriptor_table_is_a_clear_error_and_passes"]
#[allow(unsafe_code)]
fn inner_fill_the_descriptor_table() {
    if !inner() {
        return;
    }
    // A small table, so that filling it is quick.
    let limit = libc::rlimit {
        rlim_cur: 256,
        rlim_max: 256,
    };
    // SAFETY: `setrlimit` reads `limit`, a valid local.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
    // This process has not started anything yet: ipc-channel's one-time
    // set-up has not run either. Fill the table, then try.
    let mut filler = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        filler.push(f);
    }
    for _ in 0..3 {
        let err = multiproc::Process::spawn(square, 2).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("Too many open files") && text.contains("ulimit -n"),
            "the error must name the real cause: {text}"
        );
        let err = match multiproc::Pool::new(2) {
            Ok(_) => panic!("a pool cannot start either"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("Too many open files"), "{err}");
    }
    // Descriptors free again: everything works again, for good.
    drop(filler);
    start_some_work();
    start_some_work();
}

#[cfg(unix)]
#[test]
fn a_full_descriptor_table_is_a_clear_error_and_passes() {
    common::watchdog(Duration::from_secs(120), || {
        let tmp = scratch_dir("fds");
        let exe = std::env::current_exe().unwrap();
        let out = run_inner(
            &exe,
            "inner_fill_the_descriptor_table",
            &[("TMPDIR", tmp.as_os_str())],
        );
        let left = handshake_debris(&tmp);
        assert_inner_passed(&out, "full descriptor table");
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    });
}

// --------------------------------------------- a child's panic on stderr

#[test]
#[ignore = "inner scenario of a_childs_panic_names_the_process_on_stderr"]
fn inner_panic_in_a_child() {
    if !inner() {
        return;
    }
    let p = multiproc::Process::builder()
        .name("Cruncher")
        .spawn(boom, ())
        .unwrap();
    let pid = p.pid();
    let err = p.join().unwrap_err();
    assert!(err.is_panic(), "{err}");
    println!("child pid {pid}");
}

#[test]
fn a_childs_panic_names_the_process_on_stderr() {
    common::watchdog(Duration::from_secs(120), || {
        let exe = std::env::current_exe().unwrap();
        let out = run_inner(&exe, "inner_panic_in_a_child", &[]);
        assert_inner_passed(&out, "panic in a child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pid = stdout
            .lines()
            .find_map(|l| l.strip_prefix("child pid "))
            .expect("the inner test prints the child's pid");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("panicked at"))
            .unwrap_or_else(|| panic!("no panic line on stderr: {stderr}"));
        // std's hook may open with an empty line.
        let before = lines[..at].iter().rev().find(|l| !l.trim().is_empty());
        assert_eq!(
            before.copied(),
            Some(format!("Process Cruncher (pid {pid}):").as_str()),
            "{stderr}"
        );
    });
}

// ------------------------------------- a child whose parent already left

/// Unix: the child compares its parent with the marker's at once (Windows
/// relies on the job object and the control channel instead).
#[cfg(unix)]
#[test]
fn a_child_whose_parent_is_gone_exits_122_silently() {
    common::watchdog(Duration::from_secs(60), || {
        // A pid that named a process which has exited.
        let mut gone = Command::new(std::env::current_exe().unwrap())
            .arg("--list")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let dead_pid = gone.id();
        gone.wait().unwrap();
        let empty = multiproc::SharedMemory::create(common::rendezvous::LEN).unwrap();
        let marker = common::rendezvous::marker(dead_pid, &[7; 32], &empty.name());
        let out = common::start_worker_by_hand(&marker)
            .wait_with_output()
            .unwrap();
        assert_eq!(out.status.code(), Some(122), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("multiproc"),
            "nobody is left to read it: stay silent, not {stderr:?}"
        );
    });
}
