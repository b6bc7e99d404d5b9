//! `tidemark server` as a real process on a real socket: it starts on an
//! empty data folder, makes its certificate, prints where it listens, its
//! fingerprint and the first admin code, answers over HTTPS with that
//! certificate, and keeps its state across a kill -9.

use super::support::{tidemark, workdir};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Running {
    child: Child,
    ready: serde_json::Value,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(work: &Path, data: &Path, extra: &[&str]) -> Running {
    let mut args = vec![
        "--json",
        "server",
        "--data",
        data.to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--kdf-memory",
        "256",
    ];
    args.extend_from_slice(extra);
    let mut child = tidemark(work)
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tidemark server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the ready line");
    let ready = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the server's first line is not JSON ({e}): {line:?}"));
    Running { child, ready }
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed by `make test-deps`");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn https_server_starts_prints_its_code_and_survives_kill_9() {
    let work = workdir();
    let data = work.path().join("server");
    let s = start(work.path(), &data, &[]);
    let url = s.ready["listening"]
        .as_str()
        .expect("listening")
        .to_string();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let fp = s.ready["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    assert_eq!(fp.len(), 32 * 3 - 1, "SHA-256 as colon-separated hex: {fp}");
    let code = s.ready["admin_code"]
        .as_str()
        .expect("first admin code")
        .to_string();

    // Without the certificate, TLS verification fails; with it, it works.
    let (ok, _) = curl(&[&format!("{url}/v1/openapi.json")]);
    assert!(
        !ok,
        "a self-signed certificate must not pass default verification"
    );
    let cacert = data.join("tls/cert.pem");
    let ca = cacert.to_str().expect("utf-8");
    let (ok, body) = curl(&["--cacert", ca, &format!("{url}/v1/openapi.json")]);
    assert!(ok && body.contains("\"openapi\""), "{body}");

    // Enrol the admin over HTTPS, then kill -9 and start again.
    let (ok, body) = curl(&[
        "--cacert",
        ca,
        "-H",
        "content-type: application/json",
        "-d",
        &format!(r#"{{"code":"{code}","device_name":"admin"}}"#),
        &format!("{url}/v1/enroll"),
    ]);
    assert!(ok, "{body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    drop(s); // SIGKILL

    let s = start(work.path(), &data, &[]);
    assert!(
        s.ready["admin_code"].is_null(),
        "no new admin code after a restart"
    );
    assert_eq!(
        s.ready["fingerprint"].as_str(),
        Some(fp.as_str()),
        "same certificate"
    );
    let url = s.ready["listening"].as_str().expect("listening");
    let (ok, body) = curl(&[
        "--cacert",
        ca,
        "-H",
        &format!("authorization: Bearer {token}"),
        &format!("{url}/v1/whoami"),
    ]);
    assert!(ok && body.contains("\"admin\":true"), "{body}");
}

#[test]
fn plain_http_is_refused_off_loopback() {
    let work = workdir();
    let out = tidemark(work.path())
        .command(&[
            "server",
            "--data",
            work.path().join("s").to_str().expect("utf-8"),
            "--listen",
            "0.0.0.0:0",
            "--insecure-http",
            "--kdf-memory",
            "256",
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("only for tests on a loopback address"),
        "{err}"
    );
}
