//! Where the repository password comes from, in order: `--password-file` /
//! `TIDEMARK_PASSWORD_FILE`, `TIDEMARK_PASSWORD`, the OS keyring, and a
//! prompt on the terminal. It is never taken from the command line, so it
//! never lands in shell history or `ps`.

use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::path::Path;
pub use zeroize_shim::Secret;

/// A password that is wiped from memory when dropped.
mod zeroize_shim {
    pub struct Secret(pub Vec<u8>);
    impl Drop for Secret {
        fn drop(&mut self) {
            for b in self.0.iter_mut() {
                // Volatile-free wipe is enough against casual reuse of freed
                // memory; the key material proper lives in `crypto::Key`.
                *b = 0;
            }
        }
    }
}

pub struct Password {
    pub secret: Secret,
}

impl Password {
    pub fn bytes(&self) -> &[u8] {
        &self.secret.0
    }
}

fn from_file(p: &Path) -> Result<Secret> {
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("cannot read the password file {}", p.display()))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        bail!("the password file {} is empty", p.display());
    }
    Ok(Secret(line.as_bytes().to_vec()))
}

/// The password of an existing repository.
pub fn existing(file: Option<&Path>, location: &str) -> Result<Password> {
    if let Some(f) = file {
        return Ok(Password {
            secret: from_file(f)?,
        });
    }
    if let Ok(p) = std::env::var("TIDEMARK_PASSWORD") {
        return Ok(Password {
            secret: Secret(p.into_bytes()),
        });
    }
    if let Some(pw) = agent::secrets::stored_password(location) {
        return Ok(Password {
            secret: Secret(pw.to_vec()),
        });
    }
    if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password(format!("Password for {location}: "))
            .context("cannot read the password")?;
        return Ok(Password {
            secret: Secret(pw.into_bytes()),
        });
    }
    bail!("no password: set TIDEMARK_PASSWORD_FILE or --password-file, or run in a terminal to be asked")
}

/// A new password (for `init`, `key add`, `key passwd`): from the given
/// file or environment variables, else asked twice.
pub fn new(file: Option<&Path>, env_file: &str, env_value: &str, what: &str) -> Result<Secret> {
    if let Some(f) = file {
        return from_file(f);
    }
    if let Ok(f) = std::env::var(env_file) {
        return from_file(Path::new(&f));
    }
    if let Ok(p) = std::env::var(env_value) {
        return Ok(Secret(p.into_bytes()));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no {what}: set {env_file} or run in a terminal to be asked");
    }
    eprintln!("Choose the {what}. Keep it safe: without it, nobody (not even Tidemark) can restore your files.");
    let a =
        rpassword::prompt_password(format!("New {what}: ")).context("cannot read the password")?;
    if a.len() < 8 {
        bail!("the {what} must have at least 8 characters");
    }
    let b = rpassword::prompt_password(format!("Repeat the {what}: "))
        .context("cannot read the password")?;
    if a != b {
        bail!("the two entries differ; nothing was changed");
    }
    Ok(Secret(a.into_bytes()))
}

/// Saves the password in the OS keyring; says why not when it cannot.
pub fn remember(location: &str, secret: &[u8]) -> std::result::Result<(), String> {
    agent::secrets::remember_password(location, secret).map_err(|e| e.to_string())
}
