//! The JWKS in memory: one snapshot swapped whole, refreshed by a single
//! fetch at a time that no caller waits for under a lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};

use crate::metrics as m;

/// The algorithms authd signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    EdDSA,
    ES256,
    RS256,
}

impl Alg {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Alg::EdDSA => "EdDSA",
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
        }
    }
}

enum PublicKey {
    /// Parsed once (EVP_PKEY), not per signature.
    Parsed(ParsedPublicKey),
    Rsa(RsaPublicKeyComponents<Vec<u8>>),
}

/// A published key: the `kid` pins the algorithm.
pub(crate) struct VerifyKey {
    pub alg: Alg,
    key: PublicKey,
}

impl VerifyKey {
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            PublicKey::Parsed(key) => key.verify_sig(message, signature).is_ok(),
            PublicKey::Rsa(key) => key
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
        }
    }
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

/// The key of a JWK, if it is one authd can have signed with: Ed25519
/// (EdDSA), P-256 (ES256) or RSA (RS256, `alg` required). A declared `alg`
/// must fit the key type; symmetric keys are never accepted (an `HS*` entry
/// would let the public JWKS mint tokens).
fn key_of(jwk: &Jwk) -> Option<VerifyKey> {
    let declared = jwk.common.key_algorithm.map(|a| a.to_string());
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).ok();
    let fits = |alg: Alg| declared.as_deref().is_none_or(|d| d == alg.name());
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 && fits(Alg::EdDSA) => {
            let key = ParsedPublicKey::new(&signature::ED25519, b64(&p.x)?).ok()?;
            Some(VerifyKey {
                alg: Alg::EdDSA,
                key: PublicKey::Parsed(key),
            })
        }
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 && fits(Alg::ES256) => {
            let (x, y) = (b64(&p.x)?, b64(&p.y)?);
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let point = [&[4u8][..], &x, &y].concat();
            let key = ParsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).ok()?;
            Some(VerifyKey {
                alg: Alg::ES256,
                key: PublicKey::Parsed(key),
            })
        }
        AlgorithmParameters::RSA(p) if declared.as_deref() == Some("RS256") => Some(VerifyKey {
            alg: Alg::RS256,
            key: PublicKey::Rsa(RsaPublicKeyComponents {
                n: b64(&p.n)?,
                e: b64(&p.e)?,
            }),
        }),
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
        let Some(key) = key_of(jwk) else {
            tracing::debug!(kid, "JWKS entry skipped: unsupported key");
            continue;
        };
        keys.insert(kid, Arc::new(key));
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
        assert_eq!(keys["e"].alg, Alg::EdDSA);
    }
}
