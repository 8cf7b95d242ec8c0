//! Windows: blocking waits on a word in shared memory, woken from another
//! process (what `futex` does on Linux).
//!
//! `WaitOnAddress` cannot cross processes, so a word inside a shared
//! segment gets two named semaphores, made on first use by whichever
//! process waits or wakes first, named after the segment and the word's
//! offset (the same in every process, wherever the segment is mapped):
//!
//! - `…_w<offset>` counts the waiters: a waiter adds one *before* it
//!   re-checks the word, and takes it back after it wakes;
//! - `…_s<offset>` carries the wake-ups: a waker, after its store to the
//!   word, releases as many as there are waiters without a pending wake-up
//!   (`waiters − current count`, read with `NtQuerySemaphore`), or `n` of
//!   them.
//!
//! No wake-up is lost: a waiter that registered before the waker read the
//! count gets a release (it may find it waiting already: one spurious
//! return, allowed); one that registered after it sees the new value when
//! it re-checks the word (both sides' semaphore calls are full barriers).
//! A waiter that times out just as it is released leaves one wake-up in
//! the semaphore: the next wait returns at once, spuriously. Callers
//! re-check what they wait for and wait again in slices (≤ 100 ms), so a
//! spurious or lost wake-up costs time, never correctness.
//!
//! Words outside any shared segment (heap regions in tests, in-process
//! rings) use `WaitOnAddress` / `WakeByAddress*`, which work within one
//! process. Segments register their views here when they map them
//! (`shm_windows.rs`) and unregister when they unmap; the semaphores a
//! view made are closed then. The objects carry the owner-only DACL.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, WAIT_OBJECT_0};
use windows_sys::Win32::System::Threading::{
    CreateSemaphoreW, ReleaseSemaphore, WaitForSingleObject, WaitOnAddress, WakeByAddressAll,
    WakeByAddressSingle,
};

use super::windows::{owner_only, wide};

/// Semaphore counts never exceed this (more waiters on one word than this
/// would only see extra spurious returns).
const MAX_COUNT: i32 = 1 << 20;

/// One mapped view of a shared segment, and the semaphores made for words
/// in it (offset → (waiters, wake-ups), as raw handle values).
struct View {
    base: usize,
    len: usize,
    /// `Local\mp…`, the section's name.
    name: String,
    objects: HashMap<usize, (usize, usize)>,
}

static VIEWS: Mutex<Vec<View>> = Mutex::new(Vec::new());

fn views() -> std::sync::MutexGuard<'static, Vec<View>> {
    VIEWS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records that `len` bytes at `base` are a view of section `name`.
pub(crate) fn register_view(base: usize, len: usize, name: String) {
    views().push(View {
        base,
        len,
        name,
        objects: HashMap::new(),
    });
}

/// Forgets the view at `base` and closes the semaphores made for it.
pub(crate) fn unregister_view(base: usize) {
    let mut views = views();
    if let Some(i) = views.iter().position(|v| v.base == base) {
        let view = views.swap_remove(i);
        for (w, s) in view.objects.into_values() {
            // SAFETY: both handles were made for this view and are closed
            // once, here. No waiter is blocked on them: a waiter borrows a
            // word inside the view, which its owner keeps mapped meanwhile.
            unsafe { CloseHandle(w as HANDLE) };
            // SAFETY: as above.
            unsafe { CloseHandle(s as HANDLE) };
        }
    }
}

/// The (waiters, wake-ups) semaphores of `word`, or `None` if it lies in no
/// registered view (or they cannot be made).
fn objects_for(word: &AtomicU32) -> Option<(HANDLE, HANDLE)> {
    let addr = word.as_ptr() as usize;
    let mut views = views();
    let view = views
        .iter_mut()
        .find(|v| addr >= v.base && addr - v.base < v.len)?;
    let offset = addr - view.base;
    if let Some(&(w, s)) = view.objects.get(&offset) {
        return Some((w as HANDLE, s as HANDLE));
    }
    let w = semaphore(&format!("{}_w{offset:x}", view.name))?;
    let Some(s) = semaphore(&format!("{}_s{offset:x}", view.name)) else {
        // SAFETY: made just above, closed once.
        unsafe { CloseHandle(w) };
        return None;
    };
    view.objects.insert(offset, (w as usize, s as usize));
    Some((w, s))
}

/// Creates, or opens if it exists, the named semaphore `name` (count 0).
fn semaphore(name: &str) -> Option<HANDLE> {
    let sa = owner_only()?;
    let name = wide(name);
    // SAFETY: `sa` and `name` (NUL-terminated) outlive the call.
    let h = unsafe { CreateSemaphoreW(&sa, 0, MAX_COUNT, name.as_ptr()) };
    (!h.is_null()).then_some(h)
}

#[repr(C)]
struct SemaphoreBasicInformation {
    current_count: i32,
    maximum_count: i32,
}

#[link(name = "ntdll")]
extern "system" {
    // Documented in the WDK; present in every Windows since NT and in Wine.
    fn NtQuerySemaphore(
        handle: HANDLE,
        class: u32,
        info: *mut SemaphoreBasicInformation,
        len: u32,
        ret_len: *mut u32,
    ) -> i32;
}

/// The current count of semaphore `h` (0 if it cannot be read).
fn count(h: HANDLE) -> i32 {
    let mut info = SemaphoreBasicInformation {
        current_count: 0,
        maximum_count: 0,
    };
    // SAFETY: `h` is a semaphore handle with all access; `info` is the
    // writable SemaphoreBasicInformation (class 0) with its size.
    let status = unsafe {
        NtQuerySemaphore(
            h,
            0,
            &mut info,
            std::mem::size_of::<SemaphoreBasicInformation>() as u32,
            std::ptr::null_mut(),
        )
    };
    if status >= 0 {
        info.current_count
    } else {
        0
    }
}

fn millis(timeout: Duration) -> u32 {
    // Round up so a short timeout still sleeps; u32::MAX would be INFINITE.
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    ms.min(u128::from(u32::MAX - 1)) as u32
}

/// Blocks while `*word == expected`, for at most `timeout`; may return
/// early. See the module docs.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let Some((waiters, wakeups)) = objects_for(word) else {
        // SAFETY: `word` and `expected` are live 4-byte values for the whole
        // call; WaitOnAddress only compares and sleeps.
        unsafe {
            WaitOnAddress(
                word.as_ptr().cast(),
                (&expected as *const u32).cast(),
                4,
                millis(timeout),
            )
        };
        return;
    };
    // SAFETY: `waiters` is a live semaphore handle (closed only when the
    // view is unmapped, which the caller's borrow of `word` prevents).
    unsafe { ReleaseSemaphore(waiters, 1, std::ptr::null_mut()) };
    // SYNC: SeqCst load after the registration above (a full barrier in
    // the kernel); pairs with the waker's store to the word before it reads
    // the waiter count, so one of us sees the other.
    if word.load(Ordering::SeqCst) == expected {
        // SAFETY: a live semaphore handle (as above).
        unsafe { WaitForSingleObject(wakeups, millis(timeout)) };
    }
    // Take our registration back: the count is at least the one we added.
    // SAFETY: a live semaphore handle (as above).
    let r = unsafe { WaitForSingleObject(waiters, 0) };
    debug_assert_eq!(r, WAIT_OBJECT_0);
}

/// Wakes up to `n` waiters of `word` (in any process).
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    let Some((waiters, wakeups)) = objects_for(word) else {
        if n == 1 {
            // SAFETY: only the address is used, as a key.
            unsafe { WakeByAddressSingle(word.as_ptr().cast()) };
        } else {
            // SAFETY: only the address is used, as a key.
            unsafe { WakeByAddressAll(word.as_ptr().cast()) };
        }
        return;
    };
    // SYNC: the caller's store to the word happened before this call; the
    // kernel query below is a full barrier (pairs with `wait`'s
    // registration-then-load).
    std::sync::atomic::fence(Ordering::SeqCst);
    let missing = count(waiters) - count(wakeups);
    let release = missing.min(i32::try_from(n).unwrap_or(i32::MAX));
    if release > 0 {
        // SAFETY: a live semaphore handle. Going over MAX_COUNT fails and
        // releases nothing: the waiters then see the word at their next
        // slice.
        unsafe { ReleaseSemaphore(wakeups, release, std::ptr::null_mut()) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::shm::Map;
    use super::*;
    use std::time::Instant;

    /// The word through one view, as a peer would see it.
    fn word(map: &Map) -> &AtomicU32 {
        // SAFETY: the view is page aligned, at least 4 bytes, zero-filled,
        // and lives as long as the borrow of `map`; only atomics touch it.
        unsafe { AtomicU32::from_ptr(map.as_ptr().wrapping_add(64).cast()) }
    }

    #[test]
    fn a_wake_through_one_view_reaches_a_waiter_on_another() {
        let a = Map::create(4096).unwrap();
        let b = Map::open(&a.locator(), 4096).unwrap();
        let b = std::sync::Arc::new(b);
        let started = Instant::now();
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || {
                let w = word(&b);
                while w.load(Ordering::SeqCst) == 0 {
                    wait(w, 0, Duration::from_secs(30));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        word(&a).store(1, Ordering::SeqCst);
        wake(word(&a), u32::MAX);
        waiter.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the wake-up was lost"
        );
        // The waiter took its registration back; nothing is pending.
        let (w, s) = objects_for(word(&a)).unwrap();
        assert_eq!((count(w), count(s)), (0, 0));
    }

    #[test]
    fn a_changed_word_returns_at_once_and_timeouts_expire() {
        let a = Map::create(4096).unwrap();
        let w = word(&a);
        w.store(5, Ordering::SeqCst);
        let t = Instant::now();
        wait(w, 4, Duration::from_secs(30));
        assert!(t.elapsed() < Duration::from_secs(20));
        let t = Instant::now();
        wait(w, 5, Duration::from_millis(30));
        assert!(t.elapsed() >= Duration::from_millis(20));
    }
}
