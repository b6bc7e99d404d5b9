//! What the two signed documents (the enrolment file and the update offer)
//! share: how their fields become the signed bytes, and how a signature is
//! checked against the organisation key the device trusts.

use crypto::signing::verify_signature;

/// Every part length-prefixed, so no two different documents sign the same
/// bytes (shared by the enrolment file and the update offer).
pub(crate) fn length_prefixed(parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// Whether a document names the trusted key as its signer (hex) and
/// carries that key's signature (hex) of `bytes`. The named key only says
/// which key signed; trust comes from comparing it with the device's.
pub(crate) fn signed_by(trusted: &[u8], public_key: &str, signature: &str, bytes: &[u8]) -> bool {
    match (hex::decode(public_key), hex::decode(signature)) {
        (Ok(signer), Ok(sig)) => signer == trusted && verify_signature(trusted, bytes, &sig),
        _ => false,
    }
}
