//! Finding what changed since the last backup without the repository key.
//!
//! A backup must compare every file with the previous snapshot, and that
//! snapshot's trees are encrypted: without help the walk could start only
//! after Argon2id has unwrapped the key. Instead, this machine remembers a
//! digest of every folder's metadata as it was at the last backup (the
//! folder's own metadata and that of each entry, never content), in a file
//! of the local cache. A scan of the file system, which needs no key, then
//! names the folders whose digest differs, and the backup proper re-lists
//! only those (see [`crate::ChangedFolders`]) and reuses every other
//! subtree of the previous snapshot as it is.
//!
//! Why a digest is safe to trust: it covers each entry's size, times,
//! inode and the folder's own change time. Creating, deleting or renaming
//! an entry moves the folder's ctime, changing a file moves the file's
//! ctime, and ctimes only grow, so a folder that changed at any moment
//! after it was scanned can never show its old digest again. The backup
//! records the digests observed *before* it read anything: whatever
//! changed meanwhile shows a different digest next time. A full walk (a
//! first backup) takes them itself, folder by folder, from the listing it
//! is about to read (`FolderDigest`), instead of waiting for a scan.
//!
//! Stored digests are hashes of paths and of metadata, kept on the machine
//! that holds the files themselves; they reveal nothing the disk does not.

use crate::deep;
use crate::exclude::Excludes;
use crate::node::from_metadata;
use crypto::Id;
use format::EntryName;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Bumped whenever what goes into a digest changes, so old state files are
/// ignored rather than misread.
const DIGEST_VERSION: u8 = 1;
const MAGIC: &[u8; 8] = b"TMFOLD1\n";

/// What the backup is of and where it goes: the repository, the paths and
/// the rules that decide what is in it. Folder states are only comparable
/// between backups of the same scope.
pub fn scope_of(
    repository: &str,
    paths: &[PathBuf],
    exclude_patterns: &[String],
    exclude_caches: bool,
    one_file_system: bool,
    hostname: &str,
) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[
        DIGEST_VERSION,
        u8::from(exclude_caches),
        u8::from(one_file_system),
    ]);
    field(&mut h, repository.as_bytes());
    let mut sorted: Vec<&PathBuf> = paths.iter().collect();
    sorted.sort();
    for p in sorted {
        field(&mut h, p.as_os_str().as_bytes());
    }
    h.update(b"\0excludes");
    for e in exclude_patterns {
        field(&mut h, e.as_bytes());
    }
    h.update(b"\0host");
    field(&mut h, hostname.as_bytes());
    *h.finalize().as_bytes()
}

fn field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// Folder digests as of one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderStates {
    /// The snapshot these digests describe; `None` until one is committed.
    pub snapshot: Option<Id>,
    digests: HashMap<[u8; 32], [u8; 32]>,
}

impl FolderStates {
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Records `dir` as digested.
    pub(crate) fn insert(&mut self, dir: &Path, digest: [u8; 32]) {
        self.digests.insert(path_key(dir), digest);
    }

    pub(crate) fn extend(&mut self, other: FolderStates) {
        self.digests.extend(other.digests);
    }

    /// Forgets the folders holding `paths` (files or folders the backup
    /// could not read), so the next backup lists them again and reports
    /// them again instead of trusting a snapshot that lacks them.
    pub fn forget_around(&mut self, paths: &[PathBuf]) {
        for p in paths {
            for q in [Some(p.as_path()), p.parent()].into_iter().flatten() {
                self.digests.remove(&path_key(q));
            }
        }
    }

    /// Reads the states for `scope` from `dir`; anything missing, damaged
    /// or of another scope reads as no states (the backup walks everything).
    pub fn load(dir: &Path, scope: &[u8; 32]) -> FolderStates {
        let Ok(bytes) = std::fs::read(file_for(dir, scope)) else {
            return FolderStates::default();
        };
        Self::decode(&bytes, scope).unwrap_or_default()
    }

    fn decode(bytes: &[u8], scope: &[u8; 32]) -> Option<FolderStates> {
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        let (stored_scope, rest) = rest.split_first_chunk::<32>()?;
        if stored_scope != scope {
            return None;
        }
        let (snap, rest) = rest.split_first_chunk::<32>()?;
        let (count, mut rest) = rest.split_first_chunk::<8>()?;
        let count = usize::try_from(u64::from_le_bytes(*count)).ok()?;
        if rest.len() != count.checked_mul(64)? {
            return None;
        }
        let mut digests = HashMap::with_capacity(count);
        while let Some((k, r)) = rest.split_first_chunk::<32>() {
            let (v, r) = r.split_first_chunk::<32>()?;
            digests.insert(*k, *v);
            rest = r;
        }
        Some(FolderStates {
            snapshot: Some(Id(*snap)),
            digests,
        })
    }

    /// Writes the states atomically (a temporary file renamed over the old).
    pub fn save(&self, dir: &Path, scope: &[u8; 32]) -> std::io::Result<()> {
        let Some(snap) = self.snapshot else {
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        let mut out = Vec::with_capacity(80 + self.digests.len() * 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(scope);
        out.extend_from_slice(&snap.0);
        out.extend_from_slice(&(self.digests.len() as u64).to_le_bytes());
        for (k, v) in &self.digests {
            out.extend_from_slice(k);
            out.extend_from_slice(v);
        }
        let path = file_for(dir, scope);
        // Two backups of one scope may finish together: each writes its own
        // file, so the one renamed last is whole, never a mix of both.
        let tmp = path.with_extension(format!("{}.{:x}.tmp", std::process::id(), rand_suffix()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&out)?;
        drop(f);
        std::fs::rename(&tmp, &path)
    }
}

/// Distinguishes the temporary files of threads of one process.
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

fn file_for(dir: &Path, scope: &[u8; 32]) -> PathBuf {
    let name: String = scope[..16].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{name}.folders"))
}

fn path_key(p: &Path) -> [u8; 32] {
    *blake3::hash(p.as_os_str().as_bytes()).as_bytes()
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct ChangeScan {
    /// Folders whose digest differs from the stored one (or that are new);
    /// empty when nothing was known.
    pub changed: BTreeSet<PathBuf>,
    /// Every folder's digest as seen now; saved once the backup commits.
    pub states: FolderStates,
    pub files: u64,
    pub bytes: u64,
}

/// Walks `paths` as a backup would (same excludes, same mount-point rule),
/// digesting each folder and comparing with `known`. Returns `None` when
/// told to stop. `on_progress` gets the running file and byte counts.
pub fn scan_changes(
    paths: &[PathBuf],
    excludes: &Excludes,
    one_file_system: bool,
    known: &FolderStates,
    stop: &AtomicBool,
    on_progress: &dyn Fn(u64, u64),
) -> Option<ChangeScan> {
    let mut out = ChangeScan::default();
    for root in paths {
        let Ok(md) = std::fs::symlink_metadata(root) else {
            continue;
        };
        if md.is_dir() {
            scan_dir(
                root,
                md.dev(),
                excludes,
                one_file_system,
                known,
                stop,
                on_progress,
                &mut out,
            )?;
        } else if md.is_file() {
            out.files += 1;
            out.bytes += md.len();
        }
    }
    on_progress(out.files, out.bytes);
    Some(out)
}

#[allow(clippy::too_many_arguments)]
fn scan_dir(
    dir: &Path,
    dev: u64,
    excludes: &Excludes,
    one_file_system: bool,
    known: &FolderStates,
    stop: &AtomicBool,
    on_progress: &dyn Fn(u64, u64),
    out: &mut ChangeScan,
) -> Option<()> {
    // An explicit stack of folders: a folder hierarchy can be deeper than
    // a thread's stack would allow recursing.
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let subdirs = scan_one(
            &dir,
            dev,
            excludes,
            one_file_system,
            known,
            on_progress,
            out,
        );
        stack.extend(subdirs.into_iter().rev());
    }
    Some(())
}

/// Digests one folder; returns its subfolders to scan.
fn scan_one(
    dir: &Path,
    dev: u64,
    excludes: &Excludes,
    one_file_system: bool,
    known: &FolderStates,
    on_progress: &dyn Fn(u64, u64),
    out: &mut ChangeScan,
) -> Vec<PathBuf> {
    let key = path_key(dir);
    let (Ok(own), Ok(mut names)) = (deep::lstat(dir), deep::read_dir_names(dir)) else {
        // Unreadable: the backup lists it again and reports why.
        out.changed.insert(dir.to_path_buf());
        return Vec::new();
    };
    names.sort();
    let mut h = FolderDigest::new(&own);
    let mut subdirs = Vec::new();
    for name in names {
        let full = dir.join(std::ffi::OsStr::from_bytes(&name));
        let Ok(md) = deep::lstat(&full) else {
            // Vanished between listing and stat: the backup sees what is left.
            h.vanished(&name);
            continue;
        };
        if excludes.is_excluded(&full, md.is_dir()) {
            continue;
        }
        h.entry(&name, &md);
        if md.is_dir() {
            if !(one_file_system && md.dev() != dev) {
                subdirs.push(full);
            }
        } else if md.is_file() {
            out.files += 1;
            out.bytes += md.len();
            if out.files.is_multiple_of(1000) {
                on_progress(out.files, out.bytes);
            }
        }
    }
    let digest = h.finish();
    // With nothing known every folder is new, and the backup walks them all
    // anyway: naming each would only cost memory on a first backup.
    if known.snapshot.is_some() && known.digests.get(&key) != Some(&digest) {
        out.changed.insert(dir.to_path_buf());
    }
    out.states.digests.insert(key, digest);
    subdirs
}

/// A folder's digest, fed its entries in name order (excluded ones left
/// out). The scan and a full backup walk both compute it, from the same
/// code, so a backup's digests are what the next scan sees when nothing
/// changed.
pub(crate) struct FolderDigest(blake3::Hasher);

impl FolderDigest {
    /// `own` is the folder's own metadata.
    pub(crate) fn new(own: &std::fs::Metadata) -> Self {
        let mut h = blake3::Hasher::new();
        digest_node(&mut h, b"", own);
        FolderDigest(h)
    }

    pub(crate) fn entry(&mut self, name: &[u8], md: &std::fs::Metadata) {
        digest_node(&mut self.0, name, md);
    }

    /// An entry listed but gone before it could be looked at.
    pub(crate) fn vanished(&mut self, name: &[u8]) {
        field(&mut self.0, b"\0vanished");
        field(&mut self.0, name);
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// Everything of an entry a tree records except content: the same
/// metadata the backup compares (see `node::from_metadata`).
fn digest_node(h: &mut blake3::Hasher, name: &[u8], md: &std::fs::Metadata) {
    let n = from_metadata(EntryName::new(name.to_vec()), md);
    field(h, name);
    h.update(&[n.kind as u8]);
    for v in [
        n.size,
        u64::from(n.mode),
        u64::from(n.uid),
        u64::from(n.gid),
        n.mtime_ns as u64,
        n.ctime_ns as u64,
        n.inode,
        n.device,
        n.rdev,
    ] {
        h.update(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(root: &Path, known: &FolderStates) -> ChangeScan {
        let ex = Excludes::new(&["skip".to_string()], false).expect("excludes");
        scan_changes(
            &[root.to_path_buf()],
            &ex,
            false,
            known,
            &AtomicBool::new(false),
            &|_, _| {},
        )
        .expect("not stopped")
    }

    fn settled(s: ChangeScan) -> FolderStates {
        let mut st = s.states;
        st.snapshot = Some(Id([1; 32]));
        st
    }

    #[test]
    fn only_folders_whose_entries_changed_are_named() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        for sub in ["a/b", "c", "skip"] {
            std::fs::create_dir_all(r.join(sub)).expect("mkdir");
        }
        std::fs::write(r.join("a/b/f"), b"one").expect("write");
        std::fs::write(r.join("c/g"), b"two").expect("write");
        let first = scan(r, &FolderStates::default());
        assert!(first.changed.is_empty(), "nothing known, nothing named");
        assert_eq!(first.states.len(), 4, "every folder but the excluded one");
        assert_eq!((first.files, first.bytes), (2, 6));
        let known = settled(first);
        assert!(scan(r, &known).changed.is_empty());

        // A file rewritten in place: its folder only.
        std::fs::write(r.join("a/b/f"), b"ONE").expect("write");
        assert_eq!(scan(r, &known).changed, BTreeSet::from([r.join("a/b")]));
        // An excluded folder's content never matters.
        std::fs::write(r.join("skip/x"), b"x").expect("write");
        assert_eq!(scan(r, &known).changed, BTreeSet::from([r.join("a/b")]));
        // A deleted file: its folder, and the folder that lists it (whose
        // entry for it has a new modification time).
        let known = settled(scan(r, &known));
        std::fs::remove_file(r.join("c/g")).expect("rm");
        assert_eq!(
            scan(r, &known).changed,
            BTreeSet::from([r.to_path_buf(), r.join("c")])
        );
        // A folder's own mode: the folder and the one that lists it.
        let known = settled(scan(r, &known));
        let mut p = std::fs::metadata(r.join("c")).expect("stat").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o700);
        std::fs::set_permissions(r.join("c"), p).expect("chmod");
        assert_eq!(
            scan(r, &known).changed,
            BTreeSet::from([r.to_path_buf(), r.join("c")])
        );
    }

    #[test]
    fn states_round_trip_and_refuse_another_scope_or_damage() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("x")).expect("mkdir");
        let known = settled(scan(d.path(), &FolderStates::default()));
        let dir = d.path().join("states");
        let scope = scope_of("/repo", &[d.path().to_path_buf()], &[], false, false, "h");
        known.save(&dir, &scope).expect("save");
        assert_eq!(FolderStates::load(&dir, &scope), known);
        let other = scope_of(
            "/repo",
            &[d.path().to_path_buf()],
            &["*.o".into()],
            false,
            false,
            "h",
        );
        assert_ne!(scope, other);
        let usb = scope_of("/usb", &[d.path().to_path_buf()], &[], false, false, "h");
        assert_ne!(scope, usb);
        assert_eq!(FolderStates::load(&dir, &other), FolderStates::default());
        let file = file_for(&dir, &scope);
        let mut bytes = std::fs::read(&file).expect("read");
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&file, bytes).expect("write");
        assert_eq!(FolderStates::load(&dir, &scope), FolderStates::default());
    }

    #[test]
    fn unreadable_files_and_folders_are_forgotten() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("a")).expect("mkdir");
        let mut known = settled(scan(d.path(), &FolderStates::default()));
        assert_eq!(known.len(), 2);
        known.forget_around(&[d.path().join("a/locked.txt")]);
        assert_eq!(known.len(), 1);
        assert_eq!(
            scan(d.path(), &known).changed,
            BTreeSet::from([d.path().join("a")])
        );
    }
}
