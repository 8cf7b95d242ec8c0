//! Shared-memory objects with names, through the `shared_memory` crate:
//! macOS and other non-Linux Unix (POSIX `shm_open`). Windows has its own
//! backend (`shm_windows.rs`, paging-file sections without files).
//!
//! The creator owns the name and removes it when it drops the segment (or
//! on [`Map::unlink`]). **Limitation:** a creator killed by SIGKILL runs no
//! `Drop`, so its name stays until reboot (macOS). Linux has no such gap
//! (see `shm_linux.rs`).
//!
//! Named objects a caller chooses (`SharedMemory::builder().name(..)`) are
//! POSIX shm names `/<name>` too, created `O_EXCL` (0600) and left to the
//! caller or the tracker (`shm_tracker.rs`) to remove; an opener maps the
//! object's size as `fstat` reports it (page-rounded on macOS, as Python
//! sees it there).
//!
//! Known defects of `shared_memory` handled here: `Shmem` is not `Send`
//! (wrapped below); on macOS the size an opener sees is rounded up to whole
//! pages (the caller passes the real size, and only a mapping *smaller*
//! than it is refused); the mode is 0600 minus the umask (never broader);
//! the space is not reserved up front on macOS (POSIX shm has no
//! `fallocate` there).
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use shared_memory::{Shmem, ShmemConf, ShmemError};

use super::shm_name;

/// The object's name, `/mp` + 26 base32 digits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Locator {
    name: String,
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name.trim_start_matches('/'))
    }
}

impl Locator {
    /// Parses what `Display` writes; `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<Locator> {
        let name = format!("/{s}");
        shm_name::is_valid_name(&name).then_some(Locator { name })
    }
}

struct SendShmem(Shmem);

// SAFETY: `Shmem` is `!Send` only because it holds a raw pointer; none of it is tied to the creating thread: mapping,
// unmapping and closing are valid from any thread.
unsafe impl Send for SendShmem {}

/// One mapping of a named shared-memory object.
pub(crate) struct Map {
    shmem: Mutex<SendShmem>,
    ptr: NonNull<u8>,
    len: usize,
    loc: Locator,
    unlinked: AtomicBool,
}

// SAFETY: the `Shmem` is behind a `Mutex` (and `Send`, above); the pointer
// is to a shared mapping that lives as long as the `Shmem`, which callers
// use only atomically or under their own `unsafe` contracts.
unsafe impl Send for Map {}
// SAFETY: see `Send`; `&Map` hands out only the pointer, sizes and name.
unsafe impl Sync for Map {}

impl Map {
    /// Creates a zero-filled segment of `len` bytes (`len > 0`).
    pub(crate) fn create(len: usize) -> io::Result<Map> {
        for _ in 0..8 {
            let name = shm_name::random_name()?;
            match ShmemConf::new().size(len).os_id(&name).create() {
                Ok(shmem) => return Ok(Map::new(shmem, len, name)),
                Err(ShmemError::MappingIdExists) => continue,
                Err(e) => return Err(to_io(e)),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free shared-memory name",
        ))
    }

    /// Creates the named object `/<name>` (checked by
    /// `shm_name::user_name`), zero-filled, `len > 0` bytes.
    /// `AlreadyExists` when the name is taken. The name stays until
    /// [`Map::remove_name`] or [`unlink_named`] removes it.
    pub(crate) fn create_named(name: &str, len: usize) -> io::Result<Map> {
        let os_id = format!("/{name}");
        match ShmemConf::new().size(len).os_id(&os_id).create() {
            Ok(mut shmem) => {
                shmem.set_owner(false);
                Ok(Map::new(shmem, len, os_id))
            }
            Err(ShmemError::MappingIdExists) => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the shared-memory name exists",
            )),
            Err(e) => Err(to_io(e)),
        }
    }

    /// Maps the named object `/<name>`, whatever made it, all of its size.
    pub(crate) fn open_named(name: &str) -> io::Result<Map> {
        let mut shmem = ShmemConf::new()
            .os_id(format!("/{name}"))
            .open()
            .map_err(to_io)?;
        shmem.set_owner(false);
        let len = shmem.len();
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the object is empty (its creator may not have sized it yet)",
            ));
        }
        Ok(Map::new(shmem, len, format!("/{name}")))
    }

    /// Removes `name`. (macOS cannot tell whether it still names this
    /// mapping's object; gone already is fine.)
    pub(crate) fn remove_name(&self, name: &str) -> io::Result<()> {
        unlink_named(name)
    }

    /// [`open`](Self::open); the mapping is not populated ahead here
    /// either way (only Linux's is).
    pub(crate) fn open_lazy(loc: &Locator, len: usize) -> io::Result<Map> {
        Map::open(loc, len)
    }

    /// Nothing to do here: only Linux's mappings are populated ahead.
    pub(crate) fn prefault(&self, _at: usize, _len: usize) {}

    /// Maps the object `loc` names, which must be at least `len` bytes.
    pub(crate) fn open(loc: &Locator, len: usize) -> io::Result<Map> {
        if !shm_name::is_valid_name(&loc.name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a multiproc segment name",
            ));
        }
        let mut shmem = ShmemConf::new().os_id(&loc.name).open().map_err(to_io)?;
        shmem.set_owner(false);
        if shmem.len() < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not the shared-memory segment the handle names (size)",
            ));
        }
        Ok(Map::new(shmem, len, loc.name.clone()))
    }

    fn new(shmem: Shmem, len: usize, name: String) -> Map {
        let ptr = NonNull::new(shmem.as_ptr()).expect("shared_memory mapped at null");
        Map {
            shmem: Mutex::new(SendShmem(shmem)),
            ptr,
            len,
            loc: Locator { name },
            unlinked: AtomicBool::new(false),
        }
    }

    /// What a peer needs to map the segment.
    pub(crate) fn locator(&self) -> Locator {
        self.loc.clone()
    }

    /// Start of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Always `false`: macOS sizes a POSIX shared-memory object once and
    /// refuses any later `ftruncate` (`EINVAL`), so no peer can shrink it.
    /// (Other BSDs are not a supported target; see ARCHITECTURE.)
    pub(crate) fn lost(&self) -> bool {
        false
    }

    /// Whether the segment is what it was made as: always, here (it
    /// cannot be shrunk under a mapping).
    pub(crate) fn intact(&self) -> bool {
        true
    }

    /// The length asked for (the mapping may be a little longer).
    pub(crate) fn map_len(&self) -> usize {
        self.len
    }

    /// Removes the name: no new opens. The mapping stays valid.
    pub(crate) fn unlink(&self) {
        if self.unlinked.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut shmem = self.shmem.lock().unwrap_or_else(|p| p.into_inner());
        remove_name(&mut shmem.0, &self.loc.name);
    }
}

fn remove_name(shmem: &mut Shmem, name: &str) {
    // Our own unlink replaces the one `Shmem` would do on drop.
    shmem.set_owner(false);
    if let Ok(name) = std::ffi::CString::new(name) {
        // SAFETY: a valid C string; an error (already gone) is fine.
        unsafe { libc::shm_unlink(name.as_ptr()) };
    }
}

/// Removes the named object `/<name>`. Gone already is fine.
pub(crate) fn unlink_named(name: &str) -> io::Result<()> {
    let name = std::ffi::CString::new(format!("/{name}")).map_err(io::Error::other)?;
    // SAFETY: a valid C string.
    if unsafe { libc::shm_unlink(name.as_ptr()) } == 0 {
        return Ok(());
    }
    match io::Error::last_os_error() {
        e if e.kind() == io::ErrorKind::NotFound => Ok(()),
        e => Err(e),
    }
}

/// Tracks the names of named objects this process creates (`shm_tracker.rs`).
pub(crate) use super::shm_tracker::{track, untrack};

/// `true` when `e` means the shared-memory space is full.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

fn to_io(e: ShmemError) -> io::Error {
    match e {
        ShmemError::MapCreateFailed(c)
        | ShmemError::MapOpenFailed(c)
        | ShmemError::UnknownOsError(c) => io::Error::from_raw_os_error(c as i32),
        other => io::Error::other(other.to_string()),
    }
}
