//! A quick measurement (not a benchmark): verifier rates on one core
//! against the raw aws-lc-rs Ed25519 verification of the same tokens.
//! `cargo test -p authd-verify --test rates -- --ignored --nocapture`
//! (add `--config 'profile.dev.package.authd-verify.opt-level=2'` to
//! measure optimised code).

// Tests read the real clock for deadlines and token times.
#![allow(clippy::disallowed_methods)]

mod common;

use std::time::Instant;

use authd_verify::Verifier;
use common::{Signer, Site, AUDIENCE};

#[tokio::test]
#[ignore = "a measurement; prints rates"]
async fn verify_rates_against_raw_signature_checks() {
    let site = Site::embedded(&[]);
    let _authd = site.start();
    let verifier = Verifier::builder(site.base())
        .audience(AUDIENCE)
        .without_revocation_feed()
        .cache_capacity(1_000_000)
        .build()
        .await
        .unwrap();
    let key = Signer::from_dir(&site.keys_dir());
    let n = 20_000;
    let tokens: Vec<String> = (0..n)
        .map(|_| key.sign(&key.header(), &Signer::claims(&site.base(), 900)))
        .collect();

    let jwks: serde_json::Value = reqwest::get(format!("{}/.well-known/jwks.json", site.base()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let x = URL_SAFE_NO_PAD.decode(jwks["keys"][0]["x"].as_str().unwrap()).unwrap();
    let public = aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ED25519, x);
    let split: Vec<(Vec<u8>, Vec<u8>)> = tokens
        .iter()
        .map(|t| {
            let dot = t.rfind('.').unwrap();
            (
                t.as_bytes()[..dot].to_vec(),
                URL_SAFE_NO_PAD.decode(&t[dot + 1..]).unwrap(),
            )
        })
        .collect();

    // Interleaved in chunks, so both see the same machine load (it is shared).
    let (mut raw_time, mut fresh_time) = (0f64, 0f64);
    for chunk in 0..(n / 1000) {
        let range = chunk * 1000..(chunk + 1) * 1000;
        let start = Instant::now();
        for (input, signature) in &split[range.clone()] {
            public.verify(input, signature).unwrap();
        }
        raw_time += start.elapsed().as_secs_f64();
        let start = Instant::now();
        for token in &tokens[range] {
            verifier.verify(token).await.unwrap();
        }
        fresh_time += start.elapsed().as_secs_f64();
    }
    let raw = n as f64 / raw_time;
    let fresh = n as f64 / fresh_time;

    // For comparison: jsonwebtoken's decode alone (no cache, no claims checks).
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.validate_aud = false;
    let start = Instant::now();
    for token in &tokens {
        jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation).unwrap();
    }
    let decode_only = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "jsonwebtoken::decode alone {decode_only:.0}/s ({:.1} % of raw)",
        100.0 * decode_only / raw
    );

    let repeats = 1_000_000;
    let start = Instant::now();
    for i in 0..repeats {
        verifier.verify(&tokens[i % 1000]).await.unwrap();
    }
    let repeated = repeats as f64 / start.elapsed().as_secs_f64();
    println!(
        "raw Ed25519 verify {raw:.0}/s; verifier, fresh tokens {fresh:.0}/s ({:.1} % of raw); repeated tokens {repeated:.0}/s",
        100.0 * fresh / raw
    );
}
