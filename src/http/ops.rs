//! Liveness, readiness and metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::store::Backend;

/// Each store gets this long to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `with_metrics`: false when `/metrics` has a listener of its own.
pub fn router(with_metrics: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if with_metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    }
}

/// Only `/metrics`, for `AUTHD_METRICS_LISTEN`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready while the durable store answers; a cache outage only degrades.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let health = state.sessions.health(PROBE_TIMEOUT).await;
    let (store_ok, cache_ok) = (health.store_ok, health.cache_ok);
    metrics::gauge!("authd_store_up").set(if store_ok { 1.0 } else { 0.0 });
    metrics::gauge!("authd_cache_up").set(if cache_ok { 1.0 } else { 0.0 });
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if store_ok { "ready" } else { "unavailable" },
        "store": if store_ok { "ok" } else { "down" },
        "cache": if cache_ok { "ok" } else { "degraded" },
    });
    if health.store == Backend::Postgres {
        body["postgres"] = body["store"].clone();
    }
    if health.cache == Backend::Redis {
        body["redis"] = body["cache"].clone();
    }
    // How far behind the session event log this process is (null: it has
    // not read it yet); past AUTHD_FOLLOWER_MAX_LAG the cache is bypassed.
    body["follower"] = json!(if health.follower_caught_up { "ok" } else { "lagging" });
    body["follower_lag_seconds"] = json!(health.follower_lag.map(|lag| lag.as_secs_f64()));
    if !store_ok {
        body["error"] = json!("temporarily_unavailable");
        body["error_description"] = json!("the durable store is not reachable");
    }
    let retry = (!store_ok).then_some([(RETRY_AFTER, "1")]);
    (status, retry, Json(body))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
