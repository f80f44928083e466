//! A circuit breaker around the cache that also keeps it honest.
//!
//! - While the cache is *untrusted* every call fails at once (no network
//!   round trip), so callers fall back to the durable store and a dead Redis
//!   costs nothing per request.
//! - Any unavailability makes it untrusted, and so does a change of the
//!   cache server's identity (a restart, maybe from an old snapshot, or a
//!   failover to a replica that missed writes): either can bring back "live"
//!   entries of sessions revoked since.
//! - Before trusting it again, a probe writes every revocation of the event
//!   log follower's set into it, so whatever it lost is back first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;

use super::{CacheLookup, LiveEntry, RevocationSource, SessionCache, StoreError, StoreResult};
use crate::domain::SessionId;

/// How often an untrusted cache is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How often a trusted cache's identity is compared with the one it had.
pub const IDENTITY_INTERVAL: Duration = Duration::from_secs(1);
const SWEEP_BATCH: usize = 1000;

struct Guard {
    inner: Arc<dyn SessionCache>,
    revocations: Arc<dyn RevocationSource>,
    /// Read on every request; written only under `state`.
    trusted: AtomicBool,
    state: Mutex<ProbeState>,
    marker_ttl: Duration,
}

#[derive(Default)]
struct ProbeState {
    probing: bool,
    /// Bumped by every distrust; a sweep only restores trust if none came
    /// while it ran.
    distrusts: u64,
    /// The cache server's identity when it was last swept.
    identity: Option<String>,
}

#[derive(Clone)]
pub struct GuardedCache(Arc<Guard>);

impl GuardedCache {
    /// Starts untrusted: the first probe writes the follower's revocations
    /// once it has loaded them.
    pub fn new(inner: Arc<dyn SessionCache>, revocations: Arc<dyn RevocationSource>, marker_ttl: Duration) -> Self {
        let cache = GuardedCache(Arc::new(Guard {
            inner,
            revocations,
            trusted: AtomicBool::new(false),
            state: Mutex::new(ProbeState::default()),
            marker_ttl,
        }));
        cache.distrust();
        tokio::spawn(watch_identity(Arc::downgrade(&cache.0)));
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

    /// Stops using the cache until a probe has re-written the revocations.
    pub fn distrust(&self) {
        distrust(&self.0);
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

fn distrust(guard: &Arc<Guard>) {
    let spawn = {
        let Ok(mut state) = guard.state.lock() else {
            return;
        };
        state.distrusts += 1;
        if guard.trusted.swap(false, Ordering::AcqRel) {
            tracing::warn!(cache = %guard.inner.describe(), "cache untrusted; serving from the durable store");
        }
        !std::mem::replace(&mut state.probing, true)
    };
    metrics::gauge!("authd_cache_trusted").set(0.0);
    if spawn {
        tokio::spawn(probe(guard.clone()));
    }
}

/// Sweeps until a sweep completes with no distrust during it, then trusts.
async fn probe(guard: Arc<Guard>) {
    loop {
        let started_at = guard.state.lock().map(|s| s.distrusts).unwrap_or(0);
        match sweep(&guard).await {
            Ok(identity) => {
                let Ok(mut state) = guard.state.lock() else {
                    return;
                };
                if state.distrusts == started_at {
                    state.probing = false;
                    state.identity = identity;
                    guard.trusted.store(true, Ordering::Release);
                    metrics::gauge!("authd_cache_trusted").set(1.0);
                    tracing::info!(cache = %guard.inner.describe(), "cache trusted again");
                    return;
                }
                // Distrusted during the sweep: sweep again at once.
                continue;
            }
            Err(e) => tracing::debug!(error = %e, "cache probe failed"),
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Writes every revocation the follower knows into the cache; returns the
/// cache's identity, which must not have changed while it ran.
async fn sweep(guard: &Guard) -> StoreResult<Option<String>> {
    guard.inner.ping().await?;
    if !guard.revocations.ready() {
        return Err(StoreError::Unavailable(
            "the event log follower has not loaded the revocations yet".into(),
        ));
    }
    let identity = guard.inner.identity().await?;
    let ids = guard.revocations.revoked();
    for chunk in ids.chunks(SWEEP_BATCH) {
        guard.inner.mark_revoked(chunk, guard.marker_ttl).await?;
    }
    if guard.inner.identity().await? != identity {
        return Err(StoreError::Unavailable(
            "the cache server changed during the sweep".into(),
        ));
    }
    if !ids.is_empty() {
        tracing::info!(count = ids.len(), "revocations written to the cache before trusting it");
    }
    Ok(identity)
}

/// Distrusts a trusted cache whose server is no longer the one swept.
async fn watch_identity(guard: Weak<Guard>) {
    loop {
        tokio::time::sleep(IDENTITY_INTERVAL).await;
        let Some(guard) = guard.upgrade() else {
            return;
        };
        if !guard.trusted.load(Ordering::Acquire) {
            continue;
        }
        let known = guard.state.lock().ok().and_then(|s| s.identity.clone());
        match guard.inner.identity().await {
            Ok(now) if now == known => {}
            Ok(now) => {
                tracing::warn!(before = ?known, now = ?now, "cache server changed (restart or failover); re-writing revocations");
                distrust(&guard);
            }
            Err(StoreError::Unavailable(_)) => distrust(&guard),
            Err(e) => tracing::debug!(error = %e, "cache identity check failed"),
        }
    }
}

#[async_trait]
impl SessionCache for GuardedCache {
    fn describe(&self) -> String {
        self.0.inner.describe()
    }

    fn backend(&self) -> super::Backend {
        self.0.inner.backend()
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

    async fn put_live(&self, id: SessionId, entry: &LiveEntry, ttl: Duration) -> StoreResult<()> {
        if !self.is_trusted() {
            return self.open_circuit();
        }
        let result = self.0.inner.put_live(id, entry, ttl).await;
        self.check(result)
    }

    async fn mark_revoked(&self, ids: &[SessionId], ttl: Duration) -> StoreResult<()> {
        if !self.is_trusted() {
            return self.open_circuit();
        }
        let result = self.0.inner.mark_revoked(ids, ttl).await;
        self.check(result)
    }

    async fn identity(&self) -> StoreResult<Option<String>> {
        self.0.inner.identity().await
    }
}
