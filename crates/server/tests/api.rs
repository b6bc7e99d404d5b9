//! The server's HTTP API, in process: enrolment, global dedup with proofs of
//! ownership, isolation between users, ransomware safety, bad input.

// Helpers panic on purpose: in a test a panic is the failure report.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use crypto::{Id, KdfParams, MasterKeys};
use format::{layout, BlobKind, RepoConfig, Snapshot, Tree};
use http_body_util::BodyExt;
use repository::{OpenOptions, Repository, UploadOptions};
use serde_json::{json, Value};
use server::{Limits, Server};
use std::sync::Arc;
use storage::{DynStorage, MemoryStorage};
use tower::ServiceExt;

fn fast_kdf() -> Option<KdfParams> {
    Some(KdfParams {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    })
}

struct Harness {
    app: axum::Router,
    server: Arc<Server>,
    admin_code: Option<String>,
    _dir: tempfile::TempDir,
}

fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let opened = Server::open(dir.path(), fast_kdf()).expect("server open");
    Harness {
        server: opened.server.clone(),
        app: server::app(opened.server, Limits::default()),
        admin_code: opened.first_admin_code,
        _dir: dir,
    }
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

async fn call(
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

async fn get(app: &axum::Router, path: &str, token: &str) -> Reply {
    call(app, Method::GET, path, Some(token), vec![]).await
}

async fn delete(app: &axum::Router, path: &str, token: &str) -> Reply {
    call(app, Method::DELETE, path, Some(token), vec![]).await
}

async fn put_pack(
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

async fn post_json(app: &axum::Router, path: &str, token: Option<&str>, v: Value) -> Reply {
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
struct Client {
    token: String,
    keys: MasterKeys,
    config: RepoConfig,
}

async fn enroll(app: &axum::Router, code: &str, name: &str) -> Client {
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
    fn staging(&self) -> Arc<Repository> {
        let s: DynStorage = Arc::new(MemoryStorage::new());
        Arc::new(Repository::with_keys(
            s,
            self.keys.clone(),
            self.config.clone(),
            &OpenOptions::default(),
        ))
    }

    /// Packs `blobs` locally and returns (pack id, bytes) for each pack.
    fn build_packs(&self, blobs: &[(BlobKind, Vec<u8>)]) -> Vec<(Id, Vec<u8>)> {
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

    fn id(&self, data: &[u8]) -> Id {
        self.keys.content_id(data)
    }

    fn seal_snapshot(&self, tree: Id) -> Vec<u8> {
        self.seal_snapshot_at(tree, "2026-11-25T10:00:00Z")
    }

    fn seal_snapshot_at(&self, tree: Id, time: &str) -> Vec<u8> {
        let snap: Snapshot = serde_json::from_value(json!({
            "version": 1, "time": time, "hostname": "laptop",
            "username": "u", "paths": ["/home/u"], "tree": tree, "parent": null,
            "tags": [], "summary": serde_json::to_value(format::SnapshotSummary::default()).unwrap()
        }))
        .unwrap();
        self.staging().seal_snapshot(&snap)
    }
}

fn tree_with_file(name: &str, content: &[Id]) -> Vec<u8> {
    let tree: Tree = serde_json::from_value(json!({"nodes": [{
        "name": name, "kind": "file", "size": 1, "mode": 420, "mtime_ns": 0,
        "content": content
    }]}))
    .unwrap();
    format::to_json(&tree)
}

fn data(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

async fn admin(app: &axum::Router, code: &str) -> Client {
    enroll(app, code, "admin-laptop").await
}

async fn user(app: &axum::Router, admin: &Client, name: &str) -> Client {
    let r = post_json(
        app,
        "/v1/admin/users",
        Some(&admin.token),
        json!({"name": name}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = post_json(
        app,
        "/v1/admin/codes",
        Some(&admin.token),
        json!({"user": name, "uses": 1}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let code = r.json()["code"].as_str().unwrap().to_string();
    enroll(app, &code, &format!("{name}-laptop")).await
}

/// Backs up one file: query, prove, upload what is missing, commit.
/// Returns (snapshot id, chunk ids, pack bytes sent).
async fn backup(app: &axum::Router, c: &Client, file: &[u8]) -> (Id, Vec<Id>, usize) {
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

async fn commit(app: &axum::Router, c: &Client, tree: Id) -> Reply {
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
async fn upload(app: &axum::Router, c: &Client, file: &[u8]) -> (Vec<Id>, usize) {
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
        for (pid, bytes) in c.build_packs(&blobs) {
            sent += bytes.len();
            let r = put_pack(app, &c.token, pid, bytes).await;
            assert_eq!(
                r.status,
                StatusCode::CREATED,
                "{}",
                String::from_utf8_lossy(&r.body)
            );
        }
    }
    (ids, sent)
}

#[tokio::test]
async fn first_admin_code_is_single_use_and_bad_codes_are_refused() {
    let h = start();
    let code = h
        .admin_code
        .clone()
        .expect("first start prints an admin code");
    let a = admin(&h.app, &code).await;
    let me = get(&h.app, "/v1/whoami", &a.token).await;
    assert_eq!(me.json()["admin"], json!(true));
    let again = post_json(
        &h.app,
        "/v1/enroll",
        None,
        json!({"code": code, "device_name": "x"}),
    )
    .await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    assert!(again.json()["error"].as_str().unwrap().contains("used up"));
    let junk = post_json(
        &h.app,
        "/v1/enroll",
        None,
        json!({"code": "AAAAA-BBBBB", "device_name": "x"}),
    )
    .await;
    assert_eq!(junk.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn second_user_dedups_by_proof_and_never_by_hash_alone() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let alice = user(&h.app, &a, "alice").await;
    let bob = user(&h.app, &a, "bob").await;
    let shared = data(7, 200_000);

    let (alice_snap, ids, sent_alice) = backup(&h.app, &alice, &shared).await;
    assert!(sent_alice > 0);

    // Bob knows only the ids: no chunk, no snapshot, identical 404s.
    let theirs = get(&h.app, &format!("/v1/blobs/{}", ids[0]), &bob.token).await;
    let random = get(&h.app, &format!("/v1/blobs/{}", Id([9; 32])), &bob.token).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (theirs.status, theirs.body.clone()),
        (random.status, random.body)
    );
    let snap = get(&h.app, &format!("/v1/snapshots/{alice_snap}"), &bob.token).await;
    let none = get(
        &h.app,
        &format!("/v1/snapshots/{}", Id([8; 32])),
        &bob.token,
    )
    .await;
    assert_eq!(snap.status, StatusCode::NOT_FOUND);
    assert_eq!(snap.body, none.body);

    // Committing a snapshot over Alice's tree without owning it is refused.
    let forged = call(
        &h.app,
        Method::POST,
        "/v1/snapshots",
        Some(&bob.token),
        bob.seal_snapshot(ids[1]),
    )
    .await;
    assert_eq!(forged.status, StatusCode::CONFLICT);

    // A wrong proof is told "upload", exactly like an unknown chunk.
    let q = post_json(
        &h.app,
        "/v1/chunks/query",
        Some(&bob.token),
        json!({"ids": [ids[0], Id([5; 32])]}),
    )
    .await
    .json();
    let chs = q["challenges"].as_array().unwrap();
    assert_eq!(chs.len(), 2, "both known and unknown ids get a challenge");
    let wrong = post_json(
        &h.app,
        "/v1/chunks/prove",
        Some(&bob.token),
        json!({"proofs": [
            {"id": chs[0]["id"], "expires": chs[0]["expires"], "proof": hex::encode([0u8; 32])},
            {"id": chs[1]["id"], "expires": chs[1]["expires"], "proof": hex::encode([0u8; 32])}
        ]}),
    )
    .await
    .json();
    assert_eq!(wrong["granted"], json!([]));
    assert_eq!(wrong["upload"].as_array().unwrap().len(), 2);
    // A proof computed for Alice's challenge does not work for Bob.
    let qa = post_json(
        &h.app,
        "/v1/chunks/query",
        Some(&alice.token),
        json!({"ids": [Id([6; 32])]}),
    )
    .await
    .json();
    assert_eq!(qa["challenges"].as_array().unwrap().len(), 1);

    // With the data, Bob sends nothing but proofs.
    let (bob_snap, _, sent_bob) = backup(&h.app, &bob, &shared).await;
    assert_eq!(
        sent_bob, 0,
        "a chunk the organisation has never crosses the network again"
    );
    let mine = get(&h.app, &format!("/v1/blobs/{}", ids[0]), &bob.token).await;
    assert_eq!(mine.status, StatusCode::OK);
    let raw_len: u32 = 200_000;
    let plain = bob
        .staging()
        .decode_blob(&ids[0], &mine.body, raw_len)
        .unwrap();
    assert_eq!(plain, shared);

    // Each sees only their own snapshots.
    let list = get(&h.app, "/v1/snapshots", &bob.token).await.json();
    let listed: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, vec![bob_snap.to_hex()]);
}

#[tokio::test]
async fn devices_cannot_delete_and_revoked_tokens_stop_at_once() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let carol = user(&h.app, &a, "carol").await;
    let (snap, _, _) = backup(&h.app, &carol, &data(1, 5000)).await;
    let del = delete(&h.app, &format!("/v1/snapshots/{snap}"), &carol.token).await;
    assert_eq!(del.status, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&h.app, "/v1/snapshots", &carol.token)
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Admin endpoints are not for ordinary devices.
    let r = get(&h.app, "/v1/admin/devices", &carol.token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let devices = get(&h.app, "/v1/admin/devices", &a.token).await.json();
    let carol_dev = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["user"] == "carol")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = call(
        &h.app,
        Method::POST,
        &format!("/v1/admin/devices/{carol_dev}/revoke"),
        Some(&a.token),
        vec![],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = get(&h.app, "/v1/snapshots", &carol.token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // The admin can delete, and it is audited.
    let r = delete(&h.app, &format!("/v1/admin/snapshots/{snap}"), &a.token).await;
    assert_eq!(r.status, StatusCode::OK);
    let audit = get(&h.app, "/v1/admin/audit", &a.token).await.json();
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "delete snapshot"));
}

#[tokio::test]
async fn tampered_and_forged_packs_are_rejected_and_nothing_is_indexed() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let d = user(&h.app, &a, "dave").await;
    let file = data(3, 50_000);
    let (pid, bytes) = d.build_packs(&[(BlobKind::Data, file.clone())]).remove(0);

    // A flipped byte in the blob: the name (the hash of the trailer and
    // tail) still matches, the blob no longer decrypts.
    let mut bad = bytes.clone();
    bad[10] ^= 1;
    let r = put_pack(&h.app, &d.token, pid, bad.clone()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // A flipped byte in the trailer: the name no longer matches.
    let n = bytes.len();
    let mut bad = bytes.clone();
    bad[n - 20] ^= 1;
    let r = put_pack(&h.app, &d.token, pid, bad).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Bytes slipped in after the blob with the trailer untouched: the name
    // still matches, but no blob would cover them, so nothing would check them.
    let trailer_len = u32::from_le_bytes([bytes[n - 9], bytes[n - 8], bytes[n - 7], bytes[n - 6]]);
    let blobs_end = n - 9 - trailer_len as usize;
    let mut slipped = bytes[..blobs_end].to_vec();
    slipped.extend_from_slice(b"unchecked bytes");
    slipped.extend_from_slice(&bytes[blobs_end..]);
    let r = put_pack(&h.app, &d.token, pid, slipped).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("belong to no blob"),
        "{:?}",
        r.json()
    );
    // A pack sealed with other keys (another organisation) is refused too.
    let stranger = Client {
        token: d.token.clone(),
        keys: MasterKeys::random(),
        config: d.config.clone(),
    };
    let (spid, sbytes) = stranger
        .build_packs(&[(BlobKind::Data, file.clone())])
        .remove(0);
    let r = put_pack(&h.app, &d.token, spid, sbytes).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("nothing of it was stored"));
    // Truncated.
    let r = put_pack(&h.app, &d.token, pid, bytes[..bytes.len() / 2].to_vec()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Nothing was granted or stored: the chunk is still unknown.
    let g = get(&h.app, &format!("/v1/blobs/{}", d.id(&file)), &d.token).await;
    assert_eq!(g.status, StatusCode::NOT_FOUND);
    // The real pack goes in, and a retried upload is harmless.
    for _ in 0..2 {
        let r = put_pack(&h.app, &d.token, pid, bytes.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let usage = get(&h.app, "/v1/admin/usage", &a.token).await.json();
    assert_eq!(usage["unique_chunks"], json!(1));
    // The device is credited once for what it added, not for the retry.
    let devices = get(&h.app, "/v1/admin/devices", &a.token).await.json();
    let dave = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["user"] == "dave")
        .unwrap();
    assert_eq!(dave["stored_bytes"], json!(bytes.len()));
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx_answers() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let t = Some(a.token.as_str());
    let cases: Vec<(Method, &str, Vec<u8>)> = vec![
        (Method::POST, "/v1/chunks/query", b"{not json".to_vec()),
        (
            Method::POST,
            "/v1/chunks/query",
            br#"{"ids": ["zz"]}"#.to_vec(),
        ),
        (
            Method::POST,
            "/v1/chunks/prove",
            br#"{"proofs": 3}"#.to_vec(),
        ),
        (Method::POST, "/v1/enroll", b"".to_vec()),
        (Method::PUT, "/v1/packs/not-an-id", b"x".to_vec()),
        (Method::GET, "/v1/blobs/123", vec![]),
        (Method::POST, "/v1/snapshots", b"garbage".to_vec()),
        (Method::POST, "/v1/admin/users", br#"{"name": ""}"#.to_vec()),
        (
            Method::POST,
            "/v1/admin/codes",
            br#"{"user": "nobody"}"#.to_vec(),
        ),
    ];
    for (m, path, body) in cases {
        let r = call(&h.app, m.clone(), path, t, body).await;
        assert!(r.status.is_client_error(), "{m} {path}: {}", r.status);
        assert!(
            r.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{m} {path}"
        );
    }
    let many: Vec<Id> = (0..10_001u32)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_le_bytes());
            Id(b)
        })
        .collect();
    let r = post_json(&h.app, "/v1/chunks/query", t, json!({"ids": many})).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = call(&h.app, Method::GET, "/v1/snapshots", None, vec![]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let m = call(&h.app, Method::GET, "/metrics", None, vec![]).await;
    assert!(String::from_utf8_lossy(&m.body).contains("tidemark_rejected_total"));
    let spec = call(&h.app, Method::GET, "/v1/openapi.json", None, vec![])
        .await
        .json();
    assert_eq!(spec["openapi"], json!("3.1.0"));
}

#[tokio::test]
async fn a_restart_keeps_everything_committed() {
    let dir = tempfile::tempdir().unwrap();
    let (snap, ids, token, keys) = {
        let o = Server::open(dir.path(), fast_kdf()).unwrap();
        let app = server::app(o.server, Limits::default());
        let a = admin(&app, o.first_admin_code.as_deref().unwrap()).await;
        let (snap, ids, _) = backup(&app, &a, &data(2, 70_000)).await;
        (snap, ids, a.token.clone(), a.keys.clone())
    };
    let o = Server::open(dir.path(), fast_kdf()).unwrap();
    assert!(
        o.first_admin_code.is_none(),
        "no new admin code on a restart"
    );
    assert_eq!(o.server.org_keys(), keys.to_hex());
    let app = server::app(o.server, Limits::default());
    let list = get(&app, "/v1/snapshots", &token).await.json();
    assert_eq!(list[0]["id"].as_str().unwrap(), snap.to_hex());
    let b = get(&app, &format!("/v1/blobs/{}", ids[0]), &token).await;
    assert_eq!(b.status, StatusCode::OK);
}

#[tokio::test]
async fn a_device_that_floods_the_server_is_slowed_down() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Server::open(dir.path(), fast_kdf()).unwrap();
    let limits = Limits {
        device_rps: 1,
        device_burst: 3,
        ..Limits::default()
    };
    let app = server::app(opened.server, limits);
    let a = admin(&app, opened.first_admin_code.as_deref().unwrap()).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&app, "/v1/whoami", &a.token).await);
    }
    assert!(statuses[..3].iter().all(|r| r.status == StatusCode::OK));
    let limited = statuses.last().unwrap();
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.json()["error"]
        .as_str()
        .unwrap()
        .contains("slow down"));
}

#[tokio::test]
async fn server_retention_is_the_only_way_besides_an_admin_that_snapshots_go() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let erin = user(&h.app, &a, "erin").await;
    let (_, ids, _) = backup(&h.app, &erin, &data(4, 9000)).await;
    for time in ["2026-11-24T10:00:00Z", "2026-11-23T10:00:00Z"] {
        let r = call(
            &h.app,
            Method::POST,
            "/v1/snapshots",
            Some(&erin.token),
            erin.seal_snapshot_at(ids[1], time),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let count = |v: Value| v.as_array().unwrap().len();
    assert_eq!(
        count(get(&h.app, "/v1/snapshots", &erin.token).await.json()),
        3
    );

    // A policy that keeps nothing is refused rather than deleting everything.
    let r = post_json(
        &h.app,
        "/v1/admin/retention",
        Some(&a.token),
        json!({"policy": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Devices cannot run it.
    let r = post_json(&h.app, "/v1/admin/retention", Some(&erin.token), json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The organisation's policy: keep the newest one.
    let r = call(
        &h.app,
        Method::PUT,
        "/v1/admin/policy",
        Some(&a.token),
        serde_json::to_vec(&json!({"retention": {"keep_last": 1}})).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let dry = post_json(
        &h.app,
        "/v1/admin/retention",
        Some(&a.token),
        json!({"dry_run": true}),
    )
    .await
    .json();
    assert_eq!(dry["removed"].as_array().unwrap().len(), 2);
    assert_eq!(
        count(get(&h.app, "/v1/snapshots", &erin.token).await.json()),
        3
    );
    let run = post_json(&h.app, "/v1/admin/retention", Some(&a.token), json!({}))
        .await
        .json();
    assert_eq!(run["removed"].as_array().unwrap().len(), 2);
    let left = get(&h.app, "/v1/snapshots", &erin.token).await.json();
    assert_eq!(count(left.clone()), 1);
    assert_eq!(left[0]["snapshot"]["time"], json!("2026-11-25T10:00:00Z"));
    let audit = get(&h.app, "/v1/admin/audit", &a.token).await.json();
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "retention"));
}

/// Whether `c` can still use `chunk` without sending it (owned and stored).
async fn usable(app: &axum::Router, c: &Client, chunk: Id) -> bool {
    let q = post_json(
        app,
        "/v1/chunks/query",
        Some(&c.token),
        json!({"ids": [chunk]}),
    )
    .await;
    assert_eq!(q.status, StatusCode::OK);
    !q.json()["owned"].as_array().unwrap().is_empty()
}

#[tokio::test]
async fn online_prune_frees_unused_data_and_keeps_uploads_not_yet_committed() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let erin = user(&h.app, &a, "erin").await;
    let frank = user(&h.app, &a, "frank").await;
    let (old_snap, old, _) = backup(&h.app, &erin, &data(7, 60_000)).await;
    let (_, new, _) = backup(&h.app, &erin, &data(8, 60_000)).await;

    // Devices cannot prune.
    let r = post_json(&h.app, "/v1/admin/prune", Some(&erin.token), json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // A first prune finds both snapshots' data used (and so no longer
    // needs to keep it for freshness).
    let r = post_json(&h.app, "/v1/admin/prune", Some(&a.token), json!({})).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["blobs_removed"], 0);
    assert_eq!(r.json()["snapshots"], 2);

    // The old snapshot goes; frank uploads a file he has not committed yet.
    let r = delete(&h.app, &format!("/v1/admin/snapshots/{old_snap}"), &a.token).await;
    assert!(
        r.status.is_success(),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let (pending, _) = upload(&h.app, &frank, &data(9, 60_000)).await;

    let dry = post_json(
        &h.app,
        "/v1/admin/prune",
        Some(&a.token),
        json!({"dry_run": true}),
    )
    .await
    .json();
    assert_eq!(dry["blobs_removed"], 2, "{dry}");
    assert!(
        usable(&h.app, &erin, old[0]).await,
        "a dry run deletes nothing"
    );

    let run = post_json(&h.app, "/v1/admin/prune", Some(&a.token), json!({}))
        .await
        .json();
    assert_eq!(run["blobs_removed"], 2, "{run}");
    assert_eq!(run["fresh_kept"], 2, "frank's chunk and tree: {run}");
    assert!(
        run["bytes_after"].as_u64().unwrap() < run["bytes_before"].as_u64().unwrap(),
        "{run}"
    );
    assert!(
        !usable(&h.app, &erin, old[0]).await,
        "the removed snapshot's data is gone"
    );
    let r = get(&h.app, &format!("/v1/blobs/{}", old[0]), &erin.token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for id in &new {
        assert!(usable(&h.app, &erin, *id).await);
        let r = get(&h.app, &format!("/v1/blobs/{id}"), &erin.token).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    // Frank's upload outlived the prune: his commit goes through.
    let r = commit(&h.app, &frank, pending[1]).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );

    // An upload left uncommitted by a device that then went silent past the
    // grace period is freed; when that device comes back and commits, the
    // commit is refused, not accepted with a hole, and sending the data
    // again mends it.
    let (stale, _) = upload(&h.app, &frank, &data(10, 60_000)).await;
    let later = chrono::Utc::now().timestamp() + 2 * 86_400;
    let r = server::prune::run_at(&h.server, later, 24, false, "test").unwrap();
    assert_eq!(r.repository.blobs_removed, 2, "{r:?}");
    let r = commit(&h.app, &frank, stale[1]).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(String::from_utf8_lossy(&r.body).contains("upload them and commit again"));
    backup(&h.app, &frank, &data(10, 60_000)).await;

    let audit = get(&h.app, "/v1/admin/audit", &a.token).await.json();
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "prune"));
}

#[tokio::test]
async fn without_an_organisation_policy_the_server_thins_like_the_timeline() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let erin = user(&h.app, &a, "erin").await;
    let (_, ids, _) = backup(&h.app, &erin, &data(4, 9000)).await;
    // Two snapshots in one clock hour two days ago: the timeline keeps one
    // an hour after the first day, the newer.
    let hour = (chrono::Utc::now() - chrono::Duration::hours(50))
        .format("%Y-%m-%dT%H")
        .to_string();
    let mut made = Vec::new();
    for minute in ["05", "35"] {
        let r = call(
            &h.app,
            Method::POST,
            "/v1/snapshots",
            Some(&erin.token),
            erin.seal_snapshot_at(ids[1], &format!("{hour}:{minute}:00Z")),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        made.push(r.json()["id"].clone());
    }
    let dry = post_json(
        &h.app,
        "/v1/admin/retention",
        Some(&a.token),
        json!({"dry_run": true}),
    )
    .await;
    assert_eq!(
        dry.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&dry.body)
    );
    let dry = dry.json();
    assert_eq!(dry["removed"], json!([made[0]]), "{dry}");
    assert_eq!(dry["kept"], 2, "{dry}");
}
