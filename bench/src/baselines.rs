//! This machine's own limits, measured in the same run: argon2id at authd's
//! parameters, raw Ed25519 (ring and aws-lc-rs) against authd's JWT path,
//! redis-benchmark GET and a pgbench single-row UPDATE.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use authd::session::testing::SeededSession;
use authd::session::SessionService;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::PgPool;

use crate::cli::Plan;
use crate::load::MAX_NEW_TOKENS;
use crate::report::{fmt_rate, Report};
use crate::seed::PASSWORD;
use crate::world::{progress, World};

/// The pgbench client count refresh's target is stated against (issue 14).
pub const PGBENCH_REFERENCE_CLIENTS: usize = 8;

/// Rows of the pgbench table (one random row updated per transaction).
const PGBENCH_ROWS: i64 = 100_000;

pub fn argon2id(params: argon2::Params) -> argon2::Argon2<'static> {
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

pub struct HashTimes {
    /// Seconds per hash into one reused block buffer: the pure compute cost.
    pub warm: Vec<f64>,
    /// Seconds per hash as the `password-hash` API runs it (a fresh buffer each).
    pub cold: Vec<f64>,
    /// Hashes per second with `threads` threads hashing at once (reused buffers).
    pub parallel_rate: f64,
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
pub fn argon2_hash_times(params: argon2::Params, reps: usize, threads: usize) -> anyhow::Result<HashTimes> {
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

/// authd's JWT path against raw Ed25519, operations per second on one thread.
pub struct Crypto {
    pub jwt_sign: f64,
    pub jwt_verify: f64,
    pub ring_sign: f64,
    pub ring_verify: f64,
    pub aws_sign: f64,
    pub aws_verify: f64,
    pub token_bytes: usize,
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
pub fn crypto_rates(sessions: &SessionService, owner: &SeededSession, budget: Duration) -> anyhow::Result<Crypto> {
    // Sign: new access tokens (claims as authd builds them) until the budget
    // is spent; each is also a token the verifier has never seen.
    let started = Instant::now();
    let mut fresh = Vec::new();
    while started.elapsed() < budget && fresh.len() < MAX_NEW_TOKENS {
        fresh.push(
            sessions
                .seed_access_token(&owner.record)
                .map_err(|e| anyhow!("signing an access token: {e}"))?,
        );
    }
    let jwt_sign = fresh.len() as f64 / started.elapsed().as_secs_f64();
    let tokens = sessions.token_issuer();
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

pub async fn baselines(plan: &Plan, world: &World, pool: &PgPool, report: &mut Report) {
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
    // Each load concurrency, plus the 8 clients issue 14 states refresh's target against.
    for (&c, &secs) in &plan.pgbench_secs {
        if c != PGBENCH_REFERENCE_CLIENTS && !plan.concurrency.contains(&c) {
            continue;
        }
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
