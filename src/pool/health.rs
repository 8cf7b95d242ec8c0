//! What the health check decides about one worker, as pure functions of
//! what it can see: [`verdict`] for a live worker (kill it, and why),
//! [`death`] and [`fatal`] for one that exited (what its jobs are told,
//! and whether the pool can go on). `Core::check_health` applies them.

use std::time::{Duration, Instant};

use super::core::Config;
use super::handle::Worker;
use crate::error::{Error, ErrorKind};
use crate::exit_status::ExitStatus;

/// With a task timeout, how long a worker may take to start on top of it.
const START_ALLOWANCE: Duration = Duration::from_secs(10);

/// Why a worker's work was lost.
pub(crate) struct Loss {
    pub(crate) kind: ErrorKind,
    pub(crate) message: String,
    pub(crate) status: Option<ExitStatus>,
}

impl Loss {
    pub(crate) fn new(kind: ErrorKind, message: String) -> Loss {
        Loss {
            kind,
            message,
            status: None,
        }
    }

    pub(crate) fn from_error(e: &Error) -> Loss {
        let message = match std::error::Error::source(e) {
            Some(src) => format!("{}: {src}", e.context()),
            None => e.context().to_string(),
        };
        Loss {
            kind: e.kind(),
            message,
            status: e.exit_status(),
        }
    }

    pub(crate) fn error_for(&self, first: u64, pid: u32) -> Error {
        let e = Error::new(self.kind, self.message.clone())
            .with_index(first)
            .with_pid(pid);
        match self.status {
            Some(st) => e.with_status(st),
            None => e,
        }
    }
}

/// A live worker that must be killed, and why: it took too long to start,
/// its front task ran past the task timeout, or it shrank its rings'
/// segment. `None`: it is fine.
pub(crate) fn verdict(w: &Worker, cfg: &Config, now: Instant) -> Option<Loss> {
    if let Some(limit) = cfg.task_timeout {
        if !w.ready && !w.inflight.is_empty() {
            // Starting (exec, handshake, initializer) does not count
            // toward a task's time, but it cannot take forever either.
            let allowance = limit + START_ALLOWANCE;
            if now.saturating_duration_since(w.stats.started) > allowance {
                return Some(Loss::new(
                    ErrorKind::Timeout,
                    format!(
                        "pool worker {} (pid {}) did not start (or finish its initializer) within {:?}; it was killed",
                        w.index, w.pid, allowance
                    ),
                ));
            }
        }
        if let (Some(front), true) = (w.inflight.front(), w.ready) {
            let since = w.front_since.max(front.sent);
            if now.saturating_duration_since(since) > limit {
                return Some(Loss::new(
                    ErrorKind::Timeout,
                    format!(
                        "a task of pool worker {} (pid {}) ran longer than {:?}; the worker was killed",
                        w.index, w.pid, limit
                    ),
                ));
            }
        }
    }
    if w.segment.lost() {
        return Some(Loss::new(
            ErrorKind::Protocol,
            format!(
                "pool worker {} (pid {}) shrank its ring segment; the worker was killed",
                w.index, w.pid
            ),
        ));
    }
    None
}

/// Whether worker `w`, which exited with `status`, breaks the pool: every
/// replacement would fail the same way. `own` is what the worker itself
/// said when it gave up, if anything.
pub(crate) fn fatal(
    w: &Worker,
    status: ExitStatus,
    own: Option<&str>,
) -> Option<(ErrorKind, String)> {
    if status == ExitStatus::Code(crate::bootstrap::EXIT_NOT_INITIALISED) {
        // It reached a start before `init()`. (The worker printed the
        // same advice.)
        let why = crate::bootstrap::init_advice(&format!(
            "pool worker {} (pid {}) reached a spawn before multiproc::init() made it a worker",
            w.index, w.pid
        ));
        return Some((ErrorKind::InvalidState, why));
    }
    match (own, w.ready) {
        // It never came up and said why.
        (Some(why), false) => Some((
            ErrorKind::Spawn,
            format!("pool worker {} could not start: {why}", w.index),
        )),
        _ => None,
    }
}

/// What the jobs of worker `w`, which exited with `status`, are told:
/// the item it was running if its progress word names one, else its
/// front task's items, with what it said itself (`own`).
pub(crate) fn death(w: &Worker, status: ExitStatus, own: Option<&str>) -> Loss {
    let running = w
        .running_item()
        .and_then(|(i, item)| Some((w.inflight.get(i)?, item)));
    let what = match (w.inflight.front(), running) {
        (_, Some((t, item))) => format!(
            "pool worker {} (pid {}) died while running item {item} \
             (of the task of items {}..{})",
            w.index,
            w.pid,
            t.first,
            t.first + t.count
        ),
        (Some(t), None) => format!(
            "pool worker {} (pid {}) died while running items {}..{}",
            w.index,
            w.pid,
            t.first,
            t.first + t.count
        ),
        (None, None) => format!("pool worker {} (pid {}) died while idle", w.index, w.pid),
    };
    Loss {
        kind: ErrorKind::ProcessDied,
        message: match own {
            Some(why) => format!("{what}: {why}"),
            None => what,
        },
        status: Some(status),
    }
}
