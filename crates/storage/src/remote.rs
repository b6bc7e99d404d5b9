//! Network backends (S3, SFTP, WebDAV): an OpenDAL operator plus the one
//! thing that differs between them, how `put` is made atomic.

use crate::Bytes;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use opendal::layers::TimeoutLayer;
use opendal::Operator;

use crate::opendal_ops::{self, temp_key_for, Call};
use crate::{validate_key, validate_prefix, Entry, Result, Storage};

/// Bounds a stat, delete or rename: a server that has not answered in two
/// minutes is gone, and the error is retryable.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(120);

/// Bounds one read or write call, which for us is a whole object (packs are
/// tens of MiB): ten minutes still lets 64 MiB through a ~1 Mbit/s uplink,
/// and turns a silently dead connection into a retryable error.
const IO_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutMode {
    /// The service itself never shows a partial object: an S3 PUT is atomic.
    Direct,
    /// WebDAV: also direct, because servers store a PUT body under a
    /// temporary name and rename it on completion (Apache mod_dav_fs, nginx,
    /// Nextcloud/SabreDAV), and hide those names from PROPFIND. But the
    /// parent "directories" must exist first (409 otherwise). OpenDAL would check them with a
    /// PROPFIND before every PUT and create them with MKCOL, which races
    /// when threads write into a new directory at once (Apache answers the
    /// loser with 403). Instead the directories are created once, under a
    /// lock, and remembered.
    DirectMakingDirs,
    /// SFTP writes in place, so `put` writes a temporary sibling and renames
    /// it over the key (OpenSSH's posix-rename is an atomic replace).
    TempThenRename,
}

#[derive(Debug)]
pub(crate) struct RemoteStorage {
    op: Operator,
    location: String,
    put_mode: PutMode,
    /// Directories (with trailing `/`; `""` for the root) known to exist,
    /// for `DirectMakingDirs`. The lock also serialises their creation.
    known_dirs: Mutex<HashSet<String>>,
}

impl RemoteStorage {
    pub(crate) fn new(op: Operator, location: String, put_mode: PutMode) -> Self {
        let op = op.layer(
            TimeoutLayer::new()
                .with_timeout(CONTROL_TIMEOUT)
                .with_io_timeout(IO_TIMEOUT),
        );
        RemoteStorage {
            op,
            location,
            put_mode,
            known_dirs: Mutex::new(HashSet::new()),
        }
    }

    fn call<'a>(&'a self, op: &'static str, key: &'a str) -> Call<'a> {
        Call {
            op,
            key,
            location: &self.location,
        }
    }

    fn known_dirs(&self) -> MutexGuard<'_, HashSet<String>> {
        // The set is only a cache of what exists on the server; after a
        // panic elsewhere it is still a correct (possibly short) cache.
        self.known_dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure the parent directory of `key` exists. Returns whether it
    /// was only known from the cache, i.e. not checked on the server now.
    fn ensure_parent(&self, call: Call<'_>, key: &str) -> Result<bool> {
        let parent = parent_of(key);
        let mut known = self.known_dirs();
        if known.contains(parent) {
            return Ok(true);
        }
        let dir = if parent.is_empty() { "/" } else { parent };
        opendal_ops::create_dir(&self.op, call, dir)?;
        let mut d = parent;
        loop {
            known.insert(d.to_string());
            match d.trim_end_matches('/').rfind('/') {
                Some(i) => d = &d[..=i],
                None if !d.is_empty() => d = "",
                None => break,
            }
        }
        Ok(false)
    }

    fn put_making_dirs(&self, call: Call<'_>, key: &str, data: Bytes) -> Result<()> {
        let cached = self.ensure_parent(call, key)?;
        match opendal_ops::write(&self.op, call, key, data.clone()) {
            Err(_)
                if cached
                    && matches!(
                        opendal_ops::is_dir(&self.op, call, parent_of(key)),
                        Ok(false)
                    ) =>
            {
                // The directory was removed behind our back (by another
                // client, or a server-side cleanup): forget what we knew and
                // try once more with fresh directories.
                self.known_dirs().clear();
                self.ensure_parent(call, key)?;
                opendal_ops::write(&self.op, call, key, data)
            }
            other => other,
        }
    }

    fn put_via_temp(&self, call: Call<'_>, key: &str, data: Bytes) -> Result<()> {
        let temp = temp_key_for(key);
        let temp_call = Call { key: &temp, ..call };
        if let Err(e) = opendal_ops::write(&self.op, call, &temp, data) {
            // The temp object may exist partially; it is invisible to list,
            // so failing to remove it only costs space.
            let _ = opendal_ops::delete(&self.op, temp_call);
            return Err(e);
        }
        let renamed = opendal_ops::rename(&self.op, call, &temp, key).or_else(|first| {
            // Servers without posix-rename refuse to rename over an existing
            // file. Deleting first is not atomic, but the contract allows
            // that for replacements (the content is identical).
            if opendal_ops::size(&self.op, call)?.is_some() {
                opendal_ops::delete(&self.op, call)?;
                opendal_ops::rename(&self.op, call, &temp, key)
            } else {
                Err(first)
            }
        });
        if renamed.is_err() {
            let _ = opendal_ops::delete(&self.op, temp_call);
        }
        renamed
    }
}

/// The "directory" of `key` with its trailing `/`, or `""` at the root.
fn parent_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

impl Storage for RemoteStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put_shared(key, Bytes::copy_from_slice(data))
    }

    fn put_shared(&self, key: &str, data: Bytes) -> Result<()> {
        validate_key(key)?;
        let call = self.call("put", key);
        match self.put_mode {
            PutMode::Direct => opendal_ops::write(&self.op, call, key, data),
            PutMode::DirectMakingDirs => self.put_making_dirs(call, key, data),
            PutMode::TempThenRename => self.put_via_temp(call, key, data),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        opendal_ops::get(&self.op, self.call("get", key))
    }

    fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        validate_key(key)?;
        opendal_ops::get_range(&self.op, self.call("get_range", key), offset, length)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        validate_key(key)?;
        opendal_ops::size(&self.op, self.call("size", key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        validate_prefix(prefix)?;
        opendal_ops::list(&self.op, self.call("list", prefix), prefix)
    }

    fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        opendal_ops::delete(&self.op, self.call("delete", key))
    }
}
