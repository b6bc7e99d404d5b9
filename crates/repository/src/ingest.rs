//! Accepting packs built by someone else: the company server receives packs
//! from devices and must not store or index a byte it has not checked, since
//! every other device will deduplicate against what it indexes.

use crate::error::{RepoError, Result};
use crate::{blob, Repository};
use crypto::Id;
use format::{layout, BlobEntry, IndexFile, IndexPack, Snapshot, FORMAT_VERSION};

/// Packs per index file written for ingested packs.
pub const INGEST_INDEX_EVERY: usize = 16;

impl Repository {
    /// Checks a whole pack as received: its name is the hash of its trailer
    /// and tail, the trailer decodes, the entries tile the blob area, and
    /// every blob decrypts, decompresses and hashes to its id. Returns the
    /// entries on success.
    pub fn verify_pack_bytes(&self, pack: &Id, bytes: &[u8]) -> Result<Vec<BlobEntry>> {
        let bad = |reason: &str| RepoError::corrupt(format!("pack {pack}"), reason);
        if crate::packfile::name_of(bytes)? != *pack {
            return Err(bad("its content does not match its name"));
        }
        // name_of decoded the tail, so the pack holds one.
        let tail_len = format::pack::TAIL_LEN;
        let tlen = format::pack::decode_tail(&bytes[bytes.len() - tail_len..])? as usize;
        let blobs_end = bytes
            .len()
            .checked_sub(tail_len + tlen)
            .ok_or_else(|| bad("trailer longer than the pack"))?;
        let entries = crate::decode_trailer(
            self.keys(),
            pack,
            &bytes[blobs_end..blobs_end + tlen],
            blobs_end as u64,
        )?;
        if entries.is_empty() {
            return Err(bad("it holds no blobs"));
        }
        format::pack::check_tiling(&entries, blobs_end as u64)
            .map_err(|e| RepoError::corrupt(format!("pack {pack}"), e))?;
        for e in &entries {
            let (start, end) = (e.offset as usize, e.offset as usize + e.length as usize);
            self.check_blob_of(e.kind, &e.id, &bytes[start..end], e.raw_length)?;
        }
        Ok(entries)
    }

    /// Stores a pack checked by [`Repository::verify_pack_bytes`]: once this
    /// returns, the pack is durable and its blobs are found by lookups.
    ///
    /// Its index file is written with the next [`INGEST_INDEX_EVERY`] packs
    /// (or by [`Repository::flush_ingested`]) rather than at once: one small
    /// durable write per 16 MiB pack cost the server about as much as the
    /// pack itself. Nothing is lost by waiting: a pack stored but not yet
    /// listed is found and indexed from its own trailer by
    /// [`Repository::recover_unindexed_packs`] when the server starts again.
    /// Callers flush before committing a snapshot that uses the packs.
    pub fn store_verified_pack(
        &self,
        pack: &Id,
        bytes: storage::Bytes,
        blobs: Vec<BlobEntry>,
    ) -> Result<()> {
        let size = bytes.len() as u64;
        self.storage().put_shared(&layout::pack(pack), bytes)?;
        let ip = IndexPack {
            id: *pack,
            size,
            blobs,
        };
        self.index_add(&ip);
        let full = {
            let mut pending = self.ingested();
            pending.push(ip);
            pending.len() >= INGEST_INDEX_EVERY || crate::upload::index_file_due(&pending)
        };
        if full {
            self.flush_ingested()?;
        }
        Ok(())
    }

    /// Writes the index file for the packs stored since the last one.
    pub fn flush_ingested(&self) -> Result<()> {
        let packs = std::mem::take(&mut *self.ingested());
        if packs.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.write_index_file(&IndexFile {
            version: FORMAT_VERSION,
            packs: packs.clone(),
            supersedes: vec![],
        }) {
            // Keep them for the next try; they stay found meanwhile.
            self.ingested().extend(packs);
            return Err(e);
        }
        Ok(())
    }

    /// The stored (encrypted) bytes of one blob, for a client that holds the
    /// keys and checks the blob itself.
    pub fn read_sealed_blob(&self, id: &Id) -> Result<(Vec<u8>, crate::index::Location)> {
        let loc = self
            .blob_location(id)?
            .ok_or(RepoError::BlobNotFound(*id))?;
        let sealed = self.storage().get_range(
            &layout::pack(&loc.pack),
            u64::from(loc.offset),
            u64::from(loc.length),
        )?;
        Ok((sealed, loc))
    }

    /// Opens a snapshot object sealed by a client, as it would be stored.
    pub fn open_sealed_snapshot(&self, sealed: &[u8]) -> Result<Snapshot> {
        let json = blob::open_object(
            self.keys(),
            "snapshot object",
            sealed,
            crate::SNAPSHOT_AAD,
            format::limits::MAX_SNAPSHOT,
        )?;
        format::from_json("snapshot", &json).map_err(Into::into)
    }

    /// Seals a snapshot object as [`Repository::save_snapshot`] stores it.
    pub fn seal_snapshot(&self, snap: &Snapshot) -> Vec<u8> {
        blob::seal_object(self.keys(), &format::to_json(snap), crate::SNAPSHOT_AAD)
    }

    /// The master keys, for the company server to provision enrolled devices.
    pub fn export_keys(&self) -> String {
        self.keys().to_hex()
    }

    /// Stores an already sealed snapshot object under its name.
    pub fn store_sealed_snapshot(&self, sealed: &[u8]) -> Result<Id> {
        let id = Id::hash_public(sealed);
        self.storage().put(&layout::snapshot(&id), sealed)?;
        Ok(id)
    }
}
