//! The JWKS in memory: one snapshot swapped whole, refreshed by a single
//! fetch at a time that no caller waits for under a lock.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::metrics as m;

/// A published key: the `kid` pins the algorithm.
pub(crate) struct VerifyKey {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

type Fetch = Shared<BoxFuture<'static, Result<(), String>>>;

pub(crate) struct KeyStore {
    uri: String,
    http: reqwest::Client,
    timeout: Duration,
    /// Shortest gap between two fetches caused by unknown kids, so tokens
    /// with made-up kids cannot turn into a flood of fetches.
    min_refetch: Duration,
    keys: ArcSwap<HashMap<String, Arc<VerifyKey>>>,
    /// The fetch under way, if any; its waiters share its result. The lock
    /// is held only to read or replace this slot, never across the fetch.
    in_flight: Mutex<Option<Fetch>>,
    last_fetch: Mutex<Option<Instant>>,
}

/// An algorithm this crate accepts from a JWK: asymmetric only (an `HS*`
/// entry would let the public JWKS mint tokens).
fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(declared) = jwk.common.key_algorithm {
        let alg = Algorithm::from_str(&declared.to_string()).ok()?;
        let family_ok = matches!(
            (&jwk.algorithm, alg),
            (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA)
                | (
                    AlgorithmParameters::EllipticCurve(_),
                    Algorithm::ES256 | Algorithm::ES384
                )
                | (
                    AlgorithmParameters::RSA(_),
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                )
        );
        return family_ok.then_some(alg);
    }
    // Without `alg` only curves that name one algorithm are usable.
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Some(Algorithm::EdDSA),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Some(Algorithm::ES256),
        _ => None,
    }
}

pub(crate) fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<VerifyKey>>, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("JWKS is not a JWK Set: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
        {
            continue;
        }
        let (Some(alg), Ok(key)) = (algorithm_of(jwk), DecodingKey::from_jwk(jwk)) else {
            tracing::debug!(kid, "JWKS entry skipped: unsupported key");
            continue;
        };
        keys.insert(kid, Arc::new(VerifyKey { alg, key }));
    }
    Ok(keys)
}

impl KeyStore {
    pub(crate) fn new(uri: String, http: reqwest::Client, timeout: Duration, min_refetch: Duration) -> Self {
        KeyStore {
            uri,
            http,
            timeout,
            min_refetch,
            keys: ArcSwap::from_pointee(HashMap::new()),
            in_flight: Mutex::new(None),
            last_fetch: Mutex::new(None),
        }
    }

    pub(crate) fn get(&self, kid: &str) -> Option<Arc<VerifyKey>> {
        self.keys.load().get(kid).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.load().len()
    }

    async fn fetch_once(&self) -> Result<(), String> {
        let response = self
            .http
            .get(&self.uri)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", self.uri))?;
        if !response.status().is_success() {
            return Err(format!("GET {}: {}", self.uri, response.status()));
        }
        let body = response.bytes().await.map_err(|e| format!("GET {}: {e}", self.uri))?;
        let keys = parse_jwks(&body)?;
        if keys.is_empty() {
            // Keep what we had: an empty set would refuse every token.
            return Err(format!("GET {}: no usable key", self.uri));
        }
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// Fetches the JWKS, or joins the fetch already under way. The fetch is
    /// its own task, so it completes (bounded by the timeout) even when
    /// every caller waiting for it has gone away.
    pub(crate) async fn refresh(self: &Arc<Self>) -> Result<(), String> {
        let fetch = {
            let mut slot = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(fetch) => fetch.clone(),
                None => {
                    let store = self.clone();
                    *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    let task = tokio::spawn(async move {
                        let outcome = store.fetch_once().await;
                        *store.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        let label = if outcome.is_ok() { "ok" } else { "error" };
                        metrics::counter!(m::JWKS_REFRESHES, "outcome" => label).increment(1);
                        metrics::gauge!(m::JWKS_KEYS).set(store.len() as f64);
                        outcome
                    });
                    let fetch: Fetch =
                        async move { task.await.unwrap_or_else(|e| Err(format!("JWKS fetch task: {e}"))) }
                            .boxed()
                            .shared();
                    *slot = Some(fetch.clone());
                    fetch
                }
            }
        };
        fetch.await
    }

    /// A `kid` we do not know: fetch at once unless a fetch started less
    /// than `min_refetch` ago (then join it if it is still running).
    pub(crate) async fn refetch_for_unknown(self: &Arc<Self>, kid: &str) -> Option<Arc<VerifyKey>> {
        let running = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        let recent = self
            .last_fetch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < self.min_refetch);
        if recent && !running {
            return self.get(kid);
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "JWKS refetch for an unknown kid failed");
        }
        self.get(kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_unknown_entries_are_skipped() {
        let body = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h", "alg": "HS256", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "lie", "alg": "RS256", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "RSA", "kid": "r-no-alg", "n": "AQAB", "e": "AQAB"},
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["e"]);
        assert_eq!(keys["e"].alg, Algorithm::EdDSA);
    }
}
