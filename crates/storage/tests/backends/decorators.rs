use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use storage::{
    conformance, Entry, Fault, FaultyStorage, MemoryStorage, Result, RetryPolicy, RetryStorage,
    Storage, StorageError,
};

fn quick_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

#[test]
fn decorators_without_faults_keep_the_contract() {
    let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
    conformance::run_all(&RetryStorage::new(faulty, quick_policy(3)));
}

#[test]
fn retry_rides_out_a_dropped_connection() {
    let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
    let retry = RetryStorage::new(faulty.clone(), quick_policy(3));
    faulty.fail_nth_put(1, Fault::Dropped);
    retry.put("k", b"v").expect("the retry succeeds");
    assert_eq!(faulty.get("k").expect("stored"), b"v");
    assert_eq!(faulty.put_count(), 1);
}

#[test]
fn retry_gives_up_after_max_attempts() {
    let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
    let counting = Arc::new(Counting::new(faulty.clone()));
    let retry = RetryStorage::new(counting.clone(), quick_policy(4));
    faulty.fail_puts_after_bytes(0, Fault::Dropped);
    let err = retry.put("k", b"v").expect_err("a dead link stays dead");
    assert!(err.is_retryable());
    assert_eq!(counting.puts.load(Ordering::SeqCst), 4);
}

#[test]
fn retry_never_repeats_permanent_errors() {
    for fault in [Fault::Permanent, Fault::Full] {
        let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
        let counting = Arc::new(Counting::new(faulty.clone()));
        let retry = RetryStorage::new(counting.clone(), quick_policy(5));
        faulty.fail_nth_put(1, fault);
        let err = retry.put("k", b"v").expect_err("injected");
        assert!(!err.is_retryable(), "{fault:?}: {err}");
        if fault == Fault::Full {
            assert!(matches!(err, StorageError::StorageFull { .. }), "{err:?}");
        }
        assert_eq!(
            counting.puts.load(Ordering::SeqCst),
            1,
            "{fault:?} was retried"
        );
        // NotFound is an answer, not a failure.
        assert!(retry.get("missing").expect_err("missing").is_not_found());
        assert_eq!(counting.gets.load(Ordering::SeqCst), 1);
    }
}

#[test]
fn retry_backs_off_exponentially() {
    let faulty = Arc::new(FaultyStorage::new(Arc::new(MemoryStorage::new())));
    let policy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(40),
    };
    let retry = RetryStorage::new(faulty.clone(), policy);
    faulty.fail_puts_after_bytes(0, Fault::Dropped);
    let start = Instant::now();
    let _ = retry.put("k", b"v");
    // Waits of 20, 40, 40 ms capped, each with up to half taken off by
    // jitter: between 50 and 100 ms in total.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(50), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn faults_are_visible_through_the_trait_object() {
    let faulty = FaultyStorage::new(Arc::new(MemoryStorage::new()));
    faulty
        .put("data", &conformance::pattern(7, 100))
        .expect("put");
    faulty.corrupt_reads("data");
    assert_ne!(
        faulty.get("data").expect("get"),
        conformance::pattern(7, 100)
    );
    faulty.hide("data");
    assert!(faulty.get("data").expect_err("hidden").is_not_found());
    assert!(faulty.list("").expect("list").is_empty());
    faulty.clear_faults();
    assert_eq!(
        faulty.get("data").expect("get"),
        conformance::pattern(7, 100)
    );
}

/// Counts the calls that reach the wrapped storage.
#[derive(Debug)]
struct Counting {
    inner: Arc<FaultyStorage>,
    puts: AtomicU32,
    gets: AtomicU32,
}

impl Counting {
    fn new(inner: Arc<FaultyStorage>) -> Self {
        Counting {
            inner,
            puts: AtomicU32::new(0),
            gets: AtomicU32::new(0),
        }
    }
}

impl Storage for Counting {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.inner.get_range(key, offset, length)
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
}
