//! The HTTP surface: state, router, and the layers every request passes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::domain::ClientCredentials;
use crate::error::Error;
use crate::session::SessionService;

pub mod account;
pub mod cookie;
pub mod extract;
pub mod limits;
pub mod oauth;
pub mod ops;
pub mod revocations;
pub mod serve;
pub mod sessions;
pub mod users;

/// Largest request body accepted anywhere.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares; cloned per request (by each extractor and
/// middleware that takes it), so it is one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    pub fn new(inner: AppStateInner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

pub struct AppStateInner {
    pub sessions: Arc<SessionService>,
    pub clients: Arc<ClientCredentials>,
    pub metrics: PrometheusHandle,
    pub request_timeout: Duration,
    pub token_limit: Arc<limits::FloodLimit>,
    pub register_limit: Arc<limits::FloodLimit>,
    /// `/metrics` is served on its own listener (`AUTHD_METRICS_LISTEN`), not this one.
    pub metrics_elsewhere: bool,
    /// Proxies whose forwarding headers name the client (`AUTHD_TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// Browser origins allowed by CORS (none: no CORS headers at all).
    pub cors_origins: Vec<HeaderValue>,
    /// Lifetime of the refresh cookie in cookie mode (the idle timeout).
    pub refresh_cookie_max_age: Duration,
}

fn security_headers() -> [(HeaderName, HeaderValue); 6] {
    [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
        ("strict-transport-security", "max-age=63072000; includeSubDomains"),
        ("cache-control", "no-store"),
    ]
    .map(|(name, value)| (HeaderName::from_static(name), HeaderValue::from_static(value)))
}

fn cors(origins: &[HeaderValue]) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::PATCH])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static(cookie::OPT_IN_HEADER),
        ])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
}

pub fn router(state: AppState) -> Router {
    let x_request_id = HeaderName::from_static("x-request-id");
    let mut router = Router::new()
        .merge(oauth::router())
        .merge(users::router())
        .merge(sessions::router())
        .merge(ops::router(!state.metrics_elsewhere))
        .merge(revocations::router())
        .merge(account::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), bounded_and_counted))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            Error::Internal("handler panicked".into()).into_response()
        }));
    // Every response, errors included, carries the security headers; a
    // handler's own Cache-Control (the JWKS is cacheable) wins.
    for (name, value) in security_headers() {
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, value));
    }
    if !state.cors_origins.is_empty() {
        router = router.layer(cors(&state.cors_origins));
    }
    router
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let request_id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            // The path only: never the query string or headers, which may carry secrets.
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> Error {
    Error::NotFound("route")
}

async fn method_not_allowed() -> Response {
    let mut response = Error::InvalidRequest("method not allowed on this route".into()).into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Bounds every request in time (answering 503, not hanging) and records metrics.
#[allow(clippy::disallowed_methods)] // a duration for the histogram, not a time of day
async fn bounded_and_counted(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => Error::Unavailable("request timed out".into()).into_response(),
    };
    let status = response.status().as_u16().to_string();
    metrics::counter!("authd_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("authd_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
