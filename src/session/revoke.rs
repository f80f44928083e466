//! Revocation. The database commits first (the source of truth), then the
//! cache is told, so no request after the answer can accept the session.

use super::audit::Meta;
use super::SessionService;
use crate::domain::{RefreshToken, SessionId, UserId, MAX_TOKEN_LEN};
use crate::error::{Error, Result};

impl SessionService {
    /// Revokes one session of `owner` (any user's when `owner` is `None`).
    /// `NotFound` when it does not exist, is someone else's, or already ended.
    pub async fn revoke_session(&self, id: SessionId, owner: Option<UserId>, reason: &str, meta: &Meta) -> Result<()> {
        let now = self.clock.now();
        let found = self.store.revoke_session(id, owner, reason, now).await?;
        match found {
            Some(session) => {
                self.forget(&[id]).await;
                if session.is_live(now) {
                    self.audit("session_revoked", Some(session.user_id), Some(id), Some(reason), meta)
                        .await;
                    Ok(())
                } else {
                    Err(Error::NotFound("session"))
                }
            }
            None => Err(Error::NotFound("session")),
        }
    }

    /// Revokes all of a user's live sessions but `except`; returns how many.
    pub async fn revoke_user_sessions(
        &self,
        user: UserId,
        except: Option<SessionId>,
        reason: &str,
        meta: &Meta,
    ) -> Result<usize> {
        let now = self.clock.now();
        let ids = self.store.revoke_user_sessions(user, except, reason, now).await?;
        self.forget(&ids).await;
        for id in &ids {
            self.audit("session_revoked", Some(user), Some(*id), Some(reason), meta)
                .await;
        }
        Ok(ids.len())
    }

    /// RFC 7009: revokes the session behind an access or refresh token.
    /// Unknown, malformed and expired tokens are not an error.
    pub async fn revoke_token(&self, token: &str, meta: &Meta) -> Result<()> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(());
        }
        let now = self.clock.now();
        let sid = if let Some(refresh) = RefreshToken::parse(token) {
            self.store.find_by_refresh(&refresh.hash()).await?.map(|c| c.session.id)
        } else {
            self.tokens.verify(token, now).ok().map(|claims| claims.sid)
        };
        if let Some(sid) = sid {
            match self.revoke_session(sid, None, "token_revoked", meta).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
