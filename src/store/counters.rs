//! Windowed event counters for brute-force limits: their own trait, apart
//! from the session cache, with their own failure behaviour.
//!
//! - An attempt is *taken* atomically before it is checked: the count is
//!   compared with the limit and incremented in one step, so a limit of N
//!   admits at most N attempts however many arrive at once.
//! - Time is a parameter (`now`), so tests move a window with the clock.
//! - [`FallbackCounters`]: the shared store (Redis) when it answers, else
//!   counts in this process for a short while before asking it again. A
//!   lockout never waits for the session cache's circuit breaker, and a dead
//!   Redis does not lift it in the process that saw the failures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use moka::future::Cache;
use moka::ops::compute::{CompResult, Op};
use moka::Expiry;
use time::OffsetDateTime;

use super::{StoreError, StoreResult};

/// A windowed event count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub count: u64,
    /// Time left in the window.
    pub remaining: Duration,
}

/// What [`CounterStore::take`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Counted; the count includes this event.
    Taken(Counter),
    /// The limit was already reached; nothing was counted.
    Refused(Counter),
}

#[async_trait]
pub trait CounterStore: Send + Sync {
    fn describe(&self) -> String;
    /// Atomically: when the count under `key` is below `limit`, adds one. A
    /// window starts with its key's first event and lasts `window`.
    async fn take(&self, key: &str, limit: u64, window: Duration, now: OffsetDateTime) -> StoreResult<Take>;
    /// Takes back one event of the current window (never below zero, never
    /// starting a window).
    async fn give_back(&self, key: &str, now: OffsetDateTime) -> StoreResult<()>;
    async fn clear(&self, key: &str, now: OffsetDateTime) -> StoreResult<()>;
}

fn millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn left(ends_ms: i64, now: OffsetDateTime) -> Duration {
    Duration::from_millis((ends_ms - millis(now)).max(0) as u64)
}

#[derive(Clone, Copy, Debug)]
struct Count {
    count: u64,
    /// Window end, unix milliseconds on the service clock.
    ends_ms: i64,
    /// How long the entry is kept in memory (the window, in real time).
    keep: Duration,
}

struct KeepFor;

impl Expiry<String, Count> for KeepFor {
    fn expire_after_create(&self, _: &String, value: &Count, _: std::time::Instant) -> Option<Duration> {
        Some(value.keep)
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &Count,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.keep)
    }
}

/// Counters in this process, bounded in entries.
pub struct MemoryCounters {
    counts: Cache<String, Count>,
}

impl MemoryCounters {
    pub fn new(max_entries: u64) -> Self {
        MemoryCounters {
            counts: Cache::builder().max_capacity(max_entries).expire_after(KeepFor).build(),
        }
    }
}

#[async_trait]
impl CounterStore for MemoryCounters {
    fn describe(&self) -> String {
        "in-process".into()
    }

    async fn take(&self, key: &str, limit: u64, window: Duration, now: OffsetDateTime) -> StoreResult<Take> {
        let now_ms = millis(now);
        let fresh = Count {
            count: 1,
            ends_ms: now_ms + window.as_millis() as i64,
            keep: window,
        };
        // `and_compute_with` runs one computation per key at a time.
        let result = self
            .counts
            .entry(key.to_string())
            .and_compute_with(|current| async move {
                match current.map(|c| c.into_value()) {
                    Some(c) if c.ends_ms > now_ms && c.count >= limit => Op::Nop,
                    Some(c) if c.ends_ms > now_ms => Op::Put(Count {
                        count: c.count + 1,
                        ..c
                    }),
                    _ if limit == 0 => Op::Nop,
                    _ => Op::Put(fresh),
                }
            })
            .await;
        Ok(match result {
            CompResult::Inserted(e) | CompResult::ReplacedWith(e) => {
                let c = e.into_value();
                Take::Taken(Counter {
                    count: c.count,
                    remaining: left(c.ends_ms, now),
                })
            }
            CompResult::Unchanged(e) => {
                let c = e.into_value();
                Take::Refused(Counter {
                    count: c.count,
                    remaining: left(c.ends_ms, now),
                })
            }
            CompResult::StillNone(_) | CompResult::Removed(_) => Take::Refused(Counter {
                count: 0,
                remaining: window,
            }),
        })
    }

    async fn give_back(&self, key: &str, now: OffsetDateTime) -> StoreResult<()> {
        let now_ms = millis(now);
        self.counts
            .entry(key.to_string())
            .and_compute_with(|current| async move {
                match current.map(|c| c.into_value()) {
                    Some(c) if c.ends_ms > now_ms && c.count > 0 => Op::Put(Count {
                        count: c.count - 1,
                        ..c
                    }),
                    _ => Op::Nop,
                }
            })
            .await;
        Ok(())
    }

    async fn clear(&self, key: &str, _now: OffsetDateTime) -> StoreResult<()> {
        self.counts.invalidate(key).await;
        Ok(())
    }
}

/// How long counting stays local after the shared store failed.
const LOCAL_FOR: time::Duration = time::Duration::seconds(1);

/// The shared counters when they answer, this process's otherwise.
pub struct FallbackCounters {
    shared: Option<Arc<dyn CounterStore>>,
    local: MemoryCounters,
    /// Until when the shared store is not asked (it just failed).
    local_until: Mutex<Option<OffsetDateTime>>,
}

impl FallbackCounters {
    pub fn new(shared: Option<Arc<dyn CounterStore>>, max_local_entries: u64) -> Self {
        FallbackCounters {
            shared,
            local: MemoryCounters::new(max_local_entries),
            local_until: Mutex::new(None),
        }
    }

    fn shared_at(&self, now: OffsetDateTime) -> Option<&Arc<dyn CounterStore>> {
        let shared = self.shared.as_ref()?;
        match self.local_until.lock() {
            Ok(until) if until.is_some_and(|u| u > now) => None,
            _ => Some(shared),
        }
    }

    fn failed(&self, e: &StoreError, now: OffsetDateTime) {
        tracing::warn!(error = %e, "shared counters unavailable; counting in this process");
        metrics::counter!("authd_counter_fallbacks_total").increment(1);
        if let Ok(mut until) = self.local_until.lock() {
            *until = Some(now + LOCAL_FOR);
        }
    }
}

#[async_trait]
impl CounterStore for FallbackCounters {
    fn describe(&self) -> String {
        match &self.shared {
            Some(s) => format!("{} (in-process when unavailable)", s.describe()),
            None => self.local.describe(),
        }
    }

    async fn take(&self, key: &str, limit: u64, window: Duration, now: OffsetDateTime) -> StoreResult<Take> {
        if let Some(shared) = self.shared_at(now) {
            match shared.take(key, limit, window, now).await {
                Ok(t) => return Ok(t),
                Err(e) => self.failed(&e, now),
            }
        }
        self.local.take(key, limit, window, now).await
    }

    async fn give_back(&self, key: &str, now: OffsetDateTime) -> StoreResult<()> {
        if let Some(shared) = self.shared_at(now) {
            match shared.give_back(key, now).await {
                Ok(()) => return Ok(()),
                Err(e) => self.failed(&e, now),
            }
        }
        self.local.give_back(key, now).await
    }

    async fn clear(&self, key: &str, now: OffsetDateTime) -> StoreResult<()> {
        if let Some(shared) = self.shared_at(now) {
            if let Err(e) = shared.clear(key, now).await {
                self.failed(&e, now);
            }
        }
        self.local.clear(key, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_700_000_000 + secs)
    }

    #[tokio::test]
    async fn takes_up_to_the_limit_within_a_window_moved_by_the_clock() {
        let c = MemoryCounters::new(100);
        let w = Duration::from_secs(10);
        assert!(matches!(
            c.take("k", 2, w, at(0)).await.unwrap(),
            Take::Taken(Counter { count: 1, .. })
        ));
        assert!(matches!(
            c.take("k", 2, w, at(1)).await.unwrap(),
            Take::Taken(Counter { count: 2, .. })
        ));
        let refused = c.take("k", 2, w, at(2)).await.unwrap();
        assert_eq!(
            refused,
            Take::Refused(Counter {
                count: 2,
                remaining: Duration::from_secs(8)
            })
        );
        c.give_back("k", at(3)).await.unwrap();
        assert!(matches!(
            c.take("k", 2, w, at(3)).await.unwrap(),
            Take::Taken(Counter { count: 2, .. })
        ));
        // The window ends by the clock, not by waiting.
        assert!(matches!(
            c.take("k", 2, w, at(10)).await.unwrap(),
            Take::Taken(Counter { count: 1, .. })
        ));
        c.clear("k", at(10)).await.unwrap();
        c.give_back("k", at(11)).await.unwrap();
        assert!(matches!(
            c.take("k", 2, w, at(11)).await.unwrap(),
            Take::Taken(Counter { count: 1, .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_takes_never_pass_the_limit() {
        let c = Arc::new(MemoryCounters::new(100));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.take("k", 5, Duration::from_secs(60), at(0)).await.unwrap() })
            })
            .collect();
        let mut taken = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Take::Taken(_)) {
                taken += 1;
            }
        }
        assert_eq!(taken, 5);
    }
}
