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
    let mut inner = storage::open(loc)?;
    if let Some(endpoint) = network_endpoint(loc) {
        let t = crate::network::throttle();
        t.watch(endpoint.as_str());
        inner = Arc::new(Throttled { inner, throttle: t });
    }
    Ok(Arc::new(storage::RetryStorage::new(
        inner,
        storage::RetryPolicy::default(),
    )))
}

/// `host:port` that uploads to a network location go to; `None` for folders.
fn network_endpoint(loc: &str) -> Option<String> {
    let url = url::Url::parse(loc).ok()?;
    match url.scheme() {
        "s3" => {
            let q: std::collections::HashMap<_, _> = url.query_pairs().collect();
            match q.get("endpoint") {
                Some(e) => {
                    let e = url::Url::parse(e).ok()?;
                    Some(format!("{}:{}", e.host_str()?, e.port_or_known_default()?))
                }
                None => Some(format!(
                    "s3.{}.amazonaws.com:443",
                    q.get("region").map_or("us-east-1", |r| r.as_ref())
                )),
            }
        }
        "sftp" => Some(format!("{}:{}", url.host_str()?, url.port().unwrap_or(22))),
        "webdav" => Some(format!("{}:{}", url.host_str()?, url.port().unwrap_or(80))),
        "webdavs" => Some(format!("{}:{}", url.host_str()?, url.port().unwrap_or(443))),
        _ => None,
    }
}

/// Own storage over the network: a write waits while the throttle's rules
/// pause uploads. The rate itself is the kernel's pacing of the sockets to
/// the endpoint (HTTP backends; SFTP's socket belongs to the `ssh` child
/// and is not paced), so the bytes are not metered twice here.
#[derive(Debug)]
struct Throttled {
    inner: storage::DynStorage,
    throttle: throttle::Throttle,
}

impl storage::Storage for Throttled {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, key: &str, data: &[u8]) -> storage::Result<()> {
        self.throttle.admit(0);
        self.inner.put(key, data)
    }
    fn put_shared(&self, key: &str, data: storage::Bytes) -> storage::Result<()> {
        self.throttle.admit(0);
        self.inner.put_shared(key, data)
    }
    fn get(&self, key: &str) -> storage::Result<Vec<u8>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, offset: u64, length: u64) -> storage::Result<Vec<u8>> {
        self.inner.get_range(key, offset, length)
    }
    fn size(&self, key: &str) -> storage::Result<Option<u64>> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> storage::Result<Vec<storage::Entry>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> storage::Result<()> {
        self.inner.delete(key)
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_of_network_locations() {
        use super::network_endpoint as e;
        assert_eq!(e("/media/usb/backup"), None);
        assert_eq!(
            e("s3://b/p?endpoint=http://127.0.0.1:9000&region=x").as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(
            e("s3://b/p?region=eu-west-1").as_deref(),
            Some("s3.eu-west-1.amazonaws.com:443")
        );
        assert_eq!(e("sftp://u@host:2222/x").as_deref(), Some("host:2222"));
        assert_eq!(
            e("webdavs://dav.example.com/x").as_deref(),
            Some("dav.example.com:443")
        );
    }
}
