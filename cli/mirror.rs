//! `ecrl login`, `ecrl logout` and `ecrl mirror`: other registries. The daemon does the
//! talking (and keeps the credentials); this renders progress and results.

use crate::app::{block_on, exit, Context, UsageError};
use crate::output::{self, columns, human_bytes, human_duration, key_values, Table};
use crate::transfer::Progress;
use clap::{Args, Subcommand};
use ecrl::api::mirror::*;
use ecrl::api::Empty;
use ecrl::client::{empty_body, ClientError, JsonLines};
use ecrl::mirror::ReplicationConfiguration;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The registry (`registry.example:5000`, `ghcr.io`, `docker.io`)
    #[arg(required_unless_present = "list")]
    pub registry: Option<String>,
    /// The user name [asked for on a terminal]
    #[arg(short = 'u', long = "username", value_name = "USER")]
    pub username: Option<String>,
    /// Read the password from stdin (a terminal asks for it, unechoed)
    #[arg(long)]
    pub password_stdin: bool,
    /// List the registries ecrl holds credentials for (never the secrets)
    #[arg(long, conflicts_with_all = ["registry", "username", "password_stdin"])]
    pub list: bool,
}

pub const LOGIN_LONG_ABOUT: &str = "\
Log in to a remote registry, for 'ecrl mirror sync' and replication.

The daemon checks the credentials against the registry (a wrong password is an error and
nothing is kept), then keeps them: the password in the OS keyring, or, where there is none,
in a file only you can read (~/.config/ecrl/logins.json, 0600).

Credentials you already have for docker are used too, without logging in again:
~/.docker/config.json's auths entries, and its credsStore / credHelpers (ecrl runs
docker-credential-NAME, so docker-credential-ecr-login and friends work). ecrl's own login
wins over docker's.

  echo \"$TOKEN\" | ecrl login ghcr.io -u me --password-stdin
  ecrl login --list";

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry to forget the credentials of
    pub registry: String,
}

#[derive(Subcommand, Debug)]
pub enum MirrorCommand {
    /// Copy images between this registry and others, or between two others
    #[command(long_about = SYNC_LONG_ABOUT)]
    Sync(SyncArgs),
    /// List the scheduled syncs: last run, result, next run
    Jobs,
    /// Remove a scheduled sync, or run it now
    #[command(subcommand)]
    Job(JobCommand),
    /// Rules that send every pushed image to remote registries, and each image's status
    #[command(subcommand)]
    Replication(ReplicationCommand),
    /// Pull-through cache rules: pulls under a prefix answered from an upstream registry
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Pulls of PREFIX/REPO are answered from UPSTREAM/REPO, then kept here
    #[command(long_about = CACHE_LONG_ABOUT)]
    Create {
        /// The repository prefix here (`docker-hub`, `ghcr`)
        prefix: String,
        /// The upstream registry (`docker.io`, `ghcr.io`, `registry.example:5000`)
        upstream: String,
        /// Put before each repository's name upstream
        #[arg(long, value_name = "P")]
        upstream_prefix: Option<String>,
        /// Use the credentials kept for this registry name (default: the upstream's)
        #[arg(long, value_name = "REGISTRY")]
        login: Option<String>,
        /// How long a cached tag is served before it is checked upstream again [default: 24h]
        #[arg(long, value_name = "DURATION")]
        tag_ttl: Option<String>,
        /// Also answer docker's registry-mirrors (Docker Hub names without the prefix)
        #[arg(long)]
        docker_hub_mirror: bool,
    },
    /// List the rules
    List,
    /// Delete a rule (what it cached stays)
    Delete { prefix: String },
    /// Reach a rule's upstream and check its credentials
    Validate { prefix: String },
}

const CACHE_LONG_ABOUT: &str = "\
Make PREFIX a pull-through cache of UPSTREAM, as ECR's CreatePullThroughCacheRule does.

A pull of localhost:5000/PREFIX/REPO:TAG that ecrl cannot answer is answered from
UPSTREAM/[UPSTREAM_PREFIX/]REPO:TAG: the repository is created, the manifest fetched, and each
blob streamed to the client while it is stored, checked against its digest. Later pulls come
from ecrl; a tag is checked upstream at most once per --tag-ttl, a digest never; when the
upstream is down, what is cached is served as it is.

  ecrl login docker.io -u me --password-stdin < hub-token
  ecrl mirror cache create docker-hub docker.io
  docker pull localhost:5000/docker-hub/library/alpine:3.20";

const SYNC_LONG_ABOUT: &str = "\
Copy images between this registry and others, or between two others.

SRC and DEST are a repository of this registry (team/app[:tag|@digest]) or of another one
(registry.example:5000/team/app[:tag|@digest], docker.io/library/busybox). A first component
with a '.' or ':', or 'localhost', names a registry, as docker reads it. The bytes stream
through the daemon, checked against their digests on the way.

A multi-platform image is copied whole, with the same digests; --platform takes only some
platforms (one platform: its own manifest, digest unchanged). Images that refer to a copied
one (signatures, SBOMs) come along unless --no-referrers. What the destination already has
is not sent again: a sync of an unchanged repository sends no blob. Interrupted (Ctrl-C), a
sync run again goes on where it stopped.

With --every, the sync becomes a job the daemon runs on that schedule (it survives restarts):
see 'ecrl mirror jobs'.

Exit codes: 0 every image copied or unchanged, 1 some image failed (the summary says why).";

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Where from: team/app[:tag|@digest] here, or host[:port]/team/app[:tag|@digest]
    pub source: String,
    /// Where to: a repository here or on another registry, optionally with a tag
    pub destination: String,
    /// Every tag of the source repository
    #[arg(long, conflicts_with = "tags")]
    pub all_tags: bool,
    /// The tags of the source repository that match this regular expression (whole tag)
    #[arg(long, value_name = "REGEX")]
    pub tags: Option<String>,
    /// Only this platform of a multi-platform image (os/arch[/variant]; repeatable)
    #[arg(long = "platform", value_name = "OS/ARCH")]
    pub platforms: Vec<String>,
    /// Images copied at once [default: 4]
    #[arg(long, value_name = "N")]
    pub jobs: Option<u32>,
    /// Say what would be copied; copy nothing
    #[arg(long, conflicts_with = "every")]
    pub dry_run: bool,
    /// Make it a job the daemon runs every DURATION (30m, 1h, 1d)
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,
    /// Leave out signatures, SBOMs and other images that refer to the copied ones
    #[arg(long)]
    pub no_referrers: bool,
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Remove a scheduled sync
    Rm { id: String },
    /// Run a scheduled sync now (and show its progress)
    Run { id: String },
}

#[derive(Subcommand, Debug)]
pub enum ReplicationCommand {
    /// Set the replication rules (JSON or YAML, ECR's shape; `-` reads stdin)
    #[command(long_about = REPLICATION_LONG_ABOUT)]
    Set {
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// Show the replication rules
    Get,
    /// Remove every replication rule (copies already queued still run)
    Delete,
    /// Where an image was replicated to, and how that went
    Status {
        /// team/app[:tag|@digest] (`latest` when neither)
        image: String,
    },
}

const REPLICATION_LONG_ABOUT: &str = "\
Set the replication rules: every image pushed afterwards (by any client, by tag or digest)
into a repository a rule matches is sent to each of the rule's destinations, as ECR's
replication does. Deletes are not replicated.

  {\"rules\": [{
      \"destinations\": [{\"registry\": \"registry.example:5000\", \"repositoryPrefix\": \"mirror/\"}],
      \"repositoryFilters\": [{\"filter\": \"team/\", \"filterType\": \"PREFIX_MATCH\"}]
  }]}

A rule without repositoryFilters takes every repository. The document may also be ECR's
request shape ({\"replicationConfiguration\": {...}}), and YAML. 'ecrl mirror replication
status IMAGE' (and 'ecrl image describe') show each destination's status.";

fn show<T: serde::Serialize + Table>(ctx: &Context, value: &T) -> anyhow::Result<ExitCode> {
    output::print(ctx.output, value)?;
    Ok(ExitCode::SUCCESS)
}

/// Reads a line from the terminal, echoed or not.
pub(crate) fn prompt(label: &str, echo: bool) -> anyhow::Result<String> {
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| anyhow::anyhow!("cannot ask for the {label}: no terminal ({e})"))?;
    write!(tty, "{label}: ")?;
    tty.flush()?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tty);
    // SAFETY: termios is plain data, filled by tcgetattr on an open descriptor.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let hide = !echo && unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if hide {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: fd is open; quiet is a valid termios.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let mut byte = [0u8; 1];
    let read = loop {
        match tty.read(&mut byte) {
            Ok(0) => break Ok(()),
            Ok(_) if byte[0] == b'\n' => break Ok(()),
            Ok(_) => line.push(byte[0] as char),
            Err(e) => break Err(e),
        }
    };
    if hide {
        // SAFETY: restores what tcgetattr read.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    read?;
    Ok(line.trim_end_matches('\r').to_string())
}

pub fn login(ctx: &Context, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    if args.list {
        let logins = block_on(client.call::<ListLogins>(&Empty {}))??;
        return show(ctx, &logins);
    }
    let registry = args.registry.unwrap_or_default();
    let terminal = std::io::stdin().is_terminal();
    let username = match args.username {
        Some(u) => u,
        None if terminal && !args.password_stdin => prompt("Username", true)?,
        None => {
            return Err(UsageError(
                "give the user name with -u USER (there is no terminal to ask on)".into(),
            )
            .into())
        }
    };
    let password = if args.password_stdin {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if terminal {
        prompt("Password", false)?
    } else {
        return Err(UsageError(
            "no terminal to ask for the password on: pipe it in with --password-stdin".into(),
        )
        .into());
    };
    if password.is_empty() {
        return Err(UsageError("the password is empty".into()).into());
    }
    let info = block_on(client.call::<Login>(&LoginRequest {
        registry,
        username,
        password,
    }))??;
    ctx.note(format!(
        "logged in to {} as {} (password kept in the {})",
        info.registry,
        info.username,
        if info.store == "keyring" {
            "OS keyring"
        } else {
            "private file ~/.config/ecrl/logins.json"
        }
    ));
    show(ctx, &info)
}

pub fn logout(ctx: &Context, args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let info = block_on(client.call::<Logout>(&RegistryRequest {
        registry: args.registry,
    }))??;
    ctx.note(format!("logged out of {}", info.registry));
    show(ctx, &info)
}

pub fn run(ctx: &Context, command: MirrorCommand) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    match command {
        MirrorCommand::Sync(args) => sync(ctx, &client, args),
        MirrorCommand::Jobs => {
            let jobs = block_on(client.call::<ListJobs>(&Empty {}))??;
            show(ctx, &jobs)
        }
        MirrorCommand::Job(JobCommand::Rm { id }) => {
            let job = block_on(client.call::<DeleteJob>(&JobRequest { id }))??;
            ctx.note(format!("removed mirror job {}", job.id));
            show(ctx, &job)
        }
        MirrorCommand::Job(JobCommand::Run { id }) => {
            let request = JobRequest { id };
            follow(ctx, |c| {
                Box::pin(async move { c.stream::<RunJob>(&request, empty_body()).await })
            })
        }
        MirrorCommand::Replication(ReplicationCommand::Set { file }) => {
            let document = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
            };
            let config =
                block_on(client.call::<PutReplication>(&PutReplicationRequest { document }))??;
            show(ctx, &Rules(config))
        }
        MirrorCommand::Replication(ReplicationCommand::Get) => {
            let config = block_on(client.call::<GetReplication>(&Empty {}))??;
            show(ctx, &Rules(config))
        }
        MirrorCommand::Replication(ReplicationCommand::Delete) => {
            block_on(client.call::<DeleteReplication>(&Empty {}))??;
            ctx.note("removed every replication rule");
            show(ctx, &Rules(ReplicationConfiguration::default()))
        }
        MirrorCommand::Cache(CacheCommand::Create {
            prefix,
            upstream,
            upstream_prefix,
            login,
            tag_ttl,
            docker_hub_mirror,
        }) => {
            let rule = block_on(client.call::<CreateCacheRule>(&CreateCacheRuleRequest {
                ecr_repository_prefix: prefix,
                upstream_registry_url: upstream,
                upstream_repository_prefix: upstream_prefix,
                credential_registry: login,
                tag_ttl,
                docker_hub_mirror,
            }))??;
            show(ctx, &rule)
        }
        MirrorCommand::Cache(CacheCommand::List) => {
            let rules = block_on(client.call::<ListCacheRules>(&Empty {}))??;
            show(ctx, &rules)
        }
        MirrorCommand::Cache(CacheCommand::Delete { prefix }) => {
            let rule = block_on(client.call::<DeleteCacheRule>(&CacheRuleRequest {
                ecr_repository_prefix: prefix,
            }))??;
            ctx.note(format!(
                "deleted the cache rule for {}; what it cached stays",
                rule.ecr_repository_prefix
            ));
            show(ctx, &rule)
        }
        MirrorCommand::Cache(CacheCommand::Validate { prefix }) => {
            let v = block_on(client.call::<ValidateCacheRule>(&CacheRuleRequest {
                ecr_repository_prefix: prefix,
            }))??;
            let valid = v.is_valid;
            output::print(ctx.output, &v)?;
            Ok(if valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::FAILED)
            })
        }
        MirrorCommand::Replication(ReplicationCommand::Status { image }) => {
            let (repository_name, reference) = split_image(&image);
            let status = block_on(client.call::<ReplicationStatus>(&ReplicationStatusRequest {
                repository_name,
                reference,
            }))??;
            show(ctx, &status)
        }
    }
}

/// `team/app:tag` or `team/app@sha256:...` into the repository and the reference.
fn split_image(text: &str) -> (String, Option<String>) {
    if let Some((repo, digest)) = text.split_once('@') {
        return (repo.to_string(), Some(digest.to_string()));
    }
    match text.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), Some(tag.to_string())),
        _ => (text.to_string(), None),
    }
}

fn sync(ctx: &Context, client: &ecrl::client::Client, args: SyncArgs) -> anyhow::Result<ExitCode> {
    let spec = SyncSpec {
        source: args.source,
        destination: args.destination,
        all_tags: args.all_tags,
        tags: args.tags,
        platforms: args.platforms,
        jobs: args.jobs,
        no_referrers: args.no_referrers,
    };
    if let Some(every) = args.every {
        let job = block_on(client.call::<CreateJob>(&CreateJobRequest { spec, every }))??;
        ctx.note(format!(
            "mirror job {} runs every {} (first run now); 'ecrl mirror jobs' shows how it went",
            job.id,
            human_duration(job.every_seconds)
        ));
        return show(ctx, &job);
    }
    let request = SyncRequest {
        spec: serde_json::to_string(&spec)?,
        dry_run: args.dry_run,
    };
    follow(ctx, |c| {
        Box::pin(async move { c.stream::<SyncImages>(&request, empty_body()).await })
    })
}

type Opened<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<hyper::Response<hyper::body::Incoming>, ClientError>,
            > + 'a,
    >,
>;

/// Follows a sync's events to its result: progress on stderr, the summary on stdout.
fn follow(
    ctx: &Context,
    open: impl for<'a> FnOnce(&'a ecrl::client::Client) -> Opened<'a>,
) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let mut progress = Progress::new(ctx.quiet, "copied");
    let outcome = block_on(async {
        tokio::select! {
            result = async {
                let response = open(&client).await?;
                let mut events = JsonLines::new(response.into_body());
                while let Some(event) = events.next::<SyncEvent>().await {
                    match event? {
                        SyncEvent::Done(result) => {
                            progress.finish();
                            return Ok::<_, anyhow::Error>(Some(result));
                        }
                        SyncEvent::Error(e) => return Err(ClientError::Api(e).into()),
                        SyncEvent::ImageStarted { source, destination } => {
                            if progress.is_bars() {
                                progress.println(&format!("{source} -> {destination}"));
                            }
                        }
                        SyncEvent::ImageDone(image) => progress.println(&image_line(&image)),
                        event => {
                            if progress.is_bars() {
                                if let Some(t) = event.as_transfer() {
                                    progress.event(&t);
                                }
                            }
                        }
                    }
                }
                Err(anyhow::anyhow!(
                    "ecrld ended the sync without a result; see 'ecrl daemon logs'"
                ))
            } => result,
            _ = crate::signals::interrupted() => Ok(None),
        }
    })?;
    progress.clear();
    match outcome? {
        Some(result) => {
            output::print(ctx.output, result.as_ref())?;
            Ok(if result.failed > 0 {
                ExitCode::from(exit::FAILED)
            } else {
                ExitCode::SUCCESS
            })
        }
        None => {
            eprintln!(
                "ecrl: {}: the sync stopped; run it again to go on where it stopped",
                crate::signals::name()
            );
            Ok(ExitCode::from(crate::signals::exit_code()))
        }
    }
}

fn image_line(image: &ImageSync) -> String {
    let digest = image
        .image_digest
        .as_deref()
        .map(|d| format!(" {}", &d[..d.len().min(19)]))
        .unwrap_or_default();
    match image.status {
        ImageSyncStatus::Copied => format!(
            "copied     {} -> {}{digest} ({} blobs, {}; {} there already{})",
            image.source,
            image.destination,
            image.blobs_copied,
            human_bytes(image.bytes_copied),
            image.blobs_existing,
            if image.referrers_copied > 0 {
                format!("; {} referrers", image.referrers_copied)
            } else {
                String::new()
            }
        ),
        ImageSyncStatus::Unchanged => {
            format!(
                "unchanged  {} -> {}{digest}",
                image.source, image.destination
            )
        }
        ImageSyncStatus::WouldCopy => {
            format!(
                "would copy {} -> {}{digest}",
                image.source, image.destination
            )
        }
        ImageSyncStatus::Failed => format!(
            "failed     {} -> {}: {}",
            image.source,
            image.destination,
            image.reason.as_deref().unwrap_or_default()
        ),
    }
}

fn status_word(s: ImageSyncStatus) -> &'static str {
    match s {
        ImageSyncStatus::Copied => "COPIED",
        ImageSyncStatus::Unchanged => "UNCHANGED",
        ImageSyncStatus::WouldCopy => "WOULD_COPY",
        ImageSyncStatus::Failed => "FAILED",
    }
}

impl Table for SyncResult {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .images
            .iter()
            .map(|i| {
                vec![
                    status_word(i.status).to_string(),
                    i.source.clone(),
                    i.destination.clone(),
                    i.image_digest.clone().unwrap_or_else(|| "-".into()),
                    match i.status {
                        ImageSyncStatus::Failed => i.reason.clone().unwrap_or_default(),
                        _ => format!(
                            "{} blobs sent ({}), {} there",
                            i.blobs_copied,
                            human_bytes(i.bytes_copied),
                            i.blobs_existing
                        ),
                    },
                ]
            })
            .collect();
        let mut out = columns(
            &["STATUS", "SOURCE", "DESTINATION", "DIGEST", "DETAIL"],
            &rows,
        );
        let copied = if self.dry_run { "would copy" } else { "copied" };
        out.push_str(&format!(
            "{} {copied}, {} unchanged, {} failed\n",
            self.copied, self.unchanged, self.failed
        ));
        out
    }
}

impl Table for SyncJob {
    fn table(&self) -> String {
        let mut rows = vec![
            ("id", self.id.clone()),
            ("source", self.spec.source.clone()),
            ("destination", self.spec.destination.clone()),
            ("every", human_duration(self.every_seconds)),
        ];
        if let Some(at) = &self.last_run_at {
            rows.push(("last run", at.clone()));
        }
        if let Some(r) = &self.last_result {
            rows.push(("last result", r.clone()));
        }
        if let Some(s) = &self.last_summary {
            rows.push(("summary", s.clone()));
        }
        rows.push(("next run", self.next_run_at.clone()));
        key_values(&rows)
    }
}

impl Table for Jobs {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .jobs
            .iter()
            .map(|j| {
                vec![
                    j.id.clone(),
                    j.spec.source.clone(),
                    j.spec.destination.clone(),
                    human_duration(j.every_seconds),
                    j.last_run_at.clone().unwrap_or_else(|| "-".into()),
                    j.last_result.clone().unwrap_or_else(|| "-".into()),
                    j.next_run_at.clone(),
                ]
            })
            .collect();
        columns(
            &[
                "ID",
                "SOURCE",
                "DESTINATION",
                "EVERY",
                "LAST RUN",
                "RESULT",
                "NEXT RUN",
            ],
            &rows,
        )
    }
}

impl Table for CacheRule {
    fn table(&self) -> String {
        let mut rows = vec![
            ("prefix", self.ecr_repository_prefix.clone()),
            ("upstream", self.upstream_registry_url.clone()),
        ];
        if let Some(p) = &self.upstream_repository_prefix {
            rows.push(("upstream prefix", p.clone()));
        }
        if let Some(l) = &self.credential_registry {
            rows.push(("credentials of", l.clone()));
        }
        rows.push(("tag ttl", human_duration(self.tag_ttl_seconds)));
        if self.docker_hub_mirror {
            rows.push(("docker hub mirror", "yes".into()));
        }
        rows.push(("created", self.created_at.clone()));
        key_values(&rows)
    }
}

impl Table for CacheRules {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .pull_through_cache_rules
            .iter()
            .map(|r| {
                vec![
                    r.ecr_repository_prefix.clone(),
                    match &r.upstream_repository_prefix {
                        Some(p) => format!("{}/{p}", r.upstream_registry_url),
                        None => r.upstream_registry_url.clone(),
                    },
                    human_duration(r.tag_ttl_seconds),
                    r.created_at.clone(),
                ]
            })
            .collect();
        columns(&["PREFIX", "UPSTREAM", "TAG TTL", "CREATED"], &rows)
    }
}

impl Table for CacheRuleValidation {
    fn table(&self) -> String {
        match &self.failure {
            None => format!(
                "{} -> {}: valid\n",
                self.ecr_repository_prefix, self.upstream_registry_url
            ),
            Some(why) => format!(
                "{} -> {}: NOT valid: {why}\n",
                self.ecr_repository_prefix, self.upstream_registry_url
            ),
        }
    }
}

impl Table for LoginInfo {
    fn table(&self) -> String {
        key_values(&[
            ("registry", self.registry.clone()),
            ("user", self.username.clone()),
            ("store", self.store.clone()),
        ])
    }
}

impl Table for Logins {
    fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .logins
            .iter()
            .map(|l| vec![l.registry.clone(), l.username.clone(), l.store.clone()])
            .collect();
        columns(&["REGISTRY", "USER", "STORE"], &rows)
    }
}

/// The rules, shown as ECR shows them (JSON/YAML) or one line per destination.
#[derive(serde::Serialize)]
#[serde(transparent)]
struct Rules(ReplicationConfiguration);

impl Table for Rules {
    fn table(&self) -> String {
        if self.0.rules.is_empty() {
            return "no replication rules\n".into();
        }
        let mut rows = Vec::new();
        for (i, rule) in self.0.rules.iter().enumerate() {
            let filters = if rule.repository_filters.is_empty() {
                "(every repository)".to_string()
            } else {
                rule.repository_filters
                    .iter()
                    .map(|f| format!("{}*", f.filter))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            for d in &rule.destinations {
                rows.push(vec![
                    i.to_string(),
                    filters.clone(),
                    d.registry.clone(),
                    d.repository_prefix.clone().unwrap_or_default(),
                ]);
            }
        }
        columns(&["RULE", "REPOSITORIES", "DESTINATION", "PREFIX"], &rows)
    }
}

impl Table for ImageReplicationStatus {
    fn table(&self) -> String {
        let mut out = format!(
            "{}@{}\n",
            self.repository_name,
            self.image_id.image_digest.as_deref().unwrap_or_default()
        );
        if self.replication_statuses.is_empty() {
            out.push_str("not replicated (no rule matched when it was pushed)\n");
            return out;
        }
        out.push_str(&replication_rows(&self.replication_statuses));
        out
    }
}

/// The destinations of an image as table rows (also `ecrl image describe`'s).
fn replication_rows(statuses: &[DestinationStatus]) -> String {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            vec![
                s.registry.clone(),
                s.repository_name.clone(),
                s.status.clone(),
                s.attempts.to_string(),
                match (&s.failure_code, &s.failure_reason) {
                    (Some(c), Some(r)) => format!("{c}: {r}"),
                    (Some(c), None) => c.clone(),
                    _ => String::new(),
                },
            ]
        })
        .collect();
    columns(
        &["REGISTRY", "REPOSITORY", "STATUS", "ATTEMPTS", "FAILURE"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_into_repository_and_reference() {
        assert_eq!(split_image("team/app"), ("team/app".into(), None));
        assert_eq!(
            split_image("team/app:v1"),
            ("team/app".into(), Some("v1".into()))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            split_image(&format!("team/app@{d}")),
            ("team/app".into(), Some(d.clone()))
        );
    }
}
