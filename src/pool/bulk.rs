//! Values that are one run of bytes on the wire — `Vec<u8>`, `String`,
//! `Vec<f32>`, `Vec<f64>` — encoded and decoded by one copy.
//!
//! Serde moves a `Vec<u8>` element by element: postcard's serializer is
//! called once per byte and the `Vec` visitor pushes one byte at a time,
//! which made a pool `apply` of a 64 MiB `Vec<u8>` cost 0.18 GB/s each way
//! (BENCHMARKS.md, "Byte vectors and strings cross by one copy"). These
//! types' postcard form is a varint length and then the bytes themselves
//! (`f32`/`f64` as little-endian bits, on little-endian machines the
//! vector's memory), so this module writes and reads exactly that form by
//! a copy: each side may take this path or serde's and the bytes agree.
//! The type test is a `TypeId` and the conversions `Any` downcasts, as in
//! `raw.rs`: no `unsafe`.
//!
//! Decoding is of bytes a peer wrote: a length past the bytes there, a
//! varint that does not end, bad UTF-8 in a `String` are postcard's own
//! errors, never a panic, and nothing is allocated before the length is
//! checked against the bytes.

use std::any::{Any, TypeId};

use serde::Serialize;

/// The wire shape of a bulk type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Bytes,
    Str,
    F32,
    F64,
}

/// `T`'s bulk kind, if it is one.
fn kind<T: 'static>() -> Option<Kind> {
    let id = TypeId::of::<T>();
    if id == TypeId::of::<Vec<u8>>() {
        Some(Kind::Bytes)
    } else if id == TypeId::of::<String>() {
        Some(Kind::Str)
    } else if cfg!(target_endian = "little") && id == TypeId::of::<Vec<f32>>() {
        Some(Kind::F32)
    } else if cfg!(target_endian = "little") && id == TypeId::of::<Vec<f64>>() {
        Some(Kind::F64)
    } else {
        None
    }
}

/// A bulk value's element count and bytes; `None` for other types.
fn view<T: 'static>(value: &T) -> Option<(usize, &[u8])> {
    let v: &dyn Any = value;
    let floats_too = cfg!(target_endian = "little");
    if let Some(b) = v.downcast_ref::<Vec<u8>>() {
        Some((b.len(), b))
    } else if let Some(s) = v.downcast_ref::<String>() {
        Some((s.len(), s.as_bytes()))
    } else if let Some(f) = v.downcast_ref::<Vec<f32>>().filter(|_| floats_too) {
        Some((f.len(), bytemuck::cast_slice(f)))
    } else if let Some(f) = v.downcast_ref::<Vec<f64>>().filter(|_| floats_too) {
        Some((f.len(), bytemuck::cast_slice(f)))
    } else {
        None
    }
}

/// Appends `value` in postcard's form: by one copy for a bulk type,
/// through serde otherwise.
pub(crate) fn encode<T: Serialize + 'static>(value: &T, out: &mut Vec<u8>) -> postcard::Result<()> {
    let Some((len, bytes)) = view(value) else {
        return postcard::serialize_with_flavor(value, Append(out));
    };
    out.reserve(VARINT_MAX + bytes.len());
    push_varint(len, out);
    out.extend_from_slice(bytes);
    Ok(())
}

/// postcard's output appended to a `Vec` in place, byte pushes and slice
/// extends the compiler can inline. (`postcard::to_io` went through
/// `io::Write` for each piece; this is the simpler path and measured no
/// slower, a nanosecond an item faster on a `map` of small structs:
/// BENCHMARKS.md, "Serde items appended in place".) A value that fails
/// to serialise midway leaves what it wrote appended, as `to_io` did:
/// callers fail the whole buffer then.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Bytes of a bulk `value`'s postcard form; `None` for other types.
pub(crate) fn encoded_len<T: 'static>(value: &T) -> Option<usize> {
    view(value).map(|(len, bytes)| varint_len(len) + bytes.len())
}

/// Writes a bulk `value`'s postcard form into the front of `buf` and
/// returns the bytes written: `None` for other types, `Some(Err)` when
/// `buf` is too short.
pub(crate) fn encode_into<T: 'static>(
    value: &T,
    buf: &mut [u8],
) -> Option<postcard::Result<usize>> {
    let (len, bytes) = view(value)?;
    let mut varint = [0u8; VARINT_MAX];
    let used = write_varint(len, &mut varint);
    let head = &varint[..used];
    let total = head.len() + bytes.len();
    let Some(dst) = buf.get_mut(..total) else {
        return Some(Err(postcard::Error::SerializeBufferFull));
    };
    dst[..head.len()].copy_from_slice(head);
    dst[head.len()..].copy_from_slice(bytes);
    Some(Ok(total))
}

/// Longest varint of a `usize`.
const VARINT_MAX: usize = 10;

/// Bytes the varint of `n` takes.
fn varint_len(n: usize) -> usize {
    write_varint(n, &mut [0; VARINT_MAX])
}

/// LEB128, as postcard writes a length.
fn push_varint(n: usize, out: &mut Vec<u8>) {
    let mut head = [0u8; VARINT_MAX];
    let used = write_varint(n, &mut head);
    out.extend_from_slice(&head[..used]);
}

/// Writes `n`'s LEB128 into the front of `head`; returns its length.
fn write_varint(mut n: usize, head: &mut [u8; VARINT_MAX]) -> usize {
    let mut i = 0;
    while n >= 0x80 {
        head[i] = (n as u8) | 0x80;
        n >>= 7;
        i += 1;
    }
    head[i] = n as u8;
    i + 1
}

/// A length as postcard reads it: the value and the bytes it took.
fn take_varint(bytes: &[u8]) -> postcard::Result<(usize, usize)> {
    let mut n: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(b & 0x7f);
        // The tenth byte holds bit 63 alone.
        if i == 9 && b > 1 {
            return Err(postcard::Error::DeserializeBadVarint);
        }
        n |= bits << (7 * i);
        if b & 0x80 == 0 {
            let n = usize::try_from(n).map_err(|_| postcard::Error::DeserializeBadVarint)?;
            return Ok((n, i + 1));
        }
    }
    if bytes.len() < 10 {
        Err(postcard::Error::DeserializeUnexpectedEnd)
    } else {
        Err(postcard::Error::DeserializeBadVarint)
    }
}

/// Decodes bulk values of type `T` (`T` checked once, at [`decoder`]).
pub(crate) struct Decoder<T> {
    kind: Kind,
    of: std::marker::PhantomData<fn() -> T>,
}

/// A decoder for `T`, if `T` is a bulk type (otherwise serde decodes it).
pub(crate) fn decoder<T: 'static>() -> Option<Decoder<T>> {
    kind::<T>().map(|kind| Decoder {
        kind,
        of: std::marker::PhantomData,
    })
}

impl<T: 'static> Decoder<T> {
    /// The value at the front of `bytes`, and how many bytes it took.
    pub(crate) fn front(&self, bytes: &[u8]) -> postcard::Result<(T, usize)> {
        decode_kind(self.kind, bytes)
    }
}

/// The bulk value `T` at the front of `bytes`, and how many bytes it took.
/// `None` when `T` is no bulk type (then serde decodes it).
pub(crate) fn decode_front<T: 'static>(bytes: &[u8]) -> Option<postcard::Result<(T, usize)>> {
    decoder::<T>().map(|d| d.front(bytes))
}

fn decode_kind<T: 'static>(kind: Kind, bytes: &[u8]) -> postcard::Result<(T, usize)> {
    let (len, head) = take_varint(bytes)?;
    let size = match kind {
        Kind::Bytes | Kind::Str => 1,
        Kind::F32 => 4,
        Kind::F64 => 8,
    };
    let body = bytes[head..]
        .get(
            ..len
                .checked_mul(size)
                .ok_or(postcard::Error::DeserializeUnexpectedEnd)?,
        )
        .ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
    let used = head + body.len();
    let value = match kind {
        Kind::Bytes => cast::<T, _>(body.to_vec()),
        Kind::Str => cast::<T, _>(
            std::str::from_utf8(body)
                .map_err(|_| postcard::Error::DeserializeBadUtf8)?
                .to_owned(),
        ),
        Kind::F32 => cast::<T, _>(floats::<f32>(body, len)),
        Kind::F64 => cast::<T, _>(floats::<f64>(body, len)),
    };
    Ok((value, used))
}

/// `len` floats from their little-endian bytes (any alignment).
fn floats<F: bytemuck::Pod + Default>(body: &[u8], len: usize) -> Vec<F> {
    let mut v = vec![F::default(); len];
    bytemuck::cast_slice_mut::<F, u8>(&mut v).copy_from_slice(body);
    v
}

/// `c` as a `T`, which `kind` said it is.
fn cast<T: 'static, C: 'static>(c: C) -> T {
    let mut slot = Some(c);
    let any: &mut dyn Any = &mut slot;
    any.downcast_mut::<Option<T>>()
        .and_then(Option::take)
        .expect("bulk kind matches the type")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Both directions against postcard for one value.
    fn agrees<T>(value: T)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + 'static,
    {
        let want = postcard::to_stdvec(&value).unwrap();
        let mut got = vec![7u8];
        encode(&value, &mut got).unwrap();
        assert_eq!(&got[1..], &want[..]);
        let mut tail = want.clone();
        tail.extend_from_slice(&[1, 2, 3]);
        let (back, used) = decode_front::<T>(&tail).unwrap().unwrap();
        assert_eq!(back, value);
        assert_eq!(used, want.len());
    }

    proptest! {
        #[test]
        fn bytes_strings_and_floats_are_postcards_form(
            b in proptest::collection::vec(any::<u8>(), 0..600),
            s in ".{0,200}",
            f in proptest::collection::vec(any::<f32>().prop_filter("not NaN", |x| !x.is_nan()), 0..100),
            d in proptest::collection::vec(any::<f64>().prop_filter("not NaN", |x| !x.is_nan()), 0..100),
        ) {
            agrees(b);
            agrees(s);
            agrees(f);
            agrees(d);
        }

        #[test]
        fn any_bytes_decode_as_postcard_does_or_fail_cleanly(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let ours = decode_front::<Vec<u8>>(&bytes).unwrap();
            let theirs = postcard::take_from_bytes::<Vec<u8>>(&bytes);
            match (ours, theirs) {
                (Ok((v, used)), Ok((w, rest))) => {
                    prop_assert_eq!(v, w);
                    prop_assert_eq!(used, bytes.len() - rest.len());
                }
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "ours {:?}, postcard's {:?}", a, b),
            }
            let ours = decode_front::<String>(&bytes).unwrap();
            let theirs = postcard::take_from_bytes::<String>(&bytes);
            prop_assert_eq!(ours.is_ok(), theirs.is_ok());
            let ours = decode_front::<Vec<f64>>(&bytes).unwrap();
            let theirs = postcard::take_from_bytes::<Vec<f64>>(&bytes);
            prop_assert_eq!(ours.is_ok(), theirs.is_ok());
        }
    }

    /// A value of a type that is not bulk, with something of every
    /// serde shape postcard writes: varints (signed and not), floats,
    /// strings, options, sequences, maps, enums, tuples.
    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    enum Shape {
        Unit,
        Pair(i64, String),
        Record {
            id: u32,
            weight: f64,
            tags: Vec<String>,
            parent: Option<Box<Shape>>,
            table: std::collections::BTreeMap<u16, (bool, char)>,
            bytes: Vec<u8>,
        },
    }

    proptest! {
        #[test]
        fn other_values_are_appended_as_postcard_writes_them(
            id in any::<u32>(),
            weight in any::<f64>().prop_filter("not NaN", |x| !x.is_nan()),
            n in any::<i64>(),
            s in ".{0,40}",
            tags in proptest::collection::vec(".{0,12}", 0..6),
            table in proptest::collection::btree_map(any::<u16>(), any::<(bool, char)>(), 0..6),
            bytes in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let inner = Shape::Pair(n, s);
            let value = Shape::Record {
                id,
                weight,
                tags,
                parent: Some(Box::new(inner)),
                table,
                bytes,
            };
            // Appended after what the buffer holds, byte for byte
            // postcard's own form, and read back whole.
            let want = postcard::to_stdvec(&value).unwrap();
            let mut got = vec![9u8, 9];
            encode(&value, &mut got).unwrap();
            prop_assert_eq!(&got[..2], &[9u8, 9][..]);
            prop_assert_eq!(&got[2..], &want[..]);
            prop_assert_eq!(postcard::from_bytes::<Shape>(&got[2..]).unwrap(), value);
            let mut unit = Vec::new();
            encode(&Shape::Unit, &mut unit).unwrap();
            prop_assert_eq!(unit, postcard::to_stdvec(&Shape::Unit).unwrap());
        }
    }

    #[test]
    fn into_a_slice_the_same_bytes_or_too_short() {
        let v: Vec<u8> = (0..=255).collect();
        let want = postcard::to_stdvec(&v).unwrap();
        assert_eq!(encoded_len(&v), Some(want.len()));
        let mut buf = vec![0u8; want.len() + 5];
        assert_eq!(encode_into(&v, &mut buf).unwrap().unwrap(), want.len());
        assert_eq!(&buf[..want.len()], &want[..]);
        assert!(encode_into(&v, &mut buf[..want.len() - 1])
            .unwrap()
            .is_err());
        assert!(encoded_len(&5u32).is_none() && encode_into(&5u32, &mut buf).is_none());
        for n in [0usize, 127, 128, 16_383, 16_384, usize::MAX] {
            let mut out = Vec::new();
            push_varint(n, &mut out);
            assert_eq!(out.len(), varint_len(n));
            assert_eq!(take_varint(&out).unwrap(), (n, out.len()));
        }
    }

    #[test]
    fn only_the_four_types_are_bulk() {
        assert!(decoder::<Vec<u8>>().is_some() && decoder::<String>().is_some());
        assert!(decoder::<Vec<u16>>().is_none() && decoder::<&'static str>().is_none());
        assert!(decoder::<u8>().is_none());
        assert!(decode_front::<Vec<u64>>(&[0]).is_none());
        // Not bulk: serde's path, the same bytes.
        let mut out = Vec::new();
        encode(&vec![300u64, 1], &mut out).unwrap();
        assert_eq!(out, postcard::to_stdvec(&vec![300u64, 1]).unwrap());
    }

    #[test]
    fn a_length_past_the_bytes_or_a_varint_that_never_ends_is_an_error() {
        // 2^62 elements claimed, three bytes there: no allocation, an error.
        let huge = [
            0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 1, 2, 3,
        ];
        assert!(decode_front::<Vec<f64>>(&huge).unwrap().is_err());
        assert!(decode_front::<Vec<u8>>(&huge).unwrap().is_err());
        assert!(decode_front::<Vec<u8>>(&[0xff; 12]).unwrap().is_err());
        assert!(decode_front::<Vec<u8>>(&[]).unwrap().is_err());
        assert!(decode_front::<String>(&[2, 0xc3, 0x28]).unwrap().is_err());
    }
}
