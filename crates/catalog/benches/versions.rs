//! The version catalog at the size: a synthetic home folder of
//! 1 million files (about 50,000 folders) backed up 100 times, catalogued
//! snapshot by snapshot into an on-disk catalog, then searched.
//!
//! `cargo bench -p catalog --bench versions` (or `bench/catalog.sh`) prints
//! Markdown tables to paste into docs/benchmarks.md. Environment:
//!
//! - `CATALOG_BENCH_PATHS`: files in the home folder (default 1,000,000)
//! - `CATALOG_BENCH_SNAPSHOTS`: snapshots (default 100)
//! - `CATALOG_BENCH_REPS`: repetitions of each query (default 20)
//! - `CATALOG_BENCH_SEED`: the data set's seed (default 1)
//! - `CATALOG_BENCH_BUDGET`: seconds the incremental syncs may take in all
//!   (default 300); when spent, the remaining snapshots are left out and
//!   the report says so
//!
//! Everything is deterministic for a seed. Trees are built the way a backup
//! builds them: a snapshot shares every unchanged folder's tree with the
//! previous one, and only the folders that changed, and their ancestors,
//! get new trees.

use catalog::versions::{Filter, NameQuery, TreeSource, VersionCatalog};
use chrono::{DateTime, TimeZone, Utc};
use crypto::Id;
use format::{EntryName, Node, NodeKind, Snapshot, SnapshotSummary, Tree};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The agent's timeline search limit (crates/agent/src/timeline.rs).
const AGENT_LIMIT: usize = 500;
/// `tidemark find --limit`'s default (crates/cli/src/args.rs).
const CLI_LIMIT: usize = 1000;
const HOST: &str = "laptop";
const HOME: &str = "/home/u";
/// The first snapshot's time; one snapshot a day after it.
const START_S: i64 = 1_704_067_200; // 2024-01-01

fn env_or(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .replace(['_', ','], "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------- random

/// SplitMix64: tiny, seeded, and the same on every platform and version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

// ---------------------------------------------------------------- trees

/// Trees in memory, as the catalog's tree source.
#[derive(Default)]
struct Mem {
    trees: HashMap<Id, Arc<Tree>>,
}

impl TreeSource for Mem {
    fn tree(&self, id: &Id) -> Result<Arc<Tree>, String> {
        self.trees
            .get(id)
            .cloned()
            .ok_or_else(|| format!("no tree {}", id.to_hex()))
    }
}

impl Mem {
    fn store(&mut self, mut t: Tree) -> Id {
        t.sort();
        let id = Id(*blake3::hash(&format::to_json(&t)).as_bytes());
        self.trees.entry(id).or_insert_with(|| Arc::new(t));
        id
    }
}

fn node(name: &str, kind: NodeKind, mtime_ns: i64) -> Node {
    let mode = if kind == NodeKind::Dir { 0o755 } else { 0o644 };
    Node {
        uid: 1000,
        gid: 1000,
        mtime_ns,
        ctime_ns: mtime_ns,
        ..Node::new(EntryName::new(name.as_bytes().to_vec()), kind, mode)
    }
}

// ---------------------------------------------------------------- names

const WORDS: &[&str] = &[
    "project",
    "budget",
    "summary",
    "alpha",
    "beta",
    "draft",
    "final",
    "client",
    "meeting",
    "plan",
    "design",
    "data",
    "analysis",
    "travel",
    "family",
    "garden",
    "house",
    "car",
    "school",
    "taxes",
    "health",
    "recipe",
    "music",
    "photo",
    "holiday",
    "letter",
    "contract",
    "offer",
    "proposal",
    "receipt",
    "manual",
    "guide",
    "backup",
    "archive",
    "image",
    "table",
    "label",
    "cabinet",
    "kitchen",
    "winter",
    "summer",
    "spring",
    "autumn",
    "river",
    "mountain",
    "server",
    "client",
    "parser",
    "config",
    "network",
    "storage",
    "player",
    "window",
    "button",
    "layout",
    "theme",
    "schema",
    "index",
    "render",
    "cache",
    "queue",
    "worker",
    "router",
    "session",
    "account",
    "profile",
    "order",
    "payment",
    "invoice",
    "customer",
    "product",
    "review",
    "slides",
    "poster",
    "flyer",
    "wedding",
    "birthday",
    "party",
    "trip",
    "beach",
    "forest",
    "city",
    "museum",
    "concert",
    "lecture",
    "thesis",
    "paper",
    "chapter",
    "notes",
    "minutes",
    "agenda",
    "roadmap",
    "status",
    "weekly",
    "monthly",
    "annual",
    "insurance",
    "mortgage",
    "salary",
    "pension",
    "medical",
    "dentist",
    "vaccine",
    "passport",
];

const CLIENTS: &[&str] = &[
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark Industries",
    "Wayne Enterprises",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Cyberdyne",
    "Tyrell",
    "Wonka",
];

const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cat {
    Docs,
    Pictures,
    Music,
    Videos,
    Code,
    Downloads,
    Config,
    Desktop,
}

/// The folders right below the home folder, with their share of the
/// subfolders.
const TOP: &[(&str, Cat, u32)] = &[
    ("Documents", Cat::Docs, 26),
    ("Pictures", Cat::Pictures, 20),
    ("Music", Cat::Music, 8),
    ("Videos", Cat::Videos, 3),
    ("Projects", Cat::Code, 25),
    ("Downloads", Cat::Downloads, 4),
    (".config", Cat::Config, 6),
    (".cache", Cat::Config, 5),
    ("Desktop", Cat::Desktop, 3),
];

fn word(r: &mut Rng) -> &'static str {
    WORDS[r.below(WORDS.len())]
}

fn cap(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn date(r: &mut Rng) -> (u64, u64, u64) {
    (r.range(2012, 2024), r.range(1, 12), r.range(1, 28))
}

fn hex(r: &mut Rng, n: usize) -> String {
    let v = r.next();
    format!("{v:016x}")[..n.min(16)].to_string()
}

fn folder_name(r: &mut Rng, cat: Cat, rel_depth: u32) -> String {
    let (y, m, _) = date(r);
    match cat {
        Cat::Docs => match r.below(8) {
            0 => format!("{y}"),
            1 => format!("Q{}", r.range(1, 4)),
            2 => r.pick(CLIENTS).to_string(),
            3 => format!("{y}-{m:02}"),
            4 => r.pick(MONTHS).to_string(),
            5 => format!("{} {}", cap(word(r)), cap(word(r))),
            _ => cap(word(r)),
        },
        Cat::Pictures => match r.below(6) {
            0 | 1 if rel_depth <= 2 => format!("{y}"),
            0 => format!("{y}-{m:02} {}", cap(word(r))),
            1 => ["Camera Roll", "Screenshots", "Edited", "Raw", "Export"][r.below(5)].into(),
            _ => format!("{y}-{m:02}-{:02} {}", r.range(1, 28), cap(word(r))),
        },
        Cat::Music => match r.below(3) {
            0 => format!("{} {}", cap(word(r)), cap(word(r))),
            1 => format!("{y} - {}", cap(word(r))),
            _ => format!("The {}s", cap(word(r))),
        },
        Cat::Videos => format!("{y} {}", cap(word(r))),
        Cat::Code => {
            if rel_depth <= 2 {
                format!("{}-{}", word(r), word(r))
            } else {
                [
                    "src",
                    "tests",
                    "lib",
                    "docs",
                    "components",
                    "utils",
                    "api",
                    "models",
                    "assets",
                    "scripts",
                    "examples",
                    "bin",
                    "internal",
                    "pkg",
                    "views",
                ][r.below(15)]
                .to_string()
            }
        }
        Cat::Downloads => format!("{}-{}", word(r), r.range(1, 99)),
        Cat::Config => match r.below(3) {
            0 => word(r).to_string(),
            1 => format!("{}-{}", word(r), hex(r, 4)),
            _ => hex(r, 2),
        },
        Cat::Desktop => cap(word(r)),
    }
}

fn file_name(r: &mut Rng, cat: Cat) -> String {
    let (y, m, d) = date(r);
    match cat {
        Cat::Docs => match r.below(16) {
            0 | 1 => format!("Report-{y}-{m:02}.docx"),
            2 => format!("report_{}_{}.pdf", word(r), r.range(1, 40)),
            3 => format!("Invoice-{:05}.pdf", r.range(1, 99_999)),
            4 => "notes.md".into(),
            5 => format!("Meeting notes {y}-{m:02}-{d:02}.txt"),
            6 => format!("{}-{}.odt", word(r), word(r)),
            7 => format!("budget-{y}.xlsx"),
            8 => format!("{} draft v{}.docx", cap(word(r)), r.range(1, 9)),
            9 => format!("Scan_{y}{m:02}{d:02}_{:04}.pdf", r.range(0, 9999)),
            10 => format!("presentation-{}.pptx", word(r)),
            11 => "README.txt".into(),
            12 => format!("{}.pdf", cap(word(r))),
            13 => format!("{}_{}.txt", word(r), r.range(1, 500)),
            14 => format!("{} {y}.xlsx", cap(word(r))),
            _ => format!("{}.docx", cap(word(r))),
        },
        Cat::Pictures => match r.below(10) {
            0..=3 => format!("IMG_{:04}.JPG", r.range(0, 9999)),
            4 => format!("IMG_{:04}.HEIC", r.range(0, 9999)),
            5 => format!("DSC{:05}.jpg", r.range(0, 99_999)),
            6 => format!(
                "PXL_{y}{m:02}{d:02}_{:02}{:02}{:02}{:03}.jpg",
                r.range(0, 23),
                r.range(0, 59),
                r.range(0, 59),
                r.range(0, 999)
            ),
            7 => format!(
                "Screenshot {y}-{m:02}-{d:02} at {}.{:02}.{:02}.png",
                r.range(0, 23),
                r.range(0, 59),
                r.range(0, 59)
            ),
            8 => format!("{}-{}.png", word(r), r.range(1, 300)),
            _ => format!("IMG_{y}{m:02}{d:02}_{:06}.jpg", r.range(0, 235_959)),
        },
        Cat::Music => match r.below(10) {
            0 => "cover.jpg".into(),
            1 => "folder.jpg".into(),
            2..=5 => format!(
                "{:02} - {} {}.mp3",
                r.range(1, 20),
                cap(word(r)),
                cap(word(r))
            ),
            _ => format!(
                "{:02} - {} {}.flac",
                r.range(1, 20),
                cap(word(r)),
                cap(word(r))
            ),
        },
        Cat::Videos => match r.below(3) {
            0 => format!("VID_{y}{m:02}{d:02}_{:06}.mp4", r.range(0, 235_959)),
            1 => format!("{} {y}.mkv", cap(word(r))),
            _ => format!("{}-{}.mov", word(r), r.range(1, 99)),
        },
        Cat::Code => match r.below(24) {
            0 => "main.rs".into(),
            1 => "lib.rs".into(),
            2 => "mod.rs".into(),
            3 | 4 => format!("{}.rs", word(r)),
            5 | 6 => format!("{}.py", word(r)),
            7 => "__init__.py".into(),
            8 => format!("test_{}.py", word(r)),
            9 => "index.js".into(),
            10 | 11 => format!("{}.ts", word(r)),
            12 => format!("{}.tsx", cap(word(r))),
            13 => "package.json".into(),
            14 => "Cargo.toml".into(),
            15 => "README.md".into(),
            16 => "Makefile".into(),
            17 => ".gitignore".into(),
            18 => format!("{}.go", word(r)),
            19 => format!("{}_{}.c", word(r), word(r)),
            20 => format!("{}.h", word(r)),
            21 => "notes.md".into(),
            22 => format!("{}_test.go", word(r)),
            _ => format!("{}.css", word(r)),
        },
        Cat::Downloads => match r.below(7) {
            0 => format!(
                "{}-{}.{}.{}.zip",
                word(r),
                r.range(0, 9),
                r.range(0, 20),
                r.range(0, 9)
            ),
            1 => format!("setup-{}.{}.exe", r.range(1, 12), r.range(0, 9)),
            2 => format!("{}_{}.pdf", word(r), r.range(1, 999)),
            3 => format!("{}.tar.gz", word(r)),
            4 => format!("{}_{}.deb", word(r), r.range(1, 9)),
            5 => format!("report ({}).pdf", r.range(1, 30)),
            _ => format!("{}.iso", word(r)),
        },
        Cat::Config => match r.below(8) {
            0 => "settings.json".into(),
            1 => hex(r, 8),
            2 | 3 => format!("{}.cache", hex(r, 16)),
            4 => "config.toml".into(),
            5 => "state.db".into(),
            6 => format!("{}.conf", word(r)),
            _ => format!("{}.json", word(r)),
        },
        Cat::Desktop => match r.below(4) {
            0 => format!("{}.lnk", cap(word(r))),
            1 => format!("Screenshot {y}-{m:02}-{d:02}.png"),
            2 => format!("todo-{}.txt", word(r)),
            _ => format!("{} ({}).pdf", cap(word(r)), r.range(1, 5)),
        },
    }
}

fn file_size(r: &mut Rng, cat: Cat, name: &str) -> u64 {
    let mb = 1 << 20;
    match cat {
        Cat::Pictures => r.range(mb / 2, 9 * mb),
        Cat::Music => r.range(3 * mb, 40 * mb),
        Cat::Videos => r.range(20 * mb, 3 << 30),
        Cat::Code => r.range(100, 60_000),
        Cat::Config => r.range(10, 400_000),
        Cat::Downloads if name.ends_with(".iso") => r.range(700 * mb, 5 << 30),
        Cat::Downloads => r.range(50_000, 300 * mb),
        Cat::Docs | Cat::Desktop => r.range(2_000, 8 * mb),
    }
}

// ---------------------------------------------------------------- the home folder

struct File {
    size: u64,
    mtime_ns: i64,
    /// Stands for the content: a different value is a different chunk.
    content: u64,
    inode: u64,
}

struct Folder {
    name: String,
    parent: usize,
    /// `/` is 0, `/home/u` is 2.
    depth: u32,
    cat: Cat,
    dirs: BTreeMap<String, usize>,
    files: BTreeMap<String, File>,
    tree: Id,
    alive: bool,
    mtime_ns: i64,
}

struct Home {
    r: Rng,
    folders: Vec<Folder>,
    next: u64,
    files: usize,
    now_ns: i64,
    /// Folders that changed since the last snapshot.
    dirty: HashSet<usize>,
    /// Folders whose removal would lose the planted files.
    protected: HashSet<usize>,
    hot: usize,
    rare: usize,
}

const HOT_FILE: &str = "thesis.docx";
const RARE_FILE: &str = "passport-scan-2019.pdf";

impl Home {
    fn new(seed: u64, files: usize) -> Home {
        let mut h = Home {
            r: Rng(seed),
            folders: Vec::new(),
            next: 1,
            files: 0,
            now_ns: START_S * 1_000_000_000,
            dirty: HashSet::new(),
            protected: HashSet::new(),
            hot: 0,
            rare: 0,
        };
        let root = h.add_folder(usize::MAX, "", Cat::Desktop);
        let home = h.add_folder(root, "home", Cat::Desktop);
        let u = h.add_folder(home, "u", Cat::Desktop);
        let tops: Vec<(usize, u32)> = TOP
            .iter()
            .map(|(name, cat, share)| (h.add_folder(u, name, *cat), *share))
            .collect();
        // Folders by depth below the home folder: few at 2, most at 3-5.
        let folders = (files / 20).max(40);
        let shares = [(2u32, 4usize), (3, 16), (4, 34), (5, 30), (6, 16)];
        let mut by_depth: Vec<Vec<usize>> = vec![Vec::new(); 7];
        by_depth[1] = tops.iter().map(|t| t.0).collect();
        let weighted: Vec<usize> = tops
            .iter()
            .flat_map(|(f, share)| std::iter::repeat_n(*f, *share as usize))
            .collect();
        for (depth, share) in shares {
            let n = folders * share / 100;
            for _ in 0..n {
                let parent = if depth == 2 {
                    *h.r.pick(&weighted)
                } else {
                    *h.r.pick(&by_depth[depth as usize - 1])
                };
                let cat = h.folders[parent].cat;
                let name = folder_name(&mut h.r, cat, depth);
                let f = h.add_folder(parent, &name, cat);
                by_depth[depth as usize].push(f);
            }
        }
        // Files: any folder below the home folder, some folders fuller
        // than others.
        let mut slots = Vec::new();
        for (i, f) in h.folders.iter().enumerate() {
            if f.depth >= 3 {
                let w = 1 + (i * 7919) % 4;
                slots.extend(std::iter::repeat_n(i, w));
            }
        }
        for _ in 0..files.saturating_sub(2) {
            let f = *h.r.pick(&slots);
            h.add_file(f);
        }
        // Planted: a rare name, and a file that changes often in a folder
        // that loses files over time.
        let docs: Vec<usize> = (0..h.folders.len())
            .filter(|&i| h.folders[i].cat == Cat::Docs && h.folders[i].depth >= 5)
            .collect();
        let docs = if docs.is_empty() { vec![3] } else { docs };
        h.rare = *h.r.pick(&docs);
        h.hot = *h.r.pick(&docs);
        let (rare, hot) = (h.rare, h.hot);
        h.put_file(rare, RARE_FILE.into());
        h.put_file(hot, HOT_FILE.into());
        for mut f in [rare, hot] {
            while f != usize::MAX {
                h.protected.insert(f);
                f = h.folders[f].parent;
            }
        }
        h.dirty = (0..h.folders.len()).collect();
        h
    }

    fn add_folder(&mut self, parent: usize, name: &str, cat: Cat) -> usize {
        let i = self.folders.len();
        let (depth, name) = if parent == usize::MAX {
            (0, name.to_string())
        } else {
            let base = name;
            let mut name = base.to_string();
            let mut n = 2;
            while self.taken(parent, &name) {
                name = format!("{base} {n}");
                n += 1;
            }
            self.folders[parent].dirs.insert(name.clone(), i);
            self.dirty.insert(parent);
            (self.folders[parent].depth + 1, name)
        };
        self.folders.push(Folder {
            name,
            parent,
            depth,
            cat,
            dirs: BTreeMap::new(),
            files: BTreeMap::new(),
            tree: Id([0; 32]),
            alive: true,
            mtime_ns: self.now_ns,
        });
        self.dirty.insert(i);
        i
    }

    fn add_file(&mut self, f: usize) {
        let cat = self.folders[f].cat;
        let mut name = file_name(&mut self.r, cat);
        for _ in 0..4 {
            if !self.taken(f, &name) {
                break;
            }
            name = file_name(&mut self.r, cat);
        }
        let base = name.clone();
        let mut n = 2;
        while self.taken(f, &name) {
            name = match base.rsplit_once('.') {
                Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
                _ => format!("{base} ({n})"),
            };
            n += 1;
        }
        self.put_file(f, name);
    }

    fn taken(&self, f: usize, name: &str) -> bool {
        self.folders[f].files.contains_key(name) || self.folders[f].dirs.contains_key(name)
    }

    fn put_file(&mut self, f: usize, name: String) {
        let size = file_size(&mut self.r, self.folders[f].cat, &name);
        let content = self.fresh();
        let mtime_ns = self.now_ns - self.r.range(0, 3 * 365 * 86_400) as i64 * 1_000_000_000;
        let file = File {
            size,
            mtime_ns,
            content,
            inode: content,
        };
        if self.folders[f].files.insert(name, file).is_none() {
            self.files += 1;
        }
        self.dirty.insert(f);
    }

    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn change_file(&mut self, f: usize, name: &str) {
        let content = self.fresh();
        let grow = self.r.range(0, 20_000);
        let now = self.now_ns - self.r.range(0, 86_000) as i64 * 1_000_000_000;
        if let Some(file) = self.folders[f].files.get_mut(name) {
            file.content = content;
            file.size = (file.size + grow).saturating_sub(10_000).max(1);
            file.mtime_ns = now;
            self.dirty.insert(f);
        }
    }

    fn random_file(&mut self, f: usize) -> Option<String> {
        let n = self.folders[f].files.len();
        if n == 0 {
            return None;
        }
        let k = self.r.below(n);
        self.folders[f].files.keys().nth(k).cloned()
    }

    fn alive_below_home(&self) -> Vec<usize> {
        (0..self.folders.len())
            .filter(|&i| self.folders[i].alive && self.folders[i].depth >= 3)
            .collect()
    }

    fn remove_folder(&mut self, f: usize) -> usize {
        let parent = self.folders[f].parent;
        let name = self.folders[f].name.clone();
        self.folders[parent].dirs.remove(&name);
        self.dirty.insert(parent);
        let mut stack = vec![f];
        let mut files = 0;
        while let Some(d) = stack.pop() {
            self.folders[d].alive = false;
            files += self.folders[d].files.len();
            stack.extend(self.folders[d].dirs.values().copied());
        }
        self.files -= files;
        files
    }

    /// One day of work: ~0.5% of the files change, ~0.1% are new, ~0.05%
    /// go, in ~2% of the folders; now and then a folder comes or goes.
    fn day(&mut self, snap: usize, total: usize) -> DayLog {
        self.now_ns += 86_400 * 1_000_000_000;
        let mut log = DayLog::default();
        let alive = self.alive_below_home();
        let active: Vec<usize> = (0..(alive.len() / 50).max(1))
            .map(|_| *self.r.pick(&alive))
            .collect();
        let changes = total / 200;
        let adds = total / 1000;
        let deletes = total / 2000;
        for _ in 0..changes {
            let f = *self.r.pick(&active);
            if let Some(name) = self.random_file(f) {
                self.change_file(f, &name);
                log.changed += 1;
            }
        }
        for _ in 0..adds {
            let f = *self.r.pick(&active);
            self.add_file(f);
            log.added += 1;
        }
        for _ in 0..deletes {
            let f = *self.r.pick(&active);
            if let Some(name) = self.random_file(f) {
                if name != HOT_FILE && name != RARE_FILE {
                    self.folders[f].files.remove(&name);
                    self.files -= 1;
                    self.dirty.insert(f);
                    log.deleted += 1;
                }
            }
        }
        // The thesis changes every few days; its folder loses and gains a
        // file now and then.
        if snap.is_multiple_of(4) {
            let hot = self.hot;
            self.change_file(hot, HOT_FILE);
        }
        if snap.is_multiple_of(5) {
            let hot = self.hot;
            if let Some(name) = self.random_file(hot) {
                if name != HOT_FILE {
                    self.folders[hot].files.remove(&name);
                    self.files -= 1;
                    log.deleted += 1;
                }
            }
            self.add_file(hot);
            log.added += 1;
        }
        // A photo import or a cloned project every 10 days; a folder
        // removed every 12.
        if snap % 10 == 5 {
            let (top, cat) = if snap % 20 == 5 {
                (3 + 1, Cat::Pictures)
            } else {
                (3 + 4, Cat::Code)
            };
            let depth2: Vec<usize> = self.folders[top].dirs.values().copied().collect();
            let parent = *self.r.pick(&depth2);
            let name = folder_name(&mut self.r, cat, 3);
            let f = self.add_folder(parent, &name, cat);
            let subs = if cat == Cat::Code {
                1 + self.r.below(6)
            } else {
                0
            };
            let mut dirs = vec![f];
            for _ in 0..subs {
                let n = folder_name(&mut self.r, cat, 4);
                dirs.push(self.add_folder(f, &n, cat));
            }
            let n = self.r.range(20, 300) as usize;
            for _ in 0..n {
                let d = *self.r.pick(&dirs);
                self.add_file(d);
            }
            log.added += n;
            log.folders_added += dirs.len();
        }
        if snap.is_multiple_of(12) {
            let candidates: Vec<usize> = alive
                .iter()
                .copied()
                .filter(|&i| self.folders[i].depth >= 5 && !self.protected.contains(&i))
                .collect();
            if !candidates.is_empty() {
                let f = *self.r.pick(&candidates);
                log.deleted += self.remove_folder(f);
                log.folders_removed += 1;
            }
        }
        log
    }

    /// Builds the trees of every changed folder and its ancestors, deepest
    /// first; returns the root tree's id and how many trees were built.
    fn commit(&mut self, mem: &mut Mem) -> (Id, usize) {
        let mut todo: HashSet<usize> = HashSet::new();
        for &d in &self.dirty {
            let mut f = d;
            while f != usize::MAX && todo.insert(f) {
                f = self.folders[f].parent;
            }
        }
        self.dirty.clear();
        let mut order: Vec<usize> = todo
            .into_iter()
            .filter(|&f| self.folders[f].alive)
            .collect();
        order.sort_by_key(|&f| std::cmp::Reverse(self.folders[f].depth));
        for &f in &order {
            let d = &self.folders[f];
            let mut t = Tree::default();
            t.nodes.reserve(d.files.len() + d.dirs.len());
            for (name, file) in &d.files {
                let mut n = node(name, NodeKind::File, file.mtime_ns);
                n.size = file.size;
                n.inode = file.inode;
                let mut c = [0u8; 32];
                c[..8].copy_from_slice(&file.content.to_le_bytes());
                n.content = vec![Id(c)];
                t.nodes.push(n);
            }
            for (name, &sub) in &d.dirs {
                let s = &self.folders[sub];
                let mut n = node(name, NodeKind::Dir, s.mtime_ns);
                n.inode = sub as u64;
                n.subtree = Some(s.tree);
                t.nodes.push(n);
            }
            let id = mem.store(t);
            self.folders[f].tree = id;
            self.folders[f].mtime_ns = self.now_ns;
        }
        (self.folders[0].tree, order.len())
    }

    fn path(&self, mut f: usize) -> String {
        let mut parts = Vec::new();
        while f != 0 {
            parts.push(self.folders[f].name.as_str());
            f = self.folders[f].parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}

#[derive(Default)]
struct DayLog {
    changed: usize,
    added: usize,
    deleted: usize,
    folders_added: usize,
    folders_removed: usize,
}

fn snapshot(k: usize, root: Id, files: usize) -> (Id, Snapshot) {
    let time: DateTime<Utc> = Utc
        .timestamp_opt(START_S + k as i64 * 86_400 + 3_600, 0)
        .single()
        .unwrap_or_default();
    let s = Snapshot {
        version: 1,
        time,
        hostname: HOST.into(),
        username: "u".into(),
        paths: vec![HOME.into()],
        tree: root,
        parent: None,
        tags: Vec::new(),
        summary: SnapshotSummary {
            total_files: files as u64,
            ..SnapshotSummary::default()
        },
    };
    let mut h = blake3::Hasher::new();
    h.update(b"snapshot");
    h.update(&(k as u64).to_le_bytes());
    h.update(&root.0);
    (Id(*h.finalize().as_bytes()), s)
}

// ---------------------------------------------------------------- figures

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and p95 (nearest rank) of the durations, in ms.
fn median_p95(v: &[Duration]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = v.iter().map(|d| ms(*d)).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    let p95 = v[((n as f64 * 0.95).ceil() as usize).clamp(1, n) - 1];
    (median, p95, v[n - 1])
}

fn fmt_ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn file_len(p: &std::path::Path, suffix: &str) -> u64 {
    let mut f = p.as_os_str().to_owned();
    f.push(suffix);
    std::fs::metadata(f).map_or(0, |m| m.len())
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

struct QueryRow {
    what: String,
    limit: String,
    hits: String,
    total: String,
    first: f64,
    median: f64,
    p95: f64,
    reps: usize,
}

/// Runs `f` once (the first run, reported apart), then `reps` more times,
/// or fewer when they take over 60 s together (at least 3).
fn time_it(reps: usize, mut f: impl FnMut() -> (usize, bool)) -> (f64, Vec<Duration>, usize, bool) {
    let t = Instant::now();
    let (hits, truncated) = f();
    let first = ms(t.elapsed());
    let mut times = Vec::new();
    let budget = Instant::now();
    while times.len() < reps && (times.len() < 3 || budget.elapsed() < Duration::from_secs(60)) {
        let t = Instant::now();
        std::hint::black_box(f());
        times.push(t.elapsed());
    }
    (first, times, hits, truncated)
}

fn main() {
    let n_files = env_or("CATALOG_BENCH_PATHS", 1_000_000) as usize;
    let n_snaps = (env_or("CATALOG_BENCH_SNAPSHOTS", 100) as usize).max(2);
    let reps = env_or("CATALOG_BENCH_REPS", 20) as usize;
    let budget = Duration::from_secs(env_or("CATALOG_BENCH_BUDGET", 300));
    let seed = env_or("CATALOG_BENCH_SEED", 1);
    let wall = Instant::now();
    eprintln!("catalog bench: {n_files} files x {n_snaps} snapshots, seed {seed}");

    // ---- the data set
    let t = Instant::now();
    let mut mem = Mem::default();
    let mut home = Home::new(seed, n_files);
    let folders0 = home.folders.len() - 3;
    let files0 = home.files;
    let mut snaps = Vec::with_capacity(n_snaps);
    let (root, built) = home.commit(&mut mem);
    let mut trees_built = vec![built];
    snaps.push(snapshot(0, root, home.files));
    let mut logs = Vec::new();
    for k in 1..n_snaps {
        logs.push(home.day(k, n_files));
        let (root, built) = home.commit(&mut mem);
        trees_built.push(built);
        snaps.push(snapshot(k, root, home.files));
    }
    let gen_time = t.elapsed();
    let rss_gen = status_kib("VmRSS:");
    let sum = |f: fn(&DayLog) -> usize| logs.iter().map(f).sum::<usize>();
    let per_snap = |x: usize| x as f64 / logs.len().max(1) as f64;
    eprintln!(
        "generated in {:.1} s: {} trees, {} files at first, {} at last, RSS {}",
        gen_time.as_secs_f64(),
        mem.trees.len(),
        files0,
        home.files,
        mib(rss_gen * 1024)
    );

    // ---- catalogue snapshot by snapshot
    let dir = tempfile::Builder::new()
        .prefix("catalog-bench-")
        .tempdir()
        .expect("a temporary folder");
    let c = VersionCatalog::open(dir.path()).expect("open the catalog");
    let db_path = c.path().expect("an on-disk catalog").to_path_buf();
    let t = Instant::now();
    let r = c.sync(&snaps[..1], &mem).expect("first sync");
    let first_sync = t.elapsed();
    assert_eq!(r.added, 1, "{r:?}");
    let after_first = c.stats().expect("stats");
    eprintln!(
        "first snapshot catalogued in {:.1} s: {} paths",
        first_sync.as_secs_f64(),
        after_first.paths
    );
    let mut incr = Vec::new();
    let phase = Instant::now();
    for k in 1..n_snaps {
        if phase.elapsed() > budget {
            eprintln!(
                "time budget of {} s for the incremental syncs spent: stopping after {k} of {n_snaps} snapshots",
                budget.as_secs()
            );
            break;
        }
        let t = Instant::now();
        let r = c.sync(&snaps[..=k], &mem).expect("sync");
        incr.push(t.elapsed());
        assert_eq!((r.added, r.removed, r.failed.len()), (1, 0, 0), "{r:?}");
        eprintln!("  snapshot {k}: {:.0} ms", ms(t.elapsed()));
    }
    // Snapshots catalogued: all of them unless the budget ran out.
    let done = incr.len() + 1;
    let incr_total: Duration = incr.iter().sum();
    let (incr_med, incr_p95, incr_max) = median_p95(&incr);
    eprintln!(
        "{} incremental syncs in {:.1} s",
        incr.len(),
        incr_total.as_secs_f64()
    );
    let stats = c.stats().expect("stats");
    let (db_bytes, wal_bytes) = (file_len(&db_path, ""), file_len(&db_path, "-wal"));

    // ---- queries
    let latest = snaps[done - 1].0;
    let hot_path = format!("{}/{HOT_FILE}", home.path(home.hot));
    let hot_dir = home.path(home.hot);
    let agent = Filter {
        host: Some(HOST.into()),
        ..Filter::default()
    };
    let cli = Filter::default();
    let contains = |s: &str| NameQuery::Contains(s.into());
    let glob = |s: &str| NameQuery::Glob(s.into());
    let searches: Vec<(String, NameQuery, Filter, usize)> = vec![
        (
            "Contains(\"report\") (common)".into(),
            contains("report"),
            agent.clone(),
            AGENT_LIMIT,
        ),
        (
            "Contains(\"report\") (common)".into(),
            contains("report"),
            cli.clone(),
            CLI_LIMIT,
        ),
        (
            "Contains(\"IMG_12\")".into(),
            contains("IMG_12"),
            agent.clone(),
            AGENT_LIMIT,
        ),
        (
            format!("Contains(\"{RARE_FILE}\") (one path)"),
            contains(RARE_FILE),
            agent.clone(),
            AGENT_LIMIT,
        ),
        (
            format!("Glob(\"{RARE_FILE}\") (one path)"),
            glob(RARE_FILE),
            cli.clone(),
            CLI_LIMIT,
        ),
        (
            "Glob(\"*.pdf\")".into(),
            glob("*.pdf"),
            cli.clone(),
            CLI_LIMIT,
        ),
        (
            "Glob(\"notes.md\")".into(),
            glob("notes.md"),
            cli.clone(),
            CLI_LIMIT,
        ),
        (
            "Contains(\"ab\") (2 chars: no trigram)".into(),
            contains("ab"),
            agent.clone(),
            AGENT_LIMIT,
        ),
        (
            "Contains(\"qz\") (2 chars, no match)".into(),
            contains("qz"),
            agent.clone(),
            AGENT_LIMIT,
        ),
        (
            "Contains(\"zzqq\") (no match)".into(),
            contains("zzqq"),
            agent.clone(),
            AGENT_LIMIT,
        ),
        (
            "Glob(\"*report*\") deleted".into(),
            glob("*report*"),
            Filter {
                deleted: true,
                ..Filter::default()
            },
            CLI_LIMIT,
        ),
        (
            "Glob(\"*.pdf\") deleted".into(),
            glob("*.pdf"),
            Filter {
                deleted: true,
                ..Filter::default()
            },
            CLI_LIMIT,
        ),
        (
            "Glob(\"IMG_*\") min_size 8 MiB".into(),
            glob("IMG_*"),
            Filter {
                min_size: Some(8 << 20),
                ..Filter::default()
            },
            CLI_LIMIT,
        ),
        (
            "Glob(\"*\") min_size 1 GiB (big files)".into(),
            glob("*"),
            Filter {
                min_size: Some(1 << 30),
                ..Filter::default()
            },
            CLI_LIMIT,
        ),
    ];
    let mut rows = Vec::new();
    for (what, q, f, limit) in &searches {
        let total = c.search(q, f, usize::MAX).expect("search").hits.len();
        let (first, times, hits, truncated) = time_it(reps, || {
            let r = c.search(q, f, *limit).expect("search");
            (r.hits.len(), r.truncated)
        });
        let (median, p95, _) = median_p95(&times);
        eprintln!("{what} limit {limit}: {hits} hits, median {median:.2} ms");
        rows.push(QueryRow {
            what: what.clone(),
            limit: limit.to_string(),
            hits: format!(
                "{}{}",
                thousands(hits as u64),
                if truncated { " (truncated)" } else { "" }
            ),
            total: thousands(total as u64),
            first,
            median,
            p95,
            reps: times.len(),
        });
    }
    {
        let (first, times, hits, _) = time_it(reps, || {
            (c.versions(&hot_path, None).expect("versions").len(), false)
        });
        let (median, p95, _) = median_p95(&times);
        rows.push(QueryRow {
            what: format!("versions(\"{hot_path}\")"),
            limit: "-".into(),
            hits: format!("{hits} versions"),
            total: "-".into(),
            first,
            median,
            p95,
            reps: times.len(),
        });
        let (first, times, hits, _) = time_it(reps, || {
            (
                c.deleted_in(&hot_dir, &latest).expect("deleted_in").len(),
                false,
            )
        });
        let (median, p95, _) = median_p95(&times);
        rows.push(QueryRow {
            what: format!("deleted_in(\"{hot_dir}\", latest)"),
            limit: "-".into(),
            hits: format!("{hits} entries"),
            total: format!("{} now", home.folders[home.hot].files.len()),
            first,
            median,
            p95,
            reps: times.len(),
        });
        let (first, times, hits, _) = time_it(reps, || {
            (
                c.deleted_in(HOME, &latest).expect("deleted_in").len(),
                false,
            )
        });
        let (median, p95, _) = median_p95(&times);
        rows.push(QueryRow {
            what: format!("deleted_in(\"{HOME}\", latest)"),
            limit: "-".into(),
            hits: format!("{hits} entries"),
            total: "-".into(),
            first,
            median,
            p95,
            reps: times.len(),
        });
    }

    // ---- rebuild from scratch
    let t = Instant::now();
    c.clear().expect("clear");
    let clear_time = t.elapsed();
    eprintln!("rebuilding {done} snapshots from scratch");
    let t = Instant::now();
    let r = c.sync(&snaps[..done], &mem).expect("rebuild");
    let rebuild = t.elapsed();
    assert_eq!(r.added, done, "{r:?}");
    let stats2 = c.stats().expect("stats");
    let (db2, wal2) = (file_len(&db_path, ""), file_len(&db_path, "-wal"));
    assert_eq!(
        (stats2.paths, stats2.versions, stats2.snapshots),
        (stats.paths, stats.versions, stats.snapshots),
        "a rebuild gives the same catalog"
    );
    let peak = status_kib("VmHWM:");
    let wall = wall.elapsed();

    // ---- report
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "### Version catalog: {} files x {} snapshots ({})",
        thousands(n_files as u64),
        n_snaps,
        Utc::now().format("%Y-%m-%d")
    );
    println!();
    println!(
        "Machine: {}, {cpus} CPUs (nproc); SQLite {}; `cargo bench -p catalog --bench versions`, seed {seed}; whole run {:.0} s.",
        cpu_model(),
        rusqlite::version(),
        wall.as_secs_f64()
    );
    println!();
    println!("| Figure | Value |");
    println!("| --- | --- |");
    let row = |k: &str, v: String| println!("| {k} | {v} |");
    row(
        "Home folder at the first snapshot",
        format!(
            "{} files in {} folders (depth 1-6 below {HOME})",
            thousands(files0 as u64),
            thousands(folders0 as u64)
        ),
    );
    row(
        "Home folder at the last snapshot",
        format!(
            "{} files in {} folders",
            thousands(home.files as u64),
            thousands(
                home.folders
                    .iter()
                    .filter(|f| f.alive && f.depth >= 3)
                    .count() as u64
            )
        ),
    );
    row(
        "Changes per snapshot after the first (mean)",
        format!(
            "{:.0} files changed, {:.0} new, {:.0} deleted, in ~{} folders; {} folders added, {} removed in all",
            per_snap(sum(|l| l.changed)),
            per_snap(sum(|l| l.added)),
            per_snap(sum(|l| l.deleted)),
            thousands((folders0 / 50) as u64),
            sum(|l| l.folders_added),
            sum(|l| l.folders_removed)
        ),
    );
    row(
        "Trees (distinct) / built per incremental snapshot (median)",
        format!("{} / {}", thousands(mem.trees.len() as u64), {
            let mut b = trees_built[1..].to_vec();
            b.sort_unstable();
            b.get(b.len() / 2).copied().unwrap_or(0)
        }),
    );
    row(
        "Generating the data set (not the catalog)",
        format!("{:.1} s", gen_time.as_secs_f64()),
    );
    row(
        "Catalogue the first snapshot (full)",
        format!(
            "{:.1} s ({} paths)",
            first_sync.as_secs_f64(),
            thousands(after_first.paths)
        ),
    );
    row(
        &format!("Catalogue the next {} snapshots, total", incr.len()),
        format!("{:.1} s", incr_total.as_secs_f64()),
    );
    row(
        "Catalogue one incremental snapshot: median / p95 / max",
        format!(
            "{} / {} / {} ms",
            fmt_ms(incr_med),
            fmt_ms(incr_p95),
            fmt_ms(incr_max)
        ),
    );
    if done < n_snaps {
        row(
            "**Snapshots catalogued**",
            format!(
                "**only {done} of {n_snaps}: the {} s budget for the incremental syncs ran out** \
                 (`CATALOG_BENCH_BUDGET`); the figures below are for {done} snapshots",
                budget.as_secs()
            ),
        );
    }
    row(
        "Catalog contents",
        format!(
            "{} paths, {} versions, {} snapshots",
            thousands(stats.paths),
            thousands(stats.versions),
            stats.snapshots
        ),
    );
    row(
        "Catalog size (`stats().bytes`)",
        format!(
            "{} (database {}, write-ahead log {})",
            mib(stats.bytes),
            mib(db_bytes),
            mib(wal_bytes)
        ),
    );
    row(
        "Bytes per path",
        format!("{:.0}", stats.bytes as f64 / stats.paths.max(1) as f64),
    );
    row(
        &format!("Rebuild from scratch: `clear()` + `sync` of all {done} snapshots"),
        format!(
            "{:.1} s + {:.1} s = {:.1} s",
            clear_time.as_secs_f64(),
            rebuild.as_secs_f64(),
            (clear_time + rebuild).as_secs_f64()
        ),
    );
    row(
        "Catalog size after the rebuild",
        format!(
            "{} (database {}, write-ahead log {})",
            mib(stats2.bytes),
            mib(db2),
            mib(wal2)
        ),
    );
    row(
        "Process RSS after generating the trees / peak (VmHWM)",
        format!("{} / {}", mib(rss_gen * 1024), mib(peak * 1024)),
    );
    println!();
    println!(
        "Queries on the finished catalog: the first run, then the median and p95 of {reps} more. \
         Agent-style searches (limit {AGENT_LIMIT}) filter on the host, as the timeline does; \
         `find`-style ones (limit {CLI_LIMIT}) do not. \"All matches\" is the same search without a limit."
    );
    println!();
    println!("| Query | Limit | Hits | All matches | First ms | Median ms | p95 ms | Runs |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for q in &rows {
        let flag = if q.median >= 100.0 { " ⚠" } else { "" };
        println!(
            "| {} | {} | {} | {} | {} | {}{flag} | {} | {} |",
            q.what.replace('|', "\\|"),
            q.limit,
            q.hits,
            q.total,
            fmt_ms(q.first),
            fmt_ms(q.median),
            fmt_ms(q.p95),
            q.reps
        );
    }
    println!();
    println!("⚠: median over the 100 ms target.");
}
