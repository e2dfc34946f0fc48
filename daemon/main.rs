//! `ecrld`: parse the command line, resolve the configuration, set up logging, run.

mod app;
mod auth;
mod aws;
mod console;
mod control;
mod events;
mod fsck;
mod gc;
mod images;
mod lifecycle;
mod lock;
mod logging;
mod metadata;
mod metrics;
mod migrate;
mod mirror;
mod progress;
mod registry;
mod runtime;
mod secrets;
mod services;
mod storage;
mod task_endpoint;
mod tasks;
mod tls;
mod transfer;
mod uploads;

use clap::Parser;
use ecrl::config::{self, EcrldArgs};
use std::process::ExitCode;

/// Keeps glibc's allocator from holding on to memory ecrld freed. By default glibc raises
/// its mmap threshold to the size of each large block freed, after which blocks of that size
/// (the 4 MiB I/O buffers beyond the pool's few) come from arenas that keep them; and it
/// makes up to 8 arenas a core. A fixed 1 MiB threshold hands big blocks back to the kernel
/// when they are freed, while smaller ones (hyper's read buffers among them) stay reusable,
/// and two arenas are plenty for two cores of work. Measured over three runs of the shared
/// registry bench in one process: peak RSS 37.2, 40.6, 41.5 MiB before, 36.0, 37.4, 37.3
/// after, at the same speeds.
///
/// Fixing the mmap threshold also fixes the trim threshold at glibc's 128 KiB, below the
/// size of one of hyper's read buffers (up to ~400 KiB, a new one every few reads of a big
/// upload): each free at the top of a heap gave its pages back and the next read buffer
/// faulted fresh ones in, about 20,000 page faults a GiB pushed, which on these VMs is
/// slow (see `storage::buf`). With 2 MiB of free heap kept, a 1 GiB push takes 20 to 40
/// faults; 1 MiB still left half of them.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt with integer arguments, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let args = EcrldArgs::parse();
    let config = match config::resolve(&args.options, args.socket.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            // Logging is not set up yet: its format is part of what failed to resolve.
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(config.log_format);
    match app::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", ecrl::error_text(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
