//! `staticpod-webhook`: the mutating and validating admission webhook for StaticPods.
//!
//! Not built yet: the admission server is the subject of its own issue. Until then
//! this binary refuses to start rather than pretend to serve.

fn main() -> std::process::ExitCode {
    eprintln!("staticpod-webhook: the admission server is not implemented yet");
    std::process::ExitCode::from(2)
}
