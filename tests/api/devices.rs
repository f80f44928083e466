//! Device management: renaming sessions, and what the User-Agent says.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, Tokens, SVC_ID, SVC_SECRET};

const CHROME_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1";

async fn rename(app: &TestApp, tokens: &Tokens, id: &str, body: Value) -> reqwest::Response {
    app.http
        .patch(app.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(&tokens.access)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn entry(app: &TestApp, tokens: &Tokens, id: &str) -> Value {
    let list: Value = app
        .get_bearer("/v1/sessions", &tokens.access)
        .await
        .json()
        .await
        .unwrap();
    list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn login_as(app: &TestApp, email: &str, user_agent: Option<&str>) -> Tokens {
    let mut req = app.http.post(app.url("/oauth/token")).form(&[
        ("grant_type", "password"),
        ("username", email),
        ("password", crate::helpers::PASSWORD),
    ]);
    if let Some(ua) = user_agent {
        req = req.header("user-agent", ua);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap().into()
}

both_backends!(
    rename_returns_the_entry_and_survives_refreshes,
    bad_names_are_refused_and_change_nothing,
    other_users_sessions_are_not_found,
    entries_carry_browser_os_and_device_type,
);

async fn rename_returns_the_entry_and_survives_refreshes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (email, a) = app.user_with_session().await;
    let b = app.login(&email).await;

    let r = rename(&app, &a, &b.session_id, json!({"device_name": "  Küchen-iPad 🍳  "})).await;
    assert_eq!(r.status(), 200);
    let renamed: Value = r.json().await.unwrap();
    assert_eq!(renamed["device_name"], "Küchen-iPad 🍳");
    assert_eq!(renamed["current"], false);
    assert_eq!(
        renamed,
        entry(&app, &a, &b.session_id).await,
        "the same shape as the list's entry"
    );

    // The current session too; exactly 64 scalar values is allowed.
    let long = "é".repeat(64);
    let r = rename(&app, &a, &a.session_id, json!({ "device_name": long })).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["current"], true);

    // Refreshing keeps the name.
    let r = app.refresh(&b.refresh).await;
    assert_eq!(r.status(), 200);
    let b2: Tokens = r.json::<Value>().await.unwrap().into();
    assert_eq!(entry(&app, &b2, &b.session_id).await["device_name"], "Küchen-iPad 🍳");
    assert_eq!(entry(&app, &b2, &a.session_id).await["device_name"], long.as_str());

    // Each rename is in the user's audit trail.
    let user_id = app.get_bearer("/v1/me", &a.access).await.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let events: Value = app
        .http
        .get(app.url(&format!("/v1/admin/users/{user_id}/events")))
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let renamed: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "session_renamed")
        .map(|e| e["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(renamed.len(), 2, "{events}");
    assert!(renamed.contains(&b.session_id.as_str()) && renamed.contains(&a.session_id.as_str()));
}

async fn bad_names_are_refused_and_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, a) = app.user_with_session().await;
    let before = entry(&app, &a, &a.session_id).await;
    for body in [
        json!({"device_name": ""}),
        json!({"device_name": "   "}),
        json!({"device_name": "x".repeat(65)}),
        json!({"device_name": "é".repeat(65)}),
        json!({"device_name": "tab\tinside"}),
        json!({"device_name": "new\nline"}),
        json!({"device_name": "nul\u{0}"}),
        json!({"device_name": "del\u{7f}"}),
        json!({"device_name": "c1\u{9b}"}),
        json!({"device_name": 42}),
        json!({"device_name": null}),
        json!({}),
        json!(["device_name"]),
    ] {
        let r = rename(&app, &a, &a.session_id, body.clone()).await;
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request", "{body}");
    }
    let r = app
        .http
        .patch(app.url(&format!("/v1/sessions/{}", a.session_id)))
        .bearer_auth(&a.access)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(entry(&app, &a, &a.session_id).await, before, "nothing changed");

    // Without a token: 401, and still nothing changed.
    let r = app
        .http
        .patch(app.url(&format!("/v1/sessions/{}", a.session_id)))
        .json(&json!({"device_name": "sneaky"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(entry(&app, &a, &a.session_id).await, before);
}

async fn other_users_sessions_are_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, mine) = app.user_with_session().await;
    let (email, theirs) = app.user_with_session().await;
    let before = entry(&app, &theirs, &theirs.session_id).await;
    let r = rename(&app, &mine, &theirs.session_id, json!({"device_name": "pwned"})).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
    assert_eq!(entry(&app, &theirs, &theirs.session_id).await, before);

    // Unknown, malformed and ended sessions: 404 as well.
    let unknown = uuid::Uuid::now_v7().to_string();
    for id in [unknown.as_str(), "not-a-uuid"] {
        let r = rename(&app, &mine, id, json!({"device_name": "x"})).await;
        assert_eq!(r.status(), 404, "{id}");
    }
    let ended = app.login(&email).await;
    assert_eq!(app.post_bearer("/v1/logout", &ended.access).await.status(), 204);
    let r = rename(&app, &theirs, &ended.session_id, json!({"device_name": "x"})).await;
    assert_eq!(r.status(), 404);
}

async fn entries_carry_browser_os_and_device_type(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (email, plain) = app.user_with_session().await;
    let chrome = login_as(&app, &email, Some(CHROME_WINDOWS)).await;
    let ipad = login_as(&app, &email, Some(IPAD)).await;

    let c = entry(&app, &plain, &chrome.session_id).await;
    assert_eq!(
        (c["browser"].as_str(), c["os"].as_str()),
        (Some("Chrome 131"), Some("Windows 10"))
    );
    assert_eq!(c["device_type"], "desktop");
    let i = entry(&app, &plain, &ipad.session_id).await;
    assert_eq!(i["device_type"], "tablet");
    assert_eq!(i["os"], "iOS 16.6");
    // "authd-tests/1.0" says nothing woothee knows: null, not a guess.
    let p = entry(&app, &plain, &plain.session_id).await;
    for key in ["browser", "os", "device_type"] {
        assert!(p.as_object().unwrap().contains_key(key), "{key} present");
        assert_eq!(p[key], Value::Null, "{key}");
    }

    // The admin list has the same fields.
    let user_id = app
        .get_bearer("/v1/me", &plain.access)
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let admin: Value = app
        .http
        .get(app.url(&format!("/v1/admin/users/{user_id}/sessions")))
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a = admin["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == chrome.session_id.as_str())
        .unwrap();
    assert_eq!(a["browser"], "Chrome 131");
    assert_eq!(a["device_type"], "desktop");
    assert!(a.get("current").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_page_loads_without_login_under_its_own_csp() {
    let app = TestApp::spawn(Backend::Embedded).await;
    for (path, kind) in [
        ("/account", "text/html"),
        ("/account/account.js", "text/javascript"),
        ("/account/account.css", "text/css"),
        ("/account/authd.js", "text/javascript"),
    ] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{path}: {csp}"
        );
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let body = r.text().await.unwrap();
        if path == "/account" {
            // One module script, loaded by URL; nothing inline.
            assert_eq!(body.matches("<script").count(), 1);
            assert!(body.contains(r#"<script type="module" src="/account/account.js"></script>"#));
            assert!(
                !body.contains("onclick=") && !body.contains("onsubmit="),
                "no inline handlers"
            );
            assert!(!body.contains("style="), "no inline styles");
        }
    }
    // The API keeps its stricter policy.
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
}
