//! Accepting packs built by someone else: the company server receives packs
//! from devices and must not store or index a byte it has not checked, since
//! every other device will deduplicate against what it indexes.

use crate::error::{RepoError, Result};
use crate::{blob, Repository};
use crypto::Id;
use format::{layout, BlobEntry, IndexFile, IndexPack, Snapshot, FORMAT_VERSION};

impl Repository {
    /// Checks a whole pack as received: its name is the hash of its bytes,
    /// its tail and trailer decode, the entries lie inside the blob area
    /// without overlapping, and every blob decrypts, decompresses and hashes
    /// to its id. Returns the entries on success.
    pub fn verify_pack_bytes(&self, pack: &Id, bytes: &[u8]) -> Result<Vec<BlobEntry>> {
        let bad = |reason: &str| RepoError::corrupt(format!("pack {pack}"), reason);
        if Id::hash_public(bytes) != *pack {
            return Err(bad("its content does not match its name"));
        }
        let tail_len = format::pack::TAIL_LEN;
        let tail = bytes
            .len()
            .checked_sub(tail_len)
            .map(|at| &bytes[at..])
            .ok_or_else(|| bad("shorter than its tail"))?;
        let tlen = format::pack::decode_tail(tail)? as usize;
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
        let mut sorted: Vec<&BlobEntry> = entries.iter().collect();
        sorted.sort_by_key(|e| e.offset);
        let mut next = 0u64;
        for e in sorted {
            let (start, end) = (
                u64::from(e.offset),
                u64::from(e.offset) + u64::from(e.length),
            );
            if start < next || end > blobs_end as u64 {
                return Err(bad("its trailer lists overlapping or out-of-range blobs"));
            }
            next = end;
            blob::decode(
                self.keys(),
                &e.id,
                &bytes[start as usize..end as usize],
                e.raw_length,
            )?;
        }
        Ok(entries)
    }

    /// Stores a pack checked by [`Repository::verify_pack_bytes`] and lists
    /// it in a new index file, so it is durable and indexed before anyone is
    /// told it exists.
    pub fn store_verified_pack(
        &self,
        pack: &Id,
        bytes: storage::Bytes,
        blobs: Vec<BlobEntry>,
    ) -> Result<()> {
        let size = bytes.len() as u64;
        self.storage().put_shared(&layout::pack(pack), bytes)?;
        self.write_index_file(&IndexFile {
            version: FORMAT_VERSION,
            packs: vec![IndexPack {
                id: *pack,
                size,
                blobs,
            }],
            supersedes: vec![],
        })?;
        Ok(())
    }

    /// The stored (encrypted) bytes of one blob, for a client that holds the
    /// keys and checks the blob itself.
    pub fn read_sealed_blob(&self, id: &Id) -> Result<(Vec<u8>, u32)> {
        let loc = self
            .blob_location(id)?
            .ok_or(RepoError::BlobNotFound(*id))?;
        let sealed = self.storage().get_range(
            &layout::pack(&loc.pack),
            u64::from(loc.offset),
            u64::from(loc.length),
        )?;
        Ok((sealed, loc.raw_length))
    }

    /// Opens a snapshot object sealed by a client, as it would be stored.
    pub fn open_sealed_snapshot(&self, sealed: &[u8]) -> Result<Snapshot> {
        let json = blob::open_object(self.keys(), "snapshot", sealed, crate::SNAPSHOT_AAD)?;
        format::from_json("snapshot", &json).map_err(Into::into)
    }

    /// Seals a snapshot object as [`Repository::save_snapshot`] stores it.
    pub fn seal_snapshot(&self, snap: &Snapshot) -> Vec<u8> {
        blob::seal_object(self.keys(), &format::to_json(snap), crate::SNAPSHOT_AAD)
    }

    /// The master keys, for the company server to provision enrolled devices.
    pub fn export_keys(&self) -> Vec<u8> {
        self.keys().to_bytes()
    }

    /// Stores an already sealed snapshot object under its name.
    pub fn store_sealed_snapshot(&self, sealed: &[u8]) -> Result<Id> {
        let id = Id::hash_public(sealed);
        self.storage().put(&layout::snapshot(&id), sealed)?;
        Ok(id)
    }
}
