//! Memory a ring lives in: a shared-memory mapping in production, a plain
//! heap block in tests (proptest, loom's companions, the fuzzers).
#![allow(unsafe_code)]

/// Alignment every region must have: one cache line, so the ring header's
/// cache-line fields really sit on separate lines.
pub(crate) const REGION_ALIGN: usize = 64;

/// A block of memory that may be shared with other threads or processes.
///
/// # Safety
///
/// An implementor promises that `base()` is non-null, aligned to
/// [`REGION_ALIGN`], valid for reads and writes of `len()` bytes, that its
/// contents are initialised (any bytes: a fresh mapping is zeroed) and that
/// both stay the same for as long as the value lives. Other parties may
/// write the bytes at any time; users of a region access it only through raw
/// pointers and atomics, never through `&`/`&mut` references to bytes
/// another party may write.
pub(crate) unsafe trait Region: Send + Sync + 'static {
    /// Start of the block.
    fn base(&self) -> *mut u8;
    /// Size of the block in bytes, as this process mapped it.
    fn len(&self) -> usize;
    /// Whether another process shrank the memory under this region, so it
    /// holds private zeros now (see `sys::sigbus`). Heap blocks never are.
    fn lost(&self) -> bool {
        false
    }
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use heap::HeapRegion;

/// The heap region: the tests' and the fuzzers' memory (a ring in
/// production lives in a segment).
#[cfg(any(test, feature = "fuzzing"))]
mod heap {
    use std::alloc::{alloc_zeroed, dealloc, Layout};
    use std::ptr::NonNull;

    use super::{Region, REGION_ALIGN};

    /// A zeroed, 64-byte-aligned heap block: a region for in-process use.
    pub(crate) struct HeapRegion {
        ptr: NonNull<u8>,
        layout: Layout,
    }

    // SAFETY: the block is owned by the value and only reached through raw
    // pointers and atomics by its users (see `Region`), so sharing or moving the
    // handle across threads is fine.
    unsafe impl Send for HeapRegion {}
    // SAFETY: as for `Send`: `&HeapRegion` hands out only a raw pointer.
    unsafe impl Sync for HeapRegion {}

    impl HeapRegion {
        /// A zeroed block of `len` bytes (at least one byte is allocated).
        pub(crate) fn new(len: usize) -> HeapRegion {
            let layout =
                Layout::from_size_align(len.max(1), REGION_ALIGN).expect("region too large");
            // SAFETY: `layout` has a non-zero size.
            let raw = unsafe { alloc_zeroed(layout) };
            let ptr = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
            HeapRegion { ptr, layout }
        }
    }

    impl Drop for HeapRegion {
        fn drop(&mut self) {
            // SAFETY: `ptr` came from `alloc_zeroed(self.layout)` and is freed
            // once, here.
            unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
        }
    }

    // SAFETY: `ptr` is a live allocation of `layout.size() >= len` bytes,
    // aligned to REGION_ALIGN, zero-initialised, freed only on drop.
    unsafe impl Region for HeapRegion {
        fn base(&self) -> *mut u8 {
            self.ptr.as_ptr()
        }
        fn len(&self) -> usize {
            self.layout.size()
        }
    }
}
