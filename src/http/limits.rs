//! Per-process flood limits for the endpoints that cost a password hash.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::error::{Error, Result};

pub struct GlobalLimit(Option<DefaultDirectRateLimiter>);

impl GlobalLimit {
    /// `0` means unlimited.
    pub fn per_second(rate: u32) -> Self {
        GlobalLimit(NonZeroU32::new(rate).map(|n| RateLimiter::direct(Quota::per_second(n))))
    }

    pub fn check(&self) -> Result<()> {
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("authd_rate_limited_total").increment(1);
            Error::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }
}
