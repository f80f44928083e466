//! Builds the service from configuration: stores, keys, state, listener.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::auth::jwt::TokenIssuer;
use crate::auth::keys::{self, KeySet, KeyTiming};
use crate::auth::password::PasswordHasher;
use crate::clock::{Clock, SystemClock};
use crate::config::{KeysConfig, ServeConfig, StoreConfig, TimingConfig};
use crate::http::limits::FloodLimit;
use crate::http::serve::ConnectionLimits;
use crate::http::{self, AppState, AppStateInner};
use crate::session::events::{FollowerPolicy, Revocations};
use crate::session::throttle::{Lockouts, ThrottlePolicy};
use crate::session::{Policy, SessionService, Stores};
use crate::store::counters::{CounterStore, FallbackCounters};
use crate::store::guarded::GuardedCache;
use crate::store::memory::MemoryCache;
use crate::store::postgres::PgStore;
use crate::store::redis::RedisCache;
use crate::store::sqlite::SqliteStore;
use crate::store::{DurableStore, SessionCache};

/// How long in-flight requests may finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Entries of the in-process cache (embedded mode).
const MEMORY_CACHE_ENTRIES: u64 = 100_000;

/// The process-wide Prometheus recorder (installed once, shared by every app
/// built in this process, as tests do).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// When a new key may sign and how long a retired one stays published:
/// `serve` and the `keys` commands both ask here, so they agree.
pub fn key_timing(keys: &KeysConfig, timing: &TimingConfig) -> KeyTiming {
    KeyTiming {
        publish_delay: keys.publish_delay(timing.clock_skew),
        overlap: timing.access_ttl + timing.clock_skew,
    }
}

/// Opens the durable store named by the configuration.
pub async fn open_store(config: &StoreConfig) -> anyhow::Result<Arc<dyn DurableStore>> {
    Ok(match &config.database_url {
        Some(url) => Arc::new(PgStore::connect(url, config.db_max_connections, config.db_timeout).await?),
        None => Arc::new(SqliteStore::open(&config.data_dir, config.db_timeout).await?),
    })
}

pub async fn open_cache(config: &StoreConfig) -> anyhow::Result<Arc<dyn SessionCache>> {
    Ok(open_cache_and_counters(config).await?.0)
}

/// The session cache and the lockout counters: one Redis connection serves
/// both, but each has its own failure behaviour (the counters fall back to
/// this process, never to the cache's circuit breaker).
pub async fn open_cache_and_counters(
    config: &StoreConfig,
) -> anyhow::Result<(Arc<dyn SessionCache>, Arc<dyn CounterStore>)> {
    Ok(match &config.redis_url {
        Some(url) => {
            let redis = Arc::new(RedisCache::connect(url, &config.redis_prefix, config.redis_timeout).await?);
            let counters = FallbackCounters::new(Some(redis.clone()), MEMORY_CACHE_ENTRIES);
            (redis, Arc::new(counters))
        }
        None => (
            Arc::new(MemoryCache::new(MEMORY_CACHE_ENTRIES)),
            Arc::new(FallbackCounters::new(None, MEMORY_CACHE_ENTRIES)),
        ),
    })
}

pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    state: AppState,
    cleanup_interval: Duration,
    cleanup_retention: Duration,
    audit_retention: Duration,
    connection_limits: ConnectionLimits,
    keys_dir: std::path::PathBuf,
    key_reload_interval: Duration,
}

impl Application {
    /// Everything but serving: after this returns the port is bound, so a
    /// test can read it before the first request.
    pub async fn build(config: ServeConfig, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        config.validate().map_err(anyhow::Error::msg)?;
        let embedded = config.store.database_url.is_none();
        let store = open_store(&config.store).await?;
        if config.migrate_on_start {
            store.migrate().await?;
        }
        let revocations = Revocations::new(
            clock.clone(),
            FollowerPolicy {
                poll: config.events.follower_poll,
                max_lag: config.events.follower_max_lag,
                retention: config.events.retention,
            },
        );
        revocations.follow(store.clone());
        let marker_ttl = config.session_max_ttl.max(Duration::from_secs(3600));
        let (cache, counters) = open_cache_and_counters(&config.store).await?;
        let guarded = GuardedCache::new(cache, revocations.clone(), marker_ttl);
        guarded.settle(Duration::from_secs(1)).await;
        let cache: Arc<dyn SessionCache> = Arc::new(guarded);

        let overlap = key_timing(&config.keys, &config.timing);
        let mut key_set = KeySet::load_or_empty(&config.keys.keys_dir, overlap)?;
        if key_set.is_empty() {
            if !embedded {
                anyhow::bail!(
                    "no signing key in {}: run `authd keys generate` (AUTHD_KEYS_DIR names the directory)",
                    config.keys.keys_dir.display()
                );
            }
            let kid = keys::generate(&config.keys.keys_dir, config.keys.alg, clock.now())?;
            tracing::warn!(kid, dir = %config.keys.keys_dir.display(), "no signing key found; generated a development key");
            key_set = KeySet::load(&config.keys.keys_dir, overlap)?;
        }
        let active = key_set
            .signer(clock.now())
            .map(|k| k.alg.to_string())
            .unwrap_or_default();
        tracing::info!(
            "store={} cache={} keys={} ({} key{}, {})",
            store.describe(),
            cache.describe(),
            config.keys.keys_dir.display(),
            key_set.len(),
            if key_set.len() == 1 { "" } else { "s" },
            active
        );
        if embedded {
            tracing::warn!("embedded mode (SQLite + in-process cache) is for one process; set DATABASE_URL and REDIS_URL to run several");
        }

        let tokens = Arc::new(TokenIssuer::new(
            Arc::new(key_set),
            config.issuer(),
            config.audience.clone(),
            config.timing.access_ttl,
            config.timing.clock_skew,
        ));
        let params = config.argon2.params().map_err(anyhow::Error::msg)?;
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let hasher = PasswordHasher::new(
            params,
            workers,
            config.hash_queue,
            config.argon2.pepper.as_ref().map(|p| p.expose()),
        )?;
        let policy = Policy {
            access_ttl: config.timing.access_ttl,
            idle_ttl: config.session_idle_ttl,
            max_ttl: config.session_max_ttl,
            refresh_grace: config.refresh_grace,
            default_client_id: config.default_client_id.clone(),
            events_retention: config.events.retention,
        };
        let throttle = ThrottlePolicy {
            per_account_ip: config.limits.failures_per_account_ip,
            per_ip: config.limits.failures_per_ip,
            per_account: config.limits.failures_per_account,
            window: config.limits.lockout,
        };
        let stores = Stores {
            store,
            cache,
            revocations,
        };
        let lockouts = Lockouts {
            policy: throttle,
            counters,
        };
        let sessions = Arc::new(SessionService::new(stores, tokens, hasher, clock, policy, lockouts));
        let state = AppState::new(AppStateInner {
            sessions,
            clients: Arc::new(config.clients.clone()),
            metrics: metrics_handle(),
            request_timeout: config.request_timeout,
            token_limit: Arc::new(FloodLimit::new(
                config.limits.token_rate_per_ip,
                config.limits.token_rate,
            )),
            register_limit: Arc::new(FloodLimit::new(
                config.limits.register_rate_per_ip,
                config.limits.register_rate,
            )),
            trusted_proxies: Arc::new(config.edge.trusted_proxies.clone()),
            metrics_elsewhere: config.edge.metrics_listen.is_some(),
            refresh_cookie_max_age: config.session_idle_ttl,
            cors_origins: config
                .cors_origins
                .iter()
                .filter(|o| !o.is_empty())
                .filter_map(|o| axum::http::HeaderValue::from_str(o).ok())
                .collect(),
        });
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {} (AUTHD_LISTEN): {e}", config.listen))?;
        let metrics_listener = match config.edge.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (AUTHD_METRICS_LISTEN): {e}"))?,
            ),
            None => None,
        };
        Ok(Application {
            listener,
            metrics_listener,
            state,
            cleanup_interval: config.cleanup_interval,
            cleanup_retention: config.cleanup_retention,
            audit_retention: config.audit_retention,
            connection_limits: ConnectionLimits {
                header_read_timeout: config.edge.header_read_timeout,
                idle_timeout: config.edge.idle_timeout,
                max_connections: config.edge.max_connections,
            },
            keys_dir: config.keys.keys_dir.clone(),
            key_reload_interval: config.keys.reload_interval,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` is served when it has its own listener.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    fn spawn_cleanup(&self) -> Option<JoinHandle<()>> {
        if self.cleanup_interval.is_zero() {
            return None;
        }
        let sessions = self.state.sessions.clone();
        let (interval, retention) = (self.cleanup_interval, self.cleanup_retention);
        let audit_retention = self.audit_retention;
        Some(tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(e) = sessions.cleanup_once(retention).await {
                    tracing::warn!(error = %e, "cleanup pass failed; will retry");
                }
                if let Err(e) = sessions.cleanup_audit(audit_retention).await {
                    tracing::warn!(error = %e, "audit cleanup pass failed; will retry");
                }
            }
        }))
    }

    /// Re-reads the keys directory every reload interval and on SIGHUP.
    fn spawn_key_reload(&self) -> JoinHandle<()> {
        let sessions = self.state.sessions.clone();
        let (dir, interval) = (self.keys_dir.clone(), self.key_reload_interval);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut ticker = tokio::time::interval(if interval.is_zero() {
                Duration::from_secs(365 * 86400)
            } else {
                interval
            });
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                #[cfg(unix)]
                let signalled = async {
                    match hangup.as_mut() {
                        Some(s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let signalled = std::future::pending::<()>();
                let why = tokio::select! {
                    _ = ticker.tick() => "interval",
                    () = signalled => "SIGHUP",
                };
                match sessions.tokens().reload_keys(&dir).await {
                    Ok(report) => {
                        for problem in &report.failed {
                            tracing::warn!(why, "key file not loaded: {problem}");
                        }
                        if report.changed() {
                            tracing::info!(why, added = ?report.added, removed = ?report.removed, "signing keys reloaded");
                        }
                        metrics::counter!("authd_key_reloads_total", "outcome" => "ok").increment(1);
                    }
                    Err(e) => {
                        tracing::warn!(why, error = %e, "keys directory not reloaded; keeping the keys loaded");
                        metrics::counter!("authd_key_reloads_total", "outcome" => "error").increment(1);
                    }
                }
            }
        })
    }

    /// Serves until `shutdown` resolves, then stops accepting and gives
    /// in-flight requests a bounded time to finish.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let cleanup = self.spawn_cleanup();
        let key_reload = self.spawn_key_reload();
        let addr = self.local_addr()?;
        tracing::info!(%addr, "authd listening");
        let metrics = self.metrics_listener.map(|listener| {
            let router = http::ops::metrics_router(self.state.clone());
            let limits = self.connection_limits;
            tracing::info!(addr = ?listener.local_addr().ok(), "metrics listening");
            tokio::spawn(http::serve::serve(listener, router, limits, std::future::pending()))
        });
        let app = http::router(self.state);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = http::serve::serve(self.listener, app, self.connection_limits, async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            let _ = stopping_tx.send(());
        });
        let server = tokio::spawn(server);
        let outcome = tokio::select! {
            result = server => result.map_err(anyhow::Error::from),
            () = async {
                let _ = stopping_rx.await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                tracing::warn!("requests still in flight after {SHUTDOWN_GRACE:?}; exiting anyway");
                Ok(())
            }
        };
        if let Some(task) = cleanup {
            task.abort();
        }
        if let Some(task) = metrics {
            task.abort();
        }
        key_reload.abort();
        outcome
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// The default clock for `serve`.
pub fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
