//! wsdrain: a per-pod WebSocket sidecar that ends reconnect storms.
//!
//! The binary's `main.rs` parses the command line and calls one verb; this library
//! holds the verbs and the parts they wire, each in a module named for the one thing it
//! does. No part imports a verb, and no two modules import each other in a cycle
//! (`scripts/check-module-cycles`).

// The command line: every verb's flags, the value parsers they share with the
// injector's annotations, and what the build says about itself.

pub mod build_info;
pub mod cli;
pub mod values;

// The verbs: each runs one `wsdrain` subcommand (the webhook, `install` and `analyze`
// build on the injector).

/// `wsdrain analyze`.
pub mod analyze;
/// `wsdrain demo`.
pub mod demo;
/// `wsdrain drain`.
pub mod drain_client;
/// `wsdrain inject` and `uninject` (the injector the webhook also calls).
pub mod inject;
/// `wsdrain install`.
pub mod install;
/// `wsdrain proxy`.
pub mod sidecar;
/// `wsdrain webhook`.
pub mod webhook;

// The sidecar's parts: the listeners and data-path threads, TLS and PROXY headers, the
// HTTP front end and TCP mode, one connection's life and the registry of them, the
// relay and its trackers, the drain and what steers it, the admin port and metrics.

pub mod accept;
pub mod admin;
pub mod admin_token;
pub mod buffer_pool;
pub mod connection;
pub mod dechunk;
pub mod deletion_cost;
pub mod drain;
pub mod frame_tracker;
pub mod hint;
pub mod in_flight;
pub mod metrics;
pub mod per_thread_counter;
pub mod proxy;
pub mod proxy_protocol;
pub mod rebalance;
pub mod registry;
pub mod relay;
pub mod signals;
pub mod sse_tracker;
pub mod state;
pub mod tcp_mode;
pub mod tls;
pub mod waiting_room;
pub mod workers;

// Plumbing shared by verbs and parts.

pub mod body;
pub mod heap_trim;
pub mod log_limit;
pub mod logging;
pub mod sockets;
