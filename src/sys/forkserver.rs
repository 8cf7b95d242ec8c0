//! Linux: what the fork server needs from the OS. Its request channel is a
//! socket pair inherited across the server's `exec` (no path, no name:
//! nobody else can reach it), and it forks each child with
//! `clone(CLONE_PARENT)`, so the child's parent is the program that asked,
//! not the server (docs/ARCHITECTURE.md, "Fork server").
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Lets descriptor `fd` (close-on-exec in this process) through the
/// `exec` of `cmd` only, so no other child of this process inherits it.
pub(crate) fn keep_across_exec(cmd: &mut Command, fd: RawFd) {
    let hook = move || {
        // SAFETY: `fcntl(F_SETFD)` has no memory preconditions; on a bad
        // descriptor it fails, and the spawn with it.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before `exec`; it calls
    // only `fcntl`, which is async-signal-safe, allocates nothing and
    // touches only the child's descriptor table.
    unsafe { cmd.pre_exec(hook) };
}

/// The fork server's end of its request channel, inherited as `fd`: it
/// must be a Unix stream socket whose peer (who made the pair) is
/// `parent`. Marked close-on-exec again; the caller owns it from here.
pub(crate) fn adopt_request_channel(fd: RawFd, parent: u32) -> io::Result<UnixStream> {
    if fd <= 2 {
        return Err(io::Error::other(
            "the request channel cannot be a standard stream",
        ));
    }
    if super::socket_type(fd) != Some(libc::SOCK_STREAM) {
        return Err(io::Error::other(
            "the request channel is not a stream socket",
        ));
    }
    // SAFETY: an all-zero `ucred` (three integers) is a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: as above, into `cred`, a live local of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 || u32::try_from(cred.pid).ok() != Some(parent) {
        return Err(io::Error::other(
            "the request channel's peer is not the parent",
        ));
    }
    // SAFETY: `fcntl` on a descriptor checked open just above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is an open socket this process inherited for exactly
    // this use; nothing else in it wraps or closes that descriptor.
    Ok(unsafe { UnixStream::from_raw_fd(fd) })
}

/// Forks this (single-threaded) process with `clone(CLONE_PARENT)`: the
/// new process is a child of this process's parent, which reaps it and
/// gets its exit status as for any child of its own. `Ok(None)` in the
/// new process, `Ok(Some(pid))` here.
pub(crate) fn fork_for_parent() -> io::Result<Option<u32>> {
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_long;
    // SAFETY: a raw `clone` with no new stack (0) and no TID pointers is
    // `fork`: the child continues here on a copy of this stack. The server
    // calls it from its one thread, outside any lock (no `malloc` or stdio
    // lock can be held), so the child's copy of the image is consistent.
    // glibc's cached thread id goes stale in the child, as after `vfork`;
    // glibc's own self-signals (`raise`, `abort`) ask the kernel instead.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => u32::try_from(pid)
            .map(Some)
            .map_err(|_| io::Error::other("clone returned a bad pid")),
    }
}

/// Sends all of `bytes` on `stream`; a closed peer is an error
/// (`EPIPE`), never a `SIGPIPE`.
pub(crate) fn send_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `send` reads at most `bytes.len()` bytes from the live
        // slice.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// `true` when `pid` is a child of this process that nobody reaped yet
/// (`waitid(WNOWAIT)`, which reaps nothing).
pub(crate) fn is_own_child(pid: u32) -> bool {
    let id: libc::id_t = pid;
    // SAFETY: an all-zero `siginfo_t` is a valid value of that C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `waitid` writes one `siginfo_t` into `info`, a live local;
    // WNOWAIT leaves the child as it is.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    rc == 0
}
