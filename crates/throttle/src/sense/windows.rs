//! Windows: the network cost API (`Windows.Networking.Connectivity`) for
//! metered, link type, Wi-Fi name and VPN; `GetSystemPowerStatus` for the
//! battery; `GetLastInputInfo` for idle time.
//!
//! Compiled and type-checked here (`make cross-check`), not run: the
//! project's machines are Linux. Every call can fail (no internet profile
//! while offline, WinRT unavailable on a stripped-down system), and each
//! failure leaves its condition unknown and says so in `sources`.
//!
//! `unsafe` here: three Win32 calls (power status, last input, tick count)
//! that fill structs sized and initialised here; the `windows` crate has
//! no safe wrappers for them.
#![allow(unsafe_code)]

use std::time::Duration;

use windows::Networking::Connectivity::{
    ConnectionProfile, NetworkConnectivityLevel, NetworkCostType, NetworkInformation,
};
use windows::Win32::System::Power::{GetSystemPowerStatus, SYSTEM_POWER_STATUS};
use windows::Win32::System::SystemInformation::GetTickCount;
use windows::Win32::UI::Input::KeyboardAndMouse::{GetLastInputInfo, LASTINPUTINFO};

use crate::conditions::{Battery, Conditions, LinkKind, Sensor};

#[derive(Default)]
pub struct WindowsSensor;

impl Sensor for WindowsSensor {
    fn read(&mut self) -> Conditions {
        let mut c = Conditions::default();
        match NetworkInformation::GetInternetConnectionProfile() {
            Ok(profile) => {
                match cost(&profile) {
                    Ok(m) => {
                        c.metered = Some(m);
                        c.sources.push("metered: network cost API".into());
                    }
                    Err(e) => c.sources.push(format!(
                        "metered: unknown (network cost API: {})",
                        e.message()
                    )),
                }
                c.link = link(&profile);
                c.network = name(&profile);
                c.sources
                    .push("connection: Windows.Networking.Connectivity".into());
            }
            // No profile with internet access: offline, or only a local
            // network. Nothing is uploaded to a remote server then anyway.
            Err(e) => c.sources.push(format!(
                "connection: unknown (no internet connection profile: {})",
                e.message()
            )),
        }
        c.vpn = vpn();
        c.battery = battery();
        c.sources.push(match c.battery {
            Some(_) => "battery: GetSystemPowerStatus".into(),
            None => "battery: none found".into(),
        });
        c.idle = idle();
        if c.idle.is_none() {
            c.sources
                .push("idle: unavailable (GetLastInputInfo failed)".into());
        }
        c
    }
}

/// Metered as Windows' own data-usage guidance reads the cost: a fixed or
/// variable plan, roaming, or over the plan's limit.
fn cost(p: &ConnectionProfile) -> windows::core::Result<bool> {
    let cost = p.GetConnectionCost()?;
    let kind = cost.NetworkCostType()?;
    Ok(kind == NetworkCostType::Fixed
        || kind == NetworkCostType::Variable
        || cost.Roaming()?
        || cost.OverDataLimit()?)
}

fn link(p: &ConnectionProfile) -> Option<LinkKind> {
    if p.IsWlanConnectionProfile().ok()? {
        return Some(LinkKind::Wifi);
    }
    if p.IsWwanConnectionProfile().ok()? {
        return Some(LinkKind::Cellular);
    }
    // IANA ifType 6 is Ethernet; the rest (PPP, tunnels) count as other.
    match p.NetworkAdapter().ok()?.IanaInterfaceType().ok()? {
        6 => Some(LinkKind::Wired),
        _ => Some(LinkKind::Other),
    }
}

/// The SSID on Wi-Fi, the profile's name (the network's name in Settings)
/// elsewhere.
fn name(p: &ConnectionProfile) -> Option<String> {
    let ssid = p
        .WlanConnectionProfileDetails()
        .and_then(|d| d.GetConnectedSsid())
        .ok()
        .map(|s| s.to_string_lossy())
        .filter(|s| !s.is_empty());
    ssid.or_else(|| {
        p.ProfileName()
            .ok()
            .map(|s| s.to_string_lossy())
            .filter(|s| !s.is_empty())
    })
}

/// A VPN shows as a connected profile on a PPP (23), tunnel (131) or
/// vendor-virtual (53) adapter; Windows has no single "is VPN" flag for
/// third-party clients, so this is a heuristic, as on Linux without
/// NetworkManager.
fn vpn() -> Option<bool> {
    let profiles = NetworkInformation::GetConnectionProfiles().ok()?;
    let mut any = false;
    for p in profiles {
        let connected = p
            .GetNetworkConnectivityLevel()
            .is_ok_and(|l| l != NetworkConnectivityLevel::None);
        let tunnel = p
            .NetworkAdapter()
            .and_then(|a| a.IanaInterfaceType())
            .is_ok_and(|t| matches!(t, 23 | 53 | 131));
        any |= connected && tunnel;
    }
    Some(any)
}

fn battery() -> Option<Battery> {
    let mut s = SYSTEM_POWER_STATUS::default();
    // SAFETY: `s` is a valid, writable SYSTEM_POWER_STATUS.
    unsafe { GetSystemPowerStatus(&mut s) }.ok()?;
    // 128: no system battery; 255: unknown status.
    if s.BatteryFlag & 128 != 0 || s.BatteryFlag == 255 || s.BatteryLifePercent > 100 {
        return None;
    }
    Some(Battery {
        percent: f64::from(s.BatteryLifePercent),
        on_ac: s.ACLineStatus == 1,
    })
}

fn idle() -> Option<Duration> {
    let mut info = LASTINPUTINFO {
        cbSize: std::mem::size_of::<LASTINPUTINFO>() as u32,
        dwTime: 0,
    };
    // SAFETY: `info` is a valid LASTINPUTINFO with its size set.
    if !unsafe { GetLastInputInfo(&mut info) }.as_bool() {
        return None;
    }
    // Both are milliseconds since boot in 32 bits; they wrap every 49.7
    // days, and the wrapping difference stays right across a wrap.
    // SAFETY: no arguments, no preconditions.
    let now = unsafe { GetTickCount() };
    Some(Duration::from_millis(u64::from(
        now.wrapping_sub(info.dwTime),
    )))
}
