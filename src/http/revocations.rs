//! The revocation feed for downstream verifiers: a snapshot with a cursor,
//! and a Server-Sent Events stream resumable from any id it sent (or the
//! snapshot's cursor). Every process serves it from its own follower.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::extract::FeedClient;
use super::AppState;
use crate::error::{Error, Result};
use crate::session::events::FeedEntry;

/// A comment line after this much quiet, so a verifier can tell a quiet
/// feed from a dead one.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/revocations", get(snapshot))
        .route("/v1/revocations/stream", get(stream_revocations))
}

async fn snapshot(State(state): State<AppState>, FeedClient(_client): FeedClient) -> Json<Value> {
    let snapshot = state.sessions.revocations().snapshot();
    Json(json!({ "revoked": snapshot.entries, "cursor": snapshot.cursor }))
}

async fn stream_revocations(
    State(state): State<AppState>,
    FeedClient(_client): FeedClient,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let last_event_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Error::InvalidRequest("Last-Event-ID is not a cursor of this feed".into()))?
                .to_string(),
        ),
        None => None,
    };
    let subscription = state.sessions.revocations().subscribe(last_event_id.as_deref())?;
    let backlog = stream::iter(subscription.backlog);
    // A consumer too slow for the broadcast buffer is cut off; it resumes
    // from its last id and misses nothing.
    let live = stream::unfold(subscription.live, |mut rx| async move {
        match rx.recv().await {
            Ok(entry) => Some((entry, rx)),
            Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => None,
        }
    });
    let mut last = None;
    let events = backlog
        .chain(live)
        // The backlog and the live events may overlap by the entries applied
        // while subscribing: each goes out once, in log order.
        .filter(move |entry: &Arc<FeedEntry>| {
            let fresh = last.is_none_or(|l| entry.cursor > l);
            if fresh {
                last = Some(entry.cursor);
            }
            std::future::ready(fresh)
        })
        .map(|entry| Ok(event(&entry)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat")))
}

fn event(entry: &FeedEntry) -> Event {
    let data = serde_json::to_string(entry).unwrap_or_else(|_| "{}".into());
    Event::default().event("session_revoked").id(entry.id()).data(data)
}
