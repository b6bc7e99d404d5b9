//! When a proof of ownership may grant a chunk that other users stored:
//! the rule that keeps cross-user deduplication from confirming guesses
//! about a colleague's files.
//!
//! Every enrolled device holds the organisation's keys, so anyone can
//! compute the id of a guessed file and prove ownership of the guess. If
//! the server granted every stored chunk, the grant itself would say
//! "somebody in the organisation has exactly this", and a user who knows
//! most of a colleague's letter could try every value of the unknown part
//! (Harnik, Pinkas and Shulman-Peleg, 2010). The defences, after that paper:
//!
//! - **Small chunks share only when common.** A chunk under
//!   [`SMALL_CHUNK`] bytes is granted across users only once at least
//!   [`threshold`] other users own it: a secret number from 2 to 4 per
//!   chunk, derived from the server's key. Content one colleague holds alone
//!   is never confirmed; below the threshold the answer is "upload", the
//!   same as for a chunk nobody has. Small files are where guessable secrets
//!   live (letters, offers, forms), and they are few of the bytes a fleet
//!   shares (an OS, installers and attachments are mostly large chunks), so
//!   the bandwidth this costs is small.
//! - **Large chunks share at once**: bandwidth is the point of the product.
//!   Guessing one means knowing every other byte of a content-defined chunk
//!   of at least 256 KiB.
//! - **The same work either way.** Below the threshold the chunk is not
//!   read; the owner count is looked up for every proof, stored or not. A
//!   pack whose chunks were all stored already is written to scratch and
//!   synced as a new one would be (see the pack upload).
//!
//! `docs/server.md` ("What the answers reveal") states the residual leak.

use crate::error::ApiError;
use crate::Server;
use crypto::Id;

/// Chunks below this many bytes (before compression) are shared across
/// users only past their [`threshold`]. FastCDC's minimum chunk is 256 KiB,
/// so everything smaller is a whole small file (or a file's tail, or a
/// folder's tree): the things a guesser can enumerate.
pub const SMALL_CHUNK: u32 = 256 * 1024;

/// Fewest and most other owners a small chunk needs before it is shared.
/// At least 2, so a file one colleague holds alone is never confirmed; at
/// most 4, so what a handful of people share (a team's template) still
/// costs at most four uploads.
const THRESHOLD_MIN: u32 = 2;
const THRESHOLD_SPAN: u32 = 3;

/// The secret number of other owners a small chunk needs before a proof
/// grants it: fixed per chunk (a guesser cannot re-roll it by asking
/// again), unknown without the server's key.
pub fn threshold(s: &Server, id: &Id) -> u32 {
    let mac = s.hash_secret(b"dedup threshold", &id.to_hex());
    THRESHOLD_MIN + u32::from(mac[0]) % THRESHOLD_SPAN
}

/// Whether a proof for this stored chunk may grant it, given how many
/// users other than the prover own it.
pub fn may_share(s: &Server, id: &Id, raw_length: u32, other_owners: u32) -> bool {
    raw_length >= SMALL_CHUNK || other_owners >= threshold(s, id)
}

/// Which of `ids` the user may reference: owned, and still stored (ownership
/// outlives a chunk removed by a prune, and referencing it would leave a hole).
pub(crate) fn owned_and_stored(
    s: &Server,
    user_id: i64,
    ids: &[Id],
) -> Result<Vec<bool>, ApiError> {
    let mut usable = s.meta.owned(user_id, ids)?;
    // Only what the user owns needs the second lookup.
    let owned: Vec<usize> = (0..ids.len()).filter(|&i| usable[i]).collect();
    let asked: Vec<Id> = owned.iter().map(|&i| ids[i]).collect();
    let stored = s.repo.has_blobs(&asked).map_err(ApiError::internal)?;
    for (i, st) in owned.into_iter().zip(stored) {
        usable[i] = st;
    }
    Ok(usable)
}

/// One proof as a device sends it.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Proof {
    pub id: Id,
    pub expires: i64,
    pub proof: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct ProveResponse {
    /// Ownership granted: reference these chunks without sending them.
    pub granted: Vec<Id>,
    /// Send these chunks in a pack: unknown, not shared yet, or the proof
    /// did not hold. One answer for all three.
    pub upload: Vec<Id>,
}

/// Checks proofs and grants what they prove, under the rule above.
pub(crate) fn prove(
    s: &Server,
    user_id: i64,
    device_id: i64,
    proofs: Vec<Proof>,
) -> Result<ProveResponse, ApiError> {
    let t = s.now();
    // A proof grants a chunk the sweep must then keep (see crate::prune).
    let _gate = s.no_prune();
    let ids: Vec<Id> = proofs.iter().map(|p| p.id).collect();
    // Asked for every id, stored or not, so that a stored chunk below its
    // threshold costs what an unknown one does.
    let others = s.meta.other_owners(user_id, &ids)?;
    let mut out = ProveResponse::default();
    for (pr, others) in proofs.into_iter().zip(others) {
        let location = s.repo.blob_location(&pr.id).map_err(ApiError::internal)?;
        let ok = pr.expires >= t
            && pr.expires <= t + crate::CHALLENGE_SECONDS
            && location.is_some_and(|l| may_share(s, &pr.id, l.raw_length, others))
            && {
                let nonce = s.challenge_nonce(user_id, &pr.id, pr.expires);
                match s.repo.read_blob(&pr.id) {
                    Ok(plain) => hex::encode(crypto::ownership_proof(&nonce, &plain)) == pr.proof,
                    Err(e) => {
                        tracing::warn!(chunk = %pr.id, error = %e, "unreadable chunk during a proof");
                        false
                    }
                }
            };
        if ok {
            out.granted.push(pr.id);
        } else {
            out.upload.push(pr.id);
        }
    }
    s.meta.grant(user_id, device_id, &out.granted, t)?;
    Ok(out)
}

/// Writes `bytes` to a fresh file under `dir`, syncs it and removes it: the
/// cost of storing a pack, without storing it.
pub(crate) fn write_like_a_pack(dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let mut f = tempfile::NamedTempFile::new_in(dir)?;
    f.write_all(bytes)?;
    f.as_file().sync_all()?;
    f.close()
}
