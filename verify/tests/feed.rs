//! The revocation feed end to end: real authd processes on one Postgres,
//! a verifier following one of them. These need authd's
//! `/v1/revocations` and `/v1/revocations/stream`.

// Tests read the real clock for deadlines and token times.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use authd_verify::{Verifier, VerifyError};
use common::{Client, Site, Tokens, AUDIENCE, PASSWORD, SVC_ID, SVC_SECRET};
use serde_json::json;

/// DESIGN.md: a revocation is refused by every connected verifier within 1 s.
const PROPAGATION: Duration = Duration::from_secs(1);

struct Deployment {
    database: String,
    prefix: String,
    keys: tempfile::TempDir,
}

impl Deployment {
    async fn new() -> Deployment {
        let keys = tempfile::tempdir().unwrap();
        let deployment = Deployment {
            database: common::fresh_database().await,
            prefix: format!("authd-vtest:{}:", uuid::Uuid::new_v4().simple()),
            keys,
        };
        deployment.site(&[]).run(&["keys", "generate"], &[]);
        deployment
    }

    fn name(&self) -> String {
        self.database.rsplit('/').next().unwrap_or_default().to_string()
    }

    fn site(&self, extra: &[(&str, &str)]) -> Site {
        Site::postgres(&self.database, &self.prefix, Path::new(self.keys.path()), extra)
    }
}

impl Drop for Deployment {
    /// Its processes are gone by now (declared after it, dropped before).
    fn drop(&mut self) {
        let name = self.name();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::PgConnection::connect(&common::database_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

async fn verifier(site: &Site, max_staleness: Duration) -> Verifier {
    Verifier::builder(common::ISSUER)
        .via(site.base())
        .audience(AUDIENCE)
        .client_credentials(SVC_ID, SVC_SECRET)
        .max_staleness(max_staleness)
        .build()
        .await
        .unwrap()
}

/// Polls until `verify` refuses the token as revoked; the time it took.
async fn refused_after(verifier: &Verifier, token: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match verifier.verify(token).await {
            Err(VerifyError::SessionRevoked) => return start.elapsed(),
            other => assert!(start.elapsed() < limit, "still {other:?} after {:?}", start.elapsed()),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn accepted(verifier: &Verifier, tokens: &Tokens) {
    let got = verifier.verify(&tokens.access).await;
    assert!(got.is_ok(), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_path_is_refused_within_a_second() {
    let deployment = Deployment::new().await;
    let site = deployment.site(&[]);
    let _authd = site.start();
    let client = Client::new(site.base());
    let verifier = verifier(&site, Duration::from_secs(10)).await;
    let http = &client.http;
    let mut delays = Vec::new();

    // logout
    let (_, _, s) = client.user().await;
    accepted(&verifier, &s).await;
    let r = http
        .post(client.url("/v1/logout"))
        .bearer_auth(&s.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    delays.push(("logout", refused_after(&verifier, &s.access, PROPAGATION).await));

    // DELETE /v1/sessions/{id}
    let (email, _, s1) = client.user().await;
    let s2 = client.login(&email).await;
    accepted(&verifier, &s1).await;
    let r = http
        .delete(client.url(&format!("/v1/sessions/{}", s1.session_id)))
        .bearer_auth(&s2.access)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    delays.push((
        "delete session",
        refused_after(&verifier, &s1.access, PROPAGATION).await,
    ));
    accepted(&verifier, &s2).await;

    // revoke-others
    let (email, _, s1) = client.user().await;
    let s2 = client.login(&email).await;
    accepted(&verifier, &s1).await;
    let r = http
        .post(client.url("/v1/sessions/revoke-others"))
        .bearer_auth(&s2.access)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    delays.push(("revoke-others", refused_after(&verifier, &s1.access, PROPAGATION).await));
    accepted(&verifier, &s2).await;

    // password change
    let (email, _, s1) = client.user().await;
    let s2 = client.login(&email).await;
    accepted(&verifier, &s1).await;
    let r = http
        .post(client.url("/v1/me/password"))
        .bearer_auth(&s2.access)
        .json(&json!({"current_password": PASSWORD, "new_password": "another long passphrase 42"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    delays.push((
        "password change",
        refused_after(&verifier, &s1.access, PROPAGATION).await,
    ));

    // refresh token reuse
    let (_, _, s) = client.user().await;
    let t1 = common::tokens(client.refresh(&s.refresh).await.json().await.unwrap());
    let _t2 = common::tokens(client.refresh(&t1.refresh).await.json().await.unwrap());
    accepted(&verifier, &t1).await;
    let reuse = client.refresh(&s.refresh).await;
    assert_eq!(reuse.status(), 400);
    delays.push(("refresh reuse", refused_after(&verifier, &t1.access, PROPAGATION).await));

    // admin revoke-all
    let (email, user_id, s1) = client.user().await;
    let s2 = client.login(&email).await;
    accepted(&verifier, &s1).await;
    let r = http
        .delete(client.url(&format!("/v1/admin/users/{user_id}/sessions")))
        .basic_auth(SVC_ID, Some(SVC_SECRET))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    delays.push(("admin", refused_after(&verifier, &s1.access, PROPAGATION).await));
    delays.push((
        "admin, second session",
        refused_after(&verifier, &s2.access, PROPAGATION).await,
    ));

    // RFC 7009 revoke of the refresh token
    let (_, _, s) = client.user().await;
    accepted(&verifier, &s).await;
    let r = http
        .post(client.url("/oauth/revoke"))
        .form(&[("token", s.refresh.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    delays.push(("oauth/revoke", refused_after(&verifier, &s.access, PROPAGATION).await));

    eprintln!("revocation → verifier refusal: {delays:?}");
    assert!(verifier.revoked_sessions() >= 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_on_process_b_sees_revocations_made_through_process_a() {
    let deployment = Deployment::new().await;
    let (site_a, site_b) = (deployment.site(&[]), deployment.site(&[]));
    let (_a, _b) = (site_a.start(), site_b.start());
    let a = Client::new(site_a.base());
    let verifier = verifier(&site_b, Duration::from_secs(10)).await;
    for _ in 0..5 {
        let (_, _, s) = a.user().await;
        accepted(&verifier, &s).await;
        let r = a
            .http
            .post(a.url("/v1/logout"))
            .bearer_auth(&s.access)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        refused_after(&verifier, &s.access, PROPAGATION).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_authd_fails_closed_and_a_revocation_missed_meanwhile_is_refused_once_caught_up() {
    let deployment = Deployment::new().await;
    let (site_a, site_b) = (deployment.site(&[]), deployment.site(&[]));
    let (a, _b) = (site_a.start(), site_b.start());
    let b = Client::new(site_b.base());
    // Longer than the feed's 5 s heartbeat, as any real max_staleness must be.
    let max_staleness = Duration::from_secs(6);
    let verifier = verifier(&site_a, max_staleness).await;
    let (email, _, s1) = b.user().await;
    let s2 = b.login(&email).await;
    accepted(&verifier, &s1).await;

    a.kill();
    let killed = Instant::now();
    // Trusted while the silence is within max_staleness, refused after it.
    loop {
        match verifier.verify(&s1.access).await {
            Ok(_) => assert!(
                killed.elapsed() <= max_staleness,
                "still trusted after {:?}",
                killed.elapsed()
            ),
            Err(VerifyError::RevocationFeedStale) => break,
            Err(other) => panic!("{other:?}"),
        }
        assert!(killed.elapsed() < max_staleness + Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The silence began at the last heartbeat heard, up to one heartbeat
    // period (5 s) before the kill.
    let stale_after = killed.elapsed();
    assert!(
        stale_after >= max_staleness - Duration::from_secs(5) - Duration::from_millis(100),
        "{stale_after:?}"
    );

    // Revoked through B while the verifier's authd is down.
    let r = b
        .http
        .post(b.url("/v1/logout"))
        .bearer_auth(&s1.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(verifier.verify(&s1.access).await, Err(VerifyError::RevocationFeedStale));

    let _a = site_a.start();
    let back = Instant::now();
    // Reconnect (backoff at most 5 s), resume from the cursor: the missed
    // revocation arrives, the other session is trusted again.
    refused_after(&verifier, &s1.access, Duration::from_secs(10)).await;
    eprintln!(
        "stale after {stale_after:?}; caught up {:?} after authd came back",
        back.elapsed()
    );
    accepted(&verifier, &s2).await;
}
