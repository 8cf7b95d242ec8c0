//! The parent's side of a start: `launch` re-executes this program, serves
//! the handshake on one thread per generation, and hands the child its
//! `Config`; the watch thread publishes new generations when one is
//! refused or stays silent.

use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
#[cfg(feature = "fuzzing")]
use serde::Deserialize;
use serde_bytes::ByteBuf;

use super::rendezvous::*;
use super::*;
use crate::error::{Error, ErrorKind, Result};
use crate::segment::Segment;
use crate::sys;
use crate::task::TaskRef;

/// Runs ipc-channel's one-time set-up while descriptors are known to be
/// free (`sys::prepare_handshake` just checked).
///
/// Its Unix back-end sizes fragments from a probe socket pair made on the
/// first send, in a `LazyLock` that panics when the descriptor table is
/// full, which poisons it: every later send in the process panics (seen
/// as "malformed hello" refusals and workers exiting 121 after one moment
/// of `EMFILE`). Done here, on purpose, it never meets a full table.
pub(super) fn warm_ipc_channel() -> Result<()> {
    static WARM: OnceLock<()> = OnceLock::new();
    if WARM.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = ipc::channel::<u8>()
        .map_err(|e| Error::io("creating a channel (ipc-channel set-up)", e))?;
    let sent = std::panic::catch_unwind(AssertUnwindSafe(|| tx.send(0)));
    match sent {
        Ok(Ok(())) if rx.recv().is_ok() => {
            let _ = WARM.set(());
            Ok(())
        }
        Ok(Ok(())) | Ok(Err(_)) => Err(Error::new(
            ErrorKind::Io,
            "ipc-channel's set-up failed (its first send did not arrive)",
        )),
        Err(_) => Err(Error::new(
            ErrorKind::Io,
            "ipc-channel's one-time set-up failed earlier in this process (a full file \
             descriptor table at its first use): restart the program",
        )),
    }
}

/// A fresh one-shot handshake server, its directory owner-only.
pub(super) fn new_server<T>() -> Result<(IpcOneShotServer<T>, String)>
where
    T: for<'de> serde::Deserialize<'de> + serde::Serialize,
{
    // ipc-channel asserts (panics) on some failures of its own set-up, e.g.
    // a temporary directory that vanished since `prepare_handshake`.
    let created = std::panic::catch_unwind(IpcOneShotServer::<T>::new).map_err(|_| {
        Error::new(
            ErrorKind::Io,
            "creating the handshake server: ipc-channel panicked (is TMPDIR a writable directory?)",
        )
    })?;
    let (server, name) = created.map_err(|e| Error::io("creating the handshake server", e))?;
    sys::restrict_handshake_server(&name)
        .map_err(|e| Error::io("restricting the handshake server to this user", e))?;
    Ok((server, name))
}

// ------------------------------------------------------------ parent side

/// What the first generation to validate the child's hello sends it.
pub(super) struct Payload {
    pub(super) name: String,
    pub(super) parent_name: String,
    pub(super) task: TaskRef,
    pub(super) args: Vec<u8>,
    pub(super) log: crate::logging::Offer,
}

/// Who may still send the child its `Config`.
pub(super) enum Claim {
    /// Nobody yet: the first generation that validates a hello takes it.
    Open(Payload),
    /// Generation `n` took it (and sends, or sent, the `Config`).
    Claimed(usize),
    /// The start was decided without a claim (the child exited, the start
    /// timed out, or the generations ran out): nobody ever sends one.
    Revoked,
}

/// One published handshake server.
pub(super) struct Generation {
    pub(super) name: String,
    /// Its thread has had its one connection (and claimed or refused it).
    pub(super) done: bool,
    /// The parent connected to it to wake its `accept()`.
    pub(super) woken: bool,
}

/// A start's state, shared by its generations' threads, the watch thread
/// and the waiter (under `Start::state`).
pub(super) struct StartState {
    pub(super) claim: Claim,
    /// Dropped as soon as the start is decided (nobody reads it then).
    pub(super) rendezvous: Option<Segment>,
    /// Generation `n` is at index `n - 1`.
    pub(super) generations: Vec<Generation>,
    /// Connections refused (wrong token or pid, malformed, broken).
    pub(super) refused: usize,
    pub(super) last_refusal: Option<String>,
    /// The newest generation the child said it tried, and when the watch
    /// first saw that.
    pub(super) tried: Option<(u32, Instant)>,
    /// Generations published because the newest went silent.
    pub(super) silences: u32,
}

impl StartState {
    /// Marks every generation still waiting as woken and returns their
    /// names, to be woken (`wake`) by the caller.
    fn take_waiting(&mut self) -> Vec<String> {
        self.generations
            .iter_mut()
            .filter(|g| !g.done && !g.woken)
            .map(|g| {
                g.woken = true;
                g.name.clone()
            })
            .collect()
    }
}

/// One child's start: its token and pid, the claim, the generations.
pub(super) struct Start {
    pub(super) token: Token,
    pub(super) pid: u32,
    pub(super) state: Mutex<StartState>,
    /// The one result of the start: the claimer's link or error, or the
    /// error that ran out of generations. At most one is ever sent.
    pub(super) result: mpsc::SyncSender<Result<Link>>,
}

impl Start {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, StartState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn_generation(
        self: &Arc<Self>,
        number: usize,
        server: IpcOneShotServer<Hello>,
    ) -> std::io::Result<()> {
        let start = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("multiproc-handshake-{}-{number}", self.pid))
            .spawn(move || start.serve(number, server))
            .map(drop)
    }

    /// A generation's thread: one connection, then claim or refuse.
    fn serve(self: Arc<Self>, number: usize, server: IpcOneShotServer<Hello>) {
        match receive_hello(server, &self.token, self.pid) {
            Ok((conn, reply)) => self.claim(number, conn, reply),
            Err(why) => self.refuse(number, why),
        }
    }

    /// A valid hello arrived on generation `number`: the first one sends the
    /// child its `Config`; any later one is the same child, already served
    /// (or a start already decided), and is dropped without a word.
    pub(super) fn claim(&self, number: usize, conn: IpcReceiver<Hello>, reply: IpcSender<Config>) {
        let (payload, waiting, rendezvous) = {
            let mut st = self.lock();
            st.generations[number - 1].done = true;
            match std::mem::replace(&mut st.claim, Claim::Claimed(number)) {
                Claim::Open(payload) => (payload, st.take_waiting(), st.rendezvous.take()),
                other => {
                    st.claim = other;
                    return;
                }
            }
        };
        let result = send_config(reply, payload, self.pid);
        for name in waiting {
            wake(&name);
        }
        // Hand the link over before the accepted connection is closed:
        // that close frees the (already unlinked) socket inode, which on a
        // disk-backed $TMPDIR can wait ~0.3 ms for the filesystem.
        let _ = self.result.try_send(result);
        drop((conn, rendezvous));
    }

    /// Generation `number` got a connection that is not the child's hello.
    /// If it was the newest, publish the next at once (the child may be
    /// queued behind the refused peer on this one, which is now gone).
    fn refuse(self: &Arc<Self>, number: usize, why: String) {
        let mut st = self.lock();
        st.generations[number - 1].done = true;
        if !matches!(st.claim, Claim::Open(_)) {
            return; // decided: a wake-up, or a peer too late to matter
        }
        lifecycle!(
            warn,
            pid = self.pid,
            generation = number,
            reason = %why,
            "refused a connection to a child's handshake server"
        );
        st.refused += 1;
        st.last_refusal = Some(why);
        if number == st.generations.len() {
            if let Err(e) = self.publish(&mut st) {
                self.fail(&mut st, e);
            }
        }
    }

    /// Publishes the next generation and starts its thread.
    fn publish(self: &Arc<Self>, st: &mut StartState) -> Result<()> {
        let number = st.generations.len() + 1;
        if number > MAX_GENERATIONS {
            let last = st.last_refusal.as_deref().unwrap_or("none");
            return Err(Error::new(
                ErrorKind::Handshake,
                format!(
                    "gave up after {MAX_GENERATIONS} handshake servers: refused {} connections \
                     (the last: {last}), {} servers went silent",
                    st.refused, st.silences
                ),
            )
            .with_pid(self.pid));
        }
        let rendezvous = st.rendezvous.as_ref().ok_or_else(|| {
            Error::new(ErrorKind::Handshake, "the handshake rendezvous is gone").with_pid(self.pid)
        })?;
        let (server, name) = new_server()?;
        publish_slot(rendezvous, number, &name)?;
        st.generations.push(Generation {
            name,
            done: false,
            woken: false,
        });
        st.tried = None;
        self.spawn_generation(number, server).map_err(|e| {
            st.generations[number - 1].done = true;
            Error::io("starting a handshake thread", e).with_pid(self.pid)
        })
    }

    /// Decides the start as failed: nobody may claim it any more.
    fn fail(&self, st: &mut StartState, e: Error) {
        st.claim = Claim::Revoked;
        st.rendezvous = None;
        for name in st.take_waiting() {
            wake(&name);
        }
        let _ = self.result.try_send(Err(e));
    }

    /// The watch thread's look at this start: if the child said it tried the
    /// newest generation and that one has produced nothing for a while (a
    /// peer that connected first and sends nothing holds its thread in
    /// `recv`), publish another. `false` once the start needs no watching.
    fn tick(self: &Arc<Self>, now: Instant) -> bool {
        let mut st = self.lock();
        if !matches!(st.claim, Claim::Open(_)) {
            return false;
        }
        let Some(rendezvous) = &st.rendezvous else {
            return false;
        };
        let mut word = [0u8; 4];
        rendezvous.load(TRIED_AT, &mut word);
        let tried = u32::from_le_bytes(word);
        let newest = st.generations.len() as u32;
        if tried != newest {
            st.tried = None;
            return true;
        }
        match st.tried {
            Some((n, since)) if n == newest => {
                let quiet = SILENCE_FIRST.saturating_mul(1 << st.silences.min(16));
                if now.saturating_duration_since(since) >= quiet {
                    st.silences += 1;
                    if let Err(e) = self.publish(&mut st) {
                        self.fail(&mut st, e);
                        return false;
                    }
                }
            }
            _ => st.tried = Some((newest, now)),
        }
        true
    }

    /// Decides the start from the waiter's side (the child exited, or the
    /// start timed out): revokes an open claim, wakes every generation still
    /// waiting, drops the rendezvous. Idempotent.
    fn close(&self) -> Closed {
        let mut st = self.lock();
        let claimed = match st.claim {
            Claim::Claimed(n) => Some(n),
            Claim::Open(_) => {
                st.claim = Claim::Revoked;
                None
            }
            Claim::Revoked => None,
        };
        st.rendezvous = None;
        for name in st.take_waiting() {
            wake(&name);
        }
        Closed {
            claimed,
            refused: st.refused,
            last_refusal: st.last_refusal.clone(),
        }
    }
}

/// What [`Handshake::close`] found.
pub(crate) struct Closed {
    /// The generation that claimed the start (it sent, or is sending, the
    /// child its `Config`, so the child may have run task code). `None`:
    /// no `Config` was or will ever be sent.
    pub(crate) claimed: Option<usize>,
    /// Connections refused so far, and why the last one was.
    pub(crate) refused: usize,
    pub(crate) last_refusal: Option<String>,
}

/// The waiter's side of a start in flight.
pub(crate) struct Handshake {
    pub(super) start: Arc<Start>,
    pub(super) result: mpsc::Receiver<Result<Link>>,
    pub(super) started: Instant,
    pub(super) closed_at: Option<Instant>,
}

impl Handshake {
    /// Waits up to `timeout` for the start's result.
    pub(crate) fn recv_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<Result<Link>, mpsc::RecvTimeoutError> {
        self.result.recv_timeout(timeout)
    }

    /// When the child was started.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// When [`close`](Self::close) was first called.
    pub(crate) fn closed_at(&self) -> Option<Instant> {
        self.closed_at
    }

    /// Decides the start: after this no generation sends a `Config` unless
    /// one had already claimed it (see [`Closed::claimed`]).
    pub(crate) fn close(&mut self) -> Closed {
        self.closed_at.get_or_insert_with(Instant::now);
        self.start.close()
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        // Whatever ended the wait, no thread stays in `accept()` for it.
        self.start.close();
    }
}

/// Connects to a generation's server to wake its `accept()`. Never blocks:
/// a server that cannot be reached at once (gone, or its thread is held by
/// a silent peer) is left to end when that peer closes.
pub(super) fn wake(name: &str) {
    #[cfg(target_os = "linux")]
    {
        // Connect and close: `accept` returns and its `recv` sees the end.
        sys::wake_handshake_server(name);
    }
    #[cfg(not(target_os = "linux"))]
    {
        if sys::handshake_server_name_ok(name) {
            if let Ok(tx) = IpcSender::<Hello>::connect(name.to_string()) {
                let _ = tx.send(Hello::Abort);
            }
        }
    }
}

/// The command that re-executes this program as a worker (or as the fork
/// server): the image, `argv[0]`, `/dev/null` as stdin, and in a test
/// binary the arguments that make libtest run only the entry test.
pub(super) fn worker_command() -> Result<std::process::Command> {
    let exe =
        sys::worker_exe().map_err(|e| Error::new(ErrorKind::Spawn, "re-exec").with_source(e))?;
    let mut cmd = std::process::Command::new(exe.program);
    #[cfg(unix)]
    if let Some(arg0) = exe.arg0 {
        std::os::unix::process::CommandExt::arg0(&mut cmd, arg0);
    }
    // Python's children get /dev/null as stdin too; stdout/stderr are shared.
    cmd.stdin(std::process::Stdio::null());
    if let Some(entry) = TEST_ENTRY.get() {
        cmd.args([
            entry.as_str(),
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--quiet",
        ]);
    }
    Ok(cmd)
}

/// Starts a worker that will run `task(args)` and report on `Link::results`.
pub(crate) fn launch(
    token: Token,
    name: String,
    task: TaskRef,
    args: Vec<u8>,
    env: &[(std::ffi::OsString, Option<std::ffi::OsString>)],
    method: crate::process::StartMethod,
) -> Result<Launch> {
    ensure_may_start()?;
    let payload = |log: crate::logging::Offer| Payload {
        log,
        parent_name: worker_name().unwrap_or(MAIN_PROCESS).to_string(),
        task,
        args,
        name,
    };
    if method == crate::process::StartMethod::ForkServer {
        sys::prepare_fork().map_err(|e| Error::io("preparing the start", e))?;
        warm_ipc_channel()?;
        let started = Instant::now();
        let log = crate::logging::prepare()?;
        let payload = payload(log.offer());
        let name = payload.name.clone();
        let (child, link) = super::forkserver::fork(&token, env, payload)?;
        let log = log.register(child.id(), &name);
        let handshake = handed_down(token, child.id(), link, started);
        return Ok(Launch {
            child,
            handshake,
            log,
        });
    }
    let mut cmd = worker_command()?;
    sys::prepare_handshake().map_err(|e| Error::io("preparing the handshake", e))?;
    warm_ipc_channel()?;
    let started = Instant::now();
    let log = crate::logging::prepare()?;
    let rendezvous = Segment::create(RENDEZVOUS_LEN)?;
    let (server, server_name) = new_server()?;
    publish_slot(&rendezvous, 1, &server_name)?;
    let marker = format!(
        "{MARKER_VERSION}:{}:{}:{}",
        std::process::id(),
        hex(&token),
        rendezvous.handle()
    );
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.env(MARKER, marker);
    let child = sys::spawn(cmd)
        .map(sys::Child::spawned)
        .map_err(|e| Error::new(ErrorKind::Spawn, "re-exec").with_source(e))?;
    let payload = payload(log.offer());
    let log = log.register(child.id(), &payload.name);
    match begin(
        token,
        child.id(),
        payload,
        rendezvous,
        server,
        server_name,
        started,
    ) {
        Ok(handshake) => Ok(Launch {
            child,
            handshake,
            log,
        }),
        Err(e) => {
            let mut child = child;
            let _ = sys::kill(&mut child);
            let _ = child.wait();
            Err(Error::io("starting the handshake thread", e))
        }
    }
}

/// The start of a fork-server child: nothing to validate (only the parent
/// could have made its channels reach it) and nothing to send (the request
/// that forked it carried its task), so the start is claimed and decided
/// at once.
fn handed_down(token: Token, pid: u32, link: Link, started: Instant) -> Handshake {
    let (tx, result) = mpsc::sync_channel(1);
    let start = Arc::new(Start {
        token,
        pid,
        state: Mutex::new(StartState {
            claim: Claim::Claimed(1),
            rendezvous: None,
            generations: Vec::new(),
            refused: 0,
            last_refusal: None,
            tried: None,
            silences: 0,
        }),
        result: tx,
    });
    let _ = start.result.try_send(Ok(link));
    Handshake {
        start,
        result,
        started,
        closed_at: None,
    }
}

/// Starts generation 1's thread for the child `pid` and hands the start to
/// the watch thread.
pub(super) fn begin(
    token: Token,
    pid: u32,
    payload: Payload,
    rendezvous: Segment,
    server: IpcOneShotServer<Hello>,
    server_name: String,
    started: Instant,
) -> std::io::Result<Handshake> {
    let (tx, result) = mpsc::sync_channel(1);
    let start = Arc::new(Start {
        token,
        pid,
        state: Mutex::new(StartState {
            claim: Claim::Open(payload),
            rendezvous: Some(rendezvous),
            generations: vec![Generation {
                name: server_name,
                done: false,
                woken: false,
            }],
            refused: 0,
            last_refusal: None,
            tried: None,
            silences: 0,
        }),
        result: tx,
    });
    start.spawn_generation(1, server)?;
    watch(&start);
    Ok(Handshake {
        start,
        result,
        started,
        closed_at: None,
    })
}

/// Starts in flight that the watch thread looks at every `WATCH_TICK`.
pub(super) static WATCHED: Mutex<Vec<Weak<Start>>> = Mutex::new(Vec::new());
/// Wakes the watch thread when the first start arrives in an empty list.
pub(super) static WATCH_WAKE: Condvar = Condvar::new();

/// Hands `start` to the one watch thread of this process (started on the
/// first call). Without that thread (it could not be started) a silent
/// peer holds the start until its timeout; nothing else changes.
pub(super) fn watch(start: &Arc<Start>) {
    static RUNNING: OnceLock<bool> = OnceLock::new();
    let running = *RUNNING.get_or_init(|| {
        std::thread::Builder::new()
            .name("multiproc-handshake-watch".into())
            .spawn(watch_loop)
            .is_ok()
    });
    if !running {
        return;
    }
    let mut list = WATCHED.lock().unwrap_or_else(|p| p.into_inner());
    let was_empty = list.is_empty();
    list.push(Arc::downgrade(start));
    if was_empty {
        WATCH_WAKE.notify_one();
    }
}

pub(super) fn watch_loop() {
    let mut list = WATCHED.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = Instant::now();
        list.retain(|start| start.upgrade().is_some_and(|s| s.tick(now)));
        list = if list.is_empty() {
            WATCH_WAKE.wait(list).unwrap_or_else(|p| p.into_inner())
        } else {
            WATCH_WAKE
                .wait_timeout(list, WATCH_TICK)
                .unwrap_or_else(|p| p.into_inner())
                .0
        };
    }
}

/// Accepts one connection and checks its hello. `Err` names why it is not
/// the child's.
pub(super) fn receive_hello(
    server: IpcOneShotServer<Hello>,
    token: &Token,
    pid: u32,
) -> std::result::Result<(IpcReceiver<Hello>, IpcSender<Config>), String> {
    // Whoever connects first is decoded here. ipc-channel's decoder panics
    // on a channel index with no channel attached (an acknowledged gap
    // upstream), so a malformed hello is caught and refused like a wrong
    // token.
    let accepted = std::panic::catch_unwind(AssertUnwindSafe(|| server.accept()))
        .map_err(|_| "a peer sent a malformed hello".to_string())?;
    let (conn, hello) = accepted.map_err(|e| format!("accept: {e:?}"))?;
    match hello {
        Hello::Abort => Err("a peer sent Abort".to_string()),
        Hello::Worker {
            token: presented,
            pid: claimed,
            reply,
        } => {
            if !tokens_equal(&presented, token) {
                return Err("a peer presented a wrong token".to_string());
            }
            if claimed != pid {
                return Err("the peer's pid is not the child's".to_string());
            }
            Ok((conn, reply))
        }
    }
}

/// The claimer's part: the child's channels, and its `Config`.
pub(super) fn send_config(reply: IpcSender<Config>, payload: Payload, pid: u32) -> Result<Link> {
    let handshake_err =
        |what: &str| Error::new(ErrorKind::Handshake, what.to_string()).with_pid(pid);
    let (results_tx, results) = ipc::channel().map_err(|e| Error::io("creating a channel", e))?;
    let (control, control_rx) = ipc::channel().map_err(|e| Error::io("creating a channel", e))?;
    reply
        .send(Config {
            name: payload.name,
            parent_name: payload.parent_name,
            task: payload.task,
            args: ByteBuf::from(payload.args),
            results: results_tx,
            control: control_rx,
            log: payload.log,
        })
        .map_err(|e| {
            handshake_err("sending the task").with_source(std::io::Error::other(format!("{e:?}")))
        })?;
    Ok(Link {
        results: Inbox::new(results),
        _control: control,
    })
}

/// Decodes a first handshake message as the parent's `accept` does. Inputs
/// that decode as `Worker` up to a channel index are skipped: no channel
/// is attached here, and ipc-channel's decoder panics on a missing one
/// (`accept` catches that panic; `tests/security.rs` sends such a hello),
/// while the fuzzer's panic hook aborts before any unwinding.
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_hello_for_fuzzing(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Shape {
        Worker {
            token: Token,
            pid: u32,
            reply: usize,
        },
        Abort,
    }
    if let Ok((Shape::Worker { .. }, _)) = postcard::take_from_bytes::<Shape>(bytes) {
        return false;
    }
    match ipc::IpcMessage::from_data(bytes.to_vec()).to::<Hello>() {
        Ok(Hello::Abort) => true,
        Ok(Hello::Worker { .. }) => unreachable!("a Worker hello without a channel decoded"),
        Err(_) => false,
    }
}

#[cfg(feature = "fuzzing")]
pub(crate) fn decode_outcome_for_fuzzing(bytes: &[u8]) -> bool {
    match postcard::from_bytes::<Outcome>(bytes) {
        Ok(Outcome::Returned(b)) => {
            postcard::from_bytes::<(String, Vec<u64>, Option<f64>)>(&b).is_ok()
        }
        Ok(_) => true,
        Err(_) => false,
    }
}
