//! The version catalog of the open repository, kept up to date: every
//! front end's name search, "all versions" and "deleted files" read it
//! instead of walking trees. The catalog lives in the repository's cache
//! folder, or in memory when the repository has none (built once per
//! process, on the first query).

use crate::error::{AgentError, Result};
use catalog::versions::{SyncReport, TreeSource, VersionCatalog};
use crypto::Id;
use format::{Snapshot, Tree};
use repository::Repository;
use snapshot::TreeLoader;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Trees for the catalog, through the repository's local tree cache.
pub struct Trees<'a>(pub &'a TreeLoader<'a>);

impl TreeSource for Trees<'_> {
    fn tree(&self, id: &Id) -> std::result::Result<Arc<Tree>, String> {
        self.0.load(id).map_err(|e| e.to_string())
    }
}

impl From<catalog::versions::VersionsError> for AgentError {
    fn from(e: catalog::versions::VersionsError) -> Self {
        AgentError::Invalid(e.to_string())
    }
}

/// One open catalog per repository per process: opening checks the
/// schema, and an in-memory one must survive between queries.
pub fn opened(repo: &Repository) -> Result<Arc<VersionCatalog>> {
    static OPEN: OnceLock<Mutex<HashMap<String, Arc<VersionCatalog>>>> = OnceLock::new();
    let key = match repo.cache_dir() {
        Some(d) => d.display().to_string(),
        None => format!("memory:{}", repo.config().id.to_hex()),
    };
    let mut open = crate::service::lock(OPEN.get_or_init(Default::default));
    if let Some(c) = open.get(&key) {
        return Ok(Arc::clone(c));
    }
    let c = Arc::new(match repo.cache_dir() {
        Some(d) => VersionCatalog::open(d)?,
        None => VersionCatalog::in_memory()?,
    });
    open.insert(key, Arc::clone(&c));
    Ok(c)
}

/// The catalog, brought up to date with `all` (every snapshot of the
/// repository, whatever host: a partial list would drop the others).
pub fn catalog(repo: &Repository, all: &[(Id, Snapshot)]) -> Result<Arc<VersionCatalog>> {
    let c = opened(repo)?;
    let loader = TreeLoader::new(repo);
    let report = c.sync(all, &Trees(&loader))?;
    log(&report);
    Ok(c)
}

/// Brings the catalog up to date after a backup or a thinning, so the next
/// search does not wait for it.
pub fn refresh(repo: &Repository) -> Result<()> {
    let (all, _) = repo.list_snapshots()?;
    catalog(repo, &all).map(|_| ())
}

fn log(r: &SyncReport) {
    if r.added + r.removed > 0 {
        tracing::debug!(
            added = r.added,
            removed = r.removed,
            rebuilt = r.rebuilt,
            "version catalog updated"
        );
    }
    for (id, message) in &r.failed {
        tracing::warn!(snapshot = %id.to_hex(), %message, "a snapshot is missing from search: its trees are unreadable; run `tidemark verify`");
    }
}
