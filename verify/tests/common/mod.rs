//! The real `authd` binary on loopback, configured by environment only,
//! and helpers to drive it as a frontend and a service client would.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

pub const SVC_ID: &str = "svc";
pub const SVC_SECRET: &str = "svc-secret-0123456789";
pub const PASSWORD: &str = "correct horse battery staple";
pub const AUDIENCE: &str = "authd-test";
/// The issuer every process of a Postgres deployment shares (the name of
/// the deployment, not any one process's address).
pub const ISSUER: &str = "http://authd.test";

/// Builds the `authd` binary once per test process and returns its path.
pub fn authd_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["build", "-q", "-p", "authd", "--bin", "authd"])
            .status()
            .unwrap();
        assert!(status.success(), "building authd failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug").join("authd")
    })
    .clone()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fresh Postgres database for one test; its URL.
pub async fn fresh_database() -> String {
    use sqlx::Connection;
    let name = format!("authd_v_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = database_url();
    let i = base.rfind('/').unwrap();
    format!("{}/{}", &base[..i], name)
}

/// Where an authd process keeps its state, so a restart (same port, same
/// directory, same env) is the same deployment.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub env: Vec<(String, String)>,
}

impl Site {
    /// Embedded mode (SQLite + in-process cache), issuer = its own address.
    pub fn embedded(extra: &[(&str, &str)]) -> Site {
        let port = free_port();
        let mut env = vec![
            ("AUTHD_LISTEN".to_string(), format!("127.0.0.1:{port}")),
            ("AUTHD_ISSUER".to_string(), format!("http://127.0.0.1:{port}")),
            ("AUTHD_AUDIENCE".to_string(), AUDIENCE.to_string()),
            ("AUTHD_CLIENTS".to_string(), format!("{SVC_ID}:{SVC_SECRET}")),
            ("AUTHD_ARGON2_M_KIB".to_string(), "1024".to_string()),
            ("AUTHD_TOKEN_RATE".to_string(), "0".to_string()),
            ("AUTHD_REGISTER_RATE".to_string(), "0".to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Site {
            dir: tempfile::tempdir().unwrap(),
            port,
            env,
        }
    }

    /// One process of a Postgres deployment: same database, Redis prefix,
    /// keys and issuer ([`ISSUER`]) as its siblings.
    pub fn postgres(database: &str, prefix: &str, keys_dir: &Path, extra: &[(&str, &str)]) -> Site {
        let mut site = Site::embedded(extra);
        site.env.retain(|(k, _)| k != "AUTHD_ISSUER");
        site.env.extend([
            ("AUTHD_ISSUER".to_string(), ISSUER.to_string()),
            ("DATABASE_URL".to_string(), database.to_string()),
            ("REDIS_URL".to_string(), redis_url()),
            ("AUTHD_REDIS_PREFIX".to_string(), prefix.to_string()),
            ("AUTHD_KEYS_DIR".to_string(), keys_dir.display().to_string()),
        ]);
        site
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.env
            .iter()
            .find(|(k, _)| k == "AUTHD_KEYS_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| self.dir.path().join("keys"))
    }

    /// Runs `authd <args>` with this site's environment and waits.
    pub fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> String {
        let out = Command::new(authd_binary())
            .current_dir(self.dir.path())
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
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

    /// Starts `authd serve` and waits until it listens.
    pub fn start(&self) -> Authd {
        let mut child = Command::new(authd_binary())
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("addr=") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("authd starts listening");
        Authd { child }
    }
}

pub struct Authd {
    child: Child,
}

impl Authd {
    /// SIGKILL: no graceful shutdown, connections just die.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Authd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub session_id: String,
}

/// A frontend's view of one authd process.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(base: String) -> Client {
        Client {
            base,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn register(&self, email: &str) -> Value {
        let r = self
            .http
            .post(self.url("/v1/users"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    }

    pub async fn login(&self, email: &str) -> Tokens {
        let r = self
            .http
            .post(self.url("/oauth/token"))
            .form(&[("grant_type", "password"), ("username", email), ("password", PASSWORD)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login");
        tokens(r.json().await.unwrap())
    }

    pub async fn refresh(&self, refresh: &str) -> reqwest::Response {
        self.http
            .post(self.url("/oauth/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
            .send()
            .await
            .unwrap()
    }

    /// A new user with one session: (email, user id, tokens).
    pub async fn user(&self) -> (String, String, Tokens) {
        let email = format!("u{}@example.org", uuid::Uuid::new_v4().simple());
        let user = self.register(&email).await;
        let tokens = self.login(&email).await;
        (email, user["id"].as_str().unwrap().to_string(), tokens)
    }
}

pub fn tokens(v: Value) -> Tokens {
    Tokens {
        access: v["access_token"].as_str().unwrap().to_string(),
        refresh: v["refresh_token"].as_str().unwrap().to_string(),
        session_id: v["session_id"].as_str().unwrap().to_string(),
    }
}

/// Waits until authd answers on `base` (after a restart).
pub async fn wait_ready(base: &str) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("authd at {base} did not come up");
}

/// The private key of `<kid>.pem` and a signer for hand-made tokens with
/// any header and claims (the attacker's or a test's view).
pub struct Signer {
    pub kid: String,
    pair: aws_lc_rs::signature::Ed25519KeyPair,
}

impl Signer {
    /// The only (or newest) Ed25519 key of a keys directory.
    pub fn from_dir(dir: &Path) -> Signer {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pem") && p.to_string_lossy().contains("-eddsa-"))
            .collect();
        files.sort();
        let path = files.pop().expect("an EdDSA key");
        Signer::from_file(&path)
    }

    pub fn from_file(path: &Path) -> Signer {
        use base64::Engine;
        let text = std::fs::read_to_string(path).unwrap();
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
        Signer {
            kid: path.file_stem().unwrap().to_string_lossy().to_string(),
            pair: aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).unwrap(),
        }
    }

    /// A fresh random Ed25519 key that authd never published.
    pub fn attacker(kid: &str) -> Signer {
        let pkcs8 =
            aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
        Signer {
            kid: kid.to_string(),
            pair: aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.as_ref()).unwrap(),
        }
    }

    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.pair.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    pub fn header(&self) -> Value {
        json!({"typ": "at+jwt", "alg": "EdDSA", "kid": self.kid})
    }

    /// Claims as authd would issue them for `issuer`, valid from now for `ttl` s.
    pub fn claims(issuer: &str, ttl: i64) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({
            "iss": issuer, "sub": uuid::Uuid::new_v4().to_string(), "aud": AUDIENCE,
            "exp": now + ttl, "iat": now, "nbf": now, "jti": uuid::Uuid::new_v4().to_string(),
            "sid": uuid::Uuid::new_v4().to_string(), "client_id": "web",
        })
    }
}
