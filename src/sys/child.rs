//! One child process of ours, however it was started: by `Command` (the
//! spawn start method) or, on Linux, forked by the fork server as our own
//! child (`clone(CLONE_PARENT)`, see `sys::forkserver`), which `std`
//! cannot wrap in a `std::process::Child`.

use std::io;

use crate::exit_status::ExitStatus;

/// A child process that this process must reap.
pub(crate) struct Child(Inner);

enum Inner {
    Spawned(std::process::Child),
    /// A child the fork server forked with this process as its parent. It
    /// is ours to reap (`waitpid`), so its pid names it until we do.
    #[cfg(target_os = "linux")]
    Forked {
        pid: u32,
        status: Option<ExitStatus>,
    },
}

impl Child {
    /// A child started by `Command`.
    pub(crate) fn spawned(child: std::process::Child) -> Child {
        Child(Inner::Spawned(child))
    }

    /// A child of this process with `pid` that nobody reaped yet.
    #[cfg(target_os = "linux")]
    pub(crate) fn forked(pid: u32) -> Child {
        Child(Inner::Forked { pid, status: None })
    }

    /// The operating-system process id.
    pub(crate) fn id(&self) -> u32 {
        match &self.0 {
            Inner::Spawned(c) => c.id(),
            #[cfg(target_os = "linux")]
            Inner::Forked { pid, .. } => *pid,
        }
    }

    /// Non-blocking: how the child ended, reaping it, or `None` while it
    /// runs. Once reaped, the same status again.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match &mut self.0 {
            Inner::Spawned(c) => Ok(c.try_wait()?.map(super::exit_status)),
            #[cfg(target_os = "linux")]
            Inner::Forked { pid, status } => {
                if status.is_none() {
                    *status = super::reap_nohang(*pid)?;
                }
                Ok(*status)
            }
        }
    }

    /// Blocks until the child ended, and reaps it.
    pub(crate) fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            super::wait_for_exit(self.id(), std::time::Duration::from_millis(100));
        }
    }

    /// The `std` handle, for a child started by `Command`.
    #[cfg_attr(not(windows), allow(dead_code))]
    pub(crate) fn as_spawned(&mut self) -> Option<&mut std::process::Child> {
        match &mut self.0 {
            Inner::Spawned(c) => Some(c),
            #[cfg(target_os = "linux")]
            Inner::Forked { .. } => None,
        }
    }
}
