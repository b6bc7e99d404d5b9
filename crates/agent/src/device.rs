//! This device's enrolment with a company server: what is public (server
//! address, pinned certificate fingerprint, user, repository parameters) in
//! `<data dir>/servers/<server>/device.json`; what is secret (device token,
//! organisation keys) in the desktop's Secret Service (see `secrets`), in a
//! 0600 file the user chose where no Secret Service is reachable, or for
//! scripts and tests in the file named by `TIDEMARK_DEVICE_SECRET_FILE`.

use crate::error::{AgentError, Result};
use crate::paths::Paths;
use client::{ServerClient, Trust};
use format::RepoConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
pub struct DeviceInfo {
    pub url: String,
    pub fingerprint: Option<String>,
    pub user: String,
    pub admin: bool,
    pub device_id: i64,
    pub repository: RepoConfig,
    /// The 0600 file holding the secret, where the user chose one because
    /// no Secret Service was reachable at enrolment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct DeviceSecret {
    token: String,
    keys: String,
}

/// What enrolment tells the user.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Enrolled {
    pub server: String,
    pub user: String,
    pub admin: bool,
    pub device_id: i64,
    /// SHA-256 of the server's certificate, pinned from now on; shown so the
    /// user can compare it with what the administrator published.
    pub fingerprint: Option<String>,
    pub secret_stored_in: String,
}

/// Whether a repository location names a company server.
pub fn is_server(location: &str) -> bool {
    location.starts_with("https://") || location.starts_with("http://")
}

fn normalise(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

fn state_dir(paths: &Paths, url: &str) -> PathBuf {
    let name: String = normalise(url)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    paths.data.join("servers").join(name)
}

fn secret_file() -> Option<PathBuf> {
    std::env::var_os("TIDEMARK_DEVICE_SECRET_FILE").map(PathBuf::from)
}

fn secret_name(url: &str) -> String {
    format!("device:{}", normalise(url))
}

/// Keeps the secret: the file scripts name in `TIDEMARK_DEVICE_SECRET_FILE`,
/// else the Secret Service, else `file_if_no_keyring` (the user's consent).
/// Returns where it went and, for a file, the file, in words for the user.
fn save_secret(
    url: &str,
    s: &DeviceSecret,
    file_if_no_keyring: Option<&Path>,
) -> Result<(String, Option<PathBuf>)> {
    let json = zeroize::Zeroizing::new(
        serde_json::to_string(s).map_err(|e| AgentError::Invalid(e.to_string()))?,
    );
    if let Some(p) = secret_file() {
        crate::secrets::write_private(&p, json.as_bytes())?;
        return Ok((
            format!(
                "{} (readable only by you), as TIDEMARK_DEVICE_SECRET_FILE asks",
                p.display()
            ),
            None,
        ));
    }
    match crate::secrets::keep(&secret_name(url), &json) {
        Ok(()) => Ok((crate::secrets::IN_KEYRING.into(), None)),
        Err(AgentError::Keyring(why)) => match file_if_no_keyring {
            Some(p) => {
                crate::secrets::write_private(p, json.as_bytes())?;
                Ok((
                    format!(
                        "{} (readable only by you), as you chose, because {why}",
                        p.display()
                    ),
                    Some(p.to_path_buf()),
                ))
            }
            None => Err(AgentError::Keyring(format!(
                "{why}; keep the device token in a file only you can read instead (the app offers it; the CLI: set TIDEMARK_DEVICE_SECRET_FILE)"
            ))),
        },
        Err(e) => Err(e),
    }
}

fn load_secret(url: &str, info: &DeviceInfo) -> Result<DeviceSecret> {
    let json = match secret_file().or_else(|| info.secret_file.clone()) {
        Some(p) => {
            zeroize::Zeroizing::new(std::fs::read_to_string(&p).map_err(|e| AgentError::io(&p, e))?)
        }
        None => crate::secrets::fetch(&secret_name(url))
            .ok_or_else(|| AgentError::NotEnrolled { url: url.into() })?,
    };
    serde_json::from_str(&json).map_err(|_| AgentError::NotEnrolled { url: url.into() })
}

fn load_info(paths: &Paths, url: &str) -> Result<DeviceInfo> {
    let p = state_dir(paths, url).join("device.json");
    let text =
        std::fs::read_to_string(&p).map_err(|_| AgentError::NotEnrolled { url: url.into() })?;
    serde_json::from_str(&text).map_err(|e| AgentError::BadConfig {
        path: p,
        message: e.to_string(),
    })
}

/// Enrols this device with the server at `url` using an enrolment code.
/// `expect` pins a fingerprint given out of band; without it the first
/// certificate seen is pinned (and reported for the user to compare).
pub fn enroll(
    paths: &Paths,
    url: &str,
    code: &str,
    name: &str,
    expect: Option<String>,
) -> Result<Enrolled> {
    enroll_keeping(paths, url, code, name, expect, None)
}

/// [`enroll`], keeping the secret in `file_if_no_keyring` (0600) when no
/// Secret Service is reachable: the user's explicit choice in the app.
pub fn enroll_keeping(
    paths: &Paths,
    url: &str,
    code: &str,
    name: &str,
    expect: Option<String>,
    file_if_no_keyring: Option<&Path>,
) -> Result<Enrolled> {
    let url = normalise(url);
    if !is_server(&url) {
        return Err(AgentError::Invalid(
            "the server address must start with https:// (or http:// for a test server on loopback)"
                .into(),
        ));
    }
    let trust = expect.map_or(Trust::FirstUse, Trust::Pinned);
    let c = ServerClient::new(&url, trust, None)?;
    let e = c.enroll(code, name)?;
    let fingerprint = c.seen_fingerprint();
    let dir = state_dir(paths, &url);
    std::fs::create_dir_all(&dir).map_err(|err| AgentError::io(&dir, err))?;
    let (where_, secret_file) = save_secret(
        &url,
        &DeviceSecret {
            token: e.token,
            keys: e.keys,
        },
        file_if_no_keyring,
    )?;
    let info = DeviceInfo {
        url: url.clone(),
        fingerprint: fingerprint.clone(),
        user: e.user.clone(),
        admin: e.admin,
        device_id: e.device_id,
        repository: e.repository.clone(),
        secret_file,
    };
    let file = dir.join("device.json");
    let json = serde_json::to_vec_pretty(&info).map_err(|e| AgentError::Invalid(e.to_string()))?;
    std::fs::write(&file, json).map_err(|e| AgentError::io(&file, e))?;
    Ok(Enrolled {
        server: url,
        user: e.user,
        admin: e.admin,
        device_id: e.device_id,
        fingerprint,
        secret_stored_in: where_,
    })
}

/// An authenticated client for `url` and this device's enrolment record.
pub fn client(paths: &Paths, url: &str) -> Result<(ServerClient, DeviceInfo)> {
    let (c, info, _) = connect(paths, url)?;
    Ok((c, info))
}

/// The client, the public enrolment record and the secret, each read once.
fn connect(paths: &Paths, url: &str) -> Result<(ServerClient, DeviceInfo, DeviceSecret)> {
    let info = load_info(paths, url)?;
    let secret = load_secret(url, &info)?;
    let trust = match &info.fingerprint {
        Some(fp) => Trust::Pinned(fp.clone()),
        None if info.url.starts_with("http://") => Trust::FirstUse,
        None => return Err(AgentError::NotEnrolled { url: url.into() }),
    };
    let c = ServerClient::new(&info.url, trust, Some(secret.token.clone()))?;
    Ok((c, info, secret))
}

/// The server repository: local index and locks in this device's state
/// folder, data and snapshots on the server. `as_user` (administrators
/// only) works on another user's backups; the server logs it.
pub fn open_repository(
    paths: &Paths,
    url: &str,
    open: &repository::OpenOptions,
    as_user: Option<String>,
) -> Result<repository::Repository> {
    let (c, info, secret) = connect(paths, url)?;
    let c = match as_user {
        Some(_) if !info.admin => {
            return Err(AgentError::Invalid(format!(
                "--as-user needs an administrator's device; this one is enrolled as {}",
                info.user
            )))
        }
        Some(u) => c.on_behalf_of(u),
        None => {
            // The organisation's throttle rules; without them (an older
            // server, a bad policy) the user's rules and the defaults hold.
            match c
                .get("/v1/policy")
                .map_err(AgentError::from)
                .and_then(|p| crate::network::admin_rules(&p))
            {
                Ok(r) => crate::network::set_admin_rules(r),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot use the organisation's throttle rules")
                }
            }
            c.throttled(crate::network::throttle())
        }
    };
    let keys = crypto::MasterKeys::from_hex(&secret.keys)
        .map_err(|_| AgentError::NotEnrolled { url: url.into() })?;
    let local_dir = state_dir(paths, url).join("local");
    std::fs::create_dir_all(&local_dir).map_err(|e| AgentError::io(&local_dir, e))?;
    let local = storage::open(&local_dir.to_string_lossy())?;
    let repo = repository::Repository::with_keys(local, keys, info.repository, open);
    Ok(repo.with_remote(std::sync::Arc::new(c)))
}
