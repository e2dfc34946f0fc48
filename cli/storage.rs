//! `ecrl storage migrate`: a single-machine registry moved onto the backends several ecrld
//! share (blobs in an S3-compatible object store, metadata in PostgreSQL).

use crate::app::{block_on, Context};
use crate::output::{self, human_bytes, Table};
use clap::{Args, Subcommand};
use ecrl::api::system::{MigrateReport, MigrateRequest, MigrateStorage};
use ecrl::config::{
    DaemonOptions, MetadataBackend, MetadataConfig, S3Addressing, SecretString, StorageBackend,
    StorageConfig,
};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Move this registry's blobs into an object store and/or its metadata into PostgreSQL
    #[command(long_about = MIGRATE_LONG_ABOUT)]
    Migrate(MigrateArgs),
}

pub const MIGRATE_LONG_ABOUT: &str = "\
Move this registry onto the backends several ecrld share: its blobs into an S3-compatible
object store (--s3-bucket ...), its metadata into an empty PostgreSQL database
(--postgres-url), or both. The settings are those ecrld takes (flags here, the same
environment variables, or a config file with --config); S3 credentials come from
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.

The daemon keeps serving pulls while it copies: every blob is read, checked against its
digest and written to the object store (blobs already there are left); then the metadata is
copied whole, and from that moment the daemon refuses writes (pushes get 503 saying where
the registry went), so nothing is written where the registry no longer looks. Start ecrld
again with the new settings to go on; this data dir's files are left as they were.";

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The bucket to copy the blobs into (it must exist)
    #[arg(long, env = ecrl::config::ENV_S3_BUCKET, value_name = "BUCKET")]
    pub s3_bucket: Option<String>,
    /// The S3 endpoint URL (SeaweedFS, Garage, MinIO) [default: AWS S3 in --s3-region]
    #[arg(long, env = ecrl::config::ENV_S3_ENDPOINT, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// A key prefix within the bucket
    #[arg(long, env = ecrl::config::ENV_S3_PREFIX, value_name = "PREFIX")]
    pub s3_prefix: Option<String>,
    /// The bucket's region [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1]
    #[arg(long, env = ecrl::config::ENV_S3_REGION, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// How buckets are addressed [default: path with --s3-endpoint, virtual-host for AWS]
    #[arg(long, env = ecrl::config::ENV_S3_ADDRESSING, value_enum, value_name = "STYLE")]
    pub s3_addressing: Option<S3Addressing>,
    /// The empty PostgreSQL database to copy the metadata into
    #[arg(long, env = ecrl::config::ENV_POSTGRES_URL, value_name = "URL", hide_env_values = true)]
    pub postgres_url: Option<SecretString>,
    /// PEM file of the CA that signed PostgreSQL's certificate
    #[arg(long, env = ecrl::config::ENV_POSTGRES_CA, value_name = "FILE")]
    pub postgres_ca: Option<PathBuf>,
    /// A config file naming the new backends (storage.backend: s3, metadata.backend: postgres)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub fn run(ctx: &Context, cmd: StorageCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StorageCommand::Migrate(args) => migrate(ctx, args),
    }
}

fn migrate(ctx: &Context, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    // The target settings resolved as ecrld resolves its own.
    let options = DaemonOptions {
        config: args.config,
        storage_backend: args.s3_bucket.as_ref().map(|_| StorageBackend::S3),
        s3_bucket: args.s3_bucket,
        s3_endpoint: args.s3_endpoint,
        s3_prefix: args.s3_prefix,
        s3_region: args.s3_region,
        s3_addressing: args.s3_addressing,
        metadata_backend: args
            .postgres_url
            .as_ref()
            .map(|_| MetadataBackend::Postgres),
        postgres_url: args.postgres_url,
        postgres_ca: args.postgres_ca,
        ..Default::default()
    };
    let target = ctx.daemon_config(&options)?;
    let request = MigrateRequest {
        s3: match target.storage {
            StorageConfig::S3(s3) => Some(s3),
            StorageConfig::Filesystem => None,
        },
        postgres_url: None,
        postgres_ca: None,
    };
    let request = match target.metadata {
        MetadataConfig::Postgres { url, ca } => MigrateRequest {
            postgres_url: Some(url),
            postgres_ca: ca,
            ..request
        },
        MetadataConfig::Sqlite => request,
    };
    if request.s3.is_none() && request.postgres_url.is_none() {
        anyhow::bail!(
            "say where to move the registry: --s3-bucket (and --s3-endpoint ...) for the \
             blobs, --postgres-url for the metadata, or a --config file naming them"
        );
    }
    ctx.note("moving the registry (the daemon serves pulls meanwhile; this may take a while)");
    let client = ctx.client()?;
    let report = block_on(client.call::<MigrateStorage>(&request))??;
    output::print(ctx.output, &report)?;
    Ok(ExitCode::SUCCESS)
}

impl Table for MigrateReport {
    fn table(&self) -> String {
        let mut text = String::new();
        if let Some(s3) = &self.s3 {
            text.push_str(&format!(
                "blobs: {} copied ({}), {} already there, into {s3}\n",
                self.blobs_copied,
                human_bytes(self.bytes_copied),
                self.blobs_present
            ));
        }
        if let Some(pg) = &self.postgres {
            let rows: u64 = self.rows.values().sum();
            text.push_str(&format!(
                "metadata: {rows} rows in {} tables copied into PostgreSQL at {pg}\n",
                self.rows.len()
            ));
        }
        text.push_str(
            "the daemon now refuses writes: start it again with the new settings \
             (ecrl daemon stop, then ecrl daemon start with them)\n",
        );
        text
    }
}
