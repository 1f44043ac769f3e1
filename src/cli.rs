//! Command-line interface: the verbs of the product brief and their flags.
//!
//! Every flag has an environment twin so the same settings work from a pod spec's `env:`
//! and from a shell: `WSDRAIN_<FLAG_NAME>` for `wsdrain proxy`, `WSDRAIN_<VERB>_<FLAG_NAME>`
//! for every other verb ([`env_name`], applied to every flag by [`command`]; the proxy's
//! structs also spell theirs out). Values are checked here, at the edge, so the layers
//! below receive plain, valid data.
//!
//! The drain's flags are not written out here: they are the rows of the drain plan's
//! table (`drain/plan.rs`), turned into flags by the `Args` impl below.
//!
//! Flow: argv and `WSDRAIN_*` in, parsed by [`crate::values`]; the structs out to
//! `main.rs`, which hands each verb its own (the proxy converts its flags once, in
//! `state.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::drain::{DrainSettings, plan};
use crate::values::{
    parse_drain_phase, parse_duration, parse_header_size, parse_keepalive, parse_positive_rate,
    parse_quantity, parse_size, parse_timeout, parse_token,
};

/// wsdrain: a WebSocket sidecar that ends reconnect storms.
#[derive(Debug, Parser)]
#[command(name = "wsdrain", version = crate::build_info::LONG_VERSION, about, long_about = None)]
pub struct Cli {
    /// The verb to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The command line with every flag's environment twin named by [`env_name`]: what
/// `wsdrain` parses, and what the tests walk.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommands(|sub| {
        let verb = sub.get_name().to_string();
        sub.mut_args(
            |arg| match arg.get_long().map(|long| env_name(&verb, long)) {
                Some(env) => arg.env(env),
                None => arg,
            },
        )
    })
}

/// Parses the process's arguments and `WSDRAIN_*` variables.
pub fn parse() -> Result<Cli, clap::Error> {
    parse_from(std::env::args_os())
}

/// Parses `args` (the program name first) and the `WSDRAIN_*` variables, as the
/// process's own command line is parsed.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command()))
}

/// The environment twin of `--<long>` of `wsdrain <verb>`: `WSDRAIN_<FLAG_NAME>` for the
/// proxy, whose flags pod specs set, and `WSDRAIN_<VERB>_<FLAG_NAME>` for every other
/// verb, so that one name never means two things (`WSDRAIN_ADMIN` is the proxy's admin
/// address, `WSDRAIN_DRAIN_ADMIN` the URL `wsdrain drain` talks to).
pub fn env_name(verb: &str, long: &str) -> String {
    let flag = long.replace('-', "_").to_ascii_uppercase();
    match verb {
        "proxy" => format!("WSDRAIN_{flag}"),
        _ => format!("WSDRAIN_{}_{flag}", verb.to_ascii_uppercase()),
    }
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
    /// Find the reconnect storms a set of manifests still hides (offline).
    Analyze(AnalyzeOptions),
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

/// The drain plan's flags: one per row of [`plan::SETTINGS`], with the row's name,
/// environment twin, help and default, checked by the row's own parser. Flags of
/// `wsdrain proxy`, and the defaults the injector writes into the sidecar's arguments.
impl Args for DrainSettings {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        plan::SETTINGS
            .iter()
            .fold(cmd, |cmd, row| cmd.arg(drain_arg(row)))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for DrainSettings {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut plan = DrainSettings::default();
        plan.update_from_arg_matches(m)?;
        Ok(plan)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for row in plan::SETTINGS {
            if let Some(raw) = m.get_one::<String>(row.name) {
                (row.set)(self, raw)
                    .map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, e))?;
            }
        }
        Ok(())
    }
}

/// The flag of one drain setting; the value is checked when parsed, applied later.
fn drain_arg(row: &'static plan::Setting) -> Arg {
    Arg::new(row.name)
        .long(row.name)
        .env(row.env)
        .help(row.help)
        .value_name(row.value_name())
        .default_value(row.default)
        .value_parser(move |raw: &str| {
            (row.set)(&mut DrainSettings::default(), raw).map(|()| raw.to_string())
        })
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
    pub drain: DrainSettings,
    /// File holding the bearer token required by POST /drain, DELETE /drain, GET /prestop
    /// and POST /shed (re-read per request, so rotation needs no restart).
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
    /// Extra age per connection, spread evenly over [0, this], so connections opened
    /// together do not age out together.
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
    /// Keep this pod's `controller.kubernetes.io/pod-deletion-cost` equal to its live
    /// connection count (at most every 30 s, never during a drain), so a scale-down
    /// removes the emptiest pods first. Needs `patch` on the pod (see `wsdrain.io/pod-deletion-cost`).
    #[arg(long, env = "WSDRAIN_POD_DELETION_COST")]
    pub pod_deletion_cost: bool,
    /// TCP keepalive idle time on client and app sockets; 0 = off.
    #[arg(long, env = "WSDRAIN_TCP_KEEPALIVE", default_value = "60s", value_parser = parse_keepalive)]
    pub tcp_keepalive: Duration,
    /// TLS termination.
    #[command(flatten)]
    pub tls: TlsFlags,
    /// Logging.
    #[command(flatten)]
    pub log: LogOptions,
}

/// TLS termination at the sidecar (`wss://`; TLS-wrapped TCP in `--mode tcp`). Off
/// unless a certificate is given.
#[derive(Debug, Clone, Args)]
pub struct TlsFlags {
    /// PEM certificate chain to serve, leaf first (with `--tls-key`); turns TLS on.
    #[arg(
        long,
        env = "WSDRAIN_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "tls_dir"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(
        long,
        env = "WSDRAIN_TLS_KEY",
        requires = "tls_cert",
        conflicts_with = "tls_dir"
    )]
    pub tls_key: Option<PathBuf>,
    /// Directory holding `tls.crt` and `tls.key` (a mounted Kubernetes TLS Secret);
    /// turns TLS on. Rotations are picked up within seconds.
    #[arg(long, env = "WSDRAIN_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// PEM CA bundle: clients must present a certificate signed by one of these (mTLS).
    #[arg(long, env = "WSDRAIN_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Time a client has to finish its TLS handshake.
    #[arg(long, env = "WSDRAIN_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub tls_handshake_timeout: Duration,
    /// Most TLS handshakes in progress at once; at the cap the oldest is dropped.
    #[arg(long, env = "WSDRAIN_TLS_MAX_HANDSHAKES", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub tls_max_handshakes: u32,
}

/// Settings of `wsdrain drain`.
#[derive(Debug, Clone, Args)]
pub struct DrainOptions {
    /// Base URL of the sidecar's admin port.
    #[arg(long, default_value = "http://127.0.0.1:15090")]
    pub admin: String,
    /// Block until the drain is over (exit 0) or failed (exit 1).
    #[arg(long)]
    pub wait: bool,
    /// File holding the admin bearer token.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
}

/// What the injector writes into a pod unless the pod's `wsdrain.io/<setting>`
/// annotations say otherwise; shared by `wsdrain inject` and `wsdrain webhook` so both
/// doors inject the same sidecar.
#[derive(Debug, Clone, Args)]
pub struct InjectDefaults {
    /// Sidecar image.
    #[arg(long, default_value = concat!("wsdrain/wsdrain:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Pull policy of the sidecar image.
    #[arg(long, default_value = "IfNotPresent", value_parser = ["Always", "IfNotPresent", "Never"])]
    pub image_pull_policy: String,
    /// Port the sidecar listens on for clients (its `--listen` port).
    #[arg(long, default_value_t = 15080, value_parser = clap::value_parser!(u16).range(1..))]
    pub listen_port: u16,
    /// Port of the sidecar's admin endpoints (its `--admin` port).
    #[arg(long, default_value_t = 15090, value_parser = clap::value_parser!(u16).range(1..))]
    pub admin_port: u16,
    /// Drain settings passed to the sidecar.
    #[command(flatten)]
    pub drain: DrainSettings,
    /// Most WebSocket connections at once (sidecar `--max-connections`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Largest message relayed, 0 = no limit (sidecar `--max-message-size`).
    #[arg(long, default_value = "0", value_parser = parse_size)]
    pub max_message_size: u64,
    /// CPU request of the sidecar (a Kubernetes quantity); empty for none.
    #[arg(long, default_value = "50m", value_parser = parse_quantity)]
    pub cpu_request: String,
    /// Memory request of the sidecar; empty for none.
    #[arg(long, default_value = "32Mi", value_parser = parse_quantity)]
    pub memory_request: String,
    /// CPU limit of the sidecar; empty (the default) for none, as throttling adds latency.
    #[arg(long, default_value = "", value_parser = parse_quantity)]
    pub cpu_limit: String,
    /// Memory limit of the sidecar; empty for none.
    #[arg(long, default_value = "256Mi", value_parser = parse_quantity)]
    pub memory_limit: String,
    /// Tokio worker threads of the sidecar (env TOKIO_WORKER_THREADS in the container),
    /// so a sidecar on a 64-core node does not start 64 threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub worker_threads: u32,
    /// Inject a classic sidecar (a regular container) instead of a native sidecar
    /// (an init container with `restartPolicy: Always`, Kubernetes >= 1.29).
    #[arg(long)]
    pub classic: bool,
    /// Kubernetes version of the target cluster (e.g. `1.31`). A Service's named
    /// `targetPort` reaches a native sidecar only from 1.32, so below that a pod whose
    /// named port is taken over gets the classic sidecar; below 1.29 every pod does.
    /// Unset: a cluster of 1.32 or later.
    #[arg(long, value_parser = crate::values::parse_kubernetes_version)]
    pub kubernetes_version: Option<u32>,
}

/// The manifests `inject` and `uninject` read.
#[derive(Debug, Clone, Args)]
pub struct InputFile {
    /// File to read (YAML or JSON, multi-document); `-` for stdin.
    #[arg(short = 'f', long = "filename", default_value = "-")]
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
    #[arg(long)]
    pub all: bool,
    /// Replace a sidecar injected by an older wsdrain (pods carrying an older
    /// `wsdrain.io/version`) with this version's; without it such pods are left as they are.
    #[arg(long)]
    pub upgrade: bool,
    /// Admin token written into every pod injected in this run. Without it each pod gets
    /// a random token and the output differs between runs: pass one for GitOps.
    #[arg(long, value_parser = parse_token)]
    pub token: Option<String>,
    /// What to inject.
    #[command(flatten)]
    pub defaults: InjectDefaults,
}

/// Settings of `wsdrain webhook`.
#[derive(Debug, Clone, Args)]
pub struct WebhookOptions {
    /// HTTPS address to serve on.
    #[arg(long, default_value = "0.0.0.0:9443")]
    pub listen: SocketAddr,
    /// Certificate chain (PEM); re-read when it changes on disk.
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// Private key (PEM); re-read when it changes on disk.
    #[arg(long)]
    pub tls_key: PathBuf,
    /// After SIGTERM, time the webhook keeps serving while its endpoint is removed.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
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
    #[arg(long, default_value = concat!("wsdrain/wsdrain:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
    /// Image of the injected sidecar; default: the same as --image.
    #[arg(long)]
    pub sidecar_image: Option<String>,
    /// Namespace the webhook runs in (created by the output).
    #[arg(long, default_value = "wsdrain-system", value_parser = crate::values::parse_namespace)]
    pub namespace: String,
    /// Issue the serving certificate with cert-manager (Issuer + Certificate, caBundle
    /// filled in by its cainjector) instead of generating it now.
    #[arg(long)]
    pub cert_manager: bool,
    /// Days the generated serving certificate is valid (the CA: ten times as long).
    #[arg(long, default_value_t = 730, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub cert_days: u32,
    /// Kubernetes version of the cluster (e.g. `1.31`), passed to the webhook; see
    /// `wsdrain inject --help`.
    #[arg(long, value_parser = crate::values::parse_kubernetes_version)]
    pub kubernetes_version: Option<u32>,
    /// Also call the webhook for pods that opt in with the annotation
    /// `wsdrain.io/inject: "true"` only (no label): every pod creation in every
    /// namespace then reaches the webhook, as without an objectSelector.
    #[arg(long)]
    pub annotation_opt_in: bool,
    /// Webhook replicas.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=20))]
    pub replicas: u16,
    /// Flags of `wsdrain webhook` (its injection defaults such as `--drain-window=60s`),
    /// after `--`; checked here, written into the webhook's Deployment.
    #[arg(last = true)]
    pub webhook_args: Vec<String>,
}

/// Output of `wsdrain analyze`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON document, for CI.
    Json,
}

/// Settings of `wsdrain analyze`.
#[derive(Debug, Clone, Args)]
pub struct AnalyzeOptions {
    /// File or directory to read (YAML or JSON, multi-document; a directory's `.yaml`,
    /// `.yml` and `.json` files); `-` for stdin.
    #[arg(
        short = 'f',
        long = "filename",
        env = "WSDRAIN_ANALYZE_FILENAME",
        default_value = "-"
    )]
    pub filename: PathBuf,
    /// Open connections per pod to compute drain times and reconnect rates for.
    #[arg(long, env = "WSDRAIN_ANALYZE_CONNECTIONS_PER_POD", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub connections_per_pod: u32,
    /// Output format.
    #[arg(
        short = 'o',
        long,
        env = "WSDRAIN_ANALYZE_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    pub output: OutputFormat,
}

/// Settings of `wsdrain demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoOptions {
    /// Clients to connect.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub clients: u32,
    /// Drain window of the staggered run.
    #[arg(long, default_value = "10s", value_parser = parse_drain_phase)]
    pub drain_window: Duration,
    /// Run Server-Sent Events clients (EventSource-like: they honour `retry:`) instead
    /// of WebSockets.
    #[arg(long, env = "WSDRAIN_DEMO_SSE")]
    pub sse: bool,
}
