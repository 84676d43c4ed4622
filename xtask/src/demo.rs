//! `cargo xtask sandbox demo`: the seed document's story on a fresh sandbox, every
//! step a real command (`kubectl`, `kubectl staticpod`, a `curl` to a node's OTA
//! API) printed with its real output. Between steps it waits for what the story
//! needs (pods Ready, a node NotReady, a rollout done) with deadlines, never a
//! fixed sleep; anything unexpected ends the demo with the reason, the sandbox
//! left up for a look.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use staticpod_e2e::{pod_is_ready, wait_for, write_manifest};

use crate::sandbox::{Sandbox, print_summary};

/// The StaticPod the demo applies (relative to the repository root, as printed).
const EXAMPLE: &str = "examples/nginx-staticpod.yaml";

/// What the installer dropped on every node before the operator existed: the
/// seed's plain nginx Pod, which the StaticPod then adopts as it is.
const SEED_MANIFEST: &str = "apiVersion: v1
kind: Pod
metadata:
  name: nginx
  namespace: default
  labels:
    app: nginx
spec:
  containers:
  - name: nginx
    image: nginx:1.19.1
";

/// An apply the validating webhook refuses: an unknown strategy and a manifest
/// name that would escape the static-pod directory on every node.
const INVALID: &str = "apiVersion: apps.openyurt.io/v1alpha1
kind: StaticPod
metadata:
  name: nginx-canary
spec:
  staticPodManifest: ../nginx
  upgradeStrategy:
    type: canary
  template:
    spec:
      containers:
      - name: nginx
        image: nginx:1.19.2
";

/// Pod, node, image and revision of every mirror pod.
const POD_COLUMNS: &str = "custom-columns=POD:.metadata.name,NODE:.spec.nodeName,IMAGE:.spec.containers[0].image,REVISION:.metadata.annotations.openyurt\\.io/static-pod-hash";
/// The same plus the OTA mark.
const OTA_COLUMNS: &str = "custom-columns=POD:.metadata.name,IMAGE:.spec.containers[0].image,PODNEEDUPGRADE:.status.conditions[?(@.type==\"PodNeedUpgrade\")].status";

/// A rollout of three nodes one at a time takes ~45 s here; room for a busy machine.
const ROLLOUT: Duration = Duration::from_secs(240);
const SHORT: Duration = Duration::from_secs(90);

struct Demo<'a> {
    sandbox: &'a Sandbox,
    step: usize,
}

pub fn run(sandbox: &Sandbox) -> Result<()> {
    let mut demo = Demo { sandbox, step: 0 };
    let result = demo.story();
    if let Err(e) = &result {
        println!("\n=== The demo stopped ===");
        println!("{e:#}");
        println!("The sandbox is still up for a look:");
    } else {
        println!("The sandbox stays up to explore:");
    }
    print_summary(sandbox);
    if result.is_ok() {
        println!("for instance: kubectl staticpod upgrade nginx --node node-3");
    }
    result.map_err(|e| sandbox.cluster.explain(e))
}

impl Demo<'_> {
    fn story(&mut self) -> Result<()> {
        let nodes: Vec<String> = self
            .sandbox
            .cluster
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .collect();
        let [first, second, third] = nodes.as_slice() else {
            bail!("the demo needs 3 nodes, the sandbox has {}", nodes.len());
        };

        self.section(
            "Three edge nodes run nginx as a static pod",
            "An installer dropped nginx.yaml into each node's static-pod directory (the \
             sandbox's stand-in for /etc/kubernetes/manifests); each kubelet runs it and \
             the API server shows a read-only mirror pod nginx-<node>.",
        );
        for node in self.sandbox.cluster.nodes() {
            write_manifest(&node.manifest_dir, "nginx", SEED_MANIFEST)?;
        }
        let manifest = self
            .sandbox
            .cluster
            .node(0)?
            .manifest_dir
            .join("nginx.yaml");
        self.show_file(&manifest.display().to_string(), SEED_MANIFEST);
        self.wait("the three mirror pods Ready", SHORT, || {
            let pods = self.mirror_pods()?;
            Ok((pods.len() == 3 && pods.iter().all(pod_is_ready)).then_some(()))
        })?;
        self.kubectl(&["get", "nodes"])?;
        self.kubectl(&["get", "pods", "-o", "wide"])?;

        self.section(
            "A StaticPod takes them over",
            "The StaticPod names the manifest file and holds the pod template. The pods \
             already run that template, so they are adopted as they are: no restart.",
        );
        let example = crate::root().join(EXAMPLE);
        let text = std::fs::read_to_string(&example)
            .with_context(|| format!("failed to read {}", example.display()))?;
        self.show_file(EXAMPLE, &text);
        self.kubectl(&["apply", "-f", EXAMPLE])?;
        self.wait_counts(
            "the controller to count 3 nodes, 3 Ready, 3 upgraded",
            [Some(3), Some(3), Some(3)],
        )?;
        self.kubectl(&["get", "staticpods", "nginx"])?;
        self.say("The webhook filled in the defaults (maxUnavailable 10% of 3 nodes: 1):");
        self.kubectl(&[
            "get",
            "staticpod",
            "nginx",
            "-o",
            "jsonpath={.spec.upgradeStrategy}",
        ])?;

        self.section(
            "A rolling upgrade: nginx 1.19.1 -> 1.19.2",
            "Change the image once; the controller asks one node's agent at a time \
             (maxUnavailable) to swap the manifest file, waits until the new pod is Ready, \
             then moves on.",
        );
        self.set_image("nginx:1.19.2")?;
        self.kubectl_streamed(&[
            "staticpod",
            "status",
            "nginx",
            "--watch",
            "--wait",
            "--timeout",
            "5m",
        ])?;
        self.wait_counts("the status to show 3 upgraded", [Some(3), Some(3), Some(3)])?;
        self.kubectl(&["get", "staticpods", "nginx"])?;
        self.kubectl(&["get", "pods", "-o", POD_COLUMNS])?;

        self.section(
            "Invalid input is refused at apply time",
            "The validating webhook names the field and the reason; nothing is stored, \
             so no node ever receives it.",
        );
        self.show(&format!("kubectl apply -f - <<EOF\n{INVALID}EOF"));
        let out = self.kubectl_raw(&["apply", "-f", "-"], Some(INVALID))?;
        self.print_output(&out);
        if out.status.success()
            || !String::from_utf8_lossy(&out.stderr).contains("denied the request")
        {
            bail!("the invalid StaticPod was not refused by the webhook");
        }

        self.section(
            &format!("An offline node is skipped, then caught up ({third})"),
            &format!(
                "{third} loses power (the sandbox kills its kubelet). A rollout started \
                 meanwhile upgrades the others and reports {third} as skipped; when it \
                 comes back, it is upgraded too."
            ),
        );
        self.sandbox.cluster.stop_node(2)?;
        self.wait(
            &format!("{third} to turn NotReady, about 10 s"),
            SHORT,
            || {
                Ok(
                    (self.sandbox.cluster.node_ready(third)?.as_deref() != Some("True"))
                        .then_some(()),
                )
            },
        )?;
        self.kubectl(&["get", "nodes"])?;
        self.set_image("nginx:1.19.3")?;
        self.wait_states(
            &format!("{first} and {second} upgraded, {third} skipped"),
            ROLLOUT,
            &[
                (first, "Upgraded"),
                (second, "Upgraded"),
                (third, "Skipped"),
            ],
        )?;
        self.kubectl(&["staticpod", "status", "nginx"])?;
        self.wait_counts(
            "the status to show 2 of 3 upgraded",
            [Some(3), None, Some(2)],
        )?;
        self.kubectl(&["get", "staticpods", "nginx"])?;
        self.say(&format!(
            "{third} comes back (the sandbox restarts its kubelet):"
        ));
        self.sandbox.cluster.start_node(2)?;
        self.kubectl_streamed(&["staticpod", "status", "nginx", "--wait", "--timeout", "5m"])?;
        self.wait_counts("the status to show 3 upgraded", [Some(3), Some(3), Some(3)])?;
        self.kubectl(&["get", "staticpods", "nginx"])?;

        self.section(
            "OTA: nodes upgrade when told to",
            "In ota mode the controller upgrades nothing: it marks every out-of-date pod \
             PodNeedUpgrade=True. Each node upgrades when triggered, on the node through \
             its agent's OTA API (YurtHub-compatible) or from anywhere with \
             `kubectl staticpod upgrade`.",
        );
        self.kubectl(&[
            "patch",
            "staticpod",
            "nginx",
            "--type=merge",
            "-p",
            r#"{"spec":{"upgradeStrategy":{"type":"ota","maxUnavailable":null}}}"#,
        ])?;
        self.set_image("nginx:1.19.4")?;
        self.wait("PodNeedUpgrade=True on every pod", SHORT, || {
            let pods = self.mirror_pods()?;
            Ok((pods.len() == 3
                && pods
                    .iter()
                    .all(|p| need_upgrade(p).as_deref() == Some("True")))
            .then_some(()))
        })?;
        self.kubectl(&["get", "pods", "-o", OTA_COLUMNS])?;
        self.kubectl(&["staticpod", "status", "nginx"])?;

        self.say(&format!("On {first}, its agent's OTA API:"));
        let port = self.sandbox.components.ota_ports[0];
        let path = format!("/openyurt.io/v1/namespaces/default/pods/nginx-{first}/upgrade");
        self.show(&format!("curl -sS -X POST http://127.0.0.1:{port}{path}"));
        // The agent judges from its own watch of the node's pods, which may trail
        // the API server by a moment: wait until it has seen the mark too.
        let pod = format!("nginx-{first}");
        wait_for(&format!("{first}'s agent to see the mark"), SHORT, || {
            let (status, body) = staticpod_e2e::http_request(port, "GET", "/pods")?;
            if status != 200 {
                bail!("GET /pods answered {status}: {}", body.trim());
            }
            let list: Value = serde_json::from_str(&body).context("GET /pods: not JSON")?;
            Ok(list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| {
                    p["metadata"]["name"] == pod.as_str()
                        && need_upgrade(p).as_deref() == Some("True")
                })
                .then_some(()))
        })?;
        let (status, body) = staticpod_e2e::http_request(port, "POST", &path)?;
        println!("{}", body.trim_end());
        if status != 200 {
            bail!("the OTA API answered {status}: {}", body.trim());
        }
        self.say(&format!("From anywhere, for {second}:"));
        self.kubectl(&["staticpod", "upgrade", "nginx", "--node", second])?;
        self.wait_states(
            &format!("{first} and {second} upgraded, {third} still waiting"),
            SHORT,
            &[
                (first, "Upgraded"),
                (second, "Upgraded"),
                (third, "AwaitingOTA"),
            ],
        )?;
        self.wait_counts("the status to show 2 upgraded", [Some(3), Some(3), Some(2)])?;
        self.kubectl(&["staticpod", "status", "nginx"])?;
        self.kubectl(&["get", "staticpods", "nginx"])?;
        self.kubectl(&["get", "pods", "-o", OTA_COLUMNS])?;
        println!("\n=== Done ===");
        self.say(
            "Adoption, a rolling upgrade, a refused apply, an offline node skipped and \
             caught up, OTA upgrades.",
        );
        Ok(())
    }

    fn section(&mut self, title: &str, text: &str) {
        self.step += 1;
        println!("\n=== {}. {title} ===", self.step);
        self.say(text);
    }

    /// Narration, as shell comments so the transcript reads like a session.
    fn say(&self, text: &str) {
        println!("# {text}");
    }

    /// Prints a command as typed at a prompt.
    fn show(&self, command: &str) {
        println!("$ {command}");
    }

    fn show_file(&self, path: &str, text: &str) {
        self.show(&format!("cat {path}"));
        print!("{text}");
    }

    /// Waits with a deadline, saying what for.
    fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        println!("# (waiting for {what})");
        wait_for(what, timeout, check)
    }

    /// Waits until `kubectl staticpod status nginx` shows each node in its state.
    fn wait_states(&self, what: &str, timeout: Duration, want: &[(&str, &str)]) -> Result<()> {
        self.wait(what, timeout, || {
            let states = self.node_states()?;
            let matches = want
                .iter()
                .all(|(node, state)| states.iter().any(|(name, s)| name == node && s == state));
            Ok(matches.then_some(()))
        })
    }

    /// Waits until the StaticPod's status reflects its current generation with
    /// `[totalNumber, readyNumber, upgradedNumber]` (`None`: any).
    fn wait_counts(&self, what: &str, want: [Option<u64>; 3]) -> Result<()> {
        self.wait(what, ROLLOUT, || {
            let sp = self
                .sandbox
                .cluster
                .kubectl_json(&["get", "staticpod", "nginx"])?;
            let status = &sp["status"];
            let counts = [
                status["totalNumber"].as_u64(),
                status["readyNumber"].as_u64(),
                status["upgradedNumber"].as_u64(),
            ];
            Ok(
                (status["observedGeneration"] == sp["metadata"]["generation"]
                    && counts
                        .iter()
                        .zip(want)
                        .all(|(have, want)| want.is_none() || *have == want))
                .then_some(()),
            )
        })
    }

    fn set_image(&self, image: &str) -> Result<()> {
        let patch = format!(
            r#"[{{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"{image}"}}]"#
        );
        self.kubectl(&["patch", "staticpod", "nginx", "--type=json", "-p", &patch])?;
        Ok(())
    }

    /// The real kubectl as a person runs it after `export KUBECONFIG=… PATH=…`:
    /// from the repository root, with `.sandbox/bin` (kubectl-staticpod) first on PATH.
    fn command(&self, args: &[&str]) -> Command {
        let bin = self.sandbox.bin_dir();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![bin.clone()];
        paths.extend(std::env::split_paths(&path));
        let mut command = Command::new(bin.join("kubectl"));
        command
            .args(args)
            .current_dir(crate::root())
            .env("KUBECONFIG", self.sandbox.kubeconfig())
            .env(
                "PATH",
                std::env::join_paths(paths).unwrap_or_else(|_| bin.into_os_string()),
            );
        command
    }

    fn kubectl_raw(&self, args: &[&str], input: Option<&str>) -> Result<Output> {
        let mut command = self.command(args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = command.spawn().context("failed to run kubectl")?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write;
            stdin.write_all(input.as_bytes())?;
        }
        child.wait_with_output().context("failed to run kubectl")
    }

    fn print_output(&self, out: &Output) {
        for stream in [&out.stdout, &out.stderr] {
            let text = String::from_utf8_lossy(stream);
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }

    /// Prints `$ kubectl args`, runs it, prints its output; fails if kubectl does.
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.show(&shell_line("kubectl", args));
        let out = self.kubectl_raw(args, None)?;
        self.print_output(&out);
        if !out.status.success() {
            bail!("`{}` failed ({})", shell_line("kubectl", args), out.status);
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Like [`Demo::kubectl`] for a long-running command: its output appears as it
    /// comes. Through a pipe, so the plugin prints frames one after another
    /// instead of clearing the screen (which would wipe the transcript).
    fn kubectl_streamed(&self, args: &[&str]) -> Result<()> {
        self.show(&shell_line("kubectl", args));
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("failed to run kubectl")?;
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines() {
                println!("{}", line?);
            }
        }
        let status = child.wait().context("failed to run kubectl")?;
        if !status.success() {
            bail!("`{}` failed ({status})", shell_line("kubectl", args));
        }
        Ok(())
    }

    /// The nginx mirror pods (quietly, for waits).
    fn mirror_pods(&self) -> Result<Vec<Value>> {
        let list = self
            .sandbox
            .cluster
            .kubectl_json(&["get", "pods", "-n", "default"])?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("nginx-"))
            })
            .cloned()
            .collect())
    }

    /// Each node's state as `kubectl staticpod status nginx -o json` judges it
    /// (quietly, for waits).
    fn node_states(&self) -> Result<Vec<(String, String)>> {
        let out = self.kubectl_raw(&["staticpod", "status", "nginx", "-o", "json"], None)?;
        if !out.status.success() {
            bail!(
                "kubectl staticpod status failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let view: Value = serde_json::from_slice(&out.stdout)
            .context("kubectl staticpod status -o json printed no JSON")?;
        Ok(view["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| {
                Some((
                    n["node"].as_str()?.to_owned(),
                    n["state"].as_str()?.to_owned(),
                ))
            })
            .collect())
    }
}

fn need_upgrade(pod: &Value) -> Option<String> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == staticpod_api::conventions::POD_NEED_UPGRADE)
        .and_then(|c| c["status"].as_str())
        .map(str::to_owned)
}

/// `program args…` as a person would type it in a POSIX shell.
fn shell_line(program: &str, args: &[&str]) -> String {
    let mut line = program.to_owned();
    for arg in args {
        line.push(' ');
        line.push_str(&shell_quote(arg));
    }
    line
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_printed_as_a_shell_would_take_them() {
        assert_eq!(
            shell_line("kubectl", &["get", "pods", "-o", "wide"]),
            "kubectl get pods -o wide"
        );
        assert_eq!(
            shell_line("kubectl", &["-p", r#"{"a":"it's"}"#, ""]),
            r#"kubectl -p '{"a":"it'\''s"}' ''"#
        );
    }
}
