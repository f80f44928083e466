//! Typed configuration from the environment (every field also has a CLI flag).
//! Secrets never appear in `Debug` output.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::domain::ClientCredentials;
use crate::domain::KeyAlg;

/// Parses `900`, `900s`, `15m`, `30d` and the like.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(raw).map_err(|e| format!("`{raw}` is not a duration ({e}); use seconds or e.g. 15m, 30d"))
}

/// A database or Redis URL whose password is hidden when printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced, for logs.
    pub fn redacted(&self) -> String {
        match (self.0.find("://"), self.0.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                let userinfo = &self.0[scheme_end + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{}{}:***{}", &self.0[..scheme_end + 3], user, &self.0[at..])
            }
            _ => self.0.clone(),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err("must not be empty".into());
        }
        Ok(SecretUrl(s.trim().to_string()))
    }
}

/// A secret from configuration; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for SecretString {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < 16 {
            return Err("must be at least 16 characters".into());
        }
        Ok(SecretString(s.to_string()))
    }
}

/// Where durable state lives and where the cache lives.
#[derive(Args, Debug, Clone)]
pub struct StoreConfig {
    /// Postgres URL; unset means the embedded SQLite store under AUTHD_DATA_DIR.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<SecretUrl>,

    /// Redis URL; unset means an in-process cache.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<SecretUrl>,

    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(long, env = "AUTHD_REDIS_PREFIX", default_value = "authd:")]
    pub redis_prefix: String,

    /// Directory of the embedded SQLite database.
    #[arg(long, env = "AUTHD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Largest number of Postgres connections per process.
    #[arg(long, env = "AUTHD_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a request waits for a database connection or statement.
    #[arg(long, env = "AUTHD_DB_TIMEOUT", value_parser = parse_duration, default_value = "3s")]
    pub db_timeout: Duration,

    /// How long a request waits for Redis before falling back to the database.
    #[arg(long, env = "AUTHD_REDIS_TIMEOUT", value_parser = parse_duration, default_value = "250ms")]
    pub redis_timeout: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct ServeConfig {
    #[command(flatten)]
    pub store: StoreConfig,

    #[command(flatten)]
    pub keys: KeysConfig,

    /// Address to listen on.
    #[arg(long, env = "AUTHD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// `iss` of issued tokens and the RFC 8414 issuer; defaults to http://<listen>.
    #[arg(long, env = "AUTHD_ISSUER")]
    pub issuer: Option<String>,

    /// `aud` of issued access tokens.
    #[arg(long, env = "AUTHD_AUDIENCE", default_value = "authd")]
    pub audience: String,

    /// `client_id` claim when a login names none.
    #[arg(long, env = "AUTHD_DEFAULT_CLIENT_ID", default_value = "authd")]
    pub default_client_id: String,

    #[command(flatten)]
    pub timing: TimingConfig,

    /// A session ends this long after its last login or refresh.
    #[arg(long, env = "AUTHD_SESSION_IDLE_TTL", value_parser = parse_duration, default_value = "30d")]
    pub session_idle_ttl: Duration,

    /// A session never lives longer than this.
    #[arg(long, env = "AUTHD_SESSION_MAX_TTL", value_parser = parse_duration, default_value = "90d")]
    pub session_max_ttl: Duration,

    /// How long the previous refresh token still returns the same new pair.
    #[arg(long, env = "AUTHD_REFRESH_GRACE", value_parser = parse_duration, default_value = "10s")]
    pub refresh_grace: Duration,

    /// Service clients: `id:secret,id2:secret2:introspect+feed+admin`. Roles
    /// (`introspect`, `feed`, `admin`) limit what a client may call; a client
    /// listed without roles has every role.
    #[arg(long, env = "AUTHD_CLIENTS", default_value = "")]
    pub clients: ClientCredentials,

    #[command(flatten)]
    pub argon2: Argon2Config,

    #[command(flatten)]
    pub limits: LimitsConfig,

    #[command(flatten)]
    pub events: EventsConfig,

    #[command(flatten)]
    pub edge: EdgeConfig,

    /// Browser origins allowed to call authd (CORS), comma-separated, e.g.
    /// `https://app.example.org`. Empty: no CORS headers.
    #[arg(long, env = "AUTHD_CORS_ORIGINS", value_delimiter = ',', default_value = "")]
    pub cors_origins: Vec<String>,

    /// Password hashes allowed to wait for a hashing thread before logins get 503.
    #[arg(long, env = "AUTHD_HASH_QUEUE", default_value_t = 1024)]
    pub hash_queue: usize,

    /// Run migrations when `serve` starts.
    #[arg(long, env = "AUTHD_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// How often the background cleanup runs (0 disables it).
    #[arg(long, env = "AUTHD_CLEANUP_INTERVAL", value_parser = parse_duration, default_value = "10m")]
    pub cleanup_interval: Duration,

    /// Expired and revoked sessions are kept this long (for the audit of recent activity).
    #[arg(long, env = "AUTHD_CLEANUP_RETENTION", value_parser = parse_duration, default_value = "7d")]
    pub cleanup_retention: Duration,

    /// Audit events are deleted by cleanup once this old.
    #[arg(long, env = "AUTHD_AUDIT_RETENTION", value_parser = parse_duration, default_value = "90d")]
    pub audit_retention: Duration,

    /// Longest time a request may take before it is answered 503.
    #[arg(long, env = "AUTHD_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
}

impl ServeConfig {
    pub fn issuer(&self) -> String {
        self.issuer.clone().unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// Cross-field checks clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        self.timing.validate()?;
        if self.session_idle_ttl.is_zero() || self.session_max_ttl.is_zero() {
            return Err("AUTHD_SESSION_IDLE_TTL and AUTHD_SESSION_MAX_TTL must be positive".into());
        }
        // An access token must not outlive the idle end of the session it
        // names (the session could end while the token still verifies offline).
        if self.timing.access_ttl > self.session_idle_ttl {
            return Err("AUTHD_ACCESS_TTL must not exceed AUTHD_SESSION_IDLE_TTL".into());
        }
        if self.session_idle_ttl > self.session_max_ttl {
            return Err("AUTHD_SESSION_IDLE_TTL must not exceed AUTHD_SESSION_MAX_TTL".into());
        }
        if self.edge.header_read_timeout.is_zero() || self.edge.header_read_timeout > Duration::from_secs(30) {
            return Err("AUTHD_HEADER_READ_TIMEOUT must be between 1ms and 30s".into());
        }
        if self.edge.idle_timeout.is_zero() || self.edge.idle_timeout > Duration::from_secs(60) {
            return Err("AUTHD_IDLE_TIMEOUT must be between 1ms and 60s".into());
        }
        if self.edge.max_connections == 0 {
            return Err("AUTHD_MAX_CONNECTIONS must be positive".into());
        }
        if self.events.follower_poll.is_zero() || self.events.follower_poll >= self.events.follower_max_lag {
            return Err("AUTHD_FOLLOWER_POLL must be positive and shorter than AUTHD_FOLLOWER_MAX_LAG".into());
        }
        if self.audience.is_empty() {
            return Err("AUTHD_AUDIENCE must not be empty".into());
        }
        for origin in self.cors_origins.iter().filter(|o| !o.is_empty()) {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && axum::http::HeaderValue::from_str(origin).is_ok();
            if !ok {
                return Err(format!(
                    "AUTHD_CORS_ORIGINS: `{origin}` is not an origin like https://app.example.org"
                ));
            }
        }
        self.argon2.params().map(|_| ())
    }
}

/// Token timing: `serve` signs and checks tokens with it, and `keys`
/// derives from it when a new key may sign and an old one retires.
#[derive(Args, Debug, Clone)]
pub struct TimingConfig {
    /// Access token lifetime.
    #[arg(long, env = "AUTHD_ACCESS_TTL", value_parser = parse_duration, default_value = "15m")]
    pub access_ttl: Duration,

    /// Clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "AUTHD_CLOCK_SKEW", value_parser = parse_duration, default_value = "2s")]
    pub clock_skew: Duration,
}

impl TimingConfig {
    /// Checks clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.access_ttl.is_zero() {
            return Err("AUTHD_ACCESS_TTL must be positive".into());
        }
        if self.clock_skew > Duration::from_secs(300) {
            return Err("AUTHD_CLOCK_SKEW must be at most 5m".into());
        }
        Ok(())
    }
}

#[derive(Args, Debug, Clone)]
pub struct Argon2Config {
    /// argon2id memory cost in KiB.
    #[arg(long = "argon2-m-kib", env = "AUTHD_ARGON2_M_KIB", default_value_t = 19456)]
    pub m_kib: u32,
    /// argon2id iterations.
    #[arg(long = "argon2-t", env = "AUTHD_ARGON2_T", default_value_t = 2)]
    pub t: u32,
    /// argon2id parallelism.
    #[arg(long = "argon2-p", env = "AUTHD_ARGON2_P", default_value_t = 1)]
    pub p: u32,
    /// Optional pepper: a server secret mixed into every hash (argon2's secret
    /// input). Changing it invalidates every stored password.
    #[arg(long = "password-pepper", env = "AUTHD_PASSWORD_PEPPER", hide_env_values = true)]
    pub pepper: Option<SecretString>,
}

impl Argon2Config {
    pub fn params(&self) -> Result<argon2::Params, String> {
        argon2::Params::new(self.m_kib, self.t, self.p, None)
            .map_err(|e| format!("AUTHD_ARGON2_M_KIB/_T/_P are not valid argon2 parameters: {e}"))
    }
}

#[derive(Args, Debug, Clone)]
pub struct KeysConfig {
    /// Directory of signing keys (PEM, one file per kid).
    #[arg(long, env = "AUTHD_KEYS_DIR", default_value = "./keys")]
    pub keys_dir: PathBuf,

    /// Algorithm of newly generated keys: EdDSA, ES256 or RS256.
    #[arg(long, env = "AUTHD_ALG", default_value = "EdDSA")]
    pub alg: KeyAlg,

    /// How long a new key is only published before it signs; default: the
    /// JWKS max-age (5m) + AUTHD_CLOCK_SKEW. Every process must use the same.
    #[arg(long, env = "AUTHD_KEY_PUBLISH_DELAY", value_parser = parse_duration)]
    pub publish_delay: Option<Duration>,

    /// How often `serve` re-reads the keys directory (also on SIGHUP; 0: only on SIGHUP).
    #[arg(long, env = "AUTHD_KEY_RELOAD_INTERVAL", value_parser = parse_duration, default_value = "10s")]
    pub reload_interval: Duration,
}

impl KeysConfig {
    /// The publish delay in force with this clock skew.
    pub fn publish_delay(&self, clock_skew: Duration) -> Duration {
        self.publish_delay
            .unwrap_or_else(|| crate::domain::default_key_publish_delay(clock_skew))
    }
}

/// What the `keys` subcommands read: the keys and the token timing `serve`
/// would use, so a key's publication and retirement agree with the service's.
#[derive(Args, Debug, Clone)]
pub struct KeysCommandConfig {
    #[command(flatten)]
    pub keys: KeysConfig,

    #[command(flatten)]
    pub timing: TimingConfig,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            keys_dir: PathBuf::from("./keys"),
            alg: KeyAlg::EdDSA,
            publish_delay: None,
            reload_interval: Duration::from_secs(10),
        }
    }
}

/// The session event log and its follower.
#[derive(Args, Debug, Clone)]
pub struct EventsConfig {
    /// Session events are kept at least this long, and until every `until`
    /// in them has passed; revocation feed cursors older than this get 410.
    #[arg(long = "events-retention", env = "AUTHD_EVENTS_RETENTION", value_parser = parse_duration, default_value = "7d")]
    pub retention: Duration,
    /// The cache is believed only while the follower's last complete read of
    /// the log is younger than this; otherwise the durable store answers.
    #[arg(long, env = "AUTHD_FOLLOWER_MAX_LAG", value_parser = parse_duration, default_value = "2s")]
    pub follower_max_lag: Duration,
    /// How often the follower reads the log when no notification wakes it.
    #[arg(long, env = "AUTHD_FOLLOWER_POLL", value_parser = parse_duration, default_value = "500ms")]
    pub follower_poll: Duration,
}

/// Brute-force and flood limits.
#[derive(Args, Debug, Clone)]
pub struct LimitsConfig {
    /// Failed logins allowed per (account, IP) in one lockout window.
    #[arg(long, env = "AUTHD_LOGIN_FAILURES_PER_ACCOUNT_IP", default_value_t = 5)]
    pub failures_per_account_ip: u64,
    /// Failed logins allowed per IP (any account) in one lockout window.
    #[arg(long, env = "AUTHD_LOGIN_FAILURES_PER_IP", default_value_t = 50)]
    pub failures_per_ip: u64,
    /// Failed logins allowed per account from IPs it never logged in from.
    #[arg(long, env = "AUTHD_LOGIN_FAILURES_PER_ACCOUNT", default_value_t = 20)]
    pub failures_per_account: u64,
    /// Length of a lockout window (it starts at the first failure).
    #[arg(long, env = "AUTHD_LOGIN_LOCKOUT", value_parser = parse_duration, default_value = "15m")]
    pub lockout: Duration,
    /// Requests per second to /oauth/token, per process (0: unlimited).
    #[arg(long, env = "AUTHD_TOKEN_RATE", default_value_t = 5000)]
    pub token_rate: u32,
    /// Requests per second to POST /v1/users, per process (0: unlimited).
    #[arg(long, env = "AUTHD_REGISTER_RATE", default_value_t = 100)]
    pub register_rate: u32,
    /// Requests per second to /oauth/token from one client IP (IPv6: one /64), per process (0: unlimited).
    #[arg(long, env = "AUTHD_TOKEN_RATE_PER_IP", default_value_t = 100)]
    pub token_rate_per_ip: u32,
    /// Requests per second to POST /v1/users from one client IP (IPv6: one /64), per process (0: unlimited).
    #[arg(long, env = "AUTHD_REGISTER_RATE_PER_IP", default_value_t = 10)]
    pub register_rate_per_ip: u32,
}

/// A CIDR like `10.0.0.0/8`, or a single address.
pub fn parse_cidr(raw: &str) -> Result<ipnet::IpNet, String> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>()
        .map(|net| net.trunc())
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{raw}` is not a CIDR like 10.0.0.0/8 or an IP address"))
}

/// The edge of the service: who may speak for clients, and how long and how
/// many connections may stay open.
#[derive(Args, Debug, Clone)]
pub struct EdgeConfig {
    /// Proxies whose `X-Forwarded-For` / `Forwarded` are believed, as CIDRs,
    /// comma-separated (default none: the TCP peer is the client).
    #[arg(long, env = "AUTHD_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Longest time a client may take to send a request's head (line and headers).
    #[arg(long, env = "AUTHD_HEADER_READ_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,

    /// An idle keep-alive connection is closed after this long.
    #[arg(long, env = "AUTHD_IDLE_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,

    /// Open connections per process; more wait in the kernel's backlog.
    #[arg(long, env = "AUTHD_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Serve `/metrics` on this address instead of the main listener.
    #[arg(long, env = "AUTHD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            trusted_proxies: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            metrics_listen: None,
        }
    }
}
