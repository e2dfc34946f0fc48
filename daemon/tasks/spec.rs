//! From an ECS container definition (plus RunTask's overrides) to what the runtime creates:
//! names, labels, environment, limits, mounts, health checks, networks. Pure: no engine, no
//! files, except reading `environmentFiles` (done by the caller and passed in).

use crate::runtime::{
    ContainerSpec, HealthSpec, MountSpec, NetworkAttachment, PortSpec, Protocol, UlimitSpec,
    VolumeSpec,
};
use ecrl::api::tasks::{ContainerOverride, TaskOverride};
use ecrl::taskdef::{ContainerDefinition, NetworkMode, TaskDefinitionInput};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Labels every engine object of a task carries: a restarted ecrld finds its tasks by them.
pub const LABEL_TASK_ID: &str = "ecrl.task-id";
pub const LABEL_FAMILY: &str = "ecrl.task-family";
pub const LABEL_REVISION: &str = "ecrl.task-revision";
pub const LABEL_CONTAINER: &str = "ecrl.container-name";
/// `container` for the definition's containers, `pause` for awsvpc's namespace holder.
pub const LABEL_ROLE: &str = "ecrl.role";
pub const ROLE_CONTAINER: &str = "container";
pub const ROLE_PAUSE: &str = "pause";

/// What one task's engine objects are called.
#[derive(Debug, Clone)]
pub struct Names {
    pub task_id: String,
    pub family: String,
    pub revision: u32,
}

impl Names {
    fn short(&self) -> &str {
        &self.task_id[..self.task_id.len().min(12)]
    }

    /// The engine name of a container: `ecrl-FAMILY-REV-NAME-TASKID12`, like the ECS agent's.
    pub fn container(&self, name: &str) -> String {
        format!(
            "ecrl-{}-{}-{}-{}",
            self.family,
            self.revision,
            name,
            self.short()
        )
    }

    pub fn pause(&self) -> String {
        format!(
            "ecrl-{}-{}-pause-{}",
            self.family,
            self.revision,
            self.short()
        )
    }

    /// The task's user network (bridge and awsvpc modes).
    pub fn network(&self) -> String {
        format!("ecrl-task-{}", self.task_id)
    }

    /// A task-scoped volume.
    pub fn volume(&self, name: &str) -> String {
        format!("ecrl-{}-{}", self.short(), name)
    }

    pub fn labels(&self, container: Option<&str>) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_TASK_ID.into(), self.task_id.clone());
        labels.insert(LABEL_FAMILY.into(), self.family.clone());
        labels.insert(LABEL_REVISION.into(), self.revision.to_string());
        match container {
            Some(c) => {
                labels.insert(LABEL_CONTAINER.into(), c.into());
                labels.insert(LABEL_ROLE.into(), ROLE_CONTAINER.into());
            }
            None => {
                labels.insert(LABEL_ROLE.into(), ROLE_PAUSE.into());
            }
        }
        labels
    }
}

/// Where the task's containers attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskNetwork {
    /// bridge mode: the task's user network (by name); `None` for a task of one container
    /// without links, which needs no name resolution and runs on the engine's bridge.
    Bridge(Option<String>),
    /// awsvpc: the pause container's id; every container shares its namespace.
    Shared(String),
    Host,
    None,
}

/// Whether a bridge-mode task needs its own network: containers reach each other by name
/// only when there are several.
pub fn bridge_needs_network(def: &TaskDefinitionInput) -> bool {
    def.container_definitions.len() > 1
}

/// How a task volume is provided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// `host.sourcePath`.
    HostPath(String),
    /// An engine volume by this name; `created` when this task creates it (and removes it at
    /// the end, for task-scoped ones).
    Engine {
        name: String,
        create: Option<VolumeSpec>,
        task_scoped: bool,
        autoprovision: bool,
    },
}

/// The task definition's volumes, by name.
pub fn volumes(def: &TaskDefinitionInput, names: &Names) -> BTreeMap<String, VolumeSource> {
    let mut out = BTreeMap::new();
    for v in def.volumes.iter().flatten() {
        let source = if let Some(path) = v.host.as_ref().and_then(|h| h.source_path.clone()) {
            VolumeSource::HostPath(path)
        } else if let Some(cfg) = &v.docker_volume_configuration {
            let shared = cfg.scope.as_deref() == Some("shared");
            let name = if shared {
                v.name.clone()
            } else {
                names.volume(&v.name)
            };
            let mut labels = cfg.labels.clone().unwrap_or_default();
            if !shared {
                labels.extend(
                    names
                        .labels(None)
                        .into_iter()
                        .filter(|(k, _)| k != LABEL_ROLE),
                );
            }
            VolumeSource::Engine {
                create: Some(VolumeSpec {
                    name: name.clone(),
                    driver: cfg.driver.clone(),
                    driver_opts: cfg.driver_opts.clone().unwrap_or_default(),
                    labels,
                }),
                name,
                task_scoped: !shared,
                autoprovision: !shared || cfg.autoprovision.unwrap_or(false),
            }
        } else {
            // No source: ECS gives the task an empty scratch volume of its own.
            let name = names.volume(&v.name);
            let mut labels = names.labels(None);
            labels.remove(LABEL_ROLE);
            VolumeSource::Engine {
                create: Some(VolumeSpec {
                    name: name.clone(),
                    labels,
                    ..Default::default()
                }),
                name,
                task_scoped: true,
                autoprovision: true,
            }
        };
        out.insert(v.name.clone(), source);
    }
    out
}

/// `awslogs`: the log driver ecrl itself keeps (the container logs to the engine's default,
/// which ecrl copies into the task's logs, found by group and stream with `ecrl logs`).
pub const AWSLOGS: &str = "awslogs";

/// The container's `logConfiguration` for the engine: any driver but `awslogs` is passed on
/// with its options (string values; numbers and booleans as text).
pub fn engine_log_driver(c: &ContainerDefinition) -> Option<(String, BTreeMap<String, String>)> {
    let config = c.log_configuration.as_ref()?;
    let driver = config.get("logDriver")?.as_str()?;
    if driver == AWSLOGS || driver.is_empty() {
        return None;
    }
    let options = config
        .get("options")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    Some((driver.to_string(), options))
}

/// Where an `awslogs` container's output is found: its group, and its stream's name as ECS
/// makes it (`PREFIX/CONTAINER/TASK-ID`; without a prefix, the engine's container id).
pub fn awslogs_stream(
    c: &ContainerDefinition,
    task_id: &str,
    runtime_id: Option<&str>,
) -> Option<(String, String)> {
    let config = c.log_configuration.as_ref()?;
    if config.get("logDriver")?.as_str()? != AWSLOGS {
        return None;
    }
    let options = config.get("options")?;
    let group = options.get("awslogs-group")?.as_str()?.to_string();
    let stream = match options
        .get("awslogs-stream-prefix")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    {
        Some(prefix) => format!("{prefix}/{}/{task_id}", c.name),
        None => runtime_id?.to_string(),
    };
    Some((group, stream))
}

/// Parses an environment file: `KEY=VALUE` lines; blank lines and `#` comments skipped.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => out.push((k.trim().to_string(), v.into())),
            _ => return Err(format!("line {}: expected KEY=VALUE", n + 1)),
        }
    }
    Ok(out)
}

/// The container's environment in ECS's precedence: environment files first, then
/// `environment`, then the override's files, then the override's `environment`.
pub fn environment(
    c: &ContainerDefinition,
    files: &[(String, String)],
    over: Option<&ContainerOverride>,
    override_files: &[(String, String)],
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        if let Some(e) = env.iter_mut().find(|(ek, _)| ek == k) {
            e.1 = v.to_string();
        } else {
            env.push((k.to_string(), v.to_string()));
        }
    };
    for (k, v) in files {
        set(k, v);
    }
    for kv in c.environment.iter().flatten() {
        if let Some(k) = &kv.name {
            set(k, kv.value.as_deref().unwrap_or(""));
        }
    }
    for (k, v) in override_files {
        set(k, v);
    }
    for kv in over
        .and_then(|o| o.environment.as_ref())
        .into_iter()
        .flatten()
    {
        if let Some(k) = &kv.name {
            set(k, kv.value.as_deref().unwrap_or(""));
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The override for container `name`, if RunTask gave one.
pub fn container_override<'a>(
    overrides: &'a TaskOverride,
    name: &str,
) -> Option<&'a ContainerOverride> {
    overrides
        .container_overrides
        .iter()
        .find(|o| o.name == name)
}

/// Everything needed to build one container's spec besides its definition.
pub struct SpecInput<'a> {
    pub def: &'a TaskDefinitionInput,
    pub names: &'a Names,
    /// The reference the engine creates the container from.
    pub image: String,
    pub env: Vec<String>,
    pub over: Option<&'a ContainerOverride>,
    pub network: &'a TaskNetwork,
    pub volumes: &'a BTreeMap<String, VolumeSource>,
    /// The task's memory in MiB (its override, else the definition's), when it sets one.
    pub task_memory_mib: Option<u64>,
    /// The task's cgroup, when it has one.
    pub cgroup_parent: Option<String>,
}

const MIB: i64 = 1024 * 1024;

pub fn container_spec(c: &ContainerDefinition, input: &SpecInput<'_>) -> ContainerSpec {
    let names = input.names;
    let mut labels: BTreeMap<String, String> = c.docker_labels.clone().unwrap_or_default();
    labels.extend(names.labels(Some(&c.name)));
    let over = input.over;

    let network = match input.network {
        TaskNetwork::Bridge(Some(net)) => NetworkAttachment::Network {
            network: net.clone(),
            aliases: vec![c.name.clone()],
            links: c
                .links
                .iter()
                .flatten()
                .map(|l| {
                    let (target, alias) = l.split_once(':').unwrap_or((l, l));
                    format!("{}:{alias}", names.container(target))
                })
                .collect(),
        },
        TaskNetwork::Bridge(None) => NetworkAttachment::Default,
        TaskNetwork::Shared(pause) => NetworkAttachment::Container(pause.clone()),
        TaskNetwork::Host => NetworkAttachment::Host,
        TaskNetwork::None => NetworkAttachment::None,
    };
    let publishes = matches!(input.network, TaskNetwork::Bridge(_));
    let ports = if publishes { port_specs(c) } else { Vec::new() };
    // In a shared namespace the hostname, DNS and hosts belong to the pause container.
    let own_namespace = !matches!(input.network, TaskNetwork::Shared(_));

    let mounts = c
        .mount_points
        .iter()
        .flatten()
        .filter_map(|m| {
            let target = m.container_path.clone()?;
            let read_only = m.read_only.unwrap_or(false);
            match input.volumes.get(m.source_volume.as_deref()?)? {
                VolumeSource::HostPath(p) => Some(MountSpec::Bind {
                    source: p.clone(),
                    target,
                    read_only,
                }),
                VolumeSource::Engine { name, .. } => Some(MountSpec::Volume {
                    name: name.clone(),
                    target,
                    read_only,
                }),
            }
        })
        .collect();

    let linux = LinuxParameters::from(c.linux_parameters.as_ref());
    // ECS holds a task's containers to the task's memory. A container without a hard limit
    // of its own is held to the task's too: where the task has no cgroup of its own (see
    // `runtime::cgroup`) that is the only bound, exact for a container alone in its task.
    let memory = over
        .and_then(|o| o.memory)
        .or(c.memory)
        .or(input.task_memory_mib.and_then(|m| i64::try_from(m).ok()));
    let reservation = over
        .and_then(|o| o.memory_reservation)
        .or(c.memory_reservation);
    let cpu = over.and_then(|o| o.cpu).or(c.cpu);

    ContainerSpec {
        name: names.container(&c.name),
        image: input.image.clone(),
        entrypoint: c.entry_point.clone(),
        command: over
            .and_then(|o| o.command.clone())
            .or_else(|| c.command.clone()),
        env: input.env.clone(),
        secret_env: Default::default(),
        log_driver: engine_log_driver(c),
        labels,
        user: c.user.clone(),
        working_dir: c.working_directory.clone(),
        hostname: c.hostname.clone().filter(|_| own_namespace && publishes),
        network,
        ports,
        // The engine's minimum is 2 shares; ECS's 0 means "no reservation".
        cpu_shares: cpu.filter(|c| *c > 0).map(|c| c.max(2)),
        memory: memory.map(|m| m * MIB),
        memory_reservation: reservation.map(|m| m * MIB),
        ulimits: c
            .ulimits
            .iter()
            .flatten()
            .map(|u| UlimitSpec {
                name: u.name.clone(),
                soft: u.soft_limit,
                hard: u.hard_limit,
            })
            .collect(),
        mounts,
        volumes_from: c
            .volumes_from
            .iter()
            .flatten()
            .filter_map(|v| {
                let source = names.container(v.source_container.as_deref()?);
                Some(if v.read_only.unwrap_or(false) {
                    format!("{source}:ro")
                } else {
                    source
                })
            })
            .collect(),
        readonly_rootfs: c.readonly_root_filesystem.unwrap_or(false),
        privileged: c.privileged.unwrap_or(false),
        extra_hosts: if own_namespace {
            extra_hosts(c)
        } else {
            Vec::new()
        },
        dns: if own_namespace {
            c.dns_servers.clone().unwrap_or_default()
        } else {
            Vec::new()
        },
        dns_search: if own_namespace {
            c.dns_search_domains.clone().unwrap_or_default()
        } else {
            Vec::new()
        },
        security_opt: c.docker_security_options.clone().unwrap_or_default(),
        sysctls: system_controls(c.system_controls.as_ref()),
        cap_add: linux.cap_add,
        cap_drop: linux.cap_drop,
        init: linux.init,
        shm_size: linux.shm_size_mib.map(|m| m * MIB),
        tmpfs: linux.tmpfs,
        tty: c.pseudo_terminal.unwrap_or(false),
        open_stdin: c.interactive.unwrap_or(false),
        pid_mode: (input.def.pid_mode.as_deref() == Some("host")).then(|| "host".into()),
        ipc_mode: match input.def.ipc_mode.as_deref() {
            Some("host") => Some("host".into()),
            Some("none") => Some("none".into()),
            _ => None,
        },
        health: c.health_check.as_ref().map(|h| HealthSpec {
            test: h.command.clone(),
            interval: Duration::from_secs(h.interval_or_default()),
            timeout: Duration::from_secs(h.timeout_or_default()),
            retries: h.retries_or_default(),
            start_period: Duration::from_secs(h.start_period_or_default()),
        }),
        stop_timeout: Some(c.stop_timeout_or_default() as i64),
        cgroup_parent: input.cgroup_parent.clone(),
    }
    .with_networking_disabled(c.disable_networking.unwrap_or(false))
}

trait DisableNetworking {
    fn with_networking_disabled(self, disabled: bool) -> Self;
}

impl DisableNetworking for ContainerSpec {
    fn with_networking_disabled(mut self, disabled: bool) -> Self {
        if disabled {
            self.network = NetworkAttachment::None;
            self.ports.clear();
        }
        self
    }
}

/// The pause container of an awsvpc task: it owns the namespace, so it publishes every
/// container's ports and carries their hosts and DNS settings.
pub fn pause_spec(
    def: &TaskDefinitionInput,
    names: &Names,
    image: String,
    network: Option<String>,
) -> ContainerSpec {
    let mut spec = ContainerSpec {
        name: names.pause(),
        image,
        entrypoint: Some(vec!["/pause".into()]),
        command: Some(Vec::new()),
        labels: names.labels(None),
        network: match network {
            Some(network) => NetworkAttachment::Network {
                network,
                aliases: Vec::new(),
                links: Vec::new(),
            },
            None => NetworkAttachment::Default,
        },
        stop_timeout: Some(1),
        ..Default::default()
    };
    for c in &def.container_definitions {
        spec.ports.extend(port_specs(c));
        for h in extra_hosts(c) {
            if !spec.extra_hosts.contains(&h) {
                spec.extra_hosts.push(h);
            }
        }
        for d in c.dns_servers.iter().flatten() {
            if !spec.dns.contains(d) {
                spec.dns.push(d.clone());
            }
        }
        for d in c.dns_search_domains.iter().flatten() {
            if !spec.dns_search.contains(d) {
                spec.dns_search.push(d.clone());
            }
        }
    }
    spec
}

fn port_specs(c: &ContainerDefinition) -> Vec<PortSpec> {
    c.port_mappings
        .iter()
        .flatten()
        .filter_map(|p| {
            let container_port = u16::try_from(p.container_port?).ok()?;
            Some(PortSpec {
                container_port,
                host_port: p
                    .host_port
                    .filter(|h| *h > 0)
                    .and_then(|h| u16::try_from(h).ok()),
                protocol: if p.protocol.as_deref() == Some("udp") {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
            })
        })
        .collect()
}

fn extra_hosts(c: &ContainerDefinition) -> Vec<String> {
    c.extra_hosts
        .iter()
        .flatten()
        .map(|h| format!("{}:{}", h.hostname, h.ip_address))
        .collect()
}

fn system_controls(v: Option<&Value>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for item in v.and_then(Value::as_array).into_iter().flatten() {
        if let (Some(ns), Some(val)) = (
            item.get("namespace").and_then(Value::as_str),
            item.get("value").and_then(Value::as_str),
        ) {
            out.insert(ns.to_string(), val.to_string());
        }
    }
    out
}

/// The parts of ECS's `linuxParameters` a local engine can honour.
#[derive(Debug, Default, PartialEq)]
struct LinuxParameters {
    init: bool,
    cap_add: Vec<String>,
    cap_drop: Vec<String>,
    shm_size_mib: Option<i64>,
    tmpfs: BTreeMap<String, String>,
}

impl From<Option<&Value>> for LinuxParameters {
    fn from(v: Option<&Value>) -> Self {
        let mut out = LinuxParameters::default();
        let Some(v) = v else { return out };
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        out.init = v
            .get("initProcessEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(caps) = v.get("capabilities") {
            out.cap_add = strings(caps.get("add"));
            out.cap_drop = strings(caps.get("drop"));
        }
        out.shm_size_mib = v.get("sharedMemorySize").and_then(Value::as_i64);
        for t in v
            .get("tmpfs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(path) = t.get("containerPath").and_then(Value::as_str) else {
                continue;
            };
            let mut opts = strings(t.get("mountOptions"));
            if let Some(size) = t.get("size").and_then(Value::as_i64) {
                opts.push(format!("size={size}m"));
            }
            out.tmpfs.insert(path.to_string(), opts.join(","));
        }
        out
    }
}

/// The network mode, bridge when unset.
pub fn network_mode(def: &TaskDefinitionInput) -> NetworkMode {
    def.network_mode().unwrap_or(NetworkMode::Bridge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: &str) -> TaskDefinitionInput {
        ecrl::taskdef::parse(json).unwrap()
    }

    fn names() -> Names {
        Names {
            task_id: "0123456789abcdef0123456789abcdef".into(),
            family: "web".into(),
            revision: 3,
        }
    }

    fn spec_of(
        d: &TaskDefinitionInput,
        network: TaskNetwork,
        over: Option<&ContainerOverride>,
    ) -> ContainerSpec {
        let names = names();
        let volumes = volumes(d, &names);
        let c = &d.container_definitions[0];
        container_spec(
            c,
            &SpecInput {
                def: d,
                names: &names,
                image: "img".into(),
                env: vec![],
                over,
                network: &network,
                volumes: &volumes,
                task_memory_mib: d.memory_mib(),
                cgroup_parent: None,
            },
        )
    }

    #[test]
    fn names_and_labels_identify_the_task() {
        let n = names();
        assert_eq!(n.container("app"), "ecrl-web-3-app-0123456789ab");
        assert_eq!(n.network(), "ecrl-task-0123456789abcdef0123456789abcdef");
        let l = n.labels(Some("app"));
        assert_eq!(l[LABEL_TASK_ID], n.task_id);
        assert_eq!(l[LABEL_CONTAINER], "app");
        assert_eq!(l[LABEL_ROLE], ROLE_CONTAINER);
        assert_eq!(n.labels(None)[LABEL_ROLE], ROLE_PAUSE);
    }

    #[test]
    fn a_full_container_definition_maps_onto_the_engine() {
        let d = def(
            r#"{"family":"web","volumes":[{"name":"data","host":{"sourcePath":"/srv"}},{"name":"scratch"}],
            "containerDefinitions":[{"name":"app","image":"x","memory":128,"memoryReservation":64,"cpu":1,
            "command":["a"],"entryPoint":["sh","-c"],"user":"1000","workingDirectory":"/w","hostname":"h",
            "ulimits":[{"name":"nofile","softLimit":100,"hardLimit":200}],
            "mountPoints":[{"sourceVolume":"data","containerPath":"/d","readOnly":true},{"sourceVolume":"scratch","containerPath":"/s"}],
            "readonlyRootFilesystem":true,"privileged":true,"dockerLabels":{"team":"a"},
            "extraHosts":[{"hostname":"db","ipAddress":"10.0.0.1"}],"dnsServers":["1.1.1.1"],
            "portMappings":[{"containerPort":80},{"containerPort":53,"hostPort":5353,"protocol":"udp"}],
            "links":["db:database"],
            "healthCheck":{"command":["CMD-SHELL","true"]},"stopTimeout":5,
            "linuxParameters":{"initProcessEnabled":true,"capabilities":{"add":["NET_ADMIN"]},"tmpfs":[{"containerPath":"/t","size":64}]}},
            {"name":"db","image":"y","memory":64}]}"#,
        );
        let s = spec_of(&d, TaskNetwork::Bridge(Some("net".into())), None);
        assert_eq!(s.name, "ecrl-web-3-app-0123456789ab");
        assert_eq!(s.memory, Some(128 * MIB));
        assert_eq!(s.memory_reservation, Some(64 * MIB));
        assert_eq!(s.cpu_shares, Some(2), "raised to the engine's minimum");
        assert_eq!(s.command, Some(vec!["a".to_string()]));
        assert_eq!(s.entrypoint, Some(vec!["sh".to_string(), "-c".to_string()]));
        assert_eq!(s.user.as_deref(), Some("1000"));
        assert_eq!(s.hostname.as_deref(), Some("h"));
        assert_eq!(
            s.ulimits,
            vec![UlimitSpec {
                name: "nofile".into(),
                soft: 100,
                hard: 200
            }]
        );
        assert_eq!(
            s.mounts,
            vec![
                MountSpec::Bind {
                    source: "/srv".into(),
                    target: "/d".into(),
                    read_only: true
                },
                MountSpec::Volume {
                    name: "ecrl-0123456789ab-scratch".into(),
                    target: "/s".into(),
                    read_only: false
                },
            ]
        );
        assert!(s.readonly_rootfs && s.privileged && s.init);
        assert_eq!(s.labels["team"], "a");
        assert_eq!(s.labels[LABEL_CONTAINER], "app");
        assert_eq!(s.extra_hosts, vec!["db:10.0.0.1".to_string()]);
        assert_eq!(s.dns, vec!["1.1.1.1".to_string()]);
        assert_eq!(s.ports.len(), 2);
        assert_eq!(
            s.ports[0],
            PortSpec {
                container_port: 80,
                host_port: None,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(
            s.ports[1],
            PortSpec {
                container_port: 53,
                host_port: Some(5353),
                protocol: Protocol::Udp
            }
        );
        assert_eq!(
            s.network,
            NetworkAttachment::Network {
                network: "net".into(),
                aliases: vec!["app".into()],
                links: vec!["ecrl-web-3-db-0123456789ab:database".into()],
            }
        );
        let h = s.health.unwrap();
        assert_eq!(h.interval, Duration::from_secs(30));
        assert_eq!(h.timeout, Duration::from_secs(5));
        assert_eq!(h.retries, 3);
        assert_eq!(s.stop_timeout, Some(5));
        assert_eq!(s.cap_add, vec!["NET_ADMIN".to_string()]);
        assert_eq!(s.tmpfs["/t"], "size=64m");
    }

    #[test]
    fn overrides_replace_command_and_limits() {
        let d = def(
            r#"{"family":"web","containerDefinitions":[{"name":"app","image":"x","memory":128,"command":["a"]}]}"#,
        );
        let over = ContainerOverride {
            name: "app".into(),
            command: Some(vec!["b".into()]),
            memory: Some(256),
            ..Default::default()
        };
        let s = spec_of(&d, TaskNetwork::Bridge(None), Some(&over));
        assert_eq!(s.command, Some(vec!["b".to_string()]));
        assert_eq!(s.memory, Some(256 * MIB));
        assert_eq!(s.network, NetworkAttachment::Default);
    }

    #[test]
    fn task_memory_holds_containers_without_their_own_limit() {
        let fargate = def(
            r#"{"family":"web","memory":"1 GB","containerDefinitions":[{"name":"app","image":"x"}]}"#,
        );
        assert_eq!(
            spec_of(&fargate, TaskNetwork::Bridge(None), None).memory,
            Some(1024 * MIB)
        );
        // A container's own limit, or its override, comes first.
        let own = def(
            r#"{"family":"web","memory":"512","containerDefinitions":[{"name":"app","image":"x","memory":64,"memoryReservation":32}]}"#,
        );
        let s = spec_of(&own, TaskNetwork::Bridge(None), None);
        assert_eq!(
            (s.memory, s.memory_reservation),
            (Some(64 * MIB), Some(32 * MIB))
        );
        let over = ContainerOverride {
            name: "app".into(),
            memory: Some(128),
            ..Default::default()
        };
        let s = spec_of(&fargate, TaskNetwork::Bridge(None), Some(&over));
        assert_eq!(s.memory, Some(128 * MIB));
        // A soft reservation alone gets the task's hard limit above it.
        let soft = def(
            r#"{"family":"web","memory":"256","containerDefinitions":[{"name":"app","image":"x","memoryReservation":32}]}"#,
        );
        let s = spec_of(&soft, TaskNetwork::Bridge(None), None);
        assert_eq!(
            (s.memory, s.memory_reservation),
            (Some(256 * MIB), Some(32 * MIB))
        );
        // No task memory: no limit invented.
        let none = def(
            r#"{"family":"web","containerDefinitions":[{"name":"app","image":"x","memoryReservation":32}]}"#,
        );
        assert_eq!(spec_of(&none, TaskNetwork::Bridge(None), None).memory, None);
    }

    #[test]
    fn a_shared_namespace_leaves_ports_hosts_and_dns_to_the_pause_container() {
        let d = def(
            r#"{"family":"web","networkMode":"awsvpc","containerDefinitions":[{"name":"app","image":"x","memory":8,
            "portMappings":[{"containerPort":80}],"dnsServers":["9.9.9.9"],"hostname":"h"}]}"#,
        );
        let s = spec_of(&d, TaskNetwork::Shared("pauseid".into()), None);
        assert_eq!(s.network, NetworkAttachment::Container("pauseid".into()));
        assert!(s.ports.is_empty() && s.dns.is_empty() && s.hostname.is_none());
        let p = pause_spec(&d, &names(), "ecrl/pause:1".into(), Some("net".into()));
        assert_eq!(p.ports.len(), 1);
        assert_eq!(p.dns, vec!["9.9.9.9".to_string()]);
        assert_eq!(p.labels[LABEL_ROLE], ROLE_PAUSE);
    }

    #[test]
    fn environment_follows_ecs_precedence() {
        let d = def(
            r#"{"family":"web","containerDefinitions":[{"name":"app","image":"x","memory":8,
            "environment":[{"name":"A","value":"def"},{"name":"B","value":"def"}]}]}"#,
        );
        let files = vec![
            ("A".to_string(), "file".to_string()),
            ("F".to_string(), "file".to_string()),
        ];
        let over = ContainerOverride {
            name: "app".into(),
            environment: Some(vec![ecrl::taskdef::KeyValuePair {
                name: Some("B".into()),
                value: Some("over".into()),
            }]),
            ..Default::default()
        };
        let env = environment(&d.container_definitions[0], &files, Some(&over), &[]);
        assert_eq!(env, vec!["A=def", "F=file", "B=over"]);
    }

    #[test]
    fn log_configuration_goes_to_the_engine_unless_awslogs() {
        let d = def(r#"{"family":"f","containerDefinitions":[
            {"name":"a","image":"i","memory":8,"logConfiguration":{"logDriver":"awslogs",
              "options":{"awslogs-group":"/ecs/g","awslogs-stream-prefix":"p"}}},
            {"name":"b","image":"i","memory":8,"logConfiguration":{"logDriver":"gelf",
              "options":{"gelf-address":"udp://127.0.0.1:12201","gelf-compression-level":1}}},
            {"name":"c","image":"i","memory":8,"logConfiguration":{"logDriver":"awslogs",
              "options":{"awslogs-group":"/ecs/g"}}},
            {"name":"d","image":"i","memory":8}]}"#);
        let [a, b, c, none] = &d.container_definitions[..] else {
            panic!()
        };
        assert_eq!(engine_log_driver(a), None);
        let (driver, options) = engine_log_driver(b).unwrap();
        assert_eq!(driver, "gelf");
        assert_eq!(options["gelf-compression-level"], "1");
        assert_eq!(engine_log_driver(none), None);
        assert_eq!(
            awslogs_stream(a, "t1", Some("c0ffee")),
            Some(("/ecs/g".into(), "p/a/t1".into()))
        );
        assert_eq!(
            awslogs_stream(c, "t1", Some("c0ffee")),
            Some(("/ecs/g".into(), "c0ffee".into()))
        );
        assert_eq!(awslogs_stream(c, "t1", None), None);
        assert_eq!(awslogs_stream(b, "t1", Some("x")), None);
    }

    #[test]
    fn env_files_parse_and_report_bad_lines() {
        assert_eq!(
            parse_env_file("# c\n\nA=1\nB = x=y\r\n").unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), " x=y".into())]
        );
        assert_eq!(
            parse_env_file("A=1\nnonsense\n").unwrap_err(),
            "line 2: expected KEY=VALUE"
        );
    }

    #[test]
    fn volumes_are_task_scoped_unless_shared() {
        let d = def(r#"{"family":"web","volumes":[
            {"name":"a","dockerVolumeConfiguration":{"scope":"shared","autoprovision":true,"driver":"local"}},
            {"name":"b","dockerVolumeConfiguration":{"scope":"task"}},
            {"name":"c","host":{}}],
            "containerDefinitions":[{"name":"app","image":"x","memory":8}]}"#);
        let v = volumes(&d, &names());
        match &v["a"] {
            VolumeSource::Engine {
                name,
                task_scoped,
                autoprovision,
                ..
            } => {
                assert_eq!(name, "a");
                assert!(!task_scoped && *autoprovision);
            }
            other => panic!("{other:?}"),
        }
        match &v["b"] {
            VolumeSource::Engine {
                name, task_scoped, ..
            } => {
                assert_eq!(name, "ecrl-0123456789ab-b");
                assert!(*task_scoped);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            &v["c"],
            VolumeSource::Engine {
                task_scoped: true,
                ..
            }
        ));
    }
}
