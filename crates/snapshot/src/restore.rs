//! Restore: trees back to files, with rules that keep a damaged or hostile
//! repository from writing anywhere but the target:
//! - every name is a single safe component (checked when trees are loaded);
//! - folders are entered only when they are real folders, never symlinks;
//! - files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`, so an existing
//!   symlink is never followed, and symlinks of a folder are created after
//!   everything else in it;
//! - every chunk is decrypted and checked against its id before it is
//!   written; all-zero chunks become holes, so sparse files stay sparse.

use crate::cutter::is_zero;
use crate::deep;
use crate::error::{FileError, FileErrorKind, SnapshotError};
use crate::progress::{FileStatus, Progress};
use crate::trees::TreeLoader;
use crate::Result;
use crossbeam_channel::bounded;
use crypto::Id;
use filetime::FileTime;
use format::MAX_TREE_DEPTH;
use format::{EntryName, Node, NodeKind};
use repository::Repository;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Conflict {
    /// Keep the existing file and restore beside it under a new name.
    #[default]
    KeepBoth,
    Overwrite,
    Skip,
}

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Backed-up absolute paths are recreated under this folder; `/` means
    /// the original place.
    pub target: PathBuf,
    pub conflict: Conflict,
    pub workers: usize,
}

/// Whose files a restore makes (see [`restore_owned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Owners {
    /// Whoever runs the restore owns what it writes, and set-user-id and
    /// set-group-id bits are dropped: a restore by root must not hand out
    /// root-owned set-id programs, nor files owned by whoever a snapshot
    /// (or a hostile repository) names.
    #[default]
    Restorer,
    /// The owners recorded in the snapshot (only when running as root; a
    /// user cannot give files away), with their set-id bits, which mean
    /// what they meant at backup time only with those owners: for a whole
    /// system restore.
    Snapshot,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    /// Existing files left alone (conflict rule `skip`, or already identical).
    pub skipped: u64,
    /// Files written under a new name because the original name was taken.
    pub renamed: Vec<(PathBuf, PathBuf)>,
    /// Device nodes, pipes and sockets of the snapshot that were not
    /// recreated: they hold no data, and making them needs privileges.
    pub specials: Vec<PathBuf>,
    pub errors: Vec<FileError>,
}

struct FileJob {
    path: PathBuf,
    node: Node,
}

struct DirMeta {
    path: PathBuf,
    node: Node,
}

/// What is left to do, on an explicit stack: a snapshot may nest folders
/// deeper than any thread's stack could recurse.
enum Step {
    /// An entry to restore at `path`; a folder's tree is at `level`.
    Node {
        path: PathBuf,
        node: Node,
        level: usize,
    },
    /// A folder's symlinks, made after everything else in it.
    Links(Vec<(PathBuf, Node)>),
}

/// Restores `path` (absolute, as backed up; `/` for everything) of the
/// snapshot whose root tree is `root`, owned by whoever runs it.
pub fn restore(
    repo: &Repository,
    root: &Id,
    path: &str,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    restore_owned(repo, root, path, opts, Owners::Restorer, progress)
}

/// [`restore`] with a choice of owners.
pub fn restore_owned(
    repo: &Repository,
    root: &Id,
    path: &str,
    opts: &RestoreOptions,
    owners: Owners,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let loader = TreeLoader::new(repo);
    let node = loader.resolve(root, path)?;
    std::fs::create_dir_all(&opts.target).map_err(|e| SnapshotError::Target {
        path: opts.target.clone(),
        source: e,
    })?;
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    // Recreate the folders leading to the restored path, from the tree.
    let mut dest = opts.target.clone();
    let mut created_parents = Vec::new();
    let mut walked = String::new();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        walked.push('/');
        walked.push_str(c);
        dest.push(c);
        if enter_dir(&dest)? {
            created_parents.push(DirMeta {
                path: dest.clone(),
                node: loader.resolve(root, &walked)?,
            });
        }
    }
    if let Some(last) = comps.last() {
        // The restored entry itself, at its absolute place under the target.
        dest.push(last);
    }
    let state = State {
        repo,
        progress,
        conflict: opts.conflict,
        owners: owners == Owners::Snapshot && is_root(),
        report: Mutex::new(RestoreReport::default()),
    };
    let (tx, rx) = bounded::<FileJob>(64);
    let mut dirs = Vec::new();
    let walk_result = std::thread::scope(|s| {
        for _ in 0..opts.workers.max(1) {
            let rx = rx.clone();
            let state = &state;
            s.spawn(move || {
                for job in rx {
                    state.file(&job.path, &job.node);
                }
            });
        }
        drop(rx);
        let mut stack = Vec::new();
        // The root tree is level 1; the tree of a folder at /a/b, level 3.
        let r = if comps.is_empty() {
            state.children(&loader, &opts.target, &node, 1, &mut stack)
        } else {
            stack.push(Step::Node {
                path: dest.clone(),
                node,
                level: comps.len() + 1,
            });
            Ok(())
        };
        let r = r.and_then(|()| walk(&loader, &state, &mut stack, &tx, &mut dirs));
        drop(tx);
        r
    });
    walk_result?;
    // Folder times last, deepest first, since writing into a folder changes
    // its mtime. `dirs` lists folders before what is inside them.
    for d in dirs.iter().rev().chain(created_parents.iter().rev()) {
        state.apply_meta(&d.path, &d.node, false);
    }
    Ok(state.report.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Makes sure `p` is a real folder (creating it if missing). Returns true
/// when it was created. A symlink or file in its place is refused.
fn enter_dir(p: &Path) -> Result<bool> {
    match deep::lstat(p) {
        Ok(md) if md.file_type().is_dir() => Ok(false),
        Ok(_) => Err(SnapshotError::Unsafe(format!(
            "'{}' exists and is not a folder (a symlink or file); not writing through it",
            p.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            deep::create_dir(p).map_err(|e| SnapshotError::Target {
                path: p.to_path_buf(),
                source: e,
            })?;
            Ok(true)
        }
        Err(e) => Err(SnapshotError::Target {
            path: p.to_path_buf(),
            source: e,
        }),
    }
}

fn child_path(dir: &Path, name: &EntryName) -> Result<PathBuf> {
    if !name.is_safe_component() {
        return Err(SnapshotError::Unsafe(format!(
            "entry name {name:?} is not a plain file name"
        )));
    }
    Ok(dir.join(std::ffi::OsStr::from_bytes(name.as_bytes())))
}

/// Restores what is on `stack`, depth first, without recursing.
fn walk(
    loader: &TreeLoader<'_>,
    st: &State<'_>,
    stack: &mut Vec<Step>,
    tx: &crossbeam_channel::Sender<FileJob>,
    dirs: &mut Vec<DirMeta>,
) -> Result<()> {
    while let Some(step) = stack.pop() {
        match step {
            Step::Links(links) => {
                for (p, child) in links {
                    st.special(&p, &child);
                }
            }
            Step::Node {
                mut path,
                node,
                level,
            } => match node.kind {
                NodeKind::Dir => {
                    if deep::lstat(&path).is_ok_and(|m| !m.is_dir()) {
                        match st.conflict {
                            Conflict::Skip => {
                                st.with(|r| r.skipped += 1);
                                continue;
                            }
                            Conflict::Overwrite => {
                                deep::remove_file(&path).map_err(|e| SnapshotError::Target {
                                    path: path.clone(),
                                    source: e,
                                })?
                            }
                            Conflict::KeepBoth => {
                                let alt = free_name(&path);
                                st.with(|r| r.renamed.push((path.clone(), alt.clone())));
                                path = alt;
                            }
                        }
                    }
                    enter_dir(&path)?;
                    st.with(|r| r.dirs += 1);
                    st.children(loader, &path, &node, level, stack)?;
                    dirs.push(DirMeta { path, node });
                }
                NodeKind::File => {
                    tx.send(FileJob { path, node })
                        .map_err(|_| SnapshotError::Unsafe("restore workers stopped".into()))?;
                }
                _ => st.special(&path, &node),
            },
        }
    }
    Ok(())
}

/// `name (restored).ext`, then `name (restored 2).ext`, … : a free name
/// beside `p` for the keep-both rule.
fn free_name(p: &Path) -> PathBuf {
    let stem = p
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = p
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    for i in 1.. {
        let label = if i == 1 {
            "restored".to_string()
        } else {
            format!("restored {i}")
        };
        let cand = p.with_file_name(format!("{stem} ({label}){ext}"));
        if deep::lstat(&cand).is_err() {
            return cand;
        }
    }
    unreachable!("an unbounded loop always finds a free name")
}

struct State<'a> {
    repo: &'a Repository,
    progress: &'a dyn Progress,
    conflict: Conflict,
    /// Owners (and set-id bits) as in the snapshot: asked for, and root.
    owners: bool,
    report: Mutex<RestoreReport>,
}

impl State<'_> {
    /// Puts the entries of folder `dir` (whose tree is at `level`) on the
    /// stack, to be restored in name order, its symlinks after them.
    fn children(
        &self,
        loader: &TreeLoader<'_>,
        dir: &Path,
        node: &Node,
        level: usize,
        stack: &mut Vec<Step>,
    ) -> Result<()> {
        let Some(sub) = node.subtree else {
            return Ok(());
        };
        if level > MAX_TREE_DEPTH {
            // Only a damaged or hostile repository nests this deep (the
            // backup walk never goes further): the rest is left out,
            // reported, and the restore goes on.
            self.fail(
                dir,
                format!(
                    "folders nest deeper than {MAX_TREE_DEPTH} levels here; nothing below was restored (the snapshot is damaged or was made by something other than Tidemark)"
                ),
            );
            return Ok(());
        }
        let tree = loader.load(&sub)?;
        let mut links = Vec::new();
        let mut rest = Vec::with_capacity(tree.nodes.len());
        for child in tree.nodes.iter() {
            let p = child_path(dir, &child.name)?;
            if child.kind == NodeKind::Symlink {
                links.push((p, child.clone()));
            } else {
                rest.push(Step::Node {
                    path: p,
                    node: child.clone(),
                    level: level + 1,
                });
            }
        }
        stack.push(Step::Links(links));
        stack.extend(rest.into_iter().rev());
        Ok(())
    }

    fn with(&self, f: impl FnOnce(&mut RestoreReport)) {
        f(&mut self.report.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn fail(&self, path: &Path, message: String) {
        let e = FileError {
            path: path.to_path_buf(),
            kind: FileErrorKind::Unreadable,
            message,
        };
        self.progress.error(&e);
        self.with(|r| r.errors.push(e));
    }

    /// Decides where a file goes given what is already there; `None` skips it.
    fn destination(&self, path: &Path, node: &Node) -> Option<PathBuf> {
        let Ok(md) = deep::lstat(path) else {
            return Some(path.to_path_buf());
        };
        if md.is_file()
            && md.len() == node.size
            && FileTime::from_last_modification_time(&md) == mtime(node)
        {
            self.with(|r| r.skipped += 1);
            return None; // already there, identical by size and time
        }
        match self.conflict {
            Conflict::Skip => {
                self.with(|r| r.skipped += 1);
                None
            }
            Conflict::Overwrite => {
                if md.is_dir() {
                    self.fail(
                        path,
                        "a folder is in the way; not replacing a folder with a file".into(),
                    );
                    return None;
                }
                if let Err(e) = deep::remove_file(path) {
                    self.fail(path, format!("cannot replace: {e}"));
                    return None;
                }
                Some(path.to_path_buf())
            }
            Conflict::KeepBoth => {
                let alt = free_name(path);
                self.with(|r| r.renamed.push((path.to_path_buf(), alt.clone())));
                Some(alt)
            }
        }
    }

    fn file(&self, path: &Path, node: &Node) {
        let Some(dest) = self.destination(path, node) else {
            return;
        };
        match self.write_file(&dest, node) {
            Ok(()) => {
                self.with(|r| {
                    r.files += 1;
                    r.bytes += node.size;
                });
                self.progress.file_done(&dest, node.size, FileStatus::New);
            }
            Err(msg) => {
                // Never leave a half-written file that looks restored.
                let _ = deep::remove_file(&dest);
                self.fail(&dest, msg);
            }
        }
    }

    fn write_file(&self, dest: &Path, node: &Node) -> Result<(), String> {
        let mut f = deep::create_new(dest, 0o600).map_err(|e| format!("cannot create: {e}"))?;
        let mut written = 0u64;
        let mut hole = false;
        let mut runs = Runs::new(self.repo, &node.content);
        while let Some(data) = runs.next_blob() {
            let data = data.map_err(|e| format!("cannot restore this file: {e}"))?;
            // Zero blocks become holes, so a sparse file (a VM disk) stays
            // sparse even where a chunk mixes data and zeros.
            for (zero, range) in zero_runs(data) {
                if zero {
                    f.seek(SeekFrom::Current(range.len() as i64))
                        .map_err(|e| e.to_string())?;
                } else {
                    f.write_all(&data[range])
                        .map_err(|e| format!("write failed: {e}"))?;
                }
                hole = zero;
            }
            written += data.len() as u64;
            self.progress.bytes(data.len() as u64);
        }
        if hole || written != node.size {
            // A trailing hole needs the size set explicitly.
            f.set_len(written).map_err(|e| e.to_string())?;
        }
        if written != node.size {
            return Err(format!(
                "restored {written} bytes but the snapshot says {}: the snapshot is damaged",
                node.size
            ));
        }
        self.apply_file_meta(&f, node);
        Ok(())
    }

    fn special(&self, path: &Path, node: &Node) {
        match node.kind {
            NodeKind::Symlink => {
                let Some(target) = &node.link_target else {
                    return;
                };
                if let Ok(md) = deep::lstat(path) {
                    match self.conflict {
                        Conflict::Overwrite if !md.is_dir() => {
                            let _ = deep::remove_file(path);
                        }
                        _ => {
                            self.with(|r| r.skipped += 1);
                            return;
                        }
                    }
                }
                match deep::symlink(target.as_bytes(), path) {
                    Ok(()) => {
                        self.apply_meta(path, node, true);
                        self.with(|r| r.files += 1);
                    }
                    Err(e) => self.fail(path, format!("cannot create symlink: {e}")),
                }
            }
            // Devices, pipes and sockets are not data; recreating them needs
            // privileges and rarely helps. They stay listed in the snapshot,
            // and the report names them.
            _ => self.with(|r| r.specials.push(path.to_path_buf())),
        }
    }

    /// The permission bits to set: set-id bits only with the snapshot's
    /// owners. The sticky bit stays: on a folder it only narrows who may
    /// delete in it (a shared folder like /tmp needs it), and Linux ignores
    /// it on files.
    fn mode_of(&self, node: &Node) -> u32 {
        if self.owners {
            node.mode & 0o7777
        } else {
            node.mode & 0o1777
        }
    }

    /// Like [`apply_meta`](Self::apply_meta), through the open file: three
    /// path lookups fewer per file, which showed in perf on a restore of
    /// many small files.
    fn apply_file_meta(&self, f: &std::fs::File, node: &Node) {
        if self.owners {
            // Before the mode: changing the owner clears set-id bits.
            let _ = std::os::unix::fs::fchown(f, Some(node.uid), Some(node.gid));
        }
        let _ = f.set_permissions(std::fs::Permissions::from_mode(self.mode_of(node)));
        let t = mtime(node);
        let _ = filetime::set_file_handle_times(f, Some(t), Some(t));
    }

    /// Best effort: permissions, owner (when asked and root) and times.
    fn apply_meta(&self, path: &Path, node: &Node, is_link: bool) {
        if self.owners {
            let _ = deep::lchown(path, node.uid, node.gid);
        }
        if !is_link {
            let _ = deep::chmod(path, self.mode_of(node));
        }
        let _ = deep::set_times(path, node.mtime_ns, is_link);
    }
}

fn mtime(node: &Node) -> FileTime {
    FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// Asked once per process: it was a `stat` per restored file.
fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
    })
}

/// Reads a file's chunks with as few requests as possible: chunks that lie
/// back to back in one pack (the usual case, since a backup packs a file's
/// chunks in order) are fetched with one ranged read of up to [`RUN_BYTES`],
/// then each is decrypted in place and checked on its own as it is written,
/// so a worker holds one run of sealed bytes and one decompressed chunk,
/// never a decoded run.
struct Runs<'a> {
    repo: &'a Repository,
    ids: &'a [Id],
    next: usize,
    /// The sealed bytes of the current run, from pack offset `start`; each
    /// blob is opened where it lies.
    bytes: Vec<u8>,
    start: u64,
    queue: std::collections::VecDeque<(Id, repository::index::Location)>,
    /// Compressed chunks decompress here, and a chunk read whole (from a
    /// company server) lands here.
    scratch: Vec<u8>,
}

/// What [`Runs::fill`] fetched.
enum Filled {
    /// A run of sealed blobs, queued.
    Run,
    /// One chunk, already decoded into the scratch buffer.
    Decoded,
}

/// The file-system block size of nearly every Linux file system: smaller
/// zero runs cannot become holes anyway.
const HOLE_BLOCK: usize = 4096;

/// Splits `data` into alternating runs of all-zero and other blocks, so the
/// writer makes one syscall per run rather than per block.
fn zero_runs(data: &[u8]) -> Vec<(bool, std::ops::Range<usize>)> {
    let mut runs: Vec<(bool, std::ops::Range<usize>)> = Vec::new();
    for (i, block) in data.chunks(HOLE_BLOCK).enumerate() {
        let zero = is_zero(block);
        let start = i * HOLE_BLOCK;
        match runs.last_mut() {
            Some((z, r)) if *z == zero => r.end = start + block.len(),
            _ => runs.push((zero, start..start + block.len())),
        }
    }
    runs
}

/// Big enough that per-request costs (a round trip on S3, a thread hop in
/// OpenDAL) vanish, small enough that a worker holds little memory.
const RUN_BYTES: u64 = 4 << 20;

impl<'a> Runs<'a> {
    fn new(repo: &'a Repository, ids: &'a [Id]) -> Self {
        Runs {
            repo,
            ids,
            next: 0,
            bytes: Vec::new(),
            start: 0,
            queue: Default::default(),
            scratch: Vec::new(),
        }
    }

    /// The file's next chunk, checked against its id.
    fn next_blob(&mut self) -> Option<repository::Result<&[u8]>> {
        if self.queue.is_empty() {
            match self.fill()? {
                Ok(Filled::Run) => {}
                Ok(Filled::Decoded) => return Some(Ok(&self.scratch)),
                Err(e) => return Some(Err(e)),
            }
        }
        let (id, l) = self.queue.pop_front()?;
        let at = (u64::from(l.offset) - self.start) as usize;
        // A location outside the run (a damaged index) leaves an empty
        // slice, which fails to open with a clear error.
        let sealed = self
            .bytes
            .get_mut(at..at + l.length as usize)
            .unwrap_or_default();
        Some(
            self.repo
                .decode_blob_in_place(&id, sealed, l.raw_length, &mut self.scratch),
        )
    }

    /// Fetches the next run of blobs that lie back to back in one pack;
    /// `None` when the file has no more chunks.
    fn fill(&mut self) -> Option<repository::Result<Filled>> {
        let first = *self.ids.get(self.next)?;
        let whole = |runs: &mut Self| {
            runs.next += 1;
            Some(runs.repo.read_blob(&first).map(|raw| {
                runs.scratch = raw;
                Filled::Decoded
            }))
        };
        if self.repo.is_remote() {
            // A company server serves chunks, not pack ranges.
            return whole(self);
        }
        let loc = match self.repo.blob_location(&first) {
            Ok(Some(l)) => l,
            // read_blob produces the precise error (missing, or the cache's).
            _ => return whole(self),
        };
        let mut run = vec![(first, loc)];
        let mut end = u64::from(loc.offset) + u64::from(loc.length);
        while let Some(id) = self.ids.get(self.next + run.len()) {
            match self.repo.blob_location(id) {
                Ok(Some(l))
                    if l.pack == loc.pack
                        && u64::from(l.offset) == end
                        && end + u64::from(l.length) - u64::from(loc.offset) <= RUN_BYTES =>
                {
                    end += u64::from(l.length);
                    run.push((*id, l));
                }
                _ => break,
            }
        }
        self.next += run.len();
        self.start = u64::from(loc.offset);
        match self.repo.storage().get_range(
            &format::layout::pack(&loc.pack),
            self.start,
            end - self.start,
        ) {
            Ok(bytes) => {
                self.bytes = bytes;
                self.queue.extend(run);
                Some(Ok(Filled::Run))
            }
            Err(e) => Some(Err(e.into())),
        }
    }
}

#[cfg(test)]
mod zero_run_tests {
    use super::*;

    #[test]
    fn runs_alternate_and_cover_everything() {
        let mut d = vec![0u8; HOLE_BLOCK * 5 + 10];
        d[HOLE_BLOCK + 3] = 1; // block 1 has data
        d[HOLE_BLOCK * 5 + 2] = 7; // the short tail has data
        let runs = zero_runs(&d);
        assert_eq!(
            runs,
            vec![
                (true, 0..HOLE_BLOCK),
                (false, HOLE_BLOCK..2 * HOLE_BLOCK),
                (true, 2 * HOLE_BLOCK..5 * HOLE_BLOCK),
                (false, 5 * HOLE_BLOCK..5 * HOLE_BLOCK + 10),
            ]
        );
        assert!(zero_runs(&[]).is_empty());
    }
}
