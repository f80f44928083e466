use std::fmt;

/// Why a token was refused, or why it could not be checked.
///
/// Token problems ([`VerifyError::is_token_problem`]) mean "this token is
/// not good": answer 401. The others mean "authd cannot be consulted right
/// now": the verifier fails closed, answer 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a compact JWS, too long, or undecodable header or claims.
    #[error("malformed token")]
    Malformed,
    /// The header's `typ` is not `at+jwt` (RFC 9068).
    #[error("not an access token (typ must be at+jwt)")]
    WrongType,
    /// No published key has this `kid` (after a refetch, rate permitting).
    #[error("unknown signing key")]
    UnknownKey,
    /// The header's `alg` is not the algorithm of the key its `kid` names.
    #[error("algorithm does not match the key")]
    WrongAlgorithm,
    /// Bad signature, wrong `iss`/`aud`, or a required claim missing.
    #[error("invalid signature or claims")]
    Invalid,
    /// `exp` has passed (beyond the clock skew).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the clock skew).
    #[error("token not yet valid")]
    NotYetValid,
    /// The token's session was revoked.
    #[error("session revoked")]
    SessionRevoked,
    /// The revocation feed has been silent longer than `max_staleness` and
    /// no introspection fallback is configured (or it failed too).
    #[error("revocation feed stale; refusing to trust tokens")]
    RevocationFeedStale,
    /// The JWKS or introspection endpoint could not be reached.
    #[error("authd unavailable: {0}")]
    Unavailable(String),
}

impl VerifyError {
    /// True when the token itself is at fault (401), false when the
    /// verifier could not decide (503).
    pub fn is_token_problem(&self) -> bool {
        !matches!(self, VerifyError::RevocationFeedStale | VerifyError::Unavailable(_))
    }
}

/// Why [`crate::VerifierBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The RFC 8414 metadata or the JWKS could not be fetched or parsed.
    #[error("discovery failed: {0}")]
    Discovery(String),
    /// The metadata's `issuer` differs from the one configured (RFC 8414 §3.3).
    #[error("metadata issuer {found:?} is not the configured issuer {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    /// An option is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
}

pub(crate) struct Redacted<'a>(pub &'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}
