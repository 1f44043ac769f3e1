//! The drain plan, defined once: every setting that shapes a drain, as one row of
//! [`SETTINGS`] — its name, help, default and parser — and the typed [`DrainSettings`]
//! the rows fill.
//!
//! A drain setting used to exist in five shapes (a clap struct, the drain's struct, a
//! copy in the relay's settings, flattened fields in the injector re-parsed from
//! annotations, and hand-written `--flag=value` strings in the sidecar container).
//! Now one row serves every door: `cli.rs` turns the rows into the flags of
//! `wsdrain proxy` (and the injection defaults of `inject`/`webhook`), the injector
//! reads the pod's `wsdrain.io/<name>` annotations through [`apply`] and writes the
//! sidecar's arguments through [`args`], and the drain, the relay and the injector's
//! grace period all read the one [`DrainSettings`]. A new drain setting is one row here
//! plus its use.
//!
//! Flow: strings in (argv, `WSDRAIN_*`, annotations), checked by the parsers of
//! [`crate::values`]; a [`DrainSettings`] out, and back to `--name=value` strings for
//! the sidecar's container.

use std::time::Duration;

use crate::values::{
    format_duration, parse_close_code, parse_drain_phase, parse_jitter, parse_rate,
};

/// Everything a drain is planned from; built from [`SETTINGS`] and shared by the drain,
/// `/shed`, the relay, the process's exit logic and the injector.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainSettings {
    /// Announce phase length (`--drain-delay`).
    pub delay: Duration,
    /// Stagger window (`--drain-window`).
    pub window: Duration,
    /// Closes per second at most (`--drain-max-rate`, 0 = no limit).
    pub max_rate: f64,
    /// Time for close handshakes after the stagger (`--close-timeout`).
    pub close_timeout: Duration,
    /// Close code of the drain's close frames (`--close-code`).
    pub close_code: u16,
    /// Upper bound of the reconnect hint (`--reconnect-jitter`).
    pub reconnect_jitter: Duration,
    /// Reconnects per second the whole workload may cause (`--fleet-max-rate`, 0 = no
    /// budget).
    pub fleet_max_rate: f64,
    /// Pods of the workload that may drain at once (`--max-concurrent-drains`): each
    /// drains at `fleet_max_rate / max_concurrent_drains`.
    pub max_concurrent_drains: u32,
    /// The pod's `terminationGracePeriodSeconds` (`--termination-grace-period`, 0 =
    /// unknown): a stretched stagger ends within it.
    pub grace_period: Duration,
}

/// When the injector writes a setting into the sidecar's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Always, so a pod spec shows the whole plan.
    Always,
    /// Only when it differs from its default, so pods not using it stay as they were.
    UnlessDefault,
}

/// One drain setting: the flag `--<name>`, the annotation `wsdrain.io/<name>`, the
/// environment twin, its help, its default and how it is read and written.
#[derive(Debug)]
pub struct Setting {
    /// Flag name without dashes; also the annotation's name after `wsdrain.io/`.
    pub name: &'static str,
    /// Environment twin of the flag of `wsdrain proxy`.
    pub env: &'static str,
    /// Help text of the flag.
    pub help: &'static str,
    /// Default, as typed on a command line.
    pub default: &'static str,
    /// Parses a value into its field; the error says what a valid value looks like.
    pub set: fn(&mut DrainSettings, &str) -> Result<(), String>,
    /// The field's value as the flag reads it back.
    pub get: fn(&DrainSettings) -> String,
    /// When the injector writes it.
    pub written: Written,
}

impl Setting {
    /// The value name in help texts: the environment twin without its prefix.
    pub fn value_name(&self) -> &'static str {
        self.env.strip_prefix("WSDRAIN_").unwrap_or(self.env)
    }
}

/// Every drain setting, in the order the sidecar's arguments list them.
pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "drain-delay",
        env: "WSDRAIN_DRAIN_DELAY",
        help: "Announce phase of a drain: /readyz is 503, traffic is still served",
        default: "5s",
        set: |s, v| parse_drain_phase(v).map(|x| s.delay = x),
        get: |s| format_duration(s.delay),
        written: Written::Always,
    },
    Setting {
        name: "drain-window",
        env: "WSDRAIN_DRAIN_WINDOW",
        help: "Window over which the open connections are closed, evenly spread",
        default: "30s",
        set: |s, v| parse_drain_phase(v).map(|x| s.window = x),
        get: |s| format_duration(s.window),
        written: Written::Always,
    },
    Setting {
        name: "drain-max-rate",
        env: "WSDRAIN_DRAIN_MAX_RATE",
        help: "Most closes per second during a drain (stretches the window); 0 = no limit",
        default: "0",
        set: |s, v| parse_rate(v).map(|x| s.max_rate = x),
        get: |s| s.max_rate.to_string(),
        written: Written::Always,
    },
    Setting {
        name: "close-timeout",
        env: "WSDRAIN_CLOSE_TIMEOUT",
        help: "After the window, time left for close handshakes before the rest is cut",
        default: "5s",
        set: |s, v| parse_drain_phase(v).map(|x| s.close_timeout = x),
        get: |s| format_duration(s.close_timeout),
        written: Written::Always,
    },
    Setting {
        name: "close-code",
        env: "WSDRAIN_CLOSE_CODE",
        help: "Close code sent to clients when draining (1012 = Service Restart)",
        default: "1012",
        set: |s, v| parse_close_code(v).map(|x| s.close_code = x),
        get: |s| s.close_code.to_string(),
        written: Written::Always,
    },
    Setting {
        name: "reconnect-jitter",
        env: "WSDRAIN_RECONNECT_JITTER",
        help: "Upper bound of the reconnect hint `{\"reconnect_after_ms\":N}`; N is spread evenly \
               over [0, this] so that clients honouring it arrive evenly",
        default: "5s",
        set: |s, v| parse_jitter(v).map(|x| s.reconnect_jitter = x),
        get: |s| format_duration(s.reconnect_jitter),
        written: Written::Always,
    },
    Setting {
        name: "fleet-max-rate",
        env: "WSDRAIN_FLEET_MAX_RATE",
        help: "Reconnects per second the whole workload may cause; each pod drains at this \
               divided by --max-concurrent-drains (stretches the window); 0 = no budget",
        default: "0",
        set: |s, v| parse_rate(v).map(|x| s.fleet_max_rate = x),
        get: |s| s.fleet_max_rate.to_string(),
        written: Written::UnlessDefault,
    },
    Setting {
        name: "max-concurrent-drains",
        env: "WSDRAIN_MAX_CONCURRENT_DRAINS",
        help: "Most pods of the workload draining at once (rollout surge, HPA step, PDB); \
               `wsdrain inject` works it out from the workload",
        default: "1",
        set: |s, v| parse_concurrency(v).map(|x| s.max_concurrent_drains = x),
        get: |s| s.max_concurrent_drains.to_string(),
        written: Written::UnlessDefault,
    },
    Setting {
        name: "termination-grace-period",
        env: "WSDRAIN_TERMINATION_GRACE_PERIOD",
        help: "The pod's terminationGracePeriodSeconds: a drain stretched by the fleet \
               budget still ends within it; 0 = unknown (no bound)",
        default: "0s",
        set: |s, v| parse_drain_phase(v).map(|x| s.grace_period = x),
        get: |s| format_duration(s.grace_period),
        written: Written::UnlessDefault,
    },
];

/// Most concurrent drains accepted: more pods than any workload has.
pub const MAX_CONCURRENT_DRAINS: u32 = 100_000;

fn parse_concurrency(raw: &str) -> Result<u32, String> {
    match raw.trim().parse::<u32>() {
        Ok(k) if (1..=MAX_CONCURRENT_DRAINS).contains(&k) => Ok(k),
        _ => Err(format!(
            "expected a whole number of pods from 1 to {MAX_CONCURRENT_DRAINS}"
        )),
    }
}

/// The row called `name`, if it is a drain setting.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Sets the drain setting `name` from `raw`: `None` when `name` is not a drain setting,
/// else whether the value was valid (the plan is unchanged when it was not).
pub fn apply(plan: &mut DrainSettings, name: &str, raw: &str) -> Option<Result<(), String>> {
    setting(name).map(|row| (row.set)(plan, raw))
}

/// The sidecar's arguments for `plan`: `--<name>=<value>` per row, in table order,
/// skipping rows at their default that are written only when set.
pub fn args(plan: &DrainSettings) -> Vec<String> {
    let defaults = DrainSettings::default();
    SETTINGS
        .iter()
        .filter(|row| row.written == Written::Always || (row.get)(plan) != (row.get)(&defaults))
        .map(|row| format!("--{}={}", row.name, (row.get)(plan)))
        .collect()
}

impl Default for DrainSettings {
    /// The plan of a sidecar started without drain flags: every row's default.
    fn default() -> Self {
        let mut plan = DrainSettings {
            delay: Duration::ZERO,
            window: Duration::ZERO,
            max_rate: 0.0,
            close_timeout: Duration::ZERO,
            close_code: 1012,
            reconnect_jitter: Duration::ZERO,
            fleet_max_rate: 0.0,
            max_concurrent_drains: 1,
            grace_period: Duration::ZERO,
        };
        for row in SETTINGS {
            // Every default parses (checked by a test below); a bad one would keep zero.
            let _ = (row.set)(&mut plan, row.default);
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_parses_and_reads_back_as_written() {
        let plan = DrainSettings::default();
        for row in SETTINGS {
            let mut p = plan.clone();
            assert_eq!((row.set)(&mut p, row.default), Ok(()), "{}", row.name);
            assert_eq!((row.get)(&p), row.default, "{}", row.name);
            assert!(
                row.env
                    .ends_with(&row.name.to_uppercase().replace('-', "_"))
            );
        }
        assert_eq!(plan.window, Duration::from_secs(30));
        assert_eq!(plan.close_code, 1012);
    }

    #[test]
    fn every_written_value_parses_back_to_the_same_plan() {
        let mut plan = DrainSettings::default();
        for (name, raw) in [
            ("drain-window", "1500ms"),
            ("drain-max-rate", "12.5"),
            ("close-code", "4000"),
            ("fleet-max-rate", "100"),
            ("max-concurrent-drains", "4"),
            ("termination-grace-period", "90s"),
        ] {
            assert_eq!(apply(&mut plan, name, raw), Some(Ok(())));
        }
        let mut back = DrainSettings::default();
        for arg in args(&plan) {
            let (name, value) = arg
                .strip_prefix("--")
                .and_then(|a| a.split_once('='))
                .expect("--name=value");
            assert_eq!(apply(&mut back, name, value), Some(Ok(())), "{arg}");
        }
        assert_eq!(back, plan);
    }

    #[test]
    fn unknown_names_and_bad_values_leave_the_plan_alone() {
        let mut plan = DrainSettings::default();
        assert_eq!(apply(&mut plan, "image", "x"), None);
        assert!(matches!(
            apply(&mut plan, "drain-window", "soon"),
            Some(Err(_))
        ));
        assert!(matches!(
            apply(&mut plan, "max-concurrent-drains", "0"),
            Some(Err(_))
        ));
        assert_eq!(plan, DrainSettings::default());
    }

    #[test]
    fn settings_at_their_default_that_are_written_only_when_set_stay_out() {
        let plain = args(&DrainSettings::default());
        assert_eq!(plain.len(), 6, "{plain:?}");
        assert!(plain.iter().all(|a| !a.starts_with("--fleet-max-rate")));
        let mut plan = DrainSettings::default();
        apply(&mut plan, "fleet-max-rate", "100");
        assert!(args(&plan).contains(&"--fleet-max-rate=100".to_string()));
    }
}
