//! The data path's threads: one single-threaded tokio runtime per thread, and an
//! acceptor that hands each accepted connection to one of them.
//!
//! Why: on tokio's work-stealing runtime a connection's task, its two sockets and the
//! wake-ups between them wander between threads; every hand-off costs a futex wake-up
//! and a context switch, and those were the top of the relay's profile
//! (docs/performance.md, "Thread per core"). Here a connection lives on one thread from
//! its first byte to its close: its hyper task, the app connection, the relay and their
//! timers all run on the runtime of the thread it was handed to, so relaying a message
//! touches no other thread. The acceptor, the admin port, the drain controller and the
//! signal handling stay on the main thread; everything they share with the data path
//! (registry, drain, metrics) was already behind `Arc`s and atomics.
//!
//! The number of data-path threads is `TOKIO_WORKER_THREADS` (what `wsdrain inject
//! --worker-threads` sets), else the number of CPUs, so the flag keeps its meaning.
//! A new connection goes to the thread with the fewest live tasks (ties in turn), so
//! long-lived WebSockets stay spread even after churn.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tracing::debug;

/// Environment variable naming the number of data-path threads (tokio's own name, so a
/// pod spec written for the multi-threaded runtime means the same here).
pub const THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

/// Upper bound for [`THREADS_ENV`]; more threads than this is a typo, not a plan.
const MAX_THREADS: usize = 1024;

/// The data-path threads of this process, once started by [`start`].
static DATA_PATH: OnceLock<Workers> = OnceLock::new();

/// Handles to the data-path runtimes, and whose turn it is on a tie.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Workers {
    /// How many data-path threads run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never true: [`start`] refuses zero threads. Here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The runtime a new connection goes to: fewest live tasks, ties in turn.
    fn pick(&self) -> &Handle {
        let n = self.handles.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = start;
        let mut best_load = usize::MAX;
        for k in 0..n {
            let i = (start + k) % n;
            let load = self.handles[i].metrics().num_alive_tasks();
            if load < best_load {
                best = i;
                best_load = load;
            }
        }
        &self.handles[best]
    }
}

/// Reads the number of data-path threads from [`THREADS_ENV`], else the CPU count.
/// A value that is not a whole number from 1 to 1024 is an error naming the variable.
pub fn thread_count() -> anyhow::Result<usize> {
    match std::env::var(THREADS_ENV) {
        Ok(raw) => parse_threads(&raw),
        Err(std::env::VarError::NotPresent) => {
            Ok(std::thread::available_parallelism().map_or(1, usize::from))
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("{THREADS_ENV} must be a whole number from 1 to {MAX_THREADS}")
        }
    }
}

fn parse_threads(raw: &str) -> anyhow::Result<usize> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => anyhow::bail!(
            "{THREADS_ENV} must be a whole number from 1 to {MAX_THREADS}, got {raw:?}"
        ),
    }
}

/// Starts `count` data-path threads, each running its own single-threaded runtime until
/// the process exits, and makes them the ones [`serve`] hands connections to. Called
/// once by `wsdrain proxy`; a second call is an error.
pub fn start(count: usize) -> anyhow::Result<&'static Workers> {
    anyhow::ensure!(count >= 1, "at least one data-path thread is needed");
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a data-path runtime")?;
        handles.push(rt.handle().clone());
        std::thread::Builder::new()
            .name(format!("wsdrain-data-{i}"))
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .context("starting a data-path thread")?;
    }
    let workers = Workers {
        handles,
        next: AtomicUsize::new(0),
    };
    DATA_PATH
        .set(workers)
        .map_err(|_| anyhow::anyhow!("the data-path threads were already started"))?;
    DATA_PATH
        .get()
        .context("the data-path threads vanished after start")
}

/// The data-path threads, if [`start`] ran in this process.
pub fn data_path() -> Option<&'static Workers> {
    DATA_PATH.get()
}

/// Accepts on `listener` like [`crate::accept::serve`], but runs `accepted` on a
/// data-path thread with the socket registered there, so the connection's tasks (which
/// `accepted` spawns) live on that thread. Without [`start`] (the library used
/// in-process) `accepted` runs on the current runtime, as before.
pub async fn serve<F, Fut>(
    listener: tokio::net::TcpListener,
    name: &'static str,
    on_error: impl Fn(),
    accepted: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(workers) = data_path() else {
        crate::accept::serve(listener, name, on_error, |stream, peer| {
            tokio::spawn(accepted(stream, peer));
        })
        .await;
        return;
    };
    let accepted = std::sync::Arc::new(accepted);
    crate::accept::serve(listener, name, on_error, |stream, peer| {
        // Leave this runtime's reactor; the chosen thread registers the socket with its own.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, error = %e, "could not hand an accepted socket over");
                return;
            }
        };
        let accepted = accepted.clone();
        workers.pick().spawn(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => accepted(stream, peer).await,
                Err(e) => debug!(%peer, error = %e, "could not register an accepted socket"),
            }
        });
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_goes_to_the_least_busy_thread() {
        let rts: Vec<_> = (0..3)
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime")
            })
            .collect();
        let workers = Workers {
            handles: rts.iter().map(|rt| rt.handle().clone()).collect(),
            next: AtomicUsize::new(0),
        };
        // Threads 0 and 2 each hold a live connection task; 1 holds none.
        let _a = rts[0].spawn(std::future::pending::<()>());
        let _b = rts[2].spawn(std::future::pending::<()>());
        for _ in 0..4 {
            let picked = workers.pick();
            assert!(picked.id() == rts[1].handle().id(), "picked a busy thread");
        }
        // Once all are level, the turn goes round.
        let _c = rts[1].spawn(std::future::pending::<()>());
        let ids: std::collections::HashSet<_> = (0..3).map(|_| workers.pick().id()).collect();
        assert_eq!(ids.len(), 3, "ties are taken in turn");
    }

    #[test]
    fn thread_count_is_a_whole_number_in_range() {
        assert_eq!(parse_threads("2").ok(), Some(2));
        assert_eq!(parse_threads(" 8 ").ok(), Some(8));
        for bad in ["0", "-1", "two", "", "1025", "1.5"] {
            let err = parse_threads(bad).expect_err(bad).to_string();
            assert!(err.contains("TOKIO_WORKER_THREADS"), "{err}");
        }
    }
}
