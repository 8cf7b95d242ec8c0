//! `List<T>`: the proxy of a manager's list.

use std::borrow::Borrow;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::wire::op;
use super::{entry, many, opt_value, write_many, Handle};
use crate::error::{Error, ErrorKind, Result};

/// A list held by a [`Manager`](crate::Manager) (Python's
/// `manager.list()` proxy, a `ListProxy`).
///
/// A cheap handle, as [`Dict`](crate::Dict) is: clone it, pass it to
/// children, use it from any thread; every call is one atomic round trip.
/// An index out of range is an error of kind
/// [`InvalidState`](crate::ErrorKind::InvalidState) (Python's
/// `IndexError`), except in [`get`](List::get), which answers `None` as
/// `Vec::get` does.
///
/// # Errors
/// Every call: as [`Dict`](crate::Dict)'s.
///
/// ```
/// use multiproc::{List, Manager, Process};
///
/// fn report(l: List<String>) {
///     l.push(&format!("child {}", std::process::id())).unwrap();
/// }
///
/// fn main() {
///     multiproc::init();
///     let manager = Manager::new().unwrap();
///     let l = manager.list().unwrap();
///     Process::spawn(report, l.clone()).unwrap().join().unwrap();
///     assert_eq!(l.len().unwrap(), 1);
/// }
/// ```
pub struct List<T> {
    handle: Handle,
    _types: PhantomData<fn() -> T>,
}

impl<T> Clone for List<T> {
    fn clone(&self) -> Self {
        List::from_handle(self.handle.clone())
    }
}

impl<T> std::fmt::Debug for List<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("List").field("id", &self.handle.id).finish()
    }
}

impl<T> Serialize for List<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(List::from_handle(Handle::deserialize(d)?))
    }
}

impl<T> List<T> {
    pub(super) fn from_handle(handle: Handle) -> Self {
        List {
            handle,
            _types: PhantomData,
        }
    }
}

fn index(i: usize) -> u64 {
    i as u64
}

impl<T: Serialize + DeserializeOwned> List<T> {
    /// Appends `value` (Python's `l.append(v)`).
    ///
    /// # Errors
    /// As every call of [`List`](crate::List#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let l = m.list::<u8>().unwrap();
    ///     l.push(&1).unwrap();
    ///     assert_eq!(l.snapshot().unwrap(), [1]);
    /// }
    /// ```
    pub fn push(&self, value: &T) -> Result<()> {
        self.handle.call(
            "List::push",
            op::L_PUSH,
            |w| {
                w.value(value)?;
                Ok(())
            },
            |_| Ok(()),
        )
    }

    /// Removes and returns the last item, if any (Python's `l.pop()`,
    /// which raises `IndexError` where this answers `None`).
    ///
    /// # Errors
    /// As every call of [`List`](crate::List#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let l = m.list::<u8>().unwrap();
    ///     l.extend([1, 2]).unwrap();
    ///     assert_eq!(l.pop().unwrap(), Some(2));
    /// }
    /// ```
    pub fn pop(&self) -> Result<Option<T>> {
        self.handle
            .call("List::pop", op::L_POP, |_| Ok(()), opt_value)
    }

    /// Inserts `value` before position `index` (`index == len` appends),
    /// as `Vec::insert` does (Python's `l.insert(i, v)`, which clamps an
    /// index past the end where this refuses it).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if `index > len`.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let l = m.list::<u8>().unwrap();
    ///     l.extend([1, 3]).unwrap();
    ///     l.insert(1, &2).unwrap();
    ///     assert_eq!(l.snapshot().unwrap(), [1, 2, 3]);
    ///     assert!(l.insert(9, &9).is_err());
    /// }
    /// ```
    pub fn insert(&self, index: usize, value: &T) -> Result<()> {
        self.handle.call(
            "List::insert",
            op::L_INSERT,
            |w| {
                w.u64(self::index(index)).value(value)?;
                Ok(())
            },
            |_| Ok(()),
        )
    }

    /// The item at `index`, or `None` past the end (Python's `l[i]`, which
    /// raises `IndexError` there).
    ///
    /// # Errors
    /// As every call of [`List`](crate::List#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let l = m.list::<u8>().unwrap();
    ///     l.push(&5).unwrap();
    ///     assert_eq!(l.get(0).unwrap(), Some(5));
    ///     assert_eq!(l.get(1).unwrap(), None);
    /// }
    /// ```
    pub fn get(&self, index: usize) -> Result<Option<T>> {
        Ok(self.get_entry(index, "List::get")?.map(|(_, v)| v))
    }

    fn get_entry(&self, index: usize, call: &str) -> Result<Option<(u64, T)>> {
        self.handle.call(
            call,
            op::L_GET,
            |w| {
                w.u64(self::index(index));
                Ok(())
            },
            entry,
        )
    }

    /// Replaces the item at `index` (Python's `l[i] = v`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if `index >= len`.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let l = m.list::<u8>().unwrap();
    ///     l.push(&5).unwrap();
    ///     l.set(0, &6).unwrap();
    ///     assert_eq!(l.get(0).unwrap(), Some(6));
    ///     assert!(l.set(1, &7).is_err());
    /// }
    /// ```
    pub fn set(&self, index: usize, value: &T) -> Result<()> {
        self.handle.call(
            "List::set",
            op::L_SET,
            |w| {
                w.u64(self::index(index)).value(value)?;
                Ok(())
            },
            |_| Ok(()),
        )
    }

    /// The number of items (Python's `len(l)`).
    ///
    /// # Errors
    /// As every call of [`List`](crate::List#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let l = m.list::<u8>().unwrap();
    ///     assert_eq!(l.len().unwrap(), 0);
    /// }
    /// ```
    pub fn len(&self) -> Result<usize> {
        let n = self
            .handle
            .call("List::len", op::L_LEN, |_| Ok(()), |r| r.u64())?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// `true` if the list has no items (Python's `not l`).
    ///
    /// # Errors
    /// As every call of [`List`](crate::List#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     assert!(m.list::<u8>().unwrap().is_empty().unwrap());
    /// }
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Appends every item, in one atomic operation (Python's
    /// `l.extend(items)`).
    ///
    /// # Errors
    /// As every call of [`List`](crate::List#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let l = m.list::<u8>().unwrap();
    ///     l.extend([1, 2]).unwrap();
    ///     l.extend(&[3]).unwrap();
    ///     assert_eq!(l.snapshot().unwrap(), [1, 2, 3]);
    /// }
    /// ```
    pub fn extend<I>(&self, items: I) -> Result<()>
    where
        I: IntoIterator,
        I::Item: Borrow<T>,
    {
        self.handle.call(
            "List::extend",
            op::L_EXTEND,
            |w| {
                write_many(w, items, |w, x| {
                    w.value(x.borrow())?;
                    Ok(())
                })
            },
            |_| Ok(()),
        )
    }

    /// Removes the first item equal to `value` (by serialised form);
    /// `true` if there was one (Python's `l.remove(v)`, which raises
    /// `ValueError` where this answers `false`).
    ///
    /// # Errors
    /// As every call of [`List`](crate::List#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let l = m.list::<u8>().unwrap();
    ///     l.extend([1, 2, 1]).unwrap();
    ///     assert!(l.remove(&1).unwrap());
    ///     assert_eq!(l.snapshot().unwrap(), [2, 1]);
    /// }
    /// ```
    pub fn remove(&self, value: &T) -> Result<bool> {
        self.handle.call(
            "List::remove",
            op::L_REMOVE,
            |w| {
                w.value(value)?;
                Ok(())
            },
            |r| r.bool(),
        )
    }

    /// A copy of the whole list, taken at one instant (Python's `l[:]`).
    ///
    /// # Errors
    /// As every call of [`List`](crate::List#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let l = m.list::<String>().unwrap();
    ///     l.push(&"a".into()).unwrap();
    ///     assert_eq!(l.snapshot().unwrap(), ["a"]);
    /// }
    /// ```
    pub fn snapshot(&self) -> Result<Vec<T>> {
        self.handle.call(
            "List::snapshot",
            op::L_SNAPSHOT,
            |_| Ok(()),
            |r| many(r, 4, |r| r.value()),
        )
    }

    /// Removes every item (Python's `l.clear()`).
    ///
    /// # Errors
    /// As every call of [`List`](crate::List#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let l = m.list::<u8>().unwrap();
    ///     l.push(&1).unwrap();
    ///     l.clear().unwrap();
    ///     assert!(l.is_empty().unwrap());
    /// }
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.handle
            .call("List::clear", op::L_CLEAR, |_| Ok(()), |_| Ok(()))
    }

    /// Atomically replaces the item at `index` by `f(item)` and returns
    /// the new item (Python: `with lock: l[i] = f(l[i])`, here without a
    /// lock). As [`Dict::update_with`](crate::Dict::update_with), `f` runs
    /// here and may run again if another process changed that item (or
    /// moved another item to `index`) meanwhile.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if `index >= len`.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let l = m.list::<u32>().unwrap();
    ///     l.push(&1).unwrap();
    ///     assert_eq!(l.update_with(0, |x| x * 10).unwrap(), 10);
    /// }
    /// ```
    pub fn update_with<F>(&self, index: usize, mut f: F) -> Result<T>
    where
        F: FnMut(T) -> T,
    {
        const CALL: &str = "List::update_with";
        let out_of_range = || {
            Error::new(
                ErrorKind::InvalidState,
                format!("{CALL}: index {index} is out of range"),
            )
        };
        let mut current = self.get_entry(index, CALL)?.ok_or_else(out_of_range)?;
        loop {
            let (version, value) = current;
            let new = f(value);
            let conflict = self.handle.call(
                CALL,
                op::L_CAS,
                |w| {
                    w.u64(self::index(index)).u64(version).value(&new)?;
                    Ok(())
                },
                |r| {
                    if r.bool()? {
                        Ok(None)
                    } else {
                        let now = entry(r)?.ok_or_else(|| {
                            Error::new(ErrorKind::Protocol, "a conflict without the item")
                        })?;
                        Ok(Some(now))
                    }
                },
            )?;
            match conflict {
                None => return Ok(new),
                Some(now) => current = now,
            }
        }
    }
}
