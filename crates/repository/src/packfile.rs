//! Assembles pack files in memory (see `format::pack` for the layout).

use crypto::{Id, MasterKeys};
use format::{pack, BlobEntry, BlobKind};

#[derive(Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

impl PackBuilder {
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Whether the pack should be finished: it reached `target` bytes, or
    /// the most blobs a reader accepts in one pack
    /// ([`format::limits::MAX_PACK_BLOBS`]; only packs of tiny chunks
    /// reach that before their size).
    pub fn full(&self, target: usize) -> bool {
        self.buf.len() >= target || self.blobs.len() >= format::limits::MAX_PACK_BLOBS
    }

    /// Builds the next pack in `buf` (emptied first), a buffer of an
    /// earlier pack, instead of a fresh allocation. Only before the first
    /// push of a pack.
    pub fn use_buffer(&mut self, mut buf: Vec<u8>) {
        if self.buf.is_empty() {
            buf.clear();
            self.buf = buf;
        }
    }

    pub fn push(&mut self, kind: BlobKind, id: Id, raw_length: u32, sealed: &[u8], reserve: usize) {
        if self.buf.is_empty() {
            self.buf.reserve(reserve);
        }
        self.blobs.push(BlobEntry {
            id,
            kind,
            offset: self.buf.len() as u32,
            length: sealed.len() as u32,
            raw_length,
        });
        self.buf.extend_from_slice(sealed);
    }

    /// Appends the sealed trailer and tail; returns the pack's bytes, its
    /// name (see [`name_of`]) and its entries.
    pub fn finish(&mut self, keys: &MasterKeys) -> (Id, Vec<u8>, Vec<BlobEntry>) {
        let trailer = keys
            .data
            .seal(&pack::encode_trailer(&self.blobs), pack::TRAILER_AAD);
        let mut bytes = std::mem::take(&mut self.buf);
        let blobs_end = bytes.len();
        bytes.extend_from_slice(&trailer);
        bytes.extend_from_slice(&pack::encode_tail(trailer.len() as u32));
        (
            Id::hash_public(&bytes[blobs_end..]),
            bytes,
            std::mem::take(&mut self.blobs),
        )
    }
}

/// The name a pack's bytes must be stored under: the hash of its trailer
/// and tail ([`pack::named_part`]).
pub fn name_of(bytes: &[u8]) -> Result<Id, format::FormatError> {
    Ok(Id::hash_public(pack::named_part(bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_built_in_a_reused_buffer_holds_nothing_of_the_last_one() {
        let keys = MasterKeys::random();
        let build = |pb: &mut PackBuilder| {
            pb.push(BlobKind::Data, Id::hash_public(b"a"), 3, b"sealed a", 64);
            pb.push(BlobKind::Tree, Id::hash_public(b"b"), 5, b"sealed bb", 64);
            pb.finish(&keys)
        };
        let (_, fresh, fresh_blobs) = build(&mut PackBuilder::default());
        let mut pb = PackBuilder::default();
        pb.use_buffer(b"an earlier pack, longer than this one".to_vec());
        let (id, bytes, blobs) = build(&mut pb);
        // The trailer's nonce is random, so compare what precedes it.
        assert_eq!(&bytes[..17], &fresh[..17]);
        assert_eq!(bytes.len(), fresh.len());
        assert_eq!(blobs, fresh_blobs);
        assert_eq!(name_of(&bytes).unwrap(), id);
    }
}
