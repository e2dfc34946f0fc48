//! ECS task definitions: the RegisterTaskDefinition input model the daemon and the CLI share.
//!
//! This module owns the serde types (AWS's exact camelCase field names, unknown fields
//! rejected), parsing from JSON or YAML with errors that name the field path, validation
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
    pub fn ignored_fields(&self) -> Vec<&'static str> {
        let mut out: Vec<&'static str> = Vec::new();
        let mut add = |given: bool, name: &'static str| {
            if given && !out.contains(&name) {
                out.push(name);
            }
        };
        add(self.task_role_arn.is_some(), "taskRoleArn");
        add(self.execution_role_arn.is_some(), "executionRoleArn");
        add(self.placement_constraints.is_some(), "placementConstraints");
        add(
            self.requires_compatibilities.is_some(),
            "requiresCompatibilities",
        );
        add(self.proxy_configuration.is_some(), "proxyConfiguration");
        add(
            self.inference_accelerators.is_some(),
            "inferenceAccelerators",
        );
        add(self.ephemeral_storage.is_some(), "ephemeralStorage");
        add(self.runtime_platform.is_some(), "runtimePlatform");
        add(
            self.enable_fault_injection.is_some(),
            "enableFaultInjection",
        );
        for v in self.volumes.iter().flatten() {
            add(
                v.efs_volume_configuration.is_some(),
                "efsVolumeConfiguration",
            );
            add(
                v.fsx_windows_file_server_volume_configuration.is_some(),
                "fsxWindowsFileServerVolumeConfiguration",
            );
            add(v.configured_at_launch.is_some(), "configuredAtLaunch");
        }
        for c in &self.container_definitions {
            add(c.secrets.is_some(), "secrets");
            add(c.repository_credentials.is_some(), "repositoryCredentials");
            add(c.firelens_configuration.is_some(), "firelensConfiguration");
            add(c.log_configuration.is_some(), "logConfiguration");
            add(c.credential_specs.is_some(), "credentialSpecs");
            add(c.resource_requirements.is_some(), "resourceRequirements");
            add(c.restart_policy.is_some(), "restartPolicy");
            add(c.version_consistency.is_some(), "versionConsistency");
            let app_protocol = c
                .port_mappings
                .iter()
                .flatten()
                .any(|p| p.app_protocol.is_some());
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

fn parse_memory_mib(s: &str) -> Option<u64> {
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

fn parse_cpu_units(s: &str) -> Option<u64> {
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

/// Parses a task definition from JSON, or from YAML when the text is not JSON.
pub fn parse(text: &str) -> Result<TaskDefinitionInput, TaskDefError> {
    let is_json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    if is_json {
        return parse_json(text);
    }
    match parse_yaml(text) {
        Ok(def) => Ok(def),
        // Text that was meant as JSON is better served by the JSON parser's complaint.
        Err(e) if text.trim_start().starts_with('{') && e.path.is_empty() => parse_json(text),
        Err(e) => Err(e),
    }
}

fn parse_json(text: &str) -> Result<TaskDefinitionInput, TaskDefError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let def = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| path_error("json", e.path().to_string(), e.into_inner().to_string()))?;
    de.end()
        .map_err(|e| path_error("json", String::new(), e.to_string()))?;
    Ok(def)
}

fn parse_yaml(text: &str) -> Result<TaskDefinitionInput, TaskDefError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de)
        .map_err(|e| path_error("yaml", e.path().to_string(), e.into_inner().to_string()))
}

fn path_error(format: &'static str, path: String, message: String) -> TaskDefError {
    let mut path = if path == "." { String::new() } else { path };
    // serde_path_to_error stops at the struct holding an unknown field: name the field.
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((field, _)) = rest.split_once('`') {
            if !path.ends_with(field) {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(field);
            }
        }
    }
    TaskDefError {
        format,
        path,
        message,
    }
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
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

const NAME_RULE: &str = "must be 1-255 letters, digits, '_' or '-'";

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
    if def.memory.is_some() && def.memory_mib().is_none_or(|m| m == 0) {
        errs.push(
            "memory",
            "must be a positive number of MiB (\"512\") or GB (\"1 GB\")",
        );
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
    errs.range(format!("{at}.memory"), c.memory, 1, i64::MAX);
    errs.range(
        format!("{at}.memoryReservation"),
        c.memory_reservation,
        1,
        i64::MAX,
    );
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
