//! A local repository's files as storage holds them, for tests that damage
//! them on purpose or count what a run left behind. Only what is visible
//! without a key is used:
//!
//! - `config`, `keys/<id>`, `index/<id>`, `snapshots/<id>`, `locks/<id>`,
//!   `packs/<first two hex digits>/<id>`; index files and snapshots are
//!   named by the BLAKE3 hash of their bytes, packs by the BLAKE3 hash of
//!   their sealed trailer and tail (version 2) or of all their bytes
//!   (version 1);
//! - a pack ends with `sealed trailer | trailer length (u32 LE) | version
//!   (u8: 1 or 2) | "TMPK"`, and the trailer's plaintext is a u32 count and 45
//!   bytes per blob, sealed with a 24-byte nonce and a 16-byte tag; so the
//!   number of blobs in a pack, and where its blob area ends, are public.
//!
//! These facts are restated here rather than imported from the `format`
//! crate, so a change of the on-disk format shows up as a failing test.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const TAIL_LEN: u64 = 9;
const MAGIC: &[u8; 4] = b"TMPK";
const SEAL_OVERHEAD: u64 = 24 + 16;
const TRAILER_ENTRY: u64 = 1 + 32 + 4 + 4 + 4;

/// A local repository folder.
#[derive(Debug, Clone)]
pub struct RepoDir {
    pub root: PathBuf,
}

/// The public facts of one pack file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackTail {
    pub size: u64,
    /// Blobs occupy bytes `0..blobs_end`.
    pub blobs_end: u64,
    pub blobs: u64,
    pub version: u8,
}

impl RepoDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RepoDir { root: root.into() }
    }

    /// Objects directly in `dir` (`index`, `snapshots`, `keys`, `locks`):
    /// storage key (`index/<id>`) to path.
    pub fn objects(&self, dir: &str) -> BTreeMap<String, PathBuf> {
        let mut out = BTreeMap::new();
        let Ok(rd) = fs::read_dir(self.root.join(dir)) else {
            return out;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_file()) && is_object_name(&name) {
                out.insert(format!("{dir}/{name}"), e.path());
            }
        }
        out
    }

    /// Every pack: storage key (`packs/ab/ab…`) to path.
    pub fn packs(&self) -> BTreeMap<String, PathBuf> {
        let mut out = BTreeMap::new();
        let Ok(rd) = fs::read_dir(self.root.join("packs")) else {
            return out;
        };
        for fan in rd.flatten() {
            let fan_name = fan.file_name().to_string_lossy().into_owned();
            for e in fs::read_dir(fan.path()).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if is_object_name(&name) {
                    out.insert(format!("packs/{fan_name}/{name}"), e.path());
                }
            }
        }
        out
    }

    pub fn index_files(&self) -> BTreeMap<String, PathBuf> {
        self.objects("index")
    }

    pub fn snapshot_files(&self) -> BTreeMap<String, PathBuf> {
        self.objects("snapshots")
    }

    pub fn key_files(&self) -> BTreeMap<String, PathBuf> {
        self.objects("keys")
    }

    pub fn locks(&self) -> BTreeMap<String, PathBuf> {
        self.objects("locks")
    }

    /// Total bytes of all packs.
    pub fn pack_bytes(&self) -> u64 {
        self.packs()
            .values()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

fn is_object_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The name a pack should have: the BLAKE3 of its trailer and tail, or of
/// all its bytes for a version 1 pack.
pub fn pack_name(path: &Path) -> io::Result<String> {
    let tail = PackTail::read(path)?;
    let bytes = fs::read(path)?;
    let named = if tail.version == 1 {
        &bytes[..]
    } else {
        &bytes[tail.blobs_end as usize..]
    };
    Ok(blake3_hex(named))
}

fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

impl PackTail {
    /// Reads a pack's tail; an error when the tail is not a Tidemark one.
    pub fn read(path: &Path) -> io::Result<PackTail> {
        let f = fs::File::open(path)?;
        let size = f.metadata()?.len();
        let bad = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            )
        };
        if size < TAIL_LEN {
            return Err(bad(format!("{size} bytes is shorter than a pack tail")));
        }
        let mut tail = [0u8; TAIL_LEN as usize];
        f.read_exact_at(&mut tail, size - TAIL_LEN)?;
        if &tail[5..] != MAGIC || !matches!(tail[4], 1 | 2) {
            return Err(bad(format!(
                "tail {tail:?} has no pack magic / version 1 or 2"
            )));
        }
        let tlen = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        let plain = tlen
            .checked_sub(SEAL_OVERHEAD + 4)
            .ok_or_else(|| bad(format!("trailer of {tlen} bytes is too short")))?;
        if plain % TRAILER_ENTRY != 0 || tlen + TAIL_LEN > size {
            return Err(bad(format!("trailer length {tlen} does not fit {TRAILER_ENTRY}-byte entries in a {size}-byte pack")));
        }
        Ok(PackTail {
            size,
            blobs_end: size - TAIL_LEN - tlen,
            blobs: plain / TRAILER_ENTRY,
            version: tail[4],
        })
    }
}

/// Flips bit `bit` (0-7) of the byte at `offset`; returns the byte's new value.
pub fn flip_bit(path: &Path, offset: u64, bit: u8) -> io::Result<u8> {
    let f = fs::OpenOptions::new().read(true).write(true).open(path)?;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset)?;
    b[0] ^= 1 << (bit & 7);
    f.write_all_at(&b, offset)?;
    f.sync_all()?;
    Ok(b[0])
}
