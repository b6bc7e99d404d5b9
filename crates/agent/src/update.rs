//! Updates from the company server: the server offers a version with the
//! SHA-256 of each program, signed with the organisation key, the same key
//! the installer left for enrolment files (Tauri's updater checks a key
//! baked in at build time, which cannot be each organisation's own; this
//! follows its model with the key the organisation controls). The admin
//! pins a version with the policy's `"app_version"`. Installing replaces
//! the programs of a per-user install in place, and never while a backup or
//! restore runs; the agent then says so ([`crate::Event::UpdateInstalled`])
//! and the front end restarts into it ([`restart`]) while nothing runs.

use crate::error::{AgentError, Result};
use crate::zero_touch::org_key;
use crate::{device, Agent, Status};
use format::update::{newer, UpdateOffer};
use std::path::Path;

/// What this build is and runs on.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub const PLATFORM: &str = "linux-x86_64";
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
pub const PLATFORM: &str = "linux-aarch64";
#[cfg(all(
    target_os = "linux",
    not(any(target_arch = "x86_64", target_arch = "aarch64"))
))]
pub const PLATFORM: &str = "linux-other";
#[cfg(not(target_os = "linux"))]
pub const PLATFORM: &str = "unsupported";

/// Programs an update may replace; nothing else is written.
const PROGRAMS: [&str; 2] = ["tidemark", "tidemark-app"];
/// No program of ours is larger.
const MAX_PROGRAM: u64 = 1 << 30;

impl Agent {
    /// The signed update the company server offers, if it is newer than
    /// `current`. Errors when the offer is not signed by the organisation.
    pub fn check_update(&self, current: &str) -> Result<Option<UpdateOffer>> {
        check(self.paths(), &self.config(), current)
    }

    /// Whether a backup or restore runs (an update waits for a quiet moment).
    pub fn busy(&self) -> bool {
        matches!(
            self.status(),
            Status::BackingUp { .. } | Status::Restoring { .. }
        )
    }

    /// Installs an offer into `bin_dir` (see [`install`]).
    pub fn install_update(&self, offer: &UpdateOffer, bin_dir: &Path) -> Result<Vec<String>> {
        install(self.paths(), &self.config(), self.busy(), offer, bin_dir)
    }
}

/// The program this process was started from. Once an update has renamed
/// a new file over it, Linux names the running image "PATH (deleted)".
pub fn running_program() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let s = exe.to_str()?;
    Some(s.strip_suffix(" (deleted)").unwrap_or(s).into())
}

/// Replaces this process with the program now installed where it was
/// started from, with the same arguments and `extra` ones not given yet:
/// the way into an installed update. Returns only if that failed. The
/// caller makes sure nothing runs (see [`Agent::busy`]); the agent saved
/// its state when it changed, so nothing is lost.
pub fn restart(extra: &[&str]) -> AgentError {
    use std::os::unix::process::CommandExt;
    let Some(exe) = running_program() else {
        return AgentError::Invalid("cannot tell which program is running".into());
    };
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    for e in extra {
        if !args.iter().any(|a| a == *e) {
            args.push(e.into());
        }
    }
    let err = std::process::Command::new(&exe).args(args).exec();
    AgentError::io(&exe, err)
}

/// Where the running program lives when it is a per-user install (under
/// the home folder, writable): the only place updates are installed. A
/// package manager's install is updated by the package manager.
pub fn per_user_bin_dir() -> Option<std::path::PathBuf> {
    let exe = running_program()?;
    let dir = exe.parent()?.to_path_buf();
    let home = directories::BaseDirs::new()?.home_dir().to_path_buf();
    (dir.starts_with(&home)).then_some(dir)
}

/// The signed update the company server at `config`'s destination offers,
/// if newer than `current`; an offer not signed by the organisation key is
/// an error.
pub fn check(
    paths: &crate::Paths,
    config: &crate::Config,
    current: &str,
) -> Result<Option<UpdateOffer>> {
    let Some(crate::config::Destination::Server { url }) = &config.destination else {
        return Ok(None);
    };
    let trusted = org_key(&paths.config, "updates")?;
    let (c, _) = device::client(paths, url)?;
    let v = c.get(&format!("/v1/update?platform={PLATFORM}"))?;
    let offer = match v.get("offer") {
        Some(o) if !o.is_null() => o,
        _ => return Ok(None),
    };
    let bytes = serde_json::to_vec(offer).map_err(|e| AgentError::Invalid(e.to_string()))?;
    let offer =
        UpdateOffer::open(&bytes, &trusted).map_err(|e| AgentError::Invalid(e.to_string()))?;
    if offer.platform != PLATFORM || !newer(&offer.version, current) {
        return Ok(None);
    }
    Ok(Some(offer))
}

/// Downloads the offer's programs that `bin_dir` holds, checks each
/// against its signed SHA-256, and only then replaces them (each by a
/// rename). Refused while `busy` (a backup or restore runs).
pub fn install(
    paths: &crate::Paths,
    config: &crate::Config,
    busy: bool,
    offer: &UpdateOffer,
    bin_dir: &Path,
) -> Result<Vec<String>> {
    if busy {
        return Err(AgentError::Invalid(
            "a backup or restore is running: the update waits for a quiet moment".into(),
        ));
    }
    let Some(crate::config::Destination::Server { url }) = &config.destination else {
        return Err(AgentError::Invalid(
            "updates come from a company server".into(),
        ));
    };
    let (c, _) = device::client(paths, url)?;
    let mut fetched = Vec::new();
    for f in &offer.files {
        if !PROGRAMS.contains(&f.name.as_str()) || !bin_dir.join(&f.name).exists() {
            continue;
        }
        let bytes = c.get_bytes(&format!("/download/files/{}", f.name), MAX_PROGRAM)?;
        if crypto::sha256_hex(&bytes) != f.sha256 {
            return Err(AgentError::Invalid(format!(
                "the downloaded {} does not match the signed checksum; nothing was installed",
                f.name
            )));
        }
        fetched.push((f.name.clone(), bytes));
    }
    let mut replaced = Vec::new();
    for (name, bytes) in fetched {
        use std::os::unix::fs::PermissionsExt;
        let tmp = bin_dir.join(format!(".{name}.update"));
        std::fs::write(&tmp, &bytes).map_err(|e| AgentError::io(&tmp, e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| AgentError::io(&tmp, e))?;
        let dest = bin_dir.join(&name);
        std::fs::rename(&tmp, &dest).map_err(|e| AgentError::io(&dest, e))?;
        replaced.push(name);
    }
    tracing::info!(version = %offer.version, ?replaced, "update installed; it runs from the next start");
    Ok(replaced)
}
