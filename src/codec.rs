//! Payload encoding: postcard for serde values. (Arrays of numbers travel
//! as raw bytes in the pool's own frames, `pool/raw.rs`.)
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

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::ring::Producer;
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
#[cfg(any(test, feature = "fuzzing"))]
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
    crate::error::clear_custom_reason();
    // A deserializer, not `take_from_bytes`: its `(T, &[u8])` inside a
    // `Result` is copied out unaligned, which stalls on store forwarding
    // (measured in the pool's workers, `pool::wire::run_chunk`).
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(&mut de).map_err(|e| Error::codec("decode value", e))?;
    let rest = de.finalize().map_err(|e| Error::codec("decode value", e))?;
    if !rest.is_empty() {
        return Err(Error::new(
            ErrorKind::Codec,
            format!("{} trailing bytes after the value", rest.len()),
        ));
    }
    Ok(value)
}

/// `Codec` if a value of `len` bytes is over a frame of `max`.
#[cfg(any(test, feature = "fuzzing"))]
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
/// waiting for room until `deadline`; a value over the ring's largest
/// frame is encoded first and streamed in pieces
/// ([`Producer::push_long`]).
///
/// # Errors
///
/// `Codec` (cannot serialise), and the errors of [`Producer::reserve`].
pub(crate) fn push_value<T: Serialize + ?Sized>(
    producer: &mut Producer,
    kind: u8,
    value: &T,
    deadline: Option<Instant>,
) -> Result<()> {
    let len = serde_len(value)?;
    if len > producer.max_payload() {
        // A long message: encoded whole, then streamed in pieces.
        let bytes = postcard::to_stdvec(value).map_err(|e| Error::codec("encoding a value", e))?;
        return producer.push_long(kind, &bytes, deadline);
    }
    let mut r = producer.reserve(len, deadline)?;
    let written = encode_serde_into(value, r.buf())?;
    r.commit(kind, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes the next frame and decodes it as a `T` in place, waiting
    /// until `deadline`: [`push_value`]'s partner here (a queue's items go
    /// through `queue::item::take_one`).
    fn pop_value<T: serde::de::DeserializeOwned>(
        consumer: &mut crate::ring::Consumer,
        deadline: Option<Instant>,
    ) -> Result<(u8, T)> {
        let frame = consumer.peek(deadline)?;
        let value = decode_serde(frame.bytes())?;
        Ok((frame.kind(), value))
    }

    /// A type whose decoding always fails with serde's own custom error,
    /// as a user's `Deserialize` impl would.
    #[derive(Debug)]
    struct Refuses;
    impl<'de> Deserialize<'de> for Refuses {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            let _ = u8::deserialize(d)?;
            Err(serde::de::Error::custom("user says no"))
        }
    }

    #[test]
    fn a_reason_left_by_an_earlier_decode_is_not_given_to_a_later_one() {
        // One of ours failed and nobody reported it…
        let _: postcard::Error = crate::error::de_custom("the segment is gone");
        // …then an unrelated value fails with a custom error of its own.
        let e = decode_serde::<Refuses>(&[1]).unwrap_err();
        assert!(!e.to_string().contains("segment is gone"), "{e}");
        // A reason raised during this decode is given.
        let _: postcard::Error = crate::error::de_custom("the segment is gone");
        let e = Error::codec("decode value", postcard::Error::SerdeDeCustom);
        assert!(e.to_string().contains("segment is gone"), "{e}");
    }

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
        }
        // Over the ring's largest frame: streamed in pieces, read back whole.
        let big: Vec<u8> = (0..ring.max_payload() + 1).map(|i| i as u8).collect();
        push_value(&mut p, 1, &big, None).unwrap();
        assert_eq!(pop_value::<Vec<u8>>(&mut c, None).unwrap(), (1, big));
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
    let Some((&sel, bytes)) = data.split_first() else {
        return false;
    };
    match sel % 4 {
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
        // A queue's numbers cross fixed width: any 8 bytes are a `u64`
        // and an `f64`, anything else a codec error.
        2 => {
            use crate::queue::item;
            match (item::decode::<u64>(bytes), item::decode::<f64>(bytes)) {
                (Ok(n), Ok(x)) => {
                    let mut buf = [0u8; 8];
                    assert_eq!(item::encode_into(&n, &mut buf).expect("re-encode"), 8);
                    assert_eq!(&buf[..], bytes);
                    assert_eq!(x.to_bits(), n);
                    true
                }
                (Err(a), Err(b)) => {
                    assert_eq!((a.kind(), b.kind()), (ErrorKind::Codec, ErrorKind::Codec));
                    assert_ne!(bytes.len(), 8);
                    false
                }
                other => panic!("u64 and f64 disagree on {} bytes: {other:?}", bytes.len()),
            }
        }
        // A queue's batch frame of `u64`s (after a byte of budget): the
        // items at its cursor, as many as the budget allows, or a
        // protocol error; never a panic.
        _ => {
            use crate::queue::item;
            use crate::ring::Took;
            let Some((&budget, frame)) = bytes.split_first() else {
                return false;
            };
            let budget = usize::from(budget).max(1);
            let mut out = Vec::new();
            match item::take_many::<u64>(crate::queue::KIND_BATCH, frame, budget, &mut out) {
                Ok(took) => {
                    let mut word = [0u8; 8];
                    word.copy_from_slice(&frame[..8]);
                    let cursor = u64::from_ne_bytes(word) as usize;
                    let count = (frame.len() - 8) / 8;
                    let n = match took {
                        Took::All(n) => {
                            assert_eq!(cursor + n, count);
                            n
                        }
                        Took::Part { n, cursor: next } => {
                            assert_eq!(next as usize, cursor + n);
                            assert!((next as usize) < count);
                            n
                        }
                    };
                    assert!((1..=budget).contains(&n));
                    assert_eq!(out.len(), n);
                    for (i, v) in out.iter().enumerate() {
                        let at = 8 + (cursor + i) * 8;
                        assert_eq!(v.to_ne_bytes()[..], frame[at..at + 8]);
                    }
                    true
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
                    false
                }
            }
        }
    }
}
