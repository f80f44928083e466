//! One integration binary: every test drives the real router over a real
//! port, against real Postgres + Redis and against the embedded stores.

mod helpers;
mod servers;

mod attacks;
mod bad_input;
mod binary;
mod cleanup;
mod faults;
mod introspection;
mod keys;
mod login;
mod openapi;
mod ops;
mod refresh;
mod revocation;
mod sessions;
mod tokens;
mod users;
