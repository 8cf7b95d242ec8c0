//! Ring operations against a `VecDeque` model, with arbitrary corruption of
//! frame words and header positions by a "peer".
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    multiproc::__fuzz::ring_ops(data);
});
