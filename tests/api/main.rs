//! One integration binary: every test drives the real router over a real
//! port, against real Postgres + Redis and against the embedded stores.

// A failed unwrap is how a test fails, and tests may read the real clock to
// set up (keys, deadlines); the workspace denies these elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

mod helpers;
mod servers;
mod sse;

mod attacks;
mod bad_input;
mod binary;
mod cleanup;
mod contract;
mod devices;
mod events;
mod faults;
mod feed;
mod introspection;
mod keys;
mod login;
mod openapi;
mod ops;
mod refresh;
mod refresh_storage;
mod revocation;
mod security;
mod sessions;
mod tokens;
mod users;
