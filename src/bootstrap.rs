//! Starting workers: the re-exec, the handshake, and the child's side.
//!
//! ```text
//!  parent                                        child (same binary, re-executed)
//!  ──────                                        ────────────────────────────────
//!  IpcOneShotServer::new() → name
//!  spawn(exe, MULTIPROC_WORKER=v1:ppid:token:name)
//!  accept() on a handshake thread ◄─── Hello { token, pid, reply } ── init(): connect(name)
//!  check token (constant time) and pid
//!  reply.send(Config { task, args,  ─────────────────────────────────► run the task
//!             results, control })
//!  results.recv()  ◄───────────────────── Outcome ──────────────────── exit(0 | 1)
//! ```
//!
//! * The marker alone runs nothing: a child that cannot parse it, cannot
//!   connect, or gets no `Config` within [`CHILD_DEADLINE`] exits with
//!   [`EXIT_BOOTSTRAP_FAILED`] before any task code.
//! * `accept()` blocks forever upstream, so it runs on its own thread. If the
//!   child dies first, the parent wakes that thread by connecting to its own
//!   server and sending [`Hello::Abort`].
//! * The child watches its `control` receiver: when the parent dies, the
//!   channel disconnects and the child exits with [`EXIT_PARENT_GONE`]
//!   (Linux also sets `PR_SET_PDEATHSIG`).

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use ipc_channel::ipc::{self, IpcOneShotServer, IpcReceiver, IpcSender};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::error::{Error, ErrorKind, PanicInfo, Result};
use crate::sys;
use crate::task::{TaskKey, TaskRef};

/// Environment variable that marks a re-executed worker.
pub(crate) const MARKER: &str = "MULTIPROC_WORKER";
const MARKER_VERSION: &str = "v1";

/// Exit code of a worker whose start-up failed (bad marker, no handshake).
pub(crate) const EXIT_BOOTSTRAP_FAILED: i32 = 121;
/// Exit code of a worker that noticed its parent is gone.
pub(crate) const EXIT_PARENT_GONE: i32 = 122;
/// Exit code of a worker whose task panicked (Python: 1 for an exception).
pub(crate) const EXIT_PANICKED: i32 = 1;

/// How long a child waits for its `Config` after connecting.
const CHILD_DEADLINE: Duration = Duration::from_secs(5);

/// A handshake socket older than this that nobody listens on is debris.
const STALE_SOCKET_AGE: Duration = Duration::from_secs(2);

pub(crate) type Token = [u8; 32];

/// First message, child → parent.
#[derive(Serialize, Deserialize)]
pub(crate) enum Hello {
    Worker {
        token: Token,
        pid: u32,
        reply: IpcSender<Config>,
    },
    /// Sent by the parent to its own server to wake a blocked `accept()`.
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
    pub(crate) results: IpcReceiver<Outcome>,
    /// Held only so the child sees a disconnection when the parent dies.
    _control: IpcSender<Control>,
}

/// A child that has been started; its handshake completes on a thread.
pub(crate) struct Launch {
    pub(crate) child: std::process::Child,
    pub(crate) handshake: mpsc::Receiver<Result<Link>>,
    pub(crate) server_name: String,
}

static TEST_ENTRY: OnceLock<String> = OnceLock::new();

/// Called by [`crate::test_support!`]'s constructor in test binaries.
pub(crate) fn enable_test_mode(entry: String) {
    let _ = TEST_ENTRY.set(entry);
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

/// Starts a worker that will run `task(args)` and report on `Link::results`.
pub(crate) fn launch(
    token: Token,
    name: String,
    task: TaskRef,
    args: Vec<u8>,
    env: &[(std::ffi::OsString, Option<std::ffi::OsString>)],
) -> Result<Launch> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| sys::sweep_stale_handshake_dirs(&std::env::temp_dir(), STALE_SOCKET_AGE));
    let (server, server_name) = IpcOneShotServer::<Hello>::new()
        .map_err(|e| Error::io("creating the handshake server", e))?;
    sys::restrict_handshake_server(&server_name)
        .map_err(|e| Error::io("restricting the handshake server to this user", e))?;
    let exe =
        std::env::current_exe().map_err(|e| Error::io("locating the current executable", e))?;
    let mut cmd = std::process::Command::new(exe);
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd.env(
        MARKER,
        format!(
            "{MARKER_VERSION}:{}:{}:{server_name}",
            std::process::id(),
            hex(&token)
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
    let pid = child.id();
    let (tx, handshake) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name(format!("multiproc-handshake-{pid}"))
        .spawn(move || {
            // Hand the link over before the accepted connection is closed:
            // that close frees the (already unlinked) socket inode, which on
            // a disk-backed $TMPDIR can wait ~0.3 ms for the filesystem.
            let (result, conn) = match accept(server, &token, pid, name, task, args) {
                Ok((link, conn)) => (Ok(link), Some(conn)),
                Err(e) => (Err(e), None),
            };
            let _ = tx.send(result);
            drop(conn);
        });
    if let Err(e) = spawned {
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::io("starting the handshake thread", e));
    }
    Ok(Launch {
        child,
        handshake,
        server_name,
    })
}

fn accept(
    server: IpcOneShotServer<Hello>,
    token: &Token,
    pid: u32,
    name: String,
    task: TaskRef,
    args: Vec<u8>,
) -> Result<(Link, IpcReceiver<Hello>)> {
    let handshake_err =
        |what: &str| Error::new(ErrorKind::Handshake, what.to_string()).with_pid(pid);
    // Whoever connects first is decoded here. ipc-channel's decoder panics
    // on a channel index with no channel attached (an acknowledged gap
    // upstream), so a malformed hello is caught and refused like a wrong
    // token.
    let accepted = std::panic::catch_unwind(AssertUnwindSafe(|| server.accept()))
        .map_err(|_| handshake_err("a peer sent a malformed hello"))?;
    let (conn, hello) = accepted.map_err(|e| {
        handshake_err("accept").with_source(std::io::Error::other(format!("{e:?}")))
    })?;
    let reply = match hello {
        Hello::Abort => return Err(handshake_err("the child exited before connecting")),
        Hello::Worker {
            token: presented,
            pid: claimed,
            reply,
        } => {
            if !tokens_equal(&presented, token) {
                return Err(handshake_err("a peer presented a wrong token"));
            }
            if claimed != pid {
                return Err(handshake_err("the peer's pid is not the child's"));
            }
            reply
        }
    };
    let (results_tx, results) = ipc::channel().map_err(|e| Error::io("creating a channel", e))?;
    let (control, control_rx) = ipc::channel().map_err(|e| Error::io("creating a channel", e))?;
    reply
        .send(Config {
            name,
            task,
            args: ByteBuf::from(args),
            results: results_tx,
            control: control_rx,
        })
        .map_err(|e| {
            handshake_err("sending the task").with_source(std::io::Error::other(format!("{e:?}")))
        })?;
    Ok((
        Link {
            results,
            _control: control,
        },
        conn,
    ))
}

/// Wakes a handshake thread blocked in `accept()` whose child is gone.
pub(crate) fn abort_handshake(server_name: &str) {
    // If the server already accepted (or is gone), connecting fails: fine.
    if let Ok(tx) = IpcSender::<Hello>::connect(server_name.to_string()) {
        let _ = tx.send(Hello::Abort);
    }
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

// ---------------------------------------------------------------- child side

static CURRENT_NAME: OnceLock<String> = OnceLock::new();

/// The name this process was given by its parent, if it is a worker.
pub(crate) fn worker_name() -> Option<&'static str> {
    CURRENT_NAME.get().map(String::as_str)
}

/// See [`crate::init`].
pub(crate) fn init() {
    let Some(marker) = std::env::var_os(MARKER) else {
        return;
    };
    // Whatever this worker starts must not believe it is a worker too. This
    // runs first thing in `main`, before any thread of ours reads the env.
    std::env::remove_var(MARKER);
    let code = match worker_main(&marker.to_string_lossy()) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("multiproc: not starting worker: {msg}");
            EXIT_BOOTSTRAP_FAILED
        }
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}

pub(crate) fn parse_marker(marker: &str) -> std::result::Result<(u32, Token, &str), String> {
    let mut parts = marker.splitn(4, ':');
    let (Some(version), Some(ppid), Some(token), Some(server)) =
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
    if server.is_empty() {
        return Err(format!("no handshake server in {MARKER}"));
    }
    Ok((ppid, token, server))
}

fn worker_main(marker: &str) -> std::result::Result<i32, String> {
    let (ppid, token, server) = parse_marker(marker)?;
    sys::die_with_parent(ppid).map_err(|e| format!("parent check: {e}"))?;

    // ipc-channel's Windows connect panics on a name that is not a UUID.
    if !sys::handshake_server_name_ok(server) {
        return Err(format!("bad handshake server name in {MARKER}"));
    }
    let (reply, config_rx) = ipc::channel::<Config>().map_err(|e| format!("channel: {e}"))?;
    let hello = IpcSender::<Hello>::connect(server.to_string())
        .map_err(|e| format!("cannot reach the parent's handshake server: {e}"))?;
    hello
        .send(Hello::Worker {
            token,
            pid: std::process::id(),
            reply,
        })
        .map_err(|e| format!("handshake send: {e:?}"))?;
    let config = config_rx
        .try_recv_timeout(CHILD_DEADLINE)
        .map_err(|e| format!("no task from the parent: {e:?}"))?;
    drop(hello);

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
        let m = format!("v1:42:{}:/tmp/x:y", hex(&token));
        assert_eq!(parse_marker(&m).unwrap(), (42, token, "/tmp/x:y"));
    }

    #[test]
    fn bad_markers_are_refused() {
        for m in [
            "",
            "1",
            "v2:1:00:srv",
            "v1:x:00:srv",
            "v1:1:zz:srv",
            &format!("v1:1:{}:", "0".repeat(64)),
            &format!("v1:1:{}:srv", "é".repeat(32)),
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
}
