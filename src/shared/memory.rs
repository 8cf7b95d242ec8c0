//! [`SharedMemory`]: a block of raw shared bytes (Python
//! `shared_memory.SharedMemory`), opened by name, read and written as
//! bytes or atomics, or through the `unsafe` slice views.
#![allow(unsafe_code)]

use std::fmt;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::segment::{Segment, SegmentHandle};

/// A block of raw shared bytes.
///
/// Python counterpart: `multiprocessing.shared_memory.SharedMemory`:
/// [`create`](Self::create) is `SharedMemory(create=True, size=n)`,
/// [`open`](Self::open) is `SharedMemory(name)`, [`name`](Self::name),
/// [`len`](Self::len) (`size`) and [`unlink`](Self::unlink) match; `buf`
/// becomes [`read_at`](Self::read_at) / [`write_at`](Self::write_at) /
/// [`as_atomic`](Self::as_atomic), or the `unsafe` slice views. There is no
/// `close()`: dropping the last handle in a process unmaps it. It can also
/// be passed to a child directly (it serialises as a handle); the
/// [sharing rules](crate::SharedArray#sharing-rules) apply.
///
/// ```
/// use multiproc::{Process, SharedMemory};
///
/// fn greet(name: String) {
///     let shm = SharedMemory::open(&name).unwrap();
///     shm.write_at(0, b"hello from the child");
/// }
///
/// fn main() {
///     multiproc::init();
///     let shm = SharedMemory::create(64).unwrap();
///     Process::spawn(greet, shm.name()).unwrap().join().unwrap();
///     let mut buf = [0u8; 20];
///     shm.read_at(0, &mut buf);
///     assert_eq!(&buf, b"hello from the child");
/// }
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    seg: Arc<Segment>,
    /// The block's name as its creator gave it: the same in every handle
    /// and every process (Python's `name` identifies the block).
    name: Arc<str>,
}

impl SharedMemory {
    /// A new block of `size` zero bytes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoSpace`](crate::ErrorKind::NoSpace) when shared memory is exhausted,
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) for other OS errors.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(4096).unwrap();
    /// assert_eq!(shm.len(), 4096);
    /// ```
    pub fn create(size: usize) -> Result<Self> {
        let seg = Segment::create(size)?;
        Ok(SharedMemory {
            name: seg.handle().to_string().into(),
            seg: Arc::new(seg),
        })
    }

    /// Maps the block that [`name`](Self::name) returned, here or in
    /// another process.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Protocol`](crate::ErrorKind::Protocol) when `name` is not a name this crate made,
    /// or names memory that is not that block (its size or tag differ);
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when it cannot be mapped, typically because the
    /// process that gave out the name no longer holds the block.
    ///
    /// ```
    /// use multiproc::{ErrorKind, SharedMemory};
    /// let a = SharedMemory::create(8).unwrap();
    /// let b = SharedMemory::open(&a.name()).unwrap();
    /// b.write_at(0, &[1, 2]);
    /// let mut two = [0; 2];
    /// a.read_at(0, &mut two);
    /// assert_eq!(two, [1, 2]);
    /// assert_eq!(SharedMemory::open("psm_nope").unwrap_err().kind(), ErrorKind::Protocol);
    /// ```
    pub fn open(name: &str) -> Result<Self> {
        let handle = SegmentHandle::parse(name)?;
        Ok(SharedMemory {
            seg: Arc::new(Segment::open(&handle)?),
            name: name.into(),
        })
    }

    /// Whether another process shrank this block under us.
    ///
    /// On Linux anyone who can open a segment can `ftruncate` it, and
    /// touching the lost pages would kill this process with `SIGBUS`. The
    /// crate catches that fault instead: it replaces the whole mapping with
    /// private zeros, so the access goes on, and from then on reads give
    /// zeros and writes reach nobody. This says whether that happened; the
    /// crate's blocking objects (locks, queues, pipes, the pool) turn it
    /// into an [`ErrorKind::Protocol`](crate::ErrorKind::Protocol) error themselves. Always `false` on
    /// Windows and macOS, where a segment cannot shrink. Python has no
    /// counterpart: there the reader dies of `SIGBUS`.
    ///
    /// ```
    /// let x = multiproc::SharedMemory::create(64).unwrap();
    /// assert!(!x.is_lost());
    /// ```
    pub fn is_lost(&self) -> bool {
        self.seg.lost()
    }

    /// The block's name, for [`open`](Self::open) in another process: the
    /// name its creator gave it, the same through every clone, every
    /// [`open`](Self::open) and every handle passed to a child (Python's
    /// `name`). Opening by name works while the creator holds the block
    /// (on Linux the name leads to the creator's descriptor); a handle
    /// passed as an argument needs no name and works as long as any
    /// process holds the block.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(8).unwrap();
    /// let again = multiproc::SharedMemory::open(&shm.name()).unwrap();
    /// assert_eq!(again.name(), shm.name());
    /// ```
    pub fn name(&self) -> String {
        self.name.to_string()
    }

    /// Size in bytes, as created (Python: `size`; not rounded to pages).
    ///
    /// ```
    /// assert_eq!(multiproc::SharedMemory::create(100).unwrap().len(), 100);
    /// ```
    pub fn len(&self) -> usize {
        self.seg.len()
    }

    /// `true` for a zero-byte block.
    ///
    /// ```
    /// assert!(multiproc::SharedMemory::create(0).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.seg.len() == 0
    }

    /// Copies bytes `offset..offset + dst.len()` into `dst`, race-free
    /// (see [`SharedArray`](crate::SharedArray)'s sharing rules).
    ///
    /// # Panics
    ///
    /// If the range is not inside the block.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(4).unwrap();
    /// let mut b = [9u8; 4];
    /// shm.read_at(0, &mut b);
    /// assert_eq!(b, [0; 4]);
    /// ```
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) {
        self.seg.load(offset, dst);
    }

    /// Copies `src` into bytes `offset..offset + src.len()`, race-free.
    ///
    /// # Panics
    ///
    /// If the range is not inside the block.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(4).unwrap();
    /// shm.write_at(1, b"ab");
    /// assert_eq!(shm.to_vec(), b"\0ab\0");
    /// ```
    pub fn write_at(&self, offset: usize, src: &[u8]) {
        self.seg.store(offset, src);
    }

    /// A copy of all the bytes.
    ///
    /// ```
    /// assert_eq!(multiproc::SharedMemory::create(2).unwrap().to_vec(), [0, 0]);
    /// ```
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        self.read_at(0, &mut v);
        v
    }

    /// The bytes as atomics: safe to read and write while other processes
    /// do, and what lock-free structures in the block are built from.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let shm = multiproc::SharedMemory::create(2).unwrap();
    /// shm.as_atomic()[1].store(7, Ordering::Release);
    /// assert_eq!(shm.to_vec(), [0, 7]);
    /// ```
    pub fn as_atomic(&self) -> &[AtomicU8] {
        self.seg.atomic_bytes()
    }

    /// Pointer to the first byte in this process's mapping (64-byte
    /// aligned), valid while `self` (or a clone) lives. Accesses through it
    /// race with other processes: use atomics or volatile, or synchronise.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(8).unwrap();
    /// assert_eq!(shm.as_ptr() as usize % 64, 0);
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.seg.as_ptr()
    }

    /// The bytes as a plain slice (Python: `bytes(shm.buf)`, without the
    /// copy).
    ///
    /// # Safety
    ///
    /// While the returned slice lives, nothing may write the block: not
    /// this process through another handle, [`write_at`](Self::write_at),
    /// [`as_atomic`](Self::as_atomic) or [`as_ptr`](Self::as_ptr), and no
    /// other process. Reading is fine.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(3).unwrap();
    /// // SAFETY: no other handle exists, so nothing writes meanwhile.
    /// assert_eq!(unsafe { shm.as_slice() }, &[0, 0, 0]);
    /// ```
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped while `self` lives, initialised
        // (zeroed at creation); no writes meanwhile is the caller's promise.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    /// The bytes as a plain mutable slice (Python: `shm.buf`).
    ///
    /// # Safety
    ///
    /// While the returned slice lives, nothing else may read or write the
    /// block: not this process through another handle, and no other
    /// process. `&mut self` only rules out this handle.
    ///
    /// ```
    /// let mut shm = multiproc::SharedMemory::create(3).unwrap();
    /// // SAFETY: no other handle exists.
    /// unsafe { shm.as_mut_slice() }.copy_from_slice(b"abc");
    /// assert_eq!(shm.to_vec(), b"abc");
    /// ```
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; exclusive access for the slice's
        // lifetime is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }

    /// Stops new [`open`](Self::open)s of the names this process handed
    /// out (Python: `unlink()`). Mappings already made, here and in other
    /// processes, keep working; the memory is freed when the last one goes.
    ///
    /// Calling it is optional: the block is released when the last handle
    /// is dropped anyway. On Linux it closes this process's way in (other
    /// processes that opened the block still give out working names); on
    /// macOS it removes the block's name; on Windows the name goes when
    /// the creator drops the block.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(8).unwrap();
    /// let name = shm.name();
    /// shm.unlink();
    /// if !cfg!(windows) {
    ///     assert!(multiproc::SharedMemory::open(&name).is_err());
    /// }
    /// shm.write_at(0, b"still ok");
    /// ```
    pub fn unlink(&self) {
        self.seg.unlink();
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name())
            .field("len", &self.len())
            .finish()
    }
}

impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        // This process's own way in (valid while it holds the block, even
        // if the creator is gone), and the name to report.
        (self.seg.handle(), &*self.name).serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (handle, name) = <(SegmentHandle, String)>::deserialize(d)?;
        let seg = Segment::open(&handle).map_err(serde::de::Error::custom)?;
        // The name is a peer's word: keep it only if it names this block.
        let same = SegmentHandle::parse(&name).is_ok_and(|n| n.same_block(&handle));
        let name = if same { name } else { handle.to_string() };
        Ok(SharedMemory {
            seg: Arc::new(seg),
            name: name.into(),
        })
    }
}
