//! Engine tests through the library API on real files: round trips of
//! random trees, dedup after an edit, sparse files, and hostile
//! repositories that try to make restore write outside its target.

mod common;
use common::new_repo;

use crypto::Id;
use format::{BlobKind, NodeKind};
use proptest::prelude::*;
use repository::Repository;
use snapshot::{BackupOptions, Conflict, NoProgress, RestoreOptions, TreeLoader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn backup(repo: &Arc<Repository>, path: &Path) -> snapshot::BackupReport {
    let opts = BackupOptions {
        paths: vec![path.to_path_buf()],
        hostname: "test".into(),
        ..Default::default()
    };
    snapshot::backup(repo, &opts, &NoProgress).expect("backup")
}

fn restore_all(
    repo: &Repository,
    root: &Id,
    target: &Path,
) -> snapshot::Result<snapshot::RestoreReport> {
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        conflict: Conflict::Overwrite,
        workers: 2,
    };
    // A faithful round trip: owners and set-id bits as backed up.
    snapshot::restore_owned(
        repo,
        root,
        "/",
        &opts,
        snapshot::Owners::Snapshot,
        &NoProgress,
    )
}

/// Where `src` (absolute) lands under a restore target.
fn under(target: &Path, src: &Path) -> PathBuf {
    target.join(src.strip_prefix("/").expect("absolute"))
}

/// Compares two trees: kinds, bytes, symlink targets, permissions, mtimes.
fn assert_same_tree(a: &Path, b: &Path) {
    let ma = std::fs::symlink_metadata(a).expect("source");
    let mb =
        std::fs::symlink_metadata(b).unwrap_or_else(|e| panic!("{} missing: {e}", b.display()));
    assert_eq!(ma.file_type(), mb.file_type(), "{}", a.display());
    if !ma.file_type().is_symlink() {
        assert_eq!(
            ma.permissions().mode() & 0o7777,
            mb.permissions().mode() & 0o7777,
            "mode of {}",
            a.display()
        );
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {}",
            a.display()
        );
    }
    if ma.is_file() {
        assert!(
            std::fs::read(a).expect("read") == std::fs::read(b).expect("read"),
            "content of {}",
            a.display()
        );
    } else if ma.file_type().is_symlink() {
        assert_eq!(
            std::fs::read_link(a).expect("link"),
            std::fs::read_link(b).expect("link")
        );
    } else if ma.is_dir() {
        let names = |p: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(p)
                .expect("dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        assert_eq!(na, nb, "entries of {}", a.display());
        for n in na {
            assert_same_tree(&a.join(&n), &b.join(&n));
        }
    }
}

#[derive(Debug, Clone)]
enum Spec {
    Empty,
    Bytes(Vec<u8>),
    Text(usize),
    Random(usize, u64),
    Sparse(u64, Vec<u8>),
    Symlink(String),
    Dir,
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        Just(Spec::Empty),
        proptest::collection::vec(any::<u8>(), 1..300).prop_map(Spec::Bytes),
        (1usize..600_000).prop_map(Spec::Text),
        (1usize..3_000_000, any::<u64>()).prop_map(|(n, s)| Spec::Random(n, s)),
        (
            1u64..40_000_000,
            proptest::collection::vec(any::<u8>(), 0..50)
        )
            .prop_map(|(h, d)| Spec::Sparse(h, d)),
        "[a-z/.]{1,20}".prop_map(Spec::Symlink),
        Just(Spec::Dir),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9éüß✓ _-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn write_tree(root: &Path, entries: &[(Vec<String>, Spec, u32)]) {
    for (i, (dirs, spec, mode)) in entries.iter().enumerate() {
        let mut p = root.to_path_buf();
        for d in dirs {
            p.push(d);
            std::fs::create_dir_all(&p).expect("mkdir");
        }
        // A '.' is not in `name()`'s alphabet, so folders and entries never
        // take each other's names (a folder `e5` made before entry 5 once
        // failed CI), and every generated entry is written.
        p.push(format!("e.{i}"));
        match spec {
            Spec::Empty => std::fs::write(&p, b"").expect("write"),
            Spec::Bytes(b) => std::fs::write(&p, b).expect("write"),
            Spec::Text(n) => {
                std::fs::write(&p, "lorem ipsum dolor sit amet ".repeat(n / 27 + 1)).expect("write")
            }
            Spec::Random(n, seed) => {
                let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(*seed);
                let mut v = vec![0u8; *n];
                rand::RngCore::fill_bytes(&mut rng, &mut v);
                std::fs::write(&p, v).expect("write");
            }
            Spec::Sparse(hole, data) => {
                let f = std::fs::File::create(&p).expect("create");
                f.set_len(*hole).expect("hole");
                use std::io::{Seek, Write};
                let mut f = f;
                f.seek(std::io::SeekFrom::End(0)).expect("seek");
                f.write_all(data).expect("write");
            }
            Spec::Symlink(t) => std::os::unix::fs::symlink(t, &p).expect("symlink"),
            Spec::Dir => std::fs::create_dir(&p).expect("mkdir"),
        }
        if !matches!(spec, Spec::Symlink(_)) {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("chmod");
            let t = filetime::FileTime::from_unix_time(
                1_600_000_000 + i as i64 * 3607,
                (i as u32 * 7919) % 1_000_000_000,
            );
            filetime::set_file_mtime(&p, t).expect("mtime");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random trees back up and restore byte-identical with modes, times and
    /// symlinks, and a second backup of the unchanged tree reads nothing.
    #[test]
    fn random_trees_round_trip(
        entries in proptest::collection::vec(
            (proptest::collection::vec(name(), 0..3), spec(), prop_oneof![Just(0o644u32), Just(0o600), Just(0o755), Just(0o4755)]),
            0..25,
        )
    ) {
        let src = tempfile::tempdir().expect("tmp");
        let out = tempfile::tempdir().expect("tmp");
        write_tree(src.path(), &entries);
        // Directory mtimes change as entries are written; pin them last.
        let repo = new_repo();
        let first = backup(&repo, src.path());
        prop_assert!(first.errors.is_empty(), "{:?}", first.errors);
        let again = backup(&repo, src.path());
        prop_assert_eq!(again.snapshot.summary.bytes_read, 0, "unchanged files were read again");
        // The folder's own tree is identical; the root differs only by /tmp's times.
        let loader = TreeLoader::new(&repo);
        let path = src.path().to_string_lossy();
        let sub = |root: &Id| loader.resolve(root, &path).expect("resolve").subtree;
        prop_assert_eq!(sub(&again.snapshot.tree), sub(&first.snapshot.tree));
        let r = restore_all(&repo, &again.snapshot.tree, out.path()).expect("restore");
        prop_assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_same_tree(src.path(), &under(out.path(), src.path()));
    }
}

#[test]
fn non_utf8_names_round_trip() {
    use std::os::unix::ffi::OsStrExt;
    let src = tempfile::tempdir().expect("tmp");
    let out = tempfile::tempdir().expect("tmp");
    let weird = std::ffi::OsStr::from_bytes(b"caf\xe9 \xff.txt");
    std::fs::write(src.path().join(weird), b"latin-1 name").expect("write");
    let repo = new_repo();
    let snap = backup(&repo, src.path());
    restore_all(&repo, &snap.snapshot.tree, out.path()).expect("restore");
    assert_eq!(
        std::fs::read(under(out.path(), src.path()).join(weird)).expect("read"),
        b"latin-1 name"
    );
}

#[test]
fn insertion_in_the_middle_sends_only_the_chunks_around_it() {
    let src = tempfile::tempdir().expect("tmp");
    let mut data = vec![0u8; 24 << 20];
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    rand::RngCore::fill_bytes(&mut rng, &mut data);
    let file = src.path().join("big.bin");
    std::fs::write(&file, &data).expect("write");
    let repo = new_repo();
    let a = backup(&repo, src.path());
    data.splice(
        12 << 20..12 << 20,
        b"an insertion of a few bytes".iter().copied(),
    );
    std::fs::write(&file, &data).expect("write");
    let b = backup(&repo, src.path());
    let loader = TreeLoader::new(&repo);
    let path = file.to_string_lossy();
    let old = loader
        .resolve(&a.snapshot.tree, &path)
        .expect("old")
        .content;
    let new = loader
        .resolve(&b.snapshot.tree, &path)
        .expect("new")
        .content;
    let changed = new.iter().filter(|c| !old.contains(c)).count();
    assert!(
        old.len() >= 12,
        "expected ~24 chunks of ~1 MiB, got {}",
        old.len()
    );
    assert!(
        changed <= 2,
        "{changed} of {} chunks changed for a 27-byte insertion",
        new.len()
    );
    // The bytes sent are those chunks, not the file.
    assert!(
        b.snapshot.summary.bytes_new_raw < 9 << 20,
        "sent {} bytes",
        b.snapshot.summary.bytes_new_raw
    );
}

#[test]
fn sparse_files_stay_sparse() {
    let src = tempfile::tempdir().expect("tmp");
    let out = tempfile::tempdir().expect("tmp");
    let file = src.path().join("disk.img");
    {
        use std::io::{Seek, Write};
        let mut f = std::fs::File::create(&file).expect("create");
        f.write_all(b"boot sector").expect("write");
        f.seek(std::io::SeekFrom::Start(200 << 20)).expect("seek");
        f.write_all(b"data at 200 MiB").expect("write");
        f.set_len(300 << 20).expect("len");
    }
    let repo = new_repo();
    let snap = backup(&repo, src.path());
    assert!(
        snap.snapshot.summary.bytes_new_stored < 1 << 20,
        "zeros stored: {}",
        snap.snapshot.summary.bytes_new_stored
    );
    restore_all(&repo, &snap.snapshot.tree, out.path()).expect("restore");
    let restored = under(out.path(), &file);
    assert!(std::fs::read(&file).expect("read") == std::fs::read(&restored).expect("read"));
    let md = std::fs::metadata(&restored).expect("md");
    assert_eq!(md.len(), 300 << 20);
    assert!(
        md.blocks() * 512 < 16 << 20,
        "restored file allocates {} bytes",
        md.blocks() * 512
    );
}

#[test]
fn fifos_and_sockets_are_recorded_not_read() {
    let src = tempfile::tempdir().expect("tmp");
    let fifo = src.path().join("pipe");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(st.success());
    let _sock = std::os::unix::net::UnixListener::bind(src.path().join("sock")).expect("socket");
    std::fs::write(src.path().join("f"), b"x").expect("write");
    let repo = new_repo();
    // A backup that opened the FIFO would block here forever.
    let snap = backup(&repo, src.path());
    let loader = TreeLoader::new(&repo);
    let p = fifo.to_string_lossy();
    assert_eq!(
        loader.resolve(&snap.snapshot.tree, &p).expect("fifo").kind,
        NodeKind::Fifo
    );
}

/// Stores a hand-made tree (raw JSON, bypassing every check of the backup
/// path) and returns its id, as a hostile repository would.
fn store_raw_tree(
    repo: &Arc<Repository>,
    up: &repository::Uploader,
    json: serde_json::Value,
) -> Id {
    let bytes = serde_json::to_vec(&json).expect("json");
    let id = repo.content_id(&bytes);
    up.add(BlobKind::Tree, id, &bytes).expect("add");
    id
}

fn hostile_snapshot(
    nodes: impl FnOnce(&Arc<Repository>, &repository::Uploader, Id) -> serde_json::Value,
) -> (Arc<Repository>, Id) {
    let repo = new_repo();
    let up = repo.start_upload(Default::default()).expect("upload");
    let payload = repo.content_id(b"pwned");
    up.add(BlobKind::Data, payload, b"pwned").expect("add");
    let root_json = nodes(&repo, &up, payload);
    let root = store_raw_tree(&repo, &up, root_json);
    up.finish().expect("finish");
    (repo, root)
}

fn file_node(name: &str, payload: Id) -> serde_json::Value {
    serde_json::json!({"name": name, "kind": "file", "size": 5, "mode": 0o644, "mtime_ns": 0, "content": [payload]})
}

fn dir_node(name: &str, sub: Id) -> serde_json::Value {
    serde_json::json!({"name": name, "kind": "dir", "mode": 0o755, "mtime_ns": 0, "subtree": sub})
}

fn assert_nothing_escaped(sandbox: &Path) {
    let mut found = Vec::new();
    for e in walk(sandbox) {
        if e.file_name()
            .is_some_and(|n| n == "pwned" || n == "escaped")
            && !e.starts_with(sandbox.join("target"))
        {
            found.push(e);
        }
    }
    assert!(
        found.is_empty(),
        "restore wrote outside its target: {found:?}"
    );
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
        for e in std::fs::read_dir(p).expect("dir").flatten() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[test]
fn hostile_names_cannot_escape_the_target() {
    for bad in [
        "..",
        "../escaped",
        "a/../../escaped",
        "/tmp/escaped",
        "",
        ".",
    ] {
        let sandbox = tempfile::tempdir().expect("tmp");
        let target = sandbox.path().join("target");
        let (repo, root) = hostile_snapshot(|repo, up, payload| {
            let inner = store_raw_tree(
                repo,
                up,
                serde_json::json!({"nodes": [file_node("escaped", payload)]}),
            );
            serde_json::json!({"nodes": [dir_node(bad, inner), file_node("pwned", payload)]})
        });
        let r = restore_all(&repo, &root, &target);
        assert!(r.is_err(), "restore of a tree named {bad:?} succeeded");
        assert_nothing_escaped(sandbox.path());
    }
}

#[test]
fn duplicate_names_cannot_turn_a_symlink_into_a_path() {
    let sandbox = tempfile::tempdir().expect("tmp");
    let outside = sandbox.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    let target = sandbox.path().join("target");
    let (repo, root) = hostile_snapshot(|repo, up, payload| {
        let inner = store_raw_tree(
            repo,
            up,
            serde_json::json!({"nodes": [file_node("pwned", payload)]}),
        );
        serde_json::json!({"nodes": [
            {"name": "d", "kind": "symlink", "mode": 0o777, "mtime_ns": 0, "link_target": outside.to_string_lossy()},
            dir_node("d", inner),
        ]})
    });
    assert!(restore_all(&repo, &root, &target).is_err());
    assert!(
        std::fs::read_dir(&outside).expect("dir").next().is_none(),
        "wrote through a restored symlink"
    );
}

#[test]
fn existing_symlinks_in_the_target_are_never_followed() {
    let sandbox = tempfile::tempdir().expect("tmp");
    let outside = sandbox.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("victim"), b"precious").expect("write");
    let target = sandbox.path().join("target");
    std::fs::create_dir(&target).expect("mkdir");
    // target/d -> outside (a folder), target/f -> outside/victim (a file)
    std::os::unix::fs::symlink(&outside, target.join("d")).expect("symlink");
    std::os::unix::fs::symlink(outside.join("victim"), target.join("f")).expect("symlink");
    let (repo, root) = hostile_snapshot(|repo, up, payload| {
        let inner = store_raw_tree(
            repo,
            up,
            serde_json::json!({"nodes": [file_node("pwned", payload)]}),
        );
        serde_json::json!({"nodes": [dir_node("d", inner), file_node("f", payload)]})
    });
    for conflict in [Conflict::Overwrite, Conflict::KeepBoth, Conflict::Skip] {
        let opts = RestoreOptions {
            target: target.clone(),
            conflict,
            workers: 1,
        };
        let _ = snapshot::restore(&repo, &root, "/", &opts, &NoProgress);
        assert_eq!(
            std::fs::read(outside.join("victim")).expect("victim"),
            b"precious",
            "{conflict:?} wrote through a symlink"
        );
        assert!(
            !outside.join("pwned").exists(),
            "{conflict:?} wrote into a symlinked folder"
        );
    }
}
