use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, PASSWORD};

both_backends!(
    login_by_form_and_json,
    wrong_password_and_unknown_user_answer_alike,
    login_bad_input_is_a_clear_4xx,
    device_names_come_from_login_or_user_agent
);

async fn login_by_form_and_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("ann@example.org").await;
    let r = app
        .token(&[
            ("grant_type", "password"),
            ("username", "ann@example.org"),
            ("password", PASSWORD),
            ("scope", "read write"),
        ])
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "read write");
    assert!(body["session_id"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    let refresh = body["refresh_token"].as_str().unwrap();
    // base64url without padding of: version, session id, generation, 256
    // random bits, and the server's HMAC-SHA256 tag.
    assert_eq!(refresh.len(), 119, "base64url without padding, 256 random bits inside");
    assert!(refresh
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));

    let r = app
        .http
        .post(app.url("/oauth/token"))
        .json(&json!({"grant_type": "password", "username": "ann@example.org", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_ne!(second["session_id"], body["session_id"], "each login is a new session");
}

async fn wrong_password_and_unknown_user_answer_alike(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("ann@example.org").await;
    let wrong = app
        .token(&[
            ("grant_type", "password"),
            ("username", "ann@example.org"),
            ("password", "wrong password!"),
        ])
        .await;
    let unknown = app
        .token(&[
            ("grant_type", "password"),
            ("username", "nobody@example.org"),
            ("password", "wrong password!"),
        ])
        .await;
    assert_eq!(wrong.status(), 400);
    assert_eq!(unknown.status(), 400);
    let (wrong, unknown): (Value, Value) = (wrong.json().await.unwrap(), unknown.json().await.unwrap());
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"], "invalid_grant");
}

async fn login_bad_input_is_a_clear_4xx(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("ann@example.org").await;
    type Case = (Vec<(&'static str, String)>, u16, &'static str);
    let cases: Vec<Case> = vec![
        (vec![("username", "ann@example.org".into())], 400, "invalid_request"),
        (
            vec![("grant_type", "client_credentials".into())],
            400,
            "unsupported_grant_type",
        ),
        (
            vec![
                ("grant_type", "password".into()),
                ("username", "ann@example.org".into()),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "password".into()),
                ("username", "ann@example.org".into()),
                ("password", "x".repeat(2000)),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "password".into()),
                ("username", "ann@example.org".into()),
                ("password", PASSWORD.into()),
                ("client_id", "bad id!".into()),
            ],
            400,
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "password".into()),
                ("username", "ann@example.org".into()),
                ("password", PASSWORD.into()),
                ("device_name", "d".repeat(101)),
            ],
            400,
            "invalid_request",
        ),
        (vec![("grant_type", "refresh_token".into())], 400, "invalid_request"),
        (
            vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", "garbage".into()),
            ],
            400,
            "invalid_grant",
        ),
    ];
    for (form, status, code) in cases {
        let r = app.http.post(app.url("/oauth/token")).form(&form).send().await.unwrap();
        assert_eq!(r.status(), status, "{form:?}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], code, "{form:?}");
    }
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .header("content-type", "text/xml")
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .body("grant_type=password")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "no content type");
    // None of that created a session.
    let tokens = app.login("ann@example.org").await;
    let list: Value = app
        .get_bearer("/v1/sessions", &tokens.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
}

async fn device_names_come_from_login_or_user_agent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("ann@example.org").await;
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .header("user-agent", firefox)
        .form(&[
            ("grant_type", "password"),
            ("username", "ann@example.org"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let by_ua: Value = r.json().await.unwrap();
    let r = app
        .token(&[
            ("grant_type", "password"),
            ("username", "ann@example.org"),
            ("password", PASSWORD),
            ("device_name", "Ann's phone"),
        ])
        .await;
    let named: Value = r.json().await.unwrap();
    let list: Value = app
        .get_bearer("/v1/sessions", named["access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    let find = |id: &Value| sessions.iter().find(|s| &s["id"] == id).unwrap().clone();
    let a = find(&by_ua["session_id"]);
    assert_eq!(a["device_name"], "Firefox on Linux");
    assert_eq!(a["user_agent"], firefox);
    assert_eq!(a["ip"], "127.0.0.1");
    assert_eq!(a["current"], false);
    let b = find(&named["session_id"]);
    assert_eq!(b["device_name"], "Ann's phone");
    assert_eq!(b["current"], true);
}
