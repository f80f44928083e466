//! The verified-token cache: exact token text → its claims.
//!
//! Sharded maps behind `RwLock`s: a hit is a shared lock and one lookup; a
//! miss inserts after a signature check. Only verified tokens are ever
//! inserted, so nobody without authd's key can fill it. A full shard first
//! drops its expired entries, and is emptied if that is not enough: the
//! worst case is one more signature check per token, never unbounded
//! memory. (A general-purpose cache such as moka spent ~3 µs per insert
//! here, 8 % of an Ed25519 verification.) The maps hash with foldhash,
//! randomly seeded per map: std's SipHash over a ~500-byte token, twice per
//! miss, was ~2–3 % of a fresh token's verification.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::Claims;

const SHARDS: usize = 16;

type Shard = HashMap<Arc<str>, Arc<Claims>, foldhash::fast::RandomState>;

pub(crate) struct TokenCache {
    shards: Vec<RwLock<Shard>>,
    per_shard: usize,
}

impl TokenCache {
    pub(crate) fn new(capacity: u64) -> Self {
        TokenCache {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            per_shard: (capacity as usize).div_ceil(SHARDS),
        }
    }

    /// Signature bytes spread tokens evenly, and only genuine tokens get in.
    fn shard(&self, token: &str) -> &RwLock<Shard> {
        let byte = token.as_bytes().last().copied().unwrap_or(0) as usize;
        &self.shards[byte % SHARDS]
    }

    pub(crate) fn get(&self, token: &str) -> Option<Arc<Claims>> {
        let shard = self.shard(token).read().unwrap_or_else(|p| p.into_inner());
        shard.get(token).cloned()
    }

    /// `now` and `skew` decide which entries are expired when a shard is full.
    pub(crate) fn insert(&self, token: &str, claims: Arc<Claims>, now: i64, skew: i64) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(token).write().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard {
            shard.retain(|_, c| c.exp + skew > now);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(Arc::from(token), claims);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Arc<Claims> {
        Arc::new(Claims {
            iss: "i".into(),
            sub: "s".into(),
            aud: vec!["a".into()],
            exp,
            iat: 0,
            nbf: 0,
            jti: String::new(),
            sid: "x".into(),
            client_id: String::new(),
            scope: None,
        })
    }

    #[test]
    fn bounded_and_expired_entries_go_first() {
        let cache = TokenCache::new(32);
        for i in 0..1000 {
            cache.insert(&format!("token-{i}"), claims(100), 0, 2);
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        let cache = TokenCache::new(2 * SHARDS as u64);
        cache.insert("live-A", claims(100), 0, 2);
        cache.insert("dead-A", claims(1), 0, 2);
        // Same shard ('A'), two per shard, full: the expired entry leaves, the live one stays.
        cache.insert("new--A", claims(100), 50, 2);
        assert!(cache.get("live-A").is_some());
        assert!(cache.get("dead-A").is_none());
        assert!(cache.get("new--A").is_some());
    }
}
