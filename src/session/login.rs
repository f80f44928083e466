//! Password login: verify, then create a session and its first token pair.

use time::OffsetDateTime;

use super::audit::{AuditKind, Meta};
use super::{secs, SessionService, TokenResponse};
use crate::domain::{
    parse_scope, ClientId, Email, Password, RefreshToken, SessionId, MAX_DEVICE_NAME_LEN, MAX_USER_AGENT_LEN,
};
use crate::error::{Error, Result};
use crate::store::SessionRecord;

/// The one answer for a wrong password and for an unknown user.
pub const BAD_CREDENTIALS: &str = "invalid username or password";

#[derive(Debug, Default)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
    pub client_id: Option<String>,
    pub device_name: Option<String>,
    pub scope: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// "Firefox on Linux" from a User-Agent, or a generic name.
pub fn device_name_from_user_agent(user_agent: Option<&str>) -> String {
    let parsed = user_agent.and_then(|ua| woothee::parser::Parser::new().parse(ua));
    match parsed {
        Some(r) if r.name != "UNKNOWN" && r.os != "UNKNOWN" => format!("{} on {}", r.name, r.os),
        Some(r) if r.name != "UNKNOWN" => r.name.to_string(),
        _ => "Unknown device".to_string(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl SessionService {
    #[tracing::instrument(skip_all)]
    pub async fn login(&self, mut req: LoginRequest) -> Result<TokenResponse> {
        let client_id = match req.client_id.as_deref() {
            Some(raw) => ClientId::parse(raw)?,
            None => ClientId::parse(&self.policy.default_client_id)?,
        };
        let scope = match req.scope.as_deref() {
            Some(raw) => parse_scope(raw)?,
            None => None,
        };
        let device_name = match req.device_name.as_deref().map(str::trim) {
            Some(name) if name.chars().count() > MAX_DEVICE_NAME_LEN => {
                return Err(Error::InvalidRequest(format!(
                    "device_name must be at most {MAX_DEVICE_NAME_LEN} characters"
                )))
            }
            Some(name) if !name.is_empty() => name.to_string(),
            _ => device_name_from_user_agent(req.user_agent.as_deref()),
        };
        let password = Password::presented(std::mem::take(&mut req.password))
            .ok_or_else(|| Error::InvalidRequest("password is too long".into()))?;

        // Counted before anything is checked, so concurrent guesses cannot
        // all slip under a limit.
        let mut attempt = self.begin_attempt(&req.username, req.ip.as_deref()).await?;
        let checked = self.check_credentials(&mut attempt, &req, password).await;
        let (user, password_for_rehash) = match checked {
            Ok(found) => {
                self.attempt_succeeded(attempt).await;
                found
            }
            Err(e @ Error::InvalidGrant(_)) => return Err(e),
            Err(e) => {
                self.attempt_undecided(attempt).await;
                return Err(e);
            }
        };

        let now = self.clock.now();
        if self.hasher.needs_rehash(&user.password_hash) {
            self.upgrade_hash(&user, password_for_rehash, now).await;
        }
        let session = self.new_session(user.id, client_id, scope, device_name, &req, now);
        let refresh = RefreshToken::mint(
            &self.rng,
            self.refresh_key().await?,
            session.id,
            session.refresh_generation,
        )?;
        let (access_token, expires_in) = self.access_token(&session, now)?;
        self.store.create_session(&session, &refresh.hash()).await?;
        self.remember(&session, now).await;
        metrics::counter!("authd_logins_total", "outcome" => "success").increment(1);
        let meta = Meta::user(req.ip.clone(), req.user_agent.clone());
        self.audit(AuditKind::LoginSucceeded, Some(user.id), Some(session.id), None, &meta)
            .await;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in,
            refresh_token: refresh.into_string(),
            session_id: session.id,
            session_ends_at: Some(session.expires_at),
            scope: session.scope,
        })
    }

    /// The user whose password this is, or `invalid_grant` alike for a
    /// wrong password and an unknown user.
    async fn check_credentials(
        &self,
        attempt: &mut super::throttle::Attempt,
        req: &LoginRequest,
        password: Password,
    ) -> Result<(crate::store::UserRecord, Password)> {
        // An unknown or malformed username still costs one hash verification,
        // so the answer and its timing match a wrong password.
        let user = match Email::parse(&req.username) {
            Ok(email) => self.store.find_user_by_email(&email.normalized()).await?,
            Err(_) => None,
        };
        self.attempt_account(attempt, &req.username, user.as_ref().map(|u| u.id), req.ip.as_deref())
            .await?;
        let password_for_rehash = password.clone();
        let verified = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.clone()))
            .await?;
        match user {
            Some(user) if verified => Ok((user, password_for_rehash)),
            _ => {
                metrics::counter!("authd_logins_total", "outcome" => "failure").increment(1);
                let meta = Meta::user(req.ip.clone(), req.user_agent.clone());
                // Failures for unknown users belong to nobody's trail: one
                // source may only add a bounded number of them.
                if user.is_some() || self.may_audit_unknown_user_failure(req.ip.as_deref()).await {
                    self.audit(AuditKind::LoginFailed, user.map(|u| u.id), None, None, &meta)
                        .await;
                }
                Err(Error::InvalidGrant(BAD_CREDENTIALS))
            }
        }
    }

    /// Stores a hash with the current argon2 parameters; a failure only
    /// postpones the upgrade to the next login.
    async fn upgrade_hash(&self, user: &crate::store::UserRecord, password: Password, now: OffsetDateTime) {
        let result = match self.hasher.hash(password).await {
            Ok(hash) => self
                .store
                .set_password_hash(user.id, &hash, now)
                .await
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => tracing::info!(user_id = %user.id, "password hash upgraded to the current parameters"),
            Err(e) => tracing::warn!(user_id = %user.id, error = %e, "password hash upgrade failed"),
        }
    }

    pub(super) fn new_session(
        &self,
        user_id: crate::domain::UserId,
        client_id: ClientId,
        scope: Option<String>,
        device_name: String,
        req: &LoginRequest,
        now: OffsetDateTime,
    ) -> SessionRecord {
        let absolute = now + secs(self.policy.max_ttl);
        SessionRecord {
            id: SessionId::new(),
            user_id,
            client_id: client_id.as_str().to_string(),
            scope,
            device_name,
            user_agent: req.user_agent.as_deref().map(|ua| truncate(ua, MAX_USER_AGENT_LEN)),
            ip: req.ip.clone(),
            created_at: now,
            last_used_at: now,
            expires_at: (now + secs(self.policy.idle_ttl)).min(absolute),
            absolute_expires_at: absolute,
            refresh_generation: 0,
            rotated_at: now,
            grace_ciphertext: None,
            revoked_at: None,
            revoke_reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_come_from_user_agents() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
        assert_eq!(device_name_from_user_agent(Some(firefox)), "Firefox on Linux");
        assert_eq!(device_name_from_user_agent(Some("curl/8.0")), "HTTP Library");
        assert_eq!(device_name_from_user_agent(None), "Unknown device");
        assert_eq!(truncate("héllo", 2), "h");
    }
}
