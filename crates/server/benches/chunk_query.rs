//! Chunk-query throughput: how many ids per second the server answers in
//! `POST /v1/chunks/query`, for ids the device owns and ids it does not
//! (each of those gets a challenge). In process, through the real router,
//! JSON and SQLite included, network excluded. Run with `cargo bench -p server`.

use axum::body::Body;
use axum::http::Request;
use crypto::{Id, KdfParams};
use http_body_util::BodyExt;
use server::{Limits, Server};
use std::time::Instant;
use tower::ServiceExt;

const BATCH: usize = 10_000;
const ROUNDS: usize = 20;

fn ids(seed: u32, n: usize) -> Vec<Id> {
    (0..n)
        .map(|i| Id::hash_public(format!("{seed}-{i}").as_bytes()))
        .collect()
}

async fn post(app: &axum::Router, path: &str, token: Option<&str>, body: Vec<u8>) -> Vec<u8> {
    let mut req = Request::post(path).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec()
}

async fn run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kdf = KdfParams {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    };
    let opened = Server::open(dir.path(), Some(kdf)).expect("open");
    let srv = opened.server.clone();
    let app = server::app(opened.server, Limits::default());
    let code = opened.first_admin_code.expect("code");
    let e: serde_json::Value = serde_json::from_slice(
        &post(
            &app,
            "/v1/enroll",
            None,
            serde_json::to_vec(&serde_json::json!({"code": code, "device_name": "bench"}))
                .expect("json"),
        )
        .await,
    )
    .expect("json");
    let token = e["token"].as_str().expect("token").to_string();
    let user = srv.meta.users().expect("users")[0].id;
    // A user who owns 100,000 chunks the server really stores (tiny ones,
    // written straight into the server's repository).
    let up = srv
        .repo
        .start_upload(repository::UploadOptions::default())
        .expect("upload");
    let mut owned = Vec::with_capacity(100_000);
    for i in 0..100_000u32 {
        let data = i.to_le_bytes().repeat(4);
        let id = srv.repo.content_id(&data);
        up.add(format::BlobKind::Data, id, &data).expect("add");
        owned.push(id);
    }
    up.finish().expect("finish");
    srv.meta.grant(user, 0, &owned, 0).expect("grant");

    println!("| ids per request | owned by the user | ids/s (median of {ROUNDS}) |");
    println!("| ---: | --- | ---: |");
    for (label, set) in [("yes", &owned), ("no (challenge each)", &ids(2, 100_000))] {
        let mut rates = Vec::new();
        for r in 0..ROUNDS {
            let start = (r * BATCH) % (set.len() - BATCH);
            let body =
                serde_json::to_vec(&serde_json::json!({ "ids": &set[start..start + BATCH] }))
                    .expect("json");
            let t = Instant::now();
            post(&app, "/v1/chunks/query", Some(&token), body).await;
            rates.push(BATCH as f64 / t.elapsed().as_secs_f64());
        }
        rates.sort_by(|a, b| a.total_cmp(b));
        println!("| {BATCH} | {label} | {:.0} |", rates[ROUNDS / 2]);
    }
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run());
}
