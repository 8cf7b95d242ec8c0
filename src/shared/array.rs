//! [`SharedArray`]: a fixed-length array of plain-data elements in its own
//! segment (Python `Array`/`RawArray`), with an optional lock, safe copies
//! in and out, atomics for integers and the `unsafe` slice views. Its doc
//! holds the sharing rules the other two types link to.
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::Arc;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{check_layout, open_with_lock, SharedAtomic};
use crate::error::{Error, ErrorKind, Result};
use crate::segment::Segment;
use crate::sync::Lock;

/// A fixed-length array of plain-data elements in shared memory.
///
/// Python counterpart: `multiprocessing.Array('d', n)` and `RawArray`
/// (`sharedctypes`). Indexing is [`get`](Self::get) / [`set`](Self::set),
/// slices are [`read_at`](Self::read_at) / [`write_at`](Self::write_at) /
/// [`to_vec`](Self::to_vec); for integer elements
/// [`as_atomic`](Self::as_atomic) gives `&[AtomicU64]` & co.
///
/// # Sharing rules
///
/// - `Clone` shares the array. Serialising it (passing it to a child as an
///   argument) sends a handle; the receiver maps the same memory while it
///   deserialises. A handle can be opened only while the process that sent
///   it still holds the array (on Linux that process's own mapping is the
///   way in; elsewhere the creator's name is): keep your clone until the
///   child has started its task — joining it, or just keeping the array in
///   scope, does that. A handle that can no longer be opened is an error
///   in the receiver, never a wrong mapping.
/// - The memory is freed when the last handle in any process is dropped.
///   On Linux nothing is ever left behind, even when processes are killed
///   with SIGKILL; on macOS and Windows a *creator* killed that way leaves
///   its segment's name behind (see "Segments" in
///   [ARCHITECTURE.md](https://github.com/multiproc-rs/multiproc/blob/main/docs/ARCHITECTURE.md)).
/// - The safe accessors never cause undefined behaviour, even while other
///   processes write the same elements: every naturally aligned piece of up
///   to 8 bytes is copied with one atomic access (Acquire loads, Release
///   stores). So an element of up to 8 bytes is never torn; a larger one
///   may be read half old, half new. Like Python's `RawArray`, several
///   writers of the *same* elements need synchronisation for results that
///   mean something; writers of disjoint elements need none.
/// - [`as_slice`](Self::as_slice) / [`as_mut_slice`](Self::as_mut_slice)
///   give plain slices for speed, but are `unsafe`: a `&[T]` promises the
///   compiler that nothing changes the elements while it lives, and
///   `&mut self` cannot see the other handles (clones in this process, the
///   copies in other processes) that could. You promise it instead.
///
/// ```
/// use multiproc::{Process, SharedArray};
///
/// fn fill(args: (SharedArray<u64>, usize, usize)) {
///     let (arr, start, end) = args;
///     for i in start..end {
///         arr.set(i, (i * i) as u64);
///     }
/// }
///
/// fn main() {
///     multiproc::init();
///     let arr = SharedArray::<u64>::new(100).unwrap();
///     let a = Process::spawn(fill, (arr.clone(), 0, 50)).unwrap();
///     let b = Process::spawn(fill, (arr.clone(), 50, 100)).unwrap();
///     a.join().unwrap();
///     b.join().unwrap();
///     assert_eq!(arr.get(7), Some(49));
///     assert_eq!(arr.to_vec().iter().sum::<u64>(), (0..100u64).map(|i| i * i).sum());
/// }
/// ```
pub struct SharedArray<T> {
    seg: Arc<Segment>,
    len: usize,
    /// Python's `Array(lock=True)`: a lock that travels with the array.
    lock: Option<Lock>,
    _t: PhantomData<T>,
}

impl<T> SharedArray<T> {
    /// The segment holding the elements (for the pool's zero-copy maps).
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }
}

impl<T: Pod> SharedArray<T> {
    /// Whether another process shrank this array's shared memory under us.
    ///
    /// On Linux anyone who can open a segment can `ftruncate` it, and
    /// touching the lost pages would kill this process with `SIGBUS`. The
    /// crate catches that fault instead: it replaces the whole mapping with
    /// private zeros, so the access goes on, and from then on reads give
    /// zeros and writes reach nobody. This says whether that happened; the
    /// crate's blocking objects (locks, queues, pipes, the pool) turn it
    /// into an [`ErrorKind::Protocol`] error themselves. Always `false` on
    /// Windows and macOS, where a segment cannot shrink. Python has no
    /// counterpart: there the reader dies of `SIGBUS`.
    ///
    /// ```
    /// let x = multiproc::SharedArray::<u32>::new(4).unwrap();
    /// assert!(!x.is_lost());
    /// ```
    pub fn is_lost(&self) -> bool {
        self.seg.lost()
    }

    /// A new array of `len` zeroed elements (Python: `Array('q', n)`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoSpace`] when shared memory is exhausted or the size
    /// overflows, [`ErrorKind::Io`] for other OS errors.
    ///
    /// ```
    /// let a = multiproc::SharedArray::<f32>::new(3).unwrap();
    /// assert_eq!(a.to_vec(), [0.0; 3]);
    /// ```
    pub fn new(len: usize) -> Result<Self> {
        check_layout::<T>();
        let bytes = len.checked_mul(size_of::<T>()).ok_or_else(|| {
            Error::new(
                ErrorKind::NoSpace,
                format!("an array of {len} elements is too large"),
            )
        })?;
        Ok(SharedArray {
            seg: Arc::new(Segment::create(bytes)?),
            len,
            lock: None,
            _t: PhantomData,
        })
    }

    /// A new array holding a copy of `items` (Python: `Array('q', [1, 2])`).
    ///
    /// # Errors
    ///
    /// As [`SharedArray::new`].
    ///
    /// ```
    /// let a = multiproc::SharedArray::from_slice(&[1i16, 2, 3]).unwrap();
    /// assert_eq!(a.len(), 3);
    /// assert_eq!(a.get(2), Some(3));
    /// ```
    pub fn from_slice(items: &[T]) -> Result<Self> {
        let a = Self::new(items.len())?;
        a.copy_from_slice(items);
        Ok(a)
    }

    /// Like [`new`](Self::new), plus a [`Lock`] that travels with the
    /// array (Python's `Array(typecode, n, lock=True)`, whose default this
    /// is; [`new`](Self::new) is `RawArray`).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// ```
    /// let a = multiproc::SharedArray::<f64>::with_lock(4).unwrap();
    /// let _g = a.get_lock().unwrap().lock().unwrap();
    /// a.set(0, 1.0);
    /// ```
    pub fn with_lock(len: usize) -> Result<Self> {
        let mut a = Self::new(len)?;
        a.lock = Some(Lock::new()?);
        Ok(a)
    }

    /// The array's lock, if it was made [`with_lock`](Self::with_lock)
    /// (Python's `get_lock()`).
    ///
    /// ```
    /// assert!(multiproc::SharedArray::<u8>::new(1).unwrap().get_lock().is_none());
    /// ```
    pub fn get_lock(&self) -> Option<&Lock> {
        self.lock.as_ref()
    }

    /// Number of elements (Python: `len(a)`).
    ///
    /// ```
    /// assert_eq!(multiproc::SharedArray::<u8>::new(9).unwrap().len(), 9);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when the array has no elements.
    ///
    /// ```
    /// assert!(multiproc::SharedArray::<u8>::new(0).unwrap().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i`, or `None` when `i >= len()` (Python: `a[i]`).
    ///
    /// ```
    /// let a = multiproc::SharedArray::from_slice(&[10u32, 20]).unwrap();
    /// assert_eq!(a.get(1), Some(20));
    /// assert_eq!(a.get(2), None);
    /// ```
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.len).then(|| {
            let mut v = T::zeroed();
            self.seg
                .load(i * size_of::<T>(), bytemuck::bytes_of_mut(&mut v));
            v
        })
    }

    /// Sets element `i` (Python: `a[i] = v`).
    ///
    /// # Panics
    ///
    /// If `i >= len()`, like indexing a slice.
    ///
    /// ```
    /// let a = multiproc::SharedArray::<u32>::new(2).unwrap();
    /// a.set(1, 5);
    /// assert_eq!(a.to_vec(), [0, 5]);
    /// ```
    pub fn set(&self, i: usize, value: T) {
        self.check(i, 1);
        self.seg
            .store(i * size_of::<T>(), bytemuck::bytes_of(&value));
    }

    /// Copies elements `start..start + dst.len()` into `dst`
    /// (Python: `dst = a[start:end]`).
    ///
    /// # Panics
    ///
    /// If the range is not inside the array.
    ///
    /// ```
    /// let a = multiproc::SharedArray::from_slice(&[1u8, 2, 3, 4]).unwrap();
    /// let mut two = [0u8; 2];
    /// a.read_at(1, &mut two);
    /// assert_eq!(two, [2, 3]);
    /// ```
    pub fn read_at(&self, start: usize, dst: &mut [T]) {
        self.check(start, dst.len());
        self.seg
            .load(start * size_of::<T>(), bytemuck::cast_slice_mut(dst));
    }

    /// Copies `src` into elements `start..start + src.len()`
    /// (Python: `a[start:end] = src`).
    ///
    /// # Panics
    ///
    /// If the range is not inside the array.
    ///
    /// ```
    /// let a = multiproc::SharedArray::<u8>::new(4).unwrap();
    /// a.write_at(2, &[7, 8]);
    /// assert_eq!(a.to_vec(), [0, 0, 7, 8]);
    /// ```
    pub fn write_at(&self, start: usize, src: &[T]) {
        self.check(start, src.len());
        self.seg
            .store(start * size_of::<T>(), bytemuck::cast_slice(src));
    }

    /// Copies the whole array into `dst` (Python: `a[:]`).
    ///
    /// # Panics
    ///
    /// If `dst.len() != self.len()`, like [`slice::copy_from_slice`].
    ///
    /// ```
    /// let a = multiproc::SharedArray::from_slice(&[1.0f64, 2.0]).unwrap();
    /// let mut out = [0.0; 2];
    /// a.copy_to_slice(&mut out);
    /// assert_eq!(out, [1.0, 2.0]);
    /// ```
    pub fn copy_to_slice(&self, dst: &mut [T]) {
        assert_eq!(
            dst.len(),
            self.len,
            "destination and shared array lengths differ"
        );
        self.read_at(0, dst);
    }

    /// Overwrites the whole array with `src` (Python: `a[:] = src`).
    ///
    /// # Panics
    ///
    /// If `src.len() != self.len()`, like [`slice::copy_from_slice`].
    ///
    /// ```
    /// let a = multiproc::SharedArray::<i64>::new(2).unwrap();
    /// a.copy_from_slice(&[-1, 1]);
    /// assert_eq!(a.to_vec(), [-1, 1]);
    /// ```
    pub fn copy_from_slice(&self, src: &[T]) {
        assert_eq!(
            src.len(),
            self.len,
            "source and shared array lengths differ"
        );
        self.write_at(0, src);
    }

    /// A copy of the whole array (Python: `a[:]` / `list(a)`).
    ///
    /// ```
    /// let a = multiproc::SharedArray::from_slice(&[3u16, 4]).unwrap();
    /// assert_eq!(a.to_vec(), vec![3, 4]);
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        let mut v = vec![T::zeroed(); self.len];
        self.read_at(0, &mut v);
        v
    }

    /// Pointer to the first element in this process's mapping (64-byte
    /// aligned), valid while `self` (or a clone) lives. Accesses through it
    /// race with other processes: use atomics or volatile, or synchronise.
    ///
    /// ```
    /// let a = multiproc::SharedArray::<u64>::new(4).unwrap();
    /// assert_eq!(a.as_ptr() as usize % 64, 0);
    /// ```
    pub fn as_ptr(&self) -> *mut T {
        self.seg.as_ptr().cast()
    }

    /// The elements as a plain slice.
    ///
    /// # Safety
    ///
    /// While the returned slice lives, nothing may write any element of the
    /// array: not this process (through a clone, [`set`](Self::set),
    /// [`write_at`](Self::write_at), [`as_atomic`](Self::as_atomic) or
    /// [`as_ptr`](Self::as_ptr)) and no other process holding it. Reading
    /// is fine. The usual way to know: the processes that wrote it have
    /// been joined and none runs that could write, or every writer holds a
    /// lock that you hold for the slice's lifetime.
    ///
    /// ```
    /// use multiproc::SharedArray;
    /// let a = SharedArray::from_slice(&[1u32, 2, 3]).unwrap();
    /// // SAFETY: no other handle exists, so nothing writes meanwhile.
    /// let s = unsafe { a.as_slice() };
    /// assert_eq!(s.iter().sum::<u32>(), 6);
    /// ```
    pub unsafe fn as_slice(&self) -> &[T] {
        // SAFETY: `len` elements at a 64-aligned address (≥ align_of::<T>,
        // `check_layout`), mapped while `self` lives, initialised (segments
        // start zeroed and `T: Pod` accepts any bytes); no writes while the
        // slice lives is the caller's promise.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// The elements as a plain mutable slice, for full-speed writes.
    ///
    /// `&mut self` stops this handle from being used meanwhile, but not
    /// its clones here or the handles other processes hold, hence `unsafe`.
    ///
    /// # Safety
    ///
    /// While the returned slice lives, nothing else may read or write any
    /// element of the array: not this process through another handle, and
    /// no other process. The usual way to know: this process is the only
    /// one using the array during that time (for example the parent before
    /// it starts the children that get it, or after it joined them), or all
    /// users take a lock that you hold for the slice's lifetime. Children
    /// that fill disjoint parts at the same time should use the safe
    /// [`write_at`](Self::write_at) instead.
    ///
    /// ```
    /// use multiproc::SharedArray;
    /// let mut a = SharedArray::<u64>::new(1000).unwrap();
    /// // SAFETY: no other handle exists yet.
    /// let s = unsafe { a.as_mut_slice() };
    /// for (i, x) in s.iter_mut().enumerate() {
    ///     *x = i as u64;
    /// }
    /// assert_eq!(a.get(999), Some(999));
    /// ```
    pub unsafe fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`; exclusive access for the slice's
        // lifetime is the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len) }
    }

    fn check(&self, start: usize, n: usize) {
        assert!(
            start.checked_add(n).is_some_and(|end| end <= self.len),
            "range {start}..{start}+{n} out of bounds of a shared array of {} elements",
            self.len
        );
    }
}

impl<T: SharedAtomic> SharedArray<T> {
    /// The elements as atomics: safe, shareable, any operation and
    /// ordering (Python has no equivalent; there you take the lock).
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let a = multiproc::SharedArray::<u32>::new(4).unwrap();
    /// a.as_atomic()[2].fetch_add(5, Ordering::Relaxed);
    /// assert_eq!(a.to_vec(), [0, 0, 5, 0]);
    /// ```
    pub fn as_atomic(&self) -> &[T::Atomic] {
        // SAFETY: `len` elements of `T` at a 64-aligned address, mapped
        // while `self` lives; `T::Atomic` has `T`'s size and an alignment ≤
        // that size (asserted per type), so every element is aligned for
        // it; atomics may be written concurrently by any process.
        unsafe { std::slice::from_raw_parts(self.seg.as_ptr().cast::<T::Atomic>(), self.len) }
    }
}

impl<T> Clone for SharedArray<T> {
    fn clone(&self) -> Self {
        SharedArray {
            seg: Arc::clone(&self.seg),
            len: self.len,
            lock: self.lock.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for SharedArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedArray")
            .field("len", &self.len)
            .field("type", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T> Serialize for SharedArray<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (self.seg.handle(), &self.lock).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for SharedArray<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        check_layout::<T>();
        let (seg, lock) = open_with_lock(d)?;
        if seg.len() % size_of::<T>() != 0 {
            return Err(crate::error::de_custom(format_args!(
                "shared array of {} bytes received with {}-byte elements",
                seg.len(),
                size_of::<T>()
            )));
        }
        Ok(SharedArray {
            len: seg.len() / size_of::<T>(),
            seg: Arc::new(seg),
            lock,
            _t: PhantomData,
        })
    }
}
