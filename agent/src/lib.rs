//! The StaticPod node agent. So far: the crash-safe manifest swap ([`swap`]); the
//! watches, verification and OTA API come next.
#![forbid(unsafe_code)]

pub mod ota;
pub mod swap;
