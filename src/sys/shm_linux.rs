//! Shared-memory objects on Linux: nameless files on `/dev/shm`, reopened
//! by peers through `/proc/<pid>/fd/<fd>`.
//!
//! Why not the `shared_memory` crate here (the design card names it): its
//! objects have names in `/dev/shm` that only the owner's `Drop` removes, so
//! a SIGKILLed program leaves them behind, and it does not expose the file
//! descriptor this scheme needs. Instead:
//!
//! - the creator makes a file with no name at all:
//!   `open("/dev/shm", O_TMPFILE | O_EXCL, 0600)` (tmpfs, Linux ≥ 3.11). It
//!   lives exactly as long as some process holds an fd or a mapping of it,
//!   so nothing can be left in `/dev/shm` whatever kills whom. Where
//!   `O_TMPFILE` is not available it falls back to `shm_open` + an immediate
//!   `shm_unlink` (a window of one syscall in which a SIGKILL leaves a name);
//! - every process that holds the segment keeps its fd open (close-on-exec),
//!   and a peer opens `/proc/<holder pid>/fd/<fd>`, which the kernel allows
//!   for processes of the same user (the `ptrace` read check; Yama does not
//!   restrict it). The locator also carries the file's device and inode, so
//!   an fd number or pid that has since been reused is refused before it is
//!   opened;
//! - the space is reserved with `posix_fallocate`, so a full `/dev/shm` is
//!   `ENOSPC` at creation instead of SIGBUS on first touch.
//!
//! The cost: a locator works only while the process that issued it holds
//! the segment.
//!
//! Named objects (`SharedMemory::builder().name(..)`, Python's
//! `SharedMemory(name=…)`) are the files `/dev/shm/<name>`, exactly what
//! glibc's `shm_open` opens, so Python and C programs see the same object.
//! They are created `O_EXCL`, mode 0600, with their space reserved as
//! above; an opener maps the file's real size (`fstat`), so nothing is
//! mapped past its end, and registers with the `SIGBUS` guard like every
//! other mapping. Their names outlive every process unless removed: that
//! is the tracker's job (`shm_tracker.rs`).
#![allow(unsafe_code)]

use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, Ordering};

use serde::{Deserialize, Serialize};

use super::shm_name;
use super::sigbus;

/// Where a peer finds a segment: a process that holds it, the fd it holds
/// it under, and the file's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Locator {
    pid: u32,
    fd: i32,
    dev: u64,
    ino: u64,
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{:x}.{:x}", self.pid, self.fd, self.dev, self.ino)
    }
}

impl Locator {
    /// Parses what `Display` writes; `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<Locator> {
        let mut it = s.split('.');
        let loc = Locator {
            pid: it.next()?.parse().ok()?,
            fd: it.next()?.parse().ok()?,
            dev: u64::from_str_radix(it.next()?, 16).ok()?,
            ino: u64::from_str_radix(it.next()?, 16).ok()?,
        };
        it.next().is_none().then_some(loc)
    }
}

/// One mapping of a shared-memory file, read-write, `len` bytes from
/// offset 0, plus the fd peers reopen it through.
pub(crate) struct Map {
    ptr: NonNull<u8>,
    len: usize,
    /// Our fd of the file; -1 once [`Map::unlink`] closed it.
    fd: AtomicI32,
    /// The locator peers get from us (the fd number as it was).
    loc: Locator,
    /// Keeps a peer's `ftruncate` from crashing us (see `sigbus`); taken
    /// out just before the unmap.
    guard: Option<sigbus::Guard>,
}

// SAFETY: `Map` owns a `MAP_SHARED` mapping and an fd. Neither is tied to a
// thread: any thread may read/write the mapping through the pointer (the
// callers only do so atomically or under their own `unsafe` contracts) and
// `munmap`/`close` happen once, in `Drop`, or via the atomic swap in
// `unlink`.
unsafe impl Send for Map {}
// SAFETY: see `Send`; `&Map` only hands out the pointer, the length and the
// locator, and `unlink` is made idempotent by an atomic swap.
unsafe impl Sync for Map {}

impl Map {
    /// Creates a zero-filled segment of `len` bytes (`len > 0`), mode 0600,
    /// with its space reserved.
    pub(crate) fn create(len: usize) -> io::Result<Map> {
        let file = File::from(create_file()?);
        // The mode given to `open` went through the umask; make it exactly
        // 0600, which is also what peers of the same user need to open it.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        reserve(&file, len)?;
        let meta = file.metadata()?;
        Map::from_file(file, len, &meta, Populate::Write)
    }

    /// Creates the named object `/dev/shm/<name>` (`name` checked by
    /// `shm_name::user_name`), zero-filled, `len > 0` bytes, mode 0600,
    /// its space reserved. `AlreadyExists` when the name is taken.
    pub(crate) fn create_named(name: &str, len: usize) -> io::Result<Map> {
        let path = named_path(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(&path)?;
        let sized = (|| {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            reserve(&file, len)?;
            file.metadata()
        })();
        match sized {
            Ok(meta) => Map::from_file(file, len, &meta, Populate::Write),
            Err(e) => {
                // Ours (just created, `O_EXCL`): nobody else may see a
                // half-made object under the name.
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Maps the named object `/dev/shm/<name>`, whatever made it, all of
    /// its current size. `NotFound` when there is no such name,
    /// `InvalidData` when it is no regular file or is empty (a creator
    /// that has not sized it yet).
    pub(crate) fn open_named(name: &str) -> io::Result<Map> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(named_path(name))?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a shared-memory object (no regular file)",
            ));
        }
        let len = usize::try_from(meta.size())
            .ok()
            .filter(|&l| l <= isize::MAX as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "too large to map"))?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the object is empty (its creator may not have sized it yet)",
            ));
        }
        // Not populated: a foreign object may be sparse, and populating
        // would allocate all of it now.
        Map::from_file(file, len, &meta, Populate::No)
    }

    /// Removes `name` if it still names this mapping's object (the same
    /// file: another program may have unlinked ours and created its own
    /// under the name since). Gone already is fine.
    pub(crate) fn remove_name(&self, name: &str) -> io::Result<()> {
        let path = named_path(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.dev() == self.loc.dev && m.ino() == self.loc.ino => {
                ok_if_gone(std::fs::remove_file(&path))
            }
            Ok(_) => Ok(()),
            Err(e) => ok_if_gone(Err(e)),
        }
    }

    /// Maps the segment that `loc` names, which must be exactly `len` bytes.
    ///
    /// Errors: `NotFound` when the holder is gone or dropped it,
    /// `InvalidData` when the fd now names some other file.
    pub(crate) fn open(loc: &Locator, len: usize) -> io::Result<Map> {
        Map::open_as(loc, len, Populate::Read)
    }

    /// [`open`](Self::open), the page tables left empty: the pages are
    /// mapped in where they are used ([`prefault`](Self::prefault), or a
    /// fault on first touch). For a pool worker, which touches only the
    /// chunks it runs.
    pub(crate) fn open_lazy(loc: &Locator, len: usize) -> io::Result<Map> {
        Map::open_as(loc, len, Populate::No)
    }

    fn open_as(loc: &Locator, len: usize, populate: Populate) -> io::Result<Map> {
        if loc.fd < 0 {
            return Err(mismatch("negative fd"));
        }
        let path = format!("/proc/{}/fd/{}", loc.pid, loc.fd);
        // `stat` first (it follows the magic link), so a reused fd that now
        // names a tty or a device is refused before we open it.
        check(&std::fs::metadata(&path)?, loc, len)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)?;
        let meta = file.metadata()?;
        check(&meta, loc, len)?;
        Map::from_file(file, len, &meta, populate)
    }

    /// Maps in the pages of bytes `[at, at + len)` of the mapping (clipped
    /// to it) in one pass, as [`open`](Self::open) does for all of them.
    /// A failure is ignored: the pages then fault in on first touch.
    pub(crate) fn prefault(&self, at: usize, len: usize) {
        let page = page_size();
        let start = (at.min(self.len) / page) * page;
        let end = at.saturating_add(len).min(self.len);
        if end > start {
            let _ = Populate::Read.fill(self.ptr.as_ptr().wrapping_add(start).cast(), end - start);
        }
    }

    fn from_file(file: File, len: usize, meta: &Metadata, populate: Populate) -> io::Result<Map> {
        let ptr = map_shared(&file, len, false)?;
        let ptr = match populate.fill(ptr, len) {
            Ok(()) => ptr,
            Err(()) => {
                // A kernel before 5.14 (no `MADV_POPULATE_*`): map again
                // with `MAP_POPULATE`, which fills the same tables, slower.
                // SAFETY: `ptr`/`len` is the mapping made just above, not
                // handed to anyone yet.
                unsafe { libc::munmap(ptr.cast(), len) };
                map_shared(&file, len, true)?
            }
        };
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        let fd: RawFd = OwnedFd::from(file).into_raw_fd();
        let guard = Some(sigbus::Guard::register(ptr.as_ptr(), len));
        Ok(Map {
            guard,
            ptr,
            len,
            fd: AtomicI32::new(fd),
            loc: Locator {
                pid: std::process::id(),
                fd,
                dev: meta.dev(),
                ino: meta.ino(),
            },
        })
    }

    /// What a peer needs to map the segment while we hold it.
    pub(crate) fn locator(&self) -> Locator {
        self.loc
    }

    /// Start of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub(crate) fn map_len(&self) -> usize {
        self.len
    }

    /// Whether another process shrank the file under this mapping: the
    /// mapping was then replaced with private zeros (see `sigbus`) and
    /// shares nothing any more.
    pub(crate) fn lost(&self) -> bool {
        self.guard.as_ref().is_some_and(sigbus::Guard::lost)
    }

    /// Whether the segment is, right now, what it was made as: not lost,
    /// still held (peers can open it), and its file still as long as the
    /// mapping (a peer that shrank it and was not seen yet).
    pub(crate) fn intact(&self) -> bool {
        if self.lost() {
            return false;
        }
        let fd = self.fd.load(Ordering::Acquire);
        if fd < 0 {
            return false;
        }
        // SAFETY: an all-zero `stat` (integers) is a valid value; `fstat`
        // writes only into it, and `fd` is open (ours until `unlink`).
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe { libc::fstat(fd, &mut st) };
        rc == 0 && u64::try_from(st.st_size).is_ok_and(|size| size >= self.len as u64)
    }

    /// Stops peers from opening the segment through us: closes our fd.
    /// The mapping stays valid.
    pub(crate) fn unlink(&self) {
        let fd = self.fd.swap(-1, Ordering::AcqRel);
        if fd >= 0 {
            // SAFETY: `fd` was ours and the swap hands it out exactly once.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // Unregister first: once unmapped, the range may be reused by a
        // mapping that is not ours.
        drop(self.guard.take());
        // SAFETY: `ptr`/`len` are the mapping `map` made; every reference
        // into it borrows from the `Map` (or a `Segment` owning it), so none
        // outlives this drop.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        self.unlink();
    }
}

/// How much of a new mapping's page tables to fill before it is used.
///
/// One pass over the range now instead of a page fault per 4 KiB page on
/// first touch. `MADV_POPULATE_READ`/`_WRITE` (Linux 5.14) beat
/// `MAP_POPULATE` here: measured on this project's 2-vCPU VM for 80 MB
/// (docs/BENCHMARKS.md, "First calls: page tables"), a peer's second
/// mapping of a written segment took 1.8–2.1 ms with `MADV_POPULATE_READ`
/// against 5.2–5.7 ms with `MAP_POPULATE`, and a creator's `fallocate` +
/// mapping 28–29 ms with `MADV_POPULATE_WRITE` against 38–48 ms.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Populate {
    /// Nothing: a foreign object may be sparse, and populating would
    /// allocate all of it now.
    No,
    /// Map what is there (a segment a peer made and reserved): shared
    /// tmpfs pages are mapped writable by a read fault, as no write is
    /// tracked for them, so reading in is all a peer needs.
    Read,
    /// Allocate and clear every page (our new, reserved segment).
    Write,
}

impl Populate {
    /// Fills the page tables of `len` bytes at `ptr`. `Err` only where the
    /// kernel does not know the request (then `MAP_POPULATE` does it); any
    /// other failure leaves the pages to be faulted in on first touch,
    /// which is what an unpopulated mapping does anyway.
    fn fill(self, ptr: *mut libc::c_void, len: usize) -> Result<(), ()> {
        let advice = match self {
            Populate::No => return Ok(()),
            Populate::Read => libc::MADV_POPULATE_READ,
            Populate::Write => libc::MADV_POPULATE_WRITE,
        };
        // SAFETY: `ptr`/`len` is a whole mapping of ours; the advice only
        // faults its pages in, it changes no contents.
        let rc = unsafe { libc::madvise(ptr, len, advice) };
        if rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// The size of a page (what `mmap` and `madvise` align to).
fn page_size() -> usize {
    // SAFETY: `sysconf` reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// A fresh shared read-write mapping of all `len` bytes of `file`,
/// populated by the kernel when `populate`.
fn map_shared(file: &File, len: usize, populate: bool) -> io::Result<*mut libc::c_void> {
    let populate = if populate { libc::MAP_POPULATE } else { 0 };
    // SAFETY: a fresh shared read-write mapping of an fd we own; the
    // kernel picks the address, so no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | populate,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr)
}

/// Where glibc's `shm_open` keeps `name`.
fn named_path(name: &str) -> String {
    format!("/dev/shm/{name}")
}

fn ok_if_gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes the named object `name` (the tracker's clean-up, in a process
/// that holds no mapping to compare with). Gone already is fine.
pub(crate) fn unlink_named(name: &str) -> io::Result<()> {
    ok_if_gone(std::fs::remove_file(named_path(name)))
}

/// Tracks the names of named objects this process creates (`shm_tracker.rs`).
pub(crate) use super::shm_tracker::{track, untrack};

/// `true` when `e` means the shared-memory space is full.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

fn mismatch(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not the shared-memory segment the handle names ({what})"),
    )
}

fn check(meta: &Metadata, loc: &Locator, len: usize) -> io::Result<()> {
    // SAFETY: `geteuid` has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() || meta.dev() != loc.dev || meta.ino() != loc.ino {
        return Err(mismatch("other file"));
    }
    if meta.uid() != uid {
        return Err(mismatch("other owner"));
    }
    if meta.size() != len as u64 {
        return Err(mismatch("size"));
    }
    Ok(())
}

/// A nameless file on `/dev/shm`.
fn create_file() -> io::Result<OwnedFd> {
    let tmpfile = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_EXCL)
        .open("/dev/shm");
    match tmpfile {
        Ok(f) => Ok(f.into()),
        // Kernels or file systems without O_TMPFILE say one of these.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EISDIR | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOENT)
            ) =>
        {
            create_unlinked_shm()
        }
        Err(e) => Err(e),
    }
}

/// `shm_open` a fresh name and unlink it at once.
fn create_unlinked_shm() -> io::Result<OwnedFd> {
    for _ in 0..8 {
        let name = std::ffi::CString::new(shm_name::random_name()?).map_err(io::Error::other)?;
        // SAFETY: `name` is a valid C string; `shm_open` returns a new fd
        // (close-on-exec) or -1.
        let fd = unsafe {
            libc::shm_open(
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                0o600 as libc::mode_t,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EEXIST) {
                continue;
            }
            return Err(e);
        }
        // SAFETY: `fd` was just returned by `shm_open` and is owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `name` is a valid C string. Failing leaves the name until
        // reboot, but the fd is still good, so it is not an error.
        unsafe { libc::shm_unlink(name.as_ptr()) };
        return Ok(fd);
    }
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}

/// Grows the file to `len` bytes with the pages allocated now.
fn reserve(file: &File, len: usize) -> io::Result<()> {
    let size = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: `posix_fallocate` on an fd we own; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            // A file system that cannot reserve: size it; pages come lazily.
            libc::EOPNOTSUPP => return file.set_len(len as u64),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn our_names_in_dev_shm() -> Vec<String> {
        std::fs::read_dir("/dev/shm")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| shm_name::is_valid_name(&format!("/{n}")))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn segment_is_mode_0600_and_sized() {
        let map = Map::create(10_000).unwrap();
        let path = format!("/proc/self/fd/{}", map.locator().fd);
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.size(), 10_000);
        // Reserved, not sparse: a full /dev/shm fails here, not on a write.
        assert!(meta.blocks() * 512 >= 10_000);
    }

    #[test]
    fn nothing_in_dev_shm_while_alive_or_after_drop() {
        let before = our_names_in_dev_shm();
        let map = Map::create(4096).unwrap();
        let fallback = create_unlinked_shm().unwrap();
        assert_eq!(our_names_in_dev_shm(), before);
        drop((map, fallback));
        assert_eq!(our_names_in_dev_shm(), before);
    }

    #[test]
    fn open_through_proc_shares_the_memory() {
        let a = Map::create(4096).unwrap();
        let b = Map::open(&a.locator(), 4096).unwrap();
        assert_ne!(a.locator().fd, b.locator().fd);
        // SAFETY: both mappings are 4096 bytes and nothing else uses them.
        unsafe { a.as_ptr().wrapping_add(100).write(42) };
        // SAFETY: as above.
        assert_eq!(unsafe { b.as_ptr().wrapping_add(100).read() }, 42);
    }

    #[test]
    fn open_refuses_wrong_size_file_or_holder() {
        let a = Map::create(4096).unwrap();
        let loc = a.locator();
        let kind = |loc: Locator, len| Map::open(&loc, len).err().map(|e| e.kind());
        assert_eq!(kind(loc, 8192), Some(io::ErrorKind::InvalidData));
        let other_ino = Locator {
            ino: loc.ino ^ 1,
            ..loc
        };
        assert_eq!(kind(other_ino, 4096), Some(io::ErrorKind::InvalidData));
        // fd 0 is stdin: a different file (or a tty), refused before open.
        let stdin = Locator { fd: 0, ..loc };
        assert!(kind(stdin, 4096).is_some());
        let no_fd = Locator { fd: 1 << 20, ..loc };
        assert_eq!(kind(no_fd, 4096), Some(io::ErrorKind::NotFound));
        let no_pid = Locator {
            pid: u32::MAX,
            ..loc
        };
        assert_eq!(kind(no_pid, 4096), Some(io::ErrorKind::NotFound));
        a.unlink();
        assert!(kind(loc, 4096).is_some(), "unlinked: no new opens");
    }

    #[test]
    fn full_dev_shm_is_enospc_at_create() {
        // Only tmpfs refuses an oversized fallocate up front; on a disk
        // file system the test would fill the disk first.
        // SAFETY: `statfs` is zeroable plain data.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and a valid out-pointer.
        let rc = unsafe { libc::statfs(c"/dev/shm".as_ptr(), &mut fs) };
        if rc != 0 || fs.f_type != libc::TMPFS_MAGIC {
            return;
        }
        // SAFETY: `statvfs` is zeroable plain data.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and a valid out-pointer.
        let rc = unsafe { libc::statvfs(c"/dev/shm".as_ptr(), &mut st) };
        if rc != 0 || st.f_blocks == 0 {
            return; // no /dev/shm, or no size limit: nothing to fill
        }
        // More than the whole file system: tmpfs refuses it up front,
        // without allocating anything.
        let total = (st.f_blocks as u128 * st.f_frsize as u128) as usize;
        let err = Map::create(total + (1 << 20)).err().unwrap();
        assert!(is_no_space(&err), "{err}");
    }

    #[test]
    fn locator_text_round_trips_and_rejects_garbage() {
        let loc = Locator {
            pid: 12,
            fd: 7,
            dev: 0x2a,
            ino: 0xbeef,
        };
        assert_eq!(Locator::parse(&loc.to_string()), Some(loc));
        for bad in ["", "1.2.3", "1.2.3.4.5", "a.2.3.4", "1.2.3.zz", "1..3.4"] {
            assert_eq!(Locator::parse(bad), None, "{bad}");
        }
    }
}
