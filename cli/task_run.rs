//! `ecrl task run|ps|inspect|logs|stop|wait`: tasks on the local container runtime.

use crate::app::{Context, UsageError};
use crate::output::{self, columns, key_values, OutputFormat, Table};
use clap::{Args, ValueEnum};
use ecrl::api::tasks::*;
use ecrl::client::{empty_body, Client, JsonLines};
use ecrl::taskdef::KeyValuePair;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

pub const RUN_LONG_ABOUT: &str = "\
Run tasks of a registered definition on the local container runtime (the Docker engine at
DOCKER_HOST or /var/run/docker.sock; podman's socket works the same), as ECS RunTask does.

Images that name ecrl's registry (localhost:PORT/repo:tag, or repo:tag that ecrl holds) are
resolved to their digest now and pulled by the engine from ecrld. Containers start in
dependsOn order; the task stops when an essential container exits.

Without --wait, prints the new tasks (PROVISIONING) and returns. With --wait, tells every
state change on stderr until the tasks stop, then exits with the exit code of the essential
container that stopped them (0 when every essential container exited 0, 1 when a task
failed to start); Ctrl-C stops the tasks and exits 130, as SIGTERM (exit 143) and SIGHUP
(129) do.

Examples:
  ecrl task run web
  ecrl task run web:3 --count 3 --started-by ci
  ecrl task run migrate --wait --env app.DB_URL=postgres://db/app
  ecrl task run web --overrides overrides.json --output json | jq -r '.tasks[].taskArn'";

#[derive(Args, Debug)]
pub struct RunArgs {
    /// FAMILY (its latest ACTIVE revision), FAMILY:REVISION or a task definition ARN
    pub task_definition: String,
    /// How many tasks to start (1-10), each independent
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Set an environment variable in one container: CONTAINER.NAME=VALUE (repeatable)
    #[arg(long = "env", short = 'e', value_name = "CONTAINER.NAME=VALUE")]
    pub env: Vec<String>,
    /// RunTask overrides, JSON or YAML as ECS takes them ({"containerOverrides": [...]})
    #[arg(long, value_name = "FILE")]
    pub overrides: Option<PathBuf>,
    /// Who started the task (ECS startedBy), for filtering in 'ecrl task ps'
    #[arg(long)]
    pub started_by: Option<String>,
    /// The cluster to run in (name or ARN; 'ecrl cluster create' makes one) [default: default]
    #[arg(long)]
    pub cluster: Option<String>,
    /// Follow the tasks until they stop and exit with the exit code of the essential
    /// container that stopped them (0 when every essential container exited 0)
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Only tasks of this cluster (name or ARN) [default: every cluster's]
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only tasks of this family
    #[arg(long)]
    pub family: Option<String>,
    /// RUNNING: every task not yet stopped; STOPPED: the stopped ones
    #[arg(long, value_enum, ignore_case = true)]
    pub status: Option<PsStatus>,
    /// Only tasks started with this --started-by
    #[arg(long)]
    pub started_by: Option<String>,
    /// Only the tasks of this service
    #[arg(long)]
    pub service: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum PsStatus {
    Running,
    Stopped,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Task id, unique id prefix, or task ARN
    pub task: String,
    /// Only this container's output
    #[arg(long, short = 'c')]
    pub container: Option<String>,
    /// Keep printing new output until the task stops
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Task id, unique id prefix, or task ARN
    pub task: String,
    /// Why (recorded as the task's stoppedReason)
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Task id, unique id prefix, or task ARN
    pub task: String,
    /// The state to wait for: STOPPED exits with the task's exit code; RUNNING exits 0 once
    /// it runs, 1 if it stopped instead
    #[arg(long, value_enum, ignore_case = true, default_value = "STOPPED")]
    pub until: PsStatus,
}

/// `ecrl task run`.
pub async fn run(ctx: &Context, client: &Client, args: RunArgs) -> anyhow::Result<ExitCode> {
    crate::refs::task_definition(&args.task_definition)?;
    let mut overrides = match &args.overrides {
        Some(path) => read_overrides(path)?,
        None => TaskOverride::default(),
    };
    for e in &args.env {
        let (target, value) = e
            .split_once('=')
            .ok_or_else(|| UsageError(format!("--env {e:?}: expected CONTAINER.NAME=VALUE")))?;
        let (container, name) = target
            .split_once('.')
            .filter(|(c, n)| !c.is_empty() && !n.is_empty())
            .ok_or_else(|| UsageError(format!("--env {e:?}: expected CONTAINER.NAME=VALUE")))?;
        let over = match overrides
            .container_overrides
            .iter_mut()
            .position(|o| o.name == container)
        {
            Some(i) => &mut overrides.container_overrides[i],
            None => {
                overrides.container_overrides.push(ContainerOverride {
                    name: container.to_string(),
                    ..Default::default()
                });
                overrides
                    .container_overrides
                    .last_mut()
                    .expect("just pushed")
            }
        };
        over.environment
            .get_or_insert_with(Vec::new)
            .push(KeyValuePair {
                name: Some(name.to_string()),
                value: Some(value.to_string()),
            });
    }
    let response = client
        .call::<RunTask>(&RunTaskRequest {
            task_definition: args.task_definition.clone(),
            count: Some(args.count),
            overrides: Some(overrides).filter(|o| *o != TaskOverride::default()),
            started_by: args.started_by.clone(),
            tags: Vec::new(),
            cluster: args.cluster.clone(),
            group: None,
        })
        .await?;
    if !args.wait {
        print_tasks(ctx, TaskList(response.tasks.clone(), false))?;
        return Ok(ExitCode::SUCCESS);
    }
    let ids: Vec<String> = response.tasks.iter().map(|t| t.id().to_string()).collect();
    let label = response.tasks.len() > 1;
    let watches = ids
        .iter()
        .map(|id| follow_task(ctx, client, id.clone(), false, label));
    let all = futures_util::future::join_all(watches);
    let finals = tokio::select! {
        finals = all => finals,
        _ = crate::signals::interrupted() => {
            ctx.note("interrupted: stopping the task(s)");
            for id in &ids {
                let _ = client.call::<StopTask>(&StopTaskRequest {
                    task: id.clone(),
                    reason: Some(format!(
                        "Interrupted ({} to ecrl task run --wait)",
                        crate::signals::name()
                    )),
                }).await;
            }
            return Ok(ExitCode::from(crate::signals::exit_code()));
        }
    };
    let tasks: Vec<Task> = finals.into_iter().collect::<anyhow::Result<_>>()?;
    let code = tasks
        .iter()
        .map(Task::exit_code)
        .find(|c| *c != 0)
        .unwrap_or(0);
    print_tasks(ctx, TaskList(tasks, true))?;
    Ok(ExitCode::from(code as u8))
}

/// Tasks in the chosen format; with `--quiet` in table mode only their ids, one a line
/// (`id=$(ecrl task run web -q)`).
fn print_tasks(ctx: &Context, tasks: TaskList) -> anyhow::Result<()> {
    if ctx.quiet && ctx.output == OutputFormat::Table {
        for t in &tasks.0 {
            println!("{}", t.id());
        }
        return Ok(());
    }
    output::print(ctx.output, &tasks)
}

fn read_overrides(path: &PathBuf) -> anyhow::Result<TaskOverride> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
    };
    let parsed: Result<TaskOverride, String> = serde_json::from_str(&text)
        .map_err(|e| e.to_string())
        .or_else(|json_err| {
            if text.trim_start().starts_with('{') {
                Err(json_err)
            } else {
                serde_yaml::from_str(&text).map_err(|e| e.to_string())
            }
        });
    parsed.map_err(|e| {
        anyhow::anyhow!(
            "{}: not valid overrides: {}",
            path.display(),
            ecrl::taskdef::plain_serde_message(&e)
        )
    })
}

/// Follows a task until it stops (or runs, with `until_running`), telling what changes on
/// stderr; answers the task as it ended.
async fn follow_task(
    ctx: &Context,
    client: &Client,
    id: String,
    until_running: bool,
    label: bool,
) -> anyhow::Result<Task> {
    let request = WatchTaskRequest {
        task: id.clone(),
        until: Some(if until_running { "RUNNING" } else { "STOPPED" }.into()),
    };
    let response = client.stream::<WatchTask>(&request, empty_body()).await?;
    let mut events = JsonLines::new(response.into_body());
    let mut last: Option<Task> = None;
    while let Some(event) = events.next::<TaskEvent>().await {
        match event? {
            TaskEvent::Task { task } => {
                if !ctx.quiet {
                    for line in changes(last.as_ref(), &task) {
                        if label {
                            eprintln!("[{}] {line}", short(task.id()));
                        } else {
                            eprintln!("{line}");
                        }
                    }
                }
                last = Some(*task);
            }
            TaskEvent::Error(e) => return Err(e.into()),
        }
    }
    last.ok_or_else(|| anyhow::anyhow!("the daemon ended the watch of task {id} without a word"))
}

/// What changed between two views of a task, as lines for people.
fn changes(before: Option<&Task>, now: &Task) -> Vec<String> {
    let mut out = Vec::new();
    if before.map(|b| &b.last_status) != Some(&now.last_status) {
        let mut line = format!("task {} {}", short(now.id()), now.last_status);
        if now.is_stopped() {
            if let Some(reason) = &now.stopped_reason {
                line.push_str(&format!(": {reason}"));
            }
        }
        out.push(line);
    }
    for c in &now.containers {
        let old = before.and_then(|b| b.containers.iter().find(|o| o.name == c.name));
        if old.map(|o| &o.last_status) != Some(&c.last_status) && c.last_status != "PENDING" {
            let mut line = format!("  {} {}", c.name, c.last_status);
            for binding in c.network_bindings.iter().filter(|b| b.bind_ip == "0.0.0.0") {
                line.push_str(&format!(
                    " {}:{}->{}/{}",
                    binding.bind_ip, binding.host_port, binding.container_port, binding.protocol
                ));
            }
            if let Some(code) = c.exit_code {
                line.push_str(&format!(" (exit code {code})"));
            }
            if let Some(reason) = &c.reason {
                line.push_str(&format!(": {reason}"));
            }
            out.push(line);
        }
        if old.map(|o| &o.health_status) != Some(&c.health_status) && c.health_status != "UNKNOWN" {
            out.push(format!("  {} {}", c.name, c.health_status));
        }
    }
    out
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Tasks as `ps` shows them; with `detail`, their end as well.
struct TaskList(Vec<Task>, bool);

impl serde::Serialize for TaskList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TasksResponse {
            tasks: self.0.clone(),
            failures: Vec::new(),
        }
        .serialize(s)
    }
}

impl Table for TaskList {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .0
            .iter()
            .map(|t| {
                let containers = t
                    .containers
                    .iter()
                    .map(|c| match c.exit_code {
                        Some(code) => format!("{}({code})", c.name),
                        None => format!("{}:{}", c.name, c.last_status.to_lowercase()),
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                let ports = t
                    .containers
                    .iter()
                    .flat_map(|c| c.network_bindings.iter())
                    .filter(|b| b.bind_ip == "0.0.0.0")
                    .map(|b| format!("{}->{}/{}", b.host_port, b.container_port, b.protocol))
                    .collect::<Vec<_>>()
                    .join(",");
                let mut row = vec![
                    t.id().to_string(),
                    t.family_revision().to_string(),
                    t.last_status.clone(),
                    t.health_status.clone(),
                    containers,
                    ports,
                ];
                if self.1 {
                    row.push(t.stopped_reason.clone().unwrap_or_default());
                } else {
                    row.push(t.created_at.clone());
                }
                row
            })
            .collect();
        let last = if self.1 { "STOPPED REASON" } else { "CREATED" };
        columns(
            &[
                "TASK",
                "DEFINITION",
                "STATUS",
                "HEALTH",
                "CONTAINERS",
                "PORTS",
                last,
            ],
            &rows,
        )
    }
}

/// `ecrl task ps`.
pub async fn ps(ctx: &Context, client: &Client, args: PsArgs) -> anyhow::Result<ExitCode> {
    let response = client
        .call::<ListTasks>(&ListTasksRequest {
            cluster: args.cluster,
            family: args.family,
            desired_status: args.status.map(|s| {
                match s {
                    PsStatus::Running => "RUNNING",
                    PsStatus::Stopped => "STOPPED",
                }
                .to_string()
            }),
            started_by: args.started_by,
            service_name: args.service,
        })
        .await?;
    print_tasks(ctx, TaskList(response.tasks, false))?;
    Ok(ExitCode::SUCCESS)
}

struct Inspected(TasksResponse);

impl serde::Serialize for Inspected {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Table for Inspected {
    fn table(&self) -> String {
        let mut out = String::new();
        for t in &self.0.tasks {
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            out.push_str(&key_values(&[
                ("task", t.id().to_string()),
                ("arn", t.task_arn.clone()),
                ("definition", t.family_revision().to_string()),
                ("cluster", t.cluster_name().to_string()),
                (
                    "status",
                    format!("{} (desired {})", t.last_status, t.desired_status),
                ),
                ("health", t.health_status.clone()),
                ("network mode", t.network_mode.clone()),
                ("started by", opt(&t.started_by)),
                ("created", t.created_at.clone()),
                ("started", opt(&t.started_at)),
                ("stopped", opt(&t.stopped_at)),
                ("stop code", opt(&t.stop_code)),
                ("stopped reason", opt(&t.stopped_reason)),
            ]));
            out.push('\n');
            let rows: Vec<Vec<String>> = t
                .containers
                .iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.last_status.clone(),
                        c.health_status.clone(),
                        c.exit_code.map_or("-".into(), |e| e.to_string()),
                        if c.essential { "yes" } else { "no" }.into(),
                        c.image_digest.as_deref().map_or(c.image.clone(), |d| {
                            format!("{} ({})", c.image, &d[..d.len().min(19)])
                        }),
                        c.network_bindings
                            .iter()
                            .map(|b| {
                                format!(
                                    "{}:{}->{}/{}",
                                    b.bind_ip, b.host_port, b.container_port, b.protocol
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                        c.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            out.push_str(&columns(
                &[
                    "CONTAINER",
                    "STATUS",
                    "HEALTH",
                    "EXIT",
                    "ESSENTIAL",
                    "IMAGE",
                    "PORTS",
                    "REASON",
                ],
                &rows,
            ));
        }
        out
    }
}

/// `ecrl task inspect`.
pub async fn inspect(ctx: &Context, client: &Client, task: String) -> anyhow::Result<ExitCode> {
    let response = client.call::<DescribeTask>(&TaskRef { task }).await?;
    output::print(ctx.output, &Inspected(response))?;
    Ok(ExitCode::SUCCESS)
}

/// `ecrl task logs`.
pub async fn logs(ctx: &Context, client: &Client, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let prefix = args.container.is_none();
    let request = TaskLogsRequest {
        task: args.task.clone(),
        container: args.container.clone(),
        follow: args.follow,
    };
    let response = client.stream::<TaskLogs>(&request, empty_body()).await?;
    let mut events = JsonLines::new(response.into_body());
    let mut out = std::io::stdout().lock();
    // Lines of several containers carry the container's name, as docker compose shows them.
    let mut names: Vec<String> = Vec::new();
    while let Some(event) = events.next::<LogEvent>().await {
        match event? {
            LogEvent::Output { container, data } => {
                if !names.contains(&container) {
                    names.push(container.clone());
                }
                if prefix && ctx.output == OutputFormat::Table {
                    let width = names.iter().map(String::len).max().unwrap_or(0);
                    for line in data.split_inclusive('\n') {
                        write!(out, "{container:<width$} | {line}")?;
                    }
                    if !data.ends_with('\n') {
                        writeln!(out)?;
                    }
                } else if ctx.output == OutputFormat::Table {
                    out.write_all(data.as_bytes())?;
                } else {
                    let line = serde_json::to_string(&LogEvent::Output { container, data })?;
                    writeln!(out, "{line}")?;
                }
                out.flush()?;
            }
            LogEvent::Error(e) => return Err(e.into()),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ecrl task stop`.
pub async fn stop(ctx: &Context, client: &Client, args: StopArgs) -> anyhow::Result<ExitCode> {
    let response = client
        .call::<StopTask>(&StopTaskRequest {
            task: args.task,
            reason: args.reason,
        })
        .await?;
    output::print(ctx.output, &StopResult(response))?;
    Ok(ExitCode::SUCCESS)
}

struct StopResult(StopTaskResponse);

impl serde::Serialize for StopResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Table for StopResult {
    fn table(&self) -> String {
        let t = &self.0.task;
        format!(
            "{} {}: {}\n",
            t.id(),
            t.last_status,
            t.stopped_reason.as_deref().unwrap_or("")
        )
    }
}

/// `ecrl task wait`.
pub async fn wait(ctx: &Context, client: &Client, args: WaitArgs) -> anyhow::Result<ExitCode> {
    let until_running = matches!(args.until, PsStatus::Running);
    let task = follow_task(ctx, client, args.task, until_running, false).await?;
    let code = if until_running {
        u8::from(task.is_stopped())
    } else {
        task.exit_code() as u8
    };
    if until_running && task.is_stopped() {
        // Not a quiet matter: the exit code alone does not say the wait was in vain.
        eprintln!(
            "error: task {} stopped before reaching RUNNING{}",
            task.id(),
            task.stopped_reason
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    print_tasks(ctx, TaskList(vec![task], !until_running))?;
    Ok(ExitCode::from(code))
}
