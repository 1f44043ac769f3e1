//! Structured logs through `tracing`, as text for people or JSON for log pipelines.

use std::io::IsTerminal;

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
    // Colours are for people at a terminal; in `kubectl logs`, files and pipes the escape
    // codes are noise that breaks grep.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_wanted());
    let _ = match opts.log_format {
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// True when stderr is a terminal and `NO_COLOR` (no-color.org) is unset or empty.
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
