//! RFC 7662 introspection for downstream services.

use serde::Serialize;

use super::SessionService;
use crate::domain::{RefreshToken, SessionId, UserId, MAX_TOKEN_LEN};
use crate::error::Result;

/// Inactive answers serialise to exactly `{"active": false}`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<SessionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Introspection {
    pub fn inactive() -> Self {
        Introspection::default()
    }
}

impl SessionService {
    /// Store failures are errors (503), never a false "inactive" or "active".
    pub async fn introspect(&self, token: &str) -> Result<Introspection> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Ok(Introspection::inactive());
        }
        let now = self.clock.now();
        if let Some(refresh) = RefreshToken::parse(token) {
            let Some(lookup) = self.refresh_lookup(&refresh).await? else {
                return Ok(Introspection::inactive());
            };
            let Some(c) = self.store.find_by_refresh(&lookup).await? else {
                return Ok(Introspection::inactive());
            };
            let s = c.session;
            if !s.is_live(now) || c.token_generation != s.refresh_generation {
                return Ok(Introspection::inactive());
            }
            return Ok(Introspection {
                active: true,
                sub: Some(s.user_id),
                sid: Some(s.id),
                exp: Some(s.expires_at.unix_timestamp()),
                iat: Some(s.rotated_at.unix_timestamp()),
                client_id: Some(s.client_id),
                scope: s.scope,
                token_type: Some("refresh_token".into()),
                iss: Some(self.tokens.issuer.clone()),
                aud: None,
                jti: None,
            });
        }
        let Ok(claims) = self.tokens.verify(token, now) else {
            return Ok(Introspection::inactive());
        };
        if !self.session_is_live(claims.sid, claims.sub, now).await? {
            return Ok(Introspection::inactive());
        }
        Ok(Introspection {
            active: true,
            sub: Some(claims.sub),
            sid: Some(claims.sid),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            client_id: Some(claims.client_id),
            scope: claims.scope,
            token_type: Some("Bearer".into()),
            iss: Some(claims.iss),
            aud: Some(claims.aud),
            jti: Some(claims.jti),
        })
    }
}
