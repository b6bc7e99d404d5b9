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

/// 3000 bytes that do not compress, so a few blobs fill a 4 KiB pack.
fn blob(seed: u8) -> Vec<u8> {
    test_support::noise(u64::from(seed), 3000)
}

fn upload(repo: &Arc<Repository>, seeds: &[u8]) -> Vec<Id> {
    let up = repo.start_upload(UploadOptions::default()).expect("start");
    let mut ids = Vec::new();
    for s in seeds {
        let data = blob(*s);
        let id = repo.content_id(&data);
        up.add(BlobKind::Data, id, &data).expect("add");
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
                ..PruneOptions::default()
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
    // Like a backup killed before its index file.
    let ids = abandon_upload(&repo);
    assert_eq!(
        cat.blob_count().unwrap(),
        0,
        "unlisted packs must not be persisted"
    );
    drop(repo);

    let (repo, cat) = open(&storage, cache.path());
    let recovered = repo.recover_unindexed_packs().expect("recover");
    let stored = storage.list(format::layout::PACKS).unwrap().len();
    assert!(stored >= 2);
    assert_eq!(recovered, stored);
    assert_eq!(cat.packs().unwrap().len(), stored);
    for id in &ids {
        if repo.has_blob(id) {
            repo.read_blob(id).expect("a recovered blob reads back");
        }
    }
}

/// Counts how often the packs are listed, the request a backup must not
/// repeat every run against object storage.
#[derive(Debug)]
struct CountingLists {
    inner: DynStorage,
    pack_lists: std::sync::atomic::AtomicUsize,
}

impl storage::Storage for CountingLists {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, key: &str, data: &[u8]) -> storage::Result<()> {
        self.inner.put(key, data)
    }
    fn get(&self, key: &str) -> storage::Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, length: u64) -> storage::Result<Vec<u8>> {
        self.inner.get_range(key, offset, length)
    }
    fn size(&self, key: &str) -> storage::Result<Option<u64>> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> storage::Result<Vec<storage::Entry>> {
        if prefix.starts_with(format::layout::PACKS) {
            self.pack_lists
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> storage::Result<()> {
        self.inner.delete(key)
    }
}

impl CountingLists {
    fn pack_lists(&self) -> usize {
        self.pack_lists.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A fresh repository in memory whose pack listings are counted.
fn counting_storage() -> (Arc<CountingLists>, DynStorage) {
    let counting = Arc::new(CountingLists {
        inner: Arc::new(MemoryStorage::new()),
        pack_lists: Default::default(),
    });
    let storage: DynStorage = counting.clone();
    init(&storage);
    (counting, storage)
}

/// Stores six blobs and drops the upload unfinished, as a killed backup
/// does: its packs are in storage and in no index file.
fn abandon_upload(repo: &Arc<Repository>) -> Vec<Id> {
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
        up.add(BlobKind::Data, repo.content_id(&data), &data)
            .expect("add");
    }
    // Wait until some packs are really stored, then kill the upload.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while up
        .counters()
        .packs
        .load(std::sync::atomic::Ordering::SeqCst)
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "no pack was stored");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    drop(up);
    ids
}

#[test]
fn an_interrupted_backup_is_recovered_from_the_journal_without_listing_packs() {
    let (counting, storage) = counting_storage();
    let cache = tempfile::tempdir().unwrap();
    let (repo, cat) = open(&storage, cache.path());
    let ids = abandon_upload(&repo);
    let stored = counting.inner.list(format::layout::PACKS).unwrap().len();
    assert!(stored >= 2, "the abandoned upload stored packs");
    assert_eq!(
        cat.unindexed_packs().unwrap().map(|j| j.len()),
        Some(stored)
    );
    // A journal entry whose pack never reached storage (killed before the put).
    cat.note_unindexed_pack(&Id([7; 32])).unwrap();
    drop(repo);

    let (repo, cat) = open(&storage, cache.path());
    let lock = repo.lock(false).expect("lock");
    let problems = repo.load_index().expect("index");
    let recovered = repo.recover_interrupted(&lock, &problems).expect("recover");
    assert_eq!(recovered, stored);
    assert_eq!(
        counting.pack_lists(),
        0,
        "the journal named every candidate; storage must not be listed"
    );
    assert_eq!(cat.unindexed_packs().unwrap(), Some(vec![]));
    for (i, id) in ids.iter().enumerate() {
        // Blobs still in the packer when the upload was dropped were never stored.
        if repo.has_blob(id) {
            assert_eq!(repo.read_blob(id).expect("recovered"), blob(i as u8 + 1));
        }
    }
}

#[test]
fn a_stale_lock_makes_the_next_backup_list_every_pack_once() {
    let (counting, storage) = counting_storage();
    // Another machine's backup died: its packs are stored, unindexed, and
    // known to no journal here; what it left is its lock (here unreadable,
    // which counts as stale).
    let elsewhere = tempfile::tempdir().unwrap();
    let (other, _) = open(&storage, elsewhere.path());
    let ids = abandon_upload(&other);
    drop(other);
    let dead = format::layout::lock(&Id([9; 32]));
    storage.put(&dead, b"not a lock").unwrap();

    let cache = tempfile::tempdir().unwrap();
    let (repo, _) = open(&storage, cache.path());
    {
        let lock = repo.lock(false).expect("lock");
        assert_eq!(lock.stale_locks(), std::slice::from_ref(&dead));
        let problems = repo.load_index().expect("index");
        let recovered = repo.recover_interrupted(&lock, &problems).expect("recover");
        assert!(recovered >= 2);
        assert_eq!(
            recovered,
            counting.inner.list(format::layout::PACKS).unwrap().len()
        );
        assert_eq!(counting.pack_lists(), 1);
    }
    assert_eq!(storage.size(&dead).unwrap(), None, "the stale lock is gone");
    for (i, id) in ids.iter().enumerate() {
        // Blobs still in the packer when the upload was dropped were never stored.
        if repo.has_blob(id) {
            assert_eq!(repo.read_blob(id).expect("recovered"), blob(i as u8 + 1));
        }
    }
    // The next backup trusts its (empty) journal again.
    let lock = repo.lock(false).expect("lock");
    assert!(lock.stale_locks().is_empty());
    let problems = repo.load_index().expect("index");
    assert_eq!(
        repo.recover_interrupted(&lock, &problems).expect("recover"),
        0
    );
    assert_eq!(counting.pack_lists(), 1);
}
