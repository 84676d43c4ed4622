//! `kubectl-staticpod`: the kubectl plugin for StaticPods.
//!
//! Not built yet: the plugin is the subject of its own issue. Until then this
//! binary says so instead of printing made-up status.

fn main() -> std::process::ExitCode {
    eprintln!("kubectl-staticpod: the plugin is not implemented yet; use `kubectl get staticpods`");
    std::process::ExitCode::from(2)
}
