//! The server under abuse, as real processes: twenty devices backing up at
//! once while thousands of malformed requests arrive, and a kill -9 in the
//! middle of uploads. It must keep serving, answer garbage with 4xx, and
//! lose nothing committed; its own repository must verify afterwards.

use super::server::start;
use super::support::{tidemark, workdir};
use rand::{Rng, SeedableRng};
use std::path::Path;
use test_support::compare::{assert_same_tree, CompareOptions};
use test_support::{noise, Tidemark};

fn device(work: &Path, name: &str, url: &str) -> Tidemark {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    tidemark(&dir)
        .with_repo(url)
        .with_env("TIDEMARK_DEVICE_SECRET_FILE", dir.join("device.secret"))
}

fn write_tree(root: &Path, seed: u64, shared: &[u8]) {
    std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
    std::fs::write(root.join("shared.bin"), shared).expect("write");
    std::fs::write(root.join("a/own.bin"), noise(seed, 120_000)).expect("write");
    std::fs::write(
        root.join("a/b/note.txt"),
        format!("device {seed}\n").repeat(50),
    )
    .expect("write");
}

/// The server's own repository, checked with the CLI and the server's secret.
fn verify_server_repository(work: &Path, data: &Path) {
    let out = tidemark(work)
        .with_repo(data.join("repository"))
        .with_password(None)
        .with_env("TIDEMARK_PASSWORD_FILE", data.join("server.secret"))
        .run(&["verify", "--read-data"]);
    assert_eq!(
        out.code,
        Some(0),
        "server repository does not verify:\n{}",
        out.printed()
    );
}

fn garbage_requests(url: &str, token: &str, n: usize, seed: u64) -> (usize, Vec<String>) {
    client::install_crypto_provider();
    let http = reqwest::blocking::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let mut rng = test_support::TestRng::seed_from_u64(seed);
    let paths = [
        "/v1/enroll",
        "/v1/chunks/query",
        "/v1/chunks/prove",
        "/v1/packs/0000000000000000000000000000000000000000000000000000000000000000",
        "/v1/packs/zz",
        "/v1/blobs/1111111111111111111111111111111111111111111111111111111111111111",
        "/v1/snapshots",
        "/v1/snapshots/abc",
        "/v1/admin/users",
        "/v1/admin/codes",
        "/v1/admin/devices/9/revoke",
        "/v1/nowhere",
    ];
    let mut client_errors = 0;
    let mut bad = Vec::new();
    for _ in 0..n {
        let path = paths[rng.gen_range(0..paths.len())];
        let len = rng.gen_range(0..4096);
        let mut body: Vec<u8> = (0..len).map(|_| rng.gen::<u8>()).collect();
        if rng.gen_bool(0.3) {
            body = br#"{"ids": ["#.to_vec();
        }
        let req = match rng.gen_range(0..4) {
            0 => http.get(format!("{url}{path}")),
            1 => http.put(format!("{url}{path}")),
            2 => http.delete(format!("{url}{path}")),
            _ => http.post(format!("{url}{path}")),
        };
        let req = if rng.gen_bool(0.5) {
            req.bearer_auth(token)
        } else {
            req
        };
        match req.body(body).send() {
            Ok(r) if r.status().is_client_error() => client_errors += 1,
            Ok(r) if r.status().is_success() => {}
            Ok(r) => bad.push(format!("{path}: {}", r.status())),
            Err(e) => bad.push(format!("{path}: {e}")),
        }
    }
    (client_errors, bad)
}

#[test]
fn twenty_devices_at_once_under_a_storm_of_malformed_requests() {
    let work = workdir();
    let data = work.path().join("server");
    let mut s = start(work.path(), &data, &[]);
    let url = s.url();
    let admin = device(work.path(), "admin", &url);
    admin.ok(&[
        "enroll",
        &url,
        s.ready["admin_code"].as_str().expect("code"),
    ]);
    admin.ok(&["admin", "add-user", "staff"]);
    let code = admin.json(&["admin", "code", "staff", "--uses", "21"])["code"]
        .as_str()
        .expect("code")
        .to_string();
    // The storm uses an ordinary device's token: an admin token would
    // (rightly) revoke devices when it hits the revoke endpoint.
    let fuzzer = device(work.path(), "fuzzer", &url);
    fuzzer.ok(&["enroll", &url, &code]);
    let token = std::fs::read_to_string(work.path().join("fuzzer/device.secret")).expect("secret");
    let token: serde_json::Value = serde_json::from_str(&token).expect("json");
    let token = token["token"].as_str().expect("token").to_string();

    let shared = noise(7, 400_000);
    let devices: Vec<(Tidemark, std::path::PathBuf)> = (0..20u64)
        .map(|i| {
            let name = format!("dev{i}");
            let t = device(work.path(), &name, &url);
            t.ok(&["enroll", &url, &code, "--device-name", &name]);
            let files = work.path().join(&name).join("files");
            write_tree(&files, i, &shared);
            (t, files)
        })
        .collect();

    let storm = {
        let (url, token) = (url.clone(), token.clone());
        std::thread::spawn(move || garbage_requests(&url, &token, 2000, 42))
    };
    // The admin prunes over and over while the twenty back up: each sweep
    // rewrites the whole index while packs arrive and snapshots commit.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = {
        let (admin, stop) = (admin.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = admin.run(&["admin", "prune"]);
                assert_eq!(out.code, Some(0), "prune failed:\n{}", out.printed());
                runs += 1;
            }
            runs
        })
    };
    let children: Vec<_> = devices
        .iter()
        .map(|(t, files)| {
            let log = files.with_extension("log");
            let host = files
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .expect("device folder");
            t.spawn(
                &["backup", "--host", host, files.to_str().expect("utf-8")],
                &log,
            )
        })
        .collect();
    for (i, mut c) in children.into_iter().enumerate() {
        let st = c.wait().expect("wait");
        let log = std::fs::read_to_string(devices[i].1.with_extension("log")).unwrap_or_default();
        assert!(st.success(), "device {i} backup failed: {log}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let prunes = pruner.join().expect("pruner thread");
    assert!(prunes >= 2, "only {prunes} prune(s) ran during the backups");
    let (client_errors, bad) = storm.join().expect("storm thread");
    assert!(
        bad.is_empty(),
        "answers that were neither 2xx nor 4xx: {bad:?}"
    );
    assert!(
        client_errors > 1000,
        "only {client_errors} garbage requests were refused"
    );
    assert!(
        s.child.try_wait().expect("poll").is_none(),
        "the server died"
    );

    for (i, (t, files)) in devices.iter().enumerate() {
        let target = work.path().join(format!("dev{i}/restore"));
        let host = format!("dev{i}");
        t.ok(&[
            "restore",
            "latest",
            "--host",
            &host,
            "--target",
            target.to_str().expect("utf-8"),
        ]);
        let restored = target.join(files.strip_prefix("/").expect("absolute"));
        assert_same_tree(files, &restored, &CompareOptions::default());
    }
    let snaps = admin.json(&["admin", "snapshots", "--user", "staff"]);
    assert_eq!(snaps.as_array().expect("array").len(), 20);
    drop(s);
    verify_server_repository(work.path(), &data);
}

/// A server on a fixed free port (so a restart keeps the enrolment valid)
/// and one enrolled laptop; returns the address, the server, the laptop and
/// the laptop's folder to back up.
fn restartable_server_and_laptop(
    work: &Path,
    data: &Path,
) -> (String, super::server::Running, Tidemark, std::path::PathBuf) {
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let s = start(work, data, &["--listen", &listen]);
    let url = s.url();
    let dev = device(work, "laptop", &url);
    dev.ok(&[
        "enroll",
        &url,
        s.ready["admin_code"].as_str().expect("code"),
    ]);
    (listen, s, dev, work.join("laptop/files"))
}

/// One more backup of `files`, a restore that must match it, then the
/// server is stopped and its repository must pass `verify --read-data`.
fn backup_restore_and_verify(
    work: &Path,
    data: &Path,
    server: super::server::Running,
    dev: &Tidemark,
    files: &Path,
) {
    dev.backup(&[files], &[]);
    let target = work.join("laptop/restore");
    dev.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    assert_same_tree(
        files,
        &target.join(files.strip_prefix("/").expect("absolute")),
        &CompareOptions::default(),
    );
    drop(server);
    verify_server_repository(work, data);
}

#[test]
fn kill_9_during_uploads_loses_nothing_committed() {
    let work = workdir();
    let data = work.path().join("server");
    let (listen, s, dev, files) = restartable_server_and_laptop(work.path(), &data);
    write_tree(&files, 1, &noise(9, 300_000));
    dev.backup(&[&files], &[]);
    let first = dev.snapshots();
    assert_eq!(first.len(), 1);

    // A big second backup; the server is killed while packs arrive.
    for i in 0..12u64 {
        std::fs::write(files.join(format!("big{i}.bin")), noise(50 + i, 2_000_000)).expect("write");
    }
    let log = work.path().join("laptop/backup2.log");
    let mut child = dev.spawn(&["backup", files.to_str().expect("utf-8")], &log);
    let mut rng = test_support::TestRng::seed_from_u64(3);
    std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(50..400)));
    drop(s); // SIGKILL
    let _ = child.wait();

    // Restarted on the same data: the committed snapshot is intact, the
    // next backup completes, and everything restores and verifies.
    let s = start(work.path(), &data, &["--listen", &listen]);
    assert_eq!(s.url(), format!("https://{listen}"));
    let snaps = dev.snapshots();
    assert!(
        snaps.iter().any(|v| v["id"] == first[0]["id"]),
        "the committed snapshot is gone"
    );
    backup_restore_and_verify(work.path(), &data, s, &dev, &files);
}

/// Retention removes a snapshot, the server's online prune frees its data,
/// and a device that backs the same file up again must send it again: the
/// server no longer has it, whatever the ownership table or the device's
/// own index remembers.
#[test]
fn data_pruned_after_retention_is_sent_again_not_referenced() {
    let work = workdir();
    let data = work.path().join("server");
    let (_, s, dev, files) = restartable_server_and_laptop(work.path(), &data);
    write_tree(&files, 1, &noise(3, 200_000));
    let gone = noise(77, 1_500_000);
    std::fs::write(files.join("gone.bin"), &gone).expect("write");
    dev.backup(&[&files], &[]);
    // The daily prune sees gone.bin in a snapshot: from then on only
    // snapshots keep it, not the freshness of its upload.
    let r = dev.json(&["admin", "prune"]);
    assert_eq!(r["blobs_removed"], 0, "{r}");
    std::fs::remove_file(files.join("gone.bin")).expect("remove");
    dev.backup(&[&files], &[]);

    let policy = work.path().join("policy.json");
    std::fs::write(&policy, r#"{"retention": {"keep_last": 1}}"#).expect("write");
    dev.ok(&["admin", "policy", policy.to_str().expect("utf-8")]);
    let r = dev.json(&["admin", "retention"]);
    assert_eq!(r["removed"].as_array().expect("removed").len(), 1, "{r}");
    // Pruned while the server serves.
    let r = dev.json(&["admin", "prune"]);
    assert!(
        r["bytes_after"].as_u64().expect("bytes") + 1_000_000
            < r["bytes_before"].as_u64().expect("bytes"),
        "gone.bin's 1.5 MB of noise must be freed: {r}"
    );
    std::fs::write(files.join("gone.bin"), &gone).expect("write");
    backup_restore_and_verify(work.path(), &data, s, &dev, &files);
}
