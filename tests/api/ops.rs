use serde_json::Value;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(health_readiness_and_metrics);

async fn health_readiness_and_metrics(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["store"], "ok");
    assert_eq!(ready["cache"], "ok");
    if backend == Backend::Postgres {
        assert_eq!(ready["postgres"], "ok");
        assert_eq!(ready["redis"], "ok");
    }
    app.user_with_session().await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("authd_http_requests_total"), "{text}");
    assert!(text.contains("authd_logins_total"));
}
