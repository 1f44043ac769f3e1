//! AdmissionReview v1 in, AdmissionReview v1 out: the webhook's request handling as a
//! pure function over bytes, so it is tested without a server.
//!
//! The API server rejects a response whose `patch` is not a base64 *string* (some Rust
//! admission types serialize the bytes as an array of numbers), so the response is
//! written with our own small types where `patch` can only be a `String`. The patch is
//! the JSON Patch diff between the pod as received and the pod [`inject_pod`] returns,
//! so the webhook and `wsdrain inject` cannot drift apart.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::metrics::ReviewResult;
use crate::inject::{InjectConfig, Outcome, inject_pod};

/// The only AdmissionReview version served.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Why a request body is not an AdmissionReview we can answer (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("the body is not an AdmissionReview: {0}")]
    Malformed(#[from] serde_json::Error),
    /// Another apiVersion or kind.
    #[error("expected apiVersion {API_VERSION} and kind AdmissionReview, got {0:?} {1:?}")]
    WrongType(String, String),
    /// No `request` field.
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<RequestIn>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    uid: String,
    kind: Gvk,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    dry_run: Option<bool>,
}

#[derive(Deserialize)]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    /// Base64 of the JSON Patch: a string, never an array of numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// What the server logs about one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    /// The AdmissionReview response, serialized.
    pub body: Vec<u8>,
    /// The request's uid.
    pub uid: String,
    /// `namespace/name` of the pod, or the kind of a non-pod object.
    pub object: String,
    /// What happened to the pod; `None` when it was not a pod creation.
    pub outcome: Option<Outcome>,
    /// The request was a dry run (nothing differs but the log line: the webhook has
    /// no side effects, so a dry run gets the same patch a real request would).
    pub dry_run: bool,
}

/// Answers one AdmissionReview. Every well-formed review is allowed: the webhook only
/// ever adds the sidecar, it never blocks a pod.
pub fn review(
    body: &[u8],
    cfg: &InjectConfig,
    namespace_opted_in: bool,
) -> Result<Reviewed, ReviewError> {
    let start = std::time::Instant::now();
    let result = review_inner(body, cfg, namespace_opted_in);
    let counted = match &result {
        Ok(r) => ReviewResult::Answered(r.outcome),
        Err(_) => ReviewResult::Malformed,
    };
    super::metrics::global().observe(counted, start.elapsed());
    result
}

fn review_inner(
    body: &[u8],
    cfg: &InjectConfig,
    namespace_opted_in: bool,
) -> Result<Reviewed, ReviewError> {
    let input: ReviewIn = serde_json::from_slice(body)?;
    if input.api_version != API_VERSION || input.kind != "AdmissionReview" {
        return Err(ReviewError::WrongType(input.api_version, input.kind));
    }
    let request = input.request.ok_or(ReviewError::NoRequest)?;
    let dry_run = request.dry_run.unwrap_or(false);
    let is_pod_create = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.sub_resource.as_deref().unwrap_or("").is_empty()
        && request.operation.as_deref() == Some("CREATE");
    let mut patch = None;
    let mut warnings = Vec::new();
    let mut outcome = None;
    let mut object = request.kind.kind.clone();
    if let (true, Some(original)) = (is_pod_create, request.object.as_ref())
        && let Some(pod) = original.as_object()
    {
        object = pod_identity(pod, request.namespace.as_deref());
        let mut patched = pod.clone();
        let report = inject_pod(&mut patched, cfg, namespace_opted_in);
        outcome = Some(report.outcome);
        warnings = report
            .warnings
            .into_iter()
            .map(|w| format!("wsdrain: {w}"))
            .collect();
        if matches!(report.outcome, Outcome::Injected | Outcome::Upgraded) {
            let ops = json_patch::diff(original, &Value::Object(patched));
            let json = serde_json::to_vec(&ops)?;
            patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
        }
    }
    let out = ReviewOut {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid: &request.uid,
            allowed: true,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            warnings,
        },
    };
    Ok(Reviewed {
        body: serde_json::to_vec(&out)?,
        uid: request.uid.clone(),
        object,
        outcome,
        dry_run,
    })
}

fn pod_identity(pod: &serde_json::Map<String, Value>, namespace: Option<&str>) -> String {
    let meta = pod.get("metadata");
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    let name = field("name")
        .or(field("generateName"))
        .unwrap_or("(unnamed)");
    let ns = namespace.or(field("namespace")).unwrap_or("");
    format!("{ns}/{name}")
}
