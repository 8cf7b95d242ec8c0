//! A child's outcome frame and the typed result inside it, as the parent
//! decodes them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = multiproc::__fuzz::outcome(data);
});
