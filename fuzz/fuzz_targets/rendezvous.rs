//! The handshake rendezvous a child reads (the newest generation's server
//! name): shared memory that any process of the same user can write.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = multiproc::__fuzz::rendezvous(data);
});
