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
//!
//! Files: this one holds what both sides share (the marker, exit codes,
//! the messages, tokens) and the start gate; `rendezvous.rs` the shared
//! page where the parent publishes its servers; `parent.rs` the parent's
//! side (`launch`, the generations, the watch thread); `child.rs` the
//! child's side (`init`, the hello, running the task); `inbox.rs` timed
//! receives from an ipc-channel.

mod child;
mod forkserver;
mod inbox;
mod parent;
mod rendezvous;
#[cfg(test)]
mod tests;

#[cfg(feature = "fuzzing")]
pub(crate) use child::parse_marker;
pub(crate) use child::{init, parent, worker_name};

/// The name of a process that is not a worker (Python's).
pub(crate) const MAIN_PROCESS: &str = "MainProcess";
pub(crate) use inbox::Inbox;
#[cfg(feature = "fuzzing")]
pub(crate) use parent::{decode_hello_for_fuzzing, decode_outcome_for_fuzzing};
pub(crate) use parent::{launch, Closed, Handshake};
#[cfg(feature = "fuzzing")]
pub(crate) use rendezvous::parse_generation_for_fuzzing;

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use ipc_channel::ipc::{IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::error::{Error, ErrorKind, PanicInfo, Result};
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
    /// The parent's own name (`current_process().name()` there).
    parent_name: String,
    task: TaskRef,
    args: ByteBuf,
    results: IpcSender<Outcome>,
    control: IpcReceiver<Control>,
    /// Where the child forwards its log records (feature `tracing`; an
    /// empty type without it).
    log: crate::logging::Offer,
}

/// Parent → child control messages. The channel's other point is its
/// disconnection, which tells the child the parent died.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Control {
    /// To a fork-server child, once: the parent took it as its start's
    /// process, so it may run its task (it waits for this before any task
    /// code; a try the parent gave up never runs its task).
    Run,
}

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
    pub(crate) child: crate::sys::Child,
    pub(crate) handshake: Handshake,
    /// The forwarding of the child's log records, if any.
    pub(crate) log: crate::logging::ChildLog,
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
    if std::env::var_os(MARKER).is_some() || forkserver::started_as_server() {
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
