//! Waiting on a 32-bit word in shared memory, and asking whether a process
//! is alive: what the rings need from the OS.
//!
//! - Linux: `futex(FUTEX_WAIT / FUTEX_WAKE)` *without* `FUTEX_PRIVATE_FLAG`,
//!   so a waiter in one process is woken by a store + wake in another that
//!   maps the same page.
//! - Windows: a pair of named semaphores per word in a shared segment
//!   (`wait_windows.rs`); `WaitOnAddress` for words in private memory.
//! - Elsewhere (macOS, other Unix): a sleep that re-reads the word. Correct
//!   (waiters re-check their condition; wakes are hints) but a blocked
//!   waiter reacts within up to 1 ms instead of a few µs. (`__ulock_wait`
//!   with `UL_COMPARE_AND_WAIT_SHARED` is private API on macOS.)
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Blocks while `*word == expected`, for at most `timeout`. Returns early on
/// a wake, a signal, a changed value or spuriously; the caller re-checks
/// what it waits for.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `word` is a live `AtomicU32` (4-byte aligned, valid for the
        // whole call because we borrow it); FUTEX_WAIT only reads it, and
        // `ts` is a valid relative timeout that outlives the call. The
        // result (woken, EAGAIN, ETIMEDOUT, EINTR) needs no handling: every
        // return is treated as a possible wake-up.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                &ts as *const libc::timespec,
            )
        };
    }
    #[cfg(windows)]
    super::wait_windows::wait(word, expected, timeout);
    #[cfg(not(any(target_os = "linux", target_os = "android", windows)))]
    {
        // SYNC: Relaxed: only a hint; the caller re-checks its condition
        // with its own orderings after we return.
        if word.load(Ordering::Relaxed) == expected {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
        }
    }
    let _ = (Ordering::Relaxed, expected);
}

/// Wakes every waiter blocked in [`futex_wait`] on `word` (in any process).
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: FUTEX_WAKE does not access memory; it only uses the address
    // of `word`, a live `AtomicU32`, as the key of the wait queue.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
    #[cfg(windows)]
    super::wait_windows::wake(word, u32::MAX);
    #[cfg(not(any(target_os = "linux", target_os = "android", windows)))]
    let _ = word;
}

/// Wakes up to `n` waiters blocked in [`futex_wait`] on `word`.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let n = n.min(i32::MAX as u32) as libc::c_int;
        // SAFETY: FUTEX_WAKE does not access memory; it only uses the
        // address of `word`, a live `AtomicU32`, as the key of the queue.
        unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    }
    #[cfg(windows)]
    super::wait_windows::wake(word, n);
    #[cfg(not(any(target_os = "linux", target_os = "android", windows)))]
    let _ = (word, n);
}

/// `true` unless process `pid` certainly does not exist (or is a zombie,
/// which will never release anything). `0` (unknown) and values that are
/// not valid pids count as alive: the caller's other checks (deadline,
/// close flags) still apply.
pub(crate) fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return true;
    }
    super::process_alive(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn wait_times_out_and_wakes() {
        let w = Arc::new(AtomicU32::new(0));
        let t0 = Instant::now();
        futex_wait(&w, 0, Duration::from_millis(20));
        assert!(t0.elapsed() >= Duration::from_millis(1));
        // A changed value returns at once.
        w.store(1, Ordering::SeqCst);
        futex_wait(&w, 0, Duration::from_secs(10));
        let w2 = w.clone();
        let h = std::thread::spawn(move || {
            while w2.load(Ordering::SeqCst) == 1 {
                futex_wait(&w2, 1, Duration::from_millis(50));
            }
        });
        std::thread::sleep(Duration::from_millis(10));
        w.store(2, Ordering::SeqCst);
        futex_wake_all(&w);
        h.join().unwrap();
    }

    #[test]
    fn own_pid_is_alive_and_unknown_counts_as_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(pid_alive(0));
        assert!(pid_alive(u32::MAX));
    }
}
