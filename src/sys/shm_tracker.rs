//! The shared-memory tracker (Unix): removes the names of tracked named
//! objects when the process that created them ends, however it ends
//! (`kill -9` included). Python's `resource_tracker`, for shared memory.
//!
//! - **One per creating process, started lazily** by the first tracked
//!   named create: the running program re-executed (`worker_exe`, as for
//!   workers) with `MULTIPROC_SHM_TRACKER=v1:<creator pid>` in its
//!   environment and the read end of a pipe as stdin. A load-time
//!   constructor (bottom of this file) sees the variable and runs
//!   [`tracker_main`] before `main`, so the tracker runs none of the
//!   program, needs no `init()` and never starts anything. `init()` checks
//!   the variable as well, should a platform drop the constructor.
//! - **Protocol**: lines on the pipe, `+<name>` after a create, `-<name>`
//!   after `unlink()`. One writer (this process, under a mutex); a line
//!   is at most 257 bytes, so it is also one atomic pipe write.
//! - **End**: the pipe's write end is close-on-exec and held only by the
//!   creator, so the tracker reads EOF exactly when the creator is gone,
//!   whatever killed it. It then removes every name still registered and
//!   exits. As a second way to notice (a write end copied by a
//!   `fork()` without `exec` would keep the pipe open), it checks once a
//!   second whether its parent is still the creator (`getppid`): an
//!   orphan cleans up and exits too. So it never outlives the program by
//!   more than that second, and `PR_SET_PDEATHSIG` is not used: it fires
//!   when the *thread* that spawned the tracker ends, and a tracker killed
//!   then would leave every name behind.
//! - **Signals**: the tracker runs in its own process group (a terminal's
//!   Ctrl-C or a group kill of the program does not reach it) and ignores
//!   `SIGINT`/`SIGTERM`, as Python's does: its end is the creator's end.
//!   Only `SIGKILL` of the tracker itself defeats it (names then stay).
//! - **No zombie, no storm**: a thread of the creator waits for the
//!   tracker (so one that dies early is reaped, and the next tracked
//!   operation starts a new one and re-sends every name); after the
//!   creator's end the tracker is an orphan and `init` reaps it. At most
//!   one tracker per process at a time, started only by a tracked create;
//!   a process started as a tracker refuses to start one.
//! - **Children** are processes of their own here: a worker that creates a
//!   tracked name starts its own tracker, so the name goes when that
//!   worker ends (Python's children share the main process's tracker, so
//!   there the name lives until the whole program ends). See ARCHITECTURE,
//!   "Named segments and the tracker".
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::shm::unlink_named;
use super::shm_name;

/// The variable that turns a re-executed program into a tracker.
pub(crate) const TRACKER_ENV: &str = "MULTIPROC_SHM_TRACKER";
const VERSION: &str = "v1";

/// This process's link to its tracker, and what it registered there.
struct State {
    link: Option<Link>,
    names: BTreeSet<String>,
}

struct Link {
    pipe: ChildStdin,
    /// Cleared by the thread that reaps the tracker.
    alive: Arc<AtomicBool>,
}

static STATE: Mutex<State> = Mutex::new(State {
    link: None,
    names: BTreeSet::new(),
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers `name` (checked, without its `/`) with this process's
/// tracker, starting one if there is none.
pub(crate) fn track(name: &str) -> io::Result<()> {
    let mut st = state();
    st.names.insert(name.to_owned());
    let sent = st.send(&format!("+{name}\n"));
    if sent.is_err() {
        st.names.remove(name);
    }
    sent
}

/// Forgets `name`: the tracker will not remove it. Not tracked is fine.
pub(crate) fn untrack(name: &str) {
    let mut st = state();
    if st.names.remove(name) {
        if let Some(link) = st.link.as_mut() {
            // A dead tracker will be replaced with the names that remain.
            let _ = link.pipe.write_all(format!("-{name}\n").as_bytes());
        }
    }
}

impl State {
    /// Sends `line` to a live tracker; when there is none (first use, or
    /// it died), starts one and sends every registered name instead.
    fn send(&mut self, line: &str) -> io::Result<()> {
        if let Some(link) = self.link.as_mut() {
            // SYNC: Acquire pairs with the reaper's Release store.
            if link.alive.load(Ordering::Acquire) && link.pipe.write_all(line.as_bytes()).is_ok() {
                return Ok(());
            }
        }
        self.link = None;
        let mut link = start()?;
        let all: String = self.names.iter().map(|n| format!("+{n}\n")).collect();
        link.pipe.write_all(all.as_bytes())?;
        self.link = Some(link);
        Ok(())
    }
}

fn start() -> io::Result<Link> {
    if std::env::var_os(TRACKER_ENV).is_some() {
        return Err(io::Error::other(
            "this process was started as a shared-memory tracker but runs the program \
             (its load-time constructor did not run); it starts no tracker of its own",
        ));
    }
    let exe = super::worker_exe()?;
    let mut cmd = Command::new(&exe.program);
    if let Some(arg0) = &exe.arg0 {
        cmd.arg0(arg0);
    }
    cmd.env(TRACKER_ENV, format!("{VERSION}:{}", std::process::id()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pipe = child.stdin.take().expect("stdin was piped");
    let alive = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&alive);
    std::thread::Builder::new()
        .name("multiproc-shm-tracker-reaper".into())
        .spawn(move || {
            let _ = child.wait();
            // SYNC: Release pairs with the Acquire load in `send`.
            flag.store(false, Ordering::Release);
        })?;
    Ok(Link { pipe, alive })
}

/// Runs the tracker and exits if this process was started as one;
/// otherwise returns at once.
pub(crate) fn run_if_asked() {
    let Some(spec) = std::env::var_os(TRACKER_ENV) else {
        return;
    };
    let creator = spec.to_str().and_then(|s| {
        s.strip_prefix(VERSION)?
            .strip_prefix(':')?
            .parse::<libc::pid_t>()
            .ok()
    });
    let code = match creator {
        Some(pid) => {
            tracker_main(pid);
            0
        }
        None => 2,
    };
    // SAFETY: `_exit` ends the process at once; it runs no destructors or
    // handlers of a program that never started.
    unsafe { libc::_exit(code) }
}

/// The tracker: registers and forgets names as the lines on stdin say
/// until the creator is gone, then removes the names that remain.
fn tracker_main(creator: libc::pid_t) {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: setting a standard signal's disposition to "ignore".
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut names = BTreeSet::new();
    let mut pending = Vec::new();
    loop {
        // SAFETY: no preconditions.
        let orphan = unsafe { libc::getppid() } != creator;
        // Once orphaned, only what is already in the pipe counts.
        let timeout = if orphan { 0 } else { 1000 };
        match read_some(timeout) {
            Read::Data(bytes) => take_lines(&mut pending, &bytes, &mut names),
            Read::Nothing if orphan => break,
            Read::Nothing => {}
            Read::End => break,
        }
    }
    for name in &names {
        let _ = unlink_named(name);
    }
}

enum Read {
    Data(Vec<u8>),
    Nothing,
    End,
}

/// Waits up to `timeout_ms` for stdin, then reads what is there.
fn read_some(timeout_ms: libc::c_int) -> Read {
    let mut pfd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid `pollfd`, count 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if rc < 0 {
        return if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            Read::Nothing
        } else {
            Read::End
        };
    }
    if rc == 0 {
        return Read::Nothing;
    }
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        0 => Read::End,
        n if n < 0 => {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                Read::Nothing
            } else {
                Read::End
            }
        }
        n => {
            buf.truncate(n as usize);
            Read::Data(buf)
        }
    }
}

/// Applies the complete lines in `pending + bytes`; keeps a partial one.
fn take_lines(pending: &mut Vec<u8>, bytes: &[u8], names: &mut BTreeSet<String>) {
    pending.extend_from_slice(bytes);
    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = pending.drain(..=end).collect();
        apply(&line[..line.len() - 1], names);
    }
    // Longer than any valid line: garbage, dropped.
    if pending.len() > 2 * shm_name::MAX_USER_NAME {
        pending.clear();
    }
}

fn apply(line: &[u8], names: &mut BTreeSet<String>) {
    let Some((&op, name)) = line.split_first() else {
        return;
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    // Only names a creator could have made: nothing else is ever removed.
    if shm_name::user_name(name) != Ok(name) {
        return;
    }
    match op {
        b'+' => {
            names.insert(name.to_owned());
        }
        b'-' => {
            names.remove(name);
        }
        _ => {}
    }
}

// The tracker's entry, before `main` (see the module docs).
//
// SAFETY (link sections, in the macro): each names the platform's table
// of load-time constructors, which holds `extern "C" fn()` pointers; the
// static is exactly one such pointer, to a function that takes nothing.
crate::__load_time_constructor!(MULTIPROC_SHM_TRACKER_ENTRY, {
    run_if_asked();
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_register_and_forget_only_valid_names() {
        let mut names = BTreeSet::new();
        let mut pending = Vec::new();
        take_lines(&mut pending, b"+a\n+b\n-a\n+c/d\n+\n*x\n+pa", &mut names);
        assert_eq!(names.iter().collect::<Vec<_>>(), ["b"]);
        take_lines(&mut pending, b"rt\n", &mut names);
        assert_eq!(names.iter().collect::<Vec<_>>(), ["b", "part"]);
        take_lines(&mut pending, &[b'x'; 4096], &mut names);
        assert!(pending.is_empty(), "an endless line is dropped");
    }
}
