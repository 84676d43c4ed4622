//! The StaticPod controller: the pure rollout planner ([`planner`]), the facts it
//! reads ([`facts`]) and the reconciler that applies its answers ([`reconcile`]).
#![forbid(unsafe_code)]

pub mod facts;
pub mod planner;
pub mod reconcile;
