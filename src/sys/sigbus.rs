//! Survives a peer that shrinks a shared segment (Linux).
//!
//! Any process that can open a segment can also `ftruncate` it. The kernel
//! then unmaps the lost pages from every mapping, and the next access to
//! them in *any* process is `SIGBUS` — a crash of processes that did
//! nothing wrong. Sealing (`F_SEAL_SHRINK`) would forbid the shrink, but
//! only `memfd_create` files take seals, and memfds are not bounded by
//! `/dev/shm`'s size, so a full segment space would become an OOM kill
//! instead of a clean `NoSpace` at creation.
//!
//! So this module guards the mappings instead, as Wayland compositors
//! guard client buffers:
//!
//! - every shared mapping registers its address range in a lock-free table
//!   that a signal handler can read;
//! - the `SIGBUS` handler (installed once, when the first range registers)
//!   looks the faulting address up. If it lies in a registered range, it
//!   maps private zero pages over the whole range (`MAP_FIXED`), marks the
//!   range *lost* and returns: the faulting instruction runs again and
//!   reads zeros. The process lives; the mapping shares nothing any more;
//! - users of the mapping ask [`Guard::lost`] where they wait or finish
//!   work, and turn it into a `Protocol` error;
//! - any other `SIGBUS` goes to the handler that was there before (std's
//!   stack-overflow handler, a user's, or the default action: the process
//!   dies of `SIGBUS` as it would have without us).
//!
//! The handler does only async-signal-safe work: atomic loads and stores,
//! `mmap`, `sigaction`, and a call of the previous handler.
#![allow(unsafe_code)]

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// One registered mapping. `start == 0` means free.
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    lost: AtomicBool,
}

impl Slot {
    // Only ever used as the repeat operand of the tables' array
    // initialisers: each use is a fresh, independent slot.
    #[allow(clippy::declare_interior_mutable_const)]
    const FREE: Slot = Slot {
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        lost: AtomicBool::new(false),
    };
}

const CHUNK: usize = 128;

/// Slots in a singly linked list of chunks that only grows, so the handler
/// can walk it without a lock while another thread registers.
struct Chunk {
    slots: [Slot; CHUNK],
    next: AtomicPtr<Chunk>,
}

static FIRST: Chunk = Chunk {
    slots: [Slot::FREE; CHUNK],
    next: AtomicPtr::new(ptr::null_mut()),
};

/// Serialises registration (never taken by the handler).
static WRITERS: Mutex<()> = Mutex::new(());

/// The `SIGBUS` disposition before ours, for faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A mapping's entry in the table; unregisters on drop.
pub(crate) struct Guard {
    slot: &'static Slot,
}

impl Guard {
    /// Registers `[start, start + len)` (a whole mapping) and makes sure
    /// the handler is installed.
    pub(crate) fn register(start: *mut u8, len: usize) -> Guard {
        install();
        let _w = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
        let mut chunk: &'static Chunk = &FIRST;
        loop {
            // SYNC: Relaxed: writers are serialised by WRITERS.
            if let Some(slot) = chunk
                .slots
                .iter()
                .find(|s| s.start.load(Ordering::Relaxed) == 0)
            {
                // SYNC: Relaxed for len and lost, published by the Release
                // store of start, which the handler loads with Acquire.
                slot.len.store(len, Ordering::Relaxed);
                slot.lost.store(false, Ordering::Relaxed);
                slot.start.store(start as usize, Ordering::Release);
                return Guard { slot };
            }
            // SYNC: Acquire pairs with the Release store of `next` below.
            let next = chunk.next.load(Ordering::Acquire);
            if next.is_null() {
                let fresh: &'static Chunk = Box::leak(Box::new(Chunk {
                    slots: [Slot::FREE; CHUNK],
                    next: AtomicPtr::new(ptr::null_mut()),
                }));
                // SYNC: Release publishes the zeroed chunk to the handler.
                chunk
                    .next
                    .store(ptr::from_ref(fresh).cast_mut(), Ordering::Release);
                chunk = fresh;
            } else {
                // SAFETY: chunks are leaked, so a published pointer stays
                // valid for the rest of the process.
                chunk = unsafe { &*next };
            }
        }
    }

    /// Whether a `SIGBUS` in this range replaced it with private zeros:
    /// the mapping no longer shares anything with other processes.
    pub(crate) fn lost(&self) -> bool {
        // SYNC: Relaxed: a flag; the zero pages themselves are ordered by
        // the mmap in the handler.
        self.slot.lost.load(Ordering::Relaxed)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _w = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
        // SYNC: Release: the slot is free for the next registration; the
        // mapping is already gone, so no fault can look for it.
        self.slot.start.store(0, Ordering::Release);
    }
}

/// The slot whose range holds `addr`. Async-signal-safe.
fn find(addr: usize) -> Option<&'static Slot> {
    let mut chunk: &'static Chunk = &FIRST;
    loop {
        for slot in &chunk.slots {
            // SYNC: Acquire pairs with the Release store in `register`.
            let start = slot.start.load(Ordering::Acquire);
            let len = slot.len.load(Ordering::Relaxed);
            if start != 0 && addr >= start && addr - start < len {
                return Some(slot);
            }
        }
        // SYNC: Acquire pairs with the Release store of `next`.
        let next = chunk.next.load(Ordering::Acquire);
        if next.is_null() {
            return None;
        }
        // SAFETY: chunks are leaked; see `register`.
        chunk = unsafe { &*next };
    }
}

fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sigaction` is plain data; all zeros is a valid value
        // (empty mask, no flags) that is filled in below.
        let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_sigbus;
        ours.sa_sigaction = handler as usize;
        ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: as above.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `sa_mask` is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut ours.sa_mask) };
        // Record the previous disposition before ours can run: read it
        // first, then swap ours in and keep what the swap returned (the
        // same, unless someone raced us, in which case theirs is kept).
        // SAFETY: valid pointers to sigaction structs; SIGBUS is a valid
        // signal whose handler may be replaced.
        let rc = unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), &mut old) };
        if rc != 0 {
            return;
        }
        let _ = PREVIOUS.set(old);
        // SAFETY: as above; `on_sigbus` has the SA_SIGINFO signature.
        unsafe { libc::sigaction(libc::SIGBUS, &ours, ptr::null_mut()) };
    });
}

/// The handler. Async-signal-safe: atomics, `mmap`, `sigaction`, errno.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: no preconditions; returns this thread's errno location.
    let errno_at = unsafe { libc::__errno_location() };
    // SAFETY: errno is thread-local and always valid to read; a handler
    // must restore it around calls that may set it.
    let errno = unsafe { *errno_at };
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let si = unsafe { &*info };
    let code = si.si_code;
    // SAFETY: reading the fault address of a kernel-filled siginfo (for a
    // signal that is not a fault it is just a meaningless number).
    let addr = unsafe { si.si_addr() } as usize;
    // Only a fault (not a `kill`), at an address in one of our mappings.
    if code > 0 {
        if let Some(slot) = find(addr) {
            // SYNC: Relaxed: the flag also elects one remapper. A thread
            // that faulted on the old pages while another one remaps just
            // returns and retries the access (faulting again until the new
            // pages are there), so the zeros are mapped once and writes
            // made to them right after are not wiped by a second remap.
            if slot.lost.swap(true, Ordering::Relaxed) {
                // SAFETY: restoring this thread's errno (see above).
                unsafe { *errno_at = errno };
                return;
            }
            let start = slot.start.load(Ordering::Acquire);
            let len = slot.len.load(Ordering::Relaxed);
            // SAFETY: `[start, start + len)` is a whole mapping of ours that
            // is still registered (it is unregistered just before its
            // munmap, and a fault inside it means it is still in use). Replacing it with
            // private anonymous memory of the same size keeps every
            // pointer into it valid; its contents become zeros, which every
            // reader of shared memory already has to accept from a peer.
            let p = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                // SAFETY: restoring this thread's errno (see above).
                unsafe { *errno_at = errno };
                return;
            }
        }
    }
    chain(sig, info, ctx);
    // SAFETY: restoring this thread's errno (see above).
    unsafe { *errno_at = errno };
}

/// Hands a `SIGBUS` that is not ours to the previous disposition.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let previous = PREVIOUS.get();
    let handler = previous.map_or(libc::SIG_DFL, |p| p.sa_sigaction);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default and return: a fault re-executes the
        // instruction and now kills the process with SIGBUS, as it would
        // have without us (the kernel does not let a fault be ignored).
        // SAFETY: a zeroed sigaction with SIG_DFL (0) is the default
        // disposition.
        let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
        dfl.sa_sigaction = libc::SIG_DFL;
        // SAFETY: valid pointer; SIGBUS may be reset.
        unsafe { libc::sigaction(sig, &dfl, ptr::null_mut()) };
        if info.is_null() {
            return;
        }
        // A `kill(SIGBUS)` is not re-raised by returning: raise it again.
        // SAFETY: `info` is the kernel's siginfo for this signal.
        if unsafe { (*info).si_code } <= 0 {
            // SAFETY: raise is async-signal-safe.
            unsafe { libc::raise(sig) };
        }
        return;
    }
    let Some(previous) = previous else { return };
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so
        // this is its signature; it gets what the kernel gave us.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO takes the signal
        // number only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A shared mapping of a file that is then truncated to zero: the read
    /// that would be SIGBUS gives zeros, and the guard says so.
    #[test]
    fn a_truncated_mapping_reads_zeros_and_is_marked_lost() {
        let file = tempfile_in_dev_shm();
        file.set_len(8192).unwrap();
        // SAFETY: a fresh shared mapping of a file we own.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let p = p.cast::<u8>();
        let guard = Guard::register(p, 8192);
        let at = p.wrapping_add(5000);
        // SAFETY: inside the mapping.
        unsafe { at.write_volatile(7) };
        assert!(!guard.lost());
        file.set_len(0).unwrap();
        // SAFETY: inside the mapping; the page is gone, the guard replaces
        // the mapping with zeros.
        let v = unsafe { at.read_volatile() };
        assert_eq!(v, 0);
        assert!(guard.lost());
        // Writable still, and private now.
        let at = p.wrapping_add(10);
        // SAFETY: inside the (replaced) mapping.
        unsafe { at.write_volatile(1) };
        drop(guard);
        // SAFETY: the mapping we made (replaced in place, same size).
        assert_eq!(unsafe { libc::munmap(p.cast(), 8192) }, 0);
    }

    /// Threads reading and writing the mapping while it is shrunk under
    /// them: every one survives, and the zeros are mapped once (a write
    /// made after the remap is not wiped by a second one).
    #[test]
    fn concurrent_faults_remap_once_and_nobody_dies() {
        const LEN: usize = 1 << 20;
        let file = tempfile_in_dev_shm();
        file.set_len(LEN as u64).unwrap();
        // SAFETY: a fresh shared mapping of a file we own.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let base = p as usize;
        let guard = Guard::register(p.cast(), LEN);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let stop = std::sync::Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for page in (0..LEN).step_by(4096) {
                            let at = (base + page + t * 8) as *mut u64;
                            // SAFETY: inside the mapping (aligned, in
                            // bounds); it stays mapped until the threads
                            // are joined.
                            let v = unsafe { at.read_volatile() };
                            // SAFETY: as above.
                            unsafe { at.write_volatile(v.wrapping_add(1)) };
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(20));
        file.set_len(0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let marker = (base + 8 * 4096 + 64) as *mut u64;
        // SAFETY: inside the (replaced) mapping; no thread writes there.
        unsafe { marker.write_volatile(0xfeed) };
        std::thread::sleep(std::time::Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            assert!(t.join().unwrap() > 0);
        }
        assert!(guard.lost());
        // SAFETY: as above.
        assert_eq!(unsafe { marker.read_volatile() }, 0xfeed);
        drop(guard);
        // SAFETY: the mapping made above (replaced in place, same size).
        assert_eq!(unsafe { libc::munmap(p, LEN) }, 0);
    }

    #[test]
    fn many_registrations_grow_the_table_and_free_slots() {
        let guards: Vec<Guard> = (1..=3 * CHUNK)
            .map(|i| Guard::register((i * 4096) as *mut u8, 4096))
            .collect();
        assert!(find(4096 * 2 + 17).is_some());
        assert!(find(4096 * (3 * CHUNK + 5)).is_none());
        drop(guards);
        assert!(find(4096 * 2 + 17).is_none());
    }

    fn tempfile_in_dev_shm() -> std::fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open("/dev/shm")
            .unwrap()
    }
}
