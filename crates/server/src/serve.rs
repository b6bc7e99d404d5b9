//! Listening: HTTPS with rustls (a self-signed certificate made on the first
//! start unless one is given), or plain HTTP on loopback for tests.

use crate::{Limits, Server, ServerError};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub enum Tls {
    /// `DIR/tls/cert.pem` and `key.pem`, made on the first start.
    SelfSigned,
    /// An admin's own certificate chain and key (PEM).
    Files { cert: PathBuf, key: PathBuf },
    /// No TLS; refused unless the address is a loopback one.
    InsecureLoopbackHttp,
}

/// The certificate in use: PEM bytes and the SHA-256 fingerprint of its
/// DER form, which clients pin at enrolment and people compare by eye.
pub struct Certificate {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub fingerprint: String,
}

fn tls_err(dir: &Path, message: String) -> ServerError {
    ServerError::DataDir {
        path: dir.to_path_buf(),
        message,
    }
}

/// Loads the data folder's certificate, making a self-signed one valid for
/// `localhost`, the loopback addresses and `names` on the first start.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<Certificate, ServerError> {
    let tls_dir = dir.join("tls");
    let (cert_path, key_path) = (tls_dir.join("cert.pem"), tls_dir.join("key.pem"));
    if !cert_path.exists() {
        std::fs::create_dir_all(&tls_dir).map_err(|e| tls_err(dir, e.to_string()))?;
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        sans.extend(names.iter().cloned());
        let ck = rcgen::generate_simple_self_signed(sans)
            .map_err(|e| tls_err(dir, format!("cannot make a certificate: {e}")))?;
        crate::write_private(&key_path, ck.signing_key.serialize_pem().as_bytes())
            .map_err(|e| tls_err(dir, e.to_string()))?;
        crate::write_private(&cert_path, ck.cert.pem().as_bytes())
            .map_err(|e| tls_err(dir, e.to_string()))?;
    }
    load(&cert_path, &key_path)
}

pub fn load(cert: &Path, key: &Path) -> Result<Certificate, ServerError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| ServerError::DataDir {
            path: p.to_path_buf(),
            message: format!("cannot read: {e}"),
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let fingerprint = fingerprint_of_pem(&cert_pem).ok_or_else(|| ServerError::DataDir {
        path: cert.to_path_buf(),
        message: "no PEM certificate in this file".into(),
    })?;
    Ok(Certificate {
        cert_pem,
        key_pem,
        fingerprint,
    })
}

/// SHA-256 of the first certificate's DER, as colon-separated hex.
pub fn fingerprint_of_pem(pem: &[u8]) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .next()?
        .ok()?;
    Some(crypto::cert_fingerprint(&der))
}

/// The public-key pin of the first certificate, as curl's `--pinnedpubkey
/// sha256//PIN` takes it: base64 of the SHA-256 of its SubjectPublicKeyInfo.
/// The download page's command and the installer pin the server's key with
/// it, so the installer, the checksums it carries and the programs it
/// fetches come from this server or not at all, self-signed or not.
pub fn key_pin_of_pem(pem: &[u8]) -> Option<String> {
    use base64::Engine;
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .next()?
        .ok()?;
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    let spki = cert.subject_public_key_info();
    let digest = hex::decode(crypto::sha256_hex(spki.as_ref())).ok()?;
    Some(base64::engine::general_purpose::STANDARD.encode(digest))
}

/// Serves until the process ends. `on_ready` is told the bound address and
/// the certificate (none for plain HTTP) once the socket listens.
pub async fn serve(
    server: Arc<Server>,
    dir: &Path,
    listen: SocketAddr,
    tls: Tls,
    downloads: Option<&Path>,
    on_ready: impl FnOnce(SocketAddr, Option<&Certificate>),
) -> Result<(), ServerError> {
    let server_for_retention = server.clone();
    let io = |e: std::io::Error| tls_err(dir, format!("cannot listen on {listen}: {e}"));
    let listener = std::net::TcpListener::bind(listen).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    let bound = listener.local_addr().map_err(io)?;
    let cert = match tls {
        Tls::InsecureLoopbackHttp => {
            if !bound.ip().is_loopback() {
                return Err(tls_err(
                    dir,
                    format!("plain HTTP is only for tests on a loopback address, not {bound}; drop --insecure-http to use HTTPS"),
                ));
            }
            None
        }
        Tls::SelfSigned => Some(self_signed(dir, &[repository::hostname()])?),
        Tls::Files { cert, key } => Some(load(&cert, &key)?),
    };
    server.publish(crate::Published {
        fingerprint: cert
            .as_ref()
            .map(|c| c.fingerprint.clone())
            .unwrap_or_default(),
        key_pin: cert
            .as_ref()
            .and_then(|c| key_pin_of_pem(&c.cert_pem))
            .unwrap_or_default(),
        scheme: if cert.is_some() { "https" } else { "http" }.into(),
        downloads: downloads.map(Path::to_path_buf),
    });
    let app = crate::app(server, Limits::default());
    on_ready(bound, cert.as_ref());
    spawn_index_flush(server_for_retention.clone());
    spawn_retention(server_for_retention);
    let service = app.into_make_service();
    // Slow or silent clients must not hold sockets the devices need: see
    // `limits::conn` for every deadline and cap.
    let (total, per_source) = crate::limits::conn::budget();
    tracing::info!(
        connections = total,
        per_address = per_source,
        "connection limits"
    );
    let table = crate::limits::conn::Table::new(total, per_source);
    let listener = axum_server::from_tcp(listener).map_err(io)?;
    match cert {
        None => {
            let admit =
                crate::limits::conn::Admit::new(axum_server::accept::DefaultAcceptor, table);
            // HTTP/1 only: hyper's header deadline covers HTTP/1, and its
            // HTTP/2 detection would wait for a preface without one. Every
            // Tidemark client speaks HTTP/1.1.
            let mut server = listener.acceptor(admit).http1_only();
            crate::limits::conn::configure(server.http_builder());
            server.serve(service).await.map_err(io)
        }
        Some(c) => {
            // One process-wide provider; a second install is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem(c.cert_pem, c.key_pem)
                .await
                .map_err(|e| tls_err(dir, format!("unusable certificate or key: {e}")))?;
            // Offer only HTTP/1.1 in ALPN, as the server speaks only that
            // (see above); curl and browsers would otherwise pick h2.
            let mut only_http1 = (*config.get_inner()).clone();
            only_http1.alpn_protocols = vec![b"http/1.1".to_vec()];
            let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(only_http1));
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(config)
                .handshake_timeout(crate::limits::conn::TLS_HANDSHAKE_TIMEOUT);
            let admit = crate::limits::conn::Admit::new(tls, table);
            let mut server = listener.acceptor(admit).http1_only();
            crate::limits::conn::configure(server.http_builder());
            server.serve(service).await.map_err(io)
        }
    }
}

/// Runs blocking `job` on the server every `period`, off the async threads.
fn every(server: Arc<Server>, period: Duration, job: fn(&Server)) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let s = server.clone();
            // A panicking job is reported by tokio and retried next period.
            let _ = tokio::task::spawn_blocking(move || job(&s)).await;
        }
    });
}

/// Applies the retention policy (the organisation's, else the timeline)
/// every hour, and prunes once a day, the first time an hour after start:
/// not at start, when every device reconnects at once.
fn spawn_retention(server: Arc<Server>) {
    every(server.clone(), Duration::from_secs(3600), |s| {
        let policy = crate::retention::policy(s.meta.as_ref());
        match crate::retention::run(s, &policy, false, "server retention") {
            Ok(r) if !r.removed.is_empty() => {
                tracing::info!(removed = r.removed.len(), kept = r.kept, "retention ran")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention failed; will retry in an hour"),
        }
    });
    tokio::spawn(async move {
        let day = Duration::from_secs(86_400);
        let start = tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut tick = tokio::time::interval_at(start, day);
        loop {
            tick.tick().await;
            let s = server.clone();
            let _ = tokio::task::spawn_blocking(move || {
                match crate::prune::run(&s, crate::prune::GRACE_HOURS, false, "server prune") {
                    Ok(r) => tracing::info!(
                        packs_deleted = r.repository.packs_deleted,
                        packs_rewritten = r.repository.packs_rewritten,
                        bytes_before = r.repository.bytes_before,
                        bytes_after = r.repository.bytes_after,
                        "prune ran"
                    ),
                    Err(e) => tracing::warn!(error = %e, "prune failed; will retry tomorrow"),
                }
            })
            .await;
        }
    });
}

/// Lists received packs in an index file within two seconds, so a restart
/// rarely has to recover packs from their trailers (it would lose nothing).
fn spawn_index_flush(server: Arc<Server>) {
    every(server, Duration::from_secs(2), |s| {
        let _gate = s.no_prune();
        if let Err(e) = s.repo.flush_ingested() {
            tracing::warn!(error = %e, "could not write an index file; retrying");
        }
    });
}
