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
    let problems = snapshot::verify_snapshots(
        &snapshot::TreeLoader::new(&repo),
        &repo.list_snapshots().unwrap().0,
    );
    assert!(problems.is_empty(), "{problems:?}");
}
