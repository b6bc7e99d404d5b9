//! From download to protected, with no administrator: the company server's
//! download page serves the per-user installer and a signed enrolment file;
//! the installer puts Tidemark into a fresh HOME; its first start enrols and
//! backs up; uninstalling leaves nothing but the backups. A tampered
//! enrolment file enrols nothing.

use super::server::{curl, start, Running};
use super::support::{tidemark, workdir};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Runs the installer as the user of `home`, with `args`.
fn sh(script: &Path, home: &Path, args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg(script)
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("run sh")
}

/// The administrator's device, enrolled with the server's first code.
fn enrolled_admin(work: &Path, s: &Running) -> test_support::Tidemark {
    let dir = work.join("admin");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let admin = tidemark(&dir)
        .with_repo(s.url())
        .with_env("TIDEMARK_DEVICE_SECRET_FILE", dir.join("device.secret"));
    admin.ok(&[
        "enroll",
        &s.url(),
        s.ready["admin_code"].as_str().expect("code"),
    ]);
    admin
}

fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(root).expect("below").display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn download_install_enrol_back_up_and_uninstall_in_a_fresh_home() {
    let work = workdir();
    let downloads = work.path().join("downloads");
    std::fs::create_dir_all(&downloads).expect("mkdir");
    std::fs::copy(env!("CARGO_BIN_EXE_tidemark"), downloads.join("tidemark")).expect("copy");
    let icon = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../icons/128x128.png");
    std::fs::copy(&icon, downloads.join("tidemark.png")).expect("copy the icon");
    let data = work.path().join("server");
    let s = start(
        work.path(),
        &data,
        &["--downloads", downloads.to_str().expect("utf-8")],
    );
    let url = s.url();
    let admin = enrolled_admin(work.path(), &s);
    admin.ok(&["admin", "add-user", "ann"]);
    let policy = work.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"folders": ["~/Work"], "every_minutes": 60, "continuous": false}"#,
    )
    .expect("write");
    admin.ok(&["admin", "policy", policy.to_str().expect("utf-8")]);
    let made = admin.json(&["admin", "code", "ann", "--uses", "1"]);
    let code = made["code"].as_str().expect("code").to_string();
    // The line the admin mails: it pins the server's public key.
    let install = made["install"].as_str().expect("install line").to_string();
    let pin = install
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sha256//"))
        .unwrap_or_else(|| panic!("no key pin in {install:?}"))
        .to_string();
    assert_eq!(
        install,
        format!("curl -fsSk --pinnedpubkey sha256//{pin} {url}/download/{code}/install.sh | sh")
    );

    // Ann's new laptop: an empty home with her work in it.
    let ann_work = work.path().join("ann");
    let home = ann_work.join("home");
    let docs = home.join("Work");
    std::fs::create_dir_all(docs.join("plans")).expect("mkdir");
    std::fs::write(docs.join("plans/q1.txt"), "first quarter").expect("write");
    std::fs::write(docs.join("notes.md"), "# notes\n").expect("write");
    let started = Instant::now();
    let (ok, page) = curl(&["-k", &format!("{url}/download/{code}")]);
    assert!(ok && page.contains("Tidemark for ann"), "{page}");
    assert!(
        page.contains(&install),
        "the page shows the pinned line: {page}"
    );
    let script = work.path().join("install.sh");
    let pinned = format!("sha256//{pin}");
    let (ok, body) = curl(&[
        "-k",
        "--pinnedpubkey",
        &pinned,
        &format!("{url}/download/{code}/install.sh"),
    ]);
    assert!(ok && body.starts_with("#!/bin/sh"), "{body}");
    assert!(body.contains(&format!("TIDEMARK_PIN='{pin}'")), "{body}");
    // Anyone else's key (a machine in the middle) is refused.
    let other = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let (ok, _) = curl(&[
        "-k",
        "--pinnedpubkey",
        other,
        &format!("{url}/download/{code}/install.sh"),
    ]);
    assert!(!ok, "a download under another key must fail");
    std::fs::write(&script, &body).expect("save the installer");
    let out = sh(&script, &home, &[]);
    assert!(
        out.status.success(),
        "install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = files_under(&home);
    for f in [
        ".local/bin/tidemark",
        ".local/share/applications/tidemark.desktop",
        ".local/share/icons/hicolor/128x128/apps/tidemark.png",
        ".config/autostart/tidemark.desktop",
        ".config/tidemark/org-signing.pub",
        ".config/tidemark/enrolment.tidemark",
    ] {
        assert!(
            installed.iter().any(|i| i == f),
            "{f} missing: {installed:?}"
        );
    }
    let autostart =
        std::fs::read_to_string(home.join(".config/autostart/tidemark.desktop")).expect("read");
    assert!(
        autostart.contains(&format!(
            "Exec={}/.local/bin/tidemark agent --background",
            home.display()
        )),
        "{autostart}"
    );

    // First start of the installed program: enrols without a question and
    // backs up the folders the organisation's policy names.
    let secret = (
        "TIDEMARK_DEVICE_SECRET_FILE",
        ann_work.join("device.secret"),
    );
    let installed_tidemark =
        test_support::Tidemark::new(home.join(".local/bin/tidemark"), &ann_work)
            .with_env(secret.0, &secret.1);
    let out = installed_tidemark.run(&["agent", "--once"]);
    assert_eq!(out.code, Some(0), "first start: {}", out.printed());
    let ann = tidemark(&ann_work)
        .with_repo(&url)
        .with_env(secret.0, &secret.1);
    let took = started.elapsed();
    eprintln!(
        "download → first committed backup: {:.1} s",
        took.as_secs_f64()
    );
    let devices = admin.json(&["admin", "devices"]);
    assert!(devices.to_string().contains("\"ann\""), "{devices}");
    let snaps = ann.ok(&["snapshots", "--json"]).json();
    assert_eq!(snaps.as_array().map(Vec::len), Some(1), "{snaps}");
    let target = work.path().join("restored");
    ann.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
    ]);
    let back = target.join(docs.strip_prefix("/").expect("absolute"));
    assert_eq!(
        std::fs::read_to_string(back.join("plans/q1.txt")).expect("restored"),
        "first quarter"
    );
    assert!(
        home.join(".config/tidemark/enrolment.tidemark.used")
            .exists(),
        "the enrolment file is put aside once used"
    );

    // Updates: the server offers a newer build signed with the
    // organisation key; an admin's pin holds it back; a per-user install
    // replaces its program; an offer under another key is refused.
    let installed = home.join(".local/bin/tidemark");
    let mut newer = std::fs::read(&installed).expect("read");
    newer.extend_from_slice(b"\0tidemark 9.9.9");
    std::fs::write(downloads.join("tidemark"), &newer).expect("write");
    std::fs::write(downloads.join("VERSION"), "9.9.9\n").expect("write");
    let offered = installed_tidemark.run(&["--json", "update", "--check"]);
    assert_eq!(offered.code, Some(0), "{}", offered.printed());
    assert_eq!(offered.json()["offered"], "9.9.9", "{}", offered.printed());
    std::fs::write(
        &policy,
        r#"{"folders": ["~/Work"], "app_version": "0.1.0"}"#,
    )
    .expect("write");
    admin.ok(&["admin", "policy", policy.to_str().expect("utf-8")]);
    let pinned = installed_tidemark.run(&["--json", "update", "--check"]);
    assert!(
        pinned.json()["offered"].is_null(),
        "a pinned version is not offered: {}",
        pinned.printed()
    );
    std::fs::write(&policy, r#"{"folders": ["~/Work"]}"#).expect("write");
    admin.ok(&["admin", "policy", policy.to_str().expect("utf-8")]);
    let key_file = home.join(".config/tidemark/org-signing.pub");
    let good_key = std::fs::read_to_string(&key_file).expect("key");
    std::fs::write(&key_file, "ab".repeat(32)).expect("write");
    let refused = installed_tidemark.run(&["update"]);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused
            .printed()
            .contains("not signed by your organisation's key"),
        "{}",
        refused.printed()
    );
    assert_ne!(
        std::fs::read(&installed).expect("read"),
        newer,
        "a refused update changed the program"
    );
    std::fs::write(&key_file, good_key).expect("write");
    // The agent as it runs after login, with "Back up now" pending and an
    // update check due: it backs up, installs the update after the backup,
    // and restarts into it at once.
    let state_file = home.join(".local/share/tidemark/agent-state.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).expect("the agent's state"))
            .expect("state JSON");
    state["requested"] = true.into();
    state["last_update_check"] = serde_json::Value::Null;
    std::fs::write(&state_file, state.to_string()).expect("write");
    let log = ann_work.join("agent.log");
    let mut running = KillOnDrop(installed_tidemark.spawn(&["agent"], &log));
    let running = &mut running.0;
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("updated to 9.9.9; restarting into it")
    {
        assert!(
            running.try_wait().expect("poll").is_none() && Instant::now() < deadline,
            "the agent did not restart into the update: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        std::fs::read(&installed).expect("read"),
        newer,
        "the update was not installed"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        running.try_wait().expect("poll").is_none(),
        "the restarted agent ended: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Same process, new program: before the restart the kernel named the
    // replaced image "(deleted)".
    let exe = std::fs::read_link(format!("/proc/{}/exe", running.id())).expect("exe");
    assert_eq!(exe, installed, "the agent runs the installed update");
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).expect("state")).expect("JSON");
    assert_eq!(after["installed_update"], "9.9.9", "{after}");
    running.kill().expect("kill");
    running.wait().expect("wait");

    // Uninstall keeps settings; --purge leaves nothing of Tidemark in HOME;
    // the backup stays on the server.
    let out = sh(&script, &home, &["--uninstall"]);
    assert!(out.status.success());
    let left = files_under(&home);
    assert!(
        !left.iter().any(|f| f.starts_with(".local/bin/")
            || f.contains("tidemark.desktop")
            || f.ends_with("tidemark.png")),
        "{left:?}"
    );
    assert!(
        left.iter().any(|f| f == ".config/tidemark/agent.toml"),
        "{left:?}"
    );
    let out = sh(&script, &home, &["--uninstall", "--purge"]);
    assert!(out.status.success());
    let left = files_under(&home);
    assert!(
        !left.iter().any(|f| f.contains("tidemark")),
        "left behind: {left:?}"
    );
    // The first backup and the one before the update.
    let snaps = admin.json(&["admin", "snapshots", "--user", "ann"]);
    assert_eq!(snaps.as_array().map(Vec::len), Some(2), "{snaps}");
}

#[test]
fn a_tampered_or_foreign_enrolment_file_enrols_nothing() {
    let work = workdir();
    let data = work.path().join("server");
    let s = start(work.path(), &data, &[]);
    let url = s.url();
    let admin = enrolled_admin(work.path(), &s);
    let code = admin.json(&["admin", "code", "admin", "--uses", "1"])["code"]
        .as_str()
        .expect("code")
        .to_string();
    let (ok, key) = curl(&["-k", &format!("{url}/v1/org-key")]);
    assert!(ok, "{key}");
    let key: serde_json::Value = serde_json::from_str(&key).expect("json");
    let (ok, file) = curl(&["-k", &format!("{url}/download/{code}/enrolment.tidemark")]);
    assert!(ok, "{file}");
    let mut f: serde_json::Value = serde_json::from_str(&file).expect("json");
    // The admin's own `last_seen` moves with every call it makes, so the
    // comparison is of who is enrolled, not of the whole rows.
    let enrolled = || -> Vec<(serde_json::Value, serde_json::Value, serde_json::Value)> {
        let list = admin.json(&["admin", "devices"]);
        list.as_array()
            .expect("device list")
            .iter()
            .map(|d| (d["id"].clone(), d["name"].clone(), d["user"].clone()))
            .collect()
    };
    let devices_before = enrolled();

    let eve_work = work.path().join("eve");
    let conf = eve_work.join("home/.config/tidemark");
    std::fs::create_dir_all(&conf).expect("mkdir");
    std::fs::write(
        conf.join("org-signing.pub"),
        key["public_key"].as_str().expect("key"),
    )
    .expect("write");
    // Pointed at another server: the signature no longer holds.
    f["server"] = serde_json::Value::String("https://127.0.0.1:9".into());
    std::fs::write(conf.join("enrolment.tidemark"), f.to_string()).expect("write");
    let eve = tidemark(&eve_work).with_env(
        "TIDEMARK_DEVICE_SECRET_FILE",
        eve_work.join("device.secret"),
    );
    let out = eve.run(&["agent", "--once"]);
    assert_ne!(out.code, Some(0));
    assert!(
        out.printed().contains("not signed by your organisation"),
        "{}",
        out.printed()
    );
    assert!(!conf.join("agent.toml").exists(), "nothing may be set up");
    assert_eq!(enrolled(), devices_before);
    // The link itself is refused once the code is gone.
    let (_, body) = curl(&[
        "-k",
        &format!("{url}/download/NOT-A-CODE/enrolment.tidemark"),
    ]);
    assert!(body.contains("unknown, used up or expired"), "{body}");
}

/// A child that a failing assertion must not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
