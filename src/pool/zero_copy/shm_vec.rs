//! `ShmVec<T>`: a vector in shared memory that one process owns, the
//! buffer of the pool's zero-copy maps.
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use bytemuck::Pod;

use crate::error::{Error, ErrorKind, Result};
use crate::segment::Segment;

/// A `Vec`-like buffer of `Pod` values in shared memory, owned by this
/// process: the input and output of [`Pool`](crate::Pool)'s zero-copy maps.
///
/// It dereferences to `[T]`, so it is read and written like a slice. It is
/// not `Clone` and cannot be sent to another process: the only other
/// processes that touch it are the pool's workers, and only during a pool
/// call that borrows it (`&` for an input, `&mut` for an output), so Rust's
/// borrow rules hold across processes too. Workers map it once and keep
/// the mapping for later calls (until this value is dropped); the memory is
/// reserved and its page tables filled when it is made, so no call pays
/// page faults on it.
///
/// Python counterpart: a NumPy array over `multiprocessing.shared_memory`
/// handed to `Pool.map` workers by name — without the name, the copying or
/// the manual cleanup.
///
/// ```
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let pool = multiproc::Pool::new(2)?;
///     let input = multiproc::ShmVec::from_slice(&[1.0f64, 2.0, 3.0])?;
///     let mut output = multiproc::ShmVec::<f64>::zeroed(3)?;
///     pool.map_elements(|x: f64| x * x + 1.0, &input, &mut output)?;
///     assert_eq!(&output[..], &[2.0, 5.0, 10.0]);
///     Ok(())
/// }
/// ```
pub struct ShmVec<T> {
    pub(crate) segment: Arc<Segment>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> ShmVec<T> {
    /// `len` zeroed elements.
    ///
    /// # Errors
    /// [`ErrorKind::NoSpace`] when the shared-memory space is full,
    /// [`ErrorKind::Io`] when the OS refuses the segment.
    ///
    /// ```
    /// let v = multiproc::ShmVec::<u32>::zeroed(1000).unwrap();
    /// assert!(v.iter().all(|&x| x == 0));
    /// ```
    pub fn zeroed(len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::new(ErrorKind::NoSpace, format!("{len} elements is too many")))?;
        // The segment's data starts 64-aligned (page-aligned mapping plus a
        // 64-byte header), enough for any `Pod` type that is not
        // over-aligned beyond a cache line.
        if std::mem::align_of::<T>() > 64 {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "ShmVec supports element alignment up to 64 bytes",
            ));
        }
        Ok(ShmVec {
            segment: Arc::new(Segment::create(bytes)?),
            len,
            _t: PhantomData,
        })
    }

    /// A copy of `items`.
    ///
    /// # Errors
    /// As [`zeroed`](ShmVec::zeroed).
    ///
    /// ```
    /// let v = multiproc::ShmVec::from_slice(&[1u8, 2, 3]).unwrap();
    /// assert_eq!(v.to_vec(), vec![1, 2, 3]);
    /// ```
    pub fn from_slice(items: &[T]) -> Result<Self> {
        let mut v = Self::zeroed(items.len())?;
        v.copy_from_slice(items);
        Ok(v)
    }

    /// `len` elements over a segment that held another `ShmVec` before
    /// (the cluster reuses its transfer buffers across calls). `None` if
    /// the segment is too small or `T` over-aligned.
    #[cfg(feature = "mpi")]
    pub(crate) fn over(segment: Arc<Segment>, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        (bytes <= segment.len() && std::mem::align_of::<T>() <= 64).then_some(ShmVec {
            segment,
            len,
            _t: PhantomData,
        })
    }

    /// The segment, for reuse by [`over`](ShmVec::over).
    #[cfg(feature = "mpi")]
    pub(crate) fn into_segment(self) -> Arc<Segment> {
        self.segment
    }

    /// Number of elements.
    ///
    /// ```
    /// assert_eq!(multiproc::ShmVec::<f32>::zeroed(7).unwrap().len(), 7);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when it holds no elements.
    ///
    /// ```
    /// assert!(multiproc::ShmVec::<f32>::zeroed(0).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }
}

impl<T: Pod> Deref for ShmVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the segment holds `len * size_of::<T>()` data bytes,
        // 64-aligned (checked against `align_of::<T>()` in `zeroed` and
        // `over`), mapped while the `Arc` lives, initialised (zero-filled,
        // then written only as `Pod` values, `T`s or, for a reused segment,
        // another `Pod` type) and every bit pattern is a valid `T` (`Pod`). No other
        // process writes it while this shared borrow lives: the handle is
        // never given out, and pool workers write it only during a pool
        // call that holds `&mut self`.
        unsafe { std::slice::from_raw_parts(self.segment.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Pod> DerefMut for ShmVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `deref`; `&mut self` proves no other borrow of the
        // elements exists in this process, and workers touch it only during
        // pool calls, which borrow it themselves.
        unsafe { std::slice::from_raw_parts_mut(self.segment.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for ShmVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Copies `src` to byte `at` of a pool-owned arena segment.
pub(crate) fn copy_in_at(arena: &Segment, at: usize, src: &[u8]) {
    assert!(
        at.checked_add(src.len())
            .is_some_and(|end| end <= arena.len()),
        "arena too small"
    );
    // SAFETY: the arena's data has at least `at + src.len()` bytes
    // (asserted) and is mapped while `arena` lives. No other party reads or
    // writes these bytes meanwhile: outside a pool call nobody touches a
    // pool arena, and during a map through it (`raw_map.rs`,
    // `map_windowed`) the writer fills only the places of items it has not
    // published (`Fill`), so no chunk over them is out; a place whose item
    // is a window's length further on is written only after that earlier
    // item's chunk came back and its result was copied out. `src` is
    // ordinary memory, so the ranges are disjoint.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), arena.as_ptr().wrapping_add(at), src.len())
    };
}

/// Bytes `[at, at + len)` of a pool-owned arena segment, to copy out
/// while a map through it runs, when every chunk over this range is back
/// (`Fill::done`, read under the pool's lock: `raw_map.rs`), or after it
/// ended, so that no worker writes them any more.
pub(crate) fn arena_range(arena: &Segment, at: usize, len: usize) -> &[u8] {
    assert!(
        at.checked_add(len).is_some_and(|end| end <= arena.len()),
        "arena too small"
    );
    // SAFETY: in bounds (asserted) of a mapping that lives as long as
    // `arena` (the borrow ties the slice to it); initialised (a segment is
    // zeroed at creation and holds only bytes); nobody writes these bytes
    // while the slice lives: by the caller's contract no chunk over them is
    // out (the call returned, or their chunks are back), workers write only
    // the chunks they hold, and the parent, the only writer of input, does
    // not write while it holds this slice (`map_windowed` copies a range
    // out before it writes new items into its places).
    unsafe { std::slice::from_raw_parts(arena.as_ptr().wrapping_add(at), len) }
}
