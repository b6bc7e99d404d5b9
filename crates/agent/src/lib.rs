//! The agent: everything a front end needs to run Tidemark in the
//! background and browse its backups. It owns the settings (TOML in the OS
//! config folder), secrets (the desktop's Secret Service, or a 0600 file the user chose
//! where none is reachable),
//! the schedule with pause and retry, the backup and restore jobs, the
//! timeline queries and a typed event stream.
//!
//! The desktop app and the CLI are thin shells over this crate. It must not
//! know about Tauri, windows, trays or terminals: it reports typed values
//! and leaves every label to the front end.

mod config;
pub mod continuous;
pub mod device;
mod error;
pub mod jobs;
mod memory;
pub mod network;
pub mod open;
mod paths;
pub mod schedule;
pub mod secrets;
mod service;
mod status;
pub mod timeline;
pub mod update;
pub mod versions;
mod worker;
pub mod zero_touch;

pub use config::{default_excludes, default_folders, Config, Destination, Retention};
pub use error::{AgentError, Result};
pub use paths::Paths;
pub use service::{
    username, Agent, Conflict, OtherDevice, Overview, OwnStorageSetup, PasswordEntry,
    PasswordState, RestoreRequest, RestoreTarget, SetupDone, Timing, Watching,
};
pub use status::{BackupDone, Event, EventSink, Progress, Status};
