//! kubectl plugin benchmark on the local control plane: wall time of
//! `kubectl staticpod status NAME` against 1,000 nodes' mirror pods, and the
//! plugin's own start-up time, with `kubectl get` over the same objects as the peer.
//!
//! The 1,000 Nodes and pods are created directly in the API server (no kubelet runs
//! them): half the pods carry the target revision, half an older one, so every row
//! is judged. The plugin is the release build when there is one
//! (`cargo build --release -p kubectl-staticpod`), else the debug build.
//!
//! ```sh
//! cargo build --release -p kubectl-staticpod && cargo run -p staticpod-e2e --example plugin-bench
//! ```

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use staticpod_api::testing::static_pod;
use staticpod_api::{REVISION_ANNOTATION, render_manifest};
use staticpod_e2e::{Cluster, ClusterConfig, wait_for};

const NODES: usize = 1_000;
const RUNS: usize = 20;

/// Builds a fresh command per run.
type CommandFactory<'a> = Box<dyn Fn() -> Command + 'a>;

fn main() -> anyhow::Result<()> {
    let plugin = plugin_binary()?;
    println!("plugin: {}", plugin.display());
    let cluster = Cluster::start(ClusterConfig::for_test("plugin-bench", 1))?;
    cluster.install_crd()?;

    let target = static_pod("bench", "nginx:1.19.2");
    let old = render_manifest(&static_pod("bench", "nginx:1.19.1"))?.revision;
    let new = render_manifest(&target)?.revision;
    create(&cluster, &serde_json::to_value(&target)?)?;

    let started = Instant::now();
    let nodes: Vec<Value> = (1..=NODES)
        .map(|i| {
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": format!("edge-{i:04}")}})
        })
        .collect();
    create(
        &cluster,
        &json!({"apiVersion": "v1", "kind": "List", "items": nodes}),
    )?;
    let pods: Vec<Value> = (1..=NODES)
        .map(|i| {
            let (revision, image) = if i % 2 == 0 {
                (new.as_str(), "nginx:1.19.2")
            } else {
                (old.as_str(), "nginx:1.19.1")
            };
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": format!("bench-edge-{i:04}"), "namespace": "default",
                    "annotations": {REVISION_ANNOTATION: revision}
                },
                "spec": {"nodeName": format!("edge-{i:04}"),
                         "containers": [{"name": "nginx", "image": image}]}
            })
        })
        .collect();
    create(
        &cluster,
        &json!({"apiVersion": "v1", "kind": "List", "items": pods}),
    )?;
    wait_for("1,000 pods listed", Duration::from_secs(60), || {
        let list = cluster.kubectl_json(&["get", "pods", "-n", "default"])?;
        Ok((list["items"].as_array().map_or(0, Vec::len) >= NODES).then_some(()))
    })?;
    println!(
        "created {NODES} nodes and {NODES} pods in {:?}",
        started.elapsed()
    );

    let kubeconfig = cluster.kubeconfig().display().to_string();
    let direct = |args: &[&str]| {
        let mut c = Command::new(&plugin);
        c.args(args).env("KUBECONFIG", &kubeconfig);
        c
    };
    let plugin_dir = cluster.dir().join("plugin-path");
    std::fs::create_dir_all(&plugin_dir)?;
    let link = plugin_dir.join("kubectl-staticpod");
    if !link.exists() {
        std::os::unix::fs::symlink(&plugin, &link)?;
    }
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubectl = |args: &[&str]| {
        let mut c = Command::new(cluster.bin_dir().join("kubectl"));
        c.args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("PATH", &path);
        c
    };

    // Sanity: the plugin sees the 1,000 nodes, half of them upgraded.
    let out = direct(&["status", "bench", "-o", "json"]).output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        view["totalNumber"] == NODES && view["upgradedNumber"] == NODES / 2,
        "unexpected view: total {} upgraded {}",
        view["totalNumber"],
        view["upgradedNumber"]
    );
    let table = direct(&["status", "bench"]).output()?;
    println!(
        "`kubectl staticpod status bench` prints {} lines for {NODES} nodes:\n{}",
        table.stdout.iter().filter(|b| **b == b'\n').count(),
        String::from_utf8_lossy(&table.stdout)
    );

    println!("| command | median | p90 | min |\n|---|---|---|---|");
    let cases: Vec<(&str, CommandFactory)> = vec![
        (
            "kubectl-staticpod --version",
            Box::new(|| direct(&["--version"])),
        ),
        ("kubectl-staticpod --help", Box::new(|| direct(&["--help"]))),
        (
            "kubectl-staticpod status bench",
            Box::new(|| direct(&["status", "bench"])),
        ),
        (
            "kubectl-staticpod status bench -o json",
            Box::new(|| direct(&["status", "bench", "-o", "json"])),
        ),
        (
            "kubectl-staticpod status (fleet table)",
            Box::new(|| direct(&["status"])),
        ),
        (
            "kubectl staticpod status bench",
            Box::new(|| kubectl(&["staticpod", "status", "bench"])),
        ),
        (
            "peer: kubectl get staticpod bench",
            Box::new(|| kubectl(&["get", "staticpod", "bench"])),
        ),
        (
            "peer: kubectl get pods -n default -o json",
            Box::new(|| kubectl(&["get", "pods", "-n", "default", "-o", "json"])),
        ),
        (
            "peer: kubectl get pods -n default",
            Box::new(|| kubectl(&["get", "pods", "-n", "default"])),
        ),
    ];
    for (name, command) in &cases {
        let mut times = Vec::with_capacity(RUNS);
        for run in 0..RUNS + 2 {
            let start = Instant::now();
            let out = command()
                .output()
                .with_context(|| format!("running {name}"))?;
            let took = start.elapsed();
            ensure!(
                out.status.success(),
                "{name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The first two runs warm the API server's caches and the page cache.
            if run >= 2 {
                times.push(took);
            }
        }
        times.sort();
        println!(
            "| `{name}` | {} | {} | {} |",
            ms(times[RUNS / 2]),
            ms(times[RUNS * 9 / 10]),
            ms(times[0])
        );
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1_000.0)
}

fn create(cluster: &Cluster, object: &Value) -> anyhow::Result<()> {
    let out = cluster.kubectl_with_input(&["create", "-f", "-"], &object.to_string())?;
    ensure!(
        out.status.success(),
        "kubectl create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The release build of the plugin if there is one, else the debug build.
fn plugin_binary() -> anyhow::Result<PathBuf> {
    let release = staticpod_e2e::bins::repo_root().join("target/release/kubectl-staticpod");
    if release.is_file() {
        return Ok(release);
    }
    staticpod_e2e::bins::workspace_binary("kubectl-staticpod")
}
