//! Revocation. The database commits the revocation and its event in one
//! transaction (the source of truth), then this process's set and the cache
//! are told, so no request after the answer can accept the session. A
//! session that has already ended is left alone: nothing is written.

use super::audit::{AuditKind, Meta};
use super::SessionService;
use crate::domain::{RefreshToken, RevokeReason, SessionId, UserId, MAX_TOKEN_LEN};
use crate::error::{Error, Result};

impl SessionService {
    /// Revokes one live session of `owner` (any user's when `owner` is
    /// `None`). `NotFound` when it does not exist, is someone else's, or
    /// already ended.
    pub async fn revoke_session(
        &self,
        id: SessionId,
        owner: Option<UserId>,
        reason: RevokeReason,
        meta: &Meta,
    ) -> Result<()> {
        let now = self.clock.now();
        let revocation = self.revocation(reason, meta, now);
        let Some(revoked) = self.store.revoke_session(id, owner, &revocation).await? else {
            return Err(Error::NotFound("session"));
        };
        self.spread_revocations(&[revoked]).await;
        self.audit(
            AuditKind::SessionRevoked,
            Some(revoked.user_id),
            Some(id),
            Some(reason.as_str()),
            meta,
        )
        .await;
        Ok(())
    }

    /// Revokes all of a user's live sessions but `except`; returns how many.
    pub async fn revoke_user_sessions(
        &self,
        user: UserId,
        except: Option<SessionId>,
        reason: RevokeReason,
        meta: &Meta,
    ) -> Result<usize> {
        let now = self.clock.now();
        let revocation = self.revocation(reason, meta, now);
        let revoked = self.store.revoke_user_sessions(user, except, &revocation).await?;
        self.spread_revocations(&revoked).await;
        for r in &revoked {
            self.audit(
                AuditKind::SessionRevoked,
                Some(user),
                Some(r.session_id),
                Some(reason.as_str()),
                meta,
            )
            .await;
        }
        Ok(revoked.len())
    }

    /// Admin: revokes every live session of a user. `NotFound` for an unknown user.
    pub async fn admin_revoke_all(&self, user: UserId, meta: &Meta) -> Result<usize> {
        self.require_user(user).await?;
        self.revoke_user_sessions(user, None, RevokeReason::Admin, meta).await
    }

    /// RFC 7009: revokes the session behind an access or refresh token.
    /// Unknown, malformed and expired tokens, and sessions already ended,
    /// are not an error.
    pub async fn revoke_token(&self, token: &str, meta: &Meta) -> Result<()> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(());
        }
        let now = self.clock.now();
        let sid = if let Some(refresh) = RefreshToken::parse(token) {
            match self.refresh_lookup(&refresh).await? {
                Some(lookup) => self
                    .store
                    .find_by_refresh(&lookup)
                    .await?
                    .filter(|c| c.session.is_live(now))
                    .map(|c| c.session.id),
                None => None,
            }
        } else {
            self.tokens.verify(token, now).ok().map(|claims| claims.sid)
        };
        if let Some(sid) = sid {
            match self.revoke_session(sid, None, RevokeReason::TokenRevoked, meta).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
