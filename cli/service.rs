//! `ecrl service create|update|describe|list|delete`: ECS services, a task definition kept
//! running N times.

use crate::app::{Context, UsageError};
use crate::output::{self, columns, key_values, Table};
use clap::{Args, Subcommand, ValueEnum};
use ecrl::api::services::*;
use std::process::ExitCode;

pub const LONG_ABOUT: &str = "\
ECS services: a task definition kept running --desired-count times in a cluster, as ECS's
service scheduler does. A task that stops or fails its container health checks is replaced
(waiting longer each time tasks keep failing to start); a new revision rolls out task by
task within --min-healthy-percent and --max-percent; with --circuit-breaker rollback, a
rollout whose tasks keep failing is stopped and the last revision that worked comes back.
Services survive a daemon restart. Their tasks carry the group 'service:NAME':
'ecrl task ps --service NAME' lists them.

Replicas cannot share a fixed host port: map hostPort 0 (an ephemeral port) in the task
definition to run more than one.

Examples:
  ecrl service create web --task-definition web --desired-count 3
  ecrl service update web --task-definition web:7
  ecrl service describe web
  ecrl service delete web --force";

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Create a service (ECS CreateService): its tasks start at once
    Create(CreateArgs),
    /// Change a service (ECS UpdateService): another revision, count or bounds
    Update(UpdateArgs),
    /// Show services: counts, deployments and their rollout, the latest events
    Describe {
        /// Service names or ARNs
        #[arg(required = true)]
        services: Vec<String>,
        /// The cluster [default: default]
        #[arg(long)]
        cluster: Option<String>,
    },
    /// List services, with their counts
    List {
        /// Only this cluster's [default: every cluster's]
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Delete a service (ECS DeleteService): its tasks are stopped; one still scaled above 0
    /// needs --force
    Delete {
        service: String,
        #[arg(long)]
        cluster: Option<String>,
        /// Delete it even though its desired count is above 0
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Breaker {
    /// No circuit breaker: failing tasks are retried, waiting longer each time
    Off,
    /// A rollout whose tasks keep failing is marked FAILED
    On,
    /// ... and the last completed revision is deployed again
    Rollback,
}

#[derive(Args, Debug)]
pub struct Bounds {
    /// Of the desired count, the tasks kept RUNNING and healthy during a rollout [default: 100]
    #[arg(long, value_name = "PERCENT")]
    min_healthy_percent: Option<u32>,
    /// Of the desired count, the most tasks at once during a rollout [default: 200]
    #[arg(long, value_name = "PERCENT")]
    max_percent: Option<u32>,
    /// The deployment circuit breaker [default: off]
    #[arg(long, value_enum)]
    circuit_breaker: Option<Breaker>,
    /// Seconds a new task's failing health checks are not held against it
    #[arg(long, value_name = "SECONDS")]
    health_check_grace_period: Option<u32>,
}

impl Bounds {
    /// The configuration these options make of `base`; `None` when none was given.
    fn apply(&self, base: &DeploymentConfiguration) -> Option<DeploymentConfiguration> {
        if self.min_healthy_percent.is_none()
            && self.max_percent.is_none()
            && self.circuit_breaker.is_none()
        {
            return None;
        }
        let mut c = base.clone();
        if let Some(p) = self.min_healthy_percent {
            c.minimum_healthy_percent = p;
        }
        if let Some(p) = self.max_percent {
            c.maximum_percent = p;
        }
        if let Some(b) = self.circuit_breaker {
            c.deployment_circuit_breaker = CircuitBreaker {
                enable: b != Breaker::Off,
                rollback: b == Breaker::Rollback,
            };
        }
        Some(c)
    }
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// 1-255 letters, digits, hyphens and underscores
    name: String,
    /// FAMILY (its latest ACTIVE revision), FAMILY:REVISION or an ARN
    #[arg(long, value_name = "TASK_DEFINITION")]
    task_definition: String,
    /// Tasks to keep running [default: 1]
    #[arg(long, value_name = "N")]
    desired_count: Option<u32>,
    /// The cluster [default: default]
    #[arg(long)]
    cluster: Option<String>,
    #[command(flatten)]
    bounds: Bounds,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    service: String,
    /// Roll out this revision: FAMILY, FAMILY:REVISION or an ARN
    #[arg(long, value_name = "TASK_DEFINITION")]
    task_definition: Option<String>,
    #[arg(long, value_name = "N")]
    desired_count: Option<u32>,
    /// Deploy the same revision again (new tasks replace the running ones)
    #[arg(long)]
    force_new_deployment: bool,
    #[arg(long)]
    cluster: Option<String>,
    #[command(flatten)]
    bounds: Bounds,
}

pub async fn run(ctx: &Context, command: ServiceCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match command {
        ServiceCommand::Create(a) => {
            let r = client
                .call::<CreateService>(&CreateServiceRequest {
                    service_name: a.name,
                    task_definition: a.task_definition,
                    cluster: a.cluster,
                    desired_count: a.desired_count,
                    deployment_configuration: a.bounds.apply(&DeploymentConfiguration::default()),
                    health_check_grace_period_seconds: a.bounds.health_check_grace_period,
                })
                .await?;
            output::print(ctx.output, &r)?;
        }
        ServiceCommand::Update(a) => {
            let configuration = if a.bounds.apply(&Default::default()).is_some() {
                let current = client
                    .call::<DescribeServices>(&DescribeServicesRequest {
                        cluster: a.cluster.clone(),
                        services: vec![a.service.clone()],
                    })
                    .await?;
                let base = current
                    .services
                    .first()
                    .map(|s| s.deployment_configuration.clone())
                    .unwrap_or_default();
                a.bounds.apply(&base)
            } else {
                None
            };
            let r = client
                .call::<UpdateService>(&UpdateServiceRequest {
                    service: a.service,
                    cluster: a.cluster,
                    task_definition: a.task_definition,
                    desired_count: a.desired_count,
                    deployment_configuration: configuration,
                    health_check_grace_period_seconds: a.bounds.health_check_grace_period,
                    force_new_deployment: a.force_new_deployment,
                })
                .await?;
            output::print(ctx.output, &r)?;
        }
        ServiceCommand::Describe { services, cluster } => {
            if services.len() > 10 {
                return Err(UsageError("describe at most 10 services at once".into()).into());
            }
            let r = client
                .call::<DescribeServices>(&DescribeServicesRequest { cluster, services })
                .await?;
            let missing: Vec<String> = r.failures.iter().map(|f| f.arn.clone()).collect();
            output::print(ctx.output, &r)?;
            if !missing.is_empty() {
                eprintln!("error: no such service: {}", missing.join(", "));
                return Ok(ExitCode::FAILURE);
            }
        }
        ServiceCommand::List { cluster } => {
            let r = client
                .call::<ListServices>(&ListServicesRequest { cluster })
                .await?;
            output::print(ctx.output, &r)?;
        }
        ServiceCommand::Delete {
            service,
            cluster,
            force,
        } => {
            let r = client
                .call::<DeleteService>(&DeleteServiceRequest {
                    service,
                    cluster,
                    force,
                })
                .await?;
            ctx.note(format!(
                "deleting service {}: its tasks are being stopped",
                r.service.service_name
            ));
            if ctx.output != output::OutputFormat::Table {
                output::print(ctx.output, &r)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rows(services: &[Service]) -> String {
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            vec![
                s.service_name.clone(),
                s.status.clone(),
                s.task_definition
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                s.desired_count.to_string(),
                s.running_count.to_string(),
                s.pending_count.to_string(),
                s.deployments
                    .first()
                    .map(|d| d.rollout_state.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    columns(
        &[
            "SERVICE",
            "STATUS",
            "TASK DEFINITION",
            "DESIRED",
            "RUNNING",
            "PENDING",
            "ROLLOUT",
        ],
        &rows,
    )
}

fn detail(s: &Service) -> String {
    let mut out = key_values(&[
        ("service", s.service_name.clone()),
        ("arn", s.service_arn.clone()),
        ("status", s.status.clone()),
        ("task definition", s.task_definition.clone()),
        (
            "tasks",
            format!(
                "{} desired, {} running, {} pending",
                s.desired_count, s.running_count, s.pending_count
            ),
        ),
        (
            "deployment bounds",
            format!(
                "{}% healthy min, {}% max, circuit breaker {}",
                s.deployment_configuration.minimum_healthy_percent,
                s.deployment_configuration.maximum_percent,
                match &s.deployment_configuration.deployment_circuit_breaker {
                    b if !b.enable => "off",
                    b if b.rollback => "rollback",
                    _ => "on",
                }
            ),
        ),
    ]);
    out.push_str("\nDEPLOYMENTS\n");
    let deployments: Vec<Vec<String>> = s
        .deployments
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.status.clone(),
                d.task_definition
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                format!("{}/{}", d.running_count, d.desired_count),
                d.failed_tasks.to_string(),
                format!("{}: {}", d.rollout_state, d.rollout_state_reason),
            ]
        })
        .collect();
    out.push_str(&columns(
        &[
            "ID",
            "STATUS",
            "TASK DEFINITION",
            "RUNNING",
            "FAILED",
            "ROLLOUT",
        ],
        &deployments,
    ));
    out.push_str("\nEVENTS (latest first)\n");
    for e in s.events.iter().take(10) {
        out.push_str(&format!("{}  {}\n", e.created_at, e.message));
    }
    out
}

impl Table for ServiceResponse {
    fn table(&self) -> String {
        detail(&self.service)
    }
}

impl Table for DescribeServicesResponse {
    fn table(&self) -> String {
        self.services
            .iter()
            .map(detail)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Table for ListServicesResponse {
    fn table(&self) -> String {
        rows(&self.services)
    }
}
