//! Linux: NetworkManager and logind over the system D-Bus, batteries from
//! sysfs, interface heuristics where NetworkManager is missing.

use std::fs;
use std::path::Path;
use std::time::Duration;

use zbus::blocking::{proxy::Builder, Connection, Proxy};
use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;

use crate::conditions::{Battery, Conditions, LinkKind, Sensor};

const NM: &str = "org.freedesktop.NetworkManager";

#[derive(Default)]
pub struct LinuxSensor {
    bus: Option<Connection>,
    sysfs: SysRoot,
}

/// The sysfs and procfs roots, movable for tests.
#[derive(Clone)]
pub struct SysRoot {
    pub sys: std::path::PathBuf,
    pub proc: std::path::PathBuf,
}

impl Default for SysRoot {
    fn default() -> Self {
        SysRoot {
            sys: "/sys".into(),
            proc: "/proc".into(),
        }
    }
}

impl LinuxSensor {
    pub fn with_roots(sysfs: SysRoot) -> Self {
        LinuxSensor { bus: None, sysfs }
    }

    fn bus(&mut self) -> zbus::Result<&Connection> {
        if self.bus.is_none() {
            self.bus = Some(Connection::system()?);
        }
        self.bus.as_ref().ok_or(zbus::Error::InvalidReply)
    }
}

impl Sensor for LinuxSensor {
    fn read(&mut self) -> Conditions {
        let mut c = Conditions::default();
        let nm = self.bus().and_then(network_manager);
        match nm {
            Ok(n) => {
                c.metered = n.metered;
                c.link = n.link;
                c.network = n.network;
                c.vpn = Some(n.vpn);
                c.sources.push("connection: NetworkManager".into());
            }
            Err(e) => {
                // A bus that went away is reconnected on the next read.
                self.bus = None;
                let h = interfaces(&self.sysfs);
                c.link = h.link;
                c.vpn = Some(h.vpn);
                c.metered = match h.link {
                    Some(LinkKind::Cellular) => Some(true),
                    Some(LinkKind::Wired) => Some(false),
                    _ => None,
                };
                c.sources.push(format!(
                    "connection: interface heuristics (NetworkManager unavailable: {})",
                    short(&e)
                ));
            }
        }
        c.battery = battery(&self.sysfs.sys);
        c.sources.push(match c.battery {
            Some(_) => "battery: sysfs".into(),
            None => "battery: none found".into(),
        });
        match self.bus.as_ref().map(idle) {
            Some(Ok(i)) => {
                c.idle = Some(i);
                c.sources.push("idle: logind".into());
            }
            Some(Err(e)) => c
                .sources
                .push(format!("idle: unknown (logind: {})", short(&e))),
            None => c.sources.push("idle: unknown (no system bus)".into()),
        }
        c
    }
}

fn short(e: &zbus::Error) -> String {
    let s = e.to_string();
    s.chars().take(120).collect()
}

struct Nm {
    metered: Option<bool>,
    link: Option<LinkKind>,
    network: Option<String>,
    vpn: bool,
}

fn proxy<'a>(bus: &'a Connection, path: &'a str, iface: &'a str) -> zbus::Result<Proxy<'a>> {
    Builder::new(bus)
        .destination(NM)?
        .path(path)?
        .interface(iface)?
        .cache_properties(CacheProperties::No)
        .build()
}

fn network_manager(bus: &Connection) -> zbus::Result<Nm> {
    let nm = proxy(bus, "/org/freedesktop/NetworkManager", NM)?;
    // NMMetered: 0 unknown, 1 yes, 2 no, 3 guessed yes, 4 guessed no.
    let metered = match nm.get_property::<u32>("Metered")? {
        1 | 3 => Some(true),
        2 | 4 => Some(false),
        _ => None,
    };
    let kind: String = nm.get_property("PrimaryConnectionType")?;
    let link = Some(match kind.as_str() {
        "802-3-ethernet" => LinkKind::Wired,
        "802-11-wireless" => LinkKind::Wifi,
        "gsm" | "cdma" | "bluetooth" => LinkKind::Cellular,
        _ => LinkKind::Other,
    });
    let primary: OwnedObjectPath = nm.get_property("PrimaryConnection")?;
    let network = if primary.as_str() == "/" {
        None
    } else {
        let a = proxy(
            bus,
            primary.as_str(),
            "org.freedesktop.NetworkManager.Connection.Active",
        )?;
        Some(a.get_property::<String>("Id")?)
    };
    let mut vpn = matches!(kind.as_str(), "vpn" | "wireguard");
    let active: Vec<OwnedObjectPath> = nm.get_property("ActiveConnections")?;
    for path in active {
        let a = proxy(
            bus,
            path.as_str(),
            "org.freedesktop.NetworkManager.Connection.Active",
        )?;
        let t: String = a.get_property("Type").unwrap_or_default();
        vpn |= a.get_property::<bool>("Vpn").unwrap_or(false) || t == "wireguard";
    }
    Ok(Nm {
        metered,
        link,
        network,
        vpn,
    })
}

fn idle(bus: &Connection) -> zbus::Result<Duration> {
    let s: Proxy = Builder::new(bus)
        .destination("org.freedesktop.login1")?
        .path("/org/freedesktop/login1/session/auto")?
        .interface("org.freedesktop.login1.Session")?
        .cache_properties(CacheProperties::No)
        .build()?;
    if !s.get_property::<bool>("IdleHint")? {
        return Ok(Duration::ZERO);
    }
    let since: u64 = s.get_property("IdleSinceHintMonotonic")?;
    let now = monotonic_usec();
    Ok(Duration::from_micros(now.saturating_sub(since)))
}

fn monotonic_usec() -> u64 {
    // CLOCK_MONOTONIC as logind counts it, from /proc/uptime to keep this
    // module free of unsafe code (uptime is CLOCK_BOOTTIME; the gap is the
    // time spent suspended, which only makes the idle time look longer).
    fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1e6) as u64)
        .unwrap_or(0)
}

pub struct Heuristic {
    pub link: Option<LinkKind>,
    pub vpn: bool,
}

/// The default route's interface decides the link kind; any interface
/// that is up and named like a tunnel means a VPN.
pub fn interfaces(root: &SysRoot) -> Heuristic {
    let route = fs::read_to_string(root.proc.join("net/route")).unwrap_or_default();
    let default_if = route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[1] == "00000000").then(|| f[0].to_string())
    });
    let net = root.sys.join("class/net");
    let link = default_if.map(|i| {
        let d = net.join(&i);
        if d.join("wireless").exists() || d.join("phy80211").exists() {
            LinkKind::Wifi
        } else if i.starts_with("ww") || i.starts_with("rmnet") {
            LinkKind::Cellular
        } else if fs::read_to_string(d.join("type")).is_ok_and(|t| t.trim() == "1")
            && !is_tunnel(&i)
        {
            LinkKind::Wired
        } else {
            LinkKind::Other
        }
    });
    let vpn = fs::read_dir(&net).into_iter().flatten().flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        is_tunnel(&name)
            && fs::read_to_string(e.path().join("operstate")).is_ok_and(|s| s.trim() != "down")
    });
    Heuristic { link, vpn }
}

fn is_tunnel(name: &str) -> bool {
    [
        "tun",
        "tap",
        "wg",
        "ppp",
        "tailscale",
        "utun",
        "vpn",
        "ipsec",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// Sums every battery; on mains power when any mains/USB supply is online.
pub fn battery(sys: &Path) -> Option<Battery> {
    let mut full = 0.0;
    let mut now = 0.0;
    let mut count = 0;
    let mut on_ac = false;
    for e in fs::read_dir(sys.join("class/power_supply")).ok()?.flatten() {
        let p = e.path();
        let read = |f: &str| fs::read_to_string(p.join(f)).map(|s| s.trim().to_string());
        match read("type").as_deref() {
            Ok("Battery") => {
                if let Ok(c) = read("capacity").and_then(|c| {
                    c.parse::<f64>()
                        .map_err(|e| std::io::Error::other(e.to_string()))
                }) {
                    now += c;
                    full += 100.0;
                    count += 1;
                }
            }
            Ok("Mains") | Ok("USB") => on_ac |= read("online").is_ok_and(|o| o == "1"),
            _ => {}
        }
    }
    (count > 0).then(|| Battery {
        percent: 100.0 * now / full,
        on_ac,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, SysRoot) {
        let d = tempfile::tempdir().expect("temp dir");
        for (p, c) in files {
            let f = d.path().join(p);
            fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            fs::write(f, c).expect("write");
        }
        let r = SysRoot {
            sys: d.path().join("sys"),
            proc: d.path().join("proc"),
        };
        (d, r)
    }

    const ROUTE: &str = "Iface\tDestination\tGateway\nwlp2s0\t00000000\t0101A8C0\n";

    #[test]
    fn wifi_default_route_and_vpn_tunnel() {
        let (_d, r) = tree(&[
            ("proc/net/route", ROUTE),
            ("sys/class/net/wlp2s0/wireless/x", ""),
            ("sys/class/net/wlp2s0/type", "1"),
            ("sys/class/net/wg0/operstate", "unknown"),
        ]);
        let h = interfaces(&r);
        assert_eq!(h.link, Some(LinkKind::Wifi));
        assert!(h.vpn);
    }

    #[test]
    fn wired_without_tunnel() {
        let (_d, r) = tree(&[
            (
                "proc/net/route",
                "Iface\tDestination\tGateway\neth0\t00000000\t0101A8C0\n",
            ),
            ("sys/class/net/eth0/type", "1"),
            ("sys/class/net/tun0/operstate", "down"),
        ]);
        let h = interfaces(&r);
        assert_eq!(h.link, Some(LinkKind::Wired));
        assert!(!h.vpn);
    }

    #[test]
    fn battery_sums_packs_and_sees_mains() {
        let (_d, r) = tree(&[
            ("sys/class/power_supply/BAT0/type", "Battery\n"),
            ("sys/class/power_supply/BAT0/capacity", "30\n"),
            ("sys/class/power_supply/BAT1/type", "Battery\n"),
            ("sys/class/power_supply/BAT1/capacity", "10\n"),
            ("sys/class/power_supply/AC/type", "Mains\n"),
            ("sys/class/power_supply/AC/online", "0\n"),
        ]);
        let b = battery(&r.sys).expect("battery");
        assert_eq!(b.percent, 20.0);
        assert!(!b.on_ac);
        let (_d, r) = tree(&[("sys/class/power_supply/AC/type", "Mains\n")]);
        assert_eq!(battery(&r.sys), None);
    }

    #[test]
    fn no_network_manager_falls_back_and_says_so() {
        let (_d, r) = tree(&[("proc/net/route", ROUTE)]);
        // An address where no bus listens: the sensor must not hang or fail.
        std::env::set_var(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/tidemark-bus",
        );
        let c = LinuxSensor::with_roots(r).read();
        assert!(
            c.sources[0].contains("interface heuristics"),
            "{:?}",
            c.sources
        );
        assert_eq!(c.metered, None);
    }
}
