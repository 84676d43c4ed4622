//! The StaticPod node agent: the crash-safe manifest swap ([`swap`]), the upgrade
//! procedure over the node's watch caches ([`node`]) and the YurtHub-compatible OTA
//! API ([`ota`]).
#![forbid(unsafe_code)]

pub mod metrics;
pub mod node;
pub mod ota;
pub mod swap;
