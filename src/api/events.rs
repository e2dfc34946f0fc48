//! `/v1/events`: every change ecrld made, as EventBridge-shaped events (ECR's and ECS's own
//! detail shapes where AWS has one), and how each configured webhook is keeping up.

use super::{Endpoint, Method};
use crate::api::transfer::StreamEndpoint;
use serde::{Deserialize, Serialize};

/// An event's kind, as `ecrl events --type` names it, with the EventBridge `source` and
/// `detail-type` it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// An image pushed, or a tag pointed at it (ECR Image Action, PUSH).
    ImagePush,
    /// An image deleted, by a user or by a lifecycle policy (ECR Image Action, DELETE).
    ImageDelete,
    /// An image sent to a replication destination, or a try that failed.
    Replication,
    /// An image fetched from an upstream through a pull-through cache rule.
    Cache,
    /// A repository created or deleted.
    Repository,
    /// A repository, registry, lifecycle or user policy set or deleted.
    Policy,
    /// A garbage collection that removed something.
    Gc,
    /// A task's lastStatus changed (ECS Task State Change).
    Task,
    /// A task definition registered, deregistered or deleted.
    TaskDefinition,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::ImagePush,
        EventKind::ImageDelete,
        EventKind::Replication,
        EventKind::Cache,
        EventKind::Repository,
        EventKind::Policy,
        EventKind::Gc,
        EventKind::Task,
        EventKind::TaskDefinition,
    ];

    /// The short name (`--type`, the config's webhook `types`, the stored kind).
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ImagePush => "image-push",
            EventKind::ImageDelete => "image-delete",
            EventKind::Replication => "replication",
            EventKind::Cache => "cache",
            EventKind::Repository => "repository",
            EventKind::Policy => "policy",
            EventKind::Gc => "gc",
            EventKind::Task => "task",
            EventKind::TaskDefinition => "task-definition",
        }
    }

    /// EventBridge's `source`: AWS's for the shapes AWS defines, `ecrl` for ecrl's own.
    pub fn source(self) -> &'static str {
        match self {
            EventKind::ImagePush
            | EventKind::ImageDelete
            | EventKind::Replication
            | EventKind::Cache => "aws.ecr",
            EventKind::Task | EventKind::TaskDefinition => "aws.ecs",
            EventKind::Repository | EventKind::Policy | EventKind::Gc => "ecrl",
        }
    }

    /// EventBridge's `detail-type`.
    pub fn detail_type(self) -> &'static str {
        match self {
            EventKind::ImagePush | EventKind::ImageDelete => "ECR Image Action",
            EventKind::Replication => "ECR Replication Action",
            EventKind::Cache => "ECR Pull Through Cache Action",
            EventKind::Repository => "Repository State Change",
            EventKind::Policy => "Policy Change",
            EventKind::Gc => "Garbage Collection",
            EventKind::Task => "ECS Task State Change",
            EventKind::TaskDefinition => "ECS Task Definition State Change",
        }
    }

    /// A short name or a detail-type (`ECR Image Action` names both image kinds: see
    /// [`EventKind::parse_all`]).
    pub fn parse(text: &str) -> Option<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(text.trim()))
    }

    /// The kinds a `--type` value names: a short name, or a detail-type (every kind that
    /// carries it). `None` when it names none.
    pub fn parse_all(text: &str) -> Option<Vec<EventKind>> {
        if let Some(kind) = EventKind::parse(text) {
            return Some(vec![kind]);
        }
        let kinds: Vec<EventKind> = EventKind::ALL
            .into_iter()
            .filter(|k| k.detail_type().eq_ignore_ascii_case(text.trim()))
            .collect();
        (!kinds.is_empty()).then_some(kinds)
    }

    /// Every name `--type` accepts, for error messages.
    pub fn names() -> String {
        EventKind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        EventKind::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown event type {text:?}; the types are {}",
                EventKind::names()
            ))
        })
    }
}

/// One event as EventBridge shapes it, plus ecrl's sequence number and kind.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub version: String,
    /// A UUID, the same in every delivery of the event (receivers drop repeats by it).
    pub id: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub source: String,
    pub account: String,
    /// RFC 3339, UTC, to the second (as EventBridge).
    pub time: String,
    pub region: String,
    pub resources: Vec<String>,
    pub detail: serde_json::Value,
    /// ecrl's: the event's place in the log (grows by one or more with each event).
    #[serde(rename = "ecrl-sequence")]
    pub sequence: i64,
    /// ecrl's: the short kind (`image-push`, `task`, ...).
    #[serde(rename = "ecrl-type")]
    pub kind: EventKind,
}

/// `GET /v1/events`: the events kept, oldest first.
pub struct ListEvents;

impl Endpoint for ListEvents {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/events";
    type Request = EventsRequest;
    type Response = EventsPage;
}

/// Which events: newer than `after` (a sequence number), at or after `since` (unix ms),
/// of the given kinds (none: all), at most `limit` of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Kinds, comma-separated (a query string carries no lists).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub types: String,
    /// A repository: only its events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_name: Option<String>,
    /// At most this many (the daemon caps it at [`MAX_EVENTS_PAGE`]); the newest ones when
    /// `after` is not given, else the oldest after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The most events one page answers.
pub const MAX_EVENTS_PAGE: usize = 1000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    pub events: Vec<Event>,
    /// The sequence number to ask `after` for the next page (the last one answered, or the
    /// log's head when none matched).
    pub last_sequence: i64,
}

/// `POST /v1/events/follow?...`: the events kept (as [`ListEvents`] filters them), then each
/// new one as it is recorded, one JSON object a line, until the client goes.
pub struct FollowEvents;

impl StreamEndpoint for FollowEvents {
    const PATH: &'static str = "/v1/events/follow";
    type Request = EventsRequest;
}

/// `GET /v1/events/webhooks`: every configured webhook, how far it got, and the deliveries
/// that failed for good.
pub struct ListWebhooks;

impl Endpoint for ListWebhooks {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/events/webhooks";
    type Request = super::Empty;
    type Response = WebhooksReport;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhooksReport {
    pub webhooks: Vec<WebhookStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    pub name: String,
    pub url: String,
    /// The kinds it receives (empty: all).
    pub types: Vec<EventKind>,
    /// Events waiting to be delivered (retrying or behind one of the same repository).
    pub pending: u64,
    pub delivered: u64,
    /// When the last delivery succeeded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_at: Option<String>,
    /// The last failed try's error and when it was (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at: Option<String>,
    /// Deliveries retried or given up on, newest first (at most 50).
    pub failures: Vec<WebhookFailure>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookFailure {
    pub sequence: i64,
    pub event_id: String,
    pub kind: Option<EventKind>,
    pub attempts: u32,
    pub error: String,
    /// `RETRYING` (the next try is at `nextAttemptAt`) or `FAILED` (given up).
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}
