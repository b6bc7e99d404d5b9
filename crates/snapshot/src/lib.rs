//! Files and folders to snapshots and back: the backup walk with its change
//! detection, restore with its safety rules, browsing (ls, find, diff, cat),
//! retention policies and the snapshot-level checks of verify and prune.
//!
//! This crate knows the user's files and the trees that describe them. It
//! must not know how chunks are packed or stored (that is `repository`), nor
//! any front end: progress goes through the [`Progress`] trait as typed
//! events, and errors are typed.

mod backup;
mod browse;
mod changes;
mod cutter;
mod deep;
mod error;
mod exclude;
mod node;
mod prefetch;
mod progress;
mod restore;
mod sparse;
/// Retention is about snapshot objects, not files, so it lives in `repository`
/// (where the company server can use it too); re-exported for callers here.
pub use repository::retention;
mod trees;

pub use backup::{backup, default_parent, scan_until, BackupOptions, BackupReport, ChangedFolders};
pub use browse::{
    cat, diff, ls, mark_used, resolve_path, used_blobs, verify_snapshots, DiffEntry, DiffKind,
    Listed,
};
pub use changes::{scan_changes, scope_of, ChangeScan, FolderStates};
pub use error::{FileError, FileErrorKind, SnapshotError};
pub use exclude::Excludes;
pub use progress::{FileStatus, NoProgress, Progress};
pub use restore::{restore, restore_owned, Conflict, Owners, RestoreOptions, RestoreReport};
pub use trees::TreeLoader;

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// Picks a snapshot by `latest` (newest of `host`, or of any host when
/// `host` is `None`) or by id prefix.
pub fn select_snapshot(
    repo: &repository::Repository,
    spec: &str,
    host: Option<&str>,
) -> Result<(crypto::Id, format::Snapshot)> {
    if spec == "latest" {
        let (snaps, _) = repo.list_snapshots()?;
        return snaps
            .into_iter()
            .rev()
            .find(|(_, s)| host.is_none_or(|h| s.hostname == h))
            .ok_or_else(|| SnapshotError::NoSnapshots {
                host: host.map(str::to_string),
            });
    }
    let id = repo.find_snapshot(spec)?;
    Ok((id, repo.load_snapshot(&id)?))
}
