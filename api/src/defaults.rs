//! Defaulting: the one function that turns what a user wrote into the complete
//! object. The mutating webhook answers with its diff; the controller applies it
//! again before hashing, so a revision never depends on whether the webhook ran.

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HTTPGetAction, LifecycleHandler, PodSecurityContext, PodSpec,
    Probe, Volume,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::types::{StaticPod, StrategyType};

/// `maxUnavailable` when an `auto` StaticPod names none.
pub const DEFAULT_MAX_UNAVAILABLE: &str = "10%";
/// `revisionHistoryLimit` when none is given.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;

/// Fills in every default of SPEC §3, in place. Idempotent.
pub fn default_static_pod(sp: &mut StaticPod) {
    let strategy = &mut sp.spec.upgrade_strategy;
    let parsed = match strategy.type_.as_deref() {
        None | Some("") => Some(StrategyType::Auto),
        Some(value) => StrategyType::parse(value),
    };
    if let Some(kind) = parsed {
        strategy.type_ = Some(kind.as_str().to_owned());
        if kind == StrategyType::Auto && strategy.max_unavailable.is_none() {
            strategy.max_unavailable = Some(IntOrString::String(DEFAULT_MAX_UNAVAILABLE.into()));
        }
    }
    sp.spec
        .revision_history_limit
        .get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);

    // The kubelet rejects a static pod without a name, and the mirror pod is found
    // as `<name>-<node>`, so the template always carries the StaticPod's identity.
    let meta = sp
        .spec
        .template
        .metadata
        .get_or_insert_with(Default::default);
    meta.name = sp.metadata.name.clone();
    meta.namespace = sp.metadata.namespace.clone();

    default_pod_spec(sp.spec.template.spec.get_or_insert_with(Default::default));
}

/// Kubernetes' own defaults for a Pod's spec (`SetDefaults_Pod`, `SetDefaults_PodSpec`
/// and the per-field functions of `k8s.io/kubernetes/pkg/apis/core/v1`), so that a
/// template that spells a default out and one that leaves it implicit are the
/// same revision, and the rendered manifest matches what the API server stores.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    spec.enable_service_links.get_or_insert(true);

    let host_network = spec.host_network == Some(true);
    for container in spec.containers.iter_mut() {
        default_container(container, host_network);
    }
    for container in spec.init_containers.iter_mut().flatten() {
        default_container(container, host_network);
    }
    for volume in spec.volumes.iter_mut().flatten() {
        default_volume(volume);
    }
}

fn default_container(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.as_deref().unwrap_or("").is_empty() {
        c.image_pull_policy = Some(default_pull_policy(c.image.as_deref().unwrap_or("")).into());
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    for port in c.ports.iter_mut().flatten() {
        default_port(port, host_network);
    }
    for env in c.env.iter_mut().flatten() {
        default_env(env);
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        default_probe(probe);
    }
    if let Some(lifecycle) = c.lifecycle.as_mut() {
        for handler in [&mut lifecycle.post_start, &mut lifecycle.pre_stop]
            .into_iter()
            .flatten()
        {
            default_lifecycle_handler(handler);
        }
    }
    // SetDefaults_Pod: a resource with a limit and no request requests its limit.
    if let Some(resources) = c.resources.as_mut()
        && let Some(limits) = resources.limits.as_ref()
        && !limits.is_empty()
    {
        let requests = resources.requests.get_or_insert_with(Default::default);
        for (name, quantity) in limits {
            requests
                .entry(name.clone())
                .or_insert_with(|| quantity.clone());
        }
    }
}

/// `Always` for `:latest` or an untagged image, `IfNotPresent` otherwise (also for
/// digests), as `SetDefaults_Container` decides.
pub fn default_pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let has_digest = without_digest.len() != image.len();
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let tag = last_segment.split_once(':').map(|(_, tag)| tag);
    match tag {
        Some("latest") => "Always",
        Some(_) => "IfNotPresent",
        None if has_digest => "IfNotPresent",
        None => "Always",
    }
}

fn default_port(port: &mut ContainerPort, host_network: bool) {
    port.protocol.get_or_insert_with(|| "TCP".into());
    if host_network && port.host_port.unwrap_or(0) == 0 {
        port.host_port = Some(port.container_port);
    }
}

fn default_env(env: &mut EnvVar) {
    if let Some(field_ref) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut())
        && field_ref.api_version.as_deref().unwrap_or("").is_empty()
    {
        field_ref.api_version = Some("v1".into());
    }
}

fn default_probe(probe: &mut Probe) {
    probe.timeout_seconds.get_or_insert(1);
    probe.period_seconds.get_or_insert(10);
    probe.success_threshold.get_or_insert(1);
    probe.failure_threshold.get_or_insert(3);
    if let Some(http) = probe.http_get.as_mut() {
        default_http_get(http);
    }
}

fn default_lifecycle_handler(handler: &mut LifecycleHandler) {
    if let Some(http) = handler.http_get.as_mut() {
        default_http_get(http);
    }
}

fn default_http_get(http: &mut HTTPGetAction) {
    if http.path.as_deref().unwrap_or("").is_empty() {
        http.path = Some("/".into());
    }
    http.scheme.get_or_insert_with(|| "HTTP".into());
}

fn default_volume(volume: &mut Volume) {
    let has_source = volume.host_path.is_some()
        || volume.empty_dir.is_some()
        || volume.secret.is_some()
        || volume.config_map.is_some()
        || volume.downward_api.is_some()
        || volume.projected.is_some()
        || volume.persistent_volume_claim.is_some()
        || volume.ephemeral.is_some()
        || volume.csi.is_some()
        || volume.nfs.is_some()
        || volume.iscsi.is_some()
        || volume.fc.is_some()
        || volume.image.is_some()
        || volume.git_repo.is_some();
    if !has_source {
        volume.empty_dir = Some(Default::default());
    }
    if let Some(host_path) = volume.host_path.as_mut() {
        host_path.type_.get_or_insert_with(String::new);
    }
    const DEFAULT_MODE: i32 = 0o644;
    if let Some(s) = volume.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(s) = volume.config_map.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_MODE);
    }
    if let Some(s) = volume.downward_api.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_MODE);
        for item in s.items.iter_mut().flatten() {
            if let Some(field_ref) = item.field_ref.as_mut()
                && field_ref.api_version.as_deref().unwrap_or("").is_empty()
            {
                field_ref.api_version = Some("v1".into());
            }
        }
    }
    if let Some(s) = volume.projected.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_MODE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{container, static_pod};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn empty_strategy_becomes_auto_with_ten_percent() {
        let mut sp = static_pod("web", "nginx:1.19.1");
        sp.spec.upgrade_strategy = Default::default();
        default_static_pod(&mut sp);
        assert_eq!(sp.spec.upgrade_strategy.type_.as_deref(), Some("auto"));
        assert_eq!(
            sp.spec.upgrade_strategy.max_unavailable,
            Some(IntOrString::String("10%".into()))
        );
        assert_eq!(sp.spec.revision_history_limit, Some(10));
    }

    #[test]
    fn upstream_spellings_are_normalised() {
        for (given, want) in [
            ("AdvancedRollingUpdate", "auto"),
            ("AUTO", "auto"),
            ("OTA", "ota"),
            ("Ota", "ota"),
        ] {
            let mut sp = static_pod("web", "nginx:1.19.1");
            sp.spec.upgrade_strategy.type_ = Some(given.into());
            sp.spec.upgrade_strategy.max_unavailable = None;
            default_static_pod(&mut sp);
            assert_eq!(
                sp.spec.upgrade_strategy.type_.as_deref(),
                Some(want),
                "{given}"
            );
        }
    }

    #[test]
    fn ota_gets_no_max_unavailable_and_unknown_types_are_left_for_validation() {
        let mut sp = static_pod("web", "nginx:1.19.1");
        sp.spec.upgrade_strategy.type_ = Some("ota".into());
        sp.spec.upgrade_strategy.max_unavailable = None;
        default_static_pod(&mut sp);
        assert_eq!(sp.spec.upgrade_strategy.max_unavailable, None);

        sp.spec.upgrade_strategy.type_ = Some("canary".into());
        default_static_pod(&mut sp);
        assert_eq!(sp.spec.upgrade_strategy.type_.as_deref(), Some("canary"));
        assert_eq!(sp.spec.upgrade_strategy.max_unavailable, None);
    }

    #[test]
    fn explicit_values_are_kept() {
        let mut sp = static_pod("web", "nginx:1.19.1");
        sp.spec.upgrade_strategy.max_unavailable = Some(IntOrString::Int(3));
        sp.spec.revision_history_limit = Some(2);
        default_static_pod(&mut sp);
        assert_eq!(
            sp.spec.upgrade_strategy.max_unavailable,
            Some(IntOrString::Int(3))
        );
        assert_eq!(sp.spec.revision_history_limit, Some(2));
    }

    #[test]
    fn template_takes_the_static_pods_identity() {
        let mut sp = static_pod("web", "nginx:1.19.1");
        let meta = sp
            .spec
            .template
            .metadata
            .get_or_insert_with(Default::default);
        meta.name = Some("something-else".into());
        meta.namespace = None;
        default_static_pod(&mut sp);
        let meta = sp.spec.template.metadata.as_ref().expect("metadata");
        assert_eq!(meta.name.as_deref(), Some("web"));
        assert_eq!(meta.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn kubernetes_pod_defaults_are_applied() {
        let mut sp = static_pod("web", "nginx:1.19.1");
        let spec = sp.spec.template.spec.as_mut().expect("spec");
        let c = &mut spec.containers[0];
        c.ports = Some(vec![ContainerPort {
            container_port: 80,
            ..Default::default()
        }]);
        c.readiness_probe = Some(Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::Int(80),
                ..Default::default()
            }),
            ..Default::default()
        });
        c.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements {
            limits: Some([("cpu".to_string(), Quantity("1".into()))].into()),
            ..Default::default()
        });
        default_static_pod(&mut sp);
        let spec = sp.spec.template.spec.as_ref().expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(
            c.ports.as_ref().expect("ports")[0].protocol.as_deref(),
            Some("TCP")
        );
        let probe = c.readiness_probe.as_ref().expect("probe");
        assert_eq!(
            (
                probe.timeout_seconds,
                probe.period_seconds,
                probe.success_threshold,
                probe.failure_threshold
            ),
            (Some(1), Some(10), Some(1), Some(3))
        );
        let http = probe.http_get.as_ref().expect("httpGet");
        assert_eq!(
            (http.path.as_deref(), http.scheme.as_deref()),
            (Some("/"), Some("HTTP"))
        );
        let requests = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .expect("requests");
        assert_eq!(requests.get("cpu"), Some(&Quantity("1".into())));
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.19.1", "IfNotPresent"),
            ("registry:5000/nginx", "Always"),
            ("registry:5000/nginx:1.2", "IfNotPresent"),
            ("nginx@sha256:abcd", "IfNotPresent"),
            ("nginx:1.2@sha256:abcd", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn host_network_ports_default_their_host_port() {
        let mut sp = static_pod("web", "nginx:1.19.1");
        let spec = sp.spec.template.spec.as_mut().expect("spec");
        spec.host_network = Some(true);
        spec.containers[0].ports = Some(vec![ContainerPort {
            container_port: 8080,
            ..Default::default()
        }]);
        default_static_pod(&mut sp);
        let port = &sp.spec.template.spec.as_ref().expect("spec").containers[0]
            .ports
            .as_ref()
            .expect("ports")[0];
        assert_eq!(port.host_port, Some(8080));
    }

    #[test]
    fn defaulting_is_idempotent() {
        let mut sp = static_pod("web", "nginx");
        let spec = sp.spec.template.spec.as_mut().expect("spec");
        spec.containers.push(container("sidecar", "busybox:1.36"));
        spec.volumes = Some(vec![Volume {
            name: "scratch".into(),
            ..Default::default()
        }]);
        sp.spec.upgrade_strategy.type_ = Some("AdvancedRollingUpdate".into());
        sp.spec.upgrade_strategy.max_unavailable = None;
        default_static_pod(&mut sp);
        let once = sp.clone();
        default_static_pod(&mut sp);
        assert_eq!(sp, once);
        assert!(
            once.spec
                .template
                .spec
                .as_ref()
                .expect("spec")
                .volumes
                .as_ref()
                .expect("volumes")[0]
                .empty_dir
                .is_some()
        );
    }
}
