//! Section 4 of issue 19 on the client: names that are not text a
//! terminal should see raw, restores that must not hand out privileges,
//! an empty password, and honest words about device nodes.

use super::support::{str_of, tidemark, workdir};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use test_support::cli::exit;

/// A name with a newline and a terminal escape sequence (red text).
const EVIL: &str = "a\nb\x1b[31m";

fn assert_no_control(what: &str, out: &str) {
    for (i, c) in out.char_indices() {
        assert!(
            c == '\n' || !c.is_control(),
            "{what} printed the raw control character {c:?} at byte {i}:\n{out:?}"
        );
    }
}

#[test]
fn control_characters_in_names_and_hosts_are_escaped_in_text_and_exact_in_json() {
    let work = workdir();
    let t = tidemark(work.path());
    t.init(None);
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join(EVIL), b"payload").unwrap();
    let host = "evil\nhost\x1b[2J";
    t.backup(&[&src], &["--host", host]);

    let snaps = t.ok(&["snapshots"]);
    assert_no_control("snapshots", &snaps.stdout);
    // Header, one row, the count: no fake row.
    assert_eq!(snaps.stdout.lines().count(), 3, "{}", snaps.stdout);
    assert!(
        snaps.stdout.contains("evil\\nhost\\x1b[2J"),
        "{}",
        snaps.stdout
    );
    assert_eq!(str_of(&t.snapshots()[0]["hostname"]), host);

    let id = str_of(&t.snapshots()[0]["short_id"]).to_string();
    let ls = t.ok(&["ls", &id]);
    assert_no_control("ls", &ls.stdout);
    assert!(ls.stdout.contains("a\\nb\\x1b[31m"), "{}", ls.stdout);
    let listed = t.run(&["ls", &id, "--json"]).ok().json_lines();
    let exact = format!("{}/{EVIL}", src.display());
    assert!(
        listed.iter().any(|e| str_of(&e["path"]) == exact),
        "ls --json keeps the exact name: {listed:?}"
    );

    let find = t.ok(&["find", "a*"]);
    assert_no_control("find", &find.stdout);
    assert_eq!(
        find.stdout.lines().count(),
        1,
        "one hit, one row: {}",
        find.stdout
    );
    let hits = t.run(&["find", "a*", "--json"]).ok().json_lines();
    assert_eq!(str_of(&hits[0]["path"]), exact);

    // Errors quote what the user gave and what the repository holds.
    let missing = t.run(&["ls", &format!("{id}:/no\x1b[31mpe")]);
    assert_eq!(missing.code, Some(exit::ERROR));
    assert_no_control("an error", &missing.stderr);
}

fn euid() -> u32 {
    std::fs::metadata("/proc/self").expect("/proc/self").uid()
}

#[track_caller]
fn require_root() {
    assert_eq!(
        euid(),
        0,
        "this test checks what a restore run as root does: run it as root (the test machines do)"
    );
}

#[test]
fn a_restore_as_root_drops_set_id_bits_and_keeps_owners_only_when_asked() {
    require_root();
    let work = workdir();
    let t = tidemark(work.path());
    t.init(None);
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let prog = src.join("prog");
    std::fs::write(&prog, b"#!/bin/sh\necho hi\n").unwrap();
    std::os::unix::fs::chown(&prog, Some(1234), Some(2345)).unwrap();
    // After chown, which clears set-id bits.
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o6755)).unwrap();
    let shared = src.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::chown(&shared, Some(1234), Some(2345)).unwrap();
    t.backup(&[&src], &[]);

    let plain = work.path().join("plain");
    t.ok(&["restore", "latest", "--target", plain.to_str().unwrap()]);
    let at = test_support::restored_path(&plain, &src);
    let md = std::fs::metadata(at.join("prog")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o755, "set-id bits dropped");
    assert_eq!((md.uid(), md.gid()), (0, 0), "owned by whoever restored");
    let md = std::fs::metadata(at.join("shared")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o1777, "the sticky bit stays");
    assert_eq!(md.uid(), 0);

    let owned = work.path().join("owned");
    t.ok(&[
        "restore",
        "latest",
        "--owners",
        "--target",
        owned.to_str().unwrap(),
    ]);
    let at = test_support::restored_path(&owned, &src);
    let md = std::fs::metadata(at.join("prog")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (1234, 2345),
        "--owners restores owners"
    );
    assert_eq!(md.mode() & 0o7777, 0o6755, "and their set-id bits");
    assert_eq!(std::fs::metadata(at.join("shared")).unwrap().uid(), 1234);
}

#[test]
fn an_admin_restore_of_another_user_needs_a_target() {
    let work = workdir();
    let t = tidemark(work.path());
    // Refused before any server is contacted: nothing listens here.
    let r = t.run(&[
        "--repo",
        "https://127.0.0.1:9/",
        "--as-user",
        "bob",
        "restore",
        "latest",
    ]);
    assert_eq!(r.code, Some(exit::ERROR), "{}", r.printed());
    assert!(r.stderr.contains("--target"), "{}", r.stderr);
}

#[test]
fn init_refuses_an_empty_password() {
    let work = workdir();
    let t = tidemark(work.path()).with_password(Some(""));
    let r = t.run(&["init", "--kdf-memory", "1024"]);
    assert_eq!(r.code, Some(exit::ERROR), "{}", r.printed());
    assert!(
        r.stderr.contains("TIDEMARK_PASSWORD is set but empty"),
        "{}",
        r.stderr
    );
    assert!(!t.repo.join("config").exists(), "no repository was made");
}

#[test]
fn skipped_device_nodes_are_reported_as_such() {
    require_root();
    let work = workdir();
    let t = tidemark(work.path());
    t.init(None);
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("file"), b"data").unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod (needs root)");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    t.backup(&[&src], &[]);
    let target = work.path().join("target");
    let r = t
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    assert!(
        !r.stdout.contains("left as they were"),
        "nothing existed at the target: {}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("2 device node(s), pipe(s) or socket(s) not restored"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("/null") && r.stdout.contains("/pipe"),
        "{}",
        r.stdout
    );
    let report = t
        .restore("latest", &work.path().join("t2"), &[])
        .ok()
        .json();
    assert_eq!(
        report["report"]["specials"].as_array().map(Vec::len),
        Some(2)
    );
}
