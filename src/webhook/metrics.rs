//! The webhook's own metrics, served at `GET /metrics` on its HTTPS port.
//!
//! With `failurePolicy: Ignore` a broken webhook fails silently: pods start without the
//! sidecar and nothing is red. Counting reviews by result (and how long they take, against
//! the configuration's 5 s timeout) is what lets an alert notice that pods stopped being
//! injected. Kept in its own registry, apart from the sidecar's.

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
}

/// The `result` label of one review: what happened to the pod, or why nothing did.
pub fn result_label(outcome: Option<Outcome>) -> &'static str {
    match outcome {
        Some(Outcome::Injected) => "injected",
        Some(Outcome::Upgraded) => "upgraded",
        Some(Outcome::AlreadyInjected) => "already_injected",
        Some(Outcome::OptedOut) => "opted_out",
        Some(Outcome::NotOptedIn) => "not_opted_in",
        Some(Outcome::Refused) => "refused",
        None => "not_a_pod_creation",
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
        for m in [
            Box::new(reviews.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        WebhookMetrics {
            registry,
            reviews,
            duration,
        }
    }

    /// Counts one review with its result and duration.
    pub fn observe(&self, result: &str, took: Duration) {
        self.reviews.with_label_values(&[result]).inc();
        self.duration
            .with_label_values(&[result])
            .observe(took.as_secs_f64());
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
