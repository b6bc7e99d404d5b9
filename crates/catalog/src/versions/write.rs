//! Writing spans: one snapshot's changes against its predecessor, and the
//! removal of a thinned-out snapshot with the span invariants kept.

use super::{TreeSource, VersionsError};
use chrono::{DateTime, TimeZone, Utc};
use crypto::Id;
use format::{Node, NodeKind, Snapshot, Tree, MAX_TREE_DEPTH};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::path::PathBuf;
use std::sync::Arc;

pub(super) enum AddError {
    Trees(String),
    Db(VersionsError),
}

/// A backup set: the host and the backed-up paths.
pub(super) fn line_key(s: &Snapshot) -> (String, String) {
    (s.hostname.clone(), s.paths.join("\n"))
}

pub(super) fn id_from(bytes: Vec<u8>) -> rusqlite::Result<Id> {
    Id::from_slice(&bytes).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            bytes.len(),
            rusqlite::types::Type::Blob,
            "an id is 32 bytes".into(),
        )
    })
}

pub(super) fn kind_code(k: NodeKind) -> i64 {
    match k {
        NodeKind::File => 0,
        NodeKind::Dir => 1,
        NodeKind::Symlink => 2,
        NodeKind::Fifo => 3,
        NodeKind::Socket => 4,
        NodeKind::CharDevice => 5,
        NodeKind::BlockDevice => 6,
    }
}

pub(super) fn kind_from(c: i64) -> NodeKind {
    match c {
        1 => NodeKind::Dir,
        2 => NodeKind::Symlink,
        3 => NodeKind::Fifo,
        4 => NodeKind::Socket,
        5 => NodeKind::CharDevice,
        6 => NodeKind::BlockDevice,
        _ => NodeKind::File,
    }
}

pub(super) fn time_of(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// What makes a new version: the kind and the content (not a changed
/// mtime alone, which `touch` or a copy produces without new data).
fn version_key(n: &Node) -> Option<Vec<u8>> {
    match n.kind {
        NodeKind::File => {
            let mut h = blake3::Hasher::new();
            h.update(&n.size.to_le_bytes());
            for c in &n.content {
                h.update(&c.0);
            }
            Some(h.finalize().as_bytes()[..16].to_vec())
        }
        NodeKind::Symlink => n.link_target.as_ref().map(|t| t.as_bytes().to_vec()),
        _ => None,
    }
}

/// Drops the snapshot `seq` of `line` and keeps the span invariants: bounds
/// that named it move to the line's next snapshot, versions only it held go.
pub(super) fn remove(db: &mut Connection, seq: i64, line: i64) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    let next: Option<i64> = tx.query_row(
        "SELECT min(seq) FROM snaps WHERE line = ?1 AND seq > ?2",
        params![line, seq],
        |r| r.get(0),
    )?;
    tx.execute("DELETE FROM snaps WHERE seq = ?1", [seq])?;
    // Versions first seen in it and gone before the next snapshot.
    match next {
        Some(n) => tx.execute(
            "DELETE FROM versions WHERE line = ?1 AND from_seq = ?2
               AND to_seq IS NOT NULL AND to_seq <= ?3",
            params![line, seq, n],
        )?,
        None => tx.execute(
            "DELETE FROM versions WHERE line = ?1 AND from_seq = ?2",
            params![line, seq],
        )?,
    };
    tx.execute(
        "UPDATE versions SET from_seq = ?3 WHERE line = ?1 AND from_seq = ?2",
        params![line, seq, next],
    )?;
    tx.execute(
        "UPDATE versions SET to_seq = ?3 WHERE line = ?1 AND to_seq = ?2",
        params![line, seq, next],
    )?;
    if let Some(n) = next {
        // A version that changed in the removed snapshot and changed back
        // in the next is one version again.
        let mut st = tx.prepare(
            "SELECT a.rowid, b.rowid, b.to_seq FROM versions a JOIN versions b
               ON b.node = a.node AND b.line = a.line AND b.from_seq = a.to_seq
             WHERE a.line = ?1 AND a.to_seq = ?2
               AND a.kind = b.kind AND a.size = b.size AND a.key IS b.key",
        )?;
        let merges = st
            .query_map(params![line, n], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(st);
        for (a, b, to) in merges {
            tx.execute(
                "UPDATE versions SET to_seq = ?2 WHERE rowid = ?1",
                params![a, to],
            )?;
            tx.execute("DELETE FROM versions WHERE rowid = ?1", [b])?;
        }
    }
    tx.commit()
}

pub(super) fn clear_line(db: &mut Connection, line: i64) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    tx.execute("DELETE FROM versions WHERE line = ?1", [line])?;
    tx.execute("DELETE FROM snaps WHERE line = ?1", [line])?;
    tx.commit()
}

/// What is left to write, on an explicit stack. `level` is the level of
/// the tree holding the entries (the root tree's is 1).
pub(super) enum Work {
    Diff {
        dir: i64,
        old: Option<Arc<Tree>>,
        new: Arc<Tree>,
        level: usize,
    },
    Added {
        dir: i64,
        node: Node,
        level: usize,
    },
    Removed {
        dir: i64,
        node: Node,
        level: usize,
    },
}

/// Writes one snapshot's changes against its predecessor.
pub(super) struct Writer<'a> {
    pub tx: &'a Transaction<'a>,
    pub path: PathBuf,
    pub line: i64,
    pub seq: i64,
    pub trees: &'a dyn TreeSource,
}

type Step<T = ()> = std::result::Result<T, AddError>;

impl Writer<'_> {
    pub fn load(&self, id: &Id) -> Step<Arc<Tree>> {
        self.trees
            .tree(id)
            .map_err(|e| AddError::Trees(format!("tree {}: {e}", id.to_hex())))
    }

    fn db<T>(&self, r: rusqlite::Result<T>) -> Step<T> {
        r.map_err(|source| {
            AddError::Db(VersionsError::Db {
                path: self.path.clone(),
                source,
            })
        })
    }

    fn node_id(&self, parent: i64, name: &str) -> Step<i64> {
        let r = (|| {
            let mut get = self
                .tx
                .prepare_cached("SELECT id FROM nodes WHERE parent = ?1 AND name = ?2")?;
            if let Some(id) = get
                .query_row(params![parent, name], |r| r.get(0))
                .optional()?
            {
                return Ok(id);
            }
            let id: i64 = self
                .tx
                .prepare_cached("INSERT INTO nodes (parent, name) VALUES (?1, ?2) RETURNING id")?
                .query_row(params![parent, name], |r| r.get(0))?;
            self.tx
                .prepare_cached("INSERT INTO names (rowid, name) VALUES (?1, ?2)")?
                .execute(params![id, name])?;
            Ok(id)
        })();
        self.db(r)
    }

    /// Merges the sorted entries of a folder's old and new tree, and of
    /// every changed folder below, on an explicit stack: a hostile
    /// repository can nest trees deeper than any thread's stack. Trees
    /// nested beyond [`MAX_TREE_DEPTH`] leave the snapshot out of the
    /// catalog (as an unreadable tree does), with the reason.
    pub fn diff(&mut self, dir: i64, old: Option<Arc<Tree>>, new: Arc<Tree>) -> Step {
        let mut stack = vec![Work::Diff {
            dir,
            old,
            new,
            level: 1,
        }];
        while let Some(w) = stack.pop() {
            let mut more = Vec::new();
            match w {
                Work::Diff {
                    dir,
                    old,
                    new,
                    level,
                } => self.merge(dir, old.as_deref(), &new, level, &mut more)?,
                Work::Added { dir, node, level } => self.added(dir, &node, level, &mut more)?,
                Work::Removed { dir, node, level } => self.removed(dir, &node, level, &mut more)?,
            }
            // In reverse, so the first found is walked first.
            stack.extend(more.into_iter().rev());
        }
        Ok(())
    }

    fn merge(
        &mut self,
        dir: i64,
        old: Option<&Tree>,
        new: &Tree,
        level: usize,
        more: &mut Vec<Work>,
    ) -> Step {
        let empty: &[Node] = &[];
        let old = old.map_or(empty, |t| &t.nodes[..]);
        let (mut i, mut j) = (0, 0);
        loop {
            match (old.get(i), new.nodes.get(j)) {
                (Some(o), Some(n)) if o.name.as_bytes() == n.name.as_bytes() => {
                    i += 1;
                    j += 1;
                    self.changed(dir, o, n, level, more)?;
                }
                (Some(o), Some(n)) if o.name.as_bytes() < n.name.as_bytes() => {
                    i += 1;
                    self.removed(dir, o, level, more)?;
                }
                (Some(o), None) => {
                    i += 1;
                    self.removed(dir, o, level, more)?;
                }
                (_, Some(n)) => {
                    j += 1;
                    self.added(dir, n, level, more)?;
                }
                (None, None) => return Ok(()),
            }
        }
    }

    /// The subtree of an entry in a tree at `level` is at `level + 1`.
    fn below(level: usize) -> Step<usize> {
        if level >= MAX_TREE_DEPTH {
            return Err(AddError::Trees(format!(
                "folders nest deeper than {MAX_TREE_DEPTH} levels; Tidemark reads no further (the snapshot is damaged or was not made by Tidemark)"
            )));
        }
        Ok(level + 1)
    }

    fn changed(
        &mut self,
        dir: i64,
        o: &Node,
        n: &Node,
        level: usize,
        more: &mut Vec<Work>,
    ) -> Step {
        if o.kind != n.kind {
            self.removed(dir, o, level, more)?;
            return self.added(dir, n, level, more);
        }
        if n.kind == NodeKind::Dir {
            if o.subtree == n.subtree {
                // The whole subtree is unchanged: nothing below is read.
                return Ok(());
            }
            let below = Self::below(level)?;
            let node = self.node_id(dir, &n.name.to_string_lossy())?;
            let old = o.subtree.map(|s| self.load(&s)).transpose()?;
            let new = match n.subtree {
                Some(s) => self.load(&s)?,
                None => Arc::new(Tree::default()),
            };
            more.push(Work::Diff {
                dir: node,
                old,
                new,
                level: below,
            });
            return Ok(());
        }
        if version_key(o) == version_key(n) {
            return Ok(());
        }
        let node = self.node_id(dir, &n.name.to_string_lossy())?;
        self.close(node)?;
        self.open(node, n)
    }

    fn added(&mut self, dir: i64, n: &Node, level: usize, more: &mut Vec<Work>) -> Step {
        let node = self.node_id(dir, &n.name.to_string_lossy())?;
        self.open(node, n)?;
        if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
            let below = Self::below(level)?;
            let t = self.load(&sub)?;
            more.extend(t.nodes.iter().map(|c| Work::Added {
                dir: node,
                node: c.clone(),
                level: below,
            }));
        }
        Ok(())
    }

    fn removed(&mut self, dir: i64, o: &Node, level: usize, more: &mut Vec<Work>) -> Step {
        let node = self.node_id(dir, &o.name.to_string_lossy())?;
        self.close(node)?;
        if let (NodeKind::Dir, Some(sub)) = (o.kind, o.subtree) {
            let below = Self::below(level)?;
            let t = self.load(&sub)?;
            more.extend(t.nodes.iter().map(|c| Work::Removed {
                dir: node,
                node: c.clone(),
                level: below,
            }));
        }
        Ok(())
    }

    fn open(&self, node: i64, n: &Node) -> Step {
        let r = self
            .tx
            .prepare_cached(
                "INSERT INTO versions (node, line, from_seq, to_seq, kind, size, mtime, key)
                 VALUES (?1, ?2, ?3, NULL, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    node,
                    self.line,
                    self.seq,
                    kind_code(n.kind),
                    n.size as i64,
                    n.mtime_ns,
                    version_key(n)
                ])
            });
        self.db(r).map(|_| ())
    }

    fn close(&self, node: i64) -> Step {
        let r = self
            .tx
            .prepare_cached(
                // The node's own versions: without statistics SQLite would
                // pick (line, to_seq) and read every open version of the set.
                "UPDATE versions INDEXED BY versions_node SET to_seq = ?3
                 WHERE node = ?1 AND line = ?2 AND to_seq IS NULL",
            )
            .and_then(|mut st| st.execute(params![node, self.line, self.seq]));
        self.db(r).map(|_| ())
    }
}
