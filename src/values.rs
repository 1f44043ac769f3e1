//! Value parsers for every setting a person types: durations, sizes, rates, close codes,
//! tokens, Kubernetes quantities, versions and namespace names.
//!
//! One leaf module that both doors use: the sidecar's flags (and their `WSDRAIN_*`
//! environment twins, through `cli.rs`) and the injector's per-pod annotations
//! (`inject/settings.rs`), so a value the injector accepts is one the sidecar starts
//! with. Each parser also checks the range: the drain does arithmetic on these values at
//! run time (a rate of `1e-300` used to become a 10^300-second sleep and a panic), so
//! anything that could overflow or stall is refused here, with one line saying what a
//! valid value looks like. Data flows in as `&str`, out as plain values; this module
//! imports nothing of the crate.

use std::time::Duration;

/// Longest duration any setting accepts (30 days): long enough for
/// `--max-connection-age`, short enough that `Instant + d` can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Longest drain phase (`--drain-delay`, `--drain-window`, `--close-timeout`): a day.
/// A drain longer than that is a mistake, and the kubelet's grace period must cover it.
pub const MAX_DRAIN_PHASE: Duration = Duration::from_secs(24 * 3600);

/// Longest reconnect hint (`--reconnect-jitter`): an hour. The hint travels as
/// milliseconds in a close reason; clients told to wait longer are as good as lost.
pub const MAX_JITTER: Duration = Duration::from_secs(3600);

/// Longest timeout of a single exchange (handshake, response, connect, ping): an hour.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Longest TCP keepalive idle time Linux accepts (`TCP_KEEPIDLE` is at most 32767 s).
pub const MAX_KEEPALIVE: Duration = Duration::from_secs(32_767);

/// Smallest non-zero rate (closes per second): one close every 100 s. Below that a
/// drain of a few connections would outlast any grace period.
pub const MIN_RATE: f64 = 0.01;

/// Largest rate (closes per second); beyond it the limit means nothing.
pub const MAX_RATE: f64 = 1_000_000.0;

/// Parses a human duration (`30s`, `500ms`, `1m`, or `0`) of at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    duration_at_most(s, MAX_DURATION, "30 days")
}

/// A drain phase: a duration of at most [`MAX_DRAIN_PHASE`].
pub fn parse_drain_phase(s: &str) -> Result<Duration, String> {
    duration_at_most(s, MAX_DRAIN_PHASE, "24h")
}

/// The reconnect hint's upper bound: a duration of at most [`MAX_JITTER`].
pub fn parse_jitter(s: &str) -> Result<Duration, String> {
    duration_at_most(s, MAX_JITTER, "1h")
}

/// A timeout of one exchange: a duration of at most [`MAX_TIMEOUT`].
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    duration_at_most(s, MAX_TIMEOUT, "1h")
}

/// A TCP keepalive idle time: at most [`MAX_KEEPALIVE`], whole seconds or 0.
pub fn parse_keepalive(s: &str) -> Result<Duration, String> {
    duration_at_most(s, MAX_KEEPALIVE, "32767s")
}

fn duration_at_most(s: &str, max: Duration, max_text: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if s == "0" {
        Duration::ZERO
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("expected a duration such as 30s or 500ms ({e})"))?
    };
    if d > max {
        return Err(format!("must be at most {max_text}"));
    }
    Ok(d)
}

/// Formats a duration the way the sidecar's flags read it back: `30s`, or `1500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses a byte size: a number with an optional KiB/MiB/GiB (or K/M/G) suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a size such as 65536, 64KiB or 16MiB".to_string())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "k" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit '{other}' (use KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| "size is too large".to_string())
}

/// A request head limit: a size from 8 KiB to 1 MiB.
pub fn parse_header_size(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if !(8192..=1 << 20).contains(&n) {
        return Err("must be between 8KiB and 1MiB".into());
    }
    Ok(n as usize)
}

/// A close rate: 0 for no limit, else from [`MIN_RATE`] to [`MAX_RATE`] per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(0.0) => Ok(0.0),
        Ok(r) if (MIN_RATE..=MAX_RATE).contains(&r) => Ok(r),
        _ => Err(format!(
            "expected 0 (no limit) or a number of closes per second from {MIN_RATE} to {MAX_RATE}"
        )),
    }
}

/// A rate that must be set: from [`MIN_RATE`] to [`MAX_RATE`] per second.
pub fn parse_positive_rate(s: &str) -> Result<f64, String> {
    match parse_rate(s) {
        Ok(r) if r > 0.0 => Ok(r),
        _ => Err(format!(
            "expected a number of closes per second from {MIN_RATE} to {MAX_RATE}"
        )),
    }
}

/// Close codes an endpoint may send (RFC 6455 §7.4): 1000-1003, 1007-1014, 3000-4999.
pub fn parse_close_code(s: &str) -> Result<u16, String> {
    let code: u16 = s
        .trim()
        .parse()
        .map_err(|_| "expected a close code such as 1012".to_string())?;
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => Ok(code),
        _ => Err(format!(
            "{code} may not be sent in a close frame (use 1000-1003, 1007-1014 or 3000-4999)"
        )),
    }
}

/// An admin token must be usable verbatim in an `Authorization: Bearer` header and a
/// pod annotation: 16 to 256 characters from `A-Za-z0-9-._~+/=`.
pub fn parse_token(s: &str) -> Result<String, String> {
    let s = s.trim();
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._~+/=".contains(c));
    if !(16..=256).contains(&s.len()) || !ok_chars {
        return Err("expected 16 to 256 characters from A-Z a-z 0-9 - . _ ~ + / =".into());
    }
    Ok(s.to_string())
}

/// A Kubernetes resource quantity such as `100m`, `64Mi`, `1.5`, `2e3`; empty = unset.
pub fn parse_quantity(raw: &str) -> Result<String, String> {
    if raw.is_empty() || is_quantity(raw) {
        Ok(raw.to_string())
    } else {
        Err("expected a Kubernetes quantity such as 100m, 64Mi or 1".into())
    }
}

fn is_quantity(s: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let dots = number.chars().filter(|&c| c == '.').count();
    if digits == 0 || dots > 1 {
        return false;
    }
    if let Some(exp) = suffix.strip_prefix(['e', 'E']) {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        return !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit());
    }
    SUFFIXES.contains(&suffix)
}

/// Reads `--kubernetes-version` (`1.31`, `v1.31.4`) as the minor version. Only 1.x
/// exists; below 1.29 native sidecars are off by default, which the injector handles, so
/// any 1.x is accepted.
pub fn parse_kubernetes_version(raw: &str) -> Result<u32, String> {
    let v = raw.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    match (parts.next(), parts.next().map(str::parse::<u32>)) {
        (Some("1"), Some(Ok(minor))) if parts.all(|p| p.parse::<u32>().is_ok()) => Ok(minor),
        _ => Err("expected a Kubernetes version such as 1.31 or v1.31.4".into()),
    }
}

/// A Kubernetes name that must be an RFC 1123 label (container, port, namespace):
/// lowercase letters, digits and `-`, not at either end, at most `max` long.
pub fn parse_name(raw: &str, max: usize) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= max
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !raw.starts_with('-')
        && !raw.ends_with('-');
    if ok {
        Ok(raw.to_string())
    } else {
        Err(format!(
            "expected a name of at most {max} lowercase letters, digits and '-'"
        ))
    }
}

/// A namespace name: an RFC 1123 label of at most 63 characters.
pub fn parse_namespace(raw: &str) -> Result<String, String> {
    parse_name(raw, 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_that_would_overflow_a_sleep_are_refused() {
        for bad in ["1e-300", "0.001", "-1", "NaN", "inf", "1e7", "x"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("0.01"), Ok(0.01));
        assert!(parse_positive_rate("0").is_err());
        // The slowest accepted rate still gives a sleep Duration can hold.
        assert!(Duration::try_from_secs_f64(1.0 / MIN_RATE).is_ok());
    }

    #[test]
    fn durations_are_bounded_per_kind() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_drain_phase("30s"), Ok(Duration::from_secs(30)));
        assert!(parse_drain_phase("25h").is_err());
        assert!(parse_jitter("2h").is_err());
        assert!(parse_duration("10000000000s").is_err());
        assert!(parse_keepalive("32768s").is_err());
        assert!(parse_timeout("5x").is_err());
    }
}
