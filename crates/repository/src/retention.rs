//! Which snapshots to keep: a pure function of the snapshots, a policy and
//! the current time, so it is tested without a clock or a repository.
//! Rules work like restic's `forget`: each `keep_*` rule keeps the newest
//! snapshot of each of the last N hours/days/weeks/months/years that have
//! one, per host and set of paths.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use crypto::Id;
use format::Snapshot;
use std::collections::HashMap;

/// Also the `"retention"` object of a company server's policy (JSON), where
/// `keep_within` is given in whole hours as `keep_within_hours`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Policy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    #[serde(rename = "keep_within_hours", deserialize_with = "hours")]
    pub keep_within: Option<Duration>,
}

fn hours<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let h: Option<u32> = serde::Deserialize::deserialize(d)?;
    Ok(h.map(|h| Duration::hours(i64::from(h))))
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// The timeline thinning devices apply to their own storage by default
    /// (and a company server without an organisation policy): every
    /// snapshot for a day, then the newest of each hour for a week, of each
    /// day for 30 days, of each week for a year, of each month for ten
    /// years; and always the newest.
    pub fn timeline() -> Self {
        Policy {
            keep_last: Some(1),
            keep_within: Some(Duration::hours(24)),
            keep_hourly: Some(24 * 7),
            keep_daily: Some(30),
            keep_weekly: Some(52),
            keep_monthly: Some(120),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    pub id: Id,
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub keep: bool,
    /// The rules that keep it, e.g. `daily`, `within`.
    pub reasons: Vec<&'static str>,
}

/// Retention applies per backup set: one host backing up one set of paths.
type GroupKey = (String, Vec<String>);

pub fn apply(snapshots: &[(Id, Snapshot)], policy: &Policy, now: DateTime<Utc>) -> Vec<Decision> {
    let mut groups: HashMap<GroupKey, Vec<&(Id, Snapshot)>> = HashMap::new();
    for s in snapshots {
        let mut paths = s.1.paths.clone();
        paths.sort();
        groups
            .entry((s.1.hostname.clone(), paths))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    for (_, mut group) in groups {
        group.sort_by_key(|s| std::cmp::Reverse(s.1.time)); // newest first
        type Bucket = fn(&DateTime<Utc>) -> i64;
        let rules: [(&'static str, Option<u32>, Bucket); 6] = [
            ("last", policy.keep_last, |_| 0),
            ("hourly", policy.keep_hourly, |t| {
                i64::from(t.year()) * 1_000_000 + i64::from(t.ordinal()) * 100 + i64::from(t.hour())
            }),
            ("daily", policy.keep_daily, |t| {
                i64::from(t.year()) * 1000 + i64::from(t.ordinal())
            }),
            ("weekly", policy.keep_weekly, |t| {
                let w = t.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }),
            ("monthly", policy.keep_monthly, |t| {
                i64::from(t.year()) * 100 + i64::from(t.month())
            }),
            ("yearly", policy.keep_yearly, |t| i64::from(t.year())),
        ];
        let mut left: Vec<Option<u32>> = rules.iter().map(|r| r.1).collect();
        let mut last_bucket: Vec<Option<i64>> = vec![None; rules.len()];
        for (id, snap) in group {
            let mut reasons = Vec::new();
            for (i, (name, _, bucket)) in rules.iter().enumerate() {
                let Some(n) = left[i] else { continue };
                if n == 0 {
                    continue;
                }
                // "last" keeps each of the newest N; the others one per bucket.
                let b = if *name == "last" {
                    None
                } else {
                    Some(bucket(&snap.time))
                };
                if b.is_none() || last_bucket[i] != b {
                    last_bucket[i] = b;
                    left[i] = Some(n - 1);
                    reasons.push(*name);
                }
            }
            if policy.keep_within.is_some_and(|d| now - snap.time <= d) {
                reasons.push("within");
            }
            out.push(Decision {
                id: *id,
                time: snap.time,
                hostname: snap.hostname.clone(),
                keep: !reasons.is_empty(),
                reasons,
            });
        }
    }
    out.sort_by_key(|d| d.time);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_read_from_json_with_hours_for_within() {
        let p: Policy =
            serde_json::from_str(r#"{"keep_daily": 3, "keep_within_hours": 24, "other": 1}"#)
                .expect("json");
        assert_eq!(
            p,
            Policy {
                keep_daily: Some(3),
                keep_within: Some(Duration::hours(24)),
                ..Default::default()
            }
        );
        let empty: Policy = serde_json::from_str("{}").expect("json");
        assert!(empty.is_empty());
    }
    use chrono::TimeZone;

    fn snap(t: DateTime<Utc>) -> (Id, Snapshot) {
        let s = Snapshot {
            version: 1,
            time: t,
            hostname: "h".into(),
            username: "u".into(),
            paths: vec!["/d".into()],
            tree: Id([0; 32]),
            parent: None,
            tags: vec![],
            summary: Default::default(),
        };
        (Id(*blake3_like(t.timestamp())), s)
    }

    fn blake3_like(x: i64) -> Box<[u8; 32]> {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&x.to_le_bytes());
        Box::new(b)
    }

    #[test]
    fn daily_keeps_newest_of_each_day_and_within_keeps_recent() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        // Every 6 hours for 10 days.
        let snaps: Vec<_> = (0..40)
            .map(|i| snap(now - Duration::hours(6 * i)))
            .collect();
        let d = apply(
            &snaps,
            &Policy {
                keep_daily: Some(3),
                ..Default::default()
            },
            now,
        );
        let kept: Vec<_> = d.iter().filter(|x| x.keep).map(|x| x.time).collect();
        assert_eq!(kept.len(), 3);
        // The newest snapshot of each of the last 3 days.
        assert_eq!(kept[2], now);
        assert_eq!(
            kept[1],
            Utc.with_ymd_and_hms(2026, 11, 24, 18, 0, 0).unwrap()
        );
        assert_eq!(
            kept[0],
            Utc.with_ymd_and_hms(2026, 11, 23, 18, 0, 0).unwrap()
        );
        let w = apply(
            &snaps,
            &Policy {
                keep_within: Some(Duration::hours(13)),
                ..Default::default()
            },
            now,
        );
        assert_eq!(w.iter().filter(|x| x.keep).count(), 3);
        let last = apply(
            &snaps,
            &Policy {
                keep_last: Some(5),
                ..Default::default()
            },
            now,
        );
        assert_eq!(last.iter().filter(|x| x.keep).count(), 5);
        assert!(apply(&snaps, &Policy::default(), now)
            .iter()
            .all(|x| !x.keep));
    }

    #[test]
    fn timeline_thins_with_age() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap();
        // Every 15 minutes for 60 days.
        let snaps: Vec<_> = (0..(60 * 96))
            .map(|i| snap(now - Duration::minutes(15 * i)))
            .collect();
        let d = apply(&snaps, &Policy::timeline(), now);
        let kept = |from: i64, to: i64| {
            d.iter()
                .filter(|x| {
                    x.keep
                        && now - x.time >= Duration::hours(from)
                        && now - x.time < Duration::hours(to)
                })
                .count()
        };
        assert_eq!(kept(0, 24), 96, "everything in the last day");
        assert!(
            (24 * 6 - 2..=24 * 6 + 1).contains(&kept(24, 24 * 7)),
            "hourly in the first week: {}",
            kept(24, 24 * 7)
        );
        let month = kept(24 * 7, 24 * 30);
        assert!((22..=24).contains(&month), "daily for the month: {month}");
        assert!(kept(24 * 31, 24 * 60) <= 6, "weekly after a month");
    }
}
