//! Metric names (recorded through the `metrics` crate facade: install any
//! recorder, e.g. `metrics-exporter-prometheus`, to export them).

/// Counter, label `outcome` = `ok` | `error`: JWKS fetches.
pub const JWKS_REFRESHES: &str = "authd_verify_jwks_refreshes_total";
/// Gauge: keys in the cached JWKS.
pub const JWKS_KEYS: &str = "authd_verify_jwks_keys";
/// Gauge: sessions in the revocation set.
pub const REVOKED_SESSIONS: &str = "authd_verify_revoked_sessions";
/// Gauge: seconds since the feed was last heard from (event, heartbeat or
/// snapshot); `verify` fails closed above `max_staleness`.
pub const FEED_SILENCE: &str = "authd_verify_feed_silence_seconds";
/// Histogram: seconds from a revocation (`revoked_at`) to its arrival here.
pub const FEED_LAG: &str = "authd_verify_feed_lag_seconds";
/// Counter, label `outcome` = `ok` | `error` | `gone`: snapshot loads and
/// stream connections (`gone`: the cursor was too old, snapshot reloaded).
pub const FEED_CONNECTS: &str = "authd_verify_feed_connects_total";
/// Counter: revocation events received.
pub const FEED_EVENTS: &str = "authd_verify_feed_events_total";
/// Counter, label `outcome` = `active` | `inactive` | `error`: introspection
/// calls made because the feed was stale.
pub const INTROSPECTIONS: &str = "authd_verify_introspections_total";
