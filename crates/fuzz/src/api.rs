//! The server's API request bodies, through the real router
//! (`server::app`) in process over a temporary data folder, with an
//! enrolled admin device's token: what a stolen admin laptop can send.
//! The request types are private to the server, so inputs reach them only
//! as bodies, the way a client's do.

use crate::{u32_at, Fixture, SNAPSHOT_AAD};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use crypto::Id;
use std::sync::OnceLock;
use tower::ServiceExt;

struct Api {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
    token: String,
    _dir: tempfile::TempDir,
}

/// Where an input goes: its first byte picks one of these.
const ROUTES: [(&str, &str); 12] = [
    ("POST", "/v1/enroll"),
    ("POST", "/v1/chunks/query"),
    ("POST", "/v1/chunks/prove"),
    ("PUT", "/v1/packs/"),
    ("POST", "/v1/snapshots"),
    ("POST", "/v1/snapshots#sealed"),
    ("PUT", "/v1/packs/#sealed"),
    ("POST", "/v1/admin/users"),
    ("POST", "/v1/admin/codes"),
    ("PUT", "/v1/admin/policy"),
    ("POST", "/v1/admin/retention"),
    ("POST", "/v1/admin/prune"),
];

/// The route names, for seeds.
pub fn route_index(method: &str, path: &str) -> u8 {
    ROUTES
        .iter()
        .position(|r| *r == (method, path))
        .map_or(0, |i| i as u8)
}

fn api() -> &'static Api {
    static A: OnceLock<Api> = OnceLock::new();
    A.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder for the server");
        let kdf = crypto::KdfParams {
            m_cost: 256,
            t_cost: 1,
            p_cost: 1,
        };
        let opened = server::Server::open(dir.path(), Some(kdf)).expect("the server opens");
        // No rate limit: the fuzzer is one device sending thousands of
        // requests, and 429s would hide every decoder behind them.
        let limits = server::Limits {
            device_rps: 1_000_000,
            device_burst: 1_000_000,
            ..server::Limits::default()
        };
        let app = server::app(opened.server, limits);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let code = opened
            .first_admin_code
            .expect("a new server has an admin code");
        let body = serde_json::json!({"code": code, "device_name": "fuzzer"}).to_string();
        let (status, reply) = rt.block_on(call(&app, "POST", "/v1/enroll", None, body.into()));
        assert_eq!(status, StatusCode::OK, "enrolment failed: {reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).expect("enrolment answers JSON");
        let token = v["token"].as_str().expect("a token").to_string();
        Api {
            rt,
            app,
            token,
            _dir: dir,
        }
    })
}

async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let method = Method::from_bytes(method.as_bytes()).unwrap_or(Method::POST);
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let Ok(req) = req.body(Body::from(body)) else {
        return (StatusCode::BAD_REQUEST, String::new());
    };
    // The router's error type is Infallible.
    let Ok(resp) = app.clone().oneshot(req).await;
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Input: `[route u8][body]`. A server error (5xx) is a finding: garbage
/// must be answered 4xx.
pub(crate) fn run(f: &Fixture, data: &[u8]) {
    let Some((&r, body)) = data.split_first() else {
        return;
    };
    let a = api();
    let (method, route) = ROUTES[r as usize % ROUTES.len()];
    let (path, body) = match route {
        "/v1/packs/" => {
            let id = format::pack::named_part(body)
                .map(Id::hash_public)
                .unwrap_or(Id([0; 32]));
            (format!("/v1/packs/{id}"), body.to_vec())
        }
        "/v1/packs/#sealed" => {
            let split = (u32_at(body, 0) as usize).min(body.len().saturating_sub(4));
            let rest = body.get(4..).unwrap_or_default();
            let (blobs, trailer) = rest.split_at(split.min(rest.len()));
            let sealed = f.keys.data.seal(trailer, format::pack::TRAILER_AAD);
            let mut bytes = blobs.to_vec();
            bytes.extend_from_slice(&sealed);
            bytes.extend_from_slice(&format::pack::encode_tail(sealed.len() as u32));
            let id = format::pack::named_part(&bytes)
                .map(Id::hash_public)
                .unwrap_or(Id([0; 32]));
            (format!("/v1/packs/{id}"), bytes)
        }
        "/v1/snapshots#sealed" => (
            "/v1/snapshots".to_string(),
            f.keys.data.seal(body, SNAPSHOT_AAD),
        ),
        p => (p.to_string(), body.to_vec()),
    };
    let token = (route != "/v1/enroll").then_some(a.token.as_str());
    let (status, reply) = a.rt.block_on(call(&a.app, method, &path, token, body));
    assert!(
        !status.is_server_error(),
        "{method} {path} answered {status}: {reply}"
    );
}
