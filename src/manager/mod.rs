//! `Manager`: Python's `multiprocessing.Manager()`, a server process that
//! owns shared dicts, lists and namespaces, and the proxies other
//! processes use them through.
//!
//! Files: `mod.rs` (`Manager`, the handle every proxy holds), `dict.rs`,
//! `list.rs`, `namespace.rs` (the proxies), `object.rs` (`Managed<T>`,
//! user objects and the named functions that run on them), `client.rs` (a process's pipe
//! to the server and the round trip), `server.rs` (the server loop),
//! `registry.rs` (how a client hands the server its pipe), `store.rs`
//! (the objects and how one request changes them), `wire.rs` (the
//! frames). Design: ARCHITECTURE.md, "Manager (src/manager/)".

mod client;
mod dict;
mod list;
mod namespace;
mod object;
mod registry;
mod server;
mod store;
mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use self::dict::Dict;
pub use self::list::List;
pub use self::namespace::Namespace;
pub use self::object::{Managed, Method};

use self::client::Link;
use self::registry::Registry;
use self::server::ServerArgs;
use self::wire::{op, Reader, Writer};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::doorbell::Doorbell;
use crate::process::Process;
use crate::sync::Event;

/// How long [`Manager::shutdown`] waits for the server to end before it
/// kills it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A server process holding shared dicts, lists and namespaces (Python's
/// `multiprocessing.Manager()`, started as by `Manager().start()`).
///
/// [`dict`](Manager::dict), [`list`](Manager::list) and
/// [`namespace`](Manager::namespace) create an object in the server and
/// return its proxy: a cheap `Clone + Serialize + Deserialize` handle
/// that any process may use, passed to children like every other type of
/// this crate. Each operation is one round trip to the server and is
/// atomic on its own; `update_with` (Python: `with lock: d[k] += 1`) is
/// an atomic read-modify-write that needs no lock. Your own types live
/// there too: [`object`](Manager::object) builds one in the server and
/// returns a [`Managed<T>`] whose methods run there (Python's
/// `BaseManager.register`).
///
/// Python's manager also hands out `Lock`, `Queue`, `Event`, `Value`…
/// proxies. Here the crate's own [`Lock`](crate::Lock),
/// [`Queue`](crate::Queue), [`Event`](crate::Event) and
/// [`SharedValue`](crate::SharedValue) do that job directly in shared
/// memory, faster and with the same way of passing them to children: use
/// them.
///
/// Failures: if the server dies, every proxy call returns
/// [`ErrorKind::PeerDied`] (within about 50 ms for a call already
/// waiting), never hangs. A client process killed midway leaves every
/// object as it was before or after its operation, and the server goes on
/// serving the others. The server is a child of the process that called
/// `new`, and dies with it as every [`Process`] does. Dropping the
/// `Manager` (or [`shutdown`](Manager::shutdown)) stops the server;
/// proxies used after that fail with [`ErrorKind::ShutDown`].
///
/// Objects live as long as the manager (Python frees one when its last
/// proxy goes; here proxies in many processes are not counted).
///
/// ```
/// use multiproc::{Dict, Manager, Process};
///
/// fn count(d: Dict<String, u64>) {
///     for _ in 0..100 {
///         d.update_with(&"hits".to_string(), |n| Some(n.unwrap_or(0) + 1)).unwrap();
///     }
/// }
///
/// fn main() {
///     multiproc::init();
///     let manager = Manager::new().unwrap();
///     let d = manager.dict::<String, u64>().unwrap();
///     let workers: Vec<_> = (0..2).map(|_| Process::spawn(count, d.clone()).unwrap()).collect();
///     for w in workers { w.join().unwrap(); }
///     assert_eq!(d.get(&"hits".to_string()).unwrap(), Some(200));
/// }
/// ```
pub struct Manager {
    link: Arc<Link>,
    server: Mutex<Option<Process<()>>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("pid", &self.link.server_pid())
            .finish()
    }
}

impl Manager {
    /// Starts the server process (Python's `Manager()`).
    ///
    /// # Errors
    /// As [`Process::spawn`] (this process must have run
    /// [`init`](crate::init)), or [`ErrorKind::NoSpace`] if shared memory
    /// is exhausted.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let manager = multiproc::Manager::new().unwrap();
    ///     assert_ne!(manager.pid(), std::process::id());
    /// }
    /// ```
    pub fn new() -> Result<Manager> {
        let registry = Registry::create()?;
        let bell = Doorbell::create()?;
        let stopped = Event::new()?;
        let [uid, k0, k1] = random_words()?;
        let args = ServerArgs {
            registry: registry.handle(),
            bell: bell.handle(),
            stopped: stopped.clone(),
            uid,
            key: [k0, k1],
        };
        let server = Process::builder()
            .name("multiproc-manager")
            .spawn(server::serve, args)?;
        let link = Link::new(uid, [k0, k1], server.pid(), registry, bell, stopped)?;
        Ok(Manager {
            link,
            server: Mutex::new(Some(server)),
        })
    }

    /// The server process's pid.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let manager = multiproc::Manager::new().unwrap();
    ///     assert!(manager.pid() > 0);
    /// }
    /// ```
    pub fn pid(&self) -> u32 {
        self.link.server_pid()
    }

    fn create(&self, call: &str, code: u8) -> Result<Handle> {
        let id = self.link.call(
            call,
            |w| {
                w.u8(code).u64(0);
                Ok(())
            },
            |r| r.u64(),
        )?;
        Ok(Handle {
            link: Arc::clone(&self.link),
            id,
        })
    }

    /// A new, empty shared dict (Python's `manager.dict()`). Keys compare
    /// by their serialised form, which for the usual key types (integers,
    /// strings, tuples and enums of them) is their equality.
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] after [`shutdown`](Manager::shutdown),
    /// [`ErrorKind::PeerDied`] if the server died.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let manager = multiproc::Manager::new().unwrap();
    ///     let d = manager.dict::<u32, String>().unwrap();
    ///     d.insert(&1, &"one".into()).unwrap();
    ///     assert_eq!(d.len().unwrap(), 1);
    /// }
    /// ```
    pub fn dict<K, V>(&self) -> Result<Dict<K, V>> {
        Ok(Dict::from_handle(
            self.create("Manager::dict", op::NEW_DICT)?,
        ))
    }

    /// A new, empty shared list (Python's `manager.list()`).
    ///
    /// # Errors
    /// As [`dict`](Manager::dict).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let manager = multiproc::Manager::new().unwrap();
    ///     let l = manager.list::<i64>().unwrap();
    ///     l.push(&7).unwrap();
    ///     assert_eq!(l.snapshot().unwrap(), [7]);
    /// }
    /// ```
    pub fn list<T>(&self) -> Result<List<T>> {
        Ok(List::from_handle(
            self.create("Manager::list", op::NEW_LIST)?,
        ))
    }

    /// A new, empty namespace: named fields of any serde type (Python's
    /// `manager.Namespace()`).
    ///
    /// # Errors
    /// As [`dict`](Manager::dict).
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let manager = multiproc::Manager::new().unwrap();
    ///     let ns = manager.namespace().unwrap();
    ///     ns.set("ready", &true).unwrap();
    ///     assert_eq!(ns.get::<bool>("ready").unwrap(), Some(true));
    /// }
    /// ```
    pub fn namespace(&self) -> Result<Namespace> {
        Ok(Namespace::from_handle(
            self.create("Manager::namespace", op::NEW_DICT)?,
        ))
    }

    /// A new user object: `init(args)` runs in the server, which keeps
    /// the `T` it returns, and every method called through the returned
    /// [`Managed<T>`] runs there too (Python's
    /// `MyManager.register('Counter', Counter)` then `m.Counter(5)`).
    ///
    /// `init` is named as a [`Process::spawn`] task is: a `fn` item
    /// (`Counter::new`) or a closure that captures nothing, with its data
    /// in `args` (a tuple for several, `()` for none). No registration is
    /// needed beforehand: the name of any such function of this binary
    /// reaches the server, and nothing else can (names are tagged with a
    /// key of this manager's; a forged one is refused, never run). `T`
    /// never leaves the server, so it needs no serde.
    ///
    /// # Errors
    /// As [`dict`](Manager::dict), and [`ErrorKind::Panicked`] if `init`
    /// panicked (no object is made, the server goes on),
    /// [`ErrorKind::Codec`] if `args` do not (de)serialise.
    ///
    /// ```
    /// struct Tally { seen: Vec<String> }
    ///
    /// impl Tally {
    ///     fn new(first: String) -> Tally { Tally { seen: vec![first] } }
    ///     fn see(&mut self, name: String) -> usize {
    ///         self.seen.push(name);
    ///         self.seen.len()
    ///     }
    /// }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let manager = multiproc::Manager::new().unwrap();
    ///     let t = manager.object(Tally::new, "ann".to_string()).unwrap();
    ///     assert_eq!(t.call(Tally::see, "bob".to_string()).unwrap(), 2);
    /// }
    /// ```
    pub fn object<T, F, A>(&self, init: F, args: A) -> Result<Managed<T>>
    where
        T: 'static,
        F: Fn(A) -> T + 'static,
        A: Serialize + serde::de::DeserializeOwned + 'static,
    {
        let handle = Handle {
            link: Arc::clone(&self.link),
            id: 0,
        };
        Managed::create(handle, init, args)
    }

    /// Stops the server and waits for it to end (Python's `shutdown()`).
    /// Proxies used afterwards, in any process, fail with
    /// [`ErrorKind::ShutDown`]. Calling it again does nothing; dropping
    /// the `Manager` calls it.
    ///
    /// # Errors
    /// [`ErrorKind::ProcessDied`] if the server had died (killed, or a
    /// crash) rather than ending as asked.
    ///
    /// ```
    /// fn main() {
    ///     multiproc::init();
    ///     let manager = multiproc::Manager::new().unwrap();
    ///     let d = manager.dict::<u8, u8>().unwrap();
    ///     manager.shutdown().unwrap();
    ///     let e = d.get(&1).unwrap_err();
    ///     assert_eq!(e.kind(), multiproc::ErrorKind::ShutDown);
    /// }
    /// ```
    pub fn shutdown(&self) -> Result<()> {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut server) = server else {
            return Ok(());
        };
        self.link.stop();
        match server.join_timeout(SHUTDOWN_GRACE) {
            Ok(()) => Ok(()),
            Err(e) if e.is_timeout() => {
                let _ = server.kill();
                let _ = server.join();
                Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "Manager::shutdown: the server did not stop within \
                         {SHUTDOWN_GRACE:?}; it was killed"
                    ),
                ))
            }
            Err(e) => {
                let detail = e.to_string();
                Err(e.with_context(format!("Manager::shutdown: {detail}")))
            }
        }
    }
}

/// Three random words: a manager's id and the key its names are tagged
/// with.
fn random_words() -> Result<[u64; 3]> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b)
        .map_err(|e| Error::new(ErrorKind::Io, format!("Manager::new: getrandom: {e}")))?;
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i * 8..i * 8 + 8]);
        u64::from_le_bytes(w)
    };
    // 0 means "no manager" to the server's self-call guard.
    Ok([word(0) | 1, word(1), word(2)])
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// What every proxy is: the link to its manager and its object's id.
#[derive(Clone)]
struct Handle {
    link: Arc<Link>,
    id: u64,
}

impl Handle {
    /// A round trip for this object: `build` writes the fields after the
    /// operation and the object's id.
    fn call<R>(
        &self,
        call: &str,
        code: u8,
        build: impl FnOnce(&mut Writer<'_>) -> Result<()>,
        parse: impl FnOnce(&mut Reader<'_>) -> Result<R>,
    ) -> Result<R> {
        self.link.call(
            call,
            |w| {
                w.u8(code).u64(self.id);
                build(w)
            },
            parse,
        )
    }
}

impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        HandleWireRef {
            link: &self.link,
            id: self.id,
        }
        .serialize(s)
    }
}

#[derive(Serialize)]
struct HandleWireRef<'a> {
    link: &'a Link,
    id: u64,
}

#[derive(Deserialize)]
struct HandleWire {
    #[serde(deserialize_with = "client::deserialize_link")]
    link: Arc<Link>,
    id: u64,
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let HandleWire { link, id } = HandleWire::deserialize(d)?;
        Ok(Handle { link, id })
    }
}

/// A dict entry's version and value (0 and `None`: absent).
fn dict_entry<V: serde::de::DeserializeOwned>(
    handle: &Handle,
    call: &str,
    key: &(impl Serialize + ?Sized),
) -> Result<Option<(u64, V)>> {
    handle.call(
        call,
        op::D_GET,
        |w| {
            w.value(key)?;
            Ok(())
        },
        entry,
    )
}

/// The dict's read-modify-write: `f` runs here on the entry's value,
/// then a compare-and-set on the version it read writes the result; on a
/// conflict the server answers the entry as it is now, and `f` runs again.
fn update_entry<V: Serialize + serde::de::DeserializeOwned>(
    handle: &Handle,
    call: &str,
    key: &(impl Serialize + ?Sized),
    mut f: impl FnMut(Option<V>) -> Option<V>,
) -> Result<Option<V>> {
    let mut current = dict_entry(handle, call, key)?;
    loop {
        let (version, value) = match current {
            Some((version, v)) => (version, Some(v)),
            None => (0, None),
        };
        let new = f(value);
        let conflict = handle.call(
            call,
            op::D_CAS,
            |w| {
                w.value(key)?.u64(version);
                match &new {
                    Some(v) => {
                        w.u8(1).value(v)?;
                    }
                    None => {
                        w.u8(0);
                    }
                }
                Ok(())
            },
            |r| {
                if r.bool()? {
                    Ok(None)
                } else {
                    Ok(Some(entry(r)?))
                }
            },
        )?;
        match conflict {
            None => return Ok(new),
            Some(now) => current = now,
        }
    }
}

/// Reads an optional entry: flag, then version and value.
fn entry<V: serde::de::DeserializeOwned>(r: &mut Reader<'_>) -> Result<Option<(u64, V)>> {
    if !r.bool()? {
        return Ok(None);
    }
    let version = r.u64()?;
    Ok(Some((version, r.value()?)))
}

/// Reads an optional value: flag, then the value.
fn opt_value<V: serde::de::DeserializeOwned>(r: &mut Reader<'_>) -> Result<Option<V>> {
    Ok(if r.bool()? { Some(r.value()?) } else { None })
}

/// Reads a count, then that many items with `item`.
fn many<T>(
    r: &mut Reader<'_>,
    min_bytes: usize,
    mut item: impl FnMut(&mut Reader<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let n = r.count(min_bytes)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(item(r)?);
    }
    Ok(out)
}

/// Writes a count placeholder, the items, then patches the count.
fn write_many<I>(
    w: &mut Writer<'_>,
    items: I,
    mut item: impl FnMut(&mut Writer<'_>, I::Item) -> Result<()>,
) -> Result<()>
where
    I: IntoIterator,
{
    let at = w.0.len();
    w.u64(0);
    let mut n = 0u64;
    for x in items {
        item(w, x)?;
        n += 1;
    }
    w.0[at..at + 8].copy_from_slice(&n.to_le_bytes());
    Ok(())
}
