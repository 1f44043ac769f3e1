//! Shared harness for the socket-level tests, one file per job: a wsdrain process on free
//! loopback ports (`proxy`), raw HTTP (`http`), WebSocket frames by hand (`frames`), raw
//! clients and the healthy connection (`client`), a strict hand-written app whose
//! behaviour is chosen by the request path (`app`), an app that records request heads
//! (`capture_app`), a `wsdrain webhook` process (`webhook`), and an app that logs what
//! reaches it (`frame_log`). Everything is bounded in time.

#![allow(dead_code)]

pub mod app;
pub mod capture_app;
pub mod client;
pub mod frame_log;
pub mod frames;
pub mod http;
pub mod proxy;
pub mod webhook;

use std::time::Duration;

// Each test binary uses some of these; the rest would warn as unused there.
#[allow(unused_imports)]
pub use app::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use frames::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use proxy::*;

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// The mask every client frame in these tests carries (RFC 6455 requires one).
pub const MASK: Option<[u8; 4]> = Some([0xa1, 0xb2, 0xc3, 0xd4]);

/// The `Sec-WebSocket-Key` of RFC 6455's example handshake.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
