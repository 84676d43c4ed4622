//! `status NAME --watch` and `--wait`: informer-driven. Watches on the StaticPod,
//! its manifest ConfigMap, the namespace's pods and the nodes keep local caches;
//! every change re-judges the StaticPod from the caches (no extra requests) and
//! redraws at most every 200 ms, with a 1 s tick so times stay fresh.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use staticpod_api::StaticPod;
use staticpod_api::conventions::manifest_configmap_name;
use tokio::sync::{Notify, mpsc};

use crate::cluster::{Cluster, STATIC_PODS};
use crate::error::Error;
use crate::render::{NodeListing, Palette, wait_line, watch_frame};
use crate::view::{Phase, Snapshot, StaticPodView, assess};

/// How `status NAME` follows the rollout.
#[derive(Clone, Copy, Debug)]
pub struct Follow {
    /// `--watch`: redraw the view.
    pub redraw: bool,
    /// `--wait`: end when the rollout completes or fails.
    pub wait: bool,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// stdout is a terminal: clear the screen between frames (else frames are
    /// printed one after another, only when they change).
    pub terminal: bool,
}

/// The least time between two redraws (no flicker on bursts of events).
pub const MIN_REDRAW: Duration = Duration::from_millis(200);

struct Caches {
    static_pods: Store<StaticPod>,
    configmaps: Store<ConfigMap>,
    pods: Store<Pod>,
    nodes: Store<Node>,
}

impl Caches {
    /// Every cache has its first full list (before that, a view would be partial).
    fn ready(&self) -> bool {
        fn ready<K>(store: &Store<K>) -> bool
        where
            K: kube::runtime::reflector::Lookup + Clone + 'static,
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            store.wait_until_ready().now_or_never().is_some()
        }
        ready(&self.static_pods)
            && ready(&self.configmaps)
            && ready(&self.pods)
            && ready(&self.nodes)
    }
}

/// A watch failed: the request, and why.
struct WatchError {
    resource: &'static str,
    namespaced: bool,
    error: watcher::Error,
}

fn spawn_cache<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    errors: mpsc::UnboundedSender<WatchError>,
    resource: &'static str,
    namespaced: bool,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(error) => {
                    let _ = errors.send(WatchError {
                        resource,
                        namespaced,
                        error,
                    });
                }
            }
        }
    });
    reader
}

/// Follows StaticPod `name` until Ctrl-C, the timeout, or (with `wait`) the end of
/// its rollout. Returns the exit error for a failed or timed-out wait.
pub async fn follow(
    cluster: &Cluster,
    name: &str,
    follow: Follow,
    listing: NodeListing,
    palette: Palette,
) -> Result<(), Error> {
    // A plain read first: a missing StaticPod, CRD or permission fails at once with
    // its clear error rather than as a retried watch.
    cluster.view(name).await?;

    let ns = cluster.namespace.as_str();
    let client = cluster.client.clone();
    let changed = Arc::new(Notify::new());
    let (errors_tx, mut errors) = mpsc::unbounded_channel();
    let caches = Caches {
        static_pods: spawn_cache(
            Api::<StaticPod>::namespaced(client.clone(), ns),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
            changed.clone(),
            errors_tx.clone(),
            STATIC_PODS,
            true,
        ),
        configmaps: spawn_cache(
            Api::<ConfigMap>::namespaced(client.clone(), ns),
            watcher::Config::default()
                .fields(&format!("metadata.name={}", manifest_configmap_name(name))),
            changed.clone(),
            errors_tx.clone(),
            "configmaps",
            true,
        ),
        pods: spawn_cache(
            Api::<Pod>::namespaced(client.clone(), ns),
            watcher::Config::default(),
            changed.clone(),
            errors_tx.clone(),
            "pods",
            true,
        ),
        nodes: spawn_cache(
            Api::<Node>::all(client),
            watcher::Config::default(),
            changed.clone(),
            errors_tx,
            "nodes",
            false,
        ),
    };

    let started = Instant::now();
    let deadline = follow.timeout.map(|t| started + t);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_drawn: Option<(Instant, String)> = None;
    let mut last_line = String::new();
    let mut warning: Option<String> = None;
    loop {
        let timed_out = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed.notified() => {}
            _ = tick.tick() => {}
            Some(e) = errors.recv() => {
                let request = cluster.request(
                    "watch",
                    e.resource,
                    e.namespaced.then_some(ns),
                );
                let error = match e.error {
                    watcher::Error::InitialListFailed(err)
                    | watcher::Error::WatchStartFailed(err)
                    | watcher::Error::WatchFailed(err) => request.error(err),
                    watcher::Error::WatchError(status) => request.status(status.code, &status.message),
                    other => Error::Other(other.to_string()),
                };
                // Permissions do not come back by retrying; anything else might.
                if matches!(error, Error::Forbidden { .. } | Error::CrdMissing) {
                    return Err(error);
                }
                warning = Some(format!("{error} (retrying)"));
            }
            _ = timed_out => {
                let state = current(&caches, name)
                    .map(|v| format!(": {}", wait_line(&v.summary)))
                    .unwrap_or_default();
                return if follow.wait {
                    Err(Error::Timeout(format!(
                        "timed out after {} waiting for staticpod {name} to complete{state}",
                        crate::render::duration(started.elapsed())
                    )))
                } else {
                    Ok(())
                };
            }
            _ = tokio::signal::ctrl_c() => {
                return Ok(());
            }
        }
        // Rate limit: bursts of events (a rollout of many nodes) make one redraw.
        if let Some((at, _)) = &last_drawn {
            let since = at.elapsed();
            if since < MIN_REDRAW {
                tokio::time::sleep(MIN_REDRAW - since).await;
            }
        }
        if !caches.ready() {
            continue;
        }
        let Some(view) = current(&caches, name) else {
            return Err(Error::Other(format!(
                "staticpod {name} was deleted from namespace {ns}"
            )));
        };
        if follow.redraw {
            let frame = watch_frame(
                &view,
                listing,
                palette,
                jiff::Timestamp::now(),
                warning.as_deref(),
            );
            let body = frame
                .rsplit_once("\nUpdated")
                .map_or(frame.as_str(), |(b, _)| b);
            let unchanged = last_drawn.as_ref().is_some_and(|(_, prev)| prev == body);
            if follow.terminal {
                // Home, clear: a full redraw (the clock line changes every second).
                print!("\x1b[H\x1b[2J{frame}");
            } else if !unchanged {
                println!("{frame}");
            }
            last_drawn = Some((Instant::now(), body.to_owned()));
        } else {
            let line = wait_line(&view.summary);
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
            last_drawn = Some((Instant::now(), String::new()));
        }
        if follow.wait {
            match view.summary.phase {
                Phase::Complete => return Ok(()),
                Phase::Failed | Phase::Invalid => {
                    return Err(Error::RolloutFailed(format!(
                        "staticpod {name} rollout failed: {}",
                        view.summary.message
                    )));
                }
                _ => {}
            }
        }
    }
}

fn current(caches: &Caches, name: &str) -> Option<StaticPodView> {
    let sp = caches
        .static_pods
        .state()
        .into_iter()
        .find(|sp| sp.name_any() == name)?;
    let nodes: Vec<Node> = caches.nodes.state().iter().map(|n| (**n).clone()).collect();
    let pods: HashMap<String, Pod> = caches
        .pods
        .state()
        .iter()
        .map(|p| (p.name_any(), (**p).clone()))
        .collect();
    let configmap = caches.configmaps.state().first().map(|c| (**c).clone());
    Some(assess(
        &sp,
        &Snapshot {
            nodes: &nodes,
            pods: &pods,
            configmap: configmap.as_ref(),
            now: jiff::Timestamp::now().as_second(),
        },
    ))
}
