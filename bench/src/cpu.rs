//! Where the machine's time went during a cell: CPU ticks of this process's
//! threads (authd's, the client's or the downstream verifier's) and of every
//! other process, from /proc.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::{CLIENT_THREADS, DOWNSTREAM_THREADS};

pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// CPU ticks (USER_HZ) of this process's threads and of every other process.
#[derive(Default)]
pub struct CpuTicks {
    /// tid → (whose thread, ticks).
    threads: HashMap<u32, (Side, u64)>,
    /// pid → (comm, ticks), other processes.
    procs: HashMap<u32, (String, u64)>,
    busy: u64,
    total: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Authd,
    Client,
    Downstream,
}

#[derive(Default, Clone)]
pub struct CpuUse {
    /// Percent of all cores.
    pub authd: f64,
    pub postgres: f64,
    pub redis: f64,
    /// The load client and the downstream verifier (the bench's side).
    pub client: f64,
    pub other: f64,
    pub idle: f64,
    /// CPU seconds of authd's threads.
    pub authd_secs: f64,
    /// CPU seconds of the downstream verifier's threads.
    pub downstream_secs: f64,
    /// The busiest other process (comm, percent of all cores).
    pub top_other: Option<(String, f64)>,
}

/// (comm, utime + stime) of a /proc stat line.
fn stat_line(text: &str) -> Option<(&str, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = &text[open + 1..close];
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// The bench database's name, to tell its Postgres backends from others'.
pub static BENCH_DB: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Whether a postgres process works for the bench: a backend of its database,
/// or a shared server process (checkpointer, WAL writer…); not a backend of
/// another database (its title, in cmdline, names the database).
fn serves_bench_database(proc_dir: &std::path::Path) -> bool {
    let Ok(raw) = std::fs::read(proc_dir.join("cmdline")) else {
        return true;
    };
    let title = String::from_utf8_lossy(&raw);
    let is_backend = title.contains('(') || title.contains("[local]") || title.contains("autovacuum worker");
    !is_backend || BENCH_DB.get().is_some_and(|db| title.contains(db.as_str()))
}

fn numeric_entries(dir: &str) -> Vec<(u32, PathBuf)> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default()
}

impl CpuTicks {
    pub fn take() -> CpuTicks {
        let mut t = CpuTicks::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
            if let Some(line) = stat.lines().next() {
                let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                let at = |i: usize| v.get(i).copied().unwrap_or(0);
                // user nice system idle iowait irq softirq steal
                t.busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
                t.total = t.busy + at(3) + at(4);
            }
        }
        // The client is the main thread and the `bench-cli` runtime, the
        // verifier the `bench-ds` runtime; every other thread (runtime
        // `authd-srv`, hashing threads…) is authd's.
        let me = std::process::id();
        for (tid, path) in numeric_entries("/proc/self/task") {
            if let Ok(text) = std::fs::read_to_string(path.join("stat")) {
                if let Some((comm, ticks)) = stat_line(&text) {
                    let side = if tid == me || comm.starts_with(CLIENT_THREADS) {
                        Side::Client
                    } else if comm.starts_with(DOWNSTREAM_THREADS) {
                        Side::Downstream
                    } else {
                        Side::Authd
                    };
                    t.threads.insert(tid, (side, ticks));
                }
            }
        }
        for (pid, path) in numeric_entries("/proc") {
            if pid == me {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(path.join("stat")) {
                if let Some((comm, ticks)) = stat_line(&text) {
                    let mut comm = comm.to_string();
                    if comm == "postgres" && !serves_bench_database(&path) {
                        comm = "postgres (another database)".into();
                    }
                    t.procs.insert(pid, (comm, ticks));
                }
            }
        }
        t
    }

    /// Shares of the interval since `before`. Threads and processes are
    /// compared one by one, so one that started in between counts whole and
    /// one that ended is left out (its share shows up as "other").
    pub fn since(&self, before: &CpuTicks) -> CpuUse {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let pct = |ticks: u64| ticks as f64 * 100.0 / total;
        let (mut authd, mut client, mut downstream) = (0u64, 0u64, 0u64);
        for (tid, (side, ticks)) in &self.threads {
            let delta = ticks.saturating_sub(before.threads.get(tid).map(|t| t.1).unwrap_or(0));
            match side {
                Side::Authd => authd += delta,
                Side::Client => client += delta,
                Side::Downstream => downstream += delta,
            }
        }
        let (mut postgres, mut redis) = (0u64, 0u64);
        let mut others: HashMap<&str, u64> = HashMap::new();
        for (pid, (comm, ticks)) in &self.procs {
            let delta = ticks.saturating_sub(before.procs.get(pid).map(|p| p.1).unwrap_or(0));
            if comm == "postgres" {
                postgres += delta;
            } else if comm.starts_with("redis-server") {
                redis += delta;
            } else if delta > 0 {
                *others.entry(comm.as_str()).or_default() += delta;
            }
        }
        let busy = pct(self.busy.saturating_sub(before.busy));
        let (authd_pct, client_pct, pg_pct, redis_pct) =
            (pct(authd), pct(client + downstream), pct(postgres), pct(redis));
        CpuUse {
            authd: authd_pct,
            postgres: pg_pct,
            redis: redis_pct,
            client: client_pct,
            other: (busy - authd_pct - client_pct - pg_pct - redis_pct).max(0.0),
            idle: (100.0 - busy).max(0.0),
            // /proc reports in USER_HZ, 100 per second on Linux.
            authd_secs: authd as f64 / 100.0,
            downstream_secs: downstream as f64 / 100.0,
            top_other: others
                .into_iter()
                .max_by_key(|(_, ticks)| *ticks)
                .map(|(comm, ticks)| (comm.to_string(), pct(ticks))),
        }
    }
}
