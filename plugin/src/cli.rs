//! The command line: global flags as kubectl users expect them, and one
//! subcommand per job, each with examples in `--help`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `kubectl staticpod`: rollouts of static pods across a fleet.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-staticpod",
    bin_name = "kubectl staticpod",
    version,
    about = "Status, live watch and OTA upgrade triggers for StaticPods (apps.openyurt.io/v1alpha1)",
    after_help = "Examples:
  # Every StaticPod in the current namespace, with its rollout state
  kubectl staticpod status

  # One StaticPod: summary and where each node stands
  kubectl staticpod status nginx

  # Follow a rollout live; or block until it completes (CI)
  kubectl staticpod status nginx --watch
  kubectl staticpod status nginx --wait --timeout 10m

  # OTA mode: upgrade one node, or every out-of-date node
  kubectl staticpod upgrade nginx --node edge-7
  kubectl staticpod upgrade nginx --all"
)]
pub struct Cli {
    /// Flags every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, named as kubectl names them.
#[derive(Debug, Args)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Every namespace (status without a name).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// No colour (also off when stdout is not a terminal, when NO_COLOR is set, or TERM=dumb).
    #[arg(long, global = true)]
    pub no_color: bool,
}

/// How to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables for people.
    Table,
    /// Tables with more columns.
    Wide,
    /// JSON for scripts (a stable structure: the summary and one entry per node).
    Json,
    /// YAML, same structure as JSON.
    Yaml,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show StaticPods and their rollouts: a fleet table, or one StaticPod node by node.
    #[command(after_help = STATUS_HELP)]
    Status(StatusArgs),
    /// Trigger OTA upgrades: ask nodes' agents to install the target revision.
    #[command(after_help = UPGRADE_HELP)]
    Upgrade(UpgradeArgs),
    /// Print a shell completion script.
    #[command(after_help = COMPLETION_HELP)]
    Completion(CompletionArgs),
}

const STATUS_HELP: &str = "States of a node:
  Upgraded     runs the target revision
  Upgrading    asked to install it; its agent is on it
  Pending      out of date, waiting for a slot (auto: maxUnavailable)
  Skipped      out of date and the node is NotReady; upgraded when it returns
  AwaitingOTA  out of date in ota mode; waits for `kubectl staticpod upgrade`
  Failed       the target failed here and was rolled back; the rollout stops spreading
  RolledBack   an earlier revision failed here and was rolled back

Exit codes:
  0  success; with --wait: the rollout is complete (every node upgraded and Ready)
  1  error (cluster unreachable, StaticPod or CRD missing, forbidden)
  2  bad usage
  3  with --wait: the rollout failed on a node
  4  with --wait: --timeout passed first

Examples:
  # Fleet table (add -A for every namespace, -o wide for more columns)
  kubectl staticpod status

  # One StaticPod: summary block, then one row per node (grouped beyond --group-above)
  kubectl staticpod status nginx
  kubectl staticpod status nginx --all-nodes

  # Live view, redrawn as the cluster changes
  kubectl staticpod status nginx --watch

  # In a pipeline: wait for completion, fail on a failed node or after 10 minutes
  kubectl staticpod status nginx --wait --timeout 10m

  # For scripts
  kubectl staticpod status nginx -o json | jq '.nodes[] | select(.state != \"Upgraded\")'";

const UPGRADE_HELP: &str =
    "Writes the annotation apps.openyurt.io/upgrade-request=<target revision> on each
node's mirror pod through the API server; the node's agent then swaps the manifest,
verifies the new pod and rolls back on failure. Nodes need not be reachable from here.

Refused, with the reason: a node that does not run the StaticPod or does not exist,
a node already on the target revision, a StaticPod in auto mode (the controller
drives it; --force requests anyway), a revision that already failed on the node
(--force clears the failure and asks again). Exit code 1 when any node was refused.

Examples:
  # One node, or several
  kubectl staticpod upgrade nginx --node edge-7
  kubectl staticpod upgrade nginx --node edge-7 --node edge-9

  # Every out-of-date node
  kubectl staticpod upgrade nginx --all

  # Retry a node where this revision failed before
  kubectl staticpod upgrade nginx --node edge-7 --force";

const COMPLETION_HELP: &str = "Examples:
  # bash (current shell; add to ~/.bashrc to keep)
  source <(kubectl-staticpod completion bash)

  # zsh
  kubectl-staticpod completion zsh > \"${fpath[1]}/_kubectl-staticpod\"

  # fish
  kubectl-staticpod completion fish > ~/.config/fish/completions/kubectl-staticpod.fish";

/// `status` flags.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A StaticPod name; without one, the fleet table.
    pub name: Option<String>,
    /// Redraw live as the StaticPod, its pods and nodes change.
    #[arg(short = 'w', long, requires = "name")]
    pub watch: bool,
    /// Block until the rollout completes (exit 0), fails (3) or times out (4).
    #[arg(long, requires = "name")]
    pub wait: bool,
    /// With --wait or --watch: give up after this long (e.g. 90s, 10m, 1h).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// List every node, however many.
    #[arg(long)]
    pub all_nodes: bool,
    /// Group nodes by state when there are more than this many.
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub group_above: usize,
}

/// `upgrade` flags.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["node", "all"])))]
pub struct UpgradeArgs {
    /// The StaticPod.
    pub name: String,
    /// A node to upgrade (repeat for several).
    #[arg(long, value_name = "NODE")]
    pub node: Vec<String>,
    /// Every node that does not run the target revision.
    #[arg(long)]
    pub all: bool,
    /// Also when the StaticPod is in auto mode, or the revision failed on the node before.
    #[arg(long)]
    pub force: bool,
}

/// `completion` arguments.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// `90s`, `10m`, `1h`, `1h30m` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; use e.g. 90s, 10m or 1h");
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            _ => return Err(bad()),
        };
    }
    if !number.is_empty() || text.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}
