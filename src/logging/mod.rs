//! Logging (cargo feature `tracing`): the crate's lifecycle events, and
//! the forwarding of workers' log records to the parent.
//!
//! * [`lifecycle!`] is how the rest of the crate reports what happens to
//!   its processes (started, exited, killed, a pool worker replaced, a
//!   handshake refused): a `tracing` event of target [`LOG_TARGET`] with
//!   the feature, nothing at all (not even its arguments) without it.
//! * A start ([`bootstrap::launch`](crate::bootstrap)) asks [`prepare`]
//!   for a [`Pending`] forwarding: with the feature, and only if this
//!   process has a subscriber that wants anything, a shared-memory ring
//!   the child writes its records into ([`Offer`], in the child's
//!   `Config`). The child installs the forwarding subscriber ([`install`])
//!   before its task runs; the parent registers the ring with its log
//!   thread ([`Pending::register`]), which re-emits each record with the
//!   worker's pid and name ([`ChildLog`] follows the child's life).
//!
//! Files: `record.rs` the wire form of a record; `child.rs` the child's
//! subscriber and `log` logger; `parent.rs` the log thread and the
//! callsites records are re-emitted at; `stderr.rs` the subscriber of
//! [`log_to_stderr`]. Without the feature only this file is compiled, and
//! its types are empty. docs/ARCHITECTURE.md, "Logging (feature
//! `tracing`)", has the design and why.

/// A lifecycle event of the crate: `lifecycle!(warn, pid = 3, "died")`
/// is `tracing::warn!(target: "multiproc", pid = 3, "died")` with feature
/// `tracing`, and expands to nothing (its arguments are not evaluated)
/// without it.
#[cfg(feature = "tracing")]
macro_rules! lifecycle {
    ($level:ident, $($arg:tt)+) => {
        ::tracing::$level!(target: "multiproc", $($arg)+)
    };
}

#[cfg(not(feature = "tracing"))]
macro_rules! lifecycle {
    ($level:ident, $($arg:tt)+) => {
        ()
    };
}

#[cfg(feature = "tracing")]
mod child;
#[cfg(feature = "tracing")]
mod parent;
#[cfg(feature = "tracing")]
mod record;
#[cfg(feature = "tracing")]
mod stderr;

#[cfg(feature = "tracing")]
pub(crate) use child::install;
#[cfg(feature = "tracing")]
pub(crate) use parent::{prepare, ChildLog, Offer};
#[cfg(feature = "tracing")]
pub use stderr::log_to_stderr;

/// Says how process `pid`, called `name`, ended: after terminate/kill
/// (`by_user`), exited 0, or died otherwise (a warning).
#[cfg(feature = "tracing")]
fn report_exit(pid: u32, name: &str, status: crate::ExitStatus, by_user: bool) {
    if by_user {
        lifecycle!(debug, pid, name = %name, %status, "process ended after terminate/kill");
    } else if status.success() {
        lifecycle!(debug, pid, name = %name, "process exited");
    } else {
        lifecycle!(warn, pid, name = %name, %status, "process died");
    }
}

/// The `tracing` target of this crate's own events (feature `tracing`):
/// processes started and ended, pool workers replaced, handshakes refused.
/// Use it in a filter to see or silence them, e.g.
/// `RUST_LOG=multiproc=debug` with `tracing-subscriber`'s `EnvFilter`.
///
/// Python counterpart: `multiprocessing.get_logger()`, the logger named
/// `"multiprocessing"` that the module's own messages go to. `tracing` has
/// no logger objects to hand out: a target names the source, and the
/// subscriber's filter decides what is shown, so this constant is what
/// `get_logger()` would give. Records that workers emit keep their own
/// targets (see [`log_to_stderr`]).
///
/// ```
/// # #[cfg(feature = "tracing")] {
/// assert_eq!(multiproc::LOG_TARGET, "multiproc");
/// // tracing_subscriber::EnvFilter::new(format!("{}=debug", multiproc::LOG_TARGET))
/// # }
/// ```
#[cfg(feature = "tracing")]
pub const LOG_TARGET: &str = "multiproc";

#[cfg(not(feature = "tracing"))]
mod off {
    //! Without feature `tracing`: nothing is forwarded, and these types
    //! are empty (a unit `Offer` is no bytes on the wire).

    use serde::{Deserialize, Serialize};

    use crate::error::Result;
    use crate::exit_status::ExitStatus;

    /// Forwarding offered to a child in its `Config`: none.
    #[derive(Clone, Serialize, Deserialize)]
    pub(crate) struct Offer;

    /// A start's forwarding before the child exists: none.
    pub(crate) struct Pending;

    /// The parent's side of a child's forwarding: none.
    pub(crate) struct ChildLog;

    pub(crate) fn prepare() -> Result<Pending> {
        Ok(Pending)
    }

    impl Pending {
        pub(crate) fn offer(&self) -> Offer {
            Offer
        }

        pub(crate) fn register(self, _pid: u32, _name: &str) -> ChildLog {
            ChildLog
        }
    }

    impl ChildLog {
        pub(crate) fn exited(&self, _pid: u32, _name: &str, _status: ExitStatus, _by_user: bool) {}

        pub(crate) fn flush(&self) {}
    }

    pub(crate) fn install(_offer: Offer) {}
}

#[cfg(not(feature = "tracing"))]
pub(crate) use off::{install, prepare, ChildLog, Offer};
