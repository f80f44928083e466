//! The account page: a small device-management UI built on the client kit,
//! its files embedded in the binary.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

/// The page's own policy instead of the API's `default-src 'none'`: its
/// scripts, styles and API calls come from this origin only, and nothing inline runs.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../../clients/js/account/index.html");
const SCRIPT: &str = include_str!("../../clients/js/account/account.js");
const STYLE: &str = include_str!("../../clients/js/account/account.css");
/// The client kit's compiled ES module, as `npm run build` writes it.
const KIT: &str = include_str!("../../clients/js/dist/authd.js");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/account", get(|| async { asset(INDEX, "text/html; charset=utf-8") }))
        .route(
            "/account/account.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/account/account.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/account/authd.js",
            get(|| async { asset(KIT, "text/javascript; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    // The files change only with the binary; revalidating costs little and
    // an upgrade is seen at once.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
