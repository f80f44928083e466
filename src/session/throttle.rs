//! Brute-force limits on password logins.
//!
//! Attempts are counted per (account, IP), per IP, and per account; each
//! counter locks for the rest of its window once it reaches its limit. The
//! (account, IP) pair trips first, so an attacker on another IP does not lock
//! the owner out; the per-account limit, which could, does not apply to IPs
//! the account used (logged in or refreshed from) in the last 30 days, as the
//! durable store's sessions show, so the exemption renews with every use and
//! survives losing Redis. The same counters apply whether or not the account
//! exists, so they reveal nothing.
//!
//! Every attempt is *taken* from each counter atomically before the password
//! is verified (a limit of N admits at most N wrong attempts, however many
//! arrive at once); a success gives its slots back and clears the pair, and
//! an attempt that fails for any other reason than bad credentials gives its
//! slots back too.

use std::sync::Arc;
use std::time::Duration;

use ring::digest;

use super::SessionService;
use crate::domain::UserId;
use crate::error::{Error, Result};
use crate::store::counters::{Counter, CounterStore, Take};

/// Failed logins for unknown users one IP may add to the audit trail per hour.
pub const UNKNOWN_USER_AUDITS_PER_HOUR: u64 = 20;

/// How long a successful use of an IP exempts it from the per-account limit.
const KNOWN_IP_FOR: time::Duration = time::Duration::days(30);

#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    pub per_account_ip: u64,
    pub per_ip: u64,
    pub per_account: u64,
    pub window: Duration,
}

/// The limits and the counters they are kept in.
pub struct Lockouts {
    pub policy: ThrottlePolicy,
    pub counters: Arc<dyn CounterStore>,
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

/// The slots one attempt holds, to give back or keep once it is decided.
pub(crate) struct Attempt {
    counters: Arc<dyn CounterStore>,
    account_ip: String,
    held: Vec<String>,
}

fn retry_after(c: Counter) -> Error {
    metrics::counter!("authd_login_lockouts_total").increment(1);
    Error::RateLimited(c.remaining.as_secs().max(1))
}

impl SessionService {
    async fn take(&self, key: &str, limit: u64) -> Result<Take> {
        Ok(self
            .counters
            .take(key, limit, self.throttle.window, self.clock.now())
            .await?)
    }

    async fn give_back(&self, keys: &[String]) {
        let now = self.clock.now();
        for key in keys {
            if let Err(e) = self.counters.give_back(key, now).await {
                tracing::debug!(error = %e, "could not give back a login attempt");
            }
        }
    }

    /// Counts one login attempt against the (account, IP) and IP limits, or
    /// refuses it (429) when either is reached. Call before looking the
    /// account up; [`SessionService::attempt_account`] adds the account's limit.
    pub(crate) async fn begin_attempt(&self, account: &str, ip: Option<&str>) -> Result<Attempt> {
        let account = account.trim().to_lowercase();
        let ip = ip.unwrap_or("unknown");
        let mut attempt = Attempt {
            counters: self.counters.clone(),
            account_ip: key("fail-acct-ip", &[&account, ip]),
            held: Vec::with_capacity(3),
        };
        let p = &self.throttle;
        for (key, limit) in [
            (attempt.account_ip.clone(), p.per_account_ip),
            (key("fail-ip", &[ip]), p.per_ip),
        ] {
            match self.take(&key, limit).await {
                Ok(Take::Taken(_)) => attempt.held.push(key),
                Ok(Take::Refused(c)) => {
                    self.give_back(&attempt.held).await;
                    return Err(retry_after(c));
                }
                Err(e) => {
                    self.give_back(&attempt.held).await;
                    return Err(e);
                }
            }
        }
        Ok(attempt)
    }

    /// Counts the attempt against the account's own limit, unless `ip` is one
    /// the account has used: a locked account still lets its owner in from home.
    pub(crate) async fn attempt_account(
        &self,
        attempt: &mut Attempt,
        account: &str,
        user: Option<UserId>,
        ip: Option<&str>,
    ) -> Result<()> {
        let key = key("fail-acct", &[&account.trim().to_lowercase()]);
        let refused = match self.take(&key, self.throttle.per_account).await {
            Ok(Take::Taken(_)) => {
                attempt.held.push(key);
                return Ok(());
            }
            Ok(Take::Refused(c)) => c,
            Err(e) => {
                self.give_back(&attempt.held).await;
                return Err(e);
            }
        };
        if let (Some(user), Some(ip)) = (user, ip) {
            let since = self.clock.now() - KNOWN_IP_FOR;
            match self.store.ip_used_since(user, ip, since).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    self.give_back(&attempt.held).await;
                    return Err(e.into());
                }
            }
        }
        self.give_back(&attempt.held).await;
        Err(retry_after(refused))
    }

    /// The attempt succeeded: its slots go back and the pair starts afresh.
    pub(crate) async fn attempt_succeeded(&self, attempt: Attempt) {
        self.give_back(&attempt.held).await;
        if let Err(e) = attempt.counters.clear(&attempt.account_ip, self.clock.now()).await {
            tracing::debug!(error = %e, "could not clear a login counter");
        }
    }

    /// The attempt failed for another reason than its credentials (a store
    /// or the hashing queue): it does not count.
    pub(crate) async fn attempt_undecided(&self, attempt: Attempt) {
        self.give_back(&attempt.held).await;
    }

    /// Counts one `current_password` check of a password change, or refuses
    /// it (429) once the user reached the (account, IP) login limit.
    pub(crate) async fn begin_password_check(&self, user: UserId) -> Result<String> {
        let key = key("pw-check", &[&user.to_string()]);
        match self.take(&key, self.throttle.per_account_ip).await? {
            Take::Taken(_) => Ok(key),
            Take::Refused(c) => Err(retry_after(c)),
        }
    }

    /// The check passed, or could not be made: it does not count.
    pub(crate) async fn give_back_password_check(&self, key: String) {
        self.give_back(&[key]).await;
    }

    /// Whether one more failed login for an unknown user from `ip` may be
    /// written to the audit trail (at most [`UNKNOWN_USER_AUDITS_PER_HOUR`]).
    pub(crate) async fn may_audit_unknown_user_failure(&self, ip: Option<&str>) -> bool {
        let key = key("audit-unknown", &[ip.unwrap_or("unknown")]);
        let taken = self
            .counters
            .take(
                &key,
                UNKNOWN_USER_AUDITS_PER_HOUR,
                Duration::from_secs(3600),
                self.clock.now(),
            )
            .await;
        match taken {
            Ok(Take::Taken(_)) => true,
            Ok(Take::Refused(_)) => {
                metrics::counter!("authd_audit_events_dropped_total").increment(1);
                false
            }
            Err(_) => false,
        }
    }
}
