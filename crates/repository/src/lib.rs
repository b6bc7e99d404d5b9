//! A Tidemark repository: encrypted, deduplicated chunks in pack files on
//! any [`storage::Storage`], with keys, an index, snapshots, locks, verify
//! and prune.
//!
//! This crate knows chunks, blobs, packs and snapshot objects. It must not
//! know about files on the user's disk, trees' contents, the terminal, or
//! any front end; progress is reported through plain data.

mod blob;
mod cache;
mod error;
pub mod index;
mod ingest;
mod keys;
#[cfg(test)]
mod limits_tests;
mod lock;
mod packfile;
mod prune;
mod remote;
pub mod retention;
mod upload;
mod verify;

pub use blob::{chunk_buffer, HEADROOM as BLOB_HEADROOM};
pub use cache::ObjectCache;
pub use error::{RepoError, Result};
pub use lock::{hostname, LockGuard};
pub use prune::{PruneOptions, PruneReport};
pub use remote::{Remote, RemoteBlob, RemoteError};
pub use upload::{UploadOptions, UploadStats, Uploader};
pub use verify::{Problem, VerifyOptions, VerifyReport};

use chrono::{DateTime, Utc};
use crypto::{Id, KdfParams, MasterKeys};
use format::{
    layout, limits, BlobKind, ChunkerParams, IndexFile, IndexPack, KeyFile, RepoConfig, Snapshot,
    FORMAT_VERSION,
};
use index::{IndexStore, LoadedFile, Location, MemoryIndex, Overlay, SyncPlan};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use storage::DynStorage;

/// Readable snapshots (oldest first) and problems with unreadable ones.
pub type SnapshotList = (Vec<(Id, Snapshot)>, Vec<Problem>);

const CONFIG_AAD: &[u8] = b"tidemark config v1";
const INDEX_AAD: &[u8] = b"tidemark index v1";
const SNAPSHOT_AAD: &[u8] = b"tidemark snapshot v1";

/// Settings fixed when a repository is created.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub kdf: KdfParams,
    pub chunker: ChunkerParams,
    pub zstd_level: i32,
    pub pack_size: u32,
    pub hostname: String,
    pub username: String,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            kdf: KdfParams::default(),
            chunker: ChunkerParams::default(),
            // Level 1: on the 1 GiB bench set it stored 0.3% more than level 3
            // (741.3 against 739.1 MiB; media is stored raw either way) and
            // the first backup took 4.4 s instead of 5.8 s (medians of 3).
            // zstd was a quarter of that backup's CPU, and on two cores the
            // CPU is the backup's time. A repository keeps the level it was
            // made with.
            zstd_level: 1,
            // 16 MiB packs keep object counts low on S3 while a lost upload
            // costs little to redo.
            pack_size: 16 * 1024 * 1024,
            hostname: String::new(),
            username: String::new(),
        }
    }
}

/// Where to keep local copies of immutable metadata objects (index files,
/// snapshots), so listing and opening a remote repository stays fast.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub cache_dir: Option<PathBuf>,
}

pub struct Repository {
    storage: DynStorage,
    keys: MasterKeys,
    config: RepoConfig,
    key_id: Id,
    index: Arc<dyn IndexStore>,
    /// Packs this process stored whose index file is not written yet.
    overlay: RwLock<Overlay>,
    /// Packs accepted by [`Repository::store_verified_pack`] whose index
    /// file is not written yet (see `ingest.rs`).
    ingested: std::sync::Mutex<Vec<IndexPack>>,
    cache: ObjectCache,
    tree_cache: Option<Arc<dyn BlobCache>>,
    remote: Option<Arc<dyn Remote>>,
    /// Blobs the server granted this session by proof of ownership.
    granted: RwLock<HashSet<Id>>,
}

/// A local store of sealed tree blobs, so that comparing with the parent
/// snapshot and browsing do not fetch trees from (remote) storage. Entries
/// are the encrypted bytes as stored; they are decrypted and checked against
/// their id on every use, so a damaged cache is detected, never trusted.
pub trait BlobCache: Send + Sync {
    fn get(&self, id: &Id) -> Option<Vec<u8>>;
    fn put(&self, id: &Id, sealed: &[u8]);
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.storage.location())
            .finish()
    }
}

/// Metadata about one key, for `key list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: Id,
    pub current: bool,
    pub created: DateTime<Utc>,
    pub hostname: String,
    pub username: String,
}

impl Repository {
    pub fn init(
        storage: DynStorage,
        password: &[u8],
        opts: &InitOptions,
        open: &OpenOptions,
    ) -> Result<Self> {
        if storage.size(layout::CONFIG)?.is_some() {
            return Err(RepoError::AlreadyExists {
                location: storage.location(),
            });
        }
        let keys = MasterKeys::random();
        let config = RepoConfig {
            version: FORMAT_VERSION,
            id: Id(rand::random()),
            chunker: opts.chunker.clone(),
            id_hash: "blake3-keyed".into(),
            compression: "zstd".into(),
            zstd_level: opts.zstd_level,
            cipher: "xchacha20-poly1305".into(),
            pack_size: opts.pack_size,
            created: Utc::now(),
        };
        let kf = keys::wrap(&keys, password, opts.kdf, &opts.hostname, &opts.username)?;
        let kf_bytes = format::to_json(&kf);
        let key_id = Id::hash_public(&kf_bytes);
        // Key first, config last: a repository counts as existing only once
        // its config is there, and by then it can be opened.
        storage.put(&layout::key(&key_id), &kf_bytes)?;
        storage.put(
            layout::CONFIG,
            &keys.data.seal(&format::to_json(&config), CONFIG_AAD),
        )?;
        Ok(Self::assemble(storage, keys, config, key_id, open))
    }

    pub fn open(storage: DynStorage, password: &[u8], open: &OpenOptions) -> Result<Self> {
        let sealed_config = match storage.get(layout::CONFIG) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::NotARepository {
                    location: storage.location(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let mut found = None;
        for entry in storage.list(layout::KEYS)? {
            // Checked on the listing, before the object is read.
            if entry.size > limits::MAX_KEY_FILE as u64 {
                tracing::warn!(key = %entry.key, size = entry.size, "skipping a key file larger than any key file");
                continue;
            }
            let bytes = storage.get(&entry.key)?;
            let Ok(kf) = format::from_json::<KeyFile>("key file", &bytes) else {
                tracing::warn!(key = %entry.key, "skipping unreadable key file");
                continue;
            };
            if let Some(keys) = keys::unwrap(&kf, password)? {
                found = Some((keys, Id::hash_public(&bytes)));
                break;
            }
        }
        let Some((keys, key_id)) = found else {
            return Err(RepoError::WrongPassword {
                location: storage.location(),
            });
        };
        let config_json = keys
            .data
            .open(&sealed_config, CONFIG_AAD)
            .map_err(|e| RepoError::corrupt("repository config", e))?;
        let config: RepoConfig = format::from_json("repository config", &config_json)?;
        if config.version != FORMAT_VERSION {
            return Err(format::FormatError::UnsupportedVersion {
                what: "repository",
                found: config.version,
            }
            .into());
        }
        Ok(Self::assemble(storage, keys, config, key_id, open))
    }

    /// A repository whose keys and config come from elsewhere (the company
    /// server provisions them at enrolment); nothing is read or written.
    pub fn with_keys(
        storage: DynStorage,
        keys: MasterKeys,
        config: RepoConfig,
        open: &OpenOptions,
    ) -> Self {
        Self::assemble(storage, keys, config, Id([0; 32]), open)
    }

    /// The one place a `Repository` value is built, for `init` and `open`.
    fn assemble(
        storage: DynStorage,
        keys: MasterKeys,
        config: RepoConfig,
        key_id: Id,
        open: &OpenOptions,
    ) -> Self {
        let cache = ObjectCache::new(open.cache_dir.as_ref(), &config.id);
        Repository {
            storage,
            keys,
            config,
            key_id,
            index: Arc::new(MemoryIndex::default()),
            overlay: RwLock::new(Overlay::default()),
            ingested: std::sync::Mutex::new(Vec::new()),
            cache,
            tree_cache: None,
            remote: None,
            granted: RwLock::new(HashSet::new()),
        }
    }

    /// Keeps data and snapshots on the company server (see [`Remote`]);
    /// this repository's own storage then holds only local index files.
    pub fn with_remote(mut self, remote: Arc<dyn Remote>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// Forgets what this device believed the company server stores (its
    /// local index files and index cache), so the next backup asks the
    /// server about every chunk. For when the server pruned data this
    /// device once uploaded.
    pub fn forget_local_index(&self) -> Result<()> {
        if self.remote.is_none() {
            return Err(RepoError::Remote(
                "only a company-server repository keeps a disposable local index".into(),
            ));
        }
        for e in self.storage.list(layout::INDEX)? {
            self.storage.delete(&e.key)?;
        }
        self.index.clear()?;
        *self.overlay.write().unwrap_or_else(|p| p.into_inner()) = Overlay::default();
        self.granted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    /// Whether data lives on a company server (then blobs are read one by
    /// one through it, never from this repository's storage).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    pub(crate) fn remote(&self) -> Option<&Arc<dyn Remote>> {
        self.remote.as_ref()
    }

    pub(crate) fn grant(&self, ids: impl IntoIterator<Item = Id>) {
        self.granted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ids);
    }

    /// Keeps the chunk index in `store` instead of memory (see [`index`]).
    pub fn with_index_store(mut self, store: Arc<dyn IndexStore>) -> Self {
        self.index = store;
        self
    }

    /// Keeps copies of tree blobs in `cache`.
    pub fn with_tree_cache(mut self, cache: Arc<dyn BlobCache>) -> Self {
        self.tree_cache = Some(cache);
        self
    }

    /// The per-repository local cache folder, when there is one.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.dir()
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn storage(&self) -> &DynStorage {
        &self.storage
    }

    pub fn location(&self) -> String {
        self.storage.location()
    }

    pub fn content_id(&self, data: &[u8]) -> Id {
        self.keys.content_id(data)
    }

    pub(crate) fn keys(&self) -> &MasterKeys {
        &self.keys
    }

    fn overlay<T>(&self, f: impl FnOnce(&Overlay) -> T) -> T {
        // A poisoned lock means another thread panicked mid-update; entries
        // are added whole, so the data is still consistent enough to read.
        f(&self.overlay.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Makes a pack this process just stored known to lookups.
    pub(crate) fn ingested(&self) -> std::sync::MutexGuard<'_, Vec<IndexPack>> {
        self.ingested.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn index_add(&self, p: &IndexPack) {
        self.overlay
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add(p);
    }

    pub(crate) fn has_pack(&self, id: &Id) -> Result<bool> {
        Ok(self.overlay(|o| o.has_pack(id)) || self.index.has_pack(id)?)
    }

    /// Every indexed pack with its size, including this process's unlisted ones.
    pub(crate) fn indexed_packs(&self) -> Result<Vec<(Id, u64)>> {
        let mut packs = self.index.packs()?;
        let known: HashSet<Id> = packs.iter().map(|(id, _)| *id).collect();
        self.overlay(|o| packs.extend(o.packs().filter(|(id, _)| !known.contains(id))));
        Ok(packs)
    }

    /// Brings the index store up to date with the index files in storage.
    /// A persistent store reads only the files written since its last sync,
    /// and starts again when a prune rewrote the index. Unreadable index
    /// files are returned as problems, not errors: their packs are found
    /// again from the packs' own trailers (see
    /// [`Repository::recover_unindexed_packs`]).
    pub fn load_index(&self) -> Result<Vec<Problem>> {
        let listed: HashSet<Id> = self
            .storage
            .list(layout::INDEX)?
            .iter()
            .filter_map(|e| layout::id_of(&e.key))
            .collect();
        // Verify judges the repository, not this machine's copy of it.
        let mut loaded = if self.cache.bypassed() {
            self.index.clear()?;
            Vec::new()
        } else {
            self.index.loaded_files()?
        };
        for _attempt in 0..2 {
            let new = match index::plan_sync(&listed, &loaded) {
                SyncPlan::Incremental(new) => new,
                SyncPlan::Rebuild => {
                    self.index.clear()?;
                    loaded.clear();
                    continue;
                }
            };
            let mut problems = Vec::new();
            let mut files = Vec::new();
            for id in new {
                match self.read_index_file(&id) {
                    Ok(f) => files.push((id, f)),
                    Err(e) => problems.push(Problem {
                        object: layout::index(&id),
                        message: e.to_string(),
                    }),
                }
            }
            let loaded_ids: HashSet<Id> = loaded.iter().map(|f| f.id).collect();
            let superseded: HashSet<Id> = loaded
                .iter()
                .flat_map(|f| f.supersedes.iter())
                .chain(files.iter().flat_map(|(_, f)| f.supersedes.iter()))
                .copied()
                .collect();
            if !loaded_ids.is_disjoint(&superseded) {
                // A prune rewrote packs the store holds.
                self.index.clear()?;
                loaded.clear();
                continue;
            }
            for (id, f) in &files {
                let record = LoadedFile {
                    id: *id,
                    supersedes: f.supersedes.clone(),
                };
                let packs: &[IndexPack] = if superseded.contains(id) {
                    &[]
                } else {
                    &f.packs
                };
                self.index.add_file(&record, packs)?;
            }
            return Ok(problems);
        }
        Err(RepoError::Pipeline(
            "the index changed twice while it was being read; try again".into(),
        ))
    }

    /// Every live (not superseded) index file with its id.
    pub(crate) fn read_index_files(
        &self,
        problems: &mut Vec<Problem>,
    ) -> Result<Vec<(Id, IndexFile)>> {
        let mut files = Vec::new();
        for entry in self.storage.list(layout::INDEX)? {
            let Some(id) = layout::id_of(&entry.key) else {
                continue;
            };
            match self.read_index_file(&id) {
                Ok(f) => files.push((id, f)),
                Err(e) => problems.push(Problem {
                    object: entry.key.clone(),
                    message: e.to_string(),
                }),
            }
        }
        let superseded: std::collections::HashSet<Id> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        files.retain(|(id, _)| !superseded.contains(id));
        Ok(files)
    }

    fn read_index_file(&self, id: &Id) -> Result<IndexFile> {
        let key = layout::index(id);
        let sealed = self.cache.get(&*self.storage, &key)?;
        let json = blob::open_object(&self.keys, &key, &sealed, INDEX_AAD, limits::MAX_INDEX_FILE)?;
        let f: IndexFile = format::from_json("index file", &json)?;
        if f.version != FORMAT_VERSION {
            return Err(format::FormatError::UnsupportedVersion {
                what: "index file",
                found: f.version,
            }
            .into());
        }
        Ok(f)
    }

    pub(crate) fn write_index_file(&self, file: &IndexFile) -> Result<Id> {
        let sealed = blob::seal_object(&self.keys, &format::to_json(file), INDEX_AAD);
        let id = Id::hash_public(&sealed);
        self.storage.put(&layout::index(&id), &sealed)?;
        self.cache.put(&layout::index(&id), &sealed);
        // The packs are listed in storage now, so the store may hold them.
        let record = LoadedFile {
            id,
            supersedes: file.supersedes.clone(),
        };
        self.index.add_file(&record, &file.packs)?;
        self.overlay
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&file.packs);
        Ok(id)
    }

    /// Finds packs that are stored but listed in no index file (a backup
    /// killed between storing a pack and writing its index), reads their
    /// trailers and indexes them, so their chunks are never uploaded again.
    /// Lists every pack in storage; see [`Repository::recover_interrupted`]
    /// for what a backup does instead.
    pub fn recover_unindexed_packs(&self) -> Result<usize> {
        let stored = self.storage.list(layout::PACKS)?;
        let found: Vec<(Id, u64)> = stored
            .iter()
            .filter_map(|e| Some((layout::id_of(&e.key)?, e.size)))
            .collect();
        self.index_found_packs(found)
    }

    /// What a backup runs before it starts: recovers the packs an earlier
    /// run left unindexed. Listing every pack is needed only when the
    /// writer that may have left them is unknown to this machine: another
    /// holder's lock is stale (a writer died, here or elsewhere), an index
    /// file could not be read, or the index store keeps no journal. Else
    /// the local journal names every candidate. After a full recovery the
    /// stale locks it was prompted by are removed, so the next backup does
    /// not list again.
    pub fn recover_interrupted(
        &self,
        lock: &LockGuard,
        index_problems: &[Problem],
    ) -> Result<usize> {
        let journal = if lock.stale_locks().is_empty() && index_problems.is_empty() {
            self.index.unindexed_packs()?
        } else {
            None
        };
        let Some(candidates) = journal else {
            let n = self.recover_unindexed_packs()?;
            for key in lock.stale_locks() {
                if let Err(e) = self.storage.delete(key) {
                    tracing::warn!(lock = %key, error = %e, "could not remove a stale lock");
                }
            }
            return Ok(n);
        };
        let mut found = Vec::new();
        let mut gone = Vec::new();
        for id in candidates {
            match self.storage.size(&layout::pack(&id))? {
                Some(size) => found.push((id, size)),
                // The crash came before the pack was written.
                None => gone.push(id),
            }
        }
        self.index.forget_unindexed_packs(&gone)?;
        self.index_found_packs(found)
    }

    /// Records, before a pack is written, that it will exist unindexed
    /// until an index file lists it. A journal that cannot be written costs
    /// only a re-upload after a crash, so it does not stop the backup.
    pub(crate) fn note_unindexed_pack(&self, id: &Id) {
        if let Err(e) = self.index.note_unindexed_pack(id) {
            tracing::warn!(pack = %id, error = %e, "could not note a pack in the local journal");
        }
    }

    fn index_found_packs(&self, found: Vec<(Id, u64)>) -> Result<usize> {
        let mut recovered = Vec::new();
        let mut settled = Vec::new();
        for (id, size) in found {
            if self.has_pack(&id)? {
                settled.push(id);
                continue;
            }
            match self.check_unindexed_pack(&id, size) {
                Ok(blobs) => recovered.push(IndexPack { id, size, blobs }),
                Err(e) => {
                    tracing::warn!(pack = %id, error = %e, "unreadable unindexed pack left for prune");
                    settled.push(id);
                }
            }
        }
        // Recovered packs leave the journal with the index file below.
        self.index.forget_unindexed_packs(&settled)?;
        if recovered.is_empty() {
            return Ok(0);
        }
        let n = recovered.len();
        // In files a reader accepts (see format::limits::INDEX_FILE_BLOBS).
        let mut part = Vec::new();
        for p in recovered {
            part.push(p);
            if upload::index_file_due(&part) {
                self.write_index_file(&IndexFile {
                    version: FORMAT_VERSION,
                    packs: std::mem::take(&mut part),
                    supersedes: vec![],
                })?;
            }
        }
        if !part.is_empty() {
            self.write_index_file(&IndexFile {
                version: FORMAT_VERSION,
                packs: part,
                supersedes: vec![],
            })?;
        }
        Ok(n)
    }

    /// Reads a whole pack and checks every blob in it before its blobs may
    /// be deduplicated against: a damaged pack left by a crash must not
    /// silently become the only copy of chunks that later snapshots use.
    /// Its name covers only the trailer, so the blobs are opened one by one
    /// (this runs only for packs an interrupted backup left unindexed).
    fn check_unindexed_pack(&self, pack: &Id, size: u64) -> Result<Vec<format::BlobEntry>> {
        let bytes = self.storage.get(&layout::pack(pack))?;
        if bytes.len() as u64 != size {
            return Err(RepoError::corrupt(
                format!("pack {pack}"),
                format!("{} bytes stored where the listing said {size}", bytes.len()),
            ));
        }
        self.verify_pack_bytes(pack, &bytes)
    }

    /// Whether the index knows `id`. A failing local index store counts as
    /// "not known": the chunk is then stored again, which costs space, never data.
    pub fn has_blob(&self, id: &Id) -> bool {
        if self.remote.is_some() && self.granted_has(id) {
            return true;
        }
        match self.blob_location(id) {
            Ok(l) => l.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "index lookup failed; treating the chunk as new");
                false
            }
        }
    }

    fn granted_has(&self, id: &Id) -> bool {
        self.granted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    /// Which of `ids` the index knows, in one pass (see [`Repository::has_blob`]).
    pub fn has_blobs(&self, ids: &[Id]) -> Result<Vec<bool>> {
        let mut out = self.index.contains_many(ids)?;
        self.overlay(|o| {
            for (known, id) in out.iter_mut().zip(ids) {
                *known = *known || o.lookup(id).is_some();
            }
        });
        Ok(out)
    }

    pub fn blob_location(&self, id: &Id) -> Result<Option<Location>> {
        if let Some(l) = self.overlay(|o| o.lookup(id)) {
            return Ok(Some(l));
        }
        Ok(self.index.lookup(id)?)
    }

    /// Reads, decrypts, decompresses and checks one blob.
    pub fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        if let Some(remote) = &self.remote {
            if let Some(sealed) = self.tree_cache.as_ref().and_then(|c| c.get(id)) {
                // Cached entries are trees; the raw length is only a size hint.
                if let Ok(raw) = blob::decode(&self.keys, id, &sealed, 0, limits::MAX_TREE) {
                    return Ok(raw);
                }
            }
            let b = remote.get_blob(id)?.ok_or(RepoError::BlobNotFound(*id))?;
            let raw = blob::decode(
                &self.keys,
                id,
                &b.sealed,
                b.raw_length,
                limits::max_blob(b.kind),
            )?;
            if b.kind == BlobKind::Tree {
                self.cache_tree(id, &b.sealed);
            }
            return Ok(raw);
        }
        let loc = self
            .blob_location(id)?
            .ok_or(RepoError::BlobNotFound(*id))?;
        let cache = self
            .tree_cache
            .as_ref()
            .filter(|_| loc.kind == BlobKind::Tree);
        if let Some(sealed) = cache.and_then(|c| c.get(id)) {
            match blob::decode(&self.keys, id, &sealed, loc.raw_length, limits::MAX_TREE) {
                Ok(raw) => return Ok(raw),
                Err(e) => {
                    tracing::warn!(tree = %id, error = %e, "damaged cached tree; reading it from the repository")
                }
            }
        }
        let sealed = self.storage.get_range(
            &layout::pack(&loc.pack),
            u64::from(loc.offset),
            u64::from(loc.length),
        )?;
        let raw = blob::decode(
            &self.keys,
            id,
            &sealed,
            loc.raw_length,
            limits::max_blob(loc.kind),
        )?;
        if let Some(c) = cache {
            c.put(id, &sealed);
        }
        Ok(raw)
    }

    /// Remembers a tree blob this process just sealed (see [`BlobCache`]).
    pub(crate) fn cache_tree(&self, id: &Id, sealed: &[u8]) {
        if let Some(c) = &self.tree_cache {
            c.put(id, sealed);
        }
    }

    /// Decodes one blob already fetched as part of a larger read (restore
    /// reads runs of neighbouring blobs with one request). The caller does
    /// not say the blob's kind, so it is held to the largest cap
    /// ([`format::limits::MAX_BLOB`]) and to `raw_length`.
    pub fn decode_blob(&self, id: &Id, sealed: &[u8], raw_length: u32) -> Result<Vec<u8>> {
        blob::decode(&self.keys, id, sealed, raw_length, limits::MAX_BLOB)
    }

    /// Decodes one fetched blob in its own buffer, without the copies of
    /// [`Repository::decode_blob`]; the chunk is a slice of `sealed` or of
    /// `scratch`, which the caller keeps for the next blob.
    pub fn decode_blob_in_place<'a>(
        &self,
        id: &Id,
        sealed: &'a mut [u8],
        raw_length: u32,
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        blob::decode_in_place(
            &self.keys,
            id,
            sealed,
            raw_length,
            limits::MAX_BLOB,
            scratch,
        )
    }

    /// Checks one fetched blob against its id without keeping its content
    /// (held to the largest cap, as in [`Repository::decode_blob`]).
    pub fn check_blob(&self, id: &Id, sealed: &[u8], raw_length: u32) -> Result<()> {
        blob::check(&self.keys, id, sealed, raw_length, limits::MAX_BLOB)
    }

    /// [`Repository::check_blob`] for a blob of a known kind, held to that
    /// kind's cap.
    pub(crate) fn check_blob_of(
        &self,
        kind: BlobKind,
        id: &Id,
        sealed: &[u8],
        raw_length: u32,
    ) -> Result<()> {
        blob::check(&self.keys, id, sealed, raw_length, limits::max_blob(kind))
    }

    pub fn start_upload(self: &Arc<Self>, opts: UploadOptions) -> Result<Uploader> {
        Uploader::start(Arc::clone(self), opts)
    }

    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let sealed = blob::seal_object(&self.keys, &format::to_json(snap), SNAPSHOT_AAD);
        if let Some(remote) = &self.remote {
            return Ok(remote.commit_snapshot(&sealed)?);
        }
        let id = Id::hash_public(&sealed);
        self.storage.put(&layout::snapshot(&id), &sealed)?;
        self.cache.put(&layout::snapshot(&id), &sealed);
        Ok(id)
    }

    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        if let Some(remote) = &self.remote {
            return match remote.load_snapshot(id)? {
                Some(s) => Ok(s),
                None => remote::not_found(id),
            };
        }
        let key = layout::snapshot(id);
        let sealed = self.cache.get(&*self.storage, &key)?;
        let json = blob::open_object(
            &self.keys,
            &key,
            &sealed,
            SNAPSHOT_AAD,
            limits::MAX_SNAPSHOT,
        )?;
        format::from_json("snapshot", &json).map_err(Into::into)
    }

    /// All readable snapshots, oldest first, and problems with unreadable ones.
    pub fn list_snapshots(&self) -> Result<SnapshotList> {
        if let Some(remote) = &self.remote {
            // In the server's order, by when it received each snapshot: a
            // device's claimed time must not decide what "latest" is.
            return Ok((remote.list_snapshots()?, Vec::new()));
        }
        let mut out = Vec::new();
        let mut problems = Vec::new();
        let listed = self.storage.list(layout::SNAPSHOTS)?;
        self.cache.retain(layout::SNAPSHOTS, &listed);
        for entry in listed {
            let Some(id) = layout::id_of(&entry.key) else {
                continue;
            };
            match self.load_snapshot(&id) {
                Ok(s) => out.push((id, s)),
                Err(e) => problems.push(Problem {
                    object: entry.key.clone(),
                    message: e.to_string(),
                }),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((out, problems))
    }

    /// Finds a snapshot by id prefix (at least 4 hex digits).
    pub fn find_snapshot(&self, prefix: &str) -> Result<Id> {
        let all: Vec<Id> = match &self.remote {
            Some(remote) => remote
                .list_snapshots()?
                .into_iter()
                .map(|(i, _)| i)
                .collect(),
            None => self
                .storage
                .list(layout::SNAPSHOTS)?
                .iter()
                .filter_map(|e| layout::id_of(&e.key))
                .collect(),
        };
        let ids: Vec<Id> = all
            .into_iter()
            .filter(|id| prefix.len() >= 4 && id.to_hex().starts_with(&prefix.to_ascii_lowercase()))
            .collect();
        match ids.as_slice() {
            [one] => Ok(*one),
            [] => Err(RepoError::SnapshotNotFound(prefix.to_string())),
            _ => Err(RepoError::AmbiguousSnapshot(prefix.to_string())),
        }
    }

    pub fn delete_snapshot(&self, id: &Id) -> Result<()> {
        if self.remote.is_some() {
            return Err(remote::refused("deleting a snapshot"));
        }
        self.storage.delete(&layout::snapshot(id))?;
        Ok(())
    }

    pub fn add_key(
        &self,
        password: &[u8],
        kdf: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<Id> {
        let kf = keys::wrap(&self.keys, password, kdf, hostname, username)?;
        let bytes = format::to_json(&kf);
        let id = Id::hash_public(&bytes);
        self.storage.put(&layout::key(&id), &bytes)?;
        Ok(id)
    }

    pub fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for entry in self.storage.list(layout::KEYS)? {
            let Some(id) = layout::id_of(&entry.key) else {
                continue;
            };
            if entry.size > limits::MAX_KEY_FILE as u64 {
                continue;
            }
            let Ok(kf) = format::from_json::<KeyFile>("key file", &self.storage.get(&entry.key)?)
            else {
                continue;
            };
            out.push(KeyInfo {
                id,
                current: id == self.key_id,
                created: kf.created,
                hostname: kf.hostname,
                username: kf.username,
            });
        }
        out.sort_by_key(|k| k.created);
        Ok(out)
    }

    /// Removes a key. The key this session opened with cannot be removed
    /// (that would lock the user out mid-session); use `passwd` instead.
    pub fn remove_key(&self, id: &Id) -> Result<()> {
        if *id == self.key_id {
            return Err(RepoError::Key("refusing to remove the key in use; open the repository with another password first, or use `key passwd`".into()));
        }
        if self.storage.size(&layout::key(id))?.is_none() {
            return Err(RepoError::Key(format!("no key {id}")));
        }
        self.storage.delete(&layout::key(id))?;
        Ok(())
    }

    /// Replaces the password of the key in use: the new key is written
    /// before the old one is deleted, so a crash leaves both, never neither.
    pub fn change_password(
        &mut self,
        new_password: &[u8],
        kdf: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<Id> {
        let new_id = self.add_key(new_password, kdf, hostname, username)?;
        let old = self.key_id;
        self.key_id = new_id;
        self.storage.delete(&layout::key(&old))?;
        Ok(new_id)
    }

    pub fn lock(&self, exclusive: bool) -> Result<LockGuard> {
        lock::acquire(Arc::clone(&self.storage), &self.keys, exclusive)
    }

    /// [`Repository::lock`], waiting up to `wait` for a conflicting holder
    /// to let go: a backup that meets a prune's sweep (seconds, usually)
    /// then goes on after it instead of failing and waiting a whole retry.
    pub fn lock_waiting(&self, exclusive: bool, wait: std::time::Duration) -> Result<LockGuard> {
        let until = std::time::Instant::now() + wait;
        loop {
            match self.lock(exclusive) {
                Err(RepoError::Locked { holder }) if std::time::Instant::now() < until => {
                    tracing::info!(%holder, "the repository is locked; waiting");
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    /// Removes locks whose holder is gone (same host, dead process) or stale.
    pub fn unlock_stale(&self, all: bool) -> Result<usize> {
        lock::remove_stale(&*self.storage, &self.keys, all)
    }

    /// Checks the repository. Metadata is read from storage, not from the
    /// local cache, for this call and whatever the caller reads until
    /// [`Repository::use_cache`] turns the cache back on.
    pub fn verify(
        &self,
        opts: &VerifyOptions,
        progress: &dyn Fn(u64, u64),
    ) -> Result<VerifyReport> {
        if self.remote.is_some() {
            return Err(remote::refused("verify"));
        }
        self.cache.set_bypass(true);
        verify::verify(self, opts, progress)
    }

    pub fn use_cache(&self, on: bool) {
        self.cache.set_bypass(!on);
    }

    pub fn prune(
        &self,
        used: &std::collections::HashSet<Id>,
        opts: &PruneOptions,
    ) -> Result<PruneReport> {
        if self.remote.is_some() {
            return Err(remote::refused("prune"));
        }
        prune::prune(self, used, opts)
    }

    /// Number of blobs and bytes of packs known to the index.
    pub fn index_stats(&self) -> Result<(u64, u64, usize)> {
        let packs = self.indexed_packs()?;
        let blobs = self.index.blob_count()? + self.overlay(|o| o.blob_count()) as u64;
        Ok((blobs, packs.iter().map(|(_, s)| s).sum(), packs.len()))
    }
}

pub(crate) fn decode_trailer(
    keys: &MasterKeys,
    pack: &Id,
    sealed: &[u8],
    blobs_end: u64,
) -> Result<Vec<format::BlobEntry>> {
    let plain = keys
        .data
        .open(sealed, format::pack::TRAILER_AAD)
        .map_err(|e| RepoError::corrupt(format!("trailer of pack {pack}"), e))?;
    Ok(format::pack::decode_trailer(&plain, blobs_end)?)
}
