//! A local copy of immutable metadata objects (index files, snapshots).
//! These objects are named by the hash of their bytes, so a cached copy is
//! checked against its name on every read and refetched if it was damaged.
//! The cache is an optimisation only: deleting it loses nothing.

use crate::error::Result;
use crypto::Id;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use storage::{Entry, Storage};

#[derive(Debug)]
pub struct ObjectCache {
    dir: Option<PathBuf>,
    /// Verify must judge the repository, not this machine's copy of it:
    /// when set, reads go to storage (and refresh the cache).
    bypass: AtomicBool,
}

impl ObjectCache {
    pub fn new(base: Option<&PathBuf>, repo_id: &Id) -> Self {
        ObjectCache {
            dir: base.map(|b| b.join(repo_id.to_hex())),
            bypass: AtomicBool::new(false),
        }
    }

    pub fn set_bypass(&self, on: bool) {
        self.bypass.store(on, Ordering::SeqCst);
    }

    pub fn bypassed(&self) -> bool {
        self.bypass.load(Ordering::SeqCst)
    }

    /// The per-repository cache folder, for other local caches to live beside.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        // Keys are validated by storage to be relative [A-Za-z0-9._-] paths.
        self.dir.as_ref().map(|d| d.join(key))
    }

    pub fn get(&self, storage: &dyn Storage, key: &str) -> Result<Vec<u8>> {
        if let Some(p) = self
            .path(key)
            .filter(|_| !self.bypass.load(Ordering::SeqCst))
        {
            if let Ok(bytes) = std::fs::read(&p) {
                let named = format::layout::id_of(key);
                if named.is_none_or(|id| Id::hash_public(&bytes) == id) {
                    return Ok(bytes);
                }
                let _ = std::fs::remove_file(&p);
            }
        }
        let bytes = storage.get(key)?;
        self.put(key, &bytes);
        Ok(bytes)
    }

    /// Best effort: a cache that cannot be written only costs speed.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let Some(p) = self.path(key) else { return };
        let Some(parent) = p.parent() else { return };
        if std::fs::create_dir_all(parent).is_err() {
            return;
        }
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &p).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Drops cached objects under `prefix` that storage no longer lists.
    pub fn retain(&self, prefix: &str, listed: &[Entry]) {
        let Some(dir) = self.path(prefix.trim_end_matches('/')) else {
            return;
        };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        let keep: std::collections::HashSet<&str> = listed
            .iter()
            .filter_map(|e| e.key.rsplit('/').next())
            .collect();
        for e in rd.flatten() {
            let name = e.file_name();
            if !keep.contains(name.to_string_lossy().as_ref()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
