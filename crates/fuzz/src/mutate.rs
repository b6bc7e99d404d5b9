//! The stable driver's mutations: bit flips, interesting bytes and
//! lengths, truncation, duplication, splicing; seeded and deterministic so
//! a failure replays from its seed.

/// splitmix64: tiny, fast, and enough for choosing mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Lengths and counts a decoder must survive: edges of integer types and
/// of the caps in `format::limits`.
const INTERESTING_U32: [u32; 12] = [
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    (format::limits::MAX_CHUNK + 1) as u32,
    (format::limits::MAX_TREE + 1) as u32,
    (format::limits::MAX_PACK_BLOBS + 1) as u32,
    (format::limits::MAX_PACK_TRAILER + 1) as u32,
];

/// Text a JSON decoder must survive in place of a value.
const INTERESTING_TEXT: [&[u8]; 10] = [
    b"18446744073709551616",
    b"-1",
    b"1e999",
    b"null",
    b"\"\\u0000\"",
    b"\"../..\"",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"{\"nodes\":[]}",
    b"\"\xff\xfe\"",
    b"4294967296",
];

/// Most bytes a mutant may have: beyond this, inputs only cost time.
pub const MAX_INPUT: usize = 1 << 20;

/// Applies 1 to 4 random mutations to `data`, splicing from `others`.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, data, others);
    }
    data.truncate(MAX_INPUT);
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(10) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = [0, 0xff, 0x7f, 0x80, b'"', b'{', b'[', b'9'][rng.below(8)];
        }
        2 => {
            // A length field: any 4 bytes become an interesting u32.
            if len >= 4 {
                let i = rng.below(len - 3);
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                data[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        3 => data.truncate(rng.below(len + 1)),
        4 if len > 0 => {
            // Remove a range.
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64)).min(len);
            data.drain(a..b);
        }
        5 if len > 0 => {
            // Duplicate a range in place (grows repeated structure).
            let a = rng.below(len);
            let b = (a + 1 + rng.below(256)).min(len);
            let copy = data[a..b].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, copy);
        }
        6 if !others.is_empty() => {
            // Splice: our head, another seed's tail.
            let o = &others[rng.below(others.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(o.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&o[from..]);
        }
        7 => {
            let t = INTERESTING_TEXT[rng.below(INTERESTING_TEXT.len())];
            let at = rng.below(len + 1);
            let end = (at + rng.below(8)).min(len);
            data.splice(at..end, t.iter().copied());
        }
        8 => {
            // A digit run in JSON becomes a huge or negative number.
            if let Some(at) = (0..8)
                .map(|_| rng.below(len.max(1)))
                .find(|&i| data.get(i).is_some_and(u8::is_ascii_digit))
            {
                let end = data[at..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(len, |p| at + p);
                let t = INTERESTING_TEXT[rng.below(2)];
                data.splice(at..end, t.iter().copied());
            }
        }
        _ => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_replay_from_their_seed_and_stay_bounded() {
        let seed = b"{\"nodes\":[{\"name\":\"a\",\"size\":12}]}".to_vec();
        let run = |s| {
            let mut rng = Rng::new(s);
            let mut d = seed.clone();
            for _ in 0..200 {
                mutate(&mut rng, &mut d, std::slice::from_ref(&seed));
            }
            d
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
        assert!(run(7).len() <= MAX_INPUT);
    }
}
