//! `cargo xtask …`: the project's commands (see README).
#![forbid(unsafe_code)]

mod demo;
mod sandbox;
mod system;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "StaticPod operator project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Every check CI runs: build the Kubernetes test binaries, cargo fmt --check,
    /// clippy -D warnings, build our binaries (the end-to-end tests run them as
    /// processes), and all tests (unit and end-to-end).
    Test,
    /// Regenerate manifests/crd.yaml from the Rust types.
    Crd,
    /// A local cluster with hollow edge nodes and the operator running, to try
    /// things by hand; `demo` walks through the whole story on it.
    Sandbox(sandbox::Options),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Test => test(),
        Task::Crd => {
            let path = root().join("manifests/crd.yaml");
            std::fs::write(&path, staticpod_api::crd_yaml()?)
                .with_context(|| format!("failed to write {}", path.display()))?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Task::Sandbox(options) => sandbox::run(options),
    }
}

fn test() -> Result<()> {
    run("bash", &["tests/cluster/build.sh"])?;
    run("cargo", &["fmt", "--all", "--", "--check"])?;
    run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    run("cargo", &["build", "--workspace", "--bins"])?;
    run("cargo", &["test", "--workspace"])
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    eprintln!("+ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .with_context(|| format!("failed to run {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The repository root.
pub fn root() -> PathBuf {
    staticpod_e2e::bins::repo_root()
}
