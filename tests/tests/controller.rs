//! The controller with one agent per hollow node, against the real control plane:
//! the seed walkthrough (adoption, then an auto rolling upgrade within maxUnavailable).

use std::fs;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use staticpod_api::REVISION_ANNOTATION;
use staticpod_api::conventions::UPGRADE_REQUEST_ANNOTATION;
use staticpod_e2e::{
    Cluster, ClusterConfig, free_port, http_request, pod_is_ready, wait_for, write_manifest,
};

const NODES: usize = 5;

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
    let cluster = Cluster::start(ClusterConfig::for_test("controller", NODES))?;
    let env = vec![(
        "KUBECONFIG".to_string(),
        cluster.kubeconfig().display().to_string(),
    )];
    let mut ota_ports = Vec::new();
    for index in 0..NODES {
        let port = free_port()?;
        cluster.start_agent(index, port, 60)?;
        ota_ports.push(port);
    }
    let crd = staticpod_e2e::bins::repo_root().join("manifests/crd.yaml");
    cluster.kubectl(&["apply", "-f", &crd.display().to_string()])?;
    cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/staticpods.apps.openyurt.io",
        "--timeout=30s",
    ])?;
    let controller = staticpod_e2e::bins::workspace_binary("staticpod-controller")?;
    cluster.start_component("controller", &controller, &[], &env)?;
    Ok(Fixture { cluster, ota_ports })
}

fn static_pod(image: &str) -> Value {
    json!({
        "apiVersion": "apps.openyurt.io/v1alpha1", "kind": "StaticPod",
        "metadata": {"name": "nginx", "namespace": "default"},
        "spec": {
            "staticPodManifest": "nginx",
            "upgradeStrategy": {"type": "auto", "maxUnavailable": 2},
            "template": {"spec": {"containers": [{"name": "nginx", "image": image}]}}
        }
    })
}

fn mirror_pods(c: &Cluster) -> Vec<Value> {
    let list = c
        .kubectl_json(&["get", "pods", "-n", "default"])
        .unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("nginx-node-"))
        })
        .cloned()
        .collect()
}

fn status_row(c: &Cluster) -> Option<Vec<String>> {
    let table = c
        .kubectl(&["get", "staticpods", "nginx", "--no-headers"])
        .ok()?;
    Some(table.split_whitespace().map(str::to_owned).collect())
}

#[test]
fn the_seed_walkthrough_adopts_then_rolls_out_within_max_unavailable() {
    let c = &fixture().cluster;
    let _report = c.report_on_failure();
    let plain = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nginx\n  namespace: default\nspec:\n  containers:\n  - name: nginx\n    image: nginx:1.19.1\n";
    for node in c.nodes() {
        write_manifest(&node.manifest_dir, "nginx", plain).expect("manifest");
    }
    wait_for("5 nginx mirror pods Ready", Duration::from_secs(90), || {
        Ok((mirror_pods(c).iter().filter(|p| pod_is_ready(p)).count() == NODES).then_some(()))
    })
    .expect("mirror pods");

    // Adoption: the StaticPod matches what runs, so nothing is rewritten.
    let out = c
        .kubectl_with_input(
            &["apply", "-f", "-"],
            &static_pod("nginx:1.19.1").to_string(),
        )
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("adopted: 5 5 5", Duration::from_secs(60), || {
        Ok(status_row(c)
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

    // The image change rolls out; at no observed instant are more than 2 nodes down.
    let out = c
        .kubectl_with_input(
            &["apply", "-f", "-"],
            &static_pod("nginx:1.19.2").to_string(),
        )
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target = wait_for("target revision in status", Duration::from_secs(30), || {
        let sp = c.kubectl_json(&["get", "staticpod", "nginx"])?;
        Ok(sp["status"]["targetRevision"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(str::to_owned))
    })
    .expect("target");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut worst = 0;
    loop {
        let pods = mirror_pods(c);
        let down = c
            .nodes()
            .iter()
            .filter(|node| {
                let pod = pods
                    .iter()
                    .find(|p| p["metadata"]["name"] == format!("nginx-{}", node.name).as_str());
                match pod {
                    None => true, // being replaced
                    Some(p) => {
                        let revision = p["metadata"]["annotations"][REVISION_ANNOTATION].as_str()
                            == Some(target.as_str());
                        let requested = p["metadata"]["annotations"][UPGRADE_REQUEST_ANNOTATION]
                            .as_str()
                            == Some(target.as_str());
                        (requested && !revision) || (revision && !pod_is_ready(p))
                    }
                }
            })
            .count();
        worst = worst.max(down);
        assert!(
            down <= 2,
            "{down} nodes unavailable at once; maxUnavailable is 2"
        );
        let row = status_row(c).unwrap_or_default();
        let done = pods.len() == NODES
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.19.2" && pod_is_ready(p))
            && row.len() >= 5
            && row[2..5] == ["5", "5", "5"];
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rollout did not finish: {row:?}\n{}",
            c.log_report()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("rollout finished; at most {worst} nodes were unavailable at once");
    assert!(worst >= 1, "the rollout was observed in progress");
    let sp = c.kubectl_json(&["get", "staticpod", "nginx"]).expect("get");
    let complete = sp["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Complete")
        .cloned()
        .expect("Complete");
    assert_eq!(complete["status"], "True", "{sp:#}");
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
    let plain = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: edge\n  namespace: default\nspec:\n  containers:\n  - name: edge\n    image: edge:1.0\n";
    for node in c.nodes() {
        write_manifest(&node.manifest_dir, "edge", plain).expect("manifest");
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
    let out = c
        .kubectl_with_input(&["apply", "-f", "-"], &edge("edge:2.0").to_string())
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

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
    let (status, body) = http_request(
        f.ota_ports[1],
        "POST",
        "/openyurt.io/v1/namespaces/default/pods/edge-node-2/upgrade",
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
