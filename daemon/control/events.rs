//! `/v1/events`: the event log, followed live, and the webhooks' state.

use super::{endpoint, ndjson, ControlError, Peer, Shared};
use crate::metadata::events::EventFilter;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use ecrl::api::events::{
    EventKind, EventsPage, EventsRequest, FollowEvents, ListEvents, ListWebhooks, WebhooksReport,
    MAX_EVENTS_PAGE,
};
use ecrl::api::transfer::StreamEndpoint;
use ecrl::api::{ApiError, Empty, ErrorCode};
use std::time::Duration;

/// Events a listing answers when the request does not say.
const DEFAULT_LIMIT: usize = 100;
/// How often a follower looks for events other instances recorded (PostgreSQL), and at
/// most how long one waits for a wake-up that a commit may have slipped past.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

pub fn routes(router: Router<Shared>) -> Router<Shared> {
    let router = endpoint::<ListEvents, _, _>(router, list);
    let router = endpoint::<ListWebhooks, _, _>(router, webhooks);
    router.route(FollowEvents::PATH, post(follow))
}

fn meta(e: crate::metadata::MetaError) -> ApiError {
    ApiError::new(ErrorCode::ServiceUnavailable, e.to_string())
}

/// The request checked: known kinds, a repository name, a limit within the page's.
fn filter(r: &EventsRequest) -> Result<EventFilter, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidParameter, m);
    let mut kinds = Vec::new();
    for name in r.types.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let named = EventKind::parse_all(name).ok_or_else(|| {
            invalid(format!(
                "unknown event type {name:?}; the types are {}",
                EventKind::names()
            ))
        })?;
        kinds.extend(named);
    }
    let repository = match &r.repository_name {
        Some(name) => Some(
            name.parse::<ecrl::names::RepoName>()
                .map_err(|e| invalid(e.to_string()))?
                .to_string(),
        ),
        None => None,
    };
    let limit = r.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_EVENTS_PAGE {
        return Err(invalid(format!(
            "limit must be 1-{MAX_EVENTS_PAGE}, not {limit}"
        )));
    }
    Ok(EventFilter {
        after: r.after,
        since_ms: r.since.unwrap_or(0),
        kinds,
        repository,
        limit,
    })
}

async fn list(state: Shared, _peer: Peer, r: EventsRequest) -> Result<EventsPage, ApiError> {
    let (events, last_sequence) = crate::events::list(&state, filter(&r)?)
        .await
        .map_err(meta)?;
    Ok(EventsPage {
        events,
        last_sequence,
    })
}

async fn webhooks(state: Shared, _peer: Peer, _: Empty) -> Result<WebhooksReport, ApiError> {
    crate::events::report(&state).await.map_err(meta)
}

/// The events kept (as a listing selects them), then each new one, until the client goes.
async fn follow(State(state): State<Shared>, uri: Uri) -> Response {
    let request = match ecrl::api::decode_request::<ListEvents>(uri.query(), b"") {
        Ok(r) => r,
        Err(e) => return ControlError(e).into_response(),
    };
    let first = match filter(&request) {
        Ok(f) => f,
        Err(e) => return ControlError(e).into_response(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut next = first;
        loop {
            let changed = state.meta.changed().clone();
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (events, last) = match crate::events::list(&state, next.clone()).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!("events follow: {e}");
                    return;
                }
            };
            let full = events.len() == next.limit;
            for event in events {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            next.after = Some(last);
            next.limit = MAX_EVENTS_PAGE;
            if full {
                continue;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = state.shutdown.cancelled() => return,
                _ = notified => {}
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    });
    ndjson(rx)
}
