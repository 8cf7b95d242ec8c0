//! Data in shared memory that several processes see and change:
//! [`SharedValue`], [`SharedArray`], [`SharedMemory`].
//!
//! All three are handles to one segment: `clone` is cheap and shares it,
//! and passing one to a child (`Process::spawn(f, value.clone())`) sends a
//! small handle that the child opens while it deserialises its argument.
//! The memory goes away when the last handle in any process is dropped
//! (and on Linux also when every process holding it is killed).
//!
//! Rules shared by the three (see [`SharedArray`] for details):
//!
//! - A handle can be opened only while a process that sent it still holds
//!   the segment: keep your clone until the child has started its task
//!   (joining it, or simply keeping the value in scope, is enough).
//! - The safe accessors (`get`, `set`, `read_at`, `write_at`, the atomics)
//!   are never undefined behaviour, even while other processes write: each
//!   aligned 1/2/4/8-byte piece is copied with one atomic access (Acquire
//!   for reads, Release for writes). Several writers of the same elements
//!   still need synchronisation for *meaningful* results, as with Python's
//!   `RawArray`.
//! - Plain `&[T]` / `&mut [T]` views exist as `unsafe fn`s, because
//!   Rust's borrow rules cannot see clones in other processes.
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::sync::atomic::{self, AtomicU8, Ordering};
use std::sync::Arc;

use bytemuck::Pod;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::segment::{Segment, SegmentHandle, MAX_ALIGN};
use crate::sync::Lock;

/// Refuses, at compile time, types a segment cannot hold: zero-sized ones
/// (no length to derive) and ones aligned beyond the data's alignment.
fn check_layout<T>() {
    const {
        assert!(
            size_of::<T>() > 0,
            "zero-sized types cannot live in shared memory"
        );
        assert!(
            align_of::<T>() <= MAX_ALIGN,
            "types aligned to more than 64 bytes cannot live in shared memory"
        );
    }
}

fn open_handle<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Segment, D::Error> {
    let handle = SegmentHandle::deserialize(d)?;
    Segment::open(&handle).map_err(de::Error::custom)
}

/// A value's or array's handle and its optional lock.
fn open_with_lock<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<(Segment, Option<Lock>), D::Error> {
    let (handle, lock) = <(SegmentHandle, Option<Lock>)>::deserialize(d)?;
    let seg = Segment::open(&handle).map_err(de::Error::custom)?;
    Ok((seg, lock))
}

mod sealed {
    pub trait Sealed {}
}

/// Integer types with an atomic twin in [`std::sync::atomic`]
/// (`u8`…`u64`, `i8`…`i64`, `usize`, `isize`): the element types for which
/// [`SharedValue`] offers `fetch_add` and friends and [`SharedArray`]
/// offers [`as_atomic`](SharedArray::as_atomic).
///
/// Sealed: it cannot be implemented outside this crate.
///
/// ```
/// fn total<T: multiproc::SharedAtomic>(v: &multiproc::SharedValue<T>) -> T {
///     v.get()
/// }
/// let v = multiproc::SharedValue::new(5u32).unwrap();
/// assert_eq!(total(&v), 5);
/// ```
pub trait SharedAtomic: Pod + sealed::Sealed {
    /// The atomic type of the same size (`AtomicU64` for `u64`). Its
    /// alignment is at most its size, so an element of a segment is always
    /// suitably aligned for it.
    type Atomic: Send + Sync;

    #[doc(hidden)]
    fn fetch_add(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    #[doc(hidden)]
    fn fetch_sub(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    #[doc(hidden)]
    fn swap(a: &Self::Atomic, v: Self, o: Ordering) -> Self;
    #[doc(hidden)]
    fn compare_exchange(
        a: &Self::Atomic,
        current: Self,
        new: Self,
    ) -> std::result::Result<Self, Self>;
}

macro_rules! shared_atomic {
    ($($t:ty => $a:ty),* $(,)?) => {$(
        const _: () = assert!(
            size_of::<$a>() == size_of::<$t>() && align_of::<$a>() <= size_of::<$t>()
        );
        impl sealed::Sealed for $t {}
        impl SharedAtomic for $t {
            type Atomic = $a;
            fn fetch_add(a: &$a, v: $t, o: Ordering) -> $t {
                a.fetch_add(v, o)
            }
            fn fetch_sub(a: &$a, v: $t, o: Ordering) -> $t {
                a.fetch_sub(v, o)
            }
            fn swap(a: &$a, v: $t, o: Ordering) -> $t {
                a.swap(v, o)
            }
            fn compare_exchange(a: &$a, current: $t, new: $t) -> std::result::Result<$t, $t> {
                a.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst)
            }
        }
    )*};
}

shared_atomic! {
    u8 => atomic::AtomicU8, u16 => atomic::AtomicU16, u32 => atomic::AtomicU32,
    u64 => atomic::AtomicU64, usize => atomic::AtomicUsize,
    i8 => atomic::AtomicI8, i16 => atomic::AtomicI16, i32 => atomic::AtomicI32,
    i64 => atomic::AtomicI64, isize => atomic::AtomicIsize,
}

// ---------------------------------------------------------------- SharedValue

/// One value of a plain-data type `T` in shared memory.
///
/// Python counterpart: `multiprocessing.Value('i', 0)` and `RawValue`.
/// [`get`](Self::get) / [`set`](Self::set) stand for `.value`; for integer
/// types, [`fetch_add`](Self::fetch_add) and the other atomic operations
/// replace `with v.get_lock(): v.value += 1`. A `T` of up to 8 bytes is
/// read and written whole (never torn); a larger `T` can be seen half
/// updated while another process writes it.
///
/// `Clone` shares the value; serialising it (passing it to a child)
/// sends a handle, see [the module rules](crate::SharedArray#sharing-rules).
///
/// ```
/// use multiproc::{Process, SharedValue};
///
/// fn count(counter: SharedValue<u64>) {
///     for _ in 0..1000 {
///         counter.fetch_add(1);
///     }
/// }
///
/// fn main() {
///     multiproc::init();
///     let counter = SharedValue::new(0u64).unwrap();
///     let workers: Vec<_> = (0..4)
///         .map(|_| Process::spawn(count, counter.clone()).unwrap())
///         .collect();
///     for w in workers {
///         w.join().unwrap();
///     }
///     assert_eq!(counter.get(), 4000);
/// }
/// ```
pub struct SharedValue<T> {
    seg: Arc<Segment>,
    /// Python's `Value(lock=True)`: a lock that travels with the value.
    lock: Option<Lock>,
    _t: PhantomData<T>,
}

impl<T: Pod> SharedValue<T> {
    /// Whether another process shrank this value's shared memory under us.
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
    /// let x = multiproc::SharedValue::new(1u64).unwrap();
    /// assert!(!x.is_lost());
    /// ```
    pub fn is_lost(&self) -> bool {
        self.seg.lost()
    }

    /// Puts `value` into a new shared-memory segment.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoSpace`] when shared memory is exhausted,
    /// [`ErrorKind::Io`] for other OS errors.
    ///
    /// ```
    /// let v = multiproc::SharedValue::new(1.5f64).unwrap();
    /// assert_eq!(v.get(), 1.5);
    /// ```
    pub fn new(value: T) -> Result<Self> {
        check_layout::<T>();
        let v = SharedValue {
            seg: Arc::new(Segment::create(size_of::<T>())?),
            lock: None,
            _t: PhantomData,
        };
        v.set(value);
        Ok(v)
    }

    /// Like [`new`](Self::new), plus a [`Lock`] that travels with the value
    /// (Python's `Value(typecode, v, lock=True)`, whose default this is;
    /// [`new`](Self::new) is `RawValue`). Take it with
    /// [`get_lock`](Self::get_lock) around a read-modify-write.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// ```
    /// let v = multiproc::SharedValue::with_lock(0u32).unwrap();
    /// {
    ///     let _g = v.get_lock().unwrap().lock().unwrap(); // `with v.get_lock():`
    ///     v.set(v.get() + 1);
    /// }
    /// assert_eq!(v.get(), 1);
    /// ```
    pub fn with_lock(value: T) -> Result<Self> {
        let mut v = Self::new(value)?;
        v.lock = Some(Lock::new()?);
        Ok(v)
    }

    /// The value's lock, if it was made [`with_lock`](Self::with_lock)
    /// (Python's `get_lock()`).
    ///
    /// ```
    /// assert!(multiproc::SharedValue::new(0u8).unwrap().get_lock().is_none());
    /// ```
    pub fn get_lock(&self) -> Option<&Lock> {
        self.lock.as_ref()
    }

    /// The current value (Python: `v.value`).
    ///
    /// ```
    /// let v = multiproc::SharedValue::new([1u8, 2, 3]).unwrap();
    /// assert_eq!(v.get(), [1, 2, 3]);
    /// ```
    pub fn get(&self) -> T {
        let mut v = T::zeroed();
        self.seg.load(0, bytemuck::bytes_of_mut(&mut v));
        v
    }

    /// Replaces the value (Python: `v.value = x`).
    ///
    /// ```
    /// let v = multiproc::SharedValue::new(0i32).unwrap();
    /// v.set(-7);
    /// assert_eq!(v.get(), -7);
    /// ```
    pub fn set(&self, value: T) {
        self.seg.store(0, bytemuck::bytes_of(&value));
    }

    /// Pointer to the value in this process's mapping, valid while `self`
    /// (or a clone) lives. Every access through it races with other
    /// processes: use atomics or volatile accesses, or synchronise.
    ///
    /// ```
    /// let v = multiproc::SharedValue::new(0u64).unwrap();
    /// assert_eq!(v.as_ptr() as usize % 8, 0);
    /// ```
    pub fn as_ptr(&self) -> *mut T {
        self.seg.as_ptr().cast()
    }
}

impl<T: SharedAtomic> SharedValue<T> {
    /// The value as its atomic type, for any operation and ordering.
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let v = multiproc::SharedValue::new(6u32).unwrap();
    /// assert_eq!(v.as_atomic().fetch_max(9, Ordering::AcqRel), 6);
    /// assert_eq!(v.get(), 9);
    /// ```
    pub fn as_atomic(&self) -> &T::Atomic {
        // SAFETY: the segment holds `size_of::<T>()` bytes at a 64-aligned
        // address, mapped while `self` lives; `T::Atomic` has `T`'s size
        // and an alignment ≤ its size (asserted per type); atomics may be
        // shared and written concurrently by any process.
        unsafe { &*self.seg.as_ptr().cast::<T::Atomic>() }
    }

    /// Adds `v` (wrapping on overflow) and returns the previous value, as
    /// one atomic step (`SeqCst`).
    ///
    /// ```
    /// let v = multiproc::SharedValue::new(40i64).unwrap();
    /// assert_eq!(v.fetch_add(2), 40);
    /// assert_eq!(v.get(), 42);
    /// ```
    pub fn fetch_add(&self, v: T) -> T {
        T::fetch_add(self.as_atomic(), v, Ordering::SeqCst)
    }

    /// Subtracts `v` (wrapping on overflow) and returns the previous value,
    /// as one atomic step (`SeqCst`).
    ///
    /// ```
    /// let v = multiproc::SharedValue::new(10u32).unwrap();
    /// assert_eq!(v.fetch_sub(3), 10);
    /// assert_eq!(v.get(), 7);
    /// ```
    pub fn fetch_sub(&self, v: T) -> T {
        T::fetch_sub(self.as_atomic(), v, Ordering::SeqCst)
    }

    /// Stores `v` and returns the previous value, atomically (`SeqCst`).
    ///
    /// ```
    /// let v = multiproc::SharedValue::new(1u8).unwrap();
    /// assert_eq!(v.swap(2), 1);
    /// ```
    pub fn swap(&self, v: T) -> T {
        T::swap(self.as_atomic(), v, Ordering::SeqCst)
    }

    /// Stores `new` if the value is `current`, atomically (`SeqCst`).
    /// Returns the previous value: `Ok` if it was `current`, else `Err`.
    ///
    /// # Errors
    ///
    /// `Err(actual)` when the value was not `current`; nothing was stored.
    ///
    /// ```
    /// let v = multiproc::SharedValue::new(5usize).unwrap();
    /// assert_eq!(v.compare_exchange(5, 6), Ok(5));
    /// assert_eq!(v.compare_exchange(5, 7), Err(6));
    /// ```
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        T::compare_exchange(self.as_atomic(), current, new)
    }
}

impl<T> Clone for SharedValue<T> {
    fn clone(&self) -> Self {
        SharedValue {
            seg: Arc::clone(&self.seg),
            lock: self.lock.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for SharedValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedValue")
            .field("value", &self.get())
            .finish_non_exhaustive()
    }
}

impl<T> Serialize for SharedValue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (self.seg.handle(), &self.lock).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for SharedValue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        check_layout::<T>();
        let (seg, lock) = open_with_lock(d)?;
        if seg.len() != size_of::<T>() {
            return Err(de::Error::custom(format_args!(
                "shared value of {} bytes received as a {}-byte type",
                seg.len(),
                size_of::<T>()
            )));
        }
        Ok(SharedValue {
            seg: Arc::new(seg),
            lock,
            _t: PhantomData,
        })
    }
}

// ---------------------------------------------------------------- SharedArray

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
            return Err(de::Error::custom(format_args!(
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

// --------------------------------------------------------------- SharedMemory

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
}

impl SharedMemory {
    /// A new block of `size` zero bytes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NoSpace`] when shared memory is exhausted,
    /// [`ErrorKind::Io`] for other OS errors.
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(4096).unwrap();
    /// assert_eq!(shm.len(), 4096);
    /// ```
    pub fn create(size: usize) -> Result<Self> {
        Ok(SharedMemory {
            seg: Arc::new(Segment::create(size)?),
        })
    }

    /// Maps the block that [`name`](Self::name) returned, here or in
    /// another process.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Protocol`] when `name` is not a name this crate made,
    /// or names memory that is not that block (its size or tag differ);
    /// [`ErrorKind::Io`] when it cannot be mapped, typically because the
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
    /// into an [`ErrorKind::Protocol`] error themselves. Always `false` on
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

    /// The block's name, for [`open`](Self::open) in another process. It
    /// works while this process holds the block (on Linux) or while its
    /// creator does (elsewhere).
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create(8).unwrap();
    /// assert!(!shm.name().is_empty());
    /// ```
    pub fn name(&self) -> String {
        self.seg.handle().to_string()
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
    /// (see [`SharedArray`]'s sharing rules).
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
        self.seg.handle().serialize(s)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(SharedMemory {
            seg: Arc::new(open_handle(d)?),
        })
    }
}
