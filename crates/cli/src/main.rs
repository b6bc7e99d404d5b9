//! `tidemark`: the command-line shell over the Tidemark engine. It parses
//! arguments, finds the password, calls the library crates and renders
//! their results as text or JSON. No backup logic lives here.
//!
//! Exit codes (also in README.md):
//! 0 success · 1 error · 2 usage error · 3 backup stored, but some files
//! could not be read · 4 verify found damage, or restore could not restore
//! some files · 10 no repository at the location · 11 wrong password ·
//! 12 repository locked.

mod args;
mod commands;
mod password;
mod progress;
mod shown;

use args::Cli;
use clap::Parser;

pub const EXIT_PARTIAL: i32 = 3;
pub const EXIT_DAMAGE: i32 = 4;

fn main() {
    let cli = Cli::parse();
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
    let json = cli.global.json;
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = exit_code(&e);
            if json {
                let v = serde_json::json!({ "error": format!("{e:#}"), "exit_code": code });
                println!("{v}");
            } else {
                // Errors quote paths and names from the repository.
                eprintln!("error: {}", shown::shown(&format!("{e:#}")));
            }
            code
        }
    };
    std::process::exit(code);
}

fn exit_code(e: &anyhow::Error) -> i32 {
    use repository::RepoError;
    let repo = e
        .chain()
        .find_map(|c| c.downcast_ref::<RepoError>())
        .or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<agent::AgentError>())
                .and_then(agent::AgentError::repo_error)
        })
        .or_else(|| {
            e.chain()
                .find_map(|c| c.downcast_ref::<snapshot::SnapshotError>())
                .and_then(|s| match s {
                    snapshot::SnapshotError::Repo(r) => Some(r),
                    _ => None,
                })
        });
    match repo {
        Some(RepoError::NotARepository { .. }) => 10,
        Some(RepoError::WrongPassword { .. }) => 11,
        Some(RepoError::Locked { .. }) => 12,
        _ => 1,
    }
}
