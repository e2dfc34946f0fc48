//! RunTask, ListTasks, DescribeTasks, StopTask, and the task watch and log streams.

use super::{endpoint, ndjson, ControlError, Peer, Shared};
use crate::metadata::Index;
use crate::tasks::{spec, FindError, ResolvedImage, TaskPlan};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use ecrl::api::tasks::*;
use ecrl::api::transfer::StreamEndpoint;
use ecrl::api::{ApiError, ErrorCode};
use ecrl::names::{HostPrefix, ImageRef, Reference, RepoName};
use ecrl::taskdef::EnvironmentFile;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

pub fn routes(router: Router<Shared>) -> Router<Shared> {
    // The control socket is the owner's: every image may be pulled.
    let router = endpoint::<RunTask, _, _>(router, |s: Shared, _: Peer, r| async move {
        run_task(&s, r, |_| Ok::<(), ApiError>(())).await
    });
    let router =
        endpoint::<ListTasks, _, _>(
            router,
            |s: Shared, _: Peer, r| async move { list_tasks(&s, r) },
        );
    let router = endpoint::<DescribeTask, _, _>(router, |s: Shared, _: Peer, r| async move {
        describe_task(&s, r)
    });
    let router = endpoint::<StopTask, _, _>(router, |s: Shared, _: Peer, r| async move {
        stop_task(&s, r).await
    });
    let router = endpoint::<ListLogStreams, _, _>(router, |s: Shared, _: Peer, r| async move {
        Ok(log_streams(&s, r).await)
    });
    router
        .route(WatchTask::PATH, post(watch_task))
        .route(TaskLogs::PATH, post(task_logs))
}

/// The streams of an `awslogs` group: every container of every task (not yet pruned) whose
/// definition sends its output there.
async fn log_streams(state: &Shared, request: LogStreamsRequest) -> LogStreamsResponse {
    let group = request.log_group_name;
    let mut streams = Vec::new();
    let mut tasks = state.tasks.list();
    tasks.reverse();
    for task in tasks {
        let definition = {
            let index = state.meta.read();
            let name = task
                .task_definition_arn
                .rsplit('/')
                .next()
                .unwrap_or_default();
            name.rsplit_once(':').and_then(|(family, revision)| {
                let revision: u32 = revision.parse().ok()?;
                index
                    .task_families
                    .get(family)?
                    .revisions
                    .get(&revision)
                    .map(|d| d.definition.clone())
            })
        };
        let definition = match definition {
            Some(d) => d,
            None => match state.tasks.plan(task.id()).await {
                Some(plan) => plan.definition.definition,
                None => continue,
            },
        };
        for c in &definition.container_definitions {
            let runtime_id = task
                .containers
                .iter()
                .find(|t| t.name == c.name)
                .and_then(|t| t.runtime_id.as_deref());
            if let Some((g, stream)) = crate::tasks::spec::awslogs_stream(c, task.id(), runtime_id)
            {
                if g == group {
                    streams.push(LogStream {
                        log_stream_name: stream,
                        creation_time: task.created_at.clone(),
                        task_arn: task.task_arn.clone(),
                        container_name: c.name.clone(),
                        last_status: task.last_status.clone(),
                    });
                }
            }
        }
    }
    LogStreamsResponse {
        log_group_name: group,
        log_streams: streams,
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameter, message)
}

/// ECS allows at most 10 tasks per RunTask.
const MAX_COUNT: u32 = 10;

/// ECS's RunTask: `count` tasks of the definition in the request's cluster. `may_pull` is
/// asked about every repository of ecrl that the definition's images come from, before
/// anything runs: a door whose caller may not pull an image refuses the task (a task must
/// not be a way to read images its starter cannot pull).
pub(crate) async fn run_task<E: From<ApiError>>(
    state: &Shared,
    request: RunTaskRequest,
    may_pull: impl Fn(&RepoName) -> Result<(), E>,
) -> Result<RunTaskResponse, E> {
    let count = request.count.unwrap_or(1);
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(invalid(format!("count must be 1-{MAX_COUNT}, not {count}")).into());
    }
    let cluster = super::clusters::resolve(state, request.cluster.as_deref())?;
    super::clusters::check_tags(&request.tags)?;
    if let Some(group) = &request.group {
        if group.is_empty() || group.len() > 255 {
            return Err(invalid("group must be 1-255 characters").into());
        }
    }
    let definition = crate::tasks::defs::resolve_task_definition(
        &state.meta.read(),
        &request.task_definition,
        true,
    )?;
    let overrides = request.overrides.unwrap_or_default();
    let def = &definition.definition;
    for (i, o) in overrides.container_overrides.iter().enumerate() {
        if def.container(&o.name).is_none() {
            return Err(invalid(format!(
                "overrides.containerOverrides[{i}].name: the task definition {} has no container {:?}",
                definition.family_revision(),
                o.name
            ))
            .into());
        }
    }
    // The definition as the overrides make it must hold to the same rules (a task memory
    // below what the containers reserve, or one that is not a size at all, is refused as
    // ECS refuses it, not ignored).
    if overrides != TaskOverride::default() {
        let mut effective = def.clone();
        effective.cpu = overrides.cpu.clone().or(effective.cpu);
        effective.memory = overrides.memory.clone().or(effective.memory);
        for c in effective.container_definitions.iter_mut() {
            if let Some(o) = spec::container_override(&overrides, &c.name) {
                c.cpu = o.cpu.or(c.cpu);
                c.memory = o.memory.or(c.memory);
                c.memory_reservation = o.memory_reservation.or(c.memory_reservation);
            }
        }
        if let Err(errors) = ecrl::taskdef::validate(&effective) {
            let lines: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect();
            return Err(invalid(format!(
                "with these overrides, {} is not a valid task: {}",
                definition.family_revision(),
                lines.join("; ")
            ))
            .into());
        }
    }
    let (images, repos) = {
        let index = state.meta.read();
        let mut images = BTreeMap::new();
        let mut repos = Vec::new();
        for c in &def.container_definitions {
            let (image, repo) = resolve_image(&index, state, &c.image)
                .map_err(|e| invalid(format!("container {}: {e}", c.name)))?;
            images.insert(c.name.clone(), image);
            repos.extend(repo);
        }
        (images, repos)
    };
    for repo in &repos {
        may_pull(repo)?;
    }
    let mut env = BTreeMap::new();
    for c in &def.container_definitions {
        let over = spec::container_override(&overrides, &c.name);
        let files = read_env_files(c.environment_files.as_deref())
            .await
            .map_err(|e| invalid(format!("container {}: {e}", c.name)))?;
        let over_files = read_env_files(over.and_then(|o| o.environment_files.as_deref()))
            .await
            .map_err(|e| invalid(format!("container {} override: {e}", c.name)))?;
        env.insert(
            c.name.clone(),
            spec::environment(c, &files, over, &over_files),
        );
    }
    // Reach the engine before recording anything: "dockerd is not running" is an answer.
    state
        .runtime
        .info()
        .await
        .map_err(|e| ApiError::new(ErrorCode::RuntimeUnavailable, e.to_string()))?;
    let plan = TaskPlan {
        definition,
        overrides,
        images,
        env,
        started_by: request.started_by,
        tags: request.tags,
        cluster,
        group: request.group,
    };
    let tasks = state
        .tasks
        .run(plan, count)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, e))?;
    Ok(RunTaskResponse {
        tasks: tasks.into_iter().map(|t| present(state, t)).collect(),
        failures: Vec::new(),
    })
}

/// A task as the API answers it: times as ecrl prints them, its tags as they are now.
pub(crate) fn present(state: &Shared, mut task: Task) -> Task {
    task.tags = super::clusters::tags_of(&state.meta.read(), &task.task_arn, &task.tags);
    task.with_printed_times()
}

/// Resolves an image to the local registry when it names one of ecrl's images:
/// `localhost:PORT/repo[:tag|@digest]` (which must exist), or `repo[:tag]` that ecrl holds;
/// with the repository then. Anything else is left to the engine.
fn resolve_image(
    index: &Index,
    state: &Shared,
    image: &str,
) -> Result<(ResolvedImage, Option<RepoName>), String> {
    let host = state.registry_host();
    let local = match state.own_hosts().split(image) {
        HostPrefix::Own(rest) => Some(rest),
        HostPrefix::None | HostPrefix::Other { .. } => None,
    };
    let engine = || ResolvedImage {
        reference: image.to_string(),
        digest: None,
    };
    let rest = match local {
        Some(rest) => rest,
        None => {
            let first = image.split('/').next().unwrap_or("");
            let has_registry = image.contains('/')
                && (first.contains('.') || first.contains(':') || first == "localhost");
            if has_registry {
                return Ok((engine(), None));
            }
            image
        }
    };
    let parsed: ImageRef = match rest.parse() {
        Ok(r) => r,
        Err(e) if local.is_some() => return Err(format!("image {image}: {e}")),
        Err(_) => return Ok((engine(), None)),
    };
    let digest = index.repos.get(&parsed.repository).and_then(|repo| {
        match parsed
            .reference
            .clone()
            .unwrap_or_else(|| Reference::Tag("latest".parse().expect("valid tag")))
        {
            Reference::Tag(t) => repo.tags.get(&t).cloned(),
            Reference::Digest(d) => repo.manifests.contains_key(&d).then_some(d),
        }
    });
    match digest {
        Some(d) => Ok((
            ResolvedImage {
                reference: format!("{host}/{}@{d}", parsed.repository),
                digest: Some(d.to_string()),
            },
            Some(parsed.repository),
        )),
        None if local.is_some() => Err(format!(
            "image {image} not found in ecrl (push it with 'ecrl repo push' or docker push)"
        )),
        None => Ok((engine(), None)),
    }
}

/// Reads environment files (local paths; `file://` accepted) as `KEY=VALUE` pairs.
async fn read_env_files(
    files: Option<&[EnvironmentFile]>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for f in files.into_iter().flatten() {
        let path = f.value.strip_prefix("file://").unwrap_or(&f.value);
        if path.starts_with("arn:") {
            return Err(format!(
                "environment file {path}: S3 objects are out of reach; give a local file path"
            ));
        }
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("cannot read environment file {path}: {e}"))?;
        out.extend(
            spec::parse_env_file(&text).map_err(|e| format!("environment file {path}: {e}"))?,
        );
    }
    Ok(out)
}

pub(crate) fn find(state: &Shared, reference: &str) -> Result<Task, ApiError> {
    state.tasks.find(reference).map_err(|e| match e {
        FindError::Invalid(_) | FindError::Ambiguous(..) => invalid(e.to_string()),
        FindError::NotFound(_) => ApiError::new(ErrorCode::TaskNotFound, e.to_string()),
    })
}

/// ECS's ListTasks filters (every cluster's tasks when none is named), newest first.
pub(crate) fn list_tasks(
    state: &Shared,
    request: ListTasksRequest,
) -> Result<TasksResponse, ApiError> {
    let cluster = match request.cluster.as_deref() {
        Some(c) => Some(super::clusters::cluster_arn(
            state,
            &super::clusters::resolve(state, Some(c))?,
        )),
        None => None,
    };
    let desired = request
        .desired_status
        .as_deref()
        .map(str::to_ascii_uppercase);
    if let Some(d) = &desired {
        if !["RUNNING", "PENDING", "STOPPED"].contains(&d.as_str()) {
            return Err(invalid(format!(
                "desiredStatus {d:?}: expected RUNNING, PENDING or STOPPED"
            )));
        }
    }
    let tasks = state
        .tasks
        .list()
        .into_iter()
        .filter(|t| cluster.as_deref().is_none_or(|c| t.cluster_arn == c))
        .filter(|t| request.family.as_deref().is_none_or(|f| t.family() == f))
        .filter(|t| {
            request
                .started_by
                .as_deref()
                .is_none_or(|s| t.started_by.as_deref() == Some(s))
        })
        .filter(|t| {
            request
                .service_name
                .as_deref()
                .is_none_or(|s| t.group == crate::services::group_of(s))
        })
        .filter(|t| match desired.as_deref() {
            None => true,
            Some("STOPPED") => t.is_stopped(),
            Some("PENDING") => matches!(
                t.last_status.as_str(),
                task_status::PROVISIONING | task_status::PENDING
            ),
            Some(_) => !t.is_stopped(),
        })
        .map(|t| present(state, t))
        .collect();
    Ok(TasksResponse {
        tasks,
        failures: Vec::new(),
    })
}

/// ECS's DescribeTasks of one task: its id, a unique prefix of it, or its ARN.
pub(crate) fn describe_task(state: &Shared, request: TaskRef) -> Result<TasksResponse, ApiError> {
    Ok(TasksResponse {
        tasks: vec![present(state, find(state, &request.task)?)],
        failures: Vec::new(),
    })
}

/// ECS's StopTask: answers once the task is STOPPED.
pub(crate) async fn stop_task(
    state: &Shared,
    request: StopTaskRequest,
) -> Result<StopTaskResponse, ApiError> {
    let task = find(state, &request.task)?;
    let reason = request
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "Task stopped by user".into());
    let task = match state.tasks.stop(task.id(), reason).await {
        Some(stopped) => stopped,
        None => task, // stopped already
    };
    Ok(StopTaskResponse {
        task: present(state, task),
    })
}

async fn watch_task(
    State(state): State<Shared>,
    Query(request): Query<WatchTaskRequest>,
) -> Result<Response, ControlError> {
    let task = find(&state, &request.task)?;
    let until_running = match request
        .until
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("STOPPED") => false,
        Some("RUNNING") => true,
        Some(other) => {
            return Err(ControlError(invalid(format!(
                "until {other:?}: expected RUNNING or STOPPED"
            ))))
        }
    };
    let done = move |t: &Task| {
        t.is_stopped()
            || (until_running
                && matches!(
                    t.last_status.as_str(),
                    task_status::RUNNING | task_status::DEPROVISIONING
                ))
    };
    let (tx, rx) = mpsc::channel(16);
    let changes = state.tasks.watch(task.id()).await;
    tokio::spawn(async move {
        let Some(mut changes) = changes else {
            let _ = tx
                .send(TaskEvent::Task {
                    task: Box::new(task),
                })
                .await;
            return;
        };
        loop {
            let now = changes.borrow_and_update().clone();
            let finished = done(&now);
            if tx
                .send(TaskEvent::Task {
                    task: Box::new(now.with_printed_times()),
                })
                .await
                .is_err()
                || finished
            {
                return;
            }
            if changes.changed().await.is_err() {
                let last = changes.borrow().clone();
                let _ = tx
                    .send(TaskEvent::Task {
                        task: Box::new(last.with_printed_times()),
                    })
                    .await;
                return;
            }
        }
    });
    Ok(ndjson(rx))
}

/// How often a followed log looks for more output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

async fn task_logs(
    State(state): State<Shared>,
    Query(request): Query<TaskLogsRequest>,
) -> Result<Response, ControlError> {
    let task = find(&state, &request.task)?;
    let containers: Vec<String> = match &request.container {
        Some(name) => {
            if !task.containers.iter().any(|c| &c.name == name) {
                return Err(ControlError(invalid(format!(
                    "task {} has no container {name:?} (it has {})",
                    task.id(),
                    task.containers
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))));
            }
            vec![name.clone()]
        }
        None => task.containers.iter().map(|c| c.name.clone()).collect(),
    };
    let dir = state.tasks.ctx().task_dir(task.id());
    let (tx, rx) = mpsc::channel(64);
    let follow = request.follow;
    let id = task.id().to_string();
    tokio::spawn(async move {
        let mut offsets: BTreeMap<String, u64> = BTreeMap::new();
        let mut partial: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        loop {
            // Read whether the task has stopped before the files: what a stopped task's
            // files hold then is all there will be.
            let stopped = state.tasks.get(&id).is_none_or(|t| t.is_stopped());
            let last_round = !follow || stopped;
            for name in &containers {
                let file = crate::tasks::logs::log_file(&dir, name);
                let offset = offsets.entry(name.clone()).or_insert(0);
                let bytes = match read_from(&file, offset).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx
                            .send(LogEvent::Error(ApiError::new(
                                ErrorCode::Internal,
                                format!("reading {}: {e}", file.display()),
                            )))
                            .await;
                        return;
                    }
                };
                let buf = partial.entry(name.clone()).or_default();
                buf.extend_from_slice(&bytes);
                // Whole lines only, so that lines of several containers do not interleave
                // mid-line; the rest once the output is final.
                let cut = if last_round {
                    buf.len()
                } else {
                    buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
                };
                if cut > 0 {
                    let data = String::from_utf8_lossy(&buf[..cut]).into_owned();
                    buf.drain(..cut);
                    if tx
                        .send(LogEvent::Output {
                            container: name.clone(),
                            data,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            if last_round {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Ok(ndjson(rx))
}

/// The bytes of `file` past `offset` (none when it does not exist yet); moves the offset.
async fn read_from(file: &Path, offset: &mut u64) -> std::io::Result<Vec<u8>> {
    let mut f = match tokio::fs::File::open(file).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata().await?.len();
    if len < *offset {
        // Rewritten from the start (a restarted daemon copies the engine's record again).
        *offset = 0;
    }
    f.seek(std::io::SeekFrom::Start(*offset)).await?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).await?;
    *offset += out.len() as u64;
    Ok(out)
}
