//! `wsdrain proxy`: wires the client listener, the admin port, the drain controller and
//! the signal handlers into one process, and decides when it exits.
//!
//! After a signal the process exits 0 once the drain is over and no plain HTTP response
//! is in flight, and never later than the
//! drain's own deadline (the one `GET /drain` reports, moved as the drain learns how
//! many connections it has) plus [`drain::EXIT_GRACE`]. The state every task shares is
//! built once in [`Sidecar::new`]; this file only starts the tasks.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::cli::{Mode, ProxyOptions, TlsFlags};
use crate::drain::{self, Drain};
use crate::state::Sidecar;
use crate::tls::{CertPaths, Tls, TlsSettings};
use crate::{
    admin, deletion_cost, heap_trim, in_flight, proxy, rebalance, signals, sockets, tcp_mode,
    workers,
};

/// Runs the sidecar until a signal-triggered drain is over.
pub async fn run(opts: ProxyOptions) -> anyhow::Result<()> {
    let client_listener = sockets::bind(opts.listen, "listen")?;
    let admin_listener = sockets::bind(opts.admin, "admin")?;
    warn_about_fd_limit(opts.max_connections);
    let deletion_cost = if opts.pod_deletion_cost {
        let dir = std::path::Path::new(deletion_cost::SERVICE_ACCOUNT_DIR);
        Some(deletion_cost::ApiTarget::from_env(dir)?)
    } else {
        None
    };
    let sidecar = Sidecar::new(&opts);
    let tls = match tls_settings(&opts.tls, opts.mode)? {
        Some(settings) => {
            let (tls, reloader) = Tls::new(&settings, &sidecar.metrics)
                .context("cannot terminate TLS with the given certificate")?;
            tokio::spawn(reloader.run());
            Some(Arc::new(tls))
        }
        None => None,
    };
    drop(opts);
    let exit = signals::install(sidecar.drain.clone())?;
    let data_threads = workers::start(workers::thread_count()?)?.len();
    let settings = &sidecar.settings;
    match settings.mode {
        Mode::Http => tokio::spawn(proxy::serve(sidecar.clone(), client_listener, tls.clone())),
        Mode::Tcp => tokio::spawn(tcp_mode::serve(
            sidecar.clone(),
            client_listener,
            tls.clone(),
        )),
    };
    if !settings.rebalance.max_age.is_zero() {
        tokio::spawn(rebalance::retire_old_connections(sidecar.clone()));
    }
    tokio::spawn(admin::serve(sidecar.clone(), admin_listener));
    heap_trim::start(sidecar.metrics.clone());
    tokio::spawn(drain::run(sidecar.drain.clone()));
    if let Some(target) = deletion_cost {
        tokio::spawn(deletion_cost::run(
            sidecar.clone(),
            target,
            deletion_cost::INTERVAL,
        ));
    }
    info!(
        mode = ?settings.mode,
        listen = %settings.client.listen,
        upstream = %settings.upstream.addr,
        admin = %settings.admin.addr,
        data_threads,
        tls = tls.is_some(),
        "wsdrain proxy ready"
    );

    let mut exit = exit;
    let _ = exit.wait_for(|signalled| *signalled).await;
    let exit_by = wait_for_drain(&sidecar.drain).await;
    // Plain HTTP responses still streaming finish first (cut at the deadline), and
    // polling clients stop coming back; then client connections take no new request,
    // and the ones that came meanwhile finish.
    let http = &sidecar.http;
    let finished = async {
        http.wait_quiet(in_flight::QUIET).await;
        http.stop_serving();
        tokio::time::sleep(Duration::from_millis(20)).await;
        http.wait_idle().await;
    };
    if tokio::time::timeout_at(exit_by, finished).await.is_err() {
        warn!(
            in_flight = sidecar.http.len(),
            "HTTP responses still in flight at exit"
        );
    }
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

/// The TLS settings the flags ask for; `None` when no certificate is given (plaintext).
fn tls_settings(flags: &TlsFlags, mode: Mode) -> anyhow::Result<Option<TlsSettings>> {
    let paths = match (&flags.tls_dir, &flags.tls_cert, &flags.tls_key) {
        (Some(dir), _, _) => CertPaths {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        },
        (None, Some(cert), Some(key)) => CertPaths {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ if flags.tls_client_ca.is_some() => {
            anyhow::bail!("--tls-client-ca needs a certificate to serve: --tls-dir or --tls-cert")
        }
        _ => return Ok(None),
    };
    Ok(Some(TlsSettings {
        paths,
        client_ca: flags.tls_client_ca.clone(),
        handshake_timeout: flags.tls_handshake_timeout,
        max_handshakes: flags.tls_max_handshakes as usize,
        alpn_http1: mode == Mode::Http,
    }))
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
