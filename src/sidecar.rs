//! `wsdrain proxy`: wires the client listener, the admin port, the drain controller and
//! the signal handlers into one process, and decides when it exits.
//!
//! After a signal the process exits 0 once the drain is over, and never later than the
//! drain's own deadline (the one `GET /drain` reports, moved as the drain learns how
//! many connections it has) plus [`drain::EXIT_GRACE`]. The state every task shares is
//! built once in [`Sidecar::new`]; this file only starts the tasks.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::cli::{Mode, ProxyOptions};
use crate::drain::{self, Drain};
use crate::state::Sidecar;
use crate::{admin, heap_trim, proxy, rebalance, signals, sockets, tcp_mode};

/// Runs the sidecar until a signal-triggered drain is over.
pub async fn run(opts: ProxyOptions) -> anyhow::Result<()> {
    let client_listener = sockets::bind(opts.listen, "listen")?;
    let admin_listener = sockets::bind(opts.admin, "admin")?;
    warn_about_fd_limit(opts.max_connections);
    let sidecar = Sidecar::new(&opts);
    drop(opts);
    let exit = signals::install(sidecar.drain.clone())?;
    let settings = &sidecar.settings;
    match settings.mode {
        Mode::Http => tokio::spawn(proxy::serve(sidecar.clone(), client_listener)),
        Mode::Tcp => tokio::spawn(tcp_mode::serve(sidecar.clone(), client_listener)),
    };
    if !settings.max_connection_age.is_zero() {
        tokio::spawn(rebalance::retire_old_connections(sidecar.clone()));
    }
    tokio::spawn(admin::serve(sidecar.clone(), admin_listener));
    heap_trim::start(sidecar.metrics.clone());
    tokio::spawn(drain::run(sidecar.drain.clone()));
    info!(
        mode = ?settings.mode,
        listen = %settings.listen,
        upstream = %settings.upstream,
        admin = %settings.admin,
        "wsdrain proxy ready"
    );

    let mut exit = exit;
    let _ = exit.wait_for(|signalled| *signalled).await;
    let exit_by = wait_for_drain(&sidecar.drain).await;
    // Let pending /prestop callers (the kubelet's hook) get their answer.
    let answered = async {
        while sidecar.drain.prestop_pending() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = tokio::time::timeout_at(exit_by, answered).await;
    info!("wsdrain proxy exiting");
    Ok(())
}

/// Waits until the drain is over, or its deadline plus [`drain::EXIT_GRACE`] has passed,
/// following the deadline as it moves. Returns the instant the process must be gone by.
async fn wait_for_drain(drain: &Drain) -> Instant {
    loop {
        let exit_by = drain
            .deadline()
            .map_or_else(Instant::now, |d| d + drain::EXIT_GRACE);
        tokio::select! {
            _ = drain.wait_done() => return exit_by,
            _ = drain.deadline_changed() => continue,
            _ = tokio::time::sleep_until(exit_by) => {
                // The deadline may have moved just now; only a deadline that stood is final.
                if drain.deadline().is_some_and(|d| d + drain::EXIT_GRACE > Instant::now()) {
                    continue;
                }
                warn!("drain did not finish by its deadline; exiting anyway");
                return exit_by;
            }
        }
    }
}

/// Each WebSocket takes two descriptors (client and app); say so at start-up when the
/// limit cannot hold `--max-connections`.
fn warn_about_fd_limit(max_connections: u32) {
    let Some(soft) = sockets::raise_fd_limit() else {
        return;
    };
    let needed = u64::from(max_connections) * 2 + 64;
    if soft < needed {
        warn!(
            fd_limit = soft,
            needed,
            "the open-file limit is below what --max-connections needs (2 per connection); raise it or lower --max-connections"
        );
    } else {
        info!(fd_limit = soft, "open-file limit");
    }
}
