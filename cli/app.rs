//! The command tree and what every command shares: output format, quiet, the daemon's socket.

use crate::{
    auth, cluster, completions, daemon, events, gc, image, logs, mirror, output::OutputFormat,
    repo, secret, service, storage, task, tls,
};
use clap::{Parser, Subcommand};
use ecrl::client::{Client, ClientError};
use ecrl::config::{self, DaemonConfig, DaemonOptions, ENV_SOCKET};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes scripts can rely on.
pub mod exit {
    // 0 is success: ExitCode::SUCCESS.
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNREACHABLE: u8 = 3;
}

#[derive(Parser, Debug)]
#[command(
    name = "ecrl",
    version,
    about = "A local Amazon ECR and ECS: an OCI registry and task runner on your machine",
    long_about = "A local Amazon ECR and ECS: an OCI registry and task runner on your machine.\n\n\
        ecrl talks to the ecrld daemon over a Unix socket. Start it with 'ecrl daemon start'.\n\n\
        Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 the daemon is unreachable.",
    propagate_version = true
)]
pub struct Cli {
    /// Output format for results on stdout
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table, env = "ECRL_OUTPUT")]
    pub output: OutputFormat,

    /// Print only results: no progress, no notes
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,

    /// The daemon's control socket [default: $XDG_RUNTIME_DIR/ecrl/ecrl.sock]
    #[arg(long, global = true, env = ENV_SOCKET, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start, stop and inspect the ecrld daemon
    #[command(subcommand)]
    Daemon(daemon::DaemonCommand),
    /// Create, list, describe and delete repositories
    #[command(subcommand)]
    Repo(repo::RepoCommand),
    /// List, describe, delete and tag images
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Register, describe, list, deregister and delete ECS task definitions
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// ECS services: a task definition kept running N times, rolled out revision by revision
    #[command(subcommand, long_about = service::LONG_ABOUT)]
    Service(service::ServiceCommand),
    /// Print containers' output by awslogs log group and stream (-f follows)
    #[command(long_about = logs::LONG_ABOUT)]
    Logs(logs::LogsArgs),
    /// Keep secrets (passwords, keys) that tasks' `secrets` put in their environment
    #[command(subcommand, long_about = secret::LONG_ABOUT)]
    Secret(secret::SecretCommand),
    /// Create, list, describe and delete ECS clusters (groups of tasks)
    #[command(subcommand, long_about = cluster::LONG_ABOUT)]
    Cluster(cluster::ClusterCommand),
    /// Users, access keys, identity and registry policies, and decisions explained
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Print a registry password (12 hours) for `docker login -u AWS --password-stdin`
    #[command(long_about = auth::LOGIN_LONG_ABOUT)]
    GetLoginPassword(auth::LoginArgs),
    /// Log in to a remote registry (for mirroring), or list the logins
    #[command(long_about = mirror::LOGIN_LONG_ABOUT)]
    Login(mirror::LoginArgs),
    /// Forget the credentials of a remote registry
    Logout(mirror::LogoutArgs),
    /// Copy images to and from other registries, on demand, on a schedule, or as they are
    /// pushed (replication)
    #[command(subcommand)]
    Mirror(mirror::MirrorCommand),
    /// Show how clients come to trust the HTTPS registry (ecrld's CA)
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Collect garbage now: blobs and links nothing holds (--dry-run counts them)
    #[command(long_about = gc::GC_LONG_ABOUT)]
    Gc(gc::GcArgs),
    /// Check every blob against its digest and the metadata against the disk (--repair)
    #[command(long_about = gc::FSCK_LONG_ABOUT)]
    Fsck(gc::FsckArgs),
    /// Show what ecrld changed (pushes, deletes, tasks, policies, ...); -f follows; --webhooks
    #[command(long_about = events::LONG_ABOUT)]
    Events(events::EventsArgs),
    /// Move the registry onto the backends several ecrld share (S3 and PostgreSQL)
    #[command(subcommand)]
    Storage(storage::StorageCommand),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
    /// Write completion scripts and man pages into a directory (for packagers and the tests)
    #[command(hide = true)]
    GenerateDocs(completions::GenerateDocsArgs),
}

/// What every command gets: the global options and a way to reach the daemon.
pub struct Context {
    pub output: OutputFormat,
    pub quiet: bool,
    socket: Option<PathBuf>,
}

impl Context {
    /// The daemon configuration as this CLI sees it: environment, config file, defaults.
    pub fn daemon_config(&self, options: &DaemonOptions) -> anyhow::Result<DaemonConfig> {
        Ok(config::resolve(options, self.socket.as_deref())?)
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        let config = self.daemon_config(&DaemonOptions::from_env())?;
        Ok(Client::new(config.socket))
    }

    /// A note for people: on stderr, unless `--quiet`.
    pub fn note(&self, text: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Context {
        output: cli.output,
        quiet: cli.quiet,
        socket: cli.socket,
    };
    match cli.command {
        Command::Daemon(cmd) => daemon::run(&ctx, cmd),
        Command::Repo(cmd) => repo::run(&ctx, cmd),
        Command::Image(cmd) => image::run(&ctx, cmd),
        Command::Task(cmd) => block_on(task::run(&ctx, cmd))?,
        Command::Cluster(cmd) => block_on(cluster::run(&ctx, cmd))?,
        Command::Service(cmd) => block_on(service::run(&ctx, cmd))?,
        Command::Secret(cmd) => block_on(secret::run(&ctx, cmd))?,
        Command::Logs(args) => block_on(logs::run(&ctx, args))?,
        Command::Auth(cmd) => block_on(auth::run(&ctx, cmd))?,
        Command::GetLoginPassword(args) => block_on(auth::login_password(&ctx, args))?,
        Command::Login(args) => mirror::login(&ctx, args),
        Command::Logout(args) => mirror::logout(&ctx, args),
        Command::Mirror(cmd) => mirror::run(&ctx, cmd),
        Command::Tls(cmd) => tls::run(&ctx, cmd),
        Command::Gc(args) => gc::run(&ctx, args),
        Command::Fsck(args) => gc::fsck(&ctx, args),
        Command::Events(args) => events::run(&ctx, args),
        Command::Storage(cmd) => storage::run(&ctx, cmd),
        Command::Completions(args) => completions::print(args),
        Command::GenerateDocs(args) => completions::generate_docs(args),
    }
}

/// A runtime for commands that talk to the daemon.
pub fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}

/// An error in how a command was used, found after parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn exit_code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            if e.is_unreachable() {
                return exit::UNREACHABLE;
            }
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return exit::USAGE;
        }
    }
    exit::FAILED
}
