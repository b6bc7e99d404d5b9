//! File-system change watching for continuous protection: the agent watches
//! the user's protected folders and turns bursts of changes into small
//! incremental backups.
//!
//! It owns the platform watcher (notify's recommended one: inotify on Linux),
//! debouncing changes into batches ([`WatchOptions::quiet`],
//! [`WatchOptions::max_delay`]), ignoring editor temp and lock files
//! ([`is_temp_name`]), and the "what changed" set ([`Changes`]): folders to
//! re-list and subtrees to walk. It must not know about repositories,
//! snapshots, schedules or any front end (Tauri, the terminal), and it
//! depends on no other workspace crate: the backup's exclusion rules come in
//! as a closure, and what a batch means is the caller's business.
//!
//! The classification rules are written on the `accumulate` module, where
//! the pure logic lives: events and a clock reading in, batches out.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use notify::{Config, RecommendedWatcher, RecursiveMode, Watcher as _};

mod accumulate;
mod changes;
mod health;
mod temp;

use accumulate::{Accumulator, SystemProbe};
pub use changes::Changes;
pub use health::{Health, Problem};
pub use temp::is_temp_name;

/// Default [`WatchOptions::quiet`]: long enough that a save (temp file,
/// fsync, rename, a second write) lands in one batch, short enough that the
/// backup starts while the user still remembers the change.
pub const DEFAULT_QUIET: Duration = Duration::from_secs(3);
/// Default [`WatchOptions::max_delay`]: an editor saving every second or a
/// build writing thousands of files gives three batches a minute, so a saved
/// file is protected within a minute however busy the folder stays.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(20);

/// How changes are batched and which ones count.
#[derive(Clone)]
pub struct WatchOptions {
    /// A batch is due once no event came for this long (default 3 s) ...
    pub quiet: Duration,
    /// ... or this long after the batch's first event, even while events keep coming (default 20 s),
    /// so an editor saving every second or a build writing thousands of files gives one batch per
    /// max_delay, never one per write, and a saved file is still protected within a minute.
    pub max_delay: Duration,
    /// Paths the backup excludes: events under them do not count. Args: (path, is_dir).
    /// Called for the path of each event and every folder between it and its
    /// root, on the watcher's thread: keep it cheap (string work, no I/O).
    pub excluded: ExcludeFn,
}

/// The backup's exclusion rules as [`WatchOptions::excluded`] takes them:
/// `(path, is_dir) -> excluded`.
pub type ExcludeFn = Arc<dyn Fn(&Path, bool) -> bool + Send + Sync>;

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            quiet: DEFAULT_QUIET,
            max_delay: DEFAULT_MAX_DELAY,
            excluded: Arc::new(|_, _| false),
        }
    }
}

impl fmt::Debug for WatchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchOptions")
            .field("quiet", &self.quiet)
            .field("max_delay", &self.max_delay)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {}: it does not exist", path.display())]
    RootNotFound { path: PathBuf },
    #[error("cannot watch {}: it is not a folder", path.display())]
    NotAFolder { path: PathBuf },
    #[error("cannot watch {}: {source}", path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The platform watcher could not start (e.g. the per-user limit of
    /// inotify instances, `fs.inotify.max_user_instances`, is reached).
    #[error("cannot start watching {}: {source}", path.display())]
    Start {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// What the notify threads and the waiters share.
struct Shared {
    acc: Mutex<Accumulator>,
    /// Signalled when a batch starts: the only moment its due time can move
    /// earlier (later events only push `quiet` further out, and `max_delay`
    /// runs from the first event).
    started: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Accumulator> {
        // The accumulator holds plain sets: a panic elsewhere while holding
        // the lock leaves nothing half-updated that matters more than losing
        // every later change would.
        self.acc.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called on notify's thread for every event of the watcher of `roots[root]`.
    fn feed(&self, root: usize, result: notify::Result<notify::Event>) {
        let now = Instant::now();
        let mut acc = self.lock();
        let was_empty = acc.is_empty();
        match result {
            Ok(event) => acc.event(root, &event, now),
            Err(error) => acc.error(root, &error, now),
        }
        if was_empty && !acc.is_empty() {
            self.started.notify_all();
        }
    }
}

/// Watches roots recursively and hands out batches of [`Changes`].
///
/// Dropping it stops watching. Memory is the pending folder sets only, never
/// per-file state; while nothing changes no thread of it wakes up.
pub struct Watcher {
    shared: Arc<Shared>,
    /// Kept for their `Drop`, which stops their threads.
    _watchers: Vec<RecommendedWatcher>,
}

impl Watcher {
    /// Starts watching every root recursively (one notify watcher per root, so an overflow is
    /// attributed to its root). Roots that do not exist are an error naming the path.
    ///
    /// Folders below a root that cannot be watched (permissions, the watch
    /// limit) are no error: [`Watcher::health`] names them. Changes from
    /// before this call are the caller's business (its first full scan).
    /// Paths in batches, and those given to [`WatchOptions::excluded`], are
    /// absolute: a relative root is taken from the current folder.
    pub fn start(roots: &[PathBuf], opts: WatchOptions) -> Result<Watcher, WatchError> {
        let mut absolute = Vec::with_capacity(roots.len());
        for root in roots {
            absolute.push(check_root(root)?);
        }
        let acc = Accumulator::new(
            absolute.clone(),
            opts.quiet,
            opts.max_delay,
            opts.excluded,
            Box::new(SystemProbe),
        );
        let shared = Arc::new(Shared {
            acc: Mutex::new(acc),
            started: Condvar::new(),
        });
        let mut watchers = Vec::with_capacity(absolute.len());
        for (i, root) in absolute.iter().enumerate() {
            let to = Arc::clone(&shared);
            let handler = move |result: notify::Result<notify::Event>| to.feed(i, result);
            // Symlinks are not followed: the backup stores them as links, and
            // following them would watch (and spend watches on) folders
            // outside the roots.
            let config = Config::default().with_follow_symlinks(false);
            let mut watcher =
                RecommendedWatcher::new(handler, config).map_err(|source| WatchError::Start {
                    path: roots[i].clone(),
                    source,
                })?;
            let mut failed = |path: &Path, error: &notify::Error| {
                shared.lock().watch_failed(path, error);
            };
            match watch_tree(&mut watcher, root, true, &mut failed) {
                Ok(()) => {}
                Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                    shared.lock().watch_limit(i);
                }
                Err(source) => {
                    return Err(WatchError::Start {
                        path: roots[i].clone(),
                        source,
                    })
                }
            }
            watchers.push(watcher);
        }
        Ok(Watcher {
            shared,
            _watchers: watchers,
        })
    }

    /// Waits up to `timeout` for a due batch and takes it (returns None if none became due).
    pub fn next_batch(&self, timeout: Duration) -> Option<Changes> {
        // `None` when the timeout reaches past what `Instant` can hold: wait
        // for a batch however long it takes.
        let deadline = Instant::now().checked_add(timeout);
        let mut acc = self.shared.lock();
        loop {
            let now = Instant::now();
            if let Some(batch) = acc.take_due(now) {
                return Some(batch);
            }
            // Sleep until the batch is due or the caller's deadline, not a
            // tick: an idle watcher costs no CPU.
            let wake = match (acc.due_at(), deadline) {
                (Some(due), Some(end)) => Some(due.min(end)),
                (due, end) => due.or(end),
            };
            acc = match wake {
                Some(wake) => {
                    if deadline.is_some_and(|end| now >= end) {
                        return None;
                    }
                    let wait = wake.saturating_duration_since(now);
                    let (guard, _) = self
                        .shared
                        .started
                        .wait_timeout(acc, wait)
                        .unwrap_or_else(PoisonError::into_inner);
                    guard
                }
                None => self
                    .shared
                    .started
                    .wait(acc)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// Takes whatever is pending now, due or not (e.g. before a scheduled full scan, which covers it).
    pub fn take(&self) -> Changes {
        self.shared.lock().take()
    }

    /// Health for a status line: number of watched roots, and problems (e.g. "the system's limit of
    /// inotify watches (fs.inotify.max_user_watches = N) is reached under /x: changes there are
    /// caught by the periodic scan only; raise the limit with sysctl"), so the user is told.
    pub fn health(&self) -> Health {
        self.shared.lock().health()
    }
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("health", &self.health())
            .finish_non_exhaustive()
    }
}

/// The root as notify will report it (absolute: notify joins relative paths
/// onto the current folder), after checking it is a folder.
fn check_root(root: &Path) -> Result<PathBuf, WatchError> {
    let io = |source| WatchError::Root {
        path: root.to_path_buf(),
        source,
    };
    match std::fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(WatchError::RootNotFound {
            path: root.to_path_buf(),
        }),
        Err(e) => Err(io(e)),
        Ok(m) if !m.is_dir() => Err(WatchError::NotAFolder {
            path: root.to_path_buf(),
        }),
        Ok(_) => std::path::absolute(root).map_err(io),
    }
}

/// What [`watch_tree`] needs of a platform watcher, so tests can fake one.
trait AddWatch {
    /// notify's recursive watch of `dir`: stops at the first folder it cannot
    /// watch, with an error naming that folder where the platform says.
    fn add_recursive(&mut self, dir: &Path) -> notify::Result<()>;
}

impl AddWatch for RecommendedWatcher {
    fn add_recursive(&mut self, dir: &Path) -> notify::Result<()> {
        self.watch(dir, RecursiveMode::Recursive)
    }
}

/// Watches `dir` and everything below it, working around one folder that
/// cannot be watched: notify's recursive walk stops there and leaves the rest
/// of the walk unwatched, so on such an error below `dir` each subfolder is
/// watched on its own (what was already watched is watched again at no cost
/// but the walk). Folders that cannot be watched go to `failed`; the watch
/// limit is returned, since every further folder would fail the same way.
fn watch_tree(
    w: &mut impl AddWatch,
    dir: &Path,
    is_root: bool,
    failed: &mut dyn FnMut(&Path, &notify::Error),
) -> notify::Result<()> {
    let error = match w.add_recursive(dir) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if matches!(error.kind, notify::ErrorKind::MaxFilesWatch) {
        return Err(error);
    }
    match error.paths.first() {
        // A folder below `dir` failed: `dir` and the folders walked before
        // that one are watched, those after it are not.
        Some(bad) if bad != dir => {
            let children = match std::fs::read_dir(dir) {
                Ok(children) => children,
                Err(e) => {
                    failed(dir, &notify::Error::io(e));
                    return Ok(());
                }
            };
            for child in children.flatten() {
                // `file_type` does not follow symlinks, as the watch does not.
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    watch_tree(w, &child.path(), false, failed)?;
                }
            }
            Ok(())
        }
        // `dir` itself failed (or the platform does not say which folder).
        // The root was checked a moment ago: failing it is the caller's error.
        _ if is_root => Err(error),
        // Gone since it was listed: nothing to watch.
        _ if matches!(error.kind, notify::ErrorKind::PathNotFound) => Ok(()),
        _ => {
            failed(dir, &error);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// notify's recursive watch, over a real tree: a depth-first walk that
    /// stops at the first denied folder, or when the limit is reached.
    struct FakeWatcher {
        denied: BTreeSet<PathBuf>,
        limit: usize,
        watched: BTreeSet<PathBuf>,
    }

    impl FakeWatcher {
        fn walk(&mut self, dir: &Path) -> notify::Result<()> {
            if self.denied.contains(dir) {
                let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
                return Err(notify::Error::io(denied).add_path(dir.to_path_buf()));
            }
            if !self.watched.contains(dir) && self.watched.len() >= self.limit {
                return Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch)
                    .add_path(dir.to_path_buf()));
            }
            self.watched.insert(dir.to_path_buf());
            let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(notify::Error::io)?
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            children.sort();
            for c in children {
                self.walk(&c)?;
            }
            Ok(())
        }
    }

    impl AddWatch for FakeWatcher {
        fn add_recursive(&mut self, dir: &Path) -> notify::Result<()> {
            self.walk(dir)
        }
    }

    fn tree() -> (tempfile::TempDir, Vec<PathBuf>) {
        let t = tempfile::tempdir().unwrap();
        let dirs = ["a", "a/b", "c", "c/d", "c/d/e", "c/f", "g"]
            .iter()
            .map(|d| t.path().join(d))
            .collect::<Vec<_>>();
        for d in &dirs {
            std::fs::create_dir_all(d).unwrap();
        }
        (t, dirs)
    }

    #[test]
    fn a_folder_that_cannot_be_watched_does_not_cost_the_rest_of_the_tree() {
        let (t, dirs) = tree();
        let denied = t.path().join("c/d");
        let mut w = FakeWatcher {
            denied: [denied.clone()].into(),
            limit: usize::MAX,
            watched: BTreeSet::new(),
        };
        let mut failures = Vec::new();
        let mut failed = |p: &Path, _: &notify::Error| failures.push(p.to_path_buf());
        watch_tree(&mut w, t.path(), true, &mut failed).unwrap();
        assert_eq!(failures, vec![denied.clone()]);
        let mut expected: BTreeSet<PathBuf> = dirs.into_iter().collect();
        expected.insert(t.path().to_path_buf());
        expected.remove(&denied);
        expected.remove(&t.path().join("c/d/e"));
        assert_eq!(
            w.watched, expected,
            "c/f and g are watched although c/d failed"
        );
    }

    #[test]
    fn the_watch_limit_stops_watching_and_is_returned() {
        let (t, _) = tree();
        let mut w = FakeWatcher {
            denied: BTreeSet::new(),
            limit: 3,
            watched: BTreeSet::new(),
        };
        let mut failed = |p: &Path, e: &notify::Error| panic!("{}: {e}", p.display());
        let e = watch_tree(&mut w, t.path(), true, &mut failed).unwrap_err();
        assert!(matches!(e.kind, notify::ErrorKind::MaxFilesWatch));
        assert_eq!(w.watched.len(), 3);
    }

    #[test]
    fn a_root_that_cannot_be_watched_is_an_error() {
        let (t, _) = tree();
        let mut w = FakeWatcher {
            denied: [t.path().to_path_buf()].into(),
            limit: usize::MAX,
            watched: BTreeSet::new(),
        };
        let mut failed = |p: &Path, e: &notify::Error| panic!("{}: {e}", p.display());
        assert!(watch_tree(&mut w, t.path(), true, &mut failed).is_err());
    }

    #[test]
    fn watcher_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Watcher>();
    }
}
