//! The manager's server: the loop its child process runs.
//!
//! It serves one duplex pipe per client process, registered through the
//! registration table (`registry.rs`), and sleeps on one doorbell that clients ring after
//! each request (the pool's, `src/pool/doorbell.rs`). A client's
//! misbehaviour or death costs only its own pipe: the server drops it and
//! serves the rest.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::registry::Registry;
use super::store::Store;
use super::wire::STATUS_OK;
use crate::error::Result;
use crate::pipe::Connection;
use crate::pool::doorbell::Doorbell;
use crate::ring::DEFAULT_SPIN;
use crate::segment::SegmentHandle;
use crate::sync::Event;
use crate::sys;
use crate::task::TaskKey;
use crate::wait::LIVENESS_PERIOD;

/// How long the server sleeps at most before it looks again unasked (the
/// pool driver's tick).
const TICK: Duration = Duration::from_millis(10);

/// A client process announcing itself: its pid and the server's end of
/// the pipe it created for itself.
pub(crate) type Registration = (u32, Connection);

/// What the server process is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct ServerArgs {
    pub(crate) registry: SegmentHandle,
    pub(crate) bell: SegmentHandle,
    pub(crate) stopped: Event,
    /// The manager's id (`Link`'s), so that a user method cannot call its
    /// own manager ([`client::serving`](super::client::serving)).
    pub(crate) uid: u64,
    /// The key constructor and method names are tagged with.
    pub(crate) key: TaskKey,
}

struct Client {
    pid: u32,
    conn: Connection,
    request: Vec<u8>,
    reply: Vec<u8>,
}

impl Client {
    /// Serves one request if one is waiting; `Err` drops the client (it
    /// closed its end, died, or broke the protocol).
    fn serve_one(&mut self, store: &mut Store) -> Result<bool> {
        if !self.conn.poll(Duration::ZERO)? {
            return Ok(false);
        }
        self.conn.recv_bytes_into(&mut self.request)?;
        store.handle(&self.request, &mut self.reply)?;
        self.conn.send_bytes(&self.reply)?;
        Ok(true)
    }
}

/// The server process's task (a `fn` item, as `Process::spawn` needs).
pub(crate) fn serve(args: ServerArgs) {
    let (Ok(bell), Ok(registry)) = (Doorbell::open(&args.bell), Registry::open(&args.registry))
    else {
        return;
    };
    super::client::serving(args.uid);
    let mut store = Store::new(args.key);
    let mut clients: Vec<Client> = Vec::new();
    let mut last_progress = Instant::now();
    let mut last_check = Instant::now();
    loop {
        if args.stopped.is_set() {
            return;
        }
        let mut progress = false;
        // A registration that does not open (its client died before we
        // read it, or wrote garbage) is dropped; nobody else is affected.
        registry.take_each(|bytes| {
            progress = true;
            let Ok((pid, conn)) = postcard::from_bytes::<Registration>(&bytes) else {
                return;
            };
            if conn.send_bytes(&[STATUS_OK]).is_ok() {
                clients.push(Client {
                    pid,
                    conn,
                    request: Vec::new(),
                    reply: Vec::new(),
                });
            }
        });
        clients.retain_mut(|c| match c.serve_one(&mut store) {
            Ok(served) => {
                progress |= served;
                true
            }
            Err(_) => false,
        });
        let now = Instant::now();
        if now.duration_since(last_check) >= LIVENESS_PERIOD {
            // A client killed outright leaves its end registered: no
            // error ever comes from a pipe we only poll.
            clients.retain(|c| sys::process_alive(c.pid));
            registry.reclaim_dead();
            last_check = now;
        }
        if progress {
            last_progress = now;
            continue;
        }
        if now.duration_since(last_progress) < DEFAULT_SPIN {
            std::hint::spin_loop();
            continue;
        }
        let announced = bell.prepare();
        let ready = args.stopped.is_set()
            || registry.any_ready()
            || clients
                .iter()
                .any(|c| c.conn.poll(Duration::ZERO).unwrap_or(true));
        if ready {
            bell.cancel();
        } else {
            bell.sleep(announced, TICK);
        }
    }
}
