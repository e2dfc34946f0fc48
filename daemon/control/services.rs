//! ECS services (CreateService, UpdateService, DescribeServices, ListServices,
//! DeleteService): the records; `crate::services` keeps their tasks running.

use super::{endpoint, Peer, Shared};
use crate::services::{deployment, event, tasks_of, with_counts};
use axum::Router;
use ecrl::api::services::*;
use ecrl::api::tasks::{Failure, TaskDefinition};
use ecrl::api::{ApiError, ErrorCode};

pub fn routes(router: Router<Shared>) -> Router<Shared> {
    let router = endpoint::<CreateService, _, _>(router, |s: Shared, _: Peer, r| async move {
        create(&s, r).await
    });
    let router = endpoint::<UpdateService, _, _>(router, |s: Shared, _: Peer, r| async move {
        update(&s, r).await
    });
    let router = endpoint::<DescribeServices, _, _>(router, |s: Shared, _: Peer, r| async move {
        describe(&s, r)
    });
    let router =
        endpoint::<ListServices, _, _>(router, |s: Shared, _: Peer, r| async move { list(&s, r) });
    endpoint::<DeleteService, _, _>(router, |s: Shared, _: Peer, r| async move {
        delete(&s, r).await
    })
}

/// The most tasks one service keeps (each is a set of containers on this machine).
pub const MAX_DESIRED: u32 = 100;
/// Services in all.
const MAX_SERVICES: usize = 1_000;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameter, message)
}

/// ECS's rule for service names: 1-255 letters, digits, hyphens and underscores.
fn check_name(name: &str) -> Result<(), ApiError> {
    super::clusters::check_ecs_name("service", name)
}

fn check_count(count: u32) -> Result<(), ApiError> {
    if count > MAX_DESIRED {
        return Err(invalid(format!(
            "desiredCount {count}: a service here keeps at most {MAX_DESIRED} tasks"
        )));
    }
    Ok(())
}

fn check_configuration(c: &DeploymentConfiguration) -> Result<(), ApiError> {
    if c.minimum_healthy_percent > 100 {
        return Err(invalid(format!(
            "minimumHealthyPercent {}: 0-100",
            c.minimum_healthy_percent
        )));
    }
    if !(100..=200).contains(&c.maximum_percent) {
        return Err(invalid(format!(
            "maximumPercent {}: 100-200",
            c.maximum_percent
        )));
    }
    if c.maximum_percent == 100 && c.minimum_healthy_percent == 100 {
        return Err(invalid(
            "maximumPercent 100 with minimumHealthyPercent 100 leaves a deployment no room: \
             lower minimumHealthyPercent or raise maximumPercent",
        ));
    }
    Ok(())
}

/// Replicas cannot share a fixed host port: refused with what to do instead.
fn check_ports(td: &TaskDefinition, count: u32) -> Result<(), ApiError> {
    if count <= 1 {
        return Ok(());
    }
    for c in &td.definition.container_definitions {
        for m in c.port_mappings.as_deref().unwrap_or_default() {
            if let Some(port) = m.host_port.filter(|p| *p != 0) {
                return Err(invalid(format!(
                    "desiredCount {count}: container {} of {} maps host port {port}, which \
                     only one task can hold; map hostPort 0 (an ephemeral port) to run \
                     replicas",
                    c.name,
                    td.family_revision()
                )));
            }
        }
    }
    Ok(())
}

fn cluster_of(state: &Shared, cluster: Option<&str>) -> Result<(String, String), ApiError> {
    let name = super::clusters::resolve(state, cluster)?;
    let arn = super::clusters::cluster_arn(state, &name);
    Ok((name, arn))
}

/// A service reference (name or ARN) in a cluster: its ARN.
fn service_arn(state: &Shared, cluster: &str, reference: &str) -> Result<String, ApiError> {
    if reference.starts_with("arn:") {
        return Ok(reference.to_string());
    }
    check_name(reference)?;
    Ok(state.ecs_arn(&format!("service/{cluster}/{reference}")))
}

fn not_found(reference: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ServiceNotFound,
        format!("Service not found: {reference} ('ecrl service list' shows the services)"),
    )
}

/// The service as it is now (counts from its tasks).
fn current(state: &Shared, arn: &str) -> Option<Service> {
    let index = state.meta.read();
    let service = index.services.get(arn)?.clone();
    let tasks = tasks_of(&index, &service);
    Some(with_counts(service, &tasks))
}

/// The service a request names (in its cluster): its ARN and its record.
fn stored(
    state: &Shared,
    cluster: Option<&str>,
    reference: &str,
) -> Result<(String, Service), ApiError> {
    let (cluster, _) = cluster_of(state, cluster)?;
    let arn = service_arn(state, &cluster, reference)?;
    let service = state
        .meta
        .read()
        .services
        .get(&arn)
        .cloned()
        .ok_or_else(|| not_found(reference))?;
    Ok((arn, service))
}

fn definition(state: &Shared, reference: &str) -> Result<TaskDefinition, ApiError> {
    crate::tasks::defs::resolve_task_definition(&state.meta.read(), reference, true)
}

pub(crate) async fn create(
    state: &Shared,
    r: CreateServiceRequest,
) -> Result<ServiceResponse, ApiError> {
    check_name(&r.service_name)?;
    let (cluster, cluster_arn) = cluster_of(state, r.cluster.as_deref())?;
    let desired = r.desired_count.unwrap_or(1);
    check_count(desired)?;
    let config = r.deployment_configuration.unwrap_or_default();
    check_configuration(&config)?;
    let td = definition(state, &r.task_definition)?;
    check_ports(&td, desired)?;
    let arn = state.ecs_arn(&format!("service/{cluster}/{}", r.service_name));
    {
        let index = state.meta.read();
        if let Some(existing) = index.services.get(&arn) {
            let what = if existing.status == "DRAINING" {
                "is being deleted"
            } else {
                "exists already"
            };
            return Err(invalid(format!(
                "service {} {what} in cluster {cluster}: 'ecrl service update' changes it",
                r.service_name
            )));
        }
        if index.services.len() >= MAX_SERVICES {
            return Err(invalid(format!(
                "there are {MAX_SERVICES} services already: delete some first"
            )));
        }
    }
    let mut service = Service {
        service_arn: arn.clone(),
        service_name: r.service_name.clone(),
        cluster_arn,
        status: "ACTIVE".into(),
        task_definition: td.task_definition_arn.clone(),
        desired_count: desired,
        running_count: 0,
        pending_count: 0,
        launch_type: "EC2".into(),
        scheduling_strategy: "REPLICA".into(),
        deployment_configuration: config,
        health_check_grace_period_seconds: r.health_check_grace_period_seconds,
        deployments: vec![deployment(&td.task_definition_arn, desired)],
        events: Vec::new(),
        created_at: ecrl::timestamp::now(),
        created_by: None,
    };
    let name = service.service_name.clone();
    event(
        &mut service,
        format!(
            "(service {name}) was created with {} ({desired} tasks).",
            td.family_revision()
        ),
    );
    state.meta.put_service(service.clone()).await?;
    Ok(ServiceResponse { service })
}

pub(crate) async fn update(
    state: &Shared,
    r: UpdateServiceRequest,
) -> Result<ServiceResponse, ApiError> {
    let (arn, mut service) = stored(state, r.cluster.as_deref(), &r.service)?;
    if service.status != "ACTIVE" {
        return Err(ApiError::new(
            ErrorCode::ServiceNotActive,
            format!("Service was not ACTIVE: {} is being deleted", r.service),
        ));
    }
    let desired = r.desired_count.unwrap_or(service.desired_count);
    check_count(desired)?;
    if let Some(config) = r.deployment_configuration {
        check_configuration(&config)?;
        service.deployment_configuration = config;
    }
    if let Some(grace) = r.health_check_grace_period_seconds {
        service.health_check_grace_period_seconds = Some(grace);
    }
    let td = match &r.task_definition {
        Some(reference) => definition(state, reference)?,
        None => definition(state, &service.task_definition)?,
    };
    check_ports(&td, desired)?;
    let name = service.service_name.clone();
    if desired != service.desired_count {
        let was = service.desired_count;
        event(
            &mut service,
            format!("(service {name}) desired count changed from {was} to {desired}."),
        );
        service.desired_count = desired;
    }
    let new_revision = td.task_definition_arn != service.task_definition;
    if new_revision || r.force_new_deployment {
        for d in service.deployments.iter_mut() {
            d.status = "ACTIVE".into();
        }
        let new = deployment(&td.task_definition_arn, desired);
        event(
            &mut service,
            format!(
                "(service {name}) has begun deployment {} of {}.",
                new.id,
                td.family_revision()
            ),
        );
        service.deployments.insert(0, new);
        service.task_definition = td.task_definition_arn.clone();
    }
    if let Some(primary) = service.deployments.first_mut() {
        primary.desired_count = desired;
        primary.updated_at = ecrl::timestamp::now();
    }
    state.meta.put_service(service).await?;
    let service = current(state, &arn).ok_or_else(|| not_found(&r.service))?;
    Ok(ServiceResponse { service })
}

pub(crate) fn describe(
    state: &Shared,
    r: DescribeServicesRequest,
) -> Result<DescribeServicesResponse, ApiError> {
    let (cluster, _) = cluster_of(state, r.cluster.as_deref())?;
    if r.services.is_empty() || r.services.len() > 10 {
        return Err(invalid("services: name 1-10 services (ECS's limit)"));
    }
    let mut services = Vec::new();
    let mut failures = Vec::new();
    for reference in &r.services {
        let arn = service_arn(state, &cluster, reference)?;
        match current(state, &arn) {
            Some(service) => services.push(service),
            None => failures.push(Failure {
                arn,
                reason: "MISSING".into(),
                detail: None,
            }),
        }
    }
    Ok(DescribeServicesResponse { services, failures })
}

pub(crate) fn list(
    state: &Shared,
    r: ListServicesRequest,
) -> Result<ListServicesResponse, ApiError> {
    let cluster_arn = match &r.cluster {
        Some(c) => Some(cluster_of(state, Some(c))?.1),
        None => None,
    };
    let arns: Vec<String> = state
        .meta
        .read()
        .services
        .values()
        .filter(|s| cluster_arn.as_ref().is_none_or(|c| &s.cluster_arn == c))
        .map(|s| s.service_arn.clone())
        .collect();
    Ok(ListServicesResponse {
        services: arns.iter().filter_map(|a| current(state, a)).collect(),
    })
}

pub(crate) async fn delete(
    state: &Shared,
    r: DeleteServiceRequest,
) -> Result<ServiceResponse, ApiError> {
    let (arn, mut service) = stored(state, r.cluster.as_deref(), &r.service)?;
    if service.status == "DRAINING" {
        return Ok(ServiceResponse { service });
    }
    if service.desired_count > 0 && !r.force {
        return Err(invalid(format!(
            "The service cannot be stopped while it is scaled above 0: set its desired count \
             to 0 ('ecrl service update {} --desired-count 0') or delete it with --force",
            service.service_name
        )));
    }
    service.status = "DRAINING".into();
    service.desired_count = 0;
    let name = service.service_name.clone();
    event(
        &mut service,
        format!("(service {name}) is being deleted: its tasks are stopped."),
    );
    state.meta.put_service(service).await?;
    let service = current(state, &arn).ok_or_else(|| not_found(&r.service))?;
    Ok(ServiceResponse { service })
}
