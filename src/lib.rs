//! wsdrain: a per-pod WebSocket sidecar that ends reconnect storms.
//!
//! The binary's verbs live in `main.rs`; this library holds the parts, each in a module
//! named for the one thing it does.

pub mod accept;
pub mod admin;
pub mod admin_token;
pub mod analyze;
pub mod body;
pub mod buffer_pool;
pub mod build_info;
pub mod cli;
pub mod conn;
pub mod connections;
pub mod dechunk;
pub mod deletion_cost;
pub mod demo;
pub mod drain;
pub mod drain_client;
pub mod frame_tracker;
pub mod heap_trim;
pub mod hint;
pub mod in_flight;
pub mod inject;
pub mod install;
pub mod log_limit;
pub mod logging;
pub mod metrics;
pub mod per_thread_counter;
pub mod proxy;
pub mod proxy_protocol;
pub mod rebalance;
pub mod relay;
pub mod sidecar;
pub mod signals;
pub mod sockets;
pub mod sse_tracker;
pub mod state;
pub mod tcp_mode;
pub mod tls;
pub mod values;
pub mod waiting_room;
pub mod webhook;
pub mod workers;
