//! `ecrl cluster create|list|describe|delete`: ECS clusters, the groups tasks run in.

use crate::app::{Context, UsageError};
use crate::output::{self, columns, Table};
use clap::Subcommand;
use ecrl::api::tasks::*;
use ecrl::api::Empty;
use std::process::ExitCode;

pub const LONG_ABOUT: &str = "\
Create, list, describe and delete ECS clusters: the groups tasks run in, as on ECS.

ecrl has one container instance, the local container runtime, which every cluster shares;
a cluster groups tasks for listing ('ecrl task ps --cluster NAME') and counting. The cluster
'default' always exists: 'ecrl task run' without --cluster runs there. A cluster with
tasks that are not STOPPED cannot be deleted, nor can 'default'.

The same clusters answer the AWS API ('aws ecs create-cluster', 'describe-clusters', ...).

Examples:
  ecrl cluster create batch --tag team=data
  ecrl task run report --cluster batch
  ecrl cluster describe batch
  ecrl cluster delete batch";

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Create a cluster (ECS CreateCluster); creating one that exists shows it
    Create {
        /// 1-255 letters, digits, hyphens and underscores
        name: String,
        /// A resource tag, KEY=VALUE (repeatable)
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// List clusters (ECS ListClusters), with their task counts
    List,
    /// Show clusters (ECS DescribeClusters): status, running and pending tasks, tags
    Describe {
        /// Cluster names or ARNs [default: default]
        clusters: Vec<String>,
    },
    /// Delete a cluster (ECS DeleteCluster): only one whose tasks have all STOPPED
    Delete {
        /// The cluster's name or ARN
        cluster: String,
    },
}

fn tag(text: &str) -> Result<ecrl::taskdef::Tag, UsageError> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| UsageError(format!("--tag {text:?}: expected KEY=VALUE")))?;
    Ok(ecrl::taskdef::Tag {
        key: Some(key.to_string()),
        value: Some(value.to_string()),
    })
}

pub async fn run(ctx: &Context, command: ClusterCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match command {
        ClusterCommand::Create { name, tags } => {
            let tags = tags.iter().map(|t| tag(t)).collect::<Result<_, _>>()?;
            let r = client
                .call::<CreateCluster>(&CreateClusterRequest {
                    cluster_name: Some(name),
                    tags,
                })
                .await?;
            output::print(ctx.output, &Clusters(vec![r.cluster]))?;
        }
        ClusterCommand::List => {
            let listed = client.call::<ListClusters>(&Empty {}).await?;
            let names = listed
                .cluster_arns
                .iter()
                .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
                .collect();
            let r = client
                .call::<DescribeClusters>(&DescribeClustersRequest { clusters: names })
                .await?;
            output::print(ctx.output, &Clusters(r.clusters))?;
        }
        ClusterCommand::Describe { clusters } => {
            let r = client
                .call::<DescribeClusters>(&DescribeClustersRequest { clusters })
                .await?;
            let missing: Vec<String> = r.failures.iter().map(|f| f.arn.clone()).collect();
            output::print(ctx.output, &Described(r))?;
            if !missing.is_empty() {
                eprintln!("error: no such cluster: {}", missing.join(", "));
                return Ok(ExitCode::FAILURE);
            }
        }
        ClusterCommand::Delete { cluster } => {
            let r = client
                .call::<DeleteCluster>(&ClusterRef { cluster })
                .await?;
            ctx.note(format!("deleted cluster {}", r.cluster.cluster_name));
            if ctx.output != output::OutputFormat::Table {
                output::print(ctx.output, &r)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Clusters as a table; as JSON, ECS's `{"clusters": [...]}`.
#[derive(serde::Serialize)]
struct Clusters(#[serde(serialize_with = "wrapped")] Vec<Cluster>);

fn wrapped<S: serde::Serializer>(clusters: &[Cluster], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry("clusters", clusters)?;
    map.end()
}

impl Table for Clusters {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .0
            .iter()
            .map(|c| {
                vec![
                    c.cluster_name.clone(),
                    c.status.clone(),
                    c.running_tasks_count.to_string(),
                    c.pending_tasks_count.to_string(),
                    c.tags
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                ]
            })
            .collect();
        columns(&["CLUSTER", "STATUS", "RUNNING", "PENDING", "TAGS"], &rows)
    }
}

#[derive(serde::Serialize)]
#[serde(transparent)]
struct Described(DescribeClustersResponse);

impl Table for Described {
    fn table(&self) -> String {
        Clusters(self.0.clusters.clone()).table()
    }
}

impl Table for ClusterResponse {
    fn table(&self) -> String {
        Clusters(vec![self.cluster.clone()]).table()
    }
}
