//! Password-wrapped master keys. Every key file wraps the same master keys,
//! so adding or removing a password never re-encrypts data.

use crate::error::{RepoError, Result};
use chrono::Utc;
use crypto::{derive_key, random_salt, KdfParams, MasterKeys};
use format::{KeyFile, FORMAT_VERSION};

const AAD: &[u8] = b"tidemark master key v1";

pub fn wrap(
    master: &MasterKeys,
    password: &[u8],
    params: KdfParams,
    hostname: &str,
    username: &str,
) -> Result<KeyFile> {
    let salt = random_salt();
    let kek = derive_key(password, &salt, params).map_err(|e| RepoError::Key(e.to_string()))?;
    Ok(KeyFile {
        version: FORMAT_VERSION,
        created: Utc::now(),
        hostname: hostname.to_string(),
        username: username.to_string(),
        kdf: "argon2id".into(),
        kdf_params: params,
        salt: salt.to_vec(),
        sealed_master: kek.seal(&master.to_bytes(), AAD),
    })
}

/// `Ok(None)` when the password does not fit this key file.
pub fn unwrap(kf: &KeyFile, password: &[u8]) -> Result<Option<MasterKeys>> {
    if kf.kdf != "argon2id" {
        return Err(RepoError::Key(format!("key uses unknown KDF '{}'", kf.kdf)));
    }
    // Refuse absurd costs from a hostile key file before allocating them.
    if kf.kdf_params.m_cost > 4 * 1024 * 1024 || kf.kdf_params.t_cost > 100 {
        return Err(RepoError::Key(
            "key file asks for an unreasonable Argon2 cost".into(),
        ));
    }
    let kek =
        derive_key(password, &kf.salt, kf.kdf_params).map_err(|e| RepoError::Key(e.to_string()))?;
    match kek.open(&kf.sealed_master, AAD) {
        Ok(bytes) => Ok(Some(
            MasterKeys::from_bytes(&bytes).map_err(|e| RepoError::Key(e.to_string()))?,
        )),
        Err(_) => Ok(None),
    }
}
