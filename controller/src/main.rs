//! `staticpod-controller`: wiring only (flags, client, caches, the kube-runtime
//! controller, the health and metrics endpoints).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use staticpod_api::StaticPod;
use staticpod_api::conventions::{STATIC_POD_LABEL, static_pod_of_mirror};
use staticpod_controller::metrics::Metrics;
use staticpod_controller::reconcile::{Context, error_policy, reconcile};
use warp::Filter;

/// Rolls StaticPods out to the nodes that run them. Uses `KUBECONFIG` or the
/// in-cluster service account.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Config {
    /// Address of `/healthz`, `/readyz` (ready once the caches are synced) and
    /// `/metrics`.
    #[arg(long, env = "METRICS_LISTEN", default_value = "0.0.0.0:8080")]
    metrics_listen: SocketAddr,
    /// Name of this instance in the Events it publishes and in the leader Lease
    /// (the pod name in a cluster; default: host name and process id).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Act only while holding the Lease `staticpod-controller`, so that several
    /// replicas can run and exactly one writes. A replica that loses the Lease
    /// exits (to be restarted as a standby) rather than risk a second writer.
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "staticpod-system")]
    leader_election_namespace: String,
    /// Seconds a leader's Lease stays valid without renewal: how long a crashed
    /// leader's replicas wait before one takes over.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(5..=300))]
    leader_lease_seconds: u64,
}

/// The leader Lease's name.
const LEASE_NAME: &str = "staticpod-controller";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Config::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("staticpod-controller: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-listen {}: {e}", config.metrics_listen))?;
    let endpoints = {
        let healthz = warp::path!("healthz").map(|| "ok");
        let readyz = {
            let ready = ready.clone();
            warp::path!("readyz").map(move || {
                if ready.load(Ordering::Relaxed) {
                    warp::reply::with_status("ok", warp::http::StatusCode::OK)
                } else {
                    warp::reply::with_status(
                        "caches not synced yet",
                        warp::http::StatusCode::SERVICE_UNAVAILABLE,
                    )
                }
            })
        };
        let metrics_route = {
            let metrics = metrics.clone();
            warp::path!("metrics").map(move || {
                warp::reply::with_header(
                    metrics.encode(),
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            })
        };
        warp::get().and(healthz.or(readyz).or(metrics_route))
    };
    let server = tokio::spawn(warp::serve(endpoints).incoming(listener).run());

    let client = Client::try_default().await?;
    // Pod and manifest ConfigMap changes are turned into reconciles by the task
    // that updates their caches, after the update: a reconcile triggered by a
    // change always sees it (a separate trigger watch would race the cache, and
    // a lost race waits for the next unrelated event). Deletions trigger too.
    let (trigger, triggers) = futures::channel::mpsc::unbounded::<ObjectRef<StaticPod>>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let pod_cache = reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    // A mirror pod `<name>-<node>` belongs to StaticPod `<name>` in its namespace.
    let pods_task = tokio::spawn(forward(pod_cache, trigger.clone(), |pod: &Pod| {
        let node = pod.spec.as_ref()?.node_name.as_deref()?;
        let name = pod.metadata.name.as_deref()?;
        let sp = static_pod_of_mirror(name, node)?;
        Some(ObjectRef::<StaticPod>::new(sp).within(pod.metadata.namespace.as_deref()?))
    }));
    let (configmaps, configmap_writer) = reflector::store::<ConfigMap>();
    let configmap_cache = reflector(
        configmap_writer,
        watcher(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default().labels(STATIC_POD_LABEL),
        ),
    )
    .default_backoff()
    .touched_objects();
    // A manifest ConfigMap is labelled with its StaticPod's name.
    let configmaps_task = tokio::spawn(forward(configmap_cache, trigger, |cm: &ConfigMap| {
        let sp = cm.labels().get(STATIC_POD_LABEL)?;
        Some(ObjectRef::<StaticPod>::new(sp).within(&cm.namespace()?))
    }));
    let (nodes, node_writer) = reflector::store::<Node>();
    let node_cache = reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    // Node changes (readiness transitions) re-plan every StaticPod. One pending
    // trigger is enough, so a full channel drops the newer one.
    let (node_trigger, node_changes) = futures::channel::mpsc::channel::<()>(1);
    let nodes_task = tokio::spawn(async move {
        let mut node_trigger = node_trigger;
        let mut events = std::pin::pin!(node_cache);
        while let Some(event) = events.next().await {
            if event.is_ok() {
                let _ = node_trigger.try_send(());
            }
        }
    });
    // Reconciles read these caches: plan only on a full picture (an empty cache
    // would look like a fleet without pods and drop the record of nodes being
    // upgraded).
    pods.wait_until_ready().await?;
    nodes.wait_until_ready().await?;
    configmaps.wait_until_ready().await?;

    let instance = config.instance.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    // Standbys keep their caches warm and report ready (they can take over at
    // once); only the leader acts.
    let leadership = if config.leader_elect {
        ready.store(true, Ordering::Relaxed);
        let manager = LeaseManagerBuilder::new(client.clone(), LEASE_NAME)
            .with_namespace(&config.leader_election_namespace)
            .with_identity(&instance)
            .with_duration(config.leader_lease_seconds)
            .with_grace((config.leader_lease_seconds / 3).max(2))
            .build()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "leader election on Lease {}/{LEASE_NAME}: {e}",
                    config.leader_election_namespace
                )
            })?;
        let (mut leading, lease_task) = manager.watch().await;
        tracing::info!(%instance, "waiting to lead");
        while !*leading.borrow_and_update() {
            leading
                .changed()
                .await
                .map_err(|_| anyhow::anyhow!("leader election stopped"))?;
        }
        tracing::info!(%instance, "leading");
        Some((leading, lease_task))
    } else {
        None
    };
    let reporter = Reporter {
        controller: "staticpod-controller".into(),
        instance: Some(instance),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pods.clone(),
        nodes: nodes.clone(),
        configmaps,
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        records: Default::default(),
        seen: Default::default(),
    });
    let controller = Controller::new(
        Api::<StaticPod>::all(client.clone()),
        watcher::Config::default(),
    )
    .reconcile_on(triggers)
    .reconcile_all_on(node_changes);
    let controller_store = controller.store();
    // kube-runtime's readiness signal wakes only its last waiter, and the
    // controller itself waits on it; so look instead of waiting.
    let readiness = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        let synced = loop {
            tick.tick().await;
            if let Some(result) = controller_store.wait_until_ready().now_or_never() {
                break result.is_ok();
            }
        };
        if synced {
            ready.store(true, Ordering::Relaxed);
            tracing::info!("caches synced");
        }
    });
    let controller = controller
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile");
            }
        });
    tracing::info!(metrics = %config.metrics_listen, "controller running");
    let (leading, lease_task) = match leadership {
        Some((leading, task)) => (Some(leading), Some(task)),
        None => (None, None),
    };
    let lost = async {
        match leading {
            Some(mut leading) => {
                while leading.changed().await.is_ok() {
                    if !*leading.borrow() {
                        break;
                    }
                }
                leading
            }
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        leading = lost => {
            drop(leading);
            Err(anyhow::anyhow!("lost the leader Lease; exiting so that only one instance acts"))
        }
        _ = controller => Ok(()),
        _ = pods_task => Err(anyhow::anyhow!("the pod watch ended")),
        _ = nodes_task => Err(anyhow::anyhow!("the node watch ended")),
        _ = configmaps_task => Err(anyhow::anyhow!("the ConfigMap watch ended")),
        _ = server => Err(anyhow::anyhow!("the metrics server ended")),
    };
    readiness.abort();
    // Hand the Lease over now rather than let it expire: dropping the receivers
    // makes the lease task release it.
    if let Some(task) = lease_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(3), task).await;
    }
    outcome
}

/// Drives a cache's watch stream and sends the StaticPod each changed object
/// belongs to (if any) to the controller.
async fn forward<K>(
    cache: impl futures::Stream<Item = Result<K, watcher::Error>>,
    trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<StaticPod>>,
    owner: impl Fn(&K) -> Option<ObjectRef<StaticPod>>,
) {
    let mut events = std::pin::pin!(cache);
    while let Some(event) = events.next().await {
        if let Ok(object) = event
            && let Some(static_pod) = owner(&object)
        {
            // The receiver lives as long as the controller; if it is gone, so is the
            // process's purpose.
            let _ = trigger.unbounded_send(static_pod);
        }
    }
}
