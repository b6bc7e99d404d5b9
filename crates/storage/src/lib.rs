//! Where repository objects live: the [`Storage`] trait and its contract,
//! backends for a local/USB folder, S3-compatible object storage, SFTP and
//! WebDAV (all through OpenDAL), an in-memory backend for tests, and
//! decorators (retry, fault injection).
//!
//! This crate moves opaque bytes under string keys. It must not know what a
//! chunk, pack, key or snapshot is, and must never log or return credentials.
//!
//! # The contract every backend keeps
//! - **Keys** are relative `/`-separated paths made of `[A-Za-z0-9._-]`
//!   segments, e.g. `packs/ab/ab12…`. Backends reject anything else
//!   (no `..`, no leading `/`).
//! - **`put` is atomic and durable**: when it returns `Ok`, the whole object is
//!   stored and will survive a crash or power loss of this machine; a reader
//!   never sees a partial object, even if the writer is killed mid-write.
//!   Writing an existing key replaces it (the repository only rewrites keys
//!   whose content is identical, so backends without atomic replace are fine).
//! - **`get` / `get_range`** return exactly the stored bytes or
//!   [`StorageError::NotFound`]. A range that reaches past the end is an error
//!   ([`StorageError::Io`] with `retryable: false`), never a short read.
//! - **`list(prefix)`** returns every object whose key starts with `prefix`,
//!   recursively, in unspecified order, with its size. Objects whose `put`
//!   returned before `list` was called are included (read-after-write
//!   listing); temporary files of in-flight writes are never included.
//! - **`delete`** is idempotent: deleting a missing key is `Ok`.
//! - Errors say whether retrying may help (`retryable`), so the retry
//!   decorator never hammers a permanent failure such as a full disk or
//!   wrong credentials.
//!
//! # What is here
//! - [`open`] turns a location (a folder path, `file://`, `s3://`,
//!   `sftp://`, `webdav://`, `webdavs://`) into a backend; credentials come
//!   only from environment variables ([`ENV_AWS_ACCESS_KEY_ID`] and
//!   friends). [`LocalStorage`] is the folder backend, also usable directly.
//! - [`MemoryStorage`] for tests; [`RetryStorage`] and [`FaultyStorage`]
//!   decorate any storage.
//! - [`conformance`]: the contract as a test suite every backend passes.
//!
//! # Durability per backend
//! The folder backend fsyncs the object and every directory up to the root
//! (see [`LocalStorage`]). S3 acknowledges a PUT once the service stored
//! it. SFTP and WebDAV hand the bytes to the server, which holds them when
//! `put` returns, so they survive a crash of this machine; whether the
//! server itself fsyncs is up to it (OpenSSH's sftp-server and Apache's
//! mod_dav_fs do not, and OpenDAL 0.59 cannot send SFTP's fsync request).

use std::fmt;
use std::sync::Arc;

pub mod conformance;
mod faulty;
mod local;
mod location;
mod memory;
mod opendal_ops;
mod remote;
mod retry;
mod runtime;

pub use faulty::{Fault, FaultyStorage};
pub use local::LocalStorage;
pub use location::{
    open, ENV_AWS_ACCESS_KEY_ID, ENV_AWS_SECRET_ACCESS_KEY, ENV_AWS_SESSION_TOKEN, ENV_SFTP_KEY,
    ENV_SFTP_KNOWN_HOSTS, ENV_WEBDAV_PASSWORD, ENV_WEBDAV_USER,
};
pub use memory::MemoryStorage;
pub use retry::{RetryPolicy, RetryStorage};

/// One stored object as returned by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub size: u64,
}

/// What can go wrong talking to storage. Messages name the operation and key
/// and say what the user can do; they never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("'{key}' does not exist in {location}")]
    NotFound { key: String, location: String },

    #[error("{op} '{key}' on {location} failed: {message}")]
    Io {
        op: &'static str,
        key: String,
        location: String,
        message: String,
        /// True when the same call may succeed later (timeouts, dropped
        /// connections, 5xx); false for permanent failures (permissions,
        /// full disk, bad credentials, invalid range).
        retryable: bool,
    },

    #[error("no space left on {location} while writing '{key}': free some space or choose another destination")]
    StorageFull { key: String, location: String },

    #[error("invalid storage key '{0}': keys are relative paths of [A-Za-z0-9._-] segments")]
    InvalidKey(String),

    #[error("invalid repository location '{location}': {reason}")]
    InvalidLocation { location: String, reason: String },
}

impl StorageError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StorageError::Io {
                retryable: true,
                ..
            }
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A place that stores objects under keys, with the contract written in the
/// crate documentation. Blocking by design: the engine runs its I/O on
/// dedicated threads, and backends that are asynchronous underneath drive
/// their own runtime.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Where this storage is, for messages: a path or a URL without credentials.
    fn location(&self) -> String;
    fn put(&self, key: &str, data: &[u8]) -> Result<()>;
    /// `put` for a caller that owns the bytes: backends that need owned
    /// data (OpenDAL's) take them without copying a 16 MiB pack again.
    fn put_shared(&self, key: &str, data: Bytes) -> Result<()> {
        self.put(key, &data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>>;
    /// The object's size, or `None` when it does not exist.
    fn size(&self, key: &str) -> Result<Option<u64>>;
    fn list(&self, prefix: &str) -> Result<Vec<Entry>>;
    fn delete(&self, key: &str) -> Result<()>;
}

pub type DynStorage = Arc<dyn Storage>;

pub use bytes::Bytes;

/// Checks a key against the contract's alphabet; backends call this first so
/// a hostile or buggy caller can never name a path outside the repository.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_string()))
    }
}

/// Checks a `list` prefix: empty (everything), a key followed by `/` (a
/// "directory"), or any beginning of a key (`packs/a` matches `packs/ab/..`).
/// Rejecting `..` and absolute prefixes keeps a listing inside the
/// repository just as [`validate_key`] does for objects.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    let ok = if prefix.is_empty() {
        true
    } else if let Some(dir) = prefix.strip_suffix('/') {
        validate_key(dir).is_ok()
    } else {
        // The last segment may be any partial name (even `.` as the start of
        // `.x`): backends only use it as a string filter, never as a path.
        let (dir, last) = match prefix.rsplit_once('/') {
            Some((dir, last)) => (Some(dir), last),
            None => (None, prefix),
        };
        dir.is_none_or(|d| validate_key(d).is_ok())
            && last
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    };
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(prefix.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_alphabet() {
        for ok in ["config", "packs/ab/ab12", ".hidden", "a/..b", "A-Z_0.9"] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "..", "a/./b", "a b", "a~", "ä"] {
            assert!(validate_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_keys_or_their_beginnings() {
        for ok in ["", "packs/", "packs/a", "packs/ab/", "p", "a/.", "a/.."] {
            assert!(validate_prefix(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/", "/packs", "../", "a/../", "a//", "a//b", "a b", "a/../b", "x~",
        ] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }
}
