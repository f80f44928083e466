//! The in-process session cache for the embedded mode: bounded in size, with
//! per-entry expiry. Only for a single process.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::future::Cache;
use moka::Expiry;

use super::{Backend, CacheLookup, Counter, SessionCache, StoreResult};
use crate::domain::{SessionId, UserId};

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

#[derive(Clone, Copy, Debug)]
struct Count {
    count: u64,
    ends: Instant,
}

struct CountTtl;

impl Expiry<String, Count> for CountTtl {
    fn expire_after_create(&self, _: &String, value: &Count, now: Instant) -> Option<Duration> {
        Some(value.ends.saturating_duration_since(now))
    }

    fn expire_after_update(&self, _: &String, value: &Count, now: Instant, _: Option<Duration>) -> Option<Duration> {
        Some(value.ends.saturating_duration_since(now))
    }
}

pub struct MemoryCache {
    entries: Cache<SessionId, Entry>,
    counters: Cache<String, Count>,
}

impl MemoryCache {
    pub fn new(max_entries: u64) -> Self {
        MemoryCache {
            entries: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(EntryTtl)
                .build(),
            counters: Cache::builder()
                .max_capacity(max_entries)
                .expire_after(CountTtl)
                .build(),
        }
    }
}

fn counter_of(c: Option<Count>, now: Instant) -> Counter {
    match c {
        Some(c) if c.ends > now => Counter {
            count: c.count,
            remaining: c.ends - now,
        },
        _ => Counter::default(),
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

    async fn put_live(&self, id: SessionId, user_id: UserId, expires_at: i64, ttl: Duration) -> StoreResult<()> {
        let entry = Entry {
            lookup: CacheLookup::Live { user_id, expires_at },
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

    async fn hit(&self, key: &str, window: Duration) -> StoreResult<Counter> {
        let now = Instant::now();
        let entry = self
            .counters
            .entry(key.to_string())
            .and_compute_with(|current| async move {
                let next = match current.map(|c| c.into_value()) {
                    Some(c) if c.ends > now => Count {
                        count: c.count + 1,
                        ends: c.ends,
                    },
                    _ => Count {
                        count: 1,
                        ends: now + window,
                    },
                };
                moka::ops::compute::Op::Put(next)
            })
            .await;
        Ok(counter_of(entry.into_entry().map(|e| e.into_value()), now))
    }

    async fn peek(&self, key: &str) -> StoreResult<Counter> {
        Ok(counter_of(self.counters.get(key).await, Instant::now()))
    }

    async fn clear(&self, key: &str) -> StoreResult<()> {
        self.counters.invalidate(key).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revocation_markers_are_never_overwritten_by_fills() {
        let cache = MemoryCache::new(100);
        let (sid, uid) = (SessionId::new(), UserId::new());
        assert_eq!(cache.get(sid).await.unwrap(), CacheLookup::Miss);
        cache.put_live(sid, uid, 10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(
            cache.get(sid).await.unwrap(),
            CacheLookup::Live {
                user_id: uid,
                expires_at: 10
            }
        );
        cache.mark_revoked(&[sid], Duration::from_secs(60)).await.unwrap();
        cache.put_live(sid, uid, 10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(cache.get(sid).await.unwrap(), CacheLookup::Revoked);
    }

    #[tokio::test]
    async fn counters_count_within_a_window() {
        let cache = MemoryCache::new(100);
        let w = Duration::from_millis(200);
        assert_eq!(cache.hit("k", w).await.unwrap().count, 1);
        assert_eq!(cache.hit("k", w).await.unwrap().count, 2);
        assert_eq!(cache.peek("k").await.unwrap().count, 2);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(cache.peek("k").await.unwrap().count, 0);
        assert_eq!(cache.hit("k", w).await.unwrap().count, 1);
        cache.clear("k").await.unwrap();
        assert_eq!(cache.peek("k").await.unwrap().count, 0);
    }
}
