use std::time::Duration;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(cleanup_deletes_only_long_ended_sessions);

async fn cleanup_deletes_only_long_ended_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (email, revoked) = app.user_with_session().await;
    let idle = app.login(&email).await;
    assert_eq!(app.post_bearer("/v1/logout", &revoked.access).await.status(), 204);
    let store = app.state.sessions.store().clone();
    let sid = |t: &crate::helpers::Tokens| t.session_id.parse().unwrap();

    // Within retention nothing goes.
    assert_eq!(
        app.state
            .sessions
            .cleanup_once(Duration::from_secs(7 * 86400))
            .await
            .unwrap(),
        0
    );
    assert!(store.get_session(sid(&revoked)).await.unwrap().is_some());

    // 38 days on: the revoked one is 38 days old, the idle one ended 8 days ago.
    app.clock.advance(Duration::from_secs(38 * 86400));
    let live = app.login(&email).await;
    let deleted = app
        .state
        .sessions
        .cleanup_once(Duration::from_secs(7 * 86400))
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    assert!(store.get_session(sid(&revoked)).await.unwrap().is_none());
    assert!(store.get_session(sid(&idle)).await.unwrap().is_none());
    app.assert_session_accepted(&live).await;
    // Deleted sessions stay refused (and their refresh tokens are gone with them).
    assert_eq!(app.refresh(&idle.refresh).await.status(), 400);
}
