//! The StaticPod controller. So far: the pure rollout planner ([`planner`]); the
//! watches and API writes that feed and apply it come next.
#![forbid(unsafe_code)]

pub mod planner;
