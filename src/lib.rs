//! authd: password login → server-side session (durable store + cache) →
//! short-lived JWT access token bound to the session + rotating refresh token.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

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
