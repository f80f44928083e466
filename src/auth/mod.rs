//! Credentials: password hashing, signing keys and access tokens.

pub mod jwt;
pub mod keys;
pub mod password;
