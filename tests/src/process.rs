//! Child processes the harness starts, and how it makes sure none outlives it.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, Result};

/// How long a started process lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Until it is stopped, dropped, or the process that started it exits in any
    /// way (also `kill -9` or a panic in a shared static): tests.
    Tied,
    /// Until it is stopped by pid: the sandbox, which outlives `cargo xtask sandbox up`.
    Detached,
}

/// A running component (etcd, kube-apiserver, a hollow node, …) with its log file.
pub struct Process {
    name: String,
    log: PathBuf,
    child: Child,
    // Tied processes run under `sh`, which kills the real process once this pipe
    // reaches end-of-file, i.e. when we drop it or when this process dies: the OS
    // closes the pipe even when no destructor runs.
    lifeline: Option<ChildStdin>,
}

/// The supervisor shell of a tied process: start the program (its stdin is
/// /dev/null), kill it as soon as our stdin closes, and exit with its status when
/// it ends, so a crash is visible to `is_running`.
/// (`sh` gives background jobs /dev/null as stdin, hence the copy on fd 3.)
const SUPERVISOR: &str = r#"exec 3<&0
"$@" </dev/null 3<&- & child=$!
{ cat <&3 >/dev/null; kill -KILL $child 2>/dev/null; } &
exec 3<&-
wait $child"#;

impl Process {
    /// Starts `program args…`, appending stdout and stderr to `log`.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
        lifetime: Lifetime,
    ) -> Result<Self> {
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("failed to open log {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = match lifetime {
            Lifetime::Tied => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(SUPERVISOR)
                    .arg("sh")
                    .arg(program)
                    .args(args);
                c.stdin(Stdio::piped());
                c
            }
            Lifetime::Detached => {
                let mut c = Command::new(program);
                c.args(args).stdin(Stdio::null());
                c
            }
        };
        let mut child = command
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("failed to start {name} ({})", program.display()))?;
        let lifeline = child.stdin.take();
        Ok(Self {
            name: name.into(),
            log: log.into(),
            child,
            lifeline,
        })
    }

    /// The component's name, e.g. `kube-apiserver` or `node-2`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The pid of the started program (for detached processes) or of its supervisor.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills it (SIGKILL, like a power cut) and waits until it is gone.
    pub fn kill(&mut self) {
        match self.lifeline.take() {
            // Closing the lifeline makes the supervisor kill the program and exit.
            Some(lifeline) => drop(lifeline),
            None => {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.lifeline.is_some() {
            self.kill();
        }
    }
}
