//! The emulated WAN link: laptop ⇄ router ⇄ server.
//!
//! The laptop reaches a router namespace over a veth pair, as a laptop
//! reaches its home router. The router forwards to the server through a TUN
//! device; this process reads what the router sends there, holds it for the
//! one-way delay (this kernel has no netem) and writes it into the server
//! namespace's TUN, and the same way back. Rate and drop-tail buffer are
//! `tc tbf` on the router's two egress devices (to the server: the uplink;
//! to the laptop: the downlink).
//!
//! The bottleneck queue must sit in a router, not on the laptop's own
//! interface: there, TCP Small Queues would see it and keep it short, and
//! an uncontrolled upload would look far kinder than it is on a real link.
//! Every packet leaving the bottleneck towards the server is logged, so the
//! backup's and the foreground's rates are measured on the wire.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::ns::Netns;

pub const LAP_IP: &str = "10.77.1.1";
const ROUTER_LAN: &str = "10.77.1.2";
const ROUTER_WAN: &str = "10.77.2.1";
pub const SRV_IP: &str = "10.77.2.2";

#[derive(Debug, Clone, Copy)]
pub struct Profile {
    pub name: &'static str,
    pub up_kbit: u32,
    pub down_kbit: u32,
    pub one_way: Duration,
    pub up_buffer: u32,
    pub down_buffer: u32,
}

/// One packet seen on the link, laptop to server.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub at: f64,
    pub len: u32,
    pub dst_port: u16,
}

pub struct Link {
    pub up: Arc<Mutex<Vec<Seen>>>,
    pub start: Instant,
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn open_tun(name: &str) -> Result<File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("/dev/net/tun is missing: the test bed needs TUN devices")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads an ifreq, which IfReq lays out exactly.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if r != 0 {
        bail!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    }
    Ok(f)
}

fn shape(ns: &Netns, dev: &str, kbit: u32, buffer: u32) -> Result<()> {
    // A burst of two packets: the rate holds at packet scale, as on a
    // modem's uplink; `limit` is the drop-tail buffer in bytes.
    ns.exec(&[
        "tc",
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        &format!("{kbit}kbit"),
        "burst",
        "3200",
        "limit",
        &buffer.to_string(),
    ])
}

impl Link {
    /// Builds the link between `lap` and `srv`, through `router`, for `p`.
    pub fn build(lap: &Netns, router: &Netns, srv: &Netns, p: Profile) -> Result<Link> {
        crate::ns::sh(&[
            "ip",
            "link",
            "add",
            "tmk-lan0",
            "netns",
            &lap.name,
            "type",
            "veth",
            "peer",
            "name",
            "tmk-lan1",
            "netns",
            &router.name,
        ])?;
        lap.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{LAP_IP}/24"),
            "dev",
            "tmk-lan0",
        ])?;
        lap.exec(&["ip", "link", "set", "tmk-lan0", "up"])?;
        lap.exec(&["ip", "route", "add", "default", "via", ROUTER_LAN])?;
        router.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{ROUTER_LAN}/24"),
            "dev",
            "tmk-lan1",
        ])?;
        router.exec(&["ip", "link", "set", "tmk-lan1", "up"])?;
        router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let tr = router.run(|| open_tun("tmk-wan0"))?;
        let ts = srv.run(|| open_tun("tmk-wan1"))?;
        for (ns, dev, me, peer) in [
            (router, "tmk-wan0", ROUTER_WAN, SRV_IP),
            (srv, "tmk-wan1", SRV_IP, ROUTER_WAN),
        ] {
            ns.exec(&["ip", "addr", "add", me, "peer", peer, "dev", dev])?;
            ns.exec(&["ip", "link", "set", dev, "mtu", "1500", "up"])?;
        }
        srv.exec(&["ip", "route", "add", "default", "via", ROUTER_WAN])?;
        shape(router, "tmk-wan0", p.up_kbit, p.up_buffer)?;
        shape(router, "tmk-lan1", p.down_kbit, p.down_buffer)?;
        let link = Link {
            up: Arc::new(Mutex::new(Vec::new())),
            start: Instant::now(),
        };
        forward(
            tr.try_clone()?,
            ts.try_clone()?,
            p.one_way,
            Some((Arc::clone(&link.up), link.start)),
        );
        forward(ts, tr, p.one_way, None);
        Ok(link)
    }

    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Bytes per second laptop→server on `port` (or on every other port when
    /// `port` is `None`) between `from` and `to` seconds.
    pub fn rate(&self, port: Option<u16>, from: f64, to: f64) -> f64 {
        let up = self.up.lock().map(|v| v.clone()).unwrap_or_default();
        let bytes: u64 = up
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .filter(|s| match port {
                Some(p) => s.dst_port == p,
                None => s.dst_port != crate::BACKUP_PORT,
            })
            .map(|s| u64::from(s.len))
            .sum();
        bytes as f64 / (to - from).max(1e-6)
    }
}

fn forward(
    mut from: File,
    mut to: File,
    delay: Duration,
    log: Option<(Arc<Mutex<Vec<Seen>>>, Instant)>,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        realtime();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match from.read(&mut buf) {
                Ok(n) => n,
                Err(_) => return,
            };
            let now = Instant::now();
            let pkt = buf[..n].to_vec();
            if let Some((log, start)) = &log {
                if let Ok(mut l) = log.lock() {
                    l.push(Seen {
                        at: (now - *start).as_secs_f64(),
                        len: n as u32,
                        dst_port: dst_port(&pkt),
                    });
                }
            }
            if tx.send((now + delay, pkt)).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        realtime();
        for (due, pkt) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write(&pkt).is_err() {
                return;
            }
        }
    });
}

/// A real link's delay does not depend on the endpoints' CPU. The
/// forwarding threads share two cores with a client compressing and
/// encrypting and a server checking every chunk; at normal priority they
/// were now and then woken milliseconds late, which every flow (pings,
/// web fetches, the backup's probes) read as queueing that no router would
/// have caused. Real-time priority keeps the emulated link a link.
fn realtime() {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: `param` is a valid, initialised sched_param for this thread.
    let r = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if r != 0 {
        eprintln!(
            "netbed: no real-time priority for the link ({}): its delay will jitter under load",
            std::io::Error::from_raw_os_error(r)
        );
    }
}

/// The TCP destination port of an IPv4 packet, 0 for anything else.
fn dst_port(p: &[u8]) -> u16 {
    if p.len() < 20 || p[0] >> 4 != 4 || p[9] != 6 {
        return 0;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    match p.get(ihl + 2..ihl + 4) {
        Some(b) => u16::from_be_bytes([b[0], b[1]]),
        None => 0,
    }
}
