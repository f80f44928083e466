use std::time::Duration;

use serde_json::Value;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(device_list_shows_live_sessions_only);

async fn device_list_shows_live_sessions_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (email, a) = app.user_with_session().await;
    let b = app.login(&email).await;
    let c = app.login(&email).await;
    let (_, other_user) = app.user_with_session().await;
    assert_eq!(app.post_bearer("/v1/logout", &c.access).await.status(), 204);

    let list: Value = app.get_bearer("/v1/sessions", &a.access).await.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    let ids: Vec<&str> = sessions.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        vec![b.session_id.as_str(), a.session_id.as_str()],
        "newest first, revoked and foreign ones absent"
    );
    assert!(!ids.contains(&other_user.session_id.as_str()));
    for s in sessions {
        for field in [
            "id",
            "device_name",
            "created_at",
            "last_used_at",
            "expires_at",
            "current",
        ] {
            assert!(!s[field].is_null(), "{field} missing in {s}");
        }
        assert_eq!(s["current"], s["id"] == a.session_id.as_str());
        assert_eq!(s["user_agent"], "authd-tests/1.0");
    }
    // Idle-expired sessions vanish from the list too.
    app.clock.advance(Duration::from_secs(30 * 86400 + 1));
    let fresh = app.login(&email).await;
    let list: Value = app
        .get_bearer("/v1/sessions", &fresh.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
}
