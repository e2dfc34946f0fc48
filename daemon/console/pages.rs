//! The console's pages and actions. Each page reads the index once, renders, and answers;
//! each action checks the viewer's permission with the IAM action the CLI's operation has,
//! runs that same operation, and goes back to the page with what happened.

use super::{form_encode, form_value, is_owner, may, may_arn, redirect, Viewer};
use crate::app::AppState;
use crate::metadata::events::EventFilter;
use crate::metadata::Manifest;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ecrl::api::events::{Event, EventKind};
use ecrl::api::repos::{BatchDeleteImageRequest, ImageDetail, ImageId, TagImageRequest};
use ecrl::api::tasks::Task;
use ecrl::names::{Digest, RepoName};
use maud::{html, Markup, DOCTYPE};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The tasks the tasks page lists, newest first.
const TASKS_SHOWN: usize = 200;
/// Lines of each container's output a task page shows.
const LOG_LINES: usize = 40;
/// Live task views open at once (each holds a connection and looks every half second).
const MAX_LIVE: usize = 64;
static LIVE: AtomicUsize = AtomicUsize::new(0);

fn page(status: StatusCode, markup: Markup) -> Response {
    super::html(status, markup)
}

fn ok(markup: Markup) -> Response {
    page(StatusCode::OK, markup)
}

/// The frame of every page: the header with its sections and who is signed in.
fn layout(viewer: Option<&Viewer>, title: &str, section: &str, body: Markup) -> Markup {
    let nav = [
        ("repositories", "/ui/repositories", "Repositories"),
        (
            "task-definitions",
            "/ui/task-definitions",
            "Task definitions",
        ),
        ("services", "/ui/services", "Services"),
        ("tasks", "/ui/tasks", "Tasks"),
        ("registry", "/ui/registry", "Registry"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · ecrl" }
                link rel="stylesheet" href={ "/ui/assets/app.css?v=" (super::assets::VERSION) };
                script src={ "/ui/assets/app.js?v=" (super::assets::VERSION) } defer {}
            }
            body {
                header {
                    a.brand href="/ui/repositories" { "ecrl" }
                    @if let Some(viewer) = viewer {
                        nav {
                            @for (key, href, label) in nav {
                                a class=[(key == section).then_some("on")] href=(href) { (label) }
                            }
                        }
                        div.who {
                            span { (viewer.name()) }
                            @if viewer.signed_in() {
                                form.inline method="post" action="/ui/logout" {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn flash(query: &str) -> Markup {
    let done = form_value(query, "done");
    let error = form_value(query, "error");
    html! {
        @if !done.is_empty() { div.flash.ok role="status" { (done) } }
        @if !error.is_empty() { div.flash.error role="alert" { (error) } }
    }
}

pub fn login(next: &str, error: Option<&str>) -> Markup {
    layout(
        None,
        "Sign in",
        "",
        html! {
            div.card.login {
                h1 { "Sign in to ecrl" }
                @if let Some(error) = error { div.flash.error role="alert" { (error) } }
                form method="post" action="/ui/login" {
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Login token" }
                    input #token type="password" name="token" autocomplete="off"
                        placeholder="ecrl get-login-password [--user NAME]";
                    p.muted { "or an access key:" }
                    label for="key_id" { "Access key id" }
                    input #key_id type="text" name="key_id" autocomplete="username";
                    label for="secret" { "Secret access key" }
                    input #secret type="password" name="secret" autocomplete="current-password";
                    p { button.primary type="submit" { "Sign in" } }
                }
            }
        },
    )
}

pub fn problem(viewer: &Viewer, message: &str) -> Markup {
    layout(
        Some(viewer),
        "Problem",
        "",
        html! { div.flash.error role="alert" { (message) } },
    )
}

fn not_found(viewer: &Viewer, what: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        problem(viewer, &format!("{what} does not exist.")),
    )
}

fn denied(viewer: &Viewer, action: &str, on: &str) -> Response {
    page(
        StatusCode::FORBIDDEN,
        problem(
            viewer,
            &format!("{} may not perform {action} on {on}.", viewer.name()),
        ),
    )
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// A time as the API prints it, shorter: `2026-12-07 13:05:09`.
fn when(text: &str) -> String {
    text.get(..19).unwrap_or(text).replace('T', " ")
}

fn repo_href(name: &str) -> String {
    format!("/ui/repositories/{name}")
}

pub async fn show(state: &Arc<AppState>, viewer: &Viewer, path: &str, query: &str) -> Response {
    let rest = |prefix: &str| path.strip_prefix(prefix).filter(|r| !r.is_empty());
    if path == "/ui/repositories" {
        return repositories(state, viewer, query);
    }
    if let Some(rest) = rest("/ui/repositories/") {
        return match rest.split_once('@') {
            Some((name, digest)) => image(state, viewer, name, digest, query),
            None => repository(state, viewer, rest, query).await,
        };
    }
    if path == "/ui/task-definitions" {
        return task_definitions(state, viewer);
    }
    if let Some(rest) = rest("/ui/task-definitions/") {
        return task_definition(state, viewer, rest);
    }
    if path == "/ui/services" {
        return services(state, viewer);
    }
    if let Some(rest) = rest("/ui/services/") {
        return service(state, viewer, rest);
    }
    if path == "/ui/tasks" {
        return tasks(state, viewer, query);
    }
    if let Some(rest) = rest("/ui/tasks/") {
        return match rest.strip_suffix("/live") {
            Some(id) => live(state, viewer, id),
            None => task(state, viewer, rest, query).await,
        };
    }
    if path == "/ui/registry" {
        return registry(state, viewer).await;
    }
    not_found(viewer, "That page")
}

// ---- repositories --------------------------------------------------------------------------

fn repositories(state: &Arc<AppState>, viewer: &Viewer, query: &str) -> Response {
    let q = form_value(query, "q");
    let index = state.meta.read();
    let names: Vec<RepoName> = index
        .repos
        .keys()
        .filter(|n| q.is_empty() || n.as_str().contains(q.trim()))
        .cloned()
        .collect();
    let allowed = state
        .auth
        .may_each(state, &viewer.principal, "ecr:DescribeRepositories", &names);
    let rows: Vec<_> = names
        .iter()
        .zip(allowed)
        .filter(|(_, ok)| *ok)
        .filter_map(|(name, _)| {
            let repo = index.repos.get(name)?;
            Some(crate::control::repos::repository(state, name, repo))
        })
        .collect();
    ok(layout(
        Some(viewer),
        "Repositories",
        "repositories",
        html! {
            (flash(query))
            h1 { "Repositories" }
            form method="get" action="/ui/repositories" {
                input type="search" name="q" value=(q) placeholder="Search by name"
                    aria-label="Search repositories";
                " " button type="submit" { "Search" }
            }
            p.muted { (rows.len()) " repositories" }
            div.scroll {
                table #repositories {
                    thead { tr {
                        th { "Name" } th.num { "Images" } th.num { "Size" }
                        th.wide { "Tag mutability" } th.wide { "Created" }
                    } }
                    tbody {
                        @for r in &rows {
                            tr {
                                td { a href=(repo_href(&r.repository_name)) { (r.repository_name) } }
                                td.num { (r.image_count) }
                                td.num { (bytes(r.size_in_bytes)) }
                                td.wide { (r.image_tag_mutability) }
                                td.wide { (when(&r.created_at)) }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// What a repository page shows of an image besides ECR's detail.
struct Row {
    detail: ImageDetail,
    layers: usize,
    platforms: Vec<String>,
    referrers: usize,
}

/// What a manifest says of itself: its layer count, the platforms an index lists, and an
/// image's config (whose content names its platform).
fn shape(m: &Manifest) -> (usize, Vec<String>, Option<Digest>) {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&m.bytes) else {
        return (0, Vec::new(), None);
    };
    let layers = doc["layers"].as_array().map_or(0, |l| l.len());
    let config = match doc["config"]["mediaType"].as_str() {
        Some(OCI_CONFIG | DOCKER_CONFIG) => doc["config"]["digest"]
            .as_str()
            .and_then(|d| d.parse().ok()),
        _ => None,
    };
    let platforms = doc["manifests"]
        .as_array()
        .map(|children| {
            children
                .iter()
                .filter_map(|c| {
                    let p = &c["platform"];
                    let (os, arch) = (p["os"].as_str()?, p["architecture"].as_str()?);
                    // Attestations and the like are not platforms.
                    if os == "unknown" {
                        return None;
                    }
                    Some(platform(os, arch, p["variant"].as_str()))
                })
                .collect()
        })
        .unwrap_or_default();
    (layers, platforms, config)
}

fn platform(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

/// Image configs' platforms, by config digest (content never changes under a digest), so a
/// repository page reads each config once per daemon.
static PLATFORMS: std::sync::LazyLock<std::sync::Mutex<HashMap<Digest, String>>> =
    std::sync::LazyLock::new(Default::default);
/// The most configs remembered (then they are forgotten and read again as pages ask).
const PLATFORMS_KEPT: usize = 100_000;

/// The platform each config names (`os/arch`), read from the store when not known yet.
async fn platforms(state: &AppState, configs: Vec<Digest>) -> HashMap<Digest, String> {
    let mut known = HashMap::new();
    let mut missing = Vec::new();
    {
        let cache = PLATFORMS.lock().unwrap_or_else(|e| e.into_inner());
        for d in configs {
            match cache.get(&d) {
                Some(p) => {
                    known.insert(d, p.clone());
                }
                None => missing.push(d),
            }
        }
    }
    use futures_util::StreamExt;
    let read: Vec<(Digest, Option<String>)> = futures_util::stream::iter(missing)
        .map(|d| async move {
            let found = async {
                let text = state.store.read_all(&d).await.ok()?;
                let doc: serde_json::Value = serde_json::from_slice(&text).ok()?;
                let (os, arch) = (doc["os"].as_str()?, doc["architecture"].as_str()?);
                Some(platform(os, arch, doc["variant"].as_str()))
            }
            .await;
            (d, found)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut cache = PLATFORMS.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() + read.len() > PLATFORMS_KEPT {
        cache.clear();
    }
    for (d, found) in read {
        if let Some(p) = found {
            cache.insert(d, p.clone());
            known.insert(d, p);
        }
    }
    known
}

async fn repository(state: &Arc<AppState>, viewer: &Viewer, name: &str, query: &str) -> Response {
    let Ok(name) = name.parse::<RepoName>() else {
        return not_found(viewer, "That repository");
    };
    // Allowed first: whether a repository exists is not told to who may not see it.
    if !may(state, viewer, "ecr:DescribeImages", Some(&name)) {
        return denied(viewer, "ecr:DescribeImages", &format!("repository {name}"));
    }
    if !state.meta.read().repos.contains_key(&name) {
        return not_found(viewer, &format!("Repository {name}"));
    }
    // What its lifecycle policy would expire now (before the index is read for the rest).
    let has_policy = state
        .meta
        .read()
        .repos
        .get(&name)
        .is_some_and(|r| r.lifecycle.is_some());
    let preview = if has_policy && may(state, viewer, "ecr:GetLifecyclePolicyPreview", Some(&name))
    {
        crate::control::lifecycle::preview(
            state.clone(),
            ecrl::api::lifecycle::PreviewLifecyclePolicyRequest {
                repository_name: name.to_string(),
                lifecycle_policy_text: None,
            },
        )
        .await
        .ok()
    } else {
        None
    };
    let can_delete = may(state, viewer, "ecr:BatchDeleteImage", Some(&name));
    let can_tag = may(state, viewer, "ecr:PutImage", Some(&name));
    // What each manifest says of itself, and the platforms its config names.
    let shapes: HashMap<Digest, (usize, Vec<String>, Option<Digest>)> = {
        let index = state.meta.read();
        let Some(repo) = index.repos.get(&name) else {
            return not_found(viewer, &format!("Repository {name}"));
        };
        repo.manifests
            .values()
            .map(|m| (m.digest, shape(m)))
            .collect()
    };
    let configs = shapes.values().filter_map(|(_, _, c)| *c).collect();
    let platforms = platforms(state, configs).await;
    let index = state.meta.read();
    let Some(repo) = index.repos.get(&name) else {
        return not_found(viewer, &format!("Repository {name}"));
    };
    let info = crate::control::repos::repository(state, &name, repo);
    let mut referrers: HashMap<Digest, usize> = HashMap::new();
    for m in repo.manifests.values() {
        if let Some(subject) = m.subject {
            *referrers.entry(subject).or_default() += 1;
        }
    }
    let mut manifests: Vec<&Arc<Manifest>> = repo.manifests.values().collect();
    manifests.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then(a.digest.cmp(&b.digest)));
    let rows: Vec<Row> = manifests
        .iter()
        .map(|m| {
            let (layers, mut listed, config) = shapes.get(&m.digest).cloned().unwrap_or_default();
            if let Some(p) = config.and_then(|c| platforms.get(&c)) {
                listed.push(p.clone());
            }
            Row {
                detail: crate::control::repos::detail(state, &name, repo, m, &index.mirror),
                layers,
                platforms: listed,
                referrers: referrers.get(&m.digest).copied().unwrap_or(0),
            }
        })
        .collect();
    drop(index);
    let uri = info.repository_uri.clone();
    let body = html! {
        (flash(query))
        h1 { (name) }
        div.card {
            dl.kv {
                dt { "URI" } dd { code { (uri) } }
                dt { "ARN" } dd { code { (info.repository_arn) } }
                dt { "Images" } dd { (info.image_count) " (" (bytes(info.size_in_bytes)) ")" }
                dt { "Tag mutability" } dd { (info.image_tag_mutability) }
                dt { "Created" } dd { (when(&info.created_at)) }
            }
        }
        h2 { "Images" }
        div.scroll {
            table #images {
                thead { tr {
                    th { "Tags" } th { "Digest" } th.num { "Size" } th.wide { "Platforms" }
                    th.wide { "Pushed" } th.wide { "Last pulled" } th.num.wide { "Layers" }
                    th.num.wide { "Referrers" } th.wide { "Replication" } th { "Pull" }
                    @if can_delete || can_tag { th { "" } }
                } }
                tbody {
                    @for row in &rows {
                        @let d = &row.detail;
                        @let reference = match d.image_tags.first() {
                            Some(tag) => format!("{uri}:{tag}"),
                            None => format!("{uri}@{}", d.image_digest),
                        };
                        tr data-digest=(d.image_digest) {
                            td { @for tag in &d.image_tags { span.tag { (tag) } } }
                            td { a.mono href={ (repo_href(name.as_str())) "@" (d.image_digest) }
                                title=(d.image_digest) { (short(&d.image_digest)) } }
                            td.num { (bytes(d.image_size_in_bytes)) }
                            td.wide { @if row.platforms.is_empty() { span.muted { "-" } }
                                @else { (row.platforms.join(", ")) } }
                            td.wide { (when(&d.image_pushed_at)) }
                            td.wide { @match &d.last_recorded_pull_time {
                                Some(t) => (when(t)), None => span.muted { "never" } } }
                            td.num.wide { (row.layers) }
                            td.num.wide { (row.referrers) }
                            td.wide {
                                @for s in &d.replication_statuses {
                                    div { (s.registry) "/" (s.repository_name) ": "
                                        span class=@if s.status == "COMPLETE" { "good" } @else if s.status == "FAILED" { "bad" } {
                                            (s.status) } }
                                }
                            }
                            td { button type="button" data-copy={ "docker pull " (reference) }
                                title={ "docker pull " (reference) } { "Copy" } }
                            @if can_delete || can_tag {
                                td {
                                    @if can_delete {
                                        form.inline method="post" action="/ui/actions/delete-image"
                                            data-confirm={ "Delete image " (short(&d.image_digest)) " and its tags?" } {
                                            input type="hidden" name="csrf" value=(viewer.csrf);
                                            input type="hidden" name="repository" value=(name.as_str());
                                            input type="hidden" name="digest" value=(d.image_digest);
                                            button.danger type="submit" { "Delete" }
                                        }
                                    }
                                    @if can_tag {
                                        details {
                                            summary { "Tag" }
                                            form method="post" action="/ui/actions/tag-image" {
                                                input type="hidden" name="csrf" value=(viewer.csrf);
                                                input type="hidden" name="repository" value=(name.as_str());
                                                input type="hidden" name="digest" value=(d.image_digest);
                                                input type="text" name="tag" required
                                                    aria-label="Tag" placeholder="tag" size="10";
                                                " " button type="submit" { "Move here" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(preview) = &preview {
            h2 { "Lifecycle preview" }
            @if preview.preview_results.is_empty() {
                p.muted { "The lifecycle policy would expire nothing now." }
            } @else {
                p { "The lifecycle policy would expire " (preview.preview_results.len()) " images now:" }
                ul {
                    @for r in &preview.preview_results {
                        li { code { (short(&r.image_digest)) } " "
                            @for tag in &r.image_tags { span.tag { (tag) } }
                            span.muted { " rule " (r.applied_rule_priority) } }
                    }
                }
            }
        }
    };
    ok(layout(Some(viewer), name.as_str(), "repositories", body))
}

fn image(
    state: &Arc<AppState>,
    viewer: &Viewer,
    name: &str,
    digest: &str,
    query: &str,
) -> Response {
    let (Ok(name), Ok(digest)) = (name.parse::<RepoName>(), digest.parse::<Digest>()) else {
        return not_found(viewer, "That image");
    };
    if !may(state, viewer, "ecr:BatchGetImage", Some(&name)) {
        return denied(viewer, "ecr:BatchGetImage", &format!("repository {name}"));
    }
    let index = state.meta.read();
    let Some(repo) = index.repos.get(&name) else {
        return not_found(viewer, &format!("Repository {name}"));
    };
    let Some(m) = repo.manifests.get(&digest) else {
        return not_found(viewer, &format!("Image {name}@{digest}"));
    };
    let detail = crate::control::repos::detail(state, &name, repo, m, &index.mirror);
    let doc: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
    let pretty = serde_json::to_string_pretty(&doc).unwrap_or_default();
    let mut referrers: Vec<&Arc<Manifest>> = repo
        .manifests
        .values()
        .filter(|r| r.subject == Some(digest))
        .collect();
    referrers.sort_by_key(|r| r.pushed_at);
    let uri = state.repository_uri_of(&name).to_string();
    let layers: Vec<(String, u64, String)> = doc["layers"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|d| {
                    (
                        d["digest"].as_str().unwrap_or_default().to_string(),
                        d["size"].as_u64().unwrap_or(0),
                        d["mediaType"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let children: Vec<(String, String)> = doc["manifests"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|d| {
                    let p = &d["platform"];
                    (
                        d["digest"].as_str().unwrap_or_default().to_string(),
                        format!(
                            "{}/{}",
                            p["os"].as_str().unwrap_or("?"),
                            p["architecture"].as_str().unwrap_or("?")
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let body = html! {
        (flash(query))
        h1 { a href=(repo_href(name.as_str())) { (name) } "@" (short(&detail.image_digest)) }
        div.card {
            dl.kv {
                dt { "Digest" } dd { code { (detail.image_digest) } }
                dt { "Tags" } dd { @for tag in &detail.image_tags { span.tag { (tag) } } }
                dt { "Size" } dd { (bytes(detail.image_size_in_bytes)) }
                dt { "Media type" } dd { (detail.image_manifest_media_type) }
                @if let Some(a) = &detail.artifact_media_type { dt { "Artifact type" } dd { (a) } }
                dt { "Pushed" } dd { (when(&detail.image_pushed_at)) }
                dt { "Last pulled" } dd { @match &detail.last_recorded_pull_time {
                    Some(t) => (when(t)), None => "never" } }
            }
            div.pull {
                code { "docker pull " (uri) "@" (detail.image_digest) }
                button type="button" data-copy={ "docker pull " (uri) "@" (detail.image_digest) } { "Copy" }
            }
        }
        @if !layers.is_empty() {
            h2 { "Layers" }
            div.scroll { table #layers {
                thead { tr { th { "Digest" } th.num { "Size" } th.wide { "Media type" } } }
                tbody { @for (d, size, kind) in &layers {
                    tr { td.mono title=(d) { (short(d)) } td.num { (bytes(*size)) } td.wide { (kind) } }
                } }
            } }
        }
        @if !children.is_empty() {
            h2 { "Platforms" }
            ul { @for (d, platform) in &children {
                li { (platform) " " a.mono href={ (repo_href(name.as_str())) "@" (d) } { (short(d)) } }
            } }
        }
        h2 { "Referrers" }
        @if referrers.is_empty() { p.muted { "None." } }
        ul { @for r in &referrers {
            li { a.mono href={ (repo_href(name.as_str())) "@" (r.digest) } { (short(&r.digest.to_string())) }
                " " span.muted { (r.artifact_type.clone().unwrap_or_else(|| r.media_type.clone())) } }
        } }
        h2 { "Manifest" }
        pre { (pretty) }
    };
    ok(layout(Some(viewer), name.as_str(), "repositories", body))
}

// ---- task definitions ------------------------------------------------------------------------

fn task_definitions(state: &Arc<AppState>, viewer: &Viewer) -> Response {
    if !may_arn(state, viewer, "ecs:ListTaskDefinitions", "*") {
        return denied(viewer, "ecs:ListTaskDefinitions", "the task definitions");
    }
    let index = state.meta.read();
    let families: Vec<(String, usize, Option<u32>, u32)> = index
        .task_families
        .iter()
        .filter(|(_, f)| !f.revisions.is_empty())
        .map(|(name, f)| {
            (
                name.clone(),
                f.revisions.len(),
                f.latest_active().map(|td| td.revision),
                f.last_revision,
            )
        })
        .collect();
    drop(index);
    ok(layout(
        Some(viewer),
        "Task definitions",
        "task-definitions",
        html! {
            h1 { "Task definitions" }
            div.scroll { table #families {
                thead { tr { th { "Family" } th.num { "Revisions" } th { "Latest active" } } }
                tbody { @for (name, count, active, last) in &families {
                    tr {
                        td { (name) }
                        td.num { (count) }
                        td { @match active {
                            Some(rev) => a href={ "/ui/task-definitions/" (name) ":" (rev) } { (name) ":" (rev) },
                            None => span.muted { "none (last was " (last) ")" },
                        } }
                    }
                } }
            } }
        },
    ))
}

fn task_definition(state: &Arc<AppState>, viewer: &Viewer, id: &str) -> Response {
    let Some((family, revision)) = id
        .rsplit_once(':')
        .and_then(|(f, r)| Some((f.to_string(), r.parse::<u32>().ok()?)))
    else {
        return not_found(viewer, "That task definition");
    };
    let index = state.meta.read();
    let Some(f) = index.task_families.get(&family) else {
        return not_found(viewer, &format!("Task definition {id}"));
    };
    let Some(td) = f.revisions.get(&revision).cloned() else {
        return not_found(viewer, &format!("Task definition {id}"));
    };
    let revisions: Vec<(u32, String)> = f
        .revisions
        .values()
        .rev()
        .map(|td| (td.revision, td.status.clone()))
        .collect();
    drop(index);
    if !may_arn(
        state,
        viewer,
        "ecs:DescribeTaskDefinition",
        &td.task_definition_arn,
    ) {
        return denied(
            viewer,
            "ecs:DescribeTaskDefinition",
            &td.task_definition_arn,
        );
    }
    let td = td.with_printed_times();
    let json = serde_json::to_string_pretty(&td).unwrap_or_default();
    ok(layout(
        Some(viewer),
        id,
        "task-definitions",
        html! {
            h1 { (family) ":" (revision) }
            div.card { dl.kv {
                dt { "ARN" } dd { code { (td.task_definition_arn) } }
                dt { "Status" } dd { (td.status) }
                dt { "Registered" } dd { (when(&td.registered_at)) }
                dt { "Containers" } dd { (td.definition.container_definitions.len()) }
                dt { "Revisions" } dd {
                    @for (rev, status) in &revisions {
                        a href={ "/ui/task-definitions/" (family) ":" (rev) } { (rev) }
                        @if status != "ACTIVE" { span.muted { " (" (status.to_lowercase()) ")" } }
                        " "
                    }
                }
            } }
            h2 { "JSON" }
            pre { (json) }
        },
    ))
}

// ---- services ------------------------------------------------------------------------------

fn services(state: &Arc<AppState>, viewer: &Viewer) -> Response {
    if !may_arn(state, viewer, "ecs:ListServices", "*") {
        return denied(viewer, "ecs:ListServices", "the services");
    }
    let list: Vec<ecrl::api::services::Service> = {
        let index = state.meta.read();
        index
            .services
            .values()
            .map(|s| {
                let tasks = crate::services::tasks_of(&index, s);
                crate::services::with_counts(s.clone(), &tasks)
            })
            .collect()
    };
    ok(layout(
        Some(viewer),
        "Services",
        "services",
        html! {
            h1 { "Services" }
            @if list.is_empty() { p.muted { "None: 'ecrl service create' makes one." } }
            @else { div.scroll { table #services {
                thead { tr { th { "Service" } th.wide { "Cluster" } th { "Task definition" }
                    th.num { "Desired" } th.num { "Running" } th.num { "Pending" } th { "Rollout" } } }
                tbody { @for s in &list {
                    @let cluster = s.cluster_arn.rsplit('/').next().unwrap_or_default();
                    tr {
                        td { a href={ "/ui/services/" (cluster) "/" (s.service_name) } { (s.service_name) }
                            @if s.status != "ACTIVE" { span.muted { " (" (s.status.to_lowercase()) ")" } } }
                        td.wide { (cluster) }
                        td { (s.task_definition.rsplit('/').next().unwrap_or_default()) }
                        td.num { (s.desired_count) }
                        td.num { (s.running_count) }
                        td.num { (s.pending_count) }
                        td { @if let Some(d) = s.deployments.first() { (d.rollout_state) } }
                    }
                } }
            } } }
        },
    ))
}

fn service(state: &Arc<AppState>, viewer: &Viewer, id: &str) -> Response {
    let Some((cluster, name)) = id.split_once('/') else {
        return not_found(viewer, "That service");
    };
    let arn = state.ecs_arn(&format!("service/{cluster}/{name}"));
    if !may_arn(state, viewer, "ecs:DescribeServices", &arn) {
        return denied(viewer, "ecs:DescribeServices", &arn);
    }
    let (s, tasks) = {
        let index = state.meta.read();
        let Some(s) = index.services.get(&arn).cloned() else {
            return not_found(viewer, &format!("Service {name}"));
        };
        let tasks = crate::services::tasks_of(&index, &s);
        (crate::services::with_counts(s, &tasks), tasks)
    };
    let mut live: Vec<&Task> = tasks.iter().filter(|t| !t.is_stopped()).collect();
    live.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    let c = &s.deployment_configuration;
    ok(layout(
        Some(viewer),
        name,
        "services",
        html! {
            h1 { "Service " (name) }
            div.card { dl.kv {
                dt { "ARN" } dd { code { (s.service_arn) } }
                dt { "Status" } dd { (s.status) }
                dt { "Task definition" } dd { (s.task_definition.rsplit('/').next().unwrap_or_default()) }
                dt { "Tasks" } dd { (s.desired_count) " desired, " (s.running_count) " running, "
                    (s.pending_count) " pending" }
                dt { "Deployments" } dd { (c.minimum_healthy_percent) "% healthy min, "
                    (c.maximum_percent) "% max, circuit breaker "
                    @if !c.deployment_circuit_breaker.enable { "off" }
                    @else if c.deployment_circuit_breaker.rollback { "rollback" } @else { "on" } }
            } }
            h2 { "Deployments" }
            div.scroll { table #deployments {
                thead { tr { th { "Id" } th { "Status" } th { "Task definition" } th.num { "Running" }
                    th.num { "Failed" } th { "Rollout" } } }
                tbody { @for d in &s.deployments {
                    tr { td.mono { (d.id) } td { (d.status) }
                        td { (d.task_definition.rsplit('/').next().unwrap_or_default()) }
                        td.num { (d.running_count) "/" (d.desired_count) } td.num { (d.failed_tasks) }
                        td { (d.rollout_state) div.muted { (d.rollout_state_reason) } } }
                } }
            } }
            h2 { "Tasks" }
            @if live.is_empty() { p.muted { "None running." } }
            ul { @for t in &live {
                li { a.mono href={ "/ui/tasks/" (t.id()) } { (t.id().get(..12).unwrap_or(t.id())) } " "
                    span class={ "state " (t.last_status) } { (t.last_status) } " " (t.health_status) }
            } }
            h2 { "Events" }
            ul #service-events { @for e in s.events.iter().take(30) {
                li { span.muted { (when(&e.created_at)) " " } (e.message) }
            } }
        },
    ))
}

// ---- tasks ---------------------------------------------------------------------------------

fn tasks(state: &Arc<AppState>, viewer: &Viewer, query: &str) -> Response {
    if !may_arn(state, viewer, "ecs:ListTasks", "*") {
        return denied(viewer, "ecs:ListTasks", "the tasks");
    }
    let mut tasks: Vec<Task> = state.meta.read().tasks.values().cloned().collect();
    tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    let total = tasks.len();
    tasks.truncate(TASKS_SHOWN);
    ok(layout(
        Some(viewer),
        "Tasks",
        "tasks",
        html! {
            (flash(query))
            h1 { "Tasks" }
            p.muted { (total) " tasks" @if total > TASKS_SHOWN { ", the newest " (TASKS_SHOWN) " shown" } }
            div.scroll { table #tasks {
                thead { tr {
                    th { "Task" } th { "Definition" } th { "Status" } th.wide { "Created" }
                    th.wide { "Stopped reason" }
                } }
                tbody { @for t in &tasks {
                    tr {
                        td { a.mono href={ "/ui/tasks/" (t.id()) } { (t.id().get(..12).unwrap_or(t.id())) } }
                        td { (t.family_revision()) }
                        td { span class={ "state " (t.last_status) } { (t.last_status) } }
                        td.wide { (when(&t.created_at)) }
                        td.wide { (t.stopped_reason.clone().unwrap_or_default()) }
                    }
                } }
            } }
        },
    ))
}

/// The last `LOG_LINES` lines of each container's output.
async fn logs(state: &AppState, task: &Task) -> Vec<(String, String)> {
    let dir = state.tasks.ctx().task_dir(task.id());
    let mut out = Vec::new();
    for c in &task.containers {
        let file = crate::tasks::logs::log_file(&dir, &c.name);
        let text = tail(&file).await.unwrap_or_default();
        out.push((c.name.clone(), text));
    }
    out
}

async fn tail(file: &std::path::Path) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    const WINDOW: u64 = 16 * 1024;
    let mut f = tokio::fs::File::open(file).await?;
    let len = f.metadata().await?.len();
    f.seek(std::io::SeekFrom::Start(len.saturating_sub(WINDOW)))
        .await?;
    let mut buf = Vec::new();
    f.take(WINDOW).read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    Ok(lines[lines.len().saturating_sub(LOG_LINES)..].join("\n"))
}

/// The part of a task's page that changes: sent again whole as the task moves.
/// `stop`: the form token, when the viewer may stop the task (the button goes once it is
/// STOPPED).
fn task_state(task: &Task, logs: &[(String, String)], stop: Option<&str>) -> Markup {
    html! {
        div data-state=(task.last_status) {
            @if let Some(csrf) = stop.filter(|_| task.last_status != "STOPPED") {
                form method="post" action="/ui/actions/stop-task"
                    data-confirm={ "Stop task " (task.id()) "?" } {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="task" value=(task.id());
                    p { button.danger type="submit" { "Stop task" } }
                }
            }
            div.card { dl.kv {
                dt { "Status" } dd { span #task-status class={ "state " (task.last_status) } { (task.last_status) }
                    span.muted { " (desired " (task.desired_status) ")" } }
                dt { "Health" } dd { (task.health_status) }
                dt { "Created" } dd { (when(&task.created_at)) }
                @if let Some(t) = &task.started_at { dt { "Started" } dd { (when(t)) } }
                @if let Some(t) = &task.stopped_at { dt { "Stopped" } dd { (when(t)) } }
                @if let Some(r) = &task.stopped_reason { dt { "Stopped reason" } dd { (r) } }
            } }
            h2 { "Containers" }
            div.scroll { table #containers {
                thead { tr { th { "Name" } th.wide { "Image" } th { "Status" } th.num { "Exit" }
                    th { "Health" } th { "Ports" } } }
                tbody { @for c in &task.containers {
                    tr {
                        td { (c.name) @if c.essential { span.muted { " essential" } } }
                        td.wide.mono { (c.image) }
                        td { span class={ "state " (c.last_status) } { (c.last_status) }
                            @if let Some(r) = &c.reason { div.muted { (r) } } }
                        td.num { @if let Some(code) = c.exit_code { (code) } }
                        td { (c.health_status) }
                        td { @for b in &c.network_bindings {
                            div.mono { (b.bind_ip) ":" (b.host_port) " → " (b.container_port) "/" (b.protocol) } } }
                    }
                } }
            } }
            h2 { "Output" }
            @for (name, text) in logs {
                h3.muted { (name) }
                pre.log { @if text.is_empty() { "(nothing yet)" } @else { (text) } }
            }
        }
    }
}

async fn task(state: &Arc<AppState>, viewer: &Viewer, id: &str, query: &str) -> Response {
    let Ok(task) = state.tasks.find(id) else {
        return not_found(viewer, &format!("Task {id}"));
    };
    if !may_arn(state, viewer, "ecs:DescribeTasks", &task.task_arn) {
        return denied(viewer, "ecs:DescribeTasks", &task.task_arn);
    }
    let task = crate::control::tasks::present(state, task);
    let stop = may_arn(state, viewer, "ecs:StopTask", &task.task_arn).then_some(&*viewer.csrf);
    let logs = logs(state, &task).await;
    ok(layout(
        Some(viewer),
        &format!("Task {}", task.id()),
        "tasks",
        html! {
            (flash(query))
            h1 { "Task " span.mono { (task.id()) } }
            p { "Definition " a href={ "/ui/task-definitions/" (task.family_revision()) } { (task.family_revision()) }
                " · " code { (task.task_arn) } }
            div #live data-live={ "/ui/tasks/" (task.id()) "/live" } { (task_state(&task, &logs, stop)) }
        },
    ))
}

/// Server-sent events: the task's changing part, again each time it changes, until it is
/// STOPPED (or the viewer goes).
fn live(state: &Arc<AppState>, viewer: &Viewer, id: &str) -> Response {
    let Ok(task) = state.tasks.find(id) else {
        return not_found(viewer, &format!("Task {id}"));
    };
    if !may_arn(state, viewer, "ecs:DescribeTasks", &task.task_arn) {
        return denied(viewer, "ecs:DescribeTasks", &task.task_arn);
    }
    if LIVE.fetch_add(1, Ordering::Relaxed) >= MAX_LIVE {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        return super::plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live views are open; reload later",
        );
    }
    let stop = may_arn(state, viewer, "ecs:StopTask", &task.task_arn).then(|| viewer.csrf.clone());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let state = state.clone();
    let id = task.id().to_string();
    tokio::spawn(async move {
        struct Release;
        impl Drop for Release {
            fn drop(&mut self) {
                LIVE.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _release = Release;
        let mut last = String::new();
        // An hour at most: a browser tab left open does not hold a connection forever.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        while tokio::time::Instant::now() < deadline {
            let Ok(task) = state.tasks.find(&id) else {
                return;
            };
            let task = crate::control::tasks::present(&state, task);
            let logs = logs(&state, &task).await;
            let fragment = task_state(&task, &logs, stop.as_deref()).into_string();
            if fragment != last {
                let mut event = String::from("event: task\n");
                for line in fragment.lines() {
                    event.push_str("data: ");
                    event.push_str(line);
                    event.push('\n');
                }
                event.push('\n');
                if tx.send(Ok(event.into())).await.is_err() {
                    return;
                }
                last = fragment;
            }
            if task.last_status == "STOPPED" {
                return;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    });
    let stream = tokio_stream_of(rx);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

// ---- the registry --------------------------------------------------------------------------

async fn registry(state: &Arc<AppState>, viewer: &Viewer) -> Response {
    if !may(state, viewer, "ecr:DescribeRegistry", None) {
        return denied(viewer, "ecr:DescribeRegistry", "the registry");
    }
    let recent = crate::events::list(
        state,
        EventFilter {
            limit: 20,
            ..Default::default()
        },
    )
    .await
    .map(|(events, _)| events)
    .unwrap_or_default();
    let owner = is_owner(state, viewer);
    let index = state.meta.read();
    let mut sizes: HashMap<Digest, u64> = HashMap::new();
    let mut images = 0;
    for repo in index.repos.values() {
        images += repo.manifests.len();
        for (d, s) in &repo.blobs {
            sizes.insert(*d, *s);
        }
        for m in repo.manifests.values() {
            sizes.insert(m.digest, m.size);
        }
    }
    let stored: u64 = sizes.values().sum();
    let users: Vec<(String, Vec<String>, Vec<String>)> = if owner {
        index
            .auth
            .users
            .iter()
            .map(|(name, u)| {
                (
                    name.clone(),
                    u.keys.keys().cloned().collect(),
                    u.policies.keys().cloned().collect(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let rules: Vec<(String, String)> = index
        .mirror
        .cache_rules
        .values()
        .map(|r| {
            (
                r.ecr_repository_prefix.clone(),
                r.upstream_registry_url.clone(),
            )
        })
        .collect();
    let jobs: Vec<(String, String, String, String)> = index
        .mirror
        .jobs
        .values()
        .map(|j| {
            (
                j.id.clone(),
                format!("{} → {}", j.spec.source, j.spec.destination),
                j.last_result
                    .clone()
                    .unwrap_or_else(|| "not run yet".into()),
                ecrl::timestamp::from_millis(j.next_run_at),
            )
        })
        .collect();
    let replication = serde_json::to_string_pretty(&index.mirror.replication).unwrap_or_default();
    let repositories = index.repos.len();
    drop(index);
    let body = html! {
        h1 { "Registry" }
        div.card { dl.kv {
            dt { "Version" } dd { (ecrl::VERSION) }
            dt { "Account" } dd { (state.meta.account_id()) " · " (state.config.region) }
            dt { "Repositories" } dd { (repositories) }
            dt { "Images" } dd { (images) }
            dt { "Stored" } dd { (bytes(stored)) " (content held by repositories)" }
            dt { "Uploads in progress" } dd { (state.uploads.len()) }
            dt { "Metadata" } dd { (state.meta.backend()) " · " code { (state.meta.location()) } }
            dt { "Blob storage" } dd { @match &state.config.storage {
                ecrl::config::StorageConfig::Filesystem => "filesystem (the data dir)",
                ecrl::config::StorageConfig::S3(_) => "S3",
            } }
        } }
        @if owner {
            h2 { "Users" }
            @if users.is_empty() { p.muted { "No users: only the owner signs in." } }
            @else { div.scroll { table #users {
                thead { tr { th { "User" } th { "Access keys" } th { "Policies" } } }
                tbody { @for (name, keys, policies) in &users {
                    tr { td { (name) } td.mono { (keys.join(", ")) } td { (policies.join(", ")) } }
                } }
            } } }
        }
        h2 { "Pull-through cache rules" }
        @if rules.is_empty() { p.muted { "None." } }
        ul { @for (prefix, upstream) in &rules { li { code { (prefix) } " ← " (upstream) } } }
        h2 { "Mirror jobs" }
        @if jobs.is_empty() { p.muted { "None." } }
        @else { div.scroll { table #jobs {
            thead { tr { th { "Job" } th { "Copies" } th { "Last result" } th.wide { "Next run" } } }
            tbody { @for (id, what, result, next) in &jobs {
                tr { td.mono { (id) } td { (what) } td { (result) } td.wide { (when(next)) } }
            } }
        } } }
        h2 { "Replication" }
        pre { (replication) }
        h2 { "Recent events" }
        @if recent.is_empty() { p.muted { "None yet." } }
        @else { div.scroll { table #events {
            thead { tr { th.wide { "Time" } th { "Type" } th { "What" } } }
            tbody { @for e in recent.iter().rev() {
                tr { td.wide { (when(&e.time)) } td { (e.kind.name()) } td { (summary(e)) } }
            } }
        } } }
    };
    ok(layout(Some(viewer), "Registry", "registry", body))
}

/// One line about an event.
fn summary(e: &Event) -> String {
    let d = &e.detail;
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    let image = || match d["image-tag"].as_str() {
        Some(tag) => format!("{}:{tag}", s("repository-name")),
        None => format!("{}@{}", s("repository-name"), short(&s("image-digest"))),
    };
    match e.kind {
        EventKind::ImagePush => format!("pushed {}", image()),
        EventKind::ImageDelete => format!("deleted {}", image()),
        EventKind::Replication => format!("replication of {}: {}", image(), s("result")),
        EventKind::Cache => format!("cached {}", image()),
        EventKind::Repository => {
            format!(
                "{} {}",
                s("action-type").to_lowercase(),
                s("repository-name")
            )
        }
        EventKind::Policy => format!(
            "{} {} policy",
            s("action-type").to_lowercase(),
            s("policy-type").to_lowercase()
        ),
        EventKind::Gc => format!(
            "garbage collection removed {} blobs",
            d["blobs-removed"].as_u64().unwrap_or(0)
        ),
        EventKind::Task => format!(
            "task {} {}",
            s("taskArn").rsplit('/').next().unwrap_or_default(),
            s("lastStatus")
        ),
        EventKind::TaskDefinition => format!("{}:{} {}", s("family"), d["revision"], s("status")),
    }
}

// ---- actions -------------------------------------------------------------------------------

pub async fn act(state: &Arc<AppState>, viewer: &Viewer, path: &str, form: &str) -> Response {
    let field = |name: &str| form_value(form, name);
    match path {
        "/ui/actions/delete-image" => {
            let (repo, digest) = (field("repository"), field("digest"));
            let Ok(name) = repo.parse::<RepoName>() else {
                return not_found(viewer, "That repository");
            };
            if !may(state, viewer, "ecr:BatchDeleteImage", Some(&name)) {
                return denied(
                    viewer,
                    "ecr:BatchDeleteImage",
                    &format!("repository {name}"),
                );
            }
            let back = repo_href(name.as_str());
            let result = crate::control::repos::delete_images(
                state,
                BatchDeleteImageRequest {
                    repository_name: name.to_string(),
                    image_ids: vec![ImageId {
                        image_digest: Some(digest.clone()),
                        image_tag: None,
                    }],
                },
            )
            .await;
            match result {
                Ok(r) if r.failures.is_empty() => {
                    tracing::info!(principal = %viewer.principal, repository = %name, %digest, "console: image deleted");
                    back_with(&back, "done", &format!("Deleted image {}.", short(&digest)))
                }
                Ok(r) => back_with(&back, "error", &r.failures[0].failure_reason),
                Err(e) => back_with(&back, "error", &e.message),
            }
        }
        "/ui/actions/tag-image" => {
            let (repo, digest, tag) = (field("repository"), field("digest"), field("tag"));
            let Ok(name) = repo.parse::<RepoName>() else {
                return not_found(viewer, "That repository");
            };
            if !may(state, viewer, "ecr:PutImage", Some(&name)) {
                return denied(viewer, "ecr:PutImage", &format!("repository {name}"));
            }
            let back = repo_href(name.as_str());
            let result = crate::control::repos::tag_image(
                state.clone(),
                TagImageRequest {
                    repository_name: name.to_string(),
                    source: ImageId {
                        image_digest: Some(digest.clone()),
                        image_tag: None,
                    },
                    image_tag: tag.trim().to_string(),
                },
            )
            .await;
            match result {
                Ok(_) => back_with(
                    &back,
                    "done",
                    &format!("Tag {} now names {}.", tag.trim(), short(&digest)),
                ),
                Err(e) => back_with(&back, "error", &e.message),
            }
        }
        "/ui/actions/stop-task" => {
            let Ok(task) = state.tasks.find(&field("task")) else {
                return not_found(viewer, "That task");
            };
            if !may_arn(state, viewer, "ecs:StopTask", &task.task_arn) {
                return denied(viewer, "ecs:StopTask", &task.task_arn);
            }
            let back = format!("/ui/tasks/{}", task.id());
            // Stopping waits for the containers' stop timeout: the page follows it live.
            let (state, id) = (state.clone(), task.id().to_string());
            let by = viewer.name();
            tokio::spawn(async move {
                let request = ecrl::api::tasks::StopTaskRequest {
                    task: id,
                    reason: Some(format!("Task stopped by {by} in the console")),
                };
                if let Err(e) = crate::control::tasks::stop_task(&state, request).await {
                    tracing::warn!("console: stopping a task failed: {}", e.message);
                }
            });
            back_with(&back, "done", "Stopping the task.")
        }
        _ => not_found(viewer, "That action"),
    }
}

fn back_with(to: &str, kind: &str, message: &str) -> Response {
    redirect(&format!("{to}?{kind}={}", form_encode(message)))
}
