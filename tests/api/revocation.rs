use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, PASSWORD, SVC_ID, SVC_SECRET};

both_backends!(
    oauth_revoke_by_refresh_or_access_token,
    logout_ends_the_current_session,
    delete_session_revokes_only_that_one,
    revoke_others_keeps_the_current_one,
    password_change_revokes_every_other_session,
    admin_revokes_all_sessions_of_a_user,
);

async fn oauth_revoke_by_refresh_or_access_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (email, a) = app.user_with_session().await;
    let b = app.login(&email).await;
    for (token, victim) in [(&a.refresh, &a), (&b.access, &b)] {
        let r = app
            .http
            .post(app.url("/oauth/revoke"))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        app.assert_session_refused(victim).await;
    }
    // Unknown and garbage tokens: still 200, per RFC 7009.
    for token in ["garbage", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "a.b.c"] {
        let r = app
            .http
            .post(app.url("/oauth/revoke"))
            .form(&[("token", token), ("token_type_hint", "refresh_token")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = app
        .http
        .post(app.url("/oauth/revoke"))
        .form(&[("nothing", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

async fn logout_ends_the_current_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (email, a) = app.user_with_session().await;
    let b = app.login(&email).await;
    assert_eq!(app.post_bearer("/v1/logout", &a.access).await.status(), 204);
    app.assert_session_refused(&a).await;
    app.assert_session_accepted(&b).await;
    assert_eq!(app.post_bearer("/v1/logout", &a.access).await.status(), 401);
}

async fn delete_session_revokes_only_that_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (email, a) = app.user_with_session().await;
    let b = app.login(&email).await;
    let (_, stranger) = app.user_with_session().await;
    // Someone else's session is "not found", and stays alive.
    let r = app
        .http
        .delete(app.url(&format!("/v1/sessions/{}", stranger.session_id)))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    app.assert_session_accepted(&stranger).await;
    for bad in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let r = app
            .http
            .delete(app.url(&format!("/v1/sessions/{bad}")))
            .bearer_auth(&a.access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = app
        .http
        .delete(app.url(&format!("/v1/sessions/{}", b.session_id)))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    app.assert_session_refused(&b).await;
    app.assert_session_accepted(&a).await;
    let r = app
        .http
        .delete(app.url(&format!("/v1/sessions/{}", b.session_id)))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "already revoked");
}

async fn revoke_others_keeps_the_current_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (email, a) = app.user_with_session().await;
    let b = app.login(&email).await;
    let c = app.login(&email).await;
    let r = app.post_bearer("/v1/sessions/revoke-others", &a.access).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"revoked": 2}));
    app.assert_session_refused(&b).await;
    app.assert_session_refused(&c).await;
    app.assert_session_accepted(&a).await;
}

async fn password_change_revokes_every_other_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (email, a) = app.user_with_session().await;
    let b = app.login(&email).await;
    let change = |current: &str, new: &str| {
        app.http
            .post(app.url("/v1/me/password"))
            .bearer_auth(&a.access)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    let r = change("wrong password", "a brand new password").await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_password");
    app.assert_session_accepted(&b).await;
    let r = change(PASSWORD, "short").await.unwrap();
    assert_eq!(r.status(), 400);
    app.assert_session_accepted(&b).await;
    let r = change(PASSWORD, "a brand new password").await.unwrap();
    assert_eq!(r.status(), 204);
    app.assert_session_refused(&b).await;
    app.assert_session_accepted(&a).await;
    let old = app
        .token(&[("grant_type", "password"), ("username", &email), ("password", PASSWORD)])
        .await;
    assert_eq!(old.status(), 400);
    let new = app
        .token(&[
            ("grant_type", "password"),
            ("username", &email),
            ("password", "a brand new password"),
        ])
        .await;
    assert_eq!(new.status(), 200);
}

async fn admin_revokes_all_sessions_of_a_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (email, a) = app.user_with_session().await;
    let b = app.login(&email).await;
    let user_id = crate::helpers::jwt_part(&a.access, 1)["sub"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/admin/users/{user_id}/sessions");
    // Users' own tokens are no admin credential.
    let r = app
        .http
        .delete(app.url(&path))
        .bearer_auth(&a.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .get(app.url(&path))
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().all(|s| s.get("current").is_none()));
    let r = app
        .http
        .delete(app.url(&path))
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"revoked": 2}));
    app.assert_session_refused(&a).await;
    app.assert_session_refused(&b).await;
    let unknown = format!("/v1/admin/users/{}/sessions", uuid::Uuid::now_v7());
    let r = app
        .http
        .get(app.url(&unknown))
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}
