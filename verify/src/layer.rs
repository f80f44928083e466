//! A tower layer that admits only requests with a valid authd bearer token
//! and hands the [`Claims`] to the inner service as a request extension.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};

use crate::{Claims, Verifier, VerifyError};

/// The bearer token of an `Authorization` header (RFC 6750 §2.1).
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Status and `WWW-Authenticate` for a refused request: 401 with
/// `Bearer error="invalid_token"` for a bad token, plain `Bearer` when
/// there was none (RFC 6750 §3.1), 503 when the verifier could not decide
/// (stale feed, authd unreachable).
pub fn refusal(error: Option<&VerifyError>) -> (StatusCode, HeaderValue) {
    match error {
        None => (StatusCode::UNAUTHORIZED, HeaderValue::from_static("Bearer")),
        Some(e) if e.is_token_problem() => (
            StatusCode::UNAUTHORIZED,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        ),
        Some(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            HeaderValue::from_static(
                "Bearer error=\"invalid_token\", error_description=\"token cannot be checked now\"",
            ),
        ),
    }
}

fn refused<B: Default>(error: Option<&VerifyError>) -> Response<B> {
    let (status, challenge) = refusal(error);
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    response
}

/// [`tower_layer::Layer`] of [`RequireToken`].
#[derive(Clone, Debug)]
pub struct RequireTokenLayer {
    verifier: Verifier,
}

impl RequireTokenLayer {
    pub fn new(verifier: Verifier) -> Self {
        RequireTokenLayer { verifier }
    }
}

impl<S> tower_layer::Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireToken {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// Refuses requests without a valid token (see [`refusal`]); passes the
/// others on with their [`Claims`] in the request extensions.
#[derive(Clone, Debug)]
pub struct RequireToken<S> {
    inner: S,
    verifier: Verifier,
}

impl<S, B, ResBody> tower_service::Service<Request<B>> for RequireToken<S>
where
    S: tower_service::Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The clone that was driven ready is the one that must serve.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let Some(token) = bearer_token(request.headers()) else {
                return Ok(refused(None));
            };
            match verifier.verify(token).await {
                Ok(claims) => {
                    request.extensions_mut().insert::<Claims>(claims);
                    inner.call(request).await
                }
                Err(e) => Ok(refused(Some(&e))),
            }
        })
    }
}
