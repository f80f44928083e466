//! One contract per store trait, written once against the trait alone and
//! run against every implementation: [`DurableStore`] on Postgres and SQLite,
//! [`SessionCache`] on Redis, in-process and the guarded wrapper around each,
//! [`CounterStore`] on Redis, in-process and the fallback wrapper. A
//! behaviour the service relies on is written here once, so two stores can
//! no longer drift apart unnoticed.
//!
//! Every durable store call takes its times as parameters, so the contract
//! uses fixed microsecond-exact times and never the wall clock.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use authd::config::SecretUrl;
use authd::domain::{Actor, RevokeReason, SessionId, TokenHash, UserId};
use authd::store::counters::{Counter, CounterStore, FallbackCounters, MemoryCounters, Take};
use authd::store::guarded::GuardedCache;
use authd::store::memory::MemoryCache;
use authd::store::postgres::PgStore;
use authd::store::redis::RedisCache;
use authd::store::sqlite::SqliteStore;
use authd::store::{
    AuditEvent, Backend, CacheLookup, ConditionalRotation, DurableStore, EventCursor, EventKind, LiveEntry,
    RefreshLookup, Revocation, RevocationSource, Revoked, SessionCache, SessionEvent, SessionFacts, SessionRecord,
    UserRecord,
};
use sqlx::Connection;
use time::OffsetDateTime;

use crate::helpers::{database_url, redis_url, require_servers, with_database};

// ---------------------------------------------------------------------------
// The implementations, each in a world of its own.

/// A fresh Postgres database, dropped with the guard.
struct PgDatabase(String);

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.0);
        // Dropping needs async I/O: a thread of its own works inside any runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&database_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A Redis key prefix of its own, its keys deleted with the guard.
struct RedisPrefix(String);

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let prefix = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                let Ok(client) = redis::Client::open(redis_url()) else {
                    return;
                };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return;
                };
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}*"))
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                for chunk in keys.chunks(1000) {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// What a store's world is made of (a database, a directory): dropped last.
type World = Box<dyn std::any::Any + Send>;

async fn postgres() -> (Arc<dyn DurableStore>, World) {
    require_servers().await;
    let name = format!("authd_c_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url: SecretUrl = with_database(&database_url(), &name).parse().unwrap();
    let store = PgStore::connect(&url, 4, Duration::from_secs(5)).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    (Arc::new(store), Box::new(PgDatabase(name)))
}

async fn sqlite() -> (Arc<dyn DurableStore>, World) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Duration::from_secs(5)).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    (Arc::new(store), Box::new(dir))
}

async fn redis() -> (Arc<RedisCache>, RedisPrefix) {
    require_servers().await;
    let prefix = format!("authd-contract:{}:", uuid::Uuid::new_v4().simple());
    let url: SecretUrl = redis_url().parse().unwrap();
    let cache = RedisCache::connect(&url, &prefix, Duration::from_secs(2))
        .await
        .unwrap();
    (Arc::new(cache), RedisPrefix(prefix))
}

/// A Redis nobody answers at: every call fails as unavailable.
async fn dead_redis() -> Arc<RedisCache> {
    let url: SecretUrl = format!("redis://127.0.0.1:{}", crate::servers::spare_port())
        .parse()
        .unwrap();
    Arc::new(
        RedisCache::connect(&url, "authd-contract-dead:", Duration::from_millis(250))
            .await
            .unwrap(),
    )
}

/// The follower's revocation set, as the guard sees it: a fixed, loaded set.
struct FixedRevocations(Vec<SessionId>);

impl RevocationSource for FixedRevocations {
    fn ready(&self) -> bool {
        true
    }

    fn revoked(&self) -> Vec<SessionId> {
        self.0.clone()
    }
}

/// The guard around `inner`, trusted once its first sweep wrote `swept`.
async fn guarded(inner: Arc<dyn SessionCache>, swept: &[SessionId]) -> GuardedCache {
    let guard = GuardedCache::new(
        inner.clone(),
        Arc::new(FixedRevocations(swept.to_vec())),
        Duration::from_secs(600),
    );
    guard.settle(Duration::from_secs(5)).await;
    assert!(guard.is_trusted(), "the guard trusts a healthy cache after its sweep");
    for id in swept {
        assert_eq!(
            inner.get(*id).await.unwrap(),
            CacheLookup::Revoked,
            "the sweep wrote the follower's revocations before trusting the cache"
        );
    }
    guard
}

// ---------------------------------------------------------------------------
// Fixtures.

/// 2030-01-01T00:00:00.123456Z: microsecond-exact, as the stores keep time.
fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_893_456_000).unwrap() + time::Duration::microseconds(123_456)
}

fn at(secs: i64) -> OffsetDateTime {
    t0() + time::Duration::seconds(secs)
}

const ACCESS_TTL: Duration = Duration::from_secs(900);

fn revocation(reason: RevokeReason, actor: Actor, when: OffsetDateTime) -> Revocation {
    Revocation {
        reason,
        actor,
        at: when,
        access_ttl: ACCESS_TTL,
    }
}

async fn user(store: &dyn DurableStore, email: &str) -> UserId {
    let record = UserRecord {
        id: UserId::new(),
        email: email.to_string(),
        password_hash: "$argon2id$v=19$m=1024,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: t0(),
    };
    assert!(store.create_user(&record, &email.to_lowercase()).await.unwrap());
    record.id
}

/// A session with every field set, created at `created`, ending at `expires`.
fn session_record(user: UserId, created: OffsetDateTime, expires: OffsetDateTime) -> SessionRecord {
    SessionRecord {
        id: SessionId::new(),
        user_id: user,
        client_id: "web".into(),
        scope: Some("openid profile".into()),
        device_name: "Firefox on Linux".into(),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0".into()),
        ip: Some("203.0.113.7".into()),
        created_at: created,
        last_used_at: created + time::Duration::microseconds(1),
        expires_at: expires,
        absolute_expires_at: created + time::Duration::days(90),
        refresh_generation: 0,
        rotated_at: created + time::Duration::microseconds(1),
        grace_ciphertext: None,
        revoked_at: None,
        revoke_reason: None,
    }
}

fn token_hash() -> TokenHash {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    TokenHash(bytes)
}

async fn session(
    store: &dyn DurableStore,
    user: UserId,
    created: OffsetDateTime,
    expires: OffsetDateTime,
) -> SessionRecord {
    let record = session_record(user, created, expires);
    store.create_session(&record, &token_hash()).await.unwrap();
    record
}

/// Every field, compared at once.
fn same(a: &SessionRecord, b: &SessionRecord) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

fn ids(sessions: &[SessionRecord]) -> Vec<SessionId> {
    sessions.iter().map(|s| s.id).collect()
}

/// The `until` a revocation at any time records for `s`: its access tokens'
/// latest possible `exp`, capped by the session's absolute end.
fn until_of(s: &SessionRecord) -> OffsetDateTime {
    (s.rotated_at + ACCESS_TTL).min(s.absolute_expires_at)
}

/// Reads the log from `from` in small pages until `count` final events have
/// come (a transaction elsewhere on the server may hold them back for a
/// moment), checking on the way that they come in order and never twice.
async fn read_events(store: &dyn DurableStore, from: EventCursor, count: usize) -> Vec<SessionEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut cursor = from;
    let mut seen = HashSet::new();
    let mut events: Vec<SessionEvent> = Vec::new();
    while events.len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {count} events became final: {events:?}",
            events.len()
        );
        let batch = store.events_after(cursor, 2).await.unwrap();
        assert!(batch.events.len() <= 2, "a page holds at most `limit` events");
        if batch.events.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for event in batch.events {
            assert!(event.cursor > cursor, "events come in log order, after the cursor");
            assert!(seen.insert(event.cursor), "an event was returned twice");
            cursor = event.cursor;
            events.push(event);
        }
        for ahead in &batch.ahead {
            assert_eq!(ahead.kind, EventKind::SessionRevoked, "only revocations are read ahead");
            assert!(ahead.cursor > cursor);
        }
    }
    let rest = store.events_after(cursor, 100).await.unwrap();
    assert!(
        rest.events.iter().all(|e| !seen.contains(&e.cursor)),
        "events before the cursor never come again"
    );
    events.extend(rest.events);
    events
}

fn kinds(events: &[SessionEvent]) -> Vec<(EventKind, SessionId)> {
    events.iter().map(|e| (e.kind, e.session_id)).collect()
}

// ---------------------------------------------------------------------------
// The durable store's contract.

async fn users(store: &dyn DurableStore) {
    let id = user(store, "Alice@Example.org").await;
    let again = UserRecord {
        id: UserId::new(),
        email: "ALICE@example.ORG".into(),
        password_hash: "other".into(),
        created_at: at(1),
    };
    assert!(
        !store.create_user(&again, "alice@example.org").await.unwrap(),
        "the normalised email is taken, whatever its case"
    );
    let found = store.find_user_by_email("alice@example.org").await.unwrap().unwrap();
    assert_eq!(found.id, id);
    assert_eq!(found.email, "Alice@Example.org", "the email is kept as typed");
    assert_eq!(found.created_at, t0());
    let got = store.get_user(id).await.unwrap().unwrap();
    assert_eq!((got.id, got.email.as_str()), (id, "Alice@Example.org"));
    assert_eq!(got.password_hash, found.password_hash);
    assert!(store.find_user_by_email("bob@example.org").await.unwrap().is_none());
    assert!(store.get_user(UserId::new()).await.unwrap().is_none());

    store.set_password_hash(id, "rehashed", at(2)).await.unwrap();
    assert_eq!(store.get_user(id).await.unwrap().unwrap().password_hash, "rehashed");
    store.ping().await.unwrap();
    assert!(!store.describe().is_empty());
}

async fn sessions(store: &dyn DurableStore) {
    let u = user(store, "sessions@example.org").await;
    let other = user(store, "other@example.org").await;
    let mut first = session_record(u, at(0), at(86_400));
    // Stored times are microseconds: a nanosecond part is cut off, the same way everywhere.
    first.last_used_at += time::Duration::nanoseconds(999);
    store.create_session(&first, &token_hash()).await.unwrap();
    first.last_used_at -= time::Duration::nanoseconds(999);
    let bare = SessionRecord {
        scope: None,
        user_agent: None,
        ip: None,
        ..session_record(u, at(1), at(86_400))
    };
    store.create_session(&bare, &token_hash()).await.unwrap();
    let third = session(store, u, at(2), at(86_400)).await;
    let expired = session(store, u, at(3), at(10)).await;
    let revoked = session(store, u, at(4), at(86_400)).await;
    store
        .revoke_session(revoked.id, None, &revocation(RevokeReason::Logout, Actor::User, at(5)))
        .await
        .unwrap()
        .unwrap();
    let others = session(store, other, at(6), at(86_400)).await;

    for s in [&first, &bare, &third, &expired, &others] {
        let got = store.get_session(s.id).await.unwrap().unwrap();
        assert!(same(&got, s), "round trip of every field:\n got {got:?}\nwant {s:?}");
    }
    assert!(store.get_session(SessionId::new()).await.unwrap().is_none());

    let now = at(60);
    let live = store.list_live_sessions(u, now, 10).await.unwrap();
    assert_eq!(
        ids(&live),
        vec![third.id, bare.id, first.id],
        "live sessions only, newest first"
    );
    assert!(same(&live[0], &third));
    assert_eq!(
        ids(&store.list_live_sessions(u, now, 2).await.unwrap()),
        vec![third.id, bare.id]
    );
    assert_eq!(
        ids(&store.list_live_sessions(u, at(5), 10).await.unwrap()),
        vec![expired.id, third.id, bare.id, first.id],
        "live is as of `now`"
    );
    assert!(store
        .list_live_sessions(UserId::new(), now, 10)
        .await
        .unwrap()
        .is_empty());

    assert!(store.ip_used_since(u, "203.0.113.7", at(0)).await.unwrap());
    assert!(
        store.ip_used_since(u, "203.0.113.7", first.last_used_at).await.unwrap(),
        "at or after"
    );
    assert!(!store.ip_used_since(u, "203.0.113.7", at(7)).await.unwrap());
    assert!(!store.ip_used_since(u, "198.51.100.1", at(0)).await.unwrap());
    assert!(!store.ip_used_since(UserId::new(), "203.0.113.7", at(0)).await.unwrap());
}

async fn revocations(store: &dyn DurableStore) {
    let u = user(store, "revoke@example.org").await;
    let mallory = user(store, "mallory@example.org").await;
    let start = store.event_start(at(0)).await.unwrap().cursor;
    let a = session(store, u, at(0), at(86_400)).await;
    let b = session(store, u, at(1), at(86_400)).await;
    let c = session(store, u, at(2), at(86_400)).await;
    let expired = session(store, u, at(3), at(10)).await;
    let d = session(store, u, at(4), at(86_400)).await;
    let by_user = revocation(RevokeReason::User, Actor::User, at(20));

    // Nothing to revoke: no answer, nothing written.
    assert_eq!(store.revoke_session(a.id, Some(mallory), &by_user).await.unwrap(), None);
    assert_eq!(store.revoke_session(expired.id, None, &by_user).await.unwrap(), None);
    assert_eq!(
        store.revoke_session(SessionId::new(), None, &by_user).await.unwrap(),
        None
    );
    assert!(store.get_session(a.id).await.unwrap().unwrap().is_live(at(20)));

    let revoked = store.revoke_session(a.id, Some(u), &by_user).await.unwrap();
    assert_eq!(
        revoked,
        Some(Revoked {
            session_id: a.id,
            user_id: u,
            until: until_of(&a)
        })
    );
    assert_eq!(
        store.revoke_session(a.id, Some(u), &by_user).await.unwrap(),
        None,
        "already ended"
    );
    let stored = store.get_session(a.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(at(20)));
    assert_eq!(stored.revoke_reason.as_deref(), Some("user"));
    assert!(!stored.is_live(at(21)));

    let others = revocation(RevokeReason::RevokeOthers, Actor::User, at(30));
    let mut all: Vec<Revoked> = store.revoke_user_sessions(u, Some(b.id), &others).await.unwrap();
    all.sort_by_key(|r| r.session_id);
    let mut want = vec![
        Revoked {
            session_id: c.id,
            user_id: u,
            until: until_of(&c),
        },
        Revoked {
            session_id: d.id,
            user_id: u,
            until: until_of(&d),
        },
    ];
    want.sort_by_key(|r| r.session_id);
    assert_eq!(all, want, "every live session but the one kept");
    assert!(store
        .revoke_user_sessions(u, Some(b.id), &others)
        .await
        .unwrap()
        .is_empty());
    assert!(store.get_session(b.id).await.unwrap().unwrap().is_live(at(31)));

    let e = session(store, u, at(40), at(86_400)).await;
    let changed = revocation(RevokeReason::PasswordChanged, Actor::User, at(50));
    let gone = store.change_password(u, "new-hash", e.id, &changed).await.unwrap();
    assert_eq!(
        gone,
        vec![Revoked {
            session_id: b.id,
            user_id: u,
            until: until_of(&b)
        }]
    );
    assert_eq!(store.get_user(u).await.unwrap().unwrap().password_hash, "new-hash");
    assert_eq!(
        store.get_session(b.id).await.unwrap().unwrap().revoke_reason.as_deref(),
        Some("password_changed")
    );
    assert!(store.get_session(e.id).await.unwrap().unwrap().is_live(at(51)));
    let admin = revocation(RevokeReason::Admin, Actor::Client("svc".into()), at(60));
    let last = store.revoke_user_sessions(u, None, &admin).await.unwrap();
    assert_eq!(last.iter().map(|r| r.session_id).collect::<Vec<_>>(), vec![e.id]);

    // The log holds exactly what happened: the calls that answered `None`
    // or nothing wrote no event.
    let events = read_events(store, start, 11).await;
    let mut got = kinds(&events);
    // revoke-others revoked c and d in one call, in either order.
    got[6..8].sort_by_key(|(_, s)| *s);
    let mut cd = [c.id, d.id];
    cd.sort();
    use EventKind::{SessionCreated as Created, SessionRevoked as Ended};
    assert_eq!(
        got,
        vec![
            (Created, a.id),
            (Created, b.id),
            (Created, c.id),
            (Created, expired.id),
            (Created, d.id),
            (Ended, a.id),
            (Ended, cd[0]),
            (Ended, cd[1]),
            (Created, e.id),
            (Ended, b.id),
            (Ended, e.id),
        ]
    );
    let records = [&a, &b, &c, &d, &e, &expired];
    for event in &events {
        let record = records.iter().find(|r| r.id == event.session_id).unwrap();
        assert_eq!(event.user_id, u);
        match event.kind {
            EventKind::SessionCreated => {
                assert_eq!(
                    (event.at, event.reason, &event.actor, event.until),
                    (record.created_at, None, &None, None)
                );
            }
            _ => assert_eq!(
                event.until,
                Some(until_of(record)),
                "until: the last access token's exp"
            ),
        }
    }
    let reasons: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::SessionRevoked)
        .map(|e| (e.reason, e.actor.clone()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (Some(RevokeReason::User), Some(Actor::User)),
            (Some(RevokeReason::RevokeOthers), Some(Actor::User)),
            (Some(RevokeReason::RevokeOthers), Some(Actor::User)),
            (Some(RevokeReason::PasswordChanged), Some(Actor::User)),
            (Some(RevokeReason::Admin), Some(Actor::Client("svc".into()))),
        ]
    );
}

async fn events(store: &dyn DurableStore) {
    let empty = store.event_start(at(0)).await.unwrap();
    assert!(empty.revocations.is_empty());
    let u = user(store, "events@example.org").await;
    let kept = session(store, u, at(0), at(86_400)).await;
    let ends = session(store, u, at(0), at(10)).await;
    let renamed = store
        .rename_session(kept.id, u, "Work laptop", at(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.device_name, "Work laptop");
    let admin = revocation(RevokeReason::Admin, Actor::Client("svc".into()), at(30));
    store.revoke_session(kept.id, None, &admin).await.unwrap().unwrap();
    // Both end before the cutoff: only the one that expired unrevoked gets an event.
    assert_eq!(store.delete_ended_sessions(at(40), at(40), 100).await.unwrap(), 2);

    let events = read_events(store, empty.cursor, 5).await;
    assert_eq!(
        kinds(&events),
        vec![
            (EventKind::SessionCreated, kept.id),
            (EventKind::SessionCreated, ends.id),
            (EventKind::SessionRenamed, kept.id),
            (EventKind::SessionRevoked, kept.id),
            (EventKind::SessionExpired, ends.id),
        ]
    );
    let fields: Vec<_> = events
        .iter()
        .map(|e| (e.user_id, e.at, e.reason, e.actor.clone(), e.until))
        .collect();
    assert_eq!(
        fields,
        vec![
            (u, at(0), None, None, None),
            (u, at(0), None, None, None),
            (u, at(20), None, None, None),
            (
                u,
                at(30),
                Some(RevokeReason::Admin),
                Some(Actor::Client("svc".into())),
                Some(until_of(&kept))
            ),
            (u, at(40), None, None, None),
        ]
    );
    let last = events[events.len() - 1].cursor;
    let after = store.events_after(last, 100).await.unwrap();
    assert!(
        after.events.is_empty() && after.ahead.is_empty(),
        "nothing after the end"
    );

    // A follower starting now begins at the end, with the revocations still
    // worth remembering (a transaction elsewhere may hold the end back a moment).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let start = loop {
        let start = store.event_start(at(100)).await.unwrap();
        if start.cursor >= last || tokio::time::Instant::now() > deadline {
            break start;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(start.cursor, last);
    assert_eq!(start.revocations, vec![events[3].clone()]);
    let later = store.event_start(until_of(&kept)).await.unwrap();
    assert!(
        later.revocations.is_empty(),
        "a revocation past its `until` is forgotten"
    );

    // Retention: old events go, in batches, but never a revocation whose
    // `until` has not passed.
    assert_eq!(store.delete_old_events(at(35), at(100), 2).await.unwrap(), 2);
    assert_eq!(store.delete_old_events(at(35), at(100), 100).await.unwrap(), 1);
    assert_eq!(store.delete_old_events(at(35), at(100), 100).await.unwrap(), 0);
    let left = read_events(store, EventCursor::default(), 2).await;
    assert_eq!(
        kinds(&left),
        vec![
            (EventKind::SessionRevoked, kept.id),
            (EventKind::SessionExpired, ends.id)
        ]
    );
    assert_eq!(store.delete_old_events(at(3600), at(100), 100).await.unwrap(), 1);
    assert_eq!(
        store.delete_old_events(at(3600), until_of(&kept), 100).await.unwrap(),
        0,
        "until not yet before now"
    );
    assert_eq!(
        store
            .delete_old_events(at(3600), until_of(&kept) + time::Duration::seconds(1), 100)
            .await
            .unwrap(),
        1
    );
    assert!(store
        .events_after(EventCursor::default(), 100)
        .await
        .unwrap()
        .events
        .is_empty());
}

async fn cleanup(store: &dyn DurableStore) {
    let u = user(store, "cleanup@example.org").await;
    let start = store.event_start(at(0)).await.unwrap().cursor;
    let mut expired = Vec::new();
    for i in 0..5 {
        expired.push(session(store, u, at(i), at(100 + i)).await.id);
    }
    let mut revoked = Vec::new();
    for i in 0..2 {
        let s = session(store, u, at(10 + i), at(86_400)).await;
        store
            .revoke_session(s.id, None, &revocation(RevokeReason::Logout, Actor::User, at(200)))
            .await
            .unwrap()
            .unwrap();
        revoked.push(s.id);
    }
    // Revoked, then past its end: deleted once, and not "expired".
    let both = session(store, u, at(20), at(300)).await;
    store
        .revoke_session(both.id, None, &revocation(RevokeReason::Logout, Actor::User, at(250)))
        .await
        .unwrap()
        .unwrap();
    let live = session(store, u, at(30), at(86_400)).await;
    let late = session(store, u, at(31), at(86_400)).await;
    store
        .revoke_session(late.id, None, &revocation(RevokeReason::Logout, Actor::User, at(5000)))
        .await
        .unwrap()
        .unwrap();

    let (cutoff, now) = (at(1000), at(4000));
    assert_eq!(store.delete_ended_sessions(cutoff, now, 3).await.unwrap(), 3);
    assert_eq!(store.delete_ended_sessions(cutoff, now, 3).await.unwrap(), 3);
    assert_eq!(store.delete_ended_sessions(cutoff, now, 3).await.unwrap(), 2);
    assert_eq!(store.delete_ended_sessions(cutoff, now, 3).await.unwrap(), 0);
    for id in expired.iter().chain(&revoked).chain([&both.id]) {
        assert!(store.get_session(*id).await.unwrap().is_none());
    }
    assert!(store.get_session(live.id).await.unwrap().is_some());
    assert!(
        store.get_session(late.id).await.unwrap().is_some(),
        "revoked after the cutoff"
    );

    let events = read_events(store, start, 9 + 4 + 5).await;
    let mut expired_events: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::SessionExpired)
        .map(|e| {
            assert_eq!((e.at, e.user_id), (now, u));
            e.session_id
        })
        .collect();
    expired_events.sort();
    expired.sort();
    assert_eq!(
        expired_events, expired,
        "one `session_expired` per session that ended unrevoked"
    );
}

async fn audit(store: &dyn DurableStore) {
    let u = user(store, "audit@example.org").await;
    let other = user(store, "audit-other@example.org").await;
    let event = |who: UserId, when: OffsetDateTime, kind: &str| AuditEvent {
        id: uuid::Uuid::new_v4(),
        at: when,
        kind: kind.into(),
        user_id: Some(who),
        session_id: Some(SessionId::new()),
        actor: "client:svc".into(),
        reason: Some("admin".into()),
        ip: Some("2001:db8::1".into()),
        user_agent: Some("curl/8.5".into()),
    };
    let first = event(u, at(0), "login_succeeded");
    let second = event(u, at(1), "session_revoked");
    let third = AuditEvent {
        session_id: None,
        reason: None,
        ip: None,
        user_agent: None,
        ..event(u, at(2), "login_failed")
    };
    let theirs = event(other, at(5), "login_succeeded");
    for e in [&second, &first, &theirs, &third] {
        store.record_audit(e).await.unwrap();
    }
    let listed = store.list_audit(u, 10).await.unwrap();
    assert_eq!(
        format!("{listed:?}"),
        format!("{:?}", vec![&third, &second, &first]),
        "a user's events, newest first, every field"
    );
    let two = store.list_audit(u, 2).await.unwrap();
    assert_eq!(two.iter().map(|e| e.id).collect::<Vec<_>>(), vec![third.id, second.id]);

    // Oldest first, in batches, only before the cutoff.
    assert_eq!(store.delete_audit_before(at(3), 1).await.unwrap(), 1);
    assert_eq!(
        store
            .list_audit(u, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![third.id, second.id]
    );
    assert_eq!(store.delete_audit_before(at(3), 10).await.unwrap(), 2);
    assert_eq!(store.delete_audit_before(at(3), 10).await.unwrap(), 0);
    assert!(store.list_audit(u, 10).await.unwrap().is_empty());
    assert_eq!(store.list_audit(other, 10).await.unwrap().len(), 1);
}

async fn rename(store: &dyn DurableStore) {
    let u = user(store, "rename@example.org").await;
    let mallory = user(store, "rename-mallory@example.org").await;
    // The start may lag behind the last commit (a transaction elsewhere on
    // the server), so it is taken before anything is written.
    let start = store.event_start(at(0)).await.unwrap().cursor;
    let s = session(store, u, at(0), at(100)).await;
    assert!(store
        .rename_session(s.id, mallory, "mine now", at(1))
        .await
        .unwrap()
        .is_none());
    assert!(store
        .rename_session(SessionId::new(), u, "nobody", at(1))
        .await
        .unwrap()
        .is_none());
    assert!(
        store
            .rename_session(s.id, u, "too late", at(100))
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    let renamed = store.rename_session(s.id, u, "Phone", at(2)).await.unwrap().unwrap();
    assert!(same(
        &renamed,
        &SessionRecord {
            device_name: "Phone".into(),
            ..s.clone()
        }
    ));
    assert!(same(&store.get_session(s.id).await.unwrap().unwrap(), &renamed));
    store
        .revoke_session(s.id, None, &revocation(RevokeReason::Logout, Actor::User, at(3)))
        .await
        .unwrap()
        .unwrap();
    assert!(store.rename_session(s.id, u, "revoked", at(4)).await.unwrap().is_none());
    assert_eq!(store.get_session(s.id).await.unwrap().unwrap().device_name, "Phone");
    let events = read_events(store, start, 3).await;
    assert_eq!(
        kinds(&events),
        vec![
            (EventKind::SessionCreated, s.id),
            (EventKind::SessionRenamed, s.id),
            (EventKind::SessionRevoked, s.id)
        ],
        "refused renames write nothing"
    );
}

async fn conditional_rotation(store: &dyn DurableStore) {
    let u = user(store, "rotate@example.org").await;
    let mallory = user(store, "rotate-mallory@example.org").await;
    let s = session_record(u, at(0), at(100));
    let current = token_hash();
    store.create_session(&s, &current).await.unwrap();
    let next = token_hash();
    let rotation = |presented: TokenHash, generation: i64, now: OffsetDateTime| ConditionalRotation {
        session: s.id,
        user_id: u,
        facts: s.facts(),
        generation,
        presented,
        now,
        new_hash: next,
        expires_at: at(200),
        grace_ciphertext: vec![7; 40],
    };
    let base = rotation(current, 0, at(1));
    let facts = |f: SessionFacts| ConditionalRotation {
        facts: f,
        ..base.clone()
    };
    let wrong = [
        ("another token", rotation(token_hash(), 0, at(1))),
        ("a generation not current", rotation(current, 1, at(1))),
        (
            "another user",
            ConditionalRotation {
                user_id: mallory,
                ..base.clone()
            },
        ),
        (
            "another client",
            facts(SessionFacts {
                client_id: "cli".into(),
                ..s.facts()
            }),
        ),
        (
            "another scope",
            facts(SessionFacts {
                scope: None,
                ..s.facts()
            }),
        ),
        (
            "another absolute end",
            facts(SessionFacts {
                absolute_expires_at: s.absolute_expires_at + time::Duration::microseconds(1),
                ..s.facts()
            }),
        ),
        ("at its idle end", rotation(current, 0, at(100))),
        (
            "another session",
            ConditionalRotation {
                session: SessionId::new(),
                ..base.clone()
            },
        ),
    ];
    for (why, r) in &wrong {
        assert!(!store.rotate_if_current(r).await.unwrap(), "{why}: refused");
    }
    assert!(
        same(&store.get_session(s.id).await.unwrap().unwrap(), &s),
        "a refused rotation writes nothing"
    );

    // Presented at once many times: exactly one rotation holds.
    let tries = (0..8).map(|_| store.rotate_if_current(&base));
    let held = futures_util::future::join_all(tries).await;
    assert_eq!(held.iter().filter(|r| *r.as_ref().unwrap()).count(), 1, "{held:?}");
    let rotated = store.get_session(s.id).await.unwrap().unwrap();
    assert!(same(
        &rotated,
        &SessionRecord {
            refresh_generation: 1,
            rotated_at: at(1),
            last_used_at: at(1),
            expires_at: at(200),
            grace_ciphertext: Some(vec![7; 40]),
            ..s.clone()
        }
    ));
    let lookup = |generation, hash| RefreshLookup::Signed {
        session: s.id,
        generation,
        hash,
    };
    let found = store.find_by_refresh(&lookup(1, next)).await.unwrap().unwrap();
    assert_eq!(found.token_generation, 1, "the new token is the current one");
    assert!(
        store.find_by_refresh(&lookup(1, current)).await.unwrap().is_none(),
        "the old hash is gone"
    );
    assert!(
        !store.rotate_if_current(&base).await.unwrap(),
        "a spent token rotates nothing"
    );

    // A session without a scope matches a belief without one.
    let unscoped = SessionRecord {
        scope: None,
        ..session_record(u, at(0), at(100))
    };
    let unscoped_token = token_hash();
    store.create_session(&unscoped, &unscoped_token).await.unwrap();
    let unscoped_rotation = ConditionalRotation {
        session: unscoped.id,
        facts: unscoped.facts(),
        presented: unscoped_token,
        ..base.clone()
    };
    assert!(store.rotate_if_current(&unscoped_rotation).await.unwrap());

    store
        .revoke_session(s.id, None, &revocation(RevokeReason::Logout, Actor::User, at(2)))
        .await
        .unwrap()
        .unwrap();
    let after_revoke = ConditionalRotation {
        generation: 1,
        presented: next,
        now: at(3),
        ..base.clone()
    };
    assert!(
        !store.rotate_if_current(&after_revoke).await.unwrap(),
        "a revoked session rotates nothing"
    );
}

macro_rules! durable_contract {
    ($($part:ident),* $(,)?) => {
        mod durable_postgres {
            $(
                #[tokio::test]
                async fn $part() {
                    let (store, _world) = super::postgres().await;
                    super::$part(store.as_ref()).await;
                }
            )*
        }
        mod durable_sqlite {
            $(
                #[tokio::test]
                async fn $part() {
                    let (store, _world) = super::sqlite().await;
                    super::$part(store.as_ref()).await;
                }
            )*
        }
    };
}

durable_contract!(
    users,
    sessions,
    revocations,
    events,
    cleanup,
    audit,
    rename,
    conditional_rotation
);

// ---------------------------------------------------------------------------
// The session cache's contract.

async fn cache(cache: &dyn SessionCache, backend: Backend, has_identity: bool) {
    assert_eq!(cache.backend(), backend);
    assert!(!cache.describe().is_empty());
    cache.ping().await.unwrap();
    assert_eq!(cache.identity().await.unwrap().is_some(), has_identity);
    assert_eq!(
        cache.identity().await.unwrap(),
        cache.identity().await.unwrap(),
        "the same server keeps its identity"
    );

    let (sid, uid) = (SessionId::new(), UserId::new());
    let minute = Duration::from_secs(60);
    let live = |expires_at: i64| LiveEntry {
        user_id: uid,
        expires_at,
        facts: None,
    };
    // What a refresh signs with, kept exactly (the database compares it).
    let with_facts = LiveEntry {
        facts: Some(SessionFacts {
            client_id: "web:1 \"x\"".into(),
            scope: Some("openid profile".into()),
            absolute_expires_at: OffsetDateTime::from_unix_timestamp_nanos(1_893_460_000_123_456_000).unwrap(),
        }),
        ..live(1_893_456_950)
    };
    assert_eq!(cache.get(sid).await.unwrap(), CacheLookup::Miss);
    cache.put_live(sid, &live(1_893_456_900), minute).await.unwrap();
    assert_eq!(cache.get(sid).await.unwrap(), CacheLookup::Live(live(1_893_456_900)));
    cache.put_live(sid, &with_facts, minute).await.unwrap();
    assert_eq!(
        cache.get(sid).await.unwrap(),
        CacheLookup::Live(with_facts.clone()),
        "a session's facts are kept exactly"
    );
    cache.put_live(sid, &live(1_893_457_000), minute).await.unwrap();
    assert_eq!(
        cache.get(sid).await.unwrap(),
        CacheLookup::Live(live(1_893_457_000)),
        "a live entry is refreshed by a newer one"
    );
    cache.mark_revoked(&[sid], minute).await.unwrap();
    assert_eq!(cache.get(sid).await.unwrap(), CacheLookup::Revoked);
    cache.put_live(sid, &with_facts, minute).await.unwrap();
    assert_eq!(
        cache.get(sid).await.unwrap(),
        CacheLookup::Revoked,
        "a live entry never hides a revocation"
    );
    // A marker for a session never cached as live.
    let unseen = SessionId::new();
    cache.mark_revoked(&[unseen], minute).await.unwrap();
    cache.put_live(unseen, &live(1_893_457_000), minute).await.unwrap();
    assert_eq!(cache.get(unseen).await.unwrap(), CacheLookup::Revoked);

    cache.mark_revoked(&[], minute).await.unwrap();
    let many: Vec<SessionId> = (0..2500).map(|_| SessionId::new()).collect();
    cache.mark_revoked(&many, minute).await.unwrap();
    for id in many.iter().step_by(97).chain(many.last()) {
        assert_eq!(cache.get(*id).await.unwrap(), CacheLookup::Revoked);
    }

    // Entries end with their TTL (whole seconds are the shared granularity).
    let (brief, brief_marker) = (SessionId::new(), SessionId::new());
    cache.put_live(brief, &live(1), Duration::from_secs(1)).await.unwrap();
    cache
        .mark_revoked(&[brief_marker], Duration::from_secs(1))
        .await
        .unwrap();
    assert!(matches!(cache.get(brief).await.unwrap(), CacheLookup::Live(_)));
    assert_eq!(cache.get(brief_marker).await.unwrap(), CacheLookup::Revoked);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(cache.get(brief).await.unwrap(), CacheLookup::Miss);
    assert_eq!(cache.get(brief_marker).await.unwrap(), CacheLookup::Miss);
    assert_eq!(
        cache.get(sid).await.unwrap(),
        CacheLookup::Revoked,
        "a longer TTL still holds"
    );
}

#[tokio::test]
async fn cache_redis() {
    let (redis, _prefix) = redis().await;
    cache(redis.as_ref(), Backend::Redis, true).await;
}

#[tokio::test]
async fn cache_memory() {
    cache(&MemoryCache::new(10_000), Backend::InProcess, false).await;
}

#[tokio::test]
async fn cache_guarded_redis() {
    let (redis, _prefix) = redis().await;
    let swept: Vec<SessionId> = (0..1500).map(|_| SessionId::new()).collect();
    let guard = guarded(redis, &swept).await;
    cache(&guard, Backend::Redis, true).await;
}

#[tokio::test]
async fn cache_guarded_memory() {
    let swept: Vec<SessionId> = (0..1500).map(|_| SessionId::new()).collect();
    let guard = guarded(Arc::new(MemoryCache::new(10_000)), &swept).await;
    cache(&guard, Backend::InProcess, false).await;
}

// ---------------------------------------------------------------------------
// The counters' contract.

async fn counters(counters: Arc<dyn CounterStore>) {
    assert!(!counters.describe().is_empty());
    let w = Duration::from_secs(10);
    let taken = |count, remaining_ms| {
        Take::Taken(Counter {
            count,
            remaining: Duration::from_millis(remaining_ms),
        })
    };
    let refused = |count, remaining_ms| {
        Take::Refused(Counter {
            count,
            remaining: Duration::from_millis(remaining_ms),
        })
    };
    // A window starts with the key's first event and is moved by the clock alone.
    assert_eq!(counters.take("k", 2, w, at(0)).await.unwrap(), taken(1, 10_000));
    assert_eq!(
        counters
            .take("k", 2, w, at(1) + time::Duration::milliseconds(500))
            .await
            .unwrap(),
        taken(2, 8_500)
    );
    assert_eq!(counters.take("k", 2, w, at(2)).await.unwrap(), refused(2, 8_000));
    assert_eq!(
        counters.take("k", 5, w, at(3)).await.unwrap(),
        taken(3, 7_000),
        "the limit is per call"
    );
    assert_eq!(
        counters.take("other", 1, w, at(3)).await.unwrap(),
        taken(1, 10_000),
        "keys are apart"
    );
    assert_eq!(counters.take("other", 1, w, at(4)).await.unwrap(), refused(1, 9_000));
    counters.give_back("k", at(4)).await.unwrap();
    assert_eq!(counters.take("k", 3, w, at(4)).await.unwrap(), taken(3, 6_000));
    assert_eq!(counters.take("k", 3, w, at(9)).await.unwrap(), refused(3, 1_000));
    assert_eq!(
        counters.take("k", 3, w, at(10)).await.unwrap(),
        taken(1, 10_000),
        "a new window"
    );
    counters.clear("k", at(11)).await.unwrap();
    counters.give_back("k", at(11)).await.unwrap();
    counters.give_back("fresh", at(11)).await.unwrap();
    assert_eq!(
        counters.take("k", 3, w, at(12)).await.unwrap(),
        taken(1, 10_000),
        "cleared; giving back never starts a window nor goes below zero"
    );
    assert_eq!(counters.take("fresh", 1, w, at(12)).await.unwrap(), taken(1, 10_000));
    counters.give_back("fresh", at(13)).await.unwrap();
    counters.give_back("fresh", at(13)).await.unwrap();
    assert_eq!(counters.take("fresh", 2, w, at(13)).await.unwrap(), taken(1, 9_000));
    assert_eq!(counters.take("fresh", 2, w, at(21)).await.unwrap(), taken(2, 1_000));
    assert_eq!(
        counters.take("none", 0, w, at(0)).await.unwrap(),
        refused(0, 10_000),
        "a limit of zero admits nothing"
    );

    // Taken atomically: however many arrive at once, the limit holds.
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let counters = counters.clone();
            tokio::spawn(async move { counters.take("burst", 5, Duration::from_secs(60), at(0)).await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        if let Take::Taken(c) = task.await.unwrap() {
            assert!((1..=5).contains(&c.count));
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    assert_eq!(
        counters.take("burst", 5, Duration::from_secs(60), at(1)).await.unwrap(),
        refused(5, 59_000)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_redis() {
    let (redis, _prefix) = redis().await;
    counters(redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_memory() {
    counters(Arc::new(MemoryCounters::new(1000))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_fallback_redis() {
    let (redis, _prefix) = redis().await;
    counters(Arc::new(FallbackCounters::new(Some(redis), 1000))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_fallback_local_only() {
    counters(Arc::new(FallbackCounters::new(None, 1000))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_fallback_dead_redis() {
    counters(Arc::new(FallbackCounters::new(Some(dead_redis().await), 1000))).await;
}
