//! The child's side: `init` finds the marker, says hello to the newest
//! generation until a `Config` arrives, runs the task and reports how it
//! ended.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
use serde_bytes::ByteBuf;

use super::rendezvous::*;
use super::*;
use crate::panic::catch_panic;
use crate::segment::{Segment, SegmentHandle};
use crate::sys;

pub(super) static CURRENT_NAME: OnceLock<String> = OnceLock::new();
/// The parent's name and pid, in a worker.
static PARENT: OnceLock<(String, u32)> = OnceLock::new();

/// The parent's name and pid if this process is a worker.
pub(crate) fn parent() -> Option<(&'static str, u32)> {
    PARENT.get().map(|(name, pid)| (name.as_str(), *pid))
}

/// The name this process was given by its parent, if it is a worker.
pub(crate) fn worker_name() -> Option<&'static str> {
    CURRENT_NAME.get().map(String::as_str)
}

/// See [`crate::init`].
pub(crate) fn init() {
    // A shared-memory tracker whose load-time constructor did not run (it
    // normally never reaches `main`): be the tracker, never the program.
    sys::run_shm_tracker_if_asked();
    // The fork server: serves forks until the parent goes; never returns.
    super::forkserver::serve_if_asked();
    let Some(marker) = std::env::var_os(MARKER) else {
        sys::note_identity();
        READY.store(true, std::sync::atomic::Ordering::Release);
        return;
    };
    // Whatever this worker starts must not believe it is a worker too. This
    // runs first thing in `main`, before any thread of ours reads the env.
    std::env::remove_var(MARKER);
    run_worker(&marker.to_string_lossy())
}

/// A spawned worker's whole life from its marker on: the handshake, the
/// task, the exit.
pub(super) fn run_worker(marker: &str) -> ! {
    exit_with(worker_main(marker))
}

/// Exits with a worker's code, or with the code for why it never ran.
fn exit_with(result: std::result::Result<i32, String>) -> ! {
    let code = match result {
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
pub(in crate::bootstrap) const PARENT_GONE: &str = "parent gone";

pub(super) fn worker_main(marker: &str) -> std::result::Result<i32, String> {
    let deadline = Instant::now() + CHILD_DEADLINE;
    let (ppid, token, rendezvous) = parse_marker(marker)?;
    // Before this worker opens any socket of its own.
    sys::close_stray_ipc_sockets();
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
    run_config(config, ppid, &token)
}

/// A child of the fork server: its `Config` came in the request that
/// forked it (made by the parent, handed down by the server); no
/// rendezvous, no hello, no wait.
#[cfg(target_os = "linux")]
pub(super) fn run_forked(ppid: u32, token: Token, config: Config) -> ! {
    exit_with(forked_main(ppid, token, config))
}

#[cfg(target_os = "linux")]
fn forked_main(ppid: u32, token: Token, config: Config) -> std::result::Result<i32, String> {
    // `CLONE_PARENT` made the parent ours; it may have died since.
    if !sys::die_with_parent(ppid).map_err(|e| format!("parent check: {e}"))? {
        return Err(PARENT_GONE.to_string());
    }
    // The task runs only once the parent took this process as its start's.
    let gone = |why: String| {
        if parent_gone(ppid) {
            PARENT_GONE.to_string()
        } else {
            why
        }
    };
    match config.control.try_recv_timeout(CHILD_DEADLINE) {
        Ok(Control::Run) => {}
        Err(ipc_channel::TryRecvError::Empty) => {
            return Err(gone(format!(
                "no word from the parent within {CHILD_DEADLINE:?}"
            )))
        }
        Err(e) => return Err(gone(format!("the parent gave this start up ({e:?})"))),
    }
    run_config(config, ppid, &token)
}

/// `true` when the parent `ppid` is no longer this process's parent (it
/// died and we were reparented): a failure then is its death, which needs
/// no message.
fn parent_gone(ppid: u32) -> bool {
    !sys::die_with_parent(ppid).unwrap_or(true)
}

/// From the `Config` on, the same for every worker: the parent watch, the
/// names, the task, its outcome.
fn run_config(config: Config, ppid: u32, token: &Token) -> std::result::Result<i32, String> {
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
    let _ = PARENT.set((config.parent_name, ppid));
    // Before any task code: the task's first record is forwarded too.
    crate::logging::install(config.log);

    let run = match config.task.resolve(task_key(token)) {
        Ok(run) => run,
        Err(why) => {
            stand_down_parent_watch();
            let _ = config.results.send(Outcome::Rejected(why.to_string()));
            return Err(why.to_string());
        }
    };
    let (outcome, code) = run_catching(|| run(&config.args));
    stand_down_parent_watch();
    config.results.send(outcome).map_err(|e| {
        if parent_gone(ppid) {
            PARENT_GONE.to_string()
        } else {
            format!("sending the result: {e:?}")
        }
    })?;
    Ok(code)
}

/// The child's half of the handshake: says hello to the newest generation
/// the parent published, and again to each newer one (or again to the same
/// one after a failed connect), until a `Config` arrives or `deadline`.
pub(super) fn await_config(
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

pub(super) fn say_hello(
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

/// Set once the task has ended and its outcome is about to go: from then
/// on the parent may drop the control link (it has what it waited for),
/// and this process exits with the task's own code, not
/// [`EXIT_PARENT_GONE`].
static STOOD_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Tells the parent watch to let the disconnect that follows the outcome
/// pass: without it, the watch could see the parent drop the link before
/// the main thread's own `exit`, and end a child that had delivered its
/// result with 122 (seen under Wine, where no parent-death signal exists).
fn stand_down_parent_watch() {
    // SYNC: SeqCst pairs with the SeqCst load in `watch_parent`: the store
    // precedes the outcome's send, which precedes the parent's drop of the
    // link, which precedes the watch's `recv` error and then its load.
    STOOD_DOWN.store(true, std::sync::atomic::Ordering::SeqCst);
}

pub(super) fn watch_parent(control: IpcReceiver<Control>) {
    // Nothing sent here needs an answer (`Control::Run` is for forked
    // children, before this watch); an error is the parent closing the
    // channel or dying.
    while control.recv().is_ok() {}
    // SYNC: SeqCst, see `stand_down_parent_watch`.
    if STOOD_DOWN.load(std::sync::atomic::Ordering::SeqCst) {
        // The outcome is out; the main thread exits with its code.
        return;
    }
    let _ = std::io::stdout().flush();
    std::process::exit(EXIT_PARENT_GONE);
}

/// Runs `f`, turning a panic into [`Outcome::Panicked`] with message,
/// location and (if `RUST_BACKTRACE` asks) backtrace.
pub(super) fn run_catching(
    f: impl FnOnce() -> std::result::Result<Vec<u8>, postcard::Error>,
) -> (Outcome, i32) {
    match catch_panic(f) {
        Ok(Ok(bytes)) => (Outcome::Returned(ByteBuf::from(bytes)), 0),
        Ok(Err(e)) => (
            Outcome::Rejected(format!(
                "arguments or result: {}",
                crate::error::describe_postcard(&e)
            )),
            EXIT_BOOTSTRAP_FAILED,
        ),
        Err(info) => (Outcome::Panicked(info), EXIT_PANICKED),
    }
}
