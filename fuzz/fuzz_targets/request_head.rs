//! cargo-fuzz target: arbitrary bytes as a client's request to a real in-process proxy
//! (hyper server, routing, upgrade and forward paths, a tiny app behind it).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsdrain_fuzz::check_request_head(data);
});
