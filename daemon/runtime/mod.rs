//! The container runtime tasks run on, behind one trait: the Docker Engine API over its Unix
//! socket ([`docker::DockerRuntime`], which also serves podman's Docker-compatible socket),
//! and a scripted fake (`fake::FakeRuntime`, built for tests only) for unit tests of the task
//! state machine.
//!
//! The trait speaks in ecrl's terms ([`ContainerSpec`], [`ContainerStatus`]); everything
//! engine-specific (API versions, bollard's types, the pause image) stays in the
//! implementation.

pub mod cgroup;
pub mod docker;
#[cfg(test)]
pub mod fake;
mod libpod;

pub use cgroup::TaskLimits;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RuntimeError {
    /// The engine cannot be reached at all (not running, no permission on the socket).
    #[error("{0}")]
    Unreachable(String),
    /// The object (container, image, network, volume) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The engine refused or failed the request; the message is the engine's, made readable.
    #[error("{0}")]
    Failed(String),
}

pub type RtResult<T> = Result<T, RuntimeError>;

/// Credentials for an image pull.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
    /// `host:port`.
    pub server: String,
    /// The registry speaks plain HTTP (ecrl's own, when its HTTP listener is on).
    pub plain_http: bool,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("server", &self.server)
            .field("plain_http", &self.plain_http)
            .finish()
    }
}

/// What the engine is, for `ecrl daemon status` and errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// e.g. `Docker Engine 20.10.24` or `Podman Engine 4.3.1`.
    pub name: String,
    /// The Engine API version in use after negotiation, e.g. `1.41`.
    pub api_version: String,
    /// How task-level cpu and memory are held: by a cgroup for each task (`Ok`, saying
    /// which), or only by each container's own limits (`Err`, saying why).
    pub task_cgroups: Result<String, String>,
}

/// Everything needed to create one container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerSpec {
    /// The container's name in the engine (unique on the engine).
    pub name: String,
    /// The image reference to create it from (already present: see [`Runtime::ensure_image`]).
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    /// `KEY=VALUE` of the container's `secrets`, after `env` (they win): never printed.
    pub secret_env: SecretEnv,
    pub labels: BTreeMap<String, String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub network: NetworkAttachment,
    /// Ports to publish on the host.
    pub ports: Vec<PortSpec>,
    /// CPU shares (ECS `cpu` units map 1:1; the engine's minimum is 2).
    pub cpu_shares: Option<i64>,
    /// Hard memory limit in bytes.
    pub memory: Option<i64>,
    /// Soft memory limit in bytes.
    pub memory_reservation: Option<i64>,
    pub ulimits: Vec<UlimitSpec>,
    pub mounts: Vec<MountSpec>,
    /// Engine container names or ids, each optionally with `:ro`.
    pub volumes_from: Vec<String>,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    /// `host:ip`.
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub security_opt: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Run an init process as PID 1 (ECS linuxParameters.initProcessEnabled).
    pub init: bool,
    /// /dev/shm size in bytes.
    pub shm_size: Option<i64>,
    /// Container path → mount options (e.g. `size=64m`).
    pub tmpfs: BTreeMap<String, String>,
    pub tty: bool,
    pub open_stdin: bool,
    /// `host` or `container:ID` (ECS pidMode / ipcMode `host` and `task`).
    pub pid_mode: Option<String>,
    pub ipc_mode: Option<String>,
    pub health: Option<HealthSpec>,
    /// Seconds the engine waits after SIGTERM on its own stops.
    pub stop_timeout: Option<i64>,
    /// The cgroup the container is made in: its task's (see [`Runtime::task_cgroup`]).
    pub cgroup_parent: Option<String>,
    /// The engine's logging driver and its options; `None`: the engine's default (what
    /// ecrl reads the container's output from).
    pub log_driver: Option<(String, BTreeMap<String, String>)>,
}

/// Environment variables holding secrets: their names show in `Debug`, never their values;
/// the memory is wiped when dropped.
#[derive(Clone, Default, PartialEq)]
pub struct SecretEnv(pub Vec<zeroize::Zeroizing<String>>);

impl std::fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|kv| format!("{}=<redacted>", kv.split('=').next().unwrap_or_default())),
            )
            .finish()
    }
}

impl ContainerSpec {
    /// `env`, then the secrets' variables: what the engine is given.
    pub fn full_env(&self) -> Vec<String> {
        let mut env = self.env.clone();
        env.extend(self.secret_env.0.iter().map(|kv| kv.to_string()));
        env
    }
}

/// How a container joins the network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkAttachment {
    /// The engine's default bridge.
    #[default]
    Default,
    /// A user network (by name or id), reachable by `aliases`; `links` are
    /// `engine-container-name:alias`.
    Network {
        network: String,
        aliases: Vec<String>,
        links: Vec<String>,
    },
    /// Share the network namespace of another container (by id or name).
    Container(String),
    Host,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    pub container_port: u16,
    /// `None`: an ephemeral port the engine picks.
    pub host_port: Option<u16>,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UlimitSpec {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// A host path.
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
    /// A named engine volume.
    Volume {
        name: String,
        target: String,
        read_only: bool,
    },
}

/// The engine's health check, as ECS's healthCheck maps onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    /// `["CMD-SHELL", "..."]` or `["CMD", ...]`.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// A volume to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeSpec {
    pub name: String,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    /// Exited, dead, or being removed: it will not run again.
    Exited,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// A container as inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    pub state: RunState,
    /// Set once exited.
    pub exit_code: Option<i64>,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// The engine's error for a container that failed to start.
    pub error: Option<String>,
    /// `None`: the container has no health check.
    pub health: Option<Health>,
    /// The image id (`sha256:...`) the container runs.
    pub image_id: String,
    /// Published ports as bound.
    pub ports: Vec<PortBinding>,
    /// The networks it is attached to, with its address on each.
    pub networks: Vec<NetworkAddress>,
    /// RFC 3339, as the engine says them; `None` when not (yet) so.
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// A container's address on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAddress {
    /// The network's name (`bridge`, `ecrl-task-...`, `host`).
    pub network: String,
    /// Empty on networks without addresses of their own (host).
    pub ipv4: String,
    pub prefix_len: Option<i64>,
    pub gateway: Option<String>,
    pub mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    pub container_port: u16,
    pub protocol: Protocol,
    pub host_ip: String,
    pub host_port: u16,
}

/// A container found by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: RunState,
}

/// Where a task's containers run, as far as their shared limits go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskCgroup {
    /// The `CgroupParent` to make each of the task's containers in.
    Parent(String),
    /// Why there is none: each container is held only to its own limits.
    Unavailable(String),
}

/// The engine tasks run on.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Connects (negotiating the API version) and says what the engine is.
    async fn info(&self) -> RtResult<RuntimeInfo>;

    /// Makes the image available: nothing when the engine has it, a pull otherwise (with
    /// `auth` for the registry, when given). `NotFound` when the registry has no such image.
    async fn ensure_image(&self, reference: &str, auth: Option<&RegistryAuth>) -> RtResult<()>;

    /// The reference of a tiny image whose command sleeps until killed, created in the
    /// engine on first use: it holds a task's network namespace in awsvpc mode.
    async fn pause_image(&self) -> RtResult<String>;

    /// Creates a user bridge network; answers its id.
    async fn create_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> RtResult<String>;
    /// Removes a network; one that does not exist is not an error.
    async fn remove_network(&self, id: &str) -> RtResult<()>;

    /// Makes the cgroup a task's containers share, holding them together to `limits`
    /// (ECS's task-level `cpu` and `memory`), or says why the engine cannot have one.
    async fn task_cgroup(&self, task_id: &str, limits: &TaskLimits) -> TaskCgroup;
    /// Removes a task's cgroup once its containers are gone; none is not an error.
    async fn remove_task_cgroup(&self, task_id: &str) -> RtResult<()>;

    async fn volume_exists(&self, name: &str) -> RtResult<bool>;
    async fn create_volume(&self, spec: &VolumeSpec) -> RtResult<()>;
    /// Removes a volume; one that does not exist is not an error.
    async fn remove_volume(&self, name: &str) -> RtResult<()>;

    /// Creates a container; answers its id.
    async fn create_container(&self, spec: &ContainerSpec) -> RtResult<String>;
    async fn start_container(&self, id: &str) -> RtResult<()>;
    async fn inspect_container(&self, id: &str) -> RtResult<ContainerStatus>;
    /// The engine's statistics of a container, once (Docker's stats JSON, which ECS's task
    /// metadata endpoint serves as it is).
    async fn container_stats(&self, id: &str) -> RtResult<serde_json::Value>;
    /// Returns once the container is not running (at once if it already exited).
    async fn wait_container(&self, id: &str) -> RtResult<()>;
    /// SIGTERM (or the image's stop signal), then SIGKILL after `timeout`; returns once it
    /// stopped. A container that is not running is not an error.
    async fn stop_container(&self, id: &str, timeout: Duration) -> RtResult<()>;
    /// Removes a container (forcibly) and its anonymous volumes; one that does not exist is
    /// not an error.
    async fn remove_container(&self, id: &str) -> RtResult<()>;
    /// Containers (running or not) that carry the label `key=value`.
    async fn list_containers(&self, key: &str, value: &str) -> RtResult<Vec<ContainerSummary>>;
    /// The container's output (stdout and stderr interleaved, as written) from its start;
    /// with `follow`, the stream ends when the container stops.
    fn logs(&self, id: &str, follow: bool) -> BoxStream<'static, RtResult<Bytes>>;

    /// The image as `docker save` writes it.
    async fn export_image(
        &self,
        name: &str,
    ) -> RtResult<BoxStream<'static, std::io::Result<Bytes>>>;
    /// Loads a docker-archive (`docker load`).
    async fn load_image(&self, archive: BoxStream<'static, Bytes>) -> RtResult<()>;
}
