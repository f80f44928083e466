//! A small downstream service protected by authd-verify.
//!
//! ```sh
//! AUTHD_ISSUER=http://127.0.0.1:8080 AUTHD_AUDIENCE=authd \
//! AUTHD_CLIENT_ID=svc AUTHD_CLIENT_SECRET=... \
//!   cargo run -p authd-verify --example downstream
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:3000/hello
//! ```
//!
//! `/hello` uses the extractor, everything under `/api` the layer;
//! `/metrics` shows the verifier's metrics in Prometheus text format.

use std::time::Duration;

use authd_verify::{Authenticated, Claims, RequireTokenLayer, Verifier};
use axum::routing::get;
use axum::{Extension, Router};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let verifier = Verifier::builder(env("AUTHD_ISSUER", "http://127.0.0.1:8080"))
        .audience(env("AUTHD_AUDIENCE", "authd"))
        .client_credentials(env("AUTHD_CLIENT_ID", "svc"), env("AUTHD_CLIENT_SECRET", ""))
        .max_staleness(Duration::from_secs(10))
        .build()
        .await?;

    let api = Router::new()
        .route(
            "/orders",
            get(|Extension(claims): Extension<Claims>| async move { format!("orders of {}\n", claims.sub) }),
        )
        .layer(RequireTokenLayer::new(verifier.clone()));
    let app = Router::new()
        .route(
            "/hello",
            get(|Authenticated(claims): Authenticated| async move {
                format!("hello {} (session {})\n", claims.sub, claims.sid)
            }),
        )
        .route("/metrics", get(move || std::future::ready(metrics.render())))
        .nest("/api", api)
        .with_state(verifier);

    let listener = tokio::net::TcpListener::bind(env("LISTEN", "127.0.0.1:3000")).await?;
    tracing::info!(addr = %listener.local_addr()?, "downstream listening");
    axum::serve(listener, app).await?;
    Ok(())
}
