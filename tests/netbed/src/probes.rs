//! What the user does while the backup runs: pings, small web fetches and
//! one upload, against servers this process runs in the server namespace.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::link::SRV_IP;
use crate::ns::Netns;

pub const WEB_PORT: u16 = 8080;
pub const SINK_PORT: u16 = 8081;
const PAGE: usize = 100 * 1000;

/// The web server (100 KB per GET) and the upload sink (answers one byte
/// once the sender has closed), in the server namespace.
pub fn serve(srv: &Netns) -> Result<()> {
    let web = srv.run(|| Ok(TcpListener::bind((SRV_IP, WEB_PORT))?))?;
    let sink = srv.run(|| Ok(TcpListener::bind((SRV_IP, SINK_PORT))?))?;
    std::thread::spawn(move || {
        for s in web.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut r = BufReader::new(match s.try_clone() {
                    Ok(c) => c,
                    Err(_) => return,
                });
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {PAGE}\r\n\r\n");
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&vec![b'x'; PAGE]);
            });
        }
    });
    std::thread::spawn(move || {
        for s in sink.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; 65536];
                while s.read(&mut buf).is_ok_and(|n| n > 0) {}
                let _ = s.write_all(b"k");
            });
        }
    });
    Ok(())
}

/// One 100 KB GET on a fresh connection, as a browser fetching a page part.
pub fn get() -> Result<Duration> {
    let t = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&(SRV_IP, WEB_PORT).into_addr(), Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut n = 0;
    let mut buf = vec![0u8; 65536];
    loop {
        let k = s.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k;
    }
    anyhow::ensure!(n > PAGE, "short page: {n} bytes");
    Ok(t.elapsed())
}

/// Sends `bytes` (or, with `for_time`, as much as fits in that time) and
/// waits for the sink's acknowledgement.
pub fn upload(bytes: usize, for_time: Option<Duration>) -> Result<Duration> {
    let t = Instant::now();
    let mut s =
        TcpStream::connect_timeout(&(SRV_IP, SINK_PORT).into_addr(), Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let block = vec![b'u'; 16 * 1024];
    let mut sent = 0;
    while match for_time {
        Some(d) => t.elapsed() < d,
        None => sent < bytes,
    } {
        let n = block.len().min(if for_time.is_some() {
            block.len()
        } else {
            bytes - sent
        });
        s.write_all(&block[..n])?;
        sent += n;
    }
    s.shutdown(Shutdown::Write)?;
    let mut k = [0u8; 1];
    s.read_exact(&mut k)
        .context("the sink did not acknowledge")?;
    Ok(t.elapsed())
}

trait IntoAddr {
    fn into_addr(self) -> std::net::SocketAddr;
}

impl IntoAddr for (&str, u16) {
    fn into_addr(self) -> std::net::SocketAddr {
        std::net::SocketAddr::new(self.0.parse().unwrap_or([10, 77, 0, 2].into()), self.1)
    }
}

/// (bed time, milliseconds) of every ping reply.
pub type Samples = Arc<Mutex<Vec<(f64, f64)>>>;

/// `ping` every 200 ms from the laptop namespace, for the whole run.
pub struct Pinger {
    child: Child,
}

impl Pinger {
    pub fn start(lap: &Netns, start_unix: f64, out: Samples) -> Result<Pinger> {
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", &lap.name, "ping", "-n", "-D", "-i", "0.2", SRV_IP,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run ping (iputils-ping is installed by `make test-deps`)")?;
        let stdout = child.stdout.take().context("ping's output")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                // "[1764600000.123456] 64 bytes from …: icmp_seq=1 ttl=64 time=40.3 ms"
                let ts = line
                    .strip_prefix('[')
                    .and_then(|r| r.split(']').next())
                    .and_then(|t| t.parse::<f64>().ok());
                let ms = line
                    .split("time=")
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|t| t.parse::<f64>().ok());
                if let (Some(ts), Some(ms), Ok(mut v)) = (ts, ms, out.lock()) {
                    v.push((ts - start_unix, ms));
                }
            }
        });
        Ok(Pinger { child })
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A GET about once a second while `on` holds: (start time, seconds).
pub fn web_loop(
    lap: &Netns,
    link_start: Instant,
    on: Arc<AtomicBool>,
    out: Samples,
) -> std::thread::JoinHandle<()> {
    lap.spawn(move || loop {
        if on.load(Ordering::Relaxed) {
            let t = link_start.elapsed().as_secs_f64();
            match get() {
                Ok(d) => {
                    if let Ok(mut v) = out.lock() {
                        v.push((t, d.as_secs_f64()));
                    }
                }
                Err(e) => eprintln!("netbed: GET failed: {e:#}"),
            }
            let rest = 1.0 - (link_start.elapsed().as_secs_f64() - t);
            if rest > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(rest));
            }
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}
