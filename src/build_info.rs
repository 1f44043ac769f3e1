//! What this binary is: its version, the git commit it was built from and the Cargo
//! profile (set by `build.rs`), for `wsdrain --version`, `wsdrain version` and the
//! `wsdrain_build_info` metric, so an operator can tell which build a pod runs.

/// The crate version, e.g. `0.2.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit (12 hex digits), or `unknown` for a build outside a git checkout.
pub const COMMIT: &str = env!("WSDRAIN_COMMIT");

/// The Cargo profile: `release` or `debug`.
pub const PROFILE: &str = env!("WSDRAIN_PROFILE");

/// The version line after the program name, shared by `--version` and `version`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WSDRAIN_COMMIT"),
    ", ",
    env!("WSDRAIN_PROFILE"),
    " build)"
);

/// The full line `wsdrain version` prints: the long version plus the platform.
pub fn describe() -> String {
    format!(
        "wsdrain {LONG_VERSION} {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}
