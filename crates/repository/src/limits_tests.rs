//! The caps of `format::limits` through the repository: readers refuse
//! past them before allocating, writers never write past them.

use crate::{InitOptions, OpenOptions, RepoError, Repository, UploadOptions, INDEX_AAD};
use crypto::{Id, KdfParams};
use format::{layout, limits, BlobKind, IndexPack};
use std::sync::Arc;
use storage::{DynStorage, MemoryStorage};

fn repo() -> Arc<Repository> {
    let s: DynStorage = Arc::new(MemoryStorage::new());
    let opts = InitOptions {
        kdf: KdfParams {
            m_cost: 256,
            t_cost: 1,
            p_cost: 1,
        },
        ..InitOptions::default()
    };
    Arc::new(Repository::init(s, b"pw", &opts, &OpenOptions::default()).unwrap())
}

/// A zstd frame of `n` zero bytes made by hand (RLE blocks, ~32 KiB per
/// GiB), stating its size in its header.
pub(crate) fn rle_bomb(n: u64) -> Vec<u8> {
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD, 0xC0, 7 << 3];
    f.extend_from_slice(&n.to_le_bytes());
    let mut left = n;
    while left > 0 {
        let size = left.min(128 << 10);
        left -= size;
        let header = (size as u32) << 3 | 1 << 1 | u32::from(left == 0);
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

#[test]
fn an_index_file_past_its_cap_is_reported_not_decompressed() {
    let r = repo();
    let sealed = r.keys().data.seal(&rle_bomb(1 << 30), INDEX_AAD);
    let id = Id::hash_public(&sealed);
    r.storage().put(&layout::index(&id), &sealed).unwrap();
    let started = std::time::Instant::now();
    let problems = r.load_index().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .message
            .contains("decompresses past its 256 MiB limit"),
        "{}",
        problems[0].message
    );
    // Refused on the frame's stated size: decompressing 1 GiB takes far longer.
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn a_snapshot_bomb_is_refused_with_its_limit() {
    let r = repo();
    let sealed = r.keys().data.seal(&rle_bomb(1 << 30), crate::SNAPSHOT_AAD);
    let err = r.open_sealed_snapshot(&sealed).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("snapshot object decompresses past its 16 MiB limit: refused"),
        "{err}"
    );
}

#[test]
fn a_blob_past_its_kind_cap_is_never_written() {
    let r = repo();
    let up = r.start_upload(UploadOptions::default()).unwrap();
    let big = vec![1u8; limits::MAX_CHUNK + 1];
    let err = up
        .add(BlobKind::Data, r.content_id(&big), &big)
        .unwrap_err();
    assert!(matches!(err, RepoError::TooLarge { .. }), "{err}");
    // The same bytes are a tree of legal size.
    assert!(up.add(BlobKind::Tree, r.content_id(&big), &big).unwrap());
    up.finish().unwrap();
    assert_eq!(r.read_blob(&r.content_id(&big)).unwrap(), big);
}

#[test]
fn index_files_end_at_the_blob_limit() {
    let pack = |blobs: usize| IndexPack {
        id: Id([1; 32]),
        size: 1,
        blobs: vec![
            format::BlobEntry {
                id: Id([2; 32]),
                kind: BlobKind::Data,
                offset: 0,
                length: 1,
                raw_length: 1,
            };
            blobs
        ],
    };
    assert!(!crate::upload::index_file_due(&[pack(10), pack(10)]));
    assert!(crate::upload::index_file_due(&[pack(
        limits::INDEX_FILE_BLOBS
    )]));
    assert!(crate::upload::index_file_due(&vec![pack(1); 16]));
}
