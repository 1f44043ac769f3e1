//! `wsdrain proxy`: wires the client listener, the admin port, the drain controller and
//! the signal handlers into one process, and decides when it exits.
//!
//! The process exits 0 once a signal-triggered drain is over, and never later than
//! delay + stagger + close timeout + 1 s after the signal.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::timeout;
use tracing::{info, warn};

use crate::cli::Mode;
use crate::cli::ProxyOptions;
use crate::drain::{self, Drain, DrainSettings, scheduler};
use crate::metrics::Metrics;
use crate::proxy::{self, Shared};
use crate::{admin, heap_trim, rebalance, signals, sockets, tcp_mode};

/// Runs the sidecar until a signal-triggered drain is over.
pub async fn run(opts: ProxyOptions) -> anyhow::Result<()> {
    let client_listener = sockets::bind(opts.listen, "listen")?;
    let admin_listener = sockets::bind(opts.admin, "admin")?;
    warn_about_fd_limit(opts.max_connections);
    let metrics = Metrics::new();
    let drain_state = Arc::new(Drain::default());
    let exit = signals::install(drain_state.clone())?;
    let settings = DrainSettings {
        delay: opts.drain.drain_delay,
        window: opts.drain.drain_window,
        max_rate: opts.drain.drain_max_rate,
        close_timeout: opts.drain.close_timeout,
        reconnect_jitter: opts.drain.reconnect_jitter,
    };
    let shared = Shared::new(opts, metrics.clone(), drain_state.clone());
    match shared.opts.mode {
        Mode::Http => tokio::spawn(proxy::serve(shared.clone(), client_listener)),
        Mode::Tcp => tokio::spawn(tcp_mode::serve(shared.clone(), client_listener)),
    };
    shared
        .metrics
        .max_connections
        .set(i64::from(shared.opts.max_connections));
    if !shared.opts.max_connection_age.is_zero() {
        tokio::spawn(rebalance::retire_old_connections(shared.clone()));
    }
    tokio::spawn(admin::serve(shared.clone(), admin_listener));
    heap_trim::start(shared.metrics.clone());
    tokio::spawn(drain::run(
        drain_state.clone(),
        shared.connections.clone(),
        settings.clone(),
        metrics,
    ));
    info!(
        mode = ?shared.opts.mode,
        listen = %shared.opts.listen,
        upstream = %shared.opts.upstream,
        admin = %shared.opts.admin,
        "wsdrain proxy ready"
    );

    let mut exit = exit;
    let _ = exit.wait_for(|signalled| *signalled).await;
    let open = shared.connections.len();
    let bound = settings.delay
        + scheduler::stagger_length(open, settings.window, settings.max_rate)
        + settings.close_timeout
        + Duration::from_secs(1);
    let exit_by = tokio::time::Instant::now() + bound;
    if timeout(bound, drain_state.wait_done()).await.is_err() {
        warn!(?bound, "drain did not finish in time; exiting anyway");
    }
    // Let pending /prestop callers (the kubelet's hook) get their answer.
    let answered = async {
        while drain_state.prestop_pending() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = tokio::time::timeout_at(exit_by, answered).await;
    info!("wsdrain proxy exiting");
    Ok(())
}

/// Raises the soft open-file limit to the hard limit (what Go and nginx do too): every
/// WebSocket costs two descriptors and the default soft limit is often 1024. Returns
/// the soft limit in force afterwards.
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// Each WebSocket takes two descriptors (client and app); say so at start-up when the
/// limit cannot hold `--max-connections`.
fn warn_about_fd_limit(max_connections: u32) {
    let Some(soft) = raise_fd_limit() else { return };
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
