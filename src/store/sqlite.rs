//! The durable store of the embedded mode: one SQLite file, one process.
//!
//! The pool has a single connection, so transactions are serialised by the
//! pool itself: that is the embedded mode's row lock.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::rows::{self, StoredTime, AUDIT_COLUMNS, EVENT_COLUMNS, SESSION_COLUMNS, USER_COLUMNS};
use super::{
    AuditEvent, Backend, ConditionalRotation, Decide, DurableStore, EventBatch, EventCursor, EventStart,
    RefreshCandidate, RefreshDecision, RefreshLookup, Revocation, Revoked, SessionRecord, StoreError, StoreResult,
    UserRecord, CLEANUP_TIMEOUT,
};
use crate::domain::{SessionId, TokenHash, UserId};

pub struct SqliteStore {
    pool: SqlitePool,
    timeout: Duration,
    description: String,
}

fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

fn from_micros(us: i64) -> StoreResult<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .map_err(|e| StoreError::Other(format!("corrupt timestamp {us}: {e}")))
}

fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable(e.to_string())
        }
        // SQLITE_BUSY / SQLITE_LOCKED: another writer holds the file.
        sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("5") | Some("6")) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Other(e.to_string()),
    }
}

/// SQLite keeps times as integer microseconds since the epoch.
impl StoredTime for i64 {
    type Error = StoreError;
    fn into_time(self) -> StoreResult<OffsetDateTime> {
        from_micros(self)
    }
}

// The shared rows, with SQLite's integer times.
type UserRow = rows::UserRow<i64>;
type SessionRow = rows::SessionRow<i64>;
type CandidateRow = rows::CandidateRow<i64>;
type SignedRow = rows::SignedRow<i64>;
type AuditRow = rows::AuditRow<i64>;
type EventRow = rows::EventRow<i64>;

/// One writer, so the event cursor needs no transaction: its first half is 0.
const EVENT_XACT: &str = "0 AS xact";

const REVOKE_ONE: &str = "id = ?4 AND (?5 IS NULL OR user_id = ?5)";
const REVOKE_USER: &str = "user_id = ?4 AND (?5 IS NULL OR id <> ?5)";

/// Revokes the live sessions that `condition` (over `?4`, `?5`) selects and
/// logs a `session_revoked` event for each, in the caller's transaction.
async fn revoke_live(
    tx: &mut Transaction<'_, Sqlite>,
    condition: &str,
    r: &Revocation,
    a: Uuid,
    b: Option<Uuid>,
) -> Result<Vec<Revoked>, sqlx::Error> {
    let ttl_micros = i64::try_from(r.access_ttl.as_micros()).unwrap_or(i64::MAX);
    let rows: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(&format!(
        "UPDATE sessions SET revoked_at = ?1, revoke_reason = ?2 \
         WHERE revoked_at IS NULL AND expires_at > ?1 AND {condition} \
         RETURNING id, user_id, MIN(rotated_at + ?3, absolute_expires_at)"
    ))
    .bind(micros(r.at))
    .bind(r.reason.as_str())
    .bind(ttl_micros)
    .bind(a)
    .bind(b)
    .fetch_all(&mut **tx)
    .await?;
    let mut revoked = Vec::with_capacity(rows.len());
    for (id, user, until) in rows {
        sqlx::query(
            "INSERT INTO session_events (kind, session_id, user_id, at, reason, actor, until) \
             VALUES ('session_revoked', ?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(id)
        .bind(user)
        .bind(micros(r.at))
        .bind(r.reason.as_str())
        .bind(r.actor.to_string())
        .bind(until)
        .execute(&mut **tx)
        .await?;
        revoked.push(Revoked {
            session_id: SessionId(id),
            user_id: UserId(user),
            until: OffsetDateTime::from_unix_timestamp_nanos(until as i128 * 1000).unwrap_or(r.at),
        });
    }
    Ok(revoked)
}

/// The candidate for a presented refresh token (inner error: corrupt row).
async fn lookup_refresh(
    conn: &mut sqlx::SqliteConnection,
    token: &RefreshLookup,
) -> Result<Option<StoreResult<RefreshCandidate>>, sqlx::Error> {
    match token {
        RefreshLookup::Legacy(hash) => {
            let row: Option<CandidateRow> = sqlx::query_as(&format!(
                "SELECT {SESSION_COLUMNS}, t.generation AS token_generation \
                 FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id WHERE t.token_hash = ?1"
            ))
            .bind(&hash.0[..])
            .fetch_optional(&mut *conn)
            .await?;
            Ok(row.map(CandidateRow::into_candidate))
        }
        RefreshLookup::Signed {
            session,
            generation,
            hash,
        } => {
            let row: Option<SignedRow> = sqlx::query_as(&format!(
                "SELECT {SESSION_COLUMNS}, s.refresh_hash FROM sessions s WHERE s.id = ?1"
            ))
            .bind(session.0)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let current_hash = row.refresh_hash;
            Ok(match row.session.into_record() {
                Ok(record) => {
                    RefreshLookup::signed_candidate(*generation, hash, record, current_hash.as_deref()).map(Ok)
                }
                Err(e) => Some(Err(e)),
            })
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `<dir>/authd.db`.
    pub async fn open(dir: &Path, timeout: Duration) -> StoreResult<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Other(format!(
                "cannot create data directory {} (AUTHD_DATA_DIR): {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("authd.db");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Other(format!("cannot open SQLite database {}: {e}", path.display())))?;
        Ok(SqliteStore {
            pool,
            timeout,
            description: format!("sqlite:{}", path.display()),
        })
    }

    /// Like `bounded`, with the cleanup bound.
    async fn cleanup_bounded<T>(&self, work: impl Future<Output = Result<T, sqlx::Error>>) -> StoreResult<T> {
        match tokio::time::timeout(CLEANUP_TIMEOUT, work).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(StoreError::Unavailable(format!(
                "sqlite cleanup batch did not finish within {CLEANUP_TIMEOUT:?}"
            ))),
        }
    }

    async fn bounded<T>(&self, work: impl Future<Output = Result<T, sqlx::Error>>) -> StoreResult<T> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result.map_err(classify),
            Err(_) => Err(StoreError::Unavailable(format!(
                "sqlite did not answer within {:?}",
                self.timeout
            ))),
        }
    }
}

#[async_trait]
impl DurableStore for SqliteStore {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn ping(&self) -> StoreResult<()> {
        self.bounded(sqlx::query("SELECT 1").execute(&self.pool))
            .await
            .map(|_| ())
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Other(format!("SQLite migration failed ({}): {e}", self.description)))
    }

    async fn create_user(&self, user: &UserRecord, email_normalized: &str) -> StoreResult<bool> {
        let result = self
            .bounded(
                sqlx::query(
                    "INSERT INTO users (id, email, email_normalized, password_hash, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (email_normalized) DO NOTHING",
                )
                .bind(user.id.0)
                .bind(&user.email)
                .bind(email_normalized)
                .bind(&user.password_hash)
                .bind(micros(user.created_at))
                .execute(&self.pool),
            )
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn find_user_by_email(&self, email_normalized: &str) -> StoreResult<Option<UserRecord>> {
        let row: Option<UserRow> = self
            .bounded(
                sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE email_normalized = ?1"))
                    .bind(email_normalized)
                    .fetch_optional(&self.pool),
            )
            .await?;
        row.map(UserRow::into_record).transpose()
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        let row: Option<UserRow> = self
            .bounded(
                sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
                    .bind(id.0)
                    .fetch_optional(&self.pool),
            )
            .await?;
        row.map(UserRow::into_record).transpose()
    }

    async fn create_session(&self, s: &SessionRecord, refresh_hash: &TokenHash) -> StoreResult<()> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO sessions (id, user_id, client_id, scope, device_name, user_agent, ip, created_at, \
                 last_used_at, expires_at, absolute_expires_at, refresh_generation, rotated_at, refresh_hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )
            .bind(s.id.0)
            .bind(s.user_id.0)
            .bind(&s.client_id)
            .bind(&s.scope)
            .bind(&s.device_name)
            .bind(&s.user_agent)
            .bind(&s.ip)
            .bind(micros(s.created_at))
            .bind(micros(s.last_used_at))
            .bind(micros(s.expires_at))
            .bind(micros(s.absolute_expires_at))
            .bind(s.refresh_generation)
            .bind(micros(s.rotated_at))
            .bind(&refresh_hash.0[..])
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO session_events (kind, session_id, user_id, at) VALUES ('session_created', ?1, ?2, ?3)",
            )
            .bind(s.id.0)
            .bind(s.user_id.0)
            .bind(micros(s.created_at))
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        })
        .await
    }

    async fn get_session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>> {
        let row: Option<SessionRow> = self
            .bounded(
                sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = ?1"))
                    .bind(id.0)
                    .fetch_optional(&self.pool),
            )
            .await?;
        row.map(SessionRow::into_record).transpose()
    }

    async fn find_by_refresh(&self, token: &RefreshLookup) -> StoreResult<Option<RefreshCandidate>> {
        self.bounded(async {
            let mut conn = self.pool.acquire().await?;
            lookup_refresh(&mut conn, token).await
        })
        .await?
        .transpose()
    }

    async fn refresh(&self, token: &RefreshLookup, decide: &mut Decide<'_>) -> StoreResult<Option<RefreshCandidate>> {
        // One bounded transaction: the single connection is the row lock, and
        // the rules decide while it is held.
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            let candidate = match lookup_refresh(&mut tx, token).await? {
                None => return Ok(None),
                Some(Ok(c)) => c,
                Some(Err(e)) => return Ok(Some(Err(e))),
            };
            let id = candidate.session.id.0;
            match decide(&candidate) {
                RefreshDecision::Rotate {
                    new_hash,
                    last_used_at,
                    expires_at,
                    grace_ciphertext,
                } => {
                    let generation = candidate.session.refresh_generation + 1;
                    // The current token's hash replaces the previous one: nothing grows.
                    sqlx::query(
                        "UPDATE sessions SET refresh_generation = ?1, rotated_at = ?2, last_used_at = ?2, \
                         expires_at = ?3, grace_ciphertext = ?4, refresh_hash = ?6 WHERE id = ?5",
                    )
                    .bind(generation)
                    .bind(micros(last_used_at))
                    .bind(micros(expires_at))
                    .bind(grace_ciphertext)
                    .bind(id)
                    .bind(&new_hash.0[..])
                    .execute(&mut *tx)
                    .await?;
                }
                RefreshDecision::Revoke(revocation) => {
                    revoke_live(&mut tx, REVOKE_ONE, &revocation, id, None).await?;
                }
                RefreshDecision::NoChange => {}
            }
            tx.commit().await?;
            Ok(Some(Ok(candidate)))
        })
        .await?
        .transpose()
    }

    async fn rotate_if_current(&self, r: &ConditionalRotation) -> StoreResult<bool> {
        // One statement on the single connection: atomic with every other write.
        let done = self
            .bounded(
                sqlx::query(
                    "UPDATE sessions SET refresh_generation = refresh_generation + 1, rotated_at = ?7, \
                            last_used_at = ?7, expires_at = ?8, grace_ciphertext = ?9, refresh_hash = ?10 \
                     WHERE id = ?1 AND refresh_generation = ?2 AND refresh_hash = ?3 AND user_id = ?4 \
                       AND client_id = ?5 AND scope IS ?6 AND absolute_expires_at = ?11 \
                       AND revoked_at IS NULL AND expires_at > ?7",
                )
                .bind(r.session.0)
                .bind(r.generation)
                .bind(&r.presented.0[..])
                .bind(r.user_id.0)
                .bind(&r.facts.client_id)
                .bind(&r.facts.scope)
                .bind(micros(r.now))
                .bind(micros(r.expires_at))
                .bind(&r.grace_ciphertext)
                .bind(&r.new_hash.0[..])
                .bind(micros(r.facts.absolute_expires_at))
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("INSERT INTO server_secrets (name, secret) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(fresh)
                .execute(&mut *tx)
                .await?;
            let (secret,): (Vec<u8>,) = sqlx::query_as("SELECT secret FROM server_secrets WHERE name = ?1")
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(secret)
        })
        .await
    }

    async fn revoke_session(
        &self,
        id: SessionId,
        owner: Option<UserId>,
        revocation: &Revocation,
    ) -> StoreResult<Option<Revoked>> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            let revoked = revoke_live(&mut tx, REVOKE_ONE, revocation, id.0, owner.map(|u| u.0)).await?;
            tx.commit().await?;
            Ok(revoked.into_iter().next())
        })
        .await
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        except: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Vec<Revoked>> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            let revoked = revoke_live(&mut tx, REVOKE_USER, revocation, user.0, except.map(|s| s.0)).await?;
            tx.commit().await?;
            Ok(revoked)
        })
        .await
    }

    async fn change_password(
        &self,
        user: UserId,
        new_hash: &str,
        keep: SessionId,
        revocation: &Revocation,
    ) -> StoreResult<Vec<Revoked>> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("UPDATE users SET password_hash = ?1, updated_at = ?2 WHERE id = ?3")
                .bind(new_hash)
                .bind(micros(revocation.at))
                .bind(user.0)
                .execute(&mut *tx)
                .await?;
            let revoked = revoke_live(&mut tx, REVOKE_USER, revocation, user.0, Some(keep.0)).await?;
            tx.commit().await?;
            Ok(revoked)
        })
        .await
    }

    async fn set_password_hash(&self, user: UserId, new_hash: &str, now: OffsetDateTime) -> StoreResult<()> {
        self.bounded(
            sqlx::query("UPDATE users SET password_hash = ?1, updated_at = ?2 WHERE id = ?3")
                .bind(new_hash)
                .bind(micros(now))
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
                     WHERE s.user_id = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?2 \
                     ORDER BY s.created_at DESC LIMIT ?3"
                ))
                .bind(user.0)
                .bind(micros(now))
                .bind(limit)
                .fetch_all(&self.pool),
            )
            .await?;
        rows.into_iter().map(SessionRow::into_record).collect()
    }

    async fn rename_session(
        &self,
        id: SessionId,
        owner: UserId,
        device_name: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<SessionRecord>> {
        let row: Option<SessionRow> = self
            .bounded(async {
                let mut tx = self.pool.begin().await?;
                let renamed = sqlx::query(
                    "UPDATE sessions SET device_name = ?1 \
                     WHERE id = ?2 AND user_id = ?3 AND revoked_at IS NULL AND expires_at > ?4",
                )
                .bind(device_name)
                .bind(id.0)
                .bind(owner.0)
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
                if renamed.rows_affected() == 0 {
                    return Ok(None);
                }
                sqlx::query(
                    "INSERT INTO session_events (kind, session_id, user_id, at) VALUES ('session_renamed', ?1, ?2, ?3)",
                )
                .bind(id.0)
                .bind(owner.0)
                .bind(micros(now))
                .execute(&mut *tx)
                .await?;
                let row: SessionRow =
                    sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = ?1"))
                        .bind(id.0)
                        .fetch_one(&mut *tx)
                        .await?;
                tx.commit().await?;
                Ok(Some(row))
            })
            .await?;
        row.map(SessionRow::into_record).transpose()
    }

    async fn delete_ended_sessions(&self, cutoff: OffsetDateTime, now: OffsetDateTime, batch: i64) -> StoreResult<u64> {
        // Two index scans (expiry, revocation) rather than one OR.
        self.cleanup_bounded(async {
            let mut tx = self.pool.begin().await?;
            let mut deleted = 0;
            for column in ["expires_at", "revoked_at"] {
                let left = batch - deleted as i64;
                if left <= 0 {
                    break;
                }
                let gone: Vec<(Uuid, Uuid, Option<i64>)> = sqlx::query_as(&format!(
                    "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE {column} < ?1 LIMIT ?2) \
                     RETURNING id, user_id, revoked_at"
                ))
                .bind(micros(cutoff))
                .bind(left)
                .fetch_all(&mut *tx)
                .await?;
                for (id, user, _) in gone.iter().filter(|(_, _, revoked_at)| revoked_at.is_none()) {
                    sqlx::query(
                        "INSERT INTO session_events (kind, session_id, user_id, at) VALUES ('session_expired', ?1, ?2, ?3)",
                    )
                    .bind(id)
                    .bind(user)
                    .bind(micros(now))
                    .execute(&mut *tx)
                    .await?;
                }
                deleted += gone.len() as u64;
            }
            tx.commit().await?;
            Ok(deleted)
        })
        .await
    }

    async fn delete_audit_before(&self, cutoff: OffsetDateTime, batch: i64) -> StoreResult<u64> {
        let result = self
            .cleanup_bounded(
                sqlx::query(
                    "DELETE FROM audit_events WHERE id IN \
                     (SELECT id FROM audit_events WHERE at < ?1 ORDER BY at LIMIT ?2)",
                )
                .bind(micros(cutoff))
                .bind(batch)
                .execute(&self.pool),
            )
            .await?;
        Ok(result.rows_affected())
    }

    async fn ip_used_since(&self, user: UserId, ip: &str, since: OffsetDateTime) -> StoreResult<bool> {
        let (known,): (bool,) = self
            .bounded(
                sqlx::query_as(
                    "SELECT EXISTS (SELECT 1 FROM sessions WHERE user_id = ?1 AND ip = ?2 AND last_used_at >= ?3)",
                )
                .bind(user.0)
                .bind(ip)
                .bind(micros(since))
                .fetch_one(&self.pool),
            )
            .await?;
        Ok(known)
    }

    async fn record_audit(&self, e: &AuditEvent) -> StoreResult<()> {
        self.bounded(
            sqlx::query(
                "INSERT INTO audit_events (id, at, kind, user_id, session_id, actor, reason, ip, user_agent) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .bind(e.id)
            .bind(micros(e.at))
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
                sqlx::query_as(&format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE user_id = ?1 ORDER BY at DESC, id DESC LIMIT ?2"
                ))
                .bind(user.0)
                .bind(limit)
                .fetch_all(&self.pool),
            )
            .await?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }

    async fn event_start(&self, now: OffsetDateTime) -> StoreResult<EventStart> {
        let (last, rows) = self
            .bounded(async {
                // The newest sequence first: whatever commits after it is read
                // by the follower's first poll, nothing falls in between.
                let (last,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM session_events")
                    .fetch_one(&self.pool)
                    .await?;
                let rows: Vec<EventRow> = sqlx::query_as(&format!(
                    "SELECT {EVENT_XACT}, {EVENT_COLUMNS} FROM session_events \
                     WHERE kind = 'session_revoked' AND until > ?1 AND seq <= ?2 ORDER BY seq"
                ))
                .bind(micros(now))
                .bind(last.unwrap_or(0))
                .fetch_all(&self.pool)
                .await?;
                Ok((last, rows))
            })
            .await?;
        Ok(EventStart {
            cursor: EventCursor {
                xact: 0,
                seq: last.unwrap_or(0),
            },
            revocations: rows.into_iter().map(EventRow::into_event).collect::<StoreResult<_>>()?,
        })
    }

    /// One writer: every committed event is final, none is ever ahead.
    async fn events_after(&self, after: EventCursor, limit: i64) -> StoreResult<EventBatch> {
        let rows: Vec<EventRow> = self
            .bounded(
                sqlx::query_as(&format!(
                    "SELECT {EVENT_XACT}, {EVENT_COLUMNS} FROM session_events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                ))
                .bind(after.seq)
                .bind(limit)
                .fetch_all(&self.pool),
            )
            .await?;
        Ok(EventBatch {
            events: rows.into_iter().map(EventRow::into_event).collect::<StoreResult<_>>()?,
            ahead: Vec::new(),
        })
    }

    async fn delete_old_events(&self, cutoff: OffsetDateTime, now: OffsetDateTime, batch: i64) -> StoreResult<u64> {
        let result = self
            .bounded(
                sqlx::query(
                    "DELETE FROM session_events WHERE seq IN (SELECT seq FROM session_events \
                     WHERE at < ?1 AND (until IS NULL OR until < ?2) LIMIT ?3)",
                )
                .bind(micros(cutoff))
                .bind(micros(now))
                .bind(batch)
                .execute(&self.pool),
            )
            .await?;
        Ok(result.rows_affected())
    }

    /// One process: the session service wakes its own follower after each
    /// revocation, so there is nobody else to hear from.
    fn watch_events(&self, _wake: Arc<tokio::sync::Notify>) {}
}
