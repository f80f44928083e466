//! `authd-bench`: throughput, latency and memory of authd's hot paths over
//! loopback, each printed as a ratio to a limit of this machine measured in
//! the same run (issue 6).
//!
//! authd runs inside this process on a tokio runtime of its own (threads
//! named `authd-srv`, plus whatever threads authd starts itself, such as its
//! hashing threads), built from the production defaults, against the real
//! Postgres and Redis: a fresh database `authd_bench_<random>` and a unique
//! Redis key prefix, both removed at the end. The load client (threads
//! `bench-cli`) is a small hyper HTTP/1.1 client with one keep-alive
//! connection per concurrent worker; latencies go to HDR histograms. Every
//! loop is bounded in time and in count, and only loopback addresses are
//! ever contacted.
//!
//! ```sh
//! cargo run --release --bin authd-bench -- --quick                # ~30 s
//! cargo run --release --bin authd-bench                           # ~3 min
//! cargo run --release --bin authd-bench -- --sessions 1000000     # full space run
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use authd::app::Application;
use authd::auth::jwt::AccessClaims;
use authd::auth::keys::{self, KeyAlg};
use authd::clock::SystemClock;
use authd::config::ServeConfig;
use authd::domain::{SessionId, UserId};
use authd::session::SessionService;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgPool};
use time::OffsetDateTime;
use tokio::runtime::Handle;
use tokio::sync::Barrier;
use uuid::Uuid;

const SERVER_THREADS: &str = "authd-srv";
const CLIENT_THREADS: &str = "bench-cli";
const PASSWORD: &str = "correct horse battery staple";
const BROWSER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const FORM: &str = "application/x-www-form-urlencoded";
/// Users the login rows cycle through (all share one password hash).
const LOGIN_USERS: usize = 1000;
/// Sessions whose access tokens the bearer, introspection and list rows use.
const ACCESS_USERS: usize = 256;
const SESSIONS_PER_ACCESS_USER: usize = 4;
/// Simultaneous logins of the memory measurement.
const RSS_LOGINS: usize = 500;
/// No single request may take longer than this before it counts as an error.
const REQUEST_BOUND: Duration = Duration::from_secs(30);
/// Upper bound on requests per cell, whatever the duration.
const MAX_REQUESTS_PER_CELL: u64 = 5_000_000;
/// Rows of the pgbench table (one random row updated per transaction).
const PGBENCH_ROWS: i64 = 100_000;
/// client_id of the bulk-seeded sessions, so they can be found again.
const BULK_CLIENT: &str = "bench-bulk";
/// How long a cached "live" entry lives in authd (LIVE_CACHE_TTL).
const LIVE_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Cells where other processes used at least this share of the CPU are flagged.
const NOISY_OTHER_PCT: f64 = 10.0;
/// Verifications per second and core the pool of new tokens is sized for.
const NEW_TOKENS_PER_SEC: f64 = 30_000.0;
/// At most this many new tokens per cell (about 600 bytes each).
const MAX_NEW_TOKENS: usize = 150_000;
/// Revocations per second the revoke pool is sized for (a cell stops early,
/// and says so, if the pool runs out).
const REVOKE_POOL_RATE: f64 = 5000.0;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "authd-bench",
    about = "Throughput, latency and memory of authd's hot paths, as ratios to this machine's limits"
)]
struct Args {
    /// A ~30 s run: shorter cells and baselines, fewer stored sessions.
    #[arg(long)]
    quick: bool,

    /// Sessions stored in bulk (SQL) for the space measurements and as the
    /// database the load runs against [default: 100000, 20000 with --quick].
    #[arg(long)]
    sessions: Option<u64>,

    /// Seconds of load per (operation, concurrency) cell [default: 4, 0.5 with --quick].
    #[arg(long)]
    cell_secs: Option<f64>,

    /// Operations to run: login,refresh,introspect,me,sessions,revoke,verify,verify-cached [default: all].
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,

    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 32, 256])]
    concurrency: Vec<usize>,

    /// Skip the redis-benchmark and pgbench baselines.
    #[arg(long)]
    no_baselines: bool,

    /// Postgres to create the bench database in (loopback only).
    #[arg(
        long,
        env = "TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    database_url: String,

    /// Redis to use (loopback only); every key is under a unique prefix.
    #[arg(long, env = "TEST_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

/// Sizes and durations derived from the arguments.
struct Plan {
    cell: Duration,
    sessions: u64,
    ops: Vec<Op>,
    concurrency: Vec<usize>,
    argon2_reps: usize,
    pgbench_secs: BTreeMap<usize, u64>,
    redis_requests: u64,
    crypto: Duration,
    revoke_pool: usize,
    baselines: bool,
}

impl Plan {
    fn new(args: &Args) -> anyhow::Result<Plan> {
        let cell = Duration::from_secs_f64(args.cell_secs.unwrap_or(if args.quick { 0.5 } else { 4.0 }));
        if cell.is_zero() || cell > Duration::from_secs(120) {
            bail!("--cell-secs must be in (0, 120]");
        }
        let mut ops = Vec::new();
        for name in &args.ops {
            let op = Op::ALL.into_iter().find(|op| op.key() == name.trim()).ok_or_else(|| {
                anyhow!("unknown operation `{name}` (login,refresh,introspect,me,sessions,revoke,verify,verify-cached)")
            })?;
            ops.push(op);
        }
        if ops.is_empty() {
            ops = Op::ALL.to_vec();
        }
        let mut concurrency = args.concurrency.clone();
        concurrency.sort_unstable();
        concurrency.dedup();
        if concurrency.is_empty() || concurrency.iter().any(|&c| c == 0 || c > 1024) {
            bail!("--concurrency levels must be in 1..=1024");
        }
        let sessions = args.sessions.unwrap_or(if args.quick { 20_000 } else { 100_000 });
        if sessions > 10_000_000 {
            bail!("--sessions is bounded at 10000000");
        }
        let (c1, c32) = if args.quick { (2, 3) } else { (5, 10) };
        let revoke_cells = concurrency.len() as f64;
        Ok(Plan {
            cell,
            sessions,
            ops,
            concurrency,
            argon2_reps: if args.quick { 5 } else { 10 },
            pgbench_secs: BTreeMap::from([(1, c1), (32, c32)]),
            redis_requests: if args.quick { 20_000 } else { 100_000 },
            crypto: Duration::from_secs_f64(if args.quick { 0.3 } else { 1.5 }),
            revoke_pool: ((cell.as_secs_f64() * revoke_cells * REVOKE_POOL_RATE) as usize).clamp(1000, 500_000),
            baselines: !args.no_baselines,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
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
}

impl Op {
    const ALL: [Op; 8] = [
        Op::Verify,
        Op::VerifyCached,
        Op::Introspect,
        Op::Me,
        Op::Sessions,
        Op::Refresh,
        Op::Revoke,
        Op::Login,
    ];

    fn key(self) -> &'static str {
        match self {
            Op::Verify => "verify",
            Op::VerifyCached => "verify-cached",
            Op::Introspect => "introspect",
            Op::Me => "me",
            Op::Sessions => "sessions",
            Op::Refresh => "refresh",
            Op::Revoke => "revoke",
            Op::Login => "login",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Op::Verify => "JWT verify, new token",
            Op::VerifyCached => "JWT verify, seen token",
            Op::Introspect => "introspection",
            Op::Me => "bearer GET /v1/me",
            Op::Sessions => "GET /v1/sessions",
            Op::Refresh => "refresh",
            Op::Revoke => "revoke (refresh tok)",
            Op::Login => "login (argon2id)",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = Plan::new(&args)?;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name(SERVER_THREADS)
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()?;
    let outcome = client.block_on(run(args, plan, cores, server.handle().clone()));
    server.shutdown_timeout(Duration::from_secs(2));
    client.shutdown_timeout(Duration::from_secs(2));
    outcome
}

// ---------------------------------------------------------------------------
// Endpoints (loopback only)

struct Endpoint {
    user: Option<String>,
    password: Option<String>,
    host: String,
    port: u16,
}

impl Endpoint {
    fn parse(url: &str, default_port: u16, what: &str) -> anyhow::Result<Endpoint> {
        let (_, rest) = url
            .split_once("://")
            .ok_or_else(|| anyhow!("{what}: `{url}` is not a URL"))?;
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let hostport = hostpart.split(['/', '?']).next().unwrap_or("");
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (h, p) = bracketed
                .split_once(']')
                .ok_or_else(|| anyhow!("{what}: bad host in `{url}`"))?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            Some(p) if !p.is_empty() => p.parse().with_context(|| format!("{what}: bad port in `{url}`"))?,
            _ => default_port,
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((a, b)) => (Some(a.to_string()), Some(b.to_string())),
                None => (Some(u.to_string()), None),
            },
            None => (None, None),
        };
        let endpoint = Endpoint {
            user: user.filter(|u| !u.is_empty()),
            password: password.filter(|p| !p.is_empty()),
            host,
            port,
        };
        let loopback = endpoint.host == "localhost" || endpoint.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            bail!(
                "{what}: the benchmark only talks to loopback addresses, not `{}`",
                endpoint.host
            );
        }
        Ok(endpoint)
    }
}

fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

// ---------------------------------------------------------------------------
// The world: database, Redis prefix, keys, log; always torn down.

struct World {
    admin_url: String,
    db_name: String,
    db_url: String,
    redis: redis::aio::MultiplexedConnection,
    redis_prefix: String,
    dir: PathBuf,
    log_path: PathBuf,
    pg: Endpoint,
    rd: Endpoint,
    pg_version: String,
    redis_version: String,
}

impl World {
    async fn create(args: &Args) -> anyhow::Result<World> {
        let pg = Endpoint::parse(&args.database_url, 5432, "--database-url")?;
        let rd = Endpoint::parse(&args.redis_url, 6379, "--redis-url")?;
        let unique = random_hex(6)?;
        let mut admin = sqlx::PgConnection::connect(&args.database_url)
            .await
            .with_context(|| format!("Postgres at {}:{} is required", pg.host, pg.port))?;
        let pg_version: String = sqlx::query_scalar("SELECT current_setting('server_version')")
            .fetch_one(&mut admin)
            .await?;
        let client = redis::Client::open(args.redis_url.as_str())?;
        let mut redis = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("Redis at {}:{} is required", rd.host, rd.port))?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut redis).await?;
        let redis_version = info_field(&info, "redis_version").unwrap_or_else(|| "?".into());

        let db_name = format!("authd_bench_{unique}");
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        let dir = std::env::temp_dir().join(format!("authd-bench-{unique}"));
        std::fs::create_dir_all(dir.join("keys"))?;
        Ok(World {
            admin_url: args.database_url.clone(),
            db_url: with_database(&args.database_url, &db_name),
            db_name,
            redis,
            redis_prefix: format!("authd-bench:{unique}:"),
            log_path: dir.join("authd.log"),
            dir,
            pg,
            rd,
            pg_version,
            redis_version,
        })
    }

    async fn destroy(mut self, keep_log: bool) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        match sqlx::PgConnection::connect(&self.admin_url).await {
            Ok(mut admin) => {
                match sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name))
                    .execute(&mut admin)
                    .await
                {
                    Ok(_) => progress(&format!("dropped database {}", self.db_name)),
                    Err(e) => problems.push(format!("drop database {}: {e}", self.db_name)),
                }
                let _ = admin.close().await;
            }
            Err(e) => problems.push(format!("connect to drop {}: {e}", self.db_name)),
        }
        match delete_redis_keys(&mut self.redis, &self.redis_prefix).await {
            Ok(n) => progress(&format!("deleted {n} Redis keys {}*", self.redis_prefix)),
            Err(e) => problems.push(format!("delete Redis keys {}*: {e}", self.redis_prefix)),
        }
        if keep_log {
            let _ = std::fs::remove_dir_all(self.dir.join("keys"));
            eprintln!("authd's log of this run is kept at {}", self.log_path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("cleanup incomplete: {}", problems.join("; "))
        }
    }
}

async fn delete_redis_keys(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> anyhow::Result<u64> {
    let pattern = format!("{prefix}*");
    let mut cursor = "0".to_string();
    let mut deleted = 0u64;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(5000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(conn).await?;
            deleted += n;
        }
        if next == "0" {
            return Ok(deleted);
        }
        if Instant::now() > deadline {
            bail!("gave up after 180 s ({deleted} deleted)");
        }
        cursor = next;
    }
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| anyhow!("system random generator failed"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn progress(msg: &str) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[{t:6.1}s] {msg}");
}

// ---------------------------------------------------------------------------
// The run

async fn run(args: Args, plan: Plan, cores: usize, server: Handle) -> anyhow::Result<()> {
    STARTED.get_or_init(Instant::now);
    let world = World::create(&args).await?;
    let _ = BENCH_DB.set(world.db_name.clone());
    progress(&format!(
        "database {}, Redis prefix {}, scratch {}",
        world.db_name,
        world.redis_prefix,
        world.dir.display()
    ));
    let outcome = bench(&plan, cores, &server, &world).await;
    let errors = match &outcome {
        Ok(report) => report.unexpected_errors() > 0,
        Err(_) => true,
    };
    let cleanup = world.destroy(errors).await;
    let report = outcome?;
    cleanup?;
    print!("{}", report.render());
    Ok(())
}

struct Running {
    addr: SocketAddr,
    sessions: Arc<SessionService>,
    config: ServeConfig,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
}

#[derive(Parser)]
struct ServeArgs {
    #[command(flatten)]
    serve: ServeConfig,
}

/// Starts authd on the server runtime with the production defaults (the
/// same clap definitions `authd serve` uses), overriding only where it
/// listens, which stores and keys it uses, and the service client.
async fn start_app(server: &Handle, world: &World) -> anyhow::Result<(Running, String)> {
    let keys_dir = world.dir.join("keys");
    keys::generate(&keys_dir, KeyAlg::EdDSA, OffsetDateTime::now_utc())?;
    let secret = random_hex(16)?;
    let argv = [
        "authd".to_string(),
        format!("--database-url={}", world.db_url),
        format!("--redis-url={}", redis_url_of(world)),
        format!("--redis-prefix={}", world.redis_prefix),
        format!("--keys-dir={}", keys_dir.display()),
        format!("--data-dir={}", world.dir.join("data").display()),
        "--listen=127.0.0.1:0".to_string(),
        "--issuer=http://authd.bench".to_string(),
        format!("--clients=bench-svc:{secret}"),
        // One cleanup pass would otherwise run at start, in the middle of the load.
        "--cleanup-interval=0".to_string(),
        "--migrate-on-start=true".to_string(),
    ];
    let config = ServeArgs::try_parse_from(argv)
        .map_err(|e| anyhow!("building the authd configuration: {e}"))?
        .serve;

    let file = std::fs::File::create(&world.log_path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init();

    let cfg = config.clone();
    let started = server
        .spawn(async move {
            let app = Application::build(cfg, Arc::new(SystemClock)).await?;
            let addr = app.local_addr()?;
            let sessions = app.state().sessions.clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let served = tokio::spawn(app.run_until_stopped(async move {
                let _ = stopped.await;
            }));
            anyhow::Ok((addr, sessions, stop, served))
        })
        .await??;
    let (addr, sessions, stop, served) = started;
    // The cache starts untrusted until its first sweep; wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while sessions.cache().ping().await.is_err() {
        if Instant::now() > deadline {
            progress("warning: authd's cache is still untrusted after 10 s; numbers will reflect database fallbacks");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let basic = format!("Basic {}", STANDARD.encode(format!("bench-svc:{secret}")));
    Ok((
        Running {
            addr,
            sessions,
            config,
            stop,
            served,
        },
        basic,
    ))
}

fn redis_url_of(world: &World) -> String {
    let auth = match (&world.rd.user, &world.rd.password) {
        (Some(u), Some(p)) => format!("{u}:{p}@"),
        (None, Some(p)) => format!(":{p}@"),
        _ => String::new(),
    };
    let host = if world.rd.host.contains(':') {
        format!("[{}]", world.rd.host)
    } else {
        world.rd.host.clone()
    };
    format!("redis://{auth}{host}:{}", world.rd.port)
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(15), self.served).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => progress(&format!("authd stopped with an error: {e:#}")),
            Ok(Err(e)) => progress(&format!("authd task failed: {e}")),
            Err(_) => progress("authd did not stop within 15 s; leaving it to the runtime shutdown"),
        }
    }
}

async fn bench(plan: &Plan, cores: usize, server: &Handle, world: &World) -> anyhow::Result<Report> {
    let (running, basic) = start_app(server, world).await?;
    progress(&format!("authd listening on {} (in-process)", running.addr));
    let outcome = phases(plan, cores, server, world, &running, basic).await;
    running.stop().await;
    outcome
}

async fn phases(
    plan: &Plan,
    cores: usize,
    server: &Handle,
    world: &World,
    running: &Running,
    basic: String,
) -> anyhow::Result<Report> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&world.db_url)
        .await?;
    let mut report = Report::new(plan, cores, world, &running.config);
    // How busy the machine is before any load (authd idle).
    let idle0 = CpuTicks::take();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = CpuTicks::take().since(&idle0);
    let busiest = idle
        .top_other
        .as_ref()
        .map(|(comm, pct)| format!(" (busiest: `{comm}` {pct:.0} %)"))
        .unwrap_or_default();
    let quiet = format!(
        "machine before the load (1 s, authd idle): other processes {:.0} %{busiest}, Postgres {:.0} %, Redis {:.0} %, idle {:.0} % of {cores} cores",
        idle.other, idle.postgres, idle.redis, idle.idle
    );
    progress(&quiet);
    report.header.push(quiet);

    // Users for the login rows, all with one password hash at the configured parameters.
    let params = running.config.argon2.params().map_err(anyhow::Error::msg)?;
    let phc = {
        let params = params.clone();
        tokio::task::spawn_blocking(move || argon2_phc(params)).await??
    };
    seed_login_users(&pool, &phc).await?;
    let load = Arc::new(Load {
        addr: running.addr,
        host: running.addr.to_string(),
        basic,
        access: Vec::new(),
        chains: Vec::new(),
        revoke_pool: Vec::new(),
        revoke_next: AtomicUsize::new(0),
        login_next: AtomicUsize::new(0),
    });

    // Memory under 500 simultaneous logins.
    progress(&format!("{RSS_LOGINS} simultaneous logins (peak RSS)…"));
    report.burst = Some(login_burst(&load, RSS_LOGINS).await?);

    // argon2id at the configured parameters: one hash on one core (after the
    // burst, so the timing buffers are not in its peak RSS), and on all cores at once.
    let reps = plan.argon2_reps;
    let times = tokio::task::spawn_blocking(move || argon2_hash_times(params, reps, cores)).await??;
    report.argon2_ms = median(&times.warm) * 1e3;
    report.argon2_cold_ms = median(&times.cold) * 1e3;
    report.argon2_parallel_rate = times.parallel_rate;
    progress(&format!(
        "argon2id one hash: {:.1} ms (median of {reps}, memory reused; {:.1} ms with a fresh allocation) → login limit \
         {cores} cores ÷ t = {:.1}/s; {cores} threads at once: {:.1} hashes/s",
        report.argon2_ms,
        report.argon2_cold_ms,
        cores as f64 / (report.argon2_ms / 1e3),
        times.parallel_rate
    ));

    // Space per stored session, Postgres then Redis.
    if plan.sessions > 0 {
        progress(&format!("storing {} sessions with bulk SQL…", plan.sessions));
        report.space = Some(store_sessions(&pool, plan.sessions, &phc).await?);
        progress(&format!("caching {} sessions through authd's cache…", plan.sessions));
        let mut redis = world.redis.clone();
        report.cache = Some(
            fill_cache(
                server,
                &running.sessions,
                &pool,
                &mut redis,
                &world.redis_prefix,
                plan.sessions,
            )
            .await?,
        );
        report.rss_after_fill_kib = proc_status_kib("VmRSS");
    }

    // Sessions and tokens the load rows use.
    let max_c = plan.concurrency.iter().copied().max().unwrap_or(1);
    progress("seeding the sessions the load uses…");
    let access_set = seed_sessions(&pool, "access", ACCESS_USERS, SESSIONS_PER_ACCESS_USER, &phc).await?;
    let chains = seed_sessions(&pool, "refresh", max_c, 1, &phc).await?;
    let revoke_pool = if plan.ops.contains(&Op::Revoke) {
        seed_sessions(&pool, "revoke", plan.revoke_pool.div_ceil(10), 10, &phc).await?
    } else {
        Vec::new()
    };
    let access: Vec<String> = access_set
        .iter()
        .map(|s| mint(&running.sessions, s.user_id, s.session_id))
        .collect::<anyhow::Result<_>>()?;
    let load = Arc::new(Load {
        access,
        chains: chains.into_iter().map(|s| Mutex::new(s.refresh)).collect(),
        revoke_pool: revoke_pool.into_iter().map(|s| s.refresh).collect(),
        revoke_next: AtomicUsize::new(0),
        login_next: AtomicUsize::new(0),
        addr: load.addr,
        host: load.host.clone(),
        basic: load.basic.clone(),
    });
    sqlx::query("ANALYZE").execute(&pool).await?;
    // Warm: one bearer check per access token puts every session in the cache.
    let warm = http_cell(
        &load,
        Op::Me,
        32.min(load.access.len()),
        Duration::from_secs(20),
        Some(load.access.len() as u64),
    )
    .await?;
    if warm.errors > 0 {
        bail!("warm-up failed: {}", warm.first_error.unwrap_or_default());
    }

    // The cells.
    let tokens = Arc::new(load.access.clone());
    for &op in &plan.ops {
        for &c in &plan.concurrency {
            let cell = if op == Op::Verify {
                // Tokens never verified before, enough for the cell (it stops early, and says so, if they run out).
                let want = (plan.cell.as_secs_f64() * NEW_TOKENS_PER_SEC * c.min(cores) as f64) as usize;
                let fresh = mint_pool(&running.sessions, &access_set, want.clamp(1000, MAX_NEW_TOKENS), cores).await?;
                verify_cell(server, &running.sessions, Arc::new(fresh), true, c, plan.cell).await?
            } else if op == Op::VerifyCached {
                verify_cell(server, &running.sessions, tokens.clone(), false, c, plan.cell).await?
            } else {
                http_cell(&load, op, c, plan.cell, None).await?
            };
            progress(&format!(
                "{:<22} c={c:<3} {:>9}/s  p50 {:>8}  p99 {:>8}  errors {}{}",
                op.label(),
                fmt_rate(cell.rate()),
                fmt_ns(cell.hist.value_at_quantile(0.5)),
                fmt_ns(cell.hist.value_at_quantile(0.99)),
                cell.errors,
                cell.first_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
            report.cells.push(cell);
        }
    }
    report.rss_end_kib = proc_status_kib("VmRSS");
    report.hwm_end_kib = proc_status_kib("VmHWM");

    // Signatures: authd's JWT path against raw Ed25519.
    progress("JWT sign/verify vs raw Ed25519…");
    let sessions = running.sessions.clone();
    let owner = access_set
        .first()
        .map(|s| (s.user_id, s.session_id))
        .ok_or_else(|| anyhow!("no seeded session"))?;
    let budget = plan.crypto;
    report.crypto = Some(tokio::task::spawn_blocking(move || crypto_rates(&sessions, owner, budget)).await??);

    // The machine's own limits.
    if plan.baselines {
        baselines(plan, world, &pool, &mut report).await;
    }
    pool.close().await;
    Ok(report)
}

// ---------------------------------------------------------------------------
// Seeding

fn argon2id(params: argon2::Params) -> argon2::Argon2<'static> {
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// A PHC string of `PASSWORD` (random salt), for the seeded users.
fn argon2_phc(params: argon2::Params) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| anyhow!("system random generator failed"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow!("salt: {e}"))?;
    let hash = argon2id(params)
        .hash_password(PASSWORD.as_bytes(), &salt)
        .map_err(|e| anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

struct HashTimes {
    /// Seconds per hash into one reused block buffer: the pure compute cost.
    warm: Vec<f64>,
    /// Seconds per hash as the `password-hash` API runs it (a fresh buffer each).
    cold: Vec<f64>,
    /// Hashes per second with `threads` threads hashing at once (reused buffers).
    parallel_rate: f64,
}

/// `reps` timed hashes into one reused buffer, after an untimed one that
/// faults its pages in (and then waits at `start`, when given).
fn warm_hashes(
    argon: &argon2::Argon2<'_>,
    blocks: usize,
    reps: usize,
    start: Option<&std::sync::Barrier>,
) -> anyhow::Result<Vec<f64>> {
    let mut memory = vec![argon2::Block::default(); blocks];
    let mut out = [0u8; 32];
    let mut hash = |memory: &mut [argon2::Block]| {
        argon
            .hash_password_into_with_memory(PASSWORD.as_bytes(), b"authd-bench-salt", &mut out, memory)
            .map_err(|e| anyhow!("argon2: {e}"))
    };
    hash(&mut memory)?;
    if let Some(barrier) = start {
        barrier.wait();
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let started = Instant::now();
        hash(&mut memory)?;
        times.push(started.elapsed().as_secs_f64());
    }
    Ok(times)
}

/// argon2id at the configured parameters, timed: alone on this thread, and
/// on `threads` threads at once.
fn argon2_hash_times(params: argon2::Params, reps: usize, threads: usize) -> anyhow::Result<HashTimes> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let reps = reps.max(1);
    let blocks = params.block_count();
    let argon = argon2id(params);
    let warm = warm_hashes(&argon, blocks, reps, None)?;
    let rng = SystemRandom::new();
    let mut cold = Vec::with_capacity(reps);
    for _ in 0..reps {
        let mut salt = [0u8; 16];
        rng.fill(&mut salt)
            .map_err(|_| anyhow!("system random generator failed"))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow!("salt: {e}"))?;
        let started = Instant::now();
        argon
            .hash_password(PASSWORD.as_bytes(), &salt)
            .map_err(|e| anyhow!("argon2: {e}"))?;
        cold.push(started.elapsed().as_secs_f64());
    }
    let threads = threads.max(1);
    let start = std::sync::Barrier::new(threads + 1);
    let (hashes, seconds) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| scope.spawn(|| warm_hashes(&argon, blocks, reps, Some(&start)).map(|t| t.len())))
            .collect();
        start.wait();
        let started = Instant::now();
        let mut hashes = 0usize;
        for worker in workers {
            hashes += worker
                .join()
                .map_err(|_| anyhow!("an argon2 timing thread panicked"))??;
        }
        anyhow::Ok((hashes, started.elapsed().as_secs_f64()))
    })?;
    let parallel_rate = hashes as f64 / seconds;
    Ok(HashTimes {
        warm,
        cold,
        parallel_rate,
    })
}

fn login_email(k: usize) -> String {
    format!("bench-login-{k}@example.org")
}

async fn seed_login_users(pool: &PgPool, phc: &str) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO users (id, email, email_normalized, password_hash, created_at, updated_at) \
         SELECT md5('login-' || i)::uuid, 'bench-login-' || i || '@example.org', \
                'bench-login-' || i || '@example.org', $1, now(), now() \
         FROM generate_series(0, $2 - 1) AS i",
    )
    .bind(phc)
    .bind(LOGIN_USERS as i64)
    .execute(pool)
    .await?;
    Ok(())
}

struct Seeded {
    user_id: Uuid,
    session_id: Uuid,
    refresh: String,
}

/// Users and live sessions with known refresh tokens (generation 0), as a
/// login would have stored them, inserted in bulk.
async fn seed_sessions(
    pool: &PgPool,
    label: &str,
    users: usize,
    per_user: usize,
    phc: &str,
) -> anyhow::Result<Vec<Seeded>> {
    let rng = SystemRandom::new();
    let user_ids: Vec<Uuid> = (0..users).map(|_| Uuid::now_v7()).collect();
    let emails: Vec<String> = (0..users).map(|i| format!("bench-{label}-{i}@example.org")).collect();
    sqlx::query(
        "INSERT INTO users (id, email, email_normalized, password_hash, created_at, updated_at) \
         SELECT u.id, u.email, u.email, $3, now(), now() FROM UNNEST($1::uuid[], $2::text[]) AS u(id, email)",
    )
    .bind(&user_ids)
    .bind(&emails)
    .bind(phc)
    .execute(pool)
    .await?;
    let mut seeded = Vec::with_capacity(users * per_user);
    for _ in 0..per_user {
        for &user_id in &user_ids {
            let mut bytes = [0u8; 32];
            rng.fill(&mut bytes)
                .map_err(|_| anyhow!("system random generator failed"))?;
            seeded.push(Seeded {
                user_id,
                session_id: Uuid::now_v7(),
                refresh: URL_SAFE_NO_PAD.encode(bytes),
            });
        }
    }
    for chunk in seeded.chunks(10_000) {
        let ids: Vec<Uuid> = chunk.iter().map(|s| s.session_id).collect();
        let owners: Vec<Uuid> = chunk.iter().map(|s| s.user_id).collect();
        let hashes: Vec<Vec<u8>> = chunk
            .iter()
            .map(|s| {
                ring::digest::digest(&ring::digest::SHA256, s.refresh.as_bytes())
                    .as_ref()
                    .to_vec()
            })
            .collect();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, client_id, scope, device_name, user_agent, ip, created_at, \
             last_used_at, expires_at, absolute_expires_at, refresh_generation, rotated_at) \
             SELECT s.id, s.user_id, 'web', NULL, 'Firefox on Linux', $3, '127.0.0.1', now(), now(), \
                    now() + interval '30 days', now() + interval '90 days', 0, now() \
             FROM UNNEST($1::uuid[], $2::uuid[]) AS s(id, user_id)",
        )
        .bind(&ids)
        .bind(&owners)
        .bind(BROWSER_UA)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, generation, issued_at) \
             SELECT t.h, t.sid, 0, now() FROM UNNEST($1::bytea[], $2::uuid[]) AS t(h, sid)",
        )
        .bind(&hashes)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(seeded)
}

/// An access token for a seeded session, signed by authd's own issuer.
fn mint(sessions: &SessionService, user: Uuid, sid: Uuid) -> anyhow::Result<String> {
    let tokens = sessions.tokens();
    let now = sessions.now().unix_timestamp();
    let claims = AccessClaims {
        iss: tokens.issuer.clone(),
        sub: UserId(user),
        aud: tokens.audience.clone(),
        exp: now + tokens.access_ttl.as_secs() as i64,
        iat: now,
        nbf: now,
        jti: Uuid::now_v7().to_string(),
        sid: SessionId(sid),
        client_id: "web".into(),
        scope: None,
    };
    tokens
        .sign(&claims)
        .map_err(|e| anyhow!("signing an access token: {e}"))
}

struct Space {
    sessions: u64,
    pg_bytes: i64,
    seconds: f64,
}

const RELATION_BYTES: &str =
    "SELECT (pg_total_relation_size('sessions') + pg_total_relation_size('refresh_tokens'))::bigint";

/// `n` sessions (10 per user, one refresh token each) with bulk SQL; the
/// growth of `sessions` + `refresh_tokens` (heap, indexes, TOAST) per session.
async fn store_sessions(pool: &PgPool, n: u64, phc: &str) -> anyhow::Result<Space> {
    let users = n.div_ceil(10) as i64;
    let before: i64 = sqlx::query_scalar(RELATION_BYTES).fetch_one(pool).await?;
    let started = Instant::now();
    // Time-ordered (v7-shaped) ids like authd's own, so the indexes grow as in production.
    let base_ms = (OffsetDateTime::now_utc().unix_timestamp() - 40 * 86400) * 1000;
    let v7 = |tag: &str, var: &str| {
        format!(
            "(lpad(to_hex({base_ms}::bigint + {var}), 12, '0') || '7' || substr(md5('{tag}' || {var}), 1, 3) || '8' \
             || substr(md5('{tag}' || {var}), 4, 15))::uuid"
        )
    };
    let user_id = v7("bulk-user-", "i");
    sqlx::query(&format!(
        "INSERT INTO users (id, email, email_normalized, password_hash, created_at, updated_at) \
         SELECT {user_id}, 'bench-bulk-' || i || '@example.org', 'bench-bulk-' || i || '@example.org', $1, now(), now() \
         FROM generate_series(1, $2::bigint) AS i"
    ))
    .bind(phc)
    .bind(users)
    .execute(pool)
    .await?;
    let session_id = v7("bulk-session-", "i");
    let owner = v7("bulk-user-", "(1 + (i - 1) % $2::bigint)");
    sqlx::query(&format!(
        "WITH s AS ( \
           INSERT INTO sessions (id, user_id, client_id, scope, device_name, user_agent, ip, created_at, \
                                 last_used_at, expires_at, absolute_expires_at, refresh_generation, rotated_at) \
           SELECT {session_id}, {owner}, '{BULK_CLIENT}', NULL, 'Firefox on Linux', $3, '203.0.113.' || (i % 250), \
                  now(), now(), now() + interval '30 days', now() + interval '90 days', 0, now() \
           FROM generate_series(1, $1::bigint) AS i \
           RETURNING id) \
         INSERT INTO refresh_tokens (token_hash, session_id, generation, issued_at) \
         SELECT sha256(convert_to(s.id::text || ':bench-refresh', 'UTF8')), s.id, 0, now() FROM s"
    ))
    .bind(n as i64)
    .bind(users)
    .bind(BROWSER_UA)
    .execute(pool)
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let after: i64 = sqlx::query_scalar(RELATION_BYTES).fetch_one(pool).await?;
    // Fresh statistics, as autovacuum would give them, for the queries that follow.
    sqlx::query("ANALYZE users, sessions, refresh_tokens")
        .execute(pool)
        .await?;
    progress(&format!(
        "stored {n} sessions in {seconds:.1} s: {:.0} bytes per session in Postgres",
        (after - before) as f64 / n as f64
    ));
    Ok(Space {
        sessions: n,
        pg_bytes: after - before,
        seconds,
    })
}

struct CacheSpace {
    filled: u64,
    errors: u64,
    seconds: f64,
    used_memory_delta: i64,
    sampled_key_bytes: Option<f64>,
}

async fn used_memory(redis: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(redis).await?;
    info_field(&info, "used_memory")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("INFO memory has no used_memory"))
}

/// Puts every bulk session in the cache through authd's own cache (what a
/// bearer check does on a miss) and measures Redis' growth.
async fn fill_cache(
    server: &Handle,
    sessions: &Arc<SessionService>,
    pool: &PgPool,
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    n: u64,
) -> anyhow::Result<CacheSpace> {
    const PAGE: i64 = 20_000;
    let before = used_memory(redis).await?;
    let started = Instant::now();
    let mut after_id = Uuid::nil();
    let (mut filled, mut errors) = (0u64, 0u64);
    for _ in 0..(n / PAGE as u64 + 2) {
        let rows: Vec<(Uuid, Uuid, OffsetDateTime)> = sqlx::query_as(
            "SELECT id, user_id, expires_at FROM sessions WHERE client_id = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(BULK_CLIENT)
        .bind(after_id)
        .bind(PAGE)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        after_id = last.0;
        filled += rows.len() as u64;
        let sessions = sessions.clone();
        errors += server
            .spawn(async move {
                futures_util::stream::iter(rows)
                    .map(|(id, user, expires)| {
                        let sessions = sessions.clone();
                        async move {
                            sessions
                                .cache()
                                .put_live(SessionId(id), UserId(user), expires.unix_timestamp(), LIVE_CACHE_TTL)
                                .await
                                .is_err()
                        }
                    })
                    .buffer_unordered(64)
                    .filter(|failed| std::future::ready(*failed))
                    .count()
                    .await as u64
            })
            .await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = used_memory(redis).await?;
    // A second estimate that other Redis users cannot disturb: MEMORY USAGE of sampled keys.
    let mut sampled = Vec::new();
    let mut cursor = "0".to_string();
    for _ in 0..200 {
        let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        for key in keys.iter().take(200usize.saturating_sub(sampled.len())) {
            let bytes: Option<i64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0)
                .query_async(redis)
                .await?;
            if let Some(b) = bytes {
                sampled.push(b as f64);
            }
        }
        if next == "0" || sampled.len() >= 200 {
            break;
        }
        cursor = next;
    }
    let sampled_key_bytes = (!sampled.is_empty()).then(|| sampled.iter().sum::<f64>() / sampled.len() as f64);
    progress(&format!(
        "cached {filled} sessions in {seconds:.1} s ({:.0}/s), {errors} errors: Redis used_memory +{:.0} bytes per session",
        filled as f64 / seconds.max(1e-9),
        (after - before) as f64 / filled.max(1) as f64
    ));
    Ok(CacheSpace {
        filled,
        errors,
        seconds,
        used_memory_delta: after - before,
        sampled_key_bytes,
    })
}

// ---------------------------------------------------------------------------
// The HTTP load client

struct Load {
    addr: SocketAddr,
    host: String,
    basic: String,
    /// Access tokens of cached live sessions.
    access: Vec<String>,
    /// One refresh-token chain per worker; each worker presents its newest.
    chains: Vec<Mutex<String>>,
    /// Refresh tokens of live sessions, each revoked once.
    revoke_pool: Vec<String>,
    revoke_next: AtomicUsize,
    login_next: AtomicUsize,
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connect timed out"))??;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(req).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn post_form(load: &Load, path: &str) -> hyper::http::request::Builder {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, load.host.as_str())
        .header(CONTENT_TYPE, FORM)
}

/// The next request of `op` for worker `w` (of `c`), or `None` when its pool is used up.
fn request(
    load: &Load,
    op: Op,
    w: usize,
    c: usize,
    i: u64,
    chain: &str,
) -> anyhow::Result<Option<Request<Full<Bytes>>>> {
    let access = || -> &str {
        let n = load.access.len().max(1);
        load.access
            .get((w + (i as usize).wrapping_mul(c)) % n)
            .map(String::as_str)
            .unwrap_or("")
    };
    let body = |s: String| Full::new(Bytes::from(s));
    let req = match op {
        Op::Login => {
            let k = load.login_next.fetch_add(1, Ordering::Relaxed) % LOGIN_USERS;
            let form = form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "password")
                .append_pair("username", &login_email(k))
                .append_pair("password", PASSWORD)
                .finish();
            post_form(load, "/oauth/token")
                .header(USER_AGENT, BROWSER_UA)
                .body(body(form))?
        }
        Op::Refresh => {
            post_form(load, "/oauth/token").body(body(format!("grant_type=refresh_token&refresh_token={chain}")))?
        }
        Op::Introspect => post_form(load, "/oauth/introspect")
            .header(AUTHORIZATION, load.basic.as_str())
            .body(body(format!("token={}", access())))?,
        Op::Me | Op::Sessions => Request::builder()
            .method(Method::GET)
            .uri(if op == Op::Me { "/v1/me" } else { "/v1/sessions" })
            .header(HOST, load.host.as_str())
            .header(AUTHORIZATION, format!("Bearer {}", access()))
            .body(Full::new(Bytes::new()))?,
        Op::Revoke => {
            let k = load.revoke_next.fetch_add(1, Ordering::Relaxed);
            let Some(token) = load.revoke_pool.get(k) else {
                return Ok(None);
            };
            post_form(load, "/oauth/revoke").body(body(format!("token={token}")))?
        }
        Op::Verify | Op::VerifyCached => bail!("JWT verification runs in-process"),
    };
    Ok(Some(req))
}

/// Whether the answer is the success it should be; for a refresh, the new token.
fn check(op: Op, status: StatusCode, body: &[u8]) -> Result<Option<String>, String> {
    if status != StatusCode::OK {
        let text = String::from_utf8_lossy(&body[..body.len().min(160)]).into_owned();
        return Err(format!("{} {text}", status.as_u16()));
    }
    match op {
        Op::Refresh => serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["refresh_token"].as_str().map(str::to_string))
            .map(Some)
            .ok_or_else(|| "refresh answer without refresh_token".to_string()),
        Op::Introspect if !body.starts_with(b"{\"active\":true") => Err("introspection answered inactive".into()),
        _ => Ok(None),
    }
}

#[derive(Default)]
struct WorkerOut {
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    exhausted: bool,
}

impl WorkerOut {
    fn fail(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }
}

async fn http_worker(
    load: Arc<Load>,
    op: Op,
    w: usize,
    c: usize,
    duration: Duration,
    max: u64,
    barrier: Arc<Barrier>,
) -> WorkerOut {
    let mut out = WorkerOut::default();
    let mut conn = connect(load.addr).await.ok();
    let mut chain = match load.chains.get(w) {
        Some(m) if op == Op::Refresh => m.lock().map(|t| t.clone()).unwrap_or_default(),
        _ => String::new(),
    };
    barrier.wait().await;
    let deadline = Instant::now() + duration;
    let mut i = 0u64;
    while i < max && Instant::now() < deadline {
        let req = match request(&load, op, w, c, i, &chain) {
            Ok(Some(req)) => req,
            Ok(None) => {
                out.exhausted = true;
                break;
            }
            Err(e) => {
                out.fail(format!("building the request: {e}"));
                break;
            }
        };
        i += 1;
        if conn.is_none() {
            match connect(load.addr).await {
                Ok(s) => conn = Some(s),
                Err(e) => {
                    out.fail(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(sender) = conn.as_mut() else { continue };
        let started = Instant::now();
        let answer = tokio::time::timeout(REQUEST_BOUND, send(sender, req)).await;
        let ns = started.elapsed().as_nanos() as u64;
        match answer {
            Ok(Ok((status, body))) => match check(op, status, &body) {
                Ok(next) => {
                    out.latencies.push(ns);
                    if let Some(token) = next {
                        chain = token;
                    }
                }
                Err(e) => out.fail(e),
            },
            Ok(Err(e)) => {
                out.fail(format!("transport: {e}"));
                conn = None;
            }
            Err(_) => {
                out.fail(format!("no answer within {REQUEST_BOUND:?}"));
                conn = None;
            }
        }
    }
    if op == Op::Refresh {
        if let Some(Ok(mut slot)) = load.chains.get(w).map(|m| m.lock()) {
            *slot = chain;
        }
    }
    out
}

struct Cell {
    op: Op,
    c: usize,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    exhausted: bool,
    elapsed: Duration,
    hist: Histogram<u64>,
    cpu: CpuUse,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// 1 ns .. 10 min at 3 significant digits.
fn new_hist() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

fn gather(op: Op, c: usize, outs: Vec<WorkerOut>, elapsed: Duration, cpu: CpuUse) -> anyhow::Result<Cell> {
    let mut cell = Cell {
        op,
        c,
        ok: 0,
        errors: 0,
        first_error: None,
        exhausted: false,
        elapsed,
        hist: new_hist()?,
        cpu,
    };
    for out in outs {
        for ns in &out.latencies {
            cell.hist.saturating_record(*ns);
        }
        cell.ok += out.latencies.len() as u64;
        cell.errors += out.errors;
        cell.exhausted |= out.exhausted;
        if cell.first_error.is_none() {
            cell.first_error = out.first_error;
        }
    }
    Ok(cell)
}

/// `c` workers, each on its own connection, for `duration` (or `total` requests).
async fn http_cell(load: &Arc<Load>, op: Op, c: usize, duration: Duration, total: Option<u64>) -> anyhow::Result<Cell> {
    let c = c.max(1);
    let max = total
        .map(|t| t.div_ceil(c as u64))
        .unwrap_or(MAX_REQUESTS_PER_CELL / c as u64)
        .max(1);
    let barrier = Arc::new(Barrier::new(c + 1));
    let workers: Vec<_> = (0..c)
        .map(|w| tokio::spawn(http_worker(load.clone(), op, w, c, duration, max, barrier.clone())))
        .collect();
    barrier.wait().await;
    let cpu0 = CpuTicks::take();
    let started = Instant::now();
    let mut outs = Vec::with_capacity(c);
    for worker in workers {
        match worker.await {
            Ok(out) => outs.push(out),
            Err(e) => outs.push(WorkerOut {
                errors: 1,
                first_error: Some(format!("worker failed: {e}")),
                ..WorkerOut::default()
            }),
        }
    }
    let elapsed = started.elapsed();
    let cpu = CpuTicks::take().since(&cpu0);
    gather(op, c, outs, elapsed, cpu)
}

/// Access tokens for the given sessions, each with its own `jti` (so each
/// is new to the verifier), signed by authd's issuer on `threads` threads.
async fn mint_pool(
    sessions: &Arc<SessionService>,
    owners: &[Seeded],
    n: usize,
    threads: usize,
) -> anyhow::Result<Vec<String>> {
    let pairs: Arc<Vec<(Uuid, Uuid)>> = Arc::new(owners.iter().map(|s| (s.user_id, s.session_id)).collect());
    if pairs.is_empty() {
        bail!("no sessions to mint tokens for");
    }
    let threads = threads.max(1);
    let mut parts = Vec::with_capacity(threads);
    for t in 0..threads {
        let (sessions, pairs) = (sessions.clone(), pairs.clone());
        let count = n / threads + usize::from(t < n % threads);
        parts.push(tokio::task::spawn_blocking(move || {
            (0..count)
                .map(|i| {
                    let (user, sid) = pairs[(t + i * threads) % pairs.len()];
                    mint(&sessions, user, sid)
                })
                .collect::<anyhow::Result<Vec<String>>>()
        }));
    }
    let mut pool = Vec::with_capacity(n);
    for part in parts {
        pool.extend(part.await??);
    }
    Ok(pool)
}

/// In-process `TokenIssuer::verify` on authd's runtime, `c` tasks at once:
/// each token once (`unique`, until the pool is used up) or round and round.
async fn verify_cell(
    server: &Handle,
    sessions: &Arc<SessionService>,
    tokens: Arc<Vec<String>>,
    unique: bool,
    c: usize,
    duration: Duration,
) -> anyhow::Result<Cell> {
    let barrier = Arc::new(Barrier::new(c + 1));
    let max = MAX_REQUESTS_PER_CELL / c as u64;
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..c)
        .map(|w| {
            let (sessions, tokens, barrier, next) = (sessions.clone(), tokens.clone(), barrier.clone(), next.clone());
            server.spawn(async move {
                let mut out = WorkerOut::default();
                barrier.wait().await;
                let deadline = Instant::now() + duration;
                let n = tokens.len().max(1);
                let mut i = 0u64;
                while i < max && Instant::now() < deadline {
                    let k = if unique {
                        next.fetch_add(1, Ordering::Relaxed)
                    } else {
                        (w + (i as usize).wrapping_mul(c)) % n
                    };
                    let Some(token) = tokens.get(k) else {
                        out.exhausted = true;
                        break;
                    };
                    let started = Instant::now();
                    let verdict = sessions.tokens().verify(token, sessions.now());
                    let ns = started.elapsed().as_nanos() as u64;
                    match verdict {
                        Ok(_) => out.latencies.push(ns),
                        Err(why) => out.fail(format!("refused: {why:?}")),
                    }
                    i += 1;
                    tokio::task::yield_now().await;
                }
                out
            })
        })
        .collect();
    barrier.wait().await;
    let cpu0 = CpuTicks::take();
    let started = Instant::now();
    let mut outs = Vec::with_capacity(c);
    for worker in workers {
        if let Ok(out) = worker.await {
            outs.push(out);
        }
    }
    let elapsed = started.elapsed();
    let cpu = CpuTicks::take().since(&cpu0);
    gather(
        if unique { Op::Verify } else { Op::VerifyCached },
        c,
        outs,
        elapsed,
        cpu,
    )
}

struct Burst {
    n: usize,
    ok: u64,
    shed: u64,
    other: u64,
    first_other: Option<String>,
    first_shed: Option<String>,
    rss_before_kib: Option<u64>,
    hwm_kib: Option<u64>,
    seconds: f64,
    hist: Histogram<u64>,
}

/// `n` logins at the same instant, each on its own connection; peak RSS of
/// the process during them (VmHWM, reset just before).
async fn login_burst(load: &Arc<Load>, n: usize) -> anyhow::Result<Burst> {
    let barrier = Arc::new(Barrier::new(n + 1));
    let workers: Vec<_> = (0..n)
        .map(|w| {
            let (load, barrier) = (load.clone(), barrier.clone());
            tokio::spawn(async move {
                let conn = connect(load.addr).await;
                barrier.wait().await;
                let mut sender = conn.map_err(|e| format!("connect: {e}"))?;
                let req = request(&load, Op::Login, w, n, 0, "")
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| "no request".to_string())?;
                let started = Instant::now();
                let answer = tokio::time::timeout(REQUEST_BOUND, send(&mut sender, req))
                    .await
                    .map_err(|_| "no answer within 30 s".to_string())?
                    .map_err(|e| format!("transport: {e}"))?;
                Ok::<_, String>((answer.0, answer.1, started.elapsed().as_nanos() as u64))
            })
        })
        .collect();
    // Every connection is open before the peak is reset and the logins go.
    let reset = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before_kib = proc_status_kib("VmRSS");
    barrier.wait().await;
    let started = Instant::now();
    let mut burst = Burst {
        n,
        ok: 0,
        shed: 0,
        other: 0,
        first_other: None,
        first_shed: None,
        rss_before_kib,
        hwm_kib: None,
        seconds: 0.0,
        hist: new_hist()?,
    };
    for worker in workers {
        match worker.await {
            Ok(Ok((status, _, ns))) if status == StatusCode::OK => {
                burst.ok += 1;
                burst.hist.saturating_record(ns);
            }
            Ok(Ok((status, body, _))) if status == StatusCode::SERVICE_UNAVAILABLE => {
                burst.shed += 1;
                burst
                    .first_shed
                    .get_or_insert_with(|| String::from_utf8_lossy(&body[..body.len().min(160)]).into_owned());
            }
            Ok(Ok((status, body, _))) => {
                burst.other += 1;
                burst.first_other.get_or_insert_with(|| {
                    format!(
                        "{} {}",
                        status.as_u16(),
                        String::from_utf8_lossy(&body[..body.len().min(120)])
                    )
                });
            }
            Ok(Err(e)) => {
                burst.other += 1;
                burst.first_other.get_or_insert(e);
            }
            Err(e) => {
                burst.other += 1;
                burst.first_other.get_or_insert(format!("task: {e}"));
            }
        }
    }
    burst.seconds = started.elapsed().as_secs_f64();
    burst.hwm_kib = if reset.is_ok() { proc_status_kib("VmHWM") } else { None };
    progress(&format!(
        "{n} simultaneous logins: {} ok, {} shed (503), {} other errors in {:.1} s; peak RSS {}",
        burst.ok,
        burst.shed,
        burst.other,
        burst.seconds,
        fmt_kib(burst.hwm_kib)
    ));
    Ok(burst)
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

// ---------------------------------------------------------------------------
// CPU accounting: where the machine's time went during a cell.

/// CPU ticks (USER_HZ) of this process's threads and of every other process.
#[derive(Default)]
struct CpuTicks {
    /// tid → (an authd thread?, ticks).
    threads: HashMap<u32, (bool, u64)>,
    /// pid → (comm, ticks), other processes.
    procs: HashMap<u32, (String, u64)>,
    busy: u64,
    total: u64,
}

#[derive(Default, Clone)]
struct CpuUse {
    /// Percent of all cores.
    authd: f64,
    postgres: f64,
    redis: f64,
    client: f64,
    other: f64,
    idle: f64,
    /// CPU seconds of authd's threads.
    authd_secs: f64,
    /// The busiest other process (comm, percent of all cores).
    top_other: Option<(String, f64)>,
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
static BENCH_DB: std::sync::OnceLock<String> = std::sync::OnceLock::new();

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
    fn take() -> CpuTicks {
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
        // The client is the main thread and the `bench-cli` runtime; every
        // other thread (runtime `authd-srv`, hashing threads…) is authd's.
        let me = std::process::id();
        for (tid, path) in numeric_entries("/proc/self/task") {
            if let Ok(text) = std::fs::read_to_string(path.join("stat")) {
                if let Some((comm, ticks)) = stat_line(&text) {
                    let client = tid == me || comm.starts_with(CLIENT_THREADS);
                    t.threads.insert(tid, (!client, ticks));
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
    fn since(&self, before: &CpuTicks) -> CpuUse {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let pct = |ticks: u64| ticks as f64 * 100.0 / total;
        let (mut authd, mut client) = (0u64, 0u64);
        for (tid, (is_authd, ticks)) in &self.threads {
            let delta = ticks.saturating_sub(before.threads.get(tid).map(|t| t.1).unwrap_or(0));
            if *is_authd {
                authd += delta;
            } else {
                client += delta;
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
        let (authd_pct, client_pct, pg_pct, redis_pct) = (pct(authd), pct(client), pct(postgres), pct(redis));
        CpuUse {
            authd: authd_pct,
            postgres: pg_pct,
            redis: redis_pct,
            client: client_pct,
            other: (busy - authd_pct - client_pct - pg_pct - redis_pct).max(0.0),
            idle: (100.0 - busy).max(0.0),
            // /proc reports in USER_HZ, 100 per second on Linux.
            authd_secs: authd as f64 / 100.0,
            top_other: others
                .into_iter()
                .max_by_key(|(_, ticks)| *ticks)
                .map(|(comm, ticks)| (comm.to_string(), pct(ticks))),
        }
    }
}

// ---------------------------------------------------------------------------
// Signatures: authd's JWT path against raw Ed25519

struct Crypto {
    jwt_sign: f64,
    jwt_verify: f64,
    ring_sign: f64,
    ring_verify: f64,
    aws_sign: f64,
    aws_verify: f64,
    token_bytes: usize,
}

/// Operations per second of `f` on this thread for about `budget`.
fn rate(budget: Duration, mut f: impl FnMut() -> bool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < budget && n < 100_000_000 {
        for _ in 0..32 {
            if !std::hint::black_box(f()) {
                bail!("a signature operation failed");
            }
        }
        n += 32;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// authd's sign and first-sight verify against raw Ed25519, one thread each.
fn crypto_rates(sessions: &SessionService, owner: (Uuid, Uuid), budget: Duration) -> anyhow::Result<Crypto> {
    // Sign: new access tokens (claims as authd builds them) until the budget
    // is spent; each is also a token the verifier has never seen.
    let started = Instant::now();
    let mut fresh = Vec::new();
    while started.elapsed() < budget && fresh.len() < MAX_NEW_TOKENS {
        fresh.push(mint(sessions, owner.0, owner.1)?);
    }
    let jwt_sign = fresh.len() as f64 / started.elapsed().as_secs_f64();
    let tokens = sessions.tokens();
    let now = sessions.now();
    let started = Instant::now();
    let mut verified = 0usize;
    for token in &fresh {
        if started.elapsed() >= budget {
            break;
        }
        tokens
            .verify(token, now)
            .map_err(|why| anyhow!("a new token was refused: {why:?}"))?;
        verified += 1;
    }
    let jwt_verify = verified as f64 / started.elapsed().as_secs_f64();
    let token = fresh.first().map(String::as_str).unwrap_or("");
    // The same bytes a JWT signature covers.
    let message = token
        .rsplit_once('.')
        .map(|(m, _)| m)
        .unwrap_or(token)
        .as_bytes()
        .to_vec();

    let rng = SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow!("ring keygen"))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow!("ring key"))?;
    use ring::signature::KeyPair as _;
    let public =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, pair.public_key().as_ref().to_vec());
    let signature = pair.sign(&message);
    let ring_sign = rate(budget, || pair.sign(&message).as_ref().len() == 64)?;
    let ring_verify = rate(budget, || public.verify(&message, signature.as_ref()).is_ok())?;

    // authd's jsonwebtoken uses the aws-lc-rs backend: its raw cost too.
    use aws_lc_rs::signature::KeyPair as _;
    let aws_rng = aws_lc_rs::rand::SystemRandom::new();
    let aws_pkcs8 =
        aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&aws_rng).map_err(|_| anyhow!("aws-lc keygen"))?;
    let aws_pair =
        aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(aws_pkcs8.as_ref()).map_err(|_| anyhow!("aws-lc key"))?;
    let aws_public = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ED25519,
        aws_pair.public_key().as_ref().to_vec(),
    );
    let aws_signature = aws_pair.sign(&message);
    let aws_sign = rate(budget, || aws_pair.sign(&message).as_ref().len() == 64)?;
    let aws_verify = rate(budget, || aws_public.verify(&message, aws_signature.as_ref()).is_ok())?;
    Ok(Crypto {
        jwt_sign,
        jwt_verify,
        ring_sign,
        ring_verify,
        aws_sign,
        aws_verify,
        token_bytes: token.len(),
    })
}

// ---------------------------------------------------------------------------
// Baselines: redis-benchmark GET and a pgbench single-row UPDATE

async fn command_output(
    program: &str,
    args: &[String],
    env: &[(&str, String)],
    bound: Duration,
) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = tokio::time::timeout(bound, cmd.output())
        .await
        .map_err(|_| anyhow!("{program} did not finish within {bound:?}"))?
        .with_context(|| format!("running {program} (is it installed?)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "{program} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(stdout)
}

/// "GET: 43196.54 requests per second, p50=0.399 msec" (the last such line; progress lines use \r).
fn parse_redis_benchmark(out: &str) -> Option<f64> {
    out.split(['\r', '\n'])
        .filter(|l| l.contains("requests per second"))
        .filter_map(|l| l.split(':').nth(1)?.split_whitespace().next()?.parse().ok())
        .next_back()
}

fn parse_pgbench(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

async fn baselines(plan: &Plan, world: &World, pool: &PgPool, report: &mut Report) {
    let rd = &world.rd;
    for &c in &plan.concurrency {
        let mut args = vec![
            "-h".to_string(),
            rd.host.clone(),
            "-p".into(),
            rd.port.to_string(),
            "-t".into(),
            "get".into(),
            "-n".into(),
            plan.redis_requests.to_string(),
            "-c".into(),
            c.to_string(),
            "-q".into(),
        ];
        if let Some(p) = &rd.password {
            args.extend(["-a".to_string(), p.clone()]);
        }
        match command_output("redis-benchmark", &args, &[], Duration::from_secs(120)).await {
            Ok(out) => match parse_redis_benchmark(&out) {
                Some(rps) => {
                    progress(&format!("redis-benchmark GET c={c}: {}/s", fmt_rate(rps)));
                    report.redis_get.insert(c, rps);
                }
                None => report
                    .notes
                    .push(format!("redis-benchmark c={c}: no rate in its output")),
            },
            Err(e) => report.notes.push(format!("redis-benchmark c={c}: {e:#}")),
        }
    }

    let setup = async {
        sqlx::query("CREATE TABLE bench_rows (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0)")
            .execute(pool)
            .await?;
        sqlx::query("INSERT INTO bench_rows (id) SELECT generate_series(1, $1::int)")
            .bind(PGBENCH_ROWS as i32)
            .execute(pool)
            .await?;
        sqlx::query("VACUUM ANALYZE bench_rows").execute(pool).await?;
        let script = world.dir.join("update.sql");
        std::fs::write(
            &script,
            format!("\\set id random(1, {PGBENCH_ROWS})\nUPDATE bench_rows SET n = n + 1 WHERE id = :id;\n"),
        )?;
        let max_connections: String = sqlx::query_scalar("SHOW max_connections").fetch_one(pool).await?;
        anyhow::Ok((script, max_connections.parse::<usize>().unwrap_or(100)))
    };
    let (script, max_connections) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            report.notes.push(format!("pgbench setup: {e:#}"));
            return;
        }
    };
    let pg = &world.pg;
    for &c in &plan.concurrency {
        let Some(&secs) = plan.pgbench_secs.get(&c) else {
            continue;
        };
        if c + 20 > max_connections {
            report
                .notes
                .push(format!("pgbench c={c} skipped: max_connections is {max_connections}"));
            continue;
        }
        let args = vec![
            "-n".to_string(),
            "-f".into(),
            script.display().to_string(),
            "-c".into(),
            c.to_string(),
            "-j".into(),
            c.min(2).to_string(),
            "-T".into(),
            secs.to_string(),
            "-h".into(),
            pg.host.clone(),
            "-p".into(),
            pg.port.to_string(),
            "-U".into(),
            pg.user.clone().unwrap_or_else(|| "postgres".into()),
            world.db_name.clone(),
        ];
        let env: Vec<(&str, String)> = pg.password.iter().map(|p| ("PGPASSWORD", p.clone())).collect();
        match command_output("pgbench", &args, &env, Duration::from_secs(secs + 60)).await {
            Ok(out) => match parse_pgbench(&out) {
                Some(tps) => {
                    progress(&format!("pgbench single-row UPDATE c={c}: {} tps", fmt_rate(tps)));
                    report.pg_update.insert(c, tps);
                }
                None => report.notes.push(format!("pgbench c={c}: no tps in its output")),
            },
            Err(e) => report.notes.push(format!("pgbench c={c}: {e:#}")),
        }
    }
}

// ---------------------------------------------------------------------------
// The report

struct Report {
    cores: usize,
    plan_cell: Duration,
    header: Vec<String>,
    argon2_ms: f64,
    argon2_cold_ms: f64,
    argon2_parallel_rate: f64,
    burst: Option<Burst>,
    space: Option<Space>,
    cache: Option<CacheSpace>,
    rss_after_fill_kib: Option<u64>,
    rss_end_kib: Option<u64>,
    hwm_end_kib: Option<u64>,
    cells: Vec<Cell>,
    crypto: Option<Crypto>,
    redis_get: BTreeMap<usize, f64>,
    pg_update: BTreeMap<usize, f64>,
    notes: Vec<String>,
}

fn fmt_rate(r: f64) -> String {
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

fn fmt_ns(ns: u64) -> String {
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

fn fmt_kib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

impl Report {
    fn new(plan: &Plan, cores: usize, world: &World, config: &ServeConfig) -> Report {
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
                "{:.1} s per cell; {} bulk-stored sessions in the database during the load",
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
            rss_after_fill_kib: None,
            rss_end_kib: None,
            hwm_end_kib: None,
            cells: Vec::new(),
            crypto: None,
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
        cells + burst + cache
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
            Op::Sessions | Op::VerifyCached => None,
            Op::Verify => self.crypto.as_ref().map(|k| {
                let n = c.min(self.cores);
                (format!("ring verify ×{n}"), k.ring_verify * n as f64)
            }),
        }
    }

    fn cell(&self, op: Op, c: usize) -> Option<&Cell> {
        self.cells.iter().find(|x| x.op == op && x.c == c)
    }

    fn render(&self) -> String {
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
            let per_op = if cell.ok > 0 {
                fmt_ns((cell.cpu.authd_secs * 1e9 / cell.ok as f64) as u64) + "/op"
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
        line("  * no baseline at this concurrency; compared with c=32. authd CPU = CPU time of authd's threads (all but the client's) per successful operation.".into());
        line("  Latencies are per request as the client saw it (c requests in flight); the verify row times the in-process call alone.".into());
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
        line("targets (issue 6)".into());
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

    fn targets(&self) -> Vec<(String, String, Option<bool>)> {
        let mut t = Vec::new();
        for (op, name) in [(Op::Introspect, "introspection"), (Op::Me, "bearer check")] {
            let cell = self.cell(op, 32);
            let base = self.redis_get.get(&32);
            match (cell, base) {
                (Some(cell), Some(base)) => t.push((
                    format!("{name} ≥ 50 % of redis-benchmark GET at c=32"),
                    format!(
                        "{} / {} = {:.0} %",
                        fmt_rate(cell.rate()),
                        fmt_rate(*base),
                        cell.rate() / base * 100.0
                    ),
                    Some(cell.rate() >= 0.5 * base),
                )),
                _ => t.push((
                    format!("{name} ≥ 50 % of redis-benchmark GET at c=32"),
                    "not measured".into(),
                    None,
                )),
            }
            match cell {
                Some(cell) => {
                    let p99 = cell.hist.value_at_quantile(0.99);
                    t.push((
                        format!("{name} p99 < 2 ms at c=32"),
                        fmt_ns(p99),
                        Some(p99 < 2_000_000 && cell.ok > 0),
                    ));
                }
                None => t.push((format!("{name} p99 < 2 ms at c=32"), "not measured".into(), None)),
            }
        }
        let refresh = self.cell(Op::Refresh, 32);
        match (refresh, self.pg_update.get(&32)) {
            (Some(cell), Some(base)) => t.push((
                "refresh ≥ 50 % of pgbench single-row UPDATE at c=32".into(),
                format!(
                    "{} / {} = {:.0} %",
                    fmt_rate(cell.rate()),
                    fmt_rate(*base),
                    cell.rate() / base * 100.0
                ),
                Some(cell.rate() >= 0.5 * base),
            )),
            _ => t.push((
                "refresh ≥ 50 % of pgbench single-row UPDATE at c=32".into(),
                "not measured".into(),
                None,
            )),
        }
        match refresh {
            Some(cell) => {
                let p99 = cell.hist.value_at_quantile(0.99);
                t.push((
                    "refresh p99 < 10 ms at c=32".into(),
                    fmt_ns(p99),
                    Some(p99 < 10_000_000 && cell.ok > 0),
                ));
            }
            None => t.push(("refresh p99 < 10 ms at c=32".into(), "not measured".into(), None)),
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
                format!("peak RSS < 300 MiB under {RSS_LOGINS} simultaneous logins"),
                fmt_kib(Some(kib)),
                Some(kib < 300 * 1024),
            )),
            None => t.push((
                format!("peak RSS < 300 MiB under {RSS_LOGINS} simultaneous logins"),
                "not measured".into(),
                None,
            )),
        }
        let cells: u64 = self.cells.iter().map(|c| c.errors).sum();
        let (shed, other) = self.burst.as_ref().map(|b| (b.shed, b.other)).unwrap_or((0, 0));
        t.push((
            "no errors in any run".into(),
            format!("{cells} in the load cells; {shed} shed (503) + {other} other in the {RSS_LOGINS}-login burst"),
            Some(cells + shed + other == 0),
        ));
        t
    }
}
