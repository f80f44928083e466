//! Verify [authd](https://github.com/) access tokens in a downstream
//! service: offline, from authd's JWKS, and with its sessions' revocations
//! followed in real time, so a logout is refused here within a second
//! instead of when the token expires.
//!
//! ```no_run
//! use authd_verify::{Authenticated, Verifier};
//! use axum::{routing::get, Router};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder("https://auth.example.org")
//!     .audience("my-api")
//!     .client_credentials("my-api", std::env::var("AUTHD_CLIENT_SECRET")?)
//!     .build()
//!     .await?;
//! let app = Router::new()
//!     .route("/hello", get(|Authenticated(claims): Authenticated| async move {
//!         format!("hello {}", claims.sub)
//!     }))
//!     .with_state(verifier);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```
//!
//! What [`Verifier::verify`] checks, in order:
//! - the token's signature, under the key of the JWKS its `kid` names and
//!   that key's algorithm only (`alg: none`, HMAC and a mismatched `alg` are
//!   refused; `jku`/`x5u`/`jwk` headers are ignored). The JWKS comes from
//!   the issuer's RFC 8414 metadata, is refreshed in the background, and is
//!   refetched at once (at most once per second) for an unknown `kid`;
//! - `typ: at+jwt`, `iss`, `aud`, the required claims (`exp`, `iat`, `nbf`,
//!   `sub`, `sid`), and `exp`/`nbf`/`iat` against the clock with 2 s skew;
//! - the session: a token whose `sid` is in the revocation set is refused.
//!   The set is authd's `GET /v1/revocations` snapshot, then its
//!   `/v1/revocations/stream` Server-Sent Events, resumed by cursor after
//!   any disconnect. When the feed has been silent (no event, no heartbeat)
//!   for more than `max_staleness` (10 s), `verify` fails closed with
//!   [`VerifyError::RevocationFeedStale`], or asks authd's introspection if
//!   [`VerifierBuilder::introspection_fallback`] is on.
//!
//! A token seen before costs no signature check (the time and session
//! checks run on every call). Metrics are recorded through the `metrics`
//! facade under the names in [`metrics`](crate::metrics).

// A library for downstream services: the system clock is the clock there
// (tokens are checked against real time).
#![allow(clippy::disallowed_methods)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod cache;
mod claims;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod jwks;
mod layer;
pub mod metrics;
mod revocation;
mod verifier;

pub use claims::Claims;
pub use error::{BuildError, VerifyError};
#[cfg(feature = "axum")]
pub use extract::{Authenticated, Refused};
pub use layer::{bearer_token, refusal, RequireToken, RequireTokenLayer};
pub use revocation::Revocation;
pub use verifier::{Verifier, VerifierBuilder};
