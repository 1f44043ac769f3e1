//! cargo-fuzz target: arbitrary bytes as a PROXY protocol header (v1 text, v2 binary);
//! `proxy_protocol::parse` must never panic and what it accepts must round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsdrain_fuzz::check_proxy_protocol(data);
});
