//! Invariant 9: storage per session is bounded whatever the number of
//! refreshes, reuse of any older genuine token still revokes the session, a
//! made-up token revokes nothing, and a token from before migration 0007
//! still refreshes once.

use std::time::Duration;

use authd::domain::RefreshToken;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use sqlx::Connection;
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, Tokens};

both_backends!(
    refresh_storage_per_session_is_bounded,
    refresh_of_an_older_genuine_token_after_the_window_revokes_the_session,
    refresh_with_a_made_up_token_of_valid_shape_revokes_nothing,
    refresh_of_an_old_format_token_from_before_the_migration_works_once,
);

/// A connection to the app's own database, whichever backend.
enum Db {
    Pg(sqlx::PgConnection),
    Lite(sqlx::SqliteConnection),
}

impl Db {
    async fn open(app: &TestApp) -> Db {
        match &app.database_url {
            Some(url) => Db::Pg(sqlx::PgConnection::connect(url).await.unwrap()),
            None => Db::Lite(
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", app.sqlite_file().display()))
                    .await
                    .unwrap(),
            ),
        }
    }

    async fn count(&mut self, sql: &str) -> i64 {
        match self {
            Db::Pg(c) => sqlx::query_as::<_, (i64,)>(sql).fetch_one(c).await.unwrap().0,
            Db::Lite(c) => sqlx::query_as::<_, (i64,)>(sql).fetch_one(c).await.unwrap().0,
        }
    }

    /// Row counts of every table a refresh could grow.
    async fn rows(&mut self) -> Vec<i64> {
        let mut out = Vec::new();
        for table in ["sessions", "refresh_tokens", "session_events", "server_secrets"] {
            out.push(self.count(&format!("SELECT count(*) FROM {table}")).await);
        }
        out
    }

    /// Makes `session` look as it did before migration 0007: its current
    /// token is `legacy`, known only by hash in `refresh_tokens`.
    async fn make_legacy(&mut self, session: Uuid, legacy: &RefreshToken) {
        let hash = legacy.hash().0.to_vec();
        match self {
            Db::Pg(c) => {
                sqlx::query("UPDATE sessions SET refresh_hash = NULL WHERE id = $1")
                    .bind(session)
                    .execute(&mut *c)
                    .await
                    .unwrap();
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, session_id, generation, issued_at) \
                     SELECT $1, id, refresh_generation, rotated_at FROM sessions WHERE id = $2",
                )
                .bind(hash)
                .bind(session)
                .execute(&mut *c)
                .await
                .unwrap();
            }
            Db::Lite(c) => {
                sqlx::query("UPDATE sessions SET refresh_hash = NULL WHERE id = ?1")
                    .bind(session)
                    .execute(&mut *c)
                    .await
                    .unwrap();
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, session_id, generation, issued_at) \
                     SELECT ?1, id, refresh_generation, rotated_at FROM sessions WHERE id = ?2",
                )
                .bind(hash)
                .bind(session)
                .execute(&mut *c)
                .await
                .unwrap();
            }
        }
    }
}

async fn refresh_ok(app: &TestApp, token: &str) -> Tokens {
    let r = app.refresh(token).await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap().into()
}

async fn assert_invalid_grant(app: &TestApp, token: &str) {
    let r = app.refresh(token).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
}

async fn revoke_reason(app: &TestApp, session: &str) -> Option<String> {
    app.state
        .sessions
        .store()
        .get_session(session.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .revoke_reason
}

async fn refresh_storage_per_session_is_bounded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, first) = app.user_with_session().await;
    let mut db = Db::open(&app).await;
    let mut current = refresh_ok(&app, &first.refresh).await;
    let after_one = db.rows().await;
    assert_eq!(after_one, vec![1, 0, 1, 1], "sessions, refresh_tokens, events, secrets");
    for _ in 0..200 {
        current = refresh_ok(&app, &current.refresh).await;
    }
    assert_eq!(db.rows().await, after_one, "200 more refreshes added no row anywhere");
    app.assert_session_accepted(&current).await;
    assert_eq!(app.introspect(&current.refresh).await["active"], true);
}

async fn refresh_of_an_older_genuine_token_after_the_window_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, t0) = app.user_with_session().await;
    let t1 = refresh_ok(&app, &t0.refresh).await;
    let t2 = refresh_ok(&app, &t1.refresh).await;
    let t3 = refresh_ok(&app, &t2.refresh).await;
    app.clock.advance(Duration::from_secs(11));
    // t1 is stored nowhere any more: its MAC and generation identify it.
    assert_invalid_grant(&app, &t1.refresh).await;
    assert_eq!(
        revoke_reason(&app, &t0.session_id).await.as_deref(),
        Some("refresh_token_reuse")
    );
    app.assert_session_refused(&t3).await;
    let mut db = Db::open(&app).await;
    let revoked = db
        .count("SELECT count(*) FROM session_events WHERE kind = 'session_revoked' AND reason = 'refresh_token_reuse'")
        .await;
    assert_eq!(revoked, 1, "the revocation is in the event log");
}

async fn refresh_with_a_made_up_token_of_valid_shape_revokes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, t0) = app.user_with_session().await;
    let t1 = refresh_ok(&app, &t0.refresh).await;
    let t2 = refresh_ok(&app, &t1.refresh).await;
    app.clock.advance(Duration::from_secs(11));
    let genuine = URL_SAFE_NO_PAD.decode(&t0.refresh).unwrap();
    let mut forgeries = Vec::new();
    // The session id and an older generation, with a wrong tag: what a
    // thief who knows only the session id could make to get it revoked.
    let mut bad_tag = genuine.clone();
    let last = bad_tag.len() - 1;
    bad_tag[last] ^= 1;
    forgeries.push(bad_tag);
    // A changed random part under the old tag.
    let mut bad_random = genuine.clone();
    bad_random[30] ^= 0x80;
    forgeries.push(bad_random);
    // The current generation claimed with the old token's tag.
    let mut bad_generation = genuine.clone();
    bad_generation[24] = 2;
    forgeries.push(bad_generation);
    for bytes in forgeries {
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(forged.len(), t2.refresh.len(), "same shape as a real token");
        assert_invalid_grant(&app, &forged).await;
        assert_eq!(app.introspect(&forged).await, json!({"active": false}));
        let r = app
            .http
            .post(app.url("/oauth/revoke"))
            .form(&[("token", forged.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(revoke_reason(&app, &t0.session_id).await, None);
    app.assert_session_accepted(&t2).await;
    let t3 = refresh_ok(&app, &t2.refresh).await;
    assert_eq!(t3.session_id, t0.session_id);
}

async fn refresh_of_an_old_format_token_from_before_the_migration_works_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, t0) = app.user_with_session().await;
    let legacy = RefreshToken::generate(&ring::rand::SystemRandom::new()).unwrap();
    assert_eq!(legacy.expose().len(), 43, "the pre-0007 shape");
    let mut db = Db::open(&app).await;
    db.make_legacy(t0.session_id.parse().unwrap(), &legacy).await;
    assert_eq!(app.introspect(legacy.expose()).await["active"], true);

    let next = refresh_ok(&app, legacy.expose()).await;
    assert_eq!(next.session_id, t0.session_id);
    assert!(next.refresh.len() > 100, "rotated into the signed format");
    assert_eq!(app.introspect(legacy.expose()).await, json!({"active": false}));
    // Within the grace window the old token still gets the same answer.
    let again = app.refresh(legacy.expose()).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), next.raw);
    let after = refresh_ok(&app, &next.refresh).await;
    assert_eq!(
        db.count("SELECT count(*) FROM refresh_tokens").await,
        1,
        "refresh_tokens no longer grows"
    );
    // After the window the old token is reuse, detected as before.
    app.clock.advance(Duration::from_secs(11));
    assert_invalid_grant(&app, legacy.expose()).await;
    assert_eq!(
        revoke_reason(&app, &t0.session_id).await.as_deref(),
        Some("refresh_token_reuse")
    );
    app.assert_session_refused(&after).await;
}
