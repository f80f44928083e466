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
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;

use super::{CacheLookup, SessionCache, StoreError, StoreResult};
use crate::config::SecretUrl;
use crate::domain::{SessionId, UserId};

const REVOKED: &str = "r";

const PUT_LIVE: &str = r"
if redis.call('GET', KEYS[1]) == 'r' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
";

pub struct RedisCache {
    client: redis::Client,
    config: ConnectionManagerConfig,
    conn: Arc<RwLock<Option<ConnectionManager>>>,
    connecting: Arc<tokio::sync::Mutex<()>>,
    prefix: String,
    timeout: Duration,
    put_live: Script,
    description: String,
}

impl RedisCache {
    /// Builds the cache; the first connection is tried now but a Redis that is
    /// down does not stop startup (authd serves from the database meanwhile).
    pub async fn connect(url: &SecretUrl, prefix: &str, timeout: Duration) -> StoreResult<Self> {
        let client = redis::Client::open(url.expose())
            .map_err(|e| StoreError::Other(format!("REDIS_URL is not a valid Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let cache = RedisCache {
            client,
            config,
            conn: Arc::new(RwLock::new(None)),
            connecting: Arc::new(tokio::sync::Mutex::new(())),
            prefix: prefix.to_string(),
            timeout,
            put_live: Script::new(PUT_LIVE),
            description: format!("redis:{}", url.redacted()),
        };
        if let Err(e) = cache.connection().await {
            tracing::warn!(error = %e, "redis is not reachable at startup; serving from the database until it is");
        }
        Ok(cache)
    }

    fn key(&self, id: SessionId) -> String {
        format!("{}s:{{{}}}", self.prefix, id)
    }

    async fn connection(&self) -> StoreResult<ConnectionManager> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        // One connect attempt at a time; others fail fast to the database.
        let Ok(_guard) = self.connecting.try_lock() else {
            return Err(StoreError::Unavailable(
                "redis connection is being established".into(),
            ));
        };
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let manager = tokio::time::timeout(
            self.timeout.max(Duration::from_millis(500)),
            ConnectionManager::new_with_config(self.client.clone(), self.config.clone()),
        )
        .await
        .map_err(|_| StoreError::Unavailable("redis connect timed out".into()))?
        .map_err(|e| StoreError::Unavailable(format!("redis connect failed: {e}")))?;
        if let Ok(mut slot) = self.conn.write() {
            *slot = Some(manager.clone());
        }
        Ok(manager)
    }

    fn current(&self) -> Option<ConnectionManager> {
        self.conn.read().ok().and_then(|c| c.clone())
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = redis::RedisResult<T>>,
    ) -> StoreResult<T> {
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
        Some(entry) => {
            let mut parts = entry.splitn(3, ':');
            match (
                parts.next(),
                parts.next().and_then(|u| u.parse().ok()),
                parts.next().and_then(|e| e.parse().ok()),
            ) {
                (Some("l"), Some(user), Some(expires_at)) => CacheLookup::Live {
                    user_id: UserId(user),
                    expires_at,
                },
                // Unreadable entries are treated as absent: the database decides.
                _ => CacheLookup::Miss,
            }
        }
    }
}

#[async_trait]
impl SessionCache for RedisCache {
    fn describe(&self) -> String {
        self.description.clone()
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

    async fn put_live(
        &self,
        id: SessionId,
        user_id: UserId,
        expires_at: i64,
        ttl: Duration,
    ) -> StoreResult<()> {
        let mut conn = self.connection().await?;
        let value = format!("l:{user_id}:{expires_at}");
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
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("SET")
                .arg(self.key(*id))
                .arg(REVOKED)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .ignore();
        }
        self.bounded(pipe.query_async::<()>(&mut conn)).await
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
            CacheLookup::Live {
                user_id: u,
                expires_at: 17
            }
        );
        assert_eq!(parse_entry(Some("l:garbage:1".into())), CacheLookup::Miss);
    }
}
