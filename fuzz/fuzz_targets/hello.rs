//! The first handshake message, as the parent decodes whatever connects to
//! its handshake server first (an impostor included).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = multiproc::__fuzz::hello(data);
});
