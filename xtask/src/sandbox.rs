//! `cargo xtask sandbox up|down|demo`: the local cluster with the operator running,
//! for trying things by hand, and the guided walkthrough of the seed document.
//! Everything lives in `<repo>/.sandbox/` (gitignored), or in `STATICPOD_SANDBOX_DIR`
//! (the demo's test uses a temp dir so it never touches a person's sandbox).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use staticpod_e2e::{Cluster, ClusterConfig, Lifetime};

use crate::system::{self, Components};

#[derive(Args)]
pub struct Options {
    /// Where the sandbox lives (default: `<repo>/.sandbox`). Keep it short: unix
    /// socket paths under it are limited to 107 bytes.
    #[arg(long, global = true, hide = true, env = "STATICPOD_SANDBOX_DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
pub enum Action {
    /// Build, start etcd, kube-apiserver, kube-controller-manager and N hollow edge
    /// nodes, install the CRD and RBAC, and start the webhook, the controller and one
    /// agent per node; returns once all of them are ready. Creates no StaticPod and
    /// no static pod.
    Up {
        /// Number of hollow nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Use the binaries already in target/debug instead of running
        /// `cargo build --workspace --bins` first.
        #[arg(long)]
        no_build: bool,
    },
    /// Stop every process `up` or `demo` started (also after a crash half-way).
    Down,
    /// Start a fresh 3-node sandbox and walk through the seed document: static pods
    /// adopted by a StaticPod, a rolling upgrade, a rejected apply, an offline node
    /// skipped and caught up, OTA upgrades. Prints every command and its real output;
    /// leaves the sandbox up.
    Demo {
        /// Use the binaries already in target/debug (see `up`).
        #[arg(long)]
        no_build: bool,
        /// Stop a running sandbox first (otherwise the demo refuses to start).
        #[arg(long)]
        restart: bool,
    },
}

/// Number of nodes of the demo's fleet (the seed document's three edge nodes).
const DEMO_NODES: usize = 3;

/// A node as `nodes.json` lists it.
#[derive(Serialize)]
struct NodeEntry<'a> {
    name: &'a str,
    /// Its kubelet's static-pod directory (the node's `/etc/kubernetes/manifests`).
    manifest_dir: &'a Path,
    /// Its agent's OTA API, `host:port`.
    ota: String,
}

/// A running sandbox started by this process.
pub struct Sandbox {
    pub dir: PathBuf,
    pub cluster: Cluster,
    pub components: Components,
}

impl Sandbox {
    /// `.sandbox/bin`: kubectl and kubectl-staticpod.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// `.sandbox/kubeconfig`: the admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
}

pub fn run(options: Options) -> Result<()> {
    let dir = match options.dir {
        Some(dir) => std::path::absolute(&dir)
            .with_context(|| format!("bad sandbox directory {}", dir.display()))?,
        None => crate::root().join(".sandbox"),
    };
    match options.action {
        Action::Up { nodes, no_build } => {
            if nodes == 0 {
                bail!("--nodes must be at least 1");
            }
            refuse_if_running(&dir)?;
            if !no_build {
                build()?;
            }
            let sandbox = up(&dir, nodes)?;
            print_summary(&sandbox);
            Ok(())
        }
        Action::Down => down(&dir),
        Action::Demo { no_build, restart } => {
            if restart {
                down(&dir)?;
            }
            // The demo tells one story from a clean fleet and stops and restarts a
            // node's kubelet, which it can only do for processes it started itself;
            // a person's sandbox may hold their own StaticPods and static pods.
            if !running(&dir)?.is_empty() {
                bail!(
                    "the sandbox in {} is up; the demo starts a fresh one of its own. \
                     Stop it with `{}`, or add --restart",
                    dir.display(),
                    down_command(&dir)
                );
            }
            if !no_build {
                build()?;
            }
            let sandbox = up(&dir, DEMO_NODES)?;
            crate::demo::run(&sandbox)
        }
    }
}

fn refuse_if_running(dir: &Path) -> Result<()> {
    if !running(dir)?.is_empty() {
        bail!(
            "the sandbox in {} is already up; run `{}` first",
            dir.display(),
            down_command(dir)
        );
    }
    Ok(())
}

/// `cargo build --workspace --bins`: the sandbox runs our binaries from target/debug.
fn build() -> Result<()> {
    let first = staticpod_e2e::bins::workspace_binary("staticpod-controller").is_err();
    if first {
        eprintln!(
            "building the operator (cargo build --workspace --bins): a first build \
             compiles about 450 crates, roughly 5-10 minutes on two cores"
        );
    } else {
        eprintln!(
            "building the operator (cargo build --workspace --bins; seconds when nothing changed)"
        );
    }
    crate::run("cargo", &["build", "--workspace", "--bins"])?;
    // The Kubernetes binaries come from the cache (tests/cluster/build.sh prints
    // progress and its own estimate when it has to build them the first time).
    eprintln!("Kubernetes binaries: tests/cluster/build.sh (cached after the first build)");
    staticpod_e2e::bins::k8s_bin_dir()?;
    Ok(())
}

/// Where the started processes are recorded, one `name pid` line each, written as
/// each starts so `down` finds them even if `up` died.
fn pid_file(dir: &Path) -> PathBuf {
    dir.join("cluster").join("pids")
}

/// Starts the cluster and our components in `dir` (not already running) and
/// writes the files a person uses to reach them.
pub fn up(dir: &Path, nodes: usize) -> Result<Sandbox> {
    fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
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
    eprintln!("installing the CRD and RBAC; starting the webhook, the controller and the agents");
    let components = system::install(&cluster).map_err(|e| cluster.explain(e))?;

    fs::copy(cluster.kubeconfig(), dir.join("kubeconfig"))?;
    let bin = dir.join("bin");
    fs::create_dir_all(&bin)?;
    symlink(&cluster.bin_dir().join("kubectl"), &bin.join("kubectl"))?;
    symlink(
        &staticpod_e2e::bins::workspace_binary("kubectl-staticpod")?,
        &bin.join("kubectl-staticpod"),
    )?;
    let entries: Vec<NodeEntry> = cluster
        .nodes()
        .iter()
        .zip(&components.ota_ports)
        .map(|(node, port)| NodeEntry {
            name: &node.name,
            manifest_dir: &node.manifest_dir,
            ota: format!("127.0.0.1:{port}"),
        })
        .collect();
    fs::write(
        dir.join("nodes.json"),
        serde_json::to_string_pretty(&entries)? + "\n",
    )?;
    Ok(Sandbox {
        dir: dir.to_owned(),
        cluster,
        components,
    })
}

fn symlink(target: &Path, link: &Path) -> Result<()> {
    match fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("failed to replace {}", link.display())),
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("failed to link {}", link.display()))
}

/// How to reach the sandbox: printed by `up` and at the end of the demo.
pub fn print_summary(sandbox: &Sandbox) {
    let cluster = &sandbox.cluster;
    let c = &sandbox.components;
    println!(
        "sandbox up: {} nodes Ready at {}",
        cluster.nodes().len(),
        cluster.server()
    );
    println!(
        "  webhook      https://127.0.0.1:{} (admin http://127.0.0.1:{}/metrics)",
        c.webhook_port, c.webhook_admin_port
    );
    println!(
        "  controller   http://127.0.0.1:{}/metrics",
        c.controller_metrics_port
    );
    for (node, port) in cluster.nodes().iter().zip(&c.ota_ports) {
        println!(
            "  {}       agent OTA API http://127.0.0.1:{port}, static pods in {}",
            node.name,
            node.manifest_dir.display()
        );
    }
    println!("  logs         {}", cluster.dir().join("logs").display());
    println!("point kubectl (and `kubectl staticpod`) at it:");
    println!(
        "  export KUBECONFIG={} PATH={}:$PATH",
        sandbox.kubeconfig().display(),
        sandbox.bin_dir().display()
    );
    println!("  kubectl get nodes; kubectl staticpod status");
    println!(
        "nodes and their OTA addresses: {}",
        sandbox.dir.join("nodes.json").display()
    );
    println!("stop it with `{}`", down_command(&sandbox.dir));
}

/// The command that stops the sandbox in `dir`.
fn down_command(dir: &Path) -> String {
    if dir == crate::root().join(".sandbox") {
        "cargo xtask sandbox down".to_owned()
    } else {
        format!(
            "STATICPOD_SANDBOX_DIR={} cargo xtask sandbox down",
            dir.display()
        )
    }
}

fn down(dir: &Path) -> Result<()> {
    let running = running(dir)?;
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
    match fs::remove_file(pid_file(dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("could not remove {}: {e}", pid_file(dir).display()),
    }
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

/// The programs the sandbox starts (file names of their executables).
const PROGRAMS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "hollow-node",
    "staticpod-webhook",
    "staticpod-controller",
    "staticpod-agent",
];

/// Recorded processes that are still alive and are still what we started (a pid
/// may have been reused since): the executable is one of [`PROGRAMS`] and its
/// command line or environment names this sandbox's directory. Every component
/// gets the directory one way or the other (a path flag, or `KUBECONFIG` for the
/// controller, whose only flag is an address), and another sandbox or a test
/// cluster running the same program has another directory.
pub fn running(dir: &Path) -> Result<Vec<(String, u32)>> {
    let path = pid_file(dir);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
    };
    // With the separator: `<dir>/cluster` must not match `<dir>/cluster2/…`.
    let cluster_dir = format!("{}/", dir.join("cluster").display());
    let mut alive = Vec::new();
    for line in text.lines() {
        let Some((name, pid)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        if is_ours(pid, &cluster_dir) {
            alive.push((name.to_owned(), pid));
        }
    }
    Ok(alive)
}

fn is_ours(pid: u32, cluster_dir: &str) -> bool {
    let Ok(exe) = fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    // A binary rebuilt while the sandbox runs shows as "<path> (deleted)".
    let exe = exe.display().to_string();
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(&exe);
    let program = Path::new(exe)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !PROGRAMS.contains(&program) {
        return false;
    }
    let mentions = |file: &str| {
        let bytes = fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
        // Arguments and variables are NUL-separated; a path never spans two.
        bytes
            .split(|b| *b == 0)
            .any(|part| String::from_utf8_lossy(part).contains(cluster_dir))
    };
    mentions("cmdline") || mentions("environ")
}
