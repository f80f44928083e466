//! Security round 2: limits that hold under concurrency and behind proxies,
//! slow clients, cookies, bounded growth. Each test fails without its fix.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Backend, Options, TestApp, PASSWORD};

/// Sends `count` wrong-password logins at once (`account(i)` names the
/// account of the i-th); returns how many were answered `invalid_grant`
/// (checked) and how many 429 (refused before checking).
async fn concurrent_wrong_logins(app: &TestApp, count: usize, account: impl Fn(usize) -> String) -> (usize, usize) {
    let requests = (0..count).map(|i| {
        let form = [
            ("grant_type", "password".to_string()),
            ("username", account(i)),
            ("password", "wrong password!".to_string()),
        ];
        let (http, url) = (app.http.clone(), app.url("/oauth/token"));
        tokio::spawn(async move { http.post(url).form(&form).send().await.unwrap() })
    });
    let responses = futures::future::join_all(requests).await;
    let (mut checked, mut refused) = (0, 0);
    for r in responses {
        let r = r.unwrap();
        match r.status().as_u16() {
            400 => {
                assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
                checked += 1;
            }
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (checked, refused)
}

async fn concurrent_wrong_passwords_never_pass_the_lockout_limits(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.register("ann@example.org").await;
    // 40 at once for one account from one IP: the pair limit is 5.
    let (checked, refused) = concurrent_wrong_logins(&app, 40, |_| "ann@example.org".into()).await;
    assert!(
        checked <= 5,
        "{checked} of 40 concurrent guesses were checked (limit 5)"
    );
    assert_eq!(checked + refused, 40);
    assert_eq!(checked, 5, "the limit admits exactly its 5 attempts");

    // 80 at once over 80 unknown accounts: the per-IP limit is 50 (5 used above).
    let (checked, _) = concurrent_wrong_logins(&app, 80, |i| format!("nobody{i}@example.org")).await;
    assert!(
        checked <= 45,
        "{checked} of 80 concurrent guesses passed the per-IP limit of 50 (5 used)"
    );
}

async fn concurrent_guesses_on_one_account_from_many_ips_stop_at_the_account_limit(backend: Backend) {
    // Per-account limit 20 across IPs; the pair and IP limits are out of reach.
    let mut options = Options::default();
    options.limits.failures_per_account_ip = 1000;
    options.limits.failures_per_ip = 1000;
    options.limits.failures_per_account = 20;
    let app = TestApp::spawn_with(backend, options).await;
    app.register("ann@example.org").await;
    let (checked, _) = concurrent_wrong_logins(&app, 60, |_| "ann@example.org".into()).await;
    assert_eq!(checked, 20, "per-account limit of 20 under 60 concurrent guesses");
}

async fn lockouts_end_when_the_clock_moves_on(backend: Backend) {
    let mut options = Options::default();
    options.limits.failures_per_account_ip = 2;
    options.limits.lockout = Duration::from_secs(900);
    let app = TestApp::spawn_with(backend, options).await;
    app.register("ann@example.org").await;
    let (checked, refused) = concurrent_wrong_logins(&app, 4, |_| "ann@example.org".into()).await;
    assert_eq!((checked, refused), (2, 2));
    let r = app
        .token(&[
            ("grant_type", "password"),
            ("username", "ann@example.org"),
            ("password", PASSWORD),
        ])
        .await;
    assert_eq!(r.status(), 429, "locked, even with the right password");
    // No sleeping: the window is measured on the service clock.
    app.clock.advance(Duration::from_secs(901));
    app.login("ann@example.org").await;
    // A success gives its slots back and starts the pair afresh.
    let (checked, _) = concurrent_wrong_logins(&app, 3, |_| "ann@example.org".into()).await;
    assert_eq!(checked, 2);
}

crate::both_backends!(
    concurrent_wrong_passwords_never_pass_the_lockout_limits,
    concurrent_guesses_on_one_account_from_many_ips_stop_at_the_account_limit,
    lockouts_end_when_the_clock_moves_on,
);

fn behind_proxy(options: &mut Options) {
    options.edge.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

async fn login_from(app: &TestApp, xff: &str, email: &str, password: &str) -> reqwest::Response {
    app.http
        .post(app.url("/oauth/token"))
        .header("x-forwarded-for", xff)
        .form(&[("grant_type", "password"), ("username", email), ("password", password)])
        .send()
        .await
        .unwrap()
}

async fn audit_ips(app: &TestApp, user_id: &str) -> Vec<String> {
    let events: Value = app
        .http
        .get(app.url(&format!("/v1/admin/users/{user_id}/events")))
        .basic_auth(crate::helpers::SVC_ID, Some(crate::helpers::SVC_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ip"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn session_ips(app: &TestApp, access: &str) -> Vec<String> {
    let list: Value = app.get_bearer("/v1/sessions", access).await.json().await.unwrap();
    list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ip"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Behind a trusted proxy, the client is the rightmost forwarded address the
/// proxy did not add itself: the lockouts, the device list and the audit
/// trail all see it, and a client cannot pick it by forging the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_ip_is_used_everywhere() {
    let mut options = Options::default();
    behind_proxy(&mut options);
    options.limits.failures_per_account_ip = 3;
    let app = TestApp::spawn_with(Backend::Postgres, options).await;
    let user = app.register("ann@example.org").await;
    let user_id = user["id"].as_str().unwrap();

    // The attacker, 198.51.100.7, forges a left part; the proxy appended the real peer.
    let forged = "10.9.9.9, 198.51.100.7";
    for _ in 0..3 {
        assert_eq!(
            login_from(&app, forged, "ann@example.org", "wrong password!")
                .await
                .status(),
            400
        );
    }
    assert_eq!(
        login_from(&app, forged, "ann@example.org", PASSWORD).await.status(),
        429
    );
    assert_eq!(
        login_from(&app, "1.2.3.4, 198.51.100.7", "ann@example.org", PASSWORD)
            .await
            .status(),
        429,
        "changing the forged part does not escape the lockout"
    );
    // The owner, elsewhere, is not locked out by the attacker's failures.
    let r = login_from(&app, "203.0.113.5", "ann@example.org", PASSWORD).await;
    assert_eq!(r.status(), 200);
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(session_ips(&app, &access).await, vec!["203.0.113.5"]);
    let ips = audit_ips(&app, user_id).await;
    assert!(ips.iter().any(|ip| ip == "198.51.100.7"), "{ips:?}");
    assert!(ips.iter().any(|ip| ip == "203.0.113.5"), "{ips:?}");
    assert!(!ips.iter().any(|ip| ip == "10.9.9.9"), "{ips:?}");
    // Only the registration came without a forwarding header: from the proxy itself.
    assert_eq!(ips.iter().filter(|ip| *ip == "127.0.0.1").count(), 1, "{ips:?}");
}

/// From a peer that is not a trusted proxy, forwarding headers are ignored:
/// forging one neither changes the recorded IP nor escapes a lockout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let mut options = Options::default();
    options.limits.failures_per_account_ip = 3;
    let app = TestApp::spawn_with(Backend::Embedded, options).await;
    app.register("ann@example.org").await;
    for i in 0..3 {
        let xff = format!("198.51.100.{i}");
        assert_eq!(
            login_from(&app, &xff, "ann@example.org", "wrong password!")
                .await
                .status(),
            400
        );
    }
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .header("forwarded", "for=203.0.113.5")
        .form(&[
            ("grant_type", "password"),
            ("username", "ann@example.org"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429, "forged headers escaped the lockout");
    app.clock.advance(Duration::from_secs(901));
    let r = login_from(&app, "203.0.113.5", "ann@example.org", PASSWORD).await;
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(session_ips(&app, &access).await, vec!["127.0.0.1"]);
}

/// Flood limits are per client IP: one client hammering /oauth/token gets
/// 429 while another client's requests go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flooding_client_does_not_block_the_others() {
    let mut options = Options::default();
    behind_proxy(&mut options);
    options.limits.token_rate_per_ip = 5;
    options.limits.token_rate = 1000;
    let app = TestApp::spawn_with(Backend::Embedded, options).await;
    app.register("ann@example.org").await;
    let flood = |ip: &'static str| {
        let (http, url) = (app.http.clone(), app.url("/oauth/token"));
        async move {
            http.post(url)
                .header("x-forwarded-for", ip)
                .form(&[("grant_type", "nonsense")])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let statuses = futures::future::join_all((0..40).map(|_| flood("198.51.100.7"))).await;
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 30, "{statuses:?}");
    let r = login_from(&app, "203.0.113.5", "ann@example.org", PASSWORD).await;
    assert_eq!(r.status(), 200, "another client is not limited by the flood");
    // An IPv6 client owns its /64: other addresses in it share its bucket.
    let statuses = futures::future::join_all((0..20).map(|_| flood("2001:db8:1:2::1"))).await;
    assert!(statuses.contains(&429));
    assert_eq!(flood("2001:db8:1:2::ffff").await, 429, "same /64");
    assert_ne!(flood("2001:db8:1:3::1").await, 429, "another /64");
}

/// Deletes every Redis key of this app (a flush, for this test's prefix only).
async fn flush_redis(app: &TestApp) {
    let client = redis::Client::open(crate::helpers::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", app.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await.unwrap();
    }
}

/// The owner's IP stays exempt from the per-account lockout as long as the
/// owner keeps using it (a refresh renews it, a login too), also after Redis
/// lost everything: strangers cannot lock a 90-day session's owner out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_s_ip_stays_exempt_while_used_and_after_a_redis_flush() {
    let mut options = Options::default();
    behind_proxy(&mut options);
    options.limits.failures_per_account = 3;
    let app = TestApp::spawn_with(Backend::Postgres, options).await;
    app.register("ann@example.org").await;
    let home = "203.0.113.5";
    let r = login_from(&app, home, "ann@example.org", PASSWORD).await;
    let tokens: crate::helpers::Tokens = r.json::<Value>().await.unwrap().into();
    // 29 days on the session is refreshed from home; 2 more days later the
    // first login is 31 days old, the last use 2.
    app.clock.advance(Duration::from_secs(29 * 86400));
    let r = app
        .http
        .post(app.url("/oauth/token"))
        .header("x-forwarded-for", home)
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens.refresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.clock.advance(Duration::from_secs(2 * 86400));
    for round in 0..2 {
        // Strangers on many IPs lock the account...
        for i in 0..3 {
            let ip = format!("198.51.100.{}", 10 * round + i);
            assert_eq!(
                login_from(&app, &ip, "ann@example.org", "wrong password!")
                    .await
                    .status(),
                400
            );
        }
        assert_eq!(
            login_from(&app, "198.51.100.99", "ann@example.org", PASSWORD)
                .await
                .status(),
            429
        );
        // ...but not for the owner at home.
        assert_eq!(
            login_from(&app, home, "ann@example.org", PASSWORD).await.status(),
            200,
            "round {round}: the owner is locked out"
        );
        // Redis loses everything; the exemption comes from the durable sessions.
        flush_redis(&app).await;
    }
}

/// A stolen access token does not buy unlimited password guesses: wrong
/// `current_password`s are counted (atomically, before verifying) and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_current_passwords_are_throttled_and_audited() {
    let mut options = Options::default();
    options.limits.lockout = Duration::from_secs(60);
    let app = TestApp::spawn_with(Backend::Postgres, options).await;
    let (_, tokens) = app.user_with_session().await;
    let guesses = (0..30).map(|i| {
        let (http, url, access) = (app.http.clone(), app.url("/v1/me/password"), tokens.access.clone());
        async move {
            http.post(url)
                .bearer_auth(access)
                .json(&serde_json::json!({"current_password": format!("guess number {i}"), "new_password": "a new long passphrase 1"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == 403).count();
    assert_eq!(checked, 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 25, "{statuses:?}");
    let me: Value = app.get_bearer("/v1/me", &tokens.access).await.json().await.unwrap();
    let ips_and_kinds: Value = app
        .http
        .get(app.url(&format!("/v1/admin/users/{}/events", me["id"].as_str().unwrap())))
        .basic_auth(crate::helpers::SVC_ID, Some(crate::helpers::SVC_SECRET))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let failed = ips_and_kinds["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "password_change_failed")
        .count();
    assert_eq!(failed, 5);
    // The right password still works once the window has passed.
    app.clock.advance(Duration::from_secs(61));
    let r = app
        .http
        .post(app.url("/v1/me/password"))
        .bearer_auth(&tokens.access)
        .json(&serde_json::json!({"current_password": PASSWORD, "new_password": "a new long passphrase 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

fn slow_client_limits(options: &mut Options) {
    options.edge.header_read_timeout = Duration::from_secs(2);
    options.edge.idle_timeout = Duration::from_secs(2);
    options.edge.max_connections = 3;
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or `limit` passes);
/// returns what was read and whether it closed.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// Slowloris: a head trickled a byte at a time is cut off at the header-read
/// timeout, never served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_head_is_cut_off() {
    use tokio::io::AsyncWriteExt;
    let mut options = Options::default();
    slow_client_limits(&mut options);
    options.edge.idle_timeout = Duration::from_secs(60);
    let app = TestApp::spawn_with(Backend::Embedded, options).await;
    let mut stream = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
    let started = tokio::time::Instant::now();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut closed_after = None;
    // One header byte every 200 ms for up to 8 s: the head never completes in 2 s.
    for byte in b"X-Slow: ".iter().chain([b'a'; 40].iter()) {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let (_, closed) = read_until_closed(&mut stream, Duration::from_millis(200)).await;
        if closed {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the trickling client was never cut off");
    assert!(closed_after < Duration::from_secs(4), "cut off after {closed_after:?}");
    assert!(
        closed_after >= Duration::from_millis(1500),
        "cut off too early: {closed_after:?}"
    );
}

/// An idle keep-alive connection is closed after the idle timeout, and at most
/// `AUTHD_MAX_CONNECTIONS` are open at once: the next client waits until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_and_open_connections_are_bounded() {
    use tokio::io::AsyncWriteExt;
    let mut options = Options::default();
    slow_client_limits(&mut options);
    options.edge.header_read_timeout = Duration::from_secs(10);
    let app = TestApp::spawn_with(Backend::Embedded, options).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

    // Served, then kept alive while idle, then closed by the server.
    let mut idle = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
    idle.write_all(request).await.unwrap();
    let started = tokio::time::Instant::now();
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(6)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle connection stayed open for 6 s");
    let idle_for = started.elapsed();
    assert!(
        idle_for >= Duration::from_millis(1500) && idle_for < Duration::from_secs(4),
        "closed after {idle_for:?}"
    );

    // Three connections fill the slots; a fourth is not served while they stay.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap(); // an unfinished head
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = tokio::net::TcpStream::connect(addr(&app)).await.unwrap();
    fourth.write_all(request).await.unwrap();
    let (answer, _) = read_until_closed(&mut fourth, Duration::from_millis(700)).await;
    assert!(answer.is_empty(), "a fourth connection was served: {answer}");
    drop(held.pop());
    let (answer, _) = read_until_closed(&mut fourth, Duration::from_secs(3)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the waiting client was not served: {answer:?}"
    );
}

async fn cookie_login(app: &TestApp) -> (String, String, String) {
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
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    (set_cookie, cookie, access)
}

async fn cookie_refresh(app: &TestApp, cookie: &str) -> reqwest::Response {
    app.http
        .post(app.url("/oauth/token"))
        .header("cookie", cookie)
        .header("x-authd-cookie", "1")
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap()
}

fn clears_the_cookie(r: &reqwest::Response) -> bool {
    r.headers().get_all("set-cookie").iter().any(|v| {
        v.to_str().unwrap().starts_with("__Secure-authd_refresh=;") && v.to_str().unwrap().contains("Max-Age=0")
    })
}

/// Cookie mode: a prefixed name, a planted sibling cookie never wins, the
/// cookie is cleared on logout and on a failed refresh, and it never
/// outlives the session's absolute end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_refresh_cookie_is_prefixed_unplantable_cleared_and_capped() {
    let app = TestApp::spawn(Backend::Embedded).await;
    app.register("ann@example.org").await;
    let (set_cookie, cookie, _) = cookie_login(&app).await;
    assert!(set_cookie.starts_with("__Secure-authd_refresh="), "{set_cookie}");

    // A sibling subdomain plants its own session's cookie: with two, neither wins.
    let (_, attacker_cookie, _) = cookie_login(&app).await;
    let both = format!("{attacker_cookie}; {cookie}");
    let r = cookie_refresh(&app, &both).await;
    assert_eq!(r.status(), 400, "two refresh cookies must not be accepted");
    assert!(clears_the_cookie(&r));
    let r = app
        .http
        .post(app.url("/oauth/revoke"))
        .header("cookie", &both)
        .header("x-authd-cookie", "1")
        .form(&[("x", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = cookie_refresh(&app, &cookie).await;
    assert_eq!(r.status(), 200, "the victim's own cookie still works alone");
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    // A failed refresh takes the dead cookie away.
    let r = cookie_refresh(&app, "__Secure-authd_refresh=not-a-real-token").await;
    assert_eq!(r.status(), 400);
    assert!(clears_the_cookie(&r), "a failed refresh must clear the cookie");

    // Logout in cookie mode clears it too.
    let r = cookie_refresh(&app, &cookie).await;
    let access = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app
        .http
        .post(app.url("/v1/logout"))
        .bearer_auth(&access)
        .header("x-authd-cookie", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(clears_the_cookie(&r), "logout must clear the cookie");

    // Max-Age: 30-day idle, 90-day absolute. 80 days in, a refresh may only
    // keep the cookie for the 10 days the session has left.
    let (_, cookie, _) = cookie_login(&app).await;
    let mut cookie = cookie;
    for _ in 0..4 {
        app.clock.advance(Duration::from_secs(20 * 86400));
        let r = cookie_refresh(&app, &cookie).await;
        assert_eq!(r.status(), 200);
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        cookie = set.split(';').next().unwrap().to_string();
        let max_age: u64 = set.split("Max-Age=").nth(1).unwrap().trim().parse().unwrap();
        assert!(max_age <= 30 * 86400, "{set}");
        if max_age < 30 * 86400 - 60 {
            assert!(max_age <= 10 * 86400 + 60, "not capped at the absolute end: {set}");
            return;
        }
    }
    panic!("the cookie's Max-Age never shrank towards the absolute end");
}

/// A client secret with `+` and `%` works from clients that form-encode the
/// Basic credentials (RFC 6749 §2.3.1) and from those that do not (curl -u).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_work_raw_and_form_encoded() {
    let secret = "s3cret+with+plus%signs";
    let options = Options {
        clients: Some(format!("svc:{secret}")),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Backend::Embedded, options).await;
    let introspect = |user: &'static str, password: String| {
        let (http, url) = (app.http.clone(), app.url("/oauth/introspect"));
        async move {
            http.post(url)
                .basic_auth(user, Some(password))
                .form(&[("token", "x")])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        introspect("svc", secret.to_string()).await,
        200,
        "raw, as curl -u sends it"
    );
    let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    assert_eq!(encoded, "s3cret%2Bwith%2Bplus%25signs");
    assert_eq!(introspect("svc", encoded).await, 200, "form-encoded, as RFC 6749 says");
    assert_eq!(introspect("svc", "s3cret with plus%signs".into()).await, 401);
    assert_eq!(introspect("svc", "s3cret+with+plus".into()).await, 401);
}

/// An access token cannot outlive its session's idle end: a configuration
/// whose access TTL exceeds the idle TTL does not start.
#[test]
fn an_access_ttl_longer_than_the_idle_ttl_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authd"))
        .current_dir(dir.path())
        .env_clear()
        .env("AUTHD_LISTEN", "127.0.0.1:0")
        .env("AUTHD_SESSION_IDLE_TTL", "5m")
        .env("AUTHD_ACCESS_TTL", "15m")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("AUTHD_ACCESS_TTL must not exceed AUTHD_SESSION_IDLE_TTL"),
        "{stderr}"
    );
}

/// Cleanup keeps up with a large table: its batches have their own bound,
/// not the request one (here a tight 40 ms, under which the old single-OR
/// delete bounded by the request timeout failed), and old audit events go too.
/// Also: failed logins for unknown users add a bounded number of audit rows
/// per source IP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_progresses_through_a_large_table_and_audit_growth_is_bounded() {
    use sqlx::Connection;
    let options = Options {
        db_timeout: Duration::from_millis(40),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Backend::Postgres, options).await;
    let mut db = sqlx::PgConnection::connect(app.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let sessions = 200_000;
    sqlx::query(
        "INSERT INTO users (id, email, email_normalized, password_hash, created_at, updated_at) \
         VALUES ('00000000-0000-7000-8000-000000000001', 'bulk@example.org', 'bulk@example.org', 'x', now(), now())",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO sessions (id, user_id, client_id, device_name, created_at, last_used_at, expires_at, \
           absolute_expires_at, refresh_generation, rotated_at) \
         SELECT gen_random_uuid(), '00000000-0000-7000-8000-000000000001', 'web', 'bulk', \
           now() - interval '60 days', now() - interval '40 days', now() - interval '10 days' - (g || ' seconds')::interval, \
           now() + interval '30 days', 0, now() - interval '40 days' \
         FROM generate_series(1, {sessions}) g"
    ))
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, generation, issued_at) \
         SELECT sha256(id::text::bytea), id, 0, now() FROM sessions",
    )
    .execute(&mut db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO audit_events (id, at, kind, actor) \
         SELECT gen_random_uuid(), now() - interval '100 days', 'login_failed', 'user' FROM generate_series(1, 50000)",
    )
    .execute(&mut db)
    .await
    .unwrap();

    let started = std::time::Instant::now();
    let deleted = app
        .state
        .sessions
        .cleanup_once(Duration::from_secs(7 * 86400))
        .await
        .expect("cleanup makes progress under a tight request bound");
    assert_eq!(deleted, sessions);
    let audit = app
        .state
        .sessions
        .cleanup_audit(Duration::from_secs(90 * 86400))
        .await
        .unwrap();
    assert_eq!(audit, 50_000);
    eprintln!(
        "cleanup of {sessions} sessions + 50k audit events: {:?}",
        started.elapsed()
    );
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM refresh_tokens")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(left, 0);

    // 40 failed logins for unknown users from one IP: at most 20 audit rows.
    let mut options = Options::default();
    options.limits.failures_per_ip = 1000;
    let app = TestApp::spawn_with(Backend::Postgres, options).await;
    for i in 0..40 {
        let r = app
            .token(&[
                ("grant_type", "password"),
                ("username", &format!("nobody{i}@example.org")),
                ("password", "wrong password!"),
            ])
            .await;
        assert_eq!(r.status(), 400);
    }
    let mut db = sqlx::PgConnection::connect(app.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_events WHERE kind = 'login_failed'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, 20, "unknown-user failures one IP may write");
}

/// Service clients carry roles: introspection, the revocation feed, admin. A
/// client listed without roles keeps every role (older configurations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_clients_only_do_what_their_roles_allow() {
    let options = Options {
        clients: Some(
            "intro:intro-secret-0123456789:introspect,adm:admin-secret-0123456789:admin+feed,\
             old:old-secret-0123456789ab"
                .into(),
        ),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Backend::Embedded, options).await;
    let user = app.register("ann@example.org").await;
    let tokens = app.login("ann@example.org").await;
    let introspect = |id: &'static str, secret: &'static str| {
        let (http, url, token) = (app.http.clone(), app.url("/oauth/introspect"), tokens.access.clone());
        async move {
            let r = http
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let admin = |id: &'static str, secret: &'static str| {
        let (http, url) = (
            app.http.clone(),
            app.url(&format!("/v1/admin/users/{}/sessions", user["id"].as_str().unwrap())),
        );
        async move {
            http.get(url)
                .basic_auth(id, Some(secret))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (status, body) = introspect("intro", "intro-secret-0123456789").await;
    assert_eq!((status, body["active"].clone()), (200, Value::Bool(true)));
    assert_eq!(
        admin("intro", "intro-secret-0123456789").await,
        403,
        "introspect-only client used admin"
    );
    let (status, body) = introspect("adm", "admin-secret-0123456789").await;
    assert_eq!(status, 403, "admin-only client introspected");
    assert_eq!(body["error"], "forbidden");
    assert_eq!(admin("adm", "admin-secret-0123456789").await, 200);
    // Listed without roles: every role, as before.
    assert_eq!(introspect("old", "old-secret-0123456789ab").await.0, 200);
    assert_eq!(admin("old", "old-secret-0123456789ab").await, 200);
    assert_eq!(admin("old", "wrong-secret-0123456789").await, 401);
}

/// With `AUTHD_METRICS_LISTEN`, `/metrics` moves to its own listener and the
/// public one no longer serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_move_to_their_own_listener() {
    let mut options = Options::default();
    options.edge.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let app = TestApp::spawn_with(Backend::Embedded, options).await;
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404, "the public listener still serves /metrics");
    let metrics = app.metrics_base.clone().expect("a metrics listener");
    let r = app.http.get(format!("{metrics}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("authd_"), "metrics body");
    let r = app.http.get(format!("{metrics}/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), 404, "the metrics listener serves nothing else");

    let app = TestApp::spawn(Backend::Embedded).await;
    assert_eq!(
        app.http.get(app.url("/metrics")).send().await.unwrap().status(),
        200,
        "default unchanged"
    );
}
