//! Platform layer: the only place with `cfg(unix)` / `cfg(windows)`.
//!
//! Each backend exports the same names; the rest of the crate calls
//! `sys::name` and never looks at the target.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

mod child;
#[cfg(target_os = "linux")]
pub(crate) mod forkserver;
pub(crate) use child::Child;
mod exe;
pub(crate) use exe::{note_identity, worker_exe};
pub(crate) mod fences;

// Shared-memory objects: `sys::shm::{Map, Locator, is_no_space, track,
// untrack}`; the tracker of named objects (Unix).
mod futex;
#[cfg(any(target_os = "linux", target_os = "android"))]
#[path = "shm_linux.rs"]
pub(crate) mod shm;
#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
#[path = "shm_named.rs"]
pub(crate) mod shm;
#[cfg(windows)]
#[path = "shm_windows.rs"]
pub(crate) mod shm;
mod shm_name;
pub(crate) use shm_name::user_name as shm_user_name;
#[cfg(unix)]
mod shm_tracker;
/// Turns this process into a shared-memory tracker if it was started as one
/// (then never returns); for `init()`.
#[cfg(unix)]
pub(crate) use shm_tracker::run_if_asked as run_shm_tracker_if_asked;
/// Nothing to do: Windows frees a section with its last handle.
#[cfg(windows)]
pub(crate) fn run_shm_tracker_if_asked() {}
#[cfg(any(target_os = "linux", target_os = "android"))]
mod sigbus;
#[cfg(windows)]
mod wait_windows;
pub(crate) use futex::{futex_wait, futex_wake, futex_wake_all, pid_alive};
