//! Helpers for tests that start real servers: free ports, required tools,
//! and child processes that are always killed and reaped.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1. The server binds it
/// right after; another process grabbing it in between is unlikely enough
/// that the test just fails with a clear message if it happens.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port on 127.0.0.1");
    l.local_addr().expect("local address").port()
}

/// Fails the test (never skips it) when a tool the test needs is missing.
pub fn require(path: &str, install: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install it with `{install}` (this test never skips)"
    );
}

/// Runs a short setup command and fails the test with its output if it
/// does not succeed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A server process that is killed and waited for when dropped, also when
/// the test panics half-way. Its output goes to a log file (a pipe nobody
/// reads could fill up and stall it), which failures quote.
pub struct Server {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Server {
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone the log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Server {
            name,
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the server accepts TCP connections on `port`, failing
    /// with its log if it exits or takes longer than `limit`.
    pub fn wait_for_port(&mut self, port: u16, limit: Duration) {
        let start = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "{} exited before listening ({status}):\n{}",
                        self.name,
                        self.log()
                    );
                }
            }
            assert!(
                start.elapsed() < limit,
                "{} did not listen on 127.0.0.1:{port} within {limit:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server and reaps it: SIGTERM first, so servers with worker
    /// processes (Apache) take them down too, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .output();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Paths below `dir` whose name contains `c`, e.g. leftover temporary files.
pub fn files_containing(dir: &Path, c: char) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(files_containing(&p, c));
        } else if e.file_name().to_string_lossy().contains(c) {
            found.push(p.display().to_string());
        }
    }
    found
}
