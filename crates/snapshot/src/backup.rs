//! The backup walk. Directories are processed depth first so each folder's
//! tree is stored after its children; files whose size, times and inode
//! match the parent snapshot are not read at all; new data goes to the
//! repository's upload pipeline, which compresses, seals and stores it on
//! other threads while the walk reads, chunks and hashes.
//!
//! A full walk runs on two threads that share the tree (see [`Crew`]).
//! Folders of photos wait on the disk and folders of text wait on the
//! compressor; one walker alone does one after the other, two overlap
//! them. On the bench set (2 vCPUs), a first backup with one walker took
//! 3.9 s from a cold page cache and 2.6 s from a warm one: it left the
//! disk and the CPU idle by turns. Two walkers, where only the first could
//! hand folders over, took 3.6 s (medians of 5 alternating runs), for ~12
//! MiB more peak memory; but the first then sat 1.4 s of that waiting at
//! the root for the folder of source code the second had taken. Now either
//! walker hands the other work whenever that one is idle: 3.91 -> 3.56 s
//! (medians of 11 alternating runs) against the one-way hand-over.

use crate::changes::{FolderDigest, FolderStates};
use crate::cutter::{is_zero, Cutter};
use crate::deep;
use crate::error::{FileError, FileErrorKind, SnapshotError};
use crate::exclude::Excludes;
use crate::node::{from_metadata, unchanged};
use crate::prefetch::Hint;
use crate::progress::{FileStatus, Progress};
use crate::sparse::HoleSkippingReader;
use crate::trees::TreeLoader;
use crate::Result;
use chrono::Utc;
use crypto::Id;
use format::{
    BlobKind, EntryName, Node, NodeKind, Snapshot, SnapshotSummary, Tree, FORMAT_VERSION,
    MAX_TREE_DEPTH,
};
use repository::{Repository, UploadOptions, Uploader};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub excludes: Excludes,
    pub one_file_system: bool,
    pub hostname: String,
    pub username: String,
    pub tags: Vec<String>,
    /// Snapshot to compare with; `None` picks the newest one of the same
    /// host and paths.
    pub parent: Option<Id>,
    /// Read every file even when its metadata says it is unchanged.
    pub force: bool,
    pub upload: UploadOptions,
    /// Set from another thread to stop the backup soon (a pause from the
    /// tray). Packs already stored stay, so the next backup resumes there.
    pub cancel: Option<Arc<AtomicBool>>,
    /// What changed since `parent`, as a file watcher saw it: only these
    /// folders (and the ones on the way to them) are listed, every other
    /// folder's tree is taken from `parent` without being walked. Needs an
    /// explicit `parent`; without one the backup walks everything.
    pub changed: Option<ChangedFolders>,
    /// Digest every folder as the walk lists it (see [`crate::changes`]),
    /// for the next backup's scan: on a first backup this spares waiting
    /// for a scan of the whole tree before reading anything. Only a full
    /// walk lists every folder; an incremental one records none.
    pub folder_states: bool,
}

/// Folders that changed since a snapshot (see [`BackupOptions::changed`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedFolders {
    /// Folders whose entries changed: listed again, their files compared
    /// with the parent's by metadata as in any backup.
    pub dirs: BTreeSet<PathBuf>,
    /// Subtrees walked entirely (a new folder, a watcher overflow).
    pub rescan: BTreeSet<PathBuf>,
}

impl ChangedFolders {
    /// `p` is inside (or is) a subtree to walk entirely.
    fn walk_all(&self, p: &Path) -> bool {
        p.ancestors().any(|a| self.rescan.contains(a))
    }

    /// `p` is, or is on the way to, a changed folder. Paths order by
    /// component, so whatever lies below `p` sorts right after it.
    fn leads_to_change(&self, p: &Path) -> bool {
        [&self.dirs, &self.rescan].iter().any(|set| {
            set.range(p.to_path_buf()..)
                .next()
                .is_some_and(|e| e.starts_with(p))
        })
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    pub id: Id,
    pub snapshot: Snapshot,
    pub errors: Vec<FileError>,
    /// Every folder's digest as the walk saw it, as of this snapshot, when
    /// [`BackupOptions::folder_states`] asked for them and the walk was full.
    #[serde(skip)]
    pub folder_states: Option<FolderStates>,
}

/// Attempts at reading a file that keeps changing before it is stored as
/// last read and reported.
const READ_ATTEMPTS: usize = 3;

/// The walk recurses once per folder level, and no deeper than
/// [`MAX_TREE_DEPTH`] levels plus [`HELP_BELOW`] (see [`Walker::wait`]).
/// 256 MiB overflowed in a debug build before 10,000 levels (its frames
/// are several times a release build's); 1 GiB walked 10,050 levels there.
/// It is address space: only the pages a deep folder touches cost memory.
const WALK_STACK: usize = 1024 * 1024 * 1024;

/// A walker that waits deeper than this many levels on its own stack just
/// waits, rather than walking other folders inside the wait: those could
/// nest another [`MAX_TREE_DEPTH`] levels on top of its own.
const HELP_BELOW: usize = 1_000;

/// How long a backup waits for another holder's exclusive lock (a prune's
/// sweep) before it gives up.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub fn backup(
    repo: &Arc<Repository>,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let started = Instant::now();
    let paths = normalize_paths(&opts.paths)?;
    let lock = repo.lock_waiting(false, LOCK_WAIT)?;
    let index_problems = repo.load_index()?;
    repo.recover_interrupted(&lock, &index_problems)?;
    let path_strings: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let parent = match opts.parent {
        Some(id) => Some((id, repo.load_snapshot(&id)?)),
        None => latest_of(repo, &opts.hostname, &path_strings)?,
    };
    let uploader = repo.start_upload(opts.upload.clone())?;
    let loader = TreeLoader::new(repo);
    let mut trie = Trie::default();
    for p in &paths {
        trie.insert(p);
    }
    let parent_tree = parent.as_ref().map(|(_, s)| s.tree);
    // Incremental: the parent's totals, corrected below for every folder
    // that is walked again (its old entries out, its new ones in).
    let changed = match (&opts.changed, &opts.parent, &parent) {
        (Some(c), Some(_), Some(_)) => Some(c),
        _ => None,
    };
    let summary = match (changed, &parent) {
        (Some(_), Some((_, p))) => SnapshotSummary {
            total_files: p.summary.total_files,
            total_bytes: p.summary.total_bytes,
            dirs: p.summary.dirs,
            ..Default::default()
        },
        _ => SnapshotSummary::default(),
    };
    let cutter = Cutter::new(&repo.config().chunker).map_err(|reason| {
        SnapshotError::Repo(repository::RepoError::Corrupt {
            what: "the repository config".into(),
            reason,
        })
    })?;
    let prefetch = crate::prefetch::Prefetcher::start(&opts.excludes);
    // An incremental walk corrects totals inherited from the parent, which
    // only the one walker that holds them can do; it lists few folders
    // anyway.
    let (crew, inboxes) = if changed.is_none() {
        let (crew, inboxes) = Crew::new();
        (Some(crew), Some(inboxes))
    } else {
        (None, None)
    };
    let walker = |summary, me: usize, inbox: Option<crossbeam_channel::Receiver<Job>>| Walker {
        repo,
        uploader: &uploader,
        loader: &loader,
        opts,
        progress,
        errors: Vec::new(),
        summary,
        changed,
        totals_exact: true,
        levels: Vec::new(),
        states: (opts.folder_states && changed.is_none()).then(FolderStates::default),
        cutter: cutter.clone(),
        zero_ids: HashMap::new(),
        prefetch: &prefetch,
        crew: crew.as_ref(),
        me,
        inbox,
        helping: 0,
    };
    let walked = std::thread::scope(|scope| {
        let panicked = |who: &str| SnapshotError::Source {
            path: "/".into(),
            message: format!("the backup {who} panicked"),
        };
        let (first_inbox, second) = match inboxes {
            Some([first_inbox, second_inbox]) => {
                let mut w = walker(SnapshotSummary::default(), 1, Some(second_inbox));
                let t = std::thread::Builder::new()
                    .name("backup-walk-2".into())
                    .stack_size(WALK_STACK)
                    .spawn_scoped(scope, move || {
                        w.serve();
                        (w.errors, w.summary, w.states)
                    })
                    .map_err(SnapshotError::Io)?;
                (Some(first_inbox), Some(t))
            }
            None => (None, None),
        };
        let mut first = walker(summary, 0, first_inbox);
        let walked = match std::thread::Builder::new()
            .name("backup-walk".into())
            .stack_size(WALK_STACK)
            .spawn_scoped(scope, move || {
                let root = first.virtual_dir(Path::new("/"), &trie, parent_tree);
                Ok::<_, SnapshotError>((root?, first))
            }) {
            Ok(t) => t.join().map_err(|_| panicked("walk")),
            Err(e) => Err(SnapshotError::Io(e)),
        };
        // Before any return: the scope waits for the second walker, which
        // waits for folders until closed.
        if let Some(c) = &crew {
            c.close();
        }
        let (root, mut first) = match walked? {
            Ok(w) => w,
            // Stopped because a folder walked for the other walker failed:
            // that error is the one to report.
            Err(SnapshotError::Cancelled) => {
                return Err(crew
                    .as_ref()
                    .and_then(Crew::take_error)
                    .unwrap_or(SnapshotError::Cancelled))
            }
            Err(e) => return Err(e),
        };
        if let Some(second) = second {
            let (errors, summary, states) = second.join().map_err(|_| panicked("second walker"))?;
            first.errors.extend(errors);
            add_walk_counts(&mut first.summary, &summary);
            if let (Some(mine), Some(theirs)) = (&mut first.states, states) {
                mine.extend(theirs);
            }
        }
        if !first.totals_exact {
            first.recount(&root)?;
        }
        // The two walkers report in no fixed order between them.
        first.errors.sort_by(|a, b| a.path.cmp(&b.path));
        Ok::<_, SnapshotError>((root, first.errors, first.summary, first.states))
    });
    let (root, errors, mut summary, mut folder_states) = walked?;
    if changed.is_some() {
        // Files in folders that were not walked are unchanged too.
        summary.files_unmodified = summary
            .total_files
            .saturating_sub(summary.files_new + summary.files_changed);
    }
    if cancelled(opts) {
        return Err(SnapshotError::Cancelled);
    }
    let stats = uploader.finish()?;
    summary.chunks_new = stats.blobs_new;
    summary.bytes_new_raw = stats.bytes_new_raw;
    summary.bytes_new_stored = stats.bytes_new_stored;
    summary.errors = errors.len() as u64;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    let snapshot = Snapshot {
        version: FORMAT_VERSION,
        time: Utc::now(),
        hostname: opts.hostname.clone(),
        username: opts.username.clone(),
        paths: path_strings,
        tree: root,
        parent: parent.map(|(id, _)| id),
        tags: opts.tags.clone(),
        summary,
    };
    let id = repo.save_snapshot(&snapshot)?;
    if let Some(st) = &mut folder_states {
        st.snapshot = Some(id);
    }
    Ok(BackupReport {
        id,
        snapshot,
        errors,
        folder_states,
    })
}

/// The snapshot a backup of `paths` from `hostname` takes as its parent
/// when none is given: the newest one of the same host and paths.
pub fn default_parent(repo: &Repository, hostname: &str, paths: &[PathBuf]) -> Result<Option<Id>> {
    let paths: Vec<String> = normalize_paths(paths)?
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    Ok(latest_of(repo, hostname, &paths)?.map(|(id, _)| id))
}

fn latest_of(
    repo: &Repository,
    hostname: &str,
    paths: &[String],
) -> Result<Option<(Id, Snapshot)>> {
    let (snaps, _) = repo.list_snapshots()?;
    Ok(snaps
        .into_iter()
        .rev()
        .find(|(_, s)| s.hostname == hostname && s.paths == paths))
}

fn cancelled(opts: &BackupOptions) -> bool {
    opts.cancel
        .as_ref()
        .is_some_and(|c| c.load(Ordering::Relaxed))
}

/// Cancelled by the caller, or the walk is stopping (the other walker
/// failed).
fn stop_asked(opts: &BackupOptions, crew: Option<&Crew>) -> bool {
    cancelled(opts) || crew.is_some_and(|c| c.stop.load(Ordering::Relaxed))
}

/// Makes paths absolute and lexically clean, checks they exist, and drops
/// paths inside other given paths (they would be backed up twice).
fn normalize_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        let abs = std::path::absolute(p).map_err(|e| SnapshotError::Source {
            path: p.clone(),
            message: e.to_string(),
        })?;
        let mut clean = PathBuf::from("/");
        for c in abs.components() {
            match c {
                std::path::Component::Normal(n) => clean.push(n),
                std::path::Component::ParentDir => {
                    clean.pop();
                }
                _ => {}
            }
        }
        if let Err(e) = std::fs::symlink_metadata(&clean) {
            return Err(SnapshotError::Source {
                path: clean,
                message: e.to_string(),
            });
        }
        out.push(clean);
    }
    out.sort();
    out.dedup();
    let snapshot = out.clone();
    out.retain(|p| !snapshot.iter().any(|q| q != p && p.starts_with(q)));
    if out.is_empty() {
        return Err(SnapshotError::Source {
            path: PathBuf::new(),
            message: "nothing to back up: give at least one path".into(),
        });
    }
    Ok(out)
}

/// The folders from `/` down to each backed-up path.
#[derive(Default)]
struct Trie {
    children: BTreeMap<Vec<u8>, Trie>,
    target: bool,
}

impl Trie {
    fn insert(&mut self, p: &Path) {
        let mut t = self;
        for c in p.components() {
            if let std::path::Component::Normal(n) = c {
                t = t.children.entry(n.as_bytes().to_vec()).or_default();
            }
        }
        t.target = true;
    }
}

struct Walker<'a> {
    repo: &'a Repository,
    uploader: &'a Uploader,
    loader: &'a TreeLoader<'a>,
    opts: &'a BackupOptions,
    progress: &'a dyn Progress,
    errors: Vec<FileError>,
    summary: SnapshotSummary,
    cutter: Cutter,
    /// Ids of all-zero chunks by length.
    zero_ids: HashMap<usize, Id>,
    prefetch: &'a crate::prefetch::Prefetcher,
    /// The walkers sharing a full walk, and which of them this is.
    crew: Option<&'a Crew>,
    me: usize,
    /// Where the other walker hands this one folders, while it waits.
    inbox: Option<crossbeam_channel::Receiver<Job>>,
    /// Folders walked for the other walker inside this one's own waits,
    /// one inside the other.
    helping: usize,
    /// Set for an incremental backup.
    changed: Option<&'a ChangedFolders>,
    /// False once an old tree could not be read to take its entries out
    /// of the parent's totals; the totals are then counted afresh.
    totals_exact: bool,
    /// The folders being walked, innermost last.
    levels: Vec<Level>,
    /// Digests of the folders this walker listed, when asked for.
    states: Option<FolderStates>,
}

/// A folder being walked, as far as the others need to see it.
#[derive(Default)]
struct Level {
    /// Which chunks of its unchanged-looking files the repository has,
    /// asked in one query. One SQLite read per chunk took a file lock each
    /// time, a fifth of a no-change backup's walk.
    known: HashSet<Id>,
    /// Subfolders not started yet, in name order: the owner walks them from
    /// the front, the other walker is handed them from the back.
    dirs: VecDeque<Subfolder>,
    /// Entries of subfolders walked out of turn (while waiting).
    done: Vec<Node>,
    /// Subfolders handed to the other walker; their entries come back here.
    handed: Vec<crossbeam_channel::Receiver<Result<Option<Node>>>>,
}

/// A subfolder found in a listing, with all it takes to walk it anywhere.
struct Subfolder {
    path: PathBuf,
    node: Node,
    md: Metadata,
    prev: Option<Node>,
    dev: u64,
}

impl Walker<'_> {
    fn stopped(&self) -> bool {
        stop_asked(self.opts, self.crew)
    }

    fn report(&mut self, path: &Path, kind: FileErrorKind, message: String) {
        let e = FileError {
            path: path.to_path_buf(),
            kind,
            message,
        };
        tracing::warn!(path = %e.path.display(), ?kind, "{}", e.message);
        self.progress.error(&e);
        self.errors.push(e);
    }

    fn is_known(&self, id: &Id) -> bool {
        self.levels.last().is_some_and(|l| l.known.contains(id)) || self.uploader.is_known(id)
    }

    fn parent_tree(&self, id: Option<Id>) -> Option<Arc<Tree>> {
        // A damaged parent only costs speed: everything is read again.
        id.and_then(|id| self.loader.load(&id).ok())
    }

    /// The parent's subtree for `path`, taken as it is when the watcher saw
    /// no change at or below it.
    fn reuse(&self, path: &Path, prev_sub: Option<Id>) -> Option<Id> {
        if self.opts.force {
            return None;
        }
        let c = self.changed?;
        (!c.walk_all(path) && !c.leads_to_change(path))
            .then_some(prev_sub)
            .flatten()
    }

    /// Takes a replaced folder (its own count and its files) out of the
    /// totals inherited from the parent.
    fn forget_old(&mut self, old: &Tree) {
        let s = &mut self.summary;
        s.dirs = s.dirs.saturating_sub(1);
        for n in old.nodes.iter().filter(|n| n.kind == NodeKind::File) {
            s.total_files = s.total_files.saturating_sub(1);
            s.total_bytes = s.total_bytes.saturating_sub(n.size);
        }
    }

    /// Takes a whole old subtree out of the inherited totals (a folder that
    /// is gone or no longer walked).
    fn forget_subtree(&mut self, id: &Id) {
        // An explicit stack: old trees come from the repository, which may
        // nest them deeper than a thread's stack.
        let mut stack = vec![*id];
        while let Some(id) = stack.pop() {
            let Some(t) = self.parent_tree(Some(id)) else {
                self.totals_exact = false;
                return;
            };
            self.forget_old(&t);
            for n in &t.nodes {
                if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                    stack.push(sub);
                }
            }
        }
    }

    /// After an incremental walk: the old entries of a folder walked again
    /// leave the totals; its subfolders that are walked again do the same
    /// themselves, the ones that are gone are taken out whole.
    fn forget_replaced(&mut self, parent: Option<Id>, ptree: Option<&Tree>, new: &Tree) {
        if self.changed.is_none() || parent.is_none() {
            return;
        }
        let Some(old) = ptree else {
            self.totals_exact = false;
            return;
        };
        self.forget_old(old);
        for n in &old.nodes {
            if let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
                let kept = new
                    .find(n.name.as_bytes())
                    .is_some_and(|m| m.kind == NodeKind::Dir);
                if !kept {
                    self.forget_subtree(&sub);
                }
            }
        }
    }

    /// Counts the totals from the new trees (after an old tree could not be
    /// read): everything but the files and bytes read stays as counted.
    fn recount(&mut self, root: &Id) -> Result<()> {
        let (mut files, mut bytes, mut dirs) = (0u64, 0u64, 0u64);
        let mut stack = vec![*root];
        while let Some(id) = stack.pop() {
            let t = self.loader.load(&id)?;
            dirs += 1;
            for n in &t.nodes {
                match (n.kind, n.subtree) {
                    (NodeKind::File, _) => {
                        files += 1;
                        bytes += n.size;
                    }
                    (NodeKind::Dir, Some(sub)) => stack.push(sub),
                    _ => {}
                }
            }
        }
        self.summary.total_files = files;
        self.summary.total_bytes = bytes;
        self.summary.dirs = dirs;
        Ok(())
    }

    fn store_tree(&mut self, mut tree: Tree) -> Result<Id> {
        tree.sort();
        let bytes = format::to_json(&tree);
        let id = self.repo.content_id(&bytes);
        self.uploader.add(BlobKind::Tree, id, &bytes)?;
        self.summary.dirs += 1;
        Ok(id)
    }

    /// A folder on the way from `/` to the backed-up paths: only the
    /// children that lead to a backed-up path are included.
    fn virtual_dir(&mut self, path: &Path, trie: &Trie, parent: Option<Id>) -> Result<Id> {
        let ptree = self.parent_tree(parent);
        let mut tree = Tree::default();
        for (name, child) in &trie.children {
            let full = path.join(std::ffi::OsStr::from_bytes(name));
            let md = std::fs::symlink_metadata(&full).map_err(|e| SnapshotError::Source {
                path: full.clone(),
                message: e.to_string(),
            })?;
            let prev = ptree.as_ref().and_then(|t| t.find(name)).cloned();
            let node = if child.target {
                self.entry(
                    &full,
                    from_metadata(EntryName::new(name.clone()), &md),
                    &md,
                    prev.as_ref(),
                    md.dev(),
                )?
            } else {
                let mut n = from_metadata(EntryName::new(name.clone()), &md);
                n.subtree = Some(self.virtual_dir(&full, child, prev.and_then(|p| p.subtree))?);
                Some(n)
            };
            tree.nodes.extend(node);
        }
        tree.sort();
        self.forget_replaced(parent, ptree.as_deref(), &tree);
        self.store_tree(tree)
    }

    /// `node` is `md` as a tree entry (see `from_metadata`).
    fn entry(
        &mut self,
        path: &Path,
        mut node: Node,
        md: &Metadata,
        prev: Option<&Node>,
        dev: u64,
    ) -> Result<Option<Node>> {
        match node.kind {
            NodeKind::Dir => {
                // The tree of /a/b is at level 3: the root's is level 1.
                let level = path
                    .as_os_str()
                    .as_bytes()
                    .iter()
                    .filter(|&&c| c == b'/')
                    .count()
                    + 1;
                if level > MAX_TREE_DEPTH {
                    // No reader goes below this depth, so storing it would
                    // only make a snapshot that cannot be restored whole.
                    self.report(
                        path,
                        FileErrorKind::Unreadable,
                        format!("folders nest deeper than {MAX_TREE_DEPTH} levels here; this folder and what is in it are not backed up"),
                    );
                    return Ok(None);
                }
                let prev_sub = prev
                    .filter(|p| p.kind == NodeKind::Dir)
                    .and_then(|p| p.subtree);
                node.subtree = Some(if self.opts.one_file_system && md.dev() != dev {
                    // A mount point: keep the folder, not what is mounted on it.
                    if let (Some(_), Some(old)) = (self.changed, prev_sub) {
                        self.forget_subtree(&old);
                    }
                    self.store_tree(Tree::default())?
                } else if let Some(same) = self.reuse(path, prev_sub) {
                    same
                } else {
                    self.dir(path, md, prev_sub, dev)?
                });
            }
            NodeKind::File => return self.file(path, node, prev),
            NodeKind::Symlink => match deep::read_link(path) {
                Ok(t) => node.link_target = Some(EntryName::new(t)),
                Err(e) => {
                    self.report(path, FileErrorKind::Unreadable, e.to_string());
                    return Ok(None);
                }
            },
            _ => {}
        }
        Ok(Some(node))
    }

    /// Walks the folder at `path`, whose own metadata is `own`.
    fn dir(&mut self, path: &Path, own: &Metadata, parent: Option<Id>, dev: u64) -> Result<Id> {
        let ptree = self.parent_tree(parent);
        // Taken from the same looks as what is read below, and before any
        // of it is read: never newer than what the snapshot stores.
        let mut digest = None;
        let mut names: Vec<Vec<u8>> = match deep::read_dir_names(path) {
            Ok(names) => {
                if self.states.is_some() {
                    digest = Some(FolderDigest::new(own));
                }
                names
            }
            Err(e) => {
                self.report(
                    path,
                    FileErrorKind::Unreadable,
                    format!("cannot list folder: {e}"),
                );
                Vec::new()
            }
        };
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let full = path.join(std::ffi::OsStr::from_bytes(&name));
            let md = match deep::lstat(&full) {
                Ok(md) => md,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(d) = &mut digest {
                        d.vanished(&name);
                    }
                    self.report(
                        &full,
                        FileErrorKind::Vanished,
                        "deleted while the backup ran".into(),
                    );
                    continue;
                }
                Err(e) => {
                    if let Some(d) = &mut digest {
                        d.vanished(&name);
                    }
                    self.report(&full, FileErrorKind::Unreadable, e.to_string());
                    continue;
                }
            };
            if self.opts.excludes.is_excluded(&full, md.is_dir()) {
                continue;
            }
            if let Some(d) = &mut digest {
                d.entry(&name, &md);
            }
            let node = from_metadata(EntryName::new(name), &md);
            entries.push((full, md, node));
        }
        if let (Some(states), Some(d)) = (&mut self.states, digest) {
            states.insert(path, d.finish());
        }
        // Name the files about to be read, so the disk works ahead of us,
        // and set the subfolders apart: files are walked first, so that a
        // subfolder not started yet can be handed to the other walker
        // whenever it runs out of work.
        let mut reused_chunks = Vec::new();
        let mut dirs = VecDeque::new();
        let mut rest = Vec::with_capacity(entries.len());
        for (full, md, node) in entries {
            let prev = ptree.as_ref().and_then(|t| t.find(node.name.as_bytes()));
            if md.is_dir() {
                let prev_sub = prev.and_then(|p| p.subtree);
                if self.reuse(&full, prev_sub).is_none() {
                    // Without an old version of the folder every file in it
                    // is read; with one, most are not.
                    let files_too = self.opts.force || prev_sub.is_none();
                    self.prefetch.hint(Hint::Dir {
                        path: full.clone(),
                        files_too,
                    });
                }
                dirs.push_back(Subfolder {
                    path: full,
                    node,
                    md,
                    prev: prev.cloned(),
                    dev,
                });
                continue;
            }
            if md.is_file() && md.len() > 0 {
                match prev {
                    Some(p) if !self.opts.force && unchanged(p, &node) => {
                        reused_chunks.extend_from_slice(&p.content);
                    }
                    _ => self.prefetch.hint(Hint::File(full.clone())),
                }
            }
            rest.push((full, md, node, prev));
        }
        let known = if self.repo.is_remote() || reused_chunks.is_empty() {
            HashSet::new()
        } else {
            self.uploader.known_among(&reused_chunks)
        };
        let level = Level {
            known,
            dirs,
            ..Level::default()
        };
        let mut tree = Tree::default();
        let here = self.levels.len();
        self.levels.push(level);
        for (full, md, node, prev) in rest {
            self.share();
            if let Some(node) = self.entry(&full, node, &md, prev, dev)? {
                tree.nodes.push(node);
            }
        }
        loop {
            self.share();
            let Some(sub) = self.levels[here].dirs.pop_front() else {
                break;
            };
            tree.nodes.extend(self.walk(sub)?);
        }
        while let Some(answer) = self.levels[here].handed.pop() {
            let node = self.wait(path, &answer)?;
            tree.nodes.extend(node);
        }
        let level = self.levels.pop().unwrap_or_default();
        tree.nodes.extend(level.done);
        self.forget_replaced(parent, ptree.as_deref(), &tree);
        self.store_tree(tree)
    }

    fn file(&mut self, path: &Path, mut node: Node, prev: Option<&Node>) -> Result<Option<Node>> {
        if self.stopped() {
            return Err(SnapshotError::Cancelled);
        }
        self.summary.total_files += 1;
        if let Some(p) = prev {
            if !self.opts.force
                && unchanged(p, &node)
                // On a company server the parent's chunks are the user's as
                // long as the server stores them, and it refuses a commit
                // that references any it no longer has (the caller then
                // backs up again with nothing trusted), so they need no
                // lookup; chunks granted by proof are in no local index.
                && (self.repo.is_remote() || p.content.iter().all(|c| self.is_known(c)))
            {
                node.content = p.content.clone();
                self.summary.files_unmodified += 1;
                self.summary.total_bytes += node.size;
                self.progress.bytes(node.size);
                self.progress
                    .file_done(path, node.size, FileStatus::Unchanged);
                return Ok(Some(node));
            }
        }
        let mut last_err = None;
        for attempt in 1..=READ_ATTEMPTS {
            let mut f = match deep::open_read(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.summary.total_files -= 1;
                    self.report(
                        path,
                        FileErrorKind::Vanished,
                        "deleted while the backup ran".into(),
                    );
                    return Ok(None);
                }
                Err(e) => {
                    self.summary.total_files -= 1;
                    self.report(path, FileErrorKind::Unreadable, e.to_string());
                    return Ok(None);
                }
            };
            let before = f.metadata()?;
            // Fewer blocks than the size needs: the file has holes.
            let sparse = before.blocks().saturating_mul(512) < before.size();
            let (content, read) = match self.chunk(&mut f, before.size(), sparse) {
                Ok(x) => x,
                Err(ChunkError::Io(e)) => {
                    last_err = Some(e.to_string());
                    break;
                }
                Err(ChunkError::Repo(e)) => return Err(e.into()),
            };
            let after = f.metadata()?;
            let stable = before.size() == after.size()
                && before.mtime() == after.mtime()
                && before.mtime_nsec() == after.mtime_nsec();
            if stable || attempt == READ_ATTEMPTS {
                if !stable {
                    self.report(
                        path,
                        FileErrorKind::ChangedDuringRead,
                        format!("kept changing during {READ_ATTEMPTS} reads; stored the last read"),
                    );
                }
                let name = std::mem::replace(&mut node.name, EntryName::new(Vec::new()));
                node = from_metadata(name, &before);
                node.size = read;
                node.content = content;
                self.summary.bytes_read += read;
                self.summary.total_bytes += read;
                let status = if prev.is_some() {
                    FileStatus::Changed
                } else {
                    FileStatus::New
                };
                if prev.is_some() {
                    self.summary.files_changed += 1;
                } else {
                    self.summary.files_new += 1;
                }
                self.progress.file_done(path, read, status);
                return Ok(Some(node));
            }
        }
        self.summary.total_files -= 1;
        self.report(
            path,
            FileErrorKind::Unreadable,
            last_err.unwrap_or_else(|| "read failed".into()),
        );
        Ok(None)
    }

    /// Cuts a file into chunks, hashes each, and hands new ones to the
    /// upload pipeline. Returns the chunk ids and the bytes read.
    fn chunk(
        &mut self,
        f: &mut File,
        size_hint: u64,
        sparse: bool,
    ) -> Result<(Vec<Id>, u64), ChunkError> {
        let mut ids = Vec::new();
        let (min, max) = (self.cutter.min_size() as u64, self.cutter.max_size() as u64);
        if size_hint < min {
            // Small files are one chunk; read them whole (bounded, in case
            // the file grows while we read).
            // Read behind the room the sealed blob needs in front, so a new
            // small file is sealed in the buffer it was read into.
            let room = repository::BLOB_HEADROOM;
            let mut buf = repository::chunk_buffer(size_hint as usize);
            f.take(max).read_to_end(&mut buf).map_err(ChunkError::Io)?;
            let read = buf.len() - room;
            if read as u64 >= min {
                // It grew past the small-file limit while being read: cut
                // what was read with the same chunker so dedup stays
                // content-defined. The size check after reading retries it.
                return self.cut(&mut &buf[room..]);
            }
            if read > 0 {
                let total = read as u64;
                let id = self.repo.content_id(&buf[room..]);
                self.progress.bytes(total);
                self.uploader
                    .add_with_headroom(BlobKind::Data, id, buf)
                    .map_err(ChunkError::Repo)?;
                ids.push(id);
                return Ok((ids, total));
            }
            return Ok((ids, 0));
        }
        if sparse {
            return self.cut(&mut HoleSkippingReader::new(f, size_hint));
        }
        self.cut(f)
    }

    /// Cuts what `r` reads with the repository's chunker and hands each new
    /// chunk to the upload pipeline.
    fn cut(&mut self, r: &mut impl Read) -> Result<(Vec<Id>, u64), ChunkError> {
        let mut ids = Vec::new();
        let (repo, uploader, progress, crew, opts) = (
            self.repo,
            self.uploader,
            self.progress,
            self.crew,
            self.opts,
        );
        let zero_ids = &mut self.zero_ids;
        let total = self.cutter.cut(r, |chunk| {
            if stop_asked(opts, crew) {
                // Reported against this file; the walk stops at the next one.
                return Err(ChunkError::Io(std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "the backup was stopped",
                )));
            }
            // Holes and zeroed disk space come as runs of maximum-size zero
            // chunks; their id is hashed once per length.
            let id = if is_zero(chunk) {
                *zero_ids
                    .entry(chunk.len())
                    .or_insert_with(|| repo.content_id(chunk))
            } else {
                repo.content_id(chunk)
            };
            progress.bytes(chunk.len() as u64);
            uploader
                .add(BlobKind::Data, id, chunk)
                .map_err(ChunkError::Repo)?;
            ids.push(id);
            Ok(())
        })?;
        Ok((ids, total))
    }
}

/// A folder handed to the other walker, and where its entry goes.
struct Job {
    sub: Subfolder,
    reply: crossbeam_channel::Sender<Result<Option<Node>>>,
}

/// How many folders a waiting walker walks for the other one inside its
/// wait, one inside the other, before it just waits: each costs stack.
const MAX_HELPING: usize = 32;

/// The two walkers of a full walk. A walker hands the other a folder only
/// when that one is idle, so nobody ever waits for room: a walker that
/// runs out of work (at the end of a folder whose subfolders the other one
/// still walks) first walks its own subfolders not started yet, then
/// marks itself idle and walks what the other hands it until its answers
/// are in. What is handed over is the pending subfolder nearest the top of
/// the giver's walk, the largest piece of work it has, as work-stealing
/// schedulers do: fewer hand-overs, and the two walkers end up in different
/// parts of the tree (photos beside source code), which keeps the disk and
/// the CPU busy together.
pub(crate) struct Crew {
    /// Per walker: set while it waits with nothing to do; cleared by itself
    /// or by whoever hands it a folder.
    idle: [AtomicBool; 2],
    /// Set when either walker fails, so the other stops soon, and when the
    /// walk is over.
    stop: AtomicBool,
    /// Why a folder walked for the other walker failed; the first walker
    /// reports it.
    error: Mutex<Option<SnapshotError>>,
    doors: Mutex<[Option<crossbeam_channel::Sender<Job>>; 2]>,
}

impl Crew {
    /// The crew and each walker's inbox. The second walker starts idle.
    fn new() -> (Self, [crossbeam_channel::Receiver<Job>; 2]) {
        let (tx0, rx0) = crossbeam_channel::unbounded();
        let (tx1, rx1) = crossbeam_channel::unbounded();
        let crew = Crew {
            idle: [AtomicBool::new(false), AtomicBool::new(true)],
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
            doors: Mutex::new([Some(tx0), Some(tx1)]),
        };
        (crew, [rx0, rx1])
    }

    /// Claims walker `to` when it is idle and the walk goes on.
    fn claim(&self, to: usize) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && self.idle[to]
                .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Hands a claimed walker its folder; gives it back once the walk is
    /// closed. The receiver answers with the folder's entry.
    // The job comes back whole to be walked here; boxing it would cost an
    // allocation per folder.
    #[allow(clippy::result_large_err)]
    fn send(
        &self,
        to: usize,
        sub: Subfolder,
    ) -> std::result::Result<crossbeam_channel::Receiver<Result<Option<Node>>>, Subfolder> {
        let (reply, rx) = crossbeam_channel::bounded(1);
        let doors = self.doors.lock().unwrap_or_else(|p| p.into_inner());
        match doors[to].as_ref() {
            Some(d) => d.send(Job { sub, reply }).map(|()| rx).map_err(|e| e.0.sub),
            None => Err(sub),
        }
    }

    fn fail(&self, e: SnapshotError) {
        self.stop.store(true, Ordering::Relaxed);
        let mut first = self.error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }

    fn take_error(&self) -> Option<SnapshotError> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// No more folders: the second walker ends once its current one is
    /// done, and stops early if the first walker failed mid-folder.
    fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let mut doors = self.doors.lock().unwrap_or_else(|p| p.into_inner());
        *doors = [None, None];
    }
}

impl Walker<'_> {
    /// Hands the other walker, when it is idle, the pending subfolder
    /// nearest the top of this walk.
    fn share(&mut self) {
        let Some(crew) = self.crew else { return };
        let other = 1 - self.me;
        if !crew.idle[other].load(Ordering::Relaxed) {
            return;
        }
        let Some(at) = self.levels.iter().position(|l| !l.dirs.is_empty()) else {
            return;
        };
        if !crew.claim(other) {
            return;
        }
        let Some(sub) = self.levels[at].dirs.pop_back() else {
            return;
        };
        match crew.send(other, sub) {
            Ok(answer) => self.levels[at].handed.push(answer),
            Err(sub) => self.levels[at].dirs.push_back(sub),
        }
    }

    /// Waits for the entry of a subfolder of `path` handed to the other
    /// walker, walking what there is to walk meanwhile.
    fn wait(
        &mut self,
        path: &Path,
        answer: &crossbeam_channel::Receiver<Result<Option<Node>>>,
    ) -> Result<Option<Node>> {
        let gone = || SnapshotError::Source {
            path: path.to_path_buf(),
            message: "the other backup walker stopped".into(),
        };
        loop {
            match answer.try_recv() {
                Ok(r) => return r,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(gone()),
                Err(crossbeam_channel::TryRecvError::Empty) => {}
            }
            let room = self.helping < MAX_HELPING && self.levels.len() < HELP_BELOW;
            let (Some(crew), true) = (self.crew, room) else {
                return answer.recv().map_err(|_| gone())?;
            };
            // Own work first: the innermost pending subfolder, the
            // smallest piece, so the answer waited for is seen soon.
            if let Some(at) = self.levels.iter().rposition(|l| !l.dirs.is_empty()) {
                if let Some(sub) = self.levels[at].dirs.pop_front() {
                    self.helping += 1;
                    let node = self.walk(sub);
                    self.helping -= 1;
                    self.levels[at].done.extend(node?);
                    continue;
                }
            }
            let Some(inbox) = self.inbox.clone() else {
                return answer.recv().map_err(|_| gone())?;
            };
            crew.idle[self.me].store(true, Ordering::Release);
            crossbeam_channel::select! {
                recv(answer) -> r => {
                    self.unidle(crew, &inbox);
                    return r.map_err(|_| gone())?;
                }
                recv(inbox) -> job => match job {
                    Ok(job) => self.help(job),
                    // Closed: nothing more will be handed over.
                    Err(_) => {
                        self.unidle(crew, &inbox);
                        return answer.recv().map_err(|_| gone())?;
                    }
                },
            }
        }
    }

    /// Stops being idle; a folder handed over in the meantime is walked
    /// first, since the giver waits for it.
    fn unidle(&mut self, crew: &Crew, inbox: &crossbeam_channel::Receiver<Job>) {
        let claimed = crew.idle[self.me]
            .compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed)
            .is_err();
        if claimed {
            if let Ok(job) = inbox.recv() {
                self.help(job);
            }
        }
    }

    /// Walks a subfolder set apart by [`dir`](Self::dir), here or for the
    /// other walker.
    fn walk(&mut self, sub: Subfolder) -> Result<Option<Node>> {
        self.entry(&sub.path, sub.node, &sub.md, sub.prev.as_ref(), sub.dev)
    }

    /// [`run`](Self::run) inside one of this walker's own waits.
    fn help(&mut self, job: Job) {
        self.helping += 1;
        self.run(job);
        self.helping -= 1;
    }

    /// Walks a folder for the other walker and answers with its entry. A
    /// failure stops the whole walk; the first walker reports it.
    fn run(&mut self, job: Job) {
        let depth = self.levels.len();
        let r = match self.walk(job.sub) {
            Ok(n) => Ok(n),
            Err(e) => {
                if let Some(crew) = self.crew {
                    crew.fail(e);
                }
                Err(SnapshotError::Cancelled)
            }
        };
        // A failed folder leaves its levels behind.
        self.levels.truncate(depth);
        let _ = job.reply.send(r);
    }

    /// The second walker's life: it walks what it is handed until the
    /// walk is closed.
    fn serve(&mut self) {
        let (Some(crew), Some(inbox)) = (self.crew, self.inbox.clone()) else {
            return;
        };
        for job in &inbox {
            self.run(job);
            if crew.stop.load(Ordering::Relaxed) {
                // Stopping: take no more folders, answer the ones already
                // handed (they stop at their first file).
                continue;
            }
            crew.idle[self.me].store(true, Ordering::Release);
        }
    }
}

/// Adds what the second walker counted to the first one's totals; both
/// counted only what they walked (a full walk inherits nothing).
fn add_walk_counts(to: &mut SnapshotSummary, from: &SnapshotSummary) {
    to.files_new += from.files_new;
    to.files_changed += from.files_changed;
    to.files_unmodified += from.files_unmodified;
    to.dirs += from.dirs;
    to.total_files += from.total_files;
    to.total_bytes += from.total_bytes;
    to.bytes_read += from.bytes_read;
}

enum ChunkError {
    Io(std::io::Error),
    Repo(repository::RepoError),
}

impl From<std::io::Error> for ChunkError {
    fn from(e: std::io::Error) -> Self {
        ChunkError::Io(e)
    }
}

/// Counts files and bytes under the paths, for a progress bar's total and
/// ETA, giving up (with what it counted so far) once `stop` is set. Runs
/// beside the backup; errors are ignored (the backup reports them).
pub fn scan_until(
    paths: &[PathBuf],
    excludes: &Excludes,
    stop: &AtomicBool,
    on_progress: &dyn Fn(u64, u64),
) -> (u64, u64) {
    let mut files = 0u64;
    let mut bytes = 0u64;
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    let child = e.path();
                    let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                    if !excludes.is_excluded(&child, is_dir) {
                        stack.push(child);
                    }
                }
            }
        } else if md.is_file() {
            files += 1;
            bytes += md.len();
            if files.is_multiple_of(1000) {
                on_progress(files, bytes);
            }
        }
    }
    on_progress(files, bytes);
    (files, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_what_is_not_excluded_and_gives_up_when_told() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("a/b")).expect("mkdir");
        std::fs::write(d.path().join("a/one"), b"12345").expect("write");
        std::fs::write(d.path().join("a/b/two"), b"123").expect("write");
        std::fs::create_dir_all(d.path().join("cache")).expect("mkdir");
        std::fs::write(d.path().join("cache/big"), vec![0u8; 1000]).expect("write");
        let excludes = Excludes::new(&["cache".to_string()], false).expect("excludes");
        let paths = [d.path().to_path_buf()];
        let go = AtomicBool::new(false);
        assert_eq!(scan_until(&paths, &excludes, &go, &|_, _| {}), (2, 8));
        // Told to stop before it began (the repository failed to open):
        // it returns at once with nothing counted.
        let stop = AtomicBool::new(true);
        assert_eq!(scan_until(&paths, &excludes, &stop, &|_, _| {}), (0, 0));
    }
}
