//! What the manager's server holds, and how it answers one request.
//!
//! Objects are dicts (`HashMap<key bytes, Entry>`) and lists
//! (`Vec<Entry>`) of postcard bytes; the server never decodes them. Each
//! entry carries a version drawn from one counter that only grows, so a
//! version names one write of one entry for the manager's lifetime: a
//! compare-and-set on it cannot be fooled by a remove and re-insert, or
//! (in a list) by other entries shifting into the index.
//!
//! User objects (`Managed<T>`) are `Box<dyn Any>`, built and changed
//! only by the trampolines of named functions (`object.rs`), each checked
//! against the manager's key before it runs.
//!
//! A request is parsed whole before anything changes: a frame that breaks
//! off midway changes nothing, so every operation is all or nothing. (A
//! user method is the exception it must be: it changes what it changes,
//! even if it then panics.)

use std::any::Any;
use std::collections::HashMap;

use super::object::{CallFn, NewFn};
use super::wire::{op, Reader, Writer, STATUS_FAILED, STATUS_OK, STATUS_REFUSED};
use crate::error::{Error, ErrorKind, Result};
use crate::task::{Resolved, TaskKey};

struct Entry {
    version: u64,
    value: Vec<u8>,
}

enum Object {
    Dict(HashMap<Vec<u8>, Entry>),
    List(Vec<Entry>),
    /// A `Managed<T>`'s object, and `T`'s name (for a clear error when a
    /// method of another type is sent).
    User {
        value: Box<dyn Any>,
        type_name: &'static str,
    },
}

/// Every object of one manager.
pub(crate) struct Store {
    objects: HashMap<u64, Object>,
    last_id: u64,
    last_version: u64,
    constructors: Resolved<NewFn>,
    methods: Resolved<CallFn>,
}

/// Starts a reply that refuses the request, with a reason for the client.
fn refuse(reply: &mut Vec<u8>, why: &str) {
    reply.clear();
    reply.push(STATUS_REFUSED);
    reply.extend_from_slice(why.as_bytes());
}

/// Starts a reply that reports user code's failure (an error or a panic).
fn failed(reply: &mut Vec<u8>, e: &Error) {
    reply.clear();
    reply.push(STATUS_FAILED);
    let report = (e.kind(), e.context(), e.panic_info());
    // A report of a few strings always encodes; if it did not, the client
    // would read a frame cut short, a protocol error, not a success.
    if let Ok(bytes) = postcard::to_stdvec(&report) {
        reply.extend_from_slice(&bytes);
    }
}

fn out_of_range(reply: &mut Vec<u8>, index: u64, len: usize) {
    refuse(
        reply,
        &format!("index {index} is out of range for a list of {len}"),
    );
}

/// An entry's version and value (`flag | version | bytes`), or flag 0.
fn entry_out(w: &mut Writer<'_>, e: Option<&Entry>) -> Result<()> {
    match e {
        None => {
            w.u8(0);
        }
        Some(e) => {
            w.u8(1).u64(e.version).bytes(&e.value)?;
        }
    }
    Ok(())
}

impl Store {
    /// An empty store that runs only functions named under `key`.
    pub(crate) fn new(key: TaskKey) -> Store {
        Store {
            objects: HashMap::new(),
            last_id: 0,
            last_version: 0,
            constructors: Resolved::new(key),
            methods: Resolved::new(key),
        }
    }

    /// Answers one request into `reply`. `Err` only for a frame that
    /// breaks the protocol (the server then drops that client); a request
    /// that is well formed but cannot be done (an index out of range, a
    /// list operation on a dict) gets a refusal in `reply`.
    pub(crate) fn handle(&mut self, req: &[u8], reply: &mut Vec<u8>) -> Result<()> {
        reply.clear();
        reply.push(STATUS_OK);
        let mut r = Reader::new(req);
        let code = r.u8()?;
        let id = r.u64()?;
        if code == op::NEW_DICT || code == op::NEW_LIST {
            r.end()?;
            self.last_id += 1;
            let object = if code == op::NEW_DICT {
                Object::Dict(HashMap::new())
            } else {
                Object::List(Vec::new())
            };
            self.objects.insert(self.last_id, object);
            Writer(reply).u64(self.last_id);
            return Ok(());
        }
        if code == op::NEW_OBJECT {
            let task = r.task()?;
            let args = r.bytes()?;
            r.end()?;
            let built = self
                .constructors
                .get(task)
                .map_err(|why| refused_name("constructor", why))
                .and_then(|new| new(args));
            match built {
                Ok((value, type_name)) => {
                    self.last_id += 1;
                    let object = Object::User { value, type_name };
                    self.objects.insert(self.last_id, object);
                    Writer(reply).u64(self.last_id);
                }
                Err(e) => failed(reply, &e),
            }
            return Ok(());
        }
        let Store {
            objects,
            last_version,
            methods,
            ..
        } = self;
        let mut next_version = || {
            *last_version += 1;
            *last_version
        };
        match objects.get_mut(&id) {
            None => {
                refuse(reply, &format!("the manager holds no object {id}"));
                Ok(())
            }
            Some(Object::Dict(d)) => dict_op(d, code, r, reply, &mut next_version),
            Some(Object::List(l)) => list_op(l, code, r, reply, &mut next_version),
            Some(Object::User { value, type_name }) => {
                if code != op::O_CALL {
                    refuse(
                        reply,
                        &format!("operation {code} is not one of a user object"),
                    );
                    return Ok(());
                }
                let task = r.task()?;
                let args = r.bytes()?;
                r.end()?;
                let done = methods
                    .get(task)
                    .map_err(|why| refused_name("method", why))
                    .and_then(|call| call(&mut **value, type_name, args));
                match done {
                    Ok(out) => {
                        Writer(reply).bytes(&out)?;
                    }
                    Err(e) => failed(reply, &e),
                }
                Ok(())
            }
        }
    }
}

/// A constructor's or method's name the server will not run: forged, of
/// another binary, or not of that kind.
fn refused_name(what: &str, why: crate::task::Invalid) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("the {what}'s name was refused: {why}"),
    )
}

fn dict_op(
    d: &mut HashMap<Vec<u8>, Entry>,
    code: u8,
    mut r: Reader<'_>,
    reply: &mut Vec<u8>,
    next_version: &mut impl FnMut() -> u64,
) -> Result<()> {
    let mut w = Writer(reply);
    match code {
        op::D_GET => {
            let key = r.bytes()?;
            r.end()?;
            entry_out(&mut w, d.get(key))?;
        }
        op::D_INSERT | op::D_SET | op::D_SETDEFAULT => {
            let key = r.bytes()?;
            let value = r.bytes()?;
            r.end()?;
            if code == op::D_SETDEFAULT {
                let e = d.entry(key.to_vec()).or_insert_with(|| Entry {
                    version: next_version(),
                    value: value.to_vec(),
                });
                w.bytes(&e.value)?;
            } else {
                let new = Entry {
                    version: next_version(),
                    value: value.to_vec(),
                };
                let old = d.insert(key.to_vec(), new);
                if code == op::D_INSERT {
                    w.opt_bytes(old.as_ref().map(|e| &e.value[..]))?;
                }
            }
        }
        op::D_POP | op::D_REMOVE | op::D_CONTAINS => {
            let key = r.bytes()?;
            r.end()?;
            match code {
                op::D_POP => {
                    let old = d.remove(key);
                    w.opt_bytes(old.as_ref().map(|e| &e.value[..]))?;
                }
                op::D_REMOVE => {
                    w.u8(u8::from(d.remove(key).is_some()));
                }
                _ => {
                    w.u8(u8::from(d.contains_key(key)));
                }
            }
        }
        op::D_LEN | op::D_KEYS | op::D_VALUES | op::D_ITEMS | op::D_CLEAR => {
            r.end()?;
            match code {
                op::D_LEN => {
                    w.u64(d.len() as u64);
                }
                op::D_CLEAR => d.clear(),
                _ => {
                    w.u64(d.len() as u64);
                    for (k, e) in d.iter() {
                        if code != op::D_VALUES {
                            w.bytes(k)?;
                        }
                        if code != op::D_KEYS {
                            w.bytes(&e.value)?;
                        }
                    }
                }
            }
        }
        op::D_UPDATE => {
            let n = r.count(8)?;
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                pairs.push((r.bytes()?, r.bytes()?));
            }
            r.end()?;
            for (k, v) in pairs {
                let e = Entry {
                    version: next_version(),
                    value: v.to_vec(),
                };
                d.insert(k.to_vec(), e);
            }
        }
        op::D_CAS => {
            let key = r.bytes()?;
            let expected = r.u64()?;
            let value = r.opt_bytes()?;
            r.end()?;
            let current = d.get(key).map_or(0, |e| e.version);
            if current == expected {
                match value {
                    Some(v) => {
                        let version = next_version();
                        d.insert(
                            key.to_vec(),
                            Entry {
                                version,
                                value: v.to_vec(),
                            },
                        );
                    }
                    None => {
                        d.remove(key);
                    }
                }
                w.u8(1);
            } else {
                w.u8(0);
                entry_out(&mut w, d.get(key))?;
            }
        }
        _ => refuse(reply, &format!("operation {code} is not one of a dict")),
    }
    Ok(())
}

fn index(r: &mut Reader<'_>) -> Result<u64> {
    r.u64()
}

/// `Some(i)` if `i < len` (or `<= len` where `end_ok`).
fn checked(i: u64, len: usize, end_ok: bool) -> Option<usize> {
    let i = usize::try_from(i).ok()?;
    (i < len || (end_ok && i == len)).then_some(i)
}

fn list_op(
    l: &mut Vec<Entry>,
    code: u8,
    mut r: Reader<'_>,
    reply: &mut Vec<u8>,
    next_version: &mut impl FnMut() -> u64,
) -> Result<()> {
    let mut w = Writer(reply);
    match code {
        op::L_PUSH => {
            let value = r.bytes()?;
            r.end()?;
            l.push(Entry {
                version: next_version(),
                value: value.to_vec(),
            });
        }
        op::L_POP => {
            r.end()?;
            let last = l.pop();
            w.opt_bytes(last.as_ref().map(|e| &e.value[..]))?;
        }
        op::L_INSERT | op::L_SET => {
            let i = index(&mut r)?;
            let value = r.bytes()?;
            r.end()?;
            let Some(at) = checked(i, l.len(), code == op::L_INSERT) else {
                out_of_range(reply, i, l.len());
                return Ok(());
            };
            let e = Entry {
                version: next_version(),
                value: value.to_vec(),
            };
            if code == op::L_INSERT {
                l.insert(at, e);
            } else {
                l[at] = e;
            }
        }
        op::L_GET => {
            let i = index(&mut r)?;
            r.end()?;
            let e = checked(i, l.len(), false).map(|at| &l[at]);
            entry_out(&mut w, e)?;
        }
        op::L_LEN | op::L_SNAPSHOT | op::L_CLEAR => {
            r.end()?;
            match code {
                op::L_LEN => {
                    w.u64(l.len() as u64);
                }
                op::L_CLEAR => l.clear(),
                _ => {
                    w.u64(l.len() as u64);
                    for e in l.iter() {
                        w.bytes(&e.value)?;
                    }
                }
            }
        }
        op::L_EXTEND => {
            let n = r.count(4)?;
            let mut values = Vec::with_capacity(n);
            for _ in 0..n {
                values.push(r.bytes()?);
            }
            r.end()?;
            for v in values {
                l.push(Entry {
                    version: next_version(),
                    value: v.to_vec(),
                });
            }
        }
        op::L_REMOVE => {
            let value = r.bytes()?;
            r.end()?;
            let found = l.iter().position(|e| e.value == value);
            if let Some(at) = found {
                l.remove(at);
            }
            w.u8(u8::from(found.is_some()));
        }
        op::L_CAS => {
            let i = index(&mut r)?;
            let expected = r.u64()?;
            let value = r.bytes()?;
            r.end()?;
            let Some(at) = checked(i, l.len(), false) else {
                out_of_range(reply, i, l.len());
                return Ok(());
            };
            if l[at].version == expected {
                l[at] = Entry {
                    version: next_version(),
                    value: value.to_vec(),
                };
                w.u8(1);
            } else {
                w.u8(0);
                entry_out(&mut w, Some(&l[at]))?;
            }
        }
        _ => refuse(reply, &format!("operation {code} is not one of a list")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::manager::object::{constructor_name, method_name};
    use crate::task::TaskRef;

    const KEY: TaskKey = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];

    fn call(store: &mut Store, build: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
        let mut req = Vec::new();
        build(&mut Writer(&mut req));
        let mut reply = Vec::new();
        store.handle(&req, &mut reply).unwrap();
        reply
    }

    #[test]
    fn a_compare_and_set_on_a_stale_version_changes_nothing() {
        let mut s = Store::new(KEY);
        let id = call(&mut s, |w| {
            w.u8(op::NEW_DICT).u64(0);
        });
        let id = Reader::new(&id[1..]).u64().unwrap();
        call(&mut s, |w| {
            w.u8(op::D_SET)
                .u64(id)
                .bytes(b"k")
                .unwrap()
                .bytes(b"1")
                .unwrap();
        });
        let got = call(&mut s, |w| {
            w.u8(op::D_GET).u64(id).bytes(b"k").unwrap();
        });
        let mut r = Reader::new(&got[1..]);
        assert!(r.bool().unwrap());
        let v = r.u64().unwrap();
        // Removed and re-inserted with the same bytes: a new version.
        call(&mut s, |w| {
            w.u8(op::D_REMOVE).u64(id).bytes(b"k").unwrap();
        });
        call(&mut s, |w| {
            w.u8(op::D_SET)
                .u64(id)
                .bytes(b"k")
                .unwrap()
                .bytes(b"1")
                .unwrap();
        });
        let cas = call(&mut s, |w| {
            w.u8(op::D_CAS)
                .u64(id)
                .bytes(b"k")
                .unwrap()
                .u64(v)
                .opt_bytes(Some(b"2"))
                .unwrap();
        });
        assert_eq!(cas[1], 0, "stale version must conflict");
    }

    #[test]
    fn a_frame_cut_short_is_a_protocol_error_and_changes_nothing() {
        let mut s = Store::new(KEY);
        let id = call(&mut s, |w| {
            w.u8(op::NEW_LIST).u64(0);
        });
        let id = Reader::new(&id[1..]).u64().unwrap();
        let mut req = Vec::new();
        Writer(&mut req)
            .u8(op::L_EXTEND)
            .u64(id)
            .u64(2)
            .bytes(b"a")
            .unwrap()
            .bytes(b"b")
            .unwrap();
        req.pop();
        let mut reply = Vec::new();
        assert!(s.handle(&req, &mut reply).is_err());
        let len = call(&mut s, |w| {
            w.u8(op::L_LEN).u64(id);
        });
        assert_eq!(Reader::new(&len[1..]).u64().unwrap(), 0);
    }

    struct Cell(u32);

    fn make(n: u32) -> Cell {
        Cell(n)
    }

    fn bump(c: &mut Cell, by: u32) -> u32 {
        c.0 += by;
        c.0
    }

    fn new_cell(s: &mut Store, task: TaskRef) -> Vec<u8> {
        call(s, |w| {
            w.u8(op::NEW_OBJECT).u64(0).task(task).value(&1u32).unwrap();
        })
    }

    fn bump_cell(s: &mut Store, id: u64, task: TaskRef) -> Vec<u8> {
        call(s, |w| {
            w.u8(op::O_CALL).u64(id).task(task).value(&2u32).unwrap();
        })
    }

    /// The error kind a `STATUS_FAILED` reply reports.
    fn failure(reply: &[u8]) -> ErrorKind {
        assert_eq!(reply[0], STATUS_FAILED);
        postcard::from_bytes::<(ErrorKind, String, Option<crate::PanicInfo>)>(&reply[1..])
            .unwrap()
            .0
    }

    #[test]
    fn forged_or_foreign_names_are_refused_and_never_run() {
        let mut s = Store::new(KEY);
        let ctor = constructor_name(&make, KEY);
        let method = method_name(&bump, KEY);
        let reply = new_cell(&mut s, ctor);
        assert_eq!(reply[0], STATUS_OK);
        let id = Reader::new(&reply[1..]).u64().unwrap();

        let forged = TaskRef::from_words([0x1000, 0xdead_beef, 0x1234_5678]);
        let other_key = method_name(&bump, [1, 2]);
        for bad in [forged, other_key] {
            assert_eq!(failure(&new_cell(&mut s, bad)), ErrorKind::Protocol);
            assert_eq!(failure(&bump_cell(&mut s, id, bad)), ErrorKind::Protocol);
        }
        // Genuine names of the wrong kind: a method as a constructor, a
        // constructor as a method.
        assert_eq!(failure(&new_cell(&mut s, method)), ErrorKind::Protocol);
        assert_eq!(failure(&bump_cell(&mut s, id, ctor)), ErrorKind::Protocol);
        assert_eq!(s.objects.len(), 1, "no object was made");

        let reply = bump_cell(&mut s, id, method);
        assert_eq!(reply[0], STATUS_OK);
        let out = Reader::new(&reply[1..]).value::<u32>().unwrap();
        assert_eq!(out, 3, "nothing ran before: the cell held 1");
    }

    #[test]
    fn a_method_of_another_type_is_refused_and_the_object_kept() {
        fn other(v: &mut Vec<u8>, (): ()) -> usize {
            v.pop();
            v.len()
        }
        let mut s = Store::new(KEY);
        let reply = new_cell(&mut s, constructor_name(&make, KEY));
        let id = Reader::new(&reply[1..]).u64().unwrap();
        let wrong = call(&mut s, |w| {
            w.u8(op::O_CALL)
                .u64(id)
                .task(method_name(&other, KEY))
                .value(&())
                .unwrap();
        });
        assert_eq!(failure(&wrong), ErrorKind::InvalidState);
        // Arguments of the wrong type are a codec error, and run nothing.
        let bad_args = call(&mut s, |w| {
            w.u8(op::O_CALL)
                .u64(id)
                .task(method_name(&bump, KEY))
                .bytes(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .unwrap();
        });
        assert_eq!(failure(&bad_args), ErrorKind::Codec);
        // A dict operation on the object, a method on a dict: refused.
        let as_dict = call(&mut s, |w| {
            w.u8(op::D_LEN).u64(id);
        });
        assert_eq!(as_dict[0], STATUS_REFUSED);
        let d = call(&mut s, |w| {
            w.u8(op::NEW_DICT).u64(0);
        });
        let d = Reader::new(&d[1..]).u64().unwrap();
        assert_eq!(
            bump_cell(&mut s, d, method_name(&bump, KEY))[0],
            STATUS_REFUSED
        );

        let reply = bump_cell(&mut s, id, method_name(&bump, KEY));
        assert_eq!(Reader::new(&reply[1..]).value::<u32>().unwrap(), 3);
    }

    #[test]
    fn a_user_frame_cut_short_is_a_protocol_error() {
        let mut s = Store::new(KEY);
        let mut req = Vec::new();
        Writer(&mut req)
            .u8(op::NEW_OBJECT)
            .u64(0)
            .task(constructor_name(&make, KEY))
            .value(&1u32)
            .unwrap();
        for cut in 0..req.len() {
            let mut reply = Vec::new();
            assert!(s.handle(&req[..cut], &mut reply).is_err());
        }
        assert!(s.objects.is_empty());
    }
}
