//! The axum extractor.

use axum::extract::{FromRef, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::header::WWW_AUTHENTICATE;
use http::request::Parts;

use crate::layer::{bearer_token, refusal};
use crate::{Claims, Verifier, VerifyError};

/// The verified claims of the request's bearer token. Takes them from
/// [`crate::RequireTokenLayer`] when it ran, else verifies with the
/// [`Verifier`] in the router state (`Verifier: FromRef<S>`).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

/// Why [`Authenticated`] refused: answers like the layer (401 with
/// `WWW-Authenticate: Bearer error="invalid_token"`, or 503).
#[derive(Debug)]
pub struct Refused(pub Option<VerifyError>);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, challenge) = refusal(self.0.as_ref());
        let mut response = status.into_response();
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        response
    }
}

impl<S> FromRequestParts<S> for Authenticated
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(claims) = parts.extensions.get::<Claims>() {
            return Ok(Authenticated(claims.clone()));
        }
        let token = bearer_token(&parts.headers).ok_or(Refused(None))?;
        let verifier = Verifier::from_ref(state);
        verifier
            .verify(token)
            .await
            .map(Authenticated)
            .map_err(|e| Refused(Some(e)))
    }
}
