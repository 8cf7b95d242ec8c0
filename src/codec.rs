//! Payload encoding: postcard for serde values, raw bytes for `Pod` values.
//!
//! Decoding is validating: garbage becomes [`ErrorKind::Codec`], never a
//! panic. Allocation while decoding is bounded by the input: postcard reads
//! lengths from the bytes, and serde's collections pre-allocate at most
//! 1 MiB (`size_hint::cautious`) before each element must be present in
//! the input; the ring never hands out a frame over its maximum.
//!
//! The ring helpers serialise straight into a ring reservation (postcard's
//! size pass, then `to_slice` in place) and decode straight from a frame in
//! place, so a value crosses with one copy on each side.
// Not every entry point has a user in the library yet: the `Pod` path serves the zero-copy Pool (issue 4); the tests use all of it.
#![cfg_attr(not(test), allow(dead_code))]

use std::borrow::Cow;

use bytemuck::Pod;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::ring::{Consumer, Producer};
use serde::de::DeserializeOwned;
use std::time::Instant;

/// Bytes `value` takes in postcard form.
///
/// # Errors
///
/// `Codec` if the value cannot be serialised (a serde error).
pub(crate) fn serde_len<T: Serialize + ?Sized>(value: &T) -> Result<usize> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(|e| Error::codec("measure value", e))
}

/// `value` in postcard form, refusing anything over `max` bytes (checked
/// before any buffer is allocated).
///
/// # Errors
///
/// `Codec` if the value cannot be serialised or is over `max`.
pub(crate) fn encode_serde<T: Serialize + ?Sized>(value: &T, max: usize) -> Result<Vec<u8>> {
    let len = serde_len(value)?;
    check_max(len, max)?;
    let mut buf = vec![0u8; len];
    encode_serde_into(value, &mut buf)?;
    Ok(buf)
}

/// Serialises `value` into the front of `buf`; returns the bytes written.
///
/// # Errors
///
/// `Codec` if the value cannot be serialised or does not fit in `buf`.
pub(crate) fn encode_serde_into<T: Serialize + ?Sized>(value: &T, buf: &mut [u8]) -> Result<usize> {
    postcard::to_slice(value, buf)
        .map(|used| used.len())
        .map_err(|e| Error::codec("encode value", e))
}

/// Decodes a whole payload as a `T` (borrowing from `bytes` where `T`
/// does, e.g. `&str`). Trailing bytes are an error.
///
/// # Errors
///
/// `Codec` for bytes that are not exactly one postcard `T`.
pub(crate) fn decode_serde<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    let (value, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| Error::codec("decode value", e))?;
    if !rest.is_empty() {
        return Err(Error::new(
            ErrorKind::Codec,
            format!("{} trailing bytes after the value", rest.len()),
        ));
    }
    Ok(value)
}

/// The bytes of a `Pod` value, as they are in memory (no copy).
pub(crate) fn encode_pod<T: Pod>(value: &T) -> &[u8] {
    bytemuck::bytes_of(value)
}

/// The bytes of a slice of `Pod` values (no copy).
pub(crate) fn encode_pod_slice<T: Pod>(values: &[T]) -> &[u8] {
    bytemuck::cast_slice(values)
}

/// One `T` from exactly `size_of::<T>()` bytes (any alignment).
///
/// # Errors
///
/// `Codec` for a wrong length.
pub(crate) fn decode_pod<T: Pod>(bytes: &[u8]) -> Result<T> {
    if bytes.len() != std::mem::size_of::<T>() {
        return Err(Error::new(
            ErrorKind::Codec,
            format!(
                "{} bytes for a value of {} bytes ({})",
                bytes.len(),
                std::mem::size_of::<T>(),
                std::any::type_name::<T>()
            ),
        ));
    }
    Ok(bytemuck::pod_read_unaligned(bytes))
}

/// A slice of `T` over `bytes`: borrowed when `bytes` is aligned for `T`
/// (zero copy), copied otherwise.
///
/// # Errors
///
/// `Codec` when the length is not a multiple of `size_of::<T>()`.
pub(crate) fn decode_pod_slice<T: Pod>(bytes: &[u8]) -> Result<Cow<'_, [T]>> {
    let size = std::mem::size_of::<T>();
    if size == 0 {
        return if bytes.is_empty() {
            Ok(Cow::Borrowed(&[]))
        } else {
            Err(Error::new(ErrorKind::Codec, "bytes for a zero-sized type"))
        };
    }
    if !bytes.len().is_multiple_of(size) {
        return Err(Error::new(
            ErrorKind::Codec,
            format!(
                "{} bytes is not a whole number of {size}-byte values",
                bytes.len()
            ),
        ));
    }
    match bytemuck::try_cast_slice(bytes) {
        Ok(s) => Ok(Cow::Borrowed(s)),
        Err(_) => Ok(Cow::Owned(
            bytes
                .chunks_exact(size)
                .map(bytemuck::pod_read_unaligned)
                .collect(),
        )),
    }
}

/// `Codec` if a value of `len` bytes is over a frame of `max`.
pub(crate) fn check_max(len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(Error::new(
            ErrorKind::Codec,
            format!("value of {len} bytes exceeds the maximum frame of {max}"),
        ));
    }
    Ok(())
}

/// Serialises `value` straight into the ring as one frame of `kind`,
/// waiting for room until `deadline`.
///
/// # Errors
///
/// `Codec` (cannot serialise, over the ring's maximum), and the errors of
/// [`Producer::reserve`].
pub(crate) fn push_value<T: Serialize + ?Sized>(
    producer: &mut Producer,
    kind: u8,
    value: &T,
    deadline: Option<Instant>,
) -> Result<()> {
    let len = serde_len(value)?;
    check_max(len, producer.max_payload())?;
    let mut r = producer.reserve(len, deadline)?;
    let written = encode_serde_into(value, r.buf())?;
    r.commit(kind, written)
}

/// Takes the next frame and decodes it as a `T` in place, waiting until
/// `deadline`. The frame is consumed even if it does not decode.
///
/// # Errors
///
/// `Codec` for a payload that is not a `T`, and the errors of
/// [`Consumer::peek`].
pub(crate) fn pop_value<T: DeserializeOwned>(
    consumer: &mut Consumer,
    deadline: Option<Instant>,
) -> Result<(u8, T)> {
    let frame = consumer.peek(deadline)?;
    let value = decode_serde(frame.bytes())?;
    Ok((frame.kind(), value))
}

/// Sends a slice of `Pod` values as one frame (one copy into the ring).
///
/// # Errors
///
/// As [`Producer::push`].
pub(crate) fn push_pod_slice<T: Pod>(
    producer: &mut Producer,
    kind: u8,
    values: &[T],
    deadline: Option<Instant>,
) -> Result<()> {
    producer.push(kind, encode_pod_slice(values), deadline)
}

/// Takes the next frame as a `Vec` of `Pod` values.
///
/// # Errors
///
/// `Codec` for a length that is not a whole number of values, and the
/// errors of [`Consumer::peek`].
pub(crate) fn pop_pod_vec<T: Pod>(
    consumer: &mut Consumer,
    deadline: Option<Instant>,
) -> Result<(u8, Vec<T>)> {
    let frame = consumer.peek(deadline)?;
    let values = decode_pod_slice::<T>(frame.bytes())?.into_owned();
    Ok((frame.kind(), values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Task { id: u64, args: Vec<i32> },
        Text(String),
        Stop,
    }

    #[test]
    fn serde_round_trip_and_size() {
        let m = Msg::Task {
            id: 7,
            args: vec![1, -2, 3],
        };
        let b = encode_serde(&m, 1024).unwrap();
        assert_eq!(b.len(), serde_len(&m).unwrap());
        assert_eq!(decode_serde::<Msg>(&b).unwrap(), m);
        let bytes = encode_serde("héllo", 64).unwrap();
        let s: &str = decode_serde(&bytes).unwrap();
        assert_eq!(s, "héllo");
    }

    #[test]
    fn serde_over_max_is_codec_error() {
        let e = encode_serde(&vec![0u8; 100], 50).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Codec);
        let mut small = [0u8; 4];
        assert_eq!(
            encode_serde_into(&vec![0u8; 100], &mut small)
                .unwrap_err()
                .kind(),
            ErrorKind::Codec
        );
    }

    #[test]
    fn serde_garbage_is_codec_error() {
        for bad in [
            &[][..],
            &[9u8][..],
            &[0, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
            &[2, 1][..],
        ] {
            assert_eq!(
                decode_serde::<Msg>(bad).unwrap_err().kind(),
                ErrorKind::Codec
            );
        }
        // A huge length prefix neither panics nor allocates it.
        let huge = [0u8, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(decode_serde::<Msg>(&huge).is_err());
        // Trailing bytes.
        let mut b = encode_serde(&Msg::Stop, 64).unwrap();
        b.push(0);
        assert_eq!(
            decode_serde::<Msg>(&b).unwrap_err().kind(),
            ErrorKind::Codec
        );
    }

    #[test]
    fn pod_round_trip_aligned_and_not() {
        let v = [1.5f64, -2.0, 3.25];
        let bytes = encode_pod_slice(&v);
        assert!(matches!(
            decode_pod_slice::<f64>(bytes).unwrap(),
            Cow::Borrowed(_)
        ));
        // Misaligned copy of the same bytes.
        let mut shifted = vec![0u8; bytes.len() + 1];
        shifted[1..].copy_from_slice(bytes);
        let mis = &shifted[1..];
        let d = decode_pod_slice::<f64>(mis).unwrap();
        assert_eq!(&*d, &v);
        assert_eq!(
            decode_pod::<u32>(encode_pod(&0xdead_beefu32)).unwrap(),
            0xdead_beef
        );
        assert_eq!(
            decode_pod::<u32>(&[1, 2, 3]).unwrap_err().kind(),
            ErrorKind::Codec
        );
        assert_eq!(
            decode_pod_slice::<u32>(&[1, 2, 3]).unwrap_err().kind(),
            ErrorKind::Codec
        );
        assert!(decode_pod_slice::<()>(&[]).unwrap().is_empty());
        assert!(decode_pod_slice::<()>(&[1]).is_err());
    }

    #[test]
    fn values_through_a_ring_in_place() {
        use crate::ring::{Mode, Ring};
        let ring = Ring::with_heap(4096, Mode::Spsc).unwrap();
        let mut p = ring.producer().unwrap();
        let mut c = ring.consumer().unwrap();
        for i in 0..200u64 {
            push_value(
                &mut p,
                3,
                &Msg::Task {
                    id: i,
                    args: vec![i as i32; (i % 7) as usize],
                },
                None,
            )
            .unwrap();
            let (k, m) = pop_value::<Msg>(&mut c, None).unwrap();
            assert_eq!(k, 3);
            assert_eq!(
                m,
                Msg::Task {
                    id: i,
                    args: vec![i as i32; (i % 7) as usize]
                }
            );
            push_pod_slice(&mut p, 4, &[i, i + 1], None).unwrap();
            assert_eq!(
                pop_pod_vec::<u64>(&mut c, None).unwrap(),
                (4, vec![i, i + 1])
            );
        }
        // Over the ring's maximum: an error, not a hang.
        let big = vec![0u8; ring.max_payload() + 1];
        assert_eq!(
            push_value(&mut p, 1, &big, None).unwrap_err().kind(),
            ErrorKind::Codec
        );
        // A frame that is not a Msg: Codec error, and the frame is gone.
        p.push(1, &[0xff, 0xff], None).unwrap();
        assert_eq!(
            pop_value::<Msg>(&mut c, None).unwrap_err().kind(),
            ErrorKind::Codec
        );
        assert!(c.try_pop().unwrap().is_none());
    }
}

/// A message shaped like what Queue/Pipe/Pool will carry: nested
/// collections, strings, options, floats, a map.
#[cfg(feature = "fuzzing")]
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum FuzzMsg {
    Unit,
    Task {
        id: u64,
        args: Vec<(i32, String)>,
        blob: Option<Vec<u8>>,
    },
    Result(std::result::Result<Vec<f64>, String>),
    Map(std::collections::BTreeMap<u16, Vec<Vec<u8>>>),
    Text(String, char, bool),
}

/// `codec_decode` fuzz target: the first byte picks a decoder, the rest is
/// the payload. Whatever decodes must re-encode to bytes that decode to the
/// same value.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_decode(data: &[u8]) -> bool {
    #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Rec {
        a: u64,
        b: u32,
        c: u16,
        d: u8,
        e: u8,
    }
    let Some((&sel, bytes)) = data.split_first() else {
        return false;
    };
    match sel % 5 {
        0 => match decode_serde::<FuzzMsg>(bytes) {
            Ok(v) => {
                let again = encode_serde(&v, usize::MAX).expect("re-encode");
                let v2: FuzzMsg = decode_serde(&again).expect("decode re-encoded");
                // NaN != NaN: compare the encodings instead.
                assert_eq!(encode_serde(&v2, usize::MAX).expect("re-encode"), again);
                true
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Codec);
                false
            }
        },
        1 => decode_serde::<&str>(bytes).is_ok(),
        2 => match decode_pod_slice::<Rec>(bytes) {
            Ok(v) => {
                assert_eq!(encode_pod_slice(&v), bytes);
                true
            }
            Err(_) => false,
        },
        3 => match decode_pod::<Rec>(bytes) {
            Ok(v) => {
                assert_eq!(encode_pod(&v), bytes);
                true
            }
            Err(_) => false,
        },
        _ => decode_pod_slice::<f64>(bytes.get(1..).unwrap_or(&[])).is_ok(),
    }
}
