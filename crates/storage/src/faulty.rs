//! Fault injection for tests of the layers above storage: failed uploads,
//! a disk that fills up, corrupted downloads, objects that vanish.
//!
//! ```
//! use std::sync::Arc;
//! use storage::{Fault, FaultyStorage, MemoryStorage, Storage};
//!
//! let faulty = FaultyStorage::new(Arc::new(MemoryStorage::new()));
//! faulty.fail_nth_put(2, Fault::Dropped); // the 2nd put from now fails
//! faulty.put("a", b"1").expect("no fault programmed for it");
//! assert!(faulty.put("b", b"2").expect_err("injected").is_retryable());
//! faulty.put("b", b"2").expect("one-shot: the retry works");
//! ```

use std::collections::HashSet;
use std::sync::Mutex;

use crate::{DynStorage, Entry, Result, Storage, StorageError};

/// The error an injected put failure returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A connection dropped mid-upload: `Io { retryable: true }`.
    Dropped,
    /// A permanent refusal such as a permission error:
    /// `Io { retryable: false }`.
    Permanent,
    /// The destination is full: `StorageFull`.
    Full,
}

#[derive(Debug, Default)]
struct State {
    /// Puts made since the last `fail_nth_put`, and the one that fails.
    puts_seen: u64,
    fail_put_at: Option<(u64, Fault)>,
    /// Byte budget for puts, the bytes used and whether it ran out.
    byte_budget: Option<(u64, Fault)>,
    bytes_used: u64,
    budget_exhausted: bool,
    corrupt: HashSet<String>,
    hidden: HashSet<String>,
    total_puts: u64,
    total_bytes: u64,
}

/// Wraps a storage and injects programmed faults. A failing `put` never
/// reaches the wrapped storage, modelling the contract's atomic put: the
/// object is either stored whole or not at all. Faults stay until
/// [`FaultyStorage::clear_faults`] unless documented as one-shot.
#[derive(Debug)]
pub struct FaultyStorage {
    inner: DynStorage,
    state: Mutex<State>,
}

impl FaultyStorage {
    pub fn new(inner: DynStorage) -> Self {
        FaultyStorage {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// The `n`th put after this call (1-based) fails with `fault`; the
    /// puts before and after it go through. One-shot.
    pub fn fail_nth_put(&self, n: u64, fault: Fault) {
        let mut s = self.state();
        s.puts_seen = 0;
        s.fail_put_at = Some((n, fault));
    }

    /// From this call on, puts may write `bytes` bytes in total. The put that
    /// would exceed the budget fails with `fault`, and so does every put
    /// after it (a full disk stays full, a dead link stays dead).
    pub fn fail_puts_after_bytes(&self, bytes: u64, fault: Fault) {
        let mut s = self.state();
        s.byte_budget = Some((bytes, fault));
        s.bytes_used = 0;
        s.budget_exhausted = false;
    }

    /// `get` and `get_range` of `key` return its bytes with one bit flipped
    /// (in the middle of what is returned; an empty result stays empty).
    pub fn corrupt_reads(&self, key: &str) {
        self.state().corrupt.insert(key.to_string());
    }

    /// `key` looks missing: `get`/`get_range` are `NotFound`, `size` is
    /// `None`, `list` omits it. A `put` of it still writes through.
    pub fn hide(&self, key: &str) {
        self.state().hidden.insert(key.to_string());
    }

    /// Removes every programmed fault; counters keep counting.
    pub fn clear_faults(&self) {
        let mut s = self.state();
        s.fail_put_at = None;
        s.byte_budget = None;
        s.budget_exhausted = false;
        s.corrupt.clear();
        s.hidden.clear();
    }

    /// Successful puts so far.
    pub fn put_count(&self) -> u64 {
        self.state().total_puts
    }

    /// Bytes of successful puts so far.
    pub fn bytes_put(&self) -> u64 {
        self.state().total_bytes
    }

    pub fn inner(&self) -> &DynStorage {
        &self.inner
    }

    // A panic in a test thread must not hide the faults from the others.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error(&self, key: &str, fault: Fault) -> StorageError {
        let location = self.inner.location();
        let io = |message: &str, retryable| StorageError::Io {
            op: "put",
            key: key.to_string(),
            location: location.clone(),
            message: message.to_string(),
            retryable,
        };
        match fault {
            Fault::Dropped => io("injected fault: connection dropped", true),
            Fault::Permanent => io("injected fault: permanent failure", false),
            Fault::Full => StorageError::StorageFull {
                key: key.to_string(),
                location,
            },
        }
    }

    /// Decides whether this put fails, consuming one-shot faults.
    fn check_put(&self, key: &str, len: u64) -> Result<()> {
        let mut s = self.state();
        s.puts_seen += 1;
        if let Some((n, fault)) = s.fail_put_at {
            if s.puts_seen == n {
                s.fail_put_at = None;
                return Err(self.error(key, fault));
            }
        }
        if let Some((budget, fault)) = s.byte_budget {
            if s.budget_exhausted || s.bytes_used.saturating_add(len) > budget {
                s.budget_exhausted = true;
                return Err(self.error(key, fault));
            }
            s.bytes_used += len;
        }
        Ok(())
    }

    fn is_hidden(&self, key: &str) -> bool {
        self.state().hidden.contains(key)
    }

    fn not_found(&self, key: &str) -> StorageError {
        StorageError::NotFound {
            key: key.to_string(),
            location: self.inner.location(),
        }
    }

    fn maybe_corrupt(&self, key: &str, mut data: Vec<u8>) -> Vec<u8> {
        if self.state().corrupt.contains(key) {
            let mid = data.len() / 2;
            if let Some(b) = data.get_mut(mid) {
                *b ^= 0x01;
            }
        }
        data
    }
}

impl Storage for FaultyStorage {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        crate::validate_key(key)?;
        self.check_put(key, data.len() as u64)?;
        self.inner.put(key, data)?;
        let mut s = self.state();
        s.total_puts += 1;
        s.total_bytes += data.len() as u64;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        if self.is_hidden(key) {
            crate::validate_key(key)?;
            return Err(self.not_found(key));
        }
        let data = self.inner.get(key)?;
        Ok(self.maybe_corrupt(key, data))
    }

    fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        if self.is_hidden(key) {
            crate::validate_key(key)?;
            return Err(self.not_found(key));
        }
        let data = self.inner.get_range(key, offset, length)?;
        Ok(self.maybe_corrupt(key, data))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        if self.is_hidden(key) {
            crate::validate_key(key)?;
            return Ok(None);
        }
        self.inner.size(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        let mut entries = self.inner.list(prefix)?;
        let s = self.state();
        entries.retain(|e| !s.hidden.contains(&e.key));
        Ok(entries)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::MemoryStorage;

    fn faulty() -> FaultyStorage {
        FaultyStorage::new(Arc::new(MemoryStorage::new()))
    }

    #[test]
    fn nth_put_fails_once_and_stores_nothing() {
        let f = faulty();
        f.fail_nth_put(2, Fault::Permanent);
        assert!(f.put("a", b"1").is_ok());
        let e = f.put("b", b"2").expect_err("injected fault");
        assert!(!e.is_retryable());
        assert_eq!(f.inner().size("b").ok(), Some(None));
        assert!(f.put("b", b"2").is_ok());
        assert_eq!(f.put_count(), 2);
    }

    #[test]
    fn byte_budget_fills_up_and_stays_full() {
        let f = faulty();
        f.fail_puts_after_bytes(10, Fault::Full);
        assert!(f.put("a", &[0; 6]).is_ok());
        assert!(matches!(
            f.put("b", &[0; 6]),
            Err(StorageError::StorageFull { .. })
        ));
        assert!(matches!(
            f.put("c", &[0; 1]),
            Err(StorageError::StorageFull { .. })
        ));
        f.clear_faults();
        assert!(f.put("c", &[0; 1]).is_ok());
        assert_eq!(f.bytes_put(), 7);
    }

    #[test]
    fn corrupt_and_hidden_keys() {
        let f = faulty();
        f.put("a", b"abcd").expect("no fault");
        f.put("b", b"xyz").expect("no fault");
        f.corrupt_reads("a");
        f.hide("b");
        assert_eq!(f.get("a").expect("no fault"), b"abbd");
        assert_eq!(f.get_range("a", 0, 2).expect("no fault"), b"ac");
        assert!(f.get("b").expect_err("injected fault").is_not_found());
        assert_eq!(f.size("b").expect("no fault"), None);
        let keys: Vec<String> = f
            .list("")
            .expect("no fault")
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, vec!["a".to_string()]);
    }
}
