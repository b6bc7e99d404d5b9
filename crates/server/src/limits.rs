//! How requests may arrive, and the answers for the ones the handlers never
//! see.
//!
//! Connections (see [`conn`]): a TLS handshake, a request head and an idle
//! keep-alive gap each have a deadline, a response the client stops reading
//! is abandoned, and the number of connections is capped per source address
//! and in total, below the process's open-file limit, so that clients that
//! connect and then say nothing cannot take every socket from the devices.
//!
//! Requests ([`guard`], a middleware around the whole router): a request
//! head larger than [`MAX_HEAD_BYTES`] gets a 431, a body that stops
//! arriving gets a 408, and every error answer, including the ones axum
//! makes itself (405 from the router, 413 from the body limit, 400/415/422
//! from its extractors, 404 for an unknown path), is the documented
//! `{"error": "..."}` JSON.

pub(crate) mod conn;

use crate::Limits;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Bytes of a request head (request line and headers) the server reads.
/// Tidemark's clients send well under 1 KiB and browsers a few KiB; 16 KiB
/// is what common servers allow (nginx 4 x 8 KiB lines, Apache 8 KiB per
/// field) and keeps a connection that fills its head cheap.
pub(crate) const MAX_HEAD_BYTES: usize = 16 << 10;

/// Headers in one request; the same count hyper allows by default, which no
/// real client comes near.
pub(crate) const MAX_HEADERS: usize = 100;

/// A request body must bring at least this many bytes in every
/// [`BODY_WINDOW`] (or end). 64 KiB per 30 s is about 2 KiB/s: a quarter of
/// the slowest rate the client's throttle ever uploads at (8 KB/s), and
/// 1/60 of a 1 Mbit/s link, so a 64 MiB pack over a slow link passes, while
/// a body that trickles a few bytes at a time is cut after 30 s.
pub(crate) const BODY_MIN_BYTES: u64 = 64 << 10;

/// See [`BODY_MIN_BYTES`]. 30 s also rides out a Wi-Fi roam or a burst of
/// TCP retransmissions (1 + 2 + 4 + 8 s of back-off) in the middle of an
/// upload.
pub(crate) const BODY_WINDOW: Duration = Duration::from_secs(30);

/// Bytes of a plain-text error body (axum's rejections) kept as the JSON
/// message; theirs are one line.
const MAX_PLAIN_ERROR: usize = 4 << 10;

/// Characters of a request path echoed in a message.
const MAX_ECHOED_PATH: usize = 200;

/// The state of [`guard`]: the body limits it names in 413 answers, and the
/// pace a body must keep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guard {
    limits: Limits,
    window: Duration,
    min_bytes: u64,
}

impl Guard {
    pub(crate) fn new(limits: Limits) -> Self {
        Guard {
            limits,
            window: BODY_WINDOW,
            min_bytes: BODY_MIN_BYTES,
        }
    }
}

/// Wraps every request: refuses oversized heads, cuts stalled bodies, and
/// turns every error answer that is not JSON into `{"error": ...}`.
pub(crate) async fn guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    if let Some(answer) = head_too_large(&req) {
        return answer;
    }
    let method = req.method().clone();
    let path = echoed_path(req.uri().path());
    let stalled = Arc::new(AtomicBool::new(false));
    let req = {
        let stalled = stalled.clone();
        req.map(|body| Body::new(Paced::new(body, guard.window, guard.min_bytes, stalled)))
    };
    let response = next.run(req).await;
    if stalled.load(Ordering::Relaxed) {
        let mut answer = error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body stopped arriving (less than {} KiB in {} s); check the network and send the request again",
                guard.min_bytes >> 10,
                guard.window.as_secs()
            ),
        );
        // The rest of the body is still on its way: this connection cannot
        // carry another request.
        answer
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return answer;
    }
    as_json(response, &method, &path, &guard.limits).await
}

fn error(status: StatusCode, message: String) -> Response {
    crate::ApiError::new(status, message).into_response()
}

fn echoed_path(path: &str) -> String {
    match path.char_indices().nth(MAX_ECHOED_PATH) {
        Some((cut, _)) => format!("{}…", &path[..cut]),
        None => path.to_string(),
    }
}

/// A 431 for a head over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`]. hyper reads
/// heads up to [`conn::HEAD_BUFFER`] so that this answer, with a body, is
/// the one clients get; only heads beyond that get hyper's bodyless 431.
fn head_too_large(req: &Request) -> Option<Response> {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + " HTTP/1.1\r\n".len()
        + 1;
    let bytes = line
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
            .sum::<usize>();
    let count = req.headers().len();
    (bytes > MAX_HEAD_BYTES || count > MAX_HEADERS).then(|| {
        error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request head is {bytes} bytes in {count} headers; the server reads at most {} KiB in {MAX_HEADERS} headers: send fewer or smaller headers (cookies, custom headers)",
                MAX_HEAD_BYTES >> 10
            ),
        )
    })
}

/// Rewrites an error answer that carries no body or plain text (axum's own
/// rejections and the router's 404/405), and every 413, as the API's JSON
/// error. Other JSON answers and other media (the download pages) pass
/// unchanged.
async fn as_json(response: Response, method: &Method, path: &str, limits: &Limits) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let plain = match response.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(v) => v.to_str().is_ok_and(|v| v.starts_with("text/plain")),
    };
    // Only the body limits answer 413, and the JSON extractor passes on
    // axum's terse text: give every 413 the limits themselves.
    if !plain && status != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let original = axum::body::to_bytes(body, MAX_PLAIN_ERROR)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let mib = |bytes: usize| bytes >> 20;
    let message = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "the request body is larger than the server accepts: packs up to {} MiB, snapshots up to {} MiB, other requests up to {} MiB; Tidemark's own clients stay within these, so update the client or report this",
            mib(limits.max_pack),
            mib(limits.max_snapshot),
            mib(limits.max_json)
        ),
        // axum adds the Allow header after this layer, so the methods
        // cannot be named here.
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "{method} is not allowed on {path}; the Allow header lists the methods it takes, and /v1/openapi.json describes the API"
        ),
        StatusCode::NOT_FOUND if original.is_empty() => {
            format!("nothing at {path}; the API is described at /v1/openapi.json")
        }
        _ if !original.is_empty() => original,
        _ => format!(
            "{}: the server could not handle this request; see /v1/openapi.json",
            status.canonical_reason().unwrap_or("error")
        ),
    };
    let json = error(status, message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let (json_parts, json_body) = json.into_parts();
    parts.headers.extend(json_parts.headers);
    Response::from_parts(parts, json_body)
}

/// The body stopped arriving; see [`BODY_MIN_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving")]
struct BodyStalled;

/// A request body that fails with [`BodyStalled`] when fewer than
/// `min_bytes` arrive within any `window`. The window starts when the
/// handler first reads the body (not when the head arrived), and restarts
/// each time `min_bytes` have come.
struct Paced {
    inner: Body,
    window: Duration,
    min_bytes: u64,
    since_restart: u64,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    stalled: Arc<AtomicBool>,
}

impl Paced {
    fn new(inner: Body, window: Duration, min_bytes: u64, stalled: Arc<AtomicBool>) -> Self {
        Paced {
            inner,
            window,
            min_bytes,
            since_restart: 0,
            deadline: None,
            stalled,
        }
    }
}

impl HttpBody for Paced {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.stalled.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(axum::Error::new(BodyStalled))));
        }
        let window = this.window;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(window)));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.since_restart += data.len() as u64;
                    if this.since_restart >= this.min_bytes {
                        this.since_restart = 0;
                        deadline
                            .as_mut()
                            .reset(tokio::time::Instant::now() + this.window);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    this.stalled.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(axum::Error::new(BodyStalled))))
                } else {
                    Poll::Pending
                }
            }
            done => done,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Instant;

    /// Frames from a channel, as a body.
    struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

    impl HttpBody for Channel {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    /// A body that yields `chunk` bytes every `every`, `n` times.
    fn paced_stream(chunk: usize, every: Duration, n: usize) -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..n {
                tokio::time::sleep(every).await;
                if tx.send(Bytes::from(vec![7u8; chunk])).await.is_err() {
                    return;
                }
            }
        });
        Body::new(Channel(rx))
    }

    #[tokio::test]
    async fn a_trickling_body_is_cut_after_one_window() {
        // One byte every 50 ms: progress, but far below 4 KiB a second.
        let stalled = Arc::new(AtomicBool::new(false));
        let body = Paced::new(
            paced_stream(1, Duration::from_millis(50), 1000),
            Duration::from_secs(1),
            4096,
            stalled.clone(),
        );
        let started = Instant::now();
        let result = body.collect().await;
        assert!(result.is_err(), "a trickle must fail");
        assert!(stalled.load(Ordering::Relaxed));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(5),
            "cut after {took:?}"
        );
    }

    #[tokio::test]
    async fn a_slow_but_steady_body_passes_whatever_its_total_time() {
        // 4 KiB every 100 ms for 3 s: three windows long in total, yet
        // every window sees its 4 KiB ten times over.
        let stalled = Arc::new(AtomicBool::new(false));
        let body = Paced::new(
            paced_stream(4096, Duration::from_millis(100), 30),
            Duration::from_secs(1),
            4096,
            stalled.clone(),
        );
        let bytes = body
            .collect()
            .await
            .expect("a steady body passes")
            .to_bytes();
        assert_eq!(bytes.len(), 30 * 4096);
        assert!(!stalled.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_stalled_body_gets_a_json_408_and_a_closed_connection() {
        use axum::routing::post;
        use tower::ServiceExt;
        let guard = Guard {
            limits: Limits::default(),
            window: Duration::from_secs(1),
            min_bytes: 4096,
        };
        let app = axum::Router::new()
            .route(
                "/",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::from_fn_with_state(guard, super::guard));

        // One byte, then nothing more while the sender is kept.
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        tx.send(Bytes::from_static(b"{")).await.expect("send");
        let body = Body::new(Channel(rx));
        let req = Request::post("/").body(body).expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(10), app.clone().oneshot(req))
            .await
            .expect("answered by the window, not by this timeout")
            .expect("infallible");
        drop(tx);
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        let json: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.expect("body").to_bytes())
                .expect("JSON");
        assert!(json["error"]
            .as_str()
            .expect("message")
            .contains("stopped arriving"));

        // A body that arrives at once is untouched.
        let req = Request::post("/")
            .body(Body::from("hello"))
            .expect("request");
        let resp = app.oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
