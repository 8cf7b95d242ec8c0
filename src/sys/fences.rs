//! The two fences of the rings' park/wake handshake, made asymmetric where
//! the OS allows it (Linux `membarrier`).
//!
//! The handshake is Dekker's: a waker stores its progress, then loads the
//! count of parked peers; a waiter adds itself to that count, then loads
//! the progress. Each side needs a full fence between its store and its
//! load, or both loads can see the old values and the waiter sleeps through
//! the wake. A waker wakes on every frame it pushes or frees; a waiter
//! parks only after spinning for tens of microseconds. So the waker's fence
//! is the hot one: a `SeqCst` fence waits until the store of the frame
//! itself (a line the peer was reading, so a cross-core miss) has left the
//! store buffer: a probe of one-by-one `Queue` put/get read 124–142 ns an
//! item with it and 78–100 ns without (docs/ARCHITECTURE.md, Rings,
//! "Waiting").
//!
//! With `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` the waiter's side
//! makes every running thread of every *registered* process execute a full
//! barrier, which turns the waker's compiler fence into a full one for this
//! pairing. So:
//!
//! * [`light`] (the waker's side) is a compiler fence in a process that has
//!   registered (`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`, done here
//!   before the first light fence), and a `SeqCst` fence anywhere else;
//! * [`heavy`] (the waiter's side) is a `SeqCst` fence plus that
//!   `membarrier` call (≈ 0.2–2 µs, once per park), and says whether the
//!   call succeeded. Without it a registered peer's wake could be missed,
//!   so the caller then parks in short slices (a lost wake is a delay of a
//!   slice, never a hang).
//!
//! Registration belongs to the address space: `fork` copies it (a fork
//! server's children inherit it with this module's state) and `exec` ends
//! it (and starts this module afresh). Other systems have no cross-process
//! asymmetric fence: both sides are `SeqCst` fences there, as before.

use std::sync::atomic::{compiler_fence, fence, Ordering};
use std::time::Duration;

/// Registers this process now (at the latest it does so at its first
/// [`light`] fence): a fork server calls it once, so that each child it
/// forks starts registered (`fork` copies the registration) instead of
/// paying the ≈ 30 µs registration itself.
#[cfg(target_os = "linux")]
pub(crate) fn register_now() {
    let _ = imp::registered();
}

/// The waker's fence, between its Release store of progress and its load
/// of the parked peers' count.
#[inline]
pub(crate) fn light() {
    if imp::registered() {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The waiter's fence, between its announcement in the parked count and
/// its re-check of progress. `false` if a registered waker might not be
/// covered (its wake could be missed): park in short slices then. `true`
/// where the kernel has no such barrier at all: no waker can be light.
#[inline]
pub(crate) fn heavy() -> bool {
    fence(Ordering::SeqCst);
    imp::barrier_all()
}

/// The longest sleep of a waiter whose [`heavy`] fence said `false`: a
/// wake it may have missed then costs this much, once.
const UNCOVERED_SLICE: Duration = Duration::from_millis(1);

/// `timeout`, or at most [`UNCOVERED_SLICE`] when the waiter's heavy
/// fence did not cover the wakers (`covered` is what [`heavy`] said).
pub(crate) fn park_timeout(covered: bool, timeout: Duration) -> Duration {
    if covered {
        timeout
    } else {
        timeout.min(UNCOVERED_SLICE)
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
#[allow(unsafe_code)]
mod imp {
    use std::sync::atomic::{AtomicU8, Ordering};

    const CMD_QUERY: libc::c_int = 0;
    const CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
    const CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

    /// This process's state, decided once: `KNOWN` plus what holds.
    static STATE: AtomicU8 = AtomicU8::new(0);
    const KNOWN: u8 = 1;
    /// This process registered: its wakers may use the light fence.
    const REGISTERED: u8 = 2;
    /// The kernel offers the global expedited barrier.
    pub(super) const OFFERED: u8 = 4;
    /// The kernel itself has no global expedited barrier (the query said
    /// so, or the call does not exist): then no process can have
    /// registered, every waker fences fully, and a waiter's fence alone
    /// covers them. (A query refused otherwise, say by a seccomp filter,
    /// proves nothing about the peers: the waiter parks in short slices.)
    const ABSENT: u8 = 8;

    fn membarrier(cmd: libc::c_int) -> libc::c_long {
        // SAFETY: membarrier takes (cmd, flags, cpu_id) by value and
        // touches no user memory; an unknown command is an error return.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_uint,
                0 as libc::c_int,
            )
        }
    }

    #[inline]
    pub(super) fn state() -> u8 {
        // SYNC: Acquire pairs with the Release store in `decide`: a thread
        // that sees REGISTERED sees it after the registering call returned
        // (the kernel covers every thread of the process from then on).
        let s = STATE.load(Ordering::Acquire);
        if s & KNOWN != 0 {
            s
        } else {
            decide()
        }
    }

    /// Queries and registers (idempotent; two threads racing here both
    /// register and store the same answer).
    #[cold]
    fn decide() -> u8 {
        let both = CMD_GLOBAL_EXPEDITED | CMD_REGISTER_GLOBAL_EXPEDITED;
        let query = membarrier(CMD_QUERY);
        let mut s = KNOWN;
        if query < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
                s |= ABSENT;
            }
        } else if query & libc::c_long::from(both) == libc::c_long::from(both) {
            s |= OFFERED;
            if membarrier(CMD_REGISTER_GLOBAL_EXPEDITED) == 0 {
                s |= REGISTERED;
            }
        } else {
            s |= ABSENT;
        }
        // SYNC: Release pairs with the Acquire load in `state`.
        STATE.store(s, Ordering::Release);
        s
    }

    #[inline]
    pub(super) fn registered() -> bool {
        state() & REGISTERED != 0
    }

    pub(super) fn barrier_all() -> bool {
        let s = state();
        if s & ABSENT != 0 {
            return true;
        }
        s & OFFERED != 0 && membarrier(CMD_GLOBAL_EXPEDITED) == 0
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    /// No cross-process asymmetric barrier here: every waker fences.
    #[inline]
    pub(super) fn registered() -> bool {
        false
    }

    /// Every waker fences fully here, so the `SeqCst` fence suffices.
    pub(super) fn barrier_all() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_fences_run_and_the_waiters_fence_covers_this_machines_wakers() {
        light();
        // Where the kernel offers the barrier (every Linux since 4.16)
        // this process registered at `light`, and the barrier works; on a
        // kernel without it nobody registers and the plain fence covers
        // wakers that fence fully; elsewhere both sides fence fully.
        assert!(heavy());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert!(
            imp::state() & imp::OFFERED == 0 || imp::registered(),
            "the kernel offers membarrier, yet registration failed"
        );
        assert_eq!(
            park_timeout(true, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(park_timeout(false, Duration::from_secs(5)), UNCOVERED_SLICE);
    }
}
