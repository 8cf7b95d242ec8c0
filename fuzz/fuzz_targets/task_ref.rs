//! A task reference as the child receives it: decoded, then validated
//! against this binary's image before anything is called.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = multiproc::__fuzz::task_ref(data);
});
