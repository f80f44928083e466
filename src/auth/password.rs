//! argon2id hashing on a fixed pool of worker threads.
//!
//! A hash costs ~15 ms of CPU and m KiB (19 MiB by default) of memory. Each
//! worker owns one memory block, allocated once and reused for every hash:
//! no allocation per login (which cost nearly as much as the hash itself)
//! and no allocator arenas growing with concurrency. At most `queue` jobs
//! wait; beyond that a login is answered 503 at once instead of piling up.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::sync::oneshot;

use crate::domain::Password;
use crate::error::{Error, Result};

/// How long a request waits for its hash before it gets 503.
const QUEUE_WAIT: Duration = Duration::from_secs(5);

enum Job {
    Hash {
        password: Password,
        reply: oneshot::Sender<Result<String>>,
    },
    Verify {
        password: Password,
        phc: String,
        reply: oneshot::Sender<bool>,
    },
}

/// What a worker needs besides its memory: the configured parameters and pepper.
#[derive(Clone)]
struct Hashing {
    params: Params,
    pepper: Option<&'static [u8]>,
}

impl Hashing {
    fn argon(&self, params: Params) -> Option<Argon2<'static>> {
        match self.pepper {
            Some(p) => Argon2::new_with_secret(p, Algorithm::Argon2id, Version::V0x13, params).ok(),
            None => Some(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)),
        }
    }

    /// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) for `password`.
    fn hash(&self, memory: &mut Vec<Block>, password: &str, salt: &[u8; 16]) -> Result<String> {
        let internal = |what: &str| Error::Internal(format!("argon2 {what}"));
        let argon = self.argon(self.params.clone()).ok_or_else(|| internal("setup"))?;
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        run_with_memory(&argon, &self.params, memory, password.as_bytes(), salt, &mut out)
            .ok_or_else(|| internal("hashing failed"))?;
        let salt = SaltString::encode_b64(salt).map_err(|_| internal("salt encoding"))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|_| internal("params encoding"))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|_| internal("output encoding"))?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches the PHC string, with the hash's own parameters.
    fn verify(&self, memory: &mut Vec<Block>, password: &str, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return false;
        }
        let Some(argon) = self.argon(params.clone()) else {
            return false;
        };
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        if run_with_memory(&argon, &params, memory, password.as_bytes(), salt, &mut out).is_none() {
            return false;
        }
        // Output's equality is constant-time.
        Output::new(&out).is_ok_and(|computed| computed == expected)
    }
}

/// Runs argon2 in the worker's memory, growing it only for a hash made with
/// a larger memory cost than configured.
fn run_with_memory(
    argon: &Argon2<'_>,
    params: &Params,
    memory: &mut Vec<Block>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Option<()> {
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::default());
    }
    argon
        .hash_password_into_with_memory(password, salt, out, &mut memory[..needed])
        .ok()
}

#[derive(Clone)]
pub struct PasswordHasher {
    jobs: SyncSender<Job>,
    hashing: Hashing,
    /// Verified against when the user does not exist, so both cases cost the same.
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    pub fn new(params: Params, workers: usize, queue: usize, pepper: Option<&str>) -> anyhow::Result<Self> {
        // Argon2 borrows the pepper for 'static: it lives as long as the process.
        let pepper: Option<&'static [u8]> = pepper.map(|p| &*Box::leak(p.as_bytes().to_vec().into_boxed_slice()));
        let hashing = Hashing { params, pepper };
        if hashing.argon(hashing.params.clone()).is_none() {
            anyhow::bail!("AUTHD_PASSWORD_PEPPER is not usable as an argon2 secret");
        }
        let rng = SystemRandom::new();
        let mut salt = [0u8; 16];
        rng.fill(&mut salt)
            .map_err(|_| anyhow::anyhow!("system random generator failed"))?;
        let dummy_hash = hashing
            .hash(&mut Vec::new(), "authd dummy password, never matches", &salt)
            .map_err(|e| anyhow::anyhow!("cannot compute the dummy hash: {e}"))?;

        let (jobs, receiver) = mpsc::sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..workers.max(1) {
            let (receiver, hashing) = (receiver.clone(), hashing.clone());
            std::thread::Builder::new()
                .name(format!("authd-argon2-{n}"))
                .spawn(move || worker(&receiver, &hashing))
                .map_err(|e| anyhow::anyhow!("cannot start a hashing thread: {e}"))?;
        }
        Ok(PasswordHasher {
            jobs,
            hashing,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// A new PHC string for a password.
    pub async fn hash(&self, password: Password) -> Result<String> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash { password, reply })?;
        wait(answer).await?
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown user)
    /// the dummy hash is verified instead and the answer is always false.
    pub async fn verify(&self, password: Password, stored: Option<String>) -> Result<bool> {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify { password, phc, reply })?;
        // Always wait for the work, known user or not: the timing must not tell.
        let matched = wait(answer).await?;
        Ok(known && matched)
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
        let want = &self.hashing.params;
        parsed.algorithm != Algorithm::Argon2id.ident()
            || params.m_cost() != want.m_cost()
            || params.t_cost() != want.t_cost()
            || params.p_cost() != want.p_cost()
    }

    fn submit(&self, job: Job) -> Result<()> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => {
                metrics::counter!("authd_hash_queue_full_total").increment(1);
                Error::HashingBusy("password hashing queue is full")
            }
            TrySendError::Disconnected(_) => Error::Internal("password hashing workers stopped".into()),
        })
    }
}

async fn wait<T>(answer: oneshot::Receiver<T>) -> Result<T> {
    match tokio::time::timeout(QUEUE_WAIT, answer).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(Error::Internal("password hashing worker dropped a job".into())),
        Err(_) => Err(Error::HashingBusy("timed out waiting for password hashing")),
    }
}

/// One hashing thread: takes jobs until the hasher is dropped.
fn worker(receiver: &Mutex<mpsc::Receiver<Job>>, hashing: &Hashing) {
    let mut memory: Vec<Block> = vec![Block::default(); hashing.params.block_count()];
    let rng = SystemRandom::new();
    loop {
        let job = match receiver.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        match job {
            // The request gave up waiting (timed out or disconnected): skip the work.
            Job::Hash { reply, .. } if reply.is_closed() => {}
            Job::Verify { reply, .. } if reply.is_closed() => {}
            Job::Hash { password, reply } => {
                let mut salt = [0u8; 16];
                let result = match rng.fill(&mut salt) {
                    Ok(()) => hashing.hash(&mut memory, password.expose(), &salt),
                    Err(_) => Err(Error::Internal("system random generator failed".into())),
                };
                let _ = reply.send(result);
            }
            Job::Verify { password, phc, reply } => {
                let _ = reply.send(hashing.verify(&mut memory, password.expose(), &phc));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

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
        assert!(
            stronger.verify(pw.clone(), Some(phc.clone())).await.unwrap(),
            "old parameters still verify"
        );
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
    async fn hashes_are_standard_phc_strings() {
        // Interoperable both ways with the argon2 crate's own hashing.
        let h = cheap();
        let pw = Password::new_checked("correct horse".into()).unwrap();
        let ours = h.hash(pw.clone()).await.unwrap();
        let argon = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(256, 1, 1, None).unwrap(),
        );
        assert!(argon
            .verify_password(pw.expose().as_bytes(), &PasswordHash::new(&ours).unwrap())
            .is_ok());
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let theirs = argon.hash_password(pw.expose().as_bytes(), &salt).unwrap().to_string();
        assert!(h.verify(pw, Some(theirs)).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy() {
        let h = PasswordHasher::new(Params::new(65536, 8, 1, None).unwrap(), 1, 1, None).unwrap();
        let pw = Password::new_checked("correct horse".into()).unwrap();
        let results = futures_util::future::join_all((0..6).map(|_| h.hash(pw.clone()))).await;
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(Error::HashingBusy(_))))
            .count();
        assert!(
            refused >= 3,
            "one running and one queued at most: {refused} of 6 refused"
        );
    }
}
