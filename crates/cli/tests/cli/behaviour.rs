//! What a user sees: exit codes and messages for the common mistakes,
//! JSON output, browsing, excludes, files that cannot be read, restore's
//! conflict rules, forget and prune, keys, and locks.

use super::support::{str_of, tidemark, workdir};
use rand::seq::SliceRandom;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};
use test_support::tree::{self, FileGroup, Fill, MutateSpec, TreeSpec};
use test_support::{assert_same_tree, exit, restored_path, CompareOptions, RepoDir, Tidemark};

/// A few small files of each kind, for tests about behaviour, not volume.
fn tiny() -> TreeSpec {
    TreeSpec {
        dirs: 4,
        max_depth: 3,
        groups: vec![
            FileGroup::new(12, Fill::Text, 0..20_000),
            FileGroup::new(4, Fill::Random, 100..50_000),
            FileGroup::new(1, Fill::Sparse, 1 << 20..2 << 20),
        ],
        empty_files: 2,
        symlinks: 3,
        non_utf8_name: true,
    }
}

/// Every path below `root` (files, folders, symlinks) as `ls` prints it:
/// absolute, lossy UTF-8.
fn all_paths(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            out.insert(e.path().to_string_lossy().into_owned());
            if e.file_type().expect("file type").is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn ls_paths(tm: &Tidemark, args: &[&str]) -> BTreeSet<String> {
    let mut a = vec!["ls"];
    a.extend_from_slice(args);
    a.push("--json");
    tm.ok(&a)
        .json_lines()
        .iter()
        .map(|e| str_of(&e["path"]).to_string())
        .collect()
}

fn is_snapshot_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn exit_codes_and_messages_for_common_mistakes() {
    let work = workdir();
    let tm = tidemark(work.path());
    tm.init(None);

    let wrong = tm.with_password(Some("not the password"));
    let out = wrong.run(&["snapshots"]).expect_code(exit::WRONG_PASSWORD);
    assert!(
        out.stderr.contains("password"),
        "the error should mention the password\n{}",
        out.printed()
    );
    let out = wrong
        .run(&["snapshots", "--json"])
        .expect_code(exit::WRONG_PASSWORD);
    let v = out.json();
    assert_eq!(v["exit_code"], exit::WRONG_PASSWORD, "{v}");
    assert!(str_of(&v["error"]).contains("password"), "{v}");

    let pw_file = work.path().join("password.txt");
    std::fs::write(&pw_file, format!("{}\n", test_support::PASSWORD)).expect("write password file");
    tm.with_password(None).ok(&[
        OsStr::new("snapshots"),
        OsStr::new("--password-file"),
        pw_file.as_os_str(),
    ]);
    std::fs::write(&pw_file, "wrong\n").expect("write password file");
    tm.with_password(None)
        .with_env("TIDEMARK_PASSWORD_FILE", &pw_file)
        .run(&["snapshots"])
        .expect_code(exit::WRONG_PASSWORD);
    let out = tm
        .with_password(None)
        .run(&["snapshots"])
        .expect_code(exit::ERROR);
    assert!(out.stderr.contains("no password"), "{}", out.printed());

    for missing in [work.path().join("nothing-here"), work.path().to_path_buf()] {
        let out = tm
            .with_repo(&missing)
            .run(&["snapshots"])
            .expect_code(exit::NO_REPOSITORY);
        assert!(
            out.stderr.contains("no Tidemark repository") && out.stderr.contains("init"),
            "{}",
            out.printed()
        );
    }

    let out = tm
        .run(&["init", "--kdf-memory", "1024"])
        .expect_code(exit::ERROR);
    assert!(out.stderr.contains("already exists"), "{}", out.printed());
    tm.ok(&["init", "--if-missing"]);

    for usage in [
        &["restore"][..],
        &["frobnicate"],
        &["verify", "--subset", "10%"],
        &["restore", "latest", "--conflict", "maybe"],
    ] {
        tm.run(usage).expect_code(exit::USAGE);
    }
}

#[test]
fn backup_json_and_browsing() {
    let (mut rng, _) = test_support::test_rng("backup_json_and_browsing");
    let work = workdir();
    let src = work.path().join("src");
    let generated = tree::generate(&src, &tiny(), &mut rng).expect("tree");
    let tm = tidemark(work.path());
    tm.init(None);

    let first = tm.backup(&[&src], &[]);
    let id1 = str_of(&first["snapshot"]).to_string();
    assert!(is_snapshot_id(&id1), "{first}");
    assert_eq!(
        first["summary"]["files_new"],
        generated.files.len(),
        "{first}"
    );
    assert_eq!(first["errors"].as_array().map(Vec::len), Some(0), "{first}");
    let snaps = tm.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], id1.as_str());
    assert_eq!(
        snaps[0]["paths"],
        serde_json::json!([src.to_string_lossy()])
    );
    assert_eq!(snaps[0]["summary"]["total_files"], generated.files.len());

    // ls: everything below the backed-up folder, and one level with --flat.
    let src_str = src.to_string_lossy().into_owned();
    let listed: BTreeSet<String> = ls_paths(&tm, &["latest", &src_str])
        .into_iter()
        .filter(|p| p.starts_with(&format!("{src_str}/")))
        .collect();
    assert_eq!(listed, all_paths(&src));
    let flat = ls_paths(&tm, &["latest", &src_str, "--flat"]);
    let top: BTreeSet<String> = std::fs::read_dir(&src)
        .expect("read_dir")
        .flatten()
        .map(|e| e.path().to_string_lossy().into_owned())
        .collect();
    assert_eq!(flat, top);

    // cat: the exact bytes; a folder is refused.
    let utf8: Vec<&PathBuf> = generated
        .files
        .iter()
        .filter(|p| p.to_str().is_some())
        .collect();
    for rel in utf8.choose_multiple(&mut rng, 3) {
        let p = src.join(rel);
        let out = tm
            .command(&["cat", &format!("{id1}:{}", p.display())])
            .output()
            .expect("run cat");
        assert!(
            out.status.success(),
            "cat {}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == std::fs::read(&p).expect("read"),
            "cat {} printed other bytes",
            p.display()
        );
    }
    let out = tm.run(&["cat", &format!("{id1}:{src_str}")]);
    assert_ne!(
        out.code,
        Some(0),
        "cat of a folder should fail\n{}",
        out.printed()
    );

    // find: case-insensitive globs over names.
    let img = generated
        .files
        .iter()
        .find(|p| p.extension() == Some(OsStr::new("img")))
        .expect("the tree has an image");
    let found = tm.ok(&["find", "*.IMG", "--json"]).json_lines();
    assert!(
        found
            .iter()
            .any(|f| f["path"] == src.join(img).to_string_lossy().as_ref()
                && f["snapshot"] == id1.as_str()),
        "{found:?}"
    );

    // diff: what a mutation added, removed and changed.
    let spec = MutateSpec {
        new_files: vec![FileGroup::new(3, Fill::Text, 10..5000)],
        edit: 2,
        append: 1,
        delete: 2,
        new_dirs: 1,
        new_symlinks: 0,
        edit_below: u64::MAX,
    };
    let m = tree::mutate(&src, &spec, &mut rng).expect("mutate");
    let second = tm.backup(&[&src], &[]);
    let id2 = str_of(&second["snapshot"]).to_string();
    assert_eq!(
        second["parent"],
        id1.as_str(),
        "the second backup should name the first as its parent"
    );
    let diff = tm.json(&["diff", &id1, &id2]);
    let entries = diff.as_array().expect("diff --json is an array");
    let has = |kind: &str, rel: &Path| {
        entries
            .iter()
            .any(|e| e["kind"] == kind && e["path"] == src.join(rel).to_string_lossy().as_ref())
    };
    for rel in &m.added {
        assert!(
            has("added", rel),
            "diff misses added {}: {diff}",
            rel.display()
        );
    }
    for rel in &m.deleted {
        assert!(
            has("removed", rel),
            "diff misses removed {}: {diff}",
            rel.display()
        );
    }
    for rel in m.edited.iter().filter(|r| !m.deleted.contains(r)) {
        assert!(
            has("modified", rel),
            "diff misses modified {}: {diff}",
            rel.display()
        );
    }

    // `latest` is the newest snapshot of this host, not of another one.
    let other = work.path().join("elsewhere");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("x.txt"), "x").expect("write");
    let foreign = tm.backup(&[&other], &["--host", "another-machine"]);
    assert_eq!(
        tm.snapshots().last().expect("three snapshots")["hostname"],
        "another-machine"
    );
    let target = work.path().join("restore");
    tm.restore("latest", &target, &[]).ok();
    assert_same_tree(
        &src,
        &restored_path(&target, &src),
        &CompareOptions::default(),
    );
    assert!(
        !restored_path(&target, &other).exists(),
        "latest picked the other host's snapshot"
    );
    let target = work.path().join("restore-other");
    tm.restore("latest", &target, &["--host", "another-machine"])
        .ok();
    assert_same_tree(
        &other,
        &restored_path(&target, &other),
        &CompareOptions::default(),
    );
    assert!(is_snapshot_id(str_of(&foreign["snapshot"])));
}

#[test]
fn excludes_skip_what_they_match() {
    let work = workdir();
    let src = work.path().join("src");
    let files = [
        "keep.txt",
        "junk.tmp",
        "sub/keep.md",
        "sub/junk.tmp",
        "node_modules/pkg/index.js",
        "sub/node_modules/x.js",
        "secret/key.pem",
        "sub/secret/key.pem",
        "old.bak",
        "cache/blob.bin",
        "not-a-cache/blob.bin",
    ];
    for f in files {
        let p = src.join(f);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, f).expect("write");
    }
    std::fs::write(
        src.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    )
    .expect("tag");
    std::fs::write(
        src.join("not-a-cache/CACHEDIR.TAG"),
        "Signature: not the right one\n",
    )
    .expect("tag");
    let exclude_file = work.path().join("excludes.txt");
    std::fs::write(&exclude_file, "# comment\n\n*.bak\n").expect("write");
    let tm = tidemark(work.path());
    tm.init(None);

    let secret = format!("{}/secret", src.display());
    let args: Vec<&OsStr> = [
        OsStr::new("backup"),
        src.as_os_str(),
        OsStr::new("-e"),
        OsStr::new("*.tmp"),
        OsStr::new("--exclude"),
        OsStr::new("node_modules"),
        OsStr::new("-e"),
        OsStr::new(&secret),
        OsStr::new("--exclude-file"),
        exclude_file.as_os_str(),
        OsStr::new("--exclude-caches"),
        OsStr::new("--json"),
    ]
    .to_vec();
    tm.ok(&args);
    let listed = ls_paths(&tm, &["latest"]);
    let at = |rel: &str| format!("{}/{rel}", src.display());
    for kept in [
        "keep.txt",
        "sub/keep.md",
        "sub/secret/key.pem",
        "not-a-cache/blob.bin",
        "not-a-cache/CACHEDIR.TAG",
    ] {
        assert!(
            listed.contains(&at(kept)),
            "{kept} should be backed up: {listed:#?}"
        );
    }
    for gone in [
        "junk.tmp",
        "sub/junk.tmp",
        "node_modules",
        "sub/node_modules",
        "secret",
        "old.bak",
        "cache",
    ] {
        assert!(
            !listed.contains(&at(gone)),
            "{gone} should be excluded: {listed:#?}"
        );
    }
    let out = tm
        .run(&[
            OsStr::new("backup"),
            src.as_os_str(),
            OsStr::new("-e"),
            OsStr::new("["),
        ])
        .expect_code(exit::ERROR);
    assert!(out.stderr.contains("exclude pattern"), "{}", out.printed());
}

/// Root reads everything, so unreadable files are made by running the
/// backup without the capabilities that bypass file permissions.
#[test]
fn unreadable_files_are_reported_and_the_rest_is_stored() {
    let (mut rng, _) =
        test_support::test_rng("unreadable_files_are_reported_and_the_rest_is_stored");
    let work = workdir();
    let src = work.path().join("src");
    tree::generate(&src, &tiny(), &mut rng).expect("tree");
    let locked_file = src.join("locked.txt");
    std::fs::write(&locked_file, "you cannot read me").expect("write");
    let locked_dir = src.join("locked-dir");
    std::fs::create_dir(&locked_dir).expect("mkdir");
    std::fs::write(locked_dir.join("inner.txt"), "nor me").expect("write");
    for p in [&locked_file, &locked_dir] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).expect("chmod 000");
    }
    // As root, drop the capabilities that bypass permissions (setpriv is
    // part of util-linux); as anyone else, mode 000 is enough.
    let root = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata("/proc/self").expect("stat /proc/self"),
    ) == 0;
    let wrapper: Vec<&str> = if root {
        vec!["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    } else {
        Vec::new()
    };
    let probe = |program: &str, arg: &Path| {
        let mut cmd: Vec<&OsStr> = wrapper.iter().map(OsStr::new).collect();
        cmd.extend([OsStr::new(program), arg.as_os_str()]);
        std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .output()
            .expect("run the probe")
            .status
            .success()
    };
    assert!(
        probe("test", Path::new("/")),
        "the wrapper {wrapper:?} does not run programs"
    );
    assert!(!probe("cat", &locked_file), "a mode 000 file is still readable under {wrapper:?}: this test cannot make an unreadable file");

    let tm = tidemark(work.path());
    tm.init(None);
    let out = tm
        .wrapped(&wrapper)
        .run(&[OsStr::new("backup"), src.as_os_str(), OsStr::new("--json")])
        .expect_code(exit::PARTIAL_BACKUP);
    let report = out.json();
    assert!(is_snapshot_id(str_of(&report["snapshot"])), "{report}");
    let errors: BTreeSet<String> = report["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| str_of(&e["path"]).to_string())
        .collect();
    let expected: BTreeSet<String> = [&locked_file, &locked_dir]
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        errors, expected,
        "the unreadable file and folder should be reported: {report}"
    );
    assert_eq!(report["summary"]["errors"], 2, "{report}");

    let snaps = tm.snapshots();
    assert_eq!(
        snaps.len(),
        1,
        "the backup is stored despite the unreadable files"
    );
    let listed = ls_paths(&tm, &["latest"]);
    assert!(
        !listed.contains(&locked_file.to_string_lossy().into_owned()),
        "an unreadable file was stored"
    );
    let target = work.path().join("restore");
    tm.restore("latest", &target, &[]).ok();
    let missing = BTreeSet::from([
        PathBuf::from("locked.txt"),
        PathBuf::from("locked-dir/inner.txt"),
    ]);
    assert_same_tree(
        &src,
        &restored_path(&target, &src),
        &CompareOptions {
            expect_missing: missing,
            ..Default::default()
        },
    );
}

/// `restore SNAP:/abs/path` recreates that one path at `DIR/abs/path`,
/// like a whole restore would, and nothing beside it.
#[test]
fn restoring_one_path_puts_it_at_its_absolute_place() {
    let (mut rng, _) = test_support::test_rng("restoring_one_path_puts_it_at_its_absolute_place");
    let work = workdir();
    let src = work.path().join("src");
    let generated = tree::generate(&src, &tiny(), &mut rng).expect("tree");
    let tm = tidemark(work.path());
    tm.init(None);
    let id = str_of(&tm.backup(&[&src], &[])["snapshot"]).to_string();
    let file = src.join(
        generated
            .files
            .iter()
            .filter(|p| p.to_str().is_some())
            .collect::<Vec<_>>()
            .choose(&mut rng)
            .expect("files"),
    );
    let dir = src.join(generated.dirs.choose(&mut rng).expect("dirs"));
    for (label, path) in [("file", &file), ("folder", &dir)] {
        let target = work.path().join(format!("restore-{label}"));
        let out = tm
            .restore(&format!("{id}:{}", path.display()), &target, &[])
            .ok();
        let landed = restored_path(&target, path);
        assert!(
            landed.exists(),
            "the restored {label} is not at {}\n{}",
            landed.display(),
            out.printed()
        );
        let parent = landed.parent().expect("parent");
        let beside: BTreeSet<String> = std::fs::read_dir(parent)
            .expect("read_dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            beside.len(),
            1,
            "restoring one {label} put more than it beside it: {beside:?}"
        );
        assert_same_tree(path, &landed, &CompareOptions::default());
    }
}

#[test]
fn restore_conflict_rules() {
    let (mut rng, _) = test_support::test_rng("restore_conflict_rules");
    let work = workdir();
    let src = work.path().join("src");
    let generated = tree::generate(&src, &tiny(), &mut rng).expect("tree");
    let tm = tidemark(work.path());
    tm.init(None);
    tm.backup(&[&src], &[]);
    let target = work.path().join("restore");
    tm.restore("latest", &target, &[]).ok();
    let restored = restored_path(&target, &src);
    assert_same_tree(&src, &restored, &CompareOptions::default());

    let texts: Vec<&PathBuf> = generated
        .files
        .iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "txt" || e == "log" || e == "md")
        })
        .collect();
    let picked: Vec<&&PathBuf> = texts.choose_multiple(&mut rng, 2).collect();
    let (x, y) = (picked[0].as_path(), picked[1].as_path());
    let renamed = {
        let stem = x.file_stem().expect("stem").to_string_lossy();
        let ext = x.extension().expect("ext").to_string_lossy();
        restored.join(x.with_file_name(format!("{stem} (restored).{ext}")))
    };
    let edit = |content: &str| {
        std::fs::write(restored.join(x), content).expect("edit the restored copy");
    };

    // keep-both: the local edit stays, the snapshot's copy goes beside it.
    edit("a local edit that is longer than nothing");
    std::fs::remove_file(restored.join(y)).expect("delete");
    let report = tm
        .restore("latest", &target, &["--conflict", "keep-both"])
        .ok()
        .json();
    assert_eq!(
        std::fs::read_to_string(restored.join(x)).expect("read"),
        "a local edit that is longer than nothing"
    );
    assert!(
        std::fs::read(&renamed).expect("the restored copy beside the edit")
            == std::fs::read(src.join(x)).expect("read")
    );
    assert!(
        std::fs::read(restored.join(y)).expect("deleted file restored")
            == std::fs::read(src.join(y)).expect("read")
    );
    assert_eq!(
        report["report"]["renamed"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );

    // skip: the local edit stays and nothing is added.
    edit("a second local edit");
    std::fs::remove_file(&renamed).expect("delete");
    let report = tm
        .restore("latest", &target, &["--conflict", "skip"])
        .ok()
        .json();
    assert_eq!(
        std::fs::read_to_string(restored.join(x)).expect("read"),
        "a second local edit"
    );
    assert!(!renamed.exists(), "skip wrote a renamed copy");
    assert!(
        report["report"]["skipped"].as_u64().is_some_and(|n| n >= 1),
        "{report}"
    );

    // overwrite: the snapshot's copy replaces the edit, with its metadata.
    tm.restore("latest", &target, &["--conflict", "overwrite"])
        .ok();
    assert_same_tree(&src, &restored, &CompareOptions::default());
}

#[test]
fn forget_and_prune_keep_a_restorable_repository() {
    let (mut rng, _) = test_support::test_rng("forget_and_prune_keep_a_restorable_repository");
    let work = workdir();
    let src = work.path().join("src");
    tree::generate(&src, &tiny(), &mut rng).expect("tree");
    let tm = tidemark(work.path());
    tm.init(Some(1));
    let repo = RepoDir::new(&tm.repo);
    let spec = MutateSpec {
        new_files: vec![FileGroup::new(2, Fill::Random, 300_000..900_000)],
        edit: 2,
        append: 1,
        delete: 3,
        new_dirs: 1,
        new_symlinks: 1,
        edit_below: u64::MAX,
    };
    tm.backup(&[&src], &[]);
    for _ in 0..2 {
        // New data that only this round's snapshot will hold.
        let m = tree::mutate(&src, &spec, &mut rng).expect("mutate");
        tm.backup(&[&src], &[]);
        for rel in &m.added {
            std::fs::remove_file(src.join(rel)).expect("delete");
        }
    }
    let last = str_of(&tm.backup(&[&src], &[])["snapshot"]).to_string();
    assert_eq!(tm.snapshots().len(), 4);
    let before = repo.pack_bytes();
    tm.ok(&["forget", "--keep-last", "1", "--prune"]);
    let snaps = tm.snapshots();
    assert_eq!(snaps.len(), 1);
    assert_eq!(
        snaps[0]["id"],
        last.as_str(),
        "forget kept another snapshot than the newest"
    );
    let after = repo.pack_bytes();
    assert!(
        after < before,
        "prune freed nothing: {before} -> {after} bytes"
    );
    let v = tm
        .run(&["verify", "--read-data", "--json"])
        .expect_code(exit::OK)
        .json();
    assert_eq!(v["ok"], true, "{v}");
    let target = work.path().join("restore");
    tm.restore("latest", &target, &[]).ok();
    assert_same_tree(
        &src,
        &restored_path(&target, &src),
        &CompareOptions::default(),
    );
}

#[test]
fn keys_can_be_added_and_removed_but_not_the_one_in_use() {
    let (mut rng, _) =
        test_support::test_rng("keys_can_be_added_and_removed_but_not_the_one_in_use");
    let work = workdir();
    let src = work.path().join("src");
    tree::generate(&src, &tiny(), &mut rng).expect("tree");
    let tm = tidemark(work.path());
    tm.init(None);
    tm.backup(&[&src], &[]);
    const NEW: &str = "the new password";
    tm.with_env("TIDEMARK_NEW_PASSWORD", NEW)
        .ok(&["key", "add"]);
    let current = |t: &Tidemark| -> (String, usize) {
        let keys = t.json(&["key", "list"]);
        let keys = keys
            .as_array()
            .expect("key list --json is an array")
            .clone();
        let cur: Vec<&serde_json::Value> = keys.iter().filter(|k| k["current"] == true).collect();
        assert_eq!(cur.len(), 1, "exactly one key is in use: {keys:?}");
        (str_of(&cur[0]["id"]).to_string(), keys.len())
    };
    let (old_id, n) = current(&tm);
    assert_eq!(n, 2);
    let new = tm.with_password(Some(NEW));
    let (new_id, _) = current(&new);
    assert_ne!(old_id, new_id);

    let out = tm.run(&["key", "remove", &old_id]).expect_code(exit::ERROR);
    assert!(out.stderr.contains("key in use"), "{}", out.printed());
    assert_eq!(
        RepoDir::new(&tm.repo).key_files().len(),
        2,
        "a refused removal removed something"
    );

    new.ok(&["key", "remove", &old_id[..12]]);
    tm.run(&["snapshots"]).expect_code(exit::WRONG_PASSWORD);
    assert_eq!(current(&new), (new_id, 1));

    const THIRD: &str = "yet another password";
    new.with_env("TIDEMARK_NEW_PASSWORD", THIRD)
        .ok(&["key", "passwd"]);
    new.run(&["snapshots"]).expect_code(exit::WRONG_PASSWORD);
    let third = tm.with_password(Some(THIRD));
    let target = work.path().join("restore");
    third.restore("latest", &target, &[]).ok();
    assert_same_tree(
        &src,
        &restored_path(&target, &src),
        &CompareOptions::default(),
    );
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{sig} {} failed", child.id());
}

/// Polls until the repository has a lock; panics if `child` ends first.
fn wait_for_lock(repo: &RepoDir, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while repo.locks().is_empty() {
        assert!(
            child.try_wait().expect("poll").is_none(),
            "the backup ended before its lock was seen"
        );
        assert!(
            Instant::now() < deadline,
            "no lock appeared within a minute"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn live_locks_block_and_stale_locks_do_not() {
    let (mut rng, _) = test_support::test_rng("live_locks_block_and_stale_locks_do_not");
    let work = workdir();
    let src = work.path().join("src");
    // Enough data that a backup runs for a good fraction of a second.
    tree::generate(
        &src,
        &TreeSpec {
            groups: vec![FileGroup::new(6, Fill::Text, 3 << 20..5 << 20)],
            ..tiny()
        },
        &mut rng,
    )
    .expect("tree");
    let tm = tidemark(work.path());
    tm.init(Some(1));
    let repo = RepoDir::new(&tm.repo);
    let log = work.path().join("backup.log");

    // A live backup, frozen while it holds its lock: exclusive work must wait.
    let mut child = tm.spawn(&[OsStr::new("backup"), src.as_os_str()], &log);
    wait_for_lock(&repo, &mut child);
    signal(&child, "STOP");
    let frozen = child.try_wait().expect("poll").is_none() && !repo.locks().is_empty();
    let blocked = tm.run(&["prune"]);
    let forget = tm.run(&["forget", "--keep-last", "1"]);
    let unlock = tm.run(&["unlock", "--json"]);
    signal(&child, "CONT");
    let status = child.wait().expect("wait");
    assert!(
        frozen,
        "the backup finished before it could be frozen with its lock held"
    );
    let blocked = blocked.expect_code(exit::LOCKED);
    assert!(
        blocked.stderr.contains("locked") && blocked.stderr.contains(&child.id().to_string()),
        "the error should name the holder\n{}",
        blocked.printed()
    );
    forget.expect_code(exit::LOCKED);
    assert_eq!(
        unlock.ok().json()["removed"],
        0,
        "unlock removed a live process's lock"
    );
    assert!(
        status.success(),
        "the frozen backup failed after it was resumed: {status}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(repo.locks().is_empty(), "a finished backup left its lock");

    // A killed backup's lock is stale: exclusive work goes ahead, unlock removes it.
    let mut child = tm.spawn(
        &[OsStr::new("backup"), src.as_os_str(), OsStr::new("--force")],
        &log,
    );
    wait_for_lock(&repo, &mut child);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert_eq!(
        repo.locks().len(),
        1,
        "the killed backup should have left its lock"
    );
    tm.ok(&["prune"]);
    assert_eq!(tm.json(&["unlock"])["removed"], 1);
    assert!(repo.locks().is_empty());
    tm.run(&["verify", "--json"]).expect_code(exit::OK);
}

#[test]
fn find_versions_and_deleted_files_come_from_the_catalog() {
    let work = workdir();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("docs")).expect("mkdir");
    let a = src.join("docs/Plan.txt");
    let tm = tidemark(work.path());
    tm.init(None);
    std::fs::write(&a, "first draft").expect("write");
    std::fs::write(src.join("keep.md"), "stays").expect("write");
    let s1 = str_of(&tm.backup(&[&src], &[])["snapshot"]).to_string();
    std::fs::write(&a, "second draft, longer").expect("write");
    let s2 = str_of(&tm.backup(&[&src], &[])["snapshot"]).to_string();
    std::fs::remove_file(&a).expect("delete");
    let s3 = str_of(&tm.backup(&[&src], &[])["snapshot"]).to_string();
    let a_str = a.to_string_lossy().into_owned();

    let found = tm.ok(&["find", "plan.TXT", "--json"]).json_lines();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["path"], a_str.as_str());
    assert_eq!(found[0]["deleted"], true);
    assert_eq!(found[0]["versions"], 2);
    assert_eq!(found[0]["snapshot"], s2.as_str(), "last seen in the second");
    let deleted = tm.ok(&["find", "*", "--deleted", "--json"]).json_lines();
    let paths: BTreeSet<&str> = deleted.iter().filter_map(|h| h["path"].as_str()).collect();
    assert_eq!(paths, BTreeSet::from([a_str.as_str()]), "{deleted:?}");
    let present = tm
        .ok(&["find", "*.md", "-s", &s3[..8], "--json"])
        .json_lines();
    assert_eq!(present.len(), 1);
    assert!(tm
        .ok(&["find", "*.txt", "-s", &s3[..8], "--json"])
        .json_lines()
        .is_empty());

    let v = tm.ok(&["versions", &a_str, "--json"]).json_lines();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(
        (
            v[0]["first_snapshot"].as_str(),
            v[1]["first_snapshot"].as_str()
        ),
        (Some(s1.as_str()), Some(s2.as_str()))
    );
    assert_eq!(v[1]["size"], "second draft, longer".len());

    // Deleted, yet recoverable from the snapshot it lived in.
    let target = work.path().join("back");
    tm.ok(&[
        "restore",
        &format!("{s2}:{a_str}"),
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let restored = target.join(a.strip_prefix("/").expect("absolute"));
    assert_eq!(
        std::fs::read_to_string(&restored).expect("restored"),
        "second draft, longer"
    );

    // Thinning the second snapshot takes its version out of the catalog.
    tm.ok(&["forget", &s2]);
    let v = tm.ok(&["versions", &a_str, "--json"]).json_lines();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["last_snapshot"], s1.as_str());
    let found = tm.ok(&["find", "plan.txt", "--json"]).json_lines();
    assert_eq!(found[0]["snapshot"], s1.as_str());

    // Rebuilt from the repository, it answers the same.
    let stats = tm.ok(&["catalog", "--rebuild", "--json"]).json();
    assert_eq!(stats["snapshots"], 2, "{stats}");
    assert_eq!(
        tm.ok(&["find", "plan.txt", "--json"]).json_lines(),
        found,
        "a rebuilt catalog answers as the kept one"
    );
    // A bad pattern is a clear error.
    let out = tm.run(&["find", "[oops"]);
    assert_ne!(out.code, Some(0));
    assert!(
        out.printed().contains("bad search pattern"),
        "{}",
        out.printed()
    );
}

/// Backups after the first list only the folders whose metadata digest
/// changed (found before the key is unwrapped); every other folder's tree
/// is reused unwalked. Whatever happens on disk between backups must still
/// be in the next snapshot exactly.
#[test]
fn backups_that_reuse_unchanged_folders_restore_what_is_on_disk() {
    let (mut rng, _) =
        test_support::test_rng("backups_that_reuse_unchanged_folders_restore_what_is_on_disk");
    let work = workdir();
    let src = work.path().join("src");
    tree::generate(&src, &tiny(), &mut rng).expect("tree");
    let tm = tidemark(work.path());
    tm.init(None);
    tm.backup(&[&src], &[]);
    let states: Vec<_> = std::fs::read_dir(work.path().join("cache/folder-states"))
        .expect("the backup saved its folder states")
        .flatten()
        .collect();
    assert_eq!(states.len(), 1);

    // Nothing changed: nothing read, every file counted as unchanged.
    let v = tm.backup(&[&src], &[]);
    let s = &v["summary"];
    assert_eq!(s["bytes_read"], 0, "{v}");
    assert_eq!(s["files_unmodified"], s["total_files"], "{v}");

    let spec = MutateSpec {
        new_files: vec![FileGroup::new(2, Fill::Text, 10..5_000)],
        edit: 2,
        append: 1,
        delete: 2,
        new_dirs: 1,
        new_symlinks: 1,
        edit_below: u64::MAX,
    };
    let dirs = |root: &Path| -> Vec<PathBuf> {
        all_paths(root)
            .into_iter()
            .map(PathBuf::from)
            .filter(|p| p.is_dir() && !p.is_symlink())
            .collect()
    };
    for round in 0..5 {
        tree::mutate(&src, &spec, &mut rng).expect("mutate");
        // Changes that touch only metadata or only names.
        let ds = dirs(&src);
        let d = ds.choose(&mut rng).expect("a folder");
        let mode = if round % 2 == 0 { 0o700 } else { 0o755 };
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let files: Vec<PathBuf> = all_paths(&src)
            .into_iter()
            .map(PathBuf::from)
            .filter(|p| p.is_file() && !p.is_symlink())
            .collect();
        let f = files.choose(&mut rng).expect("a file");
        std::fs::rename(f, f.with_extension(format!("moved{round}"))).expect("rename");
        tm.backup(&[&src], &[]);
        let target = work.path().join(format!("restore{round}"));
        tm.restore("latest", &target, &[]).ok();
        assert_same_tree(
            &src,
            &restored_path(&target, &src),
            &CompareOptions::default(),
        );
    }
    // A backup that reads and lists everything again finds the same tree
    // below `src` (only its ancestors differ: the restores changed them).
    let last = str_of(&tm.snapshots().last().expect("snapshots")["id"]).to_string();
    let forced = tm.backup(&[&src], &["--force"]);
    let d = tm
        .ok(&["diff", &last, str_of(&forced["snapshot"]), "--json"])
        .json();
    let inside: Vec<_> = d
        .as_array()
        .expect("a diff list")
        .iter()
        .filter(|e| Path::new(str_of(&e["path"])).starts_with(&src))
        .collect();
    assert!(
        inside.is_empty(),
        "reused folders differ from a full walk: {inside:?}"
    );
}
