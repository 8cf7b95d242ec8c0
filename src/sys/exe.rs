//! Which program a worker is started from.
//!
//! A worker must run the very image its parent runs: task references are
//! checked against this binary, and a different build would refuse them
//! (or, worse, be a different program). `cargo build` replaces a running
//! binary by renaming a new one over its path, so the path alone is not
//! enough.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

/// The program to execute for a worker, and the `argv[0]` to give it.
pub(crate) struct WorkerExe {
    pub(crate) program: PathBuf,
    /// Only Unix lets a program's `argv[0]` differ from its path.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) arg0: Option<OsString>,
}

/// Linux: `/proc/self/exe`, which names the running image even after its
/// file was replaced or deleted. `argv[0]` stays the program's path, so
/// `ps` and `/proc/<pid>/cmdline` read as before.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn worker_exe() -> io::Result<WorkerExe> {
    const SELF_EXE: &str = "/proc/self/exe";
    if std::fs::metadata(SELF_EXE).is_ok() {
        let arg0 = std::env::current_exe()
            .ok()
            .map(|p| strip_deleted(p.into_os_string()));
        return Ok(WorkerExe {
            program: PathBuf::from(SELF_EXE),
            arg0,
        });
    }
    // No /proc (a chroot or container without it): the path, checked.
    by_path()
}

/// The kernel marks the link of an unlinked executable with this suffix.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn strip_deleted(path: OsString) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    const SUFFIX: &[u8] = b" (deleted)";
    let bytes = path.as_os_str().as_bytes();
    match bytes.strip_suffix(SUFFIX) {
        Some(stem) => OsString::from_vec(stem.to_vec()),
        None => path,
    }
}

/// Elsewhere: the path the program runs from, refused when the file there
/// is gone or (Unix) is no longer the file this program started from.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn worker_exe() -> io::Result<WorkerExe> {
    by_path()
}

fn by_path() -> io::Result<WorkerExe> {
    let exe = std::env::current_exe()?;
    let meta = std::fs::metadata(&exe).map_err(|e| replaced(&exe, e.to_string()))?;
    if let (Some(then), Some(now)) = (*IDENTITY.get_or_init(identity_now), identity(&meta)) {
        if then != now {
            return Err(replaced(&exe, "another file is there now".into()));
        }
    }
    Ok(WorkerExe {
        program: exe,
        arg0: None,
    })
}

fn replaced(exe: &std::path::Path, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "this program's executable {} was deleted or replaced while it runs ({why}; \
             a rebuild renames a new binary over it): restart the program to start workers",
            exe.display()
        ),
    )
}

/// The executable's identity as first seen: recorded by [`note_identity`]
/// at `init()`, or at the first start.
static IDENTITY: std::sync::OnceLock<Option<(u64, u64)>> = std::sync::OnceLock::new();

/// Remembers which file this program runs from, so that a later start
/// can tell when another file took its path.
pub(crate) fn note_identity() {
    IDENTITY.get_or_init(identity_now);
}

fn identity_now() -> Option<(u64, u64)> {
    let exe = std::env::current_exe().ok()?;
    identity(&std::fs::metadata(exe).ok()?)
}

#[cfg(unix)]
fn identity(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

/// Windows keeps a running executable's file from being deleted or
/// overwritten, so its path stays the program's.
#[cfg(not(unix))]
fn identity(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    #[test]
    fn the_deleted_mark_is_stripped_from_argv0() {
        assert_eq!(
            strip_deleted("/a/b (deleted)".into()),
            OsString::from("/a/b")
        );
        assert_eq!(strip_deleted("/a/b".into()), OsString::from("/a/b"));
    }

    #[test]
    fn workers_start_from_the_running_image() {
        let exe = worker_exe().unwrap();
        assert_eq!(exe.program, PathBuf::from("/proc/self/exe"));
        assert_eq!(exe.arg0, Some(std::env::current_exe().unwrap().into()));
    }
}
