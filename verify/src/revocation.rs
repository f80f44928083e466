//! The revocation set: authd's snapshot, then its SSE stream, resumed by
//! cursor across reconnects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::metrics as m;

/// One revoked session, as the feed sends it.
#[derive(Debug, Clone, Deserialize)]
pub struct Revocation {
    pub sid: String,
    #[serde(default)]
    pub sub: String,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    /// After this (plus skew) no token of the session can be valid.
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    #[serde(default)]
    pub reason: String,
}

#[derive(Deserialize)]
struct Snapshot {
    revoked: Vec<Revocation>,
    cursor: String,
}

/// Heartbeats come after 5 s of quiet; a connection silent for longer than
/// this is taken for dead and replaced.
const IDLE_TIMEOUT: Duration = Duration::from_secs(7);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(crate) struct RevocationSet {
    /// sid → `until` (unix seconds).
    entries: RwLock<HashMap<String, i64>>,
    epoch: Instant,
    /// Milliseconds after `epoch` the feed was last heard from, plus one (0: never).
    last_heard: AtomicU64,
    skew: i64,
}

impl RevocationSet {
    pub(crate) fn new(skew: Duration) -> Self {
        RevocationSet {
            entries: RwLock::new(HashMap::new()),
            epoch: Instant::now(),
            last_heard: AtomicU64::new(0),
            skew: skew.as_secs() as i64,
        }
    }

    fn heard(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_heard.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long the feed has been silent; `None` before it was ever heard.
    pub(crate) fn silence(&self) -> Option<Duration> {
        match self.last_heard.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch.elapsed().saturating_sub(Duration::from_millis(ms - 1))),
        }
    }

    pub(crate) fn is_revoked(&self, sid: &str, now: i64) -> bool {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.get(sid).is_some_and(|until| now <= until + self.skew)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn insert(&self, revocation: &Revocation) {
        let until = revocation.until.unix_timestamp();
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let slot = entries.entry(revocation.sid.clone()).or_insert(until);
        *slot = (*slot).max(until);
    }

    fn prune(&self, now: i64) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, until| now <= *until + self.skew);
    }
}

pub(crate) struct Feed {
    pub set: Arc<RevocationSet>,
    pub http: reqwest::Client,
    pub snapshot_uri: String,
    pub stream_uri: String,
    pub client_id: String,
    pub client_secret: String,
    pub timeout: Duration,
}

enum Followed {
    /// 410: the cursor is too old; reload the snapshot.
    Gone,
    /// The connection ended or failed; `connected` if it had been accepted.
    Ended { connected: bool },
}

impl Feed {
    pub(crate) async fn load_snapshot(&self) -> Result<String, String> {
        let response = self
            .http
            .get(&self.snapshot_uri)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| format!("GET {}: {e}", self.snapshot_uri))?;
        if !response.status().is_success() {
            return Err(format!("GET {}: {}", self.snapshot_uri, response.status()));
        }
        let snapshot: Snapshot = response
            .json()
            .await
            .map_err(|e| format!("GET {}: {e}", self.snapshot_uri))?;
        // Merge, never replace: an entry leaves only when its `until` passes.
        for revocation in &snapshot.revoked {
            self.set.insert(revocation);
        }
        self.set.heard();
        metrics::gauge!(m::REVOKED_SESSIONS).set(self.set.len() as f64);
        Ok(snapshot.cursor)
    }

    async fn follow(&self, cursor: &mut String) -> Followed {
        let request = self
            .http
            .get(&self.stream_uri)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .header(http::header::ACCEPT, "text/event-stream")
            .header("Last-Event-ID", cursor.as_str());
        let response = match tokio::time::timeout(self.timeout, request.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "revocation stream: connection failed");
                metrics::counter!(m::FEED_CONNECTS, "outcome" => "error").increment(1);
                return Followed::Ended { connected: false };
            }
            Err(_) => {
                metrics::counter!(m::FEED_CONNECTS, "outcome" => "error").increment(1);
                return Followed::Ended { connected: false };
            }
        };
        if response.status() == reqwest::StatusCode::GONE {
            metrics::counter!(m::FEED_CONNECTS, "outcome" => "gone").increment(1);
            return Followed::Gone;
        }
        if !response.status().is_success() {
            tracing::warn!(status = %response.status(), "revocation stream refused");
            metrics::counter!(m::FEED_CONNECTS, "outcome" => "error").increment(1);
            return Followed::Ended { connected: false };
        }
        metrics::counter!(m::FEED_CONNECTS, "outcome" => "ok").increment(1);
        self.set.heard();
        let set = self.set.clone();
        // Every chunk counts as a sign of life: heartbeats are SSE comments,
        // which the parser does not surface.
        let mut events = response
            .bytes_stream()
            .inspect(move |chunk| {
                if chunk.is_ok() {
                    set.heard();
                }
            })
            .eventsource();
        loop {
            let next = match tokio::time::timeout(IDLE_TIMEOUT, events.next()).await {
                Ok(Some(Ok(event))) => event,
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "revocation stream broke");
                    return Followed::Ended { connected: true };
                }
                Ok(None) => return Followed::Ended { connected: true },
                Err(_) => {
                    tracing::warn!("revocation stream silent for {IDLE_TIMEOUT:?}; reconnecting");
                    return Followed::Ended { connected: true };
                }
            };
            if next.event == "session_revoked" {
                match serde_json::from_str::<Revocation>(&next.data) {
                    Ok(revocation) => {
                        self.set.insert(&revocation);
                        metrics::counter!(m::FEED_EVENTS).increment(1);
                        let lag = (OffsetDateTime::now_utc() - revocation.revoked_at).as_seconds_f64();
                        metrics::histogram!(m::FEED_LAG).record(lag.max(0.0));
                        metrics::gauge!(m::REVOKED_SESSIONS).set(self.set.len() as f64);
                    }
                    Err(e) => tracing::warn!(error = %e, "revocation event not understood"),
                }
            }
            if !next.id.is_empty() {
                *cursor = next.id;
            }
        }
    }

    /// Snapshot, then stream, forever: reconnects with exponential backoff
    /// (reset after an accepted connection) and resumes from the last
    /// cursor; a 410 reloads the snapshot.
    pub(crate) async fn run(self, mut cursor: Option<String>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let current = match cursor.take() {
                Some(c) => c,
                None => match self.load_snapshot().await {
                    Ok(c) => {
                        metrics::counter!(m::FEED_CONNECTS, "outcome" => "ok").increment(1);
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "revocation snapshot failed; retrying");
                        metrics::counter!(m::FEED_CONNECTS, "outcome" => "error").increment(1);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                },
            };
            let mut current = current;
            match self.follow(&mut current).await {
                Followed::Gone => {
                    tracing::info!("revocation cursor too old; reloading the snapshot");
                    cursor = None;
                    continue;
                }
                Followed::Ended { connected } => {
                    if connected {
                        backoff = BACKOFF_MIN;
                    }
                    cursor = Some(current);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// Drops entries past `until` + skew and publishes the gauges, every second.
pub(crate) async fn maintain(set: Arc<RevocationSet>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        set.prune(OffsetDateTime::now_utc().unix_timestamp());
        metrics::gauge!(m::REVOKED_SESSIONS).set(set.len() as f64);
        if let Some(silence) = set.silence() {
            metrics::gauge!(m::FEED_SILENCE).set(silence.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_leave_after_until_plus_skew() {
        let set = RevocationSet::new(Duration::from_secs(2));
        let now = OffsetDateTime::now_utc();
        set.insert(&Revocation {
            sid: "s".into(),
            sub: "u".into(),
            revoked_at: now,
            until: now,
            reason: "logout".into(),
        });
        let t = now.unix_timestamp();
        assert!(set.is_revoked("s", t + 2));
        assert!(!set.is_revoked("s", t + 3));
        set.prune(t + 2);
        assert_eq!(set.len(), 1);
        set.prune(t + 3);
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn silence_is_unknown_until_heard() {
        let set = RevocationSet::new(Duration::from_secs(2));
        assert_eq!(set.silence(), None);
        set.heard();
        assert!(set.silence().unwrap() < Duration::from_secs(1));
    }
}
