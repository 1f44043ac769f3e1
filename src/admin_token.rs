//! The admin bearer token, read from `--admin-token-file`.
//!
//! The admin port checks the token on every state-changing request, and a rotated token
//! (a Kubernetes Secret swapped under its mount) must take effect without a restart.
//! Reading the file on every request puts blocking file I/O on the async worker threads
//! and, when the file is empty or missing, used to log one warning per request: an
//! attacker (or a retrying preStop hook) could fill the node's log pipeline. So the
//! token is cached with a change check: one `stat` per request (modification time,
//! length, inode, device: a Secret swap changes the inode), a read only when something
//! changed, and a warning about an unusable file at most once a minute.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

/// How often an unusable token file is reported while it stays unusable.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why no token can be checked against: every state-changing request is refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read (missing, permissions...).
    #[error("admin token file {path} is unreadable: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        reason: String,
    },
    /// The file holds nothing but whitespace.
    #[error("admin token file {0} is empty")]
    Empty(PathBuf),
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
    dev: u64,
}

struct Entry {
    stamp: Option<Stamp>,
    token: Result<Arc<str>, TokenError>,
    last_warning: Option<Instant>,
}

static CACHE: LazyLock<Mutex<HashMap<PathBuf, Entry>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
        dev: m.dev(),
    })
}

fn load(path: &Path) -> Result<Arc<str>, TokenError> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Ok(Arc::from(t.trim())),
        Ok(_) => Err(TokenError::Empty(path.to_path_buf())),
        Err(e) => Err(TokenError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// The token the admin port expects, from `path`: the cached value while the file is
/// unchanged, re-read when it changed. An error means the file is unusable (it has
/// been logged, at most once per [`WARN_EVERY`]).
pub fn expected(path: &Path) -> Result<Arc<str>, TokenError> {
    let current = stamp(path);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let entry = cache.entry(path.to_path_buf()).or_insert(Entry {
        stamp: None,
        token: Err(TokenError::Empty(path.to_path_buf())),
        last_warning: None,
    });
    let fresh = match &current {
        Ok(s) => entry.stamp != Some(*s),
        Err(_) => true,
    };
    if fresh {
        let was_ok = entry.token.is_ok();
        entry.token = match &current {
            Ok(_) => load(path),
            Err(e) => Err(TokenError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        };
        entry.stamp = current.ok();
        if entry.token.is_ok() && !was_ok && entry.last_warning.is_some() {
            info!(path = %path.display(), "admin token file is usable again");
            entry.last_warning = None;
        }
    }
    if let Err(e) = &entry.token {
        let due = entry
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            warn!(error = %e, "refusing state-changing admin requests (repeated at most once a minute)");
            entry.last_warning = Some(Instant::now());
        }
    }
    entry.token.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_file_and_reports_problems() {
        let dir = std::env::temp_dir().join(format!("wsdrain-token-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        assert!(matches!(
            expected(&path),
            Err(TokenError::Unreadable { .. })
        ));
        std::fs::write(&path, "  \n").expect("write");
        assert!(matches!(expected(&path), Err(TokenError::Empty(_))));
        std::fs::write(&path, "first\n").expect("write");
        assert_eq!(expected(&path).expect("token").as_ref(), "first");
        // Same length, new content, through a new file renamed over the old one (how
        // a Secret mount swaps): the inode changes.
        let tmp = dir.join("token.new");
        std::fs::write(&tmp, "other\n").expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        assert_eq!(expected(&path).expect("token").as_ref(), "other");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
