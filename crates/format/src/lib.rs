//! The repository format, version 1: every structure that is stored, with
//! its serialization. `docs/format.md` is the prose companion of this crate.
//!
//! This crate owns layouts and (de)serialization only. It must not encrypt,
//! compress, do I/O, or know about files on the user's disk beyond the
//! metadata a tree records.

pub mod enrolment;
pub mod limits;
mod names;
pub mod pack;
mod signed;
pub mod update;

pub use crypto::{Id, KdfParams};
pub use names::EntryName;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The one format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    #[error("{what} has format version {found}, this build reads version {FORMAT_VERSION}: upgrade Tidemark")]
    UnsupportedVersion { what: &'static str, found: u32 },
}

pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs to a Vec cannot fail: no maps with
    // non-string keys, no custom serializers that error.
    serde_json::to_vec(v).unwrap_or_default()
}

pub fn from_json<'a, T: Deserialize<'a>>(
    what: &'static str,
    b: &'a [u8],
) -> Result<T, FormatError> {
    serde_json::from_slice(b).map_err(|e| FormatError::Malformed {
        what,
        reason: e.to_string(),
    })
}

/// Object names under the storage root. Listed here so the layout is defined
/// in one place (see docs/format.md "Layout").
pub mod layout {
    use super::Id;
    pub const CONFIG: &str = "config";
    pub const KEYS: &str = "keys/";
    pub const PACKS: &str = "packs/";
    pub const INDEX: &str = "index/";
    pub const SNAPSHOTS: &str = "snapshots/";
    pub const LOCKS: &str = "locks/";

    /// Packs fan out over 256 folders so no folder of a local or SFTP
    /// repository grows past a few thousand entries.
    pub fn pack(id: &Id) -> String {
        let h = id.to_hex();
        format!("{PACKS}{}/{h}", &h[..2])
    }
    pub fn index(id: &Id) -> String {
        format!("{INDEX}{id}")
    }
    pub fn snapshot(id: &Id) -> String {
        format!("{SNAPSHOTS}{id}")
    }
    pub fn key(id: &Id) -> String {
        format!("{KEYS}{id}")
    }
    pub fn lock(id: &Id) -> String {
        format!("{LOCKS}{id}")
    }
    /// The id at the end of a key, if the key is one of ours.
    pub fn id_of(key: &str) -> Option<Id> {
        key.rsplit('/').next().and_then(|s| Id::from_hex(s).ok())
    }
}

/// Chunker parameters, fixed per repository: changing them would stop new
/// backups from deduplicating against old ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub algorithm: String,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// 256 KiB / 1 MiB / 4 MiB (DESIGN.md §2): small enough that an edit in a
    /// large file costs about one megabyte, large enough that a 1 GiB home
    /// folder makes ~1,000 chunks and the index stays small.
    fn default() -> Self {
        ChunkerParams {
            algorithm: "fastcdc-2020".into(),
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }
}

/// The repository's configuration, stored encrypted under `config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    pub version: u32,
    /// Random; names the local cache and ties keys to this repository.
    pub id: Id,
    pub chunker: ChunkerParams,
    /// "blake3-keyed"
    pub id_hash: String,
    /// "zstd"
    pub compression: String,
    pub zstd_level: i32,
    /// "xchacha20-poly1305"
    pub cipher: String,
    /// Target size of a pack file in bytes.
    pub pack_size: u32,
    pub created: DateTime<Utc>,
}

/// A password-wrapped copy of the master keys, stored in clear under
/// `keys/<id>`: everything in it is either public or sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub created: DateTime<Utc>,
    pub hostname: String,
    pub username: String,
    pub kdf: String,
    pub kdf_params: KdfParams,
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
    /// The master keys sealed with the Argon2id-derived key.
    #[serde(with = "hex_bytes")]
    pub sealed_master: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobKind {
    Data,
    Tree,
}

/// Where a blob lives: one entry of a pack trailer and of an index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobEntry {
    pub id: Id,
    pub kind: BlobKind,
    pub offset: u32,
    /// Stored (sealed) length.
    pub length: u32,
    /// Length of the chunk before compression.
    pub raw_length: u32,
}

/// One index file: which blobs each listed pack holds. Written during a
/// backup after packs are stored, so an interrupted backup keeps its work.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub version: u32,
    pub packs: Vec<IndexPack>,
    /// Index files this one replaces (written by prune); readers ignore them.
    #[serde(default)]
    pub supersedes: Vec<Id>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    pub id: Id,
    pub size: u64,
    pub blobs: Vec<BlobEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// One directory entry in a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: EntryName,
    pub kind: NodeKind,
    #[serde(default)]
    pub size: u64,
    pub mode: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    #[serde(default)]
    pub ctime_ns: i64,
    #[serde(default)]
    pub inode: u64,
    #[serde(default)]
    pub device: u64,
    /// Data chunks in order (files only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// The directory's own tree (directories only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<EntryName>,
    /// Device number for character and block devices.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rdev: u64,
}

impl Node {
    /// An entry with a name, a kind and a mode and nothing else (no size,
    /// times, owner or content): a synthetic root, or a tree built by hand.
    pub fn new(name: EntryName, kind: NodeKind, mode: u32) -> Node {
        Node {
            name,
            kind,
            size: 0,
            mode,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            device: 0,
            content: Vec::new(),
            subtree: None,
            link_target: None,
            rdev: 0,
        }
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A directory: entries sorted by name bytes, so the same directory always
/// serializes to the same bytes and unchanged directories deduplicate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn sort(&mut self) {
        self.nodes
            .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_bytes().cmp(name))
            .ok()
            .and_then(|i| self.nodes.get(i))
    }

    /// Reads a tree and holds it to the rules every reader relies on. The
    /// server checks commits with this same function, so it never accepts a
    /// tree that a restore, `ls` or `verify` would call corrupt.
    pub fn decode(bytes: &[u8]) -> Result<Tree, FormatError> {
        let tree: Tree = from_json("tree", bytes)?;
        tree.check().map_err(|reason| FormatError::Malformed {
            what: "tree",
            reason,
        })?;
        Ok(tree)
    }

    /// A tree from a hostile or damaged repository must not smuggle in
    /// duplicate or unsafe names (restore and browsing rely on that), nor a
    /// folder without its subtree.
    pub fn check(&self) -> Result<(), String> {
        for w in self.nodes.windows(2) {
            if w[0].name.as_bytes() >= w[1].name.as_bytes() {
                return Err(format!("entries not strictly sorted at {:?}", w[1].name));
            }
        }
        for n in &self.nodes {
            if !n.name.is_safe_component() {
                return Err(format!("unsafe entry name {:?}", n.name));
            }
            if n.kind == NodeKind::Dir && n.subtree.is_none() {
                return Err(format!("folder {:?} has no subtree", n.name));
            }
        }
        Ok(())
    }
}

/// The deepest folder nesting a snapshot may have. Every reader walks trees
/// without recursing, so this bounds work and memory, not the stack: a
/// server refuses a commit whose trees nest deeper, and readers refuse to
/// descend further. Real trees stay far below (Linux's PATH_MAX of 4,096
/// bytes allows ~2,000 levels of one-letter names through ordinary paths);
/// 5,000 levels, reached with relative opens, must still back up and
/// restore.
pub const MAX_TREE_DEPTH: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    pub dirs: u64,
    /// Logical bytes of every file in the snapshot.
    pub total_bytes: u64,
    pub total_files: u64,
    /// Bytes read from disk during this backup.
    pub bytes_read: u64,
    /// New chunks and their bytes before and after compression+encryption.
    pub chunks_new: u64,
    pub bytes_new_raw: u64,
    pub bytes_new_stored: u64,
    /// Files and folders that could not be read (reported, not fatal).
    pub errors: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub username: String,
    /// Absolute paths that were backed up, as the user gave them.
    pub paths: Vec<String>,
    /// Root tree: the filesystem root, holding the backed-up paths at their
    /// absolute places.
    pub tree: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub summary: SnapshotSummary,
}

/// A lock object: who holds the repository and since when. Exclusive locks
/// (prune) exclude every other lock; shared ones (backup) exclude only
/// exclusive ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub exclusive: bool,
    pub hostname: String,
    pub pid: u32,
    pub time: DateTime<Utc>,
}

pub(crate) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}
