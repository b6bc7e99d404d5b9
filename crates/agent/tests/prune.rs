//! The agent's prune in two halves: marking runs while backups go on, and
//! the sweep keeps what the snapshots committed meanwhile use.

// A failed set-up step should panic: it is the test's failure report.
#![allow(clippy::unwrap_used)]

use crypto::KdfParams;
use repository::{InitOptions, OpenOptions, PruneOptions, Repository};
use std::path::Path;
use std::sync::Arc;
use storage::{DynStorage, MemoryStorage};
use test_support::noise;

fn new_repo() -> Arc<Repository> {
    let s: DynStorage = Arc::new(MemoryStorage::new());
    let opts = InitOptions {
        kdf: KdfParams {
            m_cost: 256,
            t_cost: 1,
            p_cost: 1,
        },
        ..Default::default()
    };
    Arc::new(Repository::init(s, b"pw", &opts, &OpenOptions::default()).unwrap())
}

fn backup(repo: &Arc<Repository>, dir: &Path) -> crypto::Id {
    let opts = snapshot::BackupOptions {
        paths: vec![dir.to_path_buf()],
        hostname: "laptop".into(),
        username: "u".into(),
        ..Default::default()
    };
    agent::jobs::backup(repo, &opts, &snapshot::NoProgress)
        .unwrap()
        .id
}

fn file_in(repo: &Repository, snap: &crypto::Id, path: &Path) -> Vec<u8> {
    let (snaps, _) = repo.list_snapshots().unwrap();
    let (_, s) = snaps.iter().find(|(id, _)| id == snap).unwrap();
    let loader = snapshot::TreeLoader::new(repo);
    let mut out = Vec::new();
    snapshot::cat(&loader, &s.tree, path.to_str().unwrap(), &mut out).unwrap();
    out
}

/// Every snapshot's folders and chunks are there and readable.
fn assert_verifies(repo: &Repository) {
    let problems = snapshot::verify_snapshots(
        &snapshot::TreeLoader::new(repo),
        &repo.list_snapshots().unwrap().0,
    );
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn a_backup_committed_between_mark_and_sweep_keeps_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let repo = new_repo();

    // An old snapshot whose data only it uses, then forgotten: garbage.
    std::fs::write(files.join("old.bin"), noise(1, 400_000)).unwrap();
    let old = backup(&repo, &files);
    std::fs::remove_file(files.join("old.bin")).unwrap();
    std::fs::write(files.join("kept.txt"), b"kept across everything").unwrap();
    backup(&repo, &files);
    repo.delete_snapshot(&old).unwrap();
    let (_, bytes_before, _) = repo.index_stats().unwrap();

    // The prune marks; a backup with new data commits before it sweeps.
    let marked = agent::jobs::mark(&repo).unwrap();
    let new_data = noise(2, 300_000);
    std::fs::write(files.join("new.bin"), &new_data).unwrap();
    let new = backup(&repo, &files);
    let report = agent::jobs::sweep(&repo, marked, &PruneOptions::default()).unwrap();

    assert!(
        report.blobs_removed > 0,
        "the forgotten data goes: {report:?}"
    );
    let (_, bytes_after, _) = repo.index_stats().unwrap();
    assert!(
        bytes_after < bytes_before,
        "{bytes_after} >= {bytes_before}"
    );
    // What the snapshot committed after the mark uses is all still there.
    assert_eq!(file_in(&repo, &new, &files.join("new.bin")), new_data);
    assert_eq!(
        file_in(&repo, &new, &files.join("kept.txt")),
        b"kept across everything"
    );
    assert_verifies(&repo);
}

fn index_files(repo: &Repository) -> std::collections::BTreeSet<String> {
    let listed = repo.storage().list(format::layout::INDEX).unwrap();
    listed.into_iter().map(|e| e.key).collect()
}

#[test]
fn a_prune_writes_the_index_only_when_it_frees_something_and_in_bounded_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let repo = new_repo();
    // The first snapshot alone holds the old f0; then six backups of two
    // new files each, a pack apiece (a pack is never split across index
    // files, and packs with some unused data are kept as they are).
    std::fs::write(files.join("f0.bin"), noise(10, 3_000)).unwrap();
    let first = backup(&repo, &files);
    std::fs::remove_file(files.join("f0.bin")).unwrap();
    for i in 1..=12u64 {
        std::fs::write(files.join(format!("f{i}.bin")), noise(10 + i, 3_000)).unwrap();
        if i % 2 == 0 {
            backup(&repo, &files);
        }
    }
    std::fs::write(files.join("f0.bin"), noise(99, 3_000)).unwrap();
    let second = backup(&repo, &files);
    let small = PruneOptions {
        max_unused: 1.0,
        index_file_blobs: 4,
        ..PruneOptions::default()
    };

    // Every snapshot still stands: nothing to free, nothing rewritten.
    let before = index_files(&repo);
    let report = agent::jobs::sweep(&repo, agent::jobs::mark(&repo).unwrap(), &small).unwrap();
    assert_eq!(
        report.packs_deleted + report.packs_rewritten,
        0,
        "{report:?}"
    );
    assert_eq!(
        index_files(&repo),
        before,
        "a prune that frees nothing writes nothing"
    );

    // The old f0 goes: the index is written anew, in files of at most four
    // blobs, and every old file is gone.
    repo.delete_snapshot(&first).unwrap();
    let report = agent::jobs::sweep(&repo, agent::jobs::mark(&repo).unwrap(), &small).unwrap();
    assert_eq!(report.packs_deleted, 1, "{report:?}");
    let after = index_files(&repo);
    assert!(
        after.is_disjoint(&before),
        "old index files remain: {after:?}"
    );
    assert!(
        after.len() >= 4,
        "7 packs, 19+ blobs, in files of 4: {after:?}"
    );

    // A fresh open reads only the new files and finds everything.
    let reopened =
        Repository::open(Arc::clone(repo.storage()), b"pw", &OpenOptions::default()).unwrap();
    let problems = reopened.load_index().unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        file_in(&reopened, &second, &files.join("f0.bin")),
        noise(99, 3_000)
    );
    assert_eq!(
        file_in(&reopened, &second, &files.join("f12.bin")),
        noise(22, 3_000)
    );
    assert_verifies(&reopened);
}
