//! Ed25519 signatures (ring's): what a company server hands out for devices
//! to act on without asking anyone (enrolment files) is signed with the
//! organisation's key, and a device checks it against the public key that
//! came with its installer, never against a key carried by the file itself.

use crate::CryptoError;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use zeroize::Zeroizing;

pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

pub struct SigningKey(Ed25519KeyPair);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", hex::encode(self.public_key()))
    }
}

impl SigningKey {
    /// A new key, and its PKCS#8 document to store (secret).
    pub fn generate() -> Result<(SigningKey, Zeroizing<Vec<u8>>), CryptoError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| CryptoError::Malformed("no randomness for a signing key"))?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        Ok((SigningKey::from_pkcs8(&pkcs8)?, pkcs8))
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, CryptoError> {
        Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(SigningKey)
            .map_err(|_| CryptoError::Malformed("not an Ed25519 PKCS#8 signing key"))
    }

    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut k = [0u8; PUBLIC_KEY_LEN];
        k.copy_from_slice(self.0.public_key().as_ref());
        k
    }

    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut s = [0u8; SIGNATURE_LEN];
        s.copy_from_slice(self.0.sign(message).as_ref());
        s
    }
}

/// Whether `signature` is `public_key`'s signature of `message`.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    public_key.len() == PUBLIC_KEY_LEN
        && UnparsedPublicKey::new(&ED25519, public_key)
            .verify(message, signature)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let (k, pkcs8) = generated();
        let again = SigningKey::from_pkcs8(&pkcs8).expect("reload");
        assert_eq!(k.public_key(), again.public_key());
        let sig = k.sign(b"enrol at https://backup.example");
        assert!(verify_signature(
            &k.public_key(),
            b"enrol at https://backup.example",
            &sig
        ));
        assert!(!verify_signature(
            &k.public_key(),
            b"enrol at https://evil.example",
            &sig
        ));
        let (other, _) = generated();
        assert!(!verify_signature(
            &other.public_key(),
            b"enrol at https://backup.example",
            &sig
        ));
        let mut bent = sig;
        bent[10] ^= 1;
        assert!(!verify_signature(
            &k.public_key(),
            b"enrol at https://backup.example",
            &bent
        ));
        assert!(!verify_signature(&k.public_key()[..31], b"x", &sig));
        assert!(SigningKey::from_pkcs8(b"not a key").is_err());
    }

    fn generated() -> (SigningKey, Zeroizing<Vec<u8>>) {
        SigningKey::generate().expect("generate")
    }
}
