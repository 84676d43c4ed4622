//! The install manifests against the real control plane: both variants apply
//! (server-side dry-run and for real), the no-cert-manager path works end to end
//! with the certificates `staticpod-certs` issues, and each component's identity
//! can do what it needs and nothing more.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use staticpod_e2e::bins::{repo_root, workspace_binary};
use staticpod_e2e::cluster::{
    AGENT_SERVICE_ACCOUNT, CONTROLLER_SERVICE_ACCOUNT, SYSTEM_NAMESPACE, WEBHOOK_SERVICE_ACCOUNT,
};
use staticpod_e2e::{Cluster, ClusterConfig, free_port, http_request, wait_for};
use staticpod_webhook::routes::{MUTATE_PATH, VALIDATE_PATH};

/// The cert-manager release whose CRDs the cert-manager variant is checked
/// against (from the Go module proxy, like the Kubernetes binaries).
const CERT_MANAGER_MODULE: &str = "github.com/cert-manager/cert-manager@v1.21.2";
const WAIT: Duration = Duration::from_secs(60);
const WEBHOOK_CONFIGS: [(&str, &str); 2] = [
    ("mutatingwebhookconfiguration", MUTATE_PATH),
    ("validatingwebhookconfiguration", VALIDATE_PATH),
];

struct Fixture {
    cluster: Cluster,
    /// Both variants install the same webhook configurations (which, with
    /// failurePolicy Fail, decide whether any StaticPod can be written): the tests
    /// that install them take turns.
    install: Mutex<()>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    staticpod_e2e::shared(&FIXTURE, || {
        // No node is needed: no controller here creates pods for Deployments or
        // DaemonSets, and nothing below runs on a node.
        let cluster = Cluster::start(ClusterConfig::for_test("manifests", 0))?;
        Ok(Fixture {
            cluster,
            install: Mutex::new(()),
        })
    })
}

impl Fixture {
    fn take_turn(&self) -> MutexGuard<'_, ()> {
        self.install.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn manifests_dir() -> String {
    repo_root().join("manifests").display().to_string()
}

/// Runs kubectl; returns (success, stdout, stderr).
fn kubectl(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let out = c.kubectl_output(args).expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl apply -k dir` (with `extra`), failing with kubectl's complaint.
fn apply_k(c: &Cluster, dir: &str, extra: &[&str]) -> Result<String> {
    let mut args = vec!["apply", "-k", dir];
    args.extend(extra);
    let (ok, stdout, stderr) = kubectl(c, &args);
    ensure!(ok, "kubectl {} failed:\n{stderr}\n{stdout}", args.join(" "));
    Ok(stdout)
}

/// The `kind/name` lines kubectl prints for what it applied.
fn applied_objects(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The real cert-manager CRDs, from the pinned module in the Go module proxy (the
/// harness needs Go and the proxy anyway): with them the API server checks our
/// Issuers and Certificates against cert-manager's own schemas.
fn install_cert_manager_crds(c: &Cluster) -> Result<()> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR
        .get_or_init(|| download_module(CERT_MANAGER_MODULE).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for kind in [
        "issuers",
        "clusterissuers",
        "certificates",
        "certificaterequests",
    ] {
        let crd = dir.join(format!("deploy/crds/cert-manager.io_{kind}.yaml"));
        c.kubectl(&["apply", "--server-side", "-f", &crd.display().to_string()])?;
        wait_established(c, &format!("{kind}.cert-manager.io"))?;
    }
    Ok(())
}

fn download_module(module: &str) -> Result<PathBuf> {
    // Outside any Go module, so `go mod download` needs nothing but the proxy.
    let out = Command::new("go")
        .args(["mod", "download", "-json", module])
        .current_dir(std::env::temp_dir())
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .output()
        .context("failed to run go (the end-to-end tests need Go and the module proxy)")?;
    let info: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "go mod download {module} printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    match info["Dir"].as_str() {
        Some(dir) if out.status.success() => Ok(PathBuf::from(dir)),
        _ => bail!("go mod download {module} failed: {info}"),
    }
}

fn delete_webhook_configurations(c: &Cluster) -> Result<()> {
    for (kind, _) in WEBHOOK_CONFIGS {
        c.kubectl(&["delete", kind, "staticpod-webhook", "--ignore-not-found"])?;
    }
    Ok(())
}

/// Creates the install namespace on its own. A server-side dry run creates
/// nothing, so on a cluster without the namespace every namespaced object of the
/// install fails the dry run with `namespaces "staticpod-system" not found`: the
/// namespace must exist before the rest can be checked (the README says so).
fn create_namespace(c: &Cluster) -> Result<()> {
    let ns = repo_root().join("manifests/rbac/namespace.yaml");
    c.kubectl(&["apply", "-f", &ns.display().to_string()])?;
    Ok(())
}

fn wait_crd(c: &Cluster) -> Result<()> {
    wait_established(c, "staticpods.apps.openyurt.io")
}

/// Waits for CRD `name` to be served. (`kubectl wait` fails instead of waiting
/// when it reads a CRD before the API server has given it any condition.)
fn wait_established(c: &Cluster, name: &str) -> Result<()> {
    wait_for(&format!("CRD {name} established"), WAIT, || {
        let crd = c.kubectl_json(&["get", "crd", name])?;
        Ok(crd["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
            .then_some(()))
    })
}

#[test]
fn the_cert_manager_install_is_valid_server_side_and_applies() {
    let f = fixture();
    let c = &f.cluster;
    let _report = c.report_on_failure();
    let _turn = f.take_turn();
    install_cert_manager_crds(c).expect("cert-manager CRDs");
    create_namespace(c).expect("namespace");
    let dir = manifests_dir();

    // Every object, including the Issuers and Certificates, is admitted by the
    // real API server (schema, defaulting and validation) without being stored.
    let dry = apply_k(c, &dir, &["--dry-run=server"]).expect("server-side dry-run");
    let objects = applied_objects(&dry);
    for expected in [
        "namespace/staticpod-system",
        "customresourcedefinition.apiextensions.k8s.io/staticpods.apps.openyurt.io",
        "serviceaccount/staticpod-agent",
        "serviceaccount/staticpod-controller",
        "serviceaccount/staticpod-webhook",
        "clusterrole.rbac.authorization.k8s.io/staticpod-agent",
        "clusterrole.rbac.authorization.k8s.io/staticpod-controller",
        "clusterrolebinding.rbac.authorization.k8s.io/staticpod-agent",
        "clusterrolebinding.rbac.authorization.k8s.io/staticpod-controller",
        "role.rbac.authorization.k8s.io/staticpod-controller-leader-election",
        "rolebinding.rbac.authorization.k8s.io/staticpod-controller-leader-election",
        "service/staticpod-webhook",
        "deployment.apps/staticpod-webhook",
        "deployment.apps/staticpod-controller",
        "daemonset.apps/staticpod-agent",
        "poddisruptionbudget.policy/staticpod-webhook",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/staticpod-webhook",
        "validatingwebhookconfiguration.admissionregistration.k8s.io/staticpod-webhook",
        "issuer.cert-manager.io/staticpod-selfsigned",
        "issuer.cert-manager.io/staticpod-ca",
        "certificate.cert-manager.io/staticpod-ca",
        "certificate.cert-manager.io/staticpod-webhook",
    ] {
        assert!(
            objects.iter().any(|o| o == expected),
            "{expected} missing from the dry-run:\n{dry}"
        );
    }
    assert_eq!(objects.len(), 22, "unexpected objects:\n{dry}");

    apply_k(c, &dir, &[]).expect("apply for real");
    // Applying again changes nothing (what `kubectl apply -k` on upgrade relies on).
    let again = apply_k(c, &dir, &[]).expect("re-apply");
    assert!(
        again
            .lines()
            .all(|l| l.ends_with("unchanged") || l.ends_with("configured")),
        "{again}"
    );

    // What cainjector reads, and what it will fill in.
    let cert = c
        .kubectl_json(&[
            "get",
            "certificate",
            "staticpod-webhook",
            "-n",
            SYSTEM_NAMESPACE,
        ])
        .expect("certificate");
    assert_eq!(
        cert["spec"]["dnsNames"],
        json!([
            "staticpod-webhook.staticpod-system.svc",
            "staticpod-webhook.staticpod-system.svc.cluster.local"
        ])
    );
    assert_eq!(cert["spec"]["secretName"], "staticpod-webhook-tls");
    for (kind, path) in WEBHOOK_CONFIGS {
        let config = c
            .kubectl_json(&["get", kind, "staticpod-webhook"])
            .expect("webhook configuration");
        assert_eq!(
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            "staticpod-system/staticpod-webhook"
        );
        let hook = &config["webhooks"][0];
        assert_eq!(hook["failurePolicy"], "Fail");
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(
            hook["clientConfig"]["service"],
            json!({"name": "staticpod-webhook", "namespace": "staticpod-system",
                   "port": 443, "path": format!("/{path}")})
        );
        assert_eq!(
            hook["rules"][0]["resources"],
            json!(["staticpods"]),
            "{kind}"
        );
        assert_eq!(hook["rules"][0]["operations"], json!(["CREATE", "UPDATE"]));
    }
    let agent = c
        .kubectl_json(&[
            "get",
            "daemonset",
            "staticpod-agent",
            "-n",
            SYSTEM_NAMESPACE,
        ])
        .expect("daemonset");
    let pod = &agent["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(
        pod["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );

    // With no caBundle yet (no cainjector here) and failurePolicy Fail, the API
    // server refuses StaticPods rather than storing unchecked ones.
    wait_crd(c).expect("CRD established");
    let out = c
        .kubectl_with_input(
            &["apply", "--dry-run=server", "-f", "-"],
            &valid_static_pod("guarded").to_string(),
        )
        .expect("kubectl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("failed calling webhook"),
        "a StaticPod was admitted without the webhook: {stderr}"
    );

    delete_webhook_configurations(c).expect("clean up");
}

fn valid_static_pod(name: &str) -> Value {
    json!({
        "apiVersion": "apps.openyurt.io/v1alpha1",
        "kind": "StaticPod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "staticPodManifest": "nginx",
            "upgradeStrategy": {"type": "auto"},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.19.1"}]}
            }
        }
    })
}

fn invalid_static_pod(name: &str) -> Value {
    let mut sp = valid_static_pod(name);
    sp["spec"]["upgradeStrategy"] = json!({"type": "canary"});
    sp
}

/// `kubectl apply -f -` of `object` with `extra`: (success, stdout, stderr).
fn apply_object(c: &Cluster, object: &Value, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec!["apply", "-f", "-"];
    args.extend(extra);
    let out = c
        .kubectl_with_input(&args, &object.to_string())
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_certs(out_dir: &Path, extra: &[&str]) -> Result<String> {
    let out = Command::new(workspace_binary("staticpod-certs")?)
        .arg(format!("--out-dir={}", out_dir.display()))
        .arg(format!("--manifests={}", manifests_dir()))
        .args(["--ip", "127.0.0.1"])
        .args(extra)
        .output()
        .context("failed to run staticpod-certs")?;
    ensure!(
        out.status.success(),
        "staticpod-certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Points the applied webhook configurations at the webhook on
/// `127.0.0.1:port`, keeping the caBundle that `kubectl apply -k` installed.
///
/// Only the address changes: the in-cluster Service cannot route on this
/// machine (no kube-proxy, no pod network). What this proves is that the API
/// server verifies our webhook with exactly the CA bundle staticpod-certs wrote
/// and that the serving certificate it issued is accepted for the name the API
/// server dials; the DNS names for the Service route are the same certificate's
/// other SANs, checked by `staticpod-certs`' own tests, not here.
fn route_to_loopback(c: &Cluster, port: u16) -> Result<()> {
    for (kind, path) in WEBHOOK_CONFIGS {
        let live = c.kubectl_json(&["get", kind, "staticpod-webhook"])?;
        let bundle = live["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .context("the applied configuration has no caBundle")?
            .to_owned();
        let patch = json!([{"op": "replace", "path": "/webhooks/0/clientConfig",
            "value": {"url": format!("https://127.0.0.1:{port}/{path}"), "caBundle": bundle}}]);
        c.kubectl(&[
            "patch",
            kind,
            "staticpod-webhook",
            "--type=json",
            "-p",
            &patch.to_string(),
        ])?;
    }
    Ok(())
}

/// Re-applies the overlay staticpod-certs wrote. The loopback URL set by
/// [`route_to_loopback`] is not part of the overlay, and a three-way apply would
/// keep it beside the Service reference (which the API server rejects), so the
/// configurations are recreated from the overlay instead.
fn reapply(c: &Cluster, out_dir: &Path, port: u16) -> Result<()> {
    delete_webhook_configurations(c)?;
    apply_k(c, &out_dir.display().to_string(), &[])?;
    route_to_loopback(c, port)
}

/// Waits until the real API server, through the real kubectl, gets an invalid
/// StaticPod rejected by our validating webhook and a valid one defaulted by the
/// mutating one.
fn wait_webhook_called(c: &Cluster, what: &str) -> Result<()> {
    wait_for(what, WAIT, || {
        c.check_alive()?;
        let (rejected, _, why) =
            apply_object(c, &invalid_static_pod("probe"), &["--dry-run=server"]);
        let (_, defaulted, _) = apply_object(
            c,
            &valid_static_pod("probe"),
            &["--dry-run=server", "-o", "json"],
        );
        let mutated = serde_json::from_str::<Value>(&defaulted)
            .map(|v| v["spec"]["upgradeStrategy"]["maxUnavailable"] == "10%")
            .unwrap_or(false);
        Ok((!rejected
            && why.contains("denied the request")
            && why.contains("spec.upgradeStrategy.type")
            && mutated)
            .then_some(()))
    })
}

/// The leaf certificate the webhook on `127.0.0.1:port` serves, after a handshake
/// that verifies it against `ca_bundle_pem` for the address 127.0.0.1 (what the
/// API server checks).
fn served_certificate(port: u16, ca_bundle_pem: &[u8]) -> Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_bundle_pem) {
        roots.add(cert?)?;
    }
    // The webhook's provider choice (ring), so the test adds no second crypto stack.
    let config = rustls::ClientConfig::builder_with_provider(staticpod_webhook::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    let leaf = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .context("the webhook sent no certificate")?
        .to_vec();
    // Close politely; the webhook does not care either way.
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    let _ = sock.flush();
    Ok(leaf)
}

fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_slice(pem)?.to_vec())
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

/// The certificate the webhook serves becomes the one in `out_dir/tls.crt`.
fn wait_served(port: u16, out_dir: &Path, what: &str) -> Result<Vec<u8>> {
    let want = pem_to_der(&read(out_dir, "tls.crt"))?;
    let bundle = read(out_dir, "ca.crt");
    wait_for(what, WAIT, || {
        Ok(served_certificate(port, &bundle)
            .ok()
            .filter(|leaf| *leaf == want))
    })
}

fn live_bundle(c: &Cluster, kind: &str) -> Result<String> {
    let live = c.kubectl_json(&["get", kind, "staticpod-webhook"])?;
    let b64 = live["webhooks"][0]["clientConfig"]["caBundle"]
        .as_str()
        .context("no caBundle")?;
    Ok(String::from_utf8(
        base64::engine::general_purpose::STANDARD.decode(b64)?,
    )?)
}

#[test]
fn without_cert_manager_the_api_server_calls_our_webhook_with_the_issued_certificate() {
    let f = fixture();
    let c = &f.cluster;
    let _report = c.report_on_failure();
    let _turn = f.take_turn();
    let out_dir = c.dir().join("install");

    let printed = run_certs(&out_dir, &[]).expect("staticpod-certs");
    assert!(printed.contains("new CA"), "{printed}");
    let overlay = out_dir.display().to_string();
    create_namespace(c).expect("namespace");
    let dry = apply_k(c, &overlay, &["--dry-run=server"]).expect("server-side dry-run");
    let objects = applied_objects(&dry);
    assert!(
        objects.contains(&"secret/staticpod-webhook-tls".to_owned())
            && !objects.iter().any(|o| o.contains("cert-manager.io")),
        "the variant must carry the TLS Secret and no cert-manager object:\n{dry}"
    );
    assert_eq!(objects.len(), 19, "unexpected objects:\n{dry}");
    apply_k(c, &overlay, &[]).expect("apply for real");

    // What the API server now holds is what staticpod-certs wrote.
    let ca_pem = String::from_utf8(read(&out_dir, "ca.crt")).expect("PEM is text");
    let secret = c
        .kubectl_json(&[
            "get",
            "secret",
            "staticpod-webhook-tls",
            "-n",
            SYSTEM_NAMESPACE,
        ])
        .expect("secret");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let field = |k: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(secret["data"][k].as_str().unwrap_or_default())
            .expect("base64")
    };
    assert_eq!(field("tls.crt"), read(&out_dir, "tls.crt"));
    assert_eq!(field("tls.key"), read(&out_dir, "tls.key"));
    assert_eq!(field("ca.crt"), ca_pem.as_bytes());
    for (kind, _) in WEBHOOK_CONFIGS {
        assert_eq!(live_bundle(c, kind).expect("bundle"), ca_pem, "{kind}");
        let config = c
            .kubectl_json(&["get", kind, "staticpod-webhook"])
            .expect("get");
        assert!(
            config["metadata"]["annotations"]
                .get("cert-manager.io/inject-ca-from")
                .is_none(),
            "{kind} still asks cert-manager for its CA: {config}"
        );
    }

    // The registration is live: while it points at the (unroutable) Service, the
    // API server tries to call it and, failurePolicy Fail, refuses.
    wait_crd(c).expect("CRD established");
    let (ok, _, why) = apply_object(c, &valid_static_pod("early"), &["--dry-run=server"]);
    assert!(
        !ok && why.contains("failed calling webhook"),
        "a StaticPod was admitted without the webhook: {why}"
    );

    // Our webhook, a separate process, serving the issued certificate from the
    // files staticpod-certs wrote (as the Deployment does from the Secret).
    let (port, admin) = (free_port().expect("port"), free_port().expect("port"));
    let webhook = workspace_binary("staticpod-webhook").expect("webhook binary");
    c.start_component(
        "webhook",
        &webhook,
        &[
            format!("--listen=127.0.0.1:{port}"),
            format!("--admin-listen=127.0.0.1:{admin}"),
            format!("--tls-cert={}", out_dir.join("tls.crt").display()),
            format!("--tls-key={}", out_dir.join("tls.key").display()),
        ],
        &[],
    )
    .expect("start webhook");
    wait_for("webhook /readyz", WAIT, || {
        c.check_alive()?;
        Ok(http_request(admin, "GET", "/readyz")
            .ok()
            .filter(|(status, _)| *status == 200))
    })
    .expect("webhook ready");
    route_to_loopback(c, port).expect("route to loopback");
    wait_webhook_called(c, "the API server calls our webhook").expect("webhook called");
    let first = wait_served(port, &out_dir, "the issued certificate served").expect("served");

    // For real: stored, and stored defaulted.
    let (ok, _, why) = apply_object(c, &valid_static_pod("installed"), &[]);
    assert!(ok, "{why}");
    let stored = c
        .kubectl_json(&["get", "staticpod", "installed", "-n", "default"])
        .expect("stored");
    assert_eq!(stored["spec"]["upgradeStrategy"]["maxUnavailable"], "10%");
    assert_eq!(stored["spec"]["revisionHistoryLimit"], 10);
    let (ok, _, why) = apply_object(c, &invalid_static_pod("refused"), &[]);
    assert!(
        !ok && why.contains("Unsupported value: \"canary\""),
        "an invalid StaticPod was not refused with the field and reason: {why}"
    );

    // Rotation of the serving certificate: same CA, new key and certificate; the
    // running webhook (never restarted) picks the files up by itself.
    let printed = run_certs(&out_dir, &[]).expect("rotate");
    assert!(printed.contains("reused the CA"), "{printed}");
    reapply(c, &out_dir, port).expect("re-apply");
    assert_eq!(
        live_bundle(c, "mutatingwebhookconfiguration").expect("bundle"),
        ca_pem
    );
    let second = wait_served(port, &out_dir, "the rotated certificate served").expect("rotated");
    assert_ne!(first, second);
    wait_webhook_called(c, "the API server calls the webhook after rotation").expect("called");

    // Rotation of the CA: the bundle carries the new and the old CA for this run,
    // the webhook switches to a certificate of the new CA, the API server follows.
    let printed = run_certs(&out_dir, &["--rotate-ca"]).expect("rotate CA");
    assert!(
        printed.contains("new CA") && printed.contains("2 CA"),
        "{printed}"
    );
    reapply(c, &out_dir, port).expect("re-apply");
    let new_ca = String::from_utf8(read(&out_dir, "ca.crt")).expect("PEM");
    assert_ne!(new_ca, ca_pem);
    let bundle = live_bundle(c, "validatingwebhookconfiguration").expect("bundle");
    assert!(
        bundle.contains(new_ca.trim()) && bundle.contains(ca_pem.trim()),
        "the bundle must hold both CAs during the switch"
    );
    wait_served(port, &out_dir, "a certificate of the new CA served").expect("new CA");
    wait_webhook_called(c, "the API server calls the webhook under the new CA").expect("called");
    // The next run drops the old CA; the webhook is still trusted.
    run_certs(&out_dir, &[]).expect("after CA rotation");
    reapply(c, &out_dir, port).expect("re-apply");
    assert_eq!(
        live_bundle(c, "mutatingwebhookconfiguration").expect("bundle"),
        new_ca
    );
    wait_served(port, &out_dir, "the newest certificate served").expect("served");
    wait_webhook_called(c, "the API server calls the webhook with one CA").expect("called");

    c.kubectl(&["delete", "staticpod", "installed", "-n", "default"])
        .expect("delete");
    delete_webhook_configurations(c).expect("clean up");
    c.stop_component("webhook").expect("stop webhook");
}

/// `kubectl auth can-i verb resource/name` in `ns` as `service_account` (for rules
/// limited to one object by name).
fn can_named(
    c: &Cluster,
    service_account: &str,
    verb: &str,
    resource: &str,
    name: &str,
    ns: &str,
) -> bool {
    let who = format!("--as=system:serviceaccount:{SYSTEM_NAMESPACE}:{service_account}");
    let scope = format!("--namespace={ns}");
    let object = format!("{resource}/{name}");
    let (_, stdout, stderr) = kubectl(c, &["auth", "can-i", verb, &object, &who, &scope]);
    match stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {verb} {object} answered {other:?}: {stderr}"),
    }
}

/// `kubectl auth can-i verb resource` as `service_account`.
fn can(c: &Cluster, service_account: &str, verb: &str, resource: &str, ns: &str) -> bool {
    let who = format!("--as=system:serviceaccount:{SYSTEM_NAMESPACE}:{service_account}");
    let scope = if ns == "*" {
        "--all-namespaces".to_owned()
    } else {
        format!("--namespace={ns}")
    };
    let mut args = vec!["auth", "can-i", verb, &who, &scope];
    // kubectl names subresources with a flag, not as `resource/subresource`.
    let subresource;
    match resource.split_once('/') {
        Some((resource, sub)) => {
            subresource = format!("--subresource={sub}");
            args.extend([resource, subresource.as_str()]);
        }
        None => args.push(resource),
    }
    let (_, stdout, stderr) = kubectl(c, &args);
    match stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i {verb} {resource} answered {other:?}: {stderr}"),
    }
}

/// The resource rules `kubectl auth can-i --list` shows for `service_account`
/// in namespace `ns`: `resource -> verbs`, without the self-review rules every
/// authenticated user has.
fn listed_rules(c: &Cluster, service_account: &str, ns: &str) -> Vec<(String, String)> {
    let who = format!("--as=system:serviceaccount:{SYSTEM_NAMESPACE}:{service_account}");
    let out = c
        .kubectl(&[
            "auth",
            "can-i",
            "--list",
            &who,
            &format!("--namespace={ns}"),
        ])
        .expect("can-i --list");
    let mut rules: Vec<(String, String)> = out
        .lines()
        .skip(1)
        .filter_map(|line| {
            let resource = line.split_whitespace().next()?;
            // Non-resource URL rows start with the URL column ("[/api/*]").
            if resource.starts_with('[') || line.starts_with(' ') {
                return None;
            }
            let verbs = line.rsplit_once('[')?.1.trim_end_matches(']').to_owned();
            Some((resource.to_owned(), verbs))
        })
        .filter(|(resource, _)| {
            !resource.starts_with("selfsubject") && !resource.starts_with("selfsubjectreviews")
        })
        .collect();
    rules.sort();
    rules
}

#[test]
fn each_identity_can_do_what_it_needs_and_nothing_more() {
    let f = fixture();
    let c = &f.cluster;
    let _report = c.report_on_failure();
    // It applies part of what the install tests apply; concurrent applies of one
    // object can conflict.
    let _turn = f.take_turn();
    c.install_rbac().expect("rbac");
    // kubectl resolves StaticPod resource names through discovery.
    let crd = repo_root().join("manifests/crd.yaml");
    c.kubectl(&["apply", "-f", &crd.display().to_string()])
        .expect("CRD");
    wait_crd(c).expect("CRD established");
    let (agent, controller, webhook) = (
        AGENT_SERVICE_ACCOUNT,
        CONTROLLER_SERVICE_ACCOUNT,
        WEBHOOK_SERVICE_ACCOUNT,
    );

    // (identity, verb, resource, namespace or "*" for all, allowed)
    let table: &[(&str, &str, &str, &str, bool)] = &[
        // The agent: its node's pods (watched cluster-wide with a field selector),
        // the failure annotation, the manifest ConfigMaps, events.
        (agent, "list", "pods", "*", true),
        (agent, "watch", "pods", "*", true),
        (agent, "get", "pods", "edge-apps", true),
        (agent, "patch", "pods", "edge-apps", true),
        (agent, "list", "configmaps", "*", true),
        (agent, "watch", "configmaps", "*", true),
        (agent, "create", "events.events.k8s.io", "edge-apps", true),
        (agent, "patch", "events.events.k8s.io", "edge-apps", true),
        (agent, "get", "secrets", SYSTEM_NAMESPACE, false),
        (agent, "list", "secrets", "*", false),
        (
            agent,
            "update",
            "staticpods.apps.openyurt.io",
            "edge-apps",
            false,
        ),
        (
            agent,
            "patch",
            "staticpods.apps.openyurt.io",
            "edge-apps",
            false,
        ),
        (
            agent,
            "patch",
            "staticpods.apps.openyurt.io/status",
            "edge-apps",
            false,
        ),
        (agent, "create", "configmaps", "edge-apps", false),
        (agent, "update", "configmaps", "edge-apps", false),
        (agent, "create", "pods", "edge-apps", false),
        (agent, "delete", "pods", "edge-apps", false),
        (agent, "create", "pods/eviction", "edge-apps", false),
        (agent, "patch", "nodes", "*", false),
        (
            agent,
            "create",
            "serviceaccounts/token",
            SYSTEM_NAMESPACE,
            false,
        ),
        // The controller: StaticPods read-only except status, its ConfigMaps,
        // mirror pod annotations and conditions, nodes read-only, events.
        (controller, "list", "staticpods.apps.openyurt.io", "*", true),
        (
            controller,
            "watch",
            "staticpods.apps.openyurt.io",
            "*",
            true,
        ),
        (
            controller,
            "patch",
            "staticpods.apps.openyurt.io/status",
            "edge-apps",
            true,
        ),
        (controller, "get", "configmaps", "edge-apps", true),
        (controller, "create", "configmaps", "edge-apps", true),
        (controller, "update", "configmaps", "edge-apps", true),
        (controller, "patch", "configmaps", "edge-apps", true),
        (controller, "watch", "configmaps", "*", true),
        (controller, "patch", "pods", "edge-apps", true),
        (controller, "patch", "pods/status", "edge-apps", true),
        (controller, "list", "nodes", "*", true),
        (controller, "watch", "nodes", "*", true),
        (
            controller,
            "create",
            "events.events.k8s.io",
            "edge-apps",
            true,
        ),
        (
            controller,
            "create",
            "leases.coordination.k8s.io",
            SYSTEM_NAMESPACE,
            true,
        ),
        (
            controller,
            "patch",
            "leases.coordination.k8s.io",
            SYSTEM_NAMESPACE,
            false,
        ),
        (
            controller,
            "patch",
            "leases.coordination.k8s.io",
            "edge-apps",
            false,
        ),
        (controller, "delete", "nodes", "*", false),
        (controller, "patch", "nodes", "*", false),
        (controller, "get", "secrets", SYSTEM_NAMESPACE, false),
        (controller, "list", "secrets", "*", false),
        (
            controller,
            "update",
            "staticpods.apps.openyurt.io",
            "edge-apps",
            false,
        ),
        (
            controller,
            "delete",
            "staticpods.apps.openyurt.io",
            "edge-apps",
            false,
        ),
        (controller, "delete", "configmaps", "edge-apps", false),
        (controller, "create", "pods", "edge-apps", false),
        (controller, "delete", "pods", "edge-apps", false),
        (controller, "create", "events", "edge-apps", false),
        // The webhook: nothing at all.
        (
            webhook,
            "get",
            "staticpods.apps.openyurt.io",
            "edge-apps",
            false,
        ),
        (webhook, "list", "pods", "*", false),
        (webhook, "get", "configmaps", SYSTEM_NAMESPACE, false),
        (webhook, "get", "secrets", SYSTEM_NAMESPACE, false),
        (
            webhook,
            "create",
            "events.events.k8s.io",
            "edge-apps",
            false,
        ),
    ];
    let wrong: Vec<String> = table
        .iter()
        .filter(|(sa, verb, resource, ns, allowed)| can(c, sa, verb, resource, ns) != *allowed)
        .map(|(sa, verb, resource, ns, allowed)| {
            format!(
                "{sa} {} {verb} {resource} in {ns}",
                if *allowed { "cannot" } else { "can" }
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "RBAC differs from the design:\n{}",
        wrong.join("\n")
    );

    // And nothing beyond the table: the complete rule lists, less what every
    // service account of the cluster gets anyway (the rules of one that no
    // binding names, e.g. discovery of cluster trust bundles).
    let baseline = listed_rules(c, "no-binding-names-this-one", "edge-apps");
    let rules = |sa| {
        let mut own = listed_rules(c, sa, "edge-apps");
        own.retain(|rule| !baseline.contains(rule));
        own
    };
    let expect = |pairs: &[(&str, &str)]| {
        let mut v: Vec<(String, String)> = pairs
            .iter()
            .map(|(r, v)| (r.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    };
    // The leader Lease: only that one object, only what leader election does.
    let lease = "leases.coordination.k8s.io";
    for (verb, allowed) in [("get", true), ("patch", true), ("delete", false)] {
        assert_eq!(
            can_named(
                c,
                controller,
                verb,
                lease,
                "staticpod-controller",
                SYSTEM_NAMESPACE
            ),
            allowed,
            "controller {verb} its Lease"
        );
    }
    assert!(
        !can_named(
            c,
            controller,
            "patch",
            lease,
            "kube-scheduler",
            SYSTEM_NAMESPACE
        ),
        "controller patch another Lease"
    );
    assert!(
        !can_named(
            c,
            agent,
            "get",
            lease,
            "staticpod-controller",
            SYSTEM_NAMESPACE
        ),
        "agent get the controller's Lease"
    );
    assert_eq!(
        rules(agent),
        expect(&[
            ("pods", "get list watch patch"),
            ("configmaps", "get list watch"),
            ("events.events.k8s.io", "create patch"),
        ])
    );
    assert_eq!(
        rules(controller),
        expect(&[
            ("staticpods.apps.openyurt.io", "get list watch"),
            ("staticpods.apps.openyurt.io/status", "patch"),
            ("staticpods.apps.openyurt.io/finalizers", "update"),
            ("configmaps", "get list watch create patch update"),
            ("pods", "get list watch patch"),
            ("pods/status", "patch"),
            ("nodes", "get list watch"),
            ("events.events.k8s.io", "create patch"),
        ])
    );
    assert_eq!(
        listed_rules(c, webhook, "edge-apps"),
        baseline,
        "the webhook's identity must have no rules of its own"
    );
}
