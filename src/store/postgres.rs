//! The durable store on Postgres: the source of truth.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{FromRow, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AuditEvent, Decide, DurableStore, RefreshCandidate, RefreshDecision, SessionRecord, StoreError, StoreResult,
    UserRecord, CLEANUP_TIMEOUT,
};
use crate::config::SecretUrl;
use crate::domain::{SessionId, TokenHash, UserId};

/// The NOTIFY channel on which processes learn that the cache missed revocations.
const ALERT_CHANNEL: &str = "authd_cache_alert";

pub struct PgStore {
    pool: PgPool,
    timeout: Duration,
    description: String,
}

/// Whether a database error means "cannot serve now" rather than "bad query".
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08: connection exception; 53: insufficient resources; 57: operator
            // intervention (shutdown, statement timeout); 40: serialization/deadlock.
            if ["08", "53", "57", "40"].iter().any(|class| code.starts_with(class)) {
                StoreError::Unavailable(e.to_string())
            } else {
                StoreError::Other(e.to_string())
            }
        }
        _ => StoreError::Other(e.to_string()),
    }
}

#[derive(FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    password_hash: String,
    created_at: OffsetDateTime,
}

impl From<UserRow> for UserRecord {
    fn from(r: UserRow) -> Self {
        UserRecord {
            id: UserId(r.id),
            email: r.email,
            password_hash: r.password_hash,
            created_at: r.created_at,
        }
    }
}

#[derive(FromRow)]
struct SessionRow {
    id: Uuid,
    user_id: Uuid,
    client_id: String,
    scope: Option<String>,
    device_name: String,
    user_agent: Option<String>,
    ip: Option<String>,
    created_at: OffsetDateTime,
    last_used_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    absolute_expires_at: OffsetDateTime,
    refresh_generation: i64,
    rotated_at: OffsetDateTime,
    grace_ciphertext: Option<Vec<u8>>,
    revoked_at: Option<OffsetDateTime>,
    revoke_reason: Option<String>,
}

impl From<SessionRow> for SessionRecord {
    fn from(r: SessionRow) -> Self {
        SessionRecord {
            id: SessionId(r.id),
            user_id: UserId(r.user_id),
            client_id: r.client_id,
            scope: r.scope,
            device_name: r.device_name,
            user_agent: r.user_agent,
            ip: r.ip,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            expires_at: r.expires_at,
            absolute_expires_at: r.absolute_expires_at,
            refresh_generation: r.refresh_generation,
            rotated_at: r.rotated_at,
            grace_ciphertext: r.grace_ciphertext,
            revoked_at: r.revoked_at,
            revoke_reason: r.revoke_reason,
        }
    }
}

#[derive(FromRow)]
struct AuditRow {
    id: Uuid,
    at: OffsetDateTime,
    kind: String,
    user_id: Option<Uuid>,
    session_id: Option<Uuid>,
    actor: String,
    reason: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
}

#[derive(FromRow)]
struct CandidateRow {
    #[sqlx(flatten)]
    session: SessionRow,
    token_generation: i64,
}

const SESSION_COLUMNS: &str = "s.id, s.user_id, s.client_id, s.scope, s.device_name, s.user_agent, s.ip, \
     s.created_at, s.last_used_at, s.expires_at, s.absolute_expires_at, s.refresh_generation, \
     s.rotated_at, s.grace_ciphertext, s.revoked_at, s.revoke_reason";

impl PgStore {
    pub async fn connect(url: &SecretUrl, max_connections: u32, timeout: Duration) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url.expose())
            .map_err(|e| StoreError::Other(format!("DATABASE_URL is not a valid Postgres URL: {e}")))?
            .options([("statement_timeout", format!("{}", timeout.as_millis()))]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(timeout)
            .connect_lazy_with(options);
        Ok(PgStore {
            pool,
            timeout,
            description: format!("postgres:{}", url.redacted()),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Bounds every call: a hung server must not hang a request.
    /// Like `bounded`, with the cleanup bound (the pool may also wait that long).
    async fn cleanup_bounded<T>(&self, work: impl Future<Output = Result<T, sqlx::Error>>) -> StoreResult<T> {
        match tokio::time::timeout(CLEANUP_TIMEOUT, work).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(StoreError::Unavailable(format!(
                "postgres cleanup batch did not finish within {CLEANUP_TIMEOUT:?}"
            ))),
        }
    }

    async fn bounded<T>(&self, work: impl Future<Output = Result<T, sqlx::Error>>) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(StoreError::Unavailable(format!(
                "postgres did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn revoke_others_in(
        tx: &mut Transaction<'_, Postgres>,
        user: UserId,
        except: Option<SessionId>,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<SessionId>, sqlx::Error> {
        let ids: Vec<(Uuid,)> = sqlx::query_as(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
             WHERE user_id = $3 AND revoked_at IS NULL AND expires_at > $1 \
               AND ($4::uuid IS NULL OR id <> $4) RETURNING id",
        )
        .bind(now)
        .bind(reason)
        .bind(user.0)
        .bind(except.map(|s| s.0))
        .fetch_all(&mut **tx)
        .await?;
        Ok(ids.into_iter().map(|(id,)| SessionId(id)).collect())
    }
}

#[async_trait]
impl DurableStore for PgStore {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.bounded(sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .map(|_| ())
    }

    async fn migrate(&self) -> StoreResult<()> {
        let migrator = sqlx::migrate!("./migrations/postgres");
        match tokio::time::timeout(self.timeout * 10, migrator.run(&self.pool)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(sqlx::migrate::MigrateError::Execute(e))) => Err(classify(e)),
            Ok(Err(e)) => Err(StoreError::Other(format!("migration failed: {e}"))),
            Err(_) => Err(StoreError::Unavailable(
                "postgres did not finish migrations in time".into(),
            )),
        }
    }

    async fn create_user(&self, user: &UserRecord, email_normalized: &str) -> StoreResult<bool> {
        let result = self
            .bounded(
                sqlx::query(
                    "INSERT INTO users (id, email, email_normalized, password_hash, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (email_normalized) DO NOTHING",
                )
                .bind(user.id.0)
                .bind(&user.email)
                .bind(email_normalized)
                .bind(&user.password_hash)
                .bind(user.created_at)
                .execute(&self.pool),
            )
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn find_user_by_email(&self, email_normalized: &str) -> StoreResult<Option<UserRecord>> {
        let row: Option<UserRow> = self
            .bounded(
                sqlx::query_as("SELECT id, email, password_hash, created_at FROM users WHERE email_normalized = $1")
                    .bind(email_normalized)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(Into::into))
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        let row: Option<UserRow> = self
            .bounded(
                sqlx::query_as("SELECT id, email, password_hash, created_at FROM users WHERE id = $1")
                    .bind(id.0)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(Into::into))
    }

    async fn create_session(&self, s: &SessionRecord, refresh_hash: &TokenHash) -> StoreResult<()> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO sessions (id, user_id, client_id, scope, device_name, user_agent, ip, created_at, \
                 last_used_at, expires_at, absolute_expires_at, refresh_generation, rotated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(s.id.0)
            .bind(s.user_id.0)
            .bind(&s.client_id)
            .bind(&s.scope)
            .bind(&s.device_name)
            .bind(&s.user_agent)
            .bind(&s.ip)
            .bind(s.created_at)
            .bind(s.last_used_at)
            .bind(s.expires_at)
            .bind(s.absolute_expires_at)
            .bind(s.refresh_generation)
            .bind(s.rotated_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, session_id, generation, issued_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&refresh_hash.0[..])
            .bind(s.id.0)
            .bind(s.refresh_generation)
            .bind(s.rotated_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        })
        .await
    }

    async fn get_session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>> {
        let row: Option<SessionRow> = self
            .bounded(
                sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1"))
                    .bind(id.0)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(Into::into))
    }

    async fn find_by_refresh(&self, hash: &TokenHash) -> StoreResult<Option<RefreshCandidate>> {
        let row: Option<CandidateRow> = self
            .bounded(
                sqlx::query_as(&format!(
                    "SELECT {SESSION_COLUMNS}, t.generation AS token_generation \
                     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = $1"
                ))
                .bind(&hash.0[..])
                .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(|r| RefreshCandidate {
            session: r.session.into(),
            token_generation: r.token_generation,
        }))
    }

    async fn refresh(&self, hash: &TokenHash, decide: &mut Decide<'_>) -> StoreResult<Option<RefreshCandidate>> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            // The row lock on the session serialises every refresh of it, so
            // concurrent presentations of one token see each other's rotation.
            let row: Option<CandidateRow> = sqlx::query_as(&format!(
                "SELECT {SESSION_COLUMNS}, t.generation AS token_generation \
                 FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
                 WHERE t.token_hash = $1 FOR UPDATE OF s"
            ))
            .bind(&hash.0[..])
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let candidate = RefreshCandidate {
                session: row.session.into(),
                token_generation: row.token_generation,
            };
            match decide(&candidate) {
                RefreshDecision::Rotate {
                    new_hash,
                    last_used_at,
                    expires_at,
                    grace_ciphertext,
                } => {
                    let generation = candidate.session.refresh_generation + 1;
                    sqlx::query(
                        "WITH issued AS (INSERT INTO refresh_tokens (token_hash, session_id, generation, issued_at) \
                                         VALUES ($1, $2, $3, $4)) \
                         UPDATE sessions SET refresh_generation = $3, rotated_at = $4, last_used_at = $4, \
                                expires_at = $5, grace_ciphertext = $6 WHERE id = $2",
                    )
                    .bind(&new_hash.0[..])
                    .bind(candidate.session.id.0)
                    .bind(generation)
                    .bind(last_used_at)
                    .bind(expires_at)
                    .bind(grace_ciphertext)
                    .execute(&mut *tx)
                    .await?;
                }
                RefreshDecision::Revoke { reason, at } => {
                    sqlx::query(
                        "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
                    )
                    .bind(at)
                    .bind(reason)
                    .bind(candidate.session.id.0)
                    .execute(&mut *tx)
                    .await?;
                }
                RefreshDecision::NoChange => {}
            }
            tx.commit().await?;
            Ok(Some(candidate))
        })
        .await
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        owner: Option<UserId>,
        reason: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<SessionRecord>> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            let row: Option<SessionRow> = sqlx::query_as(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1 AND ($2::uuid IS NULL OR s.user_id = $2) \
                 FOR UPDATE"
            ))
            .bind(id.0)
            .bind(owner.map(|u| u.0))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            sqlx::query("UPDATE sessions SET revoked_at = $1, revoke_reason = $2 WHERE id = $3 AND revoked_at IS NULL")
                .bind(now)
                .bind(reason)
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(row.into()))
        })
        .await
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        except: Option<SessionId>,
        reason: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<SessionId>> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            let ids = Self::revoke_others_in(&mut tx, user, except, reason, now).await?;
            tx.commit().await?;
            Ok(ids)
        })
        .await
    }

    async fn change_password(
        &self,
        user: UserId,
        new_hash: &str,
        keep: SessionId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<SessionId>> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(new_hash)
                .bind(now)
                .bind(user.0)
                .execute(&mut *tx)
                .await?;
            let ids = Self::revoke_others_in(&mut tx, user, Some(keep), "password_changed", now).await?;
            tx.commit().await?;
            Ok(ids)
        })
        .await
    }

    async fn set_password_hash(&self, user: UserId, new_hash: &str, now: OffsetDateTime) -> StoreResult<()> {
        self.bounded(
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(new_hash)
                .bind(now)
                .bind(user.0)
                .execute(&self.pool),
        )
        .await
        .map(|_| ())
    }

    async fn list_live_sessions(
        &self,
        user: UserId,
        now: OffsetDateTime,
        limit: i64,
    ) -> StoreResult<Vec<SessionRecord>> {
        let rows: Vec<SessionRow> = self
            .bounded(
                sqlx::query_as(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions s \
                     WHERE s.user_id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
                     ORDER BY s.created_at DESC LIMIT $3"
                ))
                .bind(user.0)
                .bind(now)
                .bind(limit)
                .fetch_all(&self.pool),
            )
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn delete_ended_sessions(&self, cutoff: OffsetDateTime, batch: i64) -> StoreResult<u64> {
        // Two index scans (expiry, revocation) rather than one OR that may
        // scan the whole table on every batch.
        self.cleanup_bounded(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(&format!(
                "SET LOCAL statement_timeout = {}",
                CLEANUP_TIMEOUT.as_millis()
            ))
            .execute(&mut *tx)
            .await?;
            let mut deleted = 0;
            for column in ["expires_at", "revoked_at"] {
                let left = batch - deleted as i64;
                if left <= 0 {
                    break;
                }
                deleted += sqlx::query(&format!(
                    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE {column} < $1 LIMIT $2)"
                ))
                .bind(cutoff)
                .bind(left)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            Ok(deleted)
        })
        .await
    }

    async fn delete_audit_before(&self, cutoff: OffsetDateTime, batch: i64) -> StoreResult<u64> {
        self.cleanup_bounded(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(&format!(
                "SET LOCAL statement_timeout = {}",
                CLEANUP_TIMEOUT.as_millis()
            ))
            .execute(&mut *tx)
            .await?;
            let deleted = sqlx::query(
                "DELETE FROM audit_events WHERE id IN \
                 (SELECT id FROM audit_events WHERE at < $1 ORDER BY at LIMIT $2)",
            )
            .bind(cutoff)
            .bind(batch)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(deleted)
        })
        .await
    }

    async fn ip_used_since(&self, user: UserId, ip: &str, since: OffsetDateTime) -> StoreResult<bool> {
        let (known,): (bool,) = self
            .bounded(
                sqlx::query_as(
                    "SELECT EXISTS (SELECT 1 FROM sessions WHERE user_id = $1 AND ip = $2 AND last_used_at >= $3)",
                )
                .bind(user.0)
                .bind(ip)
                .bind(since)
                .fetch_one(&self.pool),
            )
            .await?;
        Ok(known)
    }

    async fn record_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        self.bounded(
            sqlx::query(
                "INSERT INTO audit_events (id, at, kind, user_id, session_id, actor, reason, ip, user_agent) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(e.id)
            .bind(e.at)
            .bind(&e.kind)
            .bind(e.user_id.map(|u| u.0))
            .bind(e.session_id.map(|s| s.0))
            .bind(&e.actor)
            .bind(&e.reason)
            .bind(&e.ip)
            .bind(&e.user_agent)
            .execute(&self.pool),
        )
        .await
        .map(|_| ())
    }

    async fn list_audit(&self, user: UserId, limit: i64) -> StoreResult<Vec<AuditEvent>> {
        let rows: Vec<AuditRow> = self
            .bounded(
                sqlx::query_as(
                    "SELECT id, at, kind, user_id, session_id, actor, reason, ip, user_agent FROM audit_events \
                     WHERE user_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
                )
                .bind(user.0)
                .bind(limit)
                .fetch_all(&self.pool),
            )
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(AuditEvent {
                    id: r.id,
                    at: r.at,
                    kind: r.kind,
                    user_id: r.user_id.map(UserId),
                    session_id: r.session_id.map(SessionId),
                    actor: r.actor,
                    reason: r.reason,
                    ip: r.ip,
                    user_agent: r.user_agent,
                })
            })
            .collect()
    }

    async fn record_pending_revocations(&self, ids: &[SessionId], now: OffsetDateTime) -> StoreResult<()> {
        let ids: Vec<Uuid> = ids.iter().map(|s| s.0).collect();
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("INSERT INTO pending_cache_revocations (session_id, created_at) SELECT unnest($1::uuid[]), $2")
                .bind(&ids)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            // Delivered to every listener when (and only if) this commits.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(ALERT_CHANNEL)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
        .await
    }

    async fn pending_revocations(&self, limit: i64) -> StoreResult<Vec<(i64, SessionId)>> {
        let rows: Vec<(i64, Uuid)> = self
            .bounded(
                sqlx::query_as("SELECT id, session_id FROM pending_cache_revocations ORDER BY id LIMIT $1")
                    .bind(limit)
                    .fetch_all(&self.pool),
            )
            .await?;
        Ok(rows.into_iter().map(|(n, id)| (n, SessionId(id))).collect())
    }

    async fn clear_pending_revocations(&self, up_to: i64) -> StoreResult<()> {
        self.bounded(
            sqlx::query("DELETE FROM pending_cache_revocations WHERE id <= $1")
                .bind(up_to)
                .execute(&self.pool),
        )
        .await
        .map(|_| ())
    }

    fn watch_cache_alerts(&self, on_alert: Arc<dyn Fn() + Send + Sync>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                let listener = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(ALERT_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(listener)
                };
                match listener.await {
                    Ok(mut listener) => {
                        // Alerts sent while we were not listening are not lost:
                        // they are rows, and this sweep reads them.
                        on_alert();
                        while let Ok(Some(_)) = listener.try_recv().await {
                            on_alert();
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cache alert listener cannot connect"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}
