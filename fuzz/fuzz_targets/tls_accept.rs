//! cargo-fuzz target: arbitrary bytes as a client's first TLS flight into wsdrain's
//! accept path; the handshake must end and never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wsdrain_fuzz::check_tls_accept(data);
});
