//! Structured logs through `tracing`, as text for people or JSON for log pipelines.

use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, LogOptions};

/// Installs the global subscriber (stderr). A bad filter falls back to `info`.
pub fn init(opts: &LogOptions) {
    let filter = EnvFilter::try_new(&opts.log_level).unwrap_or_else(|e| {
        eprintln!(
            "wsdrain: --log-level '{}' is not a valid filter ({e}); using info",
            opts.log_level
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match opts.log_format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
