//! Server-side retention: the only way, besides an administrator, that
//! snapshots leave the server (devices cannot delete). The policy is the
//! organisation's (`"retention"` in the policy devices fetch), else the
//! timeline thinning devices use for their own storage (continuous
//! protection commits a snapshot every few minutes, and nothing else would
//! ever thin them), or one given to a single admin run; it applies per
//! user, per host and set of paths.
//!
//! It goes by when the server received each snapshot, never by the time a
//! device claims (a stolen device could date snapshots in 2100 and make
//! every real one look old), and it leaves snapshots in quarantine alone:
//! neither removed nor counted, so a burst of commits from one device
//! cannot push older snapshots out (see [`crate::commits`]).
//!
//! Deleting snapshots frees no data by itself: [`crate::prune`] does, while
//! the server serves.

use crate::meta::Meta;
use crate::Server;
use chrono::{DateTime, Utc};
use repository::retention::{self, Policy};
use serde::Serialize;

/// The organisation's retention policy (its policy's `"retention"`), if set.
pub fn org_policy(meta: &dyn Meta) -> Option<Policy> {
    let json = meta.policy().ok()??;
    let v: serde_json::Value = serde_json::from_str(&json).ok()?;
    serde_json::from_value(v.get("retention")?.clone()).ok()
}

/// The policy the server applies: the organisation's, else the timeline.
pub fn policy(meta: &dyn Meta) -> Policy {
    org_policy(meta).unwrap_or_else(Policy::timeline)
}

#[derive(Debug, Default, Serialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    pub kept: usize,
    pub removed: Vec<crypto::Id>,
    /// Snapshots in quarantine, left alone.
    pub quarantined: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("a retention policy must keep something: set at least one keep_* rule")]
    Empty,
    #[error(transparent)]
    Meta(#[from] crate::meta::MetaError),
    #[error(transparent)]
    Repo(#[from] repository::RepoError),
}

/// Applies `policy` to every user's snapshots; `actor` is written to the
/// audit log with what was removed.
pub fn run(
    s: &Server,
    policy: &Policy,
    dry_run: bool,
    actor: &str,
) -> Result<RetentionReport, RetentionError> {
    if policy.is_empty() {
        return Err(RetentionError::Empty);
    }
    let mut report = RetentionReport {
        dry_run,
        ..Default::default()
    };
    for user in s.meta.users()? {
        let rows = s.meta.snapshots(Some(user.id))?;
        let mut snaps: Vec<(crypto::Id, format::Snapshot)> = Vec::with_capacity(rows.len());
        for r in rows {
            if r.suspect {
                report.quarantined += 1;
                continue;
            }
            let mut snap = s.repo.load_snapshot(&r.id)?;
            // The policy reads the snapshot's time: give it the server's,
            // strictly increasing in the order the rows come (as received),
            // so two commits in one millisecond still have a newer one.
            let received = DateTime::from_timestamp_millis(r.received_ms).unwrap_or(snap.time);
            snap.time = match snaps.last() {
                Some((_, prev)) if received <= prev.time => {
                    prev.time + chrono::Duration::nanoseconds(1)
                }
                _ => received,
            };
            snaps.push((r.id, snap));
        }
        let now = DateTime::from_timestamp(s.now(), 0).unwrap_or_else(Utc::now);
        for d in retention::apply(&snaps, policy, now) {
            if d.keep {
                report.kept += 1;
                continue;
            }
            if !dry_run {
                // Metadata first: once it is gone no device can see the
                // snapshot, and a crash before the object is deleted leaves
                // only an unlisted object behind.
                s.meta.delete_snapshot(&d.id)?;
                s.repo.delete_snapshot(&d.id)?;
            }
            report.removed.push(d.id);
        }
    }
    if !dry_run && !report.removed.is_empty() {
        s.meta.audit(
            s.now(),
            actor,
            "retention",
            &format!(
                "removed {} snapshot(s), kept {}",
                report.removed.len(),
                report.kept
            ),
        )?;
    }
    Ok(report)
}
