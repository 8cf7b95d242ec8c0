//! `Namespace`: the proxy of a manager's namespace.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::wire::op;
use super::{dict_entry, many, update_entry, Handle};
use crate::error::Result;

/// Named fields of any serde type, held by a [`Manager`](crate::Manager)
/// (Python's `manager.Namespace()`: `ns.x = v` is
/// [`ns.set("x", &v)`](Namespace::set), `ns.x` is
/// [`ns.get::<T>("x")`](Namespace::get)).
///
/// Each field holds one value of whatever type it was set with; `get`
/// names the type to read it as (a mismatch is an error of kind
/// [`Codec`](crate::ErrorKind::Codec)). A cheap handle, as
/// [`Dict`](crate::Dict) is.
///
/// # Errors
/// Every call: as [`Dict`](crate::Dict)'s.
///
/// ```
/// use multiproc::{Manager, Namespace, Process};
///
/// fn child(ns: Namespace) {
///     let n: u32 = ns.get("n").unwrap().unwrap();
///     ns.set("reply", &format!("got {n}")).unwrap();
/// }
///
/// fn main() {
///     multiproc::init();
///     let manager = Manager::new().unwrap();
///     let ns = manager.namespace().unwrap();
///     ns.set("n", &7u32).unwrap();
///     Process::spawn(child, ns.clone()).unwrap().join().unwrap();
///     assert_eq!(ns.get::<String>("reply").unwrap().as_deref(), Some("got 7"));
/// }
/// ```
#[derive(Clone)]
pub struct Namespace {
    handle: Handle,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("id", &self.handle.id)
            .finish()
    }
}

impl Serialize for Namespace {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.handle.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Namespace::from_handle(Handle::deserialize(d)?))
    }
}

impl Namespace {
    pub(super) fn from_handle(handle: Handle) -> Self {
        Namespace { handle }
    }

    /// Sets field `name` to `value` (Python's `ns.name = value`).
    ///
    /// # Errors
    /// As every call of [`Namespace`](crate::Namespace#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let ns = m.namespace().unwrap();
    ///     ns.set("x", &vec![1, 2]).unwrap();
    ///     assert_eq!(ns.get::<Vec<i32>>("x").unwrap(), Some(vec![1, 2]));
    /// }
    /// ```
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.handle.call(
            "Namespace::set",
            op::D_SET,
            |w| {
                w.value(name)?.value(value)?;
                Ok(())
            },
            |_| Ok(()),
        )
    }

    /// Field `name` read as a `T`, or `None` if it is not set (Python's
    /// `ns.name`, which raises `AttributeError` there).
    ///
    /// # Errors
    /// As every call of [`Namespace`](crate::Namespace#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let ns = m.namespace().unwrap();
    ///     assert_eq!(ns.get::<u8>("missing").unwrap(), None);
    /// }
    /// ```
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        Ok(dict_entry(&self.handle, "Namespace::get", name)?.map(|(_, v)| v))
    }

    /// Removes field `name`; `true` if it was set (Python's `del ns.name`).
    ///
    /// # Errors
    /// As every call of [`Namespace`](crate::Namespace#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let ns = m.namespace().unwrap();
    ///     ns.set("x", &1u8).unwrap();
    ///     assert!(ns.remove("x").unwrap());
    ///     assert!(!ns.contains("x").unwrap());
    /// }
    /// ```
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.handle.call(
            "Namespace::remove",
            op::D_REMOVE,
            |w| {
                w.value(name)?;
                Ok(())
            },
            |r| r.bool(),
        )
    }

    /// `true` if field `name` is set (Python's `hasattr(ns, name)`).
    ///
    /// # Errors
    /// As every call of [`Namespace`](crate::Namespace#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let ns = m.namespace().unwrap();
    ///     ns.set("x", &()).unwrap();
    ///     assert!(ns.contains("x").unwrap());
    /// }
    /// ```
    pub fn contains(&self, name: &str) -> Result<bool> {
        self.handle.call(
            "Namespace::contains",
            op::D_CONTAINS,
            |w| {
                w.value(name)?;
                Ok(())
            },
            |r| r.bool(),
        )
    }

    /// The names of the fields set, in no particular order (Python's
    /// `vars(ns)`'s keys).
    ///
    /// # Errors
    /// As every call of [`Namespace`](crate::Namespace#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let ns = m.namespace().unwrap();
    ///     ns.set("x", &1u8).unwrap();
    ///     assert_eq!(ns.names().unwrap(), ["x"]);
    /// }
    /// ```
    pub fn names(&self) -> Result<Vec<String>> {
        self.handle.call(
            "Namespace::names",
            op::D_KEYS,
            |_| Ok(()),
            |r| many(r, 4, |r| r.value()),
        )
    }

    /// Atomically replaces field `name` by `f(current)` read as a `T`, and
    /// returns the new value; as [`Dict::update_with`](crate::Dict::update_with)
    /// (`None` in: not set; `None` out: remove it).
    ///
    /// # Errors
    /// As every call of [`Namespace`](crate::Namespace#errors).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let m = multiproc::Manager::new().unwrap();
    ///     let ns = m.namespace().unwrap();
    ///     ns.update_with::<u32, _>("n", |n| Some(n.unwrap_or(0) + 1)).unwrap();
    ///     assert_eq!(ns.get::<u32>("n").unwrap(), Some(1));
    /// }
    /// ```
    pub fn update_with<T, F>(&self, name: &str, f: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Option<T>,
    {
        update_entry(&self.handle, "Namespace::update_with", name, f)
    }
}
