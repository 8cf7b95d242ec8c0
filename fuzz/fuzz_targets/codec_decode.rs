//! Frame payloads as the codec decodes them (postcard and `Pod` paths).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = multiproc::__fuzz::codec_decode(data);
});
