//! The rules a snapshot commit must pass, written against a device whose
//! token and organisation keys were stolen: it can seal snapshots and
//! trees that decrypt and hash correctly, so nothing a snapshot claims is
//! trusted where it decides what is kept.
//!
//! - **Time.** The server records when it received each snapshot; retention
//!   and "latest" go by that. A claimed time more than [`MAX_CLOCK_SKEW`]
//!   ahead of the server's clock, or before the device was enrolled, is
//!   refused and audited.
//! - **Bursts.** A device that commits far more than its policy's schedule
//!   explains is refused (429), flagged for an administrator, and the
//!   snapshots it committed in the hour before are put in quarantine:
//!   retention neither removes them nor lets them push older snapshots out.
//! - **Trees.** Every tree the snapshot reaches is read with the decoder
//!   and rules every reader uses ([`format::Tree::decode`]), no deeper than
//!   [`format::MAX_TREE_DEPTH`], and every chunk and tree must be owned by
//!   the user and stored.

use crate::dedup::owned_and_stored;
use crate::error::ApiError;
use crate::meta::Principal;
use crate::Server;
use axum::http::StatusCode;
use crypto::Id;
use format::Tree;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// How far a device's clock may run ahead of the server's. Ten minutes
/// covers a laptop whose clock has not synced since it woke up.
pub const MAX_CLOCK_SKEW: i64 = 600;

/// Commits an hour with no new chunk that any schedule explains: an agent
/// commits a no-change backup at most every few minutes and only when
/// asked, so 20 is already far beyond honest use.
pub const IDLE_COMMITS_PER_HOUR: u64 = 20;

/// The window in which commits are counted, and the span of commits put in
/// quarantine when a device is flagged.
const WINDOW: i64 = 3600;

/// How many commits an hour the organisation's policy explains, doubled
/// for manual backups and retries. Continuous protection (the default)
/// commits at most once a minute; a schedule, once per `every_minutes`.
pub fn commits_per_hour(policy_json: Option<&str>) -> u64 {
    let policy: serde_json::Value = policy_json
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let continuous = policy
        .get("continuous")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let per_hour = if continuous {
        60
    } else {
        let every = policy
            .get("every_minutes")
            .and_then(|v| v.as_u64())
            .unwrap_or(60)
            .max(1);
        60u64.div_ceil(every)
    };
    (2 * per_hour).max(IDLE_COMMITS_PER_HOUR)
}

/// What the server decided about a commit it admits.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// The commit came with no chunk uploaded or proved since the last one.
    pub idle: bool,
    /// The device is flagged: the snapshot goes into quarantine.
    pub suspect: bool,
}

fn refuse(s: &Server, p: &Principal, status: StatusCode, audit: &str, message: String) -> ApiError {
    if let Err(e) = s.meta.audit(
        s.now(),
        &p.user.name,
        "snapshot refused",
        &format!("device {}: {audit}", p.device_id),
    ) {
        tracing::warn!(error = %e, "could not write the audit log");
    }
    ApiError::new(status, message)
}

/// Checks a commit's claimed time and the device's recent commits.
pub fn admit(s: &Server, p: &Principal, claimed: i64) -> Result<Admission, ApiError> {
    let now = s.now();
    let device = s
        .meta
        .device(p.device_id)?
        .ok_or_else(|| ApiError::internal("an authenticated device has no row"))?;
    if claimed > now + MAX_CLOCK_SKEW {
        s.metrics.snapshots_misdated.fetch_add(1, Ordering::Relaxed);
        return Err(refuse(
            s,
            p,
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("claimed time {claimed} is {} s ahead of the server's clock", claimed - now),
            "snapshot refused: its time is in the future by the server's clock; set this device's clock right and back up again".into(),
        ));
    }
    if claimed < device.created - MAX_CLOCK_SKEW {
        s.metrics.snapshots_misdated.fetch_add(1, Ordering::Relaxed);
        return Err(refuse(
            s,
            p,
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("claimed time {claimed} is before the device's enrolment at {}", device.created),
            "snapshot refused: its time is before this device was enrolled; set this device's clock right and back up again".into(),
        ));
    }
    let idle = !s.meta.note_commit(p.device_id)?;
    let recent = s.meta.commits_since(p.device_id, now - WINDOW)?;
    let allowed = commits_per_hour(s.meta.policy()?.as_deref());
    let burst = if recent.total >= allowed {
        Some(format!(
            "{} snapshots in the last hour, more than the {allowed} its policy explains",
            recent.total + 1
        ))
    } else if idle && recent.idle >= IDLE_COMMITS_PER_HOUR {
        Some(format!(
            "{} snapshots without new data in the last hour (at most {IDLE_COMMITS_PER_HOUR})",
            recent.idle + 1
        ))
    } else {
        None
    };
    if let Some(why) = burst {
        s.metrics.snapshots_flooded.fetch_add(1, Ordering::Relaxed);
        s.meta.flag_device(p.device_id, now, &why, now - WINDOW)?;
        s.meta.audit(
            now,
            &p.user.name,
            "snapshot flood",
            &format!(
                "device {} ({}): {why}; flagged, its snapshots of the last hour are kept aside from retention until an administrator clears the flag",
                p.device_id, device.name
            ),
        )?;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("snapshot refused: this device committed {why}; it was flagged for your administrator. Back up less often, or ask them to clear the flag"),
        ));
    }
    Ok(Admission {
        idle,
        suspect: device.flagged.is_some(),
    })
}

/// Entries a snapshot may expand to when every path is followed. Trees are
/// shared by id, so a few kilobytes of trees can describe folders that
/// repeat each other 2^40 times: a reader that lists or restores every path
/// would never end. A real laptop holds well under ten million files.
pub const MAX_SNAPSHOT_ENTRIES: u64 = 100_000_000;

/// Checks that every tree and chunk the snapshot reaches is well formed
/// (as every reader will judge it), owned by the user and stored, and that
/// the folders nest no deeper than [`format::MAX_TREE_DEPTH`] and expand to
/// no more than [`MAX_SNAPSHOT_ENTRIES`] along any path. Returns the first
/// few trees and chunks that are not owned or stored; a malformed, too deep
/// or too large snapshot is an error.
pub fn unowned_references(s: &Server, user_id: i64, root: Id) -> Result<Vec<Id>, ApiError> {
    let refused = |what: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("snapshot refused: {what}"),
        )
    };
    let mut missing = Vec::new();
    // Per tree checked: its height (longest chain of folders below and
    // including it) and the entries it expands to. Computed after its
    // subtrees, by an explicit stack: the depth is the attacker's to choose,
    // so nothing here recurses.
    let mut done: HashMap<Id, (usize, u64)> = HashMap::new();
    let mut children: HashMap<Id, (Vec<Id>, u64)> = HashMap::new();
    let mut stack = vec![(root, false)];
    while let Some((tree_id, expanded)) = stack.pop() {
        if expanded {
            let (subs, entries) = children.remove(&tree_id).unwrap_or_default();
            let mut height = 0;
            let mut total = entries;
            for sub in &subs {
                let (h, n) = done.get(sub).copied().unwrap_or((0, 0));
                height = height.max(h);
                total = total.saturating_add(n);
            }
            let height = height + 1;
            if height > format::MAX_TREE_DEPTH {
                return Err(refused(format!(
                    "its folders nest deeper than {} levels, the limit every Tidemark reader keeps to",
                    format::MAX_TREE_DEPTH
                )));
            }
            if total > MAX_SNAPSHOT_ENTRIES {
                return Err(refused(format!(
                    "its folders expand to more than {MAX_SNAPSHOT_ENTRIES} entries"
                )));
            }
            done.insert(tree_id, (height, total));
            continue;
        }
        if done.contains_key(&tree_id) {
            continue;
        }
        if children.contains_key(&tree_id) {
            // Reached again below itself: ids are hashes, so only a forged
            // tree can do that.
            return Err(refused(format!("folder {tree_id} contains itself")));
        }
        if !owned_and_stored(s, user_id, &[tree_id])?[0] {
            missing.push(tree_id);
            if missing.len() >= 20 {
                break;
            }
            done.insert(tree_id, (0, 0));
            continue;
        }
        let raw = s.repo.read_blob(&tree_id).map_err(ApiError::internal)?;
        let tree = Tree::decode(&raw)
            .map_err(|e| refused(format!("folder {tree_id} is not a valid tree ({e})")))?;
        for node in &tree.nodes {
            if !node.content.is_empty() {
                let usable = owned_and_stored(s, user_id, &node.content)?;
                missing.extend(
                    node.content
                        .iter()
                        .zip(usable)
                        .filter(|(_, u)| !u)
                        .map(|(i, _)| *i),
                );
            }
        }
        let subs: Vec<Id> = tree.nodes.iter().filter_map(|n| n.subtree).collect();
        stack.push((tree_id, true));
        stack.extend(subs.iter().map(|&sub| (sub, false)));
        children.insert(tree_id, (subs, tree.nodes.len() as u64));
        if missing.len() >= 20 {
            break;
        }
    }
    missing.truncate(20);
    Ok(missing)
}
