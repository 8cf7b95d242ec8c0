//! Start methods: how a new process comes to be (Python's
//! `set_start_method`, `get_start_method`, `get_all_start_methods`).

use std::sync::Mutex;

use crate::error::{Error, ErrorKind, Result};

/// How a new worker process starts: Python's start methods.
///
/// * [`Spawn`](StartMethod::Spawn) (`"spawn"`): the program is executed
///   anew and stops in [`init`](crate::init), which runs the task. The
///   default everywhere, and the only method on Windows and macOS.
/// * [`ForkServer`](StartMethod::ForkServer) (`"forkserver"`, Linux): one
///   server process per program, itself a re-exec stopped right after
///   `init()`'s worker set-up, single-threaded, forks each new worker. A
///   worker then starts from that clean image in a fraction of the time
///   of an `exec` (its task comes on a channel the parent made and only
///   the server could hand down, so it needs no handshake), and otherwise
///   behaves exactly as a spawned one (result, panic, exit status,
///   `kill`/`terminate`, death with the parent). The server starts at the
///   first start that asks for it; it ends with the program.
///
/// Python has a third, `"fork"` (a copy of the running, maybe threaded,
/// parent); it is not offered: forking a threaded Rust program is unsound.
///
/// ```
/// use multiproc::StartMethod;
/// assert_eq!(StartMethod::Spawn.name(), "spawn");
/// assert_eq!("forkserver".parse::<StartMethod>().unwrap(), StartMethod::ForkServer);
/// assert!(StartMethod::Spawn.is_available());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartMethod {
    /// A fresh `exec` of the program per worker (Python's `"spawn"`).
    Spawn,
    /// Forked from the program's fork server (Python's `"forkserver"`);
    /// Linux only.
    ForkServer,
}

impl StartMethod {
    /// Python's name for it: `"spawn"` or `"forkserver"`.
    ///
    /// ```
    /// assert_eq!(multiproc::StartMethod::ForkServer.name(), "forkserver");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Spawn => "spawn",
            StartMethod::ForkServer => "forkserver",
        }
    }

    /// `true` where this method can start processes: `Spawn` everywhere,
    /// `ForkServer` on Linux.
    ///
    /// ```
    /// assert_eq!(
    ///     multiproc::StartMethod::ForkServer.is_available(),
    ///     cfg!(target_os = "linux")
    /// );
    /// ```
    pub fn is_available(self) -> bool {
        match self {
            StartMethod::Spawn => true,
            StartMethod::ForkServer => cfg!(target_os = "linux"),
        }
    }

    /// `Ok(self)` if available here, else Python's `ValueError` as
    /// [`ErrorKind::InvalidState`].
    pub(crate) fn check_available(self) -> Result<StartMethod> {
        if self.is_available() {
            return Ok(self);
        }
        Err(Error::new(
            ErrorKind::InvalidState,
            format!(
                "cannot find context for {:?}: the start method is not available on this \
                 platform (the fork server needs Linux); use StartMethod::Spawn",
                self.name()
            ),
        ))
    }
}

impl std::fmt::Display for StartMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for StartMethod {
    type Err = Error;

    /// Python's names, `"spawn"` and `"forkserver"`; anything else
    /// (`"fork"` included) is [`ErrorKind::InvalidState`], Python's
    /// `ValueError`.
    fn from_str(s: &str) -> Result<StartMethod> {
        match s {
            "spawn" => Ok(StartMethod::Spawn),
            "forkserver" => Ok(StartMethod::ForkServer),
            other => Err(Error::new(
                ErrorKind::InvalidState,
                format!("cannot find context for {other:?}: the start methods are \"spawn\" and \"forkserver\""),
            )),
        }
    }
}

/// The method starts use when nobody chose one.
const DEFAULT: StartMethod = StartMethod::Spawn;

/// The process-wide method; `None` until set or first used.
static CHOSEN: Mutex<Option<StartMethod>> = Mutex::new(None);

/// Sets the start method of every later start that does not choose its own
/// ([`ProcessBuilder::start_method`](crate::ProcessBuilder::start_method),
/// [`PoolBuilder::start_method`](crate::PoolBuilder::start_method)).
///
/// Python's semantics: it may be set once. A second call, or a call after
/// the method was fixed by [`get_start_method`] or by the first start, is
/// an error unless `force` is `true`. A method not available here
/// ([`StartMethod::is_available`]) is an error whatever `force` says.
///
/// # Errors
/// [`ErrorKind::InvalidState`]: already set (Python's `RuntimeError:
/// context has already been set`) or not available (its `ValueError`).
///
/// Python counterpart: `multiprocessing.set_start_method(method, force=False)`.
///
/// ```
/// use multiproc::StartMethod;
///
/// fn main() {
///     multiproc::init();
///     # #[cfg(target_os = "linux")] {
///     multiproc::set_start_method(StartMethod::ForkServer, false).unwrap();
///     assert!(multiproc::set_start_method(StartMethod::Spawn, false).is_err());
///     multiproc::set_start_method(StartMethod::Spawn, true).unwrap();
///     assert_eq!(multiproc::get_start_method(), StartMethod::Spawn);
///     # }
/// }
/// ```
pub fn set_start_method(method: StartMethod, force: bool) -> Result<()> {
    method.check_available()?;
    let mut chosen = CHOSEN.lock().unwrap_or_else(|p| p.into_inner());
    if chosen.is_some() && !force {
        return Err(Error::new(
            ErrorKind::InvalidState,
            "the start method has already been set (or fixed by its first use); pass \
             force = true to change it",
        ));
    }
    *chosen = Some(method);
    Ok(())
}

/// The process-wide start method. As in Python, asking fixes it: a later
/// [`set_start_method`] without `force` is an error. Default:
/// [`StartMethod::Spawn`] (README, "Start methods", says why).
///
/// Python counterpart: `multiprocessing.get_start_method()`.
///
/// ```
/// let m = multiproc::get_start_method();
/// assert!(m.is_available());
/// ```
pub fn get_start_method() -> StartMethod {
    *CHOSEN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_or_insert(DEFAULT)
}

/// The start methods available on this platform, the default first.
///
/// Python counterpart: `multiprocessing.get_all_start_methods()`.
///
/// ```
/// let all = multiproc::all_start_methods();
/// assert_eq!(all[0], multiproc::StartMethod::Spawn);
/// ```
pub fn all_start_methods() -> Vec<StartMethod> {
    [StartMethod::Spawn, StartMethod::ForkServer]
        .into_iter()
        .filter(|m| m.is_available())
        .collect()
}
