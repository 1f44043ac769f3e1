//! Prometheus metrics with the names fixed by the product brief.
//!
//! The HPA adapter rule, the alerts and the dashboard under `deploy/` query these exact
//! names, so they are a contract. Label children used on the hot path are resolved
//! once here; a relay adds its counts per read, not per frame, to per-thread counters
//! that `/metrics` sums (see `per_thread_counter`).
//! Label values of errors and rejections come from the enums in `metrics/kinds.rs`.
//!
//! Flow: every part of the sidecar writes counts in through [`Metrics`]; the admin
//! port's `/metrics` reads them out as Prometheus text.

mod kinds;

use std::sync::{Arc, Mutex};

use crate::per_thread_counter::PerThreadCounter;
use crate::registry::CloseReason;
pub use kinds::{ErrorKind, Initiator, Rejection, WaitingStage};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Direction label values.
pub const CLIENT_TO_APP: &str = "client_to_app";
/// Direction label values.
pub const APP_TO_CLIENT: &str = "app_to_client";

/// Counters for one direction, resolved once. The three a relay touches per message
/// are per-thread ([`PerThreadCounter`]), copied into their Prometheus series when
/// `/metrics` is rendered, so data-path threads never share a counter's cache line.
#[derive(Clone)]
pub struct DirectionMetrics {
    /// Complete data messages relayed.
    pub messages: PerThreadCounter,
    /// Wire bytes relayed.
    pub bytes: PerThreadCounter,
    /// Data frames that could not be delivered because the receiver had closed.
    pub dropped_frames: PerThreadCounter,
    /// `websocket_errors_total{kind="protocol_violation"}`: frames breaking RFC 6455.
    pub violations: IntCounter,
    /// The exported series of the three per-thread counters, in the same order.
    exported: [IntCounter; 3],
}

impl DirectionMetrics {
    /// Brings the exported series up to the per-thread sums (called under the render
    /// lock, so two scrapes cannot both add the same difference).
    fn publish(&self) {
        let sums = [&self.messages, &self.bytes, &self.dropped_frames];
        for (sum, series) in sums.iter().zip(&self.exported) {
            let total = u64::try_from(sum.get()).unwrap_or(0);
            series.inc_by(total.saturating_sub(series.get()));
        }
    }
}

/// Every metric wsdrain exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `websocket_connections_active`: the number the HPA scales on.
    pub active: IntGauge,
    /// `websocket_connections_total`: upgrades completed.
    pub total: IntCounter,
    /// client → app counters.
    pub client_to_app: DirectionMetrics,
    /// app → client counters.
    pub app_to_client: DirectionMetrics,
    /// `websocket_errors_total{kind}`.
    pub errors: IntCounterVec,
    /// `websocket_connection_duration_seconds`.
    pub duration: Histogram,
    /// `websocket_close_total{code,initiator}`.
    pub closes: IntCounterVec,
    /// `wsdrain_draining`: 1 from the drain trigger on.
    pub draining: IntGauge,
    /// `wsdrain_drain_remaining_connections`.
    pub drain_remaining: IntGauge,
    /// `wsdrain_drain_over_budget`: 1 while a drain closes faster than its share of
    /// `--fleet-max-rate`, because the grace period leaves no more room.
    pub drain_over_budget: IntGauge,
    /// `wsdrain_drain_closed_total`: connections closed by a drain (schedule or deadline).
    pub drain_closed: IntCounter,
    /// `wsdrain_upgrades_rejected_total{reason}`.
    pub upgrades_rejected: IntCounterVec,
    /// `wsdrain_http_requests_total{code}`: plain HTTP requests proxied.
    pub http_requests: IntCounterVec,
    /// `wsdrain_drain_progress_ratio`: closed / connections at stagger start.
    pub drain_progress: Gauge,
    /// `wsdrain_rebalance_closed_total{reason}`: closes for age or shedding.
    pub rebalanced: IntCounterVec,
    /// `wsdrain_max_connections`: the configured limit, so alerts need no constant.
    pub max_connections: IntGauge,
    /// `wsdrain_upstream_up`: 1 when the app accepted TCP at the last attempt. Fed by
    /// `/readyz` and by real connections, so wsdrain adds no probes of its own.
    pub upstream_up: IntGauge,
    /// `wsdrain_relay_buffers_in_use`: read buffers borrowed by relays (0 when all idle).
    pub relay_buffers: IntGauge,
    /// `wsdrain_waiting_shed_total{stage}`: connections shed (oldest first) while
    /// waiting for their first bytes, because newer ones needed the stage's places.
    pub waiting_shed: IntCounterVec,
    /// `wsdrain_http_requests_in_flight`: plain requests whose response is not over.
    pub http_in_flight: IntGauge,
    /// `wsdrain_http_bytes_total{direction}`, client → app: request body bytes.
    pub http_bytes_in: IntCounter,
    /// `wsdrain_http_bytes_total{direction}`, app → client: response body bytes.
    pub http_bytes_out: IntCounter,
    /// `wsdrain_http_responses_cut_total`: responses still going at the drain deadline.
    pub http_cut: IntCounter,
    /// `wsdrain_sse_streams_active`: event streams in the drain plan (registered).
    pub sse_active: IntGauge,
    /// `wsdrain_sse_streams_refused_total{reason}`: event streams the drain had no place
    /// for (`draining`: the registry was sealed; `max_connections`), ended at once with
    /// a hint.
    pub sse_refused: IntCounterVec,
    /// `wsdrain_sse_streams_compressed_total`: event streams with a `Content-Encoding`,
    /// which cannot be ended at an event boundary and are left to finish.
    pub sse_compressed: IntCounter,
    /// Serialises [`Metrics::render`]: publishing per-thread sums is read-then-add.
    render_lock: Arc<Mutex<()>>,
}

/// The metrics of TLS termination, registered only when TLS is on (so an expiry alert
/// never sees a certificate that does not exist).
#[derive(Clone)]
pub struct TlsMetrics {
    /// `wsdrain_tls_reload_errors_total`: new certificate pairs refused.
    pub reload_errors: IntCounter,
    /// `wsdrain_tls_cert_not_after_seconds`: the serving certificate's expiry.
    pub not_after: IntGauge,
}

/// Registers `metric` in `registry` and hands it back. Names are fixed and unique in
/// this file, so registration cannot fail at run time; a clash is a bug caught by every
/// test that builds `Metrics`.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: C,
) -> C {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are fixed and unique");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help).expect("valid metric"))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &[&str]) -> IntCounterVec {
    registered(
        registry,
        IntCounterVec::new(Opts::new(name, help), label).expect("valid metric"),
    )
}

impl Metrics {
    /// Creates and registers all metrics, plus process metrics on Linux. Every error
    /// kind and rejection reason starts at 0, so its series exists before it happens.
    pub fn new() -> Self {
        let registry = Registry::new();
        let r = &registry;
        let active = gauge(
            r,
            "websocket_connections_active",
            "WebSocket connections open through this sidecar.",
        );
        let total = counter(
            r,
            "websocket_connections_total",
            "WebSocket connections established (101 relayed).",
        );
        let messages = counter_vec(
            r,
            "websocket_messages_total",
            "WebSocket data messages relayed.",
            &["direction"],
        );
        let bytes = counter_vec(
            r,
            "websocket_bytes_total",
            "WebSocket bytes relayed (frames on the wire).",
            &["direction"],
        );
        let dropped = counter_vec(
            r,
            "wsdrain_dropped_frames_total",
            "Data frames not delivered because the receiving side had already closed.",
            &["direction"],
        );
        let errors = counter_vec(r, "websocket_errors_total", "Errors by kind.", &["kind"]);
        for kind in ErrorKind::ALL {
            errors.with_label_values(&[kind.as_str()]);
        }
        let duration = registered(
            r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "websocket_connection_duration_seconds",
                    "Lifetime of WebSocket connections.",
                )
                .buckets(vec![
                    0.1, 1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0,
                ]),
            )
            .expect("valid metric"),
        );
        let closes = counter_vec(
            r,
            "websocket_close_total",
            "WebSocket connections closed, by first close code and who sent it (client, app, proxy).",
            &["code", "initiator"],
        );
        let draining = gauge(r, "wsdrain_draining", "1 while the sidecar drains.");
        let drain_remaining = gauge(
            r,
            "wsdrain_drain_remaining_connections",
            "Connections still open during a drain.",
        );
        let drain_over_budget = gauge(
            r,
            "wsdrain_drain_over_budget",
            "1 while a drain closes faster than this pod's share of --fleet-max-rate (the grace period leaves no more room).",
        );
        let drain_closed = counter(
            r,
            "wsdrain_drain_closed_total",
            "Connections closed by a drain.",
        );
        let upgrades_rejected = counter_vec(
            r,
            "wsdrain_upgrades_rejected_total",
            "WebSocket upgrades (TCP mode: connections) that did not become connections, by reason: wsdrain's own refusals, or app (the app answered other than 101).",
            &["reason"],
        );
        for reason in Rejection::ALL {
            upgrades_rejected.with_label_values(&[reason.as_str()]);
        }
        let http_requests = counter_vec(
            r,
            "wsdrain_http_requests_total",
            "Plain HTTP requests proxied, by status class.",
            &["code"],
        );
        let drain_progress = registered(
            r,
            Gauge::new(
                "wsdrain_drain_progress_ratio",
                "Share of the connections open at stagger start that are closed.",
            )
            .expect("valid metric"),
        );
        let rebalanced = counter_vec(
            r,
            "wsdrain_rebalance_closed_total",
            "Connections asked to close to rebalance load (max_age, shed).",
            &["reason"],
        );
        let max_connections = gauge(
            r,
            "wsdrain_max_connections",
            "The configured --max-connections.",
        );
        let upstream_up = gauge(
            r,
            "wsdrain_upstream_up",
            "1 when the app accepted TCP at the last attempt (each /readyz check and each connection opened to it).",
        );
        let relay_buffers = gauge(
            r,
            "wsdrain_relay_buffers_in_use",
            "Read buffers currently borrowed by relays; idle connections hold none.",
        );
        let build_info = registered(
            r,
            IntGaugeVec::new(
                Opts::new(
                    "wsdrain_build_info",
                    "Always 1; its labels say which build runs (version, git commit).",
                ),
                &["version", "commit"],
            )
            .expect("valid metric"),
        );
        build_info
            .with_label_values(&[crate::build_info::VERSION, crate::build_info::COMMIT])
            .set(1);
        let waiting_shed = counter_vec(
            r,
            "wsdrain_waiting_shed_total",
            "Connections closed while waiting for their first bytes (PROXY header, request head), oldest first, to make room for newer ones.",
            &["stage"],
        );
        for stage in WaitingStage::ALL {
            waiting_shed.with_label_values(&[stage.as_str()]);
        }
        let http_in_flight = gauge(
            r,
            "wsdrain_http_requests_in_flight",
            "Plain HTTP requests whose response has not been written out yet; the process waits for them.",
        );
        let http_bytes = counter_vec(
            r,
            "wsdrain_http_bytes_total",
            "Plain HTTP body bytes relayed (requests client_to_app, responses app_to_client).",
            &["direction"],
        );
        let http_cut = counter(
            r,
            "wsdrain_http_responses_cut_total",
            "Plain HTTP responses (and SSE streams mid-event) cut because the drain's deadline came.",
        );
        let sse_active = gauge(
            r,
            "wsdrain_sse_streams_active",
            "Server-Sent Events streams open and in the drain plan.",
        );
        let sse_refused = counter_vec(
            r,
            "wsdrain_sse_streams_refused_total",
            "Server-Sent Events streams ended at once with a retry hint because the drain had no place for them, by reason: draining (the registry was sealed) or max_connections.",
            &["reason"],
        );
        for reason in [Rejection::Draining, Rejection::MaxConnections] {
            sse_refused.with_label_values(&[reason.as_str()]);
        }
        let sse_compressed = counter(
            r,
            "wsdrain_sse_streams_compressed_total",
            "Server-Sent Events streams with a Content-Encoding: left to finish until the drain deadline.",
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process metrics register once");

        let direction = |d: &str| DirectionMetrics {
            messages: PerThreadCounter::default(),
            bytes: PerThreadCounter::default(),
            dropped_frames: PerThreadCounter::default(),
            violations: errors.with_label_values(&[ErrorKind::ProtocolViolation.as_str()]),
            exported: [
                messages.with_label_values(&[d]),
                bytes.with_label_values(&[d]),
                dropped.with_label_values(&[d]),
            ],
        };
        Metrics {
            client_to_app: direction(CLIENT_TO_APP),
            app_to_client: direction(APP_TO_CLIENT),
            registry,
            active,
            total,
            errors,
            duration,
            closes,
            draining,
            drain_remaining,
            drain_over_budget,
            drain_closed,
            upgrades_rejected,
            http_requests,
            drain_progress,
            rebalanced,
            max_connections,
            upstream_up,
            relay_buffers,
            waiting_shed,
            http_in_flight,
            http_bytes_in: http_bytes.with_label_values(&[CLIENT_TO_APP]),
            http_bytes_out: http_bytes.with_label_values(&[APP_TO_CLIENT]),
            http_cut,
            sse_active,
            sse_refused,
            sse_compressed,
            render_lock: Arc::default(),
        }
    }

    /// Registers the TLS metrics; called once, when the proxy terminates TLS.
    pub fn tls(&self) -> TlsMetrics {
        let r = &self.registry;
        TlsMetrics {
            reload_errors: counter(
                r,
                "wsdrain_tls_reload_errors_total",
                "New TLS certificate/key pairs refused on reload (the previous pair stays in use).",
            ),
            not_after: gauge(
                r,
                "wsdrain_tls_cert_not_after_seconds",
                "Expiry (notAfter, Unix seconds) of the TLS certificate being served.",
            ),
        }
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: ErrorKind) {
        self.errors.with_label_values(&[kind.as_str()]).inc();
    }

    /// Counts a connection shed while waiting in `stage`.
    pub fn shed_waiting(&self, stage: WaitingStage) {
        self.waiting_shed.with_label_values(&[stage.as_str()]).inc();
    }

    /// Counts an upgrade (TCP mode: a connection) refused for `reason`.
    pub fn rejected(&self, reason: Rejection) {
        self.upgrades_rejected
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Counts a close asked for to rebalance load (`max_age` or `shed`).
    pub fn rebalance_close(&self, reason: CloseReason) {
        let label = match reason {
            CloseReason::MaxAge => "max_age",
            CloseReason::Shed => "shed",
            // Never called for the drain (counted in `wsdrain_drain_closed_total`).
            CloseReason::Drain => "drain",
        };
        self.rebalanced.with_label_values(&[label]).inc();
    }

    /// Counts a close by its first close frame.
    pub fn close(&self, code: Option<u16>, initiator: Initiator) {
        self.closes
            .with_label_values(&[&close_code_label(code), initiator.as_str()])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let _publishing = self.render_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.client_to_app.publish();
        self.app_to_client.publish();
        self.relay_buffers.set(crate::buffer_pool::in_use());
        let mut out = Vec::with_capacity(8192);
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps the `code` label bounded: the registered codes exactly, the private ranges
/// folded to `3xxx`/`4xxx`, `none` for a close without code, `invalid` for the rest.
fn close_code_label(code: Option<u16>) -> String {
    match code {
        None => "none".into(),
        Some(c @ 1000..=1015) => c.to_string(),
        Some(3000..=3999) => "3xxx".into(),
        Some(4000..=4999) => "4xxx".into(),
        Some(_) => "invalid".into(),
    }
}
