//! The device list: a user's live sessions.

use serde::Serialize;
use time::OffsetDateTime;

use super::audit::{AuditKind, Meta};
use super::device::{DeviceInfo, DeviceType};
use super::SessionService;
use crate::domain::{SessionId, UserId};
use crate::error::Result;
use crate::store::SessionRecord;

/// The most sessions one list returns (newest first).
pub const MAX_LISTED: i64 = 500;

#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub id: SessionId,
    pub device_name: String,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// e.g. "Chrome 131", parsed from the User-Agent.
    pub browser: Option<String>,
    /// e.g. "Windows 10".
    pub os: Option<String>,
    pub device_type: Option<DeviceType>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_used_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Present on the caller's own list only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
}

impl SessionView {
    pub(crate) fn from_record(s: SessionRecord, current: Option<SessionId>) -> Self {
        let device = DeviceInfo::from_user_agent(s.user_agent.as_deref());
        SessionView {
            id: s.id,
            device_name: s.device_name,
            user_agent: s.user_agent,
            ip: s.ip,
            browser: device.browser,
            os: device.os,
            device_type: device.device_type,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            expires_at: s.expires_at,
            current: current.map(|c| c == s.id),
        }
    }
}

impl SessionService {
    /// The caller's live sessions, marking the one it is using.
    pub async fn list_sessions(&self, user: UserId, current: SessionId) -> Result<Vec<SessionView>> {
        let now = self.clock.now();
        let sessions = self.store.list_live_sessions(user, now, MAX_LISTED).await?;
        Ok(sessions
            .into_iter()
            .map(|s| SessionView::from_record(s, Some(current)))
            .collect())
    }

    /// Any user's live sessions, for the admin API. `NotFound` for an unknown user.
    /// Audited: an admin read a user's device list.
    pub async fn admin_list_sessions(&self, user: UserId, meta: &Meta) -> Result<Vec<SessionView>> {
        self.require_user(user).await?;
        let now = self.clock.now();
        let sessions = self.store.list_live_sessions(user, now, MAX_LISTED).await?;
        self.audit(AuditKind::AdminSessionsListed, Some(user), None, None, meta)
            .await;
        Ok(sessions
            .into_iter()
            .map(|s| SessionView::from_record(s, None))
            .collect())
    }
}
