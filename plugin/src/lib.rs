//! `kubectl-staticpod`, the kubectl plugin for StaticPods: a pure core ([`view`]
//! judges a StaticPod with the controller's own assessment, [`render`] turns views
//! into text, [`upgrade`] decides OTA requests) and a thin I/O shell ([`cluster`],
//! [`watch`], [`run`]).
#![forbid(unsafe_code)]

pub mod cli;
pub mod cluster;
pub mod error;
pub mod render;
pub mod run;
pub mod upgrade;
pub mod view;
pub mod watch;
