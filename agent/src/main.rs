//! `staticpod-agent`: swaps manifest files on one node and serves the OTA API.
//!
//! Not built yet: the node agent is the subject of its own issue. Until then this
//! binary refuses to start rather than pretend to upgrade.

fn main() -> std::process::ExitCode {
    eprintln!("staticpod-agent: the node agent is not implemented yet");
    std::process::ExitCode::from(2)
}
