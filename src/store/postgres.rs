//! The durable store on Postgres: the source of truth.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use super::rows::{self, AUDIT_COLUMNS, EVENT_COLUMNS, SESSION_COLUMNS, USER_COLUMNS};
use super::{
    AuditEvent, Backend, ConditionalRotation, Decide, DurableStore, EventBatch, EventCursor, EventStart,
    RefreshCandidate, RefreshDecision, RefreshLookup, Revocation, Revoked, SessionRecord, StoreError, StoreResult,
    UserRecord, CLEANUP_TIMEOUT,
};
use crate::config::SecretUrl;
use crate::domain::{SessionId, TokenHash, UserId};

/// The NOTIFY channel a revocation's commit wakes followers on (migration 0004).
const EVENTS_CHANNEL: &str = "authd_session_events";
/// A quiet LISTEN connection is pinged this often, so a half-open one is
/// noticed and replaced rather than silently losing wake-ups.
const LISTEN_KEEPALIVE: Duration = Duration::from_secs(10);

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

// The shared rows, with the times Postgres decodes itself.
type UserRow = rows::UserRow<OffsetDateTime>;
type SessionRow = rows::SessionRow<OffsetDateTime>;
type CandidateRow = rows::CandidateRow<OffsetDateTime>;
type SignedRow = rows::SignedRow<OffsetDateTime>;
type AuditRow = rows::AuditRow<OffsetDateTime>;
type EventRow = rows::EventRow<OffsetDateTime>;

#[derive(FromRow)]
struct HorizonRow {
    horizon: i64,
    #[sqlx(flatten)]
    event: EventRow,
}

/// The event cursor's first half: the id of the transaction that wrote the event.
const EVENT_XACT: &str = "xact_id::text::bigint AS xact";

/// Revokes the live sessions that `condition` (over `$5`, `$6`) selects and
/// logs a `session_revoked` event for each, in one statement.
fn revoke_live_sql(condition: &str) -> String {
    format!(
        "WITH revoked AS ( \
           UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
           WHERE revoked_at IS NULL AND expires_at > $1 AND {condition} \
           RETURNING id, user_id, LEAST(rotated_at + make_interval(secs => $4), absolute_expires_at) AS until), \
         logged AS ( \
           INSERT INTO session_events (kind, session_id, user_id, at, reason, actor, until) \
           SELECT 'session_revoked', id, user_id, $1, $2, $3, until FROM revoked) \
         SELECT id, user_id, until FROM revoked"
    )
}

const REVOKE_ONE: &str = "id = $5 AND ($6::uuid IS NULL OR user_id = $6)";
const REVOKE_USER: &str = "user_id = $5 AND ($6::uuid IS NULL OR id <> $6)";

async fn revoke_live<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    condition: &str,
    r: &Revocation,
    a: Uuid,
    b: Option<Uuid>,
) -> Result<Vec<Revoked>, sqlx::Error> {
    let rows: Vec<(Uuid, Uuid, OffsetDateTime)> = sqlx::query_as(&revoke_live_sql(condition))
        .bind(r.at)
        .bind(r.reason.as_str())
        .bind(r.actor.to_string())
        .bind(r.access_ttl.as_secs_f64())
        .bind(a)
        .bind(b)
        .fetch_all(executor)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, user, until)| Revoked {
            session_id: SessionId(id),
            user_id: UserId(user),
            until,
        })
        .collect())
}

/// The candidate for a presented refresh token; `lock` takes the session
/// row's lock (inside the caller's transaction).
async fn lookup_refresh(
    conn: &mut sqlx::PgConnection,
    token: &RefreshLookup,
    lock: bool,
) -> Result<Option<RefreshCandidate>, sqlx::Error> {
    let lock = if lock { " FOR UPDATE OF s" } else { "" };
    match token {
        RefreshLookup::Legacy(hash) => {
            let row: Option<CandidateRow> = sqlx::query_as(&format!(
                "SELECT {SESSION_COLUMNS}, t.generation AS token_generation \
                 FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id \
                 WHERE t.token_hash = $1{lock}"
            ))
            .bind(&hash.0[..])
            .fetch_optional(&mut *conn)
            .await?;
            Ok(row.map(|r| RefreshCandidate {
                session: r.session.into(),
                token_generation: r.token_generation,
            }))
        }
        RefreshLookup::Signed {
            session,
            generation,
            hash,
        } => {
            let row: Option<SignedRow> = sqlx::query_as(&format!(
                "SELECT {SESSION_COLUMNS}, s.refresh_hash FROM sessions s WHERE s.id = $1{lock}"
            ))
            .bind(session.0)
            .fetch_optional(&mut *conn)
            .await?;
            Ok(row.and_then(|r| {
                RefreshLookup::signed_candidate(*generation, hash, r.session.into(), r.refresh_hash.as_deref())
            }))
        }
    }
}

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

    /// The oldest transaction id still running: every event below it is final.
    async fn horizon(&self) -> Result<i64, sqlx::Error> {
        let (x,): (i64,) = sqlx::query_as("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .fetch_one(&self.pool)
            .await?;
        Ok(x)
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
}

#[async_trait]
impl DurableStore for PgStore {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
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
                sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE email_normalized = $1"))
                    .bind(email_normalized)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(Into::into))
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<UserRecord>> {
        let row: Option<UserRow> = self
            .bounded(
                sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                    .bind(id.0)
                    .fetch_optional(&self.pool),
            )
            .await?;
        Ok(row.map(Into::into))
    }

    async fn create_session(&self, s: &SessionRecord, refresh_hash: &TokenHash) -> StoreResult<()> {
        // One statement, so one round trip and atomic without a transaction.
        self.bounded(
            sqlx::query(
                "WITH created AS ( \
                   INSERT INTO sessions (id, user_id, client_id, scope, device_name, user_agent, ip, created_at, \
                   last_used_at, expires_at, absolute_expires_at, refresh_generation, rotated_at, refresh_hash) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)) \
                 INSERT INTO session_events (kind, session_id, user_id, at) VALUES ('session_created', $1, $2, $8)",
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
            .bind(&refresh_hash.0[..])
            .execute(&self.pool),
        )
        .await
        .map(|_| ())
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

    async fn find_by_refresh(&self, token: &RefreshLookup) -> StoreResult<Option<RefreshCandidate>> {
        self.bounded(async {
            let mut conn = self.pool.acquire().await?;
            lookup_refresh(&mut conn, token, false).await
        })
        .await
    }

    async fn refresh(&self, token: &RefreshLookup, decide: &mut Decide<'_>) -> StoreResult<Option<RefreshCandidate>> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            // The row lock on the session serialises every refresh of it, so
            // concurrent presentations of one token see each other's rotation.
            let Some(candidate) = lookup_refresh(&mut tx, token, true).await? else {
                return Ok(None);
            };
            match decide(&candidate) {
                RefreshDecision::Rotate {
                    new_hash,
                    last_used_at,
                    expires_at,
                    grace_ciphertext,
                } => {
                    // One UPDATE of unindexed columns only (no index covers
                    // `expires_at` since 0007), so Postgres can keep it HOT;
                    // and no row is added anywhere.
                    sqlx::query(
                        "UPDATE sessions SET refresh_generation = $3, rotated_at = $4, last_used_at = $4, \
                                expires_at = $5, grace_ciphertext = $6, refresh_hash = $1 WHERE id = $2",
                    )
                    .bind(&new_hash.0[..])
                    .bind(candidate.session.id.0)
                    .bind(candidate.session.refresh_generation + 1)
                    .bind(last_used_at)
                    .bind(expires_at)
                    .bind(grace_ciphertext)
                    .execute(&mut *tx)
                    .await?;
                }
                RefreshDecision::Revoke(revocation) => {
                    revoke_live(&mut *tx, REVOKE_ONE, &revocation, candidate.session.id.0, None).await?;
                }
                RefreshDecision::NoChange => {}
            }
            tx.commit().await?;
            Ok(Some(candidate))
        })
        .await
    }

    async fn rotate_if_current(&self, r: &ConditionalRotation) -> StoreResult<bool> {
        // One statement, one round trip: the row lock it takes is held only
        // while it runs, and a concurrent rotation of the same session makes
        // its WHERE fail when re-checked (READ COMMITTED re-evaluates it on
        // the updated row). Unindexed columns only, so it can stay HOT.
        let done = self
            .bounded(
                sqlx::query(
                    "UPDATE sessions SET refresh_generation = refresh_generation + 1, rotated_at = $7, \
                            last_used_at = $7, expires_at = $8, grace_ciphertext = $9, refresh_hash = $10 \
                     WHERE id = $1 AND refresh_generation = $2 AND refresh_hash = $3 AND user_id = $4 \
                       AND client_id = $5 AND scope IS NOT DISTINCT FROM $6 AND absolute_expires_at = $11 \
                       AND revoked_at IS NULL AND expires_at > $7",
                )
                .bind(r.session.0)
                .bind(r.generation)
                .bind(&r.presented.0[..])
                .bind(r.user_id.0)
                .bind(&r.facts.client_id)
                .bind(&r.facts.scope)
                .bind(r.now)
                .bind(r.expires_at)
                .bind(&r.grace_ciphertext)
                .bind(&r.new_hash.0[..])
                .bind(r.facts.absolute_expires_at)
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>> {
        self.bounded(async {
            let stored: Option<(Vec<u8>,)> = sqlx::query_as(
                "WITH ins AS ( \
                   INSERT INTO server_secrets (name, secret) VALUES ($1, $2) \
                   ON CONFLICT (name) DO NOTHING RETURNING secret) \
                 SELECT secret FROM ins UNION ALL SELECT secret FROM server_secrets WHERE name = $1 LIMIT 1",
            )
            .bind(name)
            .bind(fresh)
            .fetch_optional(&self.pool)
            .await?;
            if let Some((secret,)) = stored {
                return Ok(secret);
            }
            // Another process inserted it after this statement's snapshot.
            let (secret,): (Vec<u8>,) = sqlx::query_as("SELECT secret FROM server_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
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
        let revoked = self
            .bounded(revoke_live(
                &self.pool,
                REVOKE_ONE,
                revocation,
                id.0,
                owner.map(|u| u.0),
            ))
            .await?;
        Ok(revoked.into_iter().next())
    }

    async fn revoke_user_sessions(
        &self,
        user: UserId,
        except: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Vec<Revoked>> {
        self.bounded(revoke_live(
            &self.pool,
            REVOKE_USER,
            revocation,
            user.0,
            except.map(|s| s.0),
        ))
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
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(new_hash)
                .bind(revocation.at)
                .bind(user.0)
                .execute(&mut *tx)
                .await?;
            let revoked = revoke_live(&mut *tx, REVOKE_USER, revocation, user.0, Some(keep.0)).await?;
            tx.commit().await?;
            Ok(revoked)
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

    async fn rename_session(
        &self,
        id: SessionId,
        owner: UserId,
        device_name: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<SessionRecord>> {
        self.bounded(async {
            let mut tx = self.pool.begin().await?;
            let renamed = sqlx::query(
                "UPDATE sessions SET device_name = $1 \
                 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL AND expires_at > $4",
            )
            .bind(device_name)
            .bind(id.0)
            .bind(owner.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if renamed.rows_affected() == 0 {
                return Ok(None);
            }
            sqlx::query(
                "INSERT INTO session_events (kind, session_id, user_id, at) VALUES ('session_renamed', $1, $2, $3)",
            )
            .bind(id.0)
            .bind(owner.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let row: SessionRow = sqlx::query_as(&format!("SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = $1"))
                .bind(id.0)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(row.into()))
        })
        .await
    }

    async fn delete_ended_sessions(&self, cutoff: OffsetDateTime, now: OffsetDateTime, batch: i64) -> StoreResult<u64> {
        // Index scans (absolute end, revocation) rather than one OR that may
        // scan the whole table on every batch. Idle expiry comes last and
        // scans: no index may cover `expires_at`, which every refresh
        // changes (that would make every refresh's UPDATE non-HOT), and
        // cleanup runs in the background, bounded by CLEANUP_TIMEOUT.
        self.cleanup_bounded(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query(&format!(
                "SET LOCAL statement_timeout = {}",
                CLEANUP_TIMEOUT.as_millis()
            ))
            .execute(&mut *tx)
            .await?;
            let mut deleted = 0;
            for column in ["absolute_expires_at", "revoked_at", "expires_at"] {
                let left = batch - deleted as i64;
                if left <= 0 {
                    break;
                }
                let (gone,): (i64,) = sqlx::query_as(&format!(
                    "WITH gone AS ( \
                       DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE {column} < $1 LIMIT $3) \
                       RETURNING id, user_id, revoked_at), \
                     logged AS ( \
                       INSERT INTO session_events (kind, session_id, user_id, at) \
                       SELECT 'session_expired', id, user_id, $2 FROM gone WHERE revoked_at IS NULL) \
                     SELECT count(*) FROM gone"
                ))
                .bind(cutoff)
                .bind(now)
                .bind(left)
                .fetch_one(&mut *tx)
                .await?;
                deleted += gone as u64;
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
                sqlx::query_as(&format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE user_id = $1 ORDER BY at DESC, id DESC LIMIT $2"
                ))
                .bind(user.0)
                .bind(limit)
                .fetch_all(&self.pool),
            )
            .await?;
        rows.into_iter().map(AuditRow::into_event).collect()
    }

    async fn event_start(&self, now: OffsetDateTime) -> StoreResult<EventStart> {
        self.bounded(async {
            // Both reads use one horizon, so no event falls between them.
            let horizon = self.horizon().await?;
            let last: Option<(i64, i64)> = sqlx::query_as(
                "SELECT xact_id::text::bigint, seq FROM session_events \
                 WHERE xact_id < $1::text::xid8 ORDER BY xact_id DESC, seq DESC LIMIT 1",
            )
            .bind(horizon.to_string())
            .fetch_optional(&self.pool)
            .await?;
            let rows: Vec<EventRow> = sqlx::query_as(&format!(
                "SELECT {EVENT_XACT}, {EVENT_COLUMNS} FROM session_events \
                 WHERE kind = 'session_revoked' AND until > $1 AND xact_id < $2::text::xid8 ORDER BY xact_id, seq"
            ))
            .bind(now)
            .bind(horizon.to_string())
            .fetch_all(&self.pool)
            .await?;
            Ok((last, rows))
        })
        .await
        .and_then(|(last, rows)| {
            Ok(EventStart {
                cursor: last.map(|(xact, seq)| EventCursor { xact, seq }).unwrap_or_default(),
                revocations: rows.into_iter().map(EventRow::into_event).collect::<StoreResult<_>>()?,
            })
        })
    }

    async fn events_after(&self, after: EventCursor, limit: i64) -> StoreResult<EventBatch> {
        // Rows below the horizon sort before every row at or above it, so
        // the final ones are a prefix of the answer.
        let rows: Vec<(i64, EventRow)> = self
            .bounded(
                sqlx::query_as(&format!(
                    "WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) \
                     SELECT h.xmin::text::bigint AS horizon, {EVENT_XACT}, {EVENT_COLUMNS} FROM session_events, h \
                     WHERE (xact_id, seq) > ($1::text::xid8, $2) \
                       AND (xact_id < h.xmin OR kind = 'session_revoked') \
                     ORDER BY xact_id, seq LIMIT $3"
                ))
                .bind(after.xact.to_string())
                .bind(after.seq)
                .bind(limit)
                .fetch_all(&self.pool),
            )
            .await?
            .into_iter()
            .map(|row: HorizonRow| (row.horizon, row.event))
            .collect();
        let mut batch = EventBatch::default();
        for (horizon, row) in rows {
            let event = row.into_event()?;
            if event.cursor.xact < horizon {
                batch.events.push(event);
            } else {
                batch.ahead.push(event);
            }
        }
        Ok(batch)
    }

    async fn delete_old_events(&self, cutoff: OffsetDateTime, now: OffsetDateTime, batch: i64) -> StoreResult<u64> {
        let result = self
            .bounded(
                sqlx::query(
                    "DELETE FROM session_events WHERE seq IN (SELECT seq FROM session_events \
                     WHERE at < $1 AND (until IS NULL OR until < $2) LIMIT $3)",
                )
                .bind(cutoff)
                .bind(now)
                .bind(batch)
                .execute(&self.pool),
            )
            .await?;
        Ok(result.rows_affected())
    }

    fn watch_events(&self, wake: Arc<tokio::sync::Notify>) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            // Ends with the follower: once nobody else holds `wake`, nobody listens.
            while !pool.is_closed() && Arc::strong_count(&wake) > 1 {
                let listener = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(EVENTS_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(listener)
                };
                match listener.await {
                    Ok(mut listener) => {
                        // Whatever was committed while nobody listened is in
                        // the log: one read catches up.
                        wake.notify_one();
                        listen_until_lost(&mut listener, &wake).await;
                        tracing::debug!("event listener lost its connection; reconnecting");
                    }
                    Err(e) => tracing::debug!(error = %e, "event listener cannot connect"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
}

/// Wakes `wake` on every notification until the connection fails or stops
/// answering its keepalive ping.
async fn listen_until_lost(listener: &mut PgListener, wake: &Arc<tokio::sync::Notify>) {
    while Arc::strong_count(wake) > 1 {
        match tokio::time::timeout(LISTEN_KEEPALIVE, listener.try_recv()).await {
            Ok(Ok(Some(_))) => wake.notify_one(),
            Ok(Ok(None)) | Ok(Err(_)) => return,
            Err(_) => {
                let ping =
                    tokio::time::timeout(LISTEN_KEEPALIVE, sqlx::query("SELECT 1").execute(&mut *listener)).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}
