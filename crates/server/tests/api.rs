//! The server's HTTP API, in process: enrolment, global dedup with proofs of
//! ownership, isolation between users, ransomware safety, bad input.

// Helpers panic on purpose: in a test a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

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
    // Large enough to be shared at once (see server::dedup::SMALL_CHUNK).
    let shared = data(7, 300_000);

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

    // With the data, Bob sends proofs and his folder's small tree (small
    // chunks are shared across users only once common, see server::dedup).
    let (bob_snap, _, sent_bob) = backup(&h.app, &bob, &shared).await;
    assert!(
        sent_bob < 1000,
        "{sent_bob} bytes sent: a large chunk the organisation has must not cross the network again"
    );
    let mine = get(&h.app, &format!("/v1/blobs/{}", ids[0]), &bob.token).await;
    assert_eq!(mine.status, StatusCode::OK);
    let raw_len: u32 = 300_000;
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
    // The counters need the scrape token from the data folder.
    let m = call(&h.app, Method::GET, "/metrics", None, vec![]).await;
    assert_eq!(m.status, StatusCode::UNAUTHORIZED);
    assert!(m.json()["error"].as_str().unwrap().contains("scrape token"));
    let scrape = std::fs::read_to_string(h._dir.path().join("metrics.token")).unwrap();
    let m = call(&h.app, Method::GET, "/metrics", Some(&scrape), vec![]).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&m.body).contains("tidemark_rejected_total"));
    let m = call(&h.app, Method::GET, "/metrics", t, vec![]).await;
    assert_eq!(
        m.status,
        StatusCode::UNAUTHORIZED,
        "a device token is no scrape token"
    );
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
    // Erin's laptop joined three hours ago and committed an hour apart; the
    // last commit claims a time between the other two (a laptop whose clock
    // was off). Retention goes by when the server received them.
    h.server.set_clock_offset(-3 * 3600);
    let erin = user(&h.app, &a, "erin").await;
    let (ids, _) = upload(&h.app, &erin, &data(4, 9000)).await;
    let mut made = Vec::new();
    for (offset, claimed) in [(-3 * 3600, 0), (-2 * 3600, 0), (0, -9000)] {
        h.server.set_clock_offset(offset);
        let r = call(
            &h.app,
            Method::POST,
            "/v1/snapshots",
            Some(&erin.token),
            erin.seal_snapshot_at(ids[1], &at(h.server.now() + claimed)),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        made.push(r.json()["id"].clone());
    }
    let count = |v: Value| v.as_array().unwrap().len();
    let listed = get(&h.app, "/v1/snapshots", &erin.token).await.json();
    assert_eq!(count(listed.clone()), 3);
    let order: Vec<Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(order, made, "listed in the order the server received them");

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
    set_policy(&h.app, &a, json!({"retention": {"keep_last": 1}})).await;
    let dry = retention(&h.app, &a, true).await;
    assert_eq!(dry["removed"].as_array().unwrap().len(), 2);
    assert_eq!(
        count(get(&h.app, "/v1/snapshots", &erin.token).await.json()),
        3
    );
    let run = retention(&h.app, &a, false).await;
    assert_eq!(run["removed"].as_array().unwrap().len(), 2);
    let left = get(&h.app, "/v1/snapshots", &erin.token).await.json();
    assert_eq!(count(left.clone()), 1);
    assert_eq!(
        left[0]["id"], made[2],
        "the newest by the server's clock stays, whatever it claims"
    );
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
    // Two snapshots received in one clock hour two days ago, and one now:
    // the timeline keeps one an hour after the first day, the newer.
    let now = chrono::Utc::now().timestamp();
    let hour = (now - 50 * 3600) / 3600 * 3600;
    h.server.set_clock_offset(hour + 5 * 60 - now);
    let erin = user(&h.app, &a, "erin").await;
    let (ids, _) = upload(&h.app, &erin, &data(4, 9000)).await;
    let mut made = Vec::new();
    for at_time in [hour + 5 * 60, hour + 35 * 60, now] {
        h.server.set_clock_offset(at_time - now);
        let r = call(
            &h.app,
            Method::POST,
            "/v1/snapshots",
            Some(&erin.token),
            erin.seal_snapshot_at(ids[1], &at(h.server.now())),
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED);
        made.push(r.json()["id"].clone());
    }
    h.server.set_clock_offset(0);
    let dry = retention(&h.app, &a, true).await;
    assert_eq!(dry["removed"], json!([made[0]]), "{dry}");
    assert_eq!(dry["kept"], 2, "{dry}");
}

#[tokio::test]
async fn the_download_page_carries_nothing_of_a_crafted_link_into_html_or_the_shell() {
    let h = start();
    let a = admin(&h.app, h.admin_code.as_deref().unwrap()).await;
    let r = post_json(
        &h.app,
        "/v1/admin/codes",
        Some(&a.token),
        json!({"user": "admin", "uses": 1}),
    )
    .await;
    let code = r.json()["code"].as_str().unwrap().to_string();
    // The server ignores what is not a letter or digit in a code, so this
    // link is valid; what it adds must not reach the page or the command.
    let crafted = format!("{code}%22%27%3E%3C%3B%7C%24%28%29");
    let req = Request::builder()
        .uri(format!("/download/{crafted}"))
        .header("host", "backup.example:8443")
        .body(Body::empty())
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        page.contains(&format!(
            "https://backup.example:8443/download/{code}/install.sh"
        )),
        "{page}"
    );
    for raw in ["\"'><", ";|$()", "'>"] {
        assert!(!page.contains(raw), "{raw:?} reached the page: {page}");
    }
}
