//! `staticpod-controller`: wiring only (client, caches, the kube-runtime controller).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use staticpod_api::StaticPod;
use staticpod_api::conventions::{STATIC_POD_LABEL, static_pod_of_mirror};
use staticpod_controller::reconcile::{Context, error_policy, reconcile};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("staticpod-controller: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let pod_cache = reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    let node_changes = reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .filter_map(|n| async move { n.ok().map(|_| ()) });
    let pods_task = tokio::spawn(async move {
        let mut events = std::pin::pin!(pod_cache);
        while events.next().await.is_some() {}
    });
    pods.wait_until_ready().await?;

    let ctx = Arc::new(Context {
        client: client.clone(),
        pods,
        nodes,
        in_flight: Default::default(),
    });
    let controller = Controller::new(
        Api::<StaticPod>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().labels(STATIC_POD_LABEL),
    )
    // A mirror pod `<name>-<node>` belongs to StaticPod `<name>` in its namespace.
    .watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        |pod: Pod| {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone())?;
            let sp = static_pod_of_mirror(&pod.name_any(), &node)?.to_owned();
            Some(ObjectRef::<StaticPod>::new(&sp).within(&pod.namespace()?))
        },
    )
    .reconcile_all_on(node_changes)
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "reconcile");
        }
    });
    tracing::info!("controller running");
    tokio::select! {
        _ = controller => Ok(()),
        _ = pods_task => anyhow::bail!("the pod watch ended"),
    }
}
