//! What the agent knows about the machine's connection and power, and the
//! trait every per-OS sensor implements.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    Wired,
    Wifi,
    Cellular,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Battery {
    pub percent: f64,
    pub on_ac: bool,
}

/// One reading of the sensors. `None` means "could not be sensed", never
/// "false": a rule on an unknown condition does not apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    pub metered: Option<bool>,
    pub link: Option<LinkKind>,
    /// Wi-Fi SSID, or the connection's name on other links.
    pub network: Option<String>,
    pub vpn: Option<bool>,
    /// `None` on machines without a battery.
    pub battery: Option<Battery>,
    #[serde(with = "opt_secs", default)]
    pub idle: Option<Duration>,
    /// Where each reading came from and what fell back to a heuristic, for
    /// `tidemark status`: "metered: NetworkManager", "idle: unavailable (…)".
    pub sources: Vec<String>,
}

/// A source of [`Conditions`]; one implementation per OS, and fakes in tests.
pub trait Sensor: Send {
    fn read(&mut self) -> Conditions;
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.as_secs_f64()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<f64>::deserialize(d)?
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64))
    }
}
