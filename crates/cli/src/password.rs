//! Where the repository password comes from, in order: `--password-file` /
//! `TIDEMARK_PASSWORD_FILE`, `TIDEMARK_PASSWORD`, the OS keyring, and a
//! prompt on the terminal. It is never taken from the command line, so it
//! never lands in shell history or `ps`.

use agent::secrets::{password_for, read_password_file};
use agent::AgentError;
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::path::Path;

/// A password, wiped from memory when dropped.
pub use agent::secrets::Secret;

/// The password of an existing repository: the file, `TIDEMARK_PASSWORD`
/// or the keyring (as the app finds it), else a prompt on a terminal.
pub fn existing(file: Option<&Path>, location: &str) -> Result<Secret> {
    match password_for(location, file) {
        Err(AgentError::NoPassword { .. }) if std::io::stdin().is_terminal() => {
            let pw = rpassword::prompt_password(format!("Password for {location}: "))
                .context("cannot read the password")?;
            Ok(Secret::new(pw.into_bytes()))
        }
        Err(AgentError::NoPassword { .. }) => bail!("no password: set TIDEMARK_PASSWORD_FILE or --password-file, or run in a terminal to be asked"),
        other => Ok(other?),
    }
}

/// A new password (for `init`, `key add`, `key passwd`): from the given
/// file or environment variables, else asked twice.
pub fn new(file: Option<&Path>, env_file: &str, env_value: &str, what: &str) -> Result<Secret> {
    if let Some(f) = file {
        return Ok(read_password_file(f)?);
    }
    if let Ok(f) = std::env::var(env_file) {
        return Ok(read_password_file(Path::new(&f))?);
    }
    if let Ok(p) = std::env::var(env_value) {
        // Set but empty is a mistake (a variable that expanded to
        // nothing), not a choice: it would protect nothing.
        if p.is_empty() {
            bail!("{env_value} is set but empty: set it to the {what}, or unset it to be asked");
        }
        return Ok(Secret::new(p.into_bytes()));
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
    Ok(Secret::new(a.into_bytes()))
}

/// Saves the password in the OS keyring; says why not when it cannot.
pub fn remember(location: &str, secret: &[u8]) -> std::result::Result<(), String> {
    agent::secrets::remember_password(location, secret).map_err(|e| e.to_string())
}
