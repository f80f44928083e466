//! Fault tests: each owns the servers it breaks (never the shared ones) and
//! asserts no revoked session is accepted, no session is lost, no 5xx but the
//! designed 503, and recovery without a restart.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::{json, Value};

use crate::binary::Authd;
use crate::helpers::{eventually, readyz, Backend, Options, TestApp, Tokens, PASSWORD, SVC_ID, SVC_SECRET};
use crate::servers::{PgServer, RedisCluster, RedisServer};

/// Awaits `work`, asserting it took at most `limit`.
async fn within<T>(limit: Duration, what: &str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = work.await;
    assert!(
        started.elapsed() <= limit,
        "{what} took {:?} (limit {limit:?})",
        started.elapsed()
    );
    out
}

async fn status_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_redis_costs_nothing_and_the_cache_refills_after() {
    let mut redis = RedisServer::start();
    let app = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            redis_url: Some(redis.url()),
            ..Options::default()
        },
    )
    .await;
    let (email, a) = app.user_with_session().await;
    let b = app.login(&email).await;
    app.assert_session_accepted(&a).await;
    redis.kill();

    let limit = Duration::from_secs(2);
    within(limit, "bearer check", app.assert_session_accepted(&a)).await;
    let c = within(limit, "login", app.login(&email)).await;
    let r = within(limit, "refresh", app.refresh(&c.refresh)).await;
    assert_eq!(r.status(), 200);
    let c: Tokens = r.json::<Value>().await.unwrap().into();
    let r = within(limit, "list", app.get_bearer("/v1/sessions", &c.access)).await;
    assert_eq!(r.status(), 200);
    let r = within(limit, "logout", app.post_bearer("/v1/logout", &b.access)).await;
    assert_eq!(r.status(), 204);
    within(limit * 4, "refusal checks", app.assert_session_refused(&b)).await;
    within(limit, "register", app.register("new@example.org")).await;
    let (status, ready) = within(Duration::from_secs(5), "readyz", readyz(&app)).await;
    assert_eq!(status, 200);
    assert_eq!(ready["redis"], "degraded");
    assert_eq!(ready["postgres"], "ok");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("authd_cache_fallbacks_total"));

    // Back, empty: nothing lost, the revocation holds, the cache refills.
    redis.restart();
    eventually(Duration::from_secs(10), "redis ok in readyz", || async {
        readyz(&app).await.1["redis"] == "ok"
    })
    .await;
    app.assert_session_refused(&b).await;
    app.assert_session_accepted(&a).await;
    app.assert_session_accepted(&c).await;
    let keys = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "dbsize"])
        .output()
        .unwrap();
    let keys: u64 = String::from_utf8_lossy(&keys.stdout).trim().parse().unwrap();
    assert!(keys >= 2, "cache refilled lazily ({keys} keys)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_cannot_resurrect_a_revoked_session_on_any_process() {
    let redis = RedisServer::start();
    let one = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            redis_url: Some(redis.url()),
            ..Options::default()
        },
    )
    .await;
    let two = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            redis_url: Some(redis.url()),
            database_url: one.database_url.clone(),
            redis_prefix: Some(one.redis_prefix.clone()),
            keys_dir: Some(one.keys_dir.clone()),
            ..Options::default()
        },
    )
    .await;
    let (_, t) = one.user_with_session().await;
    // Both processes have the session cached as live in Redis.
    one.assert_session_accepted(&t).await;
    two.assert_session_accepted(&t).await;

    redis.pause();
    let hung = Duration::from_secs(3);
    let r = within(hung, "logout with Redis hung", two.post_bearer("/v1/logout", &t.access)).await;
    assert_eq!(r.status(), 204);
    for app in [&one, &two] {
        let r = within(hung, "bearer with Redis hung", app.get_bearer("/v1/me", &t.access)).await;
        assert_eq!(r.status(), 401, "a revoked session was accepted while Redis hung");
    }
    redis.resume();
    // Redis still holds the stale "live" entry it had before the pause.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for app in [&one, &two] {
            assert_eq!(
                app.get_bearer("/v1/me", &t.access).await.status(),
                401,
                "stale cache resurrected the session"
            );
            assert_eq!(app.introspect(&t.access).await, json!({"active": false}));
        }
    }
    eventually(Duration::from_secs(10), "both caches trusted", || async {
        readyz(&one).await.1["redis"] == "ok" && readyz(&two).await.1["redis"] == "ok"
    })
    .await;
    one.assert_session_refused(&t).await;
    two.assert_session_refused(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_fails_closed_and_service_resumes_by_itself() {
    let pg = PgServer::start();
    let max_lag = Duration::from_secs(5);
    let mut options = Options {
        database_url: Some(pg.url()),
        db_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    options.events.follower_max_lag = max_lag;
    let app = TestApp::spawn_with(Backend::Postgres, options).await;
    let (email, a) = app.user_with_session().await;
    let b = app.login(&email).await;
    app.assert_session_accepted(&a).await;
    let stopped = Instant::now();
    pg.stop();
    // A session known live in the cache still verifies while the event log
    // follower's last read is recent enough to vouch for the cache...
    if stopped.elapsed() < max_lag - Duration::from_secs(1) {
        assert_eq!(app.introspect(&a.access).await["active"], true);
    }

    let limit = Duration::from_secs(5);
    let unavailable = |(status, body): (u16, Value)| {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
    };
    let form = [
        ("grant_type", "password"),
        ("username", email.as_str()),
        ("password", PASSWORD),
    ];
    unavailable(within(limit, "login", async { status_of(app.token(&form).await).await }).await);
    unavailable(
        within(limit, "refresh", async {
            status_of(app.refresh(&a.refresh).await).await
        })
        .await,
    );
    unavailable(
        within(limit, "logout", async {
            status_of(app.post_bearer("/v1/logout", &b.access).await).await
        })
        .await,
    );
    let register = app
        .http
        .post(app.url("/v1/users"))
        .json(&json!({"email": "z@example.org", "password": PASSWORD}));
    unavailable(
        within(limit, "register", async {
            status_of(register.send().await.unwrap()).await
        })
        .await,
    );
    // ...and not once it is older (DESIGN.md: the cache is believed only
    // while the follower is caught up): the durable store must answer, so
    // the check fails closed.
    while stopped.elapsed() <= max_lag {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = within(limit, "introspect", async {
        app.http
            .post(app.url("/oauth/introspect"))
            .basic_auth(SVC_ID, Some(SVC_SECRET))
            .form(&[("token", a.access.as_str())])
            .send()
            .await
            .unwrap()
    })
    .await;
    unavailable(status_of(r).await);
    let (status, ready) = within(limit, "readyz", readyz(&app)).await;
    assert_eq!(status, 503);
    assert_eq!(ready["postgres"], "down");
    assert_eq!(ready["error"], "temporarily_unavailable");

    pg.start_again();
    eventually(Duration::from_secs(10), "login after Postgres returns", || async {
        app.token(&form).await.status() == 200
    })
    .await;
    let r = app.refresh(&a.refresh).await;
    assert_eq!(r.status(), 200, "the refresh that failed changed nothing");
    app.assert_session_accepted(&b).await;
    let a2: Tokens = r.json::<Value>().await.unwrap().into();
    let list: Value = app.get_bearer("/v1/sessions", &a2.access).await.json().await.unwrap();
    // a, b, and the one login after recovery: nothing half-written from the outage.
    assert_eq!(list["sessions"].as_array().unwrap().len(), 3);
    assert_eq!(readyz(&app).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_revocations_and_rotation() {
    let one = TestApp::spawn(Backend::Postgres).await;
    let two = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            database_url: one.database_url.clone(),
            redis_prefix: Some(one.redis_prefix.clone()),
            keys_dir: Some(one.keys_dir.clone()),
            ..Options::default()
        },
    )
    .await;
    let (email, a) = one.user_with_session().await;
    let b = two.login(&email).await;
    one.assert_session_accepted(&b).await;
    two.assert_session_accepted(&a).await;
    let r = one
        .http
        .delete(one.url(&format!("/v1/sessions/{}", b.session_id)))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        two.get_bearer("/v1/me", &b.access).await.status(),
        401,
        "the other process refuses at once"
    );
    two.assert_session_refused(&b).await;

    let answers = join_all((0..20).map(|i| {
        let app = if i % 2 == 0 { &one } else { &two };
        let token = a.refresh.clone();
        async move { status_of(app.refresh(&token).await).await }
    }))
    .await;
    for (status, body) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(body, &answers[0].1, "both processes answer the same pair");
    }
    let winner: Tokens = answers[0].1.clone().into();
    two.assert_session_accepted(&winner).await;
    assert_eq!(one.introspect(&a.refresh).await, json!({"active": false}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_serves_the_session_rules() {
    let cluster = RedisCluster::start();
    let app = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            redis_url: Some(cluster.url()),
            ..Options::default()
        },
    )
    .await;
    let (email, a) = app.user_with_session().await;
    let others: Vec<Tokens> = join_all((0..5).map(|_| app.login(&email))).await;
    app.assert_session_accepted(&a).await;
    let answers = join_all((0..20).map(|_| async { status_of(app.refresh(&a.refresh).await).await })).await;
    assert!(answers.iter().all(|(s, body)| *s == 200 && body == &answers[0].1));
    let a: Tokens = answers[0].1.clone().into();
    let r = app.post_bearer("/v1/sessions/revoke-others", &a.access).await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"revoked": 5}));
    for t in &others {
        app.assert_session_refused(t).await;
    }
    app.assert_session_accepted(&a).await;
    assert_eq!(readyz(&app).await.1["redis"], "ok");
    assert!(cluster.key_count() >= 6, "session keys spread over the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_answered_session_or_token() {
    crate::helpers::require_servers().await;
    // A database of this test's own on the shared server; the binary is what gets killed.
    let holder = TestApp::spawn(Backend::Postgres).await;
    let db = holder.database_url.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clients = format!("{SVC_ID}:{SVC_SECRET}");
    let keys = holder.keys_dir.to_str().unwrap().to_string();
    let redis = crate::helpers::redis_url();
    let env = [
        ("DATABASE_URL", db.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("AUTHD_REDIS_PREFIX", holder.redis_prefix.as_str()),
        ("AUTHD_KEYS_DIR", keys.as_str()),
        ("AUTHD_CLIENTS", clients.as_str()),
        ("AUTHD_REFRESH_GRACE", "300s"),
        // One client IP (loopback) is the whole load here.
        ("AUTHD_TOKEN_RATE_PER_IP", "0"),
    ];
    let mut authd = Authd::start(dir.path(), &env);
    let base = authd.base.clone();
    let http = reqwest::Client::new();
    // Every (session, latest refresh token) a client was answered.
    let answered: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (http, base, answered) = (http.clone(), base.clone(), answered.clone());
            tokio::spawn(async move {
                let email = format!("w{w}@example.org");
                let _ = http
                    .post(format!("{base}/v1/users"))
                    .json(&json!({"email": email, "password": PASSWORD}))
                    .send()
                    .await;
                while Instant::now() < stop_at + Duration::from_secs(5) {
                    let form = [
                        ("grant_type", "password"),
                        ("username", email.as_str()),
                        ("password", PASSWORD),
                    ];
                    let Ok(r) = http.post(format!("{base}/oauth/token")).form(&form).send().await else {
                        break;
                    };
                    let Ok(t) = r.json::<Value>().await else { break };
                    let (sid, mut refresh) = (
                        t["session_id"].as_str().unwrap().to_string(),
                        t["refresh_token"].as_str().unwrap().to_string(),
                    );
                    let slot = {
                        let mut all = answered.lock().unwrap();
                        all.push((sid, refresh.clone()));
                        all.len() - 1
                    };
                    for _ in 0..3 {
                        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
                        let Ok(r) = http.post(format!("{base}/oauth/token")).form(&form).send().await else {
                            return;
                        };
                        let Ok(t) = r.json::<Value>().await else { return };
                        let Some(next) = t["refresh_token"].as_str() else {
                            return;
                        };
                        refresh = next.to_string();
                        answered.lock().unwrap()[slot].1 = refresh.clone();
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep_until((stop_at).into()).await;
    authd.child.kill().unwrap();
    authd.child.wait().unwrap();
    for w in workers {
        let _ = w.await;
    }
    drop(authd);
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 8, "the load ran ({} sessions)", answered.len());

    let authd = Authd::start(dir.path(), &env);
    let base = authd.base.clone();
    for (sid, refresh) in &answered {
        // The session exists, and the last refresh token it was answered works
        // (as the current token, or as the previous one inside the grace window).
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
        let r = http
            .post(format!("{base}/oauth/token"))
            .form(&form)
            .send()
            .await
            .unwrap();
        let (status, body) = status_of(r).await;
        assert_eq!(status, 200, "answered token of {sid} lost: {body}");
        assert_eq!(body["session_id"], sid.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    // Slow hashing makes a login that is surely in flight when SIGTERM lands.
    let authd = Authd::start(dir.path(), &[("AUTHD_ARGON2_M_KIB", "262144"), ("AUTHD_ARGON2_T", "4")]);
    let base = authd.base.clone();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"email": "ann@example.org", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let login = tokio::spawn({
        let (http, base) = (http.clone(), base.clone());
        async move {
            let form = [
                ("grant_type", "password"),
                ("username", "ann@example.org"),
                ("password", PASSWORD),
            ];
            http.post(format!("{base}/oauth/token"))
                .form(&form)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = tokio::task::spawn_blocking(move || authd.stop()).await.unwrap();
    assert_eq!(login.await.unwrap().unwrap(), 200, "the in-flight login was finished");
    assert!(status.success(), "exit code 0 after SIGTERM");
    assert!(
        http.get(format!("{base}/healthz")).send().await.is_err(),
        "no longer accepting"
    );
}
