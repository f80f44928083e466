//! The session cache on Redis. It holds only what Postgres can rebuild.
//!
//! One key per session, `<prefix>s:{<sid>}` (the hash tag keeps a session on
//! one cluster slot): `l:<user id>:<expires unix>` while live, `r` once
//! revoked. A live entry never overwrites a revocation marker (a Lua check),
//! so a slow cache fill racing a revocation cannot resurrect the session.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::Script;

use super::counters::{Counter, CounterStore, Take};
use super::{Backend, CacheLookup, LiveEntry, SessionCache, SessionFacts, StoreError, StoreResult};
use crate::config::SecretUrl;
use crate::domain::{SessionId, UserId};

const REVOKED: &str = "r";

const PUT_LIVE: &str = r"
if redis.call('GET', KEYS[1]) == 'r' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
";

/// A single server (reconnecting manager) or a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Target {
    Single(redis::Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
}

/// Counts one event unless the limit is reached, in one atomic step. The
/// window end is kept in the entry on the service clock (`now` is an
/// argument), so time stays a parameter; the key's TTL only collects garbage.
/// KEYS[1]; ARGV: limit, window ms, now ms. Returns {taken 0/1, count, ms left}.
const TAKE: &str = r"
local v = redis.call('HMGET', KEYS[1], 'n', 'e')
local n, e = tonumber(v[1]) or 0, tonumber(v[2]) or 0
local limit, window, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if e <= now then n = 0; e = now + window end
if n >= limit then return {0, n, e - now} end
n = n + 1
redis.call('HSET', KEYS[1], 'n', n, 'e', e)
redis.call('PEXPIRE', KEYS[1], e - now + 1000)
return {1, n, e - now}
";

/// Takes back one event of a window still running. KEYS[1]; ARGV: now ms.
const GIVE_BACK: &str = r"
local v = redis.call('HMGET', KEYS[1], 'n', 'e')
local n, e = tonumber(v[1]) or 0, tonumber(v[2]) or 0
if n > 0 and e > tonumber(ARGV[1]) then redis.call('HINCRBY', KEYS[1], 'n', -1) end
return 0
";

fn unix_millis(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub struct RedisCache {
    target: Target,
    conn: Arc<RwLock<Option<Conn>>>,
    connecting: Arc<tokio::sync::Mutex<()>>,
    prefix: String,
    timeout: Duration,
    put_live: Script,
    take: Script,
    give_back: Script,
    description: String,
}

impl RedisCache {
    /// Builds the cache; the first connection is tried now but a Redis that is
    /// down does not stop startup (authd serves from the database meanwhile).
    pub async fn connect(url: &SecretUrl, prefix: &str, timeout: Duration) -> StoreResult<Self> {
        let target = if let Some(nodes) = url.expose().strip_prefix("redis+cluster://") {
            // `redis+cluster://host1:6379,host2:6379`: any reachable nodes; the rest is discovered.
            let nodes: Vec<String> = nodes.split(',').map(|n| format!("redis://{}", n.trim())).collect();
            let client = ClusterClient::builder(nodes)
                .connection_timeout(timeout.max(Duration::from_millis(500)))
                .response_timeout(timeout)
                .retries(1)
                .build()
                .map_err(|e| StoreError::Other(format!("REDIS_URL is not a valid Redis cluster URL: {e}")))?;
            Target::Cluster(client)
        } else {
            let client = redis::Client::open(url.expose())
                .map_err(|e| StoreError::Other(format!("REDIS_URL is not a valid Redis URL: {e}")))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            Target::Single(client, config)
        };
        let cache = RedisCache {
            target,
            conn: Arc::new(RwLock::new(None)),
            connecting: Arc::new(tokio::sync::Mutex::new(())),
            prefix: prefix.to_string(),
            timeout,
            put_live: Script::new(PUT_LIVE),
            take: Script::new(TAKE),
            give_back: Script::new(GIVE_BACK),
            description: format!("redis:{}", url.redacted()),
        };
        if let Err(e) = cache.connection().await {
            tracing::warn!(error = %e, "redis is not reachable at startup; serving from the database until it is");
        }
        Ok(cache)
    }

    fn counter_key(&self, key: &str) -> String {
        format!("{}k:{}", self.prefix, key)
    }

    fn key(&self, id: SessionId) -> String {
        format!("{}s:{{{}}}", self.prefix, id)
    }

    async fn connection(&self) -> StoreResult<Conn> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        // One connect attempt at a time; others fail fast to the database.
        let Ok(_guard) = self.connecting.try_lock() else {
            return Err(StoreError::Unavailable("redis connection is being established".into()));
        };
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let connect = async {
            match &self.target {
                Target::Single(client, config) => ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await
                    .map(Conn::Single),
                Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
            }
        };
        let manager = tokio::time::timeout(self.timeout.max(Duration::from_millis(500)), connect)
            .await
            .map_err(|_| StoreError::Unavailable("redis connect timed out".into()))?
            .map_err(|e| StoreError::Unavailable(format!("redis connect failed: {e}")))?;
        if let Ok(mut slot) = self.conn.write() {
            *slot = Some(manager.clone());
        }
        Ok(manager)
    }

    fn current(&self) -> Option<Conn> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    async fn bounded<T>(&self, work: impl Future<Output = redis::RedisResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("redis: {e}"))),
            Err(_) => Err(StoreError::Unavailable(format!(
                "redis did not answer within {:?}",
                self.timeout
            ))),
        }
    }
}

fn parse_entry(raw: Option<String>) -> CacheLookup {
    match raw.as_deref() {
        None => CacheLookup::Miss,
        Some(REVOKED) => CacheLookup::Revoked,
        // Unreadable entries are treated as absent: the database decides.
        Some(entry) => parse_live(entry).map_or(CacheLookup::Miss, CacheLookup::Live),
    }
}

/// `l:<user>:<idle end, unix s>` and, since facts are cached,
/// `:<absolute end, unix µs>:<JSON [client_id, scope]>`.
fn parse_live(entry: &str) -> Option<LiveEntry> {
    let mut parts = entry.splitn(5, ':');
    if parts.next()? != "l" {
        return None;
    }
    let user_id = UserId(parts.next()?.parse().ok()?);
    let expires_at = parts.next()?.parse().ok()?;
    let facts = match (parts.next(), parts.next()) {
        (None, None) => None,
        (Some(absolute), Some(rest)) => {
            let micros: i128 = absolute.parse().ok()?;
            let (client_id, scope): (String, Option<String>) = serde_json::from_str(rest).ok()?;
            Some(SessionFacts {
                client_id,
                scope,
                absolute_expires_at: time::OffsetDateTime::from_unix_timestamp_nanos(micros.checked_mul(1000)?).ok()?,
            })
        }
        _ => return None,
    };
    Some(LiveEntry {
        user_id,
        expires_at,
        facts,
    })
}

fn format_live(entry: &LiveEntry) -> String {
    let head = format!("l:{}:{}", entry.user_id, entry.expires_at);
    match &entry.facts {
        None => head,
        Some(f) => {
            let micros = f.absolute_expires_at.unix_timestamp_nanos() / 1000;
            match serde_json::to_string(&(&f.client_id, &f.scope)) {
                Ok(rest) => format!("{head}:{micros}:{rest}"),
                // Without facts a refresh takes the locked path; nothing else differs.
                Err(_) => head,
            }
        }
    }
}

/// `run_id` and `master_replid` from an INFO answer.
fn server_identity(info: &str) -> String {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    format!("{}/{}", field("run_id"), field("master_replid"))
}

#[async_trait]
impl SessionCache for RedisCache {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn backend(&self) -> Backend {
        Backend::Redis
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.connection().await?;
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(|_| ())
    }

    async fn get(&self, id: SessionId) -> StoreResult<CacheLookup> {
        let mut conn = self.connection().await?;
        let raw: Option<String> = self
            .bounded(redis::cmd("GET").arg(self.key(id)).query_async(&mut conn))
            .await?;
        Ok(parse_entry(raw))
    }

    async fn put_live(&self, id: SessionId, entry: &LiveEntry, ttl: Duration) -> StoreResult<()> {
        let mut conn = self.connection().await?;
        let value = format_live(entry);
        let mut invocation = self.put_live.key(self.key(id));
        invocation.arg(value).arg(ttl.as_secs().max(1));
        self.bounded(invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }

    async fn mark_revoked(&self, ids: &[SessionId], ttl: Duration) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let conn = self.connection().await?;
        // One SET per key: keys of different sessions live on different cluster slots.
        let ttl = ttl.as_secs().max(1);
        let writes = ids.iter().map(|id| {
            let mut conn = conn.clone();
            let key = self.key(*id);
            async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(REVOKED)
                    .arg("EX")
                    .arg(ttl)
                    .query_async::<()>(&mut conn)
                    .await
            }
        });
        let results = self
            .bounded(async { Ok(futures_util::future::join_all(writes).await) })
            .await?;
        results
            .into_iter()
            .collect::<redis::RedisResult<Vec<()>>>()
            .map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?;
        Ok(())
    }

    /// `run_id` changes with every restart, `master_replid` with every
    /// failover. A cluster answers INFO from whichever node it picks, so it
    /// has no single identity: its outages alone make authd re-sweep.
    async fn identity(&self) -> StoreResult<Option<String>> {
        if matches!(self.target, Target::Cluster(_)) {
            return Ok(None);
        }
        let mut conn = self.connection().await?;
        let info: String = self.bounded(redis::cmd("INFO").query_async(&mut conn)).await?;
        Ok(Some(server_identity(&info)))
    }
}

#[async_trait]
impl CounterStore for RedisCache {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn take(&self, key: &str, limit: u64, window: Duration, now: time::OffsetDateTime) -> StoreResult<Take> {
        let mut conn = self.connection().await?;
        let mut invocation = self.take.key(self.counter_key(key));
        invocation
            .arg(limit)
            .arg(window.as_millis().max(1) as u64)
            .arg(unix_millis(now));
        let (taken, count, left) = self
            .bounded(invocation.invoke_async::<(u8, u64, i64)>(&mut conn))
            .await?;
        let counter = Counter {
            count,
            remaining: Duration::from_millis(left.max(0) as u64),
        };
        Ok(if taken == 1 {
            Take::Taken(counter)
        } else {
            Take::Refused(counter)
        })
    }

    async fn give_back(&self, key: &str, now: time::OffsetDateTime) -> StoreResult<()> {
        let mut conn = self.connection().await?;
        let mut invocation = self.give_back.key(self.counter_key(key));
        invocation.arg(unix_millis(now));
        self.bounded(invocation.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }

    async fn clear(&self, key: &str, _now: time::OffsetDateTime) -> StoreResult<()> {
        let mut conn = self.connection().await?;
        self.bounded(
            redis::cmd("DEL")
                .arg(self.counter_key(key))
                .query_async::<()>(&mut conn),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_strictly() {
        let u = UserId::new();
        assert_eq!(parse_entry(None), CacheLookup::Miss);
        assert_eq!(parse_entry(Some("r".into())), CacheLookup::Revoked);
        assert_eq!(
            parse_entry(Some(format!("l:{u}:17"))),
            CacheLookup::Live(LiveEntry {
                user_id: u,
                expires_at: 17,
                facts: None,
            })
        );
        assert_eq!(parse_entry(Some("l:garbage:1".into())), CacheLookup::Miss);
        assert_eq!(parse_entry(Some(format!("l:{u}:17:5"))), CacheLookup::Miss);
        assert_eq!(parse_entry(Some(format!("l:{u}:17:5:[\"web\""))), CacheLookup::Miss);
    }

    #[test]
    fn entries_with_facts_round_trip() {
        let absolute = time::OffsetDateTime::from_unix_timestamp_nanos(1_893_456_000_123_456_000).unwrap();
        for (client_id, scope) in [("web", Some("openid profile")), ("a:b\"c", None)] {
            let entry = LiveEntry {
                user_id: UserId::new(),
                expires_at: 1_893_456_000,
                facts: Some(SessionFacts {
                    client_id: client_id.into(),
                    scope: scope.map(String::from),
                    absolute_expires_at: absolute,
                }),
            };
            assert_eq!(parse_entry(Some(format_live(&entry))), CacheLookup::Live(entry));
        }
    }

    #[test]
    fn identity_names_the_server_and_its_replication_history() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc123\r\n# Replication\r\nrole:master\r\nmaster_replid:def456\r\nmaster_replid2:000\r\n";
        assert_eq!(server_identity(info), "abc123/def456");
    }
}
