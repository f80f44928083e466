//! argon2id hashing on a bounded pool of blocking threads.
//!
//! A hash costs ~16 ms of CPU and ~19 MiB while it runs, so at most
//! `workers` run at once and at most `queue` more wait; beyond that a login
//! is answered 503 at once instead of piling up memory.

use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::domain::Password;
use crate::error::{Error, Result};

/// How long a hash may wait for a worker before the request gets 503.
const QUEUE_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    workers: Arc<Semaphore>,
    admission: Arc<Semaphore>,
    rng: SystemRandom,
    /// Verified against when the user does not exist, so both cases cost the same.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    pub fn new(params: Params, workers: usize, queue: usize, pepper: Option<&str>) -> anyhow::Result<Self> {
        let argon = match pepper {
            // Argon2 borrows the secret for 'static: the pepper lives as long as the process.
            Some(p) => Argon2::new_with_secret(
                Box::leak(p.as_bytes().to_vec().into_boxed_slice()),
                Algorithm::Argon2id,
                Version::V0x13,
                params,
            )
            .map_err(|e| anyhow::anyhow!("AUTHD_PASSWORD_PEPPER is not usable: {e}"))?,
            None => Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        };
        let rng = SystemRandom::new();
        let dummy_hash = hash_blocking(&argon, &rng, "authd dummy password, never matches")
            .map_err(|e| anyhow::anyhow!("cannot compute the dummy hash: {e}"))?;
        let workers = workers.max(1);
        Ok(PasswordHasher {
            argon,
            workers: Arc::new(Semaphore::new(workers)),
            admission: Arc::new(Semaphore::new(workers + queue)),
            rng,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Whether a stored hash was made with other parameters than the
    /// configured ones (so a successful login should store a new one).
    pub fn needs_rehash(&self, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return true;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return true;
        };
        let want = self.argon.params();
        parsed.algorithm != argon2::Algorithm::Argon2id.ident()
            || params.m_cost() != want.m_cost()
            || params.t_cost() != want.t_cost()
            || params.p_cost() != want.p_cost()
    }

    /// A new PHC string for a password.
    pub async fn hash(&self, password: Password) -> Result<String> {
        let argon = self.argon.clone();
        let rng = self.rng.clone();
        self.run(move || hash_blocking(&argon, &rng, password.expose())).await?
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown user)
    /// the dummy hash is verified instead and the answer is always false.
    pub async fn verify(&self, password: Password, stored: Option<String>) -> Result<bool> {
        let argon = self.argon.clone();
        let known = stored.is_some();
        let phc: String = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let matched = self
            .run(move || {
                let Ok(parsed) = PasswordHash::new(&phc) else {
                    return false;
                };
                argon.verify_password(password.expose().as_bytes(), &parsed).is_ok()
            })
            .await?;
        Ok(known && matched)
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let _admitted = self
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Unavailable("password hashing queue is full".into()))?;
        let _worker = tokio::time::timeout(QUEUE_WAIT, self.workers.clone().acquire_owned())
            .await
            .map_err(|_| Error::Unavailable("timed out waiting for a password hashing thread".into()))?
            .map_err(|_| Error::Internal("password hashing pool closed".into()))?;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .instrument(tracing::Span::current())
            .await
            .map_err(|e| Error::Internal(format!("password hashing task failed: {e}")))
    }
}

fn hash_blocking(argon: &Argon2<'static>, rng: &SystemRandom, password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    rng.fill(&mut salt)
        .map_err(|_| Error::Internal("system random generator failed".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| Error::Internal(format!("salt encoding: {e}")))?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("argon2 hashing failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(Params::new(256, 1, 1, None).unwrap(), 2, 4, None).unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let h = cheap();
        let pw = Password::new_checked("correct horse".into()).unwrap();
        let phc = h.hash(pw.clone()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=256,t=1,p=1$"));
        assert!(h.verify(pw.clone(), Some(phc.clone())).await.unwrap());
        let wrong = Password::presented("wrong horse".into()).unwrap();
        assert!(!h.verify(wrong, Some(phc)).await.unwrap());
        assert!(!h.verify(pw.clone(), None).await.unwrap());
        let stronger = PasswordHasher::new(Params::new(512, 1, 1, None).unwrap(), 2, 4, None).unwrap();
        let phc = h.hash(pw.clone()).await.unwrap();
        assert!(!h.needs_rehash(&phc));
        assert!(stronger.needs_rehash(&phc));
        let peppered =
            PasswordHasher::new(Params::new(256, 1, 1, None).unwrap(), 2, 4, Some("pepper-0123456789")).unwrap();
        assert!(
            !peppered.verify(pw.clone(), Some(phc)).await.unwrap(),
            "a pepper changes every hash"
        );
        let phc = peppered.hash(pw.clone()).await.unwrap();
        assert!(peppered.verify(pw, Some(phc)).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_answers_unavailable() {
        let h = PasswordHasher::new(Params::new(8192, 4, 1, None).unwrap(), 1, 0, None).unwrap();
        let pw = Password::new_checked("correct horse".into()).unwrap();
        let (a, b) = tokio::join!(h.hash(pw.clone()), h.hash(pw));
        assert!(a.is_ok() ^ b.is_ok(), "exactly one of two hashes should be admitted");
    }
}
