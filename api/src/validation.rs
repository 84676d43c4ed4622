//! Validation: every rule of SPEC §3, as a list of field errors in Kubernetes' shape,
//! plus warnings for oddities that are accepted.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, PodSpec, Probe, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::field::{FieldError, FieldValue, invalid_message};
use crate::names;
use crate::quantity;
use crate::rollout::MaxUnavailable;
use crate::types::{GROUP, KIND, StaticPod, StrategyType};

/// Longest `staticPodManifest`: `<name>.yaml` must fit a 255-byte file name.
pub const MANIFEST_NAME_MAX: usize = 250;

const NO_API_OBJECTS: &str = "static pods cannot reference API objects: the kubelet starts them \
                              from a file on the node without the API server";

/// The outcome of validating one StaticPod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Validation {
    /// Problems that make the object unacceptable.
    pub errors: Vec<FieldError>,
    /// Oddities that are accepted but probably not meant.
    pub warnings: Vec<String>,
}

impl Validation {
    /// True when there is nothing to reject.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// The message Kubernetes would give: `StaticPod.apps.openyurt.io "<name>" is invalid: …`.
    pub fn message(&self, name: &str) -> String {
        invalid_message(KIND, GROUP, name, &self.errors)
    }
}

/// Checks a (defaulted) StaticPod against every rule of SPEC §3.
pub fn validate_static_pod(sp: &StaticPod) -> Validation {
    let mut v = Validation::default();
    validate_manifest_name(&sp.spec.static_pod_manifest, &mut v.errors);
    validate_strategy(sp, &mut v);
    if let Some(limit) = sp.spec.revision_history_limit
        && limit < 0
    {
        v.errors.push(FieldError::invalid(
            "spec.revisionHistoryLimit",
            limit,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(meta) = &sp.spec.template.metadata {
        validate_template_meta(sp, meta, &mut v.errors);
    }
    match &sp.spec.template.spec {
        Some(spec) => validate_pod_spec(spec, "spec.template.spec", &mut v.errors),
        None => v.errors.push(FieldError::required(
            "spec.template.spec",
            "a pod template with at least one container",
        )),
    }
    v
}

/// The rules for `staticPodManifest`, which becomes `<dir>/<name>.yaml` on every node;
/// the node agent checks them again before it writes anything.
pub fn validate_manifest_name(name: &str, errors: &mut Vec<FieldError>) {
    let path = "spec.staticPodManifest";
    if name.is_empty() {
        errors.push(FieldError::required(
            path,
            "the base name of the manifest file on each node, e.g. \"nginx\" for nginx.yaml",
        ));
        return;
    }
    let problems = names::dns1123_subdomain(name, MANIFEST_NAME_MAX);
    if !problems.is_empty() {
        errors.push(FieldError::invalid(
            path,
            name,
            format!(
                "{}; it becomes the file <manifest dir>/{name}.yaml on every node, so it must be \
                 a plain file name",
                problems.join("; ")
            ),
        ));
    }
}

fn validate_strategy(sp: &StaticPod, v: &mut Validation) {
    let strategy = &sp.spec.upgrade_strategy;
    let kind = match strategy.type_.as_deref() {
        None | Some("") => StrategyType::Auto,
        Some(value) => match StrategyType::parse(value) {
            Some(kind) => kind,
            None => {
                v.errors.push(FieldError::not_supported(
                    "spec.upgradeStrategy.type",
                    value,
                    &StrategyType::SUPPORTED,
                ));
                return;
            }
        },
    };
    if let Some(max) = &strategy.max_unavailable {
        if let Err(rule) = MaxUnavailable::parse(max) {
            let shown = match max {
                IntOrString::Int(n) => FieldValue::Int((*n).into()),
                IntOrString::String(s) => FieldValue::Str(s.clone()),
            };
            v.errors.push(FieldError::invalid(
                "spec.upgradeStrategy.maxUnavailable",
                shown,
                rule,
            ));
        } else if kind == StrategyType::Ota {
            v.warnings.push(
                "spec.upgradeStrategy.maxUnavailable is ignored in ota mode: each node upgrades \
                 when it is triggered"
                    .into(),
            );
        }
    }
}

fn validate_template_meta(sp: &StaticPod, meta: &ObjectMeta, errors: &mut Vec<FieldError>) {
    let own = [
        (
            "spec.template.metadata.name",
            &meta.name,
            &sp.metadata.name,
            "name",
        ),
        (
            "spec.template.metadata.namespace",
            &meta.namespace,
            &sp.metadata.namespace,
            "namespace",
        ),
    ];
    for (path, template, owner, what) in own {
        if let (Some(t), Some(o)) = (template, owner)
            && t != o
        {
            errors.push(FieldError::invalid(
                path,
                t,
                format!(
                    "must equal the StaticPod's {what} {o:?} (the mirror pod on node N is \
                     named <name>-<N>); leave it empty to have it filled in"
                ),
            ));
        }
    }
    validate_map_keys(
        meta.labels.as_ref(),
        "spec.template.metadata.labels",
        true,
        errors,
    );
    validate_map_keys(
        meta.annotations.as_ref(),
        "spec.template.metadata.annotations",
        false,
        errors,
    );
}

fn validate_map_keys(
    map: Option<&BTreeMap<String, String>>,
    path: &str,
    check_values: bool,
    errors: &mut Vec<FieldError>,
) {
    for (key, value) in map.into_iter().flatten() {
        let problems = names::qualified_name(key);
        if !problems.is_empty() {
            errors.push(FieldError::invalid(path, key, problems.join("; ")));
        }
        if check_values {
            let problems = names::label_value(value);
            if !problems.is_empty() {
                errors.push(FieldError::invalid(
                    format!("{path}[{key}]"),
                    value,
                    problems.join("; "),
                ));
            }
        }
    }
}

/// Pod spec rules: what Kubernetes checks for any pod that matters here, and what a
/// kubelet refuses in a static pod.
pub fn validate_pod_spec(spec: &PodSpec, path: &str, errors: &mut Vec<FieldError>) {
    if spec.containers.is_empty() {
        errors.push(FieldError::required(
            format!("{path}.containers"),
            "at least one container",
        ));
    }
    let volumes = validate_volumes(spec.volumes.as_deref().unwrap_or_default(), path, errors);

    let mut seen_names = HashSet::new();
    let groups = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
            true,
        ),
        ("containers", spec.containers.as_slice(), false),
    ];
    for (field, containers, init) in groups {
        for (i, c) in containers.iter().enumerate() {
            let cpath = format!("{path}.{field}[{i}]");
            if !c.name.is_empty() && !seen_names.insert(c.name.as_str()) {
                errors.push(FieldError::duplicate(format!("{cpath}.name"), &c.name));
            }
            validate_container(c, &cpath, init, &volumes, errors);
        }
    }

    if spec
        .ephemeral_containers
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        errors.push(FieldError::forbidden(
            format!("{path}.ephemeralContainers"),
            "static pods cannot have ephemeral containers",
        ));
    }
    for (field, value) in [
        ("serviceAccountName", &spec.service_account_name),
        ("serviceAccount", &spec.service_account),
    ] {
        if value.as_ref().is_some_and(|s| !s.is_empty()) {
            errors.push(FieldError::forbidden(
                format!("{path}.{field}"),
                format!("{NO_API_OBJECTS}, so they cannot use a service account"),
            ));
        }
    }
    if spec
        .image_pull_secrets
        .as_ref()
        .is_some_and(|s| !s.is_empty())
    {
        errors.push(FieldError::forbidden(
            format!("{path}.imagePullSecrets"),
            format!("{NO_API_OBJECTS}; configure registry credentials on the node instead"),
        ));
    }
    if spec.resource_claims.as_ref().is_some_and(|s| !s.is_empty()) {
        errors.push(FieldError::forbidden(
            format!("{path}.resourceClaims"),
            NO_API_OBJECTS,
        ));
    }
    if let Some(policy) = spec.restart_policy.as_deref() {
        check_one_of(
            policy,
            &["Always", "OnFailure", "Never"],
            &format!("{path}.restartPolicy"),
            errors,
        );
    }
    if let Some(policy) = spec.dns_policy.as_deref() {
        check_one_of(
            policy,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
            &format!("{path}.dnsPolicy"),
            errors,
        );
    }
    if let Some(grace) = spec.termination_grace_period_seconds
        && grace < 0
    {
        errors.push(FieldError::invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            grace,
            "must be greater than or equal to 0",
        ));
    }
}

fn check_one_of(value: &str, supported: &[&str], path: &str, errors: &mut Vec<FieldError>) {
    if !supported.contains(&value) {
        errors.push(FieldError::not_supported(path, value, supported));
    }
}

fn validate_volumes<'a>(
    volumes: &'a [Volume],
    path: &str,
    errors: &mut Vec<FieldError>,
) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let vpath = format!("{path}.volumes[{i}]");
        let problems = names::dns1123_label(&volume.name);
        if volume.name.is_empty() {
            errors.push(FieldError::required(format!("{vpath}.name"), ""));
        } else if !problems.is_empty() {
            errors.push(FieldError::invalid(
                format!("{vpath}.name"),
                &volume.name,
                problems.join("; "),
            ));
        } else if !seen.insert(volume.name.as_str()) {
            errors.push(FieldError::duplicate(format!("{vpath}.name"), &volume.name));
        }
        let api_sources = [
            ("secret", volume.secret.is_some(), "Secret"),
            ("configMap", volume.config_map.is_some(), "ConfigMap"),
            (
                "projected",
                volume.projected.is_some(),
                "projected (service account token, Secret, ConfigMap)",
            ),
            (
                "persistentVolumeClaim",
                volume.persistent_volume_claim.is_some(),
                "PersistentVolumeClaim",
            ),
            (
                "ephemeral",
                volume.ephemeral.is_some(),
                "generic ephemeral (PersistentVolumeClaim)",
            ),
        ];
        for (field, used, what) in api_sources {
            if used {
                errors.push(FieldError::forbidden(
                    format!("{vpath}.{field}"),
                    format!("{NO_API_OBJECTS}, so a {what} volume cannot be mounted; use hostPath, emptyDir or downwardAPI"),
                ));
            }
        }
        if volume
            .csi
            .as_ref()
            .is_some_and(|csi| csi.node_publish_secret_ref.is_some())
        {
            errors.push(FieldError::forbidden(
                format!("{vpath}.csi.nodePublishSecretRef"),
                NO_API_OBJECTS,
            ));
        }
        if let Some(host_path) = &volume.host_path
            && host_path.path.is_empty()
        {
            errors.push(FieldError::required(format!("{vpath}.hostPath.path"), ""));
        }
    }
    seen
}

fn validate_container(
    c: &Container,
    path: &str,
    init: bool,
    volumes: &HashSet<&str>,
    errors: &mut Vec<FieldError>,
) {
    if c.name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name"), ""));
    } else {
        let problems = names::dns1123_label(&c.name);
        if !problems.is_empty() {
            errors.push(FieldError::invalid(
                format!("{path}.name"),
                &c.name,
                problems.join("; "),
            ));
        }
    }
    match c.image.as_deref() {
        None | Some("") => errors.push(FieldError::required(
            format!("{path}.image"),
            "the container image to run, e.g. \"nginx:1.19.1\"",
        )),
        Some(image) if image.trim() != image || image.trim().is_empty() => {
            errors.push(FieldError::invalid(
                format!("{path}.image"),
                image,
                "must not have leading or trailing whitespace",
            ))
        }
        Some(_) => {}
    }
    if let Some(policy) = c.image_pull_policy.as_deref() {
        check_one_of(
            policy,
            &["Always", "IfNotPresent", "Never"],
            &format!("{path}.imagePullPolicy"),
            errors,
        );
    }

    let mut port_names = HashSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let ppath = format!("{path}.ports[{i}]");
        if !(1..=65535).contains(&port.container_port) {
            errors.push(FieldError::invalid(
                format!("{ppath}.containerPort"),
                port.container_port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(host_port) = port.host_port
            && !(0..=65535).contains(&host_port)
        {
            errors.push(FieldError::invalid(
                format!("{ppath}.hostPort"),
                host_port,
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(protocol) = port.protocol.as_deref() {
            check_one_of(
                protocol,
                &["SCTP", "TCP", "UDP"],
                &format!("{ppath}.protocol"),
                errors,
            );
        }
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            let problems = names::iana_svc_name(name);
            if !problems.is_empty() {
                errors.push(FieldError::invalid(
                    format!("{ppath}.name"),
                    name,
                    problems.join("; "),
                ));
            } else if !port_names.insert(name) {
                errors.push(FieldError::duplicate(format!("{ppath}.name"), name));
            }
        }
    }

    if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        errors.push(FieldError::forbidden(
            format!("{path}.envFrom"),
            format!(
                "{NO_API_OBJECTS}, so environment variables cannot come from a ConfigMap or Secret"
            ),
        ));
    }
    for (i, env) in c.env.iter().flatten().enumerate() {
        let epath = format!("{path}.env[{i}]");
        if env.name.is_empty() {
            errors.push(FieldError::required(format!("{epath}.name"), ""));
        } else if env.name.contains('=') || env.name.chars().any(|ch| !ch.is_ascii_graphic()) {
            errors.push(FieldError::invalid(
                format!("{epath}.name"),
                &env.name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
        if let Some(from) = &env.value_from {
            for (field, used) in [
                ("secretKeyRef", from.secret_key_ref.is_some()),
                ("configMapKeyRef", from.config_map_key_ref.is_some()),
            ] {
                if used {
                    errors.push(FieldError::forbidden(
                        format!("{epath}.valueFrom.{field}"),
                        NO_API_OBJECTS,
                    ));
                }
            }
        }
    }

    for (i, mount) in c.volume_mounts.iter().flatten().enumerate() {
        let mpath = format!("{path}.volumeMounts[{i}]");
        if mount.name.is_empty() {
            errors.push(FieldError::required(format!("{mpath}.name"), ""));
        } else if !volumes.contains(mount.name.as_str()) {
            errors.push(FieldError::not_found(format!("{mpath}.name"), &mount.name));
        }
        if mount.mount_path.is_empty() {
            errors.push(FieldError::required(format!("{mpath}.mountPath"), ""));
        }
    }

    let probes = [
        ("livenessProbe", &c.liveness_probe, true),
        ("readinessProbe", &c.readiness_probe, false),
        ("startupProbe", &c.startup_probe, true),
    ];
    for (field, probe, success_must_be_one) in probes {
        if let Some(probe) = probe {
            let ppath = format!("{path}.{field}");
            if init && c.restart_policy.as_deref() != Some("Always") {
                errors.push(FieldError::forbidden(
                    ppath,
                    "may not be set for init containers without restartPolicy=Always",
                ));
                continue;
            }
            validate_probe(probe, &ppath, success_must_be_one, errors);
        }
    }
    validate_resources(c, path, errors);
}

fn validate_probe(
    probe: &Probe,
    path: &str,
    success_must_be_one: bool,
    errors: &mut Vec<FieldError>,
) {
    let handlers = [
        probe.exec.is_some(),
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.grpc.is_some(),
    ];
    match handlers.iter().filter(|h| **h).count() {
        0 => errors.push(FieldError::required(path, "must specify a handler type")),
        1 => {}
        _ => errors.push(FieldError::forbidden(
            path,
            "may not specify more than 1 handler type",
        )),
    }
    if let Some(exec) = &probe.exec
        && exec.command.as_ref().is_none_or(|c| c.is_empty())
    {
        errors.push(FieldError::required(format!("{path}.exec.command"), ""));
    }
    if let Some(http) = &probe.http_get {
        validate_probe_port(&http.port, &format!("{path}.httpGet.port"), errors);
        if let Some(scheme) = http.scheme.as_deref() {
            check_one_of(
                scheme,
                &["HTTP", "HTTPS"],
                &format!("{path}.httpGet.scheme"),
                errors,
            );
        }
    }
    if let Some(tcp) = &probe.tcp_socket {
        validate_probe_port(&tcp.port, &format!("{path}.tcpSocket.port"), errors);
    }
    if let Some(grpc) = &probe.grpc
        && !(1..=65535).contains(&grpc.port)
    {
        errors.push(FieldError::invalid(
            format!("{path}.grpc.port"),
            grpc.port,
            "must be between 1 and 65535, inclusive",
        ));
    }
    let numbers = [
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ];
    for (field, value) in numbers {
        if let Some(value) = value
            && value < 0
        {
            errors.push(FieldError::invalid(
                format!("{path}.{field}"),
                value,
                "must be greater than or equal to 0",
            ));
        }
    }
    if success_must_be_one
        && let Some(n) = probe.success_threshold
        && n != 1
    {
        errors.push(FieldError::invalid(
            format!("{path}.successThreshold"),
            n,
            "must be 1",
        ));
    }
}

fn validate_probe_port(port: &IntOrString, path: &str, errors: &mut Vec<FieldError>) {
    match port {
        IntOrString::Int(n) if !(1..=65535).contains(n) => errors.push(FieldError::invalid(
            path,
            n,
            "must be between 1 and 65535, inclusive",
        )),
        IntOrString::String(name) => {
            let problems = names::iana_svc_name(name);
            if !problems.is_empty() {
                errors.push(FieldError::invalid(path, name, problems.join("; ")));
            }
        }
        IntOrString::Int(_) => {}
    }
}

fn validate_resources(c: &Container, path: &str, errors: &mut Vec<FieldError>) {
    let Some(resources) = &c.resources else {
        return;
    };
    let mut parsed_limits = BTreeMap::new();
    for (field, list) in [
        ("limits", &resources.limits),
        ("requests", &resources.requests),
    ] {
        for (name, value) in list.iter().flatten() {
            let rpath = format!("{path}.resources.{field}[{name}]");
            match quantity::parse(&value.0) {
                None => errors.push(FieldError::invalid(
                    rpath,
                    &value.0,
                    "quantities must match the regular expression \
                     '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )),
                Some(n) if n < 0.0 => errors.push(FieldError::invalid(
                    rpath,
                    &value.0,
                    "must be greater than or equal to 0",
                )),
                Some(n) if field == "limits" => {
                    parsed_limits.insert(name.as_str(), (n, &value.0));
                }
                Some(n) => {
                    if let Some((limit, shown)) = parsed_limits.get(name.as_str())
                        && n > *limit
                    {
                        errors.push(FieldError::invalid(
                            rpath,
                            &value.0,
                            format!("must be less than or equal to {name} limit of {shown}"),
                        ));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::default_static_pod;
    use crate::field::ErrorKind;
    use crate::testing::{container, static_pod};
    use k8s_openapi::api::core::v1::{
        ConfigMapVolumeSource, ContainerPort, EnvFromSource, EnvVar, EnvVarSource,
        EphemeralContainer, ExecAction, HTTPGetAction, HostPathVolumeSource, LocalObjectReference,
        ProjectedVolumeSource, ResourceRequirements, SecretKeySelector, SecretVolumeSource,
        VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn valid() -> StaticPod {
        let mut sp = static_pod("web", "nginx:1.19.1");
        default_static_pod(&mut sp);
        sp
    }

    fn errors_of(sp: &StaticPod) -> Vec<FieldError> {
        validate_static_pod(sp).errors
    }

    /// Asserts exactly one error, at `path`, of `kind`.
    fn rejects(sp: &StaticPod, path: &str, kind: fn(&ErrorKind) -> bool) {
        let errors = errors_of(sp);
        assert_eq!(
            errors.len(),
            1,
            "expected one error at {path}, got {errors:#?}"
        );
        assert_eq!(errors[0].path, path, "{errors:#?}");
        assert!(kind(&errors[0].kind), "{errors:#?}");
    }

    fn pod_spec(sp: &mut StaticPod) -> &mut PodSpec {
        sp.spec.template.spec.as_mut().expect("spec")
    }

    #[test]
    fn the_seed_static_pod_is_valid() {
        let v = validate_static_pod(&valid());
        assert!(v.is_valid(), "{v:#?}");
        assert!(v.warnings.is_empty());
    }

    #[test]
    fn manifest_names_must_be_plain_file_names() {
        for good in ["nginx", "kube-proxy", "yurt-hub.v2", "a"] {
            let mut sp = valid();
            sp.spec.static_pod_manifest = good.into();
            assert!(errors_of(&sp).is_empty(), "{good}");
        }
        let mut sp = valid();
        sp.spec.static_pod_manifest = String::new();
        rejects(&sp, "spec.staticPodManifest", |k| *k == ErrorKind::Required);
        let long = "a".repeat(MANIFEST_NAME_MAX + 1);
        for bad in [
            "../x",
            "a/b",
            ".hidden",
            "..",
            "Nginx",
            "nginx.yaml/",
            "x y",
            long.as_str(),
        ] {
            let mut sp = valid();
            sp.spec.static_pod_manifest = bad.into();
            rejects(&sp, "spec.staticPodManifest", |k| *k == ErrorKind::Invalid);
        }
    }

    #[test]
    fn strategy_type_must_be_auto_or_ota() {
        let mut sp = valid();
        sp.spec.upgrade_strategy.type_ = Some("canary".into());
        let errors = errors_of(&sp);
        assert_eq!(
            errors[0].to_string(),
            r#"spec.upgradeStrategy.type: Unsupported value: "canary": supported values: "auto", "ota""#
        );
        for good in ["auto", "ota", "OTA", "AdvancedRollingUpdate"] {
            sp.spec.upgrade_strategy.type_ = Some(good.into());
            assert!(errors_of(&sp).is_empty(), "{good}");
        }
    }

    #[test]
    fn max_unavailable_must_be_a_positive_count_or_percentage() {
        for good in [
            IntOrString::Int(1),
            IntOrString::Int(50),
            IntOrString::String("100%".into()),
        ] {
            let mut sp = valid();
            sp.spec.upgrade_strategy.max_unavailable = Some(good.clone());
            assert!(errors_of(&sp).is_empty(), "{good:?}");
        }
        for bad in [
            IntOrString::Int(0),
            IntOrString::Int(-2),
            IntOrString::String("0%".into()),
            IntOrString::String("150%".into()),
            IntOrString::String("abc".into()),
        ] {
            let mut sp = valid();
            sp.spec.upgrade_strategy.max_unavailable = Some(bad);
            rejects(&sp, "spec.upgradeStrategy.maxUnavailable", |k| {
                *k == ErrorKind::Invalid
            });
        }
    }

    #[test]
    fn max_unavailable_under_ota_is_a_warning() {
        let mut sp = valid();
        sp.spec.upgrade_strategy.type_ = Some("ota".into());
        let v = validate_static_pod(&sp);
        assert!(v.is_valid());
        assert_eq!(v.warnings.len(), 1);
        assert!(v.warnings[0].contains("ignored in ota mode"));
    }

    #[test]
    fn revision_history_limit_must_not_be_negative() {
        let mut sp = valid();
        sp.spec.revision_history_limit = Some(0);
        assert!(errors_of(&sp).is_empty());
        sp.spec.revision_history_limit = Some(-1);
        rejects(&sp, "spec.revisionHistoryLimit", |k| {
            *k == ErrorKind::Invalid
        });
    }

    #[test]
    fn template_needs_a_container_with_a_name_and_an_image() {
        let mut sp = valid();
        pod_spec(&mut sp).containers.clear();
        rejects(&sp, "spec.template.spec.containers", |k| {
            *k == ErrorKind::Required
        });

        let mut sp = valid();
        sp.spec.template.spec = None;
        rejects(&sp, "spec.template.spec", |k| *k == ErrorKind::Required);

        let mut sp = valid();
        pod_spec(&mut sp).containers[0].image = None;
        rejects(&sp, "spec.template.spec.containers[0].image", |k| {
            *k == ErrorKind::Required
        });

        let mut sp = valid();
        pod_spec(&mut sp).containers[0].image = Some(" nginx".into());
        rejects(&sp, "spec.template.spec.containers[0].image", |k| {
            *k == ErrorKind::Invalid
        });

        let mut sp = valid();
        pod_spec(&mut sp).containers[0].name = "Web_1".into();
        rejects(&sp, "spec.template.spec.containers[0].name", |k| {
            *k == ErrorKind::Invalid
        });
    }

    #[test]
    fn container_names_are_unique_across_init_and_app_containers() {
        let mut sp = valid();
        pod_spec(&mut sp)
            .containers
            .push(container("sidecar", "busybox:1"));
        assert!(errors_of(&sp).is_empty());
        pod_spec(&mut sp)
            .containers
            .push(container("nginx", "busybox:1"));
        rejects(&sp, "spec.template.spec.containers[2].name", |k| {
            *k == ErrorKind::Duplicate
        });

        let mut sp = valid();
        pod_spec(&mut sp).init_containers = Some(vec![container("nginx", "busybox:1")]);
        rejects(&sp, "spec.template.spec.containers[0].name", |k| {
            *k == ErrorKind::Duplicate
        });
    }

    #[test]
    fn ports_are_checked() {
        let port = |container_port, name: Option<&str>, protocol: &str| ContainerPort {
            container_port,
            name: name.map(Into::into),
            protocol: Some(protocol.into()),
            ..Default::default()
        };
        let mut sp = valid();
        pod_spec(&mut sp).containers[0].ports = Some(vec![
            port(80, Some("http"), "TCP"),
            port(53, Some("dns"), "UDP"),
        ]);
        assert!(errors_of(&sp).is_empty());

        let cases = [
            (
                port(0, None, "TCP"),
                "spec.template.spec.containers[0].ports[0].containerPort",
            ),
            (
                port(70000, None, "TCP"),
                "spec.template.spec.containers[0].ports[0].containerPort",
            ),
            (
                port(80, None, "HTTP"),
                "spec.template.spec.containers[0].ports[0].protocol",
            ),
            (
                port(80, Some("8080"), "TCP"),
                "spec.template.spec.containers[0].ports[0].name",
            ),
        ];
        for (bad, path) in cases {
            let mut sp = valid();
            pod_spec(&mut sp).containers[0].ports = Some(vec![bad]);
            let errors = errors_of(&sp);
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert_eq!(errors[0].path, path);
        }

        let mut sp = valid();
        pod_spec(&mut sp).containers[0].ports = Some(vec![
            port(80, Some("http"), "TCP"),
            port(81, Some("http"), "TCP"),
        ]);
        rejects(&sp, "spec.template.spec.containers[0].ports[1].name", |k| {
            *k == ErrorKind::Duplicate
        });
    }

    #[test]
    fn probes_are_checked() {
        let http = |port| Probe {
            http_get: Some(HTTPGetAction {
                port,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut sp = valid();
        pod_spec(&mut sp).containers[0].readiness_probe = Some(http(IntOrString::Int(80)));
        pod_spec(&mut sp).containers[0].liveness_probe = Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Default::default()
        });
        assert!(errors_of(&sp).is_empty(), "{:#?}", errors_of(&sp));

        let mut sp = valid();
        pod_spec(&mut sp).containers[0].readiness_probe = Some(Probe::default());
        rejects(
            &sp,
            "spec.template.spec.containers[0].readinessProbe",
            |k| *k == ErrorKind::Required,
        );

        let mut sp = valid();
        pod_spec(&mut sp).containers[0].readiness_probe = Some(http(IntOrString::Int(0)));
        rejects(
            &sp,
            "spec.template.spec.containers[0].readinessProbe.httpGet.port",
            |k| *k == ErrorKind::Invalid,
        );

        let mut sp = valid();
        let mut probe = http(IntOrString::String("http".into()));
        probe.success_threshold = Some(2);
        pod_spec(&mut sp).containers[0].liveness_probe = Some(probe);
        rejects(
            &sp,
            "spec.template.spec.containers[0].livenessProbe.successThreshold",
            |k| *k == ErrorKind::Invalid,
        );

        let mut sp = valid();
        let mut probe = http(IntOrString::Int(80));
        probe.period_seconds = Some(-1);
        pod_spec(&mut sp).containers[0].readiness_probe = Some(probe);
        rejects(
            &sp,
            "spec.template.spec.containers[0].readinessProbe.periodSeconds",
            |k| *k == ErrorKind::Invalid,
        );
    }

    #[test]
    fn resources_are_checked() {
        let resources = |req: &str, lim: &str| ResourceRequirements {
            requests: Some([("memory".to_string(), Quantity(req.into()))].into()),
            limits: Some([("memory".to_string(), Quantity(lim.into()))].into()),
            ..Default::default()
        };
        let mut sp = valid();
        pod_spec(&mut sp).containers[0].resources = Some(resources("64Mi", "128Mi"));
        assert!(errors_of(&sp).is_empty());

        pod_spec(&mut sp).containers[0].resources = Some(resources("256Mi", "128Mi"));
        let errors = errors_of(&sp);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert_eq!(
            errors[0].path,
            "spec.template.spec.containers[0].resources.requests[memory]"
        );
        assert!(
            errors[0]
                .detail
                .contains("less than or equal to memory limit of 128Mi")
        );

        pod_spec(&mut sp).containers[0].resources = Some(resources("lots", "128Mi"));
        rejects(
            &sp,
            "spec.template.spec.containers[0].resources.requests[memory]",
            |k| *k == ErrorKind::Invalid,
        );
        pod_spec(&mut sp).containers[0].resources = Some(resources("-1", "128Mi"));
        rejects(
            &sp,
            "spec.template.spec.containers[0].resources.requests[memory]",
            |k| *k == ErrorKind::Invalid,
        );
    }

    #[test]
    fn static_pods_cannot_reference_api_objects() {
        let volume = |name: &str| Volume {
            name: name.into(),
            ..Default::default()
        };
        let cases: Vec<(Volume, &str)> = vec![
            (
                Volume {
                    secret: Some(SecretVolumeSource::default()),
                    ..volume("s")
                },
                "spec.template.spec.volumes[0].secret",
            ),
            (
                Volume {
                    config_map: Some(ConfigMapVolumeSource::default()),
                    ..volume("c")
                },
                "spec.template.spec.volumes[0].configMap",
            ),
            (
                Volume {
                    projected: Some(ProjectedVolumeSource::default()),
                    ..volume("p")
                },
                "spec.template.spec.volumes[0].projected",
            ),
        ];
        for (bad, path) in cases {
            let mut sp = valid();
            pod_spec(&mut sp).volumes = Some(vec![bad]);
            rejects(&sp, path, |k| *k == ErrorKind::Forbidden);
            assert!(
                errors_of(&sp)[0]
                    .detail
                    .contains("cannot reference API objects")
            );
        }

        let mut sp = valid();
        pod_spec(&mut sp).volumes = Some(vec![Volume {
            host_path: Some(HostPathVolumeSource {
                path: "/var/log".into(),
                ..Default::default()
            }),
            ..volume("logs")
        }]);
        pod_spec(&mut sp).containers[0].volume_mounts = Some(vec![VolumeMount {
            name: "logs".into(),
            mount_path: "/logs".into(),
            ..Default::default()
        }]);
        assert!(
            errors_of(&sp).is_empty(),
            "hostPath volumes are what static pods use"
        );

        let mut sp = valid();
        pod_spec(&mut sp).containers[0].env_from = Some(vec![EnvFromSource::default()]);
        rejects(&sp, "spec.template.spec.containers[0].envFrom", |k| {
            *k == ErrorKind::Forbidden
        });

        let mut sp = valid();
        pod_spec(&mut sp).containers[0].env = Some(vec![
            EnvVar {
                name: "PLAIN".into(),
                value: Some("1".into()),
                ..Default::default()
            },
            EnvVar {
                name: "TOKEN".into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        key: "t".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        rejects(
            &sp,
            "spec.template.spec.containers[0].env[1].valueFrom.secretKeyRef",
            |k| *k == ErrorKind::Forbidden,
        );

        let mut sp = valid();
        pod_spec(&mut sp).ephemeral_containers = Some(vec![EphemeralContainer {
            name: "debug".into(),
            image: Some("busybox".into()),
            ..Default::default()
        }]);
        rejects(&sp, "spec.template.spec.ephemeralContainers", |k| {
            *k == ErrorKind::Forbidden
        });

        let mut sp = valid();
        pod_spec(&mut sp).service_account_name = Some("builder".into());
        rejects(&sp, "spec.template.spec.serviceAccountName", |k| {
            *k == ErrorKind::Forbidden
        });

        let mut sp = valid();
        pod_spec(&mut sp).image_pull_secrets = Some(vec![LocalObjectReference {
            name: "regcred".into(),
        }]);
        rejects(&sp, "spec.template.spec.imagePullSecrets", |k| {
            *k == ErrorKind::Forbidden
        });
    }

    #[test]
    fn volume_mounts_must_name_a_volume() {
        let mut sp = valid();
        pod_spec(&mut sp).containers[0].volume_mounts = Some(vec![VolumeMount {
            name: "missing".into(),
            mount_path: "/x".into(),
            ..Default::default()
        }]);
        rejects(
            &sp,
            "spec.template.spec.containers[0].volumeMounts[0].name",
            |k| *k == ErrorKind::NotFound,
        );
    }

    #[test]
    fn pod_level_enums_are_checked() {
        let mut sp = valid();
        pod_spec(&mut sp).restart_policy = Some("Sometimes".into());
        rejects(&sp, "spec.template.spec.restartPolicy", |k| {
            matches!(k, ErrorKind::NotSupported(_))
        });
        let mut sp = valid();
        pod_spec(&mut sp).dns_policy = Some("Google".into());
        rejects(&sp, "spec.template.spec.dnsPolicy", |k| {
            matches!(k, ErrorKind::NotSupported(_))
        });
    }

    #[test]
    fn template_identity_and_labels_are_checked() {
        let mut sp = valid();
        sp.spec.template.metadata.as_mut().expect("meta").name = Some("other".into());
        rejects(&sp, "spec.template.metadata.name", |k| {
            *k == ErrorKind::Invalid
        });

        let mut sp = valid();
        sp.spec.template.metadata.as_mut().expect("meta").labels =
            Some([("app".to_string(), "-bad-".to_string())].into());
        rejects(&sp, "spec.template.metadata.labels[app]", |k| {
            *k == ErrorKind::Invalid
        });
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let mut sp = valid();
        sp.spec.static_pod_manifest = "../etc/passwd".into();
        sp.spec.upgrade_strategy.max_unavailable = Some(IntOrString::Int(0));
        pod_spec(&mut sp).containers[0].image = None;
        let v = validate_static_pod(&sp);
        assert_eq!(v.errors.len(), 3, "{:#?}", v.errors);
        let message = v.message("web");
        assert!(message.starts_with(r#"StaticPod.apps.openyurt.io "web" is invalid: [spec.staticPodManifest: Invalid value: "../etc/passwd""#), "{message}");
    }
}
