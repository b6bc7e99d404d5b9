//! What the timeline window asks: the snapshots along time, a folder as it
//! was at one of them (optionally with the files deleted since earlier
//! snapshots), every version of a file, search by name across all versions,
//! and a preview. Read-only; restore is in `jobs`.
//!
//! Search, versions and deleted files come from the version catalog
//! (`crate::versions`), which costs what changed per snapshot; a folder's
//! listing reads the snapshot's trees.

use crate::error::{AgentError, Result};
use catalog::versions::{Filter, NameQuery};
use chrono::{DateTime, TimeZone, Utc};
use crypto::Id;
use format::{Node, NodeKind, Snapshot};
use repository::Repository;
use serde::{Deserialize, Serialize};
use snapshot::TreeLoader;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct SnapshotInfo {
    pub id: String,
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub paths: Vec<String>,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Other,
}

impl From<NodeKind> for EntryKind {
    fn from(k: NodeKind) -> Self {
        match k {
            NodeKind::File => EntryKind::File,
            NodeKind::Dir => EntryKind::Dir,
            NodeKind::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct DirEntry {
    pub name: String,
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mtime: DateTime<Utc>,
    /// Not in the chosen snapshot, but in an earlier one: a deleted file.
    pub deleted: bool,
    /// For deleted entries, the last snapshot that still had it (restore
    /// from there).
    pub last_seen_in: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// One distinct version of a file: its content as first seen at `time`
/// and still the same up to `last_seen`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Version {
    pub snapshot: String,
    pub time: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub size: u64,
    pub mtime: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct SearchHit {
    pub path: String,
    pub name: String,
    pub kind: EntryKind,
    /// Size in the newest snapshot that has it.
    pub size: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The newest snapshot that has it (open the timeline there).
    pub last_snapshot: String,
    /// Snapshots that hold it.
    pub snapshots: u32,
    /// Gone from the newest snapshot: deleted since.
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Preview {
    Text {
        text: String,
        truncated: bool,
    },
    Image {
        mime: String,
        base64: String,
    },
    /// Not text, not an image the window can show.
    Binary {
        size: u64,
    },
    /// Larger than a preview should read.
    TooLarge {
        size: u64,
    },
}

/// Text previews read at most this much.
const TEXT_PREVIEW: usize = 64 * 1024;
/// Images up to this size are previewed (phone photos fit).
const IMAGE_PREVIEW: u64 = 16 << 20;
/// Search stops after this many distinct paths; the UI says "more".
pub const SEARCH_LIMIT: usize = 500;

fn mtime(ns: i64) -> DateTime<Utc> {
    Utc.timestamp_nanos(ns)
}

/// Snapshots, oldest first; `host` keeps those of one machine.
pub fn snapshots(repo: &Repository, host: Option<&str>) -> Result<Vec<(Id, Snapshot)>> {
    let (snaps, _) = repo.list_snapshots()?;
    Ok(snaps
        .into_iter()
        .filter(|(_, s)| host.is_none_or(|h| s.hostname == h))
        .collect())
}

pub fn infos(snaps: &[(Id, Snapshot)]) -> Vec<SnapshotInfo> {
    snaps
        .iter()
        .map(|(id, s)| SnapshotInfo {
            id: id.to_hex(),
            time: s.time,
            hostname: s.hostname.clone(),
            paths: s.paths.clone(),
            files: s.summary.total_files,
            bytes: s.summary.total_bytes,
        })
        .collect()
}

/// The snapshot with this id (in hex) and its place in `snaps`.
pub(crate) fn find<'a>(snaps: &'a [(Id, Snapshot)], id: &str) -> Result<(usize, &'a Snapshot)> {
    snaps
        .iter()
        .position(|(i, _)| i.to_hex() == id)
        .map(|at| (at, &snaps[at].1))
        .ok_or_else(|| {
            AgentError::Invalid(format!("no snapshot {id} (it may have been thinned out)"))
        })
}

fn entries_of(loader: &TreeLoader<'_>, root: &Id, path: &str) -> Option<Vec<Node>> {
    let node = loader.resolve(root, path).ok()?;
    match (node.kind, node.subtree) {
        (NodeKind::Dir, Some(sub)) => loader.load(&sub).ok().map(|t| t.nodes.clone()),
        _ => None,
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// A folder as it was in snapshot `id` (one of `snaps`). With `deleted`,
/// entries that some earlier snapshot of the same backup set had in this
/// folder and `id` has not are added, marked deleted, with the last
/// snapshot that had them (from the version catalog of `all`).
pub fn list_dir(
    repo: &Repository,
    all: &[(Id, Snapshot)],
    snaps: &[(Id, Snapshot)],
    id: &str,
    path: &str,
    deleted: bool,
) -> Result<Vec<DirEntry>> {
    let (at, snap) = find(snaps, id)?;
    let loader = TreeLoader::new(repo);
    let node = loader.resolve(&snap.tree, path)?;
    if node.kind != NodeKind::Dir {
        return Err(AgentError::Invalid(format!("{path} is not a folder")));
    }
    let now = entries_of(&loader, &snap.tree, path).unwrap_or_default();
    let mut out: BTreeMap<String, DirEntry> = now
        .iter()
        .map(|n| {
            let name = n.name.to_string_lossy();
            (
                name.clone(),
                DirEntry {
                    path: join(path, &name),
                    name,
                    kind: n.kind.into(),
                    size: n.size,
                    mtime: mtime(n.mtime_ns),
                    deleted: false,
                    last_seen_in: None,
                    last_seen: None,
                },
            )
        })
        .collect();
    if deleted {
        let c = crate::versions::catalog(repo, all)?;
        for d in c.deleted_in(path, &snaps[at].0)? {
            out.entry(d.name.clone()).or_insert_with(|| DirEntry {
                path: join(path, &d.name),
                name: d.name,
                kind: d.kind.into(),
                size: d.size,
                mtime: mtime(d.mtime_ns),
                deleted: true,
                last_seen_in: Some(d.last_snapshot.to_hex()),
                last_seen: Some(d.last_seen),
            });
        }
    }
    let mut v: Vec<DirEntry> = out.into_values().collect();
    // Folders first, then by name, the way file managers show them.
    v.sort_by(|a, b| {
        (b.kind == EntryKind::Dir)
            .cmp(&(a.kind == EntryKind::Dir))
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
    });
    Ok(v)
}

/// Every distinct version of the file at `path` in `host`'s backups,
/// oldest first, from the version catalog (`all` is every snapshot of the
/// repository, which keeps the catalog whole). A version is new when the
/// content changes (not merely the metadata).
pub fn versions(
    repo: &Repository,
    all: &[(Id, Snapshot)],
    host: &str,
    path: &str,
) -> Result<Vec<Version>> {
    let c = crate::versions::catalog(repo, all)?;
    Ok(c.versions(path, Some(host))?
        .into_iter()
        .filter(|v| v.kind == NodeKind::File)
        .map(|v| Version {
            snapshot: v.first_snapshot.to_hex(),
            time: v.first_seen,
            last_seen: v.last_seen,
            size: v.size,
            mtime: mtime(v.mtime_ns),
        })
        .collect())
}

/// Paths of `host`'s backups whose name contains `query` (case-insensitive;
/// `*` and `?` work as wildcards) in any snapshot, newest sightings first.
pub fn search(
    repo: &Repository,
    all: &[(Id, Snapshot)],
    host: &str,
    query: &str,
) -> Result<Vec<SearchHit>> {
    if query.trim().is_empty() {
        return Ok(Vec::new());
    }
    let c = crate::versions::catalog(repo, all)?;
    let filter = Filter {
        host: Some(host.to_string()),
        ..Default::default()
    };
    let found = c.search(
        &NameQuery::Contains(query.to_string()),
        &filter,
        SEARCH_LIMIT,
    )?;
    let mut v: Vec<SearchHit> = found
        .hits
        .into_iter()
        .map(|h| SearchHit {
            path: h.path,
            name: h.name,
            kind: h.kind.into(),
            size: h.size,
            first_seen: h.first_seen,
            last_seen: h.last_seen,
            last_snapshot: h.last_snapshot.to_hex(),
            snapshots: h.snapshots,
            deleted: h.deleted,
        })
        .collect();
    v.sort_by(|a, b| {
        b.last_seen
            .cmp(&a.last_seen)
            .then_with(|| a.path.cmp(&b.path))
    });
    Ok(v)
}

fn image_mime(path: &str) -> Option<&'static str> {
    let ext = path.rsplit('.').next()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        _ => return None,
    })
}

/// A preview of one file of a snapshot: text (the start of it), an image,
/// or just what it is.
pub fn preview(
    repo: &Repository,
    snaps: &[(Id, Snapshot)],
    id: &str,
    path: &str,
) -> Result<Preview> {
    let (_, snap) = find(snaps, id)?;
    let loader = TreeLoader::new(repo);
    let node = loader.resolve(&snap.tree, path)?;
    if node.kind != NodeKind::File {
        return Err(AgentError::Invalid(format!("{path} is not a file")));
    }
    if let Some(mime) = image_mime(path) {
        if node.size > IMAGE_PREVIEW {
            return Ok(Preview::TooLarge { size: node.size });
        }
        let mut buf = Vec::with_capacity(node.size as usize);
        snapshot::cat(&loader, &snap.tree, path, &mut buf)?;
        return Ok(Preview::Image {
            mime: mime.into(),
            base64: base64(&buf),
        });
    }
    let mut head = Vec::new();
    for chunk in &node.content {
        if head.len() >= TEXT_PREVIEW {
            break;
        }
        head.extend_from_slice(&repo.read_blob(chunk)?);
    }
    let truncated = head.len() > TEXT_PREVIEW || (head.len() as u64) < node.size;
    head.truncate(TEXT_PREVIEW);
    // A cut in the middle of a UTF-8 sequence is not binary: trim it.
    let text = match std::str::from_utf8(&head) {
        Ok(t) => t,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return Ok(Preview::Binary { size: node.size }),
    };
    if text.contains('\0') {
        return Ok(Preview::Binary { size: node.size });
    }
    Ok(Preview::Text {
        text: text.to_string(),
        truncated,
    })
}

fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
