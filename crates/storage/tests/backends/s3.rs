//! S3 against s3s-fs, a real S3 protocol server (SigV4 authentication,
//! XML listings, ranges) started inside this test process on its own tokio
//! runtime, storing objects in a temporary directory.

use std::path::Path;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use storage::{conformance, open, StorageError};
use tokio::runtime::Runtime;

const ACCESS_KEY: &str = "tidemark-test-access";
const SECRET_KEY: &str = "tidemark-test-secret-key";
const BUCKET: &str = "backups";

/// A running server; dropping it shuts its runtime down, which closes the
/// listener and every connection.
struct S3Server {
    runtime: Option<Runtime>,
    port: u16,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn start_s3(data: &Path) -> S3Server {
    std::fs::create_dir_all(data.join(BUCKET)).expect("create the bucket directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("server runtime");
    let fs = s3s_fs::FileSystem::new(data).expect("s3s-fs over the data directory");
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the S3 server to 127.0.0.1");
    let port = listener.local_addr().expect("address").port();
    runtime.spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    S3Server {
        runtime: Some(runtime),
        port,
    }
}

#[test]
fn s3_keeps_the_contract() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = start_s3(tmp.path());
    let url = format!(
        "s3://{BUCKET}/laptop/repo?endpoint=http://127.0.0.1:{}&region=us-east-1&path_style=true",
        server.port
    );

    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::remove_var("AWS_SESSION_TOKEN");
    let s = open(&url).expect("open s3");
    assert!(!s.location().contains(SECRET_KEY));
    let quirks = conformance::ServerQuirks {
        directories_look_like_objects: true,
    };
    conformance::run_all_with(s.as_ref(), quirks);

    // The prefix is honoured: objects land under it in the bucket.
    s.put("config", b"cfg").expect("put");
    assert_eq!(
        std::fs::read(tmp.path().join(BUCKET).join("laptop/repo/config")).expect("read"),
        b"cfg"
    );

    // Wrong credentials are permanent, never retried, never NotFound.
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "wrong-secret");
    let bad = open(&url).expect("open with a wrong secret");
    match bad.get("config") {
        Err(
            e @ StorageError::Io {
                retryable: false, ..
            },
        ) => {
            assert!(!e.to_string().contains("wrong-secret"), "{e}");
        }
        other => panic!("a wrong secret must be a permanent error, got {other:?}"),
    }
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);

    drop(s);
    drop(server);
}
