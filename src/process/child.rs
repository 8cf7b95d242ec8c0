//! The parent's side of one child: the OS process shared by its
//! `Process` and the registry (`ChildCell`), and the `Waiter` that turns a
//! start, a handshake and an exit into a result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bootstrap::{self, Closed, Handshake, Link, Outcome};
use crate::error::{Error, ErrorKind, Result};
use crate::exit_status::ExitStatus;
use crate::sys;
use crate::wait::Wait;

/// How long a start that a handshake generation claimed (it sends the
/// child its task) may take to report its link once the child exited or
/// the start timed out. Sending a `Config` takes microseconds.
const CLAIMED_GRACE: Duration = Duration::from_secs(5);

/// The OS child, shared by its `Process` and the registry.
pub(super) struct ChildCell {
    pub(super) pid: u32,
    pub(super) name: String,
    pub(super) child: Mutex<sys::Child>,
    /// Set once the user terminated or killed the child: its death is then
    /// `ProcessDied`, even if it happened before the handshake.
    pub(super) signalled: AtomicBool,
    /// Set (under `child`'s lock) by the first look that saw the exit.
    pub(super) exit_seen: AtomicBool,
    /// The forwarding of the child's log records (feature `tracing`).
    pub(super) log: crate::logging::ChildLog,
}

impl ChildCell {
    /// Non-blocking: the exit status if the child has ended (and reaps it).
    pub(super) fn poll_exit(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let status = match child.try_wait() {
            Ok(Some(status)) => Some(status),
            Ok(None) => None,
            // ECHILD and friends: nothing left to wait for.
            Err(_) => Some(ExitStatus::Code(-1)),
        };
        // SYNC: Relaxed: the child's lock, held here, orders the flag.
        if let Some(st) = status.filter(|_| !self.exit_seen.swap(true, Ordering::Relaxed)) {
            drop(child);
            self.exited(st);
        }
        status
    }

    /// The first look that saw the child exit: lets its log forwarding
    /// finish, which then says how it ended (feature `tracing`).
    fn exited(&self, status: ExitStatus) {
        let by_user = self.signalled.load(Ordering::Relaxed);
        self.log.exited(self.pid, &self.name, status, by_user);
    }

    /// Waits for the child to end, until `deadline`.
    pub(super) fn wait_exit(&self, deadline: Option<Instant>) -> Option<ExitStatus> {
        let wait = Wait::new(deadline);
        loop {
            if let Some(status) = self.poll_exit() {
                return Some(status);
            }
            // Sleep until the child exits or a slice passes, without holding
            // the lock (is_alive, kill and active_children take it too).
            sys::wait_for_exit(self.pid, wait.slice()?);
        }
    }

    /// Sends `how` unless the child already ended. `by_user` marks a
    /// `terminate()`/`kill()` call (see `signalled`), as opposed to the
    /// crate's own clean-up of a child that failed to start.
    pub(super) fn signal(
        &self,
        how: fn(&mut sys::Child) -> std::io::Result<()>,
        by_user: bool,
    ) -> Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        // Never signal a reaped pid: it may already belong to someone else.
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        if by_user {
            self.signalled.store(true, Ordering::Relaxed);
        }
        how(&mut child).map_err(|e| Error::io("signalling the child", e).with_pid(self.pid))
    }
}

/// Where a child is in its life, from the parent's side.
pub(super) enum State {
    /// Started; the handshake (its generations, see `bootstrap`) is in
    /// flight.
    Handshaking(Handshake),
    Running(Link),
    /// The outcome arrived; the child is exiting.
    Exiting(Outcome),
    Finished,
}

/// The parent's side of one child: its channels and the state machine that
/// turns them into an [`Outcome`] or an error. Not generic, so a dropped
/// `Process<R>` can hand it to a reaper thread.
pub(super) struct Waiter {
    pub(super) cell: Arc<ChildCell>,
    pub(super) state: State,
    pub(super) start_timeout: Duration,
    /// The task's arguments, kept until the child has ended: shared-memory
    /// handles in them (a `Queue`, a `SharedArray`…) are opened by the child
    /// through this process's descriptors, which must stay open meanwhile.
    pub(super) _args: Box<dyn std::any::Any + Send>,
}

impl Waiter {
    /// Drives the state machine until the child has ended and its outcome
    /// is known (`Ok(Some)`), it failed (`Err`), or `deadline` passed.
    pub(super) fn wait(&mut self, deadline: Option<Instant>) -> Result<Option<Outcome>> {
        loop {
            match std::mem::replace(&mut self.state, State::Finished) {
                State::Handshaking(mut handshake) => {
                    match self.wait_handshake(&mut handshake, deadline)? {
                        Some(link) => self.state = State::Running(link),
                        None => {
                            self.state = State::Handshaking(handshake);
                            return Ok(None);
                        }
                    }
                }
                State::Running(mut link) => {
                    let received = match deadline {
                        None => link.results.recv().map(Some),
                        Some(d) => link
                            .results
                            .recv_timeout(d.saturating_duration_since(Instant::now())),
                    };
                    match received {
                        Ok(Some(outcome)) => self.state = State::Exiting(outcome),
                        Ok(None) => {
                            self.state = State::Running(link);
                            return Ok(None);
                        }
                        // Disconnected, or the channel broke: the child is
                        // gone without a result. Say how it ended.
                        Err(_) => return Err(self.died()),
                    }
                }
                State::Exiting(outcome) => {
                    if self.cell.wait_exit(deadline).is_none() {
                        self.state = State::Exiting(outcome);
                        return Ok(None);
                    }
                    return Ok(Some(outcome));
                }
                State::Finished => {
                    return Err(Error::new(
                        ErrorKind::InvalidState,
                        "the process was already joined",
                    )
                    .with_pid(self.cell.pid))
                }
            }
        }
    }

    /// Waits for the start's result. The child's start is decided here
    /// when it exits or the start timeout passes: `close` then revokes the
    /// claim, so a start nobody claimed can never send a `Config` later and
    /// its error is final. A start a generation claimed (its `Config` went,
    /// or goes, to the child) waits for that generation's link, bounded.
    fn wait_handshake(
        &self,
        handshake: &mut Handshake,
        deadline: Option<Instant>,
    ) -> Result<Option<Link>> {
        let start_deadline = handshake.started() + self.start_timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            let mut slice = pause;
            if let Some(d) = deadline {
                slice = slice.min(d.saturating_duration_since(Instant::now()));
            }
            match handshake.recv_timeout(slice) {
                Ok(Ok(link)) => return Ok(Some(link)),
                Ok(Err(e)) => return Err(self.start_error(self.start_failed(e))),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(
                        Error::new(ErrorKind::Handshake, "handshake thread vanished")
                            .with_pid(self.cell.pid),
                    )
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now = Instant::now();
            match handshake.closed_at() {
                None => {
                    let exited = self.cell.poll_exit().is_some();
                    if exited || now >= start_deadline {
                        let closed = handshake.close();
                        if closed.claimed.is_none() {
                            return Err(self.start_error(self.never_started(&closed, exited)));
                        }
                        // Claimed: its link (or error) follows at once.
                    }
                }
                Some(at) if now >= at + CLAIMED_GRACE => {
                    let _ = self.cell.signal(sys::kill, false);
                    return Err(Error::new(
                        ErrorKind::Handshake,
                        "the handshake thread that sent the task did not report",
                    )
                    .with_pid(self.cell.pid));
                }
                Some(_) => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            pause = (pause * 2).min(Duration::from_millis(10));
        }
    }

    /// `e`, which ended the child's start, reported (feature `tracing`).
    fn start_error(&self, e: Error) -> Error {
        lifecycle!(warn, pid = self.cell.pid, name = %self.cell.name, error = %e, "process start failed");
        e
    }

    /// The start failed on the parent's side (the generations ran out, or
    /// sending the task failed): the child gets no task; make sure it ends.
    fn start_failed(&self, e: Error) -> Error {
        // A send that failed because the child was dying: keep its status.
        let dying = self
            .cell
            .wait_exit(Some(Instant::now() + Duration::from_millis(100)));
        let status = match dying {
            Some(status) => Some(status),
            None => {
                let _ = self.cell.signal(sys::kill, false);
                self.cell
                    .wait_exit(Some(Instant::now() + Duration::from_secs(1)))
            }
        };
        match status {
            // Terminated or killed by the user while starting.
            Some(_) if self.cell.signalled.load(Ordering::Relaxed) => self.died(),
            Some(s) => e.with_status(s),
            None => e,
        }
    }

    /// The start was closed with no claim: the child exited before a
    /// generation took its hello, or the start timeout passed. No task code
    /// ran, and none will.
    fn never_started(&self, closed: &Closed, exited: bool) -> Error {
        if !exited {
            let _ = self.cell.signal(sys::kill, false);
        }
        let status = self
            .cell
            .wait_exit(Some(Instant::now() + Duration::from_secs(1)));
        if status.is_some() && self.cell.signalled.load(Ordering::Relaxed) {
            return self.died();
        }
        let mut what = if exited {
            match status {
                Some(ExitStatus::Code(bootstrap::EXIT_NOT_INITIALISED)) => {
                    let err = bootstrap::not_initialised(
                        "the child reached a spawn before multiproc::init() made it a worker",
                    );
                    return err
                        .with_pid(self.cell.pid)
                        .with_status(status.unwrap_or(ExitStatus::Code(-1)));
                }
                Some(ExitStatus::Code(code))
                    if code != bootstrap::EXIT_BOOTSTRAP_FAILED
                        && code != bootstrap::EXIT_PARENT_GONE =>
                {
                    // It ran to an end of its own: `main` never reached
                    // `init()` there.
                    "the child exited before connecting (did its `main` reach \
                     `multiproc::init()`? call it first in `main`)"
                        .to_string()
                }
                _ => "the child exited before connecting".to_string(),
            }
        } else {
            format!(
                "the child did not complete its handshake within {:?}",
                self.start_timeout
            )
        };
        if closed.refused > 0 {
            what.push_str(&format!(
                "; refused {} other connections (the last: {})",
                closed.refused,
                closed.last_refusal.as_deref().unwrap_or("?")
            ));
        }
        let err = Error::new(ErrorKind::Handshake, what).with_pid(self.cell.pid);
        match status {
            Some(s) => err.with_status(s),
            None => err,
        }
    }

    fn died(&self) -> Error {
        let mut err =
            Error::new(ErrorKind::ProcessDied, self.cell.name.clone()).with_pid(self.cell.pid);
        if let Some(status) = self
            .cell
            .wait_exit(Some(Instant::now() + Duration::from_secs(5)))
        {
            err = err.with_status(status);
        }
        err
    }
}
