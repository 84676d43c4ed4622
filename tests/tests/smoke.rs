//! Smoke tests of the local control plane: the real kube-apiserver and kubectl, and
//! hollow kubelets that turn manifest files into mirror pods.

use std::fs;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use staticpod_e2e::{Cluster, ClusterConfig, pod_is_ready, wait_for, write_manifest};

const BROKEN_IMAGE: &str = "registry.invalid/broken:1";

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    staticpod_e2e::shared(&CLUSTER, || {
        let mut config = ClusterConfig::for_test("smoke", 3);
        config.fail_images = vec![BROKEN_IMAGE.into()];
        Cluster::start(config)
    })
}

/// A minimal Pod manifest named `name` running `image`.
fn pod_manifest(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  labels:\n    app: {name}\n\
         spec:\n  containers:\n  - name: main\n    image: {image}\n"
    )
}

fn get_pod(c: &Cluster, name: &str) -> Option<Value> {
    c.kubectl_json(&["get", "pod", name, "-n", "default"]).ok()
}

#[test]
fn api_server_is_ready_and_kubectl_lists_three_ready_nodes() {
    let c = cluster();
    let _report = c.report_on_failure();

    let version = c
        .kubectl(&["version", "-o", "json"])
        .expect("kubectl version");
    let version: Value = serde_json::from_str(&version).expect("version JSON");
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.37.2");
    assert_eq!(version["clientVersion"]["gitVersion"], "v1.37.2");
    assert_eq!(version["serverVersion"]["minor"], "37");

    let table = c.kubectl(&["get", "nodes"]).expect("kubectl get nodes");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let mut names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    names.sort();
    assert_eq!(names, ["node-1", "node-2", "node-3"], "{table}");
    assert!(rows.iter().all(|r| r[1] == "Ready"), "{table}");
}

#[test]
fn a_manifest_file_becomes_a_mirror_pod_that_follows_edits_and_deletion() {
    let c = cluster();
    let _report = c.report_on_failure();
    let node = c.node(1).expect("node-2");
    let mirror = format!("web-{}", node.name);

    let start = Instant::now();
    write_manifest(
        &node.manifest_dir,
        "web",
        &pod_manifest("web", "nginx:1.19.1"),
    )
    .expect("write manifest");
    let pod = wait_for("mirror pod Ready", Duration::from_secs(60), || {
        Ok(get_pod(c, &mirror).filter(pod_is_ready))
    })
    .expect("mirror pod");
    let created = start.elapsed();
    assert_eq!(pod["spec"]["nodeName"], node.name.as_str());
    assert_eq!(pod["status"]["phase"], "Running");
    assert!(
        pod["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(),
        "{pod:#}"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/config.source"],
        "file"
    );
    assert_eq!(pod["spec"]["containers"][0]["image"], "nginx:1.19.1");
    let first_uid = pod["metadata"]["uid"].as_str().expect("uid").to_owned();
    for other in c.nodes().iter().filter(|n| n.name != node.name) {
        assert!(
            get_pod(c, &format!("web-{}", other.name)).is_none(),
            "only {} has the file",
            node.name
        );
    }

    let start = Instant::now();
    write_manifest(
        &node.manifest_dir,
        "web",
        &pod_manifest("web", "nginx:1.19.2"),
    )
    .expect("write manifest");
    let pod = wait_for("mirror pod replaced", Duration::from_secs(60), || {
        Ok(get_pod(c, &mirror)
            .filter(|p| p["spec"]["containers"][0]["image"] == "nginx:1.19.2" && pod_is_ready(p)))
    })
    .expect("replaced mirror pod");
    let replaced = start.elapsed();
    assert_ne!(
        pod["metadata"]["uid"].as_str(),
        Some(first_uid.as_str()),
        "an edit replaces the pod"
    );

    let start = Instant::now();
    fs::remove_file(node.manifest_dir.join("web.yaml")).expect("remove manifest");
    wait_for("mirror pod deleted", Duration::from_secs(60), || {
        Ok(get_pod(c, &mirror).is_none().then_some(()))
    })
    .expect("mirror pod gone");
    let deleted = start.elapsed();
    eprintln!(
        "static pod timings on {}: file written -> Ready mirror pod {created:.1?}; \
         edited -> new pod Ready {replaced:.1?}; deleted -> mirror pod gone {deleted:.1?}",
        node.name
    );
}

#[test]
fn an_image_the_node_is_told_to_fail_never_becomes_ready() {
    let c = cluster();
    let _report = c.report_on_failure();
    let node = c.node(0).expect("node-1");
    let mirror = format!("broken-{}", node.name);
    write_manifest(
        &node.manifest_dir,
        "broken",
        &pod_manifest("broken", BROKEN_IMAGE),
    )
    .expect("write manifest");
    let pod = wait_for("pull failure reported", Duration::from_secs(60), || {
        Ok(get_pod(c, &mirror).filter(|p| {
            let reason = &p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"];
            reason == "ErrImagePull" || reason == "ImagePullBackOff"
        }))
    })
    .expect("broken pod");
    assert!(!pod_is_ready(&pod), "{pod:#}");
    fs::remove_file(node.manifest_dir.join("broken.yaml")).expect("remove manifest");
}

#[test]
fn a_stopped_kubelet_makes_its_node_not_ready_and_a_restart_brings_it_back() {
    let c = cluster();
    let _report = c.report_on_failure();
    let name = c.node(2).expect("node-3").name.clone();

    let start = Instant::now();
    c.stop_node(2).expect("stop node-3");
    let status = wait_for("node-3 not Ready", Duration::from_secs(60), || {
        Ok(c.node_ready(&name)?.filter(|s| s != "True"))
    })
    .expect("node-3 goes NotReady");
    let went_down = start.elapsed();
    assert_eq!(status, "Unknown", "a silent kubelet is Unknown, not False");
    for other in ["node-1", "node-2"] {
        assert_eq!(
            c.node_ready(other).expect("get node").as_deref(),
            Some("True")
        );
    }

    let start = Instant::now();
    c.start_node(2).expect("restart node-3");
    wait_for("node-3 Ready again", Duration::from_secs(60), || {
        Ok(c.node_ready(&name)?.filter(|s| s == "True"))
    })
    .expect("node-3 Ready again");
    let came_back = start.elapsed();
    eprintln!(
        "node-3: kubelet killed -> Ready=Unknown {went_down:.1?}; restarted -> Ready {came_back:.1?}"
    );
}
