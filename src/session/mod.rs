//! The session rules. Nothing here knows HTTP or SQL: handlers call these
//! methods, and these call the [`DurableStore`] and [`SessionCache`] traits.

use std::sync::Arc;
use std::time::Duration;

use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::jwt::{AccessClaims, TokenIssuer};
use crate::auth::password::PasswordHasher;
use crate::clock::Clock;
use crate::domain::{RefreshKey, RefreshToken, RevokeReason, SessionId, UserId};
use crate::error::{Error, Result};
use crate::store::counters::CounterStore;
use crate::store::{
    CacheLookup, DurableStore, LiveEntry, RefreshLookup, Revocation, Revoked, SessionCache, SessionFacts, SessionRecord,
};

pub mod account;
pub mod audit;
pub mod cleanup;
pub mod device;
pub mod events;
pub mod grace;
pub mod introspect;
pub mod list;
pub mod login;
pub mod refresh;
pub mod revoke;
#[cfg(feature = "testing")]
pub mod testing;
pub mod throttle;

/// Lifetimes and defaults the rules apply.
#[derive(Debug, Clone)]
pub struct Policy {
    pub access_ttl: Duration,
    pub idle_ttl: Duration,
    pub max_ttl: Duration,
    pub refresh_grace: Duration,
    pub default_client_id: String,
    /// Session events are kept at least this long (and until their `until`).
    pub events_retention: Duration,
}

/// What `/oauth/token` answers, for a login or a refresh.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
    pub refresh_token: String,
    pub session_id: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// When the session ends unless refreshed again (never past its absolute
    /// end): the refresh cookie lives no longer. Not part of the answer body.
    #[serde(skip)]
    pub session_ends_at: Option<OffsetDateTime>,
}

/// A verified bearer token whose session is live.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user_id: UserId,
    pub session_id: SessionId,
    pub claims: AccessClaims,
}

/// What readiness reports.
#[derive(Debug, Clone)]
pub struct Health {
    pub store: crate::store::Backend,
    pub store_ok: bool,
    pub cache: crate::store::Backend,
    pub cache_ok: bool,
    /// Since the follower last read the event log to its end (`None`: never).
    pub follower_lag: Option<Duration>,
    pub follower_caught_up: bool,
}

pub struct SessionService {
    pub(crate) store: Arc<dyn DurableStore>,
    pub(crate) cache: Arc<dyn SessionCache>,
    pub(crate) tokens: Arc<TokenIssuer>,
    pub(crate) hasher: PasswordHasher,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) policy: Policy,
    pub(crate) rng: SystemRandom,
    pub(crate) throttle: throttle::ThrottlePolicy,
    pub(crate) counters: Arc<dyn CounterStore>,
    pub(crate) users: moka::future::Cache<UserId, account::UserView>,
    pub(crate) revocations: Arc<events::Revocations>,
    /// The refresh-token MAC key, read from the durable store on first use
    /// (so that a process starts while Postgres is down, and every process
    /// shares one key).
    pub(crate) refresh_key: tokio::sync::OnceCell<RefreshKey>,
}

/// The `server_secrets` row the refresh-token MAC key derives from.
const REFRESH_SECRET: &str = "refresh_token_mac";

/// Longest a cached "live" entry is trusted before the database is asked again.
const LIVE_CACHE_TTL: Duration = Duration::from_secs(3600);

fn secs(d: Duration) -> time::Duration {
    time::Duration::seconds(d.as_secs() as i64)
}

/// Where sessions live: the durable store, the cache in front of it, and
/// the event log follower's revocation set.
pub struct Stores {
    pub store: Arc<dyn DurableStore>,
    pub cache: Arc<dyn SessionCache>,
    pub revocations: Arc<events::Revocations>,
}

impl SessionService {
    pub fn new(
        stores: Stores,
        tokens: Arc<TokenIssuer>,
        hasher: PasswordHasher,
        clock: Arc<dyn Clock>,
        policy: Policy,
        lockouts: throttle::Lockouts,
    ) -> Self {
        let Stores {
            store,
            cache,
            revocations,
        } = stores;
        let throttle::Lockouts {
            policy: throttle,
            counters,
        } = lockouts;
        SessionService {
            store,
            cache,
            tokens,
            hasher,
            clock,
            policy,
            rng: SystemRandom::new(),
            throttle,
            counters,
            users: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            revocations,
            refresh_key: tokio::sync::OnceCell::new(),
        }
    }

    /// The key every process signs refresh tokens under (see [`RefreshKey`]).
    pub(crate) async fn refresh_key(&self) -> Result<&RefreshKey> {
        self.refresh_key
            .get_or_try_init(|| async {
                let mut fresh = [0u8; 32];
                ring::rand::SecureRandom::fill(&self.rng, &mut fresh)
                    .map_err(|_| Error::Internal("system random generator failed".into()))?;
                let secret = self.store.server_secret(REFRESH_SECRET, &fresh).await?;
                Ok(RefreshKey::from_secret(&secret))
            })
            .await
    }

    /// How the store finds a presented refresh token; `None` for a token
    /// that cannot be ours (a bad MAC): it must change nothing.
    pub(crate) async fn refresh_lookup(&self, token: &RefreshToken) -> Result<Option<RefreshLookup>> {
        if token.is_legacy() {
            return Ok(Some(RefreshLookup::Legacy(token.hash())));
        }
        let key = self.refresh_key().await?;
        Ok(token.claims(key).map(|c| RefreshLookup::Signed {
            session: c.session,
            generation: c.generation,
            hash: token.hash(),
        }))
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn DurableStore> {
        &self.store
    }

    pub fn cache(&self) -> &Arc<dyn SessionCache> {
        &self.cache
    }

    pub fn tokens(&self) -> &TokenIssuer {
        &self.tokens
    }

    /// Signs the access token of a session at `now`.
    fn access_token(&self, session: &SessionRecord, now: OffsetDateTime) -> Result<(String, i64)> {
        self.access_token_of(session.id, session.user_id, &session.facts(), now)
    }

    /// Signs the access token of session `id` of `user` at `now`.
    fn access_token_of(
        &self,
        id: SessionId,
        user: UserId,
        facts: &SessionFacts,
        now: OffsetDateTime,
    ) -> Result<(String, i64)> {
        // Never past the session's idle end as of this login or refresh, nor its absolute end.
        let exp = (now + secs(self.policy.access_ttl))
            .min(now + secs(self.policy.idle_ttl))
            .min(facts.absolute_expires_at);
        let claims = AccessClaims {
            iss: self.tokens.issuer.clone(),
            sub: user,
            aud: self.tokens.audience.clone(),
            exp: exp.unix_timestamp(),
            iat: now.unix_timestamp(),
            nbf: now.unix_timestamp(),
            jti: uuid::Uuid::now_v7().to_string(),
            sid: id,
            client_id: facts.client_id.clone(),
            scope: facts.scope.clone(),
        };
        let token = self.tokens.sign(&claims)?;
        Ok((token, (exp - now).whole_seconds().max(0)))
    }

    /// A bearer token for authd's own endpoints: signature, claims, and a live session.
    pub async fn authenticate(&self, bearer: &str) -> Result<Authenticated> {
        let now = self.clock.now();
        let claims = self.tokens.verify(bearer, now).map_err(|why| {
            tracing::debug!(?why, "bearer token refused");
            Error::InvalidToken("access token is invalid or expired")
        })?;
        if !self.session_is_live(claims.sid, claims.sub, now).await? {
            return Err(Error::InvalidToken("the session of this token has ended"));
        }
        Ok(Authenticated {
            user_id: claims.sub,
            session_id: claims.sid,
            claims,
        })
    }

    /// The follower's revocation set first (in process), then the cache,
    /// but only while the follower is caught up; the database decides on a
    /// miss, a cache failure, a lagging follower, or an entry that looks
    /// expired (its expiry may have moved on by a refresh).
    pub(crate) async fn session_is_live(&self, sid: SessionId, user: UserId, now: OffsetDateTime) -> Result<bool> {
        if self.revocations.is_revoked(sid) {
            return Ok(false);
        }
        let lookup = if self.revocations.caught_up(now) {
            self.cache.get(sid).await
        } else {
            metrics::counter!("authd_cache_skipped_follower_behind_total").increment(1);
            Ok(CacheLookup::Miss)
        };
        match lookup {
            Ok(CacheLookup::Revoked) => return Ok(false),
            Ok(CacheLookup::Live(live)) if live.expires_at > now.unix_timestamp() => {
                return Ok(live.user_id == user);
            }
            Ok(_) => metrics::counter!("authd_cache_misses_total").increment(1),
            Err(e) => {
                metrics::counter!("authd_cache_fallbacks_total").increment(1);
                tracing::debug!(error = %e, "cache read failed; asking the database");
            }
        }
        let Some(session) = self.store.get_session(sid).await? else {
            return Ok(false);
        };
        self.remember(&session, now).await;
        Ok(session.is_live(now) && session.user_id == user)
    }

    /// Brings the cache in line with a session just read from the database.
    pub(crate) async fn remember(&self, session: &SessionRecord, now: OffsetDateTime) {
        if session.revoked_at.is_some() {
            let result = self
                .cache
                .mark_revoked(&[session.id], self.marker_ttl(session, now))
                .await;
            cache_write_done(result);
        } else if session.is_live(now) {
            self.remember_live(session.id, &LiveEntry::of(session), session.expires_at, now)
                .await;
        }
    }

    /// Caches session `id` as live until `expires_at` (or for at most
    /// `LIVE_CACHE_TTL`).
    pub(crate) async fn remember_live(
        &self,
        id: SessionId,
        entry: &LiveEntry,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) {
        cache_write_done(self.cache.put_live(id, entry, live_ttl(expires_at, now)).await);
    }

    /// A revocation marker must outlive any cached "live" entry of the session.
    fn marker_ttl(&self, session: &SessionRecord, now: OffsetDateTime) -> Duration {
        (session.absolute_expires_at - now).unsigned_abs().max(LIVE_CACHE_TTL)
    }

    /// Long enough for any session that could be cached as live.
    pub fn marker_ttl_max(&self) -> Duration {
        self.policy.max_ttl.max(LIVE_CACHE_TTL)
    }

    /// What a revocation made now by `meta`'s actor records.
    fn revocation(&self, reason: RevokeReason, meta: &audit::Meta, now: OffsetDateTime) -> Revocation {
        Revocation {
            reason,
            actor: meta.actor.clone(),
            at: now,
            access_ttl: self.policy.access_ttl,
        }
    }

    /// Spreads revocations already committed (with their events) to this
    /// process's set and to the shared cache, before the request answers, so
    /// every process refuses them at once. A cache write that fails loses
    /// nothing: every follower reads the revocation from the log, and the
    /// cache is not trusted again before they are all re-written to it.
    pub(crate) async fn spread_revocations(&self, revoked: &[Revoked]) {
        if revoked.is_empty() {
            return;
        }
        self.revocations.note_local(revoked);
        let ids: Vec<SessionId> = revoked.iter().map(|r| r.session_id).collect();
        if let Err(e) = self.cache.mark_revoked(&ids, self.marker_ttl_max()).await {
            metrics::counter!("authd_cache_fallbacks_total").increment(1);
            tracing::debug!(error = %e, sessions = ids.len(), "cache missed revocations; the event log has them");
        }
    }

    /// Each store's state right now (each probe bounded by `timeout`).
    pub async fn health(&self, timeout: Duration) -> Health {
        let (store, cache) = tokio::join!(
            tokio::time::timeout(timeout, self.store.ping()),
            tokio::time::timeout(timeout, self.cache.ping()),
        );
        let lag = self.revocations.lag(self.clock.now());
        Health {
            store: self.store.backend(),
            store_ok: matches!(store, Ok(Ok(()))),
            cache: self.cache.backend(),
            cache_ok: matches!(cache, Ok(Ok(()))),
            follower_lag: (lag != Duration::MAX).then_some(lag),
            follower_caught_up: self.revocations.caught_up(self.clock.now()),
        }
    }

    /// The event log follower's view, for readiness and the revocation feed.
    pub fn revocations(&self) -> &events::Revocations {
        &self.revocations
    }
}

/// How long a session live until `expires_at` may stay cached as live.
fn live_ttl(expires_at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    (expires_at - now).unsigned_abs().min(LIVE_CACHE_TTL)
}

/// A cache write that failed costs only speed: the database decides.
fn cache_write_done(result: crate::store::StoreResult<()>) {
    if let Err(e) = result {
        metrics::counter!("authd_cache_fallbacks_total").increment(1);
        tracing::debug!(error = %e, "cache write failed");
    }
}
