//! `--mode tcp`: the sidecar as a byte relay for any TCP protocol (MQTT, raw sockets,
//! TLS passthrough), with the same connection counting, limits, admin port and drain.
//!
//! Without frames there is no close frame to send: a drained connection gets a FIN
//! (half-close) at its scheduled time, and the app side is closed after the client's
//! own FIN or the close timeout. Over `--max-connections` or during the stagger a new
//! connection is closed at once (nothing can be said to it at this layer).

use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info_span, warn};

use crate::log_limit::LogLimit;
use crate::proxy::{Shared, relay_connection};

/// Accepts client connections until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                shared.metrics.error("accept");
                if let Some(folded) = crate::proxy::ACCEPT_LOG.allow() {
                    warn!(error = %e, folded, "accept failed");
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = shared.connections.next_id();
        let shared = shared.clone();
        tokio::spawn(
            async move {
                let Some(client) = shared.accept_client(&mut stream, peer).await else {
                    return;
                };
                let rejected = |reason: &str| {
                    shared
                        .metrics
                        .upgrades_rejected
                        .with_label_values(&[reason])
                        .inc();
                    debug!(reason, "connection refused");
                };
                if shared.drain.rejects_upgrades() {
                    return rejected("draining");
                }
                let max = shared.opts.max_connections as usize;
                let Some(registration) = shared.connections.register(id, max) else {
                    return rejected("max_connections");
                };
                let app = match shared.connect_app(client).await {
                    Ok(app) => app,
                    Err(why) => {
                        shared.metrics.error("upstream_connect");
                        static LIMIT: LogLimit = LogLimit::new();
                        if let Some(folded) = LIMIT.allow() {
                            warn!(upstream = %shared.opts.upstream, folded, "connection refused: upstream {why}");
                        }
                        return rejected("upstream_unavailable");
                    }
                };
                relay_connection(
                    &shared,
                    registration,
                    stream,
                    Bytes::new(),
                    app,
                    Bytes::new(),
                )
                .await;
            }
            .instrument(info_span!("conn", id, %peer)),
        );
    }
}
