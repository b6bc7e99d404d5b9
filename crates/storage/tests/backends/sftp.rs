//! SFTP against OpenSSH's sshd, started by the test on 127.0.0.1 with its
//! own host key, client key and configuration in a temporary directory.
//! Needs the Debian packages openssh-server and openssh-client.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use storage::{conformance, open, StorageError};

use crate::support::{free_port, require, run, Server};

const INSTALL: &str = "apt-get install -y openssh-server openssh-client";

fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path));
}

fn start_sshd(dir: &Path, port: u16) -> Server {
    // sshd refuses to start without its privilege separation directory.
    std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
    let host_key = dir.join("host_key");
    let client_key = dir.join("client_key");
    keygen(&host_key);
    keygen(&client_key);
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))
        .expect("write authorized_keys");
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host}\n\
             AuthorizedKeysFile {dir}/authorized_keys\n\
             PidFile {dir}/sshd.pid\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             Subsystem sftp internal-sftp\n",
            host = host_key.display(),
            dir = dir.display(),
        ),
    )
    .expect("write sshd_config");
    let mut server = Server::spawn(
        "sshd",
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config),
        &dir.join("sshd.log"),
    );
    server.wait_for_port(port, Duration::from_secs(10));
    server
}

#[test]
fn sftp_keeps_the_contract() {
    require("/usr/sbin/sshd", INSTALL);
    require("/usr/bin/ssh", INSTALL);
    require("/usr/bin/ssh-keygen", INSTALL);
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut sshd = start_sshd(tmp.path(), port);
    let repo = tmp.path().join("remote/repo");
    let url = format!("sftp://root@127.0.0.1:{port}{}", repo.display());
    let forget_host_key = || {
        let _ = Command::new("ssh-keygen")
            .args(["-R", &format!("[127.0.0.1]:{port}")])
            .output();
    };

    std::env::set_var("TIDEMARK_SFTP_KEY", tmp.path().join("client_key"));
    let result = std::panic::catch_unwind(|| {
        // "accept": the host key is new on every run. ssh still records it
        // in root's known_hosts, which forget_host_key undoes.
        std::env::set_var("TIDEMARK_SFTP_KNOWN_HOSTS", "accept");
        let s = open(&url).expect("open sftp");
        conformance::run_all(s.as_ref());
        s.put("config", b"cfg").expect("put");
        assert_eq!(std::fs::read(repo.join("config")).expect("read"), b"cfg");
        assert_eq!(
            crate::support::files_containing(&repo, '~'),
            Vec::<String>::new(),
            "temporary files left on the server"
        );
        drop(s);

        // The default policy refuses an unknown host key, permanently.
        forget_host_key();
        std::env::remove_var("TIDEMARK_SFTP_KNOWN_HOSTS");
        let strict = open(&url).expect("open");
        match strict.get("config") {
            Err(StorageError::Io {
                retryable: false, ..
            }) => {}
            other => panic!("an unknown host key must be refused, got {other:?}"),
        }
    });

    sshd.stop();
    forget_host_key();
    if let Err(panic) = result {
        eprintln!("sshd log:\n{}", sshd.log());
        std::panic::resume_unwind(panic);
    }
}
