//! The process's one [`Throttle`]: every upload of this process shares one
//! network, so they share one controller, one set of rules and one gate.
//! Rules come from the organisation (the server's policy, key `"throttle"`)
//! and from the user (`throttle.toml` beside the settings).

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use serde::Deserialize;
use throttle::{ControllerConfig, Rule, Rules, Throttle};

use crate::error::{AgentError, Result};

static THROTTLE: OnceLock<Throttle> = OnceLock::new();
static RULES: Mutex<Option<Rules>> = Mutex::new(None);

/// The throttle, started on first use with the OS's sensor.
pub fn throttle() -> Throttle {
    THROTTLE
        .get_or_init(|| {
            let rules = RULES
                .lock()
                .ok()
                .and_then(|r| r.clone())
                .unwrap_or_default();
            Throttle::start(
                rules,
                throttle::sense::system(),
                ControllerConfig::default(),
            )
        })
        .clone()
}

/// Replaces the throttle before its first use (`--throttle off`, tests);
/// false when one is already running.
pub fn install(t: Throttle) -> bool {
    THROTTLE.set(t).is_ok()
}

fn update(f: impl FnOnce(&mut Rules)) {
    let Ok(mut r) = RULES.lock() else {
        return;
    };
    let rules = r.get_or_insert_with(Rules::default);
    f(rules);
    if let Some(t) = THROTTLE.get() {
        t.set_rules(rules.clone());
    }
}

pub fn set_admin_rules(rules: Vec<Rule>) {
    update(|r| r.admin = rules);
}

pub fn set_user_rules(rules: Vec<Rule>) {
    update(|r| r.user = rules);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rules: Vec<Rule>,
}

/// The user's rules, `throttle.toml` in the config folder (absent: none):
///
/// ```toml
/// [[rules]]
/// name = "phone hotspot"
/// when = { metered = true }
/// action = "pause"
/// ```
pub fn load_user_rules(config_dir: &Path) -> Result<Vec<Rule>> {
    let path = config_dir.join("throttle.toml");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AgentError::io(&path, e)),
    };
    let f: RulesFile = toml::from_str(&text).map_err(|e| {
        AgentError::Invalid(format!("{}: {e}; fix or remove the file", path.display()))
    })?;
    throttle::policy::validate(&f.rules)
        .map_err(|e| AgentError::Invalid(format!("{}: {e}", path.display())))?;
    Ok(f.rules)
}

/// The organisation's rules from the server's policy document; a policy
/// without `"throttle"` has none. Invalid rules are refused whole, so a typo
/// in the admin's policy never silently drops the rule before it.
pub fn admin_rules(policy: &serde_json::Value) -> Result<Vec<Rule>> {
    let Some(v) = policy.get("throttle") else {
        return Ok(Vec::new());
    };
    let rules: Vec<Rule> = serde_json::from_value(v.clone())
        .map_err(|e| AgentError::Invalid(format!("the organisation's throttle rules: {e}")))?;
    throttle::policy::validate(&rules)
        .map_err(|e| AgentError::Invalid(format!("the organisation's throttle rules: {e}")))?;
    Ok(rules)
}

/// What uploads do right now, for the tray and the app.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Uploads {
    Paused,
    /// Yielding to the user's own traffic.
    Yielding,
    Limited {
        mbps: f64,
    },
    Share {
        percent: f64,
    },
    Full,
}

/// The throttle's decision, why, and what the sensors know.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct NetworkStatus {
    pub uploads: Uploads,
    /// The rule in force, in words ("metered connection").
    pub rule: String,
    /// The rule is the organisation's, not the user's.
    pub from_organisation: bool,
    /// The rate uploads may use now, when something limits it.
    pub rate_mbps: Option<f64>,
    /// The link's upload capacity as measured while backing up.
    pub capacity_mbps: Option<f64>,
    /// What the user's other programs send now, when it is more than a
    /// trickle (0.1 Mbit/s): uploads make room for it.
    pub other_traffic_mbps: Option<f64>,
    pub metered: Option<bool>,
    pub network: Option<String>,
    pub on_battery: Option<bool>,
    /// Where each reading came from, and which fell back to heuristics.
    pub sources: Vec<String>,
}

pub fn status() -> NetworkStatus {
    let s = throttle().status();
    let mbps = |b: f64| b * 8.0 / 1e6;
    NetworkStatus {
        uploads: match s.decision.action {
            throttle::Action::Pause => Uploads::Paused,
            throttle::Action::Yield => Uploads::Yielding,
            throttle::Action::LimitMbps(m) => Uploads::Limited { mbps: m },
            throttle::Action::SharePercent(p) => Uploads::Share { percent: p },
            throttle::Action::Full => Uploads::Full,
        },
        rule: s.decision.reason,
        from_organisation: s.decision.origin == throttle::Origin::Admin,
        rate_mbps: s.rate.filter(|r| r.is_finite()).map(mbps),
        capacity_mbps: s.capacity.map(mbps),
        other_traffic_mbps: Some(mbps(s.other_traffic)).filter(|m| *m >= 0.1),
        metered: s.conditions.metered,
        network: s.conditions.network,
        on_battery: s.conditions.battery.map(|b| !b.on_ac),
        sources: s.conditions.sources,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_rules_file_parses_and_bad_ones_say_where() {
        let d = tempfile::tempdir().expect("dir");
        assert!(load_user_rules(d.path()).expect("absent").is_empty());
        std::fs::write(
            d.path().join("throttle.toml"),
            "[[rules]]\nname = \"guest\"\nwhen = { network = \"Guest\" }\naction = { limit_mbps = 2.0 }\n",
        )
        .expect("write");
        let r = load_user_rules(d.path()).expect("parses");
        assert_eq!(r[0].action, throttle::Action::LimitMbps(2.0));
        std::fs::write(
            d.path().join("throttle.toml"),
            "[[rules]]\naction = \"sometimes\"\n",
        )
        .expect("write");
        let e = load_user_rules(d.path())
            .expect_err("bad action")
            .to_string();
        assert!(e.contains("throttle.toml"), "{e}");
    }

    #[test]
    fn admin_rules_come_from_the_policy_key() {
        let p = serde_json::json!({"retention": {}, "throttle": [{"when": {"metered": true}, "action": "pause"}]});
        assert_eq!(admin_rules(&p).expect("valid").len(), 1);
        assert!(admin_rules(&serde_json::json!({}))
            .expect("none")
            .is_empty());
        let bad = serde_json::json!({"throttle": [{"when": {"hours": "nine to five"}, "action": "pause"}]});
        assert!(admin_rules(&bad).is_err());
    }
}
