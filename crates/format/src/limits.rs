//! Hard caps on every object a reader decodes, by kind. A reader checks a
//! stated length against its cap *before* allocating for it, and stops a
//! decompression at the cap, so a small object forged to expand to
//! gigabytes (a decompression bomb from a stolen device or a hostile
//! storage) costs at most the cap. Writers keep to the same caps, so
//! nothing Tidemark writes is refused by its own readers.
//! `docs/format.md` ("Limits") lists them with their reasons.

use crate::BlobKind;

const MIB: usize = 1 << 20;

/// A data chunk: FastCDC 2020's largest maximum chunk size (the `fastcdc`
/// crate's `MAXIMUM_MAX`), which the chunker refuses to exceed whatever the
/// repository config says (the default maximum is 4 MiB).
pub const MAX_CHUNK: usize = 16 * MIB;

/// A tree blob: one folder. A plain entry serializes to ~250 bytes of JSON
/// and each chunk of a file adds ~67, so 128 MiB is a folder of ~500,000
/// files, or one file of ~2 TiB at the default 1 MiB average chunk. It is
/// also about the largest tree a company server can receive at all: the
/// blob must fit in a 64 MiB pack upload, and a tree's hex ids compress to
/// about half.
pub const MAX_TREE: usize = 128 * MIB;

/// A snapshot object: host, user, paths, tags and a summary, under a KiB
/// for a usual backup; 16 MiB leaves room for ~100,000 long paths. The
/// company server decodes every commit, so this bounds what one hostile
/// commit can make it hold.
pub const MAX_SNAPSHOT: usize = 16 * MIB;

/// Blob entries a writer puts in one index file before starting the next
/// (a file also ends after a whole pack, so it may hold one pack more).
pub const INDEX_FILE_BLOBS: usize = 100_000;

/// An index file: ~130 bytes of JSON per blob entry. Writers end a file
/// at [`INDEX_FILE_BLOBS`] entries plus at most one pack of
/// [`MAX_PACK_BLOBS`], so ~1.15 M entries, ~150 MiB; 256 MiB leaves room.
pub const MAX_INDEX_FILE: usize = 256 * MIB;

// An index file of the most entries a writer puts in one, at ~150 bytes of
// JSON each (a long offset and lengths), fits its cap.
const _: () = assert!((INDEX_FILE_BLOBS + MAX_PACK_BLOBS) * 150 <= MAX_INDEX_FILE);

/// Blobs in one pack. A writer closes a pack at this count even below its
/// target size; it is over twice what a 16 MiB pack of the smallest
/// possible blobs (42 sealed bytes) holds.
pub const MAX_PACK_BLOBS: usize = 1 << 20;

/// A pack's sealed trailer, as its tail states it: a 4-byte count, 45
/// bytes per blob for at most [`MAX_PACK_BLOBS`] blobs, and the seal's 40
/// bytes of nonce and tag.
pub const MAX_PACK_TRAILER: usize = 4 + 45 * MAX_PACK_BLOBS + 40;

/// A key file: a few hundred bytes of JSON (names, Argon2 parameters, a
/// salt and the sealed master keys); 64 KiB allows long host and user names.
pub const MAX_KEY_FILE: usize = 64 * 1024;

/// A lock object: a host name, a pid and a time, sealed; as for key files.
pub const MAX_LOCK: usize = 64 * 1024;

/// The cap for a blob of `kind`.
pub const fn max_blob(kind: BlobKind) -> usize {
    match kind {
        BlobKind::Data => MAX_CHUNK,
        BlobKind::Tree => MAX_TREE,
    }
}

/// The cap for a blob whose kind the reader does not know: the largest.
pub const MAX_BLOB: usize = if MAX_TREE > MAX_CHUNK {
    MAX_TREE
} else {
    MAX_CHUNK
};

/// A byte count as a person reads a limit: "16 MiB", "64 KiB".
pub fn human(bytes: usize) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_what_writers_make() {
        // The default chunker's maximum fits the chunk cap.
        assert!(crate::ChunkerParams::default().max_size as usize <= MAX_CHUNK);
        assert_eq!(human(MAX_SNAPSHOT), "16 MiB");
        assert_eq!(human(MAX_KEY_FILE), "64 KiB");
        assert_eq!(human(1000), "1000 bytes");
    }
}
