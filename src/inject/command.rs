//! `wsdrain inject` at the edge: read a file or stdin, write stdout, warnings to stderr.

use std::io::{Read, Write};

use anyhow::Context;

use super::{InjectConfig, Settings, inject_documents};
use crate::cli::InjectOptions;

/// Runs `wsdrain inject`: a failure to read or parse exits non-zero with one line.
pub fn run(opts: &InjectOptions) -> anyhow::Result<()> {
    let input = if opts.filename.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(&opts.filename)
            .with_context(|| format!("reading {}", opts.filename.display()))?
    };
    let cfg = InjectConfig {
        defaults: Settings::from(&opts.defaults),
        all: opts.all,
        token: opts.token.clone(),
    };
    let out = inject_documents(&input, &cfg).with_context(|| {
        if opts.filename.as_os_str() == "-" {
            "stdin".to_string()
        } else {
            opts.filename.display().to_string()
        }
    })?;
    let mut stderr = std::io::stderr().lock();
    for w in &out.warnings {
        let _ = writeln!(stderr, "wsdrain: warning: {w}");
    }
    if out.injected > 0 && opts.token.is_none() {
        let _ = writeln!(
            stderr,
            "wsdrain: note: random admin tokens were generated; pass --token for output that is the same on every run"
        );
    }
    let _ = writeln!(stderr, "wsdrain: injected {} pod template(s)", out.injected);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing stdout")?;
    Ok(())
}
