//! OAuth-shaped endpoints: token, revoke, introspect, and discovery metadata.

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::cookie;
use super::extract::{ClientInfo, Introspector, OAuthBody};
use super::AppState;
use crate::domain::MAX_TOKEN_LEN;
use crate::error::{Error, Result};
use crate::session::audit::Meta;
use crate::session::introspect::Introspection;
use crate::session::login::LoginRequest;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/oauth/revoke", post(revoke))
        .route("/oauth/introspect", post(introspect))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/oauth-authorization-server", get(metadata))
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    device_name: Option<String>,
    scope: Option<String>,
}

fn required(value: Option<String>, name: &str) -> Result<String> {
    value.ok_or_else(|| Error::InvalidRequest(format!("{name} is required")))
}

/// A token parameter: required, and bounded like every other input.
fn token_param(value: Option<String>) -> Result<String> {
    let token = required(value, "token")?;
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::InvalidRequest(format!(
            "token must be at most {MAX_TOKEN_LEN} bytes"
        )));
    }
    Ok(token)
}

fn no_store(body: impl serde::Serialize) -> Response {
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert("pragma", HeaderValue::from_static("no-cache"));
    response
}

async fn token(
    State(state): State<AppState>,
    info: ClientInfo,
    headers: HeaderMap,
    OAuthBody(req): OAuthBody<TokenRequest>,
) -> Result<Response> {
    state.token_limit.check(info.ip_addr())?;
    let use_cookie = cookie::requested(&headers)?;
    let grant_type = required(req.grant_type, "grant_type")?;
    let answer = match grant_type.as_str() {
        "password" => {
            let login = LoginRequest {
                username: required(req.username, "username")?,
                password: required(req.password, "password")?,
                client_id: req.client_id,
                device_name: req.device_name,
                scope: req.scope,
                user_agent: info.user_agent,
                ip: info.ip,
            };
            state.sessions.login(login).await?
        }
        "refresh_token" => {
            let (presented, from_cookie) = match req.refresh_token {
                Some(token) => (token, false),
                None if use_cookie => match cookie::refresh_token(&headers) {
                    Ok(Some(token)) => (token, true),
                    Ok(None) => {
                        return Err(Error::InvalidRequest(
                            "no refresh token in the request or its cookie".into(),
                        ))
                    }
                    Err(e) => return Ok(cookie::cleared(e.into_response())),
                },
                None => return Err(Error::InvalidRequest("refresh_token is required".into())),
            };
            match state
                .sessions
                .refresh(&presented, &Meta::user(info.ip, info.user_agent))
                .await
            {
                Ok(answer) => answer,
                // A cookie that no longer works is taken away.
                Err(e @ Error::InvalidGrant(_)) if from_cookie => return Ok(cookie::cleared(e.into_response())),
                Err(e) => return Err(e),
            }
        }
        _ => return Err(Error::UnsupportedGrantType),
    };
    if !use_cookie {
        return Ok(no_store(answer));
    }
    // Cookie mode: the refresh token goes into the cookie, not the body.
    let now = state.sessions.now();
    let max_age = answer
        .session_ends_at
        .map(|ends| (ends - now).unsigned_abs())
        .unwrap_or(state.refresh_cookie_max_age)
        .min(state.refresh_cookie_max_age);
    let set_cookie = cookie::set(&answer.refresh_token, max_age)
        .ok_or_else(|| Error::Internal("refresh token is not a valid cookie value".into()))?;
    let mut body = serde_json::to_value(&answer).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(fields) = body.as_object_mut() {
        fields.remove("refresh_token");
    }
    let mut response = no_store(body);
    response.headers_mut().insert(SET_COOKIE, set_cookie);
    Ok(response)
}

#[derive(Deserialize)]
struct TokenParam {
    token: Option<String>,
    #[allow(dead_code)]
    token_type_hint: Option<String>,
}

async fn revoke(
    State(state): State<AppState>,
    info: ClientInfo,
    headers: HeaderMap,
    OAuthBody(req): OAuthBody<TokenParam>,
) -> Result<Response> {
    let use_cookie = cookie::requested(&headers)?;
    let token = match (req.token, use_cookie) {
        // Duplicates: revoke neither (one may be planted), clear both.
        (None, true) => match cookie::refresh_token(&headers) {
            Ok(token) => token,
            Err(e) => return Ok(cookie::cleared(e.into_response())),
        },
        (token, _) => Some(token_param(token)?),
    };
    if let Some(token) = token {
        state.sessions.revoke_token(&token, &info.as_user()).await?;
    }
    let mut response = no_store(json!({}));
    if use_cookie {
        response.headers_mut().insert(SET_COOKIE, cookie::clear());
    }
    Ok(response)
}

async fn introspect(
    State(state): State<AppState>,
    _client: Introspector,
    OAuthBody(req): OAuthBody<TokenParam>,
) -> Result<Response> {
    let token = token_param(req.token)?;
    let answer: Introspection = state.sessions.introspect(&token).await?;
    Ok(no_store(answer))
}

fn jwks_cache_control() -> HeaderValue {
    let max_age = crate::auth::keys::JWKS_MAX_AGE.as_secs();
    HeaderValue::from_str(&format!("public, max-age={max_age}")).unwrap_or(HeaderValue::from_static("no-cache"))
}

async fn jwks(State(state): State<AppState>) -> Response {
    let keys = state.sessions.tokens().keys().jwks(state.sessions.now());
    let mut response = Json(keys).into_response();
    response.headers_mut().insert(CACHE_CONTROL, jwks_cache_control());
    response
}

async fn metadata(State(state): State<AppState>) -> Json<serde_json::Value> {
    let issuer = state.sessions.tokens().issuer.clone();
    Json(json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
    }))
}
