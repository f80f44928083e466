//! Spawns the real app on a real port against real stores, one isolated
//! world per test: a fresh Postgres database and Redis key prefix, or a
//! fresh SQLite directory and in-process cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use authd::app::Application;
use authd::auth::keys::{self, KeyAlg};
use authd::clock::ShiftedClock;
use authd::config::{
    Argon2Config, EdgeConfig, EventsConfig, KeysConfig, LimitsConfig, SecretUrl, ServeConfig, StoreConfig, TimingConfig,
};
use serde_json::{json, Value};
use sqlx::Connection;

pub const SVC_ID: &str = "svc";
pub const SVC_SECRET: &str = "svc-secret-0123456789";
pub const PASSWORD: &str = "correct horse battery staple";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Postgres + Redis, the production pair.
    Postgres,
    /// SQLite file + in-process cache, the default with no servers.
    Embedded,
}

pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn with_database(url: &str, db: &str) -> String {
    match url.rfind('/') {
        Some(i) if i > "postgres://".len() => format!("{}/{}", &url[..i], db),
        _ => format!("{url}/{db}"),
    }
}

/// The real Postgres and Redis must be up: tests fail, never skip, without them.
pub async fn require_servers() {
    let mut pg = sqlx::PgConnection::connect(&database_url())
        .await
        .unwrap_or_else(|e| panic!("Postgres at {} is required for the tests: {e}", database_url()));
    sqlx::query("SELECT 1").execute(&mut pg).await.unwrap();
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at {} is required for the tests: {e}", redis_url()));
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
}

pub struct Options {
    pub alg: KeyAlg,
    pub refresh_grace: Duration,
    pub argon2_m_kib: u32,
    pub hash_queue: usize,
    /// Use this Postgres database as it is (neither created nor dropped).
    pub database_url: Option<String>,
    /// Use this Redis (default: the shared one).
    pub redis_url: Option<String>,
    /// Share a key prefix with another app (default: a fresh one).
    pub redis_prefix: Option<String>,
    /// Use this keys directory instead of a fresh one with one new key.
    pub keys_dir: Option<PathBuf>,
    pub db_timeout: Duration,
    pub limits: LimitsConfig,
    pub events: EventsConfig,
    pub edge: EdgeConfig,
    /// `AUTHD_CLIENTS` (default: `SVC_ID:SVC_SECRET`).
    pub clients: Option<String>,
    /// AUTHD_KEY_PUBLISH_DELAY (default: max-age + skew).
    pub key_publish_delay: Option<Duration>,
    pub key_reload_interval: Duration,
    pub access_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        // Cheap argon2 keeps the suite fast; the hash format is the same.
        Options {
            alg: KeyAlg::EdDSA,
            refresh_grace: Duration::from_secs(10),
            argon2_m_kib: 1024,
            hash_queue: 256,
            database_url: None,
            redis_url: None,
            redis_prefix: None,
            keys_dir: None,
            db_timeout: Duration::from_secs(3),
            key_publish_delay: None,
            key_reload_interval: Duration::from_secs(10),
            access_ttl: Duration::from_secs(900),
            limits: LimitsConfig {
                failures_per_account_ip: 5,
                failures_per_ip: 50,
                failures_per_account: 20,
                lockout: Duration::from_secs(900),
                token_rate: 0,
                register_rate: 0,
                token_rate_per_ip: 0,
                register_rate_per_ip: 0,
            },
            events: EventsConfig {
                retention: Duration::from_secs(7 * 86400),
                follower_max_lag: Duration::from_secs(2),
                follower_poll: Duration::from_millis(500),
            },
            edge: EdgeConfig::default(),
            clients: None,
        }
    }
}

pub struct TestApp {
    pub base: String,
    /// The `/metrics` listener, when `AUTHD_METRICS_LISTEN` is set.
    pub metrics_base: Option<String>,
    pub http: reqwest::Client,
    pub clock: Arc<ShiftedClock>,
    pub state: authd::http::AppState,
    pub database: Option<String>,
    /// The Postgres URL this app uses (Postgres backend only).
    pub database_url: Option<String>,
    pub redis_prefix: String,
    pub keys_dir: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, Options::default()).await
    }

    pub async fn spawn_with(backend: Backend, options: Options) -> TestApp {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let data_dir = tempfile::tempdir().unwrap();
        let keys_tmp = tempfile::tempdir().unwrap();
        let keys_dir = match &options.keys_dir {
            Some(dir) => dir.clone(),
            None => {
                keys::generate(keys_tmp.path(), options.alg, time::OffsetDateTime::now_utc()).unwrap();
                keys_tmp.path().to_path_buf()
            }
        };
        let redis_prefix = options
            .redis_prefix
            .clone()
            .unwrap_or_else(|| format!("authd-test:{unique}:"));
        let redis = options.redis_url.clone().unwrap_or_else(redis_url);
        let (database_url, redis, database) = match (backend, &options.database_url) {
            (Backend::Postgres, Some(url)) => (
                Some(url.parse::<SecretUrl>().unwrap()),
                Some(redis.parse().unwrap()),
                None,
            ),
            (Backend::Postgres, None) => {
                require_servers().await;
                let name = format!("authd_t_{unique}");
                let mut admin = sqlx::PgConnection::connect(&database_url()).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                (
                    Some(with_database(&database_url(), &name).parse::<SecretUrl>().unwrap()),
                    Some(redis.parse::<SecretUrl>().unwrap()),
                    Some(name),
                )
            }
            (Backend::Embedded, _) => (None, None, None),
        };
        let database_url_text = database_url.as_ref().map(|u: &SecretUrl| u.expose().to_string());
        let keys_dir_copy = keys_dir.clone();
        let config = ServeConfig {
            store: StoreConfig {
                database_url,
                redis_url: redis,
                redis_prefix: redis_prefix.clone(),
                data_dir: data_dir.path().to_path_buf(),
                db_max_connections: 8,
                db_timeout: options.db_timeout,
                redis_timeout: Duration::from_millis(250),
            },
            keys: KeysConfig {
                keys_dir,
                alg: options.alg,
                publish_delay: options.key_publish_delay,
                reload_interval: options.key_reload_interval,
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            issuer: Some("http://authd.test".into()),
            audience: "authd-test".into(),
            default_client_id: "web".into(),
            timing: TimingConfig {
                access_ttl: options.access_ttl,
                clock_skew: Duration::from_secs(2),
            },
            session_idle_ttl: Duration::from_secs(30 * 86400),
            session_max_ttl: Duration::from_secs(90 * 86400),
            refresh_grace: options.refresh_grace,
            clients: options
                .clients
                .clone()
                .unwrap_or_else(|| format!("{SVC_ID}:{SVC_SECRET}"))
                .parse()
                .unwrap(),
            argon2: Argon2Config {
                m_kib: options.argon2_m_kib,
                t: 2,
                p: 1,
                pepper: None,
            },
            hash_queue: options.hash_queue,
            limits: options.limits.clone(),
            events: options.events.clone(),
            edge: options.edge.clone(),
            cors_origins: vec!["https://app.example.org".into()],
            migrate_on_start: true,
            cleanup_interval: Duration::ZERO,
            cleanup_retention: Duration::from_secs(7 * 86400),
            audit_retention: Duration::from_secs(90 * 86400),
            request_timeout: Duration::from_secs(10),
        };
        let clock = Arc::new(ShiftedClock::default());
        let app = Application::build(config, clock.clone()).await.expect("app builds");
        let addr = app.local_addr().unwrap();
        let metrics_base = app.metrics_addr().map(|a| format!("http://{a}"));
        let state = app.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        TestApp {
            base: format!("http://{addr}"),
            metrics_base,
            http: reqwest::Client::builder()
                .user_agent("authd-tests/1.0")
                .build()
                .unwrap(),
            clock,
            state,
            database,
            database_url: database_url_text,
            redis_prefix,
            keys_dir: keys_dir_copy,
            _dirs: vec![data_dir, keys_tmp],
            shutdown: Some(tx),
        }
    }

    /// The SQLite database file (embedded backend only).
    pub fn sqlite_file(&self) -> PathBuf {
        self._dirs[0].path().join("authd.db")
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
        assert_eq!(r.status(), 201, "register {email}");
        r.json().await.unwrap()
    }

    pub async fn token(&self, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url("/oauth/token"))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// Logs in and returns the token response.
    pub async fn login(&self, email: &str) -> Tokens {
        let r = self
            .token(&[("grant_type", "password"), ("username", email), ("password", PASSWORD)])
            .await;
        assert_eq!(r.status(), 200, "login {email}");
        r.json::<Value>().await.unwrap().into()
    }

    /// A registered user with one session.
    pub async fn user_with_session(&self) -> (String, Tokens) {
        let email = format!("u{}@example.org", uuid::Uuid::new_v4().simple());
        self.register(&email).await;
        let tokens = self.login(&email).await;
        (email, tokens)
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.token(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)])
            .await
    }

    pub async fn get_bearer(&self, path: &str, access: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(access).send().await.unwrap()
    }

    pub async fn post_bearer(&self, path: &str, access: &str) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(access).send().await.unwrap()
    }

    pub async fn introspect(&self, token: &str) -> Value {
        let r = self
            .http
            .post(self.url("/oauth/introspect"))
            .basic_auth(SVC_ID, Some(SVC_SECRET))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Every way to use a session: bearer, introspection, refresh. Asserts
    /// all of them refuse it.
    pub async fn assert_session_refused(&self, tokens: &Tokens) {
        assert_eq!(
            self.get_bearer("/v1/me", &tokens.access).await.status(),
            401,
            "bearer still accepted"
        );
        assert_eq!(
            self.introspect(&tokens.access).await,
            json!({"active": false}),
            "introspection still active"
        );
        assert_eq!(self.introspect(&tokens.refresh).await, json!({"active": false}));
        let r = self.refresh(&tokens.refresh).await;
        assert_eq!(r.status(), 400, "refresh still works");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
    }

    pub async fn assert_session_accepted(&self, tokens: &Tokens) {
        assert_eq!(self.get_bearer("/v1/me", &tokens.access).await.status(), 200);
        assert_eq!(self.introspect(&tokens.access).await["active"], true);
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let prefix = std::mem::take(&mut self.redis_prefix);
        if let Some(name) = self.database.take() {
            // Dropping needs async I/O; do it on a thread of its own so Drop
            // works inside any runtime.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                    return;
                };
                rt.block_on(async {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(&database_url()).await {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin)
                            .await;
                    }
                    if let Ok(client) = redis::Client::open(redis_url()) {
                        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                            let keys: Vec<String> = redis::cmd("KEYS")
                                .arg(format!("{prefix}*"))
                                .query_async(&mut conn)
                                .await
                                .unwrap_or_default();
                            if !keys.is_empty() {
                                let _: redis::RedisResult<()> =
                                    redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
                            }
                        }
                    }
                });
            })
            .join();
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub session_id: String,
    pub raw: Value,
}

impl From<Value> for Tokens {
    fn from(v: Value) -> Self {
        Tokens {
            access: v["access_token"].as_str().unwrap().to_string(),
            refresh: v["refresh_token"].as_str().unwrap().to_string(),
            session_id: v["session_id"].as_str().unwrap().to_string(),
            raw: v,
        }
    }
}

/// Decodes a JWT part without verifying (the tests verify separately).
pub fn jwt_part(token: &str, index: usize) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(index).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Runs each named case against both backends.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
        mod on_embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Embedded).await
                }
            )*
        }
    };
}

/// Polls until `check` holds or `limit` passes.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/readyz`: status and body.
pub async fn readyz(app: &TestApp) -> (u16, Value) {
    {
        let r = app.http.get(app.url("/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

/// An app on a Postgres server of its own (for tests that hold back, or
/// time, the event log: any write transaction open anywhere in a cluster
/// holds its followers' feed back). Keep the server alive with the app.
pub async fn spawn_on_own_postgres() -> (TestApp, crate::servers::PgServer) {
    let server = crate::servers::PgServer::start();
    let app = TestApp::spawn_with(
        Backend::Postgres,
        Options {
            database_url: Some(server.url()),
            ..Options::default()
        },
    )
    .await;
    (app, server)
}
