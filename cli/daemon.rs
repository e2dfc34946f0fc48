//! `ecrl daemon start|stop|status|logs`.

use crate::app::{block_on, Context};
use crate::output::{self, human_bytes, human_duration, Table};
use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use ecrl::api::system::{Info, Shutdown, SystemInfo};
use ecrl::api::Empty;
use ecrl::client::{Client, ClientError};
use ecrl::config::{DaemonConfig, DaemonOptions, TlsCertificate};
use serde::Serialize;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum DaemonCommand {
    /// Start ecrld in the background and wait until it answers
    // Boxed: the daemon's options (storage among them) make it far larger than the others.
    Start(Box<StartArgs>),
    /// Stop ecrld and wait until it is gone
    Stop(StopArgs),
    /// Show whether ecrld runs, where it listens, what it stores and the engine it runs tasks on
    /// (exit 3 when it does not run)
    Status,
    /// Print the log of an ecrld started with 'ecrl daemon start'
    Logs(LogsArgs),
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    pub options: DaemonOptions,

    /// Seconds to wait for the daemon to answer
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub wait: u64,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait for the daemon to exit
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub wait: u64,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep printing new lines as they are written
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// Print only the last N lines
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<usize>,
}

pub fn run(ctx: &Context, command: DaemonCommand) -> anyhow::Result<ExitCode> {
    match command {
        DaemonCommand::Start(args) => start(ctx, *args),
        DaemonCommand::Stop(args) => stop(ctx, args),
        DaemonCommand::Status => status(ctx),
        DaemonCommand::Logs(args) => logs(ctx, args),
    }
}

impl Table for SystemInfo {
    fn table(&self) -> String {
        let mut rows = vec![
            ("status", "running".to_string()),
            ("version", self.version.clone()),
            ("pid", self.pid.to_string()),
            ("uptime", human_duration(self.uptime_seconds)),
            (
                "registry",
                self.registry_address
                    .clone()
                    .unwrap_or_else(|| "off (plain HTTP)".into()),
            ),
            ("socket", self.socket.display().to_string()),
            ("data dir", self.data_dir.display().to_string()),
            ("stored", human_bytes(self.bytes_stored)),
        ];
        if let Some(storage) = &self.storage {
            rows.push((
                "storage",
                match &storage.error {
                    None => format!(
                        "{} {} (answers)",
                        storage.backend.as_str(),
                        storage.location
                    ),
                    Some(why) => format!(
                        "{} {} (NOT ANSWERING: {why})",
                        storage.backend.as_str(),
                        storage.location
                    ),
                },
            ));
        }
        if let Some(address) = &self.registry_tls_address {
            rows.insert(5, ("registry (https)", address.clone()));
            if let Some(ca) = &self.tls_ca_path {
                rows.insert(6, ("tls ca", ca.display().to_string()));
            } else if let Some(cert) = &self.tls_cert_path {
                rows.insert(6, ("tls certificate", cert.display().to_string()));
            }
        }
        // The web console, on the registry's listener (plain HTTP when it is on).
        match (&self.registry_address, &self.registry_tls_address) {
            (Some(address), _) => rows.push(("console", format!("http://{address}/ui/"))),
            (None, Some(address)) => rows.push(("console", format!("https://{address}/ui/"))),
            (None, None) => {}
        }
        if let Some(address) = &self.metrics_address {
            rows.push(("metrics", format!("http://{address}/metrics")));
        }
        if let Some(anonymous) = self.registry_anonymous {
            rows.push((
                "registry access",
                match anonymous {
                    ecrl::config::Anonymous::None => "credentials required".to_string(),
                    ecrl::config::Anonymous::Pull => "anyone may pull".to_string(),
                    ecrl::config::Anonymous::All => "open: no authentication".to_string(),
                },
            ));
        }
        if let (Some(backend), Some(location)) = (&self.metadata_backend, &self.metadata_location) {
            let state = match &self.metadata_error {
                None => "answering".to_string(),
                Some(e) => format!("NOT ANSWERING: {e}"),
            };
            rows.push(("metadata", format!("{backend} ({location}), {state}")));
        }
        if let Some(encryption) = self.encryption {
            rows.push(("encryption", encryption.to_string()));
        }
        match (self.key_store, &self.key_file) {
            (Some(store), Some(file)) => rows.push((
                "key store",
                format!("{} ({})", store.as_str(), file.display()),
            )),
            (Some(store), None) => rows.push(("key store", store.as_str().to_string())),
            (None, _) => {}
        }
        if let Some(gc) = &self.last_gc {
            rows.push((
                "last gc",
                format!("{}: {}", gc.started_at, crate::gc::summary(gc)),
            ));
        }
        if let Some(cache) = &self.read_cache {
            rows.push((
                "read cache",
                if cache.budget_bytes == 0 {
                    "off".to_string()
                } else {
                    format!(
                        "{} budget, {} held by {} blob{}, {} prepared",
                        human_bytes(cache.budget_bytes),
                        human_bytes(cache.held_bytes),
                        cache.blobs,
                        if cache.blobs == 1 { "" } else { "s" },
                        human_bytes(cache.prepared_bytes)
                    )
                },
            ));
        }
        if let Some(log) = &self.log_file {
            rows.push(("log", log.display().to_string()));
        }
        match (&self.engine, &self.engine_error) {
            (Some(engine), _) => rows.push(("engine", engine.clone())),
            (None, Some(error)) => rows.push(("engine", format!("unavailable: {error}"))),
            (None, None) => {}
        }
        if let Some(how) = &self.task_limits {
            rows.push(("task limits", how.clone()));
        }
        output::key_values(&rows)
    }
}

fn status(ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let info = block_on(client.call::<Info>(&Empty {}))??;
    output::print(ctx.output, &info.with_printed_times())?;
    Ok(ExitCode::SUCCESS)
}

/// Whether a running daemon listens on `given` (`host:port`; port 0 is any port, and a host
/// name is taken at its word for the port alone).
fn same_address(given: &str, running: Option<&str>) -> bool {
    let Some(running) = running.and_then(|r| r.parse::<std::net::SocketAddr>().ok()) else {
        return false;
    };
    match given.parse::<std::net::SocketAddr>() {
        Ok(given) => {
            given.ip() == running.ip() && (given.port() == 0 || given.port() == running.port())
        }
        Err(_) => given
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .is_some_and(|port| port == 0 || port == running.port()),
    }
}

/// The settings given (as flags or in the environment) that the running daemon does not
/// have, each as `--flag VALUE (running: VALUE)`.
fn differences(options: &DaemonOptions, config: &DaemonConfig, info: &SystemInfo) -> Vec<String> {
    let mut out = Vec::new();
    let running_or = |v: Option<&String>, off: &str| v.cloned().unwrap_or_else(|| off.into());
    if options.data_dir.is_some() && config.data_dir != info.data_dir {
        out.push(format!(
            "--data-dir {} (running: {})",
            config.data_dir.display(),
            info.data_dir.display()
        ));
    }
    if let Some(addr) = &options.registry_addr {
        let differs = match &config.registry_addr {
            None => info.registry_address.is_some(),
            Some(addr) => !same_address(addr, info.registry_address.as_deref()),
        };
        if differs {
            out.push(format!(
                "--registry-addr {addr} (running: {})",
                running_or(info.registry_address.as_ref(), "none")
            ));
        }
    }
    if let Some(tls) = options.tls {
        if tls != info.registry_tls_address.is_some() {
            out.push(format!(
                "--tls={tls} (running: HTTPS {})",
                if tls { "off" } else { "on" }
            ));
        }
    }
    if let (Some(addr), Some(_)) = (&options.tls_addr, &config.tls) {
        if info.registry_tls_address.is_some()
            && !same_address(addr, info.registry_tls_address.as_deref())
        {
            out.push(format!(
                "--tls-addr {addr} (running: {})",
                running_or(info.registry_tls_address.as_ref(), "none")
            ));
        }
    }
    if let Some(tls) = config
        .tls
        .as_ref()
        .filter(|_| info.registry_tls_address.is_some())
    {
        match &tls.certificate {
            TlsCertificate::Files { cert, .. }
                if options.tls_cert.is_some() && info.tls_cert_path.as_ref() != Some(cert) =>
            {
                out.push(format!(
                    "--tls-cert {} (running: {})",
                    cert.display(),
                    info.tls_cert_path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "ecrld's own CA".into())
                ));
            }
            TlsCertificate::Generated { names, .. } if !options.tls_names.is_empty() => {
                let missing: Vec<&String> = names
                    .iter()
                    .filter(|n| !info.tls_names.iter().any(|t| t.eq_ignore_ascii_case(n)))
                    .collect();
                if !missing.is_empty() {
                    out.push(format!(
                        "--tls-names {} (running: {})",
                        options.tls_names.join(","),
                        info.tls_names.join(",")
                    ));
                }
            }
            _ => {}
        }
    }
    if let (Some(given), Some(running)) = (options.anonymous, info.registry_anonymous) {
        if given != running {
            out.push(format!(
                "--anonymous {} (running: {})",
                given.as_str(),
                running.as_str()
            ));
        }
    }
    if let (Some(given), Some(running)) = (options.encryption, info.encryption) {
        if given != running {
            out.push(format!("--encryption {given} (running: {running})"));
        }
    }
    out
}

fn start(ctx: &Context, args: StartArgs) -> anyhow::Result<ExitCode> {
    let config = ctx.daemon_config(&args.options)?;
    let client = Client::new(&config.socket);
    match block_on(client.call::<Info>(&Empty {}))? {
        Ok(info) => {
            let differences = differences(&args.options, &config, &info);
            if !differences.is_empty() {
                bail!(
                    "ecrld is already running (pid {}, socket {}) with other settings than \
                     those given: {}; stop it first with 'ecrl daemon stop', then start it \
                     again with these settings",
                    info.pid,
                    info.socket.display(),
                    differences.join("; ")
                );
            }
            ctx.note(format!(
                "ecrld is already running (pid {}, socket {})",
                info.pid,
                info.socket.display()
            ));
            output::print(ctx.output, &info.with_printed_times())?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) if e.is_unreachable() && !matches!(e, ClientError::Connect { .. }) => {}
        Err(e) => return Err(e.into()),
    }

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let log_path = config.data_dir.join(ecrl::paths::LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening log file {}", log_path.display()))?;
    let log_start = log.metadata()?.len();

    let mut child = daemon_command(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting ecrld (is it installed next to ecrl or on PATH?)")?;
    let pid = child.id();

    let deadline = Instant::now() + Duration::from_secs(args.wait);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "ecrld exited during start-up ({status}); its log says:\n{}",
                log_since(&log_path, log_start)
            );
        }
        if let Ok(info) = block_on(client.call::<Info>(&Empty {}))? {
            if info.pid == pid {
                let mut listening = Vec::new();
                if let Some(address) = &info.registry_address {
                    listening.push(format!("registry on {address}"));
                }
                if let Some(address) = &info.registry_tls_address {
                    listening.push(format!("HTTPS registry on {address}"));
                }
                ctx.note(format!(
                    "ecrld started (pid {pid}): {}, control socket {}",
                    listening.join(", "),
                    info.socket.display()
                ));
                output::print(ctx.output, &info.with_printed_times())?;
                return Ok(ExitCode::SUCCESS);
            }
        }
        if Instant::now() >= deadline {
            // A daemon that cannot answer in time is not left half-started.
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "ecrld did not answer on {} within {}s; its log says:\n{}",
                config.socket.display(),
                args.wait,
                log_since(&log_path, log_start)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ecrld` next to this executable (an installed or built pair), else the one on PATH.
fn daemon_command(config: &DaemonConfig) -> Command {
    let exe = std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name("ecrld"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("ecrld"));
    let mut command = Command::new(exe);
    command
        .arg("--data-dir")
        .arg(&config.data_dir)
        .arg("--socket")
        .arg(&config.socket)
        .arg("--registry-addr")
        .arg(
            config
                .registry_addr
                .as_deref()
                .unwrap_or(ecrl::config::ADDR_NONE),
        )
        .arg("--log-format")
        .arg(match config.log_format {
            ecrl::config::LogFormat::Text => "text",
            ecrl::config::LogFormat::Json => "json",
        })
        .arg("--anonymous")
        .arg(config.anonymous.as_str());
    if let Some(file) = &config.config_file {
        command.arg("--config").arg(file);
    }
    // HTTPS as resolved here, so the daemon serves what this command was told even where its
    // own environment would say otherwise.
    match &config.tls {
        None => {
            command.arg("--tls=false");
        }
        Some(tls) => {
            command.arg("--tls=true").arg("--tls-addr").arg(&tls.addr);
            match &tls.certificate {
                TlsCertificate::Files { cert, key } => {
                    command
                        .arg("--tls-cert")
                        .arg(cert)
                        .arg("--tls-key")
                        .arg(key);
                }
                TlsCertificate::Generated { names, .. } if !names.is_empty() => {
                    command.arg("--tls-names").arg(names.join(","));
                }
                TlsCertificate::Generated { .. } => {}
            }
        }
    }
    if let Some(encryption) = config.encryption {
        command.arg("--encryption").arg(encryption.as_str());
    }
    command.arg("--metrics-addr").arg(
        config
            .metrics_addr
            .as_deref()
            .unwrap_or(ecrl::config::ADDR_NONE),
    );
    command.arg("--task-endpoint").arg(
        config
            .task_endpoint
            .map_or_else(|| ecrl::config::ADDR_NONE.to_string(), |a| a.to_string()),
    );
    match &config.metadata {
        ecrl::config::MetadataConfig::Sqlite => {
            command.arg("--metadata-backend").arg("sqlite");
        }
        ecrl::config::MetadataConfig::Postgres { url, ca } => {
            // The URL may hold a password: through the environment, never the command line
            // (which every local user can read in `ps`).
            command
                .arg("--metadata-backend")
                .arg("postgres")
                .env(ecrl::config::ENV_POSTGRES_URL, &url.0);
            if let Some(ca) = ca {
                command.arg("--postgres-ca").arg(ca);
            }
        }
    }
    // The blob store as resolved here; credentials stay in the environment the daemon
    // inherits (or the config file), never on its command line.
    match &config.storage {
        ecrl::config::StorageConfig::Filesystem => {
            command.arg("--storage-backend").arg("filesystem");
        }
        ecrl::config::StorageConfig::S3(s3) => {
            command
                .arg("--storage-backend")
                .arg("s3")
                .arg("--s3-bucket")
                .arg(&s3.bucket)
                .arg("--s3-prefix")
                .arg(&s3.prefix)
                .arg("--s3-region")
                .arg(&s3.region)
                .arg("--s3-addressing")
                .arg(s3.addressing.as_str());
            if let Some(endpoint) = &s3.endpoint {
                command.arg("--s3-endpoint").arg(endpoint);
            }
        }
    }
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from this terminal's
    // session so closing the terminal or Ctrl-C here does not reach it.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    command
}

/// The last lines the log gained since `offset`.
fn log_since(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.seek(SeekFrom::Start(offset));
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    if tail.is_empty() {
        "(nothing)".into()
    } else {
        tail.join("\n")
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Stopped {
    pid: u32,
    stopped: bool,
}

impl Table for Stopped {
    fn table(&self) -> String {
        format!("ecrld stopped (pid {})\n", self.pid)
    }
}

fn stop(ctx: &Context, args: StopArgs) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let pid = match block_on(client.call::<Shutdown>(&Empty {}))? {
        Ok(response) => response.pid,
        Err(ClientError::Unreachable { socket }) => {
            ctx.note(format!(
                "ecrld is not running (socket: {})",
                socket.display()
            ));
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    };
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    while process_alive(pid) {
        if Instant::now() >= deadline {
            bail!(
                "ecrld (pid {pid}) is still running {}s after it was asked to stop; \
                 'kill {pid}' ends it",
                args.wait
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    output::print(ctx.output, &Stopped { pid, stopped: true })?;
    Ok(ExitCode::SUCCESS)
}

/// Alive means the pid exists and is not a zombie waiting to be reaped.
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may contain spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn logs(ctx: &Context, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let data_dir = match block_on(client.call::<Info>(&Empty {}))? {
        Ok(info) => info.data_dir,
        Err(_) => ctx.daemon_config(&DaemonOptions::from_env())?.data_dir,
    };
    let path = data_dir.join(ecrl::paths::LOG_FILE);
    let mut file = std::fs::File::open(&path).with_context(|| {
        format!(
            "no daemon log at {} (ecrld writes one only when started with 'ecrl daemon start')",
            path.display()
        )
    })?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    match args.tail {
        Some(n) => {
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(n)..] {
                writeln!(out, "{line}")?;
            }
        }
        None => out.write_all(text.as_bytes())?,
    }
    out.flush()?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut position = file.stream_position()?;
    let mut buf = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len < position {
            // Truncated or replaced: start over from the beginning.
            file = std::fs::File::open(&path)?;
            position = 0;
        }
        if len > position {
            file.seek(SeekFrom::Start(position))?;
            buf.clear();
            file.read_to_end(&mut buf)?;
            position += buf.len() as u64;
            out.write_all(&buf)?;
            out.flush()?;
        }
    }
}
