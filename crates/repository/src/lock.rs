//! Repository locks: a backup holds a shared lock, prune an exclusive one,
//! so prune can never delete a chunk a running backup relies on. Locks are
//! refreshed while held; a lock whose process is gone (same host) or that
//! was not refreshed for [`STALE_AFTER`] is ignored and can be removed.

use crate::error::{RepoError, Result};
use chrono::Utc;
use crypto::{Id, MasterKeys};
use format::{layout, Lock};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use storage::{DynStorage, Storage};

const AAD: &[u8] = b"tidemark lock v1";
/// Holders refresh every 5 minutes; six missed refreshes mean it is gone.
const STALE_AFTER: chrono::Duration = chrono::Duration::minutes(30);
const REFRESH_EVERY: Duration = Duration::from_secs(300);

pub struct LockGuard {
    storage: DynStorage,
    key: String,
    /// Locks of others that were stale (or unreadable) when this one was
    /// taken: a writer died there and may have left packs no index lists.
    stale: Vec<String>,
    stop: Arc<AtomicBool>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl LockGuard {
    /// The keys of other holders' stale locks seen when this lock was taken.
    pub fn stale_locks(&self) -> &[String] {
        &self.stale
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").field("key", &self.key).finish()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.refresher.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if let Err(e) = self.storage.delete(&self.key) {
            tracing::warn!(error = %e, "could not remove lock; it will be treated as stale");
        }
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn is_stale(l: &Lock) -> bool {
    if Utc::now() - l.time > STALE_AFTER {
        return true;
    }
    // On the same host we can tell for sure whether the holder still runs.
    l.hostname == hostname() && !std::path::Path::new(&format!("/proc/{}", l.pid)).exists()
}

fn read_locks(storage: &dyn Storage, keys: &MasterKeys) -> Result<Vec<(String, Option<Lock>)>> {
    let mut out = Vec::new();
    for e in storage.list(layout::LOCKS)? {
        // Larger than any lock: unreadable, so stale, without reading it.
        if e.size > format::limits::MAX_LOCK as u64 {
            out.push((e.key, None));
            continue;
        }
        let lock = match storage.get(&e.key) {
            Ok(b) => keys
                .data
                .open(&b, AAD)
                .ok()
                .and_then(|j| format::from_json::<Lock>("lock", &j).ok()),
            Err(err) if err.is_not_found() => continue,
            Err(err) => return Err(err.into()),
        };
        out.push((e.key, lock));
    }
    Ok(out)
}

/// What the other locks say: who, if anyone, holds one that conflicts,
/// and which are stale.
struct Survey {
    holder: Option<String>,
    stale: Vec<String>,
}

fn survey(
    storage: &dyn Storage,
    keys: &MasterKeys,
    exclusive: bool,
    own: Option<&str>,
) -> Result<Survey> {
    let mut out = Survey {
        holder: None,
        stale: Vec::new(),
    };
    for (key, lock) in read_locks(storage, keys)? {
        if Some(key.as_str()) == own {
            continue;
        }
        match lock {
            Some(l) if !is_stale(&l) => {
                if out.holder.is_none() && (exclusive || l.exclusive) {
                    let kind = if l.exclusive { "an exclusive" } else { "a" };
                    out.holder = Some(format!(
                        "{kind} lock of process {} on {} since {}",
                        l.pid, l.hostname, l.time
                    ));
                }
            }
            _ => out.stale.push(key),
        }
    }
    Ok(out)
}

pub fn acquire(storage: DynStorage, keys: &MasterKeys, exclusive: bool) -> Result<LockGuard> {
    if let Some(holder) = survey(&*storage, keys, exclusive, None)?.holder {
        return Err(RepoError::Locked { holder });
    }
    let key = layout::lock(&Id(rand::random()));
    let write = {
        let keys = keys.clone();
        move |s: &dyn Storage, key: &str| {
            let l = Lock {
                exclusive,
                hostname: hostname(),
                pid: std::process::id(),
                time: Utc::now(),
            };
            s.put(key, &keys.data.seal(&format::to_json(&l), AAD))
        }
    };
    write(&*storage, &key)?;
    // Two processes may have checked at the same moment; check again now
    // that ours is visible and back off if someone else holds a conflicting lock.
    let others = survey(&*storage, keys, exclusive, Some(&key))?;
    if let Some(holder) = others.holder {
        let _ = storage.delete(&key);
        return Err(RepoError::Locked { holder });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let refresher = {
        let (storage, key, stop) = (Arc::clone(&storage), key.clone(), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("lock-refresh".into())
            .spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    std::thread::park_timeout(REFRESH_EVERY);
                    if !stop.load(Ordering::SeqCst) {
                        if let Err(e) = write(&*storage, &key) {
                            tracing::warn!(error = %e, "could not refresh repository lock");
                        }
                    }
                }
            })
            .ok()
    };
    Ok(LockGuard {
        storage,
        key,
        stale: others.stale,
        stop,
        refresher,
    })
}

pub fn remove_stale(storage: &dyn Storage, keys: &MasterKeys, all: bool) -> Result<usize> {
    let mut n = 0;
    for (key, lock) in read_locks(storage, keys)? {
        if all || lock.as_ref().is_none_or(is_stale) {
            storage.delete(&key)?;
            n += 1;
        }
    }
    Ok(n)
}
