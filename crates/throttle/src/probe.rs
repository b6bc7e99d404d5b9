//! The network's round-trip time, measured the way a ping would but with
//! a TCP handshake to the upload endpoint: the SYN waits in the same uplink
//! queue as our data, and the peer's kernel answers it at once.
//!
//! Why not the RTT of the upload connections themselves (`TCP_INFO`)? It
//! also measures the receiving application: when the server is slow to read
//! a socket, its kernel holds back ACKs (it will not ACK without opening
//! the window) and the RTT grows by tens of milliseconds with no queue on
//! the link at all. Measured on the test bed, that alone kept the
//! controller at its floor. A handshake never waits for an application.
//!
//! Each probe is closed with a reset (linger 0), so it leaves no TIME_WAIT
//! behind and costs the server one accept.
//!
//! The time is the kernel's own measurement of the handshake (`TCP_INFO`
//! right after connecting: SYN sent to SYN-ACK received), not the time our
//! thread took to return from `connect`. On a laptop whose cores are busy
//! compressing and encrypting the very backup being throttled, the thread
//! wakes milliseconds late now and then; measured on the test bed, those
//! wake-ups read as queueing delay and cut the rate for a queue that did
//! not exist.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

/// One probe every this often while uploads run: a fresh reading within a
/// fraction of a round trip of a foreground flow starting.
pub const EVERY: Duration = Duration::from_millis(50);
/// A probe slower than this counts as the timeout value (a full queue).
const TIMEOUT: Duration = Duration::from_secs(2);

/// The handshake RTT to `addr`; `None` if it was refused or timed out.
pub fn connect_rtt(addr: SocketAddr) -> Option<Duration> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).ok()?;
    let t = Instant::now();
    s.connect_timeout(&addr.into(), TIMEOUT).ok()?;
    let elapsed = t.elapsed();
    let _ = s.set_linger(Some(Duration::ZERO));
    // A retransmitted SYN gives the kernel no sample (Karn): keep ours.
    Some(kernel_rtt(&s).filter(|r| !r.is_zero()).unwrap_or(elapsed))
}

#[cfg(unix)]
fn kernel_rtt(s: &Socket) -> Option<Duration> {
    use std::os::fd::AsRawFd;
    crate::pacing::tcp_info(s.as_raw_fd()).map(|i| i.srtt)
}

#[cfg(not(unix))]
fn kernel_rtt(_s: &Socket) -> Option<Duration> {
    None
}

/// Recent probe results, newest last.
#[derive(Default, Clone)]
pub struct Samples(Arc<Mutex<VecDeque<(Instant, Duration)>>>);

impl Samples {
    pub fn push(&self, at: Instant, rtt: Duration) {
        if let Ok(mut v) = self.0.lock() {
            v.push_back((at, rtt));
            while v.len() > 16 {
                v.pop_front();
            }
        }
    }

    /// The lower of the last two readings, if the newest is fresh: one
    /// packet ahead of a probe in the queue is noise, two in a row less so
    /// (the controller's target also sits above one packet's time).
    pub fn current(&self, now: Instant) -> Option<Duration> {
        let v = self.0.lock().ok()?;
        let newest = v.back()?;
        if now.saturating_duration_since(newest.0) > 4 * EVERY {
            return None;
        }
        v.iter().rev().take(2).map(|(_, d)| *d).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_rtt_to_a_listener_and_none_when_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = l.local_addr().expect("addr");
        let rtt = connect_rtt(addr).expect("rtt");
        assert!(rtt < Duration::from_millis(100));
        // The kernel's measurement: a loopback handshake takes microseconds,
        // and it is never longer than the time `connect` took to return.
        #[cfg(target_os = "linux")]
        {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
            let t = Instant::now();
            s.connect(&addr.into()).expect("connect");
            let elapsed = t.elapsed();
            let k = kernel_rtt(&s).expect("tcp_info");
            assert!(
                !k.is_zero() && k <= elapsed,
                "kernel {k:?}, connect {elapsed:?}"
            );
        }
        drop(l);
        assert_eq!(connect_rtt(addr), None);
    }

    #[test]
    fn current_is_the_min_of_the_last_two_and_expires() {
        let s = Samples::default();
        let t = Instant::now();
        for (i, ms) in [50, 41, 60, 45].iter().enumerate() {
            s.push(t + EVERY * i as u32, Duration::from_millis(*ms));
        }
        assert_eq!(s.current(t + EVERY * 3), Some(Duration::from_millis(45)));
        assert_eq!(s.current(t + EVERY * 20), None);
    }
}
