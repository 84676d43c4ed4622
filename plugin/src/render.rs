//! Rendering: views to text. Pure, so every layout is a snapshot test.
//!
//! Layout follows the best rollout CLIs (Argo Rollouts, kubectl): a summary block of
//! aligned `Label:  value` lines, a blank line, then a kubectl-style table. Colour
//! goes on status words and icons only, never on whole lines; tables are aligned
//! with escape codes ignored, so colour never breaks alignment.

use std::collections::BTreeMap;
use std::io::Write;

use anstyle::{AnsiColor, Style};
use jiff::Timestamp;

use crate::upgrade::{Decision, Outcome};
use crate::view::{NodeRow, NodeStatus, Phase, StaticPodView, Summary};

/// Whether to colour, decided once by the shell (TTY, `NO_COLOR`, `--no-color`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Palette {
    /// Emit ANSI colour codes.
    pub colour: bool,
}

impl Palette {
    /// No colour at all (pipes, tests).
    pub const PLAIN: Palette = Palette { colour: false };

    fn paint(self, text: &str, colour: Option<AnsiColor>) -> String {
        match colour {
            Some(c) if self.colour => {
                let style = Style::new().fg_color(Some(c.into()));
                format!("{style}{text}{style:#}")
            }
            _ => text.to_owned(),
        }
    }

    /// A phase word, coloured.
    pub fn phase(self, phase: Phase) -> String {
        self.paint(phase.word(), phase_colour(phase))
    }

    /// A node state word, coloured.
    pub fn state(self, state: NodeStatus) -> String {
        self.paint(state.word(), state_colour(state))
    }
}

fn phase_colour(phase: Phase) -> Option<AnsiColor> {
    match phase {
        Phase::Complete => Some(AnsiColor::Green),
        Phase::Progressing => Some(AnsiColor::Blue),
        Phase::Failed | Phase::Invalid => Some(AnsiColor::Red),
        Phase::AwaitingOta | Phase::Waiting => Some(AnsiColor::Yellow),
    }
}

/// The icon of each phase (Argo Rollouts' vocabulary).
pub fn phase_icon(phase: Phase) -> &'static str {
    match phase {
        Phase::Complete => "✔",
        Phase::Progressing => "◌",
        Phase::Failed | Phase::Invalid => "✖",
        Phase::AwaitingOta | Phase::Waiting => "◷",
    }
}

fn state_colour(state: NodeStatus) -> Option<AnsiColor> {
    match state {
        NodeStatus::Upgraded => Some(AnsiColor::Green),
        NodeStatus::Upgrading => Some(AnsiColor::Blue),
        NodeStatus::Pending | NodeStatus::AwaitingOta => Some(AnsiColor::Yellow),
        NodeStatus::Failed | NodeStatus::RolledBack => Some(AnsiColor::Red),
        NodeStatus::Skipped => None,
    }
}

/// Aligns tab-separated lines into columns three spaces apart (as kubectl does),
/// ignoring colour codes, and trims the padding at line ends.
pub fn align(text: &str) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).padding(3).ansi(true);
    // Writing to a Vec cannot fail.
    let _ = tw.write_all(text.as_bytes());
    let bytes = tw.into_inner().unwrap_or_default();
    let aligned = String::from_utf8_lossy(&bytes);
    let mut out = String::with_capacity(aligned.len());
    for line in aligned.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// kubectl's age format: `45s`, `3m20s`, `17m`, `5h`, `3d`.
pub fn age(created: Option<&str>, now: Timestamp) -> String {
    let Some(created) = created.and_then(|c| c.parse::<Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let s = (now.as_second() - created.as_second()).max(0);
    match s {
        0..120 => format!("{s}s"),
        120..600 => format!("{}m{}s", s / 60, s % 60),
        600..7_200 => format!("{}m", s / 60),
        7_200..172_800 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The fleet table of `status` without a name: the columns of `kubectl get
/// staticpods` first, then mode, target revision and one word for the rollout.
pub fn fleet_table(
    rows: &[Summary],
    all_namespaces: bool,
    wide: bool,
    now: Timestamp,
    palette: Palette,
) -> String {
    let mut text = String::new();
    if all_namespaces {
        text.push_str("NAMESPACE\t");
    }
    text.push_str("NAME\tAGE\tTOTALNUMBER\tREADYNUMBER\tUPGRADEDNUMBER\tMODE\tREVISION\tSTATUS");
    if wide {
        text.push_str("\tMAXUNAVAILABLE\tMANIFEST\tMESSAGE");
    }
    text.push('\n');
    for row in rows {
        if all_namespaces {
            text.push_str(&row.namespace);
            text.push('\t');
        }
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            row.name,
            age(row.created.as_deref(), now),
            row.total_number,
            row.ready_number,
            row.upgraded_number,
            dash(&row.mode),
            dash(&row.target_revision),
            palette.phase(row.phase),
        ));
        if wide {
            text.push_str(&format!(
                "\t{}\t{}\t{}",
                max_unavailable(row),
                dash(&row.manifest),
                row.message
            ));
        }
        text.push('\n');
    }
    align(&text)
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn max_unavailable(row: &Summary) -> String {
    match (&row.max_unavailable, row.max_unavailable_nodes) {
        (Some(spec), Some(nodes)) if spec.ends_with('%') => format!("{spec}={nodes}"),
        (Some(spec), _) => spec.clone(),
        _ => "-".into(),
    }
}

/// How `status NAME` lays out its node list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeListing {
    /// Extra columns (images, pending request).
    pub wide: bool,
    /// One row per node however many there are.
    pub all_nodes: bool,
    /// Beyond this many nodes, nodes are grouped by state and reason (Failed,
    /// RolledBack and Upgrading nodes stay listed while they fit).
    pub group_above: usize,
}

/// Label width of the summary block.
const LABEL: usize = 17;

fn line(out: &mut String, label: &str, value: &str) {
    let label = if label.is_empty() {
        String::new()
    } else {
        format!("{label}:")
    };
    // Pad by visible width: a coloured label carries escape codes.
    let visible = anstream::adapter::strip_str(&label)
        .to_string()
        .chars()
        .count();
    let pad = LABEL.saturating_sub(visible).max(1);
    out.push_str(&format!("{label}{:pad$}{value}\n", ""));
}

/// The summary block and the node list of one StaticPod.
pub fn static_pod_view(view: &StaticPodView, listing: NodeListing, palette: Palette) -> String {
    let mut out = summary_block(&view.summary, palette);
    out.push('\n');
    out.push_str(&node_list(view, listing, palette));
    out
}

/// The `Label:  value` lines.
pub fn summary_block(s: &Summary, palette: Palette) -> String {
    let mut out = String::new();
    line(&mut out, "Name", &s.name);
    line(&mut out, "Namespace", &s.namespace);
    line(
        &mut out,
        "Status",
        &format!(
            "{} {}",
            palette.paint(phase_icon(s.phase), phase_colour(s.phase)),
            palette.phase(s.phase)
        ),
    );
    line(&mut out, "Message", &s.message);
    if s.phase == Phase::Invalid {
        return out;
    }
    let mode = match (s.mode.as_str(), &s.max_unavailable, s.max_unavailable_nodes) {
        ("auto", Some(spec), Some(nodes)) => format!(
            "auto (maxUnavailable {spec} = {nodes} node{})",
            plural(nodes)
        ),
        ("ota", ..) => "ota (nodes upgrade when triggered: kubectl staticpod upgrade)".into(),
        (mode, ..) => mode.into(),
    };
    line(&mut out, "Mode", &mode);
    line(&mut out, "Manifest", &format!("{}.yaml", s.manifest));
    // Images: where most out-of-date nodes are → the target.
    let current = s.revisions.iter().find(|g| !g.target);
    let target_images = s.target_images.join(", ");
    match current {
        Some(old) if !old.images.is_empty() && old.images != s.target_images => line(
            &mut out,
            "Images",
            &format!("{} → {target_images}", old.images.join(", ")),
        ),
        _ => line(&mut out, "Images", &target_images),
    }
    let mut revisions = String::new();
    let mut rows = vec![format!(
        "{}\t(target)\t{} node{}\t{}",
        s.target_revision,
        s.upgraded_number,
        plural(s.upgraded_number),
        target_images
    )];
    for group in s.revisions.iter().filter(|g| !g.target) {
        rows.push(format!(
            "{}\t\t{} node{}\t{}",
            group.revision.as_deref().unwrap_or("(none)"),
            group.nodes,
            plural(group.nodes),
            group.images.join(", ")
        ));
    }
    revisions.push_str(&rows.join("\n"));
    revisions.push('\n');
    for (i, row) in align(&revisions).lines().enumerate() {
        line(&mut out, if i == 0 { "Revision" } else { "" }, row);
    }
    line(
        &mut out,
        "Nodes",
        &format!(
            "total {}, ready {}, upgraded {}",
            s.total_number, s.ready_number, s.upgraded_number
        ),
    );
    for state in NodeStatus::ALL {
        let n = s.counts.get(&state).copied().unwrap_or(0);
        if n > 0 {
            line(
                &mut out,
                &format!("  {}", palette.state(state)),
                &n.to_string(),
            );
        }
    }
    if let (Some(generation), observed) = (s.generation, s.observed_generation)
        && observed != Some(generation)
    {
        let seen = observed.map_or("no generation yet".into(), |o| format!("generation {o}"));
        line(
            &mut out,
            "Controller",
            &format!("has not seen generation {generation} yet (its status describes {seen})"),
        );
    }
    out
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The node table, or grouped rows for large fleets.
pub fn node_list(view: &StaticPodView, listing: NodeListing, palette: Palette) -> String {
    if view.nodes.is_empty() {
        return format!(
            "No node runs {}.yaml: the operator upgrades static pods that nodes already run; it never installs them.\n",
            view.summary.manifest
        );
    }
    if listing.all_nodes || view.nodes.len() <= listing.group_above {
        return node_table(view.nodes.iter(), listing.wide, palette);
    }
    // Large fleet: the nodes a person acts on stay listed while they fit; the rest
    // collapse into one row per state and reason.
    let notable = |r: &&NodeRow| {
        matches!(
            r.state,
            NodeStatus::Failed | NodeStatus::RolledBack | NodeStatus::Upgrading
        )
    };
    let listed: Vec<&NodeRow> = view.nodes.iter().filter(notable).collect();
    let listed = if listed.len() <= listing.group_above {
        listed
    } else {
        Vec::new()
    };
    let mut out = String::new();
    if !listed.is_empty() {
        out.push_str(&node_table(listed.iter().copied(), listing.wide, palette));
        out.push('\n');
    }
    let mut groups: BTreeMap<(NodeStatus, String), Vec<&str>> = BTreeMap::new();
    for row in view.nodes.iter().filter(|r| !listed.contains(r)) {
        groups
            .entry((row.state, group_reason(row)))
            .or_default()
            .push(&row.node);
    }
    let mut text = String::from("NODES\tSTATE\tREASON\tEXAMPLES\n");
    for ((state, reason), nodes) in &groups {
        let examples = nodes.iter().take(3).copied().collect::<Vec<_>>().join(",");
        let more = if nodes.len() > 3 {
            format!(",… (+{})", nodes.len() - 3)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{}\t{}\t{}\t{examples}{more}\n",
            nodes.len(),
            palette.state(*state),
            dash(reason),
        ));
    }
    out.push_str(&align(&text));
    out.push_str(&format!(
        "\n{} nodes grouped by state; --all-nodes lists every node.\n",
        view.nodes.len() - listed.len()
    ));
    out
}

/// Reasons that name a revision or a node-specific detail still group well;
/// only the state's shared wording is kept.
fn group_reason(row: &NodeRow) -> String {
    match row.state {
        NodeStatus::Upgraded if row.pod_ready == Some(false) => "pod not Ready".into(),
        NodeStatus::Upgraded => String::new(),
        _ => row.reason.clone().unwrap_or_default(),
    }
}

fn node_table<'a>(rows: impl Iterator<Item = &'a NodeRow>, wide: bool, palette: Palette) -> String {
    let mut text = String::from("NODE\tNODE-READY\tPOD-READY\tREVISION\tSTATE\tREASON");
    if wide {
        text.push_str("\tREQUESTED\tIMAGES");
    }
    text.push('\n');
    for row in rows {
        let pod_ready = match row.pod_ready {
            Some(true) => "True",
            Some(false) => "False",
            None => "-",
        };
        text.push_str(&format!(
            "{}\t{}\t{pod_ready}\t{}\t{}\t{}",
            row.node,
            if row.node_ready { "True" } else { "False" },
            row.revision.as_deref().unwrap_or("-"),
            palette.state(row.state),
            row.reason.as_deref().unwrap_or(""),
        ));
        if wide {
            text.push_str(&format!(
                "\t{}\t{}",
                row.requested.as_deref().unwrap_or("-"),
                dash(&row.images.join(","))
            ));
        }
        text.push('\n');
    }
    align(&text)
}

/// A progress bar of upgraded/total: `[██████░░░░░░] 3/5 upgraded (60%)`.
pub fn progress_bar(upgraded: u32, total: u32, width: usize) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        f64::from(upgraded.min(total)) / f64::from(total)
    };
    let filled = ((fraction * width as f64).round() as usize).min(width);
    format!(
        "[{}{}] {upgraded}/{total} upgraded ({:.0}%)",
        "█".repeat(filled),
        "░".repeat(width - filled),
        fraction * 100.0
    )
}

/// One frame of `status --watch`: the view with a progress line, and the time.
pub fn watch_frame(
    view: &StaticPodView,
    listing: NodeListing,
    palette: Palette,
    now: Timestamp,
    warning: Option<&str>,
) -> String {
    let mut out = summary_block(&view.summary, palette);
    line(
        &mut out,
        "Progress",
        &progress_bar(view.summary.upgraded_number, view.summary.total_number, 30),
    );
    if let Some(warning) = warning {
        line(
            &mut out,
            "Warning",
            &palette.paint(warning, Some(AnsiColor::Red)),
        );
    }
    out.push('\n');
    out.push_str(&node_list(view, listing, palette));
    out.push_str(&format!(
        "\nUpdated {} · watching; Ctrl-C to stop\n",
        now.strftime("%H:%M:%S UTC")
    ));
    out
}

/// One line of `status --wait` (printed when it changes), in the shape CI logs
/// of rollout tools use: `Phase - counts: message`.
pub fn wait_line(s: &Summary) -> String {
    let mut counts: Vec<String> = NodeStatus::ALL
        .iter()
        .filter(|st| **st != NodeStatus::Upgraded)
        .filter_map(|st| {
            let n = s.counts.get(st).copied().unwrap_or(0);
            (n > 0).then(|| format!("{n} {}", st.word()))
        })
        .collect();
    counts.insert(
        0,
        format!("{}/{} upgraded", s.upgraded_number, s.total_number),
    );
    format!(
        "{} - {} ({}): {}",
        s.phase.word(),
        s.name,
        counts.join(", "),
        s.message
    )
}

/// The confirmation and refusal lines of `upgrade`: confirmations for stdout,
/// refusals for stderr.
pub fn upgrade_lines(name: &str, decisions: &[Decision]) -> (String, String) {
    let (mut ok, mut refused) = (String::new(), String::new());
    let mut up_to_date = 0;
    for d in decisions {
        match &d.outcome {
            Outcome::Requested {
                revision,
                cleared_failure,
                note,
            } => {
                ok.push_str(&format!(
                    "staticpod/{name} node {}: upgrade to revision {revision} requested",
                    d.node
                ));
                if *cleared_failure {
                    ok.push_str(" (its recorded failure cleared, so the agent tries again)");
                }
                if let Some(note) = note {
                    ok.push_str(&format!(" ({note})"));
                }
                ok.push('\n');
            }
            Outcome::AlreadyRequested { revision } => ok.push_str(&format!(
                "staticpod/{name} node {}: upgrade to revision {revision} already requested\n",
                d.node
            )),
            Outcome::UpToDate { .. } => up_to_date += 1,
            Outcome::Refused { reason } => refused.push_str(&format!(
                "staticpod/{name} node {}: not upgraded: {reason}\n",
                d.node
            )),
        }
    }
    if up_to_date > 0 {
        ok.push_str(&format!(
            "staticpod/{name}: {up_to_date} node{} already run{} the target revision\n",
            plural(up_to_date),
            if up_to_date == 1 { "s" } else { "" }
        ));
    }
    (ok, refused)
}

/// A short duration for messages: `45s`, `3m20s`, `1h5m`.
pub fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3_600, (s % 3_600) / 60),
    }
}
