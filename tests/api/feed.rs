//! The revocation feed for downstream verifiers: snapshot, SSE stream,
//! resumption by cursor, heartbeats, and service-client authentication.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use authd::session::events::encode_cursor;
use authd::store::EventCursor;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{spawn_on_own_postgres, Backend, Options, TestApp, PASSWORD, SVC_ID, SVC_SECRET};
use crate::servers::PgServer;
use crate::sse::{Frame, SseStream};

/// The feed hands out events in commit order, so any write transaction
/// still open anywhere in a Postgres cluster holds it back (by design).
/// Tests that time the feed get a cluster of their own: other tests' long
/// transactions on the shared one must not make them flaky.
async fn feed_app(backend: Backend) -> (TestApp, Option<PgServer>) {
    match backend {
        Backend::Postgres => {
            let (app, server) = spawn_on_own_postgres().await;
            (app, Some(server))
        }
        Backend::Embedded => (TestApp::spawn(backend).await, None),
    }
}

both_backends!(
    the_feed_requires_a_service_client,
    the_snapshot_lists_every_revocation_with_its_reason,
    the_stream_delivers_in_a_second_and_resumes_after_any_cursor,
);

async fn snapshot(app: &TestApp) -> Value {
    let r = app
        .http
        .get(app.url("/v1/revocations"))
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn the_feed_requires_a_service_client(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, t) = app.user_with_session().await;
    for path in ["/v1/revocations", "/v1/revocations/stream"] {
        let anonymous = app.http.get(app.url(path)).send().await.unwrap();
        let wrong = app
            .http
            .get(app.url(path))
            .basic_auth(SVC_ID, Some("not-the-secret-at-all"))
            .send()
            .await
            .unwrap();
        let user = app.http.get(app.url(path)).bearer_auth(&t.access).send().await.unwrap();
        for r in [anonymous, wrong, user] {
            assert_eq!(r.status(), 401, "{path}");
            assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
            assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
        }
    }
}

async fn the_snapshot_lists_every_revocation_with_its_reason(backend: Backend) {
    let (app, _server) = feed_app(backend).await;
    let (email, current) = app.user_with_session().await;
    let mut expected = HashMap::new();

    let t = app.login(&email).await;
    assert_eq!(app.post_bearer("/v1/logout", &t.access).await.status(), 204);
    expected.insert(t.session_id.clone(), "logout");

    let t = app.login(&email).await;
    let r = app
        .http
        .delete(app.url(&format!("/v1/sessions/{}", t.session_id)))
        .bearer_auth(&current.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    expected.insert(t.session_id.clone(), "user");

    let t = app.login(&email).await;
    let r = app
        .http
        .post(app.url("/oauth/revoke"))
        .form(&[("token", t.refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    expected.insert(t.session_id.clone(), "token_revoked");

    let t = app.login(&email).await;
    assert_eq!(app.refresh(&t.refresh).await.status(), 200);
    app.clock.advance(Duration::from_secs(11));
    assert_eq!(
        app.refresh(&t.refresh).await.status(),
        400,
        "reuse after the grace window"
    );
    expected.insert(t.session_id.clone(), "refresh_token_reuse");

    let t = app.login(&email).await;
    assert_eq!(
        app.post_bearer("/v1/sessions/revoke-others", &current.access)
            .await
            .status(),
        200
    );
    expected.insert(t.session_id.clone(), "revoke_others");

    let t = app.login(&email).await;
    let r = app
        .http
        .post(app.url("/v1/me/password"))
        .bearer_auth(&current.access)
        .json(&json!({"current_password": PASSWORD, "new_password": "another fine passphrase 9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    expected.insert(t.session_id.clone(), "password_changed");

    let me: Value = app.get_bearer("/v1/me", &current.access).await.json().await.unwrap();
    let r = app
        .http
        .delete(app.url(&format!("/v1/admin/users/{}/sessions", me["id"].as_str().unwrap())))
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    expected.insert(current.session_id.clone(), "admin");

    let deadline = Instant::now() + Duration::from_secs(2);
    let body = loop {
        let body = snapshot(&app).await;
        if body["revoked"].as_array().unwrap().len() >= expected.len() || Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!body["cursor"].as_str().unwrap().is_empty());
    let listed: HashMap<String, Value> = body["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["sid"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    assert_eq!(listed.len(), expected.len(), "{body}");
    for (sid, reason) in &expected {
        let entry = &listed[sid];
        assert_eq!(entry["reason"], *reason, "{sid}");
        assert_eq!(entry["sub"], me["id"]);
        for field in ["revoked_at", "until"] {
            let raw = entry[field].as_str().unwrap();
            assert!(raw.ends_with('Z'), "{field} {raw} is RFC 3339 UTC");
            time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).unwrap();
        }
    }
}

async fn the_stream_delivers_in_a_second_and_resumes_after_any_cursor(backend: Backend) {
    let (app, _server) = feed_app(backend).await;
    let (email, _) = app.user_with_session().await;
    let mut live = SseStream::open(&app, None).await;
    let before = snapshot(&app).await["cursor"].as_str().unwrap().to_string();

    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(app.login(&email).await);
    }
    let mut ids = Vec::new();
    for t in &sessions {
        assert_eq!(app.post_bearer("/v1/logout", &t.access).await.status(), 204);
        let answered = Instant::now();
        let (id, data) = live.next_event(Duration::from_secs(1)).await.expect("event within 1 s");
        assert!(answered.elapsed() < Duration::from_secs(1));
        assert_eq!(data["sid"], t.session_id.as_str());
        assert_eq!(data["reason"], "logout");
        ids.push(id);
    }

    // After the first id: the second and third, nothing repeated.
    let mut resumed = SseStream::open(&app, Some(&ids[0])).await;
    for id in &ids[1..] {
        assert_eq!(&resumed.next_event(Duration::from_secs(1)).await.unwrap().0, id);
    }
    assert_eq!(resumed.next_event(Duration::from_millis(300)).await, None);
    // After the snapshot's cursor: all three.
    let mut from_snapshot = SseStream::open(&app, Some(&before)).await;
    for id in &ids {
        assert_eq!(&from_snapshot.next_event(Duration::from_secs(1)).await.unwrap().0, id);
    }

    let stream = |id: String| {
        app.http
            .get(app.url("/v1/revocations/stream"))
            .basic_auth(SVC_ID, Some(SVC_SECRET))
            .header("last-event-id", id)
            .send()
    };
    for bad in ["garbage", "MS4yLjM", &"A".repeat(300)] {
        let r = stream(bad.to_string()).await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
    }
    let too_old = encode_cursor(
        EventCursor::default(),
        app.state.sessions.now() - time::Duration::days(8),
    );
    let r = stream(too_old).await.unwrap();
    assert_eq!(r.status(), 410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_sends_a_heartbeat_every_five_seconds() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let mut stream = SseStream::open(&app, None).await;
    let started = Instant::now();
    let frame = stream.next(Duration::from_secs(7)).await;
    assert_eq!(frame, Some(Frame::Comment("heartbeat".into())));
    assert!(started.elapsed() >= Duration::from_secs(4), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_process_sees_revocations_made_through_another() {
    let (one, _server) = feed_app(Backend::Postgres).await;
    let two = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            database_url: one.database_url.clone(),
            keys_dir: Some(one.keys_dir.clone()),
            ..Options::default()
        },
    )
    .await;
    let (_, t) = one.user_with_session().await;
    let mut stream = SseStream::open(&two, None).await;
    assert_eq!(one.post_bearer("/v1/logout", &t.access).await.status(), 204);
    let answered = Instant::now();
    let (_, data) = stream.next_event(Duration::from_secs(1)).await.expect("within 1 s");
    eprintln!(
        "process two streamed it {:?} after process one answered",
        answered.elapsed()
    );
    assert_eq!(data["sid"], t.session_id.as_str());
}
