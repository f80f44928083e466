//! Cookie mode for browser frontends: the refresh token travels only in an
//! `HttpOnly; Secure; SameSite=Strict; Path=/oauth` cookie, so page scripts
//! never hold it. Its name carries the `__Secure-` prefix (browsers accept it
//! only from a secure origin, with `Secure`). A sibling subdomain can still
//! plant a cookie of the same name for the parent domain; the browser then
//! sends both, and a request carrying two refresh cookies is refused (400,
//! both cleared) rather than letting either win. The cookie is cleared on
//! logout and on a failed refresh, and lives no longer than its session.
//!
//! CSRF defence: a request only uses the cookie when it carries the custom
//! header `X-Authd-Cookie: 1`. A cross-site form or image cannot set a
//! custom header, and a cross-site script can only after a CORS preflight,
//! which only the `AUTHD_CORS_ORIGINS` allow-list passes.

use std::time::Duration;

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

use crate::error::{Error, Result};

pub const COOKIE_NAME: &str = "__Secure-authd_refresh";
pub const OPT_IN_HEADER: &str = "x-authd-cookie";

/// Whether this request asked for cookie mode; any value but `1` is a client error.
pub fn requested(headers: &HeaderMap) -> Result<bool> {
    match headers.get(OPT_IN_HEADER) {
        None => Ok(false),
        Some(v) if v.as_bytes() == b"1" => Ok(true),
        Some(_) => Err(Error::InvalidRequest("X-Authd-Cookie must be 1 when present".into())),
    }
}

/// The refresh token from the `Cookie` header, if any; two or more refresh
/// cookies (one may be planted) are a client error.
pub fn refresh_token(headers: &HeaderMap) -> Result<Option<String>> {
    let mut found = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_string());
    let first = found.next();
    if found.next().is_some() {
        return Err(Error::InvalidRequest(
            "more than one refresh cookie; sign in again".into(),
        ));
    }
    Ok(first)
}

pub fn set(token: &str, max_age: Duration) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={token}; HttpOnly; Secure; SameSite=Strict; Path=/oauth; Max-Age={}",
        max_age.as_secs()
    ))
    .ok()
}

pub fn clear() -> HeaderValue {
    HeaderValue::from_static("__Secure-authd_refresh=; HttpOnly; Secure; SameSite=Strict; Path=/oauth; Max-Age=0")
}

/// `response` with the refresh cookie cleared.
pub fn cleared(mut response: Response) -> Response {
    response.headers_mut().append(SET_COOKIE, clear());
    response
}
