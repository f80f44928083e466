//! A circuit breaker around the cache that also keeps it honest.
//!
//! - While the cache is *untrusted* every call fails at once (no network
//!   round trip), so callers fall back to the durable store and a dead Redis
//!   costs nothing per request.
//! - Any unavailability makes it untrusted. A background probe then pings
//!   it; before trusting it again the probe writes every revocation recorded
//!   as pending (revocations committed while the cache could not hear them),
//!   so a cache that comes back with stale "live" entries (a paused Redis, a
//!   partition) cannot resurrect a revoked session.
//! - Other processes learn about pending revocations through the durable
//!   store's alerts and distrust their cache until the sweep has run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{CacheLookup, DurableStore, SessionCache, StoreError, StoreResult};
use crate::domain::{SessionId, UserId};

/// How often an untrusted cache is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
const SWEEP_BATCH: i64 = 1000;

struct Guard {
    inner: Arc<dyn SessionCache>,
    store: Arc<dyn DurableStore>,
    /// Read on every request; written only under `state`.
    trusted: AtomicBool,
    state: Mutex<ProbeState>,
    marker_ttl: Duration,
}

#[derive(Default)]
struct ProbeState {
    probing: bool,
    /// Bumped by every distrust; a sweep only restores trust if no alert
    /// arrived while it ran.
    alerts: u64,
}

#[derive(Clone)]
pub struct GuardedCache(Arc<Guard>);

impl GuardedCache {
    /// Starts untrusted: the first probe sweeps pending revocations, which
    /// covers a process that crashed before writing them.
    pub fn new(inner: Arc<dyn SessionCache>, store: Arc<dyn DurableStore>, marker_ttl: Duration) -> Self {
        let cache = GuardedCache(Arc::new(Guard {
            inner,
            store,
            trusted: AtomicBool::new(false),
            state: Mutex::new(ProbeState::default()),
            marker_ttl,
        }));
        cache.distrust();
        let alerted = cache.clone();
        cache.0.store.watch_cache_alerts(Arc::new(move || alerted.distrust()));
        cache
    }

    /// Waits (bounded) for the first sweep, so a healthy cache is in use from
    /// the first request.
    pub async fn settle(&self, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        while !self.is_trusted() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn is_trusted(&self) -> bool {
        self.0.trusted.load(Ordering::Acquire)
    }

    /// Stops using the cache until a probe has swept pending revocations.
    pub fn distrust(&self) {
        let spawn = {
            let Ok(mut state) = self.0.state.lock() else {
                return;
            };
            state.alerts += 1;
            if self.0.trusted.swap(false, Ordering::AcqRel) {
                tracing::warn!(cache = %self.0.inner.describe(), "cache untrusted; serving from the durable store");
            }
            !std::mem::replace(&mut state.probing, true)
        };
        metrics::gauge!("authd_cache_trusted").set(0.0);
        if !spawn {
            return;
        }
        let guard = self.0.clone();
        tokio::spawn(async move {
            loop {
                let started_at = guard.state.lock().map(|s| s.alerts).unwrap_or(0);
                match sweep(&guard).await {
                    Ok(()) => {
                        let Ok(mut state) = guard.state.lock() else {
                            return;
                        };
                        if state.alerts == started_at {
                            state.probing = false;
                            guard.trusted.store(true, Ordering::Release);
                            metrics::gauge!("authd_cache_trusted").set(1.0);
                            tracing::info!(cache = %guard.inner.describe(), "cache trusted again");
                            return;
                        }
                        // An alert came in during the sweep: sweep again at once.
                        continue;
                    }
                    Err(e) => tracing::debug!(error = %e, "cache probe failed"),
                }
                tokio::time::sleep(PROBE_INTERVAL).await;
            }
        });
    }

    fn check<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        if let Err(StoreError::Unavailable(_)) = &result {
            self.distrust();
        }
        result
    }

    fn open_circuit<T>(&self) -> StoreResult<T> {
        Err(StoreError::Unavailable("cache circuit is open".into()))
    }
}

/// Pings the cache, then writes every pending revocation into it.
async fn sweep(guard: &Guard) -> StoreResult<()> {
    guard.inner.ping().await?;
    loop {
        let pending = guard.store.pending_revocations(SWEEP_BATCH).await?;
        let Some(&(last, _)) = pending.last() else {
            return Ok(());
        };
        let ids: Vec<SessionId> = pending.iter().map(|(_, id)| *id).collect();
        guard.inner.mark_revoked(&ids, guard.marker_ttl).await?;
        guard.store.clear_pending_revocations(last).await?;
        tracing::info!(count = ids.len(), "pending revocations written to the cache");
    }
}

#[async_trait]
impl SessionCache for GuardedCache {
    fn describe(&self) -> String {
        self.0.inner.describe()
    }

    async fn ping(&self) -> StoreResult<()> {
        if !self.is_trusted() {
            return self.open_circuit();
        }
        let result = self.0.inner.ping().await;
        self.check(result)
    }

    async fn get(&self, id: SessionId) -> StoreResult<CacheLookup> {
        if !self.is_trusted() {
            return self.open_circuit();
        }
        let result = self.0.inner.get(id).await;
        self.check(result)
    }

    async fn put_live(&self, id: SessionId, user_id: UserId, expires_at: i64, ttl: Duration) -> StoreResult<()> {
        if !self.is_trusted() {
            return self.open_circuit();
        }
        let result = self.0.inner.put_live(id, user_id, expires_at, ttl).await;
        self.check(result)
    }

    async fn mark_revoked(&self, ids: &[SessionId], ttl: Duration) -> StoreResult<()> {
        if !self.is_trusted() {
            return self.open_circuit();
        }
        let result = self.0.inner.mark_revoked(ids, ttl).await;
        self.check(result)
    }
}
