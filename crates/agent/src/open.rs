//! Opening a repository by its location: a folder, an OpenDAL URL, or a
//! company server. Shared by the CLI and the app so both find the same
//! keyring entries, caches and enrolments.

use crate::device;
use crate::error::{AgentError, Result};
use crate::paths::Paths;
use repository::{OpenOptions, Repository};
use std::path::Path;
use std::sync::Arc;

/// The backend for `loc`, retrying transient failures (a dropped connection,
/// a server restart) so one hiccup does not fail a whole backup.
pub fn open_storage(loc: &str) -> Result<storage::DynStorage> {
    let inner = storage::open(loc)?;
    Ok(Arc::new(storage::RetryStorage::new(
        inner,
        storage::RetryPolicy::default(),
    )))
}

/// Keeps the chunk index and the trees in the local SQLite catalog. Without
/// one (no cache folder, or it cannot be opened) everything still works,
/// with the index in memory and trees read from the repository.
pub fn with_catalog(repo: Repository) -> Repository {
    let Some(dir) = repo.cache_dir().map(|d| d.to_path_buf()) else {
        return repo;
    };
    match catalog::Catalog::open(&dir) {
        Ok(c) => {
            let c = Arc::new(c);
            repo.with_index_store(c.clone()).with_tree_cache(c)
        }
        Err(e) => {
            tracing::warn!(error = %e, "working without the local catalog");
            repo
        }
    }
}

/// Whether a folder destination is there at all. A USB disk that is not
/// plugged in must read as "unavailable, try later", never as "create a
/// new repository here" or as a hard error.
pub fn check_reachable(location: &str) -> Result<()> {
    if device::is_server(location) || location.contains("://") {
        return Ok(());
    }
    let p = Path::new(location);
    if p.join(format::layout::CONFIG).is_file() {
        return Ok(());
    }
    let reason = if p.exists() {
        "the folder holds no Tidemark repository".to_string()
    } else {
        "the folder does not exist".to_string()
    };
    Err(AgentError::DestinationUnavailable {
        location: location.into(),
        reason,
    })
}

/// Opens an own-storage repository with a known password, or a server one
/// with this device's enrolment.
pub fn open_repository(
    paths: &Paths,
    location: &str,
    password: Option<&[u8]>,
    opts: &OpenOptions,
) -> Result<Repository> {
    let repo = if device::is_server(location) {
        device::open_repository(paths, location, opts, None)?
    } else {
        let storage = open_storage(location)?;
        let pw = password.ok_or_else(|| AgentError::NoPassword {
            location: storage.location(),
        })?;
        Repository::open(storage, pw, opts)?
    };
    Ok(with_catalog(repo))
}

/// The cache folder for repositories opened by the agent.
pub fn open_options(paths: &Paths) -> OpenOptions {
    OpenOptions {
        cache_dir: Some(paths.cache.clone()),
    }
}
