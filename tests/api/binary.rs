//! The real binary, started as a newcomer would: an empty directory, no
//! environment, no servers.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::PASSWORD;

pub struct Authd {
    pub child: Child,
    pub base: String,
}

impl Authd {
    /// Starts `authd` (no subcommand) in `dir` with only the given variables.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Authd {
        let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
        command
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AUTHD_LISTEN", "127.0.0.1:0")
            .env("AUTHD_ARGON2_M_KIB", "1024")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("addr=").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("authd reports its address");
        Authd {
            child,
            base: format!("http://{addr}"),
        }
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Authd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_failing(dir: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_authd"));
    command.current_dir(dir).env_clear().env("AUTHD_LISTEN", "127.0.0.1:0");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn embedded_mode_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let authd = Authd::start(dir.path(), &[]);
    let base = authd.base.clone();
    let r = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"email": "ann@example.org", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let login = || {
        http.post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", "password"),
                ("username", "ann@example.org"),
                ("password", PASSWORD),
            ])
            .send()
    };
    let kept: Value = login().await.unwrap().json().await.unwrap();
    let kept: Value = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", kept["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dropped: Value = login().await.unwrap().json().await.unwrap();
    let r = http
        .post(format!("{base}/v1/logout"))
        .bearer_auth(dropped["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let jwks_before: Value = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(authd.stop().success(), "SIGTERM exits 0");
    assert!(dir.path().join("data/authd.db").exists());
    assert!(dir.path().join("keys").read_dir().unwrap().count() == 1);

    let authd = Authd::start(dir.path(), &[]);
    let base = authd.base.clone();
    let jwks_after: Value = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks_before, jwks_after, "the generated key is reused");
    let me = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(kept["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "access tokens survive the restart");
    let list: Value = http
        .get(format!("{base}/v1/sessions"))
        .bearer_auth(kept["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = list["sessions"].as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, vec![&kept["session_id"]]);
    let r = http
        .get(format!("{base}/v1/me"))
        .bearer_auth(dropped["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "revocation survives the restart");
    let r = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", kept["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "rotation state survives the restart");
    drop(authd);
}

#[test]
fn bad_data_dirs_fail_with_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), "x").unwrap();
    let (code, stderr) = run_failing(dir.path(), &[("AUTHD_DATA_DIR", "a-file/data")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("AUTHD_DATA_DIR"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/authd.db"),
        "this is not a database, just bytes ".repeat(200),
    )
    .unwrap();
    let (code, stderr) = run_failing(dir.path(), &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("authd.db"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn invalid_configuration_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("AUTHD_ACCESS_TTL", "soon"),
        ("AUTHD_ALG", "HS256"),
        ("AUTHD_CLIENTS", "nosecret"),
        ("AUTHD_LISTEN", "nowhere"),
    ] {
        let (code, stderr) = run_failing(dir.path(), &[(var, value)]);
        assert_ne!(code, 0, "{var}={value}");
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
    // Without migrating: the shared database's schema is not this test's to change.
    let (code, stderr) = run_failing(
        dir.path(),
        &[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
            ("AUTHD_MIGRATE_ON_START", "false"),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("authd keys generate"),
        "production without keys: {stderr}"
    );
}

fn run_ok(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_authd"))
        .current_dir(dir)
        .env_clear()
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

#[test]
fn key_commands_and_one_cleanup_pass() {
    let dir = tempfile::tempdir().unwrap();
    let generated = run_ok(dir.path(), &["keys", "generate", "--alg", "ES256"]);
    assert!(generated.contains("-es256-"), "{generated}");
    let out = Command::new(env!("CARGO_BIN_EXE_authd"))
        .current_dir(dir.path())
        .env_clear()
        .args(["keys", "generate"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a second generate refuses and points to rotate");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rotate"));
    std::thread::sleep(Duration::from_millis(1100));
    let rotated = run_ok(dir.path(), &["keys", "rotate"]);
    assert!(rotated.contains("is published now and signs from"), "{rotated}");
    let list = run_ok(dir.path(), &["keys", "list"]);
    assert!(
        list.contains("signing (signs new tokens since") && list.contains("published (in the JWKS; signs from"),
        "{list}"
    );
    // With no publish delay the new key signs at once and the old one retires.
    let out = Command::new(env!("CARGO_BIN_EXE_authd"))
        .current_dir(dir.path())
        .env_clear()
        .env("AUTHD_KEY_PUBLISH_DELAY", "0")
        .args(["keys", "list"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("signing (signs new tokens since") && list.contains("retiring (published until"),
        "{list}"
    );
    #[cfg(unix)]
    for entry in std::fs::read_dir(dir.path().join("keys")).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "private keys are owner-only");
    }
    let cleaned = run_ok(dir.path(), &["cleanup"]);
    assert!(cleaned.contains("deleted 0 ended sessions"), "{cleaned}");
    let migrated = run_ok(dir.path(), &["migrate"]);
    assert!(migrated.contains("sqlite:"), "{migrated}");
}
