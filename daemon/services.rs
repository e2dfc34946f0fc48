//! ECS services: the scheduler that keeps each service's `desiredCount` tasks RUNNING.
//!
//! Every pass (on each metadata commit, at least every second) looks at each service and its
//! tasks (group `service:NAME`, `startedBy` the deployment's id) and does what ECS's service
//! scheduler does: starts what the PRIMARY deployment lacks within `maximumPercent`, stops
//! the older deployments' tasks as far as `minimumHealthyPercent` allows, replaces tasks
//! that stopped or failed their health checks (waiting longer each time tasks keep failing
//! to start), completes a rollout once only the PRIMARY deployment is left at its count, and
//! with the circuit breaker on, fails a rollout whose tasks keep failing and rolls back to
//! the last completed one. Its state is the service record itself (deployments, events), so
//! a restarted daemon goes on where it was. One instance schedules when several share
//! PostgreSQL.

use crate::app::AppState;
use crate::metadata::ExclusiveJob;
use ecrl::api::services::{Deployment, Service, ServiceEvent};
use ecrl::api::tasks::{stop_code, task_status, Task};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the scheduler stops a task it no longer needs (ECS's words).
pub const SCALING_REASON: &str = "Scaling activity initiated by";
/// Why it stops a task whose container failed its health checks (ECS's words).
pub const UNHEALTHY_REASON: &str = "Task failed container health checks";
/// What a deployment the circuit breaker made says (ECS's words, then the deployment).
const ROLLBACK_REASON: &str = "ECS deployment circuit breaker: rolling back to deployment";
/// Events a service keeps (ECS shows the latest 100).
const EVENTS_KEPT: usize = 100;
/// The longest wait between launches while tasks keep failing to start.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The least time between two scheduler passes.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(200);

/// The group a service's tasks carry.
pub fn group_of(service_name: &str) -> String {
    format!("service:{service_name}")
}

/// The tasks of a service (stopped ones included), by its cluster and group.
pub fn tasks_of(index: &crate::metadata::Index, service: &Service) -> Vec<Task> {
    let group = group_of(&service.service_name);
    index
        .tasks
        .values()
        .filter(|t| t.group == group && t.cluster_arn == service.cluster_arn)
        .cloned()
        .collect()
}

fn is_live(t: &Task) -> bool {
    t.last_status != task_status::STOPPED
}

/// An essential container has exited: the task is stopping, whatever its status says yet.
fn ending(t: &Task) -> bool {
    t.containers
        .iter()
        .any(|c| c.essential && c.last_status == task_status::STOPPED)
}

/// A task that stopped by itself (its container exited, it could not start, it failed its
/// health checks), not because it was asked to.
fn failed(t: &Task) -> bool {
    t.last_status == task_status::STOPPED
        && (t.stop_code.as_deref() != Some(stop_code::USER_INITIATED)
            || t.stopped_reason.as_deref() == Some(UNHEALTHY_REASON))
}

/// RUNNING, and HEALTHY when its definition has a health check (`checked`: a task whose
/// checks have not answered yet is not healthy, so a rollout waits for them).
fn healthy(t: &Task, checked: &HashSet<String>) -> bool {
    t.last_status == task_status::RUNNING
        && match t.health_status.as_str() {
            "HEALTHY" => true,
            "UNHEALTHY" => false,
            _ => !checked.contains(t.id()),
        }
}

/// The tasks among `tasks` whose definition has a container health check.
fn with_health_checks(index: &crate::metadata::Index, tasks: &[Task]) -> HashSet<String> {
    tasks
        .iter()
        .filter(|t| {
            let Some((family, revision)) = t.family_revision().rsplit_once(':') else {
                return false;
            };
            let revision: u32 = revision.parse().unwrap_or(0);
            index
                .task_families
                .get(family)
                .and_then(|f| f.revisions.get(&revision))
                .is_some_and(|td| {
                    td.definition
                        .container_definitions
                        .iter()
                        .any(|c| c.health_check.is_some())
                })
        })
        .map(|t| t.id().to_string())
        .collect()
}

/// The service with its counts as its tasks are now.
pub fn with_counts(mut service: Service, tasks: &[Task]) -> Service {
    let live: Vec<&Task> = tasks.iter().filter(|t| is_live(t) && !ending(t)).collect();
    service.running_count = live
        .iter()
        .filter(|t| t.last_status == task_status::RUNNING)
        .count() as u32;
    service.pending_count = live.len() as u32 - service.running_count;
    for d in service.deployments.iter_mut() {
        let of: Vec<&&Task> = live
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(d.id.as_str()))
            .collect();
        d.running_count = of
            .iter()
            .filter(|t| t.last_status == task_status::RUNNING)
            .count() as u32;
        d.pending_count = of.len() as u32 - d.running_count;
        d.failed_tasks = tasks
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(d.id.as_str()) && failed(t))
            .count() as u32;
    }
    service
}

pub fn event(service: &mut Service, message: String) {
    tracing::info!(service = %service.service_name, "{message}");
    service.events.insert(
        0,
        ServiceEvent {
            id: uuid::Uuid::new_v4().to_string(),
            created_at: ecrl::timestamp::now(),
            message,
        },
    );
    service.events.truncate(EVENTS_KEPT);
}

/// A new deployment of `task_definition` for `desired` tasks.
pub fn deployment(task_definition: &str, desired: u32) -> Deployment {
    let now = ecrl::timestamp::now();
    Deployment {
        id: format!(
            "ecs-svc/{}",
            u64::from_le_bytes(
                uuid::Uuid::new_v4().as_bytes()[..8]
                    .try_into()
                    .unwrap_or([0; 8])
            ) % 10_000_000_000_000_000_000
        ),
        status: "PRIMARY".into(),
        task_definition: task_definition.to_string(),
        desired_count: desired,
        pending_count: 0,
        running_count: 0,
        failed_tasks: 0,
        created_at: now.clone(),
        updated_at: now,
        rollout_state: "IN_PROGRESS".into(),
        rollout_state_reason: "ECS deployment in progress.".into(),
        launch_type: "EC2".into(),
    }
}

/// Per service: failures in a row and when the next launch may be.
#[derive(Default)]
struct Backoff {
    /// The deployment the counts below are of (failures before this scheduler saw it, or
    /// of an earlier deployment, do not count).
    deployment: String,
    failures_seen: u32,
    streak: u32,
    next_launch: Option<Instant>,
    /// Tasks asked to stop, until they are STOPPED (asked once, told once).
    stopping: HashSet<String>,
    /// Tasks launched since the last one that came up: one RUNNING and healthy ends the
    /// streak of failures.
    launched: HashSet<String>,
}

pub fn start(state: &Arc<AppState>) {
    let state = state.clone();
    tokio::spawn(async move { schedule(state).await });
}

async fn schedule(state: Arc<AppState>) {
    // Instances sharing one database: one schedules, another takes over if it stops.
    let Some(_claimed) = crate::app::claim(&state, ExclusiveJob::Services).await else {
        return;
    };
    let mut backoff: HashMap<String, Backoff> = HashMap::new();
    let mut last_pass: Option<tokio::time::Instant> = None;
    loop {
        // At most five passes a second, however often the metadata changes; a change after
        // a quiet spell is acted on at once (a new service starts its tasks without delay).
        if let Some(last) = last_pass {
            tokio::time::sleep_until(last + MIN_PASS_INTERVAL).await;
        }
        last_pass = Some(tokio::time::Instant::now());
        let changed = state.meta.changed().clone();
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let services: Vec<Service> = state.meta.read().services.values().cloned().collect();
        backoff.retain(|arn, _| services.iter().any(|s| &s.service_arn == arn));
        for service in services {
            let b = backoff.entry(service.service_arn.clone()).or_default();
            if let Err(e) = pass(&state, service, b).await {
                tracing::warn!("service scheduler: {e}");
            }
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The wait before the next launch after `streak` failures in a row: none after the first
/// (a task that died is replaced at once), then 1 s, 2 s, 4 s, ... up to five minutes.
fn backoff_wait(streak: u32) -> Duration {
    match streak {
        0 | 1 => Duration::ZERO,
        n => Duration::from_secs(1 << (n - 2).min(9)).min(MAX_BACKOFF),
    }
}

/// The circuit breaker's threshold: half the desired count, at least 3, at most 200 (ECS's).
fn threshold(desired: u32) -> u32 {
    desired.div_ceil(2).clamp(3, 200)
}

/// One look at one service: starts and stops what it needs, and records what changed.
async fn pass(state: &Arc<AppState>, stored: Service, backoff: &mut Backoff) -> Result<(), String> {
    let (tasks, checked) = {
        let index = state.meta.read();
        let tasks = tasks_of(&index, &stored);
        let checked = with_health_checks(&index, &tasks);
        (tasks, checked)
    };
    let mut service = with_counts(stored.clone(), &tasks);
    let name = stored.service_name.clone();
    backoff
        .stopping
        .retain(|id| tasks.iter().any(|t| t.id() == id && is_live(t)));
    // Tasks on their way out count for nothing but the room they take.
    let live: Vec<&Task> = tasks.iter().filter(|t| is_live(t)).collect();
    // A task whose essential container has exited is on its way out too: it is replaced at
    // once, not when its stop has finished (its logs drained, its containers removed).
    let going: Vec<&Task> = live
        .iter()
        .copied()
        .filter(|t| {
            backoff.stopping.contains(t.id())
                || t.desired_status == task_status::STOPPED
                || ending(t)
        })
        .collect();
    let live: Vec<&Task> = live
        .into_iter()
        .filter(|t| !going.iter().any(|g| g.id() == t.id()))
        .collect();
    let Some(primary) = service.deployments.first().cloned() else {
        return Ok(());
    };
    let desired = if service.status == "ACTIVE" {
        service.desired_count
    } else {
        0
    };
    let grace = Duration::from_secs(service.health_check_grace_period_seconds.unwrap_or(0) as u64);
    let config = service.deployment_configuration.clone();
    let max_total = (desired * config.maximum_percent / 100).max(desired);
    let min_healthy = (desired * config.minimum_healthy_percent).div_ceil(100);

    // Unhealthy tasks past the grace period are replaced.
    for t in &live {
        let past_grace = t
            .started_at
            .as_deref()
            .and_then(ecrl::timestamp::epoch_seconds)
            .is_some_and(|at| now_secs() - at >= grace.as_secs_f64());
        if t.last_status == task_status::RUNNING && t.health_status == "UNHEALTHY" && past_grace {
            backoff.stopping.insert(t.id().to_string());
            event(
                &mut service,
                format!(
                    "(service {}) (task {}) failed container health checks.",
                    name,
                    t.id()
                ),
            );
            stop(state, t.id(), UNHEALTHY_REASON.into());
        }
    }

    // Tasks that keep failing: wait longer before each launch.
    let primary_failed = service.deployments[0].failed_tasks;
    if backoff.deployment != primary.id {
        *backoff = Backoff {
            deployment: primary.id.clone(),
            failures_seen: primary_failed,
            stopping: std::mem::take(&mut backoff.stopping),
            ..Default::default()
        };
    }
    if primary_failed > backoff.failures_seen {
        backoff.streak += primary_failed - backoff.failures_seen;
        backoff.next_launch = Some(Instant::now() + backoff_wait(backoff.streak));
        if backoff.streak >= 3 {
            event(
                &mut service,
                format!(
                    "(service {}) is unable to consistently start tasks successfully.",
                    name
                ),
            );
        }
    }
    backoff.failures_seen = primary_failed;
    let primary_live: Vec<&&Task> = live
        .iter()
        .filter(|t| t.started_by.as_deref() == Some(primary.id.as_str()))
        .collect();
    if primary_live
        .iter()
        .any(|t| healthy(t, &checked) && backoff.launched.contains(t.id()))
    {
        backoff.streak = 0;
        backoff.launched.clear();
    }

    // The circuit breaker: a rollout whose tasks keep failing ends FAILED (and rolls back).
    if config.deployment_circuit_breaker.enable
        && service.deployments[0].rollout_state == "IN_PROGRESS"
        && primary_failed >= threshold(desired.max(1))
    {
        let d = &mut service.deployments[0];
        d.rollout_state = "FAILED".into();
        d.rollout_state_reason = format!(
            "ECS deployment circuit breaker: tasks failed to start ({primary_failed} tasks failed)."
        );
        d.updated_at = ecrl::timestamp::now();
        let failed_id = d.id.clone();
        event(
            &mut service,
            format!(
                "(service {}) (deployment {failed_id}) deployment failed: tasks failed to start.",
                name
            ),
        );
        let last_good = service
            .deployments
            .iter()
            .skip(1)
            .find(|d| d.rollout_state == "COMPLETED")
            .cloned();
        // A rollback that fails too is left FAILED: rolling back again would only repeat it.
        let was_rollback = stored.deployments[0]
            .rollout_state_reason
            .starts_with(ROLLBACK_REASON);
        if let (true, false, Some(good)) = (
            config.deployment_circuit_breaker.rollback,
            was_rollback,
            last_good,
        ) {
            let mut rollback = deployment(&good.task_definition, service.desired_count);
            rollback.rollout_state_reason = format!("{ROLLBACK_REASON} {}.", good.id);
            for d in service.deployments.iter_mut() {
                d.status = "ACTIVE".into();
            }
            event(
                &mut service,
                format!(
                    "(service {}) (deployment {failed_id}) deployment failed: rolling back to deployment {}.",
                    name, good.id
                ),
            );
            service.task_definition = good.task_definition.clone();
            service.deployments.insert(0, rollback);
        }
        return save(state, &stored, service).await;
    }

    let primary = service.deployments[0].clone();
    let primary_live: Vec<&Task> = live
        .iter()
        .copied()
        .filter(|t| t.started_by.as_deref() == Some(primary.id.as_str()))
        .collect();
    let others: Vec<&Task> = live
        .iter()
        .copied()
        .filter(|t| t.started_by.as_deref() != Some(primary.id.as_str()))
        .collect();

    // Launch what the primary deployment lacks, within maximumPercent.
    let lacking = desired.saturating_sub(primary_live.len() as u32);
    let room = max_total.saturating_sub((live.len() + going.len()) as u32);
    let launch = lacking.min(room).min(10);
    // A FAILED rollout launches nothing more (an update or a forced deployment starts over).
    let failing = primary.rollout_state == "FAILED";
    let may_launch = backoff.next_launch.is_none_or(|at| Instant::now() >= at);
    if launch > 0 && may_launch && !failing {
        let request = ecrl::api::tasks::RunTaskRequest {
            task_definition: primary.task_definition.clone(),
            cluster: Some(service.cluster_arn.clone()),
            group: Some(group_of(&service.service_name)),
            count: Some(launch),
            overrides: None,
            started_by: Some(primary.id.clone()),
            tags: Vec::new(),
        };
        match crate::control::tasks::run_task::<ecrl::api::ApiError>(state, request, |_| Ok(()))
            .await
        {
            Ok(started) => {
                let ids: Vec<String> = started.tasks.iter().map(|t| t.id().to_string()).collect();
                backoff.launched.extend(ids.iter().cloned());
                event(
                    &mut service,
                    format!(
                        "(service {}) has started {} tasks: (task {}).",
                        name,
                        ids.len(),
                        ids.join(") (task ")
                    ),
                );
            }
            Err(e) => {
                backoff.streak += 1;
                backoff.next_launch = Some(Instant::now() + backoff_wait(backoff.streak));
                let message = format!(
                    "(service {}) was unable to place a task. Reason: {}.",
                    name, e.message
                );
                if service.events.first().map(|e| &e.message) != Some(&message) {
                    event(&mut service, message);
                }
            }
        }
    }

    // Stop what is no longer wanted: the older deployments' tasks as far as
    // minimumHealthyPercent allows (pending ones first), then the primary's extras.
    let mut healthy_now = live.iter().filter(|t| healthy(t, &checked)).count() as u32;
    let mut stopping: Vec<(&Task, String)> = Vec::new();
    let mut old = others.clone();
    old.sort_by_key(|t| {
        (
            healthy(t, &checked),
            std::cmp::Reverse(t.created_at.clone()),
        )
    });
    for t in old {
        if healthy(t, &checked) {
            if healthy_now <= min_healthy {
                break;
            }
            healthy_now -= 1;
        }
        let by = t.started_by.clone().unwrap_or_default();
        stopping.push((t, format!("{SCALING_REASON} (deployment {by})")));
    }
    if (primary_live.len() as u32) > desired {
        let mut extra = primary_live.clone();
        extra.sort_by_key(|t| {
            (
                healthy(t, &checked),
                std::cmp::Reverse(t.created_at.clone()),
            )
        });
        for t in extra
            .into_iter()
            .take(primary_live.len() - desired as usize)
        {
            stopping.push((t, format!("{SCALING_REASON} (deployment {})", primary.id)));
        }
    }
    if !stopping.is_empty() {
        let ids: Vec<String> = stopping.iter().map(|(t, _)| t.id().to_string()).collect();
        event(
            &mut service,
            format!(
                "(service {}) has stopped {} running tasks: (task {}).",
                name,
                ids.len(),
                ids.join(") (task ")
            ),
        );
        for (t, reason) in stopping {
            backoff.stopping.insert(t.id().to_string());
            stop(state, t.id(), reason);
        }
    }

    // Deployments with no task left go; a rollout completes once only the primary is left,
    // at its count, healthy.
    let live_ids: Vec<&str> = live
        .iter()
        .filter_map(|t| t.started_by.as_deref())
        .collect();
    let before = service.deployments.len();
    let primary_id = primary.id.clone();
    service
        .deployments
        .retain(|d| d.id == primary_id || live_ids.contains(&d.id.as_str()));
    if service.deployments.len() < before {
        service.deployments[0].updated_at = ecrl::timestamp::now();
    }
    let healthy_primary = primary_live.iter().filter(|t| healthy(t, &checked)).count() as u32;
    if service.deployments.len() == 1
        && service.deployments[0].rollout_state == "IN_PROGRESS"
        && healthy_primary == desired
        && primary_live.len() as u32 == desired
        && service.status == "ACTIVE"
    {
        let d = &mut service.deployments[0];
        d.rollout_state = "COMPLETED".into();
        d.rollout_state_reason = "ECS deployment completed.".into();
        d.updated_at = ecrl::timestamp::now();
        let id = d.id.clone();
        event(
            &mut service,
            format!("(service {}) (deployment {id}) deployment completed.", name),
        );
        event(
            &mut service,
            format!("(service {name}) has reached a steady state."),
        );
    }
    // A service being deleted goes once its tasks are gone.
    if service.status == "DRAINING" && live.is_empty() && going.is_empty() {
        tracing::info!(service = %name, "service deleted");
        return state
            .meta
            .delete_service(service.service_arn.clone())
            .await
            .map_err(|e| e.to_string());
    }
    save(state, &stored, service).await
}

/// Stores the service when what the scheduler keeps of it changed (counts are worked out
/// when asked).
async fn save(state: &Arc<AppState>, stored: &Service, service: Service) -> Result<(), String> {
    let strip = |s: &Service| {
        let mut s = s.clone();
        s.running_count = 0;
        s.pending_count = 0;
        for d in s.deployments.iter_mut() {
            d.running_count = 0;
            d.pending_count = 0;
            d.failed_tasks = 0;
        }
        s
    };
    let service = strip(&service);
    if service == strip(stored) {
        return Ok(());
    }
    // A service changed meanwhile by an update or a delete: that one wins; the next pass
    // starts from it.
    let current = state.meta.read().services.get(&stored.service_arn).cloned();
    if current.as_ref().map(strip) != Some(strip(stored)) {
        return Ok(());
    }
    state
        .meta
        .put_service(service)
        .await
        .map_err(|e| e.to_string())
}

fn stop(state: &Arc<AppState>, id: &str, reason: String) {
    let (state, id) = (state.clone(), id.to_string());
    tokio::spawn(async move {
        state.tasks.stop(&id, reason).await;
    });
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_failure_is_replaced_at_once_then_launches_wait_longer() {
        let waits: Vec<u64> = (0..=12).map(|n| backoff_wait(n).as_secs()).collect();
        assert_eq!(waits, [0, 0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }

    #[test]
    fn the_circuit_breaker_trips_at_half_the_count_between_3_and_200() {
        assert_eq!(threshold(1), 3);
        assert_eq!(threshold(3), 3);
        assert_eq!(threshold(10), 5);
        assert_eq!(threshold(1000), 200);
    }
}
