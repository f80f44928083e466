//! The connection loop: HTTP/1.1 over the tokio listener with the bounds
//! `axum::serve` lacks (slowloris defence):
//! - the whole request head must arrive within `header_read_timeout`;
//! - a keep-alive connection with no request in flight is closed after
//!   `idle_timeout`;
//! - at most `max_connections` are open; further clients wait in the
//!   kernel's accept backlog.
//!
//! Shutdown stops accepting, asks every connection to finish its request in
//! flight and close, and waits (bounded by the caller) until all have.

// Connection timeouts measure durations on the monotonic clock.
#![allow(clippy::disallowed_methods)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// When a connection last finished a request, and how many it has in flight.
struct Activity {
    in_flight: AtomicUsize,
    last_done: Mutex<Instant>,
}

impl Activity {
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        self.last_done.lock().ok().map(|t| now.saturating_duration_since(*t))
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then until every
/// connection has closed. Returns once the listener is closed and the last
/// connection is done.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (router, stop_rx) = (router.clone(), stop_rx.clone());
        tokio::spawn(async move {
            connection(stream, peer, router, limits, stop_rx).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every permit back: every connection closed.
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        last_done: Mutex::new(Instant::now()),
    });
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let (router, activity) = (router.clone(), tracked.clone());
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        async move {
            let response = tower::ServiceExt::oneshot(router, req).await;
            if let Ok(mut t) = activity.last_done.lock() {
                *t = Instant::now();
            }
            activity.in_flight.fetch_sub(1, Ordering::AcqRel);
            Ok::<_, Infallible>(match response {
                Ok(r) => r,
                Err(never) => match never {},
            })
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let check_every = (limits.idle_timeout / 4).max(Duration::from_millis(50));
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !closing => {
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            () = tokio::time::sleep(check_every), if !closing => {
                if activity.idle_for(Instant::now()).is_some_and(|idle| idle >= limits.idle_timeout) {
                    tracing::debug!(%peer, "closing an idle connection");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
