//! WebDAV against Apache httpd's mod_dav_fs with Basic authentication,
//! started by the test on 127.0.0.1 with its own configuration in a
//! temporary directory. Needs the Debian packages apache2-bin and
//! apache2-utils (for htpasswd).

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use storage::{conformance, open, StorageError};

use crate::support::{free_port, require, run, Server};

const INSTALL: &str = "apt-get install -y --no-install-recommends apache2-bin apache2-utils";
const USER: &str = "tidemark";
const PASSWORD: &str = "correct horse battery staple";
const MODULES: &str = "/usr/lib/apache2/modules";

/// uid and gid of www-data, which Apache's workers switch to when started
/// as root.
fn www_data() -> (u32, u32) {
    let out = run(Command::new("id").args(["-u", "www-data"]));
    let uid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("uid");
    let out = run(Command::new("id").args(["-g", "www-data"]));
    let gid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("gid");
    (uid, gid)
}

fn start_apache(dir: &Path, port: u16) -> Server {
    let (uid, gid) = www_data();
    // The workers run as www-data: they must reach the temporary directory
    // and own what they write to.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for sub in ["www", "www/dav", "lock", "run"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        chown(dir.join(sub), Some(uid), Some(gid)).expect("chown");
    }
    let htpasswd = dir.join("htpasswd");
    run(Command::new("htpasswd")
        .args(["-c", "-b", "-B"])
        .arg(&htpasswd)
        .args([USER, PASSWORD]));
    std::fs::set_permissions(&htpasswd, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let modules = [
        ("mpm_event_module", "mod_mpm_event.so"),
        ("authn_core_module", "mod_authn_core.so"),
        ("authn_file_module", "mod_authn_file.so"),
        ("authz_core_module", "mod_authz_core.so"),
        ("authz_user_module", "mod_authz_user.so"),
        ("auth_basic_module", "mod_auth_basic.so"),
        ("dav_module", "mod_dav.so"),
        ("dav_fs_module", "mod_dav_fs.so"),
    ]
    .iter()
    .map(|(name, file)| format!("LoadModule {name} {MODULES}/{file}\n"))
    .collect::<String>();
    let d = dir.display();
    let config = dir.join("httpd.conf");
    std::fs::write(
        &config,
        format!(
            "{modules}\
             ServerRoot \"{d}\"\n\
             ServerName 127.0.0.1\n\
             Listen 127.0.0.1:{port}\n\
             PidFile \"{d}/run/httpd.pid\"\n\
             DefaultRuntimeDir \"{d}/run\"\n\
             User www-data\n\
             Group www-data\n\
             ErrorLog /dev/stderr\n\
             LogLevel warn\n\
             DocumentRoot \"{d}/www\"\n\
             DavLockDB \"{d}/lock/DavLock\"\n\
             <Location \"/dav\">\n\
               Dav On\n\
               AuthType Basic\n\
               AuthName \"tidemark test\"\n\
               AuthUserFile \"{d}/htpasswd\"\n\
               Require valid-user\n\
             </Location>\n"
        ),
    )
    .expect("write httpd.conf");
    let mut server = Server::spawn(
        "apache2",
        Command::new("/usr/sbin/apache2")
            .args(["-DFOREGROUND", "-f"])
            .arg(&config),
        &dir.join("apache.log"),
    );
    server.wait_for_port(port, Duration::from_secs(10));
    server
}

#[test]
fn webdav_keeps_the_contract() {
    require("/usr/sbin/apache2", INSTALL);
    require(&format!("{MODULES}/mod_dav_fs.so"), INSTALL);
    require("/usr/bin/htpasswd", INSTALL);
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut apache = start_apache(tmp.path(), port);
    let url = format!("webdav://127.0.0.1:{port}/dav/repo");

    let result = std::panic::catch_unwind(|| {
        std::env::set_var("TIDEMARK_WEBDAV_USER", USER);
        std::env::set_var("TIDEMARK_WEBDAV_PASSWORD", PASSWORD);
        let s = open(&url).expect("open webdav");
        assert!(!s.location().contains(PASSWORD));
        conformance::run_all(s.as_ref());
        s.put("config", b"cfg").expect("put");
        assert_eq!(
            std::fs::read(tmp.path().join("www/dav/repo/config")).expect("read"),
            b"cfg"
        );

        // A directory removed on the server behind our back (the backend
        // remembers which ones it created) is created again.
        s.put("gone/a", b"1").expect("put");
        std::fs::remove_dir_all(tmp.path().join("www/dav/repo/gone")).expect("rm -r");
        s.put("gone/b", b"2")
            .expect("put after the directory vanished");
        assert_eq!(s.get("gone/b").expect("get"), b"2");

        // A wrong password is a permanent error that does not leak it.
        std::env::set_var("TIDEMARK_WEBDAV_PASSWORD", "wrong password");
        let bad = open(&url).expect("open");
        std::env::set_var("TIDEMARK_WEBDAV_PASSWORD", PASSWORD);
        match bad.get("config") {
            Err(
                e @ StorageError::Io {
                    retryable: false, ..
                },
            ) => {
                assert!(!e.to_string().contains("wrong password"), "{e}");
            }
            other => panic!("a wrong password must be a permanent error, got {other:?}"),
        }
    });

    apache.stop();
    if let Err(panic) = result {
        eprintln!("apache log:\n{}", apache.log());
        std::panic::resume_unwind(panic);
    }
}
