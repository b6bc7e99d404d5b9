//! The agent's worker thread: what it does when the schedule says so (back
//! up, thin, prune), how it records the outcome, and how engine progress
//! becomes throttled status events.

use crate::config::{Config, Destination};
use crate::continuous::{Plan, Protection};
use crate::error::{AgentError, Result};
use crate::jobs;
use crate::schedule::{self, Next, RunState};
use crate::service::{done, lock, save_state, username, Shared, PROGRESS_EVERY};
use crate::status::{BackupDone, Event, Progress, Status};
use chrono::{DateTime, Utc};
use repository::Repository;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The status when no job runs.
pub(crate) fn resting_status(
    config: &Config,
    run: &RunState,
    now: DateTime<Utc>,
    retry: chrono::Duration,
) -> Status {
    if config.destination.is_none() {
        return Status::NotConfigured;
    }
    let next = schedule::next(config.every_minutes, run, now, retry);
    if let (Next::Paused(until), Some(p)) = (next, run.pause) {
        return Status::Paused {
            until,
            reason: p.reason,
            last_backup: run.last_success,
        };
    }
    let retry_at = match next {
        Next::WaitUntil(t) => Some(t),
        _ => None,
    };
    if run.failures > 0 && run.destination_missing {
        return Status::WaitingForDestination {
            message: run.last_error.clone().unwrap_or_default(),
            retry_at: retry_at.unwrap_or(now),
            last_backup: run.last_success,
        };
    }
    if run.failures > 0 {
        return Status::Attention {
            code: "backup_failed".into(),
            message: run.last_error.clone().unwrap_or_default(),
            failures: run.failures,
            retry_at,
            last_backup: run.last_success,
        };
    }
    Status::Idle {
        last_backup: run.last_success,
        next_backup: retry_at,
    }
}

/// Starts, restarts or stops watching as the settings say; returns the
/// protection in force. Watching starts before the next backup's walk, so
/// that backup can serve as the baseline for the changes seen after it.
fn protection(s: &Arc<Shared>, config: &Config) -> Option<Arc<Protection>> {
    let wanted = config.continuous && config.destination.is_some();
    let key = format!(
        "{:?}|{:?}|{}|{}",
        config.folders, config.excludes, config.exclude_caches, config.full_scan_hours
    );
    let mut cur = lock(&s.protection);
    match &*cur {
        Some((k, p)) if wanted && *k == key => return p.clone(),
        _ => {}
    }
    if let Some((_, Some(old))) = cur.take() {
        old.stop();
    }
    if !wanted {
        return None;
    }
    let folders: Vec<PathBuf> = config
        .folders
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .collect();
    let started = config.excludes().and_then(|ex| {
        Protection::start(
            &folders,
            &ex,
            std::time::Duration::from_secs(u64::from(config.full_scan_hours.max(1)) * 3600),
            s.timing.watch,
        )
    });
    let p = match started {
        Ok(p) => Arc::new(p),
        Err(e) => {
            // Remembered under its key, so it is not retried every tick;
            // scheduled backups go on as without watching.
            tracing::warn!(error = %e, "not watching for changes");
            *cur = Some((key, None));
            return None;
        }
    };
    let (watching, shared) = (Arc::clone(&p), Arc::clone(s));
    let spawned = std::thread::Builder::new()
        .name("agent-watch".into())
        .spawn(move || {
            while !watching.stopped() {
                if watching.wait(std::time::Duration::from_secs(1)) {
                    shared.wake.notify_all();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "not watching for changes");
        *cur = Some((key, None));
        return None;
    }
    *cur = Some((key, Some(Arc::clone(&p))));
    Some(p)
}

pub(crate) fn run(s: &Arc<Shared>) {
    loop {
        let config = lock(&s.inner).config.clone();
        let watching = protection(s, &config);
        let mut g = lock(&s.inner);
        if g.quit {
            return;
        }
        let now = Utc::now();
        let mut next = if g.config.destination.is_none() {
            Next::Idle
        } else {
            schedule::next(
                g.config.every_minutes,
                &g.run,
                now,
                s.timing.destination_retry,
            )
        };
        // Changes seen (or a full scan due) start a backup at once, unless
        // paused or waiting out failures; the very first backup still
        // waits for the setup to ask for it.
        if matches!(next, Next::Idle | Next::WaitUntil(_))
            && g.run.failures == 0
            && g.run.last_success.is_some()
            && watching.as_ref().is_some_and(|p| p.due())
        {
            next = Next::RunNow;
        }
        let resting = resting_status(&g.config, &g.run, now, s.timing.destination_retry);
        s.set_status(&mut g, resting);
        let wait = match next {
            Next::RunNow => {
                let cancel = Arc::new(AtomicBool::new(false));
                g.cancel = Some(cancel.clone());
                g.run.last_attempt = Some(now);
                let config = g.config.clone();
                // "Back up now" and retries after a failure walk everything.
                let force_full = g.run.requested || g.run.failures > 0;
                drop(g);
                let result = run_backup(s, &config, cancel, watching.as_deref(), force_full);
                let mut g = lock(&s.inner);
                g.cancel = None;
                record(&mut g.run, &result, now);
                save_state(&s.paths.state_file(), &g.run);
                let resting =
                    resting_status(&g.config, &g.run, Utc::now(), s.timing.destination_retry);
                s.set_status(&mut g, resting);
                drop(g);
                match result {
                    Ok(d) => {
                        s.emit(Event::BackupFinished { done: d });
                        maybe_update(s, &config);
                    }
                    Err(AgentError::Cancelled) => {}
                    Err(e) => {
                        let failures = lock(&s.inner).run.failures;
                        s.emit(Event::BackupFailed {
                            code: e.code().into(),
                            message: e.to_string(),
                            failures,
                        })
                    }
                }
                // The backup and the catalog's refresh are over: what they
                // freed goes back to the system, not kept for the next one.
                crate::memory::release_free_memory();
                continue;
            }
            Next::WaitUntil(t) | Next::Paused(t) => {
                (t - now).to_std().unwrap_or_default().min(s.timing.tick)
            }
            Next::Idle => s.timing.tick,
        };
        let _unused = s.wake.wait_timeout(g, wait);
    }
}

/// Updates the run state after a backup attempt.
fn record(run: &mut RunState, result: &Result<BackupDone>, started: DateTime<Utc>) {
    match result {
        Ok(_) => {
            run.last_success = Some(started);
            run.failures = 0;
            run.last_error = None;
            run.destination_missing = false;
            run.requested = false;
        }
        // A pause or quit: nothing failed, the request stays pending.
        Err(AgentError::Cancelled) => {}
        Err(e) => {
            run.failures += 1;
            run.last_error = Some(e.to_string());
            run.destination_missing = matches!(e, AgentError::DestinationUnavailable { .. });
        }
    }
}

fn run_backup(
    s: &Arc<Shared>,
    config: &Config,
    cancel: Arc<AtomicBool>,
    watching: Option<&Protection>,
    force_full: bool,
) -> Result<BackupDone> {
    let plan = watching.map(|p| p.plan(force_full));
    let started = Instant::now();
    let result = backup_with(s, config, cancel, plan.as_ref());
    if let (Some(p), Some(plan)) = (watching, plan) {
        let id = result
            .as_ref()
            .ok()
            .and_then(|d| crypto::Id::from_hex(&d.snapshot).ok());
        p.finished(plan, started, id);
    }
    result
}

fn backup_with(
    s: &Arc<Shared>,
    config: &Config,
    cancel: Arc<AtomicBool>,
    plan: Option<&Plan>,
) -> Result<BackupDone> {
    let repo = match s.repository() {
        Ok(r) => r,
        Err(e) => {
            // The next attempt opens afresh (a disk plugged in elsewhere).
            *lock(&s.repo) = None;
            return Err(e);
        }
    };
    let folders: Vec<PathBuf> = config
        .folders
        .iter()
        .map(PathBuf::from)
        .filter(|p| {
            let there = p.exists();
            if !there {
                tracing::warn!(folder = %p.display(), "a folder to back up is missing; skipping it");
            }
            there
        })
        .collect();
    if folders.is_empty() {
        return Err(match config.folders.first() {
            Some(f) => AgentError::NoSuchFolder(f.into()),
            None => AgentError::Invalid("no folders are chosen for backup".into()),
        });
    }
    let excludes = config.excludes()?;
    let mut opts = snapshot::BackupOptions {
        paths: folders.clone(),
        excludes: excludes.clone(),
        hostname: s.hostname.clone(),
        username: username(),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let incremental = plan.is_some_and(|p| !p.is_full());
    if let Some(plan) = plan {
        plan.apply(&mut opts);
    }
    let progress = Reporter::new(s.clone(), false);
    // No prune sweeps while this backup writes; it holds the gate until
    // its retention is applied too.
    let no_sweep = s.sweep.read().unwrap_or_else(|p| p.into_inner());
    // Set when the backup returns, however it ends: the scope below would
    // otherwise wait for the sizing scan to walk the whole tree.
    let ended = AtomicBool::new(false);
    let report = std::thread::scope(|scope| {
        let (p, ended) = (&progress, &ended);
        // Sizes the job for the progress bar's ETA; cheap next to a full
        // backup (metadata only) and abandoned once the backup ends (done,
        // failed or cancelled). A backup of a few changed folders would
        // spend more on this than on itself.
        if !incremental {
            scope.spawn(move || {
                let (_, bytes) = snapshot::scan_until(&folders, &excludes, ended, &|_, _| {});
                if !ended.load(Ordering::Relaxed) {
                    p.total.store(bytes, Ordering::Relaxed);
                }
            });
        }
        let r = jobs::backup(&repo, &opts, &progress);
        ended.store(true, Ordering::Relaxed);
        r
    });
    match report {
        Err(AgentError::Snapshot(snapshot::SnapshotError::Cancelled)) => Err(AgentError::Cancelled),
        Err(e) if e.is_transient() => {
            *lock(&s.repo) = None;
            Err(e)
        }
        Err(e) => Err(e),
        Ok(r) => {
            // A company server thins by its own policy; devices may not delete.
            if !matches!(config.destination, Some(Destination::Server { .. })) {
                keep_tidy(s, &repo, config);
            }
            drop(no_sweep);
            // Searchable at once; a failure only delays it to the next query.
            if let Err(e) = crate::versions::refresh(&repo) {
                tracing::warn!(error = %e, "cannot update the version catalog");
            }
            Ok(done(&r.id, &r.snapshot))
        }
    }
}

/// How often the company server is asked for an update.
const UPDATE_EVERY: chrono::Duration = chrono::Duration::hours(6);

/// Right after a backup, the quiet moment an update may use: asks the
/// company server (at most every six hours) and installs a signed update
/// into a per-user install; a restore running meanwhile defers it.
fn maybe_update(s: &Arc<Shared>, config: &Config) {
    if !matches!(config.destination, Some(Destination::Server { .. })) {
        return;
    }
    let now = Utc::now();
    {
        let mut g = lock(&s.inner);
        if g.run
            .last_update_check
            .is_some_and(|t| now - t < UPDATE_EVERY)
        {
            return;
        }
        g.run.last_update_check = Some(now);
        save_state(&s.paths.state_file(), &g.run);
    }
    let Some(dir) = crate::update::per_user_bin_dir() else {
        return;
    };
    match crate::update::check(&s.paths, config, crate::update::VERSION) {
        Ok(Some(offer)) if lock(&s.inner).run.installed_update.as_ref() == Some(&offer.version) => {
            tracing::warn!(version = %offer.version, running = crate::update::VERSION,
                "this update was installed already, yet the program still says it is older; not installing it again");
        }
        Ok(Some(offer)) => {
            let busy = matches!(
                lock(&s.inner).status,
                Status::BackingUp { .. } | Status::Restoring { .. }
            );
            match crate::update::install(&s.paths, config, busy, &offer, &dir) {
                Ok(programs) if !programs.is_empty() => {
                    {
                        let mut g = lock(&s.inner);
                        g.run.installed_update = Some(offer.version.clone());
                        save_state(&s.paths.state_file(), &g.run);
                    }
                    s.emit(Event::UpdateInstalled {
                        version: offer.version,
                        programs,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, version = %offer.version, "update not installed")
                }
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "cannot check for updates"),
    }
}

/// How often unused data is deleted from own storage: pruning reads every
/// tree, so once a day, not after every backup.
const PRUNE_EVERY: chrono::Duration = chrono::Duration::hours(24);

/// Applies the retention policy after a backup and prunes once a day. A
/// failure here is logged, not reported as a failed backup: the backup
/// itself is saved, and the next run tries again.
///
/// The prune runs on a thread of its own, so backups go on while it reads
/// every snapshot's folders (minutes on a large repository; continuous
/// protection promises a minute). Only its sweep, after marking what the
/// snapshots committed meanwhile use, holds backups back.
fn keep_tidy(s: &Arc<Shared>, repo: &Arc<Repository>, config: &Config) {
    match jobs::thin(repo, &s.hostname, &config.retention.policy()) {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "thinned old snapshots"),
        Err(e) => tracing::warn!(error = %e, "cannot thin old snapshots"),
    }
    let last = lock(&s.inner).run.last_prune;
    let now = Utc::now();
    if last.is_some_and(|t| now - t < PRUNE_EVERY) {
        return;
    }
    if s.pruning.swap(true, Ordering::SeqCst) {
        return;
    }
    let (shared, repo) = (Arc::clone(s), Arc::clone(repo));
    let spawned = std::thread::Builder::new()
        .name("prune".into())
        .spawn(move || {
            let s = shared;
            let result = jobs::mark(&repo).and_then(|marked| {
                let _sweeping = s.sweep.write().unwrap_or_else(|p| p.into_inner());
                jobs::sweep(&repo, marked, &Default::default())
            });
            match result {
                Ok(r) => {
                    tracing::info!(deleted = r.packs_deleted, "pruned unused data");
                    let mut g = lock(&s.inner);
                    g.run.last_prune = Some(now);
                    save_state(&s.paths.state_file(), &g.run);
                }
                Err(e) => tracing::warn!(error = %e, "cannot prune unused data"),
            }
            s.pruning.store(false, Ordering::SeqCst);
            // Marking held every snapshot's folder list in memory.
            crate::memory::release_free_memory();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the prune");
        s.pruning.store(false, Ordering::SeqCst);
    }
}

/// Turns engine progress into throttled status events.
pub(crate) struct Reporter {
    shared: Arc<Shared>,
    restore: bool,
    files: AtomicU64,
    bytes: AtomicU64,
    total: AtomicU64,
    started: DateTime<Utc>,
    last: Mutex<Instant>,
}

impl Reporter {
    pub(crate) fn new(shared: Arc<Shared>, restore: bool) -> Reporter {
        let r = Reporter {
            shared,
            restore,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total: AtomicU64::new(0),
            started: Utc::now(),
            // The first progress event goes out at once (a fresh boot may
            // have no instant that far back: then it waits one period).
            last: Mutex::new(
                Instant::now()
                    .checked_sub(PROGRESS_EVERY)
                    .unwrap_or_else(Instant::now),
            ),
        };
        r.emit(true);
        r
    }

    fn emit(&self, force: bool) {
        {
            let mut last = lock(&self.last);
            if !force && last.elapsed() < PROGRESS_EVERY {
                return;
            }
            *last = Instant::now();
        }
        let total = self.total.load(Ordering::Relaxed);
        let progress = Progress {
            files_done: self.files.load(Ordering::Relaxed),
            bytes_done: self.bytes.load(Ordering::Relaxed),
            bytes_total: (total > 0).then_some(total),
            started: self.started,
        };
        let status = if self.restore {
            Status::Restoring { progress }
        } else {
            Status::BackingUp { progress }
        };
        let mut g = lock(&self.shared.inner);
        // A restore does not hide a running backup's progress.
        if self.restore && matches!(g.status, Status::BackingUp { .. }) {
            return;
        }
        self.shared.set_status(&mut g, status);
    }
}

impl snapshot::Progress for Reporter {
    fn bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        self.emit(false);
    }
    fn file_done(&self, _path: &Path, _size: u64, _status: snapshot::FileStatus) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.emit(false);
    }
}
