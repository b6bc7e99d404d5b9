//! Online prune: frees the data no snapshot uses while devices go on
//! backing up.
//!
//! A device uploads (or proves) chunks before it commits the snapshot that
//! uses them, so the repository always holds data no snapshot references
//! yet. Two rules keep that data:
//! - Freshness: a chunk granted to a user (uploaded or proved) within the
//!   grace period, or within [`ACTIVE_DAYS`] by a device seen within the
//!   grace period, is kept as if a snapshot used it. A first backup over a
//!   slow link can upload for days before its one commit.
//! - The gate: the sweep (new packs, one new index file, deleting packs)
//!   runs under the server's prune gate, which every pack upload, index
//!   flush, commit and blob read holds shared. A commit checks under the
//!   gate that every chunk it references is stored, so one that names a
//!   chunk the sweep deleted (a chunk the device was told existed before
//!   the sweep, without a new grant) is refused with 409, and the device
//!   sends the chunk again (`agent::jobs::backup`). Nothing committed can
//!   lose data; the cost of the race is one re-upload.
//!
//! Marking (reading every snapshot's trees) runs before the gate is taken,
//! so uploads wait only for the sweep; snapshots committed meanwhile are
//! marked under the gate, where they are few.

use crate::Server;
use chrono::Utc;
use crypto::Id;
use format::Tree;
use repository::{PruneOptions, PruneReport, RepoError};
use serde::Serialize;
use std::collections::HashSet;

/// A device still backing up keeps what it uploaded this long, however long
/// ago (it is seen within the grace period).
pub const ACTIVE_DAYS: i64 = 14;

/// The default grace period: a day.
pub const GRACE_HOURS: u32 = 24;

#[derive(Debug, Serialize)]
pub struct ServerPruneReport {
    /// Snapshots whose data was kept.
    pub snapshots: usize,
    /// Chunks kept only because they are fresh (no snapshot uses them yet).
    pub fresh_kept: usize,
    #[serde(flatten)]
    pub repository: PruneReport,
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(
        "snapshot {snapshot} cannot be read ({message}); prune would take its data for unused, so it stops. Run `tidemark verify` on the server's repository"
    )]
    Unreadable { snapshot: String, message: String },
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Prunes the server's repository. `grace_hours` 0 keeps nothing for
/// freshness: uploads not yet committed may then be deleted and sent again.
pub fn run(
    s: &Server,
    grace_hours: u32,
    dry_run: bool,
    actor: &str,
) -> Result<ServerPruneReport, PruneError> {
    run_at(s, Utc::now().timestamp(), grace_hours, dry_run, actor)
}

/// [`run`] as if the clock said `now` (unix seconds), so tests can let the
/// grace period pass.
pub fn run_at(
    s: &Server,
    now: i64,
    grace_hours: u32,
    dry_run: bool,
    actor: &str,
) -> Result<ServerPruneReport, PruneError> {
    let grace = i64::from(grace_hours) * 3600;
    // No grace: nothing is fresh, not even a device's upload of this second.
    let (since, active_since, seen_since) = if grace == 0 {
        (i64::MAX, i64::MAX, i64::MAX)
    } else {
        (now - grace, now - ACTIVE_DAYS * 86_400, now - grace)
    };

    let mut used = HashSet::new();
    let mut marked = HashSet::new();
    mark(s, &mut used, &mut marked)?;

    let _gate = s.gate.write().unwrap_or_else(|p| p.into_inner());
    // Packs received but not yet in an index file must be in one before
    // prune reads the index, or it would count them as absent.
    s.repo.flush_ingested()?;
    let snapshots = mark(s, &mut used, &mut marked)?;
    let fresh = s.meta.fresh_chunks(since, active_since, seen_since)?;
    let mut fresh_kept = 0;
    for id in fresh {
        if used.insert(id) {
            fresh_kept += 1;
        }
    }
    let repository = s.repo.prune(
        &used,
        &PruneOptions {
            dry_run,
            ..PruneOptions::default()
        },
    )?;
    if !dry_run {
        s.meta
            .forget_fresh(&|id| used.contains(id), since, active_since, seen_since)?;
        s.meta.audit(
            now,
            actor,
            "prune",
            &format!(
                "{} pack(s) deleted, {} rewritten, {} blob(s) removed, {} -> {} bytes",
                repository.packs_deleted,
                repository.packs_rewritten,
                repository.blobs_removed,
                repository.bytes_before,
                repository.bytes_after
            ),
        )?;
    }
    Ok(ServerPruneReport {
        snapshots,
        fresh_kept,
        repository,
    })
}

/// Adds every blob the stored snapshots reach to `used`, reading only trees
/// not in `marked` yet. Snapshot objects are listed from storage, not from
/// the metadata: a crash between storing a snapshot and recording it leaves
/// one only storage knows, and its data must stay. Returns how many.
fn mark(s: &Server, used: &mut HashSet<Id>, marked: &mut HashSet<Id>) -> Result<usize, PruneError> {
    let (snaps, problems) = s.repo.list_snapshots()?;
    if let Some(p) = problems.first() {
        return Err(PruneError::Unreadable {
            snapshot: p.object.clone(),
            message: p.message.clone(),
        });
    }
    for (sid, snap) in &snaps {
        let mut stack = vec![snap.tree];
        while let Some(t) = stack.pop() {
            if !marked.insert(t) {
                continue;
            }
            used.insert(t);
            let unreadable = |message: String| PruneError::Unreadable {
                snapshot: sid.to_hex(),
                message,
            };
            let raw = s
                .repo
                .read_blob(&t)
                .map_err(|e| unreadable(format!("folder {t}: {e}")))?;
            let tree: Tree = format::from_json("tree", &raw)
                .map_err(|e| unreadable(format!("folder {t}: {e}")))?;
            for n in &tree.nodes {
                used.extend(n.content.iter().copied());
                if let Some(sub) = n.subtree {
                    stack.push(sub);
                }
            }
        }
    }
    Ok(snaps.len())
}
