//! [`SharedValue`]: one plain-data value in its own segment (Python
//! `Value`/`RawValue`), with an optional lock and, for integers, atomic
//! operations. The rules all three shared types follow are in `mod.rs`.
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytemuck::Pod;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{check_layout, open_with_lock, SharedAtomic};
use crate::error::Result;
use crate::segment::Segment;
use crate::sync::Lock;

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
    /// into an [`ErrorKind::Protocol`](crate::ErrorKind::Protocol) error themselves. Always `false` on
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
    /// [`ErrorKind::NoSpace`](crate::ErrorKind::NoSpace) when shared memory is exhausted,
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) for other OS errors.
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
            return Err(crate::error::de_custom(format_args!(
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
