//! Shared-memory segments: create, open by handle, validate, copy in and
//! out without data races.
//!
//! A segment is one OS shared-memory object (`sys::shm::Map`) laid out as
//!
//! ```text
//! offset 0   Header (64 bytes): magic, len, 128-bit random tag
//! offset 64  len bytes of data          ← Segment::as_ptr()
//! ```
//!
//! The handle a peer receives carries the OS locator, `len` and the tag;
//! opening checks the mapping's size and then the header, so a stale
//! handle (its holder gone, the fd or name reused) or a forged one is an
//! error, never a mapping of the wrong memory.
//!
//! Named segments (a caller's name, no header: Python's layout) are in
//! `segment/named.rs`; both copy through [`Data`].
#![allow(unsafe_code)]

mod named;
pub(crate) use named::NamedSegment;

use std::fmt;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::sys::shm::{self, Locator, Map};

/// Bytes before the data. A multiple of 64, so data is cache-line aligned
/// (the mapping itself is page aligned).
pub(crate) const HEADER_LEN: usize = 64;
/// The largest alignment a type stored in a segment may ask for.
pub(crate) const MAX_ALIGN: usize = HEADER_LEN;

const MAGIC: u64 = u64::from_le_bytes(*b"mproc.sg");

/// The first bytes of every segment. Written once by the creator before
/// any handle exists; peers only read it.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    len: AtomicU64,
    tag: [AtomicU64; 2],
    _reserved: [AtomicU64; 4],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_LEN);

/// What a peer needs to open a segment. Travels inside serialised
/// arguments; every field is checked on open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentHandle {
    loc: Locator,
    len: u64,
    tag: [u64; 2],
}

impl fmt::Display for SegmentHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{:x}_{:016x}{:016x}",
            self.loc, self.len, self.tag[0], self.tag[1]
        )
    }
}

impl SegmentHandle {
    /// Whether both handles name the same block (its size and random tag),
    /// whichever process's descriptor each leads to.
    pub(crate) fn same_block(&self, other: &SegmentHandle) -> bool {
        self.len == other.len && self.tag == other.tag
    }

    /// Parses what `Display` writes.
    pub(crate) fn parse(s: &str) -> Result<SegmentHandle> {
        let bad = || {
            Error::new(
                ErrorKind::Protocol,
                format!("not a shared-memory name: {s:?}"),
            )
        };
        let mut it = s.rsplitn(3, '_');
        let (tag, len, loc) = (it.next(), it.next(), it.next());
        let (Some(tag), Some(len), Some(loc)) = (tag, len, loc) else {
            return Err(bad());
        };
        if tag.len() != 32 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let tag = [
            u64::from_str_radix(&tag[..16], 16).map_err(|_| bad())?,
            u64::from_str_radix(&tag[16..], 16).map_err(|_| bad())?,
        ];
        Ok(SegmentHandle {
            loc: Locator::parse(loc).ok_or_else(bad)?,
            len: u64::from_str_radix(len, 16).map_err(|_| bad())?,
            tag,
        })
    }
}

/// One process's mapping of a shared-memory segment. `Send + Sync`; the
/// memory goes away when the last mapping in any process goes.
pub(crate) struct Segment {
    map: Map,
    len: usize,
    tag: [u64; 2],
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("handle", &self.handle().to_string())
            .field("len", &self.len)
            .finish()
    }
}

/// The error for a segment another process shrank under us.
pub(crate) fn lost_error(what: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!(
            "shared memory {what} was shrunk by another process; this process's view of it \
             was replaced with zeros and is no longer shared"
        ),
    )
}

fn total_len(len: usize) -> Result<usize> {
    len.checked_add(HEADER_LEN)
        .filter(|&t| t <= isize::MAX as usize)
        .ok_or_else(|| Error::new(ErrorKind::NoSpace, format!("{len} bytes is too large")))
}

impl Segment {
    /// A new zero-filled segment of `len` data bytes, mode 0600, its space
    /// reserved where the OS can (`ErrorKind::NoSpace` when it is full).
    pub(crate) fn create(len: usize) -> Result<Segment> {
        let map = Map::create(total_len(len)?).map_err(|e| {
            let kind = if shm::is_no_space(&e) {
                ErrorKind::NoSpace
            } else {
                ErrorKind::Io
            };
            Error::new(kind, format!("create a {len}-byte shared-memory segment")).with_source(e)
        })?;
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| {
            Error::new(ErrorKind::Io, "random segment tag").with_source(e.to_string())
        })?;
        let tag = [
            u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            u64::from_le_bytes(bytes[8..].try_into().expect("8 bytes")),
        ];
        let seg = Segment { map, len, tag };
        let h = seg.header();
        h.len.store(len as u64, Ordering::Relaxed);
        h.tag[0].store(tag[0], Ordering::Relaxed);
        h.tag[1].store(tag[1], Ordering::Relaxed);
        // SYNC: Release pairs with the Acquire load of `magic` in `open`.
        // (A peer gets the handle only through IPC, which already orders
        // this; the pair keeps the header self-consistent regardless.)
        h.magic.store(MAGIC, Ordering::Release);
        Ok(seg)
    }

    /// Maps the segment `handle` names and checks it is that segment.
    ///
    /// Errors: `Io` when it cannot be mapped (its holder exited or dropped
    /// it), `Protocol` when something there does not match the handle.
    pub(crate) fn open(handle: &SegmentHandle) -> Result<Segment> {
        Segment::open_as(handle, false)
    }

    /// [`open`](Self::open), its pages left to be mapped in where they are
    /// used ([`prefault`](Self::prefault)): a pool worker touches only the
    /// chunks it runs, so it maps in only those.
    pub(crate) fn open_lazy(handle: &SegmentHandle) -> Result<Segment> {
        Segment::open_as(handle, true)
    }

    /// Maps in the pages of data bytes `[at, at + len)` (clipped to the
    /// segment) in one pass, instead of a fault per page on first touch.
    /// Best effort: where it fails, or off Linux, the pages fault in.
    pub(crate) fn prefault(&self, at: usize, len: usize) {
        let at = at.min(self.len);
        self.map.prefault(HEADER_LEN + at, len.min(self.len - at));
    }

    fn open_as(handle: &SegmentHandle, lazy: bool) -> Result<Segment> {
        let protocol = |what: &str| {
            Error::new(
                ErrorKind::Protocol,
                format!("shared-memory handle {handle} does not match the segment ({what})"),
            )
        };
        let len = usize::try_from(handle.len).map_err(|_| protocol("length"))?;
        let total = total_len(len).map_err(|_| protocol("length"))?;
        let map = if lazy {
            Map::open_lazy(&handle.loc, total)
        } else {
            Map::open(&handle.loc, total)
        };
        let map = map.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                protocol("file").with_source(e)
            } else {
                Error::new(
                    ErrorKind::Io,
                    format!(
                        "open shared-memory segment {handle} (is a process that holds it still alive?)"
                    ),
                )
                .with_source(e)
            }
        })?;
        let seg = Segment {
            map,
            len,
            tag: handle.tag,
        };
        let h = seg.header();
        // SYNC: Acquire pairs with the Release store of `magic` in `create`.
        if h.magic.load(Ordering::Acquire) != MAGIC {
            return Err(protocol("magic"));
        }
        if h.len.load(Ordering::Relaxed) != handle.len {
            return Err(protocol("length"));
        }
        let tag = [
            h.tag[0].load(Ordering::Relaxed),
            h.tag[1].load(Ordering::Relaxed),
        ];
        if tag != handle.tag {
            return Err(protocol("tag"));
        }
        Ok(seg)
    }

    fn header(&self) -> &Header {
        debug_assert!(self.map.map_len() >= HEADER_LEN);
        // SAFETY: the mapping is page aligned and at least HEADER_LEN bytes
        // (`total_len`), and `Header` is atomics only, so a shared reference
        // stays valid while peers write it concurrently.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    /// What a peer needs to open this segment; valid while this process
    /// holds it (Linux) or while its creator does (elsewhere).
    pub(crate) fn handle(&self) -> SegmentHandle {
        SegmentHandle {
            loc: self.map.locator(),
            len: self.len as u64,
            tag: self.tag,
        }
    }

    /// Data bytes, as requested at creation (not page rounded).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Start of the data: `len()` bytes, aligned to [`MAX_ALIGN`].
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr().wrapping_add(HEADER_LEN)
    }

    /// Whether another process shrank the segment under this mapping, which
    /// then holds private zeros and shares nothing any more (Linux; the
    /// other platforms cannot shrink a segment).
    pub(crate) fn lost(&self) -> bool {
        self.map.lost()
    }

    /// Whether the segment can be handed to a new peer as it is: not
    /// lost, still open to peers, its file still its full length (a check
    /// of now; a peer that holds it may still shrink it later).
    pub(crate) fn intact(&self) -> bool {
        self.map.intact()
    }

    /// `Err(Protocol)` once [`lost`](Self::lost): the error every blocking
    /// user of a segment returns instead of waiting on memory nobody else
    /// sees any more.
    pub(crate) fn check_intact(&self) -> Result<()> {
        if self.lost() {
            return Err(self.lost_error());
        }
        Ok(())
    }

    /// The error [`check_intact`](Self::check_intact) returns.
    pub(crate) fn lost_error(&self) -> Error {
        lost_error(&self.handle().to_string())
    }

    /// No new opens through this process's handles (Linux) or through the
    /// name (elsewhere). Mappings already made stay valid.
    pub(crate) fn unlink(&self) {
        self.map.unlink();
    }

    /// The data bytes, for the race-free copies and the atomic view.
    pub(crate) fn data(&self) -> Data<'_> {
        Data::of(&self.map, HEADER_LEN, self.len)
    }

    /// Copies data bytes `offset..` into `dst` ([`Data::load`]).
    ///
    /// # Panics
    ///
    /// If the range is not inside the data.
    pub(crate) fn load(&self, offset: usize, dst: &mut [u8]) {
        self.data().load(offset, dst);
    }

    /// Copies `src` into the data at `offset` ([`Data::store`]).
    ///
    /// # Panics
    ///
    /// If the range is not inside the data.
    pub(crate) fn store(&self, offset: usize, src: &[u8]) {
        self.data().store(offset, src);
    }
}

/// `len` data bytes inside one mapping, borrowed from the segment that owns
/// it: the one place that copies shared bytes in and out and views them as
/// atomics, for both kinds of segment (this file's and `named.rs`'s).
#[derive(Clone, Copy)]
pub(crate) struct Data<'a> {
    ptr: *mut u8,
    len: usize,
    _map: std::marker::PhantomData<&'a Map>,
}

impl<'a> Data<'a> {
    /// Bytes `offset..offset + len` of `map`.
    ///
    /// # Panics
    ///
    /// If they are not inside the mapping.
    pub(crate) fn of(map: &'a Map, offset: usize, len: usize) -> Data<'a> {
        assert!(
            offset.checked_add(len).is_some_and(|e| e <= map.map_len()),
            "data {offset}+{len} outside a mapping of {}",
            map.map_len()
        );
        Data {
            ptr: map.as_ptr().wrapping_add(offset),
            len,
            _map: std::marker::PhantomData,
        }
    }

    /// Start of the bytes in this process.
    pub(crate) fn as_ptr(self) -> *mut u8 {
        self.ptr
    }

    /// How many bytes.
    pub(crate) fn len(self) -> usize {
        self.len
    }

    /// The data as atomic bytes: always sound to share with peers.
    pub(crate) fn atomic_bytes(self) -> &'a [std::sync::atomic::AtomicU8] {
        // SAFETY: `len` bytes at `ptr` are inside the mapping (`of`), which
        // lives as long as the borrowed `Map`; `AtomicU8` has the size and
        // alignment of `u8` and may be written concurrently by anyone, in
        // this process or another.
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.len) }
    }

    /// Copies `dst.len()` bytes starting at data offset `offset` into `dst`.
    ///
    /// Each naturally aligned 1/2/4/8-byte piece is read with one atomic
    /// Acquire load, so a concurrent writer is no data race: a value of up
    /// to 8 bytes at its natural alignment is never torn, a larger one may
    /// mix old and new parts.
    ///
    /// # Panics
    ///
    /// If the range is not inside the data.
    pub(crate) fn load(self, offset: usize, dst: &mut [u8]) {
        self.check_range(offset, dst.len());
        let src = self.ptr.wrapping_add(offset);
        let mut i = 0;
        while i < dst.len() {
            let p = src.wrapping_add(i);
            let n = piece(p as usize, dst.len() - i);
            // SYNC: Acquire pairs with the Release stores in `store` (here
            // or in a peer), so what was written before them is visible.
            let out = &mut dst[i..i + n];
            match n {
                8 => {
                    // SAFETY: `p..p+8` is inside the mapped data
                    // (`check_range`, `of`), 8-aligned (`piece`), and this crate
                    // only ever accesses shared data atomically.
                    let a = unsafe { AtomicU64::from_ptr(p.cast()) };
                    out.copy_from_slice(&a.load(Ordering::Acquire).to_ne_bytes());
                }
                4 => {
                    // SAFETY: as above, for 4 bytes.
                    let a = unsafe { AtomicU32::from_ptr(p.cast()) };
                    out.copy_from_slice(&a.load(Ordering::Acquire).to_ne_bytes());
                }
                2 => {
                    // SAFETY: as above, for 2 bytes.
                    let a = unsafe { AtomicU16::from_ptr(p.cast()) };
                    out.copy_from_slice(&a.load(Ordering::Acquire).to_ne_bytes());
                }
                _ => {
                    // SAFETY: as above, for 1 byte.
                    let a = unsafe { AtomicU8::from_ptr(p) };
                    out[0] = a.load(Ordering::Acquire);
                }
            }
            i += n;
        }
    }

    /// Copies `src` into the data at `offset`, each aligned piece with one
    /// atomic Release store (see [`Segment::load`]).
    ///
    /// # Panics
    ///
    /// If the range is not inside the data.
    pub(crate) fn store(self, offset: usize, src: &[u8]) {
        self.check_range(offset, src.len());
        let dst = self.ptr.wrapping_add(offset);
        let mut i = 0;
        while i < src.len() {
            let p = dst.wrapping_add(i);
            let n = piece(p as usize, src.len() - i);
            let b = &src[i..i + n];
            // SYNC: Release pairs with the Acquire loads in `load`.
            match n {
                8 => {
                    // SAFETY: `p..p+8` is inside the mapped data
                    // (`check_range`, `of`), 8-aligned (`piece`), and this crate
                    // only ever accesses shared data atomically.
                    let a = unsafe { AtomicU64::from_ptr(p.cast()) };
                    a.store(
                        u64::from_ne_bytes(b.try_into().expect("8")),
                        Ordering::Release,
                    );
                }
                4 => {
                    // SAFETY: as above, for 4 bytes.
                    let a = unsafe { AtomicU32::from_ptr(p.cast()) };
                    a.store(
                        u32::from_ne_bytes(b.try_into().expect("4")),
                        Ordering::Release,
                    );
                }
                2 => {
                    // SAFETY: as above, for 2 bytes.
                    let a = unsafe { AtomicU16::from_ptr(p.cast()) };
                    a.store(
                        u16::from_ne_bytes(b.try_into().expect("2")),
                        Ordering::Release,
                    );
                }
                _ => {
                    // SAFETY: as above, for 1 byte.
                    let a = unsafe { AtomicU8::from_ptr(p) };
                    a.store(b[0], Ordering::Release);
                }
            }
            i += n;
        }
    }

    fn check_range(self, offset: usize, n: usize) {
        let end = offset.checked_add(n);
        assert!(
            end.is_some_and(|e| e <= self.len),
            "range {offset}..{offset}+{n} out of bounds of a shared segment of {} bytes",
            self.len
        );
    }
}

/// The largest of 8/4/2/1 that `addr` is aligned to and `left` can hold.
fn piece(addr: usize, left: usize) -> usize {
    [8, 4, 2]
        .into_iter()
        .find(|&n| addr.is_multiple_of(n) && left >= n)
        .unwrap_or(1)
}

// ------------------------------------------------------- typed in-place views

/// A type that may be viewed in place in a segment that other processes
/// write concurrently: the one way the crate looks at shared memory as a
/// Rust type (queue headers, synchronisation blocks, the doorbell, the
/// ring's header and frame words), always through [`view`].
///
/// Declare such types with [`in_place!`], which checks every field at
/// compile time; the implementations here are the building blocks.
///
/// # Safety
/// Implementors must be valid for every bit pattern another process may
/// write (atomic integers are; `AtomicBool` is not), reachable only
/// through atomics (so shared mutation through `&` is sound across
/// processes), `#[repr(C)]` or an array, and aligned to at most
/// [`MAX_ALIGN`].
pub(crate) unsafe trait InPlace: Sync {}

// SAFETY: atomic integers: any bit pattern is a valid value, and every
// access is atomic; alignments 1 to 8.
unsafe impl InPlace for std::sync::atomic::AtomicU8 {}
// SAFETY: as above.
unsafe impl InPlace for std::sync::atomic::AtomicU16 {}
// SAFETY: as above.
unsafe impl InPlace for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl InPlace for std::sync::atomic::AtomicU64 {}
// SAFETY: as above.
unsafe impl InPlace for std::sync::atomic::AtomicI32 {}
// SAFETY: as above.
unsafe impl InPlace for std::sync::atomic::AtomicI64 {}
// SAFETY: an array of in-place values is laid out as its elements, with
// their alignment, and every element is valid for any bits.
unsafe impl<T: InPlace, const N: usize> InPlace for [T; N] {}

/// One cache line, so that processes writing different fields of a
/// shared type do not write the same line.
#[repr(C, align(64))]
pub(crate) struct Line<T>(pub(crate) T);

// SAFETY: `#[repr(C, align(64))]` around one in-place value: the padding
// is never read, the value is valid for any bits, alignment 64 =
// MAX_ALIGN.
unsafe impl<T: InPlace> InPlace for Line<T> {}

/// Declares a `#[repr(C)]` struct that may be viewed in place in shared
/// memory ([`InPlace`]). Every field's type must be `InPlace` itself,
/// which the compiler checks (a plain integer, a pointer, a `bool` or an
/// `AtomicBool` is refused), so the declaring file needs no `unsafe`.
///
/// A struct generic over one parameter (the ring's header, generic over
/// its memory for loom) is `InPlace` for each argument that makes every
/// field `InPlace`. It takes doc comments only, so no attribute can raise
/// its alignment above its fields' (at most [`MAX_ALIGN`] each).
macro_rules! in_place {
    (
        $(#[doc = $doc:expr])*
        $vis:vis struct $name:ident<$g:ident: $bound:path> {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        #[repr(C)]
        $vis struct $name<$g: $bound> {
            $( $(#[$fmeta])* $fvis $field : $ty ),*
        }

        // SAFETY: `#[repr(C)]` (above), every field is `InPlace` (the
        // bounds below), and no attribute but docs is accepted, so the
        // alignment is the largest field's, at most MAX_ALIGN.
        #[allow(unsafe_code)]
        unsafe impl<$g: $bound> $crate::segment::InPlace for $name<$g>
        where
            $( $ty: $crate::segment::InPlace ),*
        {}
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field : $ty ),*
        }

        // SAFETY: `#[repr(C)]` (above), every field is `InPlace` (the
        // bounds below are checked: a trivially false one is an error),
        // and the alignment is checked below.
        #[allow(unsafe_code)]
        unsafe impl $crate::segment::InPlace for $name
        where
            $( $ty: $crate::segment::InPlace ),*
        {}

        const _: () = assert!(std::mem::align_of::<$name>() <= $crate::segment::MAX_ALIGN);
    };
}
pub(crate) use in_place;

/// Shared memory at `ptr` as an `H`: the one place the crate turns shared
/// bytes into a Rust reference. [`Typed::get`] views a segment's start
/// with it; the ring views its header and frame words with it directly
/// (a ring lives in a region, often one of several in a segment, and
/// keeps its base address at hand: a `Typed` would add a pointer chase to
/// every push and pop).
///
/// `H: InPlace` is what makes a shared reference sound while other
/// processes write: any bits are a valid `H` and every access is atomic.
/// A segment another process shrank is replaced by zeroed private memory
/// (`sys::sigbus`), still a valid `H`.
///
/// # Safety
///
/// `ptr` is aligned for `H` and points to `size_of::<H>()` bytes that
/// stay mapped (or allocated) for all of `'a`, and that nobody, in this
/// process or another, accesses other than atomically meanwhile.
#[inline(always)]
pub(crate) unsafe fn view<'a, H: InPlace>(ptr: *const u8) -> &'a H {
    // SAFETY: aligned, in bounds and live for 'a (the caller's promise);
    // valid for any bits and only accessed atomically (`H: InPlace` and
    // the caller's promise), so sharing `&H` with concurrent writers in
    // this process or another is sound.
    unsafe { &*ptr.cast::<H>() }
}

/// A segment whose data starts with an `H`: the checked, typed view.
pub(crate) struct Typed<H> {
    segment: std::sync::Arc<Segment>,
    _view: std::marker::PhantomData<fn() -> H>,
}

impl<H> Clone for Typed<H> {
    fn clone(&self) -> Self {
        Typed {
            segment: std::sync::Arc::clone(&self.segment),
            _view: std::marker::PhantomData,
        }
    }
}

impl<H: InPlace> Typed<H> {
    /// Views `segment`'s data as an `H`; a `Protocol` error if it is too
    /// small (a peer's handle can name any segment).
    pub(crate) fn new(segment: std::sync::Arc<Segment>) -> Result<Typed<H>> {
        if segment.len() < std::mem::size_of::<H>() {
            return Err(Error::new(
                ErrorKind::Protocol,
                "the segment is too small for what its handle says it holds",
            ));
        }
        // Data starts HEADER_LEN (= MAX_ALIGN) bytes into a page-aligned
        // mapping, and `InPlace` types are aligned to at most MAX_ALIGN.
        debug_assert!((segment.as_ptr() as usize).is_multiple_of(std::mem::align_of::<H>()));
        Ok(Typed {
            segment,
            _view: std::marker::PhantomData,
        })
    }

    /// The shared value.
    pub(crate) fn get(&self) -> &H {
        // SAFETY: the data holds at least `size_of::<H>()` bytes (checked
        // in `new`), aligned for `H` (MAX_ALIGN, see `new`), and stays
        // mapped while `self.segment` lives, which outlives the borrow.
        unsafe { view(self.segment.as_ptr()) }
    }

    /// The segment itself.
    pub(crate) fn segment(&self) -> &std::sync::Arc<Segment> {
        &self.segment
    }
}

/// A sub-range of a segment, as the memory a ring lives in.
pub(crate) struct SegmentRegion {
    segment: std::sync::Arc<Segment>,
    offset: usize,
    len: usize,
}

impl SegmentRegion {
    /// Bytes `[offset, offset + len)` of `segment`'s data, 64-aligned;
    /// `None` if the range does not fit or is misaligned.
    pub(crate) fn new(
        segment: &std::sync::Arc<Segment>,
        offset: usize,
        len: usize,
    ) -> Option<SegmentRegion> {
        let end = offset.checked_add(len)?;
        (end <= segment.len() && offset.is_multiple_of(crate::region::REGION_ALIGN)).then(|| {
            SegmentRegion {
                segment: std::sync::Arc::clone(segment),
                offset,
                len,
            }
        })
    }
}

// SAFETY: `[offset, offset + len)` lies inside the segment's data (checked
// by `new`), which starts 64-aligned and which the `Arc` keeps mapped; a
// fresh mapping is zeroed; users reach it only through atomics and raw
// copies.
unsafe impl crate::region::Region for SegmentRegion {
    fn base(&self) -> *mut u8 {
        self.segment.as_ptr().wrapping_add(self.offset)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn lost(&self) -> bool {
        self.segment.lost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_open_shares_data_and_header_is_hidden() {
        let a = Segment::create(100).unwrap();
        assert_eq!(a.len(), 100);
        assert_eq!(a.as_ptr() as usize % MAX_ALIGN, 0);
        a.store(3, b"hello, segment");
        let b = Segment::open(&a.handle()).unwrap();
        assert_eq!(b.len(), 100);
        let mut out = [0u8; 14];
        b.load(3, &mut out);
        assert_eq!(&out, b"hello, segment");
        assert!(a.data().atomic_bytes()[..3]
            .iter()
            .all(|x| x.load(Ordering::Relaxed) == 0));
    }

    /// Resident kilobytes of this process's mapping that starts at `start`
    /// (its page-table entries, for a shared mapping), from
    /// `/proc/self/smaps`.
    #[cfg(target_os = "linux")]
    fn rss_kb(start: usize) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{start:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
        assert!(lines.next().is_some(), "no mapping at {start:x}");
        let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_lazy_mapping_maps_in_only_what_is_prefaulted() {
        let len = 4 << 20;
        let a = Segment::create(len).unwrap();
        a.store(len - 10, b"end");
        // A full open maps every page in at once.
        let full = Segment::open(&a.handle()).unwrap();
        let start = |s: &Segment| s.as_ptr() as usize - HEADER_LEN;
        assert!(rss_kb(start(&full)) >= len / 1024);
        drop(full);
        // A lazy one maps in only its header: the page read and the
        // kernel's fault-around, the aligned 64 KiB window (its default
        // `fault_around_bytes`) about each faulting page. Where that window
        // falls depends on where the mapping was placed, so a prefaulted
        // range brings in up to a window less a page on either side.
        const AROUND_KB: usize = 64;
        let lazy = Segment::open_lazy(&a.handle()).unwrap();
        let before = rss_kb(start(&lazy));
        assert!(before <= AROUND_KB, "{before} KiB");
        lazy.prefault(1 << 20, 1 << 20);
        let rss = rss_kb(start(&lazy));
        assert!(
            (1024..=1024 + 2 * AROUND_KB).contains(&(rss - before)),
            "{before} KiB, then {rss} KiB"
        );
        // Past the end is clipped, and the data is the same memory. (The
        // last 100 bytes straddle the mapping's last two pages.)
        lazy.prefault(len - 100, 1 << 30);
        let mut end = [0u8; 3];
        lazy.load(len - 10, &mut end);
        assert_eq!(&end, b"end");
        let last = rss_kb(start(&lazy));
        assert!(last <= rss + 2 * AROUND_KB, "{rss} KiB, then {last} KiB");
        assert!(last < len / 1024 / 2, "{last} KiB");
    }

    #[test]
    fn zero_length_segment_works() {
        let a = Segment::create(0).unwrap();
        let b = Segment::open(&a.handle()).unwrap();
        assert_eq!(b.len(), 0);
        b.load(0, &mut []);
    }

    #[test]
    fn wrong_tag_or_length_is_a_protocol_error() {
        let a = Segment::create(64).unwrap();
        let mut h = a.handle();
        h.tag[1] ^= 1;
        assert_eq!(Segment::open(&h).unwrap_err().kind(), ErrorKind::Protocol);
        let mut h = a.handle();
        h.len = 128;
        assert_eq!(Segment::open(&h).unwrap_err().kind(), ErrorKind::Protocol);
        let mut h = a.handle();
        h.len = u64::MAX;
        assert_eq!(Segment::open(&h).unwrap_err().kind(), ErrorKind::Protocol);
    }

    #[test]
    fn dropped_or_unlinked_segment_cannot_be_opened() {
        let a = Segment::create(64).unwrap();
        let h = a.handle();
        a.unlink();
        // Windows removes the name only when the creator drops it.
        if !cfg!(windows) {
            assert!(Segment::open(&h).is_err());
        }
        drop(a);
        assert!(Segment::open(&h).is_err());
    }

    #[test]
    fn handle_text_round_trips_and_rejects_garbage() {
        let a = Segment::create(10).unwrap();
        let h = a.handle();
        assert_eq!(SegmentHandle::parse(&h.to_string()).unwrap(), h);
        let s = h.to_string();
        for bad in [
            "",
            "x",
            "a_b_c",
            &s[..s.len() - 1],
            &format!("{s}0"),
            &s.replace('_', "-"),
        ] {
            assert_eq!(
                SegmentHandle::parse(bad).unwrap_err().kind(),
                ErrorKind::Protocol,
                "{bad}"
            );
        }
    }

    #[test]
    fn unaligned_copies_cover_every_piece_size() {
        let a = Segment::create(64).unwrap();
        let src: Vec<u8> = (1..=40).collect();
        for off in 0..9 {
            a.store(0, &[0; 64]);
            a.store(off, &src[..31]);
            let mut out = [0u8; 31];
            a.load(off, &mut out);
            assert_eq!(&out[..], &src[..31]);
        }
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn out_of_range_copy_panics() {
        let a = Segment::create(8).unwrap();
        a.store(4, &[0; 5]);
    }

    #[test]
    fn too_large_is_no_space() {
        let e = Segment::create(usize::MAX - 10).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSpace);
    }
}
