//! `tidemark server` as a real process on a real socket: it starts on an
//! empty data folder, makes its certificate, prints where it listens, its
//! fingerprint and the first admin code, answers over HTTPS with that
//! certificate, and keeps its state across a kill -9.

use super::support::{tidemark, workdir};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use test_support::noise;

pub(super) struct Running {
    pub(super) child: Child,
    pub(super) ready: serde_json::Value,
}

impl Running {
    /// The address the server printed, e.g. `https://127.0.0.1:41234`.
    pub(super) fn url(&self) -> String {
        self.ready["listening"]
            .as_str()
            .expect("the server prints where it listens")
            .to_string()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn start(work: &Path, data: &Path, extra: &[&str]) -> Running {
    let mut args = vec![
        "--json",
        "server",
        "--data",
        data.to_str().expect("utf-8 path"),
        "--kdf-memory",
        "256",
    ];
    if !extra.contains(&"--listen") {
        args.extend_from_slice(&["--listen", "127.0.0.1:0"]);
    }
    args.extend_from_slice(extra);
    let child = tidemark(work)
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tidemark server");
    ready(child)
}

/// Waits for a started server's first line (where it listens, its code).
pub(super) fn ready(mut child: Child) -> Running {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the ready line");
    let ready = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("the server's first line is not JSON ({e}): {line:?}"));
    Running { child, ready }
}

pub(super) fn curl(args: &[&str]) -> (bool, String) {
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
    let url = s.url();
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

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Five laptops of five users share an OS-like common part and each has
/// its own files. Each backs up to one server in turn: the common part
/// crosses the network once, every laptop restores byte-identical, and the
/// bytes sent stay within 5% of the compressed unique data.
#[test]
fn fleet_of_five_sends_the_common_part_once() {
    use test_support::compare::{assert_same_tree, CompareOptions};
    let work = workdir();
    let data = work.path().join("server");
    let s = start(work.path(), &data, &[]);
    let url = s.url();
    let ca = data.join("tls/cert.pem");
    let scrape = std::fs::read_to_string(data.join("metrics.token")).expect("scrape token");
    let metrics = || {
        let (ok, body) = curl(&[
            "--cacert",
            ca.to_str().expect("utf-8"),
            "-H",
            &format!("Authorization: Bearer {}", scrape.trim()),
            &format!("{url}/metrics"),
        ]);
        assert!(ok, "{body}");
        body
    };
    // Without the scrape token the counters stay private.
    let (_, refused) = curl(&[
        "--cacert",
        ca.to_str().expect("utf-8"),
        &format!("{url}/metrics"),
    ]);
    assert!(refused.contains("scrape token"), "{refused}");

    let laptop = |name: &str| {
        let dir = work.path().join(name);
        tidemark(&dir)
            .with_repo(&url)
            .with_env("TIDEMARK_DEVICE_SECRET_FILE", dir.join("device.secret"))
    };
    let admin = laptop("admin");
    std::fs::create_dir_all(work.path().join("admin")).expect("mkdir");
    admin.ok(&[
        "enroll",
        &url,
        s.ready["admin_code"].as_str().expect("code"),
    ]);

    let common: Vec<(String, Vec<u8>)> = (0..6u64)
        .map(|i| {
            (
                format!("system/lib{i}.so"),
                noise(100 + i, 300_000 + 200_000 * i as usize),
            )
        })
        .collect();
    let common_bytes: usize = common.iter().map(|(_, d)| d.len()).sum();
    let own_bytes = 150_000 * 3;
    let mut sent_before = counter(&metrics(), "tidemark_pack_bytes_received_total");
    let mut sent = Vec::new();
    for n in 0..5u64 {
        let user = format!("user{n}");
        admin.ok(&["admin", "add-user", &user]);
        let code = admin.json(&["admin", "code", &user, "--uses", "1"])["code"]
            .as_str()
            .expect("code")
            .to_string();
        let dir = work.path().join(format!("laptop{n}"));
        let files = dir.join("files");
        for (rel, bytes) in &common {
            let p = files.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, bytes).expect("write");
        }
        for i in 0..3u64 {
            let p = files.join(format!("home/doc{i}.bin"));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, noise(1000 * (n + 1) + i, own_bytes / 3)).expect("write");
        }
        let t = laptop(&format!("laptop{n}"));
        t.ok(&[
            "enroll",
            &url,
            &code,
            "--device-name",
            &format!("laptop{n}"),
        ]);
        t.backup(&[&files], &[]);
        let now = counter(&metrics(), "tidemark_pack_bytes_received_total");
        sent.push(now - sent_before);
        sent_before = now;

        let target = dir.join("restore");
        t.ok(&[
            "restore",
            "latest",
            "--owners",
            "--target",
            target.to_str().expect("utf-8"),
        ]);
        let restored = target.join(files.strip_prefix("/").expect("absolute"));
        assert_same_tree(&files, &restored, &CompareOptions::default());
    }
    // Browsing works against the server as against own storage.
    let lap0 = laptop("laptop0");
    let found = lap0.json(&["find", "lib3.so"]);
    assert!(found.to_string().contains("system/lib3.so"), "{found}");
    let listed = lap0.run(&["ls", "latest"]).ok().stdout;
    assert!(listed.contains("home/doc2.bin"), "{listed}");
    let cat = lap0
        .command(&[
            "cat",
            &format!(
                "latest:{}",
                work.path().join("laptop0/files/system/lib1.so").display()
            ),
        ])
        .output()
        .expect("run cat");
    assert!(cat.status.success());
    assert!(cat.stdout == common[1].1, "cat prints the file's bytes");

    // A second backup of an unchanged laptop reads nothing and sends
    // nothing, though most of its chunks were granted by proof, not sent.
    let again = laptop("laptop1").backup(&[&work.path().join("laptop1/files")], &[]);
    assert_eq!(
        again["summary"]["bytes_read"],
        serde_json::json!(0),
        "{again}"
    );
    let after = counter(&metrics(), "tidemark_pack_bytes_received_total");
    assert!(
        after - sent_before < 4096,
        "an unchanged laptop sent {} B",
        after - sent_before
    );
    let usage = admin.json(&["admin", "usage"]);
    let stored = usage["stored_bytes"].as_u64().expect("stored_bytes");
    let total_sent: u64 = sent.iter().sum();
    eprintln!("fleet: common {common_bytes} B, own {own_bytes} B per laptop, sent per laptop {sent:?}, stored {stored} B");
    // Incompressible data: unique data is the common part once plus each
    // laptop's own files; trees and pack trailers are the overhead.
    let unique = (common_bytes + 5 * own_bytes) as u64;
    assert!(
        stored <= unique + unique / 20,
        "stored {stored} B for {unique} B of unique data"
    );
    assert!(
        total_sent <= stored + stored / 20,
        "sent {total_sent} B, stored {stored} B"
    );
    // The administrator restores user2's laptop on their behalf; it is
    // read-only and lands in the audit log. Nobody else may do it.
    let files2 = work.path().join("laptop2/files");
    let target = work.path().join("admin/restore-user2");
    admin.ok(&[
        "--as-user",
        "user2",
        "restore",
        "latest",
        "--owners",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    assert_same_tree(
        &files2,
        &target.join(files2.strip_prefix("/").expect("absolute")),
        &CompareOptions::default(),
    );
    let audit = admin.json(&["admin", "audit"]);
    assert!(
        audit
            .as_array()
            .expect("array")
            .iter()
            .any(|e| e["action"] == "restore on behalf"
                && e["detail"].as_str().is_some_and(|d| d.contains("user2"))),
        "{audit}"
    );
    let refused = laptop("laptop1").run(&["--as-user", "user2", "snapshots"]);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("administrator"),
        "{}",
        refused.stderr
    );
    let backup_as = admin.run(&[
        "--as-user",
        "user2",
        "backup",
        files2.to_str().expect("utf-8"),
    ]);
    assert_ne!(
        backup_as.code,
        Some(0),
        "on-behalf access must be read-only"
    );
    for (n, b) in sent.iter().enumerate().skip(1) {
        assert!(
            *b <= (own_bytes + own_bytes / 5) as u64,
            "laptop{n} sent {b} B though only its own {own_bytes} B were new"
        );
    }
}

/// "Restore from another device of mine" through the server: a user's new
/// laptop, enrolled with a code of its own, sees the old laptop's backups
/// (and no one else's) and restores them byte for byte.
#[test]
fn a_new_laptop_restores_the_old_ones_backup_through_the_server() {
    use test_support::compare::{assert_same_tree, CompareOptions};
    let work = workdir();
    let data = work.path().join("server");
    let s = start(work.path(), &data, &[]);
    let url = s.url();
    let device = |name: &str| {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        tidemark(&dir)
            .with_repo(&url)
            .with_env("TIDEMARK_DEVICE_SECRET_FILE", dir.join("device.secret"))
    };
    let admin = device("admin");
    admin.ok(&[
        "enroll",
        &url,
        s.ready["admin_code"].as_str().expect("code"),
    ]);
    let code = |user: &str| {
        admin.json(&["admin", "code", user, "--uses", "1"])["code"]
            .as_str()
            .expect("code")
            .to_string()
    };
    for user in ["ann", "bob"] {
        admin.ok(&["admin", "add-user", user]);
    }

    let old = device("old-laptop");
    old.ok(&["enroll", &url, &code("ann"), "--device-name", "old-laptop"]);
    let files = work.path().join("old-laptop/files");
    std::fs::create_dir_all(files.join("Documents/taxes")).expect("mkdir");
    std::fs::write(files.join("Documents/taxes/2025.pdf"), noise(5, 300_000)).expect("write");
    std::fs::write(files.join("Documents/letter.txt"), "Dear bank,\n").expect("write");
    old.ok(&[
        "backup",
        "--host",
        "old-laptop",
        files.to_str().expect("utf-8"),
    ]);
    // Bob's backup, from a host of the same name: never offered to Ann.
    let bob = device("bob-laptop");
    bob.ok(&["enroll", &url, &code("bob"), "--device-name", "bob-laptop"]);
    let bobs = work.path().join("bob-laptop/files");
    std::fs::create_dir_all(&bobs).expect("mkdir");
    std::fs::write(bobs.join("private.txt"), "bob's").expect("write");
    bob.ok(&[
        "backup",
        "--host",
        "old-laptop",
        bobs.to_str().expect("utf-8"),
    ]);

    let new = device("new-laptop");
    new.ok(&["enroll", &url, &code("ann"), "--device-name", "new-laptop"]);
    let snaps = new.json(&["snapshots"]);
    let snaps = snaps.as_array().expect("array");
    assert_eq!(snaps.len(), 1, "Ann's one backup, not Bob's: {snaps:?}");
    let target = work.path().join("new-laptop/restored");
    new.ok(&[
        "restore",
        "latest",
        "--host",
        "old-laptop",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let restored = target.join(files.strip_prefix("/").expect("absolute"));
    assert_same_tree(&files, &restored, &CompareOptions::default());
    assert!(
        !target
            .join(bobs.strip_prefix("/").expect("absolute"))
            .exists(),
        "Bob's files reached Ann's laptop"
    );
}
