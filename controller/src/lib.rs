//! The StaticPod controller: the pure rollout planner ([`planner`]), the facts it
//! reads ([`facts`], [`assess`]), the reconciler that applies its answers
//! ([`reconcile`]) and its [`metrics`].
#![forbid(unsafe_code)]

pub mod assess;
pub mod facts;
pub mod metrics;
pub mod planner;
pub mod reconcile;
