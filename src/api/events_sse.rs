//! Live events and benchmark history for the status page and scripts:
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /api/v1/events/stream[?since=ID]` | server-sent events: each store event after `since` (default: the newest, i.e. only new ones) as `event: homeostat`, `id: ID`, `data: {EventEntry}`; a `Last-Event-ID` header resumes after that id |
//! | `GET /api/v1/history[?node=N&limit=N]` | benchmark and arena runs, oldest first: `{"runs": [{node, model, kind, suite, at, composite, quality, speed, reliability, passRate}]}` |
//!
//! The stream polls the store (events are written there by every pass), so it shows exactly
//! what `/api/v1/events` would, in order, without gaps.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Serialize;

use super::{ApiError, ApiResult, Backend, ControlError, query, wire};

/// How often the stream looks for new events.
const POLL: Duration = Duration::from_millis(250);
/// Events one poll sends at most (the next poll continues).
const BATCH: usize = 200;
/// Runs `/api/v1/history` returns at most.
const RUNS_MAX: usize = 1000;

pub async fn stream<B: Backend>(
    State(c): State<B>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = query(raw, &["since"])?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let since = match (q.get("since"), resume) {
        (_, Some(id)) => id,
        (Some(v), None) => v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(format!("`since` must be an event id ≥ 0, not `{v}`"))
        })?,
        // Only what happens from now on: start after the newest event.
        (None, None) => newest(&c).await?,
    };
    Ok(Sse::new(events(c, since)).keep_alive(KeepAlive::default()).into_response())
}

/// The id of the newest event (0 when there is none).
async fn newest<B: Backend>(c: &B) -> Result<i64, ApiError> {
    let mut after = 0;
    loop {
        let page = c.events(after, crate::api::EVENTS_MAX).await.map_err(ControlError::Store)?;
        match page.last() {
            Some(e) if page.len() == crate::api::EVENTS_MAX => after = e.id.0,
            Some(e) => return Ok(e.id.0),
            None => return Ok(after),
        }
    }
}

fn events<B: Backend>(c: B, since: i64) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    futures::stream::unfold((c, since, Vec::new()), |(c, mut after, mut queue)| async move {
        loop {
            if !queue.is_empty() {
                let e: wire::EventEntry = queue.remove(0);
                let data = serde_json::to_string(&e).unwrap_or_default();
                let ev = SseEvent::default().event("homeostat").id(e.id.to_string()).data(data);
                return Some((Ok(ev), (c, after, queue)));
            }
            match c.events(after, BATCH).await {
                Ok(list) if !list.is_empty() => {
                    let page = wire::Events::from_events(&list, after);
                    after = page.next;
                    queue = page.events;
                }
                Ok(_) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    tracing::warn!(error = %crate::error::chain(&e), "the event stream cannot read the store");
                    tokio::time::sleep(POLL * 4).await;
                }
            }
        }
    })
}

/// One benchmark or arena run, flattened for charts.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPoint {
    pub node: String,
    pub model: String,
    pub kind: serde_json::Value,
    pub suite: String,
    pub at: String,
    pub at_ms: u64,
    pub composite: f64,
    pub quality: f64,
    pub speed: f64,
    pub reliability: f64,
    pub pass_rate: f64,
}

#[derive(Debug, Serialize)]
pub struct History {
    pub runs: Vec<RunPoint>,
}

pub async fn history<B: Backend>(State(c): State<B>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = query(raw, &["node", "limit"])?;
    let limit: usize = super::number(&q, "limit", 200, "a count")?;
    let runs = c
        .runs(q.get("node").cloned(), limit.clamp(1, RUNS_MAX))
        .await
        .map_err(ControlError::Store)?;
    let runs = runs
        .into_iter()
        .map(|r| RunPoint {
            kind: serde_json::to_value(r.kind).unwrap_or_default(),
            at: r.at.rfc3339(),
            at_ms: r.at.as_millis(),
            composite: r.summary.score.composite,
            quality: r.summary.score.quality,
            speed: r.summary.score.speed,
            reliability: r.summary.score.reliability,
            pass_rate: r.summary.pass_rate,
            node: r.node,
            model: r.model,
            suite: r.suite,
        })
        .collect();
    Ok(axum::Json(History { runs }).into_response())
}
