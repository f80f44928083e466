//! Cookie mode for browser frontends: the refresh token travels only in an
//! `HttpOnly; Secure; SameSite=Strict; Path=/oauth` cookie, so page scripts
//! never hold it.
//!
//! CSRF defence: a request only uses the cookie when it carries the custom
//! header `X-Authd-Cookie: 1`. A cross-site form or image cannot set a
//! custom header, and a cross-site script can only after a CORS preflight,
//! which only the `AUTHD_CORS_ORIGINS` allow-list passes.

use std::time::Duration;

use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue};

use crate::error::{Error, Result};

pub const COOKIE_NAME: &str = "authd_refresh";
pub const OPT_IN_HEADER: &str = "x-authd-cookie";

/// Whether this request asked for cookie mode; any value but `1` is a client error.
pub fn requested(headers: &HeaderMap) -> Result<bool> {
    match headers.get(OPT_IN_HEADER) {
        None => Ok(false),
        Some(v) if v.as_bytes() == b"1" => Ok(true),
        Some(_) => Err(Error::InvalidRequest("X-Authd-Cookie must be 1 when present".into())),
    }
}

/// The refresh token from the `Cookie` header, if any.
pub fn refresh_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_string())
}

pub fn set(token: &str, max_age: Duration) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={token}; HttpOnly; Secure; SameSite=Strict; Path=/oauth; Max-Age={}",
        max_age.as_secs()
    ))
    .ok()
}

pub fn clear() -> HeaderValue {
    HeaderValue::from_static("authd_refresh=; HttpOnly; Secure; SameSite=Strict; Path=/oauth; Max-Age=0")
}
