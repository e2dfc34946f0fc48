//! `ecrl`: parse the command line, set up tracing, run, map the error to an exit code.

mod app;
mod auth;
mod cluster;
mod completions;
mod daemon;
mod events;
mod gc;
mod image;
mod lifecycle;
mod logs;
mod mirror;
mod output;
mod refs;
mod repo;
mod secret;
mod service;
mod signals;
mod storage;
mod task;
mod task_run;
mod tls;
mod transfer;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = app::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env(ecrl::config::ENV_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match app::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", ecrl::error_text(e.as_ref()));
            ExitCode::from(app::exit_code(&e))
        }
    }
}
