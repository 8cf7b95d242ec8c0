//! A process's link to one manager: its own pipe to the server, opened
//! at its first call, and the round trip every proxy operation makes.
//!
//! One link per manager per process (proxies that arrive in a process
//! find the link already there through `LINKS`), so a process holds one
//! pipe per manager however many proxies it has. Its threads take turns
//! on it: a request and its reply happen under one lock, so replies never
//! cross.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::registry::Registry;
use super::server::Registration;
use super::wire::{Reader, Writer, STATUS_FAILED, STATUS_OK, STATUS_REFUSED};
use crate::error::{Error, ErrorKind, PanicInfo, Result};
use crate::pipe::{pipe, Connection};
use crate::pool::doorbell::Doorbell;
use crate::segment::SegmentHandle;
use crate::sync::Event;
use crate::sys;
use crate::task::TaskKey;
use crate::wait::LIVENESS_PERIOD;

/// What a process needs to reach a manager, in every process.
pub(crate) struct Link {
    uid: u64,
    key: TaskKey,
    server_pid: u32,
    registry: Registry,
    bell: Doorbell,
    stopped: Event,
    /// The wire form of `registry`, `bell` and `stopped` as the process
    /// that created the manager wrote it. A handle opens through the
    /// process that serialised it (on Linux its descriptors), so proxies
    /// always carry this one: the manager's creator lives as long as the
    /// manager, while a child that stored a proxy in a dict may be gone
    /// when it is read.
    origin: Arc<[u8]>,
    chan: Mutex<Chan>,
}

enum Chan {
    /// No call yet from this process.
    Unopened,
    Open {
        conn: Connection,
        request: Vec<u8>,
        reply: Vec<u8>,
    },
    /// The server died: every later call fails at once, with this.
    Dead,
}

/// The links this process has, by manager (weak: the proxies own them).
static LINKS: Mutex<Vec<Weak<Link>>> = Mutex::new(Vec::new());

/// The wire form of a link: what another process opens it from. The
/// bytes are [`Origin`], as the manager's creator encoded them.
type Wire = (u64, TaskKey, u32, serde_bytes::ByteBuf);

/// The manager's shared objects, encoded once by its creator.
type Origin = (SegmentHandle, SegmentHandle, Event);

/// In the server process, its manager's id (0 elsewhere: ids are random
/// and never 0).
static SERVING: AtomicU64 = AtomicU64::new(0);

/// Marks this process as the server of manager `uid`: a user method
/// running here that calls a proxy of it is refused, since the server
/// would wait for its own reply forever.
pub(crate) fn serving(uid: u64) {
    SERVING.store(uid, Ordering::Relaxed);
}

impl Link {
    /// The link of the process that creates the manager.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] if the handles do not encode (they always do).
    pub(crate) fn new(
        uid: u64,
        key: TaskKey,
        server_pid: u32,
        registry: Registry,
        bell: Doorbell,
        stopped: Event,
    ) -> Result<Arc<Link>> {
        let origin = postcard::to_stdvec(&(registry.handle(), bell.handle(), &stopped))
            .map_err(|e| Error::codec("encoding a manager's handles", e))?;
        Ok(Link::with(
            uid,
            key,
            server_pid,
            (registry, bell, stopped),
            origin.into(),
        ))
    }

    fn with(
        uid: u64,
        key: TaskKey,
        server_pid: u32,
        (registry, bell, stopped): (Registry, Doorbell, Event),
        origin: Arc<[u8]>,
    ) -> Arc<Link> {
        let link = Arc::new(Link {
            uid,
            key,
            server_pid,
            registry,
            bell,
            stopped,
            origin,
            chan: Mutex::new(Chan::Unopened),
        });
        let mut links = LINKS.lock().unwrap_or_else(|p| p.into_inner());
        links.retain(|w| w.strong_count() > 0);
        links.push(Arc::downgrade(&link));
        link
    }

    /// The key this manager's constructor and method names are tagged
    /// with.
    pub(crate) fn key(&self) -> TaskKey {
        self.key
    }

    pub(crate) fn server_pid(&self) -> u32 {
        self.server_pid
    }

    /// Marks the manager shut down for every process (the owner's
    /// `shutdown`) and wakes the server to see it.
    pub(crate) fn stop(&self) {
        self.stopped.set();
        self.bell.ring_always();
    }

    fn shut_down(call: &str) -> Error {
        Error::new(
            ErrorKind::ShutDown,
            format!("{call}: the manager was shut down (Manager::shutdown or its drop)"),
        )
    }

    fn died(&self, call: &str) -> Error {
        Error::new(
            ErrorKind::PeerDied,
            format!("{call}: the manager process (pid {}) died", self.server_pid),
        )
        .with_pid(self.server_pid)
    }

    /// A failure of the pipe, as the caller should see it.
    fn broken(&self, call: &str, e: Error) -> Error {
        if self.stopped.is_set() {
            return Link::shut_down(call);
        }
        match e.kind() {
            ErrorKind::PeerDied | ErrorKind::Disconnected => self.died(call),
            _ => {
                let detail = e.to_string();
                e.with_context(format!("{call}: the link to the manager broke: {detail}"))
            }
        }
    }

    /// Waits until `conn` has a message, checking between slices that the
    /// server lives and the manager was not shut down.
    fn wait_reply(&self, conn: &Connection, call: &str) -> Result<()> {
        loop {
            match conn.poll(LIVENESS_PERIOD) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(self.broken(call, e)),
            }
            if self.stopped.is_set() {
                return Err(Link::shut_down(call));
            }
            if !sys::process_alive(self.server_pid) {
                return Err(self.died(call));
            }
        }
    }

    /// This process's pipe to the server: created, handed over through
    /// the registration table, and acknowledged.
    fn open(&self, call: &str) -> Result<Connection> {
        let (mine, theirs) = pipe(true)?;
        let registration: Registration = (std::process::id(), theirs.clone());
        let bytes = postcard::to_stdvec(&registration)
            .map_err(|e| in_call(Error::codec("encoding a registration", e), call))?;
        drop(registration);
        // Every slot taken: as many processes register at this moment.
        while !self
            .registry
            .try_publish(&bytes)
            .map_err(|e| in_call(e, call))?
        {
            if self.stopped.is_set() {
                return Err(Link::shut_down(call));
            }
            if !sys::process_alive(self.server_pid) {
                return Err(self.died(call));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.bell.ring();
        // `theirs` is held until the server has opened its copy (its
        // acknowledgement says so): a handle sent through a queue counts
        // from when the receiver opens it.
        self.wait_reply(&mine, call)?;
        let ack = mine.recv_bytes().map_err(|e| self.broken(call, e))?;
        drop(theirs);
        if ack != [STATUS_OK] {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("{call}: the manager's acknowledgement was not one"),
            ));
        }
        Ok(mine)
    }

    /// One round trip: `build` writes the request, `parse` reads the
    /// reply's fields. A refusal becomes an `InvalidState` error.
    pub(crate) fn call<R>(
        &self,
        call: &str,
        build: impl FnOnce(&mut Writer<'_>) -> Result<()>,
        parse: impl FnOnce(&mut Reader<'_>) -> Result<R>,
    ) -> Result<R> {
        if self.stopped.is_set() {
            return Err(Link::shut_down(call));
        }
        if SERVING.load(Ordering::Relaxed) == self.uid {
            return Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "{call}: a method running in the manager cannot use a proxy of \
                     that same manager (the server would wait for itself)"
                ),
            ));
        }
        let mut chan = self.chan.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*chan, Chan::Unopened) {
            let conn = self.open(call).inspect_err(|e| {
                if e.kind() == ErrorKind::PeerDied {
                    *chan = Chan::Dead;
                }
            })?;
            *chan = Chan::Open {
                conn,
                request: Vec::new(),
                reply: Vec::new(),
            };
        }
        let Chan::Open {
            conn,
            request,
            reply,
        } = &mut *chan
        else {
            return Err(self.died(call));
        };
        request.clear();
        build(&mut Writer(request)).map_err(|e| in_call(e, call))?;
        let sent = conn
            .send_bytes(request)
            .map_err(|e| self.broken(call, e))
            .and_then(|()| {
                self.bell.ring();
                self.wait_reply(conn, call)?;
                conn.recv_bytes_into(reply)
                    .map_err(|e| self.broken(call, e))
            });
        if let Err(e) = sent {
            // No reply will ever come on this pipe: a later call must not
            // read this one's.
            if !self.stopped.is_set() {
                *chan = Chan::Dead;
            }
            return Err(e);
        }
        let mut r = Reader::new(reply);
        match r.u8().map_err(|e| in_call(e, call))? {
            STATUS_OK => {}
            STATUS_REFUSED => {
                return Err(Error::new(
                    ErrorKind::InvalidState,
                    format!("{call}: {}", String::from_utf8_lossy(&reply[1..])),
                ))
            }
            STATUS_FAILED => return Err(user_failure(call, &reply[1..])),
            s => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{call}: a manager reply with status {s}"),
                ))
            }
        }
        let out = parse(&mut r).map_err(|e| in_call(e, call))?;
        r.end().map_err(|e| in_call(e, call))?;
        Ok(out)
    }
}

/// The error user code (a constructor, a method) ended with in the
/// server, from its report.
fn user_failure(call: &str, report: &[u8]) -> Error {
    type Report = (ErrorKind, String, Option<PanicInfo>);
    match postcard::from_bytes::<Report>(report) {
        Ok((_, _, Some(info))) => {
            let e = Error::panicked(info);
            e.with_context(format!("{call}: panicked in the manager"))
        }
        Ok((kind, reason, None)) => Error::new(kind, format!("{call}: {reason}")),
        Err(_) => Error::new(
            ErrorKind::Protocol,
            format!("{call}: a manager failure report that does not decode"),
        ),
    }
}

fn in_call(e: Error, call: &str) -> Error {
    let detail = e.to_string();
    e.with_context(format!("{call}: {detail}"))
}

impl Serialize for Link {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (
            self.uid,
            self.key,
            self.server_pid,
            serde_bytes::Bytes::new(&self.origin),
        )
            .serialize(s)
    }
}

/// Opens a link from its wire form, or finds the one this process has.
pub(crate) fn deserialize_link<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Arc<Link>, D::Error> {
    let (uid, key, server_pid, origin) = Wire::deserialize(d)?;
    {
        let links = LINKS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = links
            .iter()
            .filter_map(Weak::upgrade)
            .find(|l| l.uid == uid)
        {
            return Ok(link);
        }
    }
    let open = || -> Result<Arc<Link>> {
        let (registry, bell, stopped): Origin = postcard::from_bytes(&origin)
            .map_err(|e| Error::codec("decoding a manager's handles", e))?;
        let bell = Doorbell::open(&bell)?;
        let registry = Registry::open(&registry)?;
        Ok(Link::with(
            uid,
            key,
            server_pid,
            (registry, bell, stopped),
            origin.into_vec().into(),
        ))
    };
    open().map_err(crate::error::de_custom)
}
