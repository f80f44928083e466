use std::time::Duration;

use authd::auth::keys::KeyAlg;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{jwt_part, Backend, Options, TestApp};

both_backends!(
    access_tokens_follow_rfc_9068,
    jwks_verifies_every_supported_algorithm,
    forged_and_expired_tokens_are_refused,
    metadata_describes_the_endpoints
);

async fn access_tokens_follow_rfc_9068(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, tokens) = app.user_with_session().await;
    let header = jwt_part(&tokens.access, 0);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].as_str().unwrap().contains("-eddsa-"));
    let claims = jwt_part(&tokens.access, 1);
    assert_eq!(claims["iss"], "http://authd.test");
    assert_eq!(claims["aud"], "authd-test");
    assert_eq!(claims["sid"], tokens.raw["session_id"]);
    assert_eq!(claims["client_id"], "web");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
    assert_eq!(claims["nbf"], claims["iat"]);
    assert!(claims["jti"].as_str().unwrap().len() >= 32);
    assert!(claims["sub"].as_str().unwrap().parse::<uuid::Uuid>().is_ok());
    assert!(claims.get("scope").is_none(), "no scope granted, none claimed");
}

async fn verify_with_jwks(app: &TestApp, token: &str) -> Value {
    let jwks: jsonwebtoken::jwk::JwkSet = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jwt_part(token, 0)["kid"].as_str().unwrap().to_string();
    let jwk = jwks.find(&kid).expect("token kid is published");
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let alg = jsonwebtoken::decode_header(token).unwrap().alg;
    let mut v = Validation::new(alg);
    v.set_audience(&["authd-test"]);
    v.set_issuer(&["http://authd.test"]);
    jsonwebtoken::decode::<Value>(token, &key, &v).unwrap().claims
}

async fn jwks_verifies_every_supported_algorithm(backend: Backend) {
    for alg in [KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256] {
        let app = TestApp::spawn_with(
            backend,
            Options {
                alg,
                ..Options::default()
            },
        )
        .await;
        let (_, tokens) = app.user_with_session().await;
        assert_eq!(jwt_part(&tokens.access, 0)["alg"], alg.to_string());
        let claims = verify_with_jwks(&app, &tokens.access).await;
        assert_eq!(claims["sid"], tokens.raw["session_id"]);
        app.assert_session_accepted(&tokens).await;
        let jwks: Value = app
            .http
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for k in jwks["keys"].as_array().unwrap() {
            assert!(
                k.get("d").is_none() && k.get("p").is_none(),
                "private material published"
            );
        }
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// The full forgery catalogue is `attacks::forged_access_tokens_are_refused`;
/// this runs the basics and expiry on both backends.
async fn forged_and_expired_tokens_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, tokens) = app.user_with_session().await;
    let parts: Vec<&str> = tokens.access.split('.').collect();
    let mut tampered = jwt_part(&tokens.access, 1);
    tampered["sub"] = json!(uuid::Uuid::now_v7().to_string());
    let forged = [
        format!("{}.{}.", b64(&json!({"alg": "none", "typ": "at+jwt"})), parts[1]),
        format!("{}.{}.{}", parts[0], b64(&tampered), parts[2]),
        "not.a.jwt".to_string(),
        "x".repeat(8_000),
    ];
    for token in &forged {
        let r = app.get_bearer("/v1/me", token).await;
        assert_eq!(r.status(), 401, "accepted: {token:.60}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_token");
        assert_eq!(app.introspect(token).await, json!({"active": false}));
    }

    // The genuine token works, then expires: 15 min + 2 s skew.
    app.assert_session_accepted(&tokens).await;
    app.clock.advance(Duration::from_secs(900 + 3));
    assert_eq!(app.get_bearer("/v1/me", &tokens.access).await.status(), 401);
    assert_eq!(app.introspect(&tokens.access).await, json!({"active": false}));
}

async fn metadata_describes_the_endpoints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let m: Value = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["issuer"], "http://authd.test");
    for field in [
        "token_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
    ] {
        assert!(m[field].as_str().unwrap().starts_with("http://authd.test/"), "{field}");
    }
    assert_eq!(m["grant_types_supported"], json!(["password", "refresh_token"]));
    assert_eq!(
        m["introspection_endpoint_auth_methods_supported"],
        json!(["client_secret_basic"])
    );
    assert!(m["token_endpoint_auth_methods_supported"].is_array());
    assert!(m["revocation_endpoint_auth_methods_supported"].is_array());
}
