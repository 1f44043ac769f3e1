//! The `wsdrain` binary: parses the command line and dispatches to a verb.

use std::process::ExitCode;

use wsdrain::cli::Command;
use wsdrain::{analyze, demo, drain_client, inject, install, logging, sidecar, webhook};

fn main() -> ExitCode {
    let cli = match wsdrain::cli::parse() {
        Ok(cli) => cli,
        Err(e) => return cli_error(e),
    };
    match cli.command {
        Command::Proxy(opts) => {
            logging::init(&opts.log);
            finish(control_runtime().and_then(|rt| rt.block_on(sidecar::run(opts))))
        }
        Command::Drain(opts) => {
            finish(runtime().and_then(|rt| rt.block_on(drain_client::run(opts))))
        }
        Command::Demo(opts) => finish(runtime().and_then(|rt| rt.block_on(demo::run(opts)))),
        Command::Inject(opts) => finish(inject::command::run(&opts)),
        Command::Uninject(opts) => finish(inject::command::run_uninject(&opts)),
        Command::Install(opts) => finish(install::run(&opts)),
        Command::Analyze(opts) => finish(analyze::run(&opts)),
        Command::Webhook(opts) => {
            logging::init(&opts.log);
            finish(runtime().and_then(|rt| rt.block_on(webhook::run(opts))))
        }
        Command::Version => {
            println!("{}", wsdrain::build_info::describe());
            ExitCode::SUCCESS
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Read TOKIO_WORKER_THREADS ourselves: tokio panics on a bad value.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(wsdrain::workers::thread_count()?)
        .enable_all()
        .build()?)
}

/// `wsdrain proxy`'s main thread: the acceptor, the admin port, the drain and the exit
/// logic. Connections run on the data-path threads `sidecar::run` starts
/// (`wsdrain::workers`), one single-threaded runtime each.
fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsdrain: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout as clap prints them; any other parse error becomes one
/// line naming the flag and what is wrong, with exit code 2.
fn cli_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.render().to_string();
    let line = rendered
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or("error: invalid command line")
        .trim_start_matches("error: ");
    eprintln!("wsdrain: {line} (see wsdrain --help)");
    ExitCode::from(2)
}
