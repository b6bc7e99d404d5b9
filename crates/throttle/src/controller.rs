//! The delay-based rate controller that makes backups yield to the user's
//! own traffic, in the spirit of LEDBAT++ (RFC 6817 and
//! draft-irtf-iccrg-ledbat-plus-plus): queueing delay is the round-trip time
//! of our own transfers minus the lowest one seen lately; above a small
//! target the rate is cut multiplicatively, below it the rate grows.
//!
//! It differs from LEDBAT where a *rate* (enforced by kernel pacing) rather
//! than a window is controlled, and where the one-way delay LEDBAT wants is
//! not available to a TCP sender:
//! - The target is 5 ms, not LEDBAT's 60-100 ms: a video call notices 60 ms,
//!   and a paced flow below the bottleneck rate builds no queue at all, so a
//!   small target costs little throughput.
//! - Growth is proportional to the rate (a few percent per second) instead
//!   of one segment per RTT, which would overshoot a 2 Mbit/s uplink by half
//!   its capacity before the delay signal arrives; after yielding, the rate
//!   climbs quickly back to just below the last rate at which the queue
//!   started to grow (the "knee"), as CUBIC does towards its last maximum.
//! - It cruises at nine tenths of the knee and probes above it only every
//!   few seconds, as BBR does: the tenth left free is what the user's own
//!   traffic needs the moment it starts (the ACKs of a download alone take
//!   a tenth of a 2 Mbit/s uplink beside a 10 Mbit/s downlink), and a queue
//!   we build while probing lasts a fraction of a second in every few.
//! - The base is the sliding minimum of the kernel's *smoothed* RTT, not of
//!   single samples: the smoothed RTT carries the receiver's delayed-ACK
//!   wait (the first of each pair of segments waits for the second), and
//!   comparing like with like cancels it. Kernel pacing sends segments in
//!   pairs even at low rates (`tcp_min_tso_segs` = 2), so that wait does not
//!   grow as the rate falls.
//!
//! Pure: time and samples come in, a rate goes out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tuning; every value says why it is what it is.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Queueing delay we allow ourselves to add: under half the 10 ms a
    /// person's ping may grow by at the median, with room for noise.
    pub target: Duration,
    /// Never slower than this while data waits (bytes/s): keeps RTT samples
    /// coming so the controller notices when the link frees up (64 kbit/s is
    /// ~3% of a 2 Mbit/s uplink).
    pub min_rate: f64,
    /// Start here (bytes/s): 1 Mbit/s is below most uplinks.
    pub initial_rate: f64,
    /// How long after a change of rate the delay signal shows it, beyond
    /// one round trip (the probe filter: two probes 50 ms apart).
    pub signal_delay: Duration,
    /// The share of the knee we cruise at between probes. On the test bed's
    /// 2 Mbit/s uplink a controller that rode at 96% of the link made web
    /// fetches beside it a third slower: their ACKs found the uplink full.
    pub cruise: f64,
    /// How long we cruise before probing above the knee again: the link is
    /// re-measured every few seconds, so a link that got faster is found
    /// soon, while most of the time nothing of ours sits in the queue.
    pub cruise_for: Duration,
    /// A queue under four times the target must show this long before it is
    /// cut for: longer than one reading of the probe filter (two probes 50 ms
    /// apart), so a delay spike that one pair of probes saw is ridden out.
    /// On a busy machine such spikes came every second or two, and one at
    /// start-up, taken for the link's capacity, held a backup at a fifth of
    /// the link (P1 on the bed). A queue we build ourselves keeps growing
    /// and is cut 60 ms later, a few milliseconds deeper.
    pub spike_filter: Duration,
    /// Relative growth per second while probing above the cruise level.
    pub probe_growth: f64,
    /// Relative growth per second before any congestion was seen (start-up).
    pub startup_growth: f64,
    /// The base RTT is the minimum over this many buckets...
    pub base_buckets: usize,
    /// ...of this length each: long enough to span several of our own
    /// probing cycles (a queue we built drains within each), short enough
    /// that a route change or a mis-measured start is forgotten in 30 s.
    pub base_bucket: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            target: Duration::from_millis(5),
            min_rate: 8_000.0,
            initial_rate: 125_000.0,
            signal_delay: Duration::from_millis(100),
            spike_filter: Duration::from_millis(60),
            cruise: 0.9,
            cruise_for: Duration::from_secs(3),
            probe_growth: 0.12,
            startup_growth: 0.7,
            base_buckets: 10,
            base_bucket: Duration::from_secs(3),
        }
    }
}

/// One reading of our own transfers' round-trip times.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Smoothed RTT (TCP_INFO `tcpi_rtt`).
    pub srtt: Duration,
}

#[derive(Debug, Clone)]
pub struct Controller {
    cfg: ControllerConfig,
    rate: f64,
    ceiling: f64,
    knee: Option<f64>,
    base: VecDeque<(Instant, Duration)>,
    last: Option<Instant>,
    last_cut: Option<Instant>,
    /// Since when the rate has sat at the cruise level (None: below it,
    /// recovering, or before any knee was seen).
    cruising: Option<Instant>,
    /// When the next probe above the cruise level is due: `cruise_for`
    /// after the last probe, or after yielding to someone else's queue. A
    /// small cut at the cruise level (a delay spike) does not put it off:
    /// on a busy machine spikes came every second or two, and each one
    /// moved the knee down a little while the probe that could move it
    /// back up never came.
    probe_due: Option<Instant>,
    /// The queue fell below half the target since the last cut.
    queue_cleared: bool,
    /// Since when the queue has been above the target.
    above_since: Option<Instant>,
    /// A cut while probing has confirmed the knee. The first knee comes
    /// from the start-up's first cut, which can be a delay spike at a
    /// fraction of the link (on the test bed: one at half of it); until a
    /// probe confirms it, start-up goes on from the cruise level at once.
    confirmed: bool,
    /// The rate at the last cut that set or probed the knee.
    probe_cut_at: Option<f64>,
    /// Other programs' outgoing traffic on this machine (bytes/s).
    foreground: f64,
    /// What our sockets actually sent over the last half second (bytes/s).
    sent: Option<f64>,
    queueing: Duration,
}

impl Controller {
    pub fn new(cfg: ControllerConfig) -> Self {
        Controller {
            rate: cfg.initial_rate,
            cfg,
            ceiling: f64::INFINITY,
            knee: None,
            base: VecDeque::new(),
            last: None,
            last_cut: None,
            cruising: None,
            probe_due: None,
            queue_cleared: true,
            above_since: None,
            confirmed: false,
            probe_cut_at: None,
            foreground: 0.0,
            sent: None,
            queueing: Duration::ZERO,
        }
    }

    /// The rate in force (bytes/s).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The rate at which our own traffic last started to queue: the best
    /// estimate of the link's capacity (bytes/s), once one was seen.
    pub fn capacity(&self) -> Option<f64> {
        self.knee
    }

    pub fn queueing_delay(&self) -> Duration {
        self.queueing
    }

    pub fn base_rtt(&self) -> Option<Duration> {
        self.base.iter().map(|(_, d)| *d).min()
    }

    /// A policy limit (bytes/s): the controller never asks for more, so it
    /// does not wind up above a cap it cannot use.
    pub fn set_ceiling(&mut self, ceiling: f64) {
        self.ceiling = ceiling.max(self.cfg.min_rate);
        self.rate = self.rate.min(self.ceiling);
    }

    /// What other programs on this machine send through the same interface
    /// (bytes/s; see [`crate::local`]). The rate is held below the cruise
    /// level minus that, with a tenth to spare, at once: the user's own
    /// upload does not have to queue behind ours before we notice it, and
    /// we do not climb back while it still runs.
    /// What the upload sockets really sent lately (TCP_INFO), if known.
    pub fn set_sent(&mut self, bytes_per_sec: Option<f64>) {
        self.sent = bytes_per_sec.filter(|r| r.is_finite() && *r > 0.0);
    }

    /// The rate a cut says the link holds: the rate in force, but no more
    /// than what really left, since a fast start-up can set a rate well
    /// above the link before the queue it builds shows (on the test bed's
    /// 2 Mbit/s link a knee of 2.8 Mbit/s was confirmed that way, and the
    /// backup cruised above the link with a standing queue). Not below
    /// 0.7 x the rate: a gap between packs must not drag the knee down.
    fn cut_at(&self) -> f64 {
        match self.sent {
            Some(s) => self.rate.min(s.max(0.7 * self.rate)),
            None => self.rate,
        }
    }

    pub fn set_foreground(&mut self, bytes_per_sec: f64) {
        self.foreground = bytes_per_sec.max(0.0);
        if let Some(room) = self.room() {
            self.rate = self.rate.min(room);
        }
    }

    /// The most we may send beside the user's own traffic, once the knee
    /// is known.
    fn room(&self) -> Option<f64> {
        let k = self.knee?;
        (self.foreground > self.foreground_floor(k))
            .then(|| (self.cfg.cruise * k - 1.1 * self.foreground).max(self.cfg.min_rate))
    }

    /// Below this, other traffic fits in the tenth of the link the cruise
    /// level leaves free, and readings are mostly noise: our handshake
    /// probes, a socket's last bytes before it closed. Blips of 200-450
    /// kbit/s every second or two had held one bed run's probes down and
    /// the backup at 44% of the link.
    fn foreground_floor(&self, knee: f64) -> f64 {
        ((1.0 - self.cfg.cruise) * knee).max(8_000.0)
    }

    /// No data waiting: hold the rate, but forget the clock so an idle gap
    /// is not read as a long stretch without congestion.
    pub fn idle(&mut self) {
        self.last = None;
    }

    pub fn update(&mut self, now: Instant, s: Sample) -> f64 {
        let rtt = s.srtt.as_secs_f64();
        self.learn_base(now, s.srtt);
        let base = self.base_rtt().map_or(rtt, |b| b.as_secs_f64());
        let dt = self
            .last
            .map(|l| now.saturating_duration_since(l).as_secs_f64())
            .unwrap_or(0.0)
            .min(0.5);
        self.last = Some(now);
        let q = (rtt - base).max(0.0);
        self.queueing = Duration::from_secs_f64(q);
        // On a slow uplink one full-size packet ahead of a probe is already
        // several milliseconds (6 ms at 2 Mbit/s): the target must sit above
        // that noise, or the controller cuts for packets it sent itself.
        let serialisation = self.knee.map_or(0.0, |k| 1500.0 / k);
        let target = self.cfg.target.as_secs_f64().max(1.2 * serialisation);
        if q > target {
            self.above_since.get_or_insert(now);
        } else {
            self.above_since = None;
        }
        // A queue not yet sustained may be a spike: the rate is held (no
        // cut, no growth) until it is seen again or gone.
        let sustained = q > 4.0 * target
            || self
                .above_since
                .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.spike_filter);
        if q > target && sustained {
            // A cut shows in the probes a round trip plus the probe filter
            // later; cutting again before that would cut for the same queue
            // twice and halve the rate for a bump (the queue keeps growing
            // until the cut arrives). Only a queue far above the target
            // (someone else's flow filling the buffer) is cut again every
            // base round trip, so yielding stays quick.
            let base_rtt = Duration::from_secs_f64(base).max(Duration::from_millis(20));
            let settle = base_rtt + self.cfg.signal_delay;
            let due = match self.last_cut {
                None => true,
                Some(c) => {
                    let since = now.saturating_duration_since(c);
                    since >= settle || (since >= base_rtt && q > 4.0 * target)
                }
            };
            if due {
                self.last_cut = Some(now);
                // The knee is where *our* rate met the capacity.
                // - A queue far above the target did not come from our own
                //   probing (we cut as soon as ours passes the target): it
                //   is someone else's flow or a transient and does not move
                //   the knee. On the test bed a 46 ms spike two seconds into
                //   a backup, at a quarter of the link, had set the knee
                //   there and kept the backup at 30% for 15 s.
                // - A cut while probing, above the cruise level, moves it.
                // - One below that is more likely a delay spike (a busy
                //   machine, a Wi-Fi retry: on the test bed they came every
                //   second or two at 75-85% of the link and dragged the
                //   knee, and the rate, down to 65% of it). The rate takes
                //   a small step down; a real queue there outlasts the cut
                //   and is cut again, harder. The knee moves only then, a
                //   tenth of the way, when the queue did not clear between
                //   the two cuts: a spike is gone by the next reading, and
                //   spikes every second had worn the knee down by a tenth
                //   of its value in ten seconds (the knee rises again only
                //   when a probe finds free capacity). A link that really
                //   got slower is learnt within some ten cuts.
                let ours = q < 4.0 * target;
                let probing = self.probing_above();
                let below_knee = self.knee.is_some() && !probing;
                let persists = !self.queue_cleared;
                self.queue_cleared = false;
                if ours {
                    let at = self.cut_at();
                    self.knee = Some(match self.knee {
                        Some(k) if probing => {
                            // Two probes' cuts within 15% of each other: a
                            // spike during the first fast probe had
                            // "confirmed" a knee at 2.4 Mbit/s on P1.
                            self.confirmed |= self
                                .probe_cut_at
                                .is_some_and(|r| (at / r - 1.0).abs() <= 0.15);
                            self.probe_cut_at = Some(at);
                            0.6 * k + 0.4 * at
                        }
                        Some(k) if self.rate >= 0.6 * k && persists => 0.9 * k + 0.1 * at,
                        Some(k) => k,
                        None => {
                            self.probe_cut_at = Some(at);
                            at
                        }
                    });
                }
                let severity = ((q - target) / target).min(4.0);
                let mut keep = (1.0 - 0.1 * (1.0 + severity)).max(0.5);
                if ours && below_knee {
                    keep = keep.max(0.9);
                }
                self.rate *= keep;
                self.cruising = None;
                if !(ours && below_knee) {
                    self.probe_due = None;
                }
            }
        } else if q <= target && dt > 0.0 {
            if q < target / 2.0 {
                self.queue_cleared = true;
            }
            let headroom = 1.0 - q / target;
            match self.knee {
                // Start-up: fast growth until the first queue shows where
                // the link's capacity is.
                None => self.rate += self.rate * headroom * self.cfg.startup_growth * dt,
                Some(k) => {
                    let cruise = self.cfg.cruise * k;
                    if self.rate < cruise {
                        // Recovering after a cut: back to the cruise level
                        // within about a second.
                        let recover = headroom * (cruise - self.rate) * (dt * 3.0).min(1.0);
                        let probe = self.rate * headroom * self.cfg.probe_growth * dt;
                        self.rate = (self.rate + recover.max(probe)).min(cruise);
                        if self.rate >= 0.999 * cruise {
                            self.rate = cruise;
                            self.cruising = Some(now);
                        }
                    } else {
                        let since = *self.cruising.get_or_insert(now);
                        let hold = if self.confirmed {
                            self.cfg.cruise_for
                        } else {
                            Duration::ZERO
                        };
                        let due = *self.probe_due.get_or_insert(now + hold);
                        if now >= due {
                            let p = now.saturating_duration_since(since.max(due));
                            // Probing: a few percent per second at first,
                            // faster the longer no queue shows (as CUBIC's
                            // convex phase), so a link that got faster is
                            // found within seconds; at start-up speed while
                            // the knee is unconfirmed.
                            let growth = if self.confirmed {
                                (self.cfg.probe_growth * (1.0 + p.as_secs_f64() / 2.0))
                                    .min(self.cfg.startup_growth)
                            } else {
                                self.cfg.startup_growth
                            };
                            self.rate += self.rate * headroom * growth * dt;
                            // Free capacity beyond the old knee, as far as
                            // the sockets really sent it: the rate runs
                            // ahead of the queue that shows it is too high,
                            // and a knee raised to the rate had carried a
                            // probe's overshoot (337 kB/s on a 250 kB/s
                            // link) into the cruise level for 15 s.
                            let seen = self.sent.map_or(self.rate, |s| s.min(self.rate));
                            if seen > k {
                                self.knee = Some(seen);
                            }
                        }
                    }
                }
            }
        }
        if let Some(room) = self.room() {
            self.rate = self.rate.min(room);
        }
        self.rate = self
            .rate
            .clamp(self.cfg.min_rate, self.ceiling.max(self.cfg.min_rate));
        self.rate
    }

    /// Above the cruise level: a queue now is one our own probing built.
    /// (Not "near the knee": a knee measured too high, as the start-up's
    /// overshoot leaves it, would then never be corrected, since the
    /// probe's cut comes before the rate gets near it.)
    fn probing_above(&self) -> bool {
        self.knee
            .is_some_and(|k| self.rate > 1.001 * self.cfg.cruise * k)
    }

    fn learn_base(&mut self, now: Instant, rtt: Duration) {
        if rtt.is_zero() {
            return;
        }
        match self.base.back_mut() {
            Some((start, min)) if now.saturating_duration_since(*start) < self.cfg.base_bucket => {
                *min = (*min).min(rtt);
            }
            _ => {
                self.base.push_back((now, rtt));
                while self.base.len() > self.cfg.base_buckets {
                    self.base.pop_front();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bottleneck link with a FIFO queue, fed by the controller's rate and
    /// by optional cross traffic, with the kernel's RTT smoothing (1/8).
    struct Link {
        capacity: f64,
        base: f64,
        queue: f64,
        buffer: f64,
        srtt: f64,
        clock: Instant,
    }

    impl Link {
        fn step(&mut self, ours: f64, cross: f64, dt: f64) -> f64 {
            let offered = ours + cross;
            self.queue = (self.queue + (offered - self.capacity) * dt).clamp(0.0, self.buffer);
            // The receiver ACKs segment pairs: the first waits one
            // serialisation time for its partner.
            let rtt = base_rtt_with_ack(self.base, self.capacity) + self.queue / self.capacity;
            self.srtt += (rtt - self.srtt) / 8.0;
            // What we got through: our share of the served bytes.
            let served = offered.min(self.capacity + self.queue / dt.max(1e-9));
            if offered > 0.0 {
                served * ours / offered
            } else {
                0.0
            }
        }
    }

    fn base_rtt_with_ack(base: f64, capacity: f64) -> f64 {
        base + 1448.0 / capacity
    }

    /// One simulated clock for a whole test, carried by the link.
    fn run(
        c: &mut Controller,
        link: &mut Link,
        secs: f64,
        cross: impl Fn(f64) -> f64,
    ) -> (f64, Vec<f64>) {
        let start = link.clock;
        let dt = 0.02;
        let mut sent = 0.0;
        let mut delays = Vec::new();
        let steps = (secs / dt) as usize;
        for i in 0..steps {
            let t = i as f64 * dt;
            let rate = c.rate();
            sent += link.step(rate, cross(t), dt) * dt;
            delays.push(link.queue / link.capacity);
            c.update(
                start + Duration::from_secs_f64(t + dt),
                Sample {
                    srtt: Duration::from_secs_f64(link.srtt),
                },
            );
        }
        link.clock = start + Duration::from_secs_f64(steps as f64 * dt);
        (sent / secs, delays)
    }

    /// Readings `ms` above the link's RTT for 100 ms (long enough to pass
    /// the spike filter), with no queue on the link (a late wake-up, a
    /// Wi-Fi retry), from one tick after the link's clock.
    #[test]
    fn a_cut_names_no_more_than_what_really_left() {
        let mut c = Controller::new(ControllerConfig::default());
        c.rate = 350_000.0;
        assert_eq!(c.cut_at(), 350_000.0, "nothing known of what left");
        c.set_sent(Some(255_000.0));
        assert_eq!(c.cut_at(), 255_000.0, "the ramp ran ahead of the link");
        c.set_sent(Some(50_000.0));
        assert!(
            (c.cut_at() - 245_000.0).abs() < 1e-6,
            "a gap between packs: 0.7 x the rate"
        );
        c.set_sent(Some(400_000.0));
        assert_eq!(c.cut_at(), 350_000.0, "never above the rate");
    }

    #[test]
    fn a_probe_raises_the_knee_no_further_than_what_really_left() {
        let mut c = Controller::new(ControllerConfig::default());
        c.knee = Some(240_000.0);
        c.rate = 0.9 * 240_000.0;
        // The link passes 250 kB/s; no queue has shown yet, as when the
        // ramp runs ahead of the signal.
        c.set_sent(Some(250_000.0));
        let t = Instant::now();
        let srtt = Duration::from_millis(40);
        for i in 0..100 {
            c.update(t + Duration::from_millis(20 * i), Sample { srtt });
        }
        assert!(c.rate() > 300_000.0, "the probe went on: {}", c.rate());
        assert_eq!(c.capacity(), Some(250_000.0));
    }

    fn spike(c: &mut Controller, link: &mut Link, ms: u64) {
        spike_for(c, link, ms, 5);
    }

    /// `readings` of them, one every 20 ms tick.
    fn spike_for(c: &mut Controller, link: &mut Link, ms: u64, readings: usize) {
        for _ in 0..readings {
            let t = link.clock + Duration::from_millis(20);
            let srtt = Duration::from_secs_f64(link.srtt) + Duration::from_millis(ms);
            c.update(t, Sample { srtt });
            link.clock = t;
        }
    }

    /// At least `share` of the link's capacity was used (bytes/s in `got`).
    fn assert_uses(got: f64, l: &Link, share: f64) {
        assert!(
            got > share * l.capacity,
            "only {:.2} of the link",
            got / l.capacity
        );
    }

    fn link(mbps: f64) -> Link {
        Link {
            capacity: mbps * 125_000.0,
            base: 0.040,
            queue: 0.0,
            buffer: 64_000.0,
            srtt: base_rtt_with_ack(0.040, mbps * 125_000.0),
            clock: Instant::now(),
        }
    }

    fn p(values: &[f64], q: f64) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q) as usize]
    }

    #[test]
    fn fills_an_idle_link_with_little_queue() {
        for mbps in [2.0, 10.0, 50.0] {
            let mut c = Controller::new(ControllerConfig::default());
            let mut l = link(mbps);
            run(&mut c, &mut l, 30.0, |_| 0.0);
            let (got, delays) = run(&mut c, &mut l, 30.0, |_| 0.0);
            let share = got / l.capacity;
            assert!(
                share > 0.85,
                "{mbps} Mbit/s: only {share:.2} of the link used"
            );
            assert!(
                p(&delays, 0.5) < 0.005,
                "{mbps}: median queue {:.4}",
                p(&delays, 0.5)
            );
            assert!(
                p(&delays, 0.95) < 0.015,
                "{mbps}: p95 queue {:.4}",
                p(&delays, 0.95)
            );
        }
    }

    #[test]
    fn yields_to_cross_traffic_and_takes_the_link_back() {
        let mut c = Controller::new(ControllerConfig::default());
        let mut l = link(10.0);
        l.buffer = 250_000.0;
        run(&mut c, &mut l, 20.0, |_| 0.0);
        let before = c.rate();
        // A greedy foreground flow that keeps the buffer full: we must be
        // out of its way within half a second, and at the floor soon after.
        run(&mut c, &mut l, 0.5, |_| 10.0 * 125_000.0);
        assert!(
            c.rate() < 0.15 * before,
            "still at {} of {before}",
            c.rate()
        );
        run(&mut c, &mut l, 5.0, |_| 10.0 * 125_000.0);
        assert!(c.rate() <= 2.0 * c.cfg.min_rate);
        // The foreground flow ends; the queue drains and we take the link
        // back within two seconds.
        l.queue = 0.0;
        run(&mut c, &mut l, 2.0, |_| 0.0);
        assert!(
            c.rate() > 0.8 * before,
            "only back to {} of {before}",
            c.rate()
        );
    }

    #[test]
    fn knee_estimates_capacity_and_ceiling_holds() {
        let mut c = Controller::new(ControllerConfig::default());
        let mut l = link(10.0);
        run(&mut c, &mut l, 30.0, |_| 0.0);
        let cap = c.capacity().expect("knee found");
        assert!(
            (cap / l.capacity - 1.0).abs() < 0.1,
            "capacity {cap} vs {}",
            l.capacity
        );
        c.set_ceiling(0.3 * cap);
        let (got, _) = run(&mut c, &mut l, 10.0, |_| 0.0);
        assert!(got <= 0.3 * cap * 1.01, "{got} above the 30% ceiling");
        assert!(got >= 0.3 * cap * 0.9, "{got} well below the 30% ceiling");
    }

    #[test]
    fn delay_spikes_below_the_knee_do_not_drag_it_down() {
        let mut c = Controller::new(ControllerConfig::default());
        let mut l = link(10.0);
        run(&mut c, &mut l, 30.0, |_| 0.0);
        let knee = c.capacity().expect("knee found");
        // Six spikes of 15 ms, 0.4 s apart, with no queue on the link (a
        // busy machine's late wake-ups): each one is cut for, but the knee
        // hardly moves and the rate comes back within seconds.
        for _ in 0..6 {
            spike(&mut c, &mut l, 15);
            run(&mut c, &mut l, 0.4, |_| 0.0);
        }
        let after = c.capacity().expect("knee");
        assert!(after > 0.9 * knee, "knee fell from {knee:.0} to {after:.0}");
        run(&mut c, &mut l, 2.0, |_| 0.0);
        let (got, _) = run(&mut c, &mut l, 5.0, |_| 0.0);
        assert_uses(got, &l, 0.85);
    }

    #[test]
    fn delay_spikes_every_second_or_two_do_not_wear_the_knee_down() {
        // On a busy machine (the bed's P1 in CI) the probes' round trip
        // jumped 7-9 ms every second or two: each cut moved the knee a
        // little and put off the next probe, which alone could move it back
        // up; in 15 s the knee fell from 11 to 8.7 Mbit/s. The old rules
        // here: the knee at 0.85 of the link, 0.83 of it used.
        let mut c = Controller::new(ControllerConfig::default());
        let mut l = link(10.0);
        run(&mut c, &mut l, 30.0, |_| 0.0);
        let mut got = 0.0;
        for _ in 0..20 {
            spike(&mut c, &mut l, 8);
            got += run(&mut c, &mut l, 1.5, |_| 0.0).0;
        }
        let knee = c.capacity().expect("knee");
        assert!(
            knee > 0.95 * l.capacity,
            "knee worn down to {:.2} of the link",
            knee / l.capacity
        );
        assert_uses(got / 20.0, &l, 0.85);
    }

    #[test]
    fn a_spike_one_probe_reading_long_is_ridden_out() {
        let mut c = Controller::new(ControllerConfig::default());
        let mut l = link(10.0);
        run(&mut c, &mut l, 30.0, |_| 0.0);
        let (rate, knee) = (c.rate(), c.capacity());
        // 9 ms for 40 ms: what one pair of probes sees of a late wake-up.
        spike_for(&mut c, &mut l, 9, 2);
        assert!(c.rate() >= rate, "cut from {rate:.0} to {:.0}", c.rate());
        assert_eq!(c.capacity(), knee);
    }

    #[test]
    fn a_large_transient_at_start_up_is_not_taken_for_the_capacity() {
        let mut c = Controller::new(ControllerConfig::default());
        let mut l = link(10.0);
        run(&mut c, &mut l, 2.0, |_| 0.0);
        // 46 ms out of nowhere while we send at a fraction of the link.
        spike(&mut c, &mut l, 46);
        assert!(
            c.capacity().is_none(),
            "knee set by a transient: {:?}",
            c.capacity()
        );
        run(&mut c, &mut l, 6.0, |_| 0.0);
        let (got, _) = run(&mut c, &mut l, 4.0, |_| 0.0);
        assert_uses(got, &l, 0.85);
    }

    #[test]
    fn a_small_spike_at_start_up_does_not_hold_the_backup_at_half_the_link() {
        let mut c = Controller::new(ControllerConfig::default());
        let mut l = link(10.0);
        while c.rate() < 0.45 * l.capacity {
            run(&mut c, &mut l, 0.1, |_| 0.0);
        }
        // 7 ms at half the link: indistinguishable from our own queue, so
        // it sets the knee there (the test bed saw this on a busy start).
        spike(&mut c, &mut l, 7);
        let knee = c.capacity().expect("knee set");
        assert!(knee < 0.6 * l.capacity, "knee {knee:.0}");
        // The bed measures G4 ten seconds into the backup.
        run(&mut c, &mut l, 4.0, |_| 0.0);
        let (got, _) = run(&mut c, &mut l, 4.0, |_| 0.0);
        assert_uses(got, &l, 0.85);
    }

    #[test]
    fn a_second_spike_during_the_fast_start_does_not_confirm_a_low_knee() {
        let mut c = Controller::new(ControllerConfig::default());
        let mut l = link(10.0);
        while c.rate() < 0.28 * l.capacity {
            run(&mut c, &mut l, 0.02, |_| 0.0);
        }
        spike(&mut c, &mut l, 7);
        while c.rate() < 0.42 * l.capacity {
            run(&mut c, &mut l, 0.02, |_| 0.0);
        }
        spike(&mut c, &mut l, 7);
        run(&mut c, &mut l, 4.0, |_| 0.0);
        let (got, _) = run(&mut c, &mut l, 4.0, |_| 0.0);
        assert_uses(got, &l, 0.85);
    }

    #[test]
    fn a_little_traffic_of_others_fits_in_the_cruise_headroom() {
        let mut c = Controller::new(ControllerConfig::default());
        let mut l = link(10.0);
        run(&mut c, &mut l, 30.0, |_| 0.0);
        let before = c.rate();
        // 400 kbit/s: a socket's last bytes, a DNS burst, a chat app.
        c.set_foreground(0.04 * l.capacity);
        assert_eq!(c.rate(), before);
    }

    #[test]
    fn cruises_below_the_knee_and_queues_only_while_probing() {
        // The user's traffic that starts beside the backup (a web fetch, and
        // on a slow uplink a download's ACKs) must find the link's buffer
        // empty most of the time. Riding at the knee kept a queue on the
        // link 36-44% of the time here; cruising below it, 9-13%.
        for mbps in [2.0, 10.0, 50.0] {
            let mut c = Controller::new(ControllerConfig::default());
            let mut l = link(mbps);
            run(&mut c, &mut l, 30.0, |_| 0.0);
            let (got, delays) = run(&mut c, &mut l, 30.0, |_| 0.0);
            let queued = delays.iter().filter(|d| **d > 0.001).count() as f64 / delays.len() as f64;
            assert!(
                queued < 0.2,
                "{mbps} Mbit/s: a queue {:.0}% of the time",
                queued * 100.0
            );
            let share = got / l.capacity;
            assert!(share > 0.9, "{mbps} Mbit/s: only {share:.2} of the link");
        }
    }

    #[test]
    fn gives_way_to_the_machines_own_traffic_before_it_queues() {
        let mut c = Controller::new(ControllerConfig::default());
        let mut l = link(10.0);
        l.buffer = 250_000.0;
        run(&mut c, &mut l, 30.0, |_| 0.0);
        // Another program on this machine sends 5 Mbit/s for 5 s; the
        // interface counters show it from its first tick.
        let fg = 5.0 * 125_000.0;
        c.set_foreground(fg);
        assert!(
            c.rate() + fg <= 0.95 * l.capacity,
            "still at {:.0} beside {fg:.0}",
            c.rate()
        );
        let (_, delays) = run(&mut c, &mut l, 5.0, |_| fg);
        let worst_queue = delays.iter().copied().fold(0.0, f64::max);
        assert!(worst_queue < 0.002, "a {:.1} ms queue", worst_queue * 1e3);
        assert!(
            c.rate() + fg <= 0.95 * l.capacity,
            "climbed back to {:.0}",
            c.rate()
        );
        // It stops: the link is taken back within two seconds.
        c.set_foreground(0.0);
        run(&mut c, &mut l, 2.0, |_| 0.0);
        assert_uses(c.rate(), &l, 0.85);
    }

    #[test]
    fn base_rtt_is_a_sliding_minimum() {
        let cfg = ControllerConfig {
            base_buckets: 2,
            base_bucket: Duration::from_secs(1),
            ..Default::default()
        };
        let mut c = Controller::new(cfg);
        let t0 = Instant::now();
        let s = |ms: u64| Sample {
            srtt: Duration::from_millis(ms),
        };
        let ms = |c: &Controller| c.base_rtt().map(|b| b.as_millis());
        c.update(t0, s(30));
        c.update(t0 + Duration::from_millis(1500), s(50));
        assert_eq!(ms(&c), Some(30));
        c.update(t0 + Duration::from_millis(2600), s(50));
        // The 30 ms bucket slid out: the route got longer.
        assert_eq!(ms(&c), Some(50));
    }
}
