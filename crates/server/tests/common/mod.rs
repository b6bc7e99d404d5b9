//! The in-process harness the server's API tests share: a server on a temp
//! data folder, requests through `tower::ServiceExt::oneshot`, and devices
//! that build packs and seal snapshots the way a client does (with the
//! organisation's keys, as a stolen device would).

// Helpers panic on purpose: in a test a panic is the failure report.
#![allow(clippy::unwrap_used, dead_code)]

pub use axum::body::Body;
pub use axum::http::{Method, Request, StatusCode};
pub use crypto::{Id, KdfParams, MasterKeys};
pub use format::{layout, BlobKind, RepoConfig, Snapshot, Tree};
pub use http_body_util::BodyExt;
pub use repository::{OpenOptions, Repository, UploadOptions};
pub use serde_json::{json, Value};
pub use server::{Limits, Server};
pub use std::sync::Arc;
pub use storage::{DynStorage, MemoryStorage};
pub use tower::ServiceExt;

pub fn fast_kdf() -> Option<KdfParams> {
    Some(KdfParams {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    })
}

pub struct Harness {
    pub app: axum::Router,
    pub server: Arc<Server>,
    pub admin_code: Option<String>,
    pub _dir: tempfile::TempDir,
}

pub fn start() -> Harness {
    start_with(Limits::default())
}

pub fn start_with(limits: Limits) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let opened = Server::open(dir.path(), fast_kdf()).expect("server open");
    Harness {
        server: opened.server.clone(),
        app: server::app(opened.server, limits),
        admin_code: opened.first_admin_code,
        _dir: dir,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

pub async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply { status, body }
}

pub async fn get(app: &axum::Router, path: &str, token: &str) -> Reply {
    call(app, Method::GET, path, Some(token), vec![]).await
}

pub async fn delete(app: &axum::Router, path: &str, token: &str) -> Reply {
    call(app, Method::DELETE, path, Some(token), vec![]).await
}

pub async fn put_pack(
    app: &axum::Router,
    token: &str,
    id: impl std::fmt::Display,
    bytes: Vec<u8>,
) -> Reply {
    call(
        app,
        Method::PUT,
        &format!("/v1/packs/{id}"),
        Some(token),
        bytes,
    )
    .await
}

pub async fn post_json(app: &axum::Router, path: &str, token: Option<&str>, v: Value) -> Reply {
    call(
        app,
        Method::POST,
        path,
        token,
        serde_json::to_vec(&v).unwrap(),
    )
    .await
}

/// A device as the tests drive it: its token and a local staging repository
/// with the organisation's keys that builds packs the way a client does.
pub struct Client {
    pub token: String,
    pub keys: MasterKeys,
    pub config: RepoConfig,
}

pub async fn enroll(app: &axum::Router, code: &str, name: &str) -> Client {
    let r = post_json(
        app,
        "/v1/enroll",
        None,
        json!({"code": code, "device_name": name}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    Client {
        token: v["token"].as_str().unwrap().to_string(),
        keys: MasterKeys::from_hex(v["keys"].as_str().unwrap()).expect("keys"),
        config: serde_json::from_value(v["repository"].clone()).unwrap(),
    }
}

impl Client {
    pub fn staging(&self) -> Arc<Repository> {
        let s: DynStorage = Arc::new(MemoryStorage::new());
        Arc::new(Repository::with_keys(
            s,
            self.keys.clone(),
            self.config.clone(),
            &OpenOptions::default(),
        ))
    }

    /// Packs `blobs` locally and returns (pack id, bytes) for each pack.
    pub fn build_packs(&self, blobs: &[(BlobKind, Vec<u8>)]) -> Vec<(Id, Vec<u8>)> {
        let repo = self.staging();
        let up = repo.start_upload(UploadOptions::default()).unwrap();
        for (kind, data) in blobs {
            up.add(*kind, repo.content_id(data), data).unwrap();
        }
        up.finish().unwrap();
        repo.storage()
            .list(layout::PACKS)
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    layout::id_of(&e.key).unwrap(),
                    repo.storage().get(&e.key).unwrap(),
                )
            })
            .collect()
    }

    pub fn id(&self, data: &[u8]) -> Id {
        self.keys.content_id(data)
    }

    /// A snapshot of `tree` taken now, by the system clock.
    pub fn seal_snapshot(&self, tree: Id) -> Vec<u8> {
        self.seal_snapshot_at(tree, &chrono::Utc::now().to_rfc3339())
    }

    pub fn seal_snapshot_at(&self, tree: Id, time: &str) -> Vec<u8> {
        let snap: Snapshot = serde_json::from_value(json!({
            "version": 1, "time": time, "hostname": "laptop",
            "username": "u", "paths": ["/home/u"], "tree": tree, "parent": null,
            "tags": [], "summary": serde_json::to_value(format::SnapshotSummary::default()).unwrap()
        }))
        .unwrap();
        self.staging().seal_snapshot(&snap)
    }
}

/// A snapshot time (RFC 3339) for seconds since the epoch.
pub fn at(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .unwrap()
        .to_rfc3339()
}

pub fn tree_with_file(name: &str, content: &[Id]) -> Vec<u8> {
    let tree: Tree = serde_json::from_value(json!({"nodes": [{
        "name": name, "kind": "file", "size": 1, "mode": 420, "mtime_ns": 0,
        "content": content
    }]}))
    .unwrap();
    format::to_json(&tree)
}

pub fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

pub async fn admin(app: &axum::Router, code: &str) -> Client {
    enroll(app, code, "admin-laptop").await
}

pub async fn user(app: &axum::Router, admin: &Client, name: &str) -> Client {
    let r = post_json(
        app,
        "/v1/admin/users",
        Some(&admin.token),
        json!({"name": name}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    device(app, admin, name, &format!("{name}-laptop")).await
}

/// Enrols a device called `device_name` for the existing `user`.
pub async fn device(app: &axum::Router, admin: &Client, user: &str, device_name: &str) -> Client {
    let r = post_json(
        app,
        "/v1/admin/codes",
        Some(&admin.token),
        json!({"user": user, "uses": 1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    enroll(app, r.json()["code"].as_str().unwrap(), device_name).await
}

/// Sets the organisation's policy.
pub async fn set_policy(app: &axum::Router, admin: &Client, policy: Value) {
    let r = call(
        app,
        Method::PUT,
        "/v1/admin/policy",
        Some(&admin.token),
        serde_json::to_vec(&policy).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// Posts `v` and insists on `status`; returns the JSON answer.
pub async fn post_expecting(
    app: &axum::Router,
    path: &str,
    token: &str,
    v: Value,
    status: StatusCode,
) -> Value {
    let r = post_json(app, path, Some(token), v).await;
    assert_eq!(
        r.status,
        status,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// Runs the server's retention with the organisation's policy.
pub async fn retention(app: &axum::Router, admin: &Client, dry_run: bool) -> Value {
    post_expecting(
        app,
        "/v1/admin/retention",
        &admin.token,
        json!({ "dry_run": dry_run }),
        StatusCode::OK,
    )
    .await
}

/// Backs up one file: query, prove, upload what is missing, commit.
/// Returns (snapshot id, chunk ids, pack bytes sent).
pub async fn backup(app: &axum::Router, c: &Client, file: &[u8]) -> (Id, Vec<Id>, usize) {
    let (ids, sent) = upload(app, c, file).await;
    let r = commit(app, c, ids[1]).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let id = Id::from_hex(r.json()["id"].as_str().unwrap()).unwrap();
    (id, ids, sent)
}

pub async fn commit(app: &axum::Router, c: &Client, tree: Id) -> Reply {
    call(
        app,
        Method::POST,
        "/v1/snapshots",
        Some(&c.token),
        c.seal_snapshot(tree),
    )
    .await
}

/// The first half of [`backup`]: everything but the commit. Returns
/// ([chunk, tree], pack bytes sent).
pub async fn upload(app: &axum::Router, c: &Client, file: &[u8]) -> (Vec<Id>, usize) {
    let chunk = c.id(file);
    let tree = tree_with_file("f", &[chunk]);
    let tree_id = c.id(&tree);
    let ids = vec![chunk, tree_id];
    let q = post_json(app, "/v1/chunks/query", Some(&c.token), json!({"ids": ids})).await;
    assert_eq!(q.status, StatusCode::OK);
    let q = q.json();
    let mut proofs = Vec::new();
    for ch in q["challenges"].as_array().unwrap() {
        let id = Id::from_hex(ch["id"].as_str().unwrap()).unwrap();
        let nonce: [u8; 32] = hex::decode(ch["nonce"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let plain = if id == chunk {
            file.to_vec()
        } else {
            tree.clone()
        };
        proofs.push(json!({"id": id, "expires": ch["expires"],
            "proof": hex::encode(crypto::ownership_proof(&nonce, &plain))}));
    }
    let p = post_json(
        app,
        "/v1/chunks/prove",
        Some(&c.token),
        json!({"proofs": proofs}),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK);
    let upload: Vec<Id> = serde_json::from_value(p.json()["upload"].clone()).unwrap();
    let mut sent = 0;
    if !upload.is_empty() {
        let blobs: Vec<(BlobKind, Vec<u8>)> = upload
            .iter()
            .map(|id| {
                if *id == chunk {
                    (BlobKind::Data, file.to_vec())
                } else {
                    (BlobKind::Tree, tree.clone())
                }
            })
            .collect();
        sent = send(app, c, &blobs).await;
    }
    (ids, sent)
}

/// Uploads `blobs` (kind, bytes) in packs, as a client does after
/// "upload"; returns the pack bytes sent.
pub async fn send(app: &axum::Router, c: &Client, blobs: &[(BlobKind, Vec<u8>)]) -> usize {
    let mut sent = 0;
    for (pid, bytes) in c.build_packs(blobs) {
        sent += bytes.len();
        let r = put_pack(app, &c.token, pid, bytes).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }
    sent
}
