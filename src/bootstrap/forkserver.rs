//! The fork server (start method `forkserver`, Linux): one re-exec of this
//! program per parent, stopped in `init()` right after the worker set-up,
//! that forks a new worker on each request.
//!
//! ```text
//!  parent                                         fork server (single-threaded)
//!  socketpair(); spawn(MULTIPROC_FORKSERVER=      init(): adopt the fd (peer must be
//!    v1:<pid>:<fd>), the fd kept across exec        the parent), PDEATHSIG
//!  Offer { one-shot name, token } ◄────────────── on that socket pair, once
//!  connect; ServerLink { token, requests,  ──────► accept; check the token
//!    replies }                                      (then the socket pair is closed)
//!  ipc::channel() for its outcome and control
//!  ForkRequest { token, env, cwd, task, ─────────► clone(CLONE_PARENT) ──► child: drop the
//!    results, control }                           │                       server's ends, env,
//!  Forked(pid) ◄──────────────────────────────────┘                       cwd; run the task
//!  (pid checked: our own un-reaped child)                                 from its copy of
//!  results.recv() ◄────────────────────── Outcome ──────────────────────── the request
//! ```
//!
//! The child is the parent's own child (`CLONE_PARENT`): the parent reaps
//! it, reads its exit status and signals it exactly as a spawned one, and
//! it dies with the parent (its `PR_SET_PDEATHSIG` names the parent's
//! spawner thread). It needs no rendezvous, no handshake and no message of
//! its own: the request that made it carries its task and the ends of its
//! channels, and reached it only through the server, which only the parent
//! can ask. From there on it is a spawned worker. docs/ARCHITECTURE.md,
//! "Fork server".

use std::ffi::OsString;

use super::parent::Payload;
use super::{Link, Token};
use crate::error::Result;

/// Environment variable that makes `init()` serve forks.
#[cfg(target_os = "linux")]
pub(super) const SERVER_MARKER: &str = "MULTIPROC_FORKSERVER";

#[cfg(target_os = "linux")]
pub(super) use linux::{fork, serve_if_asked};

/// `true` in a process started as the fork server that has not reached
/// `init()` yet (it must not start anything: see `ensure_may_start`).
pub(super) fn started_as_server() -> bool {
    #[cfg(target_os = "linux")]
    return std::env::var_os(SERVER_MARKER).is_some();
    #[cfg(not(target_os = "linux"))]
    false
}

/// Elsewhere there is no fork server: `StartMethod::ForkServer` is refused
/// before a start gets here.
#[cfg(not(target_os = "linux"))]
pub(super) fn serve_if_asked() {}

#[cfg(not(target_os = "linux"))]
pub(super) fn fork(
    _token: &Token,
    _env: &[(OsString, Option<OsString>)],
    _payload: Payload,
) -> Result<(crate::sys::Child, Link)> {
    Err(crate::process::StartMethod::ForkServer
        .check_available()
        .expect_err("the fork server is Linux-only"))
}

#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsStr;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::net::UnixStream;
    use std::panic::AssertUnwindSafe;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use ipc_channel::ipc::{self, IpcReceiver, IpcSender};
    use serde::{Deserialize, Serialize};
    use serde_bytes::ByteBuf;

    use super::super::inbox::Inbox;
    use super::super::{Config, Control, Outcome};
    use super::*;
    use crate::error::{Error, ErrorKind};
    use crate::sys;
    use crate::task::TaskRef;

    /// See `serve`: a test's way to kill the server between its `clone`
    /// and its reply.
    const TEST_DIE_AFTER_CLONE: &str = "MULTIPROC_TEST_FORKSERVER_DIE_AFTER_CLONE";

    /// Largest frame read on the private socket pair (the server's offer).
    const MAX_OFFER: usize = 4096;
    /// How long the parent waits for the server's offer (it includes the
    /// server's own start) and then for each reply, before it gives that
    /// server up.
    const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

    /// Server → parent, once, on the private socket pair: where to connect
    /// to hand the server its channels, and the token that proves it is us.
    #[derive(Serialize, Deserialize)]
    struct Offer {
        name: String,
        token: Token,
    }

    /// Parent → server, once, through the offered one-shot server: the
    /// server's ends of the request and reply channels.
    #[derive(Serialize, Deserialize)]
    struct ServerLink {
        token: Token,
        requests: IpcReceiver<ForkRequest>,
        replies: IpcSender<ForkReply>,
    }

    /// Parent → server: fork a worker that runs `task` with this
    /// environment and working directory (those of the parent now, as a
    /// spawn would give) and the child's ends of its channels. The child
    /// inherits the request: it is the child's `Config`, in parts.
    #[derive(Serialize, Deserialize)]
    struct ForkRequest {
        /// The start's token: the child derives its task key from it.
        token: Token,
        /// `None`: the server's own (the usual case, see `Server::env`).
        env: Option<Vec<(ByteBuf, ByteBuf)>>,
        cwd: ByteBuf,
        task: Handed,
        results: IpcSender<Outcome>,
        control: IpcReceiver<Control>,
    }

    /// What a spawned child's `Config` says besides its channels.
    #[derive(Clone, Serialize, Deserialize)]
    struct Handed {
        name: String,
        parent_name: String,
        task: TaskRef,
        args: SharedBytes,
        log: crate::logging::Offer,
    }

    /// Bytes that a retried request shares with the first try instead of
    /// copying them (an argument can be megabytes); on the wire, plain bytes.
    #[derive(Clone)]
    struct SharedBytes(Arc<Vec<u8>>);

    impl Serialize for SharedBytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for SharedBytes {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            Ok(SharedBytes(Arc::new(ByteBuf::deserialize(d)?.into_vec())))
        }
    }

    /// Server → parent.
    #[derive(Serialize, Deserialize)]
    enum ForkReply {
        Forked(u32),
        Failed(String),
    }

    /// The parent's link to its server.
    struct Server {
        requests: IpcSender<ForkRequest>,
        replies: IpcReceiver<ForkReply>,
        process: std::process::Child,
        /// The server's environment, exactly (it was started with this one
        /// and no other). A request whose environment is the same sends
        /// none, and its child keeps the server's: comparing and setting
        /// the variables was a tenth of a forked child's own CPU time.
        env: Vec<(OsString, OsString)>,
    }

    impl Server {
        /// Kills and reaps a server that failed us.
        fn stop(mut self) {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }

        /// One request and its reply, under [`REPLY_TIMEOUT`].
        fn exchange(&self, request: ForkRequest) -> std::result::Result<ForkReply, String> {
            // A dead server is `EPIPE` here, never a `SIGPIPE`: the
            // channels are `SOCK_SEQPACKET` sockets, which raise none.
            self.requests
                .send(request)
                .map_err(|e| format!("sending the request: {e:?}"))?;
            match self.replies.try_recv_timeout(REPLY_TIMEOUT) {
                Ok(reply) => Ok(reply),
                Err(ipc_channel::TryRecvError::Empty) => {
                    Err(format!("no reply within {REPLY_TIMEOUT:?}"))
                }
                Err(e) => Err(format!("the reply: {e:?}")),
            }
        }
    }

    static SERVER: Mutex<Option<Server>> = Mutex::new(None);

    /// Asks the fork server (started now if there is none, or again if it
    /// died) to fork a worker that runs `payload` for the start with
    /// `token`. Returns the child and the parent's ends of its channels.
    pub(in crate::bootstrap) fn fork(
        token: &Token,
        env: &[(OsString, Option<OsString>)],
        payload: Payload,
    ) -> Result<(sys::Child, Link)> {
        let (env, cwd) = environment(env);
        let bytes = |s: &OsString| ByteBuf::from(s.as_bytes().to_vec());
        let handed = Handed {
            name: payload.name,
            parent_name: payload.parent_name,
            task: payload.task,
            args: SharedBytes(Arc::new(payload.args)),
            log: payload.log,
        };
        let mut slot = SERVER.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        // A server found dead (killed, or gone since the last start) is
        // replaced once; a second failure in a row is this start's error.
        for _ in 0..2 {
            let server = match slot.as_mut() {
                Some(server) => server,
                None => match start_server() {
                    Ok(server) => slot.insert(server),
                    Err(e) => {
                        last = Some(e.to_string());
                        continue;
                    }
                },
            };
            // Fresh channels per try: a failed try's ends may be anywhere
            // (in the dead server, or in a child nobody waits for).
            let channel_err = |e| Error::io("creating a worker's channel", e);
            let (results_tx, results) = ipc::channel::<Outcome>().map_err(channel_err)?;
            let (control, control_rx) = ipc::channel::<Control>().map_err(channel_err)?;
            let request = ForkRequest {
                token: *token,
                env: (env != server.env)
                    .then(|| env.iter().map(|(k, v)| (bytes(k), bytes(v))).collect()),
                cwd: cwd.clone(),
                task: handed.clone(),
                results: results_tx,
                control: control_rx,
            };
            match server.exchange(request) {
                Ok(ForkReply::Forked(pid)) if sys::forkserver::is_own_child(pid) => {
                    // The child waits for this before any task code, so a
                    // try given up below (say, a server that died after its
                    // `clone`) never runs the task. A child already dead
                    // fails the send; its exit is the start's outcome.
                    let _ = control.send(Control::Run);
                    let link = Link {
                        results: Inbox::new(results),
                        _control: control,
                    };
                    return Ok((sys::Child::forked(pid), link));
                }
                Ok(ForkReply::Forked(pid)) => {
                    last = Some(format!("it named process {pid}, which is not our child"));
                }
                Ok(ForkReply::Failed(why)) => {
                    return Err(Error::new(
                        ErrorKind::Spawn,
                        format!("the fork server could not fork: {why}"),
                    ));
                }
                Err(e) => last = Some(e),
            }
            if let Some(server) = slot.take() {
                server.stop();
            }
        }
        Err(Error::new(
            ErrorKind::Spawn,
            format!(
                "the fork server failed twice in a row (the last: {})",
                last.unwrap_or_default()
            ),
        ))
    }

    /// This process's environment with the builder's `changes`, and its
    /// working directory as bytes.
    fn environment(
        changes: &[(OsString, Option<OsString>)],
    ) -> (Vec<(OsString, OsString)>, ByteBuf) {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        for (key, value) in changes {
            env.retain(|(k, _)| k != key);
            if let Some(v) = value {
                env.push((key.clone(), v.clone()));
            }
        }
        let cwd = std::env::current_dir()
            .map(|d| ByteBuf::from(d.into_os_string().into_vec()))
            .unwrap_or_default();
        (env, cwd)
    }

    fn write_frame(stream: &UnixStream, bytes: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
        let mut frame = Vec::with_capacity(4 + bytes.len());
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(bytes);
        sys::forkserver::send_all(stream, &frame)
    }

    fn read_frame(stream: &mut UnixStream, max: usize) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > max {
            return Err(std::io::Error::other(format!(
                "a frame of {len} bytes (at most {max})"
            )));
        }
        let mut bytes = vec![0u8; len];
        stream.read_exact(&mut bytes)?;
        Ok(bytes)
    }

    /// Starts the server: this program again, with its end of a fresh
    /// socket pair (the only way to reach it) kept across the `exec`; then
    /// hands it its channels through the one-shot server it offers there.
    fn start_server() -> Result<Server> {
        let mut cmd = super::super::parent::worker_command()?;
        // Exactly this environment (read once: another thread may change
        // ours meanwhile), so that `Server::env` is the server's.
        let env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
        let (mut ours, theirs) =
            UnixStream::pair().map_err(|e| Error::io("creating the fork server's channel", e))?;
        let fd = theirs.as_raw_fd();
        cmd.env(SERVER_MARKER, format!("v1:{}:{fd}", std::process::id()));
        sys::forkserver::keep_across_exec(&mut cmd, fd);
        let process = sys::spawn(cmd)
            .map_err(|e| Error::new(ErrorKind::Spawn, "starting the fork server").with_source(e))?;
        drop(theirs);
        let pid = process.id();
        match link_to(&mut ours) {
            Ok((requests, replies)) => {
                lifecycle!(debug, pid = pid, "fork server started");
                Ok(Server {
                    requests,
                    replies,
                    process,
                    env,
                })
            }
            Err(why) => {
                let mut process = process;
                let _ = process.kill();
                let _ = process.wait();
                Err(Error::new(
                    ErrorKind::Spawn,
                    format!("starting the fork server (process {pid}): {why}"),
                ))
            }
        }
    }

    /// The parent's half of the link: reads the server's offer and sends it
    /// the server's ends of the request and reply channels.
    fn link_to(
        stream: &mut UnixStream,
    ) -> std::result::Result<(IpcSender<ForkRequest>, IpcReceiver<ForkReply>), String> {
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| format!("setting the offer's timeout: {e}"))?;
        let frame = read_frame(stream, MAX_OFFER).map_err(|e| format!("its offer: {e}"))?;
        let offer: Offer = postcard::from_bytes(&frame).map_err(|e| {
            format!(
                "a malformed offer ({})",
                crate::error::describe_postcard(&e)
            )
        })?;
        let (requests, requests_rx) =
            ipc::channel::<ForkRequest>().map_err(|e| format!("a channel: {e}"))?;
        let (replies_tx, replies) =
            ipc::channel::<ForkReply>().map_err(|e| format!("a channel: {e}"))?;
        let link = IpcSender::<ServerLink>::connect(offer.name)
            .map_err(|e| format!("connecting to it: {e}"))?;
        link.send(ServerLink {
            token: offer.token,
            requests: requests_rx,
            replies: replies_tx,
        })
        .map_err(|e| format!("sending it its channels: {e:?}"))?;
        Ok((requests, replies))
    }

    /// In `init()`: if this process was started as the fork server, serve
    /// forks until the parent closes the channel or dies; never returns
    /// then.
    pub(in crate::bootstrap) fn serve_if_asked() {
        let Some(value) = std::env::var_os(SERVER_MARKER) else {
            return;
        };
        std::env::remove_var(SERVER_MARKER);
        let code = match serve(&value.to_string_lossy()) {
            Ok(()) => 0,
            Err(msg) if msg == super::super::child::PARENT_GONE => super::super::EXIT_PARENT_GONE,
            Err(msg) => {
                eprintln!("multiproc: not starting the fork server: {msg}");
                super::super::EXIT_BOOTSTRAP_FAILED
            }
        };
        let _ = std::io::stderr().flush();
        std::process::exit(code);
    }

    /// The server: the link to the parent, then the loop. `Ok` when the
    /// parent closed the request channel.
    fn serve(value: &str) -> std::result::Result<(), String> {
        let (ppid, fd) = parse_server_marker(value)?;
        if !sys::die_with_parent(ppid).map_err(|e| format!("parent check: {e}"))? {
            return Err(super::super::child::PARENT_GONE.to_string());
        }
        sys::close_stray_ipc_sockets();
        let stream = sys::forkserver::adopt_request_channel(fd, ppid)
            .map_err(|e| format!("request channel (fd {fd}): {e}"))?;
        let link = accept_link(&stream)?;
        // From here on the parent speaks through the link only.
        drop(stream);
        // Once here instead of in every child: they inherit it.
        sys::fences::register_now();
        // Fault injection for `tests/forkserver.rs`: a server started with
        // this variable naming a file it can still create creates it, and
        // dies right after its first `clone`, before it replies (as one
        // killed there would). A start retried after that runs its task once.
        let die_after_clone = std::env::var_os(TEST_DIE_AFTER_CLONE).is_some_and(|path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .is_ok()
        });
        loop {
            // An ipc-channel decoder panics on some malformed messages; the
            // parent sends none, but a panic must not leave a half-server.
            let request = match std::panic::catch_unwind(AssertUnwindSafe(|| link.requests.recv()))
            {
                Ok(Ok(request)) => request,
                // The parent closed the channel, or died.
                Ok(Err(ipc_channel::IpcError::Disconnected)) => return Ok(()),
                Ok(Err(e)) => return Err(format!("a request: {e:?}")),
                Err(_) => return Err("a malformed request".to_string()),
            };
            let reply = match sys::forkserver::fork_for_parent() {
                Ok(None) => become_worker(link, ppid, request),
                Ok(Some(_)) if die_after_clone => std::process::exit(0),
                Ok(Some(pid)) => ForkReply::Forked(pid),
                Err(e) => ForkReply::Failed(format!("clone: {e}")),
            };
            // The child has its copies of the channels' ends; ours go now,
            // so that the parent sees the child's end close with it.
            drop(request);
            if link.replies.send(reply).is_err() {
                return Ok(());
            }
        }
    }

    /// The server's half of the link: offers a one-shot server and a token
    /// on the private socket pair, and takes the parent's channels from the
    /// first connection, which must present that token.
    fn accept_link(stream: &UnixStream) -> std::result::Result<ServerLink, String> {
        sys::prepare_handshake().map_err(|e| format!("preparing the link: {e}"))?;
        super::super::parent::warm_ipc_channel().map_err(|e| e.to_string())?;
        let (one_shot, name) =
            super::super::parent::new_server::<ServerLink>().map_err(|e| e.to_string())?;
        let token = super::super::random_token().map_err(|e| e.to_string())?;
        let offer = postcard::to_stdvec(&Offer { name, token }).map_err(|e| e.to_string())?;
        write_frame(stream, &offer).map_err(|e| format!("sending the offer: {e}"))?;
        // Only the parent knows the name (a directory only this user can
        // enter) and the token; a stranger's connection fails the server,
        // and the parent starts another.
        let accepted = std::panic::catch_unwind(AssertUnwindSafe(|| one_shot.accept()))
            .map_err(|_| "a malformed link".to_string())?;
        let (connection, link) = accepted.map_err(|e| format!("the link: {e:?}"))?;
        drop(connection);
        if !super::super::tokens_equal(&link.token, &token) {
            return Err("the link presented a wrong token".to_string());
        }
        Ok(link)
    }

    /// Splits `v1:<parent pid>:<fd>`.
    fn parse_server_marker(value: &str) -> std::result::Result<(u32, i32), String> {
        let mut parts = value.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("v1"), Some(ppid), Some(fd), None) => {
                let ppid = ppid
                    .parse()
                    .map_err(|_| format!("bad parent pid in {SERVER_MARKER}"))?;
                let fd = fd
                    .parse()
                    .map_err(|_| format!("bad descriptor in {SERVER_MARKER}"))?;
                Ok((ppid, fd))
            }
            _ => Err(format!("malformed {SERVER_MARKER}")),
        }
    }

    /// In the forked child: drop the server's ends of the link, take the
    /// parent's environment and directory, and run the request's task.
    fn become_worker(link: ServerLink, ppid: u32, request: ForkRequest) -> ! {
        // Closes this process's copies only: the server keeps its own.
        drop(link);
        // `None`: the server's environment is the one wanted (the usual
        // case). Else set only what differs from it.
        if let Some(env) = request.env {
            adopt_environment(env);
        }
        if !request.cwd.is_empty() {
            // A directory gone since: stay where the server is, as an
            // `exec` from a deleted directory would still run.
            let _ = std::env::set_current_dir(OsStr::from_bytes(&request.cwd));
        }
        let Handed {
            name,
            parent_name,
            task,
            args,
            log,
        } = request.task;
        let config = Config {
            name,
            parent_name,
            task,
            // Deserialised here: nothing else holds it, so this moves.
            args: ByteBuf::from(Arc::try_unwrap(args.0).unwrap_or_else(|a| a.as_ref().clone())),
            results: request.results,
            control: request.control,
            log,
        };
        super::super::child::run_forked(ppid, request.token, config)
    }

    /// Makes this process's environment `env`, changing only what differs.
    fn adopt_environment(env: Vec<(ByteBuf, ByteBuf)>) {
        let wanted: std::collections::HashMap<Vec<u8>, Vec<u8>> = env
            .into_iter()
            .map(|(k, v)| (k.into_vec(), v.into_vec()))
            .filter(|(k, v)| settable(k) && !v.contains(&0))
            .collect();
        for (key, _) in std::env::vars_os() {
            if !wanted.contains_key(key.as_bytes()) && settable(key.as_bytes()) {
                std::env::remove_var(&key);
            }
        }
        for (key, value) in &wanted {
            let (key, value) = (OsStr::from_bytes(key), OsStr::from_bytes(value));
            if std::env::var_os(key).as_deref() != Some(value) {
                std::env::set_var(key, value);
            }
        }
    }

    /// A name `set_var`/`remove_var` take without panicking.
    fn settable(key: &[u8]) -> bool {
        !key.is_empty() && !key.contains(&b'=') && !key.contains(&0)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn server_markers_are_checked() {
            assert_eq!(parse_server_marker("v1:12:7"), Ok((12, 7)));
            for bad in ["", "v1", "v2:1:2", "v1:x:3", "v1:1:y", "v1:1:2:3"] {
                assert!(parse_server_marker(bad).is_err(), "{bad:?}");
            }
        }

        #[test]
        fn the_request_carries_the_builders_changes() {
            let changes = [
                (
                    OsString::from("MULTIPROC_FS_UNIT_A"),
                    Some(OsString::from("1")),
                ),
                (OsString::from("PATH"), None),
            ];
            let (env, cwd) = environment(&changes);
            let has = |k: &str| env.iter().any(|(key, _)| key == k);
            assert!(has("MULTIPROC_FS_UNIT_A"));
            assert!(!has("PATH"));
            let here = std::env::current_dir().unwrap().into_os_string().into_vec();
            assert_eq!(cwd.as_slice(), here.as_slice());
        }

        #[test]
        fn names_that_would_panic_are_not_set() {
            assert!(settable(b"HOME"));
            assert!(!settable(b""));
            assert!(!settable(b"A=B"));
            assert!(!settable(b"A\0"));
        }
    }
}
