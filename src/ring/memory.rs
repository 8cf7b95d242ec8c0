//! The memory a ring's logic runs over, and the only seam for loom.
//!
//! [`Memory`] is what the producer, consumer and waiting code need from the
//! place a ring lives in: its header, its frame words, raw copies of
//! payload bytes, a fence, and park/wake on a header word. The ring's types
//! are generic over it, with [`SharedMem`] (a [`Region`]: a shared-memory
//! segment, or a heap block in tests) as the default, so the rest of the
//! crate never names it.
//!
//! Under `cfg(multiproc_loom)` (tests only) this file adds `ModelMem`, where the
//! header's atomics are loom's and the data area is an array of loom
//! `AtomicU64`s with payload bytes stored Relaxed, so a missing
//! Release/Acquire shows up as a corrupted payload. This is the one file
//! that mentions loom: the crate builds the same everywhere else, and only
//! `SharedMem` offers the in-place views (reservations, frames in place),
//! which need addressable bytes.
#![allow(unsafe_code)]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{Header, HEADER_SIZE};
use crate::region::{Region, REGION_ALIGN};

/// The atomic operations the ring uses on a header or frame word.
pub(crate) trait Atomic<T> {
    fn load(&self, order: Ordering) -> T;
    fn store(&self, value: T, order: Ordering);
    fn fetch_add(&self, value: T, order: Ordering) -> T;
    fn fetch_sub(&self, value: T, order: Ordering) -> T;
    fn fetch_or(&self, value: T, order: Ordering) -> T;
    fn compare_exchange(
        &self,
        current: T,
        new: T,
        success: Ordering,
        failure: Ordering,
    ) -> std::result::Result<T, T>;
}

/// Implements [`Atomic`] by the type's own methods of the same names.
macro_rules! atomic {
    ($ty:ty, $t:ty) => {
        impl Atomic<$t> for $ty {
            #[inline]
            fn load(&self, order: Ordering) -> $t {
                <$ty>::load(self, order)
            }
            #[inline]
            fn store(&self, value: $t, order: Ordering) {
                <$ty>::store(self, value, order)
            }
            #[inline]
            fn fetch_add(&self, value: $t, order: Ordering) -> $t {
                <$ty>::fetch_add(self, value, order)
            }
            #[inline]
            fn fetch_sub(&self, value: $t, order: Ordering) -> $t {
                <$ty>::fetch_sub(self, value, order)
            }
            #[inline]
            fn fetch_or(&self, value: $t, order: Ordering) -> $t {
                <$ty>::fetch_or(self, value, order)
            }
            #[inline]
            fn compare_exchange(
                &self,
                current: $t,
                new: $t,
                success: Ordering,
                failure: Ordering,
            ) -> std::result::Result<$t, $t> {
                <$ty>::compare_exchange(self, current, new, success, failure)
            }
        }
    };
}

atomic!(std::sync::atomic::AtomicU32, u32);
atomic!(std::sync::atomic::AtomicU64, u64);

/// The header and data area of one ring, with the capacity this process
/// validated, and the primitives the ring's logic needs around them.
pub(crate) trait Memory: Send + Sync + Sized + 'static {
    /// A 32-bit header word.
    type U32: Atomic<u32> + Send + Sync;
    /// A 64-bit header or frame word.
    type U64: Atomic<u64> + Send + Sync;
    /// Whether a waiter may spin before it parks. A modelled spin would be
    /// an unbounded loop of modelled loads, so the model checks once.
    const SPINS: bool;

    /// The shared header.
    fn header(&self) -> &Header<Self>;
    /// Data capacity in bytes (the local, validated copy; never re-read).
    fn cap(&self) -> usize;
    /// Another process shrank the memory under us (see `sys::sigbus`).
    fn lost(&self) -> bool;
    /// The frame word at `off` (8-aligned, `off + 8 <= cap`).
    fn word(&self, off: usize) -> &Self::U64;
    /// Copies `src` into the data area at `off`.
    fn write(&self, off: usize, src: &[u8]);
    /// Replaces the contents of `dst` with the `len` bytes at `off`.
    #[cfg(any(test, feature = "fuzzing"))]
    fn read_into(&self, off: usize, len: usize, dst: &mut Vec<u8>);
    /// The waker's fence of the park/wake handshake (`sys::fences`):
    /// between its Release store of progress and its load of the count
    /// of parked peers.
    fn light_fence();
    /// The waiter's fence of that handshake: between its announcement in
    /// the count and its re-check of progress. `false` if a waker's wake
    /// could be missed (park in short slices then).
    fn heavy_fence() -> bool;
    /// Sleeps on `word` while it holds `expected`, for at most `timeout`.
    fn park(word: &Self::U32, expected: u32, timeout: Duration);
    /// Wakes every sleeper on `word`.
    fn wake(word: &Self::U32);
    /// Whether the process `pid` is alive (a hint; see `sys::pid_alive`).
    fn pid_alive(pid: u32) -> bool;
}

/// A ring in a [`Region`]: the production back-end.
pub(crate) struct SharedMem {
    /// Keeps the memory alive.
    region: Arc<dyn Region>,
    /// `region.base()`, cached: a virtual call per access costs more than
    /// a small frame.
    base: *mut u8,
    /// Local copy, checked against the mapping size; never re-read.
    cap: usize,
}

// SAFETY: `base` points into `region`, which is Send + Sync and outlives
// the SharedMem; the memory behind it is only accessed through atomics and
// raw copies (see Region), so sharing the pointer between threads adds
// nothing a `&Region` would not allow.
unsafe impl Send for SharedMem {}
// SAFETY: as for Send.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// The ring memory at the start of `region`, holding `cap` data bytes.
    /// The caller has checked that the region holds `region_size(cap)`
    /// bytes (or, with `cap == 0`, at least the header) and is
    /// [`REGION_ALIGN`]-aligned.
    pub(super) fn new(region: Arc<dyn Region>, cap: usize) -> SharedMem {
        let base = region.base();
        debug_assert!(
            region.len() >= HEADER_SIZE + cap && (base as usize).is_multiple_of(REGION_ALIGN)
        );
        SharedMem { region, base, cap }
    }

    /// The region, to build the full view once the capacity is validated.
    pub(super) fn into_region(self) -> Arc<dyn Region> {
        self.region
    }

    /// Address of byte `off` of the data area. Callers keep `off <= cap`
    /// (checked before any access), so with `HEADER_SIZE + cap <=
    /// region.len()` (checked before the SharedMem was built) the address
    /// is inside the region; `wrapping_add` then equals `add`.
    #[inline]
    pub(super) fn data_at(&self, off: usize) -> *mut u8 {
        self.base.wrapping_add(HEADER_SIZE + off)
    }
}

impl Memory for SharedMem {
    type U32 = std::sync::atomic::AtomicU32;
    type U64 = std::sync::atomic::AtomicU64;
    const SPINS: bool = true;

    #[inline]
    fn header(&self) -> &Header<SharedMem> {
        // SAFETY: the region is valid for at least HEADER_SIZE =
        // size_of::<Header>() bytes (checked before any SharedMem is
        // built), 64-aligned (Region's contract), kept alive by
        // `self.region` for the borrow, and every party accesses the
        // header only through its atomics. `Header<SharedMem>: InPlace`
        // (declared `in_place!`) is checked by `view`'s bound.
        unsafe { crate::segment::view(self.base) }
    }

    #[inline]
    fn cap(&self) -> usize {
        self.cap
    }

    fn lost(&self) -> bool {
        self.region.lost()
    }

    #[inline]
    fn word(&self, off: usize) -> &Self::U64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.cap,
            "ring: bad word offset"
        );
        // SAFETY: in bounds (asserted), 8-aligned (the data area starts at a
        // 64-aligned address + 384), kept alive by `self.region` for the
        // borrow, and accessed by every party only as an AtomicU64 while it
        // is a frame word (its bytes carry payload only in another lap,
        // ordered against this one by the positions' Release/Acquire).
        unsafe { crate::segment::view(self.data_at(off)) }
    }

    #[inline]
    fn write(&self, off: usize, src: &[u8]) {
        assert!(
            off <= self.cap && src.len() <= self.cap - off,
            "ring: bad write"
        );
        // SAFETY: the destination is inside the data area (asserted) and
        // cannot overlap `src`, a Rust slice we hold. The bytes belong to
        // the writer by the ring protocol: to the producer (free space past
        // `tail`), or, for the cursor of a frame taken in parts, to the
        // consumer side that holds the frame (`Consumer::keep_part`, under
        // the side lock, no slice of the frame alive); a raw copy forms no
        // reference to them.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.data_at(off), src.len()) };
    }

    /// No zero-fill first: the copy initialises the bytes.
    #[inline]
    #[cfg(any(test, feature = "fuzzing"))]
    fn read_into(&self, off: usize, len: usize, dst: &mut Vec<u8>) {
        assert!(off <= self.cap && len <= self.cap - off, "ring: bad read");
        dst.clear();
        dst.reserve(len);
        // SAFETY: the source is inside the data area (asserted); the
        // destination is `dst`'s spare capacity, at least `len` bytes after
        // `reserve`, and cannot overlap the region. The bytes are a
        // committed frame the consumer owns until it releases it; a raw
        // copy forms no reference to shared bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.data_at(off), dst.as_mut_ptr(), len) };
        // SAFETY: the first `len` bytes were initialised by the copy above,
        // and `len <= capacity` after `reserve`.
        unsafe { dst.set_len(len) };
    }

    #[inline]
    fn light_fence() {
        crate::sys::fences::light();
    }

    fn heavy_fence() -> bool {
        crate::sys::fences::heavy()
    }

    fn park(word: &Self::U32, expected: u32, timeout: Duration) {
        crate::sys::futex_wait(word, expected, timeout);
    }

    fn wake(word: &Self::U32) {
        crate::sys::futex_wake_all(word);
    }

    fn pid_alive(pid: u32) -> bool {
        crate::sys::pid_alive(pid)
    }
}

/// The loom back-end (tests under `--cfg multiproc_loom` only).
#[cfg(all(test, multiproc_loom))]
pub(in crate::ring) mod model {
    use loom::sync::atomic::{AtomicU32, AtomicU64};

    use super::*;
    use crate::error::{Error, ErrorKind, Result};
    use crate::ring::{check_capacity, region_size, Line, Meta, Mode, Ring, Side, Waiters};

    /// A ring's header and data area as loom atomics.
    pub(in crate::ring) struct ModelMem {
        header: Header<ModelMem>,
        words: Box<[AtomicU64]>,
        cap: usize,
    }

    impl Ring<ModelMem> {
        /// A new ring inside a loom model.
        pub(in crate::ring) fn in_model(capacity: usize, mode: Mode) -> Result<Self> {
            check_capacity(capacity, region_size(capacity), 0)
                .map_err(|m| Error::new(ErrorKind::InvalidState, m))?;
            let side = || Side {
                pos: AtomicU64::new(0),
                lock: AtomicU32::new(0),
                lock_waiters: AtomicU32::new(0),
                pid: AtomicU32::new(0),
                claimed: AtomicU32::new(0),
            };
            let waiters = || Waiters {
                seq: AtomicU32::new(0),
                sleepers: AtomicU32::new(0),
            };
            let header = Header {
                meta: Line(Meta {
                    magic: AtomicU64::new(0),
                    capacity: AtomicU64::new(0),
                    version: AtomicU32::new(0),
                    mode: AtomicU32::new(0),
                }),
                prod: Line(side()),
                cons: Line(side()),
                cons_wait: Line(waiters()),
                prod_wait: Line(waiters()),
                state: Line(AtomicU32::new(0)),
            };
            let words = (0..capacity / 8).map(|_| AtomicU64::new(0)).collect();
            let mem = ModelMem {
                header,
                words,
                cap: capacity,
            };
            Ok(Ring::init(mem, capacity, mode))
        }
    }

    atomic!(AtomicU32, u32);
    atomic!(AtomicU64, u64);

    impl Memory for ModelMem {
        type U32 = AtomicU32;
        type U64 = AtomicU64;
        const SPINS: bool = false;

        fn header(&self) -> &Header<ModelMem> {
            &self.header
        }

        fn cap(&self) -> usize {
            self.cap
        }

        fn lost(&self) -> bool {
            false
        }

        fn word(&self, off: usize) -> &AtomicU64 {
            assert!(
                off.is_multiple_of(8) && off + 8 <= self.cap,
                "ring: bad word offset"
            );
            &self.words[off / 8]
        }

        // Payload bytes live in atomic words stored Relaxed, so loom can
        // tell when a frame word's Release/Acquire fails to publish them.
        fn write(&self, off: usize, src: &[u8]) {
            assert!(
                off.is_multiple_of(8) && src.len() <= self.cap - off,
                "ring: bad write"
            );
            for (i, chunk) in src.chunks(8).enumerate() {
                let mut w = [0u8; 8];
                w[..chunk.len()].copy_from_slice(chunk);
                // SYNC: Relaxed; published by the Release store of the frame word.
                self.words[off / 8 + i].store(u64::from_le_bytes(w), Ordering::Relaxed);
            }
        }

        fn read_into(&self, off: usize, len: usize, dst: &mut Vec<u8>) {
            assert!(
                off.is_multiple_of(8) && len <= self.cap - off,
                "ring: bad read"
            );
            dst.clear();
            dst.resize(len, 0);
            for (i, chunk) in dst.chunks_mut(8).enumerate() {
                // SYNC: Relaxed; ordered after the Acquire load of the frame word.
                let w = self.words[off / 8 + i]
                    .load(Ordering::Relaxed)
                    .to_le_bytes();
                chunk.copy_from_slice(&w[..chunk.len()]);
            }
        }

        /// Both sides fence fully in the model: it checks the handshake
        /// itself; the asymmetric barrier's cover is the kernel's promise
        /// (`sys::fences`), which loom cannot model.
        fn light_fence() {
            loom::sync::atomic::fence(Ordering::SeqCst);
        }

        fn heavy_fence() -> bool {
            loom::sync::atomic::fence(Ordering::SeqCst);
            true
        }

        fn park(word: &AtomicU32, expected: u32, _timeout: Duration) {
            // SYNC: Relaxed, as the futex's own compare: the caller
            // re-checks its condition with Acquire loads after we return.
            if word.load(Ordering::Relaxed) == expected {
                loom::thread::yield_now();
            }
        }

        fn wake(_word: &AtomicU32) {}

        fn pid_alive(_pid: u32) -> bool {
            true
        }
    }
}
