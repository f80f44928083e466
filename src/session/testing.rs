//! Seeding for load tools (`authd-bench`), behind the `testing` feature.
//!
//! Users and sessions are stored through the [`DurableStore`] contract and
//! shaped by the same code registration and login use, so a migration or a
//! rule change reaches the bench through the compiler, never through a copy
//! of the schema. What it skips is the one thing a seeder cannot afford: an
//! argon2 hash per row (every seeded user gets the caller's PHC string).

use super::login::LoginRequest;
use super::SessionService;
use crate::auth::jwt::TokenIssuer;
use crate::domain::{ClientId, Email, RefreshToken, SessionId, UserId};
use crate::error::{Error, Result};
use crate::store::{LiveEntry, SessionRecord, UserRecord};
use time::OffsetDateTime;

/// A session as a login would have stored it, with its refresh token.
#[derive(Debug, Clone)]
pub struct SeededSession {
    pub record: SessionRecord,
    pub refresh_token: String,
}

impl SessionService {
    /// Stores a user whose password hash is `password_hash` (a PHC string).
    pub async fn seed_user(&self, email: &str, password_hash: &str) -> Result<UserId> {
        let email = Email::parse(email)?;
        let user = UserRecord {
            id: UserId::new(),
            email: email.as_str().to_string(),
            password_hash: password_hash.to_string(),
            created_at: self.clock.now(),
        };
        if !self.store.create_user(&user, &email.normalized()).await? {
            return Err(Error::EmailTaken);
        }
        Ok(user.id)
    }

    /// Stores a live session of `user` for `client_id`, as a password login
    /// from `user_agent` at `ip` would; the cache is not told.
    pub async fn seed_session(
        &self,
        user: UserId,
        client_id: &str,
        user_agent: Option<&str>,
        ip: Option<&str>,
    ) -> Result<SeededSession> {
        let now = self.clock.now();
        let req = LoginRequest {
            user_agent: user_agent.map(str::to_string),
            ip: ip.map(str::to_string),
            ..LoginRequest::default()
        };
        let device = super::login::device_name_from_user_agent(user_agent);
        let session = self.new_session(user, ClientId::parse(client_id)?, None, device, &req, now);
        let refresh = RefreshToken::mint(
            &self.rng,
            self.refresh_key().await?,
            session.id,
            session.refresh_generation,
        )?;
        self.store.create_session(&session, &refresh.hash()).await?;
        Ok(SeededSession {
            record: session,
            refresh_token: refresh.into_string(),
        })
    }

    /// Puts a stored live session in the cache, as a bearer check does on a miss.
    pub async fn seed_cache_live(&self, id: SessionId, user: UserId, expires_at: OffsetDateTime) -> Result<()> {
        // Without the session's facts (the bulk seeding keeps only ids):
        // a refresh of it takes the locked path once, as after a cache expiry.
        let entry = LiveEntry {
            user_id: user,
            expires_at: expires_at.unix_timestamp(),
            facts: None,
        };
        let ttl = super::live_ttl(expires_at, self.clock.now());
        self.cache.put_live(id, &entry, ttl).await?;
        Ok(())
    }

    /// A new access token (its own `jti`) for a seeded session, signed as a
    /// login or refresh signs it.
    pub fn seed_access_token(&self, session: &SessionRecord) -> Result<String> {
        Ok(self.access_token(session, self.clock.now())?.0)
    }

    /// The issuer that signs and verifies access tokens, for timing it in-process.
    pub fn token_issuer(&self) -> &TokenIssuer {
        &self.tokens
    }
}
