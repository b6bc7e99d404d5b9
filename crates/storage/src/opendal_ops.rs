//! The `Storage` operations expressed once over an OpenDAL [`Operator`], and
//! the mapping of OpenDAL errors onto [`StorageError`]. The backends differ
//! only in how they build operators and how they make `put` atomic.

use bytes::Bytes;
use std::future::Future;

use opendal::options::ListOptions;
use opendal::{EntryMode, ErrorKind, Operator};

use crate::{runtime, validate_key, Entry, Result, StorageError};

/// Who is asking, for error messages: the operation, the key and where.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    pub op: &'static str,
    pub key: &'a str,
    pub location: &'a str,
}

impl Call<'_> {
    pub fn io(&self, message: impl Into<String>, retryable: bool) -> StorageError {
        StorageError::Io {
            op: self.op,
            key: self.key.to_string(),
            location: self.location.to_string(),
            message: message.into(),
            retryable,
        }
    }

    pub fn not_found(&self) -> StorageError {
        StorageError::NotFound {
            key: self.key.to_string(),
            location: self.location.to_string(),
        }
    }

    pub fn range_error(&self, offset: u64, length: u64, size: Option<u64>) -> StorageError {
        let size = size.map_or_else(String::new, |s| format!(" of {s} bytes"));
        self.io(
            format!("the range {length} bytes at offset {offset} reaches past the end of the object{size}"),
            false,
        )
    }

    /// Runs an OpenDAL future on the storage runtime. A runtime failure is
    /// reported as a permanent error: retrying cannot bring it back.
    pub fn exec<T, F>(&self, fut: F) -> Result<opendal::Result<T>>
    where
        F: Future<Output = opendal::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        runtime::run(fut).map_err(|msg| self.io(msg, false))
    }

    /// Like [`Call::exec`], with every OpenDAL error mapped.
    pub fn exec_mapped<T, F>(&self, fut: F) -> Result<T>
    where
        F: Future<Output = opendal::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.exec(fut)?.map_err(|e| self.map(e))
    }

    /// Maps an OpenDAL error: missing objects, full storage, then whether
    /// OpenDAL (or the HTTP status behind it) says retrying may help.
    pub fn map(&self, err: opendal::Error) -> StorageError {
        if err.kind() == ErrorKind::NotFound {
            return self.not_found();
        }
        // Checked before `is_temporary`: OpenDAL marks every unclassified
        // local I/O error temporary, ENOSPC included, and retrying a full
        // disk only wastes the user's time.
        if is_no_space(&err) {
            return StorageError::StorageFull {
                key: self.key.to_string(),
                location: self.location.to_string(),
            };
        }
        let retryable = err.is_temporary() || err.kind() == ErrorKind::RateLimited;
        self.io(err.to_string(), retryable)
    }
}

/// True when the error (or anything it wraps) says the destination is out
/// of space or quota.
fn is_no_space(err: &opendal::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) {
                return true;
            }
        }
        // Remote protocols only say it in words: SFTP v3 servers answer a
        // generic failure whose text is strerror(ENOSPC), WebDAV answers
        // "507 Insufficient Storage", S3-compatible stores name a quota.
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("no space left")
            || text.contains("insufficient storage")
            || text.contains("quotaexceeded")
            || text.contains("quota exceeded")
        {
            return true;
        }
        cur = e.source();
    }
    false
}

pub(crate) fn get(op: &Operator, call: Call<'_>) -> Result<Vec<u8>> {
    let (op2, key) = (op.clone(), call.key.to_string());
    match call.exec(async move { op2.read(&key).await.map(|b| b.to_vec()) })? {
        Ok(data) => Ok(data),
        Err(e) => Err(read_error(op, call, e)),
    }
}

/// Reading a directory of the fs or SFTP backends fails with some I/O error
/// ("is a directory"); for the contract it is simply not an object.
fn read_error(op: &Operator, call: Call<'_>, e: opendal::Error) -> StorageError {
    if e.kind() != ErrorKind::NotFound && matches!(size(op, call), Ok(None)) {
        return call.not_found();
    }
    call.map(e)
}

pub(crate) fn size(op: &Operator, call: Call<'_>) -> Result<Option<u64>> {
    let (op, key) = (op.clone(), call.key.to_string());
    match call.exec(async move { op.stat(&key).await })? {
        // A directory of the fs or SFTP backends is not an object.
        Ok(meta) if meta.mode() == EntryMode::FILE => Ok(Some(meta.content_length())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(call.map(e)),
    }
}

pub(crate) fn get_range(
    op: &Operator,
    call: Call<'_>,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>> {
    let Some(end) = offset.checked_add(length) else {
        return Err(call.range_error(offset, length, None));
    };
    if length == 0 {
        // An empty range has no byte to ask a server for (`bytes=10-9` is
        // invalid HTTP), so only its position is checked.
        return match size(op, call)? {
            None => Err(call.not_found()),
            Some(s) if offset <= s => Ok(Vec::new()),
            Some(s) => Err(call.range_error(offset, length, Some(s))),
        };
    }
    let (op2, key) = (op.clone(), call.key.to_string());
    let res = call.exec(async move {
        op2.read_with(&key)
            .range(offset..end)
            .await
            .map(|b| b.to_vec())
    })?;
    match res {
        Ok(data) if data.len() as u64 == length => Ok(data),
        // Servers answer a range that starts inside the object but ends past
        // it with the bytes they have; the contract wants an error instead.
        Ok(_) => Err(call.range_error(offset, length, size(op, call)?)),
        Err(e) if e.kind() == ErrorKind::RangeNotSatisfied => {
            Err(call.range_error(offset, length, size(op, call)?))
        }
        Err(e) => Err(read_error(op, call, e)),
    }
}

pub(crate) fn write(op: &Operator, call: Call<'_>, key: &str, data: Bytes) -> Result<()> {
    // OpenDAL needs owned bytes because the write runs on the runtime's
    // threads; `Bytes` hands them over (and to retries) without a copy.
    let (op, key) = (op.clone(), key.to_string());
    call.exec_mapped(async move { op.write(&key, data).await.map(|_| ()) })
}

/// Whether the directory `dir` (ending in `/`; `""` for the root) exists.
pub(crate) fn is_dir(op: &Operator, call: Call<'_>, dir: &str) -> Result<bool> {
    let (op, d) = (
        op.clone(),
        if dir.is_empty() { "/" } else { dir }.to_string(),
    );
    match call.exec(async move { op.stat(&d).await })? {
        Ok(meta) => Ok(meta.mode() == EntryMode::DIR),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(call.map(e)),
    }
}

/// Creates the directory `dir` (ending in `/`, or `/` for the root) and
/// its parents. Losing a creation race to another writer is success.
pub(crate) fn create_dir(op: &Operator, call: Call<'_>, dir: &str) -> Result<()> {
    let (op2, d) = (op.clone(), dir.to_string());
    match call.exec(async move { op2.create_dir(&d).await })? {
        Ok(()) => Ok(()),
        Err(e) => match is_dir(op, call, dir) {
            Ok(true) => Ok(()),
            _ => Err(call.map(e)),
        },
    }
}

pub(crate) fn rename(op: &Operator, call: Call<'_>, from: &str, to: &str) -> Result<()> {
    let (op, from, to) = (op.clone(), from.to_string(), to.to_string());
    call.exec_mapped(async move { op.rename(&from, &to).await })
}

pub(crate) fn delete(op: &Operator, call: Call<'_>) -> Result<()> {
    let (op, key) = (op.clone(), call.key.to_string());
    match call.exec(async move { op.delete(&key).await })? {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(call.map(e)),
    }
}

/// Lists recursively from the "directory" part of `prefix` and filters by the
/// full prefix, because services disagree on what listing a partial name
/// means while all of them can list a directory.
pub(crate) fn list(op: &Operator, call: Call<'_>, prefix: &str) -> Result<Vec<Entry>> {
    let dir = match prefix.rfind('/') {
        Some(i) => &prefix[..=i],
        None => "/",
    };
    let (op, dir) = (op.clone(), dir.to_string());
    let entries = match call.exec(async move {
        op.list_options(
            &dir,
            ListOptions {
                recursive: true,
                ..Default::default()
            },
        )
        .await
    })? {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(call.map(e)),
    };
    Ok(entries
        .into_iter()
        .filter(|e| e.metadata().mode() == EntryMode::FILE)
        .filter_map(|e| {
            let key = e.path().trim_start_matches('/');
            // Temporary files of in-flight writes are named outside the key
            // alphabet, so this also keeps them out of every listing.
            (key.starts_with(prefix) && validate_key(key).is_ok()).then(|| Entry {
                key: key.to_string(),
                size: e.metadata().content_length(),
            })
        })
        .collect())
}

/// A name for the temporary object of an in-flight `put` of `key`, in the
/// same directory (so a rename never crosses file systems) and containing
/// `~`, which no key may, so listings skip it and no key can collide with it.
pub(crate) fn temp_key_for(key: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(key.as_bytes());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    format!("{key}.{:016x}~tmp", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Call<'static> {
        Call {
            op: "put",
            key: "k",
            location: "test",
        }
    }

    #[test]
    fn enospc_is_storage_full_even_when_opendal_calls_it_temporary() {
        let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let e = opendal::Error::new(ErrorKind::Unexpected, "write failed")
            .set_source(io)
            .set_temporary();
        assert!(matches!(call().map(e), StorageError::StorageFull { .. }));
    }

    #[test]
    fn remote_no_space_messages_are_storage_full() {
        for text in ["No space left on device", "507 Insufficient Storage"] {
            let e = opendal::Error::new(ErrorKind::Unexpected, text).set_temporary();
            assert!(
                matches!(call().map(e), StorageError::StorageFull { .. }),
                "{text}"
            );
        }
    }

    #[test]
    fn temporary_errors_are_retryable_and_others_not() {
        let e = opendal::Error::new(ErrorKind::Unexpected, "reset").set_temporary();
        assert!(call().map(e).is_retryable());
        let e = opendal::Error::new(ErrorKind::RateLimited, "slow down");
        assert!(call().map(e).is_retryable());
        let e = opendal::Error::new(ErrorKind::PermissionDenied, "403");
        assert!(!call().map(e).is_retryable());
        let e = opendal::Error::new(ErrorKind::NotFound, "404");
        assert!(call().map(e).is_not_found());
    }

    #[test]
    fn temp_keys_are_never_keys() {
        let t = temp_key_for("packs/ab/ab12");
        assert!(t.starts_with("packs/ab/ab12."));
        assert!(validate_key(&t).is_err());
        assert_ne!(t, temp_key_for("packs/ab/ab12"));
    }
}
