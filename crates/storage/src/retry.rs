//! Retrying transient failures with bounded exponential backoff.

use std::time::Duration;

use crate::{DynStorage, Entry, Result, Storage};

/// How [`RetryStorage`] retries. The defaults ride out a server restart or a
/// Wi-Fi hand-over (about 6 s of waiting in total) without making a user
/// wait minutes for a failure that will not heal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included; 1 disables retrying.
    pub max_attempts: u32,
    /// The wait before the first retry; each later wait doubles.
    pub base_delay: Duration,
    /// No single wait is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(400),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based), with jitter of up to
    /// half the delay so threads that failed together do not retry in step.
    fn delay(&self, retry: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + jitter(half)
    }
}

/// A uniformly spread duration in `[0, max]`, from std's randomly keyed
/// hasher: retry timing needs spread, not cryptographic randomness.
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(h.finish() % nanos.saturating_add(1))
}

/// Retries operations that fail with a retryable error
/// ([`crate::StorageError::is_retryable`]); permanent errors, `NotFound` and
/// invalid keys are returned at once. Every operation of the contract is
/// idempotent, `put` included, so retrying never changes the outcome.
#[derive(Debug)]
pub struct RetryStorage {
    inner: DynStorage,
    policy: RetryPolicy,
}

impl RetryStorage {
    pub fn new(inner: DynStorage, policy: RetryPolicy) -> Self {
        RetryStorage { inner, policy }
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    fn retry<T>(&self, mut f: impl FnMut(&dyn Storage) -> Result<T>) -> Result<T> {
        let mut retry = 0;
        loop {
            match f(self.inner.as_ref()) {
                Err(e) if e.is_retryable() && retry + 1 < self.policy.max_attempts => {
                    std::thread::sleep(self.policy.delay(retry));
                    retry += 1;
                }
                other => return other,
            }
        }
    }
}

impl Storage for RetryStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.retry(|s| s.put(key, data))
    }

    fn put_shared(&self, key: &str, data: crate::Bytes) -> Result<()> {
        self.retry(|s| s.put_shared(key, data.clone()))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.retry(|s| s.get(key))
    }

    fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.retry(|s| s.get_range(key, offset, length))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.retry(|s| s.size(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.retry(|s| s.list(prefix))
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.retry(|s| s.delete(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for retry in 0..40 {
            let d = p.delay(retry);
            let full = (Duration::from_millis(100) * 2u32.saturating_pow(retry.min(20)))
                .min(Duration::from_secs(1));
            assert!(
                d >= full / 2 && d <= full,
                "retry {retry}: {d:?} vs {full:?}"
            );
        }
    }
}
