//! This device's enrolment with a company server: what is public (server
//! address, pinned certificate fingerprint, user, repository parameters) in
//! `<data dir>/servers/<server>/device.json`; what is secret (device token,
//! organisation keys) in the OS keyring, or for scripts and tests in the
//! file named by `TIDEMARK_DEVICE_SECRET_FILE` (created 0600).

use anyhow::{bail, Context, Result};
use client::{ServerClient, Trust};
use format::RepoConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Serialize, Deserialize)]
pub struct DeviceInfo {
    pub url: String,
    pub fingerprint: Option<String>,
    pub user: String,
    pub admin: bool,
    pub device_id: i64,
    pub repository: RepoConfig,
}

#[derive(Serialize, Deserialize)]
struct DeviceSecret {
    token: String,
    keys: String,
}

/// Whether a repository location names a company server.
pub fn is_server(location: &str) -> bool {
    location.starts_with("https://") || location.starts_with("http://")
}

fn normalise(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

fn state_dir(url: &str) -> Result<PathBuf> {
    let dirs = directories::ProjectDirs::from("org", "Tidemark", "tidemark")
        .context("cannot find your data folder (is HOME set?)")?;
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
    Ok(dirs.data_dir().join("servers").join(name))
}

fn secret_file() -> Option<PathBuf> {
    std::env::var_os("TIDEMARK_DEVICE_SECRET_FILE").map(PathBuf::from)
}

fn keyring_entry(url: &str) -> Result<keyring::Entry> {
    keyring::Entry::new("tidemark", &format!("device:{}", normalise(url)))
        .context("cannot use the OS keyring")
}

fn save_secret(url: &str, s: &DeviceSecret) -> Result<&'static str> {
    let json = serde_json::to_string(s)?;
    if let Some(p) = secret_file() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .with_context(|| format!("cannot write {}", p.display()))?;
        f.write_all(json.as_bytes())?;
        return Ok("the file in TIDEMARK_DEVICE_SECRET_FILE");
    }
    keyring_entry(url)?
        .set_password(&json)
        .context("cannot store the device token in the OS keyring; set TIDEMARK_DEVICE_SECRET_FILE to keep it in a file of your choice instead")?;
    Ok("the OS keyring")
}

fn load_secret(url: &str) -> Result<DeviceSecret> {
    let json = match secret_file() {
        Some(p) => std::fs::read_to_string(&p)
            .with_context(|| format!("cannot read the device secret file {}", p.display()))?,
        None => keyring_entry(url)?.get_password().context(
            "this device's token is not in the OS keyring; enrol again with `tidemark enroll`",
        )?,
    };
    serde_json::from_str(&json).context("the stored device secret is damaged; enrol again")
}

fn load_info(url: &str) -> Result<DeviceInfo> {
    let p = state_dir(url)?.join("device.json");
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!("this device is not enrolled with {url}: run `tidemark enroll {url} CODE` first")
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is damaged; enrol again", p.display()))
}

/// Enrols this device; returns what to show the user.
pub fn enroll(
    url: &str,
    code: &str,
    name: &str,
    expect: Option<String>,
) -> Result<serde_json::Value> {
    let url = normalise(url);
    if !is_server(&url) {
        bail!("the server address must start with https:// (or http:// for a test server on loopback)");
    }
    let trust = expect.clone().map_or(Trust::FirstUse, Trust::Pinned);
    let c = ServerClient::new(&url, trust, None)?;
    let e = c.enroll(code, name)?;
    let fingerprint = c.seen_fingerprint();
    let info = DeviceInfo {
        url: url.clone(),
        fingerprint: fingerprint.clone(),
        user: e.user.clone(),
        admin: e.admin,
        device_id: e.device_id,
        repository: e.repository.clone(),
    };
    let dir = state_dir(&url)?;
    std::fs::create_dir_all(&dir)?;
    let where_ = save_secret(
        &url,
        &DeviceSecret {
            token: e.token,
            keys: e.keys,
        },
    )?;
    std::fs::write(dir.join("device.json"), serde_json::to_vec_pretty(&info)?)?;
    Ok(serde_json::json!({
        "server": url, "user": e.user, "admin": e.admin, "device_id": e.device_id,
        "fingerprint": fingerprint, "secret_stored_in": where_,
    }))
}

/// An authenticated client for `url`.
pub fn client(url: &str) -> Result<(ServerClient, DeviceInfo)> {
    let (c, info, _) = connect(url)?;
    Ok((c, info))
}

/// The client, the public enrolment record and the secret, each read once.
fn connect(url: &str) -> Result<(ServerClient, DeviceInfo, DeviceSecret)> {
    let info = load_info(url)?;
    let secret = load_secret(url)?;
    let trust = match &info.fingerprint {
        Some(fp) => Trust::Pinned(fp.clone()),
        None if info.url.starts_with("http://") => Trust::FirstUse,
        None => bail!("no certificate fingerprint was pinned for {url}; enrol again"),
    };
    let c = ServerClient::new(&info.url, trust, Some(secret.token.clone()))?;
    Ok((c, info, secret))
}

/// The server repository: local index and locks in this device's state
/// folder, data and snapshots on the server.
pub fn open_repository(
    url: &str,
    open: &repository::OpenOptions,
    as_user: Option<String>,
) -> Result<repository::Repository> {
    let (c, info, secret) = connect(url)?;
    let c = match as_user {
        Some(_) if !info.admin => bail!(
            "--as-user needs an administrator's device; this one is enrolled as {}",
            info.user
        ),
        Some(u) => c.on_behalf_of(u),
        None => c,
    };
    let keys = crypto::MasterKeys::from_hex(&secret.keys).map_err(|e| {
        anyhow::anyhow!("the stored organisation keys are damaged ({e}); enrol again")
    })?;
    let local_dir = state_dir(url)?.join("local");
    std::fs::create_dir_all(&local_dir)?;
    let local = storage::open(&local_dir.to_string_lossy())?;
    let repo = repository::Repository::with_keys(local, keys, info.repository, open);
    Ok(repo.with_remote(std::sync::Arc::new(c)))
}
