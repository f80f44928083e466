//! The device list and revocation, for users and for admin service clients.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::extract::{AdminClient, AppJson, AuthUser, ClientInfo, IdSegment};
use super::AppState;
use crate::domain::{RevokeReason, SessionId, UserId};
use crate::error::{Error, Result};
use crate::session::list::SessionView;

/// Most audit events one admin request returns.
const MAX_EVENTS: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", get(list))
        .route("/v1/sessions/{id}", delete(revoke_one).patch(rename))
        .route("/v1/sessions/revoke-others", post(revoke_others))
        .route("/v1/logout", post(logout))
        .route(
            "/v1/admin/users/{id}/sessions",
            get(admin_list).delete(admin_revoke_all),
        )
        .route("/v1/admin/users/{id}/events", get(admin_events))
}

fn parse_id<T: std::str::FromStr>(raw: &str, what: &'static str) -> Result<T> {
    raw.parse().map_err(|_| Error::NotFound(what))
}

async fn list(State(state): State<AppState>, AuthUser(auth): AuthUser) -> Result<Json<Value>> {
    let sessions = state.sessions.list_sessions(auth.user_id, auth.session_id).await?;
    Ok(Json(json!({ "sessions": sessions })))
}

async fn revoke_one(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    info: ClientInfo,
    IdSegment(id): IdSegment,
) -> Result<StatusCode> {
    let id: SessionId = parse_id(&id, "session")?;
    state
        .sessions
        .revoke_session(id, Some(auth.user_id), RevokeReason::User, &info.as_user())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct Rename {
    device_name: String,
}

async fn rename(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    info: ClientInfo,
    IdSegment(id): IdSegment,
    AppJson(req): AppJson<Rename>,
) -> Result<Json<SessionView>> {
    let id: SessionId = parse_id(&id, "session")?;
    let session = state
        .sessions
        .rename_session(auth.user_id, auth.session_id, id, &req.device_name, &info.as_user())
        .await?;
    Ok(Json(session))
}

async fn revoke_others(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    info: ClientInfo,
) -> Result<Json<Value>> {
    let revoked = state
        .sessions
        .revoke_user_sessions(
            auth.user_id,
            Some(auth.session_id),
            RevokeReason::RevokeOthers,
            &info.as_user(),
        )
        .await?;
    Ok(Json(json!({ "revoked": revoked })))
}

async fn logout(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    info: ClientInfo,
    headers: axum::http::HeaderMap,
) -> Result<Response> {
    let use_cookie = super::cookie::requested(&headers)?;
    state
        .sessions
        .revoke_session(
            auth.session_id,
            Some(auth.user_id),
            RevokeReason::Logout,
            &info.as_user(),
        )
        .await?;
    let response = StatusCode::NO_CONTENT.into_response();
    // The session is over: a browser in cookie mode drops its refresh cookie too.
    Ok(if use_cookie {
        super::cookie::cleared(response)
    } else {
        response
    })
}

async fn admin_list(
    State(state): State<AppState>,
    AdminClient(client): AdminClient,
    info: ClientInfo,
    IdSegment(id): IdSegment,
) -> Result<Json<Value>> {
    let user: UserId = parse_id(&id, "user")?;
    let sessions = state
        .sessions
        .admin_list_sessions(user, &info.as_client(&client))
        .await?;
    Ok(Json(json!({ "sessions": sessions })))
}

async fn admin_revoke_all(
    State(state): State<AppState>,
    AdminClient(client): AdminClient,
    info: ClientInfo,
    IdSegment(id): IdSegment,
) -> Result<Json<Value>> {
    let user: UserId = parse_id(&id, "user")?;
    let revoked = state.sessions.admin_revoke_all(user, &info.as_client(&client)).await?;
    Ok(Json(json!({ "revoked": revoked })))
}

async fn admin_events(
    State(state): State<AppState>,
    AdminClient(_client): AdminClient,
    IdSegment(id): IdSegment,
) -> Result<Json<Value>> {
    let user: UserId = parse_id(&id, "user")?;
    let events = state.sessions.audit_events(user, MAX_EVENTS).await?;
    Ok(Json(json!({ "events": events })))
}
