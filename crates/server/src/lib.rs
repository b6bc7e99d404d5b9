//! The Tidemark company server: one organisation repository that every
//! enrolled device backs up into, with global deduplication, enrolment,
//! per-user isolation and proofs of ownership.
//!
//! It owns the HTTP API ([`app`] builds the axum router), the data folder
//! layout, enrolment codes and device tokens, chunk ownership and the
//! snapshot commit rules. The packs it stores form an ordinary Tidemark
//! repository (checked by [`repository::Repository::verify_pack_bytes`]
//! before anything is indexed), so `tidemark verify` works on it.
//!
//! Trust model: the server holds the organisation's keys, because it must
//! check that every uploaded chunk matches its id (nobody may poison a chunk
//! others deduplicate against), answer proofs of ownership, and restore on a
//! user's behalf. Devices get the keys at enrolment. Storage behind the
//! server still sees only ciphertext.
//!
//! It must not depend on the agent, the snapshot engine or any front end.

mod api;
pub mod commits;
pub mod dedup;
mod download;
mod error;
mod limits;
pub mod meta;
pub mod prune;
pub mod retention;
pub mod serve;

pub use api::{app, Limits};
pub use error::ApiError;

use chrono::Utc;
use crypto::Id;
use meta::{Meta, SqliteMeta};
use repository::{InitOptions, OpenOptions, Repository};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// How long a proof-of-ownership challenge stays valid.
pub const CHALLENGE_SECONDS: i64 = 600;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("server data folder {path}: {message}")]
    DataDir { path: PathBuf, message: String },
    #[error(transparent)]
    Repo(#[from] repository::RepoError),
    #[error(transparent)]
    Meta(#[from] meta::MetaError),
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub ids_queried: AtomicU64,
    pub proofs_granted: AtomicU64,
    pub proofs_refused: AtomicU64,
    pub packs_received: AtomicU64,
    pub pack_bytes_received: AtomicU64,
    pub packs_rejected: AtomicU64,
    pub snapshots_committed: AtomicU64,
    pub snapshots_refused: AtomicU64,
    /// Commits refused for a claimed time the server's clock rules out.
    pub snapshots_misdated: AtomicU64,
    /// Commits refused because the device committed far more than its
    /// policy explains (the device is then flagged).
    pub snapshots_flooded: AtomicU64,
}

pub struct Server {
    pub repo: Arc<Repository>,
    pub meta: Arc<dyn Meta>,
    /// Keys tokens, enrolment codes and challenges; never leaves the server.
    mac_key: [u8; 32],
    /// The organisation's master keys, hex, as sent to enrolled devices.
    keys: String,
    pub metrics: Metrics,
    /// Signs enrolment files; devices trust its public key from their installer.
    pub(crate) signing: crypto::signing::SigningKey,
    /// How devices reach this server, once it listens (see [`Published`]).
    published: std::sync::OnceLock<Published>,
    /// Held shared by whatever stores or reads packs and by commits, and
    /// exclusively by an online prune's sweep (see [`prune`]).
    pub(crate) gate: std::sync::RwLock<()>,
    /// Seconds added to the system clock: 0 in production; tests and
    /// simulations move time with [`Server::set_clock_offset`].
    clock_offset: AtomicI64,
    /// Where a pack upload of data already stored is written and synced
    /// anyway, so its answer takes as long as a new one's (see
    /// `docs/server.md`, "What the answers reveal").
    pub(crate) scratch: PathBuf,
    /// Keyed hash of the bearer token `/metrics` asks for (the token is in
    /// `DATA/metrics.token`, for the scrape job's configuration).
    metrics_token: [u8; 32],
}

/// What the download pages need to know about the running server.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// SHA-256 of the certificate devices will see (empty over plain HTTP).
    pub fingerprint: String,
    /// Its public key's pin for curl (see [`serve::key_pin_of_pem`]; empty
    /// over plain HTTP).
    pub key_pin: String,
    /// `https` or `http`.
    pub scheme: String,
    /// Where the files offered for download are (the app, the CLI, icons).
    pub downloads: Option<PathBuf>,
}

impl Server {
    /// The server's time, in seconds since the epoch: every fact the server
    /// records (commits, grants, enrolments, retention) uses this clock.
    pub fn now(&self) -> i64 {
        Utc::now().timestamp() + self.clock_offset.load(Ordering::Relaxed)
    }

    /// [`Server::now`] in milliseconds.
    pub fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis() + self.clock_offset.load(Ordering::Relaxed) * 1000
    }

    /// Moves the server's clock by `seconds` from the system's. For tests
    /// and simulations of days of commits; a real server never calls it.
    pub fn set_clock_offset(&self, seconds: i64) {
        self.clock_offset.store(seconds, Ordering::Relaxed);
    }

    /// Shared hold of the prune gate: no sweep runs while it is held.
    pub(crate) fn no_prune(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("repo", &self.repo.location())
            .finish()
    }
}

/// What [`Server::open`] found or made.
pub struct Opened {
    pub server: Arc<Server>,
    /// Set on the first start: the code that enrols the first admin device.
    pub first_admin_code: Option<String>,
}

const SECRET_FILE: &str = "server.secret";
const SIGNING_FILE: &str = "org-signing.pk8";
/// The scrape token for `/metrics`: counters say how busy the server is and
/// how much it refuses, which is nobody's business without it.
pub const METRICS_TOKEN_FILE: &str = "metrics.token";

impl Server {
    /// Opens the server's data folder, creating it (a repository, the
    /// metadata database, an admin user and a first enrolment code) on the
    /// first start.
    pub fn open(dir: &Path, kdf: Option<crypto::KdfParams>) -> Result<Opened, ServerError> {
        let data_err = |message: String| ServerError::DataDir {
            path: dir.to_path_buf(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| data_err(e.to_string()))?;
        let secret_path = dir.join(SECRET_FILE);
        let repo_dir = dir.join("repository");
        let fresh = !secret_path.exists();
        let secret = if fresh {
            let s = hex::encode(rand::random::<[u8; 32]>());
            write_private(&secret_path, s.as_bytes()).map_err(|e| data_err(e.to_string()))?;
            s
        } else {
            std::fs::read_to_string(&secret_path)
                .map_err(|e| data_err(format!("cannot read {SECRET_FILE}: {e}")))?
                .trim()
                .to_string()
        };
        let storage =
            storage::open(&repo_dir.to_string_lossy()).map_err(|e| data_err(e.to_string()))?;
        let open_opts = OpenOptions {
            cache_dir: Some(dir.join("cache")),
        };
        let repo = if storage
            .size(format::layout::CONFIG)
            .map_err(repository::RepoError::from)?
            .is_some()
        {
            Repository::open(storage, secret.as_bytes(), &open_opts)?
        } else {
            let mut init = InitOptions {
                hostname: repository::hostname(),
                username: "tidemark-server".into(),
                ..Default::default()
            };
            if let Some(k) = kdf {
                init.kdf = k;
            }
            Repository::init(storage, secret.as_bytes(), &init, &open_opts)?
        };
        let repo = match repo.cache_dir().map(catalog::Catalog::open) {
            Some(Ok(c)) => {
                let c = Arc::new(c);
                repo.with_index_store(c.clone()).with_tree_cache(c)
            }
            _ => repo,
        };
        repo.load_index()?;
        // Packs stored by a server killed before indexing them.
        repo.recover_unindexed_packs()?;
        let meta: Arc<dyn Meta> = Arc::new(SqliteMeta::open(&dir.join("server.sqlite"))?);
        let signing_path = dir.join(SIGNING_FILE);
        let signing = if signing_path.exists() {
            let pkcs8 = zeroize::Zeroizing::new(
                std::fs::read(&signing_path)
                    .map_err(|e| data_err(format!("cannot read {SIGNING_FILE}: {e}")))?,
            );
            crypto::signing::SigningKey::from_pkcs8(&pkcs8)
                .map_err(|e| data_err(format!("{SIGNING_FILE}: {e}")))?
        } else {
            let (key, pkcs8) =
                crypto::signing::SigningKey::generate().map_err(|e| data_err(e.to_string()))?;
            write_private(&signing_path, &pkcs8).map_err(|e| data_err(e.to_string()))?;
            key
        };
        let mac_key = crypto::mac(&[0; 32], &[b"tidemark server mac key", secret.as_bytes()]);
        // Left by a server killed while it wrote there; nothing in it is kept.
        let scratch = dir.join("scratch");
        let _ = std::fs::remove_dir_all(&scratch);
        let token_path = dir.join(METRICS_TOKEN_FILE);
        let metrics_token = if token_path.exists() {
            std::fs::read_to_string(&token_path)
                .map_err(|e| data_err(format!("cannot read {METRICS_TOKEN_FILE}: {e}")))?
                .trim()
                .to_string()
        } else {
            let t = hex::encode(rand::random::<[u8; 32]>());
            write_private(&token_path, t.as_bytes()).map_err(|e| data_err(e.to_string()))?;
            t
        };
        let metrics_token = crypto::mac(&mac_key, &[b"metrics", metrics_token.as_bytes()]);
        let server = Arc::new(Server {
            keys: repo.export_keys(),
            repo: Arc::new(repo),
            meta,
            mac_key,
            metrics: Metrics::default(),
            signing,
            published: std::sync::OnceLock::new(),
            gate: std::sync::RwLock::new(()),
            clock_offset: AtomicI64::new(0),
            metrics_token,
            scratch,
        });
        let first_admin_code = if server.meta.users()?.is_empty() {
            let admin = server.meta.create_user("admin", true)?;
            Some(server.new_code(admin.id, Some(1), 7 * 24)?)
        } else {
            None
        };
        Ok(Opened {
            server,
            first_admin_code,
        })
    }

    /// Tells the download pages how devices reach this server; the first
    /// call wins (a server listens once).
    pub fn publish(&self, p: Published) {
        let _ = self.published.set(p);
    }

    pub(crate) fn published(&self) -> Published {
        self.published.get().cloned().unwrap_or_default()
    }

    /// The organisation's public signing key (hex), which installers give
    /// devices so they can check enrolment files.
    pub fn org_public_key(&self) -> String {
        hex::encode(self.signing.public_key())
    }

    /// Whether `token` is the scrape token of `/metrics`. Compared as keyed
    /// hashes, so the comparison's time says nothing about the token.
    pub(crate) fn is_metrics_token(&self, token: &str) -> bool {
        self.hash_secret(b"metrics", token.trim()) == self.metrics_token
    }

    pub(crate) fn hash_secret(&self, what: &[u8], secret: &str) -> [u8; 32] {
        crypto::mac(&self.mac_key, &[what, secret.as_bytes()])
    }

    /// The nonce of a challenge: stateless, bound to the user, the chunk and
    /// the expiry, so it cannot be reused by anyone else or later.
    pub(crate) fn challenge_nonce(&self, user_id: i64, id: &Id, expires: i64) -> [u8; 32] {
        crypto::mac(
            &self.mac_key,
            &[
                b"challenge",
                &user_id.to_le_bytes(),
                &id.0,
                &expires.to_le_bytes(),
            ],
        )
    }

    /// Creates an enrolment code for `user_id`, valid `hours`, for `uses`
    /// enrolments (`None`: any number). Only its hash is stored.
    pub fn new_code(
        &self,
        user_id: i64,
        uses: Option<u32>,
        hours: u32,
    ) -> Result<String, ServerError> {
        let raw: [u8; 15] = rand::random();
        let code = canonical_code(&hex::encode_upper(raw));
        let expires = self.now() + i64::from(hours) * 3600;
        self.meta.create_code(
            &self.hash_secret(b"code", &normalise_code(&code)),
            user_id,
            uses,
            expires,
        )?;
        Ok(code)
    }

    /// The organisation keys, as provisioned to enrolled devices.
    pub fn org_keys(&self) -> &str {
        &self.keys
    }
}

/// A code as the server prints it (groups of five letters or digits joined
/// by dashes), whatever way it was typed or linked.
pub(crate) fn canonical_code(code: &str) -> String {
    normalise_code(code)
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// Codes are typed by people: ignore case, spaces and dashes.
pub(crate) fn normalise_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
