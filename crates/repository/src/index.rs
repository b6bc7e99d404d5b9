//! The in-memory chunk index: which pack holds each blob.
//!
//! Entries are packed into 20 bytes plus the 32-byte id, so a repository of
//! one million chunks (1 TiB at 1 MiB chunks) costs about 70 MB here.
//! TODO(#2 follow-up): back it with the SQLite cache for 10M+ chunk repos.

use format::{BlobEntry, BlobKind, Id, IndexPack};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
    pub kind: BlobKind,
}

#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<(Id, u64)>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, Location>,
}

impl Index {
    pub fn add_pack(&mut self, p: &IndexPack) {
        let pos = match self.pack_pos.get(&p.id) {
            Some(&pos) => pos,
            None => {
                let pos = self.packs.len() as u32;
                self.packs.push((p.id, p.size));
                self.pack_pos.insert(p.id, pos);
                pos
            }
        };
        for b in &p.blobs {
            self.blobs.entry(b.id).or_insert(Location {
                pack: pos,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
                kind: b.kind,
            });
        }
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn has_pack(&self, id: &Id) -> bool {
        self.pack_pos.contains_key(id)
    }

    pub fn get(&self, id: &Id) -> Option<(Id, Location)> {
        let loc = *self.blobs.get(id)?;
        let (pack, _) = *self.packs.get(loc.pack as usize)?;
        Some((pack, loc))
    }

    pub fn packs(&self) -> impl Iterator<Item = (Id, u64)> + '_ {
        self.packs.iter().copied()
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn entry(&self, id: &Id) -> Option<BlobEntry> {
        let loc = self.blobs.get(id)?;
        Some(BlobEntry {
            id: *id,
            kind: loc.kind,
            offset: loc.offset,
            length: loc.length,
            raw_length: loc.raw_length,
        })
    }

    pub fn stored_bytes(&self) -> u64 {
        self.packs.iter().map(|(_, s)| s).sum()
    }
}
