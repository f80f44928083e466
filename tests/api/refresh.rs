use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, Tokens};

both_backends!(
    refresh_rotates_within_the_same_session,
    twenty_concurrent_refreshes_get_one_identical_answer,
    previous_token_after_the_grace_window_revokes_the_session,
    older_token_reuse_revokes_even_inside_the_window,
    idle_timeout_ends_a_session,
    refresh_never_extends_past_the_absolute_lifetime,
    a_cache_that_lies_about_a_session_changes_no_token,
);

async fn refresh_ok(app: &TestApp, token: &str) -> Tokens {
    let r = app.refresh(token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    r.json::<Value>().await.unwrap().into()
}

async fn refresh_rotates_within_the_same_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, first) = app.user_with_session().await;
    let second = refresh_ok(&app, &first.refresh).await;
    assert_eq!(second.session_id, first.session_id);
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    app.assert_session_accepted(&second).await;
    // Only the newest refresh token introspects as active.
    assert_eq!(app.introspect(&second.refresh).await["active"], true);
    assert_eq!(app.introspect(&first.refresh).await, json!({"active": false}));
    let third = refresh_ok(&app, &second.refresh).await;
    assert_eq!(third.session_id, first.session_id);
    // last_used_at moves with each refresh.
    let list: Value = app
        .get_bearer("/v1/sessions", &third.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
}

async fn twenty_concurrent_refreshes_get_one_identical_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, first) = app.user_with_session().await;
    let answers = join_all((0..20).map(|_| async {
        let r = app.refresh(&first.refresh).await;
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    }))
    .await;
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body, &answers[0].1, "every racer gets the same pair");
    }
    let winner: Tokens = answers[0].1.clone().into();
    // Exactly one live refresh token: the one everybody got.
    assert_eq!(app.introspect(&winner.refresh).await["active"], true);
    assert_eq!(app.introspect(&first.refresh).await, json!({"active": false}));
    let session = app
        .state
        .sessions
        .store()
        .get_session(winner.session_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.refresh_generation, 1, "one rotation, not twenty");
    assert!(session.revoked_at.is_none());
    let next = refresh_ok(&app, &winner.refresh).await;
    assert_eq!(next.session_id, first.session_id);
}

async fn previous_token_after_the_grace_window_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, first) = app.user_with_session().await;
    let second = refresh_ok(&app, &first.refresh).await;
    app.clock.advance(Duration::from_secs(11));
    let r = app.refresh(&first.refresh).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    // The thief and the victim are both out.
    app.assert_session_refused(&second).await;
    let session = app
        .state
        .sessions
        .store()
        .get_session(first.session_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.revoke_reason.as_deref(), Some("refresh_token_reuse"));
}

async fn older_token_reuse_revokes_even_inside_the_window(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, t0) = app.user_with_session().await;
    let t1 = refresh_ok(&app, &t0.refresh).await;
    let t2 = refresh_ok(&app, &t1.refresh).await;
    let r = app.refresh(&t0.refresh).await;
    assert_eq!(r.status(), 400);
    app.assert_session_refused(&t2).await;
}

async fn idle_timeout_ends_a_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, t0) = app.user_with_session().await;
    app.clock.advance(Duration::from_secs(29 * 86400));
    let t1 = refresh_ok(&app, &t0.refresh).await;
    app.clock.advance(Duration::from_secs(30 * 86400 + 1));
    let r = app.refresh(&t1.refresh).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
}

async fn refresh_never_extends_past_the_absolute_lifetime(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, t0) = app.user_with_session().await;
    let created = app
        .state
        .sessions
        .store()
        .get_session(t0.session_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let absolute = created.created_at + time::Duration::days(90);
    let mut current = t0;
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(29 * 86400));
        current = refresh_ok(&app, &current.refresh).await;
    }
    // Day 87: the session may live 3 more days, not 30.
    let s = app
        .state
        .sessions
        .store()
        .get_session(current.session_id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.expires_at.unix_timestamp(), absolute.unix_timestamp());
    let exp = crate::helpers::jwt_part(&current.access, 1)["exp"].as_i64().unwrap();
    assert!(exp <= absolute.unix_timestamp());
    app.clock.advance(Duration::from_secs(3 * 86400 + 1));
    assert_eq!(app.refresh(&current.refresh).await.status(), 400);
}

/// The one-statement rotation signs from the cache's facts of a session
/// before the database confirms them: a poisoned or stale entry must only
/// cost the locked path, never put its claims into a token.
async fn a_cache_that_lies_about_a_session_changes_no_token(backend: Backend) {
    use authd::store::{CacheLookup, LiveEntry, SessionFacts};
    let app = TestApp::spawn(backend).await;
    let (_, t0) = app.user_with_session().await;
    let (_, mallory) = app.user_with_session().await;
    let sid = t0.session_id.parse().unwrap();
    let cache = app.state.sessions.cache();
    let CacheLookup::Live(entry) = cache.get(sid).await.unwrap() else {
        panic!("a login caches its session");
    };
    let facts = entry.facts.clone().expect("with the facts a refresh signs with");
    let real = crate::helpers::jwt_part(&t0.access, 1);
    let mallory_sub = crate::helpers::jwt_part(&mallory.access, 1)["sub"].clone();
    let lies = [
        LiveEntry {
            user_id: mallory_sub.as_str().unwrap().parse().unwrap(),
            ..entry.clone()
        },
        LiveEntry {
            facts: Some(SessionFacts {
                scope: Some("admin".into()),
                client_id: "other-client".into(),
                ..facts.clone()
            }),
            ..entry.clone()
        },
        LiveEntry {
            facts: Some(SessionFacts {
                absolute_expires_at: facts.absolute_expires_at + time::Duration::days(365),
                ..facts.clone()
            }),
            ..entry.clone()
        },
    ];
    let mut current = t0;
    for lie in lies {
        cache.put_live(sid, &lie, Duration::from_secs(60)).await.unwrap();
        let next = refresh_ok(&app, &current.refresh).await;
        let claims = crate::helpers::jwt_part(&next.access, 1);
        for claim in ["sub", "sid", "client_id", "scope"] {
            assert_eq!(
                claims[claim], real[claim],
                "{claim} comes from the database, not the cache"
            );
        }
        assert!(claims["exp"].as_i64().unwrap() <= facts.absolute_expires_at.unix_timestamp());
        app.assert_session_accepted(&next).await;
        current = next;
    }
    let session = app.state.sessions.store().get_session(sid).await.unwrap().unwrap();
    assert_eq!(session.refresh_generation, 3, "each refresh rotated once");
    assert_eq!(app.introspect(&current.refresh).await["active"], true);
    // The locked path put the truth back: the next refresh can take the short one.
    let CacheLookup::Live(healed) = cache.get(sid).await.unwrap() else {
        panic!("cached again");
    };
    assert_eq!(healed.facts, Some(facts));
    assert_eq!(healed.user_id, entry.user_id);
}
