//! The krew manifest stays in step with the crate: same version, the right binary
//! on every platform.

use serde_json::Value;

#[test]
fn the_krew_manifest_names_this_version_and_binary() {
    let text = include_str!("../krew/staticpod.yaml");
    let manifest: Value = serde_saphyr::from_str(text).expect("valid YAML");
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(
        manifest["metadata"]["name"], "staticpod",
        "kubectl staticpod"
    );
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(manifest["spec"]["version"], version.as_str());
    let platforms = manifest["spec"]["platforms"].as_array().expect("platforms");
    assert_eq!(platforms.len(), 4);
    for p in platforms {
        assert_eq!(p["bin"], "kubectl-staticpod");
        let uri = p["uri"].as_str().expect("uri");
        assert!(uri.contains(&format!("/download/{version}/")), "{uri}");
        assert_eq!(p["sha256"].as_str().map(str::len), Some(64));
    }
}
