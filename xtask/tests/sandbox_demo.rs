//! `cargo xtask sandbox demo`, run as a person runs it (the real binary, the real
//! cluster, kubectl and plugin), in a sandbox directory of its own so a person's
//! `.sandbox` is never touched; its transcript must tell the seed document's story.
//! Needs `cargo build --workspace --bins` (the README's test command runs it first).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// A sandbox directory that is stopped and removed however the test ends.
struct SandboxDir(PathBuf);

impl SandboxDir {
    fn new() -> Self {
        // Short, for the unix socket paths under it (limit 107 bytes).
        let dir = std::env::temp_dir().join(format!("staticpod-sandbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }

    fn xtask(&self, args: &[&str]) -> Output {
        Command::new(XTASK)
            .args(args)
            .env("STATICPOD_SANDBOX_DIR", &self.0)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("xtask runs")
    }
}

impl Drop for SandboxDir {
    fn drop(&mut self) {
        let out = self.xtask(&["sandbox", "down"]);
        if !out.status.success() {
            eprintln!(
                "sandbox down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The output printed under each `$ command` line that equals `command`, in order
/// (up to the next command, narration or section line).
fn outputs(transcript: &str, command: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut lines = transcript.lines().peekable();
    while let Some(line) = lines.next() {
        if line.strip_prefix("$ ") != Some(command) {
            continue;
        }
        let mut output = Vec::new();
        while let Some(next) = lines.peek() {
            if next.starts_with("$ ") || next.starts_with("# ") || next.starts_with("===") {
                break;
            }
            output.push(lines.next().unwrap_or_default().to_owned());
        }
        found.push(output);
    }
    found
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Processes recorded in the sandbox's pid file that still run (zombies count as gone).
fn still_running(dir: &Path) -> Vec<String> {
    let pids = std::fs::read_to_string(dir.join("cluster/pids")).unwrap_or_default();
    pids.lines()
        .filter(|line| {
            let pid = line.split_whitespace().nth(1).unwrap_or_default();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            !status.is_empty()
                && !status
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_demo_tells_the_whole_story_and_down_stops_everything() {
    let sandbox = SandboxDir::new();
    let out = sandbox.xtask(&["sandbox", "demo", "--no-build"]);
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the demo failed ({}):\n{transcript}\n--- stderr ---\n{stderr}",
        out.status
    );
    let context = format!("\n--- transcript ---\n{transcript}");

    // The fleet before the operator: three nginx mirror pods, one per node.
    let pods = &outputs(&transcript, "kubectl get pods -o wide")[0];
    for node in ["node-1", "node-2", "node-3"] {
        assert!(
            pods.iter().any(|l| {
                let w = words(l);
                w.first() == Some(&format!("nginx-{node}").as_str()) && w.contains(&"Running")
            }),
            "no running nginx-{node} mirror pod{context}"
        );
    }

    // kubectl get staticpods nginx through the story: adopted (3 3 3), rolled out
    // (3 3 3), one node offline (3 2 2), caught up (3 3 3), two OTA upgrades (3 3 2).
    let rows: Vec<Vec<String>> = outputs(&transcript, "kubectl get staticpods nginx")
        .iter()
        .map(|out| {
            assert_eq!(
                words(&out[0]),
                [
                    "NAME",
                    "AGE",
                    "TOTALNUMBER",
                    "READYNUMBER",
                    "UPGRADEDNUMBER"
                ],
                "{context}"
            );
            let row = words(&out[1]);
            assert_eq!(row[0], "nginx", "{context}");
            row[2..5].iter().map(|s| s.to_string()).collect()
        })
        .collect();
    assert_eq!(
        rows,
        [
            ["3", "3", "3"],
            ["3", "3", "3"],
            ["3", "2", "2"],
            ["3", "3", "3"],
            ["3", "3", "2"]
        ],
        "{context}"
    );

    // The mutating webhook defaulted the strategy.
    let defaults = outputs(
        &transcript,
        "kubectl get staticpod nginx -o 'jsonpath={.spec.upgradeStrategy}'",
    );
    assert!(
        defaults[0].concat().contains(r#""maxUnavailable":"10%""#),
        "{context}"
    );

    // The live view followed the rolling upgrade one node at a time to the end.
    let watch = outputs(
        &transcript,
        "kubectl staticpod status nginx --watch --wait --timeout 5m",
    )[0]
    .join("\n");
    assert!(
        watch.contains("requested ") && watch.contains("Pending"),
        "the watch never showed a node upgrading while others waited{context}"
    );
    assert!(
        watch.contains("✔ Complete") && watch.contains("3/3 upgraded (100%)"),
        "{context}"
    );
    let images = &outputs(
        &transcript,
        "kubectl get pods -o 'custom-columns=POD:.metadata.name,NODE:.spec.nodeName,IMAGE:.spec.containers[0].image,REVISION:.metadata.annotations.openyurt\\.io/static-pod-hash'",
    )[0];
    assert_eq!(
        images.iter().filter(|l| l.contains("nginx:1.19.2")).count(),
        3,
        "{context}"
    );

    // The validating webhook refused the invalid apply, naming field and reason.
    assert!(
        transcript.contains(
            r#"admission webhook "validate.staticpod.apps.openyurt.io" denied the request"#
        ) && transcript.contains(r#"spec.upgradeStrategy.type: Unsupported value: "canary""#)
            && transcript.contains(r#"spec.staticPodManifest: Invalid value: "../nginx""#),
        "{context}"
    );

    // The offline node: NotReady, skipped by the rollout, then caught up.
    let nodes = &outputs(&transcript, "kubectl get nodes")[1];
    assert!(
        nodes
            .iter()
            .any(|l| words(l)[..2] == ["node-3", "NotReady"]),
        "{context}"
    );
    let status = outputs(&transcript, "kubectl staticpod status nginx");
    assert!(
        status[0].iter().any(|l| {
            let w = words(l);
            w.first() == Some(&"node-3") && w.contains(&"Skipped") && w.contains(&"NodeNotReady")
        }),
        "node-3 is not shown as skipped{context}"
    );
    for node in ["node-1", "node-2"] {
        assert!(
            status[0]
                .iter()
                .any(|l| words(l).first() == Some(&node) && l.contains("Upgraded")),
            "{context}"
        );
    }
    let caught_up = &outputs(
        &transcript,
        "kubectl staticpod status nginx --wait --timeout 5m",
    )[0];
    assert!(
        caught_up
            .last()
            .is_some_and(|l| l.starts_with("Complete - nginx (3/3 upgraded)")),
        "{context}"
    );

    // OTA: every pod marked, one node upgraded through its OTA API, one through
    // the plugin, the third still marked.
    let ota_columns = "kubectl get pods -o 'custom-columns=POD:.metadata.name,IMAGE:.spec.containers[0].image,PODNEEDUPGRADE:.status.conditions[?(@.type==\"PodNeedUpgrade\")].status'";
    let marks = outputs(&transcript, ota_columns);
    let table = |out: &Vec<String>| -> Vec<Vec<String>> {
        out[1..]
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| words(l).iter().map(|s| s.to_string()).collect())
            .collect()
    };
    assert_eq!(
        table(&marks[0]),
        [
            ["nginx-node-1", "nginx:1.19.3", "True"],
            ["nginx-node-2", "nginx:1.19.3", "True"],
            ["nginx-node-3", "nginx:1.19.3", "True"]
        ],
        "{context}"
    );
    assert!(
        transcript
            .lines()
            .any(|l| l.starts_with("$ curl -sS -X POST http://127.0.0.1:")
                && l.ends_with("/openyurt.io/v1/namespaces/default/pods/nginx-node-1/upgrade")),
        "{context}"
    );
    assert!(
        transcript
            .lines()
            .any(|l| l == "Start updating pod default/nginx-node-1"),
        "{context}"
    );
    let upgrade = &outputs(&transcript, "kubectl staticpod upgrade nginx --node node-2")[0];
    assert!(
        upgrade[0].starts_with("staticpod/nginx node node-2: upgrade to revision ")
            && upgrade[0].ends_with(" requested"),
        "{context}"
    );
    assert_eq!(
        table(&marks[1]),
        [
            ["nginx-node-1", "nginx:1.19.4", "False"],
            ["nginx-node-2", "nginx:1.19.4", "False"],
            ["nginx-node-3", "nginx:1.19.3", "True"]
        ],
        "{context}"
    );

    // Left up, with each node's OTA API listed in nodes.json and answering.
    let nodes: Value = serde_json::from_slice(
        &std::fs::read(sandbox.0.join("nodes.json")).expect("nodes.json written"),
    )
    .expect("nodes.json is JSON");
    let nodes = nodes.as_array().expect("a list of nodes");
    assert_eq!(nodes.len(), 3);
    for node in nodes {
        let ota = node["ota"].as_str().expect("an OTA address");
        let port: u16 = ota
            .strip_prefix("127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .expect("127.0.0.1:<port>");
        let (status, _) =
            staticpod_e2e::http_request(port, "GET", "/healthz").expect("the agent answers");
        assert_eq!(status, 200, "{node}");
    }
    let plugin = sandbox.0.join("bin/kubectl-staticpod");
    assert!(plugin.exists(), "{} missing", plugin.display());

    // A second demo refuses to run over it.
    let again = sandbox.xtask(&["sandbox", "demo", "--no-build"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is up; the demo starts a fresh one"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // down stops every process, the controller (no path on its command line) and
    // the kubelet the demo restarted included.
    let pids = std::fs::read_to_string(sandbox.0.join("cluster/pids")).expect("pid file");
    for component in ["controller", "webhook", "agent-node-1", "node-3"] {
        assert!(
            pids.lines()
                .any(|l| l.starts_with(&format!("{component} "))),
            "{component} not recorded: {pids}"
        );
    }
    let running_before = still_running(&sandbox.0);
    assert_eq!(
        running_before.len(),
        11,
        "3 control-plane processes, 3 kubelets, webhook, controller, 3 agents: {running_before:?}"
    );
    let down = sandbox.xtask(&["sandbox", "down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(
        String::from_utf8_lossy(&down.stdout).contains("(11 processes stopped)"),
        "{}",
        String::from_utf8_lossy(&down.stdout)
    );
    let pids_path = sandbox.0.join("cluster/pids");
    assert!(!pids_path.exists(), "down removes the pid file");
    // Checked against the pid list read before down removed the file.
    for line in running_before {
        let pid = line.split_whitespace().nth(1).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            status.is_empty()
                || status
                    .lines()
                    .any(|l| l.starts_with("State:") && l.contains('Z')),
            "{line} still runs after down"
        );
    }
}
