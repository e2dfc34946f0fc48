//! `ecrl repo lifecycle set|get|delete|preview|run`: ECR's lifecycle policies.

use crate::app::Context;
use crate::output::{self, Table};
use clap::Subcommand;
use ecrl::api::lifecycle::*;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum LifecycleCommand {
    /// Set a repository's lifecycle policy (ECR PutLifecyclePolicy) from a JSON or YAML file
    /// (- reads stdin); the daemon applies it every lifecycle.interval (1h)
    Set {
        repository: String,
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Print a repository's lifecycle policy
    Get { repository: String },
    /// Remove a repository's lifecycle policy
    Delete { repository: String },
    /// What a policy would expire now, rule by rule, and what it keeps because tasks use it;
    /// nothing is deleted. The repository's own policy, or the one in --file
    Preview {
        repository: String,
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
    /// Apply the repository's policy now; prints what it expired
    Run { repository: String },
}

pub async fn run(ctx: &Context, command: LifecycleCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let repo = |name: &str| {
        let client = &client;
        let name = name.to_string();
        async move {
            crate::refs::repo_name(client, &name)
                .await
                .map(|n| n.to_string())
        }
    };
    match command {
        LifecycleCommand::Set { repository, file } => {
            let r = client
                .call::<PutLifecyclePolicy>(&PutLifecyclePolicyRequest {
                    repository_name: repo(&repository).await?,
                    lifecycle_policy_text: crate::auth::read_text(&file)?,
                })
                .await?;
            output::print(ctx.output, &r)?;
        }
        LifecycleCommand::Get { repository } => {
            let r = client
                .call::<GetLifecyclePolicy>(&LifecyclePolicyRef {
                    repository_name: repo(&repository).await?,
                })
                .await?;
            output::print(ctx.output, &r)?;
        }
        LifecycleCommand::Delete { repository } => {
            let name = repo(&repository).await?;
            let r = client
                .call::<DeleteLifecyclePolicy>(&LifecyclePolicyRef {
                    repository_name: name.clone(),
                })
                .await?;
            ctx.note(format!("removed the lifecycle policy of repository {name}"));
            if ctx.output != output::OutputFormat::Table {
                output::print(ctx.output, &r)?;
            }
        }
        LifecycleCommand::Preview { repository, file } => {
            let text = file.map(|f| crate::auth::read_text(&f)).transpose()?;
            let r = client
                .call::<PreviewLifecyclePolicy>(&PreviewLifecyclePolicyRequest {
                    repository_name: repo(&repository).await?,
                    lifecycle_policy_text: text,
                })
                .await?;
            output::print(ctx.output, &Outcome(r, "would expire"))?;
        }
        LifecycleCommand::Run { repository } => {
            let r = client
                .call::<RunLifecyclePolicy>(&LifecyclePolicyRef {
                    repository_name: repo(&repository).await?,
                })
                .await?;
            let failed = !r.failures.is_empty();
            output::print(ctx.output, &Outcome(r, "expired"))?;
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl Table for LifecyclePolicyResponse {
    fn table(&self) -> String {
        let mut text = self.lifecycle_policy_text.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
    }
}

/// A preview or a run, with what it did (`would expire` or `expired`).
#[derive(serde::Serialize)]
#[serde(transparent)]
struct Outcome(LifecyclePolicyPreview, #[serde(skip)] &'static str);

impl Table for Outcome {
    fn table(&self) -> String {
        let p = &self.0;
        let tags = |t: &[String]| {
            if t.is_empty() {
                "<untagged>".to_string()
            } else {
                t.join(",")
            }
        };
        let mut rows: Vec<Vec<String>> = p
            .preview_results
            .iter()
            .map(|r| {
                vec![
                    short(&r.image_digest),
                    tags(&r.image_tags),
                    r.image_pushed_at.clone(),
                    r.applied_rule_priority.to_string(),
                    self.1.to_string(),
                ]
            })
            .collect();
        rows.extend(p.kept_images.iter().map(|k| {
            vec![
                short(&k.image_digest),
                tags(&k.image_tags),
                k.image_pushed_at.clone(),
                k.applied_rule_priority.to_string(),
                format!("kept: {}", k.reason),
            ]
        }));
        rows.extend(p.failures.iter().map(|f| {
            vec![
                short(f.image_id.image_digest.as_deref().unwrap_or("")),
                String::new(),
                String::new(),
                String::new(),
                format!("not expired: {}", f.failure_reason),
            ]
        }));
        let mut text = if rows.is_empty() {
            String::new()
        } else {
            output::columns(&["DIGEST", "TAGS", "PUSHED", "RULE", "ACTION"], &rows)
        };
        text.push_str(&format!(
            "{} image{} {} in {}\n",
            p.summary.expiring_image_total_count,
            if p.summary.expiring_image_total_count == 1 {
                ""
            } else {
                "s"
            },
            self.1,
            p.repository_name
        ));
        text
    }
}

fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}
