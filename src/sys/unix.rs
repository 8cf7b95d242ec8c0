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
    use std::sync::{Mutex, OnceLock};

    type Job = (Command, mpsc::SyncSender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();

    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("multiproc-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the multiproc spawner thread");
        Mutex::new(tx)
    });
    let (reply, result) = mpsc::sync_channel(1);
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Starts `cmd` (no thread-bound parent-death signal here).
#[cfg(not(target_os = "linux"))]
pub(crate) fn spawn(mut cmd: Command) -> io::Result<Child> {
    cmd.spawn()
}

/// Asks the child to stop: `SIGTERM`, like Python's `terminate()`.
pub(crate) fn terminate(child: &mut Child) -> io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).map_err(io::Error::other)?;
    // SAFETY: `kill` has no memory-safety preconditions. The caller holds the
    // un-reaped `Child`, so the pid still names our child, not a reused pid.
    if unsafe { libc::kill(pid, libc::SIGTERM) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Kills the child: `SIGKILL`.
pub(crate) fn kill(child: &mut Child) -> io::Result<()> {
    child.kill()
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

/// First thing a worker does: die with the parent.
///
/// Linux: `PR_SET_PDEATHSIG(SIGKILL)`, then a `getppid` check closes the
/// race where the parent died before the `prctl`. Elsewhere the worker's
/// EOF watch on its control channel (see `bootstrap`) does the job.
pub(crate) fn die_with_parent(parent_pid: u32) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `prctl(PR_SET_PDEATHSIG, sig)` only sets a process flag.
        let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if std::os::unix::process::parent_id() != parent_pid {
        return Err(io::Error::other("parent process already exited"));
    }
    Ok(())
}

/// Removes handshake sockets that a killed parent left behind.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
