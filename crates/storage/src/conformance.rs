//! The conformance suite: every clause of the [`Storage`] contract as
//! checks that panic on the first violation. Every backend's tests run it,
//! and so can the tests of any decorator or any new backend elsewhere.
//!
//! All objects live under a fresh `conformance-<random>/` prefix, so the
//! suite can run against a shared bucket; it deletes them at the end.
//! Checks of `list("")` only look at keys under that prefix.

use std::collections::BTreeMap;

use crate::{Storage, StorageError};

/// Known deviations of a test server from real deployments, which the
/// suite then does not hold against the backend. Each one names the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerQuirks {
    /// The server answers for a "directory" that only exists because
    /// objects lie below it as if it were an object (s3s-fs does: it maps
    /// keys to files, and answers HEAD on a directory with its inode size
    /// and GET with a 500). Real S3 has no directories. Skips checking that
    /// such a prefix is `NotFound`.
    pub directories_look_like_objects: bool,
}

/// Runs every check against `s`. Takes a few seconds against a local
/// server; the largest object is 20 MiB.
pub fn run_all(s: &dyn Storage) {
    run_all_with(s, ServerQuirks::default());
}

/// [`run_all`] for a backend tested against a server with known quirks.
pub fn run_all_with(s: &dyn Storage, quirks: ServerQuirks) {
    let ns = fresh_namespace();
    invalid_keys_are_rejected(s);
    round_trips(s, &ns);
    missing_keys(s, &ns);
    if !quirks.directories_look_like_objects {
        prefixes_are_not_objects(s, &ns);
    }
    overwrite_replaces(s, &ns);
    ranges(s, &ns);
    listing(s, &ns);
    delete_is_idempotent(s, &ns);
    concurrent_puts(s, &ns);
    cleanup(s, &ns);
}

/// A prefix no earlier run used, so leftovers of a crashed run never
/// confuse this one.
pub fn fresh_namespace() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("conformance-{:016x}", h.finish())
}

/// Deterministic bytes that differ per `seed` and show no short period, so
/// a shifted or truncated read cannot pass by accident.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

const INVALID_KEYS: &[&str] = &[
    "../x", "/abs", "a//b", "", "a/", "a/../b", "a/./b", ".", "..", "a b", "a\\b", "ä", "x~",
];

pub fn invalid_keys_are_rejected(s: &dyn Storage) {
    for &key in INVALID_KEYS {
        let invalid = |what: &str, r: Result<(), StorageError>| match r {
            Err(StorageError::InvalidKey(k)) => assert_eq!(k, key),
            other => panic!("{what}({key:?}) must be InvalidKey, got {other:?}"),
        };
        invalid("put", s.put(key, b"x"));
        invalid("get", s.get(key).map(drop));
        invalid("get_range", s.get_range(key, 0, 1).map(drop));
        invalid("size", s.size(key).map(drop));
        invalid("delete", s.delete(key));
    }
    for prefix in ["../", "/abs", "a//", "a/../", "/"] {
        match s.list(prefix) {
            Err(StorageError::InvalidKey(_)) => {}
            other => panic!("list({prefix:?}) must be InvalidKey, got {other:?}"),
        }
    }
}

pub fn round_trips(s: &dyn Storage, ns: &str) {
    let cases: [(&str, Vec<u8>); 4] = [
        ("empty", Vec::new()),
        ("one", vec![0x42]),
        ("small", pattern(1, 4096 + 17)),
        ("big", pattern(2, 20 << 20)),
    ];
    for (name, data) in &cases {
        let key = format!("{ns}/rt/{name}");
        s.put(&key, data)
            .unwrap_or_else(|e| panic!("put {key} ({} bytes): {e}", data.len()));
        let back = s.get(&key).unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert!(
            back == *data,
            "get {key} returned {} bytes that differ from the {} put",
            back.len(),
            data.len()
        );
        assert_eq!(
            s.size(&key).unwrap_or_else(|e| panic!("size {key}: {e}")),
            Some(data.len() as u64),
            "size of {key}"
        );
    }
    let big = &cases[3].1;
    let (off, len) = ((10 << 20) - 3, (1 << 20) + 7);
    let got = s
        .get_range(&format!("{ns}/rt/big"), off as u64, len as u64)
        .unwrap_or_else(|e| panic!("get_range in the 20 MiB object: {e}"));
    assert!(
        got == big[off..off + len],
        "range of the 20 MiB object differs"
    );
    let listed = listing_of(s, &format!("{ns}/rt/"));
    let expected: BTreeMap<String, u64> = cases
        .iter()
        .map(|(n, d)| (format!("{ns}/rt/{n}"), d.len() as u64))
        .collect();
    assert_eq!(listed, expected, "list of {ns}/rt/ (sizes included)");
}

pub fn missing_keys(s: &dyn Storage, ns: &str) {
    let key = format!("{ns}/missing/nothing-here");
    assert_not_found(s.get(&key), "get of a missing key");
    assert_not_found(s.get_range(&key, 0, 1), "get_range of a missing key");
    assert_not_found(s.get_range(&key, 0, 0), "empty get_range of a missing key");
    assert_eq!(s.size(&key).ok(), Some(None), "size of a missing key");
}

pub fn prefixes_are_not_objects(s: &dyn Storage, ns: &str) {
    // A "directory" that only exists because an object lies below it is
    // not an object itself.
    s.put(&format!("{ns}/missing/dir/x"), b"x")
        .unwrap_or_else(|e| panic!("put: {e}"));
    let dir = format!("{ns}/missing/dir");
    assert_not_found(s.get(&dir), "get of a key that is only a prefix of others");
    assert_eq!(s.size(&dir).ok(), Some(None), "size of a prefix-only key");
}

pub fn overwrite_replaces(s: &dyn Storage, ns: &str) {
    let key = format!("{ns}/overwrite/k");
    s.put(&key, b"the first, longer version")
        .unwrap_or_else(|e| panic!("put: {e}"));
    s.put(&key, b"second")
        .unwrap_or_else(|e| panic!("overwrite: {e}"));
    assert_eq!(
        s.get(&key).ok().as_deref(),
        Some(&b"second"[..]),
        "get after overwrite"
    );
    assert_eq!(s.size(&key).ok(), Some(Some(6)), "size after overwrite");
    assert_eq!(
        listing_of(s, &format!("{ns}/overwrite/")),
        BTreeMap::from([(key.clone(), 6)]),
        "list after overwrite"
    );
}

pub fn ranges(s: &dyn Storage, ns: &str) {
    let key = format!("{ns}/range/k");
    let data = pattern(3, 1000);
    s.put(&key, &data).unwrap_or_else(|e| panic!("put: {e}"));
    for (off, len) in [
        (0u64, 1000u64),
        (0, 1),
        (999, 1),
        (100, 200),
        (0, 0),
        (1000, 0),
        (500, 0),
    ] {
        let got = s
            .get_range(&key, off, len)
            .unwrap_or_else(|e| panic!("get_range({off}, {len}): {e}"));
        let (o, l) = (off as usize, len as usize);
        assert!(
            got == data[o..o + l],
            "get_range({off}, {len}) returned wrong bytes"
        );
    }
    for (off, len) in [
        (500u64, 501u64),
        (999, 2),
        (1000, 1),
        (2000, 10),
        (1001, 0),
        (u64::MAX, 2),
    ] {
        assert_permanent(
            s.get_range(&key, off, len),
            &format!("get_range({off}, {len}) of 1000 bytes"),
        );
    }
    let empty = format!("{ns}/range/empty");
    s.put(&empty, b"").unwrap_or_else(|e| panic!("put: {e}"));
    assert_eq!(
        s.get_range(&empty, 0, 0).ok(),
        Some(Vec::new()),
        "empty range of an empty object"
    );
    assert_permanent(
        s.get_range(&empty, 0, 1),
        "get_range(0, 1) of an empty object",
    );
}

pub fn listing(s: &dyn Storage, ns: &str) {
    let base = format!("{ns}/list");
    let objects = [
        ("a/1", 1usize),
        ("a/2", 2),
        ("b/1", 3),
        ("ab", 4),
        ("a/deep/er/x", 5),
    ];
    for (name, len) in objects {
        s.put(&format!("{base}/{name}"), &pattern(len as u64, len))
            .unwrap_or_else(|e| panic!("put: {e}"));
    }
    let want = |names: &[&str]| -> BTreeMap<String, u64> {
        objects
            .iter()
            .filter(|(n, _)| names.contains(n))
            .map(|(n, l)| (format!("{base}/{n}"), *l as u64))
            .collect()
    };
    let all = ["a/1", "a/2", "b/1", "ab", "a/deep/er/x"];
    assert_eq!(
        listing_of(s, &format!("{base}/")),
        want(&all),
        "recursive list"
    );
    assert_eq!(
        listing_of(s, &format!("{base}/a/")),
        want(&["a/1", "a/2", "a/deep/er/x"]),
        "list of a/"
    );
    assert_eq!(
        listing_of(s, &format!("{base}/a")),
        want(&["a/1", "a/2", "ab", "a/deep/er/x"]),
        "list by a partial name"
    );
    assert_eq!(
        listing_of(s, &format!("{base}/b/1")),
        want(&["b/1"]),
        "list by a whole key"
    );
    assert!(
        listing_of(s, &format!("{base}/zzz/")).is_empty(),
        "list of a missing directory"
    );
    assert!(
        listing_of(s, &format!("{base}/zzz")).is_empty(),
        "list of a missing name"
    );
    assert!(
        listing_of(s, &format!("{ns}-missing/")).is_empty(),
        "list of a missing top-level prefix"
    );
    let everything = listing_of(s, "");
    let mine: BTreeMap<String, u64> = everything
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{base}/")))
        .collect();
    assert_eq!(mine, want(&all), "list(\"\") must include every object");

    // Read-after-write: a put that returned is listed at once.
    for i in 0..5 {
        let key = format!("{base}/raw/{i}");
        s.put(&key, b"new").unwrap_or_else(|e| panic!("put: {e}"));
        assert_eq!(
            listing_of(s, &format!("{base}/raw/")).get(&key),
            Some(&3),
            "{key} must be listed right after its put returned"
        );
    }
}

pub fn delete_is_idempotent(s: &dyn Storage, ns: &str) {
    let key = format!("{ns}/delete/k");
    s.put(&key, b"doomed")
        .unwrap_or_else(|e| panic!("put: {e}"));
    s.delete(&key).unwrap_or_else(|e| panic!("delete: {e}"));
    assert_not_found(s.get(&key), "get after delete");
    assert_eq!(s.size(&key).ok(), Some(None), "size after delete");
    s.delete(&key)
        .unwrap_or_else(|e| panic!("second delete must be Ok: {e}"));
    s.delete(&format!("{ns}/delete/never/existed"))
        .unwrap_or_else(|e| panic!("delete of a never-existing key must be Ok: {e}"));
}

pub fn concurrent_puts(s: &dyn Storage, ns: &str) {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = 6;
    let shared_key = format!("{ns}/conc/shared");
    let shared = pattern(99, 300_000);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (shared_key, shared) = (&shared_key, &shared);
            scope.spawn(move || {
                for i in 0..PER_THREAD {
                    let key = format!("{ns}/conc/t{t}/{i}");
                    s.put(&key, &pattern(t * 100 + i, 200_000 + i as usize))
                        .unwrap_or_else(|e| panic!("concurrent put {key}: {e}"));
                    // Every thread also rewrites one key with identical
                    // content, as the repository does.
                    s.put(shared_key, shared)
                        .unwrap_or_else(|e| panic!("concurrent put {shared_key}: {e}"));
                }
            });
        }
    });
    for t in 0..THREADS {
        for i in 0..PER_THREAD {
            let key = format!("{ns}/conc/t{t}/{i}");
            let got = s.get(&key).unwrap_or_else(|e| panic!("get {key}: {e}"));
            assert!(
                got == pattern(t * 100 + i, 200_000 + i as usize),
                "{key} differs"
            );
        }
    }
    let got = s
        .get(&shared_key)
        .unwrap_or_else(|e| panic!("get {shared_key}: {e}"));
    assert!(got == shared, "the concurrently rewritten key differs");
    let listed = listing_of(s, &format!("{ns}/conc/"));
    assert_eq!(
        listed.len() as u64,
        THREADS * PER_THREAD + 1,
        "objects after concurrent puts: {listed:?}"
    );
}

/// Deletes everything the suite wrote.
pub fn cleanup(s: &dyn Storage, ns: &str) {
    let prefix = format!("{ns}/");
    for key in listing_of(s, &prefix).into_keys() {
        s.delete(&key)
            .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    }
    assert!(
        listing_of(s, &prefix).is_empty(),
        "objects left after cleanup"
    );
}

fn listing_of(s: &dyn Storage, prefix: &str) -> BTreeMap<String, u64> {
    let entries = s
        .list(prefix)
        .unwrap_or_else(|e| panic!("list {prefix:?}: {e}"));
    let n = entries.len();
    let map: BTreeMap<String, u64> = entries.into_iter().map(|e| (e.key, e.size)).collect();
    assert_eq!(map.len(), n, "list {prefix:?} returned a key twice");
    map
}

/// Fails unless `r` is [`StorageError::NotFound`].
pub fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StorageError>, what: &str) {
    match r {
        Err(e) if e.is_not_found() => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

/// Fails unless `r` is an Io error that retrying cannot fix (a range past
/// the end, a root that is not a folder).
pub fn assert_permanent<T>(r: Result<T, StorageError>, what: &str) {
    match r {
        Err(StorageError::Io {
            retryable: false, ..
        }) => {}
        Err(e) => panic!("{what}: expected a permanent Io error, got {e:?}"),
        Ok(_) => panic!("{what}: expected an error, got a value"),
    }
}
