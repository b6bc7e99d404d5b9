//! Certificate pinning: the company server usually has a self-signed
//! certificate, so instead of a CA chain the client accepts exactly the
//! certificate whose SHA-256 fingerprint it pinned at enrolment. The TLS
//! handshake signature is still verified with the certificate's key.

use crate::{ClientError, Trust};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, Mutex};

/// The last fingerprint seen and whether it failed the pin, shared with the
/// verifier so errors can say what happened.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen(Arc<Mutex<(Option<String>, Option<String>)>>);

impl Seen {
    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    pub(crate) fn mismatch(&self) -> Option<ClientError> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match (&g.0, &g.1) {
            (Some(got), Some(expected)) => Some(ClientError::FingerprintMismatch {
                expected: expected.clone(),
                got: got.clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Pinned {
    trust: Trust,
    seen: Seen,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = crypto::cert_fingerprint(end_entity);
        let mut g = self.seen.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = Some(got.clone());
        match &self.trust {
            Trust::FirstUse => Ok(ServerCertVerified::assertion()),
            Trust::Pinned(expected) if expected.eq_ignore_ascii_case(&got) => {
                g.1 = None;
                Ok(ServerCertVerified::assertion())
            }
            Trust::Pinned(expected) => {
                g.1 = Some(expected.clone());
                Err(rustls::Error::General(
                    "certificate fingerprint does not match the pinned one".into(),
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub(crate) fn client_config(trust: Trust, seen: Seen) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned {
        trust,
        seen,
        provider: provider.clone(),
    });
    // The ring provider supports the default protocol versions, so this
    // cannot fail; fall back to rustls' defaults all the same.
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
        Err(_) => rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    }
}
