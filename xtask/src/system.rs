//! Installs the operator into a running sandbox cluster the way `manifests/` does,
//! with processes instead of Deployments: the CRD, the RBAC, the webhook (with its
//! own CA, registered by URL on loopback), the controller and one agent per node,
//! each of the last two with its ServiceAccount's token.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};
use staticpod_certs::CertificateAuthority;
use staticpod_e2e::bins::{repo_root, workspace_binary};
use staticpod_e2e::{Cluster, free_port, http_request, wait_for};

/// How long an agent waits for a new revision to become Ready before it rolls the
/// node back: a good upgrade takes ~15 s on a hollow node (the kubelet's restart
/// back-off), so this leaves room on a busy machine without making a broken
/// revision's rollback slow to watch.
const AGENT_VERIFY_TIMEOUT_SECONDS: u64 = 60;

const WAIT: Duration = Duration::from_secs(60);

/// Where our components listen (all on 127.0.0.1).
pub struct Components {
    pub webhook_port: u16,
    pub webhook_admin_port: u16,
    pub controller_metrics_port: u16,
    /// The OTA API port of each node's agent, in node order.
    pub ota_ports: Vec<u16>,
}

pub fn install(cluster: &Cluster) -> Result<Components> {
    cluster.install_crd()?;
    cluster.install_rbac()?;
    let (webhook_port, webhook_admin_port) = start_webhook(cluster)?;

    let controller_metrics_port = free_port()?;
    cluster.start_controller(&[format!(
        "--metrics-listen=127.0.0.1:{controller_metrics_port}"
    )])?;
    wait_for("the controller's /readyz", WAIT, || {
        cluster.check_alive()?;
        Ok(ok(controller_metrics_port, "/readyz"))
    })?;

    let mut ota_ports = Vec::new();
    for index in 0..cluster.nodes().len() {
        let port = free_port()?;
        cluster.start_agent(index, port, AGENT_VERIFY_TIMEOUT_SECONDS)?;
        ota_ports.push(port);
    }
    Ok(Components {
        webhook_port,
        webhook_admin_port,
        controller_metrics_port,
        ota_ports,
    })
}

fn ok(port: u16, path: &str) -> Option<()> {
    http_request(port, "GET", path)
        .ok()
        .filter(|(status, _)| *status == 200)
        .map(|_| ())
}

/// Starts `staticpod-webhook` with a serving certificate for 127.0.0.1 from a CA
/// of its own, registers it with `manifests/webhook/configurations.yaml` (the
/// Service reference replaced by the loopback URL and the CA bundle), and waits
/// until the API server calls it. Returns the webhook and admin ports.
fn start_webhook(cluster: &Cluster) -> Result<(u16, u16)> {
    let dir = cluster.dir().join("webhook");
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let ca = CertificateAuthority::generate("staticpod-sandbox-webhook-ca")?;
    let serving = ca.issue_server("staticpod-webhook", &["127.0.0.1", "localhost"])?;
    write_private(&dir.join("tls.key"), &serving.key_pem)?;
    fs::write(dir.join("tls.crt"), &serving.cert_pem)?;
    fs::write(dir.join("ca.crt"), &ca.pair().cert_pem)?;

    let (port, admin) = (free_port()?, free_port()?);
    cluster.start_component(
        "webhook",
        &workspace_binary("staticpod-webhook")?,
        &[
            format!("--listen=127.0.0.1:{port}"),
            format!("--admin-listen=127.0.0.1:{admin}"),
            format!("--tls-cert={}", dir.join("tls.crt").display()),
            format!("--tls-key={}", dir.join("tls.key").display()),
        ],
        &[],
    )?;
    wait_for("the webhook's /readyz", WAIT, || {
        cluster.check_alive()?;
        Ok(ok(admin, "/readyz"))
    })?;

    let manifest = repo_root().join("manifests/webhook/configurations.yaml");
    let manifest_arg = manifest.display().to_string();
    let args = [
        "create",
        "--dry-run=client",
        "-o",
        "json",
        "-f",
        &manifest_arg,
    ];
    let out = cluster.kubectl_output(&args)?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // One JSON document per object in the file.
    let mut items = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("kubectl {} printed no JSON", args.join(" ")))?;
    if items.is_empty() {
        bail!("{} holds no objects", manifest.display());
    }
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&ca.pair().cert_pem);
    for item in items.iter_mut() {
        // No cert-manager here: the bundle is set directly.
        if let Some(annotations) = item["metadata"]["annotations"].as_object_mut() {
            annotations.remove("cert-manager.io/inject-ca-from");
        }
        let hooks = item["webhooks"].as_array_mut().with_context(|| {
            format!(
                "{} has a configuration without webhooks",
                manifest.display()
            )
        })?;
        for hook in hooks {
            let path = hook["clientConfig"]["service"]["path"]
                .as_str()
                .with_context(|| format!("a webhook in {} has no path", manifest.display()))?
                .to_owned();
            hook["clientConfig"] =
                json!({"url": format!("https://127.0.0.1:{port}{path}"), "caBundle": ca_bundle});
        }
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    let out = cluster.kubectl_with_input(&["apply", "-f", "-"], &list.to_string())?;
    if !out.status.success() {
        bail!(
            "registering the webhook failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    // The API server picks configurations up asynchronously: wait until an invalid
    // StaticPod is denied and a valid one is defaulted (server-side dry runs).
    wait_for("the API server to call the webhook", WAIT, || {
        cluster.check_alive()?;
        let invalid = probe(json!({"type": "canary"}));
        let out =
            cluster.kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], &invalid)?;
        let denied = !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("denied the request");
        let valid = probe(json!({"type": "auto"}));
        let out = cluster.kubectl_with_input(
            &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
            &valid,
        )?;
        let defaulted = serde_json::from_slice::<Value>(&out.stdout)
            .is_ok_and(|v| v["spec"]["upgradeStrategy"]["maxUnavailable"] == "10%");
        Ok((denied && defaulted).then_some(()))
    })?;
    Ok((port, admin))
}

fn probe(strategy: Value) -> String {
    json!({
        "apiVersion": "apps.openyurt.io/v1alpha1", "kind": "StaticPod",
        "metadata": {"name": "sandbox-probe", "namespace": "default"},
        "spec": {"staticPodManifest": "sandbox-probe", "upgradeStrategy": strategy,
                 "template": {"spec": {"containers": [{"name": "probe", "image": "probe:1"}]}}}
    })
    .to_string()
}

/// Writes a private key readable by this user only, from the first byte.
fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("failed to write {}", path.display()))?;
    file.write_all(content.as_bytes())
        .with_context(|| format!("failed to write {}", path.display()))
}
