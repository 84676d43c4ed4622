//! The node-local OTA API, compatible with OpenYurt's YurtHub (SPEC §6):
//! `GET /pods` and `POST /openyurt.io/v1/namespaces/{ns}/pods/{pod}/upgrade`, with
//! upstream's status codes and texts; plus `GET /openyurt.io/v1/upgrades`, the state
//! of upgrades on this node.
//!
//! The decision whether a pod may be upgraded is a pure function; the routes get
//! pods and start upgrades through [`NodeView`], which the agent implements over
//! its watch caches and the API server.

use std::future::Future;
use std::sync::Arc;

use k8s_openapi::List;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta;
use staticpod_api::conventions::{POD_NEED_UPGRADE, static_pod_of_mirror};
use staticpod_api::names::dns1123_subdomain;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// A pod the API agreed to upgrade: which StaticPod it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeTarget {
    /// Namespace of the pod and its StaticPod.
    pub namespace: String,
    /// The StaticPod's name.
    pub static_pod: String,
}

/// Why an upgrade request is refused, with its HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 404: no such pod.
    #[error("pod {0} not found")]
    NotFound(String),
    /// 403: the pod is not upgradable here; the reason says why.
    #[error("Pre check update pod failed, {0}")]
    NotUpgradable(String),
}

impl Refusal {
    /// The HTTP status upstream uses for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NotUpgradable(_) => StatusCode::FORBIDDEN,
        }
    }
}

/// Decides whether `pod` (looked up as `ns/name`) may be upgraded by this node's
/// agent: it must exist, run on this node, not be terminating, be the mirror pod
/// of a StaticPod, and be marked `PodNeedUpgrade=True`; `manifest_exists` says
/// whether that StaticPod's manifest ConfigMap exists.
pub fn check_upgradable(
    node: &str,
    ns: &str,
    name: &str,
    pod: Option<&Pod>,
    manifest_exists: impl FnOnce(&str) -> bool,
) -> Result<UpgradeTarget, Refusal> {
    let id = format!("{ns}/{name}");
    let pod = pod.ok_or_else(|| Refusal::NotFound(id.clone()))?;
    let refuse = |why: String| Err(Refusal::NotUpgradable(why));
    let on_node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("");
    if on_node != node {
        return refuse(format!(
            "pod {id} runs on node {on_node:?}, not on this node ({node})"
        ));
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return refuse(format!("pod {id} is being deleted"));
    }
    let is_mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let Some(static_pod) = static_pod_of_mirror(name, node).filter(|_| is_mirror) else {
        return refuse(format!(
            "pod {id} is not the mirror pod of a static pod on this node"
        ));
    };
    let need_upgrade = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == POD_NEED_UPGRADE && c.status == "True");
    if !need_upgrade {
        return refuse(format!(
            "pod {id} is not marked {POD_NEED_UPGRADE}=True: it already runs the target revision, or its StaticPod is not in ota mode"
        ));
    }
    if !manifest_exists(static_pod) {
        return refuse(format!(
            "the manifest ConfigMap of StaticPod {ns}/{static_pod} does not exist"
        ));
    }
    Ok(UpgradeTarget {
        namespace: ns.to_owned(),
        static_pod: static_pod.to_owned(),
    })
}

/// What the OTA routes need from the agent.
pub trait NodeView: Send + Sync + 'static {
    /// This node's name.
    fn node_name(&self) -> &str;
    /// The pods on this node.
    fn pods(&self) -> impl Future<Output = Result<Vec<Pod>, String>> + Send;
    /// One pod by namespace and name, wherever it runs.
    fn pod(&self, ns: &str, name: &str)
    -> impl Future<Output = Result<Option<Pod>, String>> + Send;
    /// Whether the manifest ConfigMap of StaticPod `ns/static_pod` exists.
    fn manifest_exists(
        &self,
        ns: &str,
        static_pod: &str,
    ) -> impl Future<Output = Result<bool, String>> + Send;
    /// Starts the upgrade of `target` on this node (returns once it is under way).
    fn start_upgrade(
        &self,
        target: UpgradeTarget,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// The state of upgrades on this node, as JSON.
    fn upgrades(&self) -> serde_json::Value;
}

/// The OTA routes over `view`.
pub fn routes<V: NodeView>(
    view: Arc<V>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let pods = {
        let view = view.clone();
        warp::get()
            .and(warp::path("pods"))
            .and(warp::path::end())
            .then(move || {
                let view = view.clone();
                async move {
                    match view.pods().await {
                        Ok(items) => {
                            let list = List::<Pod> {
                                items,
                                metadata: ListMeta::default(),
                            };
                            warp::reply::json(&list).into_response()
                        }
                        Err(e) => text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("Get pod list failed, {e}"),
                        ),
                    }
                }
            })
    };
    let upgrade = {
        let view = view.clone();
        warp::post()
            .and(warp::path!(
                "openyurt.io" / "v1" / "namespaces" / String / "pods" / String / "upgrade"
            ))
            .then(move |ns: String, name: String| upgrade(view.clone(), ns, name))
    };
    let upgrades = {
        let view = view.clone();
        warp::get()
            .and(warp::path!("openyurt.io" / "v1" / "upgrades"))
            .map(move || warp::reply::json(&view.upgrades()).into_response())
    };
    let malformed = warp::path("openyurt.io").and(warp::path::full()).map(|path: warp::path::FullPath| {
        text(
            StatusCode::BAD_REQUEST,
            format!(
                "malformed path {}: expected POST /openyurt.io/v1/namespaces/{{ns}}/pods/{{pod}}/upgrade",
                path.as_str()
            ),
        )
    });
    pods.or(upgrade)
        .unify()
        .or(upgrades)
        .unify()
        .or(malformed)
        .unify()
}

async fn upgrade<V: NodeView>(view: Arc<V>, ns: String, name: String) -> warp::reply::Response {
    for (what, value) in [("namespace", &ns), ("pod name", &name)] {
        let problems = dns1123_subdomain(value, 253);
        if !problems.is_empty() {
            return text(
                StatusCode::BAD_REQUEST,
                format!("malformed {what} {value:?}: {}", problems.join("; ")),
            );
        }
    }
    let pod = match view.pod(&ns, &name).await {
        Ok(pod) => pod,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Get pod failed, {e}"),
            );
        }
    };
    // The ConfigMap check needs the StaticPod's name, which the pure check derives;
    // look it up first (cheap: one cache read) so the check stays a plain function.
    let static_pod = static_pod_of_mirror(&name, view.node_name()).map(str::to_owned);
    let manifest = match &static_pod {
        Some(sp) => match view.manifest_exists(&ns, sp).await {
            Ok(exists) => exists,
            Err(e) => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Get manifest ConfigMap failed, {e}"),
                );
            }
        },
        None => false,
    };
    match check_upgradable(view.node_name(), &ns, &name, pod.as_ref(), |_| manifest) {
        Ok(target) => match view.start_upgrade(target).await {
            Ok(()) => text(StatusCode::OK, format!("Start updating pod {ns}/{name}")),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Apply update failed, {e}"),
            ),
        },
        Err(refusal) => text(refusal.status(), refusal.to_string()),
    }
}

fn text(status: StatusCode, message: String) -> warp::reply::Response {
    warp::reply::with_status(message, status).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::sync::Mutex;

    /// A mirror pod of StaticPod `sp` on `node`, marked PodNeedUpgrade=`need`.
    fn mirror(sp: &str, node: &str, need: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("{sp}-{node}")),
                namespace: Some("default".into()),
                annotations: Some(
                    [("kubernetes.io/config.mirror".to_string(), "abc".to_string())].into(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![
                    PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        ..Default::default()
                    },
                    PodCondition {
                        type_: POD_NEED_UPGRADE.into(),
                        status: if need { "True" } else { "False" }.into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    /// The agent's view, in memory: the cluster's pods and ConfigMaps, and the
    /// upgrades started.
    struct FakeNode {
        node: String,
        pods: Vec<Pod>,
        manifests: Vec<String>,
        started: Mutex<Vec<UpgradeTarget>>,
    }

    impl NodeView for FakeNode {
        fn node_name(&self) -> &str {
            &self.node
        }
        async fn pods(&self) -> Result<Vec<Pod>, String> {
            Ok(self
                .pods
                .iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(self.node.as_str())
                })
                .cloned()
                .collect())
        }
        async fn pod(&self, ns: &str, name: &str) -> Result<Option<Pod>, String> {
            Ok(self
                .pods
                .iter()
                .find(|p| {
                    p.metadata.namespace.as_deref() == Some(ns)
                        && p.metadata.name.as_deref() == Some(name)
                })
                .cloned())
        }
        async fn manifest_exists(&self, _ns: &str, static_pod: &str) -> Result<bool, String> {
            Ok(self.manifests.iter().any(|m| m == static_pod))
        }
        async fn start_upgrade(&self, target: UpgradeTarget) -> Result<(), String> {
            self.started.lock().map_err(|e| e.to_string())?.push(target);
            Ok(())
        }
        fn upgrades(&self) -> serde_json::Value {
            serde_json::json!({"upgrades": []})
        }
    }

    fn node2() -> Arc<FakeNode> {
        let mut deleting = mirror("old", "node-2", true);
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        let mut plain = mirror("app", "node-2", true);
        plain.metadata.annotations = None;
        Arc::new(FakeNode {
            node: "node-2".into(),
            pods: vec![
                mirror("nginx", "node-2", true),
                mirror("nginx", "node-3", true),
                mirror("current", "node-2", false),
                mirror("orphan", "node-2", true),
                deleting,
                plain,
            ],
            manifests: vec!["nginx".into(), "current".into(), "old".into(), "app".into()],
            started: Mutex::new(Vec::new()),
        })
    }

    async fn post(view: &Arc<FakeNode>, path: &str) -> (u16, String) {
        let res = warp::test::request()
            .method("POST")
            .path(path)
            .reply(&routes(view.clone()))
            .await;
        (
            res.status().as_u16(),
            String::from_utf8_lossy(res.body()).into_owned(),
        )
    }

    #[tokio::test]
    async fn an_upgradable_pod_is_upgraded_with_upstreams_answer() {
        let view = node2();
        let (status, body) = post(
            &view,
            "/openyurt.io/v1/namespaces/default/pods/nginx-node-2/upgrade",
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (200, "Start updating pod default/nginx-node-2")
        );
        let started = view.started.lock().expect("lock").clone();
        assert_eq!(
            started,
            [UpgradeTarget {
                namespace: "default".into(),
                static_pod: "nginx".into()
            }]
        );
    }

    #[tokio::test]
    async fn pods_that_are_not_upgradable_here_get_403_with_the_reason() {
        let view = node2();
        for (pod, why) in [
            (
                "nginx-node-3",
                "runs on node \"node-3\", not on this node (node-2)",
            ),
            ("current-node-2", "is not marked PodNeedUpgrade=True"),
            (
                "orphan-node-2",
                "manifest ConfigMap of StaticPod default/orphan does not exist",
            ),
            ("old-node-2", "is being deleted"),
            ("app-node-2", "is not the mirror pod of a static pod"),
        ] {
            let (status, body) = post(
                &view,
                &format!("/openyurt.io/v1/namespaces/default/pods/{pod}/upgrade"),
            )
            .await;
            assert_eq!(status, 403, "{pod}: {body}");
            assert!(
                body.starts_with("Pre check update pod failed, ") && body.contains(why),
                "{pod}: {body}"
            );
        }
        assert!(
            view.started.lock().expect("lock").is_empty(),
            "nothing was upgraded"
        );
    }

    #[tokio::test]
    async fn unknown_pods_are_404_and_malformed_paths_400() {
        let view = node2();
        let (status, body) = post(
            &view,
            "/openyurt.io/v1/namespaces/default/pods/ghost-node-2/upgrade",
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (404, "pod default/ghost-node-2 not found")
        );
        for path in [
            "/openyurt.io/v1/namespaces/default/pods/upgrade",
            "/openyurt.io/v1/namespaces/default/pods/nginx-node-2",
            "/openyurt.io/v1/namespaces/Default/pods/nginx-node-2/upgrade",
        ] {
            let (status, body) = post(&view, path).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(body.lines().count(), 1, "one line: {body}");
        }
    }

    #[tokio::test]
    async fn get_pods_lists_this_nodes_pods_as_a_pod_list() {
        let view = node2();
        let res = warp::test::request()
            .path("/pods")
            .reply(&routes(view))
            .await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        let list: serde_json::Value = serde_json::from_slice(res.body()).expect("json");
        assert_eq!(list["kind"], "PodList");
        assert_eq!(list["apiVersion"], "v1");
        let names: Vec<&str> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        assert_eq!(names.len(), 5);
        assert!(!names.contains(&"nginx-node-3"));
    }
}
