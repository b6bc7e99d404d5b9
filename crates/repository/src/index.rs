//! The chunk index: which pack holds each blob.
//!
//! The index lives in an [`IndexStore`]. The default, [`MemoryIndex`], is
//! rebuilt from the repository's index files on every open and costs about
//! 70 MB per million chunks. A front end that runs often (the CLI, the agent)
//! plugs in a persistent store instead (the `catalog` crate's SQLite one),
//! which keeps memory flat at any repository size and reads only the index
//! files written since the last run. This crate defines the trait and not
//! the SQLite store so that it stays free of a database dependency.
//!
//! A persistent store must only ever hold packs listed in an index file that
//! is in storage: packs this process has stored but not yet listed live in
//! the repository's own in-memory overlay until their index file is written,
//! so a crash never leaves the local cache believing in unindexed packs.

use format::{BlobKind, Id, IndexPack};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Where one blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
    pub kind: BlobKind,
}

/// A failure of the local index store (not of the repository): the message
/// says which file and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("the local index cache failed: {0}; it is only a cache, delete it and it is rebuilt from the repository")]
pub struct IndexStoreError(pub String);

pub type StoreResult<T> = std::result::Result<T, IndexStoreError>;

/// An index file as the store remembers it: its id and the files it
/// supersedes, so that a later sync can tell when a prune rewrote the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedFile {
    pub id: Id,
    pub supersedes: Vec<Id>,
}

/// Storage of the chunk index. Implementations are shared between the
/// upload, restore and verify threads, hence `Sync`.
pub trait IndexStore: Send + Sync {
    /// The index files whose packs the store holds (empty for a fresh store).
    fn loaded_files(&self) -> StoreResult<Vec<LoadedFile>>;
    /// Forgets everything, before a rebuild.
    fn clear(&self) -> StoreResult<()>;
    /// Records an index file and adds its packs (none for a superseded file
    /// that is only remembered as seen). Adding a blob that is already
    /// indexed keeps the first location.
    fn add_file(&self, file: &LoadedFile, packs: &[IndexPack]) -> StoreResult<()>;
    fn lookup(&self, id: &Id) -> StoreResult<Option<Location>>;
    /// Which of `ids` are indexed; one call for a batch, since the company
    /// server asks this for thousands of ids per request.
    fn contains_many(&self, ids: &[Id]) -> StoreResult<Vec<bool>> {
        ids.iter().map(|i| Ok(self.lookup(i)?.is_some())).collect()
    }
    fn has_pack(&self, id: &Id) -> StoreResult<bool>;
    /// Journal of packs this machine is about to store: noted before the
    /// pack is written, dropped once an index file lists it. What is left
    /// after a crash is all a backup has to look for, instead of listing
    /// every pack in storage (hundreds of requests on S3, every backup).
    /// A store without a journal answers `None`, and storage is listed.
    fn note_unindexed_pack(&self, _id: &Id) -> StoreResult<()> {
        Ok(())
    }
    fn unindexed_packs(&self) -> StoreResult<Option<Vec<Id>>> {
        Ok(None)
    }
    /// Drops journal entries of packs that never reached storage.
    fn forget_unindexed_packs(&self, _ids: &[Id]) -> StoreResult<()> {
        Ok(())
    }
    /// Every indexed pack with its size.
    fn packs(&self) -> StoreResult<Vec<(Id, u64)>>;
    fn blob_count(&self) -> StoreResult<u64>;
}

/// Packs stored by this process whose index file is not written yet.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    packs: HashMap<Id, (u64, Vec<Id>)>,
    blobs: HashMap<Id, Location>,
}

impl Overlay {
    pub(crate) fn add(&mut self, p: &IndexPack) {
        if self.packs.contains_key(&p.id) {
            return;
        }
        for b in &p.blobs {
            self.blobs.entry(b.id).or_insert(Location {
                pack: p.id,
                offset: b.offset,
                length: b.length,
                raw_length: b.raw_length,
                kind: b.kind,
            });
        }
        self.packs
            .insert(p.id, (p.size, p.blobs.iter().map(|b| b.id).collect()));
    }

    /// Drops packs that are now listed in a written index file.
    pub(crate) fn remove(&mut self, packs: &[IndexPack]) {
        for p in packs {
            if let Some((_, ids)) = self.packs.remove(&p.id) {
                for id in ids {
                    if self.blobs.get(&id).is_some_and(|l| l.pack == p.id) {
                        self.blobs.remove(&id);
                    }
                }
            }
        }
        // A map keeps the capacity of its largest moment: after a first
        // backup of a big tree that was 20 MiB held for the agent's life.
        if self.packs.is_empty() {
            *self = Overlay::default();
        }
    }

    pub(crate) fn lookup(&self, id: &Id) -> Option<Location> {
        self.blobs.get(id).copied()
    }

    pub(crate) fn has_pack(&self, id: &Id) -> bool {
        self.packs.contains_key(id)
    }

    pub(crate) fn packs(&self) -> impl Iterator<Item = (Id, u64)> + '_ {
        self.packs.iter().map(|(id, (size, _))| (*id, *size))
    }

    pub(crate) fn blob_count(&self) -> usize {
        self.blobs.len()
    }
}

/// The in-memory store: entries packed into 20 bytes plus the 32-byte id.
#[derive(Debug, Default)]
pub struct MemoryIndex {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    files: Vec<LoadedFile>,
    packs: Vec<(Id, u64)>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, Packed>,
}

#[derive(Debug, Clone, Copy)]
struct Packed {
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    kind: BlobKind,
}

impl MemoryIndex {
    fn with<T>(&self, f: impl FnOnce(&mut MemoryInner) -> T) -> T {
        // The data is append-only, so a panic elsewhere cannot leave it
        // half-updated in a way that matters to readers.
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl IndexStore for MemoryIndex {
    fn loaded_files(&self) -> StoreResult<Vec<LoadedFile>> {
        Ok(self.with(|m| m.files.clone()))
    }

    fn clear(&self) -> StoreResult<()> {
        self.with(|m| *m = MemoryInner::default());
        Ok(())
    }

    fn add_file(&self, file: &LoadedFile, packs: &[IndexPack]) -> StoreResult<()> {
        self.with(|m| {
            m.files.push(file.clone());
            for p in packs {
                let pos = match m.pack_pos.get(&p.id) {
                    Some(&pos) => pos,
                    None => {
                        let pos = m.packs.len() as u32;
                        m.packs.push((p.id, p.size));
                        m.pack_pos.insert(p.id, pos);
                        pos
                    }
                };
                for b in &p.blobs {
                    m.blobs.entry(b.id).or_insert(Packed {
                        pack: pos,
                        offset: b.offset,
                        length: b.length,
                        raw_length: b.raw_length,
                        kind: b.kind,
                    });
                }
            }
        });
        Ok(())
    }

    fn lookup(&self, id: &Id) -> StoreResult<Option<Location>> {
        Ok(self.with(|m| {
            let p = *m.blobs.get(id)?;
            let (pack, _) = *m.packs.get(p.pack as usize)?;
            Some(Location {
                pack,
                offset: p.offset,
                length: p.length,
                raw_length: p.raw_length,
                kind: p.kind,
            })
        }))
    }

    fn has_pack(&self, id: &Id) -> StoreResult<bool> {
        Ok(self.with(|m| m.pack_pos.contains_key(id)))
    }

    fn packs(&self) -> StoreResult<Vec<(Id, u64)>> {
        Ok(self.with(|m| m.packs.clone()))
    }

    fn blob_count(&self) -> StoreResult<u64> {
        Ok(self.with(|m| m.blobs.len() as u64))
    }
}

/// What a sync must do, given the listed index files and the store's state.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SyncPlan {
    /// The store is consistent with storage; read these new files.
    Incremental(Vec<Id>),
    /// Files the store holds are gone or superseded: start again.
    Rebuild,
}

/// A store may only be extended while every file it holds is still listed;
/// otherwise a prune has rewritten the index and the packs may be gone.
pub(crate) fn plan_sync(listed: &HashSet<Id>, loaded: &[LoadedFile]) -> SyncPlan {
    let loaded_ids: HashSet<Id> = loaded.iter().map(|f| f.id).collect();
    if !loaded_ids.is_subset(listed) {
        return SyncPlan::Rebuild;
    }
    let mut new: Vec<Id> = listed.difference(&loaded_ids).copied().collect();
    new.sort();
    SyncPlan::Incremental(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use format::BlobEntry;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    fn pack(n: u8, blobs: &[u8]) -> IndexPack {
        IndexPack {
            id: id(n),
            size: 100,
            blobs: blobs
                .iter()
                .enumerate()
                .map(|(i, b)| BlobEntry {
                    id: id(*b),
                    kind: BlobKind::Data,
                    offset: i as u32 * 10,
                    length: 10,
                    raw_length: 20,
                })
                .collect(),
        }
    }

    #[test]
    fn first_location_wins_and_lookup_names_the_pack() {
        let m = MemoryIndex::default();
        let f = LoadedFile {
            id: id(1),
            supersedes: vec![],
        };
        m.add_file(&f, &[pack(10, &[50, 51]), pack(11, &[51, 52])])
            .unwrap();
        assert_eq!(m.lookup(&id(51)).unwrap().unwrap().pack, id(10));
        assert_eq!(m.lookup(&id(52)).unwrap().unwrap().pack, id(11));
        assert!(m.lookup(&id(53)).unwrap().is_none());
        assert_eq!(m.blob_count().unwrap(), 3);
        assert_eq!(m.loaded_files().unwrap(), vec![f]);
    }

    #[test]
    fn overlay_forgets_packs_once_listed() {
        let mut o = Overlay::default();
        let p = pack(10, &[50]);
        o.add(&p);
        assert!(o.has_pack(&id(10)));
        assert!(o.lookup(&id(50)).is_some());
        o.remove(std::slice::from_ref(&p));
        assert!(!o.has_pack(&id(10)));
        assert!(o.lookup(&id(50)).is_none());
    }

    #[test]
    fn sync_plan_rebuilds_when_a_loaded_file_vanished() {
        let loaded = vec![
            LoadedFile {
                id: id(1),
                supersedes: vec![],
            },
            LoadedFile {
                id: id(2),
                supersedes: vec![],
            },
        ];
        let listed: HashSet<Id> = [id(1), id(2), id(3)].into();
        assert_eq!(
            plan_sync(&listed, &loaded),
            SyncPlan::Incremental(vec![id(3)])
        );
        let listed: HashSet<Id> = [id(1), id(3)].into();
        assert_eq!(plan_sync(&listed, &loaded), SyncPlan::Rebuild);
    }
}
