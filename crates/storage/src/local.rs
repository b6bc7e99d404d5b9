//! A repository in a local or USB folder. Listing and deleting go through
//! OpenDAL's fs service; reads and writes are plain file I/O, because they
//! are the hot paths of a backup and a restore and OpenDAL costs there (see
//! [`LocalStorage::open_for_read`] and [`write_object`]).
//!
//! # How `put` keeps the contract
//! An object is written to a temporary file, `sync_all`ed and renamed over
//! its key, so a reader never sees a partial object and the data blocks are
//! durable; then every directory from the object's parent up to the root is
//! fsynced, so the rename itself, and any directory created on the way,
//! survive a power failure too.
//!
//! The temporary directory lives inside the root (a rename cannot cross file
//! systems) under a name with `~`, which no key can contain, so listings
//! skip it.
//!
//! # Nothing is created by reading
//! Restoring from a read-only medium has to work, and opening a folder on an
//! unplugged USB drive must not create an empty one in its place. So the
//! root and the temporary directory are created by the first `put`, and the
//! OpenDAL operator (whose construction creates its root) is built only once
//! the root exists.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Set once the root and the temporary directory exist.
    prepared: OnceLock<()>,
    /// Serialises creating the root and the temporary directory.
    create: Mutex<()>,
    /// Set when the file system refused direct I/O once; later writes go
    /// through the page cache without trying again.
    no_direct: AtomicBool,
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
            prepared: OnceLock::new(),
            create: Mutex::new(()),
            no_direct: AtomicBool::new(false),
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

    /// The OpenDAL operator, or `None` while the root does not exist (an
    /// empty repository, not an error).
    fn reader(&self, call: Call<'_>) -> Result<Option<&Operator>> {
        if let Some(op) = self.reader.get() {
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

    /// Creates the root and the temporary directory once, and returns the
    /// latter.
    fn prepare(&self, call: Call<'_>) -> Result<PathBuf> {
        let temp_dir = self.root.join(TEMP_DIR);
        if self.prepared.get().is_some() {
            return Ok(temp_dir);
        }
        // A poisoned lock only means another put panicked; the state it
        // guards is the file system, which is checked again below.
        let _guard = self.create.lock().unwrap_or_else(|e| e.into_inner());
        if self.prepared.get().is_some() {
            return Ok(temp_dir);
        }
        match std::fs::metadata(&self.root) {
            Ok(m) if !m.is_dir() => {
                return Err(call.io("the repository path exists but is not a folder", false))
            }
            _ => {}
        }
        self.create_root(call)?;
        std::fs::create_dir_all(&temp_dir).map_err(|e| io_error(call, &e))?;
        remove_stale_temp_files(&temp_dir);
        let _ = self.prepared.set(());
        Ok(temp_dir)
    }

    fn put_bytes(&self, key: &str, data: &[u8]) -> Result<()> {
        validate_key(key)?;
        let call = self.call("put", key);
        let temp_dir = self.prepare(call)?;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let temp = temp_dir.join(format!(
            "{}.{}.{}",
            key.replace('/', "_"),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let direct = !self.no_direct.load(Ordering::Relaxed);
        let written = write_object(&temp, data, direct).and_then(|used_direct| {
            if direct && !used_direct {
                self.no_direct.store(true, Ordering::Relaxed);
            }
            let dest = self.root.join(key);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&temp, &dest)
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(io_error(call, &e));
        }
        self.sync_dirs(call, key)
    }

    /// Opens `key` for reading with std rather than OpenDAL, with its size.
    /// Reads are the hot path of a restore: OpenDAL's fs service runs each on
    /// its runtime's threads and reads into a zeroed buffer that is then
    /// copied, which perf put at a quarter of a full restore's CPU (thread
    /// wake-ups, memset, memmove). A plain read on the caller's thread keeps
    /// the same contract.
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
        self.put_bytes(key, data)
    }

    fn put_shared(&self, key: &str, data: crate::Bytes) -> Result<()> {
        self.put_bytes(key, &data)
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

/// Objects smaller than this go through the page cache: direct I/O pays off
/// on packs, not on index files and snapshots of a few KiB.
#[cfg(target_os = "linux")]
const DIRECT_MIN: usize = 1 << 20;

/// Direct I/O wants the buffer, the file offset and the length aligned to
/// the device's logical block size; 4 KiB covers every common device.
#[cfg(target_os = "linux")]
const DIRECT_ALIGN: usize = 4096;

/// Bytes copied to the aligned buffer and written per direct `write`.
#[cfg(target_os = "linux")]
const DIRECT_PIECE: usize = 1 << 20;

#[cfg(target_os = "linux")]
thread_local! {
    /// One aligned staging buffer per writing thread, kept between objects.
    static STAGING: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes `data` to a new file at `path` and syncs it. Returns false when
/// the file system refused direct I/O, so the caller stops asking for it.
///
/// Why direct I/O, written by hand: OpenDAL's fs service (and any buffered
/// write) copies every pack into the page cache, and on the 2-vCPU machines
/// we measure on that copy was 14% of a first backup's CPU in perf; `dd` of
/// 740 MiB took 1.3-1.8 s of system time buffered and 0.15 s with
/// `O_DIRECT`, and a first backup of the bench set spends ~1.3 s less. A
/// backup on a laptop should cost its owner as little CPU as it can, and
/// should not push the user's own files out of the page cache with data
/// nobody reads soon.
/// The data is staged through an aligned buffer (a user-space copy costs a
/// tenth of the kernel's), the unaligned tail is written through the page
/// cache, and `sync_all` makes both durable. File systems without direct
/// I/O (tmpfs, some FUSE ones) refuse it at `open` with `EINVAL`; the object
/// is then written the ordinary way.
fn write_object(path: &Path, data: &[u8], direct: bool) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    if direct && data.len() >= DIRECT_MIN {
        use std::os::unix::fs::OpenOptionsExt;
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => match write_direct(&f, path, data) {
                Ok(()) => {
                    f.sync_all()?;
                    return Ok(true);
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // Alignment stricter than ours: start over buffered.
                    drop(f);
                    std::fs::remove_file(path)?;
                    write_buffered(path, data)?;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            },
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                write_buffered(path, data)?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    write_buffered(path, data)?;
    Ok(direct)
}

fn write_buffered(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// The aligned part through `f` (opened with `O_DIRECT`), the tail through a
/// second, ordinary handle.
#[cfg(target_os = "linux")]
fn write_direct(f: &File, path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let aligned = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
    STAGING.with(|cell| {
        let mut staging = cell.borrow_mut();
        if staging.len() < DIRECT_PIECE + DIRECT_ALIGN {
            *staging = vec![0u8; DIRECT_PIECE + DIRECT_ALIGN];
        }
        // The global allocator gives no alignment guarantee that safe code
        // can ask for, so the buffer is over-allocated and used from its
        // first aligned byte.
        let skip = staging.as_ptr().align_offset(DIRECT_ALIGN);
        let buf = &mut staging[skip..skip + DIRECT_PIECE];
        let mut at = 0usize;
        while at < aligned {
            let n = (aligned - at).min(DIRECT_PIECE);
            buf[..n].copy_from_slice(&data[at..at + n]);
            f.write_all_at(&buf[..n], at as u64)?;
            at += n;
        }
        Ok::<(), std::io::Error>(())
    })?;
    if aligned < data.len() {
        let tail = OpenOptions::new().write(true).open(path)?;
        // The caller's `sync_all` covers it: fsync is per file, not per handle.
        tail.write_all_at(&data[aligned..], aligned as u64)?;
    }
    Ok(())
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
