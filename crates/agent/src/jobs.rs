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
            // Nothing of the parent is trusted: every folder is walked and
            // every file read, so no reused subtree can name a lost chunk.
            let again = BackupOptions {
                force: true,
                changed: None,
                ..opts.clone()
            };
            Ok(snapshot::backup(repo, &again, progress)?)
        }
        other => Ok(other?),
    }
}

/// What the retention policy keeps and removes among the snapshots of
/// `host` (of every host when `None`), as of now.
pub fn retention_decisions(
    repo: &Repository,
    host: Option<&str>,
    policy: &snapshot::retention::Policy,
) -> Result<Vec<snapshot::retention::Decision>> {
    let (mut snaps, _) = repo.list_snapshots()?;
    snaps.retain(|(_, s)| host.is_none_or(|h| s.hostname == h));
    Ok(snapshot::retention::apply(
        &snaps,
        policy,
        chrono::Utc::now(),
    ))
}

/// Removes the snapshots of `host` that the retention policy does not keep;
/// returns how many. Their data stays until [`prune`].
pub fn thin(repo: &Repository, host: &str, policy: &snapshot::retention::Policy) -> Result<usize> {
    if policy.is_empty() {
        return Ok(0);
    }
    let _lock = repo.lock(true)?;
    let decisions = retention_decisions(repo, Some(host), policy)?;
    let mut removed = 0;
    for d in decisions.iter().filter(|d| !d.keep) {
        repo.delete_snapshot(&d.id)?;
        removed += 1;
    }
    Ok(removed)
}

/// Deletes data no snapshot uses. Refuses while any snapshot is unreadable:
/// its data would look unused and be deleted.
pub fn prune(
    repo: &Repository,
    opts: &repository::PruneOptions,
) -> Result<repository::PruneReport> {
    repo.load_index()?;
    let marked = mark(repo)?;
    sweep(repo, marked, opts)
}

/// What prune keeps, as the snapshots stored now reference it.
pub struct Marked {
    snapshots: std::collections::HashSet<crypto::Id>,
    used: std::collections::HashSet<crypto::Id>,
}

/// The slow half of a prune, reading every snapshot's folders; backups may
/// go on meanwhile. [`sweep`] finishes it.
pub fn mark(repo: &Repository) -> Result<Marked> {
    let snaps = readable_snapshots(repo)?;
    let loader = snapshot::TreeLoader::new(repo);
    let used = snapshot::used_blobs(&loader, &snaps)?;
    Ok(Marked {
        snapshots: snaps.into_iter().map(|(id, _)| id).collect(),
        used,
    })
}

/// The other half: marks the snapshots committed since [`mark`] (their new
/// folders only), then deletes what nothing uses. The caller makes sure no
/// backup of its own runs meanwhile; another device's backup holds the
/// repository's lock, and then the sweep is refused, not run.
pub fn sweep(
    repo: &Repository,
    mut marked: Marked,
    opts: &repository::PruneOptions,
) -> Result<repository::PruneReport> {
    repo.load_index()?;
    let new: Vec<_> = readable_snapshots(repo)?
        .into_iter()
        .filter(|(id, _)| !marked.snapshots.contains(id))
        .collect();
    let loader = snapshot::TreeLoader::new(repo);
    snapshot::mark_used(&loader, &new, &mut marked.used)?;
    Ok(repo.prune(&marked.used, opts)?)
}

fn readable_snapshots(repo: &Repository) -> Result<Vec<(crypto::Id, format::Snapshot)>> {
    let (snaps, problems) = repo.list_snapshots()?;
    if let Some(p) = problems.first() {
        return Err(crate::AgentError::Invalid(format!(
            "snapshot {} is unreadable ({}); prune would delete its data, so it stops. Run `tidemark verify`",
            p.object, p.message
        )));
    }
    Ok(snaps)
}
