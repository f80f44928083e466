//! Signing keys: PKCS#8 v1 PEM files in the keys directory, one per `kid`.
//!
//! A kid is `<UTC creation time>-<alg>-<random>` (e.g.
//! `20261123T104255Z-eddsa-3fa9c1`). Every process derives a key's whole
//! life from that creation time and two durations all processes share, so
//! they agree without talking to each other:
//!
//! - published (in the JWKS, accepted) from its creation;
//! - signing from `created + publish delay` (the JWKS `max-age` + skew by
//!   default), so every verifier that cached the JWKS knows it first;
//! - retiring once its successor has started signing, and gone `access TTL +
//!   skew` after that, when no token it signed can still be valid.
//!
//! Neither a process restart nor a file's mtime moves any of these times.
//! The first key of a directory (no predecessor) signs at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom as AwsRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

pub use crate::domain::JWKS_MAX_AGE;

pub use crate::domain::KeyAlg;

/// The jsonwebtoken algorithm a key's algorithm pins.
pub trait JwtAlgorithm {
    fn jwt(self) -> Algorithm;
}

impl JwtAlgorithm for KeyAlg {
    fn jwt(self) -> Algorithm {
        match self {
            KeyAlg::EdDSA => Algorithm::EdDSA,
            KeyAlg::ES256 => Algorithm::ES256,
            KeyAlg::RS256 => Algorithm::RS256,
        }
    }
}

const KID_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// The parsed private key. jsonwebtoken's `encode` re-parses the PKCS#8
/// document on every signature (its signer is built per call), which halves
/// the signing rate; this is parsed once, when the file is loaded.
enum PrivateKey {
    Ed25519(Ed25519KeyPair),
    P256(EcdsaKeyPair),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

impl PrivateKey {
    fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        match self {
            PrivateKey::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            PrivateKey::P256(pair) => pair
                .sign(&AwsRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| anyhow::anyhow!("ES256 signing failed")),
            PrivateKey::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &AwsRandom::new(),
                    message,
                    &mut signature,
                )
                .map_err(|_| anyhow::anyhow!("RS256 signing failed"))?;
                Ok(signature)
            }
        }
    }
}

/// One signing key, loaded and ready to sign and verify.
pub struct SigningKey {
    pub kid: String,
    pub alg: KeyAlg,
    pub created_at: OffsetDateTime,
    pub path: PathBuf,
    private: PrivateKey,
    /// base64url of the constant JOSE header, so a signature encodes only the claims.
    header_b64: String,
    decoding: DecodingKey,
    jwk: Value,
    /// SHA-256 of the file, so a reload re-parses only what changed.
    file_digest: [u8; 32],
}

impl SigningKey {
    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// A compact JWS of `claims` under this key's constant header
    /// (`typ: at+jwt`, `alg`, `kid`).
    pub fn sign_json(&self, claims: &impl serde::Serialize) -> anyhow::Result<String> {
        let claims = serde_json::to_vec(claims)?;
        let mut token = String::with_capacity(self.header_b64.len() + claims.len() * 4 / 3 + 380);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = self.private.sign(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }
}

/// The two durations every process must share (they come from the same
/// configuration): how long a new key is only published, and how long a
/// superseded key stays published after its successor started signing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyTiming {
    pub publish_delay: Duration,
    /// Access TTL + clock skew.
    pub overlap: Duration,
}

/// A bare duration is the overlap, with no publish delay (tools and tests
/// that only read a directory).
impl From<Duration> for KeyTiming {
    fn from(overlap: Duration) -> Self {
        KeyTiming {
            publish_delay: Duration::ZERO,
            overlap,
        }
    }
}

/// Where a key is in its life at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// In the JWKS, not signing yet; signs from the given time (unless a
    /// newer key is due by then).
    Published { signs_from: OffsetDateTime },
    /// Signs new tokens; `since` is when it started (its creation for a
    /// directory's first key).
    Signing { since: OffsetDateTime },
    /// Superseded; still published and accepted until the given time.
    Retiring { until: OffsetDateTime },
    /// No unexpired token can carry it; safe to delete.
    Expired,
}

/// All keys of the keys directory, oldest first.
pub struct KeySet {
    keys: Vec<Arc<SigningKey>>,
    timing: KeyTiming,
}

fn parse_kid(file_stem: &str) -> Option<(KeyAlg, OffsetDateTime)> {
    let mut parts = file_stem.splitn(3, '-');
    let (stamp, slug, rand) = (parts.next()?, parts.next()?, parts.next()?);
    if rand.len() < 6 || !rand.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let created = PrimitiveDateTime::parse(stamp, KID_TIME).ok()?.assume_utc();
    Some((KeyAlg::from_slug(slug)?, created))
}

fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN PRIVATE KEY-----")
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        anyhow::bail!("not a PKCS#8 PEM file (expected -----BEGIN PRIVATE KEY-----)");
    }
    Ok(STANDARD.decode(body)?)
}

fn der_to_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn load_key(path: &Path, kid: &str, alg: KeyAlg, created_at: OffsetDateTime, pem: &str) -> anyhow::Result<SigningKey> {
    let der = pem_to_der(pem)?;
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let (private, decoding, params) = match alg {
        KeyAlg::EdDSA => {
            // v1 (RFC 8410, what OpenSSL writes) and v2 (older authd files) both load.
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 key: {e}"))?;
            let x = b64(pair.public_key().as_ref());
            (
                PrivateKey::Ed25519(pair),
                DecodingKey::from_ed_components(&x)?,
                json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
            )
        }
        KeyAlg::ES256 => {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .map_err(|e| anyhow::anyhow!("not a P-256 PKCS#8 key: {e}"))?;
            let point = pair.public_key().as_ref();
            if point.len() != 65 || point[0] != 4 {
                anyhow::bail!("unexpected P-256 public key encoding");
            }
            let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
            (
                PrivateKey::P256(pair),
                DecodingKey::from_ec_components(&x, &y)?,
                json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
            )
        }
        KeyAlg::RS256 => {
            let pair =
                aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("not an RSA PKCS#8 key: {e}"))?;
            if pair.public_modulus_len() < 256 {
                anyhow::bail!("RSA keys must be at least 2048 bits");
            }
            let components = aws_lc_rs::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            let (n, e) = (b64(&components.n), b64(&components.e));
            (
                PrivateKey::Rsa(pair),
                DecodingKey::from_rsa_components(&n, &e)?,
                json!({"kty": "RSA", "n": n, "e": e}),
            )
        }
    };
    let mut jwk = params;
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!(alg.to_string());
    jwk["use"] = json!("sig");
    let header = json!({"typ": crate::auth::jwt::ACCESS_TOKEN_TYP, "alg": alg.to_string(), "kid": kid});
    Ok(SigningKey {
        kid: kid.to_string(),
        alg,
        created_at,
        path: path.to_path_buf(),
        private,
        header_b64: URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        decoding,
        jwk,
        file_digest: digest(pem.as_bytes()),
    })
}

/// The `<kid>.pem` files of a directory, with their kid's alg and time.
fn key_files(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String, KeyAlg, OffsetDateTime)>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("cannot read keys directory {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        let Some(kid) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
            continue;
        };
        let Some((alg, created_at)) = parse_kid(&kid) else {
            anyhow::bail!(
                "{}: key files must be named <kid>.pem with a kid from `authd keys generate`",
                path.display()
            );
        };
        files.push((path, kid, alg, created_at));
    }
    Ok(files)
}

/// What a reload changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Files that failed to load; a key already loaded under that kid is kept.
    pub failed: Vec<String>,
}

impl ReloadReport {
    pub fn changed(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }
}

impl KeySet {
    /// Loads every `<kid>.pem` of `dir`; any file that does not load is an
    /// error. Other files (README, .gitignore) are ignored.
    pub fn load(dir: &Path, timing: impl Into<KeyTiming>) -> anyhow::Result<KeySet> {
        let mut keys = Vec::new();
        for (path, kid, alg, created_at) in key_files(dir)? {
            let pem = std::fs::read_to_string(&path)?;
            let key = load_key(&path, &kid, alg, created_at, &pem)
                .map_err(|e| anyhow::anyhow!("cannot load key {}: {e}", path.display()))?;
            keys.push(Arc::new(key));
        }
        Ok(KeySet::from_keys(keys, timing.into()))
    }

    fn from_keys(mut keys: Vec<Arc<SigningKey>>, timing: KeyTiming) -> KeySet {
        keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        KeySet { keys, timing }
    }

    /// Like [`KeySet::load`], but a missing directory is an empty set.
    pub fn load_or_empty(dir: &Path, timing: impl Into<KeyTiming>) -> anyhow::Result<KeySet> {
        let timing = timing.into();
        if !dir.exists() {
            return Ok(KeySet {
                keys: Vec::new(),
                timing,
            });
        }
        Self::load(dir, timing)
    }

    /// The directory as it is now, reusing every key whose file did not
    /// change. Unlike at start, a file that does not load (half-copied, a
    /// typo) does not stop the service: it is reported, and a key loaded
    /// earlier under that kid stays. A directory that cannot be read or
    /// holds no loadable key is an error (the caller keeps its set).
    pub fn reload(&self, dir: &Path) -> anyhow::Result<(KeySet, ReloadReport)> {
        let known: HashMap<&str, &Arc<SigningKey>> = self.keys.iter().map(|k| (k.kid.as_str(), k)).collect();
        let mut report = ReloadReport::default();
        let mut keys = Vec::new();
        let entries =
            std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("cannot read keys directory {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("pem") {
                continue;
            }
            let name = path.display().to_string();
            let Some(kid) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let Some((alg, created_at)) = parse_kid(kid) else {
                report.failed.push(format!("{name}: not named <kid>.pem"));
                continue;
            };
            let previous = known.get(kid).copied();
            let loaded = std::fs::read_to_string(&path)
                .map_err(anyhow::Error::from)
                .and_then(|pem| match previous {
                    Some(key) if key.file_digest == digest(pem.as_bytes()) => Ok(key.clone()),
                    _ => load_key(&path, kid, alg, created_at, &pem).map(Arc::new),
                });
            match (loaded, previous) {
                (Ok(key), previous) => {
                    if previous.is_none() {
                        report.added.push(key.kid.clone());
                    }
                    keys.push(key);
                }
                (Err(e), Some(key)) => {
                    report
                        .failed
                        .push(format!("{name}: {e} (keeping the copy loaded earlier)"));
                    keys.push(key.clone());
                }
                (Err(e), None) => report.failed.push(format!("{name}: {e}")),
            }
        }
        if keys.is_empty() {
            anyhow::bail!("no loadable key in {}", dir.display());
        }
        for key in &self.keys {
            if !keys.iter().any(|k| k.kid == key.kid) {
                report.removed.push(key.kid.clone());
            }
        }
        Ok((KeySet::from_keys(keys, self.timing), report))
    }

    pub fn timing(&self) -> KeyTiming {
        self.timing
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    fn signs_from(&self, key: &SigningKey) -> OffsetDateTime {
        key.created_at + self.timing.publish_delay
    }

    /// Index of the key that signs at `now`: the newest whose publish delay
    /// has passed, or, when none has, the oldest (a directory's first key:
    /// nobody can have cached a JWKS without it).
    fn signer_index(&self, now: OffsetDateTime) -> Option<usize> {
        if self.keys.is_empty() {
            return None;
        }
        Some(self.keys.iter().rposition(|k| self.signs_from(k) <= now).unwrap_or(0))
    }

    /// The key that signs new tokens at `now`.
    pub fn signer(&self, now: OffsetDateTime) -> Option<&SigningKey> {
        self.signer_index(now).map(|i| self.keys[i].as_ref())
    }

    pub fn status(&self, index: usize, now: OffsetDateTime) -> KeyStatus {
        let Some(signer) = self.signer_index(now) else {
            return KeyStatus::Expired;
        };
        let key = &self.keys[index];
        if index == signer {
            // A directory's first key signed from its creation.
            let since = if index == 0 {
                key.created_at
            } else {
                self.signs_from(key)
            };
            return KeyStatus::Signing { since };
        }
        if index > signer {
            return KeyStatus::Published {
                signs_from: self.signs_from(key),
            };
        }
        // Superseded: its successor started signing at the successor's
        // signing time, whenever any process happened to load it.
        let successor = &self.keys[index + 1];
        let until = self.signs_from(successor) + self.timing.overlap;
        if now < until {
            KeyStatus::Retiring { until }
        } else {
            KeyStatus::Expired
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter().map(|k| k.as_ref())
    }

    /// Keys that may have signed a token still valid at `now`, and keys
    /// about to sign.
    pub fn published(&self, now: OffsetDateTime) -> impl Iterator<Item = &SigningKey> {
        self.keys
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.status(*i, now) != KeyStatus::Expired)
            .map(|(_, k)| k.as_ref())
    }

    /// The key a token names, if it is still published.
    pub fn verifying_key(&self, kid: &str, now: OffsetDateTime) -> Option<&SigningKey> {
        self.published(now).find(|k| k.kid == kid)
    }

    /// RFC 7517 JWK Set of the published keys.
    pub fn jwks(&self, now: OffsetDateTime) -> Value {
        json!({ "keys": self.published(now).map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }
}

/// Creates a new key file and returns its kid. Private keys are written
/// 0600, as PKCS#8 v1 (RFC 5208; RFC 8410 for Ed25519), the form OpenSSL,
/// Python `cryptography` and JOSE libraries all read.
pub fn generate(dir: &Path, alg: KeyAlg, now: OffsetDateTime) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create keys directory {}: {e}", dir.display()))?;
    let mut suffix = [0u8; 3];
    SystemRandom::new()
        .fill(&mut suffix)
        .map_err(|_| anyhow::anyhow!("system random generator failed"))?;
    let stamp = now.format(KID_TIME)?;
    let kid = format!(
        "{stamp}-{}-{:02x}{:02x}{:02x}",
        alg.slug(),
        suffix[0],
        suffix[1],
        suffix[2]
    );
    let der: Vec<u8> = match alg {
        KeyAlg::EdDSA => Ed25519KeyPair::generate()
            .and_then(|pair| pair.to_pkcs8v1())
            .map_err(|_| anyhow::anyhow!("Ed25519 key generation failed"))?
            .as_ref()
            .to_vec(),
        KeyAlg::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|pair| pair.to_pkcs8v1())
            .map_err(|_| anyhow::anyhow!("P-256 key generation failed"))?
            .as_ref()
            .to_vec(),
        KeyAlg::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'static> =
                pair.as_der().map_err(|_| anyhow::anyhow!("RSA key encoding failed"))?;
            der.as_ref().to_vec()
        }
    };
    write_private(dir, &kid, der_to_pem(&der).as_bytes())?;
    Ok(kid)
}

/// Writes `<kid>.pem` whole or not at all: a process reloading the
/// directory meanwhile never sees half a key (the temporary name does not
/// end in `.pem`), and an existing file is never replaced.
fn write_private(dir: &Path, kid: &str, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let path = dir.join(format!("{kid}.pem"));
    let temporary = dir.join(format!(".{kid}.pem.tmp"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&temporary)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", temporary.display()))?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::hard_link(&temporary, &path));
    let _ = std::fs::remove_file(&temporary);
    written.map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// One line per key for `authd keys list`.
pub fn describe(set: &KeySet, now: OffsetDateTime) -> Vec<String> {
    set.iter()
        .enumerate()
        .map(|(i, k)| {
            let status = match set.status(i, now) {
                KeyStatus::Published { signs_from } => {
                    format!("published (in the JWKS; signs from {})", rfc3339(signs_from))
                }
                KeyStatus::Signing { since } => format!("signing (signs new tokens since {})", rfc3339(since)),
                KeyStatus::Retiring { until } => format!("retiring (published until {})", rfc3339(until)),
                KeyStatus::Expired => "expired (no valid token can use it; safe to delete)".to_string(),
            };
            format!("{}  {}  {}", k.kid, k.alg, status)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests time real signatures and make keys now
mod tests {
    use super::*;

    fn timing(publish_delay: u64, overlap: u64) -> KeyTiming {
        KeyTiming {
            publish_delay: Duration::from_secs(publish_delay),
            overlap: Duration::from_secs(overlap),
        }
    }

    #[test]
    fn every_alg_generates_loads_and_publishes() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256] {
            generate(dir.path(), alg, now).unwrap();
        }
        let set = KeySet::load(dir.path(), Duration::from_secs(900)).unwrap();
        assert_eq!(set.len(), 3);
        let jwks = set.jwks(now);
        let ktys: Vec<_> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kty"].as_str().unwrap())
            .collect();
        assert_eq!(ktys.len(), 3);
        assert!(ktys.contains(&"OKP") && ktys.contains(&"EC") && ktys.contains(&"RSA"));
        for k in jwks["keys"].as_array().unwrap() {
            assert!(k.get("d").is_none(), "private part published: {k}");
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| !n.ends_with(".pem"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn a_new_key_is_published_at_once_and_signs_after_the_delay() {
        let dir = tempfile::tempdir().unwrap();
        // Whole seconds: a kid records its creation to the second.
        let t0 = (OffsetDateTime::now_utc() - time::Duration::hours(1))
            .replace_nanosecond(0)
            .unwrap();
        let old = generate(dir.path(), KeyAlg::EdDSA, t0).unwrap();
        let t1 = t0 + time::Duration::minutes(10);
        let new = generate(dir.path(), KeyAlg::EdDSA, t1).unwrap();
        let set = KeySet::load(dir.path(), timing(300, 900)).unwrap();
        let at = |m: i64| t1 + time::Duration::minutes(m);
        // Published at once, signing only after the publish delay.
        assert!(set.verifying_key(&new, t1).is_some());
        assert_eq!(set.signer(at(4)).unwrap().kid, old);
        assert_eq!(set.signer(at(5)).unwrap().kid, new);
        // The old key stays until access TTL + skew after the new one started signing.
        assert!(set.verifying_key(&old, at(5 + 14)).is_some());
        assert!(set.verifying_key(&old, at(5 + 16)).is_none());
        assert!(set.verifying_key(&new, t1 + time::Duration::days(400)).is_some());
        assert_eq!(set.status(0, at(6)), KeyStatus::Retiring { until: at(20) });
        assert_eq!(set.status(1, at(1)), KeyStatus::Published { signs_from: at(5) });
        assert_eq!(set.status(1, at(6)), KeyStatus::Signing { since: at(5) });
        assert_eq!(set.status(0, at(21)), KeyStatus::Expired);
    }

    #[test]
    fn a_first_key_signs_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let kid = generate(dir.path(), KeyAlg::ES256, now).unwrap();
        let set = KeySet::load(dir.path(), timing(300, 900)).unwrap();
        assert_eq!(set.signer(now).unwrap().kid, kid);
    }

    #[test]
    fn reload_adds_removes_and_survives_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let first = generate(dir.path(), KeyAlg::EdDSA, now - time::Duration::hours(2)).unwrap();
        let set = KeySet::load(dir.path(), timing(0, 900)).unwrap();
        let second = generate(dir.path(), KeyAlg::EdDSA, now).unwrap();
        std::fs::write(dir.path().join("20260101T000000Z-eddsa-abcdef.pem"), "half a key").unwrap();
        let (set2, report) = set.reload(dir.path()).unwrap();
        assert_eq!(report.added, vec![second.clone()]);
        assert_eq!(report.failed.len(), 1, "{report:?}");
        assert_eq!(set2.len(), 2);
        assert_eq!(set2.signer(now).unwrap().kid, second);
        // Unchanged keys are the same loaded objects, not parsed again.
        assert!(Arc::ptr_eq(&set.keys[0], &set2.keys[0]));
        std::fs::remove_file(dir.path().join(format!("{first}.pem"))).unwrap();
        let (set3, report) = set2.reload(dir.path()).unwrap();
        assert_eq!(report.removed, vec![first]);
        assert_eq!(set3.len(), 1);
    }

    #[test]
    fn stray_pem_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("../etc-passwd.pem"), "x").ok();
        std::fs::write(dir.path().join("mykey.pem"), "x").unwrap();
        assert!(KeySet::load(dir.path(), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn signatures_verify_with_jsonwebtoken() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256] {
            let kid = generate(dir.path(), alg, now).unwrap();
            let set = KeySet::load(dir.path(), Duration::from_secs(900)).unwrap();
            let key = set.iter().find(|k| k.kid == kid).unwrap();
            let token = key.sign_json(&json!({"sub": "x", "exp": 4_000_000_000i64})).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.kid.as_deref(), Some(kid.as_str()));
            assert_eq!(header.typ.as_deref(), Some("at+jwt"));
            let mut validation = jsonwebtoken::Validation::new(alg.jwt());
            validation.set_required_spec_claims(&["exp"]);
            jsonwebtoken::decode::<Value>(&token, key.decoding(), &validation).unwrap();
        }
    }
}
