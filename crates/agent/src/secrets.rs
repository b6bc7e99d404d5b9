//! Repository passwords and other secrets: the OS keyring first; a file the
//! user chose (created 0600) where no keyring is reachable. Never the
//! settings file, never a log line.

use crate::error::{AgentError, Result};
use std::path::Path;
use zeroize::Zeroizing;

const SERVICE: &str = "tidemark";

/// A secret wiped from memory when dropped.
pub type Secret = Zeroizing<Vec<u8>>;

fn repository_entry(location: &str) -> Result<keyring::Entry> {
    keyring::Entry::new(SERVICE, &format!("repository:{location}"))
        .map_err(|e| AgentError::Keyring(e.to_string()))
}

/// The password stored in the keyring for a repository, if any.
pub fn stored_password(location: &str) -> Option<Secret> {
    let pw = repository_entry(location).ok()?.get_password().ok()?;
    Some(Zeroizing::new(pw.into_bytes()))
}

/// Saves a repository's password in the keyring.
pub fn remember_password(location: &str, password: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(password)
        .map_err(|_| AgentError::Invalid("the password is not valid UTF-8".into()))?;
    repository_entry(location)?
        .set_password(text)
        .map_err(|e| AgentError::Keyring(e.to_string()))
}

/// Removes a repository's password from the keyring (a missing entry is fine).
pub fn forget_password(location: &str) {
    if let Ok(e) = repository_entry(location) {
        let _ = e.delete_credential();
    }
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
/// then `TIDEMARK_PASSWORD` (scripts, tests), then the keyring.
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
