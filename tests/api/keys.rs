//! Keys without restarts: standard PKCS#8 files, reload while running,
//! publish before sign, and a rotation across two processes that refuses
//! no valid token.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use authd::auth::keys::{self, KeyAlg};
use serde_json::Value;

use crate::helpers::{jwt_part, Backend, Options, TestApp, Tokens};

fn authd_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_authd"))
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "authd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn pem_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem"))
        .collect();
    files.sort();
    files
}

#[test]
fn generated_keys_are_read_by_openssl_and_python_cryptography() {
    for alg in ["EdDSA", "ES256", "RS256"] {
        let dir = tempfile::tempdir().unwrap();
        authd_in(dir.path(), &["keys", "generate", "--alg", alg]);
        let files = pem_files(&dir.path().join("keys"));
        assert_eq!(files.len(), 1);
        let out = Command::new("openssl")
            .args(["pkey", "-in"])
            .arg(&files[0])
            .arg("-noout")
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl pkey refuses the {alg} key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys; from cryptography.hazmat.primitives.serialization import load_pem_private_key as l; \
                 print(type(l(open(sys.argv[1], 'rb').read(), None)).__name__)",
            ])
            .arg(&files[0])
            .output()
            .expect("python3 is installed");
        assert!(
            out.status.success(),
            "python cryptography refuses the {alg} key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // PKCS#8 v1: the version INTEGER right after the outer SEQUENCE is 0.
        let asn1 = Command::new("openssl")
            .args(["asn1parse", "-in"])
            .arg(&files[0])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&asn1.stdout);
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.contains("INTEGER") && l.ends_with(":00")),
            "{alg} is not PKCS#8 v1:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_made_by_openssl_and_older_v2_files_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let stamp = |minutes_ago: i64| {
        let t = time::OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago);
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    };
    let cases = [
        ("eddsa", vec!["genpkey", "-algorithm", "ed25519"], 3),
        (
            "es256",
            vec!["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            2,
        ),
        (
            "rs256",
            vec!["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            1,
        ),
    ];
    let mut kids = Vec::new();
    for (slug, args, minutes_ago) in cases {
        let kid = format!("{}-{slug}-0a0b0c", stamp(minutes_ago));
        let out = Command::new("openssl")
            .args(&args)
            .arg("-out")
            .arg(dir.path().join(format!("{kid}.pem")))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        kids.push(kid);
    }
    // An Ed25519 key as older authd wrote it: PKCS#8 v2 (with the public key).
    let v2 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let v2_kid = format!("{}-eddsa-0d0e0f", stamp(4));
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(v2.as_ref());
    std::fs::write(
        dir.path().join(format!("{v2_kid}.pem")),
        format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"),
    )
    .unwrap();

    let app = TestApp::spawn_with(
        Backend::Embedded,
        Options {
            keys_dir: Some(dir.path().to_path_buf()),
            key_publish_delay: Some(Duration::ZERO),
            ..Options::default()
        },
    )
    .await;
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    for kid in kids.iter().chain([&v2_kid]) {
        assert!(published.contains(&kid.as_str()), "{kid} not published: {published:?}");
    }
    let (_, tokens) = app.user_with_session().await;
    assert_eq!(
        jwt_part(&tokens.access, 0)["kid"],
        kids[2],
        "the newest (RS256) key signs"
    );
    app.assert_session_accepted(&tokens).await;
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

fn kid_of(tokens: &Tokens) -> String {
    jwt_part(&tokens.access, 0)["kid"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_added_while_running_is_published_at_once_and_signs_after_the_delay() {
    let app = TestApp::spawn_with(
        Backend::Embedded,
        Options {
            key_publish_delay: Some(Duration::from_secs(3)),
            key_reload_interval: Duration::from_millis(500),
            ..Options::default()
        },
    )
    .await;
    let (email, before) = app.user_with_session().await;
    let old = kid_of(&before);
    let new = keys::generate(&app.keys_dir, KeyAlg::ES256, time::OffsetDateTime::now_utc()).unwrap();
    let added = Instant::now();
    while !jwks_kids(&app).await.contains(&new) {
        assert!(
            added.elapsed() < Duration::from_millis(1500),
            "not published within the reload period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published_after = added.elapsed();
    assert!(jwks_kids(&app).await.contains(&old));
    // Published, not signing: tokens still come from the old key.
    let during = app.login(&email).await;
    assert_eq!(
        kid_of(&during),
        old,
        "signed {published_after:?} after the key was added"
    );
    // The kid's time has second precision: the delay ends within 3..4 s of `added`.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(added.elapsed())).await;
    let after = app.login(&email).await;
    assert_eq!(kid_of(&after), new);
    assert_eq!(jwt_part(&after.access, 0)["alg"], "ES256");
    for tokens in [&before, &during, &after] {
        app.assert_session_accepted(tokens).await;
    }
    // SIGHUP-less removal: a deleted key leaves at the next reload.
    std::fs::remove_file(app.keys_dir.join(format!("{old}.pem"))).unwrap();
    let removed = Instant::now();
    while jwks_kids(&app).await.contains(&old) {
        assert!(removed.elapsed() < Duration::from_millis(1500));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two processes on one Postgres: A reloads every 500 ms, B never reloads
/// and is restarted twice, late: once just before the new key signs, once
/// after the old key would have retired if retirement were counted from the
/// new key's creation. Tokens are minted on both all along and every token
/// not yet expired is checked on both: none may be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_across_two_processes_refuses_no_valid_token() {
    let access_ttl = Duration::from_secs(4);
    let publish_delay = Duration::from_secs(4);
    let first = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            access_ttl,
            key_publish_delay: Some(publish_delay),
            key_reload_interval: Duration::from_millis(500),
            ..Options::default()
        },
    )
    .await;
    let shared = || Options {
        access_ttl,
        key_publish_delay: Some(publish_delay),
        database_url: first.database_url.clone(),
        redis_prefix: Some(first.redis_prefix.clone()),
        keys_dir: Some(first.keys_dir.clone()),
        key_reload_interval: Duration::from_secs(3600),
        ..Options::default()
    };
    let mut second = Some(TestApp::spawn_with(Backend::Postgres, shared()).await);
    let (email, _) = first.user_with_session().await;
    let old = kid_of(&first.login(&email).await);

    let start = Instant::now();
    let mut rotated_at = None;
    let mut restarts = 0;
    let mut live: Vec<(Tokens, i64)> = Vec::new();
    let (mut minted, mut checks) = (0, 0);
    let mut kids_seen = std::collections::BTreeSet::new();
    while start.elapsed() < Duration::from_secs(16) {
        let t = start.elapsed();
        if rotated_at.is_none() && t > Duration::from_secs(1) {
            let kid = keys::generate(&first.keys_dir, KeyAlg::EdDSA, time::OffsetDateTime::now_utc()).unwrap();
            rotated_at = Some((Instant::now(), kid));
        }
        if let Some((at, _)) = &rotated_at {
            // Restart B before the new key signs (the kid's time is the
            // creation second, so signing starts 3..4 s after `at`), and
            // again after `created + access TTL + skew` (where a file-time
            // count would have retired the old key while tokens it signed
            // are still valid).
            let due = [Duration::from_millis(1500), Duration::from_secs(7)];
            if restarts < due.len() && at.elapsed() > due[restarts] {
                drop(second.take());
                second = Some(TestApp::spawn_with(Backend::Postgres, shared()).await);
                restarts += 1;
            }
        }
        let b = second.as_ref().unwrap();
        for app in [&first, b] {
            let tokens = app.login(&email).await;
            kids_seen.insert(kid_of(&tokens));
            let exp = jwt_part(&tokens.access, 1)["exp"].as_i64().unwrap();
            live.push((tokens, exp));
            minted += 1;
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        // Keep what is valid with a second to spare; authd accepts until exp + skew.
        live.retain(|(_, exp)| *exp > now);
        for (tokens, _) in &live {
            for app in [&first, b] {
                let me = app.get_bearer("/v1/me", &tokens.access).await.status();
                assert_eq!(
                    me,
                    200,
                    "a valid token from {} refused at {:?}",
                    kid_of(tokens),
                    start.elapsed()
                );
                let active = app.introspect(&tokens.access).await["active"].clone();
                assert_eq!(
                    active,
                    true,
                    "introspection refused a valid token at {:?}",
                    start.elapsed()
                );
                checks += 2;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, new) = rotated_at.unwrap();
    assert_eq!(restarts, 2);
    assert!(kids_seen.contains(&old) && kids_seen.contains(&new), "{kids_seen:?}");
    // Both processes sign with the new key now, and the old one has left the JWKS
    // (publish delay + access TTL + skew after the rotation: 10 s < 15 s).
    let b = second.as_ref().unwrap();
    for app in [&first, b] {
        assert_eq!(kid_of(&app.login(&email).await), new);
        assert_eq!(jwks_kids(app).await, vec![new.clone()]);
    }
    eprintln!("rotation: {minted} tokens minted, {checks} checks, none refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_keys_directory_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("AUTHD_KEY_RELOAD_INTERVAL", "0"), ("AUTHD_KEY_PUBLISH_DELAY", "0")];
    let authd = crate::binary::Authd::start(dir.path(), &env);
    let http = reqwest::Client::new();
    let kids = || async {
        let jwks: Value = http
            .get(format!("{}/.well-known/jwks.json", authd.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"].as_array().unwrap().len()
    };
    assert_eq!(kids().await, 1);
    authd_in(dir.path(), &["keys", "rotate"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kids().await, 1, "no periodic reload configured");
    let pid = authd.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let sent = Instant::now();
    while kids().await != 2 {
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "SIGHUP did not reload the keys"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
