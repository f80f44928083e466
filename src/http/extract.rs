//! Extractors that turn requests into typed input or into our error format.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::domain::MAX_USER_AGENT_LEN;
use crate::error::Error;
use crate::session::audit::Meta;
use crate::session::Authenticated;

enum BodyKind {
    Form,
    Json,
}

fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let raw = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = raw.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-www-form-urlencoded" => Some(BodyKind::Form),
        "application/json" => Some(BodyKind::Json),
        _ => None,
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Error> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge
        } else {
            Error::InvalidRequest("could not read the request body".into())
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let malformed = |e: serde_json::Error| Error::InvalidRequest(format!("malformed JSON body: {}", short(&e)));
    // serde would read a struct from a JSON array too; bodies are objects.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
    if !value.is_object() {
        return Err(Error::InvalidRequest("JSON body must be an object".into()));
    }
    serde_json::from_value(value).map_err(malformed)
}

/// serde's messages may quote input; keep them short and single-line.
fn short(e: &dyn std::fmt::Display) -> String {
    let mut msg = e.to_string().replace(['\n', '\r'], " ");
    if msg.len() > 200 {
        let mut end = 200;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
    }
    msg
}

/// An OAuth endpoint body: form-encoded (RFC 6749) or JSON; anything else is 415.
pub struct OAuthBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OAuthBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let kind = body_kind(req.headers()).ok_or(Error::UnsupportedMediaType(
            "application/x-www-form-urlencoded or application/json",
        ))?;
        let bytes = read_body(req, state).await?;
        let value = match kind {
            BodyKind::Form => serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| Error::InvalidRequest(format!("malformed form body: {}", short(&e))))?,
            BodyKind::Json => parse_json(&bytes)?,
        };
        Ok(OAuthBody(value))
    }
}

/// A JSON body, with JSON errors in our format.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !matches!(body_kind(req.headers()), Some(BodyKind::Json)) {
            return Err(Error::UnsupportedMediaType("application/json"));
        }
        let bytes = read_body(req, state).await?;
        Ok(AppJson(parse_json(&bytes)?))
    }
}

/// Where a request came from, for the device list and the audit trail.
pub struct ClientInfo {
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

impl ClientInfo {
    pub fn as_user(&self) -> Meta {
        Meta::user(self.ip.clone(), self.user_agent.clone())
    }

    pub fn as_client(&self, client: &str) -> Meta {
        Meta::client(client, self.ip.clone(), self.user_agent.clone())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let user_agent = parts.headers.get(USER_AGENT).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(MAX_USER_AGENT_LEN)
                .collect()
        });
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        Ok(ClientInfo { user_agent, ip })
    }
}

fn bearer(parts: &Parts) -> Result<&str, Error> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(Error::InvalidToken("missing bearer token"))?
        .to_str()
        .map_err(|_| Error::InvalidToken("malformed Authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(Error::InvalidToken("missing bearer token")),
    }
}

/// A request with a valid access token whose session is live.
pub struct AuthUser(pub Authenticated);

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = bearer(parts)?;
        Ok(AuthUser(state.sessions.authenticate(token).await?))
    }
}

/// A service client from `AUTHD_CLIENTS`, by HTTP Basic (RFC 6749 §2.3.1:
/// id and secret are form-urlencoded before the Basic encoding).
pub struct ServiceClient(pub String);

fn form_decode(raw: &str) -> String {
    form_urlencoded::parse(format!("v={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl<S> FromRequestParts<S> for ServiceClient
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let value = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(Error::InvalidClient)?;
        let (scheme, encoded) = value.split_once(' ').ok_or(Error::InvalidClient)?;
        if !scheme.eq_ignore_ascii_case("basic") || encoded.len() > 1024 {
            return Err(Error::InvalidClient);
        }
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| Error::InvalidClient)?;
        let decoded = String::from_utf8(decoded).map_err(|_| Error::InvalidClient)?;
        let (id, secret) = decoded.split_once(':').ok_or(Error::InvalidClient)?;
        let (id, secret) = (form_decode(id), form_decode(secret));
        let client = state.clients.verify(&id, &secret).ok_or(Error::InvalidClient)?;
        Ok(ServiceClient(client.to_string()))
    }
}

/// The `{id}` path segment as text; a segment that is not even valid UTF-8
/// names nothing, so it is "not found" like any unknown id.
pub struct IdSegment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdSegment {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(id) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| Error::NotFound("resource"))?;
        Ok(IdSegment(id))
    }
}
