//! `ecrl gc [--dry-run]` (garbage collection now) and `ecrl fsck [--repair]` (the store checked).

use crate::app::{block_on, Context};
use crate::output::{self, human_bytes, Table};
use clap::Args;
use ecrl::api::system::{
    CheckStoreStream, CollectGarbageStream, FsckReport, FsckRequest, GcReport, GcRequest,
    StoreEvent, StoreProgress,
};
use ecrl::api::transfer::StreamEndpoint;
use ecrl::client::{empty_body, ClientError, JsonLines};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Count what would go; remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub const GC_LONG_ABOUT: &str = "\
Collect garbage now, while pushes and pulls go on (the daemon also does it every gc.interval,
24h by default).

Blob links no manifest references (uploads never followed by a manifest) and older than
registry.upload_expiry (24h: a push in progress links its layers before its manifest) are
unlinked; their content goes after registry.deleted_blob_grace unless a push takes it back.
Blob files nothing holds and older than the grace are removed. What a repository's images
reference, the layer cache of 'ecrl repo push', and files written in the last grace are never
touched.";

pub fn run(ctx: &Context, args: GcArgs) -> anyhow::Result<ExitCode> {
    let request = GcRequest {
        dry_run: args.dry_run,
    };
    let Some(report) = follow::<CollectGarbageStream, GcReport>(ctx, &request)? else {
        return Ok(stopped("the collection"));
    };
    output::print(ctx.output, &report)?;
    Ok(ExitCode::SUCCESS)
}

/// Follows a collection's or a check's events to its report, with a progress bar on stderr
/// when it is a terminal (and not `--quiet`). `None` when a signal stopped the wait (and
/// with it the job: the daemon stops it when the stream goes).
fn follow<E: StreamEndpoint, R: serde::de::DeserializeOwned>(
    ctx: &Context,
    request: &E::Request,
) -> anyhow::Result<Option<R>> {
    let client = ctx.client()?;
    let bar = if !ctx.quiet && std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut step = String::new();
    let outcome = block_on(async {
        tokio::select! {
            result = async {
                let response = client.stream::<E>(request, empty_body()).await?;
                let mut events = JsonLines::new(response.into_body());
                while let Some(event) = events.next::<StoreEvent<R>>().await {
                    match event? {
                        StoreEvent::Progress(p) => show(&bar, &mut step, &p),
                        StoreEvent::Done(report) => return Ok::<_, anyhow::Error>(Some(report)),
                        StoreEvent::Error(e) => return Err(ClientError::Api(e).into()),
                    }
                }
                Err(anyhow::anyhow!(
                    "ecrld ended the stream without a result; see 'ecrl daemon logs'"
                ))
            } => result,
            _ = crate::signals::interrupted() => Ok(None),
        }
    });
    bar.finish_and_clear();
    outcome?
}

/// Draws a progress event: a bar of items when the step has a count, a spinner otherwise.
fn show(bar: &ProgressBar, step: &mut String, p: &StoreProgress) {
    if *step != p.step {
        let template = if p.total > 0 {
            "{prefix:>22} [{bar:30.cyan/blue}] {pos}/{len} {msg} eta {eta}"
        } else {
            "{prefix:>22} {spinner} {msg}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(p.step.clone());
        bar.set_length(p.total);
        *step = p.step.clone();
    }
    bar.set_position(p.done);
    bar.set_message(if p.bytes > 0 {
        human_bytes(p.bytes)
    } else {
        String::new()
    });
}

/// What a stopped wait prints, and its exit code.
fn stopped(what: &str) -> ExitCode {
    eprintln!(
        "ecrl: {}: {what} stopped; what it did so far stands, run it again to finish",
        crate::signals::name()
    );
    ExitCode::from(crate::signals::exit_code())
}

/// One line: what a collection freed (or would).
pub fn summary(r: &GcReport) -> String {
    let (verb, unlinked) = if r.dry_run {
        ("would remove", "would unlink")
    } else {
        ("removed", "unlinked")
    };
    format!(
        "{verb} {} blob{} ({}), {unlinked} {} link{} no manifest references ({}); {} blob{} kept \
         as younger than the grace; {} ms",
        r.blobs_removed,
        if r.blobs_removed == 1 { "" } else { "s" },
        human_bytes(r.bytes_removed),
        r.links_removed,
        if r.links_removed == 1 { "" } else { "s" },
        human_bytes(r.link_bytes),
        r.blobs_kept_recent,
        if r.blobs_kept_recent == 1 { "" } else { "s" },
        r.duration_ms
    )
}

impl Table for GcReport {
    fn table(&self) -> String {
        let mut text = summary(self) + "\n";
        if self.blobs_left_unexplained > 0 {
            text.push_str(&format!(
                "left {} blobs nothing holds: they are most of the store, so metadata.db may \
                 not be theirs (see the daemon's log)\n",
                self.blobs_left_unexplained
            ));
        }
        text
    }
}

#[derive(Args, Debug)]
pub struct FsckArgs {
    /// Move corrupt blobs to <data dir>/quarantine/, drop links to lost blobs, and mark the
    /// images that lost content (their pulls then say so, until pushed again)
    #[arg(long)]
    pub repair: bool,
}

pub const FSCK_LONG_ABOUT: &str = "\
Check the store: every blob is read back (decrypted) and hashed against its name, every
repository's links and manifests are checked against what the store holds. Each problem names
the images it breaks (repo@digest and tags).

--repair moves corrupt blobs to <data dir>/quarantine/, drops the links to lost blobs, and
marks the images that lost content: pulling one answers at once that it lost content and must
be pushed again, instead of failing half-way. Pushing the image again clears the mark.

Exit codes: 0 no problem (or every problem repaired), 1 problems found and left, 3 the daemon
is unreachable.";

pub fn fsck(ctx: &Context, args: FsckArgs) -> anyhow::Result<ExitCode> {
    let request = FsckRequest {
        repair: args.repair,
    };
    let Some(report) = follow::<CheckStoreStream, FsckReport>(ctx, &request)? else {
        return Ok(stopped("the check"));
    };
    output::print(ctx.output, &report)?;
    let left = report.problems.iter().any(|p| p.repaired.is_none());
    Ok(if left {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

impl Table for FsckReport {
    fn table(&self) -> String {
        let mut text = String::new();
        for p in &self.problems {
            text.push_str(&format!("{} {}: {}\n", p.kind, p.digest, p.detail));
            for image in &p.images {
                text.push_str(&format!("  breaks {image}\n"));
            }
            if let Some(r) = &p.repaired {
                text.push_str(&format!("  repaired: {r}\n"));
            }
        }
        text.push_str(&format!(
            "checked {} blob{} ({}) in {} ms: {} problem{}\n",
            self.blobs_checked,
            if self.blobs_checked == 1 { "" } else { "s" },
            human_bytes(self.bytes_checked),
            self.duration_ms,
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" },
        ));
        text
    }
}
