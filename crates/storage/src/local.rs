//! A repository in a local or USB folder: written through OpenDAL's fs
//! service, read with std (see [`LocalStorage::open_for_read`] for why).
//!
//! # How `put` keeps the contract
//! OpenDAL's fs service writes in place unless `atomic_write_dir` is set;
//! with it, it writes a temporary file there, `sync_all`s it and renames it
//! over the key (checked in opendal-service-fs 0.59.5, `writer.rs`). So a
//! reader never sees a partial object and the data blocks are durable. What
//! OpenDAL does not do is fsync the directories: the rename itself, and any
//! directory it had to create on the way, could still be lost on power
//! failure. [`LocalStorage::put`] closes that gap with std fsyncs of every
//! directory from the object's parent up to the root after the write.
//!
//! The temporary directory lives inside the root (a rename cannot cross file
//! systems) under a name with `~`, which no key can contain, so listings
//! skip it.
//!
//! # Why two operators
//! OpenDAL creates the root and the temporary directory when an operator is
//! built. Reads must not do that: restoring from a read-only medium has to
//! work, and opening a folder on an unplugged USB drive must not create an
//! empty one in its place. So reads use an operator without
//! `atomic_write_dir`, built only once the root exists, and the first `put`
//! builds the writing one, creating the root.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use opendal::services::Fs;
use opendal::Operator;

use crate::opendal_ops::{self, Call};
use crate::{validate_key, validate_prefix, Entry, Result, Storage, StorageError};

/// Inside the root; `~` is outside the key alphabet, so no key collides.
const TEMP_DIR: &str = ".tidemark-tmp~";

/// A temporary file this old belongs to a writer that was killed: no single
/// `put` takes a day, and removing it only frees space.
const STALE_TEMP_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// A repository in a local folder. See the module documentation for how it
/// makes `put` atomic and durable.
#[derive(Debug)]
pub struct LocalStorage {
    root: PathBuf,
    location: String,
    reader: OnceLock<Operator>,
    writer: OnceLock<Operator>,
    /// Serialises creating the root and building the writing operator.
    create: Mutex<()>,
}

impl LocalStorage {
    /// A storage rooted at `path`, which need not exist yet (the first `put`
    /// creates it). A relative path is made absolute against the current
    /// directory now, so later `chdir`s do not move the repository.
    pub fn new(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let invalid = |reason: String| StorageError::InvalidLocation {
            location: shown.clone(),
            reason,
        };
        if path.as_os_str().is_empty() {
            return Err(invalid("the folder path is empty".into()));
        }
        let root = std::path::absolute(path)
            .map_err(|e| invalid(format!("cannot make the path absolute: {e}")))?;
        let location = root
            .to_str()
            .ok_or_else(|| invalid("the folder path is not valid UTF-8".into()))?
            .to_string();
        Ok(LocalStorage {
            root,
            location,
            reader: OnceLock::new(),
            writer: OnceLock::new(),
            create: Mutex::new(()),
        })
    }

    /// The absolute folder this storage lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn call<'a>(&'a self, op: &'static str, key: &'a str) -> Call<'a> {
        Call {
            op,
            key,
            location: &self.location,
        }
    }

    /// The operator for reads, or `None` while the root does not exist (an
    /// empty repository, not an error).
    fn reader(&self, call: Call<'_>) -> Result<Option<&Operator>> {
        if let Some(op) = self.writer.get().or_else(|| self.reader.get()) {
            return Ok(Some(op));
        }
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(call.io("the repository path exists but is not a folder", false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(call, &e)),
        }
        let op = Operator::new(Fs::default().root(&self.location)).map_err(|e| call.map(e))?;
        Ok(Some(self.reader.get_or_init(|| op)))
    }

    fn writer(&self, call: Call<'_>) -> Result<&Operator> {
        if let Some(op) = self.writer.get() {
            return Ok(op);
        }
        // A poisoned lock only means another put panicked; the state it
        // guards is the file system, which is checked again below.
        let _guard = self.create.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(op) = self.writer.get() {
            return Ok(op);
        }
        self.create_root(call)?;
        let temp_dir = self.root.join(TEMP_DIR);
        remove_stale_temp_files(&temp_dir);
        let temp_dir = temp_dir
            .to_str()
            .ok_or_else(|| call.io("the folder path is not valid UTF-8", false))?
            .to_string();
        let op = Operator::new(
            Fs::default()
                .root(&self.location)
                .atomic_write_dir(&temp_dir),
        )
        .map_err(|e| call.map(e))?;
        Ok(self.writer.get_or_init(|| op))
    }

    /// Creates the root and makes each new directory's entry durable, so a
    /// power loss right after the first `put` cannot lose the whole folder.
    /// Opens `key` for reading with std rather than OpenDAL, with its size. Reads are the
    /// hot path of a restore: OpenDAL's fs service runs each on its runtime's
    /// threads and reads into a zeroed buffer that is then copied, which perf
    /// put at a quarter of a full restore's CPU (thread wake-ups, memset,
    /// memmove). A plain read on the caller's thread keeps the same contract;
    /// writes stay on OpenDAL, which gives them their atomic rename.
    fn open_for_read(&self, call: Call<'_>) -> Result<(File, u64)> {
        match File::open(self.root.join(call.key)) {
            Ok(f) => {
                let md = f.metadata().map_err(|e| io_error(call, &e))?;
                if !md.is_file() {
                    // A folder where a key would be is not an object.
                    return Err(call.not_found());
                }
                Ok((f, md.len()))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                // Says "not a folder" when the root itself is a file.
                self.reader(call)?;
                Err(call.not_found())
            }
            Err(e) => Err(io_error(call, &e)),
        }
    }

    fn create_root(&self, call: Call<'_>) -> Result<()> {
        let missing: Vec<&Path> = self.root.ancestors().take_while(|p| !p.exists()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.root).map_err(|e| io_error(call, &e))?;
        for dir in missing {
            if let Some(parent) = dir.parent() {
                fsync_dir(parent).map_err(|e| io_error(call, &e))?;
            }
        }
        Ok(())
    }

    /// Makes the rename of `key` into place, and every directory the write
    /// created on the way, durable. Syncing the whole chain rather than only
    /// the directories this call created also covers a directory another
    /// thread created a moment earlier and has not synced yet.
    fn sync_dirs(&self, call: Call<'_>, key: &str) -> Result<()> {
        let mut dir = self.root.join(key);
        while dir.pop() && dir.starts_with(&self.root) {
            fsync_dir(&dir).map_err(|e| io_error(call, &e))?;
        }
        Ok(())
    }
}

impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put_shared(key, crate::Bytes::copy_from_slice(data))
    }

    fn put_shared(&self, key: &str, data: crate::Bytes) -> Result<()> {
        validate_key(key)?;
        let call = self.call("put", key);
        let op = self.writer(call)?;
        opendal_ops::write(op, call, key, data)?;
        self.sync_dirs(call, key)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        validate_key(key)?;
        let call = self.call("get", key);
        let (mut f, size) = self.open_for_read(call)?;
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        f.read_to_end(&mut out).map_err(|e| io_error(call, &e))?;
        Ok(out)
    }

    fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        validate_key(key)?;
        let call = self.call("get_range", key);
        let Some(end) = offset.checked_add(length) else {
            return Err(call.range_error(offset, length, None));
        };
        let (mut f, size) = self.open_for_read(call)?;
        if end > size {
            return Err(call.range_error(offset, length, Some(size)));
        }
        let want = usize::try_from(length).map_err(|_| call.range_error(offset, length, None))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| io_error(call, &e))?;
        // `read_to_end` fills the spare capacity without zeroing it first.
        let mut out = Vec::with_capacity(want);
        (&mut f)
            .take(length)
            .read_to_end(&mut out)
            .map_err(|e| io_error(call, &e))?;
        if out.len() != want {
            // The object shrank between the size check and the read.
            return Err(call.range_error(offset, length, Some(out.len() as u64 + offset)));
        }
        Ok(out)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        validate_key(key)?;
        let call = self.call("size", key);
        match self.reader(call)? {
            Some(op) => opendal_ops::size(op, call),
            None => Ok(None),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        validate_prefix(prefix)?;
        let call = self.call("list", prefix);
        match self.reader(call)? {
            Some(op) => opendal_ops::list(op, call, prefix),
            None => Ok(Vec::new()),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let call = self.call("delete", key);
        match self.reader(call)? {
            Some(op) => opendal_ops::delete(op, call),
            None => Ok(()),
        }
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_error(call: Call<'_>, e: &std::io::Error) -> StorageError {
    if matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) {
        return StorageError::StorageFull {
            key: call.key.to_string(),
            location: call.location.to_string(),
        };
    }
    // Local failures that are not about space (permissions, read-only
    // medium, an unplugged drive) do not fix themselves within a retry's
    // few seconds.
    call.io(e.to_string(), false)
}

/// Best effort: a failure here only leaves garbage, never breaks a write.
fn remove_stale_temp_files(temp_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(temp_dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .and_then(|m| m.modified().ok())
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
