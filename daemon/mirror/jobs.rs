//! Sync jobs: a sync the daemon runs every so often (`ecrl mirror sync --every 1h`), kept in
//! SQLite so that a restart resumes the schedule. A job never runs twice at once.

use super::sync;
use super::MirrorError;
use crate::app::AppState;
use crate::metadata::mirror::Job;
use crate::metadata::now_millis;
use ecrl::api::mirror::{SyncEvent, SyncJob, SyncResult, SyncSpec};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The shortest and longest schedules.
pub const MIN_EVERY: Duration = Duration::from_secs(60);
pub const MAX_EVERY: Duration = Duration::from_secs(366 * 24 * 3600);
/// Jobs kept at once.
pub const MAX_JOBS: usize = 256;

pub const RUNNING: &str = "RUNNING";
pub const SUCCEEDED: &str = "SUCCEEDED";
pub const FAILED: &str = "FAILED";

pub fn api(job: &Job) -> SyncJob {
    SyncJob {
        id: job.id.clone(),
        spec: job.spec.clone(),
        every_seconds: job.every_seconds,
        created_at: ecrl::timestamp::from_millis(job.created_at),
        last_run_at: job.last_run_at.map(ecrl::timestamp::from_millis),
        last_result: job.last_result.clone(),
        last_summary: job.last_summary.clone(),
        next_run_at: ecrl::timestamp::from_millis(job.next_run_at),
    }
}

pub fn list(state: &AppState) -> Vec<SyncJob> {
    state.meta.read().mirror.jobs.values().map(api).collect()
}

/// Makes a job of a sync (checked now, as a sync would be) that first runs right away.
pub async fn create(state: &AppState, spec: SyncSpec, every: &str) -> Result<SyncJob, MirrorError> {
    sync::plan(state, &spec)?;
    let interval = ecrl::config::parse_duration(every).ok_or_else(|| {
        MirrorError::Invalid(format!(
            "--every {every:?}: expected a duration such as 30m, 1h or 1d"
        ))
    })?;
    if !(MIN_EVERY..=MAX_EVERY).contains(&interval) {
        return Err(MirrorError::Invalid(format!(
            "--every {every}: a job runs at most once a minute and at least once a year"
        )));
    }
    if state.meta.read().mirror.jobs.len() >= MAX_JOBS {
        return Err(MirrorError::Invalid(format!(
            "there are {MAX_JOBS} mirror jobs already: remove some with 'ecrl mirror job rm ID'"
        )));
    }
    let now = now_millis();
    let id = format!("job-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let job = state
        .meta
        .create_job(Job {
            id,
            spec,
            every_seconds: interval.as_secs(),
            created_at: now,
            last_run_at: None,
            last_result: None,
            last_summary: None,
            next_run_at: now,
        })
        .await
        .map_err(|e| MirrorError::Invalid(e.to_string()))?;
    state.mirror.jobs_wake.notify_one();
    Ok(api(&job))
}

pub async fn delete(state: &AppState, id: &str) -> Result<SyncJob, MirrorError> {
    let removed = state
        .meta
        .delete_job(id.to_string())
        .await
        .map_err(|e| MirrorError::Invalid(e.to_string()))?;
    state.mirror.jobs_wake.notify_one();
    removed.map(|j| api(&j)).ok_or_else(|| {
        MirrorError::Invalid(format!(
            "there is no mirror job {id} ('ecrl mirror jobs' lists them)"
        ))
    })
}

/// Runs a job now (unless it is running), recording its result and its next run.
pub async fn run(
    state: &Arc<AppState>,
    id: &str,
    events: Option<mpsc::Sender<SyncEvent>>,
    cancel: CancellationToken,
) -> Result<SyncResult, MirrorError> {
    let job = state
        .meta
        .read()
        .mirror
        .jobs
        .get(id)
        .cloned()
        .ok_or_else(|| {
            MirrorError::Invalid(format!(
                "there is no mirror job {id} ('ecrl mirror jobs' lists them)"
            ))
        })?;
    {
        let mut running = state
            .mirror
            .running_jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !running.insert(id.to_string()) {
            return Err(MirrorError::Invalid(format!(
                "mirror job {id} is running now"
            )));
        }
    }
    let started = now_millis();
    let every = job.every_seconds as i64 * 1000;
    let _ = state
        .meta
        .job_ran(
            id.to_string(),
            started,
            RUNNING.into(),
            None,
            started + every,
        )
        .await;
    let outcome = sync::run(state, &job.spec, false, events, cancel).await;
    let (result, summary) = match &outcome {
        Ok(r) if r.failed == 0 => (SUCCEEDED, sync::describe(r)),
        Ok(r) => (FAILED, sync::describe(r)),
        Err(e) => (FAILED, e.to_string()),
    };
    if let Err(e) = state
        .meta
        .job_ran(
            id.to_string(),
            started,
            result.into(),
            Some(summary.clone()),
            started + every,
        )
        .await
    {
        tracing::warn!(job = id, "cannot record the job's run: {e}");
    }
    tracing::info!(job = id, result, "mirror job ran: {summary}");
    state
        .mirror
        .running_jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
    outcome
}

pub fn start(state: &Arc<AppState>) {
    let state = state.clone();
    tokio::spawn(async move { scheduler(state).await });
}

/// Runs each job when it is due.
async fn scheduler(state: Arc<AppState>) {
    // Instances sharing one database: one runs the jobs, the others take over if it stops.
    let Some(_claimed) = crate::app::claim(&state, crate::metadata::ExclusiveJob::Sync).await
    else {
        return;
    };
    loop {
        let now = now_millis();
        let (due, next): (Vec<String>, Option<i64>) = {
            let index = state.meta.read();
            let running = state
                .mirror
                .running_jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let waiting: Vec<&Job> = index
                .mirror
                .jobs
                .values()
                .filter(|j| !running.contains(&j.id))
                .collect();
            (
                waiting
                    .iter()
                    .filter(|j| j.next_run_at <= now)
                    .map(|j| j.id.clone())
                    .collect(),
                waiting.iter().map(|j| j.next_run_at).min(),
            )
        };
        for id in due {
            let state = state.clone();
            tokio::spawn(async move {
                let cancel = state.shutdown.child_token();
                if let Err(e) = run(&state, &id, None, cancel).await {
                    tracing::debug!(job = %id, "mirror job not run: {e}");
                }
                state.mirror.jobs_wake.notify_one();
            });
        }
        let wait = match next {
            // Due ones were just started: look again when they end (or in a minute).
            Some(at) if at > now => Duration::from_millis((at - now) as u64),
            _ => Duration::from_secs(60),
        };
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = state.mirror.jobs_wake.notified() => {}
            _ = tokio::time::sleep(wait.min(if state.meta.shared() {
                crate::app::SHARED_POLL
            } else {
                Duration::from_secs(3600)
            })) => {}
        }
    }
}
