//! The command line and the plan it gives: sizes and durations of a run.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Parser;

/// Revocations per second the revoke pool is sized for (a cell stops early,
/// and says so, if the pool runs out).
const REVOKE_POOL_RATE: f64 = 5000.0;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "authd-bench",
    about = "Throughput, latency and memory of authd's hot paths, as ratios to this machine's limits"
)]
pub struct Args {
    /// A ~30 s run: shorter cells and baselines, fewer stored sessions.
    #[arg(long)]
    pub quick: bool,

    /// A few seconds: every path (seeding, each operation, the burst, the
    /// baselines) once at tiny sizes and concurrency 1 and 4; exits non-zero
    /// on any error. The numbers mean nothing; CI runs it so the bench cannot rot.
    #[arg(long, conflicts_with = "quick")]
    pub smoke: bool,

    /// Sessions stored in bulk (through authd's store) for the space measurements and as the
    /// database the load runs against [default: 100000, 20000 with --quick].
    #[arg(long)]
    pub sessions: Option<u64>,

    /// Seconds of load per (operation, concurrency) cell [default: 4, 0.5 with --quick].
    #[arg(long)]
    pub cell_secs: Option<f64>,

    /// Operations to run [default: all]: login, refresh, introspect, me, sessions, revoke (HTTP);
    /// verify, verify-cached (authd's own JWT check, in-process); verifier, verifier-cached (the
    /// downstream `authd-verify` verifier on new / seen tokens); propagation (a session revoked
    /// through authd's API → refused by the verifier).
    #[arg(long, value_delimiter = ',')]
    pub ops: Vec<String>,

    /// Concurrency levels [default: 1,32,256; 1,4 with --smoke].
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<usize>,

    /// Sessions the propagation row revokes (one at a time) [default: 200, 5 with --smoke].
    #[arg(long)]
    pub revocations: Option<usize>,

    /// Skip the redis-benchmark and pgbench baselines.
    #[arg(long)]
    pub no_baselines: bool,

    /// Postgres to create the bench database in (loopback only).
    #[arg(
        long,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub database_url: String,

    /// Redis to use (loopback only); every key is under a unique prefix.
    #[arg(long, env = "TEST_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
}

/// Sizes and durations derived from the arguments.
pub struct Plan {
    pub smoke: bool,
    pub cell: Duration,
    pub sessions: u64,
    pub ops: Vec<Op>,
    pub concurrency: Vec<usize>,
    pub argon2_reps: usize,
    pub pgbench_secs: BTreeMap<usize, u64>,
    pub redis_requests: u64,
    pub crypto: Duration,
    pub revoke_pool: usize,
    /// Sessions the propagation row revokes (after one untimed warm-up).
    pub revocations: usize,
    /// New tokens of the verifier's interleaved timing against raw Ed25519.
    pub fresh_vs_raw_tokens: usize,
    /// Tasks that keep the verifier busy while revocations propagate.
    pub propagation_load_tasks: usize,
    pub baselines: bool,
    /// How long the machine is watched, authd idle, before the load.
    pub idle_probe: Duration,
    /// Users the login rows cycle through (all share one password hash).
    pub login_users: usize,
    /// Users whose sessions' access tokens the bearer, introspection and list rows use.
    pub access_users: usize,
    pub sessions_per_access_user: usize,
    /// Simultaneous logins of the memory measurement.
    pub burst_logins: usize,
}

impl Plan {
    pub fn new(args: &Args) -> anyhow::Result<Plan> {
        let default_cell = match (args.smoke, args.quick) {
            (true, _) => 0.2,
            (_, true) => 0.5,
            _ => 4.0,
        };
        let cell = Duration::from_secs_f64(args.cell_secs.unwrap_or(default_cell));
        if cell.is_zero() || cell > Duration::from_secs(120) {
            bail!("--cell-secs must be in (0, 120]");
        }
        let mut ops = Vec::new();
        for name in &args.ops {
            let op = Op::ALL.into_iter().find(|op| op.key() == name.trim()).ok_or_else(|| {
                anyhow!("unknown operation `{name}` (login,refresh,introspect,me,sessions,revoke,verify,verify-cached,verifier,verifier-cached,propagation)")
            })?;
            ops.push(op);
        }
        if ops.is_empty() {
            ops = Op::ALL.to_vec();
        }
        let mut concurrency = args.concurrency.clone();
        if concurrency.is_empty() {
            concurrency = if args.smoke { vec![1, 4] } else { vec![1, 32, 256] };
        }
        concurrency.sort_unstable();
        concurrency.dedup();
        if concurrency.is_empty() || concurrency.iter().any(|&c| c == 0 || c > 1024) {
            bail!("--concurrency levels must be in 1..=1024");
        }
        let default_sessions = match (args.smoke, args.quick) {
            (true, _) => 200,
            (_, true) => 20_000,
            _ => 100_000,
        };
        let sessions = args.sessions.unwrap_or(default_sessions);
        if sessions > 10_000_000 {
            bail!("--sessions is bounded at 10000000");
        }
        let revocations = args.revocations.unwrap_or(if args.smoke { 5 } else { 200 });
        if revocations == 0 || revocations > 100_000 {
            bail!("--revocations must be in 1..=100000");
        }
        let revoke_cells = concurrency.len() as f64;
        let revoke_pool = ((cell.as_secs_f64() * revoke_cells * REVOKE_POOL_RATE) as usize).clamp(1000, 500_000);
        let plan = Plan {
            smoke: false,
            cell,
            sessions,
            ops,
            concurrency,
            argon2_reps: if args.quick { 5 } else { 10 },
            pgbench_secs: if args.quick {
                BTreeMap::from([(1, 2), (8, 2), (32, 3)])
            } else {
                BTreeMap::from([(1, 5), (8, 5), (32, 10)])
            },
            redis_requests: if args.quick { 20_000 } else { 100_000 },
            crypto: Duration::from_secs_f64(if args.quick { 0.3 } else { 1.5 }),
            revoke_pool,
            revocations,
            fresh_vs_raw_tokens: if args.quick { 5_000 } else { 20_000 },
            propagation_load_tasks: 4,
            baselines: !args.no_baselines,
            idle_probe: Duration::from_secs(1),
            login_users: 1000,
            access_users: 256,
            sessions_per_access_user: 4,
            burst_logins: 500,
        };
        if !args.smoke {
            return Ok(plan);
        }
        Ok(Plan {
            smoke: true,
            argon2_reps: 1,
            pgbench_secs: BTreeMap::from([(1, 1)]),
            redis_requests: 2000,
            crypto: Duration::from_millis(50),
            revoke_pool: 200,
            fresh_vs_raw_tokens: 500,
            idle_probe: Duration::from_millis(200),
            login_users: 16,
            access_users: 8,
            sessions_per_access_user: 2,
            burst_logins: 8,
            ..plan
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `TokenIssuer::verify` of tokens it has never seen: the signature check.
    Verify,
    /// `TokenIssuer::verify` of tokens it has verified before (its cache).
    VerifyCached,
    Introspect,
    Me,
    Sessions,
    Refresh,
    Revoke,
    Login,
    /// `authd_verify::Verifier::verify` of tokens it has never seen.
    Verifier,
    /// `authd_verify::Verifier::verify` of tokens it has verified before.
    VerifierCached,
    /// A session revoked with `POST /v1/logout` → refused by the verifier
    /// (one measurement, not a cell per concurrency).
    Propagation,
}

impl Op {
    pub const ALL: [Op; 11] = [
        Op::Verify,
        Op::VerifyCached,
        Op::Introspect,
        Op::Me,
        Op::Sessions,
        Op::Refresh,
        Op::Revoke,
        Op::Login,
        Op::Verifier,
        Op::VerifierCached,
        Op::Propagation,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Op::Verify => "verify",
            Op::VerifyCached => "verify-cached",
            Op::Introspect => "introspect",
            Op::Me => "me",
            Op::Sessions => "sessions",
            Op::Refresh => "refresh",
            Op::Revoke => "revoke",
            Op::Login => "login",
            Op::Verifier => "verifier",
            Op::VerifierCached => "verifier-cached",
            Op::Propagation => "propagation",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Op::Verify => "JWT verify, new token",
            Op::VerifyCached => "JWT verify, seen token",
            Op::Introspect => "introspection",
            Op::Me => "bearer GET /v1/me",
            Op::Sessions => "GET /v1/sessions",
            Op::Refresh => "refresh",
            Op::Revoke => "revoke (refresh tok)",
            Op::Login => "login (argon2id)",
            Op::Verifier => "verifier, new token",
            Op::VerifierCached => "verifier, seen token",
            Op::Propagation => "revoke → verifier",
        }
    }
}
