//! A stand-in NetworkManager on a private D-Bus, so the agent's real
//! NetworkManager client is what senses "metered" and the network's name.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use zbus::zvariant::OwnedObjectPath;

#[derive(Debug, Clone)]
pub struct NmState {
    pub metered: bool,
    pub network: String,
}

struct Nm(Arc<Mutex<NmState>>);
struct Active(Arc<Mutex<NmState>>);

const ACTIVE: &str = "/org/freedesktop/NetworkManager/ActiveConnection/1";

fn path(p: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(p).unwrap_or_default()
}

#[zbus::interface(name = "org.freedesktop.NetworkManager")]
impl Nm {
    #[zbus(property)]
    fn metered(&self) -> u32 {
        // NMMetered: 1 yes, 2 no.
        if self.0.lock().map(|s| s.metered).unwrap_or(false) {
            1
        } else {
            2
        }
    }
    #[zbus(property)]
    fn primary_connection_type(&self) -> String {
        "802-11-wireless".into()
    }
    #[zbus(property)]
    fn primary_connection(&self) -> OwnedObjectPath {
        path(ACTIVE)
    }
    #[zbus(property)]
    fn active_connections(&self) -> Vec<OwnedObjectPath> {
        vec![path(ACTIVE)]
    }
}

#[zbus::interface(name = "org.freedesktop.NetworkManager.Connection.Active")]
impl Active {
    #[zbus(property)]
    fn id(&self) -> String {
        self.0.lock().map(|s| s.network.clone()).unwrap_or_default()
    }
    #[zbus(property, name = "Type")]
    fn kind(&self) -> String {
        "802-11-wireless".into()
    }
    #[zbus(property)]
    fn vpn(&self) -> bool {
        false
    }
}

pub struct FakeNm {
    pub state: Arc<Mutex<NmState>>,
    pub address: String,
    _bus: Child,
    _conn: zbus::blocking::Connection,
}

impl FakeNm {
    pub fn start(dir: &std::path::Path) -> Result<FakeNm> {
        let sock = dir.join("system_bus_socket");
        let address = format!("unix:path={}", sock.display());
        let bus = Command::new("dbus-daemon")
            .args([
                "--session",
                "--nofork",
                "--nopidfile",
                &format!("--address={address}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start dbus-daemon (package dbus, installed by `make test-deps`)")?;
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let state = Arc::new(Mutex::new(NmState {
            metered: false,
            network: "Office".into(),
        }));
        let conn = zbus::blocking::connection::Builder::address(address.as_str())?
            .name("org.freedesktop.NetworkManager")?
            .serve_at("/org/freedesktop/NetworkManager", Nm(Arc::clone(&state)))?
            .serve_at(ACTIVE, Active(Arc::clone(&state)))?
            .build()
            .context("cannot serve the fake NetworkManager")?;
        Ok(FakeNm {
            state,
            address,
            _bus: bus,
            _conn: conn,
        })
    }

    pub fn set(&self, f: impl FnOnce(&mut NmState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }
}

impl Drop for FakeNm {
    fn drop(&mut self) {
        let _ = self._bus.kill();
        let _ = self._bus.wait();
    }
}
