//! Slow and silent clients against a real `tidemark server` process: over
//! a thousand connections that start a request and never finish its head,
//! from other loopback addresses and with no token, at the 1,024 open-file
//! limit where they used to lock every device out for minutes. An enrolled
//! device must still back up, and the server must close the held
//! connections itself.

use super::server::Running;
use super::support::{tidemark, workdir};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use test_support::noise;

/// Connections the attacker holds: a little over the server's file limit,
/// as in the report that found the defect, so that a server without caps
/// has no descriptor left for anyone else.
const HELD: usize = 1100;
/// Spread over this many loopback addresses (127.0.0.2 on; the device is
/// 127.0.0.1), 110 each: under the per-address cap, so what keeps the
/// device's way open is the total cap and its pushing out of silent
/// connections, not the per-address one.
const ATTACKER_ADDRESSES: usize = 10;
/// The server's open-file limit, soft and hard, as on many stock systems.
const SERVER_FILES: u32 = 1024;
/// The server's request-head deadline (docs/server.md, "Limits and
/// errors"), and the slack allowed on top for a loaded test machine.
const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
const SLACK: Duration = Duration::from_secs(10);

/// `tidemark server --insecure-http` on loopback, run under `prlimit` so
/// its open-file limit is [`SERVER_FILES`] whatever the test runner's is.
fn start_with_file_limit(work: &Path, data: &Path) -> Running {
    let limit = format!("--nofile={SERVER_FILES}:{SERVER_FILES}");
    let child = tidemark(work)
        .wrapped(&["prlimit", &limit, "--"])
        .command(&[
            "--json",
            "server",
            "--data",
            data.to_str().expect("utf-8 path"),
            "--kdf-memory",
            "256",
            "--listen",
            "127.0.0.1:0",
            "--insecure-http",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start `prlimit … tidemark server` (prlimit is in util-linux)");
    super::server::ready(child)
}

/// This process holds [`HELD`] sockets plus its own files: make sure its
/// soft open-file limit allows that, raising it to the hard limit with
/// `prlimit` on our own pid if needed.
fn ensure_own_file_limit(needed: u64) {
    let read = || -> (u64, u64) {
        let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a 'Max open files' line");
        let mut numbers = line.split_whitespace().filter_map(|w| {
            w.parse::<u64>()
                .ok()
                .or((w == "unlimited").then_some(u64::MAX))
        });
        let soft = numbers.next().expect("soft limit");
        let hard = numbers.next().expect("hard limit");
        (soft, hard)
    };
    let (soft, hard) = read();
    if soft >= needed {
        return;
    }
    assert!(
        hard >= needed,
        "this test needs {needed} open files; the hard limit is {hard}: raise it (ulimit -Hn)"
    );
    let status = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={hard}:{hard}"))
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit could not raise our file limit");
    assert!(
        read().0 >= needed,
        "the soft file limit is still below {needed}"
    );
}

/// Opens [`HELD`] connections from 127.0.0.2.. to `server`, each sending
/// the start of a request head and no more.
async fn hold(server: std::net::SocketAddr) -> Vec<(tokio::net::TcpStream, Instant)> {
    use tokio::io::AsyncWriteExt;
    let mut held = Vec::with_capacity(HELD);
    for i in 0..HELD {
        let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % ATTACKER_ADDRESSES) as u8);
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind((from, 0).into()).unwrap_or_else(|e| {
            panic!("bind {from} (all of 127.0.0.0/8 is loopback on Linux): {e}")
        });
        let mut stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(server))
            .await
            .expect("connect within 10 s (the kernel completes it from the backlog)")
            .expect("connect");
        // A request line and one header, then nothing: the head never ends.
        // A write error means the server already closed this one (pushed
        // out to make room); it stays in the list, to be read as closed.
        let _ = stream
            .write_all(b"POST /v1/chunks/query HTTP/1.1\r\nHost: tidemark\r\n")
            .await;
        held.push((stream, Instant::now()));
    }
    held
}

/// Waits until the server closes `stream` (end of file or an error), at
/// most until `deadline`; returns when it did, or `None`.
async fn closed_by(stream: &mut tokio::net::TcpStream, deadline: Instant) -> Option<Instant> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(Instant::now()),
            // Whatever the server says first (nothing is expected), the
            // connection must still end.
            Ok(Ok(_)) => continue,
        }
    }
}

#[test]
fn a_thousand_held_connections_neither_lock_out_a_device_nor_stay_open() {
    ensure_own_file_limit(HELD as u64 + 512);
    let work = workdir();
    let data = work.path().join("server");
    let s = start_with_file_limit(work.path(), &data);
    let url = s.url();
    let addr: std::net::SocketAddr = url
        .strip_prefix("http://")
        .expect("plain HTTP")
        .parse()
        .expect("ip:port");

    let dir = work.path().join("laptop");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let laptop = tidemark(&dir)
        .with_repo(&url)
        .with_env("TIDEMARK_DEVICE_SECRET_FILE", dir.join("device.secret"));
    laptop.ok(&[
        "enroll",
        &url,
        s.ready["admin_code"].as_str().expect("first admin code"),
    ]);
    let files = dir.join("files");
    std::fs::create_dir_all(files.join("docs")).expect("mkdir");
    std::fs::write(files.join("docs/report.bin"), noise(19, 300_000)).expect("write");
    std::fs::write(files.join("notes.txt"), "slow clients\n".repeat(100)).expect("write");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let opened = Instant::now();
    let mut held = runtime.block_on(hold(addr));
    let last_opened = held.last().map(|(_, at)| *at).expect("connections");
    eprintln!(
        "opened {HELD} held connections in {:?}",
        last_opened - opened
    );

    // The device backs up while they are held.
    let log = dir.join("backup.log");
    let started = Instant::now();
    let mut backup = laptop.spawn(&["backup", files.to_str().expect("utf-8")], &log);
    let limit = Duration::from_secs(60);
    let status = loop {
        if let Some(status) = backup.try_wait().expect("poll the backup") {
            break Some(status);
        }
        if started.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if status.is_none() {
        let _ = backup.kill();
        let _ = backup.wait();
    }
    let printed = std::fs::read_to_string(&log).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("the backup did not finish within {limit:?} while {HELD} connections were held:\n{printed}")
    });
    assert!(status.success(), "the backup failed:\n{printed}");
    eprintln!("backup took {:?}", started.elapsed());

    // Every held connection is closed by the server within the head
    // deadline of its opening (pushed-out ones sooner).
    let deadline = last_opened + HEADER_TIMEOUT + SLACK;
    let mut longest = Duration::ZERO;
    let mut still_open = 0;
    runtime.block_on(async {
        for (stream, at) in held.iter_mut() {
            match closed_by(stream, deadline).await {
                Some(when) => longest = longest.max(when.saturating_duration_since(*at)),
                None => still_open += 1,
            }
        }
    });
    eprintln!("the longest-held connection was closed after {longest:?}");
    assert_eq!(
        still_open,
        0,
        "{still_open} of {HELD} connections were still open {:?} after the last was opened",
        HEADER_TIMEOUT + SLACK
    );
    let mut s = s;
    assert!(
        s.child.try_wait().expect("poll").is_none(),
        "the server died"
    );
}
