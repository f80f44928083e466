//! authd in-process: built from the production defaults (the same clap
//! definitions `authd serve` uses) on the server runtime.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use authd::app::Application;
use authd::auth::keys::{self, KeyAlg};
use authd::clock::SystemClock;
use authd::config::ServeConfig;
use authd::session::SessionService;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Parser;
use time::OffsetDateTime;
use tokio::runtime::Handle;

use crate::load;
use crate::world::{progress, random_hex, World};

pub struct Running {
    pub addr: SocketAddr,
    pub sessions: Arc<SessionService>,
    pub config: ServeConfig,
    /// The service client (roles: introspection and the revocation feed).
    pub client_id: &'static str,
    pub client_secret: String,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
}
/// The bench's service client.
const CLIENT_ID: &str = "bench-svc";

#[derive(Parser)]
struct ServeArgs {
    #[command(flatten)]
    serve: ServeConfig,
}

/// Starts authd on the server runtime with the production defaults (the
/// same clap definitions `authd serve` uses), overriding only where it
/// listens, which stores and keys it uses, and the service client.
pub async fn start_app(server: &Handle, world: &World) -> anyhow::Result<(Running, String)> {
    let keys_dir = world.dir.join("keys");
    keys::generate(&keys_dir, KeyAlg::EdDSA, OffsetDateTime::now_utc())?;
    let secret = random_hex(16)?;
    let argv = [
        "authd".to_string(),
        format!("--database-url={}", world.db_url),
        format!("--redis-url={}", redis_url_of(world)),
        format!("--redis-prefix={}", world.redis_prefix),
        format!("--keys-dir={}", keys_dir.display()),
        format!("--data-dir={}", world.dir.join("data").display()),
        "--listen=127.0.0.1:0".to_string(),
        "--issuer=http://authd.bench".to_string(),
        // Introspection for the load, the revocation feed for the verifier rows.
        format!("--clients={CLIENT_ID}:{secret}:introspect+feed"),
        // One cleanup pass would otherwise run at start, in the middle of the load.
        "--cleanup-interval=0".to_string(),
        "--migrate-on-start=true".to_string(),
        // All the load comes from one loopback address: the per-IP and
        // per-process flood limits would measure themselves.
        "--token-rate=0".to_string(),
        "--token-rate-per-ip=0".to_string(),
        "--register-rate-per-ip=0".to_string(),
        // Lockouts count attempts before the hash is checked, so the burst's
        // 500 simultaneous (correct) logins from one address would meet them.
        "--failures-per-ip=1000000".to_string(),
        "--failures-per-account-ip=1000000".to_string(),
        "--failures-per-account=1000000".to_string(),
    ];
    let config = ServeArgs::try_parse_from(argv)
        .map_err(|e| anyhow!("building the authd configuration: {e}"))?
        .serve;

    let file = std::fs::File::create(&world.log_path)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init();

    let cfg = config.clone();
    let started = server
        .spawn(async move {
            let app = Application::build(cfg, Arc::new(SystemClock)).await?;
            let addr = app.local_addr()?;
            let sessions = app.state().sessions.clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let served = tokio::spawn(app.run_until_stopped(async move {
                let _ = stopped.await;
            }));
            anyhow::Ok((addr, sessions, stop, served))
        })
        .await??;
    let (addr, sessions, stop, served) = started;
    // The cache starts untrusted until its first sweep; wait (bounded) until
    // authd's own readiness probe reports it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !load::cache_ready(addr).await {
        if Instant::now() > deadline {
            progress("warning: authd's cache is still untrusted after 10 s; numbers will reflect database fallbacks");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let basic = format!("Basic {}", STANDARD.encode(format!("{CLIENT_ID}:{secret}")));
    Ok((
        Running {
            addr,
            sessions,
            config,
            client_id: CLIENT_ID,
            client_secret: secret,
            stop,
            served,
        },
        basic,
    ))
}

fn redis_url_of(world: &World) -> String {
    let auth = match (&world.rd.user, &world.rd.password) {
        (Some(u), Some(p)) => format!("{u}:{p}@"),
        (None, Some(p)) => format!(":{p}@"),
        _ => String::new(),
    };
    let host = if world.rd.host.contains(':') {
        format!("[{}]", world.rd.host)
    } else {
        world.rd.host.clone()
    };
    format!("redis://{auth}{host}:{}", world.rd.port)
}

impl Running {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(15), self.served).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => progress(&format!("authd stopped with an error: {e:#}")),
            Ok(Err(e)) => progress(&format!("authd task failed: {e}")),
            Err(_) => progress("authd did not stop within 15 s; leaving it to the runtime shutdown"),
        }
    }
}
