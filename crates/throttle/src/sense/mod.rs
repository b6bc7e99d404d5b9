//! The per-OS [`Sensor`]s. Linux asks NetworkManager (metered, link type,
//! network name, VPN) and logind (idle) over the system D-Bus, reads the
//! battery from sysfs, and falls back to interface heuristics for whatever
//! it cannot ask. Windows asks the network cost API, macOS the path
//! monitor. Each reading says where it came from.

use crate::conditions::Sensor;

/// The sensor for the OS this was built for.
pub fn system() -> Box<dyn Sensor> {
    #[cfg(target_os = "linux")]
    {
        Box::new(linux::LinuxSensor::default())
    }
    #[cfg(windows)]
    {
        Box::new(windows::WindowsSensor)
    }
    #[cfg(target_os = "macos")]
    {
        Box::new(macos::MacSensor::default())
    }
    #[cfg(not(any(target_os = "linux", windows, target_os = "macos")))]
    {
        Box::new(Unsupported)
    }
}

/// Elsewhere (the BSDs): nothing is known, so only rules without conditions
/// apply, and `status` says so.
#[cfg(not(any(target_os = "linux", windows, target_os = "macos")))]
struct Unsupported;

#[cfg(not(any(target_os = "linux", windows, target_os = "macos")))]
impl Sensor for Unsupported {
    fn read(&mut self) -> crate::conditions::Conditions {
        crate::conditions::Conditions {
            sources: vec![format!(
                "no network sensor for {} in this build: connection, battery and idle are unknown",
                std::env::consts::OS
            )],
            ..Default::default()
        }
    }
}

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "macos")]
pub mod macos;
#[cfg(windows)]
pub mod windows;
