//! Folders nested deeper than any stack or PATH_MAX allows: a hostile
//! repository's trees nested 20,000 levels deep must get answers or clear
//! errors, never a stack overflow; a real folder 5,000 levels deep must make
//! the whole round trip byte for byte.

use super::support::{tidemark, workdir};
use repository::Repository;
use rustix::fs::{Mode, OFlags, CWD};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use test_support::cli::{exit, Outcome, PASSWORD};

/// A run ended by a signal (a stack overflow aborts with SIGABRT or
/// SIGSEGV) has no exit code.
#[track_caller]
fn no_abort(o: &Outcome) {
    assert!(
        o.code.is_some(),
        "`{}` was killed by a signal (a stack overflow?)\n{}",
        o.command,
        // The stdout of a deep listing is huge: its end says enough.
        tail(&o.printed(), 2000)
    );
}

/// The last `n` bytes of `s` or a little more (whole characters).
fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    &s[at..]
}

/// Stores `depth` nested single-entry trees named `d` with a file at the
/// bottom, straight through the repository API as a hostile repository
/// (or a stolen device) could, and a snapshot of them, and a snapshot of
/// an empty folder to compare it with. Returns their ids.
fn hostile_chain(repo_dir: &Path, depth: usize) -> (String, String) {
    let storage = storage::open(repo_dir.to_str().expect("utf-8 path")).expect("storage");
    let repo = Arc::new(
        Repository::open(
            storage,
            PASSWORD.as_bytes(),
            &repository::OpenOptions { cache_dir: None },
        )
        .expect("open"),
    );
    repo.load_index().expect("index");
    let up = repo.start_upload(Default::default()).expect("upload");
    let data = b"at the bottom";
    let chunk = repo.content_id(data);
    up.add(format::BlobKind::Data, chunk, data)
        .expect("add chunk");
    let mut file = format::Node::new(
        format::EntryName::new(b"bottom.txt".to_vec()),
        format::NodeKind::File,
        0o644,
    );
    file.size = data.len() as u64;
    file.content = vec![chunk];
    let mut tree = format::Tree { nodes: vec![file] };
    let mut id;
    let mut level = 0;
    loop {
        let bytes = format::to_json(&tree);
        id = repo.content_id(&bytes);
        up.add(format::BlobKind::Tree, id, &bytes)
            .expect("add tree");
        level += 1;
        if level == depth {
            break;
        }
        let mut dir = format::Node::new(
            format::EntryName::new(b"d".to_vec()),
            format::NodeKind::Dir,
            0o755,
        );
        dir.subtree = Some(id);
        tree = format::Tree { nodes: vec![dir] };
    }
    let empty = format::to_json(&format::Tree::default());
    let empty_id = repo.content_id(&empty);
    up.add(format::BlobKind::Tree, empty_id, &empty)
        .expect("add tree");
    up.finish().expect("finish");
    let mut snap = format::Snapshot {
        version: format::FORMAT_VERSION,
        time: chrono::Utc::now(),
        hostname: "hostile".into(),
        username: "mallory".into(),
        paths: vec!["/d".into()],
        tree: id,
        parent: None,
        tags: Vec::new(),
        summary: Default::default(),
    };
    let deep = repo.save_snapshot(&snap).expect("save snapshot").to_hex();
    snap.tree = empty_id;
    snap.time -= chrono::Duration::hours(1);
    let flat = repo.save_snapshot(&snap).expect("save snapshot").to_hex();
    (deep, flat)
}

/// Where the deep folders go: on tmpfs when there is one. This machine's
/// disk took 3.4 ms per rmdir, so removing 10,000 levels took 33 s; on
/// tmpfs it takes milliseconds. (Elsewhere the usual temporary folder.)
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("tidemark-deep-test-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    workdir()
}

/// Removes a folder of any depth, holding one folder handle at a time
/// (going back up through `..`): `std::fs::remove_dir_all`, and so a
/// `TempDir` dropped, keeps a handle and a stack frame per level, and
/// `rm -rf` took 25 s over 10,000 levels here.
fn remove_deep(p: &Path) {
    use rustix::fs::AtFlags;
    let open = |at: &OwnedFd, name: &std::ffi::OsStr| {
        rustix::fs::openat(
            at,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open folder")
    };
    let mut fd = rustix::fs::openat(CWD, p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .expect("open root");
    let mut names: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut sub = None;
        let dup = open(&fd, std::ffi::OsStr::new("."));
        for e in rustix::fs::Dir::new(dup).expect("list") {
            let e = e.expect("entry");
            let n = e.file_name().to_bytes().to_vec();
            if n == b"." || n == b".." {
                continue;
            }
            if e.file_type() == rustix::fs::FileType::Directory {
                sub = Some(n);
            } else {
                rustix::fs::unlinkat(&fd, std::ffi::OsStr::from_bytes(&n), AtFlags::empty())
                    .expect("unlink");
            }
        }
        if let Some(n) = sub {
            fd = open(&fd, std::ffi::OsStr::from_bytes(&n));
            names.push(n);
            continue;
        }
        let Some(n) = names.pop() else { break };
        fd = open(&fd, std::ffi::OsStr::new(".."));
        rustix::fs::unlinkat(&fd, std::ffi::OsStr::from_bytes(&n), AtFlags::REMOVEDIR)
            .expect("rmdir");
    }
    std::fs::remove_dir(p).expect("remove the emptied root");
}

#[test]
fn a_hostile_tree_20000_levels_deep_gets_answers_not_a_stack_overflow() {
    let work = workdir();
    let t = tidemark(work.path());
    t.init(None);
    let started = std::time::Instant::now();
    let (snap, flat) = hostile_chain(&t.repo, 20_000);
    eprintln!("stored 20,000 nested trees in {:?}", started.elapsed());
    let short = &snap[..8];

    let ls = t.run(&["ls", short]);
    no_abort(&ls);
    eprintln!(
        "{}: done after {:?}",
        ls.command.chars().take(40).collect::<String>(),
        started.elapsed()
    );
    assert_eq!(ls.code, Some(exit::ERROR), "{}", &ls.stderr);
    assert!(
        ls.stderr.contains("deeper than 10000 levels"),
        "ls names the limit: {}",
        tail(&ls.stderr, 500)
    );
    // It listed everything down to the limit before refusing to go on.
    assert!(ls.stdout.lines().count() >= 9_999);

    for round in 1..=2 {
        // The version catalog is kept on disk: the second run reads what
        // the first one left.
        let find = t.run(&["find", "bottom.txt"]);
        no_abort(&find);
        eprintln!(
            "{}: done after {:?}",
            find.command.chars().take(40).collect::<String>(),
            started.elapsed()
        );
        assert_eq!(
            find.code,
            Some(exit::OK),
            "find #{round}\n{}",
            find.printed()
        );
    }

    let scratch = scratch();
    let target = scratch.path().join("target");
    let r = t.run(&[
        "restore",
        &format!("{short}:/"),
        "--target",
        target.to_str().unwrap(),
    ]);
    no_abort(&r);
    eprintln!(
        "{}: done after {:?}",
        r.command.chars().take(40).collect::<String>(),
        started.elapsed()
    );
    assert_eq!(r.code, Some(exit::DAMAGE), "{}", &r.stderr);
    assert!(
        r.stdout.contains("FAILED") && r.stdout.contains("deeper than 10000 levels"),
        "the restore says what it left out: {}",
        tail(&r.stdout, 600)
    );
    remove_deep(&target);

    let v = t.run(&["verify"]);
    no_abort(&v);
    eprintln!(
        "{}: done after {:?}",
        v.command.chars().take(40).collect::<String>(),
        started.elapsed()
    );
    assert_eq!(v.code, Some(exit::DAMAGE), "{}", tail(&v.printed(), 600));
    assert!(v.stdout.contains("deeper than 10000 levels"));

    let d = t.run(&["diff", &flat[..8], short]);
    no_abort(&d);
    assert_eq!(d.code, Some(exit::ERROR));
    assert!(
        d.stderr.contains("deeper than 10000 levels"),
        "{}",
        tail(&d.stderr, 300)
    );
    eprintln!(
        "{}: done after {:?}",
        d.command.chars().take(40).collect::<String>(),
        started.elapsed()
    );
    eprintln!("all commands answered after {:?}", started.elapsed());
}

/// Levels of the real folder: 5,000 one-letter names are 10,000 bytes of
/// path, far past PATH_MAX (4,096).
const REAL_DEPTH: usize = 5_000;

fn open_dir(at: &OwnedFd, name: &str) -> OwnedFd {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap_or_else(|e| panic!("open {name}: {e}"))
}

fn write_at(at: &OwnedFd, name: &str, data: &[u8], mode: u32) {
    use std::io::Write;
    let fd = rustix::fs::openat(
        at,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .expect("create file");
    std::fs::File::from(fd).write_all(data).expect("write");
}

/// A chain of folders `d/d/d/…` made with relative calls only, with a file
/// every 500 levels, and a file and a symlink at the bottom.
fn make_deep_folder(root: &Path) {
    std::fs::create_dir(root).expect("root");
    let mut fd = rustix::fs::openat(CWD, root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .expect("open root");
    for level in 0..REAL_DEPTH {
        if level % 500 == 0 {
            let data = test_support::noise(level as u64, 3000 + level);
            write_at(&fd, &format!("f{level}"), &data, 0o640);
        }
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).expect("mkdir");
        fd = open_dir(&fd, "d");
    }
    write_at(&fd, "bottom.txt", b"the deepest file", 0o600);
    rustix::fs::symlinkat("bottom.txt", &fd, "link").expect("symlink");
}

/// Entries of an open folder: name, kind, mode, size, mtime, and the
/// content of files or the target of symlinks.
fn entries(fd: &OwnedFd) -> Vec<(Vec<u8>, String)> {
    use std::io::Read;
    let dup = rustix::fs::openat(fd, ".", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
        .expect("reopen");
    let mut out = Vec::new();
    for e in rustix::fs::Dir::new(dup).expect("dir") {
        let name = e.expect("entry").file_name().to_bytes().to_vec();
        if name == b"." || name == b".." {
            continue;
        }
        let n = std::ffi::OsStr::from_bytes(&name);
        let st = rustix::fs::statat(fd, n, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).expect("stat");
        let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
        let body = match kind {
            rustix::fs::FileType::RegularFile => {
                let f = rustix::fs::openat(fd, n, OFlags::RDONLY, Mode::empty()).expect("open");
                let mut v = Vec::new();
                std::fs::File::from(f).read_to_end(&mut v).expect("read");
                format!("{:?}", blake3_like(&v))
            }
            rustix::fs::FileType::Symlink => {
                format!(
                    "{:?}",
                    rustix::fs::readlinkat(fd, n, Vec::new()).expect("readlink")
                )
            }
            _ => String::new(),
        };
        let mtime = if kind == rustix::fs::FileType::Symlink {
            0 // symlink times are best effort
        } else {
            st.st_mtime
        };
        out.push((
            name,
            format!(
                "{kind:?} {:o} {} {mtime} {body}",
                st.st_mode & 0o7777,
                st.st_size
            ),
        ));
    }
    out.sort();
    out
}

/// A cheap digest for comparing contents (no crypto needed here).
fn blake3_like(v: &[u8]) -> (usize, u64) {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in v {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    (v.len(), h)
}

/// Compares two chains level by level, two folder handles at a time.
fn assert_same_chain(a: &Path, b: &Path) {
    let open = |p: &Path| {
        rustix::fs::openat(CWD, p, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
            .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
    };
    let (mut fa, mut fb) = (open(a), open(b));
    for level in 0..=REAL_DEPTH {
        let (ea, eb) = (entries(&fa), entries(&fb));
        assert_eq!(ea, eb, "level {level} differs");
        let subs: Vec<_> = ea
            .iter()
            .filter(|(_, k)| k.starts_with("Directory"))
            .collect();
        if level == REAL_DEPTH {
            assert!(subs.is_empty());
            break;
        }
        assert_eq!(subs.len(), 1, "level {level}: one folder");
        fa = open_dir(&fa, "d");
        fb = open_dir(&fb, "d");
    }
}

#[test]
fn a_real_folder_5000_levels_deep_backs_up_lists_verifies_and_restores() {
    let work = workdir();
    let t = tidemark(work.path());
    let scratch = scratch();
    let src = scratch.path().join("deep");
    make_deep_folder(&src);
    t.init(None);
    let started = std::time::Instant::now();
    let b = t.backup(&[&src], &[]);
    assert_eq!(b["errors"], serde_json::json!([]), "backup errors");
    eprintln!("backup of {REAL_DEPTH} levels: {:?}", started.elapsed());

    let ls = t.run(&["ls", "latest"]);
    no_abort(&ls);
    eprintln!(
        "{}: done after {:?}",
        ls.command.chars().take(40).collect::<String>(),
        started.elapsed()
    );
    assert_eq!(ls.code, Some(exit::OK), "{}", ls.stderr);
    let bottom = format!("{}/bottom.txt", "/d".repeat(REAL_DEPTH));
    assert!(
        ls.stdout.lines().any(|l| l.ends_with(&bottom)),
        "ls lists the deepest file"
    );

    let hits = t.run(&["find", "bottom.txt", "--json"]).ok().json_lines();
    assert_eq!(hits.len(), 1, "find finds the deepest file: {hits:?}");

    t.ok(&["verify"]);

    let target = scratch.path().join("target");
    let r = t.restore("latest", &target, &[]);
    no_abort(&r);
    eprintln!(
        "{}: done after {:?}",
        r.command.chars().take(40).collect::<String>(),
        started.elapsed()
    );
    assert_eq!(r.code, Some(exit::OK), "{}", r.printed());
    assert_same_chain(&src, &test_support::cli::restored_path(&target, &src));
    eprintln!("round trip of {REAL_DEPTH} levels: {:?}", started.elapsed());
    remove_deep(&target);
    remove_deep(&src);
}
