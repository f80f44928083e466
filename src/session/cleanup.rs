//! Expiry cleanup: deletes sessions that ended more than a retention window
//! ago (logging `session_expired` for those that expired unrevoked), events
//! past their retention, and audit events older than theirs, in bounded
//! batches so no single statement holds locks for long. The cache side
//! needs nothing: its entries expire by TTL.
//!
//! Each batch has its own bound (not the request one). A batch that still
//! times out is retried at half the size, so a pass always makes progress
//! instead of failing on the same batch every time.

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;

use super::{secs, SessionService};
use crate::error::Result;
use crate::store::{DurableStore, StoreError, StoreResult};

pub const BATCH: i64 = 1000;
const MIN_BATCH: i64 = 10;

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub sessions: u64,
    pub events: u64,
}

/// Runs `batch_of(size)` until a batch comes back short; halves the size
/// after a timeout. Returns the total deleted.
async fn in_batches<F, Fut>(mut batch_of: F) -> Result<u64>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = StoreResult<u64>>,
{
    let (mut total, mut size) = (0, BATCH);
    loop {
        match batch_of(size).await {
            Ok(deleted) => {
                total += deleted;
                if deleted < size as u64 {
                    return Ok(total);
                }
            }
            Err(StoreError::Unavailable(why)) if size > MIN_BATCH => {
                size = (size / 2).max(MIN_BATCH);
                tracing::warn!(%why, size, "cleanup batch failed; retrying smaller");
            }
            Err(e) => return Err(e.into()),
        }
        // Yield between batches so cleanup never starves requests.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One full pass over `store` at `now`: every session that ended before
/// `now - session_retention`, and every event older than `event_retention`
/// whose `until` has passed.
pub async fn clean(
    store: &dyn DurableStore,
    now: OffsetDateTime,
    session_retention: Duration,
    event_retention: Duration,
) -> Result<Cleaned> {
    let cutoff = now - secs(session_retention);
    let sessions = in_batches(|size| store.delete_ended_sessions(cutoff, now, size)).await?;
    let event_cutoff = now - secs(event_retention);
    let events = in_batches(|size| store.delete_old_events(event_cutoff, now, size)).await?;
    if sessions > 0 || events > 0 {
        tracing::info!(sessions, events, "expired sessions and old events cleaned up");
    }
    metrics::counter!("authd_sessions_cleaned_total").increment(sessions);
    metrics::counter!("authd_session_events_cleaned_total").increment(events);
    Ok(Cleaned { sessions, events })
}

/// Every audit event older than `cutoff`.
pub async fn delete_old_audit(store: &dyn DurableStore, cutoff: OffsetDateTime) -> Result<u64> {
    let total = in_batches(|size| store.delete_audit_before(cutoff, size)).await?;
    if total > 0 {
        tracing::info!(deleted = total, "audit events past retention deleted");
    }
    metrics::counter!("authd_audit_events_cleaned_total").increment(total);
    Ok(total)
}

impl SessionService {
    /// One full pass (events by the policy's retention); returns how many
    /// sessions were deleted.
    pub async fn cleanup_once(&self, session_retention: Duration) -> Result<u64> {
        let cleaned = clean(
            self.store.as_ref(),
            self.clock.now(),
            session_retention,
            self.policy.events_retention,
        )
        .await?;
        Ok(cleaned.sessions)
    }

    /// Deletes audit events older than `retention`; returns how many.
    pub async fn cleanup_audit(&self, retention: Duration) -> Result<u64> {
        delete_old_audit(self.store.as_ref(), self.clock.now() - secs(retention)).await
    }
}
