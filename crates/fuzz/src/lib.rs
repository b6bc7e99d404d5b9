//! Fuzz targets for every decoder that reads bytes a device or a storage
//! controls, the seeds they start from (real objects made by the
//! project's own writers), and a mutation engine for the stable driver.
//!
//! The adversary is the one `docs/server.md` designs against: a device
//! holding the organisation's keys. So targets that read sealed objects
//! take the *plaintext* as fuzz input and seal it with the fixture's keys
//! before decoding, as such a device can; fuzzing ciphertext would only
//! ever test the authentication tag.
//!
//! A target returns normally for every input (decoders answer `Err`); a
//! panic, an abort or memory beyond the caps of `format::limits` is a
//! finding. Two drivers run them: `tests/drive.rs` (stable, in
//! `cargo test`) and the cargo-fuzz harness in `fuzz/` (`make fuzz`).
//! This crate is dev-only and publishes nothing.

pub mod mutate;
mod seeds;

use crypto::{Id, MasterKeys};
use format::{layout, IndexFile, RepoConfig, Snapshot, Tree};
use repository::{OpenOptions, Repository};
use std::sync::{Arc, OnceLock};
use storage::{DynStorage, MemoryStorage};

pub use seeds::seeds;

/// One decoder (or family of decoders) under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A pack's tail, trailer and name as stored bytes, and a whole pack
    /// with a forged (sealed) trailer as the server checks an upload.
    Pack,
    /// One blob: flag, stated raw length and kind, body, sealed with the keys.
    Blob,
    /// `format::Tree::decode`.
    Tree,
    /// A snapshot as JSON, and as the sealed object a device commits.
    Snapshot,
    /// An index file as JSON, and sealed in storage as a reader loads it.
    IndexFile,
    /// A signed enrolment file (`format::enrolment`).
    Enrolment,
    /// A signed update offer (`format::update`).
    UpdateOffer,
    /// Request bodies of the server's API, through the real router.
    Api,
}

impl Target {
    pub const ALL: [Target; 8] = [
        Target::Pack,
        Target::Blob,
        Target::Tree,
        Target::Snapshot,
        Target::IndexFile,
        Target::Enrolment,
        Target::UpdateOffer,
        Target::Api,
    ];

    /// The name cargo-fuzz knows the target by (`fuzz/fuzz_targets/NAME.rs`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Pack => "pack",
            Target::Blob => "blob",
            Target::Tree => "tree",
            Target::Snapshot => "snapshot",
            Target::IndexFile => "index_file",
            Target::Enrolment => "enrolment",
            Target::UpdateOffer => "update_offer",
            Target::Api => "api",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Runs one input through a target. Never panics on any input unless a
/// decoder is wrong.
pub fn run(target: Target, data: &[u8]) {
    let f = fixture();
    match target {
        Target::Pack => pack(f, data),
        Target::Blob => blob(f, data),
        Target::Tree => tree(data),
        Target::Snapshot => snapshot(f, data),
        Target::IndexFile => index_file(f, data),
        Target::Enrolment => enrolment(f, data),
        Target::UpdateOffer => update_offer(f, data),
        Target::Api => api::run(f, data),
    }
}

/// Additional data the repository binds into sealed objects, as
/// `docs/format.md` ("Sealing") lists them.
pub const SNAPSHOT_AAD: &[u8] = b"tidemark snapshot v1";
pub const INDEX_AAD: &[u8] = b"tidemark index v1";

/// What every target shares: fixed keys (so a corpus saved by one run
/// still opens in the next), a repository over memory, a signing key.
pub struct Fixture {
    pub keys: MasterKeys,
    pub config: RepoConfig,
    pub repo: Repository,
    pub signing: crypto::signing::SigningKey,
}

/// Built once per process.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut bytes = Vec::new();
        for i in 0..96u8 {
            bytes.push(i.wrapping_mul(37).wrapping_add(11));
        }
        let keys = MasterKeys::from_bytes(&bytes).expect("96 key bytes make master keys");
        let config = RepoConfig {
            version: format::FORMAT_VERSION,
            id: Id([9; 32]),
            chunker: format::ChunkerParams::default(),
            id_hash: "blake3-keyed".into(),
            compression: "zstd".into(),
            zstd_level: 1,
            cipher: "xchacha20-poly1305".into(),
            pack_size: 16 << 20,
            created: chrono::DateTime::from_timestamp(1_764_000_000, 0).unwrap_or_default(),
        };
        let repo = memory_repo(&keys, &config);
        let (signing, _) =
            crypto::signing::SigningKey::generate().expect("an Ed25519 key can be made");
        Fixture {
            keys,
            config,
            repo,
            signing,
        }
    })
}

fn memory_repo(keys: &MasterKeys, config: &RepoConfig) -> Repository {
    let s: DynStorage = Arc::new(MemoryStorage::new());
    Repository::with_keys(s, keys.clone(), config.clone(), &OpenOptions::default())
}

/// Reads a little-endian u32 at `at`, or 0.
fn u32_at(data: &[u8], at: usize) -> u32 {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

fn pack(f: &Fixture, data: &[u8]) {
    // As stored: the format-level decoders on the raw bytes.
    let _ = format::pack::named_part(data);
    if data.len() >= format::pack::TAIL_LEN {
        let _ = format::pack::decode_tail(&data[data.len() - format::pack::TAIL_LEN..]);
    }
    if let Ok(entries) = format::pack::decode_trailer(data, u64::from(u32_at(data, 0))) {
        let _ = format::pack::check_tiling(&entries, data.len() as u64);
    }
    // As a device uploads it: `[blob area length u32][blob area][trailer
    // plaintext]`, the trailer sealed with the keys and the tail appended,
    // named as a client names it, checked as the server checks it.
    let split = (u32_at(data, 0) as usize).min(data.len().saturating_sub(4));
    let body = data.get(4..).unwrap_or_default();
    let (blobs, trailer) = body.split_at(split.min(body.len()));
    let sealed = f.keys.data.seal(trailer, format::pack::TRAILER_AAD);
    let mut bytes = blobs.to_vec();
    bytes.extend_from_slice(&sealed);
    bytes.extend_from_slice(&format::pack::encode_tail(sealed.len() as u32));
    if let Ok(named) = format::pack::named_part(&bytes) {
        let id = Id::hash_public(named);
        let _ = f.repo.verify_pack_bytes(&id, &bytes);
    }
}

/// Input: `[flag u8][kind u8][stated raw length u32][body]`; the flag and
/// body are sealed as a blob under the id of the body. The kind byte only
/// labels seeds: the public decoders do not know a blob's kind and hold it
/// to the largest blob cap and its stated length.
fn blob(f: &Fixture, data: &[u8]) {
    if data.len() < 6 {
        return;
    }
    let (flag, raw_length, body) = (data[0], u32_at(data, 2), &data[6..]);
    let id = f.keys.content_id(body);
    let sealed = seal_blob(&f.keys, &id, flag, body);
    let _ = f.repo.decode_blob(&id, &sealed, raw_length);
    let _ = f.repo.check_blob(&id, &sealed, raw_length);
    let mut buf = sealed;
    let mut scratch = Vec::new();
    let _ = f
        .repo
        .decode_blob_in_place(&id, &mut buf, raw_length, &mut scratch);
}

/// A blob as the repository seals one: nonce room, the flag, the body.
pub fn seal_blob(keys: &MasterKeys, id: &Id, flag: u8, body: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; crypto::NONCE_LEN];
    buf.push(flag);
    buf.extend_from_slice(body);
    keys.data
        .seal_deterministic_in_place(&keys.nonce, buf, &id.0)
}

fn tree(data: &[u8]) {
    if let Ok(t) = Tree::decode(data) {
        // What decodes must encode and decode to the same tree.
        let again = Tree::decode(&format::to_json(&t));
        assert!(
            again.as_ref().is_ok_and(|a| *a == t),
            "a decoded tree does not survive a round trip"
        );
    }
}

/// Input: the snapshot object's plaintext (zstd-compressed JSON, as the
/// repository writes it); also read as plain JSON.
fn snapshot(f: &Fixture, data: &[u8]) {
    let _ = format::from_json::<Snapshot>("snapshot", data);
    let sealed = f.keys.data.seal(data, SNAPSHOT_AAD);
    let _ = f.repo.open_sealed_snapshot(&sealed);
}

/// Input: an index file's plaintext (zstd-compressed JSON); also read as
/// plain JSON. The sealed file is put in a fresh repository's storage and
/// loaded as every open does.
fn index_file(f: &Fixture, data: &[u8]) {
    let _ = format::from_json::<IndexFile>("index file", data);
    let repo = memory_repo(&f.keys, &f.config);
    let sealed = f.keys.data.seal(data, INDEX_AAD);
    let id = Id::hash_public(&sealed);
    if repo.storage().put(&layout::index(&id), &sealed).is_ok() {
        let _ = repo.load_index();
        let _ = repo.index_stats();
    }
}

fn enrolment(f: &Fixture, data: &[u8]) {
    let trusted = f.signing.public_key();
    for now in [0, i64::MAX] {
        let _ = format::enrolment::EnrolmentFile::open(data, &trusted, now);
    }
    let _ = format::enrolment::EnrolmentFile::open(data, &[0u8; 7], 0);
}

fn update_offer(f: &Fixture, data: &[u8]) {
    let trusted = f.signing.public_key();
    if let Ok(o) = format::update::UpdateOffer::open(data, &trusted) {
        let _ = format::update::newer(&o.version, "0.1.0");
    }
    let text = String::from_utf8_lossy(data);
    let mid = (0..=text.len() / 2)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let (a, b) = text.split_at(mid);
    let _ = format::update::newer(a, b);
}

pub mod api;
