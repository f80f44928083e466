use serde_json::Value;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(hostile_requests_get_clear_4xx_answers);

async fn hostile_requests_get_clear_4xx_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, tokens) = app.user_with_session().await;
    let big = format!("grant_type=password&username={}", "a".repeat(70 * 1024));
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "payload_too_large");

    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies = [
        ("application/json", deep),
        ("application/json", "\u{0}\u{1}".into()),
        ("application/json", "[null, null]".into()),
        ("application/json", r#"["password", "ann@example.org", "x"]"#.into()),
        ("application/json", r#"{"grant_type": ["password"]}"#.into()),
        (
            "application/json",
            r#"{"grant_type": "password", "username": {"$ne": null}}"#.into(),
        ),
        ("application/x-www-form-urlencoded", "%%%%=%%%".into()),
        (
            "application/x-www-form-urlencoded",
            "grant_type=password&grant_type=refresh_token".into(),
        ),
    ];
    for (ct, body) in bodies {
        let r = app
            .http
            .post(app.url("/oauth/token"))
            .header("content-type", ct)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{status} for {body:.40}");
        let err: Value = r.json().await.unwrap();
        assert!(err["error"].is_string() && err["error_description"].is_string());
    }

    let r = app.http.get(app.url("/no/such/route")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
    let r = app.http.put(app.url("/oauth/token")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().await.is_ok());

    for header in ["Bearer", "Bearer ", "Basic abc", "bearer a b c", "Bearer \u{7f}"] {
        let r = app
            .http
            .get(app.url("/v1/me"))
            .header("authorization", header)
            .send()
            .await;
        if let Ok(r) = r {
            assert_eq!(r.status(), 401, "{header:?}");
        }
    }
    // After all that, the session is untouched.
    app.assert_session_accepted(&tokens).await;
}
