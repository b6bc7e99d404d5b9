//! Pack files: blobs back to back, then a sealed trailer that lists them,
//! then a fixed 9-byte tail:
//!
//! ```text
//! blob_0 | blob_1 | … | sealed trailer | trailer length (u32 LE) | version (u8) | "TMPK"
//! ```
//!
//! The trailer plaintext is binary (45 bytes per blob) because packs of small
//! files hold thousands of entries and JSON would triple their size.

use crate::{BlobEntry, BlobKind, FormatError, Id};

pub const MAGIC: &[u8; 4] = b"TMPK";
pub const PACK_VERSION: u8 = 1;
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
    if t[4] != PACK_VERSION {
        return Err(FormatError::UnsupportedVersion {
            what: "pack",
            found: u32::from(t[4]),
        });
    }
    Ok(u32::from_le_bytes([t[0], t[1], t[2], t[3]]))
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
    }
}
