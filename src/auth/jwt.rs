//! RFC 9068 access tokens: signing with the active key and strict verification.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::keys::{JwtAlgorithm, KeySet, ReloadReport};
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
    /// Swapped whole by a reload; readers take a snapshot without a lock.
    keys: ArcSwap<KeySet>,
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
            keys: ArcSwap::new(keys),
            verified,
            issuer,
            audience,
            access_ttl,
            skew: skew.as_secs() as i64,
        }
    }

    /// The key set as it is now (a snapshot; a reload does not change it).
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Installs the keys directory as it is now. The files are read on a
    /// blocking thread and the new set replaces the old one in one swap, so
    /// no signature waits for disk I/O.
    pub async fn reload_keys(&self, dir: &Path) -> anyhow::Result<ReloadReport> {
        let current = self.keys.load_full();
        let dir = dir.to_path_buf();
        let (set, report) = tokio::task::spawn_blocking(move || current.reload(&dir)).await??;
        self.keys.store(Arc::new(set));
        Ok(report)
    }

    /// Signs with the key that signs at the token's `iat` (the caller's
    /// clock): a key is used only once its publish delay has passed.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String> {
        let now = OffsetDateTime::from_unix_timestamp(claims.iat)
            .map_err(|_| Error::Internal("access token iat out of range".into()))?;
        let keys = self.keys.load();
        let key = keys
            .signer(now)
            .ok_or_else(|| Error::Internal("no signing key loaded".into()))?;
        key.sign_json(claims)
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
        let keys = self.keys.load();
        let key = keys.verifying_key(kid, now).ok_or(Rejection::UnknownKey)?;
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

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests time real signatures and make keys now
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::auth::keys::{generate, KeyAlg};

    fn per_second(seconds: f64, mut op: impl FnMut()) -> f64 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            for _ in 0..64 {
                op();
            }
            n += 64;
        }
        n as f64 / start.elapsed().as_secs_f64()
    }

    /// Issue 14 item 4: `TokenIssuer::sign` against a raw aws-lc-rs
    /// signature of a message as long as a token's signing input, and
    /// against jsonwebtoken's `encode` (which parses the key per call).
    /// `cargo test --lib signing_rate -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement; prints rates"]
    fn signing_rate_vs_raw() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256] {
            let kid = generate(dir.path(), alg, now).unwrap();
            let path = dir.path().join(format!("{kid}.pem"));
            let sub = dir.path().join(alg.to_string());
            std::fs::create_dir(&sub).unwrap();
            std::fs::rename(&path, sub.join(format!("{kid}.pem"))).unwrap();
            let set = KeySet::load(&sub, Duration::from_secs(900)).unwrap();
            let issuer = TokenIssuer::new(
                Arc::new(set),
                "https://authd.example.org".into(),
                "api".into(),
                Duration::from_secs(900),
                Duration::from_secs(2),
            );
            let claims = AccessClaims {
                iss: issuer.issuer.clone(),
                sub: crate::domain::UserId::new(),
                aud: "api".into(),
                exp: now.unix_timestamp() + 900,
                iat: now.unix_timestamp(),
                nbf: now.unix_timestamp(),
                jti: uuid::Uuid::now_v7().to_string(),
                sid: crate::domain::SessionId::new(),
                client_id: "web".into(),
                scope: None,
            };
            let token = issuer.sign(&claims).unwrap();
            let input_len = token.rfind('.').unwrap();
            let message = vec![b'a'; input_len];
            let pem = std::fs::read(sub.join(format!("{kid}.pem"))).unwrap();
            let der = {
                use base64::Engine;
                let text = String::from_utf8(pem.clone()).unwrap();
                let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
                base64::engine::general_purpose::STANDARD.decode(body).unwrap()
            };
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let raw: Box<dyn FnMut()> = match alg {
                KeyAlg::EdDSA => {
                    let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap();
                    Box::new(move || {
                        std::hint::black_box(pair.sign(&message));
                    })
                }
                KeyAlg::ES256 => {
                    let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
                        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        &der,
                    )
                    .unwrap();
                    Box::new(move || {
                        std::hint::black_box(pair.sign(&rng, &message).unwrap());
                    })
                }
                KeyAlg::RS256 => {
                    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).unwrap();
                    let mut out = vec![0u8; pair.public_modulus_len()];
                    Box::new(move || {
                        pair.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &rng, &message, &mut out)
                            .unwrap();
                    })
                }
            };
            let encoding = match alg {
                KeyAlg::EdDSA => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
                KeyAlg::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(&pem),
                KeyAlg::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
            }
            .unwrap();
            let mut header = jsonwebtoken::Header::new(alg.jwt());
            header.typ = Some(ACCESS_TOKEN_TYP.into());
            header.kid = Some(kid.clone());
            // Interleaved in short slices, so all three see the same machine load.
            let mut raw = raw;
            let (mut raw_rate, mut ours, mut encode) = (0.0, 0.0, 0.0);
            let rounds = 10;
            for _ in 0..rounds {
                raw_rate += per_second(0.2, &mut raw) / rounds as f64;
                ours += per_second(0.2, || {
                    std::hint::black_box(issuer.sign(&claims).unwrap());
                }) / rounds as f64;
                encode += per_second(0.2, || {
                    std::hint::black_box(jsonwebtoken::encode(&header, &claims, &encoding).unwrap());
                }) / rounds as f64;
            }
            println!(
                "{alg}: raw {raw_rate:.0}/s, TokenIssuer::sign {ours:.0}/s ({:.1} %), jsonwebtoken::encode {encode:.0}/s ({:.1} %)",
                100.0 * ours / raw_rate,
                100.0 * encode / raw_rate
            );
        }
    }
}
