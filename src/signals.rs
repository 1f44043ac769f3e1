//! Signals, the kubelet's way of saying the pod is going away.
//!
//! SIGTERM or SIGINT starts the staggered drain; a second one, or SIGQUIT, closes
//! everything at once. A signal also means "exit when the drain is over", which a drain
//! started over HTTP does not: after `/prestop` the sidecar stays up, drained, until
//! the kubelet sends it SIGTERM (native sidecars stop after the app).
//!
//! Flow: signals in on a thread of their own; drain triggers out, and a watch that
//! tells `sidecar.rs` to exit once the drain is over.

use std::sync::Arc;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::watch;
use tracing::info;

use crate::drain::{Drain, Source, Trigger};

/// Installs the handlers. The returned receiver turns true at the first signal.
pub fn install(drain: Arc<Drain>) -> anyhow::Result<watch::Receiver<bool>> {
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGQUIT]).context("installing signal handlers")?;
    let (tx, rx) = watch::channel(false);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut terms = 0;
            for signal in signals.forever() {
                let name = match signal {
                    SIGTERM => "SIGTERM",
                    SIGINT => "SIGINT",
                    _ => "SIGQUIT",
                };
                info!(signal = name, "signal received");
                let how = if signal == SIGQUIT {
                    Trigger::Immediate
                } else {
                    terms += 1;
                    if terms == 1 {
                        Trigger::Graceful
                    } else {
                        Trigger::Immediate
                    }
                };
                drain.trigger(how, Source::Signal);
                tx.send_replace(true);
            }
        })
        .context("starting the signal thread")?;
    Ok(rx)
}
