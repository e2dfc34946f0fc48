//! One task's life on the runtime, as ECS runs it:
//!
//! PROVISIONING (network, volumes, the awsvpc pause container) → PENDING (images, then the
//! containers in dependency order: each waits for its `dependsOn` conditions) → RUNNING
//! (until an essential container exits or a stop is asked) → DEPROVISIONING (containers
//! stopped in reverse dependency order, each given its stopTimeout, then removed with the
//! network and task volumes) → STOPPED.
//!
//! Every change is saved and published before the supervisor goes on, so what `describe`
//! shows is what is true.

use super::logs;
use super::spec::{self, Names, SpecInput, TaskNetwork, VolumeSource};
use super::{now_rfc3339, Ctx, TaskPlan};
use crate::runtime::{ContainerStatus, Health, RunState, RuntimeError, TaskCgroup, TaskLimits};
use ecrl::api::tasks::{stop_code, task_status, Container, NetworkBinding, Task};
use ecrl::taskdef::{ContainerDefinition, DependencyCondition, NetworkMode};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// ECS's reason for a container the kernel killed for memory.
pub const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";

/// How often health is looked at while a container waits for another to be HEALTHY, and
/// while the task runs.
const STARTING_TICK: Duration = Duration::from_millis(200);
const RUNNING_TICK: Duration = Duration::from_secs(1);
/// How long the log copies may take to drain once the containers stopped.
const LOG_DRAIN: Duration = Duration::from_secs(5);

/// Why the task stops.
#[derive(Debug, Clone)]
pub struct StopCause {
    pub code: &'static str,
    pub reason: String,
}

impl StopCause {
    fn failed(reason: impl Into<String>) -> Self {
        StopCause {
            code: stop_code::TASK_FAILED_TO_START,
            reason: reason.into(),
        }
    }
}

/// Where a supervisor begins: a new task, or one a restarted daemon found again.
pub enum Resume {
    Fresh,
    /// The containers found by label, by container name → runtime id, and the pause
    /// container's id.
    Running {
        ids: BTreeMap<String, String>,
        pause: Option<String>,
    },
}

pub struct Supervisor {
    ctx: Arc<Ctx>,
    plan: Arc<TaskPlan>,
    names: Names,
    task: Task,
    publish: watch::Sender<Task>,
    stop: watch::Receiver<Option<String>>,
    /// Container name → runtime id, for those created.
    ids: BTreeMap<String, String>,
    /// Containers not running any more (exited, failed to start, never started).
    done: HashSet<String>,
    pause: Option<String>,
    network: Option<String>,
    /// The cgroup holding the task's containers to its task-level limits, when it has one.
    cgroup: Option<String>,
    volumes: BTreeMap<String, VolumeSource>,
    exits: FuturesUnordered<BoxFuture<'static, String>>,
    log_copies: Vec<JoinHandle<()>>,
    /// By container name: its `secrets` as `NAME=VALUE`, read when the task provisions (held
    /// in memory only, until the containers are made).
    secret_env: HashMap<String, crate::runtime::SecretEnv>,
}

impl Supervisor {
    pub fn new(
        ctx: Arc<Ctx>,
        plan: Arc<TaskPlan>,
        task: Task,
        publish: watch::Sender<Task>,
        stop: watch::Receiver<Option<String>>,
    ) -> Self {
        let names = Names {
            task_id: task.id().to_string(),
            family: plan.definition.definition.family.clone(),
            revision: plan.definition.revision,
        };
        let volumes = spec::volumes(&plan.definition.definition, &names);
        Supervisor {
            ctx,
            plan,
            names,
            task,
            publish,
            stop,
            ids: BTreeMap::new(),
            done: HashSet::new(),
            pause: None,
            network: None,
            cgroup: None,
            volumes,
            exits: FuturesUnordered::new(),
            log_copies: Vec::new(),
            secret_env: HashMap::new(),
        }
    }

    fn def(&self) -> &ecrl::taskdef::TaskDefinitionInput {
        &self.plan.definition.definition
    }

    /// The task-level cpu and memory (RunTask's overrides, else the definition's).
    fn task_limits(&self) -> TaskLimits {
        let over = &self.plan.overrides;
        TaskLimits {
            memory_bytes: over
                .memory
                .as_deref()
                .and_then(ecrl::taskdef::parse_memory_mib)
                .or_else(|| self.def().memory_mib())
                .map(|mib| mib.saturating_mul(1024 * 1024)),
            cpu_units: over
                .cpu
                .as_deref()
                .and_then(ecrl::taskdef::parse_cpu_units)
                .or_else(|| self.def().cpu_units()),
        }
    }

    fn container_def(&self, name: &str) -> Option<&ContainerDefinition> {
        self.plan.definition.definition.container(name)
    }

    fn container(&mut self, name: &str) -> &mut Container {
        let i = self
            .task
            .containers
            .iter()
            .position(|c| c.name == name)
            .expect("every container of the definition is on the task");
        &mut self.task.containers[i]
    }

    fn container_ref(&self, name: &str) -> Option<&Container> {
        self.task.containers.iter().find(|c| c.name == name)
    }

    /// Saves and announces the task as it is now.
    async fn publish(&mut self) {
        self.task.version += 1;
        self.task.health_status = task_health(&self.task);
        if let Err(e) = self.ctx.store.save(self.task.clone()).await {
            tracing::error!(task = self.task.id(), "cannot record the task's state: {e}");
        }
        self.publish.send_replace(self.task.clone());
    }

    pub async fn run(mut self, resume: Resume) {
        let cause = match resume {
            Resume::Fresh => match self.provision().await {
                Err(cause) => cause,
                Ok(()) => {
                    let started = self.start_containers().await;
                    // Every container is made: the secrets' values are wiped from memory.
                    self.secret_env.clear();
                    match started {
                        Err(cause) => cause,
                        Ok(()) => self.supervise().await,
                    }
                }
            },
            Resume::Running { ids, pause } => {
                self.adopt(ids, pause).await;
                if self.task.last_status == task_status::DEPROVISIONING {
                    StopCause {
                        code: stop_code_static(self.task.stop_code.as_deref()),
                        reason: self.task.stopped_reason.clone().unwrap_or_default(),
                    }
                } else {
                    self.supervise().await
                }
            }
        };
        self.deprovision(cause).await;
    }

    /// A stop asked for already, as its cause.
    fn stop_requested(&self) -> Option<StopCause> {
        self.stop.borrow().as_ref().map(|reason| StopCause {
            code: stop_code::USER_INITIATED,
            reason: reason.clone(),
        })
    }

    // --- PROVISIONING and PENDING ----------------------------------------------------------

    /// Reads every container's `secrets` from the secret store; the first that cannot be
    /// read stops the task with ECS's ResourceInitializationError.
    fn resolve_secrets(&mut self) -> Result<(), StopCause> {
        for c in &self.plan.definition.definition.container_definitions {
            let mut env = crate::runtime::SecretEnv::default();
            for secret in c.secrets.iter().flatten() {
                let value = self
                    .ctx
                    .secrets
                    .resolve(&secret.value_from)
                    .map_err(StopCause::failed)?;
                env.0.push(zeroize::Zeroizing::new(format!(
                    "{}={}",
                    secret.name, *value
                )));
            }
            if !env.0.is_empty() {
                self.secret_env.insert(c.name.clone(), env);
            }
        }
        Ok(())
    }

    async fn provision(&mut self) -> Result<(), StopCause> {
        self.resolve_secrets()?;
        let runtime = self.ctx.runtime.clone();
        let limits = self.task_limits();
        if !limits.is_empty() {
            match runtime.task_cgroup(self.task.id(), &limits).await {
                TaskCgroup::Parent(parent) => self.cgroup = Some(parent),
                TaskCgroup::Unavailable(why) => tracing::warn!(
                    task = self.task.id(),
                    "the task's cpu and memory hold each container alone, not the task as a \
                     whole: {why}"
                ),
            }
        }
        let mode = spec::network_mode(self.def());
        let wants_network = match mode {
            NetworkMode::Bridge => spec::bridge_needs_network(self.def()),
            NetworkMode::Awsvpc => true,
            NetworkMode::Host | NetworkMode::None => false,
        };
        if wants_network {
            let name = self.names.network();
            runtime
                .create_network(&name, &self.names.labels(None))
                .await
                .map_err(|e| StopCause::failed(format!("cannot create the task network: {e}")))?;
            self.network = Some(name);
        }
        for source in self.volumes.values() {
            if let VolumeSource::Engine {
                name,
                create: Some(create),
                task_scoped,
                autoprovision,
            } = source
            {
                let exists = !task_scoped
                    && runtime
                        .volume_exists(name)
                        .await
                        .map_err(|e| StopCause::failed(format!("volume {name}: {e}")))?;
                if exists {
                    continue;
                }
                if !autoprovision {
                    return Err(StopCause::failed(format!(
                        "the shared volume {name} does not exist and autoprovision is off"
                    )));
                }
                runtime
                    .create_volume(create)
                    .await
                    .map_err(|e| StopCause::failed(format!("cannot create volume {name}: {e}")))?;
            }
        }

        self.task.last_status = task_status::PENDING.into();
        self.task.pull_started_at = Some(now_rfc3339());
        self.publish().await;
        if let Some(cause) = self.stop_requested() {
            return Err(cause);
        }

        // Images: each distinct one once, all at the same time.
        type Pull = BoxFuture<'static, (String, String, Result<(), RuntimeError>)>;
        let mut pulls: FuturesUnordered<Pull> = FuturesUnordered::new();
        let mut seen = Vec::new();
        for (name, image) in &self.plan.images {
            if seen.contains(&image.reference) {
                continue;
            }
            seen.push(image.reference.clone());
            let runtime = runtime.clone();
            let reference = image.reference.clone();
            let name = name.clone();
            // Images in ecrl's registry are pulled with a short-lived token of the runner's.
            let auth = image
                .digest
                .as_ref()
                .and_then(|_| (self.ctx.registry_auth)());
            pulls.push(Box::pin(async move {
                let result = runtime.ensure_image(&reference, auth.as_ref()).await;
                (name, reference, result)
            }));
        }
        if mode == NetworkMode::Awsvpc {
            let runtime = runtime.clone();
            pulls.push(Box::pin(async move {
                match runtime.pause_image().await {
                    Ok(image) => ("".to_string(), image, Ok(())),
                    Err(e) => ("".to_string(), String::new(), Err(e)),
                }
            }));
        }
        let mut failure = None;
        let mut pause_image = None;
        while let Some((name, reference, result)) = pulls.next().await {
            match result {
                Ok(()) if name.is_empty() => pause_image = Some(reference),
                Ok(()) => {}
                Err(e) if name.is_empty() => {
                    failure.get_or_insert(format!("cannot provide the awsvpc namespace: {e}"));
                }
                Err(e) => {
                    let reason =
                        format!("CannotPullContainerError: {}", pull_error(&reference, &e));
                    for c in self.task.containers.iter_mut() {
                        if self.plan.images.get(&c.name).map(|i| &i.reference) == Some(&reference) {
                            c.reason = Some(reason.clone());
                        }
                    }
                    failure.get_or_insert(reason);
                }
            }
        }
        self.task.pull_stopped_at = Some(now_rfc3339());
        if let Some(reason) = failure {
            return Err(StopCause::failed(reason));
        }

        if let Some(image) = pause_image {
            let mut spec = spec::pause_spec(self.def(), &self.names, image, self.network.clone());
            spec.cgroup_parent = self.cgroup.clone();
            let id = runtime.create_container(&spec).await.map_err(|e| {
                StopCause::failed(format!("cannot create the awsvpc namespace: {e}"))
            })?;
            self.pause = Some(id.clone());
            runtime.start_container(&id).await.map_err(|e| {
                StopCause::failed(format!("cannot start the awsvpc namespace: {e}"))
            })?;
        }
        Ok(())
    }

    fn task_network(&self) -> TaskNetwork {
        match spec::network_mode(self.def()) {
            NetworkMode::Bridge => TaskNetwork::Bridge(self.network.clone()),
            NetworkMode::Awsvpc => TaskNetwork::Shared(self.pause.clone().unwrap_or_default()),
            NetworkMode::Host => TaskNetwork::Host,
            NetworkMode::None => TaskNetwork::None,
        }
    }

    /// Starts every container once its dependencies allow it; returns when all have been
    /// started (or were given up on without stopping the task).
    async fn start_containers(&mut self) -> Result<(), StopCause> {
        let began = Instant::now();
        let mut waiting: Vec<String> = self
            .def()
            .container_definitions
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let mut statuses: HashMap<String, ContainerStatus> = HashMap::new();
        let mut tick = tokio::time::interval(STARTING_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(cause) = self.stop_requested() {
                return Err(cause);
            }
            // Decide for every waiting container.
            let mut ready = Vec::new();
            let mut impossible = Vec::new();
            for name in &waiting {
                let c = self.container_def(name).expect("known container");
                match self.dependencies_met(c, &statuses) {
                    Dependencies::Met => ready.push(name.clone()),
                    Dependencies::Never(why) => impossible.push((name.clone(), why)),
                    Dependencies::Waiting(why) => {
                        if let Some(limit) = c.start_timeout.filter(|t| *t > 0) {
                            if began.elapsed() >= Duration::from_secs(limit as u64) {
                                impossible.push((
                                    name.clone(),
                                    format!("{why} within its startTimeout of {limit}s"),
                                ));
                            }
                        }
                    }
                }
            }
            for (name, why) in impossible {
                waiting.retain(|w| *w != name);
                let essential = self.container_def(&name).is_some_and(|c| c.is_essential());
                let reason = format!("DependencyConditionNotMet: {why}");
                let c = self.container(&name);
                c.last_status = task_status::STOPPED.into();
                c.reason = Some(reason.clone());
                self.done.insert(name.clone());
                self.publish().await;
                if essential {
                    return Err(StopCause::failed(format!("container {name}: {reason}")));
                }
            }
            if !ready.is_empty() {
                waiting.retain(|w| !ready.contains(w));
                let starts: Vec<_> = ready
                    .iter()
                    .map(|name| create_and_start(self.ctx.runtime.clone(), self.build_spec(name)))
                    .collect();
                let results = futures_util::future::join_all(starts).await;
                let mut failed = None;
                for (name, result) in ready.iter().zip(results) {
                    match result {
                        Ok(id) => {
                            self.ids.insert(name.clone(), id.clone());
                            let c = self.container(name);
                            c.runtime_id = Some(id.clone());
                            c.last_status = task_status::RUNNING.into();
                            self.watch_container(name, &id);
                        }
                        Err((id, e)) => {
                            if let Some(id) = id {
                                self.ids.insert(name.clone(), id.clone());
                                self.container(name).runtime_id = Some(id);
                            }
                            let reason = format!("CannotStartContainerError: {e}");
                            let essential =
                                self.container_def(name).is_some_and(|c| c.is_essential());
                            let c = self.container(name);
                            c.last_status = task_status::STOPPED.into();
                            c.reason = Some(reason.clone());
                            self.done.insert(name.clone());
                            if essential && failed.is_none() {
                                failed = Some(format!("container {name}: {reason}"));
                            }
                        }
                    }
                }
                self.refresh_bindings().await;
                self.publish().await;
                if let Some(reason) = failed {
                    return Err(StopCause::failed(reason));
                }
                continue;
            }
            if waiting.is_empty() {
                self.task.last_status = task_status::RUNNING.into();
                self.task.started_at = Some(now_rfc3339());
                self.publish().await;
                return Ok(());
            }
            // Wait for something to change: an exit, health, a stop, time.
            tokio::select! {
                Some(name) = self.exits.next() => {
                    if let Some(cause) = self.container_exited(&name).await {
                        return Err(cause);
                    }
                }
                _ = tick.tick() => {}
                Ok(()) = self.stop.changed() => {}
            }
            for name in self.ids.keys().cloned().collect::<Vec<_>>() {
                if self.done.contains(&name) {
                    continue;
                }
                let id = self.ids[&name].clone();
                if let Ok(status) = self.ctx.runtime.inspect_container(&id).await {
                    let health = health_name(status.health);
                    if self.container(&name).health_status != health {
                        self.container(&name).health_status = health.into();
                        self.publish().await;
                    }
                    statuses.insert(name, status);
                }
            }
        }
    }

    fn dependencies_met(
        &self,
        c: &ContainerDefinition,
        statuses: &HashMap<String, ContainerStatus>,
    ) -> Dependencies {
        // Links and volumesFrom need the other container to exist and run: START.
        let mut conditions: Vec<(String, DependencyCondition)> = c
            .depends_on
            .iter()
            .flatten()
            .filter_map(|d| {
                Some((
                    d.container_name.clone(),
                    DependencyCondition::parse(&d.condition)?,
                ))
            })
            .collect();
        for other in c.start_dependencies() {
            if !conditions.iter().any(|(n, _)| n == other) {
                conditions.push((other.to_string(), DependencyCondition::Start));
            }
        }
        for (name, condition) in conditions {
            let Some(record) = self.container_ref(&name) else {
                continue;
            };
            let started = self.ids.contains_key(&name) && record.reason.is_none()
                || record.exit_code.is_some();
            let exited = self.done.contains(&name);
            let cond = condition_name(condition);
            match condition {
                DependencyCondition::Start => {
                    if exited && !started {
                        return Dependencies::Never(format!("{name} never started ({cond})"));
                    }
                    if !started {
                        return Dependencies::Waiting(format!("{name} did not start"));
                    }
                }
                DependencyCondition::Complete => {
                    if !exited {
                        return Dependencies::Waiting(format!("{name} did not complete"));
                    }
                    if record.exit_code.is_none() {
                        return Dependencies::Never(format!("{name} never ran ({cond})"));
                    }
                }
                DependencyCondition::Success => {
                    if !exited {
                        return Dependencies::Waiting(format!("{name} did not exit"));
                    }
                    match record.exit_code {
                        Some(0) => {}
                        Some(code) => {
                            return Dependencies::Never(format!(
                                "{name} exited with code {code} ({cond} needs 0)"
                            ))
                        }
                        None => return Dependencies::Never(format!("{name} never ran ({cond})")),
                    }
                }
                DependencyCondition::Healthy => {
                    if exited {
                        return Dependencies::Never(format!(
                            "{name} stopped before it was healthy ({cond})"
                        ));
                    }
                    let healthy = statuses
                        .get(&name)
                        .is_some_and(|s| s.health == Some(Health::Healthy));
                    if !healthy {
                        return Dependencies::Waiting(format!("{name} did not become healthy"));
                    }
                }
            }
        }
        Dependencies::Met
    }

    fn build_spec(&self, name: &str) -> crate::runtime::ContainerSpec {
        let mut spec = self.spec_of(name);
        spec.secret_env = self.secret_env.get(name).cloned().unwrap_or_default();
        if let Some(endpoint) = self.ctx.endpoint.as_ref() {
            if spec::network_mode(self.def()) != NetworkMode::None {
                let role = self.task_role().is_some();
                for (key, value) in endpoint.env(self.task.id(), name, role) {
                    let prefix = format!("{key}=");
                    if !spec.env.iter().any(|kv| kv.starts_with(&prefix)) {
                        spec.env.push(format!("{key}={value}"));
                    }
                }
            }
        }
        spec
    }

    /// The task role (RunTask's override, else the definition's), when there is one.
    fn task_role(&self) -> Option<&str> {
        self.plan
            .overrides
            .task_role_arn
            .as_deref()
            .or(self.def().task_role_arn.as_deref())
            .filter(|r| !r.trim().is_empty())
    }

    fn spec_of(&self, name: &str) -> crate::runtime::ContainerSpec {
        let c = self.container_def(name).expect("known container");
        let image = self
            .plan
            .images
            .get(name)
            .map(|i| i.reference.clone())
            .unwrap_or_else(|| c.image.clone());
        let network = self.task_network();
        spec::container_spec(
            c,
            &SpecInput {
                def: self.def(),
                names: &self.names,
                image,
                env: self.plan.env.get(name).cloned().unwrap_or_default(),
                over: spec::container_override(&self.plan.overrides, name),
                network: &network,
                volumes: &self.volumes,
                task_memory_mib: self.task_limits().memory_bytes.map(|b| b >> 20),
                cgroup_parent: self.cgroup.clone(),
            },
        )
    }

    /// Copies the container's output and notices its exit.
    fn watch_container(&mut self, name: &str, id: &str) {
        let file = logs::log_file(&self.ctx.task_dir(self.task.id()), name);
        self.log_copies.push(tokio::spawn(logs::copy(
            self.ctx.runtime.clone(),
            id.to_string(),
            file,
        )));
        let runtime = self.ctx.runtime.clone();
        let (name, id) = (name.to_string(), id.to_string());
        self.exits.push(Box::pin(async move {
            loop {
                match runtime.wait_container(&id).await {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => return name,
                    Err(e) => {
                        tracing::warn!(container = %id, "waiting for the container failed: {e}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }));
    }

    /// Records an exit; answers the cause when it stops the task.
    async fn container_exited(&mut self, name: &str) -> Option<StopCause> {
        let id = self.ids.get(name).cloned()?;
        self.record_exit(name, &id).await;
        self.publish().await;
        let essential = self.container_def(name).is_some_and(|c| c.is_essential());
        if essential {
            self.task.essential_container_exited = Some(name.to_string());
            return Some(StopCause {
                code: stop_code::ESSENTIAL_CONTAINER_EXITED,
                reason: format!("Essential container in task exited ({name})"),
            });
        }
        None
    }

    async fn record_exit(&mut self, name: &str, id: &str) {
        let mut status = self.ctx.runtime.inspect_container(id).await;
        // A kill (137) of a container nobody stopped may be the OOM killer's: the engine
        // hears of that from a separate event, which can land a moment after the exit (over
        // 2 s seen on a loaded CI machine, over 4 s on one running two builds besides). Up
        // to 10 s is waited for it: the exit itself is published at once.
        if !self.task.desired_status.eq(task_status::STOPPED) {
            // Watchers (a service replacing the task) hear of the exit at once; why it ended
            // follows once known.
            if matches!(&status, Ok(s) if s.exit_code == Some(137) && !s.oom_killed) {
                let c = self.container(name);
                c.last_status = task_status::STOPPED.into();
                c.exit_code = Some(137);
                self.publish().await;
            }
            for _ in 0..100 {
                match &status {
                    Ok(s) if s.exit_code == Some(137) && !s.oom_killed => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        status = self.ctx.runtime.inspect_container(id).await;
                    }
                    _ => break,
                }
            }
        }
        self.done.insert(name.to_string());
        let c = self.container(name);
        c.last_status = task_status::STOPPED.into();
        let why = match &status {
            Ok(s) if s.oom_killed => "oom_killed",
            Ok(s) if s.exit_code == Some(0) => "exited_0",
            Ok(s) if s.exit_code.is_some() => "exited_nonzero",
            Ok(_) => "stopped",
            Err(RuntimeError::NotFound(_)) => "removed",
            Err(_) => "unknown",
        };
        crate::metrics::METRICS.container_exit(why);
        match status {
            Ok(s) => {
                if s.state == RunState::Exited {
                    c.exit_code = s.exit_code;
                }
                if s.oom_killed {
                    c.reason = Some(OOM_REASON.into());
                } else if let Some(err) = s.error.filter(|e| !e.is_empty()) {
                    c.reason.get_or_insert(err);
                }
                if s.health.is_some() {
                    c.health_status = health_name(s.health).into();
                }
            }
            Err(RuntimeError::NotFound(_)) => {
                c.reason
                    .get_or_insert_with(|| "the container was removed outside ecrl".into());
            }
            Err(e) => {
                c.reason
                    .get_or_insert_with(|| format!("cannot inspect: {e}"));
            }
        }
    }

    async fn refresh_bindings(&mut self) {
        let mode = spec::network_mode(self.def());
        let names: Vec<String> = self.ids.keys().cloned().collect();
        let pause_ports = match (&self.pause, mode) {
            (Some(p), NetworkMode::Awsvpc) => self
                .ctx
                .runtime
                .inspect_container(p)
                .await
                .map(|s| s.ports)
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        for name in names {
            let Some(def) = self.container_def(&name) else {
                continue;
            };
            let mappings: Vec<(u16, String)> = def
                .port_mappings
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some((
                        u16::try_from(p.container_port?).ok()?,
                        p.protocol.clone().unwrap_or_else(|| "tcp".into()),
                    ))
                })
                .collect();
            if mappings.is_empty() {
                continue;
            }
            let bindings: Vec<NetworkBinding> = match mode {
                NetworkMode::Host => mappings
                    .iter()
                    .map(|(port, proto)| NetworkBinding {
                        bind_ip: "0.0.0.0".into(),
                        container_port: *port,
                        host_port: *port,
                        protocol: proto.clone(),
                    })
                    .collect(),
                NetworkMode::None => Vec::new(),
                NetworkMode::Awsvpc => bindings_of(&pause_ports, &mappings),
                NetworkMode::Bridge => {
                    let id = self.ids[&name].clone();
                    match self.ctx.runtime.inspect_container(&id).await {
                        Ok(s) => bindings_of(&s.ports, &mappings),
                        Err(_) => Vec::new(),
                    }
                }
            };
            self.container(&name).network_bindings = bindings;
        }
    }

    // --- RUNNING ---------------------------------------------------------------------------

    async fn supervise(&mut self) -> StopCause {
        let has_health = self
            .def()
            .container_definitions
            .iter()
            .any(|c| c.health_check.is_some());
        let mut tick = tokio::time::interval(RUNNING_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(cause) = self.stop_requested() {
                return cause;
            }
            if self.exits.is_empty() {
                // Nothing runs any more (only non-essential containers were left).
                return StopCause {
                    code: stop_code::ESSENTIAL_CONTAINER_EXITED,
                    reason: "every container of the task has exited".into(),
                };
            }
            tokio::select! {
                Some(name) = self.exits.next() => {
                    if let Some(cause) = self.container_exited(&name).await {
                        return cause;
                    }
                }
                _ = tick.tick(), if has_health => self.refresh_health().await,
                Ok(()) = self.stop.changed() => {}
            }
        }
    }

    async fn refresh_health(&mut self) {
        let mut changed = false;
        for (name, id) in self.ids.clone() {
            if self.done.contains(&name)
                || self
                    .container_def(&name)
                    .is_none_or(|c| c.health_check.is_none())
            {
                continue;
            }
            if let Ok(s) = self.ctx.runtime.inspect_container(&id).await {
                let health = health_name(s.health);
                if self.container(&name).health_status != health {
                    self.container(&name).health_status = health.into();
                    changed = true;
                }
            }
        }
        if changed {
            self.publish().await;
        }
    }

    /// Takes over a task a previous daemon ran: its containers as found by label.
    async fn adopt(&mut self, ids: BTreeMap<String, String>, pause: Option<String>) {
        self.pause = pause;
        // Made under this name if it was made at all; removing one that is not there is fine.
        if !self.task_limits().is_empty() {
            self.cgroup = Some(crate::runtime::cgroup::Hierarchy::parent(self.task.id()));
        }
        if spec::network_mode(self.def()) == NetworkMode::Awsvpc
            || (spec::network_mode(self.def()) == NetworkMode::Bridge
                && spec::bridge_needs_network(self.def()))
        {
            self.network = Some(self.names.network());
        }
        let names: Vec<String> = self
            .task
            .containers
            .iter()
            .map(|c| c.name.clone())
            .collect();
        for name in names {
            let recorded_done = self.container(&name).last_status == task_status::STOPPED;
            match ids.get(&name) {
                Some(id) => {
                    self.ids.insert(name.clone(), id.clone());
                    self.container(&name).runtime_id = Some(id.clone());
                    if recorded_done {
                        self.done.insert(name.clone());
                    } else {
                        // Running, or exited while nobody watched: the watch finds out.
                        self.watch_container(&name, id);
                    }
                }
                None if recorded_done => {
                    self.done.insert(name.clone());
                }
                None => {
                    self.done.insert(name.clone());
                    let c = self.container(&name);
                    c.last_status = task_status::STOPPED.into();
                    c.reason = Some("the container vanished while ecrld was not running".into());
                    let essential = self.container_def(&name).is_some_and(|c| c.is_essential());
                    if essential && self.task.stop_code.is_none() {
                        self.task.essential_container_exited = Some(name.clone());
                        self.task.stop_code = Some(stop_code::ESSENTIAL_CONTAINER_EXITED.into());
                        self.task.stopped_reason = Some(format!(
                            "Essential container {name} vanished while ecrld was not running"
                        ));
                    }
                }
            }
        }
        self.publish().await;
    }

    // --- DEPROVISIONING and STOPPED --------------------------------------------------------

    async fn deprovision(mut self, cause: StopCause) {
        self.task.desired_status = task_status::STOPPED.into();
        self.task.last_status = task_status::DEPROVISIONING.into();
        self.task.stopping_at.get_or_insert_with(now_rfc3339);
        if self.task.stop_code.is_none() {
            self.task.stop_code = Some(cause.code.into());
            self.task.stopped_reason = Some(cause.reason);
        }
        self.publish().await;

        // Stop in reverse dependency order, each level together.
        let levels = self.def().start_order().unwrap_or_else(|_| {
            vec![self
                .def()
                .container_definitions
                .iter()
                .map(|c| c.name.clone())
                .collect()]
        });
        let runtime = self.ctx.runtime.clone();
        for level in levels.iter().rev() {
            let stops = level.iter().filter_map(|name| {
                if self.done.contains(name) {
                    return None;
                }
                let id = self.ids.get(name)?.clone();
                let timeout = Duration::from_secs(
                    self.container_def(name)
                        .map_or(ecrl::taskdef::DEFAULT_STOP_TIMEOUT, |c| {
                            c.stop_timeout_or_default()
                        }),
                );
                let runtime = runtime.clone();
                Some(async move {
                    if let Err(e) = runtime.stop_container(&id, timeout).await {
                        tracing::warn!(container = %id, "stop failed: {e}");
                    }
                })
            });
            futures_util::future::join_all(stops).await;
        }
        for (name, id) in self.ids.clone() {
            if !self.done.contains(&name) {
                self.record_exit(&name, &id).await;
            }
        }
        for c in self.task.containers.iter_mut() {
            c.last_status = task_status::STOPPED.into();
        }
        self.publish().await;

        // The log copies end with their containers; give them a moment to write the rest.
        let copies = std::mem::take(&mut self.log_copies);
        let _ = tokio::time::timeout(LOG_DRAIN, futures_util::future::join_all(copies)).await;

        // Leave nothing behind.
        let mut leftovers = Vec::new();
        let removals = self.ids.values().chain(self.pause.iter()).map(|id| {
            let runtime = runtime.clone();
            let id = id.clone();
            async move {
                runtime
                    .remove_container(&id)
                    .await
                    .err()
                    .map(|e| format!("container {id}: {e}"))
            }
        });
        leftovers.extend(
            futures_util::future::join_all(removals)
                .await
                .into_iter()
                .flatten(),
        );
        if let Some(network) = &self.network {
            if let Err(e) = runtime.remove_network(network).await {
                leftovers.push(format!("network {network}: {e}"));
            }
        }
        if self.cgroup.is_some() {
            if let Err(e) = runtime.remove_task_cgroup(self.task.id()).await {
                leftovers.push(e.to_string());
            }
        }
        for source in self.volumes.values() {
            if let VolumeSource::Engine {
                name,
                task_scoped: true,
                ..
            } = source
            {
                if let Err(e) = runtime.remove_volume(name).await {
                    leftovers.push(format!("volume {name}: {e}"));
                }
            }
        }
        if !leftovers.is_empty() {
            tracing::warn!(
                task = self.task.id(),
                "could not remove everything the task created: {}",
                leftovers.join("; ")
            );
        }
        self.task.last_status = task_status::STOPPED.into();
        self.task.stopped_at = Some(now_rfc3339());
        self.publish().await;
    }
}

/// Creates and starts one container: its id, or the error (with the id when it was created).
async fn create_and_start(
    runtime: Arc<dyn crate::runtime::Runtime>,
    spec: crate::runtime::ContainerSpec,
) -> Result<String, (Option<String>, String)> {
    let id = runtime
        .create_container(&spec)
        .await
        .map_err(|e| (None, e.to_string()))?;
    runtime
        .start_container(&id)
        .await
        .map_err(|e| (Some(id.clone()), e.to_string()))?;
    Ok(id)
}

enum Dependencies {
    Met,
    Waiting(String),
    Never(String),
}

fn condition_name(c: DependencyCondition) -> &'static str {
    match c {
        DependencyCondition::Start => "START",
        DependencyCondition::Complete => "COMPLETE",
        DependencyCondition::Success => "SUCCESS",
        DependencyCondition::Healthy => "HEALTHY",
    }
}

fn health_name(h: Option<Health>) -> &'static str {
    match h {
        Some(Health::Healthy) => "HEALTHY",
        Some(Health::Unhealthy) => "UNHEALTHY",
        Some(Health::Starting) | None => "UNKNOWN",
    }
}

fn stop_code_static(code: Option<&str>) -> &'static str {
    match code {
        Some(stop_code::USER_INITIATED) => stop_code::USER_INITIATED,
        Some(stop_code::TASK_FAILED_TO_START) => stop_code::TASK_FAILED_TO_START,
        _ => stop_code::ESSENTIAL_CONTAINER_EXITED,
    }
}

/// ECS: HEALTHY when every essential container with a health check is healthy, UNHEALTHY
/// when one is unhealthy, UNKNOWN otherwise.
pub fn task_health(task: &Task) -> String {
    let checked: Vec<&Container> = task
        .containers
        .iter()
        .filter(|c| c.essential && c.health_status != "UNKNOWN")
        .collect();
    if checked.iter().any(|c| c.health_status == "UNHEALTHY") {
        "UNHEALTHY".into()
    } else if !checked.is_empty() && checked.iter().all(|c| c.health_status == "HEALTHY") {
        "HEALTHY".into()
    } else {
        "UNKNOWN".into()
    }
}

fn bindings_of(
    ports: &[crate::runtime::PortBinding],
    mappings: &[(u16, String)],
) -> Vec<NetworkBinding> {
    ports
        .iter()
        .filter(|p| {
            mappings
                .iter()
                .any(|(port, proto)| *port == p.container_port && proto == p.protocol.as_str())
        })
        .map(|p| NetworkBinding {
            bind_ip: if p.host_ip.is_empty() {
                "0.0.0.0".into()
            } else {
                p.host_ip.clone()
            },
            container_port: p.container_port,
            host_port: p.host_port,
            protocol: p.protocol.as_str().into(),
        })
        .collect()
}

/// Why a pull failed, naming the image once: the runtime's messages usually name it already.
fn pull_error(reference: &str, e: &RuntimeError) -> String {
    let message = e.to_string();
    if message.contains(reference) {
        return message;
    }
    match e {
        RuntimeError::NotFound(_) => format!("image {reference} not found: {message}"),
        _ => format!("cannot pull {reference}: {message}"),
    }
}
