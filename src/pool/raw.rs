//! Primitive numbers cross as raw bytes instead of postcard.
//!
//! A pool task over `u64`s (or any of Rust's integer and float types) moves
//! its items and results as plain little-endian arrays: one `memcpy` per
//! chunk instead of a varint per item. Parent and worker are the same
//! binary, so both pick the same encoding from the type alone (the task's
//! type fingerprint already guarantees they agree on the type). The type
//! test is `TypeId` and the conversions are `Any` downcasts: no `unsafe`.

use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex};

macro_rules! for_primitives {
    ($m:ident) => {
        $m!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64)
    };
}

/// The size of `T` if it crosses raw.
pub(crate) fn raw_size<T: 'static>() -> Option<usize> {
    let id = TypeId::of::<T>();
    macro_rules! check {
        ($($p:ty),*) => {
            $(
                if id == TypeId::of::<$p>() {
                    return Some(std::mem::size_of::<$p>());
                }
            )*
        };
    }
    for_primitives!(check);
    None
}

/// Appends the bytes of `items` if `T` crosses raw; `false` otherwise.
/// (A `&Vec`, not a slice: `Any` needs a sized type to downcast to.)
#[allow(clippy::ptr_arg)]
pub(crate) fn extend_raw<T: 'static>(items: &Vec<T>, out: &mut Vec<u8>) -> bool {
    raw_bytes(items).map(|b| out.extend_from_slice(b)).is_some()
}

/// Appends the bytes of one value if `T` crosses raw, in the same
/// (native) order as [`extend_raw`]; `false` otherwise. No allocation (a
/// task's one argument or result).
pub(crate) fn extend_one<T: 'static>(value: &T, out: &mut Vec<u8>) -> bool {
    let any: &dyn Any = value;
    macro_rules! try_each {
        ($($p:ty),*) => {
            $(
                if let Some(v) = any.downcast_ref::<$p>() {
                    out.extend_from_slice(bytemuck::bytes_of(v));
                    return true;
                }
            )*
        };
    }
    for_primitives!(try_each);
    false
}

/// Appends the bytes of `items[range]` if `T` crosses raw and the range
/// lies inside `items`; `false` otherwise.
#[allow(clippy::ptr_arg)]
pub(crate) fn extend_raw_range<T: 'static>(
    items: &Vec<T>,
    range: std::ops::Range<usize>,
    out: &mut Vec<u8>,
) -> bool {
    let size = std::mem::size_of::<T>();
    // A backwards range is `None` from `get` itself (every raw type has
    // a size, so the byte range is backwards too).
    let part = raw_bytes(items)
        .and_then(|b| b.get(range.start.checked_mul(size)?..range.end.checked_mul(size)?));
    part.map(|p| out.extend_from_slice(p)).is_some()
}

/// Exactly `count` values of `T` from `bytes`, if `T` crosses raw and the
/// length matches; `None` otherwise.
pub(crate) fn from_raw<T: 'static>(bytes: &[u8], count: usize) -> Option<Vec<T>> {
    if count.checked_mul(raw_size::<T>()?) != Some(bytes.len()) {
        return None;
    }
    let mut v = Vec::with_capacity(count);
    extend_from_raw(&mut v, bytes).then_some(v)
}

/// The one value of `T` in `bytes`, if `T` crosses raw and `bytes` is
/// exactly one value long; `None` otherwise. No allocation (a task's
/// result, `pool.submit`).
pub(crate) fn one_from_raw<T: 'static>(bytes: &[u8]) -> Option<T> {
    let mut slot: Option<T> = None;
    let any: &mut dyn Any = &mut slot;
    macro_rules! try_each {
        ($($p:ty),*) => {
            $(
                if let Some(v) = any.downcast_mut::<Option<$p>>() {
                    *v = (bytes.len() == std::mem::size_of::<$p>())
                        .then(|| bytemuck::pod_read_unaligned::<$p>(bytes));
                    return slot;
                }
            )*
        };
    }
    for_primitives!(try_each);
    None
}

/// Replaces `dst`'s contents with the values in `bytes`, if `T` crosses
/// raw and `bytes` holds whole values; `false` otherwise.
pub(crate) fn fill_from_raw<T: 'static>(dst: &mut Vec<T>, bytes: &[u8]) -> bool {
    dst.clear();
    extend_from_raw(dst, bytes)
}

/// Appends the values in `bytes` to `dst`, if `T` crosses raw and `bytes`
/// holds whole values; `false` otherwise. (A `&mut Vec`: `Any` needs a
/// sized type to downcast to.)
#[allow(clippy::ptr_arg)]
pub(crate) fn extend_from_raw<T: 'static>(dst: &mut Vec<T>, bytes: &[u8]) -> bool {
    let any: &mut dyn Any = dst;
    macro_rules! try_each {
        ($($p:ty),*) => {
            $(
                if let Some(v) = any.downcast_mut::<Vec<$p>>() {
                    let size = std::mem::size_of::<$p>();
                    if bytes.len() % size != 0 {
                        return false;
                    }
                    match bytemuck::try_cast_slice::<u8, $p>(bytes) {
                        Ok(values) => v.extend_from_slice(values),
                        // Unaligned bytes: room first, then one copy.
                        Err(_) => {
                            let start = v.len();
                            v.resize(start + bytes.len() / size, <$p>::default());
                            bytemuck::cast_slice_mut::<$p, u8>(&mut v[start..])
                                .copy_from_slice(bytes);
                        }
                    }
                    return true;
                }
            )*
        };
    }
    for_primitives!(try_each);
    false
}

/// The bytes of `items` if `T` crosses raw.
#[allow(clippy::ptr_arg)]
pub(crate) fn raw_bytes<T: 'static>(items: &Vec<T>) -> Option<&[u8]> {
    let any: &dyn Any = items;
    macro_rules! try_each {
        ($($p:ty),*) => {
            $(
                if let Some(v) = any.downcast_ref::<Vec<$p>>() {
                    return Some(bytemuck::cast_slice::<$p, u8>(v));
                }
            )*
        };
    }
    for_primitives!(try_each);
    None
}

/// Writes `value`'s bytes (little-endian) into the front of `buf` if `T`
/// crosses raw and `buf` has room: `Some(bytes written)`; `None` if `T`
/// does not cross raw or `buf` is too short.
pub(crate) fn write_one<T: 'static>(value: &T, buf: &mut [u8]) -> Option<usize> {
    let any: &dyn Any = value;
    macro_rules! try_each {
        ($($p:ty),*) => {
            $(
                if let Some(v) = any.downcast_ref::<$p>() {
                    let bytes = v.to_le_bytes();
                    buf.get_mut(..bytes.len())?.copy_from_slice(&bytes);
                    return Some(bytes.len());
                }
            )*
        };
    }
    for_primitives!(try_each);
    None
}

/// The value in `bytes` (little-endian, exactly its size) if `T` crosses
/// raw: `Some(Some(value))`; `Some(None)` for bytes of the wrong length;
/// `None` if `T` does not cross raw.
pub(crate) fn read_one<T: 'static>(bytes: &[u8]) -> Option<Option<T>> {
    read_ordered(bytes, false)
}

/// [`read_one`] of a value in this machine's byte order, as
/// [`raw_bytes`] writes it (a queue's batch frames).
pub(crate) fn read_native<T: 'static>(bytes: &[u8]) -> Option<Option<T>> {
    read_ordered(bytes, true)
}

/// [`read_one`] (`native`: [`read_native`]).
fn read_ordered<T: 'static>(bytes: &[u8], native: bool) -> Option<Option<T>> {
    let mut out: Option<T> = None;
    let any: &mut dyn Any = &mut out;
    macro_rules! try_each {
        ($($p:ty),*) => {
            $(
                if let Some(slot) = any.downcast_mut::<Option<$p>>() {
                    *slot = bytes.try_into().ok().map(|b| {
                        if native {
                            <$p>::from_ne_bytes(b)
                        } else {
                            <$p>::from_le_bytes(b)
                        }
                    });
                    return Some(out);
                }
            )*
        };
    }
    for_primitives!(try_each);
    None
}

/// A copy of `value` if `T` crosses raw (every such type is `Copy`);
/// `None` otherwise.
pub(crate) fn copy_of<T: 'static>(value: &T) -> Option<T> {
    let mut out: Option<T> = None;
    let src: &dyn Any = value;
    let dst: &mut dyn Any = &mut out;
    macro_rules! try_each {
        ($($p:ty),*) => {
            $(
                if let (Some(v), Some(slot)) =
                    (src.downcast_ref::<$p>(), dst.downcast_mut::<Option<$p>>())
                {
                    *slot = Some(*v);
                    return out;
                }
            )*
        };
    }
    for_primitives!(try_each);
    None
}

/// Copies `src`'s values over `dst`, if `T` crosses raw and the lengths
/// match; `false` otherwise.
#[allow(clippy::ptr_arg)]
pub(crate) fn write_raw<T: 'static>(src: &Vec<T>, dst: &mut [u8]) -> bool {
    raw_bytes(src)
        .filter(|b| b.len() == dst.len())
        .map(|b| dst.copy_from_slice(b))
        .is_some()
}

/// Buffers from this size up get huge pages ([`big_vec`]).
const HUGE_FROM: usize = 4 << 20;

/// An empty `Vec` with room for `n` `T`s, for a caller that fills it at
/// once. From 4 MiB up its pages are advised huge
/// ([`crate::sys::advise_huge_pages`]): glibc hands out such buffers as
/// fresh mappings whenever it has trimmed its heap, and filling 8 MB of
/// fresh 4 KiB pages costs ≈ 2.9 ms here (2 048 faults), ≈ 0.8 ms with
/// 2 MiB pages, against ≈ 0.17 ms on pages already mapped.
pub(crate) fn big_vec<T>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    let bytes = n.saturating_mul(std::mem::size_of::<T>());
    if bytes >= HUGE_FROM {
        crate::sys::advise_huge_pages(v.as_mut_ptr().cast(), bytes);
    }
    v
}

/// Advises huge pages for `v`'s buffer from [`HUGE_FROM`] bytes up, for
/// a buffer not written yet.
fn advise_huge<T>(v: &mut [T]) {
    let bytes = std::mem::size_of_val(v);
    if bytes >= HUGE_FROM {
        crate::sys::advise_huge_pages(v.as_mut_ptr().cast(), bytes);
    }
}

/// `items` in a `Vec`; an iterator of known length goes into a
/// [`big_vec`].
pub(crate) fn collect_items<I: Iterator>(items: I) -> Vec<I::Item> {
    match items.size_hint() {
        (lo, Some(hi)) if lo == hi => {
            let mut v = big_vec(lo);
            v.extend(items);
            v
        }
        _ => items.collect(),
    }
}

/// A pool's spare input buffer: the `Vec` of raw items (see
/// [`collect_reusing`]) its last `map` was collected into, kept for the
/// next call so that one does not fault in fresh pages (with 1e6 `u64`
/// items, 8 MB: ≈ 1 ms, a tenth of the whole map).
pub(crate) type Spare = Arc<Mutex<Option<Box<dyn Any + Send>>>>;

/// A buffer up to this size is kept as a [`Spare`]; a larger one is freed
/// (the pool would otherwise hold the memory of its largest call).
const SPARE_MAX: usize = 64 << 20;

/// `items` in a `Vec`: for a type that crosses raw, the pool's spare
/// buffer when it holds one of that type, else as [`collect_items`].
pub(crate) fn collect_reusing<I>(items: I, spare: &Spare) -> Vec<I::Item>
where
    I: Iterator,
    I::Item: Send + 'static,
{
    if raw_size::<I::Item>().is_none() {
        // A plain `collect`: a `Vec` handed in (the usual input of a map
        // of structs) is taken over as it is, not copied item by item into
        // a fresh buffer (for 2e5 32-byte items that copy and its page
        // faults were a sixth of the parent's time).
        return items.collect();
    }
    let taken = {
        let mut slot = spare.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(b) if b.is::<Vec<I::Item>>() => b.downcast::<Vec<I::Item>>().ok(),
            other => {
                *slot = other;
                None
            }
        }
    };
    match taken {
        Some(mut v) => {
            v.clear();
            v.extend(items);
            *v
        }
        None => collect_items(items),
    }
}

/// A buffer under this size is not kept as a [`Spare`]: not worth it, and
/// an `apply`'s one item must not replace the buffer of a large `map`.
const SPARE_MIN: usize = 64 << 10;

/// Gives `v` (emptied) back as the pool's spare buffer if it is raw and
/// neither small nor too large ([`SPARE_MIN`], [`SPARE_MAX`]).
pub(crate) fn give_back<T: Send + 'static>(mut v: Vec<T>, spare: &Spare) {
    let bytes = v.capacity().saturating_mul(std::mem::size_of::<T>());
    if raw_size::<T>().is_none() || !(SPARE_MIN..=SPARE_MAX).contains(&bytes) {
        return;
    }
    v.clear();
    *spare.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(v));
}

/// `n` zeros of `T`, if `T` crosses raw (zeroed memory, huge pages as
/// [`big_vec`]).
pub(crate) fn zeroed_vec<T: 'static>(n: usize) -> Option<Vec<T>> {
    let id = TypeId::of::<T>();
    macro_rules! try_each {
        ($($p:ty),*) => {
            $(
                if id == TypeId::of::<$p>() {
                    // `vec![0; n]` allocates zeroed memory (`calloc`):
                    // fresh pages come zeroed from the kernel, so nothing
                    // writes them twice (the results fault them in).
                    let mut v: Vec<$p> = vec![<$p>::default(); n];
                    advise_huge(&mut v);
                    let boxed: Box<dyn Any> = Box::new(v);
                    return boxed.downcast::<Vec<T>>().ok().map(|b| *b);
                }
            )*
        };
    }
    for_primitives!(try_each);
    None
}

/// Copies `bytes` (raw values of `T`) over `dst[first..]`; `false` if `T`
/// does not cross raw or the range does not fit. (A `&mut Vec`: `Any`
/// needs a sized type to downcast to.)
#[allow(clippy::ptr_arg)]
pub(crate) fn copy_into<T: 'static>(dst: &mut Vec<T>, first: usize, bytes: &[u8]) -> bool {
    let any: &mut dyn Any = dst;
    macro_rules! try_each {
        ($($p:ty),*) => {
            $(
                if let Some(v) = any.downcast_mut::<Vec<$p>>() {
                    let size = std::mem::size_of::<$p>();
                    if bytes.len() % size != 0 {
                        return false;
                    }
                    let end = first.checked_add(bytes.len() / size);
                    return match end.and_then(|end| v.get_mut(first..end)) {
                        Some(slot) => {
                            bytemuck::cast_slice_mut::<$p, u8>(slot).copy_from_slice(bytes);
                            true
                        }
                        None => false,
                    };
                }
            )*
        };
    }
    for_primitives!(try_each);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_as_in_a_chunk<T: Copy + PartialEq + std::fmt::Debug + 'static>(v: T) {
        let mut one = Vec::new();
        assert!(extend_one(&v, &mut one));
        let mut chunk = Vec::new();
        assert!(extend_raw(&vec![v], &mut chunk));
        assert_eq!(one, chunk, "{v:?}");
        assert_eq!(one_from_raw::<T>(&one), Some(v));
        assert_eq!(from_raw::<T>(&one, 1), Some(vec![v]));
    }

    #[test]
    fn one_value_has_the_bytes_of_a_chunk_of_one() {
        one_as_in_a_chunk(0xa5u8);
        one_as_in_a_chunk(-2i16);
        one_as_in_a_chunk(0xdead_beefu32);
        one_as_in_a_chunk(u64::MAX - 7);
        one_as_in_a_chunk(i128::MIN + 3);
        one_as_in_a_chunk(usize::MAX / 3);
        one_as_in_a_chunk(-1.5f32);
        one_as_in_a_chunk(std::f64::consts::PI);
        let mut out = vec![9u8];
        assert!(!extend_one(&"not a number", &mut out));
        assert_eq!(out, [9]);
    }

    #[test]
    fn big_buffers_hold_what_small_ones_do() {
        // Over HUGE_FROM (advised huge pages) and under it.
        for n in [0usize, 3, 1 << 20] {
            assert_eq!(
                collect_items(0..n as u64),
                (0..n as u64).collect::<Vec<_>>()
            );
            // A length the iterator does not know in advance.
            let odd = (0..n as u64).filter(|x| x % 3 == 0);
            assert_eq!(collect_items(odd.clone()), odd.collect::<Vec<_>>());
            let z = zeroed_vec::<u64>(n).expect("u64 crosses raw");
            assert_eq!(z.len(), n);
            assert!(z.iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn block_helpers_copy_whole_values_of_raw_types_only() {
        let v: Vec<u32> = vec![7, u32::MAX, 0];
        let bytes = raw_bytes(&v).unwrap().to_vec();
        assert_eq!(bytes.len(), 12);
        let mut back: Vec<u32> = vec![99];
        assert!(fill_from_raw(&mut back, &bytes));
        assert_eq!(back, v, "replaced, not appended");
        assert!(!fill_from_raw(&mut back, &bytes[1..]), "a partial value");
        // Unaligned bytes still read (the slow path).
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert!(fill_from_raw(&mut back, &shifted[1..]));
        assert_eq!(back, v);
        assert!(extend_from_raw(&mut back, &bytes[..4]));
        assert_eq!(back, [7, u32::MAX, 0, 7], "appended");
        let mut out = [0u8; 12];
        assert!(write_raw(&v, &mut out));
        assert_eq!(&out[..], &bytes[..]);
        assert!(!write_raw(&v, &mut out[..8]), "wrong length");
        let mut part = Vec::new();
        assert!(extend_raw_range(&v, 1..3, &mut part));
        assert_eq!(part, bytes[4..12]);
        assert!(!extend_raw_range(&v, 2..4, &mut part), "past the end");
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 2..1;
        assert!(!extend_raw_range(&v, backwards, &mut part), "backwards");
        assert_eq!(part.len(), 8, "a refused range adds nothing");
        // Unaligned bytes decode as aligned ones do.
        assert_eq!(from_raw::<u32>(&shifted[1..], 3).unwrap(), v);
        let words = vec![String::from("x")];
        assert!(raw_bytes(&words).is_none());
        assert!(!fill_from_raw(&mut Vec::<String>::new(), &[]));
        assert!(!write_raw(&words, &mut []));
        assert!(!extend_from_raw(&mut Vec::<String>::new(), &[]));
    }

    #[test]
    fn primitives_round_trip_and_others_do_not() {
        let v: Vec<u64> = vec![1, u64::MAX, 3];
        let mut bytes = Vec::new();
        assert!(extend_raw(&v, &mut bytes));
        assert_eq!(bytes.len(), 24);
        assert_eq!(from_raw::<u64>(&bytes, 3).unwrap(), v);
        assert!(from_raw::<u64>(&bytes, 2).is_none());
        assert!(from_raw::<u64>(&bytes[1..], 3).is_none());
        let f: Vec<f32> = vec![1.5, -0.0];
        let mut fb = Vec::new();
        assert!(extend_raw(&f, &mut fb));
        assert_eq!(from_raw::<f32>(&fb, 2).unwrap(), f);
        assert_eq!(raw_size::<i128>(), Some(16));
        assert_eq!(raw_size::<String>(), None);
        assert_eq!(raw_size::<bool>(), None, "not every byte is a valid bool");
        assert!(!extend_raw(&vec![String::new()], &mut Vec::new()));
        assert!(from_raw::<(u8, u8)>(&[1, 2], 1).is_none());
        let mut z = zeroed_vec::<u16>(4).unwrap();
        assert!(copy_into(&mut z, 1, &[1, 0, 2, 0]));
        assert_eq!(z, [0, 1, 2, 0]);
        assert!(!copy_into(&mut z, 3, &[1, 0, 2, 0]), "past the end");
        assert!(!copy_into(&mut z, 0, &[1]), "half an element");
        assert!(zeroed_vec::<String>(1).is_none());
    }
}
