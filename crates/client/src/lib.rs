//! The company-server client: talks HTTPS to a Tidemark server whose
//! certificate fingerprint was pinned at enrolment, enrols devices, makes
//! admin calls, and implements [`repository::Remote`] so the backup engine
//! works against the server exactly as against own storage.
//!
//! It owns the wire protocol's client half; it must not know about files,
//! the terminal or where secrets are kept (the caller passes the token).

mod pin;

use crypto::Id;
use format::{BlobKind, RepoConfig, Snapshot};
use repository::{Remote, RemoteBlob, RemoteError};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the server at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("the server's certificate is not the one pinned at enrolment (expected {expected}, got {got}); if the administrator replaced it, enrol again")]
    FingerprintMismatch { expected: String, got: String },
    #[error("the server answered {status}: {message}")]
    Server { status: u16, message: String },
    #[error("the server's answer makes no sense: {0}")]
    Protocol(String),
}

impl From<ClientError> for RemoteError {
    fn from(e: ClientError) -> Self {
        RemoteError::Failed(e.to_string())
    }
}

/// How the server's certificate is checked.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Only a certificate with this SHA-256 fingerprint is accepted.
    Pinned(String),
    /// Trust on first use: accept any certificate and report its fingerprint
    /// (enrolment shows it for the user to compare, then pins it).
    FirstUse,
}

/// What enrolment returns. `token` and `keys` are secrets for the keyring.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    pub token: String,
    pub device_id: i64,
    pub user: String,
    pub admin: bool,
    pub keys: String,
    pub repository: RepoConfig,
}

pub struct ServerClient {
    base: String,
    http: reqwest::blocking::Client,
    token: Option<String>,
    seen: pin::Seen,
    /// An administrator reading another user's backups (audited by the server).
    as_user: Option<String>,
    /// Paces pack uploads; unlimited unless [`ServerClient::throttled`].
    throttle: throttle::Throttle,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient")
            .field("base", &self.base)
            .finish()
    }
}

/// Ids per request; the server accepts up to 10,000.
const IDS_PER_REQUEST: usize = 5000;
/// What sealing adds to a blob: the nonce and tag, and the compression flag.
const SEAL_OVERHEAD: usize = crypto::SEAL_OVERHEAD + 1;
/// Tries for one request that failed on the way (not with an answer).
const ATTEMPTS: u32 = 5;

#[derive(Deserialize)]
struct Challenge {
    id: Id,
    expires: i64,
    nonce: String,
}

#[derive(Deserialize)]
struct QueryAnswer {
    owned: Vec<Id>,
    challenges: Vec<Challenge>,
}

#[derive(Deserialize)]
struct ProveAnswer {
    granted: Vec<Id>,
    upload: Vec<Id>,
}

#[derive(Deserialize)]
struct SnapshotItem {
    id: Id,
    snapshot: Snapshot,
    /// When the server received the snapshot. "Latest" goes by this: the
    /// time inside a snapshot is whatever the device that sealed it said.
    #[serde(default)]
    received_ms: i64,
}

/// Makes ring the process's rustls provider (a no-op when one is set):
/// reqwest is built without a provider of its own, so one must exist before
/// any HTTP client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ServerClient {
    /// A client for `url` (`https://host:port`; `http://` only for loopback tests).
    pub fn new(url: &str, trust: Trust, token: Option<String>) -> Result<Self, ClientError> {
        let base = url.trim_end_matches('/').to_string();
        let seen = pin::Seen::default();
        install_crypto_provider();
        let mut b = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(300))
            .connect_timeout(Duration::from_secs(15));
        if base.starts_with("https://") {
            b = b.tls_backend_preconfigured(pin::client_config(trust, seen.clone()));
        }
        let http = b.build().map_err(|e| ClientError::Connect {
            url: base.clone(),
            message: e.to_string(),
        })?;
        Ok(ServerClient {
            base,
            http,
            token,
            seen,
            as_user: None,
            throttle: throttle::Throttle::unlimited(),
        })
    }

    /// Sends packs through `t`: its gate, and kernel pacing of the sockets
    /// to this server.
    pub fn throttled(mut self, t: throttle::Throttle) -> Self {
        if let Some(hp) = host_port(&self.base) {
            t.watch(hp.as_str());
        }
        self.throttle = t;
        self
    }

    /// Reads (never writes) the backups of `user` instead of one's own; needs
    /// an administrator's token, and the server records it in the audit log.
    pub fn on_behalf_of(mut self, user: String) -> Self {
        self.as_user = Some(user);
        self
    }

    fn read_only(&self) -> Result<(), RemoteError> {
        match &self.as_user {
            Some(u) => Err(RemoteError::Failed(format!(
                "reading {u}'s backups on their behalf is read-only: nothing can be backed up or changed in this mode"
            ))),
            None => Ok(()),
        }
    }

    /// The fingerprint of the certificate the server presented last.
    pub fn seen_fingerprint(&self) -> Option<String> {
        self.seen.get()
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn send(
        &self,
        make: impl Fn() -> reqwest::blocking::RequestBuilder,
    ) -> Result<reqwest::blocking::Response, ClientError> {
        let mut delay = Duration::from_millis(300);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            // Every request waits while uploads are paused (metered, a
            // rule): dedup queries and commits are uploads too.
            self.throttle.admit(0);
            let mut req = make();
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            match req.send() {
                Ok(resp)
                    if (resp.status().is_server_error() || resp.status().as_u16() == 429)
                        && attempt < ATTEMPTS =>
                {
                    last = format!("{}", resp.status());
                }
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().unwrap_or_default();
                    let message = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(String::from))
                        .unwrap_or(text);
                    return Err(ClientError::Server { status, message });
                }
                Err(e) => {
                    if let Some(m) = self.seen.mismatch() {
                        return Err(m);
                    }
                    last = format!("{e}");
                    if e.is_builder() {
                        break;
                    }
                }
            }
            tracing::debug!(attempt, error = %last, "retrying a server request");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        Err(ClientError::Connect {
            url: self.base.clone(),
            message: last,
        })
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::blocking::Response,
    ) -> Result<T, ClientError> {
        resp.json()
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// A request body handed to the HTTP stack through the throttle.
    fn paced(&self, bytes: storage::Bytes) -> reqwest::blocking::Body {
        if self.throttle.unpaced_to_this_machine() {
            return reqwest::blocking::Body::from(bytes);
        }
        let len = bytes.len() as u64;
        let body = Paced {
            bytes,
            at: 0,
            throttle: self.throttle.clone(),
        };
        reqwest::blocking::Body::sized(body, len)
    }

    /// A JSON body sent through the throttle like a pack: a chunk query
    /// carries a few hundred kilobytes of ids, which a pause must hold back
    /// too, not only the packs.
    fn paced_json(
        &self,
        req: reqwest::blocking::RequestBuilder,
        body: &serde_json::Value,
    ) -> reqwest::blocking::RequestBuilder {
        let bytes = storage::Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        req.header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.paced(bytes))
    }

    pub fn get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.send(|| self.http.get(&url))?;
        self.json(r)
    }

    /// The raw bytes of a GET, at most `limit` of them (a download).
    pub fn get_bytes(&self, path: &str, limit: u64) -> Result<Vec<u8>, ClientError> {
        use std::io::Read;
        let url = format!("{}{path}", self.base);
        let r = self.send(|| self.http.get(&url))?;
        let mut out = Vec::new();
        r.take(limit.saturating_add(1))
            .read_to_end(&mut out)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if out.len() as u64 > limit {
            return Err(ClientError::Protocol(format!(
                "{path} is larger than {limit} bytes"
            )));
        }
        Ok(out)
    }

    pub fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.send(|| self.http.post(&url).json(body))?;
        self.json(r)
    }

    pub fn put(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.send(|| self.http.put(&url).json(body))?;
        self.json(r)
    }

    pub fn delete(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let r = self.send(|| self.http.delete(&url))?;
        self.json(r)
    }

    /// Trades an enrolment code for a device token and the organisation keys.
    pub fn enroll(&self, code: &str, device_name: &str) -> Result<Enrollment, ClientError> {
        let v = self.post(
            "/v1/enroll",
            &serde_json::json!({ "code": code, "device_name": device_name }),
        )?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn dedup_batch(&self, blobs: &[(Id, &[u8])]) -> Result<Vec<bool>, ClientError> {
        let ids: Vec<Id> = blobs.iter().map(|(i, _)| *i).collect();
        let q: QueryAnswer = {
            let url = format!("{}/v1/chunks/query", self.base);
            let body = serde_json::json!({ "ids": ids });
            let r = self.send(|| self.paced_json(self.http.post(&url), &body))?;
            self.json(r)?
        };
        let data: HashMap<Id, &[u8]> = blobs.iter().map(|(i, d)| (*i, *d)).collect();
        let mut proofs = Vec::with_capacity(q.challenges.len());
        for c in &q.challenges {
            let nonce: [u8; 32] = hex::decode(&c.nonce)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| ClientError::Protocol("a challenge nonce is not 32 bytes".into()))?;
            let plain = data
                .get(&c.id)
                .ok_or_else(|| ClientError::Protocol("a challenge for an id not asked".into()))?;
            proofs.push(serde_json::json!({
                "id": c.id, "expires": c.expires,
                "proof": hex::encode(crypto::ownership_proof(&nonce, plain)),
            }));
        }
        let upload: HashSet<Id> = if proofs.is_empty() {
            HashSet::new()
        } else {
            let url = format!("{}/v1/chunks/prove", self.base);
            let body = serde_json::json!({ "proofs": proofs });
            let r = self.send(|| self.paced_json(self.http.post(&url), &body))?;
            let p: ProveAnswer = self.json(r)?;
            if p.granted.len() + p.upload.len() != proofs.len() {
                return Err(ClientError::Protocol(
                    "the proof answer does not cover every chunk".into(),
                ));
            }
            p.upload.into_iter().collect()
        };
        let owned: HashSet<Id> = q.owned.into_iter().collect();
        Ok(ids
            .iter()
            .map(|i| !owned.contains(i) && upload.contains(i))
            .collect())
    }
}

/// `host:port` of an `http(s)://host[:port]/…` URL.
fn host_port(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
}

/// A pack body handed to the HTTP stack in small quanta, each admitted by
/// the throttle: a pause stops the upload within one quantum, and where the
/// kernel cannot pace the socket the quanta leave evenly spaced.
struct Paced {
    bytes: storage::Bytes,
    at: usize,
    throttle: throttle::Throttle,
}

/// Small enough that a quantum is a few packets (4 KiB is 3 full-size
/// segments), large enough that the per-quantum overhead is nil.
const QUANTUM: usize = 4096;

impl std::io::Read for Paced {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(QUANTUM).min(self.bytes.len() - self.at);
        if n == 0 {
            return Ok(0);
        }
        self.throttle.admit(n);
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Remote for ServerClient {
    fn dedup(&self, blobs: &[(Id, &[u8])]) -> Result<Vec<bool>, RemoteError> {
        self.read_only()?;
        let mut out = Vec::with_capacity(blobs.len());
        for part in blobs.chunks(IDS_PER_REQUEST) {
            out.extend(self.dedup_batch(part)?);
        }
        Ok(out)
    }

    /// The server checks every blob of a pack before it answers. Where
    /// nothing paces uploads and the server is this machine, the link is
    /// never the limit: a third pack in flight keeps the client working
    /// while the server checks. A first backup of the bench set on loopback
    /// (3 runs each) took 5.19-5.73 s with 2, 4.95-5.54 s with 3 and
    /// 4.91-5.78 s with 4. On a paced link a stream more adds no rate, and
    /// its unsent bytes are more that must drain after a pause: the network
    /// test bed's "metered: stops within 2 s" took 2.2 s with 3.
    fn packs_in_flight(&self) -> usize {
        if self.throttle.unpaced_to_this_machine() {
            3
        } else {
            2
        }
    }

    fn put_pack(&self, id: &Id, bytes: storage::Bytes) -> Result<(), RemoteError> {
        self.read_only()?;
        let url = format!("{}/v1/packs/{id}", self.base);
        self.send(|| self.http.put(&url).body(self.paced(bytes.clone())))?;
        Ok(())
    }

    fn get_blob(&self, id: &Id) -> Result<Option<RemoteBlob>, RemoteError> {
        let url = match &self.as_user {
            Some(u) => format!("{}/v1/admin/users/{u}/blobs/{id}", self.base),
            None => format!("{}/v1/blobs/{id}", self.base),
        };
        let resp = match self.send(|| self.http.get(&url)) {
            Ok(r) => r,
            Err(ClientError::Server { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| ClientError::Protocol(format!("a blob without {name}")))
        };
        let raw_length: u32 = header("x-raw-length")?
            .parse()
            .map_err(|_| ClientError::Protocol("x-raw-length is not a number".into()))?;
        let kind = match header("x-blob-kind")?.as_str() {
            "tree" => BlobKind::Tree,
            "data" => BlobKind::Data,
            other => return Err(ClientError::Protocol(format!("unknown blob kind {other}")).into()),
        };
        // Held to the kind's cap before anything is read or reserved: the
        // raw length sizes the decompression, and a sealed blob is never
        // longer than its chunk plus the nonce, flag and tag.
        let cap = format::limits::max_blob(kind);
        if raw_length as usize > cap {
            return Err(ClientError::Protocol(format!(
                "blob {id} states {raw_length} bytes, past the {} limit of its kind",
                format::limits::human(cap)
            ))
            .into());
        }
        let most = (cap + SEAL_OVERHEAD) as u64;
        let mut sealed = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(resp, most + 1), &mut sealed)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if sealed.len() as u64 > most {
            return Err(ClientError::Protocol(format!(
                "blob {id} is longer than any sealed blob of its kind"
            ))
            .into());
        }
        Ok(Some(RemoteBlob {
            sealed,
            raw_length,
            kind,
        }))
    }

    fn commit_snapshot(&self, sealed: &[u8]) -> Result<Id, RemoteError> {
        self.read_only()?;
        let url = format!("{}/v1/snapshots", self.base);
        let body = sealed.to_vec();
        let r = match self.send(|| self.http.post(&url).body(body.clone())) {
            Ok(r) => r,
            Err(ClientError::Server {
                status: 409,
                message,
            }) => return Err(RemoteError::MissingChunks(message)),
            Err(e) => return Err(e.into()),
        };
        let v: serde_json::Value = self.json(r)?;
        serde_json::from_value(v["id"].clone())
            .map_err(|e| RemoteError::Failed(format!("the server's commit answer has no id: {e}")))
    }

    fn load_snapshot(&self, id: &Id) -> Result<Option<Snapshot>, RemoteError> {
        if self.as_user.is_some() {
            // The admin API lists a user's snapshots (and audits that); it
            // has no single-snapshot read.
            return Ok(self
                .list_snapshots()?
                .into_iter()
                .find(|(i, _)| i == id)
                .map(|(_, s)| s));
        }
        let url = format!("{}/v1/snapshots/{id}", self.base);
        match self.send(|| self.http.get(&url)) {
            Ok(r) => Ok(Some(self.json::<SnapshotItem>(r)?.snapshot)),
            Err(ClientError::Server { status: 404, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn list_snapshots(&self) -> Result<Vec<(Id, Snapshot)>, RemoteError> {
        let url = match &self.as_user {
            Some(u) => format!("{}/v1/admin/users/{u}/snapshots", self.base),
            None => format!("{}/v1/snapshots", self.base),
        };
        let r = self.send(|| self.http.get(&url))?;
        let mut items: Vec<SnapshotItem> = self.json(r)?;
        items.sort_by_key(|i| i.received_ms);
        Ok(items.into_iter().map(|i| (i.id, i.snapshot)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_port_of_urls() {
        assert_eq!(
            host_port("https://backup.example.com").as_deref(),
            Some("backup.example.com:443")
        );
        assert_eq!(
            host_port("http://127.0.0.1:8080/x").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(
            host_port("https://[::1]:9443").as_deref(),
            Some("[::1]:9443")
        );
        assert_eq!(host_port("https://[::1]").as_deref(), Some("[::1]:443"));
        assert_eq!(host_port("nonsense"), None);
    }
}
