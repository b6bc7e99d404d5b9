//! The server against a device whose token and organisation keys were
//! stolen: it seals snapshots, trees and packs that decrypt and hash
//! correctly, and it may guess at colleagues' files. Each test is an attack
//! through the real HTTP API (in process) and what must still hold.

// Helpers panic on purpose: in a test a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::time::{Duration, Instant};

async fn commit_sealed(app: &axum::Router, c: &Client, sealed: Vec<u8>) -> Reply {
    call(app, Method::POST, "/v1/snapshots", Some(&c.token), sealed).await
}

fn tree_bytes(v: Value) -> Vec<u8> {
    let tree: Tree = serde_json::from_value(v).unwrap();
    format::to_json(&tree)
}

#[tokio::test]
async fn a_stolen_device_cannot_make_retention_delete_its_users_history() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    set_policy(&h.app, &a, json!({"retention": {"keep_last": 5}})).await;

    // Vic's laptop has backed up five times, an hour apart.
    h.server.set_clock_offset(-6 * 3600);
    let laptop = user(&h.app, &a, "vic").await;
    let stolen = device(&h.app, &a, "vic", "vic-phone").await;
    let mut history = Vec::new();
    for hour in (1..=5).rev() {
        h.server.set_clock_offset(-hour * 3600);
        let (ids, _) = upload(&h.app, &laptop, &data(hour as u8, 5000)).await;
        let sealed = laptop.seal_snapshot_at(ids[1], &at(h.server.now()));
        let r = commit_sealed(&h.app, &laptop, sealed).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        history.push(Id::from_hex(r.json()["id"].as_str().unwrap()).unwrap());
    }
    h.server.set_clock_offset(0);

    // The thief seals snapshots of the same host and paths with an empty
    // root tree, dated from the year 2100 on...
    let empty = tree_bytes(json!({"nodes": []}));
    let empty_id = stolen.id(&empty);
    send(&h.app, &stolen, &[(BlobKind::Tree, empty.clone())]).await;
    for day in 0..30 {
        let sealed =
            stolen.seal_snapshot_at(empty_id, &format!("2100-01-{:02}T00:00:00Z", day % 28 + 1));
        let r = commit_sealed(&h.app, &stolen, sealed).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"].as_str().unwrap().contains("future"));
    }
    // ...and, refused, floods the present instead.
    let mut accepted = 0;
    let mut limited = 0;
    for _ in 0..60 {
        let r = commit_sealed(&h.app, &stolen, stolen.seal_snapshot(empty_id)).await;
        match r.status {
            StatusCode::CREATED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("{other}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    assert!(
        accepted <= 21,
        "{accepted} commits without new data went through"
    );
    assert_eq!(accepted + limited, 60);

    // The device is flagged for the administrator, and the audit log says why.
    let devices = get(&h.app, "/v1/admin/devices", &a.token).await.json();
    let phone = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "vic-phone")
        .unwrap();
    assert!(phone["flagged"].is_i64(), "{phone}");
    assert!(phone["flag_reason"]
        .as_str()
        .unwrap()
        .contains("without new data"));
    let laptop_row = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "vic-laptop")
        .unwrap();
    assert!(laptop_row["flagged"].is_null(), "{laptop_row}");
    let audit = get(&h.app, "/v1/admin/audit", &a.token).await.json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"snapshot flood"), "{actions:?}");
    assert!(actions.contains(&"snapshot refused"), "{actions:?}");

    // Retention, as the server runs it every hour: nothing real is lost.
    let run = retention(&h.app, &a, false).await;
    let removed: Vec<Id> = serde_json::from_value(run["removed"].clone()).unwrap();
    assert!(
        history.iter().all(|id| !removed.contains(id)),
        "retention removed real snapshots: {run}"
    );
    assert_eq!(run["quarantined"], json!(accepted));
    let listed = get(&h.app, "/v1/snapshots", &laptop.token).await.json();
    let ids: Vec<Id> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Id::from_hex(s["id"].as_str().unwrap()).unwrap())
        .collect();
    for id in &history {
        assert!(
            ids.contains(id),
            "snapshot {id} of the real history is gone"
        );
    }
    // The forged ones are marked for whoever lists them.
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["suspect"] == json!(true))
        .all(|s| s["snapshot"]["tree"] == json!(empty_id)));

    // Cleared by an administrator, they count again: keep_last 5 keeps the
    // five newest the server received.
    let phone_id = phone["id"].as_i64().unwrap();
    let r = post_json(
        &h.app,
        &format!("/v1/admin/devices/{phone_id}/unflag"),
        Some(&a.token),
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let dry = retention(&h.app, &a, true).await;
    assert_eq!(dry["quarantined"], json!(0));
    assert_eq!(dry["kept"], json!(5));
}

#[tokio::test]
async fn a_snapshot_dated_before_its_device_was_enrolled_is_refused() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let dan = user(&h.app, &a, "dan").await;
    let (ids, _) = upload(&h.app, &dan, &data(3, 4000)).await;
    let old = dan.seal_snapshot_at(ids[1], "2020-01-01T00:00:00Z");
    let r = commit_sealed(&h.app, &dan, old).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("before this device was enrolled"));
    // Within the clock skew both ways is fine.
    let skewed = dan.seal_snapshot_at(ids[1], &at(chrono::Utc::now().timestamp() + 300));
    assert_eq!(
        commit_sealed(&h.app, &dan, skewed).await.status,
        StatusCode::CREATED
    );
}

/// A letter whose only unknown is a five-digit salary.
fn letter(salary: u32) -> Vec<u8> {
    let mut text = format!(
        "Dear Alice,\n\nWe are pleased to confirm that from 1 January your salary will be EUR {salary} a year.\n\nKind regards,\nHR\n"
    )
    .into_bytes();
    // Padding the attacker knows, as a template's boilerplate would be.
    text.extend(data(42, 4000));
    text
}

/// Queries and proves `files` as `c`; returns, per file, whether the proof
/// was granted.
async fn prove_all(app: &axum::Router, c: &Client, files: &[Vec<u8>]) -> Vec<bool> {
    let ids: Vec<Id> = files.iter().map(|f| c.id(f)).collect();
    let q = post_json(app, "/v1/chunks/query", Some(&c.token), json!({"ids": ids})).await;
    assert_eq!(q.status, StatusCode::OK);
    let q = q.json();
    let challenges = q["challenges"].as_array().unwrap();
    assert_eq!(challenges.len(), files.len(), "nothing here is owned yet");
    let proofs: Vec<Value> = challenges
        .iter()
        .zip(files)
        .map(|(ch, f)| {
            let nonce: [u8; 32] = hex::decode(ch["nonce"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            json!({"id": ch["id"], "expires": ch["expires"],
                "proof": hex::encode(crypto::ownership_proof(&nonce, f))})
        })
        .collect();
    let p = post_expecting(
        app,
        "/v1/chunks/prove",
        &c.token,
        json!({"proofs": proofs}),
        StatusCode::OK,
    )
    .await;
    let granted: Vec<Id> = serde_json::from_value(p["granted"].clone()).unwrap();
    ids.iter().map(|id| granted.contains(id)).collect()
}

#[tokio::test]
async fn guessing_a_colleagues_file_through_dedup_learns_nothing() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let alice = user(&h.app, &a, "alice").await;
    let mallory = user(&h.app, &a, "mallory").await;
    let secret = 53_127;
    backup(&h.app, &alice, &letter(secret)).await;

    // 10,000 guesses, the right one among them, in one request each way.
    let guesses: Vec<Vec<u8>> = (50_000..60_000).map(letter).collect();
    let t = Instant::now();
    let granted = prove_all(&h.app, &mallory, &guesses).await;
    assert!(t.elapsed() < Duration::from_secs(60));
    assert!(
        granted.iter().all(|g| !g),
        "a guess was granted: the answer confirms the colleague's file"
    );
    // The right guess was answered "upload", like every wrong one; sent,
    // it is stored for Mallory as any new data would be.
    let right = letter(secret);
    send(&h.app, &mallory, &[(BlobKind::Data, right.clone())]).await;
    let mine = get(
        &h.app,
        &format!("/v1/blobs/{}", mallory.id(&right)),
        &mallory.token,
    )
    .await;
    assert_eq!(mine.status, StatusCode::OK);

    // What is common is shared: once enough colleagues hold the same small
    // file (at most four), the next proof is granted without an upload.
    let memo = data(9, 3000);
    let mut outcomes = Vec::new();
    for n in 0..6 {
        let u = user(&h.app, &a, &format!("staff{n}")).await;
        let granted = prove_all(&h.app, &u, std::slice::from_ref(&memo)).await[0];
        if !granted {
            send(&h.app, &u, &[(BlobKind::Data, memo.clone())]).await;
        }
        outcomes.push(granted);
    }
    assert!(
        !outcomes[0] && !outcomes[1],
        "{outcomes:?}: shared below two other owners"
    );
    assert!(
        outcomes[4] && outcomes[5],
        "{outcomes:?}: not shared past four owners"
    );
}

/// Incompressible bytes from a seed, so a read of them costs what it would.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut out = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut out);
    out
}

/// The prove request for one file, ready to send (query done, proof made).
async fn proof_request(app: &axum::Router, c: &Client, file: &[u8]) -> Value {
    let q = post_json(
        app,
        "/v1/chunks/query",
        Some(&c.token),
        json!({"ids": [c.id(file)]}),
    )
    .await;
    let ch = q.json()["challenges"][0].clone();
    let nonce: [u8; 32] = hex::decode(ch["nonce"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    json!({"proofs": [{"id": ch["id"], "expires": ch["expires"],
        "proof": hex::encode(crypto::ownership_proof(&nonce, file))}]})
}

/// Times the prove requests of `a_file` and `b_file` in turn, `rounds`
/// times; returns the median of the ratios a/b (robust to a machine whose
/// speed drifts).
async fn timed_proofs(
    app: &axum::Router,
    c: &Client,
    a_file: &[u8],
    b_file: &[u8],
    rounds: usize,
) -> f64 {
    let requests = [
        proof_request(app, c, a_file).await,
        proof_request(app, c, b_file).await,
    ];
    let mut ratios = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let mut took = [Duration::ZERO; 2];
        for (i, req) in requests.iter().enumerate() {
            let t = Instant::now();
            let r = post_json(app, "/v1/chunks/prove", Some(&c.token), req.clone()).await;
            took[i] = t.elapsed();
            assert_eq!(r.json()["granted"], json!([]));
        }
        ratios.push(took[0].as_secs_f64() / took[1].as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    ratios[rounds / 2]
}

#[tokio::test]
async fn a_proof_for_a_stored_chunk_takes_as_long_as_for_an_unknown_one() {
    // Hundreds of requests in a row: past the per-device rate limit.
    let h = start_with(Limits {
        device_rps: 100_000,
        device_burst: 100_000,
        ..Limits::default()
    });
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let alice = user(&h.app, &a, "alice").await;
    let mallory = user(&h.app, &a, "mallory").await;
    // Below the sharing size, as guessable files are; big enough that
    // reading, decrypting and hashing it would show.
    let stored = noise(11, 250_000);
    let unknown = noise(12, 250_000);
    backup(&h.app, &alice, &stored).await;
    let ratio = timed_proofs(&h.app, &mallory, &stored, &unknown, 301).await;
    assert!(
        (0.8..1.25).contains(&ratio),
        "a proof of a stored chunk took {ratio:.2}x the time of an unknown one's"
    );
}

#[tokio::test]
async fn a_commit_whose_trees_every_reader_would_refuse_is_refused() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let eve = user(&h.app, &a, "eve").await;

    // Folders nested one deeper than any reader follows, and folders that
    // repeat each other: 2^40 paths from 40 small trees.
    let chain = |n: usize, names: &[&str]| {
        let mut blobs = Vec::new();
        let mut below = stored_leaf(&eve, &mut blobs);
        for _ in 0..n {
            let nodes: Vec<Value> = names
                .iter()
                .map(|name| json!({"name": name, "kind": "dir", "mode": 493, "mtime_ns": 0, "subtree": below}))
                .collect();
            let t = tree_bytes(json!({ "nodes": nodes }));
            below = eve.id(&t);
            blobs.push((BlobKind::Tree, t));
        }
        (blobs, below)
    };
    for ((blobs, root), why) in [
        (chain(format::MAX_TREE_DEPTH, &["d"]), "nest deeper"),
        (chain(40, &["a", "b"]), "expand"),
    ] {
        send(&h.app, &eve, &blobs).await;
        let r = commit_sealed(&h.app, &eve, eve.seal_snapshot(root)).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"].as_str().unwrap().contains(why), "{why}");
    }

    // Entries out of order and a name a restore would refuse.
    for nodes in [
        json!([{"name": "b", "kind": "file", "mode": 420, "mtime_ns": 0}, {"name": "a", "kind": "file", "mode": 420, "mtime_ns": 0}]),
        json!([{"name": "..", "kind": "file", "mode": 420, "mtime_ns": 0}]),
        json!([{"name": "x", "kind": "dir", "mode": 493, "mtime_ns": 0}]),
    ] {
        let t = tree_bytes(json!({ "nodes": nodes }));
        send(&h.app, &eve, &[(BlobKind::Tree, t.clone())]).await;
        let r = commit_sealed(&h.app, &eve, eve.seal_snapshot(eve.id(&t))).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{nodes}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Nothing of it was committed.
    let listed = get(&h.app, "/v1/snapshots", &eve.token).await.json();
    assert_eq!(listed, json!([]));
}

/// An empty folder's tree, added to `blobs`; returns its id.
fn stored_leaf(c: &Client, blobs: &mut Vec<(BlobKind, Vec<u8>)>) -> Id {
    let t = tree_bytes(json!({"nodes": []}));
    let id = c.id(&t);
    blobs.push((BlobKind::Tree, t));
    id
}
