//! Incremental backups from a watcher's changed folders: they walk only
//! those folders, reuse every other subtree of the parent unread, and give
//! the same snapshot as a full walk of the same files.

mod common;
use common::new_repo;

use repository::Repository;
use snapshot::{BackupOptions, BackupReport, ChangedFolders, NoProgress, TreeLoader};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn backup(
    repo: &Arc<Repository>,
    src: &Path,
    parent: Option<&BackupReport>,
    changed: Option<ChangedFolders>,
) -> BackupReport {
    let opts = BackupOptions {
        paths: vec![src.to_path_buf()],
        hostname: "test".into(),
        parent: parent.map(|p| p.id),
        changed,
        ..Default::default()
    };
    snapshot::backup(repo, &opts, &NoProgress).expect("backup")
}

/// Walks all of `src` again on one walker (a rescan of the root is an
/// incremental backup, which never shares the walk), after `parent`.
fn rescan_on_one_walker(repo: &Arc<Repository>, src: &Path, parent: &BackupReport) -> BackupReport {
    backup(
        repo,
        src,
        Some(parent),
        Some(ChangedFolders {
            dirs: BTreeSet::new(),
            rescan: set(&[&src.to_path_buf()]),
        }),
    )
}

fn write(p: &Path, body: &str) {
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, body).expect("write");
}

fn set(paths: &[&PathBuf]) -> BTreeSet<PathBuf> {
    paths.iter().map(|p| (*p).clone()).collect()
}

/// Every file below `src` in a snapshot, with its size.
fn files(repo: &Repository, r: &BackupReport, src: &Path) -> BTreeSet<(String, u64)> {
    let loader = TreeLoader::new(repo);
    let mut out = BTreeSet::new();
    snapshot::ls(
        &loader,
        &r.snapshot.tree,
        &src.to_string_lossy(),
        true,
        &mut |e| {
            if e.node.kind == format::NodeKind::File {
                out.insert((e.path.clone(), e.node.size));
            }
        },
    )
    .expect("ls");
    out
}

fn subtree(repo: &Repository, r: &BackupReport, path: &Path) -> Option<crypto::Id> {
    TreeLoader::new(repo)
        .resolve(&r.snapshot.tree, &path.to_string_lossy())
        .expect("resolve")
        .subtree
}

#[test]
fn an_incremental_backup_walks_only_changed_folders_and_equals_a_full_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    for d in ["a", "b", "c/d", "quiet"] {
        for f in 0..5 {
            write(&src.join(d).join(format!("f{f}.txt")), &format!("{d} {f}"));
        }
    }
    let repo = new_repo();
    let s1 = backup(&repo, &src, None, None);
    assert_eq!(s1.snapshot.summary.total_files, 20);

    write(&src.join("a/f0.txt"), "a 0, edited and longer");
    write(&src.join("c/d/new.txt"), "new");
    std::fs::remove_file(src.join("b/f1.txt")).expect("rm");
    std::fs::remove_dir_all(src.join("c/d")).ok();
    write(&src.join("c/d/again.txt"), "the folder came back");
    write(&src.join("e/f/g.txt"), "a new subtree");
    // A change the watcher did not report: an incremental backup must not
    // walk this folder at all, so it keeps the parent's version.
    write(
        &src.join("quiet/f0.txt"),
        "changed behind the watcher's back",
    );
    let changed = ChangedFolders {
        dirs: set(&[&src.join("a"), &src.join("b"), &src.join("c"), &src]),
        rescan: set(&[&src.join("c/d"), &src.join("e")]),
    };
    let inc = backup(&repo, &src, Some(&s1), Some(changed));
    assert_eq!(
        subtree(&repo, &inc, &src.join("quiet")),
        subtree(&repo, &s1, &src.join("quiet")),
        "an unchanged folder's tree is the parent's, unread"
    );
    let seen = files(&repo, &inc, &src);
    assert!(seen.contains(&(src.join("a/f0.txt").display().to_string(), 22)));
    assert!(seen.contains(&(src.join("c/d/again.txt").display().to_string(), 20)));
    assert!(seen.contains(&(src.join("e/f/g.txt").display().to_string(), 13)));
    assert!(!seen.iter().any(|(p, _)| p.ends_with("b/f1.txt")));
    assert!(!seen.iter().any(|(p, _)| p.ends_with("c/d/f0.txt")));
    assert_eq!(
        inc.snapshot.summary.files_changed + inc.snapshot.summary.files_new,
        3,
        "only the changed folders' new and edited files were read: {:?}",
        inc.snapshot.summary
    );

    // The periodic full scan catches what the watcher missed; apart from
    // that file, both agree on every tree and on the totals.
    let full = backup(&repo, &src, Some(&inc), None);
    let missed = files(&repo, &full, &src);
    assert!(missed.contains(&(src.join("quiet/f0.txt").display().to_string(), 33)));
    write(&src.join("quiet/f0.txt"), "quiet 0");
    let again = backup(&repo, &src, Some(&full), None);
    let s = &again.snapshot.summary;
    let i = &inc.snapshot.summary;
    assert_eq!(
        (s.total_files, s.total_bytes, s.dirs),
        (i.total_files, i.total_bytes, i.dirs),
        "the incremental totals equal a full walk's"
    );
    for d in ["a", "b", "c", "c/d", "e"] {
        assert_eq!(
            subtree(&repo, &again, &src.join(d)),
            subtree(&repo, &inc, &src.join(d)),
            "{d} differs between the incremental and the full walk"
        );
    }
}

#[test]
fn a_rescan_of_the_root_catches_everything_and_nothing_changed_costs_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    for d in 0..4 {
        write(&src.join(format!("d{d}/x")), "x");
    }
    let repo = new_repo();
    let s1 = backup(&repo, &src, None, None);
    write(&src.join("d2/x"), "changed");
    std::fs::remove_dir_all(src.join("d3")).expect("rm");
    let all = ChangedFolders {
        dirs: BTreeSet::new(),
        rescan: set(&[&src]),
    };
    let r = backup(&repo, &src, Some(&s1), Some(all));
    let seen = files(&repo, &r, &src);
    assert_eq!(seen.len(), 3);
    assert!(seen.contains(&(src.join("d2/x").display().to_string(), 7)));
    assert_eq!(
        (
            r.snapshot.summary.total_files,
            r.snapshot.summary.total_bytes
        ),
        (3, 9)
    );
    // No change at all: the same root tree, nothing read.
    let none = backup(&repo, &src, Some(&r), Some(ChangedFolders::default()));
    assert_eq!(none.snapshot.tree, r.snapshot.tree);
    assert_eq!(none.snapshot.summary.bytes_read, 0);
    assert_eq!(none.snapshot.summary.total_files, 3);
}

#[test]
fn a_full_walk_shared_by_two_walkers_stores_what_one_walker_stores() {
    // A full walk hands subfolders to a second walker whenever it is idle,
    // so a wide and deep tree is split between them at moments that differ
    // run to run. A rescan of the root walks the same files on one walker
    // (an incremental backup never shares); both must store the same root
    // tree and count every folder, file and byte once.
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    let (mut files_written, mut bytes_written, mut dirs) = (0u64, 0u64, 1u64);
    for a in 0..12 {
        dirs += 1;
        for b in 0..6 {
            dirs += 1;
            for f in 0..4 {
                // Some files large enough to be cut into several chunks.
                let len = if (a + b + f) % 7 == 0 {
                    700_000
                } else {
                    10 + a * 100 + b * 10 + f
                };
                let body: String = (0..len)
                    .map(|i| char::from(b'a' + ((i * 31 + a + f) % 26) as u8))
                    .collect();
                write(&src.join(format!("a{a:02}/b{b}/f{f}.txt")), &body);
                files_written += 1;
                bytes_written += len as u64;
            }
        }
        write(&src.join(format!("a{a:02}/top.txt")), "top");
        files_written += 1;
        bytes_written += 3;
    }
    let repo = new_repo();
    let shared = backup(&repo, &src, None, None);
    let s = &shared.snapshot.summary;
    assert_eq!(
        (s.total_files, s.files_new, s.total_bytes, s.bytes_read),
        (files_written, files_written, bytes_written, bytes_written)
    );
    // The folders under src, src itself and the folders above it.
    let above = src.ancestors().count() as u64 - 1;
    assert_eq!(s.dirs, dirs + above);
    let one = rescan_on_one_walker(&repo, &src, &shared);
    assert_eq!(one.snapshot.tree, shared.snapshot.tree);
    assert_eq!(files(&repo, &one, &src).len() as u64, files_written);
}

/// Records which walker thread stored each file, and slows the second
/// walker down inside `slow` so that the first one runs out of work first.
struct WhoWalked {
    slow: PathBuf,
    by: std::sync::Mutex<Vec<(PathBuf, String)>>,
}

impl snapshot::Progress for WhoWalked {
    fn file_done(&self, path: &Path, _size: u64, _status: snapshot::FileStatus) {
        let me = std::thread::current().name().unwrap_or("").to_string();
        if me == "backup-walk-2" && path.starts_with(&self.slow) {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.by.lock().expect("lock").push((path.to_path_buf(), me));
    }
}

#[test]
fn a_walker_that_runs_out_of_work_helps_with_the_folder_the_other_one_took() {
    // The first walker hands the idle second walker the last folder of the
    // root (`z-big`, the largest piece of work), walks the small one
    // itself, and then would wait at the root for `z-big`. It must instead
    // take subfolders of `z-big` from the second walker.
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    write(&src.join("a-small/note.txt"), "small");
    let big = src.join("z-big");
    let mut files_written = 1u64;
    for d in 0..100 {
        for f in 0..3 {
            write(&big.join(format!("d{d:03}/f{f}.txt")), &format!("{d} {f}"));
            files_written += 1;
        }
    }
    let repo = new_repo();
    let who = WhoWalked {
        slow: big.clone(),
        by: Default::default(),
    };
    let opts = BackupOptions {
        paths: vec![src.clone()],
        hostname: "test".into(),
        ..Default::default()
    };
    let shared = snapshot::backup(&repo, &opts, &who).expect("backup");
    let by = who.by.into_inner().expect("lock");
    assert_eq!(by.len() as u64, files_written, "every file stored once");
    let in_big = |name: &str| {
        by.iter()
            .filter(|(p, w)| p.starts_with(&big) && w == name)
            .count()
    };
    // Alone, the second walker sleeps 600 ms in `z-big`; the first is done
    // with `a-small` within a millisecond.
    assert!(in_big("backup-walk-2") > 0, "the second walker took z-big");
    assert!(
        in_big("backup-walk") > 0,
        "the first walker did not help with z-big: {} of its files were walked by the second",
        in_big("backup-walk-2")
    );
    // Whoever walked what, the snapshot is the one a single walker stores.
    let one = rescan_on_one_walker(&repo, &src, &shared);
    assert_eq!(one.snapshot.tree, shared.snapshot.tree);
    assert_eq!(
        one.snapshot.summary.total_files,
        shared.snapshot.summary.total_files
    );
    assert_eq!(shared.snapshot.summary.total_files, files_written);
}

#[test]
fn a_full_walk_records_the_folder_states_a_scan_sees() {
    // A first backup digests every folder as it lists it instead of
    // waiting for a scan; the next backup's scan compares against those
    // digests, so they must be exactly the scan's, or every folder would
    // look changed (or worse, a changed one unchanged).
    let dir = tempfile::tempdir().expect("tmp");
    let src = dir.path().join("src");
    for (path, body) in [
        ("a/b/c/deep.txt", "deep"),
        ("a/one.txt", "one"),
        ("x/two.bin", "two"),
        ("skip/hidden.txt", "excluded"),
        ("x/skip/also.txt", "excluded too"),
        ("top.txt", "top"),
    ] {
        write(&src.join(path), body);
    }
    std::fs::create_dir_all(src.join("empty")).expect("mkdir");
    std::os::unix::fs::symlink("a/one.txt", src.join("link")).expect("symlink");
    let excludes = snapshot::Excludes::new(&["skip".to_string()], false).expect("excludes");
    let repo = new_repo();
    let opts = BackupOptions {
        paths: vec![src.clone()],
        hostname: "test".into(),
        excludes: excludes.clone(),
        folder_states: true,
        ..Default::default()
    };
    let r = snapshot::backup(&repo, &opts, &NoProgress).expect("backup");
    let walked = r.folder_states.clone().expect("states of a full walk");
    assert_eq!(walked.snapshot, Some(r.id));
    let scan = snapshot::scan_changes(
        std::slice::from_ref(&src),
        &excludes,
        false,
        &walked,
        &std::sync::atomic::AtomicBool::new(false),
        &|_, _| {},
    )
    .expect("not stopped");
    // src, a, a/b, a/b/c, x, empty: the excluded folders are not digested.
    assert_eq!(walked.len(), 6);
    assert!(scan.changed.is_empty(), "changed: {:?}", scan.changed);
    let mut scanned = scan.states;
    scanned.snapshot = Some(r.id);
    assert_eq!(scanned, walked);

    // A change after the backup shows in the next scan: in the folder, and
    // in the one listing it (the folder's times are an entry there).
    write(&src.join("a/b/new.txt"), "new");
    let scan = snapshot::scan_changes(
        std::slice::from_ref(&src),
        &excludes,
        false,
        &walked,
        &std::sync::atomic::AtomicBool::new(false),
        &|_, _| {},
    )
    .expect("not stopped");
    assert_eq!(scan.changed, set(&[&src.join("a"), &src.join("a/b")]));

    // An incremental walk lists only some folders: it records none.
    let inc = BackupOptions {
        parent: Some(r.id),
        changed: Some(ChangedFolders {
            dirs: scan.changed,
            rescan: BTreeSet::new(),
        }),
        ..opts
    };
    let r2 = snapshot::backup(&repo, &inc, &NoProgress).expect("incremental");
    assert!(r2.folder_states.is_none());
}
