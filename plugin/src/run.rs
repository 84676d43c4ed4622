//! The commands: read, judge, render, print.

use std::io::{IsTerminal, Write};

use clap::CommandFactory;
use serde::Serialize;

use crate::cli::{Cli, Command, CompletionArgs, Global, Output, StatusArgs, UpgradeArgs};
use crate::cluster::Cluster;
use crate::error::Error;
use crate::render::{self, NodeListing, Palette};
use crate::upgrade::{self, Selection};
use crate::watch::{self, Follow};

/// Runs one command line.
pub async fn run(cli: Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Completion(args) => completion(args),
        Command::Status(args) => status(&cli.global, args).await,
        Command::Upgrade(args) => upgrade(&cli.global, args).await,
    }
}

/// Colour only on a terminal, never with `--no-color`, `NO_COLOR` or `TERM=dumb`
/// (anstream's detection of the environment).
pub fn palette(global: &Global) -> Palette {
    let choice = anstream::AutoStream::choice(&std::io::stdout());
    Palette {
        colour: !global.no_color
            && matches!(
                choice,
                anstream::ColorChoice::Always | anstream::ColorChoice::AlwaysAnsi
            ),
    }
}

fn print(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Other(format!("cannot write to stdout: {e}")))
}

fn machine<T: Serialize>(output: Output, value: &T) -> Result<String, Error> {
    match output {
        Output::Json => serde_json::to_string_pretty(value)
            .map(|s| s + "\n")
            .map_err(|e| Error::Other(format!("cannot encode JSON: {e}"))),
        _ => serde_saphyr::to_string(value)
            .map_err(|e| Error::Other(format!("cannot encode YAML: {e}"))),
    }
}

async fn status(global: &Global, args: &StatusArgs) -> Result<(), Error> {
    let cluster = Cluster::connect(global).await?;
    let palette = palette(global);
    let wide = global.output == Output::Wide;
    let Some(name) = &args.name else {
        let rows = cluster.fleet(global.all_namespaces).await?;
        let text = match global.output {
            Output::Table | Output::Wide => {
                if rows.is_empty() {
                    let scope = if global.all_namespaces {
                        "any namespace".to_owned()
                    } else {
                        format!("namespace {}", cluster.namespace)
                    };
                    format!("No StaticPods found in {scope}.\n")
                } else {
                    render::fleet_table(
                        &rows,
                        global.all_namespaces,
                        wide,
                        jiff::Timestamp::now(),
                        palette,
                    )
                }
            }
            output => machine(output, &serde_json::json!({ "items": rows }))?,
        };
        return print(&text);
    };
    let listing = NodeListing {
        wide,
        all_nodes: args.all_nodes,
        group_above: args.group_above,
    };
    if args.watch || args.wait {
        let follow = Follow {
            redraw: args.watch,
            wait: args.wait,
            timeout: args.timeout,
            terminal: std::io::stdout().is_terminal(),
        };
        return watch::follow(&cluster, name, follow, listing, palette).await;
    }
    let (view, _) = cluster.view(name).await?;
    let text = match global.output {
        Output::Table | Output::Wide => render::static_pod_view(&view, listing, palette),
        output => machine(output, &view)?,
    };
    print(&text)
}

async fn upgrade(global: &Global, args: &UpgradeArgs) -> Result<(), Error> {
    let cluster = Cluster::connect(global).await?;
    let (view, node_names) = cluster.view(&args.name).await?;
    let selection = if args.all {
        Selection::All
    } else {
        Selection::Nodes(args.node.clone())
    };
    // One line instead of one refusal per node for the whole fleet.
    if args.all && view.summary.mode == "auto" && !args.force {
        return Err(Error::Refused(format!(
            "staticpod {} uses upgradeStrategy auto: the controller upgrades its nodes; \
             --force requests every out-of-date node anyway",
            args.name
        )));
    }
    let decisions = upgrade::decide(&view, &node_names, &selection, args.force);
    let decisions = cluster.request_upgrades(&args.name, decisions).await;
    let refused = decisions.iter().filter(|d| !d.outcome.is_ok()).count();
    match global.output {
        Output::Table | Output::Wide => {
            let (ok, not) = render::upgrade_lines(&args.name, &decisions);
            print(&ok)?;
            eprint!("{not}");
            if decisions.is_empty() {
                print(&format!(
                    "staticpod/{}: no node runs it; nothing to upgrade\n",
                    args.name
                ))?;
            }
        }
        output => print(&machine(
            output,
            &serde_json::json!({
                "name": args.name,
                "namespace": cluster.namespace,
                "targetRevision": view.summary.target_revision,
                "nodes": decisions,
            }),
        )?)?,
    }
    if refused > 0 {
        return Err(Error::Refused(format!(
            "{refused} of {} node{} not upgraded (reasons above)",
            decisions.len(),
            if decisions.len() == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

fn completion(args: &CompletionArgs) -> Result<(), Error> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    // Completion applies to the binary name the shell sees; kubectl's own
    // completion hands `kubectl staticpod` to plugins via kubectl_complete-staticpod.
    clap_complete::generate(args.shell, &mut command, "kubectl-staticpod", &mut script);
    print(&String::from_utf8_lossy(&script))
}
