//! Checks that the repository is whole: every indexed pack exists with the
//! right size, and (with `read_data`) that every byte of the chosen packs
//! decrypts and hashes to its name. Damage is collected, never fatal, so one
//! run reports all of it.

use crate::error::Result;
use crate::Repository;
use crypto::Id;
use format::{layout, pack};
use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    pub read_data: bool,
    /// Share of packs to read, in (0, 1]; `None` reads all.
    pub subset: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The damaged object, e.g. `packs/ab/ab12…` or `chunk 12ab…`.
    pub object: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub packs: u64,
    pub packs_read: u64,
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// Packs stored but in no index: left by an interrupted backup, harmless,
    /// picked up by the next backup or removed by prune.
    pub unindexed_packs: u64,
    pub problems: Vec<Problem>,
}

pub fn verify(
    repo: &Repository,
    opts: &VerifyOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        problems: repo.load_index()?,
        ..Default::default()
    };
    let stored: HashMap<Id, u64> = repo
        .storage()
        .list(layout::PACKS)?
        .into_iter()
        .filter_map(|e| layout::id_of(&e.key).map(|id| (id, e.size)))
        .collect();
    let indexed: Vec<(Id, u64)> = repo.indexed_packs()?;
    report.packs = indexed.len() as u64;
    let indexed_ids: std::collections::HashSet<Id> = indexed.iter().map(|(id, _)| *id).collect();
    let unindexed: Vec<(Id, u64)> = stored
        .iter()
        .filter(|(id, _)| !indexed_ids.contains(id))
        .map(|(i, s)| (*i, *s))
        .collect();
    report.unindexed_packs = unindexed.len() as u64;
    // Unindexed packs are read too: a damaged index file must not hide
    // damage in the packs it listed.
    let mut to_read = unindexed;
    for (id, size) in &indexed {
        match stored.get(id) {
            None => report.problems.push(Problem {
                object: layout::pack(id),
                message: "pack is listed in the index but missing from storage".into(),
            }),
            Some(s) if s != size => report.problems.push(Problem {
                object: layout::pack(id),
                message: format!(
                    "pack has {s} bytes, the index says {size}: truncated or replaced"
                ),
            }),
            Some(_) => to_read.push((*id, *size)),
        }
    }
    if opts.read_data {
        if let Some(share) = opts.subset {
            // Random choice, so repeated partial verifies cover every pack over time.
            let keep = ((to_read.len() as f64) * share.clamp(0.0, 1.0)).ceil() as usize;
            use rand::seq::SliceRandom;
            to_read.shuffle(&mut rand::thread_rng());
            to_read.truncate(keep.max(1).min(to_read.len()));
        }
        let total: u64 = to_read.iter().map(|(_, s)| s).sum();
        for (id, _) in &to_read {
            read_pack(repo, id, &mut report);
            progress(report.bytes_read, total);
        }
    }
    Ok(report)
}

fn read_pack(repo: &Repository, id: &Id, report: &mut VerifyReport) {
    let key = layout::pack(id);
    let bytes = match repo.storage().get(&key) {
        Ok(b) => b,
        Err(e) => {
            return report.problems.push(Problem {
                object: key,
                message: e.to_string(),
            })
        }
    };
    report.packs_read += 1;
    report.bytes_read += bytes.len() as u64;
    if !crate::packfile::name_of(&bytes).is_ok_and(|name| name == *id) {
        report.problems.push(Problem {
            object: key.clone(),
            message: "pack content does not match its name: the file was altered or damaged".into(),
        });
    }
    let n = bytes.len();
    let trailer = (|| {
        let tail = bytes.get(n.checked_sub(pack::TAIL_LEN)?..)?;
        let tlen = pack::decode_tail(tail).ok()? as usize;
        let blobs_end = n.checked_sub(pack::TAIL_LEN + tlen)?;
        let entries = crate::decode_trailer(
            repo.keys(),
            id,
            &bytes[blobs_end..n - pack::TAIL_LEN],
            blobs_end as u64,
        )
        .ok()?;
        // The name covers only the trailer: bytes outside every blob would
        // be checked by nothing.
        if let Err(e) = pack::check_tiling(&entries, blobs_end as u64) {
            report.problems.push(Problem {
                object: key.clone(),
                message: e.to_string(),
            });
        }
        Some(entries)
    })();
    // Without a readable trailer, check the blobs the index files place here.
    let entries = match trailer {
        Some(e) => e,
        None => {
            report.problems.push(Problem {
                object: key.clone(),
                message: "pack trailer is unreadable".into(),
            });
            repo_entries_for_pack(repo, id)
        }
    };
    let (total, mut damaged) = (entries.len(), 0usize);
    for e in entries {
        let start = e.offset as usize;
        let Some(sealed) = bytes.get(start..start + e.length as usize) else {
            report.problems.push(Problem {
                object: format!("chunk {}", e.id),
                message: format!("lies outside pack {id}"),
            });
            continue;
        };
        report.blobs_read += 1;
        if let Err(err) = repo.check_blob_of(e.kind, &e.id, sealed, e.raw_length) {
            damaged += 1;
            report.problems.push(Problem {
                object: format!("chunk {}", e.id),
                message: format!("in pack {id}: {err}"),
            });
        }
    }
    // The pack's name covers only its trailer, so damage to a blob shows
    // here; the file is named too, as it is what a user restores or removes.
    if damaged > 0 {
        report.problems.push(Problem {
            object: key,
            message: format!(
                "{damaged} of the {total} chunks in this pack are damaged: the file was altered or damaged"
            ),
        });
    }
}

fn repo_entries_for_pack(repo: &Repository, pack: &Id) -> Vec<format::BlobEntry> {
    let mut problems = Vec::new();
    let Ok(files) = repo.read_index_files(&mut problems) else {
        return Vec::new();
    };
    files
        .into_iter()
        .flat_map(|(_, f)| f.packs)
        .filter(|p| p.id == *pack)
        .flat_map(|p| p.blobs)
        .collect()
}
