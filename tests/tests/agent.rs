//! The node agent against the real control plane: one agent process per hollow
//! node, each on its node's static-pod directory.

use std::fs;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use staticpod_api::conventions::{
    STATIC_POD_LABEL, UPGRADE_FAILURE_ANNOTATION, UPGRADE_REQUEST_ANNOTATION,
};
use staticpod_api::testing::static_pod;
use staticpod_api::{REVISION_ANNOTATION, render_manifest};
use staticpod_e2e::{
    Cluster, ClusterConfig, free_port, http_request, pod_is_ready, wait_for, write_manifest,
};

const BROKEN_IMAGE: &str = "registry.invalid/broken:1";
const WAIT: Duration = Duration::from_secs(120);

struct Fixture {
    cluster: Cluster,
    /// OTA API port of each node's agent.
    ota_ports: Vec<u16>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    staticpod_e2e::shared(&FIXTURE, start)
}

fn start() -> anyhow::Result<Fixture> {
    let mut config = ClusterConfig::for_test("agent", 4);
    config.fail_images = vec![BROKEN_IMAGE.into()];
    let cluster = Cluster::start(config)?;
    let mut ota_ports = Vec::new();
    for i in 0..4 {
        let port = free_port()?;
        start_agent(&cluster, i, port)?;
        ota_ports.push(port);
    }
    Ok(Fixture { cluster, ota_ports })
}

fn start_agent(c: &Cluster, index: usize, port: u16) -> anyhow::Result<()> {
    c.start_agent(index, port, 40)
}

fn state_dir(c: &Cluster, index: usize) -> std::path::PathBuf {
    c.agent_state_dir(index).expect("node")
}

/// The rendered manifest of StaticPod `name` running `image`, and its revision.
fn manifest(name: &str, image: &str) -> (String, String) {
    let m = render_manifest(&static_pod(name, image)).expect("render");
    (m.revision.to_string(), m.yaml)
}

/// Puts revision `image` of `name` on every node the way an installer would, and
/// waits for the Ready mirror pods.
fn install_everywhere(c: &Cluster, name: &str, image: &str) -> String {
    let (revision, text) = manifest(name, image);
    for node in c.nodes() {
        write_manifest(&node.manifest_dir, name, &text).expect("write manifest");
    }
    for node in c.nodes() {
        wait_pod(
            c,
            &format!("{name}-{}", node.name),
            "mirror pod Ready",
            |p| revision_of(p) == revision && pod_is_ready(p),
        );
    }
    revision
}

/// Publishes revision `image` of `name` in its manifest ConfigMap, as the controller does.
fn publish(c: &Cluster, name: &str, image: &str) -> String {
    let (revision, text) = manifest(name, image);
    let cm = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": format!("staticpod-{name}"), "namespace": "default", "labels": {STATIC_POD_LABEL: name}},
        "data": {format!("{name}.yaml"): text}
    });
    let out = c
        .kubectl_with_input(&["apply", "-f", "-"], &cm.to_string())
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    revision
}

fn request(c: &Cluster, pod: &str, revision: &str) {
    c.kubectl(&[
        "annotate",
        "pod",
        pod,
        "--overwrite",
        &format!("{UPGRADE_REQUEST_ANNOTATION}={revision}"),
    ])
    .expect("annotate");
}

fn get_pod(c: &Cluster, name: &str) -> Option<Value> {
    c.kubectl_json(&["get", "pod", name]).ok()
}

fn wait_pod(c: &Cluster, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_for(&format!("{name}: {what}"), WAIT, || {
        Ok(get_pod(c, name).filter(|p| check(p)))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", c.log_report()))
}

fn revision_of(pod: &Value) -> String {
    pod["metadata"]["annotations"][REVISION_ANNOTATION]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn a_request_upgrades_that_node_only_and_keeps_a_backup() {
    let f = fixture();
    let c = &f.cluster;
    let _report = c.report_on_failure();
    let a = install_everywhere(c, "web", "nginx:1.19.1");
    let b = publish(c, "web", "nginx:1.19.2");
    request(c, "web-node-2", &b);

    let pod = wait_pod(c, "web-node-2", "runs the new revision, Ready", |p| {
        revision_of(p) == b && pod_is_ready(p)
    });
    assert_eq!(pod["spec"]["containers"][0]["image"], "nginx:1.19.2");
    for other in ["web-node-1", "web-node-3"] {
        assert_eq!(
            revision_of(&get_pod(c, other).expect("pod")),
            a,
            "{other} untouched"
        );
    }
    let backups = state_dir(c, 1).join("backups/web");
    let names: Vec<String> = fs::read_dir(&backups)
        .expect("backups")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(&format!("-{a}.yaml"))),
        "{names:?}"
    );
    let on_disk = fs::read_to_string(c.node(1).expect("node").manifest_dir.join("web.yaml"))
        .expect("manifest");
    assert!(on_disk.contains(&b) && on_disk.contains("nginx:1.19.2"));

    // A repeated request for the revision on disk does nothing.
    let uid = pod["metadata"]["uid"].clone();
    request(c, "web-node-2", &b);
    let (status, body) =
        http_request(f.ota_ports[1], "GET", "/openyurt.io/v1/upgrades").expect("status");
    assert_eq!(status, 200, "{body}");
    let upgrades: Value = serde_json::from_str(&body).expect("json");
    let web = upgrades["upgrades"]
        .as_array()
        .expect("list")
        .iter()
        .find(|u| u["staticPod"] == "default/web")
        .cloned()
        .expect("web");
    assert_eq!(
        (web["revision"].as_str(), web["state"].as_str()),
        (Some(b.as_str()), Some("Upgraded")),
        "{upgrades:#}"
    );
    assert!(web["swapMs"].as_f64().is_some(), "{upgrades:#}");
    let (_, metrics) = http_request(f.ota_ports[1], "GET", "/metrics").expect("metrics");
    assert!(
        metrics.contains("staticpod_agent_upgrades_total{outcome=\"upgraded\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        get_pod(c, "web-node-2").expect("pod")["metadata"]["uid"],
        uid
    );
}

#[test]
fn a_revision_that_cannot_start_is_rolled_back_and_the_failure_recorded() {
    let f = fixture();
    let c = &f.cluster;
    let _report = c.report_on_failure();
    let a = install_everywhere(c, "api", "nginx:1.19.1");
    let broken = publish(c, "api", BROKEN_IMAGE);
    request(c, "api-node-1", &broken);

    let pod = wait_pod(
        c,
        "api-node-1",
        "rolled back with the failure recorded",
        |p| {
            revision_of(p) == a
                && pod_is_ready(p)
                && p["metadata"]["annotations"][UPGRADE_FAILURE_ANNOTATION]
                    .as_str()
                    .is_some_and(|v| v.starts_with(&broken))
        },
    );
    let failure = pod["metadata"]["annotations"][UPGRADE_FAILURE_ANNOTATION]
        .as_str()
        .expect("failure");
    assert!(
        failure.contains("ErrImagePull")
            || failure.contains("ImagePullBackOff")
            || failure.contains("not Ready"),
        "{failure}"
    );
    let on_disk = fs::read_to_string(c.node(0).expect("node").manifest_dir.join("api.yaml"))
        .expect("manifest");
    assert!(on_disk.contains(&a), "the old manifest is back, whole");

    let events = c
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=api-node-1",
            "-o",
            "json",
        ])
        .expect("events");
    let events: Value = serde_json::from_str(&events).expect("json");
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(reasons.contains(&"UpgradeFailed"), "{reasons:?}");
}

#[test]
fn the_ota_api_answers_with_upstreams_codes() {
    let f = fixture();
    let c = &f.cluster;
    let _report = c.report_on_failure();
    install_everywhere(c, "ota", "nginx:1.19.1");
    let b = publish(c, "ota", "nginx:1.19.2");
    let port = f.ota_ports[2];
    let upgrade = |pod: &str| {
        http_request(
            port,
            "POST",
            &format!("/openyurt.io/v1/namespaces/default/pods/{pod}/upgrade"),
        )
        .expect("http")
    };

    let (status, body) = upgrade("ota-node-3");
    assert_eq!(status, 403, "PodNeedUpgrade not True: {body}");
    assert!(body.contains("PodNeedUpgrade"), "{body}");
    let (status, body) = upgrade("ota-node-1");
    assert_eq!(status, 403, "a pod on another node: {body}");
    let (status, _) = upgrade("ghost-node-3");
    assert_eq!(status, 404);
    let (status, _) = http_request(
        port,
        "POST",
        "/openyurt.io/v1/namespaces/default/pods/upgrade",
    )
    .expect("http");
    assert_eq!(status, 400);
    let (status, body) = http_request(port, "GET", "/pods").expect("http");
    assert_eq!(status, 200);
    let list: Value = serde_json::from_str(&body).expect("PodList");
    assert_eq!(list["kind"], "PodList");
    assert!(
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|p| p["spec"]["nodeName"] == "node-3")
    );

    // What the controller does in ota mode: mark the pod.
    let patch = json!({"status": {"conditions": [{"type": "PodNeedUpgrade", "status": "True", "reason": "NewRevision"}]}});
    c.kubectl(&[
        "patch",
        "pod",
        "ota-node-3",
        "--subresource=status",
        "--type=strategic",
        "-p",
        &patch.to_string(),
    ])
    .expect("patch");
    let (status, body) = upgrade("ota-node-3");
    assert_eq!(
        (status, body.as_str()),
        (200, "Start updating pod default/ota-node-3")
    );
    wait_pod(c, "ota-node-3", "upgraded through the OTA API", |p| {
        revision_of(p) == b && pod_is_ready(p)
    });
}

#[test]
fn an_agent_killed_mid_upgrade_finishes_the_job_after_a_restart() {
    let f = fixture();
    let c = &f.cluster;
    let _report = c.report_on_failure();
    let a = install_everywhere(c, "crash", "nginx:1.19.1");
    let broken = publish(c, "crash", BROKEN_IMAGE);
    request(c, "crash-node-4", &broken);

    // Kill the agent while the broken revision is on disk and being verified.
    let journal = state_dir(c, 3).join("upgrade.json");
    wait_for("upgrade in flight", WAIT, || {
        Ok(journal.exists().then_some(()))
    })
    .expect("journal");
    c.stop_component("agent-node-4").expect("kill -9");
    let on_disk = fs::read_to_string(c.node(3).expect("node").manifest_dir.join("crash.yaml"))
        .expect("manifest");
    assert!(
        on_disk.contains(&broken) || on_disk.contains(&a),
        "a complete manifest"
    );

    start_agent(c, 3, f.ota_ports[3]).expect("restart agent");
    wait_pod(
        c,
        "crash-node-4",
        "back on the old revision after recovery",
        |p| revision_of(p) == a && pod_is_ready(p),
    );
    wait_for("journal cleared", WAIT, || {
        Ok((!journal.exists()).then_some(()))
    })
    .expect("journal cleared");
}
