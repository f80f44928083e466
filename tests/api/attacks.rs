//! The attacks authd must survive, each asserting refusal.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{jwt_part, Backend, Options, TestApp, Tokens, PASSWORD, SVC_ID, SVC_SECRET};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// Signs `claims` with the app's own private key, as an insider-made token would be.
fn sign_with_app_key(app: &TestApp, header_extra: impl Fn(&mut jsonwebtoken::Header), claims: &Value) -> String {
    let entry = std::fs::read_dir(&app.keys_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "pem"))
        .unwrap();
    let kid = entry.file_stem().unwrap().to_str().unwrap().to_string();
    let pem = std::fs::read(&entry).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid);
    header_extra(&mut header);
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
}

async fn assert_refused(app: &TestApp, token: &str, what: &str) {
    let r = app.get_bearer("/v1/me", token).await;
    assert_eq!(r.status(), 401, "{what} accepted");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_token", "{what}");
    assert_eq!(
        app.introspect(token).await,
        json!({"active": false}),
        "{what} introspects active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_access_tokens_are_refused() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (_, tokens) = app.user_with_session().await;
    let header = jwt_part(&tokens.access, 0);
    let claims = jwt_part(&tokens.access, 1);
    let parts: Vec<&str> = tokens.access.split('.').collect();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    assert_refused(
        &app,
        &format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "at+jwt", "kid": header["kid"]})),
            parts[1]
        ),
        "alg none",
    )
    .await;
    assert_refused(&app, &format!("{}.{}", parts[0], parts[1]), "stripped signature").await;
    assert_refused(&app, &format!("{}.{}.", parts[0], parts[1]), "empty signature").await;
    let mut tampered = claims.clone();
    tampered["sub"] = json!(uuid::Uuid::now_v7().to_string());
    assert_refused(
        &app,
        &format!("{}.{}.{}", parts[0], b64(&tampered), parts[2]),
        "tampered payload",
    )
    .await;

    // HS256 keyed with the public key (the classic algorithm confusion).
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_string();
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = header["kid"].as_str().map(str::to_string);
    let confused = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(public_x.as_bytes()),
    )
    .unwrap();
    assert_refused(&app, &confused, "HS256 with the public key").await;

    // Unknown and path-like kids, and headers that point at attacker keys.
    let dir = tempfile::tempdir().unwrap();
    let kid = authd::auth::keys::generate(
        dir.path(),
        authd::auth::keys::KeyAlg::EdDSA,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let pem = std::fs::read(dir.path().join(format!("{kid}.pem"))).unwrap();
    let attacker = jsonwebtoken::EncodingKey::from_ed_pem(&pem).unwrap();
    let attacker_jwk = authd::auth::keys::KeySet::load(dir.path(), Duration::from_secs(900))
        .unwrap()
        .jwks(time::OffsetDateTime::now_utc());
    for (what, kid, jku, jwk, x5u) in [
        ("unknown kid", kid.clone(), None, None, None),
        ("path-like kid", "../../../etc/passwd".to_string(), None, None, None),
        (
            "our kid, attacker key, jku",
            header["kid"].as_str().unwrap().to_string(),
            Some("http://127.0.0.1:1/jwks.json"),
            None,
            None,
        ),
        (
            "our kid, attacker key, embedded jwk",
            header["kid"].as_str().unwrap().to_string(),
            None,
            Some(attacker_jwk["keys"][0].clone()),
            None,
        ),
        (
            "our kid, attacker key, x5u",
            header["kid"].as_str().unwrap().to_string(),
            None,
            None,
            Some("http://127.0.0.1:1/cert.pem"),
        ),
    ] {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.typ = Some("at+jwt".into());
        h.kid = Some(kid);
        h.jku = jku.map(str::to_string);
        h.x5u = x5u.map(str::to_string);
        h.jwk = jwk.map(|j| serde_json::from_value(j).unwrap());
        assert_refused(&app, &jsonwebtoken::encode(&h, &claims, &attacker).unwrap(), what).await;
    }

    // Signed with our own key, but with wrong claims or header.
    let with = |field: &str, value: Value| {
        let mut c = claims.clone();
        c[field] = value;
        c
    };
    let cases = [
        ("wrong aud", with("aud", json!("someone-else"))),
        ("wrong iss", with("iss", json!("https://evil.example"))),
        ("expired", with("exp", json!(now - 60))),
        ("future nbf", with("nbf", json!(now + 60))),
        ("future iat", with("iat", json!(now + 60))),
        ("string exp", with("exp", json!(format!("{}", now + 600)))),
        ("missing exp", {
            let mut c = claims.clone();
            c.as_object_mut().unwrap().remove("exp");
            c
        }),
        ("foreign session", with("sid", json!(uuid::Uuid::now_v7().to_string()))),
    ];
    for (what, c) in cases {
        assert_refused(&app, &sign_with_app_key(&app, |_| {}, &c), what).await;
    }
    assert_refused(
        &app,
        &sign_with_app_key(&app, |h| h.typ = Some("JWT".into()), &claims),
        "typ JWT",
    )
    .await;
    assert_refused(&app, &sign_with_app_key(&app, |h| h.typ = None, &claims), "no typ").await;
    // Within the 2 s skew an almost-valid nbf is fine: the check is not off by more.
    let ok = sign_with_app_key(&app, |_| {}, &with("nbf", json!(now + 1)));
    assert_eq!(app.get_bearer("/v1/me", &ok).await.status(), 200, "skew allowance");
}

fn locking(per_pair: u64, lockout: Duration) -> Options {
    let mut options = Options::default();
    options.limits.failures_per_account_ip = per_pair;
    options.limits.lockout = lockout;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_the_pair_temporarily_and_alike_for_unknown_accounts() {
    for backend in [Backend::Postgres, Backend::Embedded] {
        let app = TestApp::spawn_with(backend, locking(3, Duration::from_secs(2))).await;
        app.register("ann@example.org").await;
        for email in ["ann@example.org", "nobody@example.org"] {
            for _ in 0..3 {
                let r = app
                    .token(&[
                        ("grant_type", "password"),
                        ("username", email),
                        ("password", "wrong password!"),
                    ])
                    .await;
                assert_eq!(r.status(), 400);
            }
            // Locked, even with the right password; unknown accounts look the same.
            let r = app
                .token(&[("grant_type", "password"), ("username", email), ("password", PASSWORD)])
                .await;
            assert_eq!(r.status(), 429, "{email}");
            let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&retry), "Retry-After {retry}");
            assert_eq!(r.json::<Value>().await.unwrap()["error"], "too_many_requests");
        }
        // Other accounts from the same IP are not locked by one pair's failures.
        app.register("bob@example.org").await;
        app.login("bob@example.org").await;
        // The lockout ends by itself (measured on the service clock).
        app.clock.advance(Duration::from_secs(3));
        app.login("ann@example.org").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_limits_answer_429_with_retry_after() {
    let mut options = Options::default();
    options.limits.register_rate = 2;
    let app = TestApp::spawn_with(Backend::Embedded, options).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r = app
            .http
            .post(app.url("/v1/users"))
            .json(&json!({"email": format!("f{i}@example.org"), "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        statuses.push(r.status().as_u16());
    }
    assert!(statuses.contains(&201) && statuses.contains(&429), "{statuses:?}");
}

/// Wrong password vs unknown user with the production argon2 parameters:
/// the medians must be indistinguishable (the unknown user is verified
/// against a dummy hash). Noisy machine, so a generous relative bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_take_the_same_time() {
    let mut options = Options {
        argon2_m_kib: 19456,
        ..Options::default()
    };
    options.limits.failures_per_account_ip = 1000;
    options.limits.failures_per_ip = 1000;
    options.limits.failures_per_account = 1000;
    let app = TestApp::spawn_with(Backend::Postgres, options).await;
    app.register("ann@example.org").await;
    let time_of = |email: &'static str| {
        let app = &app;
        async move {
            let started = Instant::now();
            let r = app
                .token(&[
                    ("grant_type", "password"),
                    ("username", email),
                    ("password", "wrong password!"),
                ])
                .await;
            assert_eq!(r.status(), 400);
            started.elapsed()
        }
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        known.push(time_of("ann@example.org").await);
        unknown.push(time_of("nobody@example.org").await);
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[7].as_secs_f64(), unknown[7].as_secs_f64());
    assert!(k > 0.005, "argon2 did run for the known user ({k:.4} s)");
    let ratio = k / u;
    assert!(
        (0.67..1.5).contains(&ratio),
        "median wrong-password {k:.4} s vs unknown-user {u:.4} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_security_headers_and_cors_only_for_allowed_origins() {
    let app = TestApp::spawn(Backend::Embedded).await;
    for path in ["/healthz", "/v1/me", "/no/such/route"] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert_eq!(h["cache-control"], "no-store", "{path}");
    }
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/oauth/token"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let r = preflight("https://app.example.org").await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.org");
    let r = preflight("https://evil.example").await.unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_passwords_are_refused_and_hashes_upgrade_on_login() {
    let old = TestApp::spawn(Backend::Postgres).await;
    for weak in ["password", "Password1", "12345678", "qwertyuiop"] {
        let r = old
            .http
            .post(old.url("/v1/users"))
            .json(&json!({"email": "w@example.org", "password": weak}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{weak}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_password");
    }
    old.register("ann@example.org").await;
    // A second process with stronger argon2 parameters on the same database.
    let stronger = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            database_url: old.database_url.clone(),
            argon2_m_kib: 2048,
            ..Options::default()
        },
    )
    .await;
    let before = stronger
        .state
        .sessions
        .store()
        .find_user_by_email("ann@example.org")
        .await
        .unwrap()
        .unwrap();
    assert!(before.password_hash.contains("m=1024"));
    stronger.login("ann@example.org").await;
    let after = stronger
        .state
        .sessions
        .store()
        .find_user_by_email("ann@example.org")
        .await
        .unwrap()
        .unwrap();
    assert!(after.password_hash.contains("m=2048"), "{}", after.password_hash);
    old.login("ann@example.org").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_records_who_did_what_without_secrets() {
    let app = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            refresh_grace: Duration::from_secs(0),
            ..Options::default()
        },
    )
    .await;
    let (email, a) = app.user_with_session().await;
    let _ = app
        .token(&[
            ("grant_type", "password"),
            ("username", &email),
            ("password", "wrong password!"),
        ])
        .await;
    let b = app.login(&email).await;
    let r = app.refresh(&b.refresh).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.refresh(&b.refresh).await.status(), 400, "reuse");
    assert_eq!(app.post_bearer("/v1/logout", &a.access).await.status(), 204);
    let c: Tokens = app.login(&email).await;
    let r = app
        .http
        .post(app.url("/v1/me/password"))
        .bearer_auth(&c.access)
        .json(&json!({"current_password": PASSWORD, "new_password": "another good passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let user_id = jwt_part(&a.access, 1)["sub"].as_str().unwrap().to_string();
    let admin = app.url(&format!("/v1/admin/users/{user_id}/sessions"));
    app.http
        .delete(&admin)
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .send()
        .await
        .unwrap();

    let r = app
        .http
        .get(app.url(&format!("/v1/admin/users/{user_id}/events")))
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let events: Value = serde_json::from_str(&body).unwrap();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "user_registered",
        "login_succeeded",
        "login_failed",
        "refresh_token_reuse_detected",
        "session_revoked",
        "password_changed",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let events = events["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["actor"] == "client:svc"),
        "admin actions name the client"
    );
    assert!(events.iter().any(|e| e["reason"] == "logout"));
    assert!(events.iter().all(|e| e["ip"] == "127.0.0.1"));
    for secret in [
        PASSWORD,
        "wrong password!",
        &a.refresh,
        &a.access,
        &b.refresh,
        SVC_SECRET,
    ] {
        assert!(!body.contains(secret), "a secret leaked into the audit trail");
    }
    let r = app
        .http
        .get(app.url(&format!("/v1/admin/users/{user_id}/events")))
        .bearer_auth(&c.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "users cannot read the audit trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_contain_passwords_or_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_authd"))
        .current_dir(dir.path())
        .env_clear()
        .env("AUTHD_LISTEN", "127.0.0.1:0")
        .env("AUTHD_ARGON2_M_KIB", "1024")
        .env("RUST_LOG", "trace,sqlx=trace,hyper=info,h2=info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let base = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| l.split("addr=").nth(1)) {
            break format!("http://{}", addr.trim());
        }
        assert!(Instant::now() < deadline, "authd did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let http = reqwest::Client::new();
    http.post(format!("{base}/v1/users"))
        .json(&json!({"email": "ann@example.org", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let t: Value = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "ann@example.org"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = t["refresh_token"].as_str().unwrap().to_string();
    let access = t["access_token"].as_str().unwrap().to_string();
    let t2: Value = http
        .post(format!("{base}/oauth/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    http.get(format!("{base}/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    http.post(format!("{base}/v1/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("audit"), "the log has content");
    for secret in [
        PASSWORD,
        refresh.as_str(),
        access.as_str(),
        t2["refresh_token"].as_str().unwrap(),
    ] {
        assert!(!text.contains(secret), "a secret is in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_mode_keeps_the_refresh_token_out_of_scripts() {
    let app = TestApp::spawn(Backend::Embedded).await;
    app.register("ann@example.org").await;
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .header("x-authd-cookie", "1")
        .form(&[
            ("grant_type", "password"),
            ("username", "ann@example.org"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/oauth"] {
        assert!(set_cookie.contains(attr), "{attr} missing: {set_cookie}");
    }
    let body: Value = r.json().await.unwrap();
    assert!(
        body.get("refresh_token").is_none(),
        "the body must not carry the refresh token"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();

    // Without the custom header (a cross-site form post), the cookie is not used.
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .header("cookie", &cookie)
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .header("cookie", &cookie)
        .header("x-authd-cookie", "1")
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let next_cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(next_cookie, cookie, "rotated");
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(app.get_bearer("/v1/me", &access).await.status(), 200);

    let r = app
        .http
        .post(app.url("/oauth/revoke"))
        .header("cookie", &next_cookie)
        .header("x-authd-cookie", "1")
        .form(&[("x", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(
        app.get_bearer("/v1/me", &access).await.status(),
        401,
        "revoked through the cookie"
    );
}
