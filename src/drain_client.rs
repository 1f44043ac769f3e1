//! `wsdrain drain`: asks a running sidecar to drain, for `exec` preStop hooks and for
//! operators. With `--wait` it follows `GET /drain` until the phase is `done`, showing
//! progress when stderr is a terminal, and fails if the drain is cancelled meanwhile
//! (`DELETE /drain`: the phase is back to `serving`). Every request is bounded by
//! [`REQUEST_TIMEOUT`], so a wedged admin port is an error, not a hang.
//!
//! Flow: flags in; HTTP out to a sidecar's admin port; an exit code back to the shell.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::cli::DrainOptions;

/// How long one request to the admin port may take. The sidecar answers `POST /drain`
/// and `GET /drain` at once; a port that does not is wedged or not a sidecar.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the verb. Errors name the admin URL and what went wrong.
pub async fn run(opts: DrainOptions) -> anyhow::Result<()> {
    let base = opts.admin.trim_end_matches('/').to_string();
    let token = match &opts.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --admin-token-file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let admin = Admin {
        client: Client::builder(TokioExecutor::new()).build_http(),
        base,
        token,
    };
    let status = admin.call(Method::POST, "/drain").await?;
    if !opts.wait {
        println!("{status}");
        return Ok(());
    }
    let tty = std::io::stderr().is_terminal();
    loop {
        let status = admin.call(Method::GET, "/drain").await?;
        let phase = status["phase"].as_str().unwrap_or("?").to_string();
        if tty {
            let left_s = status["deadline_in_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
            eprint!(
                "\r\x1b[2Kdrain: {phase:<10} open {:>6}  closed {:>6}  deadline in {left_s:>5.1}s",
                status["open"], status["closed"]
            );
            let _ = std::io::stderr().flush();
        }
        if phase == "serving" {
            if tty {
                eprintln!();
            }
            bail!("the drain was cancelled (DELETE /drain); the sidecar is serving again");
        }
        if phase == "done" {
            if tty {
                eprintln!();
            }
            println!("{status}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Admin {
    client: Client<HttpConnector, Empty<Bytes>>,
    base: String,
    token: Option<String>,
}

impl Admin {
    async fn call(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        let base = &self.base;
        let uri: Uri = format!("{base}{path}")
            .parse()
            .with_context(|| format!("--admin '{base}' is not a valid http:// URL"))?;
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let exchange = async {
            let resp = self
                .client
                .request(req.body(Empty::new())?)
                .await
                .with_context(|| format!("cannot reach the sidecar admin port at {base}"))?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                anyhow::anyhow!("{base}{path} did not answer within {REQUEST_TIMEOUT:?}")
            })??;
        if !status.is_success() {
            bail!(
                "{base}{path} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        serde_json::from_slice(&body).with_context(|| format!("{base}{path} did not answer JSON"))
    }
}
