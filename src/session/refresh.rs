//! Refresh-token rotation.
//!
//! - the current token: a new pair, same session;
//! - the previous token within the grace window: the same pair the first
//!   presenter got (two tabs refreshing at once), no second branch;
//! - any older token, or the previous one after the window: `invalid_grant`
//!   and the whole session is revoked (`refresh_token_reuse`).
//!
//! The database decides races; the cache never arbitrates. The common case
//! (the current token of a session the cache knows) is one conditional
//! statement: the new pair is signed from the cache's facts of the session
//! first, and the database applies the rotation only if the session still
//! stands as the cache said (live, at that generation and token, with those
//! facts). Everything else, and any doubt, takes the locked path: the
//! session row locked, the rules applied to it, the decision written.
//!
//! A token names its session and generation under the server's MAC, so only
//! the current token's hash is stored: an older genuine token is known by its
//! generation, and a made-up one (bad MAC) reaches no session at all.

use time::OffsetDateTime;

use super::audit::{AuditKind, Meta};
use super::{grace, secs, SessionService, TokenResponse};
use crate::domain::{RefreshKey, RefreshToken, RevokeReason, SessionId, TokenHash, UserId};
use crate::error::{Error, Result};
use crate::store::{
    CacheLookup, ConditionalRotation, LiveEntry, RefreshCandidate, RefreshDecision, RefreshLookup, Revoked,
    SessionFacts,
};

pub const INVALID_REFRESH: &str = "refresh token is invalid, expired or revoked";

enum Outcome {
    Issued(TokenResponse),
    Replayed(TokenResponse),
    Refused,
    ReuseDetected,
    Failed(Error),
}

impl SessionService {
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, presented: &str, meta: &Meta) -> Result<TokenResponse> {
        let Some(token) = RefreshToken::parse(presented) else {
            return Err(Error::InvalidGrant(INVALID_REFRESH));
        };
        let Some(lookup) = self.refresh_lookup(&token).await? else {
            metrics::counter!("authd_refreshes_total", "outcome" => "refused").increment(1);
            return Err(Error::InvalidGrant(INVALID_REFRESH));
        };
        let key = self.refresh_key().await?;
        let now = self.clock.now();
        if let RefreshLookup::Signed {
            session,
            generation,
            hash,
        } = lookup
        {
            if let Some(response) = self
                .rotate_unlocked(session, generation, hash, &token, key, now)
                .await?
            {
                metrics::counter!("authd_refreshes_total", "outcome" => "rotated").increment(1);
                return Ok(response);
            }
        }
        let mut outcome = Outcome::Refused;
        let candidate = self
            .store
            .refresh(&lookup, &mut |candidate| {
                let (decision, result) = self.decide(candidate, &token, key, meta, now);
                outcome = result;
                decision
            })
            .await?;
        let Some(candidate) = candidate else {
            return Err(Error::InvalidGrant(INVALID_REFRESH));
        };
        let session = candidate.session;
        match outcome {
            Outcome::Issued(response) => {
                metrics::counter!("authd_refreshes_total", "outcome" => "rotated").increment(1);
                let mut updated = session;
                updated.expires_at = (now + secs(self.policy.idle_ttl)).min(updated.absolute_expires_at);
                self.remember(&updated, now).await;
                Ok(response)
            }
            Outcome::Replayed(response) => {
                metrics::counter!("authd_refreshes_total", "outcome" => "grace_replay").increment(1);
                Ok(response)
            }
            Outcome::ReuseDetected => {
                metrics::counter!("authd_refreshes_total", "outcome" => "reuse_detected").increment(1);
                // The same bound the store recorded as the event's `until`.
                let until = (session.rotated_at + secs(self.policy.access_ttl)).min(session.absolute_expires_at);
                self.spread_revocations(&[Revoked {
                    session_id: session.id,
                    user_id: session.user_id,
                    until,
                }])
                .await;
                self.audit(
                    AuditKind::RefreshTokenReuseDetected,
                    Some(session.user_id),
                    Some(session.id),
                    Some(RevokeReason::RefreshTokenReuse.as_str()),
                    meta,
                )
                .await;
                Err(Error::InvalidGrant(INVALID_REFRESH))
            }
            Outcome::Refused => {
                metrics::counter!("authd_refreshes_total", "outcome" => "refused").increment(1);
                Err(Error::InvalidGrant(INVALID_REFRESH))
            }
            Outcome::Failed(e) => Err(e),
        }
    }

    /// The rotation rules, applied to the session as it stands under lock.
    fn decide(
        &self,
        c: &RefreshCandidate,
        presented: &RefreshToken,
        key: &RefreshKey,
        meta: &Meta,
        now: OffsetDateTime,
    ) -> (RefreshDecision, Outcome) {
        let s = &c.session;
        if !s.is_live(now) {
            return (RefreshDecision::NoChange, Outcome::Refused);
        }
        if c.token_generation == s.refresh_generation {
            return match self.rotate(c, presented, key, now) {
                Ok((decision, response)) => (decision, Outcome::Issued(response)),
                Err(e) => (RefreshDecision::NoChange, Outcome::Failed(e)),
            };
        }
        let in_grace = now < s.rotated_at + secs(self.policy.refresh_grace);
        if c.token_generation == s.refresh_generation - 1 && in_grace {
            let replay = s
                .grace_ciphertext
                .as_deref()
                .and_then(|sealed| grace::open(presented, s.id, s.refresh_generation, sealed))
                .and_then(|plain| serde_json::from_slice::<TokenResponse>(&plain).ok())
                .map(|response| TokenResponse {
                    session_ends_at: Some(s.expires_at),
                    ..response
                });
            if let Some(response) = replay {
                return (RefreshDecision::NoChange, Outcome::Replayed(response));
            }
        }
        (
            RefreshDecision::Revoke(self.revocation(RevokeReason::RefreshTokenReuse, meta, now)),
            Outcome::ReuseDetected,
        )
    }

    /// The one-statement rotation, when the cache knows the session's
    /// facts. `None` sends the refresh down the locked path: no facts cached,
    /// or the session is not as they say (moved on by another refresh,
    /// revoked, expired, or a cache entry that lies).
    async fn rotate_unlocked(
        &self,
        session: SessionId,
        generation: i64,
        presented_hash: TokenHash,
        presented: &RefreshToken,
        key: &RefreshKey,
        now: OffsetDateTime,
    ) -> Result<Option<TokenResponse>> {
        let Ok(CacheLookup::Live(LiveEntry {
            user_id,
            facts: Some(facts),
            ..
        })) = self.cache.get(session).await
        else {
            return Ok(None);
        };
        let (rotation, response) = self.rotation(session, user_id, &facts, generation, presented, key, now)?;
        let conditional = ConditionalRotation {
            session,
            user_id,
            facts,
            generation,
            presented: presented_hash,
            now,
            new_hash: rotation.new_hash,
            expires_at: rotation.expires_at,
            grace_ciphertext: rotation.grace_ciphertext,
        };
        if !self.store.rotate_if_current(&conditional).await? {
            metrics::counter!("authd_refresh_unlocked_misses_total").increment(1);
            return Ok(None);
        }
        let entry = LiveEntry {
            user_id,
            expires_at: conditional.expires_at.unix_timestamp(),
            facts: Some(conditional.facts),
        };
        self.remember_live(session, &entry, conditional.expires_at, now).await;
        Ok(Some(response))
    }

    fn rotate(
        &self,
        c: &RefreshCandidate,
        presented: &RefreshToken,
        key: &RefreshKey,
        now: OffsetDateTime,
    ) -> Result<(RefreshDecision, TokenResponse)> {
        let s = &c.session;
        let (rotation, response) =
            self.rotation(s.id, s.user_id, &s.facts(), s.refresh_generation, presented, key, now)?;
        let decision = RefreshDecision::Rotate {
            new_hash: rotation.new_hash,
            last_used_at: now,
            expires_at: rotation.expires_at,
            grace_ciphertext: rotation.grace_ciphertext,
        };
        Ok((decision, response))
    }

    /// The next pair of session `id` (now at `generation`, presented by
    /// `presented`), and what the session row must hold once it is issued.
    #[allow(clippy::too_many_arguments)]
    fn rotation(
        &self,
        id: SessionId,
        user: UserId,
        facts: &SessionFacts,
        generation: i64,
        presented: &RefreshToken,
        key: &RefreshKey,
        now: OffsetDateTime,
    ) -> Result<(Rotation, TokenResponse)> {
        let next = RefreshToken::mint(&self.rng, key, id, generation + 1)?;
        let (access_token, expires_in) = self.access_token_of(id, user, facts, now)?;
        let expires_at = (now + secs(self.policy.idle_ttl)).min(facts.absolute_expires_at);
        let response = TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in,
            refresh_token: next.expose().to_string(),
            session_id: id,
            scope: facts.scope.clone(),
            session_ends_at: Some(expires_at),
        };
        let plain = serde_json::to_vec(&response).map_err(|e| Error::Internal(format!("encode: {e}")))?;
        let grace_ciphertext = grace::seal(&self.rng, presented, id, generation + 1, &plain)?;
        let rotation = Rotation {
            new_hash: next.hash(),
            expires_at,
            grace_ciphertext,
        };
        Ok((rotation, response))
    }
}

/// What a rotation writes into the session row.
struct Rotation {
    new_hash: TokenHash,
    expires_at: OffsetDateTime,
    grace_ciphertext: Vec<u8>,
}
