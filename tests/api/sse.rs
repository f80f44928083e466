//! A small Server-Sent Events reader for the feed tests: the real HTTP
//! stream, parsed as a browser's EventSource would.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{TestApp, SVC_ID, SVC_SECRET};

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Event { event: String, id: String, data: Value },
    Comment(String),
}

pub struct SseStream {
    response: reqwest::Response,
    buffer: String,
}

impl SseStream {
    /// Opens the revocation stream of `app`, resuming after `last_event_id`.
    pub async fn open(app: &TestApp, last_event_id: Option<&str>) -> SseStream {
        let mut request = app
            .http
            .get(app.url("/v1/revocations/stream"))
            .basic_auth(SVC_ID, Some(SVC_SECRET));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "stream opens");
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        SseStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next frame, or `None` if none arrives within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(frame) = parse(&block) {
                    return Some(frame);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.ok()?;
            let chunk = chunk.unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next event (comments skipped), or `None` within `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Frame::Event { event, id, data } => {
                    assert_eq!(event, "session_revoked");
                    return Some((id, data));
                }
                Frame::Comment(_) => continue,
            }
        }
    }
}

fn parse(block: &str) -> Option<Frame> {
    let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
    let mut comment = None;
    for line in block.lines() {
        if let Some(text) = line.strip_prefix(':') {
            comment = Some(text.trim().to_string());
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = value.to_string(),
                "id" => id = value.to_string(),
                "data" => data.push_str(value),
                _ => {}
            }
        }
    }
    if !data.is_empty() {
        return Some(Frame::Event {
            event,
            id,
            data: serde_json::from_str(&data).unwrap(),
        });
    }
    comment.map(Frame::Comment)
}
