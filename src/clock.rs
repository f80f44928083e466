//! Time is a parameter: the service asks a clock, tests move it.

// The one place that reads the system clock.
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// Microseconds: what both databases keep, so a time read back equals the one written.
pub fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        truncate_to_micros(OffsetDateTime::now_utc())
    }
}

/// The system clock shifted by an adjustable offset, for expiry tests that
/// must not sleep.
#[derive(Default)]
pub struct ShiftedClock {
    offset_secs: AtomicI64,
}

impl ShiftedClock {
    pub fn advance(&self, by: std::time::Duration) {
        self.offset_secs.fetch_add(by.as_secs() as i64, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> OffsetDateTime {
        truncate_to_micros(OffsetDateTime::now_utc()) + time::Duration::seconds(self.offset_secs.load(Ordering::SeqCst))
    }
}
