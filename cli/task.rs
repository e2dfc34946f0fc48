//! `ecrl task register|describe|list|families|deregister|delete`: ECS task definitions.

use crate::app::{Context, UsageError};
use crate::output::{self, Table};
use crate::task_run;
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use ecrl::api::tasks::*;
use ecrl::taskdef::{self, TaskDefinitionInput};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Register a task definition (ECS JSON or YAML) as its family's next revision
    #[command(long_about = REGISTER_LONG_ABOUT)]
    Register(RegisterArgs),
    /// Show a task definition: FAMILY (its latest ACTIVE revision), FAMILY:REVISION or ARN
    #[command(long_about = DESCRIBE_LONG_ABOUT)]
    Describe(DescribeArgs),
    /// List task definition ARNs (ACTIVE revisions unless --status says otherwise)
    #[command(long_about = LIST_LONG_ABOUT)]
    List(ListArgs),
    /// List task definition families
    #[command(long_about = FAMILIES_LONG_ABOUT)]
    Families(FamiliesArgs),
    /// Deregister a revision: it becomes INACTIVE and can no longer be run
    #[command(long_about = DEREGISTER_LONG_ABOUT)]
    Deregister(DeregisterArgs),
    /// Delete INACTIVE revisions
    #[command(long_about = DELETE_LONG_ABOUT)]
    Delete(DeleteArgs),
    /// Run tasks of a definition on the local container runtime (ECS RunTask)
    #[command(long_about = task_run::RUN_LONG_ABOUT)]
    Run(task_run::RunArgs),
    /// List tasks, newest first
    Ps(task_run::PsArgs),
    /// Show a task: its state, stop code and reason, containers, exit codes, ports
    Inspect {
        /// Task id, unique id prefix, or task ARN
        task: String,
    },
    /// Print what a task's containers wrote (kept after the task stopped)
    Logs(task_run::LogsArgs),
    /// Stop a task: SIGTERM to its containers in reverse dependency order, SIGKILL after
    /// each one's stopTimeout; returns once it is STOPPED
    Stop(task_run::StopArgs),
    /// Wait until a task stops (or runs) and exit with its exit code
    Wait(task_run::WaitArgs),
}

const REGISTER_LONG_ABOUT: &str = "\
Register a task definition as its family's next revision.

The file holds what 'aws ecs register-task-definition --cli-input-json' takes: ECS's
RegisterTaskDefinition input with AWS's camelCase field names, as JSON or the same in YAML.
What 'aws ecs describe-task-definition' prints is taken too (as the ECS deploy action
takes it): the {\"taskDefinition\": ...} wrapper, tags beside it, and the fields ECS sets
itself (taskDefinitionArn, revision, status, registeredAt, ...), which are left out with a
warning; so is what 'ecrl task describe --output json|yaml' prints.

Unknown fields are refused, all of them at once, each with its path. The daemon checks the
definition against ECS's rules and reports every broken one with the path of its field
(e.g. containerDefinitions[1].portMappings[0].containerPort); nothing is stored then.
Lists and objects may nest at most 127 deep.

Revisions start at 1 and only grow, also after revisions are deregistered or deleted.
Fields that mean nothing on a local runtime (IAM roles, placement, log drivers, secrets,
...) are stored and listed in a warning, but not acted on.

Relative paths in environmentFiles[].value are made absolute against the file's directory
(the current directory for stdin), since the daemon reads them when the task runs.

Prints FAMILY:REVISION; --output json prints ECS's response.

Examples:
  ecrl task register -f web.json
  ecrl task register -f web.yaml --output json | jq -r .taskDefinition.taskDefinitionArn
  generate-definition | ecrl task register -f -";

const DESCRIBE_LONG_ABOUT: &str = "\
Show a task definition: its ARN, status, network mode, containers (image, essential, port
mappings, dependsOn) and the fields ecrl ignores. --output json and yaml print ECS's
DescribeTaskDefinition response (taskDefinition, tags).

Name it as FAMILY (its latest ACTIVE revision), FAMILY:REVISION (any status) or by its ARN.

Examples:
  ecrl task describe web
  ecrl task describe web:3 --output json
  ecrl task describe arn:aws:ecs:local:123456789012:task-definition/web:3";

const LIST_LONG_ABOUT: &str = "\
List task definition revisions, as ECS's ListTaskDefinitions does: by family name, then
revision ascending (the newest last). Only ACTIVE revisions are listed unless --status
INACTIVE asks for the deregistered ones. --family-prefix takes a full family name, as in
'aws ecs list-task-definitions'.

Examples:
  ecrl task list
  ecrl task list --family-prefix web --status INACTIVE";

const FAMILIES_LONG_ABOUT: &str = "\
List task definition families, as ECS's ListTaskDefinitionFamilies does: every family ever
registered, or with --status ACTIVE those that have an ACTIVE revision, with --status
INACTIVE those that have none left. --family-prefix keeps the families whose name starts
with it.

Examples:
  ecrl task families
  ecrl task families --family-prefix web --status ACTIVE";

const DEREGISTER_LONG_ABOUT: &str = "\
Deregister a task definition revision: it becomes INACTIVE, can no longer be run, and the
bare family name no longer means it. It can still be described, and deleted. Deregistering
an INACTIVE revision again changes nothing.

Example:
  ecrl task deregister web:2";

const DELETE_LONG_ABOUT: &str = "\
Delete task definition revisions, as ECS's DeleteTaskDefinitions does: only INACTIVE ones
(deregister them first). Each is deleted on its own; those that cannot be are reported on
stderr and the command exits 1. A deleted revision's number is never issued again.

Example:
  ecrl task deregister web:2 && ecrl task delete web:2 web:1";

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// The task definition: a JSON or YAML file, or - for stdin
    #[arg(short = 'f', long = "file", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub file: PathBuf,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// FAMILY, FAMILY:REVISION or the task definition ARN
    #[arg(value_name = "TASK_DEFINITION")]
    pub task_definition: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Status {
    Active,
    Inactive,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Active => STATUS_ACTIVE,
            Status::Inactive => STATUS_INACTIVE,
        }
    }
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this family's revisions (the full family name, as ECS takes it)
    #[arg(long, value_name = "FAMILY")]
    pub family_prefix: Option<String>,
    /// Revisions with this status [default: ACTIVE]
    #[arg(long, value_enum, ignore_case = true)]
    pub status: Option<Status>,
}

#[derive(Args, Debug)]
pub struct FamiliesArgs {
    /// Only families whose name starts with this
    #[arg(long, value_name = "PREFIX")]
    pub family_prefix: Option<String>,
    /// ACTIVE: families with an ACTIVE revision; INACTIVE: families with none [default: all]
    #[arg(long, value_enum, ignore_case = true)]
    pub status: Option<Status>,
}

#[derive(Args, Debug)]
pub struct DeregisterArgs {
    /// FAMILY:REVISION or the task definition ARN
    #[arg(value_name = "TASK_DEFINITION")]
    pub task_definition: String,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// FAMILY:REVISION or ARNs of INACTIVE revisions
    #[arg(value_name = "TASK_DEFINITION", required = true)]
    pub task_definitions: Vec<String>,
}

pub async fn run(ctx: &Context, command: TaskCommand) -> anyhow::Result<ExitCode> {
    match command {
        TaskCommand::Run(args) => task_run::run(ctx, &ctx.client()?, args).await,
        TaskCommand::Ps(args) => task_run::ps(ctx, &ctx.client()?, args).await,
        TaskCommand::Inspect { task } => task_run::inspect(ctx, &ctx.client()?, task).await,
        TaskCommand::Logs(args) => task_run::logs(ctx, &ctx.client()?, args).await,
        TaskCommand::Stop(args) => task_run::stop(ctx, &ctx.client()?, args).await,
        TaskCommand::Wait(args) => task_run::wait(ctx, &ctx.client()?, args).await,
        TaskCommand::Register(args) => register(ctx, args).await,
        TaskCommand::Describe(args) => {
            let request = TaskDefinitionRef {
                task_definition: crate::refs::task_definition(&args.task_definition)?,
            };
            let response = ctx
                .client()?
                .call::<DescribeTaskDefinition>(&request)
                .await?;
            output::print(ctx.output, &response)?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::List(args) => {
            let request = ListTaskDefinitionsRequest {
                family_prefix: args.family_prefix,
                status: args.status.map(|s| s.as_str().to_string()),
            };
            let response = ctx.client()?.call::<ListTaskDefinitions>(&request).await?;
            output::print(ctx.output, &response)?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Families(args) => {
            let request = ListTaskDefinitionsRequest {
                family_prefix: args.family_prefix,
                status: args.status.map(|s| s.as_str().to_string()),
            };
            let response = ctx
                .client()?
                .call::<ListTaskDefinitionFamilies>(&request)
                .await?;
            output::print(ctx.output, &response)?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Deregister(args) => {
            let request = TaskDefinitionRef {
                task_definition: crate::refs::task_definition(&args.task_definition)?,
            };
            let response = ctx
                .client()?
                .call::<DeregisterTaskDefinition>(&request)
                .await?;
            output::print(ctx.output, &Deregistered(response))?;
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Delete(args) => {
            let request = DeleteTaskDefinitionsRequest {
                task_definitions: args.task_definitions,
            };
            let response = ctx
                .client()?
                .call::<DeleteTaskDefinitions>(&request)
                .await?;
            for failure in &response.failures {
                eprintln!("error: {}: {}", short_name(&failure.arn), failure.reason);
            }
            output::print(ctx.output, &response)?;
            if response.failures.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                Ok(ExitCode::from(crate::app::exit::FAILED))
            }
        }
    }
}

async fn register(ctx: &Context, args: RegisterArgs) -> anyhow::Result<ExitCode> {
    let stdin = args.file == Path::new("-");
    let (text, source, base) = if stdin {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .context("reading the task definition from stdin")?;
        let cwd = std::env::current_dir().context("finding the current directory")?;
        (text, "stdin".to_string(), cwd)
    } else {
        let file = &args.file;
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading task definition {}", file.display()))?;
        let absolute = std::path::absolute(file)
            .with_context(|| format!("finding the directory of {}", file.display()))?;
        let base = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
        (text, file.display().to_string(), base)
    };
    let read = taskdef::read(&text).map_err(|e| match e.0.len() {
        1 => anyhow::anyhow!("cannot read the task definition from {source}: {e}"),
        n => anyhow::anyhow!("cannot read the task definition from {source} ({n} errors):\n{e}"),
    })?;
    if !read.dropped.is_empty() {
        ctx.note(format!(
            "warning: {source}: left out the read-only fields ECS sets on a registered \
             revision (as describe-task-definition prints them): {}",
            read.dropped.join(", ")
        ));
    }
    let mut definition = read.definition;
    absolutize_environment_files(&mut definition, &base)?;

    let response = ctx
        .client()?
        .call::<RegisterTaskDefinition>(&definition)
        .await?;
    if !response.ignored_fields.is_empty() {
        ctx.note(format!(
            "warning: {} sets fields that ecrl stores but does not act on locally: {}",
            response.task_definition.family_revision(),
            response.ignored_fields.join(", ")
        ));
    }
    output::print(ctx.output, &Registered(response))?;
    Ok(ExitCode::SUCCESS)
}

/// Makes each relative `environmentFiles[].value` absolute against `base`: the daemon reads
/// the files when the task runs, from a working directory of its own. ARNs (S3 objects, on
/// AWS) are left for the runner to refuse with its own message.
fn absolutize_environment_files(def: &mut TaskDefinitionInput, base: &Path) -> anyhow::Result<()> {
    for container in &mut def.container_definitions {
        for file in container.environment_files.iter_mut().flatten() {
            let path = Path::new(&file.value);
            if file.value.is_empty() || file.value.starts_with("arn:") || path.is_absolute() {
                continue;
            }
            // Collecting the components drops the `.` ones: ./app.env reads as app.env.
            let joined: PathBuf = base.join(path).components().collect();
            file.value = joined
                .to_str()
                .ok_or_else(|| {
                    UsageError(format!(
                        "environment file {} of container {}: the path {} is not UTF-8",
                        file.value,
                        container.name,
                        joined.display()
                    ))
                })?
                .to_string();
        }
    }
    Ok(())
}

/// Register's answer: `family:revision` for people, ECS's response for scripts.
#[derive(Serialize)]
#[serde(transparent)]
struct Registered(TaskDefinitionResponse);

impl Table for Registered {
    fn table(&self) -> String {
        format!("{}\n", self.0.task_definition.family_revision())
    }
}

/// Deregister's answer: the revision and its new status for people.
#[derive(Serialize)]
#[serde(transparent)]
struct Deregistered(TaskDefinitionResponse);

impl Table for Deregistered {
    fn table(&self) -> String {
        let td = &self.0.task_definition;
        output::columns(
            &["TASK DEFINITION", "STATUS", "DEREGISTERED"],
            &[vec![
                td.family_revision(),
                td.status.clone(),
                td.deregistered_at.clone().unwrap_or_default(),
            ]],
        )
    }
}

fn or_dash(items: Vec<String>) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(", ")
    }
}

fn ports(container: &taskdef::ContainerDefinition) -> String {
    or_dash(
        container
            .port_mappings
            .iter()
            .flatten()
            .map(|p| {
                let port = p
                    .container_port
                    .map(|cp| cp.to_string())
                    .or_else(|| p.container_port_range.clone())
                    .unwrap_or_default();
                let protocol = p.protocol.as_deref().unwrap_or("tcp");
                match p.host_port {
                    Some(host) if host != 0 => format!("{host}->{port}/{protocol}"),
                    _ => format!("{port}/{protocol}"),
                }
            })
            .collect(),
    )
}

impl Table for TaskDefinitionResponse {
    fn table(&self) -> String {
        let td = &self.task_definition;
        let def = &td.definition;
        let mut rows = vec![
            ("task definition", td.family_revision()),
            ("arn", td.task_definition_arn.clone()),
            ("status", td.status.clone()),
            ("registered", td.registered_at.clone()),
        ];
        if let Some(at) = &td.deregistered_at {
            rows.push(("deregistered", at.clone()));
        }
        rows.push((
            "network mode",
            def.network_mode.clone().unwrap_or_else(|| "bridge".into()),
        ));
        if let Some(cpu) = &def.cpu {
            rows.push(("cpu", cpu.clone()));
        }
        if let Some(memory) = &def.memory {
            rows.push(("memory", memory.clone()));
        }
        if let Some(volumes) = def.volumes.as_ref().filter(|v| !v.is_empty()) {
            rows.push((
                "volumes",
                volumes
                    .iter()
                    .map(|v| v.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(ToString::to_string).collect();
            rows.push(("tags", tags.join(", ")));
        }
        if !self.ignored_fields.is_empty() {
            rows.push(("ignored fields", self.ignored_fields.join(", ")));
        }
        let containers: Vec<Vec<String>> = def
            .container_definitions
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.image.clone(),
                    if c.is_essential() { "yes" } else { "no" }.into(),
                    ports(c),
                    or_dash(
                        c.depends_on
                            .iter()
                            .flatten()
                            .map(|d| format!("{}:{}", d.container_name, d.condition))
                            .collect(),
                    ),
                ]
            })
            .collect();
        output::key_values(&rows)
            + "\n"
            + &output::columns(
                &["CONTAINER", "IMAGE", "ESSENTIAL", "PORTS", "DEPENDS ON"],
                &containers,
            )
    }
}

/// `family:revision`, the last part of a task definition ARN.
fn short_name(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_string()
}

impl Table for ListTaskDefinitionsResponse {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .task_definition_arns
            .iter()
            .map(|arn| vec![short_name(arn), arn.clone()])
            .collect();
        output::columns(&["TASK DEFINITION", "ARN"], &rows)
    }
}

impl Table for ListTaskDefinitionFamiliesResponse {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self.families.iter().map(|f| vec![f.clone()]).collect();
        output::columns(&["FAMILY"], &rows)
    }
}

impl Table for DeleteTaskDefinitionsResponse {
    fn table(&self) -> String {
        if self.task_definitions.is_empty() {
            return String::new();
        }
        let rows: Vec<Vec<String>> = self
            .task_definitions
            .iter()
            .map(|td| vec![td.family_revision(), td.status.clone()])
            .collect();
        output::columns(&["TASK DEFINITION", "STATUS"], &rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_environment_files_become_absolute_against_the_base() {
        let mut def = taskdef::parse(
            r#"{"family":"web","containerDefinitions":[{"name":"a","image":"b","memory":8,
                "environmentFiles":[
                    {"value":"./app.env","type":"s3"},
                    {"value":"conf/../db.env","type":"s3"},
                    {"value":"/etc/abs.env","type":"s3"},
                    {"value":"arn:aws:s3:::bucket/key.env","type":"s3"}]}]}"#,
        )
        .unwrap();
        absolutize_environment_files(&mut def, Path::new("/srv/defs")).unwrap();
        let values: Vec<&str> = def.container_definitions[0]
            .environment_files
            .iter()
            .flatten()
            .map(|f| f.value.as_str())
            .collect();
        assert_eq!(
            values,
            [
                "/srv/defs/app.env",
                "/srv/defs/conf/../db.env",
                "/etc/abs.env",
                "arn:aws:s3:::bucket/key.env"
            ]
        );
    }

    #[test]
    fn describe_reads_as_a_summary() {
        let definition = taskdef::parse(
            r#"{"family":"web","taskRoleArn":"arn:aws:iam::1:role/r","containerDefinitions":[
                {"name":"app","image":"team/web:1","memory":64,
                 "portMappings":[{"containerPort":80,"hostPort":8080},{"containerPort":53,"protocol":"udp"}],
                 "dependsOn":[{"containerName":"db","condition":"HEALTHY"}]},
                {"name":"db","image":"postgres","essential":false,"memory":64}]}"#,
        )
        .unwrap();
        let response = TaskDefinitionResponse {
            task_definition: TaskDefinition {
                task_definition_arn: "arn:aws:ecs:local:1:task-definition/web:3".into(),
                revision: 3,
                status: STATUS_ACTIVE.into(),
                registered_at: "2026-01-01T00:00:00Z".into(),
                deregistered_at: None,
                definition,
            },
            tags: vec![],
            ignored_fields: vec!["taskRoleArn".into()],
        };
        let table = response.table();
        assert!(table.contains("task definition  web:3\n"), "{table}");
        assert!(table.contains("network mode     bridge\n"), "{table}");
        assert!(table.contains("ignored fields   taskRoleArn\n"), "{table}");
        assert!(
            table.contains("app        team/web:1  yes        8080->80/tcp, 53/udp  db:HEALTHY\n"),
            "{table}"
        );
        assert!(
            table.contains("db         postgres    no         -"),
            "{table}"
        );
    }
}
