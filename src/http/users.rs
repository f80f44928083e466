//! Accounts: registration, the current user, password change.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::{AppJson, AuthUser, ClientInfo};
use super::AppState;
use crate::error::Result;
use crate::session::account::UserView;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(register))
        .route("/v1/me", get(me))
        .route("/v1/me/password", post(change_password))
}

#[derive(Deserialize)]
struct Registration {
    email: String,
    password: String,
}

async fn register(
    State(state): State<AppState>,
    info: ClientInfo,
    AppJson(req): AppJson<Registration>,
) -> Result<impl IntoResponse> {
    state.register_limit.check(info.ip_addr())?;
    let user = state
        .sessions
        .register(&req.email, req.password, &info.as_user())
        .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

async fn me(State(state): State<AppState>, AuthUser(auth): AuthUser) -> Result<Json<UserView>> {
    Ok(Json(state.sessions.user(auth.user_id).await?))
}

#[derive(Deserialize)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    AuthUser(auth): AuthUser,
    info: ClientInfo,
    AppJson(req): AppJson<PasswordChange>,
) -> Result<StatusCode> {
    state
        .sessions
        .change_password(
            auth.user_id,
            auth.session_id,
            req.current_password,
            req.new_password,
            &info.as_user(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
