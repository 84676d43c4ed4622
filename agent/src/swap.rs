//! The manifest swap: the only code that touches the kubelet's static-pod directory.
//!
//! Guarantees, whatever happens and whenever the process dies:
//! - the kubelet sees either the complete old or the complete new manifest: new
//!   content is written to a hidden temp file (the kubelet ignores dot-files),
//!   fsynced, renamed over `<name>.yaml`, and the directory is fsynced;
//! - the previous manifest is backed up *outside* the manifest directory (the
//!   kubelet parses every file in it) before the swap, in a bounded history;
//! - a journal, written atomically before the swap and removed after the outcome,
//!   tells a restarted agent what was in flight, so it finishes or rolls back;
//! - only a validated manifest name is ever joined to the directory, so no path
//!   can escape it.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use staticpod_api::validation::validate_manifest_name;
use staticpod_api::{Revision, parse_manifest, pod_revision};

/// A manifest base name that passed the StaticPod rules (a plain file name), checked
/// again here whatever the API server holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ManifestName(String);

impl ManifestName {
    /// Accepts `name` only if it is a plain file base name.
    pub fn new(name: &str) -> Result<Self> {
        let mut errors = Vec::new();
        validate_manifest_name(name, &mut errors);
        match errors.first() {
            None => Ok(Self(name.to_owned())),
            Some(e) => Err(SwapError::BadName(e.to_string())),
        }
    }

    /// `<name>.yaml`.
    pub fn file_name(&self) -> String {
        format!("{}.yaml", self.0)
    }
}

impl TryFrom<String> for ManifestName {
    type Error = SwapError;
    fn try_from(value: String) -> Result<Self> {
        Self::new(&value)
    }
}

impl From<ManifestName> for String {
    fn from(name: ManifestName) -> String {
        name.0
    }
}

impl fmt::Display for ManifestName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a swap step failed.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The manifest name is not a plain file name.
    #[error("refusing manifest name: {0}")]
    BadName(String),
    /// A file operation failed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// To which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The journal is unreadable.
    #[error("the upgrade journal {path} is unreadable: {reason}")]
    Journal {
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

type Result<T> = std::result::Result<T, SwapError>;

/// The file operations the swap uses, so tests can stop it at any step as a power
/// cut or `kill -9` would.
pub trait Fs {
    /// Creates `path` (which must not exist), writes `content` and fsyncs it.
    fn write_new(&self, path: &Path, content: &[u8]) -> io::Result<()>;
    /// Renames `from` over `to` (atomic within a filesystem).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Fsyncs a directory, making renames and removals in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file; a missing file is not an error.
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// The real filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl Fs for RealFs {
    fn write_new(&self, path: &Path, content: &[u8]) -> io::Result<()> {
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all(content)?;
        file.sync_all()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// What was in flight, as written to the journal before the swap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    /// The manifest being swapped.
    pub manifest: ManifestName,
    /// The revision being installed.
    pub target_revision: String,
    /// The backup of the previous manifest, relative to the state directory; `None`
    /// when there was no manifest before.
    pub backup: Option<String>,
}

/// The outcome of [`ManifestStore::install`].
#[derive(Debug, PartialEq, Eq)]
pub enum Installed {
    /// The manifest already had this content; nothing was touched.
    AlreadyCurrent,
    /// The new manifest is in place; verify it, then `commit` or `rollback`.
    Swapped(Journal),
}

/// What a restarted agent finds.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing was in flight.
    Idle,
    /// A swap had started but the new file never replaced the old one; the journal
    /// is cleared and the node runs what it ran before.
    NotSwapped(Journal),
    /// The new file is in place but its outcome was never recorded: verify it
    /// again, then `commit` or `rollback`.
    Swapped(Journal),
}

/// A node's static-pod directory and the agent's state directory beside it.
#[derive(Clone, Debug)]
pub struct ManifestStore<F: Fs = RealFs> {
    manifest_dir: PathBuf,
    state_dir: PathBuf,
    history: usize,
    fs: F,
}

const JOURNAL: &str = "upgrade.json";

impl<F: Fs> ManifestStore<F> {
    /// A store over `manifest_dir` keeping state and up to `history` backups per
    /// manifest in `state_dir`, which must not be inside `manifest_dir`.
    pub fn new(manifest_dir: &Path, state_dir: &Path, history: usize, fs: F) -> Result<Self> {
        if state_dir.starts_with(manifest_dir) {
            return Err(SwapError::Io {
                action: "use as the state directory",
                path: state_dir.into(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "it is inside the manifest directory, where the kubelet would run the backups",
                ),
            });
        }
        for dir in [manifest_dir, state_dir] {
            std::fs::create_dir_all(dir).map_err(|source| SwapError::Io {
                action: "create",
                path: dir.into(),
                source,
            })?;
        }
        Ok(Self {
            manifest_dir: manifest_dir.into(),
            state_dir: state_dir.into(),
            history: history.max(1),
            fs,
        })
    }

    /// `<manifest dir>/<name>.yaml`.
    pub fn manifest_path(&self, name: &ManifestName) -> PathBuf {
        self.manifest_dir.join(name.file_name())
    }

    /// The manifest's current text, if there is one.
    pub fn read(&self, name: &ManifestName) -> Result<Option<String>> {
        read_optional(&self.manifest_path(name))
    }

    /// Installs `content` (revision `target`) as manifest `name`: backup, journal,
    /// atomic swap. A repeated request for what is already on disk does nothing.
    pub fn install(
        &self,
        name: &ManifestName,
        target: &Revision,
        content: &str,
    ) -> Result<Installed> {
        let current = self.read(name)?;
        if current.as_deref() == Some(content) {
            return Ok(Installed::AlreadyCurrent);
        }
        let backup = match &current {
            Some(old) => Some(self.back_up(name, old)?),
            None => None,
        };
        let journal = Journal {
            manifest: name.clone(),
            target_revision: target.to_string(),
            backup,
        };
        let text = serde_json::to_vec_pretty(&journal).map_err(|e| SwapError::Journal {
            path: self.state_dir.join(JOURNAL),
            reason: e.to_string(),
        })?;
        self.write_atomic(&self.state_dir, JOURNAL, &text)?;
        self.write_atomic(&self.manifest_dir, &name.file_name(), content.as_bytes())?;
        Ok(Installed::Swapped(journal))
    }

    /// The new manifest proved itself: forget the journal (the backup stays in history).
    pub fn commit(&self, _journal: &Journal) -> Result<()> {
        self.clear_journal()
    }

    /// Puts the previous manifest back atomically (or removes the manifest if there
    /// was none), then forgets the journal.
    pub fn rollback(&self, journal: &Journal) -> Result<()> {
        let name = &journal.manifest;
        match &journal.backup {
            Some(backup) => {
                let path = self.state_dir.join(backup);
                let old = read_optional(&path)?.ok_or_else(|| SwapError::Io {
                    action: "restore from",
                    path: path.clone(),
                    source: io::Error::new(io::ErrorKind::NotFound, "the backup is missing"),
                })?;
                self.write_atomic(&self.manifest_dir, &name.file_name(), old.as_bytes())?;
            }
            None => {
                let path = self.manifest_path(name);
                self.fs.remove(&path).map_err(|source| SwapError::Io {
                    action: "remove",
                    path,
                    source,
                })?;
                self.sync(&self.manifest_dir)?;
            }
        }
        self.clear_journal()
    }

    /// After a restart: removes half-written temp files and reports what was in flight.
    pub fn recover(&self) -> Result<Recovery> {
        for dir in [&self.manifest_dir, &self.state_dir] {
            self.remove_temp_files(dir)?;
        }
        let path = self.state_dir.join(JOURNAL);
        let Some(text) = read_optional(&path)? else {
            return Ok(Recovery::Idle);
        };
        let journal: Journal = serde_json::from_str(&text).map_err(|e| SwapError::Journal {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let on_disk = self.read(&journal.manifest)?;
        let before = match &journal.backup {
            Some(backup) => read_optional(&self.state_dir.join(backup))?,
            None => None,
        };
        let swapped = on_disk != before
            && on_disk
                .as_deref()
                .and_then(|text| parse_manifest(text).ok())
                .and_then(|pod| pod_revision(&pod))
                .is_some_and(|revision| revision.as_str() == journal.target_revision);
        if swapped {
            Ok(Recovery::Swapped(journal))
        } else {
            self.clear_journal()?;
            Ok(Recovery::NotSwapped(journal))
        }
    }

    /// Backups of `name`, oldest first (paths relative to the state directory).
    pub fn backups(&self, name: &ManifestName) -> Result<Vec<String>> {
        let dir = self.state_dir.join("backups").join(name.to_string());
        let mut names: Vec<String> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(SwapError::Io {
                    action: "list",
                    path: dir,
                    source,
                });
            }
        };
        names.sort();
        Ok(names
            .into_iter()
            .map(|n| format!("backups/{name}/{n}"))
            .collect())
    }

    fn back_up(&self, name: &ManifestName, old: &str) -> Result<String> {
        let dir = self.state_dir.join("backups").join(name.to_string());
        std::fs::create_dir_all(&dir).map_err(|source| SwapError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let existing = self.backups(name)?;
        // Sequence numbers keep the order; the revision says what the file was.
        let next = existing
            .last()
            .and_then(|p| p.rsplit('/').next())
            .and_then(|f| f.split('-').next())
            .and_then(|n| n.parse::<u64>().ok())
            .map_or(1, |n| n + 1);
        let revision = parse_manifest(old)
            .ok()
            .and_then(|pod| pod_revision(&pod))
            .map_or_else(|| "unknown".to_owned(), |r| r.to_string());
        let file = format!("{next:08}-{revision}.yaml");
        self.write_atomic(&dir, &file, old.as_bytes())?;
        // Bounded history: drop the oldest beyond the limit (the new one included).
        let mut all = existing;
        all.push(format!("backups/{name}/{file}"));
        let excess = all.len().saturating_sub(self.history);
        for old in &all[..excess] {
            let path = self.state_dir.join(old);
            self.fs.remove(&path).map_err(|source| SwapError::Io {
                action: "remove",
                path,
                source,
            })?;
        }
        Ok(format!("backups/{name}/{file}"))
    }

    /// Writes `dir/<file>` so that a reader sees the old or the new content, never a
    /// mix: hidden temp file, fsync, rename, fsync of the directory.
    fn write_atomic(&self, dir: &Path, file: &str, content: &[u8]) -> Result<()> {
        let tmp = dir.join(format!(".{file}.tmp"));
        let target = dir.join(file);
        // A temp file left by a crash is garbage; start clean.
        self.fs.remove(&tmp).map_err(|source| SwapError::Io {
            action: "remove",
            path: tmp.clone(),
            source,
        })?;
        self.fs
            .write_new(&tmp, content)
            .map_err(|source| SwapError::Io {
                action: "write",
                path: tmp.clone(),
                source,
            })?;
        self.fs
            .rename(&tmp, &target)
            .map_err(|source| SwapError::Io {
                action: "rename into place",
                path: target.clone(),
                source,
            })?;
        self.sync(dir)
    }

    fn clear_journal(&self) -> Result<()> {
        let path = self.state_dir.join(JOURNAL);
        self.fs.remove(&path).map_err(|source| SwapError::Io {
            action: "remove",
            path,
            source,
        })?;
        self.sync(&self.state_dir)
    }

    fn sync(&self, dir: &Path) -> Result<()> {
        self.fs.sync_dir(dir).map_err(|source| SwapError::Io {
            action: "sync",
            path: dir.into(),
            source,
        })
    }

    fn remove_temp_files(&self, dir: &Path) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(SwapError::Io {
                    action: "list",
                    path: dir.into(),
                    source,
                });
            }
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let path = entry.path();
                self.fs.remove(&path).map_err(|source| SwapError::Io {
                    action: "remove",
                    path,
                    source,
                })?;
            }
        }
        Ok(())
    }
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SwapError::Io {
            action: "read",
            path: path.into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use staticpod_api::render_manifest;
    use staticpod_api::testing::static_pod;
    use std::cell::Cell;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    struct Dirs {
        root: PathBuf,
    }

    impl Dirs {
        fn new(label: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("staticpod-swap-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).expect("root");
            Self { root }
        }
        fn manifests(&self) -> PathBuf {
            self.root.join("manifests")
        }
        fn state(&self) -> PathBuf {
            self.root.join("state")
        }
        fn store<F: Fs>(&self, fs: F) -> ManifestStore<F> {
            ManifestStore::new(&self.manifests(), &self.state(), 3, fs).expect("store")
        }
        /// What the kubelet would read: every non-hidden file in the manifest directory.
        fn visible(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.manifests())
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn revision(image: &str) -> (Revision, String) {
        let manifest = render_manifest(&static_pod("nginx", image)).expect("render");
        (manifest.revision, manifest.yaml)
    }

    fn name() -> ManifestName {
        ManifestName::new("nginx").expect("name")
    }

    #[test]
    fn install_commit_keeps_the_new_file_and_a_backup_of_the_old() {
        let dirs = Dirs::new("commit");
        let store = dirs.store(RealFs);
        let (_, old) = revision("nginx:1.19.1");
        let (rev_b, new) = revision("nginx:1.19.2");
        std::fs::create_dir_all(dirs.manifests()).expect("dir");
        std::fs::write(dirs.manifests().join("nginx.yaml"), &old).expect("seed");

        let Installed::Swapped(journal) = store.install(&name(), &rev_b, &new).expect("install")
        else {
            panic!("expected a swap");
        };
        assert_eq!(
            store.read(&name()).expect("read").as_deref(),
            Some(new.as_str())
        );
        assert_eq!(
            store.recover().expect("recover"),
            Recovery::Swapped(journal.clone())
        );
        store.commit(&journal).expect("commit");
        assert_eq!(store.recover().expect("recover"), Recovery::Idle);
        let backups = store.backups(&name()).expect("backups");
        assert_eq!(backups.len(), 1);
        assert_eq!(
            std::fs::read_to_string(dirs.state().join(&backups[0])).expect("backup"),
            old
        );
        assert_eq!(dirs.visible(), ["nginx.yaml"]);

        assert_eq!(
            store.install(&name(), &rev_b, &new).expect("again"),
            Installed::AlreadyCurrent
        );
        assert_eq!(
            store.backups(&name()).expect("backups").len(),
            1,
            "a repeated request touches nothing"
        );
    }

    #[test]
    fn rollback_restores_the_previous_file_or_removes_a_first_install() {
        let dirs = Dirs::new("rollback");
        let store = dirs.store(RealFs);
        let (rev_a, old) = revision("nginx:1.19.1");
        let (rev_b, new) = revision("nginx:1.19.2");

        let Installed::Swapped(first) = store.install(&name(), &rev_a, &old).expect("install")
        else {
            panic!("expected a swap");
        };
        assert_eq!(first.backup, None);
        store.rollback(&first).expect("rollback");
        assert_eq!(store.read(&name()).expect("read"), None);
        assert!(dirs.visible().is_empty());

        let Installed::Swapped(j) = store.install(&name(), &rev_a, &old).expect("install") else {
            panic!()
        };
        store.commit(&j).expect("commit");
        let Installed::Swapped(j) = store.install(&name(), &rev_b, &new).expect("install") else {
            panic!()
        };
        store.rollback(&j).expect("rollback");
        assert_eq!(
            store.read(&name()).expect("read").as_deref(),
            Some(old.as_str())
        );
        assert_eq!(store.recover().expect("recover"), Recovery::Idle);
    }

    #[test]
    fn backup_history_is_bounded() {
        let dirs = Dirs::new("history");
        let store = dirs.store(RealFs);
        for patch in 0..6 {
            let (rev, text) = revision(&format!("nginx:1.19.{patch}"));
            if let Installed::Swapped(j) = store.install(&name(), &rev, &text).expect("install") {
                store.commit(&j).expect("commit");
            }
        }
        let backups = store.backups(&name()).expect("backups");
        assert_eq!(backups.len(), 3, "{backups:?}");
        let (rev_4, _) = revision("nginx:1.19.4");
        assert!(
            backups[2].ends_with(&format!("-{rev_4}.yaml")),
            "{backups:?}"
        );
    }

    #[test]
    fn names_that_could_escape_the_directory_are_refused() {
        for bad in ["../x", "a/b", ".hidden", "..", "", "UPPER", "/etc/passwd"] {
            assert!(
                matches!(ManifestName::new(bad), Err(SwapError::BadName(_))),
                "{bad:?}"
            );
        }
        let from_json: std::result::Result<Journal, _> = serde_json::from_str(
            r#"{"manifest":"../../etc/x","targetRevision":"0123456789","backup":null}"#,
        );
        assert!(
            from_json.is_err(),
            "a tampered journal cannot name a path either"
        );
    }

    #[test]
    fn the_state_directory_may_not_be_inside_the_manifest_directory() {
        let dirs = Dirs::new("inside");
        let inside = dirs.manifests().join("state");
        assert!(ManifestStore::new(&dirs.manifests(), &inside, 3, RealFs).is_err());
    }

    /// A filesystem that dies at its `crash_at`-th operation, as the agent would on
    /// `kill -9` or a power cut: no error path runs afterwards. A write that dies
    /// leaves half of its bytes behind.
    struct Crashing {
        crash_at: usize,
        done: Cell<usize>,
    }

    impl Crashing {
        fn step(&self) -> bool {
            let n = self.done.get();
            self.done.set(n + 1);
            n == self.crash_at
        }
    }

    impl Fs for Crashing {
        fn write_new(&self, path: &Path, content: &[u8]) -> io::Result<()> {
            if self.step() {
                std::fs::write(path, &content[..content.len() / 2]).expect("torn write");
                panic!("crash while writing {}", path.display());
            }
            RealFs.write_new(path, content)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            if self.step() {
                panic!("crash before renaming {}", from.display());
            }
            RealFs.rename(from, to)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            if self.step() {
                panic!("crash before syncing {}", dir.display());
            }
            RealFs.sync_dir(dir)
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            if self.step() {
                panic!("crash before removing {}", path.display());
            }
            RealFs.remove(path)
        }
    }

    #[test]
    fn a_crash_at_any_step_leaves_the_old_or_the_new_manifest_and_recovery_finishes_the_job() {
        let (rev_a, old) = revision("nginx:1.19.1");
        let (rev_b, new) = revision("nginx:1.19.2");
        let mut crash_at = 0;
        loop {
            let dirs = Dirs::new(&format!("crash-{crash_at}"));
            let setup = dirs.store(RealFs);
            let Installed::Swapped(j) = setup.install(&name(), &rev_a, &old).expect("seed") else {
                panic!()
            };
            setup.commit(&j).expect("seed commit");

            let crashing = dirs.store(Crashing {
                crash_at,
                done: Cell::new(0),
            });
            let outcome =
                catch_unwind(AssertUnwindSafe(|| crashing.install(&name(), &rev_b, &new)));
            let crashed = outcome.is_err();

            // The kubelet's view right after the crash: one complete manifest.
            let on_disk =
                std::fs::read_to_string(dirs.manifests().join("nginx.yaml")).expect("manifest");
            assert!(
                on_disk == old || on_disk == new,
                "torn manifest after a crash at step {crash_at}"
            );
            assert!(
                dirs.visible()
                    .iter()
                    .all(|f| f == "nginx.yaml" || f.starts_with('.')),
                "step {crash_at}: {:?}",
                dirs.visible()
            );

            // The restarted agent.
            let store = dirs.store(RealFs);
            match store.recover().expect("recover") {
                Recovery::Swapped(journal) => {
                    assert_eq!(on_disk, new, "step {crash_at}");
                    assert_eq!(journal.target_revision, rev_b.to_string());
                    store.rollback(&journal).expect("rollback after recovery");
                    assert_eq!(
                        store.read(&name()).expect("read").as_deref(),
                        Some(old.as_str())
                    );
                }
                Recovery::NotSwapped(_) | Recovery::Idle => {
                    assert_eq!(
                        store.read(&name()).expect("read").as_deref(),
                        Some(on_disk.as_str())
                    );
                }
            }
            assert_eq!(
                dirs.visible(),
                ["nginx.yaml"],
                "step {crash_at}: temp files cleaned up"
            );
            assert_eq!(store.recover().expect("second recovery"), Recovery::Idle);

            if !crashed {
                assert!(crash_at > 5, "the swap has more than a handful of steps");
                eprintln!("the swap survived a crash at each of its {crash_at} steps");
                break;
            }
            crash_at += 1;
        }
    }
}
