//! Brute-force limits on password logins.
//!
//! Failures are counted per (account, IP), per IP, and per account; each
//! counter locks for the rest of its window once it reaches its limit. The
//! (account, IP) pair trips first, so an attacker on another IP does not lock
//! the owner out; the per-account limit, which could, does not apply to IPs
//! the account logged in from successfully in the last 30 days. The same
//! counters apply whether or not the account exists, so they reveal nothing.
//!
//! Counts live in the shared cache (Redis), so every process sees them; when
//! it is unavailable a process falls back to counting on its own.

use std::time::Duration;

use ring::digest;

use super::SessionService;
use crate::error::{Error, Result};
use crate::store::memory::MemoryCache;
use crate::store::{Counter, SessionCache};

const KNOWN_IP_TTL: Duration = Duration::from_secs(30 * 86400);

#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    pub per_account_ip: u64,
    pub per_ip: u64,
    pub per_account: u64,
    pub window: Duration,
}

/// Counters in the shared cache, or in this process while it is unavailable.
pub struct Counters {
    local: MemoryCache,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            local: MemoryCache::new(100_000),
        }
    }
}

/// Keys never hold an email or an IP in clear.
fn key(kind: &str, parts: &[&str]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(b"\0");
    }
    let d = ctx.finish();
    let hex: String = d.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{kind}:{hex}")
}

impl Counters {
    async fn hit(&self, shared: &dyn SessionCache, key: &str, window: Duration) -> Counter {
        match shared.hit(key, window).await {
            Ok(c) => c,
            Err(_) => self.local.hit(key, window).await.unwrap_or_default(),
        }
    }

    async fn peek(&self, shared: &dyn SessionCache, key: &str) -> Counter {
        match shared.peek(key).await {
            Ok(c) => c,
            Err(_) => self.local.peek(key).await.unwrap_or_default(),
        }
    }

    async fn clear(&self, shared: &dyn SessionCache, key: &str) {
        let _ = shared.clear(key).await;
        let _ = self.local.clear(key).await;
    }
}

struct Keys {
    account_ip: String,
    ip: String,
    account: String,
    known_ip: String,
}

fn keys(account: &str, ip: Option<&str>) -> Keys {
    let account = account.trim().to_lowercase();
    let ip = ip.unwrap_or("unknown");
    Keys {
        account_ip: key("fail-acct-ip", &[&account, ip]),
        ip: key("fail-ip", &[ip]),
        account: key("fail-acct", &[&account]),
        known_ip: key("known-ip", &[&account, ip]),
    }
}

fn retry_after(c: Counter) -> Error {
    Error::RateLimited(c.remaining.as_secs().max(1))
}

impl SessionService {
    /// Refuses (429) a login whose account, IP or pair is locked.
    pub(crate) async fn check_login_allowed(&self, account: &str, ip: Option<&str>) -> Result<()> {
        let k = keys(account, ip);
        let p = &self.throttle;
        let cache = self.cache.as_ref();
        let pair = self.counters.peek(cache, &k.account_ip).await;
        if pair.count >= p.per_account_ip {
            return Err(retry_after(pair));
        }
        let by_ip = self.counters.peek(cache, &k.ip).await;
        if by_ip.count >= p.per_ip {
            return Err(retry_after(by_ip));
        }
        let by_account = self.counters.peek(cache, &k.account).await;
        if by_account.count >= p.per_account && self.counters.peek(cache, &k.known_ip).await.count == 0 {
            return Err(retry_after(by_account));
        }
        Ok(())
    }

    pub(crate) async fn record_login_failure(&self, account: &str, ip: Option<&str>) {
        let k = keys(account, ip);
        let (cache, window) = (self.cache.as_ref(), self.throttle.window);
        for key in [&k.account_ip, &k.ip, &k.account] {
            self.counters.hit(cache, key, window).await;
        }
    }

    pub(crate) async fn record_login_success(&self, account: &str, ip: Option<&str>) {
        let k = keys(account, ip);
        let cache = self.cache.as_ref();
        self.counters.clear(cache, &k.account_ip).await;
        self.counters.hit(cache, &k.known_ip, KNOWN_IP_TTL).await;
    }
}
