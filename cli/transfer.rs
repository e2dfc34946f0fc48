//! `ecrl repo push|pull`: moving whole images between the daemon and archives, OCI layouts
//! and the local Docker engine.
//!
//! The CLI only moves bytes: a push streams the archive (or a tar of an OCI layout) as the
//! request body and renders the daemon's events; a pull writes the response body to a file,
//! stdout or an unpacked directory. Formats are the daemon's business. Blocking I/O (files,
//! stdin, stdout, tar) runs on plain threads joined to the async side by bounded channels,
//! so a slow disk or pipe never stalls the connection and Ctrl-C is answered at once.

use crate::app::{block_on, Context, UsageError};
use crate::output::{self, human_bytes, Table};
use anyhow::Context as _;
use clap::{Args, ValueEnum};
use ecrl::api::transfer::{
    BlobStatus, LoadImage, PullImage, PullRequest, PushImage, PushRequest, TransferEvent,
    TransferResult, CONTENT_SIZE_HEADER,
};
use ecrl::api::ErrorCode;
use ecrl::client::{empty_body, ClientError, JsonLines};
use ecrl::names::{ImageRef, Reference};
use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// How much the body threads hand over at a time, and how many such chunks may wait.
const CHUNK: usize = 256 * 1024;
const CHANNEL_DEPTH: usize = 16;

pub const PUSH_LONG_ABOUT: &str = "\
Push an image into a repository of the local registry.

SOURCE is one of:
  FILE, docker-archive:FILE   an archive as 'docker save' writes it (plain or gzip)
  oci-archive:FILE            an OCI image layout in a tar
  -                           either of the above on stdin
  DIR, oci:DIR                an OCI image layout directory (sent as an OCI archive)
  docker://NAME[:TAG]         an image in the local Docker engine (docker-daemon:NAME too;
                              NAME alone is NAME:latest, as in docker)

The daemon detects the archive's format from its content. Without :TAG the image keeps the
archive's own tag when it has exactly one.

Examples:
  docker save app | ecrl repo push - team/app:1
  ecrl repo push ./app.tar.gz team/app:1
  ecrl repo push oci:./layout team/app:1
  ecrl repo push docker://app:latest team/app:1

Exit codes: 0 pushed, 1 the push failed (nothing was tagged), 2 usage error, 3 the daemon is
unreachable, 130 interrupted (Ctrl-C; 143 for SIGTERM; nothing was tagged).";

pub const PULL_LONG_ABOUT: &str = "\
Pull an image out of the local registry: into an archive, an OCI layout directory, or the
local Docker engine.

The archive goes to FILE with -o FILE, or to stdout when stdout is not a terminal. A file is
written to FILE.partial and renamed when complete, so FILE is never half-written; an
interrupted or failed pull leaves nothing behind.

Examples:
  ecrl repo pull team/app:1 -o app.tar
  ecrl repo pull team/app:1 | docker load
  ecrl repo pull team/app@sha256:... --format oci -o ./layout
  ecrl repo pull team/app:1 --platform linux/arm64 -o app-arm64.tar
  ecrl repo pull team/app:1 --to docker

Exit codes: 0 pulled, 1 the pull failed, 2 usage error, 3 the daemon is unreachable,
130 interrupted (Ctrl-C; 143 for SIGTERM).";

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The image to push: FILE, -, oci:DIR, oci-archive:FILE, docker-archive:FILE or
    /// docker://NAME[:TAG]
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// Where to push it: REPO or REPO:TAG, e.g. team/app:1
    #[arg(value_name = "REPO[:TAG]")]
    pub image: String,
    /// How layers that arrive uncompressed are stored [daemon default: gzip]
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    Gzip,
    None,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The image to pull: REPO, REPO:TAG or REPO@DIGEST (REPO alone means :latest)
    #[arg(value_name = "REPO[:TAG|@DIGEST]")]
    pub image: String,
    /// Write the archive to FILE (a directory with --format oci); '-' is stdout
    #[arg(long = "output-file", short = 'o', value_name = "FILE|DIR")]
    pub output_file: Option<PathBuf>,
    /// What to write
    #[arg(long, value_enum, default_value_t = PullFormat::DockerArchive, conflicts_with = "to")]
    pub format: PullFormat,
    /// Which image of a multi-platform index, e.g. linux/arm64
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<String>,
    /// Load the image into a local engine instead of writing an archive
    #[arg(long, value_enum, conflicts_with = "output_file")]
    pub to: Option<PullTarget>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullFormat {
    /// A tar as 'docker save' writes it ('docker load' reads it)
    DockerArchive,
    /// An OCI image layout unpacked into a directory (needs -o DIR)
    Oci,
    /// An OCI image layout in a tar
    OciArchive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullTarget {
    /// The Docker engine the daemon is configured with
    Docker,
}

// ---------------------------------------------------------------------------------------------
// Sources and destinations: pure decisions, tested below.

/// Where a push reads its image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An archive (docker or OCI, plain or gzip) on stdin.
    Stdin,
    /// An archive file.
    Archive(PathBuf),
    /// An OCI image layout directory, tarred on the fly.
    OciDir(PathBuf),
    /// An image in the local Docker engine, exported by the daemon.
    Docker(String),
}

/// Parses SOURCE; `is_dir` tells a plain path naming a directory (an OCI layout) from a file.
pub fn parse_source(text: &str, is_dir: impl Fn(&Path) -> bool) -> Result<Source, String> {
    let nonempty = |rest: &str, what: &str| {
        if rest.is_empty() {
            Err(format!("{text:?}: expected {what} after the ':'"))
        } else {
            Ok(rest.to_string())
        }
    };
    if let Some(rest) = text
        .strip_prefix("docker://")
        .or_else(|| text.strip_prefix("docker-daemon:"))
    {
        return Ok(Source::Docker(nonempty(rest, "an image name")?));
    }
    if let Some(rest) = text.strip_prefix("oci:") {
        return Ok(Source::OciDir(nonempty(rest, "a directory")?.into()));
    }
    if let Some(rest) = text
        .strip_prefix("oci-archive:")
        .or_else(|| text.strip_prefix("docker-archive:"))
    {
        let rest = nonempty(rest, "a file")?;
        return Ok(if rest == "-" {
            Source::Stdin
        } else {
            Source::Archive(rest.into())
        });
    }
    if text.is_empty() {
        return Err("SOURCE is empty: give a file, '-', oci:DIR or docker://NAME".into());
    }
    if text == "-" {
        return Ok(Source::Stdin);
    }
    let path = PathBuf::from(text);
    Ok(if is_dir(&path) {
        Source::OciDir(path)
    } else {
        Source::Archive(path)
    })
}

/// Where a pull writes the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
    Dir(PathBuf),
}

/// Decides where a pull goes. Archive bytes never go to a terminal: people get a usage error
/// that tells them what to do instead.
pub fn destination(
    format: PullFormat,
    output_file: Option<&Path>,
    stdout_is_tty: bool,
) -> Result<Destination, String> {
    let output_file = output_file.filter(|p| *p != Path::new("-"));
    if format == PullFormat::Oci {
        return match output_file {
            Some(dir) => Ok(Destination::Dir(dir.to_path_buf())),
            None => Err("--format oci unpacks into a directory: give it with -o DIR".into()),
        };
    }
    match output_file {
        Some(file) => Ok(Destination::File(file.to_path_buf())),
        None if stdout_is_tty => Err("refusing to write an image archive to a terminal: \
             use -o FILE, or pipe the output (ecrl repo pull REPO:TAG | docker load)"
            .into()),
        None => Ok(Destination::Stdout),
    }
}

/// `FILE.partial` next to FILE.
fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".partial");
    PathBuf::from(name)
}

/// A blob's name as a short label: the first 12 hex digits of a digest found in it, or the
/// name itself (docker-archive layer paths and OCI blob paths both carry the digest).
fn short_name(name: &str) -> String {
    let name = name.strip_prefix("sha256:").unwrap_or(name);
    let is_hex = |s: &str| s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex(name) {
        return name[..12].to_string();
    }
    if let Some(part) = name.split(['/', '.', ':']).find(|s| is_hex(s)) {
        return part[..12].to_string();
    }
    if name.chars().count() > 24 {
        let tail: String = name.chars().rev().take(23).collect();
        return format!("…{}", tail.chars().rev().collect::<String>());
    }
    name.to_string()
}

fn parse_image(ctx: &Context, text: &str) -> anyhow::Result<ImageRef> {
    block_on(crate::refs::image_ref(&ctx.client()?, text))?
}

// ---------------------------------------------------------------------------------------------
// Push.

pub fn push(ctx: &Context, args: PushArgs) -> anyhow::Result<ExitCode> {
    let image = parse_image(ctx, &args.image)?;
    let image_tag = match &image.reference {
        None => None,
        Some(Reference::Tag(tag)) => Some(tag.to_string()),
        Some(Reference::Digest(_)) => {
            return Err(UsageError(format!(
                "{:?}: a push names a tag, not a digest (the digest is the image's own); \
                 use {}:TAG or {}",
                args.image, image.repository, image.repository
            ))
            .into())
        }
    };
    let source = parse_source(&args.source, |p| p.is_dir()).map_err(UsageError)?;
    let mut request = PushRequest {
        repository_name: image.repository.to_string(),
        image_tag,
        compression: args.compression.map(|c| {
            match c {
                Compression::Gzip => "gzip",
                Compression::None => "none",
            }
            .to_string()
        }),
        docker_image: None,
        source_path: None,
        source_name: Some(source_label(&source)),
    };

    // A file on this machine: the daemon reads it itself when it can, which lets it skip
    // layers it already holds instead of receiving them.
    if let Some(shared) = shareable_path(&source)? {
        let by_path = PushRequest {
            source_path: Some(shared.to_string_lossy().into_owned()),
            ..request.clone()
        };
        let client = ctx.client()?;
        let mut progress = Progress::new(ctx.quiet, "pushed");
        let outcome = block_on(async {
            tokio::select! {
                result = async {
                    let response = client.stream::<PushImage>(&by_path, empty_body()).await?;
                    follow_events(JsonLines::new(response.into_body()), &mut progress).await
                } => Some(result),
                _ = crate::signals::interrupted() => None,
            }
        })?;
        let unreadable = matches!(
            &outcome,
            Some(Err(e)) if e.downcast_ref::<ClientError>().is_some_and(|c| matches!(
                c, ClientError::Api(api) if api.code == ErrorCode::SourceUnreadable
            ))
        );
        if !unreadable {
            progress.clear();
            return finish_push(ctx, outcome, None);
        }
    }

    // Open the source before talking to the daemon, so a typo fails fast and clearly.
    let producer: Option<(Producer, Option<u64>)> = match &source {
        Source::Docker(name) => {
            request.docker_image = Some(name.clone());
            None
        }
        Source::Stdin => {
            if io::stdin().is_terminal() {
                return Err(UsageError(
                    "SOURCE is '-' but stdin is a terminal: pipe an archive into ecrl \
                     (docker save app | ecrl repo push - team/app:1) or give a file"
                        .into(),
                )
                .into());
            }
            let producer: Producer = Box::new(|mut w| {
                io::copy(&mut io::stdin().lock(), &mut w)?;
                w.finish()
            });
            Some((producer, None))
        }
        Source::Archive(path) => {
            let mut file = std::fs::File::open(path).map_err(|e| open_error(path, e))?;
            let size = file.metadata().ok().map(|m| m.len());
            let producer: Producer = Box::new(move |mut w| {
                io::copy(&mut file, &mut w)?;
                w.finish()
            });
            Some((producer, size))
        }
        Source::OciDir(dir) => {
            let files = oci_layout_files(dir)?;
            let size = Some(tar_size(&files));
            let dir = dir.clone();
            let producer: Producer = Box::new(move |w| tar_layout(&dir, &files, w));
            Some((producer, size))
        }
    };

    let client = ctx.client()?;
    let mut progress = Progress::new(ctx.quiet, "pushed");
    let read_error: Arc<Mutex<Option<String>>> = Arc::default();
    let body = match producer {
        None => empty_body(),
        Some((producer, size)) => {
            let overall = progress.overall(size);
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            let slot = read_error.clone();
            let label = source_label(&source);
            std::thread::spawn(move || {
                let writer = ChannelWriter::new(tx.clone());
                if let Err(e) = producer(writer) {
                    let message = format!("reading {label}: {e}");
                    if let Ok(mut slot) = slot.lock() {
                        *slot = Some(message.clone());
                    }
                    // The body ends in an error: hyper aborts the request, the daemon sees a
                    // truncated body and tags nothing.
                    let _ = tx.blocking_send(Err(io::Error::other(message)));
                }
            });
            ChannelBody { rx, overall }.boxed()
        }
    };

    let outcome = block_on(async {
        tokio::select! {
            result = async {
                let response = client.stream::<PushImage>(&request, body).await?;
                follow_events(JsonLines::new(response.into_body()), &mut progress).await
            } => Some(result),
            _ = crate::signals::interrupted() => None,
        }
    })?;
    progress.clear();
    let read_error = read_error.lock().ok().and_then(|mut s| s.take());
    finish_push(ctx, outcome, read_error)
}

/// Prints a push's result, or says why it failed (`read_error`: reading the source failed,
/// which is the cause of whatever the connection says).
/// Whether a blob line has said "pushed" (or the verb of the transfer): a push that fails
/// after that says the daemon kept none of it.
static SAID_PUSHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn finish_push(
    ctx: &Context,
    outcome: Option<anyhow::Result<TransferResult>>,
    read_error: Option<String>,
) -> anyhow::Result<ExitCode> {
    match outcome {
        None => {
            eprintln!("error: push cancelled; nothing was tagged");
            Ok(ExitCode::from(crate::signals::exit_code()))
        }
        Some(Ok(result)) => {
            output::print(ctx.output, &result)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Err(e)) => match read_error {
            Some(message) => Err(anyhow::anyhow!("{message}; nothing was tagged")),
            None => {
                // The blob lines above said "pushed": the daemon undid that.
                let refused = e
                    .downcast_ref::<ClientError>()
                    .is_some_and(|c| matches!(c, ClientError::Api(_)));
                if refused && SAID_PUSHED.load(std::sync::atomic::Ordering::Relaxed) {
                    ctx.note("note: nothing was tagged, and no blob this push sent was kept");
                }
                Err(e)
            }
        },
    }
}

/// The path the daemon may open itself for an archive file: canonical (a `/proc/self/...` or
/// `/dev/fd/...` path means something else in the daemon) and a regular file (a pipe from
/// `<(docker save ...)` must be streamed). `None`: stream the bytes.
fn shareable_path(source: &Source) -> anyhow::Result<Option<PathBuf>> {
    let Source::Archive(path) = source else {
        return Ok(None);
    };
    // stat, not open: opening a FIFO would consume its writer.
    let meta = std::fs::metadata(path).map_err(|e| open_error(path, e))?;
    if !meta.is_file() {
        return Ok(None);
    }
    let Ok(real) = std::fs::canonicalize(path) else {
        return Ok(None);
    };
    Ok((!real.starts_with("/proc") && !real.starts_with("/dev")).then_some(real))
}

/// Why a source cannot be opened: a missing one says so plainly (exit 1, as every failed
/// operation on a file that is not there).
fn open_error(path: &Path, e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::NotFound {
        anyhow::anyhow!("{} does not exist", path.display())
    } else {
        anyhow::anyhow!("cannot open {}: {e}", path.display())
    }
}

fn source_label(source: &Source) -> String {
    match source {
        Source::Stdin => "stdin".into(),
        Source::Archive(p) | Source::OciDir(p) => p.display().to_string(),
        Source::Docker(name) => format!("docker://{name}"),
    }
}

/// Reads a transfer's events until its result.
async fn follow_events(
    mut events: JsonLines,
    progress: &mut Progress,
) -> anyhow::Result<TransferResult> {
    while let Some(event) = events.next::<TransferEvent>().await {
        match event? {
            TransferEvent::Done(result) => {
                progress.finish();
                return Ok(result);
            }
            TransferEvent::Error(e) => return Err(ClientError::Api(e).into()),
            event => progress.event(&event),
        }
    }
    Err(anyhow::anyhow!(
        "ecrld ended the transfer without a result; see 'ecrl daemon logs'"
    ))
}

/// Writes a producer's bytes into the body.
type Producer = Box<dyn FnOnce(ChannelWriter) -> io::Result<()> + Send>;

/// A blocking writer whose chunks go to an async channel. Dropped without
/// [`ChannelWriter::finish`] it sends nothing more; the body still ends, so producers must
/// report their errors themselves (they do, by returning them).
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> Self {
        ChannelWriter {
            tx,
            buffer: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK),
        ));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            io::Error::new(io::ErrorKind::BrokenPipe, "the connection to ecrld closed")
        })
    }

    fn finish(mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&data[..n]);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A request body fed by a [`ChannelWriter`]; counts what it hands to the connection.
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    overall: Option<ProgressBar>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(bar) = &self.overall {
                    bar.inc(chunk.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                // All sent: stop the clock, so the rate shown is the transfer's.
                if let Some(bar) = &self.overall {
                    bar.abandon();
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The files of an OCI layout, relative to it: `oci-layout` and `index.json` first (a reader
/// of the stream learns early what it holds), then the rest in a stable order.
fn oci_layout_files(dir: &Path) -> anyhow::Result<Vec<(PathBuf, u64)>> {
    let meta = std::fs::metadata(dir).map_err(|e| open_error(dir, e))?;
    if !meta.is_dir() {
        anyhow::bail!(
            "{} is not a directory: oci:DIR takes an OCI image layout directory \
             (an OCI layout in a tar is oci-archive:FILE)",
            dir.display()
        );
    }
    if !dir.join("oci-layout").is_file() {
        anyhow::bail!(
            "{} is not an OCI image layout (it has no oci-layout file)",
            dir.display()
        );
    }
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = std::fs::read_dir(dir.join(&relative))
            .with_context(|| format!("reading {}", dir.join(&relative).display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = relative.join(entry.file_name());
            // Follow symlinks: a layout may link blobs from a shared store.
            let meta = std::fs::metadata(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?;
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                files.push((path, meta.len()));
            }
        }
    }
    let rank = |p: &Path| match p.to_str() {
        Some("oci-layout") => 0,
        Some("index.json") => 1,
        _ => 2,
    };
    files.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    Ok(files)
}

/// The size of the tar [`tar_layout`] writes, for the progress bar: a header and padded
/// content per file, two zero blocks at the end (long names add a little; the bar copes).
fn tar_size(files: &[(PathBuf, u64)]) -> u64 {
    files
        .iter()
        .map(|(_, size)| 512 + size.div_ceil(512) * 512)
        .sum::<u64>()
        + 1024
}

/// Tars an OCI layout with paths relative to it (`oci-layout`, `index.json`, `blobs/...`).
fn tar_layout(dir: &Path, files: &[(PathBuf, u64)], writer: ChannelWriter) -> io::Result<()> {
    let mut builder = tar::Builder::new(writer);
    builder.mode(tar::HeaderMode::Deterministic);
    for (relative, _) in files {
        let mut file = std::fs::File::open(dir.join(relative))?;
        builder.append_file(relative, &mut file)?;
    }
    builder.into_inner()?.finish()
}

// ---------------------------------------------------------------------------------------------
// Pull.

/// What a pull into a file or directory reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullResult {
    pub repository_name: String,
    pub reference: String,
    pub format: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<PathBuf>,
    pub bytes_written: u64,
}

impl Table for PullResult {
    fn table(&self) -> String {
        let mut rows = vec![
            ("repository", self.repository_name.clone()),
            ("reference", self.reference.clone()),
            ("format", self.format.clone()),
        ];
        if let Some(file) = &self.file {
            rows.push(("file", file.display().to_string()));
        }
        if let Some(dir) = &self.directory {
            rows.push(("directory", dir.display().to_string()));
        }
        rows.push(("written", human_bytes(self.bytes_written)));
        output::key_values(&rows)
    }
}

pub fn pull(ctx: &Context, args: PullArgs) -> anyhow::Result<ExitCode> {
    let image = parse_image(ctx, &args.image)?;
    let reference = image.reference.as_ref().map(ToString::to_string);
    if args.to == Some(PullTarget::Docker) {
        return load(ctx, &image, reference, args.platform);
    }
    let destination = destination(
        args.format,
        args.output_file.as_deref(),
        io::stdout().is_terminal(),
    )
    .map_err(UsageError)?;
    let format = match args.format {
        PullFormat::DockerArchive => "docker-archive",
        PullFormat::Oci | PullFormat::OciArchive => "oci-archive",
    };
    let request = PullRequest {
        repository_name: image.repository.to_string(),
        reference: reference.clone(),
        format: Some(format.to_string()),
        platform: args.platform,
    };

    let client = ctx.client()?;
    let mut sink = Sink::open(&destination)?;
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let writer = sink.spawn(rx);
    let mut bar = None;
    let quiet = ctx.quiet;

    let outcome = block_on(async {
        tokio::select! {
            result = async {
                let response = client.stream::<PullImage>(&request, empty_body()).await?;
                let total = response
                    .headers()
                    .get(CONTENT_SIZE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                bar = (!quiet && io::stderr().is_terminal()).then(|| pull_bar(total));
                receive(response.into_body(), tx, bar.as_ref(), total).await
            } => Some(result),
            _ = crate::signals::interrupted() => None,
        }
    })?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }

    // The sender is gone with the future: the writer thread ends, cleanly only when the
    // stream ended in full.
    let bytes = match outcome {
        None => {
            sink.abandon(writer);
            eprintln!("error: pull cancelled");
            return Ok(ExitCode::from(crate::signals::exit_code()));
        }
        Some(Err(e)) if e.is::<WriterGone>() => return Err(sink.fail(writer)),
        Some(Err(e)) => {
            sink.abandon(writer);
            return Err(e);
        }
        Some(Ok(bytes)) => bytes,
    };
    sink.commit(writer)?;

    let reference = reference.unwrap_or_else(|| "latest".into());
    match destination {
        Destination::Stdout => {}
        Destination::File(file) => output::print(
            ctx.output,
            &PullResult {
                repository_name: request.repository_name,
                reference,
                format: format.into(),
                file: Some(file),
                directory: None,
                bytes_written: bytes,
            },
        )?,
        Destination::Dir(dir) => output::print(
            ctx.output,
            &PullResult {
                repository_name: request.repository_name,
                reference,
                format: "oci".into(),
                file: None,
                directory: Some(dir),
                bytes_written: bytes,
            },
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

fn pull_bar(total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(bytes_style(
            "{prefix:>8} [{bar:40.cyan/blue}] {binary_bytes}/{binary_total_bytes} \
             {binary_bytes_per_sec} eta {eta}",
        )),
        None => ProgressBar::new_spinner().with_style(bytes_style(
            "{prefix:>8} {spinner} {binary_bytes} {binary_bytes_per_sec}",
        )),
    };
    bar.set_prefix("pulling");
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Hands the response body to the writer thread; returns the bytes received.
async fn receive(
    mut body: hyper::body::Incoming,
    tx: mpsc::Sender<Bytes>,
    bar: Option<&ProgressBar>,
    total: Option<u64>,
) -> anyhow::Result<u64> {
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            anyhow::anyhow!(
                "the archive stream from ecrld broke off after {}: {e}; see 'ecrl daemon logs'",
                human_bytes(received)
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        received += data.len() as u64;
        if let Some(bar) = bar {
            if bar.length().is_some_and(|len| received > len) {
                bar.set_length(received);
            }
            bar.set_position(received);
        }
        if tx.send(data).await.is_err() {
            // The writer stopped early; its own error says why.
            anyhow::bail!(WriterGone);
        }
    }
    // The content size counts the blobs; the archive around them can only be larger.
    if let Some(total) = total {
        if received < total {
            anyhow::bail!(
                "the archive from ecrld ended after {} of at least {}; see 'ecrl daemon logs'",
                human_bytes(received),
                human_bytes(total)
            );
        }
    }
    // An empty chunk tells the writer the stream is complete.
    tx.send(Bytes::new())
        .await
        .map_err(|_| anyhow::anyhow!(WriterGone))?;
    Ok(received)
}

/// The writer thread ended before the stream; the thread's own error is the one to report.
#[derive(Debug, thiserror::Error)]
#[error("the writer stopped")]
struct WriterGone;

/// Where a pull's bytes land, and how to undo it.
enum Sink {
    Stdout,
    File {
        file: PathBuf,
        partial: PathBuf,
        handle: Option<std::fs::File>,
    },
    Dir {
        dir: PathBuf,
        created: bool,
    },
}

type WriterThread = std::thread::JoinHandle<io::Result<()>>;

impl Sink {
    /// Prepares the destination before anything is received, so a bad path fails fast.
    fn open(destination: &Destination) -> anyhow::Result<Sink> {
        Ok(match destination {
            Destination::Stdout => Sink::Stdout,
            Destination::File(file) => {
                if file.is_dir() {
                    return Err(UsageError(format!(
                        "{} is a directory; give a file name (or --format oci to unpack into it)",
                        file.display()
                    ))
                    .into());
                }
                // FILE.partial is ecrl's business: errors name the user's FILE.
                let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
                if let Some(dir) = parent.filter(|d| !d.exists()) {
                    anyhow::bail!(
                        "cannot write {}: the directory {} does not exist",
                        file.display(),
                        dir.display()
                    );
                }
                let partial = partial_path(file);
                let handle = std::fs::File::create(&partial)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", file.display()))?;
                Sink::File {
                    file: file.clone(),
                    partial,
                    handle: Some(handle),
                }
            }
            Destination::Dir(dir) => {
                let created = match std::fs::read_dir(dir) {
                    Ok(mut entries) => {
                        if entries.next().is_some() {
                            return Err(UsageError(format!(
                                "{} is not empty; give a new or empty directory",
                                dir.display()
                            ))
                            .into());
                        }
                        false
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("cannot create {}", dir.display()))?;
                        true
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot use {}", dir.display()))
                    }
                };
                Sink::Dir {
                    dir: dir.clone(),
                    created,
                }
            }
        })
    }

    fn spawn(&mut self, rx: mpsc::Receiver<Bytes>) -> WriterThread {
        let reader = ChannelReader {
            rx,
            chunk: Bytes::new(),
            complete: false,
        };
        match self {
            Sink::Stdout => std::thread::spawn(move || {
                let mut reader = reader;
                let mut out = io::stdout().lock();
                io::copy(&mut reader, &mut out)?;
                out.flush()
            }),
            Sink::File { handle, .. } => {
                let file = handle.take();
                std::thread::spawn(move || {
                    let mut reader = reader;
                    let mut file = file.ok_or_else(|| io::Error::other("the file is gone"))?;
                    io::copy(&mut reader, &mut file)?;
                    file.sync_all()
                })
            }
            Sink::Dir { dir, .. } => {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let mut archive = tar::Archive::new(reader);
                    archive.set_overwrite(false);
                    archive.unpack(&dir)?;
                    // Drain what follows the end of the archive, so the stream completes.
                    io::copy(&mut archive.into_inner(), &mut io::sink())?;
                    Ok(())
                })
            }
        }
    }

    /// Waits for the writer and puts the result in place.
    fn commit(&self, writer: WriterThread) -> anyhow::Result<()> {
        let result = join(writer);
        let what = self.describe();
        if let Err(e) = result {
            self.remove();
            return Err(e).with_context(|| format!("writing {what}"));
        }
        if let Sink::File { file, partial, .. } = self {
            if let Err(e) = std::fs::rename(partial, file) {
                self.remove();
                return Err(e).with_context(|| {
                    format!("renaming {} to {}", partial.display(), file.display())
                });
            }
            // The rename is durable once the directory that holds it is.
            let parent = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if let Ok(dir) = std::fs::File::open(parent) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }

    /// The writer stopped before the stream did: its error is the one to report.
    fn fail(&self, writer: WriterThread) -> anyhow::Error {
        let error = match join(writer) {
            Err(e) => anyhow::Error::new(e).context(format!("writing {}", self.describe())),
            Ok(()) => anyhow::anyhow!("writing {}: stopped early", self.describe()),
        };
        self.remove();
        error
    }

    /// After a failure or an interrupt: lets the writer see the end, then removes what it wrote.
    fn abandon(&self, writer: WriterThread) {
        // A writer blocked on a stdout nobody reads would never return; there is nothing
        // to remove there anyway.
        if !matches!(self, Sink::Stdout) {
            let _ = join(writer);
        }
        self.remove();
    }

    fn remove(&self) {
        match self {
            Sink::Stdout => {}
            Sink::File { partial, .. } => {
                let _ = std::fs::remove_file(partial);
            }
            Sink::Dir { dir, created: true } => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Sink::Dir {
                dir,
                created: false,
            } => {
                // The directory was empty before: make it so again.
                if let Ok(entries) = std::fs::read_dir(dir) {
                    for entry in entries.flatten() {
                        let path = entry.path();
                        let _ = match entry.file_type() {
                            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                            _ => std::fs::remove_file(&path),
                        };
                    }
                }
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Sink::Stdout => "the archive to stdout".into(),
            Sink::File { file, .. } => file.display().to_string(),
            Sink::Dir { dir, .. } => format!("the OCI layout into {}", dir.display()),
        }
    }
}

fn join(writer: WriterThread) -> io::Result<()> {
    writer
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")))
}

/// A blocking reader of the chunks [`receive`] sends. The stream is complete only after the
/// empty chunk; a channel closed before it is an interrupted transfer, never a clean end.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
    complete: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            if self.complete {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(chunk) if chunk.is_empty() => self.complete = true,
                Some(chunk) => self.chunk = chunk,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the transfer was interrupted",
                    ))
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// `pull --to docker`: the daemon loads the image into the Docker engine; we show its events.
fn load(
    ctx: &Context,
    image: &ImageRef,
    reference: Option<String>,
    platform: Option<String>,
) -> anyhow::Result<ExitCode> {
    let request = PullRequest {
        repository_name: image.repository.to_string(),
        reference,
        format: None,
        platform,
    };
    let client = ctx.client()?;
    let mut progress = Progress::new(ctx.quiet, "loaded");
    let outcome = block_on(async {
        tokio::select! {
            result = async {
                let response = client.stream::<LoadImage>(&request, empty_body()).await?;
                follow_events(JsonLines::new(response.into_body()), &mut progress).await
            } => Some(result),
            _ = crate::signals::interrupted() => None,
        }
    })?;
    progress.clear();
    match outcome {
        None => {
            eprintln!("error: load cancelled");
            Ok(ExitCode::from(crate::signals::exit_code()))
        }
        Some(result) => {
            output::print(ctx.output, &Loaded::from(result?))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// What a pull into the Docker engine did: the image and the name the engine now knows it
/// by. (The daemon answers a load with its transfer result, whose blob counts are a push's.)
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Loaded {
    repository_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_tag: Option<String>,
    image_digest: String,
    image_manifest_media_type: String,
    image_size_in_bytes: u64,
    /// `host:port/repo:tag`; absent for an image pulled by digest, which the engine keeps
    /// untagged.
    #[serde(skip_serializing_if = "Option::is_none")]
    docker_reference: Option<String>,
}

impl From<TransferResult> for Loaded {
    fn from(r: TransferResult) -> Self {
        Loaded {
            repository_name: r.repository_name,
            image_tag: r.image_tag,
            image_digest: r.image_digest,
            image_manifest_media_type: r.image_manifest_media_type,
            image_size_in_bytes: r.image_size_in_bytes,
            docker_reference: r.docker_reference,
        }
    }
}

impl Table for Loaded {
    fn table(&self) -> String {
        let loaded = match &self.docker_reference {
            Some(name) => format!("into the Docker engine as {name}"),
            None => "into the Docker engine, untagged (pulled by digest)".to_string(),
        };
        let mut rows = vec![("loaded", loaded)];
        rows.extend(image_rows(
            &self.repository_name,
            self.image_tag.as_deref(),
            &self.image_digest,
            &self.image_manifest_media_type,
            self.image_size_in_bytes,
        ));
        output::key_values(&rows)
    }
}

// ---------------------------------------------------------------------------------------------
// Progress of event streams.

/// Renders [`TransferEvent`]s on stderr: bars on a terminal, a line per blob otherwise,
/// nothing with `--quiet`.
pub(crate) enum Progress {
    Quiet,
    Lines {
        verb: &'static str,
    },
    Bars {
        verb: &'static str,
        multi: MultiProgress,
        blobs: HashMap<String, ProgressBar>,
        overall: Option<ProgressBar>,
    },
}

fn bytes_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress {
    pub(crate) fn new(quiet: bool, verb: &'static str) -> Self {
        if quiet {
            Progress::Quiet
        } else if io::stderr().is_terminal() {
            Progress::Bars {
                verb,
                multi: MultiProgress::new(),
                blobs: HashMap::new(),
                overall: None,
            }
        } else {
            Progress::Lines { verb }
        }
    }

    /// Whether blobs are shown as bars (stderr is a terminal).
    pub(crate) fn is_bars(&self) -> bool {
        matches!(self, Progress::Bars { .. })
    }

    /// A line for people above the bars (or on its own without them); none when quiet.
    pub(crate) fn println(&self, line: &str) {
        match self {
            Progress::Quiet => {}
            Progress::Lines { .. } => eprintln!("{line}"),
            Progress::Bars { multi, .. } => {
                let _ = multi.println(line);
            }
        }
    }

    /// The bar of bytes this CLI sends, below the blobs' bars.
    fn overall(&mut self, total: Option<u64>) -> Option<ProgressBar> {
        let Progress::Bars { multi, overall, .. } = self else {
            return None;
        };
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(bytes_style(
                "{prefix:>12} [{bar:30.cyan/blue}] {binary_bytes}/{binary_total_bytes} \
                 {binary_bytes_per_sec} eta {eta}",
            )),
            None => ProgressBar::new_spinner().with_style(bytes_style(
                "{prefix:>12} {spinner} {binary_bytes} {binary_bytes_per_sec}",
            )),
        };
        bar.set_prefix("sent");
        bar.enable_steady_tick(Duration::from_millis(200));
        let bar = multi.add(bar);
        *overall = Some(bar.clone());
        Some(bar)
    }

    pub(crate) fn event(&mut self, event: &TransferEvent) {
        match self {
            Progress::Quiet => {}
            Progress::Lines { verb } => {
                if let TransferEvent::BlobDone {
                    digest,
                    size,
                    status,
                    ..
                } = event
                {
                    let status = match status {
                        BlobStatus::Pushed => {
                            SAID_PUSHED.store(true, std::sync::atomic::Ordering::Relaxed);
                            *verb
                        }
                        BlobStatus::Exists => "exists",
                    };
                    eprintln!("{}: {status} ({})", short_name(digest), human_bytes(*size));
                }
            }
            Progress::Bars {
                verb,
                multi,
                blobs,
                overall,
            } => match event {
                TransferEvent::BlobStarted { name, size } => {
                    let bar = blob_bar(multi, overall.as_ref(), name, *size);
                    blobs.insert(name.clone(), bar);
                }
                TransferEvent::BlobProgress { name, bytes } => {
                    let bar = blobs
                        .entry(name.clone())
                        .or_insert_with(|| blob_bar(multi, overall.as_ref(), name, None));
                    if bar.length().is_some_and(|len| *bytes > len) {
                        bar.set_length(*bytes);
                    }
                    bar.set_position(*bytes);
                }
                TransferEvent::BlobDone {
                    name,
                    digest,
                    size,
                    status,
                } => {
                    let bar = blobs
                        .remove(name)
                        .unwrap_or_else(|| blob_bar(multi, overall.as_ref(), name, Some(*size)));
                    let status = match status {
                        BlobStatus::Pushed => {
                            SAID_PUSHED.store(true, std::sync::atomic::Ordering::Relaxed);
                            *verb
                        }
                        BlobStatus::Exists => "exists",
                    };
                    bar.set_style(bytes_style("{prefix:>12} {msg}"));
                    bar.set_prefix(short_name(digest));
                    bar.finish_with_message(format!("{status} ({})", human_bytes(*size)));
                }
                TransferEvent::Done(_) | TransferEvent::Error(_) => {}
            },
        }
    }

    /// The result arrived: the bytes sent are all sent.
    pub(crate) fn finish(&mut self) {
        if let Progress::Bars {
            overall: Some(bar), ..
        } = self
        {
            bar.finish();
        }
    }

    /// Takes unfinished bars off the screen before the result or an error is printed; the
    /// finished blobs' lines stay, as a record of what moved.
    pub(crate) fn clear(&mut self) {
        if let Progress::Bars { blobs, overall, .. } = self {
            for (_, bar) in blobs.drain() {
                bar.finish_and_clear();
            }
            if let Some(bar) = overall.take() {
                bar.finish_and_clear();
            }
        }
    }
}

fn blob_bar(
    multi: &MultiProgress,
    overall: Option<&ProgressBar>,
    name: &str,
    size: Option<u64>,
) -> ProgressBar {
    let bar = match size {
        Some(size) => ProgressBar::new(size).with_style(bytes_style(
            "{prefix:>12} [{bar:30}] {binary_bytes}/{binary_total_bytes} \
             {binary_bytes_per_sec} eta {eta}",
        )),
        None => ProgressBar::new_spinner().with_style(bytes_style(
            "{prefix:>12} {spinner} {binary_bytes} {binary_bytes_per_sec}",
        )),
    };
    bar.set_prefix(short_name(name));
    match overall {
        Some(overall) => multi.insert_before(overall, bar),
        None => multi.add(bar),
    }
}

impl Table for TransferResult {
    fn table(&self) -> String {
        let mut rows = image_rows(
            &self.repository_name,
            self.image_tag.as_deref(),
            &self.image_digest,
            &self.image_manifest_media_type,
            self.image_size_in_bytes,
        );
        rows.push((
            "blobs",
            format!(
                "{} pushed, {} existing",
                self.blobs_pushed, self.blobs_existing
            ),
        ));
        output::key_values(&rows)
    }
}

/// The rows naming an image that moved: where it is, its tag, digest, media type and size.
fn image_rows(
    repository: &str,
    tag: Option<&str>,
    digest: &str,
    media_type: &str,
    size: u64,
) -> Vec<(&'static str, String)> {
    let mut rows = vec![("repository", repository.to_string())];
    if let Some(tag) = tag {
        rows.push(("tag", tag.to_string()));
    }
    rows.extend([
        ("digest", digest.to_string()),
        ("media type", media_type.to_string()),
        ("size", human_bytes(size)),
    ]);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_by_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("image.tar");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("link.tar");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let real = std::fs::canonicalize(&file).unwrap();
        assert_eq!(shareable_path(&Source::Archive(link)).unwrap(), Some(real));
        assert_eq!(shareable_path(&Source::Stdin).unwrap(), None);
        assert_eq!(
            shareable_path(&Source::Archive("/dev/null".into())).unwrap(),
            None
        );
        assert!(shareable_path(&Source::Archive(dir.path().join("missing"))).is_err());
    }

    fn parse(text: &str) -> Result<Source, String> {
        parse_source(text, |p| {
            p == Path::new("layout") || p == Path::new("./dir/")
        })
    }

    #[test]
    fn sources_parse_like_skopeo_and_docker() {
        assert_eq!(parse("-"), Ok(Source::Stdin));
        assert_eq!(parse("app.tar"), Ok(Source::Archive("app.tar".into())));
        assert_eq!(parse("layout"), Ok(Source::OciDir("layout".into())));
        assert_eq!(parse("./dir/"), Ok(Source::OciDir("./dir/".into())));
        assert_eq!(parse("oci:layout"), Ok(Source::OciDir("layout".into())));
        assert_eq!(parse("oci:nothere"), Ok(Source::OciDir("nothere".into())));
        assert_eq!(
            parse("oci-archive:img.tar"),
            Ok(Source::Archive("img.tar".into()))
        );
        assert_eq!(
            parse("docker-archive:a.tar.gz"),
            Ok(Source::Archive("a.tar.gz".into()))
        );
        assert_eq!(parse("docker-archive:-"), Ok(Source::Stdin));
        assert_eq!(parse("docker://app"), Ok(Source::Docker("app".into())));
        assert_eq!(
            parse("docker://localhost:5000/team/app:1"),
            Ok(Source::Docker("localhost:5000/team/app:1".into()))
        );
        assert_eq!(
            parse("docker-daemon:app:1"),
            Ok(Source::Docker("app:1".into()))
        );
        // A colon in a plain path is not a transport.
        assert_eq!(
            parse("./my:image.tar"),
            Ok(Source::Archive("./my:image.tar".into()))
        );
        for bad in ["", "oci:", "docker://", "oci-archive:", "docker-archive:"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn archives_never_go_to_a_terminal() {
        use Destination::*;
        use PullFormat::*;
        let file = Some(Path::new("app.tar"));
        let dash = Some(Path::new("-"));
        assert_eq!(destination(DockerArchive, None, false), Ok(Stdout));
        assert!(destination(DockerArchive, None, true).is_err());
        assert!(destination(OciArchive, None, true).is_err());
        assert!(destination(DockerArchive, dash, true).is_err());
        assert_eq!(destination(OciArchive, dash, false), Ok(Stdout));
        for tty in [false, true] {
            assert_eq!(
                destination(DockerArchive, file, tty),
                Ok(File("app.tar".into()))
            );
            assert_eq!(
                destination(OciArchive, file, tty),
                Ok(File("app.tar".into()))
            );
            assert_eq!(destination(Oci, file, tty), Ok(Dir("app.tar".into())));
            assert!(destination(Oci, None, tty).is_err());
            assert!(destination(Oci, dash, tty).is_err());
        }
    }

    #[test]
    fn partial_files_sit_next_to_their_file() {
        assert_eq!(
            partial_path(Path::new("out/app.tar")),
            PathBuf::from("out/app.tar.partial")
        );
        assert_eq!(partial_path(Path::new("a")), PathBuf::from("a.partial"));
    }

    #[test]
    fn blob_names_shorten_to_their_digest() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(short_name(&format!("sha256:{hex}")), "0123456789ab");
        assert_eq!(short_name(&format!("blobs/sha256/{hex}")), "0123456789ab");
        assert_eq!(short_name(&format!("{hex}/layer.tar")), "0123456789ab");
        assert_eq!(short_name(&format!("{hex}.tar.gz")), "0123456789ab");
        assert_eq!(short_name("config"), "config");
        assert!(short_name(&"x".repeat(40)).chars().count() <= 24);
    }

    #[test]
    fn tar_size_counts_headers_padding_and_the_end() {
        let files = vec![
            (PathBuf::from("oci-layout"), 30),
            (PathBuf::from("index.json"), 512),
        ];
        assert_eq!(tar_size(&files), 512 + 512 + 512 + 512 + 1024);
    }

    #[test]
    fn a_layout_tars_with_relative_paths_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("blobs/sha256")).unwrap();
        std::fs::write(
            root.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        std::fs::write(root.join("index.json"), b"{}").unwrap();
        std::fs::write(root.join("blobs/sha256/bb"), vec![7u8; 3000]).unwrap();
        std::fs::write(root.join("blobs/sha256/aa"), b"a").unwrap();
        let files = oci_layout_files(root).unwrap();

        let (tx, mut rx) = mpsc::channel(1024);
        let writer_files = files.clone();
        let root_owned = root.to_path_buf();
        std::thread::spawn(move || tar_layout(&root_owned, &writer_files, ChannelWriter::new(tx)))
            .join()
            .unwrap()
            .unwrap();
        let mut tar = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            tar.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(tar.len() as u64, tar_size(&files));
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "oci-layout",
                "index.json",
                "blobs/sha256/aa",
                "blobs/sha256/bb"
            ]
        );
    }

    #[test]
    fn a_reader_tells_a_complete_stream_from_an_interrupted_one() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Bytes::from_static(b"abc")).unwrap();
        tx.try_send(Bytes::new()).unwrap();
        let mut reader = ChannelReader {
            rx,
            chunk: Bytes::new(),
            complete: false,
        };
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");

        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Bytes::from_static(b"abc")).unwrap();
        drop(tx);
        let mut reader = ChannelReader {
            rx,
            chunk: Bytes::new(),
            complete: false,
        };
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
