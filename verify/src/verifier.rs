use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use time::OffsetDateTime;
use tokio::task::AbortHandle;

use crate::cache::TokenCache;
use crate::error::{BuildError, Redacted, VerifyError};
use crate::jwks::KeyStore;
use crate::metrics as m;
use crate::revocation::{Feed, RevocationSet};
use crate::Claims;

/// Longest token accepted (authd's own bound).
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Options of a [`Verifier`]; every method documents its default.
#[must_use]
pub struct VerifierBuilder {
    issuer: String,
    audiences: Vec<String>,
    client: Option<(String, String)>,
    skew: Duration,
    max_staleness: Duration,
    introspection_fallback: bool,
    revocation_feed: bool,
    jwks_refresh: Duration,
    min_refetch: Duration,
    http_timeout: Duration,
    cache_entries: u64,
    http: Option<reqwest::Client>,
    via: Option<String>,
}

impl std::fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("client_id", &self.client.as_ref().map(|c| c.0.as_str()))
            .field(
                "client_secret",
                &Redacted(self.client.as_ref().map_or("", |c| c.1.as_str())),
            )
            .field("skew", &self.skew)
            .field("max_staleness", &self.max_staleness)
            .field("introspection_fallback", &self.introspection_fallback)
            .field("revocation_feed", &self.revocation_feed)
            .finish_non_exhaustive()
    }
}

impl VerifierBuilder {
    fn new(issuer: impl Into<String>) -> Self {
        VerifierBuilder {
            issuer: issuer.into().trim_end_matches('/').to_string(),
            audiences: Vec::new(),
            client: None,
            skew: Duration::from_secs(2),
            max_staleness: Duration::from_secs(10),
            introspection_fallback: false,
            revocation_feed: true,
            jwks_refresh: Duration::from_secs(60),
            min_refetch: Duration::from_secs(1),
            http_timeout: Duration::from_secs(5),
            cache_entries: 100_000,
            http: None,
            via: None,
        }
    }

    /// Send every request to this base URL instead of the issuer's (one
    /// authd process, a sidecar, an internal address); URLs from the
    /// metadata that start with the issuer are re-based onto it. Tokens
    /// must still carry the configured issuer. Default: the issuer.
    pub fn via(mut self, base_url: impl Into<String>) -> Self {
        self.via = Some(base_url.into().trim_end_matches('/').to_string());
        self
    }

    /// An accepted `aud` (call again for more). Required: authd's
    /// `AUTHD_AUDIENCE`.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// The service client (from authd's `AUTHD_CLIENTS`) that reads the
    /// revocation feed and, if enabled, introspection. Required unless
    /// [`VerifierBuilder::without_revocation_feed`].
    pub fn client_credentials(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.client = Some((id.into(), secret.into()));
        self
    }

    /// Clock skew allowed on `exp`, `nbf` and `iat`. Default: 2 s.
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.skew = skew;
        self
    }

    /// How long the revocation feed may be silent (no event, no heartbeat)
    /// before `verify` stops trusting its set. Default: 10 s.
    pub fn max_staleness(mut self, max: Duration) -> Self {
        self.max_staleness = max;
        self
    }

    /// While the feed is stale, ask authd's introspection endpoint (one
    /// round trip per verification) instead of failing with
    /// [`VerifyError::RevocationFeedStale`]. Default: off (fail closed).
    pub fn introspection_fallback(mut self, enabled: bool) -> Self {
        self.introspection_fallback = enabled;
        self
    }

    /// Verify signatures and claims only: revoked sessions stay accepted
    /// until their tokens expire. Default: the feed is followed.
    pub fn without_revocation_feed(mut self) -> Self {
        self.revocation_feed = false;
        self
    }

    /// How often the JWKS is fetched in the background; keep it at most
    /// authd's JWKS `max-age` (5 min) so publish-before-sign holds.
    /// Default: 60 s.
    pub fn jwks_refresh_interval(mut self, every: Duration) -> Self {
        self.jwks_refresh = every;
        self
    }

    /// Shortest gap between two JWKS fetches caused by unknown `kid`s.
    /// Default: 1 s.
    pub fn unknown_kid_refetch_interval(mut self, gap: Duration) -> Self {
        self.min_refetch = gap;
        self
    }

    /// Bound on each HTTP call to authd (discovery, JWKS, snapshot,
    /// introspection, stream connect). Default: 5 s.
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    /// Verified tokens remembered (each costs one signature check once).
    /// Default: 100 000.
    pub fn cache_capacity(mut self, entries: u64) -> Self {
        self.cache_entries = entries;
        self
    }

    /// Use this HTTP client (for TLS roots, proxies). Default: a new one.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Discovers the JWKS from the RFC 8414 metadata, loads it, loads the
    /// revocation snapshot (waiting at most the HTTP timeout; until it
    /// loads, `verify` fails closed), and starts the background tasks. They
    /// stop when the last clone of the [`Verifier`] is dropped.
    pub async fn build(self) -> Result<Verifier, BuildError> {
        if self.audiences.is_empty() {
            return Err(BuildError::Config("an audience is required".into()));
        }
        if self.revocation_feed && self.client.is_none() {
            return Err(BuildError::Config(
                "client_credentials are required to follow the revocation feed (or call without_revocation_feed)"
                    .into(),
            ));
        }
        if self.introspection_fallback && self.client.is_none() {
            return Err(BuildError::Config("introspection needs client_credentials".into()));
        }
        if self.jwks_refresh.is_zero() {
            return Err(BuildError::Config("the JWKS refresh interval must be positive".into()));
        }
        let http = match self.http {
            Some(client) => client,
            None => reqwest::Client::builder()
                .connect_timeout(self.http_timeout)
                .build()
                .map_err(|e| BuildError::Config(e.to_string()))?,
        };
        let base = self.via.clone().unwrap_or_else(|| self.issuer.clone());
        let rebase = |uri: String| match uri.strip_prefix(&self.issuer) {
            Some(rest) => format!("{base}{rest}"),
            None => uri,
        };
        let metadata_uri = format!("{base}/.well-known/oauth-authorization-server");
        let metadata: serde_json::Value = http
            .get(&metadata_uri)
            .timeout(self.http_timeout)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| BuildError::Discovery(format!("GET {metadata_uri}: {e}")))?
            .json()
            .await
            .map_err(|e| BuildError::Discovery(format!("GET {metadata_uri}: {e}")))?;
        let found = metadata["issuer"].as_str().unwrap_or_default();
        if found.trim_end_matches('/') != self.issuer {
            return Err(BuildError::IssuerMismatch {
                expected: self.issuer,
                found: found.to_string(),
            });
        }
        let field = |name: &str| {
            metadata[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| BuildError::Discovery(format!("metadata has no {name}")))
        };
        let jwks_uri = rebase(field("jwks_uri")?);
        let introspection_uri = if self.introspection_fallback {
            Some(rebase(field("introspection_endpoint")?))
        } else {
            None
        };
        let keys = Arc::new(KeyStore::new(
            jwks_uri,
            http.clone(),
            self.http_timeout,
            self.min_refetch,
        ));
        keys.refresh().await.map_err(BuildError::Discovery)?;

        let revocations = Arc::new(RevocationSet::new(self.skew));
        let mut tasks = Vec::new();
        {
            let keys = keys.clone();
            let every = self.jwks_refresh;
            tasks.push(
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        if let Err(e) = keys.refresh().await {
                            tracing::warn!(error = %e, "JWKS refresh failed; keeping the keys we have");
                        }
                    }
                })
                .abort_handle(),
            );
        }
        if let (true, Some((id, secret))) = (self.revocation_feed, &self.client) {
            let feed = Feed {
                set: revocations.clone(),
                http: http.clone(),
                snapshot_uri: format!("{base}/v1/revocations"),
                stream_uri: format!("{base}/v1/revocations/stream"),
                client_id: id.clone(),
                client_secret: secret.clone(),
                timeout: self.http_timeout,
            };
            let cursor = match feed.load_snapshot().await {
                Ok(cursor) => Some(cursor),
                Err(e) => {
                    tracing::warn!(error = %e, "revocation snapshot not loaded yet; verify fails closed until it is");
                    None
                }
            };
            tasks.push(tokio::spawn(feed.run(cursor)).abort_handle());
            tasks.push(tokio::spawn(crate::revocation::maintain(revocations.clone())).abort_handle());
        }
        let verified = TokenCache::new(self.cache_entries);
        Ok(Verifier {
            inner: Arc::new(Inner {
                issuer: self.issuer,
                audiences: self.audiences,
                skew: self.skew.as_secs() as i64,
                max_staleness: self.max_staleness,
                keys,
                revocations: self.revocation_feed.then_some(revocations),
                introspection: introspection_uri.zip(self.client),
                http,
                http_timeout: self.http_timeout,
                verified,
                tasks,
            }),
        })
    }
}

struct Inner {
    issuer: String,
    audiences: Vec<String>,
    skew: i64,
    max_staleness: Duration,
    keys: Arc<KeyStore>,
    revocations: Option<Arc<RevocationSet>>,
    /// Introspection endpoint and client credentials, when the fallback is on.
    introspection: Option<(String, (String, String))>,
    http: reqwest::Client,
    http_timeout: Duration,
    /// Exact token text → its verified claims. Keyed by the whole token
    /// (equality, not a digest): a hit proves these bytes were verified.
    verified: TokenCache,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Verifies authd access tokens. Cheap to clone; clones share the JWKS,
/// the token cache and the revocation set.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.issuer)
            .field("audiences", &self.inner.audiences)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Starts configuring a verifier for tokens of `issuer` (authd's
    /// `AUTHD_ISSUER`, e.g. `https://auth.example.org`).
    pub fn builder(issuer: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder::new(issuer)
    }

    /// Checks an access token: signature under the published key its `kid`
    /// names (that key's algorithm only), `typ: at+jwt`, `iss`, `aud`,
    /// `exp`/`nbf`/`iat` with skew, the required claims, and that its
    /// session is not revoked. `jku`, `x5u`, `jwk` and `x5c` headers are
    /// never used. A token verified before costs no signature check; its
    /// time and session checks run on every call.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let inner = &*self.inner;
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed);
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = match inner.verified.get(token) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.verify_signature_and_claims(token).await?);
                inner.verified.insert(token, claims.clone(), now, inner.skew);
                claims
            }
        };
        self.check_times(&claims, now)?;
        self.check_session(token, &claims, now).await?;
        Ok((*claims).clone())
    }

    fn check_times(&self, claims: &Claims, now: i64) -> Result<(), VerifyError> {
        let skew = self.inner.skew;
        if claims.exp + skew <= now {
            return Err(VerifyError::Expired);
        }
        if claims.nbf - skew > now || claims.iat - skew > now {
            return Err(VerifyError::NotYetValid);
        }
        Ok(())
    }

    async fn check_session(&self, token: &str, claims: &Claims, now: i64) -> Result<(), VerifyError> {
        let Some(set) = &self.inner.revocations else {
            return Ok(());
        };
        let fresh = set.silence().is_some_and(|s| s <= self.inner.max_staleness);
        if fresh {
            return if set.is_revoked(&claims.sid, now) {
                Err(VerifyError::SessionRevoked)
            } else {
                Ok(())
            };
        }
        match &self.inner.introspection {
            Some(endpoint) => self.introspect(endpoint, token).await,
            None => Err(VerifyError::RevocationFeedStale),
        }
    }

    async fn introspect(
        &self,
        (uri, (id, secret)): &(String, (String, String)),
        token: &str,
    ) -> Result<(), VerifyError> {
        let outcome = async {
            let response = self
                .inner
                .http
                .post(uri)
                .basic_auth(id, Some(secret))
                .form(&[("token", token), ("token_type_hint", "access_token")])
                .timeout(self.inner.http_timeout)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| e.to_string())?;
            let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
            Ok::<bool, String>(body["active"] == true)
        }
        .await;
        match outcome {
            Ok(true) => {
                metrics::counter!(m::INTROSPECTIONS, "outcome" => "active").increment(1);
                Ok(())
            }
            Ok(false) => {
                metrics::counter!(m::INTROSPECTIONS, "outcome" => "inactive").increment(1);
                Err(VerifyError::SessionRevoked)
            }
            Err(e) => {
                metrics::counter!(m::INTROSPECTIONS, "outcome" => "error").increment(1);
                tracing::warn!(error = %e, "introspection fallback failed");
                Err(VerifyError::RevocationFeedStale)
            }
        }
    }

    async fn verify_signature_and_claims(&self, token: &str) -> Result<Claims, VerifyError> {
        // Borrowed where the JSON has no escapes, owned where it has.
        #[derive(serde::Deserialize)]
        struct Header<'a> {
            #[serde(borrow)]
            alg: Cow<'a, str>,
            #[serde(borrow)]
            typ: Option<Cow<'a, str>>,
            #[serde(borrow)]
            kid: Option<Cow<'a, str>>,
        }
        let inner = &*self.inner;
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| VerifyError::Malformed);
        let header_json = b64(header_b64)?;
        let header: Header<'_> = serde_json::from_slice(&header_json).map_err(|_| VerifyError::Malformed)?;
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt"));
        if !typ_ok {
            return Err(VerifyError::WrongType);
        }
        let kid = header.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
        let key = match inner.keys.get(kid) {
            Some(key) => key,
            None => inner
                .keys
                .refetch_for_unknown(kid)
                .await
                .ok_or(VerifyError::UnknownKey)?,
        };
        // The key pins the algorithm: `none`, HS256 and any other are refused here.
        if header.alg != key.alg.name() {
            return Err(VerifyError::WrongAlgorithm);
        }
        let signature = b64(signature_b64)?;
        let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
        if !key.verify(signed.as_bytes(), &signature) {
            return Err(VerifyError::Invalid);
        }
        // Every required claim is a non-optional field of `Claims`.
        let claims: Claims = serde_json::from_slice(&b64(claims_b64)?).map_err(|_| VerifyError::Malformed)?;
        if claims.iss != inner.issuer || !claims.aud.iter().any(|a| inner.audiences.contains(a)) {
            return Err(VerifyError::Invalid);
        }
        if claims.sid.is_empty() || claims.sub.is_empty() {
            return Err(VerifyError::Invalid);
        }
        Ok(claims)
    }

    /// Seconds the revocation feed has been silent (`None`: never heard,
    /// or the feed is off).
    pub fn feed_silence(&self) -> Option<Duration> {
        self.inner.revocations.as_ref().and_then(|s| s.silence())
    }

    /// Sessions currently in the revocation set.
    pub fn revoked_sessions(&self) -> usize {
        self.inner.revocations.as_ref().map_or(0, |s| s.len())
    }

    /// Keys in the cached JWKS.
    pub fn known_keys(&self) -> usize {
        self.inner.keys.len()
    }
}
