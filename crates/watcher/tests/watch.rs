//! The watcher over real inotify, in temporary folders.
//!
//! Every test that starts a watcher holds [`SERIAL`]: the overflow test lowers
//! a system-wide limit for a moment, and a watcher started by another test in
//! that moment would get a tiny event queue.

// Helpers outside `#[test]` fns unwrap too: a failed fixture is a failed test.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use watcher::{Changes, WatchError, WatchOptions, Watcher};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Short enough for tests, long enough that one `fs::write` is one batch.
const QUIET: Duration = Duration::from_millis(200);
/// Generous: a loaded 2-core CI machine can stall a thread for seconds.
const PATIENCE: Duration = Duration::from_secs(20);

fn opts() -> WatchOptions {
    WatchOptions {
        quiet: QUIET,
        max_delay: Duration::from_secs(2),
        ..WatchOptions::default()
    }
}

/// The temporary root as the watcher reports it (no symlinks in the way).
fn root() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = fs::canonicalize(t.path()).unwrap();
    (t, p)
}

/// Merges batches until `done` holds for what came, or `PATIENCE` passes.
fn collect_until(w: &Watcher, done: impl Fn(&Changes) -> bool) -> Changes {
    let end = Instant::now() + PATIENCE;
    let mut all = Changes::default();
    while !done(&all) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if let Some(batch) = w.next_batch(left) {
            all.merge(batch);
        }
    }
    all
}

/// The first batch, merged with any that follow it closely.
fn drain(w: &Watcher) -> Changes {
    let mut all = w.next_batch(PATIENCE).expect("a batch");
    while let Some(more) = w.next_batch(QUIET * 3) {
        all.merge(more);
    }
    all
}

#[test]
fn writing_a_file_yields_its_folder_after_the_quiet_period() {
    let _s = serial();
    let (_t, root) = root();
    fs::create_dir(root.join("docs")).unwrap();
    let w = Watcher::start(std::slice::from_ref(&root), opts()).unwrap();
    assert_eq!(w.health().roots, 1);
    assert!(w.health().is_ok(), "{:?}", w.health());

    let t0 = Instant::now();
    fs::write(root.join("docs/notes.txt"), b"hello").unwrap();
    let batch = w.next_batch(PATIENCE).expect("a batch for the write");
    let took = t0.elapsed();
    assert_eq!(batch.dirs, [root.join("docs")].into());
    assert!(batch.rescan.is_empty(), "{batch:?}");
    assert!(took >= QUIET, "due only after the quiet period: {took:?}");
    assert!(took < QUIET + Duration::from_secs(5), "took {took:?}");
    assert_eq!(w.next_batch(QUIET * 3), None, "one write, one batch");
}

#[test]
fn a_vim_style_save_yields_exactly_the_folder_of_the_file() {
    let _s = serial();
    let (_t, root) = root();
    // vim with `directory` and `backupdir` inside the protected home: its
    // swap and backup files land in other folders than the file.
    for d in ["docs", ".vim/swap", ".vim/backup"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("docs/x"), b"old").unwrap();
    let w = Watcher::start(std::slice::from_ref(&root), opts()).unwrap();

    let swap = root.join(".vim/swap/%docs%x.swp");
    fs::write(&swap, b"swap 1").unwrap();
    fs::write(root.join("docs/.x.swp"), b"swap here").unwrap();
    fs::write(root.join("docs/4913"), b"").unwrap();
    fs::remove_file(root.join("docs/4913")).unwrap();
    fs::write(root.join(".vim/backup/x~"), b"old").unwrap();
    fs::write(&swap, b"swap 2").unwrap();
    // The save proper: a temp file renamed onto the real name.
    fs::write(root.join("docs/.x.tmp"), b"new").unwrap();
    fs::rename(root.join("docs/.x.tmp"), root.join("docs/x")).unwrap();
    fs::remove_file(root.join("docs/.x.swp")).unwrap();
    fs::remove_file(&swap).unwrap();

    // Everything that comes, however a stalled test thread splits it.
    let all = drain(&w);
    assert_eq!(all.dirs, [root.join("docs")].into(), "{all:?}");
    assert!(all.rescan.is_empty(), "{all:?}");
}

#[test]
fn temp_files_alone_yield_no_batch() {
    let _s = serial();
    let (_t, root) = root();
    let w = Watcher::start(std::slice::from_ref(&root), opts()).unwrap();
    for name in [
        ".x.swp",
        "x~",
        "~$x.docx",
        "film.part",
        ".goutputstream-AB12",
    ] {
        fs::write(root.join(name), b"tmp").unwrap();
        fs::remove_file(root.join(name)).unwrap();
    }
    assert_eq!(w.next_batch(QUIET * 5), None);
}

#[test]
fn changes_in_an_excluded_folder_yield_nothing() {
    let _s = serial();
    let (_t, root) = root();
    fs::create_dir_all(root.join("app/node_modules/pkg")).unwrap();
    let excluded = Arc::new(|p: &Path, is_dir: bool| {
        is_dir && p.file_name().is_some_and(|n| n == "node_modules")
    });
    let w = Watcher::start(
        std::slice::from_ref(&root),
        WatchOptions { excluded, ..opts() },
    )
    .unwrap();

    fs::write(root.join("app/node_modules/pkg/index.js"), b"x").unwrap();
    fs::create_dir_all(root.join("app/node_modules/new/deep")).unwrap();
    fs::write(root.join("app/node_modules/new/deep/a.js"), b"x").unwrap();
    // A change outside, as a control that events flow: had the ones above
    // counted, they would be in this batch too.
    fs::write(root.join("app/control.txt"), b"x").unwrap();
    let batch = w.next_batch(PATIENCE).expect("the control change");
    assert_eq!(batch.dirs, [root.join("app")].into(), "{batch:?}");
    assert!(batch.rescan.is_empty(), "{batch:?}");

    fs::write(root.join("app/node_modules/pkg/more.js"), b"x").unwrap();
    fs::remove_file(root.join("app/node_modules/pkg/index.js")).unwrap();
    assert_eq!(w.next_batch(QUIET * 5), None, "{:?}", w.take());
}

#[test]
fn a_new_folder_with_files_is_rescanned() {
    let _s = serial();
    let (_t, root) = root();
    let w = Watcher::start(std::slice::from_ref(&root), opts()).unwrap();

    let new = root.join("new");
    fs::create_dir(&new).unwrap();
    // Written at once, before notify adds the new folder's watch: some of
    // these have no event, which is why the folder is walked.
    for i in 0..50 {
        fs::write(new.join(format!("f{i}")), b"data").unwrap();
    }
    fs::create_dir(new.join("sub")).unwrap();
    fs::write(new.join("sub/g"), b"data").unwrap();

    let all = collect_until(&w, |c| c.rescan.contains(&new));
    assert_eq!(all.rescan, [new.clone()].into(), "{all:?}");
    assert_eq!(all.dirs, [root.clone()].into(), "{all:?}");
}

#[test]
fn take_hands_over_pending_changes_before_they_are_due() {
    let _s = serial();
    let (_t, root) = root();
    let w = Watcher::start(
        std::slice::from_ref(&root),
        WatchOptions {
            quiet: Duration::from_secs(60),
            max_delay: Duration::from_secs(60),
            ..WatchOptions::default()
        },
    )
    .unwrap();
    fs::write(root.join("a"), b"x").unwrap();
    let end = Instant::now() + PATIENCE;
    let mut taken = Changes::default();
    while taken.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        taken = w.take();
    }
    assert_eq!(taken.dirs, [root.clone()].into());
    assert_eq!(w.next_batch(Duration::from_millis(300)), None);
}

#[test]
fn missing_roots_are_an_error_naming_the_path() {
    let (_t, root) = root();
    let missing = root.join("not-here");
    let err = Watcher::start(&[root.clone(), missing.clone()], opts()).unwrap_err();
    assert!(matches!(&err, WatchError::RootNotFound { path } if *path == missing));
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
    fs::write(root.join("file"), b"x").unwrap();
    let err = Watcher::start(&[root.join("file")], opts()).unwrap_err();
    assert!(matches!(err, WatchError::NotAFolder { .. }), "{err}");
}

#[test]
fn every_root_is_watched() {
    let _s = serial();
    let (_a, one) = root();
    let (_b, two) = root();
    let w = Watcher::start(&[one.clone(), two.clone()], opts()).unwrap();
    assert_eq!(w.health().roots, 2);
    fs::write(one.join("a"), b"x").unwrap();
    fs::write(two.join("b"), b"x").unwrap();
    let all = collect_until(&w, |c| c.dirs.len() == 2);
    assert_eq!(all.dirs, [one, two].into());
}

const MAX_QUEUED: &str = "/proc/sys/fs/inotify/max_queued_events";

/// Puts a sysctl back as it was when dropped, even when the test panics.
struct Restore {
    path: &'static str,
    old: String,
}

impl Restore {
    fn set(path: &'static str, value: &str) -> Restore {
        let old = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
            .trim()
            .to_string();
        if let Err(e) = fs::write(path, value) {
            panic!(
                "this test needs root to set the sysctl {path} (fs.inotify.max_queued_events) \
                 to {value} for a moment: {e}; run it as root (CI does)"
            );
        }
        Restore { path, old }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = fs::write(self.path, &self.old) {
            eprintln!("could not restore {} to {}: {e}", self.path, self.old);
        }
    }
}

#[test]
fn an_event_queue_overflow_rescans_the_root() {
    let _s = serial();
    let (_t, root) = root();
    // The kernel reads the limit when an inotify instance is created, so it
    // is low only while the watcher starts. One event: writing a file makes
    // three (create, modify, close), so the queue overflows whatever the
    // scheduling. With 16 the watcher's reader kept up in 4 of 10 runs on
    // a quiet 2-vCPU machine, and the test failed for want of an overflow.
    let low = Restore::set(MAX_QUEUED, "1");
    let w = Watcher::start(std::slice::from_ref(&root), opts());
    drop(low);
    let w = w.unwrap();
    for i in 0..2000 {
        fs::write(root.join(format!("f{i}")), b"x").unwrap();
    }
    let all = collect_until(&w, |c| c.rescan.contains(&root));
    assert_eq!(all.rescan, [root.clone()].into(), "{all:?}");
    assert!(all.dirs.is_empty(), "the root's rescan covers it: {all:?}");
    assert!(w.health().overflows >= 1, "{:?}", w.health());
}
