//! Storage behind two narrow interfaces, chosen at startup:
//! - [`DurableStore`]: the source of truth (Postgres, or SQLite embedded);
//! - [`SessionCache`]: a rebuildable cache of session liveness (Redis, or in-process);
//! - [`counters::CounterStore`]: lockout counters (Redis, or in-process).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{SessionId, TokenHash, UserId};

pub mod counters;
pub mod guarded;
pub mod memory;
pub mod postgres;
pub mod redis;
pub mod sqlite;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or timed out; the caller answers 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corrupt data.
    #[error("store error: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Bound of one cleanup batch: background work, so not held to the request
/// bound (`AUTHD_DB_TIMEOUT`), but still bounded.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: UserId,
    pub email: String,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    pub client_id: String,
    pub scope: Option<String>,
    pub device_name: String,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub created_at: OffsetDateTime,
    pub last_used_at: OffsetDateTime,
    /// When the session ends unless refreshed: min(last use + idle TTL, absolute).
    pub expires_at: OffsetDateTime,
    pub absolute_expires_at: OffsetDateTime,
    /// Generation of the current refresh token.
    pub refresh_generation: i64,
    /// When the current refresh token was issued.
    pub rotated_at: OffsetDateTime,
    /// The last refresh's answer, encrypted under a key only the previous
    /// refresh token derives (for the grace window).
    pub grace_ciphertext: Option<Vec<u8>>,
    pub revoked_at: Option<OffsetDateTime>,
    pub revoke_reason: Option<String>,
}

impl SessionRecord {
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// One entry of the audit trail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEvent {
    pub id: uuid::Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// e.g. `login_succeeded`, `login_failed`, `session_revoked`.
    pub kind: String,
    pub user_id: Option<UserId>,
    pub session_id: Option<SessionId>,
    /// `user`, `client:<id>` or `system`.
    pub actor: String,
    pub reason: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A refresh token found in the store, with its session as it stands under lock.
#[derive(Debug, Clone)]
pub struct RefreshCandidate {
    pub session: SessionRecord,
    pub token_generation: i64,
}

/// What the session rules decided for a presented refresh token; the store
/// applies it in the same transaction that read the candidate.
#[derive(Debug, Clone)]
pub enum RefreshDecision {
    Rotate {
        new_hash: TokenHash,
        last_used_at: OffsetDateTime,
        expires_at: OffsetDateTime,
        grace_ciphertext: Vec<u8>,
    },
    Revoke {
        reason: &'static str,
        at: OffsetDateTime,
    },
    NoChange,
}

pub type Decide<'a> = dyn FnMut(&RefreshCandidate) -> RefreshDecision + Send + 'a;

#[async_trait]
pub trait DurableStore: Send + Sync {
    /// e.g. `postgres://authd@db:5432/authd` (password redacted).
    fn describe(&self) -> String;
    async fn ping(&self) -> StoreResult<()>;
    async fn migrate(&self) -> StoreResult<()>;

    /// False when the normalised email is taken.
    async fn create_user(&self, user: &UserRecord, email_normalized: &str) -> StoreResult<bool>;
    async fn find_user_by_email(&self, email_normalized: &str) -> StoreResult<Option<UserRecord>>;
    async fn get_user(&self, id: UserId) -> StoreResult<Option<UserRecord>>;

    /// Stores a new session and its first refresh token (generation 0) atomically.
    async fn create_session(&self, session: &SessionRecord, refresh_hash: &TokenHash) -> StoreResult<()>;
    async fn get_session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>>;
    /// The session a refresh token of any generation belongs to, and that generation.
    async fn find_by_refresh(&self, hash: &TokenHash) -> StoreResult<Option<RefreshCandidate>>;
    /// Locks the token's session, asks `decide`, applies the decision, commits.
    /// `None` when no session has ever issued this token.
    async fn refresh(&self, hash: &TokenHash, decide: &mut Decide<'_>) -> StoreResult<Option<RefreshCandidate>>;

    /// Revokes one session (of `owner`, when given). Returns the session as it
    /// was found, or `None` when there is no such session (or not the owner's).
    async fn revoke_session(
        &self,
        id: SessionId,
        owner: Option<UserId>,
        reason: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<SessionRecord>>;
    /// Revokes every live session of a user but `except`; returns the ids revoked.
    async fn revoke_user_sessions(
        &self,
        user: UserId,
        except: Option<SessionId>,
        reason: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<SessionId>>;
    /// Sets a new password hash and revokes every other session, atomically.
    async fn change_password(
        &self,
        user: UserId,
        new_hash: &str,
        keep: SessionId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<SessionId>>;
    /// Replaces a password hash (same password, new parameters).
    async fn set_password_hash(&self, user: UserId, new_hash: &str, now: OffsetDateTime) -> StoreResult<()>;
    /// Live sessions, newest first, at most `limit`.
    async fn list_live_sessions(
        &self,
        user: UserId,
        now: OffsetDateTime,
        limit: i64,
    ) -> StoreResult<Vec<SessionRecord>>;
    /// Deletes up to `batch` sessions that expired or were revoked before
    /// `cutoff`. Bounded by [`CLEANUP_TIMEOUT`], not the request bound.
    async fn delete_ended_sessions(&self, cutoff: OffsetDateTime, batch: i64) -> StoreResult<u64>;

    /// Whether `user` has a session from `ip` used (logged in or refreshed)
    /// at or after `since`: the durable proof that the IP is the owner's.
    async fn ip_used_since(&self, user: UserId, ip: &str, since: OffsetDateTime) -> StoreResult<bool>;

    /// Deletes up to `batch` audit events older than `cutoff`, oldest first.
    /// Bounded by [`CLEANUP_TIMEOUT`], not the request bound.
    async fn delete_audit_before(&self, cutoff: OffsetDateTime, batch: i64) -> StoreResult<u64>;

    /// Appends to the audit trail.
    async fn record_audit(&self, event: &AuditEvent) -> StoreResult<()>;
    /// A user's audit events, newest first.
    async fn list_audit(&self, user: UserId, limit: i64) -> StoreResult<Vec<AuditEvent>>;

    /// Records revocations the cache did not receive, and alerts every
    /// process (see [`DurableStore::watch_cache_alerts`]) not to trust it.
    async fn record_pending_revocations(&self, ids: &[SessionId], now: OffsetDateTime) -> StoreResult<()>;
    /// The oldest pending revocations, with their sequence numbers.
    async fn pending_revocations(&self, limit: i64) -> StoreResult<Vec<(i64, SessionId)>>;
    /// Forgets pending revocations up to and including `up_to`.
    async fn clear_pending_revocations(&self, up_to: i64) -> StoreResult<()>;
    /// Calls `on_alert` whenever any process records pending revocations, and
    /// once after every (re)connection of the watch, until the process ends.
    /// A single-process store has nobody else to hear from and does nothing.
    fn watch_cache_alerts(&self, on_alert: Arc<dyn Fn() + Send + Sync>);
}

/// What the cache knows of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLookup {
    /// Live as of when it was cached, until `expires_at` (unix seconds).
    Live {
        user_id: UserId,
        expires_at: i64,
    },
    /// Revoked: authoritative, revocations are permanent.
    Revoked,
    Miss,
}

#[async_trait]
pub trait SessionCache: Send + Sync {
    fn describe(&self) -> String;
    async fn ping(&self) -> StoreResult<()>;
    async fn get(&self, id: SessionId) -> StoreResult<CacheLookup>;
    /// Caches a live session for `ttl`. Never hides a revocation marker.
    async fn put_live(&self, id: SessionId, user_id: UserId, expires_at: i64, ttl: Duration) -> StoreResult<()>;
    /// Records revocations for `ttl` (at least as long as the sessions could have lived).
    async fn mark_revoked(&self, ids: &[SessionId], ttl: Duration) -> StoreResult<()>;
}
