//! Seeding through authd's own library (its `testing` feature): users and
//! sessions go through the store contract with the login's own session
//! shape, so a migration cannot break the bench without the compiler or the
//! smoke run noticing. Only the sizes are measured with SQL.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use anyhow::anyhow;
use authd::domain::{SessionId, UserId};
use authd::session::testing::SeededSession;
use authd::session::SessionService;
use futures_util::StreamExt;
use ring::rand::{SecureRandom, SystemRandom};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::runtime::Handle;

use crate::baselines::argon2id;
use crate::world::{info_field, progress};

/// The password of every seeded user.
pub const PASSWORD: &str = "correct horse battery staple";
pub const BROWSER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
/// client_id of the bulk-stored sessions.
const BULK_CLIENT: &str = "bench-bulk";
/// Store calls in flight at once while seeding (authd's pool bounds the rest).
const SEED_WIDTH: usize = 32;

/// A PHC string of `PASSWORD` (random salt), for the seeded users.
pub fn argon2_phc(params: argon2::Params) -> anyhow::Result<String> {
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

pub fn login_email(k: usize) -> String {
    format!("bench-login-{k}@example.org")
}

/// `f(0..n)` on authd's runtime, `SEED_WIDTH` at once, results in order;
/// the first failure ends it.
async fn on_server<T, F, Fut>(server: &Handle, n: usize, f: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    server
        .spawn(async move {
            let mut out = Vec::with_capacity(n);
            let mut results = futures_util::stream::iter(0..n).map(f).buffered(SEED_WIDTH);
            while let Some(result) = results.next().await {
                out.push(result?);
            }
            anyhow::Ok(out)
        })
        .await?
}

/// Users with the given emails, all with the password hash `phc`.
pub async fn seed_users(
    server: &Handle,
    sessions: &Arc<SessionService>,
    emails: Vec<String>,
    phc: &str,
) -> anyhow::Result<Vec<UserId>> {
    let (sessions, emails, phc) = (sessions.clone(), Arc::new(emails), Arc::new(phc.to_string()));
    on_server(server, emails.len(), move |i| {
        let (sessions, emails, phc) = (sessions.clone(), emails.clone(), phc.clone());
        async move {
            let email = emails.get(i).ok_or_else(|| anyhow!("no email {i}"))?;
            sessions
                .seed_user(email, &phc)
                .await
                .map_err(|e| anyhow!("seeding user {email}: {e}"))
        }
    })
    .await
}

/// `n` live sessions, owned by `owners` in turn, with known refresh tokens
/// (generation 0), as a login from `ip(i)` would store them.
/// Only `keep(session)` of each is held on to (a million full records would
/// weigh on the memory the report measures).
async fn seed_sessions_of<T: Send + 'static>(
    server: &Handle,
    sessions: &Arc<SessionService>,
    owners: Vec<UserId>,
    n: usize,
    client_id: &'static str,
    ip: impl Fn(usize) -> String + Send + Sync + 'static,
    keep: fn(SeededSession) -> T,
) -> anyhow::Result<Vec<T>> {
    let (sessions, owners, ip) = (sessions.clone(), Arc::new(owners), Arc::new(ip));
    on_server(server, n, move |i| {
        let (sessions, owners, ip) = (sessions.clone(), owners.clone(), ip.clone());
        async move {
            let owner = *owners
                .get(i % owners.len().max(1))
                .ok_or_else(|| anyhow!("no owner for session {i}"))?;
            sessions
                .seed_session(owner, client_id, Some(BROWSER_UA), Some(&ip(i)))
                .await
                .map(keep)
                .map_err(|e| anyhow!("seeding a session: {e}"))
        }
    })
    .await
}

/// `users` new users `bench-<label>-<i>` and `per_user` live sessions each.
pub async fn seed_sessions(
    server: &Handle,
    sessions: &Arc<SessionService>,
    label: &str,
    users: usize,
    per_user: usize,
    phc: &str,
) -> anyhow::Result<Vec<SeededSession>> {
    let emails = (0..users).map(|i| format!("bench-{label}-{i}@example.org")).collect();
    let owners = seed_users(server, sessions, emails, phc).await?;
    seed_sessions_of(
        server,
        sessions,
        owners,
        users * per_user,
        "web",
        |_| "127.0.0.1".to_string(),
        |s| s,
    )
    .await
}

pub struct Space {
    pub sessions: u64,
    pub pg_bytes: i64,
    pub seconds: f64,
}

/// A stored session, as much as filling the cache needs.
pub type Bulk = Vec<(SessionId, UserId, OffsetDateTime)>;

const RELATION_BYTES: &str =
    "SELECT (pg_total_relation_size('sessions') + pg_total_relation_size('refresh_tokens'))::bigint";

/// `n` sessions (10 per user, one refresh token each) through authd's store;
/// the growth of `sessions` + `refresh_tokens` (heap, indexes, TOAST) per session.
pub async fn store_sessions(
    server: &Handle,
    sessions: &Arc<SessionService>,
    pool: &PgPool,
    n: u64,
    phc: &str,
) -> anyhow::Result<(Space, Bulk)> {
    let users = n.div_ceil(10) as usize;
    let before: i64 = sqlx::query_scalar(RELATION_BYTES).fetch_one(pool).await?;
    let started = Instant::now();
    let emails = (0..users).map(|i| format!("bench-bulk-{i}@example.org")).collect();
    let owners = seed_users(server, sessions, emails, phc).await?;
    let user_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let bulk: Bulk = seed_sessions_of(
        server,
        sessions,
        owners,
        n as usize,
        BULK_CLIENT,
        |i| format!("203.0.113.{}", i % 250),
        |s| (s.record.id, s.record.user_id, s.record.expires_at),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let after: i64 = sqlx::query_scalar(RELATION_BYTES).fetch_one(pool).await?;
    // Fresh statistics, as autovacuum would give them, for the queries that follow.
    sqlx::query("ANALYZE").execute(pool).await?;
    let stored = n;
    progress(&format!(
        "stored {users} users in {user_secs:.1} s and {stored} sessions in {seconds:.1} s ({:.0}/s) through authd's \
         store: {:.0} bytes per session in Postgres",
        stored as f64 / seconds.max(1e-9),
        (after - before) as f64 / stored.max(1) as f64
    ));
    Ok((
        Space {
            sessions: stored,
            pg_bytes: after - before,
            seconds,
        },
        bulk,
    ))
}

pub struct CacheSpace {
    pub filled: u64,
    pub errors: u64,
    pub seconds: f64,
    pub used_memory_delta: i64,
    pub sampled_key_bytes: Option<f64>,
}

async fn used_memory(redis: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<i64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(redis).await?;
    info_field(&info, "used_memory")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("INFO memory has no used_memory"))
}

/// Puts every bulk session in the cache through authd's own cache (what a
/// bearer check does on a miss) and measures Redis' growth.
pub async fn fill_cache(
    server: &Handle,
    sessions: &Arc<SessionService>,
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    bulk: Bulk,
) -> anyhow::Result<CacheSpace> {
    let before = used_memory(redis).await?;
    let started = Instant::now();
    let filled = bulk.len() as u64;
    let sessions = sessions.clone();
    let errors = server
        .spawn(async move {
            futures_util::stream::iter(bulk)
                .map(|(id, user, expires)| {
                    let sessions = sessions.clone();
                    async move { sessions.seed_cache_live(id, user, expires).await.is_err() }
                })
                .buffer_unordered(64)
                .filter(|failed| std::future::ready(*failed))
                .count()
                .await as u64
        })
        .await?;
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

/// What one sample of sessions holds in Postgres after some refreshes each.
#[derive(Debug, Clone, Copy, Default)]
pub struct Held {
    /// Rows of `sessions`, `refresh_tokens` and `session_events` per session.
    pub rows: f64,
    /// Their bytes (live tuples, `pg_column_size`) per session.
    pub bytes: f64,
}

/// Storage per session after one refresh and after `n` (invariant 9: equal).
pub struct RefreshStorage {
    pub sessions: usize,
    pub refreshes: usize,
    pub after_one: Held,
    pub after_n: Held,
    pub seconds: f64,
}

const HELD: &str = "WITH s AS (SELECT * FROM sessions WHERE id = ANY($1)), \
       t AS (SELECT * FROM refresh_tokens WHERE session_id = ANY($1)), \
       e AS (SELECT * FROM session_events WHERE session_id = ANY($1)) \
     SELECT ((SELECT count(*) FROM s) + (SELECT count(*) FROM t) + (SELECT count(*) FROM e))::float8, \
       (COALESCE((SELECT sum(pg_column_size(s.*)) FROM s), 0) + COALESCE((SELECT sum(pg_column_size(t.*)) FROM t), 0) \
        + COALESCE((SELECT sum(pg_column_size(e.*)) FROM e), 0))::float8";

async fn held(pool: &PgPool, ids: &[sqlx::types::Uuid]) -> anyhow::Result<Held> {
    let (rows, bytes): (f64, f64) = sqlx::query_as(HELD).bind(ids).fetch_one(pool).await?;
    let n = ids.len().max(1) as f64;
    Ok(Held {
        rows: rows / n,
        bytes: bytes / n,
    })
}

/// Refreshes each of `chains` (one chain of tokens per session, all at once)
/// `n` times through authd's rules and store, measuring what the sessions
/// hold after the first refresh and after the last.
pub async fn refresh_storage(
    server: &Handle,
    sessions: &Arc<SessionService>,
    pool: &PgPool,
    chains: Vec<SeededSession>,
    n: usize,
) -> anyhow::Result<RefreshStorage> {
    let ids: Vec<sqlx::types::Uuid> = chains.iter().map(|s| s.record.id.0).collect();
    let count = chains.len();
    let run = |tokens: Vec<String>, times: usize| {
        let sessions = sessions.clone();
        server.spawn(async move {
            let meta = authd::session::audit::Meta::user(Some("127.0.0.1".into()), None);
            let chains = tokens.into_iter().map(|mut token| {
                let (sessions, meta) = (sessions.clone(), meta.clone());
                async move {
                    for _ in 0..times {
                        token = sessions
                            .refresh(&token, &meta)
                            .await
                            .map_err(|e| anyhow!("refresh: {e}"))?
                            .refresh_token;
                    }
                    anyhow::Ok(token)
                }
            });
            futures_util::future::try_join_all(chains).await
        })
    };
    let started = Instant::now();
    let tokens = chains.into_iter().map(|s| s.refresh_token).collect();
    let tokens = run(tokens, 1).await??;
    let after_one = held(pool, &ids).await?;
    run(tokens, n.saturating_sub(1)).await??;
    let after_n = held(pool, &ids).await?;
    Ok(RefreshStorage {
        sessions: count,
        refreshes: n,
        after_one,
        after_n,
        seconds: started.elapsed().as_secs_f64(),
    })
}
