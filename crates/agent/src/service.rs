//! The running agent: one worker thread that backs up on schedule and on
//! demand, honours pauses, waits out a missing destination, and reports
//! through typed events. Front ends (the tray app, tests) call its methods
//! from any thread; nothing here knows about windows or terminals.

use crate::config::{Config, Destination};
use crate::error::{AgentError, Result};
use crate::paths::Paths;
use crate::schedule::{self, Pause, PauseReason, RunState};
use crate::status::{BackupDone, Event, EventSink, Status};
use crate::timeline;
use crate::{device, open, secrets};
use chrono::{DateTime, Utc};
use repository::Repository;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The worker looks at the clock at least this often, so a suspended
/// laptop that wakes up (a jump of the wall clock no timer sees) starts its
/// overdue backup within this time.
const TICK: Duration = Duration::from_secs(30);
/// Progress events at most this often: enough for a smooth bar.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(250);

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
    /// Where to keep the password when no Secret Service is reachable
    /// (0600): set only when the user chose it.
    pub password_file: Option<String>,
}

/// A repository password entered again (or changed) in Settings.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct PasswordEntry {
    pub password: String,
    /// Where to keep it when no Secret Service is reachable (0600): set
    /// only when the user chose it.
    pub password_file: Option<String>,
}

/// Whether this computer holds the repository password, for Settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct PasswordState {
    /// The destination is own storage, which needs a password (a company
    /// server uses the device's enrolment instead).
    pub needed: bool,
    /// "keyring", "file", or null when none is stored here.
    pub stored_in: Option<String>,
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

/// Another computer's backups, for restoring them onto this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct OtherDevice {
    pub hostname: String,
    pub snapshots: u32,
    /// Its newest snapshot: what a restore of the device takes.
    pub latest: String,
    pub latest_time: DateTime<Utc>,
    /// The folders it backed up.
    pub paths: Vec<String>,
    pub files: u64,
    pub bytes: u64,
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
    /// Continuous protection, when it is on.
    pub watching: Option<Watching>,
    /// The local search catalog's size on disk.
    pub catalog_bytes: Option<u64>,
}

/// How watching for changes goes, for the status page.
#[derive(Debug, Clone, Default, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Watching {
    pub folders: u32,
    /// Times the system's event queue overflowed (each made Tidemark look
    /// through the whole folder; nothing was lost).
    pub overflows: u64,
    /// What makes watching miss changes (caught by the periodic full scan),
    /// with what to do about it.
    pub problems: Vec<String>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) run: RunState,
    pub(crate) status: Status,
    pub(crate) quit: bool,
    /// Stops the running backup (a pause or quit).
    pub(crate) cancel: Option<Arc<AtomicBool>>,
}

/// Intervals the tests shorten.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often a missing destination is looked for again.
    pub destination_retry: chrono::Duration,
    /// The longest the worker sleeps without looking at the clock.
    pub tick: Duration,
    /// The watcher's quiet period and longest delay, when not the defaults.
    pub watch: Option<(Duration, Duration)>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            destination_retry: schedule::DESTINATION_RETRY,
            tick: TICK,
            watch: None,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) paths: Paths,
    pub(crate) timing: Timing,
    /// Events go through a channel to their own thread, so the sink never
    /// runs under the agent's lock and may call back into the agent.
    pub(crate) events: Mutex<std::sync::mpsc::Sender<Event>>,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) wake: Condvar,
    /// The open repository, kept between jobs: opening costs a key
    /// derivation (Argon2id, about a second by design).
    pub(crate) repo: Mutex<Option<(String, Arc<Repository>)>>,
    pub(crate) hostname: String,
    /// Continuous protection of the configured folders, with the settings
    /// it was started for (a change restarts it).
    pub(crate) protection: Mutex<Option<(String, Option<Arc<crate::continuous::Protection>>)>>,
    /// Why the installer's enrolment file was not used, for the setup page.
    pub(crate) enrolment_problem: Mutex<Option<String>>,
    /// Held shared while a backup writes, exclusively while a prune sweeps
    /// (see `worker::keep_tidy`).
    pub(crate) sweep: std::sync::RwLock<()>,
    /// A prune runs on its own thread.
    pub(crate) pruning: std::sync::atomic::AtomicBool,
}

/// Snapshots with their ids, oldest first.
type Snapshots = Vec<(crypto::Id, format::Snapshot)>;

pub struct Agent {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
        match crate::network::load_user_rules(&paths.config) {
            Ok(r) => crate::network::set_user_rules(r),
            Err(e) => tracing::warn!(error = %e, "your throttle rules are not used"),
        }
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
            protection: Mutex::new(None),
            enrolment_problem: Mutex::new(None),
            sweep: std::sync::RwLock::new(()),
            pruning: std::sync::atomic::AtomicBool::new(false),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name("agent".into())
            .spawn(move || crate::worker::run(&s))
            .map_err(|e| AgentError::io("agent thread", e))?;
        Ok(Agent {
            shared,
            worker: Some(worker),
        })
    }

    pub(crate) fn shared_enrolment_problem(&self) -> &Mutex<Option<String>> {
        &self.shared.enrolment_problem
    }

    /// The name this machine's snapshots and enrolments carry.
    pub fn hostname(&self) -> String {
        self.shared.hostname.clone()
    }

    pub fn paths(&self) -> &Paths {
        &self.shared.paths
    }

    pub fn status(&self) -> Status {
        lock(&self.shared.inner).status.clone()
    }

    /// How uploads are throttled right now, and why.
    pub fn network(&self) -> crate::network::NetworkStatus {
        crate::network::status()
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
        let (stored_in, password_file) =
            keep_password(&location, &s.password, s.password_file.as_deref())?;
        let mut config = self.config();
        config.password_file = password_file;
        config.destination = Some(s.destination);
        self.set_config(config)?;
        *lock(&self.shared.repo) = Some((location.clone(), Arc::new(open::with_catalog(repo))));
        Ok(SetupDone {
            location,
            password_stored_in: stored_in.into(),
            recovery_key,
        })
    }

    /// Checks `e.password` opens the configured own storage, then keeps it
    /// (replacing what was stored) so backups go on without asking: what
    /// Settings offers when the password is missing or was changed.
    pub fn enter_password(&self, e: PasswordEntry) -> Result<SetupDone> {
        let config = self.config();
        let dest = config
            .destination
            .clone()
            .ok_or(AgentError::NotConfigured)?;
        if matches!(dest, Destination::Server { .. }) {
            return Err(AgentError::Invalid(
                "a company server needs no password: this device uses its enrolment".into(),
            ));
        }
        let storage = open::open_storage(dest.location())?;
        let location = storage.location();
        let repo = Repository::open(
            storage,
            e.password.as_bytes(),
            &open::open_options(&self.shared.paths),
        )?;
        let (stored_in, password_file) =
            keep_password(&location, &e.password, e.password_file.as_deref())?;
        let mut config = config;
        config.password_file = password_file;
        self.set_config(config)?;
        *lock(&self.shared.repo) = Some((location.clone(), Arc::new(open::with_catalog(repo))));
        // Backups that failed (for want of this password, most likely) are
        // retried now rather than at the next retry time.
        let failing = lock(&self.shared.inner).run.failures > 0;
        if failing {
            self.backup_now();
        }
        Ok(SetupDone {
            location,
            password_stored_in: stored_in.into(),
            recovery_key: None,
        })
    }

    /// Whether the repository password is stored on this computer.
    pub fn password_state(&self) -> PasswordState {
        let config = self.config();
        let location = match &config.destination {
            Some(Destination::Server { .. }) | None => {
                return PasswordState {
                    needed: false,
                    stored_in: None,
                }
            }
            Some(d) => match open::open_storage(d.location()) {
                Ok(s) => s.location(),
                Err(_) => d.location().to_string(),
            },
        };
        let stored_in = match &config.password_file {
            Some(f) if Path::new(f).is_file() => Some("file".to_string()),
            _ => secrets::stored_password(&location).map(|_| "keyring".to_string()),
        };
        PasswordState {
            needed: true,
            stored_in,
        }
    }

    /// Where Tidemark suggests keeping a secret in a file (0600) when no
    /// Secret Service is reachable and the user agrees: `name` under the
    /// settings folder.
    pub fn suggested_secret_file(&self, name: &str) -> String {
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        self.shared
            .paths
            .config
            .join("secrets")
            .join(if safe.is_empty() {
                "secret".into()
            } else {
                safe
            })
            .to_string_lossy()
            .into_owned()
    }

    /// Enrols with a company server and makes it the destination.
    pub fn enroll(&self, url: &str, code: &str) -> Result<device::Enrolled> {
        self.enroll_pinned(url, code, None, None)
    }

    /// [`Agent::enroll`], keeping the device's secret in `secret_file`
    /// (0600) if no Secret Service is reachable: the user's choice.
    pub fn enroll_keeping(
        &self,
        url: &str,
        code: &str,
        secret_file: Option<String>,
    ) -> Result<device::Enrolled> {
        self.enroll_pinned(url, code, None, secret_file.as_deref().map(Path::new))
    }

    /// [`Agent::enroll`] expecting the certificate fingerprint `expect`
    /// (from a signed enrolment file) instead of trusting the first one.
    pub(crate) fn enroll_pinned(
        &self,
        url: &str,
        code: &str,
        expect: Option<String>,
        secret_file: Option<&Path>,
    ) -> Result<device::Enrolled> {
        let e = device::enroll_keeping(
            &self.shared.paths,
            url,
            code,
            &self.shared.hostname,
            expect,
            secret_file,
        )?;
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

    /// The open repository and this machine's snapshots, oldest first:
    /// what every timeline query starts from.
    fn history(&self) -> Result<(Arc<Repository>, Snapshots)> {
        let repo = self.repository()?;
        let snaps = timeline::snapshots(&repo, Some(&self.shared.hostname))?;
        Ok((repo, snaps))
    }

    /// The open repository and every snapshot in it, whatever the host:
    /// what the version catalog is kept in step with.
    fn everything(&self) -> Result<(Arc<Repository>, Snapshots)> {
        let repo = self.repository()?;
        let all = timeline::snapshots(&repo, None)?;
        Ok((repo, all))
    }

    /// This machine's snapshots, oldest first.
    pub fn snapshots(&self) -> Result<Vec<timeline::SnapshotInfo>> {
        let (_, snaps) = self.history()?;
        Ok(timeline::infos(&snaps))
    }

    pub fn list_dir(
        &self,
        snapshot: &str,
        path: &str,
        deleted: bool,
    ) -> Result<Vec<timeline::DirEntry>> {
        let (repo, all) = self.everything()?;
        let host = &self.shared.hostname;
        let mine: Snapshots = all
            .iter()
            .filter(|(_, s)| &s.hostname == host)
            .cloned()
            .collect();
        timeline::list_dir(&repo, &all, &mine, snapshot, path, deleted)
    }

    pub fn versions(&self, path: &str) -> Result<Vec<timeline::Version>> {
        let (repo, all) = self.everything()?;
        timeline::versions(&repo, &all, &self.shared.hostname, path)
    }

    pub fn search(&self, query: &str) -> Result<Vec<timeline::SearchHit>> {
        let (repo, all) = self.everything()?;
        timeline::search(&repo, &all, &self.shared.hostname, query)
    }

    pub fn preview(&self, snapshot: &str, path: &str) -> Result<timeline::Preview> {
        let (repo, snaps) = self.history()?;
        timeline::preview(&repo, &snaps, snapshot, path)
    }

    pub fn overview(&self) -> Result<Overview> {
        let (repo, snaps) = self.history()?;
        let watching = match &*lock(&self.shared.protection) {
            Some((_, Some(p))) => {
                let h = p.health();
                let mut problems: Vec<String> = h.problems.iter().map(|p| p.to_string()).collect();
                if h.problems_omitted > 0 {
                    problems.push(format!("and {} more", h.problems_omitted));
                }
                Some(Watching {
                    folders: h.roots as u32,
                    overflows: h.overflows,
                    problems,
                })
            }
            _ => None,
        };
        let catalog_bytes = crate::versions::opened(&repo)
            .and_then(|c| Ok(c.stats()?))
            .ok()
            .filter(|_| repo.cache_dir().is_some())
            .map(|s| s.bytes);
        let mut o = Overview {
            snapshots: snaps.len() as u32,
            watching,
            catalog_bytes,
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

    /// The other computers whose backups this repository (or this user's
    /// account on the company server) holds, newest backup first: what
    /// "restore from another device of mine" offers on a new laptop.
    pub fn other_devices(&self) -> Result<Vec<OtherDevice>> {
        let (_, all) = self.everything()?;
        let mut by_host: std::collections::BTreeMap<String, OtherDevice> = Default::default();
        for (id, s) in &all {
            if s.hostname == self.shared.hostname {
                continue;
            }
            let d = by_host
                .entry(s.hostname.clone())
                .or_insert_with(|| OtherDevice {
                    hostname: s.hostname.clone(),
                    snapshots: 0,
                    latest: id.to_hex(),
                    latest_time: s.time,
                    paths: s.paths.clone(),
                    files: s.summary.total_files,
                    bytes: s.summary.total_bytes,
                });
            d.snapshots += 1;
            if s.time >= d.latest_time {
                d.latest = id.to_hex();
                d.latest_time = s.time;
                d.paths = s.paths.clone();
                d.files = s.summary.total_files;
                d.bytes = s.summary.total_bytes;
            }
        }
        let mut v: Vec<OtherDevice> = by_host.into_values().collect();
        v.sort_by_key(|d| std::cmp::Reverse(d.latest_time));
        Ok(v)
    }

    /// Restores in the background; progress and the result come as events.
    /// The snapshot may be another device's (see [`Agent::other_devices`]).
    pub fn restore(&self, req: RestoreRequest) -> Result<()> {
        let (repo, snaps) = self.everything()?;
        let (_, snap) = timeline::find(&snaps, &req.snapshot)?;
        let snap = snap.clone();
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
                let progress = crate::worker::Reporter::new(shared.clone(), true);
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
        if let Some((_, Some(p))) = lock(&self.shared.protection).take() {
            p.stop();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Keeps a repository password: in the Secret Service, else (only when the
/// user chose a file) in that file, 0600. Returns "keyring" or "file" and
/// the file for the settings.
fn keep_password(
    location: &str,
    password: &str,
    file: Option<&str>,
) -> Result<(&'static str, Option<String>)> {
    match secrets::remember_password(location, password.as_bytes()) {
        Ok(()) => Ok(("keyring", None)),
        Err(AgentError::Keyring(why)) => match file {
            Some(f) => {
                secrets::write_private(Path::new(f), password.as_bytes())?;
                tracing::info!(file = f, reason = %why, "the password is kept in a file, as the user chose");
                Ok(("file", Some(f.to_string())))
            }
            None => Err(AgentError::Keyring(why)),
        },
        Err(e) => Err(e),
    }
}

/// Who runs this, for the snapshot's record (not for any access decision).
pub fn username() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

pub(crate) fn done(id: &crypto::Id, s: &format::Snapshot) -> BackupDone {
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

pub(crate) fn save_state(path: &Path, s: &RunState) {
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
    pub(crate) fn repository(&self) -> Result<Arc<Repository>> {
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
    pub(crate) fn refresh_status(&self) {
        let mut g = lock(&self.inner);
        if matches!(g.status, Status::BackingUp { .. }) && g.cancel.is_some() {
            return;
        }
        let s = crate::worker::resting_status(
            &g.config,
            &g.run,
            Utc::now(),
            self.timing.destination_retry,
        );
        self.set_status(&mut g, s);
    }

    pub(crate) fn set_status(&self, g: &mut MutexGuard<'_, Inner>, s: Status) {
        if g.status != s {
            g.status = s.clone();
            self.emit(Event::Status { status: s });
        }
    }

    pub(crate) fn emit(&self, ev: Event) {
        // Fails only once the event thread is gone (shutting down).
        let _ = lock(&self.events).send(ev);
    }
}
