//! `staticpod-controller`: keeps StaticPod status and drives rollouts.
//!
//! Not built yet: the controller is the subject of its own issue. Until then this
//! binary refuses to start rather than pretend to reconcile.

fn main() -> std::process::ExitCode {
    eprintln!("staticpod-controller: the controller is not implemented yet");
    std::process::ExitCode::from(2)
}
