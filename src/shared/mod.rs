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
//!
//! Files: this one holds what the three share (layout check, opening a
//! handle, [`SharedAtomic`]); `value.rs`, `array.rs` and `memory.rs` hold
//! one type each.

use std::mem::{align_of, size_of};
use std::sync::atomic::{self, Ordering};

use bytemuck::Pod;
use serde::{Deserialize, Deserializer};

use crate::segment::{Segment, SegmentHandle, MAX_ALIGN};
use crate::sync::Lock;

mod array;
mod memory;
mod value;

pub use array::SharedArray;
pub use memory::{SharedMemory, SharedMemoryBuilder};
pub use value::SharedValue;

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

/// A value's or array's handle and its optional lock.
fn open_with_lock<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<(Segment, Option<Lock>), D::Error> {
    let (handle, lock) = <(SegmentHandle, Option<Lock>)>::deserialize(d)?;
    let seg = Segment::open(&handle).map_err(crate::error::de_custom)?;
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
