//! Starting workers: the re-exec, the handshake, and the child's side.
//!
//! ```text
//!  parent                                        child (same binary, re-executed)
//!  ──────                                        ────────────────────────────────
//!  rendezvous = Segment::create(4032)
//!  generation 1 = IpcOneShotServer::new(),
//!    its name published in the rendezvous
//!  spawn(exe, MULTIPROC_WORKER=v2:ppid:token:rendezvous)
//!                                                init(): open the rendezvous,
//!                                                read the newest generation
//!  accept() on generation 1's thread ◄── Hello { token, pid, reply } ── connect(name)
//!  check token (constant time) and pid,
//!  claim the start
//!  reply.send(Config { task, args,  ─────────────────────────────────► run the task
//!             results, control })
//!  results.recv()  ◄───────────────────── Outcome ──────────────────── exit(0 | 1)
//! ```
//!
//! * The marker alone runs nothing: a child that cannot parse it, cannot
//!   open the rendezvous or read it, or gets no `Config` within
//!   [`CHILD_DEADLINE`] exits with [`EXIT_BOOTSTRAP_FAILED`] before any
//!   task code.
//! * A connection that is not the child's hello (wrong token or pid,
//!   malformed) is refused, and the parent publishes a new generation (a
//!   new one-shot server) at once; the child says hello again to each new
//!   one. One that connects and says nothing holds its generation's thread
//!   in `recv`: when the child has tried that generation and it stays
//!   silent, the watch thread publishes another. At most
//!   [`MAX_GENERATIONS`]; then the start fails closed.
//! * The first generation to validate a hello claims the start and sends
//!   the `Config`; a later valid hello is dropped. The waiter closes a start
//!   nobody claimed when the child exits or the start times out (the claim
//!   is revoked under the same lock), so then no task code ever ran.
//! * `accept()` blocks forever upstream, so each generation runs on its own
//!   thread; the parent wakes one it no longer needs by connecting to it
//!   (never blocking), and never waits for one.
//! * The child watches its `control` receiver: when the parent dies, the
//!   channel disconnects and the child exits with [`EXIT_PARENT_GONE`]
//!   (Linux also sets `PR_SET_PDEATHSIG`).
//!
//! docs/ARCHITECTURE.md ("Handshake") has the rules and why they hold.

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::error::{Error, ErrorKind, PanicInfo, Result};
use crate::segment::{Segment, SegmentHandle};
use crate::sys;
use crate::task::{TaskKey, TaskRef};

/// Environment variable that marks a re-executed worker.
pub(crate) const MARKER: &str = "MULTIPROC_WORKER";
const MARKER_VERSION: &str = "v2";

/// Exit code of a worker whose start-up failed (bad marker, no handshake).
pub(crate) const EXIT_BOOTSTRAP_FAILED: i32 = 121;
/// Exit code of a worker that noticed its parent is gone.
pub(crate) const EXIT_PARENT_GONE: i32 = 122;
/// Exit code of a worker whose task panicked (Python: 1 for an exception).
pub(crate) const EXIT_PANICKED: i32 = 1;
/// Exit code of a process started as a worker that reached a spawn before
/// `init()` made it one: it stops there instead of starting children of
/// its own (the start of a process storm).
pub(crate) const EXIT_NOT_INITIALISED: i32 = 123;

/// How long a child waits for its `Config`, from the start of `init()`.
const CHILD_DEADLINE: Duration = Duration::from_secs(5);

pub(crate) type Token = [u8; 32];

/// First message, child → parent.
#[derive(Serialize, Deserialize)]
pub(crate) enum Hello {
    Worker {
        token: Token,
        pid: u32,
        reply: IpcSender<Config>,
    },
    /// Sent by the parent to its own server to wake a blocked `accept()`
    /// (where it cannot just connect and close: not on Linux).
    Abort,
}

/// Parent → child, once the child proved it holds the token.
#[derive(Serialize, Deserialize)]
pub(crate) struct Config {
    name: String,
    task: TaskRef,
    args: ByteBuf,
    results: IpcSender<Outcome>,
    control: IpcReceiver<Control>,
}

/// Parent → child control messages. None are defined yet: the channel's
/// point today is its disconnection, which tells the child the parent died.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Control {}

/// Child → parent: how the task ended.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome {
    Returned(ByteBuf),
    Panicked(PanicInfo),
    /// The child refused the task (descriptor or argument decoding failed).
    Rejected(String),
}

/// The parent's ends of a started worker's channels.
pub(crate) struct Link {
    pub(crate) results: Inbox<Outcome>,
    /// Held only so the child sees a disconnection when the parent dies.
    _control: IpcSender<Control>,
}

/// A child that has been started; its handshake completes on threads.
pub(crate) struct Launch {
    pub(crate) child: std::process::Child,
    pub(crate) handshake: Handshake,
}

static TEST_ENTRY: OnceLock<String> = OnceLock::new();

/// Called by [`crate::test_support!`]'s constructor in test binaries: the
/// harness stands in for `main`, so this process may now start workers.
pub(crate) fn enable_test_mode(entry: String) {
    let _ = TEST_ENTRY.set(entry);
    READY.store(true, std::sync::atomic::Ordering::Release);
}

/// Set once this process has passed [`init`] as a parent (or a test
/// binary's constructor stood in for it): only then may it start workers.
static READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What to do when a process that has not run `init()` tries to start one.
const HOW_TO_INIT: &str = "call `multiproc::init()` first in `main`; in a test file \
     (tests/*.rs), add `multiproc::test_support!()` at its top; a library that does not \
     own `main` can enable multiproc's cargo feature `auto-init` instead";

/// The gate every start passes first.
///
/// * A process that carries the worker marker but has not become a worker
///   reached a spawn before `init()`: it would start a child that does
///   the same, and so on. It stops here, with one line on stderr and
///   [`EXIT_NOT_INITIALISED`]; its parent reports the fix.
/// * A process that has not run `init()` at all would start children that
///   re-run `main` from the top: refused with an error naming the fix
///   (Python raises `RuntimeError` about the bootstrapping phase).
fn ensure_may_start() -> Result<()> {
    if std::env::var_os(MARKER).is_some() {
        eprintln!(
            "multiproc: process {} was started as a worker but reached a spawn before \
             `multiproc::init()` ran; it stops here without starting anything: {HOW_TO_INIT}",
            std::process::id()
        );
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        std::process::exit(EXIT_NOT_INITIALISED);
    }
    if !READY.load(std::sync::atomic::Ordering::Acquire) {
        return Err(not_initialised(
            "multiproc::init() has not run in this process, so a child could not become a worker",
        ));
    }
    Ok(())
}

/// The error for a start that could not work because `init()` did not run
/// (here, or in the child: `what` says which).
pub(crate) fn not_initialised(what: &str) -> Error {
    Error::new(ErrorKind::InvalidState, init_advice(what))
}

/// `what` went wrong for want of `init()`, and how to fix it.
pub(crate) fn init_advice(what: &str) -> String {
    format!("{what}: {HOW_TO_INIT}")
}

/// A fresh 256-bit handshake token.
pub(crate) fn random_token() -> Result<Token> {
    let mut t = [0u8; 32];
    getrandom::fill(&mut t).map_err(|e| {
        Error::new(ErrorKind::Spawn, "no randomness for the handshake token")
            .with_source(std::io::Error::other(e.to_string()))
    })?;
    Ok(t)
}

/// The key that tags task references: the token's second half. (The first
/// half is never used for anything else than the handshake comparison, but
/// the whole token is what the child must present.)
pub(crate) fn task_key(token: &Token) -> TaskKey {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&token[i..i + 8]);
        u64::from_le_bytes(w)
    };
    [word(16), word(24)]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Token> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut t = [0u8; 32];
    for (i, byte) in t.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(t)
}

fn tokens_equal(a: &Token, b: &Token) -> bool {
    // Constant time: the comparison must not say how many bytes matched.
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ------------------------------------------------------------- rendezvous
//
// The rendezvous segment (`RENDEZVOUS_LEN` data bytes, one page with the
// segment header), little-endian words:
//
//   offset 0    u32  generations published (parent; stored after the slot)
//   offset 4    u32  the newest generation the child tried (child; a hint)
//   offset 64   MAX_GENERATIONS write-once slots of SLOT_LEN bytes:
//               u32 name length, then the server name (UTF-8, zero padded)

/// The most handshake servers ("generations") one start publishes. When
/// the newest of them is refused and this many exist, the start fails.
pub(crate) const MAX_GENERATIONS: usize = 16;
/// Offset of the published-generations word.
const PUBLISHED_AT: usize = 0;
/// Offset of the word where the child notes the newest generation it tried.
const TRIED_AT: usize = 4;
/// Offset of the first slot.
const SLOTS_AT: usize = 64;
/// Bytes of one slot: a 4-byte length and the name.
const SLOT_LEN: usize = 248;
/// The longest server name a slot holds (a Unix socket path is < 108
/// bytes, a Windows pipe name 36).
const SLOT_NAME_MAX: usize = SLOT_LEN - 4;
/// Data bytes of a rendezvous segment.
pub(crate) const RENDEZVOUS_LEN: usize = SLOTS_AT + MAX_GENERATIONS * SLOT_LEN;
const _: () = assert!(RENDEZVOUS_LEN + crate::segment::HEADER_LEN == 4096);

/// How long the newest generation may stay silent after the child said it
/// tried it, before the parent publishes another: doubled for each
/// generation published that way.
const SILENCE_FIRST: Duration = Duration::from_millis(100);
/// How often the watch thread looks at starts in flight.
const WATCH_TICK: Duration = Duration::from_millis(10);
/// How often a child waiting for its `Config` looks for a new generation.
const CHILD_SLICE: Duration = Duration::from_millis(5);

/// The newest generation in a copy of a rendezvous segment's data: its
/// number (from 1) and its server's name.
///
/// The bytes come from shared memory that any process of the same user
/// can write, so everything is checked: the size, the count (1 to
/// [`MAX_GENERATIONS`]), the name's length (1 to `SLOT_NAME_MAX`), UTF-8,
/// no control character, and a name `ipc-channel` can connect to without
/// panicking ([`sys::handshake_server_name_ok`]). Never panics.
pub(crate) fn parse_generation(rendezvous: &[u8]) -> std::result::Result<(u32, &str), String> {
    if rendezvous.len() != RENDEZVOUS_LEN {
        return Err(format!(
            "the handshake rendezvous has {} bytes, not {RENDEZVOUS_LEN}",
            rendezvous.len()
        ));
    }
    let word = |at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&rendezvous[at..at + 4]);
        u32::from_le_bytes(w)
    };
    let count = word(PUBLISHED_AT);
    let n = usize::try_from(count)
        .ok()
        .filter(|n| (1..=MAX_GENERATIONS).contains(n))
        .ok_or_else(|| format!("the handshake rendezvous claims {count} generations"))?;
    let slot = slot_at(n);
    let len = usize::try_from(word(slot)).unwrap_or(usize::MAX);
    if len == 0 || len > SLOT_NAME_MAX {
        return Err(format!("generation {count} has a name of {len} bytes"));
    }
    let name = std::str::from_utf8(&rendezvous[slot + 4..slot + 4 + len])
        .map_err(|_| format!("generation {count}'s name is not UTF-8"))?;
    if name.chars().any(char::is_control) || !sys::handshake_server_name_ok(name) {
        return Err(format!(
            "generation {count}'s name is not a handshake server"
        ));
    }
    Ok((count, name))
}

/// Offset of generation `number`'s slot (`number` in 1..=MAX_GENERATIONS).
fn slot_at(number: usize) -> usize {
    SLOTS_AT + (number - 1) * SLOT_LEN
}

/// Writes generation `number`'s slot, then publishes it (Release: a child
/// that sees the count sees the slot). Slots are written once, before the
/// count covers them, so a reader never sees a name change under it. The
/// child reads each word with the same offset and length as written here
/// (the whole slot, the count), so both sides make the same atomic pieces.
fn publish_slot(rendezvous: &Segment, number: usize, name: &str) -> Result<()> {
    let bytes = name.as_bytes();
    if !(1..=MAX_GENERATIONS).contains(&number) || bytes.is_empty() || bytes.len() > SLOT_NAME_MAX {
        return Err(Error::new(
            ErrorKind::Handshake,
            format!(
                "cannot publish handshake server {number} ({} bytes)",
                bytes.len()
            ),
        ));
    }
    let mut slot = [0u8; SLOT_LEN];
    slot[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    slot[4..4 + bytes.len()].copy_from_slice(bytes);
    rendezvous.store(slot_at(number), &slot);
    rendezvous.store(PUBLISHED_AT, &(number as u32).to_le_bytes());
    Ok(())
}

/// Copies the count and the slot it names (if it names one) into
/// `snapshot` (`RENDEZVOUS_LEN` bytes), and decodes the newest generation
/// from it.
fn read_newest<'a>(
    rendezvous: &Segment,
    snapshot: &'a mut [u8],
) -> std::result::Result<(u32, &'a str), String> {
    rendezvous.load(PUBLISHED_AT, &mut snapshot[PUBLISHED_AT..PUBLISHED_AT + 4]);
    let count = u32::from_le_bytes([snapshot[0], snapshot[1], snapshot[2], snapshot[3]]);
    if let Some(n) = usize::try_from(count)
        .ok()
        .filter(|n| (1..=MAX_GENERATIONS).contains(n))
    {
        let at = slot_at(n);
        rendezvous.load(at, &mut snapshot[at..at + SLOT_LEN]);
    }
    parse_generation(snapshot)
}

/// Runs ipc-channel's one-time set-up while descriptors are known to be
/// free (`sys::prepare_handshake` just checked).
///
/// Its Unix back-end sizes fragments from a probe socket pair made on the
/// first send, in a `LazyLock` that panics when the descriptor table is
/// full, which poisons it: every later send in the process panics (seen
/// as "malformed hello" refusals and workers exiting 121 after one moment
/// of `EMFILE`). Done here, on purpose, it never meets a full table.
fn warm_ipc_channel() -> Result<()> {
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
fn new_server() -> Result<(IpcOneShotServer<Hello>, String)> {
    // ipc-channel asserts (panics) on some failures of its own set-up, e.g.
    // a temporary directory that vanished since `prepare_handshake`.
    let created = std::panic::catch_unwind(IpcOneShotServer::<Hello>::new).map_err(|_| {
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
struct Payload {
    name: String,
    task: TaskRef,
    args: Vec<u8>,
}

/// Who may still send the child its `Config`.
enum Claim {
    /// Nobody yet: the first generation that validates a hello takes it.
    Open(Payload),
    /// Generation `n` took it (and sends, or sent, the `Config`).
    Claimed(usize),
    /// The start was decided without a claim (the child exited, the start
    /// timed out, or the generations ran out): nobody ever sends one.
    Revoked,
}

/// One published handshake server.
struct Generation {
    name: String,
    /// Its thread has had its one connection (and claimed or refused it).
    done: bool,
    /// The parent connected to it to wake its `accept()`.
    woken: bool,
}

/// A start's state, shared by its generations' threads, the watch thread
/// and the waiter (under `Start::state`).
struct StartState {
    claim: Claim,
    /// Dropped as soon as the start is decided (nobody reads it then).
    rendezvous: Option<Segment>,
    /// Generation `n` is at index `n - 1`.
    generations: Vec<Generation>,
    /// Connections refused (wrong token or pid, malformed, broken).
    refused: usize,
    last_refusal: Option<String>,
    /// The newest generation the child said it tried, and when the watch
    /// first saw that.
    tried: Option<(u32, Instant)>,
    /// Generations published because the newest went silent.
    silences: u32,
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
struct Start {
    token: Token,
    pid: u32,
    state: Mutex<StartState>,
    /// The one result of the start: the claimer's link or error, or the
    /// error that ran out of generations. At most one is ever sent.
    result: mpsc::SyncSender<Result<Link>>,
}

impl Start {
    fn lock(&self) -> std::sync::MutexGuard<'_, StartState> {
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
    fn claim(&self, number: usize, conn: IpcReceiver<Hello>, reply: IpcSender<Config>) {
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
    start: Arc<Start>,
    result: mpsc::Receiver<Result<Link>>,
    started: Instant,
    closed_at: Option<Instant>,
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
fn wake(name: &str) {
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

/// Starts a worker that will run `task(args)` and report on `Link::results`.
pub(crate) fn launch(
    token: Token,
    name: String,
    task: TaskRef,
    args: Vec<u8>,
    env: &[(std::ffi::OsString, Option<std::ffi::OsString>)],
) -> Result<Launch> {
    ensure_may_start()?;
    let exe =
        sys::worker_exe().map_err(|e| Error::new(ErrorKind::Spawn, "re-exec").with_source(e))?;
    sys::prepare_handshake().map_err(|e| Error::io("preparing the handshake", e))?;
    warm_ipc_channel()?;
    let started = Instant::now();
    let rendezvous = Segment::create(RENDEZVOUS_LEN)?;
    let (server, server_name) = new_server()?;
    publish_slot(&rendezvous, 1, &server_name)?;
    let mut cmd = std::process::Command::new(exe.program);
    #[cfg(unix)]
    if let Some(arg0) = exe.arg0 {
        std::os::unix::process::CommandExt::arg0(&mut cmd, arg0);
    }
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.env(
        MARKER,
        format!(
            "{MARKER_VERSION}:{}:{}:{}",
            std::process::id(),
            hex(&token),
            rendezvous.handle()
        ),
    )
    // Python's children get /dev/null as stdin too; stdout/stderr are shared.
    .stdin(std::process::Stdio::null());
    if let Some(entry) = TEST_ENTRY.get() {
        cmd.args([
            entry.as_str(),
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--quiet",
        ]);
    }
    let child =
        sys::spawn(cmd).map_err(|e| Error::new(ErrorKind::Spawn, "re-exec").with_source(e))?;
    let payload = Payload { name, task, args };
    match begin(
        token,
        child.id(),
        payload,
        rendezvous,
        server,
        server_name,
        started,
    ) {
        Ok(handshake) => Ok(Launch { child, handshake }),
        Err(e) => {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::io("starting the handshake thread", e))
        }
    }
}

/// Starts generation 1's thread for the child `pid` and hands the start to
/// the watch thread.
fn begin(
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
static WATCHED: Mutex<Vec<Weak<Start>>> = Mutex::new(Vec::new());
/// Wakes the watch thread when the first start arrives in an empty list.
static WATCH_WAKE: Condvar = Condvar::new();

/// Hands `start` to the one watch thread of this process (started on the
/// first call). Without that thread (it could not be started) a silent
/// peer holds the start until its timeout; nothing else changes.
fn watch(start: &Arc<Start>) {
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

fn watch_loop() {
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
fn receive_hello(
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
fn send_config(reply: IpcSender<Config>, payload: Payload, pid: u32) -> Result<Link> {
    let handshake_err =
        |what: &str| Error::new(ErrorKind::Handshake, what.to_string()).with_pid(pid);
    let (results_tx, results) = ipc::channel().map_err(|e| Error::io("creating a channel", e))?;
    let (control, control_rx) = ipc::channel().map_err(|e| Error::io("creating a channel", e))?;
    reply
        .send(Config {
            name: payload.name,
            task: payload.task,
            args: ByteBuf::from(payload.args),
            results: results_tx,
            control: control_rx,
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

/// Runs [`parse_generation`] on `bytes` as they are (nearly always the
/// wrong size) and laid into a rendezvous-sized buffer: the first 4 bytes
/// as the count, the rest at the start of the slot that count names, so
/// that the fuzzer reaches the slot checks.
#[cfg(feature = "fuzzing")]
pub(crate) fn parse_generation_for_fuzzing(bytes: &[u8]) -> bool {
    let _ = parse_generation(bytes);
    let mut buf = vec![0u8; RENDEZVOUS_LEN];
    let (count, rest) = bytes.split_at(bytes.len().min(4));
    buf[..count.len()].copy_from_slice(count);
    let n = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let at = slot_at(n.clamp(1, MAX_GENERATIONS));
    let take = rest.len().min(SLOT_LEN);
    buf[at..at + take].copy_from_slice(&rest[..take]);
    match parse_generation(&buf) {
        Ok((generation, name)) => {
            assert!((1..=MAX_GENERATIONS as u32).contains(&generation));
            assert!(!name.is_empty() && name.len() <= SLOT_NAME_MAX);
            true
        }
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

// ---------------------------------------------------------------- child side

static CURRENT_NAME: OnceLock<String> = OnceLock::new();

/// The name this process was given by its parent, if it is a worker.
pub(crate) fn worker_name() -> Option<&'static str> {
    CURRENT_NAME.get().map(String::as_str)
}

/// See [`crate::init`].
pub(crate) fn init() {
    let Some(marker) = std::env::var_os(MARKER) else {
        sys::note_identity();
        READY.store(true, std::sync::atomic::Ordering::Release);
        return;
    };
    // Whatever this worker starts must not believe it is a worker too. This
    // runs first thing in `main`, before any thread of ours reads the env.
    std::env::remove_var(MARKER);
    let code = match worker_main(&marker.to_string_lossy()) {
        Ok(code) => code,
        // Nobody is left to read a message.
        Err(msg) if msg == PARENT_GONE => EXIT_PARENT_GONE,
        Err(msg) => {
            eprintln!("multiproc: not starting worker: {msg}");
            EXIT_BOOTSTRAP_FAILED
        }
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}

/// Splits a marker `v2:<parent pid>:<token hex>:<rendezvous handle>`.
pub(crate) fn parse_marker(
    marker: &str,
) -> std::result::Result<(u32, Token, SegmentHandle), String> {
    let mut parts = marker.splitn(4, ':');
    let (Some(version), Some(ppid), Some(token), Some(rendezvous)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed {MARKER}"));
    };
    if version != MARKER_VERSION {
        return Err(format!("unsupported {MARKER} version {version:?}"));
    }
    let ppid = ppid
        .parse()
        .map_err(|_| format!("bad parent pid in {MARKER}"))?;
    let token = unhex(token).ok_or_else(|| format!("bad token in {MARKER}"))?;
    let rendezvous = SegmentHandle::parse(rendezvous)
        .map_err(|_| format!("bad handshake rendezvous in {MARKER}"))?;
    Ok((ppid, token, rendezvous))
}

/// `worker_main`'s error when the parent is already gone.
const PARENT_GONE: &str = "parent gone";

fn worker_main(marker: &str) -> std::result::Result<i32, String> {
    let deadline = Instant::now() + CHILD_DEADLINE;
    let (ppid, token, rendezvous) = parse_marker(marker)?;
    if !sys::die_with_parent(ppid).map_err(|e| format!("parent check: {e}"))? {
        // Our parent is not the marker's process: it died (we were
        // reparented), or the marker names somebody else.
        if sys::pid_alive(ppid) {
            return Err(format!(
                "parent check: process {ppid}, named in {MARKER}, is not this process's parent"
            ));
        }
        return Err(PARENT_GONE.to_string());
    }
    let rendezvous = Segment::open(&rendezvous)
        .map_err(|e| format!("cannot open the parent's handshake rendezvous: {e}"))?;
    if rendezvous.len() != RENDEZVOUS_LEN {
        return Err(format!(
            "the handshake rendezvous in {MARKER} has the wrong size"
        ));
    }
    // The original `reply` stays here, so `config_rx` never disconnects
    // while clones of it travel in hellos.
    let (reply, config_rx) = ipc::channel::<Config>().map_err(|e| format!("channel: {e}"))?;
    // The rendezvous stays mapped until the worker exits: unmapping it
    // now would only delay the task.
    let config = await_config(&rendezvous, &token, &reply, config_rx, deadline)?;

    let control = config.control;
    if sys::PARENT_DEATH_SIGNAL {
        // The kernel kills us with the parent; keep the channel open only.
        std::mem::forget(control);
    } else {
        std::thread::Builder::new()
            .name("multiproc-parent-watch".into())
            .spawn(move || watch_parent(control))
            .map_err(|e| format!("watch thread: {e}"))?;
    }
    let _ = CURRENT_NAME.set(config.name);

    let run = match config.task.resolve(task_key(&token)) {
        Ok(run) => run,
        Err(why) => {
            let _ = config.results.send(Outcome::Rejected(why.to_string()));
            return Err(why.to_string());
        }
    };
    let (outcome, code) = run_catching(|| run(&config.args));
    config
        .results
        .send(outcome)
        .map_err(|e| format!("sending the result: {e:?}"))?;
    Ok(code)
}

/// The child's half of the handshake: says hello to the newest generation
/// the parent published, and again to each newer one (or again to the same
/// one after a failed connect), until a `Config` arrives or `deadline`.
fn await_config(
    rendezvous: &Segment,
    token: &Token,
    reply: &IpcSender<Config>,
    config_rx: IpcReceiver<Config>,
    deadline: Instant,
) -> std::result::Result<Config, String> {
    let mut inbox = Inbox::new(config_rx);
    let mut snapshot = vec![0u8; RENDEZVOUS_LEN];
    let mut tried = 0u32;
    // Read the rendezvous (again): first, and after a failed hello.
    let mut retry = true;
    let mut last_error = None;
    // One open connection per generation said hello to: a hello queued
    // behind another peer stays queued until its server decides.
    let mut hellos: Vec<(u32, IpcSender<Hello>)> = Vec::new();
    loop {
        let mut word = [0u8; 4];
        rendezvous.load(PUBLISHED_AT, &mut word);
        if u32::from_le_bytes(word) != tried || retry {
            let (generation, server) = read_newest(rendezvous, &mut snapshot)?;
            match say_hello(server, token, reply) {
                Ok(tx) => {
                    hellos.retain(|(g, _)| *g != generation);
                    hellos.push((generation, tx));
                    retry = false;
                }
                Err(e) => {
                    last_error = Some(e);
                    retry = true;
                }
            }
            tried = generation;
            // A hint for the parent's watch: this generation was tried.
            rendezvous.store(TRIED_AT, &generation.to_le_bytes());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let why = last_error
                .map(|e| format!(" (last: {e})"))
                .unwrap_or_default();
            return Err(format!(
                "no task from the parent within {CHILD_DEADLINE:?}{why}"
            ));
        }
        if let Some(config) = inbox
            .recv_timeout(left.min(CHILD_SLICE))
            .map_err(|e| format!("no task from the parent: {e}"))?
        {
            return Ok(config);
        }
    }
}

/// An ipc-channel receiver waited on with timeouts: the child's `Config`
/// (in short slices) and a child's `Outcome` (`Process::join_timeout`).
///
/// Where a timed receive may lose a message
/// ([`sys::IPC_TIMED_RECV_IN_SLICES`] is `false`: Windows), the first
/// timed wait moves the receiver to a thread blocked in one `recv`, which
/// forwards what arrives; untimed waits and Unix use the channel itself.
/// If nothing ever arrives and the channel never disconnects, that thread
/// stays blocked until the process exits.
pub(crate) enum Inbox<T> {
    Direct(IpcReceiver<T>),
    Forwarded(mpsc::Receiver<std::result::Result<T, String>>),
    /// Moving between the two (never seen outside `forward`).
    Moving,
}

impl<T> Inbox<T>
where
    T: for<'de> Deserialize<'de> + Serialize + Send + 'static,
{
    pub(crate) fn new(rx: IpcReceiver<T>) -> Inbox<T> {
        Inbox::Direct(rx)
    }

    /// Waits for the message; `Err` once the sender is gone (or the
    /// channel broke), with why.
    pub(crate) fn recv(&mut self) -> std::result::Result<T, String> {
        match self {
            Inbox::Direct(rx) => rx.recv().map_err(|e| format!("{e:?}")),
            Inbox::Forwarded(rx) => rx
                .recv()
                .unwrap_or_else(|_| Err("the forwarding thread ended".to_string())),
            Inbox::Moving => Err("no receiver".to_string()),
        }
    }

    /// The message if it arrives within `timeout`.
    pub(crate) fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<Option<T>, String> {
        if !sys::IPC_TIMED_RECV_IN_SLICES {
            self.forward()?;
        }
        match self {
            Inbox::Direct(rx) => match rx.try_recv_timeout(timeout) {
                Ok(msg) => Ok(Some(msg)),
                Err(ipc_channel::TryRecvError::Empty) => Ok(None),
                Err(e) => Err(format!("{e:?}")),
            },
            Inbox::Forwarded(rx) => match rx.recv_timeout(timeout) {
                Ok(got) => got.map(Some),
                Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Err("the forwarding thread ended".to_string())
                }
            },
            Inbox::Moving => Err("no receiver".to_string()),
        }
    }

    /// Hands a direct receiver to a thread blocked in `recv`.
    fn forward(&mut self) -> std::result::Result<(), String> {
        let Inbox::Direct(_) = self else {
            return Ok(());
        };
        let Inbox::Direct(rx) = std::mem::replace(self, Inbox::Moving) else {
            return Ok(());
        };
        let (tx, forwarded) = mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name("multiproc-inbox".into())
            .spawn(move || {
                let _ = tx.send(rx.recv().map_err(|e| format!("{e:?}")));
            });
        match spawned {
            Ok(_) => {
                *self = Inbox::Forwarded(forwarded);
                Ok(())
            }
            Err(e) => Err(format!("inbox thread: {e}")),
        }
    }
}

fn say_hello(
    server: &str,
    token: &Token,
    reply: &IpcSender<Config>,
) -> std::result::Result<IpcSender<Hello>, String> {
    let hello = IpcSender::<Hello>::connect(server.to_string())
        .map_err(|e| format!("cannot reach the parent's handshake server: {e}"))?;
    hello
        .send(Hello::Worker {
            token: *token,
            pid: std::process::id(),
            reply: reply.clone(),
        })
        .map_err(|e| format!("handshake send: {e:?}"))?;
    Ok(hello)
}

fn watch_parent(control: IpcReceiver<Control>) {
    // `Control` has no values yet, so `recv` only ever returns an error:
    // the parent closed the channel or died.
    if control.recv().is_err() {
        let _ = std::io::stdout().flush();
        std::process::exit(EXIT_PARENT_GONE);
    }
}

/// Runs `f`, turning a panic into [`Outcome::Panicked`] with message,
/// location and (if `RUST_BACKTRACE` asks) backtrace.
fn run_catching(
    f: impl FnOnce() -> std::result::Result<Vec<u8>, postcard::Error>,
) -> (Outcome, i32) {
    match catch_panic(f) {
        Ok(Ok(bytes)) => (Outcome::Returned(ByteBuf::from(bytes)), 0),
        Ok(Err(e)) => (
            Outcome::Rejected(format!("arguments or result: {e}")),
            EXIT_BOOTSTRAP_FAILED,
        ),
        Err(info) => (Outcome::Panicked(info), EXIT_PANICKED),
    }
}

thread_local! {
    /// What the panic hook saw last on this thread.
    static LAST_PANIC: std::cell::RefCell<Option<PanicInfo>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`; a panic becomes its [`PanicInfo`] (message, location and, if
/// `RUST_BACKTRACE` asks, backtrace). The panic is still printed on stderr,
/// as Python prints a child's traceback. Cheap when nothing panics: the
/// hook is installed once per process.
pub(crate) fn catch_panic<R>(f: impl FnOnce() -> R) -> std::result::Result<R, PanicInfo> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "Box<dyn Any>".to_string());
            let location = info.location().map(|l| l.to_string());
            let bt = std::backtrace::Backtrace::capture();
            let backtrace =
                (bt.status() == std::backtrace::BacktraceStatus::Captured).then(|| bt.to_string());
            let _ = LAST_PANIC.try_with(|last| {
                *last.borrow_mut() = Some(PanicInfo::new(message, location, backtrace));
            });
            // std's line names only the thread ("thread 'main' panicked"),
            // which reads as if the parent crashed; name the process first,
            // as Python does ("Process Process-1:" above the traceback).
            if let Some(name) = worker_name() {
                eprintln!("Process {name} (pid {}):", std::process::id());
            }
            previous(info);
        }));
    });
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
        LAST_PANIC
            .try_with(|last| last.borrow_mut().take())
            .ok()
            .flatten()
            .unwrap_or_else(|| PanicInfo::new("unknown panic".into(), None, None))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips() {
        let token = [7u8; 32];
        let seg = Segment::create(RENDEZVOUS_LEN).unwrap();
        let m = format!("v2:42:{}:{}", hex(&token), seg.handle());
        assert_eq!(parse_marker(&m).unwrap(), (42, token, seg.handle()));
    }

    #[test]
    fn bad_markers_are_refused() {
        let seg = Segment::create(RENDEZVOUS_LEN).unwrap();
        let h = seg.handle().to_string();
        let zeros = "0".repeat(64);
        for m in [
            "",
            "1",
            &format!("v1:1:{zeros}:{h}"),
            &format!("v3:1:{zeros}:{h}"),
            &format!("v2:x:{zeros}:{h}"),
            "v2:1:zz:srv",
            &format!("v2:1:{zeros}:"),
            &format!("v2:1:{zeros}:/tmp/.tmpabcdef/socket"),
            &format!("v2:1:{zeros}:{h}:x"),
            &format!("v2:1:{}:{h}", "é".repeat(32)),
        ] {
            assert!(parse_marker(m).is_err(), "{m:?} accepted");
        }
    }

    #[test]
    fn token_comparison() {
        let a = [1u8; 32];
        let mut b = a;
        assert!(tokens_equal(&a, &b));
        b[31] ^= 1;
        assert!(!tokens_equal(&a, &b));
    }

    /// A server name every platform's check accepts.
    fn a_server_name(i: u8) -> String {
        format!("67e55044-10b1-426f-9247-bb680e5fe0{i:02x}")
    }

    fn snapshot(seg: &Segment) -> Vec<u8> {
        let mut bytes = vec![0u8; RENDEZVOUS_LEN];
        seg.load(0, &mut bytes);
        bytes
    }

    #[test]
    fn published_generations_read_back_newest_first() {
        let seg = Segment::create(RENDEZVOUS_LEN).unwrap();
        let mut buf = vec![0u8; RENDEZVOUS_LEN];
        assert!(read_newest(&seg, &mut buf).is_err(), "nothing published");
        for n in 1..=MAX_GENERATIONS {
            let name = a_server_name(n as u8);
            publish_slot(&seg, n, &name).unwrap();
            let bytes = snapshot(&seg);
            assert_eq!(parse_generation(&bytes).unwrap(), (n as u32, name.as_str()));
            assert_eq!(
                read_newest(&seg, &mut buf).unwrap(),
                (n as u32, name.as_str())
            );
        }
        assert!(publish_slot(&seg, MAX_GENERATIONS + 1, "x").is_err());
        assert!(publish_slot(&seg, 1, &"x".repeat(SLOT_NAME_MAX + 1)).is_err());
        assert!(publish_slot(&seg, 1, "").is_err());
    }

    #[test]
    fn garbage_in_the_rendezvous_is_refused() {
        let good = {
            let seg = Segment::create(RENDEZVOUS_LEN).unwrap();
            publish_slot(&seg, 1, &a_server_name(1)).unwrap();
            snapshot(&seg)
        };
        assert!(parse_generation(&good).is_ok());
        let with = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        let cases = [
            good[..RENDEZVOUS_LEN - 1].to_vec(),
            [good.clone(), vec![0]].concat(),
            with(PUBLISHED_AT, &0u32.to_le_bytes()),
            with(PUBLISHED_AT, &(MAX_GENERATIONS as u32 + 1).to_le_bytes()),
            with(PUBLISHED_AT, &u32::MAX.to_le_bytes()),
            // Generation 2 announced but its slot is empty.
            with(PUBLISHED_AT, &2u32.to_le_bytes()),
            with(SLOTS_AT, &0u32.to_le_bytes()),
            with(SLOTS_AT, &(SLOT_NAME_MAX as u32 + 1).to_le_bytes()),
            with(SLOTS_AT, &u32::MAX.to_le_bytes()),
            with(SLOTS_AT + 4, &[0xff]),
            with(SLOTS_AT + 4, &[0]),
            with(SLOTS_AT + 4, b"\n"),
        ];
        for (i, bad) in cases.iter().enumerate() {
            assert!(parse_generation(bad).is_err(), "case {i} accepted");
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_generation_never_panics(
            count in proptest::prelude::any::<u32>(),
            len in proptest::prelude::any::<u32>(),
            name in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..SLOT_LEN),
            small_count in 0u32..=(MAX_GENERATIONS as u32 + 1),
            small_len in 0u32..=(SLOT_NAME_MAX as u32 + 1),
        ) {
            for (count, len) in [(count, len), (small_count, small_len), (small_count, len)] {
                let mut bytes = vec![0u8; RENDEZVOUS_LEN];
                bytes[..4].copy_from_slice(&count.to_le_bytes());
                let n = (count as usize).clamp(1, MAX_GENERATIONS);
                let slot = slot_at(n);
                bytes[slot..slot + 4].copy_from_slice(&len.to_le_bytes());
                let room = (SLOT_LEN - 4).min(name.len());
                bytes[slot + 4..slot + 4 + room].copy_from_slice(&name[..room]);
                if let Ok((g, server)) = parse_generation(&bytes) {
                    proptest::prop_assert_eq!(g, count);
                    proptest::prop_assert_eq!(server.len(), len as usize);
                }
            }
        }
    }

    /// A start of a "child" that is this very process (so that its hello's
    /// pid is right), with generation 1 published as `launch` does.
    fn start_here(token: Token) -> Handshake {
        let rendezvous = Segment::create(RENDEZVOUS_LEN).unwrap();
        let (server, name) = new_server().unwrap();
        publish_slot(&rendezvous, 1, &name).unwrap();
        fn double(x: u32) -> u32 {
            2 * x
        }
        let payload = Payload {
            name: "unit".into(),
            task: TaskRef::of(&double, task_key(&token)),
            args: vec![21],
        };
        begin(
            token,
            std::process::id(),
            payload,
            rendezvous,
            server,
            name,
            Instant::now(),
        )
        .unwrap()
    }

    /// The rendezvous, opened by its handle as a child does.
    fn rendezvous_of(handshake: &Handshake) -> Segment {
        let handle = handshake.start.lock().rendezvous.as_ref().unwrap().handle();
        Segment::open(&handle).unwrap()
    }

    /// The child's side, on a thread: waits for its `Config` until `limit`.
    fn child_side(
        rendezvous: Segment,
        token: Token,
        limit: Duration,
    ) -> std::thread::JoinHandle<std::result::Result<String, String>> {
        std::thread::spawn(move || {
            let (reply, config_rx) = ipc::channel::<Config>().unwrap();
            let deadline = Instant::now() + limit;
            await_config(&rendezvous, &token, &reply, config_rx, deadline).map(|c| c.name)
        })
    }

    fn newest(handshake: &Handshake) -> (usize, String) {
        let st = handshake.start.lock();
        (
            st.generations.len(),
            st.generations.last().unwrap().name.clone(),
        )
    }

    fn impostor_hello(server: &str, token: Token) -> IpcReceiver<Config> {
        let (reply, rx) = ipc::channel::<Config>().unwrap();
        IpcSender::<Hello>::connect(server.to_string())
            .unwrap()
            .send(Hello::Worker {
                token,
                pid: std::process::id(),
                reply,
            })
            .unwrap();
        rx
    }

    fn wait_for_generation(handshake: &Handshake, n: usize) {
        let until = Instant::now() + Duration::from_secs(10);
        while newest(handshake).0 < n {
            assert!(Instant::now() < until, "generation {n} never came");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_refused_peer_makes_a_new_generation_and_the_child_gets_its_config() {
        let token = random_token().unwrap();
        let handshake = start_here(token);
        let (_, first) = newest(&handshake);
        let nothing = impostor_hello(&first, [0; 32]);
        wait_for_generation(&handshake, 2);
        // The impostor gets nothing. On Unix its channel also reports that
        // the parent dropped the reply sender; under Wine a sender that
        // travelled through this same process was not seen to disconnect
        // (`Empty` after 5 s), so there the check is that nothing arrives.
        let got = nothing.try_recv_timeout(Duration::from_secs(5));
        let dropped = matches!(
            got,
            Err(ipc_channel::TryRecvError::IpcError(
                ipc_channel::IpcError::Disconnected
            ))
        );
        let nothing_came = matches!(got, Err(ipc_channel::TryRecvError::Empty));
        assert!(
            dropped || (cfg!(windows) && nothing_came),
            "{:?}",
            got.map(|c| c.name)
        );
        let child = child_side(rendezvous_of(&handshake), token, Duration::from_secs(10));
        assert_eq!(child.join().unwrap().unwrap(), "unit");
        let link = handshake.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(link.is_ok());
        let st = handshake.start.lock();
        assert!(matches!(st.claim, Claim::Claimed(2)));
        assert_eq!(st.refused, 1);
        assert!(st.rendezvous.is_none(), "kept after the claim");
    }

    #[test]
    fn a_silent_peer_is_outlasted_by_a_new_generation() {
        let token = random_token().unwrap();
        let handshake = start_here(token);
        let (_, first) = newest(&handshake);
        // Connects first and says nothing: generation 1's thread waits in
        // `recv` for as long as this connection stays open.
        let silent = IpcSender::<Hello>::connect(first).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let child = child_side(rendezvous_of(&handshake), token, Duration::from_secs(10));
        assert_eq!(child.join().unwrap().unwrap(), "unit");
        assert!(handshake
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .is_ok());
        {
            let st = handshake.start.lock();
            assert!(matches!(st.claim, Claim::Claimed(n) if n >= 2));
            assert!(st.silences >= 1);
            assert!(!st.generations[0].done, "generation 1 is still held");
        }
        // Once the silent peer closes, generation 1's thread ends.
        drop(silent);
        let until = Instant::now() + Duration::from_secs(10);
        while !handshake.start.lock().generations[0].done {
            assert!(Instant::now() < until, "generation 1 never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_second_valid_hello_is_dropped_without_a_word() {
        let token = random_token().unwrap();
        let handshake = start_here(token);
        let (first_reply, first) = ipc::channel::<Config>().unwrap();
        let (second_reply, second) = ipc::channel::<Config>().unwrap();
        let (_conn_tx, conn) = ipc::channel::<Hello>().unwrap();
        let (_conn2_tx, conn2) = ipc::channel::<Hello>().unwrap();
        // Generation 1 is still waiting in `accept`; claim as 2 and 3 would.
        {
            let mut st = handshake.start.lock();
            for i in 0..2 {
                st.generations.push(Generation {
                    name: format!("unused-{i}"),
                    done: false,
                    woken: true,
                });
            }
        }
        handshake.start.claim(2, conn, first_reply);
        handshake.start.claim(3, conn2, second_reply);
        assert_eq!(
            first.try_recv_timeout(Duration::from_secs(5)).unwrap().name,
            "unit"
        );
        assert!(matches!(
            second.try_recv_timeout(Duration::from_secs(5)),
            Err(ipc_channel::TryRecvError::IpcError(
                ipc_channel::IpcError::Disconnected
            ))
        ));
        assert!(handshake
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .is_ok());
        assert!(matches!(handshake.start.lock().claim, Claim::Claimed(2)));
    }

    #[test]
    fn refusing_every_generation_fails_the_start() {
        let token = random_token().unwrap();
        let handshake = start_here(token);
        let rendezvous = rendezvous_of(&handshake);
        let mut replies = Vec::new();
        for n in 1..=MAX_GENERATIONS {
            wait_for_generation(&handshake, n);
            let (at, name) = newest(&handshake);
            assert_eq!(at, n);
            replies.push(impostor_hello(&name, [0xee; 32]));
        }
        let err = handshake
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .err()
            .expect("the start succeeded");
        assert_eq!(err.kind(), ErrorKind::Handshake);
        let text = err.to_string();
        assert!(text.contains("refused 16 connections"), "{text}");
        assert!(text.contains("wrong token"), "{text}");
        assert_eq!(newest(&handshake).0, MAX_GENERATIONS);
        // And now nobody can claim it: the child gets nothing.
        let child = child_side(rendezvous, token, Duration::from_millis(300));
        assert!(child.join().unwrap().is_err());
        for r in replies {
            assert!(r.try_recv_timeout(Duration::from_secs(1)).is_err());
        }
    }

    #[test]
    fn a_closed_start_sends_nothing_and_wakes_its_servers() {
        let token = random_token().unwrap();
        let mut handshake = start_here(token);
        let closed = handshake.close();
        assert_eq!(closed.claimed, None);
        let until = Instant::now() + Duration::from_secs(10);
        while !handshake.start.lock().generations[0].done {
            assert!(Instant::now() < until, "generation 1 was not woken");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(handshake.start.lock().rendezvous.is_none());
        assert!(matches!(
            handshake.recv_timeout(Duration::from_millis(50)),
            Err(mpsc::RecvTimeoutError::Timeout)
        ));
    }
}
