//! The event log as clients see it (EventBridge envelopes), its retention, and webhook
//! delivery.
//!
//! Deliveries come from the outbox the writer fills with each event (see
//! `metadata::events`): at least once (a delivery leaves the outbox only after the receiver
//! answered 2xx), in order per subject (a repository's events wait for its earlier ones),
//! retried with doubling waits up to `max_attempts`, then kept as FAILED for
//! `ecrl events --webhooks`. One instance delivers when several share the metadata.

use crate::app::AppState;
use crate::metadata::events::{self as log, EventFilter, StoredEvent};
use crate::metadata::{now_millis, ExclusiveJob};
use ecrl::api::events::{Event, EventKind, WebhookFailure, WebhookStatus, WebhooksReport};
use ecrl::config::WebhookConfig;
use std::sync::Arc;
use std::time::Duration;

/// The longest wait between retries of one delivery.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);
/// Deliveries of one webhook in flight at once (each of another subject).
const IN_FLIGHT: usize = 8;
/// How often the log is pruned of events past `events.retention`.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// The failed deliveries `ecrl events --webhooks` lists per webhook.
const FAILURES_SHOWN: usize = 50;

/// A stored event as clients see it.
pub fn envelope(state: &AppState, e: StoredEvent) -> Event {
    let kind = e.kind.unwrap_or(EventKind::Gc);
    Event {
        version: "0".into(),
        id: e.uid,
        detail_type: kind.detail_type().into(),
        source: kind.source().into(),
        account: state.meta.account_id().to_string(),
        // To the second, as EventBridge writes it.
        time: ecrl::timestamp::from_millis(e.at - e.at.rem_euclid(1000)).replace(".000Z", "Z"),
        region: state.config.region.clone(),
        resources: e.resources,
        detail: e.detail,
        sequence: e.seq,
        kind,
    }
}

/// The events `filter` selects, as clients see them, and the sequence number to go on from.
pub async fn list(
    state: &Arc<AppState>,
    filter: EventFilter,
) -> Result<(Vec<Event>, i64), crate::metadata::MetaError> {
    let after = filter.after;
    let (events, head) = state
        .meta
        .event_store()
        // The head first: an event committed after it is in the list or in the next one
        // (going on from the head never skips it).
        .with(move |conn| {
            let head = log::head(conn)?;
            Ok((log::list(conn, &filter)?, head))
        })
        .await?;
    let last = events
        .last()
        .map(|e| e.seq)
        .unwrap_or_else(|| after.map_or(head, |a| a.max(head)));
    Ok((
        events.into_iter().map(|e| envelope(state, e)).collect(),
        last,
    ))
}

/// Starts retention and, for each configured webhook, its delivery.
pub fn start(state: &Arc<AppState>) {
    let hooks: Vec<(String, Vec<EventKind>)> = state
        .config
        .events
        .webhooks
        .iter()
        .map(|w| (w.name.clone(), w.types.clone()))
        .collect();
    state
        .meta
        .configure_events(state.config.region.clone(), hooks);
    let pruner = state.clone();
    tokio::spawn(async move { prune(pruner).await });
    if state.config.events.webhooks.is_empty() {
        return;
    }
    let deliverer = state.clone();
    tokio::spawn(async move { deliver_all(deliverer).await });
}

async fn prune(state: Arc<AppState>) {
    let keep: Vec<String> = state
        .config
        .events
        .webhooks
        .iter()
        .map(|w| w.name.clone())
        .collect();
    match state
        .meta
        .event_store()
        .with(move |conn| log::forget_hooks(conn, &keep))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            deliveries = n,
            "forgot the undelivered events of webhooks no longer configured"
        ),
        Err(e) => tracing::warn!("cannot tidy the webhook queue: {e}"),
    }
    let mut tick = crate::app::every(PRUNE_EVERY);
    loop {
        let before = now_millis() - state.config.events.retention.as_millis() as i64;
        match state
            .meta
            .event_store()
            .with(move |conn| log::prune(conn, before))
            .await
        {
            Ok((events, dropped)) => {
                if events > 0 {
                    tracing::info!(events, "pruned events past events.retention");
                }
                if dropped > 0 {
                    tracing::warn!(
                        deliveries = dropped,
                        "webhook deliveries dropped undelivered: their events are past events.retention"
                    );
                }
            }
            Err(e) => tracing::warn!("cannot prune the event log: {e}"),
        }
        if !state.next_tick(&mut tick).await {
            return;
        }
    }
}

async fn deliver_all(state: Arc<AppState>) {
    // Instances sharing one database: one delivers, another takes over if it stops.
    let Some(_claimed) = crate::app::claim(&state, ExclusiveJob::Webhooks).await else {
        return;
    };
    let client = match http_client() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("webhooks: cannot build the HTTP client: {e}");
            return;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for hook in state.config.events.webhooks.clone() {
        let (state, client) = (state.clone(), client.clone());
        tasks.spawn(async move { deliver(state, client, hook).await });
    }
    while tasks.join_next().await.is_some() {}
}

fn http_client() -> Result<reqwest::Client, String> {
    let roots = crate::tls::client_roots(&[])?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .user_agent(concat!("ecrl/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// Works one webhook's outbox for as long as the daemon runs.
async fn deliver(state: Arc<AppState>, client: reqwest::Client, hook: WebhookConfig) {
    let hook = Arc::new(hook);
    loop {
        // Registered before looking, so a commit between the look and the wait wakes it.
        let changed = state.meta.changed().clone();
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let name = hook.name.clone();
        let due = state
            .meta
            .event_store()
            .with(move |conn| {
                let due = log::due(conn, &name, now_millis(), IN_FLIGHT)?;
                let events = due
                    .iter()
                    .map(|d| log::get(conn, d.seq))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(due.into_iter().zip(events).collect::<Vec<_>>())
            })
            .await;
        let due = match due {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(webhook = %hook.name, "cannot read the webhook queue: {e}");
                if sleep_or_stop(&state, Duration::from_secs(5)).await {
                    return;
                }
                continue;
            }
        };
        let mut attempts = tokio::task::JoinSet::new();
        for (delivery, event) in due {
            let (state, client, hook) = (state.clone(), client.clone(), hook.clone());
            attempts.spawn(async move {
                let outcome = match event {
                    Some(event) => post(&state, &client, &hook, event, delivery.attempts).await,
                    // Pruned meanwhile: nothing left to send.
                    None => Ok(()),
                };
                let name = hook.name.clone();
                let seq = delivery.seq;
                let attempts = delivery.attempts + 1;
                let result = match outcome {
                    Ok(()) => {
                        crate::metrics::METRICS.webhook(&hook.name, true);
                        state
                            .meta
                            .event_store()
                            .with(move |conn| log::delivered(conn, &name, seq))
                            .await
                    }
                    Err(error) => {
                        crate::metrics::METRICS.webhook(&hook.name, false);
                        let next = (attempts < hook.max_attempts).then(|| {
                            now_millis() + retry_delay(&hook, attempts).as_millis() as i64
                        });
                        if next.is_none() {
                            tracing::warn!(webhook = %hook.name, sequence = seq, %error, attempts, "webhook delivery failed for good");
                        } else {
                            tracing::info!(webhook = %hook.name, sequence = seq, %error, attempts, "webhook delivery failed; retrying");
                        }
                        state
                            .meta
                            .event_store()
                            .with(move |conn| log::attempt_failed(conn, &name, seq, &error, next))
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::warn!(webhook = %hook.name, "cannot record a delivery: {e}");
                }
            });
        }
        let sent = !attempts.is_empty();
        while attempts.join_next().await.is_some() {}
        if sent {
            // More may be due at once (the next of each subject).
            continue;
        }
        let name = hook.name.clone();
        let next = state
            .meta
            .event_store()
            .with(move |conn| log::next_due(conn, &name))
            .await
            .ok()
            .flatten();
        let now = now_millis();
        let mut wait = match next {
            Some(at) if at > now => Duration::from_millis((at - now) as u64),
            Some(_) => Duration::from_millis(100),
            None => Duration::from_secs(3600),
        };
        // Events other instances record wake no one here.
        if state.meta.shared() {
            wait = wait.min(Duration::from_secs(1));
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = notified => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// True when the daemon stopped meanwhile.
async fn sleep_or_stop(state: &AppState, wait: Duration) -> bool {
    tokio::select! {
        _ = state.shutdown.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

fn retry_delay(hook: &WebhookConfig, attempts: u32) -> Duration {
    hook.retry_delay
        .saturating_mul(1 << attempts.saturating_sub(1).min(20))
        .min(MAX_RETRY_DELAY)
}

/// The HMAC-SHA256 of `body` under `secret`, as the signature header carries it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// One try: POSTs the event; Ok on a 2xx answer.
async fn post(
    state: &AppState,
    client: &reqwest::Client,
    hook: &WebhookConfig,
    event: StoredEvent,
    attempts_before: u32,
) -> Result<(), String> {
    let event = envelope(state, event);
    let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
    let mut request = client
        .post(&hook.url)
        .timeout(hook.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Ecrl-Event-Id", &event.id)
        .header("X-Ecrl-Event-Type", event.kind.name())
        .header("X-Ecrl-Sequence", event.sequence.to_string())
        .header("X-Ecrl-Delivery-Attempt", (attempts_before + 1).to_string())
        .header("X-Ecrl-Webhook", &hook.name);
    if let Some(secret) = &hook.secret {
        request = request.header("X-Ecrl-Signature-256", signature(&secret.0, &body));
    }
    let response = request.body(body).send().await.map_err(|e| describe(&e))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {status}"))
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer within the webhook's timeout".into()
    } else if e.is_connect() {
        format!("cannot connect: {}", root_cause(e))
    } else {
        root_cause(e)
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Every webhook's state, for `ecrl events --webhooks`.
pub async fn report(state: &Arc<AppState>) -> Result<WebhooksReport, crate::metadata::MetaError> {
    let mut webhooks = Vec::new();
    for hook in &state.config.events.webhooks {
        let name = hook.name.clone();
        let (counters, failed) = state
            .meta
            .event_store()
            .with(move |conn| log::hook_state(conn, &name, FAILURES_SHOWN))
            .await?;
        let time = |ms: i64| ecrl::timestamp::from_millis(ms);
        webhooks.push(WebhookStatus {
            name: hook.name.clone(),
            url: ecrl::config::redact_url(&hook.url),
            types: hook.types.clone(),
            pending: counters.pending,
            delivered: counters.delivered,
            last_delivered_at: counters.last_delivered_at.map(time),
            last_error: counters.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_at: counters.last_error.as_ref().map(|(_, at)| time(*at)),
            failures: failed
                .into_iter()
                .map(|f| WebhookFailure {
                    sequence: f.seq,
                    event_id: f.uid.unwrap_or_default(),
                    kind: f.kind,
                    attempts: f.attempts,
                    error: f.error,
                    status: if f.failed { "FAILED" } else { "RETRYING" }.into(),
                    next_attempt_at: (!f.failed).then(|| time(f.next_attempt_at)),
                })
                .collect(),
        });
    }
    Ok(WebhooksReport { webhooks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_wait_longer_each_time_up_to_ten_minutes() {
        let hook = WebhookConfig {
            name: "h".into(),
            url: "http://x".into(),
            types: vec![],
            secret: None,
            timeout: Duration::from_secs(1),
            max_attempts: 100,
            retry_delay: Duration::from_secs(1),
        };
        let waits: Vec<u64> = (1..=12).map(|n| retry_delay(&hook, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
    }

    #[test]
    fn a_password_in_a_webhook_url_is_not_shown() {
        let redact = ecrl::config::redact_url;
        assert_eq!(
            redact("https://user:hunter2@hooks.example/in"),
            "https://user:REDACTED@hooks.example/in"
        );
        assert_eq!(redact("http://hooks.example/in"), "http://hooks.example/in");
    }
}
