//! A real local Kubernetes control plane on loopback: etcd, kube-apiserver (with its
//! own CA and an admin client certificate), kube-controller-manager and N hollow
//! nodes, each reading static pods from its own directory.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde_json::Value;
use staticpod_certs::{CertificateAuthority, generate_key};

use crate::bins::k8s_bin_dir;
use crate::process::{Lifetime, Process};

/// Node lease duration of the hollow kubelets; they renew it every quarter of this.
pub const NODE_LEASE_SECONDS: u32 = 8;
/// How long the node lifecycle controller waits for a lease renewal before it
/// marks a node `Ready=Unknown`.
pub const NODE_MONITOR_GRACE: &str = "10s";

/// The namespace `manifests/` installs the operator's components into.
pub const SYSTEM_NAMESPACE: &str = "staticpod-system";
/// The ServiceAccounts `manifests/rbac` defines, one per component.
pub const AGENT_SERVICE_ACCOUNT: &str = "staticpod-agent";
/// See [`AGENT_SERVICE_ACCOUNT`].
pub const CONTROLLER_SERVICE_ACCOUNT: &str = "staticpod-controller";
/// See [`AGENT_SERVICE_ACCOUNT`].
pub const WEBHOOK_SERVICE_ACCOUNT: &str = "staticpod-webhook";

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of hollow nodes, named `node-1` … `node-N`.
    pub nodes: usize,
    /// Image references whose pulls fail on every node (to test failed upgrades).
    pub fail_images: Vec<String>,
    /// Where certificates, data, manifests and logs go; must be short, because
    /// unix socket paths are limited to 107 bytes.
    pub dir: PathBuf,
    /// Whether the processes end with this one (tests) or outlive it (sandbox).
    pub lifetime: Lifetime,
}

impl ClusterConfig {
    /// `nodes` nodes in a fresh directory under the system temp dir, named after
    /// `label` (e.g. the test binary), tied to this process.
    pub fn for_test(label: &str, nodes: usize) -> Self {
        let dir = std::env::temp_dir()
            .join("staticpod-e2e")
            .join(format!("{label}-{}", std::process::id()));
        Self {
            nodes,
            fail_images: Vec::new(),
            dir,
            lifetime: Lifetime::Tied,
        }
    }
}

/// One hollow node.
#[derive(Clone, Debug, Serialize)]
pub struct Node {
    /// Node name, as the API server knows it.
    pub name: String,
    /// Its kubelet's static-pod directory.
    pub manifest_dir: PathBuf,
    /// Its kubelet's root directory.
    #[serde(skip)]
    pub root_dir: PathBuf,
    /// Port of its kubelet API on 127.0.0.1.
    #[serde(skip)]
    pub kubelet_port: u16,
}

/// A running cluster. Dropping it stops every process it started (for tied
/// lifetimes); so does the exit of the process that started it.
pub struct Cluster {
    config: ClusterConfig,
    bin: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    nodes: Vec<Node>,
    processes: Mutex<Vec<Process>>,
    /// Whether `manifests/rbac` has been applied, and the kubeconfig written per
    /// ServiceAccount; one lock so concurrent tests install and mint tokens once.
    identities: Mutex<Identities>,
}

#[derive(Default)]
struct Identities {
    rbac_installed: bool,
    kubeconfigs: std::collections::HashMap<String, PathBuf>,
}

impl Cluster {
    /// Builds or reuses the binaries, starts everything, and returns once the API
    /// server is ready and every node is Ready without the not-ready taint.
    pub fn start(config: ClusterConfig) -> Result<Self> {
        let bin = k8s_bin_dir()?.to_path_buf();
        let dir = &config.dir;
        if dir.exists() {
            fs::remove_dir_all(dir)
                .with_context(|| format!("failed to clear {}", dir.display()))?;
        }
        for sub in ["pki", "logs", "etcd"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let pki = dir.join("pki");
        write_pki(&pki)?;

        let server_port = free_port()?;
        let server = format!("https://127.0.0.1:{server_port}");
        let kubeconfig = dir.join("kubeconfig");
        fs::write(&kubeconfig, kubeconfig_yaml(&server, &pki))?;

        let nodes = (1..=config.nodes)
            .map(|i| {
                let name = format!("node-{i}");
                let node_dir = dir.join("nodes").join(&name);
                Ok(Node {
                    manifest_dir: node_dir.join("manifests"),
                    root_dir: node_dir.join("root"),
                    kubelet_port: free_port()?,
                    name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        for node in &nodes {
            fs::create_dir_all(&node.manifest_dir)?;
            fs::create_dir_all(&node.root_dir)?;
        }

        let cluster = Self {
            bin,
            kubeconfig,
            server,
            nodes,
            processes: Mutex::new(Vec::new()),
            identities: Mutex::new(Identities::default()),
            config,
        };
        cluster
            .start_control_plane(server_port)
            .map_err(|e| cluster.explain(e))?;
        for i in 0..cluster.nodes.len() {
            cluster.start_node(i)?;
        }
        cluster
            .wait_all_nodes_ready(Duration::from_secs(90))
            .map_err(|e| cluster.explain(e))?;
        Ok(cluster)
    }

    fn start_control_plane(&self, server_port: u16) -> Result<()> {
        let dir = &self.config.dir;
        let pki = dir.join("pki");
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        self.spawn(
            "etcd",
            "etcd",
            &[
                "--name=e2e".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?;
        wait_for("etcd /health", Duration::from_secs(30), || {
            self.check_alive()?;
            Ok(http_get(client_port, "/health")?
                .contains("\"health\":\"true\"")
                .then_some(()))
        })?;

        let p = |name: &str| pki.join(name).display().to_string();
        self.spawn(
            "kube-apiserver",
            "kube-apiserver",
            &[
                format!("--etcd-servers={client_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={server_port}"),
                "--endpoint-reconciler-type=none".into(),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=RBAC".into(),
                // No service-account controller runs, so no default ServiceAccounts exist.
                "--disable-admission-plugins=ServiceAccount".into(),
                "--allow-privileged=true".into(),
                "--v=1".into(),
            ],
        )?;
        wait_for("kube-apiserver /readyz", Duration::from_secs(90), || {
            self.check_alive()?;
            let out = self.kubectl_output(&["get", "--raw=/readyz"])?;
            Ok(
                (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok")
                    .then_some(()),
            )
        })?;

        let kubeconfig = self.kubeconfig.display().to_string();
        self.spawn(
            "kube-controller-manager",
            "kube-controller-manager",
            &[
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                "--controllers=node-lifecycle-controller,garbage-collector-controller,namespace-controller".into(),
                "--node-monitor-period=1s".into(),
                format!("--node-monitor-grace-period={NODE_MONITOR_GRACE}"),
                "--v=1".into(),
            ],
        )?;
        Ok(())
    }

    /// Starts (or restarts) the kubelet of node `index` (0-based). Its static-pod
    /// directory and root directory survive restarts, like a rebooted edge node's.
    pub fn start_node(&self, index: usize) -> Result<()> {
        let node = self.node(index)?;
        let mut args = vec![
            format!("--name={}", node.name),
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--root-dir={}", node.root_dir.display()),
            format!("--static-pod-path={}", node.manifest_dir.display()),
            format!("--kubelet-port={}", node.kubelet_port),
            format!("--lease-seconds={NODE_LEASE_SECONDS}"),
            format!("--node-labels=staticpod.e2e/node-index={}", index + 1),
        ];
        if !self.config.fail_images.is_empty() {
            args.push(format!(
                "--fail-image={}",
                self.config.fail_images.join(",")
            ));
        }
        let name = node.name.clone();
        self.spawn(&name, "hollow-node", &args)
    }

    /// Starts our node agent for node `index` as its own process (named
    /// `agent-<node>`), its OTA API on `127.0.0.1:<ota_port>`, and waits until that
    /// API answers. It runs as the agent's ServiceAccount from `manifests/rbac`
    /// (installed on first use), as in a real install, so a permission the agent
    /// uses but the manifests do not grant fails the test. Needs
    /// `cargo build --workspace --bins`.
    pub fn start_agent(
        &self,
        index: usize,
        ota_port: u16,
        verify_timeout_seconds: u64,
    ) -> Result<()> {
        let node = self.node(index)?;
        let agent = crate::bins::workspace_binary("staticpod-agent")?;
        let args = vec![
            format!("--node-name={}", node.name),
            format!("--manifest-dir={}", node.manifest_dir.display()),
            format!("--state-dir={}", self.agent_state_dir(index)?.display()),
            format!("--verify-timeout-seconds={verify_timeout_seconds}"),
            format!("--ota-listen=127.0.0.1:{ota_port}"),
        ];
        let kubeconfig = self.identity_kubeconfig(AGENT_SERVICE_ACCOUNT)?;
        let env = vec![("KUBECONFIG".to_string(), kubeconfig.display().to_string())];
        self.start_component(&format!("agent-{}", node.name), &agent, &args, &env)?;
        wait_for("agent OTA API", Duration::from_secs(30), || {
            self.check_alive()?;
            Ok(http_request(ota_port, "GET", "/healthz")
                .ok()
                .filter(|(s, _)| *s == 200)
                .map(|_| ()))
        })
    }

    /// Starts `staticpod-controller` (component `controller`) with `extra_args`, as
    /// the controller's ServiceAccount from `manifests/rbac` (installed on first
    /// use) and `RUST_LOG=info`. Returns once the process is started; callers wait
    /// on what it does. Needs `cargo build --workspace --bins`.
    pub fn start_controller(&self, extra_args: &[String]) -> Result<()> {
        self.start_controller_named("controller", extra_args)
    }

    /// Like [`Self::start_controller`], as component `name` (to run several
    /// replicas, e.g. with leader election).
    pub fn start_controller_named(&self, name: &str, extra_args: &[String]) -> Result<()> {
        let controller = crate::bins::workspace_binary("staticpod-controller")?;
        let kubeconfig = self.identity_kubeconfig(CONTROLLER_SERVICE_ACCOUNT)?;
        let env = vec![
            ("KUBECONFIG".to_string(), kubeconfig.display().to_string()),
            ("RUST_LOG".to_string(), "info".to_string()),
        ];
        self.start_component(name, &controller, extra_args, &env)
    }

    /// Applies `manifests/crd.yaml` with the real kubectl and waits until the
    /// StaticPod CRD is Established. A wait loop rather than `kubectl wait` right
    /// after the create, which can fail before the CRD has any conditions.
    pub fn install_crd(&self) -> Result<()> {
        let crd = crate::bins::repo_root().join("manifests/crd.yaml");
        self.kubectl(&["apply", "-f", &crd.display().to_string()])?;
        wait_for(
            "the StaticPod CRD to be Established",
            Duration::from_secs(60),
            || {
                let crd = self.kubectl_json(&["get", "crd", "staticpods.apps.openyurt.io"])?;
                Ok(crd["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
                    .then_some(()))
            },
        )
    }

    /// Applies the namespace, ServiceAccounts and RBAC of `manifests/rbac` with the
    /// real `kubectl apply -k`. Idempotent; runs kubectl once per cluster.
    pub fn install_rbac(&self) -> Result<()> {
        let mut identities = self.identities();
        self.install_rbac_locked(&mut identities)
    }

    fn install_rbac_locked(&self, identities: &mut Identities) -> Result<()> {
        if identities.rbac_installed {
            return Ok(());
        }
        let rbac = crate::bins::repo_root().join("manifests/rbac");
        self.kubectl(&["apply", "-k", &rbac.display().to_string()])
            .context("installing manifests/rbac")?;
        identities.rbac_installed = true;
        Ok(())
    }

    /// A kubeconfig for ServiceAccount `service_account` of the install namespace:
    /// a token from the TokenRequest API (`kubectl create token`), this cluster's
    /// server and CA. Installs the RBAC first if needed; written once per
    /// ServiceAccount into the cluster directory.
    pub fn identity_kubeconfig(&self, service_account: &str) -> Result<PathBuf> {
        let mut identities = self.identities();
        if let Some(path) = identities.kubeconfigs.get(service_account) {
            return Ok(path.clone());
        }
        self.install_rbac_locked(&mut identities)?;
        // Long enough for any test run or sandbox session; the API server's own
        // maximum (if any) still applies.
        let token = self
            .kubectl(&[
                "create",
                "token",
                service_account,
                "-n",
                SYSTEM_NAMESPACE,
                "--duration=48h",
            ])
            .with_context(|| format!("requesting a token for ServiceAccount {service_account}"))?;
        let token = token.trim();
        if token.is_empty() {
            bail!("kubectl create token {service_account} printed no token");
        }
        let path = self
            .config
            .dir
            .join(format!("{service_account}.kubeconfig"));
        let user = format!("system:serviceaccount:{SYSTEM_NAMESPACE}:{service_account}");
        let yaml = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: e2e
  context:
    cluster: e2e
    user: {user}
    namespace: {SYSTEM_NAMESPACE}
current-context: e2e
",
            server = self.server,
            ca = self.config.dir.join("pki").join("ca.crt").display(),
        );
        // The token is a credential: readable by this user only, from the first byte.
        let mut file = {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            options
                .open(&path)
                .with_context(|| format!("failed to write {}", path.display()))?
        };
        file.write_all(yaml.as_bytes())?;
        identities
            .kubeconfigs
            .insert(service_account.to_owned(), path.clone());
        Ok(path)
    }

    fn identities(&self) -> std::sync::MutexGuard<'_, Identities> {
        self.identities
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where node `index`'s agent keeps backups and its upgrade journal.
    pub fn agent_state_dir(&self, index: usize) -> Result<PathBuf> {
        Ok(self
            .config
            .dir
            .join("agent-state")
            .join(&self.node(index)?.name))
    }

    /// Kills node `index`'s kubelet (SIGKILL, as when an edge node loses power or
    /// network) and waits until the process is gone.
    pub fn stop_node(&self, index: usize) -> Result<()> {
        let name = self.node(index)?.name.clone();
        self.stop_component(&name)
    }

    /// Kills a started process by name (SIGKILL) and waits until it is gone.
    pub fn stop_component(&self, name: &str) -> Result<()> {
        let mut processes = self.lock();
        let position = processes
            .iter()
            .position(|p| p.name() == name)
            .ok_or_else(|| anyhow!("{name} is not running"))?;
        let mut process = processes.remove(position);
        process.kill();
        Ok(())
    }

    /// The nodes, in order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `index` (0-based).
    pub fn node(&self, index: usize) -> Result<&Node> {
        self.nodes.get(index).ok_or_else(|| {
            anyhow!(
                "there is no node {index}; the cluster has {}",
                self.nodes.len()
            )
        })
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Directory with the binaries (kubectl among them).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The cluster's working directory (certificates, data, logs).
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Pids of the processes started, by component name (for `sandbox down`).
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.lock()
            .iter()
            .map(|p| (p.name().to_owned(), p.pid()))
            .collect()
    }

    /// Runs the real kubectl against this cluster and returns its raw output.
    pub fn kubectl_output(&self, args: &[&str]) -> Result<Output> {
        Command::new(self.bin.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .context("failed to run kubectl")
    }

    /// Runs kubectl with `input` on its stdin (e.g. `apply -f -`).
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Result<Output> {
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("failed to run kubectl")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes())?;
        }
        child.wait_with_output().context("failed to run kubectl")
    }

    /// Runs kubectl and returns stdout, or fails with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl_output(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl with `-o json` and parses the result.
    pub fn kubectl_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.kubectl(&all)?;
        serde_json::from_str(&text)
            .with_context(|| format!("kubectl {} printed no JSON", args.join(" ")))
    }

    /// The status of node `name`'s `Ready` condition (`True`, `False`, `Unknown`),
    /// or `None` if the node is not registered.
    pub fn node_ready(&self, name: &str) -> Result<Option<String>> {
        let out = self.kubectl_output(&["get", "node", name, "-o", "json"])?;
        if !out.status.success() {
            return Ok(None);
        }
        let node: Value = serde_json::from_slice(&out.stdout)?;
        Ok(ready_condition(&node))
    }

    /// Waits until every node is Ready and the node lifecycle controller has lifted
    /// the not-ready taint (so the controller manager is working too).
    pub fn wait_all_nodes_ready(&self, timeout: Duration) -> Result<()> {
        let want = self.nodes.len();
        wait_for("all nodes Ready and untainted", timeout, || {
            self.check_alive()?;
            let list = self.kubectl_json(&["get", "nodes"])?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let ready = items
                .iter()
                .filter(|n| ready_condition(n).as_deref() == Some("True"))
                .filter(|n| {
                    !n["spec"]["taints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|t| {
                            t["key"]
                                .as_str()
                                .is_some_and(|k| k.starts_with("node.kubernetes.io/"))
                        })
                })
                .count();
            Ok((items.len() == want && ready == want).then_some(()))
        })
    }

    /// Fails if a component that should be running has exited (so waits end early
    /// with the reason instead of at their deadline).
    pub fn check_alive(&self) -> Result<()> {
        for process in self.lock().iter_mut() {
            if !process.is_running() {
                return Err(ComponentExited(format!(
                    "{} exited; last lines of {}:\n{}",
                    process.name(),
                    process.log().display(),
                    process.log_tail(20)
                ))
                .into());
            }
        }
        Ok(())
    }

    /// Adds the log directory and every component's last log lines to an error.
    pub fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        error.context(self.log_report())
    }

    /// Where the logs are, with the last lines of each.
    pub fn log_report(&self) -> String {
        let mut report = format!("cluster logs in {}", self.config.dir.join("logs").display());
        for process in self.lock().iter() {
            report.push_str(&format!(
                "\n--- {} ---\n{}",
                process.name(),
                process.log_tail(15)
            ));
        }
        report
    }

    /// A guard that prints [`Cluster::log_report`] if the current test panics.
    pub fn report_on_failure(&self) -> FailureReport<'_> {
        FailureReport(self)
    }

    fn spawn(&self, name: &str, binary: &str, args: &[String]) -> Result<()> {
        self.start_component(name, &self.bin.join(binary), args, &[])
    }

    /// Starts one of our own components (an agent, the controller, …) beside the
    /// cluster: logged with the rest, stopped with the rest.
    pub fn start_component(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<()> {
        let log = self.config.dir.join("logs").join(format!("{name}.log"));
        let process = Process::start(name, program, args, env, &log, self.config.lifetime)?;
        if self.config.lifetime == Lifetime::Detached {
            // Recorded as each starts, so whoever stops a detached cluster finds
            // every process even if the start failed half-way.
            let mut pids = fs::File::options()
                .create(true)
                .append(true)
                .open(self.config.dir.join("pids"))?;
            writeln!(pids, "{name} {}", process.pid())?;
        }
        self.lock().push(process);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Process>> {
        self.processes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stop nodes before the API server so kubelets do not log connection storms.
        let mut processes = self.lock();
        while let Some(mut p) = processes.pop() {
            if self.config.lifetime == Lifetime::Tied {
                p.kill();
            }
        }
    }
}

/// A process the cluster needs has exited (the message has its last log lines).
#[derive(Debug)]
pub struct ComponentExited(String);

impl std::fmt::Display for ComponentExited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ComponentExited {}

/// Prints the cluster's logs when dropped during a panic.
pub struct FailureReport<'a>(&'a Cluster);

impl Drop for FailureReport<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.0.log_report());
            // What the API server holds now: node readiness, and each StaticPod's
            // status and its mirror pods' annotations (what the controller judged).
            for args in [
                &["get", "nodes", "-o", "wide"][..],
                &["get", "staticpods", "-A", "-o", "yaml"][..],
                &[
                    "get",
                    "pods",
                    "-A",
                    "-o",
                    "custom-columns=POD:.metadata.name,NODE:.spec.nodeName,READY:.status.conditions[?(@.type=='Ready')].status,ANNOTATIONS:.metadata.annotations",
                ][..],
            ] {
                if let Ok(out) = self.0.kubectl(args) {
                    eprintln!("--- kubectl {} ---\n{out}", args.join(" "));
                }
            }
        }
    }
}

/// The fixture a test binary shares between its tests (one cluster per binary):
/// started by the first test that asks; if it cannot start, every test fails with
/// the same reason instead of retrying.
pub fn shared<T: Send + Sync>(
    cell: &'static OnceLock<Result<T, String>>,
    start: impl FnOnce() -> Result<T>,
) -> &'static T {
    cell.get_or_init(|| start().map_err(|e| format!("{e:#}")))
        .as_ref()
        .unwrap_or_else(|e| panic!("the test cluster did not start: {e}"))
}

/// Polls `check` every 200 ms until it returns `Some`, or fails after `timeout`
/// with the last error seen.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            // A dead component will not come back by waiting.
            Err(e) if e.is::<ComponentExited>() => return Err(e),
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            let last = last_error
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            bail!("timed out after {timeout:?} waiting for {what}{last}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether a Pod object (as kubectl prints it) has `Ready=True`.
pub fn pod_is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Drops a manifest into a static-pod directory the way a careful installer does:
/// a hidden temp file (the kubelet ignores dot-files), then a rename, so the
/// kubelet never reads half a file.
pub fn write_manifest(dir: &Path, name: &str, text: &str) -> Result<()> {
    let tmp = dir.join(format!(".{name}.yaml.tmp"));
    fs::write(&tmp, text).with_context(|| format!("failed to write {}", tmp.display()))?;
    fs::rename(&tmp, dir.join(format!("{name}.yaml")))
        .with_context(|| format!("failed to rename {}", tmp.display()))?;
    Ok(())
}

/// The status of a Node object's `Ready` condition.
pub fn ready_condition(node: &Value) -> Option<String> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["status"].as_str())
        .map(str::to_owned)
}

/// A loopback port nothing listens on right now, for a component to bind later.
/// Taken below the kernel's ephemeral range (32768–60999 by default), which
/// outgoing connections draw from: asking the kernel for port 0 would hand out a
/// port that a client socket may take before the component binds it (seen as a
/// kubelet's "bind: address already in use"). Each port is handed out once per
/// process, and the starting point is spread by process id so processes running
/// side by side rarely probe the same ports.
pub fn free_port() -> Result<u16> {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(7_919) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (LOW + (offset + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free loopback port between {LOW} and {}", LOW + SPAN)
}

fn http_get(port: u16, path: &str) -> Result<String> {
    Ok(http_request(port, "GET", path)?.1)
}

/// A plain-HTTP request to `127.0.0.1:port` (what `curl` does against a node's OTA
/// API): the status code and the body.
pub fn http_request(port: u16, method: &str, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn write_pki(pki: &Path) -> Result<()> {
    let ca = CertificateAuthority::generate("staticpod-e2e-ca")?;
    let apiserver = ca.issue_server(
        "kube-apiserver",
        &[
            "127.0.0.1",
            "10.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
    )?;
    let admin = ca.issue_client("admin", &["system:masters"])?;
    let sa_key = generate_key()?;
    let files = [
        ("ca.crt", &ca.pair().cert_pem),
        ("ca.key", &ca.pair().key_pem),
        ("apiserver.crt", &apiserver.cert_pem),
        ("apiserver.key", &apiserver.key_pem),
        ("admin.crt", &admin.cert_pem),
        ("admin.key", &admin.key_pem),
        ("sa.key", &sa_key.key_pem),
        ("sa.pub", &sa_key.public_key_pem),
    ];
    for (name, content) in files {
        fs::write(pki.join(name), content)?;
    }
    Ok(())
}

fn kubeconfig_yaml(server: &str, pki: &Path) -> String {
    let p = |name: &str| pki.join(name).display().to_string();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    client-certificate: {crt}
    client-key: {key}
contexts:
- name: e2e
  context:
    cluster: e2e
    user: admin
    namespace: default
current-context: e2e
",
        ca = p("ca.crt"),
        crt = p("admin.crt"),
        key = p("admin.key"),
    )
}
