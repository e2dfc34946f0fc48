//! `ecrl repo create|list|describe|delete|push|pull`.

use crate::app::{block_on, Context, UsageError};
use crate::output::{self, human_bytes, Table};
use crate::{refs, transfer};
use clap::{Args, Subcommand, ValueEnum};
use ecrl::api::repos::*;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Create a repository
    Create(CreateArgs),
    /// List repositories, optionally those whose name starts with PREFIX
    List {
        /// Only repositories whose name starts with this
        prefix: Option<String>,
    },
    /// Show a repository: URI, creation time, image count, size
    Describe {
        /// Repository name, e.g. team/app
        name: String,
    },
    /// Delete a repository (one that holds images needs --force)
    Delete {
        /// Repository name
        name: String,
        /// Delete it even if it holds images
        #[arg(long)]
        force: bool,
    },
    /// Push an image from an archive, an OCI layout or the Docker engine into a repository
    #[command(long_about = transfer::PUSH_LONG_ABOUT)]
    Push(transfer::PushArgs),
    /// Pull an image into an archive, an OCI layout or the Docker engine
    #[command(long_about = transfer::PULL_LONG_ABOUT)]
    Pull(transfer::PullArgs),
    /// Set, print or remove a repository's policy (ECR repository policies, IAM JSON)
    #[command(subcommand)]
    Policy(crate::auth::RepoPolicyCommand),
    /// Lifecycle policies (ECR's): expire images by tag, count and age, on a schedule
    #[command(subcommand)]
    Lifecycle(crate::lifecycle::LifecycleCommand),
    /// Add resource tags to a repository (ECR TagResource); a key given again takes the new
    /// value
    Tag {
        /// Repository name
        name: String,
        /// KEY=VALUE pairs
        #[arg(required = true, value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// Remove resource tags from a repository by key (ECR UntagResource)
    Untag {
        /// Repository name
        name: String,
        /// Tag keys
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Change whether tags may move (ECR PutImageTagMutability), with exclusions
    PutMutability {
        /// Repository name
        name: String,
        #[command(flatten)]
        mutability: MutabilityArgs,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mutability {
    /// Tags may move to other images
    Mutable,
    /// A pushed tag stays on its image
    Immutable,
    /// Tags stay, except those an --exclude wildcard matches
    ImmutableWithExclusion,
    /// Tags may move, except those an --exclude wildcard matches
    MutableWithExclusion,
}

impl Mutability {
    fn request(self, excludes: &[String]) -> (String, Vec<ecrl::mutability::ExclusionFilter>) {
        let mode = match self {
            Mutability::Mutable => ecrl::mutability::TagMutability::Mutable,
            Mutability::Immutable => ecrl::mutability::TagMutability::Immutable,
            Mutability::ImmutableWithExclusion => {
                ecrl::mutability::TagMutability::ImmutableWithExclusion
            }
            Mutability::MutableWithExclusion => {
                ecrl::mutability::TagMutability::MutableWithExclusion
            }
        };
        (
            mode.as_str().to_string(),
            excludes
                .iter()
                .map(|e| ecrl::mutability::ExclusionFilter::wildcard(e))
                .collect(),
        )
    }
}

#[derive(Args, Debug)]
pub struct MutabilityArgs {
    /// Whether a pushed tag may later point at another image
    #[arg(long, value_enum, default_value = "MUTABLE", ignore_case = true)]
    pub tag_mutability: Mutability,
    /// A tag wildcard the *_WITH_EXCLUSION settings turn around, e.g. 'latest' or 'dev-*'
    /// (repeatable, up to 5)
    #[arg(long = "exclude", value_name = "WILDCARD")]
    pub excludes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Repository name, e.g. team/app (lowercase, '/'-separated)
    pub name: String,
    #[command(flatten)]
    pub mutability: MutabilityArgs,
    /// A resource tag KEY=VALUE (repeatable)
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
}

pub fn run(ctx: &Context, command: RepoCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match command {
        RepoCommand::Create(args) => {
            let tags = resource_tags(&args.tags)?;
            let name = block_on(refs::repo_name(&client, &args.name))??;
            let (mode, filters) = args
                .mutability
                .tag_mutability
                .request(&args.mutability.excludes);
            let request = CreateRepositoryRequest {
                repository_name: name.to_string(),
                image_tag_mutability: Some(mode),
                image_tag_mutability_exclusion_filters: filters,
                tags,
            };
            let response = block_on(client.call::<CreateRepository>(&request))??;
            output::print(ctx.output, &response)?;
        }
        RepoCommand::List { prefix } => {
            let response =
                block_on(client.call::<ListRepositories>(&ListRepositoriesRequest { prefix }))??;
            output::print(ctx.output, &response)?;
        }
        RepoCommand::Describe { name } => {
            let name = block_on(refs::repo_name(&client, &name))??;
            let response = block_on(client.call::<DescribeRepository>(&RepositoryName {
                repository_name: name.to_string(),
            }))??;
            output::print(ctx.output, &response)?;
        }
        RepoCommand::Delete { name, force } => {
            let name = block_on(refs::repo_name(&client, &name))??;
            let response = block_on(client.call::<DeleteRepository>(&DeleteRepositoryRequest {
                repository_name: name.to_string(),
                force,
            }))??;
            output::print(ctx.output, &response)?;
        }
        RepoCommand::Push(args) => return transfer::push(ctx, args),
        RepoCommand::Pull(args) => return transfer::pull(ctx, args),
        RepoCommand::Policy(cmd) => {
            return crate::app::block_on(crate::auth::repo_policy(ctx, cmd))?
        }
        RepoCommand::Tag { name, tags } => {
            let tags = resource_tags(&tags)?;
            retag(ctx, &client, &name, tags, Vec::new())?;
        }
        RepoCommand::Untag { name, keys } => retag(ctx, &client, &name, Vec::new(), keys)?,
        RepoCommand::PutMutability { name, mutability } => {
            let name = block_on(refs::repo_name(&client, &name))??;
            let (mode, filters) = mutability.tag_mutability.request(&mutability.excludes);
            let request = PutImageTagMutabilityRequest {
                registry_id: None,
                repository_name: name.to_string(),
                image_tag_mutability: mode,
                image_tag_mutability_exclusion_filters: filters,
            };
            let response = block_on(client.call::<PutImageTagMutability>(&request))??;
            output::print(ctx.output, &response)?;
        }
        RepoCommand::Lifecycle(cmd) => {
            return crate::app::block_on(crate::lifecycle::run(ctx, cmd))?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `KEY=VALUE` arguments as resource tags.
fn resource_tags(args: &[String]) -> Result<Vec<ResourceTag>, UsageError> {
    args.iter()
        .map(|tag| {
            let (key, value) = tag
                .split_once('=')
                .ok_or_else(|| UsageError(format!("tag {tag:?}: expected KEY=VALUE")))?;
            Ok(ResourceTag {
                key: key.to_string(),
                value: value.to_string(),
            })
        })
        .collect()
}

fn retag(
    ctx: &Context,
    client: &ecrl::client::Client,
    name: &str,
    tags: Vec<ResourceTag>,
    remove: Vec<String>,
) -> anyhow::Result<()> {
    let name = block_on(refs::repo_name(client, name))??;
    let request = TagRepositoryRequest {
        repository_name: name.to_string(),
        tags,
        remove,
    };
    let response = block_on(client.call::<TagRepository>(&request))??;
    output::print(ctx.output, &response)?;
    Ok(())
}

impl Table for RepositoryResponse {
    fn table(&self) -> String {
        let r = &self.repository;
        let mut rows = vec![
            ("name", r.repository_name.clone()),
            ("uri", r.repository_uri.clone()),
            ("arn", r.repository_arn.clone()),
            ("created", r.created_at.clone()),
            (
                "tag mutability",
                mutability_text(
                    &r.image_tag_mutability,
                    &r.image_tag_mutability_exclusion_filters,
                ),
            ),
            ("images", r.image_count.to_string()),
            ("size", human_bytes(r.size_in_bytes)),
        ];
        if !r.tags.is_empty() {
            let tags: Vec<String> = r
                .tags
                .iter()
                .map(|t| format!("{}={}", t.key, t.value))
                .collect();
            rows.push(("tags", tags.join(", ")));
        }
        output::key_values(&rows)
    }
}

/// `IMMUTABLE_WITH_EXCLUSION (except latest, dev-*)`.
fn mutability_text(mode: &str, filters: &[ecrl::mutability::ExclusionFilter]) -> String {
    if filters.is_empty() {
        return mode.to_string();
    }
    let list: Vec<&str> = filters.iter().map(|f| f.filter.as_str()).collect();
    format!("{mode} (except {})", list.join(", "))
}

impl Table for PutImageTagMutabilityRequest {
    fn table(&self) -> String {
        format!(
            "{}: tag mutability {}\n",
            self.repository_name,
            mutability_text(
                &self.image_tag_mutability,
                &self.image_tag_mutability_exclusion_filters
            )
        )
    }
}

impl Table for ListRepositoriesResponse {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .repositories
            .iter()
            .map(|r| {
                vec![
                    r.repository_name.clone(),
                    r.repository_uri.clone(),
                    r.image_count.to_string(),
                    human_bytes(r.size_in_bytes),
                    r.image_tag_mutability.clone(),
                    r.created_at.clone(),
                ]
            })
            .collect();
        output::columns(
            &["NAME", "URI", "IMAGES", "SIZE", "MUTABILITY", "CREATED"],
            &rows,
        )
    }
}
