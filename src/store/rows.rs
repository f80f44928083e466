//! What the two SQL stores share without dialect: the rows they read, the
//! columns those rows are read from, and how a row becomes a record. Each
//! store keeps only its SQL.
//!
//! The rows are generic over how a timestamp comes off the wire: Postgres
//! decodes `timestamptz` straight into an `OffsetDateTime`, SQLite keeps
//! integer microseconds, which may be corrupt.

use std::convert::Infallible;

use sqlx::FromRow;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    AuditEvent, EventCursor, EventKind, RefreshCandidate, SessionEvent, SessionRecord, StoreError, StoreResult,
    UserRecord,
};
use crate::domain::{Actor, RevokeReason, SessionId, UserId};

/// A timestamp as a store reads it.
pub(super) trait StoredTime {
    /// `Infallible` where the driver already decoded a time.
    type Error: Into<StoreError>;
    fn into_time(self) -> Result<OffsetDateTime, Self::Error>;
}

impl StoredTime for OffsetDateTime {
    type Error = Infallible;
    fn into_time(self) -> Result<OffsetDateTime, Infallible> {
        Ok(self)
    }
}

/// So a mapping that cannot fail fits where one that can is expected.
impl From<Infallible> for StoreError {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

/// A stored time where the caller's error is a `StoreError` whatever the store.
fn time<T: StoredTime>(t: T) -> StoreResult<OffsetDateTime> {
    t.into_time().map_err(Into::into)
}

pub(super) const USER_COLUMNS: &str = "id, email, password_hash, created_at";

/// Over `sessions s`, so a query may join other tables.
pub(super) const SESSION_COLUMNS: &str = "s.id, s.user_id, s.client_id, s.scope, s.device_name, s.user_agent, s.ip, \
     s.created_at, s.last_used_at, s.expires_at, s.absolute_expires_at, s.refresh_generation, \
     s.rotated_at, s.grace_ciphertext, s.revoked_at, s.revoke_reason";

pub(super) const AUDIT_COLUMNS: &str = "id, at, kind, user_id, session_id, actor, reason, ip, user_agent";

/// Everything of an event but its `xact`, which each dialect selects its own way.
pub(super) const EVENT_COLUMNS: &str = "seq, kind, session_id, user_id, at, reason, actor, until";

#[derive(FromRow)]
pub(super) struct UserRow<T> {
    id: Uuid,
    email: String,
    password_hash: String,
    created_at: T,
}

impl<T: StoredTime> UserRow<T> {
    pub(super) fn into_record(self) -> Result<UserRecord, T::Error> {
        Ok(UserRecord {
            id: UserId(self.id),
            email: self.email,
            password_hash: self.password_hash,
            created_at: self.created_at.into_time()?,
        })
    }
}

impl<T: StoredTime<Error = Infallible>> From<UserRow<T>> for UserRecord {
    fn from(r: UserRow<T>) -> Self {
        let Ok(record) = r.into_record();
        record
    }
}

#[derive(FromRow)]
pub(super) struct SessionRow<T> {
    id: Uuid,
    user_id: Uuid,
    client_id: String,
    scope: Option<String>,
    device_name: String,
    user_agent: Option<String>,
    ip: Option<String>,
    created_at: T,
    last_used_at: T,
    expires_at: T,
    absolute_expires_at: T,
    refresh_generation: i64,
    rotated_at: T,
    grace_ciphertext: Option<Vec<u8>>,
    revoked_at: Option<T>,
    revoke_reason: Option<String>,
}

impl<T: StoredTime> SessionRow<T> {
    pub(super) fn into_record(self) -> Result<SessionRecord, T::Error> {
        Ok(SessionRecord {
            id: SessionId(self.id),
            user_id: UserId(self.user_id),
            client_id: self.client_id,
            scope: self.scope,
            device_name: self.device_name,
            user_agent: self.user_agent,
            ip: self.ip,
            created_at: self.created_at.into_time()?,
            last_used_at: self.last_used_at.into_time()?,
            expires_at: self.expires_at.into_time()?,
            absolute_expires_at: self.absolute_expires_at.into_time()?,
            refresh_generation: self.refresh_generation,
            rotated_at: self.rotated_at.into_time()?,
            grace_ciphertext: self.grace_ciphertext,
            revoked_at: self.revoked_at.map(T::into_time).transpose()?,
            revoke_reason: self.revoke_reason,
        })
    }
}

impl<T: StoredTime<Error = Infallible>> From<SessionRow<T>> for SessionRecord {
    fn from(r: SessionRow<T>) -> Self {
        let Ok(record) = r.into_record();
        record
    }
}

/// A session found by a legacy refresh token, with that token's generation.
#[derive(FromRow)]
pub(super) struct CandidateRow<T> {
    #[sqlx(flatten)]
    pub(super) session: SessionRow<T>,
    pub(super) token_generation: i64,
}

impl<T: StoredTime> CandidateRow<T> {
    pub(super) fn into_candidate(self) -> StoreResult<RefreshCandidate> {
        Ok(RefreshCandidate {
            session: self.session.into_record().map_err(Into::into)?,
            token_generation: self.token_generation,
        })
    }
}

/// A session with the hash of its current signed refresh token.
#[derive(FromRow)]
pub(super) struct SignedRow<T> {
    #[sqlx(flatten)]
    pub(super) session: SessionRow<T>,
    pub(super) refresh_hash: Option<Vec<u8>>,
}

#[derive(FromRow)]
pub(super) struct AuditRow<T> {
    id: Uuid,
    at: T,
    kind: String,
    user_id: Option<Uuid>,
    session_id: Option<Uuid>,
    actor: String,
    reason: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl<T: StoredTime> AuditRow<T> {
    pub(super) fn into_event(self) -> StoreResult<AuditEvent> {
        Ok(AuditEvent {
            id: self.id,
            at: time(self.at)?,
            kind: self.kind,
            user_id: self.user_id.map(UserId),
            session_id: self.session_id.map(SessionId),
            actor: self.actor,
            reason: self.reason,
            ip: self.ip,
            user_agent: self.user_agent,
        })
    }
}

/// A row of the event log; `xact` is the writing transaction on Postgres, 0 on SQLite.
#[derive(FromRow)]
pub(super) struct EventRow<T> {
    xact: i64,
    seq: i64,
    kind: String,
    session_id: Uuid,
    user_id: Uuid,
    at: T,
    reason: Option<String>,
    actor: Option<String>,
    until: Option<T>,
}

impl<T: StoredTime> EventRow<T> {
    pub(super) fn into_event(self) -> StoreResult<SessionEvent> {
        Ok(SessionEvent {
            cursor: EventCursor {
                xact: self.xact,
                seq: self.seq,
            },
            kind: EventKind::parse(&self.kind)
                .ok_or_else(|| StoreError::Other(format!("unknown session event kind {:?}", self.kind)))?,
            session_id: SessionId(self.session_id),
            user_id: UserId(self.user_id),
            at: time(self.at)?,
            reason: self.reason.as_deref().and_then(RevokeReason::parse),
            actor: self.actor.as_deref().map(Actor::parse),
            until: self.until.map(time).transpose()?,
        })
    }
}
