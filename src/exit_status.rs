//! `ExitStatus`: how a child process ended.
//!
//! It sits beside `Error` (which carries one) rather than in `process.rs`,
//! so that the error type and the platform layer (`sys::exit_status`) can
//! name it without reaching up into the public `Process` API.

use std::fmt;

/// How a child process ended: an exit code, or (Unix) the signal that killed it.
///
/// Python folds both into `Process.exitcode` (negative for a signal); Rust
/// keeps them apart. [`ExitStatus::to_python`] gives Python's number.
///
/// ```
/// use multiproc::ExitStatus;
/// assert!(ExitStatus::Code(0).success());
/// assert_eq!(ExitStatus::Signal(9).to_python(), -9);
/// assert_eq!(ExitStatus::Code(3).code(), Some(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// The process exited with this code.
    Code(i32),
    /// The process was killed by this signal. On Windows, where there are
    /// no signals, a child ended by [`Process::terminate`] or
    /// [`Process::kill`] is reported as `Signal(15)` or `Signal(9)` (Python
    /// reports `-15` for both there).
    ///
    /// [`Process::terminate`]: crate::Process::terminate
    /// [`Process::kill`]: crate::Process::kill
    Signal(i32),
}

impl ExitStatus {
    /// `true` for exit code 0.
    ///
    /// ```
    /// assert!(!multiproc::ExitStatus::Signal(15).success());
    /// ```
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The exit code, if the process exited rather than being killed.
    ///
    /// ```
    /// assert_eq!(multiproc::ExitStatus::Signal(9).code(), None);
    /// ```
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(c),
            ExitStatus::Signal(_) => None,
        }
    }

    /// The signal that killed the process, if one did.
    ///
    /// ```
    /// assert_eq!(multiproc::ExitStatus::Signal(9).signal(), Some(9));
    /// ```
    pub fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Signal(s) => Some(s),
            ExitStatus::Code(_) => None,
        }
    }

    /// Python's `exitcode`: the code, or minus the signal number.
    ///
    /// ```
    /// assert_eq!(multiproc::ExitStatus::Code(1).to_python(), 1);
    /// ```
    pub fn to_python(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => -s,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}
