//! Newtypes that are valid once constructed ("parse, don't validate").

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::Error;

/// `Cache-Control: max-age` of the JWKS: how long a verifier may keep a copy.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);

/// The default key publish delay: a verifier's cached JWKS is at most
/// `max-age` old, plus the skew between its clock and ours.
pub fn default_key_publish_delay(clock_skew: Duration) -> Duration {
    JWKS_MAX_AGE + clock_skew
}

macro_rules! uuid_id {
    ($name:ident) => {
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new v7 id: sorts by creation time.
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id!(UserId);
uuid_id!(SessionId);

pub const MAX_EMAIL_LEN: usize = 254;
pub const MIN_PASSWORD_LEN: usize = 8;
pub const MAX_PASSWORD_LEN: usize = 1024;
pub const MAX_DEVICE_NAME_LEN: usize = 100;
pub const MAX_USER_AGENT_LEN: usize = 512;
pub const MAX_CLIENT_ID_LEN: usize = 128;
pub const MAX_SCOPE_LEN: usize = 1024;
/// Longest token we will even look at; real ones are far shorter.
pub const MAX_TOKEN_LEN: usize = 8192;

/// A syntactically valid email address, trimmed, in the case the user typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let trimmed = raw.trim();
        let invalid = || Error::validation("invalid_email", "email must look like name@domain");
        if trimmed.is_empty() || trimmed.len() > MAX_EMAIL_LEN {
            return Err(invalid());
        }
        let mut parts = trimmed.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid());
        };
        if local.is_empty() || domain.is_empty() || trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        Ok(Email(trimmed.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key uniqueness and lookup use: emails compare case-insensitively.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

/// A password as the user gave it. Never printed.
#[derive(Clone)]
pub struct Password(String);

/// The 10,000 most common passwords (zxcvbn's list, MIT), lower-case.
const COMMON_PASSWORDS: &str = include_str!("auth/common-passwords.txt");

fn is_common(password: &str) -> bool {
    static SET: std::sync::OnceLock<std::collections::HashSet<&'static str>> = std::sync::OnceLock::new();
    SET.get_or_init(|| COMMON_PASSWORDS.lines().collect())
        .contains(password.to_lowercase().as_str())
}

/// NFKC, so the same password typed on different keyboards or input methods
/// (composed vs decomposed accents, full-width digits) hashes the same.
fn normalize(raw: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    raw.nfkc().collect()
}

impl Password {
    /// A new password must satisfy the policy: 8 to 1024 bytes after NFKC
    /// normalisation, and not one of the most common passwords.
    pub fn new_checked(raw: String) -> Result<Self, Error> {
        if raw.len() > MAX_PASSWORD_LEN * 4 {
            return Err(Error::validation(
                "invalid_password",
                format!("password must be at most {MAX_PASSWORD_LEN} bytes"),
            ));
        }
        let normalized = normalize(&raw);
        if normalized.len() < MIN_PASSWORD_LEN {
            return Err(Error::validation(
                "invalid_password",
                format!("password must be at least {MIN_PASSWORD_LEN} bytes"),
            ));
        }
        if normalized.len() > MAX_PASSWORD_LEN {
            return Err(Error::validation(
                "invalid_password",
                format!("password must be at most {MAX_PASSWORD_LEN} bytes"),
            ));
        }
        if is_common(&normalized) {
            return Err(Error::validation(
                "invalid_password",
                "this password is among the most common ones and easy to guess; choose another",
            ));
        }
        Ok(Password(normalized))
    }

    /// A presented password (login, current password) is only bounded: an
    /// over-long one is refused before any hashing work is spent on it.
    pub fn presented(raw: String) -> Option<Self> {
        (raw.len() <= MAX_PASSWORD_LEN * 4)
            .then(|| normalize(&raw))
            .filter(|n| n.len() <= MAX_PASSWORD_LEN)
            .map(Password)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// SHA-256 of a refresh token: what the store keeps and looks tokens up by.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl ConstantTimeEq for TokenHash {
    fn ct_eq(&self, other: &Self) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

pub const REFRESH_TOKEN_BYTES: usize = 32;

/// A refresh token minted since migration 0007: version, session id,
/// generation, 256 random bits, and an HMAC-SHA256 tag over all of them
/// under the server's [`RefreshKey`].
const SIGNED_VERSION: u8 = 1;
const SIGNED_BODY_BYTES: usize = 1 + 16 + 8 + REFRESH_TOKEN_BYTES;
const SIGNED_TOKEN_BYTES: usize = SIGNED_BODY_BYTES + 32;

/// The key refresh tokens are signed under. Every process must hold the
/// same one, so it is derived from a secret stored in the database.
#[derive(Clone)]
pub struct RefreshKey(ring::hmac::Key);

impl RefreshKey {
    pub fn from_secret(secret: &[u8]) -> Self {
        // A key of its own, in case the stored secret ever serves another purpose.
        let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let derived = ring::hmac::sign(&root, b"authd refresh-token mac v1");
        RefreshKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()))
    }
}

impl fmt::Debug for RefreshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshKey(***)")
    }
}

/// What a signed refresh token says of itself, once its tag is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshClaims {
    pub session: SessionId,
    pub generation: i64,
}

/// An opaque refresh token, base64url without padding: 256 random bits,
/// and (since migration 0007) its session and generation under a server MAC.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    pub fn generate(rng: &SystemRandom) -> Result<Self, Error> {
        let mut bytes = [0u8; REFRESH_TOKEN_BYTES];
        rng.fill(&mut bytes)
            .map_err(|_| Error::Internal("system random generator failed".into()))?;
        Ok(RefreshToken(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token of `session` at `generation`, signed under `key`: the server
    /// recognises it later, even once it is no longer stored.
    pub fn mint(rng: &SystemRandom, key: &RefreshKey, session: SessionId, generation: i64) -> Result<Self, Error> {
        let mut bytes = [0u8; SIGNED_TOKEN_BYTES];
        bytes[0] = SIGNED_VERSION;
        bytes[1..17].copy_from_slice(session.0.as_bytes());
        bytes[17..25].copy_from_slice(&generation.to_be_bytes());
        rng.fill(&mut bytes[25..SIGNED_BODY_BYTES])
            .map_err(|_| Error::Internal("system random generator failed".into()))?;
        let tag = ring::hmac::sign(&key.0, &bytes[..SIGNED_BODY_BYTES]);
        bytes[SIGNED_BODY_BYTES..].copy_from_slice(tag.as_ref());
        Ok(RefreshToken(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Accepts only strings that could be one of ours; anything else is `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        let decoded = URL_SAFE_NO_PAD.decode(raw.as_bytes()).ok()?;
        let shaped = decoded.len() == REFRESH_TOKEN_BYTES
            || (decoded.len() == SIGNED_TOKEN_BYTES && decoded[0] == SIGNED_VERSION);
        shaped.then(|| RefreshToken(raw.to_string()))
    }

    /// A token from before migration 0007 (random bytes only): the store
    /// still knows each one by hash.
    pub fn is_legacy(&self) -> bool {
        self.0.len() < SIGNED_TOKEN_BYTES
    }

    /// The session and generation a signed token carries, when its tag is
    /// valid under `key`; `None` for a legacy or a made-up token.
    pub fn claims(&self, key: &RefreshKey) -> Option<RefreshClaims> {
        let decoded = URL_SAFE_NO_PAD.decode(self.0.as_bytes()).ok()?;
        if decoded.len() != SIGNED_TOKEN_BYTES || decoded[0] != SIGNED_VERSION {
            return None;
        }
        let (body, tag) = decoded.split_at(SIGNED_BODY_BYTES);
        ring::hmac::verify(&key.0, body, tag).ok()?;
        let session = Uuid::from_slice(&body[1..17]).ok()?;
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&body[17..25]);
        Some(RefreshClaims {
            session: SessionId(session),
            generation: i64::from_be_bytes(generation),
        })
    }

    pub fn hash(&self) -> TokenHash {
        let d = digest::digest(&digest::SHA256, self.0.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        TokenHash(out)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(***)")
    }
}

/// The OAuth client a login came from (public clients are not registered).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_CLIENT_ID_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:~".contains(&b));
        if ok {
            Ok(ClientId(raw.to_string()))
        } else {
            Err(Error::InvalidRequest(format!(
                "client_id must be 1 to {MAX_CLIENT_ID_LEN} characters of [A-Za-z0-9-._:~]"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A space-separated OAuth scope (RFC 6749 §3.3), normalised.
pub fn parse_scope(raw: &str) -> Result<Option<String>, Error> {
    if raw.len() > MAX_SCOPE_LEN {
        return Err(Error::InvalidRequest(format!(
            "scope must be at most {MAX_SCOPE_LEN} bytes"
        )));
    }
    let valid_char = |c: char| c == '\x21' || ('\x23'..='\x5b').contains(&c) || ('\x5d'..='\x7e').contains(&c);
    let mut parts: Vec<&str> = raw.split(' ').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| !p.chars().all(valid_char)) {
        return Err(Error::InvalidRequest(
            "scope contains characters RFC 6749 does not allow".into(),
        ));
    }
    parts.dedup();
    Ok((!parts.is_empty()).then(|| parts.join(" ")))
}

/// What a service client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// `POST /oauth/introspect`.
    Introspect,
    /// The revocation feed (`/v1/revocations*`).
    Feed,
    /// `/v1/admin/*`.
    Admin,
}

impl ClientRole {
    pub const ALL: [ClientRole; 3] = [ClientRole::Introspect, ClientRole::Feed, ClientRole::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientRole::Introspect => "introspect",
            ClientRole::Feed => "feed",
            ClientRole::Admin => "admin",
        }
    }

    fn parse(raw: &str) -> Option<ClientRole> {
        ClientRole::ALL.into_iter().find(|r| r.as_str() == raw)
    }
}

/// `introspect+feed`: roles, when every part names one.
fn parse_roles(raw: &str) -> Option<Vec<ClientRole>> {
    raw.split('+').map(ClientRole::parse).collect()
}

/// One service client from `AUTHD_CLIENTS`; only a hash of its secret is kept.
#[derive(Clone)]
pub struct ServiceClient {
    pub id: String,
    secret_hash: [u8; 32],
    roles: Vec<ClientRole>,
}

impl ServiceClient {
    pub fn has_role(&self, role: ClientRole) -> bool {
        self.roles.contains(&role)
    }
}

/// The service clients allowed to introspect and to use the admin API.
#[derive(Clone, Default)]
pub struct ClientCredentials(Vec<ServiceClient>);

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl ClientCredentials {
    /// Checks a presented id and secret. Every configured client is compared,
    /// in constant time over hashes, so neither timing nor length leaks which
    /// part was wrong.
    pub fn verify(&self, id: &str, secret: &str) -> Option<&str> {
        self.verify_client(id, secret).map(|c| c.id.as_str())
    }

    /// Like [`ClientCredentials::verify`], returning the client with its roles.
    pub fn verify_client(&self, id: &str, secret: &str) -> Option<&ServiceClient> {
        let presented = sha256(secret.as_bytes());
        let mut found = None;
        for client in &self.0 {
            let id_ok = sha256(client.id.as_bytes()).ct_eq(&sha256(id.as_bytes()));
            let secret_ok = client.secret_hash.ct_eq(&presented);
            if bool::from(id_ok & secret_ok) {
                found = Some(client);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::str::FromStr for ClientCredentials {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut clients = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((id, rest)) = entry.split_once(':') else {
                return Err("each client must be written id:secret or id:secret:role+role".into());
            };
            // `id:secret:introspect+feed+admin`; without roles a client has
            // every role, so configurations from before roles keep working.
            let (secret, roles) = match rest.rsplit_once(':') {
                Some((secret, roles)) => match parse_roles(roles) {
                    Some(roles) => (secret, roles),
                    None => (rest, ClientRole::ALL.to_vec()),
                },
                None => (rest, ClientRole::ALL.to_vec()),
            };
            if id.is_empty() || secret.is_empty() {
                return Err("client id and secret must not be empty".into());
            }
            if secret.len() < 16 {
                return Err(format!("the secret of client `{id}` must be at least 16 characters"));
            }
            clients.push(ServiceClient {
                id: id.to_string(),
                secret_hash: sha256(secret.as_bytes()),
                roles,
            });
        }
        Ok(ClientCredentials(clients))
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|c| format!("{}:***", c.id)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_needs_exactly_one_at_with_both_sides() {
        assert!(Email::parse("  Ann@Example.org ").is_ok());
        assert_eq!(
            Email::parse(" Ann@Example.org").map(|e| e.normalized()).ok(),
            Some("ann@example.org".into())
        );
        for bad in ["", "ann", "@x", "ann@", "a@b@c", "a b@c", "   "] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn password_bounds() {
        assert!(Password::new_checked("1234567".into()).is_err());
        assert!(Password::new_checked("12345678".into()).is_err(), "common");
        assert!(Password::new_checked("Password1".into()).is_err(), "common, any case");
        assert!(Password::new_checked("correct horse".into()).is_ok());
        assert!(Password::new_checked("x".repeat(1025)).is_err());
        assert!(Password::presented("x".repeat(1025)).is_none());
        assert_eq!(
            format!("{:?}", Password::presented("secret".into())),
            "Some(Password(***))"
        );
    }

    #[test]
    fn refresh_tokens_are_256_bits_and_parse_strictly() {
        let rng = SystemRandom::new();
        let t = RefreshToken::generate(&rng).unwrap();
        assert_eq!(t.expose().len(), 43);
        assert!(RefreshToken::parse(t.expose()).is_some());
        assert!(RefreshToken::parse("short").is_none());
        assert!(RefreshToken::parse(&format!("{}=", t.expose())).is_none());
        assert_ne!(t, RefreshToken::generate(&rng).unwrap());
    }

    #[test]
    fn signed_refresh_tokens_carry_session_and_generation_under_the_key() {
        let rng = SystemRandom::new();
        let key = RefreshKey::from_secret(b"one secret");
        let sid = SessionId::new();
        let t = RefreshToken::mint(&rng, &key, sid, 7).unwrap();
        let parsed = RefreshToken::parse(t.expose()).unwrap();
        assert!(!parsed.is_legacy());
        assert_eq!(
            parsed.claims(&key),
            Some(RefreshClaims {
                session: sid,
                generation: 7
            })
        );
        assert_eq!(parsed.claims(&RefreshKey::from_secret(b"another secret")), None);
        assert_ne!(t, RefreshToken::mint(&rng, &key, sid, 7).unwrap());
        // A flipped bit anywhere breaks the tag.
        let mut bytes = URL_SAFE_NO_PAD.decode(t.expose()).unwrap();
        bytes[20] ^= 1;
        let forged = RefreshToken::parse(&URL_SAFE_NO_PAD.encode(bytes)).unwrap();
        assert_eq!(forged.claims(&key), None);
        assert!(RefreshToken::generate(&rng).unwrap().is_legacy());
    }

    #[test]
    fn clients_verify_only_exact_pairs() {
        let c: ClientCredentials = "svc:0123456789abcdef,other:fedcba9876543210".parse().unwrap();
        assert_eq!(c.verify("svc", "0123456789abcdef"), Some("svc"));
        assert_eq!(c.verify("svc", "fedcba9876543210"), None);
        assert_eq!(c.verify("nobody", "0123456789abcdef"), None);
        assert!("svc".parse::<ClientCredentials>().is_err());
        assert!("svc:short".parse::<ClientCredentials>().is_err());
    }

    #[test]
    fn scope_is_normalised() {
        assert_eq!(parse_scope("  read  write ").unwrap(), Some("read write".into()));
        assert_eq!(parse_scope("").unwrap(), None);
        assert!(parse_scope("a\"b").is_err());
    }
}

/// Why a session was revoked: the `reason` of its `session_revoked` event
/// and of the revocation feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// `POST /v1/logout`.
    Logout,
    /// `DELETE /v1/sessions/{id}` by the session's own user.
    User,
    /// `POST /v1/sessions/revoke-others`.
    RevokeOthers,
    /// `POST /v1/me/password` revokes every other session.
    PasswordChanged,
    /// A spent refresh token came back: one of its holders is a thief.
    RefreshTokenReuse,
    /// The admin API revoked every session of a user.
    Admin,
    /// RFC 7009 `POST /oauth/revoke`.
    TokenRevoked,
}

impl RevokeReason {
    pub const ALL: [RevokeReason; 7] = [
        RevokeReason::Logout,
        RevokeReason::User,
        RevokeReason::RevokeOthers,
        RevokeReason::PasswordChanged,
        RevokeReason::RefreshTokenReuse,
        RevokeReason::Admin,
        RevokeReason::TokenRevoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::User => "user",
            RevokeReason::RevokeOthers => "revoke_others",
            RevokeReason::PasswordChanged => "password_changed",
            RevokeReason::RefreshTokenReuse => "refresh_token_reuse",
            RevokeReason::Admin => "admin",
            RevokeReason::TokenRevoked => "token_revoked",
        }
    }

    /// The reason stored by an older version, or by this one.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "revoked_by_user" => Some(RevokeReason::User),
            "revoked_others" => Some(RevokeReason::RevokeOthers),
            "admin_revoked" => Some(RevokeReason::Admin),
            _ => RevokeReason::ALL.into_iter().find(|r| r.as_str() == raw),
        }
    }
}

impl fmt::Display for RevokeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who ended a session: the user themself, a service client, or authd.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Actor {
    User,
    Client(String),
    #[default]
    System,
}

impl Actor {
    pub fn parse(raw: &str) -> Self {
        match raw {
            "user" => Actor::User,
            "system" => Actor::System,
            other => match other.strip_prefix("client:") {
                Some(id) => Actor::Client(id.to_string()),
                None => Actor::System,
            },
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User => f.write_str("user"),
            Actor::Client(id) => write!(f, "client:{id}"),
            Actor::System => f.write_str("system"),
        }
    }
}

/// A signing key's algorithm: the `kid` pins it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    EdDSA,
    ES256,
    RS256,
}

impl KeyAlg {
    pub(crate) fn slug(self) -> &'static str {
        match self {
            KeyAlg::EdDSA => "eddsa",
            KeyAlg::ES256 => "es256",
            KeyAlg::RS256 => "rs256",
        }
    }

    pub(crate) fn from_slug(s: &str) -> Option<Self> {
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
