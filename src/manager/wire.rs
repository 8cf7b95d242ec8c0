//! The manager's frames: one request from a client, one reply from the
//! server, each one `send_bytes` message on the client's own pipe.
//!
//! A request is `op:u8 | object:u64 | fields`, a reply `status:u8 |
//! fields` (status 0: done; 1: refused, then a UTF-8 reason; 2: user
//! code failed, see [`STATUS_FAILED`]). Fields are little-endian `u64`s,
//! `u8` flags and byte strings (`len:u32 | bytes`); keys and values are
//! postcard bytes the server never decodes, so one server holds every
//! type and typing stays with the proxies. User objects are the one
//! exception: the server decodes a method's arguments and encodes its
//! result, inside the named function's own trampoline (`object.rs`).
//!
//! The server reads what any client process wrote: every read here is
//! bounds-checked and answers `Protocol`, never a panic.

use serde::Serialize;

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::task::TaskRef;

/// The operations, one byte each.
pub(crate) mod op {
    pub(crate) const NEW_DICT: u8 = 1;
    pub(crate) const NEW_LIST: u8 = 2;
    /// `task:3×u64 | args`: a user object built by a named constructor.
    pub(crate) const NEW_OBJECT: u8 = 3;

    pub(crate) const D_GET: u8 = 10;
    pub(crate) const D_INSERT: u8 = 11;
    pub(crate) const D_POP: u8 = 12;
    pub(crate) const D_REMOVE: u8 = 13;
    pub(crate) const D_CONTAINS: u8 = 14;
    pub(crate) const D_LEN: u8 = 15;
    pub(crate) const D_KEYS: u8 = 16;
    pub(crate) const D_VALUES: u8 = 17;
    pub(crate) const D_ITEMS: u8 = 18;
    pub(crate) const D_UPDATE: u8 = 19;
    pub(crate) const D_SETDEFAULT: u8 = 20;
    pub(crate) const D_CLEAR: u8 = 21;
    pub(crate) const D_CAS: u8 = 22;
    pub(crate) const D_SET: u8 = 23;

    pub(crate) const L_PUSH: u8 = 30;
    pub(crate) const L_POP: u8 = 31;
    pub(crate) const L_INSERT: u8 = 32;
    pub(crate) const L_GET: u8 = 33;
    pub(crate) const L_SET: u8 = 34;
    pub(crate) const L_LEN: u8 = 35;
    pub(crate) const L_EXTEND: u8 = 36;
    pub(crate) const L_REMOVE: u8 = 37;
    pub(crate) const L_SNAPSHOT: u8 = 38;
    pub(crate) const L_CLEAR: u8 = 39;
    pub(crate) const L_CAS: u8 = 40;

    /// `task:3×u64 | args`: a named method run on a user object.
    pub(crate) const O_CALL: u8 = 50;
}

pub(crate) const STATUS_OK: u8 = 0;
pub(crate) const STATUS_REFUSED: u8 = 1;
/// Then postcard `(ErrorKind, reason, Option<PanicInfo>)`: user code the
/// server ran (a constructor, a method) failed or panicked.
pub(crate) const STATUS_FAILED: u8 = 2;

/// Appends fields to a frame.
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A byte string: `len:u32 | bytes`.
    pub(crate) fn bytes(&mut self, b: &[u8]) -> Result<&mut Self> {
        let len = u32::try_from(b.len())
            .map_err(|_| Error::new(ErrorKind::Codec, "a key or value over 4 GiB"))?;
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(b);
        Ok(self)
    }

    /// A value in postcard form, as a byte string (encoded in place).
    pub(crate) fn value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<&mut Self> {
        let len = codec::serde_len(v)?;
        let len32 = u32::try_from(len)
            .map_err(|_| Error::new(ErrorKind::Codec, "a key or value over 4 GiB"))?;
        self.0.extend_from_slice(&len32.to_le_bytes());
        let start = self.0.len();
        self.0.resize(start + len, 0);
        codec::encode_serde_into(v, &mut self.0[start..])?;
        Ok(self)
    }

    /// A task reference: its three words.
    pub(crate) fn task(&mut self, t: TaskRef) -> &mut Self {
        for w in t.to_words() {
            self.u64(w);
        }
        self
    }

    /// `None` as flag 0; `Some(b)` as flag 1 and the byte string.
    pub(crate) fn opt_bytes(&mut self, b: Option<&[u8]>) -> Result<&mut Self> {
        match b {
            None => Ok(self.u8(0)),
            Some(b) => self.u8(1).bytes(b),
        }
    }
}

/// Reads fields from a frame; every read is checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

fn short() -> Error {
    Error::new(ErrorKind::Protocol, "a manager frame ends early")
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(short());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::new(ErrorKind::Protocol, "a manager flag not 0 or 1")),
        }
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()?;
        self.take(usize::try_from(len).map_err(|_| short())?)
    }

    pub(crate) fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>> {
        Ok(if self.bool()? {
            Some(self.bytes()?)
        } else {
            None
        })
    }

    /// A task reference's three words, not yet checked
    /// ([`TaskRef::resolve_as`] does that).
    pub(crate) fn task(&mut self) -> Result<TaskRef> {
        Ok(TaskRef::from_words([self.u64()?, self.u64()?, self.u64()?]))
    }

    /// A count of items that follow, each at least `min_bytes` long: a
    /// count the rest of the frame cannot hold is refused before anything
    /// is allocated for it.
    pub(crate) fn count(&mut self, min_bytes: usize) -> Result<usize> {
        let n = usize::try_from(self.u64()?).map_err(|_| short())?;
        if n.saturating_mul(min_bytes.max(1)) > self.buf.len() {
            return Err(short());
        }
        Ok(n)
    }

    /// Decodes a byte string as a `T`.
    pub(crate) fn value<T: serde::de::DeserializeOwned>(&mut self) -> Result<T> {
        codec::decode_serde(self.bytes()?)
    }

    /// The frame must end here.
    pub(crate) fn end(&self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Protocol,
                "trailing bytes after a manager frame",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fields_round_trip() {
        let mut buf = Vec::new();
        Writer(&mut buf)
            .u8(7)
            .u64(u64::MAX - 3)
            .value(&"key")
            .unwrap()
            .opt_bytes(None)
            .unwrap()
            .opt_bytes(Some(b"xy"))
            .unwrap();
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), u64::MAX - 3);
        assert_eq!(r.value::<String>().unwrap(), "key");
        assert_eq!(r.opt_bytes().unwrap(), None);
        assert_eq!(r.opt_bytes().unwrap(), Some(&b"xy"[..]));
        r.end().unwrap();
    }

    #[test]
    fn a_count_the_frame_cannot_hold_is_refused() {
        let mut buf = Vec::new();
        Writer(&mut buf).u64(1 << 40);
        let e = Reader::new(&buf).count(4).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
    }

    proptest! {
        #[test]
        fn any_bytes_read_as_fields_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&data);
            let _ = r.u8();
            let _ = r.opt_bytes();
            let _ = r.count(8);
            let _ = r.bytes();
            let _ = r.u64();
            let _ = r.end();
        }
    }
}
