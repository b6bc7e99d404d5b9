//! The enrolment file a company server hands out for zero-touch enrolment:
//! where the server is, how to recognise its certificate, and a single-use
//! enrolment code, signed with the organisation's Ed25519 key. A device
//! acts on it without asking anything, so it must check the signature
//! against the organisation key its installer brought, and the expiry.

use crate::signed::{length_prefixed, signed_by};
use crypto::signing::SigningKey;
use serde::{Deserialize, Serialize};

/// The `format` field of version 1.
pub const ENROLMENT_FORMAT: &str = "tidemark-enrolment/1";

/// The file name the download page offers and the installer places.
pub const ENROLMENT_FILE: &str = "enrolment.tidemark";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentFile {
    pub format: String,
    /// `https://host:port`, the server's address as devices reach it.
    pub server: String,
    /// SHA-256 of the server's certificate (hex), pinned from the start.
    pub fingerprint: String,
    /// A single-use enrolment code for `user`.
    pub code: String,
    pub user: String,
    /// Unix seconds after which the file (and its code) is refused.
    pub expires: i64,
    /// The signer's public key (hex), to say which key signed; trust comes
    /// only from comparing it with the key the device already has.
    pub public_key: String,
    /// Ed25519 signature (hex) of [`EnrolmentFile::signed_bytes`].
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolmentError {
    #[error("this is not a Tidemark enrolment file ({0}); download it again from your company's Tidemark page")]
    Malformed(String),
    #[error("this enrolment file was not signed by your organisation's key (it was changed, or it comes from someone else); nothing was enrolled. Download it again from your company's Tidemark page")]
    BadSignature,
    #[error("this enrolment file expired {0}; ask your administrator for a new download link")]
    Expired(String),
}

impl EnrolmentFile {
    /// What the signature covers: every field but the signature, each
    /// length-prefixed so no two different files sign the same bytes.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let expires = self.expires.to_string();
        length_prefixed(&[
            &self.format,
            &self.server,
            &self.fingerprint,
            &self.code,
            &self.user,
            &expires,
            &self.public_key,
        ])
    }

    /// A signed file for these fields.
    pub fn sign(
        key: &SigningKey,
        server: &str,
        fingerprint: &str,
        code: &str,
        user: &str,
        expires: i64,
    ) -> EnrolmentFile {
        let mut f = EnrolmentFile {
            format: ENROLMENT_FORMAT.into(),
            server: server.into(),
            fingerprint: fingerprint.into(),
            code: code.into(),
            user: user.into(),
            expires,
            public_key: hex::encode(key.public_key()),
            signature: String::new(),
        };
        f.signature = hex::encode(key.sign(&f.signed_bytes()));
        f
    }

    /// Reads a file and checks it against the organisation key the device
    /// trusts (`trusted`, 32 bytes) at time `now` (unix seconds).
    pub fn open(bytes: &[u8], trusted: &[u8], now: i64) -> Result<EnrolmentFile, EnrolmentError> {
        let f: EnrolmentFile =
            serde_json::from_slice(bytes).map_err(|e| EnrolmentError::Malformed(e.to_string()))?;
        if f.format != ENROLMENT_FORMAT {
            return Err(EnrolmentError::Malformed(format!(
                "format {:?}, expected {ENROLMENT_FORMAT}",
                f.format
            )));
        }
        if !signed_by(trusted, &f.public_key, &f.signature, &f.signed_bytes()) {
            return Err(EnrolmentError::BadSignature);
        }
        if now >= f.expires {
            let when = chrono::DateTime::from_timestamp(f.expires, 0)
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| "long ago".into());
            return Err(EnrolmentError::Expired(when));
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate().expect("key").0
    }

    #[test]
    fn a_signed_file_opens_and_any_change_is_refused() {
        let k = key();
        let f = EnrolmentFile::sign(
            &k,
            "https://backup.example:8443",
            "ab12",
            "CODE-1",
            "ann",
            2_000,
        );
        let bytes = serde_json::to_vec(&f).expect("json");
        assert_eq!(
            EnrolmentFile::open(&bytes, &k.public_key(), 1_000),
            Ok(f.clone())
        );
        // Every field is covered.
        let edits: [fn(&mut EnrolmentFile); 5] = [
            |f| f.server = "https://evil.example".into(),
            |f| f.fingerprint = "cd34".into(),
            |f| f.code = "CODE-2".into(),
            |f| f.user = "eve".into(),
            |f| f.expires += 1,
        ];
        for edit in &edits {
            let mut t = f.clone();
            edit(&mut t);
            let bytes = serde_json::to_vec(&t).expect("json");
            assert_eq!(
                EnrolmentFile::open(&bytes, &k.public_key(), 1_000),
                Err(EnrolmentError::BadSignature)
            );
        }
        // Re-signed by another key, with that key inside: still refused.
        let other = key();
        let forged = EnrolmentFile::sign(&other, "https://evil.example", "cd34", "X", "ann", 2_000);
        let bytes = serde_json::to_vec(&forged).expect("json");
        assert_eq!(
            EnrolmentFile::open(&bytes, &k.public_key(), 1_000),
            Err(EnrolmentError::BadSignature)
        );
        // Expired.
        let bytes = serde_json::to_vec(&f).expect("json");
        assert!(matches!(
            EnrolmentFile::open(&bytes, &k.public_key(), 2_000),
            Err(EnrolmentError::Expired(_))
        ));
        assert!(matches!(
            EnrolmentFile::open(b"{\"nope\":1}", &k.public_key(), 0),
            Err(EnrolmentError::Malformed(_))
        ));
    }
}
