//! The thin I/O shell: a client from the kubeconfig, and the reads and writes the
//! commands need, each turned into an error a person can act on.
//!
//! RBAC: `status NAME` needs get/list (and with `--watch`/`--wait`, watch) on
//! `staticpods.apps.openyurt.io`, `pods` and `configmaps` in the namespace and on
//! `nodes`; `upgrade` also needs patch on `pods`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use staticpod_api::StaticPod;
use staticpod_api::conventions::{
    STATIC_POD_LABEL, UPGRADE_FAILURE_ANNOTATION, UPGRADE_REQUEST_ANNOTATION,
    manifest_configmap_name, mirror_pod_name,
};

use crate::cli::Global;
use crate::error::{Error, Request, close_names};
use crate::upgrade::{Decision, Outcome};
use crate::view::{Snapshot, StaticPodView, Summary, assess, pods_by_name};

/// The resource name RBAC rules use for StaticPods.
pub const STATIC_PODS: &str = "staticpods.apps.openyurt.io";

/// A connection to one cluster, in one namespace.
#[derive(Clone)]
pub struct Cluster {
    /// The client.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// The API server URL, for error messages.
    pub url: String,
}

impl Cluster {
    /// Reads the kubeconfig (`--kubeconfig`, else `KUBECONFIG`, else
    /// `~/.kube/config`) with `--context`. Does not talk to the server yet.
    pub async fn connect(global: &Global) -> Result<Self, Error> {
        let options = KubeConfigOptions {
            context: global.context.clone(),
            ..Default::default()
        };
        let config = match &global.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                    Error::Kubeconfig(format!("cannot read kubeconfig {}: {e}", path.display()))
                })?;
                Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => Config::from_kubeconfig(&options).await,
        };
        let mut config = config.map_err(|e| {
            Error::Kubeconfig(format!(
                "no usable kubeconfig: {e}\nPass --kubeconfig or set KUBECONFIG{}.",
                if global.context.is_some() {
                    ", and check the --context name"
                } else {
                    ""
                }
            ))
        })?;
        // An unreachable edge cluster should fail fast, not after the 30 s default.
        config.connect_timeout = Some(Duration::from_secs(10));
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config)
            .map_err(|e| Error::Kubeconfig(format!("cannot build a client: {e}")))?;
        Ok(Self {
            client,
            namespace,
            url,
        })
    }

    /// What a request in this cluster was doing, for its errors.
    pub fn request<'a>(
        &'a self,
        verb: &'a str,
        resource: &'a str,
        namespace: Option<&'a str>,
    ) -> Request<'a> {
        Request {
            verb,
            resource,
            namespace,
            url: &self.url,
        }
    }

    /// The StaticPod `name` in this namespace. When it is missing, the error says
    /// whether the CRD is missing, which names are close, and where else it exists.
    pub async fn static_pod(&self, name: &str) -> Result<StaticPod, Error> {
        let ns = self.namespace.as_str();
        let api: Api<StaticPod> = Api::namespaced(self.client.clone(), ns);
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| self.request("get", STATIC_PODS, Some(ns)).error(e))?;
        if let Some(sp) = found {
            return Ok(sp);
        }
        // Missing object or missing type: a list tells them apart (404 = no CRD).
        let here: Vec<String> = api
            .list(&ListParams::default())
            .await
            .map_err(|e| self.request("list", STATIC_PODS, Some(ns)).error(e))?
            .items
            .iter()
            .map(|sp| sp.name_any())
            .collect();
        // Other namespaces are a hint only; a user may not be allowed to list them.
        let elsewhere = Api::<StaticPod>::all(self.client.clone())
            .list(&ListParams::default().fields(&format!("metadata.name={name}")))
            .await
            .map(|list| {
                list.items
                    .iter()
                    .filter_map(|sp| sp.namespace())
                    .filter(|n| n != ns)
                    .collect()
            })
            .unwrap_or_default();
        Err(Error::NotFound {
            name: name.to_owned(),
            namespace: ns.to_owned(),
            suggestions: close_names(name, &here),
            elsewhere,
        })
    }

    /// Every Node.
    pub async fn nodes(&self) -> Result<Vec<Node>, Error> {
        Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| self.request("list", "nodes", None).error(e))
    }

    /// The pods of `namespace` (`None`: every namespace).
    pub async fn pods(&self, namespace: Option<&str>) -> Result<Vec<Pod>, Error> {
        let api: Api<Pod> = match namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        api.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| self.request("list", "pods", namespace).error(e))
    }

    /// The manifest ConfigMap of `name`, if it exists.
    pub async fn manifest_configmap(&self, name: &str) -> Result<Option<ConfigMap>, Error> {
        let ns = self.namespace.as_str();
        Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .get_opt(&manifest_configmap_name(name))
            .await
            .map_err(|e| self.request("get", "configmaps", Some(ns)).error(e))
    }

    /// `status NAME`: the StaticPod judged over the cluster as it is now.
    pub async fn view(&self, name: &str) -> Result<(StaticPodView, HashSet<String>), Error> {
        let ns = self.namespace.clone();
        let (sp, nodes, pods, configmap) = tokio::try_join!(
            self.static_pod(name),
            self.nodes(),
            self.pods(Some(&ns)),
            self.manifest_configmap(name),
        )?;
        let pods = pods_by_name(pods);
        let view = assess(
            &sp,
            &Snapshot {
                nodes: &nodes,
                pods: &pods,
                configmap: configmap.as_ref(),
                now: jiff::Timestamp::now().as_second(),
            },
        );
        let names = nodes.iter().map(|n| n.name_any()).collect();
        Ok((view, names))
    }

    /// `status`: every StaticPod of the namespace (or all), judged.
    pub async fn fleet(&self, all_namespaces: bool) -> Result<Vec<Summary>, Error> {
        let ns = (!all_namespaces).then_some(self.namespace.as_str());
        let sp_api: Api<StaticPod> = match ns {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let cm_api: Api<ConfigMap> = match ns {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let list_sps = async {
            sp_api
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .map_err(|e| self.request("list", STATIC_PODS, ns).error(e))
        };
        let list_cms = async {
            cm_api
                .list(&ListParams::default().labels(STATIC_POD_LABEL))
                .await
                .map(|l| l.items)
                .map_err(|e| self.request("list", "configmaps", ns).error(e))
        };
        let (mut sps, nodes, pods, cms) =
            tokio::try_join!(list_sps, self.nodes(), self.pods(ns), list_cms)?;
        sps.sort_by_key(|sp| (sp.namespace(), sp.name_any()));
        let mut pods_by_ns: HashMap<String, Vec<Pod>> = HashMap::new();
        for pod in pods {
            pods_by_ns
                .entry(pod.namespace().unwrap_or_default())
                .or_default()
                .push(pod);
        }
        let pods_by_ns: HashMap<String, HashMap<String, Pod>> = pods_by_ns
            .into_iter()
            .map(|(ns, pods)| (ns, pods_by_name(pods)))
            .collect();
        let empty = HashMap::new();
        let now = jiff::Timestamp::now().as_second();
        Ok(sps
            .iter()
            .map(|sp| {
                let sp_ns = sp.namespace().unwrap_or_default();
                let cm = cms.iter().find(|cm| {
                    cm.namespace().as_deref() == Some(sp_ns.as_str())
                        && cm.name_any() == manifest_configmap_name(&sp.name_any())
                });
                assess(
                    sp,
                    &Snapshot {
                        nodes: &nodes,
                        pods: pods_by_ns.get(&sp_ns).unwrap_or(&empty),
                        configmap: cm,
                        now,
                    },
                )
                .summary
            })
            .collect())
    }

    /// Writes the OTA request of each decision that needs one (a JSON merge patch of
    /// the mirror pod's annotations) and returns the decisions, a failed write
    /// turned into a refusal naming the reason.
    pub async fn request_upgrades(&self, name: &str, decisions: Vec<Decision>) -> Vec<Decision> {
        let ns = self.namespace.as_str();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut out = Vec::with_capacity(decisions.len());
        for mut decision in decisions {
            if let Outcome::Requested {
                revision,
                cleared_failure,
                ..
            } = &decision.outcome
            {
                let mut annotations = serde_json::Map::new();
                annotations.insert(UPGRADE_REQUEST_ANNOTATION.into(), revision.clone().into());
                if *cleared_failure {
                    // null deletes the key in a merge patch.
                    annotations.insert(UPGRADE_FAILURE_ANNOTATION.into(), serde_json::Value::Null);
                }
                let patch = serde_json::json!({"metadata": {"annotations": annotations}});
                let pod = mirror_pod_name(name, &decision.node);
                if let Err(e) = api
                    .patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    let why = self.request("patch", "pods", Some(ns)).error(e);
                    decision.outcome = Outcome::Refused {
                        reason: format!("writing the request on pod {pod} failed: {why}"),
                    };
                }
            }
            out.push(decision);
        }
        out
    }
}
