//! authd: password login → server-side session (durable store + cache) →
//! short-lived JWT access token bound to the session + rotating refresh token.

// unwrap/expect/panic are denied by the workspace lints (Cargo.toml),
// allowed in unit tests by clippy.toml.

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod session;
pub mod store;
pub mod telemetry;
