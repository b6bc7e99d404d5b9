//! The running agent: one worker thread that backs up on schedule and on
//! demand, honours pauses, waits out a missing destination, and reports
//! through typed events. Front ends (the tray app, tests) call its methods
//! from any thread; nothing here knows about windows or terminals.

use crate::config::{Config, Destination};
use crate::error::{AgentError, Result};
use crate::paths::Paths;
use crate::schedule::{self, Next, Pause, PauseReason, RunState};
use crate::status::{BackupDone, Event, EventSink, Progress, Status};
use crate::timeline;
use crate::{device, jobs, open, secrets};
use chrono::{DateTime, Utc};
use repository::Repository;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The worker looks at the clock at least this often, so a suspended
/// laptop that wakes up (a jump of the wall clock no timer sees) starts its
/// overdue backup within this time.
const TICK: Duration = Duration::from_secs(30);
/// Progress events at most this often: enough for a smooth bar.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How to set up own storage in the first-run wizard.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct OwnStorageSetup {
    pub destination: Destination,
    pub password: String,
    /// Make a new repository (else open the existing one there).
    pub create: bool,
    /// Add a recovery key and hand it back to show once.
    pub recovery_key: bool,
    /// Where to keep the password when no keyring is reachable (0600).
    pub password_file: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct SetupDone {
    pub location: String,
    /// "keyring" or "file".
    pub password_stored_in: String,
    pub recovery_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Conflict {
    KeepBoth,
    Replace,
    Skip,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RestoreTarget {
    /// Where it was backed up from.
    Original,
    /// Under this folder, with the backed-up absolute path below it.
    Folder { path: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct RestoreRequest {
    pub snapshot: String,
    pub path: String,
    pub target: RestoreTarget,
    pub conflict: Conflict,
}

/// Figures for the status page.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Overview {
    pub last_backup: Option<DateTime<Utc>>,
    pub snapshots: u32,
    /// Bytes in the newest snapshot: what is protected now.
    pub bytes_protected: u64,
    /// Bytes this device's backups added to storage, after dedup and
    /// compression, summed over snapshots still kept.
    pub bytes_stored: u64,
    /// Bytes read by all backups kept: what a copy-everything backup would
    /// have stored.
    pub bytes_logical: u64,
    pub recent: Vec<BackupDone>,
}

struct Inner {
    config: Config,
    run: RunState,
    status: Status,
    quit: bool,
    /// Stops the running backup (a pause or quit).
    cancel: Option<Arc<AtomicBool>>,
}

/// Intervals the tests shorten.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often a missing destination is looked for again.
    pub destination_retry: chrono::Duration,
    /// The longest the worker sleeps without looking at the clock.
    pub tick: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            destination_retry: schedule::DESTINATION_RETRY,
            tick: TICK,
        }
    }
}

struct Shared {
    paths: Paths,
    timing: Timing,
    /// Events go through a channel to their own thread, so the sink never
    /// runs under the agent's lock and may call back into the agent.
    events: Mutex<std::sync::mpsc::Sender<Event>>,
    inner: Mutex<Inner>,
    wake: Condvar,
    /// The open repository, kept between jobs: opening costs a key
    /// derivation (Argon2id, about a second by design).
    repo: Mutex<Option<(String, Arc<Repository>)>>,
    hostname: String,
}

pub struct Agent {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking job must not take the agent down with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Agent {
    /// Loads the settings and run state and starts the worker.
    pub fn start(paths: Paths, sink: EventSink) -> Result<Agent> {
        Agent::start_with(paths, sink, Timing::default())
    }

    pub fn start_with(paths: Paths, sink: EventSink, timing: Timing) -> Result<Agent> {
        let config = Config::load(&paths.config_file())?;
        let run = load_state(&paths.state_file());
        let (tx, rx) = std::sync::mpsc::channel::<Event>();
        std::thread::Builder::new()
            .name("agent-events".into())
            .spawn(move || {
                for ev in rx {
                    sink(ev);
                }
            })
            .map_err(|e| AgentError::io("agent event thread", e))?;
        let shared = Arc::new(Shared {
            paths,
            timing,
            events: Mutex::new(tx),
            inner: Mutex::new(Inner {
                config,
                run,
                status: Status::NotConfigured,
                quit: false,
                cancel: None,
            }),
            wake: Condvar::new(),
            repo: Mutex::new(None),
            hostname: repository::hostname(),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name("agent".into())
            .spawn(move || worker(&s))
            .map_err(|e| AgentError::io("agent thread", e))?;
        Ok(Agent {
            shared,
            worker: Some(worker),
        })
    }

    pub fn paths(&self) -> &Paths {
        &self.shared.paths
    }

    pub fn status(&self) -> Status {
        lock(&self.shared.inner).status.clone()
    }

    pub fn config(&self) -> Config {
        lock(&self.shared.inner).config.clone()
    }

    /// Saves new settings and applies them at once.
    pub fn set_config(&self, config: Config) -> Result<()> {
        config.save(&self.shared.paths.config_file())?;
        let mut g = lock(&self.shared.inner);
        if g.config.destination != config.destination {
            *lock(&self.shared.repo) = None;
        }
        g.config = config;
        drop(g);
        self.shared.wake.notify_all();
        Ok(())
    }

    /// Backs up as soon as possible (also retries at once after a failure).
    pub fn backup_now(&self) {
        let mut g = lock(&self.shared.inner);
        g.run.requested = true;
        g.run.last_attempt = None;
        g.run.pause = None;
        save_state(&self.shared.paths.state_file(), &g.run);
        drop(g);
        self.shared.wake.notify_all();
    }

    /// Pauses backups until `until`; a running backup stops soon and the
    /// next one continues where it left off.
    pub fn pause(&self, until: DateTime<Utc>) {
        let mut g = lock(&self.shared.inner);
        g.run.pause = Some(Pause {
            until,
            reason: PauseReason::User,
        });
        if let Some(c) = &g.cancel {
            c.store(true, Ordering::Relaxed);
        }
        save_state(&self.shared.paths.state_file(), &g.run);
        drop(g);
        self.shared.wake.notify_all();
    }

    pub fn resume(&self) {
        let mut g = lock(&self.shared.inner);
        g.run.pause = None;
        save_state(&self.shared.paths.state_file(), &g.run);
        drop(g);
        self.shared.wake.notify_all();
    }

    /// Creates or opens own storage, keeps the password safe, and makes it
    /// the destination. Nothing is saved unless the repository opened.
    pub fn setup_own_storage(&self, s: OwnStorageSetup) -> Result<SetupDone> {
        if matches!(s.destination, Destination::Server { .. }) {
            return Err(AgentError::Invalid(
                "a company server is set up with an enrolment code".into(),
            ));
        }
        if s.password.chars().count() < 8 {
            return Err(AgentError::Invalid(
                "the password must have at least 8 characters".into(),
            ));
        }
        let storage = open::open_storage(s.destination.location())?;
        let location = storage.location();
        let opts = open::open_options(&self.shared.paths);
        let repo = if s.create {
            if storage.size(format::layout::CONFIG)?.is_some() {
                return Err(AgentError::Invalid(format!(
                    "{location} already holds a Tidemark repository: choose \"use existing\" and enter its password"
                )));
            }
            let init = repository::InitOptions {
                hostname: self.shared.hostname.clone(),
                username: username(),
                ..Default::default()
            };
            Repository::init(storage, s.password.as_bytes(), &init, &opts)?
        } else {
            Repository::open(storage, s.password.as_bytes(), &opts)?
        };
        let recovery_key = if s.recovery_key {
            let key = secrets::new_recovery_key();
            repo.add_key(
                key.as_bytes(),
                crypto::KdfParams::default(),
                &self.shared.hostname,
                "recovery",
            )?;
            Some(key)
        } else {
            None
        };
        let stored_in = match secrets::remember_password(&location, s.password.as_bytes()) {
            Ok(()) => "keyring",
            Err(e) => match &s.password_file {
                Some(f) => {
                    secrets::write_private(Path::new(f), s.password.as_bytes())?;
                    "file"
                }
                None => return Err(e),
            },
        };
        let mut config = self.config();
        config.password_file = if stored_in == "file" {
            s.password_file.clone()
        } else {
            None
        };
        config.destination = Some(s.destination);
        self.set_config(config)?;
        *lock(&self.shared.repo) = Some((location.clone(), Arc::new(open::with_catalog(repo))));
        Ok(SetupDone {
            location,
            password_stored_in: stored_in.into(),
            recovery_key,
        })
    }

    /// Enrols with a company server and makes it the destination.
    pub fn enroll(&self, url: &str, code: &str) -> Result<device::Enrolled> {
        let e = device::enroll(&self.shared.paths, url, code, &self.shared.hostname, None)?;
        let mut config = self.config();
        config.destination = Some(Destination::Server {
            url: e.server.clone(),
        });
        config.password_file = None;
        self.set_config(config)?;
        Ok(e)
    }

    /// The open repository of the configured destination.
    pub fn repository(&self) -> Result<Arc<Repository>> {
        self.shared.repository()
    }

    /// This machine's snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<timeline::SnapshotInfo>> {
        let repo = self.repository()?;
        let snaps = timeline::snapshots(&repo, Some(&self.shared.hostname))?;
        Ok(timeline::infos(&snaps))
    }

    pub fn list_dir(
        &self,
        snapshot: &str,
        path: &str,
        deleted: bool,
    ) -> Result<Vec<timeline::DirEntry>> {
        let repo = self.repository()?;
        let snaps = timeline::snapshots(&repo, Some(&self.shared.hostname))?;
        timeline::list_dir(&repo, &snaps, snapshot, path, deleted)
    }

    pub fn versions(&self, path: &str) -> Result<Vec<timeline::Version>> {
        let repo = self.repository()?;
        let snaps = timeline::snapshots(&repo, Some(&self.shared.hostname))?;
        timeline::versions(&repo, &snaps, path)
    }

    pub fn search(&self, query: &str) -> Result<Vec<timeline::SearchHit>> {
        let repo = self.repository()?;
        let snaps = timeline::snapshots(&repo, Some(&self.shared.hostname))?;
        timeline::search(&repo, &snaps, query)
    }

    pub fn preview(&self, snapshot: &str, path: &str) -> Result<timeline::Preview> {
        let repo = self.repository()?;
        let snaps = timeline::snapshots(&repo, Some(&self.shared.hostname))?;
        timeline::preview(&repo, &snaps, snapshot, path)
    }

    pub fn overview(&self) -> Result<Overview> {
        let repo = self.repository()?;
        let snaps = timeline::snapshots(&repo, Some(&self.shared.hostname))?;
        let mut o = Overview {
            snapshots: snaps.len() as u32,
            ..Default::default()
        };
        for (id, s) in &snaps {
            o.bytes_stored += s.summary.bytes_new_stored;
            o.bytes_logical += s.summary.total_bytes;
            o.last_backup = Some(s.time);
            o.bytes_protected = s.summary.total_bytes;
            o.recent.push(done(id, s));
        }
        o.recent.reverse();
        o.recent.truncate(10);
        Ok(o)
    }

    /// Restores in the background; progress and the result come as events.
    pub fn restore(&self, req: RestoreRequest) -> Result<()> {
        let repo = self.repository()?;
        let snaps = timeline::snapshots(&repo, Some(&self.shared.hostname))?;
        let snap = snaps
            .iter()
            .find(|(id, _)| id.to_hex() == req.snapshot)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| AgentError::Invalid(format!("no snapshot {}", req.snapshot)))?;
        let target = match &req.target {
            RestoreTarget::Original => PathBuf::from("/"),
            RestoreTarget::Folder { path } => {
                let p = PathBuf::from(path);
                if !p.is_absolute() {
                    return Err(AgentError::Invalid(format!(
                        "restore to an absolute folder, not {path}"
                    )));
                }
                p
            }
        };
        let opts = snapshot::RestoreOptions {
            target: target.clone(),
            conflict: match req.conflict {
                Conflict::KeepBoth => snapshot::Conflict::KeepBoth,
                Conflict::Replace => snapshot::Conflict::Overwrite,
                Conflict::Skip => snapshot::Conflict::Skip,
            },
            workers: 2,
        };
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("restore".into())
            .spawn(move || {
                let progress = Reporter::new(shared.clone(), true);
                let r = snapshot::restore(&repo, &snap.tree, &req.path, &opts, &progress);
                let ev = match r {
                    Ok(r) => Event::RestoreFinished {
                        files: r.files,
                        bytes: r.bytes,
                        target: target.to_string_lossy().into_owned(),
                        errors: r.errors.len() as u64,
                    },
                    Err(e) => Event::RestoreFailed {
                        message: e.to_string(),
                    },
                };
                shared.refresh_status();
                shared.emit(ev);
            })
            .map_err(|e| AgentError::io("restore thread", e))?;
        Ok(())
    }

    /// Stops the worker: a running backup is interrupted and resumes next
    /// time without re-sending what it stored.
    pub fn shutdown(&mut self) {
        {
            let mut g = lock(&self.shared.inner);
            g.quit = true;
            if let Some(c) = &g.cancel {
                c.store(true, Ordering::Relaxed);
            }
        }
        self.shared.wake.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn done(id: &crypto::Id, s: &format::Snapshot) -> BackupDone {
    BackupDone {
        snapshot: id.to_hex(),
        time: s.time,
        files: s.summary.total_files,
        bytes: s.summary.total_bytes,
        bytes_added: s.summary.bytes_new_raw,
        bytes_stored: s.summary.bytes_new_stored,
        unreadable: s.summary.errors,
    }
}

fn load_state(path: &Path) -> RunState {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_state(path: &Path, s: &RunState) {
    let write = || -> std::io::Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(s).unwrap_or_default())?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        // The state is a convenience (pause and last run across restarts);
        // losing it costs at most one early backup.
        tracing::warn!(error = %e, "cannot save the agent's state");
    }
}

impl Shared {
    fn repository(&self) -> Result<Arc<Repository>> {
        let config = lock(&self.inner).config.clone();
        let dest = config
            .destination
            .as_ref()
            .ok_or(AgentError::NotConfigured)?;
        let location = dest.location().to_string();
        // Checked every time, even with the repository open: a disk pulled
        // out since must read as "unavailable", and a folder backend would
        // otherwise recreate the missing path on the wrong disk.
        if let Err(e) = open::check_reachable(&location) {
            *lock(&self.repo) = None;
            return Err(e);
        }
        if let Some((loc, r)) = lock(&self.repo).as_ref() {
            if *loc == location {
                return Ok(r.clone());
            }
        }
        let password = if device::is_server(&location) {
            None
        } else {
            Some(secrets::password_for(
                &location,
                config.password_file.as_deref().map(Path::new),
            )?)
        };
        let repo = Arc::new(open::open_repository(
            &self.paths,
            &location,
            password.as_deref().map(|p| &p[..]),
            &open::open_options(&self.paths),
        )?);
        *lock(&self.repo) = Some((location, repo.clone()));
        Ok(repo)
    }

    /// Recomputes the resting status (not while a job runs) and emits it
    /// when it changed.
    fn refresh_status(&self) {
        let mut g = lock(&self.inner);
        if matches!(g.status, Status::BackingUp { .. }) && g.cancel.is_some() {
            return;
        }
        let s = resting_status(&g.config, &g.run, Utc::now(), self.timing.destination_retry);
        self.set_status(&mut g, s);
    }

    fn set_status(&self, g: &mut MutexGuard<'_, Inner>, s: Status) {
        if g.status != s {
            g.status = s.clone();
            self.emit(Event::Status { status: s });
        }
    }

    fn emit(&self, ev: Event) {
        // Fails only once the event thread is gone (shutting down).
        let _ = lock(&self.events).send(ev);
    }
}

/// The status when no job runs.
fn resting_status(
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

fn worker(s: &Arc<Shared>) {
    loop {
        let mut g = lock(&s.inner);
        if g.quit {
            return;
        }
        let now = Utc::now();
        let next = if g.config.destination.is_none() {
            Next::Idle
        } else {
            schedule::next(
                g.config.every_minutes,
                &g.run,
                now,
                s.timing.destination_retry,
            )
        };
        let resting = resting_status(&g.config, &g.run, now, s.timing.destination_retry);
        s.set_status(&mut g, resting);
        let wait = match next {
            Next::RunNow => {
                let cancel = Arc::new(AtomicBool::new(false));
                g.cancel = Some(cancel.clone());
                g.run.last_attempt = Some(now);
                let config = g.config.clone();
                drop(g);
                let result = run_backup(s, &config, cancel);
                let mut g = lock(&s.inner);
                g.cancel = None;
                record(&mut g.run, &result, now);
                save_state(&s.paths.state_file(), &g.run);
                let resting =
                    resting_status(&g.config, &g.run, Utc::now(), s.timing.destination_retry);
                s.set_status(&mut g, resting);
                drop(g);
                match result {
                    Ok(d) => s.emit(Event::BackupFinished { done: d }),
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

fn run_backup(s: &Arc<Shared>, config: &Config, cancel: Arc<AtomicBool>) -> Result<BackupDone> {
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
    let opts = snapshot::BackupOptions {
        paths: folders.clone(),
        excludes: excludes.clone(),
        hostname: s.hostname.clone(),
        username: username(),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let progress = Reporter::new(s.clone(), false);
    let report = std::thread::scope(|scope| {
        let p = &progress;
        let cancel = &cancel;
        // Sizes the job for the progress bar's ETA; cheap next to the backup
        // (metadata only) and abandoned on cancel.
        scope.spawn(move || {
            let (_, bytes) = snapshot::scan(&folders, &excludes, &|_, _| {});
            if !cancel.load(Ordering::Relaxed) {
                p.total.store(bytes, Ordering::Relaxed);
            }
        });
        jobs::backup(&repo, &opts, &progress)
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
            if !device::is_server(&repo_location(config)) {
                keep_tidy(s, &repo, config);
            }
            Ok(done(&r.id, &r.snapshot))
        }
    }
}

fn repo_location(config: &Config) -> String {
    config
        .destination
        .as_ref()
        .map(|d| d.location().to_string())
        .unwrap_or_default()
}

/// How often unused data is deleted from own storage: pruning reads every
/// tree, so once a day, not after every backup.
const PRUNE_EVERY: chrono::Duration = chrono::Duration::hours(24);

/// Applies the retention policy after a backup and prunes once a day. A
/// failure here is logged, not reported as a failed backup: the backup
/// itself is saved, and the next run tries again.
fn keep_tidy(s: &Arc<Shared>, repo: &Repository, config: &Config) {
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
    match jobs::prune(repo, &Default::default()) {
        Ok(r) => {
            tracing::info!(deleted = r.packs_deleted, "pruned unused data");
            lock(&s.inner).run.last_prune = Some(now);
        }
        Err(e) => tracing::warn!(error = %e, "cannot prune unused data"),
    }
}

/// Turns engine progress into throttled status events.
struct Reporter {
    shared: Arc<Shared>,
    restore: bool,
    files: AtomicU64,
    bytes: AtomicU64,
    total: AtomicU64,
    started: DateTime<Utc>,
    last: Mutex<Instant>,
}

impl Reporter {
    fn new(shared: Arc<Shared>, restore: bool) -> Reporter {
        let r = Reporter {
            shared,
            restore,
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total: AtomicU64::new(0),
            started: Utc::now(),
            last: Mutex::new(Instant::now() - PROGRESS_EVERY),
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
