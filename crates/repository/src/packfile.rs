//! Assembles pack files in memory (see `format::pack` for the layout).

use crypto::{Id, MasterKeys};
use format::{pack, BlobEntry, BlobKind};

#[derive(Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    blobs: Vec<BlobEntry>,
}

impl PackBuilder {
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
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
    /// name (hash of the bytes) and its entries.
    pub fn finish(&mut self, keys: &MasterKeys) -> (Id, Vec<u8>, Vec<BlobEntry>) {
        let trailer = keys
            .data
            .seal(&pack::encode_trailer(&self.blobs), pack::TRAILER_AAD);
        let mut bytes = std::mem::take(&mut self.buf);
        bytes.extend_from_slice(&trailer);
        bytes.extend_from_slice(&pack::encode_tail(trailer.len() as u32));
        (
            Id::hash_public(&bytes),
            bytes,
            std::mem::take(&mut self.blobs),
        )
    }
}
