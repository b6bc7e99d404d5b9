//! `tidemark watch`: continuous protection from the command line, and what
//! happens when the kernel's event queue overflows.

use super::support::{tidemark, workdir};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const QUEUE: &str = "/proc/sys/fs/inotify/max_queued_events";

/// Lowers the inotify queue for instances created while it lives (the
/// kernel reads the limit when an instance starts) and restores it.
struct SmallQueue(String);

impl SmallQueue {
    fn set(events: u32) -> SmallQueue {
        let old = std::fs::read_to_string(QUEUE).expect("read the inotify queue limit");
        if let Err(e) = std::fs::write(QUEUE, events.to_string()) {
            panic!(
                "this test needs root to lower {QUEUE} and provoke an event-queue overflow ({e}); \\
                 run it as root (CI does)"
            );
        }
        SmallQueue(old.trim().to_string())
    }
}

impl Drop for SmallQueue {
    fn drop(&mut self) {
        let _ = std::fs::write(QUEUE, &self.0);
    }
}

fn write(p: &Path, body: &str) {
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, body).expect("write");
}

#[test]
fn an_event_queue_overflow_loses_nothing() {
    let work = workdir();
    let src = work.path().join("src");
    for i in 0..10 {
        write(&src.join(format!("a/old{i}.txt")), "old");
    }
    let tm = tidemark(work.path());
    tm.init(None);
    let small = SmallQueue::set(16);
    let mut child = tm
        .command(&[
            "--json",
            "watch",
            src.to_str().expect("utf-8"),
            "--quiet-ms",
            "700",
            "--max-delay-ms",
            "5000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tidemark watch");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the first (full) snapshot");
    assert_eq!(first["kind"], "full", "{first}");
    drop(small);

    // 3,000 files in a folder that already existed: no folder event can
    // stand for them, so only the overflow's rescan of the root finds them.
    let wrote = Instant::now();
    for i in 0..3000 {
        write(&src.join(format!("a/new{i}.txt")), "new");
    }
    let written = chrono::Utc::now();
    let mut rescanned = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no snapshot took in the burst within 90 s"));
        rescanned |= v["rescan"].as_u64().unwrap_or(0) > 0;
        let started: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(v["started"].clone()).expect("started");
        if started >= written {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        rescanned,
        "the queue of 16 events did not overflow under 3,000 files in {:?}, or the overflow was not turned into a rescan",
        wrote.elapsed()
    );
    let listed = tm
        .ok(&[
            "ls",
            "latest",
            src.join("a").to_str().expect("utf-8"),
            "--flat",
            "--json",
        ])
        .json_lines();
    let files = listed
        .iter()
        .filter(|e| e["path"].as_str().is_some_and(|p| p.contains("/new")))
        .count();
    assert_eq!(
        files, 3000,
        "the latest snapshot misses files after the overflow"
    );
}
