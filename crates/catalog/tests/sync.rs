//! The catalog as a repository's index store: it must stay in step with the
//! index files in storage across runs, machines, prunes and crashes, and
//! never claim a blob that storage no longer has.

use catalog::Catalog;
use crypto::{Id, KdfParams};
use format::BlobKind;
use repository::index::IndexStore;
use repository::{InitOptions, OpenOptions, PruneOptions, Repository, UploadOptions};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use storage::{DynStorage, MemoryStorage};

fn init(storage: &DynStorage) {
    let opts = InitOptions {
        kdf: KdfParams {
            m_cost: 256,
            t_cost: 1,
            p_cost: 1,
        },
        // Tiny packs so a few blobs make several packs.
        pack_size: 4096,
        ..Default::default()
    };
    Repository::init(storage.clone(), b"pw", &opts, &OpenOptions::default()).expect("init");
}

/// Opens the repository as the CLI does: index and trees in the catalog.
fn open(storage: &DynStorage, cache: &Path) -> (Arc<Repository>, Arc<Catalog>) {
    let repo = Repository::open(
        storage.clone(),
        b"pw",
        &OpenOptions {
            cache_dir: Some(cache.to_path_buf()),
        },
    )
    .expect("open");
    let dir = repo.cache_dir().expect("cache dir").to_path_buf();
    let cat = Arc::new(Catalog::open(&dir).expect("catalog"));
    let repo = repo
        .with_index_store(cat.clone())
        .with_tree_cache(cat.clone());
    repo.load_index().expect("load index");
    (Arc::new(repo), cat)
}

fn blob(seed: u8) -> Vec<u8> {
    (0..3000u32)
        .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
        .collect()
}

fn upload(repo: &Arc<Repository>, seeds: &[u8]) -> Vec<Id> {
    let up = repo.start_upload(UploadOptions::default()).expect("start");
    let mut ids = Vec::new();
    for s in seeds {
        let data = blob(*s);
        let id = repo.content_id(&data);
        up.add(BlobKind::Data, id, data).expect("add");
        ids.push(id);
    }
    up.finish().expect("finish");
    ids
}

#[test]
fn reopen_reads_only_new_index_files_and_sees_other_writers() {
    let storage: DynStorage = Arc::new(MemoryStorage::new());
    init(&storage);
    let cache = tempfile::tempdir().unwrap();
    let (repo, cat) = open(&storage, cache.path());
    let first = upload(&repo, &[1, 2, 3]);
    let files_after_first = cat.loaded_files().unwrap().len();
    assert!(files_after_first >= 1);
    drop(repo);

    // Another machine (no shared cache) adds data.
    let other_cache = tempfile::tempdir().unwrap();
    let (other, _) = open(&storage, other_cache.path());
    let second = upload(&other, &[4, 5]);

    let (repo, cat) = open(&storage, cache.path());
    for id in first.iter().chain(&second) {
        assert!(repo.has_blob(id), "blob {id} missing after reopen");
        assert_eq!(repo.read_blob(id).unwrap(), {
            let seed = if first.contains(id) {
                [1, 2, 3][first.iter().position(|x| x == id).unwrap()]
            } else {
                [4, 5][second.iter().position(|x| x == id).unwrap()]
            };
            blob(seed)
        });
    }
    assert!(cat.loaded_files().unwrap().len() > files_after_first);
    assert_eq!(cat.blob_count().unwrap(), 5);
}

#[test]
fn prune_makes_the_cache_forget_deleted_blobs() {
    let storage: DynStorage = Arc::new(MemoryStorage::new());
    init(&storage);
    let cache = tempfile::tempdir().unwrap();
    let (repo, _) = open(&storage, cache.path());
    let ids = upload(&repo, &[1, 2, 3, 4]);
    drop(repo);

    // Prune from another machine, keeping only the last blob.
    let other_cache = tempfile::tempdir().unwrap();
    let (other, _) = open(&storage, other_cache.path());
    let keep: HashSet<Id> = [ids[3]].into();
    other
        .prune(
            &keep,
            &PruneOptions {
                max_unused: 0.0,
                dry_run: false,
            },
        )
        .expect("prune");

    let (repo, cat) = open(&storage, cache.path());
    for gone in &ids[..3] {
        assert!(
            !repo.has_blob(gone),
            "the cache still claims pruned blob {gone}"
        );
    }
    assert!(repo.has_blob(&ids[3]));
    assert_eq!(repo.read_blob(&ids[3]).unwrap(), blob(4));
    assert_eq!(cat.blob_count().unwrap(), 1);
}

#[test]
fn packs_of_an_abandoned_upload_never_reach_the_cache_unlisted() {
    let storage: DynStorage = Arc::new(MemoryStorage::new());
    init(&storage);
    let cache = tempfile::tempdir().unwrap();
    let (repo, cat) = open(&storage, cache.path());
    let up = repo
        .start_upload(UploadOptions {
            workers: 1,
            uploaders: 1,
        })
        .expect("start");
    let mut ids = Vec::new();
    for s in 1..=6u8 {
        let data = blob(s);
        ids.push(repo.content_id(&data));
        up.add(BlobKind::Data, repo.content_id(&data), data)
            .expect("add");
    }
    // Dropped without finish: like a backup killed before its index file.
    drop(up);
    assert_eq!(
        cat.blob_count().unwrap(),
        0,
        "unlisted packs must not be persisted"
    );
    drop(repo);

    let (repo, cat) = open(&storage, cache.path());
    let recovered = repo.recover_unindexed_packs().expect("recover");
    let stored = storage.list(format::layout::PACKS).unwrap().len();
    assert_eq!(recovered, stored);
    assert_eq!(cat.packs().unwrap().len(), stored);
    for id in &ids {
        if repo.has_blob(id) {
            repo.read_blob(id).expect("a recovered blob reads back");
        }
    }
}
