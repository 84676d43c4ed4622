//! Controller reaction time on the local control plane: from a node finishing its
//! upgrade to the controller's request to the next node, in an auto rollout with
//! `maxUnavailable: 1` over 10 hollow nodes, 12 rollouts (108 reactions).
//!
//! This program plays the node agents, so only the controller's part is timed: on
//! each request it marks the pod as running the requested revision (the revision
//! annotation, as the new manifest would carry) and clears the request. Both ends
//! of a sample are arrival times of events on one `kubectl get pods --watch`: the
//! pod showing it finished, and the next pod showing its request. So a sample is
//! the controller's watch latency + reconcile + patch + the API server's fan-out.
//!
//! ```sh
//! cargo build --workspace --bins && cargo run -p staticpod-e2e --example reaction-bench
//! ```

use std::time::Duration;

use serde_json::{Value, json};
use staticpod_api::REVISION_ANNOTATION;
use staticpod_api::conventions::UPGRADE_REQUEST_ANNOTATION;
use staticpod_e2e::{
    Cluster, ClusterConfig, PodWatch, free_port, http_request, pod_is_ready, wait_for,
    write_manifest,
};

const NODES: usize = 10;
const ROLLOUTS: usize = 12;
const NAME: &str = "react";

fn main() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterConfig::for_test("reaction-bench", NODES))?;
    let c = &cluster;
    c.install_crd()?;
    let metrics = free_port()?;
    c.start_controller(&[format!("--metrics-listen=127.0.0.1:{metrics}")])?;

    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {NAME}\n  namespace: default\nspec:\n  containers:\n  - name: {NAME}\n    image: {NAME}:0\n"
    );
    for node in c.nodes() {
        write_manifest(&node.manifest_dir, NAME, &manifest)?;
    }
    wait_for("mirror pods Ready", Duration::from_secs(120), || {
        let pods = c.kubectl_json(&["get", "pods", "-n", "default"])?;
        let ready = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| pod_is_ready(p))
            .count();
        Ok((ready == NODES).then_some(()))
    })?;
    apply(c, 0)?;
    let all = NODES.to_string();
    wait_for("adopted", Duration::from_secs(60), || {
        let row = c.kubectl(&["get", "staticpod", NAME, "--no-headers"])?;
        let row: Vec<&str> = row.split_whitespace().collect();
        Ok((row.len() >= 5 && row[2..5] == [all.as_str(), &all, &all]).then_some(()))
    })?;

    let watch = PodWatch::start(c, "default")?;
    let mut cursor = 0;
    let mut samples = Vec::new();
    for rollout in 1..=ROLLOUTS {
        apply(c, rollout)?;
        let mut finished_at = None;
        for _ in 0..NODES {
            let (index, request) = watch
                .next_event(cursor, Duration::from_secs(30), |e| {
                    let a = &e["object"]["metadata"]["annotations"];
                    e["type"] != "DELETED"
                        && a[UPGRADE_REQUEST_ANNOTATION].is_string()
                        && a[UPGRADE_REQUEST_ANNOTATION] != a[REVISION_ANNOTATION]
                })
                .ok_or_else(|| anyhow::anyhow!("rollout {rollout}: no request within 30 s"))?;
            if let Some(finished) = finished_at {
                samples.push(request.at.duration_since(finished));
            }
            let pod = request.event["object"]["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let revision = request.event["object"]["metadata"]["annotations"]
                [UPGRADE_REQUEST_ANNOTATION]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            c.kubectl(&[
                "annotate",
                "pod",
                &pod,
                "--overwrite",
                &format!("{REVISION_ANNOTATION}={revision}"),
                &format!("{UPGRADE_REQUEST_ANNOTATION}-"),
            ])?;
            let (done, finished) = watch
                .next_event(index + 1, Duration::from_secs(30), |e| {
                    e["object"]["metadata"]["name"] == pod.as_str()
                        && e["object"]["metadata"]["annotations"][REVISION_ANNOTATION]
                            == revision.as_str()
                })
                .ok_or_else(|| anyhow::anyhow!("{pod}: the watch never showed it finished"))?;
            finished_at = Some(finished.at);
            cursor = done + 1;
        }
    }

    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |p: f64| ms(samples[((samples.len() as f64 * p).ceil() as usize).max(1) - 1]);
    println!(
        "controller reaction, node finished -> next request, {} samples over {ROLLOUTS} rollouts of {NODES} nodes:",
        samples.len()
    );
    println!(
        "  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        ms(samples[samples.len() - 1])
    );
    let (_, text) = http_request(metrics, "GET", "/metrics")?;
    let metric = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let count = metric("staticpod_controller_reconcile_duration_seconds_count");
    let sum = metric("staticpod_controller_reconcile_duration_seconds_sum");
    println!(
        "  controller: {count} reconciles, mean {:.2} ms each (its own /metrics)",
        sum / count.max(1.0) * 1000.0
    );
    Ok(())
}

fn apply(c: &Cluster, rollout: usize) -> anyhow::Result<()> {
    let sp: Value = json!({
        "apiVersion": "apps.openyurt.io/v1alpha1", "kind": "StaticPod",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {
            "staticPodManifest": NAME,
            "upgradeStrategy": {"type": "auto", "maxUnavailable": 1},
            "template": {"spec": {"containers": [{"name": NAME, "image": format!("{NAME}:{rollout}")}]}}
        }
    });
    let out = c.kubectl_with_input(&["apply", "-f", "-"], &sp.to_string())?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
