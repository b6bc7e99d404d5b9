//! Secrets survive a reboot: a repository password and a device enrolment
//! kept by the agent are still there after the machine "restarts", and a
//! secret an older version left in the kernel key store is moved to the
//! Secret Service on first read.
//!
//! The test bed: a private D-Bus session bus and GNOME Keyring's Secret
//! Service on it (`gnome-keyring-daemon --unlock`, its collection a file
//! under a throwaway XDG_DATA_HOME), both started and ended here by pid. A
//! reboot is: end the keyring daemon, drop this test's keys from the
//! kernel key store (session and persistent keyrings: what a reboot wipes),
//! start the daemon again over the same collection file.
//!
//! One test in this binary on purpose: it points the whole process at its
//! own session bus (DBUS_SESSION_BUS_ADDRESS).

#![allow(clippy::unwrap_used)]

use agent::{Agent, Destination, OwnStorageSetup, Paths};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the keyring crate names a kernel key (`keyring-rs:USER@SERVICE`).
fn kernel_description(name: &str) -> String {
    format!("keyring-rs:{name}@tidemark")
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is missing: install gnome-keyring, dbus-bin and keyutils (make test-deps does)"
    );
}

struct SecretService {
    root: PathBuf,
    bus: Child,
    address: String,
    daemon: Option<Child>,
}

impl SecretService {
    fn start(root: &Path) -> SecretService {
        for t in ["dbus-daemon", "dbus-send", "gnome-keyring-daemon", "keyctl"] {
            need(t);
        }
        let run = root.join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let address = format!("unix:path={}", root.join("bus").display());
        let bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--address", &address])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut s = SecretService {
            root: root.to_path_buf(),
            bus,
            address,
            daemon: None,
        };
        s.wait_for("the session bus", "org.freedesktop.DBus");
        s.start_daemon();
        s
    }

    /// GNOME Keyring on the bus, its login collection unlocked with a
    /// known password (created on the first start, opened after).
    fn start_daemon(&mut self) {
        let mut d = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("HOME", &self.root)
            .env("XDG_DATA_HOME", self.root.join("data"))
            .env("XDG_RUNTIME_DIR", self.root.join("run"))
            .env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = d.stdin.take().unwrap();
        stdin.write_all(b"keyring password").unwrap();
        drop(stdin);
        self.daemon = Some(d);
        self.wait_for("GNOME Keyring's Secret Service", "org.freedesktop.secrets");
    }

    fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        assert!(
            !self.has_owner("org.freedesktop.secrets"),
            "the daemon ended"
        );
    }

    fn has_owner(&self, name: &str) -> bool {
        let out = Command::new("dbus-send")
            .args([
                &format!("--bus={}", self.address),
                "--print-reply",
                "--dest=org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.NameHasOwner",
                &format!("string:{name}"),
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("boolean true")
            || (name == "org.freedesktop.DBus" && out.status.success())
    }

    fn wait_for(&self, what: &str, name: &str) {
        let end = Instant::now() + Duration::from_secs(20);
        while !self.has_owner(name) {
            assert!(Instant::now() < end, "{what} did not start within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// End the keyring, wipe what a reboot wipes, start it again.
    fn reboot(&mut self, names: &[&str]) {
        self.stop_daemon();
        forget_kernel_keys(names);
        self.start_daemon();
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// Removes this test's keys from the kernel key store: each is looked up
/// through the session keyring (which links the persistent one) and
/// invalidated, which unlinks it from every keyring. Only keys named by
/// this test's unique names are touched, never anyone else's.
fn forget_kernel_keys(names: &[&str]) {
    // A process without a session keyring of its own (a test run outside
    // a login session) uses the user-session keyring: look in both.
    let find = |name: &str| {
        ["@s", "@us"].iter().find_map(|ring| {
            let out = Command::new("keyctl")
                .args(["search", ring, "user", &kernel_description(name)])
                .output()
                .unwrap();
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
    };
    for name in names {
        for _ in 0..10 {
            let Some(id) = find(name) else { break };
            let ok = Command::new("keyctl")
                .args(["invalidate", &id])
                .status()
                .unwrap();
            assert!(ok.success(), "keyctl invalidate {id}");
        }
        assert!(find(name).is_none(), "the kernel still holds {name}");
    }
}

/// Puts this thread (and the processes it starts) in a new, empty session
/// keyring, as a login does, so the kernel store behaves as on a desktop
/// and nothing here touches the keyrings of whoever runs the test.
#[allow(unsafe_code)]
fn join_new_session_keyring() {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, NULL) takes no pointer to
    // memory of ours; it only replaces this thread's session keyring.
    let id = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    assert!(
        id > 0,
        "cannot join a new session keyring: {}",
        std::io::Error::last_os_error()
    );
}

fn start_agent(root: &Path) -> Agent {
    Agent::start(Paths::under(&root.join("agent")), Arc::new(|_| {})).unwrap()
}

/// A loopback HTTP server that answers one enrolment as a company server
/// would (the repository parameters of a real repository).
fn fake_enrolment_server(root: &Path) -> (String, std::thread::JoinHandle<()>) {
    let storage = storage::open(&root.join("server-repo").to_string_lossy()).unwrap();
    let opts = repository::OpenOptions::default();
    let repo = repository::Repository::init(
        storage,
        b"server password",
        &repository::InitOptions {
            kdf: crypto::KdfParams {
                m_cost: 256,
                ..Default::default()
            },
            ..Default::default()
        },
        &opts,
    )
    .unwrap();
    let body = serde_json::json!({
        "token": "device-token-1234",
        "device_id": 7,
        "user": "alice",
        "admin": false,
        "keys": "00",
        "repository": repo.config(),
    })
    .to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        // Headers, then the small JSON body the client sends.
        while !String::from_utf8_lossy(&req).contains("\"device_name\"") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed early");
            req.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&req).starts_with("POST /v1/enroll "));
        write!(
            c,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    (url, t)
}

#[test]
fn secrets_survive_a_reboot_and_old_kernel_secrets_move_to_the_secret_service() {
    join_new_session_keyring();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut ss = SecretService::start(&root.join("keyring"));
    std::env::set_var("DBUS_SESSION_BUS_ADDRESS", &ss.address);

    // Own storage, set up as the wizard does (no file: the keyring).
    let repo_dir = root.join("usb/backup");
    let data = root.join("Documents");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.txt"), "hello").unwrap();
    let agent = start_agent(root);
    let done = agent
        .setup_own_storage(OwnStorageSetup {
            destination: Destination::Folder {
                path: repo_dir.to_string_lossy().into(),
            },
            password: "correct horse battery".into(),
            create: true,
            recovery_key: false,
            password_file: None,
        })
        .unwrap();
    assert_eq!(done.password_stored_in, "keyring");
    let location = done.location.clone();

    // A company device, enrolled.
    let (url, server) = fake_enrolment_server(root);
    let paths = Paths::under(&root.join("agent"));
    let e = agent::device::enroll(&paths, &url, "CODE-1", "laptop", None).unwrap();
    server.join().unwrap();
    drop(agent);

    // An older version's secret: only in the kernel key store.
    let old_location = format!("{}/older", root.display());
    let old_name = format!("repository:{old_location}");
    // (Written as the keyring crate's kernel store writes, into the
    // session keyring; not linked into the persistent keyring, which some
    // systems refuse.)
    let mut old =
        keyring::keyutils::KeyutilsCredential::new_with_target(None, "tidemark", &old_name)
            .unwrap();
    old.persistent = None;
    keyring::Entry::new_with_credential(Box::new(old))
        .set_password("older password")
        .unwrap();
    // Read once (as the agent does on start): moved to the Secret Service.
    assert_eq!(
        &agent::secrets::stored_password(&old_location).unwrap()[..],
        b"older password"
    );

    let repo_name = format!("repository:{location}");
    let device_name = format!("device:{url}");
    ss.reboot(&[&repo_name, &device_name, &old_name]);

    // After the reboot: the password opens the repository without asking.
    assert_eq!(
        &agent::secrets::password_for(&location, None).unwrap()[..],
        b"correct horse battery"
    );
    let agent = start_agent(root);
    agent.repository().unwrap();
    drop(agent);
    // Still enrolled.
    let (_, info) = agent::device::client(&paths, &url).unwrap();
    assert_eq!(info.user, "alice");
    // The older secret moved and lasts.
    assert_eq!(
        &agent::secrets::stored_password(&old_location).unwrap()[..],
        b"older password"
    );
    // And a second reboot changes nothing.
    ss.reboot(&[&repo_name, &device_name, &old_name]);
    assert!(agent::secrets::stored_password(&location).is_some());
    agent::device::client(&paths, &url).unwrap();
    // What the CLI prints says where the secret went.
    assert!(
        e.secret_stored_in.contains("Secret Service"),
        "{}",
        e.secret_stored_in
    );
}
