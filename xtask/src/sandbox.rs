//! `cargo xtask sandbox up|down`: the local cluster for trying things by hand.
//! Everything lives in `<repo>/.sandbox/` (gitignored).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use staticpod_e2e::{Cluster, ClusterConfig, Lifetime};

#[derive(Subcommand)]
pub enum Action {
    /// Start etcd, kube-apiserver, kube-controller-manager and N hollow edge nodes;
    /// returns once every node is Ready.
    Up {
        /// Number of hollow nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// Stop every process `up` started (also after `up` crashed half-way).
    Down,
}

fn sandbox_dir() -> PathBuf {
    crate::root().join(".sandbox")
}

/// Where the started processes are recorded, one `name pid` line each, written as
/// each starts so `down` finds them even if `up` died.
fn pid_file(dir: &Path) -> PathBuf {
    dir.join("cluster").join("pids")
}

pub fn run(action: Action) -> Result<()> {
    match action {
        Action::Up { nodes } => up(nodes),
        Action::Down => down(),
    }
}

fn up(nodes: usize) -> Result<()> {
    let dir = sandbox_dir();
    if !running(&dir)?.is_empty() {
        bail!("the sandbox is already up; run `cargo xtask sandbox down` first");
    }
    fs::create_dir_all(&dir)?;
    let config = ClusterConfig {
        nodes,
        fail_images: Vec::new(),
        dir: dir.join("cluster"),
        lifetime: Lifetime::Detached,
    };
    eprintln!(
        "starting the sandbox cluster with {nodes} hollow nodes in {}",
        dir.display()
    );
    let cluster = Cluster::start(config)?;

    fs::copy(cluster.kubeconfig(), dir.join("kubeconfig"))?;
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    let kubectl = bin.join("kubectl");
    let _ = fs::remove_file(&kubectl);
    std::os::unix::fs::symlink(cluster.bin_dir().join("kubectl"), &kubectl)?;
    fs::write(
        dir.join("nodes.json"),
        serde_json::to_string_pretty(cluster.nodes())?,
    )?;

    println!(
        "sandbox up: {} nodes Ready at {}",
        cluster.nodes().len(),
        cluster.server()
    );
    println!(
        "  export KUBECONFIG={} PATH={}:$PATH",
        dir.join("kubeconfig").display(),
        bin.display()
    );
    println!("  kubectl get nodes");
    for node in cluster.nodes() {
        println!(
            "  {}: static pods in {}",
            node.name,
            node.manifest_dir.display()
        );
    }
    println!("stop it with `cargo xtask sandbox down`");
    Ok(())
}

fn down() -> Result<()> {
    let dir = sandbox_dir();
    let running = running(&dir)?;
    for (name, pid) in &running {
        eprintln!("stopping {name} (pid {pid})");
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
    staticpod_e2e::wait_for(
        "the sandbox processes to exit",
        Duration::from_secs(30),
        || Ok(exited(&running).then_some(())),
    )?;
    let _ = fs::remove_file(pid_file(&dir));
    println!("sandbox down ({} processes stopped)", running.len());
    Ok(())
}

/// Whether every one of `processes` has exited (a zombie waiting for init counts).
fn exited(processes: &[(String, u32)]) -> bool {
    processes.iter().all(|(_, pid)| {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status.is_empty()
            || status
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
    })
}

/// Recorded processes that are still alive and are still the program we started
/// (a pid may have been reused since).
fn running(dir: &Path) -> Result<Vec<(String, u32)>> {
    let path = pid_file(dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    let mut alive = Vec::new();
    for line in text.lines() {
        let Some((name, pid)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&dir.join("cluster").display().to_string()) {
            alive.push((name.to_owned(), pid));
        }
    }
    Ok(alive)
}
