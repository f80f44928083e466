//! The audit trail: every security-relevant event, as a row in the durable
//! store and as a structured `tracing` event (target `authd::audit`). Never
//! a password, token or secret; emails are not recorded either (the user id
//! says who).

use super::SessionService;
use crate::domain::{Actor, SessionId, UserId};
use crate::store::AuditEvent;

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    UserRegistered,
    LoginSucceeded,
    LoginFailed,
    PasswordChanged,
    PasswordChangeFailed,
    SessionRevoked,
    SessionRenamed,
    RefreshTokenReuseDetected,
    AdminSessionsListed,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::UserRegistered => "user_registered",
            AuditKind::LoginSucceeded => "login_succeeded",
            AuditKind::LoginFailed => "login_failed",
            AuditKind::PasswordChanged => "password_changed",
            AuditKind::PasswordChangeFailed => "password_change_failed",
            AuditKind::SessionRevoked => "session_revoked",
            AuditKind::SessionRenamed => "session_renamed",
            AuditKind::RefreshTokenReuseDetected => "refresh_token_reuse_detected",
            AuditKind::AdminSessionsListed => "admin_sessions_listed",
        }
    }
}

/// Who acted, and from where.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub actor: Actor,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Meta {
    pub fn user(ip: Option<String>, user_agent: Option<String>) -> Self {
        Meta {
            actor: Actor::User,
            ip,
            user_agent,
        }
    }

    pub fn client(id: &str, ip: Option<String>, user_agent: Option<String>) -> Self {
        Meta {
            actor: Actor::Client(id.to_string()),
            ip,
            user_agent,
        }
    }
}

impl SessionService {
    /// Records an event; a store failure is logged, never fatal to the request.
    pub(crate) async fn audit(
        &self,
        kind: AuditKind,
        user: Option<UserId>,
        session: Option<SessionId>,
        reason: Option<&str>,
        meta: &Meta,
    ) {
        let event = AuditEvent {
            id: uuid::Uuid::now_v7(),
            at: self.clock.now(),
            kind: kind.as_str().to_string(),
            user_id: user,
            session_id: session,
            actor: meta.actor.to_string(),
            reason: reason.map(str::to_string),
            ip: meta.ip.clone(),
            user_agent: meta.user_agent.clone(),
        };
        tracing::info!(
            target: "authd::audit",
            kind = kind.as_str(),
            user_id = ?user.map(|u| u.to_string()),
            session_id = ?session.map(|s| s.to_string()),
            actor = %meta.actor,
            reason,
            ip = ?meta.ip,
            "audit"
        );
        if let Err(e) = self.store.record_audit(&event).await {
            tracing::error!(error = %e, kind = kind.as_str(), "could not record an audit event");
        }
    }

    /// A user's audit trail for the admin API, newest first.
    pub async fn audit_events(&self, user: UserId, limit: i64) -> crate::error::Result<Vec<AuditEvent>> {
        self.require_user(user).await?;
        Ok(self.store.list_audit(user, limit).await?)
    }
}
