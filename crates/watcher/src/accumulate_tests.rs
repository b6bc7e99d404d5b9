//! The accumulator with fake time and a fake tree: no file system, no sleeps.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{
    AccessKind, AccessMode, CreateKind, DataChange, Flag, MetadataKind, ModifyKind, RemoveKind,
    RenameMode,
};
use notify::{ErrorKind, Event, EventKind};

use super::*;

const ROOT: &str = "/home/u";
const QUIET: Duration = Duration::from_secs(3);
const MAX_DELAY: Duration = Duration::from_secs(20);

/// A tree that holds exactly the folders it is given.
struct FakeTree {
    dirs: BTreeSet<PathBuf>,
}

impl Probe for FakeTree {
    fn is_dir(&self, path: &Path) -> bool {
        self.dirs.contains(path)
    }

    fn max_user_watches(&self) -> Option<u64> {
        Some(8192)
    }
}

fn acc_with(dirs: &[&str], excluded: Excluded) -> Accumulator {
    let tree = FakeTree {
        dirs: dirs.iter().map(PathBuf::from).collect(),
    };
    Accumulator::new(
        vec![PathBuf::from(ROOT)],
        QUIET,
        MAX_DELAY,
        excluded,
        Box::new(tree),
    )
}

fn acc() -> Accumulator {
    acc_with(&[], Arc::new(|_, _| false))
}

fn ev(kind: EventKind, paths: &[&str]) -> Event {
    paths
        .iter()
        .fold(Event::new(kind), |e, p| e.add_path(PathBuf::from(p)))
}

fn write(path: &str) -> Event {
    ev(
        EventKind::Modify(ModifyKind::Data(DataChange::Any)),
        &[path],
    )
}

fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
    paths.iter().map(PathBuf::from).collect()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn a_batch_is_due_once_no_event_came_for_the_quiet_period() {
    let mut a = acc();
    let t0 = Instant::now();
    assert_eq!(a.due_at(), None);
    a.event(0, &write("/home/u/docs/a.txt"), t0);
    a.event(0, &write("/home/u/docs/b.txt"), t0 + secs(2.0));
    a.event(0, &write("/home/u/c.txt"), t0 + secs(4.0));
    assert_eq!(a.due_at(), Some(t0 + secs(4.0) + QUIET));
    assert_eq!(a.take_due(t0 + secs(6.9)), None);
    let batch = a
        .take_due(t0 + secs(7.0))
        .expect("due 3 s after the last event");
    assert_eq!(batch.dirs, set(&["/home/u/docs", "/home/u"]));
    assert!(batch.rescan.is_empty());
    assert!(a.is_empty());
    assert_eq!(a.due_at(), None);
    assert_eq!(a.take_due(t0 + secs(100.0)), None);
}

#[test]
fn a_continuous_stream_gives_one_batch_per_max_delay() {
    let mut a = acc();
    let t0 = Instant::now();
    let mut batches = Vec::new();
    let mut seen = BTreeSet::new();
    // One write a second for 60 s, each in its own folder; the batch is
    // looked for half a second after each event, as a waiter would.
    for s in 0..60u32 {
        let at = t0 + Duration::from_secs(s.into());
        let dir = format!("/home/u/d{s}");
        a.event(0, &write(&format!("{dir}/f")), at);
        seen.insert(PathBuf::from(dir));
        if let Some(first) = a.first {
            // Never held past max_delay after its first event (plus the
            // half second between looks).
            assert!(at <= first + MAX_DELAY + secs(0.5));
        }
        if let Some(b) = a.take_due(at + secs(0.5)) {
            batches.push(b);
        }
    }
    let end = t0 + Duration::from_secs(59) + QUIET;
    assert_eq!(a.take_due(end - secs(0.1)), None, "quiet not over yet");
    batches.push(
        a.take_due(end)
            .expect("the tail is due after the quiet period"),
    );
    let bound = 60u32.div_ceil(MAX_DELAY.as_secs() as u32) as usize + 1;
    assert!(batches.len() <= bound, "{} batches", batches.len());
    assert!(
        batches.len() >= 3,
        "max_delay must cut the stream: {}",
        batches.len()
    );
    let mut all = BTreeSet::new();
    for b in batches {
        all.extend(b.dirs);
    }
    assert_eq!(all, seen, "every folder is in some batch");
}

#[test]
fn take_hands_over_what_is_pending_before_it_is_due() {
    let mut a = acc();
    let t0 = Instant::now();
    a.event(0, &write("/home/u/a"), t0);
    assert_eq!(a.take_due(t0), None);
    assert_eq!(a.take().dirs, set(&["/home/u"]));
    assert_eq!(a.due_at(), None);
    assert!(a.take().is_empty());
}

#[test]
fn temp_and_lock_files_trigger_nothing() {
    let mut a = acc();
    let t0 = Instant::now();
    for p in [
        "/home/u/docs/.notes.txt.swp",
        "/home/u/docs/notes.txt~",
        "/home/u/docs/4913",
        "/home/u/docs/#notes.txt#",
        "/home/u/docs/~$report.docx",
        "/home/u/docs/.~lock.report.odt#",
        "/home/u/Downloads/film.mkv.part",
    ] {
        a.event(0, &ev(EventKind::Create(CreateKind::File), &[p]), t0);
        a.event(0, &write(p), t0);
        a.event(0, &ev(EventKind::Remove(RemoveKind::Any), &[p]), t0);
    }
    assert!(a.is_empty());
    assert_eq!(a.due_at(), None, "ignored events do not start a batch");
}

#[test]
fn a_temp_file_renamed_onto_the_real_name_counts() {
    let mut a = acc();
    let t0 = Instant::now();
    let from = "/home/u/docs/.notes.txt.tmp";
    let to = "/home/u/docs/notes.txt";
    a.event(0, &ev(EventKind::Create(CreateKind::File), &[from]), t0);
    a.event(
        0,
        &ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            &[from],
        ),
        t0,
    );
    assert!(a.is_empty());
    a.event(
        0,
        &ev(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &[to]),
        t0,
    );
    a.event(
        0,
        &ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &[from, to],
        ),
        t0,
    );
    assert_eq!(a.take().dirs, set(&["/home/u/docs"]));
}

#[test]
fn a_folder_named_like_a_temp_file_is_not_ignored() {
    let mut a = acc();
    a.event(
        0,
        &ev(
            EventKind::Create(CreateKind::Folder),
            &["/home/u/build.tmp"],
        ),
        Instant::now(),
    );
    let c = a.take();
    assert_eq!(c.rescan, set(&["/home/u/build.tmp"]));
    assert_eq!(c.dirs, set(&["/home/u"]));
}

#[test]
fn pure_access_triggers_nothing() {
    let mut a = acc();
    let t0 = Instant::now();
    for kind in [
        AccessKind::Open(AccessMode::Any),
        AccessKind::Read,
        AccessKind::Close(AccessMode::Read),
        AccessKind::Close(AccessMode::Execute),
        AccessKind::Any,
    ] {
        a.event(0, &ev(EventKind::Access(kind), &["/home/u/a.txt"]), t0);
    }
    assert!(a.is_empty());
    let close = ev(
        EventKind::Access(AccessKind::Close(AccessMode::Write)),
        &["/home/u/a.txt"],
    );
    a.event(0, &close, t0);
    assert_eq!(a.take().dirs, set(&["/home/u"]));
}

#[test]
fn every_kind_of_entry_change_marks_the_parent() {
    let kinds = [
        EventKind::Create(CreateKind::File),
        EventKind::Modify(ModifyKind::Data(DataChange::Content)),
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)),
        EventKind::Modify(ModifyKind::Name(RenameMode::From)),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)),
        EventKind::Modify(ModifyKind::Any),
        EventKind::Remove(RemoveKind::File),
        EventKind::Remove(RemoveKind::Folder),
        EventKind::Any,
        EventKind::Other,
    ];
    for kind in kinds {
        let mut a = acc();
        a.event(0, &ev(kind, &["/home/u/docs/a.txt"]), Instant::now());
        let c = a.take();
        assert_eq!(c.dirs, set(&["/home/u/docs"]), "{kind:?}");
        assert!(c.rescan.is_empty(), "{kind:?}");
    }
}

#[test]
fn excluded_paths_and_everything_below_them_trigger_nothing() {
    let excluded: Excluded = Arc::new(|p: &Path, is_dir: bool| {
        (is_dir && p.file_name().is_some_and(|n| n == "node_modules")) || p.ends_with("secret.key")
    });
    let mut a = acc_with(&["/home/u/app/node_modules"], excluded);
    let t0 = Instant::now();
    let folder = ev(
        EventKind::Create(CreateKind::Folder),
        &["/home/u/app/node_modules"],
    );
    a.event(0, &folder, t0);
    a.event(0, &write("/home/u/app/node_modules/left-pad/index.js"), t0);
    let deep = ev(
        EventKind::Create(CreateKind::Folder),
        &["/home/u/app/node_modules/a/b"],
    );
    a.event(0, &deep, t0);
    a.event(0, &write("/home/u/secret.key"), t0);
    // The metadata event says nothing of the kind: the probe says "folder".
    let meta = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any));
    a.event(0, &ev(meta, &["/home/u/app/node_modules"]), t0);
    assert!(a.is_empty());
    assert_eq!(a.due_at(), None);
    a.event(0, &write("/home/u/app/index.js"), t0);
    assert_eq!(a.take().dirs, set(&["/home/u/app"]));
}

#[test]
fn events_outside_the_root_are_ignored() {
    let mut a = acc();
    a.event(0, &write("/home/other/a.txt"), Instant::now());
    a.event(0, &write("/home/u2/a.txt"), Instant::now());
    a.event(1, &write("/home/u/a.txt"), Instant::now());
    assert!(a.is_empty());
}

#[test]
fn a_created_folder_is_rescanned() {
    let mut a = acc();
    let t0 = Instant::now();
    a.event(
        0,
        &ev(EventKind::Create(CreateKind::Folder), &["/home/u/new"]),
        t0,
    );
    a.event(
        0,
        &ev(EventKind::Create(CreateKind::File), &["/home/u/new/f.txt"]),
        t0,
    );
    a.event(0, &write("/home/u/new/sub/g.txt"), t0);
    let c = a.take();
    assert_eq!(c.rescan, set(&["/home/u/new"]));
    assert_eq!(
        c.dirs,
        set(&["/home/u"]),
        "folders inside the new one collapse into it"
    );
}

#[test]
fn a_folder_moved_or_renamed_into_the_tree_is_rescanned() {
    let mut a = acc_with(
        &["/home/u/moved", "/home/u/renamed"],
        Arc::new(|_, _| false),
    );
    let t0 = Instant::now();
    let to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
    a.event(0, &ev(to, &["/home/u/moved"]), t0);
    let both = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
    a.event(0, &ev(both, &["/home/u/old", "/home/u/renamed"]), t0);
    // A file moved in is an entry of its folder, nothing more.
    a.event(0, &ev(to, &["/home/u/docs/file.txt"]), t0);
    let c = a.take();
    assert_eq!(c.rescan, set(&["/home/u/moved", "/home/u/renamed"]));
    assert_eq!(c.dirs, set(&["/home/u", "/home/u/docs"]));
}

#[test]
fn metadata_of_an_existing_folder_is_not_a_rescan() {
    let mut a = acc_with(&["/home/u/docs"], Arc::new(|_, _| false));
    let meta = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions));
    a.event(0, &ev(meta, &["/home/u/docs"]), Instant::now());
    let c = a.take();
    assert!(c.rescan.is_empty());
    assert_eq!(c.dirs, set(&["/home/u"]));
}

#[test]
fn an_overflow_rescans_the_root_and_is_counted() {
    let mut a = acc();
    let t0 = Instant::now();
    a.event(0, &write("/home/u/docs/a.txt"), t0);
    let overflow = Event::new(EventKind::Other).set_flag(Flag::Rescan);
    a.event(0, &overflow, t0 + secs(1.0));
    a.event(0, &write("/home/u/docs/b.txt"), t0 + secs(2.0));
    assert_eq!(
        a.due_at(),
        Some(t0 + secs(2.0) + QUIET),
        "an overflow counts as an event"
    );
    let c = a.take();
    assert_eq!(c.rescan, set(&[ROOT]));
    assert!(c.dirs.is_empty(), "the root's rescan covers every folder");
    assert_eq!(a.health().overflows, 1);
    assert!(a.health().is_ok());
}

#[test]
fn a_rescan_flag_with_paths_rescans_those_paths() {
    let mut a = acc();
    let lapse = ev(EventKind::Any, &["/home/u/a", "/elsewhere"]).set_flag(Flag::Rescan);
    a.event(0, &lapse, Instant::now());
    let c = a.take();
    assert_eq!(c.rescan, set(&["/home/u/a"]));
    assert!(c.dirs.is_empty());
}

#[test]
fn the_watch_limit_rescans_the_root_once_and_is_reported() {
    let mut a = acc();
    let t0 = Instant::now();
    let limit = notify::Error::new(ErrorKind::MaxFilesWatch).add_path("/home/u/new".into());
    a.error(0, &limit, t0);
    assert_eq!(a.take().rescan, set(&[ROOT]));
    let h = a.health();
    assert_eq!(
        h.problems,
        vec![Problem::WatchLimit {
            root: ROOT.into(),
            limit: Some(8192)
        }]
    );
    let text = h.problems[0].to_string();
    assert!(
        text.contains("fs.inotify.max_user_watches = 8192"),
        "{text}"
    );
    assert!(text.contains("under /home/u"), "{text}");
    assert!(text.contains("sysctl"), "{text}");
    // Later: only the folders it could not watch, not the whole root again.
    let again = notify::Error::new(ErrorKind::MaxFilesWatch).add_path("/home/u/x/y".into());
    a.error(0, &again, t0);
    assert_eq!(a.take().rescan, set(&["/home/u/x/y"]));
    assert_eq!(a.health().problems.len(), 1, "reported once");
}

#[test]
fn other_watch_errors_rescan_their_paths_or_the_root() {
    let mut a = acc();
    let t0 = Instant::now();
    let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    let e = notify::Error::io(denied).add_path("/home/u/locked".into());
    a.error(0, &e, t0);
    let c = a.take();
    assert_eq!(c.rescan, set(&["/home/u/locked"]));
    let h = a.health();
    assert!(
        matches!(&h.problems[..], [Problem::WatchFailed { path, .. }] if path == Path::new("/home/u/locked"))
    );
    assert!(!h.is_ok());
    a.error(0, &notify::Error::generic("read failed"), t0);
    assert_eq!(a.take().rescan, set(&[ROOT]));
}

#[test]
fn problems_are_bounded() {
    let mut a = acc();
    let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
    let e = notify::Error::io(denied);
    for i in 0..100 {
        a.watch_failed(Path::new(&format!("/home/u/d{i}")), &e);
    }
    let h = a.health();
    assert_eq!(h.problems.len(), MAX_PROBLEMS);
    assert_eq!(h.problems_omitted, 100 - MAX_PROBLEMS);
}

#[test]
fn the_root_deleted_or_moved_is_a_rescan_and_a_problem() {
    let mut a = acc();
    let t0 = Instant::now();
    a.event(0, &ev(EventKind::Remove(RemoveKind::Folder), &[ROOT]), t0);
    assert_eq!(a.take().rescan, set(&[ROOT]));
    let moved = EventKind::Modify(ModifyKind::Name(RenameMode::From));
    a.event(0, &ev(moved, &[ROOT]), t0);
    assert_eq!(a.take().rescan, set(&[ROOT]));
    assert_eq!(
        a.health().problems,
        vec![Problem::RootGone { root: ROOT.into() }]
    );
}

#[test]
fn metadata_of_the_root_marks_the_root() {
    let mut a = acc_with(&[ROOT], Arc::new(|_, _| false));
    let meta = EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any));
    a.event(0, &ev(meta, &[ROOT]), Instant::now());
    let c = a.take();
    assert_eq!(c.dirs, set(&[ROOT]));
    assert!(c.rescan.is_empty());
    assert!(a.health().is_ok());
}

#[test]
fn folders_inside_a_rescan_collapse_in_either_order() {
    let mut a = acc();
    let t0 = Instant::now();
    a.event(0, &write("/home/u/new/a/x"), t0);
    a.event(0, &write("/home/u/other/y"), t0);
    a.event(
        0,
        &ev(EventKind::Create(CreateKind::Folder), &["/home/u/new"]),
        t0,
    );
    a.event(0, &write("/home/u/new/b/z"), t0);
    let c = a.take();
    assert_eq!(c.rescan, set(&["/home/u/new"]));
    assert_eq!(c.dirs, set(&["/home/u", "/home/u/other"]));
}

#[test]
fn a_batch_wider_than_the_cap_becomes_a_root_rescan() {
    let mut a = acc();
    let t0 = Instant::now();
    for i in 0..=MAX_PENDING_DIRS {
        a.event(0, &write(&format!("/home/u/d{i}/f")), t0);
    }
    let c = a.take();
    assert_eq!(c.rescan, set(&[ROOT]));
    assert!(c.dirs.is_empty());
}
