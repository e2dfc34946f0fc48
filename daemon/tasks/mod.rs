//! Tasks: ECS task definitions run on the container runtime.
//!
//! [`TaskManager`] starts a [`supervisor::Supervisor`] per task, keeps a channel per live
//! task so callers can watch it change, forwards stop requests, and at daemon start finds the
//! tasks a previous daemon left running (by their containers' labels) and supervises them
//! again. What a task needs to run — the definition, overrides, resolved images and
//! environment — is its [`TaskPlan`], saved beside its logs in `DATA_DIR/tasks/TASK_ID/`.

pub mod defs;
pub mod endpoint;
pub mod logs;
pub mod spec;
pub mod store;
pub mod supervisor;
#[cfg(test)]
mod tests;

use crate::runtime::{RunState, Runtime};
use async_trait::async_trait;
use ecrl::api::tasks::{task_status, Container, Task, TaskDefinition, TaskOverride};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use supervisor::{Resume, Supervisor};
use tokio::sync::watch;

/// Where task records are kept (the metadata database; a map in unit tests).
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    async fn save(&self, task: Task) -> Result<(), String>;
    fn get(&self, id: &str) -> Option<Task>;
    fn all(&self) -> Vec<Task>;
    async fn delete(&self, id: &str) -> Result<(), String>;
}

/// What the supervisors share.
pub struct Ctx {
    pub runtime: Arc<dyn Runtime>,
    pub store: Arc<dyn TaskStore>,
    /// `DATA_DIR/tasks`.
    pub tasks_dir: PathBuf,
    /// `arn:aws:ecs:REGION:ACCOUNT:`.
    pub arn_prefix: String,
    /// Credentials for pulls from ecrl's own registry (short-lived, made per pull).
    pub registry_auth: Arc<dyn Fn() -> Option<crate::runtime::RegistryAuth> + Send + Sync>,
    /// The task records are shared with other ecrld (metadata on PostgreSQL): each runs its
    /// own tasks on its own engine, so only the tasks whose plan is in this instance's
    /// `tasks_dir` are its own to recover.
    pub shared: bool,
    /// Where containers' `secrets` come from.
    pub secrets: Arc<crate::secrets::Secrets>,
    /// The task metadata endpoint and credentials provider, when it is on.
    pub endpoint: Option<Arc<endpoint::Endpoint>>,
}

impl Ctx {
    pub fn task_dir(&self, id: &str) -> PathBuf {
        self.tasks_dir.join(id)
    }
}

/// An image as the engine should get it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedImage {
    /// What the engine pulls and creates from: `localhost:PORT/repo@sha256:...` for an image
    /// in ecrl, the definition's reference otherwise.
    pub reference: String,
    /// The manifest digest, for images in ecrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Everything a task needs to run, fixed when RunTask is called.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPlan {
    pub definition: TaskDefinition,
    #[serde(default)]
    pub overrides: TaskOverride,
    /// By container name.
    pub images: BTreeMap<String, ResolvedImage>,
    /// By container name: `KEY=VALUE` in ECS's precedence (files read at RunTask).
    pub env: BTreeMap<String, Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<ecrl::taskdef::Tag>,
    /// The cluster's name (`default` for plans from before clusters).
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// The task group; `family:FAMILY` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

fn default_cluster() -> String {
    ecrl::api::tasks::DEFAULT_CLUSTER.to_string()
}

const PLAN_FILE: &str = "plan.json";

struct Live {
    changes: watch::Receiver<Task>,
    stop: watch::Sender<Option<String>>,
}

pub struct TaskManager {
    ctx: Arc<Ctx>,
    live: Mutex<HashMap<String, Live>>,
    /// True once the tasks of a previous daemon are supervised again.
    recovered: watch::Sender<bool>,
}

/// How long a stop or watch waits for a restarted daemon to take its tasks back.
const RECOVERY_WAIT: Duration = Duration::from_secs(15);

pub fn now_rfc3339() -> String {
    // Stored as printed: one width, so stored times sort as text too.
    ecrl::timestamp::now()
}

/// A new task id: 32 hex digits, as ECS's.
fn new_task_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl TaskManager {
    pub fn new(ctx: Ctx) -> Self {
        TaskManager {
            ctx: Arc::new(ctx),
            live: Mutex::new(HashMap::new()),
            recovered: watch::channel(false).0,
        }
    }

    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// Records `count` tasks of the plan (PROVISIONING) and starts supervising them;
    /// answers them as recorded.
    pub async fn run(&self, plan: TaskPlan, count: u32) -> Result<Vec<Task>, String> {
        let plan = Arc::new(plan);
        let mut tasks = Vec::new();
        for _ in 0..count {
            let task = self.new_task(&plan);
            let dir = self.ctx.task_dir(task.id());
            write_plan(&dir, &plan)
                .await
                .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
            self.ctx.store.save(task.clone()).await?;
            self.spawn(plan.clone(), task.clone(), Resume::Fresh);
            tasks.push(task);
        }
        Ok(tasks)
    }

    fn new_task(&self, plan: &TaskPlan) -> Task {
        let id = new_task_id();
        let prefix = &self.ctx.arn_prefix;
        let cluster = &plan.cluster;
        let task_arn = format!("{prefix}task/{cluster}/{id}");
        let def = &plan.definition.definition;
        let containers = def
            .container_definitions
            .iter()
            .map(|c| {
                let over = spec::container_override(&plan.overrides, &c.name);
                Container {
                    container_arn: format!(
                        "{prefix}container/{cluster}/{id}/{}",
                        uuid::Uuid::new_v4()
                    ),
                    task_arn: task_arn.clone(),
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_digest: plan.images.get(&c.name).and_then(|i| i.digest.clone()),
                    runtime_id: None,
                    last_status: task_status::PENDING.into(),
                    exit_code: None,
                    reason: None,
                    network_bindings: Vec::new(),
                    health_status: "UNKNOWN".into(),
                    essential: c.is_essential(),
                    cpu: over.and_then(|o| o.cpu).or(c.cpu).map(|v| v.to_string()),
                    memory: over
                        .and_then(|o| o.memory)
                        .or(c.memory)
                        .map(|v| v.to_string()),
                    memory_reservation: over
                        .and_then(|o| o.memory_reservation)
                        .or(c.memory_reservation)
                        .map(|v| v.to_string()),
                }
            })
            .collect();
        Task {
            task_arn,
            cluster_arn: format!("{prefix}cluster/{cluster}"),
            task_definition_arn: plan.definition.task_definition_arn.clone(),
            group: plan
                .group
                .clone()
                .unwrap_or_else(|| format!("family:{}", def.family)),
            last_status: task_status::PROVISIONING.into(),
            desired_status: task_status::RUNNING.into(),
            health_status: "UNKNOWN".into(),
            cpu: plan.overrides.cpu.clone().or_else(|| def.cpu.clone()),
            memory: plan.overrides.memory.clone().or_else(|| def.memory.clone()),
            network_mode: spec::network_mode(def).as_str().into(),
            containers,
            overrides: plan.overrides.clone(),
            started_by: plan.started_by.clone(),
            tags: plan.tags.clone(),
            created_at: now_rfc3339(),
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: None,
            stopping_at: None,
            stopped_at: None,
            stop_code: None,
            stopped_reason: None,
            essential_container_exited: None,
            version: 1,
        }
    }

    fn spawn(&self, plan: Arc<TaskPlan>, task: Task, resume: Resume) {
        let id = task.id().to_string();
        let (publish, changes) = watch::channel(task.clone());
        let (stop, stop_rx) = watch::channel(None);
        if let Ok(mut live) = self.live.lock() {
            live.insert(id.clone(), Live { changes, stop });
        }
        let supervisor = Supervisor::new(self.ctx.clone(), plan, task, publish, stop_rx);
        tokio::spawn(async move {
            supervisor.run(resume).await;
        });
        // The entry leaves the map once the task is STOPPED (see `forget_stopped`).
    }

    /// Drops the channels of tasks that have stopped.
    fn forget_stopped(&self) {
        if let Ok(mut live) = self.live.lock() {
            live.retain(|_, l| !l.changes.borrow().is_stopped());
        }
    }

    /// What the task was run with, when this instance runs it (its plan is in this
    /// instance's data dir).
    pub async fn plan(&self, id: &str) -> Option<TaskPlan> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        read_plan(&self.ctx.task_dir(id)).await.ok()
    }

    /// The task as it is now.
    pub fn get(&self, id: &str) -> Option<Task> {
        if let Some(task) = self
            .live
            .lock()
            .ok()
            .and_then(|live| live.get(id).map(|l| l.changes.borrow().clone()))
        {
            return Some(task);
        }
        self.ctx.store.get(id)
    }

    /// Finds a task by id, unique id prefix, or ARN.
    pub fn find(&self, reference: &str) -> Result<Task, FindError> {
        let id = reference.rsplit('/').next().unwrap_or(reference);
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(FindError::Invalid(reference.to_string()));
        }
        if let Some(task) = self.get(id) {
            return Ok(task);
        }
        let matches: Vec<Task> = self
            .ctx
            .store
            .all()
            .into_iter()
            .filter(|t| t.id().starts_with(id))
            .collect();
        match matches.len() {
            0 => Err(FindError::NotFound(reference.to_string())),
            1 => Ok(self
                .get(matches[0].id())
                .unwrap_or_else(|| matches[0].clone())),
            n => Err(FindError::Ambiguous(reference.to_string(), n)),
        }
    }

    /// Every task, newest first.
    pub fn list(&self) -> Vec<Task> {
        let mut tasks = self.ctx.store.all();
        tasks.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        tasks
    }

    /// Returns once the tasks a previous daemon ran are supervised again (or after a while,
    /// when the engine does not answer).
    async fn wait_recovered(&self) {
        let mut rx = self.recovered.subscribe();
        let _ = tokio::time::timeout(RECOVERY_WAIT, rx.wait_for(|done| *done)).await;
    }

    /// A channel that sees every change of a live task; `None` once it has stopped.
    pub async fn watch(&self, id: &str) -> Option<watch::Receiver<Task>> {
        self.wait_recovered().await;
        self.forget_stopped();
        self.live
            .lock()
            .ok()
            .and_then(|live| live.get(id).map(|l| l.changes.clone()))
    }

    /// Asks a live task to stop; answers the task once STOPPED.
    pub async fn stop(&self, id: &str, reason: String) -> Option<Task> {
        self.wait_recovered().await;
        let changes = {
            let live = self.live.lock().ok()?;
            let l = live.get(id)?;
            l.stop.send_if_modified(|r| {
                if r.is_none() {
                    *r = Some(reason.clone());
                    true
                } else {
                    false
                }
            });
            l.changes.clone()
        };
        Some(wait_until(changes, |t| t.is_stopped()).await)
    }

    /// Finds the tasks a previous daemon left unfinished and supervises them again. A task
    /// caught while starting is torn down; one whose containers all vanished is STOPPED.
    pub async fn recover(&self) {
        self.recover_all().await;
        self.recovered.send_replace(true);
    }

    async fn recover_all(&self) {
        let unfinished: Vec<Task> = self
            .ctx
            .store
            .all()
            .into_iter()
            .filter(|t| !t.is_stopped())
            .filter(|t| !self.ctx.shared || self.ctx.task_dir(t.id()).is_dir())
            .collect();
        if unfinished.is_empty() {
            return;
        }
        // The engine may come up after ecrld: keep trying for a while.
        let mut delay = Duration::from_millis(500);
        loop {
            match self.ctx.runtime.info().await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(
                        "{} task(s) wait for the container runtime: {e}",
                        unfinished.len()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        for task in unfinished {
            if let Err(e) = self.recover_one(task.clone()).await {
                tracing::error!(task = task.id(), "cannot recover the task: {e}");
            }
        }
    }

    async fn recover_one(&self, mut task: Task) -> Result<(), String> {
        let id = task.id().to_string();
        let plan = read_plan(&self.ctx.task_dir(&id)).await;
        let found = self
            .ctx
            .runtime
            .list_containers(spec::LABEL_TASK_ID, &id)
            .await
            .map_err(|e| e.to_string())?;
        let mut ids = BTreeMap::new();
        let mut pause = None;
        for c in &found {
            match c.labels.get(spec::LABEL_ROLE).map(String::as_str) {
                Some(spec::ROLE_PAUSE) => pause = Some(c.id.clone()),
                _ => {
                    if let Some(name) = c.labels.get(spec::LABEL_CONTAINER) {
                        ids.insert(name.clone(), c.id.clone());
                    }
                }
            }
        }
        let started = matches!(
            task.last_status.as_str(),
            task_status::RUNNING | task_status::DEPROVISIONING
        );
        let any_running = found.iter().any(|c| c.state == RunState::Running);
        tracing::info!(
            task = %id,
            status = %task.last_status,
            containers = found.len(),
            "found a task the previous ecrld ran"
        );
        match plan {
            Ok(plan) if started && !found.is_empty() => {
                self.spawn(Arc::new(plan), task, Resume::Running { ids, pause });
                Ok(())
            }
            plan => {
                let reason = match (&plan, started, any_running) {
                    (Err(e), _, _) => {
                        format!("ecrld restarted and cannot read the task's plan: {e}")
                    }
                    (Ok(_), true, _) => {
                        "the task's containers vanished while ecrld was not running".into()
                    }
                    (Ok(_), false, _) => "ecrld stopped while the task was starting".into(),
                };
                // Tear down whatever exists, then record the end.
                for c in found {
                    let _ = self
                        .ctx
                        .runtime
                        .stop_container(&c.id, Duration::from_secs(10))
                        .await;
                    let _ = self.ctx.runtime.remove_container(&c.id).await;
                }
                let names = spec::Names {
                    task_id: id.clone(),
                    family: task.family().to_string(),
                    revision: 0,
                };
                let _ = self.ctx.runtime.remove_network(&names.network()).await;
                if let Ok(plan) = &plan {
                    for source in spec::volumes(&plan.definition.definition, &names).values() {
                        if let spec::VolumeSource::Engine {
                            name,
                            task_scoped: true,
                            ..
                        } = source
                        {
                            let _ = self.ctx.runtime.remove_volume(name).await;
                        }
                    }
                }
                let now = now_rfc3339();
                task.desired_status = task_status::STOPPED.into();
                task.last_status = task_status::STOPPED.into();
                task.stopping_at.get_or_insert_with(|| now.clone());
                task.stopped_at = Some(now);
                if task.stop_code.is_none() {
                    task.stop_code = Some(if started {
                        ecrl::api::tasks::stop_code::ESSENTIAL_CONTAINER_EXITED.into()
                    } else {
                        ecrl::api::tasks::stop_code::TASK_FAILED_TO_START.into()
                    });
                    task.stopped_reason = Some(reason.clone());
                }
                for c in task.containers.iter_mut() {
                    if c.last_status != task_status::STOPPED {
                        c.last_status = task_status::STOPPED.into();
                        c.reason.get_or_insert_with(|| reason.clone());
                    }
                }
                task.version += 1;
                self.ctx.store.save(task).await
            }
        }
    }

    /// Removes the records and logs of tasks stopped longer ago than `keep`.
    pub async fn prune(&self, keep: Duration) -> usize {
        self.forget_stopped();
        let cutoff = time::OffsetDateTime::now_utc() - keep;
        let mut removed = 0;
        for task in self.ctx.store.all() {
            let stopped = task.stopped_at.as_deref().and_then(|s| {
                time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            });
            if task.is_stopped() && stopped.is_some_and(|t| t < cutoff) {
                let id = task.id().to_string();
                if let Err(e) = self.ctx.store.delete(&id).await {
                    tracing::warn!(task = %id, "cannot prune the task: {e}");
                    continue;
                }
                let _ = tokio::fs::remove_dir_all(self.ctx.task_dir(&id)).await;
                removed += 1;
            }
        }
        removed
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FindError {
    #[error("{0:?} is not a task id (32 hex digits, a unique prefix of one, or a task ARN)")]
    Invalid(String),
    #[error("task {0} not found")]
    NotFound(String),
    #[error("{0} is a prefix of {1} tasks; give more of the id")]
    Ambiguous(String, usize),
}

/// Waits until the task satisfies `done`; answers it then (or as last seen when its
/// supervisor is gone).
pub async fn wait_until(mut changes: watch::Receiver<Task>, done: impl Fn(&Task) -> bool) -> Task {
    loop {
        {
            let task = changes.borrow_and_update();
            if done(&task) {
                return task.clone();
            }
        }
        if changes.changed().await.is_err() {
            return changes.borrow().clone();
        }
    }
}

async fn write_plan(dir: &std::path::Path, plan: &TaskPlan) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let bytes = serde_json::to_vec_pretty(plan).map_err(std::io::Error::other)?;
    tokio::fs::write(dir.join(PLAN_FILE), bytes).await
}

async fn read_plan(dir: &std::path::Path) -> Result<TaskPlan, String> {
    let bytes = tokio::fs::read(dir.join(PLAN_FILE))
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}
