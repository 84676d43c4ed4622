//! The controller with one agent per hollow node, against the real control plane:
//! the seed walkthrough (adoption, then an auto rolling upgrade within
//! maxUnavailable, checked at every pod event), a revision that cannot start
//! (rolled back on the first node, the rollout halted, then resumed by a fixed
//! template), and ota mode. These share one cluster and run in parallel: each uses
//! its own StaticPod and never stops a node or the controller.

use std::fs;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use staticpod_api::conventions::UPGRADE_REQUEST_ANNOTATION;
use staticpod_e2e::rollout::{plain_manifest, static_pod};
use staticpod_e2e::{
    Cluster, ClusterConfig, PodWatch, http_request, pod_is_ready, wait_for, write_manifest,
};

const NODES: usize = 5;
/// Pulls of this image fail on every node.
const BROKEN_IMAGE: &str = "registry.invalid/broken:1";

struct Fixture {
    cluster: Cluster,
    /// OTA API port of each node's agent.
    ota_ports: Vec<u16>,
    /// The controller's `/metrics` port.
    metrics_port: u16,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    staticpod_e2e::shared(&FIXTURE, start)
}

fn start() -> anyhow::Result<Fixture> {
    let mut config = ClusterConfig::for_test("controller", NODES);
    config.fail_images = vec![BROKEN_IMAGE.into()];
    let cluster = Cluster::start(config)?;
    // 30 s verification: a good upgrade takes ~14 s here (the kubelet's restart
    // back-off). Agents and controller run as their ServiceAccounts from
    // manifests/: a missing permission fails here.
    let (ota_ports, metrics_port) = cluster.start_rollout_system(30)?;
    Ok(Fixture {
        cluster,
        ota_ports,
        metrics_port,
    })
}

/// The seed's StaticPod: nginx, auto, maxUnavailable 2.
fn nginx(image: &str) -> Value {
    static_pod("nginx", "auto", 2, image)
}

fn condition(sp: &Value, type_: &str) -> Value {
    sp["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Reasons of the Events on StaticPod `name`.
fn event_reasons(c: &Cluster, name: &str) -> Vec<String> {
    let list = c
        .kubectl_json(&[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            &format!("involvedObject.kind=StaticPod,involvedObject.name={name}"),
        ])
        .unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn the_seed_walkthrough_adopts_then_rolls_out_within_max_unavailable() {
    let c = &fixture().cluster;
    let _report = c.report_on_failure();
    let plain = plain_manifest("nginx", "nginx:1.19.1");
    for node in c.nodes() {
        write_manifest(&node.manifest_dir, "nginx", &plain).expect("manifest");
    }
    wait_for("5 nginx mirror pods Ready", Duration::from_secs(90), || {
        Ok((c
            .mirror_pods("nginx")
            .iter()
            .filter(|p| pod_is_ready(p))
            .count()
            == NODES)
            .then_some(()))
    })
    .expect("mirror pods");

    // Adoption: the StaticPod matches what runs, so nothing is rewritten.
    c.apply_json(&nginx("nginx:1.19.1")).expect("kubectl apply");
    wait_for("adopted: 5 5 5", Duration::from_secs(60), || {
        Ok(c.static_pod_row("nginx")
            .filter(|r| r.len() >= 5 && r[2..5] == ["5", "5", "5"])
            .map(|_| ()))
    })
    .expect("adopted");
    for node in c.nodes() {
        assert_eq!(
            fs::read_to_string(node.manifest_dir.join("nginx.yaml")).expect("file"),
            plain,
            "{} untouched",
            node.name
        );
    }

    // The image change rolls out; at no instant the API server published were
    // more than 2 nodes down.
    let watch = PodWatch::start(c, "default").expect("watch");
    wait_for("the watch sees the pods", Duration::from_secs(30), || {
        Ok((watch.len() >= NODES).then_some(()))
    })
    .expect("watch");
    let adopted =
        c.kubectl_json(&["get", "staticpod", "nginx"]).expect("get")["status"]["targetRevision"]
            .clone();
    c.apply_json(&nginx("nginx:1.19.2")).expect("kubectl apply");
    let target = wait_for("the new target in status", Duration::from_secs(30), || {
        let sp = c.kubectl_json(&["get", "staticpod", "nginx"])?;
        Ok(sp["status"]["targetRevision"]
            .as_str()
            .filter(|r| !r.is_empty() && adopted != *r)
            .map(str::to_owned))
    })
    .expect("target");
    wait_for("rollout complete: 5 5 5", Duration::from_secs(300), || {
        let pods = c.mirror_pods("nginx");
        let row = c.static_pod_row("nginx").unwrap_or_default();
        Ok((pods.len() == NODES
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.19.2" && pod_is_ready(p))
            && row.len() >= 5
            && row[2..5] == ["5", "5", "5"])
        .then_some(()))
    })
    .expect("rollout");
    let (worst, moment) = watch.worst_moment("nginx", &target, &c.node_names());
    eprintln!(
        "rollout finished; {} pod events, at most {worst} nodes unavailable at once",
        watch.len()
    );
    assert!(
        worst <= 2,
        "{worst} nodes unavailable at once ({moment}); maxUnavailable is 2"
    );
    assert!(worst >= 1, "the rollout was observed in progress");
    let sp = c.kubectl_json(&["get", "staticpod", "nginx"]).expect("get");
    assert_eq!(condition(&sp, "Complete")["status"], "True", "{sp:#}");
    let reasons = event_reasons(c, "nginx");
    for reason in ["UpgradeRequested", "NodeUpgraded", "RolloutComplete"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "event {reason} missing: {reasons:?}"
        );
    }
    let (status, metrics) =
        http_request(fixture().metrics_port, "GET", "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            r#"staticpod_controller_nodes{namespace="default",staticpod="nginx",state="Upgraded"} 5"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("staticpod_controller_upgrade_requests_total"),
        "{metrics}"
    );
}

#[test]
fn a_revision_that_cannot_start_halts_the_rollout_until_the_template_is_fixed() {
    let c = &fixture().cluster;
    let _report = c.report_on_failure();
    for node in c.nodes() {
        write_manifest(&node.manifest_dir, "web", &plain_manifest("web", "web:1.0"))
            .expect("manifest");
    }
    wait_for("5 web mirror pods Ready", Duration::from_secs(90), || {
        Ok((c
            .mirror_pods("web")
            .iter()
            .filter(|p| pod_is_ready(p))
            .count()
            == NODES)
            .then_some(()))
    })
    .expect("web pods");
    c.apply_json(&static_pod("web", "auto", 1, "web:1.0"))
        .expect("kubectl apply");
    wait_for("web adopted", Duration::from_secs(60), || {
        Ok(c.static_pod_row("web")
            .filter(|r| r.len() >= 5 && r[2..5] == ["5", "5", "5"])
            .map(|_| ()))
    })
    .expect("adopted");

    // The broken image is tried on the first node only, rolled back there, and
    // the rollout stops spreading.
    c.apply_json(&static_pod("web", "auto", 1, BROKEN_IMAGE))
        .expect("kubectl apply");
    let failed = wait_for("UpgradeFailed condition", Duration::from_secs(120), || {
        let sp = c.kubectl_json(&["get", "staticpod", "web"])?;
        let progressing = condition(&sp, "Progressing");
        Ok((progressing["reason"] == "UpgradeFailed").then_some(progressing))
    })
    .expect("failed");
    let message = failed["message"].as_str().unwrap_or_default().to_owned();
    assert_eq!(failed["status"], "False", "{failed:#}");
    assert!(message.contains("node-1"), "names the node: {message}");
    assert!(message.contains("ImagePull"), "names the reason: {message}");
    wait_for(
        "node-1 rolled back and Ready",
        Duration::from_secs(60),
        || {
            Ok(c.kubectl_json(&["get", "pod", "web-node-1"])
                .ok()
                .filter(|p| p["spec"]["containers"][0]["image"] == "web:1.0" && pod_is_ready(p))
                .map(|_| ()))
        },
    )
    .expect("rolled back");
    // Halted: a reconcile after the failure (forced by a harmless label) asks no
    // other node.
    c.kubectl(&["label", "staticpod", "web", "poke=1", "--overwrite"])
        .expect("label");
    wait_for("the failure event", Duration::from_secs(30), || {
        Ok(event_reasons(c, "web")
            .iter()
            .any(|r| r == "UpgradeFailed")
            .then_some(()))
    })
    .expect("event");
    for pod in c.mirror_pods("web") {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        if name == "web-node-1" {
            continue;
        }
        assert_eq!(pod["spec"]["containers"][0]["image"], "web:1.0", "{name}");
        assert!(
            pod["metadata"]["annotations"][UPGRADE_REQUEST_ANNOTATION].is_null(),
            "{name} was not asked while the rollout is halted: {pod:#}"
        );
    }
    let row = c.static_pod_row("web").unwrap_or_default();
    assert_eq!(row[2..5], ["5", "5", "0"], "{row:?}");

    // A fixed template is a new target: the rollout resumes and completes.
    c.apply_json(&static_pod("web", "auto", 1, "web:2.0"))
        .expect("kubectl apply");
    wait_for("web rolled out: 5 5 5", Duration::from_secs(300), || {
        let pods = c.mirror_pods("web");
        let row = c.static_pod_row("web").unwrap_or_default();
        Ok((pods.len() == NODES
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "web:2.0" && pod_is_ready(p))
            && row.len() >= 5
            && row[2..5] == ["5", "5", "5"])
        .then_some(()))
    })
    .expect("resumed");
}

fn need_upgrade(pod: &Value) -> Option<String> {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodNeedUpgrade")
        .and_then(|c| c["status"].as_str())
        .map(str::to_owned)
}

#[test]
fn ota_marks_every_node_and_upgrades_only_the_one_triggered() {
    let f = fixture();
    let c = &f.cluster;
    let _report = c.report_on_failure();
    let plain = plain_manifest("edge", "edge:1.0");
    for node in c.nodes() {
        write_manifest(&node.manifest_dir, "edge", &plain).expect("manifest");
    }
    let pod = |node: &str| {
        c.kubectl_json(&["get", "pod", &format!("edge-{node}")])
            .ok()
    };
    let edge = |image: &str| {
        json!({
            "apiVersion": "apps.openyurt.io/v1alpha1", "kind": "StaticPod",
            "metadata": {"name": "edge", "namespace": "default"},
            "spec": {"staticPodManifest": "edge", "upgradeStrategy": {"type": "ota"},
                     "template": {"spec": {"containers": [{"name": "edge", "image": image}]}}}
        })
    };
    wait_for("edge pods Ready", Duration::from_secs(90), || {
        Ok(c.nodes()
            .iter()
            .all(|n| pod(&n.name).is_some_and(|p| pod_is_ready(&p)))
            .then_some(()))
    })
    .expect("edge pods");
    c.apply_json(&edge("edge:2.0")).expect("kubectl apply");

    // Every out-of-date pod is marked; kubelet's own conditions stay; nothing is upgraded.
    wait_for(
        "PodNeedUpgrade=True everywhere",
        Duration::from_secs(60),
        || {
            Ok(c.nodes()
                .iter()
                .all(|n| pod(&n.name).and_then(|p| need_upgrade(&p)).as_deref() == Some("True"))
                .then_some(()))
        },
    )
    .expect("marked");
    for node in c.nodes() {
        let p = pod(&node.name).expect("pod");
        assert!(
            pod_is_ready(&p),
            "the kubelet's Ready condition is kept on {}",
            node.name
        );
        assert_eq!(
            p["spec"]["containers"][0]["image"], "edge:1.0",
            "ota upgrades nothing by itself"
        );
    }

    // The node-local trigger on node 2 upgrades node 2 only; its mark becomes False.
    // The agent judges from its own watch, which may trail the API server by a
    // moment: until it has seen the mark it answers 403 and does nothing.
    let (status, body) = wait_for(
        "the agent accepts the trigger",
        Duration::from_secs(30),
        || {
            let (status, body) = http_request(
                f.ota_ports[1],
                "POST",
                "/openyurt.io/v1/namespaces/default/pods/edge-node-2/upgrade",
            )?;
            Ok((status != 403).then_some((status, body)))
        },
    )
    .expect("http");
    assert_eq!(
        (status, body.as_str()),
        (200, "Start updating pod default/edge-node-2")
    );
    wait_for(
        "node-2 upgraded and unmarked",
        Duration::from_secs(120),
        || {
            Ok(pod("node-2")
                .filter(|p| {
                    p["spec"]["containers"][0]["image"] == "edge:2.0"
                        && pod_is_ready(p)
                        && need_upgrade(p).as_deref() == Some("False")
                })
                .map(|_| ()))
        },
    )
    .expect("node-2");
    for node in ["node-1", "node-3", "node-4", "node-5"] {
        assert_eq!(
            pod(node).expect("pod")["spec"]["containers"][0]["image"],
            "edge:1.0",
            "{node} untouched"
        );
    }
    let row: Vec<String> = c
        .kubectl(&["get", "sp", "edge", "--no-headers"])
        .expect("get")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(row[2..5], ["5", "5", "1"], "{row:?}");
}

#[test]
fn a_hand_edited_or_deleted_manifest_configmap_is_repaired() {
    let c = &fixture().cluster;
    let _report = c.report_on_failure();
    // No node runs it: the ConfigMap is kept all the same, ready for the first.
    c.apply_json(&static_pod("repair", "auto", 1, "repair:1"))
        .expect("kubectl apply");
    let data = |c: &Cluster| {
        c.kubectl_json(&["get", "configmap", "staticpod-repair"])
            .ok()
            .map(|cm| cm["data"].clone())
    };
    let original = wait_for("the manifest ConfigMap", Duration::from_secs(30), || {
        Ok(data(c).filter(|d| {
            d.as_object().is_some_and(|m| m.len() == 1)
                && d["repair.yaml"]
                    .as_str()
                    .is_some_and(|y| y.contains("image: repair:1"))
        }))
    })
    .expect("ConfigMap");

    c.kubectl(&[
        "patch",
        "configmap",
        "staticpod-repair",
        "--type=merge",
        "-p",
        r#"{"data": {"repair.yaml": "garbage", "extra.yaml": "kind: Pod"}}"#,
    ])
    .expect("edit");
    wait_for("edit undone", Duration::from_secs(30), || {
        Ok(data(c).filter(|d| *d == original).map(|_| ()))
    })
    .expect("repaired");

    c.kubectl(&["delete", "configmap", "staticpod-repair"])
        .expect("delete");
    wait_for("recreated", Duration::from_secs(30), || {
        Ok(data(c).filter(|d| *d == original).map(|_| ()))
    })
    .expect("recreated");
    let cm = c
        .kubectl_json(&["get", "configmap", "staticpod-repair"])
        .expect("get");
    assert_eq!(
        cm["metadata"]["ownerReferences"][0]["kind"], "StaticPod",
        "owned, so it goes with its StaticPod: {cm:#}"
    );
}
