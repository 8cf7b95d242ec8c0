//! The crate's one error type.
//!
//! Errors of the crates underneath (`ipc-channel`, `postcard`, the OS) never
//! leak through the API: they are folded into an [`Error`] with a
//! [`kind`](Error::kind) a caller can match on, a message a human can read and,
//! where there is one, the original error as [`source`](std::error::Error::source).

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

use crate::exit_status::ExitStatus;

thread_local! {
    /// The message of the last custom deserialisation error this crate
    /// raised on this thread, for [`Error::codec`]: postcard reports
    /// every custom error as the bare `SerdeDeCustom`, so "a handle whose
    /// segment is gone" would read "Serde Deserialization Error".
    static DE_CUSTOM: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Why a value did not decode, when postcard says only "custom error"
/// and one of ours raised it on this thread (taken: asked once).
pub(crate) fn custom_reason(err: &postcard::Error) -> Option<String> {
    if !matches!(err, postcard::Error::SerdeDeCustom) {
        return None;
    }
    DE_CUSTOM.with(|m| m.borrow_mut().take())
}

/// Forgets a reason left by an earlier decode whose error was not
/// reported through [`custom_reason`] (dropped, or turned into `None`), so
/// it is never appended to a later, unrelated custom error. Called once
/// before each decode (or each run of items) that reports through it.
pub(crate) fn clear_custom_reason() {
    DE_CUSTOM.with(|m| m.borrow_mut().take());
}

/// `err`, with the reason of a custom error of ours appended.
pub(crate) fn describe_postcard(err: &postcard::Error) -> String {
    match custom_reason(err) {
        Some(why) => format!("{err}: {why}"),
        None => err.to_string(),
    }
}

/// A custom deserialisation error (`serde::de::Error::custom`) whose
/// message survives postcard: the crate's `Deserialize` impls raise their
/// errors (a handle that does not open, a bad value) through this.
pub(crate) fn de_custom<E: serde::de::Error>(msg: impl fmt::Display) -> E {
    let text = msg.to_string();
    DE_CUSTOM.with(|m| *m.borrow_mut() = Some(text.clone()));
    E::custom(text)
}

/// `Result<T, multiproc::Error>`.
///
/// ```
/// fn check() -> multiproc::Result<usize> {
///     Ok(multiproc::cpu_count())
/// }
/// assert!(check().unwrap() >= 1);
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarsely: match on this, read the rest from [`Error`].
///
/// Python raises different exception classes for these (`TimeoutError`,
/// `BrokenPipeError`, `ProcessError`, the child's own exception…); here they
/// are one type with a kind.
///
/// ```
/// use multiproc::{Error, ErrorKind};
/// let e = Error::timeout("join");
/// assert_eq!(e.kind(), ErrorKind::Timeout);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The operating system refused to start the child process.
    Spawn,
    /// The child never completed the start-up handshake: it died first, it
    /// missed the deadline, or what it sent was not valid.
    Handshake,
    /// The task panicked in the child; [`Error::panic_info`] has the details.
    Panicked,
    /// The child process ended (exit code or signal) before it delivered a
    /// result; [`Error::exit_status`] and [`Error::pid`] say which and how.
    ProcessDied,
    /// A deadline passed.
    Timeout,
    /// The other side of a channel went away.
    Disconnected,
    /// A peer sent something that breaks the protocol (bad frame, bad length,
    /// unknown task). The connection is dropped.
    Protocol,
    /// A value could not be serialised or deserialised.
    Codec,
    /// The call does not make sense in the object's current state (for
    /// example joining a process twice).
    InvalidState,
    /// The shared-memory space is exhausted (`/dev/shm` full, `ENOSPC`):
    /// the segment could not be reserved.
    NoSpace,
    /// The process holding a lock died while holding it. The lock is now
    /// held by the caller, but the data it protected may be inconsistent.
    OwnerDied,
    /// A process taking part in a synchronisation (barrier, semaphore,
    /// event, condition, queue, pipe) died, so the wait can never complete.
    PeerDied,
    /// A [`Barrier`](crate::Barrier) is broken: it was aborted, reset while
    /// this party waited, or another party's wait timed out (Python's
    /// `BrokenBarrierError`).
    Broken,
    /// A received message does not fit the buffer it was to be read into
    /// (Python's `BufferTooShort`); it stays where it was, unconsumed.
    BufferTooShort,
    /// The queue was shut down (Python 3.13's `queue.ShutDown`): no more
    /// puts, and no more gets once it is empty.
    ShutDown,
    /// A named object to be created exists already (Python's
    /// `FileExistsError`): [`SharedMemoryBuilder::create`](crate::SharedMemoryBuilder::create)
    /// with a name that is taken.
    AlreadyExists,
    /// A named object to be opened does not exist (Python's
    /// `FileNotFoundError`): [`SharedMemory::open`](crate::SharedMemory::open)
    /// of a name nobody created, or one that was unlinked.
    NotFound,
    /// An argument is not valid whatever the state (Python's `ValueError`):
    /// a shared-memory name that is empty, too long or contains `/` or NUL,
    /// or a named block of size 0.
    InvalidArgument,
    /// Any other operating-system error.
    Io,
    /// The task was cancelled before it finished
    /// ([`Task::cancel`](crate::Task::cancel), or
    /// [`Pool::shutdown`](crate::Pool::shutdown) with `cancel_futures`):
    /// Python's `concurrent.futures.CancelledError`.
    Cancelled,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Spawn => "could not start the child process",
            ErrorKind::Handshake => "the child process did not complete its handshake",
            ErrorKind::Panicked => "the task panicked",
            ErrorKind::ProcessDied => "the child process died",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Disconnected => "the other side disconnected",
            ErrorKind::Protocol => "protocol violation by a peer",
            ErrorKind::Codec => "could not encode or decode a value",
            ErrorKind::InvalidState => "invalid state for this call",
            ErrorKind::NoSpace => "shared memory exhausted",
            ErrorKind::OwnerDied => "the owner of the lock died holding it",
            ErrorKind::PeerDied => "a peer process died",
            ErrorKind::Broken => "the barrier is broken",
            ErrorKind::BufferTooShort => "the message does not fit the buffer",
            ErrorKind::ShutDown => "the queue was shut down",
            ErrorKind::AlreadyExists => "the name exists already",
            ErrorKind::NotFound => "no such name",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Io => "operating-system error",
            ErrorKind::Cancelled => "the task was cancelled",
        }
    }
}

/// Where and why a task panicked in a child process.
///
/// Python shows the child's traceback; Rust gives the panic message, the
/// source location and, when `RUST_BACKTRACE` is set in the child, a
/// backtrace.
///
/// ```
/// fn boom(_: ()) { panic!("no luck") }
///
/// fn main() {
///     multiproc::init();
///     let err = multiproc::Process::spawn(boom, ()).unwrap().join().unwrap_err();
///     let info = err.panic_info().unwrap();
///     assert_eq!(info.message(), "no luck");
///     assert!(info.location().unwrap().contains(".rs:"));
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PanicInfo {
    message: String,
    location: Option<String>,
    backtrace: Option<String>,
}

impl PanicInfo {
    pub(crate) fn new(
        message: String,
        location: Option<String>,
        backtrace: Option<String>,
    ) -> Self {
        PanicInfo {
            message,
            location,
            backtrace,
        }
    }

    /// The panic's message (`"no luck"` for `panic!("no luck")`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `file:line:column` of the `panic!`, when the hook saw one.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// The child's backtrace, captured when `RUST_BACKTRACE` asked for one.
    pub fn backtrace(&self) -> Option<&str> {
        self.backtrace.as_deref()
    }
}

impl fmt::Display for PanicInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}'", self.message)?;
        if let Some(loc) = &self.location {
            write!(f, " at {loc}")?;
        }
        Ok(())
    }
}

/// The error of every fallible call in `multiproc`.
///
/// Cheap to move (one box), `Send + Sync + 'static`, and it tells you
/// [`kind`](Error::kind), the process involved ([`pid`](Error::pid),
/// [`exit_status`](Error::exit_status)) and, for a panic in a child,
/// [`panic_info`](Error::panic_info).
///
/// Python counterpart: the exceptions `multiprocessing` raises
/// (`ProcessError`, `TimeoutError`, `BrokenPipeError`, the child's own).
///
/// ```
/// fn crash(_: ()) { std::process::exit(3) }
///
/// fn main() {
///     multiproc::init();
///     let err = multiproc::Process::spawn(crash, ()).unwrap().join().unwrap_err();
///     assert!(err.is_process_died());
///     assert_eq!(err.exit_status().unwrap().code(), Some(3));
/// }
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    context: String,
    pid: Option<u32>,
    status: Option<ExitStatus>,
    index: Option<u64>,
    panic: Option<PanicInfo>,
    #[cfg(feature = "mpi")]
    rank: Option<usize>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// A user-facing call, and what the errors of the layer under it mean
/// for that call ([`Error::in_call`]). The ring under a queue knows only
/// that "nothing arrived in time"; the user called `Queue::get` on an
/// empty queue.
pub(crate) struct Call<'a> {
    /// The call as the user wrote it (`"Queue::get"`), or the object the
    /// error is about (`"pool worker 2 (pid 4242)"`).
    pub(crate) name: &'a str,
    /// What a [`Timeout`](ErrorKind::Timeout) means: "the queue stayed
    /// empty".
    pub(crate) timed_out: &'a str,
    /// What a [`PeerDied`](ErrorKind::PeerDied) means: "the process at the
    /// other end of the pipe died".
    pub(crate) peer_died: &'a str,
    /// What a [`Disconnected`](ErrorKind::Disconnected) means: "the other
    /// end of the pipe was dropped and nothing is left to receive".
    pub(crate) disconnected: &'a str,
}

/// An [`Error`] as it crosses from one MPI rank to another (postcard).
#[cfg(feature = "mpi")]
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RemoteError {
    kind: ErrorKind,
    context: String,
    pid: Option<u32>,
    /// `(0, code)` or `(1, signal)`.
    status: Option<(u8, i32)>,
    index: Option<u64>,
    panic: Option<PanicInfo>,
    rank: u64,
    source: Option<String>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                context: context.into(),
                pid: None,
                status: None,
                index: None,
                panic: None,
                #[cfg(feature = "mpi")]
                rank: None,
                source: None,
            }),
        }
    }

    /// This error as rank `rank` sends it to the root; item indices move
    /// by `offset` (the rank's share starts there in the whole input).
    #[cfg(feature = "mpi")]
    pub(crate) fn to_remote(&self, rank: usize, offset: u64) -> Box<RemoteError> {
        let i = &self.inner;
        Box::new(RemoteError {
            kind: i.kind,
            context: i.context.clone(),
            pid: i.pid,
            status: i.status.map(|s| match s {
                ExitStatus::Code(c) => (0, c),
                ExitStatus::Signal(n) => (1, n),
            }),
            index: i.index.map(|x| x.saturating_add(offset)),
            panic: i.panic.clone(),
            rank: i.rank.unwrap_or(rank) as u64,
            source: i.source.as_ref().map(|s| s.to_string()),
        })
    }

    /// The error a rank sent, rebuilt.
    #[cfg(feature = "mpi")]
    pub(crate) fn from_remote(r: RemoteError) -> Self {
        let mut e = Error::new(r.kind, r.context);
        e.inner.pid = r.pid;
        e.inner.status = r.status.map(|(k, v)| match k {
            0 => ExitStatus::Code(v),
            _ => ExitStatus::Signal(v),
        });
        e.inner.index = r.index;
        e.inner.panic = r.panic;
        e.inner.rank = usize::try_from(r.rank).ok();
        e.inner.source = r.source.map(Into::into);
        e
    }

    /// The MPI rank this error happened on, for an error from a
    /// [`Cluster`](crate::Cluster) call (feature `mpi`): every rank gets
    /// the same error, naming the first rank that failed.
    ///
    /// Python/MPI counterpart: none built in (mpi4py leaves it to you to
    /// gather exceptions; an uncaught one on a rank calls `MPI_Abort`).
    ///
    /// ```
    /// assert_eq!(multiproc::Error::timeout("x").rank(), None);
    /// ```
    #[cfg(feature = "mpi")]
    pub fn rank(&self) -> Option<usize> {
        self.inner.rank
    }

    /// A [`Timeout`](ErrorKind::Timeout) error for the named operation.
    ///
    /// ```
    /// assert!(multiproc::Error::timeout("get").is_timeout());
    /// ```
    pub fn timeout(operation: &str) -> Self {
        Error::new(ErrorKind::Timeout, operation.to_string())
    }

    pub(crate) fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn context(&self) -> &str {
        &self.inner.context
    }

    pub(crate) fn with_context(mut self, context: impl Into<String>) -> Self {
        self.inner.context = context.into();
        self
    }

    pub(crate) fn set_context(&mut self, context: impl Into<String>) {
        self.inner.context = context.into();
    }

    pub(crate) fn with_index(mut self, index: u64) -> Self {
        self.inner.index = Some(index);
        self
    }

    pub(crate) fn with_pid(mut self, pid: u32) -> Self {
        self.inner.pid = Some(pid);
        self
    }

    pub(crate) fn with_status(mut self, status: ExitStatus) -> Self {
        self.inner.status = Some(status);
        self
    }

    pub(crate) fn io(context: impl Into<String>, err: io::Error) -> Self {
        Error::new(ErrorKind::Io, context).with_source(err)
    }

    pub(crate) fn codec(context: impl Into<String>, err: postcard::Error) -> Self {
        let mut context = context.into();
        if let Some(why) = custom_reason(&err) {
            context = format!("{context}: {why}");
        }
        Error::new(ErrorKind::Codec, context).with_source(err)
    }

    /// Words the error of a layer underneath (a ring's "nothing arrived
    /// in time") for the user's call (`Queue::get`): the message names the
    /// call and, for a timeout, a dead peer or a closed other end, says
    /// what that means for it. (A peer's death that names the process,
    /// such as a lock holder's, keeps the lower layer's account.) Kind,
    /// pid, exit status, item and source stay as they were.
    pub(crate) fn in_call(mut self, call: &Call<'_>) -> Self {
        let detail = std::mem::take(&mut self.inner.context);
        let named = self.inner.pid.is_some() && !detail.is_empty();
        let what = match self.inner.kind {
            ErrorKind::Timeout => call.timed_out,
            ErrorKind::PeerDied if !named => call.peer_died,
            ErrorKind::Disconnected => call.disconnected,
            _ => &detail,
        };
        self.inner.context = if what.is_empty() {
            call.name.to_string()
        } else {
            format!("{}: {what}", call.name)
        };
        self
    }

    pub(crate) fn panicked(info: PanicInfo) -> Self {
        let mut e = Error::new(ErrorKind::Panicked, "task");
        e.inner.panic = Some(info);
        e
    }

    /// The coarse kind of this error.
    ///
    /// ```
    /// let e = multiproc::Error::timeout("join");
    /// assert_eq!(e.kind(), multiproc::ErrorKind::Timeout);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Details of the child's panic, for [`ErrorKind::Panicked`].
    ///
    /// ```
    /// assert!(multiproc::Error::timeout("x").panic_info().is_none());
    /// ```
    pub fn panic_info(&self) -> Option<&PanicInfo> {
        self.inner.panic.as_ref()
    }

    /// The pid of the child process this error is about, if any.
    ///
    /// ```
    /// assert_eq!(multiproc::Error::timeout("x").pid(), None);
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.inner.pid
    }

    /// For an error from a [`Pool`](crate::Pool) call: the index (in the
    /// call's input) of the item whose task failed, where it is known.
    ///
    /// ```
    /// fn check(x: u32) -> u32 { assert!(x != 3, "three is not allowed"); x }
    ///
    /// fn main() {
    ///     multiproc::init();
    ///     let pool = multiproc::Pool::new(2).unwrap();
    ///     let err = pool.map(check, 0..6).unwrap_err();
    ///     assert_eq!(err.item_index(), Some(3));
    ///     assert!(err.panic_info().unwrap().message().contains("three"));
    /// }
    /// ```
    pub fn item_index(&self) -> Option<u64> {
        self.inner.index
    }

    /// How the child ended, for [`ErrorKind::ProcessDied`] (and for a
    /// failed handshake when the child was already gone).
    ///
    /// ```
    /// assert_eq!(multiproc::Error::timeout("x").exit_status(), None);
    /// ```
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.inner.status
    }

    /// `true` for [`ErrorKind::Timeout`].
    ///
    /// ```
    /// assert!(multiproc::Error::timeout("x").is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Timeout
    }

    /// `true` for [`ErrorKind::Disconnected`].
    ///
    /// ```
    /// assert!(!multiproc::Error::timeout("x").is_disconnected());
    /// ```
    pub fn is_disconnected(&self) -> bool {
        self.inner.kind == ErrorKind::Disconnected
    }

    /// `true` for [`ErrorKind::Panicked`].
    ///
    /// ```
    /// assert!(!multiproc::Error::timeout("x").is_panic());
    /// ```
    pub fn is_panic(&self) -> bool {
        self.inner.kind == ErrorKind::Panicked
    }

    /// `true` for [`ErrorKind::Cancelled`] (Python's `CancelledError`).
    ///
    /// ```
    /// assert!(!multiproc::Error::timeout("x").is_cancelled());
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.inner.kind == ErrorKind::Cancelled
    }

    /// A copy of this error for a second reader (`Task::result` may be
    /// asked again, as Python's `Future.result()`); the source, if any,
    /// becomes its message.
    pub(crate) fn duplicate(&self) -> Self {
        let i = &self.inner;
        Error {
            inner: Box::new(Inner {
                kind: i.kind,
                context: i.context.clone(),
                pid: i.pid,
                status: i.status,
                index: i.index,
                panic: i.panic.clone(),
                #[cfg(feature = "mpi")]
                rank: i.rank,
                source: i.source.as_ref().map(|s| s.to_string().into()),
            }),
        }
    }

    /// `true` for [`ErrorKind::ProcessDied`].
    ///
    /// ```
    /// assert!(!multiproc::Error::timeout("x").is_process_died());
    /// ```
    pub fn is_process_died(&self) -> bool {
        self.inner.kind == ErrorKind::ProcessDied
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        #[cfg(feature = "mpi")]
        if let Some(rank) = i.rank {
            write!(f, "rank {rank}: ")?;
        }
        f.write_str(i.kind.describe())?;
        if !i.context.is_empty() {
            write!(f, " ({})", i.context)?;
        }
        if let Some(index) = i.index {
            write!(f, ", item {index}")?;
        }
        if let Some(pid) = i.pid {
            write!(f, ", pid {pid}")?;
        }
        if let Some(status) = i.status {
            write!(f, ", {status}")?;
        }
        if let Some(p) = &i.panic {
            write!(f, ": panicked with {p}")?;
        }
        if let Some(src) = &i.source {
            write!(f, ": {src}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        let mut d = f.debug_struct("Error");
        d.field("kind", &i.kind);
        if !i.context.is_empty() {
            d.field("context", &i.context);
        }
        if let Some(pid) = i.pid {
            d.field("pid", &pid);
        }
        #[cfg(feature = "mpi")]
        if let Some(rank) = i.rank {
            d.field("rank", &rank);
        }
        if let Some(status) = &i.status {
            d.field("status", status);
        }
        if let Some(p) = &i.panic {
            d.field("panic", p);
        }
        if let Some(s) = &i.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.kind() {
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::Disconnected => io::ErrorKind::BrokenPipe,
            ErrorKind::Protocol | ErrorKind::Codec => io::ErrorKind::InvalidData,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: Call<'static> = Call {
        name: "Queue::get",
        timed_out: "the queue stayed empty",
        peer_died: "a process sharing the queue died",
        disconnected: "the queue was closed",
    };

    #[test]
    fn in_call_names_the_call_and_keeps_the_facts() {
        let e = Error::new(ErrorKind::Timeout, "nothing arrived in time").in_call(&GET);
        assert!(e.is_timeout());
        assert_eq!(
            e.to_string(),
            "timed out (Queue::get: the queue stayed empty)"
        );

        let e = Error::new(ErrorKind::PeerDied, "the sending process died").in_call(&GET);
        assert_eq!(e.kind(), ErrorKind::PeerDied);
        assert!(e
            .to_string()
            .ends_with("(Queue::get: a process sharing the queue died)"));

        // A death that names the process keeps its account, and the pid.
        let e = Error::new(ErrorKind::PeerDied, "process 7 died holding the lock")
            .with_pid(7)
            .in_call(&GET);
        assert_eq!(e.pid(), Some(7));
        assert!(e
            .to_string()
            .contains("(Queue::get: process 7 died holding the lock)"));

        // Other kinds keep the detail behind the call's name.
        let e = Error::new(ErrorKind::Protocol, "bad frame").in_call(&GET);
        assert_eq!(e.kind(), ErrorKind::Protocol);
        assert!(e.to_string().ends_with("(Queue::get: bad frame)"));
    }
}
