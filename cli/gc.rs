//! `ecrl gc [--dry-run]`: garbage collection now.

use crate::app::{block_on, Context};
use crate::output::{self, human_bytes, Table};
use clap::Args;
use ecrl::api::system::{CollectGarbage, GcReport, GcRequest};
use std::process::ExitCode;

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
registry.deleted_blob_grace are unlinked; their content goes after the grace unless a push
takes it back. Blob files nothing holds and older than the grace are removed. What a
repository's images reference, the layer cache of 'ecrl repo push', and anything written in
the last grace are never touched.";

pub fn run(ctx: &Context, args: GcArgs) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let report = block_on(client.call::<CollectGarbage>(&GcRequest {
        dry_run: args.dry_run,
    }))??;
    output::print(ctx.output, &report)?;
    Ok(ExitCode::SUCCESS)
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
