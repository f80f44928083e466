//! Expiry cleanup: deletes sessions that ended more than a retention window
//! ago, in bounded batches so no single statement holds locks for long.
//! The cache side needs nothing: its entries expire by TTL.

use std::time::Duration;

use time::OffsetDateTime;

use super::{secs, SessionService};
use crate::error::Result;
use crate::store::DurableStore;

pub const BATCH: i64 = 1000;

/// One full pass over `store`: every session that ended before `cutoff`.
pub async fn delete_ended(store: &dyn DurableStore, cutoff: OffsetDateTime) -> Result<u64> {
    let mut total = 0;
    loop {
        let deleted = store.delete_ended_sessions(cutoff, BATCH).await?;
        total += deleted;
        if deleted < BATCH as u64 {
            break;
        }
        // Yield between batches so cleanup never starves requests.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if total > 0 {
        tracing::info!(deleted = total, "expired sessions cleaned up");
    }
    metrics::counter!("authd_sessions_cleaned_total").increment(total);
    Ok(total)
}

impl SessionService {
    /// One full pass; returns how many sessions were deleted.
    pub async fn cleanup_once(&self, retention: Duration) -> Result<u64> {
        delete_ended(self.store.as_ref(), self.clock.now() - secs(retention)).await
    }
}
