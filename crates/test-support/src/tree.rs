//! Deterministic file trees: everything (names, sizes, contents, modes,
//! times, where each file goes) comes from the caller's seeded generator,
//! so a seed rebuilds the same tree byte for byte.
//!
//! A tree mixes what a home folder holds and what a backup tool gets wrong:
//! compressible text, incompressible random data, sparse files that are
//! mostly zeros, empty files, Unicode and non-UTF-8 names, odd permission
//! bits, symlinks (dangling, absolute, to folders) and nested folders.
//! Bulk bytes come from the generator's `fill_bytes` and `extend_from_slice`,
//! which run optimised code even in a debug build of this crate.

use crate::seed::TestRng;
use filetime::FileTime;
use rand::seq::SliceRandom;
use rand::{Rng, RngCore};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Log-like lines: compresses several-fold, like most text.
    Text,
    /// Random bytes: incompressible, like media and archives.
    Random,
    /// Mostly holes with a few random islands, like a disk image.
    Sparse,
}

/// `count` files of `fill` with sizes drawn from `size`.
#[derive(Debug, Clone)]
pub struct FileGroup {
    pub count: usize,
    pub fill: Fill,
    pub size: Range<u64>,
}

impl FileGroup {
    pub fn new(count: usize, fill: Fill, size: Range<u64>) -> Self {
        FileGroup { count, fill, size }
    }
}

/// The shape of a generated tree.
#[derive(Debug, Clone)]
pub struct TreeSpec {
    /// Folders besides the root.
    pub dirs: usize,
    /// Deepest folder level below the root.
    pub max_depth: usize,
    pub groups: Vec<FileGroup>,
    pub empty_files: usize,
    pub symlinks: usize,
    /// Add one file whose name is not valid UTF-8.
    pub non_utf8_name: bool,
}

impl TreeSpec {
    /// About 2.5 MiB in ~70 files: for tests that need a realistic tree
    /// but not a large one.
    pub fn small() -> Self {
        TreeSpec {
            dirs: 8,
            max_depth: 4,
            groups: vec![
                FileGroup::new(40, Fill::Text, 0..24 * KIB),
                FileGroup::new(12, Fill::Random, KIB..96 * KIB),
                FileGroup::new(2, Fill::Random, 300 * KIB..600 * KIB),
                FileGroup::new(1, Fill::Sparse, MIB..2 * MIB),
            ],
            empty_files: 4,
            symlinks: 5,
            non_utf8_name: true,
        }
    }

    /// About 100 MiB in ~450 files that store as only ~7.5 MiB: four
    /// sparse images of 18-20 MiB, two 5-7 MiB text logs, a 1-1.5 MiB
    /// random file, many small files. The stored size is kept low on
    /// purpose: `verify --read-data` reads all of it after every crash
    /// round, and a debug build decrypts only ~9 MB/s.
    pub fn large() -> Self {
        TreeSpec {
            dirs: 40,
            max_depth: 6,
            groups: vec![
                FileGroup::new(380, Fill::Text, 0..32 * KIB),
                FileGroup::new(50, Fill::Random, 512..40 * KIB),
                FileGroup::new(12, Fill::Text, 300 * KIB..MIB),
                FileGroup::new(2, Fill::Text, 5 * MIB..7 * MIB),
                FileGroup::new(4, Fill::Sparse, 18 * MIB..20 * MIB),
                FileGroup::new(1, Fill::Random, MIB..1536 * KIB),
            ],
            empty_files: 10,
            symlinks: 25,
            non_utf8_name: true,
        }
    }
}

/// What [`generate`] made.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Regular files, relative to the root.
    pub files: Vec<PathBuf>,
    /// Folders, relative to the root (not the root itself).
    pub dirs: Vec<PathBuf>,
    pub bytes: u64,
}

/// Builds a tree under `root` (created if missing; should be empty).
pub fn generate(root: &Path, spec: &TreeSpec, rng: &mut TestRng) -> io::Result<Generated> {
    fs::create_dir_all(root)?;
    let mut names = Names::default();
    let mut out = Generated::default();
    // Folders: each hangs below a random earlier one that is not too deep.
    let mut dirs: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    for _ in 0..spec.dirs {
        let candidates: Vec<&(PathBuf, usize)> =
            dirs.iter().filter(|(_, d)| *d < spec.max_depth).collect();
        let (parent, depth) = (*candidates
            .choose(rng)
            .expect("the root is always a candidate"))
        .clone();
        let rel = parent.join(names.dir(rng));
        fs::create_dir(root.join(&rel))?;
        dirs.push((rel.clone(), depth + 1));
        out.dirs.push(rel);
    }
    for g in &spec.groups {
        for _ in 0..g.count {
            let size = if g.size.is_empty() {
                g.size.start
            } else {
                rng.gen_range(g.size.clone())
            };
            let rel = dirs
                .choose(rng)
                .expect("not empty")
                .0
                .join(names.file(rng, g.fill));
            write_file(&root.join(&rel), g.fill, size, rng)?;
            out.bytes += size;
            out.files.push(rel);
        }
    }
    for _ in 0..spec.empty_files {
        let rel = dirs
            .choose(rng)
            .expect("not empty")
            .0
            .join(names.file(rng, Fill::Text));
        write_file(&root.join(&rel), Fill::Text, 0, rng)?;
        out.files.push(rel);
    }
    if spec.non_utf8_name {
        let dir = &dirs.choose(rng).expect("not empty").0;
        let mut raw = b"latin1-".to_vec();
        raw.extend_from_slice(&[0xe9, b't', 0xe9, b'-']);
        raw.extend_from_slice(names.next().to_string().as_bytes());
        let rel = dir.join(OsString::from_vec(raw));
        let size = rng.gen_range(10..2000);
        write_file(&root.join(&rel), Fill::Text, size, rng)?;
        out.bytes += size;
        out.files.push(rel);
    }
    for _ in 0..spec.symlinks {
        let dir = dirs.choose(rng).expect("not empty").0.clone();
        add_symlink(root, &dir, &out.files, &out.dirs, &mut names, rng)?;
    }
    // Folder modes and times last, deepest first: creating entries in a
    // folder changes its mtime.
    let mut by_depth = dirs.clone();
    by_depth.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    for (rel, _) in &by_depth {
        set_dir_meta(&root.join(rel), rng)?;
    }
    Ok(out)
}

/// Changes to make between two backups.
#[derive(Debug, Clone)]
pub struct MutateSpec {
    /// New files: each group's files go into random folders.
    pub new_files: Vec<FileGroup>,
    /// Existing files to edit in place (a random range overwritten).
    pub edit: usize,
    /// Existing files to grow by a text tail.
    pub append: usize,
    /// Only files smaller than this are edited or grown (a change costs
    /// a new chunk of up to 4 MiB in a big file).
    pub edit_below: u64,
    pub delete: usize,
    pub new_dirs: usize,
    pub new_symlinks: usize,
}

impl MutateSpec {
    /// A little over 1 MiB of new stored data (mostly one random file), a
    /// few edits, a deletion: enough that a backup after it fills one 1 MiB
    /// pack somewhere in its walk and stores the rest when it finishes.
    pub fn round() -> Self {
        MutateSpec {
            new_files: vec![
                FileGroup::new(1, Fill::Random, 1050 * KIB..1200 * KIB),
                FileGroup::new(1, Fill::Text, 20 * KIB..200 * KIB),
            ],
            edit: 3,
            append: 2,
            edit_below: 256 * KIB,
            delete: 1,
            new_dirs: 1,
            new_symlinks: 1,
        }
    }
}

/// What [`mutate`] changed, relative to the root.
#[derive(Debug, Clone, Default)]
pub struct Mutation {
    pub added: Vec<PathBuf>,
    pub edited: Vec<PathBuf>,
    pub deleted: Vec<PathBuf>,
    /// Bytes of incompressible data that no earlier file holds.
    pub new_random_bytes: u64,
}

/// Applies `spec` to the tree under `root`.
pub fn mutate(root: &Path, spec: &MutateSpec, rng: &mut TestRng) -> io::Result<Mutation> {
    let mut m = Mutation::default();
    let (mut files, mut dirs) = walk(root)?;
    dirs.insert(0, PathBuf::new());
    let mut names = Names {
        counter: rng.gen_range(1_000_000..2_000_000),
    };
    // Folders whose entries change: their mtimes are set from the seed at the end.
    let mut touched: BTreeSet<PathBuf> = BTreeSet::new();
    for _ in 0..spec.new_dirs {
        let parent = dirs.choose(rng).cloned().unwrap_or_default();
        let rel = fresh(root, &parent, || names.dir(rng));
        fs::create_dir(root.join(&rel))?;
        set_dir_meta(&root.join(&rel), rng)?;
        touched.insert(parent);
        dirs.push(rel);
    }
    for g in &spec.new_files {
        for _ in 0..g.count {
            let size = if g.size.is_empty() {
                g.size.start
            } else {
                rng.gen_range(g.size.clone())
            };
            let parent = dirs.choose(rng).cloned().unwrap_or_default();
            let rel = fresh(root, &parent, || names.file(rng, g.fill));
            write_file(&root.join(&rel), g.fill, size, rng)?;
            touched.insert(parent);
            if g.fill == Fill::Random {
                m.new_random_bytes += size;
            }
            m.added.push(rel);
        }
    }
    files.shuffle(rng);
    let (mut small, mut rest): (Vec<PathBuf>, Vec<PathBuf>) = (Vec::new(), Vec::new());
    for rel in files {
        let len = fs::symlink_metadata(root.join(&rel))?.len();
        if len < spec.edit_below {
            small.push(rel)
        } else {
            rest.push(rel)
        }
    }
    let mut pick = small.into_iter();
    for _ in 0..spec.edit {
        let Some(rel) = pick.next() else { break };
        let p = root.join(&rel);
        let len = fs::metadata(&p)?.len();
        let mut patch = vec![0u8; rng.gen_range(1..4096)];
        rng.fill_bytes(&mut patch);
        let at = if len == 0 { 0 } else { rng.gen_range(0..len) };
        let before = mtime(&p)?;
        with_write_access(&p, |f| f.write_all_at(&patch, at))?;
        later_mtime(&p, before, rng)?;
        m.edited.push(rel);
    }
    for _ in 0..spec.append {
        let Some(rel) = pick.next() else { break };
        let p = root.join(&rel);
        let len = rng.gen_range(KIB..64 * KIB);
        let tail = text(rng, len);
        let before = mtime(&p)?;
        with_write_access(&p, |f| {
            let len = f.metadata()?.len();
            f.write_all_at(&tail, len)
        })?;
        later_mtime(&p, before, rng)?;
        m.edited.push(rel);
    }
    let mut pick = pick.chain(rest);
    for _ in 0..spec.delete {
        let Some(rel) = pick.next() else { break };
        fs::remove_file(root.join(&rel))?;
        touched.insert(rel.parent().map(Path::to_path_buf).unwrap_or_default());
        m.deleted.push(rel);
    }
    let (files, mut dirs) = walk(root)?;
    dirs.insert(0, PathBuf::new());
    for _ in 0..spec.new_symlinks {
        let dir = dirs.choose(rng).cloned().unwrap_or_default();
        add_symlink(root, &dir, &files, &dirs, &mut names, rng)?;
        touched.insert(dir);
    }
    for dir in &touched {
        filetime::set_file_mtime(root.join(dir), random_time(rng))?;
    }
    Ok(m)
}

fn mtime(p: &Path) -> io::Result<FileTime> {
    Ok(FileTime::from_last_modification_time(&fs::metadata(p)?))
}

/// Moves a file's mtime forward by up to a day from `before`, its mtime
/// before the edit (read after it, it would be the clock's: two replays a
/// second apart then differed), so an edit both shows in the mtime and
/// stays replayable from the seed.
fn later_mtime(p: &Path, before: FileTime, rng: &mut TestRng) -> io::Result<()> {
    let t = FileTime::from_unix_time(
        before.unix_seconds() + rng.gen_range(1..86_400),
        rng.gen_range(0..1_000_000_000),
    );
    filetime::set_file_mtime(p, t)
}

/// `dir/<name>` for the first name from `name` that is not taken yet
/// (a mutation's counter may meet names an earlier one made).
fn fresh(root: &Path, dir: &Path, mut name: impl FnMut() -> String) -> PathBuf {
    loop {
        let rel = dir.join(name());
        if fs::symlink_metadata(root.join(&rel)).is_err() {
            return rel;
        }
    }
}

/// Regular files and folders under `root`, relative to it, sorted.
pub fn walk(root: &Path) -> io::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel))? {
            let e = e?;
            let child = rel.join(e.file_name());
            let ft = e.file_type()?;
            if ft.is_dir() {
                dirs.push(child.clone());
                stack.push(child);
            } else if ft.is_file() {
                files.push(child);
            }
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

/// Writes `size` bytes of `fill` to a new file, then gives it a random
/// mode and a random mtime with nanoseconds.
pub fn write_file(p: &Path, fill: Fill, size: u64, rng: &mut TestRng) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(p)?;
    match fill {
        Fill::Text => f.write_all(&text(rng, size))?,
        Fill::Random => {
            let mut left = size;
            let mut buf = vec![0u8; MIB.min(size.max(1)) as usize];
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                rng.fill_bytes(&mut buf[..n]);
                f.write_all(&buf[..n])?;
                left -= n as u64;
            }
        }
        Fill::Sparse => {
            f.set_len(size)?;
            // One island per 4 MiB, at least one, of 4-16 KiB each.
            for _ in 0..(size / (4 * MIB)).max(1) {
                let mut island = vec![0u8; rng.gen_range(4 * KIB..16 * KIB).min(size) as usize];
                rng.fill_bytes(&mut island);
                let at = rng.gen_range(0..=size - island.len() as u64);
                f.write_all_at(&island, at)?;
            }
        }
    }
    drop(f);
    const MODES: [u32; 7] = [0o644, 0o644, 0o600, 0o640, 0o755, 0o444, 0o4755];
    fs::set_permissions(
        p,
        fs::Permissions::from_mode(*MODES.choose(rng).expect("not empty")),
    )?;
    filetime::set_file_mtime(p, random_time(rng))
}

/// Log-like text: a timestamp that creeps forward, a level, a module, one
/// of a few messages, a running id and a duration per line. zstd shrinks
/// it about five-fold, like real logs.
pub fn text(rng: &mut TestRng, size: u64) -> Vec<u8> {
    const LEVELS: [&str; 6] = ["INFO ", "INFO ", "INFO ", "DEBUG", "WARN ", "ERROR"];
    const MODULES: [&str; 8] = [
        "http",
        "db::pool",
        "auth",
        "sync::worker",
        "cache",
        "scheduler",
        "io",
        "api::v2",
    ];
    const MESSAGES: [&str; 24] = [
        "request served",
        "user session opened",
        "user session closed",
        "retry after timeout",
        "connection accepted",
        "query finished",
        "rows returned",
        "bytes sent",
        "bytes received",
        "flush done",
        "commit ok",
        "rollback",
        "token refreshed",
        "token expired",
        "item updated",
        "item created",
        "item deleted",
        "queue depth high",
        "latency slow",
        "cache cold",
        "cache warm",
        "job scheduled",
        "job started",
        "job finished",
    ];
    let size = size as usize;
    let mut out = Vec::with_capacity(size + 160);
    let mut ts: u64 = rng.gen_range(1_600_000_000_000..1_700_000_000_000);
    let mut id: u64 = rng.gen_range(0..1_000_000);
    while out.len() < size {
        ts += rng.gen_range(0..16);
        id += 1;
        push_num(&mut out, ts);
        out.push(b' ');
        out.extend_from_slice(LEVELS[rng.gen_range(0..LEVELS.len())].as_bytes());
        out.extend_from_slice(b" [");
        out.extend_from_slice(MODULES[rng.gen_range(0..MODULES.len())].as_bytes());
        out.extend_from_slice(b"] ");
        out.extend_from_slice(MESSAGES[rng.gen_range(0..MESSAGES.len())].as_bytes());
        out.extend_from_slice(b" id=");
        push_num(&mut out, id);
        out.extend_from_slice(b" took=");
        push_num(&mut out, rng.gen_range(0..32));
        out.extend_from_slice(b"ms\n");
    }
    out.truncate(size);
    out
}

fn push_num(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// A time between 2001 and 2033 with random nanoseconds.
fn random_time(rng: &mut TestRng) -> FileTime {
    FileTime::from_unix_time(
        rng.gen_range(1_000_000_000..2_000_000_000),
        rng.gen_range(0..1_000_000_000),
    )
}

fn set_dir_meta(p: &Path, rng: &mut TestRng) -> io::Result<()> {
    const MODES: [u32; 5] = [0o755, 0o755, 0o750, 0o700, 0o2775];
    fs::set_permissions(
        p,
        fs::Permissions::from_mode(*MODES.choose(rng).expect("not empty")),
    )?;
    filetime::set_file_mtime(p, random_time(rng))
}

/// Runs `f` on `p` opened for writing, lifting a read-only mode for the
/// time of the write (root could write anyway; this keeps the helper
/// honest under a non-root user too).
fn with_write_access(p: &Path, f: impl FnOnce(&fs::File) -> io::Result<()>) -> io::Result<()> {
    let mode = fs::metadata(p)?.permissions().mode();
    fs::set_permissions(p, fs::Permissions::from_mode(mode | 0o200))?;
    let file = fs::OpenOptions::new().write(true).open(p)?;
    f(&file)?;
    drop(file);
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

fn add_symlink(
    root: &Path,
    dir: &Path,
    files: &[PathBuf],
    dirs: &[PathBuf],
    names: &mut Names,
    rng: &mut TestRng,
) -> io::Result<()> {
    let depth = dir.components().count();
    let up = "../".repeat(depth);
    let target: PathBuf = match rng.gen_range(0..4) {
        // Relative to a file of the tree.
        0 if !files.is_empty() => PathBuf::from(format!(
            "{up}{}",
            files.choose(rng).expect("not empty").display()
        )),
        // To a folder of the tree.
        1 if !dirs.is_empty() => PathBuf::from(format!(
            "{up}{}",
            dirs.choose(rng).expect("not empty").display()
        )),
        // Absolute and dangling: restore must recreate it as it was.
        2 => PathBuf::from(format!("/nonexistent/tidemark-test/{}", names.next())),
        _ => PathBuf::from(format!("missing-{}.txt", names.next())),
    };
    // The tree's own root seen from the root itself is "" (`symlink` refuses
    // an empty target): "." names the same folder.
    let target = if target.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        target
    };
    let p = root.join(fresh(root, dir, || format!("link-{}", names.next())));
    std::os::unix::fs::symlink(&target, &p)?;
    filetime::set_symlink_file_times(&p, random_time(rng), random_time(rng))
}

/// Unique names: a word (ASCII or not) and a counter.
#[derive(Default)]
struct Names {
    counter: u64,
}

impl Names {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn word(&mut self, rng: &mut TestRng) -> String {
        const WORDS: [&str; 24] = [
            "notes",
            "report",
            "data",
            "photo",
            "draft",
            "todo",
            "archive",
            "music",
            "src",
            "build",
            ".hidden",
            "with space",
            "résumé",
            "日本語",
            "café crème",
            "Ωmega",
            "naïve",
            "emoji 🎉",
            "Привет",
            "e\u{301}clair",
            "中文 文件",
            "straße",
            "한국어",
            "-dash",
        ];
        format!("{}-{}", WORDS.choose(rng).expect("not empty"), self.next())
    }

    fn dir(&mut self, rng: &mut TestRng) -> String {
        self.word(rng)
    }

    fn file(&mut self, rng: &mut TestRng, fill: Fill) -> String {
        let ext = match fill {
            Fill::Text => [".txt", ".log", ".md", ""].choose(rng).copied(),
            Fill::Random => [".jpg", ".bin", ".zip"].choose(rng).copied(),
            Fill::Sparse => Some(".img"),
        };
        format!("{}{}", self.word(rng), ext.unwrap_or(""))
    }
}
