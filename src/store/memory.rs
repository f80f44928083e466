//! The in-process session cache for the embedded mode: bounded in size, with
//! per-entry expiry. Only for a single process.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::future::Cache;
use moka::Expiry;

use super::{Backend, CacheLookup, LiveEntry, SessionCache, StoreResult};
use crate::domain::SessionId;

#[derive(Clone, Debug)]
struct Entry {
    lookup: CacheLookup,
    ttl: Duration,
}

struct EntryTtl;

impl Expiry<SessionId, Entry> for EntryTtl {
    fn expire_after_create(&self, _: &SessionId, value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(&self, _: &SessionId, value: &Entry, _: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(value.ttl)
    }
}

pub struct MemoryCache {
    entries: Cache<SessionId, Entry>,
}

impl MemoryCache {
    pub fn new(max_entries: u64) -> Self {
        MemoryCache {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(EntryTtl)
                .build(),
        }
    }
}

#[async_trait]
impl SessionCache for MemoryCache {
    fn describe(&self) -> String {
        "in-process".into()
    }

    fn backend(&self) -> Backend {
        Backend::InProcess
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn get(&self, id: SessionId) -> StoreResult<CacheLookup> {
        Ok(self
            .entries
            .get(&id)
            .await
            .map(|e| e.lookup)
            .unwrap_or(CacheLookup::Miss))
    }

    async fn put_live(&self, id: SessionId, live: &LiveEntry, ttl: Duration) -> StoreResult<()> {
        let entry = Entry {
            lookup: CacheLookup::Live(live.clone()),
            ttl,
        };
        // Atomic per key: a revocation marker is never replaced by a live entry.
        self.entries
            .entry(id)
            .and_compute_with(|current| async move {
                match current.map(|c| c.into_value()) {
                    Some(Entry {
                        lookup: CacheLookup::Revoked,
                        ..
                    }) => moka::ops::compute::Op::Nop,
                    _ => moka::ops::compute::Op::Put(entry),
                }
            })
            .await;
        Ok(())
    }

    async fn mark_revoked(&self, ids: &[SessionId], ttl: Duration) -> StoreResult<()> {
        for id in ids {
            self.entries
                .insert(
                    *id,
                    Entry {
                        lookup: CacheLookup::Revoked,
                        ttl,
                    },
                )
                .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revocation_markers_are_never_overwritten_by_fills() {
        let cache = MemoryCache::new(100);
        let sid = SessionId::new();
        let live = LiveEntry {
            user_id: crate::domain::UserId::new(),
            expires_at: 10,
            facts: None,
        };
        assert_eq!(cache.get(sid).await.unwrap(), CacheLookup::Miss);
        cache.put_live(sid, &live, Duration::from_secs(60)).await.unwrap();
        assert_eq!(cache.get(sid).await.unwrap(), CacheLookup::Live(live.clone()));
        cache.mark_revoked(&[sid], Duration::from_secs(60)).await.unwrap();
        cache.put_live(sid, &live, Duration::from_secs(60)).await.unwrap();
        assert_eq!(cache.get(sid).await.unwrap(), CacheLookup::Revoked);
    }
}
