use base64::Engine;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, SVC_ID, SVC_SECRET};

both_backends!(
    introspection_requires_a_service_client,
    introspection_describes_live_tokens
);

async fn introspection_requires_a_service_client(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, tokens) = app.user_with_session().await;
    let send = |auth: Option<String>| {
        let mut req = app
            .http
            .post(app.url("/oauth/introspect"))
            .form(&[("token", tokens.access.as_str())]);
        if let Some(value) = auth {
            req = req.header("authorization", value);
        }
        req.send()
    };
    let basic = |id: &str, secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    for auth in [
        None,
        Some(basic(SVC_ID, "wrong-secret-0123456789")),
        Some(basic("nobody", SVC_SECRET)),
        Some(format!("Bearer {}", tokens.access)),
        Some("Basic !!!".to_string()),
    ] {
        let r = send(auth.clone()).await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    }
    // RFC 6749 §2.3.1: a strict client form-encodes the secret first ("-" as %2D).
    let r = send(Some(basic(SVC_ID, &SVC_SECRET.replace('-', "%2D"))))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn introspection_describes_live_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, tokens) = app.user_with_session().await;
    let claims = crate::helpers::jwt_part(&tokens.access, 1);
    let access = app.introspect(&tokens.access).await;
    assert_eq!(access["active"], true);
    assert_eq!(access["sub"], claims["sub"]);
    assert_eq!(access["sid"], tokens.raw["session_id"]);
    assert_eq!(access["exp"], claims["exp"]);
    assert_eq!(access["iat"], claims["iat"]);
    assert_eq!(access["client_id"], "web");
    assert_eq!(access["token_type"], "Bearer");
    let refresh = app.introspect(&tokens.refresh).await;
    assert_eq!(refresh["active"], true);
    assert_eq!(refresh["sid"], tokens.raw["session_id"]);
    assert_eq!(refresh["token_type"], "refresh_token");
    let oversized = app
        .http
        .post(app.url("/oauth/introspect"))
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .form(&[("token", "x".repeat(9000))])
        .send()
        .await
        .unwrap();
    assert_eq!(oversized.status(), 400, "over-long tokens are bad requests");
    for junk in ["", "junk", "a.b.c", &"x".repeat(8000)] {
        assert_eq!(app.introspect(junk).await, json!({"active": false}), "{junk:.20}");
    }
    // JSON bodies work too.
    let r = app
        .http
        .post(app.url("/oauth/introspect"))
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .json(&json!({"token": tokens.access}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
}
