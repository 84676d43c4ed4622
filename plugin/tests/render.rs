//! Rendering on fixed inputs, colour off unless a test says otherwise: the exact
//! text a person sees, compared whole (snapshot style).

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{
    ConfigMap, Node, NodeCondition, NodeStatus as K8sNodeStatus, Pod, PodCondition, PodSpec,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kubectl_staticpod::error::{Error, Request, close_names};
use kubectl_staticpod::render::{
    self, NodeListing, Palette, fleet_table, progress_bar, static_pod_view, wait_line,
};
use kubectl_staticpod::upgrade::{Outcome, Selection, decide};
use kubectl_staticpod::view::{NodeStatus, Phase, Snapshot, StaticPodView, assess};
use staticpod_api::conventions::{UPGRADE_FAILURE_ANNOTATION, UPGRADE_REQUEST_ANNOTATION};
use staticpod_api::testing::{container, static_pod};
use staticpod_api::{REVISION_ANNOTATION, StaticPod, render_manifest};

const NOW: &str = "2026-03-01T12:00:00Z";

fn now() -> jiff::Timestamp {
    NOW.parse().expect("time")
}

/// A StaticPod `name` running `image`, created 90 minutes before [`NOW`].
fn sp(name: &str, image: &str, mode: &str, max: Option<IntOrString>) -> StaticPod {
    let mut sp = static_pod(name, image);
    sp.spec.upgrade_strategy.type_ = Some(mode.into());
    sp.spec.upgrade_strategy.max_unavailable = max;
    sp.metadata.creation_timestamp = Some(Time("2026-03-01T10:30:00Z".parse().expect("time")));
    sp.metadata.generation = Some(2);
    sp.status = Some(staticpod_api::StaticPodStatus {
        observed_generation: Some(2),
        ..Default::default()
    });
    sp
}

fn revision(sp: &StaticPod) -> String {
    render_manifest(sp).expect("render").revision.to_string()
}

fn node(name: &str, ready: bool) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        status: Some(K8sNodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "Unknown" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The mirror pod of `sp_name` on `node`, running `revision` with `image`.
fn mirror(sp_name: &str, node: &str, revision: &str, image: &str, ready: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("{sp_name}-{node}")),
            namespace: Some("default".into()),
            annotations: Some(BTreeMap::from([(
                REVISION_ANNOTATION.to_owned(),
                revision.to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![container("nginx", image)],
            ..Default::default()
        }),
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn annotate(pod: &mut Pod, key: &str, value: &str) {
    pod.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
}

fn judge(sp: &StaticPod, nodes: &[Node], pods: Vec<Pod>) -> StaticPodView {
    let pods: HashMap<String, Pod> = pods
        .into_iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
        .collect();
    assess(
        sp,
        &Snapshot {
            nodes,
            pods: &pods,
            configmap: None::<&ConfigMap>,
            now: now().as_second(),
        },
    )
}

const LISTING: NodeListing = NodeListing {
    wide: false,
    all_nodes: false,
    group_above: 30,
};

/// nginx rolling from 1.19.1 to 1.19.2 on four nodes: one done, one upgrading,
/// one failed (rolled back), one skipped (node NotReady).
fn rollout() -> (StaticPod, StaticPodView) {
    let old = sp("nginx", "nginx:1.19.1", "auto", Some(IntOrString::Int(2)));
    let new = sp("nginx", "nginx:1.19.2", "auto", Some(IntOrString::Int(2)));
    let (r1, r2) = (revision(&old), revision(&new));
    let nodes = [
        node("node-1", true),
        node("node-2", true),
        node("node-3", true),
        node("node-4", false),
    ];
    let mut upgrading = mirror("nginx", "node-2", &r1, "nginx:1.19.1", true);
    annotate(&mut upgrading, UPGRADE_REQUEST_ANNOTATION, &r2);
    let mut failed = mirror("nginx", "node-3", &r1, "nginx:1.19.1", true);
    annotate(
        &mut failed,
        UPGRADE_FAILURE_ANNOTATION,
        &format!("{r2}: pod not Ready within 60s: ImagePullBackOff"),
    );
    let pods = vec![
        mirror("nginx", "node-1", &r2, "nginx:1.19.2", true),
        upgrading,
        failed,
        mirror("nginx", "node-4", &r1, "nginx:1.19.1", false),
    ];
    let view = judge(&new, &nodes, pods);
    (new, view)
}

#[test]
fn one_static_pod_shows_a_summary_block_then_one_row_per_node() {
    let (sp, view) = rollout();
    let (r1, r2) = (
        revision(&self::sp("nginx", "nginx:1.19.1", "auto", None)),
        revision(&sp),
    );
    let expected = format!(
        "\
Name:            nginx
Namespace:       default
Status:          ✖ Failed
Message:         revision {r2} failed on node node-3: pod not Ready within 60s: ImagePullBackOff; it was rolled back there and the rollout is halted until the template changes
Mode:            auto (maxUnavailable 2 = 2 nodes)
Manifest:        nginx.yaml
Images:          nginx:1.19.1 → nginx:1.19.2
Revision:        {r2}   (target)   1 node    nginx:1.19.2
                 {r1}              3 nodes   nginx:1.19.1
Nodes:           total 4, ready 3, upgraded 1
  Failed:        1
  Upgrading:     1
  Skipped:       1
  Upgraded:      1

NODE     NODE-READY   POD-READY   REVISION     STATE       REASON
node-1   True         True        {r2}   Upgraded
node-2   True         True        {r1}   Upgrading   requested {r2}
node-3   True         True        {r1}   Failed      pod not Ready within 60s: ImagePullBackOff (rolled back)
node-4   False        False       {r1}   Skipped     NodeNotReady
"
    );
    let text = static_pod_view(&view, LISTING, Palette::PLAIN);
    assert_eq!(text, expected, "\n{text}");
}

#[test]
fn colour_goes_on_state_words_only_and_keeps_alignment() {
    let (_, view) = rollout();
    let plain = static_pod_view(&view, LISTING, Palette::PLAIN);
    let coloured = static_pod_view(&view, LISTING, Palette { colour: true });
    assert!(!plain.contains('\x1b'), "colour off means no escape codes");
    assert!(coloured.contains("\x1b[31mFailed\x1b[0m"), "{coloured}");
    assert!(coloured.contains("\x1b[32mUpgraded\x1b[0m"), "{coloured}");
    assert_eq!(
        anstream::adapter::strip_str(&coloured).to_string(),
        plain,
        "stripping the colour gives the plain text, so columns stay aligned"
    );
}

#[test]
fn the_fleet_table_starts_with_kubectl_get_columns() {
    let (_, failed) = rollout();
    let done = sp("edge", "edge:2.0", "ota", None);
    let rev = revision(&done);
    let nodes = [node("node-1", true), node("node-2", true)];
    let pods = vec![
        mirror("edge", "node-1", &rev, "edge:2.0", true),
        mirror("edge", "node-2", &rev, "edge:2.0", true),
    ];
    let complete = judge(&done, &nodes, pods);
    let r2 = failed.summary.target_revision.clone();
    let rows = [complete.summary.clone(), failed.summary.clone()];
    assert_eq!(
        fleet_table(&rows, false, false, now(), Palette::PLAIN),
        format!(
            "\
NAME    AGE   TOTALNUMBER   READYNUMBER   UPGRADEDNUMBER   MODE   REVISION     STATUS
edge    90m   2             2             2                ota    {rev}   Complete
nginx   90m   4             3             1                auto   {r2}   Failed
"
        )
    );
    let wide = fleet_table(&rows, true, true, now(), Palette::PLAIN);
    let header: Vec<&str> = wide
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "AGE",
            "TOTALNUMBER",
            "READYNUMBER",
            "UPGRADEDNUMBER",
            "MODE",
            "REVISION",
            "STATUS",
            "MAXUNAVAILABLE",
            "MANIFEST",
            "MESSAGE"
        ]
    );
    assert!(wide.contains("all 2 nodes run revision"), "{wide}");
}

/// 100 nodes: 95 upgraded, 2 upgrading, 3 NotReady.
fn large_fleet() -> StaticPodView {
    let old = sp(
        "nginx",
        "nginx:1.19.1",
        "auto",
        Some(IntOrString::String("2%".into())),
    );
    let new = sp(
        "nginx",
        "nginx:1.19.2",
        "auto",
        Some(IntOrString::String("2%".into())),
    );
    let (r1, r2) = (revision(&old), revision(&new));
    let mut nodes = Vec::new();
    let mut pods = Vec::new();
    for i in 1..=100 {
        let name = format!("edge-{i:03}");
        let (ready, pod) = match i {
            1..=95 => (true, mirror("nginx", &name, &r2, "nginx:1.19.2", true)),
            96 | 97 => {
                let mut p = mirror("nginx", &name, &r1, "nginx:1.19.1", true);
                annotate(&mut p, UPGRADE_REQUEST_ANNOTATION, &r2);
                (true, p)
            }
            _ => (false, mirror("nginx", &name, &r1, "nginx:1.19.1", false)),
        };
        nodes.push(node(&name, ready));
        pods.push(pod);
    }
    judge(&new, &nodes, pods)
}

#[test]
fn a_large_fleet_groups_nodes_by_state_and_keeps_the_moving_ones_listed() {
    let view = large_fleet();
    let (r1, r2) = (
        revision(&sp("nginx", "nginx:1.19.1", "auto", None)),
        view.summary.target_revision.clone(),
    );
    let text = render::node_list(&view, LISTING, Palette::PLAIN);
    assert_eq!(
        text,
        format!(
            "\
NODE       NODE-READY   POD-READY   REVISION     STATE       REASON
edge-096   True         True        {r1}   Upgrading   requested {r2}
edge-097   True         True        {r1}   Upgrading   requested {r2}

NODES   STATE      REASON         EXAMPLES
3       Skipped    NodeNotReady   edge-098,edge-099,edge-100
95      Upgraded   -              edge-001,edge-002,edge-003,… (+92)

98 nodes grouped by state; --all-nodes lists every node.
"
        )
    );
    let all = render::node_list(
        &view,
        NodeListing {
            all_nodes: true,
            ..LISTING
        },
        Palette::PLAIN,
    );
    assert_eq!(all.lines().count(), 101, "a header and every node");
    let summary = render::summary_block(&view.summary, Palette::PLAIN);
    assert!(
        summary.contains("Mode:            auto (maxUnavailable 2% = 2 nodes)"),
        "{summary}"
    );
    assert!(
        summary.contains("Status:          ◌ Progressing"),
        "{summary}"
    );
}

#[test]
fn an_older_failure_shows_as_rolled_back_and_ota_nodes_await_a_trigger() {
    let old = sp("edge", "edge:1.0", "ota", None);
    let bad = sp("edge", "edge:1.5", "ota", None);
    let new = sp("edge", "edge:2.0", "ota", None);
    let (r1, r_bad, r2) = (revision(&old), revision(&bad), revision(&new));
    let nodes = [node("node-1", true), node("node-2", true)];
    let mut rolled_back = mirror("edge", "node-2", &r1, "edge:1.0", true);
    annotate(
        &mut rolled_back,
        UPGRADE_FAILURE_ANNOTATION,
        &format!("{r_bad}: crash loop"),
    );
    let view = judge(
        &new,
        &nodes,
        vec![mirror("edge", "node-1", &r1, "edge:1.0", true), rolled_back],
    );
    assert_eq!(view.summary.phase, Phase::AwaitingOta);
    let states: Vec<(&str, NodeStatus, Option<&str>)> = view
        .nodes
        .iter()
        .map(|r| (r.node.as_str(), r.state, r.reason.as_deref()))
        .collect();
    let reason = format!("revision {r_bad} failed: crash loop");
    assert_eq!(
        states,
        [
            ("node-1", NodeStatus::AwaitingOta, None),
            ("node-2", NodeStatus::RolledBack, Some(reason.as_str())),
        ]
    );
    assert_eq!(
        wait_line(&view.summary),
        format!(
            "AwaitingOTA - edge (0/2 upgraded, 1 RolledBack, 1 AwaitingOTA): 0/2 nodes run revision {r2}; 2 wait for an OTA trigger"
        )
    );
}

#[test]
fn the_progress_bar_counts_upgraded_nodes() {
    assert_eq!(progress_bar(0, 4, 8), "[░░░░░░░░] 0/4 upgraded (0%)");
    assert_eq!(progress_bar(3, 4, 8), "[██████░░] 3/4 upgraded (75%)");
    assert_eq!(progress_bar(4, 4, 8), "[████████] 4/4 upgraded (100%)");
    assert_eq!(progress_bar(0, 0, 4), "[████] 0/0 upgraded (100%)");
}

#[test]
fn json_is_the_summary_flattened_with_one_entry_per_node() {
    let (_, view) = rollout();
    let json = serde_json::to_value(&view).expect("json");
    assert_eq!(json["name"], "nginx");
    assert_eq!(json["phase"], "Failed");
    assert_eq!(
        (
            &json["totalNumber"],
            &json["readyNumber"],
            &json["upgradedNumber"]
        ),
        (&4.into(), &3.into(), &1.into())
    );
    assert_eq!(json["maxUnavailableNodes"], 2);
    assert_eq!(json["counts"]["AwaitingOTA"], 0, "every state is a key");
    assert_eq!(json["counts"]["Skipped"], 1);
    assert_eq!(json["nodes"][2]["node"], "node-3");
    assert_eq!(json["nodes"][2]["state"], "Failed");
    assert_eq!(json["nodes"][3]["nodeReady"], false);
}

#[test]
fn upgrade_requests_out_of_date_ota_nodes_and_refuses_the_rest_with_reasons() {
    let old = sp("edge", "edge:1.0", "ota", None);
    let new = sp("edge", "edge:2.0", "ota", None);
    let (r1, r2) = (revision(&old), revision(&new));
    let nodes = [
        node("node-1", true),
        node("node-2", true),
        node("node-3", false),
        node("node-4", true),
        node("node-5", true),
    ];
    let mut failed = mirror("edge", "node-4", &r1, "edge:1.0", true);
    annotate(
        &mut failed,
        UPGRADE_FAILURE_ANNOTATION,
        &format!("{r2}: crash loop"),
    );
    let view = judge(
        &new,
        &nodes,
        vec![
            mirror("edge", "node-1", &r2, "edge:2.0", true),
            mirror("edge", "node-2", &r1, "edge:1.0", true),
            mirror("edge", "node-3", &r1, "edge:1.0", true),
            failed,
        ],
    );
    let cluster: HashSet<String> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let named = |names: &[&str]| Selection::Nodes(names.iter().map(|s| s.to_string()).collect());
    let outcomes = |sel: &Selection, force: bool| -> Vec<(String, Outcome)> {
        decide(&view, &cluster, sel, force)
            .into_iter()
            .map(|d| (d.node, d.outcome))
            .collect()
    };
    let requested = |note: Option<&str>, cleared: bool| Outcome::Requested {
        revision: r2.clone(),
        cleared_failure: cleared,
        note: note.map(str::to_owned),
    };
    let refused = |reason: String| Outcome::Refused { reason };
    assert_eq!(
        outcomes(
            &named(&["node-2", "node-1", "node-3", "node-4", "node-5", "node-9"]),
            false
        ),
        [
            ("node-2".into(), requested(None, false)),
            (
                "node-1".into(),
                refused(format!("already runs the target revision {r2}"))
            ),
            (
                "node-3".into(),
                requested(
                    Some("the node is NotReady: its agent upgrades it when it is back"),
                    false
                )
            ),
            (
                "node-4".into(),
                refused(format!(
                    "revision {r2} already failed here: crash loop (rolled back); --force clears the failure and asks again"
                ))
            ),
            (
                "node-5".into(),
                refused("node node-5 does not run nginx (no mirror pod edge-node-5 in namespace default)".into())
            ),
            (
                "node-9".into(),
                refused("there is no node node-9 in the cluster".into())
            ),
        ]
    );
    assert_eq!(
        outcomes(&named(&["node-4"]), true),
        [("node-4".into(), requested(None, true))],
        "--force retries a failed revision and clears its failure record"
    );
    let all = outcomes(&Selection::All, false);
    assert_eq!(all.len(), 4);
    assert_eq!(
        all[0],
        (
            "node-1".into(),
            Outcome::UpToDate {
                revision: r2.clone()
            }
        )
    );

    let (ok, not) = render::upgrade_lines(
        "edge",
        &decide(&view, &cluster, &named(&["node-2", "node-1"]), false),
    );
    assert_eq!(
        ok,
        format!("staticpod/edge node node-2: upgrade to revision {r2} requested\n")
    );
    assert_eq!(
        not,
        format!(
            "staticpod/edge node node-1: not upgraded: already runs the target revision {r2}\n"
        )
    );
}

#[test]
fn auto_mode_is_refused_without_force() {
    let (_, view) = rollout();
    let cluster = HashSet::from(["node-4".to_owned()]);
    let decisions = decide(
        &view,
        &cluster,
        &Selection::Nodes(vec!["node-4".into()]),
        false,
    );
    assert!(
        matches!(&decisions[0].outcome, Outcome::Refused { reason } if reason.contains("upgradeStrategy auto")),
        "{decisions:?}"
    );
}

#[test]
fn errors_say_what_to_do() {
    let list = Request {
        verb: "list",
        resource: "staticpods.apps.openyurt.io",
        namespace: Some("default"),
        url: "https://127.0.0.1:6443/",
    };
    let crd = list.status(404, "the server could not find the requested resource");
    assert!(matches!(crd, Error::CrdMissing));
    assert!(
        crd.to_string()
            .contains("kubectl apply -f manifests/crd.yaml"),
        "{crd}"
    );

    let patch = Request {
        verb: "patch",
        resource: "pods",
        ..list.clone()
    };
    assert_eq!(
        patch
            .status(
                403,
                "pods \"edge-node-1\" is forbidden: User \"bob\" cannot patch resource \"pods\""
            )
            .to_string(),
        "forbidden: you may not patch pods in namespace default (pods \"edge-node-1\" is forbidden: User \"bob\" cannot patch resource \"pods\").\n\
         Ask a cluster admin for a Role granting \"patch\" on \"pods\" in namespace default."
    );

    let names = [
        "nginx".to_owned(),
        "edge-hub".to_owned(),
        "coredns".to_owned(),
    ];
    assert_eq!(close_names("ngnix", &names), ["nginx"]);
    assert_eq!(close_names("hub", &names), ["edge-hub"]);
    let not_found = Error::NotFound {
        name: "ngnix".into(),
        namespace: "default".into(),
        suggestions: close_names("ngnix", &names),
        elsewhere: vec!["edge".into()],
    };
    assert_eq!(
        not_found.to_string(),
        "staticpod \"ngnix\" not found in namespace default; did you mean \"nginx\"?\n\
         A staticpod \"ngnix\" exists in namespace edge: add -n edge."
    );
    assert_eq!(Error::RolloutFailed(String::new()).exit_code(), 3);
    assert_eq!(Error::Timeout(String::new()).exit_code(), 4);
    assert_eq!(crd.exit_code(), 1);
}

#[test]
fn durations_read_like_kubectl_timeouts() {
    use kubectl_staticpod::cli::parse_duration;
    use std::time::Duration;
    assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
    assert!(parse_duration("10x").is_err());
    assert!(parse_duration("m").is_err());
    assert!(parse_duration("").is_err());
}
