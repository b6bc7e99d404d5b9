//! Network-aware throttling: what the connection is (sensing), what the
//! rules say about it (policy), how fast uploads may go without hurting the
//! user's own traffic (a delay-based controller), and the enforcement on
//! every upload stream (kernel pacing of the sockets, a gate for the bytes).
//!
//! It owns the [`Throttle`] a process shares between all its uploads. It
//! must not know what a backup, a repository or a server is: uploaders tell
//! it where they send to ([`Throttle::watch`]) and pass their bytes through
//! [`Throttle::admit`]; that is the whole contract.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod conditions;
pub mod controller;
mod gate;
pub mod local;
pub mod pacing;
pub mod policy;
pub mod probe;
pub mod sense;

pub use conditions::{Battery, Conditions, LinkKind, Sensor};
pub use controller::{Controller, ControllerConfig};
pub use policy::{Action, Decision, Origin, Rule, When};

/// How often the controller looks at the sockets: a few times per round
/// trip on a WAN, so a foreground flow's queue is seen within ~50 ms.
const TICK: Duration = Duration::from_millis(20);
/// How often the sensors are read: a change (metered on) must stop uploads
/// within 2 s, draining the sockets included; while uploads run, twice as
/// often (a quarter second is a tenth of that budget; when idle, nothing
/// has to stop).
const SENSE_EVERY: Duration = Duration::from_millis(500);
const SENSE_EVERY_BUSY: Duration = Duration::from_millis(250);
/// How often `/proc/self/fd` is searched for new upload sockets.
const SCAN_EVERY: Duration = Duration::from_millis(40);
/// Unsent bytes an upload socket may hold: what still leaves after a pause.
/// A pause never lowers the pacing rate instead: the kernel schedules the
/// next packet at the old rate's spacing, and a socket paced at a trickle
/// would sit out its timer (tens of seconds) after the pause ends.
const NOTSENT_LOWAT: u32 = 16 * 1024;

/// Everything the user sees about throttling (`tidemark status`, the tray).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThrottleStatus {
    pub decision: Decision,
    pub conditions: Conditions,
    /// The rate in force (bytes/s); `None` when nothing limits uploads.
    pub rate: Option<f64>,
    /// The link's capacity as measured by the controller (bytes/s).
    pub capacity: Option<f64>,
    pub base_rtt_ms: Option<f64>,
    pub queueing_ms: f64,
    /// What other programs on this machine send through the interface our
    /// uploads use (bytes/s): the traffic uploads give way to at once.
    pub other_traffic: f64,
    /// Upload sockets the kernel paces right now.
    pub paced_sockets: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub admin: Vec<Rule>,
    pub user: Vec<Rule>,
}

struct State {
    rules: Rules,
    status: ThrottleStatus,
}

struct Inner {
    gate: gate::Gate,
    peers: Mutex<Vec<SocketAddr>>,
    state: Mutex<State>,
}

/// The process's throttle; cheap to clone, stops its thread when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Throttle {
    inner: Arc<Inner>,
}

impl Throttle {
    /// A throttle that never limits anything (local folders, tests).
    pub fn unlimited() -> Throttle {
        Throttle {
            inner: Arc::new(Inner::new(Decision {
                action: Action::Full,
                origin: Origin::Default,
                reason: "throttling is off".into(),
            })),
        }
    }

    /// Starts sensing and controlling on a thread of its own.
    pub fn start(rules: Rules, sensor: Box<dyn Sensor>, cfg: ControllerConfig) -> Throttle {
        let inner = Arc::new(Inner::new(Decision {
            action: Action::Yield,
            origin: Origin::Default,
            reason: "starting".into(),
        }));
        if let Ok(mut s) = inner.state.lock() {
            s.rules = rules;
        }
        let weak = Arc::downgrade(&inner);
        let spawned = std::thread::Builder::new()
            .name("throttle".into())
            .spawn(move || run(weak, sensor, cfg));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the throttle thread; uploads run unthrottled");
        }
        Throttle { inner }
    }

    /// Uploads to `addr` (anything `host:port`-like) are governed from now on.
    pub fn watch(&self, addr: impl ToSocketAddrs) {
        let Ok(addrs) = addr.to_socket_addrs() else {
            return;
        };
        if let Ok(mut p) = self.inner.peers.lock() {
            for a in addrs {
                if !p.contains(&a) {
                    p.push(a);
                }
            }
        }
    }

    /// Whether a request body may go to the HTTP stack whole instead of in
    /// quanta through [`Throttle::admit`]: nothing holds uploads back (no
    /// pause, no rate) and every watched peer is this machine. There a
    /// 16 MiB pack leaves in milliseconds, so a pause that starts meanwhile
    /// still holds well within its 2 s; fed in 4 KiB quanta the same pack
    /// cost 4,000 hand-overs between threads.
    pub fn unpaced_to_this_machine(&self) -> bool {
        let local = self
            .inner
            .peers
            .lock()
            .map(|p| !p.is_empty() && p.iter().all(|a| a.ip().is_loopback()))
            .unwrap_or(false);
        local && self.inner.gate.is_unlimited()
    }

    /// Call before sending `bytes`: blocks while paused or over the rate.
    /// Keep quanta small (a few KiB) so the bytes leave evenly spaced.
    pub fn admit(&self, bytes: usize) {
        self.inner.gate.admit(bytes);
    }

    pub fn set_rules(&self, rules: Rules) {
        if let Ok(mut s) = self.inner.state.lock() {
            s.rules = rules;
        }
    }

    pub fn status(&self) -> ThrottleStatus {
        self.inner
            .state
            .lock()
            .map(|s| s.status.clone())
            .unwrap_or_else(|p| p.into_inner().status.clone())
    }
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("decision", &self.status().decision)
            .finish()
    }
}

impl Inner {
    fn new(decision: Decision) -> Inner {
        Inner {
            gate: gate::Gate::default(),
            peers: Mutex::new(Vec::new()),
            state: Mutex::new(State {
                rules: Rules::default(),
                status: ThrottleStatus {
                    decision,
                    conditions: Conditions::default(),
                    rate: None,
                    capacity: None,
                    base_rtt_ms: None,
                    queueing_ms: 0.0,
                    other_traffic: 0.0,
                    paced_sockets: 0,
                },
            }),
        }
    }
}

/// Probes the first watched endpoint while uploads are busy.
fn probe_loop(
    weak: Weak<Inner>,
    samples: probe::Samples,
    busy: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        // SSH servers log every connection; SFTP uploads are not probed.
        let peer = inner
            .peers
            .lock()
            .ok()
            .and_then(|p| p.iter().find(|a| a.port() != 22).copied());
        let open = inner.gate.is_open();
        drop(inner);
        let t = Instant::now();
        if let (Some(peer), true, true) = (peer, busy.load(Ordering::Relaxed), open) {
            if let Some(rtt) = probe::connect_rtt(peer) {
                samples.push(Instant::now(), rtt);
            }
        }
        std::thread::sleep(probe::EVERY.saturating_sub(t.elapsed()));
    }
}

fn run(weak: Weak<Inner>, mut sensor: Box<dyn Sensor>, cfg: ControllerConfig) {
    let mut controller = Controller::new(cfg);
    let samples = probe::Samples::default();
    let uploading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (w, s, b) = (weak.clone(), samples.clone(), Arc::clone(&uploading));
        let _ = std::thread::Builder::new()
            .name("throttle-probe".into())
            .spawn(move || probe_loop(w, s, b));
    }
    let mut conditions = Conditions::default();
    let mut decision = policy::decide(&[], &[], &conditions, chrono::Local::now().naive_local());
    let mut sensed: Option<Instant> = None;
    let mut scanned: Option<Instant> = None;
    let mut local_only = false;
    let mut sent = SentRate::default();
    let mut fds: Vec<i32> = Vec::new();
    let mut applied: Vec<(i32, Option<u64>)> = Vec::new();
    let mut local = local::LocalTraffic::default();
    let mut iface: Option<String> = None;
    let mut iface_ip: Option<std::net::IpAddr> = None;
    // A per-tick trace of the controller for the network test bed's plots
    // and for anyone tuning it: TIDEMARK_THROTTLE_TRACE=file.csv.
    let mut trace = std::env::var_os("TIDEMARK_THROTTLE_TRACE")
        .and_then(|p| std::fs::File::create(p).ok())
        .map(std::io::BufWriter::new);
    let born = Instant::now();
    let born_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let now = Instant::now();
        // Rules, sensors and the clock change the decision on a scale of
        // seconds: it is taken with each reading, not on every tick.
        let every = if uploading.load(std::sync::atomic::Ordering::Relaxed) {
            SENSE_EVERY_BUSY
        } else {
            SENSE_EVERY
        };
        if sensed.is_none_or(|t| now - t >= every) {
            sensed = Some(now);
            conditions = sensor.read();
            let local = chrono::Local::now().naive_local();
            if let Ok(s) = inner.state.lock() {
                decision = policy::decide(&s.rules.admin, &s.rules.user, &conditions, local);
            }
        }
        if scanned.is_none_or(|t| now - t >= SCAN_EVERY) {
            scanned = Some(now);
            let peers = inner.peers.lock().map(|p| p.clone()).unwrap_or_default();
            local_only = !peers.is_empty() && peers.iter().all(|p| p.ip().is_loopback());
            fds = if peers.is_empty() {
                Vec::new()
            } else {
                pacing::sockets_to(&peers)
            };
            applied.retain(|(fd, _)| fds.contains(fd));
            // The interface is looked up (a dump of every address) only
            // when the address our uploads send from changes, not on every
            // scan.
            let ip = fds.first().and_then(|fd| pacing::local_ip(*fd));
            if ip != iface_ip {
                local.reset();
                iface = ip.and_then(pacing::interface_with);
                iface_ip = ip;
            }
        }
        let infos: Vec<(i32, pacing::TcpInfo)> = fds
            .iter()
            .filter_map(|fd| Some((*fd, pacing::tcp_info(*fd)?)))
            .collect();
        let busy: Vec<&pacing::TcpInfo> =
            infos.iter().map(|(_, i)| i).filter(|i| i.busy()).collect();
        uploading.store(!busy.is_empty(), std::sync::atomic::Ordering::Relaxed);
        // Other programs' traffic through our interface, read on every tick
        // while upload sockets exist so the counters stay continuous. Only
        // where every socket reports what it sent: otherwise our own bytes
        // would read as someone else's.
        let ours: Option<Vec<(i32, u64)>> = infos
            .iter()
            .map(|(fd, i)| Some((*fd, i.bytes_sent?)))
            .collect();
        controller.set_sent(sent.sample(now, ours.as_deref()));
        let foreground = match (iface.as_deref().and_then(local::tx_bytes), ours) {
            (Some(tx), Some(ours)) => local.sample(now, tx, &ours),
            _ => {
                local.reset();
                0.0
            }
        };

        let (open, rate) = match decision.action {
            // The gate stops new bytes. What the sockets, the TLS library
            // and the HTTP stack already hold (~100 KB a connection) leaves
            // at just under the link's measured capacity rather than at the
            // last rate: right after yielding that rate can be half of it or
            // less, and the drain then took most of the 2 s a pause may take.
            Action::Pause => (
                false,
                Some(
                    controller
                        .rate()
                        .max(controller.capacity().map_or(0.0, |k| 0.9 * k)),
                ),
            ),
            Action::Full => (true, None),
            // Uploads to this machine itself cross no link anyone shares:
            // there is nobody to yield to (and the handshake probes would
            // only measure CPU contention). Caps and pauses still hold.
            Action::Yield if local_only => (true, None),
            Action::Yield | Action::LimitMbps(_) | Action::SharePercent(_) => {
                let ceiling = match decision.action {
                    Action::LimitMbps(m) => m * 125_000.0,
                    Action::SharePercent(p) => controller
                        .capacity()
                        .map_or(f64::INFINITY, |c| c * p / 100.0),
                    _ => f64::INFINITY,
                };
                controller.set_ceiling(ceiling);
                controller.set_foreground(foreground);
                // The handshake probes' RTT; without them (no answer, an
                // SFTP endpoint) the worst smoothed RTT of the busy sockets.
                let rtt = samples
                    .current(now)
                    .or_else(|| busy.iter().map(|i| i.srtt).max());
                match rtt {
                    Some(srtt) if !busy.is_empty() => {
                        controller.update(now, controller::Sample { srtt });
                    }
                    _ => controller.idle(),
                }
                (true, Some(controller.rate()))
            }
        };

        // Kernel pacing: the rate split over the sockets that have data.
        let share = busy.len().max(1) as f64;
        let target = rate.map(|r| (r / share).max(1.0) as u64);
        let mut paced = 0;
        for (fd, _) in &infos {
            let prev = applied.iter().position(|(f, _)| f == fd);
            if prev.is_none() {
                pacing::set_notsent_lowat(*fd, NOTSENT_LOWAT);
            }
            // Within 1% of what the kernel has: leave it (and remember what
            // the kernel has, not the new target, or small steps would
            // add up without ever reaching it).
            if prev.is_some_and(|i| close(applied[i].1, target)) {
                paced += 1;
            } else if pacing::set_pacing(*fd, target) {
                paced += 1;
                match prev {
                    Some(i) => applied[i].1 = target,
                    None => applied.push((*fd, target)),
                }
            }
        }
        // Where the kernel paces, the gate only guards against the sending
        // buffer running far ahead; elsewhere it enforces the rate itself.
        let gate_rate = match rate {
            Some(r) if paced > 0 => r * 1.25 + 64_000.0,
            Some(r) => r,
            None => f64::INFINITY,
        };
        inner
            .gate
            .set(open, if open { gate_rate } else { f64::INFINITY });

        if let Some(w) = trace.as_mut() {
            use std::io::Write;
            let srtt = samples.current(now).unwrap_or_default();
            let per: Vec<String> = busy
                .iter()
                .map(|i| {
                    format!(
                        "{:.1}/{}/{}/cw{}/p{}/m{}/w{}",
                        i.srtt.as_secs_f64() * 1e3,
                        i.unacked,
                        i.notsent,
                        i.cwnd,
                        i.pacing_rate,
                        i.max_pacing_rate,
                        i.snd_wnd.unwrap_or(0)
                    )
                })
                .collect();
            let _ = writeln!(
                w,
                "{:.3},{:.0},{:.2},{:.2},{:.2},{:.0},{:.0},{},{},{:?},{}",
                born_unix + born.elapsed().as_secs_f64(),
                rate.unwrap_or(-1.0),
                srtt.as_secs_f64() * 1e3,
                controller.base_rtt().unwrap_or_default().as_secs_f64() * 1e3,
                controller.queueing_delay().as_secs_f64() * 1e3,
                controller.capacity().unwrap_or(-1.0),
                foreground,
                busy.len(),
                paced,
                decision.action,
                per.join(" ")
            );
            let _ = w.flush();
        }
        if let Ok(mut s) = inner.state.lock() {
            s.status = ThrottleStatus {
                decision: decision.clone(),
                conditions: conditions.clone(),
                rate: if open { rate } else { Some(0.0) },
                capacity: controller.capacity(),
                base_rtt_ms: controller.base_rtt().map(|d| d.as_secs_f64() * 1000.0),
                queueing_ms: controller.queueing_delay().as_secs_f64() * 1000.0,
                other_traffic: foreground,
                paced_sockets: paced,
            };
        }
        drop(inner);
        std::thread::sleep(TICK);
    }
}

fn close(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a as f64 - b as f64).abs() <= 0.01 * b as f64,
        (None, None) => true,
        _ => false,
    }
}

/// What the upload sockets sent over the last half second, from the
/// per-socket `tcpi_bytes_sent` counters (sockets come and go: only the
/// growth of a socket seen twice counts).
///
/// A moment with no upload socket (a connection being replaced) adds
/// nothing but keeps the window: starting over there had left the sent
/// rate unknown for half a second, and a probe's cut that fell in it set
/// the knee at the rate, a third above the test bed's link.
#[derive(Default)]
struct SentRate {
    last: Vec<(i32, u64)>,
    total: u64,
    window: std::collections::VecDeque<(Instant, u64)>,
}

const SENT_WINDOW: Duration = Duration::from_millis(500);

impl SentRate {
    /// `socks`: every upload socket's byte counter, or None where a socket
    /// does not report one (what left is then unknown).
    fn sample(&mut self, now: Instant, socks: Option<&[(i32, u64)]>) -> Option<f64> {
        let Some(socks) = socks else {
            *self = SentRate::default();
            return None;
        };
        for (fd, n) in socks {
            if let Some((_, before)) = self.last.iter().find(|(f, _)| f == fd) {
                self.total += n.saturating_sub(*before);
            }
        }
        self.last = socks.to_vec();
        self.window.push_back((now, self.total));
        while self
            .window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > SENT_WINDOW)
        {
            self.window.pop_front();
        }
        let (t0, b0) = *self.window.front()?;
        let dt = now.duration_since(t0).as_secs_f64();
        (dt >= 0.8 * SENT_WINDOW.as_secs_f64()).then(|| (self.total - b0) as f64 / dt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_rate_counts_growth_of_sockets_seen_twice() {
        let mut r = SentRate::default();
        let t = Instant::now();
        assert_eq!(r.sample(t, Some(&[(3, 1000)])), None);
        for i in 1..=10u64 {
            let now = t + Duration::from_millis(50 * i);
            let got = r.sample(now, Some(&[(3, 1000 + 5_000 * i), (4, 7)]));
            if i >= 8 {
                // 5,000 bytes every 50 ms: 100 kB/s; the new socket adds nothing.
                let v = got.expect("a full window");
                assert!((v - 100_000.0).abs() < 1.0, "{v}");
            }
        }
        // A moment between connections: the window goes on, with nothing
        // added, and a new connection's growth counts from its second
        // reading.
        let gap = r.sample(t + Duration::from_millis(550), Some(&[]));
        assert!(gap.is_some_and(|v| v > 0.0 && v < 100_000.0), "{gap:?}");
        r.sample(t + Duration::from_millis(600), Some(&[(5, 0)]));
        let after = r.sample(t + Duration::from_millis(650), Some(&[(5, 20_000)]));
        assert!(after.is_some(), "known at once across the change");
        assert_eq!(r.sample(t + Duration::from_secs(1), None), None);
    }

    #[test]
    fn bodies_go_whole_only_to_this_machine_and_only_when_nothing_holds_them() {
        let t = Throttle::unlimited();
        assert!(!t.unpaced_to_this_machine(), "no peer yet");
        t.watch("127.0.0.1:8443");
        assert!(t.unpaced_to_this_machine());
        t.inner.gate.set(false, f64::INFINITY);
        assert!(!t.unpaced_to_this_machine(), "paused");
        t.inner.gate.set(true, 125_000.0);
        assert!(!t.unpaced_to_this_machine(), "capped");
        t.inner.gate.set(true, f64::INFINITY);
        t.watch("192.0.2.7:8443");
        assert!(!t.unpaced_to_this_machine(), "another machine is a peer");
    }
}
