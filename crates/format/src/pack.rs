//! Pack files: blobs back to back, then a sealed trailer that lists them,
//! then a fixed 9-byte tail:
//!
//! ```text
//! blob_0 | blob_1 | … | sealed trailer | trailer length (u32 LE) | version (u8) | "TMPK"
//! ```
//!
//! The trailer plaintext is binary (45 bytes per blob) because packs of small
//! files hold thousands of entries and JSON would triple their size.
//!
//! A pack's name is the hash of its sealed trailer and tail (version 2), not
//! of all its bytes (version 1, still read): every blob is authenticated on
//! its own and the blobs must tile the blob area, so hashing the blob bytes
//! a second time checked nothing more, and it was a full BLAKE3 pass over
//! every stored byte on the device and again on the company server.

use crate::{limits, BlobEntry, BlobKind, FormatError, Id};

pub const MAGIC: &[u8; 4] = b"TMPK";
/// Packs written now: named by the hash of [`named_part`].
pub const PACK_VERSION: u8 = 2;
/// Packs written before 2026-12-02: named by the hash of all their bytes.
pub const PACK_VERSION_WHOLE: u8 = 1;
pub const TAIL_LEN: usize = 9;
const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;
/// Additional data bound into the sealed trailer so it cannot be swapped
/// with another kind of sealed object.
pub const TRAILER_AAD: &[u8] = b"tidemark pack trailer v1";

pub fn encode_trailer(entries: &[BlobEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * ENTRY_LEN);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.push(match e.kind {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        });
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.length.to_le_bytes());
        out.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    out
}

fn malformed(reason: impl Into<String>) -> FormatError {
    FormatError::Malformed {
        what: "pack trailer",
        reason: reason.into(),
    }
}

/// Decodes a trailer and checks every entry lies inside the blob area
/// (`blobs_end` bytes), so a forged trailer cannot make a reader seek
/// outside the pack or overlap the trailer.
pub fn decode_trailer(b: &[u8], blobs_end: u64) -> Result<Vec<BlobEntry>, FormatError> {
    let count = b
        .get(..4)
        .ok_or_else(|| malformed("shorter than its count"))?;
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    if count > limits::MAX_PACK_BLOBS {
        return Err(malformed(format!(
            "it lists {count} blobs, more than the {} a pack may hold",
            limits::MAX_PACK_BLOBS
        )));
    }
    let body = &b[4..];
    if body.len()
        != count
            .checked_mul(ENTRY_LEN)
            .ok_or_else(|| malformed("count overflows"))?
    {
        return Err(malformed(format!(
            "{count} entries need {} bytes, found {}",
            count * ENTRY_LEN,
            body.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    for rec in body.chunks_exact(ENTRY_LEN) {
        let kind = match rec[0] {
            0 => BlobKind::Data,
            1 => BlobKind::Tree,
            k => return Err(malformed(format!("unknown blob kind {k}"))),
        };
        let mut id = [0u8; 32];
        id.copy_from_slice(&rec[1..33]);
        let u = |i: usize| u32::from_le_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
        let e = BlobEntry {
            id: Id(id),
            kind,
            offset: u(33),
            length: u(37),
            raw_length: u(41),
        };
        // Refused here, before any reader reserves room for the chunk.
        if e.raw_length as usize > limits::max_blob(e.kind) {
            return Err(malformed(format!(
                "blob {} states {} bytes, past the {} limit of its kind",
                e.id,
                e.raw_length,
                limits::human(limits::max_blob(e.kind))
            )));
        }
        if u64::from(e.offset) + u64::from(e.length) > blobs_end {
            return Err(malformed(format!(
                "blob {} reaches past the blob area",
                e.id
            )));
        }
        out.push(e);
    }
    Ok(out)
}

pub fn encode_tail(trailer_len: u32) -> [u8; TAIL_LEN] {
    let mut t = [0u8; TAIL_LEN];
    t[..4].copy_from_slice(&trailer_len.to_le_bytes());
    t[4] = PACK_VERSION;
    t[5..].copy_from_slice(MAGIC);
    t
}

/// Returns the sealed trailer's length from the last 9 bytes of a pack.
pub fn decode_tail(t: &[u8]) -> Result<u32, FormatError> {
    if t.len() != TAIL_LEN || &t[5..] != MAGIC {
        return Err(FormatError::Malformed {
            what: "pack",
            reason: "missing pack magic: not a Tidemark pack or truncated".into(),
        });
    }
    if t[4] != PACK_VERSION && t[4] != PACK_VERSION_WHOLE {
        return Err(FormatError::UnsupportedVersion {
            what: "pack",
            found: u32::from(t[4]),
        });
    }
    let len = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
    if len as usize > limits::MAX_PACK_TRAILER {
        return Err(FormatError::Malformed {
            what: "pack",
            reason: format!(
                "its tail states a {len}-byte trailer, past the {} limit",
                limits::human(limits::MAX_PACK_TRAILER)
            ),
        });
    }
    Ok(len)
}

/// The bytes a pack's name is the hash of: its sealed trailer and tail, or
/// all of it for a version 1 pack.
pub fn named_part(pack: &[u8]) -> Result<&[u8], FormatError> {
    let at = pack
        .len()
        .checked_sub(TAIL_LEN)
        .ok_or_else(|| FormatError::Malformed {
            what: "pack",
            reason: "shorter than its tail: truncated".into(),
        })?;
    let tail = &pack[at..];
    let trailer_len = decode_tail(tail)? as usize;
    if tail[4] == PACK_VERSION_WHOLE {
        return Ok(pack);
    }
    let start = at
        .checked_sub(trailer_len)
        .ok_or_else(|| FormatError::Malformed {
            what: "pack",
            reason: "its trailer is longer than the pack: truncated".into(),
        })?;
    Ok(&pack[start..])
}

/// Checks that a trailer's entries cover the blob area (`blobs_end` bytes)
/// exactly, back to back from offset 0: bytes between blobs would be covered
/// by no authentication tag and no name.
pub fn check_tiling(entries: &[BlobEntry], blobs_end: u64) -> Result<(), FormatError> {
    let mut spans: Vec<(u64, u64)> = entries
        .iter()
        .map(|e| {
            (
                u64::from(e.offset),
                u64::from(e.offset) + u64::from(e.length),
            )
        })
        .collect();
    spans.sort_unstable();
    let mut next = 0u64;
    for (start, end) in spans {
        if start != next {
            return Err(malformed(if start < next {
                format!("blobs overlap at offset {start}")
            } else {
                format!("bytes {next}..{start} belong to no blob")
            }));
        }
        next = end;
    }
    if next != blobs_end {
        return Err(malformed(format!(
            "bytes {next}..{blobs_end} belong to no blob"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_round_trip_and_bounds() {
        let e = vec![
            BlobEntry {
                id: Id([1; 32]),
                kind: BlobKind::Data,
                offset: 0,
                length: 10,
                raw_length: 20,
            },
            BlobEntry {
                id: Id([2; 32]),
                kind: BlobKind::Tree,
                offset: 10,
                length: 5,
                raw_length: 5,
            },
        ];
        let enc = encode_trailer(&e);
        assert_eq!(decode_trailer(&enc, 15).unwrap(), e);
        assert!(
            decode_trailer(&enc, 14).is_err(),
            "entry past blob area accepted"
        );
        assert!(decode_trailer(&enc[..enc.len() - 1], 15).is_err());
        assert!(decode_trailer(&[], 15).is_err());
        assert_eq!(decode_tail(&encode_tail(77)).unwrap(), 77);
        assert!(decode_tail(b"123456789").is_err());
        assert!(check_tiling(&e, 15).is_ok());
        assert!(
            check_tiling(&e, 16).is_err(),
            "a tail of unlisted bytes accepted"
        );
        let mut gap = e.clone();
        gap[1].offset = 11;
        assert!(
            check_tiling(&gap, 16).is_err(),
            "a gap between blobs accepted"
        );
        let mut overlap = e.clone();
        overlap[1].offset = 9;
        assert!(
            check_tiling(&overlap, 14).is_err(),
            "overlapping blobs accepted"
        );
        assert!(check_tiling(&[], 0).is_ok());
    }

    #[test]
    fn a_pack_is_named_by_its_trailer_and_tail_and_an_old_one_by_all_its_bytes() {
        let mut pack = b"blob bytes".to_vec();
        pack.extend_from_slice(b"trailer");
        pack.extend_from_slice(&encode_tail(7));
        assert_eq!(named_part(&pack).unwrap(), &pack[10..]);
        let at = pack.len() - TAIL_LEN + 4;
        pack[at] = PACK_VERSION_WHOLE;
        assert_eq!(named_part(&pack).unwrap(), &pack[..]);
        pack[at] = 9;
        assert!(matches!(
            named_part(&pack),
            Err(FormatError::UnsupportedVersion { found: 9, .. })
        ));
        let mut short = b"x".to_vec();
        short.extend_from_slice(&encode_tail(7));
        assert!(
            named_part(&short).is_err(),
            "a trailer longer than the pack accepted"
        );
        assert!(named_part(b"tiny").is_err());
    }

    #[test]
    fn stated_counts_and_lengths_past_their_caps_are_refused() {
        // A count past the cap is refused before the entries are read.
        let mut t = ((limits::MAX_PACK_BLOBS + 1) as u32).to_le_bytes().to_vec();
        t.extend(std::iter::repeat_n(0u8, ENTRY_LEN));
        let err = decode_trailer(&t, u64::MAX).unwrap_err().to_string();
        assert!(err.contains("more than the"), "{err}");
        // A blob stating a raw length past its kind's cap.
        for (kind, cap) in [
            (BlobKind::Data, limits::MAX_CHUNK),
            (BlobKind::Tree, limits::MAX_TREE),
        ] {
            let mut e = BlobEntry {
                id: Id([1; 32]),
                kind,
                offset: 0,
                length: 10,
                raw_length: cap as u32,
            };
            assert!(decode_trailer(&encode_trailer(&[e]), 10).is_ok());
            e.raw_length += 1;
            let err = decode_trailer(&encode_trailer(&[e]), 10)
                .unwrap_err()
                .to_string();
            assert!(err.contains("past the"), "{err}");
        }
        // A tail stating a trailer past its cap.
        assert!(decode_tail(&encode_tail(limits::MAX_PACK_TRAILER as u32)).is_ok());
        assert!(decode_tail(&encode_tail(limits::MAX_PACK_TRAILER as u32 + 1)).is_err());
    }
}
