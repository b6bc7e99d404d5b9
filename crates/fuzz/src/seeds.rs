//! Seeds: real objects made by the project's own writers (a pack from the
//! uploader, trees, snapshots and index files from `format`, signed files
//! from their signers), in the input layout of each target.

use crate::{fixture, Fixture, Target};
use crypto::Id;
use format::{
    BlobKind, EntryName, IndexFile, IndexPack, Node, NodeKind, Snapshot, SnapshotSummary, Tree,
};
use repository::UploadOptions;

/// Every seed of `target`.
pub fn seeds(target: Target) -> Vec<Vec<u8>> {
    let f = fixture();
    match target {
        Target::Pack => pack_seeds(f),
        Target::Blob => blob_seeds(f),
        Target::Tree => vec![format::to_json(&tree(f)), format::to_json(&Tree::default())],
        Target::Snapshot => {
            let json = format::to_json(&snapshot(f));
            vec![compress(&json), json, zstd_bomb(BOMB, true)]
        }
        Target::IndexFile => {
            let json = format::to_json(&index_file(f));
            vec![compress(&json), json, zstd_bomb(BOMB, true)]
        }
        Target::Enrolment => vec![serde_json::to_vec(&format::enrolment::EnrolmentFile::sign(
            &f.signing,
            "https://backup.example.com:8443",
            "ab".repeat(32).as_str(),
            "TM-ABCD-EFGH",
            "alice",
            2_000_000_000,
        ))
        .unwrap_or_default()],
        Target::UpdateOffer => vec![serde_json::to_vec(&format::update::UpdateOffer::sign(
            &f.signing,
            "0.2.0",
            "linux-x86_64",
            vec![format::update::UpdateFile {
                name: "tidemark_0.2.0_amd64.deb".into(),
                sha256: "cd".repeat(32),
            }],
        ))
        .unwrap_or_default()],
        Target::Api => api_seeds(f),
    }
}

/// What a bomb seed decompresses to: past every cap, and enough that a
/// decoder which believes it breaks the driver's memory bound.
const BOMB: u64 = 1 << 30;

/// A zstd frame of `n` zero bytes built by hand, ~32 KiB per GiB: a frame
/// header (stating the content size, or not) and RLE blocks of 128 KiB.
/// Next to the real objects, the one hostile seed: mutations alone rarely
/// build one.
pub fn zstd_bomb(n: u64, declared: bool) -> Vec<u8> {
    const BLOCK: u64 = 128 << 10;
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD];
    // Descriptor: an 8-byte content size or none; window log 17.
    f.push(if declared { 0xC0 } else { 0x00 });
    f.push(7 << 3);
    if declared {
        f.extend_from_slice(&n.to_le_bytes());
    }
    let mut left = n;
    while left > 0 {
        let size = left.min(BLOCK);
        left -= size;
        let header = (size as u32) << 3 | 1 << 1 | u32::from(left == 0);
        f.extend_from_slice(&header.to_le_bytes()[..3]);
        f.push(0);
    }
    f
}

fn compress(json: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(json, 3).unwrap_or_else(|_| json.to_vec())
}

/// Chunks of a small backup: text that compresses, bytes that do not, an
/// empty chunk.
fn chunks() -> Vec<Vec<u8>> {
    let mut noise = Vec::with_capacity(3000);
    let mut x = 0x1234_5678u32;
    for _ in 0..3000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push(x as u8);
    }
    vec![
        b"Dear colleague, the meeting moved to Tuesday.\n".repeat(40),
        noise,
        Vec::new(),
    ]
}

fn tree(f: &Fixture) -> Tree {
    let ids: Vec<Id> = chunks().iter().map(|c| f.keys.content_id(c)).collect();
    let mut file = Node::new(EntryName::new("letter.txt"), NodeKind::File, 0o100644);
    file.size = 1880;
    file.mtime_ns = 1_764_000_000_123_456_789;
    file.content = ids;
    let mut dir = Node::new(EntryName::new("Documents"), NodeKind::Dir, 0o40755);
    dir.subtree = Some(Id([3; 32]));
    let mut link = Node::new(EntryName::new("latest"), NodeKind::Symlink, 0o120777);
    link.link_target = Some(EntryName::new("Documents/letter.txt"));
    let mut odd = Node::new(EntryName::new(vec![0xff, b'x']), NodeKind::Fifo, 0o10644);
    odd.uid = 1000;
    let mut t = Tree {
        nodes: vec![file, dir, link, odd],
    };
    t.sort();
    t
}

fn snapshot(f: &Fixture) -> Snapshot {
    Snapshot {
        version: format::FORMAT_VERSION,
        time: chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default(),
        hostname: "laptop".into(),
        username: "alice".into(),
        paths: vec!["/home/alice".into()],
        tree: f.keys.content_id(&format::to_json(&tree(f))),
        parent: Some(Id([4; 32])),
        tags: vec!["daily".into()],
        summary: SnapshotSummary {
            files_new: 3,
            total_files: 3,
            total_bytes: 4_000,
            ..SnapshotSummary::default()
        },
    }
}

/// A real pack from the uploader: its bytes and its entries.
fn real_pack(f: &Fixture) -> Option<(Id, Vec<u8>)> {
    let repo = std::sync::Arc::new(crate::memory_repo(&f.keys, &f.config));
    let up = repo.start_upload(UploadOptions::default()).ok()?;
    for c in chunks() {
        up.add(BlobKind::Data, f.keys.content_id(&c), &c).ok()?;
    }
    let t = format::to_json(&tree(f));
    up.add(BlobKind::Tree, f.keys.content_id(&t), &t).ok()?;
    up.finish().ok()?;
    let e = repo.storage().list(format::layout::PACKS).ok()?.pop()?;
    Some((
        format::layout::id_of(&e.key)?,
        repo.storage().get(&e.key).ok()?,
    ))
}

/// The pack target's layout of a pack: `[blob area length u32][blob
/// area][trailer plaintext]`.
fn structured_pack(f: &Fixture, bytes: &[u8]) -> Option<Vec<u8>> {
    let at = bytes.len().checked_sub(format::pack::TAIL_LEN)?;
    let tlen = format::pack::decode_tail(&bytes[at..]).ok()? as usize;
    let blobs_end = at.checked_sub(tlen)?;
    let trailer = f
        .keys
        .data
        .open(&bytes[blobs_end..at], format::pack::TRAILER_AAD)
        .ok()?;
    let mut out = (blobs_end as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&bytes[..blobs_end]);
    out.extend_from_slice(&trailer);
    Some(out)
}

fn pack_seeds(f: &Fixture) -> Vec<Vec<u8>> {
    let Some((_, bytes)) = real_pack(f) else {
        return Vec::new();
    };
    let mut out = vec![bytes.clone()];
    out.extend(structured_pack(f, &bytes));
    out
}

fn blob_seeds(f: &Fixture) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let tree = format::to_json(&tree(f));
    let cases: Vec<(u8, BlobKind, Vec<u8>)> = chunks()
        .into_iter()
        .map(|c| (BlobKind::Data, c))
        .chain([(BlobKind::Tree, tree)])
        .flat_map(|(k, c)| [(0u8, k, c.clone()), (1u8, k, c)])
        .collect();
    // Bombs: a frame stating 1 GiB, with a raw length that is unknown (0)
    // or states the most a u32 can.
    for stated in [0, u32::MAX] {
        let mut s = vec![1, kind_byte(BlobKind::Tree)];
        s.extend_from_slice(&stated.to_le_bytes());
        s.extend_from_slice(&zstd_bomb(BOMB, true));
        out.push(s);
    }
    for (flag, kind, raw) in cases {
        let body = if flag == 1 {
            compress(&raw)
        } else {
            raw.clone()
        };
        for stated in [raw.len() as u32, 0] {
            let mut s = vec![flag, kind_byte(kind)];
            s.extend_from_slice(&stated.to_le_bytes());
            s.extend_from_slice(&body);
            out.push(s);
        }
    }
    out
}

fn kind_byte(k: BlobKind) -> u8 {
    match k {
        BlobKind::Data => 0,
        BlobKind::Tree => 1,
    }
}

fn index_file(f: &Fixture) -> IndexFile {
    let packs = real_pack(f)
        .and_then(|(id, bytes)| {
            let at = bytes.len() - format::pack::TAIL_LEN;
            let tlen = format::pack::decode_tail(&bytes[at..]).ok()? as usize;
            let end = at - tlen;
            let plain = f
                .keys
                .data
                .open(&bytes[end..at], format::pack::TRAILER_AAD)
                .ok()?;
            let blobs = format::pack::decode_trailer(&plain, end as u64).ok()?;
            Some(vec![IndexPack {
                id,
                size: bytes.len() as u64,
                blobs,
            }])
        })
        .unwrap_or_default();
    IndexFile {
        version: format::FORMAT_VERSION,
        packs,
        supersedes: vec![Id([5; 32])],
    }
}

fn api_seeds(f: &Fixture) -> Vec<Vec<u8>> {
    use crate::api::route_index;
    let id = f.keys.content_id(b"a chunk").to_hex();
    let with = |method: &str, path: &str, body: Vec<u8>| {
        let mut s = vec![route_index(method, path)];
        s.extend_from_slice(&body);
        s
    };
    let json = |v: serde_json::Value| v.to_string().into_bytes();
    let snap = format::to_json(&snapshot(f));
    let mut out = vec![
        with(
            "POST",
            "/v1/enroll",
            json(serde_json::json!({"code": "TM-AAAA-BBBB", "device_name": "laptop"})),
        ),
        with(
            "POST",
            "/v1/chunks/query",
            json(serde_json::json!({"ids": [id, Id([1; 32])]})),
        ),
        with(
            "POST",
            "/v1/chunks/prove",
            json(
                serde_json::json!({"proofs": [{"id": id, "expires": 1_900_000_000, "proof": "00".repeat(32)}]}),
            ),
        ),
        with("POST", "/v1/snapshots#sealed", compress(&snap)),
        with("POST", "/v1/snapshots#sealed", zstd_bomb(BOMB, true)),
        with(
            "POST",
            "/v1/snapshots",
            f.keys.data.seal(&compress(&snap), crate::SNAPSHOT_AAD),
        ),
        with(
            "POST",
            "/v1/admin/users",
            json(serde_json::json!({"name": "bob"})),
        ),
        with(
            "POST",
            "/v1/admin/codes",
            json(serde_json::json!({"user": "bob", "uses": 1, "valid_hours": 24})),
        ),
        with(
            "PUT",
            "/v1/admin/policy",
            json(serde_json::json!({"retention": {"keep_last": 3}})),
        ),
        with(
            "POST",
            "/v1/admin/retention",
            json(serde_json::json!({"dry_run": true})),
        ),
        with(
            "POST",
            "/v1/admin/prune",
            json(serde_json::json!({"grace_hours": 24, "dry_run": true})),
        ),
    ];
    if let Some((_, bytes)) = real_pack(f) {
        out.extend(structured_pack(f, &bytes).map(|s| with("PUT", "/v1/packs/#sealed", s)));
        out.push(with("PUT", "/v1/packs/", bytes));
    }
    out
}
