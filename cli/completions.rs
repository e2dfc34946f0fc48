//! Shell completions and man pages, both generated from the command definitions.

use crate::app::Cli;
use clap::{Args, CommandFactory};
use clap_complete::Shell;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct GenerateDocsArgs {
    /// Directory that receives `completions/` and `man/`
    pub dir: PathBuf,
}

pub fn print(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "ecrl",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}

/// The shells whose scripts are committed in `completions/`.
const SHELLS: [Shell; 5] = [
    Shell::Bash,
    Shell::Zsh,
    Shell::Fish,
    Shell::Elvish,
    Shell::PowerShell,
];

pub fn generate_docs(args: GenerateDocsArgs) -> anyhow::Result<ExitCode> {
    write_completions(&args.dir.join("completions"))?;
    write_man(&args.dir.join("man"))?;
    Ok(ExitCode::SUCCESS)
}

fn write_completions(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for shell in SHELLS {
        clap_complete::generate_to(shell, &mut Cli::command(), "ecrl", dir)?;
    }
    Ok(())
}

fn write_man(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    // One page for ecrl and one for each of its subcommands (ecrl-daemon-start.1, ...).
    clap_mangen::generate_to(Cli::command(), dir)?;
    clap_mangen::Man::new(ecrl::config::EcrldArgs::command())
        .section("8")
        .generate_to(dir)?;
    Ok(())
}
