//! Damage at rest: bits flipped in stored packs, index files, snapshots,
//! key files and the config. Verify must name every damaged object, and
//! restore must fail exactly the files whose data is damaged, with a clear
//! message and exit code 4, while everything else restores byte for byte.
//!
//! Which stored bytes belong to which file is worked out without the key:
//! a "victim" file smaller than the minimum chunk size (256 KiB) is one
//! blob of `size + 41` bytes (flag byte, nonce, tag; random data is stored
//! uncompressed), backed up alone, so its backup writes one pack holding
//! that blob and a few small tree blobs. Whatever order the blobs took,
//! the bytes from `trees` to `size + 41` of that pack (where `trees` is
//! the blob area's size less the victim's blob) lie inside the victim's
//! blob.

use super::support::{str_of, tidemark, workdir};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use test_support::tree::{self, Fill, TreeSpec};
use test_support::{
    compare_trees, exit, flip_bit, restored_path, CompareOptions, PackTail, RepoDir, TestRng,
    Tidemark,
};

/// Bytes a stored blob adds to its content: compression flag, nonce, tag.
const BLOB_OVERHEAD: u64 = 1 + 24 + 16;

/// The objects one backup added to the repository.
#[derive(Debug)]
struct Added {
    snapshot: String,
    packs: Vec<(String, PathBuf)>,
    index: Vec<(String, PathBuf)>,
    snapshot_file: (String, PathBuf),
}

fn backup_and_collect(tm: &Tidemark, repo: &RepoDir, paths: &[&Path]) -> Added {
    let (packs, index, snaps) = (repo.packs(), repo.index_files(), repo.snapshot_files());
    let report = tm.backup(paths, &[]);
    let new = |before: &BTreeMap<String, PathBuf>,
               after: BTreeMap<String, PathBuf>|
     -> Vec<(String, PathBuf)> {
        after
            .into_iter()
            .filter(|(k, _)| !before.contains_key(k))
            .collect()
    };
    let snapshot_files = new(&snaps, repo.snapshot_files());
    assert_eq!(snapshot_files.len(), 1, "one backup, one snapshot file");
    Added {
        snapshot: str_of(&report["snapshot"]).to_string(),
        packs: new(&packs, repo.packs()),
        index: new(&index, repo.index_files()),
        snapshot_file: snapshot_files.into_iter().next().expect("checked above"),
    }
}

/// A random file of `size` bytes (under the 256 KiB minimum chunk size).
fn victim(dir: &Path, name: &str, rng: &mut TestRng) -> (PathBuf, u64) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let size = rng.gen_range(100 * 1024..240 * 1024);
    let p = dir.join(name);
    tree::write_file(&p, Fill::Random, size, rng).expect("write victim");
    (p, size)
}

/// Flips one random bit inside the victim's blob in the one pack its
/// backup wrote; returns the pack's storage key.
fn damage_victim(added: &Added, size: u64, rng: &mut TestRng) -> String {
    assert_eq!(
        added.packs.len(),
        1,
        "a lone small file and its trees fit one pack: {added:?}"
    );
    let (key, path) = &added.packs[0];
    let tail = PackTail::read(path).expect("a whole pack");
    let sealed = size + BLOB_OVERHEAD;
    assert!(
        tail.blobs >= 2 && tail.blobs_end > sealed,
        "pack {key} should hold the victim and its trees: {tail:?}"
    );
    let trees = tail.blobs_end - sealed;
    assert!(
        trees < sealed,
        "trees of {trees} bytes leave no region that is surely the victim's"
    );
    flip_bit(path, rng.gen_range(trees..sealed), rng.gen_range(0..8)).expect("flip");
    key.clone()
}

/// Flips one random bit anywhere in the file.
fn damage_anywhere(path: &Path, rng: &mut TestRng) {
    let len = std::fs::metadata(path).expect("stat").len();
    flip_bit(path, rng.gen_range(0..len), rng.gen_range(0..8)).expect("flip");
}

/// The objects a `verify --json` run names as damaged.
fn problem_objects(report: &serde_json::Value) -> BTreeSet<String> {
    report["report"]["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| str_of(&p["object"]).to_string())
        .collect()
}

#[test]
fn verify_and_restore_report_every_damaged_object() {
    let (mut rng, _) = test_support::test_rng("verify_and_restore_report_every_damaged_object");
    let work = workdir();
    let src = work.path().join("src");
    let (a, b, c, d, e) = (
        src.join("a"),
        src.join("b"),
        src.join("c"),
        src.join("d"),
        src.join("e"),
    );
    tree::generate(&a, &TreeSpec::small(), &mut rng).expect("tree a");
    let (victim1, size1) = victim(&b, "victim-1.bin", &mut rng);
    let (victim2, size2) = victim(&c, "victim-2.bin", &mut rng);
    tree::generate(&d, &TreeSpec::small(), &mut rng).expect("tree d");
    tree::generate(
        &e,
        &TreeSpec {
            groups: vec![tree::FileGroup::new(6, Fill::Text, 1000..50_000)],
            ..TreeSpec::small()
        },
        &mut rng,
    )
    .expect("tree e");

    let tm = tidemark(work.path());
    tm.init(Some(1));
    let repo = RepoDir::new(&tm.repo);
    let _s1 = backup_and_collect(&tm, &repo, &[&a]);
    let s2 = backup_and_collect(&tm, &repo, &[&b]);
    let s3 = backup_and_collect(&tm, &repo, &[&c]);
    let s4 = backup_and_collect(&tm, &repo, &[&d]);
    let s5 = backup_and_collect(&tm, &repo, &[&e]);
    // Reuses every chunk and folder tree above: only its top trees are new.
    let s6 = backup_and_collect(&tm, &repo, &[&a, &b, &c]);

    let mut damaged = vec![
        damage_victim(&s2, size1, &mut rng),
        damage_victim(&s3, size2, &mut rng),
    ];
    let (key, path) = s4.packs.choose(&mut rng).expect("backup d wrote packs");
    damage_anywhere(path, &mut rng);
    damaged.push(key.clone());
    assert_eq!(s5.index.len(), 1, "a small backup writes one index file");
    damage_anywhere(&s5.index[0].1, &mut rng);
    damaged.push(s5.index[0].0.clone());
    damage_anywhere(&s5.snapshot_file.1, &mut rng);
    damaged.push(s5.snapshot_file.0.clone());
    println!("damaged: {damaged:#?}");

    let mut failures = Vec::new();
    // The cache that the backups filled (what a user has), then none (a second machine).
    for (label, t) in [
        ("with the local cache", tm.clone()),
        (
            "with an empty cache",
            tm.with_cache(work.path().join("cold-cache")),
        ),
    ] {
        let out = t.run(&["verify", "--read-data", "--json"]);
        if out.code != Some(exit::DAMAGE) {
            failures.push(format!(
                "verify {label} exited {:?}, expected {}\n{}",
                out.code,
                exit::DAMAGE,
                out.printed()
            ));
            continue;
        }
        let report = out.json();
        let named = problem_objects(&report);
        for obj in &damaged {
            if !named.contains(obj) {
                failures.push(format!(
                    "verify {label} does not name the damaged {obj}; it named {named:?}"
                ));
            }
        }
        if report["ok"] != false {
            failures.push(format!("verify {label} says ok: {report}"));
        }
    }

    // The victim alone: exit 4, the file named with a clear reason, nothing left behind.
    let target = work.path().join("restore-victim");
    let spec = format!("{}:{}", s2.snapshot, victim1.display());
    let out = tm.restore(&spec, &target, &[]);
    if out.code == Some(exit::DAMAGE) {
        let errors = out.json()["report"]["errors"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let named = errors.iter().any(|e| {
            e["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("victim-1.bin"))
        });
        let clear = errors
            .iter()
            .all(|e| e["message"].as_str().is_some_and(|m| m.contains("corrupt")));
        if errors.len() != 1 || !named || !clear {
            failures.push(format!(
                "restore of the damaged file should report exactly it as corrupt, got {errors:?}"
            ));
        }
        if restored_path(&target, &victim1).exists() {
            failures.push("restore left a file whose data is damaged in the target".into());
        }
    } else {
        failures.push(format!(
            "restore of a file with a damaged chunk exited {:?}, expected {}\n{}",
            out.code,
            exit::DAMAGE,
            out.printed()
        ));
    }
    let text = tm.run(&[
        "restore",
        spec.as_str(),
        "--target",
        work.path()
            .join("restore-victim-text")
            .to_str()
            .expect("utf-8"),
    ]);
    if text.code != Some(exit::DAMAGE)
        || !text.stdout.contains("FAILED")
        || !text.stdout.contains("victim-1.bin")
    {
        failures.push(format!(
            "the text report of a failed restore should say FAILED and name the file\n{}",
            text.printed()
        ));
    }
    let cat = tm.run(&["cat", spec.as_str()]);
    if cat.code == Some(0) || !cat.stderr.contains("corrupt") {
        failures.push(format!(
            "cat of a damaged file should fail and say it is corrupt\n{}",
            cat.printed()
        ));
    }

    // A snapshot with both victims and a healthy tree: only the victims fail.
    let target = work.path().join("restore-all");
    let out = tm.restore(&s6.snapshot, &target, &[]);
    if out.code == Some(exit::DAMAGE) {
        let mut failed: Vec<String> = out.json()["report"]["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                str_of(&e["path"])
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        failed.sort();
        if failed != ["victim-1.bin", "victim-2.bin"] {
            failures.push(format!("restore of the whole snapshot should fail exactly the two victims, failed {failed:?}"));
        }
    } else {
        failures.push(format!(
            "restore of a snapshot with two damaged files exited {:?}, expected {}\n{}",
            out.code,
            exit::DAMAGE,
            out.printed()
        ));
    }
    for (dir, missing) in [(&a, None), (&b, Some(&victim1)), (&c, Some(&victim2))] {
        let expect_missing = missing
            .map(|v| PathBuf::from(v.file_name().expect("named")))
            .into_iter()
            .collect();
        let diffs = compare_trees(
            dir,
            &restored_path(&target, dir),
            &CompareOptions {
                expect_missing,
                ..Default::default()
            },
        );
        if !diffs.is_empty() {
            failures.push(format!(
                "the restored {} differs from the source:\n  {}",
                dir.display(),
                diffs.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A damaged index file must not hide damage in the packs it listed: their
/// data is what the snapshots use, and the next backup would re-index them
/// from their trailers and keep deduplicating against the damaged chunks.
#[test]
fn verify_reads_packs_whose_index_file_is_damaged() {
    let (mut rng, _) = test_support::test_rng("verify_reads_packs_whose_index_file_is_damaged");
    let work = workdir();
    let (v, size) = victim(&work.path().join("src"), "victim.bin", &mut rng);
    let tm = tidemark(work.path());
    tm.init(Some(1));
    let repo = RepoDir::new(&tm.repo);
    let added = backup_and_collect(&tm, &repo, &[v.parent().expect("in src")]);
    let pack = damage_victim(&added, size, &mut rng);
    assert_eq!(added.index.len(), 1);
    damage_anywhere(&added.index[0].1, &mut rng);
    // An empty cache, so the damaged index file is what verify reads.
    let out =
        tm.with_cache(work.path().join("cold-cache"))
            .run(&["verify", "--read-data", "--json"]);
    assert_eq!(out.code, Some(exit::DAMAGE), "{}", out.printed());
    let named = problem_objects(&out.json());
    assert!(
        named.contains(&added.index[0].0),
        "the damaged index file is not named: {named:?}"
    );
    assert!(named.contains(&pack), "the damaged pack {pack}, listed only in the damaged index file, is not named: {named:?}\n{}", out.printed());
}

#[test]
fn damaged_config_and_key_files_give_clear_errors() {
    let (mut rng, _) = test_support::test_rng("damaged_config_and_key_files_give_clear_errors");
    let work = workdir();
    let src = work.path().join("src");
    tree::generate(
        &src,
        &TreeSpec {
            groups: vec![tree::FileGroup::new(5, Fill::Text, 100..10_000)],
            symlinks: 1,
            ..TreeSpec::small()
        },
        &mut rng,
    )
    .expect("tree");
    let tm = tidemark(work.path());
    tm.init(None);
    tm.backup(&[&src], &[]);
    const SECOND: &str = "a second password for the same repository";
    tm.with_env("TIDEMARK_NEW_PASSWORD", SECOND)
        .ok(&["key", "add"]);
    let tm2 = tm.with_password(Some(SECOND));
    let repo = RepoDir::new(&tm.repo);

    // The config is sealed: any flipped bit fails authentication.
    let config = repo.root.join("config");
    let saved = std::fs::read(&config).expect("read config");
    damage_anywhere(&config, &mut rng);
    for t in [&tm, &tm2] {
        let out = t.run(&["snapshots"]);
        assert_eq!(out.code, Some(exit::ERROR), "{}", out.printed());
        assert!(
            out.stderr.contains("config") && out.stderr.contains("corrupt"),
            "the error should say the config is corrupt\n{}",
            out.printed()
        );
    }
    std::fs::write(&config, &saved).expect("restore config");
    tm.ok(&["snapshots"]);

    let keys = tm.json(&["key", "list"]);
    let current = keys
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["current"] == true)
        .expect("a current key");
    let key_path = repo.root.join("keys").join(str_of(&current["id"]));
    let saved = std::fs::read(&key_path).expect("read key");
    let text = String::from_utf8(saved.clone()).expect("key files are JSON");

    // A bit flipped in the wrapped master key, keeping it valid hex: the
    // password no longer opens it, which is all that can be told.
    let start = text
        .find("\"sealed_master\":\"")
        .expect("sealed_master field")
        + "\"sealed_master\":\"".len();
    let digits: Vec<usize> = text[start..]
        .bytes()
        .take_while(u8::is_ascii_hexdigit)
        .enumerate()
        .filter(|(_, b)| b.is_ascii_digit())
        .map(|(i, _)| start + i)
        .collect();
    flip_bit(
        &key_path,
        *digits.choose(&mut rng).expect("hex digits") as u64,
        0,
    )
    .expect("flip");
    let out = tm.run(&["snapshots"]);
    assert_eq!(out.code, Some(exit::WRONG_PASSWORD), "{}", out.printed());
    assert!(out.stderr.contains("password"), "{}", out.printed());
    tm2.ok(&["snapshots"]);

    // A bit flipped in the JSON structure: the key file is unreadable, and
    // the error says so rather than only blaming the password.
    std::fs::write(&key_path, &saved).expect("restore key");
    flip_bit(&key_path, 0, 0).expect("flip the opening brace");
    let out = tm.run(&["snapshots"]);
    assert_eq!(out.code, Some(exit::WRONG_PASSWORD), "{}", out.printed());
    assert!(
        out.stderr.contains("unreadable key file") && out.stderr.contains(str_of(&current["id"])),
        "the damaged key file is not named\n{}",
        out.printed()
    );
    tm2.ok(&["snapshots"]);
    std::fs::write(&key_path, &saved).expect("restore key");
    tm.ok(&["snapshots"]);
}
