use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, PASSWORD};

both_backends!(
    registration_returns_the_user,
    emails_are_unique_case_insensitively,
    bad_registrations_change_nothing,
    passwords_are_stored_as_argon2id,
    me_returns_the_user
);

async fn registration_returns_the_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .http
        .post(app.url("/v1/users"))
        .json(&json!({"email": "  Ann@Example.org ", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["email"], "Ann@Example.org");
    assert!(user["id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    assert!(time::OffsetDateTime::parse(
        user["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339
    )
    .is_ok());
    assert!(user.get("password_hash").is_none());
}

async fn emails_are_unique_case_insensitively(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("bob@example.org").await;
    let r = app
        .http
        .post(app.url("/v1/users"))
        .json(&json!({"email": "BOB@example.ORG", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "email_taken");
    // Login works with any case.
    app.login("Bob@Example.org").await;
}

async fn bad_registrations_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": PASSWORD}),
            400,
            "invalid_email",
        ),
        (json!({"email": "a@b@c", "password": PASSWORD}), 400, "invalid_email"),
        (
            json!({"email": "@example.org", "password": PASSWORD}),
            400,
            "invalid_email",
        ),
        (
            json!({"email": "x@example.org", "password": "short"}),
            400,
            "invalid_password",
        ),
        (
            json!({"email": "x@example.org", "password": "p".repeat(1025)}),
            400,
            "invalid_password",
        ),
        (
            json!({"email": format!("{}@example.org", "a".repeat(300)), "password": PASSWORD}),
            400,
            "invalid_email",
        ),
        (json!({"email": "x@example.org"}), 400, "invalid_request"),
        (json!({"email": 5, "password": PASSWORD}), 400, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let r = app.http.post(app.url("/v1/users")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), status, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], code, "{body}");
    }
    // None of them created x@example.org.
    app.register("x@example.org").await;
    let r = app
        .http
        .post(app.url("/v1/users"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
}

async fn passwords_are_stored_as_argon2id(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("hash@example.org").await;
    let user = app
        .state
        .sessions
        .store()
        .find_user_by_email("hash@example.org")
        .await
        .unwrap()
        .unwrap();
    assert!(
        user.password_hash.starts_with("$argon2id$v=19$m=1024,t=2,p=1$"),
        "{}",
        user.password_hash
    );
    assert!(!user.password_hash.contains(PASSWORD));
}

async fn me_returns_the_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let registered = app.register("me@example.org").await;
    let tokens = app.login("me@example.org").await;
    let r = app.get_bearer("/v1/me", &tokens.access).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), registered);
    let r = app.http.get(app.url("/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
}
