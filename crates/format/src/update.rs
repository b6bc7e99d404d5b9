//! The update offer a company server signs for its devices: which version
//! of Tidemark, for which platform, and the SHA-256 of each file. Devices
//! check it against the organisation key their installer brought, the same
//! key that vouches for enrolment files, so an update signed by anyone else
//! (another server, someone in the middle) is refused.

use crate::signed::{length_prefixed, signed_by};
use crypto::signing::SigningKey;
use serde::{Deserialize, Serialize};

pub const UPDATE_FORMAT: &str = "tidemark-update/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFile {
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateOffer {
    pub format: String,
    /// e.g. `0.2.0`.
    pub version: String,
    /// e.g. `linux-x86_64`.
    pub platform: String,
    pub files: Vec<UpdateFile>,
    pub public_key: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("the update offer is malformed ({0})")]
    Malformed(String),
    #[error("the update was not signed by your organisation's key; it was refused and nothing was installed")]
    BadSignature,
}

impl UpdateOffer {
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut parts: Vec<&str> = vec![
            &self.format,
            &self.version,
            &self.platform,
            &self.public_key,
        ];
        for f in &self.files {
            parts.push(&f.name);
            parts.push(&f.sha256);
        }
        length_prefixed(&parts)
    }

    pub fn sign(key: &SigningKey, version: &str, platform: &str, files: Vec<UpdateFile>) -> Self {
        let mut o = UpdateOffer {
            format: UPDATE_FORMAT.into(),
            version: version.into(),
            platform: platform.into(),
            files,
            public_key: hex::encode(key.public_key()),
            signature: String::new(),
        };
        o.signature = hex::encode(key.sign(&o.signed_bytes()));
        o
    }

    /// Checks an offer against the organisation key the device trusts.
    pub fn open(bytes: &[u8], trusted: &[u8]) -> Result<UpdateOffer, UpdateError> {
        let o: UpdateOffer =
            serde_json::from_slice(bytes).map_err(|e| UpdateError::Malformed(e.to_string()))?;
        if o.format != UPDATE_FORMAT {
            return Err(UpdateError::Malformed(format!("format {:?}", o.format)));
        }
        if !signed_by(trusted, &o.public_key, &o.signature, &o.signed_bytes()) {
            return Err(UpdateError::BadSignature);
        }
        Ok(o)
    }
}

/// Whether `a` is a later version than `b` (dotted numbers; anything that
/// is not a number compares as 0).
pub fn newer(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .take(3)
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parse(a) > parse(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_verify_only_under_the_trusted_key_and_versions_compare() {
        let k = SigningKey::generate().expect("key").0;
        let files = vec![UpdateFile {
            name: "tidemark".into(),
            sha256: "ab".repeat(32),
        }];
        let o = UpdateOffer::sign(&k, "0.2.0", "linux-x86_64", files);
        let bytes = serde_json::to_vec(&o).expect("json");
        assert_eq!(UpdateOffer::open(&bytes, &k.public_key()), Ok(o.clone()));
        let mut t = o.clone();
        t.files[0].sha256 = "cd".repeat(32);
        let bytes = serde_json::to_vec(&t).expect("json");
        assert_eq!(
            UpdateOffer::open(&bytes, &k.public_key()),
            Err(UpdateError::BadSignature)
        );
        let other = SigningKey::generate().expect("key").0;
        let bytes = serde_json::to_vec(&o).expect("json");
        assert_eq!(
            UpdateOffer::open(&bytes, &other.public_key()),
            Err(UpdateError::BadSignature)
        );
        assert!(newer("0.10.0", "0.9.9"));
        assert!(newer("1.0.0", "0.99.0"));
        assert!(!newer("0.1.0", "0.1.0"));
        assert!(!newer("0.1.0", "0.2.0"));
    }
}
