//! The follower of the session event log, and what it keeps: the set of
//! revoked sessions whose access tokens may still be outstanding.
//!
//! Every process runs one follower. It is woken when any process commits a
//! revocation (NOTIFY on Postgres; the process itself on SQLite) and polls
//! as a fallback, so a lost wake-up only delays it. It reads the log by
//! cursor in commit order, so it never skips an event. Its set is checked
//! before the cache on every bearer check (in process, no round trip), and
//! the cache is believed only while the follower is caught up. The same set
//! is the revocation feed that downstream verifiers follow.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{broadcast, Notify};

use crate::clock::Clock;
use crate::domain::{RevokeReason, SessionId, UserId};
use crate::error::{Error, Result};
use crate::store::{
    DurableStore, EventCursor, EventKind, EventStart, RevocationSource, Revoked, SessionEvent, StoreResult,
};

/// Events read per query; a full batch is followed by another at once.
const READ_BATCH: i64 = 1000;
/// How long an entry stays after its `until`: more than the default clock
/// skew a verifier allows, less than the 5 s the feed promises.
const LINGER: time::Duration = time::Duration::seconds(4);
/// Slow stream consumers fall this far behind before they are cut off (and
/// resume by cursor).
const BROADCAST_CAPACITY: usize = 4096;

/// How the follower runs.
#[derive(Debug, Clone)]
pub struct FollowerPolicy {
    /// The poll interval when no wake-up comes.
    pub poll: Duration,
    /// The cache is not believed once the last successful read is older.
    pub max_lag: Duration,
    /// Cursors older than this cannot resume the feed (events are kept
    /// at least this long).
    pub retention: Duration,
}

/// One entry of the revocation feed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FeedEntry {
    #[serde(skip)]
    pub cursor: EventCursor,
    pub sid: SessionId,
    pub sub: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    pub reason: RevokeReason,
}

impl FeedEntry {
    fn from_event(e: &SessionEvent) -> Option<Self> {
        (e.kind == EventKind::SessionRevoked).then_some(())?;
        Some(FeedEntry {
            cursor: e.cursor,
            sid: e.session_id,
            sub: e.user_id,
            revoked_at: e.at,
            until: e.until?,
            reason: e.reason?,
        })
    }

    /// The opaque id a stream client resumes from.
    pub fn id(&self) -> String {
        encode_cursor(self.cursor, self.revoked_at)
    }
}

#[derive(Default)]
struct Set {
    /// Session → `until`: the follower's revocations and this process's own
    /// (known before the follower reads them back).
    by_session: HashMap<SessionId, OffsetDateTime>,
    /// The feed, in log order: only what the follower read.
    feed: BTreeMap<EventCursor, Arc<FeedEntry>>,
    position: EventCursor,
}

/// A consistent view of the feed at one log position.
pub struct FeedSnapshot {
    pub entries: Vec<Arc<FeedEntry>>,
    pub cursor: String,
}

/// A live subscription: what came after the cursor, then what comes.
pub struct FeedSubscription {
    pub backlog: Vec<Arc<FeedEntry>>,
    pub live: broadcast::Receiver<Arc<FeedEntry>>,
}

pub struct Revocations {
    set: RwLock<Set>,
    ready: AtomicBool,
    /// Clock time (unix µs) of the last read that found the follower caught up.
    last_read: AtomicI64,
    wake: Arc<Notify>,
    feed: broadcast::Sender<Arc<FeedEntry>>,
    clock: Arc<dyn Clock>,
    policy: FollowerPolicy,
}

fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

impl Revocations {
    pub fn new(clock: Arc<dyn Clock>, policy: FollowerPolicy) -> Arc<Self> {
        Arc::new(Revocations {
            set: RwLock::new(Set::default()),
            ready: AtomicBool::new(false),
            last_read: AtomicI64::new(0),
            wake: Arc::new(Notify::new()),
            feed: broadcast::channel(BROADCAST_CAPACITY).0,
            clock,
            policy,
        })
    }

    /// Starts the follower over `store`; it stops when `self` is dropped.
    pub fn follow(self: &Arc<Self>, store: Arc<dyn DurableStore>) {
        store.watch_events(self.wake.clone());
        tokio::spawn(run(Arc::downgrade(self), store, self.wake.clone(), self.policy.poll));
    }

    pub fn is_revoked(&self, sid: SessionId) -> bool {
        self.set
            .read()
            .map(|set| set.by_session.contains_key(&sid))
            // A poisoned lock cannot vouch for anything: fail closed.
            .unwrap_or(true)
    }

    /// This process's own revocations, known before the follower reads them.
    pub fn note_local(&self, revoked: &[Revoked]) {
        if revoked.is_empty() {
            return;
        }
        if let Ok(mut set) = self.set.write() {
            for r in revoked {
                set.by_session.insert(r.session_id, r.until);
            }
        }
        self.wake.notify_one();
    }

    /// How long since the follower last read the log up to its end.
    pub fn lag(&self, now: OffsetDateTime) -> Duration {
        let last = self.last_read.load(Ordering::Acquire);
        if last == 0 {
            return Duration::MAX;
        }
        Duration::from_micros(micros(now).saturating_sub(last).max(0) as u64)
    }

    /// Whether the cache may be believed: the follower read the log recently.
    pub fn caught_up(&self, now: OffsetDateTime) -> bool {
        self.lag(now) < self.policy.max_lag
    }

    pub fn snapshot(&self) -> FeedSnapshot {
        let now = self.clock.now();
        let Ok(set) = self.set.read() else {
            return FeedSnapshot {
                entries: Vec::new(),
                cursor: encode_cursor(EventCursor::default(), now),
            };
        };
        FeedSnapshot {
            entries: set.feed.values().filter(|e| e.until + LINGER > now).cloned().collect(),
            cursor: encode_cursor(set.position, now),
        }
    }

    /// Subscribes to the feed after `cursor` (the present when `None`).
    /// `Gone` when the cursor is older than the retention, `InvalidRequest`
    /// when it is not one of ours.
    pub fn subscribe(&self, cursor: Option<&str>) -> Result<FeedSubscription> {
        let now = self.clock.now();
        let after = match cursor {
            Some(raw) => {
                let (after, at) = decode_cursor(raw)?;
                if at + self.policy.retention < now {
                    return Err(Error::Gone(
                        "the cursor is older than the event retention; reload the snapshot",
                    ));
                }
                Some(after)
            }
            None => None,
        };
        let set = self
            .set
            .read()
            .map_err(|_| Error::Internal("revocation set lock poisoned".into()))?;
        // Subscribed under the lock the follower publishes under: nothing
        // falls between the backlog and the live events.
        let live = self.feed.subscribe();
        let backlog = match after {
            Some(after) => set
                .feed
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                .map(|(_, e)| e.clone())
                .collect(),
            None => Vec::new(),
        };
        Ok(FeedSubscription { backlog, live })
    }

    fn start(&self, start: EventStart) {
        let now = self.clock.now();
        if let Ok(mut set) = self.set.write() {
            for event in &start.revocations {
                Self::add(&mut set, event, now);
            }
            set.position = start.cursor;
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!(revocations = start.revocations.len(), "event log follower started");
    }

    fn add(set: &mut Set, event: &SessionEvent, now: OffsetDateTime) -> Option<Arc<FeedEntry>> {
        let entry = Arc::new(FeedEntry::from_event(event)?);
        if entry.until + LINGER <= now {
            return None;
        }
        set.by_session.insert(entry.sid, entry.until);
        set.feed.insert(entry.cursor, entry.clone());
        Some(entry)
    }

    fn apply(&self, events: &[SessionEvent]) {
        let now = self.clock.now();
        let Ok(mut set) = self.set.write() else {
            return;
        };
        for event in events {
            if let Some(entry) = Self::add(&mut set, event, now) {
                metrics::counter!("authd_event_follower_revocations_total").increment(1);
                // No receivers is fine: nobody follows the feed.
                let _ = self.feed.send(entry);
            }
            set.position = set.position.max(event.cursor);
        }
    }

    /// Revocations committed beyond the log's final prefix: into the set at
    /// once, into the feed (in order) once the cursor reaches them.
    fn note_ahead(&self, events: &[SessionEvent]) {
        let now = self.clock.now();
        if let Ok(mut set) = self.set.write() {
            for entry in events.iter().filter_map(FeedEntry::from_event) {
                if entry.until + LINGER > now {
                    set.by_session.insert(entry.sid, entry.until);
                }
            }
        }
    }

    fn prune(&self, now: OffsetDateTime) {
        if let Ok(mut set) = self.set.write() {
            set.by_session.retain(|_, until| *until + LINGER > now);
            set.feed.retain(|_, e| e.until + LINGER > now);
            metrics::gauge!("authd_revocation_set_size").set(set.by_session.len() as f64);
        }
    }

    fn position(&self) -> EventCursor {
        self.set.read().map(|s| s.position).unwrap_or_default()
    }

    fn caught_up_at(&self, now: OffsetDateTime) {
        self.last_read.store(micros(now), Ordering::Release);
    }
}

impl RevocationSource for Revocations {
    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn revoked(&self) -> Vec<SessionId> {
        self.set
            .read()
            .map(|set| set.by_session.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// The follower: one loop, woken by the store's notifications or by this
/// process, polling as the fallback.
async fn run(revocations: Weak<Revocations>, store: Arc<dyn DurableStore>, wake: Arc<Notify>, poll: Duration) {
    loop {
        let Some(this) = revocations.upgrade() else {
            return;
        };
        if let Err(e) = follow_once(&this, store.as_ref()).await {
            tracing::debug!(error = %e, "event log follower could not read the log; will retry");
        }
        let now = this.clock.now();
        this.prune(now);
        let lag = this.lag(now);
        metrics::gauge!("authd_event_follower_lag_seconds").set(if lag == Duration::MAX {
            f64::INFINITY
        } else {
            lag.as_secs_f64()
        });
        drop(this);
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
}

async fn follow_once(this: &Revocations, store: &dyn DurableStore) -> StoreResult<()> {
    if !this.ready() {
        this.start(store.event_start(this.clock.now()).await?);
    }
    loop {
        // The time before the read: the log was read up to its end at least
        // as of then.
        let read_at = this.clock.now();
        let batch = store.events_after(this.position(), READ_BATCH).await?;
        this.apply(&batch.events);
        this.note_ahead(&batch.ahead);
        // Only a full final prefix means more final events wait; revocations
        // ahead of a running transaction do not move the cursor.
        if (batch.events.len() as i64) < READ_BATCH {
            this.caught_up_at(read_at);
            return Ok(());
        }
    }
}

/// Cursors are opaque to clients: the log position and the time it was
/// handed out (so a too-old cursor is recognised without a query).
pub fn encode_cursor(cursor: EventCursor, at: OffsetDateTime) -> String {
    URL_SAFE_NO_PAD.encode(format!("1.{}.{}.{}", cursor.xact, cursor.seq, at.unix_timestamp()))
}

fn decode_cursor(raw: &str) -> Result<(EventCursor, OffsetDateTime)> {
    let malformed = || Error::InvalidRequest("Last-Event-ID is not a cursor of this feed".into());
    if raw.len() > 128 {
        return Err(malformed());
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw.trim()).map_err(|_| malformed())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed())?;
    let mut parts = text.split('.');
    let (Some("1"), Some(xact), Some(seq), Some(at), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let parse = |s: &str| s.parse::<i64>().ok().filter(|n| *n >= 0);
    let (Some(xact), Some(seq), Some(at)) = (parse(xact), parse(seq), parse(at)) else {
        return Err(malformed());
    };
    let at = OffsetDateTime::from_unix_timestamp(at).map_err(|_| malformed())?;
    Ok((EventCursor { xact, seq }, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let c = EventCursor { xact: 123_456, seq: 42 };
        let raw = encode_cursor(c, at);
        assert_eq!(decode_cursor(&raw).unwrap(), (c, at));
        for bad in [
            "",
            "x",
            "MS4yLjM",
            &URL_SAFE_NO_PAD.encode("2.1.2.3"),
            &URL_SAFE_NO_PAD.encode("1.-1.2.3"),
        ] {
            assert!(matches!(decode_cursor(bad), Err(Error::InvalidRequest(_))), "{bad}");
        }
    }
}
