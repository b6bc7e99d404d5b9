//! This machine's SQLite cache of one repository.
//!
//! It owns the persistent chunk index ([`repository::index::IndexStore`]),
//! so memory stays flat at any repository size and an open reads only the
//! index files written since the last run, and the tree cache
//! ([`repository::BlobCache`]), so the parent snapshot's file metadata
//! (size, mtime, ctime, inode, chunks) is read locally when a backup decides
//! which files are unchanged, even against S3 or SFTP.
//!
//! [`versions`] is the version catalog: every path of every snapshot as
//! spans of snapshots, with a trigram name index, for `find`, the
//! timeline's search, "all versions" and "deleted files".
//!
//! Everything here is a cache: it must never be the only copy of anything.
//! A damaged or outdated database is deleted and rebuilt from the repository.
//! It must not know about files on disk, the terminal or any front end.

pub mod versions;

use crypto::Id;
use format::{BlobKind, IndexPack};
use repository::index::{IndexStore, IndexStoreError, LoadedFile, Location, StoreResult};
use repository::BlobCache;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Bumped whenever the schema changes; an older database is rebuilt.
const SCHEMA_VERSION: i64 = 1;

/// The file name inside the per-repository cache folder.
pub const FILE_NAME: &str = "catalog.sqlite";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "cannot open the local catalog {path}: {source}; it is a cache, deleting it loses nothing"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create the cache folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Catalog {
    path: PathBuf,
    db: Mutex<Connection>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

/// A SQLite database file with its write-ahead log and shared-memory
/// index: what a catalog is on disk.
pub(crate) fn database_files(path: &Path) -> [PathBuf; 3] {
    ["", "-wal", "-shm"].map(|suffix| {
        let mut p = path.to_path_buf().into_os_string();
        p.push(suffix);
        PathBuf::from(p)
    })
}

/// Answers `probe` for every id, in the caller's order, but asks in key
/// order: each lookup then lands next to the previous one in a B-tree keyed
/// by id, and fewer pages are touched than in the request's order. Used by
/// this catalog's blob index and by the server's ownership table.
pub fn probe_in_key_order<E>(
    ids: &[Id],
    mut probe: impl FnMut(&Id) -> Result<bool, E>,
) -> Result<Vec<bool>, E> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_unstable_by_key(|&i| ids[i]);
    let mut out = vec![false; ids.len()];
    for i in order {
        out[i] = probe(&ids[i])?;
    }
    Ok(out)
}

/// Deletes a damaged cache database; it is rebuilt from the repository.
pub(crate) fn remove_database(path: &Path) {
    for f in database_files(path) {
        let _ = std::fs::remove_file(f);
    }
}

impl Catalog {
    /// Opens (or creates) the catalog in `dir`. A file that is not a usable
    /// database, or has an older schema, is replaced by an empty one.
    pub fn open(dir: &Path) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(dir).map_err(|source| CatalogError::Folder {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = match Self::connect(&path) {
            Ok(db) => db,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "rebuilding the unreadable local catalog");
                remove_database(&path);
                Self::connect(&path).map_err(|source| CatalogError::Open {
                    path: path.clone(),
                    source,
                })?
            }
        };
        Ok(Catalog {
            path,
            db: Mutex::new(db),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connect(path: &Path) -> rusqlite::Result<Connection> {
        let db = Connection::open(path)?;
        // The agent and a CLI run may share the file; wait for each other.
        db.busy_timeout(Duration::from_secs(30))?;
        // WAL: readers do not block the writer. synchronous=NORMAL: a power
        // cut may lose the last commits, never consistency, and this is a
        // cache that is rebuilt from the repository anyway.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        // A bounded page cache (16 MiB) keeps memory flat at any index size.
        db.pragma_update(None, "cache_size", -16_384)?;
        let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            db.execute_batch(
                "DROP TABLE IF EXISTS index_files;
                 DROP TABLE IF EXISTS packs;
                 DROP TABLE IF EXISTS blobs;
                 DROP TABLE IF EXISTS trees;",
            )?;
        }
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS index_files (
                 id BLOB PRIMARY KEY,
                 supersedes BLOB NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS packs (
                 n INTEGER PRIMARY KEY,
                 id BLOB NOT NULL UNIQUE,
                 size INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS blobs (
                 id BLOB PRIMARY KEY,
                 pack INTEGER NOT NULL,
                 offset INTEGER NOT NULL,
                 length INTEGER NOT NULL,
                 raw_length INTEGER NOT NULL,
                 kind INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS trees (
                 id BLOB NOT NULL UNIQUE,
                 sealed BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS unindexed_packs (
                 id BLOB PRIMARY KEY
             ) WITHOUT ROWID;",
        )?;
        db.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        // Check the file is really usable now rather than at the first lookup.
        db.query_row("SELECT count(*) FROM index_files", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok(db)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut db).map_err(|e| IndexStoreError(format!("{}: {e}", self.path.display())))
    }
}

fn kind_code(k: BlobKind) -> i64 {
    match k {
        BlobKind::Data => 0,
        BlobKind::Tree => 1,
    }
}

fn id_from(bytes: Vec<u8>) -> rusqlite::Result<Id> {
    Id::from_slice(&bytes).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            bytes.len(),
            rusqlite::types::Type::Blob,
            "an id is 32 bytes".into(),
        )
    })
}

fn u32_col(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u32> {
    let v: i64 = row.get(i)?;
    u32::try_from(v).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(i, v))
}

impl IndexStore for Catalog {
    fn loaded_files(&self) -> StoreResult<Vec<LoadedFile>> {
        self.with(|db| {
            let mut st = db.prepare("SELECT id, supersedes FROM index_files")?;
            let rows = st.query_map([], |r| {
                let id = id_from(r.get(0)?)?;
                let sup: Vec<u8> = r.get(1)?;
                let supersedes = sup
                    .chunks_exact(32)
                    .map(|c| id_from(c.to_vec()))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(LoadedFile { id, supersedes })
            })?;
            rows.collect()
        })
    }

    fn clear(&self) -> StoreResult<()> {
        self.with(|db| {
            db.execute_batch(
                "BEGIN; DELETE FROM index_files; DELETE FROM blobs; DELETE FROM packs; COMMIT;",
            )
        })
    }

    fn add_file(&self, file: &LoadedFile, packs: &[IndexPack]) -> StoreResult<()> {
        self.with(|db| {
            let tx = db.transaction()?;
            {
                let sup: Vec<u8> = file.supersedes.iter().flat_map(|i| i.0).collect();
                tx.execute(
                    "INSERT OR REPLACE INTO index_files (id, supersedes) VALUES (?1, ?2)",
                    params![&file.id.0[..], sup],
                )?;
                let mut add_pack = tx.prepare_cached(
                    "INSERT INTO packs (id, size) VALUES (?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET size = excluded.size RETURNING n",
                )?;
                let mut add_blob = tx.prepare_cached(
                    "INSERT OR IGNORE INTO blobs (id, pack, offset, length, raw_length, kind)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                let mut indexed = tx.prepare_cached("DELETE FROM unindexed_packs WHERE id = ?1")?;
                for p in packs {
                    indexed.execute([&p.id.0[..]])?;
                    let n: i64 =
                        add_pack.query_row(params![&p.id.0[..], p.size as i64], |r| r.get(0))?;
                    for b in &p.blobs {
                        add_blob.execute(params![
                            &b.id.0[..],
                            n,
                            b.offset,
                            b.length,
                            b.raw_length,
                            kind_code(b.kind)
                        ])?;
                    }
                }
            }
            tx.commit()
        })
    }

    fn lookup(&self, id: &Id) -> StoreResult<Option<Location>> {
        self.with(|db| {
            // Two single-table lookups, not a join: SQLite let the join's
            // plan depend on the bound id, so every call re-prepared the
            // statement (13,000 times in a no-change backup of the bench
            // set, a fifth of its CPU time).
            let mut st = db.prepare_cached(
                "SELECT pack, offset, length, raw_length, kind FROM blobs WHERE id = ?1",
            )?;
            let Some((pack, offset, length, raw_length, kind)) = st
                .query_row([&id.0[..]], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        u32_col(r, 1)?,
                        u32_col(r, 2)?,
                        u32_col(r, 3)?,
                        r.get::<_, i64>(4)?,
                    ))
                })
                .optional()?
            else {
                return Ok(None);
            };
            let mut st = db.prepare_cached("SELECT id FROM packs WHERE n = ?1")?;
            let pack = st.query_row([pack], |r| id_from(r.get(0)?))?;
            Ok(Some(Location {
                pack,
                offset,
                length,
                raw_length,
                kind: if kind == 1 {
                    BlobKind::Tree
                } else {
                    BlobKind::Data
                },
            }))
        })
    }

    fn contains_many(&self, ids: &[Id]) -> StoreResult<Vec<bool>> {
        self.with(|db| {
            // One read transaction for the batch: alone, each lookup took
            // and released SQLite's file lock (two fcntl calls), a fifth of
            // the server's time answering chunk queries.
            let tx = db.transaction()?;
            let out = {
                let mut st = tx.prepare_cached("SELECT 1 FROM blobs WHERE id = ?1")?;
                probe_in_key_order(ids, |id| st.exists([&id.0[..]]))?
            };
            tx.commit()?;
            Ok(out)
        })
    }

    fn has_pack(&self, id: &Id) -> StoreResult<bool> {
        self.with(|db| {
            let mut st = db.prepare_cached("SELECT 1 FROM packs WHERE id = ?1")?;
            st.exists([&id.0[..]])
        })
    }

    fn note_unindexed_pack(&self, id: &Id) -> StoreResult<()> {
        self.with(|db| {
            db.prepare_cached("INSERT OR IGNORE INTO unindexed_packs (id) VALUES (?1)")?
                .execute([&id.0[..]])
                .map(drop)
        })
    }

    fn unindexed_packs(&self) -> StoreResult<Option<Vec<Id>>> {
        self.with(|db| {
            let mut st = db.prepare("SELECT id FROM unindexed_packs")?;
            let rows = st.query_map([], |r| id_from(r.get(0)?))?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map(Some)
        })
    }

    fn forget_unindexed_packs(&self, ids: &[Id]) -> StoreResult<()> {
        self.with(|db| {
            let tx = db.transaction()?;
            {
                let mut st = tx.prepare_cached("DELETE FROM unindexed_packs WHERE id = ?1")?;
                for id in ids {
                    st.execute([&id.0[..]])?;
                }
            }
            tx.commit()
        })
    }

    fn packs(&self) -> StoreResult<Vec<(Id, u64)>> {
        self.with(|db| {
            let mut st = db.prepare("SELECT id, size FROM packs")?;
            let rows = st.query_map([], |r| {
                Ok((id_from(r.get(0)?)?, r.get::<_, i64>(1)? as u64))
            })?;
            rows.collect()
        })
    }

    fn blob_count(&self) -> StoreResult<u64> {
        self.with(|db| db.query_row("SELECT count(*) FROM blobs", [], |r| r.get::<_, i64>(0)))
            .map(|n| n as u64)
    }
}

impl BlobCache for Catalog {
    fn get(&self, id: &Id) -> Option<Vec<u8>> {
        let r = self.with(|db| {
            let mut st = db.prepare_cached("SELECT sealed FROM trees WHERE id = ?1")?;
            st.query_row([&id.0[..]], |r| r.get(0)).optional()
        });
        r.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "tree cache read failed");
            None
        })
    }

    fn put(&self, id: &Id, sealed: &[u8]) {
        let r = self.with(|db| {
            let mut st =
                db.prepare_cached("INSERT OR REPLACE INTO trees (id, sealed) VALUES (?1, ?2)")?;
            st.execute(params![&id.0[..], sealed]).map(|_| ())
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "tree cache write failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use format::BlobEntry;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    fn pack(n: u8, blobs: &[u8]) -> IndexPack {
        IndexPack {
            id: id(n),
            size: 1000 + u64::from(n),
            blobs: blobs
                .iter()
                .enumerate()
                .map(|(i, b)| BlobEntry {
                    id: id(*b),
                    kind: if *b % 2 == 0 {
                        BlobKind::Data
                    } else {
                        BlobKind::Tree
                    },
                    offset: i as u32 * 10,
                    length: 10,
                    raw_length: 20 + u32::from(*b),
                })
                .collect(),
        }
    }

    #[test]
    fn index_survives_reopen_and_keeps_first_location() {
        let dir = tempfile::tempdir().unwrap();
        let file = LoadedFile {
            id: id(1),
            supersedes: vec![id(7), id(8)],
        };
        {
            let c = Catalog::open(dir.path()).unwrap();
            c.add_file(&file, &[pack(10, &[50, 51]), pack(11, &[51, 52])])
                .unwrap();
        }
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(c.loaded_files().unwrap(), vec![file]);
        let l = c.lookup(&id(51)).unwrap().unwrap();
        assert_eq!(
            (l.pack, l.offset, l.raw_length, l.kind),
            (id(10), 10, 71, BlobKind::Tree)
        );
        assert_eq!(c.lookup(&id(52)).unwrap().unwrap().pack, id(11));
        assert!(c.lookup(&id(99)).unwrap().is_none());
        assert!(c.has_pack(&id(11)).unwrap());
        assert!(!c.has_pack(&id(12)).unwrap());
        assert_eq!(c.blob_count().unwrap(), 3);
        let mut packs = c.packs().unwrap();
        packs.sort();
        assert_eq!(packs, vec![(id(10), 1010), (id(11), 1011)]);
        c.clear().unwrap();
        assert!(c.lookup(&id(51)).unwrap().is_none());
        assert!(c.loaded_files().unwrap().is_empty());
    }

    #[test]
    fn garbage_file_is_replaced_by_an_empty_catalog() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"this is not a database at all, just junk bytes that go on for a while ..........................................").unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        assert!(c.loaded_files().unwrap().is_empty());
        BlobCache::put(&c, &id(3), b"sealed");
        assert_eq!(BlobCache::get(&c, &id(3)).as_deref(), Some(&b"sealed"[..]));
    }
}
