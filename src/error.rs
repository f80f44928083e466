//! The one error type and its HTTP mapping.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RFC 6749 `invalid_request`: malformed or missing parameters.
    #[error("{0}")]
    InvalidRequest(String),
    /// RFC 6749 `invalid_grant`: bad credentials or refresh token.
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("grant_type must be password or refresh_token")]
    UnsupportedGrantType,
    /// Service client authentication failed.
    #[error("client authentication failed")]
    InvalidClient,
    /// The body's content type is not one the endpoint reads.
    #[error("body must be {0}")]
    UnsupportedMediaType(&'static str),
    #[error("request body is too large")]
    PayloadTooLarge,
    /// A field failed validation; the code names which kind.
    #[error("{message}")]
    Validation { code: &'static str, message: String },
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Missing, malformed, expired or revoked bearer token.
    #[error("{0}")]
    InvalidToken(&'static str),
    #[error("current password is wrong")]
    WrongPassword,
    /// An authenticated service client without the role this endpoint needs.
    #[error("this client lacks the `{0}` role")]
    MissingRole(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// What the request names existed once but is gone for good (a feed
    /// cursor older than the event retention).
    #[error("{0}")]
    Gone(&'static str),
    /// Too many attempts; retry after this many seconds.
    #[error("too many attempts; retry in {0} s")]
    RateLimited(u64),
    /// A store cannot serve now; the client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// The password hashing pool is saturated (queue full, or no worker in
    /// time): a 503 like [`Error::Unavailable`], whose answer says it is load,
    /// not a store, so the client knows a retry soon is worth it.
    #[error("{0}")]
    HashingBusy(&'static str),
    /// A bug or an impossible state; logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: String,
}

impl Error {
    pub fn validation(code: &'static str, message: impl Into<String>) -> Self {
        Error::Validation {
            code,
            message: message.into(),
        }
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidRequest(_)
            | Error::InvalidGrant(_)
            | Error::UnsupportedGrantType
            | Error::Validation { .. } => StatusCode::BAD_REQUEST,
            Error::InvalidClient | Error::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::EmailTaken => StatusCode::CONFLICT,
            Error::WrongPassword | Error::MissingRole(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Gone(_) => StatusCode::GONE,
            Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) | Error::HashingBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) | Error::UnsupportedMediaType(_) => "invalid_request",
            Error::InvalidGrant(_) => "invalid_grant",
            Error::UnsupportedGrantType => "unsupported_grant_type",
            Error::InvalidClient => "invalid_client",
            Error::PayloadTooLarge => "payload_too_large",
            Error::Validation { code, .. } => code,
            Error::EmailTaken => "email_taken",
            Error::InvalidToken(_) => "invalid_token",
            Error::WrongPassword => "invalid_password",
            Error::MissingRole(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Gone(_) => "cursor_expired",
            Error::RateLimited(_) => "too_many_requests",
            Error::Unavailable(_) | Error::HashingBusy(_) => "temporarily_unavailable",
            Error::Internal(_) => "server_error",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let description = match &self {
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "the server failed to handle this request".to_string()
            }
            Error::Unavailable(detail) => {
                tracing::warn!(error = %detail, "answering 503");
                "a backing store is unavailable; retry shortly".to_string()
            }
            Error::HashingBusy(detail) => {
                tracing::warn!(error = %detail, "answering 503");
                "too many password checks in progress; retry shortly".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.code(),
                error_description: description,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            Error::InvalidClient => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"authd\""),
                );
            }
            Error::InvalidToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"authd\", error=\"invalid_token\""),
                );
            }
            Error::Unavailable(_) | Error::HashingBusy(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Error::RateLimited(seconds) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*seconds));
            }
            _ => {}
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(error: Error) -> (StatusCode, Option<HeaderValue>, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let retry = response.headers().get(header::RETRY_AFTER).cloned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, retry, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn busy_hashing_and_unavailable_stores_are_told_apart_by_variant() {
        let (status, retry, body) = answer(Error::HashingBusy("password hashing queue is full")).await;
        assert_eq!(
            (status, retry),
            (StatusCode::SERVICE_UNAVAILABLE, Some(HeaderValue::from_static("1")))
        );
        assert_eq!(body["error"], "temporarily_unavailable");
        assert_eq!(
            body["error_description"],
            "too many password checks in progress; retry shortly"
        );
        // A store whose message happens to mention hashing is still a store.
        let (status, _, body) = answer(Error::Unavailable("password hashing table locked".into())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body["error_description"],
            "a backing store is unavailable; retry shortly"
        );
    }
}
