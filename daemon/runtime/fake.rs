//! An engine in memory for unit tests of the task state machine, scripted by each
//! container's `spec.command`:
//!
//! | command                       | once started                                            |
//! |-------------------------------|---------------------------------------------------------|
//! | `["exit", "N"]`               | exits with N a few ms later                              |
//! | `["exit-after", "MS", "N"]`   | exits with N after MS ms                                 |
//! | `["sleep"]` (or anything else)| runs until stopped; a stop ends it with 143 (SIGTERM)    |
//! | `["sleep-ignore-term"]`       | a stop ends it with 137 (SIGKILL), after the timeout     |
//! | `["oom"]`                     | exits with 137 a few ms later, `oom_killed`              |
//!
//! With `spec.health`, the test `["CMD", "true"]` makes it Healthy once started,
//! `["CMD", "false"]` Unhealthy, anything else leaves it Starting ([`FakeRuntime::set_health`]
//! moves it on).
//!
//! It behaves as the engine where a supervisor could get it wrong: `create` needs the image
//! (see `ensure_image`) and a unique name; a user network must exist; `container:ID` needs
//! that container running at start; a network with running containers, or a volume a
//! container mounts, cannot be removed. An image whose name contains `missing` cannot be
//! pulled; a ulimit with a hard limit above 20000 fails the start, as on the CI machines.
//!
//! Time is tokio's: with a paused clock (tokio's test-util) the scripts run without waiting.
//! Every call is recorded as a line ("create NAME", "stop NAME 30s", ...): see
//! [`FakeRuntime::calls`].

use super::{
    ContainerSpec, ContainerStatus, ContainerSummary, Health, MountSpec, NetworkAttachment,
    PortBinding, RegistryAuth, RtResult, RunState, Runtime, RuntimeError, RuntimeInfo, TaskCgroup,
    TaskLimits, VolumeSpec,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// The reference [`FakeRuntime::pause_image`] answers.
pub const PAUSE_IMAGE: &str = "ecrl/pause:fake";

/// How long "right away" is for the `exit` and `oom` scripts.
const QUICK: Duration = Duration::from_millis(5);

/// The host's hard limit for every ulimit, as on the CI machines (nofile there).
const HOST_HARD_LIMIT: i64 = 20000;

#[derive(Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    calls: Vec<String>,
    /// Counters for ids and ephemeral ports.
    next_id: u64,
    next_port: u16,
    /// By id; ids grow, so this is creation order.
    containers: BTreeMap<String, Container>,
    /// By name.
    networks: BTreeMap<String, Network>,
    volumes: BTreeMap<String, VolumeSpec>,
    images: BTreeSet<String>,
}

struct Network {
    id: String,
    labels: BTreeMap<String, String>,
}

struct Container {
    id: String,
    spec: ContainerSpec,
    state: RunState,
    exit_code: Option<i64>,
    oom_killed: bool,
    error: Option<String>,
    health: Option<Health>,
    ports: Vec<PortBinding>,
    /// Counts starts and stops: a scripted exit is for the run that scheduled it only.
    run: u64,
    /// True once the container is not running (or gone: the sender is dropped).
    exited: watch::Sender<bool>,
}

impl Container {
    fn exit(&mut self, code: i64, oom_killed: bool) {
        if self.state != RunState::Running {
            return;
        }
        self.state = RunState::Exited;
        self.exit_code = Some(code);
        self.oom_killed = oom_killed;
        self.run += 1;
        self.exited.send_replace(true);
    }

    fn script(&self) -> Vec<&str> {
        self.spec
            .command
            .iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A test that panicked while holding the lock has already failed; keep answering.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    /// A container by id or name, as the engine finds them.
    fn find(&self, id_or_name: &str) -> Option<&Container> {
        self.containers
            .get(id_or_name)
            .or_else(|| self.containers.values().find(|c| c.spec.name == id_or_name))
    }

    fn find_mut(&mut self, id_or_name: &str) -> Option<&mut Container> {
        let id = self.find(id_or_name)?.id.clone();
        self.containers.get_mut(&id)
    }

    /// The name for the call log: the container's when known.
    fn name_of(&self, id_or_name: &str) -> String {
        self.find(id_or_name)
            .map(|c| c.spec.name.clone())
            .unwrap_or_else(|| id_or_name.to_string())
    }

    fn no_such_container(id_or_name: &str) -> RuntimeError {
        RuntimeError::NotFound(format!("No such container: {id_or_name}"))
    }
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self, call: String) {
        lock(&self.state).calls.push(call);
    }

    /// Every call so far, in order: "pull IMAGE", "create NAME", "start NAME",
    /// "stop NAME 30s", "remove NAME", "network create X", "network remove X",
    /// "volume create X", "volume remove X", "load image", "export IMAGE".
    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }

    /// The containers that exist (not removed), in creation order.
    pub fn container_names(&self) -> Vec<String> {
        lock(&self.state)
            .containers
            .values()
            .map(|c| c.spec.name.clone())
            .collect()
    }

    /// The networks that exist, by name.
    pub fn network_names(&self) -> Vec<String> {
        lock(&self.state).networks.keys().cloned().collect()
    }

    /// The volumes that exist, by name.
    pub fn volume_names(&self) -> Vec<String> {
        lock(&self.state).volumes.keys().cloned().collect()
    }

    /// The labels a network was created with.
    pub fn network_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        lock(&self.state)
            .networks
            .get(name)
            .map(|n| n.labels.clone())
    }

    /// The spec a container (by id or name) was created from.
    pub fn spec(&self, id_or_name: &str) -> Option<ContainerSpec> {
        lock(&self.state).find(id_or_name).map(|c| c.spec.clone())
    }

    /// Makes a running container exit with `code`, as a crash would.
    pub fn kill_externally(&self, name: &str, code: i64) {
        if let Some(c) = lock(&self.state).find_mut(name) {
            c.exit(code, false);
        }
    }

    /// Removes a container behind the supervisor's back: its waiters return, and it is
    /// NotFound from then on.
    pub fn vanish(&self, name: &str) {
        let mut state = lock(&self.state);
        if let Some(id) = state.find(name).map(|c| c.id.clone()) {
            // Dropping the container drops its sender: waiters wake up.
            state.containers.remove(&id);
        }
    }

    /// Moves a container's health on (one with a health check).
    pub fn set_health(&self, name: &str, health: Health) {
        if let Some(c) = lock(&self.state).find_mut(name) {
            if c.spec.health.is_some() {
                c.health = Some(health);
            }
        }
    }

    /// Ends the container's current run with `code` after `after`, unless it was stopped
    /// (or restarted) meanwhile.
    fn exit_later(&self, id: &str, run: u64, after: Duration, code: i64, oom_killed: bool) {
        let state = Arc::clone(&self.state);
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let mut state = lock(&state);
            if let Some(c) = state.containers.get_mut(&id) {
                if c.run == run {
                    c.exit(code, oom_killed);
                }
            }
        });
    }
}

fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn bad_script(name: &str, script: &[&str]) -> RuntimeError {
    RuntimeError::Failed(format!(
        "fake runtime: container {name} has a script it does not understand: {script:?}"
    ))
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn info(&self) -> RtResult<RuntimeInfo> {
        Ok(RuntimeInfo {
            name: "Fake Engine 1.0".to_string(),
            api_version: "1.41".to_string(),
            task_cgroups: Ok("fake".to_string()),
        })
    }

    async fn ensure_image(&self, reference: &str, _auth: Option<&RegistryAuth>) -> RtResult<()> {
        let mut state = lock(&self.state);
        if state.images.contains(reference) {
            return Ok(());
        }
        state.calls.push(format!("pull {reference}"));
        if reference.contains("missing") {
            return Err(RuntimeError::NotFound(format!(
                "image {reference} not found: manifest unknown"
            )));
        }
        state.images.insert(reference.to_string());
        Ok(())
    }

    async fn pause_image(&self) -> RtResult<String> {
        lock(&self.state).images.insert(PAUSE_IMAGE.to_string());
        Ok(PAUSE_IMAGE.to_string())
    }

    async fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> RtResult<String> {
        let mut state = lock(&self.state);
        state.calls.push(format!("network create {name}"));
        if state.networks.contains_key(name) {
            return Err(RuntimeError::Failed(format!(
                "creating network {name}: a network of that name already exists"
            )));
        }
        state.next_id += 1;
        let id = format!("{:064x}", state.next_id);
        state.networks.insert(
            name.to_string(),
            Network {
                id: id.clone(),
                labels: labels.clone(),
            },
        );
        Ok(id)
    }

    async fn remove_network(&self, id: &str) -> RtResult<()> {
        let mut state = lock(&self.state);
        let name = state
            .networks
            .iter()
            .find(|(name, n)| n.id == id || name.as_str() == id)
            .map(|(name, _)| name.clone());
        state
            .calls
            .push(format!("network remove {}", name.as_deref().unwrap_or(id)));
        let Some(name) = name else {
            return Ok(());
        };
        let network_id = state.networks[&name].id.clone();
        let attached: Vec<String> = state
            .containers
            .values()
            .filter(|c| c.state == RunState::Running)
            .filter(|c| {
                matches!(&c.spec.network, NetworkAttachment::Network { network, .. }
                    if *network == name || *network == network_id)
            })
            .map(|c| c.spec.name.clone())
            .collect();
        if !attached.is_empty() {
            return Err(RuntimeError::Failed(format!(
                "removing network {name}: it has active endpoints ({})",
                attached.join(", ")
            )));
        }
        state.networks.remove(&name);
        Ok(())
    }

    async fn volume_exists(&self, name: &str) -> RtResult<bool> {
        Ok(lock(&self.state).volumes.contains_key(name))
    }

    async fn create_volume(&self, spec: &VolumeSpec) -> RtResult<()> {
        let mut state = lock(&self.state);
        state.calls.push(format!("volume create {}", spec.name));
        // Like the engine: creating a volume that exists is not an error.
        state
            .volumes
            .entry(spec.name.clone())
            .or_insert_with(|| spec.clone());
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> RtResult<()> {
        let mut state = lock(&self.state);
        state.calls.push(format!("volume remove {name}"));
        let users: Vec<String> = state
            .containers
            .values()
            .filter(|c| {
                c.spec
                    .mounts
                    .iter()
                    .any(|m| matches!(m, MountSpec::Volume { name: v, .. } if v.as_str() == name))
            })
            .map(|c| c.spec.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(RuntimeError::Failed(format!(
                "removing volume {name}: volume is in use ({})",
                users.join(", ")
            )));
        }
        state.volumes.remove(name);
        Ok(())
    }

    async fn task_cgroup(&self, task_id: &str, limits: &TaskLimits) -> TaskCgroup {
        lock(&self.state).calls.push(format!(
            "cgroup create {task_id} memory={:?} cpu={:?}",
            limits.memory_bytes, limits.cpu_units
        ));
        TaskCgroup::Parent(format!("/ecrl/{task_id}"))
    }

    async fn remove_task_cgroup(&self, task_id: &str) -> RtResult<()> {
        lock(&self.state)
            .calls
            .push(format!("cgroup remove {task_id}"));
        Ok(())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> RtResult<String> {
        let mut state = lock(&self.state);
        state.calls.push(format!("create {}", spec.name));
        if state.find(&spec.name).is_some() {
            return Err(RuntimeError::Failed(format!(
                "cannot create container {0}: Conflict. The container name \"/{0}\" is already \
                 in use",
                spec.name
            )));
        }
        if !state.images.contains(&spec.image) {
            return Err(RuntimeError::NotFound(format!(
                "No such image: {}",
                spec.image
            )));
        }
        if let NetworkAttachment::Network { network, .. } = &spec.network {
            if !state
                .networks
                .iter()
                .any(|(name, n)| name == network || n.id == *network)
            {
                return Err(RuntimeError::NotFound(format!(
                    "network {network} not found"
                )));
            }
        }
        state.next_id += 1;
        let id = format!("{:064x}", state.next_id);
        let (exited, _) = watch::channel(false);
        state.containers.insert(
            id.clone(),
            Container {
                id: id.clone(),
                spec: spec.clone(),
                state: RunState::Created,
                exit_code: None,
                oom_killed: false,
                error: None,
                health: spec.health.as_ref().map(|_| Health::Starting),
                ports: Vec::new(),
                run: 0,
                exited,
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> RtResult<()> {
        let (container_id, run, script) = {
            let mut guard = lock(&self.state);
            let state = &mut *guard;
            let name = state.name_of(id);
            state.calls.push(format!("start {name}"));
            let Some(c) = state.find(id) else {
                return Err(State::no_such_container(id));
            };
            if c.state == RunState::Running {
                return Ok(());
            }
            if let NetworkAttachment::Container(other) = &c.spec.network {
                let running = state
                    .find(other)
                    .is_some_and(|o| o.state == RunState::Running);
                if !running {
                    let message = format!(
                        "cannot start container {name}: cannot join network of a non running \
                         container: {other}"
                    );
                    if let Some(c) = state.find_mut(id) {
                        c.error = Some(message.clone());
                    }
                    return Err(RuntimeError::Failed(message));
                }
            }
            if let Some(u) = c.spec.ulimits.iter().find(|u| u.hard > HOST_HARD_LIMIT) {
                let message = format!(
                    "cannot start container {name}: ulimit {} {}:{} is above what this host \
                     allows (the engine's hard limit is lower and it may not raise it: error \
                     setting rlimit: operation not permitted); lower the ulimit",
                    u.name, u.soft, u.hard
                );
                if let Some(c) = state.find_mut(id) {
                    c.error = Some(message.clone());
                }
                return Err(RuntimeError::Failed(message));
            }
            let mut next_port = state.next_port;
            let mut ports = Vec::new();
            for p in &c.spec.ports {
                let host_port = match p.host_port {
                    Some(port) => port,
                    None => {
                        next_port += 1;
                        40000 + next_port
                    }
                };
                ports.push(PortBinding {
                    container_port: p.container_port,
                    protocol: p.protocol,
                    host_ip: "0.0.0.0".to_string(),
                    host_port,
                });
            }
            state.next_port = next_port;
            let Some(c) = state.find_mut(id) else {
                return Err(State::no_such_container(id));
            };
            c.state = RunState::Running;
            c.exit_code = None;
            c.oom_killed = false;
            c.error = None;
            c.ports = ports;
            c.run += 1;
            c.exited.send_replace(false);
            c.health = c.spec.health.as_ref().map(|h| {
                let test: Vec<&str> = h.test.iter().map(String::as_str).collect();
                match test.as_slice() {
                    ["CMD", "true"] => Health::Healthy,
                    ["CMD", "false"] => Health::Unhealthy,
                    _ => Health::Starting,
                }
            });
            let script: Vec<String> = c.script().iter().map(|s| s.to_string()).collect();
            (c.id.clone(), c.run, script)
        };
        let script: Vec<&str> = script.iter().map(String::as_str).collect();
        match script.as_slice() {
            ["exit", code] => {
                let code = code.parse().map_err(|_| bad_script(id, &script))?;
                self.exit_later(&container_id, run, QUICK, code, false);
            }
            ["exit-after", ms, code] => {
                let ms = ms.parse().map_err(|_| bad_script(id, &script))?;
                let code = code.parse().map_err(|_| bad_script(id, &script))?;
                self.exit_later(&container_id, run, Duration::from_millis(ms), code, false);
            }
            ["oom"] => self.exit_later(&container_id, run, QUICK, 137, true),
            _ => {}
        }
        Ok(())
    }

    async fn inspect_container(&self, id: &str) -> RtResult<ContainerStatus> {
        let state = lock(&self.state);
        let c = state.find(id).ok_or_else(|| State::no_such_container(id))?;
        Ok(ContainerStatus {
            id: c.id.clone(),
            state: c.state,
            exit_code: c.exit_code,
            oom_killed: c.oom_killed,
            error: c.error.clone(),
            health: c.health,
            image_id: format!("sha256:{:064x}", c.spec.image.len()),
            ports: c.ports.clone(),
            networks: Vec::new(),
            created_at: None,
            started_at: None,
            finished_at: None,
        })
    }

    async fn container_stats(&self, id: &str) -> RtResult<serde_json::Value> {
        let state = lock(&self.state);
        let c = state.find(id).ok_or_else(|| State::no_such_container(id))?;
        Ok(serde_json::json!({"id": c.id, "name": c.spec.name}))
    }

    async fn wait_container(&self, id: &str) -> RtResult<()> {
        let mut exited = {
            let state = lock(&self.state);
            let c = state.find(id).ok_or_else(|| State::no_such_container(id))?;
            if c.state != RunState::Running {
                return Ok(());
            }
            c.exited.subscribe()
        };
        // An error means the container was removed: it is not running either.
        let _ = exited.wait_for(|exited| *exited).await;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> RtResult<()> {
        let ignores_term = {
            let mut state = lock(&self.state);
            let name = state.name_of(id);
            state
                .calls
                .push(format!("stop {name} {}", format_duration(timeout)));
            let c = state
                .find_mut(id)
                .ok_or_else(|| State::no_such_container(id))?;
            if c.state != RunState::Running {
                return Ok(());
            }
            if c.script() != ["sleep-ignore-term"] {
                c.exit(143, false);
                return Ok(());
            }
            true
        };
        if ignores_term {
            tokio::time::sleep(timeout).await;
            if let Some(c) = lock(&self.state).find_mut(id) {
                c.exit(137, false);
            }
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> RtResult<()> {
        let mut state = lock(&self.state);
        let name = state.name_of(id);
        state.calls.push(format!("remove {name}"));
        if let Some(c) = state.find_mut(id) {
            c.exit(137, false);
            let id = c.id.clone();
            state.containers.remove(&id);
        }
        Ok(())
    }

    async fn list_containers(&self, key: &str, value: &str) -> RtResult<Vec<ContainerSummary>> {
        Ok(lock(&self.state)
            .containers
            .values()
            .filter(|c| c.spec.labels.get(key).map(String::as_str) == Some(value))
            .map(|c| ContainerSummary {
                id: c.id.clone(),
                name: c.spec.name.clone(),
                labels: c.spec.labels.clone(),
                state: c.state,
            })
            .collect())
    }

    fn logs(&self, id: &str, follow: bool) -> BoxStream<'static, RtResult<Bytes>> {
        let found = {
            let state = lock(&self.state);
            state
                .find(id)
                .map(|c| (c.spec.name.clone(), c.exited.subscribe()))
        };
        let Some((name, mut exited)) = found else {
            return futures_util::stream::iter([Err(State::no_such_container(id))]).boxed();
        };
        let line = futures_util::stream::iter([Ok(Bytes::from(format!("{name} says hi\n")))]);
        let end = futures_util::stream::once(async move {
            if follow {
                let _ = exited.wait_for(|exited| *exited).await;
            }
        })
        .filter_map(|()| async { None });
        line.chain(end).boxed()
    }

    async fn export_image(
        &self,
        name: &str,
    ) -> RtResult<BoxStream<'static, std::io::Result<Bytes>>> {
        let mut state = lock(&self.state);
        state.calls.push(format!("export {name}"));
        if !state.images.contains(name) {
            return Err(RuntimeError::NotFound(format!(
                "the Docker engine has no image {name} ('docker images' lists those it has)"
            )));
        }
        let archive = Bytes::from(format!("fake archive of {name}"));
        Ok(futures_util::stream::iter([Ok(archive)]).boxed())
    }

    async fn load_image(&self, archive: BoxStream<'static, Bytes>) -> RtResult<()> {
        self.record("load image".to_string());
        archive.for_each(|_| async {}).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{HealthSpec, PortSpec, Protocol, UlimitSpec};

    fn spec(name: &str, command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: name.to_string(),
            image: "app:1".to_string(),
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    async fn started(rt: &FakeRuntime, spec: &ContainerSpec) -> String {
        rt.ensure_image(&spec.image, None).await.unwrap();
        let id = rt.create_container(spec).await.unwrap();
        rt.start_container(&id).await.unwrap();
        id
    }

    #[tokio::test]
    async fn scripts_exit_as_told() {
        let rt = FakeRuntime::new();
        let quick = started(&rt, &spec("quick", &["exit", "3"])).await;
        assert_eq!(
            rt.inspect_container(&quick).await.unwrap().state,
            RunState::Running
        );
        rt.wait_container(&quick).await.unwrap();
        let status = rt.inspect_container("quick").await.unwrap();
        assert_eq!(
            (status.state, status.exit_code),
            (RunState::Exited, Some(3))
        );

        let later = started(&rt, &spec("later", &["exit-after", "50", "0"])).await;
        let begun = tokio::time::Instant::now();
        rt.wait_container(&later).await.unwrap();
        assert!(begun.elapsed() >= Duration::from_millis(50));
        assert_eq!(
            rt.inspect_container(&later).await.unwrap().exit_code,
            Some(0)
        );

        let oom = started(&rt, &spec("oom", &["oom"])).await;
        rt.wait_container(&oom).await.unwrap();
        let status = rt.inspect_container(&oom).await.unwrap();
        assert_eq!((status.exit_code, status.oom_killed), (Some(137), true));
        // An exited container is waited for at once.
        rt.wait_container(&oom).await.unwrap();
    }

    #[tokio::test]
    async fn stops_follow_the_signal_handling() {
        let rt = Arc::new(FakeRuntime::new());
        let sleeper = started(&rt, &spec("sleeper", &["sleep"])).await;
        let stubborn = started(&rt, &spec("stubborn", &["sleep-ignore-term"])).await;
        let waiter = {
            let rt = Arc::clone(&rt);
            let id = sleeper.clone();
            tokio::spawn(async move { rt.wait_container(&id).await })
        };
        rt.stop_container(&sleeper, Duration::from_secs(30))
            .await
            .unwrap();
        waiter.await.unwrap().unwrap();
        assert_eq!(
            rt.inspect_container(&sleeper).await.unwrap().exit_code,
            Some(143)
        );

        let begun = tokio::time::Instant::now();
        rt.stop_container(&stubborn, Duration::from_millis(100))
            .await
            .unwrap();
        assert!(begun.elapsed() >= Duration::from_millis(100));
        assert_eq!(
            rt.inspect_container(&stubborn).await.unwrap().exit_code,
            Some(137)
        );
        // Stopping what is not running is not an error.
        rt.stop_container(&stubborn, Duration::from_secs(10))
            .await
            .unwrap();

        // A stopped run's scripted exit does not happen later.
        let slow = started(&rt, &spec("slow", &["exit-after", "20", "5"])).await;
        rt.stop_container(&slow, Duration::from_secs(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            rt.inspect_container(&slow).await.unwrap().exit_code,
            Some(143)
        );
        assert_eq!(
            rt.calls(),
            [
                "pull app:1",
                "create sleeper",
                "start sleeper",
                "create stubborn",
                "start stubborn",
                "stop sleeper 30s",
                "stop stubborn 100ms",
                "stop stubborn 10s",
                "create slow",
                "start slow",
                "stop slow 1s",
            ]
        );
    }

    #[tokio::test]
    async fn crashes_and_vanishing_wake_waiters() {
        let rt = Arc::new(FakeRuntime::new());
        let a = started(&rt, &spec("a", &["sleep"])).await;
        let b = started(&rt, &spec("b", &["sleep"])).await;
        let wait_a = tokio::spawn({
            let rt = Arc::clone(&rt);
            async move { rt.wait_container(&a).await }
        });
        let wait_b = tokio::spawn({
            let rt = Arc::clone(&rt);
            let b = b.clone();
            async move { rt.wait_container(&b).await }
        });
        rt.kill_externally("a", 2);
        wait_a.await.unwrap().unwrap();
        assert_eq!(rt.inspect_container("a").await.unwrap().exit_code, Some(2));
        rt.vanish("b");
        wait_b.await.unwrap().unwrap();
        assert!(matches!(
            rt.inspect_container(&b).await,
            Err(RuntimeError::NotFound(_))
        ));
        assert_eq!(rt.container_names(), ["a"]);
        rt.remove_container("a").await.unwrap();
        rt.remove_container("a").await.unwrap();
        assert!(rt.container_names().is_empty());
    }

    #[tokio::test]
    async fn images_ulimits_health_and_ports() {
        let rt = FakeRuntime::new();
        assert!(matches!(
            rt.ensure_image("registry/missing:latest", None).await,
            Err(RuntimeError::NotFound(_))
        ));
        // An image nobody ensured is not there.
        assert!(matches!(
            rt.create_container(&spec("early", &["sleep"])).await,
            Err(RuntimeError::NotFound(_))
        ));

        let mut limited = spec("limited", &["sleep"]);
        limited.ulimits = vec![UlimitSpec {
            name: "nofile".to_string(),
            soft: 30000,
            hard: 30000,
        }];
        rt.ensure_image("app:1", None).await.unwrap();
        let id = rt.create_container(&limited).await.unwrap();
        let Err(RuntimeError::Failed(message)) = rt.start_container(&id).await else {
            panic!("a ulimit above the host's must fail the start");
        };
        assert!(message.contains("ulimit nofile"), "{message}");
        let status = rt.inspect_container(&id).await.unwrap();
        assert_eq!(status.state, RunState::Created);
        assert!(status.error.is_some());

        let health = |test: &[&str]| HealthSpec {
            test: test.iter().map(|s| s.to_string()).collect(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            retries: 1,
            start_period: Duration::ZERO,
        };
        let mut good = spec("good", &["sleep"]);
        good.health = Some(health(&["CMD", "true"]));
        good.ports = vec![
            PortSpec {
                container_port: 80,
                host_port: None,
                protocol: Protocol::Tcp,
            },
            PortSpec {
                container_port: 53,
                host_port: Some(5353),
                protocol: Protocol::Udp,
            },
        ];
        let mut bad = spec("bad", &["sleep"]);
        bad.health = Some(health(&["CMD", "false"]));
        let mut slow = spec("slow", &["sleep"]);
        slow.health = Some(health(&["CMD-SHELL", "curl -f localhost"]));
        let plain = spec("plain", &["sleep"]);
        let good = started(&rt, &good).await;
        let bad = started(&rt, &bad).await;
        let slow = started(&rt, &slow).await;
        let plain = started(&rt, &plain).await;
        let rt = &rt;
        let health_of = |id: String| async move { rt.inspect_container(&id).await.unwrap().health };
        assert_eq!(health_of(good.clone()).await, Some(Health::Healthy));
        assert_eq!(health_of(bad).await, Some(Health::Unhealthy));
        assert_eq!(health_of(slow).await, Some(Health::Starting));
        assert_eq!(health_of(plain).await, None);
        rt.set_health("slow", Health::Healthy);
        assert_eq!(health_of("slow".to_string()).await, Some(Health::Healthy));

        let ports = rt.inspect_container(&good).await.unwrap().ports;
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[0].container_port, ports[0].host_port), (80, 40001));
        assert_eq!(
            (
                ports[1].container_port,
                ports[1].host_port,
                ports[1].protocol
            ),
            (53, 5353, Protocol::Udp)
        );
    }

    #[tokio::test]
    async fn networks_volumes_labels_and_logs() {
        let rt = FakeRuntime::new();
        rt.create_network("task-net", &BTreeMap::new())
            .await
            .unwrap();
        assert!(rt
            .create_network("task-net", &BTreeMap::new())
            .await
            .is_err());
        rt.create_volume(&VolumeSpec {
            name: "data".to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(rt.volume_exists("data").await.unwrap());

        let pause = rt.pause_image().await.unwrap();
        let holder = rt
            .create_container(&ContainerSpec {
                name: "holder".to_string(),
                image: pause,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut web = spec("web", &["sleep"]);
        web.labels.insert("task".to_string(), "t1".to_string());
        web.network = NetworkAttachment::Network {
            network: "task-net".to_string(),
            aliases: vec!["web".to_string()],
            links: Vec::new(),
        };
        web.mounts = vec![MountSpec::Volume {
            name: "data".to_string(),
            target: "/data".to_string(),
            read_only: false,
        }];
        let mut sidecar = spec("sidecar", &["exit", "0"]);
        sidecar.labels.insert("task".to_string(), "t1".to_string());
        sidecar.network = NetworkAttachment::Container(holder.clone());
        rt.ensure_image("app:1", None).await.unwrap();
        let sidecar_id = rt.create_container(&sidecar).await.unwrap();
        // The namespace's holder must run first.
        assert!(rt.start_container(&sidecar_id).await.is_err());
        rt.start_container(&holder).await.unwrap();
        rt.start_container(&sidecar_id).await.unwrap();
        let web = started(&rt, &web).await;

        let listed = rt.list_containers("task", "t1").await.unwrap();
        let names: Vec<&str> = listed.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["sidecar", "web"]);

        // In use: refused, as the engine does.
        assert!(rt.remove_network("task-net").await.is_err());
        assert!(rt.remove_volume("data").await.is_err());

        let logs: Vec<_> = rt.logs(&web, false).collect().await;
        assert_eq!(logs, [Ok(Bytes::from("web says hi\n"))]);
        let follow = tokio::spawn({
            let stream = rt.logs(&web, true);
            async move { stream.collect::<Vec<_>>().await }
        });
        rt.stop_container(&web, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(follow.await.unwrap().len(), 1);

        rt.remove_container(&web).await.unwrap();
        rt.remove_network("task-net").await.unwrap();
        rt.remove_network("task-net").await.unwrap();
        rt.remove_volume("data").await.unwrap();
        assert!(rt.network_names().is_empty());
        assert!(rt.volume_names().is_empty());
        let calls = rt.calls();
        let tail = &calls[calls.len() - 5..];
        assert_eq!(
            tail,
            [
                "stop web 5s",
                "remove web",
                "network remove task-net",
                "network remove task-net",
                "volume remove data",
            ]
        );
    }
}
