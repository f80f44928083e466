//! Storage behind two narrow interfaces, chosen at startup:
//! - [`DurableStore`]: the source of truth (Postgres, or SQLite embedded);
//! - [`SessionCache`]: a rebuildable cache of session liveness (Redis, or in-process);
//! - [`counters::CounterStore`]: lockout counters (Redis, or in-process).
//!
//! Every change of a session's lifecycle is also a row of the durable
//! store's append-only event log, written in the same transaction.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{Actor, RevokeReason, SessionId, TokenHash, UserId};

pub mod counters;
pub mod guarded;
pub mod memory;
pub mod postgres;
pub mod redis;
mod rows;
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

/// Here rather than in `error`, so the ground floor has no cycle
/// (`store` → `error`, never back).
impl From<StoreError> for crate::error::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(msg) => crate::error::Error::Unavailable(msg),
            StoreError::Other(msg) => crate::error::Error::Internal(msg),
        }
    }
}

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

    pub fn facts(&self) -> SessionFacts {
        SessionFacts {
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
            absolute_expires_at: self.absolute_expires_at,
        }
    }
}

/// What never changes in a session's life besides its ids: enough to sign
/// its access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    pub client_id: String,
    pub scope: Option<String>,
    pub absolute_expires_at: OffsetDateTime,
}

/// A rotation of a session's current refresh token that holds only if the
/// session still stands as the caller believes: live at `now`, at
/// `generation` with `presented` as its current token, and with `facts`
/// (which the new access token was signed with). The database checks all
/// of it in the one statement that writes, so a belief taken from the cache
/// can be wrong without harm.
#[derive(Debug, Clone)]
pub struct ConditionalRotation {
    pub session: SessionId,
    pub user_id: UserId,
    pub facts: SessionFacts,
    pub generation: i64,
    pub presented: TokenHash,
    pub now: OffsetDateTime,
    pub new_hash: TokenHash,
    pub expires_at: OffsetDateTime,
    pub grace_ciphertext: Vec<u8>,
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

/// How a presented refresh token is looked up.
#[derive(Debug, Clone, Copy)]
pub enum RefreshLookup {
    /// A token from before migration 0007: every one is stored by hash in
    /// `refresh_tokens` (which no longer grows).
    Legacy(TokenHash),
    /// A token whose MAC verified: it names its session and generation, and
    /// only the session's current token hash is stored (in its row).
    Signed {
        session: SessionId,
        generation: i64,
        hash: TokenHash,
    },
}

impl RefreshLookup {
    /// The candidate a signed token yields against its session row as
    /// stored (`current_hash`: the hash of the session's current token, if
    /// it is a signed one). A genuine older token is recognised by its
    /// generation alone; a token claiming the current generation must match
    /// the stored hash, and none may claim a generation not yet issued.
    pub fn signed_candidate(
        generation: i64,
        hash: &TokenHash,
        session: SessionRecord,
        current_hash: Option<&[u8]>,
    ) -> Option<RefreshCandidate> {
        use subtle::ConstantTimeEq;
        let current = session.refresh_generation;
        let genuine = generation < current
            || (generation == current && current_hash.is_some_and(|h| bool::from(h.ct_eq(&hash.0[..]))));
        (genuine && generation >= 0).then_some(RefreshCandidate {
            session,
            token_generation: generation,
        })
    }
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
    Revoke(Revocation),
    NoChange,
}

/// A revocation to apply: the event's reason and actor, when, and how long
/// access tokens live (so the store can record `until`).
#[derive(Debug, Clone)]
pub struct Revocation {
    pub reason: RevokeReason,
    pub actor: Actor,
    pub at: OffsetDateTime,
    pub access_ttl: Duration,
}

/// A session that a call revoked (it was live until then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    pub session_id: SessionId,
    pub user_id: UserId,
    /// The latest `exp` of any access token the session can have outstanding.
    pub until: OffsetDateTime,
}

/// A position in the session event log. Both stores hand events out in
/// commit order: Postgres by (transaction id, sequence) below the oldest
/// running transaction, SQLite (one writer) by sequence alone (`xact` 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventCursor {
    pub xact: i64,
    pub seq: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    SessionCreated,
    SessionRevoked,
    SessionRenamed,
    SessionExpired,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionCreated => "session_created",
            EventKind::SessionRevoked => "session_revoked",
            EventKind::SessionRenamed => "session_renamed",
            EventKind::SessionExpired => "session_expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            EventKind::SessionCreated,
            EventKind::SessionRevoked,
            EventKind::SessionRenamed,
            EventKind::SessionExpired,
        ]
        .into_iter()
        .find(|k| k.as_str() == raw)
    }
}

/// One row of the session event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub cursor: EventCursor,
    pub kind: EventKind,
    pub session_id: SessionId,
    pub user_id: UserId,
    pub at: OffsetDateTime,
    pub reason: Option<RevokeReason>,
    pub actor: Option<Actor>,
    /// Revocations only: after this nobody needs to remember the session.
    pub until: Option<OffsetDateTime>,
}

/// What one read of the log returns.
#[derive(Debug, Clone, Default)]
pub struct EventBatch {
    /// Final events, in log order: the cursor moves over these.
    pub events: Vec<SessionEvent>,
    /// Revocations committed after the first transaction still running:
    /// final too, but an earlier event may still come before them.
    pub ahead: Vec<SessionEvent>,
}

/// Where a follower starts: the log position up to which every event is
/// final, and every revocation before it whose `until` has not passed.
#[derive(Debug, Clone, Default)]
pub struct EventStart {
    pub cursor: EventCursor,
    pub revocations: Vec<SessionEvent>,
}

pub type Decide<'a> = dyn FnMut(&RefreshCandidate) -> RefreshDecision + Send + 'a;

/// Which server a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
    Redis,
    InProcess,
}

#[async_trait]
pub trait DurableStore: Send + Sync {
    /// e.g. `postgres://authd@db:5432/authd` (password redacted).
    fn describe(&self) -> String;
    fn backend(&self) -> Backend;
    async fn ping(&self) -> StoreResult<()>;
    async fn migrate(&self) -> StoreResult<()>;

    /// False when the normalised email is taken.
    async fn create_user(&self, user: &UserRecord, email_normalized: &str) -> StoreResult<bool>;
    async fn find_user_by_email(&self, email_normalized: &str) -> StoreResult<Option<UserRecord>>;
    async fn get_user(&self, id: UserId) -> StoreResult<Option<UserRecord>>;

    /// Stores a new session with its first refresh token's hash (generation 0).
    async fn create_session(&self, session: &SessionRecord, refresh_hash: &TokenHash) -> StoreResult<()>;
    async fn get_session(&self, id: SessionId) -> StoreResult<Option<SessionRecord>>;
    /// The session a refresh token of any generation belongs to, and that generation.
    async fn find_by_refresh(&self, token: &RefreshLookup) -> StoreResult<Option<RefreshCandidate>>;
    /// Locks the token's session, asks `decide`, applies the decision, commits.
    /// `None` when no session has ever issued this token. A rotation
    /// replaces the session row's current token hash: nothing grows.
    async fn refresh(&self, token: &RefreshLookup, decide: &mut Decide<'_>) -> StoreResult<Option<RefreshCandidate>>;
    /// Applies `rotation` in one statement if the session stands as it
    /// expects; false, with nothing written, otherwise (the caller then
    /// takes the locked path of `refresh`).
    async fn rotate_if_current(&self, rotation: &ConditionalRotation) -> StoreResult<bool>;
    /// The server secret called `name`: `fresh` is stored if there is none
    /// yet, and whichever was stored first is returned, so that every
    /// process sharing the database holds the same one.
    async fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>>;

    /// Revokes one session (of `owner`, when given) if it is live, writing
    /// its `session_revoked` event in the same transaction. `None` when there
    /// is no such live session: nothing is written then.
    async fn revoke_session(
        &self,
        id: SessionId,
        owner: Option<UserId>,
        revocation: &Revocation,
    ) -> StoreResult<Option<Revoked>>;
    /// Revokes every live session of a user but `except`, with their events.
    async fn revoke_user_sessions(
        &self,
        user: UserId,
        except: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Vec<Revoked>>;
    /// Sets a new password hash and revokes every other session, atomically.
    async fn change_password(
        &self,
        user: UserId,
        new_hash: &str,
        keep: SessionId,
        revocation: &Revocation,
    ) -> StoreResult<Vec<Revoked>>;
    /// Replaces a password hash (same password, new parameters).
    async fn set_password_hash(&self, user: UserId, new_hash: &str, now: OffsetDateTime) -> StoreResult<()>;
    /// Live sessions, newest first, at most `limit`.
    async fn list_live_sessions(
        &self,
        user: UserId,
        now: OffsetDateTime,
        limit: i64,
    ) -> StoreResult<Vec<SessionRecord>>;
    /// Renames one of `owner`'s live sessions in one transaction; returns the
    /// session as it now stands, or `None` when `owner` has no such live session.
    async fn rename_session(
        &self,
        id: SessionId,
        owner: UserId,
        device_name: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<SessionRecord>>;
    /// Deletes up to `batch` sessions that expired or were revoked before
    /// `cutoff`; each one that expired unrevoked gets a `session_expired`
    /// event (at `now`) in the same transaction. Bounded by
    /// [`CLEANUP_TIMEOUT`], not the request bound.
    async fn delete_ended_sessions(&self, cutoff: OffsetDateTime, now: OffsetDateTime, batch: i64) -> StoreResult<u64>;

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

    /// Where a follower starting now begins (see [`EventStart`]).
    async fn event_start(&self, now: OffsetDateTime) -> StoreResult<EventStart>;
    /// Up to `limit` events after `after`, in log order, never one that an
    /// uncommitted transaction could still precede; and, apart, revocations
    /// already committed beyond that point (a long transaction elsewhere
    /// must not delay them from the revocation set).
    async fn events_after(&self, after: EventCursor, limit: i64) -> StoreResult<EventBatch>;
    /// Deletes up to `batch` events older than `cutoff` whose `until` (if
    /// any) is before `now`.
    async fn delete_old_events(&self, cutoff: OffsetDateTime, now: OffsetDateTime, batch: i64) -> StoreResult<u64>;
    /// Wakes `wake` whenever a session is revoked, by any process (and after
    /// every reconnection of the watch), until the process ends. A lost
    /// wake-up only delays: followers poll as well.
    fn watch_events(&self, wake: Arc<tokio::sync::Notify>);
}

/// A session cached as live, as of when it was cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveEntry {
    pub user_id: UserId,
    /// Its idle end as of then (unix seconds).
    pub expires_at: i64,
    /// `None` in entries written before facts were cached.
    pub facts: Option<SessionFacts>,
}

impl LiveEntry {
    pub fn of(session: &SessionRecord) -> Self {
        LiveEntry {
            user_id: session.user_id,
            expires_at: session.expires_at.unix_timestamp(),
            facts: Some(session.facts()),
        }
    }
}

/// What the cache knows of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLookup {
    Live(LiveEntry),
    /// Revoked: authoritative, revocations are permanent.
    Revoked,
    Miss,
}

#[async_trait]
pub trait SessionCache: Send + Sync {
    fn describe(&self) -> String;
    fn backend(&self) -> Backend;
    async fn ping(&self) -> StoreResult<()>;
    async fn get(&self, id: SessionId) -> StoreResult<CacheLookup>;
    /// Caches a live session for `ttl`. Never hides a revocation marker.
    async fn put_live(&self, id: SessionId, entry: &LiveEntry, ttl: Duration) -> StoreResult<()>;
    /// Records revocations for `ttl` (at least as long as the sessions could have lived).
    async fn mark_revoked(&self, ids: &[SessionId], ttl: Duration) -> StoreResult<()>;
    /// Who the cache server is: changes when it restarts (maybe from an old
    /// snapshot) or fails over (to a replica that may have missed writes).
    /// `None` when the cache cannot lose writes on its own (in-process).
    async fn identity(&self) -> StoreResult<Option<String>> {
        Ok(None)
    }
}

/// The revocations a cache must hold before it is trusted: the event log
/// follower's in-process set.
pub trait RevocationSource: Send + Sync {
    /// False until the set has been loaded from the durable store.
    fn ready(&self) -> bool;
    /// Every session in the set.
    fn revoked(&self) -> Vec<SessionId>;
}
