//! One chunk as stored: a compression flag byte and the (maybe compressed)
//! bytes, sealed with a deterministic nonce and the chunk id as associated
//! data, so a blob moved under another id fails authentication.

use crate::error::{RepoError, Result};
use crypto::{Id, MasterKeys};
use format::limits;

const RAW: u8 = 0;
const ZSTD: u8 = 1;

/// Bytes sampled to decide whether a chunk is worth compressing. Media and
/// already-compressed files are a large share of a home folder; skipping
/// zstd on them saves more than a second core would give (PLATFORM.md).
const SAMPLE: usize = 64 * 1024;

/// Room in front of a chunk that [`encode_owned`] fills with the nonce and
/// the compression flag, so a chunk stored raw is sealed where it lies.
pub const HEADROOM: usize = crypto::NONCE_LEN + 1;

/// An empty chunk behind [`HEADROOM`] bytes, with capacity for `len` bytes
/// of chunk and the tag behind them, so neither filling it nor sealing it
/// moves it.
pub fn chunk_buffer(len: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADROOM + len + crypto::TAG_LEN);
    buf.resize(HEADROOM, 0);
    buf
}

/// A copy of `raw` in a [`chunk_buffer`], as [`encode_owned`] takes it.
pub fn with_headroom(raw: &[u8]) -> Vec<u8> {
    let mut buf = chunk_buffer(raw.len());
    buf.extend_from_slice(raw);
    buf
}

/// Compresses (when it pays) and seals one blob: [`encode_owned`] on a copy.
#[cfg(test)]
pub fn encode(
    keys: &MasterKeys,
    id: &Id,
    raw: &[u8],
    level: i32,
    zc: &mut Option<zstd::bulk::Compressor<'static>>,
) -> Vec<u8> {
    encode_owned(keys, id, with_headroom(raw), level, zc)
}

/// Compresses (when it pays) and seals the chunk in `buf[HEADROOM..]`,
/// whose id is `id`, in that buffer.
///
/// A chunk stored raw is sealed in place, and its nonce is derived from its
/// id rather than from its bytes: the id is a keyed hash of exactly those
/// bytes, so that saves a BLAKE3 pass over every incompressible chunk (a
/// twentieth of a first backup's CPU in perf) without ever putting two
/// different plaintexts under one nonce. A compressed chunk's plaintext
/// depends on the zstd version and level, so its nonce is still hashed from
/// the compressed bytes. zstd writes into a reused scratch buffer: fresh
/// allocations and copies of every chunk showed as 15% of a first backup's
/// CPU in perf.
pub fn encode_owned(
    keys: &MasterKeys,
    id: &Id,
    mut buf: Vec<u8>,
    level: i32,
    zc: &mut Option<zstd::bulk::Compressor<'static>>,
) -> Vec<u8> {
    if buf.len() < HEADROOM {
        buf.resize(HEADROOM, 0);
    }
    let compressor = zc.get_or_insert_with(|| {
        // Level is validated when the repository config is read; a failure
        // here would only be an allocation failure, so fall back to raw.
        zstd::bulk::Compressor::new(level).unwrap_or_else(|_| zstd::bulk::Compressor::default())
    });
    let raw = &buf[HEADROOM..];
    let worth_trying = raw.len() < 512 || {
        let sample = &raw[..raw.len().min(SAMPLE)];
        matches!(compressor.compress(sample), Ok(c) if c.len() * 100 < sample.len() * 97)
    };
    let shrank = worth_trying
        && SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            // Capacity of exactly the raw size: output that does not fit is
            // no smaller than the input, so zstd failing here means "store raw".
            let raw = &buf[HEADROOM..];
            scratch.clear();
            scratch.reserve(raw.len());
            let shrank = matches!(
                compressor.compress_to_buffer(raw, &mut *scratch),
                Ok(n) if n < raw.len()
            );
            if shrank {
                buf.truncate(HEADROOM);
                buf.extend_from_slice(&scratch);
            }
            if scratch.capacity() > SCRATCH_KEEP {
                *scratch = Vec::new();
            }
            shrank
        });
    if shrank {
        buf[crypto::NONCE_LEN] = ZSTD;
        keys.data
            .seal_deterministic_in_place(&keys.nonce, buf, &id.0)
    } else {
        buf[crypto::NONCE_LEN] = RAW;
        keys.data
            .seal_determined_by_aad_in_place(&keys.nonce, buf, &id.0)
    }
}

/// Larger scratch buffers (a chunk over the usual maximum) are not kept.
const SCRATCH_KEEP: usize = 16 << 20;

thread_local! {
    static CHECK_BUFFERS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    // A zstd context costs ~100 KiB to set up; making one per chunk showed as
    // 4% of a no-change backup in perf, so each thread keeps one.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Opens, decompresses and checks one blob against its id, into a buffer
/// of its own: [`decode_in_place`] on a copy of the sealed bytes. `limit`
/// is the cap of the blob's kind ([`format::limits::max_blob`]).
pub fn decode(
    keys: &MasterKeys,
    id: &Id,
    sealed: &[u8],
    raw_length: u32,
    limit: usize,
) -> Result<Vec<u8>> {
    let mut opened = sealed.to_vec();
    let mut scratch = Vec::new();
    let len = decode_in_place(keys, id, &mut opened, raw_length, limit, &mut scratch)?.len();
    if opened[crypto::NONCE_LEN] != RAW {
        return Ok(scratch);
    }
    // Stored raw: the chunk follows the nonce and the flag byte in the
    // opened buffer; shifting it there needs no second allocation.
    opened.drain(..crypto::NONCE_LEN + 1);
    opened.truncate(len);
    Ok(opened)
}

/// Like [`decode`], for a reader that owns the sealed bytes: opens them where
/// they lie and returns the chunk as a slice of `sealed` (stored raw) or of
/// `scratch` (decompressed into it). A restore calls this for every chunk,
/// and the two copies `decode` makes of a raw chunk (out of the sealed
/// buffer, then past the flag byte) were a tenth of its CPU in perf.
///
/// The chunk may not exceed `limit` bytes, nor `raw_length` when that is
/// known (not 0): both are checked before room is reserved, and the frame's
/// own stated size before it is decompressed.
pub fn decode_in_place<'a>(
    keys: &MasterKeys,
    id: &Id,
    sealed: &'a mut [u8],
    raw_length: u32,
    limit: usize,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8]> {
    let what = || format!("chunk {id}");
    if raw_length as usize > limit {
        return Err(RepoError::TooLarge {
            what: what(),
            limit: limits::human(limit),
        });
    }
    let plain = keys
        .data
        .open_in_place(sealed, &id.0)
        .map_err(|e| RepoError::corrupt(what(), e))?;
    let (flag, body) = plain
        .split_first()
        .ok_or_else(|| RepoError::corrupt(what(), "empty blob"))?;
    let raw: &[u8] = match *flag {
        RAW => body,
        // A raw length of 0 means "unknown" (a tree from the local cache of
        // a server repository): only the cap bounds it; the id check below
        // still rejects anything that is not exactly the blob.
        ZSTD => {
            let bound = if raw_length == 0 {
                limit
            } else {
                raw_length as usize
            };
            let n = decompress_bounded(body, bound, scratch).map_err(|e| match e {
                Bounded::Past if raw_length == 0 => RepoError::TooLarge {
                    what: what(),
                    limit: limits::human(limit),
                },
                // The scratch may be larger than this chunk (kept from an
                // earlier one), so the length the index gives is checked.
                Bounded::Past => RepoError::corrupt(
                    what(),
                    format!("decompresses to more than the {raw_length} bytes the index says"),
                ),
                Bounded::Zstd(e) => RepoError::corrupt(what(), format!("zstd: {e}")),
            })?;
            if raw_length != 0 && n != raw_length as usize {
                return Err(RepoError::corrupt(
                    what(),
                    format!("decompressed to {n} bytes where the index says {raw_length}"),
                ));
            }
            scratch
        }
        f => {
            return Err(RepoError::corrupt(
                what(),
                format!("unknown compression flag {f}"),
            ))
        }
    };
    if raw.len() > limit {
        return Err(RepoError::TooLarge {
            what: what(),
            limit: limits::human(limit),
        });
    }
    if keys.content_id(raw) != *id {
        return Err(mismatch(id));
    }
    Ok(raw)
}

/// Why a bounded decompression stopped.
#[derive(Debug)]
enum Bounded {
    /// The output would pass the bound.
    Past,
    Zstd(String),
}

/// Decompresses `body` (zstd frames) into `out`, emptied first, never
/// producing more than `bound` bytes and never reserving more than `bound`
/// (room `out` already has is reused). The frame's stated content size,
/// which every frame Tidemark writes carries, is checked before anything
/// is decompressed; zstd then holds the frame to its stated size.
/// A frame without one is decompressed into room for `bound` bytes. One
/// shot decompression writes straight into `out`, so unlike a streaming
/// decoder it allocates no window a frame header could make large.
fn decompress_bounded(body: &[u8], bound: usize, out: &mut Vec<u8>) -> Result<usize, Bounded> {
    // The first frame's stated size. Tidemark writes one frame per object;
    // more frames can only write into the room reserved here (or kept in
    // `out` from an earlier object, itself reserved under a cap).
    let want = match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(n)) if n > bound as u64 => return Err(Bounded::Past),
        Ok(Some(n)) => n as usize,
        Ok(None) => bound,
        Err(_) => return Err(Bounded::Zstd("not a valid zstd frame".into())),
    };
    out.clear();
    out.reserve(want);
    let n = decompress_into(body, out).map_err(|e| {
        // Output that does not fit the room given means a frame without a
        // stated size went past the bound.
        if want == bound && e.to_string().contains("too small") {
            Bounded::Past
        } else {
            Bounded::Zstd(e.to_string())
        }
    })?;
    if n > bound {
        return Err(Bounded::Past);
    }
    Ok(n)
}

/// Decompresses into `out`'s spare capacity, which bounds the output: a
/// frame that would grow past it is an error.
fn decompress_into(body: &[u8], out: &mut Vec<u8>) -> std::io::Result<usize> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress_to_buffer(body, out),
            None => zstd::bulk::Decompressor::new()?.decompress_to_buffer(body, out),
        }
    })
}

/// Checks one blob against its id without handing its content out: what the
/// server does to every uploaded chunk and `verify --read-data` to every
/// stored one. The sealed bytes must stay as they are, so they are opened in
/// a copy; the copy and the decompressed chunk live in buffers this thread
/// keeps, where fresh ones per chunk showed as page faults in perf of the
/// server.
pub fn check(
    keys: &MasterKeys,
    id: &Id,
    sealed: &[u8],
    raw_length: u32,
    limit: usize,
) -> Result<()> {
    CHECK_BUFFERS.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (copy, scratch) = &mut *bufs;
        copy.clear();
        copy.extend_from_slice(sealed);
        let checked = decode_in_place(keys, id, copy, raw_length, limit, scratch).map(drop);
        for b in [copy, scratch] {
            if b.capacity() > SCRATCH_KEEP {
                *b = Vec::new();
            }
        }
        checked
    })
}

fn mismatch(id: &Id) -> RepoError {
    RepoError::corrupt(format!("chunk {id}"), "content does not match its id")
}

/// Zstd-compresses a metadata object (index files, snapshots) before
/// sealing; these are JSON and shrink several-fold.
pub fn seal_object(keys: &MasterKeys, json: &[u8], aad: &[u8]) -> Vec<u8> {
    let compressed = zstd::bulk::compress(json, 3).unwrap_or_else(|_| json.to_vec());
    keys.data.seal(&compressed, aad)
}

/// Opens a sealed metadata object (index file, snapshot) and decompresses
/// it, refusing one that would pass `limit` bytes (its kind's cap in
/// [`format::limits`]) before allocating for it.
pub fn open_object(
    keys: &MasterKeys,
    what: &str,
    sealed: &[u8],
    aad: &[u8],
    limit: usize,
) -> Result<Vec<u8>> {
    let compressed = keys
        .data
        .open(sealed, aad)
        .map_err(|e| RepoError::corrupt(what.to_string(), e))?;
    let mut out = Vec::new();
    match decompress_bounded(&compressed, limit, &mut out) {
        Ok(_) => Ok(out),
        Err(Bounded::Past) => Err(RepoError::TooLarge {
            what: what.to_string(),
            limit: limits::human(limit),
        }),
        Err(Bounded::Zstd(e)) => Err(RepoError::corrupt(what.to_string(), format!("zstd: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_and_random_blobs_round_trip() {
        let keys = MasterKeys::random();
        let mut zc = None;
        let text = b"hello world ".repeat(10_000);
        let mut random = vec![0u8; 200_000];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
        for raw in [&text[..], &random[..], b""] {
            let id = keys.content_id(raw);
            let sealed = encode(&keys, &id, raw, 3, &mut zc);
            assert_eq!(
                decode(&keys, &id, &sealed, raw.len() as u32, limits::MAX_CHUNK).unwrap(),
                raw
            );
        }
        let id = keys.content_id(&text);
        assert!(encode(&keys, &id, &text, 3, &mut zc).len() < text.len() / 10);
        let rid = keys.content_id(&random);
        assert!(encode(&keys, &rid, &random, 3, &mut zc).len() <= random.len() + 41);
    }

    #[test]
    fn a_chunk_is_sealed_in_the_buffer_it_came_in_and_the_same_way_every_time() {
        let keys = MasterKeys::random();
        let mut random = vec![0u8; 100_000];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
        let text = b"hello world ".repeat(10_000);
        for raw in [&random[..], &text[..]] {
            let id = keys.content_id(raw);
            let buf = with_headroom(raw);
            let at = buf.as_ptr();
            let sealed = encode_owned(&keys, &id, buf, 1, &mut None);
            assert_eq!(sealed.as_ptr(), at, "sealed into another buffer");
            assert_eq!(sealed, encode(&keys, &id, raw, 1, &mut None));
            assert_eq!(
                decode(&keys, &id, &sealed, raw.len() as u32, limits::MAX_CHUNK).unwrap(),
                raw
            );
        }
    }

    #[test]
    fn decoding_in_place_gives_the_same_chunks_and_refuses_what_decode_refuses() {
        let keys = MasterKeys::random();
        let mut zc = None;
        let text = b"hello world ".repeat(10_000);
        let mut random = vec![0u8; 200_000];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
        // One scratch across blobs, as a restore worker keeps it: a short
        // chunk after a long one must not carry the long one's tail.
        let mut scratch = Vec::new();
        for raw in [&text[..], &random[..], b"", &text[..100]] {
            let id = keys.content_id(raw);
            let mut sealed = encode(&keys, &id, raw, 3, &mut zc);
            for raw_len in [raw.len() as u32, 0] {
                let mut buf = sealed.clone();
                let got = decode_in_place(
                    &keys,
                    &id,
                    &mut buf,
                    raw_len,
                    limits::MAX_CHUNK,
                    &mut scratch,
                )
                .unwrap();
                assert_eq!(got, raw);
            }
            // A raw length too small for the chunk cannot grow the output.
            if raw.len() > 200 && sealed[crypto::NONCE_LEN] == ZSTD {
                let mut buf = sealed.clone();
                assert!(decode_in_place(
                    &keys,
                    &id,
                    &mut buf,
                    100,
                    limits::MAX_CHUNK,
                    &mut scratch
                )
                .is_err());
            }
            let other = keys.content_id(b"another chunk");
            let mut buf = sealed.clone();
            assert!(matches!(
                decode_in_place(
                    &keys,
                    &other,
                    &mut buf,
                    raw.len() as u32,
                    limits::MAX_CHUNK,
                    &mut scratch
                ),
                Err(RepoError::Corrupt { .. })
            ));
            let last = sealed.len() - 1;
            sealed[last] ^= 0x40;
            assert!(matches!(
                decode_in_place(
                    &keys,
                    &id,
                    &mut sealed,
                    raw.len() as u32,
                    limits::MAX_CHUNK,
                    &mut scratch
                ),
                Err(RepoError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn blob_under_wrong_id_is_rejected() {
        let keys = MasterKeys::random();
        let a = keys.content_id(b"a");
        let b = keys.content_id(b"b");
        let sealed = encode(&keys, &a, b"a", 3, &mut None);
        assert!(matches!(
            decode(&keys, &b, &sealed, 1, limits::MAX_CHUNK),
            Err(RepoError::Corrupt { .. })
        ));
    }

    /// A zstd frame of `n` zero bytes, made without ever holding them: a
    /// few KiB per GiB. With `declared`, the frame states its size (as
    /// every frame Tidemark writes does); without, a reader must find out.
    fn bomb(n: u64, declared: bool) -> Vec<u8> {
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        if declared {
            enc.set_pledged_src_size(Some(n)).unwrap();
        }
        enc.include_contentsize(declared).unwrap();
        std::io::copy(&mut std::io::Read::take(std::io::repeat(0), n), &mut enc).unwrap();
        enc.finish().unwrap()
    }

    /// Seals `body` as a blob flagged compressed, as a device holding the
    /// keys can.
    fn sealed_zstd(keys: &MasterKeys, id: &Id, body: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; HEADROOM];
        buf.extend_from_slice(body);
        buf[crypto::NONCE_LEN] = ZSTD;
        keys.data
            .seal_deterministic_in_place(&keys.nonce, buf, &id.0)
    }

    #[test]
    fn a_stated_raw_length_past_the_cap_is_refused_before_room_is_reserved() {
        let keys = MasterKeys::random();
        let id = keys.content_id(b"anything");
        // 64 MiB of zeros in ~2 KiB, claiming 4 GiB: the old reader reserved
        // the claimed 4 GiB before decompressing.
        let sealed = sealed_zstd(&keys, &id, &bomb(64 << 20, true));
        for raw_length in [u32::MAX, (limits::MAX_CHUNK + 1) as u32] {
            let mut scratch = Vec::new();
            let mut buf = sealed.clone();
            let err = decode_in_place(
                &keys,
                &id,
                &mut buf,
                raw_length,
                limits::MAX_CHUNK,
                &mut scratch,
            )
            .unwrap_err();
            assert!(matches!(err, RepoError::TooLarge { .. }), "{err}");
            assert!(err.to_string().contains("past its 16 MiB limit"), "{err}");
            assert_eq!(scratch.capacity(), 0, "room reserved for a refused chunk");
        }
    }

    #[test]
    fn a_frame_larger_than_its_stated_raw_length_is_refused_without_decompressing_it() {
        let keys = MasterKeys::random();
        let id = keys.content_id(b"small");
        for declared in [true, false] {
            let sealed = sealed_zstd(&keys, &id, &bomb(64 << 20, declared));
            let mut scratch = Vec::new();
            let mut buf = sealed.clone();
            let err = decode_in_place(&keys, &id, &mut buf, 5, limits::MAX_CHUNK, &mut scratch)
                .unwrap_err();
            assert!(matches!(err, RepoError::Corrupt { .. }), "{err}");
            assert!(
                scratch.capacity() < 1 << 20,
                "{} bytes reserved",
                scratch.capacity()
            );
            assert!(check(&keys, &id, &sealed, 5, limits::MAX_CHUNK).is_err());
        }
    }

    #[test]
    fn a_tree_of_unknown_length_is_bounded_by_the_tree_cap() {
        let keys = MasterKeys::random();
        let id = keys.content_id(b"a tree");
        // Past the tree cap, with and without a stated size: the cached-tree
        // path (raw length 0) used to decompress whatever the frame held.
        let over = (limits::MAX_TREE + (1 << 20)) as u64;
        for declared in [true, false] {
            let sealed = sealed_zstd(&keys, &id, &bomb(over, declared));
            let mut scratch = Vec::new();
            let mut buf = sealed.clone();
            let err = decode_in_place(&keys, &id, &mut buf, 0, limits::MAX_TREE, &mut scratch)
                .unwrap_err();
            assert!(
                matches!(err, RepoError::TooLarge { .. }),
                "declared {declared}: {err}"
            );
            assert!(
                scratch.capacity() <= limits::MAX_TREE,
                "{} bytes reserved",
                scratch.capacity()
            );
            if declared {
                assert_eq!(
                    scratch.capacity(),
                    0,
                    "a stated size past the cap is refused first"
                );
            }
        }
        // A real tree of unknown length still decodes.
        let tree = br#"{"nodes":[]}"#.repeat(1000);
        let tid = keys.content_id(&tree);
        let sealed = encode(&keys, &tid, &tree, 3, &mut None);
        assert_eq!(
            decode(&keys, &tid, &sealed, 0, limits::MAX_TREE).unwrap(),
            tree
        );
    }

    #[test]
    fn a_chunk_of_exactly_the_cap_decodes() {
        let keys = MasterKeys::random();
        let raw = vec![7u8; limits::MAX_CHUNK];
        let id = keys.content_id(&raw);
        let sealed = encode(&keys, &id, &raw, 1, &mut None);
        assert_eq!(
            decode(&keys, &id, &sealed, raw.len() as u32, limits::MAX_CHUNK).unwrap(),
            raw
        );
        assert_eq!(
            decode(&keys, &id, &sealed, 0, limits::MAX_CHUNK).unwrap(),
            raw
        );
    }

    #[test]
    fn a_metadata_object_past_its_cap_is_refused() {
        let keys = MasterKeys::random();
        for declared in [true, false] {
            let sealed = keys.data.seal(&bomb(64 << 20, declared), b"aad");
            let err = open_object(
                &keys,
                "snapshot object",
                &sealed,
                b"aad",
                limits::MAX_SNAPSHOT,
            )
            .unwrap_err();
            assert!(matches!(err, RepoError::TooLarge { .. }), "{err}");
            assert!(
                err.to_string()
                    .starts_with("snapshot object decompresses past its 16 MiB limit: refused"),
                "{err}"
            );
        }
        let json = br#"{"a":1}"#;
        let sealed = seal_object(&keys, json, b"aad");
        assert_eq!(
            open_object(&keys, "x", &sealed, b"aad", json.len()).unwrap(),
            json
        );
        assert!(matches!(
            open_object(&keys, "x", &sealed, b"aad", json.len() - 1),
            Err(RepoError::TooLarge { .. })
        ));
    }
}
