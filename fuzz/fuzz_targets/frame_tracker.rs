//! cargo-fuzz target: arbitrary bytes through the frame tracker, fed whole and in the
//! relay's chunked way; both must agree and every invariant must hold.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsdrain_fuzz::check_frame_tracker(data);
});
