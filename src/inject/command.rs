//! `wsdrain inject` and `wsdrain uninject` at the edge: read a file or stdin, write
//! stdout, warnings to stderr.
//!
//! Flow: a file or stdin in, through [`super::inject_documents`] or
//! [`super::uninject_documents`]; the manifests out on stdout, warnings on stderr.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;

use super::documents::Output;
use super::{InjectConfig, Settings, inject_documents, uninject_documents};
use crate::cli::{InjectOptions, UninjectOptions};

/// Runs `wsdrain inject`: a failure to read or parse exits non-zero with one line.
pub fn run(opts: &InjectOptions) -> anyhow::Result<()> {
    let input = read_input(&opts.input.filename)?;
    let cfg = InjectConfig {
        defaults: Settings::from(&opts.defaults),
        all: opts.all,
        token: opts.token.clone(),
        upgrade: opts.upgrade,
    };
    let out = inject_documents(&input, &cfg).with_context(|| source_name(&opts.input.filename))?;
    let note = (out.injected > 0 && opts.token.is_none()).then_some(
        "random admin tokens were generated; pass --token for output that is the same on every run",
    );
    write_output(
        &out,
        note,
        &format!("injected {} pod template(s)", out.injected),
    )
}

/// Runs `wsdrain uninject`: every injected pod template back to what it was before
/// `wsdrain inject`; templates that cannot be are named on stderr and exit non-zero.
pub fn run_uninject(opts: &UninjectOptions) -> anyhow::Result<()> {
    let input = read_input(&opts.input.filename)?;
    let out = uninject_documents(&input).with_context(|| source_name(&opts.input.filename))?;
    write_output(
        &out,
        None,
        &format!("uninjected {} pod template(s)", out.injected),
    )?;
    if !out.warnings.is_empty() {
        anyhow::bail!(
            "{} pod template(s) could not be uninjected (see the warnings)",
            out.warnings.len()
        );
    }
    Ok(())
}

/// `stdin` for `-`, else the path: how errors name the input.
fn source_name(filename: &Path) -> String {
    if filename.as_os_str() == "-" {
        "stdin".to_string()
    } else {
        filename.display().to_string()
    }
}

fn read_input(filename: &Path) -> anyhow::Result<String> {
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

/// Warnings, an optional note and the summary to stderr; the documents to stdout.
fn write_output(out: &Output, note: Option<&str>, summary: &str) -> anyhow::Result<()> {
    let mut stderr = std::io::stderr().lock();
    for w in &out.warnings {
        let _ = writeln!(stderr, "wsdrain: warning: {w}");
    }
    if let Some(note) = note {
        let _ = writeln!(stderr, "wsdrain: note: {note}");
    }
    let _ = writeln!(stderr, "wsdrain: {summary}");
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing stdout")
}
