//! Signing keys: PKCS#8 PEM files in the keys directory, one per `kid`.
//!
//! A kid is `<UTC creation time>-<alg>-<random>` (e.g.
//! `20261123T104255Z-eddsa-3fa9c1`), so the directory alone says which key
//! is newest (the one that signs) and when each older key was retired (when
//! its successor was created). A retired key stays published and accepted
//! until every token it can have signed has expired.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom as AwsRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    EdDSA,
    ES256,
    RS256,
}

impl KeyAlg {
    pub fn jwt(self) -> Algorithm {
        match self {
            KeyAlg::EdDSA => Algorithm::EdDSA,
            KeyAlg::ES256 => Algorithm::ES256,
            KeyAlg::RS256 => Algorithm::RS256,
        }
    }

    fn slug(self) -> &'static str {
        match self {
            KeyAlg::EdDSA => "eddsa",
            KeyAlg::ES256 => "es256",
            KeyAlg::RS256 => "rs256",
        }
    }

    fn from_slug(s: &str) -> Option<Self> {
        [KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256]
            .into_iter()
            .find(|a| a.slug() == s)
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAlg::EdDSA => "EdDSA",
            KeyAlg::ES256 => "ES256",
            KeyAlg::RS256 => "RS256",
        })
    }
}

impl std::str::FromStr for KeyAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "eddsa" | "ed25519" => Ok(KeyAlg::EdDSA),
            "es256" => Ok(KeyAlg::ES256),
            "rs256" => Ok(KeyAlg::RS256),
            _ => Err(format!("`{s}` is not one of EdDSA, ES256, RS256")),
        }
    }
}

const KID_TIME: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// One signing key, loaded and ready to sign and verify.
pub struct SigningKey {
    pub kid: String,
    pub alg: KeyAlg,
    pub created_at: OffsetDateTime,
    pub path: PathBuf,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
}

impl SigningKey {
    pub fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    pub fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// What `keys list` says of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// Signs new tokens.
    Active,
    /// Still published and accepted until the given time.
    Retiring(OffsetDateTime),
    /// No unexpired token can carry it; safe to delete.
    Expired,
}

/// All keys of the keys directory, oldest first.
pub struct KeySet {
    keys: Vec<SigningKey>,
    /// How long after retirement a key is still needed: access TTL + skew.
    overlap: Duration,
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

fn load_key(path: &Path, kid: &str, alg: KeyAlg, created_at: OffsetDateTime) -> anyhow::Result<SigningKey> {
    let pem = std::fs::read_to_string(path)?;
    let der = pem_to_der(&pem)?;
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let (encoding, decoding, params) = match alg {
        KeyAlg::EdDSA => {
            let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                .map_err(|e| anyhow::anyhow!("not an Ed25519 PKCS#8 key: {e}"))?;
            let x = b64(pair.public_key().as_ref());
            (
                EncodingKey::from_ed_pem(pem.as_bytes())?,
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
                EncodingKey::from_ec_pem(pem.as_bytes())?,
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
                EncodingKey::from_rsa_pem(pem.as_bytes())?,
                DecodingKey::from_rsa_components(&n, &e)?,
                json!({"kty": "RSA", "n": n, "e": e}),
            )
        }
    };
    let mut jwk = params;
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!(alg.to_string());
    jwk["use"] = json!("sig");
    Ok(SigningKey {
        kid: kid.to_string(),
        alg,
        created_at,
        path: path.to_path_buf(),
        encoding,
        decoding,
        jwk,
    })
}

impl KeySet {
    /// Loads every `<kid>.pem` of `dir`. Other files (README, .gitignore) are ignored.
    pub fn load(dir: &Path, overlap: Duration) -> anyhow::Result<KeySet> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("cannot read keys directory {}: {e}", dir.display()))?;
        let mut keys = Vec::new();
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
            let key = load_key(&path, &kid, alg, created_at)
                .map_err(|e| anyhow::anyhow!("cannot load key {}: {e}", path.display()))?;
            keys.push(key);
        }
        keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
        Ok(KeySet { keys, overlap })
    }

    /// Like [`KeySet::load`], but a missing directory is an empty set.
    pub fn load_or_empty(dir: &Path, overlap: Duration) -> anyhow::Result<KeySet> {
        if !dir.exists() {
            return Ok(KeySet {
                keys: Vec::new(),
                overlap,
            });
        }
        Self::load(dir, overlap)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key that signs new tokens: the newest.
    pub fn active(&self) -> Option<&SigningKey> {
        self.keys.last()
    }

    pub fn status(&self, index: usize, now: OffsetDateTime) -> KeyStatus {
        match self.keys.get(index + 1) {
            None => KeyStatus::Active,
            Some(successor) => {
                let until = successor.created_at + self.overlap;
                if now < until {
                    KeyStatus::Retiring(until)
                } else {
                    KeyStatus::Expired
                }
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &SigningKey> {
        self.keys.iter()
    }

    /// Keys that may have signed a token that is still valid at `now`.
    pub fn published(&self, now: OffsetDateTime) -> impl Iterator<Item = &SigningKey> {
        self.keys
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.status(*i, now) != KeyStatus::Expired)
            .map(|(_, k)| k)
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

/// Creates a new key file and returns its kid. Private keys are written 0600.
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
    let rng = AwsRandom::new();
    let der: Vec<u8> = match alg {
        KeyAlg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("Ed25519 key generation failed"))?
            .as_ref()
            .to_vec(),
        KeyAlg::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
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
    let path = dir.join(format!("{kid}.pem"));
    write_private(&path, der_to_pem(&der).as_bytes())?;
    Ok(kid)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

/// One line per key for `authd keys list`.
pub fn describe(set: &KeySet, now: OffsetDateTime) -> Vec<String> {
    set.iter()
        .enumerate()
        .map(|(i, k)| {
            let status = match set.status(i, now) {
                KeyStatus::Active => "active (signs new tokens)".to_string(),
                KeyStatus::Retiring(until) => {
                    format!(
                        "retiring (published until {})",
                        until.format(&Rfc3339).unwrap_or_default()
                    )
                }
                KeyStatus::Expired => "expired (no valid token can use it; safe to delete)".to_string(),
            };
            format!("{}  {}  {}", k.kid, k.alg, status)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn rotation_keeps_the_old_key_until_its_tokens_expire() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = OffsetDateTime::now_utc() - time::Duration::hours(1);
        let old = generate(dir.path(), KeyAlg::EdDSA, t0).unwrap();
        let t1 = t0 + time::Duration::minutes(10);
        let new = generate(dir.path(), KeyAlg::EdDSA, t1).unwrap();
        let set = KeySet::load(dir.path(), Duration::from_secs(900)).unwrap();
        assert_eq!(set.active().unwrap().kid, new);
        assert!(set.verifying_key(&old, t1 + time::Duration::minutes(14)).is_some());
        assert!(set.verifying_key(&old, t1 + time::Duration::minutes(16)).is_none());
        assert!(set.verifying_key(&new, t1 + time::Duration::days(400)).is_some());
    }

    #[test]
    fn stray_pem_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("../etc-passwd.pem"), "x").ok();
        std::fs::write(dir.path().join("mykey.pem"), "x").unwrap();
        assert!(KeySet::load(dir.path(), Duration::from_secs(1)).is_err());
    }
}
