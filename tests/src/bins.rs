//! The pinned Kubernetes binaries, built (or found in the cache) by
//! `tests/cluster/build.sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// Directory holding kube-apiserver, kube-controller-manager, kubectl, etcd and
/// hollow-node. Runs the build script once per process; a cache hit takes
/// well under a second, a cold build tens of minutes (it prints progress).
pub fn k8s_bin_dir() -> Result<&'static Path> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| build().map_err(|e| format!("{e:#}")));
    match dir {
        Ok(dir) => Ok(dir.as_path()),
        Err(e) => bail!("{e}"),
    }
}

fn build() -> Result<PathBuf> {
    let script = repo_root().join("tests/cluster/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed ({}); its progress and errors are above",
            script.display(),
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout.lines().last().map(str::trim).unwrap_or_default();
    let dir = PathBuf::from(dir);
    if !dir.join("kube-apiserver").is_file() {
        bail!(
            "{} did not report a directory with kube-apiserver (got {stdout:?})",
            script.display()
        );
    }
    Ok(dir)
}

/// The repository root (this crate lives in `<root>/tests`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A binary of this workspace, built by `cargo build --workspace --bins` (the test
/// command does that first).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("debug").join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo build --workspace --bins` first",
            path.display()
        );
    }
    Ok(path)
}
