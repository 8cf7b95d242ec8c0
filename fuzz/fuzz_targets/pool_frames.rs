//! The pool's frames as workers and the parent decode them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = multiproc::__fuzz::pool_frames(data);
});
