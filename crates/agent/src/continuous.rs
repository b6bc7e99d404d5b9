//! Continuous protection: the protected folders are watched, and each
//! batch of changes becomes a small backup that lists only the folders that
//! changed and takes every other subtree from the previous snapshot.
//!
//! The changes are only meaningful relative to a snapshot whose walk began
//! after the watcher started (the baseline): anything that changed before
//! the walk reached it is in that snapshot, anything after produced an
//! event. So the first backup after a start, and one every few hours (a
//! full scan, for whatever the watcher could not see: changes while the
//! agent was off, an unwatchable folder), walk everything; a failed or
//! stopped backup puts its changes back and makes the next one a full scan.

use crate::error::Result;
use crate::service::lock;
use crypto::Id;
use snapshot::{BackupOptions, ChangedFolders, Excludes};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use watcher::{Changes, Health, WatchOptions, Watcher};

/// How often a full scan runs while watching, by default.
pub const FULL_SCAN_EVERY: Duration = Duration::from_secs(6 * 3600);

/// What the next backup does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Walk every protected folder (comparing file metadata with the
    /// newest snapshot, so unchanged files are still not read).
    Full,
    /// List only these folders, relative to the baseline snapshot.
    Changes { baseline: Id, changes: Changes },
}

impl Plan {
    /// Sets the backup's parent and changed folders for this plan.
    pub fn apply(&self, opts: &mut BackupOptions) {
        if let Plan::Changes { baseline, changes } = self {
            opts.parent = Some(*baseline);
            opts.changed = Some(ChangedFolders {
                dirs: changes.dirs.clone(),
                rescan: changes.rescan.clone(),
            });
        }
    }

    pub fn is_full(&self) -> bool {
        matches!(self, Plan::Full)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Changes seen and not yet backed up.
    pending: Changes,
    /// A batch is due (the watcher's quiet period or longest delay passed).
    due: bool,
    baseline: Option<Id>,
    last_full: Option<Instant>,
}

pub struct Protection {
    watcher: Watcher,
    state: Mutex<State>,
    full_every: Duration,
    stop: AtomicBool,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Protection")
            .field("full_every", &self.full_every)
            .finish()
    }
}

impl Protection {
    /// Starts watching `folders`; changes under `excludes` never count.
    /// `timing` overrides the watcher's quiet period and longest delay.
    pub fn start(
        folders: &[PathBuf],
        excludes: &Excludes,
        full_every: Duration,
        timing: Option<(Duration, Duration)>,
    ) -> Result<Protection> {
        let excludes = excludes.clone();
        let mut opts = WatchOptions {
            excluded: Arc::new(move |p, is_dir| excludes.is_excluded(p, is_dir)),
            ..Default::default()
        };
        if let Some((quiet, max_delay)) = timing {
            opts.quiet = quiet;
            opts.max_delay = max_delay;
        }
        let watcher = Watcher::start(folders, opts).map_err(|e| {
            crate::error::AgentError::Invalid(format!("cannot watch for changes: {e}"))
        })?;
        Ok(Protection {
            watcher,
            state: Mutex::new(State::default()),
            full_every,
            stop: AtomicBool::new(false),
        })
    }

    /// Waits up to `timeout` for a batch of changes; true when one is due.
    pub fn wait(&self, timeout: Duration) -> bool {
        match self.watcher.next_batch(timeout) {
            Some(batch) => {
                let mut st = lock(&self.state);
                st.pending.merge(batch);
                st.due = true;
                true
            }
            None => false,
        }
    }

    /// A backup should run now: changes are due, or a full scan is.
    pub fn due(&self) -> bool {
        let st = lock(&self.state);
        st.due || self.full_due(&st)
    }

    fn full_due(&self, st: &State) -> bool {
        st.baseline.is_none() || st.last_full.is_none_or(|t| t.elapsed() >= self.full_every)
    }

    /// Takes what the backup about to start must do; changes that arrive
    /// while it runs are for the next one.
    pub fn plan(&self, force_full: bool) -> Plan {
        let mut st = lock(&self.state);
        st.due = false;
        let changes = std::mem::take(&mut st.pending);
        match st.baseline {
            Some(baseline) if !force_full && !self.full_due(&st) => {
                Plan::Changes { baseline, changes }
            }
            // A full walk covers every change seen so far.
            _ => Plan::Full,
        }
    }

    /// Records how the backup of `plan`, started at `started`, ended:
    /// with the snapshot it made, or without one.
    pub fn finished(&self, plan: Plan, started: Instant, snapshot: Option<Id>) {
        let mut st = lock(&self.state);
        match snapshot {
            Some(id) => {
                st.baseline = Some(id);
                if plan.is_full() {
                    st.last_full = Some(started);
                }
            }
            None => {
                // Nothing is lost: the changes wait for the next backup,
                // which walks everything to be sure.
                if let Plan::Changes { changes, .. } = plan {
                    st.pending.merge(changes);
                }
                st.baseline = None;
            }
        }
    }

    pub fn health(&self) -> Health {
        self.watcher.health()
    }

    /// Asks a thread looping on [`wait`](Self::wait) to end.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(dir: &std::path::Path) -> Protection {
        Protection::start(
            &[dir.to_path_buf()],
            &Excludes::default(),
            Duration::from_secs(3600),
            Some((Duration::from_millis(100), Duration::from_millis(500))),
        )
        .expect("watch")
    }

    #[test]
    fn first_a_full_scan_then_changes_relative_to_the_last_snapshot() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = started(dir.path());
        assert!(p.due(), "no baseline yet: a full scan is due");
        let plan = p.plan(false);
        assert_eq!(plan, Plan::Full);
        p.finished(plan, Instant::now(), Some(Id([1; 32])));
        assert!(!p.due());
        std::fs::write(dir.path().join("a.txt"), "x").expect("write");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !p.wait(Duration::from_millis(200)) {
            assert!(Instant::now() < deadline, "no batch for a written file");
        }
        assert!(p.due());
        let plan = p.plan(false);
        let Plan::Changes { baseline, changes } = &plan else {
            panic!("expected changes, got {plan:?}");
        };
        assert_eq!(*baseline, Id([1; 32]));
        assert!(changes.dirs.contains(dir.path()), "{changes:?}");
        // It failed: the changes come back, and the next backup walks all.
        p.finished(plan, Instant::now(), None);
        assert!(p.due());
        assert_eq!(p.plan(false), Plan::Full);
        p.finished(Plan::Full, Instant::now(), Some(Id([2; 32])));
        // "Back up now" always walks everything.
        assert_eq!(p.plan(true), Plan::Full);
    }

    #[test]
    fn a_full_scan_comes_due_after_its_interval() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut p = started(dir.path());
        p.full_every = Duration::from_millis(50);
        p.finished(Plan::Full, Instant::now(), Some(Id([1; 32])));
        assert!(!p.due());
        std::thread::sleep(Duration::from_millis(80));
        assert!(p.due());
        assert_eq!(p.plan(false), Plan::Full);
    }
}
