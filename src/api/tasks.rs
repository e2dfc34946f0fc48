//! `/v1/task-definitions/*` and `/v1/tasks/*`: ECS's task-definition and task operations,
//! with ECS's field names and response shapes, so scripts written for `aws ecs` read ecrl's
//! JSON too. Times are RFC 3339 strings, as the AWS CLI prints them.

use super::transfer::StreamEndpoint;
use super::{ApiError, Endpoint, Method};
use crate::taskdef::TaskDefinitionInput;
use serde::{Deserialize, Serialize};

/// A registered revision: the definition as given plus what ECS adds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    /// `arn:aws:ecs:REGION:ACCOUNT:task-definition/FAMILY:REVISION`.
    pub task_definition_arn: String,
    pub revision: u32,
    /// `ACTIVE` or `INACTIVE`.
    pub status: String,
    pub registered_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistered_at: Option<String>,
    #[serde(flatten)]
    pub definition: TaskDefinitionInput,
}

impl TaskDefinition {
    /// Its times as ecrl prints times ([`crate::timestamp`]), whatever precision they were
    /// stored with.
    pub fn with_printed_times(mut self) -> Self {
        crate::timestamp::reformat_in_place(&mut self.registered_at);
        if let Some(at) = &mut self.deregistered_at {
            crate::timestamp::reformat_in_place(at);
        }
        self
    }

    /// `family:revision`.
    pub fn family_revision(&self) -> String {
        format!("{}:{}", self.definition.family, self.revision)
    }
}

pub const STATUS_ACTIVE: &str = "ACTIVE";
pub const STATUS_INACTIVE: &str = "INACTIVE";

/// What register, describe and deregister answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinitionResponse {
    pub task_definition: TaskDefinition,
    /// The definition's resource tags, as ECS returns them beside the definition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<crate::taskdef::Tag>,
    /// AWS fields the definition sets that have no meaning on the local runtime: accepted,
    /// stored, and not acted on (ecrl's addition to ECS's shape).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_fields: Vec<String>,
}

/// `POST /v1/task-definitions/register` (ECS RegisterTaskDefinition). The request is the
/// definition itself, as `aws ecs register-task-definition --cli-input-json` takes it.
pub struct RegisterTaskDefinition;

impl Endpoint for RegisterTaskDefinition {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/task-definitions/register";
    type Request = TaskDefinitionInput;
    type Response = TaskDefinitionResponse;
}

/// `GET /v1/task-definitions/describe` (ECS DescribeTaskDefinition).
pub struct DescribeTaskDefinition;

impl Endpoint for DescribeTaskDefinition {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/task-definitions/describe";
    type Request = TaskDefinitionRef;
    type Response = TaskDefinitionResponse;
}

/// `POST /v1/task-definitions/deregister` (ECS DeregisterTaskDefinition): the revision
/// becomes INACTIVE and can no longer be run.
pub struct DeregisterTaskDefinition;

impl Endpoint for DeregisterTaskDefinition {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/task-definitions/deregister";
    type Request = TaskDefinitionRef;
    type Response = TaskDefinitionResponse;
}

/// Names a task definition: `family` (its latest ACTIVE revision), `family:revision`, or
/// the full ARN.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinitionRef {
    pub task_definition: String,
}

/// `GET /v1/task-definitions/list` (ECS ListTaskDefinitions).
pub struct ListTaskDefinitions;

impl Endpoint for ListTaskDefinitions {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/task-definitions/list";
    type Request = ListTaskDefinitionsRequest;
    type Response = ListTaskDefinitionsResponse;
}

/// The filters of both listings, with ECS's meanings, which differ between the two.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTaskDefinitionsRequest {
    /// ListTaskDefinitions: the full family name (ECS's naming, despite "prefix").
    /// ListTaskDefinitionFamilies: a prefix of family names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_prefix: Option<String>,
    /// `ACTIVE` or `INACTIVE`. ListTaskDefinitions: the revisions' status, `ACTIVE` when
    /// absent. ListTaskDefinitionFamilies: `ACTIVE` lists families with an ACTIVE revision,
    /// `INACTIVE` those without one, absent lists every family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListTaskDefinitionsResponse {
    /// In family order, revisions ascending.
    pub task_definition_arns: Vec<String>,
}

/// `GET /v1/task-definitions/families` (ECS ListTaskDefinitionFamilies).
pub struct ListTaskDefinitionFamilies;

impl Endpoint for ListTaskDefinitionFamilies {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/task-definitions/families";
    type Request = ListTaskDefinitionsRequest;
    type Response = ListTaskDefinitionFamiliesResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListTaskDefinitionFamiliesResponse {
    pub families: Vec<String>,
}

/// `POST /v1/task-definitions/delete` (ECS DeleteTaskDefinitions): only INACTIVE revisions.
pub struct DeleteTaskDefinitions;

impl Endpoint for DeleteTaskDefinitions {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/task-definitions/delete";
    type Request = DeleteTaskDefinitionsRequest;
    type Response = DeleteTaskDefinitionsResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteTaskDefinitionsRequest {
    /// `family:revision` or ARNs.
    pub task_definitions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeleteTaskDefinitionsResponse {
    /// The deleted revisions, `status` `DELETE_IN_PROGRESS` as ECS answers.
    pub task_definitions: Vec<TaskDefinition>,
    pub failures: Vec<Failure>,
}

/// ECS's per-item failure.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub arn: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

// --- tasks ------------------------------------------------------------------------------

/// A task, as ECS DescribeTasks shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// `arn:aws:ecs:REGION:ACCOUNT:task/default/ID`.
    pub task_arn: String,
    pub cluster_arn: String,
    pub task_definition_arn: String,
    /// `family:NAME`, as ECS sets it for standalone tasks.
    pub group: String,
    /// PROVISIONING, PENDING, RUNNING, DEPROVISIONING, STOPPED.
    pub last_status: String,
    /// RUNNING or STOPPED.
    pub desired_status: String,
    /// HEALTHY, UNHEALTHY or UNKNOWN: from the essential containers' health checks.
    pub health_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// The task definition's network mode (ecrl's addition).
    pub network_mode: String,
    pub containers: Vec<Container>,
    pub overrides: TaskOverride,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<crate::taskdef::Tag>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// `EssentialContainerExited`, `UserInitiated`, `TaskFailedToStart`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// The essential container whose exit stopped the task (ecrl's addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub essential_container_exited: Option<String>,
    /// Grows by one with every change, as ECS's `version`.
    pub version: u64,
}

impl Task {
    /// Its times as ecrl prints times ([`crate::timestamp`]), whatever precision they were
    /// recorded with.
    pub fn with_printed_times(mut self) -> Self {
        crate::timestamp::reformat_in_place(&mut self.created_at);
        for at in [
            &mut self.pull_started_at,
            &mut self.pull_stopped_at,
            &mut self.started_at,
            &mut self.stopping_at,
            &mut self.stopped_at,
        ]
        .into_iter()
        .flatten()
        {
            crate::timestamp::reformat_in_place(at);
        }
        self
    }

    /// The task id: the last segment of its ARN.
    pub fn id(&self) -> &str {
        self.task_arn.rsplit('/').next().unwrap_or(&self.task_arn)
    }

    /// `family:revision`, from the task definition ARN.
    pub fn family_revision(&self) -> &str {
        self.task_definition_arn
            .rsplit('/')
            .next()
            .unwrap_or(&self.task_definition_arn)
    }

    /// The family, from the task definition ARN.
    pub fn family(&self) -> &str {
        let fr = self.family_revision();
        fr.rsplit_once(':').map_or(fr, |(f, _)| f)
    }

    /// The cluster's name, from the cluster ARN.
    pub fn cluster_name(&self) -> &str {
        self.cluster_arn
            .rsplit_once(":cluster/")
            .map_or(DEFAULT_CLUSTER, |(_, name)| name)
    }

    pub fn is_stopped(&self) -> bool {
        self.last_status == task_status::STOPPED
    }

    /// The exit code `ecrl task run --wait` and `ecrl task wait` end with: the exit code of
    /// the essential container that stopped the task, 0 when every essential container
    /// exited 0, 1 when the task failed to start or an essential container has no code.
    pub fn exit_code(&self) -> i32 {
        if self.stop_code.as_deref() == Some(stop_code::TASK_FAILED_TO_START) {
            return 1;
        }
        if let Some(name) = &self.essential_container_exited {
            return self
                .containers
                .iter()
                .find(|c| &c.name == name)
                .and_then(|c| c.exit_code)
                .map_or(1, |code| code.clamp(0, 255) as i32);
        }
        let essential: Vec<&Container> = self.containers.iter().filter(|c| c.essential).collect();
        if let Some(code) = essential
            .iter()
            .filter_map(|c| c.exit_code)
            .find(|code| *code != 0)
        {
            return code.clamp(1, 255) as i32;
        }
        if essential.iter().all(|c| c.exit_code == Some(0)) {
            0
        } else {
            1
        }
    }
}

/// ECS's task and container states.
pub mod task_status {
    pub const PROVISIONING: &str = "PROVISIONING";
    pub const PENDING: &str = "PENDING";
    pub const RUNNING: &str = "RUNNING";
    pub const DEPROVISIONING: &str = "DEPROVISIONING";
    pub const STOPPED: &str = "STOPPED";
}

/// ECS's stop codes.
pub mod stop_code {
    pub const ESSENTIAL_CONTAINER_EXITED: &str = "EssentialContainerExited";
    pub const USER_INITIATED: &str = "UserInitiated";
    pub const TASK_FAILED_TO_START: &str = "TaskFailedToStart";
}

/// One container of a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub container_arn: String,
    pub task_arn: String,
    pub name: String,
    /// The image as the definition (or an override) names it.
    pub image: String,
    /// The digest the image resolved to when the task started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The container id in the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// PENDING, RUNNING, STOPPED.
    pub last_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub network_bindings: Vec<NetworkBinding>,
    /// HEALTHY, UNHEALTHY or UNKNOWN (no health check, or not decided yet).
    pub health_status: String,
    /// Whether the container is essential (ecrl's addition).
    pub essential: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBinding {
    #[serde(rename = "bindIP")]
    pub bind_ip: String,
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: String,
}

/// RunTask's overrides, as ECS takes them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskOverride {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_overrides: Vec<ContainerOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Accepted as ECS takes them; they mean nothing locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_role_arn: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerOverride {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Vec<crate::taskdef::KeyValuePair>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment_files: Option<Vec<crate::taskdef::EnvironmentFile>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation: Option<i64>,
}

/// `POST /v1/tasks/run` (ECS RunTask).
pub struct RunTask;

impl Endpoint for RunTask {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/tasks/run";
    type Request = RunTaskRequest;
    type Response = RunTaskResponse;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunTaskRequest {
    pub task_definition: String,
    /// The cluster (name or ARN) the tasks run in; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The task group; `family:FAMILY` when absent, as ECS sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// 1 when absent; at most 10, as ECS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<TaskOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<crate::taskdef::Tag>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunTaskResponse {
    pub tasks: Vec<Task>,
    pub failures: Vec<Failure>,
}

/// `GET /v1/tasks/list`: ECS ListTasks' filters, answered with whole tasks as DescribeTasks
/// shows them (newest first).
pub struct ListTasks;

impl Endpoint for ListTasks {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/tasks/list";
    type Request = ListTasksRequest;
    type Response = TasksResponse;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksRequest {
    /// Only tasks of this cluster (name or ARN); every cluster's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// RUNNING (every task not yet stopped) or STOPPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// Only the tasks of this service (ECS's serviceName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TasksResponse {
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub failures: Vec<Failure>,
}

/// `GET /v1/tasks/describe` (ECS DescribeTasks) of one task: its id, a unique prefix of
/// it, or its ARN.
pub struct DescribeTask;

impl Endpoint for DescribeTask {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/tasks/describe";
    type Request = TaskRef;
    type Response = TasksResponse;
}

// --- clusters ---------------------------------------------------------------------------

/// The cluster tasks run in when a request names none. It always exists.
pub const DEFAULT_CLUSTER: &str = "default";

/// A cluster, as ECS DescribeClusters shows it. ecrl has one local container instance (the
/// container runtime), which is every cluster's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// `arn:aws:ecs:REGION:ACCOUNT:cluster/NAME`.
    pub cluster_arn: String,
    pub cluster_name: String,
    /// `ACTIVE`.
    pub status: String,
    pub registered_container_instances_count: u32,
    /// Tasks whose lastStatus is RUNNING.
    pub running_tasks_count: u32,
    /// Tasks not yet RUNNING (PROVISIONING, PENDING).
    pub pending_tasks_count: u32,
    /// Its ACTIVE services.
    pub active_services_count: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<crate::taskdef::Tag>,
}

/// `POST /v1/clusters/create` (ECS CreateCluster). Creating one that exists answers it.
pub struct CreateCluster;

impl Endpoint for CreateCluster {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/clusters/create";
    type Request = CreateClusterRequest;
    type Response = ClusterResponse;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateClusterRequest {
    /// `default` when absent, as ECS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<crate::taskdef::Tag>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterResponse {
    pub cluster: Cluster,
}

/// `POST /v1/clusters/describe` (ECS DescribeClusters): the named clusters (names or ARNs;
/// `default` when none is named), those that do not exist in `failures` (reason MISSING).
pub struct DescribeClusters;

impl Endpoint for DescribeClusters {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/clusters/describe";
    type Request = DescribeClustersRequest;
    type Response = DescribeClustersResponse;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeClustersRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DescribeClustersResponse {
    pub clusters: Vec<Cluster>,
    pub failures: Vec<Failure>,
}

/// `GET /v1/clusters/list` (ECS ListClusters): every cluster's ARN, by name.
pub struct ListClusters;

impl Endpoint for ListClusters {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/clusters/list";
    type Request = super::Empty;
    type Response = ListClustersResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListClustersResponse {
    pub cluster_arns: Vec<String>,
}

/// `POST /v1/clusters/delete` (ECS DeleteCluster): refused while it has tasks that are not
/// STOPPED, and for `default`.
pub struct DeleteCluster;

impl Endpoint for DeleteCluster {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/clusters/delete";
    type Request = ClusterRef;
    type Response = ClusterResponse;
}

/// Names a cluster: its name or ARN.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    pub cluster: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRef {
    pub task: String,
}

/// `POST /v1/tasks/stop` (ECS StopTask): answers once the task is STOPPED.
pub struct StopTask;

impl Endpoint for StopTask {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/tasks/stop";
    type Request = StopTaskRequest;
    type Response = StopTaskResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopTaskRequest {
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StopTaskResponse {
    pub task: Task,
}

/// `POST /v1/tasks/watch?task=ID&until=STATUS`: a [`TaskEvent`] line with the task at once
/// and at every change, until it reaches `until` (STOPPED by default; RUNNING ends early if
/// the task stops instead).
pub struct WatchTask;

impl StreamEndpoint for WatchTask {
    const PATH: &'static str = "/v1/tasks/watch";
    type Request = WatchTaskRequest;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchTaskRequest {
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum TaskEvent {
    /// The task as it is now.
    Task {
        task: Box<Task>,
    },
    Error(ApiError),
}

/// `POST /v1/tasks/logs?task=ID[&container=NAME][&follow=true]`: [`LogEvent`] lines with
/// what the task's containers wrote, kept by ecrld after the containers are gone.
/// The log streams of an `awslogs` log group (CloudWatch Logs' DescribeLogStreams, as far
/// as ecrl keeps them): one per container of each task whose definition logs to the group.
pub struct ListLogStreams;

impl Endpoint for ListLogStreams {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/logs/streams";
    type Request = LogStreamsRequest;
    type Response = LogStreamsResponse;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogStreamsRequest {
    pub log_group_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogStreamsResponse {
    pub log_group_name: String,
    /// Oldest first.
    pub log_streams: Vec<LogStream>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LogStream {
    pub log_stream_name: String,
    /// When its task was created.
    pub creation_time: String,
    pub task_arn: String,
    pub container_name: String,
    /// The task's lastStatus.
    pub last_status: String,
}

pub struct TaskLogs;

impl StreamEndpoint for TaskLogs {
    const PATH: &'static str = "/v1/tasks/logs";
    type Request = TaskLogsRequest;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskLogsRequest {
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "camelCase")]
pub enum LogEvent {
    /// Output of one container (stdout and stderr as they came), lossily UTF-8.
    Output {
        container: String,
        data: String,
    },
    Error(ApiError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_definition_round_trips_with_the_definition_flattened() {
        let definition = crate::taskdef::parse(
            r#"{"family":"web","containerDefinitions":[{"name":"a","image":"busybox","memory":64}]}"#,
        )
        .unwrap();
        let td = TaskDefinition {
            task_definition_arn: "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1".into(),
            revision: 1,
            status: STATUS_ACTIVE.into(),
            registered_at: "2026-01-01T00:00:00Z".into(),
            deregistered_at: None,
            definition,
        };
        let json = serde_json::to_value(&td).unwrap();
        assert_eq!(json["family"], "web");
        assert_eq!(json["revision"], 1);
        assert_eq!(json["containerDefinitions"][0]["name"], "a");
        let back: TaskDefinition = serde_json::from_value(json).unwrap();
        assert_eq!(back, td);
        assert_eq!(back.family_revision(), "web:1");
    }

    fn task(stop_code: Option<&str>, codes: &[(bool, Option<i64>)]) -> Task {
        Task {
            task_arn: "arn:aws:ecs:r:1:task/default/abc".into(),
            cluster_arn: String::new(),
            task_definition_arn: "arn:aws:ecs:r:1:task-definition/fam:3".into(),
            group: "family:fam".into(),
            last_status: task_status::STOPPED.into(),
            desired_status: "STOPPED".into(),
            health_status: "UNKNOWN".into(),
            cpu: None,
            memory: None,
            network_mode: "bridge".into(),
            containers: codes
                .iter()
                .map(|(essential, code)| Container {
                    container_arn: String::new(),
                    task_arn: String::new(),
                    name: "c".into(),
                    image: "i".into(),
                    image_digest: None,
                    runtime_id: None,
                    last_status: "STOPPED".into(),
                    exit_code: *code,
                    reason: None,
                    network_bindings: vec![],
                    health_status: "UNKNOWN".into(),
                    essential: *essential,
                    cpu: None,
                    memory: None,
                    memory_reservation: None,
                })
                .collect(),
            overrides: TaskOverride::default(),
            started_by: None,
            tags: vec![],
            created_at: String::new(),
            pull_started_at: None,
            pull_stopped_at: None,
            started_at: None,
            stopping_at: None,
            stopped_at: None,
            stop_code: stop_code.map(str::to_string),
            stopped_reason: None,
            essential_container_exited: None,
            version: 1,
        }
    }

    #[test]
    fn exit_code_is_the_failing_essential_containers() {
        let t = task(None, &[(true, Some(0)), (false, Some(9))]);
        assert_eq!(t.exit_code(), 0, "a non-essential failure does not count");
        let t = task(None, &[(true, Some(0)), (true, Some(3))]);
        assert_eq!(t.exit_code(), 3);
        let t = task(None, &[(true, Some(137))]);
        assert_eq!(t.exit_code(), 137);
        let t = task(None, &[(true, None)]);
        assert_eq!(t.exit_code(), 1, "no code is a failure");
        let mut t = task(
            Some(stop_code::ESSENTIAL_CONTAINER_EXITED),
            &[(true, Some(143)), (true, Some(0))],
        );
        t.containers[1].name = "done".into();
        t.essential_container_exited = Some("done".into());
        assert_eq!(
            t.exit_code(),
            0,
            "the container that stopped the task decides"
        );
        let t = task(Some(stop_code::TASK_FAILED_TO_START), &[(true, Some(0))]);
        assert_eq!(t.exit_code(), 1);
        assert_eq!(t.id(), "abc");
        assert_eq!(t.family(), "fam");
        assert_eq!(t.family_revision(), "fam:3");
    }
}
