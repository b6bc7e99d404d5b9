//! Prune: drop blobs no snapshot uses. Packs with nothing used are deleted;
//! packs with a large unused share are rewritten with only their used blobs
//! (sealed bytes are copied as they are: no decryption needed). Runs under
//! an exclusive lock, so no backup can be relying on what it deletes.
//!
//! Order, for crash safety: new packs, then new index files of which the
//! last supersedes every old one, then old index files, then old packs. A
//! crash at any step leaves every used blob reachable through some index
//! file. A prune that would free nothing writes nothing.

use crate::error::{RepoError, Result};
use crate::packfile::PackBuilder;
use crate::Repository;
use crypto::Id;
use format::{layout, IndexFile, IndexPack, FORMAT_VERSION};
use std::collections::HashSet;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// A pack whose unused share exceeds this is rewritten; below it the
    /// dead bytes stay, because rewriting costs a download and an upload.
    pub max_unused: f64,
    pub dry_run: bool,
    /// Most blobs in one index file the prune writes (a pack is never
    /// split across files), so that writing the index needs memory for
    /// one file at a time, not for the whole index.
    pub index_file_blobs: usize,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: 0.2,
            dry_run: false,
            index_file_blobs: 50_000,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    pub packs_kept: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub packs_written: u64,
    pub blobs_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub dry_run: bool,
}

pub fn prune(repo: &Repository, used: &HashSet<Id>, opts: &PruneOptions) -> Result<PruneReport> {
    let _lock = repo.lock(true)?;
    repo.load_index()?;
    repo.recover_unindexed_packs()?;
    let mut problems = Vec::new();
    let files = repo.read_index_files(&mut problems)?;
    if let Some(p) = problems.first() {
        return Err(RepoError::corrupt(
            p.object.clone(),
            format!("{}; prune needs every index file readable", p.message),
        ));
    }
    let mut seen_packs = HashSet::new();
    let mut seen_blobs: HashSet<Id> = HashSet::new();
    let mut keep: Vec<IndexPack> = Vec::new();
    let mut rewrite: Vec<(IndexPack, Vec<format::BlobEntry>)> = Vec::new();
    let mut delete: Vec<Id> = Vec::new();
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    for p in files.iter().flat_map(|(_, f)| f.packs.iter()) {
        if !seen_packs.insert(p.id) {
            continue;
        }
        report.bytes_before += p.size;
        let mut live = Vec::new();
        let mut dead_bytes = 0u64;
        for b in &p.blobs {
            if used.contains(&b.id) && seen_blobs.insert(b.id) {
                live.push(*b);
            } else {
                dead_bytes += u64::from(b.length);
                report.blobs_removed += 1;
            }
        }
        if live.is_empty() {
            delete.push(p.id);
        } else if live.len() < p.blobs.len() && dead_bytes as f64 > p.size as f64 * opts.max_unused
        {
            rewrite.push((p.clone(), live));
        } else {
            report.bytes_after += p.size;
            // Blobs counted dead in a pack kept whole are not actually removed.
            report.blobs_removed -= (p.blobs.len() - live.len()) as u64;
            keep.push(p.clone());
        }
    }
    report.packs_kept = keep.len() as u64;
    report.packs_deleted = delete.len() as u64;
    report.packs_rewritten = rewrite.len() as u64;
    if delete.is_empty() && rewrite.is_empty() {
        // Nothing to free: rewriting the index anyway would cost a copy of
        // the whole index in memory and make every device rebuild its
        // local index from scratch, for no byte saved.
        return Ok(report);
    }
    if opts.dry_run {
        report.bytes_after += rewrite
            .iter()
            .map(|(_, l)| l.iter().map(|b| u64::from(b.length)).sum::<u64>())
            .sum::<u64>();
        return Ok(report);
    }
    let target = repo.config().pack_size as usize;
    let mut pb = PackBuilder::default();
    let mut new_packs = Vec::new();
    let flush = |pb: &mut PackBuilder, new_packs: &mut Vec<IndexPack>| -> Result<()> {
        let (id, bytes, blobs) = pb.finish(repo.keys());
        repo.storage().put(&layout::pack(&id), &bytes)?;
        new_packs.push(IndexPack {
            id,
            size: bytes.len() as u64,
            blobs,
        });
        Ok(())
    };
    for (p, live) in &rewrite {
        let bytes = repo.storage().get(&layout::pack(&p.id))?;
        for b in live {
            let sealed = bytes
                .get(b.offset as usize..(b.offset + b.length) as usize)
                .ok_or_else(|| {
                    RepoError::corrupt(format!("pack {}", p.id), "blob outside the pack")
                })?;
            // Check before copying: prune must never launder a damaged blob
            // into a fresh pack that verify would then call healthy.
            repo.check_blob_of(b.kind, &b.id, sealed, b.raw_length)?;
            pb.push(b.kind, b.id, b.raw_length, sealed, target + target / 4);
            if pb.full(target) {
                flush(&mut pb, &mut new_packs)?;
            }
        }
    }
    if !pb.is_empty() {
        flush(&mut pb, &mut new_packs)?;
    }
    report.packs_written = new_packs.len() as u64;
    report.bytes_after += new_packs.iter().map(|p| p.size).sum::<u64>();
    let mut all = keep;
    all.extend(new_packs);
    let supersedes: Vec<Id> = files.iter().map(|(id, _)| *id).collect();
    // Also supersede index files that were already superseded, so they can go.
    let listed: Vec<Id> = repo
        .storage()
        .list(layout::INDEX)?
        .iter()
        .filter_map(|e| layout::id_of(&e.key))
        .collect();
    // Several files of bounded size, not one: a single file would be
    // serialised, compressed and sealed whole in memory, several copies of
    // an index that grows with the repository. Only the last supersedes
    // the old files, so a crash before it leaves them in force.
    let mut written = HashSet::new();
    let parts = split_by_blobs(all, opts.index_file_blobs.max(1));
    let n = parts.len();
    for (i, packs) in parts.into_iter().enumerate() {
        let last = i + 1 == n;
        written.insert(repo.write_index_file(&IndexFile {
            version: FORMAT_VERSION,
            packs,
            supersedes: if last { supersedes.clone() } else { Vec::new() },
        })?);
    }
    for id in listed.iter().filter(|id| !written.contains(*id)) {
        repo.storage().delete(&layout::index(id))?;
    }
    for id in delete.iter().chain(rewrite.iter().map(|(p, _)| &p.id)) {
        repo.storage().delete(&layout::pack(id))?;
    }
    repo.load_index()?;
    Ok(report)
}

/// Cuts packs into groups of at most `max` blobs (a pack is never split;
/// one larger than `max` gets a group of its own). Always at least one
/// group, so an empty repository still gets the superseding file.
fn split_by_blobs(packs: Vec<IndexPack>, max: usize) -> Vec<Vec<IndexPack>> {
    let mut groups = Vec::new();
    let mut group = Vec::new();
    let mut count = 0;
    for p in packs {
        if count > 0 && count + p.blobs.len() > max {
            groups.push(std::mem::take(&mut group));
            count = 0;
        }
        count += p.blobs.len();
        group.push(p);
    }
    groups.push(group);
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: usize) -> IndexPack {
        IndexPack {
            id: Id::hash_public(&n.to_le_bytes()),
            size: 0,
            blobs: vec![
                format::BlobEntry {
                    id: Id::hash_public(b"b"),
                    kind: format::BlobKind::Data,
                    offset: 0,
                    length: 0,
                    raw_length: 0,
                };
                n
            ],
        }
    }

    #[test]
    fn index_files_are_cut_at_the_blob_limit_without_splitting_a_pack() {
        let sizes = |packs: Vec<IndexPack>, max| -> Vec<Vec<usize>> {
            split_by_blobs(packs, max)
                .iter()
                .map(|g| g.iter().map(|p| p.blobs.len()).collect())
                .collect()
        };
        assert_eq!(sizes(vec![], 10), vec![Vec::<usize>::new()]);
        assert_eq!(
            sizes(vec![pack(4), pack(4), pack(4), pack(12), pack(1)], 10),
            vec![vec![4, 4], vec![4], vec![12], vec![1]]
        );
    }
}
