//! `kubectl staticpod`, run as a user runs it — the real kubectl finds the plugin on
//! PATH — against the real control plane with the controller and one agent per
//! hollow node: status equals the truth during and after a rollout, the OTA trigger
//! upgrades exactly the node named, `--wait` exits by the rollout's outcome, and
//! errors name the fix.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use staticpod_e2e::cluster::SYSTEM_NAMESPACE;
use staticpod_e2e::rollout::{image, static_pod};
use staticpod_e2e::{Cluster, ClusterConfig, free_port, pod_is_ready, wait_for};

const NODES: usize = 4;
/// Pulls of this image fail on every node: its pods never become Ready.
const BROKEN_IMAGE: &str = "nginx:broken";

struct Fixture {
    cluster: Cluster,
    /// A directory holding only `kubectl-staticpod`, put first on PATH.
    plugin_dir: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    staticpod_e2e::shared(&FIXTURE, start)
}

fn start() -> anyhow::Result<Fixture> {
    let mut config = ClusterConfig::for_test("plugin", NODES);
    config.fail_images = vec![BROKEN_IMAGE.into()];
    let cluster = Cluster::start(config)?;
    // 30 s verification: a good upgrade takes ~14 s here (the kubelet's restart back-off).
    cluster.start_rollout_system(30)?;
    let plugin_dir = cluster.dir().join("plugin-path");
    fs::create_dir_all(&plugin_dir)?;
    let binary = staticpod_e2e::bins::workspace_binary("kubectl-staticpod")?;
    let link = plugin_dir.join("kubectl-staticpod");
    if !link.exists() {
        std::os::unix::fs::symlink(binary, &link)?;
    }
    Ok(Fixture {
        cluster,
        plugin_dir,
    })
}

/// `kubectl staticpod <args>` with the admin kubeconfig in `KUBECONFIG`.
fn plugin(args: &[&str]) -> Output {
    let f = fixture();
    plugin_as(&f.cluster.kubeconfig().display().to_string(), args)
}

fn plugin_as(kubeconfig: &str, args: &[&str]) -> Output {
    let f = fixture();
    let path = format!(
        "{}:{}",
        f.plugin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(f.cluster.bin_dir().join("kubectl"))
        .arg("staticpod")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("NO_COLOR")
        .output()
        .expect("run kubectl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let out = plugin(args);
    assert!(
        out.status.success(),
        "kubectl staticpod {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn status_json(name: &str) -> Value {
    let text = ok(&["status", name, "-o", "json"]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("-o json is not JSON ({e}): {text}"))
}

/// Installs static pod `name` running `image` on `nodes` as a node installer would,
/// and waits until its mirror pods are Ready.
fn install(c: &Cluster, name: &str, image: &str, nodes: &[usize]) {
    c.install_static_pods(name, image, nodes)
        .expect("mirror pods");
}

/// What the pods say: (ready, upgraded) for `name`, a node counting as upgraded
/// when its pod runs `target_image`.
fn truth(c: &Cluster, name: &str, target_image: &str) -> (u64, u64) {
    let pods = c.mirror_pods(name);
    let ready = pods.iter().filter(|p| pod_is_ready(p)).count() as u64;
    let upgraded = pods.iter().filter(|p| image(p) == target_image).count() as u64;
    (ready, upgraded)
}

fn counts(v: &Value) -> (u64, u64, u64) {
    (
        v["totalNumber"].as_u64().unwrap_or(u64::MAX),
        v["readyNumber"].as_u64().unwrap_or(u64::MAX),
        v["upgradedNumber"].as_u64().unwrap_or(u64::MAX),
    )
}

/// The fleet table row of `name`, split on whitespace.
fn fleet_row(name: &str) -> Vec<String> {
    let table = ok(&["status"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header[..5],
        [
            "NAME",
            "AGE",
            "TOTALNUMBER",
            "READYNUMBER",
            "UPGRADEDNUMBER"
        ],
        "{table}"
    );
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|r| r.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
}

#[test]
fn status_equals_the_truth_during_and_after_the_seed_walkthrough() {
    let c = &fixture().cluster;
    let _report = c.report_on_failure();
    let all: Vec<usize> = (0..NODES).collect();
    install(c, "nginx", "nginx:1.19.1", &all);

    // Adoption: complete at once, nothing restarted.
    c.apply_json(&static_pod("nginx", "auto", 2, "nginx:1.19.1"))
        .expect("kubectl apply");
    let out = plugin(&["status", "nginx", "--wait", "--timeout", "60s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("Complete - nginx (4/4 upgraded)"),
        "{}",
        stdout(&out)
    );
    let n = NODES.to_string();
    assert_eq!(fleet_row("nginx")[2..5], [n.as_str(), &n, &n]);

    c.apply_json(&static_pod("nginx", "auto", 2, "nginx:1.19.2"))
        .expect("kubectl apply");
    let target = wait_for(
        "the controller's target revision",
        Duration::from_secs(30),
        || {
            let sp = c.kubectl_json(&["get", "staticpod", "nginx"])?;
            let plugin = status_json("nginx");
            Ok(sp["status"]["targetRevision"]
                .as_str()
                .filter(|r| *r == plugin["targetRevision"])
                .map(str::to_owned))
        },
    )
    .expect("the plugin and the controller agree on the target");

    // During the rollout: whenever the pods did not change across a plugin call,
    // its numbers must equal what the pods say.
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut compared_mid_rollout, mut states_seen) = (0, std::collections::BTreeSet::new());
    loop {
        let before = truth(c, "nginx", "nginx:1.19.2");
        let view = status_json("nginx");
        let after = truth(c, "nginx", "nginx:1.19.2");
        for node in view["nodes"].as_array().into_iter().flatten() {
            states_seen.insert(node["state"].as_str().unwrap_or("?").to_owned());
        }
        if before == after {
            let (total, ready, upgraded) = counts(&view);
            assert_eq!(
                (total, ready, upgraded),
                (NODES as u64, before.0, before.1),
                "plugin (total, ready, upgraded) vs the pods: {view:#}"
            );
            if 0 < upgraded && upgraded < NODES as u64 {
                compared_mid_rollout += 1;
            }
            if upgraded == NODES as u64 && ready == NODES as u64 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish: {view:#}\n{}",
            c.log_report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        compared_mid_rollout > 0,
        "the plugin was compared with the truth mid-rollout (states seen: {states_seen:?})"
    );
    assert!(states_seen.contains("Upgrading"), "{states_seen:?}");

    // After: complete, every node listed as Upgraded on the target revision.
    let out = plugin(&["status", "nginx", "--wait", "--timeout", "60s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let view = status_json("nginx");
    assert_eq!(view["phase"], "Complete", "{view:#}");
    assert_eq!(view["targetRevision"], target.as_str());
    let row = fleet_row("nginx");
    assert_eq!(row[2..5], [n.as_str(), &n, &n], "{row:?}");
    assert!(
        row.contains(&"Complete".to_owned()) && row.contains(&target),
        "{row:?}"
    );
    let table = ok(&["status", "nginx"]);
    assert!(table.contains("Status:          ✔ Complete"), "{table}");
    let upgraded_rows = table
        .lines()
        .filter(|l| l.starts_with("node-") && l.split_whitespace().nth(4) == Some("Upgraded"))
        .count();
    assert_eq!(upgraded_rows, NODES, "{table}");
}

#[test]
fn upgrade_in_ota_mode_upgrades_exactly_the_node_named() {
    let c = &fixture().cluster;
    let _report = c.report_on_failure();
    let all: Vec<usize> = (0..NODES).collect();
    install(c, "edge", "edge:1.0", &all);
    c.apply_json(&static_pod("edge", "ota", 1, "edge:2.0"))
        .expect("kubectl apply");
    wait_for("every node AwaitingOTA", Duration::from_secs(30), || {
        let v = status_json("edge");
        Ok((v["counts"]["AwaitingOTA"] == NODES as u64).then_some(()))
    })
    .expect("awaiting");
    let target = status_json("edge")["targetRevision"]
        .as_str()
        .expect("target")
        .to_owned();

    let out = ok(&["upgrade", "edge", "--node", "node-3"]);
    assert_eq!(
        out,
        format!("staticpod/edge node node-3: upgrade to revision {target} requested\n")
    );
    wait_for("node-3 upgraded", Duration::from_secs(120), || {
        let v = status_json("edge");
        let node3 = v["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["node"] == "node-3"))
            .cloned();
        Ok(node3
            .filter(|n| n["state"] == "Upgraded" && n["podReady"] == true)
            .map(|_| ()))
    })
    .expect("node-3");
    for pod in c.mirror_pods("edge") {
        let expected = if pod["spec"]["nodeName"] == "node-3" {
            "edge:2.0"
        } else {
            "edge:1.0"
        };
        assert_eq!(image(&pod), expected, "{}", pod["metadata"]["name"]);
    }
    let v = status_json("edge");
    assert_eq!(counts(&v), (NODES as u64, NODES as u64, 1));
    assert_eq!(v["counts"]["AwaitingOTA"], NODES as u64 - 1);

    // Not upgradable: already on the target, and a node that does not exist.
    let out = plugin(&["upgrade", "edge", "--node", "node-3", "--node", "node-9"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "node node-3: not upgraded: already runs the target revision {target}"
        )),
        "{err}"
    );
    assert!(
        err.contains("node node-9: not upgraded: there is no node node-9 in the cluster"),
        "{err}"
    );
}

#[test]
fn wait_exits_zero_on_completion_three_on_a_failed_node_and_four_on_timeout() {
    let c = &fixture().cluster;
    let _report = c.report_on_failure();
    install(c, "crash", "crash:1.0", &[0, 1]);
    c.apply_json(&static_pod("crash", "auto", 1, "crash:1.0"))
        .expect("kubectl apply");
    let out = plugin(&["status", "crash", "--wait", "--timeout", "60s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    c.apply_json(&static_pod("crash", "auto", 1, BROKEN_IMAGE))
        .expect("kubectl apply");
    let out = plugin(&["status", "crash", "--wait", "--timeout", "2s"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("timed out after 2s"),
        "{}",
        stderr(&out)
    );

    let started = Instant::now();
    let out = plugin(&["status", "crash", "--wait", "--timeout", "240s"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("staticpod crash rollout failed: revision"),
        "{err}"
    );
    assert!(err.contains("rolled back there"), "{err}");
    assert!(
        stdout(&out)
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("Failed - crash"),
        "{}",
        stdout(&out)
    );
    eprintln!("--wait saw the failure after {:?}", started.elapsed());
    let v = status_json("crash");
    assert_eq!(v["phase"], "Failed");
    assert_eq!(
        v["counts"]["Failed"], 1,
        "maxUnavailable 1: one node tried, then the halt"
    );
}

#[test]
fn errors_name_the_fix() {
    let f = fixture();
    let c = &f.cluster;
    let _report = c.report_on_failure();
    c.apply_json(&static_pod("gateway", "ota", 1, "gateway:1.0"))
        .expect("kubectl apply");

    let out = plugin(&["status", "gatway"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "staticpod \"gatway\" not found in namespace default; did you mean \"gateway\"?"
        ),
        "{}",
        stderr(&out)
    );

    let out = plugin(&["status", "gateway", "-n", "kube-system"]);
    assert!(
        stderr(&out)
            .contains("A staticpod \"gateway\" exists in namespace default: add -n default."),
        "{}",
        stderr(&out)
    );

    // No server: a kubeconfig pointing at a port nothing listens on.
    let admin = fs::read_to_string(c.kubeconfig()).expect("kubeconfig");
    let dead = admin.replace(
        c.server(),
        &format!("https://127.0.0.1:{}", free_port().expect("port")),
    );
    let dead_path = c.dir().join("dead.kubeconfig");
    fs::write(&dead_path, dead).expect("write");
    let out = plugin_as(&dead_path.display().to_string(), &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach the Kubernetes API server at https://127.0.0.1:"),
        "{}",
        stderr(&out)
    );

    // The --kubeconfig flag wins over KUBECONFIG.
    let admin_path = c.kubeconfig().display().to_string();
    let out = plugin_as(
        &dead_path.display().to_string(),
        &["status", "--kubeconfig", &admin_path],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // RBAC: may read StaticPods but not pods.
    let role = json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": "plugin-viewer", "namespace": SYSTEM_NAMESPACE}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": "plugin-viewer", "namespace": "default"},
             "rules": [{"apiGroups": ["apps.openyurt.io"], "resources": ["staticpods"], "verbs": ["get", "list"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": "plugin-viewer", "namespace": "default"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "plugin-viewer"},
             "subjects": [{"kind": "ServiceAccount", "name": "plugin-viewer", "namespace": SYSTEM_NAMESPACE}]}
        ]
    });
    c.install_rbac().expect("rbac");
    c.apply_json(&role).expect("kubectl apply");
    let viewer = c.identity_kubeconfig("plugin-viewer").expect("token");
    let out = plugin_as(
        &viewer.display().to_string(),
        &["status", "gateway", "-n", "default"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // Nodes, pods and the ConfigMap are read at once; whichever is refused first is named.
    assert!(err.contains("forbidden: you may not "), "{err}");
    assert!(
        [
            "list nodes",
            "list pods in namespace default",
            "get configmaps in namespace default"
        ]
        .iter()
        .any(|what| err.contains(what)),
        "{err}"
    );
    assert!(
        err.contains("Ask a cluster admin for a Role granting"),
        "{err}"
    );

    // --watch without a terminal prints frames (no screen clearing) until --timeout.
    let out = plugin(&["status", "gateway", "--watch", "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let frames = stdout(&out);
    assert!(
        !frames.contains("\x1b["),
        "no escape codes off a terminal: {frames:?}"
    );
    assert!(frames.contains("Progress:        ["), "{frames}");
    assert!(frames.contains("0/0 upgraded (100%)"), "{frames}");

    // Help with examples on every command, completion, version.
    for command in [
        &["--help"][..],
        &["status", "--help"],
        &["upgrade", "--help"],
        &["completion", "--help"],
    ] {
        assert!(ok(command).contains("Examples:"), "{command:?}");
    }
    assert!(ok(&["completion", "bash"]).contains("kubectl-staticpod"));
    assert_eq!(
        ok(&["--version"]),
        format!("kubectl-staticpod {}\n", env!("CARGO_PKG_VERSION"))
    );
    let yaml = ok(&["status", "gateway", "-o", "yaml"]);
    assert!(
        yaml.contains("name: gateway") && yaml.contains("nodes: []"),
        "{yaml}"
    );
}
