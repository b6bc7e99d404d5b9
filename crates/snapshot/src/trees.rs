//! Loading trees with a small cache: snapshots share most of their
//! directories, and browsing, diff and prune revisit the same ones.

use crate::error::SnapshotError;
use crate::Result;
use crypto::Id;
use format::{Node, NodeKind, Tree};
use repository::Repository;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Trees kept in memory. A tree is ~200 bytes per entry; 4096 trees of a
/// typical home folder stay well under 100 MB.
const CACHE_TREES: usize = 4096;

pub struct TreeLoader<'a> {
    repo: &'a Repository,
    cache: Mutex<HashMap<Id, Arc<Tree>>>,
}

impl<'a> TreeLoader<'a> {
    pub fn new(repo: &'a Repository) -> Self {
        TreeLoader {
            repo,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn repo(&self) -> &'a Repository {
        self.repo
    }

    pub fn load(&self, id: &Id) -> Result<Arc<Tree>> {
        if let Some(t) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            return Ok(Arc::clone(t));
        }
        let bytes = self.repo.read_blob(id)?;
        let tree = Tree::decode(&bytes).map_err(|e| {
            SnapshotError::Repo(repository::RepoError::Corrupt {
                what: format!("tree {id}"),
                reason: e.to_string(),
            })
        })?;
        let tree = Arc::new(tree);
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= CACHE_TREES {
            c.clear();
        }
        c.insert(*id, Arc::clone(&tree));
        Ok(tree)
    }

    /// Follows an absolute path (`/home/u/x`) from a root tree to its node.
    /// The root itself is returned as a synthetic directory node.
    pub fn resolve(&self, root: &Id, path: &str) -> Result<Node> {
        let mut node = Node {
            subtree: Some(*root),
            ..Node::new(format::EntryName::new(b"/".to_vec()), NodeKind::Dir, 0o755)
        };
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let sub = match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(s)) => s,
                _ => return Err(SnapshotError::PathNotFound(path.to_string())),
            };
            let tree = self.load(&sub)?;
            node = tree
                .find(comp.as_bytes())
                .cloned()
                .ok_or_else(|| SnapshotError::PathNotFound(path.to_string()))?;
        }
        Ok(node)
    }
}
