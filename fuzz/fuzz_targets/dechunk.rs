//! cargo-fuzz target: arbitrary bytes as a chunked body from the app; `Dechunk` must
//! give the same data and verdict however the bytes are split, and never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsdrain_fuzz::check_dechunk(data);
});
