//! Linux, macOS and other Unix systems.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command};

use crate::exit_status::ExitStatus;

/// `true` when `addr` lies in the same loaded image (executable or shared
/// object) as `anchor`, which is code of this crate.
///
/// `dladdr` answers from the dynamic loader's own table of mapped segments,
/// so an address in a gap, on the heap or in another library is refused.
pub(crate) fn same_image(anchor: usize, addr: usize) -> bool {
    fn base_of(addr: usize) -> Option<usize> {
        // SAFETY: `Dl_info` is plain old data (pointers and integers), for
        // which all-zero is a valid value.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: `dladdr` only reads the loader's tables for the address
        // (it never dereferences it) and writes `info`, a valid local.
        let found = unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) };
        (found != 0 && !info.dli_fbase.is_null()).then_some(info.dli_fbase as usize)
    }
    match (base_of(anchor), base_of(addr)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Starts `cmd`.
///
/// On Linux the child asks for `PR_SET_PDEATHSIG`, which fires when the
/// *thread* that forked it exits, not the process. So every child is forked
/// by one spawner thread that lives as long as the program; a `Process`
/// spawned from a short-lived thread then survives that thread.
#[cfg(target_os = "linux")]
pub(crate) fn spawn(cmd: Command) -> io::Result<Child> {
    use std::sync::mpsc;
    use std::sync::Mutex;

    // `None` until a spawner thread could be started: a refusal (a full
    // pids cgroup, `ulimit -u`) is this call's error, and a later call
    // tries again.
    static SPAWNER: Mutex<Option<mpsc::Sender<SpawnJob>>> = Mutex::new(None);

    let (reply, result) = mpsc::sync_channel(1);
    {
        let mut spawner = SPAWNER.lock().unwrap_or_else(|p| p.into_inner());
        let tx = spawner_in(&mut spawner, std::thread::Builder::new())?;
        if tx.send((cmd, reply)).is_err() {
            *spawner = None;
            return Err(io::Error::other("the spawner thread is gone"));
        }
    }
    result
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// A command for the spawner thread, and where its result goes.
#[cfg(target_os = "linux")]
type SpawnJob = (Command, std::sync::mpsc::SyncSender<io::Result<Child>>);

/// The spawner thread's queue in `slot`, starting the thread with
/// `builder` if there is none yet.
#[cfg(target_os = "linux")]
fn spawner_in(
    slot: &mut Option<std::sync::mpsc::Sender<SpawnJob>>,
    builder: std::thread::Builder,
) -> io::Result<&std::sync::mpsc::Sender<SpawnJob>> {
    if slot.is_none() {
        let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
        builder
            .name("multiproc-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "the system refused a thread to start processes from ({e}): \
                         too many threads or processes (a pids cgroup, ulimit -u)"
                    ),
                )
            })?;
        *slot = Some(tx);
    }
    slot.as_ref()
        .ok_or_else(|| io::Error::other("the spawner thread is gone"))
}

/// Starts `cmd` (no thread-bound parent-death signal here).
#[cfg(not(target_os = "linux"))]
pub(crate) fn spawn(mut cmd: Command) -> io::Result<Child> {
    cmd.spawn()
}

/// Asks the child to stop: `SIGTERM`, like Python's `terminate()`.
pub(crate) fn terminate(child: &mut super::Child) -> io::Result<()> {
    send_signal(child, libc::SIGTERM)
}

/// Interrupts the child: `SIGINT`, like Python's `interrupt()` (3.14).
pub(crate) fn interrupt(child: &mut super::Child) -> io::Result<()> {
    send_signal(child, libc::SIGINT)
}

fn send_signal(child: &mut super::Child, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: `kill` has no memory-safety preconditions. The caller holds the
    // un-reaped `Child`, so the pid still names our child, not a reused pid.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Kills the child: `SIGKILL`.
pub(crate) fn kill(child: &mut super::Child) -> io::Result<()> {
    match child.as_spawned() {
        Some(c) => c.kill(),
        None => send_signal(child, libc::SIGKILL),
    }
}

/// Reaps our child `pid` if it has ended (`waitpid(WNOHANG)`).
#[cfg(target_os = "linux")]
pub(crate) fn reap_nohang(pid: u32) -> io::Result<Option<ExitStatus>> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `waitpid` writes one int into `status`, a live local.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == 0 {
            return Ok(None);
        }
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(Some(if libc::WIFEXITED(status) {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(-1)
        }));
    }
}

/// Our view of how a process ended.
pub(crate) fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signal(sig),
        // Stopped/continued are not terminal states; `wait` never reports them.
        (None, None) => ExitStatus::Code(-1),
    }
}

/// Closes the Unix `SOCK_SEQPACKET` sockets this worker inherited: they
/// can only be ipc-channel's, and none is meant for it. ipc-channel
/// `accept`s a handshake connection without `SOCK_CLOEXEC`, so a sibling
/// started while the parent held one got a copy of it (CPython's
/// `test_child_fd_inflation`, ported in `tests/cpython`, saw one child in
/// five with an extra descriptor). Besides the count, the copy kept the
/// other child's link open after that child's end, which delays the EOF a
/// parent watch waits for. Marking every descriptor close-on-exec in the
/// parent's `fork` instead would cost `posix_spawn`'s speed (a `pre_exec`
/// hook forces a full `fork`). Runs before the worker opens any socket of
/// its own; other descriptors (the standard three, a jobserver's pipes)
/// are left alone.
pub(crate) fn close_stray_ipc_sockets() {
    // Linux lists the open descriptors; elsewhere try the low ones.
    #[cfg(target_os = "linux")]
    let fds: Vec<libc::c_int> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    #[cfg(not(target_os = "linux"))]
    let fds: Vec<libc::c_int> = (3..1024).collect();
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        if is_unix_seqpacket(fd) {
            // SAFETY: `close` on a descriptor number has no memory-safety
            // preconditions; this one is an inherited socket that nothing
            // in this process has wrapped yet (the worker has not opened a
            // socket of its own), so no owner closes it a second time.
            unsafe { libc::close(fd) };
        }
    }
}

/// The type of socket `fd` is (`SOCK_STREAM`, `SOCK_SEQPACKET`, …), or
/// `None` if it is not an open socket.
pub(crate) fn socket_type(fd: libc::c_int) -> Option<libc::c_int> {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `getsockopt` writes at most `len` bytes into `kind`, a live
    // local of that size, and `len`; on a bad or non-socket descriptor it
    // fails (EBADF, ENOTSOCK).
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(kind)
}

/// Whether `fd` is an open `AF_UNIX` `SOCK_SEQPACKET` socket.
fn is_unix_seqpacket(fd: libc::c_int) -> bool {
    if socket_type(fd) != Some(libc::SOCK_SEQPACKET) {
        return false;
    }
    // SAFETY: an all-zero `sockaddr_storage` is a valid value of that plain
    // C struct.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut alen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `getsockname` writes at most `alen` bytes into `addr`, a live
    // local of that size, and `alen`.
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut alen,
        )
    };
    rc == 0 && libc::c_int::from(addr.ss_family) == libc::AF_UNIX
}

/// First thing a worker does: die with the parent.
///
/// Linux: `PR_SET_PDEATHSIG(SIGKILL)`, then a `getppid` check closes the
/// race where the parent died before the `prctl`. Elsewhere the worker's
/// EOF watch on its control channel (see `bootstrap`) does the job.
///
/// `Ok(false)` when the parent is already gone.
pub(crate) fn die_with_parent(parent_pid: u32) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `prctl(PR_SET_PDEATHSIG, sig)` only sets a process flag.
        let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(std::os::unix::process::parent_id() == parent_pid)
}

/// Readies this process to serve a handshake: enough free descriptors,
/// and (ipc-channel's Unix-socket back-end) a directory that can hold its
/// socket. Cheap after the first call.
///
/// ipc-channel's one-shot server takes its socket's directory from the
/// `tempfile` crate's default, `$TMPDIR`, and cannot be given another. It
/// panics when that directory is missing or not a directory, cuts a path
/// over the 108-byte socket limit (then binds the wrong name), and under
/// a full descriptor table binds an invalid descriptor and leaves its
/// directory behind. So before every server: check that descriptors are
/// free (the error then names the real cause), and if `$TMPDIR` cannot
/// hold a socket, point `tempfile`'s default at the first directory that
/// can (`/tmp`, `/dev/shm`, `/var/tmp`, `$XDG_RUNTIME_DIR`).
pub(crate) fn prepare_handshake() -> io::Result<()> {
    ensure_free_fds(HANDSHAKE_FDS)?;
    #[cfg(not(target_vendor = "apple"))]
    {
        let dir = handshake_dir()?;
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| sweep_stale_handshake_dirs(&dir, STALE_SOCKET_AGE));
    }
    Ok(())
}

/// Before a fork-server start: fails with the real cause (`EMFILE`) when
/// the descriptors it needs at once are not free (the four ends of the
/// child's outcome and control channels, ipc-channel's probe channel on
/// the first send, and the channel a request larger than one fragment
/// goes on); it needs no directory.
pub(crate) fn prepare_fork() -> io::Result<()> {
    ensure_free_fds(FORK_FDS)
}

/// See [`prepare_fork`].
const FORK_FDS: usize = 8;

/// Descriptors one start needs at once: the server's socket and the
/// directory walk that removes it, the accepted connection, the two
/// channels of the child's `Config`, `/dev/null` for its stdin, and
/// ipc-channel's own probe channel on the first send.
const HANDSHAKE_FDS: usize = 12;

/// Handshake sockets older than this whose server is gone are swept.
#[cfg(not(target_vendor = "apple"))]
const STALE_SOCKET_AGE: std::time::Duration = std::time::Duration::from_secs(2);

/// Fails with the real cause (`EMFILE`: too many open files) when fewer
/// than `n` descriptors are free, before anything is created that a
/// failure half-way would leave behind.
fn ensure_free_fds(n: usize) -> io::Result<()> {
    let too_few = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!(
                "{e}: starting a worker needs {n} free file descriptors; \
                 close some, or raise the limit (ulimit -n)"
            ),
        )
    };
    let full = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    let first = match std::fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) if full(&e) => return Err(too_few(e)),
        // No /dev/null here: nothing to learn from this probe.
        Err(_) => return Ok(()),
    };
    // The rest are duplicates (`F_DUPFD_CLOEXEC`): the same limit, without
    // a path lookup each.
    let mut held = Vec::with_capacity(n);
    for _ in 1..n {
        match first.try_clone() {
            Ok(f) => held.push(f),
            Err(e) if full(&e) => return Err(too_few(e)),
            Err(_) => break,
        }
    }
    Ok(())
}

/// The directory ipc-channel's one-shot servers will bind in (see
/// [`prepare_handshake`]): `tempfile`'s default if it can hold a socket,
/// else the first fallback that can, which then becomes the default.
#[cfg(not(target_vendor = "apple"))]
fn handshake_dir() -> io::Result<std::path::PathBuf> {
    use std::path::PathBuf;
    use std::sync::Mutex;
    // The last directory that passed the probe: checked once, not per start.
    static VERIFIED: Mutex<Option<PathBuf>> = Mutex::new(None);
    let current = tempfile::env::temp_dir();
    let mut verified = VERIFIED.lock().unwrap_or_else(|p| p.into_inner());
    if verified.as_ref() == Some(&current) {
        return Ok(current);
    }
    if can_hold_socket(&current) {
        *verified = Some(current.clone());
        return Ok(current);
    }
    let mut candidates: Vec<PathBuf> = ["/tmp", "/dev/shm", "/var/tmp"]
        .iter()
        .map(PathBuf::from)
        .collect();
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
        candidates.push(PathBuf::from(run));
    }
    let why = unusable_because(&current);
    for dir in candidates {
        if can_hold_socket(&dir) {
            return match tempfile::env::override_temp_dir(&dir) {
                Ok(()) => {
                    *verified = Some(dir.clone());
                    Ok(dir)
                }
                // Another thread or library chose first; use its choice if
                // it can hold a socket.
                Err(chosen) if can_hold_socket(&chosen) => Ok(chosen),
                Err(chosen) => Err(io::Error::other(format!(
                    "the temporary directory {} cannot hold a handshake socket ({})",
                    chosen.display(),
                    unusable_because(&chosen)
                ))),
            };
        }
    }
    Err(io::Error::other(format!(
        "no directory can hold a handshake socket: TMPDIR={} ({why}), and /tmp, /dev/shm, \
         /var/tmp and $XDG_RUNTIME_DIR are not usable either; set TMPDIR to a writable \
         directory with a short path",
        current.display()
    )))
}

/// Longest directory path whose `<dir>/.tmpXXXXXX/socket` still fits a
/// Unix socket address (108 bytes with its NUL on Linux, 104 elsewhere).
#[cfg(not(target_vendor = "apple"))]
const SOCKET_DIR_MAX: usize = {
    let sun_path = if cfg!(any(target_os = "linux", target_os = "android")) {
        108
    } else {
        104
    };
    sun_path - 1 - "/.tmpXXXXXX/socket".len()
};

#[cfg(not(target_vendor = "apple"))]
fn can_hold_socket(dir: &std::path::Path) -> bool {
    unusable_because(dir).is_empty()
}

/// Why `dir` cannot hold a handshake socket; empty when it can.
#[cfg(not(target_vendor = "apple"))]
fn unusable_because(dir: &std::path::Path) -> &'static str {
    use std::os::unix::ffi::OsStrExt;
    let bytes = dir.as_os_str().as_bytes();
    if bytes.len() > SOCKET_DIR_MAX {
        return "its path is too long for a socket address";
    }
    if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        return "not a directory";
    }
    let Ok(c) = std::ffi::CString::new(bytes) else {
        return "its path holds a NUL byte";
    };
    // SAFETY: `c` is a valid NUL-terminated path; `access` only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return "not writable";
    }
    // `access` answers yes to root on any directory of a writable file
    // system, /proc included: try what ipc-channel will do.
    let probe = dir.join(format!(
        ".multiproc-probe-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    if std::fs::create_dir(&probe).is_err() {
        return "cannot create a directory in it";
    }
    let _ = std::fs::remove_dir(&probe);
    ""
}

/// Removes handshake sockets that a killed parent left behind.
#[cfg(not(target_vendor = "apple"))]
///
/// `ipc-channel`'s one-shot server binds a socket in a fresh
/// `$TMPDIR/.tmp??????/` directory and removes it on accept. If the parent
/// is SIGKILLed during a handshake (a millisecond window) the directory
/// stays. The first spawn of every program sweeps them: a directory is
/// removed only if it is ours, holds nothing but a socket named `socket`,
/// is older than `min_age` and nobody listens on it any more
/// (`ECONNREFUSED`).
pub(crate) fn sweep_stale_handshake_dirs(tmp: &std::path::Path, min_age: std::time::Duration) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    // SAFETY: `geteuid` has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(".tmp") && name.len() == 10) {
            continue;
        }
        let dir = entry.path();
        let socket = dir.join("socket");
        let Ok(meta) = std::fs::symlink_metadata(&socket) else {
            continue;
        };
        let old_enough = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age >= min_age);
        if !meta.file_type().is_socket() || meta.uid() != uid || !old_enough {
            continue;
        }
        let only_the_socket = std::fs::read_dir(&dir)
            .map(|d| d.count() == 1)
            .unwrap_or(false);
        if !only_the_socket {
            continue;
        }
        let refused = matches!(
            std::os::unix::net::UnixStream::connect(&socket),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
        );
        if refused {
            let _ = std::fs::remove_file(&socket);
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// Makes the directory of a one-shot server's socket owner-only (0700).
/// `ipc-channel` creates it with the umask's mode (0755 under the usual
/// 022; 0777 under 0, which would let any user connect). The window
/// between its `bind` and this `chmod` is guarded by the 256-bit token.
pub(crate) fn restrict_handshake_server(name: &str) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(dir) = std::path::Path::new(name).parent() else {
        return Ok(());
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Any non-empty name without a NUL byte is a socket path `ipc-channel`
/// can try to connect to (its `connect` unwraps a `CString`).
pub(crate) fn handshake_server_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.contains('\0')
}

/// Wakes a one-shot handshake server blocked in `accept()` without ever
/// blocking: a non-blocking connect to its socket, then close. Its
/// `accept()` returns and the first `recv` sees the end of the stream.
/// `false` when it could not connect at once: nobody listens any more, or
/// the backlog is full (its thread is then held by another connection and
/// ends when that one closes).
#[cfg(target_os = "linux")]
pub(crate) fn wake_handshake_server(name: &str) -> bool {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    // SAFETY: `sockaddr_un` is plain data, for which all zeroes is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let path = name.as_bytes();
    // Leave room for the terminating NUL, as the kernel reads a C string.
    if path.is_empty() || path.len() >= addr.sun_path.len() || path.contains(&0) {
        return false;
    }
    for (dst, &src) in addr.sun_path.iter_mut().zip(path) {
        *dst = src as libc::c_char;
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // SAFETY: `socket` has no memory preconditions; it returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` was just returned by `socket` and is owned here only.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `addr` is an initialised `sockaddr_un` that outlives the call
    // and its exact size is passed; the fd is ours.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Linux kills a worker with its parent (`PR_SET_PDEATHSIG`), so the worker
/// needs no thread watching its control channel for EOF.
pub(crate) const PARENT_DEATH_SIGNAL: bool = cfg!(target_os = "linux");

/// `ipc-channel`'s `try_recv_timeout` can be called in short slices: on
/// Unix it is a `poll` and then a read, and loses nothing on a timeout.
pub(crate) const IPC_TIMED_RECV_IN_SLICES: bool = true;

/// Blocks until process `pid` (our un-reaped child) exits or `timeout`
/// passes; the caller then reaps it with `try_wait`. Spurious early returns
/// are fine.
///
/// Linux: `poll` on a pidfd, which wakes the moment the child exits.
/// Elsewhere (or on kernels without `pidfd_open`): a short sleep.
pub(crate) fn wait_for_exit(pid: u32, timeout: std::time::Duration) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `pidfd_open(pid, 0)` has no memory preconditions; it
        // returns a new fd or -1.
        let fd =
            unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_long, 0 as libc::c_long) };
        if fd >= 0 {
            let fd = fd as libc::c_int;
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
            // SAFETY: `pfd` is one valid pollfd that outlives the call.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            // SAFETY: `fd` is the pidfd opened above, owned here, closed once.
            unsafe { libc::close(fd) };
            return;
        }
    }
    let _ = pid;
    std::thread::sleep(timeout.min(std::time::Duration::from_millis(1)));
}

/// `true` while process `pid` exists and has not exited (a zombie counts as
/// dead: it will never release anything).
pub(crate) fn process_alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read(format!("/proc/{pid}/stat")) {
            Err(_) => false,
            Ok(stat) => {
                // The state letter follows the last ')' (the command name
                // may itself contain parentheses).
                let state = stat
                    .iter()
                    .rposition(|&b| b == b')')
                    .and_then(|i| stat.get(i + 2).copied());
                !matches!(state, Some(b'Z' | b'X' | b'x') | None)
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// Asks for transparent huge pages over the whole pages inside
/// `addr..addr + len` (Linux, where THP is in `madvise` mode, the common
/// default). A large buffer the caller is about to fill then takes one
/// fault per 2 MiB instead of one per 4 KiB: an 8 MB output `Vec` fills in
/// ≈ 0.8 ms instead of ≈ 2.9 ms on fresh pages here. A hint only: nothing
/// happens elsewhere or where the kernel declines. The advice stays with
/// the address range after the buffer is freed, so what the allocator
/// later puts there may get huge pages too (for a range of ≥ 4 MiB, at
/// most a few MiB more resident memory).
pub(crate) fn advise_huge_pages(addr: *mut u8, len: usize) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096);
        let start = (addr as usize).next_multiple_of(page);
        let end = (addr as usize).saturating_add(len) & !(page - 1);
        if end > start {
            // SAFETY: MADV_HUGEPAGE changes only the kernel's paging policy
            // for the range: no contents, no mapping, no protection. A
            // range that is not (wholly) mapped fails with ENOMEM, which
            // changes nothing and is ignored.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (addr, len);
}

// What they test exists where ipc-channel's Unix-socket back-end runs.
#[cfg(all(test, not(target_vendor = "apple")))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_refused_spawner_thread_is_an_error_and_a_later_call_retries() {
        let mut slot = None;
        // A stack no system can give: the thread is refused.
        let refused = std::thread::Builder::new().stack_size(1 << 62);
        let err = spawner_in(&mut slot, refused).unwrap_err();
        assert!(err.to_string().contains("refused a thread"), "{err}");
        assert!(slot.is_none());
        let tx = spawner_in(&mut slot, std::thread::Builder::new()).unwrap();
        let (reply, result) = std::sync::mpsc::sync_channel(1);
        tx.send((Command::new("true"), reply)).unwrap();
        let mut child = result.recv().unwrap().unwrap();
        assert!(child.wait().unwrap().success());
    }

    #[test]
    #[cfg(not(target_vendor = "apple"))]
    fn unusable_temp_dirs_are_named_and_usable_ones_pass() {
        let base = std::env::temp_dir().join(format!("multiproc-unit-tmp-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let file = base.join("file");
        std::fs::write(&file, b"").unwrap();
        let mut long = base.clone();
        while long.as_os_str().len() <= SOCKET_DIR_MAX {
            long.push("d");
        }
        assert_eq!(unusable_because(&base), "");
        assert_eq!(unusable_because(&base.join("missing")), "not a directory");
        assert_eq!(unusable_because(&file), "not a directory");
        assert_eq!(
            unusable_because(std::path::Path::new("/proc")),
            "cannot create a directory in it"
        );
        assert_eq!(
            unusable_because(&long),
            "its path is too long for a socket address"
        );
        assert!(
            std::fs::read_dir(&base).unwrap().count() == 1,
            "the probe left something"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn sweep_removes_dead_handshake_dirs_only() {
        let root = std::env::temp_dir().join(format!("multiproc-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).unwrap();
        let dead = root.join(".tmpDEAD01");
        let live = root.join(".tmpLIVE01");
        let other = root.join(".tmpOTHER1");
        for d in [&dead, &live, &other] {
            std::fs::create_dir(d).unwrap();
        }
        // A bound-then-closed listener leaves a socket file nobody serves.
        drop(std::os::unix::net::UnixListener::bind(dead.join("socket")).unwrap());
        let _listening = std::os::unix::net::UnixListener::bind(live.join("socket")).unwrap();
        std::fs::write(other.join("socket"), b"not a socket").unwrap();

        sweep_stale_handshake_dirs(&root, Duration::from_secs(3600));
        assert!(dead.exists(), "too young to be swept");

        sweep_stale_handshake_dirs(&root, Duration::ZERO);
        assert!(!dead.exists());
        assert!(live.join("socket").exists());
        assert!(other.join("socket").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
