//! What a status line tells the user about watching.

use std::fmt;
use std::path::PathBuf;

/// At most this many problems are kept: one per root for the watch limit and
/// a lost root, the rest for folders that could not be watched. Past that the
/// user has a pattern to fix (permissions of a whole area), not a list to
/// read, and memory stays bounded however many folders fail.
pub(crate) const MAX_PROBLEMS: usize = 32;

/// Health of a [`Watcher`](crate::Watcher), for a status line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Roots being watched.
    pub roots: usize,
    /// Times the kernel's event queue overflowed; each one made its root be
    /// rescanned, so nothing was lost, but frequent overflows mean
    /// `fs.inotify.max_queued_events` is too low for this machine's activity.
    pub overflows: u64,
    /// Areas where changes are caught by the periodic scan only.
    pub problems: Vec<Problem>,
    /// Problems not kept because [`Health::problems`] was full.
    pub problems_omitted: usize,
}

impl Health {
    /// Whether every change under every root is seen as it happens.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.problems_omitted == 0
    }
}

/// Something that makes watching miss changes, so the user is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The system-wide limit of inotify watches was reached under `root`:
    /// folders made after that are not watched.
    WatchLimit {
        root: PathBuf,
        /// `fs.inotify.max_user_watches` when it was reached, if readable.
        limit: Option<u64>,
    },
    /// One folder could not be watched (e.g. the user may not read it).
    WatchFailed { path: PathBuf, reason: String },
    /// The root itself was deleted or moved: its watch is gone.
    RootGone { root: PathBuf },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::WatchLimit { root, limit } => {
                let limit = limit.map_or_else(|| "unknown".to_string(), |n| n.to_string());
                write!(
                    f,
                    "the system's limit of inotify watches (fs.inotify.max_user_watches = {limit}) \
                     is reached under {}: changes there are caught by the periodic scan only; \
                     raise the limit with sysctl",
                    root.display()
                )
            }
            Problem::WatchFailed { path, reason } => write!(
                f,
                "{} cannot be watched ({reason}): changes there are caught by the periodic scan only",
                path.display()
            ),
            Problem::RootGone { root } => write!(
                f,
                "{} was deleted or moved and is no longer watched: changes there are caught by \
                 the periodic scan only",
                root.display()
            ),
        }
    }
}
