//! The gate every upload stream passes its bytes through: closed while
//! paused, and a token bucket where the kernel cannot pace the socket.
//!
//! A bucket of our own rather than `governor`: the rate changes fifty times a
//! second (set by the controller), zero means "closed until told", and
//! waiting writers must wake the moment either changes; governor's quotas
//! are fixed at construction.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Bucket {
    open: bool,
    /// Bytes per second; infinite when unlimited.
    rate: f64,
    /// May go negative: a writer takes its whole quantum at once and the
    /// next one waits until the debt is paid, so quanta need no upper bound.
    tokens: f64,
    last: Instant,
}

#[derive(Debug)]
pub struct Gate {
    bucket: Mutex<Bucket>,
    changed: Condvar,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            bucket: Mutex::new(Bucket {
                open: true,
                rate: f64::INFINITY,
                tokens: 0.0,
                last: Instant::now(),
            }),
            changed: Condvar::new(),
        }
    }
}

/// Bursts are bounded to this much time at the current rate.
const BURST: Duration = Duration::from_millis(20);

impl Gate {
    pub fn set(&self, open: bool, rate: f64) {
        if let Ok(mut b) = self.bucket.lock() {
            if b.open != open || (b.rate - rate).abs() > 1e-9 * rate.abs().max(1.0) {
                refill(&mut b);
                b.open = open;
                b.rate = rate;
                self.changed.notify_all();
            }
        }
    }

    pub fn is_open(&self) -> bool {
        self.bucket.lock().map(|b| b.open).unwrap_or(true)
    }

    /// Open and without a rate: `admit` would never wait.
    pub fn is_unlimited(&self) -> bool {
        self.bucket
            .lock()
            .map(|b| b.open && !b.rate.is_finite())
            .unwrap_or(false)
    }

    /// Blocks until `bytes` may be sent.
    pub fn admit(&self, bytes: usize) {
        let Ok(mut b) = self.bucket.lock() else {
            return;
        };
        loop {
            refill(&mut b);
            let wait = if !b.open {
                // Woken by `set`; the timeout only guards against a lost wake-up.
                Duration::from_millis(500)
            } else if !b.rate.is_finite() || b.tokens >= 0.0 {
                b.tokens -= bytes as f64;
                if !b.rate.is_finite() {
                    b.tokens = 0.0;
                }
                return;
            } else {
                Duration::from_secs_f64((-b.tokens / b.rate).min(0.1))
            };
            b = match self.changed.wait_timeout(b, wait) {
                Ok((g, _)) => g,
                Err(_) => return,
            };
        }
    }
}

fn refill(b: &mut Bucket) {
    let now = Instant::now();
    let dt = now.saturating_duration_since(b.last).as_secs_f64();
    b.last = now;
    if b.open && b.rate.is_finite() {
        b.tokens = (b.tokens + b.rate * dt).min(b.rate * BURST.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bucket_holds_the_rate() {
        let g = Gate::default();
        g.set(true, 400_000.0);
        let t = Instant::now();
        for _ in 0..100 {
            g.admit(4096);
        }
        let rate = 409_600.0 / t.elapsed().as_secs_f64();
        assert!(rate < 440_000.0 && rate > 300_000.0, "rate {rate}");
    }

    #[test]
    fn closed_gate_blocks_until_opened() {
        let g = Arc::new(Gate::default());
        g.set(false, f64::INFINITY);
        let g2 = Arc::clone(&g);
        let t = Instant::now();
        let h = std::thread::spawn(move || {
            g2.admit(1);
            Instant::now()
        });
        std::thread::sleep(Duration::from_millis(150));
        assert!(!h.is_finished(), "a closed gate let bytes through");
        g.set(true, f64::INFINITY);
        let passed = h.join().expect("writer");
        let waited = passed - t;
        assert!(waited >= Duration::from_millis(150) && waited < Duration::from_millis(400));
    }
}
