//! The webhook's own metrics, served at `GET /metrics` on its HTTPS port.
//!
//! With `failurePolicy: Ignore` a broken webhook fails silently: pods start without the
//! sidecar and nothing is red. Counting reviews by result (and how long they take, against
//! the configuration's 5 s timeout) is what lets an alert notice that pods stopped being
//! injected. Kept in its own registry, apart from the sidecar's.
//!
//! Flow: the router counts each review in; `GET /metrics` reads them out.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::inject::Outcome;

/// The webhook's metrics.
pub struct WebhookMetrics {
    registry: Registry,
    reviews: IntCounterVec,
    duration: HistogramVec,
    refused: IntCounterVec,
}

/// What became of one review, as the `result` label counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewResult {
    /// Answered: what happened to the pod (`None`: not a pod creation).
    Answered(Option<Outcome>),
    /// The body was not an AdmissionReview (HTTP 400).
    Malformed,
}

impl ReviewResult {
    /// The `result` label: what happened to the pod, or why nothing did.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewResult::Answered(Some(Outcome::Injected)) => "injected",
            ReviewResult::Answered(Some(Outcome::Upgraded)) => "upgraded",
            ReviewResult::Answered(Some(Outcome::AlreadyInjected)) => "already_injected",
            ReviewResult::Answered(Some(Outcome::OptedOut)) => "opted_out",
            ReviewResult::Answered(Some(Outcome::NotOptedIn)) => "not_opted_in",
            ReviewResult::Answered(Some(Outcome::Refused)) => "refused",
            ReviewResult::Answered(None) => "not_a_pod_creation",
            ReviewResult::Malformed => "malformed",
        }
    }
}

/// Where a connection was turned away before it could send a review, as counted in
/// `wsdrain_webhook_connections_refused_total{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedStage {
    /// Shed (oldest first) while still in its TLS handshake, to make room for newer
    /// ones, or out of time for it.
    TlsHandshake,
    /// TLS done, but every serving place was taken.
    Served,
}

impl RefusedStage {
    /// Every stage, so each series exists at 0 from the first scrape.
    pub const ALL: [RefusedStage; 2] = [RefusedStage::TlsHandshake, RefusedStage::Served];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusedStage::TlsHandshake => "tls_handshake",
            RefusedStage::Served => "served",
        }
    }
}

impl WebhookMetrics {
    fn new() -> Self {
        let registry = Registry::new();
        let reviews = IntCounterVec::new(
            Opts::new(
                "wsdrain_webhook_reviews_total",
                "Admission reviews answered, by result (malformed = HTTP 400).",
            ),
            &["result"],
        )
        .expect("valid metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "wsdrain_webhook_review_duration_seconds",
                "Time to answer one admission review, body read excluded.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            &["result"],
        )
        .expect("valid metric definition");
        let refused = IntCounterVec::new(
            Opts::new(
                "wsdrain_webhook_connections_refused_total",
                "Connections closed before they could send a review: shed while in the TLS handshake (oldest first) or out of time for it, or refused with every serving place taken.",
            ),
            &["stage"],
        )
        .expect("valid metric definition");
        for stage in RefusedStage::ALL {
            refused.with_label_values(&[stage.as_str()]);
        }
        for m in [
            Box::new(reviews.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(refused.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        WebhookMetrics {
            registry,
            reviews,
            duration,
            refused,
        }
    }

    /// Counts one review with its result and duration.
    pub fn observe(&self, result: ReviewResult, took: Duration) {
        let label = result.as_str();
        self.reviews.with_label_values(&[label]).inc();
        self.duration
            .with_label_values(&[label])
            .observe(took.as_secs_f64());
    }

    /// Counts a connection turned away at `stage`.
    pub fn refused(&self, stage: RefusedStage) {
        self.refused.with_label_values(&[stage.as_str()]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The process-wide webhook metrics.
pub fn global() -> &'static WebhookMetrics {
    static METRICS: OnceLock<WebhookMetrics> = OnceLock::new();
    METRICS.get_or_init(WebhookMetrics::new)
}

/// `GET /metrics`.
pub fn response() -> hyper::Response<crate::body::Body> {
    crate::body::response(
        hyper::StatusCode::OK,
        "text/plain; version=0.0.4",
        global().render(),
    )
}
