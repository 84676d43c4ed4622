//! End-to-end harness: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager) and hollow kubelets on loopback, built from pinned Go
//! modules by `tests/cluster/build.sh`. No mocks stand in for Kubernetes.
#![forbid(unsafe_code)]

pub mod bins;
pub mod cluster;
pub mod process;
pub mod rollout;
pub mod watch;

pub use cluster::{
    Cluster, ClusterConfig, ComponentExited, Node, free_port, http_request, pod_is_ready, shared,
    wait_for, write_manifest,
};
pub use process::Lifetime;
pub use watch::PodWatch;
