//! The pure part of watching: notify's events in, debounced batches of
//! changed folders out. Time is a parameter and the file system is behind
//! [`Probe`], so every rule here is tested with fake clocks and fake trees.
//!
//! # Classification
//!
//! An event on path `p`, reported by the watcher of root `R`:
//!
//! - `p` is not inside `R`: ignored (with one watcher per root this only
//!   happens through odd platform paths, never by design).
//! - `p`, or any folder between `p` and `R` (both included), is excluded by
//!   [`WatchOptions::excluded`](crate::WatchOptions::excluded): ignored, so an
//!   excluded `node_modules/` or `.cache/` anywhere below is silent.
//! - `p` is not a folder and [`is_temp_name`] says its name is an editor's
//!   temp or lock file: ignored. Folders are never ignored by name: their
//!   content would then be missed until the periodic scan.
//! - Pure access (open, read, close without writing): ignored. This is also
//!   what keeps the backup's own reads from triggering the next backup.
//! - Created or modified content, close after writing, metadata, deletion,
//!   rename from or to, and any kind the platform does not name: the folder
//!   holding `p` goes to [`Changes::dirs`].
//! - A folder created, or renamed or moved in (a rename's new name that is a
//!   folder now): `p` goes to [`Changes::rescan`] as well, because inotify adds
//!   the new folder's watch only after files may already be inside it.
//! - An event on `R` itself: metadata marks `R` in `dirs`; deletion or a
//!   rename of `R` makes `R` a rescan and a [`Problem::RootGone`], since its
//!   watch is gone.
//! - A lapse in events (notify's [`Flag::Rescan`](notify::event::Flag), e.g.
//!   inotify's queue overflow): its paths go to `rescan`, or `R` when it has
//!   none.
//! - Watcher errors: the watch limit (`ErrorKind::MaxFilesWatch`) rescans
//!   `R` the first time and records [`Problem::WatchLimit`]; later ones
//!   rescan only the folders they name (those were created while at the
//!   limit, and walking all of `R` in every batch would not find more).
//!   Other errors rescan the paths they name (or `R`), and a folder that
//!   could not be watched is recorded as [`Problem::WatchFailed`].
//!
//! # Debouncing
//!
//! A batch is due `quiet` after its last counted event, or `max_delay` after
//! its first one, whichever comes first. Ignored events do not count, so a
//! storm of temp files or reads never delays nor starts a batch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{ErrorKind, Event, EventKind};

use crate::changes::Changes;
use crate::health::{Health, Problem, MAX_PROBLEMS};
use crate::temp::is_temp_name;

pub(crate) use crate::ExcludeFn as Excluded;

/// Folders one batch may list before it becomes a rescan of its roots. A
/// batch touching this many folders is a bulk operation (an unpacked
/// archive, a checkout, a build); re-listing them one by one already costs a
/// good share of a walk of the root, and the cap keeps the pending set at a
/// few megabytes however wide the operation.
pub(crate) const MAX_PENDING_DIRS: usize = 20_000;

/// What the accumulator asks of the file system, so tests can fake it.
pub(crate) trait Probe: Send {
    /// Whether `path` is a folder now, not following a symlink; `false` when
    /// it is gone.
    fn is_dir(&self, path: &Path) -> bool;
    /// `fs.inotify.max_user_watches`, where there is such a thing.
    fn max_user_watches(&self) -> Option<u64>;
}

/// The real file system.
pub(crate) struct SystemProbe;

impl Probe for SystemProbe {
    fn is_dir(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
    }

    fn max_user_watches(&self) -> Option<u64> {
        if cfg!(target_os = "linux") {
            let text = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches").ok()?;
            text.trim().parse().ok()
        } else {
            None
        }
    }
}

/// What is known about a path when an event names it.
#[derive(Clone, Copy)]
enum Kind {
    File,
    Folder,
    /// Ask the [`Probe`]: notify does not say (renames, metadata, other
    /// platforms' events).
    Unknown,
}

pub(crate) struct Accumulator {
    roots: Arc<[PathBuf]>,
    quiet: Duration,
    max_delay: Duration,
    excluded: Excluded,
    probe: Box<dyn Probe>,
    pending: Changes,
    /// When the pending batch's first and last counted events came.
    first: Option<Instant>,
    last: Option<Instant>,
    overflows: u64,
    /// Per root: the watch limit was reached there.
    limit_hit: Vec<bool>,
    problems: Vec<Problem>,
    problems_omitted: usize,
}

impl Accumulator {
    pub(crate) fn new(
        roots: Vec<PathBuf>,
        quiet: Duration,
        max_delay: Duration,
        excluded: Excluded,
        probe: Box<dyn Probe>,
    ) -> Accumulator {
        Accumulator {
            limit_hit: vec![false; roots.len()],
            roots: roots.into(),
            quiet,
            max_delay,
            excluded,
            probe,
            pending: Changes::default(),
            first: None,
            last: None,
            overflows: 0,
            problems: Vec::new(),
            problems_omitted: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Counts one event from the watcher of `roots[root]`.
    pub(crate) fn event(&mut self, root: usize, event: &Event, now: Instant) {
        if root >= self.roots.len() {
            return;
        }
        if event.need_rescan() {
            self.overflows += 1;
            if event.paths.is_empty() {
                self.rescan(root, None, now);
            }
            for p in &event.paths {
                self.rescan(root, Some(p), now);
            }
            return;
        }
        let kind = match event.kind {
            // Closing a file that was written: the write may have come as
            // MODIFY events already, but on some platforms this is all there is.
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => Kind::File,
            EventKind::Access(_) => return,
            EventKind::Create(CreateKind::File) => Kind::File,
            EventKind::Create(CreateKind::Folder) => Kind::Folder,
            EventKind::Modify(ModifyKind::Data(_)) => Kind::File,
            EventKind::Remove(RemoveKind::File) => Kind::File,
            EventKind::Remove(RemoveKind::Folder) => Kind::Folder,
            // Gone, so nothing to ask; taken for a file, which at worst
            // re-lists the parent of a removed folder named like a temp file.
            EventKind::Remove(_) => Kind::File,
            // Renames (from, to, both, or unsaid), metadata, unnamed kinds.
            _ => Kind::Unknown,
        };
        // Deletion or rename of the root itself, as opposed to its metadata.
        let loses_root = matches!(
            event.kind,
            EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
        );
        // Kinds whose path names something that is here now and was not
        // before; a rename's "both" event lists the old name first.
        let arrives = |i: usize| match event.kind {
            EventKind::Create(_) => true,
            EventKind::Modify(ModifyKind::Name(RenameMode::From)) => false,
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => i > 0,
            EventKind::Modify(ModifyKind::Name(_)) => true,
            _ => false,
        };
        // Sharing the roots lets `self` be borrowed mutably below.
        let roots = Arc::clone(&self.roots);
        let top = &roots[root];
        for (i, p) in event.paths.iter().enumerate() {
            if !p.starts_with(top) {
                continue;
            }
            if p == top && loses_root {
                self.problem(Problem::RootGone { root: top.clone() });
                self.rescan(root, None, now);
                continue;
            }
            let is_dir = match kind {
                Kind::File => false,
                Kind::Folder => true,
                Kind::Unknown => self.probe.is_dir(p),
            };
            if self.is_excluded(top, p, is_dir) {
                continue;
            }
            if !is_dir && p.file_name().is_some_and(is_temp_name) {
                continue;
            }
            match p.parent() {
                Some(parent) if p != top => {
                    // A folder created, or renamed or moved in: its content
                    // may predate its watch.
                    if is_dir && arrives(i) {
                        self.pending.add_rescan(p.clone());
                    }
                    self.pending.add_dir(parent.to_path_buf());
                }
                // An event on the root itself: its own metadata changed.
                _ => self.pending.add_dir(top.clone()),
            }
            self.touch(now);
        }
        self.cap();
    }

    /// Counts an error from the watcher of `roots[root]`.
    pub(crate) fn error(&mut self, root: usize, error: &notify::Error, now: Instant) {
        if root >= self.roots.len() {
            return;
        }
        tracing::warn!(root = %self.roots[root].display(), error = %error, "file watcher error");
        if matches!(error.kind, ErrorKind::MaxFilesWatch) {
            if !self.limit_hit[root] {
                self.watch_limit(root);
                self.rescan(root, None, now);
                return;
            }
            for p in &error.paths {
                self.rescan(root, Some(p), now);
            }
            return;
        }
        if error.paths.is_empty() {
            self.rescan(root, None, now);
        }
        for p in &error.paths {
            self.problem(Problem::WatchFailed {
                path: p.clone(),
                reason: reason(&error.kind),
            });
            self.rescan(root, Some(p), now);
        }
    }

    /// Records that the watch limit is reached under `roots[root]`.
    pub(crate) fn watch_limit(&mut self, root: usize) {
        if let Some(hit) = self.limit_hit.get_mut(root) {
            *hit = true;
            let root = self.roots[root].clone();
            let limit = self.probe.max_user_watches();
            self.problem(Problem::WatchLimit { root, limit });
        }
    }

    /// Records a folder that could not be watched.
    pub(crate) fn watch_failed(&mut self, path: &Path, error: &notify::Error) {
        self.problem(Problem::WatchFailed {
            path: path.to_path_buf(),
            reason: reason(&error.kind),
        });
    }

    /// When the pending batch becomes due; `None` when nothing is pending.
    pub(crate) fn due_at(&self) -> Option<Instant> {
        let by_quiet = self.last?.checked_add(self.quiet);
        let by_max = self.first?.checked_add(self.max_delay);
        match (by_quiet, by_max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            // An absurd duration (past the end of `Instant`) never fires.
            (a, b) => a.or(b),
        }
    }

    /// Takes the pending batch if it is due at `now`.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<Changes> {
        match self.due_at() {
            Some(due) if now >= due => Some(self.take()),
            _ => None,
        }
    }

    /// Takes whatever is pending, due or not.
    pub(crate) fn take(&mut self) -> Changes {
        self.first = None;
        self.last = None;
        std::mem::take(&mut self.pending)
    }

    pub(crate) fn health(&self) -> Health {
        Health {
            roots: self.roots.len(),
            overflows: self.overflows,
            problems: self.problems.clone(),
            problems_omitted: self.problems_omitted,
        }
    }

    /// Marks `path` (or the root) for a full walk, unless excluded.
    fn rescan(&mut self, root: usize, path: Option<&PathBuf>, now: Instant) {
        let roots = Arc::clone(&self.roots);
        let top = &roots[root];
        let path = path.unwrap_or(top);
        if !path.starts_with(top) || self.is_excluded(top, path, true) {
            return;
        }
        self.pending.add_rescan(path.clone());
        self.touch(now);
    }

    /// Whether `p`, or a folder between it and `top` (both included), is excluded.
    fn is_excluded(&self, top: &Path, p: &Path, is_dir: bool) -> bool {
        // Every ancestor, not just `p`: the caller's rules name folders like
        // `node_modules/` that may sit anywhere above. A path is a handful of
        // components, so this is a few calls of string work per event.
        (self.excluded)(p, is_dir)
            || p.ancestors()
                .skip(1)
                .take_while(|a| a.starts_with(top))
                .any(|a| (self.excluded)(a, true))
    }

    /// A counted event came at `now`.
    fn touch(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// Turns a batch wider than [`MAX_PENDING_DIRS`] into rescans of its roots.
    fn cap(&mut self) {
        if self.pending.dirs.len() <= MAX_PENDING_DIRS {
            return;
        }
        let roots = Arc::clone(&self.roots);
        for top in roots.iter() {
            if self.pending.dirs.iter().any(|d| d.starts_with(top)) {
                self.pending.add_rescan(top.clone());
            }
        }
    }

    fn problem(&mut self, problem: Problem) {
        if self.problems.contains(&problem) {
            return;
        }
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        } else {
            self.problems_omitted += 1;
        }
    }
}

/// Why a watch failed, without the paths (the problem names its own).
fn reason(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::Generic(s) => s.clone(),
        ErrorKind::Io(e) => e.to_string(),
        ErrorKind::PathNotFound => "not found".into(),
        ErrorKind::WatchNotFound => "watch not found".into(),
        ErrorKind::InvalidConfig(_) => "invalid watcher configuration".into(),
        ErrorKind::MaxFilesWatch => "the limit of watches is reached".into(),
    }
}

#[cfg(test)]
#[path = "accumulate_tests.rs"]
mod tests;
