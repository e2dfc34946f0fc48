//! ECS task definitions: the RegisterTaskDefinition input model the daemon and the CLI share.
//!
//! This module owns the serde types (AWS's exact camelCase field names, unknown fields
//! rejected), reading from JSON or YAML as users bring definitions (RegisterTaskDefinition's
//! input, or describe-task-definition's answer, whose read-only fields are left out) with
//! errors that name the field path, every unknown field at once, validation
//! against ECS's rules (each error carries the path of the offending field), and the small
//! helpers the runner needs: ECS defaults, the start order derived from `dependsOn`, and the
//! list of given fields that have no local meaning. It does no I/O.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// RegisterTaskDefinition input, as AWS spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskDefinitionInput {
    pub family: String,
    pub container_definitions: Vec<ContainerDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
    /// `bridge` (the default), `host`, `awsvpc` or `none`; checked by [`validate`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_constraints: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_compatibilities: Option<Vec<String>>,
    /// CPU units (`"256"`) or vCPUs (`"0.25 vCPU"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// MiB (`"512"`) or GB (`"1 GB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inference_accelerators: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_platform: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_fault_injection: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tag {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `KEY=VALUE`, as ecrl prints a tag.
impl std::fmt::Display for Tag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}={}",
            self.key.as_deref().unwrap_or_default(),
            self.value.as_deref().unwrap_or_default()
        )
    }
}

/// A task volume: a host path, a Docker volume, or (accepted, not run) EFS / FSx.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Volume {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostVolumeProperties>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_volume_configuration: Option<DockerVolumeConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efs_volume_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fsx_windows_file_server_volume_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configured_at_launch: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostVolumeProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerVolumeConfiguration {
    /// `task` (removed with the task) or `shared` (outlives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoprovision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_opts: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

/// One entry of `containerDefinitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDefinition {
    pub name: String,
    pub image: String,
    /// Defaults to true; see [`ContainerDefinition::is_essential`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_point: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Vec<KeyValuePair>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_files: Option<Vec<EnvironmentFile>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<Secret>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_points: Option<Vec<MountPoint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes_from: Option<Vec<VolumeFrom>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<ContainerDependency>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i64>,
    /// Hard limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// Soft limit in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ulimits: Option<Vec<Ulimit>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linux_parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly_root_filesystem: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_servers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_search_domains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_hosts: Option<Vec<HostEntry>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_security_options: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudo_terminal: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_networking: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_controls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_requirements: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_consistency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_credentials: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firelens_configuration: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_specs: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyValuePair {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentFile {
    pub value: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub name: String,
    pub value_from: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<i64>,
    /// Absent or 0 in bridge mode: an ephemeral host port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    /// `tcp` (the default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port_range: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountPoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volume: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeFrom {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerDependency {
    pub container_name: String,
    /// `START`, `COMPLETE`, `SUCCESS` or `HEALTHY`.
    pub condition: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// `["CMD", exe, args...]` or `["CMD-SHELL", "shell command"]`.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ulimit {
    pub name: String,
    pub soft_limit: i64,
    pub hard_limit: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEntry {
    pub hostname: String,
    pub ip_address: String,
}

/// The task's network mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    Bridge,
    Host,
    Awsvpc,
    None,
}

impl NetworkMode {
    pub fn parse(s: &str) -> Option<NetworkMode> {
        match s {
            "bridge" => Some(NetworkMode::Bridge),
            "host" => Some(NetworkMode::Host),
            "awsvpc" => Some(NetworkMode::Awsvpc),
            "none" => Some(NetworkMode::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::Awsvpc => "awsvpc",
            NetworkMode::None => "none",
        }
    }
}

/// A `dependsOn` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyCondition {
    /// The dependency has started.
    Start,
    /// The dependency has exited, with any code.
    Complete,
    /// The dependency has exited with code 0.
    Success,
    /// The dependency's health check passed.
    Healthy,
}

impl DependencyCondition {
    pub fn parse(s: &str) -> Option<DependencyCondition> {
        match s {
            "START" => Some(DependencyCondition::Start),
            "COMPLETE" => Some(DependencyCondition::Complete),
            "SUCCESS" => Some(DependencyCondition::Success),
            "HEALTHY" => Some(DependencyCondition::Healthy),
            _ => None,
        }
    }
}

/// Docker's ulimit names.
pub const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// ECS's default health-check interval, seconds.
pub const DEFAULT_HEALTH_INTERVAL: u64 = 30;
/// ECS's default health-check timeout, seconds.
pub const DEFAULT_HEALTH_TIMEOUT: u64 = 5;
/// ECS's default number of health-check retries.
pub const DEFAULT_HEALTH_RETRIES: u32 = 3;
/// ECS's default health-check start period, seconds.
pub const DEFAULT_HEALTH_START_PERIOD: u64 = 0;
/// ECS's default stop timeout, seconds.
pub const DEFAULT_STOP_TIMEOUT: u64 = 30;

impl HealthCheck {
    pub fn interval_or_default(&self) -> u64 {
        secs_or(self.interval, DEFAULT_HEALTH_INTERVAL)
    }

    pub fn timeout_or_default(&self) -> u64 {
        secs_or(self.timeout, DEFAULT_HEALTH_TIMEOUT)
    }

    pub fn retries_or_default(&self) -> u32 {
        self.retries
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(DEFAULT_HEALTH_RETRIES)
    }

    pub fn start_period_or_default(&self) -> u64 {
        secs_or(self.start_period, DEFAULT_HEALTH_START_PERIOD)
    }

    /// True for `CMD-SHELL` (the rest runs in a shell), false for `CMD` (run directly).
    pub fn is_shell(&self) -> bool {
        self.command.first().map(String::as_str) == Some("CMD-SHELL")
    }
}

fn secs_or(v: Option<i64>, default: u64) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default)
}

impl ContainerDefinition {
    /// `essential` defaults to true.
    pub fn is_essential(&self) -> bool {
        self.essential.unwrap_or(true)
    }

    /// Seconds to wait after SIGTERM before killing; ECS's default is 30.
    pub fn stop_timeout_or_default(&self) -> u64 {
        secs_or(self.stop_timeout, DEFAULT_STOP_TIMEOUT)
    }

    /// The containers this one must wait for before starting: its `dependsOn` targets, then
    /// the containers it `links` to and takes `volumesFrom` (as the ECS agent does, so that
    /// Docker finds them when this one is created), without duplicates or itself.
    pub fn start_dependencies(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let deps = self
            .depends_on
            .iter()
            .flatten()
            .map(|d| d.container_name.as_str());
        let links = self.links.iter().flatten().map(|l| link_target(l));
        let from = self
            .volumes_from
            .iter()
            .flatten()
            .filter_map(|v| v.source_container.as_deref());
        for name in deps.chain(links).chain(from) {
            if name != self.name && !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }
}

/// `name` or `name:alias` → `name`.
fn link_target(link: &str) -> &str {
    link.split_once(':').map_or(link, |(name, _)| name)
}

impl TaskDefinitionInput {
    /// What in the definition reaches past the container into the host, each by its path:
    /// host paths mounted (a host volume, a Docker volume with driver options), privileged
    /// containers, added capabilities and devices, the host's network, PID or IPC namespace,
    /// security options loosened, and environment files (which the daemon reads from its own
    /// disk). A task with any of these may read or change what the daemon can.
    pub fn host_access(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (i, v) in self.volumes.iter().flatten().enumerate() {
            if v.host.as_ref().is_some_and(|h| h.source_path.is_some()) {
                found.push(format!("volumes[{i}].host.sourcePath"));
            }
            if let Some(d) = &v.docker_volume_configuration {
                if d.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
                    found.push(format!("volumes[{i}].dockerVolumeConfiguration.driverOpts"));
                }
            }
        }
        if self.network_mode.as_deref() == Some("host") {
            found.push("networkMode".into());
        }
        if self.pid_mode.as_deref() == Some("host") {
            found.push("pidMode".into());
        }
        if self.ipc_mode.as_deref() == Some("host") {
            found.push("ipcMode".into());
        }
        for (i, c) in self.container_definitions.iter().enumerate() {
            let at = |what: &str| format!("containerDefinitions[{i}].{what}");
            if c.privileged == Some(true) {
                found.push(at("privileged"));
            }
            if c.environment_files.as_ref().is_some_and(|f| !f.is_empty()) {
                found.push(at("environmentFiles"));
            }
            if c.docker_security_options
                .as_ref()
                .is_some_and(|o| !o.is_empty())
            {
                found.push(at("dockerSecurityOptions"));
            }
            if let Some(p) = &c.linux_parameters {
                let some = |v: &Value| match v {
                    Value::Array(a) => !a.is_empty(),
                    Value::Null => false,
                    _ => true,
                };
                if some(&p["capabilities"]["add"]) {
                    found.push(at("linuxParameters.capabilities.add"));
                }
                if some(&p["devices"]) {
                    found.push(at("linuxParameters.devices"));
                }
            }
        }
        found
    }

    /// The network mode, `bridge` when unset; `None` when the value is not one ECS knows.
    pub fn network_mode(&self) -> Option<NetworkMode> {
        match &self.network_mode {
            None => Some(NetworkMode::Bridge),
            Some(s) => NetworkMode::parse(s),
        }
    }

    /// The container definition named `name`.
    pub fn container(&self, name: &str) -> Option<&ContainerDefinition> {
        self.container_definitions.iter().find(|c| c.name == name)
    }

    /// Task-level memory in MiB (`"512"`, `"1 GB"`, `"2GB"`); `None` when unset or malformed.
    pub fn memory_mib(&self) -> Option<u64> {
        self.memory.as_deref().and_then(parse_memory_mib)
    }

    /// Task-level CPU units (`"256"`, `"0.25 vCPU"`); `None` when unset or malformed.
    pub fn cpu_units(&self) -> Option<u64> {
        self.cpu.as_deref().and_then(parse_cpu_units)
    }

    /// The AWS fields given in this definition that mean nothing on a local runtime (IAM
    /// roles, placement, Fargate/EC2 capacity, AWS-side integrations, registry credentials,
    /// log drivers, …), in a fixed order without duplicates, so callers can warn about them.
    /// A field that says nothing (an empty list, object or string, `false`, as
    /// describe-task-definition writes them) is not listed.
    pub fn ignored_fields(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        let mut add = |given: bool, name: &'static str| {
            if given && !out.contains(&name) {
                out.push(name);
            }
        };
        add(said(&self.execution_role_arn), "executionRoleArn");
        add(said(&self.placement_constraints), "placementConstraints");
        add(
            said(&self.requires_compatibilities),
            "requiresCompatibilities",
        );
        add(said(&self.proxy_configuration), "proxyConfiguration");
        add(said(&self.inference_accelerators), "inferenceAccelerators");
        add(said(&self.ephemeral_storage), "ephemeralStorage");
        add(said(&self.runtime_platform), "runtimePlatform");
        add(said(&self.enable_fault_injection), "enableFaultInjection");
        for v in self.volumes.iter().flatten() {
            add(said(&v.efs_volume_configuration), "efsVolumeConfiguration");
            add(
                said(&v.fsx_windows_file_server_volume_configuration),
                "fsxWindowsFileServerVolumeConfiguration",
            );
            add(said(&v.configured_at_launch), "configuredAtLaunch");
        }
        for c in &self.container_definitions {
            add(said(&c.repository_credentials), "repositoryCredentials");
            add(said(&c.firelens_configuration), "firelensConfiguration");
            add(said(&c.credential_specs), "credentialSpecs");
            add(said(&c.resource_requirements), "resourceRequirements");
            add(said(&c.restart_policy), "restartPolicy");
            add(said(&c.version_consistency), "versionConsistency");
            let app_protocol = c
                .port_mappings
                .iter()
                .flatten()
                .any(|p| said(&p.app_protocol));
            add(app_protocol, "appProtocol");
        }
        out
    }

    /// Dependency levels: the first holds the containers that depend on nothing, each next
    /// one the containers whose dependencies (see
    /// [`ContainerDefinition::start_dependencies`]) are all in earlier levels. Containers of
    /// one level can start together; stopping runs the levels in reverse. Within a level the
    /// order is the definition's. Dependencies on unknown containers are left to [`validate`].
    pub fn start_order(&self) -> Result<Vec<Vec<String>>, DependencyCycle> {
        let names: HashSet<&str> = self
            .container_definitions
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let mut placed: HashSet<&str> = HashSet::new();
        let mut remaining: Vec<&ContainerDefinition> = self.container_definitions.iter().collect();
        let mut levels = Vec::new();
        while !remaining.is_empty() {
            let (ready, rest): (Vec<&ContainerDefinition>, Vec<&ContainerDefinition>) =
                remaining.into_iter().partition(|c| {
                    c.start_dependencies()
                        .iter()
                        .all(|d| placed.contains(d) || !names.contains(d))
                });
            if ready.is_empty() {
                let cycle = find_cycle(self)
                    .unwrap_or_else(|| rest.iter().map(|c| c.name.clone()).collect::<Vec<_>>());
                return Err(DependencyCycle { cycle });
            }
            placed.extend(ready.iter().map(|c| c.name.as_str()));
            levels.push(ready.iter().map(|c| c.name.clone()).collect());
            remaining = rest;
        }
        Ok(levels)
    }
}

/// A field whose value says something: given, and not empty (`[]`, `{}`, `""`, `null`) nor
/// `false`.
trait Said {
    fn says_something(&self) -> bool;
}

impl Said for Value {
    fn says_something(&self) -> bool {
        match self {
            Value::Null | Value::Bool(false) => false,
            Value::Array(items) => !items.is_empty(),
            Value::Object(members) => !members.is_empty(),
            Value::String(s) => !s.is_empty(),
            _ => true,
        }
    }
}

impl Said for String {
    fn says_something(&self) -> bool {
        !self.is_empty()
    }
}

impl Said for bool {
    fn says_something(&self) -> bool {
        *self
    }
}

impl<T> Said for Vec<T> {
    fn says_something(&self) -> bool {
        !self.is_empty()
    }
}

fn said<T: Said>(field: &Option<T>) -> bool {
    field.as_ref().is_some_and(Said::says_something)
}

/// A task-level memory value in MiB (`"512"`, `"1 GB"`, `"2GB"`); `None` when malformed.
pub fn parse_memory_mib(s: &str) -> Option<u64> {
    let t = s.trim();
    if let Ok(v) = t.parse::<u64>() {
        return Some(v);
    }
    let lower = t.to_ascii_lowercase();
    let gb = lower.strip_suffix("gb")?.trim();
    let v: f64 = gb.parse().ok()?;
    if !(v.is_finite() && v > 0.0) {
        return None;
    }
    Some((v * 1024.0).round() as u64)
}

/// Task-level CPU units (`"256"`, `"0.25 vCPU"`); `None` when malformed.
pub fn parse_cpu_units(s: &str) -> Option<u64> {
    let t = s.trim();
    if let Ok(v) = t.parse::<u64>() {
        return Some(v);
    }
    let lower = t.to_ascii_lowercase();
    let vcpu = lower.strip_suffix("vcpu")?.trim();
    let v: f64 = vcpu.parse().ok()?;
    if !(v.is_finite() && v > 0.0) {
        return None;
    }
    Some((v * 1024.0).round() as u64)
}

/// A cycle in the containers' start dependencies, first container repeated at the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dependency cycle: {}", .cycle.join(" -> "))]
pub struct DependencyCycle {
    pub cycle: Vec<String>,
}

/// Finds one dependency cycle, as `[a, b, a]`, starting at the earliest-defined container
/// on it.
fn find_cycle(def: &TaskDefinitionInput) -> Option<Vec<String>> {
    find_cycles(def).into_iter().next()
}

/// Every cycle a depth-first search meets (one per back edge), each rotated to start at
/// its earliest-defined container and closed by repeating it.
fn find_cycles(def: &TaskDefinitionInput) -> Vec<Vec<String>> {
    let index: HashMap<&str, usize> = def
        .container_definitions
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = def
        .container_definitions
        .iter()
        .map(|c| {
            c.start_dependencies()
                .iter()
                .filter_map(|d| index.get(d).copied())
                .collect()
        })
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; edges.len()];
    let mut cycles: Vec<Vec<usize>> = Vec::new();
    for start in 0..edges.len() {
        if state[start] != 0 {
            continue;
        }
        // Iterative DFS: (node, next edge to look at).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match state[to] {
                    0 => {
                        state[to] = 1;
                        stack.push((to, 0));
                    }
                    1 => {
                        let from = stack.iter().position(|&(n, _)| n == to).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|&(n, _)| n).collect();
                        let min_at = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|&(_, &n)| n)
                            .map_or(0, |(i, _)| i);
                        cycle.rotate_left(min_at);
                        if !cycles.contains(&cycle) {
                            cycles.push(cycle);
                        }
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    cycles
        .into_iter()
        .map(|cycle| {
            let mut names: Vec<String> = cycle
                .iter()
                .map(|&i| def.container_definitions[i].name.clone())
                .collect();
            if let Some(first) = names.first().cloned() {
                names.push(first);
            }
            names
        })
        .collect()
}

/// A task definition that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_path_message(.path, .message))]
pub struct TaskDefError {
    /// `json` or `yaml`: the format the text was read as.
    pub format: &'static str,
    /// Where the error is, e.g. `containerDefinitions[1].portMappings[0].containerPort`;
    /// empty at the top level.
    pub path: String,
    pub message: String,
}

fn display_path_message(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

/// The fields `aws ecs describe-task-definition` answers that RegisterTaskDefinition does not
/// take: ECS sets them. A definition saved from describe's output (as CI repositories keep
/// `.aws/task-definition.json`) carries them; they are dropped, as the ECS deploy action
/// (aws-actions/amazon-ecs-deploy-task-definition) drops them.
pub const READ_ONLY_FIELDS: [&str; 8] = [
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "deregisteredAt",
    "registeredBy",
];

/// The wrapper of describe-task-definition's answer: `{"taskDefinition": {...}, "tags": [...]}`.
const WRAPPER: &str = "taskDefinition";

/// ecrl's own addition beside `taskDefinition` in `ecrl task describe --output json`: worked
/// out again at register, so dropped without a word.
const IGNORED_FIELDS_KEY: &str = "ignoredFields";

/// At most this many unknown fields are reported; a file with more is not a task definition.
const MAX_UNKNOWN_FIELDS: usize = 100;

/// A task definition as read from a file, and what was left out on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadDefinition {
    pub definition: TaskDefinitionInput,
    /// The [`READ_ONLY_FIELDS`] the text carried, in that order (for one warning).
    pub dropped: Vec<&'static str>,
    /// Whether the definition came inside describe's `{"taskDefinition": ...}` wrapper.
    pub unwrapped: bool,
}

/// Everything wrong with a task definition's text, each with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_errors(.0))]
pub struct TaskDefErrors(pub Vec<TaskDefError>);

fn display_errors(errors: &[TaskDefError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses a task definition from JSON, or from YAML when the text is not JSON; the first
/// error only (see [`read`] for all of them and for what was dropped).
pub fn parse(text: &str) -> Result<TaskDefinitionInput, TaskDefError> {
    match read(text) {
        Ok(read) => Ok(read.definition),
        Err(TaskDefErrors(mut errors)) => Err(if errors.is_empty() {
            top_level_error("json")
        } else {
            errors.swap_remove(0)
        }),
    }
}

fn top_level_error(format: &'static str) -> TaskDefError {
    TaskDefError {
        format,
        path: String::new(),
        message: "the task definition must be a JSON or YAML object \
                  (with family and containerDefinitions)"
            .into(),
    }
}

/// Reads a task definition from JSON, or from YAML when the text is not JSON, as users bring
/// them: RegisterTaskDefinition's input, or describe-task-definition's answer (wrapped in
/// `taskDefinition`, with `tags` beside it, and ECS's read-only fields, which are dropped).
/// Every unknown field is reported, each with its path, together with the first other error.
/// The nesting depth is checked first, so a hostile file is refused in linear time.
pub fn read(text: &str) -> Result<ReadDefinition, TaskDefErrors> {
    let one = |e: TaskDefError| TaskDefErrors(vec![e]);
    if text.trim().is_empty() {
        return Err(one(TaskDefError {
            message: "the task definition is empty: expected a JSON or YAML object".into(),
            ..top_level_error("json")
        }));
    }
    let looks_like_json = text.trim_start().starts_with('{');
    if let Err(e) = crate::nesting::check_depth(text) {
        let format = if looks_like_json { "json" } else { "yaml" };
        return Err(one(path_error(format, String::new(), e.to_string())));
    }
    let json_error = match serde_json::from_str::<Value>(text) {
        Ok(value) if value.is_object() => return from_value("json", value),
        Ok(_) => return Err(one(top_level_error("json"))),
        Err(e) => e,
    };
    match serde_yaml::from_str::<Value>(text) {
        Ok(value) if value.is_object() => from_value("yaml", value),
        // Text that starts like JSON and is not YAML either was almost surely meant as JSON:
        // the JSON parser's complaint (with line and column) serves it better.
        _ if looks_like_json => Err(one(path_error(
            "json",
            String::new(),
            depth_message(json_error.to_string()),
        ))),
        // Valid YAML that is no mapping (a bare word, a list) is not a definition at all.
        Ok(_) => Err(one(top_level_error("yaml"))),
        Err(e) => Err(one(path_error(
            "yaml",
            String::new(),
            depth_message(e.to_string()),
        ))),
    }
}

/// The parsers' "recursion limit exceeded" in words about the document (YAML's block style
/// can nest past the limit without a bracket, which [`crate::nesting::check_depth`] counts).
fn depth_message(message: String) -> String {
    if message.starts_with("recursion limit exceeded") {
        format!(
            "lists and objects are nested more than {} deep ({message}); ecrl reads at most {} levels",
            crate::nesting::MAX_NESTING_DEPTH,
            crate::nesting::MAX_NESTING_DEPTH
        )
    } else {
        message
    }
}

/// Unwraps describe's answer, drops the read-only fields, and deserializes, collecting every
/// unknown field.
fn from_value(format: &'static str, value: Value) -> Result<ReadDefinition, TaskDefErrors> {
    let Value::Object(mut top) = value else {
        return Err(TaskDefErrors(vec![top_level_error(format)]));
    };
    let mut errors = Vec::new();
    let wrapped = top.contains_key(WRAPPER)
        && !top.contains_key("family")
        && !top.contains_key("containerDefinitions");
    let (mut definition, prefix) = if wrapped {
        let inner = match top.remove(WRAPPER) {
            Some(Value::Object(inner)) => inner,
            _ => {
                return Err(TaskDefErrors(vec![TaskDefError {
                    format,
                    path: WRAPPER.into(),
                    message: "expected an object: the task definition".into(),
                }]))
            }
        };
        let mut inner = inner;
        for (key, value) in top {
            match key.as_str() {
                "tags" => match inner.get("tags") {
                    None | Some(Value::Null) => {
                        inner.insert(key, value);
                    }
                    Some(own) if *own == value => {}
                    Some(_) => errors.push(TaskDefError {
                        format,
                        path: "tags".into(),
                        message: "differs from taskDefinition.tags: keep one of them".into(),
                    }),
                },
                IGNORED_FIELDS_KEY => {}
                _ => errors.push(TaskDefError {
                    format,
                    message: format!(
                        "unknown field `{key}` beside taskDefinition: expected only tags"
                    ),
                    path: key,
                }),
            }
        }
        (inner, format!("{WRAPPER}."))
    } else {
        (top, String::new())
    };
    let dropped: Vec<&'static str> = READ_ONLY_FIELDS
        .into_iter()
        .filter(|field| definition.remove(*field).is_some())
        .collect();

    let mut value = Value::Object(definition);
    loop {
        let err = match serde_path_to_error::deserialize::<_, TaskDefinitionInput>(&value) {
            Ok(definition) if errors.is_empty() => {
                return Ok(ReadDefinition {
                    definition,
                    dropped,
                    unwrapped: wrapped,
                })
            }
            Ok(_) => break,
            Err(err) => err,
        };
        let message = err.inner().to_string();
        let path = err.path().to_string();
        let path = if path == "." {
            prefix.trim_end_matches('.').to_string()
        } else {
            format!("{prefix}{path}")
        };
        let unknown = message.starts_with("unknown field `");
        errors.push(path_error(format, path, unknown_field_message(&message)));
        if !unknown || errors.len() >= MAX_UNKNOWN_FIELDS || !remove_at(&mut value, err.path()) {
            break;
        }
    }
    Err(TaskDefErrors(errors))
}

/// Removes the field at `path` (an unknown field's), so the next attempt looks past it.
fn remove_at(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    let mut at = value;
    for segment in parents {
        let next = match (segment, at) {
            (Segment::Seq { index }, Value::Array(items)) => items.get_mut(*index),
            (Segment::Map { key }, Value::Object(members)) => members.get_mut(key),
            _ => None,
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    match at {
        Value::Object(members) => members.remove(key).is_some(),
        _ => false,
    }
}

/// serde's "unknown field `portMapings`, expected one of `name`, `image`, ... (50 names)"
/// as "unknown field `portMapings` (did you mean `portMappings`?)" when one name is close;
/// else as serde says it.
fn unknown_field_message(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let near = known
        .iter()
        .map(|k| {
            (
                edit_distance(&field.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d);
    match near {
        Some((_, k)) => format!("unknown field `{field}` (did you mean `{k}`?)"),
        None => message.to_string(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn path_error(format: &'static str, path: String, message: String) -> TaskDefError {
    // serde_path_to_error shows the top level as "."; an unknown field's path already ends
    // with that field's name.
    let path = if path == "." { String::new() } else { path };
    // serde_yaml starts its messages with the path too.
    let message = message
        .strip_prefix(&format!("{path}: "))
        .map(str::to_string)
        .unwrap_or(message);
    TaskDefError {
        format,
        message: plain_serde_message(&message),
        path,
    }
}

/// serde's messages in the words of the file's author rather than of Rust: `expected
/// struct HealthCheck` is `expected an object`, `expected i64` is `expected a number (an
/// integer)`, `sequence` is `a list`.
pub fn plain_serde_message(message: &str) -> String {
    const INTEGERS: [&str; 12] = [
        "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize",
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("expected ") {
        let (before, after) = rest.split_at(at + "expected ".len());
        out.push_str(before);
        let word_end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let word = &after[..word_end];
        let (replacement, consumed) = if word == "struct" || word == "map" {
            // `struct Name`: the name goes too.
            let tail = &after[word_end..];
            let name_len = if word == "struct" {
                let name = tail.trim_start_matches(' ');
                let skipped = tail.len() - name.len();
                skipped
                    + name
                        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .unwrap_or(name.len())
            } else {
                0
            };
            ("an object", word_end + name_len)
        } else if INTEGERS.contains(&word) {
            ("a number (an integer)", word_end)
        } else if word == "f32" || word == "f64" {
            ("a number", word_end)
        } else {
            ("", 0)
        };
        out.push_str(replacement);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out.replace("expected a sequence", "expected a list")
        .replace("invalid type: sequence", "invalid type: a list")
        .replace("invalid type: map", "invalid type: an object")
}

/// One broken ECS rule: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// e.g. `containerDefinitions[1].portMappings[0].containerPort`.
    pub path: String,
    pub message: String,
}

struct Errors(Vec<ValidationError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn range(&mut self, path: impl Into<String>, value: Option<i64>, min: i64, max: i64) {
        if let Some(v) = value {
            if !(min..=max).contains(&v) {
                self.push(path, format!("{v} is out of range {min}-{max}"));
            }
        }
    }
}

/// 1-255 characters of `[A-Za-z0-9_-]`: ECS's rule for families, containers and volumes.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The least memory a container may be given (MiB): the container engine refuses less
/// (Docker: "Minimum memory limit allowed is 6MB"), as ECS's documentation warns.
pub const MIN_MEMORY_MIB: u64 = 6;

/// [`valid_name`]'s rule, for messages.
pub const NAME_RULE: &str = "must be 1-255 letters, digits, '_' or '-'";

/// Checks a parsed task definition against ECS's rules, returning every broken one.
pub fn validate(def: &TaskDefinitionInput) -> Result<(), Vec<ValidationError>> {
    let mut errs = Errors(Vec::new());

    if !valid_name(&def.family) {
        errs.push("family", format!("{:?} {NAME_RULE}", def.family));
    }
    let mode = def.network_mode();
    if let (Some(given), None) = (&def.network_mode, mode) {
        errs.push(
            "networkMode",
            format!("{given:?} is not one of bridge, host, awsvpc, none"),
        );
    }
    if let Some(pid) = &def.pid_mode {
        if pid != "host" && pid != "task" {
            errs.push("pidMode", format!("{pid:?} is not one of host, task"));
        }
    }
    if let Some(ipc) = &def.ipc_mode {
        if !["host", "task", "none"].contains(&ipc.as_str()) {
            errs.push("ipcMode", format!("{ipc:?} is not one of host, task, none"));
        }
    }
    match def.memory_mib() {
        None if def.memory.is_some() => errs.push(
            "memory",
            "must be a positive number of MiB (\"512\") or GB (\"1 GB\")",
        ),
        Some(0) => errs.push(
            "memory",
            "must be a positive number of MiB (\"512\") or GB (\"1 GB\")",
        ),
        Some(m) if m < MIN_MEMORY_MIB => errs.push(
            "memory",
            format!(
                "{m} MiB is below the minimum: a task needs at least {MIN_MEMORY_MIB} MiB \
                 of memory"
            ),
        ),
        _ => {}
    }
    if def.cpu.is_some() && def.cpu_units().is_none_or(|c| c == 0) {
        errs.push(
            "cpu",
            "must be a positive number of CPU units (\"256\") or vCPUs (\"0.25 vCPU\")",
        );
    }

    let mut volume_names: HashSet<&str> = HashSet::new();
    for (v, vol) in def.volumes.iter().flatten().enumerate() {
        let at = format!("volumes[{v}]");
        if !valid_name(&vol.name) {
            errs.push(format!("{at}.name"), format!("{:?} {NAME_RULE}", vol.name));
        } else if !volume_names.insert(vol.name.as_str()) {
            errs.push(
                format!("{at}.name"),
                format!("duplicate volume name {:?}", vol.name),
            );
        }
        if vol.host.is_some() && vol.docker_volume_configuration.is_some() {
            errs.push(
                at.clone(),
                "host and dockerVolumeConfiguration cannot both be given",
            );
        }
        if let Some(dv) = &vol.docker_volume_configuration {
            match dv.scope.as_deref() {
                None | Some("task") => {
                    if dv.autoprovision == Some(true) {
                        errs.push(
                            format!("{at}.dockerVolumeConfiguration.autoprovision"),
                            "autoprovision is only allowed with scope shared",
                        );
                    }
                }
                Some("shared") => {}
                Some(other) => errs.push(
                    format!("{at}.dockerVolumeConfiguration.scope"),
                    format!("{other:?} is not one of task, shared"),
                ),
            }
        }
    }

    if def.container_definitions.is_empty() {
        errs.push("containerDefinitions", "at least one container is required");
    }
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (i, c) in def.container_definitions.iter().enumerate() {
        if !valid_name(&c.name) {
            errs.push(
                format!("containerDefinitions[{i}].name"),
                format!("{:?} {NAME_RULE}", c.name),
            );
        } else if let Some(j) = first_index.get(c.name.as_str()) {
            errs.push(
                format!("containerDefinitions[{i}].name"),
                format!(
                    "duplicate container name {:?} (also containerDefinitions[{j}])",
                    c.name
                ),
            );
        } else {
            first_index.insert(c.name.as_str(), i);
        }
    }
    if !def.container_definitions.is_empty()
        && !def.container_definitions.iter().any(|c| c.is_essential())
    {
        errs.push(
            "containerDefinitions",
            "at least one container must be essential",
        );
    }

    let task_memory = def.memory.is_some();
    for (i, c) in def.container_definitions.iter().enumerate() {
        validate_container(def, i, c, mode, task_memory, &volume_names, &mut errs);
    }

    // What the containers reserve together must fit in the task's size (ECS's rule).
    if let Some(task_mib) = def.memory_mib().filter(|m| *m > 0) {
        let reserved: i64 = def
            .container_definitions
            .iter()
            .map(|c| c.memory_reservation.or(c.memory).unwrap_or(0).max(0))
            .sum();
        if reserved as u64 > task_mib {
            errs.push(
                "memory",
                format!(
                    "the containers reserve {reserved} MiB together (each its \
                     memoryReservation, else its memory), more than the task's {task_mib} MiB"
                ),
            );
        }
    }
    if let Some(task_cpu) = def.cpu_units().filter(|c| *c > 0) {
        let cpu: i64 = def
            .container_definitions
            .iter()
            .map(|c| c.cpu.unwrap_or(0).max(0))
            .sum();
        if cpu as u64 > task_cpu {
            errs.push(
                "cpu",
                format!(
                    "the containers' cpu adds up to {cpu} units, more than the task's {task_cpu}"
                ),
            );
        }
    }

    for cycle in find_cycles(def) {
        let first = cycle.first().map(String::as_str).unwrap_or_default();
        let i = first_index.get(first).copied().unwrap_or(0);
        errs.push(
            format!("containerDefinitions[{i}].dependsOn"),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
    }

    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(errs.0)
    }
}

fn validate_container(
    def: &TaskDefinitionInput,
    i: usize,
    c: &ContainerDefinition,
    mode: Option<NetworkMode>,
    task_memory: bool,
    volume_names: &HashSet<&str>,
    errs: &mut Errors,
) {
    let at = format!("containerDefinitions[{i}]");
    // Another container of this task, by name.
    let other = |name: &str| -> Option<&ContainerDefinition> {
        if name == c.name {
            None
        } else {
            def.container(name)
        }
    };

    if c.image.trim().is_empty() {
        errs.push(format!("{at}.image"), "an image is required");
    }

    // Ports.
    let mappings = c.port_mappings.as_deref().unwrap_or_default();
    if mode == Some(NetworkMode::None) && !mappings.is_empty() {
        errs.push(
            format!("{at}.portMappings"),
            "port mappings are not allowed with networkMode none",
        );
    }
    for (k, p) in mappings.iter().enumerate() {
        let pat = format!("{at}.portMappings[{k}]");
        match p.container_port {
            None if p.container_port_range.is_none() => {
                errs.push(format!("{pat}.containerPort"), "containerPort is required")
            }
            v => errs.range(format!("{pat}.containerPort"), v, 1, 65535),
        }
        if let Some(host) = p.host_port {
            match mode {
                Some(NetworkMode::Awsvpc) | Some(NetworkMode::Host) => {
                    if p.container_port.is_some_and(|cp| cp != host) {
                        errs.push(
                            format!("{pat}.hostPort"),
                            format!(
                                "hostPort must equal containerPort in {} mode",
                                mode.map_or("", NetworkMode::as_str)
                            ),
                        );
                    } else {
                        errs.range(format!("{pat}.hostPort"), Some(host), 1, 65535);
                    }
                }
                // bridge: 0 asks for an ephemeral port.
                _ => errs.range(format!("{pat}.hostPort"), Some(host), 0, 65535),
            }
        }
        if let Some(proto) = &p.protocol {
            if proto != "tcp" && proto != "udp" {
                errs.push(
                    format!("{pat}.protocol"),
                    format!("{proto:?} is not one of tcp, udp"),
                );
            }
        }
    }

    // Links.
    if let Some(links) = &c.links {
        if mode.is_some_and(|m| m != NetworkMode::Bridge) {
            errs.push(
                format!("{at}.links"),
                "links are only allowed with networkMode bridge",
            );
        }
        for (k, link) in links.iter().enumerate() {
            let target = link_target(link);
            if other(target).is_none() {
                errs.push(
                    format!("{at}.links[{k}]"),
                    format!("{target:?} is not another container of this task"),
                );
            }
        }
    }

    // dependsOn.
    for (k, dep) in c.depends_on.iter().flatten().enumerate() {
        let dat = format!("{at}.dependsOn[{k}]");
        let target = other(&dep.container_name);
        if target.is_none() {
            errs.push(
                format!("{dat}.containerName"),
                format!(
                    "{:?} is not another container of this task",
                    dep.container_name
                ),
            );
        }
        match DependencyCondition::parse(&dep.condition) {
            None => errs.push(
                format!("{dat}.condition"),
                format!(
                    "{:?} is not one of START, COMPLETE, SUCCESS, HEALTHY",
                    dep.condition
                ),
            ),
            Some(DependencyCondition::Complete | DependencyCondition::Success) => {
                if target.is_some_and(ContainerDefinition::is_essential) {
                    errs.push(
                        format!("{dat}.condition"),
                        format!(
                            "{} cannot be used on essential container {:?}",
                            dep.condition, dep.container_name
                        ),
                    );
                }
            }
            Some(DependencyCondition::Healthy) => {
                if target.is_some_and(|t| t.health_check.is_none()) {
                    errs.push(
                        format!("{dat}.condition"),
                        format!(
                            "HEALTHY needs a healthCheck on container {:?}",
                            dep.container_name
                        ),
                    );
                }
            }
            Some(DependencyCondition::Start) => {}
        }
    }

    // healthCheck.
    if let Some(hc) = &c.health_check {
        let hat = format!("{at}.healthCheck");
        match hc.command.first().map(String::as_str) {
            None => errs.push(format!("{hat}.command"), "the command must not be empty"),
            Some("CMD") | Some("CMD-SHELL") => {
                if hc.command.len() < 2 {
                    errs.push(
                        format!("{hat}.command"),
                        format!("{} needs a command after it", hc.command[0]),
                    );
                }
            }
            Some(first) => errs.push(
                format!("{hat}.command[0]"),
                format!("{first:?} must be CMD or CMD-SHELL"),
            ),
        }
        errs.range(format!("{hat}.interval"), hc.interval, 5, 300);
        errs.range(format!("{hat}.timeout"), hc.timeout, 2, 60);
        errs.range(format!("{hat}.retries"), hc.retries, 1, 10);
        errs.range(format!("{hat}.startPeriod"), hc.start_period, 0, 300);
    }

    // Memory.
    if c.memory.is_none() && c.memory_reservation.is_none() && !task_memory {
        errs.push(
            format!("{at}.memory"),
            "memory or memoryReservation is required when the task sets no memory",
        );
    }
    for (field, value) in [
        ("memory", c.memory),
        ("memoryReservation", c.memory_reservation),
    ] {
        if let Some(v) = value.filter(|&v| v < MIN_MEMORY_MIB as i64) {
            errs.push(
                format!("{at}.{field}"),
                format!(
                    "{v} MiB is below the minimum: a container needs at least \
                     {MIN_MEMORY_MIB} MiB of memory"
                ),
            );
        }
    }
    if let (Some(mem), Some(res)) = (c.memory, c.memory_reservation) {
        if res > mem {
            errs.push(
                format!("{at}.memoryReservation"),
                format!("memoryReservation {res} exceeds memory {mem}"),
            );
        }
    }
    errs.range(format!("{at}.cpu"), c.cpu, 0, i64::MAX);

    // Volumes.
    for (k, m) in c.mount_points.iter().flatten().enumerate() {
        let mat = format!("{at}.mountPoints[{k}]");
        match m.source_volume.as_deref() {
            None => errs.push(format!("{mat}.sourceVolume"), "sourceVolume is required"),
            Some(v) if !volume_names.contains(v) => errs.push(
                format!("{mat}.sourceVolume"),
                format!("{v:?} is not a volume of this task"),
            ),
            Some(_) => {}
        }
        if m.container_path.as_deref().is_none_or(str::is_empty) {
            errs.push(format!("{mat}.containerPath"), "containerPath is required");
        }
    }
    for (k, v) in c.volumes_from.iter().flatten().enumerate() {
        let vat = format!("{at}.volumesFrom[{k}].sourceContainer");
        match v.source_container.as_deref() {
            None => errs.push(vat, "sourceContainer is required"),
            Some(s) if other(s).is_none() => {
                errs.push(vat, format!("{s:?} is not another container of this task"))
            }
            Some(_) => {}
        }
    }

    // Ulimits.
    for (k, u) in c.ulimits.iter().flatten().enumerate() {
        let uat = format!("{at}.ulimits[{k}]");
        if !ULIMIT_NAMES.contains(&u.name.as_str()) {
            errs.push(
                format!("{uat}.name"),
                format!("{:?} is not one of {}", u.name, ULIMIT_NAMES.join(", ")),
            );
        }
        if u.soft_limit > u.hard_limit {
            errs.push(
                format!("{uat}.softLimit"),
                format!(
                    "softLimit {} exceeds hardLimit {}",
                    u.soft_limit, u.hard_limit
                ),
            );
        }
    }

    errs.range(format!("{at}.startTimeout"), c.start_timeout, 2, 120);
    errs.range(format!("{at}.stopTimeout"), c.stop_timeout, 2, 120);
}

/// A task-definition reference as ECS takes one: `family` (its latest ACTIVE revision),
/// `family:revision`, or `arn:aws:ecs:REGION:ACCOUNT:task-definition/family:revision`.
/// Parsed alike by the CLI (a malformed one is a usage error) and the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskDefRef {
    /// A bare family: its latest ACTIVE revision.
    Family(String),
    /// One revision, by `family:revision` or by ARN (`arn` holds the ARN as given).
    Revision {
        family: String,
        revision: u32,
        arn: Option<String>,
    },
}

const FORMS: &str = "name it as FAMILY, FAMILY:REVISION or \
    arn:aws:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION";

fn malformed(text: &str, why: impl std::fmt::Display) -> crate::api::ApiError {
    crate::api::ApiError::new(
        crate::api::ErrorCode::InvalidParameter,
        format!("{text:?} is not a task definition reference ({why}); {FORMS}"),
    )
}

impl TaskDefRef {
    pub fn parse(text: &str) -> Result<Self, crate::api::ApiError> {
        if let Some(rest) = text.strip_prefix("arn:") {
            // arn:PARTITION:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let [_partition, service, _region, _account, resource] = parts.as_slice() else {
                return Err(malformed(text, "an ARN has six ':'-separated parts"));
            };
            if *service != "ecs" {
                return Err(malformed(text, format!("{service:?} is not ecs")));
            }
            let Some(name) = resource.strip_prefix("task-definition/") else {
                return Err(malformed(text, "not a task-definition ARN"));
            };
            let Some((family, revision)) = name.rsplit_once(':') else {
                return Err(malformed(text, "the ARN names no revision"));
            };
            let (family, revision) = Self::family_revision(text, family, revision)?;
            return Ok(TaskDefRef::Revision {
                family,
                revision,
                arn: Some(text.to_string()),
            });
        }
        match text.split_once(':') {
            Some((family, revision)) => {
                let (family, revision) = Self::family_revision(text, family, revision)?;
                Ok(TaskDefRef::Revision {
                    family,
                    revision,
                    arn: None,
                })
            }
            None => Ok(TaskDefRef::Family(Self::parse_family(text, text)?)),
        }
    }

    fn parse_family(text: &str, family: &str) -> Result<String, crate::api::ApiError> {
        if valid_name(family) {
            Ok(family.to_string())
        } else {
            Err(malformed(
                text,
                format!("the family {family:?} {NAME_RULE}"),
            ))
        }
    }

    fn family_revision(
        text: &str,
        family: &str,
        revision: &str,
    ) -> Result<(String, u32), crate::api::ApiError> {
        let family = Self::parse_family(text, family)?;
        match revision.parse::<u32>() {
            Ok(r) if r >= 1 && revision.bytes().all(|b| b.is_ascii_digit()) => Ok((family, r)),
            _ => Err(malformed(
                text,
                format!("the revision {revision:?} is not a number from 1"),
            )),
        }
    }

    /// `(family, revision)` when the reference names one revision.
    pub fn revision(&self) -> Option<(&str, u32)> {
        match self {
            TaskDefRef::Family(_) => None,
            TaskDefRef::Revision {
                family, revision, ..
            } => Some((family, *revision)),
        }
    }

    pub fn family(&self) -> &str {
        match self {
            TaskDefRef::Family(family) | TaskDefRef::Revision { family, .. } => family,
        }
    }
}

impl std::fmt::Display for TaskDefRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskDefRef::Family(family) => f.write_str(family),
            TaskDefRef::Revision { arn: Some(arn), .. } => f.write_str(arn),
            TaskDefRef::Revision {
                family, revision, ..
            } => write!(f, "{family}:{revision}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// In the style of the AWS docs' sample: a web server and a client that waits for it to
    /// be healthy.
    const SAMPLE_JSON: &str = r#"{
        "family": "webserver",
        "networkMode": "bridge",
        "requiresCompatibilities": ["EC2"],
        "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "volumes": [{"name": "html", "host": {"sourcePath": "/srv/html"}}],
        "containerDefinitions": [
            {
                "name": "web",
                "image": "public.ecr.aws/docker/library/nginx:latest",
                "essential": true,
                "cpu": 128,
                "memory": 256,
                "portMappings": [{"containerPort": 80, "hostPort": 0, "protocol": "tcp"}],
                "mountPoints": [{"sourceVolume": "html", "containerPath": "/usr/share/nginx/html", "readOnly": true}],
                "healthCheck": {
                    "command": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
                    "interval": 10,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 10
                },
                "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 4096}],
                "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/web"}}
            },
            {
                "name": "client",
                "image": "public.ecr.aws/docker/library/busybox:latest",
                "essential": false,
                "memoryReservation": 64,
                "command": ["sh", "-c", "wget -qO- http://web/"],
                "environment": [{"name": "TARGET", "value": "web"}],
                "links": ["web"],
                "dependsOn": [{"containerName": "web", "condition": "HEALTHY"}],
                "stopTimeout": 10
            }
        ]
    }"#;

    const SAMPLE_YAML: &str = r#"
family: webserver
networkMode: bridge
requiresCompatibilities: [EC2]
executionRoleArn: arn:aws:iam::123456789012:role/ecsTaskExecutionRole
volumes:
  - name: html
    host:
      sourcePath: /srv/html
containerDefinitions:
  - name: web
    image: public.ecr.aws/docker/library/nginx:latest
    essential: true
    cpu: 128
    memory: 256
    portMappings:
      - containerPort: 80
        hostPort: 0
        protocol: tcp
    mountPoints:
      - sourceVolume: html
        containerPath: /usr/share/nginx/html
        readOnly: true
    healthCheck:
      command: [CMD-SHELL, "curl -f http://localhost/ || exit 1"]
      interval: 10
      timeout: 5
      retries: 3
      startPeriod: 10
    ulimits:
      - {name: nofile, softLimit: 1024, hardLimit: 4096}
    logConfiguration:
      logDriver: awslogs
      options:
        awslogs-group: /ecs/web
  - name: client
    image: public.ecr.aws/docker/library/busybox:latest
    essential: false
    memoryReservation: 64
    command: [sh, -c, "wget -qO- http://web/"]
    environment:
      - name: TARGET
        value: web
    links: [web]
    dependsOn:
      - containerName: web
        condition: HEALTHY
    stopTimeout: 10
"#;

    fn sample() -> Value {
        match serde_json::from_str(SAMPLE_JSON) {
            Ok(v) => v,
            Err(e) => panic!("sample JSON: {e}"),
        }
    }

    fn from_value(v: Value) -> TaskDefinitionInput {
        match parse(&v.to_string()) {
            Ok(d) => d,
            Err(e) => panic!("parse failed: {e}"),
        }
    }

    /// The validation errors for the sample after `edit`.
    fn errors_after(edit: impl FnOnce(&mut Value)) -> Vec<ValidationError> {
        let mut v = sample();
        edit(&mut v);
        match validate(&from_value(v)) {
            Ok(()) => Vec::new(),
            Err(errs) => errs,
        }
    }

    /// Asserts that `edit` makes exactly one error, at `path`, whose message contains
    /// `needle`.
    #[track_caller]
    fn assert_only_error(edit: impl FnOnce(&mut Value), path: &str, needle: &str) {
        let errs = errors_after(edit);
        assert_eq!(errs.len(), 1, "expected one error at {path}, got {errs:?}");
        assert_eq!(errs[0].path, path, "{errs:?}");
        assert!(
            errs[0].message.contains(needle),
            "message {:?} lacks {needle:?}",
            errs[0].message
        );
    }

    #[test]
    fn sample_parses_and_validates() {
        let def = from_value(sample());
        assert_eq!(def.family, "webserver");
        assert_eq!(def.container_definitions.len(), 2);
        let web = &def.container_definitions[0];
        let client = &def.container_definitions[1];
        assert!(web.is_essential());
        assert!(!client.is_essential());
        let hc = web.health_check.as_ref().expect("web has a health check");
        assert!(hc.is_shell());
        assert_eq!(hc.interval_or_default(), 10);
        assert_eq!(
            client.depends_on.as_ref().map(|d| d[0].condition.as_str()),
            Some("HEALTHY")
        );
        assert_eq!(client.stop_timeout_or_default(), 10);
        assert_eq!(web.stop_timeout_or_default(), 30);
        assert_eq!(def.network_mode(), Some(NetworkMode::Bridge));
        assert_eq!(validate(&def), Ok(()));
    }

    #[test]
    fn yaml_parses_to_the_same_value() {
        let from_json = parse(SAMPLE_JSON).expect("json");
        let from_yaml = parse(SAMPLE_YAML).expect("yaml");
        assert_eq!(from_json, from_yaml);
    }

    #[test]
    fn round_trip_keeps_aws_names() {
        let def = parse(SAMPLE_JSON).expect("json");
        let out = serde_json::to_value(&def).expect("serialize");
        assert_eq!(out, sample(), "serialization must give back the input");
        let text = out.to_string();
        for name in [
            "containerDefinitions",
            "networkMode",
            "executionRoleArn",
            "requiresCompatibilities",
            "portMappings",
            "containerPort",
            "hostPort",
            "mountPoints",
            "sourceVolume",
            "containerPath",
            "readOnly",
            "healthCheck",
            "startPeriod",
            "memoryReservation",
            "dependsOn",
            "containerName",
            "stopTimeout",
            "softLimit",
            "hardLimit",
            "logConfiguration",
            "sourcePath",
        ] {
            assert!(text.contains(&format!("\"{name}\"")), "{name} missing");
        }
        // None is skipped, not written as null.
        assert!(!text.contains("null"), "{text}");
        assert_eq!(parse(&text).expect("reparse"), def);
    }

    #[test]
    fn environment_file_type_and_volume_configs_keep_aws_names() {
        let mut v = sample();
        v["containerDefinitions"][0]["environmentFiles"] =
            json!([{"value": "arn:aws:s3:::b/app.env", "type": "s3"}]);
        v["containerDefinitions"][0]["extraHosts"] =
            json!([{"hostname": "db", "ipAddress": "10.0.0.5"}]);
        v["volumes"] = json!([
            {"name": "html", "host": {"sourcePath": "/srv/html"}},
            {"name": "data", "dockerVolumeConfiguration": {
                "scope": "shared", "autoprovision": true, "driver": "local",
                "driverOpts": {"type": "tmpfs"}, "labels": {"a": "b"}}},
            {"name": "efs", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}
        ]);
        let def = from_value(v.clone());
        assert_eq!(serde_json::to_value(&def).expect("serialize"), v);
        assert_eq!(validate(&def), Ok(()));
    }

    #[test]
    fn parse_errors_name_the_field_path() {
        let mut v = sample();
        v["containerDefinitions"][1]["portMappings"] = json!([{"containerPort": "eighty"}]);
        let err = parse(&v.to_string()).expect_err("string port");
        assert_eq!(
            err.path,
            "containerDefinitions[1].portMappings[0].containerPort"
        );
        assert_eq!(err.format, "json");
        let shown = err.to_string();
        assert!(
            shown
                .starts_with("containerDefinitions[1].portMappings[0].containerPort: invalid type"),
            "{shown}"
        );

        let yaml = SAMPLE_YAML.replace("containerPort: 80", "containerPort: [80]");
        let err = parse(&yaml).expect_err("sequence port");
        assert_eq!(err.format, "yaml");
        assert_eq!(
            err.path,
            "containerDefinitions[0].portMappings[0].containerPort"
        );
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }

    #[test]
    fn parse_errors_speak_of_json_not_of_rust() {
        for text in ["not json", "[1]", "- a\n- b\n", "42"] {
            let err = parse(text).expect_err(text);
            assert_eq!(
                err.to_string(),
                "the task definition must be a JSON or YAML object \
                 (with family and containerDefinitions)",
                "{text}"
            );
        }
        assert!(parse(" \n").unwrap_err().to_string().contains("is empty"));
        let err = parse(
            r#"{"family":"x","containerDefinitions":[{"name":"a","image":"b","memory":"64"}]}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "containerDefinitions[0].memory: invalid type: string \"64\", \
                 expected a number (an integer)"
            ),
            "{err}"
        );
        let err = parse("family: [x]\ncontainerDefinitions: []\n").unwrap_err();
        assert_eq!(err.path, "family");
        assert!(
            err.message
                .starts_with("invalid type: a list, expected a string"),
            "{}",
            err.message
        );
        let err =
            parse(r#"{"family":"x","containerDefinitions":[{"healthCheck":1}]}"#).unwrap_err();
        assert!(
            err.message.contains("expected an object") && !err.message.contains("HealthCheck"),
            "{}",
            err.message
        );
        assert_eq!(
            plain_serde_message("invalid type: map, expected u32"),
            "invalid type: an object, expected a number (an integer)"
        );
    }

    #[test]
    fn unknown_fields_are_errors_naming_their_path() {
        let mut v = sample();
        v["containerDefinitions"][0]["healthCheck"]["intervalSeconds"] = json!(5);
        let err = parse(&v.to_string()).expect_err("unknown field");
        assert_eq!(
            err.path,
            "containerDefinitions[0].healthCheck.intervalSeconds"
        );
        assert!(
            err.message.contains("unknown field `intervalSeconds`"),
            "{}",
            err.message
        );

        let mut v = sample();
        v["familyName"] = json!("x");
        let err = parse(&v.to_string()).expect_err("unknown top-level field");
        assert_eq!(err.path, "familyName");

        let yaml = SAMPLE_YAML.replace(
            "    essential: false\n",
            "    essential: false\n    restart: always\n",
        );
        let err = parse(&yaml).expect_err("unknown yaml field");
        assert_eq!(err.path, "containerDefinitions[1].restart");
    }

    #[test]
    fn missing_required_fields_and_bad_syntax_are_errors() {
        let err = parse(r#"{"containerDefinitions": []}"#).expect_err("no family");
        assert!(err.message.contains("missing field `family`"), "{err}");
        let err = parse(r#"{"family": "x", "containerDefinitions": [}"#).expect_err("syntax");
        assert_eq!(err.format, "json");
        assert!(err.message.contains("line 1"), "{err}");
    }

    #[test]
    fn family_rule() {
        assert_only_error(
            |v| v["family"] = json!("web server"),
            "family",
            "must be 1-255",
        );
        assert_only_error(|v| v["family"] = json!(""), "family", "must be 1-255");
        assert_only_error(
            |v| v["family"] = json!("a".repeat(256)),
            "family",
            "must be 1-255",
        );
        assert!(errors_after(|v| v["family"] = json!("a".repeat(255))).is_empty());
    }

    #[test]
    fn at_least_one_container() {
        assert_only_error(
            |v| v["containerDefinitions"] = json!([]),
            "containerDefinitions",
            "at least one container",
        );
    }

    #[test]
    fn container_names_are_valid_and_unique() {
        assert_only_error(
            |v| {
                v["containerDefinitions"][1]["name"] = json!("web");
                v["containerDefinitions"][1]["links"] = json!([]);
                v["containerDefinitions"][1]["dependsOn"] = json!([]);
            },
            "containerDefinitions[1].name",
            "duplicate container name",
        );
        let errs = errors_after(|v| v["containerDefinitions"][0]["name"] = json!("web.1"));
        assert!(
            errs.iter()
                .any(|e| e.path == "containerDefinitions[0].name"
                    && e.message.contains("must be 1-255")),
            "{errs:?}"
        );
    }

    #[test]
    fn at_least_one_essential_container() {
        assert_only_error(
            |v| v["containerDefinitions"][0]["essential"] = json!(false),
            "containerDefinitions",
            "essential",
        );
        // essential defaults to true.
        let mut v = sample();
        v["containerDefinitions"][0]
            .as_object_mut()
            .expect("object")
            .remove("essential");
        let def = from_value(v);
        assert!(def.container_definitions[0].is_essential());
        assert_eq!(validate(&def), Ok(()));
    }

    #[test]
    fn network_mode_rule() {
        assert_only_error(
            |v| v["networkMode"] = json!("nat"),
            "networkMode",
            "not one of",
        );
    }

    #[test]
    fn port_rules() {
        let p = "containerDefinitions[0].portMappings[0]";
        assert_only_error(
            |v| v["containerDefinitions"][0]["portMappings"][0]["containerPort"] = json!(0),
            &format!("{p}.containerPort"),
            "out of range 1-65535",
        );
        assert_only_error(
            |v| v["containerDefinitions"][0]["portMappings"][0]["containerPort"] = json!(65536),
            &format!("{p}.containerPort"),
            "out of range",
        );
        assert_only_error(
            |v| v["containerDefinitions"][0]["portMappings"][0]["hostPort"] = json!(70000),
            &format!("{p}.hostPort"),
            "out of range 0-65535",
        );
        assert_only_error(
            |v| v["containerDefinitions"][0]["portMappings"][0]["hostPort"] = json!(-1),
            &format!("{p}.hostPort"),
            "out of range",
        );
        assert_only_error(
            |v| v["containerDefinitions"][0]["portMappings"][0]["protocol"] = json!("sctp"),
            &format!("{p}.protocol"),
            "tcp, udp",
        );
        assert_only_error(
            |v| {
                v["containerDefinitions"][0]["portMappings"][0]
                    .as_object_mut()
                    .expect("object")
                    .remove("containerPort");
            },
            &format!("{p}.containerPort"),
            "required",
        );
    }

    #[test]
    fn host_port_must_equal_container_port_in_awsvpc_and_host() {
        for mode in ["awsvpc", "host"] {
            let p = "containerDefinitions[0].portMappings[0].hostPort";
            let edit = |v: &mut Value| {
                v["networkMode"] = json!(mode);
                v["containerDefinitions"][1]
                    .as_object_mut()
                    .expect("object")
                    .remove("links");
            };
            // hostPort 0 is not ephemeral outside bridge.
            assert_only_error(edit, p, "must equal containerPort");
            let errs = errors_after(|v| {
                edit(v);
                v["containerDefinitions"][0]["portMappings"][0]["hostPort"] = json!(80);
            });
            assert!(errs.is_empty(), "{errs:?}");
            let errs = errors_after(|v| {
                edit(v);
                v["containerDefinitions"][0]["portMappings"][0]
                    .as_object_mut()
                    .expect("object")
                    .remove("hostPort");
            });
            assert!(errs.is_empty(), "{errs:?}");
        }
    }

    #[test]
    fn no_port_mappings_without_a_network() {
        assert_only_error(
            |v| {
                v["networkMode"] = json!("none");
                v["containerDefinitions"][1]
                    .as_object_mut()
                    .expect("object")
                    .remove("links");
            },
            "containerDefinitions[0].portMappings",
            "networkMode none",
        );
    }

    #[test]
    fn depends_on_condition_must_be_known() {
        assert_only_error(
            |v| v["containerDefinitions"][1]["dependsOn"][0]["condition"] = json!("READY"),
            "containerDefinitions[1].dependsOn[0].condition",
            "START, COMPLETE, SUCCESS, HEALTHY",
        );
    }

    #[test]
    fn depends_on_must_name_another_container() {
        assert_only_error(
            |v| v["containerDefinitions"][1]["dependsOn"][0]["containerName"] = json!("db"),
            "containerDefinitions[1].dependsOn[0].containerName",
            "not another container",
        );
        assert_only_error(
            |v| {
                v["containerDefinitions"][1]["dependsOn"] =
                    json!([{"containerName": "client", "condition": "START"}]);
            },
            "containerDefinitions[1].dependsOn[0].containerName",
            "not another container",
        );
    }

    #[test]
    fn complete_and_success_not_on_essential_containers() {
        for cond in ["COMPLETE", "SUCCESS"] {
            assert_only_error(
                |v| v["containerDefinitions"][1]["dependsOn"][0]["condition"] = json!(cond),
                "containerDefinitions[1].dependsOn[0].condition",
                "essential container \"web\"",
            );
        }
        // Fine on a non-essential one.
        let errs = errors_after(|v| {
            v["containerDefinitions"][0]["dependsOn"] =
                json!([{"containerName": "init", "condition": "SUCCESS"}]);
            v["containerDefinitions"]
                .as_array_mut()
                .expect("array")
                .push(
                    json!({"name": "init", "image": "busybox", "essential": false, "memory": 32}),
                );
        });
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn healthy_needs_a_health_check() {
        assert_only_error(
            |v| {
                v["containerDefinitions"][0]
                    .as_object_mut()
                    .expect("object")
                    .remove("healthCheck");
            },
            "containerDefinitions[1].dependsOn[0].condition",
            "needs a healthCheck",
        );
    }

    #[test]
    fn dependency_cycles_are_named() {
        let errs = errors_after(|v| {
            v["containerDefinitions"][0]["dependsOn"] =
                json!([{"containerName": "client", "condition": "START"}]);
            v["containerDefinitions"][1]["essential"] = json!(true);
            v["containerDefinitions"][1]["dependsOn"][0]["condition"] = json!("START");
        });
        assert_eq!(
            errs,
            vec![ValidationError {
                path: "containerDefinitions[0].dependsOn".into(),
                message: "dependency cycle: web -> client -> web".into(),
            }]
        );

        // A longer one, through a link.
        let def = from_value(json!({
            "family": "f",
            "containerDefinitions": [
                {"name": "a", "image": "i", "memory": 8, "dependsOn": [{"containerName": "b", "condition": "START"}]},
                {"name": "b", "image": "i", "memory": 8, "links": ["c:see"]},
                {"name": "c", "image": "i", "memory": 8, "dependsOn": [{"containerName": "a", "condition": "START"}]},
                {"name": "d", "image": "i", "memory": 8}
            ]
        }));
        let errs = validate(&def).expect_err("cycle");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].message, "dependency cycle: a -> b -> c -> a");
        let err = def.start_order().expect_err("cycle");
        assert_eq!(err.cycle, ["a", "b", "c", "a"]);
        assert_eq!(err.to_string(), "dependency cycle: a -> b -> c -> a");
    }

    #[test]
    fn links_only_in_bridge_and_to_existing_containers() {
        assert_only_error(
            |v| v["containerDefinitions"][1]["links"] = json!(["db:database"]),
            "containerDefinitions[1].links[0]",
            "\"db\" is not another container",
        );
        assert!(
            errors_after(|v| v["containerDefinitions"][1]["links"] = json!(["web:www"])).is_empty()
        );
        assert_only_error(
            |v| {
                v["networkMode"] = json!("awsvpc");
                v["containerDefinitions"][0]["portMappings"][0]["hostPort"] = json!(80);
            },
            "containerDefinitions[1].links",
            "bridge",
        );
    }

    #[test]
    fn health_check_rules() {
        let h = "containerDefinitions[0].healthCheck";
        let set = |field: &'static str, value: Value| {
            move |v: &mut Value| v["containerDefinitions"][0]["healthCheck"][field] = value
        };
        assert_only_error(set("command", json!([])), &format!("{h}.command"), "empty");
        assert_only_error(
            set("command", json!(["CMD-SHELL"])),
            &format!("{h}.command"),
            "needs a command",
        );
        assert_only_error(
            set("command", json!(["curl", "-f", "http://localhost/"])),
            &format!("{h}.command[0]"),
            "CMD or CMD-SHELL",
        );
        assert!(errors_after(set("command", json!(["CMD", "true"]))).is_empty());
        assert_only_error(set("interval", json!(4)), &format!("{h}.interval"), "5-300");
        assert_only_error(
            set("interval", json!(301)),
            &format!("{h}.interval"),
            "5-300",
        );
        assert_only_error(set("timeout", json!(1)), &format!("{h}.timeout"), "2-60");
        assert_only_error(set("timeout", json!(61)), &format!("{h}.timeout"), "2-60");
        assert_only_error(set("retries", json!(0)), &format!("{h}.retries"), "1-10");
        assert_only_error(set("retries", json!(11)), &format!("{h}.retries"), "1-10");
        assert_only_error(
            set("startPeriod", json!(-1)),
            &format!("{h}.startPeriod"),
            "0-300",
        );
        assert_only_error(
            set("startPeriod", json!(301)),
            &format!("{h}.startPeriod"),
            "0-300",
        );
    }

    #[test]
    fn health_check_defaults() {
        let hc: HealthCheck =
            serde_json::from_value(json!({"command": ["CMD", "true"]})).expect("health check");
        assert_eq!(hc.interval_or_default(), 30);
        assert_eq!(hc.timeout_or_default(), 5);
        assert_eq!(hc.retries_or_default(), 3);
        assert_eq!(hc.start_period_or_default(), 0);
        assert!(!hc.is_shell());
    }

    #[test]
    fn memory_rules() {
        assert_only_error(
            |v| {
                v["containerDefinitions"][1]
                    .as_object_mut()
                    .expect("object")
                    .remove("memoryReservation");
            },
            "containerDefinitions[1].memory",
            "memory or memoryReservation",
        );
        // Task-level memory lifts the requirement.
        let errs = errors_after(|v| {
            v["memory"] = json!("1 GB");
            v["containerDefinitions"][1]
                .as_object_mut()
                .expect("object")
                .remove("memoryReservation");
        });
        assert!(errs.is_empty(), "{errs:?}");
        assert_only_error(
            |v| v["containerDefinitions"][0]["memoryReservation"] = json!(512),
            "containerDefinitions[0].memoryReservation",
            "exceeds memory 256",
        );
        assert_only_error(|v| v["memory"] = json!("lots"), "memory", "MiB");
        // The containers' reservations (web's memory 256, client's reservation 64) and cpu
        // (128) must fit in the task's.
        assert!(errors_after(|v| {
            v["memory"] = json!("320");
            v["cpu"] = json!("128");
        })
        .is_empty());
        assert_only_error(
            |v| v["memory"] = json!("319"),
            "memory",
            "reserve 320 MiB together",
        );
        assert_only_error(
            |v| v["cpu"] = json!("0.1 vCPU"),
            "cpu",
            "adds up to 128 units, more than the task's 102",
        );
        assert_only_error(|v| v["cpu"] = json!("fast"), "cpu", "CPU units");
        let def = from_value({
            let mut v = sample();
            v["memory"] = json!("2GB");
            v["cpu"] = json!("0.5 vCPU");
            v
        });
        assert_eq!(def.memory_mib(), Some(2048));
        assert_eq!(def.cpu_units(), Some(512));
    }

    #[test]
    fn mount_points_need_a_task_volume() {
        assert_only_error(
            |v| v["containerDefinitions"][0]["mountPoints"][0]["sourceVolume"] = json!("logs"),
            "containerDefinitions[0].mountPoints[0].sourceVolume",
            "\"logs\" is not a volume",
        );
        assert_only_error(
            |v| v["volumes"] = json!([{"name": "html"}, {"name": "html"}]),
            "volumes[1].name",
            "duplicate volume name",
        );
        assert_only_error(
            |v| v["volumes"][0]["dockerVolumeConfiguration"] = json!({"scope": "shared"}),
            "volumes[0]",
            "cannot both",
        );
        assert_only_error(
            |v| v["volumes"] = json!([{"name": "html", "dockerVolumeConfiguration": {"scope": "task", "autoprovision": true}}]),
            "volumes[0].dockerVolumeConfiguration.autoprovision",
            "shared",
        );
    }

    #[test]
    fn docker_volume_scope_rule() {
        assert_only_error(
            |v| {
                v["volumes"] =
                    json!([{"name": "html", "dockerVolumeConfiguration": {"scope": "cluster"}}])
            },
            "volumes[0].dockerVolumeConfiguration.scope",
            "task, shared",
        );
    }

    #[test]
    fn volumes_from_must_name_a_container() {
        assert_only_error(
            |v| v["containerDefinitions"][1]["volumesFrom"] = json!([{"sourceContainer": "data"}]),
            "containerDefinitions[1].volumesFrom[0].sourceContainer",
            "\"data\" is not another container",
        );
        assert!(
            errors_after(|v| v["containerDefinitions"][1]["volumesFrom"] =
                json!([{"sourceContainer": "web", "readOnly": true}]))
            .is_empty()
        );
    }

    #[test]
    fn ulimit_rules() {
        assert_only_error(
            |v| v["containerDefinitions"][0]["ulimits"][0]["name"] = json!("files"),
            "containerDefinitions[0].ulimits[0].name",
            "not one of core",
        );
        assert_only_error(
            |v| v["containerDefinitions"][0]["ulimits"][0]["softLimit"] = json!(8192),
            "containerDefinitions[0].ulimits[0].softLimit",
            "exceeds hardLimit 4096",
        );
    }

    #[test]
    fn timeout_rules() {
        assert_only_error(
            |v| v["containerDefinitions"][1]["stopTimeout"] = json!(1),
            "containerDefinitions[1].stopTimeout",
            "2-120",
        );
        assert_only_error(
            |v| v["containerDefinitions"][1]["startTimeout"] = json!(121),
            "containerDefinitions[1].startTimeout",
            "2-120",
        );
    }

    #[test]
    fn start_order_levels() {
        let def = parse(SAMPLE_JSON).expect("sample");
        assert_eq!(
            def.start_order().expect("no cycle"),
            vec![vec!["web".to_string()], vec!["client".to_string()]]
        );

        let def = from_value(json!({
            "family": "f",
            "memory": "512",
            "containerDefinitions": [
                {"name": "app", "image": "i", "dependsOn": [
                    {"containerName": "db", "condition": "HEALTHY"},
                    {"containerName": "migrate", "condition": "SUCCESS"}]},
                {"name": "db", "image": "i", "healthCheck": {"command": ["CMD", "pg_isready"]}},
                {"name": "migrate", "image": "i", "essential": false,
                 "dependsOn": [{"containerName": "db", "condition": "HEALTHY"}]},
                {"name": "cache", "image": "i"},
                {"name": "sidecar", "image": "i", "volumesFrom": [{"sourceContainer": "app"}]}
            ]
        }));
        assert_eq!(validate(&def), Ok(()));
        let levels = def.start_order().expect("no cycle");
        assert_eq!(
            levels,
            vec![
                vec!["db".to_string(), "cache".to_string()],
                vec!["migrate".to_string()],
                vec!["app".to_string()],
                vec!["sidecar".to_string()],
            ]
        );
    }

    #[test]
    fn ignored_fields_lists_what_was_given() {
        let def = parse(SAMPLE_JSON).expect("sample");
        assert_eq!(
            def.ignored_fields(),
            vec!["executionRoleArn", "requiresCompatibilities"]
        );
        let mut v = sample();
        v["taskRoleArn"] = json!("arn:aws:iam::1:role/r");
        v["runtimePlatform"] = json!({"cpuArchitecture": "X86_64"});
        v["containerDefinitions"][0]["secrets"] = json!([{"name": "A", "valueFrom": "arn:x"}]);
        v["containerDefinitions"][1]["secrets"] = json!([{"name": "B", "valueFrom": "arn:y"}]);
        let def = from_value(v);
        assert_eq!(
            def.ignored_fields(),
            vec![
                "executionRoleArn",
                "requiresCompatibilities",
                "runtimePlatform",
            ]
        );
    }

    #[test]
    fn describe_output_reads_back_without_its_read_only_fields() {
        let mut described = sample();
        described["taskDefinitionArn"] =
            json!("arn:aws:ecs:us-east-1:123456789012:task-definition/webserver:7");
        described["revision"] = json!(7);
        described["status"] = json!("ACTIVE");
        described["requiresAttributes"] =
            json!([{"name": "com.amazonaws.ecs.capability.docker-remote-api.1.18"}]);
        described["compatibilities"] = json!(["EC2"]);
        described["registeredAt"] = json!("2024-05-01T10:00:00.000Z");
        described["registeredBy"] = json!("arn:aws:iam::123456789012:user/ci");
        let read = super::read(&described.to_string()).expect("describe's definition");
        assert_eq!(read.definition, from_value(sample()));
        assert_eq!(
            read.dropped,
            [
                "taskDefinitionArn",
                "revision",
                "status",
                "requiresAttributes",
                "compatibilities",
                "registeredAt",
                "registeredBy"
            ]
        );
        assert!(!read.unwrapped);

        // The whole answer, tags beside the definition (describe --include TAGS), and ecrl's
        // own ignoredFields; in YAML too.
        let answer = json!({
            "taskDefinition": described,
            "tags": [{"key": "team", "value": "web"}],
            "ignoredFields": ["executionRoleArn"]
        });
        let read = super::read(&answer.to_string()).expect("describe's answer");
        assert!(read.unwrapped);
        assert_eq!(read.dropped.len(), 7);
        let mut tagged = sample();
        tagged["tags"] = json!([{"key": "team", "value": "web"}]);
        assert_eq!(read.definition, from_value(tagged.clone()));
        let yaml = serde_yaml::to_string(&answer).expect("yaml");
        assert_eq!(
            super::read(&yaml).expect("yaml answer").definition,
            from_value(tagged)
        );

        // Plain input drops nothing.
        let read = super::read(SAMPLE_JSON).expect("sample");
        assert!(read.dropped.is_empty() && !read.unwrapped);
    }

    #[test]
    fn the_wrapper_takes_tags_only_and_paths_name_it() {
        let answer = json!({"taskDefinition": sample(), "nextToken": "x"});
        let errs = read(&answer.to_string()).expect_err("unknown sibling").0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "nextToken");
        let mut tagged = sample();
        tagged["tags"] = json!([{"key": "a", "value": "1"}]);
        let answer = json!({"taskDefinition": tagged, "tags": [{"key": "a", "value": "2"}]});
        let errs = read(&answer.to_string()).expect_err("two tag lists").0;
        assert_eq!(errs[0].path, "tags");
        let mut bad = sample();
        bad["containerDefinitions"][0]["portMapings"] = json!([]);
        let errs = read(&json!({"taskDefinition": bad}).to_string())
            .expect_err("unknown inside")
            .0;
        assert_eq!(
            errs[0].path,
            "taskDefinition.containerDefinitions[0].portMapings"
        );
        let errs = read(r#"{"taskDefinition": []}"#)
            .expect_err("not an object")
            .0;
        assert_eq!(errs[0].path, "taskDefinition");
    }

    #[test]
    fn every_unknown_field_is_reported_at_once() {
        let mut v = sample();
        v["familyName"] = json!("x");
        v["containerDefinitions"][0]["portMapings"] = json!([]);
        v["containerDefinitions"][1]["healthCheck"] =
            json!({"command": ["CMD", "true"], "intervalSeconds": 5});
        v["containerDefinitions"][1]["restart"] = json!("always");
        let errs = read(&v.to_string()).expect_err("unknown fields").0;
        let mut paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "containerDefinitions[0].portMapings",
                "containerDefinitions[1].healthCheck.intervalSeconds",
                "containerDefinitions[1].restart",
                "familyName"
            ]
        );
        let shown = TaskDefErrors(errs).to_string();
        assert!(
            shown.contains(
                "containerDefinitions[0].portMapings: unknown field `portMapings` \
                 (did you mean `portMappings`?)"
            ),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 4, "{shown}");

        // With a type error after them, that comes too; YAML alike.
        let yaml = SAMPLE_YAML
            .replace(
                "    essential: false\n",
                "    essential: false\n    restart: always\n",
            )
            .replace("containerPort: 80", "containerPort: eighty");
        let errs = read(&yaml).expect_err("yaml").0;
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["containerDefinitions[0].portMappings[0].containerPort",],
            "the type error stops the reading: {errs:?}"
        );
        let yaml = SAMPLE_YAML
            .replace(
                "    essential: false\n",
                "    essential: false\n    restart: always\n",
            )
            .replace(
                "    essential: true\n",
                "    essential: true\n    restrat: no\n",
            );
        let errs = read(&yaml).expect_err("yaml").0;
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs.iter().all(|e| e.format == "yaml"));
    }

    #[test]
    fn empty_ignored_fields_are_not_listed() {
        let mut v = sample();
        let obj = v.as_object_mut().expect("object");
        obj.remove("executionRoleArn");
        obj.remove("requiresCompatibilities");
        v["placementConstraints"] = json!([]);
        v["inferenceAccelerators"] = json!([]);
        v["proxyConfiguration"] = json!({});
        v["requiresCompatibilities"] = json!([]);
        v["enableFaultInjection"] = json!(false);
        v["taskRoleArn"] = json!("");
        v["volumes"][0]["configuredAtLaunch"] = json!(false);
        v["containerDefinitions"][0]["logConfiguration"] = json!(null);
        v["containerDefinitions"][0]["secrets"] = json!([]);
        v["containerDefinitions"][1]["resourceRequirements"] = json!([]);
        v["containerDefinitions"][1]["credentialSpecs"] = json!([]);
        let def = from_value(v.clone());
        assert_eq!(def.ignored_fields(), Vec::<&str>::new());
        v["placementConstraints"] = json!([{"type": "memberOf", "expression": "x"}]);
        v["enableFaultInjection"] = json!(true);
        assert_eq!(
            from_value(v).ignored_fields(),
            ["placementConstraints", "enableFaultInjection"]
        );
    }

    #[test]
    fn a_deeply_nested_definition_is_refused_quickly() {
        let depth = 100_000;
        let labels = format!("{}\"x\"{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        let json = format!(
            r#"{{"family":"f","containerDefinitions":[{{"name":"a","image":"b","memory":8,"dockerLabels":{labels}}}]}}"#
        );
        let yaml = format!(
            "family: f\ncontainerDefinitions:\n  - name: a\n    image: b\n    dockerLabels: {labels}\n"
        );
        let started = std::time::Instant::now();
        for (text, format) in [(json, "json"), (yaml, "yaml")] {
            let err = parse(&text).expect_err("too deep");
            assert_eq!(err.format, format);
            assert!(err.message.contains("nested more than 127 deep"), "{err}");
        }
        // Block style nests without brackets: serde_yaml's own limit, in the same words.
        let dashes = format!(
            "family: f\ncontainerDefinitions:\n  {}x\n",
            "- ".repeat(1000)
        );
        let err = parse(&dashes).expect_err("too deep");
        assert!(err.message.contains("nested more than 127 deep"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn all_errors_are_reported_together() {
        let errs = errors_after(|v| {
            v["family"] = json!("bad name");
            v["containerDefinitions"][0]["stopTimeout"] = json!(500);
            v["containerDefinitions"][1]["portMappings"] =
                json!([{"containerPort": 8080, "protocol": "icmp"}]);
        });
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "family",
                "containerDefinitions[0].stopTimeout",
                "containerDefinitions[1].portMappings[0].protocol"
            ]
        );
    }
}

/// Text from outside is hostile until parsed: deep nesting and YAML alias bombs must end in
/// an error, quickly, not in a stack overflow or a blown memory limit.
#[cfg(test)]
mod hostile_input {
    use super::*;

    fn quickly_refused(text: &str) {
        let started = std::time::Instant::now();
        assert!(parse(text).is_err());
        // Release builds take milliseconds; debug ones (and a busy machine) get slack.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?} for {:?}...",
            started.elapsed(),
            &text[..20.min(text.len())]
        );
    }

    #[test]
    fn deep_nesting_is_an_error() {
        for open in ["[", "{\"a\":", "- ", "{a: "] {
            quickly_refused(&open.repeat(50_000));
        }
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        quickly_refused(&format!(
            r#"{{"family":"f","containerDefinitions":[],"placementConstraints":{deep}}}"#
        ));
        quickly_refused(&format!(
            "family: f\ncontainerDefinitions: []\nplacementConstraints: {deep}\n"
        ));
    }

    #[test]
    fn yaml_alias_bombs_are_an_error() {
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (i, name) in "bcdefghi".chars().enumerate() {
            let prev = (b'a' + i as u8) as char;
            bomb.push_str(&format!(
                "{name}: &{name} [{}]\n",
                vec![format!("*{prev}"); 9].join(",")
            ));
        }
        quickly_refused(&bomb);
        quickly_refused(&format!(
            "family: f\ncontainerDefinitions: []\nplacementConstraints: {{x: &x [1, 2]}}\n{bomb}"
        ));
    }

    #[test]
    fn what_reaches_the_host_is_named_by_its_path() {
        let plain = parse(
            r#"{"family": "web", "containerDefinitions": [{"name": "app", "image": "busybox",
                "memory": 32, "environmentFiles": []}],
                "volumes": [{"name": "data", "dockerVolumeConfiguration": {"scope": "task"}}]}"#,
        )
        .unwrap();
        assert_eq!(plain.host_access(), Vec::<String>::new());
        let escape = parse(
            r#"{"family": "web", "networkMode": "host", "pidMode": "host", "ipcMode": "host",
                "volumes": [{"name": "root", "host": {"sourcePath": "/"}},
                            {"name": "bind", "dockerVolumeConfiguration": {"driver": "local",
                             "driverOpts": {"type": "none", "o": "bind", "device": "/etc"}}}],
                "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 32,
                  "privileged": true, "dockerSecurityOptions": ["seccomp=unconfined"],
                  "environmentFiles": [{"value": "/etc/shadow", "type": "s3"}],
                  "linuxParameters": {"capabilities": {"add": ["SYS_ADMIN"]},
                                      "devices": [{"hostPath": "/dev/sda"}]}}]}"#,
        )
        .unwrap();
        assert_eq!(
            escape.host_access(),
            [
                "volumes[0].host.sourcePath",
                "volumes[1].dockerVolumeConfiguration.driverOpts",
                "networkMode",
                "pidMode",
                "ipcMode",
                "containerDefinitions[0].privileged",
                "containerDefinitions[0].environmentFiles",
                "containerDefinitions[0].dockerSecurityOptions",
                "containerDefinitions[0].linuxParameters.capabilities.add",
                "containerDefinitions[0].linuxParameters.devices",
            ]
        );
    }
}
