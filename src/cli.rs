//! Command-line interface: the verbs of the product brief and their flags.
//!
//! Every flag has an environment twin `WSDRAIN_<FLAG_NAME>` so the same settings work
//! from a pod spec's `env:` and from a shell. Values are checked here, at the edge, so
//! the layers below receive plain, valid data.
//!
//! Flow: argv and `WSDRAIN_*` in, parsed by [`crate::values`]; the structs out to
//! `main.rs`, which hands each verb its own (the proxy converts its flags once, in
//! `state.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::values::{
    parse_close_code, parse_drain_phase, parse_duration, parse_header_size, parse_jitter,
    parse_keepalive, parse_positive_rate, parse_quantity, parse_rate, parse_size, parse_timeout,
    parse_token,
};

/// wsdrain: a WebSocket sidecar that ends reconnect storms.
#[derive(Debug, Parser)]
#[command(name = "wsdrain", version, about, long_about = None)]
pub struct Cli {
    /// The verb to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs of the brief, plus `demo` for a first look without a cluster.
// Parsed once per process: the size difference between verbs costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar proxy (HTTP/1.1 + WebSocket relay, admin port, drain on SIGTERM).
    Proxy(ProxyOptions),
    /// Ask a running sidecar to drain; with --wait, until it is done.
    Drain(DrainOptions),
    /// Inject the sidecar into Kubernetes YAML or JSON (a file or stdin, to stdout).
    Inject(InjectOptions),
    /// Serve the mutating admission webhook (HTTPS) that injects the sidecar into pods.
    Webhook(WebhookOptions),
    /// Run a demo on this machine: app, sidecar, clients, a drain, and the numbers.
    Demo(DemoOptions),
    /// Remove what `wsdrain inject` added (a file or stdin, to stdout).
    Uninject(UninjectOptions),
    /// Print everything the webhook needs, for `kubectl apply -f -`.
    Install(InstallOptions),
    /// Print version and build information.
    Version,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Logging flags shared by the long-running verbs.
#[derive(Debug, Clone, Args)]
pub struct LogOptions {
    /// Log format.
    #[arg(long, env = "WSDRAIN_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter (tracing-subscriber syntax), e.g. `info` or `wsdrain=debug`.
    #[arg(long, env = "WSDRAIN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// How the proxy relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// HTTP/1.1 and WebSocket, frame-aware (close frames with a reconnect hint).
    Http,
    /// Plain TCP bytes (MQTT, TLS passthrough, ...): a drain closes with a FIN.
    Tcp,
}

/// Drain timing and close frames: flags of `wsdrain proxy`, and the defaults the
/// injector writes into the sidecar's arguments (same names, same env twins).
#[derive(Debug, Clone, Args)]
pub struct DrainFlags {
    /// Announce phase of a drain: /readyz is 503, traffic is still served.
    #[arg(long, env = "WSDRAIN_DRAIN_DELAY", default_value = "5s", value_parser = parse_drain_phase)]
    pub drain_delay: Duration,
    /// Window over which the open connections are closed, evenly spread.
    #[arg(long, env = "WSDRAIN_DRAIN_WINDOW", default_value = "30s", value_parser = parse_drain_phase)]
    pub drain_window: Duration,
    /// Most closes per second during a drain (stretches the window); 0 = no limit.
    #[arg(long, env = "WSDRAIN_DRAIN_MAX_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub drain_max_rate: f64,
    /// After the window, time left for close handshakes before the rest is cut.
    #[arg(long, env = "WSDRAIN_CLOSE_TIMEOUT", default_value = "5s", value_parser = parse_drain_phase)]
    pub close_timeout: Duration,
    /// Close code sent to clients when draining (1012 = Service Restart).
    #[arg(long, env = "WSDRAIN_CLOSE_CODE", default_value_t = 1012, value_parser = parse_close_code)]
    pub close_code: u16,
    /// Upper bound of the reconnect hint `{"reconnect_after_ms":N}`, N drawn per client.
    #[arg(long, env = "WSDRAIN_RECONNECT_JITTER", default_value = "5s", value_parser = parse_jitter)]
    pub reconnect_jitter: Duration,
}

/// Settings of `wsdrain proxy`; also the settings the injector writes into pod specs.
#[derive(Debug, Clone, Args)]
pub struct ProxyOptions {
    /// Relay mode: `http` (HTTP/1.1 + WebSocket) or `tcp` (a byte relay).
    #[arg(long, env = "WSDRAIN_MODE", value_enum, default_value = "http")]
    pub mode: Mode,
    /// Address clients connect to.
    #[arg(long, env = "WSDRAIN_LISTEN", default_value = "0.0.0.0:15080")]
    pub listen: SocketAddr,
    /// The app in the same pod.
    #[arg(long, env = "WSDRAIN_UPSTREAM", default_value = "127.0.0.1:8080")]
    pub upstream: SocketAddr,
    /// Admin address: metrics, health, readiness, drain.
    #[arg(long, env = "WSDRAIN_ADMIN", default_value = "0.0.0.0:15090")]
    pub admin: SocketAddr,
    /// Most WebSocket connections at once; upgrades over it get 503 + Retry-After.
    #[arg(long, env = "WSDRAIN_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Largest request head (request line + headers) accepted; larger gets 431.
    #[arg(long, env = "WSDRAIN_MAX_HEADER_SIZE", default_value = "16KiB", value_parser = parse_header_size)]
    pub max_header_size: usize,
    /// Time a client has to send its request head, and the app to answer an upgrade.
    #[arg(long, env = "WSDRAIN_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub handshake_timeout: Duration,
    /// Largest WebSocket message relayed (either direction); larger ends the connection
    /// with close 1009. 0 = no limit.
    #[arg(long, env = "WSDRAIN_MAX_MESSAGE_SIZE", default_value = "0", value_parser = parse_size)]
    pub max_message_size: u64,
    /// Time the app has to answer a plain HTTP request with its response head; then 504.
    #[arg(long, env = "WSDRAIN_RESPONSE_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    pub response_timeout: Duration,
    /// Time to wait for the app to accept a TCP connection.
    #[arg(long, env = "WSDRAIN_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_timeout)]
    pub connect_timeout: Duration,
    /// Drain timing and close frames.
    #[command(flatten)]
    pub drain: DrainFlags,
    /// File holding the bearer token required by POST /drain, GET /prestop, POST /shed.
    #[arg(long, env = "WSDRAIN_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Send a PROXY protocol header (v1 or v2) to the app on each upstream connection.
    #[arg(long, env = "WSDRAIN_PROXY_PROTOCOL", value_enum)]
    pub proxy_protocol: Option<crate::proxy_protocol::Version>,
    /// Require a PROXY protocol header (v1 or v2) from the load balancer on every client
    /// connection; its address becomes the client address.
    #[arg(long, env = "WSDRAIN_ACCEPT_PROXY_PROTOCOL")]
    pub accept_proxy_protocol: bool,
    /// Close connections older than this with the drain's close frame and hint, so new
    /// pods receive load after a scale-up. 0 = never.
    #[arg(long, env = "WSDRAIN_MAX_CONNECTION_AGE", default_value = "0", value_parser = parse_duration)]
    pub max_connection_age: Duration,
    /// Extra age, drawn per connection in [0, this], so connections opened together do
    /// not age out together.
    #[arg(long, env = "WSDRAIN_MAX_CONNECTION_AGE_JITTER", default_value = "0", value_parser = parse_duration)]
    pub max_connection_age_jitter: Duration,
    /// Most connections closed per second for their age.
    #[arg(long, env = "WSDRAIN_REBALANCE_RATE", default_value_t = 10.0, value_parser = parse_positive_rate)]
    pub rebalance_rate: f64,
    /// Ping a client after this much silence from it; 0 = off (WebSocket mode).
    #[arg(long, env = "WSDRAIN_PING_INTERVAL", default_value = "0", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// Close a client that sends nothing (not even a pong) this long after a ping.
    #[arg(long, env = "WSDRAIN_PING_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub ping_timeout: Duration,
    /// TCP keepalive idle time on client and app sockets; 0 = off.
    #[arg(long, env = "WSDRAIN_TCP_KEEPALIVE", default_value = "60s", value_parser = parse_keepalive)]
    pub tcp_keepalive: Duration,
    /// Logging.
    #[command(flatten)]
    pub log: LogOptions,
}

/// Settings of `wsdrain drain`.
#[derive(Debug, Clone, Args)]
pub struct DrainOptions {
    /// Base URL of the sidecar's admin port.
    #[arg(
        long,
        env = "WSDRAIN_ADMIN_URL",
        default_value = "http://127.0.0.1:15090"
    )]
    pub admin: String,
    /// Block until the drain is over (exit 0) or failed (exit 1).
    #[arg(long, env = "WSDRAIN_WAIT")]
    pub wait: bool,
    /// File holding the admin bearer token.
    #[arg(long, env = "WSDRAIN_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
}

/// What the injector writes into a pod unless the pod's `wsdrain.io/<setting>`
/// annotations say otherwise; shared by `wsdrain inject` and `wsdrain webhook` so both
/// doors inject the same sidecar.
#[derive(Debug, Clone, Args)]
pub struct InjectDefaults {
    /// Sidecar image.
    #[arg(long, env = "WSDRAIN_IMAGE", default_value = concat!("wsdrain/wsdrain:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Pull policy of the sidecar image.
    #[arg(long, env = "WSDRAIN_IMAGE_PULL_POLICY", default_value = "IfNotPresent", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: String,
    /// Port the sidecar listens on for clients (its `--listen` port).
    #[arg(long, env = "WSDRAIN_LISTEN_PORT", default_value_t = 15080, value_parser = clap::value_parser!(u16).range(1..))]
    pub listen_port: u16,
    /// Port of the sidecar's admin endpoints (its `--admin` port).
    #[arg(long, env = "WSDRAIN_ADMIN_PORT", default_value_t = 15090, value_parser = clap::value_parser!(u16).range(1..))]
    pub admin_port: u16,
    /// Drain settings passed to the sidecar.
    #[command(flatten)]
    pub drain: DrainFlags,
    /// Most WebSocket connections at once (sidecar `--max-connections`).
    #[arg(long, env = "WSDRAIN_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Largest message relayed, 0 = no limit (sidecar `--max-message-size`).
    #[arg(long, env = "WSDRAIN_MAX_MESSAGE_SIZE", default_value = "0", value_parser = parse_size)]
    pub max_message_size: u64,
    /// CPU request of the sidecar (a Kubernetes quantity); empty for none.
    #[arg(long, env = "WSDRAIN_CPU_REQUEST", default_value = "50m", value_parser = parse_quantity)]
    pub cpu_request: String,
    /// Memory request of the sidecar; empty for none.
    #[arg(long, env = "WSDRAIN_MEMORY_REQUEST", default_value = "32Mi", value_parser = parse_quantity)]
    pub memory_request: String,
    /// CPU limit of the sidecar; empty (the default) for none, as throttling adds latency.
    #[arg(long, env = "WSDRAIN_CPU_LIMIT", default_value = "", value_parser = parse_quantity)]
    pub cpu_limit: String,
    /// Memory limit of the sidecar; empty for none.
    #[arg(long, env = "WSDRAIN_MEMORY_LIMIT", default_value = "256Mi", value_parser = parse_quantity)]
    pub memory_limit: String,
    /// Tokio worker threads of the sidecar (env TOKIO_WORKER_THREADS in the container),
    /// so a sidecar on a 64-core node does not start 64 threads.
    #[arg(long, env = "WSDRAIN_WORKER_THREADS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub worker_threads: u32,
    /// Inject a classic sidecar (a regular container) instead of a native sidecar
    /// (an init container with `restartPolicy: Always`, Kubernetes >= 1.29).
    #[arg(long, env = "WSDRAIN_CLASSIC")]
    pub classic: bool,
    /// Kubernetes version of the target cluster (e.g. `1.31`). A Service's named
    /// `targetPort` reaches a native sidecar only from 1.32, so below that a pod whose
    /// named port is taken over gets the classic sidecar; below 1.29 every pod does.
    /// Unset: a cluster of 1.32 or later.
    #[arg(long, env = "WSDRAIN_KUBERNETES_VERSION", value_parser = crate::values::parse_kubernetes_version)]
    pub kubernetes_version: Option<u32>,
}

/// The manifests `inject` and `uninject` read.
#[derive(Debug, Clone, Args)]
pub struct InputFile {
    /// File to read (YAML or JSON, multi-document); `-` for stdin.
    #[arg(
        short = 'f',
        long = "filename",
        env = "WSDRAIN_FILENAME",
        default_value = "-"
    )]
    pub filename: PathBuf,
}

/// Settings of `wsdrain inject`.
#[derive(Debug, Clone, Args)]
pub struct InjectOptions {
    /// The manifests to read.
    #[command(flatten)]
    pub input: InputFile,
    /// Inject into every pod template, annotated or not (`wsdrain.io/inject: "false"`
    /// still wins).
    #[arg(long, env = "WSDRAIN_ALL")]
    pub all: bool,
    /// Replace a sidecar injected by an older wsdrain (pods carrying an older
    /// `wsdrain.io/version`) with this version's; without it such pods are left as they are.
    #[arg(long, env = "WSDRAIN_UPGRADE")]
    pub upgrade: bool,
    /// Admin token written into every pod injected in this run. Without it each pod gets
    /// a random token and the output differs between runs: pass one for GitOps.
    #[arg(long, env = "WSDRAIN_TOKEN", value_parser = parse_token)]
    pub token: Option<String>,
    /// What to inject.
    #[command(flatten)]
    pub defaults: InjectDefaults,
}

/// Settings of `wsdrain webhook`.
#[derive(Debug, Clone, Args)]
pub struct WebhookOptions {
    /// HTTPS address to serve on.
    #[arg(long, env = "WSDRAIN_LISTEN", default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,
    /// Certificate chain (PEM); re-read when it changes on disk.
    #[arg(long, env = "WSDRAIN_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// Private key (PEM); re-read when it changes on disk.
    #[arg(long, env = "WSDRAIN_TLS_KEY")]
    pub tls_key: PathBuf,
    /// After SIGTERM, time the webhook keeps serving while its endpoint is removed.
    #[arg(long, env = "WSDRAIN_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_timeout)]
    pub shutdown_delay: Duration,
    /// What to inject.
    #[command(flatten)]
    pub defaults: InjectDefaults,
    /// Logging.
    #[command(flatten)]
    pub log: LogOptions,
}

/// Settings of `wsdrain uninject`.
#[derive(Debug, Clone, Args)]
pub struct UninjectOptions {
    /// The manifests to read.
    #[command(flatten)]
    pub input: InputFile,
}

/// Settings of `wsdrain install`: what a platform team chooses once, so that
/// `wsdrain install | kubectl apply -f -` is the whole installation.
#[derive(Debug, Clone, Args)]
pub struct InstallOptions {
    /// Image of the webhook (the wsdrain binary).
    #[arg(long, env = "WSDRAIN_IMAGE", default_value = concat!("wsdrain/wsdrain:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Image of the injected sidecar; default: the same as --image.
    #[arg(long, env = "WSDRAIN_SIDECAR_IMAGE")]
    pub sidecar_image: Option<String>,
    /// Namespace the webhook runs in (created by the output).
    #[arg(long, env = "WSDRAIN_NAMESPACE", default_value = "wsdrain-system", value_parser = crate::values::parse_namespace)]
    pub namespace: String,
    /// Issue the serving certificate with cert-manager (Issuer + Certificate, caBundle
    /// filled in by its cainjector) instead of generating it now.
    #[arg(long, env = "WSDRAIN_CERT_MANAGER")]
    pub cert_manager: bool,
    /// Days the generated serving certificate is valid (the CA: ten times as long).
    #[arg(long, env = "WSDRAIN_CERT_DAYS", default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub cert_days: u32,
    /// Kubernetes version of the cluster (e.g. `1.31`), passed to the webhook; see
    /// `wsdrain inject --help`.
    #[arg(long, env = "WSDRAIN_KUBERNETES_VERSION", value_parser = crate::values::parse_kubernetes_version)]
    pub kubernetes_version: Option<u32>,
    /// Also call the webhook for pods that opt in with the annotation
    /// `wsdrain.io/inject: "true"` only (no label): every pod creation in every
    /// namespace then reaches the webhook, as without an objectSelector.
    #[arg(long, env = "WSDRAIN_ANNOTATION_OPT_IN")]
    pub annotation_opt_in: bool,
    /// Webhook replicas.
    #[arg(long, env = "WSDRAIN_REPLICAS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub replicas: u16,
    /// Flags of `wsdrain webhook` (its injection defaults such as `--drain-window=60s`),
    /// after `--`; checked here, written into the webhook's Deployment.
    #[arg(last = true)]
    pub webhook_args: Vec<String>,
}

/// Settings of `wsdrain demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoOptions {
    /// Clients to connect.
    #[arg(long, env = "WSDRAIN_CLIENTS", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub clients: u32,
    /// Drain window of the staggered run.
    #[arg(long, env = "WSDRAIN_DRAIN_WINDOW", default_value = "10s", value_parser = parse_drain_phase)]
    pub drain_window: Duration,
}
