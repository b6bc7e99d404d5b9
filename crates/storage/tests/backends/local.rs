use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use storage::{conformance, open, LocalStorage, Storage};

#[test]
fn local_folder_keeps_the_contract() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("not/yet/there");
    let s = open(root.to_str().expect("utf-8 path")).expect("open");
    conformance::run_all(s.as_ref());
}

#[test]
fn file_url_opens_the_same_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = open(&format!("file://{}", tmp.path().display())).expect("open file://");
    s.put("a/b", b"x").expect("put");
    assert_eq!(std::fs::read(tmp.path().join("a/b")).expect("read"), b"x");
    assert_eq!(s.location(), tmp.path().display().to_string());
}

#[test]
fn a_missing_root_is_an_empty_repository_until_the_first_put() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("usb/backup");
    let s = LocalStorage::new(&root).expect("new");
    assert!(s.list("").expect("list").is_empty());
    assert!(s.list("packs/").expect("list").is_empty());
    assert!(s.get("config").expect_err("missing").is_not_found());
    assert!(s
        .get_range("config", 0, 1)
        .expect_err("missing")
        .is_not_found());
    assert_eq!(s.size("config").expect("size"), None);
    s.delete("config").expect("delete of a missing key");
    assert!(!root.exists(), "reads must not create the folder");
    s.put("packs/ab/ab12", b"pack").expect("put");
    assert_eq!(
        std::fs::read(root.join("packs/ab/ab12")).expect("read"),
        b"pack"
    );
}

#[test]
fn relative_paths_become_absolute() {
    let s = LocalStorage::new("some/relative/dir").expect("new");
    assert!(s.root().is_absolute());
    assert!(s.location().ends_with("some/relative/dir"));
}

#[test]
fn a_file_where_the_folder_should_be_is_a_permanent_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let s = LocalStorage::new(&file).expect("new");
    conformance::assert_permanent(s.get("k"), "get when the root is a file");
    assert!(s.put("k", b"x").is_err());
}

#[test]
fn temporary_and_foreign_files_are_never_listed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = LocalStorage::new(tmp.path()).expect("new");
    s.put("keys/k1", b"key").expect("put");
    // What a killed writer leaves behind, and files a user dropped in.
    let temp_dir = tmp.path().join(".tidemark-tmp~");
    assert!(
        temp_dir.is_dir(),
        "the temporary folder sits inside the root"
    );
    std::fs::write(temp_dir.join("k1.abc123"), b"partial").expect("write");
    std::fs::write(tmp.path().join("keys/notes.txt~"), b"x").expect("write");
    std::fs::write(tmp.path().join("keys/with space"), b"x").expect("write");
    let keys: Vec<String> = s
        .list("")
        .expect("list")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, vec!["keys/k1".to_string()]);
    assert_eq!(
        std::fs::read_dir(&temp_dir).expect("read temp dir").count(),
        1,
        "a finished put leaves no temporary file"
    );
}

/// Packs are written with direct I/O in aligned pieces plus a buffered tail;
/// every size around those edges must read back exactly, on a disk file
/// system and on tmpfs (which may refuse direct I/O and take the fallback).
#[test]
fn objects_of_every_size_around_the_alignment_edges_read_back_exactly() {
    const K: usize = 4096;
    const M: usize = 1 << 20;
    let sizes = [
        0,
        1,
        K - 1,
        K,
        K + 1,
        M - 1,
        M,
        M + 1,
        M + K,
        M + K + 17,
        4 * M - 1,
        4 * M,
        4 * M + K + 7,
        9 * M + 1,
    ];
    let disk = tempfile::tempdir().expect("tempdir");
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    let roots: Vec<&Path> = std::iter::once(disk.path())
        .chain(shm.as_ref().map(|d| d.path()))
        .collect();
    for root in roots {
        let s = LocalStorage::new(root).expect("new");
        for (i, &n) in sizes.iter().enumerate() {
            let key = format!("packs/{i:02}");
            let data = conformance::pattern(i as u64, n);
            s.put(&key, &data).expect("put");
            assert_eq!(s.get(&key).expect("get"), data, "{n} bytes under {root:?}");
            assert_eq!(s.size(&key).expect("size"), Some(n as u64));
            if n > 10 {
                let got = s.get_range(&key, 3, n as u64 - 10).expect("range");
                assert_eq!(got, data[3..n - 7], "range of {n} bytes under {root:?}");
            }
            // Replacing keeps the contract too (the same content, as the
            // repository only rewrites identical objects).
            s.put(&key, &data).expect("put again");
            assert_eq!(s.get(&key).expect("get"), data);
        }
        conformance::assert_permanent(
            s.get_range("packs/05", (M - 1) as u64, 2),
            "a range past the end",
        );
        conformance::assert_not_found(s.get("packs/missing"), "a missing key");
        conformance::assert_not_found(s.get("packs"), "a folder");
    }
}

/// Must match `crash_object` in src/bin/storage-crash-writer.rs.
fn crash_object(i: u64) -> Vec<u8> {
    conformance::pattern(i, 1_500_000 + (i as usize % 7) * 100_003)
}

#[test]
fn kill_9_never_leaves_a_partial_object() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = LocalStorage::new(tmp.path()).expect("new");
    let exe = env!("CARGO_BIN_EXE_storage-crash-writer");
    for round in 0..3u64 {
        let mut child = Command::new(exe)
            .arg(tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the writer");
        let start = Instant::now();
        let target = 3 + round * 4;
        while (s.list("objects/").expect("list").len() as u64) < target {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the writer made no progress"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Spread the kill over different points of a put.
        std::thread::sleep(Duration::from_millis(7 * round + 3));
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        for e in s.list("objects/").expect("list") {
            let got = s.get(&e.key).expect("get");
            assert_eq!(
                got.len() as u64,
                e.size,
                "{} listed with another size",
                e.key
            );
            let ok = if e.key == "objects/replaced" {
                got == crash_object(0) || got == crash_object(1)
            } else {
                let i: u64 = e
                    .key
                    .rsplit('/')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("name");
                got == crash_object(i)
            };
            assert!(ok, "round {round}: {} is partial or mixed", e.key);
        }
    }
    assert_eq!(
        count_files(&tmp.path().join("objects")),
        s.list("objects/").expect("list").len(),
        "files under objects/ that are not listed objects"
    );
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        count_files(&p)
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
