//! The fork server (start method `forkserver`, Linux): one re-exec of this
//! program per parent, stopped in `init()` right after the worker set-up,
//! that forks a new worker on each request.
//!
//! ```text
//!  parent                                         fork server (single-threaded)
//!  socketpair(); spawn(MULTIPROC_FORKSERVER=      init(): adopt the fd (peer must be
//!    v1:<pid>:<fd>), the fd kept across exec        the parent), PDEATHSIG
//!  ForkRequest { marker, env, cwd }  ────────────► clone(CLONE_PARENT) ──► child: close the
//!  Forked(pid) ◄──────────────────────────────────┘                      channel, env, cwd,
//!  (pid checked: our own un-reaped child)                                 run_worker(marker)
//! ```
//!
//! The child is the parent's own child (`CLONE_PARENT`): the parent reaps
//! it, reads its exit status and signals it exactly as a spawned one, and
//! it dies with the parent (its `PR_SET_PDEATHSIG` names the parent's
//! spawner thread). From its marker on it is a spawned worker: the same
//! handshake, token and rendezvous. docs/ARCHITECTURE.md, "Fork server".

use std::ffi::OsString;

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
    _marker: &str,
    _env: &[(OsString, Option<OsString>)],
) -> Result<crate::sys::Child> {
    Err(crate::process::StartMethod::ForkServer
        .check_available()
        .expect_err("the fork server is Linux-only"))
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;
    use std::time::Duration;

    use serde::{Deserialize, Serialize};
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::error::{Error, ErrorKind};
    use crate::sys;

    /// Largest request the server reads (the environment dominates it).
    const MAX_REQUEST: usize = 16 << 20;
    /// Largest reply the parent reads.
    const MAX_REPLY: usize = 4096;
    /// How long the parent waits for a reply (the first includes the
    /// server's own start) before it gives that server up.
    const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

    /// Parent → server: fork a worker with this marker, environment and
    /// working directory (those of the parent now, as a spawn would give).
    #[derive(Serialize, Deserialize)]
    struct ForkRequest {
        marker: String,
        env: Vec<(ByteBuf, ByteBuf)>,
        cwd: ByteBuf,
    }

    /// Server → parent.
    #[derive(Serialize, Deserialize)]
    enum ForkReply {
        Forked(u32),
        Failed(String),
    }

    /// The parent's link to its server.
    struct Server {
        stream: UnixStream,
        process: std::process::Child,
    }

    impl Server {
        /// Kills and reaps a server that failed us.
        fn stop(mut self) {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }

    static SERVER: Mutex<Option<Server>> = Mutex::new(None);

    /// Asks the fork server (started now if there is none, or again if it
    /// died) to fork a worker that runs `run_worker(marker)`.
    pub(in crate::bootstrap) fn fork(
        marker: &str,
        env: &[(OsString, Option<OsString>)],
    ) -> Result<sys::Child> {
        let request = postcard::to_stdvec(&request(marker, env))
            .map_err(|e| Error::codec("encoding a fork request", e))?;
        let mut slot = SERVER.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = None;
        // A server found dead (killed, or gone since the last start) is
        // replaced once; a second failure in a row is this start's error.
        for _ in 0..2 {
            let server = match slot.as_mut() {
                Some(server) => server,
                None => slot.insert(start_server()?),
            };
            match exchange(&mut server.stream, &request) {
                Ok(ForkReply::Forked(pid)) if sys::forkserver::is_own_child(pid) => {
                    return Ok(sys::Child::forked(pid));
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
                Err(e) => last = Some(e.to_string()),
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

    /// The request for a worker with `marker`: this process's environment
    /// with the builder's changes, and its working directory.
    fn request(marker: &str, changes: &[(OsString, Option<OsString>)]) -> ForkRequest {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        for (key, value) in changes {
            env.retain(|(k, _)| k != key);
            if let Some(v) = value {
                env.push((key.clone(), v.clone()));
            }
        }
        let bytes = |s: OsString| ByteBuf::from(s.into_vec());
        ForkRequest {
            marker: marker.to_string(),
            env: env.into_iter().map(|(k, v)| (bytes(k), bytes(v))).collect(),
            cwd: std::env::current_dir()
                .map(|d| bytes(d.into_os_string()))
                .unwrap_or_default(),
        }
    }

    /// One request and its reply.
    fn exchange(stream: &mut UnixStream, request: &[u8]) -> std::io::Result<ForkReply> {
        write_frame(stream, request)?;
        let reply = read_frame(stream, MAX_REPLY)?;
        postcard::from_bytes(&reply).map_err(|e| {
            std::io::Error::other(format!(
                "a malformed reply ({})",
                crate::error::describe_postcard(&e)
            ))
        })
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
    /// socket pair (the only way to reach it) kept across the `exec`.
    fn start_server() -> Result<Server> {
        let mut cmd = super::super::parent::worker_command()?;
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| Error::io("creating the fork server's channel", e))?;
        let fd = theirs.as_raw_fd();
        cmd.env(SERVER_MARKER, format!("v1:{}:{fd}", std::process::id()));
        sys::forkserver::keep_across_exec(&mut cmd, fd);
        let process = sys::spawn(cmd)
            .map_err(|e| Error::new(ErrorKind::Spawn, "starting the fork server").with_source(e))?;
        drop(theirs);
        ours.set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| Error::io("setting the fork server's reply timeout", e))?;
        lifecycle!(debug, pid = process.id(), "fork server started");
        Ok(Server {
            stream: ours,
            process,
        })
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

    /// The server loop. `Ok` when the parent closed the channel.
    fn serve(value: &str) -> std::result::Result<(), String> {
        let (ppid, fd) = parse_server_marker(value)?;
        if !sys::die_with_parent(ppid).map_err(|e| format!("parent check: {e}"))? {
            return Err(super::super::child::PARENT_GONE.to_string());
        }
        sys::close_stray_ipc_sockets();
        let mut stream = sys::forkserver::adopt_request_channel(fd, ppid)
            .map_err(|e| format!("request channel (fd {fd}): {e}"))?;
        loop {
            // An error here is the parent closing the channel (or dying).
            let Ok(frame) = read_frame(&mut stream, MAX_REQUEST) else {
                return Ok(());
            };
            let reply = match postcard::from_bytes::<ForkRequest>(&frame) {
                Err(e) => ForkReply::Failed(format!(
                    "a malformed request ({})",
                    crate::error::describe_postcard(&e)
                )),
                Ok(request) => match sys::forkserver::fork_for_parent() {
                    Ok(None) => become_worker(&stream, request),
                    Ok(Some(pid)) => ForkReply::Forked(pid),
                    Err(e) => ForkReply::Failed(format!("clone: {e}")),
                },
            };
            let reply = postcard::to_stdvec(&reply).map_err(|e| e.to_string())?;
            if write_frame(&stream, &reply).is_err() {
                return Ok(());
            }
        }
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

    /// In the forked child: drop what is the server's, take the parent's
    /// environment and directory, and be a worker.
    fn become_worker(stream: &UnixStream, request: ForkRequest) -> ! {
        sys::forkserver::close_inherited(stream);
        for (key, _) in std::env::vars_os() {
            if settable(key.as_bytes()) {
                std::env::remove_var(key);
            }
        }
        for (key, value) in request.env {
            if settable(&key) && !value.contains(&0) {
                std::env::set_var(
                    OsString::from_vec(key.into_vec()),
                    OsString::from_vec(value.into_vec()),
                );
            }
        }
        if !request.cwd.is_empty() {
            // A directory gone since: stay where the server is, as an
            // `exec` from a deleted directory would still run.
            let _ = std::env::set_current_dir(std::ffi::OsStr::from_bytes(&request.cwd));
        }
        super::super::child::run_worker(&request.marker)
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
            let r = request("m", &changes);
            let has = |k: &str| r.env.iter().any(|(key, _)| key.as_slice() == k.as_bytes());
            assert!(has("MULTIPROC_FS_UNIT_A"));
            assert!(!has("PATH"));
            assert_eq!(r.marker, "m");
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
