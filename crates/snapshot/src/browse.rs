//! Reading snapshots without restoring them: list, find by name across
//! snapshots, diff two snapshots, stream one file, and the tree walks that
//! verify and prune need. Identical subtrees have identical ids, so every
//! walk skips or memoizes subtrees it has already seen.

use crate::error::SnapshotError;
use crate::trees::TreeLoader;
use crate::Result;
use crypto::Id;
use format::{Node, NodeKind, Snapshot, Tree, MAX_TREE_DEPTH};
use repository::Problem;
use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

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
    let Some(sub) = node.subtree else {
        return Ok(());
    };
    // The tree of /a/b is at level 3: the root's is level 1.
    let level = base.split('/').filter(|c| !c.is_empty()).count() + 1;
    // Depth first on an explicit stack (a hostile repository can nest
    // trees deeper than any thread's stack), with one path buffer that
    // grows and shrinks with it rather than a path per level.
    struct Frame {
        tree: Arc<Tree>,
        next: usize,
        /// The length of `dir` when this folder was entered.
        dir_len: usize,
    }
    let mut dir = base;
    let mut stack = vec![Frame {
        tree: loader.load(&sub)?,
        next: 0,
        dir_len: dir.len(),
    }];
    while let Some(f) = stack.last_mut() {
        let Some(n) = f.tree.nodes.get(f.next) else {
            stack.pop();
            continue;
        };
        f.next += 1;
        dir.truncate(f.dir_len);
        let p = join(&dir, &n.name);
        out(Listed {
            path: p.clone(),
            node: n.clone(),
        });
        if let (true, NodeKind::Dir, Some(sub)) = (recursive, n.kind, n.subtree) {
            if level + stack.len() > MAX_TREE_DEPTH {
                return Err(SnapshotError::TooDeep { path: p });
            }
            let tree = loader.load(&sub)?;
            dir = p;
            stack.push(Frame {
                tree,
                next: 0,
                dir_len: dir.len(),
            });
        }
    }
    Ok(())
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

/// Two versions of one folder being compared, entry by entry.
struct DiffFrame {
    dir: String,
    a: Option<Arc<Tree>>,
    b: Option<Arc<Tree>>,
    i: usize,
    j: usize,
    /// The level of these trees (the root's is 1).
    level: usize,
}

enum DiffStep {
    Frame(DiffFrame),
    /// An entry whose kind changed: added once its old self is reported.
    Added {
        dir: String,
        node: Node,
        level: usize,
    },
}

/// What changed from snapshot tree `a` to tree `b`. Subtrees with the same
/// id are skipped without loading. Walks on an explicit stack, in the order
/// of a depth-first walk, refusing trees nested beyond `MAX_TREE_DEPTH`.
pub fn diff(loader: &TreeLoader<'_>, a: &Id, b: &Id) -> Result<Vec<DiffEntry>> {
    let mut out = Vec::new();
    let mut stack = Vec::new();
    stack.extend(diff_frame(loader, String::new(), Some(*a), Some(*b), 1)?.map(DiffStep::Frame));
    while let Some(top) = stack.last_mut() {
        let mut more = Vec::new();
        match top {
            DiffStep::Added { .. } => {
                if let Some(DiffStep::Added { dir, node, level }) = stack.pop() {
                    removed_or_added(
                        loader,
                        &dir,
                        &node,
                        DiffKind::Added,
                        level,
                        &mut out,
                        &mut more,
                    )?;
                }
            }
            DiffStep::Frame(DiffFrame {
                dir,
                a,
                b,
                i,
                j,
                level,
            }) => {
                let empty = Vec::new();
                let na = a.as_ref().map_or(&empty, |t| &t.nodes);
                let nb = b.as_ref().map_or(&empty, |t| &t.nodes);
                let order = match (na.get(*i), nb.get(*j)) {
                    (Some(x), Some(y)) => x.name.as_bytes().cmp(y.name.as_bytes()),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => {
                        stack.pop();
                        continue;
                    }
                };
                let dir = dir.as_str();
                match order {
                    std::cmp::Ordering::Less => {
                        let x = &na[*i];
                        *i += 1;
                        removed_or_added(
                            loader,
                            dir,
                            x,
                            DiffKind::Removed,
                            *level,
                            &mut out,
                            &mut more,
                        )?;
                    }
                    std::cmp::Ordering::Greater => {
                        let y = &nb[*j];
                        *j += 1;
                        removed_or_added(
                            loader,
                            dir,
                            y,
                            DiffKind::Added,
                            *level,
                            &mut out,
                            &mut more,
                        )?;
                    }
                    std::cmp::Ordering::Equal => {
                        let (x, y) = (&na[*i], &nb[*j]);
                        *i += 1;
                        *j += 1;
                        let path = join(if dir.is_empty() { "/" } else { dir }, &x.name);
                        if x.kind != y.kind {
                            more.push(DiffStep::Added {
                                dir: dir.to_string(),
                                node: y.clone(),
                                level: *level,
                            });
                            removed_or_added(
                                loader,
                                dir,
                                x,
                                DiffKind::Removed,
                                *level,
                                &mut out,
                                &mut more,
                            )?;
                        } else if x.kind == NodeKind::Dir {
                            more.extend(
                                diff_frame(loader, path, x.subtree, y.subtree, *level + 1)?
                                    .map(DiffStep::Frame),
                            );
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
                    }
                }
            }
        }
        // What was found last is walked first: a folder's own entries come
        // before the entry that follows it.
        stack.extend(more);
    }
    Ok(out)
}

/// The two trees of one folder, unless they are the same tree.
fn diff_frame(
    loader: &TreeLoader<'_>,
    dir: String,
    a: Option<Id>,
    b: Option<Id>,
    level: usize,
) -> Result<Option<DiffFrame>> {
    if a == b {
        return Ok(None);
    }
    if level > MAX_TREE_DEPTH {
        return Err(SnapshotError::TooDeep { path: dir });
    }
    Ok(Some(DiffFrame {
        a: a.map(|id| loader.load(&id)).transpose()?,
        b: b.map(|id| loader.load(&id)).transpose()?,
        dir,
        i: 0,
        j: 0,
        level,
    }))
}

/// Reports `n` (in a tree at `level`) as added or removed, and queues its
/// subtree to be reported the same way.
fn removed_or_added(
    loader: &TreeLoader<'_>,
    dir: &str,
    n: &Node,
    kind: DiffKind,
    level: usize,
    out: &mut Vec<DiffEntry>,
    more: &mut Vec<DiffStep>,
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
        more.extend(diff_frame(loader, path, a, b, level + 1)?.map(DiffStep::Frame));
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
        let mut stack = vec![("/".to_string(), snap.tree, 1)];
        while let Some((dir, t, level)) = stack.pop() {
            if !seen.insert(t) {
                continue;
            }
            if level > MAX_TREE_DEPTH {
                problems.push(Problem {
                    object: format!("folder {dir} in snapshot {}", &sid.to_hex()[..8]),
                    message: format!(
                        "folders nest deeper than {MAX_TREE_DEPTH} levels; no reader goes further, so what is below cannot be restored"
                    ),
                });
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
                    stack.push((p, s, level + 1));
                }
            }
        }
    }
    problems
}
