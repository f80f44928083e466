//! The verifier against a real authd binary: discovery, authd's rules,
//! the token cache, unknown-kid refetch, the extractor and the layer, and
//! the stale-feed behaviour (fail closed, or introspection).

// Tests read the real clock for deadlines and token times.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use authd_verify::{Authenticated, RequireTokenLayer, Verifier, VerifyError};
use axum::body::Body;
use axum::routing::get;
use axum::Router;
use common::{Client, Signer, Site, AUDIENCE, SVC_ID, SVC_SECRET};
use serde_json::json;
use tower::ServiceExt;

/// Signature rules only (the feed is covered in `feed.rs`).
async fn offline(site: &Site) -> Verifier {
    Verifier::builder(site.base())
        .audience(AUDIENCE)
        .without_revocation_feed()
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_the_jwks_and_verifies_authd_tokens() {
    let site = Site::embedded(&[]);
    let _authd = site.start();
    let client = Client::new(site.base());
    let (_, user_id, tokens) = client.user().await;
    let verifier = offline(&site).await;
    assert_eq!(verifier.known_keys(), 1);
    let claims = verifier.verify(&tokens.access).await.unwrap();
    assert_eq!(claims.sub, user_id);
    assert_eq!(claims.sid, tokens.session_id);
    assert_eq!(claims.aud, vec![AUDIENCE.to_string()]);
    assert_eq!(claims.iss, site.base());

    // A wrong issuer is refused at build time (RFC 8414 §3.3).
    let wrong = Verifier::builder(format!("{}/", site.base().replace("127.0.0.1", "localhost")))
        .audience(AUDIENCE)
        .without_revocation_feed()
        .build()
        .await;
    assert!(
        matches!(wrong, Err(authd_verify::BuildError::IssuerMismatch { .. })),
        "{wrong:?}"
    );
    // An audience is required, and so are credentials for the feed.
    assert!(Verifier::builder(site.base())
        .without_revocation_feed()
        .build()
        .await
        .is_err());
    assert!(Verifier::builder(site.base()).audience(AUDIENCE).build().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_rules_as_authd() {
    let site = Site::embedded(&[]);
    let _authd = site.start();
    let client = Client::new(site.base());
    let (_, _, tokens) = client.user().await;
    let verifier = offline(&site).await;
    let key = Signer::from_dir(&site.keys_dir());
    let iss = site.base();
    let good = key.sign(&key.header(), &Signer::claims(&iss, 60));
    assert!(verifier.verify(&good).await.is_ok());

    let cases: Vec<(&str, String, VerifyError)> = vec![
        ("empty", String::new(), VerifyError::Malformed),
        ("garbage", "a.b.c".into(), VerifyError::Malformed),
        ("too long", "a".repeat(9000), VerifyError::Malformed),
        (
            "tampered payload",
            {
                let mut parts: Vec<String> = tokens.access.split('.').map(str::to_string).collect();
                let claims = Signer::claims(&iss, 60);
                use base64::Engine;
                parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
                parts.join(".")
            },
            VerifyError::Invalid,
        ),
        (
            "no typ",
            key.sign(&json!({"alg": "EdDSA", "kid": key.kid}), &Signer::claims(&iss, 60)),
            VerifyError::WrongType,
        ),
        (
            "typ JWT",
            key.sign(
                &json!({"typ": "JWT", "alg": "EdDSA", "kid": key.kid}),
                &Signer::claims(&iss, 60),
            ),
            VerifyError::WrongType,
        ),
        (
            "alg none",
            {
                use base64::engine::general_purpose::URL_SAFE_NO_PAD;
                use base64::Engine;
                format!(
                    "{}.{}.",
                    URL_SAFE_NO_PAD.encode(json!({"typ": "at+jwt", "alg": "none", "kid": key.kid}).to_string()),
                    URL_SAFE_NO_PAD.encode(Signer::claims(&iss, 60).to_string())
                )
            },
            VerifyError::WrongAlgorithm,
        ),
        (
            "alg not the key's",
            key.sign(
                &json!({"typ": "at+jwt", "alg": "ES256", "kid": key.kid}),
                &Signer::claims(&iss, 60),
            ),
            VerifyError::WrongAlgorithm,
        ),
        (
            "attacker key behind jku/jwk headers, real kid",
            Signer::attacker(&key.kid).sign(
                &json!({"typ": "at+jwt", "alg": "EdDSA", "kid": key.kid, "jku": "http://127.0.0.1:1/jwks",
                        "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}),
                &Signer::claims(&iss, 60),
            ),
            VerifyError::Invalid,
        ),
        (
            "unknown kid",
            Signer::attacker("nope").sign(
                &json!({"typ": "at+jwt", "alg": "EdDSA", "kid": "nope"}),
                &Signer::claims(&iss, 60),
            ),
            VerifyError::UnknownKey,
        ),
        (
            "wrong issuer",
            key.sign(&key.header(), &Signer::claims("http://evil.example", 60)),
            VerifyError::Invalid,
        ),
        (
            "wrong audience",
            key.sign(&key.header(), &{
                let mut c = Signer::claims(&iss, 60);
                c["aud"] = json!("someone-else");
                c
            }),
            VerifyError::Invalid,
        ),
        (
            "no sid",
            key.sign(&key.header(), &{
                let mut c = Signer::claims(&iss, 60);
                c.as_object_mut().unwrap().remove("sid");
                c
            }),
            VerifyError::Malformed,
        ),
        (
            "no nbf",
            key.sign(&key.header(), &{
                let mut c = Signer::claims(&iss, 60);
                c.as_object_mut().unwrap().remove("nbf");
                c
            }),
            VerifyError::Malformed,
        ),
        (
            "expired beyond the skew",
            key.sign(&key.header(), &Signer::claims(&iss, -3)),
            VerifyError::Expired,
        ),
        (
            "nbf beyond the skew",
            key.sign(&key.header(), &{
                let mut c = Signer::claims(&iss, 60);
                c["nbf"] = json!(c["nbf"].as_i64().unwrap() + 5);
                c
            }),
            VerifyError::NotYetValid,
        ),
    ];
    for (name, token, expected) in cases {
        let got = verifier.verify(&token).await;
        assert_eq!(got.as_ref().err(), Some(&expected), "{name}: {got:?}");
    }
    // Within the 2 s skew both ways.
    let skewed = key.sign(&key.header(), &{
        let mut c = Signer::claims(&iss, -1);
        c["nbf"] = json!(c["nbf"].as_i64().unwrap() + 1);
        c
    });
    assert!(verifier.verify(&skewed).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_still_time_checked() {
    let site = Site::embedded(&[]);
    let _authd = site.start();
    let verifier = Verifier::builder(site.base())
        .audience(AUDIENCE)
        .clock_skew(Duration::ZERO)
        .without_revocation_feed()
        .build()
        .await
        .unwrap();
    let key = Signer::from_dir(&site.keys_dir());
    let token = key.sign(&key.header(), &Signer::claims(&site.base(), 2));
    assert!(verifier.verify(&token).await.is_ok());
    assert!(verifier.verify(&token).await.is_ok(), "second use, from the cache");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(verifier.verify(&token).await, Err(VerifyError::Expired));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_is_fetched_at_once_but_rate_limited() {
    let site = Site::embedded(&[("AUTHD_KEY_PUBLISH_DELAY", "0"), ("AUTHD_KEY_RELOAD_INTERVAL", "200ms")]);
    let _authd = site.start();
    let client = Client::new(site.base());
    let (email, _, _) = client.user().await;
    let verifier = Verifier::builder(site.base())
        .audience(AUDIENCE)
        .without_revocation_feed()
        .jwks_refresh_interval(Duration::from_secs(3600))
        .unknown_kid_refetch_interval(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    assert_eq!(verifier.known_keys(), 1);
    // The fetch at build time counts against the refetch interval too.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // A rotation the verifier has not seen: the new kid is fetched at once,
    // although the background refresh is an hour away.
    site.run(&["keys", "rotate"], &[]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rotated = client.login(&email).await;
    let fetched_at = Instant::now();
    verifier.verify(&rotated.access).await.unwrap();
    assert_eq!(verifier.known_keys(), 2);

    // Within the refetch interval a second unknown kid does not cause a
    // fetch, even a legitimate one; after it, it does.
    site.run(&["keys", "rotate"], &[]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = client.login(&email).await;
    assert!(fetched_at.elapsed() < Duration::from_secs(2));
    assert_eq!(verifier.verify(&again.access).await, Err(VerifyError::UnknownKey));
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(fetched_at.elapsed()) + Duration::from_millis(100)).await;
    verifier.verify(&again.access).await.unwrap();
    assert_eq!(verifier.known_keys(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extractor_and_the_layer_answer_401_with_a_bearer_challenge() {
    let site = Site::embedded(&[]);
    let _authd = site.start();
    let client = Client::new(site.base());
    let (_, user_id, tokens) = client.user().await;
    let verifier = offline(&site).await;

    let by_extractor = Router::new()
        .route(
            "/me",
            get(|Authenticated(claims): Authenticated| async move { claims.sub }),
        )
        .with_state(verifier.clone());
    let by_layer = Router::new()
        .route(
            "/me",
            get(|axum::Extension(claims): axum::Extension<authd_verify::Claims>| async move { claims.sub }),
        )
        .layer(RequireTokenLayer::new(verifier.clone()));
    for app in [by_extractor, by_layer] {
        let call = |auth: Option<String>| {
            let app = app.clone();
            async move {
                let mut request = http::Request::get("/me");
                if let Some(auth) = auth {
                    request = request.header("authorization", auth);
                }
                app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap()
            }
        };
        let ok = call(Some(format!("Bearer {}", tokens.access))).await;
        assert_eq!(ok.status(), 200);
        let body = axum::body::to_bytes(ok.into_body(), 1024).await.unwrap();
        assert_eq!(body, user_id.as_bytes());
        let missing = call(None).await;
        assert_eq!(missing.status(), 401);
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        let bad = call(Some(format!("Bearer {}x", tokens.access))).await;
        assert_eq!(bad.status(), 401);
        assert_eq!(bad.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    }
}

/// `max_staleness` zero: the feed always counts as stale, so these hold
/// whether or not the feed is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_feed_fails_closed_or_falls_back_to_introspection() {
    let site = Site::embedded(&[]);
    let _authd = site.start();
    let client = Client::new(site.base());
    let (_, _, tokens) = client.user().await;

    let closed = Verifier::builder(site.base())
        .audience(AUDIENCE)
        .client_credentials(SVC_ID, SVC_SECRET)
        .max_staleness(Duration::ZERO)
        .http_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    assert_eq!(
        closed.verify(&tokens.access).await,
        Err(VerifyError::RevocationFeedStale)
    );

    let fallback = Verifier::builder(site.base())
        .audience(AUDIENCE)
        .client_credentials(SVC_ID, SVC_SECRET)
        .max_staleness(Duration::ZERO)
        .introspection_fallback(true)
        .http_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    assert!(fallback.verify(&tokens.access).await.is_ok());
    let r = client
        .http
        .post(client.url("/v1/logout"))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(fallback.verify(&tokens.access).await, Err(VerifyError::SessionRevoked));

    // Wrong credentials: introspection refuses, the verifier fails closed.
    let wrong = Verifier::builder(site.base())
        .audience(AUDIENCE)
        .client_credentials(SVC_ID, "not-the-secret-at-all")
        .max_staleness(Duration::ZERO)
        .introspection_fallback(true)
        .http_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let (_, _, other) = client.user().await;
    assert_eq!(wrong.verify(&other.access).await, Err(VerifyError::RevocationFeedStale));
}
