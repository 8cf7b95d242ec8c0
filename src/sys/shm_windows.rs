//! Shared-memory objects on Windows: named sections backed by the paging
//! file (`CreateFileMappingW(INVALID_HANDLE_VALUE, …)`), not the
//! `shared_memory` crate.
//!
//! Why not `shared_memory` here: it backs each mapping with a file in
//! `%TEMP%\shared_memory-rs\`, which a creator killed by `TerminateProcess`
//! leaves behind. A paging-file section has no file at all; Windows frees
//! it (and its name) when the last handle or view in any process closes. So
//! like Linux's nameless segments, the memory lives exactly as long as some
//! process holds it, and a kill of any process leaves nothing.
//!
//! - Name: `Local\` + the crate's `mp…` name (128 random bits, see
//!   `shm_name.rs`), in this logon session's namespace; a name that exists
//!   already is never opened by `create` (`ERROR_ALREADY_EXISTS` → a new
//!   name).
//! - Security: a DACL granting access to this user only (`owner_only`).
//! - Space: the whole size is committed at creation (`SEC_COMMIT`, the
//!   default), so a full paging file is `ERROR_COMMITMENT_LIMIT` there,
//!   never a fault on a later write.
//! - Size: a view's size is rounded up to pages; the caller's real length
//!   travels in the handle and the header, and only a section *smaller*
//!   than that is refused.
//! - `unlink` closes this process's section handle; the name stays until
//!   every view and handle is gone (Windows has no early unlink).
//! - Named sections a caller chooses (`SharedMemory::builder().name(..)`):
//!   `Local\<name>`, where Python's `SharedMemory(name=…)` puts them too
//!   (an unprefixed name lands in the session's `Local\` namespace), with
//!   the same DACL; `ERROR_ALREADY_EXISTS` is `AlreadyExists`. Windows
//!   frees them with the last handle like the others, so there is nothing
//!   to track: `track`/`untrack` do nothing, and removing a name does
//!   nothing either (Python's `unlink()` does nothing on Windows).
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use windows_sys::Win32::Foundation::{
    CloseHandle, GetLastError, ERROR_ALREADY_EXISTS, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::System::Memory::{
    CreateFileMappingW, MapViewOfFile, OpenFileMappingW, UnmapViewOfFile, VirtualQuery,
    FILE_MAP_ALL_ACCESS, MEMORY_BASIC_INFORMATION, MEMORY_MAPPED_VIEW_ADDRESS, PAGE_READWRITE,
};

use super::shm_name;
use super::windows::{owner_only, wide};

/// The object's name, `/mp` + 26 base32 digits (as on the other named
/// backends; the OS name is `Local\mp…`).
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

    /// The section's name in the Windows object namespace.
    pub(crate) fn os_name(&self) -> String {
        format!("Local\\{}", self.name.trim_start_matches('/'))
    }
}

/// One view of a named paging-file section.
pub(crate) struct Map {
    /// The section handle (0 once `unlink`ed).
    section: AtomicUsize,
    ptr: NonNull<u8>,
    len: usize,
    loc: Locator,
}

// SAFETY: the handle and view are process-wide, not tied to a thread; the
// pointer is to a shared mapping that lives as long as `Map`, which callers
// use only atomically or under their own `unsafe` contracts.
unsafe impl Send for Map {}
// SAFETY: see `Send`; `&Map` hands out only the pointer, sizes and name,
// and `unlink` swaps the handle atomically.
unsafe impl Sync for Map {}

impl Map {
    /// Creates a zero-filled segment of `len` bytes (`len > 0`).
    pub(crate) fn create(len: usize) -> io::Result<Map> {
        for _ in 0..8 {
            let loc = Locator {
                name: shm_name::random_name()?,
            };
            match Map::create_section(len, loc) {
                // Someone else's object (128 random bits: not by chance).
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                other => return other,
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free shared-memory name",
        ))
    }

    /// Creates the named section `Local\<name>` (`name` checked by
    /// `shm_name::user_name`), zero-filled, `len > 0` bytes.
    /// `AlreadyExists` when the name is taken.
    pub(crate) fn create_named(name: &str, len: usize) -> io::Result<Map> {
        Map::create_section(
            len,
            Locator {
                name: format!("/{name}"),
            },
        )
    }

    /// Maps the named section `Local\<name>`, whatever made it, all of it
    /// (its size rounded up to pages, as Python sees it too).
    pub(crate) fn open_named(name: &str) -> io::Result<Map> {
        let loc = Locator {
            name: format!("/{name}"),
        };
        let os_name = wide(&loc.os_name());
        // SAFETY: `os_name` is NUL-terminated and outlives the call.
        let h = unsafe { OpenFileMappingW(FILE_MAP_ALL_ACCESS, 0, os_name.as_ptr()) };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        Map::view(h, None, loc)
    }

    /// Does nothing: Windows removes a section's name with its last handle
    /// (Python's `unlink()` does nothing there either).
    pub(crate) fn remove_name(&self, _name: &str) -> io::Result<()> {
        Ok(())
    }

    /// A new paging-file section named after `loc`; `AlreadyExists` (and
    /// nothing opened) when the name is taken.
    fn create_section(len: usize, loc: Locator) -> io::Result<Map> {
        let size = u64::try_from(len).map_err(|_| no_space())?;
        let sa = owner_only().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "cannot build an owner-only security descriptor",
            )
        })?;
        let os_name = wide(&loc.os_name());
        // SAFETY: `sa` and `os_name` (NUL-terminated) outlive the call;
        // INVALID_HANDLE_VALUE asks for a paging-file section.
        let h = unsafe {
            CreateFileMappingW(
                INVALID_HANDLE_VALUE,
                &sa,
                PAGE_READWRITE,
                (size >> 32) as u32,
                size as u32,
                os_name.as_ptr(),
            )
        };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: no preconditions; read right after the call it reports on.
        if unsafe { GetLastError() } == ERROR_ALREADY_EXISTS {
            // SAFETY: `h` is ours and closed once.
            unsafe { CloseHandle(h) };
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the shared-memory name exists",
            ));
        }
        Map::view(h, Some(len), loc)
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
        let os_name = wide(&loc.os_name());
        // SAFETY: `os_name` is NUL-terminated and outlives the call.
        let h = unsafe { OpenFileMappingW(FILE_MAP_ALL_ACCESS, 0, os_name.as_ptr()) };
        if h.is_null() {
            return Err(io::Error::last_os_error());
        }
        Map::view(h, Some(len), loc.clone())
    }

    /// Maps all of section `h` (owned; closed on failure) and checks that
    /// it has at least `len` bytes; without `len`, the map is as long as
    /// the view.
    fn view(h: HANDLE, len: Option<usize>, loc: Locator) -> io::Result<Map> {
        let fail = |h: HANDLE, e: io::Error| {
            // SAFETY: `h` is owned by this function and closed once.
            unsafe { CloseHandle(h) };
            Err(e)
        };
        // SAFETY: `h` is a valid section handle; size 0 maps all of it.
        let view = unsafe { MapViewOfFile(h, FILE_MAP_ALL_ACCESS, 0, 0, 0) };
        let Some(ptr) = NonNull::new(view.Value.cast::<u8>()) else {
            return fail(h, io::Error::last_os_error());
        };
        // SAFETY: an all-zero MEMORY_BASIC_INFORMATION (pointers and
        // integers) is valid.
        let mut info: MEMORY_BASIC_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is writable and its size is passed; the address is
        // the view just mapped.
        let got = unsafe {
            VirtualQuery(
                view.Value,
                &mut info,
                std::mem::size_of::<MEMORY_BASIC_INFORMATION>(),
            )
        };
        let len = len.unwrap_or(info.RegionSize);
        if got == 0 || info.RegionSize < len {
            // SAFETY: the view mapped above, unmapped once.
            unsafe { UnmapViewOfFile(view) };
            return fail(
                h,
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not the shared-memory segment the handle names (size)",
                ),
            );
        }
        super::wait_windows::register_view(ptr.as_ptr() as usize, info.RegionSize, loc.os_name());
        Ok(Map {
            section: AtomicUsize::new(h as usize),
            ptr,
            len,
            loc,
        })
    }

    /// What a peer needs to map the segment.
    pub(crate) fn locator(&self) -> Locator {
        self.loc.clone()
    }

    /// Start of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Always `false`: a section's size is fixed when it is created (it can
    /// only be extended, which does not touch existing views), so no peer
    /// can take pages away from a view.
    pub(crate) fn lost(&self) -> bool {
        false
    }

    /// Whether the segment is what it was made as: always, here (it
    /// cannot be shrunk under a mapping).
    pub(crate) fn intact(&self) -> bool {
        true
    }

    /// The length asked for (the view may be a little longer).
    pub(crate) fn map_len(&self) -> usize {
        self.len
    }

    /// Closes this process's section handle. The view stays valid; the name
    /// goes when no process holds a handle or view any more.
    pub(crate) fn unlink(&self) {
        let h = self.section.swap(0, Ordering::AcqRel);
        if h != 0 {
            // SAFETY: the handle was ours; the swap makes this the only close.
            unsafe { CloseHandle(h as HANDLE) };
        }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        super::wait_windows::unregister_view(self.ptr.as_ptr() as usize);
        // SAFETY: `ptr` is the base of the view this `Map` mapped; nothing
        // borrows it past the `Map` (callers' contracts).
        unsafe {
            UnmapViewOfFile(MEMORY_MAPPED_VIEW_ADDRESS {
                Value: self.ptr.as_ptr().cast(),
            })
        };
        self.unlink();
    }
}

/// Nothing to track on Windows (see the module docs).
pub(crate) fn track(_name: &str) -> io::Result<()> {
    Ok(())
}

/// Nothing to track on Windows (see the module docs).
pub(crate) fn untrack(_name: &str) {}

/// `true` when `e` means the shared-memory space is full.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    // ERROR_DISK_FULL, ERROR_NOT_ENOUGH_MEMORY, ERROR_COMMITMENT_LIMIT,
    // ERROR_NO_SYSTEM_RESOURCES.
    const CODES: [i32; 4] = [112, 8, 1455, 1450];
    e.raw_os_error().is_some_and(|c| CODES.contains(&c))
}

fn no_space() -> io::Error {
    io::Error::from_raw_os_error(1455)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_open_share_and_vanish_with_the_last_holder() {
        let a = Map::create(10_000).unwrap();
        let b = Map::open(&a.locator(), 10_000).unwrap();
        // SAFETY: the view is ours and 10 000 bytes long; no one else writes.
        unsafe { a.as_ptr().wrapping_add(9_999).write_volatile(7) };
        // SAFETY: as above, for the second view of the same section.
        assert_eq!(unsafe { b.as_ptr().wrapping_add(9_999).read_volatile() }, 7);
        // A section smaller than asked for is refused.
        assert!(Map::open(&a.locator(), 1 << 20).is_err());
        let loc = a.locator();
        drop(a);
        // `b` still holds it: still there.
        drop(Map::open(&loc, 10_000).unwrap());
        drop(b);
        assert!(Map::open(&loc, 10_000).is_err());
    }

    #[test]
    fn unlink_keeps_the_view() {
        let a = Map::create(64).unwrap();
        a.unlink();
        a.unlink();
        // SAFETY: the view is ours and 64 bytes long.
        unsafe { a.as_ptr().write_volatile(1) };
    }
}
