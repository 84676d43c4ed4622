//! Builders for test objects, shared by the unit tests of every crate.

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::types::{StaticPod, StaticPodSpec, UpgradeStrategy};

/// A container with a name and an image and nothing else.
pub fn container(name: &str, image: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        ..Default::default()
    }
}

/// The seed's StaticPod: `<name>` in `default`, manifest `nginx`, `auto` with
/// `maxUnavailable: 1`, one container `nginx` running `image`.
pub fn static_pod(name: &str, image: &str) -> StaticPod {
    StaticPod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: StaticPodSpec {
            static_pod_manifest: "nginx".into(),
            upgrade_strategy: UpgradeStrategy {
                type_: Some("auto".into()),
                max_unavailable: Some(IntOrString::Int(1)),
            },
            revision_history_limit: None,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some([("app".to_string(), name.to_string())].into()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container("nginx", image)],
                    ..Default::default()
                }),
            },
        },
        status: None,
    }
}
