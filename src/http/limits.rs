//! Per-process flood limits for the endpoints that cost a password hash:
//! one bucket per client IP (an IPv6 client owns a whole /64, so it counts as
//! one), and a global bucket only as the last resort, so one noisy client
//! cannot get everyone else's logins answered 429.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{Error, Result};

/// Client buckets kept before idle ones are dropped (a full bucket is
/// indistinguishable from a fresh one, so dropping them changes nothing).
const MAX_CLIENT_BUCKETS: usize = 100_000;

/// The bucket of a client address: IPv4 as is, IPv6 by its /64.
fn bucket(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 64) - 1)) | 1,
    }
}

pub struct FloodLimit {
    per_client: Option<DefaultKeyedRateLimiter<u128>>,
    global: Option<DefaultDirectRateLimiter>,
}

fn refused(not_until: governor::NotUntil<governor::clock::QuantaInstant>, scope: &'static str) -> Error {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    metrics::counter!("authd_rate_limited_total", "scope" => scope).increment(1);
    Error::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64)
}

impl FloodLimit {
    /// Rates per second; `0` means unlimited.
    pub fn new(per_client: u32, global: u32) -> Self {
        FloodLimit {
            per_client: NonZeroU32::new(per_client).map(|n| RateLimiter::keyed(Quota::per_second(n))),
            global: NonZeroU32::new(global).map(|n| RateLimiter::direct(Quota::per_second(n))),
        }
    }

    /// Only a global bound (tests and tools that have no client address).
    pub fn per_second(rate: u32) -> Self {
        Self::new(0, rate)
    }

    /// A request from `client` (unknown: only the global bound applies).
    pub fn check(&self, client: Option<IpAddr>) -> Result<()> {
        if let (Some(limiter), Some(ip)) = (&self.per_client, client) {
            if limiter.len() > MAX_CLIENT_BUCKETS {
                limiter.retain_recent();
            }
            limiter.check_key(&bucket(ip)).map_err(|n| refused(n, "client"))?;
        }
        if let Some(limiter) = &self.global {
            limiter.check().map_err(|n| refused(n, "global"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_cannot_use_up_another_s_bucket() {
        let limit = FloodLimit::new(2, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limit.check(Some(a)).is_ok() && limit.check(Some(a)).is_ok());
        assert!(limit.check(Some(a)).is_err());
        assert!(limit.check(Some(b)).is_ok());
        // One IPv6 /64 is one client.
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(limit.check(Some(v6a)).is_ok() && limit.check(Some(v6b)).is_ok());
        assert!(limit.check(Some(v6a)).is_err());
        assert!(limit.check(Some("2001:db8:1:3::1".parse().unwrap())).is_ok());
    }
}
