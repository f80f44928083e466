//! Expiry cleanup: deletes sessions that ended more than a retention window
//! ago (logging `session_expired` for those that expired unrevoked), and
//! events past their retention, in bounded batches so no single statement
//! holds locks for long. The cache side needs nothing: its entries expire
//! by TTL.

use std::time::Duration;

use time::OffsetDateTime;

use super::{secs, SessionService};
use crate::error::Result;
use crate::store::DurableStore;

pub const BATCH: i64 = 1000;

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub sessions: u64,
    pub events: u64,
}

/// Repeats `batch` until it deletes less than a full batch; returns the total.
async fn in_batches<F, Fut>(mut batch: F) -> Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::store::StoreResult<u64>>,
{
    let mut total = 0;
    loop {
        let deleted = batch().await?;
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
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
    let sessions = in_batches(|| store.delete_ended_sessions(cutoff, now, BATCH)).await?;
    let event_cutoff = now - secs(event_retention);
    let events = in_batches(|| store.delete_old_events(event_cutoff, now, BATCH)).await?;
    if sessions > 0 || events > 0 {
        tracing::info!(sessions, events, "expired sessions and old events cleaned up");
    }
    metrics::counter!("authd_sessions_cleaned_total").increment(sessions);
    metrics::counter!("authd_session_events_cleaned_total").increment(events);
    Ok(Cleaned { sessions, events })
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
}
