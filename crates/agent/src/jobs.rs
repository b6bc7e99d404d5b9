//! The jobs the agent runs for every front end: a backup that recovers from
//! a server that pruned data this device believed stored, and a restore to
//! the original place or a chosen folder.

use crate::error::Result;
use repository::Repository;
use snapshot::{BackupOptions, BackupReport, Progress, SnapshotError};
use std::sync::Arc;

/// Runs one backup. When the company server says chunks this device
/// believed stored are gone (server-side retention pruned them), forgets
/// the local index and backs up again trusting nothing, so the missing data
/// is sent instead of the backup failing forever.
pub fn backup(
    repo: &Arc<Repository>,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    match snapshot::backup(repo, opts, progress) {
        Err(SnapshotError::Repo(repository::RepoError::RemoteMissingChunks(m))) => {
            tracing::warn!("{m}; asking the server about every chunk and backing up again");
            repo.forget_local_index()?;
            let again = BackupOptions {
                force: true,
                ..opts.clone()
            };
            Ok(snapshot::backup(repo, &again, progress)?)
        }
        other => Ok(other?),
    }
}
