//! `ecrl logs GROUP [STREAM] [-f]`: the output of containers whose `logConfiguration` is
//! `awslogs`, found by log group and stream as on CloudWatch Logs.

use crate::app::{Context, UsageError};
use crate::output::{self, columns, OutputFormat, Table};
use clap::Args;
use ecrl::api::tasks::*;
use ecrl::client::{empty_body, Client, JsonLines};
use std::io::Write;
use std::process::ExitCode;

pub const LONG_ABOUT: &str = "\
Print the output of containers that log with the awslogs driver, by log group and stream, as
on CloudWatch Logs. ecrl keeps their output itself (with the task's logs):

  \"logConfiguration\": {\"logDriver\": \"awslogs\", \"options\": {
      \"awslogs-group\": \"/ecs/web\", \"awslogs-region\": \"us-east-1\",
      \"awslogs-stream-prefix\": \"web\"}}

A container's stream is PREFIX/CONTAINER/TASK-ID (without a prefix: the engine's container
id), as ECS names it. Without STREAM, every stream of the group is printed, each line after
its stream's name. -f keeps following until the tasks stop. Streams last as long as their
tasks are kept (see 'ecrl task ps --status STOPPED').

Other drivers (json-file, local, syslog, journald, fluentd, gelf, ...) are passed to the
container engine with their options; 'ecrl task logs' reads what the engine keeps.

Examples:
  ecrl logs /ecs/web --streams
  ecrl logs /ecs/web web/app/3f2a9c1e0b7d4e5f8a9b0c1d2e3f4a5b -f
  ecrl logs /ecs/web";

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The log group (the container's awslogs-group)
    pub group: String,
    /// Only this stream (PREFIX/CONTAINER/TASK-ID)
    pub stream: Option<String>,
    /// Keep printing new output until the tasks stop
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// List the group's streams instead
    #[arg(long, conflicts_with_all = ["stream", "follow"])]
    pub streams: bool,
}

impl Table for LogStreamsResponse {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .log_streams
            .iter()
            .map(|s| {
                vec![
                    s.log_stream_name.clone(),
                    s.last_status.clone(),
                    s.creation_time.clone(),
                ]
            })
            .collect();
        columns(&["STREAM", "TASK", "CREATED"], &rows)
    }
}

pub async fn run(ctx: &Context, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let listed = client
        .call::<ListLogStreams>(&LogStreamsRequest {
            log_group_name: args.group.clone(),
        })
        .await?;
    if args.streams {
        output::print(ctx.output, &listed)?;
        return Ok(ExitCode::SUCCESS);
    }
    let group = &args.group;
    let selected: Vec<LogStream> = match &args.stream {
        Some(name) => {
            let found: Vec<LogStream> = listed
                .log_streams
                .into_iter()
                .filter(|s| &s.log_stream_name == name)
                .collect();
            if found.is_empty() {
                return Err(UsageError(format!(
                    "log group {group} has no stream {name} ('ecrl logs {group} --streams' lists them)"
                ))
                .into());
            }
            found
        }
        None => listed.log_streams,
    };
    if selected.is_empty() {
        return Err(UsageError(format!(
            "log group {group} has no streams: no task kept by ecrl runs a container whose \
             logConfiguration is awslogs with awslogs-group {group}"
        ))
        .into());
    }
    let width = if selected.len() > 1 {
        selected.iter().map(|s| s.log_stream_name.len()).max()
    } else {
        None
    };
    let json = ctx.output != OutputFormat::Table;
    if args.follow {
        let all = selected
            .iter()
            .map(|s| print_stream(&client, s, true, width, json));
        for result in futures_util::future::join_all(all).await {
            result?;
        }
    } else {
        for s in &selected {
            print_stream(&client, s, false, width, json).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One stream's output, each line after the stream's name when `width` says several are
/// printed.
async fn print_stream(
    client: &Client,
    stream: &LogStream,
    follow: bool,
    width: Option<usize>,
    json: bool,
) -> anyhow::Result<()> {
    let request = TaskLogsRequest {
        task: stream.task_arn.clone(),
        container: Some(stream.container_name.clone()),
        follow,
    };
    let response = client.stream::<TaskLogs>(&request, empty_body()).await?;
    let mut events = JsonLines::new(response.into_body());
    let name = &stream.log_stream_name;
    while let Some(event) = events.next::<LogEvent>().await {
        match event? {
            LogEvent::Output { data, .. } => {
                let mut out = std::io::stdout().lock();
                for line in data.split_inclusive('\n') {
                    let line = line.trim_end_matches('\n');
                    if json {
                        let value = serde_json::json!({"logStreamName": name, "message": line});
                        writeln!(out, "{value}")?;
                    } else if let Some(width) = width {
                        writeln!(out, "{name:<width$} | {line}")?;
                    } else {
                        writeln!(out, "{line}")?;
                    }
                }
                out.flush()?;
            }
            LogEvent::Error(e) => return Err(e.into()),
        }
    }
    Ok(())
}
