//! `ecrl image list|describe|delete|tag`.

use crate::app::{block_on, Context, UsageError};
use crate::output::{self, human_bytes, Table};
use crate::refs;
use clap::{Subcommand, ValueEnum};
use ecrl::api::repos::*;
use ecrl::api::ErrorCode;
use ecrl::client::{Client, ClientError};
use ecrl::names::{ImageRef, Reference, Tag};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List a repository's images (digest and tag pairs)
    List {
        /// Repository name
        repository: String,
        /// Which images to list
        #[arg(long, value_enum, default_value = "any", ignore_case = true)]
        tag_status: TagStatus,
        /// Only the images the repository's lifecycle policy expires at its next run, with
        /// the rule that expires each (see `ecrl repo lifecycle preview` for why others stay)
        #[arg(long)]
        expiring: bool,
    },
    /// Show an image (REPO:TAG or REPO@DIGEST), or every image of REPO
    Describe {
        /// REPO, REPO:TAG or REPO@DIGEST
        image: String,
    },
    /// Delete images: a tag removes the tag (an image left without tags goes too); a digest
    /// removes the image and its tags
    Delete {
        /// REPO:TAG or REPO@DIGEST, all in one repository
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Give an existing image another tag
    Tag {
        /// REPO:TAG or REPO@DIGEST of the image
        image: String,
        /// The new tag
        tag: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TagStatus {
    Tagged,
    Untagged,
    Any,
}

fn parse_image(client: &Client, text: &str) -> anyhow::Result<ImageRef> {
    block_on(refs::image_ref(client, text))?
}

fn image_id(reference: &Option<Reference>) -> ImageId {
    match reference {
        Some(Reference::Tag(t)) => ImageId {
            image_tag: Some(t.to_string()),
            image_digest: None,
        },
        Some(Reference::Digest(d)) => ImageId {
            image_digest: Some(d.to_string()),
            image_tag: None,
        },
        None => ImageId::default(),
    }
}

pub fn run(ctx: &Context, command: ImageCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match command {
        ImageCommand::List {
            repository,
            tag_status,
            expiring,
        } => {
            let repository = block_on(refs::repo_name(&client, &repository))??;
            let request = ListImagesRequest {
                repository_name: repository.to_string(),
                tag_status: Some(
                    match tag_status {
                        TagStatus::Tagged => "TAGGED",
                        TagStatus::Untagged => "UNTAGGED",
                        TagStatus::Any => "ANY",
                    }
                    .into(),
                ),
            };
            let mut response = block_on(client.call::<ListImages>(&request))??;
            if !expiring {
                output::print(ctx.output, &response)?;
                return Ok(ExitCode::SUCCESS);
            }
            use ecrl::api::lifecycle::{PreviewLifecyclePolicy, PreviewLifecyclePolicyRequest};
            let preview = block_on(client.call::<PreviewLifecyclePolicy>(
                &PreviewLifecyclePolicyRequest {
                    repository_name: repository.to_string(),
                    lifecycle_policy_text: None,
                },
            ))??;
            let rules: std::collections::HashMap<String, i64> = preview
                .preview_results
                .iter()
                .map(|r| (r.image_digest.clone(), r.applied_rule_priority))
                .collect();
            response.image_ids.retain(|id| {
                id.image_digest
                    .as_ref()
                    .is_some_and(|d| rules.contains_key(d))
            });
            output::print(ctx.output, &Expiring(response, rules))?;
        }
        ImageCommand::Describe { image } => {
            let image = parse_image(&client, &image)?;
            let id = image_id(&image.reference);
            let request = DescribeImagesRequest {
                repository_name: image.repository.to_string(),
                image_tag: id.image_tag,
                image_digest: id.image_digest,
            };
            let response = block_on(client.call::<DescribeImages>(&request))??;
            output::print(ctx.output, &response)?;
        }
        ImageCommand::Delete { images } => {
            let mut repository = None;
            let mut ids = Vec::new();
            for text in &images {
                let image = parse_image(&client, text)?;
                if image.reference.is_none() {
                    return Err(UsageError(format!(
                        "{text:?}: name the image as REPO:TAG or REPO@DIGEST"
                    ))
                    .into());
                }
                match &repository {
                    None => repository = Some(image.repository.clone()),
                    Some(r) if *r != image.repository => {
                        return Err(UsageError(format!(
                        "{text:?}: all images of one delete must be in the same repository ({r})"
                    ))
                        .into())
                    }
                    Some(_) => {}
                }
                ids.push(image_id(&image.reference));
            }
            let request = BatchDeleteImageRequest {
                repository_name: repository.map(|r| r.to_string()).unwrap_or_default(),
                image_ids: ids,
            };
            let response = block_on(client.call::<BatchDeleteImage>(&request))??;
            // A tag's removal may take its image with it (the last tag): say which did.
            let mut images_gone = std::collections::HashSet::new();
            for id in response
                .image_ids
                .iter()
                .filter(|id| id.image_tag.is_some())
            {
                let Some(digest) = &id.image_digest else {
                    continue;
                };
                let lookup = block_on(client.call::<DescribeImages>(&DescribeImagesRequest {
                    repository_name: request.repository_name.clone(),
                    image_tag: None,
                    image_digest: Some(digest.clone()),
                }))?;
                if matches!(lookup, Err(ClientError::Api(ref e)) if e.code == ErrorCode::ImageNotFound)
                {
                    images_gone.insert(digest.clone());
                }
            }
            for failure in &response.failures {
                ctx.note(format!(
                    "error: {}: {} ({})",
                    failure
                        .image_id
                        .image_tag
                        .as_ref()
                        .or(failure.image_id.image_digest.as_ref())
                        .cloned()
                        .unwrap_or_default(),
                    failure.failure_reason,
                    failure.failure_code
                ));
            }
            let failed = !response.failures.is_empty();
            output::print(
                ctx.output,
                &Deleted {
                    response,
                    images_gone,
                },
            )?;
            if failed {
                return Ok(ExitCode::from(crate::app::exit::FAILED));
            }
        }
        ImageCommand::Tag { image, tag } => {
            let image = parse_image(&client, &image)?;
            if image.reference.is_none() {
                return Err(UsageError("name the image as REPO:TAG or REPO@DIGEST".into()).into());
            }
            let tag: Tag = tag
                .parse()
                .map_err(|e| UsageError(format!("{tag:?}: {e}")))?;
            let request = TagImageRequest {
                repository_name: image.repository.to_string(),
                source: image_id(&image.reference),
                image_tag: tag.to_string(),
            };
            let response = block_on(client.call::<TagImage>(&request))??;
            output::print(ctx.output, &response)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn short(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .map(|h| format!("sha256:{}", &h[..h.len().min(12)]))
        .unwrap_or_else(|| digest.to_string())
}

/// The images a lifecycle policy expires next, each with its rule (JSON: ListImages' shape).
#[derive(serde::Serialize)]
#[serde(transparent)]
struct Expiring(
    ListImagesResponse,
    #[serde(skip)] std::collections::HashMap<String, i64>,
);

impl Table for Expiring {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .0
            .image_ids
            .iter()
            .map(|id| {
                let digest = id.image_digest.clone().unwrap_or_default();
                vec![
                    id.image_tag.clone().unwrap_or_else(|| "<untagged>".into()),
                    self.1
                        .get(&digest)
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    digest,
                ]
            })
            .collect();
        output::columns(&["TAG", "RULE", "DIGEST"], &rows)
    }
}

impl Table for ListImagesResponse {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .image_ids
            .iter()
            .map(|id| {
                vec![
                    id.image_tag.clone().unwrap_or_else(|| "<untagged>".into()),
                    id.image_digest.clone().unwrap_or_default(),
                ]
            })
            .collect();
        output::columns(&["TAG", "DIGEST"], &rows)
    }
}

impl Table for DescribeImagesResponse {
    fn table(&self) -> String {
        if let [d] = self.image_details.as_slice() {
            let mut rows = vec![
                ("repository", d.repository_name.clone()),
                ("digest", d.image_digest.clone()),
                ("tags", d.image_tags.join(", ")),
                ("size", human_bytes(d.image_size_in_bytes)),
                ("media type", d.image_manifest_media_type.clone()),
            ];
            if let Some(t) = &d.artifact_media_type {
                rows.push(("artifact type", t.clone()));
            }
            rows.push(("pushed", d.image_pushed_at.clone()));
            rows.push((
                "last pulled",
                d.last_recorded_pull_time
                    .clone()
                    .unwrap_or_else(|| "never".into()),
            ));
            if let Some(up) = &d.upstream_image {
                rows.push(("cached from", up.clone()));
            }
            if let Some(at) = &d.upstream_checked_at {
                rows.push(("tag checked", at.clone()));
            }
            for r in &d.replication_statuses {
                let failure = match (&r.failure_code, &r.failure_reason) {
                    (Some(c), Some(why)) => format!(" ({c}: {why})"),
                    _ => String::new(),
                };
                rows.push((
                    "replicated",
                    format!("{}/{} {}{failure}", r.registry, r.repository_name, r.status),
                ));
            }
            return output::key_values(&rows);
        }
        let rows: Vec<Vec<String>> = self
            .image_details
            .iter()
            .map(|d| {
                vec![
                    short(&d.image_digest),
                    if d.image_tags.is_empty() {
                        "<untagged>".into()
                    } else {
                        d.image_tags.join(",")
                    },
                    human_bytes(d.image_size_in_bytes),
                    d.image_pushed_at.clone(),
                    d.last_recorded_pull_time
                        .clone()
                        .unwrap_or_else(|| "never".into()),
                ]
            })
            .collect();
        output::columns(&["DIGEST", "TAGS", "SIZE", "PUSHED", "LAST PULLED"], &rows)
    }
}

/// A delete's answer (ECR's, as JSON) and, for people, which tags took their image along.
struct Deleted {
    response: BatchDeleteImageResponse,
    /// Digests of images deleted because their last tag was.
    images_gone: std::collections::HashSet<String>,
}

impl serde::Serialize for Deleted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.response.serialize(s)
    }
}

impl Table for Deleted {
    fn table(&self) -> String {
        self.response
            .image_ids
            .iter()
            .map(|id| {
                let digest = id.image_digest.clone().unwrap_or_default();
                match &id.image_tag {
                    None => format!("deleted image {digest}\n"),
                    Some(t) if self.images_gone.contains(&digest) => {
                        format!("deleted tag {t} and image {digest} (no tag was left on it)\n")
                    }
                    Some(t) => format!("deleted tag {t} of {digest}\n"),
                }
            })
            .collect()
    }
}
