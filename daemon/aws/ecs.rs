//! ECS's operations (`AmazonEC2ContainerServiceV20141113.<Op>`), each calling the same
//! function the control API calls for it (`control::taskdefs`, `control::tasks`,
//! `control::clusters`). This module translates ECS's wire shapes (epoch timestamps, ECS's
//! error types, `failures`, pagination), decides each operation's `ecs:` action against the
//! resource's ARN, and must not hold operation logic of its own.
//!
//! StartTask names container instances; ecrl has one, the local runtime, so each instance
//! named starts one task there, as RunTask with that count.

use super::{decode, paged, string, AwsError, Out};
use crate::auth::Principal;
use crate::control::{clusters, taskdefs, tasks};
use crate::registry::Shared;
use axum::http::StatusCode;
use ecrl::api::tasks::{
    CreateClusterRequest, DeleteTaskDefinitionsRequest, DescribeClustersRequest, Failure,
    ListTaskDefinitionsRequest, ListTasksRequest, RunTaskRequest, StopTaskRequest, Task,
    TaskDefinition, TaskDefinitionRef, DEFAULT_CLUSTER,
};
use ecrl::api::{ApiError, ErrorCode};
use ecrl::names::RepoName;
use serde_json::{json, Map, Value};

/// An ecrl error as ECS's: its exception type and status.
fn ecs_error(e: ApiError) -> AwsError {
    let kind = match e.code {
        ErrorCode::ClusterNotFound => "ClusterNotFoundException",
        ErrorCode::ClusterContainsTasks => "ClusterContainsTasksException",
        ErrorCode::ServiceNotFound => "ServiceNotFoundException",
        ErrorCode::ServiceNotActive => "ServiceNotActiveException",
        ErrorCode::InvalidParameter | ErrorCode::TaskNotFound => "InvalidParameterException",
        ErrorCode::Internal
        | ErrorCode::ShuttingDown
        | ErrorCode::RuntimeUnavailable
        | ErrorCode::Unknown => "ServerException",
        // An unknown task definition, an image that is not there, ...: ECS answers a
        // ClientException for what the request names wrongly.
        _ => "ClientException",
    };
    AwsError {
        kind,
        status: if kind == "ServerException" {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        },
        message: e.message,
    }
}

/// Why RunTask refused: the service's error, or the door's own (a denied image pull).
enum Refusal {
    Api(ApiError),
    Aws(AwsError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

impl From<Refusal> for AwsError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Api(e) => ecs_error(e),
            Refusal::Aws(e) => e,
        }
    }
}

fn server(e: impl std::fmt::Display) -> AwsError {
    ecs_error(ApiError::new(ErrorCode::Internal, e.to_string()))
}

/// The ARN a task-definition reference stands for, for the policy decision: the revision it
/// resolves to, else what it names (`FAMILY` stands for every revision, `FAMILY:*`).
fn task_definition_arn(state: &Shared, reference: &str) -> String {
    if let Ok(td) =
        crate::tasks::defs::resolve_task_definition(&state.meta.read(), reference, false)
    {
        return td.task_definition_arn;
    }
    if reference.starts_with("arn:") {
        return reference.to_string();
    }
    let prefix = taskdefs::arn_prefix(state);
    match reference.contains(':') {
        true => format!("{prefix}{reference}"),
        false => format!("{prefix}{reference}:*"),
    }
}

/// The ARN a task reference (id or ARN) in `cluster` stands for.
fn task_arn(state: &Shared, cluster: &str, reference: &str) -> String {
    if reference.starts_with("arn:") {
        reference.to_string()
    } else {
        state.ecs_arn(&format!("task/{cluster}/{reference}"))
    }
}

/// RFC 3339 times of the listed members (of `value`, an object) as epoch seconds.
fn epoch_members(value: &mut Value, members: &[&str]) {
    for member in members {
        if let Some(v) = value.get_mut(*member) {
            if let Some(seconds) = v.as_str().and_then(ecrl::timestamp::epoch_seconds) {
                *v = json!(seconds);
            }
        }
    }
}

fn remove(value: &mut Value, members: &[&str]) {
    if let Value::Object(map) = value {
        for m in members {
            map.remove(*m);
        }
    }
}

/// A task definition in ECS's `TaskDefinition` shape (its tags are answered beside it).
fn task_definition(td: &TaskDefinition) -> Result<Value, AwsError> {
    let mut value = serde_json::to_value(td).map_err(server)?;
    remove(&mut value, &["tags"]);
    epoch_members(&mut value, &["registeredAt", "deregisteredAt"]);
    Ok(value)
}

/// A task in ECS's `Task` shape: ecrl's own members left out, launch type EC2 (the local
/// runtime is an instance ecrl manages), tags only when asked for.
fn task(t: &Task, with_tags: bool) -> Result<Value, AwsError> {
    let mut value = serde_json::to_value(t).map_err(server)?;
    remove(&mut value, &["networkMode", "essentialContainerExited"]);
    if !with_tags || t.tags.is_empty() {
        remove(&mut value, &["tags"]);
    }
    epoch_members(
        &mut value,
        &[
            "createdAt",
            "pullStartedAt",
            "pullStoppedAt",
            "startedAt",
            "stoppingAt",
            "stoppedAt",
        ],
    );
    value["launchType"] = json!("EC2");
    if let Some(containers) = value["containers"].as_array_mut() {
        for c in containers {
            remove(c, &["essential"]);
        }
    }
    Ok(value)
}

fn tasks_value(list: &[Task], with_tags: bool) -> Result<Value, AwsError> {
    list.iter()
        .map(|t| task(t, with_tags))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// Whether `include` (a list of strings) asks for `what`.
fn includes(input: &Value, what: &str) -> bool {
    input["include"]
        .as_array()
        .is_some_and(|list| list.iter().any(|v| v.as_str() == Some(what)))
}

fn strings(input: &Value, field: &str) -> Result<Vec<String>, AwsError> {
    match &input[field] {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    AwsError::client(
                        "InvalidParameterException",
                        format!("{field} must be a list of strings"),
                    )
                })
            })
            .collect(),
        _ => Err(AwsError::client(
            "InvalidParameterException",
            format!("{field} must be a list of strings"),
        )),
    }
}

fn optional<'a>(input: &'a Value, field: &str) -> Option<&'a str> {
    input[field].as_str().filter(|s| !s.is_empty())
}

pub(super) async fn call(
    state: &Shared,
    principal: &Principal,
    op: &str,
    input: &Value,
) -> Result<Out, AwsError> {
    let may = |action: &'static str, arn: &str| -> Result<(), AwsError> {
        state
            .auth
            .may_arn(state, principal, action, arn)
            .map_err(AwsError::from)
    };
    let out = match op {
        // --- task definitions ----------------------------------------------------------
        "RegisterTaskDefinition" => {
            let family = string(input, "family")?;
            may(
                "ecs:RegisterTaskDefinition",
                &format!("{}{family}:*", taskdefs::arn_prefix(state)),
            )?;
            let registered =
                taskdefs::register(state, decode(input)?)
                    .await
                    .map_err(|e| match e.code {
                        // ECS answers a definition it cannot take with a ClientException.
                        ErrorCode::InvalidParameter => {
                            AwsError::client("ClientException", e.message)
                        }
                        _ => ecs_error(e),
                    })?;
            json!({
                "taskDefinition": task_definition(&registered.task_definition)?,
                "tags": registered.tags,
            })
        }
        "DescribeTaskDefinition" => {
            let reference = string(input, "taskDefinition")?;
            may(
                "ecs:DescribeTaskDefinition",
                &task_definition_arn(state, reference),
            )?;
            let described = taskdefs::describe(
                state,
                TaskDefinitionRef {
                    task_definition: reference.to_string(),
                },
            )
            .map_err(ecs_error)?;
            let mut out = json!({"taskDefinition": task_definition(&described.task_definition)?});
            if includes(input, "TAGS") {
                out["tags"] = json!(described.tags);
            }
            out
        }
        "DeregisterTaskDefinition" => {
            let reference = string(input, "taskDefinition")?;
            may(
                "ecs:DeregisterTaskDefinition",
                &task_definition_arn(state, reference),
            )?;
            let gone = taskdefs::deregister(
                state,
                TaskDefinitionRef {
                    task_definition: reference.to_string(),
                },
            )
            .await
            .map_err(ecs_error)?;
            json!({"taskDefinition": task_definition(&gone.task_definition)?})
        }
        "DeleteTaskDefinitions" => {
            let references = strings(input, "taskDefinitions")?;
            for reference in &references {
                may(
                    "ecs:DeleteTaskDefinitions",
                    &task_definition_arn(state, reference),
                )?;
            }
            let deleted = taskdefs::delete(
                state,
                DeleteTaskDefinitionsRequest {
                    task_definitions: references,
                },
            )
            .await
            .map_err(ecs_error)?;
            let definitions = deleted
                .task_definitions
                .iter()
                .map(task_definition)
                .collect::<Result<Vec<_>, _>>()?;
            json!({"taskDefinitions": definitions, "failures": deleted.failures})
        }
        "ListTaskDefinitions" => {
            may("ecs:ListTaskDefinitions", "*")?;
            let mut arns = taskdefs::list(state, list_request(input))
                .map_err(ecs_error)?
                .task_definition_arns;
            match input["sort"].as_str() {
                None | Some("ASC") => {}
                Some("DESC") => arns.reverse(),
                Some(other) => {
                    return Err(AwsError::client(
                        "InvalidParameterException",
                        format!("sort {other:?}: expected ASC or DESC"),
                    ))
                }
            }
            paged(input, "taskDefinitionArns", json!(arns))?
        }
        "ListTaskDefinitionFamilies" => {
            may("ecs:ListTaskDefinitionFamilies", "*")?;
            let families = taskdefs::families(state, list_request(input))
                .map_err(ecs_error)?
                .families;
            paged(input, "families", json!(families))?
        }
        // --- tasks ---------------------------------------------------------------------
        "RunTask" => {
            let reference = string(input, "taskDefinition")?;
            may("ecs:RunTask", &task_definition_arn(state, reference))?;
            let request: RunTaskRequest = decode(input)?;
            run(state, principal, request).await?
        }
        "StartTask" => {
            let reference = string(input, "taskDefinition")?;
            may("ecs:StartTask", &task_definition_arn(state, reference))?;
            let instances = strings(input, "containerInstances")?;
            if !(1..=10).contains(&instances.len()) {
                return Err(AwsError::client(
                    "InvalidParameterException",
                    "containerInstances must name 1-10 container instances (ecrl has one, \
                     the local runtime: each one named starts a task there)",
                ));
            }
            let mut fields = input.as_object().cloned().unwrap_or_default();
            fields.remove("containerInstances");
            let mut request: RunTaskRequest = decode(&Value::Object(fields))?;
            request.count = Some(instances.len() as u32);
            run(state, principal, request).await?
        }
        "StopTask" => {
            let cluster =
                clusters::resolve(state, optional(input, "cluster")).map_err(ecs_error)?;
            let reference = string(input, "task")?;
            let arn = task_arn(state, &cluster, reference);
            may("ecs:StopTask", &arn)?;
            in_cluster(state, &cluster, reference)?;
            let stopped = tasks::stop_task(
                state,
                StopTaskRequest {
                    task: reference.to_string(),
                    reason: input["reason"].as_str().map(str::to_string),
                },
            )
            .await
            .map_err(ecs_error)?;
            json!({"task": task(&stopped.task, true)?})
        }
        "DescribeTasks" => {
            let cluster =
                clusters::resolve(state, optional(input, "cluster")).map_err(ecs_error)?;
            let references = strings(input, "tasks")?;
            if references.is_empty() || references.len() > 100 {
                return Err(AwsError::client(
                    "InvalidParameterException",
                    "tasks must name 1-100 tasks",
                ));
            }
            let mut found = Vec::new();
            let mut failures = Vec::new();
            for reference in &references {
                let arn = task_arn(state, &cluster, reference);
                may("ecs:DescribeTasks", &arn)?;
                match in_cluster(state, &cluster, reference) {
                    Ok(t) => found.push(t),
                    Err(_) => failures.push(Failure {
                        arn,
                        reason: "MISSING".into(),
                        detail: None,
                    }),
                }
            }
            json!({
                "tasks": tasks_value(&found, includes(input, "TAGS"))?,
                "failures": failures,
            })
        }
        "ListTasks" => {
            let cluster =
                clusters::resolve(state, optional(input, "cluster")).map_err(ecs_error)?;
            may("ecs:ListTasks", &clusters::cluster_arn(state, &cluster))?;
            // ECS lists the tasks meant to run unless desiredStatus says otherwise.
            let listed = tasks::list_tasks(
                state,
                ListTasksRequest {
                    cluster: Some(cluster),
                    family: optional(input, "family").map(str::to_string),
                    desired_status: Some(
                        optional(input, "desiredStatus")
                            .unwrap_or("RUNNING")
                            .to_string(),
                    ),
                    started_by: optional(input, "startedBy").map(str::to_string),
                    service_name: optional(input, "serviceName").map(str::to_string),
                },
            )
            .map_err(ecs_error)?;
            let arns: Vec<&str> = listed.tasks.iter().map(|t| t.task_arn.as_str()).collect();
            paged(input, "taskArns", json!(arns))?
        }
        // --- clusters ------------------------------------------------------------------
        "CreateCluster" => {
            let name = optional(input, "clusterName").unwrap_or(DEFAULT_CLUSTER);
            may("ecs:CreateCluster", &clusters::cluster_arn(state, name))?;
            let created = clusters::create(
                state,
                CreateClusterRequest {
                    cluster_name: Some(name.to_string()),
                    tags: decode_tags(input)?,
                },
            )
            .await
            .map_err(ecs_error)?;
            json!({"cluster": created.cluster})
        }
        "DescribeClusters" => {
            let names = strings(input, "clusters")?;
            for name in &names {
                let arn = match name.starts_with("arn:") {
                    true => name.clone(),
                    false => clusters::cluster_arn(state, name),
                };
                may("ecs:DescribeClusters", &arn)?;
            }
            if names.is_empty() {
                may(
                    "ecs:DescribeClusters",
                    &clusters::cluster_arn(state, DEFAULT_CLUSTER),
                )?;
            }
            let described = clusters::describe(state, DescribeClustersRequest { clusters: names })
                .map_err(ecs_error)?;
            let mut list = serde_json::to_value(described.clusters).map_err(server)?;
            if !includes(input, "TAGS") {
                if let Value::Array(items) = &mut list {
                    items.iter_mut().for_each(|c| remove(c, &["tags"]));
                }
            }
            json!({"clusters": list, "failures": described.failures})
        }
        "ListClusters" => {
            may("ecs:ListClusters", "*")?;
            paged(
                input,
                "clusterArns",
                json!(clusters::list(state).cluster_arns),
            )?
        }
        "DeleteCluster" => {
            let reference = string(input, "cluster")?;
            let arn = match reference.starts_with("arn:") {
                true => reference.to_string(),
                false => clusters::cluster_arn(state, reference),
            };
            may("ecs:DeleteCluster", &arn)?;
            let deleted = clusters::delete(
                state,
                ecrl::api::tasks::ClusterRef {
                    cluster: reference.to_string(),
                },
            )
            .await
            .map_err(ecs_error)?;
            let mut cluster = serde_json::to_value(deleted.cluster).map_err(server)?;
            remove(&mut cluster, &["tags"]);
            json!({ "cluster": cluster })
        }
        // --- services ------------------------------------------------------------------
        "CreateService" | "UpdateService" | "DeleteService" | "DescribeServices"
        | "ListServices" => service_call(state, op, input, &may).await?,
        // --- tags ----------------------------------------------------------------------
        "TagResource" => {
            let arn = string(input, "resourceArn")?;
            may("ecs:TagResource", arn)?;
            clusters::tag(state, arn, decode_tags(input)?)
                .await
                .map_err(ecs_error)?;
            json!({})
        }
        "UntagResource" => {
            let arn = string(input, "resourceArn")?;
            may("ecs:UntagResource", arn)?;
            clusters::untag(state, arn, &strings(input, "tagKeys")?)
                .await
                .map_err(ecs_error)?;
            json!({})
        }
        "ListTagsForResource" => {
            let arn = string(input, "resourceArn")?;
            may("ecs:ListTagsForResource", arn)?;
            json!({"tags": clusters::list_tags(state, arn).map_err(ecs_error)?})
        }
        _ => return Err(super::unsupported("ECS", op)),
    };
    Ok(out.into())
}

fn list_request(input: &Value) -> ListTaskDefinitionsRequest {
    ListTaskDefinitionsRequest {
        family_prefix: optional(input, "familyPrefix").map(str::to_string),
        status: optional(input, "status").map(str::to_string),
    }
}

/// ECS's service operations, through the control API's (the same checks), each decided by
/// the policies on the service's ARN (`*` for a listing).
async fn service_call(
    state: &Shared,
    op: &str,
    input: &Value,
    may: &impl Fn(&'static str, &str) -> Result<(), AwsError>,
) -> Result<Value, AwsError> {
    use crate::control::services as svc;
    use ecrl::api::services::*;
    let cluster = clusters::resolve(state, optional(input, "cluster")).map_err(ecs_error)?;
    let arn_of = |reference: &str| match reference.starts_with("arn:") {
        true => reference.to_string(),
        false => state.ecs_arn(&format!("service/{cluster}/{reference}")),
    };
    let mut out = match op {
        "CreateService" => {
            let request: CreateServiceRequest = decode(input)?;
            may("ecs:CreateService", &arn_of(&request.service_name))?;
            json!(svc::create(state, request).await.map_err(ecs_error)?)
        }
        "UpdateService" => {
            let request: UpdateServiceRequest = decode(input)?;
            may("ecs:UpdateService", &arn_of(&request.service))?;
            json!(svc::update(state, request).await.map_err(ecs_error)?)
        }
        "DeleteService" => {
            let request: DeleteServiceRequest = decode(input)?;
            may("ecs:DeleteService", &arn_of(&request.service))?;
            json!(svc::delete(state, request).await.map_err(ecs_error)?)
        }
        "DescribeServices" => {
            let request: DescribeServicesRequest = decode(input)?;
            for reference in &request.services {
                may("ecs:DescribeServices", &arn_of(reference))?;
            }
            json!(svc::describe(state, request).map_err(ecs_error)?)
        }
        _ => {
            may("ecs:ListServices", "*")?;
            let listed = svc::list(
                state,
                ListServicesRequest {
                    cluster: Some(cluster.clone()),
                },
            )
            .map_err(ecs_error)?;
            let arns: Vec<String> = listed.services.into_iter().map(|s| s.service_arn).collect();
            return super::paged(input, "serviceArns", json!(arns));
        }
    };
    super::epoch_times(&mut out);
    Ok(out)
}

fn decode_tags(input: &Value) -> Result<Vec<ecrl::taskdef::Tag>, AwsError> {
    match &input["tags"] {
        Value::Null => Ok(Vec::new()),
        tags => decode(tags),
    }
}

/// The task `reference` names, which must be in `cluster` (ECS does not find a task through
/// another cluster).
fn in_cluster(state: &Shared, cluster: &str, reference: &str) -> Result<Task, AwsError> {
    let not_found = || {
        AwsError::client(
            "InvalidParameterException",
            format!("The referenced task was not found: {reference} in cluster {cluster}"),
        )
    };
    let found = tasks::find(state, reference).map_err(|_| not_found())?;
    if found.cluster_name() != cluster
        || (reference.starts_with("arn:") && found.task_arn != reference)
    {
        return Err(not_found());
    }
    Ok(found)
}

/// A task that reaches into the host (see `TaskDefinitionInput::host_access`; environment
/// files in the overrides too) is run for the owner only: through the AWS API a user could
/// otherwise read the daemon's files or take the host, whatever its policies say.
fn refuse_host_access(
    user: &str,
    definition: &ecrl::taskdef::TaskDefinitionInput,
    request: &RunTaskRequest,
) -> Result<(), AwsError> {
    let mut found = definition.host_access();
    if let Some(overrides) = &request.overrides {
        for (i, o) in overrides.container_overrides.iter().enumerate() {
            if o.environment_files.as_ref().is_some_and(|f| !f.is_empty()) {
                found.push(format!(
                    "overrides.containerOverrides[{i}].environmentFiles"
                ));
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(AwsError {
        kind: "AccessDeniedException",
        status: axum::http::StatusCode::FORBIDDEN,
        message: format!(
            "user {user} may not run a task that reaches into the host ({}): only the owner \
             runs those ('ecrl task run', or an owner access key)",
            found.join(", ")
        ),
    })
}

/// RunTask (and StartTask): the caller must also be allowed to pull every image of ecrl that
/// the task would run.
async fn run(
    state: &Shared,
    principal: &Principal,
    request: RunTaskRequest,
) -> Result<Value, AwsError> {
    // A definition that cannot run (unknown, INACTIVE) is ECS's ClientException.
    let definition = crate::tasks::defs::resolve_task_definition(
        &state.meta.read(),
        &request.task_definition,
        true,
    )
    .map_err(|e| AwsError::client("ClientException", e.message))?;
    if let Principal::User(user) = principal {
        refuse_host_access(user, &definition.definition, &request)?;
    }
    let may_pull = |repo: &RepoName| {
        state
            .auth
            .may(state, principal, "ecr:BatchGetImage", Some(repo))
            .map_err(|e| Refusal::Aws(AwsError::from(e)))
    };
    let ran = tasks::run_task(state, request, may_pull).await?;
    let mut out = Map::new();
    out.insert("tasks".into(), tasks_value(&ran.tasks, true)?);
    out.insert("failures".into(), json!(ran.failures));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecrl_errors_become_ecs_exceptions() {
        let kind = |code| ecs_error(ApiError::new(code, "m")).kind;
        assert_eq!(kind(ErrorCode::ClusterNotFound), "ClusterNotFoundException");
        assert_eq!(
            kind(ErrorCode::ClusterContainsTasks),
            "ClusterContainsTasksException"
        );
        assert_eq!(kind(ErrorCode::TaskDefinitionNotFound), "ClientException");
        assert_eq!(
            kind(ErrorCode::InvalidParameter),
            "InvalidParameterException"
        );
        let e = ecs_error(ApiError::new(ErrorCode::RuntimeUnavailable, "m"));
        assert_eq!(
            (e.kind, e.status),
            ("ServerException", StatusCode::INTERNAL_SERVER_ERROR)
        );
    }

    #[test]
    fn tasks_leave_ecrls_own_members_out_and_carry_epoch_times() {
        let t: Task = serde_json::from_value(json!({
            "taskArn": "arn:aws:ecs:r:1:task/batch/abc",
            "clusterArn": "arn:aws:ecs:r:1:cluster/batch",
            "taskDefinitionArn": "arn:aws:ecs:r:1:task-definition/web:1",
            "group": "family:web", "lastStatus": "RUNNING", "desiredStatus": "RUNNING",
            "healthStatus": "UNKNOWN", "networkMode": "bridge",
            "containers": [{"containerArn": "c", "taskArn": "t", "name": "app", "image": "i",
                            "lastStatus": "RUNNING", "networkBindings": [],
                            "healthStatus": "UNKNOWN", "essential": true}],
            "overrides": {}, "tags": [{"key": "k", "value": "v"}],
            "createdAt": "2026-12-07T01:15:13.5Z", "version": 2,
            "essentialContainerExited": "app"
        }))
        .unwrap();
        assert_eq!(t.cluster_name(), "batch");
        let v = task(&t, false).unwrap();
        assert_eq!(v["createdAt"], json!(1_796_606_113.5));
        assert_eq!(v["launchType"], "EC2");
        for gone in ["networkMode", "essentialContainerExited", "tags"] {
            assert!(v.get(gone).is_none(), "{gone}: {v}");
        }
        assert!(v["containers"][0].get("essential").is_none(), "{v}");
        assert_eq!(task(&t, true).unwrap()["tags"][0]["key"], "k");
    }

    #[test]
    fn includes_reads_the_include_list() {
        assert!(includes(&json!({"include": ["TAGS"]}), "TAGS"));
        assert!(!includes(&json!({}), "TAGS"));
        assert!(strings(&json!({"tasks": [1]}), "tasks").is_err());
        assert_eq!(
            strings(&json!({"tasks": ["a"]}), "tasks").unwrap(),
            vec!["a".to_string()]
        );
    }
}
