//! The worker marker a re-executed child parses from its environment.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = multiproc::__fuzz::marker(s);
    }
});
