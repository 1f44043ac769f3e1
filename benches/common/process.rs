//! Process accounting for the benches: the contenders run as child processes in their
//! own process groups, and the benches read their CPU time and RSS from /proc.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Raises the soft file-descriptor limit to the hard limit (children inherit it).
pub fn raise_nofile() -> u64 {
    // SAFETY: plain libc calls on a stack value.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A child process in its own process group; the whole group is killed on drop.
pub struct Proc {
    pub name: String,
    pub child: Child,
    /// Extra files (configs, logs) that go away with it.
    pub dir: Option<PathBuf>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, dir: Option<PathBuf>) -> Proc {
        cmd.process_group(0).stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; the child dies with the bench process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        if std::env::var_os("WSDRAIN_BENCH_VERBOSE").is_none() {
            cmd.stdout(Stdio::null());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Sum of VmRSS (KiB) over every live process in this child's process group.
    pub fn rss_kib(&self) -> u64 {
        group_rss_kib(self.pid())
    }

    /// CPU time (user + system, seconds) used so far by every live process in the group.
    pub fn cpu_secs(&self) -> f64 {
        group_cpu_secs(self.pid())
    }

    /// Waits up to `limit` for the process to exit; true if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: the group id is our own child's pid (process_group(0)).
        unsafe {
            libc::kill(-self.pid(), libc::SIGKILL);
        }
        let _ = self.child.wait();
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Pids of the live processes in process group `pgid`.
pub(super) fn group_pids(pgid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| stat[i + 1..].to_string()) else {
            continue;
        };
        let pgrp = after
            .split_whitespace()
            .nth(2)
            .and_then(|f| f.parse::<i32>().ok());
        if pgrp == Some(pgid) {
            out.push((pid, after));
        }
    }
    out
}

pub fn group_cpu_secs(pgid: i32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    group_pids(pgid)
        .iter()
        .map(|(_, after)| {
            // After ")": state(0) ppid pgrp session tty tpgid flags minflt cminflt majflt
            // cmajflt utime(11) stime(12).
            let f: Vec<&str> = after.split_whitespace().collect();
            let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            (t(11) + t(12)) / hz
        })
        .sum()
}

pub(super) fn group_rss_kib(pgid: i32) -> u64 {
    group_pids(pgid)
        .iter()
        .map(|&(pid, _)| vm_rss_kib(pid))
        .sum()
}

pub fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub(super) fn self_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::current_exe().expect("current exe"));
    c.args(args);
    c
}
