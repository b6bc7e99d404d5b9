//! Network backends (S3, SFTP, WebDAV): an OpenDAL operator plus the one
//! thing that differs between them, how `put` is made atomic.

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
    /// The service itself never shows a partial object: an S3 PUT is atomic,
    /// and WebDAV servers store a PUT body under a temporary name and rename
    /// it on completion (Apache mod_dav_fs, nginx, Nextcloud/SabreDAV).
    Direct,
    /// SFTP writes in place, so `put` writes a temporary sibling and renames
    /// it over the key (OpenSSH's posix-rename is an atomic replace).
    TempThenRename,
}

#[derive(Debug)]
pub(crate) struct RemoteStorage {
    op: Operator,
    location: String,
    put_mode: PutMode,
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
        }
    }

    fn call<'a>(&'a self, op: &'static str, key: &'a str) -> Call<'a> {
        Call {
            op,
            key,
            location: &self.location,
        }
    }

    fn put_via_temp(&self, call: Call<'_>, key: &str, data: &[u8]) -> Result<()> {
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

impl Storage for RemoteStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        validate_key(key)?;
        let call = self.call("put", key);
        match self.put_mode {
            PutMode::Direct => opendal_ops::write(&self.op, call, key, data),
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
