//! The session event log and the cache coherence built on it: every
//! revocation is a row written in its own transaction, every process's
//! follower reads the log without skipping, and no lost or stale cache
//! entry can bring a revoked session back.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sqlx::Connection;

use crate::helpers::{eventually, readyz, spawn_on_own_postgres, Backend, Options, TestApp};
use crate::servers::{spare_port, RedisServer};
use crate::sse::SseStream;

/// kind, session, reason, actor, until
type EventRow = (
    String,
    uuid::Uuid,
    Option<String>,
    Option<String>,
    Option<time::OffsetDateTime>,
);

/// A second process on the same database, keys and Redis namespace.
async fn second_process(one: &TestApp, options: Options) -> TestApp {
    TestApp::spawn_with(
        Backend::Postgres,
        Options {
            database_url: one.database_url.clone(),
            keys_dir: Some(one.keys_dir.clone()),
            ..options
        },
    )
    .await
}

async fn pg(app: &TestApp) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(app.database_url.as_deref().unwrap())
        .await
        .unwrap()
}

async fn event_count(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM session_events")
        .fetch_one(&mut pg(app).await)
        .await
        .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lifecycle_change_is_one_event_in_its_own_transaction() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (email, a) = app.user_with_session().await;
    let b = app.login(&email).await;
    assert_eq!(app.refresh(&b.refresh).await.status(), 200);
    assert_eq!(app.post_bearer("/v1/logout", &a.access).await.status(), 204);
    let rows: Vec<EventRow> =
        sqlx::query_as("SELECT kind, session_id, reason, actor, until FROM session_events ORDER BY seq")
            .fetch_all(&mut pg(&app).await)
            .await
            .unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    // Two logins and one logout; the refresh is not an event.
    assert_eq!(kinds, ["session_created", "session_created", "session_revoked"]);
    let revoked = &rows[2];
    assert_eq!(revoked.1.to_string(), a.session_id);
    assert_eq!(revoked.2.as_deref(), Some("logout"));
    assert_eq!(revoked.3.as_deref(), Some("user"));
    let exp = crate::helpers::jwt_part(&a.access, 1)["exp"].as_i64().unwrap();
    let until = revoked.4.unwrap().unix_timestamp();
    assert!(
        (exp..=exp + 1).contains(&until),
        "until {until} is the token's exp {exp}"
    );

    // Revoking what already ended changes nothing and writes nothing.
    let before = event_count(&app).await;
    for _ in 0..20 {
        let r = app
            .http
            .post(app.url("/oauth/revoke"))
            .form(&[("token", a.refresh.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(app.post_bearer("/v1/logout", &a.access).await.status(), 401);
    assert_eq!(event_count(&app).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_from_a_snapshot_taken_before_the_revoke_cannot_bring_it_back() {
    let mut redis = RedisServer::start();
    let one = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            redis_url: Some(redis.url()),
            ..Options::default()
        },
    )
    .await;
    let two = second_process(
        &one,
        Options {
            redis_url: Some(redis.url()),
            redis_prefix: Some(one.redis_prefix.clone()),
            ..Options::default()
        },
    )
    .await;
    let (_, t) = one.user_with_session().await;
    one.assert_session_accepted(&t).await;
    two.assert_session_accepted(&t).await;
    let port = redis.port.to_string();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let key = format!("{}s:{{{}}}", one.redis_prefix, t.session_id);
    assert!(cli(&["GET", &key]).starts_with("l:"), "the session is cached as live");
    assert_eq!(cli(&["SAVE"]), "OK");

    assert_eq!(two.post_bearer("/v1/logout", &t.access).await.status(), 204);
    assert_eq!(
        cli(&["GET", &key]),
        "r",
        "the revoker wrote the marker before answering"
    );
    redis.restart();
    assert!(
        cli(&["GET", &key]).starts_with("l:"),
        "Redis came back from the old snapshot"
    );

    // Right after the restart, whatever each process thinks of Redis...
    for app in [&one, &two] {
        app.assert_session_refused(&t).await;
    }
    // ...and once both trust it again: it was re-swept before that.
    eventually(Duration::from_secs(10), "both caches trusted", || async {
        readyz(&one).await.1["redis"] == "ok" && readyz(&two).await.1["redis"] == "ok"
    })
    .await;
    assert_eq!(cli(&["GET", &key]), "r", "the revocation was written back to Redis");
    for app in [&one, &two] {
        app.assert_session_refused(&t).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoker_whose_cache_write_never_happens_loses_nothing() {
    // Process one cannot reach Redis at all: after its commit, nothing else
    // of the revocation is written anywhere (as if it died right there).
    let one = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            redis_url: Some(format!("redis://127.0.0.1:{}", spare_port())),
            ..Options::default()
        },
    )
    .await;
    let two = second_process(&one, Options::default()).await;
    let (_, t) = two.user_with_session().await;
    two.assert_session_accepted(&t).await;
    assert_eq!(readyz(&two).await.1["redis"], "ok");

    let answered = Instant::now();
    assert_eq!(one.post_bearer("/v1/logout", &t.access).await.status(), 204);
    eventually(Duration::from_secs(1), "the other process refuses", || async {
        two.get_bearer("/v1/me", &t.access).await.status() == 401
    })
    .await;
    eprintln!("refused by the other process {:?} after the answer", answered.elapsed());
    two.assert_session_refused(&t).await;
    // Its cache is still trusted: the follower's set did it, not a fallback.
    assert_eq!(readyz(&two).await.1["redis"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_never_skips_an_event_whatever_order_transactions_commit_in() {
    // Its own Postgres: the held transaction holds back every follower of
    // the cluster, and other tests must not feel it.
    let (one, _server) = spawn_on_own_postgres().await;
    let two = second_process(&one, Options::default()).await;
    let mut users = Vec::new();
    for _ in 0..4 {
        users.push(one.user_with_session().await.1);
    }
    let mut streams = [SseStream::open(&one, None).await, SseStream::open(&two, None).await];

    // An earlier transaction revokes users[0] and stays open...
    let mut held = pg(&one).await;
    let mut tx = held.begin().await.unwrap();
    sqlx::query(
        "WITH r AS (UPDATE sessions SET revoked_at = now(), revoke_reason = 'admin' WHERE id = $1 \
                    RETURNING id, user_id) \
         INSERT INTO session_events (kind, session_id, user_id, at, reason, actor, until) \
         SELECT 'session_revoked', id, user_id, now(), 'admin', 'system', now() + interval '15 minutes' FROM r",
    )
    .bind(users[0].session_id.parse::<uuid::Uuid>().unwrap())
    .execute(&mut *tx)
    .await
    .unwrap();
    // ...while later ones commit.
    for t in &users[1..] {
        assert_eq!(one.post_bearer("/v1/logout", &t.access).await.status(), 204);
    }
    // The set refuses them at once (on the other process too)...
    for t in &users[1..] {
        eventually(
            Duration::from_secs(2),
            "refused while an earlier transaction is open",
            || async { two.get_bearer("/v1/me", &t.access).await.status() == 401 },
        )
        .await;
    }
    // ...but the feed, in log order, cannot hand out anything after the
    // open transaction's event yet.
    for stream in &mut streams {
        assert_eq!(stream.next_event(Duration::from_millis(1500)).await, None);
    }
    tx.commit().await.unwrap();

    let expected: Vec<String> = users.iter().map(|t| t.session_id.clone()).collect();
    for stream in &mut streams {
        let mut seen = Vec::new();
        let mut ids = HashSet::new();
        while let Some((id, data)) = stream.next_event(Duration::from_secs(2)).await {
            assert!(ids.insert(id), "an event came twice");
            seen.push(data["sid"].as_str().unwrap().to_string());
        }
        assert_eq!(seen, expected, "every event exactly once, in commit order");
    }
    let now_refused = users[0].clone();
    eventually(Duration::from_secs(2), "the held revocation applies", || async {
        two.get_bearer("/v1/me", &now_refused.access).await.status() == 401
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_dead_session_a_thousand_times_keeps_every_cache_trusted() {
    let one = TestApp::spawn(Backend::Postgres).await;
    let two = second_process(
        &one,
        Options {
            redis_prefix: Some(one.redis_prefix.clone()),
            ..Options::default()
        },
    )
    .await;
    let (email, dead) = one.user_with_session().await;
    let live = one.login(&email).await;
    assert_eq!(one.post_bearer("/v1/logout", &dead.access).await.status(), 204);
    let before = event_count(&one).await;
    let mut listener = sqlx::postgres::PgListener::connect(one.database_url.as_deref().unwrap())
        .await
        .unwrap();
    listener.listen("authd_session_events").await.unwrap();

    let statuses: Vec<reqwest::StatusCode> = futures::stream::iter(0..1000)
        .map(|i| {
            let app = if i % 2 == 0 { &one } else { &two };
            let token = if i % 3 == 0 { &dead.access } else { &dead.refresh };
            async move {
                app.http
                    .post(app.url("/oauth/revoke"))
                    .form(&[("token", token.as_str())])
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    assert_eq!(event_count(&one).await, before, "nothing was written");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), listener.try_recv())
            .await
            .is_err(),
        "nobody was notified"
    );
    for app in [&one, &two] {
        assert_eq!(readyz(app).await.1["redis"], "ok");
        app.assert_session_accepted(&live).await;
        app.assert_session_refused(&dead).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listen_connection_only_delays_the_follower_by_a_poll() {
    let one = TestApp::spawn(Backend::Postgres).await;
    // Its own Redis namespace: a cache that never hears of one's revocations,
    // so only its follower can tell it.
    let two = second_process(&one, Options::default()).await;
    let (_, t) = one.user_with_session().await;
    two.assert_session_accepted(&t).await;
    let terminated: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&mut pg(&one).await)
    .await
    .unwrap();
    assert!(terminated.len() >= 2, "both processes' listeners were killed");

    assert_eq!(one.post_bearer("/v1/logout", &t.access).await.status(), 204);
    eventually(
        Duration::from_secs(2),
        "the other process refuses within a poll",
        || async { two.get_bearer("/v1/me", &t.access).await.status() == 401 },
    )
    .await;
    two.assert_session_refused(&t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_logs_expiry_and_prunes_events_past_retention() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let (email, a) = app.user_with_session().await;
    let _b = app.login(&email).await;
    assert_eq!(app.post_bearer("/v1/logout", &a.access).await.status(), 204);
    let kinds = || async {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT kind FROM session_events ORDER BY seq")
            .fetch_all(&mut pg(&app).await)
            .await
            .unwrap();
        rows.into_iter().map(|(k,)| k).collect::<Vec<_>>()
    };
    assert_eq!(kinds().await, ["session_created", "session_created", "session_revoked"]);
    // Past both sessions' end and every retention.
    app.clock.advance(Duration::from_secs(120 * 86400));
    let retention = Duration::from_secs(7 * 86400);
    assert_eq!(app.state.sessions.cleanup_once(retention).await.unwrap(), 2);
    // The session that expired unrevoked got its event; the old ones went.
    assert_eq!(kinds().await, ["session_expired"]);
    app.clock.advance(Duration::from_secs(8 * 86400));
    app.state.sessions.cleanup_once(retention).await.unwrap();
    assert!(kinds().await.is_empty());
}
