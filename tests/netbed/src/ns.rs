//! Network namespaces made with `ip netns`, entered by threads with setns(2)
//! so one process can hold sockets and TUN devices on both sides.

use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Runs `ip` (or any command) and fails with its stderr.
pub fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (iproute2 is installed by `make test-deps`)",
                args[0]
            )
        })?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A namespace that is deleted again when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&["ip", "netns", "add", name]).context(
            "creating a network namespace needs root (CAP_SYS_ADMIN); run the test bed as root",
        )?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn exec(&self, args: &[&str]) -> Result<()> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Moves the calling thread into this namespace (for good: use a
    /// thread of its own).
    pub fn enter(&self) -> Result<()> {
        let f = std::fs::File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("namespace {} is gone", self.name))?;
        // SAFETY: a valid namespace descriptor and a documented flag.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            bail!(
                "setns into {}: {}",
                self.name,
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// Runs `f` on a new thread inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            Netns { name: name.clone() }.enter_keep()?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }

    /// Spawns a long-lived thread inside this namespace.
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
        let name = self.name.clone();
        std::thread::spawn(move || {
            if let Err(e) = (Netns { name }).enter_keep() {
                eprintln!("netbed: {e:#}");
                return;
            }
            f()
        })
    }

    fn enter_keep(self) -> Result<()> {
        let r = self.enter();
        // Not deleted: this handle only named the namespace.
        std::mem::forget(self);
        r
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
