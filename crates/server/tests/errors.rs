//! Error answers the handlers never make: axum's body limit (413), an
//! oversized request head (431), a wrong method (405) and an unknown path
//! (404) are JSON like every other error, with a message that says what to
//! do.

// Helpers panic on purpose: in a test a panic is the failure report.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use crypto::KdfParams;
use http_body_util::BodyExt;
use serde_json::Value;
use server::{Limits, Server};
use tower::ServiceExt;

struct Harness {
    app: axum::Router,
    admin_code: Option<String>,
    _dir: tempfile::TempDir,
}

fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let kdf = KdfParams {
        m_cost: 256,
        t_cost: 1,
        p_cost: 1,
    };
    let opened = Server::open(dir.path(), Some(kdf)).expect("server open");
    Harness {
        app: server::app(opened.server, Limits::default()),
        admin_code: opened.first_admin_code,
        _dir: dir,
    }
}

/// Sends `req` and returns the status, the headers and the body as JSON
/// (failing with what came instead if it is not JSON with a non-empty
/// `error` string).
async fn send(h: &Harness, req: Request<Body>) -> (StatusCode, header::HeaderMap, String) {
    let resp = h.app.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{}: content-type {content_type:?}, body {:?}",
        parts.status,
        String::from_utf8_lossy(&body)
    );
    let json: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "{}: not JSON ({e}): {:?}",
            parts.status,
            String::from_utf8_lossy(&body)
        )
    });
    let message = json["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {json}"))
        .to_string();
    assert!(!message.is_empty());
    (parts.status, parts.headers, message)
}

#[tokio::test]
async fn a_body_over_the_limit_gets_a_json_413() {
    let h = start();
    let big = vec![b' '; (2 << 20) + 1];
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/enroll")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big))
        .unwrap();
    let (status, _, message) = send(&h, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("2 MiB"), "{message}");
    assert!(message.contains("packs up to 64 MiB"), "{message}");
}

#[tokio::test]
async fn a_pack_over_the_limit_gets_a_json_413() {
    let h = start();
    let enrol = Request::builder()
        .method(Method::POST)
        .uri("/v1/enroll")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({"code": h.admin_code.clone().unwrap(), "device_name": "laptop"})
                .to_string(),
        ))
        .unwrap();
    let resp = h.app.clone().oneshot(enrol).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let token = body["token"].as_str().unwrap().to_string();

    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("/v1/packs/{}", "ab".repeat(32)))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(vec![0u8; (64 << 20) + 1]))
        .unwrap();
    let (status, _, message) = send(&h, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("packs up to 64 MiB"), "{message}");
}

#[tokio::test]
async fn an_oversized_request_head_gets_a_json_431() {
    let h = start();
    let req = Request::builder()
        .uri("/v1/whoami")
        .header("x-padding", "a".repeat(20 << 10))
        .body(Body::empty())
        .unwrap();
    let (status, _, message) = send(&h, req).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(message.contains("16 KiB"), "{message}");

    let mut req = Request::builder().uri("/v1/whoami");
    for i in 0..150 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let (status, _, message) = send(&h, req.body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(message.contains("100 headers"), "{message}");
}

#[tokio::test]
async fn a_wrong_method_gets_a_json_405_and_the_allow_header() {
    let h = start();
    let req = Request::builder()
        .method(Method::GET)
        .uri("/v1/enroll")
        .body(Body::empty())
        .unwrap();
    let (status, headers, message) = send(&h, req).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(message.contains("GET"), "{message}");
    assert!(message.contains("/v1/enroll"), "{message}");
    // The message points at the Allow header, which names the right one.
    assert!(message.contains("Allow header"), "{message}");
    assert_eq!(headers.get(header::ALLOW).unwrap(), "POST");
}

#[tokio::test]
async fn an_unknown_path_gets_a_json_404() {
    let h = start();
    let req = Request::builder()
        .uri("/v1/nowhere")
        .body(Body::empty())
        .unwrap();
    let (status, _, message) = send(&h, req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message.contains("/v1/openapi.json"), "{message}");
}
