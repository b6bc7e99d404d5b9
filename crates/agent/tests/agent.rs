//! The agent driven as the app drives it, without a GUI: set up own
//! storage, back up on demand, browse the timeline, restore an old version,
//! pause a running backup and resume it, and wait out a missing disk.

// Test helpers outside #[test] functions: a failed setup step should panic.
#![allow(clippy::unwrap_used)]

use agent::{
    Agent, Config, Conflict, Destination, Event, OwnStorageSetup, Paths, RestoreRequest,
    RestoreTarget, Status, Timing,
};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Bed {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    repo: PathBuf,
    agent: Agent,
    events: Receiver<Event>,
}

/// An agent on the settings under `root`, and its events.
fn start(root: &Path) -> (Agent, Receiver<Event>) {
    let (tx, rx) = channel();
    let tx = std::sync::Mutex::new(tx);
    let agent = Agent::start_with(
        Paths::under(&root.join("agent")),
        Arc::new(move |e| {
            let _ = tx.lock().unwrap().send(e);
        }),
        Timing {
            destination_retry: chrono::Duration::milliseconds(500),
            tick: Duration::from_millis(200),
            watch: Some((Duration::from_millis(300), Duration::from_secs(2))),
        },
    )
    .unwrap();
    (agent, rx)
}

fn bed() -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let data = root.join("home/Documents");
    std::fs::create_dir_all(&data).unwrap();
    let (agent, rx) = start(&root);
    Bed {
        repo: root.join("usb/backup"),
        _dir: dir,
        root,
        data,
        agent,
        events: rx,
    }
}

impl Bed {
    fn setup(&self, recovery: bool) -> agent::SetupDone {
        self.setup_with(recovery, false)
    }

    fn setup_with(&self, recovery: bool, continuous: bool) -> agent::SetupDone {
        let done = self
            .agent
            .setup_own_storage(OwnStorageSetup {
                destination: Destination::Folder {
                    path: self.repo.to_string_lossy().into(),
                },
                password: "correct horse battery".into(),
                create: true,
                recovery_key: recovery,
                password_file: Some(self.root.join("pw").to_string_lossy().into()),
            })
            .unwrap();
        let mut c = self.agent.config();
        c.folders = vec![self.data.to_string_lossy().into()];
        // On demand only, so every backup in these tests is one we asked for
        // (unless the test is about watching).
        c.every_minutes = 0;
        c.continuous = continuous;
        self.agent.set_config(c).unwrap();
        done
    }

    /// Waits for the first event `f` accepts.
    fn wait<T>(&self, what: &str, secs: u64, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let end = Instant::now() + Duration::from_secs(secs);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    if let Event::BackupFailed { message, .. } = &e {
                        eprintln!("backup failed: {message}");
                    }
                    if let Some(v) = f(&e) {
                        return v;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "timed out after {secs} s waiting for {what}; status {:?}",
            self.agent.status()
        );
    }

    fn backup(&self) -> agent::BackupDone {
        self.agent.backup_now();
        self.wait("a finished backup", 120, |e| match e {
            Event::BackupFinished { done } => Some(done.clone()),
            _ => None,
        })
    }
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

#[test]
fn backs_up_on_demand_browses_versions_and_restores_an_old_one() {
    let b = bed();
    assert_eq!(b.agent.status(), Status::NotConfigured);
    let setup = b.setup(true);
    let report = b.data.join("work/report.txt");
    write(&report, b"first draft\n");
    write(&b.data.join("work/notes.md"), b"# notes\n");
    write(&b.data.join("photo.png"), b"\x89PNG\r\n\x1a\nnot really");
    let first = b.backup();
    assert_eq!(first.files, 3);

    write(&report, b"second draft, much longer than the first\n");
    std::fs::remove_file(b.data.join("work/notes.md")).unwrap();
    let second = b.backup();
    assert_ne!(first.snapshot, second.snapshot);

    let snaps = b.agent.snapshots().unwrap();
    assert_eq!(snaps.len(), 2);
    assert!(snaps[0].time <= snaps[1].time);

    // The folder as it is now, then with what was deleted since.
    let work = b.data.join("work").to_string_lossy().into_owned();
    let now = b.agent.list_dir(&second.snapshot, &work, false).unwrap();
    assert_eq!(
        now.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["report.txt"]
    );
    let all = b.agent.list_dir(&second.snapshot, &work, true).unwrap();
    let notes = all
        .iter()
        .find(|e| e.name == "notes.md")
        .expect("deleted file listed");
    assert!(notes.deleted);
    assert_eq!(notes.last_seen_in.as_deref(), Some(first.snapshot.as_str()));

    let path = report.to_string_lossy().into_owned();
    let versions = b.agent.versions(&path).unwrap();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions[0].size, 12);

    let hits = b.agent.search("NOTES").unwrap();
    assert_eq!(hits.len(), 1);
    assert!(hits[0].deleted);
    assert_eq!(hits[0].snapshots, 1);

    match b.agent.preview(&versions[0].snapshot, &path).unwrap() {
        agent::timeline::Preview::Text { text, truncated } => {
            assert_eq!(text, "first draft\n");
            assert!(!truncated);
        }
        other => panic!("expected text, got {other:?}"),
    }
    let png = b.data.join("photo.png").to_string_lossy().into_owned();
    assert!(matches!(
        b.agent.preview(&second.snapshot, &png).unwrap(),
        agent::timeline::Preview::Image { .. }
    ));

    // Restore the first version to a new folder, byte for byte.
    let target = b.root.join("restored");
    b.agent
        .restore(RestoreRequest {
            snapshot: versions[0].snapshot.clone(),
            path: path.clone(),
            target: RestoreTarget::Folder {
                path: target.to_string_lossy().into(),
            },
            conflict: Conflict::KeepBoth,
        })
        .unwrap();
    let files = b.wait("the restore", 60, |e| match e {
        Event::RestoreFinished { files, .. } => Some(*files),
        Event::RestoreFailed { message } => panic!("restore failed: {message}"),
        _ => None,
    });
    assert_eq!(files, 1);
    let restored = target.join(report.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(restored).unwrap(), b"first draft\n");

    // Restoring to the original place keeps both when the file is there.
    b.agent
        .restore(RestoreRequest {
            snapshot: versions[0].snapshot.clone(),
            path: path.clone(),
            target: RestoreTarget::Original,
            conflict: Conflict::KeepBoth,
        })
        .unwrap();
    b.wait("the restore in place", 60, |e| match e {
        Event::RestoreFinished { .. } => Some(()),
        Event::RestoreFailed { message } => panic!("restore failed: {message}"),
        _ => None,
    });
    assert_eq!(
        std::fs::read(&report).unwrap(),
        b"second draft, much longer than the first\n"
    );
    let beside: Vec<_> = std::fs::read_dir(report.parent().unwrap())
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        beside.contains(&b"first draft\n".to_vec()),
        "old version kept beside the new"
    );

    // The recovery key opens the repository on its own.
    let key = setup.recovery_key.expect("a recovery key was asked for");
    let storage = agent::open::open_storage(&b.repo.to_string_lossy()).unwrap();
    repository::Repository::open(storage, key.as_bytes(), &Default::default())
        .expect("the recovery key opens the backups");

    let o = b.agent.overview().unwrap();
    assert_eq!(o.snapshots, 2);
    assert!(o.bytes_stored > 0 && o.bytes_protected > 0);
}

#[test]
fn settings_survive_a_restart_and_a_wrong_password_saves_nothing() {
    let b = bed();
    let wrong = b.agent.setup_own_storage(OwnStorageSetup {
        destination: Destination::Folder {
            path: b.root.join("nothing-here").to_string_lossy().into(),
        },
        password: "correct horse battery".into(),
        create: false,
        recovery_key: false,
        password_file: None,
    });
    assert!(wrong.is_err());
    assert_eq!(b.agent.config().destination, None);
    b.setup(false);
    let again = b.agent.setup_own_storage(OwnStorageSetup {
        destination: Destination::Folder {
            path: b.repo.to_string_lossy().into(),
        },
        password: "not the password".into(),
        create: false,
        recovery_key: false,
        password_file: None,
    });
    assert_eq!(again.unwrap_err().code(), "wrong_password");
    let saved = Config::load(&b.agent.paths().config_file()).unwrap();
    assert_eq!(saved, b.agent.config());
    assert!(matches!(
        saved.destination,
        Some(Destination::Folder { .. })
    ));
    let text = std::fs::read_to_string(b.agent.paths().config_file()).unwrap();
    assert!(
        !text.contains("correct horse"),
        "no password in the settings file"
    );
}

#[test]
fn a_missing_password_is_entered_again_in_settings_after_it_is_checked() {
    let b = bed();
    b.setup(false);
    write(&b.data.join("a.txt"), b"first");
    // The stored password is gone (as an old kernel-store secret is after
    // a reboot): backups stop and say why.
    let mut c = b.agent.config();
    c.password_file = None;
    b.agent.set_config(c).unwrap();
    let (agent, events) = start(&b.root);
    assert_eq!(agent.password_state().stored_in, None);
    assert!(agent.password_state().needed);
    agent.backup_now();
    let code = loop {
        match events.recv_timeout(Duration::from_secs(60)).unwrap() {
            Event::BackupFailed { code, .. } => break code,
            _ => continue,
        }
    };
    assert_eq!(code, "no_password");

    // A wrong password is refused and changes nothing.
    let pw_file = b.root.join("pw-again").to_string_lossy().into_owned();
    let wrong = agent.enter_password(agent::PasswordEntry {
        password: "not the password".into(),
        password_file: Some(pw_file.clone()),
    });
    assert_eq!(wrong.unwrap_err().code(), "wrong_password");
    assert!(!Path::new(&pw_file).exists());
    assert_eq!(agent.password_state().stored_in, None);

    // The right one is kept, and the stopped backups go on by themselves.
    let done = agent
        .enter_password(agent::PasswordEntry {
            password: "correct horse battery".into(),
            password_file: Some(pw_file.clone()),
        })
        .unwrap();
    assert!(agent.password_state().stored_in.is_some());
    assert_eq!(
        agent.password_state().stored_in.as_deref(),
        Some(done.password_stored_in.as_str())
    );
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        match events.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(Event::BackupFinished { .. }) => break,
            Ok(Event::BackupFailed { message, .. }) => eprintln!("backup failed: {message}"),
            Ok(_) => {}
            Err(_) => panic!("no backup after the password was entered again"),
        }
    }
    // A fresh start finds it too.
    drop(agent);
    let (agent, _events) = start(&b.root);
    agent.repository().unwrap();
}

#[test]
fn pause_stops_a_running_backup_and_resume_completes_it() {
    let b = bed();
    b.setup(false);
    // The backup must still be running when the test pauses it, and how
    // long it runs depends on the machine: a backup that wins the race is
    // kept, and the next attempt adds twice the new data. An agent that
    // ignores the pause finishes every attempt and fails the test.
    let mut seed = 7u64;
    let mut files = 0;
    let mut kept = 0;
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut paused = None;
    for round in 0..4 {
        for _ in 0..(48 << round) {
            let mut buf = vec![0u8; 2 << 20];
            for x in buf.chunks_mut(8) {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                x.copy_from_slice(&seed.to_le_bytes()[..x.len()]);
            }
            write(&b.data.join(format!("big/{files}.bin")), &buf);
            files += 1;
        }
        b.agent.backup_now();
        let running = b.wait("backup progress", 60, |e| match e {
            Event::Status {
                status: Status::BackingUp { progress },
            } if progress.bytes_done > 0 => Some(true),
            Event::BackupFinished { .. } => Some(false),
            _ => None,
        });
        if running {
            b.agent.pause(until);
            paused = b.wait("the paused status", 60, |e| match e {
                Event::Status {
                    status: Status::Paused { until: u, .. },
                } => Some(Some(*u)),
                Event::BackupFinished { .. } => Some(None),
                _ => None,
            });
            if paused.is_some() {
                break;
            }
            b.agent.resume();
        }
        kept += 1;
        eprintln!("round {round}: the backup of {files} files finished first");
    }
    assert_eq!(
        paused,
        Some(until),
        "no backup could be paused while running"
    );
    assert_eq!(b.agent.snapshots().unwrap().len(), kept);
    b.agent.resume();
    let done = b.backup();
    assert_eq!(done.files, files);
    assert_eq!(b.agent.snapshots().unwrap().len(), kept + 1);
}

#[test]
fn a_missing_disk_is_waited_for_and_the_backup_runs_when_it_returns() {
    let b = bed();
    b.setup(false);
    write(&b.data.join("a.txt"), b"hello");
    let unplugged = b.root.join("usb-away");
    std::fs::rename(b.root.join("usb"), &unplugged).unwrap();
    b.agent.backup_now();
    let message = b.wait("the waiting-for-destination status", 60, |e| match e {
        Event::Status {
            status: Status::WaitingForDestination { message, .. },
        } => Some(message.clone()),
        _ => None,
    });
    assert!(message.contains("not available"), "{message}");
    // Still waiting after a few retries, and no repository was created at
    // the missing place.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!b.repo.exists());
    std::fs::rename(&unplugged, b.root.join("usb")).unwrap();
    let done = b.wait("the backup after plugging in", 60, |e| match e {
        Event::BackupFinished { done } => Some(done.clone()),
        _ => None,
    });
    assert_eq!(done.files, 1);
}

/// The snapshots that finished within `secs`, without asking for any
/// (or only the first of them, with `first`).
fn finished(events: &Receiver<Event>, secs: f64, first: bool) -> Vec<agent::BackupDone> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut out = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(Event::BackupFinished { done }) => {
                out.push(done);
                if first {
                    break;
                }
            }
            Ok(Event::BackupFailed { message, .. }) => panic!("backup failed: {message}"),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    out
}

#[test]
fn continuous_protection_backs_up_changes_by_itself_and_catches_up_after_a_restart() {
    let mut b = bed();
    b.setup_with(false, true);
    write(&b.data.join("old.txt"), b"there before");
    b.backup();
    // The start-up scan and the backup asked for may run one after the
    // other, and old.txt, written while watching, may be a batch of its
    // own: let that settle (a few snapshots at most, then quiet).
    let settling = finished(&b.events, 3.0, false);
    assert!(
        settling.len() <= 2,
        "{} snapshots while settling",
        settling.len()
    );
    // Editor temp and lock files alone start nothing.
    write(&b.data.join(".draft.txt.swp"), b"vim swap");
    write(&b.data.join("~$report.docx"), b"office lock");
    assert!(finished(&b.events, 2.0, false).is_empty());

    // A saved file is backed up without asking, within the watcher's
    // quiet period plus the backup.
    let saved = Instant::now();
    write(&b.data.join("new/draft.txt"), b"saved once");
    let done = finished(&b.events, 20.0, true);
    assert!(!done.is_empty(), "no backup followed a saved file");
    let took = saved.elapsed();
    let v = b
        .agent
        .versions(&b.data.join("new/draft.txt").to_string_lossy())
        .unwrap();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].snapshot, done[0].snapshot);
    eprintln!("saved -> committed in {:.1} s", took.as_secs_f64());

    // An editor saving every 100 ms for 4 s: a handful of snapshots (about
    // one per longest delay of 2 s; more only if a loaded machine stretches
    // a pause past the 300 ms quiet period), not forty; the last save is in.
    let draft = b.data.join("new/draft.txt");
    for i in 0..40 {
        write(&draft, format!("save {i}").as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let burst = finished(&b.events, 8.0, false);
    assert!(
        (1..=10).contains(&burst.len()),
        "{} snapshots for one editing burst",
        burst.len()
    );
    let v = b.agent.versions(&draft.to_string_lossy()).unwrap();
    let last = v.last().unwrap();
    assert_eq!(last.size, "save 39".len() as u64, "{v:?}");

    // Changed while the agent was off: the start-up scan catches it.
    b.agent.shutdown();
    write(&b.data.join("old.txt"), b"changed while nobody watched");
    let (agent, events) = start(&b.root);
    b.agent = agent;
    b.events = events;
    let caught = finished(&b.events, 20.0, true);
    assert!(!caught.is_empty(), "no start-up scan");
    let v = b
        .agent
        .versions(&b.data.join("old.txt").to_string_lossy())
        .unwrap();
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[1].size, "changed while nobody watched".len() as u64);
}

#[test]
fn a_new_laptop_restores_the_old_ones_files_into_place() {
    let b = bed();
    b.setup(false);
    write(&b.data.join("mine.txt"), b"this laptop");
    b.backup();
    // The old laptop backed up into the same repository, from elsewhere.
    let old = b.root.join("old-home/Documents");
    write(&old.join("thesis/ch1.md"), b"chapter one");
    write(&old.join("budget.ods"), b"numbers");
    let repo = b.agent.repository().unwrap();
    let opts = snapshot::BackupOptions {
        paths: vec![old.clone()],
        hostname: "old-laptop".into(),
        ..Default::default()
    };
    agent::jobs::backup(&repo, &opts, &snapshot::NoProgress).unwrap();
    std::fs::remove_dir_all(b.root.join("old-home")).unwrap();

    let devices = b.agent.other_devices().unwrap();
    assert_eq!(devices.len(), 1, "{devices:?}");
    let d = &devices[0];
    assert_eq!((d.hostname.as_str(), d.files), ("old-laptop", 2));
    assert_eq!(d.paths, vec![old.to_string_lossy().into_owned()]);
    b.agent
        .restore(RestoreRequest {
            snapshot: d.latest.clone(),
            path: "/".into(),
            target: RestoreTarget::Original,
            conflict: Conflict::KeepBoth,
        })
        .unwrap();
    b.wait("the restore", 60, |e| match e {
        Event::RestoreFinished { .. } => Some(()),
        _ => None,
    });
    assert_eq!(
        std::fs::read(old.join("thesis/ch1.md")).unwrap(),
        b"chapter one"
    );
    assert_eq!(std::fs::read(old.join("budget.ods")).unwrap(), b"numbers");
    // This laptop's own backups are not "another device".
    assert!(b
        .agent
        .other_devices()
        .unwrap()
        .iter()
        .all(|d| d.hostname != b.agent.hostname()));
}
