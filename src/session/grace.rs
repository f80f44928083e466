//! The grace window's memory of the last refresh answer.
//!
//! Only token hashes are stored, yet the previous refresh token must get back
//! the very same pair within the grace window. The pair is kept encrypted
//! (AES-256-GCM) under a key derived from the previous token itself, so the
//! database alone reveals nothing and only a holder of that token can read it.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::domain::{RefreshToken, SessionId};
use crate::error::{Error, Result};

fn key_for(previous: &RefreshToken) -> Result<LessSafeKey> {
    // HMAC with a fixed label: unrelated to the SHA-256 the store keeps.
    let label = hmac::Key::new(hmac::HMAC_SHA256, b"authd grace-window key v1");
    let derived = hmac::sign(&label, previous.expose().as_bytes());
    let unbound = UnboundKey::new(&AES_256_GCM, derived.as_ref()).map_err(|_| Error::Internal("aead key".into()))?;
    Ok(LessSafeKey::new(unbound))
}

fn aad(session: SessionId, generation: i64) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..16].copy_from_slice(session.0.as_bytes());
    out[16..].copy_from_slice(&generation.to_be_bytes());
    out
}

pub fn seal(
    rng: &SystemRandom,
    previous: &RefreshToken,
    session: SessionId,
    generation: i64,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let key = key_for(previous)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce)
        .map_err(|_| Error::Internal("system random generator failed".into()))?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(session, generation)),
        &mut buf,
    )
    .map_err(|_| Error::Internal("sealing the grace answer failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(out)
}

/// `None` when the ciphertext was not sealed under this token.
pub fn open(previous: &RefreshToken, session: SessionId, generation: i64, sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let key = key_for(previous).ok()?;
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = ciphertext.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad(session, generation)), &mut buf)
        .ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_previous_token_opens_the_answer() {
        let rng = SystemRandom::new();
        let prev = RefreshToken::generate(&rng).unwrap();
        let other = RefreshToken::generate(&rng).unwrap();
        let sid = SessionId::new();
        let sealed = seal(&rng, &prev, sid, 3, b"pair").unwrap();
        assert_eq!(open(&prev, sid, 3, &sealed).as_deref(), Some(&b"pair"[..]));
        assert!(open(&other, sid, 3, &sealed).is_none());
        assert!(open(&prev, sid, 4, &sealed).is_none());
        assert!(open(&prev, SessionId::new(), 3, &sealed).is_none());
    }
}
