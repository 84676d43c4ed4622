//! The admission webhook, called over TLS by the real kube-apiserver, exercised with
//! the real kubectl.

use std::fs;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use staticpod_certs::CertificateAuthority;
use staticpod_e2e::{Cluster, ClusterConfig, wait_for};
use staticpod_webhook::routes::{MUTATE_PATH, VALIDATE_PATH};

struct Fixture {
    cluster: Cluster,
    _webhook: staticpod_webhook::Running,
    _runtime: tokio::runtime::Runtime,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
    staticpod_e2e::shared(&FIXTURE, start)
}

fn start() -> anyhow::Result<Fixture> {
    let cluster = Cluster::start(ClusterConfig::for_test("webhook", 1))?;
    let dir = cluster.dir().join("webhook");
    fs::create_dir_all(&dir)?;
    let ca = CertificateAuthority::generate("staticpod-webhook-ca")?;
    let serving = ca.issue_server("staticpod-webhook", &["127.0.0.1", "localhost"])?;
    fs::write(dir.join("tls.crt"), &serving.cert_pem)?;
    fs::write(dir.join("tls.key"), &serving.key_pem)?;

    let runtime = tokio::runtime::Runtime::new()?;
    let config = staticpod_webhook::Config {
        listen: "127.0.0.1:0".parse()?,
        tls_cert: dir.join("tls.crt"),
        tls_key: dir.join("tls.key"),
        cert_reload_interval: Duration::from_secs(1),
        admin_listen: "127.0.0.1:0".parse()?,
        max_body_bytes: 4 << 20,
        log_format: "text".into(),
    };
    let webhook = runtime.block_on(staticpod_webhook::start(&config))?;

    cluster.install_crd()?;

    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(&ca.pair().cert_pem);
    let hook = |name: &str, path: &str| {
        json!({
            "name": name,
            "clientConfig": {"url": format!("https://{}/{path}", webhook.addr), "caBundle": ca_bundle},
            "rules": [{"apiGroups": ["apps.openyurt.io"], "apiVersions": ["v1alpha1"],
                       "operations": ["CREATE", "UPDATE"], "resources": ["staticpods"]}],
            "admissionReviewVersions": ["v1", "v1beta1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10
        })
    };
    let configs = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": "staticpod-e2e"}, "webhooks": [hook("mutate.staticpod.apps.openyurt.io", MUTATE_PATH)]},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
         "metadata": {"name": "staticpod-e2e"}, "webhooks": [hook("validate.staticpod.apps.openyurt.io", VALIDATE_PATH)]}
    ]});
    let out = cluster.kubectl_with_input(&["apply", "-f", "-"], &configs.to_string())?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The API server picks the configurations up asynchronously: wait until both
    // the validating and the mutating webhook answer.
    let fixture = Fixture {
        cluster,
        _webhook: webhook,
        _runtime: runtime,
    };
    wait_for("webhooks active", Duration::from_secs(30), || {
        let rejected = apply(
            &fixture.cluster,
            &static_pod("probe", json!({"type": "canary"})),
            &["--dry-run=server"],
        );
        let defaulted = apply(
            &fixture.cluster,
            &static_pod("probe", json!({"type": "auto"})),
            &["--dry-run=server", "-o", "json"],
        );
        let mutated = serde_json::from_str::<Value>(&defaulted.1)
            .map(|v| v["spec"]["upgradeStrategy"]["maxUnavailable"] == "10%")
            .unwrap_or(false);
        Ok((!rejected.0 && rejected.2.contains("denied the request") && mutated).then_some(()))
    })?;
    Ok(fixture)
}

/// The seed document's StaticPod, named `name`, with `strategy`.
fn static_pod(name: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "apps.openyurt.io/v1alpha1",
        "kind": "StaticPod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "staticPodManifest": "nginx",
            "upgradeStrategy": strategy,
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.19.1"}]}
            }
        }
    })
}

/// `kubectl apply -f -` of `object`: (success, stdout, stderr).
fn apply(c: &Cluster, object: &Value, extra: &[&str]) -> (bool, String, String) {
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

fn stored(c: &Cluster, name: &str) -> Option<Value> {
    c.kubectl_json(&["get", "staticpod", name, "-n", "default"])
        .ok()
}

#[test]
fn the_seed_is_accepted_and_stored_with_defaults() {
    let f = fixture();
    let _report = f.cluster.report_on_failure();
    let (ok, _, err) = apply(
        &f.cluster,
        &static_pod("seed", json!({"type": "auto", "maxUnavailable": 3})),
        &[],
    );
    assert!(ok, "{err}");
    let sp = stored(&f.cluster, "seed").expect("stored");
    assert_eq!(
        sp["spec"]["upgradeStrategy"],
        json!({"type": "auto", "maxUnavailable": 3})
    );
    assert_eq!(sp["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(sp["spec"]["template"]["metadata"]["name"], "seed");
    assert_eq!(sp["spec"]["template"]["metadata"]["namespace"], "default");
    let container = &sp["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(sp["spec"]["template"]["spec"]["restartPolicy"], "Always");

    let table = f
        .cluster
        .kubectl(&["get", "staticpods", "seed"])
        .expect("get");
    let header: Vec<&str> = table
        .lines()
        .next()
        .expect("header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AGE",
            "TOTALNUMBER",
            "READYNUMBER",
            "UPGRADEDNUMBER"
        ]
    );
    let wide = f
        .cluster
        .kubectl(&["get", "sp", "seed", "-o", "wide"])
        .expect("get wide");
    assert!(
        wide.lines()
            .next()
            .expect("header")
            .contains("MAXUNAVAILABLE"),
        "{wide}"
    );
}

#[test]
fn max_unavailable_defaults_to_ten_percent_and_ota_is_normalised() {
    let f = fixture();
    let _report = f.cluster.report_on_failure();
    let (ok, _, err) = apply(
        &f.cluster,
        &static_pod("no-max", json!({"type": "auto"})),
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(
        stored(&f.cluster, "no-max").expect("stored")["spec"]["upgradeStrategy"]["maxUnavailable"],
        "10%"
    );

    let (ok, _, err) = apply(&f.cluster, &static_pod("no-strategy", json!({})), &[]);
    assert!(ok, "{err}");
    assert_eq!(
        stored(&f.cluster, "no-strategy").expect("stored")["spec"]["upgradeStrategy"],
        json!({"type": "auto", "maxUnavailable": "10%"})
    );

    let (ok, _, err) = apply(
        &f.cluster,
        &static_pod("upper-ota", json!({"type": "OTA"})),
        &[],
    );
    assert!(ok, "{err}");
    assert_eq!(
        stored(&f.cluster, "upper-ota").expect("stored")["spec"]["upgradeStrategy"],
        json!({"type": "ota"})
    );

    // An oddity is accepted with a warning that kubectl shows.
    let (ok, _, err) = apply(
        &f.cluster,
        &static_pod("ota-max", json!({"type": "ota", "maxUnavailable": 2})),
        &[],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains("Warning:") && err.contains("ignored in ota mode"),
        "{err}"
    );
}

#[test]
fn invalid_static_pods_are_rejected_naming_the_field() {
    let f = fixture();
    let _report = f.cluster.report_on_failure();
    let base = |name: &str| static_pod(name, json!({"type": "auto"}));
    let with = |name: &str, pointer: &str, value: Value| {
        let mut object = base(name);
        match object.pointer_mut(pointer) {
            Some(slot) => *slot = value,
            None => {
                let (parent, key) = pointer.rsplit_once('/').expect("pointer");
                object.pointer_mut(parent).expect("parent")[key] = value;
            }
        }
        object
    };
    let container = "/spec/template/spec/containers/0";
    let cases: Vec<(Value, &str)> = vec![
        (
            with(
                "bad-type",
                "/spec/upgradeStrategy",
                json!({"type": "canary"}),
            ),
            r#"spec.upgradeStrategy.type: Unsupported value: "canary": supported values: "auto", "ota""#,
        ),
        (
            with(
                "max-zero",
                "/spec/upgradeStrategy",
                json!({"type": "auto", "maxUnavailable": 0}),
            ),
            "spec.upgradeStrategy.maxUnavailable: Invalid value: 0",
        ),
        (
            with(
                "max-negative",
                "/spec/upgradeStrategy",
                json!({"type": "auto", "maxUnavailable": -1}),
            ),
            "spec.upgradeStrategy.maxUnavailable: Invalid value: -1",
        ),
        (
            with(
                "max-over",
                "/spec/upgradeStrategy",
                json!({"type": "auto", "maxUnavailable": "150%"}),
            ),
            r#"spec.upgradeStrategy.maxUnavailable: Invalid value: "150%""#,
        ),
        (
            with(
                "max-garbage",
                "/spec/upgradeStrategy",
                json!({"type": "auto", "maxUnavailable": "abc"}),
            ),
            r#"spec.upgradeStrategy.maxUnavailable: Invalid value: "abc""#,
        ),
        (
            with(
                "escape",
                "/spec/staticPodManifest",
                json!("../etc/kubernetes/admin"),
            ),
            r#"spec.staticPodManifest: Invalid value: "../etc/kubernetes/admin""#,
        ),
        (
            with("slash", "/spec/staticPodManifest", json!("a/b")),
            r#"spec.staticPodManifest: Invalid value: "a/b""#,
        ),
        (
            with("hidden", "/spec/staticPodManifest", json!(".hidden")),
            r#"spec.staticPodManifest: Invalid value: ".hidden""#,
        ),
        (
            with("upper", "/spec/staticPodManifest", json!("Nginx")),
            r#"spec.staticPodManifest: Invalid value: "Nginx""#,
        ),
        (
            with("no-manifest", "/spec/staticPodManifest", json!("")),
            "spec.staticPodManifest: Required value",
        ),
        (
            with("no-containers", "/spec/template/spec/containers", json!([])),
            "spec.template.spec.containers: Required value",
        ),
        (
            with("no-image", container, json!({"name": "nginx"})),
            "spec.template.spec.containers[0].image: Required value",
        ),
        (
            with(
                "dup-names",
                "/spec/template/spec/containers",
                json!([{"name": "a", "image": "x:1"}, {"name": "a", "image": "y:1"}]),
            ),
            r#"spec.template.spec.containers[1].name: Duplicate value: "a""#,
        ),
        (
            with(
                "secret-volume",
                "/spec/template/spec/volumes",
                json!([{"name": "s", "secret": {"secretName": "s"}}]),
            ),
            "spec.template.spec.volumes[0].secret: Forbidden: static pods cannot reference API objects",
        ),
        (
            with(
                "env-from",
                &format!("{container}/envFrom"),
                json!([{"configMapRef": {"name": "c"}}]),
            ),
            "spec.template.spec.containers[0].envFrom: Forbidden",
        ),
        (
            with(
                "config-ref",
                &format!("{container}/env"),
                json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]),
            ),
            "spec.template.spec.containers[0].env[0].valueFrom.configMapKeyRef: Forbidden",
        ),
        (
            with(
                "service-account",
                "/spec/template/spec/serviceAccountName",
                json!("builder"),
            ),
            "spec.template.spec.serviceAccountName: Forbidden",
        ),
        (
            with(
                "bad-port",
                &format!("{container}/ports"),
                json!([{"containerPort": 70000}]),
            ),
            "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000",
        ),
        (
            with("history", "/spec/revisionHistoryLimit", json!(-1)),
            "spec.revisionHistoryLimit: Invalid value: -1",
        ),
    ];
    assert!(cases.len() >= 12);
    for (object, expected) in &cases {
        let name = object["metadata"]["name"].as_str().expect("name");
        for dry_run in [true, false] {
            let extra: &[&str] = if dry_run { &["--dry-run=server"] } else { &[] };
            let (ok, _, err) = apply(&f.cluster, object, extra);
            assert!(!ok, "{name} was accepted (dry run: {dry_run})");
            assert!(
                err.contains(&format!(
                    r#"admission webhook "validate.staticpod.apps.openyurt.io" denied the request: StaticPod.apps.openyurt.io "{name}" is invalid: "#
                )),
                "{name}: {err}"
            );
            assert!(
                err.contains(expected),
                "{name}: expected {expected:?} in {err}"
            );
            assert!(stored(&f.cluster, name).is_none(), "{name} was stored");
        }
    }
}

#[test]
fn server_side_dry_run_defaults_and_stores_nothing() {
    let f = fixture();
    let _report = f.cluster.report_on_failure();
    let (ok, out, err) = apply(
        &f.cluster,
        &static_pod("dry", json!({"type": "auto"})),
        &["--dry-run=server", "-o", "json"],
    );
    assert!(ok, "{err}");
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["spec"]["upgradeStrategy"]["maxUnavailable"], "10%");
    assert!(
        stored(&f.cluster, "dry").is_none(),
        "a dry run stored the object"
    );
}

#[test]
fn updates_are_validated_too() {
    let f = fixture();
    let _report = f.cluster.report_on_failure();
    let (ok, _, err) = apply(
        &f.cluster,
        &static_pod("update-me", json!({"type": "auto", "maxUnavailable": 1})),
        &[],
    );
    assert!(ok, "{err}");
    let mut changed = static_pod("update-me", json!({"type": "auto", "maxUnavailable": 1}));
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
    let (ok, _, err) = apply(&f.cluster, &changed, &[]);
    assert!(!ok);
    assert!(
        err.contains("spec.template.spec.containers[0].image: Required value"),
        "{err}"
    );
    let kept = stored(&f.cluster, "update-me").expect("still stored");
    assert_eq!(
        kept["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.19.1"
    );
}
