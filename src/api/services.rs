//! `/v1/services`: ECS services — a task definition kept running `desiredCount` times in a
//! cluster, replaced when a task stops or fails its health checks, rolled out revision by
//! revision within the deployment's bounds. ECS's shapes (CreateService, UpdateService,
//! DescribeServices, ListServices, DeleteService).

use super::{Endpoint, Method};
use serde::{Deserialize, Serialize};

/// A service, as ECS DescribeServices shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/NAME`.
    pub service_arn: String,
    pub service_name: String,
    pub cluster_arn: String,
    /// `ACTIVE`, `DRAINING` (being deleted) or `INACTIVE`.
    pub status: String,
    /// The task definition ARN the PRIMARY deployment runs.
    pub task_definition: String,
    pub desired_count: u32,
    /// Tasks of the service that are RUNNING.
    pub running_count: u32,
    /// Tasks of the service on their way to RUNNING.
    pub pending_count: u32,
    /// `EC2`: tasks run on the local engine.
    pub launch_type: String,
    /// `REPLICA`.
    pub scheduling_strategy: String,
    pub deployment_configuration: DeploymentConfiguration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period_seconds: Option<u32>,
    pub deployments: Vec<Deployment>,
    /// Newest first, at most 100 (ECS keeps the latest 100).
    pub events: Vec<ServiceEvent>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentConfiguration {
    /// Of `desiredCount`, the tasks kept RUNNING and healthy during a deployment (100).
    pub minimum_healthy_percent: u32,
    /// Of `desiredCount`, the most tasks RUNNING or PENDING during a deployment (200).
    pub maximum_percent: u32,
    pub deployment_circuit_breaker: CircuitBreaker,
}

impl Default for DeploymentConfiguration {
    fn default() -> Self {
        DeploymentConfiguration {
            minimum_healthy_percent: 100,
            maximum_percent: 200,
            deployment_circuit_breaker: CircuitBreaker::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    pub enable: bool,
    pub rollback: bool,
}

/// One deployment of a service: the PRIMARY one (what the service should run) and the
/// ACTIVE ones it replaces, until their tasks are gone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `ecs-svc/NUMBER`: the `startedBy` of its tasks.
    pub id: String,
    /// `PRIMARY`, `ACTIVE` or `INACTIVE`.
    pub status: String,
    pub task_definition: String,
    pub desired_count: u32,
    pub pending_count: u32,
    pub running_count: u32,
    /// Tasks of the deployment that stopped before they were RUNNING and healthy.
    pub failed_tasks: u32,
    pub created_at: String,
    pub updated_at: String,
    /// `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    pub rollout_state: String,
    pub rollout_state_reason: String,
    pub launch_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEvent {
    pub id: String,
    pub created_at: String,
    pub message: String,
}

/// `POST /v1/services/create` (ECS CreateService).
pub struct CreateService;

impl Endpoint for CreateService {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/services/create";
    type Request = CreateServiceRequest;
    type Response = ServiceResponse;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateServiceRequest {
    pub service_name: String,
    /// FAMILY (its latest ACTIVE revision), FAMILY:REVISION or an ARN.
    pub task_definition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_configuration: Option<DeploymentConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period_seconds: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceResponse {
    pub service: Service,
}

/// `POST /v1/services/update` (ECS UpdateService): another revision (a new deployment), a
/// new count, new bounds, or the same revision deployed again (`forceNewDeployment`).
pub struct UpdateService;

impl Endpoint for UpdateService {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/services/update";
    type Request = UpdateServiceRequest;
    type Response = ServiceResponse;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateServiceRequest {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_configuration: Option<DeploymentConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_new_deployment: bool,
}

/// `POST /v1/services/describe` (ECS DescribeServices): the named services (names or ARNs),
/// those that do not exist in `failures` (reason MISSING).
pub struct DescribeServices;

impl Endpoint for DescribeServices {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/services/describe";
    type Request = DescribeServicesRequest;
    type Response = DescribeServicesResponse;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeServicesRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub services: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DescribeServicesResponse {
    pub services: Vec<Service>,
    pub failures: Vec<super::tasks::Failure>,
}

/// `GET /v1/services/list` (ECS ListServices, answered with whole services).
pub struct ListServices;

impl Endpoint for ListServices {
    const METHOD: Method = Method::Get;
    const PATH: &'static str = "/v1/services/list";
    type Request = ListServicesRequest;
    type Response = ListServicesResponse;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListServicesRequest {
    /// Every cluster's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListServicesResponse {
    pub services: Vec<Service>,
}

/// `POST /v1/services/delete` (ECS DeleteService): refused while `desiredCount` is above 0
/// unless `force`; the service's tasks are stopped.
pub struct DeleteService;

impl Endpoint for DeleteService {
    const METHOD: Method = Method::Post;
    const PATH: &'static str = "/v1/services/delete";
    type Request = DeleteServiceRequest;
    type Response = ServiceResponse;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteServiceRequest {
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}
