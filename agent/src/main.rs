//! `staticpod-agent`: wiring only (flags, watches, the worker, the OTA server).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use staticpod_agent::node::NodeAgent;
use staticpod_agent::ota;
use staticpod_agent::swap::{ManifestStore, RealFs};
use staticpod_api::conventions::STATIC_POD_LABEL;
use tokio::sync::Notify;
use warp::Filter;

/// Flags; each can also be set through the environment.
#[derive(Parser, Debug)]
#[command(name = "staticpod-agent", version, about = "StaticPod node agent")]
struct Config {
    /// This node's name (from the downward API in a DaemonSet).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// The kubelet's static-pod directory.
    #[arg(
        long,
        env = "STATICPOD_AGENT_MANIFEST_DIR",
        default_value = "/etc/kubernetes/manifests"
    )]
    manifest_dir: PathBuf,
    /// Backups and the upgrade journal; must be outside the manifest directory.
    #[arg(
        long,
        env = "STATICPOD_AGENT_STATE_DIR",
        default_value = "/var/lib/staticpod-agent"
    )]
    state_dir: PathBuf,
    /// Backups kept per manifest.
    #[arg(long, env = "STATICPOD_AGENT_HISTORY", default_value_t = 5)]
    history: usize,
    /// How long a new revision has to become Ready before it is rolled back, in seconds.
    #[arg(
        long,
        env = "STATICPOD_AGENT_VERIFY_TIMEOUT_SECONDS",
        default_value_t = 300
    )]
    verify_timeout_seconds: u64,
    /// Address of the OTA API (loopback unless you mean otherwise).
    #[arg(
        long,
        env = "STATICPOD_AGENT_OTA_LISTEN",
        default_value = "127.0.0.1:10267"
    )]
    ota_listen: SocketAddr,
}

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
            eprintln!("staticpod-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let store = ManifestStore::new(
        &config.manifest_dir,
        &config.state_dir,
        config.history,
        RealFs,
    )?;

    let pod_changed = Arc::new(Notify::new());
    let (pods, pod_writer) = reflector::store::<Pod>();
    let pod_watch = watcher(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields(&format!("spec.nodeName={}", config.node_name)),
    );
    let (configmaps, cm_writer) = reflector::store::<ConfigMap>();
    let cm_watch = watcher(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().labels(STATIC_POD_LABEL),
    );

    let (agent, mut jobs) = NodeAgent::new(
        client,
        config.node_name.clone(),
        store,
        pods.clone(),
        configmaps.clone(),
        pod_changed.clone(),
        Duration::from_secs(config.verify_timeout_seconds),
    );
    let agent = Arc::new(agent);

    // Pods: every event wakes verifications and rescans requests.
    let scanner = {
        let (agent, pod_changed) = (agent.clone(), pod_changed.clone());
        tokio::spawn(async move {
            let mut events = std::pin::pin!(
                reflector(pod_writer, pod_watch)
                    .default_backoff()
                    .touched_objects()
            );
            while let Some(event) = events.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "pod watch error");
                    continue;
                }
                pod_changed.notify_waiters();
                for (target, revision) in agent.pending_requests() {
                    agent.enqueue(target, Some(revision));
                }
            }
        })
    };
    let cm_task = tokio::spawn(async move {
        let mut events = std::pin::pin!(
            reflector(cm_writer, cm_watch)
                .default_backoff()
                .touched_objects()
        );
        while events.next().await.is_some() {}
    });
    pods.wait_until_ready().await?;
    configmaps.wait_until_ready().await?;

    // The worker first finishes what a previous run left in flight (verifying it can
    // take minutes; the OTA API serves meanwhile), then takes queued upgrades.
    let worker = {
        let agent = agent.clone();
        tokio::spawn(async move {
            if let Err(e) = agent.recover().await {
                tracing::error!(error = %e, "could not recover the interrupted upgrade");
            }
            while let Some(job) = jobs.recv().await {
                let target = &job.target;
                if let Err(e) = agent.upgrade(&job).await {
                    tracing::warn!(static_pod = %format!("{}/{}", target.namespace, target.static_pod), error = %e, "upgrade did not complete");
                }
            }
        })
    };
    // Requests that were already there when the caches filled.
    for (target, revision) in agent.pending_requests() {
        agent.enqueue(target, Some(revision));
    }

    let health = warp::path("healthz").map(|| "ok");
    let metrics = agent.metrics();
    let metrics = warp::path("metrics").map(move || metrics.encode());
    let api = ota::routes(agent.clone()).or(health).or(metrics);
    let listener = tokio::net::TcpListener::bind(config.ota_listen).await?;
    tracing::info!(node = %config.node_name, ota = %listener.local_addr()?, "agent ready");
    let server = tokio::spawn(warp::serve(api).incoming(listener).run());
    tokio::select! {
        _ = scanner => anyhow::bail!("the pod watch ended"),
        _ = cm_task => anyhow::bail!("the ConfigMap watch ended"),
        _ = worker => anyhow::bail!("the upgrade worker ended"),
        _ = server => anyhow::bail!("the OTA server ended"),
        _ = shutdown_signal() => Ok(()),
    }
}

/// SIGTERM (what the kubelet sends) or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
