//! cargo-fuzz target: arbitrary bytes as a Server-Sent Events stream from the app;
//! `SseTracker` must find the same boundaries however the bytes are split, and its
//! closing suffix must never dispatch an open event.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsdrain_fuzz::check_sse_tracker(data);
});
