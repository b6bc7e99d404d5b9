//! Repository passwords and other secrets. They live in the desktop's
//! Secret Service (GNOME Keyring, KWallet), which keeps them across
//! restarts; or, only where no Secret Service is reachable and the user
//! chose it, in a file only they can read (created 0600). Never the
//! settings file, never a log line.
//!
//! Older versions kept secrets in the kernel's key store alone, which is
//! lost at every reboot and expires after a few days: a secret still found
//! there is moved to the Secret Service the first time it is read.

use crate::error::{AgentError, Result};
use std::path::Path;
use zeroize::Zeroizing;

const SERVICE: &str = "tidemark";

/// A secret wiped from memory when dropped.
pub type Secret = Zeroizing<Vec<u8>>;

/// What [`crate::SetupDone`] and the CLI say when a secret went to the
/// Secret Service.
pub const IN_KEYRING: &str =
    "your desktop's keyring (the Secret Service: GNOME Keyring or KWallet), which keeps it across restarts";

/// The store that keeps secrets across restarts.
mod store {
    use super::SERVICE;
    use keyring::{Entry, Error};

    /// The Secret Service's entry for `name`. Built explicitly (not the
    /// crate's default store) so the kernel store can never be chosen.
    #[cfg(target_os = "linux")]
    pub fn lasting(name: &str) -> Result<Entry, Error> {
        let c = keyring::secret_service::SsCredential::new_with_target(None, SERVICE, name)?;
        Ok(Entry::new_with_credential(Box::new(c)))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn lasting(name: &str) -> Result<Entry, Error> {
        Entry::new(SERVICE, name)
    }

    /// Where older versions kept `name`: the kernel's key store, lost at
    /// reboot. Read only to move what is still there.
    #[cfg(target_os = "linux")]
    pub fn kernel(name: &str) -> Option<Entry> {
        let mut c =
            keyring::keyutils::KeyutilsCredential::new_with_target(None, SERVICE, name).ok()?;
        // Reading is a search from the session keyring, which also finds
        // what sits in the persistent one; re-linking into the persistent
        // keyring (the crate's habit) fails on some systems and is not
        // wanted for a store only read from.
        c.persistent = None;
        Some(Entry::new_with_credential(Box::new(c)))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn kernel(_name: &str) -> Option<Entry> {
        None
    }
}

/// Keeps `secret` under `name` in the Secret Service. Fails with
/// [`AgentError::Keyring`] (saying why) when none is reachable.
pub(crate) fn keep(name: &str, secret: &str) -> Result<()> {
    store::lasting(name)
        .and_then(|e| e.set_password(secret))
        .map_err(|e| AgentError::Keyring(unreachable_reason(&e)))
}

/// The secret kept under `name`, if any. A secret found only in the
/// kernel store (older versions) is moved to the Secret Service. Where no
/// Secret Service is reachable, what the kernel store still holds is used
/// as it is, and nothing else is found.
pub(crate) fn fetch(name: &str) -> Option<Zeroizing<String>> {
    let unreachable = match store::lasting(name).and_then(|e| e.get_password()) {
        Ok(s) => return Some(Zeroizing::new(s)),
        Err(keyring::Error::NoEntry) => None,
        Err(e) => Some(unreachable_reason(&e)),
    };
    let old = store::kernel(name)?;
    let secret = Zeroizing::new(old.get_password().ok()?);
    match unreachable {
        None => match keep(name, &secret) {
            Ok(()) => {
                // One copy, in the store that lasts.
                let _ = old.delete_credential();
                tracing::info!(
                    name,
                    "moved a secret from the kernel key store to the Secret Service"
                );
            }
            Err(e) => {
                tracing::warn!(name, error = %e, "cannot move a secret to the Secret Service; it is lost at the next restart")
            }
        },
        Some(why) => tracing::warn!(
            name,
            reason = %why,
            "no Secret Service: using a secret from the kernel key store, which is lost at the next restart"
        ),
    }
    Some(secret)
}

/// Removes `name` from both stores (a missing entry is fine).
pub(crate) fn discard(name: &str) {
    if let Ok(e) = store::lasting(name) {
        let _ = e.delete_credential();
    }
    if let Some(e) = store::kernel(name) {
        let _ = e.delete_credential();
    }
}

/// Why the Secret Service could not be used, in words a user can act on.
fn unreachable_reason(e: &keyring::Error) -> String {
    match e {
        keyring::Error::NoStorageAccess(inner) => {
            format!("the keyring is locked or refused access ({inner}); unlock it and try again")
        }
        other => format!(
            "no Secret Service (GNOME Keyring or KWallet) is reachable on this desktop: {other}"
        ),
    }
}

fn repository_name(location: &str) -> String {
    format!("repository:{location}")
}

/// The password stored for a repository, if any.
pub fn stored_password(location: &str) -> Option<Secret> {
    let pw = fetch(&repository_name(location))?;
    Some(Zeroizing::new(pw.as_bytes().to_vec()))
}

/// Saves a repository's password in the Secret Service.
pub fn remember_password(location: &str, password: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(password)
        .map_err(|_| AgentError::Invalid("the password is not valid UTF-8".into()))?;
    keep(&repository_name(location), text)
}

/// Removes a repository's password from the keyring (a missing entry is fine).
pub fn forget_password(location: &str) {
    discard(&repository_name(location))
}

/// The first line of a password file.
pub fn read_password_file(path: &Path) -> Result<Secret> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        AgentError::Invalid(format!(
            "cannot read the password file {}: {e}",
            path.display()
        ))
    })?);
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(AgentError::Invalid(format!(
            "the password file {} is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(line.as_bytes().to_vec()))
}

/// Writes a file only its owner can read, replacing what was there.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| AgentError::io(dir, e))?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    let mut f = o.open(path).map_err(|e| AgentError::io(path, e))?;
    f.write_all(bytes).map_err(|e| AgentError::io(path, e))?;
    f.sync_all().map_err(|e| AgentError::io(path, e))
}

/// The password of a repository without asking anyone: the given file,
/// then `TIDEMARK_PASSWORD` (scripts, tests), then the Secret Service.
pub fn password_for(location: &str, file: Option<&Path>) -> Result<Secret> {
    if let Some(f) = file {
        return read_password_file(f);
    }
    if let Ok(p) = std::env::var("TIDEMARK_PASSWORD") {
        return Ok(Zeroizing::new(p.into_bytes()));
    }
    stored_password(location).ok_or_else(|| AgentError::NoPassword {
        location: location.into(),
    })
}

/// A recovery key: 128 random bits written as eight groups of four hex
/// digits, easy to print and type back. It is added to the repository as a
/// second key, so it opens the backups when the password is lost.
pub fn new_recovery_key() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    let h = hex::encode(b);
    h.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_files_are_private_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/pw");
        write_private(&p, b"correct horse\nignored").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(&read_password_file(&p).unwrap()[..], b"correct horse");
        std::fs::write(&p, "").unwrap();
        assert!(read_password_file(&p).is_err());
    }

    #[test]
    fn recovery_keys_are_long_and_distinct() {
        let a = new_recovery_key();
        assert_eq!(a.len(), 32 + 7);
        assert_ne!(a, new_recovery_key());
    }
}
