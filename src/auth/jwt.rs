//! RFC 9068 access tokens: signing with the active key and strict verification.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::keys::KeySet;
use crate::domain::{SessionId, UserId, MAX_TOKEN_LEN};
use crate::error::{Error, Result};

pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: UserId,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub sid: SessionId,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Why a token was refused. Callers answer all of these alike; the kind is
/// for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    WrongType,
    UnknownKey,
    WrongAlgorithm,
    BadSignatureOrClaims,
    Expired,
    NotYetValid,
}

/// Verified tokens remembered, so a token presented many times in its life
/// pays for one signature check (Ed25519 verification costs ~120 µs).
const VERIFIED_CACHE_ENTRIES: u64 = 100_000;

pub struct TokenIssuer {
    keys: Arc<KeySet>,
    /// SHA-256 of the exact token bytes → its verified claims.
    verified: moka::sync::Cache<[u8; 32], Arc<AccessClaims>>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    skew: i64,
}

impl TokenIssuer {
    pub fn new(keys: Arc<KeySet>, issuer: String, audience: String, access_ttl: Duration, skew: Duration) -> Self {
        let verified = moka::sync::Cache::builder()
            .max_capacity(VERIFIED_CACHE_ENTRIES)
            .time_to_live(access_ttl + skew)
            .build();
        TokenIssuer {
            keys,
            verified,
            issuer,
            audience,
            access_ttl,
            skew: skew.as_secs() as i64,
        }
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String> {
        let key = self
            .keys
            .active()
            .ok_or_else(|| Error::Internal("no signing key loaded".into()))?;
        let mut header = Header::new(key.alg.jwt());
        header.typ = Some(ACCESS_TOKEN_TYP.to_string());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, key.encoding())
            .map_err(|e| Error::Internal(format!("signing failed: {e}")))
    }

    /// Verifies signature and claims. The `kid` picks the key and the key
    /// pins the algorithm; `jku`, `x5u`, `jwk` and `x5c` headers are never
    /// consulted.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> std::result::Result<AccessClaims, Rejection> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(Rejection::Malformed);
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        if let Some(claims) = self.verified.get(&key) {
            // Same bytes, same signature: only the time checks can change.
            self.check_times(&claims, now)?;
            return Ok((*claims).clone());
        }
        let claims = self.verify_signature_and_claims(token, now)?;
        self.verified.insert(key, Arc::new(claims.clone()));
        Ok(claims)
    }

    fn check_times(&self, claims: &AccessClaims, now: OffsetDateTime) -> std::result::Result<(), Rejection> {
        let now = now.unix_timestamp();
        if claims.exp + self.skew <= now {
            return Err(Rejection::Expired);
        }
        if claims.nbf - self.skew > now || claims.iat - self.skew > now {
            return Err(Rejection::NotYetValid);
        }
        Ok(())
    }

    fn verify_signature_and_claims(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> std::result::Result<AccessClaims, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        let typ_ok = header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt"));
        if !typ_ok {
            return Err(Rejection::WrongType);
        }
        let kid = header.kid.as_deref().ok_or(Rejection::UnknownKey)?;
        let key = self.keys.verifying_key(kid, now).ok_or(Rejection::UnknownKey)?;
        if header.alg != key.alg.jwt() {
            return Err(Rejection::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.alg.jwt());
        validation.algorithms = vec![key.alg.jwt()];
        // exp/nbf are checked below against our clock with our skew.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, key.decoding(), &validation)
            .map_err(|_| Rejection::BadSignatureOrClaims)?;
        let claims = data.claims;
        self.check_times(&claims, now)?;
        Ok(claims)
    }
}
