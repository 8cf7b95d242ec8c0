//! `Dict<K, V>`: the proxy of a manager's dict.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::wire::op;
use super::{dict_entry, many, opt_value, update_entry, write_many, Handle};
use crate::error::Result;

/// A dict held by a [`Manager`](crate::Manager) (Python's
/// `manager.dict()` proxy, a `DictProxy`).
///
/// A cheap handle: clone it, pass it to children (it is `Serialize +
/// Deserialize`), use it from any thread. Every call is one round trip
/// to the manager and atomic on its own; [`update_with`](Dict::update_with)
/// is an atomic read-modify-write (`d[k] += 1` from many processes,
/// without a lock). Keys compare by their serialised form (postcard),
/// which is their equality for integers, strings, and tuples, enums and
/// structs of them (not for floats: `0.0` and `-0.0` are two keys).
///
/// # Errors
/// Every call: [`ErrorKind::PeerDied`](crate::ErrorKind::PeerDied) if the
/// manager died, [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown) after
/// it was shut down, [`ErrorKind::Codec`](crate::ErrorKind::Codec) if a key
/// or value does not (de)serialise as `K`/`V`.
///
/// ```
/// use multiproc::{Dict, Manager, Process};
///
/// fn fill(d: Dict<u32, String>) {
///     d.insert(&1, &"one".to_string()).unwrap();
/// }
///
/// fn main() {
///     multiproc::init();
///     let manager = Manager::new().unwrap();
///     let d = manager.dict().unwrap();
///     Process::spawn(fill, d.clone()).unwrap().join().unwrap();
///     assert_eq!(d.get(&1).unwrap().as_deref(), Some("one"));
/// }
/// ```
pub struct Dict<K, V> {
    handle: Handle,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Dict<K, V> {
    fn clone(&self) -> Self {
        Dict::from_handle(self.handle.clone())
    }
}

impl<K, V> std::fmt::Debug for Dict<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dict").field("id", &self.handle.id).finish()
    }
}

impl<K, V> Serialize for Dict<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, K, V> Deserialize<'de> for Dict<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Dict::from_handle(Handle::deserialize(d)?))
    }
}

impl<K, V> Dict<K, V> {
    pub(super) fn from_handle(handle: Handle) -> Self {
        Dict {
            handle,
            _types: PhantomData,
        }
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> Dict<K, V> {
    /// The value of `key`, if any (Python's `d.get(k)`).
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<u8, u8>().unwrap();
    ///     assert_eq!(d.get(&1).unwrap(), None);
    ///     d.insert(&1, &2).unwrap();
    ///     assert_eq!(d.get(&1).unwrap(), Some(2));
    /// }
    /// ```
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        Ok(dict_entry(&self.handle, "Dict::get", key)?.map(|(_, v)| v))
    }

    /// Sets `key` to `value` (Python's `d[k] = v`); returns the value it
    /// replaced, as `HashMap::insert` does.
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<String, i32>().unwrap();
    ///     assert_eq!(d.insert(&"a".into(), &1).unwrap(), None);
    ///     assert_eq!(d.insert(&"a".into(), &2).unwrap(), Some(1));
    /// }
    /// ```
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>> {
        self.handle.call(
            "Dict::insert",
            op::D_INSERT,
            |w| {
                w.value(key)?.value(value)?;
                Ok(())
            },
            opt_value,
        )
    }

    /// Removes `key`; `true` if it was there (Python's `del d[k]`, which
    /// raises `KeyError` where this answers `false`).
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<u8, u8>().unwrap();
    ///     d.insert(&1, &1).unwrap();
    ///     assert!(d.remove(&1).unwrap());
    ///     assert!(!d.remove(&1).unwrap());
    /// }
    /// ```
    pub fn remove(&self, key: &K) -> Result<bool> {
        self.handle.call(
            "Dict::remove",
            op::D_REMOVE,
            |w| {
                w.value(key)?;
                Ok(())
            },
            |r| r.bool(),
        )
    }

    /// Removes `key` and returns its value, if it was there (Python's
    /// `d.pop(k, None)`).
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<u8, u8>().unwrap();
    ///     d.insert(&1, &9).unwrap();
    ///     assert_eq!(d.pop(&1).unwrap(), Some(9));
    ///     assert_eq!(d.pop(&1).unwrap(), None);
    /// }
    /// ```
    pub fn pop(&self, key: &K) -> Result<Option<V>> {
        self.handle.call(
            "Dict::pop",
            op::D_POP,
            |w| {
                w.value(key)?;
                Ok(())
            },
            opt_value,
        )
    }

    /// `true` if `key` is there (Python's `k in d`).
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<u8, u8>().unwrap();
    ///     d.insert(&1, &1).unwrap();
    ///     assert!(d.contains_key(&1).unwrap());
    ///     assert!(!d.contains_key(&2).unwrap());
    /// }
    /// ```
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.handle.call(
            "Dict::contains_key",
            op::D_CONTAINS,
            |w| {
                w.value(key)?;
                Ok(())
            },
            |r| r.bool(),
        )
    }

    /// The number of entries (Python's `len(d)`).
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<u8, u8>().unwrap();
    ///     d.update([(1, 1), (2, 2)]).unwrap();
    ///     assert_eq!(d.len().unwrap(), 2);
    /// }
    /// ```
    pub fn len(&self) -> Result<usize> {
        let n = self
            .handle
            .call("Dict::len", op::D_LEN, |_| Ok(()), |r| r.u64())?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// `true` if the dict has no entries (Python's `not d`).
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     assert!(m.dict::<u8, u8>().unwrap().is_empty().unwrap());
    /// }
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys, in no particular order (Python's `list(d.keys())`).
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<u8, u8>().unwrap();
    ///     d.update([(1, 10), (2, 20)]).unwrap();
    ///     let mut keys = d.keys().unwrap();
    ///     keys.sort();
    ///     assert_eq!(keys, [1, 2]);
    /// }
    /// ```
    pub fn keys(&self) -> Result<Vec<K>> {
        self.handle.call(
            "Dict::keys",
            op::D_KEYS,
            |_| Ok(()),
            |r| many(r, 4, |r| r.value()),
        )
    }

    /// The values, in no particular order (Python's `list(d.values())`).
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<u8, u8>().unwrap();
    ///     d.update([(1, 10), (2, 20)]).unwrap();
    ///     let mut values = d.values().unwrap();
    ///     values.sort();
    ///     assert_eq!(values, [10, 20]);
    /// }
    /// ```
    pub fn values(&self) -> Result<Vec<V>> {
        self.handle.call(
            "Dict::values",
            op::D_VALUES,
            |_| Ok(()),
            |r| many(r, 4, |r| r.value()),
        )
    }

    /// The entries, in no particular order (Python's `list(d.items())`),
    /// taken at one instant.
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<u8, u8>().unwrap();
    ///     d.insert(&1, &10).unwrap();
    ///     assert_eq!(d.items().unwrap(), [(1, 10)]);
    /// }
    /// ```
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        self.handle.call(
            "Dict::items",
            op::D_ITEMS,
            |_| Ok(()),
            |r| many(r, 8, |r| Ok((r.value()?, r.value()?))),
        )
    }

    /// Sets every pair, in one atomic operation (Python's
    /// `d.update(pairs)`).
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<char, u32>().unwrap();
    ///     d.update([('a', 1), ('b', 2)]).unwrap();
    ///     d.update(&[('b', 3)]).unwrap();
    ///     assert_eq!(d.get(&'b').unwrap(), Some(3));
    /// }
    /// ```
    pub fn update<I>(&self, pairs: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<(K, V)>,
    {
        self.handle.call(
            "Dict::update",
            op::D_UPDATE,
            |w| {
                write_many(w, pairs, |w, p| {
                    let (k, v) = p.borrow();
                    w.value(k)?.value(v)?;
                    Ok(())
                })
            },
            |_| Ok(()),
        )
    }

    /// The value of `key`, inserting `default` first if there is none
    /// (Python's `d.setdefault(k, default)`), atomically.
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<u8, u8>().unwrap();
    ///     assert_eq!(d.setdefault(&1, &5).unwrap(), 5);
    ///     assert_eq!(d.setdefault(&1, &6).unwrap(), 5);
    /// }
    /// ```
    pub fn setdefault(&self, key: &K, default: &V) -> Result<V> {
        self.handle.call(
            "Dict::setdefault",
            op::D_SETDEFAULT,
            |w| {
                w.value(key)?.value(default)?;
                Ok(())
            },
            |r| r.value(),
        )
    }

    /// Removes every entry (Python's `d.clear()`).
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<u8, u8>().unwrap();
    ///     d.insert(&1, &1).unwrap();
    ///     d.clear().unwrap();
    ///     assert!(d.is_empty().unwrap());
    /// }
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.handle
            .call("Dict::clear", op::D_CLEAR, |_| Ok(()), |_| Ok(()))
    }

    /// A copy of the whole dict, taken at one instant (Python's
    /// `d.copy()`).
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let d = m.dict::<u8, u8>().unwrap();
    ///     d.update([(1, 10), (2, 20)]).unwrap();
    ///     let copy = d.snapshot().unwrap();
    ///     assert_eq!(copy[&2], 20);
    /// }
    /// ```
    pub fn snapshot(&self) -> Result<HashMap<K, V>>
    where
        K: Eq + Hash,
    {
        Ok(self.items()?.into_iter().collect())
    }

    /// Atomically replaces the value of `key` by `f(current)` and returns
    /// the new value (Python: `with lock: d[k] = f(d.get(k))`, here
    /// without a lock). `f` gets `None` for a missing key; returning
    /// `None` removes it.
    ///
    /// `f` runs in the calling process, so it may capture anything. The
    /// write is a compare-and-set on the entry's version: if another
    /// process changed the entry since it was read, `f` runs again on
    /// the newer value. So `f` may run more than once; keep it free of
    /// side effects.
    ///
    /// # Errors
    /// As every call of [`Dict`](crate::Dict#errors).
    ///
    /// ```
    /// use multiproc::{Dict, Manager, Process};
    ///
    /// fn bump(d: Dict<String, u64>) {
    ///     for _ in 0..50 {
    ///         d.update_with(&"n".to_string(), |n| Some(n.unwrap_or(0) + 1)).unwrap();
    ///     }
    /// }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let m = Manager::new().unwrap();
    ///     let d = m.dict().unwrap();
    ///     let p = Process::spawn(bump, d.clone()).unwrap();
    ///     bump(d.clone());
    ///     p.join().unwrap();
    ///     assert_eq!(d.get(&"n".to_string()).unwrap(), Some(100));
    /// }
    /// ```
    pub fn update_with<F>(&self, key: &K, f: F) -> Result<Option<V>>
    where
        F: FnMut(Option<V>) -> Option<V>,
    {
        update_entry(&self.handle, "Dict::update_with", key, f)
    }
}
