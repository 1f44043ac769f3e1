//! `wsdrain inject` at the edge: read a file or stdin, write stdout, warnings to stderr.

use std::io::{Read, Write};

use anyhow::Context;

use super::{InjectConfig, Settings, inject_documents, uninject_documents};
use crate::cli::{InjectOptions, UninjectOptions};

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
        upgrade: opts.upgrade,
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

fn read_input(filename: &std::path::Path) -> anyhow::Result<String> {
    if filename.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(filename).with_context(|| format!("reading {}", filename.display()))
    }
}

/// Runs `wsdrain uninject`: every injected pod template back to what it was before
/// `wsdrain inject`; templates that cannot be are named on stderr and exit non-zero.
pub fn run_uninject(opts: &UninjectOptions) -> anyhow::Result<()> {
    let input = read_input(&opts.filename)?;
    let out = uninject_documents(&input).with_context(|| {
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
    let _ = writeln!(
        stderr,
        "wsdrain: uninjected {} pod template(s)",
        out.injected
    );
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing stdout")?;
    if !out.warnings.is_empty() {
        anyhow::bail!(
            "{} pod template(s) could not be uninjected (see the warnings)",
            out.warnings.len()
        );
    }
    Ok(())
}
