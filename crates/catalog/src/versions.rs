//! The version catalog: every path of every snapshot, for name search,
//! "all versions of this file" and "deleted files", without opening a
//! single tree at query time.
//!
//! Snapshots are grouped in backup sets ("lines": one host backing up one
//! set of paths), ordered by time. A version of a path is a span
//! `[from_seq, to_seq)` of a line's snapshots in which the path had the
//! same kind and content; `to_seq` is NULL while the line's newest
//! snapshot still has it. Adding a snapshot diffs its trees against the
//! line's previous snapshot, skipping every subtree whose id did not
//! change, so the work is proportional to what changed, not to the size of
//! the tree: a snapshot that changed three files touches three rows.
//!
//! Invariants kept by [`VersionCatalog::sync`]: `from_seq` names a
//! catalogued snapshot, and `to_seq` is NULL or names one (the first
//! snapshot of the line without that version). Removing a snapshot (the
//! retention thinned it out) moves the bounds that named it to the next
//! snapshot of the line and drops the versions only it held.
//!
//! Like everything in this crate it is a cache: the file can be deleted at
//! any moment and is rebuilt from the repository's snapshots and trees.

mod query;
mod write;

use chrono::{DateTime, Utc};
use crypto::Id;
use format::{NodeKind, Snapshot, Tree};
use query::{candidates_sql, compile, hit_of, load_snaps, node_of, span_at, PathCache, Span};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use write::{clear_line, id_from, line_key, remove, AddError, Writer};

/// Bumped whenever the schema or the meaning of a column changes.
const SCHEMA_VERSION: i64 = 2;

/// The file name inside the per-repository cache folder.
pub const FILE_NAME: &str = "versions.sqlite";

/// The node id of `/`; every path hangs below it.
const ROOT: i64 = 1;

/// Where the catalog reads trees from: the repository (through the
/// snapshot crate's loader and its local tree cache) in the agent, and
/// generated trees in the benchmark.
pub trait TreeSource {
    fn tree(&self, id: &Id) -> std::result::Result<Arc<Tree>, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum VersionsError {
    #[error("cannot open the version catalog {path}: {source}; it is a cache, deleting it loses nothing")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("the version catalog {path} failed: {source}; delete it to have it rebuilt from the repository")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("bad search pattern {pattern:?}: {message}")]
    BadPattern { pattern: String, message: String },
}

pub type Result<T> = std::result::Result<T, VersionsError>;

/// What [`VersionCatalog::sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
    /// Backup sets catalogued again from their first snapshot because a
    /// snapshot older than their newest one appeared.
    pub rebuilt: usize,
    /// Snapshots whose trees could not be read; they are left out (and
    /// not retried until the next rebuild) so one damaged snapshot does not
    /// hold up the ones after it.
    pub failed: Vec<(Id, String)>,
}

/// How names are matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameQuery {
    /// A glob over the whole name (`*.pdf`, `report-202?.docx`),
    /// case-insensitive, as `tidemark find` takes it.
    Glob(String),
    /// The name contains this text, case-insensitive (the timeline's
    /// search box); `*` and `?` still work as wildcards.
    Contains(String),
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this host's backup sets.
    pub host: Option<String>,
    pub kind: Option<NodeKind>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    pub modified_after: Option<DateTime<Utc>>,
    pub modified_before: Option<DateTime<Utc>>,
    /// Only paths that the newest snapshot of their backup set lacks ...
    pub deleted: bool,
    /// ... and that disappeared at or after this time (implies `deleted`).
    pub deleted_since: Option<DateTime<Utc>>,
    /// Only paths present in at least one of these snapshots.
    pub in_snapshots: Vec<Id>,
}

/// One path of one backup set that matched a search.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hit {
    pub path: String,
    pub name: String,
    pub hostname: String,
    pub kind: NodeKind,
    /// Size and modification time of the newest matching version.
    pub size: u64,
    pub mtime_ns: i64,
    pub versions: u32,
    /// Snapshots that hold the path (any version).
    pub snapshots: u32,
    pub first_seen: DateTime<Utc>,
    pub first_snapshot: Id,
    pub last_seen: DateTime<Utc>,
    pub last_snapshot: Id,
    /// The newest snapshot of the backup set lacks it.
    pub deleted: bool,
    /// The time of the first snapshot that lacked it, when deleted.
    pub deleted_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SearchResult {
    pub hits: Vec<Hit>,
    /// More paths matched than the limit; refine the query to see them.
    pub truncated: bool,
}

/// One version of one path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionInfo {
    pub hostname: String,
    pub kind: NodeKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub first_snapshot: Id,
    pub first_seen: DateTime<Utc>,
    pub last_snapshot: Id,
    pub last_seen: DateTime<Utc>,
    /// Snapshots that hold this version.
    pub snapshots: u32,
    /// Still in the newest snapshot of its backup set.
    pub current: bool,
}

/// An entry a folder had in earlier snapshots and lacks in a given one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeletedEntry {
    pub name: String,
    pub kind: NodeKind,
    pub size: u64,
    pub mtime_ns: i64,
    pub last_snapshot: Id,
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub snapshots: u64,
    pub paths: u64,
    pub versions: u64,
    /// The catalog's size on disk (database and write-ahead log).
    pub bytes: u64,
}

pub struct VersionCatalog {
    path: Option<PathBuf>,
    db: Mutex<Connection>,
}

impl std::fmt::Debug for VersionCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionCatalog")
            .field("path", &self.path)
            .finish()
    }
}

impl VersionCatalog {
    /// Opens (or creates) the catalog in `dir`. A file that is not a usable
    /// database, or has an older schema, is replaced by an empty one.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        let open = |path: &Path| -> rusqlite::Result<Connection> {
            std::fs::create_dir_all(dir).map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("cannot create {}: {e}", dir.display())),
                )
            })?;
            let db = Connection::open(path)?;
            db.busy_timeout(Duration::from_secs(30))?;
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "NORMAL")?;
            // The log of a first catalogue of a million paths is as large
            // as the catalog; it shrinks back to this after a checkpoint.
            db.pragma_update(None, "journal_size_limit", 16 << 20)?;
            Ok(db)
        };
        let db = match open(&path).and_then(|db| Self::prepare(db, false)) {
            Ok(db) => db,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "rebuilding the unreadable version catalog");
                crate::remove_database(&path);
                open(&path)
                    .and_then(|db| Self::prepare(db, false))
                    .map_err(|source| VersionsError::Open {
                        path: path.clone(),
                        source,
                    })?
            }
        };
        Ok(VersionCatalog {
            path: Some(path),
            db: Mutex::new(db),
        })
    }

    /// A catalog that lives in memory only, for a repository without a
    /// cache folder: built on the first query and gone at exit.
    pub fn in_memory() -> Result<Self> {
        let err = |source| VersionsError::Open {
            path: PathBuf::from(":memory:"),
            source,
        };
        let db = Connection::open_in_memory().map_err(err)?;
        let db = Self::prepare(db, true).map_err(err)?;
        Ok(VersionCatalog {
            path: None,
            db: Mutex::new(db),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn prepare(db: Connection, fresh: bool) -> rusqlite::Result<Connection> {
        let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != SCHEMA_VERSION && !fresh {
            db.execute_batch(
                "DROP TABLE IF EXISTS names; DROP TABLE IF EXISTS versions;
                 DROP TABLE IF EXISTS nodes; DROP TABLE IF EXISTS snaps;
                 DROP TABLE IF EXISTS lines; DROP TABLE IF EXISTS broken;",
            )?;
        }
        // Names are searched through an FTS5 trigram index, which answers
        // LIKE '%abc%' from the index instead of scanning every name.
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS lines (
                 id INTEGER PRIMARY KEY,
                 host TEXT NOT NULL,
                 paths TEXT NOT NULL,
                 UNIQUE (host, paths)
             );
             CREATE TABLE IF NOT EXISTS snaps (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 id BLOB NOT NULL UNIQUE,
                 line INTEGER NOT NULL,
                 time INTEGER NOT NULL,
                 root BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS snaps_line ON snaps (line, seq);
             CREATE TABLE IF NOT EXISTS broken (id BLOB PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS nodes (
                 id INTEGER PRIMARY KEY,
                 parent INTEGER NOT NULL,
                 name TEXT NOT NULL,
                 UNIQUE (parent, name)
             );
             CREATE VIRTUAL TABLE IF NOT EXISTS names USING fts5 (
                 name, content = 'nodes', content_rowid = 'id', tokenize = 'trigram'
             );
             CREATE TABLE IF NOT EXISTS versions (
                 node INTEGER NOT NULL,
                 line INTEGER NOT NULL,
                 from_seq INTEGER NOT NULL,
                 to_seq INTEGER,
                 kind INTEGER NOT NULL,
                 size INTEGER NOT NULL,
                 mtime INTEGER NOT NULL,
                 key BLOB
             );
             CREATE INDEX IF NOT EXISTS versions_node ON versions (node, line);
             CREATE INDEX IF NOT EXISTS versions_from ON versions (line, from_seq);
             CREATE INDEX IF NOT EXISTS versions_to ON versions (line, to_seq);
             CREATE INDEX IF NOT EXISTS versions_big ON versions (size) WHERE size >= 1048576;
             INSERT OR IGNORE INTO nodes (id, parent, name) VALUES (1, 0, '/');",
        )?;
        db.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        db.query_row("SELECT count(*) FROM snaps", [], |r| r.get::<_, i64>(0))?;
        Ok(db)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut db).map_err(|source| VersionsError::Db {
            path: self.path.clone().unwrap_or_else(|| ":memory:".into()),
            source,
        })
    }

    /// Brings the catalog up to date with `snapshots` (every snapshot the
    /// repository lists, in any order): removes the ones gone, adds the new
    /// ones by diffing each against the previous one of its backup set.
    /// Each snapshot is its own transaction, so an interruption keeps
    /// everything catalogued so far.
    pub fn sync(&self, snapshots: &[(Id, Snapshot)], trees: &dyn TreeSource) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        let (known, broken) = self.with(|db| {
            let mut st = db.prepare("SELECT id, seq, line FROM snaps ORDER BY seq")?;
            let known = st
                .query_map([], |r| {
                    Ok((
                        id_from(r.get(0)?)?,
                        (r.get::<_, i64>(1)?, r.get::<_, i64>(2)?),
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = db.prepare("SELECT id FROM broken")?;
            let broken = st
                .query_map([], |r| id_from(r.get(0)?))?
                .collect::<rusqlite::Result<HashSet<_>>>()?;
            Ok((known, broken))
        })?;
        let listed: HashSet<Id> = snapshots.iter().map(|(id, _)| *id).collect();
        for (id, (seq, line)) in &known {
            if !listed.contains(id) {
                self.with(|db| remove(db, *seq, *line))?;
                report.removed += 1;
            }
        }
        let known: HashSet<Id> = known.into_iter().map(|(id, _)| id).collect();
        let mut by_line: BTreeMap<(String, String), Vec<&(Id, Snapshot)>> = BTreeMap::new();
        for s in snapshots {
            by_line.entry(line_key(&s.1)).or_default().push(s);
        }
        for ((host, paths), mut list) in by_line {
            list.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0 .0.cmp(&b.0 .0)));
            let mut new: Vec<&(Id, Snapshot)> = list
                .iter()
                .copied()
                .filter(|(id, _)| !known.contains(id) && !broken.contains(id))
                .collect();
            if new.is_empty() {
                continue;
            }
            let line = self.with(|db| {
                db.execute(
                    "INSERT OR IGNORE INTO lines (host, paths) VALUES (?1, ?2)",
                    params![host, paths],
                )?;
                db.query_row(
                    "SELECT id FROM lines WHERE host = ?1 AND paths = ?2",
                    params![host, paths],
                    |r| r.get::<_, i64>(0),
                )
            })?;
            let latest: Option<(i64, Id)> = self.with(|db| {
                db.query_row(
                    "SELECT time, root FROM snaps WHERE line = ?1 ORDER BY seq DESC LIMIT 1",
                    [line],
                    |r| Ok((r.get(0)?, id_from(r.get(1)?)?)),
                )
                .optional()
            })?;
            let mut base = latest.map(|(_, root)| root);
            if let Some((time, _)) = latest {
                if new[0].1.time.timestamp_millis() < time {
                    // Spans need the line's snapshots in time order; a
                    // late arrival from the past means starting over.
                    self.with(|db| clear_line(db, line))?;
                    report.rebuilt += 1;
                    base = None;
                    new = list.clone();
                }
            }
            for (id, snap) in new {
                match self.add(line, *id, snap, base, trees) {
                    Ok(()) => {
                        report.added += 1;
                        base = Some(snap.tree);
                    }
                    Err(AddError::Trees(message)) => {
                        tracing::warn!(snapshot = %id.to_hex(), %message, "left out of the version catalog");
                        self.with(|db| {
                            db.execute("INSERT OR IGNORE INTO broken (id) VALUES (?1)", [&id.0[..]])
                        })?;
                        report.failed.push((*id, message));
                    }
                    Err(AddError::Db(e)) => return Err(e),
                }
            }
        }
        if report.added + report.removed > 0 {
            // Fold the write-ahead log into the database now rather than
            // leave it at its largest until the next automatic checkpoint.
            self.with(|db| db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))?;
        }
        Ok(report)
    }

    /// Forgets everything, so the next [`sync`](Self::sync) catalogues
    /// every snapshot from scratch.
    pub fn clear(&self) -> Result<()> {
        self.with(|db| {
            db.execute_batch(
                "BEGIN;
                 DELETE FROM versions; DELETE FROM snaps; DELETE FROM lines; DELETE FROM broken;
                 INSERT INTO names (names) VALUES ('delete-all');
                 DELETE FROM nodes WHERE id <> 1;
                 COMMIT;",
            )
        })
    }

    fn add(
        &self,
        line: i64,
        id: Id,
        snap: &Snapshot,
        base: Option<Id>,
        trees: &dyn TreeSource,
    ) -> std::result::Result<(), AddError> {
        // One transaction per snapshot: a tree that cannot be read rolls
        // the whole snapshot back.
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        let db_err = |source| {
            AddError::Db(VersionsError::Db {
                path: self.path.clone().unwrap_or_else(|| ":memory:".into()),
                source,
            })
        };
        let tx = db.transaction().map_err(db_err)?;
        let seq: i64 = tx
            .query_row(
                "INSERT INTO snaps (id, line, time, root) VALUES (?1, ?2, ?3, ?4) RETURNING seq",
                params![
                    &id.0[..],
                    line,
                    snap.time.timestamp_millis(),
                    &snap.tree.0[..]
                ],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        let mut w = Writer {
            tx: &tx,
            path: self.path.clone().unwrap_or_else(|| ":memory:".into()),
            line,
            seq,
            trees,
        };
        // The same root as the previous snapshot: nothing changed at all.
        if base != Some(snap.tree) {
            let new = w.load(&snap.tree)?;
            let old = base.map(|b| w.load(&b)).transpose()?;
            w.diff(ROOT, old, new)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(())
    }

    /// Paths whose name matches, across every catalogued snapshot, at most
    /// `limit` of them (in the order the catalog first saw them).
    pub fn search(&self, query: &NameQuery, filter: &Filter, limit: usize) -> Result<SearchResult> {
        let (like, glob) = compile(query)?;
        self.with(|db| {
            let snaps = load_snaps(db)?;
            let wanted: HashSet<i64> = filter
                .in_snapshots
                .iter()
                .filter_map(|id| snaps.by_id(id).map(|s| s.seq))
                .collect();
            if !filter.in_snapshots.is_empty() && wanted.is_empty() {
                return Ok(SearchResult {
                    hits: Vec::new(),
                    truncated: false,
                });
            }
            let mut paths = PathCache::default();
            let mut hits = Vec::new();
            let mut truncated = false;
            let Some((sql, args)) = candidates_sql(&snaps, filter, &like)? else {
                return Ok(SearchResult {
                    hits: Vec::new(),
                    truncated: false,
                });
            };
            let mut names = db.prepare_cached(&sql)?;
            let mut spans_of = db.prepare_cached(
                "SELECT line, from_seq, to_seq, kind, size, mtime FROM versions
                 WHERE node = ?1 ORDER BY line, from_seq",
            )?;
            let mut rows = names.query(rusqlite::params_from_iter(args.iter()))?;
            'names: while let Some(r) = rows.next()? {
                let node: i64 = r.get(0)?;
                let name: String = r.get(1)?;
                if !glob.is_match(&name) {
                    continue;
                }
                let spans = spans_of
                    .query_map([node], |r| span_at(r, 0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut i = 0;
                while i < spans.len() {
                    let line = spans[i].line;
                    let end = spans[i..]
                        .iter()
                        .position(|s| s.line != line)
                        .map_or(spans.len(), |p| i + p);
                    let group = &spans[i..end];
                    i = end;
                    let Some(hit) = hit_of(&snaps, &wanted, filter, group, &name) else {
                        continue;
                    };
                    if hits.len() == limit {
                        truncated = true;
                        break 'names;
                    }
                    let path = paths.path(db, node)?;
                    hits.push(Hit { path, ..hit });
                }
            }
            Ok(SearchResult { hits, truncated })
        })
    }

    /// Every version of the path, oldest first, per backup set (only
    /// `host`'s when given).
    pub fn versions(&self, path: &str, host: Option<&str>) -> Result<Vec<VersionInfo>> {
        self.with(|db| {
            let Some(node) = node_of(db, path)? else {
                return Ok(Vec::new());
            };
            let snaps = load_snaps(db)?;
            let mut st = db.prepare_cached(
                "SELECT line, from_seq, to_seq, kind, size, mtime FROM versions
                 WHERE node = ?1 ORDER BY from_seq",
            )?;
            let spans = st.query_map([node], |r| span_at(r, 0))?;
            let mut out = Vec::new();
            for s in spans {
                let s = s?;
                let hostname = snaps.hosts.get(&s.line).cloned().unwrap_or_default();
                if host.is_some_and(|h| h != hostname) {
                    continue;
                }
                let (Some(first), Some(last)) =
                    (snaps.row(s.from), snaps.last_in(s.line, s.from, s.to))
                else {
                    continue;
                };
                out.push(VersionInfo {
                    hostname,
                    kind: s.kind,
                    size: s.size,
                    mtime_ns: s.mtime_ns,
                    first_snapshot: first.id,
                    first_seen: first.time,
                    last_snapshot: last.id,
                    last_seen: last.time,
                    snapshots: snaps.count_in(s.line, s.from, s.to),
                    current: s.to.is_none(),
                });
            }
            Ok(out)
        })
    }

    /// The entries that folder `dir` had in earlier snapshots of the same
    /// backup set as `at`, and lacks in `at`, each as last seen.
    pub fn deleted_in(&self, dir: &str, at: &Id) -> Result<Vec<DeletedEntry>> {
        self.with(|db| {
            let snaps = load_snaps(db)?;
            let Some(at) = snaps.by_id(at).copied() else {
                return Ok(Vec::new());
            };
            let Some(node) = node_of(db, dir)? else {
                return Ok(Vec::new());
            };
            let mut st = db.prepare_cached(
                // From the folder's children to their versions: without
                // statistics SQLite would otherwise walk every version of
                // the backup set.
                "SELECT n.id, n.name, v.line, v.from_seq, v.to_seq, v.kind, v.size, v.mtime
                 FROM nodes n CROSS JOIN versions v INDEXED BY versions_node
                 WHERE n.parent = ?1 AND v.node = n.id AND v.line = ?2 AND v.from_seq <= ?3
                 ORDER BY n.id, v.from_seq",
            )?;
            let mut by_node: BTreeMap<i64, (String, Vec<Span>)> = BTreeMap::new();
            let rows = st.query_map(params![node, at.line, at.seq], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, span_at(r, 2)?))
            })?;
            for row in rows {
                let (n, name, span) = row?;
                by_node
                    .entry(n)
                    .or_insert_with(|| (name, Vec::new()))
                    .1
                    .push(span);
            }
            let mut out = Vec::new();
            for (_, (name, spans)) in by_node {
                if spans.iter().any(|s| s.contains(at.seq)) {
                    continue;
                }
                // The newest version before `at`.
                let Some(s) = spans.iter().max_by_key(|s| s.from) else {
                    continue;
                };
                let Some(last) = snaps.last_in(s.line, s.from, s.to) else {
                    continue;
                };
                out.push(DeletedEntry {
                    name,
                    kind: s.kind,
                    size: s.size,
                    mtime_ns: s.mtime_ns,
                    last_snapshot: last.id,
                    last_seen: last.time,
                });
            }
            Ok(out)
        })
    }

    pub fn stats(&self) -> Result<Stats> {
        let mut s = self.with(|db| {
            let count = |t: &str| -> rusqlite::Result<u64> {
                db.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n as u64)
            };
            Ok(Stats {
                snapshots: count("snaps")?,
                paths: count("nodes")?.saturating_sub(1),
                versions: count("versions")?,
                bytes: 0,
            })
        })?;
        if let Some(p) = &self.path {
            // The database and its log; the shared-memory index is transient.
            s.bytes = crate::database_files(p)[..2]
                .iter()
                .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
                .sum();
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
