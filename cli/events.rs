//! `ecrl events [-f] [--since D] [--type T] [--repository R]`: what ecrld changed, and
//! `ecrl events --webhooks`: how the webhooks keep up.

use crate::app::{block_on, Context, UsageError};
use crate::output::{self, OutputFormat, Table};
use clap::Args;
use ecrl::api::events::{
    Event, EventKind, EventsPage, EventsRequest, FollowEvents, ListEvents, ListWebhooks,
    WebhooksReport, MAX_EVENTS_PAGE,
};
use ecrl::api::Empty;
use ecrl::client::{empty_body, JsonLines};
use std::io::Write;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Keep printing events as they happen, until interrupted
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only events newer than this: 90s, 30m, 24h, 7d
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Only events of these types (repeat it, or separate with commas): image-push,
    /// image-delete, replication, cache, repository, policy, gc, task, task-definition
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Only the events of one repository
    #[arg(long, value_name = "NAME")]
    pub repository: Option<String>,
    /// At most this many, the newest [default: 100; at most 1000]
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<usize>,
    /// Show each configured webhook instead: delivered, pending, and the deliveries that
    /// failed
    #[arg(long, conflicts_with_all = ["follow", "since", "types", "repository", "limit"])]
    pub webhooks: bool,
}

pub const LONG_ABOUT: &str = "\
Show what ecrld changed: images pushed, tagged and deleted (by a user or a lifecycle policy),
replicated or failed, fetched through a pull-through cache; repositories created and deleted;
policies set; garbage collections; task state changes and task definitions registered.

Each event is EventBridge-shaped, with ECR's and ECS's detail where AWS defines one (\"ECR
Image Action\", \"ECS Task State Change\", ...): --output json prints them as they are (with
-f, one JSON object a line). Events are kept for events.retention (7 days by default).

--webhooks shows the webhooks configured under events.webhooks: how many events each got,
how many wait, and the deliveries that failed (retrying, or given up on).";

pub fn run(ctx: &Context, args: EventsArgs) -> anyhow::Result<ExitCode> {
    if args.webhooks {
        let client = ctx.client()?;
        let report = block_on(client.call::<ListWebhooks>(&Empty {}))??;
        output::print(ctx.output, &report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let request = request(&args)?;
    if args.follow {
        return follow(ctx, &request);
    }
    let client = ctx.client()?;
    let page: EventsPage = block_on(client.call::<ListEvents>(&request))??;
    output::print(ctx.output, &Events(page.events))?;
    Ok(ExitCode::SUCCESS)
}

fn request(args: &EventsArgs) -> anyhow::Result<EventsRequest> {
    for name in &args.types {
        if EventKind::parse_all(name).is_none() {
            return Err(UsageError(format!(
                "unknown event type {name:?}; the types are {}",
                EventKind::names()
            ))
            .into());
        }
    }
    let since = match &args.since {
        None => None,
        Some(text) => {
            let age = ecrl::config::parse_duration(text).ok_or_else(|| {
                UsageError(format!(
                    "--since {text:?} is not a duration such as 90s, 30m, 24h or 7d"
                ))
            })?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Some(now.saturating_sub(age).as_millis() as i64)
        }
    };
    if let Some(n) = args.limit.filter(|n| *n == 0 || *n > MAX_EVENTS_PAGE) {
        return Err(UsageError(format!("--limit must be 1-{MAX_EVENTS_PAGE}, not {n}")).into());
    }
    Ok(EventsRequest {
        after: None,
        since,
        types: args.types.join(","),
        repository_name: args.repository.clone(),
        limit: args.limit,
    })
}

/// Prints events as they come until interrupted (exit 130, as `tail -f`) or the daemon
/// stops (exit 0).
fn follow(ctx: &Context, request: &EventsRequest) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let format = ctx.output;
    let outcome = block_on(async {
        tokio::select! {
            result = async {
                let response = client.stream::<FollowEvents>(request, empty_body()).await?;
                let mut events = JsonLines::new(response.into_body());
                while let Some(event) = events.next::<Event>().await {
                    let event = event?;
                    let text = match format {
                        OutputFormat::Json => serde_json::to_string(&event)? + "\n",
                        OutputFormat::Yaml => format!("---\n{}", serde_yaml::to_string(&event)?),
                        OutputFormat::Table => line(&event),
                    };
                    let mut out = std::io::stdout().lock();
                    // A closed pipe (`| head`) ends the follow quietly.
                    if out.write_all(text.as_bytes()).and_then(|()| out.flush()).is_err() {
                        return Ok(true);
                    }
                }
                Ok::<_, anyhow::Error>(true)
            } => result.map(|_| None),
            _ = crate::signals::interrupted() => Ok(Some(crate::signals::exit_code())),
        }
    })?;
    Ok(match outcome? {
        Some(code) => ExitCode::from(code),
        None => ExitCode::SUCCESS,
    })
}

/// Events for `--output table`: one line each.
#[derive(serde::Serialize)]
#[serde(transparent)]
struct Events(Vec<Event>);

impl Table for Events {
    fn table(&self) -> String {
        self.0.iter().map(line).collect()
    }
}

/// `TIME  TYPE  what happened`.
fn line(e: &Event) -> String {
    format!("{}  {:<15}  {}\n", e.time, e.kind.name(), summary(e))
}

fn summary(e: &Event) -> String {
    let d = &e.detail;
    let s = |key: &str| d[key].as_str().unwrap_or("").to_string();
    let short = |digest: &str| {
        digest
            .strip_prefix("sha256:")
            .map(|h| format!("sha256:{}", &h[..h.len().min(12)]))
            .unwrap_or_else(|| digest.to_string())
    };
    let image = || {
        let tag = s("image-tag");
        let digest = short(&s("image-digest"));
        if tag.is_empty() {
            format!("{}@{digest}", s("repository-name"))
        } else {
            format!("{}:{tag} ({digest})", s("repository-name"))
        }
    };
    match e.kind {
        EventKind::ImagePush => format!("pushed {}", image()),
        EventKind::ImageDelete => {
            let what = if d["ecrl-image-kept"].as_bool() == Some(true) {
                "untagged"
            } else {
                "deleted"
            };
            match d["ecrl-cause"].as_str() {
                Some(cause) if cause != "user" => format!("{what} {} by {cause}", image()),
                _ => format!("{what} {}", image()),
            }
        }
        EventKind::Replication => {
            let mut text = format!(
                "{} {} to {}/{}",
                if s("result") == "SUCCESS" {
                    "replicated"
                } else {
                    "FAILED to replicate"
                },
                image(),
                s("destination-registry"),
                s("destination-repository")
            );
            if let Some(reason) = d["failure-reason"].as_str() {
                text.push_str(&format!(": {reason}"));
            }
            text
        }
        EventKind::Cache => format!("cached {} from {}", image(), s("upstream-registry-url")),
        EventKind::Repository => format!(
            "{} repository {}",
            if s("action-type") == "CREATE" {
                "created"
            } else {
                "deleted"
            },
            s("repository-name")
        ),
        EventKind::Policy => {
            let whose = match (d["repository-name"].as_str(), d["user-name"].as_str()) {
                (Some(repo), _) => format!(" of {repo}"),
                (None, Some(user)) => format!(" {} of user {user}", s("policy-name")),
                _ => String::new(),
            };
            format!(
                "{} {} policy{whose}",
                if s("action-type") == "PUT" {
                    "set"
                } else {
                    "deleted"
                },
                s("policy-type").to_lowercase()
            )
        }
        EventKind::Gc => format!(
            "garbage collection removed {} blobs ({}), {} links",
            d["blobs-removed"].as_u64().unwrap_or(0),
            output::human_bytes(d["bytes-removed"].as_u64().unwrap_or(0)),
            d["links-removed"].as_u64().unwrap_or(0)
        ),
        EventKind::Task => {
            let arn = s("taskArn");
            let id = arn.rsplit('/').next().unwrap_or(&arn).to_string();
            let definition = s("taskDefinitionArn");
            let family = definition.rsplit('/').next().unwrap_or(&definition);
            let mut text = format!("task {id} ({family}) {}", s("lastStatus"));
            if let Some(reason) = d["stoppedReason"].as_str() {
                text.push_str(&format!(": {reason}"));
            }
            text
        }
        EventKind::TaskDefinition => {
            format!(
                "task definition {}:{} {}",
                s("family"),
                d["revision"],
                s("status")
            )
        }
    }
}

impl Table for WebhooksReport {
    fn table(&self) -> String {
        if self.webhooks.is_empty() {
            return "no webhooks are configured (events.webhooks in the config file)\n".into();
        }
        let rows: Vec<Vec<String>> = self
            .webhooks
            .iter()
            .map(|w| {
                vec![
                    w.name.clone(),
                    w.delivered.to_string(),
                    w.pending.to_string(),
                    w.failures
                        .iter()
                        .filter(|f| f.status == "FAILED")
                        .count()
                        .to_string(),
                    w.last_delivered_at.clone().unwrap_or_else(|| "-".into()),
                    w.last_error.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        let mut out = output::columns(
            &[
                "WEBHOOK",
                "DELIVERED",
                "PENDING",
                "FAILED",
                "LAST DELIVERED",
                "LAST ERROR",
            ],
            &rows,
        );
        for w in &self.webhooks {
            for f in &w.failures {
                out.push_str(&format!(
                    "{}: event {} ({}) {} after {} tries: {}{}\n",
                    w.name,
                    f.sequence,
                    f.kind.map(|k| k.name()).unwrap_or("?"),
                    f.status,
                    f.attempts,
                    f.error,
                    f.next_attempt_at
                        .as_ref()
                        .map(|at| format!(" (next try {at})"))
                        .unwrap_or_default()
                ));
            }
        }
        out
    }
}
