//! Reading snapshots without restoring them: list, find by name across
//! snapshots, diff two snapshots, stream one file, and the tree walks that
//! verify and prune need. Identical subtrees have identical ids, so every
//! walk skips or memoizes subtrees it has already seen.

use crate::error::SnapshotError;
use crate::trees::TreeLoader;
use crate::Result;
use crypto::Id;
use format::{Node, NodeKind, Snapshot};
use repository::Problem;
use std::collections::HashSet;
use std::io::Write;

pub fn resolve_path(loader: &TreeLoader<'_>, root: &Id, path: &str) -> Result<Node> {
    loader.resolve(root, path)
}

/// One entry of `ls`: its absolute path in the snapshot and its node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listed {
    pub path: String,
    #[serde(flatten)]
    pub node: Node,
}

fn join(dir: &str, name: &format::EntryName) -> String {
    let n = name.to_string_lossy();
    if dir.ends_with('/') {
        format!("{dir}{n}")
    } else {
        format!("{dir}/{n}")
    }
}

/// Lists `path` of a snapshot: the entry itself and, for folders, what is
/// below it (all levels when `recursive`).
pub fn ls(
    loader: &TreeLoader<'_>,
    root: &Id,
    path: &str,
    recursive: bool,
    out: &mut dyn FnMut(Listed),
) -> Result<()> {
    let node = loader.resolve(root, path)?;
    let base = if path.is_empty() {
        "/".to_string()
    } else {
        path.trim_end_matches('/').to_string()
    };
    let base = if base.is_empty() {
        "/".to_string()
    } else {
        base
    };
    if node.kind != NodeKind::Dir {
        out(Listed { path: base, node });
        return Ok(());
    }
    fn walk(
        loader: &TreeLoader<'_>,
        dir: &str,
        tree: &Id,
        recursive: bool,
        out: &mut dyn FnMut(Listed),
    ) -> Result<()> {
        let t = loader.load(tree)?;
        for n in &t.nodes {
            let p = join(dir, &n.name);
            out(Listed {
                path: p.clone(),
                node: n.clone(),
            });
            if recursive {
                if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                    walk(loader, &p, &sub, recursive, out)?;
                }
            }
        }
        Ok(())
    }
    match node.subtree {
        Some(sub) => walk(loader, &base, &sub, recursive, out),
        None => Ok(()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKind {
    Added,
    Removed,
    Modified,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiffEntry {
    pub kind: DiffKind,
    pub path: String,
    pub is_dir: bool,
}

/// What changed from snapshot tree `a` to tree `b`. Subtrees with the same
/// id are skipped without loading.
pub fn diff(loader: &TreeLoader<'_>, a: &Id, b: &Id) -> Result<Vec<DiffEntry>> {
    let mut out = Vec::new();
    diff_trees(loader, "", Some(*a), Some(*b), &mut out)?;
    Ok(out)
}

fn diff_trees(
    loader: &TreeLoader<'_>,
    dir: &str,
    a: Option<Id>,
    b: Option<Id>,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let ta = a.map(|id| loader.load(&id)).transpose()?;
    let tb = b.map(|id| loader.load(&id)).transpose()?;
    let empty = Vec::new();
    let na = ta.as_ref().map_or(&empty, |t| &t.nodes);
    let nb = tb.as_ref().map_or(&empty, |t| &t.nodes);
    let (mut i, mut j) = (0, 0);
    while i < na.len() || j < nb.len() {
        let order = match (na.get(i), nb.get(j)) {
            (Some(x), Some(y)) => x.name.as_bytes().cmp(y.name.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let x = &na[i];
                removed_or_added(loader, dir, x, DiffKind::Removed, out)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let y = &nb[j];
                removed_or_added(loader, dir, y, DiffKind::Added, out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (&na[i], &nb[j]);
                let path = join(if dir.is_empty() { "/" } else { dir }, &x.name);
                if x.kind != y.kind {
                    removed_or_added(loader, dir, x, DiffKind::Removed, out)?;
                    removed_or_added(loader, dir, y, DiffKind::Added, out)?;
                } else if x.kind == NodeKind::Dir {
                    diff_trees(loader, &path, x.subtree, y.subtree, out)?;
                } else if x.content != y.content
                    || x.link_target != y.link_target
                    || x.mode != y.mode
                {
                    out.push(DiffEntry {
                        kind: DiffKind::Modified,
                        path,
                        is_dir: false,
                    });
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn removed_or_added(
    loader: &TreeLoader<'_>,
    dir: &str,
    n: &Node,
    kind: DiffKind,
    out: &mut Vec<DiffEntry>,
) -> Result<()> {
    let path = join(if dir.is_empty() { "/" } else { dir }, &n.name);
    let is_dir = n.kind == NodeKind::Dir;
    out.push(DiffEntry {
        kind,
        path: path.clone(),
        is_dir,
    });
    if is_dir {
        let (a, b) = if kind == DiffKind::Removed {
            (n.subtree, None)
        } else {
            (None, n.subtree)
        };
        diff_trees(loader, &path, a, b, out)?;
    }
    Ok(())
}

/// Writes one file's content from a snapshot, each chunk checked.
pub fn cat(loader: &TreeLoader<'_>, root: &Id, path: &str, out: &mut dyn Write) -> Result<()> {
    let node = loader.resolve(root, path)?;
    if node.kind != NodeKind::File {
        return Err(SnapshotError::NotAFile(path.to_string()));
    }
    for id in &node.content {
        out.write_all(&loader.repo().read_blob(id)?)?;
    }
    Ok(())
}

/// Every blob (trees and chunks) the given snapshots reference: what prune
/// must keep. Fails on any unreadable tree rather than under-count.
pub fn used_blobs(loader: &TreeLoader<'_>, snapshots: &[(Id, Snapshot)]) -> Result<HashSet<Id>> {
    let mut used = HashSet::new();
    mark_used(loader, snapshots, &mut used)?;
    Ok(used)
}

/// Adds what `snapshots` reference to `used`, walking no tree already in
/// it: marking a few new snapshots after many costs only their new folders.
pub fn mark_used(
    loader: &TreeLoader<'_>,
    snapshots: &[(Id, Snapshot)],
    used: &mut HashSet<Id>,
) -> Result<()> {
    let mut stack: Vec<Id> = snapshots.iter().map(|(_, s)| s.tree).collect();
    while let Some(t) = stack.pop() {
        if !used.insert(t) {
            continue;
        }
        for n in &loader.load(&t)?.nodes {
            used.extend(n.content.iter().copied());
            if let Some(s) = n.subtree {
                stack.push(s);
            }
        }
    }
    Ok(())
}

/// Walks every snapshot's trees: each tree must load and check out, each
/// chunk must be in the index. Returns every problem with the file it hurts.
pub fn verify_snapshots(loader: &TreeLoader<'_>, snapshots: &[(Id, Snapshot)]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let repo = loader.repo();
    for (sid, snap) in snapshots {
        let mut stack = vec![("/".to_string(), snap.tree)];
        while let Some((dir, t)) = stack.pop() {
            if !seen.insert(t) {
                continue;
            }
            let tree = match loader.load(&t) {
                Ok(tree) => tree,
                Err(e) => {
                    problems.push(Problem {
                        object: format!("folder {dir} in snapshot {}", &sid.to_hex()[..8]),
                        message: e.to_string(),
                    });
                    continue;
                }
            };
            for n in &tree.nodes {
                let p = join(&dir, &n.name);
                if let Some(missing) = n.content.iter().find(|c| !repo.has_blob(c)) {
                    problems.push(Problem {
                        object: format!("file {p} in snapshot {}", &sid.to_hex()[..8]),
                        message: format!("chunk {missing} is missing from the repository"),
                    });
                }
                if let Some(s) = n.subtree {
                    stack.push((p, s));
                }
            }
        }
    }
    problems
}
