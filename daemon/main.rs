//! `ecrld`: parse the command line, resolve the configuration, set up logging, run.

mod app;
mod auth;
mod control;
mod images;
mod lock;
mod logging;
mod metadata;
mod registry;
mod runtime;
mod storage;
mod tasks;
mod tls;
mod transfer;

use clap::Parser;
use ecrl::config::{self, EcrldArgs};
use std::process::ExitCode;

fn main() -> ExitCode {
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
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
