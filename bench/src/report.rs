//! The report: the table of cells with their baselines and ratios, the
//! machine's limits, memory, the downstream verifier, and the targets of
//! issues 6 and 11.

use std::collections::BTreeMap;
use std::time::Duration;

use authd::config::ServeConfig;

use crate::baselines::Crypto;
use crate::cli::{Op, Plan};
use crate::downstream::{FreshVsRaw, Propagation};
use crate::load::{Burst, Cell};
use crate::seed::{CacheSpace, RefreshStorage, Space};
use crate::world::World;
use crate::{CLIENT_THREADS, SERVER_THREADS};

/// Cells where other processes used at least this share of the CPU are flagged.
const NOISY_OTHER_PCT: f64 = 10.0;

pub struct Report {
    pub cores: usize,
    pub plan_cell: Duration,
    pub header: Vec<String>,
    pub argon2_ms: f64,
    pub argon2_cold_ms: f64,
    pub argon2_parallel_rate: f64,
    pub burst: Option<Burst>,
    pub space: Option<Space>,
    pub cache: Option<CacheSpace>,
    pub refresh_storage: Option<RefreshStorage>,
    pub rss_after_fill_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    pub hwm_end_kib: Option<u64>,
    pub cells: Vec<Cell>,
    pub crypto: Option<Crypto>,
    /// The downstream verifier on new tokens against raw Ed25519 of the same tokens.
    pub verifier_raw: Option<FreshVsRaw>,
    pub propagation: Option<Propagation>,
    pub redis_get: BTreeMap<usize, f64>,
    pub pg_update: BTreeMap<usize, f64>,
    pub notes: Vec<String>,
}

pub fn fmt_rate(r: f64) -> String {
    if r >= 1000.0 {
        let whole = r.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    } else if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

pub fn fmt_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0}ns")
    } else if ns < 1e4 {
        format!("{:.1}µs", ns / 1e3)
    } else if ns < 1e6 {
        format!("{:.0}µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

/// A delay recorded as 1 ns when nothing was left to wait for.
pub fn fmt_delay(ns: u64) -> String {
    if ns <= 1 {
        "0".into()
    } else {
        fmt_ns(ns)
    }
}

pub fn fmt_kib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

impl Report {
    pub fn new(plan: &Plan, cores: usize, world: &World, config: &ServeConfig) -> Report {
        let header = vec![
            format!(
                "authd-bench: {cores} cores, Linux, Postgres {}, Redis {}; authd in-process (runtime threads {SERVER_THREADS} and its own threads), \
                 load client hyper HTTP/1.1 keep-alive (threads {CLIENT_THREADS}), loopback only",
                world.pg_version, world.redis_version
            ),
            format!(
                "authd config: production defaults; argon2id m={} KiB t={} p={}, hash queue {}, Postgres pool {}, \
                 Redis timeout {:?}, signing key {}, log level info to a file",
                config.argon2.m_kib,
                config.argon2.t,
                config.argon2.p,
                config.hash_queue,
                config.store.db_max_connections,
                config.store.redis_timeout,
                config.keys.alg
            ),
            format!(
                "{:.1} s per cell; {} sessions stored in bulk (through authd's store) in the database during the load",
                plan.cell.as_secs_f64(),
                plan.sessions
            ),
        ];
        let mut header = header;
        let env: Vec<String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("MALLOC_") || k.starts_with("AUTHD_") || k == "RUST_LOG")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !env.is_empty() {
            header.push(format!("environment that changes the numbers: {}", env.join(" ")));
        }
        Report {
            cores,
            plan_cell: plan.cell,
            header,
            argon2_ms: f64::NAN,
            argon2_cold_ms: f64::NAN,
            argon2_parallel_rate: f64::NAN,
            burst: None,
            space: None,
            cache: None,
            refresh_storage: None,
            rss_after_fill_kib: None,
            rss_end_kib: None,
            hwm_end_kib: None,
            cells: Vec::new(),
            crypto: None,
            verifier_raw: None,
            propagation: None,
            redis_get: BTreeMap::new(),
            pg_update: BTreeMap::new(),
            notes: Vec::new(),
        }
    }

    /// Failures worth keeping authd's log for (503s shed by a full hash
    /// queue in the burst are authd working as configured, not counted here).
    fn unexpected_errors(&self) -> u64 {
        let cells: u64 = self.cells.iter().map(|c| c.errors).sum();
        let burst = self.burst.as_ref().map(|b| b.other).unwrap_or(0);
        let cache = self.cache.as_ref().map(|c| c.errors).unwrap_or(0);
        let propagation = self.propagation.as_ref().map(|p| p.errors + p.load_errors).unwrap_or(0);
        cells + burst + cache + propagation
    }

    /// What fails a run: the unexpected errors; in a smoke run also any 503
    /// in its few logins, a cell without one success, and a baseline that
    /// could not be measured (each is in the notes).
    pub fn failures(&self, smoke: bool) -> u64 {
        let mut failures = self.unexpected_errors();
        if smoke {
            failures += self.burst.as_ref().map(|b| b.shed).unwrap_or(0);
            failures += self.cells.iter().filter(|c| c.ok == 0).count() as u64;
            failures += self.propagation.as_ref().map_or(0, |p| u64::from(p.revocations == 0));
            failures += self.notes.len() as u64;
        }
        failures
    }

    fn login_limit(&self) -> f64 {
        self.cores as f64 / (self.argon2_ms / 1e3)
    }

    /// The baseline of an operation at concurrency `c` (label, rate).
    fn baseline(&self, op: Op, c: usize) -> Option<(String, f64)> {
        let at = |map: &BTreeMap<usize, f64>, name: &str| {
            map.get(&c)
                .map(|r| (format!("{name} c={c}"), *r))
                .or_else(|| map.get(&32).map(|r| (format!("{name} c=32*"), *r)))
        };
        match op {
            Op::Login => self
                .login_limit()
                .is_finite()
                .then(|| (format!("{} cores ÷ argon2id", self.cores), self.login_limit())),
            Op::Refresh | Op::Revoke => at(&self.pg_update, "pgbench UPDATE"),
            Op::Introspect | Op::Me => at(&self.redis_get, "redis GET"),
            Op::Sessions | Op::VerifyCached | Op::VerifierCached | Op::Propagation => None,
            Op::Verifier => self.verifier_raw.as_ref().map(|k| {
                let n = c.min(self.cores);
                (format!("aws-lc verify ×{n}"), k.aws.cpu * n as f64)
            }),
            Op::Verify => self.crypto.as_ref().map(|k| {
                let n = c.min(self.cores);
                (format!("ring verify ×{n}"), k.ring_verify * n as f64)
            }),
        }
    }

    fn cell(&self, op: Op, c: usize) -> Option<&Cell> {
        self.cells.iter().find(|x| x.op == op && x.c == c)
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let mut line = |s: String| {
            o.push_str(&s);
            o.push('\n');
        };
        line(String::new());
        for h in &self.header {
            line(h.clone());
        }
        line(String::new());
        line(format!(
            "{:<21} {:>3} {:>9} {:>8} {:>8} {:>8} {:>6}  {:<28} {:>6} {:>9}  {}",
            "operation",
            "c",
            "req/s",
            "p50",
            "p99",
            "p999",
            "errors",
            "baseline (its rate)",
            "ratio",
            "authd CPU",
            "CPU % authd/pg/redis/client/other/idle"
        ));
        line(format!(
            "{:-<21} {:->3} {:->9} {:->8} {:->8} {:->8} {:->6}  {:-<28} {:->6} {:->9}  {:-<38}",
            "", "", "", "", "", "", "", "", "", "", ""
        ));
        let mut notes = Vec::new();
        let (mut noisy, mut busiest) = (0usize, None::<(String, f64)>);
        for cell in &self.cells {
            let (label, ratio) = match self.baseline(cell.op, cell.c) {
                Some((name, rate)) => (
                    format!("{name} {}", fmt_rate(rate)),
                    format!("{:.2}", cell.rate() / rate),
                ),
                None => ("—".to_string(), "—".to_string()),
            };
            // The verifier rows: the verifier's threads, not authd's.
            let secs = match cell.op {
                Op::Verifier | Op::VerifierCached => cell.cpu.downstream_secs,
                _ => cell.cpu.authd_secs,
            };
            let per_op = if cell.ok > 0 {
                fmt_ns((secs * 1e9 / cell.ok as f64) as u64) + "/op"
            } else {
                "—".into()
            };
            let u = &cell.cpu;
            line(format!(
                "{:<21} {:>3} {:>9} {:>8} {:>8} {:>8} {:>6}  {:<28} {:>6} {:>9}  {:.0}/{:.0}/{:.0}/{:.0}/{:.0}/{:.0}{}",
                cell.op.label(),
                cell.c,
                fmt_rate(cell.rate()),
                fmt_ns(cell.hist.value_at_quantile(0.5)),
                fmt_ns(cell.hist.value_at_quantile(0.99)),
                fmt_ns(cell.hist.value_at_quantile(0.999)),
                cell.errors,
                label,
                ratio,
                per_op,
                u.authd,
                u.postgres,
                u.redis,
                u.client,
                u.other,
                u.idle,
                match (cell.exhausted, u.other >= NOISY_OTHER_PCT) {
                    (true, _) => "  (pool used up)",
                    (false, true) => "  !",
                    _ => "",
                }
            ));
            if u.other >= NOISY_OTHER_PCT {
                noisy += 1;
                if let Some((comm, pct)) = &u.top_other {
                    if busiest.as_ref().is_none_or(|(_, p)| pct > p) {
                        busiest = Some((comm.clone(), *pct));
                    }
                }
            }
            if let Some(e) = &cell.first_error {
                notes.push(format!("{} c={}: first error: {e}", cell.op.label(), cell.c));
            }
            if cell.exhausted {
                notes.push(format!(
                    "{} c={}: its token pool ran out after {:.1} s of the {:.1} s cell",
                    cell.op.label(),
                    cell.c,
                    cell.elapsed.as_secs_f64(),
                    self.plan_cell.as_secs_f64()
                ));
            }
        }
        line("  * no baseline at this concurrency; compared with c=32. authd CPU = CPU time of authd's threads (all but the client's and the verifier's) per successful operation; in the verifier rows, of the verifier's threads.".into());
        line("  Latencies are per request as the client saw it (c requests in flight); the verify and verifier rows time the in-process call alone; the client share of the CPU includes the verifier's threads.".into());
        if noisy > 0 {
            let (comm, pct) = busiest.unwrap_or_default();
            line(format!(
                "  ! the machine was not quiet: CPU time outside authd, the client, Postgres and Redis (other processes, \
                 unattributed kernel work) was ≥ {NOISY_OTHER_PCT:.0} % in {noisy} of {} cells (busiest other process: \
                 `{comm}`, {pct:.0} %); those rows may understate authd",
                self.cells.len()
            ));
        }

        line(String::new());
        line("machine limits measured in this run".into());
        for (c, r) in &self.redis_get {
            line(format!(
                "  redis-benchmark -t get -c {c:<3}          {:>10} req/s",
                fmt_rate(*r)
            ));
        }
        for (c, r) in &self.pg_update {
            line(format!(
                "  pgbench single-row UPDATE -c {c:<3}       {:>10} tps",
                fmt_rate(*r)
            ));
        }
        if self.argon2_ms.is_finite() {
            line(format!(
                "  argon2id one hash (1 core)            {:>10.1} ms  → {} cores ÷ t = {:.1} logins/s \
                 (memory reused; {:.1} ms with a fresh allocation per hash)",
                self.argon2_ms,
                self.cores,
                self.login_limit(),
                self.argon2_cold_ms
            ));
            line(format!(
                "  argon2id on {} threads at once        {:>10.1} hashes/s ({:.0} % of cores ÷ t: what the cores share, e.g. memory bandwidth)",
                self.cores,
                self.argon2_parallel_rate,
                self.argon2_parallel_rate / self.login_limit() * 100.0
            ));
        }
        if let Some(k) = &self.crypto {
            line(String::new());
            line(format!(
                "signatures, one thread (EdDSA, {}-byte access token)",
                k.token_bytes
            ));
            line(format!(
                "  JWT sign, new claims    {:>9}/s   raw ring Ed25519 sign   {:>9}/s   ratio {:.2}   (raw aws-lc-rs {:>9}/s, ratio {:.2})",
                fmt_rate(k.jwt_sign),
                fmt_rate(k.ring_sign),
                k.jwt_sign / k.ring_sign,
                fmt_rate(k.aws_sign),
                k.jwt_sign / k.aws_sign
            ));
            line(format!(
                "  JWT verify, new token   {:>9}/s   raw ring Ed25519 verify {:>9}/s   ratio {:.2}   (raw aws-lc-rs {:>9}/s, ratio {:.2})",
                fmt_rate(k.jwt_verify),
                fmt_rate(k.ring_verify),
                k.jwt_verify / k.ring_verify,
                fmt_rate(k.aws_verify),
                k.jwt_verify / k.aws_verify
            ));
        }

        if self.verifier_raw.is_some() || self.propagation.is_some() || self.has_verifier_cells() {
            line(String::new());
            line("downstream verifier (authd-verify, following this authd: discovery, JWKS, revocation snapshot + stream)".into());
        }
        if let Some(k) = &self.verifier_raw {
            line(format!(
                "  new tokens, one thread, interleaved in {}-token slices with raw Ed25519 of the same {} tokens, per second of \
                 the thread's CPU time: verifier {}/s, raw aws-lc-rs (its backend, key parsed once) {}/s → {:.1} %; raw ring \
                 {}/s → {:.1} %; by the wall clock {}/s vs {}/s → {:.1} %",
                crate::downstream::SLICE,
                k.tokens,
                fmt_rate(k.verifier.cpu),
                fmt_rate(k.aws.cpu),
                k.verifier.cpu / k.aws.cpu * 100.0,
                fmt_rate(k.ring.cpu),
                k.verifier.cpu / k.ring.cpu * 100.0,
                fmt_rate(k.verifier.wall),
                fmt_rate(k.aws.wall),
                k.verifier.wall / k.aws.wall * 100.0
            ));
        }
        for cell in self.cells.iter().filter(|c| c.op == Op::VerifierCached) {
            let n = cell.c.min(self.cores);
            line(format!(
                "  seen tokens, c={:<3} {:>11}/s = {:>11}/s per core ({n} of {} cores busy)",
                cell.c,
                fmt_rate(cell.rate()),
                fmt_rate(cell.rate() / n as f64),
                self.cores
            ));
        }
        if let Some(p) = &self.propagation {
            line(format!(
                "  revoke → refusal: {} sessions logged out one by one (POST /v1/logout, answer p50 {}), each polled with verify \
                 from before its revoke: from the revoke's answer to the first refusal p50 {} p90 {} p99 {} max {} \
                 ({} refused no later than the answer; from sending the revoke p50 {} p99 {}); meanwhile {} tasks verified {}/s; {} errors, {} load errors, CPU {:.0}/{:.0}/{:.0}/{:.0}/{:.0}/{:.0}",
                p.revocations,
                fmt_ns(p.logout.value_at_quantile(0.5)),
                fmt_delay(p.delays.value_at_quantile(0.5)),
                fmt_delay(p.delays.value_at_quantile(0.9)),
                fmt_delay(p.delays.value_at_quantile(0.99)),
                fmt_delay(p.delays.max()),
                p.before_answer,
                fmt_ns(p.from_request.value_at_quantile(0.5)),
                fmt_ns(p.from_request.value_at_quantile(0.99)),
                p.load_tasks,
                fmt_rate(p.load_rate),
                p.errors,
                p.load_errors,
                p.cpu.authd,
                p.cpu.postgres,
                p.cpu.redis,
                p.cpu.client,
                p.cpu.other,
                p.cpu.idle
            ));
            if let Some(e) = &p.first_error {
                notes.push(format!("revoke → verifier: first error: {e}"));
            }
        }

        line(String::new());
        line("memory".into());
        if let Some(b) = &self.burst {
            line(format!(
                "  {} simultaneous logins: {} ok, {} shed with 503, {} other errors, {:.1} s; login p50 {} p99 {}",
                b.n,
                b.ok,
                b.shed,
                b.other,
                b.seconds,
                fmt_ns(b.hist.value_at_quantile(0.5)),
                fmt_ns(b.hist.value_at_quantile(0.99))
            ));
            line(format!(
                "  peak RSS of the process during them: {} (before: {}; includes the in-process load client and its {} connections)",
                fmt_kib(b.hwm_kib),
                fmt_kib(b.rss_before_kib),
                b.n
            ));
            if let Some(e) = &b.first_other {
                notes.push(format!("simultaneous logins: first error: {e}"));
            }
            if let Some(e) = &b.first_shed {
                notes.push(format!("simultaneous logins: first 503: {e}"));
            }
        }
        if let Some(s) = &self.space {
            line(format!(
                "  Postgres: {} sessions (+1 refresh token each) stored in {:.1} s: {:.0} bytes per session (sessions + refresh_tokens, heap + indexes)",
                s.sessions,
                s.seconds,
                s.pg_bytes as f64 / s.sessions.max(1) as f64
            ));
        }
        if let Some(r) = &self.refresh_storage {
            line(format!(
                "  Postgres per session after 1 refresh: {:.1} rows, {:.0} bytes; after {}: {:.1} rows, {:.0} bytes \
                 (sessions + refresh_tokens + session_events, live tuples; {} sessions, {:.1} s)",
                r.after_one.rows,
                r.after_one.bytes,
                r.refreshes,
                r.after_n.rows,
                r.after_n.bytes,
                r.sessions,
                r.seconds
            ));
        }
        if let Some(c) = &self.cache {
            line(format!(
                "  Redis: {} sessions cached through authd's cache in {:.1} s ({}/s, {} errors): used_memory +{:.0} bytes per session; MEMORY USAGE of a key {}",
                c.filled,
                c.seconds,
                fmt_rate(c.filled as f64 / c.seconds.max(1e-9)),
                c.errors,
                c.used_memory_delta as f64 / c.filled.max(1) as f64,
                c.sampled_key_bytes.map(|b| format!("{b:.0} bytes (mean of 200)")).unwrap_or_else(|| "n/a".into())
            ));
        }
        line(format!(
            "  process RSS (with the bench's own buffers) after caching: {}; at the end of the load: {}; peak since the burst: {}",
            fmt_kib(self.rss_after_fill_kib),
            fmt_kib(self.rss_end_kib),
            fmt_kib(self.hwm_end_kib)
        ));

        line(String::new());
        line("targets (issues 6, 11 and 14)".into());
        for (what, measured, met) in self.targets() {
            let verdict = match met {
                Some(true) => "MET   ",
                Some(false) => "MISSED",
                None => "n/a   ",
            };
            line(format!("  [{verdict}] {what:<62} {measured}"));
        }
        notes.extend(self.notes.iter().cloned());
        if !notes.is_empty() {
            line(String::new());
            line("notes".into());
            for n in notes {
                line(format!("  - {n}"));
            }
        }
        o
    }

    fn targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let burst_n = self.burst.as_ref().map(|b| b.n).unwrap_or(0);
        for (op, name) in [(Op::Introspect, "introspection"), (Op::Me, "bearer check")] {
            let cell = self.cell(op, 32);
            t.push(half_of(
                format!("{name} ≥ 50 % of redis-benchmark GET at c=32"),
                cell,
                self.redis_get.get(&32),
            ));
            t.push(p99_target(format!("{name} p99 < 2 ms at c=32"), cell, |p99| {
                p99 < 2_000_000
            }));
        }
        let refresh = self.cell(Op::Refresh, 32);
        t.push(half_of(
            "refresh ≥ 50 % of pgbench single-row UPDATE at c=32".into(),
            refresh,
            self.pg_update.get(&32),
        ));
        t.push(p99_target("refresh p99 < 10 ms at c=32".into(), refresh, |p99| {
            p99 < 10_000_000
        }));
        // Issue 14: refresh against pgbench at 8 clients, and its tail.
        let reference = crate::baselines::PGBENCH_REFERENCE_CLIENTS;
        t.push(half_of(
            format!("refresh (c=32) ≥ 50 % of pgbench single-row UPDATE at c={reference}"),
            refresh,
            self.pg_update.get(&reference),
        ));
        t.push(p99_target("refresh p99 ≤ 25 ms at c=32".into(), refresh, |p99| {
            p99 <= 25_000_000
        }));
        for c in [32, 256] {
            let what = format!("refresh p99 within 2× of p90 at c={c}");
            match self.cell(Op::Refresh, c) {
                Some(cell) if cell.ok > 0 => {
                    let (p90, p99) = (cell.hist.value_at_quantile(0.9), cell.hist.value_at_quantile(0.99));
                    t.push((
                        what,
                        format!(
                            "p90 {} p99 {} ({:.2}×)",
                            fmt_ns(p90),
                            fmt_ns(p99),
                            p99 as f64 / p90.max(1) as f64
                        ),
                        Some(p99 <= 2 * p90),
                    ));
                }
                _ => t.push((what, "not measured".into(), None)),
            }
        }
        match self.cell(Op::Login, 32) {
            Some(cell) if self.login_limit().is_finite() => t.push((
                "login ≥ 90 % of cores ÷ argon2id time (c=32)".into(),
                format!(
                    "{:.1} / {:.1} = {:.0} % ({:.0} % of argon2id on all cores at once)",
                    cell.rate(),
                    self.login_limit(),
                    cell.rate() / self.login_limit() * 100.0,
                    cell.rate() / self.argon2_parallel_rate * 100.0
                ),
                Some(cell.rate() >= 0.9 * self.login_limit()),
            )),
            _ => t.push((
                "login ≥ 90 % of cores ÷ argon2id time (c=32)".into(),
                "not measured".into(),
                None,
            )),
        }
        match self.burst.as_ref().and_then(|b| b.hwm_kib) {
            Some(kib) => t.push((
                format!("peak RSS < 300 MiB under {burst_n} simultaneous logins"),
                fmt_kib(Some(kib)),
                Some(kib < 300 * 1024),
            )),
            None => t.push((
                format!("peak RSS < 300 MiB under {burst_n} simultaneous logins"),
                "not measured".into(),
                None,
            )),
        }
        t.extend(self.downstream_targets());
        let cells: u64 = self.cells.iter().map(|c| c.errors).sum();
        let (shed, other) = self.burst.as_ref().map(|b| (b.shed, b.other)).unwrap_or((0, 0));
        t.push((
            "no errors in any run".into(),
            format!("{cells} in the load cells; {shed} shed (503) + {other} other in the {burst_n}-login burst"),
            Some(cells + shed + other == 0),
        ));
        t
    }

    fn has_verifier_cells(&self) -> bool {
        self.cells
            .iter()
            .any(|c| matches!(c.op, Op::Verifier | Op::VerifierCached))
    }

    /// Issue 11: the downstream verifier's rates and revocation propagation.
    fn downstream_targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut t = Vec::new();
        let fresh = "verifier, new tokens ≥ 90 % of raw Ed25519 verify (same tokens, 1 thread)".to_string();
        match &self.verifier_raw {
            Some(k) => t.push((
                fresh,
                format!(
                    "{} / {} (aws-lc-rs, per CPU s) = {:.1} %; vs ring {:.1} %",
                    fmt_rate(k.verifier.cpu),
                    fmt_rate(k.aws.cpu),
                    k.verifier.cpu / k.aws.cpu * 100.0,
                    k.verifier.cpu / k.ring.cpu * 100.0
                ),
                Some(k.verifier.cpu >= 0.9 * k.aws.cpu),
            )),
            None => t.push((fresh, "not measured".into(), None)),
        }
        let seen = "verifier, seen token ≥ 1M/s per core".to_string();
        // One task keeps exactly one core busy: the lowest concurrency measured.
        match self
            .cells
            .iter()
            .filter(|c| c.op == Op::VerifierCached)
            .min_by_key(|c| c.c)
        {
            Some(cell) => {
                let per_core = cell.rate() / cell.c.min(self.cores) as f64;
                t.push((
                    seen,
                    format!("{}/s per core (c={})", fmt_rate(per_core), cell.c),
                    Some(per_core >= 1e6 && cell.errors == 0),
                ))
            }
            None => t.push((seen, "not measured".into(), None)),
        }
        let prop = "revoke → verifier refusal p99 < 100 ms (loopback, verifier under load)".to_string();
        match &self.propagation {
            Some(p) if p.revocations > 0 => {
                let p99 = p.delays.value_at_quantile(0.99);
                t.push((
                    prop,
                    format!(
                        "p99 {} (p50 {}, max {}) over {} revocations, {} errors",
                        fmt_delay(p99),
                        fmt_delay(p.delays.value_at_quantile(0.5)),
                        fmt_delay(p.delays.max()),
                        p.revocations,
                        p.errors
                    ),
                    Some(p99 < 100_000_000 && p.errors == 0),
                ))
            }
            Some(p) => t.push((prop, format!("no revocation timed; {} errors", p.errors), Some(false))),
            None => t.push((prop, "not measured".into(), None)),
        }
        t
    }
}

/// One line of the targets: what, what was measured, met (`None`: not measured).
type Target = (String, String, Option<bool>);

/// `what`: the cell's rate is at least half of the baseline's.
fn half_of(what: String, cell: Option<&Cell>, base: Option<&f64>) -> Target {
    match (cell, base) {
        (Some(cell), Some(base)) => (
            what,
            format!(
                "{} / {} = {:.0} %",
                fmt_rate(cell.rate()),
                fmt_rate(*base),
                cell.rate() / base * 100.0
            ),
            Some(cell.rate() >= 0.5 * base),
        ),
        _ => (what, "not measured".into(), None),
    }
}

/// `what`: the cell answered, and `met` holds of its p99 (nanoseconds).
fn p99_target(what: String, cell: Option<&Cell>, met: impl Fn(u64) -> bool) -> Target {
    match cell {
        Some(cell) => {
            let p99 = cell.hist.value_at_quantile(0.99);
            (what, fmt_ns(p99), Some(met(p99) && cell.ok > 0))
        }
        None => (what, "not measured".into(), None),
    }
}
