//! Node agent benchmark on the local control plane: latency from an upgrade request
//! reaching a node's agent to the new manifest in place, over 100 upgrades (25
//! rounds on 4 hollow nodes at once), and the agents' memory.
//!
//! ```sh
//! cargo build --workspace --bins && cargo run -p staticpod-e2e --example agent-bench
//! ```

use std::fs;
use std::time::Duration;

use serde_json::{Value, json};
use staticpod_api::conventions::{STATIC_POD_LABEL, UPGRADE_REQUEST_ANNOTATION};
use staticpod_api::testing::static_pod;
use staticpod_api::{REVISION_ANNOTATION, render_manifest};
use staticpod_e2e::{
    Cluster, ClusterConfig, free_port, http_request, pod_is_ready, wait_for, write_manifest,
};

const NODES: usize = 4;
const ROUNDS: usize = 25;

fn main() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterConfig::for_test("agent-bench", NODES))?;
    let mut ports = Vec::new();
    for index in 0..NODES {
        let port = free_port()?;
        cluster.start_agent(index, port, 300)?;
        ports.push(port);
    }

    // Revision 0 on every node, installed as a node installer would.
    let first = render_manifest(&static_pod("bench", "nginx:1.0.0"))?;
    for node in cluster.nodes() {
        write_manifest(&node.manifest_dir, "bench", &first.yaml)?;
    }
    wait_all(&cluster, first.revision.as_str())?;
    let idle: Vec<u64> = agent_pids(&cluster)
        .iter()
        .map(|p| status_kb(*p, "VmRSS"))
        .collect();

    let mut swaps = Vec::new();
    for round in 1..=ROUNDS {
        let next = render_manifest(&static_pod("bench", &format!("nginx:1.{round}.0")))?;
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "staticpod-bench", "namespace": "default", "labels": {STATIC_POD_LABEL: "bench"}},
            "data": {"bench.yaml": next.yaml}
        });
        let out = cluster.kubectl_with_input(&["apply", "-f", "-"], &cm.to_string())?;
        anyhow::ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for node in cluster.nodes() {
            cluster.kubectl(&[
                "annotate",
                "pod",
                &format!("bench-{}", node.name),
                "--overwrite",
                &format!("{UPGRADE_REQUEST_ANNOTATION}={}", next.revision),
            ])?;
        }
        wait_all(&cluster, next.revision.as_str())?;
        for port in &ports {
            let (_, body) = http_request(*port, "GET", "/openyurt.io/v1/upgrades")?;
            let upgrades: Value = serde_json::from_str(&body)?;
            let record = upgrades["upgrades"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|u| u["revision"] == next.revision.as_str() && u["state"] == "Upgraded");
            let ms = record.and_then(|r| r["swapMs"].as_f64());
            swaps.push(ms.ok_or_else(|| anyhow::anyhow!("no swap time in {body}"))?);
        }
        eprintln!("round {round}/{ROUNDS} done");
    }
    let peak: Vec<u64> = agent_pids(&cluster)
        .iter()
        .map(|p| status_kb(*p, "VmHWM"))
        .collect();

    swaps.sort_by(f64::total_cmp);
    let pct = |p: f64| swaps[((swaps.len() as f64 * p) as usize).min(swaps.len() - 1)];
    println!(
        "{} upgrades: request seen by the agent -> new manifest in place: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        swaps.len(),
        pct(0.5),
        pct(0.99),
        swaps.last().copied().unwrap_or(0.0)
    );
    println!(
        "agent RSS idle: {:?} KiB; peak over the run: {:?} KiB",
        idle, peak
    );
    let size = fs::metadata(staticpod_e2e::bins::workspace_binary("staticpod-agent")?)?.len();
    println!(
        "agent binary (debug build used here): {:.1} MB",
        size as f64 / 1e6
    );
    Ok(())
}

fn wait_all(c: &Cluster, revision: &str) -> anyhow::Result<()> {
    wait_for(
        &format!("every node on {revision}"),
        Duration::from_secs(180),
        || {
            let list = c.kubectl_json(&["get", "pods", "-n", "default"])?;
            let done = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("bench-"))
                })
                .filter(|p| p["metadata"]["annotations"][REVISION_ANNOTATION] == revision)
                .filter(|p| pod_is_ready(p))
                .count();
            Ok((done == NODES).then_some(()))
        },
    )
}

/// Pids of the agent processes of this cluster (not their supervisor shells).
fn agent_pids(c: &Cluster) -> Vec<u32> {
    let marker = c.dir().join("agent-state").display().to_string();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with(
            &*staticpod_e2e::bins::workspace_binary("staticpod-agent")
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ) && cmdline.contains(&marker)
        {
            pids.push(pid);
        }
    }
    pids
}

fn status_kb(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
