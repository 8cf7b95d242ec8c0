//! [`SharedMemory`]: a block of raw shared bytes (Python
//! `shared_memory.SharedMemory`), opened by name, read and written as
//! bytes or atomics, or through the `unsafe` slice views; and
//! [`SharedMemoryBuilder`], Python's keyword arguments (`name=`, `size=`,
//! `track=`).
//!
//! A block is one of two kinds: the crate's own (nameless where the OS
//! allows, a header, a generated name valid while a holder lives:
//! `segment.rs`) or a named object a caller chose (no header, Python's
//! layout, opened by unrelated programs: `segment/named.rs`).
#![allow(unsafe_code)]

use std::fmt;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::segment::{Data, NamedSegment, Segment, SegmentHandle};

/// A block of raw shared bytes.
///
/// Python counterpart: `multiprocessing.shared_memory.SharedMemory`:
/// [`create`](Self::create) is `SharedMemory(create=True, size=n)`,
/// [`builder`](Self::builder) takes `name=`, `size=` and `track=`
/// (`SharedMemory::builder().name("x").size(n).create()` is
/// `SharedMemory(name="x", create=True, size=n)`), [`open`](Self::open)
/// is `SharedMemory(name)`, [`name`](Self::name), [`len`](Self::len)
/// (`size`) and [`unlink`](Self::unlink) match; `buf` becomes
/// [`read_at`](Self::read_at) / [`write_at`](Self::write_at) /
/// [`as_atomic`](Self::as_atomic), or the `unsafe` slice views. There is no
/// `close()`: dropping the last handle in a process unmaps it. It can also
/// be passed to a child directly (it serialises as a handle, or as its
/// name if it has one); the [sharing rules](crate::SharedArray#sharing-rules)
/// apply.
///
/// Two kinds of block:
///
/// - **Generated names** ([`create`](Self::create)): the memory lives as
///   long as some process maps it and nothing is left behind after any
///   kill; the name opens it only while a process that holds it lives.
/// - **Chosen names** ([`builder`](Self::builder)`.name(..)`): an object
///   any program of the same user can open by that name, Python's
///   `SharedMemory(name=…)` included (the same bytes, no header), until
///   the name is [unlinked](Self::unlink) or, when tracked (the default),
///   the creating process ends. See [`SharedMemoryBuilder`].
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
    block: Block,
}

#[derive(Clone)]
enum Block {
    /// The crate's own segment.
    Generated {
        seg: Arc<Segment>,
        /// The block's name as its creator gave it: the same in every
        /// handle and every process (Python's `name` identifies the block).
        name: Arc<str>,
    },
    /// A named object.
    Named(Arc<NamedSegment>),
}

/// What a `SharedMemory` serialises as.
#[derive(Serialize, Deserialize)]
enum Wire {
    /// This process's own way in (valid while it holds the block, even if
    /// the creator is gone), and the name to report.
    Generated(SegmentHandle, String),
    /// The object's name: the receiver opens it by name, untracked.
    Named(String),
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
            block: Block::Generated {
                name: seg.handle().to_string().into(),
                seg: Arc::new(seg),
            },
        })
    }

    /// Options for a new block: Python's keyword arguments `name=`,
    /// `size=` and `track=`. See [`SharedMemoryBuilder`].
    ///
    /// ```
    /// let name = format!("mp-doc-builder-{}", std::process::id());
    /// let shm = multiproc::SharedMemory::builder().name(&name).size(64).create().unwrap();
    /// assert_eq!(shm.name(), name);
    /// shm.unlink();
    /// ```
    pub fn builder() -> SharedMemoryBuilder {
        SharedMemoryBuilder::default()
    }

    fn data(&self) -> Data<'_> {
        match &self.block {
            Block::Generated { seg, .. } => seg.data(),
            Block::Named(seg) => seg.data(),
        }
    }

    /// Maps the block called `name`, here or in another process (Python:
    /// `SharedMemory(name)`, `create=False`).
    ///
    /// `name` is either what [`name`](Self::name) returned for a block
    /// made by [`create`](Self::create) (valid while a process holding that
    /// block lives), or a chosen name: an object made by
    /// [`SharedMemoryBuilder::create`] in any program of this user, or by
    /// another program such as Python's `SharedMemory(name="x",
    /// create=True)` (a leading `/` is optional, as in Python). A named
    /// object is mapped whole, at its current size ([`len`](Self::len));
    /// opening never tracks it: its creator (or whoever unlinks it) owns
    /// the name.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when no object
    /// has that name (Python's `FileNotFoundError`);
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// for a name that no object can have (empty, `/` or NUL inside, too
    /// long); [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState)
    /// for an object of size 0 (a creator that has not sized it yet);
    /// for a generated name, [`ErrorKind::Protocol`](crate::ErrorKind::Protocol)
    /// when it names memory that is not that block (its size or tag
    /// differ) and [`ErrorKind::Io`](crate::ErrorKind::Io) when it cannot
    /// be mapped, typically because the process that gave it out no longer
    /// holds the block.
    ///
    /// ```
    /// use multiproc::{ErrorKind, SharedMemory};
    /// let a = SharedMemory::create(8).unwrap();
    /// let b = SharedMemory::open(&a.name()).unwrap();
    /// b.write_at(0, &[1, 2]);
    /// let mut two = [0; 2];
    /// a.read_at(0, &mut two);
    /// assert_eq!(two, [1, 2]);
    /// let missing = format!("mp-doc-missing-{}", std::process::id());
    /// assert_eq!(SharedMemory::open(&missing).unwrap_err().kind(), ErrorKind::NotFound);
    /// assert_eq!(SharedMemory::open("a/b").unwrap_err().kind(), ErrorKind::InvalidArgument);
    /// ```
    pub fn open(name: &str) -> Result<Self> {
        // A generated name has a form no chosen name may take (the
        // builder refuses it), so the two never meet.
        let block = match SegmentHandle::parse(name) {
            Ok(handle) => Block::Generated {
                seg: Arc::new(Segment::open(&handle)?),
                name: name.into(),
            },
            Err(_) => Block::Named(Arc::new(NamedSegment::open(name)?)),
        };
        Ok(SharedMemory { block })
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
        match &self.block {
            Block::Generated { seg, .. } => seg.lost(),
            Block::Named(seg) => seg.lost(),
        }
    }

    /// The block's name, for [`open`](Self::open) in another process: the
    /// name its creator gave it, the same through every clone, every
    /// [`open`](Self::open) and every handle passed to a child (Python's
    /// `name`). A chosen name is returned without a leading `/` (as Python
    /// reports it). A generated name opens the block while the creator
    /// holds it (on Linux the name leads to the creator's descriptor); a
    /// handle passed as an argument needs no name and works as long as any
    /// process holds the block.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(8).unwrap();
    /// let again = multiproc::SharedMemory::open(&shm.name()).unwrap();
    /// assert_eq!(again.name(), shm.name());
    /// ```
    pub fn name(&self) -> String {
        match &self.block {
            Block::Generated { name, .. } => name.to_string(),
            Block::Named(seg) => seg.name().to_owned(),
        }
    }

    /// Size in bytes (Python: `size`): as created; for a chosen name
    /// opened with [`open`](Self::open), the object's size, which macOS
    /// and Windows round up to whole pages (Python reports the same).
    ///
    /// ```
    /// assert_eq!(multiproc::SharedMemory::create(100).unwrap().len(), 100);
    /// ```
    pub fn len(&self) -> usize {
        self.data().len()
    }

    /// `true` for a zero-byte block.
    ///
    /// ```
    /// assert!(multiproc::SharedMemory::create(0).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        self.data().load(offset, dst);
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
        self.data().store(offset, src);
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
        self.data().atomic_bytes()
    }

    /// Pointer to the first byte in this process's mapping (64-byte
    /// aligned; a chosen name's is page aligned), valid while `self` (or a clone) lives. Accesses through it
    /// race with other processes: use atomics or volatile, or synchronise.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(8).unwrap();
    /// assert_eq!(shm.as_ptr() as usize % 64, 0);
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.data().as_ptr()
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

    /// Stops new [`open`](Self::open)s of the block (Python: `unlink()`).
    /// Mappings already made, here and in other processes, keep working;
    /// the memory is freed when the last one goes.
    ///
    /// - A chosen name ([`SharedMemoryBuilder::name`]): removes the name,
    ///   if it still names this block (Linux checks; another program may
    ///   have unlinked it and made its own since), and stops this
    ///   process's tracking of it. Any process may call it, as in Python.
    ///   On Windows it does nothing: the name goes with the last handle.
    /// - A generated name: optional, as the block is released when the
    ///   last handle is dropped anyway. On Linux it closes this process's
    ///   way in (other processes that opened the block still give out
    ///   working names); on macOS it removes the block's name; on Windows
    ///   the name goes when the creator drops the block.
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
        match &self.block {
            Block::Generated { seg, .. } => seg.unlink(),
            Block::Named(seg) => seg.unlink(),
        }
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
        match &self.block {
            Block::Generated { seg, name } => Wire::Generated(seg.handle(), name.to_string()),
            Block::Named(seg) => Wire::Named(seg.name().to_owned()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let block = match Wire::deserialize(d)? {
            Wire::Generated(handle, name) => {
                let seg = Segment::open(&handle).map_err(crate::error::de_custom)?;
                // The name is a peer's word: keep it only if it names this block.
                let same = SegmentHandle::parse(&name).is_ok_and(|n| n.same_block(&handle));
                let name = if same { name } else { handle.to_string() };
                Block::Generated {
                    seg: Arc::new(seg),
                    name: name.into(),
                }
            }
            Wire::Named(name) => Block::Named(Arc::new(
                NamedSegment::open(&name).map_err(crate::error::de_custom)?,
            )),
        };
        Ok(SharedMemory { block })
    }
}

/// Options for a new [`SharedMemory`] block: Python's
/// `SharedMemory(name=None, create=True, size=0, *, track=True)`.
///
/// Without [`name`](Self::name) it makes a block with a generated name,
/// as [`SharedMemory::create`] does. With a name it makes a **named
/// object** that any program of the same user can open by that name with
/// [`SharedMemory::open`], Python's `SharedMemory(name=…)` included (both
/// see the same bytes, from offset 0):
///
/// - Linux: `/dev/shm/<name>`, as POSIX `shm_open` makes it, mode 0600;
///   macOS: the POSIX shm name `/<name>`; Windows: the paging-file section
///   `Local\<name>` (where Python puts it too), for this user only.
/// - Creation is exclusive: a name that exists fails with
///   [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists)
///   (Python's `FileExistsError`), never opens someone else's object.
/// - The size must be positive
///   ([`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
///   otherwise, Python's `ValueError`); the space is reserved at creation
///   where the OS can (Linux, Windows), so a full `/dev/shm` is
///   [`ErrorKind::NoSpace`](crate::ErrorKind::NoSpace) here, not a crash
///   on a later write.
///
/// **Lifetime of the name** ([`track`](Self::track), Python 3.13's
/// `track=`): on Linux and macOS a name outlives every process that maps
/// it until someone removes it.
///
/// - `track(true)`, the default: the creating process's tracker (a small
///   helper process started with the first tracked create) removes the
///   name when the creating process ends, **however it ends, `kill -9`
///   included**: nothing is left in `/dev/shm`. [`unlink`](SharedMemory::unlink)
///   removes it earlier and stops the tracking. The creating process is the
///   one that called `create`: a name made in a child goes when that child
///   ends (create in the parent what must outlive a child, as for every
///   block).
/// - `track(false)`: nobody removes the name but you: call
///   [`unlink`](SharedMemory::unlink) (in any process) when done. **A
///   creator killed with `kill -9`, or one that just forgets, leaves the
///   name and its memory in `/dev/shm` until someone unlinks it or the
///   machine reboots.** Use it for a block that must outlive its creator.
/// - Windows: moot. A section and its name go with the last handle in any
///   process (Python documents the same), so nothing is ever left behind
///   and nothing outlives the processes that map it.
///
/// Names: a leading `/` is optional (as in Python on POSIX; `"/x"` and
/// `"x"` are one object, reported as `"x"`); refused with
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument):
/// empty, `.`, `..`, `/` or NUL (or `\`) inside, more than 255 bytes (30
/// on macOS), or the form of a generated name.
///
/// ```
/// use multiproc::{ErrorKind, SharedMemory};
///
/// let name = format!("mp-doc-demo-{}", std::process::id());
/// // Python: SharedMemory(name=name, create=True, size=4096)
/// let shm = SharedMemory::builder().name(&name).size(4096).create().unwrap();
/// shm.write_at(0, b"hello");
///
/// // Any program of this user (a child, an unrelated process, Python's
/// // SharedMemory(name=name)) opens it by name.
/// let same = SharedMemory::open(&name).unwrap();
/// let mut five = [0u8; 5];
/// same.read_at(0, &mut five);
/// assert_eq!(&five, b"hello");
///
/// // The name is taken until it is unlinked.
/// let again = SharedMemory::builder().name(&name).size(8).create();
/// assert_eq!(again.unwrap_err().kind(), ErrorKind::AlreadyExists);
/// shm.unlink();
/// if !cfg!(windows) {
///     assert_eq!(SharedMemory::open(&name).unwrap_err().kind(), ErrorKind::NotFound);
/// }
/// ```
#[derive(Clone, Debug)]
pub struct SharedMemoryBuilder {
    name: Option<String>,
    size: usize,
    track: bool,
}

impl Default for SharedMemoryBuilder {
    fn default() -> Self {
        SharedMemoryBuilder {
            name: None,
            size: 0,
            track: true,
        }
    }
}

impl SharedMemoryBuilder {
    /// The block's name (Python's `name=`): a named object other programs
    /// open by it. Checked by [`create`](Self::create); see the type's
    /// docs for the rules.
    ///
    /// ```
    /// let b = multiproc::SharedMemory::builder().name("frames");
    /// # let _ = b;
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Size in bytes (Python's `size=`); default 0, which only a block
    /// without a name may have.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::builder().size(100).create().unwrap();
    /// assert_eq!(shm.len(), 100);
    /// ```
    pub fn size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// Whether the creating process's tracker removes the name when that
    /// process ends, however it ends (Python 3.13's `track=`); default
    /// `true`. With `false` the name stays until someone calls
    /// [`unlink`](SharedMemory::unlink), **even after `kill -9` of its
    /// creator**. No effect on a block without a name (nothing of it is
    /// ever left) or on Windows (the name goes with the last handle).
    ///
    /// ```
    /// use multiproc::SharedMemory;
    /// let name = format!("mp-doc-untracked-{}", std::process::id());
    /// let shm = SharedMemory::builder().name(&name).size(64).track(false).create().unwrap();
    /// // … hand `name` to programs that may outlive this one …
    /// shm.unlink(); // untracked: the caller's job
    /// ```
    pub fn track(mut self, track: bool) -> Self {
        self.track = track;
        self
    }

    /// Creates the block (Python: `SharedMemory(..., create=True)`).
    ///
    /// # Errors
    ///
    /// For a named block:
    /// [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists) when
    /// the name is taken;
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// for an invalid name or size 0;
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when tracked and the tracker
    /// cannot be started (the name is then removed again). Always:
    /// [`ErrorKind::NoSpace`](crate::ErrorKind::NoSpace) when shared memory
    /// is exhausted, [`ErrorKind::Io`](crate::ErrorKind::Io) for other OS
    /// errors.
    ///
    /// ```
    /// use multiproc::{ErrorKind, SharedMemory};
    /// let zero = SharedMemory::builder().name("mp-doc-zero").create();
    /// assert_eq!(zero.unwrap_err().kind(), ErrorKind::InvalidArgument);
    /// ```
    pub fn create(&self) -> Result<SharedMemory> {
        let Some(name) = &self.name else {
            return SharedMemory::create(self.size);
        };
        if SegmentHandle::parse(name).is_ok() {
            return Err(crate::Error::new(
                crate::ErrorKind::InvalidArgument,
                format!(
                    "invalid shared-memory name {name:?}: it has the form of a generated \
                     name (`SharedMemory::create`), which `open` would take for one"
                ),
            ));
        }
        let seg = NamedSegment::create(name, self.size, self.track)?;
        Ok(SharedMemory {
            block: Block::Named(Arc::new(seg)),
        })
    }
}
