//! Prometheus metrics (`--metrics-addr`): what the registry, the caches, replication, garbage
//! collection and tasks did, and what the registry holds, in the OpenMetrics text format on a
//! listener of its own. A door, like the registry and the control socket: it reads the
//! services' state and counters, and changes nothing.
//!
//! Counters live in one process-wide [`METRICS`] (the services count into it whether or not
//! the listener is on: an atomic add each). What a request costs to record (its route's
//! counter and latency histogram) is spent only while the listener is on. Gauges of what is
//! stored (repositories, images, blobs, bytes) are worked out at most every
//! [`STORED_EVERY`] from the metadata index, on a blocking thread, so a scrape never walks
//! the blob store and never holds the index for long. Labels are fixed sets (route kinds,
//! methods, status codes, states): no repository name, user or address ever becomes a label,
//! so what a client sends cannot grow the metrics or learn from them.

use crate::app::AppState;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the stored-content gauges are reused between scrapes.
const STORED_EVERY: Duration = Duration::from_secs(2);
/// Request latency buckets, in seconds: 0.5 ms to 30 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// The registry endpoint a request went to (its kind; never the repository's name).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RouteKind {
    base,
    token,
    catalog,
    tags,
    manifest,
    blob,
    upload,
    referrers,
    aws,
    console,
    other,
}

impl RouteKind {
    /// The kind of a request path, by its shape alone (cheap: no name is parsed).
    pub fn of(path: &str, aws: bool) -> RouteKind {
        if aws {
            return RouteKind::aws;
        }
        if crate::console::is_console(path) {
            return RouteKind::console;
        }
        let Some(rest) = path.strip_prefix("/v2") else {
            return RouteKind::other;
        };
        if rest.is_empty() || rest == "/" {
            RouteKind::base
        } else if rest == "/token" {
            RouteKind::token
        } else if rest == "/_catalog" {
            RouteKind::catalog
        } else if rest.ends_with("/tags/list") {
            RouteKind::tags
        } else if rest.contains("/manifests/") {
            RouteKind::manifest
        } else if rest.contains("/blobs/uploads") {
            RouteKind::upload
        } else if rest.contains("/blobs/") {
            RouteKind::blob
        } else if rest.contains("/referrers/") {
            RouteKind::referrers
        } else {
            RouteKind::other
        }
    }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(clippy::upper_case_acronyms)]
pub enum MethodLabel {
    GET,
    HEAD,
    PUT,
    POST,
    PATCH,
    DELETE,
    OTHER,
}

impl MethodLabel {
    pub fn of(method: &Method) -> MethodLabel {
        match *method {
            Method::GET => MethodLabel::GET,
            Method::HEAD => MethodLabel::HEAD,
            Method::PUT => MethodLabel::PUT,
            Method::POST => MethodLabel::POST,
            Method::PATCH => MethodLabel::PATCH,
            Method::DELETE => MethodLabel::DELETE,
            _ => MethodLabel::OTHER,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: RouteKind,
    pub method: MethodLabel,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub route: RouteKind,
    pub method: MethodLabel,
}

/// What a pull-through cache did with a request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum CacheOutcome {
    /// Answered from what the cache holds (a tag checked and unchanged, or not due).
    hit,
    /// Fetched from the upstream.
    miss,
    /// The upstream failed: served what the cache holds, as it is.
    stale,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub kind: &'static str,
    pub outcome: CacheOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub job: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric ecrld keeps.
pub struct Metrics {
    /// The listener is on: requests are recorded.
    enabled: AtomicBool,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub auth_failures: Counter,
    pub throttled: Counter,
    pub cache: Family<CacheLabels, Counter>,
    pub replication_failures: Counter,
    pub replications: Counter,
    pub job_runs: Family<JobLabels, Counter>,
    pub gc_blobs_removed: Counter,
    pub gc_bytes_removed: Counter,
    pub lifecycle_images_expired: Counter,
    pub container_exits: Family<ReasonLabels, Counter>,
    pub webhook_deliveries: Family<WebhookLabels, Counter>,
    // Worked out at a scrape.
    uploads: Gauge,
    repositories: Gauge,
    images: Gauge,
    blobs: Gauge,
    bytes_stored: Gauge,
    replication_queue: Gauge,
    tasks: Family<StateLabels, Gauge>,
    /// When the stored-content gauges were last worked out.
    stored_at: Mutex<Option<Instant>>,
    registry: Registry,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            enabled: AtomicBool::new(false),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            auth_failures: Counter::default(),
            throttled: Counter::default(),
            cache: Family::default(),
            replication_failures: Counter::default(),
            replications: Counter::default(),
            job_runs: Family::default(),
            gc_blobs_removed: Counter::default(),
            gc_bytes_removed: Counter::default(),
            lifecycle_images_expired: Counter::default(),
            container_exits: Family::default(),
            webhook_deliveries: Family::default(),
            uploads: Gauge::default(),
            repositories: Gauge::default(),
            images: Gauge::default(),
            blobs: Gauge::default(),
            bytes_stored: Gauge::default(),
            replication_queue: Gauge::default(),
            tasks: Family::default(),
            stored_at: Mutex::new(None),
            registry: Registry::with_prefix("ecrl"),
        };
        let r = &mut m.registry;
        r.register(
            "build",
            "ecrld's version",
            Info::new(BuildLabels {
                version: ecrl::VERSION,
            }),
        );
        r.register(
            "registry_requests",
            "Registry requests answered, by endpoint kind, method and status",
            m.requests.clone(),
        );
        r.register(
            "registry_request_duration_seconds",
            "Time to answer a registry request (to the start of the response body)",
            m.latency.clone(),
        );
        r.register(
            "registry_received_bytes",
            "Request body bytes the registry read",
            m.bytes_received.clone(),
        );
        r.register(
            "registry_sent_bytes",
            "Response body bytes the registry answered with (by Content-Length)",
            m.bytes_sent.clone(),
        );
        r.register(
            "registry_uploads_in_progress",
            "Upload sessions open on this instance",
            m.uploads.clone(),
        );
        r.register(
            "auth_failures",
            "Registry and AWS API authentication failures",
            m.auth_failures.clone(),
        );
        r.register(
            "auth_throttled",
            "Requests refused because their client failed to authenticate too often",
            m.throttled.clone(),
        );
        r.register(
            "repositories",
            "Repositories in the registry",
            m.repositories.clone(),
        );
        r.register(
            "images",
            "Images (manifests) in the registry, counted once per repository",
            m.images.clone(),
        );
        r.register(
            "blobs",
            "Distinct blobs and manifests the registry holds",
            m.blobs.clone(),
        );
        r.register(
            "stored_bytes",
            "Content bytes the registry holds, each blob once",
            m.bytes_stored.clone(),
        );
        r.register(
            "cache_requests",
            "Pull-through cache lookups, by manifest or blob and what the cache did",
            m.cache.clone(),
        );
        r.register(
            "replication_queue",
            "Images waiting to be replicated",
            m.replication_queue.clone(),
        );
        r.register(
            "replications",
            "Images replicated to a destination",
            m.replications.clone(),
        );
        r.register(
            "replication_failures",
            "Replication attempts that failed (each is retried)",
            m.replication_failures.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by webhook and result (ok or failed)",
            m.webhook_deliveries.clone(),
        );
        r.register(
            "job_runs",
            "Garbage collections and lifecycle runs completed",
            m.job_runs.clone(),
        );
        r.register(
            "gc_removed_blobs",
            "Blobs garbage collection removed",
            m.gc_blobs_removed.clone(),
        );
        r.register(
            "gc_removed_bytes",
            "Bytes garbage collection freed",
            m.gc_bytes_removed.clone(),
        );
        r.register(
            "lifecycle_expired_images",
            "Images lifecycle policies expired",
            m.lifecycle_images_expired.clone(),
        );
        r.register("tasks", "Tasks by last status", m.tasks.clone());
        r.register(
            "container_exits",
            "Task containers that stopped, by why",
            m.container_exits.clone(),
        );
        m
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Records an answered registry request.
    pub fn request(
        &self,
        route: RouteKind,
        method: &Method,
        status: StatusCode,
        took: Duration,
        received: u64,
        sent: Option<u64>,
    ) {
        let method = MethodLabel::of(method);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status: status.as_u16(),
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels { route, method })
            .observe(took.as_secs_f64());
        if received > 0 {
            self.bytes_received.inc_by(received);
        }
        if let Some(sent) = sent {
            self.bytes_sent.inc_by(sent);
        }
    }

    pub fn cache(&self, kind: &'static str, outcome: CacheOutcome) {
        self.cache
            .get_or_create(&CacheLabels { kind, outcome })
            .inc();
    }

    pub fn webhook(&self, webhook: &str, ok: bool) {
        self.webhook_deliveries
            .get_or_create(&WebhookLabels {
                webhook: webhook.to_string(),
                result: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    pub fn job(&self, job: &'static str) {
        self.job_runs.get_or_create(&JobLabels { job }).inc();
    }

    pub fn container_exit(&self, reason: &'static str) {
        self.container_exits
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Brings the gauges up to date and encodes everything.
    async fn render(&self, state: &Arc<AppState>) -> String {
        self.uploads.set(state.uploads.len() as i64);
        let due = self
            .stored_at
            .lock()
            .map(|at| at.is_none_or(|t| t.elapsed() >= STORED_EVERY))
            .unwrap_or(true);
        if due {
            let meta = state.meta.clone();
            let counted = tokio::task::spawn_blocking(move || {
                let index = meta.read();
                let mut stored: std::collections::HashMap<ecrl::names::Digest, u64> =
                    std::collections::HashMap::new();
                let mut images = 0usize;
                for repo in index.repos.values() {
                    images += repo.manifests.len();
                    for (digest, size) in &repo.blobs {
                        stored.insert(*digest, *size);
                    }
                    for (digest, manifest) in &repo.manifests {
                        stored.insert(*digest, manifest.size);
                    }
                }
                let mut tasks: std::collections::BTreeMap<String, i64> = Default::default();
                for task in index.tasks.values() {
                    *tasks.entry(task.last_status.clone()).or_default() += 1;
                }
                let queue = index.mirror.queue.len();
                (
                    index.repos.len(),
                    images,
                    stored.len(),
                    stored.values().sum::<u64>(),
                    tasks,
                    queue,
                )
            })
            .await;
            if let Ok((repos, images, blobs, bytes, tasks, queue)) = counted {
                self.repositories.set(repos as i64);
                self.images.set(images as i64);
                self.blobs.set(blobs as i64);
                self.bytes_stored.set(bytes as i64);
                self.replication_queue.set(queue as i64);
                self.tasks.clear();
                for (state, n) in tasks {
                    self.tasks.get_or_create(&StateLabels { state }).set(n);
                }
                if let Ok(mut at) = self.stored_at.lock() {
                    *at = Some(Instant::now());
                }
            }
        }
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Connections the metrics listener serves at once, in all and from one address: a
/// Prometheus or two, and whoever curls it.
const MAX_CONNECTIONS: usize = 64;
const MAX_PER_CLIENT: usize = 8;

/// Serves `/metrics` on `listener` until shutdown, with the registry's deadlines (a client
/// that sends or reads nothing is dropped) and caps of its own on connections.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    METRICS.enabled.store(true, Ordering::Relaxed);
    let limits = state.config.connections.clone();
    let handler: crate::registry::conn::Handler = Arc::new(move |request| {
        let state = state.clone();
        Box::pin(async move {
            if request.uri().path() != "/metrics" {
                return (
                    StatusCode::NOT_FOUND,
                    "ecrld serves its metrics at /metrics only\n",
                )
                    .into_response();
            }
            if request.method() != Method::GET && request.method() != Method::HEAD {
                return StatusCode::METHOD_NOT_ALLOWED.into_response();
            }
            scrape(&state).await
        })
    });
    crate::registry::conn::serve_side(
        listener,
        &limits,
        MAX_CONNECTIONS,
        MAX_PER_CLIENT,
        handler,
        shutdown,
    )
    .await
}

async fn scrape(state: &Arc<AppState>) -> Response {
    let body = METRICS.render(state).await;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_kinds_come_from_the_path_shape_alone() {
        let of = |p: &str| RouteKind::of(p, false);
        assert_eq!(of("/v2/"), RouteKind::base);
        assert_eq!(of("/v2"), RouteKind::base);
        assert_eq!(of("/v2/token"), RouteKind::token);
        assert_eq!(of("/v2/_catalog"), RouteKind::catalog);
        assert_eq!(of("/v2/a/b/tags/list"), RouteKind::tags);
        assert_eq!(of("/v2/a/manifests/latest"), RouteKind::manifest);
        assert_eq!(of("/v2/a/blobs/sha256:00"), RouteKind::blob);
        assert_eq!(of("/v2/a/blobs/uploads/"), RouteKind::upload);
        assert_eq!(of("/v2/a/blobs/uploads/1234"), RouteKind::upload);
        assert_eq!(of("/v2/a/referrers/sha256:00"), RouteKind::referrers);
        assert_eq!(of("/elsewhere"), RouteKind::other);
        assert_eq!(RouteKind::of("/", true), RouteKind::aws);
    }

    #[test]
    fn the_text_names_every_family_and_labels_no_names() {
        let m = Metrics::new();
        m.request(
            RouteKind::manifest,
            &Method::GET,
            StatusCode::OK,
            Duration::from_millis(3),
            0,
            Some(512),
        );
        m.cache("manifest", CacheOutcome::stale);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains(
                r#"ecrl_registry_requests_total{route="manifest",method="GET",status="200"} 1"#
            ),
            "{out}"
        );
        assert!(out.contains("ecrl_registry_sent_bytes_total 512"), "{out}");
        assert!(
            out.contains(r#"ecrl_registry_request_duration_seconds_bucket{le="0.005",route="manifest",method="GET"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"ecrl_cache_requests_total{kind="manifest",outcome="stale"} 1"#),
            "{out}"
        );
        assert!(out.contains("ecrl_build_info{version="), "{out}");
        assert!(out.trim_end().ends_with("# EOF"), "{out}");
    }
}
