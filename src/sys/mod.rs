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

mod exe;
pub(crate) use exe::{note_identity, worker_exe};

// Shared-memory objects: `sys::shm::{Map, Locator, is_no_space}`.
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
#[cfg(any(target_os = "linux", target_os = "android"))]
mod sigbus;
#[cfg(windows)]
mod wait_windows;
pub(crate) use futex::{futex_wait, futex_wake, futex_wake_all, pid_alive};
