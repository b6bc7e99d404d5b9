//! macOS: Network.framework's path monitor for metered (the path's
//! "expensive" and "constrained" flags: cellular, a phone's hotspot, Low Data
//! Mode) and the link type; CoreWLAN for the Wi-Fi name; the IOKit power
//! sources for the battery; the HID system's idle time; tunnel interfaces
//! for VPN.
//!
//! Compiled and type-checked here (`make cross-check`), not run: the
//! project's machines are Linux.
//!
//! `unsafe` here: Network.framework, IOKit and CoreGraphics are C APIs that
//! no well-kept crate wraps for what is needed (a path monitor's flags, the
//! power sources, the HID idle time), and CoreWLAN through objc2's
//! generated (unsafe) bindings.
#![allow(unsafe_code)]

use std::ffi::{c_void, CStr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use block2::RcBlock;
use core_foundation::array::CFArray;
use core_foundation::base::{CFType, TCFType};
use core_foundation::dictionary::CFDictionary;
use core_foundation::number::CFNumber;
use core_foundation::string::CFString;
use dispatch2::{DispatchQueue, DispatchRetained};

use crate::conditions::{Battery, Conditions, LinkKind, Sensor};

/// An `nw_path_monitor_t` or an `nw_path_t`.
type NwObject = *mut c_void;

const NW_INTERFACE_TYPE_WIFI: i32 = 1;
const NW_INTERFACE_TYPE_CELLULAR: i32 = 2;
const NW_INTERFACE_TYPE_WIRED: i32 = 3;
const NW_PATH_STATUS_SATISFIED: i32 = 1;

#[link(name = "Network", kind = "framework")]
unsafe extern "C" {
    fn nw_path_monitor_create() -> NwObject;
    fn nw_path_monitor_set_queue(monitor: NwObject, queue: *mut c_void);
    fn nw_path_monitor_set_update_handler(
        monitor: NwObject,
        handler: &block2::Block<dyn Fn(NwObject)>,
    );
    fn nw_path_monitor_start(monitor: NwObject);
    fn nw_path_monitor_cancel(monitor: NwObject);
    fn nw_release(obj: NwObject);
    fn nw_path_get_status(path: NwObject) -> i32;
    fn nw_path_is_expensive(path: NwObject) -> bool;
    fn nw_path_is_constrained(path: NwObject) -> bool;
    fn nw_path_uses_interface_type(path: NwObject, kind: i32) -> bool;
}

#[link(name = "IOKit", kind = "framework")]
unsafe extern "C" {
    fn IOPSCopyPowerSourcesInfo() -> *const c_void;
    fn IOPSCopyPowerSourcesList(blob: *const c_void) -> *const c_void;
    fn IOPSGetPowerSourceDescription(blob: *const c_void, ps: *const c_void) -> *const c_void;
}

#[link(name = "CoreGraphics", kind = "framework")]
unsafe extern "C" {
    fn CGEventSourceSecondsSinceLastEventType(state: i32, event_type: u32) -> f64;
}

/// What the path monitor last reported; it calls back on its own queue
/// whenever the default path changes, so a read costs nothing.
#[derive(Debug, Clone, Copy, Default)]
struct PathState {
    seen: bool,
    satisfied: bool,
    metered: bool,
    link: Option<LinkKind>,
}

pub struct MacSensor {
    path: Arc<Mutex<PathState>>,
    monitor: NwObject,
    _queue: DispatchRetained<DispatchQueue>,
    _handler: RcBlock<dyn Fn(NwObject)>,
}

// SAFETY: the monitor handle is only used to cancel and release it on drop;
// Network.framework objects are thread-safe reference-counted objects.
unsafe impl Send for MacSensor {}

impl Default for MacSensor {
    fn default() -> Self {
        let path = Arc::new(Mutex::new(PathState::default()));
        let seen = Arc::clone(&path);
        let handler = RcBlock::new(move |p: NwObject| {
            // The path is valid only during the call: read it now.
            // SAFETY: Network.framework passes a live nw_path_t.
            let state = unsafe {
                PathState {
                    seen: true,
                    satisfied: nw_path_get_status(p) == NW_PATH_STATUS_SATISFIED,
                    metered: nw_path_is_expensive(p) || nw_path_is_constrained(p),
                    link: if nw_path_uses_interface_type(p, NW_INTERFACE_TYPE_WIFI) {
                        Some(LinkKind::Wifi)
                    } else if nw_path_uses_interface_type(p, NW_INTERFACE_TYPE_CELLULAR) {
                        Some(LinkKind::Cellular)
                    } else if nw_path_uses_interface_type(p, NW_INTERFACE_TYPE_WIRED) {
                        Some(LinkKind::Wired)
                    } else {
                        Some(LinkKind::Other)
                    },
                }
            };
            if let Ok(mut s) = seen.lock() {
                *s = state;
            }
        });
        let queue = DispatchQueue::new("tidemark.path-monitor", None);
        // SAFETY: the monitor is created, configured and started once; the
        // handler block and the queue are kept alive by `self` for as long
        // as the monitor runs (it is cancelled in drop).
        let monitor = unsafe {
            let m = nw_path_monitor_create();
            nw_path_monitor_set_queue(m, &*queue as *const DispatchQueue as *mut c_void);
            nw_path_monitor_set_update_handler(m, &handler);
            nw_path_monitor_start(m);
            m
        };
        MacSensor {
            path,
            monitor,
            _queue: queue,
            _handler: handler,
        }
    }
}

impl Drop for MacSensor {
    fn drop(&mut self) {
        // SAFETY: the monitor was created in `default` and is released once.
        unsafe {
            nw_path_monitor_cancel(self.monitor);
            nw_release(self.monitor);
        }
    }
}

impl Sensor for MacSensor {
    fn read(&mut self) -> Conditions {
        let mut c = Conditions::default();
        let p = self.path.lock().map(|p| *p).unwrap_or_default();
        if p.seen && p.satisfied {
            c.metered = Some(p.metered);
            c.link = p.link;
            c.sources
                .push("connection: Network.framework path monitor".into());
        } else if p.seen {
            c.sources
                .push("connection: none (no usable network path)".into());
        } else {
            c.sources
                .push("connection: unknown (the path monitor has not reported yet)".into());
        }
        if c.link == Some(LinkKind::Wifi) {
            c.network = ssid();
            if c.network.is_none() {
                // Since macOS 14 CoreWLAN names the network only to apps
                // the user allowed Location Services.
                c.sources.push(
                    "network name: unavailable (allow Tidemark in Location Services to use Wi-Fi name rules)"
                        .into(),
                );
            }
        }
        c.vpn = Some(tunnel_up());
        c.sources
            .push("vpn: interface heuristics (a tunnel with an IPv4 address)".into());
        c.battery = battery();
        c.sources.push(match c.battery {
            Some(_) => "battery: IOKit power sources".into(),
            None => "battery: none found".into(),
        });
        c.idle = idle();
        c
    }
}

fn ssid() -> Option<String> {
    use objc2_core_wlan::CWWiFiClient;
    // SAFETY: the shared client is documented as safe to use from any
    // thread; `interface` and `ssid` only read state.
    unsafe {
        let client = CWWiFiClient::sharedWiFiClient();
        let ssid = client.interface()?.ssid()?;
        Some(ssid.to_string()).filter(|s| !s.is_empty())
    }
}

/// A VPN client brings up a `utun`, `ipsec` or `ppp` interface with an IPv4
/// address. macOS keeps several `utun`s up for its own services at all
/// times, with IPv6 link-local addresses only, so those do not count.
fn tunnel_up() -> bool {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list freed by freeifaddrs.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return false;
    }
    let mut found = false;
    let mut cur = addrs;
    while !cur.is_null() {
        // SAFETY: `cur` walks the list getifaddrs returned.
        let a = unsafe { &*cur };
        let up = a.ifa_flags & (libc::IFF_UP as u32) != 0;
        // SAFETY: ifa_addr is null or points to a sockaddr.
        let ipv4 =
            !a.ifa_addr.is_null() && i32::from(unsafe { (*a.ifa_addr).sa_family }) == libc::AF_INET;
        // SAFETY: ifa_name is a NUL-terminated interface name.
        let name = unsafe { CStr::from_ptr(a.ifa_name) }.to_string_lossy();
        if up && ipv4 && ["utun", "ipsec", "ppp"].iter().any(|p| name.starts_with(p)) {
            found = true;
        }
        cur = a.ifa_next;
    }
    // SAFETY: `addrs` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(addrs) };
    found
}

fn battery() -> Option<Battery> {
    // SAFETY: the Copy functions return owned CF objects (the create rule);
    // the description is borrowed from the blob (the get rule) and read
    // while the blob is alive.
    unsafe {
        let blob = IOPSCopyPowerSourcesInfo();
        if blob.is_null() {
            return None;
        }
        let blob = CFType::wrap_under_create_rule(blob as _);
        let list = IOPSCopyPowerSourcesList(blob.as_CFTypeRef());
        if list.is_null() {
            return None;
        }
        let list: CFArray<CFType> = CFArray::wrap_under_create_rule(list as _);
        for ps in list.iter() {
            let desc = IOPSGetPowerSourceDescription(blob.as_CFTypeRef(), ps.as_CFTypeRef());
            if desc.is_null() {
                continue;
            }
            let desc: CFDictionary<CFString, CFType> = CFDictionary::wrap_under_get_rule(desc as _);
            let text = |k: &str| {
                desc.find(CFString::new(k))
                    .and_then(|v| v.downcast::<CFString>())
                    .map(|s| s.to_string())
            };
            let number = |k: &str| {
                desc.find(CFString::new(k))
                    .and_then(|v| v.downcast::<CFNumber>())
                    .and_then(|n| n.to_f64())
            };
            if text("Type").as_deref() != Some("InternalBattery") {
                continue;
            }
            let (Some(now), Some(max)) = (number("Current Capacity"), number("Max Capacity"))
            else {
                continue;
            };
            if max <= 0.0 {
                continue;
            }
            return Some(Battery {
                percent: (now / max * 100.0).clamp(0.0, 100.0),
                on_ac: text("Power Source State").as_deref() == Some("AC Power"),
            });
        }
        None
    }
}

fn idle() -> Option<Duration> {
    // The HID system state: input from any device, any session.
    const HID_SYSTEM_STATE: i32 = 1;
    const ANY_INPUT_EVENT: u32 = u32::MAX;
    // SAFETY: a pure query with constant arguments.
    let secs = unsafe { CGEventSourceSecondsSinceLastEventType(HID_SYSTEM_STATE, ANY_INPUT_EVENT) };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}
