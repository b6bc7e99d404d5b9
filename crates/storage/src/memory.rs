//! An in-process backend for tests: a map behind a lock. It keeps the whole
//! contract except durability, which a process-local map cannot have.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::{validate_key, validate_prefix, Entry, Result, Storage, StorageError};

/// Objects in memory, shareable between threads. Clones share the same
/// objects, so a test can keep one handle to inspect what another wrote.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    /// Values are `Arc`ed so a `get` copies outside the lock.
    objects: Arc<RwLock<BTreeMap<String, Arc<Vec<u8>>>>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    // A poisoned lock means a panic happened while holding it; every
    // mutation below is a single map operation, so the map is still whole.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Vec<u8>>>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<Vec<u8>>>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }

    fn object(&self, key: &str) -> Result<Arc<Vec<u8>>> {
        validate_key(key)?;
        self.read()
            .get(key)
            .cloned()
            .ok_or_else(|| StorageError::NotFound {
                key: key.to_string(),
                location: self.location(),
            })
    }
}

impl Storage for MemoryStorage {
    fn location(&self) -> String {
        "memory:".to_string()
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        validate_key(key)?;
        let data = Arc::new(data.to_vec());
        self.write().insert(key.to_string(), data);
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        Ok(self.object(key)?.as_ref().clone())
    }

    fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let data = self.object(key)?;
        let range = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(length).ok())
            .and_then(|(o, l)| Some(o..o.checked_add(l)?))
            .filter(|r| r.end <= data.len());
        match range {
            Some(r) => Ok(data[r].to_vec()),
            None => Err(StorageError::Io {
                op: "get_range",
                key: key.to_string(),
                location: self.location(),
                message: format!(
                    "the range {length} bytes at offset {offset} reaches past the end of the object of {} bytes",
                    data.len()
                ),
                retryable: false,
            }),
        }
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        validate_key(key)?;
        Ok(self.read().get(key).map(|d| d.len() as u64))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        validate_prefix(prefix)?;
        Ok(self
            .read()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| Entry {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.write().remove(key);
        Ok(())
    }
}
