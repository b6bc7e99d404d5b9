//! Seeds: every test draws its randomness from one seed that it prints,
//! so a failure can be replayed exactly with `TIDEMARK_TEST_SEED=<seed>`.

use rand::SeedableRng;

/// The generator behind every test's randomness. ChaCha8 is portable and
/// its output is fixed by the crate's version, so a seed replays the same
/// trees, offsets and delays.
pub type TestRng = rand_chacha::ChaCha8Rng;

/// Deterministic bytes that do not compress (xorshift64), different for
/// each `seed`: file contents and blobs whose size on disk must not shrink.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The environment variable that replays a seed.
pub const SEED_ENV: &str = "TIDEMARK_TEST_SEED";

/// A generator for the test `name`: seeded from `TIDEMARK_TEST_SEED` when
/// set, otherwise from the OS. The seed is printed either way (the test
/// harness shows it when the test fails).
pub fn test_rng(name: &str) -> (TestRng, u64) {
    let seed = match std::env::var(SEED_ENV) {
        Ok(s) => parse_seed(&s)
            .unwrap_or_else(|| panic!("{SEED_ENV}={s:?} is not a u64 (decimal or 0x-hex)")),
        Err(_) => rand::random(),
    };
    println!("[{name}] seed {seed}; replay with {SEED_ENV}={seed}");
    (TestRng::seed_from_u64(seed), seed)
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2a\n"), Some(42));
        assert_eq!(parse_seed("forty-two"), None);
    }
}
