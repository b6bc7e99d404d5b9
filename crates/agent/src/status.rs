//! What the agent tells front ends: a status snapshot and a serde-tagged
//! stream of events. Typed values only; labels and formatting belong to the
//! tray, the UI and the CLI.

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Progress of a running backup or restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Progress {
    pub files_done: u64,
    pub bytes_done: u64,
    /// Known once the quick scan finished; the UI shows an ETA from it.
    pub bytes_total: Option<u64>,
    pub started: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// No destination chosen yet: the app shows the first-run setup.
    NotConfigured,
    Idle {
        last_backup: Option<DateTime<Utc>>,
        next_backup: Option<DateTime<Utc>>,
    },
    BackingUp {
        progress: Progress,
    },
    Restoring {
        progress: Progress,
    },
    Paused {
        until: DateTime<Utc>,
        reason: crate::schedule::PauseReason,
        last_backup: Option<DateTime<Utc>>,
    },
    /// The destination is not there (an unplugged disk, no network); the
    /// agent retries by itself and loses nothing meanwhile.
    WaitingForDestination {
        message: String,
        retry_at: DateTime<Utc>,
        last_backup: Option<DateTime<Utc>>,
    },
    /// Backups fail and someone should look.
    Attention {
        /// Stable error code (`AgentError::code`).
        code: String,
        message: String,
        failures: u32,
        retry_at: Option<DateTime<Utc>>,
        last_backup: Option<DateTime<Utc>>,
    },
}

/// A finished backup, as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct BackupDone {
    pub snapshot: String,
    pub time: DateTime<Utc>,
    pub files: u64,
    pub bytes: u64,
    pub bytes_added: u64,
    pub bytes_stored: u64,
    /// Files that could not be read (the backup is still saved).
    pub unreadable: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Status {
        status: Status,
    },
    BackupFinished {
        done: BackupDone,
    },
    /// Sent when a backup failed; `failures` counts in a row, so a front
    /// end can stay quiet about one hiccup and notify on repeated ones.
    BackupFailed {
        code: String,
        message: String,
        failures: u32,
    },
    RestoreFinished {
        files: u64,
        bytes: u64,
        target: String,
        errors: u64,
    },
    RestoreFailed {
        message: String,
    },
    /// An update replaced this per-user install's `programs`; sent when
    /// nothing runs, so the front end restarts into `version` at once (the
    /// tray app and `tidemark agent` do), rather than weeks later at the
    /// next login.
    UpdateInstalled {
        version: String,
        programs: Vec<String>,
    },
}

/// Where events go. The app forwards them to its windows and the tray; the
/// tests collect them.
pub type EventSink = std::sync::Arc<dyn Fn(Event) + Send + Sync>;
