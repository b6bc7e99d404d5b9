//! The server's metadata: users, enrolment codes, devices, who owns which
//! chunk, whose snapshot is which, policies and the audit log.
//!
//! Behind the [`Meta`] trait so that a scale-out deployment can keep it in
//! PostgreSQL; [`SqliteMeta`] is the embedded default. Secrets (codes, device
//! tokens) are stored only as keyed hashes.

use crypto::Id;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("server metadata database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("server metadata database has schema version {found}, this build knows up to {SCHEMA_VERSION}: run a newer Tidemark server")]
    NewerSchema { found: i64 },
}

/// The schema this build writes. Version 1 added what the server observes
/// about commits (when it received each snapshot, bursts, quarantine).
pub const SCHEMA_VERSION: i64 = 1;

pub type MetaResult<T> = std::result::Result<T, MetaError>;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Device {
    pub id: i64,
    pub user_id: i64,
    pub user: String,
    pub name: String,
    pub revoked: bool,
    pub created: i64,
    pub last_seen: Option<i64>,
    pub last_backup: Option<i64>,
    /// Bytes of packs this device uploaded (what it added to the store).
    pub stored_bytes: u64,
    /// When the server flagged this device (a burst of commits its policy
    /// does not explain), until an administrator clears it.
    pub flagged: Option<i64>,
    pub flag_reason: Option<String>,
}

/// An authenticated device with its user.
#[derive(Debug, Clone)]
pub struct Principal {
    pub device_id: i64,
    pub user: User,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotRow {
    pub id: Id,
    pub user_id: i64,
    pub device_id: i64,
    /// When the server received and committed the snapshot: retention and
    /// "latest" go by this, never by the time a device claims.
    pub time: i64,
    /// The same in milliseconds: commits seconds apart must still sort in
    /// the order they arrived.
    pub received_ms: i64,
    /// The time inside the snapshot, as the device claims it.
    pub claimed: i64,
    /// Committed during a burst the server flagged: kept, but retention
    /// neither removes it nor lets it push older snapshots out.
    pub suspect: bool,
}

/// A device's commits in a recent window, as the server saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitCounts {
    pub total: u64,
    /// Commits that came with no chunk uploaded or proved since the
    /// device's commit before.
    pub idle: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub time: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// What an enrolment code grants, once checked.
#[derive(Debug, Clone)]
pub struct CodeGrant {
    pub user_id: i64,
}

pub trait Meta: Send + Sync {
    fn create_user(&self, name: &str, admin: bool) -> MetaResult<User>;
    fn users(&self) -> MetaResult<Vec<User>>;
    fn user_by_name(&self, name: &str) -> MetaResult<Option<User>>;
    /// `uses` of `None` means any number of uses until `expires`.
    fn create_code(
        &self,
        code_hash: &[u8; 32],
        user_id: i64,
        uses: Option<u32>,
        expires: i64,
    ) -> MetaResult<()>;
    /// The user and expiry of a code that could still enrol, without using it.
    fn peek_code(&self, code_hash: &[u8; 32], now: i64) -> MetaResult<Option<(i64, i64)>>;
    /// Uses one use of a code, atomically; `None` when unknown, spent or expired.
    fn redeem_code(&self, code_hash: &[u8; 32], now: i64) -> MetaResult<Option<CodeGrant>>;
    fn create_device(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> MetaResult<i64>;
    /// The device and user of a token, if the token is known and not revoked.
    fn authenticate(&self, token_hash: &[u8; 32], now: i64) -> MetaResult<Option<Principal>>;
    fn devices(&self) -> MetaResult<Vec<Device>>;
    fn revoke_device(&self, device_id: i64) -> MetaResult<bool>;
    fn add_uploaded(&self, device_id: i64, bytes: u64) -> MetaResult<()>;
    /// One device, revoked or not.
    fn device(&self, device_id: i64) -> MetaResult<Option<Device>>;
    /// Records a commit by `device_id`: whether any chunk was granted to it
    /// since its commit before (and marks now as that point).
    fn note_commit(&self, device_id: i64) -> MetaResult<bool>;
    /// The device's snapshots received since `since`.
    fn commits_since(&self, device_id: i64, since: i64) -> MetaResult<CommitCounts>;
    /// Flags a device (if not flagged yet) and puts its snapshots received
    /// since `suspect_since` in quarantine.
    fn flag_device(
        &self,
        device_id: i64,
        now: i64,
        reason: &str,
        suspect_since: i64,
    ) -> MetaResult<()>;
    /// Clears a flag and releases the device's snapshots from quarantine:
    /// an administrator vouched for them.
    fn unflag_device(&self, device_id: i64) -> MetaResult<bool>;
    /// For each id, how many users other than `user_id` own it.
    fn other_owners(&self, user_id: i64, ids: &[Id]) -> MetaResult<Vec<u32>>;
    /// Of `ids`, the ones `user_id` owns.
    fn owned(&self, user_id: i64, ids: &[Id]) -> MetaResult<Vec<bool>>;
    /// Gives `user_id` ownership of `ids`, which `device_id` uploaded or
    /// proved at `now`: until a snapshot uses them, they are kept by
    /// [`Meta::fresh_chunks`] from an online prune.
    fn grant(&self, user_id: i64, device_id: i64, ids: &[Id], now: i64) -> MetaResult<()>;
    /// Chunks uploaded or proved since `since`, or since `active_since` by a
    /// device seen since `seen_since` (one still backing up: a first backup
    /// over a slow link can upload for days before it commits).
    fn fresh_chunks(&self, since: i64, active_since: i64, seen_since: i64) -> MetaResult<Vec<Id>>;
    /// Forgets the freshness of chunks a snapshot now uses, and of those no
    /// longer fresh by [`Meta::fresh_chunks`]'s rule.
    fn forget_fresh(
        &self,
        used: &dyn Fn(&Id) -> bool,
        since: i64,
        active_since: i64,
        seen_since: i64,
    ) -> MetaResult<usize>;
    /// `idle`: the commit came with no new chunk (see [`Meta::note_commit`]).
    fn add_snapshot(&self, row: &SnapshotRow, idle: bool) -> MetaResult<()>;
    fn snapshots(&self, user_id: Option<i64>) -> MetaResult<Vec<SnapshotRow>>;
    fn snapshot(&self, id: &Id) -> MetaResult<Option<SnapshotRow>>;
    fn delete_snapshot(&self, id: &Id) -> MetaResult<bool>;
    fn audit(&self, now: i64, actor: &str, action: &str, detail: &str) -> MetaResult<()>;
    fn audit_log(&self, limit: u32) -> MetaResult<Vec<AuditEntry>>;
    fn set_policy(&self, json: &str) -> MetaResult<()>;
    fn policy(&self) -> MetaResult<Option<String>>;
    /// Chunks owned per user (for usage figures).
    fn owned_counts(&self) -> MetaResult<Vec<(String, u64)>>;
}

pub struct SqliteMeta {
    db: Mutex<Connection>,
}

/// A code's user, uses left and expiry, if it could still enrol now.
fn usable_code(
    db: &Connection,
    code_hash: &[u8; 32],
    now: i64,
) -> rusqlite::Result<Option<(i64, Option<i64>, i64)>> {
    let row: Option<(i64, Option<i64>, i64)> = db
        .query_row(
            "SELECT user_id, uses_left, expires FROM codes WHERE hash = ?1",
            [&code_hash[..]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    Ok(row.filter(|(_, uses, expires)| *expires > now && uses.is_none_or(|u| u > 0)))
}

impl SqliteMeta {
    pub fn open(path: &Path) -> MetaResult<Self> {
        let mut db = Connection::open(path)?;
        db.busy_timeout(Duration::from_secs(30))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed snapshot or ownership grant survives a power cut;
        // the server answers "stored" only after the commit.
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS users (
                 id INTEGER PRIMARY KEY,
                 name TEXT NOT NULL UNIQUE,
                 admin INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS codes (
                 hash BLOB PRIMARY KEY,
                 user_id INTEGER NOT NULL REFERENCES users(id),
                 uses_left INTEGER,
                 expires INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS devices (
                 id INTEGER PRIMARY KEY,
                 user_id INTEGER NOT NULL REFERENCES users(id),
                 name TEXT NOT NULL,
                 token_hash BLOB NOT NULL UNIQUE,
                 revoked INTEGER NOT NULL DEFAULT 0,
                 created INTEGER NOT NULL,
                 last_seen INTEGER,
                 last_backup INTEGER,
                 stored_bytes INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS owners (
                 chunk BLOB NOT NULL,
                 user_id INTEGER NOT NULL,
                 PRIMARY KEY (chunk, user_id)
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS fresh (
                 chunk BLOB PRIMARY KEY,
                 device_id INTEGER NOT NULL,
                 time INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS snapshots (
                 id BLOB PRIMARY KEY,
                 user_id INTEGER NOT NULL REFERENCES users(id),
                 device_id INTEGER NOT NULL,
                 time INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS audit (
                 n INTEGER PRIMARY KEY,
                 time INTEGER NOT NULL,
                 actor TEXT NOT NULL,
                 action TEXT NOT NULL,
                 detail TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS policy (
                 k INTEGER PRIMARY KEY CHECK (k = 0),
                 json TEXT NOT NULL
             );",
        )?;
        migrate(&mut db)?;
        Ok(SqliteMeta { db: Mutex::new(db) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> MetaResult<T> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&mut db)?)
    }
}

/// Brings a database of an older schema up to [`SCHEMA_VERSION`], in one
/// transaction, and refuses one a newer server wrote.
fn migrate(db: &mut Connection) -> MetaResult<()> {
    let found: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(MetaError::NewerSchema { found });
    }
    let tx = db.transaction()?;
    if found < 1 {
        // Rows of older servers keep their time as both received and
        // claimed: nothing better is known about them.
        tx.execute_batch(
            "ALTER TABLE snapshots ADD COLUMN claimed INTEGER;
             UPDATE snapshots SET claimed = time;
             ALTER TABLE snapshots ADD COLUMN received_ms INTEGER;
             UPDATE snapshots SET received_ms = time * 1000;
             ALTER TABLE snapshots ADD COLUMN idle INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE snapshots ADD COLUMN suspect INTEGER NOT NULL DEFAULT 0;
             CREATE INDEX IF NOT EXISTS snapshots_by_device ON snapshots (device_id, time);
             ALTER TABLE devices ADD COLUMN flagged INTEGER;
             ALTER TABLE devices ADD COLUMN flag_reason TEXT;
             ALTER TABLE devices ADD COLUMN granted INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE devices ADD COLUMN granted_at_commit INTEGER NOT NULL DEFAULT 0;",
        )?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

const DEVICE_SELECT: &str = "SELECT d.id, d.user_id, u.name, d.name, d.revoked, d.created,
        d.last_seen, (SELECT max(time) FROM snapshots s WHERE s.device_id = d.id),
        d.stored_bytes, d.flagged, d.flag_reason
     FROM devices d JOIN users u ON u.id = d.user_id";

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: r.get(0)?,
        user_id: r.get(1)?,
        user: r.get(2)?,
        name: r.get(3)?,
        revoked: r.get(4)?,
        created: r.get(5)?,
        last_seen: r.get(6)?,
        last_backup: r.get(7)?,
        stored_bytes: r.get::<_, i64>(8)? as u64,
        flagged: r.get(9)?,
        flag_reason: r.get(10)?,
    })
}

/// Which `fresh` rows still hold their chunk: ?1 since, ?2 active since,
/// ?3 the device seen since (and not revoked).
const FRESH: &str = "time >= ?1 OR (time >= ?2 AND device_id IN
     (SELECT id FROM devices WHERE last_seen >= ?3 AND revoked = 0))";

fn id_col(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Id> {
    let b: Vec<u8> = row.get(i)?;
    Id::from_slice(&b).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            b.len(),
            rusqlite::types::Type::Blob,
            "an id is 32 bytes".into(),
        )
    })
}

fn snapshot_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRow> {
    let time: i64 = r.get(3)?;
    Ok(SnapshotRow {
        id: id_col(r, 0)?,
        user_id: r.get(1)?,
        device_id: r.get(2)?,
        time,
        received_ms: r.get::<_, Option<i64>>(6)?.unwrap_or(time * 1000),
        claimed: r.get::<_, Option<i64>>(4)?.unwrap_or(time),
        suspect: r.get(5)?,
    })
}

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        admin: r.get(2)?,
    })
}

impl Meta for SqliteMeta {
    fn create_user(&self, name: &str, admin: bool) -> MetaResult<User> {
        self.with(|db| {
            db.execute(
                "INSERT INTO users (name, admin) VALUES (?1, ?2)",
                params![name, admin],
            )?;
            Ok(User {
                id: db.last_insert_rowid(),
                name: name.to_string(),
                admin,
            })
        })
    }

    fn users(&self) -> MetaResult<Vec<User>> {
        self.with(|db| {
            let mut st = db.prepare("SELECT id, name, admin FROM users ORDER BY id")?;
            let rows = st.query_map([], user_row)?;
            rows.collect()
        })
    }

    fn user_by_name(&self, name: &str) -> MetaResult<Option<User>> {
        self.with(|db| {
            db.query_row(
                "SELECT id, name, admin FROM users WHERE name = ?1",
                [name],
                user_row,
            )
            .optional()
        })
    }

    fn create_code(
        &self,
        code_hash: &[u8; 32],
        user_id: i64,
        uses: Option<u32>,
        expires: i64,
    ) -> MetaResult<()> {
        self.with(|db| {
            db.execute(
                "INSERT INTO codes (hash, user_id, uses_left, expires) VALUES (?1, ?2, ?3, ?4)",
                params![&code_hash[..], user_id, uses, expires],
            )
            .map(|_| ())
        })
    }

    fn peek_code(&self, code_hash: &[u8; 32], now: i64) -> MetaResult<Option<(i64, i64)>> {
        self.with(|db| {
            Ok(usable_code(db, code_hash, now)?.map(|(user, _, expires)| (user, expires)))
        })
    }

    fn redeem_code(&self, code_hash: &[u8; 32], now: i64) -> MetaResult<Option<CodeGrant>> {
        self.with(|db| {
            let tx = db.transaction()?;
            let grant = match usable_code(&tx, code_hash, now)? {
                Some((user_id, uses, _)) => {
                    if uses.is_some() {
                        tx.execute(
                            "UPDATE codes SET uses_left = uses_left - 1 WHERE hash = ?1",
                            [&code_hash[..]],
                        )?;
                    }
                    Some(CodeGrant { user_id })
                }
                _ => None,
            };
            tx.commit()?;
            Ok(grant)
        })
    }

    fn create_device(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &[u8; 32],
        now: i64,
    ) -> MetaResult<i64> {
        self.with(|db| {
            db.execute(
                "INSERT INTO devices (user_id, name, token_hash, created) VALUES (?1, ?2, ?3, ?4)",
                params![user_id, name, &token_hash[..], now],
            )?;
            Ok(db.last_insert_rowid())
        })
    }

    fn authenticate(&self, token_hash: &[u8; 32], now: i64) -> MetaResult<Option<Principal>> {
        self.with(|db| {
            let p = db
                .query_row(
                    "SELECT d.id, u.id, u.name, u.admin FROM devices d JOIN users u ON u.id = d.user_id
                     WHERE d.token_hash = ?1 AND d.revoked = 0",
                    [&token_hash[..]],
                    |r| {
                        Ok(Principal {
                            device_id: r.get(0)?,
                            user: User {
                                id: r.get(1)?,
                                name: r.get(2)?,
                                admin: r.get(3)?,
                            },
                        })
                    },
                )
                .optional()?;
            if let Some(p) = &p {
                db.execute(
                    "UPDATE devices SET last_seen = ?1 WHERE id = ?2",
                    params![now, p.device_id],
                )?;
            }
            Ok(p)
        })
    }

    fn devices(&self) -> MetaResult<Vec<Device>> {
        self.with(|db| {
            let mut st = db.prepare(&format!("{DEVICE_SELECT} ORDER BY d.id"))?;
            let rows = st.query_map([], device_row)?;
            rows.collect()
        })
    }

    fn device(&self, device_id: i64) -> MetaResult<Option<Device>> {
        self.with(|db| {
            db.query_row(
                &format!("{DEVICE_SELECT} WHERE d.id = ?1"),
                [device_id],
                device_row,
            )
            .optional()
        })
    }

    fn note_commit(&self, device_id: i64) -> MetaResult<bool> {
        self.with(|db| {
            let tx = db.transaction()?;
            let fresh: bool = tx
                .query_row(
                    "SELECT granted != granted_at_commit FROM devices WHERE id = ?1",
                    [device_id],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(false);
            tx.execute(
                "UPDATE devices SET granted_at_commit = granted WHERE id = ?1",
                [device_id],
            )?;
            tx.commit()?;
            Ok(fresh)
        })
    }

    fn commits_since(&self, device_id: i64, since: i64) -> MetaResult<CommitCounts> {
        self.with(|db| {
            db.query_row(
                "SELECT count(*), coalesce(sum(idle), 0) FROM snapshots
                 WHERE device_id = ?1 AND time >= ?2",
                params![device_id, since],
                |r| {
                    Ok(CommitCounts {
                        total: r.get::<_, i64>(0)? as u64,
                        idle: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
        })
    }

    fn flag_device(
        &self,
        device_id: i64,
        now: i64,
        reason: &str,
        suspect_since: i64,
    ) -> MetaResult<()> {
        self.with(|db| {
            let tx = db.transaction()?;
            tx.execute(
                "UPDATE devices SET flagged = ?2, flag_reason = ?3
                 WHERE id = ?1 AND flagged IS NULL",
                params![device_id, now, reason],
            )?;
            tx.execute(
                "UPDATE snapshots SET suspect = 1 WHERE device_id = ?1 AND time >= ?2",
                params![device_id, suspect_since],
            )?;
            tx.commit()
        })
    }

    fn unflag_device(&self, device_id: i64) -> MetaResult<bool> {
        self.with(|db| {
            let tx = db.transaction()?;
            let n = tx.execute(
                "UPDATE devices SET flagged = NULL, flag_reason = NULL WHERE id = ?1",
                [device_id],
            )?;
            tx.execute(
                "UPDATE snapshots SET suspect = 0 WHERE device_id = ?1",
                [device_id],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn other_owners(&self, user_id: i64, ids: &[Id]) -> MetaResult<Vec<u32>> {
        self.with(|db| {
            let tx = db.transaction()?;
            let out = {
                let mut st = tx.prepare_cached(
                    "SELECT count(*) FROM owners WHERE chunk = ?1 AND user_id != ?2",
                )?;
                let mut counts = Vec::with_capacity(ids.len());
                for id in ids {
                    counts.push(st.query_row(params![&id.0[..], user_id], |r| r.get(0))?);
                }
                counts
            };
            tx.commit()?;
            Ok(out)
        })
    }

    fn revoke_device(&self, device_id: i64) -> MetaResult<bool> {
        self.with(|db| {
            Ok(db.execute("UPDATE devices SET revoked = 1 WHERE id = ?1", [device_id])? > 0)
        })
    }

    fn add_uploaded(&self, device_id: i64, bytes: u64) -> MetaResult<()> {
        self.with(|db| {
            db.execute(
                "UPDATE devices SET stored_bytes = stored_bytes + ?1 WHERE id = ?2",
                params![bytes as i64, device_id],
            )
            .map(|_| ())
        })
    }

    fn owned(&self, user_id: i64, ids: &[Id]) -> MetaResult<Vec<bool>> {
        self.with(|db| {
            // One read transaction, one file lock, for the whole batch.
            let tx = db.transaction()?;
            let out = {
                let mut st =
                    tx.prepare_cached("SELECT 1 FROM owners WHERE chunk = ?1 AND user_id = ?2")?;
                catalog::probe_in_key_order(ids, |id| st.exists(params![&id.0[..], user_id]))?
            };
            tx.commit()?;
            Ok(out)
        })
    }

    fn grant(&self, user_id: i64, device_id: i64, ids: &[Id], now: i64) -> MetaResult<()> {
        self.with(|db| {
            let tx = db.transaction()?;
            {
                let mut own = tx.prepare_cached(
                    "INSERT OR IGNORE INTO owners (chunk, user_id) VALUES (?1, ?2)",
                )?;
                let mut fresh = tx.prepare_cached(
                    "INSERT OR REPLACE INTO fresh (chunk, device_id, time) VALUES (?1, ?2, ?3)",
                )?;
                for id in ids {
                    own.execute(params![&id.0[..], user_id])?;
                    fresh.execute(params![&id.0[..], device_id, now])?;
                }
            }
            if !ids.is_empty() {
                tx.execute(
                    "UPDATE devices SET granted = granted + ?2 WHERE id = ?1",
                    params![device_id, ids.len() as i64],
                )?;
            }
            tx.commit()
        })
    }

    fn fresh_chunks(&self, since: i64, active_since: i64, seen_since: i64) -> MetaResult<Vec<Id>> {
        self.with(|db| {
            let mut st = db.prepare(&format!("SELECT chunk FROM fresh WHERE {FRESH}"))?;
            let rows = st.query_map(params![since, active_since, seen_since], |r| id_col(r, 0))?;
            rows.collect()
        })
    }

    fn forget_fresh(
        &self,
        used: &dyn Fn(&Id) -> bool,
        since: i64,
        active_since: i64,
        seen_since: i64,
    ) -> MetaResult<usize> {
        self.with(|db| {
            let tx = db.transaction()?;
            let mut gone = tx.execute(
                &format!("DELETE FROM fresh WHERE NOT ({FRESH})"),
                params![since, active_since, seen_since],
            )?;
            {
                let mut all = tx.prepare("SELECT chunk FROM fresh")?;
                let ids: Vec<Id> = all
                    .query_map([], |r| id_col(r, 0))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut del = tx.prepare_cached("DELETE FROM fresh WHERE chunk = ?1")?;
                for id in ids.iter().filter(|id| used(id)) {
                    gone += del.execute([&id.0[..]])?;
                }
            }
            tx.commit()?;
            Ok(gone)
        })
    }

    fn add_snapshot(&self, row: &SnapshotRow, idle: bool) -> MetaResult<()> {
        self.with(|db| {
            db.execute(
                "INSERT OR IGNORE INTO snapshots (id, user_id, device_id, time, claimed, idle, suspect, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    &row.id.0[..],
                    row.user_id,
                    row.device_id,
                    row.time,
                    row.claimed,
                    idle,
                    row.suspect,
                    row.received_ms
                ],
            )
            .map(|_| ())
        })
    }

    fn snapshots(&self, user_id: Option<i64>) -> MetaResult<Vec<SnapshotRow>> {
        self.with(|db| {
            let mut st = db.prepare(
                "SELECT id, user_id, device_id, time, claimed, suspect, received_ms FROM snapshots
                 WHERE ?1 IS NULL OR user_id = ?1 ORDER BY received_ms, rowid",
            )?;
            let rows = st.query_map([user_id], snapshot_row)?;
            rows.collect()
        })
    }

    fn snapshot(&self, id: &Id) -> MetaResult<Option<SnapshotRow>> {
        self.with(|db| {
            db.query_row(
                "SELECT id, user_id, device_id, time, claimed, suspect, received_ms FROM snapshots WHERE id = ?1",
                [&id.0[..]],
                snapshot_row,
            )
            .optional()
        })
    }

    fn delete_snapshot(&self, id: &Id) -> MetaResult<bool> {
        self.with(|db| Ok(db.execute("DELETE FROM snapshots WHERE id = ?1", [&id.0[..]])? > 0))
    }

    fn audit(&self, now: i64, actor: &str, action: &str, detail: &str) -> MetaResult<()> {
        self.with(|db| {
            db.execute(
                "INSERT INTO audit (time, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
                params![now, actor, action, detail],
            )
            .map(|_| ())
        })
    }

    fn audit_log(&self, limit: u32) -> MetaResult<Vec<AuditEntry>> {
        self.with(|db| {
            let mut st = db.prepare(
                "SELECT time, actor, action, detail FROM audit ORDER BY n DESC LIMIT ?1",
            )?;
            let rows = st.query_map([limit], |r| {
                Ok(AuditEntry {
                    time: r.get(0)?,
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    detail: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    fn set_policy(&self, json: &str) -> MetaResult<()> {
        self.with(|db| {
            db.execute(
                "INSERT INTO policy (k, json) VALUES (0, ?1) ON CONFLICT (k) DO UPDATE SET json = excluded.json",
                [json],
            )
            .map(|_| ())
        })
    }

    fn policy(&self) -> MetaResult<Option<String>> {
        self.with(|db| {
            db.query_row("SELECT json FROM policy WHERE k = 0", [], |r| r.get(0))
                .optional()
        })
    }

    fn owned_counts(&self) -> MetaResult<Vec<(String, u64)>> {
        self.with(|db| {
            let mut st = db.prepare(
                "SELECT u.name, (SELECT count(*) FROM owners o WHERE o.user_id = u.id) FROM users u ORDER BY u.id",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_database_of_an_older_server_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.sqlite");
        {
            // The schema before version 1, with one snapshot in it.
            let db = Connection::open(&path).unwrap();
            db.execute_batch(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, admin INTEGER NOT NULL);
                 CREATE TABLE devices (id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, name TEXT NOT NULL,
                     token_hash BLOB NOT NULL UNIQUE, revoked INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL,
                     last_seen INTEGER, last_backup INTEGER, stored_bytes INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE snapshots (id BLOB PRIMARY KEY, user_id INTEGER NOT NULL, device_id INTEGER NOT NULL,
                     time INTEGER NOT NULL);
                 INSERT INTO users VALUES (1, 'u', 0);
                 INSERT INTO devices (id, user_id, name, token_hash, created) VALUES (1, 1, 'd', x'00', 5);",
            )
            .unwrap();
            db.execute(
                "INSERT INTO snapshots VALUES (?1, 1, 1, 1000)",
                [&[7u8; 32][..]],
            )
            .unwrap();
        }
        let meta = SqliteMeta::open(&path).unwrap();
        let rows = meta.snapshots(None).unwrap();
        assert_eq!(
            (rows[0].time, rows[0].claimed, rows[0].suspect),
            (1000, 1000, false)
        );
        assert_eq!(meta.device(1).unwrap().unwrap().flagged, None);
        drop(meta);
        // Opening again changes nothing.
        assert_eq!(
            SqliteMeta::open(&path)
                .unwrap()
                .snapshots(None)
                .unwrap()
                .len(),
            1
        );

        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        match SqliteMeta::open(&path) {
            Err(MetaError::NewerSchema { found }) => assert_eq!(found, SCHEMA_VERSION + 1),
            other => panic!("a newer schema was opened: {:?}", other.err()),
        }
    }
}
