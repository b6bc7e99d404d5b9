//! Rules → decision: a pure function of the sensed conditions and the local
//! time, so every rule is tested with a fake network and a fake clock.

use chrono::{Datelike, NaiveDateTime, NaiveTime, Weekday};
use serde::{Deserialize, Serialize};

use crate::conditions::{Conditions, LinkKind};

/// What a rule does to uploads.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// No upload at all (bytes already in flight finish at a trickle).
    Pause,
    /// Yield to the user's own traffic: the delay-based controller decides.
    Yield,
    /// Yield, and never above this many megabits per second.
    LimitMbps(f64),
    /// Yield, and never above this share (0-100) of the measured capacity.
    SharePercent(f64),
    /// As fast as the link goes; no controller.
    Full,
}

/// When a rule applies: every field that is set must hold. A field whose
/// condition could not be sensed (no battery, metered unknown) does not hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metered: Option<bool>,
    /// The Wi-Fi network's name (SSID) or the connection's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn: Option<bool>,
    /// Holds on battery power with less than this percentage left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_below: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_battery: Option<bool>,
    /// Holds when the user has not touched the machine for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_minutes: Option<f64>,
    /// Local time window "HH:MM-HH:MM" (may wrap past midnight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<String>,
    /// Days the window applies to, e.g. ["mon", "tue"]; absent: every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Shown to the user as the reason for the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub when: When,
    pub action: Action,
}

/// Who wrote a rule: the organisation's rules come first and win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Admin,
    User,
    Default,
}

/// The decision in force and the rule that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    pub origin: Origin,
    /// The rule, as words: its name, or what it matched on.
    pub reason: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("throttle rule {index}: {message}")]
    Invalid { index: usize, message: String },
}

/// Checks what serde cannot: hour windows, day names, ranges.
pub fn validate(rules: &[Rule]) -> Result<(), PolicyError> {
    for (index, r) in rules.iter().enumerate() {
        let bad = |message: String| PolicyError::Invalid { index, message };
        if let Some(h) = &r.when.hours {
            parse_window(h).ok_or_else(|| {
                bad(format!(
                    "hours \"{h}\" is not a window like \"09:00-17:00\""
                ))
            })?;
        }
        for d in r.when.days.iter().flatten() {
            parse_day(d).ok_or_else(|| bad(format!("\"{d}\" is not a day (mon, tue, …)")))?;
        }
        match r.action {
            Action::LimitMbps(m) if !(m > 0.0 && m.is_finite()) => {
                return Err(bad(format!("limit_mbps must be above 0, not {m}")))
            }
            Action::SharePercent(p) if !(p > 0.0 && p <= 100.0) => {
                return Err(bad(format!("share_percent must be in (0, 100], not {p}")))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The first admin rule that holds, else the first user rule, else yield.
pub fn decide(admin: &[Rule], user: &[Rule], c: &Conditions, now: NaiveDateTime) -> Decision {
    let tagged = admin
        .iter()
        .map(|r| (r, Origin::Admin))
        .chain(user.iter().map(|r| (r, Origin::User)));
    for (rule, origin) in tagged {
        if holds(&rule.when, c, now) {
            return Decision {
                action: rule.action,
                origin,
                reason: rule.name.clone().unwrap_or_else(|| describe(&rule.when)),
            };
        }
    }
    Decision {
        action: Action::Yield,
        origin: Origin::Default,
        reason: "no rule applies: yielding to other traffic".into(),
    }
}

fn holds(w: &When, c: &Conditions, now: NaiveDateTime) -> bool {
    let eq = |want: Option<bool>, got: Option<bool>| want.is_none_or(|w| got == Some(w));
    eq(w.metered, c.metered)
        && eq(w.vpn, c.vpn)
        && eq(w.on_battery, c.battery.map(|b| !b.on_ac))
        && w.network
            .as_ref()
            .is_none_or(|n| c.network.as_deref() == Some(n.as_str()))
        && w.link.is_none_or(|l| c.link == Some(l))
        && w.battery_below
            .is_none_or(|p| c.battery.is_some_and(|b| !b.on_ac && b.percent < p))
        && w.idle_minutes
            .is_none_or(|m| c.idle.is_some_and(|i| i.as_secs_f64() >= m * 60.0))
        && w.days.as_ref().is_none_or(|days| {
            days.iter()
                .filter_map(|d| parse_day(d))
                .any(|d| d == now.weekday())
        })
        && w.hours.as_ref().is_none_or(|h| {
            parse_window(h).is_some_and(|(from, to)| {
                let t = now.time();
                if from <= to {
                    from <= t && t < to
                } else {
                    t >= from || t < to
                }
            })
        })
}

fn describe(w: &When) -> String {
    let mut parts = Vec::new();
    if let Some(m) = w.metered {
        parts.push(if m {
            "metered connection".to_string()
        } else {
            "unmetered connection".into()
        });
    }
    if let Some(n) = &w.network {
        parts.push(format!("network \"{n}\""));
    }
    if let Some(l) = w.link {
        parts.push(format!("{l:?} link").to_lowercase());
    }
    if let Some(v) = w.vpn {
        parts.push(if v { "on VPN".into() } else { "off VPN".into() });
    }
    if let Some(b) = w.on_battery {
        parts.push(if b {
            "on battery".into()
        } else {
            "on mains power".into()
        });
    }
    if let Some(p) = w.battery_below {
        parts.push(format!("battery below {p}%"));
    }
    if let Some(m) = w.idle_minutes {
        parts.push(format!("idle for {m} min"));
    }
    if let Some(h) = &w.hours {
        parts.push(format!("hours {h}"));
    }
    if let Some(d) = &w.days {
        parts.push(d.join(","));
    }
    if parts.is_empty() {
        "always".into()
    } else {
        parts.join(", ")
    }
}

fn parse_window(s: &str) -> Option<(NaiveTime, NaiveTime)> {
    let (a, b) = s.split_once('-')?;
    let t = |x: &str| NaiveTime::parse_from_str(x.trim(), "%H:%M").ok();
    Some((t(a)?, t(b)?))
}

fn parse_day(s: &str) -> Option<Weekday> {
    s.get(..3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Battery;
    use std::time::Duration;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").expect("test time")
    }

    fn rules(json: &str) -> Vec<Rule> {
        let r: Vec<Rule> = serde_json::from_str(json).expect("rules parse");
        validate(&r).expect("rules valid");
        r
    }

    // 2026-12-01 is a Tuesday.
    const TUE_10: &str = "2026-12-01 10:00";

    #[test]
    fn first_matching_rule_wins_and_admin_before_user() {
        let admin = rules(r#"[{"when": {"metered": true}, "action": "pause"}]"#);
        let user = rules(
            r#"[{"name": "guest cap", "when": {"network": "Guest"}, "action": {"limit_mbps": 2}},
                {"when": {}, "action": "full"}]"#,
        );
        let mut c = Conditions {
            metered: Some(true),
            network: Some("Guest".into()),
            ..Default::default()
        };
        let d = decide(&admin, &user, &c, at(TUE_10));
        assert_eq!((d.action, d.origin), (Action::Pause, Origin::Admin));
        assert_eq!(d.reason, "metered connection");
        c.metered = Some(false);
        let d = decide(&admin, &user, &c, at(TUE_10));
        assert_eq!(d.action, Action::LimitMbps(2.0));
        assert_eq!(d.reason, "guest cap");
        c.network = Some("Office".into());
        assert_eq!(decide(&admin, &user, &c, at(TUE_10)).action, Action::Full);
        assert_eq!(decide(&[], &[], &c, at(TUE_10)).origin, Origin::Default);
    }

    #[test]
    fn unknown_conditions_never_match() {
        let r = rules(
            r#"[{"when": {"metered": true}, "action": "pause"},
                {"when": {"battery_below": 20}, "action": "pause"},
                {"when": {"idle_minutes": 10}, "action": "full"}]"#,
        );
        let d = decide(&[], &r, &Conditions::default(), at(TUE_10));
        assert_eq!(d.action, Action::Yield);
    }

    #[test]
    fn battery_rule_needs_battery_power_and_low_charge() {
        let r = rules(r#"[{"when": {"battery_below": 20}, "action": "pause"}]"#);
        let mut c = Conditions {
            battery: Some(Battery {
                percent: 15.0,
                on_ac: true,
            }),
            ..Default::default()
        };
        assert_eq!(decide(&[], &r, &c, at(TUE_10)).action, Action::Yield);
        c.battery = Some(Battery {
            percent: 15.0,
            on_ac: false,
        });
        assert_eq!(decide(&[], &r, &c, at(TUE_10)).action, Action::Pause);
        c.battery = Some(Battery {
            percent: 25.0,
            on_ac: false,
        });
        assert_eq!(decide(&[], &r, &c, at(TUE_10)).action, Action::Yield);
    }

    #[test]
    fn business_hours_window_and_days() {
        let r = rules(
            r#"[{"when": {"hours": "09:00-17:00", "days": ["mon","tue","wed","thu","fri"]},
                 "action": {"share_percent": 30}}]"#,
        );
        let c = Conditions::default();
        assert_eq!(
            decide(&[], &r, &c, at(TUE_10)).action,
            Action::SharePercent(30.0)
        );
        assert_eq!(
            decide(&[], &r, &c, at("2026-12-01 17:00")).action,
            Action::Yield
        );
        assert_eq!(
            decide(&[], &r, &c, at("2026-12-01 08:59")).action,
            Action::Yield
        );
        // Saturday.
        assert_eq!(
            decide(&[], &r, &c, at("2026-12-05 10:00")).action,
            Action::Yield
        );
    }

    #[test]
    fn window_may_wrap_past_midnight() {
        let r = rules(r#"[{"when": {"hours": "22:00-06:00"}, "action": "full"}]"#);
        let c = Conditions::default();
        assert_eq!(
            decide(&[], &r, &c, at("2026-12-01 23:30")).action,
            Action::Full
        );
        assert_eq!(
            decide(&[], &r, &c, at("2026-12-01 05:59")).action,
            Action::Full
        );
        assert_eq!(
            decide(&[], &r, &c, at("2026-12-01 12:00")).action,
            Action::Yield
        );
    }

    #[test]
    fn idle_user_gets_full_speed() {
        let r = rules(r#"[{"when": {"idle_minutes": 10}, "action": "full"}]"#);
        let mut c = Conditions {
            idle: Some(Duration::from_secs(9 * 60)),
            ..Default::default()
        };
        assert_eq!(decide(&[], &r, &c, at(TUE_10)).action, Action::Yield);
        c.idle = Some(Duration::from_secs(10 * 60));
        assert_eq!(decide(&[], &r, &c, at(TUE_10)).action, Action::Full);
    }

    #[test]
    fn invalid_rules_are_refused_with_their_index() {
        let bad: Vec<Rule> = serde_json::from_str(
            r#"[{"action": "full"}, {"when": {"hours": "9-5"}, "action": "pause"}]"#,
        )
        .expect("parses");
        assert!(matches!(
            validate(&bad),
            Err(PolicyError::Invalid { index: 1, .. })
        ));
        let bad: Vec<Rule> =
            serde_json::from_str(r#"[{"action": {"share_percent": 130}}]"#).expect("parses");
        assert!(validate(&bad).is_err());
        assert!(serde_json::from_str::<Vec<Rule>>(
            r#"[{"when": {"metred": true}, "action": "pause"}]"#
        )
        .is_err());
    }
}
